//! Authentication, permissions, key management and tenant isolation.

use herald::domain::api_key::Permission;
use herald::store::Backend;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, create_key, email_to};
use crate::{on_both_backends, on_sqlite};

on_both_backends!(projects_are_isolated);
on_sqlite!(
    refuses_missing_and_bad_keys,
    manages_keys_over_the_api,
    sending_keys_only_send,
    rate_limits_per_key
);

async fn rate_limits_per_key(backend: Backend) {
    let app = TestApp::spawn_with(backend, None, |c| {
        c.limits.rate_per_second = 0.5;
        c.limits.rate_burst = 2;
    })
    .await;
    let (s, _, h) = app
        .request(reqwest::Method::GET, "/v1/api-keys", &app.key, None, &[])
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            h["ratelimit-limit"].to_str().ok(),
            h["ratelimit-remaining"].to_str().ok()
        ),
        (Some("2"), Some("1"))
    );
    app.get("/v1/api-keys", &app.key).await;
    let (s, v, h) = app
        .request(reqwest::Method::GET, "/v1/api-keys", &app.key, None, &[])
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limit_exceeded"))
    );
    assert_eq!(h["retry-after"], "2");
    assert_eq!(h["ratelimit-remaining"], "0");
    // Another key has its own bucket.
    let other = create_key(&app.store, "alpha", Permission::FullAccess, 0).await;
    let (s, _) = app.get("/v1/api-keys", &other).await;
    assert_eq!(s, StatusCode::OK);
    app.finish().await;
}

async fn refuses_missing_and_bad_keys(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let body = email_to(&["ada@example.com"]);
    let url = format!("{}/v1/emails", app.base);
    let r = app.http.post(&url).json(&body).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["code"],
        "missing_api_key"
    );
    // The key with its last character changed (to 'x', or 'y' where it was 'x': a key that
    // happened to end in 'x' made this the real key, one run in 62).
    let (head, last) = app.key.split_at(app.key.len() - 1);
    let forged = format!("{head}{}", if last == "x" { "y" } else { "x" });
    for bad in ["nonsense", "hk_abc_def", forged.as_str()] {
        let (s, v, _) = app.post("/v1/emails", bad, &body).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_api_key")),
            "{bad}"
        );
        assert!(!v.to_string().contains(bad), "the key must not be echoed");
    }
    app.finish().await;
}

async fn manages_keys_over_the_api(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let (s, created, _) = app
        .post(
            "/v1/api-keys",
            &app.key,
            &json!({"name": "website", "permission": "sending_access"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with(created["prefix"].as_str().expect("prefix")));
    let (s, list) = app.get("/v1/api-keys", &app.key).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["data"].as_array().expect("data").len(), 2);
    assert!(
        !list.to_string().contains(&token[12..]),
        "listings never show secrets"
    );
    // The new key sends.
    let (s, _, _) = app
        .post("/v1/emails", &token, &email_to(&["ada@example.com"]))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // Revoked, it no longer does.
    let id = created["id"].as_str().expect("id");
    let (s, v, _) = app
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            &app.key,
            None,
            &[],
        )
        .await;
    assert_eq!((s, v["deleted"].as_bool()), (StatusCode::OK, Some(true)));
    let (s, v, _) = app
        .post("/v1/emails", &token, &email_to(&["ada@example.com"]))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_api_key"))
    );
    let (s, v, _) = app
        .post(
            "/v1/api-keys",
            &app.key,
            &json!({"name": "x", "permission": "root"}),
        )
        .await;
    assert_eq!(
        (s, v["errors"][0]["pointer"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("/permission"))
    );
    app.finish().await;
}

async fn sending_keys_only_send(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let sender = create_key(&app.store, "alpha", Permission::SendingAccess, 0).await;
    let other_sender = create_key(&app.store, "alpha", Permission::SendingAccess, 0).await;
    let (s, v, _) = app
        .post("/v1/emails", &sender, &email_to(&["ada@example.com"]))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let id = v["id"].as_str().expect("id");
    let (s, v) = app.get("/v1/api-keys", &sender).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_permission"))
    );
    let (s, _) = app.get(&format!("/v1/emails/{id}/events"), &sender).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // It may read and cancel what it sent, and not what another key sent.
    let (s, _) = app.get(&format!("/v1/emails/{id}"), &sender).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app.get(&format!("/v1/emails/{id}"), &other_sender).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = app
        .post(
            &format!("/v1/emails/{id}/cancel"),
            &other_sender,
            &json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = app
        .post(&format!("/v1/emails/{id}/cancel"), &sender, &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    app.finish().await;
}

async fn projects_are_isolated(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let beta = create_key(&app.store, "beta", Permission::FullAccess, 0).await;
    let id = app.send(&email_to(&["ada@example.com"])).await;
    for path in [
        format!("/v1/emails/{id}"),
        format!("/v1/emails/{id}/events"),
    ] {
        let (s, v) = app.get(&path, &beta).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{path}"
        );
    }
    let (s, _, _) = app
        .post(&format!("/v1/emails/{id}/cancel"), &beta, &json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, alpha_keys) = app.get("/v1/api-keys", &app.key).await;
    let alpha_key_id = alpha_keys["data"][0]["id"].as_str().expect("id").to_owned();
    let (s, _, _) = app
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/api-keys/{alpha_key_id}"),
            &beta,
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "beta cannot revoke alpha's key");
    let (_, beta_keys) = app.get("/v1/api-keys", &beta).await;
    assert_eq!(beta_keys["data"].as_array().expect("data").len(), 1);
    // Alpha's email is untouched.
    assert_eq!(app.email(&id).await["status"], "queued");
    app.finish().await;
}

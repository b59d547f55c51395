//! Project administration with admin tokens.

use base64::Engine;
use herald::domain::admin_token::AdminTokens;
use herald::store::Backend;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, email_to};
use crate::on_sqlite;

on_sqlite!(admin_tokens_manage_projects_and_keys);

async fn admin_tokens_manage_projects_and_keys(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let tokens = AdminTokens::new(b"test-secret");
    let now = chrono::Utc::now().timestamp();
    let admin = tokens.mint("ops", now, 3600).expect("mint");
    let (s, p, _) = app
        .post("/v1/projects", &admin, &json!({"name": "shop"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let pid = p["id"].as_str().expect("id").to_owned();
    let (s, k, _) = app
        .post(
            &format!("/v1/projects/{pid}/api-keys"),
            &admin,
            &json!({"name": "web", "permission": "sending_access"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let key = k["token"].as_str().expect("token").to_owned();
    let (s, _, _) = app
        .post("/v1/emails", &key, &email_to(&["a@example.com"]))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "the new project's key sends");
    let (s, list) = app.get("/v1/projects", &admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        list["data"].as_array().expect("data").len(),
        2,
        "alpha and shop"
    );
    let (s, v, _) = app
        .post("/v1/projects", &admin, &json!({"name": "shop"}))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("project_exists"))
    );
    let (s, v, _) = app
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/projects/{pid}"),
            &admin,
            None,
            &[],
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_state")),
        "it has sent mail"
    );
    let (s, _, _) = app
        .request(
            reqwest::Method::DELETE,
            &format!(
                "/v1/projects/{pid}/api-keys/{}",
                k["id"].as_str().expect("id")
            ),
            &admin,
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = app
        .post("/v1/emails", &key, &email_to(&["a@example.com"]))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "revoked by the admin");

    // Refused: an API key, an expired token, a token signed with another key, alg none.
    let (s, _) = app.get("/v1/projects", &app.key).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let expired = tokens.mint("ops", now - 7200, 3600).expect("mint");
    let foreign = AdminTokens::new(b"other")
        .mint("ops", now, 3600)
        .expect("mint");
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"iss":"herald","sub":"ops","exp":{}}}"#,
            now + 3600
        ))
    );
    for bad in [expired, foreign, none] {
        let (s, v) = app.get("/v1/projects", &bad).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_token")),
            "{bad}"
        );
    }
    // An admin token is not an API key either.
    let (s, _) = app.get("/v1/api-keys", &admin).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    app.finish().await;
}

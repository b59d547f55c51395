//! The suppression list: hard bounces add to it, sends to suppressed addresses are accepted
//! but never attempted, and the API manages it per stream.

use herald::store::Backend;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, email_to, statuses};
use crate::smtp_server::{Step, TestSmtp, Tls, ok, reply};
use crate::{on_both_backends, on_sqlite};

on_both_backends!(
    hard_bounce_suppresses_and_next_send_is_not_attempted,
    every_way_of_sending_answers_the_suppressed_alike
);
on_sqlite!(
    policy_refusals_do_not_suppress,
    manage_suppressions_per_stream
);

async fn hard_bounce_suppresses_and_next_send_is_not_attempted(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    smtp.script(|step| match step {
        Step::Rcpt { to } if to == "gone@example.net" => reply(550, "5.1.1 <gone@example.net>: Recipient address rejected: User unknown in virtual mailbox table"),
        _ => ok(),
    });
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let first = app.send(&email_to(&["gone@example.net"])).await;
    app.drain().await;
    let events = app.events(&first).await;
    let bounce = events
        .iter()
        .find(|e| e["type"] == "email.bounced")
        .expect("bounced");
    assert_eq!(bounce["bounce"]["suppressed"], true);
    let (s, sup) = app.get("/v1/suppressions/gone@example.net", &app.key).await;
    assert_eq!(s, StatusCode::OK, "{sup}");
    assert_eq!(sup["reason"], "hard_bounce");
    assert!(
        sup["stream"].is_null(),
        "hard bounces hold for every stream"
    );
    assert_eq!(sup["source_email_id"], first.as_str());

    // The next send: accepted, that recipient suppressed and never attempted; others go.
    let mut body = email_to(&["gone@example.net", "ada@example.com"]);
    body["stream"] = json!("broadcast");
    let (s, v, _) = app.post("/v1/emails", &app.key, &body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["suppressed"], json!(["gone@example.net"]));
    let id = v["id"].as_str().expect("id").to_owned();
    assert_eq!(app.drain().await, 1);
    let delivered: Vec<String> = smtp
        .received()
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    assert_eq!(delivered, ["ada@example.com"]);
    let email = app.email(&id).await;
    assert_eq!(
        statuses(&email),
        [
            ("gone@example.net".into(), "suppressed".into()),
            ("ada@example.com".into(), "sent".into())
        ]
    );
    let suppressed = app
        .events(&id)
        .await
        .into_iter()
        .find(|e| e["type"] == "email.suppressed")
        .expect("event");
    assert_eq!(suppressed["suppression"]["reason"], "hard_bounce");

    // All recipients suppressed: the email still gets an id and ends suppressed.
    let (s, v, _) = app
        .post("/v1/emails", &app.key, &email_to(&["gone@example.net"]))
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::ACCEPTED, Some("suppressed"))
    );
    assert_eq!(app.drain().await, 0);
    app.finish().await;
}

async fn policy_refusals_do_not_suppress(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    smtp.script(|step| match step {
        Step::Rcpt { .. } => reply(550, "5.7.1 Message rejected due to local policy"),
        _ => ok(),
    });
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let id = app.send(&email_to(&["ada@example.com"])).await;
    app.drain().await;
    let email = app.email(&id).await;
    assert_eq!(
        email["recipients"][0]["bounce"]["sub_type"],
        "policy_blocked"
    );
    let (s, _) = app.get("/v1/suppressions/ada@example.com", &app.key).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "a policy block is the sender's problem, not the address's"
    );
    app.finish().await;
}

async fn manage_suppressions_per_stream(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let (s, v, _) = app
        .post(
            "/v1/suppressions",
            &app.key,
            &json!({"email": "Ada@Example.COM", "reason": "unsubscribe", "stream": "broadcast"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["email"].as_str(), v["stream"].as_str()),
        (Some("Ada@example.com"), Some("broadcast"))
    );
    let (s, _, _) = app
        .post(
            "/v1/suppressions",
            &app.key,
            &json!({"email": "Ada@example.com", "reason": "unsubscribe", "stream": "broadcast"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "already there");
    // Scoped to broadcast: transactional mail still goes.
    let (_, v, _) = app
        .post("/v1/emails", &app.key, &email_to(&["Ada@EXAMPLE.com"]))
        .await;
    assert_eq!(v["suppressed"], json!([]));
    let mut b = email_to(&["Ada@example.com"]);
    b["stream"] = json!("broadcast");
    let (_, v, _) = app.post("/v1/emails", &app.key, &b).await;
    assert_eq!(
        v["suppressed"],
        json!(["Ada@example.com"]),
        "domain case does not matter"
    );
    // The local part does.
    b["to"] = json!(["ada@example.com"]);
    let (_, v, _) = app.post("/v1/emails", &app.key, &b).await;
    assert_eq!(v["suppressed"], json!([]));

    let (s, v, _) = app
        .post(
            "/v1/suppressions/batch/add",
            &app.key,
            &json!({"emails": ["a@x.com", "bad@", "a@x.com"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let st: Vec<&str> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(st, ["added", "invalid", "exists"]);
    let (_, list) = app.get("/v1/suppressions?limit=1", &app.key).await;
    assert_eq!(list["has_more"], true);
    let (s, v, _) = app
        .post(
            "/v1/suppressions",
            &app.key,
            &json!({"email": "x@y.com", "reason": "hard_bounce"}),
        )
        .await;
    assert_eq!(
        (s, v["errors"][0]["pointer"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("/reason"))
    );
    let (s, v, _) = app
        .post("/v1/suppressions", &app.key, &json!({"email": "x@"}))
        .await;
    assert_eq!(
        (s, v["errors"][0]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_email"))
    );

    let (s, v, _) = app
        .request(
            reqwest::Method::DELETE,
            "/v1/suppressions/Ada@example.com?stream=broadcast",
            &app.key,
            None,
            &[],
        )
        .await;
    assert_eq!((s, v["deleted"].as_bool()), (StatusCode::OK, Some(true)));
    let (s, _) = app.get("/v1/suppressions/Ada@example.com", &app.key).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v, _) = app
        .post(
            "/v1/suppressions/batch/remove",
            &app.key,
            &json!({"emails": ["a@x.com", "nobody@x.com"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"][0]["status"], "removed");
    assert_eq!(v["data"][1]["status"], "not_found");
    // Another project sees none of it; a sending key may not touch it.
    let beta = crate::helpers::create_key(
        &app.store,
        "beta",
        herald::domain::api_key::Permission::FullAccess,
        0,
    )
    .await;
    app.post(
        "/v1/suppressions",
        &app.key,
        &json!({"email": "keep@x.com"}),
    )
    .await;
    let (s, _) = app.get("/v1/suppressions/keep@x.com", &beta).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let sender = crate::helpers::create_key(
        &app.store,
        "alpha",
        herald::domain::api_key::Permission::SendingAccess,
        0,
    )
    .await;
    let (s, _) = app.get("/v1/suppressions", &sender).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    app.finish().await;
}

/// The commit finds the suppressed recipients (see `Store::insert_emails`): a single send, a
/// batch and an idempotent send (first answer and replay) all say which.
async fn every_way_of_sending_answers_the_suppressed_alike(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let (s, v, _) = app
        .post(
            "/v1/suppressions",
            &app.key,
            &json!({"email": "gone@example.net", "reason": "unsubscribe"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let both = email_to(&["gone@example.net", "ada@example.com"]);

    let (s, single, _) = app.post("/v1/emails", &app.key, &both).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{single}");
    assert_eq!(
        (&single["status"], &single["suppressed"]),
        (&json!("queued"), &json!(["gone@example.net"]))
    );

    let only = email_to(&["gone@example.net"]);
    let (s, batch, _) = app
        .post("/v1/emails/batch", &app.key, &json!([both, only]))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{batch}");
    let answered: Vec<&str> = batch["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["status"].as_str().expect("status"))
        .collect();
    assert_eq!(answered, ["queued", "suppressed"]);
    let second = batch["data"][1]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        statuses(&app.email(&second).await),
        [("gone@example.net".into(), "suppressed".into())]
    );
    let event = app.events(&second).await;
    assert_eq!(
        event.iter().map(|e| e["type"].as_str()).collect::<Vec<_>>(),
        [Some("email.suppressed")]
    );
    assert_eq!(event[0]["suppression"]["reason"], "unsubscribe");

    let key = [("idempotency-key", "suppressed-once")];
    let send = || {
        app.request(
            reqwest::Method::POST,
            "/v1/emails",
            &app.key,
            Some(&only),
            &key,
        )
    };
    let (s1, first, _) = send().await;
    let (s2, replay, headers) = send().await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(
        (&first["status"], &first["suppressed"]),
        (&json!("suppressed"), &json!(["gone@example.net"]))
    );
    assert_eq!(first, replay, "the record keeps what the commit found");
    assert_eq!(headers["idempotent-replayed"], "true");
    app.finish().await;
}

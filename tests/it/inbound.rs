//! Reports after the relay's 250: DSNs, plain bounces and complaints posted to
//! `/v1/inbound`, correlated by VERP token or Message-ID, changing recipients' states.

use herald::clock::Clock as _;
use herald::store::Backend;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, email_to, statuses};
use crate::smtp_server::{TestSmtp, Tls};
use crate::{on_both_backends, on_sqlite};

on_both_backends!(async_dsn_bounces_and_suppresses);
on_both_backends!(
    a_message_id_alone_changes_nothing,
    reading_a_report_again_changes_nothing_twice
);
on_sqlite!(
    delivery_reports_delays_and_complaints,
    unknown_and_unmatched_mail_is_kept
);

pub fn dsn(
    return_path: &str,
    rcpt: &str,
    action: &str,
    status: &str,
    diagnostic: &str,
    message_id: &str,
) -> String {
    format!(
        "From: MAILER-DAEMON@relay.example\r\nTo: {return_path}\r\nSubject: Delivery Status Notification\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: text/plain\r\n\r\nReport.\r\n\r\n\
         --B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.example\r\n\r\n\
         Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\nRemote-MTA: dns; mx.example.net\r\n\
         Diagnostic-Code: smtp; {diagnostic}\r\n\r\n\
         --B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {message_id}\r\n\r\n--B--\r\n"
    )
}

pub async fn post_inbound(app: &TestApp, raw: &str) -> Value {
    let resp = app
        .http
        .post(format!("{}/v1/inbound", app.base))
        .bearer_auth(&app.key)
        .header("content-type", "message/rfc822")
        .body(raw.to_owned())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.expect("json")
}

async fn async_dsn_bounces_and_suppresses(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let id = app.send(&email_to(&["zed@example.net"])).await;
    app.drain().await;
    let return_path = smtp.received()[0].mail_from.clone();
    let message_id = app.email(&id).await["message_id"]
        .as_str()
        .expect("mid")
        .to_owned();
    let v = post_inbound(
        &app,
        &dsn(
            &return_path,
            "zed@example.net",
            "failed",
            "5.1.1",
            "550 5.1.1 User unknown",
            &message_id,
        ),
    )
    .await;
    assert_eq!(
        (v["kind"].as_str(), v["matched"].as_i64()),
        (Some("dsn"), Some(1)),
        "{v}"
    );
    let email = app.email(&id).await;
    assert_eq!(
        statuses(&email),
        [("zed@example.net".into(), "bounced".into())]
    );
    let bounce = app
        .events(&id)
        .await
        .into_iter()
        .find(|e| e["type"] == "email.bounced")
        .expect("bounce");
    assert_eq!(bounce["bounce"]["phase"], "async_dsn");
    assert_eq!(bounce["bounce"]["sub_type"], "no_email");
    assert_eq!(bounce["bounce"]["suppressed"], true);
    let (_, v, _) = app
        .post("/v1/emails", &app.key, &email_to(&["zed@example.net"]))
        .await;
    assert_eq!(v["status"], "suppressed");
    app.finish().await;
}

/// The return path Herald gave the message to `rcpt`.
fn return_path_of(smtp: &TestSmtp, rcpt: &str) -> String {
    smtp.received()
        .into_iter()
        .find(|m| m.rcpt_to.iter().any(|r| r == rcpt))
        .expect("sent")
        .mail_from
}

async fn delivery_reports_delays_and_complaints(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let a = app.send(&email_to(&["ada@example.com"])).await;
    let b = app.send(&email_to(&["bob@example.org"])).await;
    app.drain().await;
    let ma = app.email(&a).await["message_id"]
        .as_str()
        .expect("mid")
        .to_owned();
    let mb = app.email(&b).await["message_id"]
        .as_str()
        .expect("mid")
        .to_owned();
    let (rpa, rpb) = (
        return_path_of(&smtp, "ada@example.com"),
        return_path_of(&smtp, "bob@example.org"),
    );
    // The signed return path in the report's To: (where the relay sent it).
    post_inbound(
        &app,
        &dsn(
            &rpa,
            "ada@example.com",
            "delayed",
            "4.2.2",
            "452 4.2.2 Mailbox full",
            &ma,
        ),
    )
    .await;
    let types: Vec<String> = app
        .events(&a)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        types.contains(&"email.delivery_delayed".to_owned()),
        "{types:?}"
    );
    assert_eq!(
        app.email(&a).await["status"],
        "sent",
        "a delay report does not change the status"
    );
    post_inbound(
        &app,
        &dsn(
            &rpa,
            "ada@example.com",
            "relayed",
            "2.0.0",
            "250 2.0.0 OK",
            &ma,
        ),
    )
    .await;
    assert_eq!(app.email(&a).await["status"], "delivered");

    // An ARF report returns the original with the Return-Path its receiver added.
    let arf = format!(
        "From: fbl@isp.example\r\nTo: abuse@bounces.herald.localhost\r\nSubject: Abuse report\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"F\"\r\n\r\n--F\r\nContent-Type: text/plain\r\n\r\nComplaint.\r\n\r\n\
         --F\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: FBL/1.0\r\nVersion: 1\r\n\
         Original-Rcpt-To: <bob@example.org>\r\nArrival-Date: Sun, 22 Nov 2026 09:59:00 +0000\r\n\r\n\
         --F\r\nContent-Type: message/rfc822\r\n\r\nReturn-Path: <{rpb}>\r\nFrom: orders@acme.com\r\nTo: bob@example.org\r\nMessage-ID: {mb}\r\nSubject: Hi\r\n\r\nHi\r\n--F--\r\n"
    );
    let v = post_inbound(&app, &arf).await;
    assert_eq!(
        (
            v["kind"].as_str(),
            v["matched"].as_i64(),
            v["status"].as_str()
        ),
        (Some("arf"), Some(1), Some("processed")),
        "{v}"
    );
    assert_eq!(app.email(&b).await["status"], "complained");
    let complained = app
        .events(&b)
        .await
        .into_iter()
        .find(|e| e["type"] == "email.complained")
        .expect("event");
    assert_eq!(complained["complaint"]["feedback_type"], "abuse");
    let (s, sup) = app.get("/v1/suppressions/bob@example.org", &app.key).await;
    assert_eq!(
        (s, sup["reason"].as_str(), sup["stream"].as_str()),
        (StatusCode::OK, Some("complaint"), Some("transactional"))
    );
    app.finish().await;
}

/// A report that names an email only by its Message-ID (which every recipient can read) is
/// kept as unmatched and changes nothing: no bounce, no suppression, for any recipient.
async fn a_message_id_alone_changes_nothing(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let id = app
        .send(&email_to(&["ada@example.com", "bob@example.org"]))
        .await;
    app.drain().await;
    let mid = app.email(&id).await["message_id"]
        .as_str()
        .expect("mid")
        .to_owned();
    // Ada forges a bounce for Bob, to postmaster@, and a complaint.
    let forged = dsn(
        "postmaster@bounces.herald.localhost",
        "bob@example.org",
        "failed",
        "5.1.1",
        "550 5.1.1 User unknown",
        &mid,
    );
    let v = post_inbound(&app, &forged).await;
    assert_eq!(
        (v["status"].as_str(), v["matched"].as_i64()),
        (Some("unmatched"), Some(0)),
        "{v}"
    );
    assert_eq!(
        statuses(&app.email(&id).await),
        [
            ("ada@example.com".into(), "sent".into()),
            ("bob@example.org".into(), "sent".into())
        ]
    );
    let (s, _) = app.get("/v1/suppressions/bob@example.org", &app.key).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "no suppression from a forgery");
    app.finish().await;
}

/// A report read twice (a crash, a reprocess) adds its event, webhook and suppression once;
/// a message a crash left unread is read by a reprocess of `received` mail.
async fn reading_a_report_again_changes_nothing_twice(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let id = app.send(&email_to(&["zed@example.net"])).await;
    app.drain().await;
    let rp = smtp.received()[0].mail_from.clone();
    let report = dsn(
        &rp,
        "zed@example.net",
        "failed",
        "5.1.1",
        "550 5.1.1 User unknown",
        "<x@y>",
    );
    let v = post_inbound(&app, &report).await;
    assert_eq!(v["status"], "processed", "{v}");
    // The same message read again, twice, through the admin route.
    let admin = herald::domain::admin_token::AdminTokens::new(b"test-secret")
        .mint("ops", app.clock.now_ms() / 1000, 3600)
        .expect("mint");
    for _ in 0..2 {
        let (s, summary, _) = app
            .post(
                "/v1/inbound/reprocess",
                &admin,
                &serde_json::json!({"status": "processed"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{summary}");
        assert_eq!(
            (summary["examined"].as_i64(), summary["processed"].as_i64()),
            (Some(1), Some(1)),
            "{summary}"
        );
        assert_eq!(summary["applied"], 0, "nothing applied a second time");
    }
    let (s, _, _) = app
        .post(
            "/v1/inbound/reprocess",
            &app.key,
            &serde_json::json!({"status": "all"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an API key may not reprocess");
    // Kept, then the process died before reading it.
    let delayed = dsn(
        &rp,
        "zed@example.net",
        "delayed",
        "4.4.1",
        "451 4.4.1 No answer from host",
        "<x@y>",
    );
    app.store
        .insert_inbound(None, "smtp", delayed.as_bytes(), &[], app.clock.now_ms())
        .await
        .expect("keep");
    let (_, summary, _) = app
        .post(
            "/v1/inbound/reprocess",
            &admin,
            &serde_json::json!({"status": "received"}),
        )
        .await;
    assert_eq!(
        (
            summary["examined"].as_i64(),
            summary["processed"].as_i64(),
            summary["applied"].as_i64()
        ),
        (Some(1), Some(1), Some(1)),
        "{summary}"
    );
    let bounced = app
        .events(&id)
        .await
        .into_iter()
        .filter(|e| e["type"] == "email.bounced")
        .count();
    assert_eq!(bounced, 1);
    let (_, list) = app.get("/v1/suppressions", &app.key).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
    app.finish().await;
}

async fn unknown_and_unmatched_mail_is_kept(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let v = post_inbound(
        &app,
        "From: someone@example.com\r\nSubject: hello\r\n\r\nJust a note.\r\n",
    )
    .await;
    assert_eq!(
        (v["kind"].as_str(), v["matched"].as_i64()),
        (Some("unknown"), Some(0))
    );
    let v = post_inbound(
        &app,
        &dsn(
            "x@y.z",
            "ghost@example.net",
            "failed",
            "5.1.1",
            "550 5.1.1 unknown",
            "<nothing@acme.com>",
        ),
    )
    .await;
    assert_eq!(
        (v["kind"].as_str(), v["matched"].as_i64()),
        (Some("dsn"), Some(0))
    );
    assert_eq!(app.store.count_inbound("unknown").await.expect("count"), 1);
    assert_eq!(
        app.store.count_inbound("unmatched").await.expect("count"),
        1
    );
    let resp = app
        .http
        .post(format!("{}/v1/inbound", app.base))
        .bearer_auth(&app.key)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    app.finish().await;
}

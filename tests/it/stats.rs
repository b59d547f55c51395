//! `GET /v1/stats` and `/v1/stats/bounces`: per-recipient counts from the hourly rollups,
//! written with the events that move them.

use herald::clock::Clock;
use herald::store::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, create_key, email_to};
use crate::inbound::post_inbound;
use crate::on_both_backends;
use crate::smtp_server::{Step, TestSmtp, Tls, ok, reply};

on_both_backends!(stats_count_every_outcome_once);

/// A feedback-loop report, returning the original with the signed return path its receiver
/// put in `Return-Path`.
fn complaint(rcpt: &str, message_id: &str, return_path: &str) -> String {
    format!(
        "From: fbl@isp.example\r\nTo: abuse@bounces.herald.localhost\r\nSubject: Abuse report\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary=\"F\"\r\n\r\n\
         --F\r\nContent-Type: text/plain\r\n\r\nComplaint.\r\n\r\n\
         --F\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: FBL/1.0\r\n\
         Version: 1\r\nOriginal-Rcpt-To: <{rcpt}>\r\n\r\n\
         --F\r\nContent-Type: message/rfc822\r\n\r\nReturn-Path: <{return_path}>\r\nFrom: orders@acme.com\r\nTo: {rcpt}\r\n\
         Message-ID: {message_id}\r\nSubject: Hi\r\n\r\nHi\r\n--F--\r\n"
    )
}

async fn stats(app: &TestApp, query: &str) -> Value {
    let (s, v) = app.get(&format!("/v1/stats{query}"), &app.key).await;
    assert_eq!(s, StatusCode::OK, "{query}: {v}");
    v
}

async fn stats_count_every_outcome_once(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    smtp.script(|step| match step {
        Step::Rcpt { to } if to == "bad@example.net" => reply(550, "5.1.1 User unknown"),
        Step::Rcpt { to } if to == "later@example.org" => reply(451, "4.2.0 Try later"),
        _ => ok(),
    });
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let mut a = email_to(&["ada@example.com", "bad@example.net"]);
    a["tags"] = json!(["welcome"]);
    app.send(&a).await;
    let mut b = email_to(&["bob@example.org"]);
    b["tags"] = json!(["welcome", "promo"]);
    let b = app.send(&b).await;
    app.send(&email_to(&["later@example.org"])).await;
    app.drain().await;
    // bad@ is suppressed now; carol's email is scheduled and then canceled.
    app.send(&email_to(&["bad@example.net"])).await;
    let mut d = email_to(&["carol@example.com"]);
    d["scheduled_at"] = json!((chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339());
    let d = app.send(&d).await;
    let (s, _, _) = app
        .post(&format!("/v1/emails/{d}/cancel"), &app.key, &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    // Two copies of one complaint: the timeline keeps both, the stats count one.
    let mid = app.email(&b).await["message_id"]
        .as_str()
        .expect("message_id")
        .to_owned();
    let return_path = smtp
        .received()
        .into_iter()
        .find(|m| m.rcpt_to.iter().any(|r| r == "bob@example.org"))
        .expect("sent to bob")
        .mail_from;
    for _ in 0..2 {
        post_inbound(&app, &complaint("bob@example.org", &mid, &return_path)).await;
    }

    let v = stats(&app, "?granularity=hour").await;
    let t = &v["totals"];
    let counts = |t: &Value| {
        [
            "accepted",
            "sent",
            "delivered",
            "delivery_delayed",
            "bounced",
            "bounced_permanent",
            "complained",
            "failed",
            "suppressed",
            "canceled",
        ]
        .map(|k| t[k].as_i64().unwrap_or(-1))
    };
    // The relay sent no delivery report: delivered is not known (null), and neither is the
    // delivery rate; it is not 0 %.
    assert_eq!(counts(t), [6, 2, -1, 1, 1, 1, 1, 0, 1, 1], "{t}");
    assert!(t["delivered"].is_null(), "{t}");
    assert_eq!(
        (&t["bounce_rate"], &t["delivery_rate"], &t["complaint_rate"]),
        (&json!(0.5), &Value::Null, &json!(0.5))
    );
    // Opens and clicks are not tracked: asked for, refused with why.
    let (s, refused) = app.get("/v1/stats?metrics=opened", &app.key).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("does not track opens")),
        "{refused}"
    );
    assert_eq!(v["object"], "stats");
    assert_eq!(
        v["data"].as_array().map(Vec::len),
        Some(169),
        "7 days of hours, zero-filled, plus the current one"
    );
    let nonzero: i64 = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|p| p["accepted"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(nonzero, 6, "the series adds up to the totals");

    // By tag: an email with two tags counts under both; totals still count it once.
    let v = stats(&app, "?group_by=tag").await;
    let by_tag: Vec<(String, i64)> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| {
            (
                r["tag"].as_str().unwrap_or("").to_owned(),
                r["accepted"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(by_tag, vec![("promo".into(), 1), ("welcome".into(), 3)]);
    assert_eq!(v["totals"]["accepted"], 6);
    let v = stats(&app, "?tag=promo").await;
    assert_eq!(
        (&v["totals"]["accepted"], &v["totals"]["complained"]),
        (&json!(1), &json!(1))
    );

    // By recipient domain and stream, two dimensions at once.
    let v = stats(
        &app,
        "?group_by=recipient_domain,stream&metrics=accepted,sent",
    )
    .await;
    let rows: Vec<Value> = v["data"].as_array().expect("data").clone();
    let com = rows
        .iter()
        .find(|r| r["recipient_domain"] == "example.com")
        .expect("example.com");
    assert_eq!(
        com,
        &json!({"period": com["period"], "recipient_domain": "example.com",
                "stream": "transactional", "accepted": 2, "sent": 1})
    );
    assert_eq!(
        v["totals"].as_object().map(|o| o.len()),
        Some(2),
        "only the metrics asked for"
    );

    let (s, v) = app.get("/v1/stats/bounces", &app.key).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["bounces"],
        json!([{"type": "permanent", "sub_type": "no_email", "count": 1}])
    );
    assert_eq!(
        v["active_suppressions"], 2,
        "bad@ (bounce) and bob@ (complaint)"
    );

    // Another project sees nothing of this one.
    let other = create_key(
        &app.store,
        "beta",
        herald::domain::api_key::Permission::FullAccess,
        app.clock.now_ms(),
    )
    .await;
    let (_, v) = app.get("/v1/stats", &other).await;
    assert_eq!(v["totals"]["accepted"], 0);

    for bad in [
        "?granularity=minute",
        "?group_by=tag,stream,domain",
        "?group_by=color",
        "?timezone=Mars/Olympus",
        "?start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z",
        "?start=yesterday",
        "?metrics=opens",
        "?granularity=hour&start=2020-01-01T00:00:00Z",
        "?colour=blue",
    ] {
        let (s, v) = app.get(&format!("/v1/stats{bad}"), &app.key).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_query")),
            "{bad}: {v}"
        );
    }
    app.finish().await;
}

//! Retention: bodies go after `content_retention_days`, emails and timelines after
//! `event_retention_days`, mail still waiting for delivery is untouched, stats stay.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald::store::Backend;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, email_to};
use crate::on_both_backends;
use crate::smtp_server::{Step, TestSmtp, Tls, ok, reply};

on_both_backends!(retention_purges_settled_mail_and_keeps_stats);

const DAY: Duration = Duration::from_secs(24 * 3600);

async fn retention_purges_settled_mail_and_keeps_stats(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let relay_up = Arc::new(AtomicBool::new(false));
    let up = Arc::clone(&relay_up);
    smtp.script(move |step| match step {
        Step::Rcpt { to } if to == "later@example.org" && !up.load(Ordering::SeqCst) => {
            reply(451, "4.2.0 Try later")
        }
        _ => ok(),
    });
    let app = TestApp::spawn_with(backend, Some(&smtp), |c| {
        c.retention.content_retention_days = 1;
        c.retention.event_retention_days = 30;
        // Two rows per batch: three emails take several batches.
        c.retention.batch_size = 2;
        c.retry.max_age = Duration::from_secs(40 * 24 * 3600);
    })
    .await;
    let mut settled = Vec::new();
    for name in ["ada", "bob", "cy"] {
        let mut body = email_to(&[&format!("{name}@example.com")]);
        body["tags"] = json!(["receipt"]);
        body["metadata"] = json!({"user": name});
        settled.push(app.send(&body).await);
    }
    let mut waiting = email_to(&["later@example.org"]);
    waiting["text"] = json!("Still on its way.");
    let waiting = app.send(&waiting).await;
    app.drain().await;
    assert_eq!(
        app.email(&settled[0]).await["text"],
        "Thanks for your order."
    );
    assert_eq!(app.purge().await, 0, "nothing is old enough yet");

    app.advance(DAY + Duration::from_secs(60));
    assert_eq!(
        app.purge().await,
        3,
        "the three settled emails lose their bodies"
    );
    for id in &settled {
        let e = app.email(id).await;
        assert_eq!(e["content_purged"], true);
        assert!(e.get("text").is_none() && e.get("html").is_none(), "{e}");
        assert_eq!(e["status"], "sent", "the record itself stays");
    }
    let w = app.email(&waiting).await;
    assert_eq!(
        (&w["content_purged"], &w["text"], &w["status"]),
        (
            &json!(false),
            &json!("Still on its way."),
            &json!("delivery_delayed")
        )
    );
    // The relay recovers: the waiting mail still goes out whole.
    relay_up.store(true, Ordering::SeqCst);
    app.advance(Duration::from_secs(6 * 3600));
    app.drain().await;
    assert_eq!(app.email(&waiting).await["status"], "sent");
    let last = smtp.received().last().expect("delivered").data.clone();
    assert!(String::from_utf8_lossy(&last).contains("Still on its way."));

    let since = (chrono::Utc::now() - chrono::Duration::days(5)).to_rfc3339();
    let stats_query = format!(
        "/v1/stats?granularity=month&start={}",
        since.replace('+', "%2B")
    );
    let (_, stats_before) = app.get(&stats_query, &app.key).await;
    app.advance(30 * DAY);
    assert_eq!(
        app.purge().await,
        4 + 1,
        "all four emails, then the waiting one's body"
    );
    for id in settled.iter().chain([&waiting]) {
        let (s, _) = app.get(&format!("/v1/emails/{id}"), &app.key).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (_, events) = app
            .get(&format!("/v1/events?email_id={id}"), &app.key)
            .await;
        assert_eq!(events["data"], json!([]));
    }
    let (_, page) = app.get("/v1/emails?tag=receipt", &app.key).await;
    assert_eq!(page["data"], json!([]), "search keys went with the emails");
    let (_, page) = app.get("/v1/emails?metadata[user]=ada", &app.key).await;
    assert_eq!(page["data"], json!([]));
    let (_, stats_after) = app.get(&stats_query, &app.key).await;
    assert_eq!(
        stats_after["totals"], stats_before["totals"],
        "the rollups outlive the purge"
    );
    assert_eq!(
        (
            &stats_after["totals"]["accepted"],
            &stats_after["totals"]["sent"]
        ),
        (&json!(4), &json!(4))
    );
    app.finish().await;
}

//! Webhooks end to end: a real receiver, signed deliveries, retries on schedule through an
//! outage (driven by the manual clock), 410, give-up, rotation, SSRF, filters, replay, and a
//! third-party Standard Webhooks library verifying what Herald sent.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use herald::store::Backend;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{TestApp, email_to};
use crate::receiver::{Hit, Mode, Receiver};
use crate::smtp_server::{Step, TestSmtp, Tls, ok, reply};
use crate::{on_both_backends, on_sqlite};

on_both_backends!(every_event_arrives_through_an_outage, filters_and_outbox);
on_sqlite!(
    gone_disables_the_endpoint,
    failing_past_the_schedule_disables_the_endpoint,
    retry_after_is_honoured,
    rotation_signs_with_both_secrets,
    refuses_private_targets,
    test_send_replay_and_manual_retry,
    management_and_secrets,
    standard_webhooks_library_verifies_deliveries,
    redirects_are_not_followed,
    event_feed_pages_with_a_cursor,
    concurrency_per_endpoint_is_bounded,
);

async fn concurrency_per_endpoint_is_bounded(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.set(Mode::Slow(Duration::from_millis(200)));
    let app = TestApp::spawn_with(backend, None, |c| c.webhooks.concurrency_per_endpoint = 2).await;
    create_webhook(&app, &receiver.url(), json!(["*"])).await;
    for i in 0..6 {
        app.send(&email_to(&[&format!("u{i}@example.com")])).await;
    }
    app.drain().await;
    assert_eq!(app.dispatch().await, 6);
    assert_eq!(receiver.hits().len(), 6);
    assert_eq!(receiver.max_concurrent(), 2);
    app.finish().await;
}

async fn redirects_are_not_followed(backend: Backend) {
    let elsewhere = Receiver::start().await;
    let receiver = Receiver::start().await;
    receiver.set(Mode::Redirect(elsewhere.url()));
    let app = TestApp::spawn(backend, None).await;
    let (hook, _) = create_webhook(&app, &receiver.url(), json!(["*"])).await;
    app.send(&email_to(&["a@example.com"])).await;
    app.drain().await;
    app.dispatch().await;
    assert_eq!(receiver.hits().len(), 1);
    assert!(elsewhere.hits().is_empty(), "the redirect was followed");
    let (_, log) = app
        .get(&format!("/v1/webhooks/{hook}/deliveries"), &app.key)
        .await;
    assert_eq!(log["data"][0]["status"], "failed");
    assert_eq!(log["data"][0]["status_code"], 307);
    assert!(
        log["data"][0]["next_attempt_at"].is_string(),
        "retried later: {log}"
    );
    app.finish().await;
}

async fn event_feed_pages_with_a_cursor(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    for i in 0..5 {
        app.send(&email_to(&[&format!("u{i}@example.com")])).await;
    }
    app.drain().await;
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let path = if after.is_empty() {
            "/v1/events?type=email.sent&limit=2".to_owned()
        } else {
            format!("/v1/events?type=email.sent&limit=2&after={after}")
        };
        let (s, page) = app.get(&path, &app.key).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let data = page["data"].as_array().expect("data");
        seen.extend(
            data.iter()
                .map(|e| e["id"].as_str().expect("id").to_owned()),
        );
        if !page["has_more"].as_bool().expect("has_more") {
            break;
        }
        after = seen.last().expect("last").clone();
    }
    assert_eq!(seen.len(), 5);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "oldest first, in id order");
    let (_, one) = app
        .get(
            "/v1/events?recipient=u3@example.com&type=email.sent",
            &app.key,
        )
        .await;
    assert_eq!(one["data"].as_array().expect("data").len(), 1);
    let (s, v) = app.get("/v1/events?limit=0", &app.key).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
    // A filter that could match nothing is refused, not answered with an empty page.
    for q in ["bogus=1", "type=garbage", "email_id=garbage"] {
        let (s, v) = app.get(&format!("/v1/events?{q}"), &app.key).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_query")),
            "{q}: {v}"
        );
    }
    let (s, _) = app.get("/v1/events?type=domain.verified", &app.key).await;
    assert_eq!(s, StatusCode::OK);
    app.finish().await;
}

/// Checks a delivery's signature with an HMAC computed here, not by Herald's signer.
fn valid_signatures(hit: &Hit, secret: &str) -> usize {
    let key = base64::engine::general_purpose::STANDARD
        .decode(&secret[6..])
        .expect("secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{}.{}.{}", hit.id, hit.timestamp, hit.body).as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    hit.signature.split(' ').filter(|s| *s == expected).count()
}

pub async fn create_webhook(app: &TestApp, url: &str, events: Value) -> (String, String) {
    let (s, v, _) = app
        .post(
            "/v1/webhooks",
            &app.key,
            &json!({"url": url, "events": events}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    (
        v["id"].as_str().expect("id").to_owned(),
        v["secret"].as_str().expect("secret").to_owned(),
    )
}

async fn every_event_arrives_through_an_outage(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let mut receiver = Receiver::start().await;
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let (hook, secret) = create_webhook(&app, &receiver.url(), json!(["*"])).await;
    receiver.stop();

    let mut emails = Vec::new();
    for i in 0..5 {
        emails.push(app.send(&email_to(&[&format!("u{i}@example.com")])).await);
    }
    app.drain().await;
    assert_eq!(
        app.store.count_pending_webhooks().await.expect("count"),
        5,
        "one sent event each"
    );

    // Down: connection refused. The first round goes out at once; after a failure the lane
    // sends one request at a time, and a round of failures pauses it for the schedule's
    // first step (5 s); what it had not sent waits out the pause.
    let first = app.dispatch().await;
    assert!((1..=5).contains(&first), "a round at most: {first}");
    // Slow: the receiver answers after Herald's 1 s timeout.
    receiver.restart().await;
    receiver.set(Mode::Slow(Duration::from_secs(3)));
    app.advance(Duration::from_millis(4_999));
    assert_eq!(
        app.dispatch().await,
        0,
        "not before the 5 s retry and pause"
    );
    app.advance(Duration::from_millis(1));
    assert!(
        app.dispatch().await >= 1,
        "tried again once the pause is over"
    );
    // 500s, after the next step of the schedule (5 minutes).
    receiver.set(Mode::Status(500));
    app.advance(Duration::from_secs(300));
    assert!(app.dispatch().await >= 1);
    // Recovered: everything arrives once the schedule's steps have passed.
    receiver.set(Mode::Status(200));
    for _ in 0..8 {
        app.advance(Duration::from_secs(7_200));
        app.dispatch().await;
        if app.store.count_pending_webhooks().await.expect("count") == 0 {
            break;
        }
    }
    app.advance(Duration::from_secs(86_400));
    assert_eq!(app.dispatch().await, 0, "nothing left to send");
    assert_eq!(app.store.count_pending_webhooks().await.expect("count"), 0);

    let hits = receiver.hits();
    let delivered: Vec<&Hit> = hits
        .iter()
        .filter(|h| h.answered == 200 && h.body.contains("email.sent"))
        .collect();
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for h in &hits {
        assert_eq!(
            valid_signatures(h, &secret),
            1,
            "every request is signed: {h:?}"
        );
        *per_id.entry(h.id.as_str()).or_default() += 1;
    }
    // Each event reached the receiver once it was back (slow, 500 or 200), at most once a
    // phase.
    assert!(per_id.values().all(|n| (1..=3).contains(n)), "{per_id:?}");
    let ok_ids: std::collections::HashSet<&str> = hits
        .iter()
        .filter(|h| h.answered == 200 && !h.body.is_empty())
        .map(|h| h.id.as_str())
        .collect();
    assert_eq!(ok_ids.len(), 5);
    for (email, h) in emails.iter().zip(delivered.iter()) {
        let body: Value = serde_json::from_str(&h.body).expect("json");
        assert_eq!(body["type"], "email.sent");
        assert!(
            emails.contains(
                &body["data"]["email_id"]
                    .as_str()
                    .expect("email_id")
                    .to_owned()
            ),
            "{email}"
        );
        assert_eq!(body["data"]["from"], "Acme <orders@acme.com>");
        assert_eq!(body["data"]["smtp"]["code"], 250);
    }
    let ids: std::collections::HashSet<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    let status = |code: u16| hits.iter().filter(|h| h.answered == code).count();
    println!(
        "webhook outage test ({backend:?}): 5 events through refused, timed-out, 500 and 200 phases; \
         the receiver saw {} requests ({} answered 200, some too late for Herald's 1 s timeout; \
         {} answered 500) for {} distinct webhook-ids; events missing 0; every request signed",
        hits.len(),
        status(200),
        status(500),
        ids.len(),
    );
    assert_eq!(ids.len(), 5);

    // The attempt log tells the story, newest first, with the schedule's delays.
    let (_, log) = app
        .get(
            &format!("/v1/webhooks/{hook}/deliveries?limit=100"),
            &app.key,
        )
        .await;
    let rows = log["data"].as_array().expect("data");
    let failed = rows.iter().filter(|r| r["status"] == "failed").count();
    let succeeded = rows.iter().filter(|r| r["status"] == "succeeded").count();
    assert_eq!(succeeded, 5, "{log}");
    assert_eq!(
        failed + succeeded,
        rows.len(),
        "every attempt is logged: {log}"
    );
    assert!(
        rows.iter()
            .any(|r| r["status_code"] == 500 && r["response_body"] == "ok")
    );
    assert!(
        rows.iter()
            .any(|r| r["error"].as_str().unwrap_or("").contains("timed out")),
        "{log}"
    );
    assert!(
        rows.iter()
            .any(|r| r["error"].as_str().unwrap_or("").contains("connect")),
        "{log}"
    );
    let (_, only_failed) = app
        .get(
            &format!("/v1/webhooks/{hook}/deliveries?status=failed&limit=100"),
            &app.key,
        )
        .await;
    assert_eq!(only_failed["data"].as_array().expect("data").len(), failed);
    app.finish().await;
}

async fn filters_and_outbox(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    smtp.script(|step| match step {
        Step::Rcpt { to } if to.starts_with("bad") => reply(550, "5.1.1 User unknown"),
        _ => ok(),
    });
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let (bounces, _) = create_webhook(&app, &receiver.url(), json!(["email.bounced"])).await;
    let (s, v, _) = app
        .post(
            "/v1/webhooks",
            &app.key,
            &json!({"url": receiver.url(), "events": ["email.*"], "streams": ["broadcast"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = app
        .send(&email_to(&["good@example.com", "bad@example.com"]))
        .await;
    app.drain().await;
    assert_eq!(
        app.store.count_pending_webhooks().await.expect("count"),
        1,
        "only the bounce, only to its endpoint"
    );
    app.dispatch().await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1);
    let body: Value = serde_json::from_str(&hits[0].body).expect("json");
    assert_eq!(body["type"], "email.bounced");
    assert_eq!(body["data"]["email_id"], id.as_str());
    assert_eq!(body["data"]["recipient"], "bad@example.com");
    assert_eq!(body["data"]["bounce"]["type"], "permanent");
    assert_eq!(body["data"]["bounce"]["sub_type"], "no_email");
    // webhook-id is the event id, so consumers can find it in the feed.
    let (_, feed) = app
        .get(
            &format!("/v1/events?type=email.bounced&email_id={id}"),
            &app.key,
        )
        .await;
    assert_eq!(feed["data"][0]["id"].as_str(), Some(hits[0].id.as_str()));
    let _ = bounces;
    app.finish().await;
}

async fn gone_disables_the_endpoint(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.set(Mode::Status(410));
    let app = TestApp::spawn(backend, None).await;
    let (hook, _) = create_webhook(&app, &receiver.url(), json!(["*"])).await;
    app.send(&email_to(&["a@example.com", "b@example.com"]))
        .await;
    app.drain().await;
    app.dispatch().await;
    // Both deliveries were in flight together; neither is tried again.
    let first = receiver.hits().len();
    assert!((1..=2).contains(&first), "{first}");
    app.advance(Duration::from_secs(86_400));
    assert_eq!(app.dispatch().await, 0);
    assert_eq!(receiver.hits().len(), first);
    let (_, v) = app.get(&format!("/v1/webhooks/{hook}"), &app.key).await;
    assert_eq!(v["status"], "auto_disabled");
    assert!(v["disabled_reason"].as_str().unwrap_or("").contains("410"));
    app.send(&email_to(&["c@example.com"])).await;
    app.drain().await;
    assert_eq!(
        app.store.count_pending_webhooks().await.expect("count"),
        0,
        "a disabled endpoint gets nothing"
    );
    app.finish().await;
}

async fn failing_past_the_schedule_disables_the_endpoint(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.set(Mode::Status(500));
    let app = TestApp::spawn_with(backend, None, |c| {
        c.webhooks.retry_schedule = vec![Duration::from_secs(5), Duration::from_secs(60)];
    })
    .await;
    let (hook, _) = create_webhook(&app, &receiver.url(), json!(["*"])).await;
    app.send(&email_to(&["a@example.com"])).await;
    app.drain().await;
    for step in [0, 5, 60] {
        app.advance(Duration::from_secs(step));
        assert_eq!(app.dispatch().await, 1);
    }
    app.advance(Duration::from_secs(86_400));
    assert_eq!(app.dispatch().await, 0);
    assert_eq!(receiver.hits().len(), 3);
    let (_, v) = app.get(&format!("/v1/webhooks/{hook}"), &app.key).await;
    assert_eq!(v["status"], "auto_disabled");
    assert!(
        v["disabled_reason"]
            .as_str()
            .unwrap_or("")
            .contains("past the retry schedule"),
        "{v}"
    );
    app.finish().await;
}

async fn retry_after_is_honoured(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.set(Mode::StatusRetryAfter(503, 120));
    let app = TestApp::spawn(backend, None).await;
    create_webhook(&app, &receiver.url(), json!(["*"])).await;
    app.send(&email_to(&["a@example.com"])).await;
    app.drain().await;
    app.dispatch().await;
    receiver.set(Mode::Status(200));
    app.advance(Duration::from_secs(119));
    assert_eq!(
        app.dispatch().await,
        0,
        "the schedule says 5 s, Retry-After says 120 s"
    );
    app.advance(Duration::from_secs(1));
    assert_eq!(app.dispatch().await, 1);
    assert_eq!(receiver.hits().len(), 2);
    app.finish().await;
}

async fn rotation_signs_with_both_secrets(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(backend, None).await;
    let (hook, old) = create_webhook(&app, &receiver.url(), json!(["*"])).await;
    let (s, v, _) = app
        .post(
            &format!("/v1/webhooks/{hook}/secret/rotate"),
            &app.key,
            &json!({"grace_period_seconds": 3600}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let new = v["secret"].as_str().expect("secret").to_owned();
    assert_ne!(new, old);
    app.send(&email_to(&["a@example.com"])).await;
    app.drain().await;
    app.dispatch().await;
    let hit = &receiver.hits()[0];
    assert_eq!(hit.signature.split(' ').count(), 2);
    assert_eq!(valid_signatures(hit, &old), 1);
    assert_eq!(valid_signatures(hit, &new), 1);
    // After the grace period only the new secret signs.
    app.advance(Duration::from_secs(3601));
    app.send(&email_to(&["b@example.com"])).await;
    app.drain().await;
    app.dispatch().await;
    let hit = &receiver.hits()[1];
    assert_eq!(hit.signature.split(' ').count(), 1);
    assert_eq!(valid_signatures(hit, &new), 1);
    assert_eq!(valid_signatures(hit, &old), 0);
    app.finish().await;
}

async fn refuses_private_targets(backend: Backend) {
    let receiver = Receiver::start().await;
    let app =
        TestApp::spawn_with(backend, None, |c| c.webhooks.allow_private_targets = false).await;
    for url in [
        receiver.url(),
        format!("http://localhost:{}/h", receiver.addr.port()),
        "http://169.254.169.254/latest/meta-data".into(),
        "http://[::1]/h".into(),
        "http://10.0.0.8/h".into(),
    ] {
        let (s, v, _) = app
            .post(
                "/v1/webhooks",
                &app.key,
                &json!({"url": url, "events": ["*"]}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {v}");
        assert_eq!(v["errors"][0]["code"], "forbidden_target", "{url}");
    }
    let (s, v, _) = app
        .post(
            "/v1/webhooks",
            &app.key,
            &json!({"url": "file:///etc/passwd", "events": ["*"]}),
        )
        .await;
    assert_eq!(
        (s, v["errors"][0]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_url"))
    );

    // A name that resolved somewhere public when saved and points at loopback now (DNS
    // rebinding) is refused at connect time: stand in for it with an endpoint written
    // straight to the store.
    let project = app.store.ensure_project("alpha", 0).await.expect("project");
    let now = chrono::Utc::now().timestamp_millis();
    app.store
        .insert_webhook_endpoint(&herald::store::EndpointRecord {
            id: uuid::Uuid::now_v7().to_string(),
            project_id: project.id,
            url: format!("http://localhost:{}/hooks", receiver.addr.port()),
            description: None,
            event_types: vec!["*".into()],
            streams: vec![],
            status: herald::domain::states::EndpointStatus::Enabled,
            disabled_reason: None,
            secret: app
                .dispatcher
                .sealer
                .seal(&herald::webhooks::signing::generate_secret()),
            previous_secret: None,
            previous_secret_expires_at: None,
            created_at: now,
            updated_at: now,
            rate_limit: None,
        })
        .await
        .expect("insert");
    app.send(&email_to(&["a@example.com"])).await;
    app.drain().await;
    assert_eq!(app.dispatch().await, 1);
    assert!(
        receiver.hits().is_empty(),
        "nothing reached the private address"
    );
    app.finish().await;
}

async fn test_send_replay_and_manual_retry(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(backend, None).await;
    let (hook, secret) = create_webhook(&app, &receiver.url(), json!(["email.sent"])).await;
    let (s, v, _) = app
        .post(&format!("/v1/webhooks/{hook}/test"), &app.key, &json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    app.dispatch().await;
    let hit = &receiver.hits()[0];
    assert!(
        hit.body.contains("\"type\":\"webhook.test\""),
        "{}",
        hit.body
    );
    assert_eq!(valid_signatures(hit, &secret), 1);

    // A failed delivery, retried by hand.
    receiver.set(Mode::Status(500));
    app.send(&email_to(&["a@example.com"])).await;
    app.drain().await;
    app.dispatch().await;
    receiver.set(Mode::Status(200));
    let (_, log) = app
        .get(
            &format!("/v1/webhooks/{hook}/deliveries?status=failed"),
            &app.key,
        )
        .await;
    let delivery = log["data"][0]["delivery_id"]
        .as_str()
        .expect("delivery")
        .to_owned();
    let (s, _, _) = app
        .post(
            &format!("/v1/webhooks/{hook}/deliveries/{delivery}/retry"),
            &app.key,
            &json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(app.dispatch().await, 1, "due at once, not in 5 s");
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[1].id, hits[2].id, "the same webhook-id on retry");

    // Replay of an event: the same webhook-id again.
    let (s, v, _) = app
        .post(
            &format!("/v1/events/{}/redeliver", hits[2].id),
            &app.key,
            &json!({}),
        )
        .await;
    assert_eq!(
        (s, v["deliveries"].as_i64()),
        (StatusCode::ACCEPTED, Some(1))
    );
    app.dispatch().await;
    assert_eq!(receiver.hits()[3].id, hits[2].id);
    let (s, _, _) = app
        .post(
            "/v1/events/0190f3c2-7a1e-7c44-9b1d-3f5a2e6c8d10/redeliver",
            &app.key,
            &json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.finish().await;
}

async fn management_and_secrets(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let url = "http://127.0.0.1:9/h";
    let (hook, secret) =
        create_webhook(&app, url, json!(["email.bounced", "email.delivered"])).await;
    assert!(secret.starts_with("whsec_"));
    let (_, list) = app.get("/v1/webhooks", &app.key).await;
    assert_eq!(list["data"][0]["id"], hook.as_str());
    assert!(
        list["data"][0].get("secret").is_none(),
        "listings do not show secrets"
    );
    let (_, one) = app.get(&format!("/v1/webhooks/{hook}"), &app.key).await;
    assert_eq!(one["secret"], secret.as_str());
    // Stored sealed, never in the clear.
    let raw: String = sqlx::query_scalar("SELECT secret FROM webhook_endpoints")
        .fetch_one(&sqlx::AnyPool::connect(&app.db.url).await.expect("pool"))
        .await
        .expect("row");
    assert!(!raw.contains(&secret[6..]), "secret stored in the clear");

    let (s, v, _) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/webhooks/{hook}"),
            &app.key,
            Some(&json!({"events": ["nope"], "status": "paused"})),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let codes: Vec<&str> = v["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["code"].as_str())
        .collect();
    assert_eq!(codes, ["invalid_event_type", "validation_error"]);
    let (s, v, _) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/webhooks/{hook}"),
            &app.key,
            Some(&json!({"status": "disabled"})),
            &[],
        )
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("disabled"))
    );

    let beta = crate::helpers::create_key(
        &app.store,
        "beta",
        herald::domain::api_key::Permission::FullAccess,
        0,
    )
    .await;
    let (s, _) = app.get(&format!("/v1/webhooks/{hook}"), &beta).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another project's endpoint");
    let sender = crate::helpers::create_key(
        &app.store,
        "alpha",
        herald::domain::api_key::Permission::SendingAccess,
        0,
    )
    .await;
    let (s, _) = app.get(&format!("/v1/webhooks/{hook}"), &sender).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, _, _) = app
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/{hook}"),
            &app.key,
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app.get(&format!("/v1/webhooks/{hook}"), &app.key).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.finish().await;
}

/// The `standardwebhooks` package (PyPI), which nobody here wrote, verifies Herald's requests.
async fn standard_webhooks_library_verifies_deliveries(backend: Backend) {
    let available = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        assert!(
            std::env::var("TEST_HERALD_REQUIRE_INTEROP").is_err(),
            "standardwebhooks is not installed"
        );
        eprintln!("skipping: python3 -m pip install standardwebhooks to run this test");
        return;
    }
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(backend, None).await;
    let (hook, old) = create_webhook(&app, &receiver.url(), json!(["*"])).await;
    app.send(&email_to(&["a@example.com", "b@example.com"]))
        .await;
    app.drain().await;
    app.dispatch().await;
    let (_, rotated, _) = app
        .post(
            &format!("/v1/webhooks/{hook}/secret/rotate"),
            &app.key,
            &json!({}),
        )
        .await;
    let new = rotated["secret"].as_str().expect("secret").to_owned();
    app.send(&email_to(&["c@example.com"])).await;
    app.drain().await;
    app.dispatch().await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: Vec<Value> = hits
        .iter()
        .enumerate()
        .flat_map(|(i, h)| {
            let secrets = if i < 2 { vec![old.clone()] } else { vec![old.clone(), new.clone()] };
            secrets.into_iter().map(move |secret| {
                json!({"secret": secret, "body": h.body,
                       "headers": {"webhook-id": h.id, "webhook-timestamp": h.timestamp, "webhook-signature": h.signature}})
            })
        })
        .collect();
    let file = dir.path().join("deliveries.json");
    std::fs::write(&file, serde_json::to_vec(&cases).expect("json")).expect("write");
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/verify_webhooks.py"
        ))
        .arg(&file)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("verified 4 of 4"), "{stdout}");
    app.finish().await;
}

/// `Idempotency-Key` on `POST /v1/webhooks`: a retry answers with the endpoint the first
/// request made (its secret included, never kept in the clear), a different body with the same
/// key is refused, and only one endpoint exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_an_endpoint_is_idempotent() {
    let app = TestApp::spawn(Backend::Sqlite, None).await;
    let body = json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]});
    let headers = [("idempotency-key", "hook-1")];
    let (s1, first, _) = app
        .request(
            reqwest::Method::POST,
            "/v1/webhooks",
            &app.key,
            Some(&body),
            &headers,
        )
        .await;
    assert_eq!(s1, StatusCode::CREATED, "{first}");
    let (s2, again, h2) = app
        .request(
            reqwest::Method::POST,
            "/v1/webhooks",
            &app.key,
            Some(&body),
            &headers,
        )
        .await;
    assert_eq!(s2, StatusCode::CREATED, "{again}");
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(
        (&again["id"], &again["secret"]),
        (&first["id"], &first["secret"])
    );
    let other = json!({"url": "http://127.0.0.1:9/other", "events": ["*"]});
    let (s3, v3, _) = app
        .request(
            reqwest::Method::POST,
            "/v1/webhooks",
            &app.key,
            Some(&other),
            &headers,
        )
        .await;
    assert_eq!(
        (s3, v3["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency_key_reused")
        )
    );
    let (_, list) = app.get("/v1/webhooks", &app.key).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
    // What is kept to replay holds no secret.
    let secret = first["secret"].as_str().expect("secret");
    let kept: Vec<String> = sqlx::query_scalar("SELECT response_body FROM idempotency_keys")
        .fetch_all(&sqlx::AnyPool::connect(&app.db.url).await.expect("pool"))
        .await
        .expect("kept");
    assert!(kept.iter().all(|b| !b.contains(secret)), "{kept:?}");
    app.finish().await;
}

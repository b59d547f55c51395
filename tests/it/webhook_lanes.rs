//! The dispatcher's lanes: every endpoint keeps its own pace (a slow one holds only its own
//! slots, a dead one backs off on the retry schedule), and an endpoint's rate cap is kept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, email_to};
use crate::receiver::{Mode, Receiver};
use crate::webhooks::create_webhook;

/// Waits (polling, bounded) until `done` holds; how long it took.
async fn until(within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// 100 endpoints of one project, each subscribed to everything: 98 answer at once, one after
/// 5 s, one is down (503). The 98 get every event while the slow one has answered at most a
/// round, and the slow one never has more than its concurrency in flight; the dead one is
/// sent one round, then its lane waits out the schedule's first step, and it gets everything
/// once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_keeps_its_own_pace() {
    let app = TestApp::spawn_with(herald::store::Backend::Sqlite, None, |c| {
        c.webhooks.timeout = Duration::from_secs(10);
        c.webhooks.concurrency_per_endpoint = 4;
    })
    .await;
    let mut healthy = Vec::new();
    for _ in 0..98 {
        let r = Receiver::start().await;
        create_webhook(&app, &r.url(), json!(["*"])).await;
        healthy.push(r);
    }
    let slow = Receiver::start().await;
    slow.set(Mode::Slow(Duration::from_secs(5)));
    create_webhook(&app, &slow.url(), json!(["*"])).await;
    let down = Receiver::start().await;
    down.set(Mode::Status(503));
    create_webhook(&app, &down.url(), json!(["*"])).await;
    let emails = 10;
    for i in 0..emails {
        app.send(&email_to(&[&format!("u{i}@example.com")])).await;
    }
    app.drain().await;

    let wake = Arc::new(tokio::sync::Notify::new());
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.dispatcher.clone().run(
        Arc::clone(&wake),
        stop.clone(),
        Duration::from_millis(200),
    ));
    let took = until(Duration::from_secs(60), || {
        healthy.iter().all(|r| r.hits().len() >= emails)
    })
    .await;
    // Everything the healthy endpoints got, they got once.
    for r in &healthy {
        assert_eq!(r.hits().len(), emails);
    }
    let rounds = took.as_secs() / 5 + 1;
    assert!(
        slow.hits().len() as u64 <= 4 * rounds,
        "the slow endpoint's lane ran ahead of its answers: {} in {took:?}",
        slow.hits().len()
    );
    assert!(
        took < Duration::from_secs(10),
        "the healthy endpoints waited for the slow one: {took:?}"
    );
    let dead_round = down.hits().len();
    println!(
        "lanes: 98 healthy endpoints got all {emails} events each ({} requests) in {took:?}; \
         meanwhile the slow one answered {} and the dead one was sent {dead_round}",
        98 * emails,
        slow.hits().len()
    );
    assert!(
        (1..=4).contains(&dead_round),
        "the dead endpoint is sent one round, then waits: {dead_round}"
    );

    // The slow one gets everything, never more than its concurrency at once.
    until(Duration::from_secs(60), || slow.hits().len() >= emails).await;
    assert_eq!(slow.max_concurrent(), 4);
    assert_eq!(
        down.hits().len(),
        dead_round,
        "nothing is sent while the lane waits"
    );

    // The dead endpoint comes back; once the schedule's first step (5 s) has passed, its
    // lane resumes and it gets every event, the ones it failed included.
    down.set(Mode::Status(200));
    app.advance(Duration::from_secs(6));
    wake.notify_one();
    until(Duration::from_secs(30), || {
        down.hits()
            .iter()
            .filter(|h| h.answered == 200)
            .map(|h| h.id.clone())
            .collect::<std::collections::HashSet<_>>()
            .len()
            >= emails
    })
    .await;
    stop.cancel();
    running.await.expect("the dispatcher stops");
    assert_eq!(app.store.count_pending_webhooks().await.expect("count"), 0);
    app.finish().await;
}

/// An endpoint capped at 5 events a second is sent 15 events over at least 2.8 s, never
/// more than 5 in any second (less the loopback's jitter); the cap is set, shown and removed through the API, and a cap
/// out of range is refused with a pointer to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoints_rate_cap_is_kept() {
    let app = TestApp::spawn(herald::store::Backend::Sqlite, None).await;
    let receiver = Receiver::start().await;
    let (id, _) = create_webhook(&app, &receiver.url(), json!(["email.sent"])).await;
    let path = format!("/v1/webhooks/{id}");
    let (s, v, _) = app
        .request(
            reqwest::Method::PATCH,
            &path,
            &app.key,
            Some(&json!({"rate_limit": 0})),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["errors"][0]["pointer"], "/rate_limit", "{v}");
    let (s, v, _) = app
        .request(
            reqwest::Method::PATCH,
            &path,
            &app.key,
            Some(&json!({"rate_limit": 5})),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["rate_limit"], 5);

    let n = 15;
    for i in 0..n {
        app.send(&email_to(&[&format!("u{i}@example.com")])).await;
    }
    app.drain().await;
    assert_eq!(app.dispatch().await, n);
    let mut at: Vec<Instant> = receiver.hits().iter().map(|h| h.at).collect();
    at.sort();
    assert_eq!(at.len(), n);
    let span = at[n - 1] - at[0];
    assert!(
        span >= Duration::from_millis(2800),
        "{n} events in {span:?}"
    );
    // No more than 5 start in any second (`webhooks::pacer`'s own tests); what arrives
    // carries the loopback's jitter besides, so the receiver's window is a little shorter.
    for (i, first) in at.iter().enumerate() {
        let in_a_second = at[i..]
            .iter()
            .take_while(|t| **t - *first < Duration::from_millis(950))
            .count();
        assert!(in_a_second <= 5, "{in_a_second} events within 950 ms");
    }

    let (s, v, _) = app
        .request(
            reqwest::Method::PATCH,
            &path,
            &app.key,
            Some(&json!({"rate_limit": null})),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["rate_limit"].is_null(), "{v}");
    app.finish().await;
}

/// An endpoint that is down is sent what the lane had in flight when it failed, then one
/// request per step of the retry schedule: a probe after each pause, whose failure pauses the
/// lane for the next step; once a probe succeeds, everything waiting is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_endpoint_is_probed_once_per_step() {
    let app = TestApp::spawn_with(herald::store::Backend::Sqlite, None, |c| {
        c.webhooks.concurrency_per_endpoint = 8;
        c.webhooks.jitter = 0.0;
    })
    .await;
    let down = Receiver::start().await;
    down.set(Mode::Status(500));
    create_webhook(&app, &down.url(), json!(["email.sent"])).await;
    let emails = 12;
    for i in 0..emails {
        app.send(&email_to(&[&format!("u{i}@example.com")])).await;
    }
    app.drain().await;

    // The first round: what was sent at once, all failed; then the lane waits.
    let round = app.dispatch().await;
    assert!((4..=8).contains(&round), "first round: {round}");
    assert_eq!(app.dispatch().await, 0, "paused: nothing is sent");
    // The schedule's first step (5 s) passes: one probe, which fails.
    app.advance(Duration::from_secs(6));
    assert_eq!(app.dispatch().await, 1, "one probe after the first pause");
    assert_eq!(app.dispatch().await, 0);
    // The next step is 5 minutes: nothing within it, one probe after it.
    app.advance(Duration::from_secs(60));
    assert_eq!(app.dispatch().await, 0, "within the second step");
    app.advance(Duration::from_secs(300));
    assert_eq!(app.dispatch().await, 1, "one probe after the second pause");
    assert_eq!(down.hits().len(), round + 2);

    // Back up: the next probe succeeds and the lane sends everything.
    down.set(Mode::Status(200));
    app.advance(Duration::from_secs(2 * 3600));
    app.dispatch().await;
    let delivered: std::collections::HashSet<String> = down
        .hits()
        .iter()
        .filter(|h| h.answered == 200)
        .map(|h| h.id.clone())
        .collect();
    assert_eq!(delivered.len(), emails);
    assert_eq!(app.store.count_pending_webhooks().await.expect("count"), 0);
    app.finish().await;
}

//! Delivery through a real SMTP server: TLS, AUTH, per-recipient replies, retries, expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use herald::domain::verp::VerpSigner;
use herald::store::Backend;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, email_to, statuses};
use crate::smtp_server::{Action, Step, TestSmtp, Tls, ok, reply};
use crate::{on_both_backends, on_sqlite};

on_both_backends!(
    delivers_over_starttls_with_auth,
    one_rejected_recipient_does_not_sink_the_others,
    transient_failure_is_retried_on_schedule,
    dropped_connection_mid_data_is_retried,
    retries_end_in_a_verdict_at_max_age,
);
on_sqlite!(
    delivers_over_implicit_tls,
    authenticates_with_auth_login,
    a_reply_that_never_comes_times_out,
    wrong_relay_password_defers_without_losing_mail,
    tls_required_refuses_a_relay_without_starttls,
    opportunistic_tls_never_sends_the_password_in_the_clear,
    shutdown_finishes_what_started_and_starts_nothing,
    a_recipient_in_flight_is_not_sent_again_when_its_lease_runs_out,
    expired_email_fails_without_an_attempt,
    relay_that_refuses_connections_ends_in_failed,
    connections_are_reused,
    metrics_count_what_happened,
    no_relay_writes_eml_files,
    an_internationalized_domain_travels_in_its_ascii_form,
);

async fn delivers_over_starttls_with_auth(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let id = app.send(&email_to(&["ada+orders@example.com"])).await;
    assert_eq!(app.drain().await, 1);

    let got = smtp.received();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert!(m.tls, "the message must travel over TLS");
    assert_eq!(m.auth_user.as_deref(), Some(crate::smtp_server::USER));
    assert_eq!(m.rcpt_to, vec!["ada+orders@example.com"]);
    // The relay offers PIPELINING: MAIL, RCPT and DATA came in one write (RFC 2920).
    assert!(m.pipelined, "{:?}", m.commands);
    // The relay offers DSN, so Herald asks for success reports too (RFC 3461).
    assert!(
        m.commands[0].contains(" RET=HDRS ENVID="),
        "{:?}",
        m.commands
    );
    assert!(
        // xtext (RFC 3461 §4): the '+' as "+2B", once.
        m.commands[1]
            .ends_with(" NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;ada+2Borders@example.com"),
        "{:?}",
        m.commands
    );
    // The envelope sender is this recipient's signed return path.
    let (local, domain) = m.mail_from.split_once('@').expect("address");
    assert_eq!(domain, "bounces.herald.localhost");
    let token = local.strip_prefix("bounces+").expect("VERP prefix");
    assert!(VerpSigner::new(b"test-secret").verify(token).is_some());
    let text = String::from_utf8(m.data.clone()).expect("ascii");
    let email = app.email(&id).await;
    assert!(text.contains(&format!(
        "Message-ID: {}",
        email["message_id"].as_str().expect("mid")
    )));
    assert!(text.contains("Subject: Your order"));

    assert_eq!(email["status"], "sent");
    let r = &email["recipients"][0];
    assert_eq!(r["status"], "sent");
    assert_eq!(r["attempts"], 1);
    assert_eq!(r["smtp"]["code"], 250);
    assert_eq!(r["smtp"]["enhanced_status"], "2.0.0");
    let types: Vec<_> = app
        .events(&id)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(types, ["email.queued", "email.sent"]);
    let sent = &app.events(&id).await[1];
    assert_eq!(sent["smtp"]["tls"], true);
    assert_eq!(sent["smtp"]["remote_mta"], "localhost");
    app.finish().await;
}

/// `bücher.de` is `xn--bcher-kva.de` to DNS and to every relay: Herald takes it in that form
/// from the first request on, so the envelope, the headers, the suppression list, a key's
/// allowed domains and the domains Herald signs for all agree, and no SMTPUTF8 is needed.
async fn an_internationalized_domain_travels_in_its_ascii_form(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let (s, v, _) = app
        .post(
            "/v1/suppressions",
            &app.key,
            &json!({"email": "gone@BÜCHER.de", "reason": "manual"}),
        )
        .await;
    assert_eq!(
        (s, v["email"].as_str()),
        (StatusCode::CREATED, Some("gone@xn--bcher-kva.de"))
    );
    let (s, v, _) = app
        .post(
            "/v1/emails",
            &app.key,
            &json!({
                "from": "Acme <orders@acme.com>",
                "to": ["Zoë <zoe@Straße.de>", "gone@bücher.de"],
                "subject": "Your order",
                "text": "Thanks for your order.",
            }),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["suppressed"], json!(["gone@xn--bcher-kva.de"]));
    let id = v["id"].as_str().expect("id");
    assert_eq!(app.drain().await, 1);

    let got = smtp.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to, vec!["zoe@xn--strae-oqa.de"]);
    let text = String::from_utf8(got[0].data.clone()).expect("7-bit message");
    let to = text
        .lines()
        .find(|l| l.starts_with("To: "))
        .expect("a To header");
    assert!(
        to.ends_with("<zoe@xn--strae-oqa.de>, gone@xn--bcher-kva.de"),
        "{to}"
    );
    let email = app.email(id).await;
    assert_eq!(
        statuses(&email),
        [
            ("zoe@xn--strae-oqa.de".to_owned(), "sent".to_owned()),
            ("gone@xn--bcher-kva.de".to_owned(), "suppressed".to_owned()),
        ]
    );

    // A key limited to the domain, given in either form, may send from it.
    let (s, limited, _) = app
        .post(
            "/v1/api-keys",
            &app.key,
            &json!({"name": "shop", "permission": "sending_access",
                    "allowed_domains": ["Bücher.de."]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{limited}");
    assert_eq!(limited["allowed_domains"], json!(["xn--bcher-kva.de"]));
    let token = limited["token"].as_str().expect("token");
    let mut from_bucher = email_to(&["ada@example.com"]);
    from_bucher["from"] = json!("Shop <shop@xn--bcher-kva.de>");
    let (s, v, _) = app.post("/v1/emails", token, &from_bucher).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    from_bucher["from"] = json!("Shop <shop@bücher.de>");
    let (s, v, _) = app.post("/v1/emails", token, &from_bucher).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (s, v, _) = app
        .post("/v1/emails", token, &email_to(&["ada@example.com"]))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("domain_not_allowed"))
    );

    // A domain to sign for, named in Unicode, is kept in its ASCII form; a name that has
    // none is refused with a pointer.
    let (s, v, _) = app
        .post("/v1/domains", &app.key, &json!({"name": "Bücher.de"}))
        .await;
    assert_eq!(
        (s, v["name"].as_str()),
        (StatusCode::CREATED, Some("xn--bcher-kva.de"))
    );
    let (s, v, _) = app
        .post("/v1/domains", &app.key, &json!({"name": "bü_cher.de"}))
        .await;
    assert_eq!(
        (s, v["errors"][0]["pointer"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("/name"))
    );
    app.finish().await;
}

async fn delivers_over_implicit_tls(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Implicit).await;
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let id = app.send(&email_to(&["ada@example.com"])).await;
    app.drain().await;
    assert!(smtp.received()[0].tls);
    assert_eq!(app.email(&id).await["status"], "sent");
    app.finish().await;
}

async fn authenticates_with_auth_login(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Implicit).await;
    smtp.advertise_auth("LOGIN");
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let id = app.send(&email_to(&["ada@example.com"])).await;
    app.drain().await;
    assert_eq!(
        smtp.received()[0].auth_user.as_deref(),
        Some(crate::smtp_server::USER)
    );
    assert_eq!(app.email(&id).await["status"], "sent");
    app.finish().await;
}

async fn one_rejected_recipient_does_not_sink_the_others(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    smtp.script(|step| match step {
        Step::Rcpt { to } if to == "zed@example.net" => reply(
            550,
            "5.1.1 <zed@example.net>: Recipient address rejected: User unknown",
        ),
        _ => ok(),
    });
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let mut body = email_to(&["ada@example.com", "zed@example.net"]);
    body["cc"] = json!("Bob <bob@example.org>");
    let id = app.send(&body).await;
    assert_eq!(app.drain().await, 3);

    let mut delivered: Vec<String> = smtp
        .received()
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    delivered.sort();
    assert_eq!(delivered, ["ada@example.com", "bob@example.org"]);
    let email = app.email(&id).await;
    assert_eq!(
        statuses(&email),
        [
            ("ada@example.com".into(), "sent".into()),
            ("zed@example.net".into(), "bounced".into()),
            ("bob@example.org".into(), "sent".into()),
        ]
    );
    assert_eq!(
        email["status"], "sent",
        "sent is not final, so it wins over bounced"
    );
    let zed = &email["recipients"][1];
    assert_eq!(zed["smtp"]["code"], 550);
    assert_eq!(zed["smtp"]["enhanced_status"], "5.1.1");
    assert_eq!(zed["smtp"]["phase"], "rcpt");
    assert_eq!(zed["bounce"]["type"], "permanent");
    assert_eq!(zed["bounce"]["sub_type"], "no_email");
    let events = app.events(&id).await;
    let bounce = events
        .iter()
        .find(|e| e["type"] == "email.bounced")
        .expect("bounced event");
    assert_eq!(bounce["recipient"], "zed@example.net");
    assert_eq!(
        bounce["bounce"]["diagnostic"],
        "550 5.1.1 <zed@example.net>: Recipient address rejected: User unknown"
    );
    app.finish().await;
}

async fn transient_failure_is_retried_on_schedule(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let tries = Arc::new(AtomicUsize::new(0));
    let t = Arc::clone(&tries);
    smtp.script(move |step| match step {
        Step::Message { .. } if t.fetch_add(1, Ordering::SeqCst) == 0 => {
            reply(451, "4.3.0 Temporary local problem, try again")
        }
        _ => ok(),
    });
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let id = app.send(&email_to(&["ada@example.com"])).await;
    app.drain().await;
    let email = app.email(&id).await;
    let r = &email["recipients"][0];
    assert_eq!(r["status"], "delivery_delayed");
    assert_eq!(r["smtp"]["code"], 451);
    assert_eq!(r["smtp"]["phase"], "data");
    // Not due yet: the first retry is 5 minutes out (no jitter in tests).
    assert_eq!(app.drain().await, 0);
    app.advance(Duration::from_secs(299));
    assert_eq!(app.drain().await, 0);
    app.advance(Duration::from_secs(1));
    assert_eq!(app.drain().await, 1);
    let email = app.email(&id).await;
    assert_eq!(email["status"], "sent");
    assert_eq!(email["recipients"][0]["attempts"], 2);
    assert_eq!(smtp.received().len(), 1);
    let types: Vec<_> = app
        .events(&id)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        types,
        ["email.queued", "email.delivery_delayed", "email.sent"]
    );
    app.finish().await;
}

async fn dropped_connection_mid_data_is_retried(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let tries = Arc::new(AtomicUsize::new(0));
    let t = Arc::clone(&tries);
    smtp.script(move |step| match step {
        Step::Data { .. } if t.fetch_add(1, Ordering::SeqCst) == 0 => Action::Drop,
        _ => ok(),
    });
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let id = app.send(&email_to(&["ada@example.com"])).await;
    app.drain().await;
    let r = &app.email(&id).await["recipients"][0];
    assert_eq!(r["status"], "delivery_delayed");
    assert_eq!(smtp.received().len(), 0);
    app.advance(Duration::from_secs(300));
    app.drain().await;
    assert_eq!(app.email(&id).await["status"], "sent");
    assert_eq!(smtp.received().len(), 1);
    app.finish().await;
}

async fn a_reply_that_never_comes_times_out(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    smtp.script(|step| match step {
        Step::Message { .. } => Action::Hang,
        _ => ok(),
    });
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let id = app.send(&email_to(&["ada@example.com"])).await;
    app.drain().await;
    let events = app.events(&id).await;
    let delayed = events
        .iter()
        .find(|e| e["type"] == "email.delivery_delayed")
        .expect("delayed");
    assert_eq!(delayed["phase"], "data");
    assert!(
        delayed["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no reply"),
        "{delayed}"
    );
    app.finish().await;
}

async fn retries_end_in_a_verdict_at_max_age(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    smtp.script(|step| match step {
        Step::Rcpt { .. } => reply(450, "4.2.1 Mailbox busy"),
        _ => ok(),
    });
    let app = TestApp::spawn_with(backend, Some(&smtp), |c| {
        c.retry.max_age = Duration::from_secs(3600);
    })
    .await;
    let id = app.send(&email_to(&["ada@example.com"])).await;
    // Retries after 5, 10 and 20 minutes (at 35 minutes in all); the next would come 40
    // minutes later, past the hour, so the fourth failure is the verdict.
    let mut attempts = app.drain().await;
    for minutes in [5, 10, 20] {
        app.advance(Duration::from_secs(minutes * 60));
        attempts += app.drain().await;
    }
    assert_eq!(attempts, 4);
    app.advance(Duration::from_secs(24 * 3600));
    assert_eq!(app.drain().await, 0);
    let email = app.email(&id).await;
    let r = &email["recipients"][0];
    assert_eq!(r["status"], "bounced");
    assert_eq!(r["bounce"]["type"], "transient");
    assert_eq!(r["bounce"]["sub_type"], "expired");
    assert_eq!(r["attempts"], 4);
    assert_eq!(app.store.count_pending().await.expect("count"), 0);
    app.finish().await;
}

async fn relay_that_refuses_connections_ends_in_failed(backend: Backend) {
    // A port with nothing listening: bind, note the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let app = TestApp::spawn_with(backend, None, |c| {
        c.relay_url = format!("smtp://127.0.0.1:{port}?tls=none");
        c.retry.max_age = Duration::from_secs(600);
    })
    .await;
    let id = app.send(&email_to(&["ada@example.com"])).await;
    app.drain().await;
    assert_eq!(
        app.email(&id).await["recipients"][0]["status"],
        "delivery_delayed"
    );
    app.advance(Duration::from_secs(300));
    app.drain().await;
    app.advance(Duration::from_secs(600));
    app.drain().await;
    let email = app.email(&id).await;
    assert_eq!(email["status"], "failed");
    let events = app.events(&id).await;
    let failed = events.last().expect("event");
    assert_eq!(failed["type"], "email.failed");
    assert_eq!(failed["failure"]["reason"], "expired");
    app.finish().await;
}

async fn wrong_relay_password_defers_without_losing_mail(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let app = TestApp::spawn_with(backend, Some(&smtp), |c| {
        c.relay_url = c.relay_url.replace(crate::smtp_server::PASSWORD, "wrong");
    })
    .await;
    let id = app.send(&email_to(&["ada@example.com"])).await;
    app.drain().await;
    let events = app.events(&id).await;
    let delayed = events
        .iter()
        .find(|e| e["type"] == "email.delivery_delayed")
        .expect("delayed");
    assert_eq!(delayed["phase"], "auth");
    assert_eq!(delayed["smtp"]["code"], 535);
    assert!(
        !delayed.to_string().contains("wrong"),
        "the password must not leak: {delayed}"
    );
    assert!(smtp.received().is_empty());
    app.finish().await;
}

async fn tls_required_refuses_a_relay_without_starttls(backend: Backend) {
    let smtp = a_relay_without_starttls(backend, "tls=required", "helo", "STARTTLS").await;
    assert!(
        smtp.received().is_empty(),
        "nothing may be sent in the clear"
    );
}

/// `tls=opportunistic` with a relay that offers no STARTTLS: the password is never sent in the
/// clear; the attempt is delayed with a reason that says what to change.
async fn opportunistic_tls_never_sends_the_password_in_the_clear(backend: Backend) {
    let smtp = a_relay_without_starttls(backend, "tls=opportunistic", "auth", "tls=none").await;
    assert_eq!(smtp.auth_attempts(), 0, "no AUTH without TLS");
    assert!(smtp.received().is_empty());
}

/// Sends one email through a relay that offers no STARTTLS, with the relay URL's `tls` set to
/// `mode`: the attempt is delayed in `phase` with a reason that mentions `says`.
async fn a_relay_without_starttls(
    backend: Backend,
    mode: &'static str,
    phase: &str,
    says: &str,
) -> TestSmtp {
    let smtp = TestSmtp::start(Tls::None).await;
    let app = TestApp::spawn_with(backend, Some(&smtp), move |c| {
        c.relay_url = c.relay_url.replace("tls=none", mode);
    })
    .await;
    let id = app.send(&email_to(&["ada@example.com"])).await;
    app.drain().await;
    let events = app.events(&id).await;
    let delayed = events
        .iter()
        .find(|e| e["type"] == "email.delivery_delayed")
        .expect("delayed");
    assert_eq!(delayed["phase"], phase, "{delayed}");
    assert!(
        delayed["reason"].as_str().unwrap_or("").contains(says),
        "{delayed}"
    );
    app.finish().await;
    smtp
}

async fn expired_email_fails_without_an_attempt(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let mut body = email_to(&["ada@example.com"]);
    let soon = chrono::DateTime::from_timestamp_millis(app.clock_now() + 60_000).expect("time");
    body["expires_at"] = json!(soon.to_rfc3339());
    let id = app.send(&body).await;
    app.advance(Duration::from_secs(61));
    app.drain().await;
    let email = app.email(&id).await;
    assert_eq!(email["status"], "failed");
    assert_eq!(email["recipients"][0]["attempts"], 0);
    assert_eq!(
        smtp.connections(),
        0,
        "no connection for mail that is already worthless"
    );
    app.finish().await;
}

async fn metrics_count_what_happened(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    smtp.script(|step| match step {
        Step::Rcpt { to } if to.starts_with("bad") => reply(550, "5.1.1 User unknown"),
        _ => ok(),
    });
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    app.send(&email_to(&["a@example.com", "bad@example.com"]))
        .await;
    app.send(&email_to(&["b@example.com"])).await;
    let before = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        before.contains("herald_queue_depth{status=\"queued\"} 3\n"),
        "{before}"
    );
    app.drain().await;
    let resp = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("get");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.expect("text");
    for line in [
        "herald_emails_accepted_total 2\n",
        "herald_recipients_total{outcome=\"sent\"} 2\n",
        "herald_recipients_total{outcome=\"bounced\"} 1\n",
        "herald_smtp_send_seconds_count 3\n",
        "herald_queue_depth{status=\"queued\"} 0\n",
        "herald_queue_oldest_due_seconds 0\n",
        "herald_webhook_backlog 0\n",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    app.finish().await;
}

async fn connections_are_reused(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let app = TestApp::spawn_with(backend, Some(&smtp), |c| c.relay.concurrency = 1).await;
    for i in 0..5 {
        app.send(&email_to(&[&format!("user{i}@example.com")]))
            .await;
    }
    assert_eq!(app.drain().await, 5);
    assert_eq!(smtp.received().len(), 5);
    assert_eq!(smtp.connections(), 1);
    app.finish().await;
}

async fn no_relay_writes_eml_files(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let id = app.send(&email_to(&["ada@example.com"])).await;
    app.drain().await;
    let files: Vec<_> = std::fs::read_dir(app.outbox.path())
        .expect("outbox")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).expect("read");
    assert!(text.starts_with("Return-Path: <bounces+"));
    assert!(text.contains("Delivered-To: ada@example.com"));
    assert_eq!(app.email(&id).await["status"], "sent");
    app.finish().await;
}

impl TestApp {
    fn clock_now(&self) -> i64 {
        use herald::clock::Clock;
        self.clock.now_ms()
    }
}

/// SIGTERM's path: the shutdown token stops claiming, and a send in flight finishes and is
/// recorded before `run` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_deliveries_in_flight() {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let in_flight = Arc::new(tokio::sync::Notify::new());
    let signal = Arc::clone(&in_flight);
    smtp.script(move |step| match step {
        Step::Message { .. } => {
            signal.notify_one();
            Action::ReplyAfter(Duration::from_millis(300), 250, "2.0.0 OK".into())
        }
        _ => ok(),
    });
    let db = crate::helpers::TestDb::new(Backend::Sqlite).await;
    let outbox = tempfile::tempdir().expect("tempdir");
    let config = crate::helpers::test_config(&db.url, Some(&smtp), outbox.path());
    let app = herald::app::App::from_config(config).await.expect("app");
    let store = app.state.store.clone();
    let key = crate::helpers::create_key(
        &store,
        "alpha",
        herald::domain::api_key::Permission::FullAccess,
        0,
    )
    .await;
    let base = format!("http://{}", app.addr);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(app.run(shutdown.clone(), 2));
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/emails"))
        .bearer_auth(&key)
        .json(&email_to(&["ada@example.com"]))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), reqwest::StatusCode::ACCEPTED);
    in_flight.notified().await;
    shutdown.cancel();
    running.await.expect("join").expect("clean exit");
    assert_eq!(smtp.received().len(), 1);
    let store = herald::store::Store::connect(&db.url, 1)
        .await
        .expect("store");
    assert_eq!(
        store.count_with_status("sent").await.expect("count"),
        1,
        "recorded before exit"
    );
    assert_eq!(store.count_pending().await.expect("count"), 0);
}

/// At shutdown the transaction under way finishes and is recorded; the ones of the claimed
/// batch still waiting for a relay connection never start, and their leases are given back,
/// so the next start sends each of them once.
async fn shutdown_finishes_what_started_and_starts_nothing(backend: Backend) {
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let arrived = Arc::new(tokio::sync::Notify::new());
    let a = Arc::clone(&arrived);
    smtp.script(move |step| match step {
        Step::Message { .. } => {
            a.notify_one();
            Action::ReplyAfter(Duration::from_millis(500), 250, "2.0.0 OK".into())
        }
        _ => ok(),
    });
    let app = TestApp::spawn_with(backend, Some(&smtp), |c| c.relay.concurrency = 1).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(app.send(&email_to(&[&format!("u{i}@example.com")])).await);
    }
    let mut worker = app.worker.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    worker.stopping = stop.clone();
    let step = tokio::spawn(async move { worker.run_once().await });
    // The first message is at the relay, its 250 not given yet: shutdown.
    tokio::time::timeout(Duration::from_secs(30), arrived.notified())
        .await
        .expect("a message at the relay");
    stop.cancel();
    step.await.expect("joined").expect("step");
    assert_eq!(smtp.received().len(), 1, "nothing new started");
    let sent: Vec<String> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(
                app.email(id).await["status"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            );
        }
        v
    };
    assert_eq!(sent.iter().filter(|s| *s == "sent").count(), 1, "{sent:?}");
    // The next start: the leases given back, every other recipient sent once.
    app.store
        .release_leases(&app.worker.owner, app.clock_now())
        .await
        .expect("release");
    app.drain().await;
    for i in 0..4 {
        let to = format!("u{i}@example.com");
        assert_eq!(smtp.times_received(&to), 1, "{to}");
    }
    app.finish().await;
}

/// A lease that runs out while its recipient is still at the relay (a relay slower than the
/// lease, or a database outage that stopped renewals): another worker of the same process
/// claims the recipient again, sees it is being sent, and leaves it; the first worker records
/// its 250. One send, one `sent`.
async fn a_recipient_in_flight_is_not_sent_again_when_its_lease_runs_out(backend: Backend) {
    const N: usize = 3;
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let arrivals = smtp.accept_after_noting(Duration::from_secs(1));
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(app.send(&email_to(&[&format!("u{i}@example.com")])).await);
    }
    let first = app.worker.clone();
    let step = tokio::spawn(async move { first.run_once().await });
    arrivals.wait_for(N).await;
    // Every lease is over by the clock; a second worker claims them all and sends none.
    app.advance(Duration::from_secs(3600));
    app.worker.run_once().await.expect("second step");
    step.await.expect("joined").expect("first step");
    assert_eq!(app.drain().await, 0, "nothing left to send");
    for i in 0..N {
        let to = format!("u{i}@example.com");
        assert_eq!(smtp.times_received(&to), 1, "{to}");
    }
    for id in &ids {
        assert_eq!(app.email(id).await["status"], "sent");
    }
    app.finish().await;
}

//! The database stops while the relay is answering: every 250 the relay gave is recorded once
//! the database is back, and nothing is sent twice. On a throwaway Postgres cluster the test
//! starts on a port of its own (never the shared one), stopped and started by `pg_ctlcluster`.

use std::process::Command;
use std::time::Duration;

use herald::store::Backend;
use reqwest::StatusCode;

use crate::helpers::{TestApp, email_to};
use crate::smtp_server::{TestSmtp, Tls};

/// A Postgres cluster of this test's own, dropped with it.
struct Cluster {
    version: String,
    name: String,
    port: u16,
}

impl Cluster {
    fn ctl(&self, action: &str) {
        let ok = Command::new("pg_ctlcluster")
            .args([
                "--skip-systemctl-redirect",
                &self.version,
                &self.name,
                action,
            ])
            .args(if action == "stop" {
                &["-m", "fast"][..]
            } else {
                &[][..]
            })
            .status()
            .expect("pg_ctlcluster")
            .success();
        assert!(ok, "pg_ctlcluster {action}");
    }

    fn start() -> Option<Self> {
        let version = std::fs::read_dir("/etc/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .next()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let name = format!("herald_outage_{port}");
        let created = Command::new("pg_createcluster")
            .args([
                &version,
                &name,
                "--port",
                &port.to_string(),
                "--",
                "--auth=trust",
            ])
            .output()
            .ok()?
            .status
            .success();
        if !created {
            return None;
        }
        let c = Self {
            version,
            name,
            port,
        };
        c.ctl("start");
        Some(c)
    }

    /// A cluster, or `None` (the test is skipped) where Postgres's cluster tools are missing;
    /// on CI they must be there.
    async fn start_or_skip() -> Option<Self> {
        // The test also makes its `TestDb` on the shared server.
        if !crate::helpers::postgres_or_skip().await {
            return None;
        }
        let c = Self::start();
        if c.is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must be able to start a throwaway Postgres cluster"
            );
            eprintln!("skipped: no pg_createcluster here");
        }
        c
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("pg_dropcluster")
            .args(["--stop", &self.version, &self.name])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_delivery_sends_nothing_twice() {
    let Some(cluster) = Cluster::start_or_skip().await else {
        return;
    };
    const N: usize = 6;
    let smtp = TestSmtp::start(Tls::Starttls).await;
    // Every message is answered 250 three seconds after it arrives; the test hears of each
    // arrival at once.
    let arrivals = smtp.accept_after_noting(Duration::from_secs(3));
    let url = cluster.url();
    let app = TestApp::spawn_with(Backend::Postgres, Some(&smtp), move |c| {
        c.database_url = url;
        c.relay.concurrency = N;
        c.relay.data_timeout = Duration::from_secs(10);
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(app.send(&email_to(&[&format!("u{i}@example.com")])).await);
    }
    let worker = app.worker.clone();
    let step = tokio::spawn(async move { worker.run_once().await });
    // Every message is at the relay, its 250 still to come: the database stops.
    arrivals.wait_for(N).await;
    cluster.ctl("stop");
    // The relay answers; the outcomes cannot be written and are kept.
    let kept = tokio::time::timeout(Duration::from_secs(60), async {
        while app.worker.in_hand.unrecorded() < N {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(kept.is_ok(), "the outcomes were kept");
    assert!(!step.is_finished(), "no new claim while outcomes wait");
    // Readiness says so, and a request is refused at once (not after the pool's wait).
    app.readyz_until(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(2))
        .await;
    let started = std::time::Instant::now();
    let (status, problem, headers) = app
        .post("/v1/emails", &app.key, &email_to(&["late@example.com"]))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["code"], "service_unavailable");
    assert!(headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused in {:?}",
        started.elapsed()
    );
    cluster.ctl("start");
    let done = tokio::time::timeout(Duration::from_secs(60), step)
        .await
        .expect("the step ends once the database is back")
        .expect("joined");
    assert!(done.is_ok(), "{done:?}");
    assert_eq!(app.worker.in_hand.unrecorded(), 0);
    let back = app
        .readyz_until(StatusCode::OK, Duration::from_secs(5))
        .await;
    println!("ready again {back:?} after the outcomes were written");
    // Past every lease: a claim now would send anything not recorded again.
    app.advance(Duration::from_secs(3600));
    assert_eq!(app.drain().await, 0, "nothing left to send");
    let got = smtp.received();
    for i in 0..N {
        let to = format!("u{i}@example.com");
        let times = got.iter().filter(|m| m.rcpt_to.contains(&to)).count();
        assert_eq!(times, 1, "{to} reached the relay {times} times");
    }
    for id in &ids {
        assert_eq!(app.email(id).await["status"], "sent");
    }
    app.finish().await;
}

/// The same for a webhook: the endpoint's 200 comes while the database is down (for longer
/// than the pool waits); the attempt is written once it is back, and the event is not posted
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_webhook_posts_nothing_twice() {
    let Some(cluster) = Cluster::start_or_skip().await else {
        return;
    };
    let receiver = crate::receiver::Receiver::start().await;
    receiver.set(crate::receiver::Mode::Slow(Duration::from_secs(3)));
    let url = cluster.url();
    let app = TestApp::spawn_with(Backend::Postgres, None, move |c| {
        c.database_url = url;
        c.webhooks.timeout = Duration::from_secs(20);
    })
    .await;
    let (s, endpoint, _) = app
        .post(
            "/v1/webhooks",
            &app.key,
            &serde_json::json!({"url": receiver.url(), "events": ["*"]}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{endpoint}");
    let id = endpoint["id"].as_str().expect("id");
    let (s, _, _) = app
        .post(
            &format!("/v1/webhooks/{id}/test"),
            &app.key,
            &serde_json::json!({}),
        )
        .await;
    assert!(s.is_success());
    let dispatcher = app.dispatcher.clone();
    let step = tokio::spawn(async move { dispatcher.run_once().await });
    tokio::time::timeout(Duration::from_secs(30), async {
        while receiver.hits().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the post reached the endpoint");
    cluster.ctl("stop");
    // The endpoint answers 200 after three seconds; the outage outlasts the pool's ten-second
    // wait for a connection, so writing the attempt fails, not just waits.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(!step.is_finished(), "the attempt is kept, not dropped");
    cluster.ctl("start");
    let done = tokio::time::timeout(Duration::from_secs(60), step)
        .await
        .expect("the step ends once the database is back")
        .expect("joined");
    assert!(done.is_ok(), "{done:?}");
    app.advance(Duration::from_secs(3600));
    assert_eq!(app.dispatch().await, 0, "nothing posted again");
    assert_eq!(receiver.hits().len(), 1);
    app.finish().await;
}

/// SMTP submission while the database is down: the message after DATA is answered
/// `451 4.3.0` (try again), at once, and the same message is taken once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_smtp_submission_451() {
    use base64::Engine as _;
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let Some(cluster) = Cluster::start_or_skip().await else {
        return;
    };
    let url = cluster.url();
    let app = TestApp::spawn_with(Backend::Postgres, None, move |c| {
        c.database_url = url;
        c.submission.listen = "127.0.0.1:0".into();
        c.submission.allow_insecure_auth = true;
    })
    .await;
    let stream = tokio::net::TcpStream::connect(app.submission_addrs[0])
        .await
        .expect("connect");
    let mut io = tokio::io::BufReader::new(stream);
    // Sends `lines` and reads one reply per line (the last line of each).
    async fn say(
        io: &mut tokio::io::BufReader<tokio::net::TcpStream>,
        lines: &[&str],
    ) -> Vec<String> {
        for l in lines {
            io.get_mut()
                .write_all(format!("{l}\r\n").as_bytes())
                .await
                .expect("write");
        }
        let mut replies = Vec::new();
        while replies.len() < lines.len().max(1) {
            let mut line = String::new();
            io.read_line(&mut line).await.expect("read");
            assert!(!line.is_empty(), "closed");
            if line.as_bytes().get(3) != Some(&b'-') {
                replies.push(line.trim_end().to_owned());
            }
        }
        replies
    }
    let mut greeting = String::new();
    io.read_line(&mut greeting).await.expect("greeting");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("\0app\0{}", app.key));
    let r = say(
        &mut io,
        &["EHLO app.example", &format!("AUTH PLAIN {auth}")],
    )
    .await;
    assert!(r[1].starts_with("235 2.7.0"), "{r:?}");
    let message =
        "From: orders@acme.com\r\nTo: ada@example.com\r\nSubject: Outage\r\n\r\nHello\r\n.";
    let envelope = [
        "MAIL FROM:<orders@acme.com>",
        "RCPT TO:<ada@example.com>",
        "DATA",
    ];
    let r = say(&mut io, &envelope).await;
    assert!(r[2].starts_with("354"), "{r:?}");
    assert!(say(&mut io, &[message]).await[0].starts_with("250 2.0.0 queued as"));

    cluster.ctl("stop");
    app.readyz_until(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(5))
        .await;
    let r = say(&mut io, &envelope).await;
    assert!(r[2].starts_with("354"), "{r:?}");
    let started = std::time::Instant::now();
    let refused = say(&mut io, &[message]).await.remove(0);
    assert!(refused.starts_with("451 4.3.0"), "{refused}");
    println!("while down: {refused} (in {:?})", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered in {:?}",
        started.elapsed()
    );

    cluster.ctl("start");
    app.readyz_until(StatusCode::OK, Duration::from_secs(30))
        .await;
    let r = say(&mut io, &envelope).await;
    assert!(r[2].starts_with("354"), "{r:?}");
    let taken = say(&mut io, &[message]).await.remove(0);
    assert!(taken.starts_with("250 2.0.0 queued as"), "{taken}");
    let id = taken.rsplit(' ').next().expect("an id");
    assert_eq!(app.email(id).await["source"], "smtp");
    app.finish().await;
}

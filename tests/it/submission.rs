//! SMTP submission with a client no one here wrote: Python's smtplib
//! (tests/interop/smtplib_submit.py), over STARTTLS and over implicit TLS, AUTH with an API key
//! as the password. What it sent is then delivered to a relay like any other email.

use herald::store::Backend;
use serde_json::Value;

use crate::helpers::TestApp;
use crate::smtp_server::{TestSmtp, Tls};

async fn submit(app: &TestApp, port: u16, mode: &str) -> Vec<Value> {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let out = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/smtplib_submit.py"
        ))
        .arg(port.to_string())
        .arg(format!("{fixtures}/ca.pem"))
        .arg(&app.key)
        .arg(mode)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run smtplib");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn step<'a>(steps: &'a [Value], name: &str) -> &'a Value {
    steps
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {steps:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_submits_over_starttls_and_implicit_tls() {
    let relay = TestSmtp::start(Tls::Starttls).await;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let app = TestApp::spawn_with(Backend::Sqlite, Some(&relay), |c| {
        c.submission.listen = "127.0.0.1:0".into();
        c.submission.tls_listen = "127.0.0.1:0".into();
        c.submission.tls_cert_file = format!("{fixtures}/server.pem");
        c.submission.tls_key_file = format!("{fixtures}/server.key");
        c.submission.max_message_bytes = 256 * 1024;
    })
    .await;
    let [starttls, implicit] = [app.submission_addrs[0], app.submission_addrs[1]];
    let mut ids = Vec::new();
    for (addr, mode) in [(starttls, "starttls"), (implicit, "implicit")] {
        let steps = submit(&app, addr.port(), mode).await;
        if mode == "starttls" {
            let s = step(&steps, "auth_before_tls");
            assert_eq!(s["code"], 530, "{s}");
            assert!(
                s["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("5.7.0 Must issue a STARTTLS"))
            );
        }
        let wrong = step(&steps, "wrong_key");
        assert_eq!(wrong["code"], 535, "{wrong}");
        assert!(
            wrong["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("5.7.8"))
        );
        let sent = step(&steps, "send");
        assert_eq!(sent["code"], 250, "{sent}");
        let text = sent["text"].as_str().expect("text");
        let id = text
            .strip_prefix("2.0.0 queued as ")
            .expect("queued as <id>");
        ids.push(id.to_owned());
        let big = step(&steps, "too_big");
        assert_eq!(big["code"], 552, "{big}");
        assert!(big["text"].as_str().is_some_and(|t| t.starts_with("5.3.4")));
        let bad = step(&steps, "no_subject");
        assert_eq!(bad["code"], 550, "{bad}");
        assert!(
            bad["text"]
                .as_str()
                .is_some_and(|t| t.contains("subject is required")),
            "{bad}"
        );
    }
    // What a 250 accepted is the same email as one POSTed: recipients by kind, tags, metadata.
    let email = app.email(&ids[0]).await;
    assert_eq!(email["source"], "smtp");
    assert_eq!(email["client_address"], "127.0.0.1");
    assert_eq!(email["subject"], "Your receipt — №42 ✓");
    assert_eq!(email["tags"], serde_json::json!(["receipt", "smtp"]));
    assert_eq!(email["metadata"]["order-id"], "o-42");
    let kinds: Vec<(String, String)> = email["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| {
            (
                r["email"].as_str().unwrap_or("").to_owned(),
                r["type"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("ada@example.com".into(), "to".into()),
            ("bob@example.org".into(), "cc".into()),
            ("audit@example.net".into(), "bcc".into())
        ]
    );
    // Delivered like any other: the client's MIME, without Bcc or Herald's instructions.
    assert_eq!(app.drain().await, 6);
    let received = relay.received();
    let first = received
        .iter()
        .find(|m| m.rcpt_to.iter().any(|r| r == "audit@example.net"))
        .expect("the Bcc recipient got it");
    let data = String::from_utf8_lossy(&first.data);
    assert!(
        !data.contains("audit@example.net"),
        "Bcc is not in the message"
    );
    assert!(!data.to_ascii_lowercase().contains("x-herald"), "{data}");
    assert!(data.contains("Message-ID: <"), "a Message-ID was added");
    assert!(data.contains("receipt.pdf"), "the attachment is kept");
    assert!(
        first.mail_from.starts_with("bounces+"),
        "the signed return path: {}",
        first.mail_from
    );
    app.finish().await;
}

/// Runs swaks against a submission port; its transcript.
async fn swaks(port: u16, args: &[&str]) -> String {
    let out = tokio::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--from", "orders@acme.com", "--to", "ada@example.com"])
        .args([
            "--header",
            "Subject: Sent by swaks",
            "--body",
            "Hello from swaks",
        ])
        .args(["--timeout", "20"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run swaks");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn swaks_present() -> bool {
    let present = std::process::Command::new("swaks")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var_os("TEST_HERALD_REQUIRE_INTEROP").is_none(),
            "swaks is required here (apt-get install swaks)"
        );
        eprintln!("skipped: the swaks submission tests (no swaks)");
    }
    present
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_submits_with_plain_and_login_and_meets_the_rate_limit() {
    if !swaks_present() {
        return;
    }
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let app = TestApp::spawn_with(Backend::Sqlite, None, |c| {
        c.submission.listen = "127.0.0.1:0".into();
        c.submission.tls_listen = "127.0.0.1:0".into();
        c.submission.tls_cert_file = format!("{fixtures}/server.pem");
        c.submission.tls_key_file = format!("{fixtures}/server.key");
    })
    .await;
    let [starttls, implicit] = [app.submission_addrs[0], app.submission_addrs[1]];
    for (port, tls) in [(starttls.port(), "--tls"), (implicit.port(), "--tlsc")] {
        for auth in ["PLAIN", "LOGIN"] {
            let t = swaks(
                port,
                &[
                    tls,
                    "--auth",
                    auth,
                    "--auth-user",
                    "shop",
                    "--auth-password",
                    &app.key,
                ],
            )
            .await;
            assert!(t.contains("250 2.0.0 queued as "), "{tls} {auth}:\n{t}");
            assert!(t.contains("235 2.7.0"), "{tls} {auth}:\n{t}");
        }
        let t = swaks(
            port,
            &[
                tls,
                "--auth",
                "PLAIN",
                "--auth-user",
                "shop",
                "--auth-password",
                "hk_nope",
            ],
        )
        .await;
        assert!(t.contains("535 5.7.8"), "a wrong key:\n{t}");
    }
    app.finish().await;

    // Each message counts against the key's rate: past it, 451 4.7.1 (try again later).
    let app = TestApp::spawn_with(Backend::Sqlite, None, |c| {
        c.submission.listen = "127.0.0.1:0".into();
        c.submission.tls_cert_file = format!("{fixtures}/server.pem");
        c.submission.tls_key_file = format!("{fixtures}/server.key");
        c.limits.rate_per_second = 0.01;
        c.limits.rate_burst = 3;
    })
    .await;
    let port = app.submission_addrs[0].port();
    let args = [
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "shop",
        "--auth-password",
        &app.key,
    ];
    let first = swaks(port, &args).await;
    assert!(first.contains("250 2.0.0 queued as "), "{first}");
    let second = swaks(port, &args).await;
    assert!(second.contains("451 4.7.1"), "past the rate:\n{second}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodemailer_submits_over_starttls_and_implicit_tls() {
    let interop = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");
    let present = std::path::Path::new(interop)
        .join("node_modules/nodemailer")
        .exists();
    if !present {
        assert!(
            std::env::var_os("TEST_HERALD_REQUIRE_INTEROP").is_none(),
            "nodemailer is required here (npm install --prefix tests/interop)"
        );
        eprintln!("skipped: the nodemailer submission test (npm install --prefix tests/interop)");
        return;
    }
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let app = TestApp::spawn_with(Backend::Sqlite, None, |c| {
        c.submission.listen = "127.0.0.1:0".into();
        c.submission.tls_listen = "127.0.0.1:0".into();
        c.submission.tls_cert_file = format!("{fixtures}/server.pem");
        c.submission.tls_key_file = format!("{fixtures}/server.key");
    })
    .await;
    for (addr, mode) in [
        (app.submission_addrs[0], "starttls"),
        (app.submission_addrs[1], "implicit"),
    ] {
        let out = tokio::process::Command::new("node")
            .arg(format!("{interop}/nodemailer_submit.js"))
            .arg(addr.port().to_string())
            .arg(format!("{fixtures}/ca.pem"))
            .arg(&app.key)
            .arg(mode)
            .kill_on_drop(true)
            .output()
            .await
            .expect("run node");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let steps: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        let wrong = step(&steps, "wrong_key");
        assert_eq!(wrong["code"], 535, "{mode}: {wrong}");
        let sent = step(&steps, "send");
        let text = sent["text"].as_str().expect("text");
        let id = text
            .strip_prefix("250 2.0.0 queued as ")
            .unwrap_or_else(|| panic!("{mode}: {text}"));
        let email = app.email(id).await;
        assert_eq!(email["subject"], "Ihre Bestellung – Grüße ✓", "{mode}");
        assert_eq!(email["from"]["name"], "Acme Café", "{mode}: {email}");
        assert_eq!(email["tags"], serde_json::json!(["receipt", "node"]));
        assert_eq!(email["recipients"].as_array().map(Vec::len), Some(3));
    }
    app.finish().await;
}

/// SIGKILL while apps submit over SMTP, then a restart: every message that got a 250 is
/// delivered (none is lost), and none twice but within the crash window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_submission_loses_nothing_answered_250() {
    use tokio::io::AsyncBufReadExt as _;
    const N: usize = 2_000;
    let db = crate::helpers::TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = TestSmtp::start(Tls::Starttls).await;
    relay.accept_after(std::time::Duration::from_millis(1));
    let key = crate::process::create_key(&db.url, &relay, dir.path(), "crash").await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr").port()
    };
    let submission = |cmd: &mut tokio::process::Command| {
        cmd.env("HERALD_SUBMISSION__LISTEN", format!("127.0.0.1:{port}"))
            .env("HERALD_SUBMISSION__ALLOW_INSECURE_AUTH", "true");
    };
    let mut cmd = crate::process::herald(&db.url, &relay, dir.path());
    submission(&mut cmd);
    let (mut first, _) = crate::process::serve_with(cmd).await;
    let mut load = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/smtp_load.py"
        ))
        .args([&port.to_string(), key.as_str(), &N.to_string(), "8"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the load");
    let mut lines = tokio::io::BufReader::new(load.stdout.take().expect("stdout")).lines();
    let mut accepted = Vec::new();
    // Kill it a quarter of the way in, while messages are in flight.
    while accepted.len() < N / 4 {
        match lines.next_line().await.expect("read") {
            Some(id) => accepted.push(id),
            None => break,
        }
    }
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("wait");
    while let Some(id) = lines.next_line().await.expect("read") {
        accepted.push(id);
    }
    load.wait().await.expect("the load ends");
    assert!(
        accepted.len() < N,
        "the kill must land mid-load ({} accepted)",
        accepted.len()
    );
    // Start again: everything answered 250 is delivered.
    let mut cmd = crate::process::herald(&db.url, &relay, dir.path());
    submission(&mut cmd);
    let (mut second, _) = crate::process::serve_with(cmd).await;
    let received = relay
        .wait_until(|r| {
            let ids = crate::process::message_ids(r);
            accepted.iter().all(|id| ids.contains_key(id))
        })
        .await;
    crate::process::terminate(&mut second).await;
    let ids = crate::process::message_ids(&received);
    let lost = accepted.iter().filter(|id| !ids.contains_key(*id)).count();
    let twice: usize = ids.values().map(|n| n - 1).sum();
    println!(
        "submission crash test: {} answered 250 before and at the SIGKILL, {} messages at the relay; lost {lost}, twice {twice}",
        accepted.len(),
        received.len()
    );
    assert_eq!(lost, 0, "every message answered 250 reached the relay");
    db.drop_db().await;
}

/// A client that keeps sending what is refused is closed, with a reply that says why; one
/// that says nothing is closed at the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_failing_or_stalls_is_closed() {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let app = TestApp::spawn_with(Backend::Sqlite, None, |c| {
        c.submission.listen = "127.0.0.1:0".into();
        c.submission.tls_cert_file = format!("{fixtures}/server.pem");
        c.submission.tls_key_file = format!("{fixtures}/server.key");
        c.submission.timeout = std::time::Duration::from_millis(500);
    })
    .await;
    let addr = app.submission_addrs[0];
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    let greeting = lines.next_line().await.expect("read").expect("a greeting");
    assert!(greeting.starts_with("220 "), "{greeting}");
    let mut replies = Vec::new();
    for _ in 0..25 {
        if write.write_all(b"XYZZY\r\n").await.is_err() {
            break;
        }
        match lines.next_line().await {
            Ok(Some(l)) => replies.push(l),
            _ => break,
        }
    }
    assert_eq!(
        replies
            .iter()
            .filter(|l| l.starts_with("502 5.5.1"))
            .count(),
        20
    );
    assert_eq!(
        replies.last().map(String::as_str),
        Some("421 4.7.0 Too many errors, closing connection")
    );
    // Silence: closed at the timeout, with 421 4.4.2.
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut lines = tokio::io::BufReader::new(stream).lines();
    let _greeting = lines.next_line().await.expect("read");
    let bye = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .expect("closed within the timeout")
        .expect("read")
        .expect("a reply");
    assert!(bye.starts_with("421 4.4.2"), "{bye}");
    app.finish().await;
}

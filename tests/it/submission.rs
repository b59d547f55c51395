//! SMTP submission with clients no one here wrote: Python's smtplib
//! (tests/interop/smtplib_submit.py), nodemailer (tests/interop/nodemailer_submit.js) and swaks,
//! over STARTTLS and implicit TLS, AUTH PLAIN and LOGIN with an API key as the password (and
//! Postfix as a null client, in submission_postfix.rs). Each client sends the same things and
//! is checked the same way ([`check_client`]): a plain message, one with HTML, an attachment,
//! non-ASCII headers and a Bcc, a wrong key, an oversized message and a used-up rate. What
//! they sent is then delivered to a relay like any other email.

use herald::clock::Clock as _;
use herald::domain::api_key::Permission;
use herald::store::Backend;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::TestApp;
use crate::smtp_server::{TestSmtp, Tls};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// The test's message limit: the clients' oversized message is larger.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Herald with both submission listeners, relaying to `relay`; and a second key of the same
/// project whose rate is used up.
pub async fn submission_app(relay: &TestSmtp) -> (TestApp, String) {
    let app = TestApp::spawn_with(Backend::Sqlite, Some(relay), |c| {
        c.submission.listen = "127.0.0.1:0".into();
        c.submission.tls_listen = "127.0.0.1:0".into();
        c.submission.tls_cert_file = format!("{FIXTURES}/server.pem");
        c.submission.tls_key_file = format!("{FIXTURES}/server.key");
        c.submission.max_message_bytes = MAX_MESSAGE;
        c.limits.rate_per_second = 0.001;
        c.limits.rate_burst = 40;
    })
    .await;
    let rate_key = crate::helpers::create_key(
        &app.store,
        "alpha",
        Permission::SendingAccess,
        app.clock.now_ms(),
    )
    .await;
    // Each request counts against a key's rate as each message does: use it up over HTTP.
    let mut used_up = false;
    for _ in 0..100 {
        let (status, _) = app.get("/v1/emails?limit=1", &rate_key).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            used_up = true;
            break;
        }
    }
    assert!(used_up, "the second key's rate is used up");
    (app, rate_key)
}

/// One step of a client's session: the reply Herald gave where it accepted or refused.
#[derive(Debug, Clone)]
pub struct Step {
    pub code: u64,
    pub text: String,
}

pub fn steps_of(json_lines: &str) -> Vec<(String, Step)> {
    json_lines
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            let step = Step {
                code: v["code"].as_u64().unwrap_or(0),
                text: v["text"].as_str().unwrap_or("").to_owned(),
            };
            (v["step"].as_str().unwrap_or("").to_owned(), step)
        })
        .collect()
}

fn step<'a>(steps: &'a [(String, Step)], name: &str, client: &str) -> &'a Step {
    steps
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("{client}: no step {name}: {steps:?}"))
}

/// The id in `… queued as <id>`.
fn queued_id(s: &Step, client: &str) -> String {
    assert_eq!(s.code, 250, "{client}: {s:?}");
    s.text
        .split("queued as ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("{client}: {s:?}"))
        .to_owned()
}

/// What every client must see, and what its messages became. `client` names it in the tags
/// of its rich message.
pub async fn check_client(app: &TestApp, steps: &[(String, Step)], client: &str) {
    for (name, s) in steps {
        println!("{client} {name}: {} {}", s.code, s.text);
    }
    if let Some((_, s)) = steps.iter().find(|(n, _)| n == "auth_before_tls") {
        assert_eq!(s.code, 530, "{client}: {s:?}");
        assert!(s.text.contains("5.7.0"), "{client}: {s:?}");
    }
    let wrong = step(steps, "wrong_key", client);
    assert_eq!(wrong.code, 535, "{client}: {wrong:?}");
    assert!(wrong.text.contains("5.7.8"), "{client}: {wrong:?}");
    let big = step(steps, "too_big", client);
    assert_eq!(big.code, 552, "{client}: {big:?}");
    assert!(big.text.contains("5.3.4"), "{client}: {big:?}");
    let rate = step(steps, "rate", client);
    assert_eq!(rate.code, 451, "{client}: {rate:?}");
    assert!(rate.text.contains("4.7.1"), "{client}: {rate:?}");

    let plain = app
        .email(&queued_id(step(steps, "plain", client), client))
        .await;
    assert_eq!(plain["source"], "smtp", "{client}");
    assert_eq!(plain["client_address"], "127.0.0.1", "{client}");
    assert_eq!(plain["subject"], format!("Plain from {client}"));
    assert_eq!(plain["recipients"].as_array().map(Vec::len), Some(1));

    // The same email as one POSTed: recipients by kind, tags, metadata, a non-ASCII name.
    let rich = app
        .email(&queued_id(step(steps, "rich", client), client))
        .await;
    assert_eq!(rich["subject"], "Your receipt — №42 ✓", "{client}");
    assert_eq!(rich["from"]["name"], "Acme Café", "{client}: {rich}");
    assert_eq!(rich["tags"], serde_json::json!(["receipt", client]));
    assert_eq!(rich["metadata"]["order-id"], "o-42", "{client}");
    let kinds: Vec<(String, String)> = rich["recipients"]
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
        ],
        "{client}"
    );
}

/// Delivered like any other: the client's MIME, without Bcc or Herald's instructions, with the
/// signed return path; a line that starts with a dot arrives as written.
pub async fn check_delivered(app: &TestApp, relay: &TestSmtp, client: &str, messages: usize) {
    app.drain().await;
    let received = relay.received();
    let rich: Vec<_> = received
        .iter()
        .filter(|m| m.rcpt_to.iter().any(|r| r == "audit@example.net"))
        .collect();
    assert_eq!(rich.len(), messages, "{client}: the Bcc recipient got each");
    for m in rich {
        let data = String::from_utf8_lossy(&m.data);
        assert!(!data.contains("audit@example.net"), "{client}: Bcc kept");
        assert!(!data.to_ascii_lowercase().contains("x-herald"), "{data}");
        assert!(data.contains("Message-ID: <") || data.contains("Message-Id: <"));
        assert!(
            data.contains("receipt.pdf"),
            "{client}: the attachment is kept"
        );
        assert!(m.mail_from.starts_with("bounces+"), "{}", m.mail_from);
    }
    let plain = received
        .iter()
        .find(|m| String::from_utf8_lossy(&m.data).contains(&format!("Plain from {client}")))
        .unwrap_or_else(|| panic!("{client}: the plain message"));
    let data = String::from_utf8_lossy(&plain.data);
    assert!(
        data.contains("\r\n.a line that starts with a dot"),
        "{client}: dot-stuffing undone and done again:\n{data}"
    );
}

async fn run_script(program: &str, script: &str, args: &[&str]) -> Vec<(String, Step)> {
    let out = tokio::process::Command::new(program)
        .arg(format!(
            "{}/tests/interop/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    steps_of(&stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_submits_over_starttls_and_implicit_tls() {
    let relay = TestSmtp::start(Tls::Starttls).await;
    let (app, rate_key) = submission_app(&relay).await;
    let [starttls, implicit] = [app.submission_addrs[0], app.submission_addrs[1]];
    for (addr, mode) in [(starttls, "starttls"), (implicit, "implicit")] {
        let port = addr.port().to_string();
        let ca = format!("{FIXTURES}/ca.pem");
        let args = [port.as_str(), &ca, &app.key, &rate_key, mode];
        let steps = run_script("python3", "smtplib_submit.py", &args).await;
        if mode == "starttls" {
            assert!(steps.iter().any(|(n, _)| n == "auth_before_tls"));
        }
        check_client(&app, &steps, "smtplib").await;
        // The rules of the API, answered after DATA.
        let bad = step(&steps, "no_subject", "smtplib");
        assert_eq!(bad.code, 550, "{bad:?}");
        assert!(bad.text.contains("subject is required"), "{bad:?}");
        // A retry under the same Idempotency-Key gets the first one's id, and nothing new;
        // the key with another message is refused.
        let first = queued_id(step(&steps, "idempotent_first", "smtplib"), "smtplib");
        let again = step(&steps, "idempotent_again", "smtplib");
        assert_eq!(queued_id(again, "smtplib"), first);
        assert!(again.text.contains("already"), "{again:?}");
        let reused = step(&steps, "idempotent_reused", "smtplib");
        assert_eq!(reused.code, 550, "{reused:?}");
        assert!(reused.text.contains("Idempotency-Key"), "{reused:?}");
    }
    // Per mode: plain (1), rich (3) and the idempotent one (1), once.
    assert_eq!(app.drain().await, 10);
    check_delivered(&app, &relay, "smtplib", 2).await;
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
    let relay = TestSmtp::start(Tls::Starttls).await;
    let (app, rate_key) = submission_app(&relay).await;
    for (addr, mode) in [
        (app.submission_addrs[0], "starttls"),
        (app.submission_addrs[1], "implicit"),
    ] {
        let port = addr.port().to_string();
        let ca = format!("{FIXTURES}/ca.pem");
        let args = [port.as_str(), &ca, &app.key, &rate_key, mode];
        let steps = run_script("node", "nodemailer_submit.js", &args).await;
        check_client(&app, &steps, "nodemailer").await;
    }
    check_delivered(&app, &relay, "nodemailer", 2).await;
    app.finish().await;
}

/// swaks's last reply from the server that is not to QUIT, as a step.
fn swaks_step(transcript: &str) -> Step {
    transcript
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = ["<** ", "<~* ", "<-  ", "<~  "]
                .iter()
                .find_map(|p| l.strip_prefix(p))?;
            let (code, text) = rest.split_once(' ')?;
            Some(Step {
                code: code.parse().ok()?,
                text: text.to_owned(),
            })
        })
        .rfind(|s| s.code != 221)
        .unwrap_or_else(|| panic!("no reply in:\n{transcript}"))
}

/// Runs swaks against a submission port; its transcript.
async fn swaks(port: u16, args: &[&str]) -> String {
    let out = tokio::process::Command::new("swaks")
        .args(["--server", "localhost", "--port", &port.to_string()])
        .args([
            "--timeout",
            "20",
            "--tls-ca-path",
            &format!("{FIXTURES}/ca.pem"),
        ])
        .args(["--tls-verify"])
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

/// The rich message as an app writes it by hand: non-ASCII headers as RFC 2047 encoded
/// words (as apps write them: raw UTF-8 in a header needs SMTPUTF8, which Postfix then asks
/// for), an 8-bit body, multipart, Bcc.
pub fn rich_message(client: &str) -> String {
    use base64::Engine as _;
    let word = |s: &str| {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    };
    let (name, subject) = (word("Acme Café"), word("Your receipt — №42 ✓"));
    format!(
        "From: {name} <orders@acme.com>\r\n\
         To: Ada <ada@example.com>\r\n\
         Cc: bob@example.org\r\n\
         Bcc: audit@example.net\r\n\
         Subject: {subject}\r\n\
         X-Herald-Tags: receipt, {client}\r\n\
         X-Herald-Metadata-Order-Id: o-42\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
         \r\n\
         --outer\r\n\
         Content-Type: multipart/alternative; boundary=\"inner\"\r\n\
         \r\n\
         --inner\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         Thanks for your order, Ada. Grüße.\r\n\
         --inner\r\n\
         Content-Type: text/html; charset=utf-8\r\n\
         \r\n\
         <p>Thanks for your <b>order</b>, Ada.</p>\r\n\
         --inner--\r\n\
         --outer\r\n\
         Content-Type: application/pdf; name=\"receipt.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"receipt.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         JVBERi0xLjQgcmVjZWlwdA==\r\n\
         --outer--\r\n"
    )
}

/// swaks (a Perl client with its own SMTP and SASL code), PLAIN and LOGIN, STARTTLS and
/// implicit TLS, each step a swaks run, checked as the other clients are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_submits_with_plain_and_login_over_both_kinds_of_tls() {
    if !swaks_present() {
        return;
    }
    let relay = TestSmtp::start(Tls::Starttls).await;
    let (app, rate_key) = submission_app(&relay).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rich = dir.path().join("rich.eml");
    std::fs::write(&rich, rich_message("swaks")).expect("write");
    let big = dir.path().join("big.txt");
    std::fs::write(&big, "x".repeat(900).repeat(100)).expect("write");
    let [starttls, implicit] = [app.submission_addrs[0], app.submission_addrs[1]];
    for (port, tls, auth) in [
        (starttls.port(), "--tls", "PLAIN"),
        (implicit.port(), "--tlsc", "LOGIN"),
    ] {
        let with = |key: &str| -> Vec<String> {
            [
                tls,
                "--auth",
                auth,
                "--auth-user",
                "shop",
                "--auth-password",
                key,
            ]
            .map(str::to_owned)
            .to_vec()
        };
        let run = |key: String, more: Vec<String>| {
            let mut args = with(&key);
            args.extend(more);
            async move {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                swaks(port, &refs).await
            }
        };
        let to = |list: &str| ["--from", "orders@acme.com", "--to", list].map(str::to_owned);
        let plain = [
            "--header",
            "Subject: Plain from swaks",
            "--body",
            "Your order has shipped.\n.a line that starts with a dot",
        ]
        .map(str::to_owned);
        let mut steps = Vec::new();
        let wrong = run(
            "hk_nope".into(),
            [to("ada@example.com"), plain.clone()].concat(),
        )
        .await;
        steps.push(("wrong_key".to_owned(), swaks_step(&wrong)));
        let t = run(
            app.key.clone(),
            [to("ada@example.com"), plain.clone()].concat(),
        )
        .await;
        assert!(t.contains("235 2.7.0"), "{tls} {auth}:\n{t}");
        steps.push(("plain".to_owned(), swaks_step(&t)));
        let rich_args = vec!["--data".to_owned(), format!("@{}", rich.display())];
        let all = to("ada@example.com,bob@example.org,audit@example.net");
        let t = run(app.key.clone(), [all.to_vec(), rich_args].concat()).await;
        steps.push(("rich".to_owned(), swaks_step(&t)));
        let big_args = vec![
            "--header".to_owned(),
            "Subject: big".to_owned(),
            "--body".to_owned(),
            format!("@{}", big.display()),
        ];
        let t = run(
            app.key.clone(),
            [to("ada@example.com").to_vec(), big_args].concat(),
        )
        .await;
        steps.push(("too_big".to_owned(), swaks_step(&t)));
        let t = run(rate_key.clone(), [to("ada@example.com"), plain].concat()).await;
        steps.push(("rate".to_owned(), swaks_step(&t)));
        check_client(&app, &steps, "swaks").await;
    }
    check_delivered(&app, &relay, "swaks", 2).await;
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

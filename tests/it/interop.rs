//! Interoperability with an SMTP server nobody here wrote: Python's aiosmtpd with AUTH and
//! STARTTLS (tests/interop/aiosmtpd_relay.py). `.ci/run` installs it and sets
//! `TEST_HERALD_REQUIRE_INTEROP=1`, so there a missing aiosmtpd is a failure, not a skip.

use std::process::Stdio;

use herald::store::Backend;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{TestApp, email_to};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_to_aiosmtpd_over_starttls_with_auth() {
    let has_aiosmtpd = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if !present(has_aiosmtpd, "aiosmtpd", "python3 -m pip install aiosmtpd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut child = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/aiosmtpd_relay.py"
        ))
        .args([
            "--cert",
            &format!("{fixtures}/server.pem"),
            "--key",
            &format!("{fixtures}/server.key"),
        ])
        .args(["--maildir", &dir.path().display().to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start aiosmtpd");
    // The script prints its port once it is listening.
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let port: u16 = lines
        .next_line()
        .await
        .expect("read")
        .expect("a line")
        .trim()
        .parse()
        .expect("port");

    let app = TestApp::spawn_with(Backend::Sqlite, None, |c| {
        c.relay_url = format!("smtp://herald:s3cret@localhost:{port}?tls=required");
    })
    .await;
    // Lines that begin with a dot, one of them a lone dot: the relay sees them whole only if
    // they were dot-stuffed (a lone dot unstuffed ends the message there).
    let mut body = email_to(&["ada@example.com", "bob@example.org"]);
    body["text"] = serde_json::json!(".leading dot\n.\n..two dots\nend");
    let id = app.send(&body).await;
    assert_eq!(app.drain().await, 2);
    let email = app.email(&id).await;
    assert_eq!(email["status"], "sent", "{email}");
    assert_eq!(email["recipients"][0]["smtp"]["code"], 250);

    // aiosmtpd wrote one file per transaction: the envelope and the message as received.
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .collect();
    files.sort_by_key(std::fs::DirEntry::file_name);
    assert_eq!(files.len(), 2);
    for f in files {
        let text = std::fs::read_to_string(f.path()).expect("read");
        assert!(text.contains("X-Peer-TLS: yes"), "{text}");
        assert!(text.contains("X-Auth-User: herald"), "{text}");
        assert!(text.contains("X-Mail-From: bounces+"), "{text}");
        assert!(text.contains(&format!(
            "Message-ID: {}",
            email["message_id"].as_str().expect("mid")
        )));
        assert!(
            text.replace("\r\n", "\n")
                .contains("\n\n.leading dot\n.\n..two dots\nend\n"),
            "{text}"
        );
    }
    child.kill().await.expect("kill");
    app.finish().await;
}

/// Postfix's `smtp-sink` (Debian's postfix package), as it comes: it offers PIPELINING, so
/// Herald sends each transaction's MAIL, RCPT and DATA in one write, and the sink keeps what it
/// received. Then with commands refused (`-f RCPT`: 5xx, `-r RCPT`: 4xx; smtp-sink stops
/// offering PIPELINING then, so the command-by-command path meets Postfix's code too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_to_postfix_smtp_sink_and_reads_its_refusals() {
    let has_sink = std::process::Command::new("smtp-sink")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !present(has_sink, "smtp-sink", "apt-get install postfix") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        // smtp-sink drops to `nobody` when started as root; it must be able to write here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
    }
    let dump = format!("{}/%H%M%S.", dir.path().display());
    let accepting = Sink::start(&["-d", &dump]).await;
    let app = TestApp::spawn_with(Backend::Sqlite, None, |c| {
        c.relay_url = format!("smtp://127.0.0.1:{}?tls=none", accepting.port);
    })
    .await;
    let first = app.send(&email_to(&["ada@example.com"])).await;
    let second = app.send(&email_to(&["bob@example.org"])).await;
    assert_eq!(app.drain().await, 2);
    for id in [&first, &second] {
        let email = app.email(id).await;
        assert_eq!(email["status"], "sent", "{email}");
        assert_eq!(email["recipients"][0]["smtp"]["code"], 250);
    }
    let dumped: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .map(|f| std::fs::read_to_string(f.path()).expect("read"))
        .collect();
    assert_eq!(dumped.len(), 2, "{dumped:?}");
    for id in [&first, &second] {
        let mid = app.email(id).await["message_id"]
            .as_str()
            .expect("mid")
            .to_owned();
        assert!(
            dumped
                .iter()
                .any(|d| d.contains(&format!("Message-ID: {mid}"))
                    && d.contains("X-Mail-Args: <bounces+")),
            "{mid} not in {dumped:?}"
        );
    }
    app.finish().await;
    drop(accepting);

    for (flag, status, code) in [("-f", "bounced", 5), ("-r", "delivery_delayed", 4)] {
        let refusing = Sink::start(&[flag, "RCPT"]).await;
        let app = TestApp::spawn_with(Backend::Sqlite, None, |c| {
            c.relay_url = format!("smtp://127.0.0.1:{}?tls=none", refusing.port);
        })
        .await;
        let id = app.send(&email_to(&["ada@example.com"])).await;
        assert_eq!(app.drain().await, 1);
        let email = app.email(&id).await;
        let r = &email["recipients"][0];
        assert_eq!(r["status"], status, "{email}");
        assert_eq!(
            r["smtp"]["code"].as_u64().map(|c| c / 100),
            Some(code),
            "{email}"
        );
        app.finish().await;
    }
}

/// Whether a peer nobody here wrote is installed; where `.ci/run` installed it
/// (`TEST_HERALD_REQUIRE_INTEROP=1`) its absence is a failure, elsewhere a skip.
fn present(installed: bool, what: &str, install: &str) -> bool {
    if !installed {
        assert!(
            std::env::var("TEST_HERALD_REQUIRE_INTEROP").is_err(),
            "{what} is not installed"
        );
        eprintln!("skipping: {install} to run this test");
    }
    installed
}

/// One `smtp-sink` process on a free port, stopped on drop.
struct Sink {
    port: u16,
    _child: tokio::process::Child,
}

impl Sink {
    async fn start(args: &[&str]) -> Self {
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        // A port that was free a moment ago; smtp-sink takes an address, not a socket.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut cmd = tokio::process::Command::new("smtp-sink");
        if root {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .args(args)
            .arg(format!("127.0.0.1:{port}"))
            .arg("16")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start smtp-sink");
        // Ready when it answers with its greeting.
        for _ in 0..200 {
            if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                let mut greeting = String::new();
                let mut reader = BufReader::new(stream);
                if reader.read_line(&mut greeting).await.is_ok() && greeting.starts_with("220") {
                    return Self {
                        port,
                        _child: child,
                    };
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("smtp-sink did not start on port {port}");
    }
}

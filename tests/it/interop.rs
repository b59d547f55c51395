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
    if !has_aiosmtpd {
        assert!(
            std::env::var("TEST_HERALD_REQUIRE_INTEROP").is_err(),
            "aiosmtpd is not installed"
        );
        eprintln!("skipping: python3 -m pip install aiosmtpd to run this test");
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
    let id = app
        .send(&email_to(&["ada@example.com", "bob@example.org"]))
        .await;
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
    }
    child.kill().await.expect("kill");
    app.finish().await;
}

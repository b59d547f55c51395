//! The crash test: a real `herald serve` process, 2,000 emails, a slow relay, SIGKILL in the
//! middle of delivery, a restart, and proof that every email reached the relay and has a
//! final status. Prints lost (must be 0) and duplicated.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use herald::store::{Backend, Store};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{TestDb, email_to};
use crate::on_both_backends;
use crate::smtp_server::{Action, Received, Step, TestSmtp, Tls, ok};

on_both_backends!(sigkill_mid_delivery_loses_nothing);

const EMAILS: usize = 2_000;

fn herald(db_url: &str, relay: &TestSmtp, dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HERALD_DATABASE_URL", db_url)
        .env("HERALD_LISTEN", "127.0.0.1:0")
        .env("HERALD_RELAY_URL", relay.url())
        .env(
            "HERALD_RELAY__CA_FILE",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ca.pem"),
        )
        .env("HERALD_RELAY__CONCURRENCY", "4")
        .env("HERALD_DELIVERY__LEASE", "3s")
        .env("HERALD_SECRET_KEY", "crash-test")
        .env("HERALD_LOG__FORMAT", "json")
        .env("HERALD_LOG__LEVEL", "info")
        .env("HERALD_OUTBOX_DIR", dir.join("outbox"))
        .current_dir(dir)
        .kill_on_drop(true);
    cmd
}

/// Starts `herald serve` and returns it with its address, read from its "listening" log line.
async fn serve(db_url: &str, relay: &TestSmtp, dir: &std::path::Path) -> (Child, String) {
    let mut child = herald(db_url, relay, dir)
        .arg("serve")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines
            .next_line()
            .await
            .expect("read")
            .expect("herald exited before listening");
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["message"] == "Herald is listening" {
            break v["addr"].as_str().expect("addr").to_owned();
        }
    };
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{addr}"))
}

fn message_ids(received: &[Received]) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for m in received {
        let text = String::from_utf8_lossy(&m.data);
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .unwrap_or_default()
            .to_owned();
        *ids.entry(id).or_insert(0) += 1;
    }
    ids
}

async fn sigkill_mid_delivery_loses_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = TestSmtp::start(Tls::Starttls).await;
    relay.script(|step| match step {
        Step::Message { .. } => {
            Action::ReplyAfter(Duration::from_millis(2), 250, "2.0.0 OK queued".into())
        }
        _ => ok(),
    });

    let out = herald(&db.url, &relay, dir.path())
        .args(["keys", "create", "--project", "crash"])
        .output()
        .await
        .expect("keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();

    let (mut first, base) = serve(&db.url, &relay, dir.path()).await;
    let http = reqwest::Client::new();
    let mut accepted = Vec::new();
    for chunk in (0..EMAILS).collect::<Vec<_>>().chunks(50) {
        let posts = chunk.iter().map(|i| {
            let body = email_to(&[&format!("user{i}@example.com")]);
            let req = http
                .post(format!("{base}/v1/emails"))
                .bearer_auth(&key)
                .json(&body);
            async move {
                let r = req.send().await.expect("post");
                assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
                r.json::<Value>().await.expect("json")["message_id"]
                    .as_str()
                    .expect("mid")
                    .to_owned()
            }
        });
        accepted.extend(futures::future::join_all(posts).await);
    }
    assert_eq!(accepted.len(), EMAILS);

    // Kill it hard in the middle of delivery.
    let before = relay.wait_until(|r| r.len() >= EMAILS / 4).await.len();
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("wait");
    let at_kill = relay.received().len();
    assert!(
        at_kill < EMAILS,
        "the kill must land mid-delivery ({at_kill} delivered)"
    );

    // Start again: everything left is delivered, then stop gracefully.
    let (mut second, _) = serve(&db.url, &relay, dir.path()).await;
    let received = relay
        .wait_until(|r| accepted.iter().all(|id| message_ids(r).contains_key(id)))
        .await;
    let pid = second.id().expect("pid");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let status = second.wait().await.expect("wait");
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    let ids = message_ids(&received);
    let lost = accepted.iter().filter(|id| !ids.contains_key(*id)).count();
    let duplicated: usize = ids.values().map(|n| n - 1).sum();

    let store = Store::connect(&db.url, 2).await.expect("store");
    let pending = store.count_pending().await.expect("count");
    let sent = store.count_with_status("sent").await.expect("count");
    store.close().await;
    println!(
        "crash test ({backend:?}): accepted {EMAILS}, delivered before SIGKILL {before}..{at_kill}, \
         after restart {} messages in all; lost {lost}, duplicated {duplicated}; recipients sent {sent}, pending {pending}",
        received.len()
    );
    assert_eq!(lost, 0, "every accepted email reached the relay");
    assert_eq!(pending, 0, "nothing is left without a verdict");
    assert_eq!(
        sent,
        i64::try_from(EMAILS).expect("fits"),
        "every recipient is recorded as sent"
    );
    db.drop_db().await;
}

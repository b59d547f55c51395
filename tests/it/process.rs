//! A real `herald` process for the tests that kill, stop or starve one: started from the built
//! binary with a test's database and relay, its address read from its log.

use std::collections::HashMap;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::smtp_server::{Received, TestSmtp};

pub fn herald(db_url: &str, relay: &TestSmtp, dir: &std::path::Path) -> Command {
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
pub async fn serve(db_url: &str, relay: &TestSmtp, dir: &std::path::Path) -> (Child, String) {
    serve_with(herald(db_url, relay, dir)).await
}

/// Starts `cmd serve` (a [`herald`] command with more settings) as [`serve`] does.
pub async fn serve_with(mut cmd: Command) -> (Child, String) {
    let mut child = cmd
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

pub fn message_ids(received: &[Received]) -> HashMap<String, usize> {
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

/// A sending key for `project`, made with `herald keys create` on the test's database.
pub async fn create_key(
    db_url: &str,
    relay: &TestSmtp,
    dir: &std::path::Path,
    project: &str,
) -> String {
    let out = herald(db_url, relay, dir)
        .args(["keys", "create", "--project", project])
        .output()
        .await
        .expect("keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned()
}

/// SIGTERM, then the exit status.
pub async fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().expect("pid");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    child.wait().await.expect("wait")
}

/// Posts `n` emails (to `user<i>@example.com`), 50 at a time, spread over `bases` in turn;
/// asserts each is accepted and returns their Message-IDs.
pub async fn post_emails(bases: &[&str], key: &str, n: usize) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut accepted = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let posts = chunk.iter().map(|i| {
            let base = bases[i % bases.len()];
            let req = http
                .post(format!("{base}/v1/emails"))
                .bearer_auth(key)
                .json(&crate::helpers::email_to(&[&format!(
                    "user{i}@example.com"
                )]));
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
    accepted
}

/// What the relay has once every one of `message_ids` reached it (at most two minutes).
pub async fn all_received(relay: &TestSmtp, message_ids: &[String]) -> Vec<Received> {
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        relay.wait_until(|r| {
            let ids = self::message_ids(r);
            message_ids.iter().all(|id| ids.contains_key(id))
        }),
    )
    .await
    .expect("every accepted email reached the relay")
}

/// Recipients still waiting and recipients `sent`, read from the test's database afterwards.
pub async fn pending_and_sent(db_url: &str) -> (i64, i64) {
    let store = herald::store::Store::connect(db_url, 2)
        .await
        .expect("store");
    let pending = store.count_pending().await.expect("count");
    let sent = store.count_with_status("sent").await.expect("count");
    store.close().await;
    (pending, sent)
}

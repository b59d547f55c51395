//! Faults a real `herald serve` process must come through with nothing lost and nothing sent
//! twice outside the crash window: its disk filling up, and one of two processes sharing a
//! Postgres killed mid-delivery.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use herald::store::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestDb, email_to, readyz_until};
use crate::process::{
    all_received, create_key, herald, message_ids, pending_and_sent, post_emails, serve,
    serve_with, terminate,
};
use crate::smtp_server::{TestSmtp, Tls};

/// A file system of a few megabytes (a tmpfs), grown or unmounted by the test.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// None (and the reason printed) where this machine lets no test mount a file system.
    fn mount(megabytes: u32) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let mounted = StdCommand::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self { path, _dir: dir }),
            Ok(out) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: no mount command: {e}");
                None
            }
        }
    }

    fn grow(&self, megabytes: u32) {
        let status = StdCommand::new("mount")
            .args(["-o", &format!("remount,size={megabytes}m")])
            .arg(&self.path)
            .status()
            .expect("remount");
        assert!(status.success(), "remount the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = StdCommand::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// SQLite on a 24 MB disk, filled by four clients posting 256 KB emails. Each request gets a
/// 202 or a 503 with `Retry-After` (never a 500 or a hang); `/readyz` says not ready while
/// the disk is full; once it has room again, `/readyz` is ready within seconds, new mail is
/// taken, every email answered 202 reaches the relay once, and no email answered 503 does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_mail_and_loses_none() {
    let Some(disk) = SmallDisk::mount(24) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = TestSmtp::start(Tls::Starttls).await;
    let db_url = format!("sqlite://{}/herald.db", disk.path.display());
    let key = create_key(&db_url, &relay, dir.path(), "disk").await;
    let mut cmd = herald(&db_url, &relay, dir.path());
    cmd.env(
        "HERALD_LIMITS__MIN_FREE_DISK",
        (4 * 1024 * 1024).to_string(),
    );
    let (mut child, base) = serve_with(cmd).await;
    let http = reqwest::Client::new();

    let text = "x".repeat(256 * 1024);
    let post = |i: usize| {
        let mut body = email_to(&[&format!("fill{i}@example.com")]);
        body["subject"] = json!(format!("fill {i}"));
        body["text"] = json!(text);
        http.post(format!("{base}/v1/emails"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    let mut next = 0;
    while refused.len() < 20 {
        assert!(next < 2_000, "the disk never filled");
        let round: Vec<usize> = (next..next + 4).collect();
        next += 4;
        let answers = futures::future::join_all(round.iter().map(|&i| post(i))).await;
        for (i, answer) in round.into_iter().zip(answers) {
            let r = answer.expect("an answer, not a dropped connection");
            match r.status() {
                StatusCode::ACCEPTED => {
                    let v: Value = r.json().await.expect("json");
                    accepted.push(v["message_id"].as_str().expect("mid").to_owned());
                }
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(r.headers().contains_key("retry-after"));
                    let v: Value = r.json().await.expect("json");
                    assert_eq!(v["code"], "service_unavailable", "{v}");
                    refused.push(i);
                }
                other => panic!("email {i}: {other} {}", r.text().await.unwrap_or_default()),
            }
        }
    }
    readyz_until(
        &http,
        &base,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(2),
    )
    .await;

    disk.grow(256);
    let back = readyz_until(&http, &base, StatusCode::OK, Duration::from_secs(5)).await;
    let r = post(next).await.expect("post");
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "new mail once there is room"
    );
    let v: Value = r.json().await.expect("json");
    accepted.push(v["message_id"].as_str().expect("mid").to_owned());

    let received = all_received(&relay, &accepted).await;
    let status = terminate(&mut child).await;
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    let ids = message_ids(&received);
    let duplicated: usize = ids.values().map(|n| n - 1).sum();
    let refused_subjects: HashSet<String> = refused
        .iter()
        .map(|i| format!("Subject: fill {i}"))
        .collect();
    let delivered_refused = received
        .iter()
        .filter(|m| {
            String::from_utf8_lossy(&m.data)
                .lines()
                .any(|l| refused_subjects.contains(l))
        })
        .count();
    println!(
        "full disk: accepted {}, refused {} (503), ready again {back:?} after the disk grew; \
         delivered {} messages, duplicated {duplicated}, refused but delivered {delivered_refused}",
        accepted.len(),
        refused.len(),
        received.len()
    );
    assert_eq!(duplicated, 0, "nothing sent twice");
    assert_eq!(delivered_refused, 0, "a 503 means not taken");
}

/// Two processes share one Postgres; one is killed mid-delivery. The other sends the dead
/// one's recipients once their leases run out (seconds: leases are renewed while alive, so
/// they can be short), and every accepted email reaches the relay; only what the dead one had
/// at the relay when it died can go twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_processes_killed_loses_nothing() {
    if !crate::helpers::postgres_or_skip().await {
        return;
    }
    const EMAILS: usize = 2_000;
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = TestSmtp::start(Tls::Starttls).await;
    relay.accept_after(Duration::from_millis(2));
    let key = create_key(&db.url, &relay, dir.path(), "pair").await;
    let (mut doomed, doomed_base) = serve(&db.url, &relay, dir.path()).await;
    let (mut survivor, survivor_base) = serve(&db.url, &relay, dir.path()).await;

    let accepted = post_emails(&[&doomed_base, &survivor_base], &key, EMAILS).await;

    relay.wait_until(|r| r.len() >= EMAILS / 4).await;
    doomed.start_kill().expect("SIGKILL");
    doomed.wait().await.expect("wait");
    let killed_at = Instant::now();
    let at_kill = relay.received().len();
    assert!(
        at_kill < EMAILS,
        "the kill must land mid-delivery ({at_kill} delivered)"
    );

    let received = all_received(&relay, &accepted).await;
    let recovered = killed_at.elapsed();
    let status = terminate(&mut survivor).await;
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    let ids = message_ids(&received);
    let duplicated: usize = ids.values().map(|n| n - 1).sum();
    let (pending, sent) = pending_and_sent(&db.url).await;
    println!(
        "two processes, one killed at {at_kill} delivered: all {EMAILS} delivered {recovered:?} \
         after the kill; duplicated {duplicated}; sent {sent}, pending {pending}"
    );
    assert_eq!(pending, 0, "nothing is left without a verdict");
    assert_eq!(sent, i64::try_from(EMAILS).expect("fits"));
    // The crash window: sends the dead process had at the relay (at most its relay
    // concurrency, 4), and 250s it had heard but not yet committed.
    assert!(duplicated <= 8, "{duplicated} sent twice");
    db.drop_db().await;
}

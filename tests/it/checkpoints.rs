//! SQLite's write-ahead log is copied back into the database file by checkpoints taken beside
//! the single writer (`store::checkpoint`), and stays bounded under writes that never pause.

use std::path::Path;

use herald::store::{NewEmail, Store};

use crate::store_contract::{NOW, email, project};

/// An email with a body of `kb` KB that SQLite cannot store in less (hex of fresh UUIDs).
fn email_of(project_id: &str, kb: usize) -> NewEmail {
    let body: String = (0..kb * 1024 / 32)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    NewEmail {
        text_body: Some(body),
        ..email(project_id, &[("ada@example.com", NOW)])
    }
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Pages the writer committed reach the database file while the log is far shorter than the
/// writer's own checkpoint waits for (8,000 pages): the syncer's checkpoints copied them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_the_log_is_copied_back_outside_the_writers_commits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("herald.db");
    let store = Store::open(&format!("sqlite://{}", db.display()), 2)
        .await
        .expect("store");
    let p = project(&store).await;
    let before = size(&db);
    // Batches of 10 emails of 16 KB (some 40 pages) until the database file holds 800 KB
    // more, or 150 batches (6,000 pages, short of the writer's 8,000).
    let mut copied = false;
    for _ in 0..150 {
        let batch = (0..10).map(|_| email_of(&p, 16)).collect();
        store.insert_emails(batch, None).await.expect("insert");
        if size(&db) >= before + 800 * 1024 {
            copied = true;
            break;
        }
    }
    let writer = store.queue_snapshot(NOW).await.expect("snapshot").writer;
    assert!(
        copied,
        "the database file grew by {} bytes",
        size(&db) - before
    );
    assert!(writer.checkpoints > 0);
    assert!(
        (1..8_000).contains(&writer.wal_frames),
        "{}",
        writer.wal_frames
    );
    store.close().await;
}

/// Under writes that never pause, the log still starts over from its beginning: it stays near
/// the writer's checkpoint size (8,000 pages) however much is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_the_log_stays_bounded_under_a_steady_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("herald.db");
    let wal = dir.path().join("herald.db-wal");
    let store = Store::open(&format!("sqlite://{}", db.display()), 2)
        .await
        .expect("store");
    let p = project(&store).await;
    // 3 x 8,000 pages of 4 KB, in batches of 20 emails of 64 KB.
    let bound = 10_000 * 4_120;
    let mut written = 0;
    while written < 3 * 8_000 * 4_096 {
        let batch = (0..20).map(|_| email_of(&p, 64)).collect();
        store.insert_emails(batch, None).await.expect("insert");
        written += 20 * 64 * 1024;
        assert!(size(&wal) <= bound, "the log holds {} bytes", size(&wal));
    }
    let writer = store.queue_snapshot(NOW).await.expect("snapshot").writer;
    assert!(writer.checkpoints > 0);
    store.close().await;
}

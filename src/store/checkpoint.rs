//! Checkpoints of SQLite's write-ahead log, taken out of the single writer's commits.
//!
//! A checkpoint copies the pages the log holds back into the database file (reading each
//! frame, writing each page, then flushing the database file). SQLite runs one by itself in
//! whichever connection's commit takes the log past `wal_autocheckpoint` pages; on the
//! writer's connection that stalled the one thread every email's commit goes through, a copy
//! and two flushes every thousand pages (with checkpoints turned off the accept rate rose
//! 16 %, side by side).
//!
//! So the syncer does them, on a connection of its own, between two flushes of the log (see
//! `store::group_commit`): at most every [`INTERVAL`], a `PASSIVE` checkpoint, which takes no
//! lock the writer needs, so the writer goes on committing while it copies. Not on a task of
//! its own beside the syncer: its flushes of the database file then ran at the same time as
//! the syncer's flushes of the log, which waited behind them, and the accept p99 at half the
//! peak rate rose from 17 to 26 ms; in the syncer's turn, the commits made meanwhile are
//! flushed together after it.
//!
//! The writer's own automatic checkpoint stays, at [`WRITER_AUTOCHECKPOINT`] pages rather than
//! 1,000. SQLite starts the log over from its beginning only in a writer's transaction that
//! begins with every frame copied, which under a steady load a checkpoint beside the writer
//! never sees; by the time the log is that long the syncer has copied all but the last
//! moment's pages, so the writer's checkpoint copies a short tail and its next transaction
//! starts the log over. If the syncer's checkpoints fail or fall behind, the writer's does the
//! whole copy, as before: the log never grows much past that size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::{AnyPool, Row};

/// The writer connection's automatic checkpoint: at 8,000 pages of log (32 MB at 4 KB pages).
pub(super) const WRITER_AUTOCHECKPOINT: &str = "PRAGMA wal_autocheckpoint = 8000";

/// The shortest time between two checkpoints. At 20,000 pages written a second, one every
/// 100 ms copies 2,000 frames, and fewer distinct pages (the hot index pages every commit
/// rewrites are copied once).
const INTERVAL: Duration = Duration::from_millis(100);

/// What the checkpoints have done, for `/metrics`.
#[derive(Debug, Default)]
pub(super) struct Figures {
    checkpoints: AtomicU64,
    /// Frames in the log when the last checkpoint ended.
    log_frames: AtomicU64,
}

impl Figures {
    pub(super) fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }

    pub(super) fn log_frames(&self) -> u64 {
        self.log_frames.load(Ordering::Relaxed)
    }
}

/// Runs the checkpoints, on `pool` (a connection of its own).
pub(super) struct Checkpointer {
    pool: AnyPool,
    figures: Arc<Figures>,
    last: Option<Instant>,
}

impl Checkpointer {
    pub(super) fn new(pool: AnyPool) -> Self {
        Self {
            pool,
            figures: Arc::default(),
            last: None,
        }
    }

    pub(super) fn figures(&self) -> Arc<Figures> {
        Arc::clone(&self.figures)
    }

    /// After a flush of the log: a checkpoint, unless the last one was less than
    /// [`INTERVAL`] ago. A failure is logged and left to the next one (or to the writer's).
    pub(super) async fn after_flush(&mut self) {
        if self.last.is_some_and(|at| at.elapsed() < INTERVAL) {
            return;
        }
        self.last = Some(Instant::now());
        match checkpoint(&self.pool).await {
            Ok(log) => {
                self.figures.checkpoints.fetch_add(1, Ordering::Relaxed);
                self.figures.log_frames.store(log, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "could not checkpoint the write-ahead log"),
        }
    }

    pub(super) async fn close(self) {
        self.pool.close().await;
    }
}

/// One `PASSIVE` checkpoint: copies what it can without waiting for the writer or readers.
/// Returns the log's length in frames.
async fn checkpoint(pool: &AnyPool) -> Result<u64, sqlx::Error> {
    // (busy, frames in the log, frames copied so far); busy is 1 when another checkpoint (the
    // writer's) held the log, and this one copied nothing.
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?;
    let log: i64 = row.try_get(1)?;
    Ok(u64::try_from(log).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::store::{NewEmail, NewRecipient, Store};

    const NOW: i64 = 1_700_000_000_000;

    /// An email with a body of `kb` KB that SQLite cannot store in less (hex of fresh UUIDs).
    fn email(project_id: &str, kb: usize) -> NewEmail {
        let id = uuid::Uuid::now_v7().to_string();
        let body: String = (0..kb * 1024 / 32)
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        NewEmail {
            id: id.clone(),
            project_id: project_id.to_owned(),
            api_key_id: None,
            message_id: format!("<{id}@example.com>"),
            stream: "transactional".into(),
            from_email: "a@example.com".into(),
            from_name: None,
            reply_to: "[]".into(),
            subject: "s".into(),
            tags: "[]".into(),
            metadata: "{}".into(),
            text_body: Some(body),
            html_body: None,
            mime: b"Subject: s\r\n\r\nt\r\n".to_vec(),
            created_at: NOW,
            scheduled_at: None,
            expires_at: None,
            recipients: vec![NewRecipient {
                id: uuid::Uuid::now_v7().to_string(),
                position: 0,
                address: "ada@example.com".into(),
                name: None,
                kind: "to".into(),
                status: "queued".into(),
                next_attempt_at: NOW,
                deadline_at: NOW + 86_400_000,
            }],
            events: vec![],
        }
    }

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    /// Pages the writer committed reach the database file while the log is far shorter than
    /// the writer's own checkpoint waits for: the syncer's checkpoints copied them.
    #[tokio::test]
    async fn sqlite_the_log_is_copied_back_outside_the_writers_commits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("herald.db");
        let store = Store::open(&format!("sqlite://{}", db.display()), 2)
            .await
            .expect("store");
        let p = store.ensure_project("p", NOW).await.expect("project").id;
        let before = size(&db);
        // Batches of 10 emails of 16 KB (some 40 pages) until the database file holds 800 KB
        // more, or 150 batches (6,000 pages, short of the writer's 8,000).
        let mut copied = false;
        for _ in 0..150 {
            let batch = (0..10).map(|_| email(&p, 16)).collect();
            store.insert_emails(batch, None).await.expect("insert");
            if size(&db) >= before + 800 * 1024 {
                copied = true;
                break;
            }
        }
        let figures = store.writer.figures();
        assert!(
            copied,
            "the database file grew by {} bytes",
            size(&db) - before
        );
        assert!(figures.checkpoints > 0);
        assert!(
            (1..8_000).contains(&figures.wal_frames),
            "{}",
            figures.wal_frames
        );
        store.close().await;
    }

    /// Under writes that never pause, the log still starts over from its beginning: it stays
    /// near the writer's checkpoint size (8,000 pages) however much is written.
    #[tokio::test]
    async fn sqlite_the_log_stays_bounded_under_a_steady_load() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("herald.db");
        let wal = dir.path().join("herald.db-wal");
        let store = Store::open(&format!("sqlite://{}", db.display()), 2)
            .await
            .expect("store");
        let p = store.ensure_project("p", NOW).await.expect("project").id;
        // 3 x 8,000 pages of 4 KB, in batches of 20 emails of 64 KB.
        let bound = 10_000 * 4_120;
        let mut written = 0;
        while written < 3 * 8_000 * 4_096 {
            let batch = (0..20).map(|_| email(&p, 64)).collect();
            store.insert_emails(batch, None).await.expect("insert");
            written += 20 * 64 * 1024;
            assert!(size(&wal) <= bound, "the log holds {} bytes", size(&wal));
        }
        assert!(store.writer.figures().checkpoints > 0);
        store.close().await;
    }
}

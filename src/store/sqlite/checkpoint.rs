//! Checkpoints of SQLite's write-ahead log, taken out of the single writer's commits.
//!
//! A checkpoint copies the pages the log holds back into the database file (reading each
//! frame, writing each page, then flushing the database file). SQLite runs one by itself in
//! whichever connection's commit takes the log past `wal_autocheckpoint` pages; on the
//! writer's connection that stalls the one thread every email's commit goes through, a copy
//! and two flushes every thousand pages.
//!
//! So they are taken beside the syncer (see `store::writer`), on a thread of their own:
//! after one of its flushes of the log, at most every [`INTERVAL`], a `PASSIVE` checkpoint on
//! a connection of its own, which takes no lock the writer needs, so the writer goes on
//! committing while it copies, and the syncer goes on flushing. Not in the syncer's own turn:
//! no request would be answered while a checkpoint copied. A checkpoint's flush of the
//! database file beside a flush of the log slows the latter somewhat, which costs less than
//! either stall (bench/RESULTS.md has the runs).
//!
//! The writer's own automatic checkpoint stays, at [`WRITER_AUTOCHECKPOINT`] pages rather than
//! 1,000. SQLite starts the log over from its beginning only in a writer's transaction that
//! begins with every frame copied, which under a steady load a checkpoint beside the writer
//! never sees; by the time the log is that long the checkpoints have copied all but the last
//! moment's pages, so the writer's checkpoint copies a short tail and its next transaction
//! starts the log over. If those checkpoints fail or fall behind, the writer's does the
//! whole copy, as before: the log never grows much past that size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::{AnyPool, Row};

/// The writer connection's automatic checkpoint: at 8,000 pages of log (32 MB at 4 KB pages).
pub(in crate::store) const WRITER_AUTOCHECKPOINT: &str = "PRAGMA wal_autocheckpoint = 8000";

/// The shortest time between two checkpoints. At 20,000 pages written a second, one every
/// 100 ms copies 2,000 frames, and fewer distinct pages (the hot index pages every commit
/// rewrites are copied once).
const INTERVAL: Duration = Duration::from_millis(100);

/// What the checkpoints have done, for `/metrics`.
#[derive(Debug, Default)]
pub(in crate::store) struct Figures {
    checkpoints: AtomicU64,
    /// Frames in the log when the last checkpoint ended.
    log_frames: AtomicU64,
}

impl Figures {
    pub(in crate::store) fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }

    pub(in crate::store) fn log_frames(&self) -> u64 {
        self.log_frames.load(Ordering::Relaxed)
    }
}

/// Runs the checkpoints, on `pool` (a connection of its own).
pub(in crate::store) struct Checkpointer {
    pool: AnyPool,
    figures: Arc<Figures>,
    last: Option<Instant>,
}

impl Checkpointer {
    pub(in crate::store) fn new(pool: AnyPool) -> Self {
        Self {
            pool,
            figures: Arc::default(),
            last: None,
        }
    }

    pub(in crate::store) fn figures(&self) -> Arc<Figures> {
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

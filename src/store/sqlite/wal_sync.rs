//! The durability half of SQLite's group commit, beside its writer (`store::writer`): the
//! syncer, which flushes the write-ahead log and only then answers what was committed before
//! that flush began, and the checkpoints, which copy the log back into the database file
//! beside it (see `checkpoint`). Each on a thread of its own.
//!
//! The writer's connection runs `synchronous = NORMAL`, so its `COMMIT` writes the log and
//! returns; what it committed waits here, as a [`Flushed`], until the flush that holds it has
//! ended. Nothing is answered before: on power loss SQLite's recovery keeps the log up to its
//! last whole commit, so what is lost was never acknowledged. A failed flush answers every job
//! it held with an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::checkpoint::Checkpointer;
use crate::store::{Home, StoreResult};

/// A SQLite database's write-ahead log: the file the syncer flushes, and what checkpoints the
/// log beside the flushes.
pub(in crate::store) struct Wal {
    pub(in crate::store) path: PathBuf,
    pub(in crate::store) checkpointer: Checkpointer,
}

/// A commit the writer made, to be answered once the log is on the disk.
pub(in crate::store) trait Flushed: Send + 'static {
    /// The flush that holds it has ended: answer its jobs.
    fn answer(self);
    /// The flush failed: the commit may not be on the disk, so no job is told it is.
    fn fail(self, why: &str);
}

/// Commits whose jobs wait for the syncer, at most (the writer waits when more are).
pub(super) const SYNC_QUEUE: usize = 64;

/// A SQLite writer's syncer, on a thread of its own: the writer hands it each commit, and
/// learns from `done` that it has answered the last one. Its own thread, not a task on the
/// writer's: each flush then wakes no one but the syncer, which answers the requests itself,
/// and the writer's thread runs the writer's statements alone.
pub(in crate::store) struct Syncer<C> {
    pub(in crate::store) commits: mpsc::Sender<C>,
    pub(in crate::store) done: oneshot::Receiver<()>,
}

impl<C: Flushed> Syncer<C> {
    pub(in crate::store) fn start(wal: Wal) -> StoreResult<Self> {
        let (commits, rx) = mpsc::channel(SYNC_QUEUE);
        let (finished, done) = oneshot::channel();
        let checkpoints = Checkpoints::start(wal.checkpointer)?;
        Home::OwnThread.spawn("herald-syncer", async move {
            sync_then_answer(wal.path, rx, sync_wal, Some(checkpoints)).await;
            let _ = finished.send(());
        })?;
        Ok(Self { commits, done })
    }
}

/// The checkpoints, on a thread of their own beside the syncer's: one after a flush of the
/// log, at most every 100 ms ([`Checkpointer::after_flush`]), while the syncer goes on
/// flushing (see `checkpoint`). On the syncer's own runtime the task would be polled
/// only when the syncer waits for commits, which under load it seldom does.
pub(in crate::store) struct Checkpoints {
    flushed: Arc<Notify>,
    /// Stops the thread when dropped, whether by [`Checkpoints::stop`] or with the syncer
    /// that never started.
    stop: DropGuard,
    done: oneshot::Receiver<()>,
}

impl Checkpoints {
    fn start(mut checkpointer: Checkpointer) -> StoreResult<Self> {
        let flushed = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let (finished, done) = oneshot::channel();
        let (on_flush, stopped) = (Arc::clone(&flushed), stop.clone());
        Home::OwnThread.spawn("herald-checkpoint", async move {
            loop {
                tokio::select! {
                    () = stopped.cancelled() => break,
                    () = on_flush.notified() => checkpointer.after_flush().await,
                }
            }
            checkpointer.close().await;
            let _ = finished.send(());
        })?;
        Ok(Self {
            flushed,
            stop: stop.drop_guard(),
            done,
        })
    }

    /// A flush of the log has ended.
    fn flushed(&self) {
        self.flushed.notify_one();
    }

    /// Ends them once a checkpoint begun is finished.
    async fn stop(self) {
        let Self { stop, done, .. } = self;
        drop(stop);
        let _ = done.await;
    }
}

/// The syncer: takes every commit made so far, flushes the write-ahead log once (a flush
/// begun after a commit holds it), then answers their jobs, and tells the checkpoints. The
/// flush blocks the thread it runs on: the syncer's own (commits made meanwhile wait in the
/// channel).
pub(in crate::store) async fn sync_then_answer<C: Flushed, F>(
    wal: PathBuf,
    mut rx: mpsc::Receiver<C>,
    sync: F,
    checkpoints: Option<Checkpoints>,
) where
    F: Fn(&Path) -> std::io::Result<()>,
{
    let mut done = Vec::new();
    while rx.recv_many(&mut done, SYNC_QUEUE).await > 0 {
        match sync(&wal) {
            Ok(()) => done.drain(..).for_each(Flushed::answer),
            Err(e) => {
                // Committed but perhaps not on the disk: no job is told it is.
                tracing::error!(error = %e, wal = %wal.display(), "could not flush the write-ahead log");
                let msg = format!("could not flush the write-ahead log: {e}");
                for c in done.drain(..) {
                    c.fail(&msg);
                }
            }
        }
        if let Some(checkpoints) = &checkpoints {
            checkpoints.flushed();
        }
    }
    if let Some(checkpoints) = checkpoints {
        checkpoints.stop().await;
    }
}

/// `fdatasync` of the write-ahead log (opened afresh, so a log SQLite replaced is still the
/// one flushed; Linux flushes a file's pages whatever descriptor asks).
fn sync_wal(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_data()
}

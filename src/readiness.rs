//! Whether this process can serve, known within a second and read without waiting.
//!
//! A watcher checks every half second, on a connection of its own (see [`Probe`]): the
//! database answers a read, Postgres takes a write, and the file system SQLite (or the outbox
//! directory) lives on is writable with `limits.min_free_disk` free. `/readyz` reports the last verdict, and the API
//! refuses at once with 503 and `Retry-After` what would fail anyway: everything while the
//! database is unreachable, writes while it cannot take them. Without that gate a request
//! would wait out the pool's acquire timeout (seconds) before its 503.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{Probe, ProbeFailure};

/// How often the watcher checks, and how long one check may take.
pub const INTERVAL: Duration = Duration::from_millis(500);
pub const LIMIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ready,
    /// Reads work; writes would fail (full disk, a refused write).
    ReadOnly,
    /// The database does not answer.
    Down,
}

/// The last verdict, shared by the watcher, the API and the bounce listener.
#[derive(Debug, Default)]
pub struct Readiness {
    state: AtomicU8,
    reason: Mutex<String>,
    recheck: Notify,
}

impl Readiness {
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Ready,
            1 => State::ReadOnly,
            _ => State::Down,
        }
    }

    /// Why the state is not `Ready` (empty when it is).
    pub fn reason(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Something failed against the database: check now rather than at the next tick.
    pub fn recheck(&self) {
        self.recheck.notify_one();
    }

    fn set(&self, state: State, reason: String) {
        let before = self.state();
        if before != state {
            match state {
                State::Ready => tracing::info!("ready again"),
                _ => tracing::warn!(?state, reason = %reason, "not ready"),
            }
        }
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
        let code = match state {
            State::Ready => 0,
            State::ReadOnly => 1,
            State::Down => 2,
        };
        self.state.store(code, Ordering::Release);
    }
}

/// What the watcher checks besides the database.
pub struct Watch {
    pub probe: Probe,
    /// Directories whose file system must keep `min_free` bytes free (the SQLite database's is
    /// added by the probe).
    pub dirs: Vec<PathBuf>,
    pub min_free: u64,
}

/// Checks until `shutdown`, at every tick and whenever [`Readiness::recheck`] is called.
pub async fn watch(readiness: Arc<Readiness>, mut w: Watch, shutdown: CancellationToken) {
    loop {
        let (state, reason) = check(&mut w).await;
        readiness.set(state, reason);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(INTERVAL) => {}
            () = readiness.recheck.notified() => {}
        }
    }
    w.probe.close().await;
}

async fn check(w: &mut Watch) -> (State, String) {
    match w.probe.check().await {
        Ok(()) => {}
        Err(ProbeFailure::Unreachable(why)) => {
            return (State::Down, format!("the database does not answer: {why}"));
        }
        Err(ProbeFailure::Unwritable(why)) => {
            return (
                State::ReadOnly,
                format!("the database refuses writes: {why}"),
            );
        }
    }
    let database = w.probe.database_dir().await;
    for dir in w.dirs.iter().chain(database.as_ref()) {
        if let Some(free) = free_bytes(dir)
            && free < w.min_free
        {
            return (
                State::ReadOnly,
                format!(
                    "{} has {free} bytes free, under limits.min_free_disk ({})",
                    dir.display(),
                    w.min_free
                ),
            );
        }
    }
    (State::Ready, String::new())
}

/// Free bytes for an unprivileged writer on the file system holding `dir`, 0 when it is
/// mounted read-only (None when it cannot be asked, such as a directory not made yet).
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    if s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return Some(0);
    }
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

//! The readiness probe's own connection: it reads and writes the database the way a request
//! would, but on a connection outside the pools, so a busy pool is not taken for a dead
//! database, and a dead database is seen in a second instead of the pool's acquire timeout.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions as _, Connection as _};

use super::Backend;
use crate::clock::Clock as _;

/// What the probe found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// No connection, or a read that failed or did not finish within the limit.
    Unreachable(String),
    /// The database answers reads but refused a write (a full disk, a read-only server).
    Unwritable(String),
}

pub struct Probe {
    options: AnyConnectOptions,
    backend: Backend,
    /// Names this process's row in `settings` (each process writes its own, so two never wait
    /// on each other's row lock).
    row: String,
    conn: Option<AnyConnection>,
    limit: Duration,
    /// A SQLite database in memory lives in its one process's connections: nothing to probe.
    in_memory: bool,
}

impl Probe {
    pub fn new(url: &str, instance: &str, limit: Duration) -> Result<Self, super::StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let options: AnyConnectOptions = url.parse()?;
        Ok(Self {
            options,
            backend,
            row: format!("probe:{instance}"),
            conn: None,
            limit,
            in_memory: url.contains(":memory:") || url.contains("mode=memory"),
        })
    }

    /// Reads, then (on Postgres) writes one row, each within the limit. A failed connection
    /// is dropped and made again at the next check.
    pub async fn check(&mut self) -> Result<(), ProbeFailure> {
        if self.in_memory {
            return Ok(());
        }
        let had_connection = self.conn.is_some();
        let mut outcome = self.check_once().await;
        if matches!(outcome, Err(ProbeFailure::Unreachable(_))) {
            self.conn = None;
            // One dead connection is not a dead database (a server restarts its backends,
            // an idle connection is cut): try again at once on a new one.
            if had_connection {
                outcome = self.check_once().await;
                if matches!(outcome, Err(ProbeFailure::Unreachable(_))) {
                    self.conn = None;
                }
            }
        }
        outcome
    }

    async fn check_once(&mut self) -> Result<(), ProbeFailure> {
        let limit = self.limit;
        let within = |what: &'static str| {
            move |_| ProbeFailure::Unreachable(format!("{what} did not finish within {limit:?}"))
        };
        if self.conn.is_none() {
            let conn = tokio::time::timeout(limit, self.options.connect())
                .await
                .map_err(within("connecting"))?
                .map_err(|e| ProbeFailure::Unreachable(e.to_string()))?;
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(ProbeFailure::Unreachable("no connection".into()));
        };
        tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&mut *conn))
            .await
            .map_err(within("a read"))?
            .map_err(|e| ProbeFailure::Unreachable(e.to_string()))?;
        // Not on SQLite: a commit from a connection outside the store's writer would end the
        // snapshot of a transaction the store has open on its writer connection (it reads, then
        // writes), which then fails with SQLITE_BUSY_SNAPSHOT. Whether SQLite can take writes
        // is its file system's free space and read-only flag (see `readiness`).
        if self.backend == Backend::Sqlite {
            return Ok(());
        }
        let write = sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(&self.row)
        .bind(crate::clock::SystemClock.now_ms().to_string())
        .execute(&mut *conn);
        match tokio::time::timeout(limit, write).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if lost_connection(&e) => Err(ProbeFailure::Unreachable(e.to_string())),
            Ok(Err(e)) => Err(ProbeFailure::Unwritable(e.to_string())),
            Err(_) => Err(ProbeFailure::Unwritable(format!(
                "a write did not finish within {limit:?}"
            ))),
        }
    }

    /// The directory a SQLite database lives in, whose free space counts (none on Postgres or
    /// for a database in memory).
    pub async fn database_dir(&mut self) -> Option<PathBuf> {
        if self.backend != Backend::Sqlite || self.in_memory {
            return None;
        }
        let conn = self.conn.as_mut()?;
        let file: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&mut *conn)
                .await
                .ok()?;
        let file = PathBuf::from(file);
        file.parent().map(std::path::Path::to_path_buf)
    }

    pub async fn close(self) {
        if let Some(conn) = self.conn {
            let _ = conn.close().await;
        }
    }
}

/// Whether the error says the connection itself is gone, rather than the write refused.
fn lost_connection(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::Protocol(_)
    )
}

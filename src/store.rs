//! The store: every table Herald has, behind one type, on SQLite or Postgres.
//!
//! One portable schema (text UUIDv7 ids, integer epoch-millisecond times, integer flags) and
//! one set of queries: reads go through sqlx's `Any` pool; every write goes through the
//! store's writer (`store::writer`), in group commits, written once against `write::Tx`.
//! How each database writes, and the few statements that differ, are the backend's own:
//! `store::sqlite` (one writer connection on a thread of its own, its log flushed beside it)
//! and `store::postgres` (a few writers on the pool's connections).
//!
//! Every write that changes a recipient's state inserts the event that records it in the same
//! transaction.

/// The test "still waiting for an attempt" (scheduled, queued or delayed), as a SQL literal,
/// on `status` or, given a table's name or alias, on `<name>.status`. Spelled as three
/// comparisons, the same as the claim index's predicate (migration 0012): SQLite uses a
/// partial index only for a query that holds its predicate term for term, and it builds an
/// `IN` list of three values into a temporary B-tree at each evaluation.
macro_rules! pending {
    () => {
        "(status = 'scheduled' OR status = 'queued' OR status = 'delivery_delayed')"
    };
    ($table:literal) => {
        concat!(
            "(",
            $table,
            ".status = 'scheduled' OR ",
            $table,
            ".status = 'queued' OR ",
            $table,
            ".status = 'delivery_delayed')"
        )
    };
}

mod domains;
mod emails;
mod inbound;
mod kept;
mod migrate;
mod operators;
mod postgres;
mod probe;
mod projects;
mod queue;
mod retention;
mod sqlite;
mod stats;
mod suppressions;
mod webhooks;
mod write;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use write::Val;

pub use domains::{DkimKeyRecord, DomainRecord};
pub use emails::{
    EmailFilter, EmailRecord, EventFilter, EventRecord, IdempotencyRecord, NewEmail, NewEvent,
    NewRecipient, RecipientRecord, Respond, SUBJECT_WINDOW, SearchPage, StoredResponse, Suppressed,
    json_text,
};
pub use inbound::{KeptInbound, RecipientRef, ReportEffect, ReportRef, UnreadInbound};
pub use operators::{AuditEntry, OperatorRecord, SessionRecord};
pub use probe::{Probe, ProbeFailure};
pub use projects::{ApiKeyRecord, Project};
pub use queue::{ClaimedEmail, ClaimedRecipient, Outcome, ProjectQueue, Recorded};
pub use stats::{BounceCount, METRICS, StatsDimension, StatsQuery, StatsRow, bounced_of, count_of};
pub use suppressions::SuppressionRecord;
pub use webhooks::{
    AttemptLogRecord, AttemptRecord, DeliveryEmail, DueDelivery, EndpointRecord, WebhookTarget,
};

/// Which database the URL named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::Config(format!(
                "database_url must start with sqlite:// or postgres:// (got {})",
                crate::config::redact_url_password(url)
            )))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the write.
    #[error("conflict")]
    Conflict,
    #[error("database configuration: {0}")]
    Config(String),
    #[error("stored data is not what Herald wrote: {0}")]
    Corrupt(String),
    #[error("database: {0}")]
    Database(sqlx::Error),
    /// The database refused a statement of the writer's (not its state: Herald's mistake).
    #[error("database: {0}")]
    Failed(String),
    /// The database could not take the write (reported to every request of a failed batch).
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            _ if is_transient(&e) => Self::Unavailable(e.to_string()),
            _ => Self::Database(e),
        }
    }
}

/// Whether the failure is the database's state, not the statement's: trying again later can
/// work (a client gets 503 and `Retry-After`, never 500). A connection lost or refused, a
/// pool with none to give; on Postgres the SQLSTATE classes of connection exceptions (08),
/// insufficient resources (53: a full disk, too many connections), an operator's shutdown or
/// restart (57P01–57P03), and serialization failures and deadlocks (40001, 40P01); on SQLite
/// busy, locked, read-only, I/O error, full disk and cannot open (result codes 5, 6, 8, 10,
/// 13, 14, extended codes included).
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // A SQLSTATE is five characters; SQLite's (extended) result codes are below 10,000.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            if code.len() == 5 {
                code.starts_with("08")
                    || code.starts_with("53")
                    || matches!(&*code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
            } else {
                code.parse::<u32>()
                    .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 8 | 10 | 13 | 14))
            }
        }),
        _ => false,
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A value stored as text (a status, an event type, a state), read back with its `parse`:
/// one Herald wrote, or the row is not what Herald wrote (`Corrupt`, never dropped).
fn stored<T>(parse: impl FnOnce(&str) -> Option<T>, s: &str) -> StoreResult<T> {
    parse(s).ok_or_else(|| StoreError::Corrupt(format!("'{s}' is not a value Herald writes here")))
}

/// The database: a pool to read from (on Postgres, to write through as well) and the writer.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// SQLite's readers; Postgres's connections (the writers keep a few of them).
    pool: AnyPool,
    writer: writer::Writer,
    /// Shared with the writer; cleared by the store's own endpoint writes.
    endpoints: std::sync::Arc<webhooks::EndpointCache>,
}

impl Store {
    /// Connects (creating a SQLite file if needed) without touching the schema.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let endpoints =
            std::sync::Arc::new(webhooks::EndpointCache::new(Duration::from_secs(1), 10_000));
        let (pool, connections) = match backend {
            Backend::Sqlite => {
                if url.contains(":memory:") || url.contains("mode=memory") {
                    return Err(StoreError::Config(
                        "an in-memory SQLite database cannot keep what Herald accepts; \
                         give database_url a file (sqlite://herald.db)"
                            .into(),
                    ));
                }
                let url = if url.contains('?') {
                    url.to_owned()
                } else {
                    format!("{url}?mode=rwc")
                };
                let options = AnyConnectOptions::from_str(&url)?;
                let pool = sqlite_pool(max_connections.max(2))
                    .connect_with(options.clone())
                    .await?;
                let database = database_file(&pool).await?;
                let own = sqlite_pool(1).connect_with(options).await?;
                let wal = sqlite::wal_sync::Wal {
                    path: std::path::PathBuf::from(format!("{}-wal", database.display())),
                    checkpointer: sqlite::checkpoint::Checkpointer::new(own),
                };
                let conn = sqlite::Connection::open(&database)?;
                (pool, writer::Connections::Sqlite(conn, wal))
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?;
                // A few writers, each a connection of the pool at most.
                let writers = usize::try_from(max_connections / 4)
                    .unwrap_or(1)
                    .clamp(1, 4);
                (pool.clone(), writer::Connections::Postgres(pool, writers))
            }
        };
        let writer = writer::Writer::start(connections, std::sync::Arc::clone(&endpoints))?;
        Ok(Self {
            backend,
            pool,
            writer,
            endpoints,
        })
    }

    /// Connects and brings the schema up to date.
    pub async fn open(url: &str, max_connections: u32) -> StoreResult<Self> {
        let store = Self::connect(url, max_connections).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The statements that differ on this database.
    fn dialect(&self) -> &'static write::Dialect {
        match self.backend {
            Backend::Sqlite => &sqlite::DIALECT,
            Backend::Postgres => &postgres::DIALECT,
        }
    }

    /// Applies the embedded migrations that have not run yet.
    pub async fn migrate(&self) -> StoreResult<Vec<String>> {
        migrate::run(self).await
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Runs one statement on the writer (in its next commit); how many rows it changed.
    async fn execute(&self, sql: impl Into<String>, params: Vec<write::Owned>) -> StoreResult<u64> {
        let sql = sql.into();
        self.writer
            .run(move |tx, _| {
                Box::pin(async move {
                    let params: Vec<Val<'_>> = params.iter().map(write::Owned::val).collect();
                    tx.execute(&sql, &params).await
                })
            })
            .await
    }

    /// A server-wide value, created with `make` the first time it is asked for.
    pub async fn setting_or_insert(
        &self,
        name: &str,
        make: impl FnOnce() -> String,
    ) -> StoreResult<String> {
        let (name, value) = (name.to_owned(), make());
        self.writer
            .run(move |tx, _| {
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO settings (name, value) VALUES ($1, $2) \
                         ON CONFLICT (name) DO NOTHING",
                        &[Val::Text(&name), Val::Text(&value)],
                    )
                    .await?;
                    let rows = tx
                        .query(
                            "SELECT value FROM settings WHERE name = $1",
                            &[Val::Text(&name)],
                        )
                        .await?;
                    rows.first().ok_or(StoreError::NotFound)?.get(0)
                })
            })
            .await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The file of a SQLite database (its writer opens it too; its log is what the syncer
/// flushes).
async fn database_file(pool: &AnyPool) -> StoreResult<std::path::PathBuf> {
    let file: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(pool)
            .await?;
    if file.is_empty() {
        return Err(StoreError::Config(
            "a temporary SQLite database cannot keep what Herald accepts; give database_url a file"
                .into(),
        ));
    }
    Ok(std::path::PathBuf::from(file))
}

/// SQLite's reading connections (and the checkpointer's).
fn sqlite_pool(max: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(30))
        // An embedded database cannot have gone away: no ping (a hand-off to the connection's
        // thread and back) before every use.
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                // WAL lets readers run beside the writer. The writer's settings are its own
                // (see `store::sqlite`).
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                )
                .await?;
                Ok(())
            })
        })
}

/// Where one of the store's long-running tasks (the writer, its syncer) runs.
#[derive(Debug, Clone, Copy)]
enum Home {
    /// On the caller's runtime, beside the HTTP handlers.
    Runtime,
    /// On a thread of its own with a single-threaded runtime. For SQLite: a batch hands ~10
    /// statements to the connection's thread one after the other, and on the shared runtime
    /// each hand-back would wait for a worker busy with HTTP requests, leaving the writer idle
    /// while requests queue on it. Not for Postgres: its
    /// sockets belong to the runtime that opened them, and this thread's ends first.
    OwnThread,
}

impl Home {
    /// Starts `task`; a thread or runtime that cannot be had fails the store's start.
    fn spawn<F>(self, name: &str, task: F) -> StoreResult<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match self {
            Home::Runtime => {
                tokio::spawn(task);
            }
            Home::OwnThread => {
                let cannot = |e: std::io::Error| StoreError::Unavailable(format!("{name}: {e}"));
                // Timers only: its tasks talk to SQLite's connection threads over channels,
                // never to a socket, so the thread parks on a futex and is woken with one
                // (with the I/O driver, every wake from a connection's thread, a dozen per
                // commit, was an eventfd write and an epoll_wait).
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .map_err(cannot)?;
                std::thread::Builder::new()
                    .name(name.to_owned())
                    .spawn(move || runtime.block_on(task))
                    .map_err(cannot)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod transient_tests {
    use super::{StoreError, is_transient};

    /// A database error with just a code, as a driver reports one.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn coded(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Coded(code)))
    }

    #[test]
    fn outages_are_unavailable_and_mistakes_are_not() {
        // Postgres: an administrator's termination, a full disk, a refused connection.
        for code in ["57P01", "53100", "08006", "40P01"] {
            assert!(is_transient(&coded(code)), "{code}");
        }
        // SQLite: busy, full, an I/O error's extended code.
        for code in ["5", "13", "266"] {
            assert!(is_transient(&coded(code)), "{code}");
        }
        // A syntax error, a foreign key, a check: the statement's fault, not the database's.
        for code in ["42601", "23503", "1", "787", "275"] {
            assert!(!is_transient(&coded(code)), "{code}");
        }
        assert!(matches!(
            StoreError::from(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
    }
}

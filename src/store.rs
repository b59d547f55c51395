//! The store: every table Herald has, behind one type, on SQLite or Postgres.
//!
//! Queries are written once for sqlx's `Any` driver over a portable schema (text UUIDv7 ids,
//! integer epoch-millisecond times, integer flags). The few statements that differ between
//! the two dialects (the queue claim's `FOR UPDATE SKIP LOCKED`, the migration lock) are in
//! [`Backend`]'s methods. SQLite gets one writer connection (it has one writer anyway, and a
//! single connection avoids `SQLITE_BUSY` storms) and a pool of readers; Postgres one pool.
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

mod bulk;
mod checkpoint;
mod domains;
mod emails;
mod group_commit;
mod inbound;
mod kept;
mod lite;
mod migrate;
mod probe;
mod projects;
mod queue;
mod retention;
mod stats;
mod suppressions;
mod wal_sync;
mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use domains::{DkimKeyRecord, DomainRecord};
pub use emails::{
    EmailFilter, EmailRecord, EventFilter, EventRecord, IdempotencyRecord, NewEmail, NewEvent,
    NewRecipient, RecipientRecord, Respond, StoredResponse, Suppressed, json_text,
};
pub use inbound::{KeptInbound, RecipientRef, ReportEffect};
pub use probe::{Probe, ProbeFailure};
pub use projects::{ApiKeyRecord, Project};
pub use queue::{ClaimedEmail, ClaimedRecipient, Outcome, Recorded};
pub use stats::{BounceCount, METRICS, StatsDimension, StatsQuery, StatsRow};
pub use suppressions::SuppressionRecord;
pub use webhooks::{AttemptLogRecord, AttemptRecord, DeliveryEmail, DueDelivery, EndpointRecord};

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
    /// The database could not take the write (reported to every request of a failed batch).
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// The same failure for each request of a batch (sqlx errors cannot be cloned).
    fn from_shared(msg: &str, e: &sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            _ => Self::Unavailable(msg.to_owned()),
        }
    }
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

/// The database, with separate reader and writer pools (the same pool on Postgres).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    read: AnyPool,
    write: AnyPool,
    writer: group_commit::Writer,
    /// Shared with the writer; cleared by the store's own endpoint writes.
    endpoints: std::sync::Arc<webhooks::EndpointCache>,
}

impl Store {
    /// Connects (creating a SQLite file if needed) without touching the schema.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        match backend {
            Backend::Sqlite => {
                let url = if url.contains('?') || url.contains(":memory:") {
                    url.to_owned()
                } else {
                    format!("{url}?mode=rwc")
                };
                let options = AnyConnectOptions::from_str(&url)?;
                let write = sqlite_pool(1, Role::Writer)
                    .connect_with(options.clone())
                    .await?;
                let read = sqlite_pool(max_connections.max(2), Role::Reader)
                    .connect_with(options.clone())
                    .await?;
                let endpoints = std::sync::Arc::new(webhooks::EndpointCache::new(
                    Duration::from_secs(1),
                    10_000,
                ));
                let wal = match database_file(&write).await? {
                    Some(database) => {
                        let own = sqlite_pool(1, Role::Reader)
                            .connect_with(options.clone())
                            .await?;
                        Some(wal_sync::Wal {
                            path: std::path::PathBuf::from(format!("{}-wal", database.display())),
                            database,
                            checkpointer: checkpoint::Checkpointer::new(own),
                        })
                    }
                    None => None,
                };
                let writer = group_commit::Writer::start(
                    write.clone(),
                    std::sync::Arc::clone(&endpoints),
                    Home::OwnThread,
                    1,
                    wal,
                )?;
                Ok(Self {
                    backend,
                    read,
                    write,
                    writer,
                    endpoints,
                })
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?;
                let endpoints = std::sync::Arc::new(webhooks::EndpointCache::new(
                    Duration::from_secs(1),
                    10_000,
                ));
                // A few writers, each a connection of the pool at most.
                let writers = usize::try_from(max_connections / 4)
                    .unwrap_or(1)
                    .clamp(1, 4);
                let writer = group_commit::Writer::start(
                    pool.clone(),
                    std::sync::Arc::clone(&endpoints),
                    Home::Runtime,
                    writers,
                    None,
                )?;
                Ok(Self {
                    backend,
                    read: pool.clone(),
                    write: pool,
                    writer,
                    endpoints,
                })
            }
        }
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

    /// Applies the embedded migrations that have not run yet.
    pub async fn migrate(&self) -> StoreResult<Vec<String>> {
        migrate::run(self).await
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.write).await?;
        Ok(())
    }

    /// A server-wide value, created with `make` the first time it is asked for.
    pub async fn setting_or_insert(
        &self,
        name: &str,
        make: impl FnOnce() -> String,
    ) -> StoreResult<String> {
        let read = |pool| async move {
            sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await
        };
        if let Some(v) = read(&self.write).await? {
            return Ok(v);
        }
        let inserted = sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2)")
            .bind(name)
            .bind(make())
            .execute(&self.write)
            .await;
        match inserted.map_err(StoreError::from) {
            Ok(_) | Err(StoreError::Conflict) => {
                read(&self.write).await?.ok_or(StoreError::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// What a SQLite pool's connections are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
}

/// The file of a SQLite database whose write-ahead log the group-commit writer flushes itself
/// (see `store::group_commit`): none for one in memory or not in WAL mode.
async fn database_file(pool: &AnyPool) -> StoreResult<Option<std::path::PathBuf>> {
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Ok(None);
    }
    let file: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(pool)
            .await?;
    Ok((!file.is_empty()).then(|| std::path::PathBuf::from(file)))
}

/// SQLite's connections (the writer's pool has one).
fn sqlite_pool(max: u32, role: Role) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(30))
        // An embedded database cannot have gone away: no ping (a hand-off to the connection's
        // thread and back) before every use.
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                // WAL lets readers run beside the writer; synchronous=FULL makes every commit
                // durable before Herald answers 2xx (NORMAL could lose the last commits on
                // power loss). The group-commit writer relaxes it while it holds the
                // connection and flushes the log itself before answering.
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                )
                .await?;
                if role == Role::Writer {
                    // The writer's statement journals in memory: a group commit's multi-row
                    // insert outgrew the in-memory journal, and SQLite created, wrote and
                    // deleted a temporary file for nearly every commit. Not the readers':
                    // their sorts (a GROUP BY over a million queued recipients) would spill
                    // into memory too (+60 MB peak RSS at 1M queued).
                    conn.execute("PRAGMA temp_store = MEMORY;").await?;
                    // The checkpointer copies the log back beside the writer; the writer's
                    // own checkpoint is left for the short tail (see `store::checkpoint`).
                    conn.execute(checkpoint::WRITER_AUTOCHECKPOINT).await?;
                }
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

/// `$first, $first+1, …` placeholders for an `IN (…)` list of `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An `IN (…)` list's values padded to a power of two by repeating the last one (a repeat
/// matches nothing new), bound to the [`padded_placeholders`] of as many values (every caller
/// has at least one value: an empty list would leave its one placeholder unbound). The query
/// takes one of a few shapes, each kept prepared; a list of every length would be a statement
/// parsed afresh per query.
fn padded<T: Copy>(items: &[T]) -> impl Iterator<Item = T> + '_ {
    let pad = padded_len(items.len()) - items.len();
    let last = items.last().copied();
    items
        .iter()
        .copied()
        .chain(std::iter::repeat_n(last, pad).flatten())
}

/// [`placeholders`] from `$first` for a list of `n` values bound through [`padded`].
fn padded_placeholders(first: usize, n: usize) -> String {
    placeholders(first, padded_len(n))
}

fn padded_len(n: usize) -> usize {
    n.next_power_of_two()
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

//! SQLite: the writer's one connection, its dialect, and the durability beside it.
//!
//! SQLite has one writer, so Herald has one: a connection (rusqlite, over the very SQLite that
//! sqlx bundles) owned by the store's writer thread (`store::writer`), which writes every
//! change Herald makes to the database. sqlx keeps the readers' pool; its SQLite connections
//! each run on a thread of their own, and every statement would be a hand-off to that thread
//! and back, which at the peak intake bounded how fast Herald accepts. Here the writer binds
//! each value where it lies and steps the prepared statements itself.
//!
//! The connection runs `synchronous = NORMAL`: a commit writes its frames to the write-ahead
//! log and returns without an fsync. The syncer (`wal_sync`) flushes the log on a thread of
//! its own and only then answers what was committed; the checkpoints (`checkpoint`) copy the
//! log back into the database file beside it.
//!
//! Multi-row inserts and updates are `OR FAIL`: a row that breaks a `NOT NULL`, `UNIQUE` or
//! `CHECK` constraint still fails the statement, but the rows before it are not taken back by
//! the statement itself. That spares SQLite its statement journal: for a multi-row statement
//! that may abort, it first copies every page the statement touches, so that it can undo the
//! statement alone (the foreign keys of `emails` and `recipients` are checked at `COMMIT` for
//! the same reason). Every write runs in a transaction or savepoint that an error rolls back
//! whole, so the rows before a failure never commit.

pub(super) mod checkpoint;
pub(super) mod wal_sync;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt as _};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{OpenFlags, ToSql};

use super::write::{CHUNK, Dialect, Row, TableRows, Tx, Val, padded_insert, padded_len};
use super::{StoreError, StoreResult};

pub(super) static DIALECT: Dialect = Dialect {
    insert: "INSERT OR FAIL",
    update: "UPDATE OR FAIL",
    claim: CLAIM,
    webhook_claim: "UPDATE OR FAIL webhook_deliveries SET lease_owner = $1, \
         lease_expires_at = $2, next_attempt_at = $2 WHERE id IN (SELECT id FROM \
         webhook_deliveries WHERE endpoint_id = $5 AND status = 'pending' \
         AND next_attempt_at <= $3 ORDER BY next_attempt_at LIMIT $4 + 0) RETURNING id, attempts, event_id",
    // SQLite has no UPDATE in a WITH: the claim's rows are read after it, on the writer's
    // own connection, which costs no round trip.
    webhook_claim_loaded: None,
    claim_leaves_scheduled: true,
    // SQLite streams a GROUP BY on the index column.
    grouped_email_id: "d.email_id",
    // SQLite has no statistics unless told to gather them: it is told the index.
    events_by_email: "INDEXED BY events_email",
};

/// The claim. `LIMIT $4 + 0`, not `LIMIT $4`: SQLite compiles a lone parameter in `LIMIT` as
/// the value bound when it prepared the statement, and so prepares the statement again
/// whenever a claim's limit differs from the last one's.
///
/// It leaves `status` alone: SQLite rewrites an index's entry for every row an `UPDATE`
/// assigns one of its columns, changed or not, and `status = CASE …` moved every claimed
/// recipient out of `recipients_project_status` and back in, though only a scheduled one
/// changes (to queued). The claim's second statement (`store::queue`) does that for the few
/// it returns as scheduled.
const CLAIM: &str = concat!(
    "UPDATE OR FAIL recipients SET lease_owner = $1, lease_expires_at = $2, \
     next_attempt_at = $2 \
     WHERE id IN (SELECT id FROM recipients \
       WHERE ",
    pending!(),
    " AND next_attempt_at <= $3 \
       ORDER BY next_attempt_at LIMIT $4 + 0) \
     RETURNING id, email_id, address, attempts, deadline_at, status"
);

/// The writer's connection automatic checkpoint: at 8,000 pages of log (32 MB at 4 KB
/// pages); see `checkpoint`.
pub(super) use checkpoint::WRITER_AUTOCHECKPOINT;

/// Prepared statements kept (a dozen tables, four shapes each, and the other writes).
const STATEMENTS: usize = 256;

/// The writer's connection.
pub(super) struct Connection {
    conn: rusqlite::Connection,
    /// The text of each padded insert, by (table and columns, conflict clause, rows): the
    /// writer asks for the same few every batch.
    shapes: HashMap<(String, String, usize), Arc<str>>,
}

impl Connection {
    /// Opens the database file `path` (the schema is the store's: migrations run through the
    /// pool, this connection sees them when it next prepares).
    pub(super) fn open(path: &Path) -> StoreResult<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(error)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(error)?;
        // The statement journals in memory: a group commit's multi-row insert outgrew the
        // in-memory journal, and SQLite created, wrote and deleted a temporary file for
        // nearly every commit. (Not the readers': their sorts would spill into memory too.)
        let settings = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA temp_store = MEMORY; {WRITER_AUTOCHECKPOINT};"
        );
        conn.execute_batch(&settings).map_err(error)?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        Ok(Self {
            conn,
            shapes: HashMap::new(),
        })
    }

    /// Begins the writer's transaction. `IMMEDIATE`: the write lock first, so what the
    /// transaction reads before it writes (the suppression list) is what its writes commit
    /// beside.
    pub(super) fn begin(&mut self) -> StoreResult<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(error)
    }

    pub(super) fn commit(&mut self) -> StoreResult<()> {
        let committed = self.conn.execute_batch("COMMIT").map_err(error);
        if committed.is_err() {
            self.rollback();
        }
        committed
    }

    /// Rolls back whatever is open (a failed `COMMIT` may leave the transaction open, as may
    /// a failed write).
    pub(super) fn rollback(&mut self) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "could not roll back the writer's transaction");
        }
    }

    fn statement(&self, sql: &str) -> StoreResult<rusqlite::CachedStatement<'_>> {
        self.conn.prepare_cached(&numbered(sql)).map_err(error)
    }

    fn bound<'s>(
        &'s self,
        sql: &str,
        params: &[Val<'_>],
    ) -> StoreResult<rusqlite::CachedStatement<'s>> {
        let mut statement = self.statement(sql)?;
        for (i, p) in params.iter().enumerate() {
            statement.raw_bind_parameter(i + 1, p).map_err(error)?;
        }
        Ok(statement)
    }

    fn run(&self, sql: &str, params: &[Val<'_>]) -> StoreResult<u64> {
        let changed = self.bound(sql, params)?.raw_execute().map_err(error)?;
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }

    fn rows(&self, sql: &str, params: &[Val<'_>]) -> StoreResult<Vec<Row>> {
        let mut statement = self.bound(sql, params)?;
        let n = statement.column_count();
        let mut rows = statement.raw_query();
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(error)? {
            let values = (0..n)
                .map(|i| r.get::<_, rusqlite::types::Value>(i))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(error)?;
            out.push(Row::Sqlite(values));
        }
        Ok(out)
    }

    /// The text of `t`'s padded insert of `padded` rows.
    fn insert_text(&mut self, t: &TableRows<'_, '_>, padded: usize) -> Arc<str> {
        let key = (
            format!("{} ({})", t.table, t.cols.join(", ")),
            t.on_conflict.to_owned(),
            padded,
        );
        let text = self.shapes.entry(key).or_insert_with(|| {
            let row = format!("({})", vec!["?"; t.cols.len()].join(", "));
            padded_insert(DIALECT.insert, t, |sql| {
                sql.push_str(&vec![row; padded].join(", "));
            })
            .into()
        });
        Arc::clone(text)
    }

    fn tables(&mut self, tables: &[TableRows<'_, '_>]) -> StoreResult<()> {
        for t in tables {
            // One statement for many rows, not one per row: a statement's cursors stay where
            // its last row left them, and the next row of an index that grows at its end is
            // found without a walk from the root.
            for chunk in t.rows.chunks(CHUNK) {
                let padded = padded_len(chunk.len());
                let text = self.insert_text(t, padded);
                let mut statement = self.conn.prepare_cached(&text).map_err(error)?;
                let values = chunk.iter().flatten().chain(std::iter::repeat_n(
                    &NULL,
                    (padded - chunk.len()) * t.cols.len(),
                ));
                for (i, v) in values.enumerate() {
                    statement.raw_bind_parameter(i + 1, v).map_err(error)?;
                }
                statement.raw_execute().map_err(error)?;
            }
        }
        Ok(())
    }

    fn updates(
        &mut self,
        per_row: usize,
        rows: &[Vec<Val<'_>>],
        sql: &(dyn Fn(&str, &str) -> String + Sync),
    ) -> StoreResult<Vec<String>> {
        let mut changed = Vec::new();
        for chunk in rows.chunks(CHUNK) {
            let padded = padded_len(chunk.len());
            let row = format!("({})", vec!["?"; per_row].join(", "));
            let values = format!("(VALUES {}) AS v", vec![row; padded].join(", "));
            let text = sql(DIALECT.update, &values);
            let mut statement = self.conn.prepare_cached(&text).map_err(error)?;
            let bound = chunk
                .iter()
                .flatten()
                .chain(std::iter::repeat_n(&NULL, (padded - chunk.len()) * per_row));
            for (i, v) in bound.enumerate() {
                statement.raw_bind_parameter(i + 1, v).map_err(error)?;
            }
            let mut returned = statement.raw_query();
            while let Some(r) = returned.next().map_err(error)? {
                changed.push(r.get::<_, String>(0).map_err(error)?);
            }
        }
        Ok(changed)
    }
}

/// A NULL for the rows that pad a chunk.
static NULL: Val<'static> = Val::OptText(None);

impl Tx for Connection {
    fn dialect(&self) -> &'static Dialect {
        &DIALECT
    }

    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Val<'a>],
    ) -> BoxFuture<'a, StoreResult<u64>> {
        std::future::ready(self.run(sql, params)).boxed()
    }

    fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Val<'a>],
    ) -> BoxFuture<'a, StoreResult<Vec<Row>>> {
        std::future::ready(self.rows(sql, params)).boxed()
    }

    fn write_tables<'a>(
        &'a mut self,
        tables: &'a [TableRows<'a, 'a>],
    ) -> BoxFuture<'a, StoreResult<()>> {
        std::future::ready(self.tables(tables)).boxed()
    }

    fn update_from_values<'a>(
        &'a mut self,
        per_row: usize,
        rows: &'a [Vec<Val<'a>>],
        sql: &'a (dyn Fn(&str, &str) -> String + Sync),
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        std::future::ready(self.updates(per_row, rows, sql)).boxed()
    }
}

/// `sql` with its `$1`, `$2`, … as `?1`, `?2`, …: SQLite numbers a `$1` by where it first
/// appears, a `?1` by its number, which is what the portable SQL means.
fn numbered(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

impl ToSql for Val<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let value = match *self {
            Val::Text(s) | Val::OptText(Some(s)) => ValueRef::Text(s.as_bytes()),
            Val::Int(n) | Val::OptInt(Some(n)) => ValueRef::Integer(n),
            Val::Blob(b) | Val::OptBlob(Some(b)) => ValueRef::Blob(b),
            Val::OptText(None) | Val::OptInt(None) | Val::OptBlob(None) => ValueRef::Null,
        };
        Ok(ToSqlOutput::Borrowed(value))
    }
}

/// A rusqlite error as the store's: a unique constraint is a conflict; busy, locked,
/// read-only, I/O, full and cannot-open are the database's state (`StoreError::Unavailable`,
/// as `store::is_transient` says for sqlx's); anything else is the statement's.
fn error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::ConstraintViolation
                if matches!(
                    f.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
            {
                StoreError::Conflict
            }
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::ReadOnly
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Failed(e.to_string()),
        },
        _ => StoreError::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn numbered_parameters_keep_their_numbers() {
        assert_eq!(
            numbered("SET a = $2 WHERE b = $1 AND c = '$x'"),
            "SET a = ?2 WHERE b = ?1 AND c = '$x'"
        );
        assert_eq!(numbered("SELECT 1"), "SELECT 1");
    }
}

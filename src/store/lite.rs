//! The group-commit writer's own SQLite connection, for what it writes most: new emails and
//! delivery outcomes.
//!
//! sqlx runs each SQLite connection on a thread of its own; every statement is a hand-off to
//! that thread and back, and its `Any` driver copies every text value twice on the way. At
//! the peak intake the writer and its connection's thread took turns, and that turn-taking
//! bounded how fast Herald accepts (see ARCHITECTURE.md, "Where an email's time goes"). This
//! connection (rusqlite, over the very SQLite that sqlx bundles) runs on the writer's thread:
//! the writer binds each value where it lies and steps the prepared statements itself.
//!
//! It writes the writer's requests without an idempotency key (emails, recipients, search
//! keys, events, webhook deliveries and their rollups, after reading the suppression list for
//! their recipients in the same transaction), the delivery workers' outcomes and their claims.
//! The requests with a key stay on the pool's writer connection, which the writer holds
//! meanwhile, so no other of the store's writes is ever mid-transaction beside it. Its commits are `synchronous = NORMAL`, like the
//! writer's: the syncer flushes the log before any job is answered.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use super::bulk::{TableRows, Val, sqlite_chunks, sqlite_update_chunks};
use super::checkpoint::WRITER_AUTOCHECKPOINT;
use super::{StoreError, StoreResult};

/// Prepared statements kept (a handful of tables, four shapes each).
const STATEMENTS: usize = 64;

pub(super) struct Lite {
    conn: Connection,
}

impl Lite {
    /// Opens the database file `path` (the schema is the store's: migrations run through the
    /// pool, this connection sees them when it next prepares).
    pub(super) fn open(path: &Path) -> StoreResult<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(unavailable)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(unavailable)?;
        // The writer's settings (see `store::sqlite_pool` and `store::group_commit`).
        let settings = format!(
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA temp_store = MEMORY; {WRITER_AUTOCHECKPOINT};"
        );
        conn.execute_batch(&settings).map_err(unavailable)?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        Ok(Self { conn })
    }

    /// Runs `write` in a transaction and commits it; on an error nothing of it is kept.
    pub(super) fn transaction<T>(
        &mut self,
        write: impl FnOnce(&mut Self) -> StoreResult<T>,
    ) -> StoreResult<T> {
        // IMMEDIATE: the write lock first, so what the transaction reads before it writes
        // (the suppression list) is what its writes commit beside.
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(unavailable)?;
        let written = write(self).and_then(|t| {
            self.conn.execute_batch("COMMIT").map_err(unavailable)?;
            Ok(t)
        });
        if written.is_err() && !self.conn.is_autocommit() {
            // A failed COMMIT may leave the transaction open, as may a failed write.
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "could not roll back the writer's transaction");
            }
        }
        written
    }

    /// Inserts (or, with an `ON CONFLICT …` clause, upserts) each table's rows: the pool's
    /// padded multi-row statements (see `store::bulk`), each kept prepared here. One
    /// statement for many rows, not one per row: a statement's cursors stay where its last
    /// row left them, and the next row of an index that grows at its end is found without a
    /// walk from the root (single-row statements doubled the index comparisons).
    pub(super) fn write_tables(
        &mut self,
        tables: &[(&TableRows<'_, '_>, &str)],
    ) -> StoreResult<()> {
        for (t, on_conflict) in tables {
            for (text, values) in sqlite_chunks(t, on_conflict) {
                let text = text.trim_end().trim_end_matches(';');
                let mut statement = self.conn.prepare_cached(text).map_err(unavailable)?;
                for (i, v) in values.enumerate() {
                    statement
                        .raw_bind_parameter(i + 1, v)
                        .map_err(unavailable)?;
                }
                statement.raw_execute().map_err(unavailable)?;
            }
        }
        Ok(())
    }

    /// Runs `sql` (a statement that returns no rows) with `params` bound in order, the
    /// statement kept prepared.
    pub(super) fn execute<P: ToSql>(
        &mut self,
        sql: &str,
        params: impl IntoIterator<Item = P>,
    ) -> StoreResult<()> {
        self.select(sql, params, |_| Ok(())).map(drop)
    }

    /// The rows `sql` selects with `params` bound in order, each made by `row` (the statement
    /// kept prepared).
    pub(super) fn select<P: ToSql, T>(
        &mut self,
        sql: &str,
        params: impl IntoIterator<Item = P>,
        mut row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Vec<T>> {
        let mut statement = self.conn.prepare_cached(sql).map_err(unavailable)?;
        for (i, p) in params.into_iter().enumerate() {
            statement
                .raw_bind_parameter(i + 1, &p)
                .map_err(unavailable)?;
        }
        let mut rows = statement.raw_query();
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(unavailable)? {
            out.push(row(r).map_err(unavailable)?);
        }
        Ok(out)
    }
}

/// [`bulk::update_from_values`](super::bulk::update_from_values) on the writer's own
/// connection: the changed rows' first returned column.
pub(super) fn update_from_values(
    lite: &mut Lite,
    per_row: usize,
    rows: &[Vec<Val<'_>>],
    sql: impl Fn(&str, &str) -> String,
) -> StoreResult<Vec<String>> {
    let mut changed = Vec::new();
    for (text, values) in sqlite_update_chunks(per_row, rows, &sql) {
        changed.extend(lite.select(&text, values, |r| r.get::<_, String>(0))?);
    }
    Ok(changed)
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

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

//! Multi-row `INSERT`s: a batch of rows in one statement per table.
//!
//! Each statement sent to the database costs a round trip (for SQLite, two thread hand-offs
//! to the connection's worker thread); writing a group commit's hundred emails row by row
//! costs a thousand of them. One statement per table per batch costs a handful.

use std::fmt::Write;

use sqlx::{Any, Transaction};

use super::StoreResult;

/// One bound value.
#[derive(Debug, Clone, Copy)]
pub(super) enum Val<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    Blob(&'a [u8]),
}

/// A note on Postgres over TCP: sqlx leaves Nagle's algorithm on for its sockets, and it writes
/// a large statement in several writes, so such a statement waits for the server's delayed
/// ACK (40 ms on Linux). Measured here: a group commit's INSERT of 31 emails took 43 ms over
/// 127.0.0.1 and 1 ms over the Unix socket (accepts: 908/s against 5,341/s). Splitting
/// statements makes it worse (each one waits: 200/s with 48 KB statements); one statement per
/// table waits once per batch. Hence the README's advice: a local Postgres through its Unix
/// socket.
///
/// At most this many parameters per statement (SQLite allows 32,766, Postgres 65,535).
const MAX_PARAMS: usize = 30_000;

/// Inserts `rows` (each with one value per column of `cols`) into `table`.
pub(super) async fn insert_rows(
    tx: &mut Transaction<'static, Any>,
    table: &str,
    cols: &[&str],
    rows: &[Vec<Val<'_>>],
) -> StoreResult<()> {
    let per_row = cols.len();
    // SQLite looks a numbered parameter up by name, walking the statement's list of names:
    // quadratic in a statement of thousands. Its anonymous `?` is bound by position.
    let anonymous = tx.backend_name().eq_ignore_ascii_case("sqlite");
    for chunk in rows.chunks((MAX_PARAMS / per_row).max(1)) {
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", cols.join(", "));
        let mut n = 0;
        for (i, row) in chunk.iter().enumerate() {
            debug_assert_eq!(row.len(), per_row, "one value per column");
            sql.push_str(if i == 0 { "(" } else { ", (" });
            for c in 0..per_row {
                n += 1;
                let sep = if c == 0 { "" } else { ", " };
                let _ = if anonymous {
                    write!(sql, "{sep}?")
                } else {
                    write!(sql, "{sep}${n}")
                };
            }
            sql.push(')');
        }
        // Statements of every batch size would crowd the prepared-statement cache: these are
        // prepared, used once and dropped.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for v in chunk.iter().flatten() {
            q = match *v {
                Val::Text(s) => q.bind(s),
                Val::OptText(s) => q.bind(s),
                Val::Int(i) => q.bind(i),
                Val::OptInt(i) => q.bind(i),
                Val::Blob(b) => q.bind(b),
            };
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

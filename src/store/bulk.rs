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

/// At most this many parameters per statement (SQLite allows 32,766, Postgres 65,535).
const MAX_PARAMS: usize = 30_000;

/// At most about this many bytes of values per statement. sqlx does not turn Nagle's algorithm
/// off on its Postgres sockets: a statement that ends in a partial TCP segment behind a full
/// one waits for the server's delayed ACK (40 ms on Linux; measured: 31 emails in one INSERT
/// took 43 ms over 127.0.0.1 and 1 ms over the Unix socket). Statements that fit one loopback
/// segment (64 KiB) never wait. Over a real network, prefer a Unix socket or a nearby server.
const MAX_BYTES: usize = 48 * 1024;

/// Splits `rows` into runs of at most `max_rows` rows and about [`MAX_BYTES`] bytes.
fn chunks<'r, 'v>(rows: &'r [Vec<Val<'v>>], max_rows: usize) -> Vec<&'r [Vec<Val<'v>>]> {
    let size = |row: &Vec<Val<'_>>| -> usize {
        row.iter()
            .map(|v| match v {
                Val::Text(s) | Val::OptText(Some(s)) => s.len() + 4,
                Val::Blob(b) => b.len() + 4,
                _ => 12,
            })
            .sum()
    };
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let n = size(row);
        if i > start && (i - start >= max_rows || bytes + n > MAX_BYTES) {
            out.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

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
    for chunk in chunks(rows, (MAX_PARAMS / per_row).max(1)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_rows_and_bytes() {
        let big = "x".repeat(20_000);
        let rows: Vec<Vec<Val<'_>>> = (0..7).map(|_| vec![Val::Text(&big), Val::Int(1)]).collect();
        let sizes: Vec<usize> = chunks(&rows, 100).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [2, 2, 2, 1], "two 20 KB rows per 48 KB statement");
        let small: Vec<Vec<Val<'_>>> = (0..5).map(|_| vec![Val::Int(1)]).collect();
        let sizes: Vec<usize> = chunks(&small, 2).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let huge = "x".repeat(100_000);
        let one = vec![vec![Val::Text(&huge)]];
        assert_eq!(
            chunks(&one, 10).len(),
            1,
            "a row larger than the budget goes alone"
        );
        assert!(chunks(&[], 10).is_empty());
    }
}

//! Multi-row `INSERT`s and `UPDATE`s: a batch of rows in a few statements per table.
//!
//! Each statement sent to the database costs a round trip (for SQLite, two thread hand-offs
//! to the connection's worker thread); writing a group commit's hundred emails row by row
//! costs a thousand of them. One statement per table per batch costs a handful.
//!
//! Inserts, upserts and updates go in chunks of up to 64 rows, the last one padded with NULL
//! rows that the statement filters out (or, for an update, matches nothing), so that a
//! table's statements take a few shapes, each kept prepared: on SQLite padded to 1, 4, 16 or
//! 64 rows, every chunk of every table in one string (one hand-off, see [`push_padded`]); on
//! Postgres to a power of two, one statement per chunk (a fresh size per batch would be parsed,
//! analysed and planned each time), or, for several tables
//! of one chunk each, one statement for all of them ([`upsert_together_pg`]).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use sqlx::{Any, AnyConnection};

use super::{StoreError, StoreResult};

/// One bound value.
#[derive(Debug, Clone, Copy)]
pub(super) enum Val<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    Blob(&'a [u8]),
    OptBlob(Option<&'a [u8]>),
}

impl Val<'_> {
    /// A NULL of the same type: a padding row's value for this column (Postgres keeps a
    /// prepared statement's parameter types; SQLite does not mind).
    fn null(&self) -> Val<'static> {
        match self {
            Val::Text(_) | Val::OptText(_) => Val::OptText(None),
            Val::Int(_) | Val::OptInt(_) => Val::OptInt(None),
            Val::Blob(_) | Val::OptBlob(_) => Val::OptBlob(None),
        }
    }
}

// A note on Postgres over TCP: sqlx leaves Nagle's algorithm on for its sockets, and it writes
// a large statement in several writes, so such a statement waits for the server's delayed
// ACK (40 ms on Linux), where over the Unix socket it takes a millisecond. Splitting
// statements makes it worse (each one waits); one statement per table waits once per batch.
// Hence the guide's advice (docs/guide.md): a local Postgres through its Unix socket.

/// The largest chunk on SQLite (padded to 1, 4, 16 or 64 rows: four statements per table to
/// keep; 64 rows of the widest table, 18 columns, stay far below SQLite's 32,766 parameters).
const MAX_SQLITE_CHUNK: usize = 64;

/// Inserts `rows` (each with one value per column of `cols`) into `table`.
pub(super) async fn insert_rows(
    tx: &mut AnyConnection,
    table: &str,
    cols: &[&str],
    rows: &[Vec<Val<'_>>],
) -> StoreResult<()> {
    upsert_rows(tx, table, cols, rows, "").await
}

/// One table's rows for [`insert_tables`].
pub(super) struct TableRows<'r, 'v> {
    pub table: &'r str,
    pub cols: &'r [&'r str],
    pub rows: &'r [Vec<Val<'v>>],
}

/// Inserts rows into several tables, in order. On SQLite every statement goes in one string,
/// bound in order (sqlx numbers anonymous parameters across the statements of a string): one
/// hand-off to the connection's thread for all of them, where each statement would cost one
/// (and the single writer would spend its time waiting on hand-offs). The
/// string is kept prepared: see [`push_padded`]. On Postgres one statement for all of them
/// when each fits in a chunk ([`upsert_together_pg`]), else one statement per chunk.
pub(super) async fn insert_tables(
    tx: &mut AnyConnection,
    tables: &[TableRows<'_, '_>],
) -> StoreResult<()> {
    let tables: Vec<(&TableRows<'_, '_>, &str)> = tables.iter().map(|t| (t, "")).collect();
    write_tables(tx, &tables, &[]).await.map_err(|f| f.error)
}

/// A [`write_tables`] that failed: why, and how many of its `then` statements had completed
/// (a `COMMIT` among them may have landed before a later statement failed).
#[derive(Debug)]
pub(super) struct Partial {
    pub error: StoreError,
    pub then_done: usize,
}

/// Upserts rows into several tables (each with its `ON CONFLICT …`, or `""` to insert), in
/// order, then runs the parameterless statements `then` (the writer's `COMMIT` and the next
/// batch's `BEGIN`). On SQLite all of it is one string, one hand-off to the connection's
/// thread; on Postgres the upserts go in one statement if each table fits in a chunk (else one
/// statement per chunk) and `then` in one simple query.
pub(super) async fn write_tables(
    tx: &mut AnyConnection,
    tables: &[(&TableRows<'_, '_>, &str)],
    then: &[&str],
) -> Result<(), Partial> {
    let early = |error: StoreError| Partial {
        error,
        then_done: 0,
    };
    let (done, before) = if is_sqlite(tx) {
        let mut sql = String::new();
        let mut values = Vec::new();
        let mut before = 0;
        for (t, on_conflict) in tables {
            before += push_padded(&mut sql, &mut values, t, on_conflict);
        }
        for statement in then {
            sql.push_str(statement);
            sql.push_str(";\n");
        }
        if sql.is_empty() {
            return Ok(());
        }
        let results = sqlx::Executor::fetch_many(&mut *tx, bind_values(&sql, values, true));
        (statements_done(results).await, before)
    } else {
        let written: Vec<_> = tables.iter().filter(|(t, _)| !t.rows.is_empty()).collect();
        if written.len() > 1 && written.iter().all(|(t, _)| t.rows.len() <= MAX_PG_CHUNK) {
            upsert_together_pg(tx, &written).await.map_err(early)?;
        } else {
            for (t, on_conflict) in written {
                upsert_padded_pg(tx, t, on_conflict).await.map_err(early)?;
            }
        }
        if then.is_empty() {
            return Ok(());
        }
        let sql = then.join("; ");
        let results = sqlx::Executor::fetch_many(&mut *tx, sqlx::raw_sql(sqlx::AssertSqlSafe(sql)));
        (statements_done(results).await, 0)
    };
    done.map(drop).map_err(|(e, done)| Partial {
        error: e.into(),
        then_done: done.saturating_sub(before),
    })
}

/// Runs a string of statements to its end; how many completed, or the error and how many
/// had completed before it.
async fn statements_done(
    mut results: futures_util::stream::BoxStream<
        '_,
        Result<sqlx::Either<sqlx::any::AnyQueryResult, sqlx::any::AnyRow>, sqlx::Error>,
    >,
) -> Result<usize, (sqlx::Error, usize)> {
    use futures_util::StreamExt;
    let mut done = 0;
    while let Some(result) = results.next().await {
        match result {
            Ok(sqlx::Either::Left(_)) => done += 1,
            Ok(sqlx::Either::Right(_)) => {}
            Err(e) => return Err((e, done)),
        }
    }
    Ok(done)
}

/// `INSERT INTO t (…) SELECT * FROM (VALUES <rows>) AS v WHERE column1 IS NOT NULL
/// <on_conflict>`, the rows written by `rows`: the shape of every padded statement, on both
/// databases. Every table's first column (an id, a project) is never NULL in a real row, so
/// the padding rows are filtered out; the `WHERE` also settles SQLite's parse of
/// `SELECT … ON CONFLICT`.
///
/// On SQLite the statement is `INSERT OR FAIL`: a row that breaks a `NOT NULL`, `UNIQUE` or
/// `CHECK` constraint still fails the statement, but the rows before it are not taken back
/// by the statement itself. That spares SQLite its statement journal: for a multi-row
/// statement that may abort, it first copies every page the statement touches, so that it can
/// undo the statement alone (the foreign keys of `emails` and `recipients` are checked at
/// `COMMIT` for the same reason, as an immediate one may abort the statement too). Every caller
/// runs inside a transaction that an error rolls back whole (the writer's batch, a
/// savepoint, a `begin()` dropped on `?`), so the rows before a failure never commit.
fn push_padded_insert(
    sql: &mut String,
    t: &TableRows<'_, '_>,
    on_conflict: &str,
    sqlite: bool,
    rows: impl FnOnce(&mut String),
) {
    let _ = write!(
        sql,
        "INSERT {}INTO {} ({}) SELECT * FROM (VALUES ",
        if sqlite { "OR FAIL " } else { "" },
        t.table,
        t.cols.join(", ")
    );
    rows(sql);
    let _ = write!(sql, ") AS v WHERE column1 IS NOT NULL {on_conflict}");
}

/// A NULL for the rows that pad a chunk.
static NULL: Val<'static> = Val::OptText(None);

/// Appends the SQLite statements that insert `t`'s rows, and their values: chunks of 64 rows,
/// the last one padded up to 1, 4, 16 or 64 rows with rows of NULLs that the statement
/// filters out, so that a batch's string takes one of a few shapes and stays prepared
/// (rather than parsed afresh per batch on the writer's one thread).
fn push_padded<'a>(
    sql: &mut String,
    values: &mut Vec<&'a Val<'a>>,
    t: &TableRows<'a, 'a>,
    on_conflict: &str,
) -> usize {
    let mut statements = 0;
    for chunk in t.rows.chunks(MAX_SQLITE_CHUNK) {
        statements += 1;
        let padded = padded_len(chunk.len());
        sql.push_str(&sqlite_insert_text(t, on_conflict, padded));
        extend_padded(values, chunk, padded, t.cols.len());
    }
    statements
}

/// The text of a padded SQLite insert with its `;`, built once per shape (table, columns,
/// conflict clause, rows): the writer asks for the same few every batch, so it does not write
/// out 64 rows of placeholders each time.
fn sqlite_insert_text(t: &TableRows<'_, '_>, on_conflict: &str, padded: usize) -> Arc<str> {
    type Shapes = HashMap<(String, String, usize), Arc<str>>;
    static SHAPES: LazyLock<Mutex<Shapes>> = LazyLock::new(Mutex::default);
    let key = (
        format!("{} ({})", t.table, t.cols.join(", ")),
        on_conflict.to_owned(),
        padded,
    );
    let mut shapes = SHAPES.lock().unwrap_or_else(PoisonError::into_inner);
    let text = shapes.entry(key).or_insert_with(|| {
        let mut sql = String::new();
        push_padded_insert(&mut sql, t, on_conflict, true, |sql| {
            push_placeholders(sql, padded, t.cols.len());
        });
        sql.push_str(";\n");
        sql.into()
    });
    Arc::clone(text)
}

/// `t`'s rows as SQLite statements, a chunk each: the padded insert's text (see
/// [`push_padded`]) and its values, the padding's NULLs included.
pub(super) fn sqlite_chunks<'a>(
    t: &'a TableRows<'a, 'a>,
    on_conflict: &'a str,
) -> impl Iterator<Item = (Arc<str>, impl Iterator<Item = &'a Val<'a>>)> {
    t.rows.chunks(MAX_SQLITE_CHUNK).map(move |chunk| {
        let padded = padded_len(chunk.len());
        let values = chunk.iter().flatten().chain(std::iter::repeat_n(
            &NULL,
            (padded - chunk.len()) * t.cols.len(),
        ));
        (sqlite_insert_text(t, on_conflict, padded), values)
    })
}

/// Appends a chunk's values, then NULLs for the rows that pad it to `padded` rows.
fn extend_padded<'a>(
    values: &mut Vec<&'a Val<'a>>,
    chunk: &'a [Vec<Val<'a>>],
    padded: usize,
    cols: usize,
) {
    values.extend(chunk.iter().flatten());
    values.extend(std::iter::repeat_n(&NULL, (padded - chunk.len()) * cols));
}

/// The rows a chunk of `n` is padded to (n at most 64).
fn padded_len(n: usize) -> usize {
    [1, 4, 16, MAX_SQLITE_CHUNK]
        .into_iter()
        .find(|&size| size >= n)
        .unwrap_or(n)
}

/// `(?, …), (?, …)`: `rows` rows of `cols` anonymous placeholders.
fn push_placeholders(sql: &mut String, rows: usize, cols: usize) {
    let row = format!("({})", vec!["?"; cols].join(", "));
    sql.push_str(&vec![row; rows].join(", "));
}

/// Inserts `rows` into `table`, `on_conflict` saying what to do with a key already there
/// (`ON CONFLICT (…) DO UPDATE …`). The rows' keys must be distinct. On SQLite one hand-off
/// for all the rows (padded chunks, see [`push_padded`]); on Postgres one statement per chunk
/// of up to 64 rows ([`upsert_padded_pg`]).
pub(super) async fn upsert_rows(
    tx: &mut AnyConnection,
    table: &str,
    cols: &[&str],
    rows: &[Vec<Val<'_>>],
    on_conflict: &str,
) -> StoreResult<()> {
    let t = TableRows { table, cols, rows };
    write_tables(tx, &[(&t, on_conflict)], &[])
        .await
        .map_err(|f| f.error)
}

/// The largest chunk on Postgres, and its chunks' sizes: powers of two (a batch of 21 rows is
/// one statement of 32, 11 of them NULL rows), seven shapes per table, each kept prepared.
/// A statement of a fresh size would be parsed, analysed and planned per batch.
const MAX_PG_CHUNK: usize = 64;

/// Postgres's side of [`upsert_rows`]: one statement per chunk of up to 64 rows, padded to
/// a power of two with typed NULL rows that its `WHERE` filters out.
async fn upsert_padded_pg(
    tx: &mut AnyConnection,
    t: &TableRows<'_, '_>,
    on_conflict: &str,
) -> StoreResult<()> {
    for chunk in t.rows.chunks(MAX_PG_CHUNK) {
        let rows = padded_pg(chunk);
        let mut sql = String::new();
        push_padded_insert(&mut sql, t, on_conflict, false, |sql| {
            push_values(sql, &rows, false, true, 0);
        });
        bind_all(&sql, &rows, true).execute(&mut *tx).await?;
    }
    Ok(())
}

/// Postgres's side of [`write_tables`] for several tables of at most 64 rows each: one
/// statement, `WITH w0 AS (<insert>), w1 AS (<insert>) <insert>`, each table's padded insert
/// as [`upsert_padded_pg`] writes it: one round trip and one executor start where each table
/// cost one. Postgres runs the sub-statements on one snapshot, in no set order, none seeing
/// another's rows, which inserts of new rows need not; the foreign keys between them are
/// checked at the statement's end, with every row in. Kept prepared: its shape is the tables'
/// padded sizes, powers of two.
async fn upsert_together_pg(
    tx: &mut AnyConnection,
    tables: &[&(&TableRows<'_, '_>, &str)],
) -> StoreResult<()> {
    let padded: Vec<_> = tables.iter().map(|(t, _)| padded_pg(t.rows)).collect();
    let mut n = 0;
    let mut inserts: Vec<String> = tables
        .iter()
        .zip(&padded)
        .map(|((t, on_conflict), rows)| {
            let mut sql = String::new();
            push_padded_insert(&mut sql, t, on_conflict, false, |sql| {
                n = push_values(sql, rows, false, true, n);
            });
            sql
        })
        .collect();
    let last = inserts.pop().unwrap_or_default();
    let with: Vec<String> = inserts
        .iter()
        .enumerate()
        .map(|(i, insert)| format!("w{i} AS ({insert})"))
        .collect();
    let sql = format!("WITH {} {last}", with.join(", "));
    bind_values(&sql, padded.iter().flatten().flatten(), true)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A chunk padded to a power of two with rows of NULLs of each column's type.
fn padded_pg<'v>(chunk: &[Vec<Val<'v>>]) -> Vec<Vec<Val<'v>>> {
    let nulls: Vec<Val<'_>> = chunk[0].iter().map(Val::null).collect();
    let mut rows = chunk.to_vec();
    rows.resize(chunk.len().next_power_of_two(), nulls);
    rows
}

/// Updates rows of a table from `rows` and returns the first column of every row changed.
/// `sql(update, values)` writes the whole statement, starting with `update` (`UPDATE OR FAIL`
/// on SQLite, `UPDATE` on Postgres), around `values`, a `(VALUES …) AS v` list
/// whose columns read `v.column1`, `v.column2`, … (both databases name them so); its `WHERE`
/// must match no row on a `v.column1` of NULL, for the rows are padded like inserts: chunks
/// of up to 64, padded with NULL rows to a few sizes so that every statement stays prepared.
/// On SQLite every chunk goes in one string (one hand-off, its `RETURNING` rows read in
/// order; `OR FAIL` spares the statement journal, see [`push_padded_insert`]); on Postgres
/// one statement per chunk.
pub(super) async fn update_from_values(
    tx: &mut AnyConnection,
    per_row: usize,
    rows: &[Vec<Val<'_>>],
    sql: impl Fn(&str, &str) -> String,
) -> StoreResult<Vec<String>> {
    let mut changed = Vec::new();
    if rows.is_empty() {
        return Ok(changed);
    }
    let sqlite = is_sqlite(tx);
    let update = if sqlite { "UPDATE OR FAIL" } else { "UPDATE" };
    let list = |placeholders: &dyn Fn(&mut String)| {
        let mut values = String::from("(VALUES ");
        placeholders(&mut values);
        values.push_str(") AS v");
        sql(update, &values)
    };
    if sqlite {
        let mut text = String::new();
        let mut values = Vec::new();
        for (statement, chunk) in sqlite_update_chunks(per_row, rows, &sql) {
            text.push_str(&statement);
            text.push_str(";\n");
            values.extend(chunk);
        }
        for row in bind_values(&text, values, true).fetch_all(&mut *tx).await? {
            changed.push(sqlx::Row::try_get(&row, 0)?);
        }
        return Ok(changed);
    }
    for chunk in rows.chunks(MAX_PG_CHUNK) {
        let padded = padded_pg(chunk);
        let statement = list(&|s| {
            push_values(s, &padded, false, true, 0);
        });
        for row in bind_all(&statement, &padded, true)
            .fetch_all(&mut *tx)
            .await?
        {
            changed.push(sqlx::Row::try_get(&row, 0)?);
        }
    }
    Ok(changed)
}

/// [`update_from_values`]' SQLite statements, a chunk each: the statement's text (`UPDATE OR
/// FAIL`, the chunk's `VALUES` padded with rows of NULLs, which match nothing) and its values.
pub(super) fn sqlite_update_chunks<'a>(
    per_row: usize,
    rows: &'a [Vec<Val<'a>>],
    sql: &'a impl Fn(&str, &str) -> String,
) -> impl Iterator<Item = (String, Vec<&'a Val<'a>>)> {
    rows.chunks(MAX_SQLITE_CHUNK).map(move |chunk| {
        let padded = padded_len(chunk.len());
        let mut values = String::from("(VALUES ");
        push_placeholders(&mut values, padded, per_row);
        values.push_str(") AS v");
        let mut bound = Vec::new();
        extend_padded(&mut bound, chunk, padded, per_row);
        (sql("UPDATE OR FAIL", &values), bound)
    })
}

/// Whether `tx` is SQLite's (the writer's helpers run on either database).
pub(super) fn is_sqlite(tx: &AnyConnection) -> bool {
    tx.backend_name().eq_ignore_ascii_case("sqlite")
}

/// Appends `(…), (…)` with one placeholder per value. SQLite looks a numbered parameter up by
/// name, walking the statement's list of names: quadratic in a statement of thousands; its
/// anonymous `?` is bound by position. Postgres gets numbered parameters, `typed` ones with a
/// cast (a `VALUES` list outside an `INSERT` has no column to infer their types from),
/// numbered on from `n` (the parameters already in the statement). Returns the last number.
fn push_values(
    sql: &mut String,
    rows: &[Vec<Val<'_>>],
    anonymous: bool,
    typed: bool,
    mut n: usize,
) -> usize {
    for (i, row) in rows.iter().enumerate() {
        debug_assert_eq!(row.len(), rows[0].len(), "one value per column");
        sql.push_str(if i == 0 { "(" } else { ", (" });
        for (c, v) in row.iter().enumerate() {
            n += 1;
            let sep = if c == 0 { "" } else { ", " };
            let cast = match v {
                _ if anonymous || !typed => "",
                Val::Int(_) | Val::OptInt(_) => "::bigint",
                Val::Blob(_) | Val::OptBlob(_) => "::bytea",
                Val::Text(_) | Val::OptText(_) => "::text",
            };
            let _ = if anonymous {
                write!(sql, "{sep}?")
            } else {
                write!(sql, "{sep}${n}{cast}")
            };
        }
        sql.push(')');
    }
    n
}

/// The statement with every value bound, kept prepared if `keep` (its size is one of a few).
fn bind_all<'q>(
    sql: &str,
    rows: &'q [Vec<Val<'q>>],
    keep: bool,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    bind_values(sql, rows.iter().flatten(), keep)
}

fn bind_values<'q>(
    sql: &str,
    values: impl IntoIterator<Item = &'q Val<'q>>,
    keep: bool,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).persistent(keep);
    for v in values {
        q = match *v {
            Val::Text(s) => q.bind(s),
            Val::OptText(s) => q.bind(s),
            Val::Int(i) => q.bind(i),
            Val::OptInt(i) => q.bind(i),
            Val::Blob(b) => q.bind(b),
            Val::OptBlob(b) => q.bind(b),
        };
    }
    q
}

#[cfg(test)]
mod tests {
    use sqlx::Acquire;

    use super::{TableRows, Val, insert_tables, padded_len, update_from_values, upsert_rows};
    use sqlx::pool::PoolConnection;

    /// A connection with a temporary table `table (k TEXT PRIMARY KEY, n BIGINT NOT NULL,
    /// <more>)`, on `url`.
    async fn temp_table(url: &str, table: &str, more: &str) -> PoolConnection<sqlx::Any> {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .expect("pool");
        let mut conn = pool.acquire().await.expect("connection");
        let more = if more.is_empty() {
            String::new()
        } else {
            format!(", {more}")
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TEMP TABLE {table} (k TEXT PRIMARY KEY, n BIGINT NOT NULL{more})"
        )))
        .execute(&mut *conn)
        .await
        .expect("table");
        conn
    }

    fn postgres_url() -> String {
        std::env::var("TEST_HERALD_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// Padded chunks (SQLite: every chunk in one string; Postgres: a statement per chunk of a
    /// power-of-two size): the padding rows never land, and `ON CONFLICT` applies to every
    /// real row of every chunk.
    async fn upserts_in_padded_chunks_land_every_row_once(url: &str, table: &str) {
        let mut conn = temp_table(url, table, "b BYTEA").await;
        let keys: Vec<String> = (0..70).map(|i| format!("k{i}")).collect();
        let rows = |n: usize| -> Vec<Vec<Val<'_>>> {
            keys[..n]
                .iter()
                .map(|k| vec![Val::Text(k), Val::Int(1), Val::OptBlob(None)])
                .collect()
        };
        let add = format!("ON CONFLICT (k) DO UPDATE SET n = {table}.n + excluded.n");
        let cols = ["k", "n", "b"];
        let mut tx = conn.begin().await.expect("begin");
        // 70 rows: a chunk of 64 and one of 6 padded; then 5 of them again, then 21.
        for n in [70, 5, 21] {
            upsert_rows(&mut tx, table, &cols, &rows(n), &add)
                .await
                .expect("upsert");
        }
        tx.commit().await.expect("commit");
        let (count, total, nulls): (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*), CAST(SUM(n) AS BIGINT), CAST(COUNT(*) - COUNT(k) AS BIGINT) FROM {table}"
        )))
        .fetch_one(&mut *conn)
        .await
        .expect("counts");
        assert_eq!((count, total, nulls), (70, 96, 0));
    }

    #[tokio::test]
    async fn sqlite_upserts_in_padded_chunks_land_every_row_once() {
        upserts_in_padded_chunks_land_every_row_once("sqlite::memory:", "kv").await;
    }

    /// SQLite's inserts are `OR FAIL` (no statement journal): a row that breaks a constraint
    /// fails the statement, the rows before it stay in the transaction, and the rollback that
    /// follows any error takes them all back.
    #[tokio::test]
    async fn sqlite_a_failed_insert_leaves_nothing_once_its_transaction_rolls_back() {
        let mut conn = temp_table("sqlite::memory:", "kf", "").await;
        let keys: Vec<String> = (0..70).map(|i| format!("k{i}")).collect();
        let rows: Vec<Vec<Val<'_>>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| vec![Val::Text(k), Val::OptInt((i != 40).then_some(1))])
            .collect();
        let count = || sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM kf");
        let mut tx = conn.begin().await.expect("begin");
        let err = upsert_rows(&mut tx, "kf", &["k", "n"], &rows, "")
            .await
            .expect_err("row 40 has no n");
        assert!(err.to_string().contains("NOT NULL"), "{err}");
        assert_eq!(
            count().fetch_one(&mut *tx).await.expect("count"),
            40,
            "the rows before the bad one, until the rollback"
        );
        tx.rollback().await.expect("rollback");
        let left = count().fetch_one(&mut *conn).await.expect("count");
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn postgres_upserts_in_padded_chunks_land_every_row_once() {
        upserts_in_padded_chunks_land_every_row_once(&postgres_url(), "herald_padded_kv").await;
    }

    /// Several tables written together (Postgres: one statement, each table's insert a
    /// `WITH` of the last): every row lands in its own table with its own values, children
    /// beside the parents they refer to; a table too big for one chunk goes on its own.
    async fn tables_written_together_land_every_row(url: &str, prefix: &str) {
        let (parent, child) = (format!("{prefix}_parent"), format!("{prefix}_child"));
        let mut conn = temp_table(url, &parent, "").await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TEMP TABLE {child} (k TEXT PRIMARY KEY, n BIGINT NOT NULL, \
             parent TEXT NOT NULL REFERENCES {parent} (k))"
        )))
        .execute(&mut *conn)
        .await
        .expect("child table");
        for (parents, children) in [(3, 5), (1, 70), (2, 1)] {
            let pk: Vec<String> = (0..parents).map(|i| format!("p{parents}.{i}")).collect();
            let ck: Vec<String> = (0..children).map(|i| format!("c{children}.{i}")).collect();
            let prows: Vec<Vec<Val<'_>>> = pk
                .iter()
                .map(|k| vec![Val::Text(k), Val::Int(10)])
                .collect();
            let crows: Vec<Vec<Val<'_>>> = ck
                .iter()
                .enumerate()
                .map(|(i, k)| vec![Val::Text(k), Val::Int(1), Val::Text(&pk[i % parents])])
                .collect();
            let tables = [
                TableRows {
                    table: &parent,
                    cols: &["k", "n"],
                    rows: &prows,
                },
                TableRows {
                    table: &child,
                    cols: &["k", "n", "parent"],
                    rows: &crows,
                },
            ];
            let mut tx = conn.begin().await.expect("begin");
            insert_tables(&mut tx, &tables).await.expect("insert");
            tx.commit().await.expect("commit");
        }
        let sums = |table: String| {
            sqlx::query_as::<_, (i64, i64)>(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*), CAST(SUM(n) AS BIGINT) FROM {table}"
            )))
        };
        let p = sums(parent.clone())
            .fetch_one(&mut *conn)
            .await
            .expect("parents");
        let c = sums(child.clone())
            .fetch_one(&mut *conn)
            .await
            .expect("children");
        assert_eq!((p, c), ((6, 60), (76, 76)));
        let orphans: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {child} c WHERE NOT EXISTS \
             (SELECT 1 FROM {parent} p WHERE p.k = c.parent)"
        )))
        .fetch_one(&mut *conn)
        .await
        .expect("orphans");
        assert_eq!(orphans, 0);
    }

    #[tokio::test]
    async fn sqlite_tables_written_together_land_every_row() {
        tables_written_together_land_every_row("sqlite::memory:", "together").await;
    }

    #[tokio::test]
    async fn postgres_tables_written_together_land_every_row() {
        tables_written_together_land_every_row(&postgres_url(), "herald_together").await;
    }

    /// Padded updates (SQLite: every chunk in one string; Postgres: a statement per chunk):
    /// every real row updates its match and is returned once, the padding rows match nothing.
    async fn updates_in_padded_chunks_return_every_changed_row_once(url: &str, table: &str) {
        let mut conn = temp_table(url, table, "").await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} (k, n) SELECT 'k' || CAST(i AS TEXT), 0 \
             FROM (WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 99) \
             SELECT i FROM s) AS s"
        )))
        .execute(&mut *conn)
        .await
        .expect("rows");
        // 70 rows (a chunk of 64 and one of 6, padded), 3 of them with keys not in the table.
        let keys: Vec<String> = (0..67)
            .map(|i| format!("k{i}"))
            .chain((0..3).map(|i| format!("absent{i}")))
            .collect();
        let rows: Vec<Vec<Val<'_>>> = keys
            .iter()
            .map(|k| vec![Val::Text(k), Val::Int(7)])
            .collect();
        let mut changed = update_from_values(&mut conn, 2, &rows, |update, values| {
            format!(
                "{update} {table} SET n = {table}.n + v.column2 FROM {values} \
                 WHERE {table}.k = v.column1 RETURNING {table}.k"
            )
        })
        .await
        .expect("update");
        changed.sort();
        let mut expected: Vec<String> = keys[..67].to_vec();
        expected.sort();
        assert_eq!(changed, expected, "every present row once");
        let (updated, total): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(COUNT(*) AS BIGINT), CAST(SUM(n) AS BIGINT) FROM {table} WHERE n > 0"
        )))
        .fetch_one(&mut *conn)
        .await
        .expect("counts");
        assert_eq!((updated, total), (67, 67 * 7));
    }

    #[tokio::test]
    async fn sqlite_updates_in_padded_chunks_return_every_changed_row_once() {
        updates_in_padded_chunks_return_every_changed_row_once("sqlite::memory:", "ukv").await;
    }

    #[tokio::test]
    async fn postgres_updates_in_padded_chunks_return_every_changed_row_once() {
        updates_in_padded_chunks_return_every_changed_row_once(
            &postgres_url(),
            "herald_padded_ukv",
        )
        .await;
    }

    #[test]
    fn sqlite_insert_chunks_are_padded_to_a_few_sizes() {
        let sizes: Vec<usize> = [1, 2, 4, 5, 16, 17, 63, 64].map(padded_len).to_vec();
        assert_eq!(sizes, [1, 4, 4, 16, 16, 64, 64, 64]);
    }
}

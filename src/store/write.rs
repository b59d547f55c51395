//! What the store writes, apart from how each database writes it.
//!
//! Every write Herald makes is written once, against [`Tx`]: a transaction on the store's
//! writer (`store::writer`), whichever database is behind it. A write says *what*: rows per
//! table ([`TableRows`]), updates from a list of values ([`Tx::update_from_values`]), and
//! plain statements with bound [`Val`]ues, in the portable SQL both databases take (numbered
//! `$1` parameters, `INSERT … SELECT * FROM (VALUES …)`, `ON CONFLICT`, `RETURNING`). *How*
//! is each backend's: `store::sqlite` (rusqlite, on the writer's own thread) and
//! `store::postgres` (sqlx). The few statements that differ between them are each backend's
//! [`Dialect`].
//!
//! Multi-row statements go in chunks of up to [`CHUNK`] rows, the last one padded to one of a
//! few sizes ([`padded_len`]) with rows of NULLs that the statement filters out (or, for an
//! update, that match nothing), and every `IN (…)` list likewise ([`padded`]): a statement
//! then takes one of a few shapes, each kept prepared, where a list of every length would be
//! parsed and planned afresh per batch.

use std::fmt::Write as _;

use futures_util::future::BoxFuture;

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
    pub(super) fn null(&self) -> Val<'static> {
        match self {
            Val::Text(_) | Val::OptText(_) => Val::OptText(None),
            Val::Int(_) | Val::OptInt(_) => Val::OptInt(None),
            Val::Blob(_) | Val::OptBlob(_) => Val::OptBlob(None),
        }
    }
}

/// An owned value, for a statement handed to the writer ([`crate::store::Store`]'s
/// `execute`).
#[derive(Debug, Clone)]
pub(super) enum Owned {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Blob(Vec<u8>),
}

impl Owned {
    pub(super) fn val(&self) -> Val<'_> {
        match self {
            Owned::Text(s) => Val::Text(s),
            Owned::OptText(s) => Val::OptText(s.as_deref()),
            Owned::Int(n) => Val::Int(*n),
            Owned::OptInt(n) => Val::OptInt(*n),
            Owned::Blob(b) => Val::Blob(b),
        }
    }
}

impl From<&str> for Owned {
    fn from(s: &str) -> Self {
        Owned::Text(s.to_owned())
    }
}

impl From<String> for Owned {
    fn from(s: String) -> Self {
        Owned::Text(s)
    }
}

impl From<Vec<u8>> for Owned {
    fn from(b: Vec<u8>) -> Self {
        Owned::Blob(b)
    }
}

impl From<Option<String>> for Owned {
    fn from(s: Option<String>) -> Self {
        Owned::OptText(s)
    }
}

impl From<i64> for Owned {
    fn from(n: i64) -> Self {
        Owned::Int(n)
    }
}

/// One table's rows to insert: `on_conflict` is `""`, or the `ON CONFLICT …` clause of an
/// upsert (the rows' keys must then be distinct).
pub(super) struct TableRows<'r, 'v> {
    pub table: &'r str,
    pub cols: &'r [&'r str],
    pub rows: &'r [Vec<Val<'v>>],
    pub on_conflict: &'r str,
}

impl<'r, 'v> TableRows<'r, 'v> {
    /// Plain inserts.
    pub(super) fn insert(table: &'r str, cols: &'r [&'r str], rows: &'r [Vec<Val<'v>>]) -> Self {
        Self {
            table,
            cols,
            rows,
            on_conflict: "",
        }
    }
}

/// The statements that differ between the databases.
#[derive(Debug)]
pub(super) struct Dialect {
    /// The verb of a multi-row insert (see `store::sqlite` for why SQLite's is `OR FAIL`).
    pub insert: &'static str,
    /// The verb of a multi-row update.
    pub update: &'static str,
    /// Leases due recipients: `$1` owner, `$2` lease expiry, `$3` now, `$4` limit; returns
    /// `id, email_id, address, attempts, deadline_at, status`.
    pub claim: &'static str,
    /// Leases one endpoint's due webhook deliveries (`$5`), with the same parameters; returns
    /// their ids.
    pub webhook_claim: &'static str,
    /// The same claim returning with each delivery its event, the event's email and the
    /// endpoint (columns as `store::webhooks::loaded_claim` reads them), where the database
    /// can say it in one statement: one round trip to the writer's connection instead of
    /// three, which is what a claim costs on Postgres with many lanes.
    pub webhook_claim_loaded: Option<&'static str>,
    /// Whether the claim leaves scheduled recipients scheduled, for a second statement to
    /// make queued (see `store::sqlite`).
    pub claim_leaves_scheduled: bool,
    /// The column a search grouped by email orders by (`store::emails`).
    pub grouped_email_id: &'static str,
    /// Follows `FROM events` where an email's events are read: the index by email, which a
    /// planner without statistics passes over for the one by project (a million rows).
    pub events_by_email: &'static str,
}

/// A write transaction on the store's writer. Its futures are boxed so that a write can be
/// handed to the writer as a closure over `&mut dyn Tx` (see `Store::write`).
pub(super) trait Tx: Send {
    fn dialect(&self) -> &'static Dialect;

    /// Runs a statement with `params` bound to `$1`, `$2`, …; how many rows it changed.
    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Val<'a>],
    ) -> BoxFuture<'a, StoreResult<u64>>;

    /// The rows a statement returns.
    fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Val<'a>],
    ) -> BoxFuture<'a, StoreResult<Vec<Row>>>;

    /// Inserts (or upserts) each table's rows, in order: padded chunks of multi-row
    /// statements (a statement per table per chunk, not per row).
    fn write_tables<'a>(
        &'a mut self,
        tables: &'a [TableRows<'a, 'a>],
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// Updates rows from `rows` (each `per_row` values) and returns the first column of every
    /// row changed. `sql(update, values)` writes the statement, starting with `update` (the
    /// dialect's verb), around `values`, a `(VALUES …) AS v` list whose columns read
    /// `v.column1`, `v.column2`, …; its `WHERE` must match no row on a `v.column1` of NULL
    /// (the padding rows).
    fn update_from_values<'a>(
        &'a mut self,
        per_row: usize,
        rows: &'a [Vec<Val<'a>>],
        sql: &'a (dyn Fn(&str, &str) -> String + Sync),
    ) -> BoxFuture<'a, StoreResult<Vec<String>>>;
}

/// One row a statement returned.
pub(super) enum Row {
    Sqlite(Vec<rusqlite::types::Value>),
    Postgres(sqlx::any::AnyRow),
}

impl Row {
    /// Column `i` (from 0) as `T`; a value of another type is a corrupt row.
    pub(super) fn get<T: Column>(&self, i: usize) -> StoreResult<T> {
        match self {
            Row::Sqlite(values) => values
                .get(i)
                .and_then(T::from_sqlite)
                .ok_or_else(|| StoreError::Corrupt(format!("column {i} is not a {}", T::NAME))),
            Row::Postgres(row) => Ok(sqlx::Row::try_get(row, i)?),
        }
    }
}

/// A type a column is read as.
pub(super) trait Column:
    for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>
{
    const NAME: &'static str;
    fn from_sqlite(v: &rusqlite::types::Value) -> Option<Self>;
}

impl Column for String {
    const NAME: &'static str = "text";
    fn from_sqlite(v: &rusqlite::types::Value) -> Option<Self> {
        match v {
            rusqlite::types::Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl Column for i64 {
    const NAME: &'static str = "integer";
    fn from_sqlite(v: &rusqlite::types::Value) -> Option<Self> {
        match v {
            rusqlite::types::Value::Integer(n) => Some(*n),
            _ => None,
        }
    }
}

impl Column for Vec<u8> {
    const NAME: &'static str = "blob";
    fn from_sqlite(v: &rusqlite::types::Value) -> Option<Self> {
        match v {
            rusqlite::types::Value::Blob(b) => Some(b.clone()),
            _ => None,
        }
    }
}

impl<T: Column> Column for Option<T> {
    const NAME: &'static str = T::NAME;
    fn from_sqlite(v: &rusqlite::types::Value) -> Option<Self> {
        match v {
            rusqlite::types::Value::Null => Some(None),
            v => T::from_sqlite(v).map(Some),
        }
    }
}

/// The most rows of one multi-row statement (64 rows of the widest table, 18 columns, stay
/// far below SQLite's 32,766 parameters).
pub(super) const CHUNK: usize = 64;

/// The size a list of `n` rows or values is padded to: 1, 4, 16 or 64, then whole chunks.
/// Four shapes per statement below a chunk, each kept prepared.
pub(super) fn padded_len(n: usize) -> usize {
    match n {
        0 | 1 => 1,
        2..=4 => 4,
        5..=16 => 16,
        _ => n.div_ceil(CHUNK) * CHUNK,
    }
}

/// An `IN (…)` list's values padded to [`padded_len`] by repeating the last one (a repeat
/// matches nothing new). Every caller has at least one value: an empty list would leave its
/// placeholders unbound.
pub(super) fn padded<T: Copy>(items: &[T]) -> impl Iterator<Item = T> + '_ {
    let pad = padded_len(items.len()) - items.len();
    let last = items.last().copied();
    items
        .iter()
        .copied()
        .chain(std::iter::repeat_n(last, pad).flatten())
}

/// `$first, $first+1, …` placeholders for an `IN (…)` list of `n` values.
pub(super) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`placeholders`] from `$first` for a list of `n` values bound through [`padded`].
pub(super) fn padded_placeholders(first: usize, n: usize) -> String {
    placeholders(first, padded_len(n))
}

/// `values` as `Val::Text`s (an `IN` list's values, after the statement's first ones).
pub(super) fn texts<'a>(first: &[Val<'a>], values: impl Iterator<Item = &'a str>) -> Vec<Val<'a>> {
    first.iter().copied().chain(values.map(Val::Text)).collect()
}

/// `<insert> INTO t (…) SELECT * FROM (VALUES <rows>) AS v WHERE column1 IS NOT NULL
/// <on_conflict>`, the rows written by `rows`: the shape of every multi-row insert, on both
/// databases. Every table's first column (an id, a project) is never NULL in a real row, so
/// the padding rows are filtered out; the `WHERE` also settles SQLite's parse of
/// `SELECT … ON CONFLICT`.
pub(super) fn padded_insert(
    insert: &str,
    t: &TableRows<'_, '_>,
    rows: impl FnOnce(&mut String),
) -> String {
    let mut sql = String::new();
    let _ = write!(
        sql,
        "{insert} INTO {} ({}) SELECT * FROM (VALUES ",
        t.table,
        t.cols.join(", ")
    );
    rows(&mut sql);
    let _ = write!(sql, ") AS v WHERE column1 IS NOT NULL {}", t.on_conflict);
    sql
}

/// A chunk's rows, then rows of NULLs (of each column's type) up to `padded` rows.
pub(super) fn padded_values<'a>(
    chunk: &'a [Vec<Val<'a>>],
    padded: usize,
) -> impl Iterator<Item = Val<'a>> + 'a {
    let nulls: Vec<Val<'static>> = chunk
        .first()
        .map(|row| row.iter().map(Val::null).collect())
        .unwrap_or_default();
    let pad = padded.saturating_sub(chunk.len());
    chunk
        .iter()
        .flatten()
        .copied()
        .chain((0..pad).flat_map(move |_| nulls.clone()))
}

#[cfg(test)]
mod tests {
    use super::{TableRows, Tx, Val, padded, padded_len};
    use crate::store::StoreResult;

    #[test]
    fn lists_are_padded_to_a_few_sizes() {
        let sizes: Vec<usize> = [1, 2, 4, 5, 16, 17, 63, 64, 65, 130]
            .map(padded_len)
            .to_vec();
        assert_eq!(sizes, [1, 4, 4, 16, 16, 64, 64, 64, 128, 192]);
    }

    #[test]
    fn padding_repeats_the_last_value() {
        let got: Vec<i32> = padded(&[1, 2, 3, 4, 5]).collect();
        assert_eq!(got.len(), 16);
        assert!(got[4..].iter().all(|&v| v == 5));
    }

    /// A backend's writer transaction on a database with the tables `<p>_parent (k TEXT
    /// PRIMARY KEY, n BIGINT NOT NULL)` and `<p>_child (…, parent REFERENCES <p>_parent)`.
    enum Backend {
        Sqlite {
            conn: crate::store::sqlite::Connection,
            _dir: tempfile::TempDir,
        },
        Postgres(sqlx::pool::PoolConnection<sqlx::Any>),
    }

    impl Backend {
        async fn sqlite() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("t.db");
            rusqlite::Connection::open(&path).expect("create");
            let conn = crate::store::sqlite::Connection::open(&path).expect("open");
            Self::Sqlite { conn, _dir: dir }
        }

        /// The shared Postgres, or None (with a line saying so) where there is none.
        async fn postgres() -> Option<Self> {
            sqlx::any::install_default_drivers();
            let url = std::env::var("TEST_HERALD_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            match sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
            {
                Ok(pool) => Some(Self::Postgres(pool.acquire().await.expect("connection"))),
                Err(e) if std::env::var_os("TEST_HERALD_REQUIRE_POSTGRES").is_none() => {
                    eprintln!("skipped: no Postgres at {url} ({e})");
                    None
                }
                Err(e) => panic!("no Postgres at {url}: {e}"),
            }
        }

        fn tx(&mut self) -> &mut dyn Tx {
            match self {
                Self::Sqlite { conn, .. } => conn,
                Self::Postgres(conn) => &mut **conn,
            }
        }

        /// Begins a transaction with the two tables in it (temporary on Postgres, whose
        /// database is shared).
        async fn begin(&mut self, prefix: &str) {
            let temp = matches!(self, Self::Postgres(_));
            let tx = self.tx();
            tx.execute("BEGIN", &[]).await.expect("begin");
            let temp = if temp { "TEMP " } else { "" };
            for sql in [
                format!(
                    "CREATE {temp}TABLE {prefix}_parent (k TEXT PRIMARY KEY, n BIGINT NOT NULL)"
                ),
                format!(
                    "CREATE {temp}TABLE {prefix}_child (k TEXT PRIMARY KEY, n BIGINT NOT NULL, \
                     parent TEXT NOT NULL REFERENCES {prefix}_parent (k))"
                ),
            ] {
                tx.execute(&sql, &[]).await.expect("table");
            }
        }

        async fn sums(&mut self, table: &str) -> (i64, i64) {
            let sql = format!("SELECT COUNT(*), CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM {table}");
            let rows = self.tx().query(&sql, &[]).await.expect("sums");
            (rows[0].get(0).expect("count"), rows[0].get(1).expect("sum"))
        }
    }

    fn keys(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    /// Padded chunks (70 rows: a chunk of 64 and one of 6 padded to 16; then 5, then 21): the
    /// padding rows never land, and `ON CONFLICT` applies to every real row of every chunk.
    async fn upserts_land_every_row_once(mut db: Backend, prefix: &str) {
        db.begin(prefix).await;
        let table = format!("{prefix}_parent");
        let keys = keys("k", 70);
        let add = format!("ON CONFLICT (k) DO UPDATE SET n = {table}.n + excluded.n");
        for n in [70, 5, 21] {
            let rows: Vec<Vec<Val<'_>>> = keys[..n]
                .iter()
                .map(|k| vec![Val::Text(k), Val::Int(1)])
                .collect();
            let t = TableRows {
                table: &table,
                cols: &["k", "n"],
                rows: &rows,
                on_conflict: &add,
            };
            db.tx().write_tables(&[t]).await.expect("upsert");
        }
        assert_eq!(db.sums(&table).await, (70, 96));
    }

    /// Several tables written together (Postgres: one statement, each table's insert a `WITH`
    /// of the last): every row lands in its own table, children beside the parents they
    /// refer to; a table too big for one chunk goes on its own.
    async fn tables_written_together_land_every_row(mut db: Backend, prefix: &str) {
        db.begin(prefix).await;
        let (parent, child) = (format!("{prefix}_parent"), format!("{prefix}_child"));
        for (parents, children) in [(3, 5), (1, 70), (2, 1)] {
            let pk = keys(&format!("p{parents}."), parents);
            let ck = keys(&format!("c{children}."), children);
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
                TableRows::insert(&parent, &["k", "n"], &prows),
                TableRows::insert(&child, &["k", "n", "parent"], &crows),
            ];
            db.tx().write_tables(&tables).await.expect("insert");
        }
        assert_eq!(db.sums(&parent).await, (6, 60));
        assert_eq!(db.sums(&child).await, (76, 76));
    }

    /// Padded updates: every real row updates its match and is returned once; the padding
    /// rows match nothing.
    async fn updates_return_every_changed_row_once(mut db: Backend, prefix: &str) {
        db.begin(prefix).await;
        let table = format!("{prefix}_parent");
        let present = keys("k", 100);
        let rows: Vec<Vec<Val<'_>>> = present
            .iter()
            .map(|k| vec![Val::Text(k), Val::Int(0)])
            .collect();
        db.tx()
            .write_tables(&[TableRows::insert(&table, &["k", "n"], &rows)])
            .await
            .expect("rows");
        // 70 rows (a chunk of 64 and one of 6, padded), 3 of them with keys not in the table.
        let wanted: Vec<String> = keys("k", 67).into_iter().chain(keys("absent", 3)).collect();
        let rows: Vec<Vec<Val<'_>>> = wanted
            .iter()
            .map(|k| vec![Val::Text(k), Val::Int(7)])
            .collect();
        let sql = |update: &str, values: &str| {
            format!(
                "{update} {table} SET n = {table}.n + v.column2 FROM {values} \
                 WHERE {table}.k = v.column1 RETURNING {table}.k"
            )
        };
        let mut changed = db
            .tx()
            .update_from_values(2, &rows, &sql)
            .await
            .expect("update");
        changed.sort();
        let mut expected = keys("k", 67);
        expected.sort();
        assert_eq!(changed, expected, "every present row once");
        let sums: StoreResult<Vec<_>> = db
            .tx()
            .query(
                &format!("SELECT COUNT(*), CAST(SUM(n) AS BIGINT) FROM {table} WHERE n > 0"),
                &[],
            )
            .await;
        let sums = sums.expect("sums");
        let got: (i64, i64) = (sums[0].get(0).expect("n"), sums[0].get(1).expect("sum"));
        assert_eq!(got, (67, 67 * 7));
    }

    #[tokio::test]
    async fn sqlite_upserts_land_every_row_once() {
        upserts_land_every_row_once(Backend::sqlite().await, "u").await;
    }

    #[tokio::test]
    async fn postgres_upserts_land_every_row_once() {
        if let Some(db) = Backend::postgres().await {
            upserts_land_every_row_once(db, "herald_u").await;
        }
    }

    #[tokio::test]
    async fn sqlite_tables_written_together_land_every_row() {
        tables_written_together_land_every_row(Backend::sqlite().await, "t").await;
    }

    #[tokio::test]
    async fn postgres_tables_written_together_land_every_row() {
        if let Some(db) = Backend::postgres().await {
            tables_written_together_land_every_row(db, "herald_t").await;
        }
    }

    #[tokio::test]
    async fn sqlite_updates_return_every_changed_row_once() {
        updates_return_every_changed_row_once(Backend::sqlite().await, "v").await;
    }

    #[tokio::test]
    async fn postgres_updates_return_every_changed_row_once() {
        if let Some(db) = Backend::postgres().await {
            updates_return_every_changed_row_once(db, "herald_v").await;
        }
    }

    /// SQLite's inserts are `OR FAIL` (no statement journal): a row that breaks a constraint
    /// fails the statement, the rows before it stay in the transaction, and the rollback that
    /// follows any error takes them all back.
    #[tokio::test]
    async fn sqlite_a_failed_insert_leaves_nothing_once_rolled_back() {
        let mut db = Backend::sqlite().await;
        db.begin("f").await;
        db.tx().execute("COMMIT", &[]).await.expect("tables");
        db.tx().execute("BEGIN", &[]).await.expect("begin");
        let keys = keys("k", 70);
        let rows: Vec<Vec<Val<'_>>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| vec![Val::Text(k), Val::OptInt((i != 40).then_some(1))])
            .collect();
        let err = db
            .tx()
            .write_tables(&[TableRows::insert("f_parent", &["k", "n"], &rows)])
            .await
            .expect_err("row 40 has no n");
        assert!(err.to_string().contains("NOT NULL"), "{err}");
        assert_eq!(
            db.sums("f_parent").await.0,
            40,
            "the rows before the bad one"
        );
        db.tx().execute("ROLLBACK", &[]).await.expect("rollback");
        assert_eq!(db.sums("f_parent").await.0, 0);
    }
}

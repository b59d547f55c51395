//! Postgres: how the writer's transactions write, and the dialect.
//!
//! The writer's transactions run on connections of sqlx's pool ([`Tx`] for its
//! `AnyConnection`). Each statement is a round trip: a batch's rows go in one padded
//! statement per table, or, when every table fits in a chunk, one statement for all of them
//! (`WITH w0 AS (<insert>), … <insert>`).
//!
//! sqlx leaves Nagle's algorithm on for its sockets, and it writes a large statement in
//! several writes, so such a statement waits for the server's delayed ACK (40 ms on Linux)
//! over TCP, where over the Unix socket it takes a millisecond. Hence the guide's advice
//! (docs/guide.md): a local Postgres through its Unix socket.

use futures_util::future::{BoxFuture, FutureExt as _};
use sqlx::{Any, AnyConnection};

use super::StoreResult;
use super::write::{CHUNK, Dialect, Row, TableRows, Tx, Val, padded_insert, padded_len};

/// The webhook claim, alone and inside the claim that returns what its requests need.
macro_rules! webhook_claim {
    () => {
        "UPDATE webhook_deliveries SET lease_owner = $1, lease_expires_at = $2, \
         next_attempt_at = $2 WHERE id IN (SELECT id FROM webhook_deliveries \
         WHERE endpoint_id = $5 AND status = 'pending' AND next_attempt_at <= $3 \
         ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING id, attempts, event_id"
    };
}

pub(super) static DIALECT: Dialect = Dialect {
    insert: "INSERT",
    update: "UPDATE",
    claim: CLAIM,
    webhook_claim: webhook_claim!(),
    webhook_claim_loaded: Some(concat!(
        "WITH c AS (",
        webhook_claim!(),
        ") SELECT c.id, c.attempts, c.event_id, e.id, e.type, e.data, e.created_at, e.recipient, \
         m.id, m.message_id, m.stream, m.from_email, m.from_name, m.subject, m.tags, m.metadata, \
         m.created_at, w.url, w.secret, w.previous_secret, w.previous_secret_expires_at, w.status \
         FROM c LEFT JOIN events e ON e.id = c.event_id LEFT JOIN emails m ON m.id = e.email_id \
         LEFT JOIN webhook_endpoints w ON w.id = $5",
    )),
    claim_leaves_scheduled: false,
    // Postgres wants the grouped table's primary key to select its other columns.
    grouped_email_id: "e.id",
    // Postgres's statistics find the index by email.
    events_by_email: "",
};

/// The claim: `SKIP LOCKED`, so that writers (and processes) sharing the database each take
/// recipients no other is taking.
const CLAIM: &str = concat!(
    "UPDATE recipients SET lease_owner = $1, lease_expires_at = $2, \
     next_attempt_at = $2, status = CASE WHEN status = 'scheduled' THEN 'queued' ELSE status END \
     WHERE id IN (SELECT id FROM recipients \
       WHERE ",
    pending!(),
    " AND next_attempt_at <= $3 \
       ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING id, email_id, address, attempts, deadline_at, status"
);

impl Tx for AnyConnection {
    fn dialect(&self) -> &'static Dialect {
        &DIALECT
    }

    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Val<'a>],
    ) -> BoxFuture<'a, StoreResult<u64>> {
        async move {
            let done = bind(sql, params.iter().copied()).execute(self).await?;
            Ok(done.rows_affected())
        }
        .boxed()
    }

    fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Val<'a>],
    ) -> BoxFuture<'a, StoreResult<Vec<Row>>> {
        async move {
            let rows = bind(sql, params.iter().copied()).fetch_all(self).await?;
            Ok(rows.into_iter().map(Row::Postgres).collect())
        }
        .boxed()
    }

    fn write_tables<'a>(
        &'a mut self,
        tables: &'a [TableRows<'a, 'a>],
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let written: Vec<_> = tables.iter().filter(|t| !t.rows.is_empty()).collect();
            if written.len() > 1 && written.iter().all(|t| t.rows.len() <= CHUNK) {
                return together(self, &written).await;
            }
            for t in written {
                for chunk in t.rows.chunks(CHUNK) {
                    let padded = padded_len(chunk.len());
                    let sql = padded_insert(DIALECT.insert, t, |sql| {
                        push_values(sql, chunk, padded, 0);
                    });
                    bind(&sql, super::write::padded_values(chunk, padded))
                        .execute(&mut *self)
                        .await?;
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn update_from_values<'a>(
        &'a mut self,
        per_row: usize,
        rows: &'a [Vec<Val<'a>>],
        sql: &'a (dyn Fn(&str, &str) -> String + Sync),
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        async move {
            let mut changed = Vec::new();
            for chunk in rows.chunks(CHUNK) {
                debug_assert!(chunk.iter().all(|r| r.len() == per_row));
                let padded = padded_len(chunk.len());
                let mut values = String::from("(VALUES ");
                push_values(&mut values, chunk, padded, 0);
                values.push_str(") AS v");
                let statement = sql(DIALECT.update, &values);
                for row in bind(&statement, super::write::padded_values(chunk, padded))
                    .fetch_all(&mut *self)
                    .await?
                {
                    changed.push(sqlx::Row::try_get(&row, 0)?);
                }
            }
            Ok(changed)
        }
        .boxed()
    }
}

/// Several tables of at most a chunk each in one statement, `WITH w0 AS (<insert>), w1 AS
/// (<insert>) <insert>`: one round trip and one executor start where each table cost one.
/// Postgres runs the sub-statements on one snapshot, in no set order, none seeing another's
/// rows, which inserts of new rows need not; the foreign keys between them are checked at the
/// statement's end, with every row in.
async fn together(tx: &mut AnyConnection, tables: &[&TableRows<'_, '_>]) -> StoreResult<()> {
    let mut n = 0;
    let mut inserts: Vec<String> = tables
        .iter()
        .map(|t| {
            let padded = padded_len(t.rows.len());
            padded_insert(DIALECT.insert, t, |sql| {
                n = push_values(sql, t.rows, padded, n);
            })
        })
        .collect();
    let last = inserts.pop().unwrap_or_default();
    let with: Vec<String> = inserts
        .iter()
        .enumerate()
        .map(|(i, insert)| format!("w{i} AS ({insert})"))
        .collect();
    let sql = format!("WITH {} {last}", with.join(", "));
    let values = tables
        .iter()
        .flat_map(|t| super::write::padded_values(t.rows, padded_len(t.rows.len())));
    bind(&sql, values).execute(&mut *tx).await?;
    Ok(())
}

/// Appends `(…), (…)`: `padded` rows of `rows[0]`'s width, numbered on from `$n+1` (the
/// parameters already in the statement), each with a cast (a `VALUES` list outside an
/// `INSERT` has no column to infer its types from). Returns the last number.
fn push_values(sql: &mut String, rows: &[Vec<Val<'_>>], padded: usize, mut n: usize) -> usize {
    use std::fmt::Write as _;
    let Some(first) = rows.first() else {
        return n;
    };
    for i in 0..padded {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        for (c, v) in first.iter().enumerate() {
            n += 1;
            let sep = if c == 0 { "" } else { ", " };
            let cast = match v {
                Val::Int(_) | Val::OptInt(_) => "::bigint",
                Val::Blob(_) | Val::OptBlob(_) => "::bytea",
                Val::Text(_) | Val::OptText(_) => "::text",
            };
            let _ = write!(sql, "{sep}${n}{cast}");
        }
        sql.push(')');
    }
    n
}

/// The statement with `values` bound in order, kept prepared (its text is one of a few).
fn bind<'q>(
    sql: &str,
    values: impl IntoIterator<Item = Val<'q>>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for v in values {
        q = match v {
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

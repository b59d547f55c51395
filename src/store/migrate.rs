//! Embedded, per-dialect migrations (`migrations/sqlite`, `migrations/postgres`), applied in
//! order, each in its own transaction, and recorded in `herald_migrations`. On Postgres an
//! advisory lock serialises Herald processes that start together.

use sqlx::Row;

use super::{Backend, Store, StoreResult};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "core",
        sqlite: include_str!("../../migrations/sqlite/0001_core.sql"),
        postgres: include_str!("../../migrations/postgres/0001_core.sql"),
    },
    Migration {
        version: 2,
        name: "webhooks",
        sqlite: include_str!("../../migrations/sqlite/0002_webhooks.sql"),
        postgres: include_str!("../../migrations/postgres/0002_webhooks.sql"),
    },
    Migration {
        version: 3,
        name: "domains",
        sqlite: include_str!("../../migrations/sqlite/0003_domains.sql"),
        postgres: include_str!("../../migrations/postgres/0003_domains.sql"),
    },
    Migration {
        version: 4,
        name: "suppressions",
        sqlite: include_str!("../../migrations/sqlite/0004_suppressions.sql"),
        postgres: include_str!("../../migrations/postgres/0004_suppressions.sql"),
    },
    Migration {
        version: 5,
        name: "inbound",
        sqlite: include_str!("../../migrations/sqlite/0005_inbound.sql"),
        postgres: include_str!("../../migrations/postgres/0005_inbound.sql"),
    },
    Migration {
        version: 6,
        name: "search",
        sqlite: include_str!("../../migrations/sqlite/0006_search.sql"),
        postgres: include_str!("../../migrations/postgres/0006_search.sql"),
    },
    Migration {
        version: 7,
        name: "stats",
        sqlite: include_str!("../../migrations/sqlite/0007_stats.sql"),
        postgres: include_str!("../../migrations/postgres/0007_stats.sql"),
    },
    Migration {
        version: 8,
        name: "search_retention",
        sqlite: include_str!("../../migrations/sqlite/0008_search_retention.sql"),
        postgres: include_str!("../../migrations/postgres/0008_search_retention.sql"),
    },
    Migration {
        version: 9,
        name: "body_compression",
        sqlite: include_str!("../../migrations/sqlite/0009_body_compression.sql"),
        postgres: include_str!("../../migrations/postgres/0009_body_compression.sql"),
    },
];

/// An arbitrary constant: the advisory lock id Herald's migrations hold on Postgres.
const PG_MIGRATION_LOCK: i64 = 0x4845_5241_4c44;

pub(super) async fn run(store: &Store) -> StoreResult<Vec<String>> {
    let mut tx = store.write.begin().await?;
    if store.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS herald_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM herald_migrations")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()?;
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let sql = match store.backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO herald_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(&mut *tx)
        .await?;
        done.push(format!("{:04}_{}", m.version, m.name));
    }
    tx.commit().await?;
    Ok(done)
}

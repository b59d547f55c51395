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
    Migration {
        version: 10,
        name: "deferred_keys",
        sqlite: include_str!("../../migrations/sqlite/0010_deferred_keys.sql"),
        postgres: include_str!("../../migrations/postgres/0010_deferred_keys.sql"),
    },
    Migration {
        version: 11,
        name: "fewer_btrees",
        sqlite: include_str!("../../migrations/sqlite/0011_fewer_btrees.sql"),
        postgres: include_str!("../../migrations/postgres/0011_fewer_btrees.sql"),
    },
    Migration {
        version: 12,
        name: "due_index_predicate",
        sqlite: include_str!("../../migrations/sqlite/0012_due_index_predicate.sql"),
        postgres: include_str!("../../migrations/postgres/0012_due_index_predicate.sql"),
    },
    Migration {
        version: 13,
        name: "inbound_effects",
        sqlite: include_str!("../../migrations/sqlite/0013_inbound_effects.sql"),
        postgres: include_str!("../../migrations/postgres/0013_inbound_effects.sql"),
    },
    Migration {
        version: 14,
        name: "webhook_lanes",
        sqlite: include_str!("../../migrations/sqlite/0014_webhook_lanes.sql"),
        postgres: include_str!("../../migrations/postgres/0014_webhook_lanes.sql"),
    },
    Migration {
        version: 15,
        name: "console",
        sqlite: include_str!("../../migrations/sqlite/0015_console.sql"),
        postgres: include_str!("../../migrations/postgres/0015_console.sql"),
    },
    Migration {
        version: 16,
        name: "submission",
        sqlite: include_str!("../../migrations/sqlite/0016_submission.sql"),
        postgres: include_str!("../../migrations/postgres/0016_submission.sql"),
    },
];

/// An arbitrary constant: the advisory lock id Herald's migrations hold on Postgres.
const PG_MIGRATION_LOCK: i64 = 0x4845_5241_4c44;

pub(super) async fn run(store: &Store) -> StoreResult<Vec<String>> {
    let mut tx = store.pool.begin().await?;
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

#[cfg(test)]
mod tests {
    use sqlx::{AnyConnection, Connection, Executor, Row};

    use super::MIGRATIONS;

    async fn apply(conn: &mut AnyConnection, version: i64) {
        let m = MIGRATIONS
            .iter()
            .find(|m| m.version == version)
            .expect("the migration");
        conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(m.sqlite)))
            .await
            .expect("applied");
    }

    /// Every row of `table` as text, in id order.
    async fn rows(conn: &mut AnyConnection, table: &str, cols: &str) -> Vec<String> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {cols} FROM {table} ORDER BY id"
        )))
        .fetch_all(conn)
        .await
        .expect("rows")
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.try_get::<Option<String>, _>(i)
                        .or_else(|_| {
                            r.try_get::<Option<i64>, _>(i)
                                .map(|v| v.map(|v| v.to_string()))
                        })
                        .or_else(|_| {
                            r.try_get::<Option<Vec<u8>>, _>(i)
                                .map(|v| v.map(|v| format!("{v:?}")))
                        })
                        .expect("a value")
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
    }

    async fn schema(conn: &mut AnyConnection) -> Vec<String> {
        sqlx::query_scalar::<_, String>(
            "SELECT type || ' ' || name || ' on ' || tbl_name || ': ' || \
             CASE type WHEN 'index' THEN COALESCE(sql, 'automatic') ELSE 'its columns' END \
             FROM sqlite_schema WHERE tbl_name IN ('emails', 'recipients') ORDER BY name",
        )
        .fetch_all(conn)
        .await
        .expect("schema")
    }

    /// Migration 10 rebuilds emails and recipients with deferred foreign keys: every row,
    /// column and index is kept, and a broken key fails the COMMIT instead of the statement.
    #[tokio::test]
    async fn sqlite_deferred_keys_keep_every_row_and_index_and_check_at_commit() {
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect("sqlite::memory:")
            .await
            .expect("connection");
        conn.execute("PRAGMA foreign_keys = ON")
            .await
            .expect("keys on");
        for version in 1..=9 {
            apply(&mut conn, version).await;
        }
        conn.execute(
            "INSERT INTO projects (id, name, created_at) VALUES ('p1', 'one', 1);
             INSERT INTO emails (id, project_id, api_key_id, message_id, stream, from_email,
                 from_name, reply_to, subject, tags, metadata, text_body, html_body, mime,
                 mime_size, created_at, scheduled_at, expires_at, content_purged_at)
             VALUES ('e1', 'p1', 'k1', '<m1@x>', 'transactional', 'a@x', 'A', '[]', 'Hi',
                 '[\"t\"]', '{}', 'text', NULL, X'0102', 2, 10, NULL, 99, NULL),
                ('e2', 'p1', NULL, '<m2@x>', 'broadcast', 'b@x', NULL, '[]', 'Yo', '[]',
                 '{\"k\":\"v\"}', NULL, '<p>h</p>', NULL, 0, 11, 12, NULL, 13);
             INSERT INTO recipients (id, email_id, project_id, position, address, name, kind,
                 status, attempts, next_attempt_at, deadline_at, lease_owner,
                 lease_expires_at, smtp_code, smtp_enhanced, smtp_response, smtp_phase,
                 bounce_type, bounce_sub_type, sent_at, last_event_at)
             VALUES ('r1', 'e1', 'p1', 0, 'c@y', 'C', 'to', 'queued', 0, 5, 6, 'w', 7, NULL,
                 NULL, NULL, NULL, NULL, NULL, NULL, 8),
                ('r2', 'e2', 'p1', 1, 'd@y', NULL, 'cc', 'bounced', 2, 5, 6, NULL, NULL, 550,
                 '5.1.1', 'no such user', 'rcpt', 'hard', 'general', 9, 10);",
        )
        .await
        .expect("rows before");
        let email_cols = "id, project_id, api_key_id, message_id, stream, from_email, from_name, \
             reply_to, subject, tags, metadata, text_body, html_body, mime, mime_size, \
             created_at, scheduled_at, expires_at, content_purged_at";
        let recipient_cols = "*";
        let emails = rows(&mut conn, "emails", email_cols).await;
        let recipients = rows(&mut conn, "recipients", recipient_cols).await;
        let before = schema(&mut conn).await;

        let mut tx = conn.begin().await.expect("begin");
        apply(&mut tx, 10).await;
        tx.commit().await.expect("migration 10 commits");

        assert_eq!(rows(&mut conn, "emails", email_cols).await, emails);
        assert_eq!(
            rows(&mut conn, "recipients", recipient_cols).await,
            recipients
        );
        assert_eq!(
            schema(&mut conn).await,
            before,
            "the same tables and indexes"
        );
        let check: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&mut conn)
            .await
            .expect("integrity check");
        assert_eq!(check, ["ok"]);

        // A recipient of no email: the statement passes, the COMMIT does not.
        let mut tx = conn.begin().await.expect("begin");
        tx.execute(
            "INSERT INTO recipients (id, email_id, project_id, position, address, kind, status,
                 next_attempt_at, deadline_at, last_event_at)
             VALUES ('r3', 'nope', 'p1', 0, 'e@y', 'to', 'queued', 1, 2, 3)",
        )
        .await
        .expect("checked at commit, not now");
        let err = tx
            .commit()
            .await
            .expect_err("a broken key fails the commit");
        assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
        // And an email of no project likewise.
        let mut tx = conn.begin().await.expect("begin");
        tx.execute(
            "INSERT INTO emails (id, project_id, message_id, stream, from_email, reply_to,
                 subject, tags, metadata, mime_size, created_at)
             VALUES ('e3', 'nope', '<m3@x>', 's', 'a@x', '[]', 'x', '[]', '{}', 0, 1)",
        )
        .await
        .expect("checked at commit, not now");
        assert!(tx.commit().await.is_err(), "a broken key fails the commit");
    }

    /// The tables of `names`, each with whether it is WITHOUT ROWID, and the indexes declared
    /// on it (not the automatic ones of a primary key).
    async fn layout(conn: &mut AnyConnection, names: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for name in names {
            let without_rowid: i64 =
                sqlx::query_scalar("SELECT wr FROM pragma_table_list WHERE name = $1")
                    .bind(*name)
                    .fetch_one(&mut *conn)
                    .await
                    .expect("the table");
            let indexes: Vec<String> = sqlx::query_scalar(
                "SELECT name || ': ' || sql FROM sqlite_schema \
                 WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL ORDER BY name",
            )
            .bind(*name)
            .fetch_all(&mut *conn)
            .await
            .expect("indexes");
            out.push(format!(
                "{name} without rowid: {without_rowid}; {indexes:?}"
            ));
        }
        out
    }

    /// Migration 11 turns events, email_tags and email_metadata into WITHOUT ROWID tables:
    /// every row and every index of theirs is kept, and their primary keys still refuse a
    /// duplicate. And it drops emails_message_id.
    #[tokio::test]
    async fn sqlite_without_rowid_keeps_every_row_index_and_key() {
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect("sqlite::memory:")
            .await
            .expect("connection");
        conn.execute("PRAGMA foreign_keys = ON")
            .await
            .expect("keys on");
        for version in 1..=10 {
            apply(&mut conn, version).await;
        }
        conn.execute(
            "INSERT INTO events (id, project_id, email_id, recipient_id, recipient, type, data,
                 created_at)
             VALUES ('v2', 'p1', 'e1', 'r1', 'c@y', 'queued', '{}', 5),
                ('v1', 'p1', NULL, NULL, NULL, 'webhook.test', '{\"a\":1}', 4),
                ('v3', 'p2', 'e2', 'r2', 'd@y', 'bounced', '{\"smtp\":550}', 6);
             INSERT INTO email_tags (project_id, tag, email_id)
             VALUES ('p1', 'welcome', 'e1'), ('p1', 'bench', 'e1'), ('p2', 'bench', 'e2');
             INSERT INTO email_metadata (project_id, key, value, email_id)
             VALUES ('p1', 'order', '1042', 'e1'), ('p2', 'order', '7', 'e2');",
        )
        .await
        .expect("rows before");
        let tags_sql = "(SELECT project_id || '/' || tag || '/' || email_id AS id FROM email_tags)";
        let meta_sql = "(SELECT project_id || '/' || key || '=' || value || '/' || email_id AS id \
             FROM email_metadata)";
        let events = rows(&mut conn, "events", "*").await;
        let tags = rows(&mut conn, tags_sql, "id").await;
        let metadata = rows(&mut conn, meta_sql, "id").await;
        let tables = ["events", "email_tags", "email_metadata"];
        let before = layout(&mut conn, &tables).await;
        assert!(
            before.iter().all(|t| t.contains("without rowid: 0")),
            "{before:?}"
        );

        let mut tx = conn.begin().await.expect("begin");
        apply(&mut tx, 11).await;
        tx.commit().await.expect("migration 11 commits");

        assert_eq!(rows(&mut conn, "events", "*").await, events);
        assert_eq!(rows(&mut conn, tags_sql, "id").await, tags);
        assert_eq!(rows(&mut conn, meta_sql, "id").await, metadata);
        let after = layout(&mut conn, &tables).await;
        let expected: Vec<String> = before
            .iter()
            .map(|t| t.replace("without rowid: 0", "without rowid: 1"))
            .collect();
        assert_eq!(
            after, expected,
            "the same indexes, the rows in the key's B-tree"
        );
        let message_id_index: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'emails_message_id'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("schema");
        assert_eq!(message_id_index, 0);
        let check: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&mut conn)
            .await
            .expect("integrity check");
        assert_eq!(check, ["ok"]);
        for duplicate in [
            "INSERT INTO events (id, project_id, type, data, created_at) \
             VALUES ('v1', 'p9', 'x', '{}', 1)",
            "INSERT INTO email_tags (project_id, tag, email_id) VALUES ('p1', 'bench', 'e1')",
            "INSERT INTO email_metadata (project_id, key, value, email_id) \
             VALUES ('p2', 'order', '7', 'e2')",
        ] {
            let err = conn.execute(duplicate).await.expect_err("a duplicate key");
            assert!(err.to_string().contains("UNIQUE"), "{duplicate}: {err}");
        }
    }
}

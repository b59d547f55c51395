//! Retention: purging message bodies, then whole emails with their timelines, in small
//! batches (each its own short transaction, so ingest and delivery commit in between).
//! Mail still waiting for delivery is never touched; the stats rollups are never purged.

use super::write::{Val, placeholders, texts};
use super::{Store, StoreResult};

const PENDING: &str = pending!("r");

impl Store {
    /// Drops the bodies and built MIME of up to `batch` emails created before `before` whose
    /// recipients are all settled. Returns how many emails were purged.
    pub async fn purge_contents(&self, before: i64, now_ms: i64, batch: i64) -> StoreResult<u64> {
        let sql = format!(
            "UPDATE emails SET text_body = NULL, html_body = NULL, mime = NULL, \
             content_purged_at = $1 WHERE id IN (SELECT e.id FROM emails e \
               WHERE e.content_purged_at IS NULL AND e.created_at < $2 \
               AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.email_id = e.id \
                 AND {PENDING}) \
               ORDER BY e.created_at LIMIT $3)"
        );
        self.execute(sql, vec![now_ms.into(), before.into(), batch.into()])
            .await
    }

    /// Deletes up to `batch` settled emails created before `before`, with their recipients,
    /// events and search keys. Returns how many emails were deleted.
    pub async fn purge_emails(&self, before: i64, batch: i64) -> StoreResult<u64> {
        self.writer
            .run(move |tx, _| {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT e.id, e.project_id, e.tags, e.metadata FROM emails e \
                         WHERE e.created_at < $1 AND NOT EXISTS (SELECT 1 FROM recipients r \
                           WHERE r.email_id = e.id AND {PENDING}) \
                         ORDER BY e.created_at LIMIT $2"
                    );
                    let rows = tx.query(&sql, &[Val::Int(before), Val::Int(batch)]).await?;
                    if rows.is_empty() {
                        return Ok(0);
                    }
                    let mut ids: Vec<String> = Vec::with_capacity(rows.len());
                    for r in &rows {
                        let (id, project): (String, String) = (r.get(0)?, r.get(1)?);
                        let tags: Vec<String> =
                            serde_json::from_str(&r.get::<String>(2)?).unwrap_or_default();
                        let metadata: serde_json::Map<String, serde_json::Value> =
                            serde_json::from_str(&r.get::<String>(3)?).unwrap_or_default();
                        for t in &tags {
                            tx.execute(
                                "DELETE FROM email_tags WHERE project_id = $1 AND tag = $2 \
                                 AND email_id = $3",
                                &[Val::Text(&project), Val::Text(t), Val::Text(&id)],
                            )
                            .await?;
                        }
                        for k in metadata.keys() {
                            tx.execute(
                                "DELETE FROM email_metadata WHERE project_id = $1 AND key = $2 \
                                 AND email_id = $3",
                                &[Val::Text(&project), Val::Text(k), Val::Text(&id)],
                            )
                            .await?;
                        }
                        ids.push(id);
                    }
                    let list = placeholders(1, ids.len());
                    let params = texts(&[], ids.iter().map(String::as_str));
                    for table in ["events", "recipients"] {
                        let sql = format!("DELETE FROM {table} WHERE email_id IN ({list})");
                        tx.execute(&sql, &params).await?;
                    }
                    let sql = format!("DELETE FROM emails WHERE id IN ({list})");
                    tx.execute(&sql, &params).await
                })
            })
            .await
    }

    /// Deletes up to `batch` of each kind of record that outlived its use: expired idempotency
    /// keys, settled webhook deliveries and attempts and events about no email (older than
    /// `before`), and inbound reports received before `before`. Returns how many went.
    pub async fn purge_records(&self, before: i64, now_ms: i64, batch: i64) -> StoreResult<u64> {
        let statements: [(&str, i64); 6] = [
            (
                "DELETE FROM idempotency_keys WHERE (project_id, method, path, idem_key) IN \
                 (SELECT project_id, method, path, idem_key FROM idempotency_keys \
                  WHERE expires_at <= $1 LIMIT $2)",
                now_ms,
            ),
            (
                "DELETE FROM webhook_attempts WHERE id IN (SELECT id FROM webhook_attempts \
                 WHERE attempted_at < $1 LIMIT $2)",
                before,
            ),
            (
                "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries \
                 WHERE created_at < $1 AND status <> 'pending' LIMIT $2)",
                before,
            ),
            (
                "DELETE FROM events WHERE id IN (SELECT id FROM events \
                 WHERE email_id IS NULL AND created_at < $1 LIMIT $2)",
                before,
            ),
            (
                "DELETE FROM inbound_messages WHERE id IN (SELECT id FROM inbound_messages \
                 WHERE received_at < $1 LIMIT $2)",
                before,
            ),
            (
                "DELETE FROM inbound_effects WHERE (inbound_id, recipient_id, event_type) IN \
                 (SELECT inbound_id, recipient_id, event_type FROM inbound_effects \
                  WHERE created_at < $1 LIMIT $2)",
                before,
            ),
        ];
        self.writer
            .run(move |tx, _| {
                Box::pin(async move {
                    let mut total = 0;
                    for (sql, cutoff) in statements {
                        total += tx
                            .execute(sql, &[Val::Int(cutoff), Val::Int(batch)])
                            .await?;
                    }
                    Ok(total)
                })
            })
            .await
    }
}

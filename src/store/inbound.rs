//! Inbound report mail and the state changes reports cause.

use sqlx::Row;
use uuid::Uuid;

use super::emails::{NewEvent, insert_event};
use super::suppressions::{SuppressionRecord, insert_suppression};
use super::webhooks::Outbox;
use super::{Store, StoreResult};

/// A recipient a report may be about.
#[derive(Debug, Clone)]
pub struct RecipientRef {
    pub id: String,
    pub email_id: String,
    pub project_id: String,
    pub address: String,
    pub status: String,
    pub stream: String,
}

/// What a report does to one recipient, written in one transaction.
#[derive(Debug, Clone)]
pub struct ReportEffect {
    pub recipient: RecipientRef,
    /// The new status, applied only if the recipient is in one of `from_statuses`.
    pub new_status: Option<&'static str>,
    pub from_statuses: &'static [&'static str],
    pub bounce: Option<(String, String)>,
    pub event: NewEvent,
    pub suppression: Option<SuppressionRecord>,
}

const REF_SELECT: &str = "SELECT r.id, r.email_id, r.project_id, r.address, r.status, e.stream \
     FROM recipients r JOIN emails e ON e.id = r.email_id";

fn ref_from_row(r: &sqlx::any::AnyRow) -> StoreResult<RecipientRef> {
    Ok(RecipientRef {
        id: r.try_get(0)?,
        email_id: r.try_get(1)?,
        project_id: r.try_get(2)?,
        address: r.try_get(3)?,
        status: r.try_get(4)?,
        stream: r.try_get(5)?,
    })
}

impl Store {
    /// Keeps a received message before anything else is done with it.
    pub async fn insert_inbound(
        &self,
        project_id: Option<&str>,
        source: &str,
        raw: &[u8],
        now: i64,
    ) -> StoreResult<String> {
        let id = Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO inbound_messages (id, project_id, received_at, source, size, raw, status, matched) \
             VALUES ($1, $2, $3, $4, $5, $6, 'received', 0)",
        )
        .bind(&id)
        .bind(project_id)
        .bind(now)
        .bind(source)
        .bind(i64::try_from(raw.len()).unwrap_or(i64::MAX))
        .bind(raw)
        .execute(&self.write)
        .await?;
        Ok(id)
    }

    pub async fn finish_inbound(
        &self,
        id: &str,
        kind: &str,
        status: &str,
        matched: i64,
        details: &str,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE inbound_messages SET kind = $1, status = $2, matched = $3, details = $4 WHERE id = $5")
            .bind(kind)
            .bind(status)
            .bind(matched)
            .bind(details)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// How many inbound messages ended with `status` (for tests and metrics).
    pub async fn count_inbound(&self, status: &str) -> StoreResult<i64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbound_messages WHERE status = $1")
            .bind(status)
            .fetch_one(&self.read)
            .await?;
        Ok(n)
    }

    pub async fn find_recipient(&self, id: &str) -> StoreResult<Option<RecipientRef>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{REF_SELECT} WHERE r.id = $1")))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(ref_from_row).transpose()
    }

    /// The recipients of the email with this Message-ID (angle brackets included), within one
    /// project if given. Herald writes every Message-ID as `<email id@domain>`: the email is
    /// found by its id, and its Message-ID must be this one exactly.
    pub async fn recipients_by_message_id(
        &self,
        message_id: &str,
        project_id: Option<&str>,
    ) -> StoreResult<Vec<RecipientRef>> {
        let Some((email_id, _)) = message_id
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('@'))
        else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{REF_SELECT} WHERE e.id = $1 AND e.message_id = $2 AND ($3 = '' OR e.project_id = $3) \
             ORDER BY r.position"
        )))
        .bind(email_id)
        .bind(message_id)
        .bind(project_id.unwrap_or(""))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(ref_from_row).collect()
    }

    /// Applies a report's effect: the status change (if allowed from the current status), the
    /// event (with its webhooks) and the suppression, in one transaction. Returns whether the
    /// status changed.
    pub async fn apply_report_effect(&self, effect: &ReportEffect) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        let mut changed = false;
        if let Some(status) = effect.new_status {
            let allowed = effect
                .from_statuses
                .iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ");
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE recipients SET status = $1, last_event_at = $2, \
                 bounce_type = COALESCE($3, bounce_type), bounce_sub_type = COALESCE($4, bounce_sub_type) \
                 WHERE id = $5 AND status IN ({allowed})"
            )))
            .bind(status)
            .bind(effect.event.created_at)
            .bind(effect.bounce.as_ref().map(|b| b.0.as_str()))
            .bind(effect.bounce.as_ref().map(|b| b.1.as_str()))
            .bind(&effect.recipient.id)
            .execute(&mut *tx)
            .await?;
            changed = done.rows_affected() == 1;
        }
        let r = &effect.recipient;
        // A report that repeats a verdict (a second complaint) is kept in the timeline but
        // not counted twice.
        let mut outbox = Outbox::default();
        outbox.stats.use_shard_of(&effect.event.id);
        outbox.uncounted = effect.new_status.is_some() && !changed;
        insert_event(
            &mut tx,
            &mut outbox,
            &r.project_id,
            Some(&r.email_id),
            Some(&r.stream),
            &effect.event,
        )
        .await?;
        if let Some(s) = &effect.suppression {
            insert_suppression(&mut tx, s).await?;
        }
        outbox.commit(tx).await?;
        Ok(changed)
    }
}

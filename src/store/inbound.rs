//! Inbound report mail and the state changes reports cause.

use sqlx::Row;
use uuid::Uuid;

use super::emails::{NewEvent, insert_event};
use super::suppressions::{SuppressionRecord, insert_suppression};
use super::webhooks::EventRow;
use super::write::{Owned, Val};
use super::{Store, StoreError, StoreResult};
use crate::domain::status::RecipientStatus;

/// A kept inbound message, to be read again.
#[derive(Debug, Clone)]
pub struct KeptInbound {
    pub id: String,
    pub project_id: Option<String>,
    pub raw: Vec<u8>,
    pub envelope: Vec<String>,
}

/// A recipient a report may be about.
#[derive(Debug, Clone)]
pub struct RecipientRef {
    pub id: String,
    pub email_id: String,
    pub project_id: String,
    pub address: String,
    pub status: RecipientStatus,
    pub stream: String,
}

/// What a report does to one recipient, written in one transaction.
#[derive(Debug, Clone)]
pub struct ReportEffect {
    pub recipient: RecipientRef,
    /// The new status, applied only if the recipient is in one it may be reported from
    /// ([`RecipientStatus::reported_from`]).
    pub new_status: Option<RecipientStatus>,
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
        status: super::emails::recipient_status(&r.try_get::<String, _>(4)?)?,
        stream: r.try_get(5)?,
    })
}

/// A kept inbound message Herald could not use (not a report, no recipient of Herald's, or
/// unreadable), as the console's bounces page lists it.
#[derive(Debug, Clone)]
pub struct UnreadInbound {
    pub id: String,
    pub received_at: i64,
    pub source: String,
    pub size: i64,
    pub status: String,
    pub details: Option<String>,
}

/// A kept report that changed a recipient, as the console's email page lists it.
#[derive(Debug, Clone)]
pub struct ReportRef {
    pub inbound_id: String,
    pub recipient_id: String,
    pub event_type: String,
    pub received_at: i64,
    /// `dsn`, `arf`, … as the reader found it.
    pub kind: Option<String>,
    /// What the reader found, as JSON.
    pub details: Option<String>,
}

impl Store {
    /// The kept reports that changed these recipients of the project, oldest first.
    pub async fn reports_for(
        &self,
        project_id: &str,
        recipient_ids: &[String],
    ) -> StoreResult<Vec<ReportRef>> {
        if recipient_ids.is_empty() {
            return Ok(Vec::new());
        }
        // The recipients are the project's (read with its email); the reports' own project
        // is not known for one that came to the SMTP listener unmatched at first.
        let list = (0..recipient_ids.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT f.inbound_id, f.recipient_id, f.event_type, m.received_at, m.kind, m.details \
             FROM inbound_effects f JOIN inbound_messages m ON m.id = f.inbound_id \
             WHERE $1 <> '' AND f.recipient_id IN ({list}) ORDER BY m.received_at"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(project_id);
        for id in recipient_ids {
            q = q.bind(id.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(ReportRef {
                    inbound_id: r.try_get(0)?,
                    recipient_id: r.try_get(1)?,
                    event_type: r.try_get(2)?,
                    received_at: r.try_get(3)?,
                    kind: r.try_get(4)?,
                    details: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// The newest kept messages Herald could not use: the project's, and with `unowned` also
    /// those no project could be told from (what an admin sees).
    pub async fn unread_inbound(
        &self,
        project_id: &str,
        unowned: bool,
        limit: i64,
    ) -> StoreResult<Vec<UnreadInbound>> {
        let rows = sqlx::query(
            "SELECT id, received_at, source, size, status, details FROM inbound_messages \
             WHERE status IN ('unknown', 'unmatched', 'parse_error') \
             AND (project_id = $1 OR (project_id IS NULL AND $2 = 1)) \
             ORDER BY received_at DESC LIMIT $3",
        )
        .bind(project_id)
        .bind(i64::from(unowned))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UnreadInbound {
                    id: r.try_get(0)?,
                    received_at: r.try_get(1)?,
                    source: r.try_get(2)?,
                    size: r.try_get(3)?,
                    status: r.try_get(4)?,
                    details: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// A kept inbound message, as it arrived, if it was the project's or changed one of its
    /// recipients (or, with `unowned`, if no project could be told from it).
    pub async fn inbound_raw(
        &self,
        project_id: &str,
        id: &str,
        unowned: bool,
    ) -> StoreResult<Vec<u8>> {
        sqlx::query_scalar(
            "SELECT m.raw FROM inbound_messages m WHERE m.id = $2 AND (m.project_id = $1 \
             OR EXISTS (SELECT 1 FROM inbound_effects f JOIN recipients r ON r.id = f.recipient_id \
             WHERE f.inbound_id = m.id AND r.project_id = $1))",
        )
        .bind(project_id)
        .bind(id)
        .bind(i64::from(unowned))
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)
    }

    /// Keeps a received message, and the envelope recipients it came to, before anything else
    /// is done with it.
    pub async fn insert_inbound(
        &self,
        project_id: Option<&str>,
        source: &str,
        raw: &[u8],
        envelope: &[String],
        now: i64,
    ) -> StoreResult<String> {
        let id = Uuid::now_v7().to_string();
        self.execute(
            "INSERT INTO inbound_messages (id, project_id, received_at, source, size, raw, \
             status, matched, envelope) VALUES ($1, $2, $3, $4, $5, $6, 'received', 0, $7)",
            vec![
                id.as_str().into(),
                Owned::OptText(project_id.map(str::to_owned)),
                now.into(),
                source.into(),
                i64::try_from(raw.len()).unwrap_or(i64::MAX).into(),
                Owned::Blob(raw.to_vec()),
                envelope.join("\n").into(),
            ],
        )
        .await?;
        Ok(id)
    }

    /// Kept messages to read again: those in one of `statuses` received from `since` to
    /// `until`, after the id `after` (ids grow with time), oldest first.
    pub async fn kept_inbound(
        &self,
        statuses: &[&str],
        since: i64,
        until: i64,
        after: &str,
        limit: i64,
    ) -> StoreResult<Vec<KeptInbound>> {
        let list = statuses
            .iter()
            .filter(|s| s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        if list.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, project_id, raw, envelope FROM inbound_messages \
             WHERE status IN ({list}) AND received_at >= $1 AND received_at <= $2 AND id > $3 \
             ORDER BY id LIMIT $4"
        )))
        .bind(since)
        .bind(until)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let envelope: Option<String> = r.try_get(3)?;
                Ok(KeptInbound {
                    id: r.try_get(0)?,
                    project_id: r.try_get(1)?,
                    raw: r.try_get(2)?,
                    envelope: envelope
                        .unwrap_or_default()
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned)
                        .collect(),
                })
            })
            .collect()
    }

    pub async fn finish_inbound(
        &self,
        id: &str,
        kind: &str,
        status: &str,
        matched: i64,
        details: &str,
    ) -> StoreResult<()> {
        self.execute(
            "UPDATE inbound_messages SET kind = $1, status = $2, matched = $3, details = $4 \
             WHERE id = $5",
            vec![
                kind.into(),
                status.into(),
                matched.into(),
                details.into(),
                id.into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// How many inbound messages ended with `status` (for tests and metrics).
    pub async fn count_inbound(&self, status: &str) -> StoreResult<i64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbound_messages WHERE status = $1")
            .bind(status)
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    pub async fn find_recipient(&self, id: &str) -> StoreResult<Option<RecipientRef>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{REF_SELECT} WHERE r.id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(ref_from_row).transpose()
    }

    /// Applies a report's effect: the status change (if allowed from the current status), the
    /// event (with its webhooks) and the suppression, in one transaction, once for each kept
    /// message: a message read again adds nothing it added before. Returns `None` when this
    /// message had made this effect already, else whether the status changed.
    pub async fn apply_report_effect(
        &self,
        inbound_id: &str,
        effect: &ReportEffect,
    ) -> StoreResult<Option<bool>> {
        let (inbound_id, effect) = (inbound_id.to_owned(), effect.clone());
        self.writer
            .run(move |tx, outbox| {
                Box::pin(async move {
                    let first = tx
                        .execute(
                            "INSERT INTO inbound_effects (inbound_id, recipient_id, event_type, \
                             created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                            &[
                                Val::Text(&inbound_id),
                                Val::Text(&effect.recipient.id),
                                Val::Text(effect.event.event_type.as_str()),
                                Val::Int(effect.event.created_at),
                            ],
                        )
                        .await?;
                    if first == 0 {
                        return Ok(None);
                    }
                    let mut changed = false;
                    if let Some(status) = effect.new_status {
                        let allowed = status
                            .reported_from()
                            .iter()
                            .map(|s| format!("'{}'", s.as_str()))
                            .collect::<Vec<_>>()
                            .join(", ");
                        let bounce = effect.bounce.as_ref();
                        let done = tx
                            .execute(
                                &format!(
                                    "UPDATE recipients SET status = $1, last_event_at = $2, \
                                     bounce_type = COALESCE($3, bounce_type), \
                                     bounce_sub_type = COALESCE($4, bounce_sub_type) \
                                     WHERE id = $5 AND status IN ({allowed})"
                                ),
                                &[
                                    Val::Text(status.as_str()),
                                    Val::Int(effect.event.created_at),
                                    Val::OptText(bounce.map(|b| b.0.as_str())),
                                    Val::OptText(bounce.map(|b| b.1.as_str())),
                                    Val::Text(&effect.recipient.id),
                                ],
                            )
                            .await?;
                        changed = done == 1;
                    }
                    let r = &effect.recipient;
                    // A report that repeats a verdict (a second complaint) is kept in the
                    // timeline but not counted twice.
                    let already_counted = effect.new_status.is_some() && !changed;
                    let row = EventRow {
                        project_id: &r.project_id,
                        email_id: Some(&r.email_id),
                        stream: Some(&r.stream),
                        event: &effect.event,
                    };
                    insert_event(tx, outbox, row, already_counted).await?;
                    if let Some(s) = &effect.suppression {
                        insert_suppression(tx, s).await?;
                    }
                    Ok(Some(changed))
                })
            })
            .await
    }
}

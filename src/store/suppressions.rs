//! The suppression list.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Row as _;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::emails::NewEmail;
use super::write::{Row, Tx, Val, padded, placeholders, texts};
use super::{Store, StoreError, StoreResult};
use crate::clock::format_ms;
use crate::domain::event::{EventData, EventType, SuppressionData};
use crate::domain::status::RecipientStatus;

#[derive(Debug, Clone)]
pub struct SuppressionRecord {
    pub id: String,
    pub project_id: String,
    pub email: String,
    /// `""`: every stream.
    pub stream: String,
    pub reason: String,
    pub source_email_id: Option<String>,
    pub details: Option<String>,
    pub created_at: i64,
}

const COLUMNS: &str = "id, project_id, email, stream, reason, source_email_id, details, created_at";

fn from_row(r: &AnyRow) -> StoreResult<SuppressionRecord> {
    Ok(SuppressionRecord {
        id: r.try_get(0)?,
        project_id: r.try_get(1)?,
        email: r.try_get(2)?,
        stream: r.try_get(3)?,
        reason: r.try_get(4)?,
        source_email_id: r.try_get(5)?,
        details: r.try_get(6)?,
        created_at: r.try_get(7)?,
    })
}

fn from_tx_row(r: &Row) -> StoreResult<SuppressionRecord> {
    Ok(SuppressionRecord {
        id: r.get(0)?,
        project_id: r.get(1)?,
        email: r.get(2)?,
        stream: r.get(3)?,
        reason: r.get(4)?,
        source_email_id: r.get(5)?,
        details: r.get(6)?,
        created_at: r.get(7)?,
    })
}

/// Adds a suppression unless the same (address, scope) is already there; returns whether it
/// was added.
pub(super) async fn insert_suppression(
    tx: &mut dyn Tx,
    s: &SuppressionRecord,
) -> StoreResult<bool> {
    let done = tx
        .execute(
            "INSERT INTO suppressions \
             (id, project_id, email, stream, reason, source_email_id, details, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (project_id, email, stream) DO NOTHING",
            &[
                Val::Text(&s.id),
                Val::Text(&s.project_id),
                Val::Text(&s.email),
                Val::Text(&s.stream),
                Val::Text(&s.reason),
                Val::OptText(s.source_email_id.as_deref()),
                Val::OptText(s.details.as_deref()),
                Val::Int(s.created_at),
            ],
        )
        .await?;
    Ok(done == 1)
}

impl SuppressionRecord {
    pub fn new(project_id: &str, email: &str, stream: &str, reason: &str, now: i64) -> Self {
        Self {
            id: Uuid::now_v7().to_string(),
            project_id: project_id.to_owned(),
            email: email.to_owned(),
            stream: stream.to_owned(),
            reason: reason.to_owned(),
            source_email_id: None,
            details: None,
            created_at: now,
        }
    }
}

impl Store {
    /// Adds one suppression; returns the stored row (the existing one if it was there).
    pub async fn add_suppression(
        &self,
        s: &SuppressionRecord,
    ) -> StoreResult<(SuppressionRecord, bool)> {
        let record = s.clone();
        let added = self
            .writer
            .run(move |tx, _| Box::pin(async move { insert_suppression(tx, &record).await }))
            .await?;
        let stored = self
            .find_suppression(&s.project_id, &s.email, Some(&s.stream))
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok((stored, added))
    }

    /// The suppression of `email` in exactly `stream` (`Some("")` = all streams), or, with
    /// `None`, the first one in any scope.
    pub async fn find_suppression(
        &self,
        project_id: &str,
        email: &str,
        stream: Option<&str>,
    ) -> StoreResult<Option<SuppressionRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM suppressions WHERE project_id = $1 AND (email = $2 OR id = $2) \
             AND ($3 = '*' OR stream = $3) ORDER BY stream LIMIT 1"
        )))
        .bind(project_id)
        .bind(email)
        .bind(stream.unwrap_or("*"))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The project's suppressions, newest first, before the id `before`.
    pub async fn list_suppressions(
        &self,
        project_id: &str,
        reason: Option<&str>,
        before: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<SuppressionRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM suppressions WHERE project_id = $1 AND ($2 = '' OR reason = $2) \
             AND ($3 = '' OR id < $3) ORDER BY id DESC LIMIT $4"
        )))
        .bind(project_id)
        .bind(reason.unwrap_or(""))
        .bind(before.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn delete_suppression(&self, project_id: &str, id: &str) -> StoreResult<()> {
        let done = self
            .execute(
                "DELETE FROM suppressions WHERE project_id = $1 AND id = $2",
                vec![project_id.into(), id.into()],
            )
            .await?;
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Suppressions in the project (active), for stats.
    pub async fn count_suppressions(&self, project_id: &str) -> StoreResult<i64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM suppressions WHERE project_id = $1")
            .bind(project_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }
}

/// The suppression check of new emails, made by the group-commit writer in the transaction
/// that inserts them: a suppression committed before that transaction is never missed, and the
/// check costs no round trip of its own. (Asked before the commit, on a reader of its own,
/// each request would wait for that reader's turn as well as the writer's.)
///
/// The lookups the recipients of `emails` need: a project and a list of its addresses each,
/// at most [`MAX_ADDRESSES`], padded (see `write::padded`).
fn lookups<'a>(emails: impl Iterator<Item = &'a NewEmail>) -> Vec<(&'a str, Vec<&'a str>)> {
    let mut wanted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in emails {
        wanted
            .entry(&e.project_id)
            .or_default()
            .extend(e.recipients.iter().map(|r| r.address.as_str()));
    }
    let mut out = Vec::new();
    for (project_id, addresses) in wanted {
        let addresses: Vec<&str> = addresses.into_iter().collect();
        for chunk in addresses.chunks(MAX_ADDRESSES) {
            out.push((project_id, padded(chunk).collect()));
        }
    }
    out
}

/// Addresses per query (a whole number of chunks: every query's list is padded, so that a
/// handful of shapes stay prepared).
const MAX_ADDRESSES: usize = 512;

/// Every suppression (of any stream) of the recipients of `emails`, inside `tx`.
pub(super) async fn find_for<'a>(
    tx: &mut dyn Tx,
    emails: impl Iterator<Item = &'a NewEmail>,
) -> StoreResult<Vec<SuppressionRecord>> {
    let mut found = Vec::new();
    for (project_id, addresses) in lookups(emails) {
        let sql = format!(
            "SELECT {COLUMNS} FROM suppressions WHERE project_id = $1 AND email IN ({})",
            placeholders(2, addresses.len())
        );
        let params = texts(&[Val::Text(project_id)], addresses.iter().copied());
        for r in &tx.query(&sql, &params).await? {
            found.push(from_tx_row(r)?);
        }
    }
    Ok(found)
}

/// Marks the recipients of `email` that `found` holds for its stream (globally or in that
/// stream) as suppressed: accepted, never attempted (API.md: no 422, so batch clients stay
/// simple and list membership does not leak through errors). Their first event becomes
/// `email.suppressed`, with the suppression's reason. Returns the suppressions that applied,
/// in the order of the recipients.
pub(super) fn apply(email: &mut NewEmail, found: &[SuppressionRecord]) -> Vec<SuppressionRecord> {
    let mut applied = Vec::new();
    if found.is_empty() {
        return applied;
    }
    for r in &mut email.recipients {
        let Some(s) = found.iter().find(|s| {
            s.project_id == email.project_id
                && s.email == r.address
                && (s.stream.is_empty() || s.stream == email.stream)
        }) else {
            continue;
        };
        r.status = RecipientStatus::Suppressed;
        let data = EventData::Suppressed {
            suppression: SuppressionData {
                reason: s.reason.clone(),
                stream: (!s.stream.is_empty()).then(|| s.stream.clone()),
                created_at: format_ms(s.created_at),
            },
        };
        for ev in email
            .events
            .iter_mut()
            .filter(|ev| ev.recipient_id.as_deref() == Some(r.id.as_str()))
        {
            ev.become_(EventType::Suppressed, data.clone());
        }
        applied.push(s.clone());
    }
    applied
}

//! The suppression list.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use super::bulk::{TableRows, Val};
use super::emails::{NewEmail, json_text};
use super::lite::Lite;
use super::{Store, StoreError, StoreResult, padded, placeholders};
use crate::clock::format_ms;
use crate::domain::event::EventType;
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

/// Adds a suppression unless the same (address, scope) is already there; returns whether it
/// was added.
pub(super) async fn insert_suppression(
    tx: &mut AnyConnection,
    s: &SuppressionRecord,
) -> StoreResult<bool> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO suppressions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (project_id, email, stream) DO NOTHING"
    )))
    .bind(&s.id)
    .bind(&s.project_id)
    .bind(&s.email)
    .bind(&s.stream)
    .bind(&s.reason)
    .bind(s.source_email_id.as_deref())
    .bind(s.details.as_deref())
    .bind(s.created_at)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// [`insert_suppression`] on the group-commit writer's own SQLite connection (see
/// `store::lite`), inside its transaction.
pub(super) fn insert_suppression_lite(lite: &mut Lite, s: &SuppressionRecord) -> StoreResult<()> {
    let rows = [vec![
        Val::Text(&s.id),
        Val::Text(&s.project_id),
        Val::Text(&s.email),
        Val::Text(&s.stream),
        Val::Text(&s.reason),
        Val::OptText(s.source_email_id.as_deref()),
        Val::OptText(s.details.as_deref()),
        Val::Int(s.created_at),
    ]];
    let table = TableRows {
        table: "suppressions",
        cols: &[
            "id",
            "project_id",
            "email",
            "stream",
            "reason",
            "source_email_id",
            "details",
            "created_at",
        ],
        rows: &rows,
    };
    lite.write_tables(&[(&table, "ON CONFLICT (project_id, email, stream) DO NOTHING")])
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
        let mut tx = self.write.begin().await?;
        let added = insert_suppression(&mut tx, s).await?;
        tx.commit().await?;
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
        .fetch_optional(&self.write)
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
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn delete_suppression(&self, project_id: &str, id: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM suppressions WHERE project_id = $1 AND id = $2")
            .bind(project_id)
            .bind(id)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Suppressions in the project (active), for stats.
    pub async fn count_suppressions(&self, project_id: &str) -> StoreResult<i64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM suppressions WHERE project_id = $1")
            .bind(project_id)
            .fetch_one(&self.read)
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
/// at most [`MAX_ADDRESSES`], padded (see `store::padded`).
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

/// Addresses per query (a power of two: every query's list is padded to one, so that a
/// handful of shapes stay prepared).
const MAX_ADDRESSES: usize = 512;

/// Every suppression (of any stream) of the recipients of `emails`, inside `tx`.
pub(super) async fn find_for<'a>(
    tx: &mut AnyConnection,
    emails: impl Iterator<Item = &'a NewEmail>,
) -> StoreResult<Vec<SuppressionRecord>> {
    let mut found = Vec::new();
    for (project_id, addresses) in lookups(emails) {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM suppressions WHERE project_id = $1 AND email IN ({})",
            placeholders(2, addresses.len())
        ));
        let mut q = sqlx::query(sql).bind(project_id);
        for a in addresses {
            q = q.bind(a);
        }
        for r in &q.fetch_all(&mut *tx).await? {
            found.push(from_row(r)?);
        }
    }
    Ok(found)
}

/// [`find_for`] on the group-commit writer's own SQLite connection, inside its transaction.
pub(super) fn find_for_lite<'a>(
    lite: &mut Lite,
    emails: impl Iterator<Item = &'a NewEmail>,
) -> StoreResult<Vec<SuppressionRecord>> {
    let mut found = Vec::new();
    for (project_id, addresses) in lookups(emails) {
        let sql = format!(
            "SELECT {COLUMNS} FROM suppressions WHERE project_id = ? AND email IN ({})",
            vec!["?"; addresses.len()].join(", ")
        );
        let params = std::iter::once(project_id).chain(addresses);
        found.extend(lite.select(&sql, params, |r| {
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
        })?);
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
        let scope = (!s.stream.is_empty()).then_some(s.stream.as_str());
        let data = serde_json::json!({"suppression": {
            "reason": s.reason,
            "stream": scope,
            "created_at": format_ms(s.created_at),
        }});
        for ev in email
            .events
            .iter_mut()
            .filter(|ev| ev.recipient_id.as_deref() == Some(r.id.as_str()))
        {
            ev.event_type = EventType::for_status(RecipientStatus::Suppressed)
                .as_str()
                .to_owned();
            ev.data = json_text(&data);
        }
        applied.push(s.clone());
    }
    applied
}

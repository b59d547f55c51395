//! The delivery queue: claiming due recipients under a lease, and recording outcomes.
//!
//! A claim is one statement that stamps `lease_owner` and moves `next_attempt_at` to the
//! lease's expiry. The row stays in the `recipients_due` index, so when a worker dies its
//! recipients simply come due again when the lease runs out: no sweeper is needed. Outcome
//! writes are fenced by `lease_owner` and by the status still being pending, so a worker
//! whose lease expired (or whose recipient was canceled) cannot overwrite a newer verdict.

use std::collections::{HashMap, HashSet};

use sqlx::Row as _;

use super::emails::{NewEvent, insert_events};
use super::suppressions::{SuppressionRecord, insert_suppression};
use super::webhooks::{EventRow, Outbox};
use super::write::{Owned, Tx, Val, padded, padded_placeholders, texts};
use super::{Store, StoreResult};
use crate::domain::status::RecipientStatus;

/// A recipient a worker now holds.
#[derive(Debug, Clone)]
pub struct ClaimedRecipient {
    pub id: String,
    pub address: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub deadline_at: i64,
}

/// An email with the claimed recipients it has, and the bytes to send.
#[derive(Debug, Clone)]
pub struct ClaimedEmail {
    pub id: String,
    pub project_id: String,
    pub stream: String,
    pub mime: Vec<u8>,
    pub expires_at: Option<i64>,
    pub recipients: Vec<ClaimedRecipient>,
}

/// What recording a worker's outcomes did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Outcomes written (the others' recipients were no longer leased to the worker).
    pub applied: usize,
    /// Webhook deliveries written in the same commit (not only for these outcomes): the
    /// dispatcher has work when this is not 0.
    pub announced: usize,
}

/// What happened to one claimed recipient, to be written with its event.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub recipient_id: String,
    pub email_id: String,
    pub project_id: String,
    pub stream: String,
    pub status: RecipientStatus,
    pub next_attempt_at: i64,
    /// 1 for an SMTP attempt, 0 for a verdict reached without one (expired before sending).
    pub attempts_delta: i64,
    pub smtp_code: Option<i64>,
    pub smtp_enhanced: Option<String>,
    pub smtp_response: Option<String>,
    pub smtp_phase: Option<String>,
    pub bounce_type: Option<String>,
    pub bounce_sub_type: Option<String>,
    pub sent_at: Option<i64>,
    pub event: NewEvent,
    /// A suppression this outcome adds (a hard bounce), written in the same transaction.
    pub suppress: Option<SuppressionRecord>,
}

/// Scheduled recipients a claim leased become queued (SQLite's claim leaves them scheduled,
/// see `store::sqlite`; `ids` padded by `write::padded`, so that a few shapes stay prepared).
fn promote_sql(ids: usize) -> String {
    format!(
        "UPDATE recipients SET status = 'queued' WHERE status = 'scheduled' AND id IN ({})",
        super::write::placeholders(1, ids)
    )
}

/// A recipient a claim leased, as the statement returns it.
pub(super) struct ClaimRow {
    id: String,
    email_id: String,
    address: String,
    attempts: i64,
    deadline_at: i64,
}

/// The claimed recipients still scheduled (on SQLite, whose claim leaves the status alone),
/// padded for [`promote_sql`].
fn still_scheduled(rows: &[(ClaimRow, String)]) -> Vec<&str> {
    let ids: Vec<&str> = rows
        .iter()
        .filter(|(_, status)| status == "scheduled")
        .map(|(r, _)| r.id.as_str())
        .collect();
    padded(&ids).collect()
}

/// Leases up to `limit` due recipients to `owner` until `now + lease_ms` (inside the writer's
/// transaction: the claim commits with whatever else the batch holds).
pub(super) async fn claim_rows(
    tx: &mut dyn Tx,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
    limit: usize,
) -> StoreResult<Vec<ClaimRow>> {
    let dialect = tx.dialect();
    let params = [
        Val::Text(owner),
        Val::Int(now_ms + lease_ms),
        Val::Int(now_ms),
        Val::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
    ];
    let rows = tx
        .query(dialect.claim, &params)
        .await?
        .iter()
        .map(|r| {
            let row = ClaimRow {
                id: r.get(0)?,
                email_id: r.get(1)?,
                address: r.get(2)?,
                attempts: r.get(3)?,
                deadline_at: r.get(4)?,
            };
            Ok((row, r.get(5)?))
        })
        .collect::<StoreResult<Vec<(ClaimRow, String)>>>()?;
    let scheduled = still_scheduled(&rows);
    if dialect.claim_leaves_scheduled && !scheduled.is_empty() {
        let params = texts(&[], scheduled.iter().copied());
        tx.execute(&promote_sql(scheduled.len()), &params).await?;
    }
    Ok(rows.into_iter().map(|(r, _)| r).collect())
}

impl Store {
    /// Leases up to `limit` due recipients to `owner` until `now + lease_ms`, grouped by email.
    pub async fn claim_due_recipients(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<ClaimedEmail>> {
        let rows = self
            .writer
            .submit_claim(owner.to_owned(), now_ms, lease_ms, limit)
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut by_email: HashMap<String, Vec<ClaimedRecipient>> = HashMap::new();
        for r in rows {
            by_email
                .entry(r.email_id)
                .or_default()
                .push(ClaimedRecipient {
                    id: r.id,
                    address: r.address,
                    attempts: r.attempts,
                    deadline_at: r.deadline_at,
                });
        }
        let ids: Vec<&str> = by_email.keys().map(String::as_str).collect();
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT id, project_id, mime, expires_at, stream FROM emails WHERE id IN ({})",
            padded_placeholders(1, ids.len())
        ));
        let mut q = sqlx::query(sql);
        for id in padded(&ids) {
            q = q.bind(id);
        }
        let email_rows = q.fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(email_rows.len());
        for r in &email_rows {
            let id: String = r.try_get(0)?;
            let recipients = by_email.remove(&id).unwrap_or_default();
            out.push(ClaimedEmail {
                id,
                project_id: r.try_get(1)?,
                mime: r.try_get::<Option<Vec<u8>>, _>(2)?.unwrap_or_default(),
                expires_at: r.try_get(3)?,
                stream: r.try_get(4)?,
                recipients,
            });
        }
        Ok(out)
    }

    /// Writes outcomes with their events. Each write is fenced by the lease (those whose lease
    /// was lost are not applied). They are committed by the store's single writer, with
    /// whatever else it is writing at the time (one fsync for all).
    pub async fn record_outcomes(
        &self,
        owner: &str,
        outcomes: Vec<Outcome>,
    ) -> StoreResult<Recorded> {
        self.writer
            .submit_outcomes(owner.to_owned(), outcomes)
            .await
    }
    /// Extends the leases of `ids` that `owner` still holds to `until` (a worker still
    /// sending them).
    pub async fn renew_leases(&self, owner: &str, ids: &[&str], until: i64) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            concat!(
                "UPDATE recipients SET lease_expires_at = $1, next_attempt_at = $1 \
                 WHERE lease_owner = $2 AND ",
                pending!(),
                " AND id IN ({})"
            ),
            padded_placeholders(3, ids.len())
        );
        let mut params = vec![until.into(), owner.into()];
        params.extend(padded(ids).map(Owned::from));
        self.execute(sql, params).await
    }

    /// Gives back every lease `owner` holds, due at once (graceful shutdown).
    pub async fn release_leases(&self, owner: &str, now_ms: i64) -> StoreResult<u64> {
        let sql = concat!(
            "UPDATE recipients SET lease_owner = NULL, lease_expires_at = NULL, \
             next_attempt_at = $1 WHERE lease_owner = $2 AND ",
            pending!()
        );
        self.execute(sql, vec![now_ms.into(), owner.into()]).await
    }

    /// How many recipients have `status`.
    pub async fn count_with_status(&self, status: &str) -> StoreResult<i64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM recipients WHERE status = $1")
            .bind(status)
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// The figures `/metrics` reads from the database.
    pub async fn queue_snapshot(&self, now_ms: i64) -> StoreResult<crate::metrics::QueueSnapshot> {
        let depth = sqlx::query(concat!(
            "SELECT status, COUNT(*) FROM recipients WHERE ",
            pending!(),
            " GROUP BY status"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
        .collect::<StoreResult<Vec<_>>>()?;
        let oldest: Option<i64> = sqlx::query_scalar(concat!(
            "SELECT MIN(next_attempt_at) FROM recipients WHERE ",
            pending!(),
            " AND next_attempt_at <= $1"
        ))
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(crate::metrics::QueueSnapshot {
            queue_depth: depth,
            oldest_due_seconds: oldest.map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0),
            webhook_backlog: self.count_pending_webhooks().await?,
            writer: self.writer.figures(),
        })
    }

    /// One project's waiting recipients (queued, scheduled, delayed), the longest a due one
    /// has waited (ms), and its webhook deliveries not yet made: the console's overview.
    pub async fn project_queue(&self, project_id: &str, now_ms: i64) -> StoreResult<ProjectQueue> {
        let r = sqlx::query(concat!(
            "SELECT COUNT(*), MIN(CASE WHEN next_attempt_at <= $2 THEN next_attempt_at END) \
             FROM recipients WHERE project_id = $1 AND ",
            pending!()
        ))
        .bind(project_id)
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        let oldest: Option<i64> = r.try_get(1)?;
        let webhook_backlog: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE project_id = $1 AND status = 'pending'",
        )
        .bind(project_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(ProjectQueue {
            waiting: r.try_get(0)?,
            oldest_due_ms: oldest.map(|t| (now_ms - t).max(0)),
            webhook_backlog,
        })
    }

    /// Recipients still waiting for delivery (queued, scheduled, delayed), for tests and health.
    pub async fn count_pending(&self) -> StoreResult<i64> {
        let n: i64 = sqlx::query_scalar(concat!(
            "SELECT COUNT(*) FROM recipients WHERE ",
            pending!()
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }
}

/// Writes the outcomes of every `(owner, outcomes)` batch inside `tx`: one `UPDATE` for all of
/// them, fenced by each recipient's lease owner and pending status, then the events (and hard
/// bounces' suppressions) of those applied. Returns how many of each batch were applied.
pub(super) async fn apply_outcomes(
    tx: &mut dyn Tx,
    outbox: &mut Outbox,
    batches: &[(&str, &[Outcome])],
) -> StoreResult<Vec<usize>> {
    let mut applied: HashSet<(&str, &str)> = HashSet::new();
    for round in &rounds(batches) {
        let rows: Vec<Vec<Val<'_>>> = round
            .iter()
            .map(|(owner, o)| outcome_row(owner, o))
            .collect();
        let changed = tx.update_from_values(13, &rows, &outcome_update).await?;
        applied.extend(changed_of(round, &changed));
    }
    let (counts, events, mut suppressions) = applied_outcomes(batches, &applied);
    // In address order: two writers adding the same two addresses lock them in one order.
    suppressions.sort_by(|a, b| (&a.project_id, &a.email).cmp(&(&b.project_id, &b.email)));
    for sup in suppressions {
        insert_suppression(tx, sup).await?;
    }
    // The events of every applied outcome, in one statement.
    insert_events(tx, outbox, &events).await?;
    Ok(counts)
}

/// The outcomes' `UPDATE`, given the statement's verb and its `VALUES … AS v` list.
fn outcome_update(update: &str, values: &str) -> String {
    format!(
        "{update} recipients SET status = v.column3, \
         attempts = recipients.attempts + v.column5, next_attempt_at = v.column4, \
         lease_owner = NULL, lease_expires_at = NULL, smtp_code = v.column6, \
         smtp_enhanced = v.column7, smtp_response = v.column8, smtp_phase = v.column9, \
         bounce_type = v.column10, bounce_sub_type = v.column11, \
         sent_at = COALESCE(v.column12, recipients.sent_at), last_event_at = v.column13 \
         FROM {values} \
         WHERE recipients.id = v.column1 AND recipients.lease_owner = v.column2 \
         AND {} RETURNING recipients.id",
        pending!("recipients")
    )
}

/// The outcomes of a round whose recipients its `UPDATE` changed.
fn changed_of<'a>(round: &[(&'a str, &'a Outcome)], changed: &[String]) -> Vec<(&'a str, &'a str)> {
    let changed: HashSet<&str> = changed.iter().map(String::as_str).collect();
    round
        .iter()
        .filter(|(_, o)| changed.contains(o.recipient_id.as_str()))
        .map(|(owner, o)| (*owner, o.recipient_id.as_str()))
        .collect()
}

/// What the applied outcomes write after their `UPDATE`: how many of each batch were applied,
/// their events, and the suppressions (hard bounces) they add.
fn applied_outcomes<'a>(
    batches: &[(&'a str, &'a [Outcome])],
    applied: &HashSet<(&str, &str)>,
) -> (Vec<usize>, Vec<EventRow<'a>>, Vec<&'a SuppressionRecord>) {
    let mut counts = Vec::with_capacity(batches.len());
    let mut events = Vec::with_capacity(applied.len());
    let mut suppressions = Vec::new();
    for (owner, outcomes) in batches {
        let mut n = 0;
        for o in outcomes
            .iter()
            .filter(|o| applied.contains(&(*owner, o.recipient_id.as_str())))
        {
            n += 1;
            events.push(EventRow {
                project_id: &o.project_id,
                email_id: Some(&o.email_id),
                stream: Some(&o.stream),
                event: &o.event,
            });
            if let Some(sup) = &o.suppress {
                suppressions.push(sup);
            }
        }
        counts.push(n);
    }
    (counts, events, suppressions)
}

/// The outcomes in rounds of one statement each. A statement's RETURNING names the
/// recipients it changed, not which of their rows did it: a recipient must appear once per
/// statement. (Twice happens only when a lease passed to another worker while the first was
/// still sending; its outcome goes in a second statement, which its lost lease then refuses.)
fn rounds<'a>(batches: &[(&'a str, &'a [Outcome])]) -> Vec<Vec<(&'a str, &'a Outcome)>> {
    let mut rounds: Vec<Vec<(&str, &Outcome)>> = Vec::new();
    let mut seen: Vec<HashSet<&str>> = Vec::new();
    for (owner, outcomes) in batches {
        for o in outcomes.iter() {
            let round = match seen
                .iter()
                .position(|s| !s.contains(o.recipient_id.as_str()))
            {
                Some(i) => i,
                None => {
                    rounds.push(Vec::new());
                    seen.push(HashSet::new());
                    rounds.len() - 1
                }
            };
            seen[round].insert(&o.recipient_id);
            rounds[round].push((owner, o));
        }
    }
    rounds
}

/// An outcome's values, in the order of `apply_outcomes`' `v.column1…13`.
fn outcome_row<'a>(owner: &'a str, o: &'a Outcome) -> Vec<Val<'a>> {
    vec![
        Val::Text(&o.recipient_id),
        Val::Text(owner),
        Val::Text(o.status.as_str()),
        Val::Int(o.next_attempt_at),
        Val::Int(o.attempts_delta),
        Val::OptInt(o.smtp_code),
        Val::OptText(o.smtp_enhanced.as_deref()),
        Val::OptText(o.smtp_response.as_deref()),
        Val::OptText(o.smtp_phase.as_deref()),
        Val::OptText(o.bounce_type.as_deref()),
        Val::OptText(o.bounce_sub_type.as_deref()),
        Val::OptInt(o.sent_at),
        Val::Int(o.event.created_at),
    ]
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use crate::store::{Store, sqlite};

    /// The claim reads the due index in order and reaches each row by its key: O(batch),
    /// however long the queue (the plan SQLite chose, not a copy of the statement).
    #[tokio::test]
    async fn sqlite_claim_walks_the_due_index() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("herald.db").display());
        let store = Store::open(&url, 2).await.expect("store");
        let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            sqlite::DIALECT.claim
        )))
        .bind("w")
        .bind(2_i64)
        .bind(1_i64)
        .bind(64_i64)
        .fetch_all(&store.pool)
        .await
        .expect("plan")
        .iter()
        .map(|r| r.try_get::<String, _>(3).expect("detail"))
        .collect();
        assert!(
            plan.iter()
                .any(|s| s.starts_with("SEARCH recipients USING INDEX recipients_due")),
            "{plan:?}"
        );
        assert!(
            plan.iter()
                .any(|s| s.contains("INDEX sqlite_autoindex_recipients_1 (id=?)")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|s| s.starts_with("SCAN")), "{plan:?}");
        assert!(!plan.iter().any(|s| s.contains("TEMP B-TREE")), "{plan:?}");
        store.close().await;
    }

    /// Writing a recipient tests the claim index's predicate on the row (on the row before
    /// and after, for an update) without building a temporary B-tree: an `IN` list of three
    /// values would be one, built afresh for every row (migration 0012).
    #[tokio::test]
    async fn sqlite_writing_a_recipient_builds_no_temporary_btree() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("herald.db").display());
        let store = Store::open(&url, 2).await.expect("store");
        for sql in [
            "UPDATE recipients SET status = 'sent', next_attempt_at = 1 WHERE id = 'r'",
            "INSERT INTO recipients (id, email_id, project_id, position, address, kind, status, \
             next_attempt_at, deadline_at, last_event_at) \
             VALUES ('r', 'e', 'p', 0, 'a@b', 'to', 'queued', 1, 2, 3)",
        ] {
            let opcodes: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
                .fetch_all(&store.pool)
                .await
                .expect("program")
                .iter()
                .map(|r| r.try_get::<String, _>(1).expect("opcode"))
                .collect();
            assert!(
                opcodes.iter().any(|o| o == "IdxInsert"),
                "{sql}: {opcodes:?}"
            );
            assert!(
                !opcodes.iter().any(|o| o == "OpenEphemeral"),
                "{sql}: {opcodes:?}"
            );
        }
        store.close().await;
    }
}

/// A project's queue as the console's overview shows it.
#[derive(Debug, Clone, Copy)]
pub struct ProjectQueue {
    pub waiting: i64,
    /// How long the longest-waiting due recipient has waited, if one is due.
    pub oldest_due_ms: Option<i64>,
    pub webhook_backlog: i64,
}

//! Webhook endpoints, the delivery outbox, and the attempt log.
//!
//! [`enqueue_deliveries`] runs inside the transaction that inserts an event: it looks up the
//! project's enabled endpoints (once per transaction and project) and writes one delivery row
//! for each endpoint whose filters take the event. The dispatcher claims due deliveries with a
//! lease exactly as the mail queue claims recipients.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};
use uuid::Uuid;

use crate::domain::event::filter_matches;

use super::bulk::{TableRows, Val, insert_rows};
use super::emails::NewEvent;
use super::lite::Lite;
use super::stats::StatsLog;
use super::{Backend, Store, StoreError, StoreResult, padded, padded_placeholders, placeholders};

#[derive(Debug, Clone)]
pub struct EndpointRecord {
    pub id: String,
    pub project_id: String,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    /// Empty: every stream.
    pub streams: Vec<String>,
    pub status: String,
    pub disabled_reason: Option<String>,
    /// Sealed (see `domain::sealing`).
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const ENDPOINT_COLUMNS: &str = "id, project_id, url, description, event_types, streams, status, \
     disabled_reason, secret, previous_secret, previous_secret_expires_at, created_at, updated_at";

fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn endpoint_from_row(r: &AnyRow) -> StoreResult<EndpointRecord> {
    Ok(EndpointRecord {
        id: r.try_get(0)?,
        project_id: r.try_get(1)?,
        url: r.try_get(2)?,
        description: r.try_get(3)?,
        event_types: json_list(&r.try_get::<String, _>(4)?),
        streams: json_list(&r.try_get::<String, _>(5)?),
        status: r.try_get(6)?,
        disabled_reason: r.try_get(7)?,
        secret: r.try_get(8)?,
        previous_secret: r.try_get(9)?,
        previous_secret_expires_at: r.try_get(10)?,
        created_at: r.try_get(11)?,
        updated_at: r.try_get(12)?,
    })
}

/// What one enabled endpoint wants to hear about.
#[derive(Debug, Clone)]
pub(super) struct Subscription {
    endpoint_id: String,
    event_types: Vec<String>,
    /// Empty: every stream.
    streams: Vec<String>,
}

impl Subscription {
    fn takes(&self, event_type: &str, stream: Option<&str>) -> bool {
        let stream_ok =
            self.streams.is_empty() || stream.is_some_and(|s| self.streams.iter().any(|x| x == s));
        stream_ok && filter_matches(&self.event_types, event_type)
    }
}

async fn subscriptions(tx: &mut AnyConnection, project_id: &str) -> StoreResult<Vec<Subscription>> {
    let rows = sqlx::query(
        "SELECT id, event_types, streams FROM webhook_endpoints \
         WHERE project_id = $1 AND status = 'enabled'",
    )
    .bind(project_id)
    .fetch_all(&mut *tx)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Subscription {
                endpoint_id: r.try_get(0)?,
                event_types: json_list(&r.try_get::<String, _>(1)?),
                streams: json_list(&r.try_get::<String, _>(2)?),
            })
        })
        .collect()
}

/// What a transaction that writes events owes besides the events: the enabled endpoints of
/// projects (loaded once per transaction, for the webhook deliveries) and the stats
/// increments (flushed by [`Outbox::commit`]).
#[derive(Default)]
pub(super) struct Outbox {
    endpoints: HashMap<String, Vec<Subscription>>,
    pub(super) stats: StatsLog,
    /// Set when the events being written repeat a state the stats already counted.
    pub(super) uncounted: bool,
    /// Webhook deliveries written (the dispatcher has work when this is not 0).
    pub(super) announced: usize,
}

/// The enabled endpoints of projects, kept a second by the group-commit writer so that its
/// batches do not look them up again and again. The store's own endpoint writes clear it at
/// once; another process's changes are seen within the second.
pub(super) type EndpointCache = crate::cache::TtlCache<Vec<Subscription>>;

impl Outbox {
    /// Takes the endpoints of `projects` that `cache` holds, so this transaction need not look
    /// them up.
    pub(super) fn use_cached_endpoints<'a>(
        &mut self,
        cache: &EndpointCache,
        projects: impl IntoIterator<Item = &'a str>,
    ) {
        for p in projects {
            if !self.endpoints.contains_key(p)
                && let Some(list) = cache.get(p)
            {
                self.endpoints.insert(p.to_owned(), list);
            }
        }
    }

    /// Gives `cache` the endpoints this transaction looked up.
    pub(super) fn remember_endpoints(&self, cache: &EndpointCache) {
        for (p, list) in &self.endpoints {
            cache.put(p.clone(), list.clone());
        }
    }

    /// Writes the stats increments and commits.
    pub(super) async fn commit(mut self, mut tx: Transaction<'_, Any>) -> StoreResult<()> {
        self.stats.flush(&mut tx, &[]).await.map_err(|p| p.error)?;
        tx.commit().await?;
        Ok(())
    }
}

/// An event being written, with what decides who hears of it.
pub(super) struct EventRow<'a> {
    pub project_id: &'a str,
    pub email_id: Option<&'a str>,
    pub stream: Option<&'a str>,
    pub event: &'a NewEvent,
}

/// Writes the deliveries that announce `events` (in the events' own transaction), in one
/// statement.
pub(super) async fn enqueue_deliveries(
    tx: &mut AnyConnection,
    outbox: &mut Outbox,
    events: &[EventRow<'_>],
) -> StoreResult<()> {
    outbox
        .load_endpoints(tx, events.iter().map(|r| r.project_id))
        .await?;
    let deliveries = outbox.deliveries(events)?;
    let rows = delivery_rows(&deliveries);
    insert_rows(tx, "webhook_deliveries", &DELIVERY_COLUMNS, &rows).await
}

/// [`enqueue_deliveries`] on the group-commit writer's own connection: the endpoints of the
/// events' projects must be loaded already.
pub(super) fn enqueue_deliveries_lite(
    lite: &mut Lite,
    outbox: &mut Outbox,
    events: &[EventRow<'_>],
) -> StoreResult<()> {
    let deliveries = outbox.deliveries(events)?;
    let rows = delivery_rows(&deliveries);
    let table = TableRows {
        table: "webhook_deliveries",
        cols: &DELIVERY_COLUMNS,
        rows: &rows,
    };
    lite.write_tables(&[(&table, "")])
}

/// A pending delivery: its id, endpoint, project, event and time.
type Delivery<'a> = (String, String, &'a str, &'a str, i64);

impl Outbox {
    /// Whether this transaction knows the enabled endpoints of `project`.
    pub(super) fn has_endpoints(&self, project: &str) -> bool {
        self.endpoints.contains_key(project)
    }

    /// Looks up the enabled endpoints of those of `projects` this transaction has not seen.
    pub(super) async fn load_endpoints<'a>(
        &mut self,
        tx: &mut AnyConnection,
        projects: impl Iterator<Item = &'a str>,
    ) -> StoreResult<()> {
        for p in projects {
            if !self.endpoints.contains_key(p) {
                let list = subscriptions(tx, p).await?;
                self.endpoints.insert(p.to_owned(), list);
            }
        }
        Ok(())
    }

    /// The deliveries that announce `events`, counted as announced. Every event's project's
    /// endpoints must be loaded ([`Outbox::load_endpoints`]).
    fn deliveries<'a>(&mut self, events: &[EventRow<'a>]) -> StoreResult<Vec<Delivery<'a>>> {
        let mut deliveries = Vec::new();
        for row in events {
            let Some(endpoints) = self.endpoints.get(row.project_id) else {
                return Err(StoreError::Unavailable(format!(
                    "the webhook endpoints of project {} were not looked up",
                    row.project_id
                )));
            };
            for sub in endpoints
                .iter()
                .filter(|s| s.takes(&row.event.event_type, row.stream))
            {
                deliveries.push((
                    Uuid::now_v7().to_string(),
                    sub.endpoint_id.clone(),
                    row.project_id,
                    row.event.id.as_str(),
                    row.event.created_at,
                ));
            }
        }
        self.announced += deliveries.len();
        Ok(deliveries)
    }
}

fn delivery_rows<'a>(deliveries: &'a [Delivery<'_>]) -> Vec<Vec<Val<'a>>> {
    deliveries
        .iter()
        .map(|(id, endpoint, project, event, at)| delivery_row(id, endpoint, project, event, *at))
        .collect()
}

const DELIVERY_COLUMNS: [&str; 9] = [
    "id",
    "endpoint_id",
    "project_id",
    "event_id",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
    "updated_at",
];

async fn insert_delivery(
    tx: &mut AnyConnection,
    endpoint_id: &str,
    project_id: &str,
    event_id: &str,
    now: i64,
) -> StoreResult<String> {
    let id = Uuid::now_v7().to_string();
    insert_rows(
        tx,
        "webhook_deliveries",
        &DELIVERY_COLUMNS,
        &[delivery_row(&id, endpoint_id, project_id, event_id, now)],
    )
    .await?;
    Ok(id)
}

/// A pending delivery's values, in [`DELIVERY_COLUMNS`] order.
fn delivery_row<'a>(
    id: &'a str,
    endpoint_id: &'a str,
    project_id: &'a str,
    event_id: &'a str,
    now: i64,
) -> Vec<Val<'a>> {
    vec![
        Val::Text(id),
        Val::Text(endpoint_id),
        Val::Text(project_id),
        Val::Text(event_id),
        Val::Text("pending"),
        Val::Int(0),
        Val::Int(now),
        Val::Int(now),
        Val::Int(now),
    ]
}

/// A delivery a dispatcher holds, with everything needed to build and sign its request.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub endpoint_id: String,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    pub event_id: String,
    pub event_type: String,
    pub event_data: String,
    pub event_created_at: i64,
    pub recipient: Option<String>,
    pub email: Option<DeliveryEmail>,
}

/// The email an event is about, as webhook payloads echo it.
#[derive(Debug, Clone)]
pub struct DeliveryEmail {
    pub id: String,
    pub message_id: String,
    pub stream: String,
    pub from_email: String,
    pub from_name: Option<String>,
    pub subject: String,
    pub tags: String,
    pub metadata: String,
    pub created_at: i64,
}

/// One attempt's result, with what becomes of the delivery.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub attempt: i64,
    pub succeeded: bool,
    pub status_code: Option<i64>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub attempted_at: i64,
    /// `Some`: try again then; `None`: the delivery is over.
    pub next_attempt_at: Option<i64>,
    /// Disable the endpoint, for this reason (410 Gone, or failing past the schedule).
    pub disable_endpoint: Option<String>,
}

/// A row of the attempt log.
#[derive(Debug, Clone)]
pub struct AttemptLogRecord {
    pub id: String,
    pub delivery_id: String,
    pub event_id: String,
    pub attempt: i64,
    pub succeeded: bool,
    pub status_code: Option<i64>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub attempted_at: i64,
    pub next_attempt_at: Option<i64>,
}

const CLAIM_SQLITE: &str = "UPDATE webhook_deliveries SET lease_owner = $1, lease_expires_at = $2, \
     next_attempt_at = $2 WHERE id IN (SELECT id FROM webhook_deliveries \
       WHERE status = 'pending' AND next_attempt_at <= $3 ORDER BY next_attempt_at LIMIT $4) \
     RETURNING id";
const CLAIM_POSTGRES: &str = "UPDATE webhook_deliveries SET lease_owner = $1, lease_expires_at = $2, \
     next_attempt_at = $2 WHERE id IN (SELECT id FROM webhook_deliveries \
       WHERE status = 'pending' AND next_attempt_at <= $3 ORDER BY next_attempt_at LIMIT $4 \
       FOR UPDATE SKIP LOCKED) \
     RETURNING id";

impl Store {
    pub async fn insert_webhook_endpoint(&self, e: &EndpointRecord) -> StoreResult<()> {
        self.insert_webhook_endpoint_once(e, None).await
    }

    /// Inserts an endpoint and, with an `Idempotency-Key`, its record in the same transaction.
    pub async fn insert_webhook_endpoint_once(
        &self,
        e: &EndpointRecord,
        idempotency: Option<&super::IdempotencyRecord>,
    ) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
        if let Some(idem) = idempotency {
            super::emails::insert_idempotency(&mut tx, idem).await?;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        )))
        .bind(&e.id)
        .bind(&e.project_id)
        .bind(&e.url)
        .bind(e.description.as_deref())
        .bind(serde_json::json!(e.event_types).to_string())
        .bind(serde_json::json!(e.streams).to_string())
        .bind(&e.status)
        .bind(e.disabled_reason.as_deref())
        .bind(&e.secret)
        .bind(e.previous_secret.as_deref())
        .bind(e.previous_secret_expires_at)
        .bind(e.created_at)
        .bind(e.updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.endpoints.clear();
        Ok(())
    }

    pub async fn get_webhook_endpoint(
        &self,
        project_id: &str,
        id: &str,
    ) -> StoreResult<EndpointRecord> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE project_id = $1 AND id = $2"
        )))
        .bind(project_id)
        .bind(id)
        .fetch_optional(&self.write)
        .await?
        .ok_or(StoreError::NotFound)?;
        endpoint_from_row(&row)
    }

    pub async fn list_webhook_endpoints(
        &self,
        project_id: &str,
    ) -> StoreResult<Vec<EndpointRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE project_id = $1 ORDER BY id"
        )))
        .bind(project_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    /// Saves every mutable field. An endpoint that is no longer enabled drops its pending
    /// deliveries (consumers reconcile with `GET /v1/events` or ask for a redelivery).
    pub async fn update_webhook_endpoint(&self, e: &EndpointRecord) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET url = $1, description = $2, event_types = $3, \
             streams = $4, status = $5, disabled_reason = $6, secret = $7, previous_secret = $8, \
             previous_secret_expires_at = $9, updated_at = $10 WHERE project_id = $11 AND id = $12",
        )
        .bind(&e.url)
        .bind(e.description.as_deref())
        .bind(serde_json::json!(e.event_types).to_string())
        .bind(serde_json::json!(e.streams).to_string())
        .bind(&e.status)
        .bind(e.disabled_reason.as_deref())
        .bind(&e.secret)
        .bind(e.previous_secret.as_deref())
        .bind(e.previous_secret_expires_at)
        .bind(e.updated_at)
        .bind(&e.project_id)
        .bind(&e.id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        if e.status != "enabled" {
            cancel_pending(&mut tx, &e.id, e.updated_at).await?;
        }
        tx.commit().await?;
        self.endpoints.clear();
        Ok(())
    }

    pub async fn delete_webhook_endpoint(
        &self,
        project_id: &str,
        id: &str,
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE project_id = $1 AND id = $2")
            .bind(project_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        cancel_pending(&mut tx, id, now).await?;
        tx.commit().await?;
        self.endpoints.clear();
        Ok(())
    }

    /// Leases up to `limit` due deliveries to `owner` and loads what their requests need.
    pub async fn claim_webhook_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<DueDelivery>> {
        let claim = match self.backend {
            Backend::Sqlite => CLAIM_SQLITE,
            Backend::Postgres => CLAIM_POSTGRES,
        };
        let ids: Vec<String> = sqlx::query(claim)
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.write)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT d.id, d.attempts, w.id, w.url, w.secret, w.previous_secret, \
             w.previous_secret_expires_at, e.id, e.type, e.data, e.created_at, e.recipient, \
             m.id, m.message_id, m.stream, m.from_email, m.from_name, m.subject, m.tags, \
             m.metadata, m.created_at, w.status \
             FROM webhook_deliveries d \
             JOIN webhook_endpoints w ON w.id = d.endpoint_id \
             JOIN events e ON e.id = d.event_id \
             LEFT JOIN emails m ON m.id = e.email_id \
             WHERE d.id IN ({})",
            padded_placeholders(1, ids.len())
        ));
        let mut q = sqlx::query(sql);
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        for id in padded(&ids) {
            q = q.bind(id);
        }
        let rows = q.fetch_all(&self.read).await?;
        // A delivery written for an endpoint disabled since (by a writer that still had it
        // as enabled: another process, or one within the endpoint cache's second) is canceled
        // here, as disabling cancels those already waiting.
        let (rows, stale): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|r| r.try_get::<String, _>(21).is_ok_and(|s| s == "enabled"));
        if !stale.is_empty() {
            let sql = sqlx::AssertSqlSafe(format!(
                "UPDATE webhook_deliveries SET status = 'canceled', lease_owner = NULL, \
                 updated_at = $1 WHERE status = 'pending' AND id IN ({})",
                placeholders(2, stale.len())
            ));
            let mut q = sqlx::query(sql).persistent(false).bind(now);
            for r in &stale {
                q = q.bind(r.try_get::<String, _>(0)?);
            }
            q.execute(&self.write).await?;
        }
        rows.iter()
            .map(|r| {
                let email = match r.try_get::<Option<String>, _>(12)? {
                    Some(id) => Some(DeliveryEmail {
                        id,
                        message_id: r.try_get(13)?,
                        stream: r.try_get(14)?,
                        from_email: r.try_get(15)?,
                        from_name: r.try_get(16)?,
                        subject: r.try_get(17)?,
                        tags: r.try_get(18)?,
                        metadata: r.try_get(19)?,
                        created_at: r.try_get(20)?,
                    }),
                    None => None,
                };
                Ok(DueDelivery {
                    id: r.try_get(0)?,
                    attempts: r.try_get(1)?,
                    endpoint_id: r.try_get(2)?,
                    url: r.try_get(3)?,
                    secret: r.try_get(4)?,
                    previous_secret: r.try_get(5)?,
                    previous_secret_expires_at: r.try_get(6)?,
                    event_id: r.try_get(7)?,
                    event_type: r.try_get(8)?,
                    event_data: r.try_get(9)?,
                    event_created_at: r.try_get(10)?,
                    recipient: r.try_get(11)?,
                    email,
                })
            })
            .collect()
    }

    /// Records an attempt and its consequence, fenced by the lease. Returns false if the
    /// lease was lost (another dispatcher took the delivery over).
    pub async fn record_webhook_attempt(
        &self,
        owner: &str,
        a: &AttemptRecord,
    ) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        let status = match (a.succeeded, a.next_attempt_at) {
            (true, _) => "succeeded",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, \
             next_attempt_at = $2, lease_owner = NULL, lease_expires_at = NULL, \
             last_status_code = $3, updated_at = $4 \
             WHERE id = $5 AND lease_owner = $6 AND status = 'pending'",
        )
        .bind(status)
        .bind(a.next_attempt_at.unwrap_or(a.attempted_at))
        .bind(a.status_code)
        .bind(a.attempted_at)
        .bind(&a.delivery_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (id, delivery_id, endpoint_id, event_id, attempt, \
             succeeded, status_code, response_body, error, duration_ms, attempted_at, \
             next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(&a.delivery_id)
        .bind(&a.endpoint_id)
        .bind(&a.event_id)
        .bind(a.attempt)
        .bind(i64::from(a.succeeded))
        .bind(a.status_code)
        .bind(a.response_body.as_deref())
        .bind(a.error.as_deref())
        .bind(a.duration_ms)
        .bind(a.attempted_at)
        .bind(a.next_attempt_at)
        .execute(&mut *tx)
        .await?;
        if let Some(reason) = &a.disable_endpoint {
            sqlx::query(
                "UPDATE webhook_endpoints SET status = 'auto_disabled', disabled_reason = $1, \
                 updated_at = $2 WHERE id = $3 AND status = 'enabled'",
            )
            .bind(reason)
            .bind(a.attempted_at)
            .bind(&a.endpoint_id)
            .execute(&mut *tx)
            .await?;
            cancel_pending(&mut tx, &a.endpoint_id, a.attempted_at).await?;
        }
        tx.commit().await?;
        if a.disable_endpoint.is_some() {
            self.endpoints.clear();
        }
        Ok(true)
    }

    /// The endpoint's attempt log, newest first; `succeeded` filters by outcome.
    pub async fn list_webhook_attempts(
        &self,
        endpoint_id: &str,
        succeeded: Option<bool>,
        before: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<AttemptLogRecord>> {
        let rows = sqlx::query(
            "SELECT id, delivery_id, event_id, attempt, succeeded, status_code, response_body, \
             error, duration_ms, attempted_at, next_attempt_at FROM webhook_attempts \
             WHERE endpoint_id = $1 AND ($2 < 0 OR succeeded = $2) AND ($3 = '' OR id < $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(endpoint_id)
        .bind(succeeded.map_or(-1, i64::from))
        .bind(before.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptLogRecord {
                    id: r.try_get(0)?,
                    delivery_id: r.try_get(1)?,
                    event_id: r.try_get(2)?,
                    attempt: r.try_get(3)?,
                    succeeded: r.try_get::<i64, _>(4)? != 0,
                    status_code: r.try_get(5)?,
                    response_body: r.try_get(6)?,
                    error: r.try_get(7)?,
                    duration_ms: r.try_get(8)?,
                    attempted_at: r.try_get(9)?,
                    next_attempt_at: r.try_get(10)?,
                })
            })
            .collect()
    }

    /// Makes one of the endpoint's deliveries due now, whatever became of it.
    pub async fn retry_webhook_delivery(
        &self,
        endpoint_id: &str,
        delivery_id: &str,
        now: i64,
    ) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
             WHERE endpoint_id = $2 AND id = $3",
        )
        .bind(now)
        .bind(endpoint_id)
        .bind(delivery_id)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Queues the event again for every enabled endpoint that takes it; returns how many.
    pub async fn redeliver_event(
        &self,
        project_id: &str,
        event_id: &str,
        now: i64,
    ) -> StoreResult<usize> {
        let mut tx = self.write.begin().await?;
        let row = sqlx::query(
            "SELECT e.type, m.stream FROM events e LEFT JOIN emails m ON m.id = e.email_id \
             WHERE e.project_id = $1 AND e.id = $2",
        )
        .bind(project_id)
        .bind(event_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let event_type: String = row.try_get(0)?;
        let stream: Option<String> = row.try_get(1)?;
        let mut n = 0;
        for sub in subscriptions(&mut tx, project_id).await? {
            if sub.takes(&event_type, stream.as_deref()) {
                insert_delivery(&mut tx, &sub.endpoint_id, project_id, event_id, now).await?;
                n += 1;
            }
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Records a `webhook.test` event and its delivery to this endpoint only.
    pub async fn create_test_delivery(
        &self,
        project_id: &str,
        endpoint_id: &str,
        now: i64,
    ) -> StoreResult<(String, String)> {
        let mut tx = self.write.begin().await?;
        let event = NewEvent::new(
            None,
            None,
            "webhook.test",
            serde_json::json!({"webhook_id": endpoint_id}),
            now,
        );
        sqlx::query(
            "INSERT INTO events (id, project_id, email_id, recipient_id, recipient, type, data, \
             created_at) VALUES ($1, $2, NULL, NULL, NULL, $3, $4, $5)",
        )
        .bind(&event.id)
        .bind(project_id)
        .bind(&event.event_type)
        .bind(&event.data)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let delivery = insert_delivery(&mut tx, endpoint_id, project_id, &event.id, now).await?;
        tx.commit().await?;
        Ok((event.id, delivery))
    }

    /// Pending webhook deliveries (the backlog), for tests and metrics.
    pub async fn count_pending_webhooks(&self) -> StoreResult<i64> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'")
                .fetch_one(&self.read)
                .await?;
        Ok(n)
    }
}

async fn cancel_pending(tx: &mut AnyConnection, endpoint_id: &str, now: i64) -> StoreResult<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'canceled', lease_owner = NULL, updated_at = $1 \
         WHERE endpoint_id = $2 AND status = 'pending'",
    )
    .bind(now)
    .bind(endpoint_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

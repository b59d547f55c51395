//! Webhook endpoints, the delivery outbox, and the attempt log.
//!
//! [`enqueue_deliveries`] runs inside the transaction that inserts an event: it looks up the
//! project's enabled endpoints (once per transaction and project) and writes one delivery row
//! for each endpoint whose filters take the event. The dispatcher claims due deliveries with a
//! lease exactly as the mail queue claims recipients.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::Row as _;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::domain::event::{EventData, EventType, filter_matches};
use crate::domain::states::EndpointStatus;

use super::emails::{NewEvent, json_text};
use super::stats::StatsLog;
use super::write::{Owned, TableRows, Tx, Val, padded, padded_placeholders, placeholders, texts};
use super::{Store, StoreError, StoreResult, stored};

#[derive(Debug, Clone)]
pub struct EndpointRecord {
    pub id: String,
    pub project_id: String,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    /// Empty: every stream.
    pub streams: Vec<String>,
    pub status: EndpointStatus,
    pub disabled_reason: Option<String>,
    /// Sealed (see `domain::sealing`).
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The most events a second it is sent; `None`: no cap.
    pub rate_limit: Option<i64>,
}

const ENDPOINT_COLUMNS: &str = "id, project_id, url, description, event_types, streams, status, \
     disabled_reason, secret, previous_secret, previous_secret_expires_at, created_at, updated_at, \
     rate_limit";

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
        status: stored(EndpointStatus::parse, &r.try_get::<String, _>(6)?)?,
        disabled_reason: r.try_get(7)?,
        secret: r.try_get(8)?,
        previous_secret: r.try_get(9)?,
        previous_secret_expires_at: r.try_get(10)?,
        created_at: r.try_get(11)?,
        updated_at: r.try_get(12)?,
        rate_limit: r.try_get(13)?,
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
    fn takes(&self, event_type: EventType, stream: Option<&str>) -> bool {
        let stream_ok =
            self.streams.is_empty() || stream.is_some_and(|s| self.streams.iter().any(|x| x == s));
        stream_ok && filter_matches(&self.event_types, event_type)
    }
}

async fn subscriptions(tx: &mut dyn Tx, project_id: &str) -> StoreResult<Vec<Subscription>> {
    let rows = tx
        .query(
            "SELECT id, event_types, streams FROM webhook_endpoints \
             WHERE project_id = $1 AND status = 'enabled'",
            &[Val::Text(project_id)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Subscription {
                endpoint_id: r.get(0)?,
                event_types: json_list(&r.get::<String>(1)?),
                streams: json_list(&r.get::<String>(2)?),
            })
        })
        .collect()
}

/// What a transaction that writes events owes besides the events: the enabled endpoints of
/// projects (loaded once per transaction, for the webhook deliveries) and the stats
/// increments (flushed before the commit).
#[derive(Default)]
pub(super) struct Outbox {
    endpoints: HashMap<String, Vec<Subscription>>,
    pub(super) stats: StatsLog,
    /// Webhook deliveries written (the dispatcher has work when this is not 0).
    pub(super) announced: usize,
    /// Set by a write that changed endpoints (see [`Outbox::endpoints_changed`]).
    endpoints_changed: bool,
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

    /// Gives `cache` the endpoints this transaction looked up (unless a write of this
    /// transaction changed endpoints: the cache was cleared, and the next batch looks again).
    pub(super) fn remember_endpoints(&mut self, cache: &EndpointCache) {
        if std::mem::take(&mut self.endpoints_changed) {
            cache.clear();
            return;
        }
        for (p, list) in &self.endpoints {
            cache.put(p.clone(), list.clone());
        }
    }

    /// A write of this transaction changed a project's endpoints: the endpoints looked up
    /// are stale, here and in the cache.
    pub(super) fn endpoints_changed(&mut self) {
        self.endpoints.clear();
        self.endpoints_changed = true;
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
    tx: &mut dyn Tx,
    outbox: &mut Outbox,
    events: &[EventRow<'_>],
) -> StoreResult<()> {
    outbox
        .load_endpoints(tx, events.iter().map(|r| r.project_id))
        .await?;
    let deliveries = outbox.deliveries(events)?;
    let rows = delivery_rows(&deliveries);
    if rows.is_empty() {
        return Ok(());
    }
    tx.write_tables(&[TableRows::insert(
        "webhook_deliveries",
        &DELIVERY_COLUMNS,
        &rows,
    )])
    .await
}

/// A pending delivery: its id, endpoint, project, event and time.
type Delivery<'a> = (String, String, &'a str, &'a str, i64);

impl Outbox {
    /// Looks up the enabled endpoints of those of `projects` this transaction has not seen.
    pub(super) async fn load_endpoints<'a>(
        &mut self,
        tx: &mut dyn Tx,
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
                .filter(|s| s.takes(row.event.event_type, row.stream))
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
    tx: &mut dyn Tx,
    endpoint_id: &str,
    project_id: &str,
    event_id: &str,
    now: i64,
) -> StoreResult<String> {
    let id = Uuid::now_v7().to_string();
    let rows = [delivery_row(&id, endpoint_id, project_id, event_id, now)];
    tx.write_tables(&[TableRows::insert(
        "webhook_deliveries",
        &DELIVERY_COLUMNS,
        &rows,
    )])
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
    /// The endpoint, shared by every delivery of one claim.
    pub target: Arc<WebhookTarget>,
    pub event_id: String,
    pub event_type: EventType,
    pub event_data: String,
    pub event_created_at: i64,
    pub recipient: Option<String>,
    pub email: Option<DeliveryEmail>,
}

/// Where a delivery's request goes: the endpoint's URL and its sealed secrets.
#[derive(Debug)]
pub struct WebhookTarget {
    pub endpoint_id: String,
    pub url: String,
    /// Sealed (see `domain::sealing`).
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
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
        let (e, idempotency) = (e.clone(), idempotency.cloned());
        self.writer
            .run(move |tx, outbox| {
                Box::pin(async move {
                    if let Some(idem) = &idempotency {
                        super::emails::insert_idempotency(tx, idem).await?;
                    }
                    let (types, streams) = (json_text(&e.event_types), json_text(&e.streams));
                    tx.execute(
                        &format!(
                            "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                        ),
                        &[
                            Val::Text(&e.id),
                            Val::Text(&e.project_id),
                            Val::Text(&e.url),
                            Val::OptText(e.description.as_deref()),
                            Val::Text(&types),
                            Val::Text(&streams),
                            Val::Text(e.status.as_str()),
                            Val::OptText(e.disabled_reason.as_deref()),
                            Val::Text(&e.secret),
                            Val::OptText(e.previous_secret.as_deref()),
                            Val::OptInt(e.previous_secret_expires_at),
                            Val::Int(e.created_at),
                            Val::Int(e.updated_at),
                            Val::OptInt(e.rate_limit),
                        ],
                    )
                    .await?;
                    outbox.endpoints_changed();
                    Ok(())
                })
            })
            .await?;
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
        .fetch_optional(&self.pool)
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
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    /// Saves every mutable field. An endpoint that is no longer enabled drops its pending
    /// deliveries (consumers reconcile with `GET /v1/events` or ask for a redelivery).
    pub async fn update_webhook_endpoint(&self, e: &EndpointRecord) -> StoreResult<()> {
        let e = e.clone();
        self.writer
            .run(move |tx, outbox| {
                Box::pin(async move {
                    let (types, streams) = (json_text(&e.event_types), json_text(&e.streams));
                    let done = tx
                        .execute(
                            "UPDATE webhook_endpoints SET url = $1, description = $2, \
                             event_types = $3, streams = $4, status = $5, disabled_reason = $6, \
                             secret = $7, previous_secret = $8, previous_secret_expires_at = $9, \
                             updated_at = $10, rate_limit = $13 WHERE project_id = $11 AND id = $12",
                            &[
                                Val::Text(&e.url),
                                Val::OptText(e.description.as_deref()),
                                Val::Text(&types),
                                Val::Text(&streams),
                                Val::Text(e.status.as_str()),
                                Val::OptText(e.disabled_reason.as_deref()),
                                Val::Text(&e.secret),
                                Val::OptText(e.previous_secret.as_deref()),
                                Val::OptInt(e.previous_secret_expires_at),
                                Val::Int(e.updated_at),
                                Val::Text(&e.project_id),
                                Val::Text(&e.id),
                                Val::OptInt(e.rate_limit),
                            ],
                        )
                        .await?;
                    if done == 0 {
                        return Err(StoreError::NotFound);
                    }
                    if e.status != EndpointStatus::Enabled {
                        cancel_pending(tx, &e.id, e.updated_at).await?;
                    }
                    outbox.endpoints_changed();
                    Ok(())
                })
            })
            .await?;
        self.endpoints.clear();
        Ok(())
    }

    pub async fn delete_webhook_endpoint(
        &self,
        project_id: &str,
        id: &str,
        now: i64,
    ) -> StoreResult<()> {
        let (project_id, id) = (project_id.to_owned(), id.to_owned());
        self.writer
            .run(move |tx, outbox| {
                Box::pin(async move {
                    let done = tx
                        .execute(
                            "DELETE FROM webhook_endpoints WHERE project_id = $1 AND id = $2",
                            &[Val::Text(&project_id), Val::Text(&id)],
                        )
                        .await?;
                    if done == 0 {
                        return Err(StoreError::NotFound);
                    }
                    cancel_pending(tx, &id, now).await?;
                    outbox.endpoints_changed();
                    Ok(())
                })
            })
            .await?;
        self.endpoints.clear();
        Ok(())
    }

    /// The enabled endpoints, each a lane of the dispatcher: its id and rate cap.
    pub async fn webhook_lanes(&self) -> StoreResult<Vec<(String, Option<i64>)>> {
        let rows = sqlx::query(
            "SELECT id, rate_limit FROM webhook_endpoints WHERE status = 'enabled' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Gives back deliveries `owner` leased and did not attempt, due again at `due`.
    pub async fn release_webhook_deliveries(
        &self,
        owner: &str,
        ids: &[String],
        due: i64,
    ) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "UPDATE webhook_deliveries SET lease_owner = NULL, lease_expires_at = NULL, \
             next_attempt_at = $1 WHERE lease_owner = $2 AND status = 'pending' AND id IN ({})",
            placeholders(3, ids.len())
        );
        let mut params = vec![due.into(), owner.into()];
        params.extend(ids.iter().map(|id| Owned::from(id.as_str())));
        self.execute(sql, params).await
    }

    /// Leases up to `limit` of one endpoint's due deliveries to `owner`, oldest due first,
    /// and loads what their requests need, all in one transaction of the writer: the lease,
    /// the endpoint (once: a claim is one endpoint's) and the events with their emails. On
    /// SQLite that reads through the writer's own connection, several times cheaper a row
    /// than a reader's (sqlx copies every row twice), which was a quarter of the dispatcher's
    /// time.
    pub async fn claim_webhook_deliveries(
        &self,
        owner: &str,
        endpoint_id: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<DueDelivery>> {
        let (owner, endpoint) = (owner.to_owned(), endpoint_id.to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.writer
            .run(move |tx, _| {
                Box::pin(async move {
                    let params = [
                        Val::Text(&owner),
                        Val::Int(now + lease_ms),
                        Val::Int(now),
                        Val::Int(limit),
                        Val::Text(&endpoint),
                    ];
                    if let Some(loaded) = tx.dialect().webhook_claim_loaded {
                        let rows = tx.query(loaded, &params).await?;
                        return loaded_claim(tx, &endpoint, rows, now).await;
                    }
                    let claim = tx.dialect().webhook_claim;
                    let claimed = tx
                        .query(claim, &params)
                        .await?
                        .iter()
                        .map(|r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?, r.get::<String>(2)?)))
                        .collect::<StoreResult<Vec<(String, i64, String)>>>()?;
                    if claimed.is_empty() {
                        return Ok(Vec::new());
                    }
                    load_claimed(tx, &endpoint, claimed, now).await
                })
            })
            .await
    }

    /// Records attempts and their consequences in one commit, each fenced by its lease.
    /// Returns how many were applied (the others' leases were lost: another dispatcher took
    /// those deliveries over).
    pub async fn record_webhook_attempts(
        &self,
        owner: &str,
        attempts: Arc<[AttemptRecord]>,
    ) -> StoreResult<usize> {
        if attempts.is_empty() {
            return Ok(0);
        }
        let owner = owner.to_owned();
        let disables = attempts.iter().any(|a| a.disable_endpoint.is_some());
        let applied = self
            .writer
            .run(move |tx, outbox| {
                Box::pin(async move {
                    let applied = record_attempts(tx, &owner, &attempts).await?;
                    if disables {
                        outbox.endpoints_changed();
                    }
                    Ok(applied)
                })
            })
            .await?;
        if disables {
            self.endpoints.clear();
        }
        Ok(applied)
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
        .fetch_all(&self.pool)
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
        let done = self
            .execute(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
                 WHERE endpoint_id = $2 AND id = $3",
                vec![now.into(), endpoint_id.into(), delivery_id.into()],
            )
            .await?;
        if done == 0 {
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
        let (project_id, event_id) = (project_id.to_owned(), event_id.to_owned());
        self.writer
            .run(move |tx, outbox| {
                Box::pin(async move {
                    let rows = tx
                        .query(
                            "SELECT e.type, m.stream FROM events e \
                             LEFT JOIN emails m ON m.id = e.email_id \
                             WHERE e.project_id = $1 AND e.id = $2",
                            &[Val::Text(&project_id), Val::Text(&event_id)],
                        )
                        .await?;
                    let row = rows.first().ok_or(StoreError::NotFound)?;
                    let event_type = super::emails::event_type(&row.get::<String>(0)?)?;
                    let stream: Option<String> = row.get(1)?;
                    let mut n = 0;
                    for sub in subscriptions(tx, &project_id).await? {
                        if sub.takes(event_type, stream.as_deref()) {
                            insert_delivery(tx, &sub.endpoint_id, &project_id, &event_id, now)
                                .await?;
                            n += 1;
                        }
                    }
                    outbox.announced += n;
                    Ok(n)
                })
            })
            .await
    }

    /// Records a `webhook.test` event and its delivery to this endpoint only.
    pub async fn create_test_delivery(
        &self,
        project_id: &str,
        endpoint_id: &str,
        now: i64,
    ) -> StoreResult<(String, String)> {
        let (project_id, endpoint_id) = (project_id.to_owned(), endpoint_id.to_owned());
        self.writer
            .run(move |tx, outbox| {
                Box::pin(async move {
                    let event = NewEvent::new(
                        None,
                        None,
                        EventType::WebhookTest,
                        EventData::WebhookTest {
                            webhook_id: endpoint_id.clone(),
                        },
                        now,
                    );
                    tx.execute(
                        "INSERT INTO events (id, project_id, email_id, recipient_id, recipient, \
                         type, data, created_at) VALUES ($1, $2, NULL, NULL, NULL, $3, $4, $5)",
                        &[
                            Val::Text(&event.id),
                            Val::Text(&project_id),
                            Val::Text(event.event_type.as_str()),
                            Val::Text(event.json()),
                            Val::Int(now),
                        ],
                    )
                    .await?;
                    let delivery =
                        insert_delivery(tx, &endpoint_id, &project_id, &event.id, now).await?;
                    outbox.announced += 1;
                    Ok((event.id, delivery))
                })
            })
            .await
    }

    /// The webhook deliveries of one email's events, oldest first: the endpoint's URL, the
    /// event's type, the delivery's status and the last answer's status code.
    pub async fn webhook_deliveries_of_email(
        &self,
        project_id: &str,
        email_id: &str,
    ) -> StoreResult<Vec<(String, String, String, String)>> {
        let sql = format!(
            "SELECT w.url, ev.type, d.status, d.last_status_code, d.attempts \
             FROM events ev {} JOIN webhook_deliveries d ON d.event_id = ev.id \
             JOIN webhook_endpoints w ON w.id = d.endpoint_id \
             WHERE ev.project_id = $1 AND ev.email_id = $2 ORDER BY d.created_at, d.id LIMIT 500",
            self.dialect().events_by_email
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(project_id)
            .bind(email_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let code: Option<i64> = r.try_get(3)?;
                let attempts: i64 = r.try_get(4)?;
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    match code {
                        Some(c) => format!("{c} after {attempts} attempt(s)"),
                        None => format!("{attempts} attempt(s)"),
                    },
                ))
            })
            .collect()
    }

    /// Pending webhook deliveries (the backlog), for tests and metrics.
    pub async fn count_pending_webhooks(&self) -> StoreResult<i64> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(n)
    }
}

/// A claimed delivery's event, with the email it is about.
struct ClaimedEvent {
    event_type: EventType,
    data: String,
    created_at: i64,
    recipient: Option<String>,
    email: Option<DeliveryEmail>,
}

/// The claimed deliveries (id, attempts before, event) with what their requests need, read
/// in two statements after the claim's (the endpoint once, then the events with their
/// emails): the dialects without a claim that returns them ([`Dialect`]'s
/// `webhook_claim_loaded`).
async fn load_claimed(
    tx: &mut dyn Tx,
    endpoint_id: &str,
    claimed: Vec<(String, i64, String)>,
    now: i64,
) -> StoreResult<Vec<DueDelivery>> {
    let rows = tx
        .query(
            "SELECT url, secret, previous_secret, previous_secret_expires_at, status \
             FROM webhook_endpoints WHERE id = $1",
            &[Val::Text(endpoint_id)],
        )
        .await?;
    let target = match rows.first() {
        Some(r) => target_from(r, 0, endpoint_id)?,
        None => None,
    };
    let mut events: HashMap<String, ClaimedEvent> = HashMap::with_capacity(claimed.len());
    if target.is_some() {
        let event_ids: Vec<&str> = claimed.iter().map(|(_, _, e)| e.as_str()).collect();
        for chunk in event_ids.chunks(super::write::CHUNK * 4) {
            let sql = format!(
                "SELECT {CLAIMED_EVENT_COLUMNS} FROM events e \
                 LEFT JOIN emails m ON m.id = e.email_id WHERE e.id IN ({})",
                padded_placeholders(1, chunk.len())
            );
            let params: Vec<Val<'_>> = padded(chunk).map(Val::Text).collect();
            for r in tx.query(&sql, &params).await? {
                if let Some((id, event)) = event_from(&r, 0)? {
                    events.insert(id, event);
                }
            }
        }
    }
    due_deliveries(tx, claimed, target, events, now).await
}

/// A claim's rows as the dialect's `webhook_claim_loaded` returns them: the delivery (id,
/// attempts, event), [`CLAIMED_EVENT_COLUMNS`], then the endpoint's columns.
async fn loaded_claim(
    tx: &mut dyn Tx,
    endpoint_id: &str,
    rows: Vec<super::write::Row>,
    now: i64,
) -> StoreResult<Vec<DueDelivery>> {
    let target = match rows.first() {
        Some(r) => target_from(r, 17, endpoint_id)?,
        None => return Ok(Vec::new()),
    };
    let mut claimed = Vec::with_capacity(rows.len());
    let mut events = HashMap::with_capacity(rows.len());
    for r in &rows {
        claimed.push((r.get::<String>(0)?, r.get::<i64>(1)?, r.get::<String>(2)?));
        if let Some((id, event)) = event_from(r, 3)? {
            events.insert(id, event);
        }
    }
    due_deliveries(tx, claimed, target, events, now).await
}

/// An event and its email, as [`event_from`] reads them.
const CLAIMED_EVENT_COLUMNS: &str = "e.id, e.type, e.data, e.created_at, e.recipient, m.id, \
     m.message_id, m.stream, m.from_email, m.from_name, m.subject, m.tags, m.metadata, \
     m.created_at";

/// The event (and its email) in [`CLAIMED_EVENT_COLUMNS`] from column `at`; `None` when the
/// event is gone.
fn event_from(r: &super::write::Row, at: usize) -> StoreResult<Option<(String, ClaimedEvent)>> {
    let Some(id) = r.get::<Option<String>>(at)? else {
        return Ok(None);
    };
    let email = match r.get::<Option<String>>(at + 5)? {
        Some(email_id) => Some(DeliveryEmail {
            id: email_id,
            message_id: r.get(at + 6)?,
            stream: r.get(at + 7)?,
            from_email: r.get(at + 8)?,
            from_name: r.get(at + 9)?,
            subject: r.get(at + 10)?,
            tags: r.get(at + 11)?,
            metadata: r.get(at + 12)?,
            created_at: r.get(at + 13)?,
        }),
        None => None,
    };
    let event = ClaimedEvent {
        event_type: super::emails::event_type(&r.get::<String>(at + 1)?)?,
        data: r.get(at + 2)?,
        created_at: r.get(at + 3)?,
        recipient: r.get(at + 4)?,
        email,
    };
    Ok(Some((id, event)))
}

/// The endpoint (url, secret, previous secret, its end, status) from column `at`; `None`
/// when it is gone or no longer enabled.
fn target_from(
    r: &super::write::Row,
    at: usize,
    endpoint_id: &str,
) -> StoreResult<Option<WebhookTarget>> {
    let status: Option<String> = r.get(at + 4)?;
    if status.as_deref() != Some(EndpointStatus::Enabled.as_str()) {
        return Ok(None);
    }
    Ok(Some(WebhookTarget {
        endpoint_id: endpoint_id.to_owned(),
        url: r.get(at)?,
        secret: r.get(at + 1)?,
        previous_secret: r.get(at + 2)?,
        previous_secret_expires_at: r.get(at + 3)?,
    }))
}

/// The claimed deliveries that can be sent. Those that cannot are canceled in the same
/// transaction: all of them when the endpoint was disabled or deleted since they were
/// written (by a writer that still had it as enabled: another process, or one within the
/// endpoint cache's second), as disabling cancels those already waiting; and any whose event
/// is gone (retention), which would otherwise be claimed again at every lease's end.
async fn due_deliveries(
    tx: &mut dyn Tx,
    claimed: Vec<(String, i64, String)>,
    target: Option<WebhookTarget>,
    mut events: HashMap<String, ClaimedEvent>,
    now: i64,
) -> StoreResult<Vec<DueDelivery>> {
    let Some(target) = target else {
        let ids: Vec<&str> = claimed.iter().map(|(id, ..)| id.as_str()).collect();
        cancel(tx, &ids, now).await?;
        return Ok(Vec::new());
    };
    let target = Arc::new(target);
    let mut due = Vec::with_capacity(claimed.len());
    let mut gone = Vec::new();
    for (id, attempts, event_id) in claimed {
        let Some(event) = events.remove(&event_id) else {
            gone.push(id);
            continue;
        };
        due.push(DueDelivery {
            id,
            attempts,
            target: Arc::clone(&target),
            event_id,
            event_type: event.event_type,
            event_data: event.data,
            event_created_at: event.created_at,
            recipient: event.recipient,
            email: event.email,
        });
    }
    if !gone.is_empty() {
        let ids: Vec<&str> = gone.iter().map(String::as_str).collect();
        cancel(tx, &ids, now).await?;
    }
    Ok(due)
}

/// Cancels pending deliveries by id.
async fn cancel(tx: &mut dyn Tx, ids: &[&str], now: i64) -> StoreResult<()> {
    for chunk in ids.chunks(super::write::CHUNK * 4) {
        let sql = format!(
            "UPDATE webhook_deliveries SET status = 'canceled', lease_owner = NULL, \
             updated_at = $1 WHERE status = 'pending' AND id IN ({})",
            padded_placeholders(2, chunk.len())
        );
        let params = texts(&[Val::Int(now)], padded(chunk));
        tx.execute(&sql, &params).await?;
    }
    Ok(())
}

/// Writes attempts' rows and their deliveries' new states, each fenced by its lease (one
/// `UPDATE` for all, then one insert for the attempt log of those applied); a disabling
/// verdict disables its endpoint and cancels what it still had waiting. Returns how many
/// were applied.
async fn record_attempts(
    tx: &mut dyn Tx,
    owner: &str,
    attempts: &[AttemptRecord],
) -> StoreResult<usize> {
    let status = |a: &AttemptRecord| match (a.succeeded, a.next_attempt_at) {
        (true, _) => "succeeded",
        (false, Some(_)) => "pending",
        (false, None) => "failed",
    };
    let rows: Vec<Vec<Val<'_>>> = attempts
        .iter()
        .map(|a| {
            vec![
                Val::Text(&a.delivery_id),
                Val::Text(owner),
                Val::Text(status(a)),
                Val::Int(a.next_attempt_at.unwrap_or(a.attempted_at)),
                Val::OptInt(a.status_code),
                Val::Int(a.attempted_at),
            ]
        })
        .collect();
    let update = |update: &str, values: &str| {
        format!(
            "{update} webhook_deliveries SET status = v.column3, \
             attempts = webhook_deliveries.attempts + 1, next_attempt_at = v.column4, \
             lease_owner = NULL, lease_expires_at = NULL, last_status_code = v.column5, \
             updated_at = v.column6 FROM {values} \
             WHERE webhook_deliveries.id = v.column1 AND webhook_deliveries.lease_owner = v.column2 \
             AND webhook_deliveries.status = 'pending' RETURNING webhook_deliveries.id"
        )
    };
    let changed: std::collections::HashSet<String> = tx
        .update_from_values(6, &rows, &update)
        .await?
        .into_iter()
        .collect();
    let applied: Vec<&AttemptRecord> = attempts
        .iter()
        .filter(|a| changed.contains(&a.delivery_id))
        .collect();
    let ids: Vec<String> = applied.iter().map(|_| Uuid::now_v7().to_string()).collect();
    let log: Vec<Vec<Val<'_>>> = applied
        .iter()
        .zip(&ids)
        .map(|(a, id)| {
            vec![
                Val::Text(id),
                Val::Text(&a.delivery_id),
                Val::Text(&a.endpoint_id),
                Val::Text(&a.event_id),
                Val::Int(a.attempt),
                Val::Int(i64::from(a.succeeded)),
                Val::OptInt(a.status_code),
                Val::OptText(a.response_body.as_deref()),
                Val::OptText(a.error.as_deref()),
                Val::Int(a.duration_ms),
                Val::Int(a.attempted_at),
                Val::OptInt(a.next_attempt_at),
            ]
        })
        .collect();
    tx.write_tables(&[TableRows::insert(
        "webhook_attempts",
        &ATTEMPT_COLUMNS,
        &log,
    )])
    .await?;
    for a in &applied {
        if let Some(reason) = &a.disable_endpoint {
            tx.execute(
                "UPDATE webhook_endpoints SET status = 'auto_disabled', disabled_reason = $1, \
                 updated_at = $2 WHERE id = $3 AND status = 'enabled'",
                &[
                    Val::Text(reason),
                    Val::Int(a.attempted_at),
                    Val::Text(&a.endpoint_id),
                ],
            )
            .await?;
            cancel_pending(tx, &a.endpoint_id, a.attempted_at).await?;
        }
    }
    Ok(applied.len())
}

const ATTEMPT_COLUMNS: [&str; 12] = [
    "id",
    "delivery_id",
    "endpoint_id",
    "event_id",
    "attempt",
    "succeeded",
    "status_code",
    "response_body",
    "error",
    "duration_ms",
    "attempted_at",
    "next_attempt_at",
];

async fn cancel_pending(tx: &mut dyn Tx, endpoint_id: &str, now: i64) -> StoreResult<()> {
    tx.execute(
        "UPDATE webhook_deliveries SET status = 'canceled', lease_owner = NULL, updated_at = $1 \
         WHERE endpoint_id = $2 AND status = 'pending'",
        &[Val::Int(now), Val::Text(endpoint_id)],
    )
    .await?;
    Ok(())
}

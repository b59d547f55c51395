//! Emails, their recipients and events, and idempotency records: the ingest side.

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::suppressions::SuppressionRecord;
use super::webhooks::{EventRow, Outbox, enqueue_deliveries};
use super::write::{TableRows, Tx, Val};
use super::{Store, StoreError, StoreResult};
use crate::domain::email::RecipientKind;
use crate::domain::event::{EventData, EventType};
use crate::domain::status::RecipientStatus;

/// An accepted email with its recipients and first events, as the API prepared it.
#[derive(Debug, Clone)]
pub struct NewEmail {
    pub id: String,
    pub project_id: String,
    pub api_key_id: Option<String>,
    pub message_id: String,
    pub stream: String,
    pub from_email: String,
    pub from_name: Option<String>,
    /// JSON array of `{email, name}`.
    pub reply_to: String,
    pub subject: String,
    /// JSON array of strings.
    pub tags: String,
    /// JSON object of strings.
    pub metadata: String,
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    pub mime: Vec<u8>,
    pub created_at: i64,
    pub scheduled_at: Option<i64>,
    pub expires_at: Option<i64>,
    /// The client's address, for mail submitted over SMTP (`None`: over the API).
    pub smtp_client: Option<String>,
    pub recipients: Vec<NewRecipient>,
    pub events: Vec<NewEvent>,
}

#[derive(Debug, Clone)]
pub struct NewRecipient {
    pub id: String,
    pub position: i64,
    pub address: String,
    pub name: Option<String>,
    pub kind: RecipientKind,
    pub status: RecipientStatus,
    pub next_attempt_at: i64,
    /// After this instant no further attempt is made.
    pub deadline_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub recipient_id: Option<String>,
    pub recipient: Option<String>,
    pub event_type: EventType,
    pub data: EventData,
    /// `data` as stored.
    json: String,
    pub created_at: i64,
}

/// A value as the JSON text stored in a column. `serde_json::to_string` writes into a buffer
/// of bytes; a `Value`'s `to_string` (its `Display`) passes every piece through a
/// `fmt::Formatter`, about twice the work.
pub fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl NewEvent {
    pub fn new(
        recipient_id: Option<&str>,
        recipient: Option<&str>,
        event_type: EventType,
        data: EventData,
        created_at: i64,
    ) -> Self {
        Self {
            id: Uuid::now_v7().to_string(),
            recipient_id: recipient_id.map(str::to_owned),
            recipient: recipient.map(str::to_owned),
            event_type,
            json: data.to_json(),
            data,
            created_at,
        }
    }

    /// Makes it another event about the same recipient at the same time.
    pub fn become_(&mut self, event_type: EventType, data: EventData) {
        self.event_type = event_type;
        self.json = data.to_json();
        self.data = data;
    }

    /// The stored text of its data.
    pub fn json(&self) -> &str {
        &self.json
    }
}

/// The suppressions that applied to each email of a request (in the request's order), found
/// by the transaction that committed them: those recipients were accepted as suppressed.
pub type Suppressed = Vec<Vec<SuppressionRecord>>;

/// Writes the response an idempotency record keeps, from what the commit found.
pub type Respond = Box<dyn FnOnce(&[Vec<SuppressionRecord>]) -> String + Send + Sync>;

/// The stored outcome of an idempotent request.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub project_id: String,
    pub method: String,
    pub path: String,
    pub key: String,
    pub fingerprint: Vec<u8>,
    pub response_status: i64,
    pub response_body: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub fingerprint: Vec<u8>,
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct EmailRecord {
    pub id: String,
    pub project_id: String,
    pub api_key_id: Option<String>,
    pub message_id: String,
    pub stream: String,
    pub from_email: String,
    pub from_name: Option<String>,
    pub reply_to: String,
    pub subject: String,
    pub tags: String,
    pub metadata: String,
    pub created_at: i64,
    pub scheduled_at: Option<i64>,
    pub expires_at: Option<i64>,
    /// When retention removed the bodies.
    pub content_purged_at: Option<i64>,
    /// The client's address, for mail submitted over SMTP.
    pub smtp_client: Option<String>,
    /// The bodies as given (only [`Store::get_email`] reads them).
    pub text_body: Option<String>,
    pub html_body: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RecipientRecord {
    pub id: String,
    pub address: String,
    pub name: Option<String>,
    pub kind: RecipientKind,
    pub status: RecipientStatus,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub smtp_code: Option<i64>,
    pub smtp_enhanced: Option<String>,
    pub smtp_response: Option<String>,
    pub smtp_phase: Option<String>,
    pub bounce_type: Option<String>,
    pub bounce_sub_type: Option<String>,
    pub sent_at: Option<i64>,
    pub last_event_at: i64,
}

/// Filters of the email search; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct EmailFilter {
    /// Emails with at least one recipient in this status.
    pub status: Option<String>,
    pub recipient: Option<String>,
    pub from: Option<String>,
    pub tag: Option<String>,
    pub stream: Option<String>,
    /// Words that must all be in the subject (any case).
    pub subject: Vec<String>,
    /// `(key, value)` pairs that must all be in the metadata.
    pub metadata: Vec<(String, String)>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
    /// Older than this email id (the next page, newest first).
    pub after: Option<String>,
    /// Newer than this email id (the previous page).
    pub before: Option<String>,
}

/// How many candidates of the other filters a subject search reads for one page, newest
/// first (dates move the window back).
pub const SUBJECT_WINDOW: i64 = 20_000;

/// A page of the email search.
#[derive(Debug)]
pub struct SearchPage {
    pub rows: Vec<(EmailRecord, Vec<RecipientStatus>)>,
    /// A subject search read its whole window without filling the page: older emails were
    /// not read (a `created_before` reads them).
    pub window_full: bool,
}

/// Filters of the event feed; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub after: Option<String>,
    pub event_type: Option<EventType>,
    pub recipient: Option<String>,
    pub email_id: Option<String>,
    pub created_after: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: String,
    pub email_id: Option<String>,
    pub recipient: Option<String>,
    pub event_type: EventType,
    pub data: String,
    pub created_at: i64,
}

/// An email's columns, qualified by the alias `e` every query gives `emails`.
const EMAIL_COLUMNS: &str = "e.id, e.project_id, e.api_key_id, e.message_id, e.stream, \
     e.from_email, e.from_name, e.reply_to, e.subject, e.tags, e.metadata, e.created_at, \
     e.scheduled_at, e.expires_at, e.content_purged_at, e.smtp_client";
const RECIPIENT_COLUMNS: &str = "id, address, name, kind, status, attempts, next_attempt_at, \
     smtp_code, smtp_enhanced, smtp_response, smtp_phase, bounce_type, bounce_sub_type, \
     sent_at, last_event_at";

/// The index a search page walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    Metadata,
    Recipient,
    Tag,
    /// Recipients by status: an email with two recipients in the status comes twice, so the
    /// page is grouped by email (along the index's own order, no sort).
    Status,
    From,
    Emails,
}

fn email_from_row(r: &AnyRow) -> StoreResult<EmailRecord> {
    Ok(EmailRecord {
        id: r.try_get(0)?,
        project_id: r.try_get(1)?,
        api_key_id: r.try_get(2)?,
        message_id: r.try_get(3)?,
        stream: r.try_get(4)?,
        from_email: r.try_get(5)?,
        from_name: r.try_get(6)?,
        reply_to: r.try_get(7)?,
        subject: r.try_get(8)?,
        tags: r.try_get(9)?,
        metadata: r.try_get(10)?,
        created_at: r.try_get(11)?,
        scheduled_at: r.try_get(12)?,
        expires_at: r.try_get(13)?,
        content_purged_at: r.try_get(14)?,
        smtp_client: r.try_get(15)?,
        text_body: None,
        html_body: None,
    })
}

/// A recipient's status as stored (see `store::stored`).
pub(super) fn recipient_status(s: &str) -> StoreResult<RecipientStatus> {
    super::stored(RecipientStatus::parse, s)
}

/// An event's type as stored (see `store::stored`).
pub(super) fn event_type(s: &str) -> StoreResult<EventType> {
    super::stored(EventType::parse, s)
}

/// How a stored recipient was addressed (see `store::stored`).
fn recipient_kind(s: &str) -> StoreResult<RecipientKind> {
    super::stored(RecipientKind::parse, s)
}

pub(super) fn recipient_from_row(r: &AnyRow) -> StoreResult<RecipientRecord> {
    Ok(RecipientRecord {
        id: r.try_get(0)?,
        address: r.try_get(1)?,
        name: r.try_get(2)?,
        kind: recipient_kind(&r.try_get::<String, _>(3)?)?,
        status: recipient_status(&r.try_get::<String, _>(4)?)?,
        attempts: r.try_get(5)?,
        next_attempt_at: r.try_get(6)?,
        smtp_code: r.try_get(7)?,
        smtp_enhanced: r.try_get(8)?,
        smtp_response: r.try_get(9)?,
        smtp_phase: r.try_get(10)?,
        bounce_type: r.try_get(11)?,
        bounce_sub_type: r.try_get(12)?,
        sent_at: r.try_get(13)?,
        last_event_at: r.try_get(14)?,
    })
}

fn event_from_row(r: &AnyRow) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        id: r.try_get(0)?,
        email_id: r.try_get(1)?,
        recipient: r.try_get(2)?,
        event_type: event_type(&r.try_get::<String, _>(3)?)?,
        data: r.try_get(4)?,
        created_at: r.try_get(5)?,
    })
}

/// Inserts an event and, in the same transaction, the webhook deliveries that announce it
/// and its count in the stats (unless `already_counted`: it repeats a state the stats
/// counted).
pub(super) async fn insert_event(
    tx: &mut dyn Tx,
    outbox: &mut Outbox,
    row: EventRow<'_>,
    already_counted: bool,
) -> StoreResult<()> {
    let rows = event_values(std::slice::from_ref(&row));
    tx.write_tables(&[TableRows::insert("events", &EVENT_COLUMNS, &rows)])
        .await?;
    if !already_counted {
        count_events(outbox, std::slice::from_ref(&row));
    }
    enqueue_deliveries(tx, outbox, std::slice::from_ref(&row)).await
}

const EVENT_COLUMNS: [&str; 8] = [
    "id",
    "project_id",
    "email_id",
    "recipient_id",
    "recipient",
    "type",
    "data",
    "created_at",
];

/// Inserts events (one statement) with their webhook deliveries and stats increments.
pub(super) async fn insert_events(
    tx: &mut dyn Tx,
    outbox: &mut Outbox,
    events: &[EventRow<'_>],
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let rows = event_values(events);
    tx.write_tables(&[TableRows::insert("events", &EVENT_COLUMNS, &rows)])
        .await?;
    count_events(outbox, events);
    enqueue_deliveries(tx, outbox, events).await
}

/// The `events` rows of `events`, one value per column of [`EVENT_COLUMNS`].
fn event_values<'a>(events: &[EventRow<'a>]) -> Vec<Vec<Val<'a>>> {
    events
        .iter()
        .map(|r| {
            let e = r.event;
            vec![
                Val::Text(&e.id),
                Val::Text(r.project_id),
                Val::OptText(r.email_id),
                Val::OptText(e.recipient_id.as_deref()),
                Val::OptText(e.recipient.as_deref()),
                Val::Text(e.event_type.as_str()),
                Val::Text(e.json()),
                Val::Int(e.created_at),
            ]
        })
        .collect()
}

/// Counts events in the stats log.
fn count_events(outbox: &mut Outbox, events: &[EventRow<'_>]) {
    for r in events {
        let e = r.event;
        if let (Some(email_id), Some(address)) = (r.email_id, e.recipient.as_deref()) {
            outbox.stats.event(
                r.project_id,
                email_id,
                address,
                e.event_type,
                &e.data,
                e.created_at,
            );
        }
    }
}

/// Reserves an idempotency key with the response to replay, inside the request's own
/// savepoint (a duplicate key fails it: the caller replays what the first committed). An
/// expired record no longer reserves the key.
pub(super) async fn insert_idempotency(
    tx: &mut dyn Tx,
    idem: &IdempotencyRecord,
) -> StoreResult<()> {
    tx.execute(
        "DELETE FROM idempotency_keys WHERE project_id = $1 AND method = $2 \
         AND path = $3 AND idem_key = $4 AND expires_at <= $5",
        &[
            Val::Text(&idem.project_id),
            Val::Text(&idem.method),
            Val::Text(&idem.path),
            Val::Text(&idem.key),
            Val::Int(idem.created_at),
        ],
    )
    .await?;
    tx.execute(
        "INSERT INTO idempotency_keys (project_id, method, path, idem_key, fingerprint, \
         response_status, response_body, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            Val::Text(&idem.project_id),
            Val::Text(&idem.method),
            Val::Text(&idem.path),
            Val::Text(&idem.key),
            Val::Blob(&idem.fingerprint),
            Val::Int(idem.response_status),
            Val::Text(&idem.response_body),
            Val::Int(idem.created_at),
            Val::Int(idem.expires_at),
        ],
    )
    .await?;
    Ok(())
}

/// Inserts one request's emails and idempotency record inside `tx`.
pub(super) async fn insert_request(
    tx: &mut dyn Tx,
    outbox: &mut Outbox,
    emails: &[NewEmail],
    idempotency: Option<&IdempotencyRecord>,
) -> StoreResult<()> {
    if let Some(idem) = idempotency {
        insert_idempotency(tx, idem).await?;
    }
    insert_emails(tx, outbox, emails.iter()).await
}

const EMAIL_INSERT_COLUMNS: [&str; 19] = [
    "id",
    "project_id",
    "api_key_id",
    "message_id",
    "stream",
    "from_email",
    "from_name",
    "reply_to",
    "subject",
    "tags",
    "metadata",
    "text_body",
    "html_body",
    "mime",
    "mime_size",
    "created_at",
    "scheduled_at",
    "expires_at",
    "smtp_client",
];

const RECIPIENT_INSERT_COLUMNS: [&str; 12] = [
    "id",
    "email_id",
    "project_id",
    "position",
    "address",
    "name",
    "kind",
    "status",
    "attempts",
    "next_attempt_at",
    "deadline_at",
    "last_event_at",
];

/// What new emails write besides their own columns, gathered once: their search keys (tags
/// and metadata pairs as rows) and their first events. Gathering them notes each email's
/// dimensions in the stats log (the tags, parsed once, go there too).
struct IngestKeys<'a> {
    tags: Vec<(&'a str, String, &'a str)>,
    metadata: Vec<(&'a str, String, String, &'a str)>,
    events: Vec<EventRow<'a>>,
}

impl<'a> IngestKeys<'a> {
    fn of(emails: impl Iterator<Item = &'a NewEmail> + Clone, outbox: &mut Outbox) -> Self {
        let mut tags = Vec::new();
        let mut metadata = Vec::new();
        for e in emails.clone() {
            let email_tags = serde_json::from_str::<Vec<String>>(&e.tags).unwrap_or_default();
            tags.extend(
                email_tags
                    .iter()
                    .map(|t| (e.project_id.as_str(), t.clone(), e.id.as_str())),
            );
            outbox
                .stats
                .note_email(&e.id, &e.stream, email_tags, &e.from_email);
            let pairs: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&e.metadata).unwrap_or_default();
            for (k, v) in pairs {
                let value = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                metadata.push((e.project_id.as_str(), k, value, e.id.as_str()));
            }
        }
        let events = emails
            .flat_map(|e| {
                e.events.iter().map(move |ev| EventRow {
                    project_id: &e.project_id,
                    email_id: Some(&e.id),
                    stream: Some(&e.stream),
                    event: ev,
                })
            })
            .collect();
        Self {
            tags,
            metadata,
            events,
        }
    }
}

/// The rows new emails write, table by table.
struct IngestRows<'v> {
    emails: Vec<Vec<Val<'v>>>,
    recipients: Vec<Vec<Val<'v>>>,
    tags: Vec<Vec<Val<'v>>>,
    metadata: Vec<Vec<Val<'v>>>,
    events: Vec<Vec<Val<'v>>>,
}

impl<'v> IngestRows<'v> {
    fn of<'a: 'v>(
        emails: impl Iterator<Item = &'a NewEmail> + Clone,
        keys: &'v IngestKeys<'a>,
    ) -> Self {
        let email_rows = emails
            .clone()
            .map(|e| {
                vec![
                    Val::Text(&e.id),
                    Val::Text(&e.project_id),
                    Val::OptText(e.api_key_id.as_deref()),
                    Val::Text(&e.message_id),
                    Val::Text(&e.stream),
                    Val::Text(&e.from_email),
                    Val::OptText(e.from_name.as_deref()),
                    Val::Text(&e.reply_to),
                    Val::Text(&e.subject),
                    Val::Text(&e.tags),
                    Val::Text(&e.metadata),
                    Val::OptText(e.text_body.as_deref()),
                    Val::OptText(e.html_body.as_deref()),
                    Val::Blob(&e.mime),
                    Val::Int(i64::try_from(e.mime.len()).unwrap_or(i64::MAX)),
                    Val::Int(e.created_at),
                    Val::OptInt(e.scheduled_at),
                    Val::OptInt(e.expires_at),
                    Val::OptText(e.smtp_client.as_deref()),
                ]
            })
            .collect();
        let recipient_rows = emails
            .flat_map(|e| {
                e.recipients.iter().map(move |r| {
                    vec![
                        Val::Text(&r.id),
                        Val::Text(&e.id),
                        Val::Text(&e.project_id),
                        Val::Int(r.position),
                        Val::Text(&r.address),
                        Val::OptText(r.name.as_deref()),
                        Val::Text(r.kind.as_str()),
                        Val::Text(r.status.as_str()),
                        Val::Int(0),
                        Val::Int(r.next_attempt_at),
                        Val::Int(r.deadline_at),
                        Val::Int(e.created_at),
                    ]
                })
            })
            .collect();
        Self {
            emails: email_rows,
            recipients: recipient_rows,
            tags: keys
                .tags
                .iter()
                .map(|(p, t, id)| vec![Val::Text(p), Val::Text(t), Val::Text(id)])
                .collect(),
            metadata: keys
                .metadata
                .iter()
                .map(|(p, k, v, id)| vec![Val::Text(p), Val::Text(k), Val::Text(v), Val::Text(id)])
                .collect(),
            events: event_values(&keys.events),
        }
    }

    /// The tables in the order they are written (recipients after their emails).
    fn tables(&self) -> [TableRows<'_, 'v>; 5] {
        [
            TableRows::insert("emails", &EMAIL_INSERT_COLUMNS, &self.emails),
            TableRows::insert("recipients", &RECIPIENT_INSERT_COLUMNS, &self.recipients),
            TableRows::insert("email_tags", &["project_id", "tag", "email_id"], &self.tags),
            TableRows::insert(
                "email_metadata",
                &["project_id", "key", "value", "email_id"],
                &self.metadata,
            ),
            TableRows::insert("events", &EVENT_COLUMNS, &self.events),
        ]
    }
}

/// Counts each new recipient as accepted.
fn note_accepted<'a>(outbox: &mut Outbox, emails: impl Iterator<Item = &'a NewEmail>) {
    for e in emails {
        for r in &e.recipients {
            outbox
                .stats
                .accepted(&e.project_id, &e.id, &r.address, e.created_at);
        }
    }
}

/// Inserts emails with their recipients, search keys, first events (and their webhook
/// deliveries) and stats increments: one statement per table for all of them.
pub(super) async fn insert_emails<'a>(
    tx: &mut dyn Tx,
    outbox: &mut Outbox,
    emails: impl Iterator<Item = &'a NewEmail> + Clone,
) -> StoreResult<()> {
    let keys = IngestKeys::of(emails.clone(), outbox);
    let rows = IngestRows::of(emails.clone(), &keys);
    tx.write_tables(&rows.tables()).await?;
    note_accepted(outbox, emails);
    count_events(outbox, &keys.events);
    enqueue_deliveries(tx, outbox, &keys.events).await
}

impl Store {
    /// Commits emails (one, or a whole batch) and, if given, the idempotency record that
    /// will replay the response: all or nothing. A reused idempotency key is `Conflict`.
    /// Recipients on the suppression list (as the same transaction reads it) are committed as
    /// suppressed, with an `email.suppressed` event; returns the suppressions that applied.
    ///
    /// Requests arriving together share one transaction and one fsync (group commit, see
    /// `store::writer`); each caller is answered only after that commit.
    pub async fn insert_emails(
        &self,
        emails: Vec<NewEmail>,
        idempotency: Option<IdempotencyRecord>,
    ) -> StoreResult<Suppressed> {
        self.writer.submit_emails(emails, idempotency, None).await
    }

    /// [`Store::insert_emails`] with an idempotency record whose response `respond` writes
    /// from the suppressions that applied (the response names the suppressed recipients).
    pub async fn insert_emails_responding(
        &self,
        emails: Vec<NewEmail>,
        idempotency: IdempotencyRecord,
        respond: Respond,
    ) -> StoreResult<Suppressed> {
        self.writer
            .submit_emails(emails, Some(idempotency), Some(respond))
            .await
    }

    /// How many emails a project holds (a full count: for tools, not for requests).
    pub async fn count_project_emails(&self, project_id: &str) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM emails WHERE project_id = $1")
                .bind(project_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The stored response for an idempotency key that has not expired.
    pub async fn find_idempotent_response(
        &self,
        project_id: &str,
        method: &str,
        path: &str,
        key: &str,
        now_ms: i64,
    ) -> StoreResult<Option<StoredResponse>> {
        let row = sqlx::query(
            "SELECT fingerprint, response_status, response_body FROM idempotency_keys \
             WHERE project_id = $1 AND method = $2 AND path = $3 AND idem_key = $4 \
             AND expires_at > $5",
        )
        .bind(project_id)
        .bind(method)
        .bind(path)
        .bind(key)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let status: i64 = r.try_get(1)?;
            Ok(StoredResponse {
                fingerprint: r.try_get(0)?,
                status: u16::try_from(status)
                    .map_err(|_| StoreError::Corrupt(format!("response status {status}")))?,
                body: r.try_get(2)?,
            })
        })
        .transpose()
    }

    /// One of the project's emails with its recipients in the order they were given.
    pub async fn get_email(
        &self,
        project_id: &str,
        id: &str,
    ) -> StoreResult<(EmailRecord, Vec<RecipientRecord>)> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {EMAIL_COLUMNS}, e.text_body, e.html_body FROM emails e \
             WHERE e.project_id = $1 AND e.id = $2"
        ));
        let row = sqlx::query(sql)
            .bind(project_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut email = email_from_row(&row)?;
        email.text_body = row.try_get(16)?;
        email.html_body = row.try_get(17)?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE email_id = $1 ORDER BY position"
        ));
        let rows = sqlx::query(sql).bind(id).fetch_all(&self.pool).await?;
        let recipients = rows
            .iter()
            .map(recipient_from_row)
            .collect::<StoreResult<_>>()?;
        Ok((email, recipients))
    }

    /// The MIME Herald built for one of the project's emails (before DKIM signing), or
    /// `None` once retention has purged it.
    pub async fn email_mime(&self, project_id: &str, id: &str) -> StoreResult<Option<Vec<u8>>> {
        sqlx::query_scalar::<_, Option<Vec<u8>>>(
            "SELECT mime FROM emails WHERE project_id = $1 AND id = $2",
        )
        .bind(project_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)
    }

    /// An email's events in order, after the event id `after` if given; at most `limit`.
    pub async fn list_email_events(
        &self,
        project_id: &str,
        email_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>> {
        let sql = format!(
            "SELECT id, email_id, recipient, type, data, created_at FROM events {} \
             WHERE project_id = $1 AND email_id = $2 AND id > $3 ORDER BY id LIMIT $4",
            self.dialect().events_by_email
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(project_id)
            .bind(email_id)
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The project's emails matching `f`, newest first (or, with `f.before`, the page just
    /// newer than it, still returned newest first), at most `limit`, each with its
    /// recipients' statuses; and whether a subject search stopped at its window.
    pub async fn search_emails(
        &self,
        project_id: &str,
        f: &EmailFilter,
        limit: i64,
    ) -> StoreResult<SearchPage> {
        // The page walks one index in email-id order: the most selective filter that has
        // one (a metadata pair, a recipient, a tag, a sender), or the project's emails.
        // Every other filter is a probe of a primary key or index per candidate row.
        let mut args: Vec<String> = vec![project_id.to_owned()];
        let arg = |v: &str, args: &mut Vec<String>| {
            args.push(v.to_owned());
            format!("${}", args.len())
        };
        let driver = match () {
            () if !f.metadata.is_empty() => Driver::Metadata,
            () if f.recipient.is_some() => Driver::Recipient,
            () if f.tag.is_some() => Driver::Tag,
            () if f.status.is_some() => Driver::Status,
            () if f.from.is_some() => Driver::From,
            () => Driver::Emails,
        };
        let mut metadata = f.metadata.iter();
        let (from_clause, id_col) = if let Some((k, v)) = metadata.next() {
            let (k, v) = (arg(k, &mut args), arg(v, &mut args));
            (
                format!(
                    "email_metadata d JOIN emails e ON e.id = d.email_id \
                     WHERE d.project_id = $1 AND d.key = {k} AND d.value = {v}"
                ),
                "d.email_id",
            )
        } else if let Some(r) = &f.recipient {
            let r = arg(r, &mut args);
            (
                format!(
                    "recipients d JOIN emails e ON e.id = d.email_id \
                     WHERE d.project_id = $1 AND d.address = {r}"
                ),
                "d.email_id",
            )
        } else if let Some(t) = &f.tag {
            let t = arg(t, &mut args);
            (
                format!(
                    "email_tags d JOIN emails e ON e.id = d.email_id \
                     WHERE d.project_id = $1 AND d.tag = {t}"
                ),
                "d.email_id",
            )
        } else if let (Driver::Status, Some(s)) = (driver, &f.status) {
            let s = arg(s, &mut args);
            (
                format!(
                    "recipients d JOIN emails e ON e.id = d.email_id \
                     WHERE d.project_id = $1 AND d.status = {s}"
                ),
                "d.email_id",
            )
        } else if let Some(from) = &f.from {
            let from = arg(from, &mut args);
            (
                format!("emails e WHERE e.project_id = $1 AND e.from_email = {from}"),
                "e.id",
            )
        } else {
            ("emails e WHERE e.project_id = $1".to_owned(), "e.id")
        };
        let mut sql = format!("SELECT {EMAIL_COLUMNS} FROM {from_clause}");
        for (k, v) in metadata {
            let (k, v) = (arg(k, &mut args), arg(v, &mut args));
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM email_metadata m WHERE m.project_id = $1 \
                 AND m.key = {k} AND m.value = {v} AND m.email_id = e.id)"
            ));
        }
        if let Some(r) = &f.recipient
            && driver != Driver::Recipient
        {
            let r = arg(r, &mut args);
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM recipients r WHERE r.project_id = $1 \
                 AND r.address = {r} AND r.email_id = e.id)"
            ));
        }
        if let Some(t) = &f.tag
            && driver != Driver::Tag
        {
            let t = arg(t, &mut args);
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM email_tags t WHERE t.project_id = $1 \
                 AND t.tag = {t} AND t.email_id = e.id)"
            ));
        }
        if let Some(v) = &f.from
            && driver != Driver::From
        {
            let p = arg(v, &mut args);
            sql.push_str(&format!(" AND e.from_email = {p}"));
        }
        if let Some(s) = &f.status
            && driver != Driver::Status
        {
            let p = arg(s, &mut args);
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM recipients r WHERE r.email_id = e.id AND r.status = {p})"
            ));
        }
        if let Some(v) = &f.stream {
            let p = arg(v, &mut args);
            sql.push_str(&format!(" AND e.stream = {p}"));
        }
        if let Some(v) = &f.after {
            let p = arg(v, &mut args);
            sql.push_str(&format!(" AND {id_col} < {p}"));
        }
        if let Some(v) = &f.before {
            let p = arg(v, &mut args);
            sql.push_str(&format!(" AND {id_col} > {p}"));
        }
        let times = [(f.created_after, ">="), (f.created_before, "<")];
        let mut time_args = Vec::new();
        for (t, op) in times {
            if let Some(t) = t {
                time_args.push(t);
                sql.push_str(&format!(
                    " AND e.created_at {op} ${}",
                    args.len() + time_args.len()
                ));
            }
        }
        let order = if f.before.is_some() { "ASC" } else { "DESC" };
        let mut order_col = id_col;
        if driver == Driver::Status {
            order_col = self.dialect().grouped_email_id;
            sql.push_str(&format!(" GROUP BY {order_col}"));
        }
        sql.push_str(&format!(
            " ORDER BY {order_col} {order} LIMIT ${}",
            args.len() + time_args.len() + 1
        ));
        // Subject words are no index's: they filter a window of the newest SUBJECT_WINDOW
        // candidates of the other filters, so a word found nowhere reads that many rows, not
        // every email of the project.
        let window = sql.clone();
        let mut patterns = Vec::new();
        if !f.subject.is_empty() {
            let first = args.len() + time_args.len() + 2;
            let mut outer = format!("SELECT * FROM ({sql}) s WHERE");
            for (i, w) in f.subject.iter().enumerate() {
                let escaped = w
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                patterns.push(format!("%{}%", escaped.to_lowercase()));
                let and = if i == 0 { "" } else { " AND" };
                outer.push_str(&format!(
                    "{and} LOWER(s.subject) LIKE ${} ESCAPE '\\'",
                    first + i
                ));
            }
            outer.push_str(&format!(
                " ORDER BY s.id {order} LIMIT ${}",
                first + patterns.len()
            ));
            sql = outer;
        }
        let bind_filters = |sql: String| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for a in &args {
                q = q.bind(a.clone());
            }
            for t in &time_args {
                q = q.bind(*t);
            }
            q
        };
        let mut q = bind_filters(sql);
        if patterns.is_empty() {
            q = q.bind(limit);
        } else {
            q = q.bind(SUBJECT_WINDOW);
            for p in &patterns {
                q = q.bind(p.clone());
            }
            q = q.bind(limit);
        }
        let rows = q.fetch_all(&self.pool).await?;
        // A short page of a subject search whose window was full: older emails were not read.
        let window_full =
            !patterns.is_empty() && i64::try_from(rows.len()).unwrap_or(0) < limit && {
                let count = format!("SELECT COUNT(*) FROM ({window}) w");
                let n: i64 = bind_filters(count)
                    .bind(SUBJECT_WINDOW)
                    .fetch_one(&self.pool)
                    .await?
                    .try_get(0)?;
                n >= SUBJECT_WINDOW
            };
        let mut emails = rows
            .iter()
            .map(email_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        if f.before.is_some() {
            emails.reverse();
        }
        // Every listed email's recipient statuses, in one query.
        let mut statuses: std::collections::HashMap<String, Vec<RecipientStatus>> =
            Default::default();
        if !emails.is_empty() {
            let sql = format!(
                "SELECT email_id, status FROM recipients WHERE email_id IN ({})",
                super::write::placeholders(1, emails.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for e in &emails {
                q = q.bind(e.id.as_str());
            }
            for r in q.fetch_all(&self.pool).await? {
                statuses
                    .entry(r.try_get(0)?)
                    .or_default()
                    .push(recipient_status(&r.try_get::<String, _>(1)?)?);
            }
        }
        let rows = emails
            .into_iter()
            .map(|e| {
                let s = statuses.remove(&e.id).unwrap_or_default();
                (e, s)
            })
            .collect();
        Ok(SearchPage { rows, window_full })
    }

    /// The project's event feed, oldest first, after the event id `after`.
    pub async fn list_events(
        &self,
        project_id: &str,
        filter: &EventFilter,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT id, email_id, recipient, type, data, created_at FROM events \
             WHERE project_id = $1 AND id > $2 AND ($3 = '' OR type = $3) \
             AND ($4 = '' OR recipient = $4) AND ($5 = '' OR email_id = $5) \
             AND created_at >= $6 ORDER BY id LIMIT $7",
        )
        .bind(project_id)
        .bind(filter.after.as_deref().unwrap_or(""))
        .bind(filter.event_type.map_or("", EventType::as_str))
        .bind(filter.recipient.as_deref().unwrap_or(""))
        .bind(filter.email_id.as_deref().unwrap_or(""))
        .bind(filter.created_after.unwrap_or(i64::MIN))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Cancels every recipient of the email that is still waiting and not held by a worker.
    /// Returns how many were canceled; `NotFound` if the project has no such email.
    pub async fn cancel_email(
        &self,
        project_id: &str,
        id: &str,
        now_ms: i64,
    ) -> StoreResult<usize> {
        let (project_id, id) = (project_id.to_owned(), id.to_owned());
        self.writer
            .run(move |tx, outbox| {
                Box::pin(async move {
                    let found = tx
                        .query(
                            "SELECT stream FROM emails WHERE project_id = $1 AND id = $2",
                            &[Val::Text(&project_id), Val::Text(&id)],
                        )
                        .await?;
                    let stream: String = found.first().ok_or(StoreError::NotFound)?.get(0)?;
                    let rows = tx
                        .query(
                            concat!(
                                "UPDATE recipients SET status = 'canceled', lease_owner = NULL, \
                                 lease_expires_at = NULL, last_event_at = $1 \
                                 WHERE email_id = $2 AND ",
                                pending!(),
                                " AND (lease_owner IS NULL OR lease_expires_at < $1) \
                                 RETURNING id, address"
                            ),
                            &[Val::Int(now_ms), Val::Text(&id)],
                        )
                        .await?;
                    for r in &rows {
                        let (rid, address): (String, String) = (r.get(0)?, r.get(1)?);
                        let ev = NewEvent::new(
                            Some(&rid),
                            Some(&address),
                            EventType::Canceled,
                            EventData::Empty {},
                            now_ms,
                        );
                        let row = EventRow {
                            project_id: &project_id,
                            email_id: Some(&id),
                            stream: Some(&stream),
                            event: &ev,
                        };
                        insert_event(tx, outbox, row, false).await?;
                    }
                    Ok(rows.len())
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    /// The stored text is the same as a `Value`'s `to_string` wrote before.
    #[test]
    fn json_text_is_the_values_own_text() {
        let value = serde_json::json!({
            "smtp": {"code": 250, "response": "2.0.0 Ok: queued as \"X\"\r\n\tnext"},
            "tags": ["a", "é", "\u{1}"],
            "none": null,
            "n": -1.5,
        });
        assert_eq!(super::json_text(&value), value.to_string());
        // A map and a list written directly: as their `Value`s would be.
        let tags = vec!["b".to_owned(), "a\"".to_owned()];
        let meta: std::collections::BTreeMap<_, _> = [("z", "1"), ("a", "2")].into();
        assert_eq!(super::json_text(&tags), serde_json::json!(tags).to_string());
        assert_eq!(super::json_text(&meta), serde_json::json!(meta).to_string());
    }
}

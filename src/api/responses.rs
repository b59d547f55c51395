//! Response bodies as types: each derives `Serialize` (what the handler sends) and `ToSchema`
//! (what the OpenAPI document says), so the two cannot drift, and each is built from the
//! store's record in one place.
//!
//! Bodies not moved here yet are built with `json!` and described by the shapes in
//! `api::openapi::schemas`.

use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::format_ms;
use crate::store::ApiKeyRecord;

/// A page of a listing, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse<T: ToSchema> {
    /// Always `list`.
    #[schema(value_type = String, example = "list")]
    pub object: &'static str,
    /// Whether more items follow this page.
    pub has_more: bool,
    pub data: Vec<T>,
}

impl<T: ToSchema> ListResponse<T> {
    pub fn new(data: Vec<T>, has_more: bool) -> Self {
        Self {
            object: "list",
            has_more,
            data,
        }
    }
}

/// What a `DELETE` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// The kind of object deleted, such as `api_key`.
    #[schema(value_type = String)]
    pub object: &'static str,
    pub id: String,
    /// Always true.
    pub deleted: bool,
}

impl Deleted {
    pub fn new(object: &'static str, id: impl Into<String>) -> Self {
        Self {
            object,
            id: id.into(),
            deleted: true,
        }
    }
}

/// An API key: never its secret; the whole token only in the answer that creates it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ApiKey)]
pub struct ApiKeyResponse {
    /// Always `api_key`.
    #[schema(value_type = String, example = "api_key")]
    pub object: &'static str,
    pub id: String,
    pub project_id: String,
    pub name: String,
    /// `full_access` or `sending_access`.
    pub permission: String,
    /// The token's public part, shown in listings to tell keys apart.
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    /// Sending domains the key may use (`From` domain); null: any.
    pub allowed_domains: Option<Vec<String>>,
    /// The whole key: shown once, when it is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl From<&ApiKeyRecord> for ApiKeyResponse {
    fn from(k: &ApiKeyRecord) -> Self {
        Self {
            object: "api_key",
            id: k.id.clone(),
            project_id: k.project_id.clone(),
            name: k.name.clone(),
            permission: k.permission.clone(),
            prefix: k.prefix.clone(),
            created_at: format_ms(k.created_at),
            last_used_at: k.last_used_at.map(format_ms),
            expires_at: k.expires_at.map(format_ms),
            allowed_domains: k.allowed_domains.clone(),
            token: None,
        }
    }
}

impl ApiKeyResponse {
    /// The answer to a key's creation: the record, and its token this once.
    pub fn created(k: &ApiKeyRecord, token: String) -> Self {
        Self {
            token: Some(token),
            ..Self::from(k)
        }
    }
}

/// A project (administration with an admin token).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Project)]
pub struct ProjectResponse {
    /// Always `project`.
    #[schema(value_type = String, example = "project")]
    pub object: &'static str,
    pub id: String,
    pub name: String,
    pub created_at: String,
}

impl From<&crate::store::Project> for ProjectResponse {
    fn from(p: &crate::store::Project) -> Self {
        Self {
            object: "project",
            id: p.id.clone(),
            name: p.name.clone(),
            created_at: format_ms(p.created_at),
        }
    }
}

/// An address Herald will not send to, for every stream or one.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Suppression)]
pub struct SuppressionResponse {
    /// Always `suppression`.
    #[schema(value_type = String, example = "suppression")]
    pub object: &'static str,
    pub id: String,
    pub email: String,
    /// `hard_bounce`, `complaint`, `manual` or `unsubscribe`.
    pub reason: String,
    /// Null: every stream.
    pub stream: Option<String>,
    pub source_email_id: Option<String>,
    pub details: Option<String>,
    pub created_at: String,
}

impl From<&crate::store::SuppressionRecord> for SuppressionResponse {
    fn from(s: &crate::store::SuppressionRecord) -> Self {
        Self {
            object: "suppression",
            id: s.id.clone(),
            email: s.email.clone(),
            reason: s.reason.clone(),
            stream: (!s.stream.is_empty()).then(|| s.stream.clone()),
            source_email_id: s.source_email_id.clone(),
            details: s.details.clone(),
            created_at: format_ms(s.created_at),
        }
    }
}

/// What removing an address's suppressions answers.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SuppressionDeleted)]
pub struct SuppressionDeleted {
    /// Always `suppression`.
    #[schema(value_type = String, example = "suppression")]
    pub object: &'static str,
    /// The id or address asked for.
    pub id: String,
    pub deleted: bool,
    /// How many suppressions (streams) were removed.
    pub removed: u64,
}

/// A webhook endpoint. Its signing secret is shown on create, get and rotate (full-access
/// keys only reach these), never in listings.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Webhook)]
pub struct WebhookResponse {
    /// Always `webhook`.
    #[schema(value_type = String, example = "webhook")]
    pub object: &'static str,
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub streams: Vec<String>,
    pub description: Option<String>,
    /// `enabled`, `disabled` or `auto_disabled`.
    pub status: String,
    pub disabled_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// `whsec_…`: shown on create, get and rotate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// When the previous secret stops signing (in the answer to a rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
}

impl From<&crate::store::EndpointRecord> for WebhookResponse {
    fn from(e: &crate::store::EndpointRecord) -> Self {
        Self {
            object: "webhook",
            id: e.id.clone(),
            url: e.url.clone(),
            events: e.event_types.clone(),
            streams: e.streams.clone(),
            description: e.description.clone(),
            status: e.status.clone(),
            disabled_reason: e.disabled_reason.clone(),
            created_at: format_ms(e.created_at),
            updated_at: format_ms(e.updated_at),
            secret: None,
            previous_secret_expires_at: None,
        }
    }
}

/// A record a sending domain asks the operator to publish, with its last check.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DnsRecord)]
pub struct DnsRecordResponse {
    /// `DKIM`, `RETURN_PATH`, `SPF` or `DMARC`.
    pub record: &'static str,
    /// `TXT` or `MX`.
    #[serde(rename = "type")]
    pub rtype: &'static str,
    pub name: String,
    pub value: String,
    /// `pending`, `verified`, `failed` or `temporary_failure`.
    pub status: String,
    pub failure_reason: Option<String>,
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    /// A DKIM record's selector, its key's state (`pending`, `active`, `retired`) and algorithm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// A retired key's record: whether (and from when) it can be unpublished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_to_remove: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_to_remove_at: Option<String>,
}

/// A sending domain: its records and their statuses; never its private keys.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Domain)]
pub struct DomainResponse {
    /// Always `domain`.
    #[schema(value_type = String, example = "domain")]
    pub object: &'static str,
    pub id: String,
    pub name: String,
    pub status: String,
    /// `herald` (Herald signs) or `upstream` (the relay does).
    pub dkim: String,
    pub records: Vec<DnsRecordResponse>,
    pub last_checked_at: Option<String>,
    pub next_check_at: Option<String>,
    pub verified_at: Option<String>,
    pub created_at: String,
}

impl DomainResponse {
    /// The domain with the records `settings` ask for and their statuses at `now`.
    pub fn new(
        d: &crate::store::DomainRecord,
        keys: &[crate::store::DkimKeyRecord],
        settings: &crate::domains::records::RecordSettings<'_>,
        now: i64,
    ) -> Self {
        use crate::domains::records::{RETIRED_KEY_GRACE_MS, RecordStatuses, records};
        let statuses: RecordStatuses = serde_json::from_str(&d.records_status).unwrap_or_default();
        let records = records(d, keys, settings)
            .into_iter()
            .map(|r| {
                let check = statuses.get(&r.key);
                let key = r
                    .key
                    .strip_prefix("DKIM:")
                    .and_then(|selector| keys.iter().find(|k| k.selector == selector));
                let safe_at = key
                    .and_then(|k| k.retired_at)
                    .map(|t| t + RETIRED_KEY_GRACE_MS);
                DnsRecordResponse {
                    record: r.record,
                    rtype: r.rtype,
                    name: r.name,
                    value: r.value,
                    status: check.map_or("pending", |c| c.status.as_str()).to_owned(),
                    failure_reason: check.and_then(|c| c.failure_reason.clone()),
                    required: r.required,
                    priority: r.priority,
                    selector: key.map(|k| k.selector.clone()),
                    key_state: key.map(|k| k.state.clone()),
                    algorithm: key.map(|k| k.algorithm.clone()),
                    safe_to_remove: safe_at.map(|at| now >= at),
                    safe_to_remove_at: safe_at.map(format_ms),
                }
            })
            .collect();
        Self {
            object: "domain",
            id: d.id.clone(),
            name: d.name.clone(),
            status: d.status.clone(),
            dkim: d.dkim_mode.clone(),
            records,
            last_checked_at: d.last_checked_at.map(format_ms),
            next_check_at: d.next_check_at.map(format_ms),
            verified_at: d.verified_at.map(format_ms),
            created_at: format_ms(d.created_at),
        }
    }
}

/// One attempt to deliver an event to an endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookAttempt)]
pub struct WebhookAttemptResponse {
    /// Always `webhook_attempt`.
    #[schema(value_type = String, example = "webhook_attempt")]
    pub object: &'static str,
    pub id: String,
    pub delivery_id: String,
    pub event_id: String,
    pub attempt: i64,
    /// `succeeded` or `failed`.
    #[schema(value_type = String)]
    pub status: &'static str,
    pub status_code: Option<i64>,
    /// The first kilobyte of the receiver's answer.
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub attempted_at: String,
    pub next_attempt_at: Option<String>,
}

impl From<&crate::store::AttemptLogRecord> for WebhookAttemptResponse {
    fn from(a: &crate::store::AttemptLogRecord) -> Self {
        Self {
            object: "webhook_attempt",
            id: a.id.clone(),
            delivery_id: a.delivery_id.clone(),
            event_id: a.event_id.clone(),
            attempt: a.attempt,
            status: if a.succeeded { "succeeded" } else { "failed" },
            status_code: a.status_code,
            response_body: a.response_body.clone(),
            error: a.error.clone(),
            duration_ms: a.duration_ms,
            attempted_at: format_ms(a.attempted_at),
            next_attempt_at: a.next_attempt_at.map(format_ms),
        }
    }
}

/// A delivery of an event to an endpoint, queued (by a test, a retry or a redelivery).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookDelivery)]
pub struct WebhookDeliveryResponse {
    /// Always `webhook_delivery`.
    #[schema(value_type = String, example = "webhook_delivery")]
    pub object: &'static str,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// `pending`: it goes out at once.
    #[schema(value_type = String)]
    pub status: &'static str,
}

impl WebhookDeliveryResponse {
    pub fn pending(id: String, event_id: Option<String>) -> Self {
        Self {
            object: "webhook_delivery",
            id,
            event_id,
            status: "pending",
        }
    }
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (alive) or `ready`.
    #[schema(value_type = String, example = "ready")]
    pub status: &'static str,
}

/// One event: its own fields, then its type's data (`smtp`, `bounce`, `complaint`, `failure`,
/// `attempt`…) at the top level.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Event)]
pub struct EventResponse {
    /// Always `event`.
    #[schema(value_type = String, example = "event")]
    pub object: &'static str,
    pub id: String,
    /// Such as `email.sent` or `email.bounced`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub email_id: Option<String>,
    pub recipient: Option<String>,
    pub occurred_at: String,
    /// The type's own fields.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

impl From<&crate::store::EventRecord> for EventResponse {
    fn from(e: &crate::store::EventRecord) -> Self {
        let data = match serde_json::from_str(&e.data) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        Self {
            object: "event",
            id: e.id.clone(),
            event_type: e.event_type.clone(),
            email_id: e.email_id.clone(),
            recipient: e.recipient.clone(),
            occurred_at: format_ms(e.created_at),
            data,
        }
    }
}

/// An event queued again for every endpoint that takes it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Redelivery)]
pub struct Redelivery {
    /// Always `event`.
    #[schema(value_type = String, example = "event")]
    pub object: &'static str,
    pub id: String,
    /// How many deliveries were queued.
    pub deliveries: u64,
}

/// An address with its display name.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
#[schema(as = Mailbox)]
pub struct MailboxView {
    pub email: String,
    pub name: Option<String>,
}

/// The relay's last answer for a recipient.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SmtpReply)]
pub struct SmtpReplyView {
    pub code: i64,
    pub enhanced_status: Option<String>,
    pub response: Option<String>,
    /// The step it answered: `connect`, `mail`, `rcpt`, `data`…
    pub phase: Option<String>,
}

/// Why a recipient bounced.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = BounceClass)]
pub struct BounceView {
    /// `permanent`, `transient` or `undetermined`.
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = Option<crate::api::openapi::schemas::BounceSubType>)]
    pub sub_type: Option<String>,
}

/// One recipient of an email and where it stands.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Recipient)]
pub struct RecipientResponse {
    pub email: String,
    pub name: Option<String>,
    /// `to`, `cc` or `bcc`.
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub attempts: i64,
    pub last_event_at: String,
    /// When it is tried next, while it waits.
    pub next_attempt_at: Option<String>,
    pub sent_at: Option<String>,
    pub smtp: Option<SmtpReplyView>,
    pub bounce: Option<BounceView>,
}

impl From<&crate::store::RecipientRecord> for RecipientResponse {
    fn from(r: &crate::store::RecipientRecord) -> Self {
        use crate::domain::status::RecipientStatus;
        Self {
            email: r.address.clone(),
            name: r.name.clone(),
            kind: r.kind.clone(),
            status: r.status.clone(),
            attempts: r.attempts,
            last_event_at: format_ms(r.last_event_at),
            next_attempt_at: RecipientStatus::parse(&r.status)
                .filter(|s| s.is_pending())
                .map(|_| format_ms(r.next_attempt_at)),
            sent_at: r.sent_at.map(format_ms),
            smtp: r.smtp_code.map(|code| SmtpReplyView {
                code,
                enhanced_status: r.smtp_enhanced.clone(),
                response: r.smtp_response.clone(),
                phase: r.smtp_phase.clone(),
            }),
            bounce: r.bounce_type.as_ref().map(|t| BounceView {
                kind: t.clone(),
                sub_type: r.bounce_sub_type.clone(),
            }),
        }
    }
}

/// The JSON text of a stored list or map, or its empty value when the column holds none.
fn stored<T: serde::de::DeserializeOwned + Default>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_default()
}

/// An email with its recipients.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Email)]
pub struct EmailResponse {
    /// Always `email`.
    #[schema(value_type = String, example = "email")]
    pub object: &'static str,
    pub id: String,
    pub message_id: String,
    pub stream: String,
    pub from: MailboxView,
    pub reply_to: Vec<MailboxView>,
    pub subject: String,
    /// Absent once retention purged the content.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub text: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub html: Option<Option<String>>,
    pub content_purged: bool,
    pub tags: Vec<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The aggregate of the recipients' statuses.
    pub status: String,
    pub created_at: String,
    pub scheduled_at: Option<String>,
    pub expires_at: Option<String>,
    pub sent_at: Option<String>,
    pub last_event_at: Option<String>,
    pub recipients: Vec<RecipientResponse>,
}

impl EmailResponse {
    pub fn new(
        e: &crate::store::EmailRecord,
        recipients: &[crate::store::RecipientRecord],
        status: &str,
    ) -> Self {
        Self {
            object: "email",
            id: e.id.clone(),
            message_id: e.message_id.clone(),
            stream: e.stream.clone(),
            from: MailboxView {
                email: e.from_email.clone(),
                name: e.from_name.clone(),
            },
            reply_to: stored(&e.reply_to),
            subject: e.subject.clone(),
            // After the retention purge the bodies are gone: say so rather than show nulls.
            text: e.content_purged_at.is_none().then(|| e.text_body.clone()),
            html: e.content_purged_at.is_none().then(|| e.html_body.clone()),
            content_purged: e.content_purged_at.is_some(),
            tags: stored(&e.tags),
            metadata: stored(&e.metadata),
            status: status.to_owned(),
            created_at: format_ms(e.created_at),
            scheduled_at: e.scheduled_at.map(format_ms),
            expires_at: e.expires_at.map(format_ms),
            sent_at: recipients
                .iter()
                .filter_map(|r| r.sent_at)
                .min()
                .map(format_ms),
            last_event_at: recipients
                .iter()
                .map(|r| r.last_event_at)
                .max()
                .map(format_ms),
            recipients: recipients.iter().map(RecipientResponse::from).collect(),
        }
    }
}

/// An email in a search result.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EmailSummary)]
pub struct EmailSummaryResponse {
    /// Always `email`.
    #[schema(value_type = String, example = "email")]
    pub object: &'static str,
    pub id: String,
    pub message_id: String,
    pub stream: String,
    pub from: MailboxView,
    pub subject: String,
    pub tags: Vec<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub status: String,
    /// How many recipients it has.
    pub recipients: usize,
    pub created_at: String,
}

impl EmailSummaryResponse {
    pub fn new(e: &crate::store::EmailRecord, status: &str, recipients: usize) -> Self {
        Self {
            object: "email",
            id: e.id.clone(),
            message_id: e.message_id.clone(),
            stream: e.stream.clone(),
            from: MailboxView {
                email: e.from_email.clone(),
                name: e.from_name.clone(),
            },
            subject: e.subject.clone(),
            tags: stored(&e.tags),
            metadata: stored(&e.metadata),
            status: status.to_owned(),
            recipients,
            created_at: format_ms(e.created_at),
        }
    }
}

/// What canceling an email answers.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EmailCanceled)]
pub struct EmailCanceled {
    /// Always `email`.
    #[schema(value_type = String, example = "email")]
    pub object: &'static str,
    pub id: String,
    pub status: String,
    /// How many recipients were canceled.
    pub canceled: usize,
    pub recipients: Vec<RecipientResponse>,
}

/// What became of a report posted to `/v1/inbound`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = InboundResult)]
pub struct InboundResponse {
    /// Always `inbound`.
    #[schema(value_type = String, example = "inbound")]
    pub object: &'static str,
    /// The stored report's id.
    pub id: String,
    /// `processed` (it changed a recipient), `unmatched` (a report, but no signed return
    /// path of Herald's in it: nothing changed), `unknown` (not a report), `parse_error`
    /// (reading it failed; it is kept) or `received` (kept; it will be read again).
    pub status: String,
    /// `dsn`, `arf`, `non_standard`, `unknown`, or null when reading failed.
    pub kind: Option<String>,
    /// Each reported recipient: its address, action, status, diagnostic and class.
    pub recipients: Option<Vec<serde_json::Value>>,
    pub complaint: Option<serde_json::Value>,
    pub original_message_id: Option<String>,
    /// How many recipients it changed.
    pub matched: usize,
}

/// What reading kept inbound messages again did.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReprocessResult)]
pub struct ReprocessResponse {
    /// Always `inbound_reprocess`.
    #[schema(value_type = String, example = "inbound_reprocess")]
    pub object: &'static str,
    /// Messages read.
    pub examined: u64,
    pub processed: u64,
    pub unmatched: u64,
    pub unknown: u64,
    pub parse_error: u64,
    /// Left `received`: the database failed while they were read.
    pub received: u64,
    /// Effects (events, status changes, suppressions) made by this run; a message read
    /// again makes none it made before.
    pub applied: u64,
}

impl From<&crate::bounces::inbound::ReprocessSummary> for ReprocessResponse {
    fn from(s: &crate::bounces::inbound::ReprocessSummary) -> Self {
        Self {
            object: "inbound_reprocess",
            examined: s.examined,
            processed: s.processed,
            unmatched: s.unmatched,
            unknown: s.unknown,
            parse_error: s.parse_error,
            received: s.received,
            applied: s.applied,
        }
    }
}

/// The 202 answer to a send.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmailAccepted {
    /// Always `email`.
    #[schema(value_type = String, example = "email")]
    pub object: &'static str,
    pub id: String,
    /// `queued`, `scheduled`, or `suppressed` when every recipient is.
    pub status: String,
    pub scheduled_at: Option<String>,
    pub created_at: String,
    /// The RFC 5322 Message-ID the mail carries.
    pub message_id: String,
    /// Recipients that will not be attempted (on the suppression list).
    pub suppressed: Vec<String>,
}

/// One accepted email of a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItem {
    /// Its place in the request.
    pub index: usize,
    pub id: String,
    pub status: String,
    pub message_id: String,
}

/// One refused email of a permissive batch.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchError {
    pub index: usize,
    pub code: &'static str,
    pub detail: String,
    pub pointer: String,
}

/// The answer to a batch: one entry per accepted item, one error per refused item.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAccepted {
    /// Always `list`.
    #[schema(value_type = String, example = "list")]
    pub object: &'static str,
    pub data: Vec<BatchItem>,
    pub errors: Vec<BatchError>,
}

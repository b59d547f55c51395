//! Emails: the answer to a send, an email with its recipients, search results, cancellation.

use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::format_ms;

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
    #[schema(value_type = Option<crate::domain::bounce::BounceSubType>)]
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
    #[schema(value_type = String)]
    pub kind: crate::domain::email::RecipientKind,
    #[schema(value_type = String)]
    pub status: crate::domain::status::RecipientStatus,
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
        Self {
            email: r.address.clone(),
            name: r.name.clone(),
            kind: r.kind,
            status: r.status,
            attempts: r.attempts,
            last_event_at: format_ms(r.last_event_at),
            next_attempt_at: r.status.is_pending().then(|| format_ms(r.next_attempt_at)),
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
    /// How it came in: `api` or `smtp` (submission).
    pub source: &'static str,
    /// The SMTP client's address, for mail submitted over SMTP.
    pub client_address: Option<String>,
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
            source: if e.smtp_client.is_some() {
                "smtp"
            } else {
                "api"
            },
            client_address: e.smtp_client.clone(),
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

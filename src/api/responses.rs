//! Response bodies as types: each derives `Serialize` (what the handler sends) and `ToSchema`
//! (what the OpenAPI document says), so the two cannot drift, and each is built from the
//! store's record in one place.
//!
//! One module per resource.

use serde::Serialize;
use utoipa::ToSchema;

mod domains;
mod emails;
mod events;
mod inbound;
mod keys;
mod stats;
mod suppressions;
mod webhooks;

pub use domains::{DnsRecordResponse, DomainResponse};
pub use emails::{
    BatchAccepted, BatchError, BatchItem, BounceView, EmailAccepted, EmailCanceled, EmailResponse,
    EmailSummaryResponse, MailboxView, RecipientResponse, SmtpReplyView,
};
pub use events::{EventResponse, Redelivery};
pub use inbound::{InboundResponse, ReprocessResponse};
pub use keys::{ApiKeyResponse, ProjectResponse};
pub use stats::{
    BounceCountResponse, BounceStatsResponse, StatsMetrics, StatsPeriod, StatsResponse,
};
pub use suppressions::{
    BatchResults, SuppressionAdded, SuppressionDeleted, SuppressionRemoved, SuppressionResponse,
};
pub use webhooks::{WebhookAttemptResponse, WebhookDeliveryResponse, WebhookResponse};

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

/// `/healthz` and `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (alive) or `ready`.
    #[schema(value_type = String, example = "ready")]
    pub status: &'static str,
}

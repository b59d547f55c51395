//! Webhook endpoints, their attempt log and queued deliveries.

use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::format_ms;

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
    /// The most events a second it is sent; null: no cap.
    pub rate_limit: Option<i64>,
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
            status: e.status.as_str().to_owned(),
            disabled_reason: e.disabled_reason.clone(),
            rate_limit: e.rate_limit,
            created_at: format_ms(e.created_at),
            updated_at: format_ms(e.updated_at),
            secret: None,
            previous_secret_expires_at: None,
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

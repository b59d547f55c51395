//! Events and redeliveries.

use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::format_ms;

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
            event_type: e.event_type.as_str().to_owned(),
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

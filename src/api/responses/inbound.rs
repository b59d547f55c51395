//! Bounce and complaint reports posted to the API, and reprocess runs.

use serde::Serialize;
use utoipa::ToSchema;

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
    #[serde(flatten)]
    pub summary: crate::bounces::inbound::ReprocessSummary,
}

impl From<&crate::bounces::inbound::ReprocessSummary> for ReprocessResponse {
    fn from(s: &crate::bounces::inbound::ReprocessSummary) -> Self {
        Self {
            object: "inbound_reprocess",
            summary: s.clone(),
        }
    }
}

//! The suppression list.

use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::format_ms;

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

/// What became of one address of a batch add.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionAdded {
    /// Its place in the request.
    pub index: usize,
    pub email: String,
    /// The suppression's id (absent for an invalid address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `added`, `exists` or `invalid`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// Why the address is invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What became of one address or id of a batch remove.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionRemoved {
    pub target: String,
    /// `removed` or `not_found`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// How many suppressions (streams) were removed.
    pub removed: usize,
}

/// Per-item results of a batch add or remove, in the request's order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResults<T: ToSchema> {
    /// Always `list`.
    #[schema(value_type = String, example = "list")]
    pub object: &'static str,
    pub data: Vec<T>,
}

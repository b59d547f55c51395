//! API keys and projects.

use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::format_ms;
use crate::store::ApiKeyRecord;

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

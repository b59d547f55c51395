//! `POST/GET /v1/api-keys`, `DELETE /v1/api-keys/{id}`: key management for full-access keys.
//! The token is in the creation response only; listings show its public prefix.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::domain::address::domain_name;
use crate::domain::api_key::{ApiKeyToken, Permission};
use crate::store::ApiKeyRecord;

use super::AppState;
use super::auth::FullAccess;
use super::error::{ApiError, ApiResult, FieldError};
use super::json::JsonBody;
use super::responses::{ApiKeyResponse, Deleted, ListResponse};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "website", "permission": "sending_access"}))]
pub struct CreateApiKeyRequest {
    name: String,
    #[serde(default)]
    permission: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    /// Sending domains the key may use (`From` domain); absent: any.
    #[serde(default)]
    allowed_domains: Option<Vec<String>>,
}

/// Creates a key in the caller's project and shows its token, once.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateApiKeyRequest, responses((status = 201, description = "Created; the token is shown this once", body = ApiKeyResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn create_api_key(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    JsonBody(req): JsonBody<CreateApiKeyRequest>,
) -> ApiResult<(StatusCode, Json<ApiKeyResponse>)> {
    let (record, token) = new_api_key(
        state.clock.now_ms(),
        &principal.project_id,
        &req.name,
        req.permission.as_deref(),
        req.expires_at.as_deref(),
        req.allowed_domains,
    )
    .map_err(ApiError::validation)?;
    state.store.insert_api_key(&record).await?;
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyResponse::created(&record, token.reveal())),
    ))
}

/// Lists the project's live keys, newest first.
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", responses((status = 200, description = "The project's keys (never their tokens)", body = ListResponse<ApiKeyResponse>), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
) -> ApiResult<Json<ListResponse<ApiKeyResponse>>> {
    let keys = state.store.list_api_keys(&principal.project_id).await?;
    let data = keys.iter().map(ApiKeyResponse::from).collect();
    Ok(Json(ListResponse::new(data, false)))
}

/// Revokes one of the project's keys.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys", params(("id" = String, Path, description = "The object's id")), responses((status = 200, description = "Revoked", body = Deleted), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn delete_api_key(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    state
        .store
        .revoke_api_key(&principal.project_id, &id, state.clock.now_ms())
        .await?;
    state.api_keys.clear();
    Ok(Json(Deleted::new("api_key", id)))
}

/// A new key of the project and its token (shown once), after every rule of a key: the API's
/// `POST /v1/api-keys` and the console's. `permission` defaults to full access.
pub(crate) fn new_api_key(
    now: i64,
    project_id: &str,
    name: &str,
    permission: Option<&str>,
    expires_at: Option<&str>,
    allowed_domains: Option<Vec<String>>,
) -> Result<(ApiKeyRecord, ApiKeyToken), Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "/name",
            "validation_error",
            "name must be 1 to 100 printable characters",
        ));
    }
    let permission = match permission {
        None => Some(Permission::FullAccess),
        Some(p) => Permission::parse(p),
    };
    if permission.is_none() {
        errors.push(FieldError::new(
            "/permission",
            "validation_error",
            "permission must be full_access or sending_access",
        ));
    }
    let expires_at = match expires_at.map(chrono::DateTime::parse_from_rfc3339) {
        None => None,
        Some(Ok(t)) if t.timestamp_millis() > now => Some(t.timestamp_millis()),
        Some(_) => {
            errors.push(FieldError::new(
                "/expires_at",
                "validation_error",
                "expires_at must be a future RFC 3339 time with an offset",
            ));
            None
        }
    };
    // Each domain as `From` addresses carry it: lower-case ASCII, an internationalized one in
    // its ASCII form (see `domain::address`).
    let allowed_domains = allowed_domains.map(|list| {
        list.iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let domain = domain_name(d);
                if domain.is_none() {
                    errors.push(FieldError::new(
                        format!("/allowed_domains/{i}"),
                        "invalid_domain",
                        format!("'{}' is not a domain name", d.escape_debug()),
                    ));
                }
                domain
            })
            .collect::<Vec<_>>()
    });
    let (Some(permission), true) = (permission, errors.is_empty()) else {
        return Err(errors);
    };
    let token = ApiKeyToken::generate();
    let record = ApiKeyRecord {
        id: uuid::Uuid::now_v7().to_string(),
        project_id: project_id.to_owned(),
        name: name.to_owned(),
        prefix: token.prefix(),
        secret_hash: token.secret_hash(),
        permission: permission.as_str().to_owned(),
        created_at: now,
        last_used_at: None,
        expires_at,
        revoked_at: None,
        allowed_domains,
    };
    Ok((record, token))
}

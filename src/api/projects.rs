//! `/v1/projects`: cross-project administration with an admin token (a JWT minted by
//! `herald admin-token`), including key management in any project. API keys are refused here.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;

use crate::domain::api_key::{ApiKeyToken, Permission};
use crate::store::{ApiKeyRecord, StoreError};

use super::AppState;
use super::error::{ApiError, ApiResult, FieldError};
use super::json::JsonBody;
use super::responses::{ApiKeyResponse, Deleted, ListResponse, ProjectResponse};

/// A request carrying a valid admin token.
pub struct Admin {
    pub subject: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing_api_key",
                    "send an admin token as Authorization: Bearer …",
                )
            })?;
        if token.starts_with("hk_") {
            return Err(ApiError::forbidden(
                "project administration needs an admin token, not an API key",
            ));
        }
        let subject = state.admin_tokens.verify(token).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the admin token is not valid (expired, wrongly signed or malformed)",
            )
        })?;
        Ok(Admin { subject })
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "shop"}))]
pub struct ProjectRequest {
    name: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    name: String,
    #[serde(default)]
    permission: Option<String>,
}

pub(crate) fn valid_name(name: &str) -> Result<String, ApiError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(ApiError::validation(vec![FieldError::new(
            "/name",
            "validation_error",
            "name must be 1 to 100 printable characters",
        )]));
    }
    Ok(n.to_owned())
}

#[utoipa::path(post, path = "/v1/projects", tag = "projects", request_body = ProjectRequest, responses((status = 201, description = "Created", body = ProjectResponse), crate::api::openapi::Problems), security(("admin_token" = [])))]
pub async fn create_project(
    State(state): State<AppState>,
    admin: Admin,
    JsonBody(req): JsonBody<ProjectRequest>,
) -> ApiResult<(StatusCode, Json<ProjectResponse>)> {
    let name = valid_name(&req.name)?;
    match state
        .store
        .create_project(&name, state.clock.now_ms())
        .await
    {
        Ok(p) => {
            tracing::info!(admin = %admin.subject, project_id = %p.id, "project created");
            Ok((StatusCode::CREATED, Json(ProjectResponse::from(&p))))
        }
        Err(StoreError::Conflict) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "project_exists",
            format!("a project named {name} exists"),
        )),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(get, path = "/v1/projects", tag = "projects", responses((status = 200, description = "Every project", body = ListResponse<ProjectResponse>), crate::api::openapi::Problems), security(("admin_token" = [])))]
pub async fn list_projects(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<ListResponse<ProjectResponse>>> {
    let projects = state.store.list_projects().await?;
    let data = projects.iter().map(ProjectResponse::from).collect();
    Ok(Json(ListResponse::new(data, false)))
}

#[utoipa::path(get, path = "/v1/projects/{id}", tag = "projects", params(("id" = String, Path, description = "The object's id")), responses((status = 200, description = "The project", body = ProjectResponse), crate::api::openapi::Problems), security(("admin_token" = [])))]
pub async fn get_project(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<ProjectResponse>> {
    Ok(Json(ProjectResponse::from(
        &state.store.get_project(&id).await?,
    )))
}

#[utoipa::path(patch, path = "/v1/projects/{id}", tag = "projects", params(("id" = String, Path, description = "The object's id")), request_body = ProjectRequest, responses((status = 200, description = "Renamed", body = ProjectResponse), crate::api::openapi::Problems), security(("admin_token" = [])))]
pub async fn update_project(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ProjectRequest>,
) -> ApiResult<Json<ProjectResponse>> {
    let name = valid_name(&req.name)?;
    state
        .store
        .rename_project(&id, &name)
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ApiError::new(
                StatusCode::CONFLICT,
                "project_exists",
                format!("a project named {name} exists"),
            ),
            e => e.into(),
        })?;
    Ok(Json(ProjectResponse::from(
        &state.store.get_project(&id).await?,
    )))
}

#[utoipa::path(delete, path = "/v1/projects/{id}", tag = "projects", params(("id" = String, Path, description = "The object's id")), responses((status = 200, description = "Deleted", body = Deleted), crate::api::openapi::Problems), security(("admin_token" = [])))]
pub async fn delete_project(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    state.store.delete_project(&id).await.map_err(|e| match e {
        StoreError::Conflict => ApiError::new(
            StatusCode::CONFLICT,
            "invalid_state",
            "the project has sent mail; its history is kept",
        ),
        e => e.into(),
    })?;
    state.api_keys.clear();
    tracing::info!(admin = %admin.subject, project_id = %id, "project deleted");
    Ok(Json(Deleted::new("project", id)))
}

#[utoipa::path(post, path = "/v1/projects/{id}/api-keys", tag = "projects", params(("id" = String, Path, description = "The object's id")), request_body = KeyRequest, responses((status = 201, description = "Created; the token is shown this once", body = ApiKeyResponse), crate::api::openapi::Problems), security(("admin_token" = [])))]
pub async fn create_project_key(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<KeyRequest>,
) -> ApiResult<(StatusCode, Json<ApiKeyResponse>)> {
    let project = state.store.get_project(&id).await?;
    let name = valid_name(&req.name)?;
    let permission = match req.permission.as_deref().map(Permission::parse) {
        None => Permission::FullAccess,
        Some(Some(p)) => p,
        Some(None) => {
            return Err(ApiError::validation(vec![FieldError::new(
                "/permission",
                "validation_error",
                "permission must be full_access or sending_access",
            )]));
        }
    };
    let token = ApiKeyToken::generate();
    let now = state.clock.now_ms();
    let record = ApiKeyRecord {
        id: uuid::Uuid::now_v7().to_string(),
        project_id: project.id.clone(),
        name,
        prefix: token.prefix(),
        secret_hash: token.secret_hash(),
        permission: permission.as_str().to_owned(),
        created_at: now,
        last_used_at: None,
        expires_at: None,
        revoked_at: None,
        allowed_domains: None,
    };
    state.store.insert_api_key(&record).await?;
    tracing::info!(admin = %admin.subject, project_id = %project.id, key_id = %record.id, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyResponse::created(&record, token.reveal())),
    ))
}

#[utoipa::path(get, path = "/v1/projects/{id}/api-keys", tag = "projects", params(("id" = String, Path, description = "The object's id")), responses((status = 200, description = "The project's keys", body = ListResponse<ApiKeyResponse>), crate::api::openapi::Problems), security(("admin_token" = [])))]
pub async fn list_project_keys(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<ListResponse<ApiKeyResponse>>> {
    state.store.get_project(&id).await?;
    let keys = state.store.list_api_keys(&id).await?;
    let data = keys.iter().map(ApiKeyResponse::from).collect();
    Ok(Json(ListResponse::new(data, false)))
}

#[utoipa::path(delete, path = "/v1/projects/{id}/api-keys/{key_id}", tag = "projects", params(("id" = String, Path, description = "The object's id"), ("key_id" = String, Path, description = "The key")), responses((status = 200, description = "Revoked", body = Deleted), crate::api::openapi::Problems), security(("admin_token" = [])))]
pub async fn delete_project_key(
    State(state): State<AppState>,
    admin: Admin,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<Json<Deleted>> {
    state
        .store
        .revoke_api_key(&id, &key_id, state.clock.now_ms())
        .await?;
    state.api_keys.clear();
    tracing::info!(admin = %admin.subject, project_id = %id, key_id = %key_id, "API key revoked");
    Ok(Json(Deleted::new("api_key", key_id)))
}

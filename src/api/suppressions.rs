//! `/v1/suppressions`: the addresses Herald will not send to, per project (and stream).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::domain::address::EmailAddress;
use crate::domain::suppression::SuppressionReason;
use crate::store::SuppressionRecord;

use super::AppState;
use super::auth::{FullAccess, Principal};
use super::error::{ApiError, ApiResult, FieldError};
use super::json::JsonBody;
use super::responses::{
    BatchResults, ListResponse, SuppressionAdded, SuppressionDeleted, SuppressionRemoved,
    SuppressionResponse,
};

const MAX_BATCH: usize = 100;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ada@example.com", "reason": "manual"}))]
pub struct AddRequest {
    email: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    stream: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"emails": ["ada@example.com", "bob@example.org"], "reason": "manual"}))]
pub struct BatchAddRequest {
    emails: Vec<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    stream: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"emails": ["ada@example.com"]}))]
pub struct BatchRemoveRequest {
    #[serde(default)]
    emails: Vec<String>,
    #[serde(default)]
    ids: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    before: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScopeQuery {
    #[serde(default)]
    stream: Option<String>,
}

/// Reason and scope of a manual addition.
fn manual_scope(
    state: &AppState,
    reason: Option<&str>,
    stream: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> (SuppressionReason, String) {
    let reason = match reason.map(SuppressionReason::parse) {
        None => SuppressionReason::Manual,
        Some(Some(r @ (SuppressionReason::Manual | SuppressionReason::Unsubscribe))) => r,
        Some(_) => {
            errors.push(FieldError::new(
                "/reason",
                "validation_error",
                "reason must be manual or unsubscribe (bounces and complaints are added by Herald)",
            ));
            SuppressionReason::Manual
        }
    };
    let stream = stream.unwrap_or_default().to_owned();
    if !stream.is_empty() && !state.config.streams.contains(&stream) {
        errors.push(FieldError::new(
            "/stream",
            "invalid_stream",
            format!("'{stream}' is not a configured stream"),
        ));
    }
    (reason, stream)
}

fn parse_email(raw: &str, pointer: String, errors: &mut Vec<FieldError>) -> Option<EmailAddress> {
    match EmailAddress::parse(raw) {
        Ok(e) => Some(e),
        Err(e) => {
            errors.push(FieldError::new(pointer, "invalid_email", e.to_string()));
            None
        }
    }
}

/// A suppression an operator adds by hand (over the API or from the console): a valid
/// address, `manual` or `unsubscribe`, every stream or a configured one.
pub(crate) fn manual_suppression(
    state: &AppState,
    project_id: &str,
    email: &str,
    reason: Option<&str>,
    stream: Option<&str>,
) -> Result<SuppressionRecord, Vec<FieldError>> {
    let mut errors = Vec::new();
    let email = parse_email(email, "/email".into(), &mut errors);
    let (reason, stream) = manual_scope(state, reason, stream, &mut errors);
    let Some(email) = email.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    Ok(SuppressionRecord::new(
        project_id,
        email.as_str(),
        &stream,
        reason.as_str(),
        state.clock.now_ms(),
    ))
}

/// `POST /v1/suppressions`.
#[utoipa::path(post, path = "/v1/suppressions", tag = "suppressions", request_body = AddRequest, responses((status = 201, description = "Added", body = SuppressionResponse), (status = 200, description = "Already there", body = SuppressionResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn add_suppression(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    JsonBody(req): JsonBody<AddRequest>,
) -> ApiResult<(StatusCode, Json<SuppressionResponse>)> {
    let record = manual_suppression(
        &state,
        &principal.project_id,
        &req.email,
        req.reason.as_deref(),
        req.stream.as_deref(),
    )
    .map_err(ApiError::validation)?;
    let (stored, added) = state.store.add_suppression(&record).await?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(SuppressionResponse::from(&stored))))
}

/// `POST /v1/suppressions/batch/add`: per-item results, in order.
#[utoipa::path(post, path = "/v1/suppressions/batch/add", tag = "suppressions", request_body = BatchAddRequest, responses((status = 200, description = "One result per address", body = BatchResults<SuppressionAdded>), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn batch_add(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    JsonBody(req): JsonBody<BatchAddRequest>,
) -> ApiResult<Json<BatchResults<SuppressionAdded>>> {
    if req.emails.len() > MAX_BATCH || req.emails.is_empty() {
        return Err(ApiError::validation(vec![FieldError::new(
            "/emails",
            "batch_too_large",
            format!("1 to {MAX_BATCH} addresses"),
        )]));
    }
    let mut errors = Vec::new();
    let (reason, stream) = manual_scope(
        &state,
        req.reason.as_deref(),
        req.stream.as_deref(),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let now = state.clock.now_ms();
    let mut data = Vec::new();
    for (i, raw) in req.emails.iter().enumerate() {
        let mut item_errors = Vec::new();
        match parse_email(raw, format!("/emails/{i}"), &mut item_errors) {
            Some(email) => {
                let record = SuppressionRecord::new(
                    &principal.project_id,
                    email.as_str(),
                    &stream,
                    reason.as_str(),
                    now,
                );
                let (stored, added) = state.store.add_suppression(&record).await?;
                data.push(SuppressionAdded {
                    index: i,
                    email: stored.email,
                    id: Some(stored.id),
                    status: if added { "added" } else { "exists" },
                    error: None,
                });
            }
            None => data.push(SuppressionAdded {
                index: i,
                email: raw.clone(),
                id: None,
                status: "invalid",
                error: item_errors.first().map(|e| e.detail.clone()),
            }),
        }
    }
    Ok(Json(BatchResults {
        object: "list",
        data,
    }))
}

/// `POST /v1/suppressions/batch/remove`: by addresses (every scope) or ids.
#[utoipa::path(post, path = "/v1/suppressions/batch/remove", tag = "suppressions", request_body = BatchRemoveRequest, responses((status = 200, description = "One result per address or id", body = BatchResults<SuppressionRemoved>), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn batch_remove(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    JsonBody(req): JsonBody<BatchRemoveRequest>,
) -> ApiResult<Json<BatchResults<SuppressionRemoved>>> {
    let n = req.emails.len() + req.ids.len();
    if n == 0 || n > MAX_BATCH {
        return Err(ApiError::validation(vec![FieldError::new(
            "",
            "batch_too_large",
            format!("1 to {MAX_BATCH} addresses or ids"),
        )]));
    }
    let mut data = Vec::new();
    for target in req.emails.iter().chain(req.ids.iter()) {
        let removed = remove_all(&state, &principal, target).await?;
        data.push(SuppressionRemoved {
            target: target.clone(),
            status: if removed > 0 { "removed" } else { "not_found" },
            removed,
        });
    }
    Ok(Json(BatchResults {
        object: "list",
        data,
    }))
}

/// Removes every suppression of an address (or the one with that id); returns how many.
async fn remove_all(state: &AppState, principal: &Principal, target: &str) -> ApiResult<usize> {
    let key = EmailAddress::parse(target).map_or_else(|_| target.to_owned(), |e| e.to_string());
    let mut removed = 0;
    while let Some(s) = state
        .store
        .find_suppression(&principal.project_id, &key, None)
        .await?
    {
        audit_removal(principal, &s);
        state
            .store
            .delete_suppression(&principal.project_id, &s.id)
            .await?;
        removed += 1;
    }
    Ok(removed)
}

fn audit_removal(principal: &Principal, s: &SuppressionRecord) {
    if s.reason == "complaint" {
        tracing::warn!(
            project_id = %principal.project_id,
            key_id = %principal.key_id,
            suppression_id = %s.id,
            "a complaint suppression was removed"
        );
    }
}

/// `GET /v1/suppressions`.
#[utoipa::path(get, path = "/v1/suppressions", tag = "suppressions", params(ListQuery), responses((status = 200, description = "Newest first", body = ListResponse<SuppressionResponse>), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn list_suppressions(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ListResponse<SuppressionResponse>>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = super::pagination::page_size(q.limit, 20, 100)?;
    let mut rows = state
        .store
        .list_suppressions(
            &principal.project_id,
            q.reason.as_deref(),
            super::pagination::cursor("before", q.before)?.as_deref(),
            limit + 1,
        )
        .await?;
    let has_more = super::pagination::trim_page(&mut rows, limit);
    let data = rows.iter().map(SuppressionResponse::from).collect();
    Ok(Json(ListResponse::new(data, has_more)))
}

fn scope_of(
    q: Result<Query<ScopeQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Option<String>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    Ok(q.stream)
}

/// `GET /v1/suppressions/{id_or_email}?stream=`.
#[utoipa::path(get, path = "/v1/suppressions/{target}", tag = "suppressions", params(("target" = String, Path, description = "An id or an address"), ScopeQuery), responses((status = 200, description = "The suppression", body = SuppressionResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn get_suppression(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(target): Path<String>,
    query: Result<Query<ScopeQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<SuppressionResponse>> {
    let stream = scope_of(query)?;
    let key = EmailAddress::parse(&target).map_or(target.clone(), |e| e.to_string());
    let found = state
        .store
        .find_suppression(&principal.project_id, &key, stream.as_deref())
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(SuppressionResponse::from(&found)))
}

/// `DELETE /v1/suppressions/{id_or_email}?stream=`: one scope if `stream` is given, else all.
#[utoipa::path(delete, path = "/v1/suppressions/{target}", tag = "suppressions", params(("target" = String, Path, description = "An id or an address"), ScopeQuery), responses((status = 200, description = "Removed", body = SuppressionDeleted), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn delete_suppression(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(target): Path<String>,
    query: Result<Query<ScopeQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<SuppressionDeleted>> {
    let stream = scope_of(query)?;
    let removed = match stream {
        Some(stream) => {
            let key = EmailAddress::parse(&target).map_or(target.clone(), |e| e.to_string());
            match state
                .store
                .find_suppression(&principal.project_id, &key, Some(&stream))
                .await?
            {
                Some(s) => {
                    audit_removal(&principal, &s);
                    state
                        .store
                        .delete_suppression(&principal.project_id, &s.id)
                        .await?;
                    1
                }
                None => 0,
            }
        }
        None => remove_all(&state, &principal, &target).await?,
    };
    if removed == 0 {
        return Err(ApiError::not_found());
    }
    Ok(Json(SuppressionDeleted {
        object: "suppression",
        id: target,
        deleted: true,
        removed: u64::try_from(removed).unwrap_or(u64::MAX),
    }))
}

//! `POST /v1/inbound`: a raw bounce or complaint message (RFC 5322), for operators whose
//! bounce mailbox lives elsewhere. The same processing as Herald's own SMTP listener, limited
//! to the key's project. `POST /v1/inbound/reprocess` (admin): read kept messages again.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use super::AppState;
use super::auth::FullAccess;
use super::error::{ApiError, ApiResult, FieldError};
use super::json::JsonBody;
use super::projects::Admin;
use super::responses::{InboundResponse, ReprocessResponse};
use crate::bounces::inbound::InboundStatus;

#[utoipa::path(post, path = "/v1/inbound", tag = "inbound", request_body(content((String = "message/rfc822"), (String = "text/plain")), description = "A bounce (DSN), complaint (ARF) or plain bounce message"), responses((status = 200, description = "Kept, read and applied", body = InboundResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn receive_inbound(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<(StatusCode, Json<InboundResponse>)> {
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !matches!(
        mime.as_str(),
        "message/rfc822" | "text/plain" | "application/octet-stream"
    ) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the raw message as Content-Type: message/rfc822",
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large("the message is larger than this endpoint accepts")
        } else {
            ApiError::bad_request("invalid_body", "the request body could not be read")
        }
    })?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the message is empty",
        ));
    }
    let outcome = state
        .inbound
        .receive(
            body.to_vec(),
            Vec::new(),
            "api",
            Some(&principal.project_id),
        )
        .await?;
    let report = serde_json::to_value(&outcome.report).map_err(|e| ApiError::internal(&e))?;
    let text = |field: &str| report[field].as_str().map(str::to_owned);
    Ok((
        StatusCode::OK,
        Json(InboundResponse {
            object: "inbound",
            id: outcome.id,
            status: outcome.status.as_str().to_owned(),
            kind: text("kind"),
            recipients: report["recipients"].as_array().cloned(),
            complaint: Some(report["complaint"].clone()).filter(|c| !c.is_null()),
            original_message_id: text("original_message_id"),
            matched: outcome.matched.len(),
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "unmatched", "since": "2026-12-01T00:00:00Z"}))]
pub struct ReprocessRequest {
    /// `received`, `unknown`, `unmatched`, `parse_error`, `processed` or `all` (default
    /// `all`: everything but `processed`).
    #[serde(default)]
    status: Option<String>,
    /// Only messages received at or after this time (RFC 3339).
    #[serde(default)]
    since: Option<String>,
}

/// Reads kept inbound messages again with today's parser. Effects a message already made are
/// not made again (no duplicate events, webhooks or suppressions).
#[utoipa::path(post, path = "/v1/inbound/reprocess", tag = "inbound", request_body = ReprocessRequest, responses((status = 200, description = "What became of the messages read", body = ReprocessResponse), crate::api::openapi::Problems), security(("admin_token" = [])))]
pub async fn reprocess_inbound(
    State(state): State<AppState>,
    admin: Admin,
    JsonBody(req): JsonBody<ReprocessRequest>,
) -> ApiResult<Json<ReprocessResponse>> {
    let word = req.status.as_deref().unwrap_or("all");
    let statuses = InboundStatus::selection(word).ok_or_else(|| {
        ApiError::validation(vec![FieldError::new(
            "/status",
            "validation_error",
            "status must be received, unknown, unmatched, parse_error, processed or all",
        )])
    })?;
    let since = match req.since.as_deref() {
        None => 0,
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| t.timestamp_millis())
            .map_err(|_| {
                ApiError::validation(vec![FieldError::new(
                    "/since",
                    "validation_error",
                    "since must be an RFC 3339 time",
                )])
            })?,
    };
    let summary = state
        .inbound
        .reprocess(&statuses, since, state.clock.now_ms())
        .await?;
    tracing::info!(admin = %admin.subject, examined = summary.examined, "inbound messages read again");
    Ok(Json(ReprocessResponse::from(&summary)))
}

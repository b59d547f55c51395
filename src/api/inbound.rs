//! `POST /v1/inbound`: a raw bounce or complaint message (RFC 5322), for operators whose
//! bounce mailbox lives elsewhere. The same processing as Herald's own SMTP listener, limited
//! to the key's project.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult};

#[utoipa::path(post, path = "/v1/inbound", tag = "inbound", request_body(content((String = "message/rfc822"), (String = "text/plain")), description = "A bounce (DSN), complaint (ARF) or plain bounce message"), responses((status = 200, description = "Stored, parsed and applied", body = crate::api::openapi::schemas::InboundResult), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn receive_inbound(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    principal.require_full_access()?;
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
        .process(&body, &[], "api", Some(&principal.project_id))
        .await?;
    let report = serde_json::to_value(&outcome.report).map_err(|e| ApiError::internal(&e))?;
    Ok((
        StatusCode::OK,
        Json(json!({
            "object": "inbound",
            "id": outcome.id,
            "kind": report["kind"],
            "recipients": report["recipients"],
            "complaint": report["complaint"],
            "original_message_id": report["original_message_id"],
            "matched": outcome.matched.len(),
        })),
    ))
}

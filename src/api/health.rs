//! Liveness and readiness, outside `/v1` and without authentication.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is up", body = crate::api::openapi::schemas::Health), crate::api::openapi::Problems))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Prometheus metrics (no authentication: bind the API to a private address or filter
/// `/metrics` at the proxy).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"), crate::api::openapi::Problems))]
pub async fn metrics(State(state): State<AppState>) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let snapshot = state.store.queue_snapshot(state.clock.now_ms()).await?;
    let body = state.metrics.render(&snapshot);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response())
}

/// The process can serve: its database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "The database answers", body = crate::api::openapi::schemas::Health), crate::api::openapi::Problems))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    // Within a second, whatever the database does: a probe that waits for a connection pool's
    // timeout tells a load balancer nothing in time.
    let answered =
        tokio::time::timeout(std::time::Duration::from_secs(1), state.store.ping()).await;
    let failure = match answered {
        Ok(Ok(())) => return Ok(Json(json!({"status": "ready"}))),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within a second".to_owned(),
    };
    tracing::warn!(error = %failure, "readiness check failed");
    let mut err = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
        "the database does not answer",
    );
    err.retry_after = Some(1);
    Err(err)
}

//! Liveness and readiness, outside `/v1` and without authentication.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;

/// The process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Prometheus metrics (no authentication: bind the API to a private address or filter
/// `/metrics` at the proxy).
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
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        let mut err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "the database does not answer",
        );
        err.retry_after = Some(1);
        err
    })?;
    Ok(Json(json!({"status": "ready"})))
}

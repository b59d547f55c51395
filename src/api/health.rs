//! Liveness and readiness, outside `/v1` and without authentication.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};

use super::AppState;
use super::error::ApiError;
use super::responses::Health;
use crate::readiness::State as Readiness;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is up", body = crate::api::responses::Health), crate::api::openapi::Problems))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
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

/// The process can serve: the database answers and takes writes, and its disk has room
/// (the watcher's last verdict, at most half a second old; see `crate::readiness`).
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "The database answers and takes writes", body = crate::api::responses::Health), crate::api::openapi::Problems))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    match unavailable(&state, true) {
        None => Ok(Json(Health { status: "ready" })),
        Some(e) => Err(e),
    }
}

/// The 503 for what cannot work now: anything while the database is down, a write while it
/// cannot take writes. Sent at once, where the request would otherwise wait out the pool.
/// (HTTP requests meet it in [`gate`], SMTP submission before AUTH and after DATA.)
pub(crate) fn unavailable(state: &AppState, writes: bool) -> Option<ApiError> {
    let detail = match state.readiness.state() {
        Readiness::Ready => return None,
        Readiness::Down => "the database does not answer; try again shortly",
        Readiness::ReadOnly if writes => {
            "Herald cannot store anything now (its disk is full or its database refuses writes); try again shortly"
        }
        Readiness::ReadOnly => return None,
    };
    Some(ApiError::unavailable(detail))
}

/// Refuses `/v1` requests that cannot work now (see [`unavailable`]), and has the database
/// checked again as soon as any request saw it fail.
pub async fn gate(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if req.uri().path().starts_with("/v1/") {
        let writes = !matches!(*req.method(), Method::GET | Method::HEAD);
        if let Some(e) = unavailable(&state, writes) {
            return e.into_response();
        }
    }
    let response = next.run(req).await;
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        state.readiness.recheck();
    }
    response
}

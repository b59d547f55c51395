//! Request ids: every response carries `X-Request-Id` (a UUIDv7, or the client's own if it
//! sent a sane one), error bodies echo it, and one log line per request names it.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static CURRENT: (String, String);
}

/// The id of the request being handled (empty outside a request).
pub fn current() -> String {
    CURRENT.try_with(|c| c.0.clone()).unwrap_or_default()
}

/// The path of the request being handled.
pub fn current_path() -> String {
    CURRENT.try_with(|c| c.1.clone()).unwrap_or_default()
}

pub async fn middleware(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let (mut resp, rate) = CURRENT
        .scope(
            (id.clone(), path.clone()),
            super::rate_limit::CURRENT.scope(std::cell::Cell::new(None), async {
                let resp = next.run(req).await;
                let rate = super::rate_limit::CURRENT.with(std::cell::Cell::get);
                (resp, rate)
            }),
        )
        .await;
    super::rate_limit::add_headers(&mut resp, rate);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    tracing::info!(
        request_id = %id,
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

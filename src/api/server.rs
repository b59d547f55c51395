//! The HTTP accept loop: hyper's HTTP/1 connections with a timeout on every wait a client
//! controls, a cap on connections, back-off on accept errors, and a bounded shutdown.
//!
//! - headers: `http.header_timeout` from a request's first byte, or on a kept-alive connection
//!   from the end of the previous answer (so it is the idle timeout too);
//! - the rest of the request (its body) and its answer: `http.request_timeout`, then 408;
//! - past `http.max_connections` a new connection is closed at once; accept errors (file
//!   descriptors run out) back off from 10 ms to 1 s instead of spinning;
//! - at shutdown: no new connection, kept-alive ones are closed after their answer, requests in
//!   flight get `http.shutdown_timeout`, then every connection is dropped.

mod parse_errors;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use crate::config::HttpConfig;

/// Serves `router` on `listener` until `shutdown`, then drains within the configured time.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpConfig,
    shutdown: CancellationToken,
) {
    let request_timeout = limits.request_timeout;
    let router = router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| async move {
            match tokio::time::timeout(request_timeout, next.run(req)).await {
                Ok(response) => response,
                Err(_) => timed_out(),
            }
        },
    ));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    while let Some((stream, peer)) = crate::accept::next(&listener, &shutdown, "http").await {
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            // Over the cap: closed at once, so the ones being served keep their descriptors.
            continue;
        };
        // Answers are small and latency counts: no Nagle delay.
        let _ = stream.set_nodelay(true);
        // Handlers may ask who is calling (`ConnectInfo`): failed authentications are
        // counted by client address.
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        ));
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(
                TokioIo::new(parse_errors::ProblemsOnParseErrors::new(stream)),
                service,
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_timeout) => {
            tracing::warn!(timeout = ?limits.shutdown_timeout, "HTTP requests still in flight at the shutdown deadline; closing them");
        }
    }
}

fn timed_out() -> Response {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the request took too long to arrive or to answer",
    )
    .into_response()
}

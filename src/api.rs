//! The HTTP API: routes, shared state, and the conventions every handler follows
//! (problem+json errors, request ids, Bearer keys scoped to one project).

pub mod api_keys;
pub mod auth;
pub mod domains;
pub mod emails;
pub mod error;
pub mod events;
pub mod health;
pub mod idempotency;
pub mod inbound;
pub mod json;
pub mod openapi;
pub mod pagination;
pub mod projects;
pub mod rate_limit;
pub mod request_id;
pub mod responses;
pub mod server;
pub mod stats;
pub mod suppressions;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use tokio::sync::Notify;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::bounces::inbound::InboundProcessor;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::admin_token::AdminTokens;
use crate::domain::sealing::Sealer;
use crate::domain::verp::VerpSigner;
use crate::metrics::Metrics;
use crate::store::Store;

use error::ApiError;

/// How long cached keys and domain decisions live.
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// What every handler can reach. One `Arc`: axum clones the state several times per request
/// (router, middleware, extractors), and cloning every pool and `Arc` inside it each time
/// costs more than one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state itself, reached through [`AppState`].
pub struct Shared {
    pub store: Store,
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    /// Wakes delivery workers when new mail is committed.
    pub wake: Arc<Notify>,
    /// Wakes the webhook dispatcher when events are committed.
    pub events_wake: Arc<Notify>,
    /// Wakes the domain verifier (a check was asked for).
    pub domains_wake: Arc<Notify>,
    /// Seals and opens secrets kept in the database.
    pub sealer: Arc<Sealer>,
    /// Reads bounce and complaint reports (`POST /v1/inbound`, and the SMTP listener).
    pub inbound: InboundProcessor,
    pub metrics: Arc<Metrics>,
    /// Whether the database answers and takes writes (see `crate::readiness`).
    pub readiness: Arc<crate::readiness::Readiness>,
    pub rate_limiter: Arc<rate_limit::RateLimiter>,
    /// Failed authentications by client address.
    pub auth_failures: Arc<rate_limit::FailureLimiter>,
    pub admin_tokens: AdminTokens,
    pub idempotency: idempotency::InFlight,
    /// When this process last recorded each key's use, so it writes at most once a minute.
    key_touches: Arc<Mutex<HashMap<String, i64>>>,
    /// API keys by prefix, for a second (see [`crate::cache`]).
    pub api_keys: Arc<crate::cache::TtlCache<crate::store::ApiKeyRecord>>,
    /// Sending-domain decisions by project and domain, for a second.
    pub senders: Arc<crate::cache::TtlCache<emails::SenderDecision>>,
}

impl AppState {
    pub fn new(
        store: Store,
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        sealer: Arc<Sealer>,
        verp: VerpSigner,
        admin_tokens: AdminTokens,
    ) -> Self {
        let events_wake = Arc::new(Notify::new());
        let metrics: Arc<crate::metrics::Metrics> = Arc::default();
        let inbound = InboundProcessor {
            metrics: Arc::clone(&metrics),
            store: store.clone(),
            clock: Arc::clone(&clock),
            verp,
            bounce_domain: config.delivery.bounce_domain.clone(),
            events_wake: Arc::clone(&events_wake),
        };
        Self(Arc::new(Shared {
            store,
            config,
            clock,
            wake: Arc::new(Notify::new()),
            events_wake,
            inbound,
            metrics,
            readiness: Arc::default(),
            rate_limiter: Arc::default(),
            auth_failures: Arc::default(),
            admin_tokens,
            domains_wake: Arc::new(Notify::new()),
            sealer,
            idempotency: idempotency::InFlight::default(),
            key_touches: Arc::default(),
            api_keys: Arc::new(crate::cache::TtlCache::new(CACHE_TTL, 10_000)),
            senders: Arc::new(crate::cache::TtlCache::new(CACHE_TTL, 10_000)),
        }))
    }

    /// The key with this prefix (revoked or not: the caller checks), cached for a second.
    pub async fn api_key(
        &self,
        prefix: &str,
    ) -> Result<Option<crate::store::ApiKeyRecord>, crate::store::StoreError> {
        if let Some(k) = self.api_keys.get(prefix) {
            return Ok(Some(k));
        }
        let found = self.store.find_api_key(prefix).await?;
        if let Some(k) = &found {
            // Only keys that exist are cached: random prefixes cannot fill the cache.
            self.api_keys.put(prefix.to_owned(), k.clone());
        }
        Ok(found)
    }

    /// Records that a key was used (`last_used_at`), without a write on every request.
    pub async fn note_key_use(&self, key_id: &str, now_ms: i64) {
        let due = {
            let mut touches = self.key_touches.lock().unwrap_or_else(|e| e.into_inner());
            match touches.get(key_id) {
                Some(&last) if now_ms - last < 60_000 => false,
                _ => {
                    touches.insert(key_id.to_owned(), now_ms);
                    true
                }
            }
        };
        if due && let Err(e) = self.store.touch_api_key(key_id, now_ms).await {
            tracing::warn!(error = %e, "could not record API key use");
        }
    }
}

/// The whole API, and `beside` it (the console's pages) under the same middleware.
pub fn router(state: AppState, beside: Router<AppState>) -> Router {
    let (routes, doc) = routes(&state.config.limits).split_for_parts();
    routes
        .merge(beside)
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", doc))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), health::gate))
        .layer(middleware::from_fn(problems_only))
        .layer(middleware::from_fn(request_id::middleware))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Every documented route, from its handler's `#[utoipa::path]` (its method and path are
/// read from there): the router and the OpenAPI document come from this one list. The body
/// limits are the configured ones (they do not change the document).
pub fn routes(limits: &crate::config::LimitsConfig) -> OpenApiRouter<AppState> {
    let email_limit = DefaultBodyLimit::max(limits.max_email_body_bytes());
    let batch_limit = DefaultBodyLimit::max(limits.max_batch_body_bytes);
    let inbound_limit = DefaultBodyLimit::max(limits.max_message_bytes + 1024 * 1024);
    OpenApiRouter::with_openapi(<openapi::ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(emails::create_email).layer(email_limit))
        .routes(routes!(emails::list_emails))
        .routes(routes!(emails::create_batch).layer(batch_limit))
        .routes(routes!(emails::get_email))
        .routes(routes!(emails::list_email_events))
        .routes(routes!(emails::cancel_email))
        .routes(routes!(events::list_events))
        .routes(routes!(events::redeliver_event))
        .routes(routes!(stats::get_stats))
        .routes(routes!(stats::get_bounce_stats))
        .routes(routes!(
            suppressions::list_suppressions,
            suppressions::add_suppression
        ))
        .routes(routes!(suppressions::batch_add))
        .routes(routes!(suppressions::batch_remove))
        .routes(routes!(
            suppressions::get_suppression,
            suppressions::delete_suppression
        ))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(
            webhooks::get_webhook,
            webhooks::update_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::test_webhook))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::retry_delivery))
        .routes(routes!(domains::create_domain, domains::list_domains))
        .routes(routes!(
            domains::get_domain,
            domains::update_domain,
            domains::delete_domain
        ))
        .routes(routes!(domains::verify_domain))
        .routes(routes!(domains::rotate_dkim))
        .routes(routes!(api_keys::create_api_key, api_keys::list_api_keys))
        .routes(routes!(api_keys::delete_api_key))
        .routes(routes!(inbound::receive_inbound).layer(inbound_limit))
        .routes(routes!(inbound::reprocess_inbound))
        .routes(routes!(projects::create_project, projects::list_projects))
        .routes(routes!(
            projects::get_project,
            projects::update_project,
            projects::delete_project
        ))
        .routes(routes!(
            projects::create_project_key,
            projects::list_project_keys
        ))
        .routes(routes!(projects::delete_project_key))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
}

/// Every error is problem+json: what axum's own extractors answer in plain text (a path that
/// is not UTF-8, a query of the wrong shape) is said again as a problem with a stable code.
async fn problems_only(
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let response = next.run(req).await;
    let status = response.status();
    // Problems, and the console's pages, which say what went wrong in HTML.
    let said = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/problem+json")
                || v.as_bytes().starts_with(b"text/html")
        });
    if !(status.is_client_error() || status.is_server_error()) || said {
        return response;
    }
    let detail = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal_error",
        _ => "bad_request",
    };
    let detail = if detail.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        detail
    };
    ApiError::new(status, code, detail).into_response()
}

/// Headers that keep a browser from misreading or framing what Herald serves: no MIME
/// sniffing, no framing, no referrer, and a content policy (the API serves no active content at
/// all; the Swagger UI under `/docs` loads only its own files).
async fn security_headers(
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::http::HeaderValue;
    use axum::http::header::{
        CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
    };
    let docs = req.uri().path().starts_with("/docs");
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The console's pages set their own policy (its previews may be framed by the console).
    h.entry(X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.entry(CONTENT_SECURITY_POLICY).or_insert(
        HeaderValue::from_static(if docs {
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        } else {
            "default-src 'none'; frame-ancestors 'none'"
        }),
    );
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

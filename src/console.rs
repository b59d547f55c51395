//! The operator console: HTML pages served by `herald serve` at `/`, beside the API under
//! `/v1`.
//!
//! Pages are rendered on the server (askama templates in `src/console/templates`, every value
//! escaped), work with JavaScript off, and load nothing from anywhere but Herald: one style
//! sheet and one small script, both compiled into the binary. Operators sign in with a
//! password ([`session`]); every form carries the session's CSRF token, and every change is
//! written to the audit log. What an operator may do in a project is [`session::Access`].

pub mod chart;
pub mod pages;
pub mod session;

use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::AppState;
use crate::store::StoreError;

/// The console's routes (with no fallback: the API's answers for unknown paths).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home))
        .route(
            "/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/sign-out", post(session::sign_out))
        .route("/switch", get(pages::switch))
        .route("/assets/console.css", get(style_sheet))
        .route("/assets/console.js", get(script))
        .route("/assets/favicon.svg", get(favicon))
        .route("/projects/{project}", get(pages::overview::page))
        .route("/projects/{project}/emails", get(pages::emails::list))
        .route("/projects/{project}/emails/{id}", get(pages::emails::show))
        .route(
            "/projects/{project}/emails/{id}/preview",
            get(pages::emails::preview),
        )
        .route(
            "/projects/{project}/emails/{id}/raw",
            get(pages::emails::raw),
        )
        .route(
            "/projects/{project}/reports/{id}/raw",
            get(pages::emails::report_raw),
        )
        .route(
            "/projects/{project}/emails/{id}/cancel",
            post(pages::emails::cancel),
        )
        .route(
            "/projects/{project}/suppressions",
            get(pages::suppressions::list).post(pages::suppressions::add),
        )
        .route(
            "/projects/{project}/suppressions.csv",
            get(pages::suppressions::export),
        )
        .route(
            "/projects/{project}/suppressions/{id}/remove",
            post(pages::suppressions::remove),
        )
        .route("/projects/{project}/audit", get(pages::audit::page))
        .route(
            "/projects/{project}/projects",
            get(pages::projects::list).post(pages::projects::create),
        )
        .route("/projects/{project}/bounces", get(pages::bounces::page))
        .route(
            "/projects/{project}/bounces/reprocess",
            post(pages::bounces::reprocess),
        )
        .route("/projects/{project}/domains", get(pages::domains::list))
        .route(
            "/projects/{project}/domains/{id}",
            get(pages::domains::show),
        )
        .route(
            "/projects/{project}/domains/{id}/action",
            post(pages::domains::action),
        )
        .route(
            "/projects/{project}/keys",
            get(pages::keys::list).post(pages::keys::create),
        )
        .route(
            "/projects/{project}/keys/{id}/revoke",
            post(pages::keys::revoke),
        )
        .route(
            "/projects/{project}/webhooks",
            get(pages::webhooks::list).post(pages::webhooks::create),
        )
        .route(
            "/projects/{project}/webhooks/{id}",
            get(pages::webhooks::show).post(pages::webhooks::update),
        )
        .route(
            "/projects/{project}/webhooks/{id}/action",
            post(pages::webhooks::action),
        )
        .layer(axum::middleware::from_fn(page_headers))
        // Failed sign-ins, by address and by account: the console's own state.
        .layer(axum::Extension(std::sync::Arc::new(
            session::Throttle::default(),
        )))
}

/// What every console answer carries: a content policy that lets a page load only Herald's
/// own style sheet, script and images (and frame only its own previews), never be framed, and
/// submit forms only to Herald; and no caching, since pages show a signed-in operator's data.
async fn page_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn style_sheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("console/assets/console.css"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("console/assets/console.js"),
    )
}

async fn favicon() -> Response {
    asset("image/svg+xml", include_str!("console/assets/favicon.svg"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// A page that could not be shown, as a page that says why.
#[derive(Debug)]
pub enum PageError {
    /// Not signed in (or the session ended): to the sign-in page, then back.
    SignIn {
        next: String,
    },
    /// Signed in, but this operator may not see or do this.
    Forbidden(&'static str),
    NotFound,
    /// The request itself is wrong (a form field, a query), said to the operator.
    Bad(String),
    /// The database cannot answer now: try again.
    Unavailable,
    Internal,
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => PageError::NotFound,
            StoreError::Unavailable(_) => PageError::Unavailable,
            other => {
                tracing::error!(error = %other, "console: store error");
                PageError::Internal
            }
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message): (StatusCode, &str, String) = match self {
            PageError::SignIn { next } => {
                let to = format!("/sign-in?next={}", query_escape(&next));
                return redirect(&to);
            }
            PageError::Forbidden(why) => (StatusCode::FORBIDDEN, "Not allowed", why.to_owned()),
            PageError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here, or nothing you may see.".to_owned(),
            ),
            PageError::Bad(m) => (StatusCode::BAD_REQUEST, "Not understood", m),
            PageError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly",
                "The database is not answering right now. Nothing was changed.".to_owned(),
            ),
            PageError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Herald could not show this page; its log says why.".to_owned(),
            ),
        };
        let page = ErrorPage {
            title,
            message: &message,
        };
        let mut r = render(&page);
        *r.status_mut() = status;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        r
    }
}

pub type PageResult<T = Response> = Result<T, PageError>;

/// A template as an HTML answer.
pub fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => Html(body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console: template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
        }
    }
}

/// `303 See Other` to a path of Herald's (after a form, or to sign in).
pub fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A value for a query string.
pub fn query_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A time for people: `2026-12-06 19:04:05 UTC`.
pub fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

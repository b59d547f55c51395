//! Signing in and out, the session cookie, CSRF, and what a signed-in operator may do.
//!
//! The cookie holds a random token (`HttpOnly`, `SameSite=Strict`, `Secure` behind TLS); the
//! database holds its SHA-256, the operator and the session's CSRF token. Every request reads
//! the session with the operator's current role and grants, so an operator removed or lowered
//! loses what it lost at once. Changes go through [`Session::change`], which checks the CSRF
//! token and the operator's right to change the project in one place.

use std::net::IpAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{PageError, PageResult, redirect, render};
use crate::api::AppState;
use crate::api::rate_limit::FailureLimiter;
use crate::domain::operator::{
    decoy_hash, operator_email, random_token, token_hash, verify_password,
};
use crate::domain::states::{OperatorRole, ProjectRole};
use crate::store::{Project, SessionRecord};

/// The session cookie's name.
pub const COOKIE: &str = "herald_session";
/// The sign-in form's own CSRF cookie (there is no session yet to hold its token).
const SIGN_IN_COOKIE: &str = "herald_sign_in";

/// Failed sign-ins, by client address and by account: a few tries, then one every so often,
/// before any password is hashed.
pub struct Throttle {
    by_address: FailureLimiter<IpAddr>,
    by_account: FailureLimiter<String>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            // Ten tries, then one every six seconds, from one address.
            by_address: FailureLimiter::new(10.0, 1.0 / 6.0),
            // Ten tries, then one every thirty seconds, at one account from anywhere.
            by_account: FailureLimiter::new(10.0, 1.0 / 30.0),
        }
    }
}

/// What an operator may do in one project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Change,
}

/// A signed-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    pub record: SessionRecord,
}

impl Session {
    pub fn email(&self) -> &str {
        &self.record.operator.email
    }

    pub fn is_admin(&self) -> bool {
        self.record.operator.role == OperatorRole::Admin
    }

    /// What this operator may do in the project, if anything.
    pub fn access(&self, project_id: &str) -> Option<Access> {
        if self.is_admin() {
            return Some(Access::Change);
        }
        self.record
            .grants
            .iter()
            .find(|(p, _)| p == project_id)
            .map(|(_, role)| match role {
                ProjectRole::Owner => Access::Change,
                ProjectRole::Viewer => Access::Read,
            })
    }

    /// The page frame of a project this operator may see (404 for one it may not: the
    /// console does not tell which projects exist).
    pub async fn project(
        &self,
        state: &AppState,
        project_id: &str,
        section: &'static str,
    ) -> PageResult<Chrome> {
        let access = self.access(project_id).ok_or(PageError::NotFound)?;
        let projects = self.projects(state).await?;
        let project = projects
            .iter()
            .find(|p| p.id == project_id)
            .cloned()
            .ok_or(PageError::NotFound)?;
        Ok(Chrome {
            operator: self.email().to_owned(),
            csrf: self.record.csrf_token.clone(),
            is_admin: self.is_admin(),
            projects,
            project,
            can_change: access == Access::Change,
            section,
        })
    }

    /// The frame of a page that changes the project, after checking the form's CSRF token and
    /// that this operator may change the project: the one check every change goes through.
    pub async fn change(
        &self,
        state: &AppState,
        project_id: &str,
        csrf: &str,
        section: &'static str,
    ) -> PageResult<Chrome> {
        let chrome = self.project(state, project_id, section).await?;
        if !self.csrf_matches(csrf) {
            return Err(PageError::Forbidden(
                "This form is out of date (or was not sent by the console). Go back, reload the page and try again.",
            ));
        }
        if !chrome.can_change {
            return Err(PageError::Forbidden(
                "You may look at this project but not change it: ask an owner or an admin.",
            ));
        }
        Ok(chrome)
    }

    /// Whether a form's token is this session's (compared in constant time).
    fn csrf_matches(&self, given: &str) -> bool {
        bool::from(given.as_bytes().ct_eq(self.record.csrf_token.as_bytes()))
    }

    /// The projects this operator may see, by name.
    pub async fn projects(&self, state: &AppState) -> PageResult<Vec<Project>> {
        let mut all = state.store.list_projects().await?;
        if !self.is_admin() {
            all.retain(|p| self.access(&p.id).is_some());
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Writes one line of the audit log: who changed what.
    pub async fn audit(
        &self,
        state: &AppState,
        project_id: Option<&str>,
        action: &str,
        target: &str,
        detail: &str,
    ) {
        let entry = crate::store::AuditEntry {
            id: uuid::Uuid::now_v7().to_string(),
            at: state.clock.now_ms(),
            operator_id: self.record.operator.id.clone(),
            operator_email: self.email().to_owned(),
            project_id: project_id.map(str::to_owned),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
        };
        if let Err(e) = state.store.record_audit(&entry).await {
            tracing::error!(error = %e, action, "console: could not write the audit line");
        }
    }
}

/// What every project page shows around its content: who is signed in, the project switcher,
/// the navigation, and the CSRF token for its forms.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub operator: String,
    pub csrf: String,
    pub is_admin: bool,
    pub projects: Vec<Project>,
    pub project: Project,
    pub can_change: bool,
    /// Which navigation entry is this page's.
    pub section: &'static str,
}

impl FromRequestParts<AppState> for Session {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let next = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let sign_in = || PageError::SignIn { next: next.clone() };
        if !matches!(parts.method, Method::GET | Method::HEAD) && !same_origin(&parts.headers) {
            return Err(PageError::Forbidden(
                "This request did not come from the console's own pages.",
            ));
        }
        let token = cookie(&parts.headers, COOKIE).ok_or_else(sign_in)?;
        // A token Herald made is 43 characters; anything else is not looked up.
        if token.len() != 43 {
            return Err(sign_in());
        }
        let record = state
            .store
            .find_session(&token_hash(token), state.clock.now_ms())
            .await?
            .ok_or_else(sign_in)?;
        Ok(Self { record })
    }
}

/// The value of one cookie of the request.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a browser says the request came from Herald's own pages (`Sec-Fetch-Site`, else
/// `Origin` against `Host`). A client that sends neither is not a browser a page could have
/// tricked; it still needs the session's CSRF token.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (Some(origin), Some(host)) => origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .is_some_and(|(_, rest)| rest.as_bytes() == host.as_bytes()),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// Where to go after signing in: a path of Herald's, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage<'a> {
    next: &'a str,
    email: &'a str,
    error: Option<&'a str>,
    csrf: &'a str,
}

/// The sign-in page with a fresh CSRF token, in its form and in a cookie of its own: a form
/// posted from elsewhere has the cookie but cannot read it, so it cannot send the token.
fn sign_in_form(next: &str, email: &str, error: Option<&str>) -> Response {
    let csrf = random_token();
    let mut r = render(&SignInPage {
        next,
        email,
        error,
        csrf: &csrf,
    });
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SIGN_IN_COOKIE}={csrf}; Path=/sign-in; HttpOnly; SameSite=Strict; Max-Age=3600"
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// `GET /sign-in`.
pub async fn sign_in_page(Query(q): Query<NextQuery>) -> Response {
    sign_in_form(&safe_next(q.next.as_deref()), "", None)
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    email: String,
    password: String,
    next: Option<String>,
    #[serde(default)]
    csrf: String,
}

/// `POST /sign-in`: throttled by address and by account before any hashing; the same answer
/// and about the same time for an unknown address as for a wrong password.
pub async fn sign_in(
    State(state): State<AppState>,
    axum::Extension(throttle): axum::Extension<Arc<Throttle>>,
    peer: Result<
        axum::Extension<ConnectInfo<std::net::SocketAddr>>,
        axum::extract::rejection::ExtensionRejection,
    >,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let page = |status: StatusCode, error: &str| {
        let mut r = sign_in_form(&next, &form.email, Some(error));
        *r.status_mut() = status;
        r
    };
    let token_matches = cookie(&headers, SIGN_IN_COOKIE).is_some_and(|c| {
        !form.csrf.is_empty() && bool::from(c.as_bytes().ct_eq(form.csrf.as_bytes()))
    });
    if !same_origin(&headers) || !token_matches {
        return page(
            StatusCode::FORBIDDEN,
            "This sign-in did not come from Herald's own page (or the page was old): try again.",
        );
    }
    let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.0.ip());
    let account = operator_email(&form.email).unwrap_or_default();
    if let Some(wait) = throttle
        .by_address
        .wait(&ip)
        .or_else(|| throttle.by_account.wait(&account))
    {
        let mut r = page(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many sign-in attempts. Wait {wait} seconds and try again."),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    let found = match state.store.find_operator(&account).await {
        Ok(found) => found,
        Err(e) => return PageError::from(e).into_response(),
    };
    let hash = found
        .as_ref()
        .map_or_else(|| decoy_hash().to_owned(), |o| o.password_hash.clone());
    let password = form.password.clone();
    let verified = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(operator) = found.filter(|_| verified) else {
        throttle.by_address.fail(&ip);
        throttle.by_account.fail(&account);
        return page(
            StatusCode::UNAUTHORIZED,
            "That address and password do not match an operator.",
        );
    };
    let token = random_token();
    let now = state.clock.now_ms();
    let ttl = i64::try_from(state.config.console.session_ttl.as_millis()).unwrap_or(i64::MAX);
    if let Err(e) = state
        .store
        .create_session(
            token_hash(&token),
            &operator.id,
            &random_token(),
            now,
            now.saturating_add(ttl),
        )
        .await
    {
        return PageError::from(e).into_response();
    }
    tracing::info!(operator = %operator.email, "console: signed in");
    let secure = state.config.console.secure_cookie
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let max_age = state.config.console.session_ttl.as_secs();
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    let mut r = redirect(&next);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

/// `POST /sign-out`: ends this session and clears the cookie.
pub async fn sign_out(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    if !session.csrf_matches(&form.csrf) {
        return Err(PageError::Forbidden(
            "This form is out of date. Reload the page and sign out again.",
        ));
    }
    if let Some(token) = cookie(&headers, COOKIE) {
        state.store.delete_session(token_hash(token)).await?;
    }
    let mut r = redirect("/sign-in");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("herald_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(r)
}

/// The sign-in throttle every `AppState` carries.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_herald() {
        assert_eq!(safe_next(Some("/projects/x?a=b")), "/projects/x?a=b");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let mut h = HeaderMap::new();
        assert!(
            same_origin(&h),
            "no browser headers: the CSRF token decides"
        );
        h.insert(
            header::HOST,
            HeaderValue::from_static("herald.example:8080"),
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://herald.example:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; herald_session=tok; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("tok"));
        assert_eq!(cookie(&h, "c"), None);
    }
}

//! Emails: the search (the API's filters, read by the API's own parser), and one email with
//! its recipients, its timeline of SMTP replies and reports, its bodies and its MIME.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::api::AppState;
use crate::api::emails::EmailSearch;
use crate::console::session::{Chrome, CsrfForm, Session};
use crate::console::{PageError, PageResult, query_escape, redirect, render, when};
use crate::domain::status::{RecipientStatus, aggregate_status};

/// One row of the search's results.
pub struct EmailRow {
    pub id: String,
    pub created: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub status: String,
}

#[derive(Template)]
#[template(path = "emails.html")]
struct ListPage {
    chrome: Chrome,
    /// The form's values, as given.
    q: BTreeMap<String, String>,
    statuses: Vec<&'static str>,
    rows: Vec<EmailRow>,
    /// The query string of the next (older) and previous (newer) pages, if any.
    older: Option<String>,
    newer: Option<String>,
    error: Option<String>,
    /// A subject search read its window without filling the page.
    window_full: bool,
}

impl ListPage {
    fn value(&self, name: &str) -> &str {
        self.q.get(name).map_or("", String::as_str)
    }
}

/// The search form's fields that are passed on to the API's parser as they are.
const FILTERS: [&str; 6] = ["status", "recipient", "from", "tag", "stream", "subject"];

/// `GET /projects/{project}/emails`: the form's fields are the API's query parameters, with
/// dates (`from_date`, `to_date`, whole UTC days) for its times.
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> PageResult {
    let chrome = session.project(&state, &project, "emails").await?;
    let q: BTreeMap<String, String> = q
        .into_iter()
        .map(|(k, v)| (k, v.trim().to_owned()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let mut page = ListPage {
        chrome,
        statuses: RecipientStatus::ALL.iter().map(|s| s.as_str()).collect(),
        rows: Vec::new(),
        older: None,
        newer: None,
        error: None,
        window_full: false,
        q,
    };
    let (filter, limit) = match search_of(&page.q) {
        Ok(f) => f,
        Err(e) => {
            page.error = Some(e);
            return Ok(render(&page));
        }
    };
    let found = state
        .store
        .search_emails(&project, &filter, limit + 1)
        .await?;
    page.window_full = found.window_full;
    let mut rows = found.rows;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    if more {
        if filter.before.is_some() {
            rows.remove(0);
        } else {
            rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
    }
    // The query string without the cursor, for the paging links.
    let base: String = page
        .q
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "after" | "before"))
        .map(|(k, v)| format!("{}={}&", query_escape(k), query_escape(v)))
        .collect();
    let paged_back = filter.before.is_some();
    let paged = filter.after.is_some() || paged_back;
    if let (Some(last), true) = (rows.last(), more || paged_back) {
        page.older = Some(format!("{base}after={}", query_escape(&last.0.id)));
    }
    if let (Some(first), true) = (rows.first(), paged && (more || !paged_back)) {
        page.newer = Some(format!("{base}before={}", query_escape(&first.0.id)));
    }
    page.rows = rows
        .into_iter()
        .map(|(e, statuses)| EmailRow {
            status: aggregate_status(statuses.iter().copied())
                .as_str()
                .to_owned(),
            created: when(e.created_at),
            from: e.from_email,
            to: format!(
                "{} recipient{}",
                statuses.len(),
                if statuses.len() == 1 { "" } else { "s" }
            ),
            subject: e.subject,
            id: e.id,
        })
        .collect();
    Ok(render(&page))
}

/// The store's filter from the form, through the API's own parser (one set of rules).
fn search_of(q: &BTreeMap<String, String>) -> Result<(crate::store::EmailFilter, i64), String> {
    let mut api = serde_json::Map::new();
    for k in FILTERS.iter().chain(&["after", "before"]) {
        if let Some(v) = q.get(*k) {
            api.insert((*k).to_owned(), v.clone().into());
        }
    }
    let day = |name: &str, next: bool| -> Result<Option<String>, String> {
        let Some(v) = q.get(name) else {
            return Ok(None);
        };
        let d = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .map_err(|_| format!("'{v}' is not a date (YYYY-MM-DD)"))?;
        let d = if next { d.succ_opt().unwrap_or(d) } else { d };
        Ok(Some(format!("{d}T00:00:00Z")))
    };
    if let Some(t) = day("from_date", false)? {
        api.insert("created_after".into(), t.into());
    }
    if let Some(t) = day("to_date", true)? {
        api.insert("created_before".into(), t.into());
    }
    api.insert("limit".into(), "50".into());
    let search: EmailSearch =
        serde_json::from_value(serde_json::Value::Object(api)).map_err(|e| e.to_string())?;
    search.filter().map_err(|e| e.detail)
}

/// One recipient as the email page shows it.
pub struct RecipientView {
    pub address: String,
    pub kind: String,
    pub status: String,
    pub attempts: i64,
    pub reply: String,
}

/// One event of the timeline: its time, type, recipient and what it carries.
pub struct EventView {
    pub at: String,
    pub kind: String,
    pub recipient: String,
    pub fields: Vec<(String, String)>,
}

/// A report that changed a recipient.
pub struct ReportView {
    pub id: String,
    pub at: String,
    pub kind: String,
    pub effect: String,
    pub recipient: String,
    pub fields: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "email.html")]
struct ShowPage {
    chrome: Chrome,
    id: String,
    subject: String,
    from: String,
    created: String,
    stream: String,
    source: String,
    tags: String,
    metadata: Vec<(String, String)>,
    message_id: String,
    status: String,
    recipients: Vec<RecipientView>,
    events: Vec<EventView>,
    reports: Vec<ReportView>,
    text: Option<String>,
    has_html: bool,
    purged: bool,
    cancellable: bool,
    remote_images: bool,
    webhook_deliveries: Vec<(String, String, String, String)>,
}

#[derive(Debug, Deserialize)]
pub struct ShowQuery {
    images: Option<String>,
}

/// The relay's last reply to a recipient as it said it: the text, which carries its code
/// (`550 5.1.1 …`), or the code and enhanced code alone.
fn reply_of(r: &crate::store::RecipientRecord) -> String {
    match (&r.smtp_response, r.smtp_code) {
        (Some(text), Some(code)) if text.starts_with(&code.to_string()) => text.clone(),
        (Some(text), code) => format!(
            "{} {} {text}",
            code.map(|c| c.to_string()).unwrap_or_default(),
            r.smtp_enhanced.as_deref().unwrap_or("")
        )
        .trim()
        .to_owned(),
        (None, Some(code)) => format!("{code} {}", r.smtp_enhanced.as_deref().unwrap_or(""))
            .trim()
            .to_owned(),
        (None, None) => String::new(),
    }
}

/// A JSON value as `path: value` lines, in order (`smtp.code: 550`).
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        serde_json::Value::Null => {}
        serde_json::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

fn fields_of(json: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(json) {
        flatten("", &v, &mut out);
    }
    out
}

/// `GET /projects/{project}/emails/{id}`.
pub async fn show(
    State(state): State<AppState>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    Query(q): Query<ShowQuery>,
) -> PageResult {
    let chrome = session.project(&state, &project, "emails").await?;
    let (email, recipients) = state.store.get_email(&project, &id).await?;
    let events = state
        .store
        .list_email_events(&project, &id, None, 500)
        .await?;
    let ids: Vec<String> = recipients.iter().map(|r| r.id.clone()).collect();
    let reports = state.store.reports_for(&project, &ids).await?;
    let deliveries = state
        .store
        .webhook_deliveries_of_email(&project, &id)
        .await?;
    let address_of = |rid: &str| {
        recipients
            .iter()
            .find(|r| r.id == rid)
            .map_or_else(String::new, |r| r.address.clone())
    };
    let status = aggregate_status(recipients.iter().map(|r| r.status));
    let page = ShowPage {
        chrome,
        subject: email.subject.clone(),
        from: email.from_name.as_ref().map_or_else(
            || email.from_email.clone(),
            |n| format!("{n} <{}>", email.from_email),
        ),
        created: when(email.created_at),
        stream: email.stream.clone(),
        source: email.smtp_client.as_ref().map_or_else(
            || "the API".to_owned(),
            |c| format!("SMTP submission from {c}"),
        ),
        tags: serde_json::from_str::<Vec<String>>(&email.tags)
            .unwrap_or_default()
            .join(", "),
        metadata: fields_of(&email.metadata),
        message_id: email.message_id.clone(),
        status: status.as_str().to_owned(),
        cancellable: recipients.iter().any(|r| {
            matches!(
                r.status,
                RecipientStatus::Queued
                    | RecipientStatus::Scheduled
                    | RecipientStatus::DeliveryDelayed
            )
        }),
        recipients: recipients
            .iter()
            .map(|r| RecipientView {
                address: r.address.clone(),
                kind: r.kind.as_str().to_owned(),
                status: r.status.as_str().to_owned(),
                attempts: r.attempts,
                reply: reply_of(r),
            })
            .collect(),
        events: events
            .iter()
            .map(|e| EventView {
                at: when(e.created_at),
                kind: e.event_type.as_str().to_owned(),
                recipient: e.recipient.clone().unwrap_or_default(),
                fields: fields_of(&e.data),
            })
            .collect(),
        reports: reports
            .iter()
            .map(|r| ReportView {
                id: r.inbound_id.clone(),
                at: when(r.received_at),
                kind: r.kind.clone().unwrap_or_else(|| "report".to_owned()),
                effect: r.event_type.clone(),
                recipient: address_of(&r.recipient_id),
                fields: r.details.as_deref().map(fields_of).unwrap_or_default(),
            })
            .collect(),
        text: email.text_body.clone(),
        has_html: email.html_body.is_some(),
        purged: email.content_purged_at.is_some(),
        remote_images: q.images.as_deref() == Some("show"),
        webhook_deliveries: deliveries
            .into_iter()
            .map(|d| (d.0, d.1, d.2, d.3))
            .collect(),
        id,
    };
    Ok(render(&page))
}

/// `GET /projects/{project}/emails/{id}/preview`: the HTML body alone, for the email page's
/// sandboxed frame. Its own policy lets it run no script, load nothing from the network
/// (remote images only with `?images=show`, when the operator asks) and be framed only by
/// the console.
pub async fn preview(
    State(state): State<AppState>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    Query(q): Query<ShowQuery>,
) -> PageResult {
    session.project(&state, &project, "emails").await?;
    let (email, _) = state.store.get_email(&project, &id).await?;
    let html = email.html_body.ok_or(PageError::NotFound)?;
    let images = if q.images.as_deref() == Some("show") {
        "img-src data: https: http:"
    } else {
        "img-src data:"
    };
    let policy = format!(
        "sandbox; default-src 'none'; style-src 'unsafe-inline'; {images}; frame-ancestors 'self'; form-action 'none'; base-uri 'none'"
    );
    let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    if let Ok(v) = HeaderValue::from_str(&policy) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r.headers_mut().insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    Ok(r)
}

/// `GET /projects/{project}/emails/{id}/raw`: the MIME Herald built, to download.
pub async fn raw(
    State(state): State<AppState>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
) -> PageResult {
    session.project(&state, &project, "emails").await?;
    let mime = state
        .store
        .email_mime(&project, &id)
        .await?
        .ok_or(PageError::NotFound)?;
    Ok(download("message/rfc822", &format!("{id}.eml"), mime))
}

/// `GET /projects/{project}/reports/{id}/raw`: a kept bounce or complaint report, as it
/// arrived.
pub async fn report_raw(
    State(state): State<AppState>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
) -> PageResult {
    session.project(&state, &project, "emails").await?;
    let raw = state
        .store
        .inbound_raw(&project, &id, session.is_admin())
        .await?;
    Ok(download("message/rfc822", &format!("report-{id}.eml"), raw))
}

/// An attachment the browser saves and never shows in place.
pub fn download(content_type: &'static str, name: &str, body: Vec<u8>) -> Response {
    let disposition = format!(
        "attachment; filename=\"{}\"",
        name.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
            "_"
        )
    );
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// `POST /projects/{project}/emails/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    session
        .change(&state, &project, &form.csrf, "emails")
        .await?;
    let canceled = state
        .store
        .cancel_email(&project, &id, state.clock.now_ms())
        .await?;
    state.events_wake.notify_waiters();
    session
        .audit(
            &state,
            Some(&project),
            "email.cancel",
            &id,
            &format!("{canceled} recipients canceled"),
        )
        .await;
    Ok(redirect(&format!("/projects/{project}/emails/{id}")))
}

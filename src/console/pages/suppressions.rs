//! Suppressions: search, add, remove (with a reason, kept in the audit log), export as CSV.

use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::api::AppState;
use crate::console::session::{Chrome, Session};
use crate::console::{PageResult, query_escape, redirect, render, when};
use crate::store::SuppressionRecord;

const PAGE: i64 = 50;

pub struct Row {
    pub id: String,
    pub email: String,
    pub stream: String,
    pub reason: String,
    pub created: String,
    pub source_email_id: Option<String>,
}

impl From<SuppressionRecord> for Row {
    fn from(s: SuppressionRecord) -> Self {
        Self {
            stream: if s.stream.is_empty() {
                "every stream".to_owned()
            } else {
                s.stream
            },
            created: when(s.created_at),
            id: s.id,
            email: s.email,
            reason: s.reason,
            source_email_id: s.source_email_id,
        }
    }
}

#[derive(Template)]
#[template(path = "suppressions.html")]
struct ListPage {
    chrome: Chrome,
    search: String,
    rows: Vec<Row>,
    older: Option<String>,
    streams: Vec<String>,
    /// What the last change did, or why it was refused.
    notice: Option<String>,
    errors: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    email: Option<String>,
    before: Option<String>,
    notice: Option<String>,
}

/// `GET /projects/{project}/suppressions`.
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Query(q): Query<ListQuery>,
) -> PageResult {
    let chrome = session.project(&state, &project, "suppressions").await?;
    let page = listing(&state, chrome, &project, q, Vec::new()).await?;
    Ok(render(&page))
}

async fn listing(
    state: &AppState,
    chrome: Chrome,
    project: &str,
    q: ListQuery,
    errors: Vec<String>,
) -> PageResult<ListPage> {
    let search = q.email.unwrap_or_default().trim().to_owned();
    let (rows, older) = if search.is_empty() {
        let mut rows = state
            .store
            .list_suppressions(project, None, q.before.as_deref(), PAGE + 1)
            .await?;
        let more = rows.len() > PAGE as usize;
        rows.truncate(PAGE as usize);
        let older = rows
            .last()
            .filter(|_| more)
            .map(|r| format!("before={}", query_escape(&r.id)));
        (rows, older)
    } else {
        let address = crate::domain::address::EmailAddress::parse(&search)
            .map_or_else(|_| search.clone(), |a| a.to_string());
        let rows = state
            .store
            .find_suppression(project, &address, None)
            .await?
            .into_iter()
            .collect();
        (rows, None)
    };
    Ok(ListPage {
        chrome,
        search,
        rows: rows.into_iter().map(Row::from).collect(),
        older,
        streams: state.config.streams.clone(),
        notice: q.notice,
        errors,
    })
}

#[derive(Debug, Deserialize)]
pub struct AddForm {
    csrf: String,
    email: String,
    stream: Option<String>,
    reason: Option<String>,
}

/// `POST /projects/{project}/suppressions`: the API's rules for a suppression added by hand.
pub async fn add(
    State(state): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Form(form): Form<AddForm>,
) -> PageResult {
    let chrome = session
        .change(&state, &project, &form.csrf, "suppressions")
        .await?;
    let stream = form.stream.as_deref().filter(|s| !s.is_empty());
    let record = match crate::api::suppressions::manual_suppression(
        &state,
        &project,
        &form.email,
        form.reason.as_deref(),
        stream,
    ) {
        Ok(r) => r,
        Err(errors) => {
            let errors = errors.into_iter().map(|e| e.detail).collect();
            let q = ListQuery {
                email: None,
                before: None,
                notice: None,
            };
            let mut r = render(&listing(&state, chrome, &project, q, errors).await?);
            *r.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(r);
        }
    };
    let (stored, added) = state.store.add_suppression(&record).await?;
    let notice = if added {
        session
            .audit(
                &state,
                Some(&project),
                "suppression.add",
                &stored.email,
                &format!("{} ({})", stored.reason, Row::from(stored.clone()).stream),
            )
            .await;
        format!("{} is suppressed.", stored.email)
    } else {
        format!("{} was already suppressed.", stored.email)
    };
    Ok(redirect(&format!(
        "/projects/{project}/suppressions?notice={}",
        query_escape(&notice)
    )))
}

#[derive(Debug, Deserialize)]
pub struct RemoveForm {
    csrf: String,
    why: String,
}

/// `POST /projects/{project}/suppressions/{id}/remove`: takes a reason, for the audit log.
pub async fn remove(
    State(state): State<AppState>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    Form(form): Form<RemoveForm>,
) -> PageResult {
    let chrome = session
        .change(&state, &project, &form.csrf, "suppressions")
        .await?;
    let why = form.why.trim();
    if why.is_empty() || why.len() > 500 {
        let q = ListQuery {
            email: None,
            before: None,
            notice: None,
        };
        let errors =
            vec!["Say why the address may be sent to again (up to 500 characters).".to_owned()];
        let mut r = render(&listing(&state, chrome, &project, q, errors).await?);
        *r.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(r);
    }
    let found = state
        .store
        .find_suppression(&project, &id, None)
        .await?
        .ok_or(crate::console::PageError::NotFound)?;
    state.store.delete_suppression(&project, &id).await?;
    session
        .audit(
            &state,
            Some(&project),
            "suppression.remove",
            &found.email,
            why,
        )
        .await;
    let notice = format!("{} may be sent to again.", found.email);
    Ok(redirect(&format!(
        "/projects/{project}/suppressions?notice={}",
        query_escape(&notice)
    )))
}

/// One CSV field, quoted when it must be, and never read as a formula by a spreadsheet.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// `GET /projects/{project}/suppressions.csv`: every suppression, newest first, streamed a
/// thousand rows at a time.
pub async fn export(
    State(state): State<AppState>,
    session: Session,
    Path(project): Path<String>,
) -> PageResult {
    session.project(&state, &project, "suppressions").await?;
    let header_row = Bytes::from_static(b"email,stream,reason,created_at,source_email_id\n");
    let first = futures_util::stream::once(async move { Ok::<_, std::io::Error>(header_row) });
    let rest = futures_util::stream::unfold(
        (state, project, Some(String::new())),
        |(state, project, before)| async move {
            let before = before?;
            let cursor = (!before.is_empty()).then_some(before.as_str());
            let rows = match state
                .store
                .list_suppressions(&project, None, cursor, 1000)
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    return Some((
                        Err(std::io::Error::other(e.to_string())),
                        (state, project, None),
                    ));
                }
            };
            if rows.is_empty() {
                return None;
            }
            let next = (rows.len() == 1000)
                .then(|| rows.last().map(|r| r.id.clone()))
                .flatten();
            let mut out = String::with_capacity(rows.len() * 80);
            for r in &rows {
                out.push_str(&format!(
                    "{},{},{},{},{}\n",
                    csv_field(&r.email),
                    csv_field(&r.stream),
                    csv_field(&r.reason),
                    crate::clock::format_ms(r.created_at),
                    csv_field(r.source_email_id.as_deref().unwrap_or(""))
                ));
            }
            Some((Ok(Bytes::from(out)), (state, project, next)))
        },
    );
    use futures_util::StreamExt as _;
    let body = Body::from_stream(first.chain(rest));
    let mut r: Response =
        ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response();
    r.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"suppressions.csv\""),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("a@b.c"), "a@b.c");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }
}

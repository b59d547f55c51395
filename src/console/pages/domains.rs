//! Sending domains: the records to publish with their status and why one fails, a copy
//! button for each value, "verify now", and DKIM rotation (the API's own rules).

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use serde::Deserialize;

use crate::api::AppState;
use crate::api::domains::{project_domains, rotate_key, settings, verify_now};
use crate::api::responses::DomainResponse;
use crate::console::session::{Chrome, Session};
use crate::console::{PageError, PageResult, query_escape, redirect, render};

#[derive(Template)]
#[template(path = "domains.html")]
struct ListPage {
    chrome: Chrome,
    domains: Vec<DomainResponse>,
}

/// `GET /projects/{project}/domains`.
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Path(project): Path<String>,
) -> PageResult {
    let chrome = session.project(&state, &project, "domains").await?;
    let domains = project_domains(&state, &project).await?;
    Ok(render(&ListPage { chrome, domains }))
}

#[derive(Template)]
#[template(path = "domain.html")]
struct ShowPage {
    chrome: Chrome,
    d: DomainResponse,
    notice: Option<String>,
}

impl ShowPage {
    /// What a check's failure code means, and what to do about it.
    fn explain(&self, code: &str) -> &'static str {
        match code {
            "HOST_NOT_FOUND" => "the name does not exist in DNS: publish the record",
            "TYPE_NOT_FOUND" => "the name exists but has no record of this type",
            "INVALID_VALUE" => "a record is there, but its value is not the one to publish",
            "DNS_SERVER_ERROR" => "the DNS server did not answer; Herald asks again",
            _ => "the check failed",
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ShowQuery {
    notice: Option<String>,
}

/// `GET /projects/{project}/domains/{id}`.
pub async fn show(
    State(state): State<AppState>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    Query(q): Query<ShowQuery>,
) -> PageResult {
    let chrome = session.project(&state, &project, "domains").await?;
    let (d, keys) = state.store.get_domain(&project, &id).await?;
    let d = DomainResponse::new(&d, &keys, &settings(&state), state.clock.now_ms());
    Ok(render(&ShowPage {
        chrome,
        d,
        notice: q.notice,
    }))
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf: String,
    action: String,
}

/// `POST /projects/{project}/domains/{id}/action`: verify now, or rotate the DKIM key.
pub async fn action(
    State(state): State<AppState>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> PageResult {
    session
        .change(&state, &project, &form.csrf, "domains")
        .await?;
    let (notice, done) = match form.action.as_str() {
        "verify" => (
            "Herald is checking the records now; this page shows what it finds.".to_owned(),
            verify_now(&state, &project, &id).await,
        ),
        "rotate" => (
            "A new DKIM key is waiting: publish its record; the old key signs until it is seen."
                .to_owned(),
            rotate_key(&state, &project, &id, None, None).await,
        ),
        _ => {
            return Err(PageError::Bad(
                "That is not something a domain can do.".into(),
            ));
        }
    };
    let notice = match done {
        Ok((d, _)) => {
            session
                .audit(
                    &state,
                    Some(&project),
                    &format!("domain.{}", form.action),
                    &d.name,
                    "",
                )
                .await;
            notice
        }
        // The API's refusals (a rotation already waiting, the relay signs) said to the operator.
        Err(e) if e.status.is_client_error() && e.status != axum::http::StatusCode::NOT_FOUND => {
            format!("Not done: {}.", e.detail)
        }
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => return Err(PageError::NotFound),
        Err(e) if e.status == axum::http::StatusCode::SERVICE_UNAVAILABLE => {
            return Err(PageError::Unavailable);
        }
        Err(_) => return Err(PageError::Internal),
    };
    Ok(redirect(&format!(
        "/projects/{project}/domains/{id}?notice={}",
        query_escape(&notice)
    )))
}

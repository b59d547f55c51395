//! The audit log: who changed what in the project from the console, and when.

use askama::Template;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use crate::api::AppState;
use crate::console::session::{Chrome, Session};
use crate::console::{PageResult, query_escape, render, when};

const PAGE: i64 = 100;

/// One line of the log, as the pages show it (here and on the admins' Projects page).
pub struct Line {
    pub at: String,
    pub who: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

impl From<crate::store::AuditEntry> for Line {
    fn from(e: crate::store::AuditEntry) -> Self {
        Self {
            at: when(e.at),
            who: e.operator_email,
            action: e.action,
            target: e.target,
            detail: e.detail,
        }
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    lines: Vec<Line>,
    older: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    before: Option<String>,
}

/// `GET /projects/{project}/audit`: newest first.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    let chrome = session.project(&state, &project, "audit").await?;
    let mut entries = state
        .store
        .list_audit(Some(&project), q.before.as_deref(), PAGE + 1)
        .await?;
    let more = entries.len() > PAGE as usize;
    entries.truncate(PAGE as usize);
    let older = entries
        .last()
        .filter(|_| more)
        .map(|e| format!("before={}", query_escape(&e.id)));
    let lines = entries.into_iter().map(Line::from).collect();
    Ok(render(&AuditPage {
        chrome,
        lines,
        older,
    }))
}

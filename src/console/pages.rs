//! The console's pages, one module per section.

pub mod audit;
pub mod emails;
pub mod overview;
pub mod suppressions;
pub mod webhooks;

use askama::Template;
use axum::extract::State;

use super::session::Session;
use super::{PageResult, redirect, render};
use crate::api::AppState;

#[derive(Template)]
#[template(path = "no_projects.html")]
struct NoProjects<'a> {
    operator: &'a str,
    is_admin: bool,
}

/// `GET /`: the first project's overview (by name), or a page that says there is none yet.
pub async fn home(State(state): State<AppState>, session: Session) -> PageResult {
    let projects = session.projects(&state).await?;
    match projects.first() {
        Some(p) => Ok(redirect(&format!("/projects/{}", p.id))),
        None => Ok(render(&NoProjects {
            operator: session.email(),
            is_admin: session.is_admin(),
        })),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct SwitchQuery {
    project: String,
}

/// `GET /switch?project=…`: the project switcher's form (it works without JavaScript).
pub async fn switch(
    State(state): State<AppState>,
    session: Session,
    axum::extract::Query(q): axum::extract::Query<SwitchQuery>,
) -> PageResult {
    session.project(&state, &q.project, "overview").await?;
    Ok(redirect(&format!(
        "/projects/{}",
        super::query_escape(&q.project)
    )))
}

//! Projects, for admins: every project, a new one, and the changes made outside any one
//! project (reading kept reports again).

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::audit::Line;
use crate::api::AppState;
use crate::console::session::{Chrome, Session};
use crate::console::{PageError, PageResult, redirect, render, when};
use crate::store::StoreError;

#[derive(Template)]
#[template(path = "projects.html")]
struct ProjectsPage {
    chrome: Chrome,
    /// Name, id, created.
    all: Vec<(String, String, String)>,
    lines: Vec<Line>,
    errors: Vec<String>,
}

fn admin_only(session: &Session) -> PageResult<()> {
    if session.is_admin() {
        Ok(())
    } else {
        Err(PageError::Forbidden("Projects are for admins."))
    }
}

async fn page(state: &AppState, chrome: Chrome, errors: Vec<String>) -> PageResult<ProjectsPage> {
    let all = state
        .store
        .list_projects()
        .await?
        .into_iter()
        .map(|p| (p.name, p.id, when(p.created_at)))
        .collect();
    let lines = state
        .store
        .list_audit(None, None, 100)
        .await?
        .into_iter()
        .map(Line::from)
        .collect();
    Ok(ProjectsPage {
        chrome,
        all,
        lines,
        errors,
    })
}

/// `GET /projects/{project}/projects`.
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Path(project): Path<String>,
) -> PageResult {
    admin_only(&session)?;
    let chrome = session.project(&state, &project, "projects").await?;
    Ok(render(&page(&state, chrome, Vec::new()).await?))
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    csrf: String,
    name: String,
}

/// `POST /projects/{project}/projects`: a new project (then its overview).
pub async fn create(
    State(state): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Form(form): Form<CreateForm>,
) -> PageResult {
    admin_only(&session)?;
    let chrome = session
        .change(&state, &project, &form.csrf, "projects")
        .await?;
    let refused = |chrome, why: String| async {
        let mut r = render(&page(&state, chrome, vec![why]).await?);
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        Ok::<_, PageError>(r)
    };
    let name = match crate::api::projects::valid_name(&form.name) {
        Ok(n) => n,
        Err(e) => {
            let why = e
                .errors
                .into_iter()
                .map(|f| f.detail)
                .collect::<Vec<_>>()
                .join("; ");
            return refused(chrome, why).await;
        }
    };
    match state
        .store
        .create_project(&name, state.clock.now_ms())
        .await
    {
        Ok(p) => {
            session
                .audit(&state, Some(&p.id), "project.create", &p.name, "")
                .await;
            Ok(redirect(&format!("/projects/{}", p.id)))
        }
        Err(StoreError::Conflict) => {
            refused(chrome, format!("A project named {name} exists.")).await
        }
        Err(e) => Err(e.into()),
    }
}

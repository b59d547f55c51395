//! API keys: the project's live keys, a new one (its token shown once, in the answer to the
//! form), revocation. The rules of a key are the API's (`api::api_keys::new_api_key`).

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::api::AppState;
use crate::api::api_keys::new_api_key;
use crate::console::session::{Chrome, CsrfForm, Session};
use crate::console::{PageResult, query_escape, redirect, render, when};

pub struct KeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub permission: String,
    pub created: String,
    pub last_used: String,
    pub domains: String,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<KeyView>,
    /// The token just made: shown this once.
    token: Option<String>,
    notice: Option<String>,
    errors: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct KeysQuery {
    notice: Option<String>,
}

async fn page(
    state: &AppState,
    chrome: Chrome,
    project: &str,
    token: Option<String>,
    notice: Option<String>,
    errors: Vec<String>,
) -> PageResult<KeysPage> {
    let keys = state
        .store
        .list_api_keys(project)
        .await?
        .into_iter()
        .map(|k| KeyView {
            name: k.name,
            prefix: k.prefix,
            permission: k.permission,
            created: when(k.created_at),
            last_used: k.last_used_at.map_or_else(|| "never".to_owned(), when),
            domains: k
                .allowed_domains
                .map_or_else(|| "any".to_owned(), |d| d.join(", ")),
            id: k.id,
        })
        .collect();
    Ok(KeysPage {
        chrome,
        keys,
        token,
        notice,
        errors,
    })
}

/// `GET /projects/{project}/keys`.
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    axum::extract::Query(q): axum::extract::Query<KeysQuery>,
) -> PageResult {
    let chrome = session.project(&state, &project, "keys").await?;
    Ok(render(
        &page(&state, chrome, &project, None, q.notice, Vec::new()).await?,
    ))
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    csrf: String,
    name: String,
    permission: String,
    allowed_domains: Option<String>,
}

/// `POST /projects/{project}/keys`: the token is in this answer only (never in a URL).
pub async fn create(
    State(state): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Form(form): Form<CreateForm>,
) -> PageResult {
    let chrome = session.change(&state, &project, &form.csrf, "keys").await?;
    let domains: Vec<String> = form
        .allowed_domains
        .unwrap_or_default()
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect();
    let made = new_api_key(
        state.clock.now_ms(),
        &project,
        &form.name,
        Some(&form.permission),
        None,
        (!domains.is_empty()).then_some(domains),
    );
    let (record, token) = match made {
        Ok(m) => m,
        Err(errors) => {
            let errors = errors.into_iter().map(|e| e.detail).collect();
            let mut r = render(&page(&state, chrome, &project, None, None, errors).await?);
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(r);
        }
    };
    state.store.insert_api_key(&record).await?;
    session
        .audit(
            &state,
            Some(&project),
            "api_key.create",
            &record.prefix,
            &format!("{} ({})", record.name, record.permission),
        )
        .await;
    Ok(render(
        &page(
            &state,
            chrome,
            &project,
            Some(token.reveal()),
            None,
            Vec::new(),
        )
        .await?,
    ))
}

/// `POST /projects/{project}/keys/{id}/revoke`: the key stops working at once, here and (on
/// Postgres, by the notice) in every other process.
pub async fn revoke(
    State(state): State<AppState>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    session.change(&state, &project, &form.csrf, "keys").await?;
    state
        .store
        .revoke_api_key(&project, &id, state.clock.now_ms())
        .await?;
    state.api_keys.clear();
    session
        .audit(&state, Some(&project), "api_key.revoke", &id, "")
        .await;
    Ok(redirect(&format!(
        "/projects/{project}/keys?notice={}",
        query_escape("The key is revoked.")
    )))
}

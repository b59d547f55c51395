//! Webhooks: endpoints (create, edit, enable and disable, delete), the signing secret shown
//! on demand and rotated, a test event, and the attempt log with retry and replay. The rules
//! of an endpoint are the API's (`api::webhooks::apply_changes`).

use askama::Template;
use axum::extract::{Path, Query, RawForm, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::api::AppState;
use crate::api::webhooks::{EndpointChanges, apply_changes, new_endpoint, rotate};
use crate::console::session::{Chrome, Session};
use crate::console::{PageError, PageResult, query_escape, redirect, render, when};
use crate::domain::event::EventType;
use crate::store::EndpointRecord;

/// An endpoint as the pages show it.
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub description: String,
    pub events: Vec<String>,
    pub status: String,
    pub disabled_reason: String,
    pub rate_limit: String,
    pub created: String,
}

impl From<&EndpointRecord> for EndpointView {
    fn from(e: &EndpointRecord) -> Self {
        Self {
            id: e.id.clone(),
            url: e.url.clone(),
            description: e.description.clone().unwrap_or_default(),
            events: e.event_types.clone(),
            status: e.status.to_string(),
            disabled_reason: e.disabled_reason.clone().unwrap_or_default(),
            rate_limit: e.rate_limit.map(|r| r.to_string()).unwrap_or_default(),
            created: when(e.created_at),
        }
    }
}

/// The event types an endpoint may subscribe to, for the form's checkboxes.
fn event_choices() -> Vec<&'static str> {
    let mut v = vec!["*"];
    v.extend(
        EventType::ALL
            .iter()
            .filter(|t| t.subscribable())
            .map(|t| t.as_str()),
    );
    v
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct ListPage {
    chrome: Chrome,
    endpoints: Vec<EndpointView>,
    choices: Vec<&'static str>,
    errors: Vec<String>,
    /// The form's values after a refusal.
    url: String,
    picked: Vec<String>,
}

/// `GET /projects/{project}/webhooks`.
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Path(project): Path<String>,
) -> PageResult {
    let chrome = session.project(&state, &project, "webhooks").await?;
    Ok(render(
        &list_page(
            &state,
            chrome,
            &project,
            Vec::new(),
            String::new(),
            Vec::new(),
        )
        .await?,
    ))
}

async fn list_page(
    state: &AppState,
    chrome: Chrome,
    project: &str,
    errors: Vec<String>,
    url: String,
    picked: Vec<String>,
) -> PageResult<ListPage> {
    let endpoints = state.store.list_webhook_endpoints(project).await?;
    Ok(ListPage {
        chrome,
        endpoints: endpoints.iter().map(EndpointView::from).collect(),
        choices: event_choices(),
        errors,
        url,
        picked,
    })
}

/// The endpoint form: a URL, event checkboxes (repeated `events`), a description, a rate
/// cap. A form repeats a name for checkboxes, which serde's form reader does not take, so
/// the pairs are read as they come.
#[derive(Debug, Default)]
struct EndpointForm {
    csrf: String,
    url: String,
    events: Vec<String>,
    description: String,
    rate_limit: String,
}

impl EndpointForm {
    fn parse(raw: &[u8]) -> Self {
        let mut f = Self::default();
        for (k, v) in url::form_urlencoded::parse(raw) {
            match &*k {
                "csrf" => f.csrf = v.into_owned(),
                "url" => f.url = v.trim().to_owned(),
                "events" => f.events.push(v.into_owned()),
                "description" => f.description = v.trim().to_owned(),
                "rate_limit" => f.rate_limit = v.trim().to_owned(),
                _ => {}
            }
        }
        f
    }

    /// The changes the form asks for, or what is wrong with it.
    fn changes(&self) -> Result<EndpointChanges, Vec<String>> {
        let rate_limit = if self.rate_limit.is_empty() {
            None
        } else {
            Some(self.rate_limit.parse::<i64>().map_err(|_| {
                vec![
                    "The rate cap is a whole number of events a second (or empty for none)."
                        .to_owned(),
                ]
            })?)
        };
        Ok(EndpointChanges {
            url: Some(self.url.clone()),
            events: Some(self.events.clone()),
            streams: None,
            description: Some((!self.description.is_empty()).then(|| self.description.clone())),
            rate_limit: Some(rate_limit),
            status: None,
        })
    }
}

fn details(errors: Vec<crate::api::error::FieldError>) -> Vec<String> {
    errors.into_iter().map(|e| e.detail).collect()
}

/// `POST /projects/{project}/webhooks`: a new endpoint.
pub async fn create(
    State(state): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    RawForm(raw): RawForm,
) -> PageResult {
    let form = EndpointForm::parse(&raw);
    let chrome = session
        .change(&state, &project, &form.csrf, "webhooks")
        .await?;
    let made = match form.changes() {
        Ok(c) => new_endpoint(&state, &project, c).await.map_err(details),
        Err(e) => Err(e),
    };
    let record = match made {
        Ok(r) => r,
        Err(errors) => {
            let page = list_page(&state, chrome, &project, errors, form.url, form.events).await?;
            let mut r = render(&page);
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(r);
        }
    };
    state.store.insert_webhook_endpoint(&record).await?;
    state.events_wake.notify_one();
    session
        .audit(
            &state,
            Some(&project),
            "webhook.create",
            &record.url,
            &record.event_types.join(", "),
        )
        .await;
    Ok(redirect(&format!(
        "/projects/{project}/webhooks/{}",
        record.id
    )))
}

/// One attempt of the log.
pub struct AttemptView {
    pub delivery_id: String,
    pub event_id: String,
    pub at: String,
    pub attempt: i64,
    pub succeeded: bool,
    pub status_code: String,
    pub body: String,
    pub error: String,
    pub duration_ms: i64,
}

#[derive(Template)]
#[template(path = "webhook.html")]
struct ShowPage {
    chrome: Chrome,
    e: EndpointView,
    choices: Vec<&'static str>,
    attempts: Vec<AttemptView>,
    older: Option<String>,
    /// The signing secret, when the operator asked to see it (never in a URL).
    secret: Option<String>,
    notice: Option<String>,
    errors: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct ShowQuery {
    before: Option<String>,
    notice: Option<String>,
}

/// `GET /projects/{project}/webhooks/{id}`.
pub async fn show(
    State(state): State<AppState>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    Query(q): Query<ShowQuery>,
) -> PageResult {
    let chrome = session.project(&state, &project, "webhooks").await?;
    let e = state.store.get_webhook_endpoint(&project, &id).await?;
    let page = show_page(&state, chrome, &e, q, None, Vec::new()).await?;
    Ok(render(&page))
}

const ATTEMPTS: i64 = 50;

async fn show_page(
    state: &AppState,
    chrome: Chrome,
    e: &EndpointRecord,
    q: ShowQuery,
    secret: Option<String>,
    errors: Vec<String>,
) -> PageResult<ShowPage> {
    let mut rows = state
        .store
        .list_webhook_attempts(&e.id, None, q.before.as_deref(), ATTEMPTS + 1)
        .await?;
    let more = rows.len() > ATTEMPTS as usize;
    rows.truncate(ATTEMPTS as usize);
    let older = rows
        .last()
        .filter(|_| more)
        .map(|a| format!("before={}", query_escape(&a.id)));
    Ok(ShowPage {
        chrome,
        e: EndpointView::from(e),
        choices: event_choices(),
        attempts: rows
            .into_iter()
            .map(|a| AttemptView {
                delivery_id: a.delivery_id,
                event_id: a.event_id,
                at: when(a.attempted_at),
                attempt: a.attempt,
                succeeded: a.succeeded,
                status_code: a.status_code.map(|c| c.to_string()).unwrap_or_default(),
                body: a.response_body.unwrap_or_default(),
                error: a.error.unwrap_or_default(),
                duration_ms: a.duration_ms,
            })
            .collect(),
        older,
        secret,
        notice: q.notice,
        errors,
    })
}

fn back(project: &str, id: &str, notice: &str) -> axum::response::Response {
    redirect(&format!(
        "/projects/{project}/webhooks/{id}?notice={}",
        query_escape(notice)
    ))
}

/// `POST /projects/{project}/webhooks/{id}`: the edit form.
pub async fn update(
    State(state): State<AppState>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    RawForm(raw): RawForm,
) -> PageResult {
    let form = EndpointForm::parse(&raw);
    let chrome = session
        .change(&state, &project, &form.csrf, "webhooks")
        .await?;
    let mut e = state.store.get_webhook_endpoint(&project, &id).await?;
    let applied = match form.changes() {
        Ok(c) => apply_changes(&state, &mut e, c).await.map_err(details),
        Err(errors) => Err(errors),
    };
    if let Err(errors) = applied {
        let fresh = state.store.get_webhook_endpoint(&project, &id).await?;
        let q = ShowQuery {
            before: None,
            notice: None,
        };
        let mut r = render(&show_page(&state, chrome, &fresh, q, None, errors).await?);
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(r);
    }
    state.store.update_webhook_endpoint(&e).await?;
    state.events_wake.notify_one();
    session
        .audit(
            &state,
            Some(&project),
            "webhook.update",
            &e.url,
            &e.event_types.join(", "),
        )
        .await;
    Ok(back(&project, &id, "Saved."))
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf: String,
    action: String,
    delivery_id: Option<String>,
    event_id: Option<String>,
}

/// `POST /projects/{project}/webhooks/{id}/action`: enable, disable, show the secret, rotate
/// it, send a test event, retry a delivery, replay an event, delete.
pub async fn action(
    State(state): State<AppState>,
    session: Session,
    Path((project, id)): Path<(String, String)>,
    axum::extract::Form(form): axum::extract::Form<ActionForm>,
) -> PageResult {
    let chrome = session
        .change(&state, &project, &form.csrf, "webhooks")
        .await?;
    let mut e = state.store.get_webhook_endpoint(&project, &id).await?;
    let now = state.clock.now_ms();
    let url = e.url.clone();
    let audit = |what: &'static str, detail: String| {
        let (state, session, project, url) =
            (state.clone(), session.clone(), project.clone(), url.clone());
        async move {
            session
                .audit(&state, Some(&project), what, &url, &detail)
                .await;
        }
    };
    match form.action.as_str() {
        "enable" | "disable" => {
            let status = if form.action == "enable" {
                "enabled"
            } else {
                "disabled"
            };
            apply_changes(
                &state,
                &mut e,
                EndpointChanges {
                    status: Some(status.to_owned()),
                    ..EndpointChanges::default()
                },
            )
            .await
            .map_err(|_| PageError::Internal)?;
            state.store.update_webhook_endpoint(&e).await?;
            state.events_wake.notify_one();
            audit("webhook.status", status.to_owned()).await;
            Ok(back(&project, &id, &format!("The endpoint is {status}.")))
        }
        "reveal" => {
            // Shown in the answer to a POST (never in a URL, never cached), and audited.
            let secret = state.sealer.open(&e.secret).map_err(|err| {
                tracing::error!(error = %err, "console: could not open a webhook secret");
                PageError::Internal
            })?;
            audit("webhook.secret_shown", String::new()).await;
            let q = ShowQuery {
                before: None,
                notice: None,
            };
            Ok(render(
                &show_page(&state, chrome, &e, q, Some(secret), Vec::new()).await?,
            ))
        }
        "rotate" => {
            rotate(&state, &mut e, 86_400);
            state.store.update_webhook_endpoint(&e).await?;
            audit(
                "webhook.secret_rotated",
                "the old secret signs for 24 hours".into(),
            )
            .await;
            Ok(back(
                &project,
                &id,
                "A new secret signs from now on; the old one also signs for 24 hours.",
            ))
        }
        "test" => {
            state.store.create_test_delivery(&project, &id, now).await?;
            state.events_wake.notify_waiters();
            audit("webhook.test", String::new()).await;
            Ok(back(&project, &id, "A webhook.test event is on its way."))
        }
        "retry" => {
            let delivery = form
                .delivery_id
                .ok_or_else(|| PageError::Bad("Which delivery?".into()))?;
            if e.status != crate::domain::states::EndpointStatus::Enabled {
                return Err(PageError::Bad(
                    "Enable the endpoint before retrying.".into(),
                ));
            }
            state
                .store
                .retry_webhook_delivery(&id, &delivery, now)
                .await?;
            state.events_wake.notify_waiters();
            audit("webhook.retry", delivery).await;
            Ok(back(&project, &id, "The delivery is due again now."))
        }
        "replay" => {
            let event = form
                .event_id
                .ok_or_else(|| PageError::Bad("Which event?".into()))?;
            let n = state.store.redeliver_event(&project, &event, now).await?;
            state.events_wake.notify_waiters();
            audit("webhook.replay", event).await;
            Ok(back(
                &project,
                &id,
                &format!("The event is sent again to {n} endpoint(s) subscribed to it."),
            ))
        }
        "delete" => {
            state
                .store
                .delete_webhook_endpoint(&project, &id, now)
                .await?;
            audit("webhook.delete", String::new()).await;
            Ok(redirect(&format!("/projects/{project}/webhooks")))
        }
        _ => Err(PageError::Bad(
            "That is not something an endpoint can do.".into(),
        )),
    }
}

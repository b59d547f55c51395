//! `GET /v1/events`: the project's event feed, a cursor over time-ordered event ids, for
//! reconciliation when a webhook was missed; `POST /v1/events/{id}/redeliver`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::store::EventFilter;

use super::AppState;
use super::auth::FullAccess;
use super::error::{ApiError, ApiResult};
use super::responses::{EventResponse, ListResponse, Redelivery};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    #[serde(default, rename = "type")]
    event_type: Option<String>,
    #[serde(default)]
    recipient: Option<String>,
    #[serde(default)]
    email_id: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    created_after: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

/// `GET /v1/events`.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery), responses((status = 200, description = "Events, oldest first", body = ListResponse<EventResponse>), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn list_events(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ListResponse<EventResponse>>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = super::pagination::page_size(q.limit, 20, 100)?;
    let created_after = match q.created_after.as_deref() {
        None => None,
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| {
                    ApiError::bad_request("invalid_query", "created_after must be an RFC 3339 time")
                })?
                .timestamp_millis(),
        ),
    };
    // A filter that can match nothing is a mistake to say, not an empty page to return.
    let event_type = match q.event_type.as_deref() {
        None => None,
        Some(t) => Some(crate::domain::event::EventType::parse(t).ok_or_else(|| {
            ApiError::bad_request("invalid_query", format!("type '{t}' is not an event type"))
        })?),
    };
    let filter = EventFilter {
        after: super::pagination::cursor("after", q.after)?,
        event_type,
        recipient: q.recipient,
        email_id: super::pagination::id("email_id", q.email_id)?,
        created_after,
    };
    let mut events = state
        .store
        .list_events(&principal.project_id, &filter, limit + 1)
        .await?;
    let has_more = super::pagination::trim_page(&mut events, limit);
    let data = events.iter().map(EventResponse::from).collect();
    Ok(Json(ListResponse::new(data, has_more)))
}

/// `POST /v1/events/{id}/redeliver`: queue the event again for every endpoint that takes it.
#[utoipa::path(post, path = "/v1/events/{id}/redeliver", tag = "events", params(("id" = String, Path, description = "The object's id")), responses((status = 202, description = "Queued again for every endpoint that takes it", body = Redelivery), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn redeliver_event(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Redelivery>)> {
    let n = state
        .store
        .redeliver_event(&principal.project_id, &id, state.clock.now_ms())
        .await?;
    state.events_wake.notify_waiters();
    Ok((
        StatusCode::ACCEPTED,
        Json(Redelivery {
            object: "event",
            id,
            deliveries: u64::try_from(n).unwrap_or(u64::MAX),
        }),
    ))
}

//! `/v1/webhooks`: endpoints, secret rotation, test sends, the attempt log and manual retries.
//! Full-access keys only; secrets are shown to them on create, get and rotate.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clock::format_ms;
use crate::domain::event::EventType;
use crate::domain::states::EndpointStatus;
use crate::store::EndpointRecord;
use crate::webhooks::client::{TargetError, check_target};
use crate::webhooks::signing::generate_secret;

use super::AppState;
use super::auth::FullAccess;
use super::error::{ApiError, ApiResult, FieldError};
use super::idempotency::{IdempotencyKey, fingerprint, key_reused};
use super::json::{JsonBody, JsonBytes, parse_object};
use super::responses::{
    Deleted, ListResponse, WebhookAttemptResponse, WebhookDeliveryResponse, WebhookResponse,
};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.example.com/mail", "events": ["email.delivered", "email.bounced"]}))]
pub struct CreateWebhookRequest {
    url: String,
    events: Vec<String>,
    #[serde(default)]
    streams: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    /// The most events a second the endpoint is sent (1 to 100,000); absent or null: no cap.
    #[serde(default)]
    rate_limit: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookRequest {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    streams: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    status: Option<String>,
    /// The most events a second (1 to 100,000); null removes the cap, absent keeps it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    rate_limit: Option<Option<i64>>,
}

/// A field that may be absent (`None`), null (`Some(None)`) or a value.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The most events a second an endpoint may ask to be capped at.
const MAX_RATE: i64 = 100_000;

fn check_rate(rate: Option<i64>, errors: &mut Vec<FieldError>) {
    if rate.is_some_and(|r| !(1..=MAX_RATE).contains(&r)) {
        errors.push(FieldError::new(
            "/rate_limit",
            "validation_error",
            format!("rate_limit is events a second, from 1 to {MAX_RATE}, or null for no cap"),
        ));
    }
}

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    #[serde(default)]
    grace_period_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AttemptsQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    before: Option<String>,
}

const MAX_GRACE_SECONDS: u64 = 7 * 86_400;

/// The endpoint as the API shows it, with its secret opened when `with_secret`.
fn webhook_response(
    state: &AppState,
    e: &EndpointRecord,
    with_secret: bool,
) -> ApiResult<WebhookResponse> {
    let mut w = WebhookResponse::from(e);
    if with_secret {
        w.secret = Some(
            state
                .sealer
                .open(&e.secret)
                .map_err(|err| ApiError::internal(&err))?,
        );
    }
    Ok(w)
}

/// What an operator sets of an endpoint, over the API or from the console; `None` leaves a
/// field as it is (a new endpoint must name its URL and events).
#[derive(Debug, Default)]
pub(crate) struct EndpointChanges {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub streams: Option<Vec<String>>,
    pub description: Option<Option<String>>,
    pub rate_limit: Option<Option<i64>>,
    /// `enabled` or `disabled`.
    pub status: Option<String>,
}

/// A new endpoint of the project, enabled, with a new secret, after every rule.
pub(crate) async fn new_endpoint(
    state: &AppState,
    project_id: &str,
    changes: EndpointChanges,
) -> Result<EndpointRecord, Vec<FieldError>> {
    let now = state.clock.now_ms();
    let mut record = EndpointRecord {
        id: uuid::Uuid::now_v7().to_string(),
        project_id: project_id.to_owned(),
        url: String::new(),
        description: None,
        event_types: Vec::new(),
        streams: Vec::new(),
        status: EndpointStatus::Enabled,
        disabled_reason: None,
        secret: state.sealer.seal(&generate_secret()),
        previous_secret: None,
        previous_secret_expires_at: None,
        created_at: now,
        updated_at: now,
        rate_limit: None,
    };
    let changes = EndpointChanges {
        url: Some(changes.url.unwrap_or_default()),
        events: Some(changes.events.unwrap_or_default()),
        ..changes
    };
    apply_changes(state, &mut record, changes).await?;
    Ok(record)
}

/// Checks the changes against every rule of an endpoint (the one place they are) and makes
/// them, or says what is wrong with each.
pub(crate) async fn apply_changes(
    state: &AppState,
    e: &mut EndpointRecord,
    c: EndpointChanges,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Some(url) = c.url {
        check_url(state, &url, &mut errors).await;
        e.url = url;
    }
    if let Some(events) = c.events {
        check_events(&events, &mut errors);
        e.event_types = events;
    }
    if let Some(streams) = c.streams {
        check_streams(state, &streams, &mut errors);
        e.streams = streams;
    }
    if let Some(description) = c.description {
        check_description(description.as_deref(), &mut errors);
        e.description = description;
    }
    if let Some(rate) = c.rate_limit {
        check_rate(rate, &mut errors);
        e.rate_limit = rate;
    }
    match c.status.as_deref() {
        None => {}
        Some("enabled") => {
            e.status = EndpointStatus::Enabled;
            e.disabled_reason = None;
        }
        Some("disabled") => {
            e.status = EndpointStatus::Disabled;
            e.disabled_reason = Some("disabled by the operator".into());
        }
        Some(_) => errors.push(FieldError::new(
            "/status",
            "validation_error",
            "status must be enabled or disabled",
        )),
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    e.updated_at = state.clock.now_ms();
    Ok(())
}

/// A new secret for the endpoint; the old one keeps signing for `grace_seconds`.
pub(crate) fn rotate(state: &AppState, e: &mut EndpointRecord, grace_seconds: u64) {
    let now = state.clock.now_ms();
    e.previous_secret = Some(std::mem::replace(
        &mut e.secret,
        state.sealer.seal(&generate_secret()),
    ));
    e.previous_secret_expires_at =
        Some(now + i64::try_from(grace_seconds.saturating_mul(1000)).unwrap_or(i64::MAX));
    e.updated_at = now;
}

async fn check_url(state: &AppState, url: &str, errors: &mut Vec<FieldError>) {
    match check_target(url, state.config.webhooks.allow_private_targets).await {
        Ok(_) => {}
        Err(e @ TargetError::InvalidUrl) => {
            errors.push(FieldError::new("/url", "invalid_url", e.to_string()))
        }
        Err(e) => errors.push(FieldError::new("/url", "forbidden_target", e.to_string())),
    }
}

fn check_events(events: &[String], errors: &mut Vec<FieldError>) {
    if events.is_empty() {
        errors.push(FieldError::new(
            "/events",
            "validation_error",
            "name at least one event type, or \"*\"",
        ));
    }
    for (i, e) in events.iter().enumerate() {
        let named = EventType::parse(e).is_some_and(EventType::subscribable);
        if !(e == "*" || e == "email.*" || named) {
            errors.push(FieldError::new(
                format!("/events/{i}"),
                "invalid_event_type",
                format!("'{e}' is not an event type"),
            ));
        }
    }
}

fn check_streams(state: &AppState, streams: &[String], errors: &mut Vec<FieldError>) {
    for (i, s) in streams.iter().enumerate() {
        if !state.config.streams.contains(s) {
            errors.push(FieldError::new(
                format!("/streams/{i}"),
                "invalid_stream",
                format!("'{s}' is not a configured stream"),
            ));
        }
    }
}

fn check_description(d: Option<&str>, errors: &mut Vec<FieldError>) {
    if d.is_some_and(|d| d.chars().count() > 200 || d.chars().any(char::is_control)) {
        errors.push(FieldError::new(
            "/description",
            "validation_error",
            "at most 200 printable characters",
        ));
    }
}

/// `POST /v1/webhooks`.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhookRequest, responses((status = 201, description = "Created, with its signing secret", body = WebhookResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn create_webhook(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    headers: axum::http::HeaderMap,
    JsonBytes(body): JsonBytes,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    // With an `Idempotency-Key` a retried create answers with the endpoint the first one made.
    // What is kept to replay is the endpoint's id, never its secret: a replay renders the
    // endpoint as it is (its secret still sealed at rest).
    let key = IdempotencyKey::from_headers(&headers)?;
    let _guard = match &key {
        Some(k) => Some(state.idempotency.enter(&principal.project_id, PATH, k)?),
        None => None,
    };
    let now = state.clock.now_ms();
    let print = fingerprint(&body);
    let replay = |state: AppState, project: String, key: IdempotencyKey, print: Vec<u8>| async move {
        let Some(stored) = state
            .store
            .find_idempotent_response(&project, "POST", PATH, key.as_str(), now)
            .await?
        else {
            return Ok(None);
        };
        if stored.fingerprint != print {
            return Err(key_reused());
        }
        let id = serde_json::from_str::<Value>(&stored.body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let endpoint = state.store.get_webhook_endpoint(&project, &id).await?;
        let mut resp = (
            StatusCode::CREATED,
            Json(webhook_response(&state, &endpoint, true)?),
        )
            .into_response();
        resp.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
        Ok::<_, ApiError>(Some(resp))
    };
    if let Some(k) = &key
        && let Some(resp) = replay(
            state.clone(),
            principal.project_id.clone(),
            k.clone(),
            print.clone(),
        )
        .await?
    {
        return Ok(resp);
    }
    let req: CreateWebhookRequest = parse_object(&body)?;
    let record = new_endpoint(
        &state,
        &principal.project_id,
        EndpointChanges {
            url: Some(req.url),
            events: Some(req.events),
            streams: req.streams,
            description: Some(req.description),
            rate_limit: Some(req.rate_limit),
            status: None,
        },
    )
    .await
    .map_err(ApiError::validation)?;
    let now = record.created_at;
    let idempotency = key.as_ref().map(|k| crate::store::IdempotencyRecord {
        project_id: principal.project_id.clone(),
        method: "POST".into(),
        path: PATH.into(),
        key: k.as_str().to_owned(),
        fingerprint: print.clone(),
        response_status: 201,
        response_body: json!({"object": "webhook", "id": record.id}).to_string(),
        created_at: now,
        expires_at: now + super::idempotency::TTL_MS,
    });
    match state
        .store
        .insert_webhook_endpoint_once(&record, idempotency.as_ref())
        .await
    {
        Ok(()) => {}
        // Another process committed the same key first: answer as it did.
        Err(crate::store::StoreError::Conflict) if key.is_some() => {
            if let Some(k) = key
                && let Some(resp) =
                    replay(state.clone(), principal.project_id.clone(), k, print).await?
            {
                return Ok(resp);
            }
            return Err(crate::store::StoreError::Conflict.into());
        }
        Err(e) => return Err(e.into()),
    }
    Ok((
        StatusCode::CREATED,
        Json(webhook_response(&state, &record, true)?),
    )
        .into_response())
}

/// Where endpoints are created (the idempotency scope's path).
const PATH: &str = "/v1/webhooks";

/// `GET /v1/webhooks`.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", responses((status = 200, description = "The project's endpoints", body = ListResponse<WebhookResponse>), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
) -> ApiResult<Json<ListResponse<WebhookResponse>>> {
    let list = state
        .store
        .list_webhook_endpoints(&principal.project_id)
        .await?;
    let data = list
        .iter()
        .map(|e| webhook_response(&state, e, false))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(ListResponse::new(data, false)))
}

/// `GET /v1/webhooks/{id}`.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "The object's id")), responses((status = 200, description = "The endpoint", body = WebhookResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn get_webhook(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookResponse>> {
    let e = state
        .store
        .get_webhook_endpoint(&principal.project_id, &id)
        .await?;
    Ok(Json(webhook_response(&state, &e, true)?))
}

/// `PATCH /v1/webhooks/{id}`: change the URL, filters, description, or enable/disable.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "The object's id")), request_body = UpdateWebhookRequest, responses((status = 200, description = "Updated", body = WebhookResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn update_webhook(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateWebhookRequest>,
) -> ApiResult<Json<WebhookResponse>> {
    let mut e = state
        .store
        .get_webhook_endpoint(&principal.project_id, &id)
        .await?;
    apply_changes(
        &state,
        &mut e,
        EndpointChanges {
            url: req.url,
            events: req.events,
            streams: req.streams,
            description: req.description.map(Some),
            rate_limit: req.rate_limit,
            status: req.status,
        },
    )
    .await
    .map_err(ApiError::validation)?;
    state.store.update_webhook_endpoint(&e).await?;
    // The dispatcher looks its lanes up again at once (a new cap, an endpoint enabled).
    state.events_wake.notify_one();
    Ok(Json(webhook_response(&state, &e, false)?))
}

/// `DELETE /v1/webhooks/{id}`.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "The object's id")), responses((status = 200, description = "Deleted; pending deliveries canceled", body = Deleted), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    state
        .store
        .delete_webhook_endpoint(&principal.project_id, &id, state.clock.now_ms())
        .await?;
    Ok(Json(Deleted::new("webhook", id)))
}

/// `POST /v1/webhooks/{id}/secret/rotate`: a new secret; the old one keeps signing (a second
/// `v1,` signature) for the grace period.
#[utoipa::path(post, path = "/v1/webhooks/{id}/secret/rotate", tag = "webhooks", params(("id" = String, Path, description = "The object's id")), request_body(content = Option<RotateRequest>, description = "Optional"), responses((status = 200, description = "The new secret; the old one signs too until the grace period ends", body = WebhookResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<WebhookResponse>> {
    // The body is optional: none at all means the default grace period.
    let req: RotateRequest = super::json::parse_optional(&body)?;
    let grace = req.grace_period_seconds.unwrap_or(86_400);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::validation(vec![FieldError::new(
            "/grace_period_seconds",
            "validation_error",
            format!("at most {MAX_GRACE_SECONDS} seconds"),
        )]));
    }
    let mut e = state
        .store
        .get_webhook_endpoint(&principal.project_id, &id)
        .await?;
    rotate(&state, &mut e, grace);
    state.store.update_webhook_endpoint(&e).await?;
    let mut w = webhook_response(&state, &e, true)?;
    w.previous_secret_expires_at = e.previous_secret_expires_at.map(format_ms);
    Ok(Json(w))
}

/// `POST /v1/webhooks/{id}/test`: sends a `webhook.test` event to this endpoint.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks", params(("id" = String, Path, description = "The object's id")), responses((status = 202, description = "A webhook.test event is on its way", body = WebhookDeliveryResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn test_webhook(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<WebhookDeliveryResponse>)> {
    state
        .store
        .get_webhook_endpoint(&principal.project_id, &id)
        .await?;
    let (event_id, delivery_id) = state
        .store
        .create_test_delivery(&principal.project_id, &id, state.clock.now_ms())
        .await?;
    state.events_wake.notify_waiters();
    Ok((
        StatusCode::ACCEPTED,
        Json(WebhookDeliveryResponse::pending(
            delivery_id,
            Some(event_id),
        )),
    ))
}

/// `GET /v1/webhooks/{id}/deliveries`: the attempt log, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = String, Path, description = "The object's id"), AttemptsQuery), responses((status = 200, description = "The attempt log, newest first", body = ListResponse<WebhookAttemptResponse>), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(id): Path<String>,
    query: Result<Query<AttemptsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ListResponse<WebhookAttemptResponse>>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    state
        .store
        .get_webhook_endpoint(&principal.project_id, &id)
        .await?;
    let succeeded = match q.status.as_deref() {
        None => None,
        Some("succeeded") => Some(true),
        Some("failed") => Some(false),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "status must be succeeded or failed",
            ));
        }
    };
    let limit = super::pagination::page_size(q.limit, 20, 100)?;
    let mut rows = state
        .store
        .list_webhook_attempts(
            &id,
            succeeded,
            super::pagination::cursor("before", q.before)?.as_deref(),
            limit + 1,
        )
        .await?;
    let has_more = super::pagination::trim_page(&mut rows, limit);
    let data = rows.iter().map(WebhookAttemptResponse::from).collect();
    Ok(Json(ListResponse::new(data, has_more)))
}

/// `POST /v1/webhooks/{id}/deliveries/{delivery_id}/retry`.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "webhooks", params(("id" = String, Path, description = "The object's id"), ("delivery_id" = String, Path, description = "The delivery")), responses((status = 202, description = "Due again now", body = WebhookDeliveryResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<WebhookDeliveryResponse>)> {
    let e = state
        .store
        .get_webhook_endpoint(&principal.project_id, &id)
        .await?;
    if e.status != EndpointStatus::Enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_state",
            "the endpoint is not enabled",
        ));
    }
    state
        .store
        .retry_webhook_delivery(&id, &delivery_id, state.clock.now_ms())
        .await?;
    state.events_wake.notify_waiters();
    Ok((
        StatusCode::ACCEPTED,
        Json(WebhookDeliveryResponse::pending(delivery_id, None)),
    ))
}

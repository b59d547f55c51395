//! `/v1/domains`: sending domains, the records to publish, verification and DKIM rotation.
//! Private keys never leave the store unsealed except to sign.

use crate::domain::states::{DomainStatus, KeyState};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::domain::address::domain_name;
use crate::domain::dkim::{DkimAlgorithm, generate};
use crate::domains::records::RecordSettings;
use crate::store::{DkimKeyRecord, DomainRecord, StoreError};

use super::AppState;
use super::auth::FullAccess;
use super::error::{ApiError, ApiResult, FieldError};
use super::json::JsonBody;
use super::responses::{Deleted, DomainResponse, ListResponse};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "acme.com"}))]
pub struct CreateDomainRequest {
    name: String,
    #[serde(default)]
    dkim: Option<String>,
    #[serde(default)]
    dkim_selector: Option<String>,
    #[serde(default)]
    dkim_algorithm: Option<String>,
    #[serde(default)]
    return_path_subdomain: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDomainRequest {
    #[serde(default)]
    dkim: Option<String>,
}

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    #[serde(default)]
    dkim_selector: Option<String>,
    #[serde(default)]
    dkim_algorithm: Option<String>,
}

pub(crate) fn settings(state: &AppState) -> RecordSettings<'_> {
    let c = &state.config;
    RecordSettings {
        bounce_domain: &c.delivery.bounce_domain,
        spf_include: (!c.domains.spf_include.is_empty()).then_some(c.domains.spf_include.as_str()),
    }
}

fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn new_key(
    state: &AppState,
    domain_id: &str,
    selector: String,
    algorithm: DkimAlgorithm,
    key_state: KeyState,
    now: i64,
) -> ApiResult<DkimKeyRecord> {
    let key = generate(algorithm).map_err(|e| ApiError::internal(&e))?;
    let sealed = state.sealer.seal(&base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        &key.private_pkcs8,
    ));
    Ok(DkimKeyRecord {
        id: uuid::Uuid::now_v7().to_string(),
        domain_id: domain_id.to_owned(),
        selector,
        algorithm: algorithm.as_str().to_owned(),
        private_key: sealed,
        public_key: key.public_key,
        state: key_state.to_owned(),
        created_at: now,
        activated_at: (key_state == KeyState::Active).then_some(now),
        retired_at: None,
    })
}

/// A fresh selector: `hr` + the date + 4 random characters (`hr20261122a7k2`).
fn default_selector(now: i64) -> String {
    let date = chrono::DateTime::from_timestamp_millis(now)
        .unwrap_or_default()
        .format("%Y%m%d");
    let suffix: String = (0..4)
        .map(|_| {
            let n: u8 = rand::random::<u8>() % 36;
            char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
        })
        .collect();
    format!("hr{date}{suffix}")
}

fn parse_algorithm(s: Option<&str>, errors: &mut Vec<FieldError>) -> DkimAlgorithm {
    match s.map(DkimAlgorithm::parse) {
        None => DkimAlgorithm::Rsa2048,
        Some(Some(a)) => a,
        Some(None) => {
            errors.push(FieldError::new(
                "/dkim_algorithm",
                "validation_error",
                "dkim_algorithm must be rsa or ed25519",
            ));
            DkimAlgorithm::Rsa2048
        }
    }
}

/// `POST /v1/domains`.
#[utoipa::path(post, path = "/v1/domains", tag = "domains", request_body = CreateDomainRequest, responses((status = 201, description = "Added, with the DNS records to publish", body = DomainResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn create_domain(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    JsonBody(req): JsonBody<CreateDomainRequest>,
) -> ApiResult<(StatusCode, Json<DomainResponse>)> {
    let mut errors = Vec::new();
    // Lower-case ASCII, an internationalized name in its ASCII form: as `From` addresses and
    // DNS carry it (see `domain::address`).
    let name = domain_name(&req.name).unwrap_or_else(|| {
        errors.push(FieldError::new(
            "/name",
            "invalid_domain",
            format!("'{}' is not a domain name", req.name.escape_debug()),
        ));
        String::new()
    });
    let mode = req.dkim.unwrap_or_else(|| "herald".into());
    if mode != "herald" && mode != "upstream" {
        errors.push(FieldError::new(
            "/dkim",
            "validation_error",
            "dkim must be herald or upstream",
        ));
    }
    let now = state.clock.now_ms();
    let selector = req.dkim_selector.unwrap_or_else(|| default_selector(now));
    if !valid_label(&selector) {
        errors.push(FieldError::new(
            "/dkim_selector",
            "validation_error",
            "a selector is one DNS label",
        ));
    }
    let algorithm = parse_algorithm(req.dkim_algorithm.as_deref(), &mut errors);
    let sub = req
        .return_path_subdomain
        .unwrap_or_else(|| state.config.domains.return_path_subdomain.clone());
    if !sub.is_empty() && !valid_label(&sub) {
        errors.push(FieldError::new(
            "/return_path_subdomain",
            "validation_error",
            "a subdomain is one DNS label",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let d = DomainRecord {
        id: uuid::Uuid::now_v7().to_string(),
        project_id: principal.project_id.clone(),
        name: name.clone(),
        status: DomainStatus::Pending,
        dkim_mode: mode.clone(),
        return_path_name: (!sub.is_empty()).then(|| format!("{sub}.{name}")),
        records_status: "{}".into(),
        check_attempts: 0,
        next_check_at: Some(now),
        last_checked_at: None,
        verified_at: None,
        created_at: now,
        updated_at: now,
    };
    let keys = vec![new_key(
        &state,
        &d.id,
        selector,
        algorithm,
        KeyState::Active,
        now,
    )?];
    match state.store.insert_domain(&d, &keys).await {
        Err(StoreError::Conflict) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "domain_exists",
                format!("{name} is already a domain of this project"),
            ));
        }
        other => other?,
    }
    state.domains_wake.notify_waiters();
    // Sends pick up the change now, not a second later.
    state.senders.clear();
    Ok((
        StatusCode::CREATED,
        Json(DomainResponse::new(&d, &keys, &settings(&state), now)),
    ))
}

/// `GET /v1/domains`.
#[utoipa::path(get, path = "/v1/domains", tag = "domains", responses((status = 200, description = "The project's domains", body = ListResponse<DomainResponse>), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn list_domains(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
) -> ApiResult<Json<ListResponse<DomainResponse>>> {
    let data = project_domains(&state, &principal.project_id).await?;
    Ok(Json(ListResponse::new(data, false)))
}

/// A project's domains with their records and keys: the API's list and the console's.
pub async fn project_domains(
    state: &AppState,
    project: &str,
) -> Result<Vec<DomainResponse>, crate::store::StoreError> {
    let now = state.clock.now_ms();
    let mut data = Vec::new();
    for d in state.store.list_domains(project).await? {
        let (d, keys) = state.store.get_domain(project, &d.id).await?;
        data.push(DomainResponse::new(&d, &keys, &settings(state), now));
    }
    Ok(data)
}

/// `GET /v1/domains/{id}`.
#[utoipa::path(get, path = "/v1/domains/{id}", tag = "domains", params(("id" = String, Path, description = "The object's id")), responses((status = 200, description = "The domain and its records", body = DomainResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn get_domain(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(id): Path<String>,
) -> ApiResult<Json<DomainResponse>> {
    let (d, keys) = state.store.get_domain(&principal.project_id, &id).await?;
    Ok(Json(DomainResponse::new(
        &d,
        &keys,
        &settings(&state),
        state.clock.now_ms(),
    )))
}

/// `PATCH /v1/domains/{id}`: switch signing between Herald and the relay (`dkim`).
#[utoipa::path(patch, path = "/v1/domains/{id}", tag = "domains", params(("id" = String, Path, description = "The object's id")), request_body = UpdateDomainRequest, responses((status = 200, description = "Updated", body = DomainResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn update_domain(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateDomainRequest>,
) -> ApiResult<Json<DomainResponse>> {
    let (mut d, keys) = state.store.get_domain(&principal.project_id, &id).await?;
    let now = state.clock.now_ms();
    if let Some(mode) = req.dkim {
        if mode != "herald" && mode != "upstream" {
            return Err(ApiError::validation(vec![FieldError::new(
                "/dkim",
                "validation_error",
                "dkim must be herald or upstream",
            )]));
        }
        if mode != d.dkim_mode {
            d.dkim_mode = mode;
            d.next_check_at = Some(now);
            d.updated_at = now;
            state.store.update_domain(&d, None).await?;
            state.domains_wake.notify_waiters();
        }
    }
    // Sends pick up the change now, not a second later.
    state.senders.clear();
    Ok(Json(DomainResponse::new(&d, &keys, &settings(&state), now)))
}

/// `DELETE /v1/domains/{id}`.
#[utoipa::path(delete, path = "/v1/domains/{id}", tag = "domains", params(("id" = String, Path, description = "The object's id")), responses((status = 200, description = "Deleted", body = Deleted), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn delete_domain(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    state
        .store
        .delete_domain(&principal.project_id, &id)
        .await?;
    // Sends pick up the change now, not a second later.
    state.senders.clear();
    Ok(Json(Deleted::new("domain", id)))
}

/// `POST /v1/domains/{id}/verify`: check the records now (asynchronously).
#[utoipa::path(post, path = "/v1/domains/{id}/verify", tag = "domains", params(("id" = String, Path, description = "The object's id")), responses((status = 202, description = "The records will be checked now", body = DomainResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn verify_domain(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<DomainResponse>)> {
    let (d, keys) = verify_now(&state, &principal.project_id, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DomainResponse::new(
            &d,
            &keys,
            &settings(&state),
            state.clock.now_ms(),
        )),
    ))
}

/// Asks for the domain's records to be checked now (a failed domain gets a new window): the
/// API's `verify` and the console's "Verify now".
pub(crate) async fn verify_now(
    state: &AppState,
    project_id: &str,
    id: &str,
) -> ApiResult<(DomainRecord, Vec<DkimKeyRecord>)> {
    let (mut d, keys) = state.store.get_domain(project_id, id).await?;
    let now = state.clock.now_ms();
    d.next_check_at = Some(now);
    if d.status == DomainStatus::Failed {
        // Asked again after giving up: a new verification window.
        d.status = DomainStatus::Pending;
        d.check_attempts = 0;
        d.updated_at = now;
    }
    state.store.update_domain(&d, None).await?;
    state.domains_wake.notify_waiters();
    // Sends pick up the change now, not a second later.
    state.senders.clear();
    Ok((d, keys))
}

/// `POST /v1/domains/{id}/dkim/rotate`: a new pending key; it signs once its record verifies.
#[utoipa::path(post, path = "/v1/domains/{id}/dkim/rotate", tag = "domains", params(("id" = String, Path, description = "The object's id")), request_body(content = Option<RotateRequest>, description = "Optional"), responses((status = 202, description = "A new selector to publish; the old key signs until it is seen", body = DomainResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn rotate_dkim(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<DomainResponse>)> {
    let req: RotateRequest = super::json::parse_optional(&body)?;
    let (d, keys) = rotate_key(
        &state,
        &principal.project_id,
        &id,
        req.dkim_selector,
        req.dkim_algorithm.as_deref(),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DomainResponse::new(
            &d,
            &keys,
            &settings(&state),
            state.clock.now_ms(),
        )),
    ))
}

/// A new pending DKIM key for the domain (a new selector to publish; the old key signs until
/// the new record is seen): the API's rotation and the console's.
pub(crate) async fn rotate_key(
    state: &AppState,
    project_id: &str,
    id: &str,
    selector: Option<String>,
    algorithm: Option<&str>,
) -> ApiResult<(DomainRecord, Vec<DkimKeyRecord>)> {
    let (mut d, keys) = state.store.get_domain(project_id, id).await?;
    if d.dkim_mode != "herald" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_state",
            "the relay signs for this domain (dkim: upstream)",
        ));
    }
    if keys.iter().any(|k| k.state == KeyState::Pending) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_state",
            "a rotation is already waiting for its DNS record",
        ));
    }
    let now = state.clock.now_ms();
    let mut errors = Vec::new();
    let selector = selector.unwrap_or_else(|| default_selector(now));
    if !valid_label(&selector) || keys.iter().any(|k| k.selector == selector) {
        errors.push(FieldError::new(
            "/dkim_selector",
            "validation_error",
            "a new selector: one DNS label not used before",
        ));
    }
    let algorithm = parse_algorithm(algorithm, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let key = new_key(state, &d.id, selector, algorithm, KeyState::Pending, now)?;
    state.store.insert_dkim_key(&key).await?;
    d.next_check_at = Some(now);
    state.store.update_domain(&d, None).await?;
    state.domains_wake.notify_waiters();
    let (d, keys) = state.store.get_domain(project_id, id).await?;
    state.senders.clear();
    Ok((d, keys))
}

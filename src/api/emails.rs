//! `/v1/emails`: send one, send a batch, read one with its recipients, its events, cancel.

mod request;
mod sender;

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::clock::format_ms;
use crate::domain::dkim;
use crate::domain::email::OutgoingEmail;
use crate::domain::mime::build_mime;
use crate::domain::status::{RecipientStatus, aggregate_status};
use crate::store::{
    EmailRecord, IdempotencyRecord, NewEmail, NewEvent, NewRecipient, RecipientRecord,
    SuppressionRecord, json_text,
};

use super::AppState;
use super::auth::{FullAccess, Principal};
use super::error::{ApiError, ApiResult, FieldError};
use super::idempotency::{IdempotencyKey, fingerprint, key_reused};
use super::json::{JsonBytes, from_value, parse, parse_object};
use super::responses::{
    BatchAccepted, BatchError, BatchItem, EmailAccepted, EmailCanceled, EmailResponse,
    EmailSummaryResponse, EventResponse, ListResponse, RecipientResponse,
};

pub use request::CreateEmailRequest;
pub use sender::SenderDecision;
use sender::Signing;

/// An email ready to commit, with what its 202 will say.
struct Prepared {
    row: NewEmail,
    summary: Summary,
}

/// What an accepted email's 202 says, but for its suppressed recipients: the transaction that
/// commits it finds those (see `Store::insert_emails`).
#[derive(Debug, Clone)]
struct Summary {
    id: String,
    message_id: String,
    created_at: i64,
    /// When it is to go, if that is later than its acceptance.
    scheduled_at: Option<i64>,
    /// Every recipient's status, unless suppressed.
    status: RecipientStatus,
    addresses: Vec<String>,
}

impl Summary {
    /// The 202's body, given the suppressions that applied to the email.
    fn accepted(&self, suppressed: &[SuppressionRecord]) -> EmailAccepted {
        let is_suppressed = |a: &str| suppressed.iter().any(|s| s.email == a);
        let overall = aggregate_status(self.addresses.iter().map(|a| {
            if is_suppressed(a) {
                RecipientStatus::Suppressed
            } else {
                self.status
            }
        }));
        EmailAccepted {
            object: "email",
            id: self.id.clone(),
            status: overall.as_str().to_owned(),
            scheduled_at: self.scheduled_at.map(format_ms),
            created_at: format_ms(self.created_at),
            message_id: self.message_id.clone(),
            suppressed: suppressed.iter().map(|s| s.email.clone()).collect(),
        }
    }
}

/// The suppressions that applied to the `i`th email of a request.
fn of_email(suppressed: &[Vec<SuppressionRecord>], i: usize) -> &[SuppressionRecord] {
    suppressed.get(i).map_or(&[], Vec::as_slice)
}

/// A message whose MIME the client wrote (SMTP submission): kept, not built.
pub(crate) struct GivenMime {
    pub mime: Vec<u8>,
    /// Its own `Message-ID`, if it had one.
    pub message_id: Option<String>,
    /// The SMTP client's address, recorded with the email.
    pub client: String,
}

fn prepare(
    state: &AppState,
    principal: &Principal,
    email: OutgoingEmail,
    signing: Option<&Signing>,
    now: i64,
    given: Option<GivenMime>,
) -> ApiResult<Prepared> {
    let id = Uuid::now_v7();
    let own_id = format!("<{id}@{}>", email.from.email.domain());
    let smtp_client = given.as_ref().map(|g| g.client.clone());
    let (message_id, mut mime) = match given {
        None => {
            let date = SystemTime::UNIX_EPOCH + Duration::from_millis(now.unsigned_abs());
            let mime = build_mime(&email, &own_id, date).map_err(|e| ApiError::internal(&e))?;
            (own_id, mime)
        }
        Some(GivenMime {
            mime,
            message_id: Some(m),
            ..
        }) => (m, mime),
        Some(GivenMime {
            mime,
            message_id: None,
            ..
        }) => {
            let mime = crate::domain::email::submitted::with_message_id(mime, &own_id);
            (own_id, mime)
        }
    };
    if let Some(k) = signing {
        mime = dkim::sign(&mime, &k.domain, &k.selector, k.algorithm, &k.pkcs8)
            .map_err(|e| ApiError::internal(&e))?;
    }
    let max = state.config.limits.max_message_bytes;
    if mime.len() > max {
        return Err(ApiError::payload_too_large(format!(
            "the built message is {} bytes; the limit is {max}",
            mime.len()
        )));
    }
    let start = email.scheduled_at.map_or(now, |s| s.max(now));
    let scheduled = email.scheduled_at.is_some_and(|s| s > now);
    let status = if scheduled {
        RecipientStatus::Scheduled
    } else {
        RecipientStatus::Queued
    };
    let max_age = i64::try_from(state.config.retry.max_age.as_millis()).unwrap_or(i64::MAX);
    let deadline = email.expires_at.map_or(start.saturating_add(max_age), |e| {
        e.min(start.saturating_add(max_age))
    });
    let event_type = crate::domain::event::EventType::for_status(status);
    let mut recipients = Vec::new();
    let mut events = Vec::new();
    for (position, (kind, m)) in email.recipients().into_iter().enumerate() {
        let rid = Uuid::now_v7().to_string();
        events.push(NewEvent::new(
            Some(&rid),
            Some(m.email.as_str()),
            event_type,
            crate::domain::event::EventData::Empty {},
            now,
        ));
        recipients.push(NewRecipient {
            id: rid,
            position: i64::try_from(position).unwrap_or(i64::MAX),
            address: m.email.to_string(),
            name: m.name.clone(),
            kind,
            status,
            next_attempt_at: start,
            deadline_at: deadline,
        });
    }
    let summary = Summary {
        id: id.to_string(),
        message_id: message_id.clone(),
        created_at: now,
        scheduled_at: email.scheduled_at.filter(|_| scheduled),
        status,
        addresses: recipients.iter().map(|r| r.address.clone()).collect(),
    };
    let mailbox_json = |list: &[crate::domain::address::Mailbox]| {
        Value::Array(
            list.iter()
                .map(|m| json!({"email": m.email.as_str(), "name": m.name}))
                .collect(),
        )
    };
    let row = NewEmail {
        id: id.to_string(),
        project_id: principal.project_id.clone(),
        api_key_id: Some(principal.key_id.clone()),
        message_id,
        stream: email.stream.clone(),
        from_email: email.from.email.to_string(),
        from_name: email.from.name.clone(),
        reply_to: json_text(&mailbox_json(&email.reply_to)),
        subject: email.subject.clone(),
        tags: json_text(&email.tags),
        metadata: json_text(&email.metadata),
        text_body: email.text.clone(),
        html_body: email.html.clone(),
        mime,
        created_at: now,
        scheduled_at: email.scheduled_at,
        expires_at: email.expires_at,
        smtp_client,
        recipients,
        events,
    };
    Ok(Prepared { row, summary })
}

/// Runs `work` under the request's idempotency key, if it has one: replays a stored
/// response, refuses a reused key or a twin in flight, and stores what `work` answers.
async fn idempotent<F, Fut>(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    locate: Locate,
    work: F,
) -> ApiResult<Response>
where
    F: FnOnce(Option<IdempotencyRecord>) -> Fut,
    Fut: std::future::Future<Output = ApiResult<(StatusCode, Value)>>,
{
    let key = IdempotencyKey::from_headers(headers)?;
    let answer = under_key(state, principal, key.as_ref(), path, body, work).await?;
    Ok(respond(
        answer.status,
        &answer.body,
        answer.replayed,
        locate,
    ))
}

/// What work done under an idempotency key answered: now, or the first time (`replayed`).
struct Answer {
    status: StatusCode,
    body: Value,
    replayed: bool,
}

/// The one implementation of `Idempotency-Key` for every way in (HTTP and SMTP): `path`
/// names the kind of request, `body` is what a retry must repeat exactly.
async fn under_key<F, Fut>(
    state: &AppState,
    principal: &Principal,
    key: Option<&IdempotencyKey>,
    path: &str,
    body: &[u8],
    work: F,
) -> ApiResult<Answer>
where
    F: FnOnce(Option<IdempotencyRecord>) -> Fut,
    Fut: std::future::Future<Output = ApiResult<(StatusCode, Value)>>,
{
    let fresh = |(status, body)| Answer {
        status,
        body,
        replayed: false,
    };
    let Some(key) = key else {
        return work(None).await.map(fresh);
    };
    let _guard = state.idempotency.enter(&principal.project_id, path, key)?;
    let now = state.clock.now_ms();
    let print = fingerprint(body);
    let replay = |stored: crate::store::StoredResponse| -> ApiResult<Answer> {
        if stored.fingerprint != print {
            return Err(key_reused());
        }
        let body: Value = serde_json::from_str(&stored.body).map_err(|e| ApiError::internal(&e))?;
        let status = StatusCode::from_u16(stored.status).map_err(|e| ApiError::internal(&e))?;
        Ok(Answer {
            status,
            body,
            replayed: true,
        })
    };
    let find = || {
        state
            .store
            .find_idempotent_response(&principal.project_id, "POST", path, key.as_str(), now)
    };
    if let Some(stored) = find().await? {
        return replay(stored);
    }
    let record = IdempotencyRecord {
        project_id: principal.project_id.clone(),
        method: "POST".into(),
        path: path.to_owned(),
        key: key.as_str().to_owned(),
        fingerprint: print.clone(),
        response_status: 0,
        response_body: String::new(),
        created_at: now,
        expires_at: now + super::idempotency::TTL_MS,
    };
    match work(Some(record)).await {
        Ok(answer) => Ok(fresh(answer)),
        // Another process committed the same key first: answer as it did.
        Err(e) if e.code == "conflict" => match find().await? {
            Some(stored) => replay(stored),
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Where an answer's `Location` points, read from its body (also a replayed one).
type Locate = fn(&Value) -> Option<String>;

/// A created email is at `/v1/emails/{id}`.
fn email_location(body: &Value) -> Option<String> {
    body.get("id")
        .and_then(Value::as_str)
        .map(|id| format!("/v1/emails/{id}"))
}

/// A batch has no one place.
fn nowhere(_: &Value) -> Option<String> {
    None
}

fn respond(status: StatusCode, body: &Value, replayed: bool, locate: Locate) -> Response {
    let mut resp = (status, Json(body)).into_response();
    if let Some(v) = locate(body).and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

/// Commits `rows` (with the idempotency record, if any); answers `status` with the body
/// `body` writes from the suppressions the commit found (the record keeps the same).
async fn commit<B>(
    state: &AppState,
    rows: Vec<NewEmail>,
    idem: Option<IdempotencyRecord>,
    status: StatusCode,
    body: B,
) -> ApiResult<(StatusCode, Value)>
where
    B: Fn(&[Vec<SuppressionRecord>]) -> Value + Clone + Send + Sync + 'static,
    // (The body is JSON here: an idempotent request keeps it as text, to replay.)
{
    let accepted = u64::try_from(rows.len()).unwrap_or(0);
    let suppressed = match idem {
        None => state.store.insert_emails(rows, None).await?,
        Some(mut record) => {
            record.response_status = i64::from(status.as_u16());
            let kept = body.clone();
            let respond = Box::new(move |s: &[Vec<SuppressionRecord>]| json_text(&kept(s)));
            state
                .store
                .insert_emails_responding(rows, record, respond)
                .await?
        }
    };
    state
        .metrics
        .emails_accepted
        .fetch_add(accepted, std::sync::atomic::Ordering::Relaxed);
    state.wake.notify_waiters();
    Ok((status, body(&suppressed)))
}

fn validation_context(
    state: &AppState,
    now: i64,
) -> (crate::domain::email::Limits, Vec<String>, i64) {
    (
        state.config.limits.email_limits(),
        state.config.streams.clone(),
        now,
    )
}

/// `POST /v1/emails`: validate, build the MIME message, commit, answer 202.
#[utoipa::path(post, path = "/v1/emails", tag = "emails", params(("Idempotency-Key" = Option<String>, Header, description = "Replays answer with the first response for 24 h")), request_body = CreateEmailRequest, responses((status = 202, description = "Committed and queued", body = EmailAccepted), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn create_email(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> ApiResult<Response> {
    let req: CreateEmailRequest = parse_object(&body)?;
    let now = state.clock.now_ms();
    let (limits, streams, now) = validation_context(&state, now);
    let ctx = request::Context {
        limits: &limits,
        streams: &streams,
        now_ms: now,
    };
    let email = request::validate(req, &ctx, "").map_err(ApiError::validation)?;
    let signing = sender::resolve(&state, &principal, email.from.email.domain(), "/from").await?;
    let Prepared { row, summary } =
        prepare(&state, &principal, email, signing.as_deref(), now, None)?;
    let body_of = move |s: &[Vec<SuppressionRecord>]| to_json(&summary.accepted(of_email(s, 0)));
    idempotent(
        &state,
        &principal,
        &headers,
        "/v1/emails",
        &body,
        email_location,
        |idem| commit(&state, vec![row], idem, StatusCode::ACCEPTED, body_of),
    )
    .await
}

/// `POST /v1/emails/batch`: up to 100 emails, strict (all or nothing) or permissive.
#[utoipa::path(post, path = "/v1/emails/batch", tag = "emails", params(("Idempotency-Key" = Option<String>, Header, description = "Replays answer with the first response for 24 h"), ("Batch-Validation" = Option<String>, Header, description = "strict (default) or permissive")), request_body = Vec<CreateEmailRequest>, responses((status = 202, description = "Committed and queued", body = BatchAccepted), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn create_batch(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> ApiResult<Response> {
    let strict = match headers
        .get("batch-validation")
        .map(|v| v.to_str().unwrap_or(""))
    {
        None | Some("strict") => true,
        Some("permissive") => false,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_header",
                "Batch-Validation must be strict or permissive",
            ));
        }
    };
    let items: Vec<Value> = parse(&body, "")?;
    let max = state.config.limits.max_batch_size;
    if items.len() > max {
        return Err(ApiError::validation(vec![FieldError::new(
            "",
            "batch_too_large",
            format!("{} emails; a batch holds at most {max}", items.len()),
        )]));
    }
    if items.is_empty() {
        return Err(ApiError::validation(vec![FieldError::new(
            "",
            "validation_error",
            "the batch is empty",
        )]));
    }
    let now = state.clock.now_ms();
    let (limits, streams, now) = validation_context(&state, now);
    let ctx = request::Context {
        limits: &limits,
        streams: &streams,
        now_ms: now,
    };
    let mut prepared = Vec::new();
    let mut errors: Vec<(usize, FieldError)> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let prefix = format!("/{i}");
        let validated = from_value::<CreateEmailRequest>(item, &prefix)
            .and_then(|req| request::validate(req, &ctx, &prefix).map_err(ApiError::validation));
        let outcome = match validated {
            Ok(email) => {
                let domain = email.from.email.domain().to_owned();
                let pointer = format!("{prefix}/from");
                sender::resolve(&state, &principal, &domain, &pointer)
                    .await
                    .and_then(|signing| {
                        prepare(&state, &principal, email, signing.as_deref(), now, None)
                    })
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(p) => prepared.push((i, p)),
            Err(e) if e.status.is_client_error() => {
                let fields = if e.errors.is_empty() {
                    vec![FieldError::new(prefix.clone(), e.code, e.detail.clone())]
                } else {
                    e.errors
                };
                errors.extend(fields.into_iter().map(|f| (i, f)));
            }
            Err(e) => return Err(e),
        }
    }
    if strict && !errors.is_empty() {
        return Err(ApiError::validation(
            errors.into_iter().map(|(_, f)| f).collect(),
        ));
    }
    if prepared.is_empty() {
        return Err(ApiError::validation(
            errors.into_iter().map(|(_, f)| f).collect(),
        ));
    }
    let error_items: Vec<BatchError> = errors
        .into_iter()
        .map(|(index, f)| BatchError {
            index,
            code: f.code,
            detail: f.detail,
            pointer: f.pointer,
        })
        .collect();
    let (rows, summaries): (Vec<NewEmail>, Vec<(usize, Summary)>) = prepared
        .into_iter()
        .map(|(i, p)| (p.row, (i, p.summary)))
        .unzip();
    let body_of = move |s: &[Vec<SuppressionRecord>]| {
        let data = summaries
            .iter()
            .enumerate()
            .map(|(k, (index, summary))| {
                let a = summary.accepted(of_email(s, k));
                BatchItem {
                    index: *index,
                    id: a.id,
                    status: a.status,
                    message_id: a.message_id,
                }
            })
            .collect();
        to_json(&BatchAccepted {
            object: "list",
            data,
            errors: error_items.clone(),
        })
    };
    idempotent(
        &state,
        &principal,
        &headers,
        "/v1/emails/batch",
        &body,
        nowhere,
        |idem| commit(&state, rows, idem, StatusCode::ACCEPTED, body_of),
    )
    .await
}

/// `GET /v1/emails`'s query: the named filters, and `metadata[<key>]=<value>` ones (every
/// value arrives as text: a flattened map leaves serde no types to go by).
#[derive(Debug, Deserialize)]
pub struct EmailSearch {
    status: Option<String>,
    recipient: Option<String>,
    from: Option<String>,
    tag: Option<String>,
    stream: Option<String>,
    subject: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    after: Option<String>,
    before: Option<String>,
    limit: Option<String>,
    #[serde(flatten)]
    other: std::collections::BTreeMap<String, String>,
}

impl EmailSearch {
    /// The store's filter and the page size, or what is wrong with the query.
    pub(crate) fn filter(self) -> ApiResult<(crate::store::EmailFilter, i64)> {
        let bad = |m: String| ApiError::bad_request("invalid_query", m);
        let time = |v: Option<String>| {
            v.map(|v| {
                chrono::DateTime::parse_from_rfc3339(&v)
                    .map(|t| t.timestamp_millis())
                    .map_err(|_| bad(format!("'{v}' is not an RFC 3339 time")))
            })
            .transpose()
        };
        // An address as Herald stores it (lower-case domain, ASCII form), else as given.
        let address = |v: Option<String>| {
            v.map(|v| {
                crate::domain::address::EmailAddress::parse(&v)
                    .map(|a| a.to_string())
                    .unwrap_or(v)
            })
        };
        if let Some(v) = &self.status {
            RecipientStatus::parse(v).ok_or_else(|| bad(format!("'{v}' is not a status")))?;
        }
        let mut metadata = Vec::new();
        for (k, v) in self.other {
            match k
                .strip_prefix("metadata[")
                .and_then(|r| r.strip_suffix(']'))
            {
                Some(key) if !key.is_empty() => metadata.push((key.to_owned(), v)),
                _ => return Err(bad(format!("unknown query parameter '{k}'"))),
            }
        }
        let limit = match self.limit {
            None => None,
            Some(v) => Some(
                v.parse()
                    .map_err(|_| bad("limit must be a number".into()))?,
            ),
        };
        let subject: Vec<String> = self
            .subject
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if subject.len() > 8 || subject.iter().any(|w| w.chars().count() > 100) {
            return Err(bad(
                "subject: at most 8 words of at most 100 characters".into()
            ));
        }
        let f = crate::store::EmailFilter {
            subject,
            status: self.status,
            recipient: address(self.recipient),
            from: address(self.from),
            tag: self.tag,
            stream: self.stream,
            created_after: time(self.created_after)?,
            created_before: time(self.created_before)?,
            after: super::pagination::cursor("after", self.after)?,
            before: super::pagination::cursor("before", self.before)?,
            metadata,
        };
        if f.after.is_some() && f.before.is_some() {
            return Err(bad("after and before cannot be used together".into()));
        }
        Ok((f, super::pagination::page_size(limit, 20, 100)?))
    }
}

/// `GET /v1/emails`: search the project's emails, newest first, with a cursor
/// (`after`/`before` an email id) and the filters `status` (any recipient in it), `recipient`,
/// `from`, `tag`, `stream`, `subject` (words), `metadata[<key>]=<value>`, `created_after`,
/// `created_before`.
#[utoipa::path(get, path = "/v1/emails", tag = "emails", params(("status" = Option<String>, Query, description = "Emails with a recipient in this status"), ("recipient" = Option<String>, Query, description = "Emails to this address"), ("from" = Option<String>, Query, description = "Emails from this address"), ("tag" = Option<String>, Query, description = "Emails with this tag"), ("stream" = Option<String>, Query, description = "Emails of this stream"), ("subject" = Option<String>, Query, description = "Words that must all be in the subject, in any case; reads the newest 20,000 emails the other filters match (created_before reads older ones)"), ("created_after" = Option<String>, Query, description = "RFC 3339"), ("created_before" = Option<String>, Query, description = "RFC 3339"), ("after" = Option<String>, Query, description = "The next page: emails older than this id"), ("before" = Option<String>, Query, description = "The previous page: emails newer than this id"), ("limit" = Option<i64>, Query, description = "1 to 100 (default 20)")), responses((status = 200, description = "Newest first; `metadata[<key>]=<value>` filters too", body = ListResponse<EmailSummaryResponse>), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn list_emails(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    query: Result<Query<EmailSearch>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ListResponse<EmailSummaryResponse>>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (f, limit) = q.filter()?;
    let mut rows = state
        .store
        .search_emails(&principal.project_id, &f, limit + 1)
        .await?
        .rows;
    let has_more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    if has_more {
        if f.before.is_some() {
            rows.remove(0);
        } else {
            rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
    }
    let data = rows
        .iter()
        .map(|(e, statuses)| {
            let status = aggregate_status(statuses.iter().copied());
            EmailSummaryResponse::new(e, status.as_str(), statuses.len())
        })
        .collect();
    Ok(Json(ListResponse::new(data, has_more)))
}

/// One of the project's emails, if this key may see it (404 otherwise, so a sending key
/// cannot learn what another key sent).
async fn load_email(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<(EmailRecord, Vec<RecipientRecord>)> {
    let (email, recipients) = state.store.get_email(&principal.project_id, id).await?;
    if !principal.may_access_email_of(email.api_key_id.as_deref()) {
        return Err(ApiError::not_found());
    }
    Ok((email, recipients))
}

/// `GET /v1/emails/{id}`.
#[utoipa::path(get, path = "/v1/emails/{id}", tag = "emails", params(("id" = String, Path, description = "The object's id")), responses((status = 200, description = "The email and its recipients", body = EmailResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn get_email(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<EmailResponse>> {
    let (email, recipients) = load_email(&state, &principal, &id).await?;
    let statuses = recipients.iter().map(|r| r.status);
    let status = aggregate_status(statuses);
    Ok(Json(EmailResponse::new(
        &email,
        &recipients,
        status.as_str(),
    )))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    after: Option<String>,
}

/// `GET /v1/emails/{id}/events`: the email's timeline, oldest first.
#[utoipa::path(get, path = "/v1/emails/{id}/events", tag = "emails", params(("id" = String, Path, description = "The object's id"), EventsQuery), responses((status = 200, description = "The email's timeline, oldest first", body = ListResponse<EventResponse>), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn list_email_events(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ListResponse<EventResponse>>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = super::pagination::page_size(q.limit, 100, 1000)?;
    // 404 for another project's email, not an empty list.
    state.store.get_email(&principal.project_id, &id).await?;
    let mut events = state
        .store
        .list_email_events(
            &principal.project_id,
            &id,
            super::pagination::cursor("after", q.after)?.as_deref(),
            limit + 1,
        )
        .await?;
    let has_more = super::pagination::trim_page(&mut events, limit);
    let data = events.iter().map(EventResponse::from).collect();
    Ok(Json(ListResponse::new(data, has_more)))
}

/// `POST /v1/emails/{id}/cancel`: cancels recipients not yet handed to SMTP.
#[utoipa::path(post, path = "/v1/emails/{id}/cancel", tag = "emails", params(("id" = String, Path, description = "The object's id")), responses((status = 200, description = "Recipients not yet handed to SMTP are canceled", body = EmailCanceled), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn cancel_email(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<EmailCanceled>> {
    load_email(&state, &principal, &id).await?;
    let canceled = state
        .store
        .cancel_email(&principal.project_id, &id, state.clock.now_ms())
        .await?;
    state.events_wake.notify_waiters();
    if canceled == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_state",
            "nothing to cancel: every recipient was already handed to SMTP or has a final status",
        ));
    }
    let (_, recipients) = state.store.get_email(&principal.project_id, &id).await?;
    let status = aggregate_status(recipients.iter().map(|r| r.status));
    Ok(Json(EmailCanceled {
        object: "email",
        id,
        status: status.as_str().to_owned(),
        canceled,
        recipients: recipients.iter().map(RecipientResponse::from).collect(),
    }))
}

/// A typed body as JSON (what an idempotent request keeps to replay).
fn to_json(body: &impl serde::Serialize) -> Value {
    serde_json::to_value(body).unwrap_or(Value::Null)
}

/// What a message submitted over SMTP became: its email's id, and whether a message with
/// the same `Idempotency-Key` had already made it (`replayed`: nothing new was queued).
pub(crate) struct SubmittedEmail {
    pub id: String,
    pub replayed: bool,
}

/// Accepts a message submitted over SMTP by `principal`, for the envelope's recipients: the
/// same rules, sender policy, DKIM signing, idempotency, commit and wake-up as
/// `POST /v1/emails`, with the client's MIME kept. `Ok` once committed.
pub(crate) async fn accept_submitted(
    state: &AppState,
    principal: &Principal,
    client: std::net::IpAddr,
    envelope: &[String],
    raw: &[u8],
) -> Result<SubmittedEmail, ApiError> {
    if let Some(e) = super::health::unavailable(state, true) {
        return Err(e);
    }
    let now = state.clock.now_ms();
    let date = chrono::DateTime::from_timestamp_millis(now)
        .unwrap_or_default()
        .to_rfc2822();
    let submitted = crate::domain::email::submitted::read(raw, envelope, &date)
        .map_err(|e| ApiError::validation(vec![FieldError::new(e.pointer, e.code, e.detail)]))?;
    let key = submitted
        .idempotency_key
        .as_deref()
        .map(|k| IdempotencyKey::parse(k).ok_or_else(super::idempotency::malformed))
        .transpose()?;
    // A retry must repeat the message and its envelope exactly.
    let mut print = envelope.join("\n").into_bytes();
    print.push(0);
    print.extend_from_slice(raw);
    let answer = under_key(state, principal, key.as_ref(), SMTP_PATH, &print, |idem| {
        commit_submitted(state, principal, client, submitted, now, idem)
    })
    .await?;
    let id = answer
        .body
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::internal(&"a stored SMTP answer without an id"))?;
    Ok(SubmittedEmail {
        id: id.to_owned(),
        replayed: answer.replayed,
    })
}

/// Where `Idempotency-Key`s of SMTP submissions are kept: apart from the API's, since the
/// same key over HTTP names a JSON body, not a message.
const SMTP_PATH: &str = "smtp:submission";

async fn commit_submitted(
    state: &AppState,
    principal: &Principal,
    client: std::net::IpAddr,
    submitted: crate::domain::email::submitted::Submitted,
    now: i64,
    idem: Option<IdempotencyRecord>,
) -> ApiResult<(StatusCode, Value)> {
    let (limits, streams, now) = validation_context(state, now);
    let ctx = request::Context {
        limits: &limits,
        streams: &streams,
        now_ms: now,
    };
    let email = request::check(submitted.draft, &ctx, "").map_err(ApiError::validation)?;
    let signing = sender::resolve(state, principal, email.from.email.domain(), "/from").await?;
    let given = GivenMime {
        mime: submitted.mime,
        message_id: submitted.message_id,
        client: client.to_string(),
    };
    let Prepared { row, summary } = prepare(
        state,
        principal,
        email,
        signing.as_deref(),
        now,
        Some(given),
    )?;
    let body = serde_json::json!({ "id": summary.id });
    commit(state, vec![row], idem, StatusCode::ACCEPTED, move |_| {
        body.clone()
    })
    .await
}

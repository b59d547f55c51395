//! The API's one error type, rendered as RFC 9457 problem details.
//!
//! Policy: every 4xx says what was wrong with a stable snake_case `code` (and, for field
//! problems, a JSON pointer per field, RFC 6901); a 5xx says nothing about the inside — its
//! cause is logged once, here, with the request id the client also sees.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

use super::request_id;

/// One problem with one field of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = FieldProblem)]
pub struct FieldError {
    /// A JSON pointer into the request body, such as `/to/1` or `/3/attachments/0/content`.
    pub pointer: String,
    pub code: &'static str,
    pub detail: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            code,
            detail: detail.into(),
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 422 with every field error. When all share one code, that code is the problem's code.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let code = match errors.first() {
            Some(first) if errors.iter().all(|e| e.code == first.code) => first.code,
            _ => "validation_error",
        };
        let detail = match errors.len() {
            1 => errors[0].detail.clone(),
            n => format!("{n} fields are invalid"),
        };
        Self {
            errors,
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
        }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn forbidden(detail: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "insufficient_permission", detail)
    }

    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", detail)
    }

    /// 503 with `Retry-After: 1`: an outage, which a retry shortly may get past.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut err = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            detail,
        );
        err.retry_after = Some(1);
        err
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// A 500 whose cause is logged, never shown.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(request_id = %request_id::current(), error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; it has been logged",
        )
    }

    fn title(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "Payload too large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported media type",
            StatusCode::URI_TOO_LONG => "URI too long",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "Request header fields too large",
            StatusCode::REQUEST_TIMEOUT => "Request timeout",
            StatusCode::UNPROCESSABLE_ENTITY => "Request validation failed",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            StatusCode::SERVICE_UNAVAILABLE => "Service unavailable",
            _ => "Internal server error",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::not_found(),
            StoreError::Conflict => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "the resource changed meanwhile; retry",
            ),
            StoreError::Unavailable(msg) => {
                tracing::error!(request_id = %request_id::current(), error = %msg, "database unavailable");
                Self::unavailable("the database is unavailable; retry shortly")
            }
            other => Self::internal(&other),
        }
    }
}

/// An RFC 9457 problem: every error Herald answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// `https://herald.dev/errors/<code>`.
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    /// The request path.
    instance: String,
    /// Stable, snake_case: what clients branch on.
    code: &'a str,
    /// Also in the `X-Request-Id` header.
    request_id: String,
    /// One entry per field at fault, with a JSON pointer into the request body.
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    #[schema(value_type = Option<Vec<FieldError>>)]
    errors: &'a [FieldError],
}

impl ApiError {
    /// The problem document, as bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let body = Problem {
            kind: format!("https://herald.dev/errors/{}", self.code),
            title: self.title(),
            status: self.status.as_u16(),
            detail: &self.detail,
            instance: request_id::current_path(),
            code: self.code,
            request_id: request_id::current(),
            errors: &self.errors,
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let json = self.to_json();
        let mut resp = (self.status, json).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

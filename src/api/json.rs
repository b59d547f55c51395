//! The JSON body extractor: our errors, not axum's.
//!
//! 415 when the body is not declared as JSON, 413 past the route's size limit, 400 when the
//! bytes are not JSON, 422 with a JSON pointer when they are JSON of the wrong shape (an
//! unknown field gets its own code, `unknown_field`, so a typo never sends an empty mail).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::{ApiError, FieldError};

/// A request body parsed as `T`.
pub struct JsonBody<T>(pub T);

/// The raw bytes of a JSON body (for fingerprinting) with its parsed value.
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large("the request body is larger than this endpoint accepts")
            } else {
                ApiError::bad_request("invalid_body", "the request body could not be read")
            }
        })?;
        refuse_nul(&bytes)?;
        Ok(Self(bytes))
    }
}

/// Refuses a body with a NUL character in any string (`\u0000`): Postgres cannot store it in
/// text, and SQLite would cut C strings at it, so it is refused here, on both backends alike,
/// before it could fail the shared transaction of other requests. The escape is looked for in
/// the bytes (a raw NUL is not valid JSON); only a body that has it is parsed to say where.
fn refuse_nul(bytes: &[u8]) -> Result<(), ApiError> {
    if memchr::memmem::find(bytes, b"\\u0000").is_none() {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(()); // not JSON: the parse that follows says so
    };
    match nul_pointer(&value, String::new()) {
        None => Ok(()),
        Some(pointer) => Err(ApiError::validation(vec![FieldError::new(
            pointer,
            "invalid_character",
            "text may not contain the NUL character (\\u0000)",
        )])),
    }
}

/// The pointer of the first string (or key) with a NUL in it.
fn nul_pointer(v: &serde_json::Value, at: String) -> Option<String> {
    match v {
        serde_json::Value::String(s) => s.contains('\0').then_some(at),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_pointer(item, format!("{at}/{i}"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, item)| {
            let here = format!("{at}/{}", escape(k));
            if k.contains('\0') {
                Some(here)
            } else {
                nul_pointer(item, here)
            }
        }),
        _ => None,
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse_object(&bytes).map(JsonBody)
    }
}

/// Parses a body that must be a JSON object as `T`. (Serde would read a struct from an array
/// too, `[null, null]` as two absent fields: that is refused here.)
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => parse(bytes, ""),
        Some(_) => {
            // Still report bad JSON as bad JSON.
            serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(|e| syntax_error(&e))?;
            Err(not_an_object(""))
        }
    }
}

fn not_an_object(pointer: &str) -> ApiError {
    ApiError::validation(vec![FieldError::new(
        pointer,
        "validation_error",
        "expected a JSON object",
    )])
}

/// Parses `bytes` as `T`; field errors get pointers under `prefix` (such as `/3` in a batch).
pub fn parse<T: DeserializeOwned>(bytes: &[u8], prefix: &str) -> Result<T, ApiError> {
    // Most bodies are valid: parsed plainly first. Tracking the path (for the error's pointer)
    // costs on every field, so only a body that fails is parsed again with it.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = match parsed {
        Ok(v) => v,
        Err(e) => return Err(shape_error(&e, prefix)),
    };
    de.end().map_err(|e| syntax_error(&e))?;
    Ok(value)
}

/// Parses a body that may be left out entirely (empty or blank: `T::default()`).
pub fn parse_optional<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_object(bytes)
    }
}

/// Parses an already-decoded JSON value as `T` (a batch item).
pub fn from_value<T: DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(not_an_object(prefix));
    }
    serde_path_to_error::deserialize(value).map_err(|e| shape_error(&e, prefix))
}

fn syntax_error(e: &serde_json::Error) -> ApiError {
    ApiError::bad_request(
        "invalid_json",
        format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ),
    )
}

fn shape_error(e: &serde_path_to_error::Error<serde_json::Error>, prefix: &str) -> ApiError {
    let inner = e.inner();
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return syntax_error(inner);
    }
    let message = inner.to_string();
    // serde_json appends " at line L column C"; the pointer says where, so drop it.
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(m, _)| m)
        .to_owned();
    // For an unknown field the path already ends with the field's name.
    let pointer = format!("{prefix}{}", pointer_of(e.path()));
    let code = if message.starts_with("unknown field `") {
        "unknown_field"
    } else if message.starts_with("missing field") {
        "missing_required_field"
    } else {
        "validation_error"
    };
    ApiError::validation(vec![FieldError::new(pointer, code, message)])
}

/// RFC 6901 pointer of a serde path (`attachments[0].content` → `/attachments/0/content`).
fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => out.push_str(&format!("/{}", escape(key))),
            Segment::Enum { variant } => out.push_str(&format!("/{}", escape(variant))),
            Segment::Unknown => {}
        }
    }
    out
}

pub use crate::domain::email::draft::escape;

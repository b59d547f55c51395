//! `Idempotency-Key`, as API.md specifies.
//!
//! Two mechanisms, each for what it does best:
//! - The stored response is written in the same transaction as the emails, under a unique
//!   key `(project, method, path, key)`: a replay gets exactly what the first request got,
//!   even across processes (a concurrent duplicate on another process waits on the unique
//!   index and then replays).
//! - A request whose twin is still being processed in this process gets 409 with
//!   `Retry-After`, from an in-memory set. Being in memory, it can never be left behind by
//!   a crash to poison the key.
//!
//! Only 2xx outcomes are stored; a failed request releases the key.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// How long a key reserves its response (API.md: 24 hours).
pub const TTL_MS: i64 = 24 * 3600 * 1000;

/// A well-formed key: 1 to 256 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Option<Self> {
        (!s.is_empty() && s.len() <= 256 && s.bytes().all(|b| (0x20..=0x7e).contains(&b)))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key from the request headers, if any; 400 if it is malformed.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let Some(raw) = headers.get("idempotency-key") else {
            return Ok(None);
        };
        raw.to_str()
            .ok()
            .and_then(Self::parse)
            .map(Some)
            .ok_or_else(malformed)
    }
}

/// 400 for a key that is not 1 to 256 printable ASCII characters.
pub fn malformed() -> ApiError {
    ApiError::bad_request(
        "invalid_idempotency_key",
        "Idempotency-Key must be 1 to 256 printable ASCII characters",
    )
}

/// SHA-256 of the raw request body.
pub fn fingerprint(body: &[u8]) -> Vec<u8> {
    Sha256::digest(body).to_vec()
}

type Slot = (String, String, String);

/// Keys of requests being processed in this process.
#[derive(Debug, Default, Clone)]
pub struct InFlight(Arc<Mutex<HashSet<Slot>>>);

/// Holds a key while its request runs; dropping it releases the key.
pub struct InFlightGuard {
    set: InFlight,
    slot: Slot,
}

impl InFlight {
    /// Takes the slot, or answers 409 if a request with the same key is in flight.
    pub fn enter(
        &self,
        project_id: &str,
        path: &str,
        key: &IdempotencyKey,
    ) -> Result<InFlightGuard, ApiError> {
        let slot = (project_id.to_owned(), path.to_owned(), key.0.clone());
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !set.insert(slot.clone()) {
            let mut err = ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_request_in_progress",
                "a request with this Idempotency-Key is still being processed",
            );
            err.retry_after = Some(1);
            return Err(err);
        }
        Ok(InFlightGuard {
            set: self.clone(),
            slot,
        })
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut set = self.set.0.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&self.slot);
    }
}

pub fn key_reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request body",
    )
}

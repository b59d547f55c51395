//! Per-key rate limits: a token bucket per API key (in this process), `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` on every authenticated response, and 429
//! `rate_limit_exceeded` with `Retry-After` when the bucket is empty. And [`FailureLimiter`]:
//! failed authentications per client address, so that guessing keys costs the database
//! nothing past a burst.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::{HeaderValue, StatusCode};

use super::error::ApiError;

/// What one request learned about its key's bucket, for the response headers.
#[derive(Debug, Clone, Copy)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset: u64,
}

tokio::task_local! {
    pub(super) static CURRENT: Cell<Option<RateInfo>>;
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets by key id.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Takes one token for `key_id`; `per_second` refills up to `burst`. `per_second == 0`
    /// turns limits off.
    pub fn check(&self, key_id: &str, per_second: f64, burst: u32) -> Result<(), ApiError> {
        if per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let burst_f = f64::from(burst.max(1));
        let (allowed, tokens) = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            let b = buckets.entry(key_id.to_owned()).or_insert(Bucket {
                tokens: burst_f,
                last: now,
            });
            b.tokens =
                (b.tokens + now.duration_since(b.last).as_secs_f64() * per_second).min(burst_f);
            b.last = now;
            let allowed = b.tokens >= 1.0;
            if allowed {
                b.tokens -= 1.0;
            }
            (allowed, b.tokens)
        };
        let info = RateInfo {
            limit: burst.max(1),
            remaining: tokens.floor().max(0.0) as u32,
            reset: ((burst_f - tokens) / per_second).ceil().max(0.0) as u64,
        };
        let _ = CURRENT.try_with(|c| c.set(Some(info)));
        if allowed {
            return Ok(());
        }
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            format!("this key may make {per_second} requests per second (bursts of {burst})"),
        );
        err.retry_after = Some(((1.0 - tokens) / per_second).ceil().max(1.0) as u64);
        Err(err)
    }
}

/// Adds the `RateLimit-*` headers a request's bucket check left behind.
pub(super) fn add_headers(resp: &mut axum::response::Response, info: Option<RateInfo>) {
    if let Some(i) = info {
        let h = resp.headers_mut();
        h.insert("ratelimit-limit", HeaderValue::from(i.limit));
        h.insert("ratelimit-remaining", HeaderValue::from(i.remaining));
        h.insert("ratelimit-reset", HeaderValue::from(i.reset));
    }
}

/// Failed attempts by key (a client address, an account): a token bucket each (`burst`
/// failures, then `per_second`), checked before the attempt costs anything, so a guessing
/// client cannot make every request a database read or a password hash.
pub struct FailureLimiter<K = std::net::IpAddr> {
    buckets: Mutex<HashMap<K, Bucket>>,
    burst: f64,
    per_second: f64,
}

impl Default for FailureLimiter<std::net::IpAddr> {
    /// The API's: 20 failed keys, then 5 a second, per address.
    fn default() -> Self {
        Self::new(20.0, 5.0)
    }
}

impl<K: std::hash::Hash + Eq + Clone> FailureLimiter<K> {
    /// Keys tracked at once; past it the (stale, at these rates) table starts over.
    const MAX_KEYS: usize = 100_000;

    pub fn new(burst: f64, per_second: f64) -> Self {
        Self {
            buckets: Mutex::default(),
            burst,
            per_second,
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        b.tokens =
            (b.tokens + now.duration_since(b.last).as_secs_f64() * self.per_second).min(self.burst);
        b.last = now;
    }

    /// `Some(seconds to wait)` when this key has failed too often lately.
    pub fn wait(&self, key: &K) -> Option<u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.get_mut(key)?;
        self.refill(b, Instant::now());
        if b.tokens >= 1.0 {
            return None;
        }
        Some(((1.0 - b.tokens) / self.per_second).ceil().max(1.0) as u64)
    }

    /// Counts one failure of this key.
    pub fn fail(&self, key: &K) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= Self::MAX_KEYS && !buckets.contains_key(key) {
            buckets.clear();
        }
        let now = Instant::now();
        let b = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        self.refill(b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }
}

impl FailureLimiter<std::net::IpAddr> {
    /// 429 when this address has failed too often lately.
    pub fn check(&self, ip: std::net::IpAddr) -> Result<(), ApiError> {
        let Some(wait) = self.wait(&ip) else {
            return Ok(());
        };
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failed_authentications",
            "too many requests with keys that are not valid from this address; wait and check the key",
        );
        err.retry_after = Some(wait);
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_refuse() {
        let r = RateLimiter::default();
        for _ in 0..5 {
            assert!(r.check("k", 1.0, 5).is_ok());
        }
        let err = r.check("k", 1.0, 5).expect_err("empty");
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.retry_after, Some(1));
        assert!(r.check("other", 1.0, 5).is_ok(), "buckets are per key");
        assert!(r.check("k", 0.0, 5).is_ok(), "0 turns limits off");
    }
}

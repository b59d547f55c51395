//! Bearer API keys. The extractor [`Principal`] authenticates the request and names the
//! project every query of the handler is scoped to.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use crate::domain::api_key::{ApiKeyToken, Permission};

use super::AppState;
use super::error::ApiError;

/// Who is calling: a live key and the project it belongs to.
#[derive(Debug, Clone)]
pub struct Principal {
    pub project_id: String,
    pub key_id: String,
    pub permission: Permission,
    /// Sending domains this key may use; `None`: any.
    pub allowed_domains: Option<Vec<String>>,
}

impl Principal {
    /// Refuses (403) a key without full access (see [`FullAccess`]).
    fn require_full_access(&self) -> Result<(), ApiError> {
        match self.permission {
            Permission::FullAccess => Ok(()),
            Permission::SendingAccess => Err(ApiError::forbidden(
                "this endpoint needs a full_access key; this key has sending_access",
            )),
        }
    }

    /// Full-access keys see everything in the project; sending keys only what they created.
    pub fn may_access_email_of(&self, creator_key_id: Option<&str>) -> bool {
        self.permission == Permission::FullAccess || creator_key_id == Some(self.key_id.as_str())
    }
}

/// A caller whose key has full access: the extractor answers 403 for a sending-only key, so a
/// handler that takes it cannot forget the check.
#[derive(Debug, Clone)]
pub struct FullAccess(pub Principal);

impl FromRequestParts<AppState> for FullAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        principal.require_full_access()?;
        Ok(Self(principal))
    }
}

fn unauthorized(code: &'static str, detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, detail)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(unauthorized(
                "missing_api_key",
                "send an API key as Authorization: Bearer hk_…",
            ));
        };
        // The client's address, when the server knows it (not in handler tests).
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .unwrap_or("");
        let principal = principal_for(state, token, peer).await?;
        // Every request counts against its key's rate.
        within_rate(state, &principal)?;
        Ok(principal)
    }
}

/// One request (or one message submitted over SMTP) against the key's rate: 429 past it.
pub fn within_rate(state: &AppState, principal: &Principal) -> Result<(), ApiError> {
    let (rate, burst) = state.config.limits.rate_share();
    state.rate_limiter.check(&principal.key_id, rate, burst)
}

/// The principal of an API key given as text (`Authorization: Bearer …`, or an SMTP
/// submission's password): parsed, looked up (failures counted per client address, and held
/// back past a burst before any lookup), compared in constant time, and live.
/// The one check of an API key, for every way into Herald (its rate is [`within_rate`]'s, per
/// request or message, not per sign-in).
pub async fn principal_for(
    state: &AppState,
    text: &str,
    peer: Option<std::net::IpAddr>,
) -> Result<Principal, ApiError> {
    let invalid = || {
        if let Some(ip) = peer {
            state.auth_failures.fail(&ip);
        }
        unauthorized("invalid_api_key", "the API key is not valid")
    };
    let token = ApiKeyToken::parse(text.trim()).ok_or_else(invalid)?;
    let prefix = token.prefix();
    let key = match state.api_keys.get(&prefix) {
        Some(key) => key,
        None => {
            // Only what would read the database is held back: a cached key costs nothing.
            if let Some(ip) = peer {
                state.auth_failures.check(ip)?;
            }
            state.api_key(&prefix).await?.ok_or_else(invalid)?
        }
    };
    let now = state.clock.now_ms();
    // The hash is compared even for revoked keys, so timing does not tell them apart.
    let matches = token.matches(&key.secret_hash);
    let live = key.revoked_at.is_none() && key.expires_at.is_none_or(|e| e > now);
    if !(matches && live) {
        return Err(invalid());
    }
    let permission = Permission::parse(&key.permission).ok_or_else(invalid)?;
    state.note_key_use(&key.id, now).await;
    Ok(Principal {
        project_id: key.project_id,
        key_id: key.id,
        permission,
        allowed_domains: key.allowed_domains,
    })
}

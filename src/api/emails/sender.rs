//! Who may send from which domain, and with which DKIM key: decided once per domain per
//! request.

use crate::domain::states::{DomainStatus, KeyState};
use std::sync::Arc;

use axum::http::StatusCode;
use base64::Engine;

use crate::domain::dkim::DkimAlgorithm;

use super::super::AppState;
use super::super::auth::Principal;
use super::super::error::{ApiError, ApiResult, FieldError};

/// The key that signs mail from one domain.
pub struct Signing {
    pub domain: String,
    pub selector: String,
    pub algorithm: DkimAlgorithm,
    pub pkcs8: Vec<u8>,
}

/// Checks that this key may send from `domain` (403 `domain_not_allowed`) and, when the
/// operator requires it, that the domain is verified (422 `domain_not_verified`, at
/// `pointer`); returns the signing key if Herald signs for the domain. The store's answer is
/// cached for a second in `state.senders`, so a batch of a hundred emails from one domain
/// asks once.
pub async fn resolve(
    state: &AppState,
    principal: &Principal,
    domain: &str,
    pointer: &str,
) -> ApiResult<Option<Arc<Signing>>> {
    if let Some(allowed) = &principal.allowed_domains
        && !allowed.iter().any(|d| d == domain)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "domain_not_allowed",
            format!("this key may not send from {domain}"),
        ));
    }
    let cache_key = format!("{}\n{domain}", principal.project_id);
    let decision = match state.senders.get(&cache_key) {
        Some(d) => d,
        None => {
            let d = decide(state, principal, domain).await?;
            state.senders.put(cache_key, d.clone());
            d
        }
    };
    if state.config.domains.require_verified && !decision.verified {
        return Err(ApiError::validation(vec![FieldError::new(
            pointer,
            "domain_not_verified",
            format!("{domain} is not a verified sending domain of this project"),
        )]));
    }
    Ok(decision.signing)
}

/// What the store says about a sending domain: verified or not, and the key to sign with.
#[derive(Clone)]
pub struct SenderDecision {
    verified: bool,
    signing: Option<Arc<Signing>>,
}

async fn decide(
    state: &AppState,
    principal: &Principal,
    domain: &str,
) -> ApiResult<SenderDecision> {
    let found = state
        .store
        .find_domain(&principal.project_id, domain)
        .await?;
    let verified = found
        .as_ref()
        .is_some_and(|(d, _)| d.status == DomainStatus::Verified);
    let active = found.as_ref().and_then(|(d, keys)| {
        (d.dkim_mode == "herald")
            .then(|| {
                keys.iter()
                    .find(|k| k.state == KeyState::Active)
                    .map(|k| (d, k))
            })
            .flatten()
    });
    let signing = match active {
        Some((d, k)) => {
            let der = state
                .sealer
                .open(&k.private_key)
                .ok()
                .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
                .ok_or_else(|| {
                    ApiError::internal(&format!("the DKIM key of {domain} does not open"))
                })?;
            Some(Arc::new(Signing {
                domain: d.name.clone(),
                selector: k.selector.clone(),
                algorithm: DkimAlgorithm::parse(&k.algorithm).unwrap_or(DkimAlgorithm::Rsa2048),
                pkcs8: der,
            }))
        }
        None => None,
    };
    Ok(SenderDecision { verified, signing })
}

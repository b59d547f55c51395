//! Admin tokens: JWTs for cross-project administration, HS256 with a key derived from the
//! master key. `exp` is required and at most [`MAX_TTL_S`] ahead when minted, `nbf` is
//! honoured, the algorithm is pinned (a token claiming any other algorithm, `none` included, is
//! refused), a header with `crit` extensions is refused (Herald understands none, RFC 7515
//! §4.1.11), and the issuer is checked.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const ISSUER: &str = "herald";

/// The longest an admin token may live: 90 days. A credential for every project should expire.
pub const MAX_TTL_S: i64 = 90 * 24 * 3600;

/// Longer than any token Herald mints: what is longer is refused before it is decoded.
const MAX_TOKEN_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("the lifetime must be from 1 second to 90 days")]
    Lifetime,
    #[error("could not sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    iat: i64,
    exp: i64,
}

#[derive(Clone)]
pub struct AdminTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminTokens(…)")
    }
}

impl AdminTokens {
    pub fn new(master_key: &[u8]) -> Self {
        let key = Sha256::new()
            .chain_update(b"herald-admin-jwt-v1:")
            .chain_update(master_key)
            .finalize()
            .to_vec();
        Self { key }
    }

    /// A token valid from `now_s` for `ttl_s` seconds (1 s to [`MAX_TTL_S`]).
    pub fn mint(&self, subject: &str, now_s: i64, ttl_s: i64) -> Result<String, MintError> {
        if !(1..=MAX_TTL_S).contains(&ttl_s) {
            return Err(MintError::Lifetime);
        }
        let exp = now_s.checked_add(ttl_s).ok_or(MintError::Lifetime)?;
        let claims = Claims {
            iss: ISSUER.into(),
            sub: subject.into(),
            iat: now_s,
            exp,
        };
        Ok(encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.key),
        )?)
    }

    /// The subject of a valid token.
    pub fn verify(&self, token: &str) -> Option<String> {
        if token.len() > MAX_TOKEN_BYTES || has_critical_extensions(token) {
            return None;
        }
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "iss", "sub"]);
        v.validate_nbf = true;
        v.leeway = 5;
        decode::<Claims>(token, &DecodingKey::from_secret(&self.key), &v)
            .ok()
            .map(|d| d.claims.sub)
    }
}

/// Whether the token's header lists `crit` extensions (or cannot be read: then the decoder
/// refuses it anyway).
fn has_critical_extensions(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&h).ok())
        .is_some_and(|h| h.contains_key("crit"))
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn valid_tokens_verify() {
        let t = AdminTokens::new(b"master");
        let token = t.mint("ops", now(), 3600).expect("mint");
        assert_eq!(t.verify(&token).as_deref(), Some("ops"));
    }

    #[test]
    fn expired_wrongly_signed_and_unsigned_tokens_are_refused() {
        let t = AdminTokens::new(b"master");
        let expired = t.mint("ops", now() - 7200, 3600).expect("mint");
        assert_eq!(t.verify(&expired), None);
        let foreign = AdminTokens::new(b"another master")
            .mint("ops", now(), 3600)
            .expect("mint");
        assert_eq!(t.verify(&foreign), None);
        // alg: none, with the same claims and no signature.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"iss":"herald","sub":"ops","iat":{0},"exp":{1}}}"#,
            now(),
            now() + 3600
        ));
        assert_eq!(t.verify(&format!("{header}.{claims}.")), None);
        // Another algorithm in the header.
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &Claims {
                iss: "herald".into(),
                sub: "ops".into(),
                iat: now(),
                exp: now() + 3600,
            },
            &EncodingKey::from_secret(&t.key),
        )
        .expect("encode");
        assert_eq!(t.verify(&hs512), None);
        // No exp at all.
        #[derive(Serialize)]
        struct NoExp {
            iss: String,
            sub: String,
        }
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &NoExp {
                iss: "herald".into(),
                sub: "ops".into(),
            },
            &EncodingKey::from_secret(&t.key),
        )
        .expect("encode");
        assert_eq!(t.verify(&no_exp), None);
        assert_eq!(t.verify("garbage"), None);
    }

    /// A token not valid yet, one with a critical extension, and lifetimes past the cap or
    /// that overflow are all refused.
    #[test]
    fn nbf_crit_and_lifetimes_are_checked() {
        let t = AdminTokens::new(b"master");
        #[derive(Serialize)]
        struct WithNbf {
            iss: String,
            sub: String,
            exp: i64,
            nbf: i64,
        }
        let later = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &WithNbf {
                iss: "herald".into(),
                sub: "ops".into(),
                exp: now() + 7200,
                nbf: now() + 3600,
            },
            &EncodingKey::from_secret(&t.key),
        )
        .expect("encode");
        assert_eq!(t.verify(&later), None, "not valid before nbf");
        let good = t.mint("ops", now(), 3600).expect("mint");
        let mut parts = good.splitn(2, '.');
        let _ = parts.next();
        let rest = parts.next().expect("rest");
        // The same claims and signature under a header that adds a critical extension: the
        // signature no longer matches either, but the header is refused first, whatever the key.
        let crit = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT","crit":["exp"],"exp":1}"#);
        assert_eq!(t.verify(&format!("{crit}.{rest}")), None);
        assert!(has_critical_extensions(&format!("{crit}.{rest}")));
        assert!(!has_critical_extensions(&good));
        assert!(matches!(
            t.mint("ops", now(), MAX_TTL_S + 1),
            Err(MintError::Lifetime)
        ));
        assert!(matches!(
            t.mint("ops", i64::MAX - 10, 3600),
            Err(MintError::Lifetime)
        ));
        assert!(matches!(t.mint("ops", now(), 0), Err(MintError::Lifetime)));
        assert!(t.mint("ops", now(), MAX_TTL_S).is_ok());
    }
}

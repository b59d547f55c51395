//! Admin tokens: JWTs for cross-project administration, HS256 with a key derived from the
//! master key. `exp` is required, the algorithm is pinned (a token claiming any other
//! algorithm, `none` included, is refused), and the issuer is checked.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const ISSUER: &str = "herald";

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

    /// A token valid from `now_s` for `ttl_s` seconds.
    pub fn mint(
        &self,
        subject: &str,
        now_s: i64,
        ttl_s: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            iss: ISSUER.into(),
            sub: subject.into(),
            iat: now_s,
            exp: now_s + ttl_s,
        };
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.key),
        )
    }

    /// The subject of a valid token.
    pub fn verify(&self, token: &str) -> Option<String> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "iss", "sub"]);
        v.leeway = 5;
        decode::<Claims>(token, &DecodingKey::from_secret(&self.key), &v)
            .ok()
            .map(|d| d.claims.sub)
    }
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
}

//! API key tokens: `hk_<8-char id>_<32-char base62 secret>`.
//!
//! The id part is public (it is the lookup key and the `prefix` operators see); only a
//! SHA-256 hash of the secret is stored. Secrets carry about 190 bits of entropy, so a
//! slow KDF would buy nothing; the comparison is constant-time.

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ID_LEN: usize = 8;
const SECRET_LEN: usize = 32;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Everything within its project.
    FullAccess,
    /// Sending, and cancelling what it sent.
    SendingAccess,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FullAccess => "full_access",
            Self::SendingAccess => "sending_access",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full_access" => Some(Self::FullAccess),
            "sending_access" => Some(Self::SendingAccess),
            _ => None,
        }
    }
}

/// A well-formed token as presented in `Authorization: Bearer …`. Never logged.
pub struct ApiKeyToken {
    id: String,
    secret: String,
}

impl ApiKeyToken {
    /// Makes a new random token.
    pub fn generate() -> Self {
        Self {
            id: random_base62(ID_LEN),
            secret: random_base62(SECRET_LEN),
        }
    }

    /// Accepts only the exact shape `hk_<8 base62>_<32 base62>`.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("hk_")?;
        let (id, secret) = rest.split_once('_')?;
        let is_base62 = |p: &str| p.bytes().all(|b| b.is_ascii_alphanumeric());
        (id.len() == ID_LEN && secret.len() == SECRET_LEN && is_base62(id) && is_base62(secret))
            .then(|| Self {
                id: id.to_owned(),
                secret: secret.to_owned(),
            })
    }

    /// The public part, `hk_<id>`, shown in listings.
    pub fn prefix(&self) -> String {
        format!("hk_{}", self.id)
    }

    pub fn secret_hash(&self) -> Vec<u8> {
        Sha256::digest(self.secret.as_bytes()).to_vec()
    }

    /// Constant-time comparison against a stored hash.
    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        self.secret_hash().ct_eq(stored_hash).into()
    }

    /// The full token; shown exactly once, when the key is created.
    pub fn reveal(&self) -> String {
        format!("hk_{}_{}", self.id, self.secret)
    }
}

impl std::fmt::Debug for ApiKeyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeyToken(hk_{}_…)", self.id)
    }
}

fn random_base62(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .filter_map(|_| ALPHABET.get(rng.random_range(0..ALPHABET.len())))
        .map(|&b| char::from(b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_match_their_hash() {
        let t = ApiKeyToken::generate();
        let shown = t.reveal();
        assert!(shown.starts_with("hk_") && shown.len() == 3 + 8 + 1 + 32);
        let parsed = ApiKeyToken::parse(&shown).expect("parses");
        assert!(parsed.matches(&t.secret_hash()));
        assert!(!ApiKeyToken::generate().matches(&t.secret_hash()));
        assert!(!format!("{parsed:?}").contains(&shown[12..]));
    }

    #[test]
    fn refuses_malformed_tokens() {
        for bad in [
            "",
            "hk_",
            "hk_abc_def",
            "sk_k7Hq2m9x_5TsYpQ3vR8wLz1NcB6fJ0hKdUe4aGi7o",
            "hk_k7Hq2m9x_5TsYpQ3vR8wLz1NcB6fJ0hKdUe4aGi7",
            "hk_k7Hq2m9x_5TsYpQ3vR8wLz1NcB6fJ0hKdUe4aGi7!",
        ] {
            assert!(ApiKeyToken::parse(bad).is_none(), "{bad} accepted");
        }
    }
}

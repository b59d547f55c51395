//! Standard Webhooks v1 signatures: `v1,<base64(HMAC-SHA256(secret, "id.timestamp.body"))>`,
//! with the secret written `whsec_<base64 of 32 random bytes>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A new endpoint secret.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// Whether `s` is a secret Herald can sign with.
pub fn is_valid_secret(s: &str) -> bool {
    s.strip_prefix("whsec_")
        .and_then(|b| STANDARD.decode(b).ok())
        .is_some_and(|k| (24..=64).contains(&k.len()))
}

/// A secret ready to sign with: decoded and keyed once, then cloned for each message (the
/// key's two blocks of SHA-256 are not hashed again per request).
#[derive(Clone)]
pub struct SigningKey(Hmac<Sha256>);

impl SigningKey {
    /// The key of a `whsec_…` secret; `None` for anything else.
    pub fn new(secret: &str) -> Option<Self> {
        let key = STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?;
        Hmac::<Sha256>::new_from_slice(&key).ok().map(Self)
    }

    /// The `v1,…` signature of one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `v1,…` signature of one message.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    SigningKey::new(secret).map(|k| k.sign(msg_id, timestamp, body))
}

/// The `webhook-signature` header: one signature per key, space-separated (two during a
/// rotation's grace period).
pub fn signature_header(keys: &[&SigningKey], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| k.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks specification.
    #[test]
    fn matches_the_specification_test_vector() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn generated_secrets_are_32_bytes() {
        let s = generate_secret();
        assert!(is_valid_secret(&s));
        assert_eq!(STANDARD.decode(&s[6..]).map(|k| k.len()), Ok(32));
        assert!(!is_valid_secret("whsec_short"));
        assert!(!is_valid_secret("nope"));
    }

    #[test]
    fn rotation_signs_with_both_secrets() {
        let (a, b) = (generate_secret(), generate_secret());
        let keys = [SigningKey::new(&a), SigningKey::new(&b)].map(|k| k.expect("key"));
        let h = signature_header(&[&keys[0], &keys[1]], "id", 1, b"{}");
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(Some(parts[0].to_owned()), sign(&a, "id", 1, b"{}"));
        assert_eq!(Some(parts[1].to_owned()), sign(&b, "id", 1, b"{}"));
    }
}

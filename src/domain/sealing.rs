//! Secrets at rest (webhook signing secrets, later DKIM keys): sealed with AES-256-GCM under
//! a key derived from the server's master key, so a copy of the database alone does not give
//! them away. Sealed text is `v1:<base64(nonce ‖ ciphertext ‖ tag)>`.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("sealed secret is malformed")]
    Malformed,
    #[error("sealed secret does not open with this master key")]
    WrongKey,
}

/// Seals and opens secrets with one master key.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(…)")
    }
}

impl Sealer {
    pub fn new(master_key: &[u8]) -> Self {
        let derived = Sha256::new()
            .chain_update(b"herald-sealing-v1:")
            .chain_update(master_key)
            .finalize();
        let unbound = UnboundKey::new(&AES_256_GCM, &derived).expect("a 32-byte AES-256 key");
        Self {
            key: LessSafeKey::new(unbound),
        }
    }

    /// Seals `plain` (a random nonce each time, so equal secrets seal differently).
    pub fn seal(&self, plain: &str) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut buf = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::empty(),
                &mut buf,
            )
            .expect("AES-GCM sealing of a short buffer does not fail");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        format!("v1:{}", STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<String, SealError> {
        let raw = sealed
            .strip_prefix("v1:")
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|r| r.len() > NONCE_LEN)
            .ok_or(SealError::Malformed)?;
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| SealError::WrongKey)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens() {
        let s = Sealer::new(b"master");
        let sealed = s.seal("whsec_abc");
        assert!(sealed.starts_with("v1:") && !sealed.contains("whsec_abc"));
        assert_ne!(sealed, s.seal("whsec_abc"), "fresh nonce each time");
        assert_eq!(s.open(&sealed), Ok("whsec_abc".to_owned()));
        assert_eq!(
            Sealer::new(b"other").open(&sealed),
            Err(SealError::WrongKey)
        );
        assert_eq!(s.open("v1:AAAA"), Err(SealError::Malformed));
        let mut tampered = sealed.into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(
            s.open(&String::from_utf8(tampered).expect("ascii"))
                .is_err()
        );
    }
}

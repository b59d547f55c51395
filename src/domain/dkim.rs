//! DKIM keys and signatures (RFC 6376; Ed25519 per RFC 8463).
//!
//! Keys are generated here (RSA-2048 by default, Ed25519 as an option), kept as PKCS#8 DER,
//! and published as `v=DKIM1; k=…; p=…` TXT records (RSA: the SubjectPublicKeyInfo, as
//! `opendkim-genkey` writes it; Ed25519: the raw 32-byte key). Messages are signed with
//! relaxed/relaxed canonicalisation over the headers that identify and describe a message.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};

/// The headers Herald signs (each only if present, as RFC 6376 §5.4 allows; From always is).
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "In-Reply-To",
    "References",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    Rsa2048,
    Ed25519,
}

impl DkimAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rsa2048 => "rsa",
            Self::Ed25519 => "ed25519",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rsa" | "rsa-2048" => Some(Self::Rsa2048),
            "ed25519" => Some(Self::Ed25519),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("key generation failed")]
    Generate,
    #[error("the stored private key is not usable: {0}")]
    Key(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A new key pair. `private_pkcs8` is secret: seal it before storing.
pub struct GeneratedKey {
    pub algorithm: DkimAlgorithm,
    pub private_pkcs8: Vec<u8>,
    /// Base64 for the record's `p=` tag.
    pub public_key: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("algorithm", &self.algorithm)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

pub fn generate(algorithm: DkimAlgorithm) -> Result<GeneratedKey, DkimError> {
    match algorithm {
        DkimAlgorithm::Rsa2048 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| DkimError::Generate)?;
            let private: Pkcs8V1Der<'static> = pair.as_der().map_err(|_| DkimError::Generate)?;
            let public: PublicKeyX509Der<'static> = pair
                .public_key()
                .as_der()
                .map_err(|_| DkimError::Generate)?;
            Ok(GeneratedKey {
                algorithm,
                private_pkcs8: private.as_ref().to_vec(),
                public_key: STANDARD.encode(public.as_ref()),
            })
        }
        DkimAlgorithm::Ed25519 => {
            let pair = Ed25519KeyPair::generate().map_err(|_| DkimError::Generate)?;
            let private = pair.to_pkcs8v1().map_err(|_| DkimError::Generate)?;
            Ok(GeneratedKey {
                algorithm,
                private_pkcs8: private.as_ref().to_vec(),
                public_key: STANDARD.encode(pair.public_key().as_ref()),
            })
        }
    }
}

/// The TXT record value to publish at `<selector>._domainkey.<domain>`.
pub fn txt_record(algorithm: DkimAlgorithm, public_key: &str) -> String {
    format!("v=DKIM1; k={}; p={public_key}", algorithm.as_str())
}

/// Signs `message` and returns it with the `DKIM-Signature` header prepended.
pub fn sign(
    message: &[u8],
    domain: &str,
    selector: &str,
    algorithm: DkimAlgorithm,
    private_pkcs8: &[u8],
) -> Result<Vec<u8>, DkimError> {
    let header = match algorithm {
        DkimAlgorithm::Rsa2048 => {
            let der = rustls_pki_types::PrivatePkcs8KeyDer::from(private_pkcs8);
            let key = RsaKey::<Sha256>::from_key_der(der.into())
                .map_err(|e| DkimError::Key(e.to_string()))?;
            signature(DkimSigner::from_key(key), message, domain, selector)?
        }
        DkimAlgorithm::Ed25519 => {
            let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(private_pkcs8)
                .map_err(|e| DkimError::Key(e.to_string()))?;
            signature(DkimSigner::from_key(key), message, domain, selector)?
        }
    };
    let mut out = header.into_bytes();
    out.extend_from_slice(message);
    Ok(out)
}

fn signature<T: mail_auth::common::crypto::SigningKey>(
    signer: DkimSigner<T, mail_auth::dkim::NeedDomain>,
    message: &[u8],
    domain: &str,
    selector: &str,
) -> Result<String, DkimError> {
    let present: Vec<&str> = SIGNED_HEADERS
        .iter()
        .copied()
        .filter(|h| *h == "From" || has_header(message, h))
        .collect();
    signer
        .domain(domain)
        .selector(selector)
        .headers(present)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
        .sign(message)
        .map(|s| s.to_header())
        .map_err(|e| DkimError::Sign(e.to_string()))
}

/// Whether the message's header section has a field of this name.
fn has_header(message: &[u8], name: &str) -> bool {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    let head = message.get(..end).unwrap_or(message);
    head.split(|b| *b == b'\n').any(|line| {
        line.get(name.len()) == Some(&b':')
            && line
                .get(..name.len())
                .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"From: Acme <orders@acme.com>\r\nTo: ada@example.com\r\n\
        Subject: Hi\r\nMessage-ID: <1@acme.com>\r\nDate: Thu, 01 Jan 1970 00:00:00 +0000\r\n\
        MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello\r\n";

    #[test]
    fn rsa_keys_sign_with_the_listed_headers() {
        let key = generate(DkimAlgorithm::Rsa2048).expect("key");
        assert!(
            key.public_key.starts_with("MIIBIjANBgkq"),
            "SPKI: {}",
            key.public_key
        );
        let signed =
            sign(MESSAGE, "acme.com", "s1", key.algorithm, &key.private_pkcs8).expect("sign");
        let text = String::from_utf8(signed).expect("ascii");
        assert!(text.starts_with("DKIM-Signature: "), "{text}");
        for tag in ["a=rsa-sha256", "c=relaxed/relaxed", "d=acme.com", "s=s1"] {
            assert!(text.contains(tag), "{tag} in {text}");
        }
        assert!(text.ends_with("\r\n\r\nHello\r\n"));
        assert!(
            !format!("{key:?}").contains("private"),
            "Debug hides the private key"
        );
    }

    #[test]
    fn ed25519_keys_sign() {
        let key = generate(DkimAlgorithm::Ed25519).expect("key");
        assert_eq!(STANDARD.decode(&key.public_key).map(|k| k.len()), Ok(32));
        let signed =
            sign(MESSAGE, "acme.com", "e1", key.algorithm, &key.private_pkcs8).expect("sign");
        assert!(String::from_utf8_lossy(&signed).contains("a=ed25519-sha256"));
        assert_eq!(
            txt_record(DkimAlgorithm::Ed25519, "abc"),
            "v=DKIM1; k=ed25519; p=abc"
        );
    }

    #[test]
    fn finds_headers_case_insensitively() {
        assert!(has_header(MESSAGE, "message-id"));
        assert!(!has_header(MESSAGE, "Cc"));
        assert!(!has_header(MESSAGE, "Hello"));
    }
}

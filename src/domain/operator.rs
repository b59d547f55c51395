//! Operators of the console: their passwords (Argon2id) and their session tokens.
//!
//! A password is kept only as an Argon2id PHC string, so a stolen database does not give the
//! passwords away cheaply. A session token is 256 random bits; like an API key's secret it is
//! stored only as its SHA-256 (a slow hash would buy nothing at that entropy).

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use sha2::{Digest, Sha256};

/// Passwords shorter than this are refused: the console may face the internet.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longer is refused too: hashing a megabyte costs the server, not the guesser.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a password is not accepted for an operator.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("the password must have at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("the password must have at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("the password could not be hashed")]
    Hash,
}

/// An operator's sign-in address as stored: a valid address, in lower case (people do not
/// sign in case-sensitively).
pub fn operator_email(input: &str) -> Option<String> {
    crate::domain::address::EmailAddress::parse(input)
        .ok()
        .map(|a| a.as_str().to_ascii_lowercase())
}

/// The Argon2id PHC string of a new password, after its length is checked. Slow on purpose
/// (tens of milliseconds): call it off the async threads.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hash)
}

/// Whether `password` matches the stored PHC string (false for a malformed one). Slow on
/// purpose, like [`hash_password`].
pub fn verify_password(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// A hash to verify against when no operator has the address given, so that signing in as
/// nobody takes as long as a wrong password (the time does not tell who has an account).
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        Argon2::default()
            .hash_password(b"not anyone's password, only a decoy")
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// A random token of 256 bits, URL-safe: a session's cookie, or its CSRF token.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored of a session token.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_only_itself() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("correct horse battery", "not a hash"));
        assert!(!verify_password("anything at all", decoy_hash()));
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        assert_eq!(hash_password("elevenchars"), Err(PasswordError::TooShort));
        assert_eq!(
            hash_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(PasswordError::TooLong)
        );
        // Characters, not bytes: twelve non-ASCII letters are long enough.
        assert!(hash_password("ééééééééééé").is_err());
        assert!(hash_password("éééééééééééé").is_ok());
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(token_hash(&a).len(), 32);
        assert_ne!(token_hash(&a), a.as_bytes());
    }
}

//! Signed VERP return paths: `bounces+<token>@<bounce-domain>`.
//!
//! The token names one recipient (its UUID) and carries a truncated HMAC-SHA256 of that id,
//! so a bounce report can be matched to the recipient it is about, and nobody can forge a
//! bounce for someone else's recipient. It is lower-case base32 (RFC 4648 alphabet without
//! padding) because some MTAs fold the case of local parts: 16 id bytes and 10 MAC bytes
//! make 42 characters, well within the 64 a local part may have (RFC 5321 §4.5.3.1.1).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

const MAC_LEN: usize = 10;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The HMAC key that signs return paths.
#[derive(Clone)]
pub struct VerpSigner {
    /// HMAC-SHA256 with the key and the tokens' domain-separation prefix already absorbed:
    /// each token clones it (setting the key up is two of the four SHA-256 blocks a token
    /// costs).
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for VerpSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerpSigner(…)")
    }
}

impl VerpSigner {
    pub fn new(key: &[u8]) -> Self {
        let mut keyed = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key size");
        keyed.update(b"herald-verp-v1:");
        Self { keyed }
    }

    fn mac(&self, id: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.keyed.clone();
        mac.update(id);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        for (o, b) in out.iter_mut().zip(full.iter()) {
            *o = *b;
        }
        out
    }

    /// The token for one recipient.
    pub fn token(&self, recipient_id: Uuid) -> String {
        let mut bytes = recipient_id.as_bytes().to_vec();
        bytes.extend_from_slice(&self.mac(recipient_id.as_bytes()));
        base32_encode(&bytes)
    }

    /// The full envelope sender for one recipient.
    pub fn return_path(&self, recipient_id: Uuid, bounce_domain: &str) -> String {
        format!("bounces+{}@{bounce_domain}", self.token(recipient_id))
    }

    /// The recipient a token names, if and only if its signature is valid.
    pub fn verify(&self, token: &str) -> Option<Uuid> {
        let bytes = base32_decode(&token.to_ascii_lowercase())?;
        if bytes.len() != 16 + MAC_LEN {
            return None;
        }
        let (id, mac) = bytes.split_at(16);
        bool::from(self.mac(id).ct_eq(mac)).then(|| Uuid::from_slice(id).ok())?
    }

    /// The recipient named by a whole return-path address (`bounces+<token>@<domain>`).
    pub fn verify_address(&self, address: &str, bounce_domain: &str) -> Option<Uuid> {
        let (local, domain) = address.rsplit_once('@')?;
        if !domain.eq_ignore_ascii_case(bounce_domain) {
            return None;
        }
        let token = local
            .strip_prefix("bounces+")
            .or_else(|| local.strip_prefix("BOUNCES+"))?;
        self.verify(token)
    }
}

fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(base32_char(buf >> bits));
        }
    }
    if bits > 0 {
        out.push(base32_char(buf << (5 - bits)));
    }
    out
}

/// The base32 letter for the low five bits of `n`.
fn base32_char(n: u32) -> char {
    ALPHABET
        .get((n & 31) as usize)
        .map_or('a', |&b| char::from(b))
}

fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buf >> bits) & 0xff) as u8);
        }
    }
    // Leftover bits must be zero padding, or the token was not one we made.
    (buf & ((1 << bits) - 1) == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let s = VerpSigner::new(b"secret");
        let id = Uuid::now_v7();
        let token = s.token(id);
        assert_eq!(token.len(), 42);
        assert_eq!(s.verify(&token), Some(id));
        assert_eq!(s.verify(&token.to_ascii_uppercase()), Some(id));
        let addr = s.return_path(id, "bounces.example.com");
        assert!(addr.split('@').next().is_some_and(|l| l.len() <= 64));
        assert_eq!(s.verify_address(&addr, "bounces.example.com"), Some(id));
        assert_eq!(s.verify_address(&addr, "other.example.com"), None);
    }

    /// Tokens already handed out (in the return paths of mail sent before) still verify: the
    /// MAC is HMAC-SHA256(key, "herald-verp-v1:" || id), computed here from scratch.
    #[test]
    fn the_mac_is_hmac_sha256_of_the_prefixed_id() {
        let s = VerpSigner::new(b"secret");
        let id = Uuid::from_u128(0x0192_3456_789a_7bcd_8ef0_1234_5678_9abc);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").expect("key");
        mac.update(b"herald-verp-v1:");
        mac.update(id.as_bytes());
        let full = mac.finalize().into_bytes();
        assert_eq!(s.mac(id.as_bytes())[..], full[..MAC_LEN]);
        // And the same twice: the kept state is cloned, never consumed.
        assert_eq!(s.token(id), s.token(id));
    }

    #[test]
    fn refuses_forgeries() {
        let s = VerpSigner::new(b"secret");
        let id = Uuid::now_v7();
        let token = s.token(id);
        // Signed with another key.
        assert_eq!(VerpSigner::new(b"other").verify(&token), None);
        // Another recipient's id with this token's MAC.
        let other = s.token(Uuid::now_v7());
        let forged = format!("{}{}", &other[..26], &token[26..]);
        assert_eq!(s.verify(&forged), None);
        // Every single-character change is caught.
        for i in 0..token.len() {
            let mut t = token.clone().into_bytes();
            t[i] = if t[i] == b'a' { b'b' } else { b'a' };
            assert_eq!(
                s.verify(&String::from_utf8(t).expect("ascii")),
                None,
                "at {i}"
            );
        }
        for junk in ["", "abc", "!!!!", &token[..40]] {
            assert_eq!(s.verify(junk), None);
        }
    }

    #[test]
    fn base32_round_trips_every_length() {
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base32_decode(&base32_encode(&bytes)), Some(bytes));
        }
    }
}

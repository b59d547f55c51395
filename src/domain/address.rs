//! Email addresses and mailboxes (`Name <local@domain>`), parsed once at the edge.
//!
//! Herald accepts the ASCII addresses of RFC 5321 §4.1.2 in dot-atom form (no quoted local
//! parts, no address literals): what transactional mail uses, and what every relay takes
//! without SMTPUTF8. An internationalized domain (`ada@bücher.de`) is taken in its ASCII form
//! (`ada@xn--bcher-kva.de`, UTS #46 as browsers and mail clients do it): the same domain to DNS
//! and to every relay, so it needs no SMTPUTF8 either. A local part stays ASCII: a non-ASCII
//! one has no ASCII form, and a relay without SMTPUTF8 refuses it. CR, LF and other control
//! characters are refused everywhere, which is what keeps header injection out of the MIME
//! Herald builds.

use std::fmt;

/// Why an address or display name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("'{0}' is not a valid address")]
    Invalid(String),
    #[error("line breaks and control characters are not allowed")]
    ControlCharacter,
}

/// A syntactically valid `local@domain` address. The domain is kept lower-case and in its
/// ASCII form; the local part exactly as given (RFC 5321 §2.4: it may be case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let s = input.trim();
        if s.chars().any(char::is_control) {
            return Err(AddressError::ControlCharacter);
        }
        let invalid = || AddressError::Invalid(s.to_owned());
        let (local, domain) = s.rsplit_once('@').ok_or_else(invalid)?;
        let domain = ascii_domain(domain).ok_or_else(invalid)?;
        if !valid_local_part(local) || local.len() + 1 + domain.len() > 254 {
            return Err(invalid());
        }
        Ok(Self(format!("{local}@{domain}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(l, _)| l)
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_local_part(local: &str) -> bool {
    const SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";
    !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || SPECIALS.contains(c))
}

/// A domain name as Herald keeps it, lower-case ASCII: an internationalized one in its ASCII
/// form (UTS #46 with the STD3 rules, so each label is letters, digits and hyphens), an ASCII
/// one as given. `None` if it is not a host name of two labels or more with a top-level label
/// that is not all digits.
fn ascii_domain(domain: &str) -> Option<String> {
    let domain = if domain.is_ascii() {
        domain.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii_strict(domain).ok()?
    };
    valid_domain(&domain).then_some(domain)
}

/// A domain name as an operator types it (surrounding spaces, the root's trailing dot, any
/// case or script) in the form [`ascii_domain`] keeps: for a domain to sign for, or one an API
/// key may send from.
pub fn domain_name(input: &str) -> Option<String> {
    ascii_domain(input.trim().trim_end_matches('.'))
}

fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.chars().any(|c| c.is_ascii_alphabetic()))
}

/// An address with an optional display name, as it appears in From/To/Cc/Reply-To.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub email: EmailAddress,
    pub name: Option<String>,
}

impl Mailbox {
    /// Parses `addr` or `Display Name <addr>` (the name may be double-quoted).
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let s = input.trim();
        if s.chars().any(char::is_control) {
            return Err(AddressError::ControlCharacter);
        }
        match s.strip_suffix('>').and_then(|rest| rest.rsplit_once('<')) {
            Some((name, addr)) => {
                let name = name.trim();
                let name = name
                    .strip_prefix('"')
                    .and_then(|n| n.strip_suffix('"'))
                    .unwrap_or(name);
                Self::with_name(addr, Some(name))
            }
            None => Self::with_name(s, None),
        }
    }

    /// Builds a mailbox from separate parts (the `{"email", "name"}` form).
    pub fn with_name(email: &str, name: Option<&str>) -> Result<Self, AddressError> {
        if name.is_some_and(|n| n.chars().any(char::is_control)) {
            return Err(AddressError::ControlCharacter);
        }
        let name = match name.map(str::trim) {
            Some("") | None => None,
            Some(n) => Some(n.to_owned()),
        };
        Ok(Self {
            email: EmailAddress::parse(email)?,
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_named_forms() {
        let m = Mailbox::parse("Acme <Orders@ACME.com>").expect("valid");
        assert_eq!(m.email.as_str(), "Orders@acme.com");
        assert_eq!(m.name.as_deref(), Some("Acme"));
        let m = Mailbox::parse("\"Doe, Jane\" <jane@example.org>").expect("valid");
        assert_eq!(m.name.as_deref(), Some("Doe, Jane"));
        let m = Mailbox::parse("ada@example.com").expect("valid");
        assert_eq!(m.name, None);
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "bob@",
            "@example.com",
            "bob",
            "a..b@example.com",
            ".a@example.com",
            "a@example",
            "a@-x.com",
            "a@x.123",
            "a b@example.com",
            "a@exa_mple.com",
            "\"quoted\"@example.com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn takes_an_internationalized_domain_in_its_ascii_form() {
        let a = EmailAddress::parse("Ada@Bücher.DE").expect("valid");
        assert_eq!(a.as_str(), "Ada@xn--bcher-kva.de");
        assert_eq!(a.domain(), "xn--bcher-kva.de");
        // The ASCII form given as such is the same address.
        assert_eq!(EmailAddress::parse("Ada@xn--bcher-kva.de"), Ok(a));
        assert_eq!(
            EmailAddress::parse("jo@例え.テスト").map(|a| a.to_string()),
            Ok("jo@xn--r8jz45g.xn--zckzah".to_owned())
        );
        let m = Mailbox::parse("Zoë <zoe@straße.de>").expect("valid");
        assert_eq!(m.email.as_str(), "zoe@xn--strae-oqa.de");
        assert_eq!(m.name.as_deref(), Some("Zoë"));
        for bad in [
            "üser@example.com",
            "a@bü_cher.de",
            "a@-bücher.de",
            "a@bücher",
            "a@bü cher.de",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            ascii_domain("Mail.Example.COM").as_deref(),
            Some("mail.example.com")
        );
        assert_eq!(
            ascii_domain("münchen.de").as_deref(),
            Some("xn--mnchen-3ya.de")
        );
        assert_eq!(ascii_domain("münchen"), None);
        assert_eq!(
            domain_name(" Bücher.DE. ").as_deref(),
            Some("xn--bcher-kva.de")
        );
    }

    #[test]
    fn refuses_line_breaks_anywhere() {
        assert_eq!(
            Mailbox::parse("Eve\r\nBcc: x@y.com <eve@example.com>"),
            Err(AddressError::ControlCharacter)
        );
        assert_eq!(
            EmailAddress::parse("eve@example.com\r\nBcc: x@y.com"),
            Err(AddressError::ControlCharacter)
        );
        assert_eq!(
            Mailbox::with_name("eve@example.com", Some("Eve\n")),
            Err(AddressError::ControlCharacter)
        );
    }
}

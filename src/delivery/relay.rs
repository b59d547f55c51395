//! The relay URL: `smtps://user:pass@host:465` (implicit TLS, RFC 8314) or
//! `smtp://user:pass@host:587?tls=required|opportunistic|none` (STARTTLS, RFC 3207).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (`smtps://`).
    Implicit,
    /// STARTTLS, and refuse to go on without it (the default for `smtp://`).
    Required,
    /// STARTTLS when the relay offers it, plain text otherwise.
    Opportunistic,
    /// Never encrypt (a relay on the same host or a test server).
    None,
}

#[derive(Clone, PartialEq, Eq)]
pub struct RelayUrl {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl RelayUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
        let (default_port, mut tls) = match url.scheme() {
            "smtps" => (465, TlsMode::Implicit),
            "smtp" => (587, TlsMode::Required),
            other => return Err(format!("scheme must be smtp or smtps, not {other}")),
        };
        for (k, v) in url.query_pairs() {
            match (k.as_ref(), v.as_ref(), tls) {
                ("tls", _, TlsMode::Implicit) => {
                    return Err("tls= applies to smtp:// only; smtps:// is always TLS".into());
                }
                ("tls", "required", _) => tls = TlsMode::Required,
                ("tls", "opportunistic", _) => tls = TlsMode::Opportunistic,
                ("tls", "none", _) => tls = TlsMode::None,
                ("tls", other, _) => {
                    return Err(format!(
                        "tls must be required, opportunistic or none, not {other}"
                    ));
                }
                (other, _, _) => return Err(format!("unknown parameter {other}")),
            }
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| "credentials are not valid percent-encoding".to_owned())
        };
        let username = match url.username() {
            "" => None,
            u => Some(decode(u)?),
        };
        let password = url.password().map(decode).transpose()?;
        Ok(Self {
            host,
            port: url.port().unwrap_or(default_port),
            tls,
            username,
            password,
        })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_tls_forms() {
        let r = RelayUrl::parse("smtps://user:p%40ss@relay.example.com").expect("valid");
        assert_eq!((r.port, r.tls), (465, TlsMode::Implicit));
        assert_eq!(r.password.as_deref(), Some("p@ss"));
        let r = RelayUrl::parse("smtp://u:p@127.0.0.1:2525?tls=opportunistic").expect("valid");
        assert_eq!(
            (r.host.as_str(), r.port, r.tls),
            ("127.0.0.1", 2525, TlsMode::Opportunistic)
        );
        let r = RelayUrl::parse("smtp://relay.example.com").expect("valid");
        assert_eq!((r.port, r.tls, r.username), (587, TlsMode::Required, None));
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "http://relay",
            "smtp://relay?tls=maybe",
            "smtps://relay?tls=none",
            "smtp://relay?foo=1",
            "relay:25",
        ] {
            assert!(RelayUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let r = RelayUrl::parse("smtps://user:hunter2@relay").expect("valid");
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}

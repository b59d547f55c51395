//! The webhook HTTP client, safe against SSRF: a webhook URL is chosen by a tenant, so it
//! must not become a way into Herald's private network. Targets that are (or resolve to)
//! loopback, private, link-local, unique-local, CGNAT, multicast or reserved addresses are
//! refused unless the operator allows private targets. The check runs when an endpoint is
//! saved *and* inside the resolver every connection goes through, so a DNS answer that
//! changes after the first check (DNS rebinding) is caught too. Redirects are not followed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is somewhere a tenant's webhook must not reach by default.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden_v4(v4);
            }
            let seg = v6.segments();
            let v4_in = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                Ipv4Addr::new(a, b, c, d)
            };
            // NAT64 (64:ff9b::/96) and the deprecated IPv4-compatible form (::a.b.c.d) embed an
            // IPv4 address in the last 32 bits; 6to4 (2002::/16) in the 32 after the prefix.
            if (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0])
                || (seg[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified())
            {
                return is_forbidden_v4(v4_in(seg[6], seg[7]));
            }
            if seg[0] == 0x2002 {
                return is_forbidden_v4(v4_in(seg[1], seg[2]));
            }
            v6.is_loopback()
                || (seg[0] == 0x2001 && seg[1] == 0) // Teredo 2001::/32: a tunnel to anywhere
                || (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1) // local NAT64 64:ff9b:1::/48
                || (seg[0] == 0x100 && seg[1..4] == [0, 0, 0]) // discard-only 100::/64
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // site local (deprecated) fec0::/10
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        }
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..=127).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("the URL is not a valid http(s) URL")]
    InvalidUrl,
    #[error("the host does not resolve")]
    Unresolvable,
    #[error(
        "the host resolves to a private or reserved address ({0}); private targets are not allowed on this server"
    )]
    Private(IpAddr),
}

/// Checks a webhook URL: http(s), a host, and (unless `allow_private`) only public addresses.
pub async fn check_target(url: &str, allow_private: bool) -> Result<url::Url, TargetError> {
    let parsed = url::Url::parse(url).map_err(|_| TargetError::InvalidUrl)?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
        || !parsed.username().is_empty()
    {
        return Err(TargetError::InvalidUrl);
    }
    if allow_private {
        return Ok(parsed);
    }
    let host = parsed
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| TargetError::Unresolvable)?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(TargetError::Unresolvable);
    }
    match addrs.iter().find(|a| is_forbidden_ip(a.ip())) {
        Some(bad) => Err(TargetError::Private(bad.ip())),
        None => Ok(parsed),
    }
}

/// A resolver that drops forbidden addresses from every answer.
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| !is_forbidden_ip(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(
                    format!("{host} resolves only to private or reserved addresses").into(),
                );
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The client deliveries go through.
pub fn build_client(timeout: Duration, allow_private: bool) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent("Herald-Webhooks/1.0");
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(GuardedResolver));
    }
    builder.build()
}

/// For a URL whose host is an IP literal the resolver is never asked, so check it here.
pub fn literal_ip_is_forbidden(url: &str) -> bool {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
        })
        .and_then(|h| h.parse::<IpAddr>().ok())
        .is_some_and(is_forbidden_ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbids_private_and_reserved_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "::127.0.0.1",
            "::10.0.0.1",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2001::1",
            "64:ff9b:1::1",
            "100::1",
        ] {
            assert!(is_forbidden_ip(ip.parse().expect("ip")), "{ip} allowed");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
            "::8.8.8.8",
        ] {
            assert!(!is_forbidden_ip(ip.parse().expect("ip")), "{ip} forbidden");
        }
    }

    #[tokio::test]
    async fn checks_targets() {
        assert!(matches!(
            check_target("http://127.0.0.1:8080/h", false).await,
            Err(TargetError::Private(_))
        ));
        assert!(matches!(
            check_target("http://[::1]/h", false).await,
            Err(TargetError::Private(_))
        ));
        assert!(matches!(
            check_target("http://localhost/h", false).await,
            Err(TargetError::Private(_))
        ));
        for url in ["http://[::127.0.0.1]/h", "http://[2002:7f00:1::]/h"] {
            assert!(
                matches!(check_target(url, false).await, Err(TargetError::Private(_))),
                "{url}"
            );
        }
        assert!(matches!(
            check_target("ftp://example.com/", false).await,
            Err(TargetError::InvalidUrl)
        ));
        assert!(matches!(
            check_target("http://user:pw@example.com/", false).await,
            Err(TargetError::InvalidUrl)
        ));
        assert!(check_target("http://127.0.0.1:8080/h", true).await.is_ok());
        assert!(check_target("https://93.184.216.34/h", false).await.is_ok());
        assert!(literal_ip_is_forbidden("http://10.0.0.1/x"));
        assert!(!literal_ip_is_forbidden("http://example.com/x"));
    }
}

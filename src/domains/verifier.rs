//! Checks domains' DNS records with a real resolver, with backoff, and records the outcome.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
use mail_auth::hickory_resolver::net::{DnsError, NetError};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::proto::rr::{RData, RecordType};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::event::{DomainData, EventData, EventType};
use crate::domain::states::{DomainStatus, KeyState};
use crate::job_loop::RunOutcome;
use crate::store::{DkimKeyRecord, DomainRecord, NewEvent, Store, StoreError};

use super::records::{DnsRecord, RecordCheck, RecordSettings, RecordStatuses, records};

/// How long a domain keeps being re-checked before it is declared failed.
pub const VERIFICATION_WINDOW_MS: i64 = 72 * 3_600_000;

/// Builds a resolver: the given servers (`ip:port`), or the system's.
pub fn resolver(servers: &[String]) -> Result<TokioResolver, String> {
    let config = if servers.is_empty() {
        let (config, _) = mail_auth::hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| format!("reading the system's DNS configuration: {e}"))?;
        config
    } else {
        let mut list = Vec::new();
        for s in servers {
            let addr: SocketAddr = s
                .parse()
                .map_err(|_| format!("domains.dns_servers: {s:?} is not ip:port"))?;
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            list.push(ns);
        }
        ResolverConfig::from_name_servers(list)
    };
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(5);
    opts.attempts = 2;
    opts.cache_size = 0;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| format!("building the DNS resolver: {e}"))
}

#[derive(Clone)]
pub struct DomainVerifier {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub resolver: Arc<TokioResolver>,
    pub bounce_domain: String,
    pub spf_include: Option<String>,
    /// Called after a check changed a domain (its status, its active key): lets the API drop
    /// what it cached about the domain.
    pub on_change: Arc<dyn Fn() + Send + Sync>,
}

enum Lookup {
    Found(Vec<String>),
    Failed(&'static str, bool),
}

impl DomainVerifier {
    async fn lookup(&self, name: &str, rtype: RecordType) -> Lookup {
        match self
            .resolver
            .lookup(format!("{}.", name.trim_end_matches('.')), rtype)
            .await
        {
            Ok(found) => {
                let values: Vec<String> = found
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|p| String::from_utf8_lossy(p))
                                .collect::<String>(),
                        ),
                        RData::MX(mx) => Some(mx.exchange.to_ascii().to_ascii_lowercase()),
                        _ => None,
                    })
                    .collect();
                if values.is_empty() {
                    Lookup::Failed("TYPE_NOT_FOUND", false)
                } else {
                    Lookup::Found(values)
                }
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(nr)))
                if nr.response_code == ResponseCode::NXDomain =>
            {
                Lookup::Failed("HOST_NOT_FOUND", false)
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(_))) => {
                Lookup::Failed("TYPE_NOT_FOUND", false)
            }
            Err(_) => Lookup::Failed("DNS_SERVER_ERROR", true),
        }
    }

    async fn check(&self, r: &DnsRecord) -> RecordCheck {
        let rtype = if r.rtype == "MX" {
            RecordType::MX
        } else {
            RecordType::TXT
        };
        let failed = |reason: &str, temporary: bool| RecordCheck {
            status: if temporary {
                "temporary_failure".into()
            } else if r.record == "DMARC" {
                "not_found".into()
            } else {
                "failed".into()
            },
            failure_reason: Some(reason.into()),
        };
        match self.lookup(&r.name, rtype).await {
            Lookup::Failed(reason, temporary) => failed(reason, temporary),
            Lookup::Found(values) => {
                let ok = match r.record {
                    "DKIM" => values.iter().any(|v| dkim_matches(v, &r.value)),
                    "RETURN_PATH" => values
                        .iter()
                        .any(|v| v.trim_end_matches('.') == r.value.trim_end_matches('.')),
                    "SPF" => values.iter().any(|v| {
                        let include = r
                            .value
                            .split_whitespace()
                            .find(|w| w.starts_with("include:"))
                            .unwrap_or("");
                        v.starts_with("v=spf1") && v.split_whitespace().any(|w| w == include)
                    }),
                    _ => values
                        .iter()
                        .any(|v| v.trim_start().to_ascii_lowercase().starts_with("v=dmarc1")),
                };
                if ok {
                    RecordCheck {
                        status: "verified".into(),
                        failure_reason: None,
                    }
                } else {
                    failed("INVALID_VALUE", false)
                }
            }
        }
    }

    /// Checks one domain now and records the outcome (and its event, on a change of verdict).
    pub async fn check_domain(
        &self,
        mut d: DomainRecord,
        keys: Vec<DkimKeyRecord>,
    ) -> Result<DomainRecord, StoreError> {
        let now = self.clock.now_ms();
        let settings = RecordSettings {
            bounce_domain: &self.bounce_domain,
            spf_include: self.spf_include.as_deref(),
        };
        let mut statuses = RecordStatuses::new();
        let all = records(&d, &keys, &settings);
        for r in &all {
            statuses.insert(r.key.clone(), self.check(r).await);
        }
        // A rotation's key whose record is live becomes the signing key.
        let mut keys = keys;
        for k in keys.iter_mut().filter(|k| k.state == KeyState::Pending) {
            if statuses
                .get(&format!("DKIM:{}", k.selector))
                .is_some_and(|c| c.status == "verified")
            {
                self.store.activate_dkim_key(&d.id, &k.id, now).await?;
                k.state = KeyState::Active;
            }
        }
        let required: Vec<&DnsRecord> = all
            .iter()
            .filter(|r| {
                r.required
                    || (r.record == "DKIM"
                        && keys.iter().any(|k| {
                            format!("DKIM:{}", k.selector) == r.key && k.state == KeyState::Active
                        }))
            })
            .collect();
        let verified = required
            .iter()
            .filter(|r| statuses.get(&r.key).is_some_and(|c| c.status == "verified"))
            .count();
        let pending_keys = keys.iter().any(|k| k.state == KeyState::Pending);
        let previous = d.status;
        let expired = now - d.created_at.max(d.updated_at) > VERIFICATION_WINDOW_MS;
        d.status = if verified == required.len() {
            DomainStatus::Verified
        } else if verified > 0 {
            DomainStatus::PartiallyVerified
        } else if expired {
            DomainStatus::Failed
        } else {
            DomainStatus::Pending
        };
        d.records_status = serde_json::to_string(&statuses).unwrap_or_default();
        d.last_checked_at = Some(now);
        d.check_attempts += 1;
        let keep_checking =
            !matches!(d.status, DomainStatus::Verified | DomainStatus::Failed) || pending_keys;
        d.next_check_at = keep_checking.then(|| {
            let exp = u32::try_from(d.check_attempts.min(9)).unwrap_or(9);
            now + (60_000_i64 * 2_i64.pow(exp)).min(6 * 3_600_000)
        });
        if d.status == DomainStatus::Verified && previous != DomainStatus::Verified {
            d.verified_at = Some(now);
        }
        let event = match d.status {
            s if s == previous => None,
            DomainStatus::Verified => Some(EventType::DomainVerified),
            DomainStatus::Failed => Some(EventType::DomainVerificationFailed),
            _ => None,
        }
        .map(|t| {
            let domain = DomainData {
                id: d.id.clone(),
                name: d.name.clone(),
                records: serde_json::to_value(&statuses).unwrap_or_default(),
            };
            NewEvent::new(None, None, t, EventData::Domain { domain }, now)
        });
        self.store.update_domain(&d, event.as_ref()).await?;
        (self.on_change)();
        Ok(d)
    }

    /// Checks the domains that are due.
    pub async fn run_once(&self) -> Result<RunOutcome, StoreError> {
        let due = self
            .store
            .due_domain_checks(self.clock.now_ms(), 16)
            .await?;
        if due.is_empty() {
            return Ok(RunOutcome::Idle);
        }
        for (project_id, id) in &due {
            let (d, keys) = self.store.get_domain(project_id, id).await?;
            self.check_domain(d, keys).await?;
        }
        Ok(RunOutcome::Worked(due.len()))
    }

    pub async fn run(self, wake: Arc<Notify>, cancel: CancellationToken, poll: Duration) {
        crate::job_loop::run_until_cancelled("domain verification", wake, cancel, poll, || {
            self.run_once()
        })
        .await;
    }
}

/// Whether a published DKIM record carries the expected key (tags compared, whitespace and
/// order ignored, as RFC 6376 §3.2 allows).
fn dkim_matches(published: &str, expected: &str) -> bool {
    let tags = |s: &str| -> std::collections::BTreeMap<String, String> {
        s.split(';')
            .filter_map(|t| t.split_once('='))
            .map(|(k, v)| {
                (
                    k.trim().to_ascii_lowercase(),
                    v.chars().filter(|c| !c.is_whitespace()).collect(),
                )
            })
            .collect()
    };
    let (p, e) = (tags(published), tags(expected));
    p.get("p").is_some_and(|k| Some(k) == e.get("p"))
        && p.get("k").map_or("rsa", String::as_str) == e.get("k").map_or("rsa", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::dkim_matches;

    #[test]
    fn dkim_records_compare_by_tags() {
        let expected = "v=DKIM1; k=rsa; p=MIIBabc";
        assert!(dkim_matches("v=DKIM1;k=rsa;p=MIIB abc", expected));
        assert!(dkim_matches("p=MIIBabc; v=DKIM1", expected));
        assert!(!dkim_matches("v=DKIM1; k=rsa; p=MIIBabd", expected));
        assert!(!dkim_matches("v=DKIM1; k=ed25519; p=MIIBabc", expected));
        assert!(!dkim_matches("v=spf1 -all", expected));
    }
}

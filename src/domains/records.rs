//! The records a domain asks the operator to publish, with their last known status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::dkim::{DkimAlgorithm, txt_record};
use crate::store::{DkimKeyRecord, DomainRecord};

/// How long a retired key's record should stay published (mail signed with it may still be
/// in transit or verified late).
pub const RETIRED_KEY_GRACE_MS: i64 = 7 * 86_400_000;

/// The result of checking one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordCheck {
    /// `pending | verified | failed | temporary_failure | not_found`.
    pub status: String,
    /// `HOST_NOT_FOUND | TYPE_NOT_FOUND | INVALID_VALUE | DNS_SERVER_ERROR`.
    pub failure_reason: Option<String>,
}

/// Check results keyed by record (`DKIM:<selector>`, `RETURN_PATH`, `SPF`, `DMARC`).
pub type RecordStatuses = BTreeMap<String, RecordCheck>;

/// One record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    pub key: String,
    pub record: &'static str,
    pub rtype: &'static str,
    pub name: String,
    pub value: String,
    pub priority: Option<u16>,
    pub required: bool,
}

/// Settings the records depend on.
pub struct RecordSettings<'a> {
    /// The MX host of Herald's inbound bounce listener (the VERP domain).
    pub bounce_domain: &'a str,
    /// `include:` for SPF advice, if the operator knows their relay's SPF record.
    pub spf_include: Option<&'a str>,
}

/// The records for a domain and its keys (retired keys included while they should stay).
pub fn records(d: &DomainRecord, keys: &[DkimKeyRecord], s: &RecordSettings<'_>) -> Vec<DnsRecord> {
    let mut out = Vec::new();
    if d.dkim_mode == "herald" {
        for k in keys {
            let algorithm = DkimAlgorithm::parse(&k.algorithm).unwrap_or(DkimAlgorithm::Rsa2048);
            out.push(DnsRecord {
                key: format!("DKIM:{}", k.selector),
                record: "DKIM",
                rtype: "TXT",
                name: format!("{}._domainkey.{}", k.selector, d.name),
                value: txt_record(algorithm, &k.public_key),
                priority: None,
                required: k.state == crate::domain::states::KeyState::Active,
            });
        }
    }
    if let Some(rp) = &d.return_path_name {
        out.push(DnsRecord {
            key: "RETURN_PATH".into(),
            record: "RETURN_PATH",
            rtype: "MX",
            name: rp.clone(),
            value: format!("{}.", s.bounce_domain.trim_end_matches('.')),
            priority: Some(10),
            required: false,
        });
        if let Some(include) = s.spf_include {
            out.push(DnsRecord {
                key: "SPF".into(),
                record: "SPF",
                rtype: "TXT",
                name: rp.clone(),
                value: format!("v=spf1 include:{include} ~all"),
                priority: None,
                required: false,
            });
        }
    }
    out.push(DnsRecord {
        key: "DMARC".into(),
        record: "DMARC",
        rtype: "TXT",
        name: format!("_dmarc.{}", d.name),
        value: "v=DMARC1; p=none;".into(),
        priority: None,
        required: false,
    });
    out
}

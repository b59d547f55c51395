//! The records a domain asks the operator to publish, with their last known status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::format_ms;
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
                required: k.state == "active",
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

/// The domain as the API shows it, records and their statuses included. Private keys are
/// never part of it.
pub fn domain_json(
    d: &DomainRecord,
    keys: &[DkimKeyRecord],
    s: &RecordSettings<'_>,
    now: i64,
) -> Value {
    let statuses: RecordStatuses = serde_json::from_str(&d.records_status).unwrap_or_default();
    let records: Vec<Value> = records(d, keys, s)
        .into_iter()
        .map(|r| {
            let check = statuses.get(&r.key);
            let mut v = json!({
                "record": r.record,
                "type": r.rtype,
                "name": r.name,
                "value": r.value,
                "status": check.map_or("pending", |c| c.status.as_str()),
                "failure_reason": check.and_then(|c| c.failure_reason.clone()),
                "required": r.required,
            });
            if let Some(p) = r.priority {
                v["priority"] = json!(p);
            }
            if let Some(selector) = r.key.strip_prefix("DKIM:")
                && let Some(k) = keys.iter().find(|k| k.selector == selector)
            {
                v["selector"] = json!(k.selector);
                v["key_state"] = json!(k.state);
                v["algorithm"] = json!(k.algorithm);
                if let Some(retired) = k.retired_at {
                    let safe_at = retired + RETIRED_KEY_GRACE_MS;
                    v["safe_to_remove"] = json!(now >= safe_at);
                    v["safe_to_remove_at"] = json!(format_ms(safe_at));
                }
            }
            v
        })
        .collect();
    json!({
        "object": "domain",
        "id": d.id,
        "name": d.name,
        "status": d.status,
        "dkim": d.dkim_mode,
        "records": records,
        "last_checked_at": d.last_checked_at.map(format_ms),
        "next_check_at": d.next_check_at.map(format_ms),
        "verified_at": d.verified_at.map(format_ms),
        "created_at": format_ms(d.created_at),
    })
}

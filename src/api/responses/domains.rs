//! Sending domains and the DNS records they ask for.

use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::format_ms;

/// A record a sending domain asks the operator to publish, with its last check.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DnsRecord)]
pub struct DnsRecordResponse {
    /// `DKIM`, `RETURN_PATH`, `SPF` or `DMARC`.
    pub record: &'static str,
    /// `TXT` or `MX`.
    #[serde(rename = "type")]
    pub rtype: &'static str,
    pub name: String,
    pub value: String,
    /// `pending`, `verified`, `failed` or `temporary_failure`.
    pub status: String,
    pub failure_reason: Option<String>,
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    /// A DKIM record's selector, its key's state (`pending`, `active`, `retired`) and algorithm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// A retired key's record: whether (and from when) it can be unpublished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_to_remove: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_to_remove_at: Option<String>,
}

/// A sending domain: its records and their statuses; never its private keys.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Domain)]
pub struct DomainResponse {
    /// Always `domain`.
    #[schema(value_type = String, example = "domain")]
    pub object: &'static str,
    pub id: String,
    pub name: String,
    pub status: String,
    /// `herald` (Herald signs) or `upstream` (the relay does).
    pub dkim: String,
    pub records: Vec<DnsRecordResponse>,
    pub last_checked_at: Option<String>,
    pub next_check_at: Option<String>,
    pub verified_at: Option<String>,
    pub created_at: String,
}

impl DomainResponse {
    /// The domain with the records `settings` ask for and their statuses at `now`.
    pub fn new(
        d: &crate::store::DomainRecord,
        keys: &[crate::store::DkimKeyRecord],
        settings: &crate::domains::records::RecordSettings<'_>,
        now: i64,
    ) -> Self {
        use crate::domains::records::{RETIRED_KEY_GRACE_MS, RecordStatuses, records};
        let statuses: RecordStatuses = serde_json::from_str(&d.records_status).unwrap_or_default();
        let records = records(d, keys, settings)
            .into_iter()
            .map(|r| {
                let check = statuses.get(&r.key);
                let key = r
                    .key
                    .strip_prefix("DKIM:")
                    .and_then(|selector| keys.iter().find(|k| k.selector == selector));
                let safe_at = key
                    .and_then(|k| k.retired_at)
                    .map(|t| t + RETIRED_KEY_GRACE_MS);
                DnsRecordResponse {
                    record: r.record,
                    rtype: r.rtype,
                    name: r.name,
                    value: r.value,
                    status: check.map_or("pending", |c| c.status.as_str()).to_owned(),
                    failure_reason: check.and_then(|c| c.failure_reason.clone()),
                    required: r.required,
                    priority: r.priority,
                    selector: key.map(|k| k.selector.clone()),
                    key_state: key.map(|k| k.state.as_str().to_owned()),
                    algorithm: key.map(|k| k.algorithm.clone()),
                    safe_to_remove: safe_at.map(|at| now >= at),
                    safe_to_remove_at: safe_at.map(format_ms),
                }
            })
            .collect();
        Self {
            object: "domain",
            id: d.id.clone(),
            name: d.name.clone(),
            status: d.status.as_str().to_owned(),
            dkim: d.dkim_mode.clone(),
            records,
            last_checked_at: d.last_checked_at.map(format_ms),
            next_check_at: d.next_check_at.map(format_ms),
            verified_at: d.verified_at.map(format_ms),
            created_at: format_ms(d.created_at),
        }
    }
}

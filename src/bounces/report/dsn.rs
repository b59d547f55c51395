//! The machine-readable part of an RFC 3464 delivery status notification.

use super::{
    Action, MAX_DIAGNOSTIC, MAX_RECIPIENTS, Report, ReportRecipient, classify_report, clip, plain,
};
use crate::domain::bounce::is_enhanced_status;

/// How much of a status part is read: a hundred recipients' fields fit many times over.
const MAX_STATUS_TEXT: usize = 256 * 1024;

/// Reads the per-message and per-recipient field groups into the report.
pub(super) fn parse_fields(text: &str, report: &mut Report) {
    for group in field_groups(clip(text, MAX_STATUS_TEXT)) {
        if report.recipients.len() >= MAX_RECIPIENTS {
            break;
        }
        let get = |name: &str| {
            group
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        if let Some(mta) = get("reporting-mta") {
            report.reporting_mta = Some(clip(typed_value(mta), 255).to_owned());
        }
        let Some(address) = recipient_of(get("final-recipient"), get("original-recipient")) else {
            continue;
        };
        let action = get("action").unwrap_or_default().to_ascii_lowercase();
        let action = match action.split_whitespace().next().unwrap_or("") {
            "delayed" => Action::Delayed,
            "delivered" | "relayed" | "expanded" => Action::Delivered,
            _ => Action::Failed,
        };
        let status = get("status")
            .and_then(|s| s.split_whitespace().next())
            .filter(|s| is_enhanced_status(s))
            .map(str::to_owned);
        let diagnostic = get("diagnostic-code")
            .map(|d| clip(typed_value(d), MAX_DIAGNOSTIC).to_owned())
            .filter(|d| !d.is_empty());
        let remote_mta = get("remote-mta").map(|m| clip(typed_value(m), 255).to_owned());
        let (kind, sub_type) = classify_report(action, status.as_deref(), diagnostic.as_deref());
        if report
            .recipients
            .iter()
            .any(|r| r.address.eq_ignore_ascii_case(&address))
        {
            continue;
        }
        report.recipients.push(ReportRecipient {
            address,
            action,
            status,
            diagnostic,
            remote_mta,
            kind,
            sub_type,
        });
    }
}

/// A recipient with no Diagnostic-Code takes the words the human-readable part says about
/// it (Postfix: "said: 550 5.1.1 …"), and is classified again with them.
pub(super) fn fill_from_text(report: &mut Report, human_text: &str) {
    if report.recipients.iter().all(|r| r.diagnostic.is_some()) {
        return;
    }
    let from_text = plain::parse(human_text, "");
    for r in report
        .recipients
        .iter_mut()
        .filter(|r| r.diagnostic.is_none())
    {
        let Some(found) = from_text
            .iter()
            .find(|f| f.address.eq_ignore_ascii_case(&r.address))
        else {
            continue;
        };
        if let Some(d) = &found.diagnostic {
            r.diagnostic = Some(d.clone());
            (r.kind, r.sub_type) = classify_report(r.action, r.status.as_deref(), Some(d));
        }
    }
}

/// Final-Recipient unless it is no Internet address (X.400, a gateway's local name such as
/// `user@sims-ms-daemon`), then Original-Recipient; either only when it has the shape of one.
fn recipient_of(final_rcpt: Option<&str>, original: Option<&str>) -> Option<String> {
    let clean = |v: Option<&str>| v.map(|v| plain::clean_address(typed_value(v)));
    let (f, o) = (clean(final_rcpt), clean(original));
    let internet = |a: &Option<String>| a.as_ref().is_some_and(|a| plain::is_internet_address(a));
    if internet(&f) {
        f
    } else if internet(&o) {
        o
    } else {
        f.or(o).filter(|a| a.contains('@'))
    }
}

/// Unfolds header-style text and splits it into groups at blank lines (RFC 3464 §2.1).
fn field_groups(text: &str) -> Vec<Vec<(String, String)>> {
    let mut groups = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                groups.push(std::mem::take(&mut current));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some(last) = current.last_mut()
                && last.1.len() < MAX_DIAGNOSTIC
            {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            current.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// `type; value` → `value` (Final-Recipient, Remote-MTA, Diagnostic-Code).
fn typed_value(v: &str) -> &str {
    v.split_once(';').map_or(v, |(_, rest)| rest).trim()
}

//! Parsing bounce and complaint reports.

use std::collections::BTreeMap;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde::Serialize;

use crate::domain::bounce::{
    BounceClass, BounceSubType, BounceType, classify_parts, is_enhanced_status,
};

/// What kind of report a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    Dsn,
    NonStandard,
    Arf,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
}

/// One recipient a report speaks of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportRecipient {
    pub address: String,
    pub action: Action,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    pub remote_mta: Option<String>,
    #[serde(rename = "type")]
    pub kind: BounceType,
    pub sub_type: BounceSubType,
}

/// A feedback-loop complaint (RFC 5965).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Complaint {
    pub feedback_type: String,
    pub user_agent: Option<String>,
    pub arrival_date: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub kind: ReportKind,
    pub recipients: Vec<ReportRecipient>,
    /// The Message-ID of the message the report is about, if it was returned.
    pub original_message_id: Option<String>,
    pub reporting_mta: Option<String>,
    pub complaint: Option<Complaint>,
}

/// Reads one report. Never fails: what cannot be understood is `Unknown` with no recipients.
pub fn parse_report(raw: &[u8]) -> Report {
    let mut report = Report {
        kind: ReportKind::Unknown,
        recipients: Vec::new(),
        original_message_id: None,
        reporting_mta: None,
        complaint: None,
    };
    let Some(msg) = MessageParser::default().parse(raw) else {
        return report;
    };
    let mut human_text = String::new();
    for part in &msg.parts {
        let (ctype, subtype) = part
            .content_type()
            .map(|c| {
                (
                    c.ctype().to_ascii_lowercase(),
                    c.subtype().unwrap_or("").to_ascii_lowercase(),
                )
            })
            .unwrap_or_else(|| ("text".into(), "plain".into()));
        match (ctype.as_str(), subtype.as_str()) {
            ("message", "delivery-status" | "global-delivery-status") => {
                let text = String::from_utf8_lossy(part.contents()).into_owned();
                parse_dsn_fields(&text, &mut report);
                report.kind = ReportKind::Dsn;
            }
            ("message", "feedback-report") => {
                report.kind = ReportKind::Arf;
            }
            ("text", "rfc822-headers") | ("message", "rfc822-headers") => {
                let text = String::from_utf8_lossy(part.contents()).into_owned();
                if report.original_message_id.is_none() {
                    report.original_message_id = header_in(&text, "message-id");
                }
            }
            _ => match &part.body {
                PartType::Message(inner) if report.original_message_id.is_none() => {
                    report.original_message_id = inner.message_id().map(|m| format!("<{m}>"));
                }
                PartType::Text(t) if human_text.len() < 64 * 1024 => {
                    human_text.push_str(t);
                    human_text.push('\n');
                }
                PartType::Html(h) if human_text.is_empty() => {
                    human_text.push_str(&strip_tags(h));
                    human_text.push('\n');
                }
                _ => {}
            },
        }
    }
    if report.kind == ReportKind::Arf {
        parse_arf(raw, &mut report);
        return report;
    }
    if report.kind == ReportKind::Dsn && !report.recipients.is_empty() {
        return report;
    }
    let subject = msg.subject().unwrap_or("").to_ascii_lowercase();
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or("")
        .to_ascii_lowercase();
    if looks_like_bounce(&subject, &from, &human_text) {
        let recipients = parse_plain(&human_text, &from);
        if !recipients.is_empty() {
            report.kind = ReportKind::NonStandard;
            report.recipients = recipients;
        }
        if report.original_message_id.is_none() {
            report.original_message_id = header_in(&human_text, "message-id");
        }
    }
    report
}

fn parse_arf(raw: &[u8], report: &mut Report) {
    match mail_auth::report::Feedback::parse_rfc5322(raw) {
        Ok(fb) => {
            let feedback_type = format!("{:?}", fb.feedback_type()).to_ascii_lowercase();
            report.complaint = Some(Complaint {
                feedback_type,
                user_agent: fb.user_agent().map(str::to_owned),
                arrival_date: fb.arrival_date(),
            });
            if let Some(rcpt) = fb.original_rcpt_to() {
                report.recipients.push(ReportRecipient {
                    address: strip_address(rcpt),
                    action: Action::Delivered,
                    status: None,
                    diagnostic: None,
                    remote_mta: None,
                    kind: BounceType::Undetermined,
                    sub_type: BounceSubType::Undetermined,
                });
            }
            if report.original_message_id.is_none() {
                report.original_message_id = fb
                    .message()
                    .or(fb.headers())
                    .and_then(|h| header_in(h, "message-id"));
            }
        }
        Err(_) => report.kind = ReportKind::Unknown,
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
            if let Some(last) = current.last_mut() {
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
fn typed_value(v: &str) -> String {
    v.split_once(';')
        .map_or(v, |(_, rest)| rest)
        .trim()
        .to_owned()
}

fn strip_address(a: &str) -> String {
    a.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_owned()
}

fn parse_dsn_fields(text: &str, report: &mut Report) {
    for group in field_groups(text) {
        let get = |name: &str| {
            group
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        if let Some(mta) = get("reporting-mta") {
            report.reporting_mta = Some(typed_value(&mta));
        }
        let Some(rcpt) = get("final-recipient").or_else(|| get("original-recipient")) else {
            continue;
        };
        let action = get("action").unwrap_or_default().to_ascii_lowercase();
        let action = match action.split_whitespace().next().unwrap_or("") {
            "delayed" => Action::Delayed,
            "delivered" | "relayed" | "expanded" => Action::Delivered,
            _ => Action::Failed,
        };
        let status = get("status")
            .and_then(|s| s.split_whitespace().next().map(str::to_owned))
            .filter(|s| is_enhanced_status(s));
        let diagnostic = get("diagnostic-code").map(|d| typed_value(&d));
        let remote_mta = get("remote-mta").map(|m| typed_value(&m));
        let (kind, sub_type) = classify_report(action, status.as_deref(), diagnostic.as_deref());
        report.recipients.push(ReportRecipient {
            address: strip_address(&typed_value(&rcpt)),
            action,
            status,
            diagnostic,
            remote_mta,
            kind,
            sub_type,
        });
    }
}

fn classify_report(
    action: Action,
    status: Option<&str>,
    diagnostic: Option<&str>,
) -> (BounceType, BounceSubType) {
    if action == Action::Delivered {
        return (BounceType::Undetermined, BounceSubType::Undetermined);
    }
    let diag = diagnostic.unwrap_or("");
    let code = basic_code(diag);
    let BounceClass { mut kind, sub_type } = classify_parts(code, status, diag);
    if kind == BounceType::Undetermined {
        kind = if action == Action::Delayed {
            BounceType::Transient
        } else {
            BounceType::Permanent
        };
    }
    (kind, sub_type)
}

/// The first SMTP reply code (4xx or 5xx) in a diagnostic text.
fn basic_code(text: &str) -> Option<u16> {
    first_reply_code(text, 400)
}

/// The first three-digit number from `lowest` to 599 in a text: the reply code a diagnostic
/// quotes (`smtp; 550 5.1.1 …`, `250 2.0.0 OK`).
pub(crate) fn first_reply_code(text: &str, lowest: u16) -> Option<u16> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|w| w.len() == 3)
        .filter_map(|w| w.parse::<u16>().ok())
        .find(|c| (lowest..600).contains(c))
}

/// A header's value in header-style text, case-insensitively.
fn header_in(text: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}:");
    text.lines()
        .find(|l| l.len() > prefix.len() && l[..prefix.len()].eq_ignore_ascii_case(&prefix))
        .map(|l| l[prefix.len()..].trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            '\n' if !in_tag => out.push('\n'),
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("<br>", "\n")
}

const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliver",
    "delivery status notification",
    "mail delivery failed",
    "returned mail",
    "failure notice",
    "delivery failure",
    "delivery failed",
    "not delivered",
    "could not be delivered",
    "nondeliverable",
    "non-deliverable",
    "delivery notification",
    "mail delivery system",
    "unzustellbar",
    "non remis",
    "delivery has failed",
    "message not delivered",
    "delayed mail",
    "delivery delayed",
    "warning: could not send",
    "mail system error",
    "rejected:",
    "returned to sender",
    "undelivered mail",
];

fn looks_like_bounce(subject: &str, from: &str, text: &str) -> bool {
    let from_daemon = [
        "mailer-daemon",
        "postmaster",
        "mail-daemon",
        "mailerdaemon",
        "noreply-dmarc",
    ]
    .iter()
    .any(|d| from.starts_with(d));
    from_daemon
        || BOUNCE_SUBJECTS.iter().any(|s| subject.contains(s))
        || temporary_or_permanent(&text.to_ascii_lowercase()).is_some()
}

const TEMPORARY: &[&str] = &[
    "temporary error",
    "transient non-fatal",
    "has not yet been delivered",
    "not yet been delivered",
    "will be retried",
    "will continue to try",
    "will keep trying",
    "could not send message for past",
    "delivery is delayed",
    "delivery has been delayed",
    "delivery delayed",
    "still trying",
    "is delayed",
    "will retry",
    "retry timeout not exceeded",
    "queued for later delivery",
];
const PERMANENT: &[&str] = &[
    "permanent error",
    "permanent fatal",
    "given up",
    "giving up",
    "could not be delivered",
    "couldn't be delivered",
    "failed permanently",
    "undeliverable",
    "unable to deliver",
    "wasn't able to deliver",
    "was not delivered",
    "cannot be reached",
    "delivery has failed",
    "delivery to the following recipient",
    "following address(es) failed",
    "following addresses had permanent",
    "not delivered to",
    "message could not be sent",
    "rejected your message",
    "the following recipient(s) cannot be reached",
    "delivery failed",
    "failed to deliver",
    "could not deliver",
];

fn temporary_or_permanent(lower: &str) -> Option<bool> {
    if TEMPORARY.iter().any(|p| lower.contains(p)) {
        Some(true)
    } else if PERMANENT.iter().any(|p| lower.contains(p)) {
        Some(false)
    } else {
        None
    }
}

/// Where the human-readable part stops and the returned message begins.
const ORIGINAL_MARKERS: &[&str] = &[
    "--- below this line is a copy of the message",
    "------ this is a copy of the message",
    "----- original message -----",
    "original message headers",
    "--- the header of the original message",
    "------ original message follows",
    "----- unsent message below -----",
    "----- message header follows -----",
    "---------- forwarded message",
    "content-type: message/rfc822",
];

fn find_addresses(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes: Vec<char> = line.chars().collect();
    for (i, c) in bytes.iter().enumerate() {
        if *c != '@' || i == 0 {
            continue;
        }
        let is_local = |c: &char| c.is_ascii_alphanumeric() || "._%+-=!#$&'*/?^`{|}~".contains(*c);
        let is_dom = |c: &char| c.is_ascii_alphanumeric() || *c == '.' || *c == '-';
        let mut start = i;
        while start > 0 && is_local(&bytes[start - 1]) {
            start -= 1;
        }
        let mut end = i + 1;
        while end < bytes.len() && is_dom(&bytes[end]) {
            end += 1;
        }
        let local: String = bytes[start..i].iter().collect();
        let domain: String = bytes[i + 1..end]
            .iter()
            .collect::<String>()
            .trim_end_matches('.')
            .to_owned();
        if !local.is_empty() && domain.contains('.') && !local.starts_with('.') {
            out.push(format!("{local}@{domain}"));
        }
    }
    out
}

/// How much a diagnostic says: a reply code, a recognisable reason, some words.
fn informative(diag: &str) -> u8 {
    let class = classify_parts(basic_code(diag), None, diag);
    u8::from(basic_code(diag).is_some()) * 4
        + u8::from(!matches!(
            class.sub_type,
            BounceSubType::General | BounceSubType::Undetermined
        )) * 2
        + u8::from(diag.len() > 20)
}

fn is_system_address(addr: &str, bounce_from: &str) -> bool {
    let lower = addr.to_ascii_lowercase();
    let local = lower.split('@').next().unwrap_or("");
    lower == bounce_from
        || [
            "mailer-daemon",
            "postmaster",
            "mail-daemon",
            "noreply",
            "no-reply",
            "abuse",
            "root",
        ]
        .contains(&local)
        || local.starts_with("bounces+")
}

/// Plain-text bounces (qmail, Exim, Sendmail, Exchange, Yahoo, GroupWise, Lotus Notes, and
/// generic "the following addresses failed" texts): every address in the human-readable part,
/// with the text that follows it as its diagnostic.
fn parse_plain(text: &str, bounce_from: &str) -> Vec<ReportRecipient> {
    let lower_all = text.to_ascii_lowercase();
    let cut = ORIGINAL_MARKERS
        .iter()
        .filter_map(|m| lower_all.find(m))
        .min()
        .unwrap_or(text.len());
    let human = &text[..cut];
    let temporary = temporary_or_permanent(&human.to_ascii_lowercase());
    let lines: Vec<&str> = human.lines().collect();
    let mut found: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let lower_line = trimmed.to_ascii_lowercase();
        // Header-like lines of a quoted original are not recipients.
        if [
            "from:",
            "sender:",
            "return-path:",
            "reply-to:",
            "subject:",
            "message-id:",
            "received:",
            "date:",
        ]
        .iter()
        .any(|h| lower_line.starts_with(h))
        {
            continue;
        }
        for addr in find_addresses(line) {
            if is_system_address(&addr, bounce_from) {
                continue;
            }
            // The diagnostic: the rest of this line and the following lines, up to a blank
            // line or the next address.
            let mut diag: Vec<String> = Vec::new();
            let rest = line
                .split(&addr)
                .nth(1)
                .unwrap_or("")
                .trim_matches(|c: char| c == '>' || c == ':' || c.is_whitespace());
            if rest.len() > 3 {
                diag.push(rest.to_owned());
            }
            for next in lines.iter().skip(i + 1).take(8) {
                if next.trim().is_empty() && !diag.is_empty() {
                    break;
                }
                if !find_addresses(next).is_empty()
                    && !next.to_ascii_lowercase().contains("said")
                    && basic_code(next).is_none()
                {
                    break;
                }
                if !next.trim().is_empty() {
                    diag.push(next.trim().to_owned());
                }
            }
            let diag = diag.join(" ");
            let key = addr.to_ascii_lowercase();
            match found.get(&key) {
                Some((_, old)) if informative(old) >= informative(&diag) => {}
                _ => {
                    let order = found.get(&key).map_or(found.len(), |(o, _)| *o);
                    found.insert(key, (order, diag));
                }
            }
        }
    }
    let mut ordered: Vec<(usize, String, String)> =
        found.into_iter().map(|(a, (o, d))| (o, a, d)).collect();
    ordered.sort();
    ordered
        .into_iter()
        .map(|(_, address, diag)| {
            let code = basic_code(&diag);
            let status = diag
                .split(|c: char| c.is_whitespace() || "()[];,#<>'\"".contains(c))
                .find(|w| is_enhanced_status(w))
                .map(str::to_owned);
            let action = match (temporary, code) {
                (_, Some(c)) if (400..500).contains(&c) => Action::Delayed,
                (Some(true), None) => Action::Delayed,
                _ => Action::Failed,
            };
            let (kind, sub_type) = classify_report(action, status.as_deref(), Some(&diag));
            ReportRecipient {
                address,
                action,
                status,
                diagnostic: (!diag.is_empty()).then_some(diag),
                remote_mta: None,
                kind,
                sub_type,
            }
        })
        .collect()
}

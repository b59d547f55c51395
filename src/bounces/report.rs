//! Parsing bounce and complaint reports.
//!
//! Every reader here takes bytes from strangers, so each is bounded before it works: the
//! message is cut at [`MAX_PARSED_BYTES`], the human-readable text at [`MAX_HUMAN_TEXT`], a
//! report names at most [`MAX_RECIPIENTS`] recipients with diagnostics of at most
//! [`MAX_DIAGNOSTIC`] bytes, and every pass over the text is linear in its length.

mod dsn;
mod plain;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde::Serialize;

use crate::domain::bounce::{BounceClass, BounceSubType, BounceType, classify_parts};

/// How much of a message is read: bounces are small; what follows is the returned original.
pub const MAX_PARSED_BYTES: usize = 2 * 1024 * 1024;
/// How much human-readable text is searched for recipients.
pub const MAX_HUMAN_TEXT: usize = 64 * 1024;
/// How many recipients one report may name (a real one names a handful).
pub const MAX_RECIPIENTS: usize = 100;
/// How long a recipient's diagnostic may be, in bytes.
pub const MAX_DIAGNOSTIC: usize = 1000;

/// What kind of report a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    Dsn,
    NonStandard,
    Arf,
    Unknown,
}

impl ReportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dsn => "dsn",
            Self::NonStandard => "non_standard",
            Self::Arf => "arf",
            Self::Unknown => "unknown",
        }
    }
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
    let raw = raw.get(..MAX_PARSED_BYTES).unwrap_or(raw);
    let raw = message_start(raw);
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
    let mut dsn_seen = false;
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
            ("message", "delivery-status" | "global-delivery-status") if !dsn_seen => {
                // Only the first status part: a second one is in a returned message.
                dsn_seen = true;
                let text = String::from_utf8_lossy(part.contents());
                dsn::parse_fields(&text, &mut report);
                report.kind = ReportKind::Dsn;
            }
            ("message", "feedback-report") => {
                report.kind = ReportKind::Arf;
            }
            ("text", "rfc822-headers") | ("message", "rfc822-headers") => {
                if report.original_message_id.is_none() {
                    let text = String::from_utf8_lossy(part.contents());
                    report.original_message_id = header_in(&text, "message-id");
                }
            }
            _ => match &part.body {
                PartType::Message(inner) if report.original_message_id.is_none() => {
                    report.original_message_id = inner.message_id().map(|m| format!("<{m}>"));
                }
                PartType::Text(t) if human_text.len() < MAX_HUMAN_TEXT => {
                    push_clipped(&mut human_text, t);
                }
                PartType::Html(h) if human_text.is_empty() => {
                    push_clipped(&mut human_text, &strip_tags(clip(h, MAX_HUMAN_TEXT)));
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
        dsn::fill_from_text(&mut report, &human_text);
        return report;
    }
    let subject = msg.subject().unwrap_or("");
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or("")
        .to_ascii_lowercase();
    // Exim and Gmail name the failed addresses in a header: the list to believe.
    let failed_header: Vec<String> = msg
        .headers_raw()
        .filter(|(name, _)| name.eq_ignore_ascii_case("x-failed-recipients"))
        .flat_map(|(_, v)| v.split(','))
        .map(plain::clean_address)
        .filter(|a| plain::is_internet_address(a))
        .take(MAX_RECIPIENTS)
        .collect();
    // Auto-replies say so in a header of their own; they are not bounces, whatever they say.
    let auto_reply = msg.headers_raw().any(|(name, _)| {
        ["x-autoreply", "x-autorespond"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
    });
    if auto_reply && failed_header.is_empty() {
        return report;
    }
    if plain::looks_like_bounce(subject, &from, &human_text) || !failed_header.is_empty() {
        // DSN fields pasted into the text of a message that has no status part.
        // (No recipient so far: a status part, if any, named none.)
        dsn::parse_fields(&human_text, &mut report);
        let mut recipients = if report.recipients.is_empty() {
            plain::parse(&human_text, &from)
        } else {
            dsn::fill_from_text(&mut report, &human_text);
            std::mem::take(&mut report.recipients)
        };
        if !failed_header.is_empty() {
            recipients.retain(|r| {
                failed_header
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(&r.address))
            });
            for address in &failed_header {
                if !recipients
                    .iter()
                    .any(|r| r.address.eq_ignore_ascii_case(address))
                {
                    recipients.push(plain::recipient(
                        address.clone(),
                        String::new(),
                        Some(false),
                    ));
                }
            }
        }
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

/// Where the message's header section starts: after blank space and an mbox `From ` line,
/// which saved messages often carry and which would hide every header behind them.
fn message_start(raw: &[u8]) -> &[u8] {
    let start = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(raw.len());
    let raw = raw.get(start..).unwrap_or(&[]);
    if raw.starts_with(b"From ") {
        let next = memchr::memchr(b'\n', raw).map_or(raw.len(), |i| i + 1);
        return raw.get(next..).unwrap_or(&[]);
    }
    raw
}

fn parse_arf(raw: &[u8], report: &mut Report) {
    match mail_auth::report::Feedback::parse_rfc5322(raw) {
        Ok(fb) => {
            let feedback_type = format!("{:?}", fb.feedback_type()).to_ascii_lowercase();
            report.complaint = Some(Complaint {
                feedback_type,
                user_agent: fb.user_agent().map(|u| clip(u, MAX_DIAGNOSTIC).to_owned()),
                arrival_date: fb.arrival_date(),
            });
            if let Some(rcpt) = fb.original_rcpt_to() {
                report.recipients.push(ReportRecipient {
                    address: clip(&strip_address(rcpt), 320).to_owned(),
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

/// The classification of one reported recipient: from its status and diagnostic, and when
/// they say nothing, from the report's action.
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
    let BounceClass {
        mut kind,
        mut sub_type,
    } = classify_parts(code, status, diag);
    // A remote MTA that returns the message for a reason that was only ever temporary (a
    // 4xx, a timeout) has given up retrying.
    let temporary = status.is_some_and(|s| s.starts_with('4'))
        || code.is_some_and(|c| (400..500).contains(&c))
        || kind == BounceType::Transient;
    let unexplained = matches!(
        sub_type,
        BounceSubType::General | BounceSubType::Undetermined
    );
    if action == Action::Failed && temporary && unexplained {
        sub_type = BounceSubType::Expired;
        kind = BounceType::Permanent;
    }
    // A delay report for no reason of its own: the message is ageing in a remote queue, the
    // warning before a give-up (Sisimai reads it as `expired` too).
    if action == Action::Delayed && unexplained {
        sub_type = BounceSubType::Expired;
    }
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

/// A header's value in header-style text, case-insensitively, at most 998 bytes.
fn header_in(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        let v = v.trim();
        (n.trim_end().eq_ignore_ascii_case(name) && !v.is_empty()).then(|| clip(v, 998).to_owned())
    })
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub(crate) fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// Appends a part's text, stopping at [`MAX_HUMAN_TEXT`].
fn push_clipped(out: &mut String, text: &str) {
    let room = MAX_HUMAN_TEXT.saturating_sub(out.len());
    out.push_str(clip(text, room));
    out.push('\n');
}

fn strip_address(a: &str) -> String {
    a.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_owned()
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    let mut tag = String::new();
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                tag.clear();
            }
            '>' if in_tag => {
                in_tag = false;
                let name = tag.trim_start_matches('/').to_ascii_lowercase();
                let block = ["br", "p", "div", "tr", "li", "table", "h1", "h2", "h3"]
                    .iter()
                    .any(|b| name.split([' ', '/']).next() == Some(b));
                out.push(if block { '\n' } else { ' ' });
            }
            c if in_tag => {
                if tag.len() < 16 {
                    tag.push(c);
                }
            }
            c => out.push(c),
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests;

//! Plain-text bounces (qmail, Exim, Sendmail, Exchange, Yahoo, GroupWise, Lotus Notes, and
//! generic "the following addresses failed" texts): every address in the human-readable part,
//! with the words that follow it as its diagnostic.
//!
//! Linear in the text: each line is scanned for addresses once, each address's diagnostic is
//! at most [`MAX_DIAGNOSTIC`] bytes from the lines after it, and at most
//! [`MAX_OCCURRENCES`] addresses are looked at.

use std::collections::HashMap;

use super::{
    Action, MAX_DIAGNOSTIC, MAX_RECIPIENTS, ReportRecipient, basic_code, classify_report, clip,
};
use crate::domain::bounce::{BounceSubType, classify_parts, is_enhanced_status};

/// How many address occurrences are weighed (a real bounce has a few dozen at most).
const MAX_OCCURRENCES: usize = 1000;
/// How many lines after an address may belong to its diagnostic.
const DIAGNOSTIC_LINES: usize = 8;

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

/// Whether a message without a status part reads like a bounce at all.
pub(super) fn looks_like_bounce(subject: &str, from: &str, text: &str) -> bool {
    let subject = subject.to_ascii_lowercase();
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
    "not a valid user",
    "no such user",
    "user unknown",
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
    "original message follows",
    "-----original message-----",
    "included is a copy of the message",
    "the header of the original message",
    "original message header",
    "content-type: text/rfc822-headers",
    "----- unsent message below -----",
    "----- message header follows -----",
    "---------- forwarded message",
    "content-type: message/rfc822",
];

/// Lines of a quoted original, whose addresses are not recipients.
const HEADER_LINES: &[&str] = &[
    "from:",
    "sender:",
    "return-path:",
    "reply-to:",
    "subject:",
    "message-id:",
    "received:",
    "date:",
    "in-reply-to:",
    "references:",
    "list-",
    "dkim-signature:",
    "reporting-mta:",
    // Exchange quotes the original as "Your message  To: …  Subject: …  Sent: …".
    "to:",
    "cc:",
    "sent:",
];

/// Reads the recipients a plain-text bounce names.
pub(super) fn parse(text: &str, bounce_from: &str) -> Vec<ReportRecipient> {
    let lower_all = text.to_ascii_lowercase();
    let cut = ORIGINAL_MARKERS
        .iter()
        .filter_map(|m| lower_all.find(m))
        .min()
        .unwrap_or(text.len());
    let human = text.get(..cut).unwrap_or(text);
    let temporary = temporary_or_permanent(lower_all.get(..cut).unwrap_or(&lower_all));
    let lines: Vec<Line<'_>> = human.lines().map(Line::new).collect();
    let mut found: Vec<(String, String)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut occurrences = 0;
    'lines: for (i, line) in lines.iter().enumerate() {
        if line.quoted_header {
            continue;
        }
        for &(start, end) in &line.addresses {
            occurrences += 1;
            if occurrences > MAX_OCCURRENCES {
                break 'lines;
            }
            let Some(addr) = line.text.get(start..end).map(clean_address) else {
                continue;
            };
            if !is_internet_address(&addr)
                || is_system_address(&addr, bounce_from)
                || names_the_sender(line.text, start)
            {
                continue;
            }
            let before = line.text.get(..start).unwrap_or("");
            let rest = line.text.get(end..).unwrap_or("");
            let diag = diagnostic_after(before, rest, lines.get(i + 1..).unwrap_or(&[]));
            let key = addr.to_ascii_lowercase();
            if let Some(&n) = index.get(&key) {
                if let Some(old) = found.get_mut(n)
                    && informative(&diag) > informative(&old.1)
                {
                    old.1 = diag;
                }
            } else if found.len() < MAX_RECIPIENTS {
                index.insert(key, found.len());
                found.push((addr, diag));
            }
        }
    }
    found
        .into_iter()
        .map(|(address, diag)| recipient(address, diag, temporary))
        .collect()
}

pub(super) fn recipient(address: String, diag: String, temporary: Option<bool>) -> ReportRecipient {
    let code = basic_code(&diag);
    let status = diag
        .split(|c: char| c.is_whitespace() || "()[];,#<>'\"".contains(c))
        .find(|w| is_enhanced_status(w))
        .map(str::to_owned);
    let action = match (
        temporary,
        code,
        status.as_deref().map(|s| s.as_bytes().first()),
    ) {
        (_, _, Some(Some(b'4'))) => Action::Delayed,
        (_, _, Some(Some(b'5'))) => Action::Failed,
        (_, Some(c), _) if (400..500).contains(&c) => Action::Delayed,
        (Some(true), None, _) => Action::Delayed,
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
}

/// One line of the human-readable part, scanned once.
struct Line<'a> {
    text: &'a str,
    /// Byte ranges of the addresses in it.
    addresses: Vec<(usize, usize)>,
    has_code: bool,
    says: bool,
    quoted_header: bool,
}

impl<'a> Line<'a> {
    fn new(text: &'a str) -> Self {
        let head = clip(text.trim_start(), 32).to_ascii_lowercase();
        let lower_said = text.len() < 4096 && text.to_ascii_lowercase().contains("said");
        Self {
            text,
            addresses: find_addresses(text),
            has_code: basic_code(clip(text, 4096)).is_some(),
            says: lower_said,
            // A quoted original (`> From: …`) or one of its header lines.
            quoted_header: head.starts_with('>')
                || head.starts_with("(expanded from")
                || head.starts_with("(generated from")
                || HEADER_LINES.iter().any(|h| head.starts_with(h)),
        }
    }
}

/// The diagnostic of an address: the rest of its line and the lines after it, up to a blank
/// line or the next address (unless that line quotes the remote server's reply); when the line
/// says nothing after the address, what it says before it ("Mailbox full: x@y").
fn diagnostic_after(before: &str, rest: &str, next: &[Line<'_>]) -> String {
    let punctuation = |c: char| c == '>' || c == '<' || c == ':' || c == ',' || c.is_whitespace();
    let rest = rest.trim_matches(punctuation);
    let before = before.trim_matches(punctuation);
    let mut diag = String::new();
    if rest.len() > 3 {
        diag.push_str(clip(rest, MAX_DIAGNOSTIC));
    } else if before.len() > 3 {
        diag.push_str(clip(before, MAX_DIAGNOSTIC));
    }
    for line in next.iter().take(DIAGNOSTIC_LINES) {
        let t = line.text.trim();
        if t.is_empty() {
            if diag.is_empty() {
                continue;
            }
            break;
        }
        if !line.addresses.is_empty() && !line.says && !line.has_code {
            break;
        }
        if diag.len() >= MAX_DIAGNOSTIC {
            break;
        }
        if !diag.is_empty() {
            diag.push(' ');
        }
        diag.push_str(clip(t, MAX_DIAGNOSTIC - diag.len().min(MAX_DIAGNOSTIC)));
    }
    clip(&diag, MAX_DIAGNOSTIC).to_owned()
}

/// Whether the words just before an address introduce the sender (`From: x`, `MAIL FROM:<x>`,
/// a transcript's `*  From: x`): the sender is never the failed recipient.
fn names_the_sender(line: &str, start: usize) -> bool {
    let before = line
        .as_bytes()
        .get(start.saturating_sub(16)..start)
        .unwrap_or(&[]);
    let before = String::from_utf8_lossy(before).to_ascii_lowercase();
    let before = before.trim_end_matches([' ', '<', '"', '\t']);
    before.ends_with("from:") || before.ends_with("sender:") || before.ends_with("envelope-from")
}

/// How much a diagnostic says: a reply code, a recognisable reason, some words.
fn informative(diag: &str) -> u8 {
    let code = basic_code(diag);
    let class = classify_parts(code, None, diag);
    u8::from(code.is_some()) * 4
        + u8::from(!matches!(
            class.sub_type,
            BounceSubType::General | BounceSubType::Undetermined
        )) * 2
        + u8::from(diag.len() > 20)
}

fn is_local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-=!#$&'*/?^`{|}~".contains(&b)
}

fn is_domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

/// The byte ranges of the things shaped like `local@domain.tld` in a line. Each byte is looked
/// at no more than three times (as a candidate `@`, as a domain, as a local part).
pub(super) fn find_addresses(line: &str) -> Vec<(usize, usize)> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut floor = 0;
    for at in memchr::memchr_iter(b'@', bytes) {
        let mut start = at;
        while start > floor && bytes.get(start - 1).copied().is_some_and(is_local_byte) {
            start -= 1;
        }
        let mut end = at + 1;
        while bytes.get(end).copied().is_some_and(is_domain_byte) {
            end += 1;
        }
        floor = at + 1;
        // Trailing dots and hyphens end a sentence, not a domain.
        while end > at + 1 && matches!(bytes.get(end - 1), Some(b'.' | b'-')) {
            end -= 1;
        }
        // Leading quotes and dots are punctuation around the address.
        while start < at && matches!(bytes.get(start), Some(b'\'' | b'`' | b'.' | b'=' | b'/')) {
            start += 1;
        }
        let domain = bytes.get(at + 1..end).unwrap_or(&[]);
        if start < at && domain.contains(&b'.') {
            out.push((start, end));
        }
    }
    out
}

/// An address as a bounce quotes it, without what surrounds it: angle brackets, quotes,
/// `rfc822;` and `smtp=`-style prefixes, a trailing dot. The domain in lower case. At most
/// 330 bytes.
pub(crate) fn clean_address(raw: &str) -> String {
    // No address is longer (RFC 5321: 64 + 1 + 255); what is, is cut and fails validation.
    let mut a =
        clip(raw.trim(), 330).trim_matches(['<', '>', '"', '\'', '`', '(', ')', '[', ']', ' ']);
    for prefix in [
        "rfc822;", "rfc822:", "smtp;", "smtp=", "smtp:", "to=", "mailto:",
    ] {
        if a.len() > prefix.len()
            && a.get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        {
            a = a.get(prefix.len()..).unwrap_or(a);
        }
    }
    let a = a
        .trim()
        .trim_matches(['<', '>', '"', '\'', '`'])
        .trim_end_matches('.');
    match a.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => a.to_owned(),
    }
}

/// `local@domain.tld` with an ASCII domain of dotted labels: an Internet mail address, not an
/// X.400 form or a gateway's local name.
pub(crate) fn is_internet_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !local.ends_with(['.', '='])
        && local.len() <= 64
        && !local.contains(['@', ' ', '<', '>'])
        && domain.len() <= 255
        && domain.contains('.')
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(is_domain_byte))
        && domain
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()))
}

/// Addresses a bounce names that are never the failed recipient: the daemon's own, mailing
/// list machinery, Herald's return path.
fn is_system_address(addr: &str, bounce_from: &str) -> bool {
    let lower = addr.to_ascii_lowercase();
    let local = lower.split('@').next().unwrap_or("");
    lower == bounce_from
        || [
            "mailer-daemon",
            "postmaster",
            "mail-daemon",
            "mailerdaemon",
            "noreply",
            "no-reply",
            "abuse",
            "root",
            "mailman",
            "majordomo",
            "listserv",
            "listproc",
        ]
        .contains(&local)
        || local.starts_with("bounces+")
        || local.starts_with("owner-")
        || ["-owner", "-request", "-admin", "-bounces", "-bounce"]
            .iter()
            .any(|s| local.ends_with(s))
}

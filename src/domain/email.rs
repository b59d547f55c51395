//! An outgoing email as Herald accepted it, and the rules its parts must follow.
//!
//! Every way into Herald fills a [`draft::Draft`], whose rules make it an [`OutgoingEmail`]
//! (or list every problem with its JSON pointer); from then on the email is known to be valid.

use std::collections::BTreeMap;

pub mod draft;
pub mod submitted;

use crate::domain::address::{EmailAddress, Mailbox};

/// Limits on one email. Operators may change them in configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Unique recipients across to, cc and bcc.
    pub max_recipients: usize,
    /// The built MIME message, in bytes.
    pub max_message_bytes: usize,
    pub max_tags: usize,
    pub max_metadata_keys: usize,
    pub max_metadata_value_chars: usize,
    pub max_metadata_bytes: usize,
    pub max_subject_chars: usize,
    pub max_custom_headers: usize,
    pub max_attachments: usize,
    /// How far ahead `scheduled_at` may be, in milliseconds.
    pub max_schedule_horizon_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_recipients: 50,
            max_message_bytes: 10 * 1024 * 1024,
            max_tags: 10,
            max_metadata_keys: 20,
            max_metadata_value_chars: 500,
            max_metadata_bytes: 4096,
            max_subject_chars: 998,
            max_custom_headers: 50,
            max_attachments: 100,
            max_schedule_horizon_ms: 72 * 3600 * 1000,
        }
    }
}

/// How a recipient was addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientKind {
    To,
    Cc,
    Bcc,
}

impl RecipientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::To => "to",
            Self::Cc => "cc",
            Self::Bcc => "bcc",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::To, Self::Cc, Self::Bcc]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    pub content: Vec<u8>,
    pub content_type: String,
    /// Set for inline parts referenced from the HTML as `cid:<content_id>`.
    pub content_id: Option<String>,
    pub inline: bool,
}

/// A validated email, ready to be built and stored.
#[derive(Debug, Clone)]
pub struct OutgoingEmail {
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Custom headers in request order; names are checked, values carry no line breaks.
    pub headers: Vec<(String, String)>,
    pub attachments: Vec<Attachment>,
    pub tags: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub stream: String,
    /// Epoch milliseconds; `None` means as soon as possible.
    pub scheduled_at: Option<i64>,
    /// Epoch milliseconds after which the email is worthless and must not be sent.
    pub expires_at: Option<i64>,
}

impl OutgoingEmail {
    /// Every distinct envelope recipient, in to, cc, bcc order. An address given twice is
    /// delivered once (the first mention wins).
    pub fn recipients(&self) -> Vec<(RecipientKind, &Mailbox)> {
        // A set: linear in the number of addresses, whatever a request lists.
        let mut seen: std::collections::HashSet<&EmailAddress> = std::collections::HashSet::new();
        let all = self
            .to
            .iter()
            .map(|m| (RecipientKind::To, m))
            .chain(self.cc.iter().map(|m| (RecipientKind::Cc, m)))
            .chain(self.bcc.iter().map(|m| (RecipientKind::Bcc, m)));
        let mut out = Vec::new();
        for (kind, m) in all {
            if seen.insert(&m.email) {
                out.push((kind, m));
            }
        }
        out
    }
}

/// Headers Herald sets itself or that would change the envelope; custom headers may not use them.
pub const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "reply-to",
    "date",
    "message-id",
    "content-type",
    "content-transfer-encoding",
    "mime-version",
    "dkim-signature",
    "received",
    "return-path",
    "sender",
];

pub fn is_reserved_header(name: &str) -> bool {
    RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str())
}

/// RFC 5322 §2.2: printable US-ASCII except the colon.
pub fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 76
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// `[A-Za-z0-9_-]{1,max}`: the shape of tags, metadata keys and stream names.
pub fn is_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A content type for an attachment that did not say, from its file extension.
pub fn content_type_for(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "txt" => "text/plain",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "ics" => "text/calendar",
        "json" => "application/json",
        "xml" => "application/xml",
        "zip" => "application/zip",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_headers_are_case_insensitive() {
        assert!(is_reserved_header("BCC"));
        assert!(is_reserved_header("Message-Id"));
        assert!(!is_reserved_header("X-Entity-Ref-ID"));
    }

    #[test]
    fn header_names_follow_rfc5322() {
        assert!(is_valid_header_name("X-Entity-Ref-ID"));
        assert!(!is_valid_header_name("X Bad"));
        assert!(!is_valid_header_name("X:Bad"));
        assert!(!is_valid_header_name(""));
        assert!(!is_valid_header_name("X-\u{e9}"));
    }

    #[test]
    fn sniffs_content_types() {
        assert_eq!(content_type_for("INV-1042.PDF"), "application/pdf");
        assert_eq!(content_type_for("noext"), "application/octet-stream");
    }
}

//! SMTP replies and their classification into bounce classes.
//!
//! The class vocabulary is API.md's bounce object: `type` says whether trying again can
//! help, `sub_type` says why. Classification follows the enhanced status code of RFC 3463
//! where the reply has one and falls back to the basic reply code of RFC 5321 §4.2.1.

use serde::Serialize;

/// Where in the SMTP conversation a reply (or a failure) happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpPhase {
    Connect,
    Helo,
    Auth,
    Mail,
    Rcpt,
    Data,
    AsyncDsn,
}

impl SmtpPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Helo => "helo",
            Self::Auth => "auth",
            Self::Mail => "mail",
            Self::Rcpt => "rcpt",
            Self::Data => "data",
            Self::AsyncDsn => "async_dsn",
        }
    }
}

/// One SMTP reply as the server sent it: the basic code, the RFC 3463 enhanced code when
/// the text starts with one, and the whole text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmtpReply {
    pub code: u16,
    pub enhanced_status: Option<String>,
    /// The full reply as a human would read it: `550 5.1.1 User unknown`.
    pub response: String,
}

impl SmtpReply {
    /// Builds a reply from its code and text lines; the enhanced code is the text's first word
    /// when that word has the `class.subject.detail` shape.
    pub fn new(code: u16, text: &str) -> Self {
        let text = text.trim();
        let enhanced_status = text
            .split_whitespace()
            .next()
            .filter(|w| is_enhanced_status(w))
            .map(str::to_owned);
        let response = if text.is_empty() {
            code.to_string()
        } else {
            format!("{code} {text}")
        };
        Self {
            code,
            enhanced_status,
            response,
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
}

/// `class.subject.detail` with class 2, 4 or 5 (RFC 3463 §2).
pub fn is_enhanced_status(word: &str) -> bool {
    let mut parts = word.split('.');
    let number = |p: Option<&str>| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
    };
    matches!(parts.next(), Some("2" | "4" | "5"))
        && number(parts.next())
        && number(parts.next())
        && parts.next().is_none()
}

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BounceType {
    /// The address or message will never be accepted as it is.
    Permanent,
    /// It may be accepted later.
    Transient,
    /// The report does not say.
    Undetermined,
}

/// Why the mail was refused: one value for each thing an operator would do differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BounceSubType {
    /// Refused with no more specific reason.
    General,
    /// The mailbox does not exist (x.1.1, x.1.6): the address is dead.
    NoEmail,
    /// The mailbox exists but is disabled or suspended (x.2.1): it may come back, or not.
    MailboxDisabled,
    /// Herald did not try: the address is on the suppression list.
    Suppressed,
    /// The mailbox is over quota (x.2.2).
    MailboxFull,
    /// The message is larger than the receiver takes (x.2.3, x.3.4).
    MessageTooLarge,
    /// The content was judged spam (x.6.x, x.7.1 with content wording).
    ContentRejected,
    /// A virus or a forbidden attachment.
    AttachmentRejected,
    /// SPF, DKIM or DMARC did not pass (x.7.20 to x.7.27): fix the domain's records.
    AuthFailed,
    /// The sending IP or domain is on a block list or has a poor reputation, or its reverse
    /// DNS is missing: fix the sender, not the address.
    ReputationBlocked,
    /// Too much mail too fast (x.7.28, provider throttles): slow down.
    RateLimited,
    /// The receiver refuses to relay for this sender: a routing or configuration mistake.
    RelayDenied,
    /// Refused by the receiver's policy for another reason (x.7.x).
    PolicyBlocked,
    /// The recipient's domain does not resolve or has no mail server (x.1.2, x.4.4).
    DnsFailure,
    /// Herald, or a remote MTA that had accepted the message, gave up retrying.
    Expired,
    /// Nothing tells.
    Undetermined,
}

impl BounceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::Transient => "transient",
            Self::Undetermined => "undetermined",
        }
    }
}

impl BounceSubType {
    pub const ALL: [Self; 16] = [
        Self::General,
        Self::NoEmail,
        Self::MailboxDisabled,
        Self::Suppressed,
        Self::MailboxFull,
        Self::MessageTooLarge,
        Self::ContentRejected,
        Self::AttachmentRejected,
        Self::AuthFailed,
        Self::ReputationBlocked,
        Self::RateLimited,
        Self::RelayDenied,
        Self::PolicyBlocked,
        Self::DnsFailure,
        Self::Expired,
        Self::Undetermined,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::General => "general",
            Self::NoEmail => "no_email",
            Self::MailboxDisabled => "mailbox_disabled",
            Self::Suppressed => "suppressed",
            Self::MailboxFull => "mailbox_full",
            Self::MessageTooLarge => "message_too_large",
            Self::ContentRejected => "content_rejected",
            Self::AttachmentRejected => "attachment_rejected",
            Self::AuthFailed => "auth_failed",
            Self::ReputationBlocked => "reputation_blocked",
            Self::RateLimited => "rate_limited",
            Self::RelayDenied => "relay_denied",
            Self::PolicyBlocked => "policy_blocked",
            Self::DnsFailure => "dns_failure",
            Self::Expired => "expired",
            Self::Undetermined => "undetermined",
        }
    }
}

/// A classified bounce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BounceClass {
    #[serde(rename = "type")]
    pub kind: BounceType,
    pub sub_type: BounceSubType,
}

mod classify;

pub use classify::{classify, classify_parts};

#[cfg(test)]
mod tests {
    use super::*;

    fn class(code: u16, text: &str) -> (BounceType, BounceSubType) {
        let c = classify(&SmtpReply::new(code, text));
        (c.kind, c.sub_type)
    }

    #[test]
    fn keeps_the_enhanced_code_when_present() {
        let r = SmtpReply::new(550, "5.1.1 <zed@example.net>: Recipient address rejected");
        assert_eq!(r.enhanced_status.as_deref(), Some("5.1.1"));
        assert_eq!(
            r.response,
            "550 5.1.1 <zed@example.net>: Recipient address rejected"
        );
        assert_eq!(SmtpReply::new(451, "Try later").enhanced_status, None);
        assert_eq!(
            SmtpReply::new(250, "5.1 not enhanced").enhanced_status,
            None
        );
    }

    #[test]
    fn classifies_from_rfc3463_then_basic_code() {
        use BounceSubType::*;
        use BounceType::*;
        assert_eq!(class(550, "5.1.1 User unknown"), (Permanent, NoEmail));
        assert_eq!(class(552, "5.2.2 Mailbox full"), (Permanent, MailboxFull));
        assert_eq!(class(452, "4.2.2 Over quota"), (Transient, MailboxFull));
        assert_eq!(
            class(552, "5.3.4 Message too big"),
            (Permanent, MessageTooLarge)
        );
        assert_eq!(
            class(550, "5.7.1 Blocked by policy"),
            (Permanent, PolicyBlocked)
        );
        assert_eq!(
            class(550, "5.1.2 Bad destination domain"),
            (Permanent, DnsFailure)
        );
        assert_eq!(class(554, "Transaction failed"), (Permanent, General));
        assert_eq!(class(421, "Service not available"), (Transient, General));
        // The enhanced code wins over a basic code that disagrees with it.
        assert_eq!(class(550, "4.7.0 Try again later").0, Transient);
    }
}

//! The bounce classifier: from an SMTP reply or a report's status and diagnostic to a
//! [`BounceClass`]. Provider wording first (an ordered table), then RFC 3463, then the basic
//! reply code of RFC 5321 §4.2.
//!
//! The phrases come from the providers' postmaster pages and the bounces they send; the
//! distinctions follow what an operator does next (Sisimai's reasons and KumoMTA's bounce
//! classifier were read for the wording real MTAs use; the table is Herald's own). Every
//! phrase is matched in one pass over the text (Aho-Corasick), so the time is linear in the
//! text's length whatever the table's size.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::{BounceClass, BounceSubType, BounceType, SmtpReply, is_enhanced_status};

/// Classifies a negative SMTP reply: the type from the RFC 3463 class (or the basic code),
/// the sub-type from what the text says (providers' wording is often more specific than their
/// codes: Yandex answers "5.7.1 No such user!"), then from the enhanced code, then from the
/// basic code.
pub fn classify(reply: &SmtpReply) -> BounceClass {
    classify_parts(
        Some(reply.code),
        reply.enhanced_status.as_deref(),
        &reply.response,
    )
}

/// The classifier over its parts, for replies and for bounce reports alike: a basic code
/// (if known), an RFC 3463 status (if known) and the diagnostic text.
pub fn classify_parts(code: Option<u16>, enhanced: Option<&str>, text: &str) -> BounceClass {
    let enhanced = enhanced
        .filter(|e| is_enhanced_status(e))
        .or_else(|| find_enhanced(text));
    let mut kind = match enhanced.and_then(|e| e.chars().next()) {
        Some('5') => BounceType::Permanent,
        Some('4') => BounceType::Transient,
        _ => match code {
            Some(500..=599) => BounceType::Permanent,
            Some(400..=499) => BounceType::Transient,
            _ => BounceType::Undetermined,
        },
    };
    let by_text = rule_for(text);
    if let Some(forced) = by_text.and_then(|r| r.kind) {
        kind = forced;
    }
    let sub_type = by_text
        .map(|r| r.sub_type)
        .or_else(|| {
            enhanced
                .map(sub_type_of_enhanced)
                .filter(|s| *s != BounceSubType::General)
        })
        .or_else(|| code.and_then(sub_type_of_basic))
        .unwrap_or(if kind == BounceType::Undetermined || !says_why(text) {
            BounceSubType::Undetermined
        } else {
            BounceSubType::General
        });
    BounceClass { kind, sub_type }
}

/// Whether a text gives any reason in words, beyond reply codes and protocol labels: a
/// refusal with words Herald does not know is `general`; one with none is `undetermined`.
fn says_why(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| w.len() > 1)
        .filter(|w| {
            !["smtp", "dns", "rfc", "unix", "postfix", "x"]
                .iter()
                .any(|l| w.eq_ignore_ascii_case(l))
        })
        .take(2)
        .count()
        >= 2
}

/// The first `x.y.z` status code among a text's first words (bounce texts often carry one
/// after the basic code).
fn find_enhanced(text: &str) -> Option<&str> {
    text.split(|c: char| {
        c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | ';' | ',' | '#' | '<' | '>')
    })
    .take(12)
    .find(|w| is_enhanced_status(w))
}

/// One rule: any of these lower-case phrases → this sub-type (and, rarely, a type that the
/// code gets wrong).
struct TextRule {
    patterns: &'static [&'static str],
    sub_type: BounceSubType,
    kind: Option<BounceType>,
}

const fn rule(patterns: &'static [&'static str], sub_type: BounceSubType) -> TextRule {
    TextRule {
        patterns,
        sub_type,
        kind: None,
    }
}

/// Every rule's phrases in one automaton, and for each phrase the rule it belongs to.
static MATCHER: LazyLock<(AhoCorasick, Vec<usize>)> = LazyLock::new(|| {
    let mut phrases = Vec::new();
    let mut owners = Vec::new();
    for (i, r) in TEXT_RULES.iter().enumerate() {
        for p in r.patterns {
            phrases.push(*p);
            owners.push(i);
        }
    }
    let ac = AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::Standard)
        .build(&phrases)
        .unwrap_or_else(|_| {
            AhoCorasick::new(std::iter::empty::<&str>()).unwrap_or_else(|_| unreachable!())
        });
    (ac, owners)
});

/// The first rule (in table order) any of whose phrases occurs in the text.
fn rule_for(text: &str) -> Option<&'static TextRule> {
    let (ac, owners) = &*MATCHER;
    ac.find_overlapping_iter(text)
        .filter_map(|m| owners.get(m.pattern().as_usize()).copied())
        .min()
        .and_then(|i| TEXT_RULES.get(i))
}

/// Reply and diagnostic texts of the big mailbox providers and the common MTAs. Order matters:
/// the first rule with a match wins, so specific phrases come before generic ones.
const TEXT_RULES: &[TextRule] = &[
    // Full mailboxes (Gmail 5.2.2 "over quota", Microsoft "STOREDRV.Deliver ... mailbox full",
    // iCloud "user is over quota", Yahoo/AOL, GMX "exceeded storage allocation", Mail.ru).
    rule(
        &[
            "over quota",
            "overquota",
            "quota exceeded",
            "exceeded storage allocation",
            "mailbox full",
            "mailbox is full",
            "mailbox size limit exceeded",
            "insufficient storage",
            "user is over quota",
            "exceeds its quota",
            "quota_exceeded",
            "quotaexceeded",
            "mailbox has exceeded",
            "mailfolder is full",
            "not enough storage space",
            "the user's mailbox is full",
            "full mailbox",
            "mail box full",
            "account is exceeding their quota",
            "account is over quota",
            "boite du destinataire pleine",
            "disc quota exceeded",
            "does not have enough space",
            "exceeding its mailbox quota",
            "is over disk quota",
            "mailbox exceeded the local limit",
            "has exceeded its disk space limit",
            "mailbox over quota",
            "maildir over quota",
            "userdisk quota",
            "recipient reached disk quota",
            "would exceed maximum allowed storage",
            "space has been used up",
            "too much mail data",
            "user has exceeded quota",
            "user over quota",
            "is over the quota",
            "quota violation",
            "mailbox quota",
            "quota usage exceeded",
            "too many messages on the server",
            "zuviele mails",
            "mailbox is over",
            "over the allowed quota",
            "exceeded the quota",
            "disk quota",
            "over their quota",
            "recipient's mailbox is full",
            "mailbox exceeds allowed size",
            "is full and cannot accept",
            "postfach voll",
            "boîte pleine",
        ],
        BounceSubType::MailboxFull,
    ),
    // Too large.
    rule(
        &[
            "message size exceeds",
            "mail file size exceeds",
            "exceeds size limit",
            "message is larger than the",
            "message size exceeded",
            "size exceeded",
            "message exceeded",
            "size limit",
            "message too large",
            "message is too large",
            "message too big",
            "too big for",
            "exceeds the maximum size",
            "size exceeds",
            "message length exceeds",
            "message file too big",
            "exceeds maximum message size",
            "exceeded the maximum message size",
            "maximum message size exceeded",
            "message is larger than",
            "mesg too big",
        ],
        BounceSubType::MessageTooLarge,
    ),
    // Viruses and attachments.
    rule(
        &[
            "blocked attachment",
            "attachment type",
            "attachments are not allowed",
            "file extension",
            "prohibited attachment",
            "virus",
            "malware",
            "infected",
            "eicar",
            "security issue",
            "executable",
        ],
        BounceSubType::AttachmentRejected,
    ),
    // SPF, DKIM, DMARC (Gmail 5.7.26/5.7.27, Microsoft 5.7.509/5.7.515, Yahoo 5.7.9 DMARC).
    rule(
        &[
            "spf check",
            "spf fail",
            "spf validation",
            "spf record",
            "spf=fail",
            "spf softfail",
            "sender policy framework",
            "dkim",
            "dmarc",
            "sender is unauthenticated",
            "unauthenticated email",
            "unauthenticated mail",
            "fails to pass authentication",
            "does not have authentication information",
            "not pass authentication",
            "authentication checks",
            "sender authentication",
            "domain authentication",
        ],
        BounceSubType::AuthFailed,
    ),
    // Block lists by name, before the content rules ("spamhaus" is not about the content).
    rule(
        &[
            "blocked using",
            "ip name lookup failed",
            "ptr record",
            "valid reverse dns",
            "bad dns ptr",
            "bad sender ip address",
            "blacklisted by",
            "cannot find your hostname",
            "cannot resolve your address",
            "may not be mail exchanger",
            "connections not accepted from ip",
            "because the ip is in",
            "currently sending spam",
            "mismatches client ip",
            "zombied",
            "bad ip profile",
            "fix reverse dns",
            "host network not allowed",
            "hosts with dynamic ip",
            "is in a black list",
            "reputation problems",
            "missing ptr",
            "refused to talk to me",
            "not currently accepting mail from your ip",
            "temporarily deferred due to user complaints",
            "esmtp not accepting connections",
            "no ptr record",
            "access from ip address",
            "from ip address",
            "spamhaus",
            "spamcop",
            "sorbs",
            "barracudacentral",
            "block list",
            "blocklist",
            "blacklist",
            "dnsbl",
            // Gmail: "an unusual rate of unsolicited mail originating from your IP address".
            "unusual rate",
            "originating from your ip",
        ],
        BounceSubType::ReputationBlocked,
    ),
    // Content judged spam (Gmail "likely unsolicited mail", Yandex "suspicion of spam", Mail.ru
    // "spam message rejected", Microsoft "content filter").
    rule(
        &[
            "likely unsolicited mail",
            "detected your message as spam",
            "blacklisted url in message",
            "block for spam",
            "no spam please",
            "content filter rejection",
            "high probability of spam",
            "mail content denied",
            "may consider spam",
            "contains spam or virus",
            "considered as spam or virus",
            "seems to be a spam",
            "because of unacceptable content",
            "suspected spam content",
            "probability of being spam",
            "reject bulk.advertising",
            "spam-like characteristics",
            "rejecting mail content",
            "suspicion of spam",
            "spam message rejected",
            "message content rejected",
            "content rejected",
            "content filter",
            "spam content",
            "looks like spam",
            "considered spam",
            "considered as spam",
            "detected as spam",
            "identified as spam",
            "rejected as spam",
            "classified as spam",
            "message is spam",
            "spam detected",
            "detected spam",
            "high spam score",
            "spam score",
            "spamassassin",
            "bulk mail",
            "phishing",
            "url in message",
            "contains a url",
            "banned content",
            "message rejected due to content",
            "this message has been blocked",
            "junk mail",
            "not accepted as spam",
            "message filtered",
            "unsolicited commercial",
            "spam",
            "unsolicited",
            "uribl",
            "surbl",
            "mass mailer",
            "bulk email",
            "content reject",
            "dspam",
        ],
        BounceSubType::ContentRejected,
    ),
    // The domain does not resolve or accept mail (before the mailbox rules: "domain does not
    // exist" is about the domain).
    rule(
        &[
            "domain not found",
            "domain is not reachable",
            "domain must exist",
            "host unreachable",
            "mail domain mentioned in email address is unknown",
            "unknown domain name",
            "the account or domain may not exist",
            "unrouteable mail domain",
            "unroutable mail domain",
            "host not found",
            "host unknown",
            "unknown host",
            "no mx",
            "unrouteable domain",
            "unroutable domain",
            // Exim's word for an address whose domain cannot be routed.
            "unrouteable address",
            "unroutable address",
            "domain does not exist",
            "name or service not known",
            "nxdomain",
            "dns error",
            "bad destination system",
            "domain has no mail",
            "null mx",
            "does not accept mail",
            "unknown domain",
            "host or domain name not found",
            "no such domain",
            "all relevant mx records point to non-existent hosts",
            "no valid mx",
            "invalid domain",
        ],
        BounceSubType::DnsFailure,
    ),
    // A mailbox that exists but is disabled, suspended or inactive (Gmail 5.2.1 "is disabled",
    // Yahoo 554.30, Mail.ru "account is disabled").
    rule(
        &[
            "account is disabled",
            "is a deactivated mailbox",
            "temporarily inactive",
            "recipient suspend the service",
            "disabled or discontinued",
            "user suspended",
            "temporary locked",
            "boite du destinataire archivee",
            "invalid/inactive user",
            "suspend",
            "currently suspended",
            "account has been disabled",
            "account disabled",
            "mailbox is disabled",
            "mailbox disabled",
            "mailbox has been disabled",
            "is disabled",
            "has been suspended",
            "is suspended",
            "account suspended",
            "mailbox suspended",
            "inactive user",
            "user inactive",
            "account is inactive",
            "mailbox is inactive",
            "inactive account",
            "account expired",
            "deactivated",
            "no longer active",
            "account is locked",
            "account has been locked",
            "mailbox is frozen",
            "account is frozen",
            "temporarily disabled",
        ],
        BounceSubType::MailboxDisabled,
    ),
    // The address does not exist: every provider's wording.
    rule(
        &[
            "user unknown",
            "#5.1.1 bad address",
            "address invalid",
            "address not present in directory",
            "archived recipient",
            "can't accept user",
            "destination addresses were unknown",
            "email address does not exist",
            "email address could not be found",
            "invalid mailbox path",
            "is not a known user",
            "no account by that name here",
            "no existe dicha persona",
            "no existe ese usuario",
            "no mailbox by that name",
            "no matches to nameserver query",
            "no such address here",
            "no such person at this address",
            "nessun utente simile",
            "not a valid recipient",
            "not a valid user here",
            "not a local address",
            "recipient does not exist on this system",
            "recipient is not local",
            "recipient refuses to accept your mail",
            "sorry, no mailbox here by that name",
            "badrcptto",
            "badrecipientto",
            "validrcptto",
            "there is no one at this address",
            "no longer accepts mail",
            "wrong or no longer valid",
            "user missing home directory",
            "user not active",
            "user not exist",
            "user not known",
            "invalid or unknown virtual user",
            "unknown email address",
            "recipient not exist",
            "no mail box",
            "bad_recipient",
            "bad recipient",
            "not an active address",
            "recipient not ok",
            "no such mail box",
            "unknown user",
            "nonexistent user",
            "non-existent user",
            "nonexistent mailbox",
            "non-existent mailbox",
            "nonexistent address",
            "no such user",
            "no such recipient",
            "no such mailbox",
            "no such address",
            "unknown recipient",
            "recipient unknown",
            "recipient not found",
            "recipientnotfound",
            "user not found",
            "address not found",
            "mailbox not found",
            "mailbox unavailable",
            "mailbox does not exist",
            "mailbox doesn't exist",
            "does not exist",
            "doesn't exist",
            "doesn't have a",
            "account that you tried to reach does not exist",
            "invalid recipient",
            "invalid mailbox",
            "invalid address",
            "bad recipient",
            "recipient address rejected: user",
            "not our customer",
            "no mailbox here",
            "no longer available",
            "not a valid user",
            "unknown local part",
            "address rejected: access denied. as(",
            "undeliverable address",
            "mailbox unknown",
            "this user doesn't have",
            "addressee unknown",
            "no valid recipients",
            "no such account",
            "unknown account",
            "unknown mailbox",
            "user doesn't exist",
            "user does not exist",
            "unknown or illegal alias",
            "not listed in domino directory",
            "not listed in public name & address book",
            "no such person",
            "alias does not exist",
            "benutzer unbekannt",
            "utilisateur inconnu",
            "bad destination mailbox",
            "recipient does not exist",
            "address does not exist",
            "is not a valid mailbox",
            "no mailbox",
            "mailbox not available",
            "mailbox name not allowed",
            "has no mailbox",
            "is not known",
            "not known here",
            "unknown address",
            "user is unknown",
            "account does not exist",
            "address unknown",
            "invalid account",
            "not a known user",
            "recipient is not exist",
            "did not reach the following recipient",
            "could not be found",
            "no such local user",
            "unknown e-mail address",
            "address is not valid",
            "not have an account",
            "name is not recognized",
            "user was not found",
            "no account by that name",
            "resolver.adr.recipnotfound",
        ],
        BounceSubType::NoEmail,
    ),
    // The sending MTA gave up retrying.
    rule(
        &[
            "retry timeout exceeded",
            "could not find a gateway for",
            "failed to deliver to domain",
            "it has not been collected after",
            "expired after sitting in queue",
            "unable to deliver message after multiple retries",
            "not reachable within the allowed queue period",
            "could not be delivered for more than",
            "server did not respond",
            "message expired",
            "in the queue too long",
            "delivery time expired",
            "message timed out",
            "maximum time in queue",
            "time limit exceeded",
            "retry time exceeded",
            "could not be delivered for",
            "giving up on",
            "delivery expired",
            "has been delayed for too long",
            "queue timeout",
            "expired after",
            "was not delivered within",
            "failing for a long time",
            "retry time not reached",
            "could not initiate smtp conversation",
        ],
        BounceSubType::Expired,
    ),
    // Throttling: too much mail too fast (Gmail 4.2.1 "rate that prevents", Yahoo TSS04).
    rule(
        &[
            "rate that prevents",
            "maximum connection limit",
            "connection rate limit exceeded",
            "per-domain connection limit",
            "max emails per hour",
            "daily message quota exceeded",
            "maximum sending rate exceeded",
            "too many concurrent smtp connections",
            "too many errors from your ip",
            "too many smtp sessions",
            "trop de connexions",
            "numerous attempts to deliver this message",
            "rate limit",
            "ratelimit",
            "rate-limit",
            "too many messages",
            "too many emails",
            "sending rate",
            "throttl",
            "tss04",
            "ts04",
            "unexpected volume",
            "exceeded the rate",
            "too many recipients this hour",
            "message rate",
            "slow down",
            "mail flood",
        ],
        BounceSubType::RateLimited,
    ),
    // Relaying refused: the receiver is not responsible for the address.
    rule(
        &[
            "relay access denied",
            "insecure mail relay",
            "not permitted to relay through this server",
            "requires authentication when attempting to send to a non-local",
            "not a gateway",
            "not an open relay",
            "not local host",
            "relaying mail to",
            "not configured to relay mail",
            "unable to relay for",
            "we don't handle mail for",
            "as a relay",
            "rcpthosts",
            "not a relay",
            "relaying denied",
            "relay not permitted",
            "not permitted to relay",
            "relaying not allowed",
            "relaying not permitted",
            "unable to relay",
            "we do not relay",
            "relay denied",
            "not allowed to relay",
            "relay prohibited",
        ],
        BounceSubType::RelayDenied,
    ),
    // Load and greylisting: nothing wrong with anyone, try later.
    rule(
        &[
            "server busy",
            "greylist",
            "graylist",
            "too many connections",
            "try again in a few minutes",
            "temporarily unavailable, try again",
            "service is unavailable. try again later",
            "connection timed out",
            "connection refused",
            "no answer from host",
            "lost connection",
        ],
        BounceSubType::General,
    ),
    // The sender's IP or domain: block lists, reputation, reverse DNS (Microsoft S3150 and
    // 5.7.606-649/5.7.708, Yahoo TSS09, Apple CS01, Spamhaus, Proofpoint).
    rule(
        &[
            "blocked using",
            "block list",
            "blocklist",
            "blacklist",
            "listed at",
            "listed in",
            "listed on",
            "spamhaus",
            "barracuda",
            "proofpoint",
            "spamcop",
            "sorbs",
            "ip you're using",
            "poor reputation",
            "bad reputation",
            "sender reputation",
            "reputation",
            "banned sending ip",
            "access denied, banned",
            "traffic not accepted",
            "tss0",
            "ts0",
            "unusual rate",
            "ptr",
            "reverse dns",
            "reverse lookup",
            "rdns",
            "rbl",
            "dnsbl",
            "client host rejected",
            "cs01",
            "cs02",
            "s3150",
            "your ip",
            "your ip address",
            "ip address has been",
            "from your ip",
            "bad dns",
            "dynamic ip",
            "residential",
            "dialup",
            "has been blocked",
            "ip blocked",
        ],
        BounceSubType::ReputationBlocked,
    ),
    // Refused before any address was given: the receiver does not want the sending host.
    rule(
        &[
            "after initial connection",
            "after helo",
            "after ehlo",
            "in reply to helo command",
            "in reply to ehlo command",
            "in reply to the helo",
            "connection rejected",
            "not allowed to send mail",
        ],
        BounceSubType::ReputationBlocked,
    ),
    // Any other refusal by the receiver's policy.
    rule(
        &[
            "not authorized to send",
            "authentication credentials invalid",
            "authentication failure",
            "unauthenticated senders not allowed",
            "tls required but not supported",
            "verification failure",
            "by non-member to a members-only list",
            "closed mailing list",
            "an illegal attachment",
            "not accepting mail with",
            "policy reasons",
            "local policy",
            "policy violation",
            "authentication required",
            "sender address rejected",
            "sender denied",
            "sender rejected",
            "helo",
            "blocked",
            "refused",
            "denied",
            "not accepted",
            "rejected by",
            "administrative prohibition",
            "policy",
        ],
        BounceSubType::PolicyBlocked,
    ),
];

fn sub_type_of_enhanced(enhanced: &str) -> BounceSubType {
    let mut parts = enhanced.splitn(3, '.').skip(1);
    let subject = parts.next().unwrap_or("");
    let detail = parts.next().unwrap_or("");
    match (subject, detail) {
        ("1", "1" | "6" | "3" | "0") => BounceSubType::NoEmail,
        ("2", "1") => BounceSubType::MailboxDisabled,
        ("1", "2" | "10") | ("4", "4") => BounceSubType::DnsFailure,
        ("4", "7") => BounceSubType::Expired,
        ("2", "2") => BounceSubType::MailboxFull,
        ("2", "3") | ("3", "4") => BounceSubType::MessageTooLarge,
        ("7", "28") => BounceSubType::RateLimited,
        ("7", "20" | "21" | "22" | "23" | "24" | "26" | "27") => BounceSubType::AuthFailed,
        ("7", "25") => BounceSubType::ReputationBlocked,
        ("6", _) => BounceSubType::ContentRejected,
        ("7", _) => BounceSubType::PolicyBlocked,
        _ => BounceSubType::General,
    }
}

/// RFC 5321 §4.2.2's meanings where a code says more than "failed".
fn sub_type_of_basic(code: u16) -> Option<BounceSubType> {
    match code {
        552 | 452 => Some(BounceSubType::MailboxFull),
        553 => Some(BounceSubType::NoEmail),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real replies, as the providers send them (from their postmaster pages and bounces).
    #[test]
    fn classifies_what_providers_actually_say() {
        use BounceSubType::*;
        use BounceType::*;
        let cases: &[(u16, &str, BounceType, BounceSubType)] = &[
            // Gmail
            (
                550,
                "5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser",
                Permanent,
                NoEmail,
            ),
            (
                550,
                "5.2.1 The email account that you tried to reach is disabled. https://support.google.com/mail/?p=DisabledUser",
                Permanent,
                MailboxDisabled,
            ),
            (
                452,
                "4.2.2 The email account that you tried to reach is over quota. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaTemp",
                Transient,
                MailboxFull,
            ),
            (
                552,
                "5.2.2 The email account that you tried to reach is over quota and inactive.",
                Permanent,
                MailboxFull,
            ),
            (
                552,
                "5.3.4 Your message exceeded Google's message size limits.",
                Permanent,
                MessageTooLarge,
            ),
            (
                550,
                "5.7.1 Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked.",
                Permanent,
                ContentRejected,
            ),
            (
                550,
                "5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM.",
                Permanent,
                AuthFailed,
            ),
            (
                421,
                "4.7.0 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address.",
                Transient,
                ReputationBlocked,
            ),
            (
                552,
                "5.7.0 This message was blocked because its content presents a potential security issue.",
                Permanent,
                AttachmentRejected,
            ),
            (
                450,
                "4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered.",
                Transient,
                RateLimited,
            ),
            // Microsoft (Outlook.com, Microsoft 365)
            (
                550,
                "5.5.0 Requested action not taken: mailbox unavailable (S2017062302).",
                Permanent,
                NoEmail,
            ),
            (
                550,
                "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
                Permanent,
                NoEmail,
            ),
            (
                550,
                "5.4.1 Recipient address rejected: Access denied. AS(201806281) [DM6NAM11FT065.eop-nam11.prod.protection.outlook.com]",
                Permanent,
                NoEmail,
            ),
            (
                550,
                "5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150).",
                Permanent,
                ReputationBlocked,
            ),
            (
                550,
                "5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
                Permanent,
                ReputationBlocked,
            ),
            (
                554,
                "5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded",
                Permanent,
                MailboxFull,
            ),
            (
                451,
                "4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77714)",
                Transient,
                General,
            ),
            // Yahoo, AOL
            (
                554,
                "delivery error: dd This user doesn't have a yahoo.com account (someone@yahoo.com) [0] - mta1234.mail.gq1.yahoo.com",
                Permanent,
                NoEmail,
            ),
            (
                554,
                "delivery error: dd Sorry your message to someone@yahoo.com cannot be delivered. This mailbox is disabled (554.30).",
                Permanent,
                MailboxDisabled,
            ),
            (
                421,
                "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints",
                Transient,
                RateLimited,
            ),
            (
                553,
                "5.7.2 [TSS09] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed.",
                Permanent,
                ReputationBlocked,
            ),
            (
                554,
                "5.7.9 Message not accepted for policy reasons.  See https://postmaster.yahooinc.com/error-codes",
                Permanent,
                PolicyBlocked,
            ),
            // Apple iCloud
            (
                550,
                "5.1.1 <someone@icloud.com>: user does not exist",
                Permanent,
                NoEmail,
            ),
            (
                554,
                "5.7.1 [CS01] Message rejected due to local policy. Please visit https://support.apple.com/en-us/HT204137",
                Permanent,
                ReputationBlocked,
            ),
            (
                552,
                "5.2.2 <someone@icloud.com>: user is over quota",
                Permanent,
                MailboxFull,
            ),
            // GMX / Web.de (1&1)
            (
                550,
                "Requested action not taken: mailbox unavailable",
                Permanent,
                NoEmail,
            ),
            (
                554,
                "gmx.net (mxgmx117) Nemesis ESMTP Service not available No SMTP service Bad DNS PTR resource record.",
                Permanent,
                ReputationBlocked,
            ),
            (
                552,
                "Requested mail action aborted: exceeded storage allocation",
                Permanent,
                MailboxFull,
            ),
            // Mail.ru, Yandex
            (
                550,
                "Message was not accepted -- invalid mailbox.  Local mailbox someone@mail.ru is unavailable: user not found",
                Permanent,
                NoEmail,
            ),
            (
                550,
                "Message was not accepted -- invalid mailbox.  Local mailbox someone@mail.ru is unavailable: account is disabled",
                Permanent,
                MailboxDisabled,
            ),
            (
                550,
                "spam message rejected. Please visit http://help.mail.ru/notspam-support/id?c=abc or report details to abuse@corp.mail.ru.",
                Permanent,
                ContentRejected,
            ),
            (550, "5.7.1 No such user!", Permanent, NoEmail),
            (
                554,
                "5.7.1 Message rejected under suspicion of SPAM; https://ya.cc/1IrBc",
                Permanent,
                ContentRejected,
            ),
            (
                552,
                "5.2.2 Mailbox size limit exceeded",
                Permanent,
                MailboxFull,
            ),
            // Comcast, generic Postfix and Exim
            (
                550,
                "5.1.1 <someone@comcast.net> Not our Customer",
                Permanent,
                NoEmail,
            ),
            (
                550,
                "5.1.1 <x@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
                Permanent,
                NoEmail,
            ),
            (
                550,
                "5.1.2 <x@nonexistent.example>: Recipient address rejected: Domain not found",
                Permanent,
                DnsFailure,
            ),
            (
                554,
                "5.7.1 <x@example.org>: Relay access denied",
                Permanent,
                RelayDenied,
            ),
            (
                554,
                "5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
                Permanent,
                ReputationBlocked,
            ),
            (
                450,
                "4.2.0 <x@example.org>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/",
                Transient,
                General,
            ),
            // Exim: the domain cannot be routed.
            (550, "Unrouteable address", Permanent, DnsFailure),
            (
                552,
                "Message size exceeds fixed maximum message size",
                Permanent,
                MessageTooLarge,
            ),
            (
                554,
                "5.7.0 Reject, id=12345-01 - VIRUS: Eicar-Test-Signature",
                Permanent,
                AttachmentRejected,
            ),
        ];
        for (code, text, kind, sub) in cases {
            let c = classify(&SmtpReply::new(*code, text));
            assert_eq!((c.kind, c.sub_type), (*kind, *sub), "{code} {text}");
        }
        // Bounce reports: status and diagnostic without a reply code.
        let c = classify_parts(None, Some("5.0.0"), "smtp; 550 user unknown");
        assert_eq!((c.kind, c.sub_type), (Permanent, NoEmail));
        let c = classify_parts(
            None,
            None,
            "The following addresses had permanent fatal errors",
        );
        assert_eq!(c.kind, BounceType::Undetermined);
        let c = classify_parts(None, None, "mailbox full");
        assert_eq!(
            (c.kind, c.sub_type),
            (BounceType::Undetermined, MailboxFull)
        );
    }
}

//! An email as a client wrote it ([`Draft`]), and the rules that make it an [`OutgoingEmail`].
//!
//! Every way into Herald fills a draft (the JSON API; a message submitted over SMTP, read by
//! [`super::submitted`]) and
//! [`Draft::check`] applies the same rules: required fields, addresses, the subject, custom
//! headers, attachments, tags, metadata, the stream, the schedule, and the recipient limit
//! (checked on the count listed before any address is parsed). Every problem is collected with
//! the JSON pointer of its field, relative to the email (`/to/1`, `/headers/X-Ref`), so a
//! client fixes all of them in one go.

use std::collections::BTreeMap;

use base64::Engine;

use super::{
    Attachment, Limits, OutgoingEmail, content_type_for, is_reserved_header, is_token,
    is_valid_header_name,
};
use crate::domain::address::{AddressError, Mailbox};

/// One broken rule: where (a JSON pointer relative to the email), a stable code, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub pointer: String,
    pub code: &'static str,
    pub detail: String,
}

impl Invalid {
    pub fn new(pointer: impl Into<String>, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            code,
            detail: detail.into(),
        }
    }
}

/// An address as written: `"a@b"` or `"Name <a@b>"`, or its parts.
#[derive(Debug, Clone)]
pub enum AddressInput {
    Text(String),
    Parts { email: String, name: Option<String> },
}

/// A field of addresses: absent, one, or a list (whose problems point at each item).
#[derive(Debug, Clone, Default)]
pub enum Addresses {
    #[default]
    None,
    One(AddressInput),
    Many(Vec<AddressInput>),
}

impl Addresses {
    /// How many addresses are listed.
    pub fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::One(_) => 1,
            Self::Many(items) => items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An attachment as written: its content in standard base64.
#[derive(Debug, Clone, Default)]
pub struct AttachmentDraft {
    pub filename: Option<String>,
    pub content_base64: Option<String>,
    pub content_type: Option<String>,
    pub content_id: Option<String>,
    /// `attachment` or `inline`; by default inline when it has a content id.
    pub disposition: Option<String>,
}

/// An email as a client wrote it, before any rule is applied.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    pub from: Option<AddressInput>,
    pub to: Addresses,
    pub cc: Addresses,
    pub bcc: Addresses,
    pub reply_to: Addresses,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub attachments: Vec<AttachmentDraft>,
    pub tags: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// The configured streams' first when absent.
    pub stream: Option<String>,
    /// RFC 3339 with an offset.
    pub scheduled_at: Option<String>,
    pub expires_at: Option<String>,
    pub track_opens: bool,
    pub track_clicks: bool,
}

/// What the rules need besides the draft.
pub struct Context<'a> {
    pub limits: &'a Limits,
    pub streams: &'a [String],
    pub now_ms: i64,
}

/// Escapes one JSON pointer token (RFC 6901 §3).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn mailbox(item: &AddressInput, pointer: &str, errors: &mut Vec<Invalid>) -> Option<Mailbox> {
    let parsed = match item {
        AddressInput::Text(s) => Mailbox::parse(s),
        AddressInput::Parts { email, name } => Mailbox::with_name(email, name.as_deref()),
    };
    match parsed {
        Ok(m) => Some(m),
        Err(e @ AddressError::Invalid(_)) => {
            errors.push(Invalid::new(pointer, "invalid_email", e.to_string()));
            None
        }
        Err(e @ AddressError::ControlCharacter) => {
            errors.push(Invalid::new(pointer, "invalid_email", e.to_string()));
            None
        }
    }
}

fn mailboxes(list: &Addresses, pointer: &str, errors: &mut Vec<Invalid>) -> Vec<Mailbox> {
    match list {
        Addresses::None => Vec::new(),
        Addresses::One(item) => mailbox(item, pointer, errors).into_iter().collect(),
        Addresses::Many(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| mailbox(item, &format!("{pointer}/{i}"), errors))
            .collect(),
    }
}

fn has_line_break(s: &str) -> bool {
    s.contains(['\r', '\n', '\0'])
}

/// RFC 3339 with an explicit offset; a naive time would silently change delivery time.
fn instant(value: &str, pointer: &str, errors: &mut Vec<Invalid>) -> Option<i64> {
    match chrono::DateTime::parse_from_rfc3339(value.trim()) {
        Ok(t) => Some(t.timestamp_millis()),
        Err(_) => {
            errors.push(Invalid::new(
                pointer,
                "invalid_datetime",
                format!("'{value}' is not an RFC 3339 time with an offset (such as 2026-08-22T09:00:00+02:00)"),
            ));
            None
        }
    }
}

impl Draft {
    /// Applies every rule; each problem is reported with the pointer of its field.
    pub fn check(self, ctx: &Context<'_>) -> Result<OutgoingEmail, Vec<Invalid>> {
        check(self, ctx)
    }
}

fn check(req: Draft, ctx: &Context<'_>) -> Result<OutgoingEmail, Vec<Invalid>> {
    let p = |field: &str| format!("/{field}");
    let mut errors = Vec::new();

    let from = match &req.from {
        Some(item) => mailbox(item, &p("from"), &mut errors),
        None => {
            errors.push(Invalid::new(
                p("from"),
                "missing_required_field",
                "from is required",
            ));
            None
        }
    };
    // Limits before work: a list far longer than the recipient limit is refused before a
    // single address is parsed (duplicates are folded, so up to ten times the limit is read).
    let listed: usize = [&req.to, &req.cc, &req.bcc, &req.reply_to]
        .iter()
        .map(|l| l.len())
        .sum();
    if listed > ctx.limits.max_recipients.saturating_mul(10) {
        return Err(vec![Invalid::new(
            p("to"),
            "too_many_recipients",
            format!(
                "{listed} addresses listed; at most {} recipients across to, cc and bcc",
                ctx.limits.max_recipients
            ),
        )]);
    }
    let to = mailboxes(&req.to, &p("to"), &mut errors);
    let cc = mailboxes(&req.cc, &p("cc"), &mut errors);
    let bcc = mailboxes(&req.bcc, &p("bcc"), &mut errors);
    let reply_to = mailboxes(&req.reply_to, &p("reply_to"), &mut errors);
    if req.to.is_empty() && req.cc.is_empty() && req.bcc.is_empty() {
        errors.push(Invalid::new(
            p("to"),
            "missing_required_field",
            "at least one of to, cc or bcc is required",
        ));
    }

    let subject = match req.subject {
        Some(s) if has_line_break(&s) => {
            errors.push(Invalid::new(
                p("subject"),
                "invalid_header",
                "subject must not contain line breaks",
            ));
            None
        }
        Some(s) if s.chars().count() > ctx.limits.max_subject_chars => {
            errors.push(Invalid::new(
                p("subject"),
                "validation_error",
                format!(
                    "subject is longer than {} characters",
                    ctx.limits.max_subject_chars
                ),
            ));
            None
        }
        Some(s) if !s.trim().is_empty() => Some(s),
        _ => {
            errors.push(Invalid::new(
                p("subject"),
                "missing_required_field",
                "subject is required",
            ));
            None
        }
    };
    if req.text.is_none() && req.html.is_none() {
        errors.push(Invalid::new(
            p("text"),
            "missing_required_field",
            "at least one of text or html is required",
        ));
    }

    let mut headers = Vec::new();
    let custom = req.headers;
    if custom.len() > ctx.limits.max_custom_headers {
        errors.push(Invalid::new(
            p("headers"),
            "validation_error",
            format!("at most {} custom headers", ctx.limits.max_custom_headers),
        ));
    }
    for (name, value) in custom {
        let ptr = format!("{}/{}", p("headers"), escape(&name));
        if !is_valid_header_name(&name) {
            errors.push(Invalid::new(
                ptr,
                "invalid_header",
                format!("'{}' is not a valid header name", name.escape_debug()),
            ));
        } else if is_reserved_header(&name) {
            errors.push(Invalid::new(
                ptr,
                "reserved_header",
                format!("{name} is set by Herald and cannot be given"),
            ));
        } else if has_line_break(&value) {
            errors.push(Invalid::new(
                ptr,
                "invalid_header",
                "header values must not contain line breaks",
            ));
        } else if value.len() > 998 {
            errors.push(Invalid::new(
                ptr,
                "invalid_header",
                "header values are limited to 998 characters",
            ));
        } else {
            headers.push((name, value));
        }
    }

    let attachments = attachments(req.attachments, ctx, &p("attachments"), &mut errors);

    let tags = req.tags;
    if tags.len() > ctx.limits.max_tags {
        errors.push(Invalid::new(
            p("tags"),
            "validation_error",
            format!("at most {} tags", ctx.limits.max_tags),
        ));
    }
    for (i, tag) in tags.iter().enumerate() {
        if !is_token(tag, 64) {
            errors.push(Invalid::new(
                format!("{}/{i}", p("tags")),
                "invalid_tag",
                "tags match [A-Za-z0-9_-]{1,64}",
            ));
        }
    }

    let metadata = req.metadata;
    if metadata.len() > ctx.limits.max_metadata_keys {
        errors.push(Invalid::new(
            p("metadata"),
            "invalid_metadata",
            format!("at most {} metadata keys", ctx.limits.max_metadata_keys),
        ));
    }
    let mut metadata_bytes = 0;
    for (k, v) in &metadata {
        let ptr = format!("{}/{}", p("metadata"), escape(k));
        metadata_bytes += k.len() + v.len();
        if !is_token(k, 40) {
            errors.push(Invalid::new(
                ptr,
                "invalid_metadata",
                "metadata keys match [A-Za-z0-9_-]{1,40}",
            ));
        } else if v.chars().count() > ctx.limits.max_metadata_value_chars {
            errors.push(Invalid::new(
                ptr,
                "invalid_metadata",
                format!(
                    "metadata values are at most {} characters",
                    ctx.limits.max_metadata_value_chars
                ),
            ));
        }
    }
    if metadata_bytes > ctx.limits.max_metadata_bytes {
        errors.push(Invalid::new(
            p("metadata"),
            "invalid_metadata",
            format!(
                "metadata is limited to {} bytes in all",
                ctx.limits.max_metadata_bytes
            ),
        ));
    }

    let stream = req
        .stream
        .unwrap_or_else(|| ctx.streams.first().cloned().unwrap_or_default());
    if !ctx.streams.contains(&stream) {
        errors.push(Invalid::new(
            p("stream"),
            "invalid_stream",
            format!(
                "'{stream}' is not a configured stream ({})",
                ctx.streams.join(", ")
            ),
        ));
    }

    let scheduled_at = req
        .scheduled_at
        .as_deref()
        .and_then(|s| instant(s, &p("scheduled_at"), &mut errors));
    if let Some(at) = scheduled_at
        && at > ctx.now_ms + ctx.limits.max_schedule_horizon_ms
    {
        errors.push(Invalid::new(
            p("scheduled_at"),
            "schedule_out_of_range",
            format!(
                "scheduled_at may be at most {} hours ahead",
                ctx.limits.max_schedule_horizon_ms / 3_600_000
            ),
        ));
    }
    let expires_at = req
        .expires_at
        .as_deref()
        .and_then(|s| instant(s, &p("expires_at"), &mut errors));
    if let Some(exp) = expires_at
        && exp <= scheduled_at.unwrap_or(ctx.now_ms).max(ctx.now_ms)
    {
        errors.push(Invalid::new(
            p("expires_at"),
            "validation_error",
            "expires_at must be after now and after scheduled_at",
        ));
    }
    if req.track_opens || req.track_clicks {
        errors.push(Invalid::new(
            p(if req.track_opens {
                "track_opens"
            } else {
                "track_clicks"
            }),
            "validation_error",
            "open and click tracking are not enabled on this server",
        ));
    }

    let email = match (from, subject) {
        (Some(from), Some(subject)) if errors.is_empty() => OutgoingEmail {
            from,
            to,
            cc,
            bcc,
            reply_to,
            subject,
            text: req.text,
            html: req.html,
            headers,
            attachments,
            // A repeated tag is the same tag: counted and indexed once.
            tags: tags.iter().fold(Vec::new(), |mut seen, t| {
                if !seen.contains(t) {
                    seen.push(t.clone());
                }
                seen
            }),
            metadata,
            stream,
            scheduled_at,
            expires_at,
        },
        _ => return Err(errors),
    };
    let unique = email.recipients().len();
    if unique > ctx.limits.max_recipients {
        return Err(vec![Invalid::new(
            p("to"),
            "too_many_recipients",
            format!(
                "{unique} recipients; at most {} across to, cc and bcc",
                ctx.limits.max_recipients
            ),
        )]);
    }
    Ok(email)
}

fn attachments(
    list: Vec<AttachmentDraft>,
    ctx: &Context<'_>,
    pointer: &str,
    errors: &mut Vec<Invalid>,
) -> Vec<Attachment> {
    if list.len() > ctx.limits.max_attachments {
        errors.push(Invalid::new(
            pointer,
            "invalid_attachment",
            format!("at most {} attachments", ctx.limits.max_attachments),
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, a) in list.into_iter().enumerate() {
        let p = |f: &str| format!("{pointer}/{i}/{f}");
        let before = errors.len();
        let filename = a.filename.unwrap_or_default();
        if filename.trim().is_empty() {
            errors.push(Invalid::new(
                p("filename"),
                "missing_required_field",
                "filename is required",
            ));
        } else if filename.chars().any(char::is_control) || filename.len() > 255 {
            errors.push(Invalid::new(
                p("filename"),
                "invalid_attachment",
                "filename must be at most 255 characters without control characters",
            ));
        }
        let content = match a.content_base64.as_deref() {
            None => {
                errors.push(Invalid::new(
                    p("content"),
                    "missing_required_field",
                    "content (base64) is required",
                ));
                Vec::new()
            }
            Some(b64) => {
                let compact: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                match base64::engine::general_purpose::STANDARD.decode(compact) {
                    Ok(bytes) => bytes,
                    Err(_) => {
                        errors.push(Invalid::new(
                            p("content"),
                            "invalid_base64",
                            "not valid standard base64",
                        ));
                        Vec::new()
                    }
                }
            }
        };
        let content_type = match a.content_type {
            Some(ct) if valid_content_type(&ct) => ct,
            Some(_) => {
                errors.push(Invalid::new(
                    p("content_type"),
                    "invalid_attachment",
                    "content_type must look like type/subtype",
                ));
                String::new()
            }
            None => content_type_for(&filename).to_owned(),
        };
        let content_id = match a.content_id {
            Some(cid)
                if cid.is_empty()
                    || cid.len() > 200
                    || cid.chars().any(|c| {
                        c.is_whitespace() || c.is_control() || c == '<' || c == '>' || !c.is_ascii()
                    }) =>
            {
                errors.push(Invalid::new(p("content_id"), "invalid_attachment", "content_id must be 1 to 200 printable ASCII characters without spaces or angle brackets"));
                None
            }
            other => other,
        };
        let inline = match a.disposition.as_deref() {
            None => content_id.is_some(),
            Some("inline") => true,
            Some("attachment") => false,
            Some(_) => {
                errors.push(Invalid::new(
                    p("disposition"),
                    "invalid_attachment",
                    "disposition must be attachment or inline",
                ));
                false
            }
        };
        if errors.len() == before {
            out.push(Attachment {
                filename,
                content,
                content_type,
                content_id,
                inline,
            });
        }
    }
    out
}

fn valid_content_type(ct: &str) -> bool {
    let essence = ct.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    !has_line_break(ct)
        && ct.is_ascii()
        && essence
            .split_once('/')
            .is_some_and(|(t, s)| token(t) && token(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(limits: &Limits) -> Context<'_> {
        Context {
            limits,
            streams: STREAMS,
            now_ms: 0,
        }
    }

    const STREAMS: &[String] = &[];

    fn draft() -> Draft {
        Draft {
            from: Some(AddressInput::Text("Acme <orders@acme.test>".into())),
            to: Addresses::One(AddressInput::Parts {
                email: "ada@example.com".into(),
                name: Some("Ada".into()),
            }),
            subject: Some("Your order".into()),
            text: Some("Thanks".into()),
            ..Draft::default()
        }
    }

    #[test]
    fn a_draft_from_any_source_becomes_an_email() {
        let limits = Limits::default();
        let streams = vec!["transactional".to_owned()];
        let ctx = Context {
            streams: &streams,
            ..ctx(&limits)
        };
        let email = draft().check(&ctx).expect("valid");
        assert_eq!(email.stream, "transactional");
        assert_eq!(email.to.len(), 1);
        assert_eq!(email.to[0].email.as_str(), "ada@example.com");
    }

    #[test]
    fn every_problem_is_reported_with_its_pointer() {
        let limits = Limits::default();
        let streams = vec!["transactional".to_owned()];
        let ctx = Context {
            streams: &streams,
            ..ctx(&limits)
        };
        let mut d = draft();
        d.to = Addresses::Many(vec![
            AddressInput::Text("ok@example.com".into()),
            AddressInput::Text("bob@".into()),
        ]);
        d.subject = None;
        d.headers.insert("Bcc".into(), "x@example.com".into());
        d.headers.insert("X-Ref/1".into(), "a\nb".into());
        d.tags = vec!["fine".into(), "not fine".into()];
        let problems = d.check(&ctx).expect_err("invalid");
        let found: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.pointer.as_str(), p.code))
            .collect();
        for want in [
            ("/to/1", "invalid_email"),
            ("/subject", "missing_required_field"),
            ("/headers/Bcc", "reserved_header"),
            ("/headers/X-Ref~11", "invalid_header"),
            ("/tags/1", "invalid_tag"),
        ] {
            assert!(found.contains(&want), "{want:?} not in {found:?}");
        }
    }

    #[test]
    fn a_list_far_over_the_limit_is_refused_before_it_is_read() {
        let limits = Limits {
            max_recipients: 2,
            ..Limits::default()
        };
        let mut d = draft();
        d.to = Addresses::Many(vec![AddressInput::Text("not even an address".into()); 21]);
        let problems = d.check(&ctx(&limits)).expect_err("too many");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].code, "too_many_recipients");
    }
}

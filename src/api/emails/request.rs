//! The send request as JSON, and its validation into a [`OutgoingEmail`].
//!
//! Serde checks the shape (types, unknown fields); [`validate`] checks the meaning and
//! collects every problem with its JSON pointer, so a client fixes all of them in one go.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use crate::domain::address::{AddressError, Mailbox};
use crate::domain::email::{
    Attachment, Limits, OutgoingEmail, content_type_for, is_reserved_header, is_token,
    is_valid_header_name,
};

use super::super::error::FieldError;
use super::super::json::escape;

/// `"a@b"`, `"Name <a@b>"`, or `{"email", "name"}`.
#[derive(Debug, Clone)]
pub enum AddressItem {
    Text(String),
    Object(AddressObject),
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressObject {
    email: String,
    #[serde(default)]
    name: Option<String>,
}

impl<'de> Deserialize<'de> for AddressItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Self::Text(s)),
            v @ serde_json::Value::Object(_) => serde_json::from_value(v)
                .map(Self::Object)
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom(
                "expected an address: \"a@b\", \"Name <a@b>\" or {\"email\", \"name\"}",
            )),
        }
    }
}

/// One address or an array of them.
#[derive(Debug, Clone)]
pub enum AddressList {
    One(AddressItem),
    Many(Vec<AddressItem>),
}

impl<'de> Deserialize<'de> for AddressList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|v| serde_json::from_value(v).map_err(D::Error::custom))
                .collect::<Result<_, _>>()
                .map(Self::Many),
            v => serde_json::from_value(v)
                .map(Self::One)
                .map_err(D::Error::custom),
        }
    }
}

impl utoipa::PartialSchema for AddressItem {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("`a@b` or `Name <a@b>`"))
                    .examples(["Acme <orders@acme.com>"]),
            )
            .item(utoipa::openapi::Ref::from_schema_name("AddressObject"))
            .into()
    }
}

impl utoipa::ToSchema for AddressItem {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "AddressObject".into(),
            <AddressObject as utoipa::PartialSchema>::schema(),
        ));
    }
}

impl utoipa::PartialSchema for AddressList {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder};
        OneOfBuilder::new()
            .item(AddressItem::schema())
            .item(ArrayBuilder::new().items(AddressItem::schema()))
            .description(Some("One address or an array of them"))
            .into()
    }
}

impl utoipa::ToSchema for AddressList {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        AddressItem::schemas(schemas);
    }
}

impl AddressList {
    fn items(&self) -> Vec<&AddressItem> {
        match self {
            Self::One(i) => vec![i],
            Self::Many(v) => v.iter().collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentRequest {
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    content_id: Option<String>,
    #[serde(default)]
    disposition: Option<String>,
}

/// `POST /v1/emails` (and each item of a batch).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"from": "Acme <orders@acme.com>", "to": ["ada@example.com"], "subject": "Your order", "text": "Thanks for your order.", "tags": ["order"], "metadata": {"order_id": "1042"}}))]
pub struct CreateEmailRequest {
    #[serde(default)]
    pub from: Option<AddressItem>,
    #[serde(default)]
    pub to: Option<AddressList>,
    #[serde(default)]
    pub cc: Option<AddressList>,
    #[serde(default)]
    pub bcc: Option<AddressList>,
    #[serde(default)]
    pub reply_to: Option<AddressList>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub attachments: Option<Vec<AttachmentRequest>>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub scheduled_at: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub track_opens: Option<bool>,
    #[serde(default)]
    pub track_clicks: Option<bool>,
}

/// What validation needs besides the request.
pub struct Context<'a> {
    pub limits: &'a Limits,
    pub streams: &'a [String],
    pub now_ms: i64,
}

fn mailbox(item: &AddressItem, pointer: &str, errors: &mut Vec<FieldError>) -> Option<Mailbox> {
    let parsed = match item {
        AddressItem::Text(s) => Mailbox::parse(s),
        AddressItem::Object(o) => Mailbox::with_name(&o.email, o.name.as_deref()),
    };
    match parsed {
        Ok(m) => Some(m),
        Err(e @ AddressError::Invalid(_)) => {
            errors.push(FieldError::new(pointer, "invalid_email", e.to_string()));
            None
        }
        Err(e @ AddressError::ControlCharacter) => {
            errors.push(FieldError::new(pointer, "invalid_email", e.to_string()));
            None
        }
    }
}

fn mailboxes(
    list: Option<&AddressList>,
    pointer: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<Mailbox> {
    let Some(list) = list else { return Vec::new() };
    match list {
        AddressList::One(item) => mailbox(item, pointer, errors).into_iter().collect(),
        AddressList::Many(_) => list
            .items()
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
fn instant(value: &str, pointer: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    match chrono::DateTime::parse_from_rfc3339(value.trim()) {
        Ok(t) => Some(t.timestamp_millis()),
        Err(_) => {
            errors.push(FieldError::new(
                pointer,
                "invalid_datetime",
                format!("'{value}' is not an RFC 3339 time with an offset (such as 2026-08-22T09:00:00+02:00)"),
            ));
            None
        }
    }
}

/// Checks the request's meaning; every problem is reported with a pointer under `prefix`.
pub fn validate(
    req: CreateEmailRequest,
    ctx: &Context<'_>,
    prefix: &str,
) -> Result<OutgoingEmail, Vec<FieldError>> {
    let p = |field: &str| format!("{prefix}/{field}");
    let mut errors = Vec::new();

    let from = match &req.from {
        Some(item) => mailbox(item, &p("from"), &mut errors),
        None => {
            errors.push(FieldError::new(
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
        .map(|l| l.as_ref().map_or(0, |l| l.items().len()))
        .sum();
    if listed > ctx.limits.max_recipients.saturating_mul(10) {
        return Err(vec![FieldError::new(
            p("to"),
            "too_many_recipients",
            format!(
                "{listed} addresses listed; at most {} recipients across to, cc and bcc",
                ctx.limits.max_recipients
            ),
        )]);
    }
    let to = mailboxes(req.to.as_ref(), &p("to"), &mut errors);
    let cc = mailboxes(req.cc.as_ref(), &p("cc"), &mut errors);
    let bcc = mailboxes(req.bcc.as_ref(), &p("bcc"), &mut errors);
    let reply_to = mailboxes(req.reply_to.as_ref(), &p("reply_to"), &mut errors);
    let given = |l: &Option<AddressList>| l.as_ref().is_some_and(|l| !l.items().is_empty());
    if !given(&req.to) && !given(&req.cc) && !given(&req.bcc) {
        errors.push(FieldError::new(
            p("to"),
            "missing_required_field",
            "at least one of to, cc or bcc is required",
        ));
    }

    let subject = match req.subject {
        Some(s) if has_line_break(&s) => {
            errors.push(FieldError::new(
                p("subject"),
                "invalid_header",
                "subject must not contain line breaks",
            ));
            None
        }
        Some(s) if s.chars().count() > ctx.limits.max_subject_chars => {
            errors.push(FieldError::new(
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
            errors.push(FieldError::new(
                p("subject"),
                "missing_required_field",
                "subject is required",
            ));
            None
        }
    };
    if req.text.is_none() && req.html.is_none() {
        errors.push(FieldError::new(
            p("text"),
            "missing_required_field",
            "at least one of text or html is required",
        ));
    }

    let mut headers = Vec::new();
    let custom = req.headers.unwrap_or_default();
    if custom.len() > ctx.limits.max_custom_headers {
        errors.push(FieldError::new(
            p("headers"),
            "validation_error",
            format!("at most {} custom headers", ctx.limits.max_custom_headers),
        ));
    }
    for (name, value) in custom {
        let ptr = format!("{}/{}", p("headers"), escape(&name));
        if !is_valid_header_name(&name) {
            errors.push(FieldError::new(
                ptr,
                "invalid_header",
                format!("'{}' is not a valid header name", name.escape_debug()),
            ));
        } else if is_reserved_header(&name) {
            errors.push(FieldError::new(
                ptr,
                "reserved_header",
                format!("{name} is set by Herald and cannot be given"),
            ));
        } else if has_line_break(&value) {
            errors.push(FieldError::new(
                ptr,
                "invalid_header",
                "header values must not contain line breaks",
            ));
        } else if value.len() > 998 {
            errors.push(FieldError::new(
                ptr,
                "invalid_header",
                "header values are limited to 998 characters",
            ));
        } else {
            headers.push((name, value));
        }
    }

    let attachments = attachments(
        req.attachments.unwrap_or_default(),
        ctx,
        &p("attachments"),
        &mut errors,
    );

    let tags = req.tags.unwrap_or_default();
    if tags.len() > ctx.limits.max_tags {
        errors.push(FieldError::new(
            p("tags"),
            "validation_error",
            format!("at most {} tags", ctx.limits.max_tags),
        ));
    }
    for (i, tag) in tags.iter().enumerate() {
        if !is_token(tag, 64) {
            errors.push(FieldError::new(
                format!("{}/{i}", p("tags")),
                "invalid_tag",
                "tags match [A-Za-z0-9_-]{1,64}",
            ));
        }
    }

    let metadata = req.metadata.unwrap_or_default();
    if metadata.len() > ctx.limits.max_metadata_keys {
        errors.push(FieldError::new(
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
            errors.push(FieldError::new(
                ptr,
                "invalid_metadata",
                "metadata keys match [A-Za-z0-9_-]{1,40}",
            ));
        } else if v.chars().count() > ctx.limits.max_metadata_value_chars {
            errors.push(FieldError::new(
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
        errors.push(FieldError::new(
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
        errors.push(FieldError::new(
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
        errors.push(FieldError::new(
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
        errors.push(FieldError::new(
            p("expires_at"),
            "validation_error",
            "expires_at must be after now and after scheduled_at",
        ));
    }
    if req.track_opens == Some(true) || req.track_clicks == Some(true) {
        errors.push(FieldError::new(
            p(if req.track_opens == Some(true) {
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
        return Err(vec![FieldError::new(
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
    list: Vec<AttachmentRequest>,
    ctx: &Context<'_>,
    pointer: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<Attachment> {
    if list.len() > ctx.limits.max_attachments {
        errors.push(FieldError::new(
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
            errors.push(FieldError::new(
                p("filename"),
                "missing_required_field",
                "filename is required",
            ));
        } else if filename.chars().any(char::is_control) || filename.len() > 255 {
            errors.push(FieldError::new(
                p("filename"),
                "invalid_attachment",
                "filename must be at most 255 characters without control characters",
            ));
        }
        let content = match a.content.as_deref() {
            None => {
                errors.push(FieldError::new(
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
                        errors.push(FieldError::new(
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
                errors.push(FieldError::new(
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
                errors.push(FieldError::new(p("content_id"), "invalid_attachment", "content_id must be 1 to 200 printable ASCII characters without spaces or angle brackets"));
                None
            }
            other => other,
        };
        let inline = match a.disposition.as_deref() {
            None => content_id.is_some(),
            Some("inline") => true,
            Some("attachment") => false,
            Some(_) => {
                errors.push(FieldError::new(
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

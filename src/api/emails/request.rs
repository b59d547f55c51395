//! The send request as JSON, and its way into the email's rules.
//!
//! Serde checks the shape (types, unknown fields); the request becomes a
//! [`Draft`], whose rules (in `domain::email::draft`, shared with every other way into Herald)
//! check the meaning and collect every problem with its JSON pointer.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::domain::email::OutgoingEmail;
pub use crate::domain::email::draft::Context;
use crate::domain::email::draft::{AddressInput, Addresses, AttachmentDraft, Draft};

use super::super::error::FieldError;

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

impl From<AddressItem> for AddressInput {
    fn from(item: AddressItem) -> Self {
        match item {
            AddressItem::Text(s) => Self::Text(s),
            AddressItem::Object(o) => Self::Parts {
                email: o.email,
                name: o.name,
            },
        }
    }
}

impl From<Option<AddressList>> for Addresses {
    fn from(list: Option<AddressList>) -> Self {
        match list {
            None => Self::None,
            Some(AddressList::One(item)) => Self::One(item.into()),
            Some(AddressList::Many(items)) => {
                Self::Many(items.into_iter().map(Into::into).collect())
            }
        }
    }
}

impl From<CreateEmailRequest> for Draft {
    fn from(req: CreateEmailRequest) -> Self {
        Self {
            from: req.from.map(Into::into),
            to: req.to.into(),
            cc: req.cc.into(),
            bcc: req.bcc.into(),
            reply_to: req.reply_to.into(),
            subject: req.subject,
            text: req.text,
            html: req.html,
            headers: req.headers.unwrap_or_default(),
            attachments: req
                .attachments
                .unwrap_or_default()
                .into_iter()
                .map(|a| AttachmentDraft {
                    filename: a.filename,
                    content_base64: a.content,
                    content_type: a.content_type,
                    content_id: a.content_id,
                    disposition: a.disposition,
                })
                .collect(),
            tags: req.tags.unwrap_or_default(),
            metadata: req.metadata.unwrap_or_default(),
            stream: req.stream,
            scheduled_at: req.scheduled_at,
            expires_at: req.expires_at,
            track_opens: req.track_opens == Some(true),
            track_clicks: req.track_clicks == Some(true),
        }
    }
}

/// The email's rules (`domain::email::draft`) applied to a request; every problem is reported
/// with its pointer under `prefix` (the item's place in a batch).
pub fn validate(
    req: CreateEmailRequest,
    ctx: &Context<'_>,
    prefix: &str,
) -> Result<OutgoingEmail, Vec<FieldError>> {
    check(Draft::from(req), ctx, prefix)
}

/// The same for any draft: a request's, or a message submitted over SMTP.
pub fn check(
    draft: Draft,
    ctx: &Context<'_>,
    prefix: &str,
) -> Result<OutgoingEmail, Vec<FieldError>> {
    draft.check(ctx).map_err(|problems| {
        problems
            .into_iter()
            .map(|i| FieldError::new(format!("{prefix}{}", i.pointer), i.code, i.detail))
            .collect()
    })
}

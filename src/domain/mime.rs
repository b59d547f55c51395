//! Builds the RFC 5322 message once, at accept time; every SMTP attempt sends these bytes.
//!
//! Structure, from the inside out: `text/html` with its inline parts in
//! `multipart/related`; with a text part beside it in `multipart/alternative`; with regular
//! attachments around it all in `multipart/mixed`. Non-ASCII header text is encoded as
//! RFC 2047 encoded words; bodies as quoted-printable or base64 (lettre chooses), so the
//! message is 7-bit clean and needs no 8BITMIME.

use std::time::SystemTime;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment as LettreAttachment, MultiPart, SinglePart};
use lettre::message::{Mailbox as LettreMailbox, Mailboxes};

use crate::domain::address::Mailbox;
use crate::domain::email::{Attachment, OutgoingEmail};

#[derive(Debug, thiserror::Error)]
pub enum MimeError {
    #[error("address {0} cannot be written in a header")]
    Address(String),
    #[error("content type {0:?} is not valid")]
    ContentType(String),
    #[error("header name {0:?} is not valid")]
    HeaderName(String),
    #[error("message has no recipients")]
    NoRecipients,
}

fn mailbox(m: &Mailbox) -> Result<LettreMailbox, MimeError> {
    let address = m
        .email
        .as_str()
        .parse()
        .map_err(|_| MimeError::Address(m.email.to_string()))?;
    Ok(LettreMailbox::new(m.name.clone(), address))
}

fn mailboxes(list: &[Mailbox]) -> Result<Option<Mailboxes>, MimeError> {
    if list.is_empty() {
        return Ok(None);
    }
    let mut out = Mailboxes::new();
    for m in list {
        out.push(mailbox(m)?);
    }
    Ok(Some(out))
}

fn content_type(s: &str) -> Result<ContentType, MimeError> {
    ContentType::parse(s).map_err(|_| MimeError::ContentType(s.to_owned()))
}

fn attachment_part(a: &Attachment) -> Result<SinglePart, MimeError> {
    let builder = match (&a.content_id, a.inline) {
        (Some(cid), _) => LettreAttachment::new_inline_with_name(cid.clone(), a.filename.clone()),
        (None, true) => LettreAttachment::new_inline_with_name(
            uuid::Uuid::now_v7().to_string(),
            a.filename.clone(),
        ),
        (None, false) => LettreAttachment::new(a.filename.clone()),
    };
    Ok(builder.body(a.content.clone(), content_type(&a.content_type)?))
}

/// The body tree without attachments around it: text, html (+ inline parts), or both.
fn body(email: &OutgoingEmail, inline: &[&Attachment]) -> Result<MultiPartOrSingle, MimeError> {
    let html = match &email.html {
        Some(h) if inline.is_empty() => {
            Some(MultiPartOrSingle::Single(SinglePart::html(h.clone())))
        }
        Some(h) => {
            let mut related = MultiPart::related().singlepart(SinglePart::html(h.clone()));
            for a in inline {
                related = related.singlepart(attachment_part(a)?);
            }
            Some(MultiPartOrSingle::Multi(related))
        }
        None => None,
    };
    let text = email.text.clone().map(SinglePart::plain);
    Ok(match (text, html) {
        (Some(t), Some(h)) => {
            let alt = MultiPart::alternative().singlepart(t);
            MultiPartOrSingle::Multi(match h {
                MultiPartOrSingle::Single(s) => alt.singlepart(s),
                MultiPartOrSingle::Multi(m) => alt.multipart(m),
            })
        }
        (Some(t), None) => MultiPartOrSingle::Single(t),
        (None, Some(h)) => h,
        // Validation requires text or html; an empty text part keeps the message well-formed.
        (None, None) => MultiPartOrSingle::Single(SinglePart::plain(String::new())),
    })
}

enum MultiPartOrSingle {
    Single(SinglePart),
    Multi(MultiPart),
}

/// Builds the message. `message_id` includes its angle brackets.
pub fn build_mime(
    email: &OutgoingEmail,
    message_id: &str,
    date: SystemTime,
) -> Result<Vec<u8>, MimeError> {
    let mut builder = lettre::Message::builder()
        .from(mailbox(&email.from)?)
        .subject(email.subject.clone())
        .message_id(Some(message_id.to_owned()))
        .date(date);
    if let Some(to) = mailboxes(&email.to)? {
        builder = builder.mailbox(lettre::message::header::To::from(to));
    }
    if let Some(cc) = mailboxes(&email.cc)? {
        builder = builder.mailbox(lettre::message::header::Cc::from(cc));
    }
    if let Some(reply_to) = mailboxes(&email.reply_to)? {
        builder = builder.mailbox(lettre::message::header::ReplyTo::from(reply_to));
    }
    for (name, value) in &email.headers {
        let name = HeaderName::new_from_ascii(name.clone())
            .map_err(|_| MimeError::HeaderName(name.clone()))?;
        builder = builder.raw_header(HeaderValue::new(name, value.clone()));
    }
    // The envelope is Herald's own (one VERP transaction per recipient); lettre only needs
    // one to build, so give it the first recipient and never use it.
    let first = email
        .recipients()
        .first()
        .map(|(_, m)| m.email.as_str().to_owned())
        .ok_or(MimeError::NoRecipients)?;
    let envelope = lettre::address::Envelope::new(
        None,
        vec![
            first
                .parse()
                .map_err(|_| MimeError::Address(first.clone()))?,
        ],
    )
    .map_err(|_| MimeError::NoRecipients)?;
    builder = builder.envelope(envelope);

    let (inline, regular): (Vec<&Attachment>, Vec<&Attachment>) = email
        .attachments
        .iter()
        .partition(|a| a.inline || a.content_id.is_some());
    let body = body(email, &inline)?;
    let message = if regular.is_empty() {
        match body {
            MultiPartOrSingle::Single(s) => builder.singlepart(s),
            MultiPartOrSingle::Multi(m) => builder.multipart(m),
        }
    } else {
        let mut mixed = match body {
            MultiPartOrSingle::Single(s) => MultiPart::mixed().singlepart(s),
            MultiPartOrSingle::Multi(m) => MultiPart::mixed().multipart(m),
        };
        for a in regular {
            mixed = mixed.singlepart(attachment_part(a)?);
        }
        builder.multipart(mixed)
    };
    // Every input was checked above; lettre's remaining error is a missing From, which we set.
    let message = message.map_err(|_| MimeError::NoRecipients)?;
    Ok(message.formatted())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn email() -> OutgoingEmail {
        OutgoingEmail {
            from: Mailbox::parse("Acme Café <orders@acme.com>").expect("valid"),
            to: vec![Mailbox::parse("ada@example.com").expect("valid")],
            cc: vec![],
            bcc: vec![Mailbox::parse("audit@acme.com").expect("valid")],
            reply_to: vec![],
            subject: "Ihre Bestellung — ✓".into(),
            text: Some("Thanks — Grüße.".into()),
            html: None,
            headers: vec![("X-Entity-Ref-ID".into(), "1042".into())],
            attachments: vec![],
            tags: vec![],
            metadata: BTreeMap::new(),
            stream: "transactional".into(),
            scheduled_at: None,
            expires_at: None,
        }
    }

    fn build(e: &OutgoingEmail) -> String {
        let bytes = build_mime(e, "<id-1@acme.com>", SystemTime::UNIX_EPOCH).expect("builds");
        assert!(bytes.is_ascii(), "message must be 7-bit clean");
        String::from_utf8(bytes).expect("ascii")
    }

    #[test]
    fn plain_text_message_has_the_headers_herald_owns() {
        let m = build(&email());
        assert!(m.contains("Message-ID: <id-1@acme.com>\r\n"), "{m}");
        assert!(
            m.contains("Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"),
            "{m}"
        );
        assert!(m.contains("MIME-Version: 1.0\r\n"));
        assert!(m.contains("X-Entity-Ref-ID: 1042\r\n"));
        assert!(m.contains("Subject: Ihre Bestellung =?utf-8?b?"), "{m}");
        assert!(m.contains("From: =?utf-8?"), "{m}");
        assert!(
            !m.to_ascii_lowercase().contains("bcc"),
            "Bcc must not leak: {m}"
        );
        assert!(m.contains("Content-Type: text/plain"));
    }

    #[test]
    fn text_and_html_with_inline_image_and_attachment_nest_correctly() {
        let mut e = email();
        e.html = Some("<p>Hi <img src=\"cid:logo\"></p>".into());
        e.attachments = vec![
            Attachment {
                filename: "logo.png".into(),
                content: vec![0x89, b'P', b'N', b'G'],
                content_type: "image/png".into(),
                content_id: Some("logo".into()),
                inline: true,
            },
            Attachment {
                filename: "INV-1042.pdf".into(),
                content: b"%PDF-1.4".to_vec(),
                content_type: "application/pdf".into(),
                content_id: None,
                inline: false,
            },
        ];
        let m = build(&e);
        let pos = |needle: &str| m.find(needle).unwrap_or_else(|| panic!("{needle} in {m}"));
        assert!(pos("multipart/mixed") < pos("multipart/alternative"));
        assert!(pos("multipart/alternative") < pos("text/plain"));
        assert!(pos("text/plain") < pos("multipart/related"));
        assert!(pos("multipart/related") < pos("text/html"));
        assert!(pos("Content-ID: <logo>") < pos("application/pdf"));
        assert!(m.contains("filename=\"INV-1042.pdf\""));
    }
}

//! A message submitted over SMTP, as its client wrote it.
//!
//! Herald keeps the client's MIME; it does not rebuild it. What it reads from the message is
//! what the rules need, put in a [`Draft`] so that the API's rules apply unchanged: the From
//! mailbox, the To and Cc headers (which say each envelope recipient's kind; an envelope
//! recipient in neither is a Bcc), the subject, the text and HTML parts (for the console), and
//! Herald's instructions, `X-Herald-Stream`, `X-Herald-Tags`, `X-Herald-Metadata-<key>` and
//! `Idempotency-Key`. What it removes before signing: `Bcc` and the instructions. What it adds
//! when missing: `Message-ID` and `Date`.

use mail_parser::{Address, MessageParser};

use super::draft::{AddressInput, Addresses, Draft, Invalid};

/// What Herald takes from a submitted message.
#[derive(Debug)]
pub struct Submitted {
    /// For the rules ([`Draft::check`]).
    pub draft: Draft,
    /// From `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// The message's own `Message-ID` (with its angle brackets), if it had one.
    pub message_id: Option<String>,
    /// The message as it will be sent: Herald's instructions and `Bcc` removed, `Date` added
    /// when missing (and `Message-ID`, by [`with_message_id`]).
    pub mime: Vec<u8>,
}

/// The headers Herald reads as instructions and removes.
fn is_instruction(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "x-herald-stream"
        || n == "x-herald-tags"
        || n.starts_with("x-herald-metadata-")
        || n == "idempotency-key"
}

/// Where the header block ends: the offset of the blank line that ends it (the whole
/// message, when it is headers only).
fn header_end(raw: &[u8]) -> usize {
    let crlf = memchr::memmem::find(raw, b"\r\n\r\n").map(|i| i + 2);
    let lf = memchr::memmem::find(raw, b"\n\n").map(|i| i + 1);
    match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(raw.len()),
    }
}

/// The header fields of a header block, each with its continuation lines: `(name, the
/// field's bytes, line ends included)`.
fn fields(block: &[u8]) -> Vec<(String, &[u8])> {
    let mut out: Vec<(String, &[u8])> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < block.len() {
        let end = memchr::memchr(b'\n', block.get(i..).unwrap_or_default())
            .map_or(block.len(), |n| i + n + 1);
        let line = block.get(i..end).unwrap_or_default();
        let continues = matches!(line.first(), Some(b' ' | b'\t'));
        if !continues && i > start {
            let field = block.get(start..i).unwrap_or_default();
            out.push((field_name(field), field));
            start = i;
        }
        i = end;
    }
    if start < block.len() {
        let field = block.get(start..).unwrap_or_default();
        out.push((field_name(field), field));
    }
    out
}

fn field_name(field: &[u8]) -> String {
    let colon = memchr::memchr(b':', field).unwrap_or(0);
    String::from_utf8_lossy(field.get(..colon).unwrap_or_default())
        .trim()
        .to_owned()
}

fn mailbox_inputs(a: Option<&Address<'_>>) -> Vec<(String, Option<String>)> {
    a.map(|a| {
        a.iter()
            .filter_map(|m| {
                Some((
                    m.address()?.trim().to_owned(),
                    m.name().map(|n| n.trim().to_owned()),
                ))
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Reads a submitted message for the envelope's recipients; `date` is the `Date` header's
/// value to add when the message has none. Refused (with what to fix) when it has no header
/// block Herald can read.
pub fn read(raw: &[u8], envelope: &[String], date: &str) -> Result<Submitted, Invalid> {
    let raw = &*crlf(raw);
    let msg = MessageParser::default().parse(raw).ok_or_else(|| {
        Invalid::new(
            "/message",
            "invalid_message",
            "the message has no header block Herald can read",
        )
    })?;
    let header = |name: &str| {
        msg.header_raw(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut draft = Draft {
        subject: msg.subject().map(str::to_owned),
        text: msg.body_text(0).map(|t| t.into_owned()),
        html: msg.body_html(0).map(|h| h.into_owned()),
        stream: header("X-Herald-Stream"),
        ..Draft::default()
    };
    draft.from = mailbox_inputs(msg.from())
        .into_iter()
        .next()
        .map(|(email, name)| AddressInput::Parts { email, name });
    // Each envelope recipient once, with the kind its headers give it.
    let to = mailbox_inputs(msg.to());
    let cc = mailbox_inputs(msg.cc());
    let named_in = |list: &[(String, Option<String>)], r: &str| {
        list.iter()
            .find(|(e, _)| e.eq_ignore_ascii_case(r))
            .map(|(_, n)| n.clone())
    };
    let (mut t, mut c, mut b) = (Vec::new(), Vec::new(), Vec::new());
    for r in envelope {
        let input = |name: Option<String>| AddressInput::Parts {
            email: r.clone(),
            name,
        };
        if let Some(name) = named_in(&to, r) {
            t.push(input(name));
        } else if let Some(name) = named_in(&cc, r) {
            c.push(input(name));
        } else {
            b.push(input(None));
        }
    }
    let list = |v: Vec<AddressInput>| {
        if v.is_empty() {
            Addresses::None
        } else {
            Addresses::Many(v)
        }
    };
    (draft.to, draft.cc, draft.bcc) = (list(t), list(c), list(b));
    if let Some(tags) = header("X-Herald-Tags") {
        draft.tags = tags
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
    }
    let end = header_end(raw);
    let block = raw.get(..end).unwrap_or_default();
    let mut kept = Vec::with_capacity(raw.len() + 128);
    let mut has_date = false;
    let mut message_id = None;
    let mut idempotency_key = None;
    for (name, field) in fields(block) {
        let lower = name.to_ascii_lowercase();
        if let Some(key) = lower.strip_prefix("x-herald-metadata-") {
            let value = String::from_utf8_lossy(field.get(name.len() + 1..).unwrap_or_default())
                .trim()
                .to_owned();
            draft.metadata.insert(key.to_owned(), value);
            continue;
        }
        if lower == "idempotency-key" {
            idempotency_key = header("Idempotency-Key");
            continue;
        }
        if lower == "bcc" || is_instruction(&name) {
            continue;
        }
        has_date |= lower == "date";
        if lower == "message-id" {
            message_id = msg.message_id().map(|m| format!("<{m}>"));
        }
        kept.extend_from_slice(field);
        if !field.ends_with(b"\n") {
            kept.extend_from_slice(b"\r\n");
        }
    }
    if !has_date {
        kept.extend_from_slice(format!("Date: {date}\r\n").as_bytes());
    }
    kept.extend_from_slice(raw.get(end..).unwrap_or_default());
    Ok(Submitted {
        draft,
        idempotency_key,
        message_id,
        mime: kept,
    })
}

/// The message with its lines ending in CRLF (RFC 5322 §2.1): a bare LF, as some clients send
/// (Python's `smtplib.SMTP.data`), becomes CRLF, so that every relay after Herald reads the
/// same lines Herald read.
fn crlf(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut prev = 0u8;
    let bare = |b: &u8, prev: &mut u8| {
        let is = *b == b'\n' && *prev != b'\r';
        *prev = *b;
        is
    };
    let count = raw.iter().filter(|b| bare(b, &mut prev)).count();
    if count == 0 {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + count);
    prev = 0;
    for b in raw {
        if bare(b, &mut prev) {
            out.push(b'\r');
        }
        out.push(*b);
    }
    std::borrow::Cow::Owned(out)
}

/// The message with a `Message-ID` header first, for one that had none.
pub fn with_message_id(mime: Vec<u8>, message_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(mime.len() + message_id.len() + 16);
    out.extend_from_slice(format!("Message-ID: {message_id}\r\n").as_bytes());
    out.extend_from_slice(&mime);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_line_feeds_become_crlf() {
        assert_eq!(&*crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert!(matches!(crlf(b"a\r\nb"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(&*crlf(b"\n\n"), b"\r\n\r\n");
    }

    const MSG: &[u8] = b"From: Acme <orders@acme.com>\r\nTo: Ada <ada@example.com>\r\n\
        Cc: bob@example.org\r\nBcc: secret@example.net\r\nSubject: =?UTF-8?Q?Caf=C3=A9?=\r\n\
        X-Herald-Tags: receipt, welcome\r\nX-Herald-Stream: transactional\r\n\
        X-Herald-Metadata-Order-Id: o-42\r\nIdempotency-Key: k-1\r\n\
        X-Other: kept\r\n continued\r\nContent-Type: text/plain\r\n\r\nHello\r\nBcc: in the body\r\n";

    fn kinds(a: &Addresses) -> Vec<String> {
        match a {
            Addresses::Many(v) => v
                .iter()
                .map(|i| match i {
                    AddressInput::Parts { email, .. } => email.clone(),
                    AddressInput::Text(t) => t.clone(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn headers_are_read_and_instructions_removed() {
        let envelope = [
            "ada@example.com".to_owned(),
            "BOB@example.org".to_owned(),
            "secret@example.net".to_owned(),
        ];
        let s = read(MSG, &envelope, "Sun, 06 Dec 2026 20:00:00 +0000").expect("read");
        assert_eq!(s.draft.subject.as_deref(), Some("Café"));
        assert_eq!(kinds(&s.draft.to), ["ada@example.com"]);
        assert_eq!(kinds(&s.draft.cc), ["BOB@example.org"]);
        assert_eq!(kinds(&s.draft.bcc), ["secret@example.net"]);
        assert_eq!(s.draft.tags, ["receipt", "welcome"]);
        assert_eq!(s.draft.stream.as_deref(), Some("transactional"));
        assert_eq!(
            s.draft.metadata.get("order-id").map(String::as_str),
            Some("o-42")
        );
        assert_eq!(s.idempotency_key.as_deref(), Some("k-1"));
        assert_eq!(s.message_id, None);
        let mime = String::from_utf8(s.mime).expect("utf-8");
        assert!(!mime.contains("Bcc: secret"), "{mime}");
        assert!(!mime.to_ascii_lowercase().contains("x-herald"), "{mime}");
        assert!(!mime.contains("Idempotency-Key"), "{mime}");
        assert!(mime.contains("X-Other: kept\r\n continued\r\n"), "{mime}");
        assert!(mime.contains("Date: Sun, 06 Dec 2026 20:00:00 +0000\r\n\r\nHello"));
        assert!(
            mime.ends_with("Bcc: in the body\r\n"),
            "the body is untouched"
        );
        assert_eq!(
            s.draft.text.as_deref().map(str::trim_end),
            Some("Hello\r\nBcc: in the body")
        );
    }

    #[test]
    fn a_message_id_and_date_of_its_own_are_kept() {
        let raw = b"From: a@b.c\nMessage-ID: <x@b.c>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nSubject: s\n\nbody\n";
        let s = read(raw, &["d@e.f".to_owned()], "never").expect("read");
        assert_eq!(s.message_id.as_deref(), Some("<x@b.c>"));
        let mime = String::from_utf8(s.mime).expect("utf-8");
        assert!(!mime.contains("never"));
        assert!(
            mime.contains("Message-ID: <x@b.c>\r\n"),
            "bare LF became CRLF: {mime}"
        );
        assert_eq!(
            String::from_utf8(with_message_id(b"A: b\r\n".to_vec(), "<m@x>")).expect("utf-8"),
            "Message-ID: <m@x>\r\nA: b\r\n"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_read_or_refused_without_a_panic(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let _ = read(&raw, &["a@b.c".to_owned()], "d");
        }
    }
}

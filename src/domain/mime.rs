//! Builds the RFC 5322 message once, at accept time; every SMTP attempt sends these bytes.
//!
//! Structure, from the inside out: `text/html` with its inline parts in
//! `multipart/related`; with a text part beside it in `multipart/alternative`; with regular
//! attachments around it all in `multipart/mixed`. Non-ASCII header text is encoded as
//! RFC 2047 encoded words; bodies as 7bit, quoted-printable or base64 (whichever lettre would
//! choose), so the message is 7-bit clean and needs no 8BITMIME. Text and HTML bodies that
//! need quoted-printable are encoded here (`text_body`): the encoder lettre uses inserts each
//! soft line break in the middle of its output, and was the largest single cost of accepting
//! an email.

use std::io::Write as _;
use std::time::SystemTime;

use lettre::message::header::ContentTransferEncoding;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment as LettreAttachment, Body, MultiPart, SinglePart};
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

/// A text or HTML body in the encoding lettre's `Body::new` would choose — 7bit when it is
/// ASCII in lines shorter than 76 bytes, else quoted-printable if at most a third of the bytes
/// need escaping, else base64 — with quoted-printable done by [`quoted_printable`].
fn text_body(text: &str) -> Body {
    let bytes = text.as_bytes();
    // lettre's two measures: a line too long (to the byte as lettre counts: 76 for the
    // first line, 75 after a line break), and how many bytes quoted-printable escapes.
    let mut start = 0;
    let mut too_long = false;
    for end in memchr::memchr_iter(b'\n', bytes).chain([bytes.len()]) {
        too_long |= end - start >= if start == 0 { 76 } else { 75 };
        start = end + 1;
    }
    if (text.is_ascii() && !too_long) || escaped(bytes) > bytes.len() / 3 {
        // 7bit or base64: lettre's own encoding.
        return Body::new(text.to_owned());
    }
    Body::dangerous_pre_encoded(
        quoted_printable(text),
        ContentTransferEncoding::QuotedPrintable,
    )
}

/// The longest encoded line before its soft line break's `=` (RFC 2045: 76 with it).
const QP_LINE: usize = 75;

/// Whether quoted-printable may write `b` as it is (spaces and tabs only inside a line).
fn qp_literal(b: u8) -> bool {
    matches!(b, b'!'..=b'<' | b'>'..=b'~' | b' ' | b'\t')
}

const ONES: u64 = u64::from_ne_bytes([1; 8]);
const HIGH: u64 = ONES * 0x80;

/// Whether the eight bytes of `w` are all printable ASCII, `' '`..=`'~'`, tested at once
/// (the bit tricks of Anderson's "Bit Twiddling Hacks": a byte below 0x20 or above 0x7e sets
/// its high bit in one of the two masks).
fn all_printable(w: u64) -> bool {
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    // Adding 1 sets the high bit of 0x7f; a byte from 0x80 has it already.
    let above_tilde = (w.wrapping_add(ONES) | w) & HIGH;
    below_space | above_tilde == 0
}

/// Whether the eight bytes of `w` are all printable ASCII other than `=` (`qp_literal` but
/// tab).
fn all_literal(w: u64) -> bool {
    let eq = w ^ (ONES * u64::from(b'='));
    let equal_sign = eq.wrapping_sub(ONES) & !eq & HIGH;
    all_printable(w) && equal_sign == 0
}

/// How many bytes quoted-printable escapes as lettre counts them: all but tab and `' '`..=`'~'`
/// (eight bytes at a time past the printable words).
fn escaped(bytes: &[u8]) -> usize {
    let count = |part: &[u8]| {
        part.iter()
            .filter(|&&b| b != b'\t' && !(b' '..=b'~').contains(&b))
            .count()
    };
    let words = bytes.chunks_exact(8);
    let rest = count(words.remainder());
    words
        .filter(|w| !all_printable(u64::from_ne_bytes((*w).try_into().unwrap_or_default())))
        .map(count)
        .sum::<usize>()
        + rest
}

/// Where the run of literal bytes of `line` from `i` ends, at most at `end`: eight bytes at
/// a time while they are all plain, then byte by byte.
fn literal_run(line: &[u8], mut i: usize, end: usize) -> usize {
    let line = line.get(..end).unwrap_or(line);
    loop {
        if let Some(word) = line.get(i..i + 8) {
            let word: [u8; 8] = word.try_into().unwrap_or_default();
            if all_literal(u64::from_ne_bytes(word)) {
                i += 8;
                continue;
            }
        }
        match line.get(i) {
            Some(&b) if qp_literal(b) => i += 1,
            _ => return i,
        }
    }
}

/// `text` as quoted-printable (RFC 2045 6.7), its line breaks (LF or CRLF) as CRLF: every
/// byte outside `!`..`~` (and `=`) as `=XX`, but spaces and tabs inside a line; encoded
/// lines broken with `=` CRLF before they pass 76 characters, never inside an `=XX`. Runs
/// of literal bytes are copied whole.
fn quoted_printable(text: &str) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16 + 8);
    let mut start = 0;
    let breaks = memchr::memchr_iter(b'\n', bytes).map(Some);
    for end in breaks.chain([None]) {
        let last_line = end.is_none();
        let mut line = bytes.get(start..end.unwrap_or(bytes.len())).unwrap_or(&[]);
        start = end.map_or(start, |e| e + 1);
        // A CR before the LF is the line break's own.
        if let (Some((b'\r', rest)), false) = (line.split_last(), last_line) {
            line = rest;
        }
        let ends_in_space = |j: usize| j == line.len() && matches!(line.last(), Some(b' ' | b'\t'));
        let (mut i, mut width) = (0, 0);
        while let Some(&b) = line.get(i) {
            let literal = qp_literal(b) && !ends_in_space(i + 1);
            if width + if literal { 1 } else { 3 } > QP_LINE {
                out.extend_from_slice(b"=\r\n");
                width = 0;
            }
            if literal {
                // This byte and the literal ones after it, as many as the line holds; a space
                // or tab that ends the line is left to be escaped.
                let mut j = literal_run(line, i + 1, line.len().min(i + (QP_LINE - width)));
                if ends_in_space(j) {
                    j -= 1;
                }
                out.extend_from_slice(line.get(i..j).unwrap_or(&[]));
                width += j - i;
                i = j;
            } else {
                let hex = |n: u8| HEX.get(usize::from(n & 15)).copied().unwrap_or(b'0');
                out.extend_from_slice(&[b'=', hex(b >> 4), hex(b)]);
                width += 3;
                i += 1;
            }
        }
        if !last_line {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn text_part(text: &str) -> SinglePart {
    SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(text_body(text))
}

fn html_part(html: &str) -> SinglePart {
    SinglePart::builder()
        .header(ContentType::TEXT_HTML)
        .body(text_body(html))
}

/// The body tree without attachments around it: text, html (+ inline parts), or both.
fn body(email: &OutgoingEmail, inline: &[&Attachment]) -> Result<MultiPartOrSingle, MimeError> {
    let html = match &email.html {
        Some(h) if inline.is_empty() => Some(MultiPartOrSingle::Single(html_part(h))),
        Some(h) => {
            let mut related = MultiPart::related().singlepart(html_part(h));
            for a in inline {
                related = related.singlepart(attachment_part(a)?);
            }
            Some(MultiPartOrSingle::Multi(related))
        }
        None => None,
    };
    let text = email.text.as_deref().map(text_part);
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
        (None, None) => MultiPartOrSingle::Single(text_part("")),
    })
}

enum MultiPartOrSingle {
    Single(SinglePart),
    Multi(MultiPart),
}

/// Whether lettre writes `s` in a header as it is: printable ASCII words, single spaces
/// between them (no encoded words, no quoting, and, in a short line, no folding).
fn plain_header_text(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.contains("  ")
        && s.bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// Appends `m` as lettre writes it when its display name needs no escaping: bare when it is
/// letters, digits, `-`, `_` and `.`; in double quotes when it has single spaces too.
/// `false` (and nothing appended) for any other name.
fn push_plain_mailbox(out: &mut Vec<u8>, m: &Mailbox) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    match m.name.as_deref() {
        None => {}
        Some(name) if !name.is_empty() && name.bytes().all(word) => {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b" <");
        }
        Some(name) if plain_header_text(name) && name.bytes().all(|b| b == b' ' || word(b)) => {
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\" <");
        }
        Some(_) => return false,
    }
    out.extend_from_slice(m.email.as_str().as_bytes());
    if m.name.is_some() {
        out.push(b'>');
    }
    true
}

/// Appends the header `name: value` and its CRLF; `None` when `value` wrote something
/// lettre would not write as it is, or the line passes lettre's 76 characters (it would fold
/// it).
fn header_line(
    out: &mut Vec<u8>,
    name: &str,
    value: impl FnOnce(&mut Vec<u8>) -> bool,
) -> Option<()> {
    let start = out.len();
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    let plain = value(out);
    let fits = out.len() - start <= 76;
    out.extend_from_slice(b"\r\n");
    (plain && fits).then_some(())
}

fn push_text(out: &mut Vec<u8>, s: &str) -> bool {
    out.extend_from_slice(s.as_bytes());
    plain_header_text(s)
}

fn push_mailbox_list(out: &mut Vec<u8>, list: &[Mailbox]) -> bool {
    list.iter().enumerate().all(|(i, m)| {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        push_plain_mailbox(out, m)
    })
}

/// The message of one text or HTML part whose header text needs no encoding, no quoting
/// beyond plain double quotes and no folding, written directly: the bytes lettre writes for
/// it (a test holds the two to the same bytes, header by header), without building lettre's
/// header map, mailboxes and envelope, most of the cost of building such a message. `None` for
/// any other message: lettre builds it.
fn simple_message(email: &OutgoingEmail, message_id: &str, date: SystemTime) -> Option<Vec<u8>> {
    let (part, content_type) = match (&email.text, &email.html) {
        (Some(text), None) => (text, "text/plain; charset=utf-8"),
        (None, Some(html)) => (html, "text/html; charset=utf-8"),
        _ => return None,
    };
    if !email.attachments.is_empty() || !plain_header_text(&email.subject) {
        return None;
    }
    let mut out = Vec::with_capacity(part.len() + part.len() / 8 + 512);
    header_line(&mut out, "From", |out| push_plain_mailbox(out, &email.from))?;
    header_line(&mut out, "Subject", |out| push_text(out, &email.subject))?;
    header_line(&mut out, "Message-ID", |out| push_text(out, message_id))?;
    let date = httpdate::fmt_http_date(date);
    let date = date.strip_suffix("GMT").unwrap_or(&date);
    header_line(&mut out, "Date", |out| {
        out.extend_from_slice(date.as_bytes());
        out.extend_from_slice(b"+0000");
        true
    })?;
    for (name, list) in [
        ("To", &email.to),
        ("Cc", &email.cc),
        ("Reply-To", &email.reply_to),
    ] {
        if !list.is_empty() {
            header_line(&mut out, name, |out| push_mailbox_list(out, list))?;
        }
    }
    for (name, value) in &email.headers {
        if !super::email::is_valid_header_name(name) {
            return None;
        }
        header_line(&mut out, name, |out| push_text(out, value))?;
    }
    let body = text_body(part);
    let _ = write!(
        out,
        "MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\
         Content-Transfer-Encoding: {}\r\n\r\n",
        body.encoding()
    );
    out.extend_from_slice(body.as_ref());
    out.extend_from_slice(b"\r\n");
    Some(out)
}

/// Builds the message. `message_id` includes its angle brackets.
pub fn build_mime(
    email: &OutgoingEmail,
    message_id: &str,
    date: SystemTime,
) -> Result<Vec<u8>, MimeError> {
    if email.recipients().is_empty() {
        return Err(MimeError::NoRecipients);
    }
    if let Some(message) = simple_message(email, message_id, date) {
        return Ok(message);
    }
    lettre_message(email, message_id, date)
}

/// The message as lettre builds it: any structure, any header text.
fn lettre_message(
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

    /// Texts that test quoted-printable's edges: long lines, spaces and tabs at the ends of
    /// lines and before soft breaks, `=`, CR alone, LF alone, CRLF, multi-byte characters
    /// across the 76-character boundary, empty lines, a text ending in a line break.
    fn awkward_texts() -> Vec<String> {
        let mut texts: Vec<String> = vec![
            ("Thank you for your order. ".repeat(80)),
            format!("{} \nnext line\t\r\n= sign =3D\n", "x".repeat(74)),
            format!("{}é{}", "a".repeat(73), "b".repeat(90)),
            "Grüße — ✓ ".repeat(30),
            "line\rwith a bare CR\n\n\nand empty lines\r\n".repeat(6),
            format!("{}\t", "y".repeat(200)),
            format!("{} ", "z".repeat(75)),
            "=".repeat(100),
            "trailing LF\n".repeat(10),
        ];
        // Pseudo-random texts over an alphabet of the awkward characters.
        let alphabet = ['a', ' ', '\t', '=', '\n', '\r', 'é', '✓', '.', 'Z', '~'];
        let mut seed: u64 = 0x5eed;
        for _ in 0..200 {
            let mut t = String::new();
            let len = 150 + (seed % 400) as usize;
            for _ in 0..len {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let pick = (seed >> 33) as usize;
                // Mostly letters, so lines grow long enough to be broken.
                t.push(if pick.is_multiple_of(3) {
                    alphabet[pick % alphabet.len()]
                } else {
                    'q'
                });
            }
            texts.push(t);
        }
        texts
    }

    /// What a text part carries once its line breaks are CRLF (bare CRs stay), as lettre
    /// writes any body.
    fn crlf(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = 0u8;
        for &b in text.as_bytes() {
            if b == b'\n' && prev != b'\r' {
                out.push(b'\r');
            }
            out.push(b);
            prev = b;
        }
        out
    }

    #[test]
    fn escapes_are_counted_as_one_byte_at_a_time_would() {
        for text in awkward_texts() {
            let bytes = text.as_bytes();
            let one_by_one = bytes
                .iter()
                .filter(|&&b| !matches!(b, b'\t' | b' '..=b'~'))
                .count();
            assert_eq!(escaped(bytes), one_by_one, "{text:?}");
        }
    }

    #[test]
    fn eight_bytes_at_a_time_agree_with_the_table_for_every_byte_in_every_place() {
        for place in 0..8 {
            for filler in [b'a', b' ', b'~', b'!'] {
                for b in 0..=255u8 {
                    let mut word = [filler; 8];
                    word[place] = b;
                    let expected = word.iter().all(|&c| qp_literal(c) && c != b'\t');
                    assert_eq!(
                        all_literal(u64::from_ne_bytes(word)),
                        expected,
                        "byte {b:#04x} at {place} among {filler:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn quoted_printable_decodes_back_to_the_text_in_short_clean_lines() {
        for text in awkward_texts() {
            let encoded = quoted_printable(&text);
            assert!(encoded.is_ascii(), "7-bit clean: {text:?}");
            let s = String::from_utf8(encoded.clone()).expect("ascii");
            for line in s.split("\r\n") {
                assert!(line.len() <= 76, "a line of {} in {s:?}", line.len());
                assert!(!line.contains(['\r', '\n']), "a bare CR or LF in {s:?}");
                assert!(
                    !line.ends_with([' ', '\t']),
                    "a line ends in white space: {line:?}"
                );
            }
            // Decoded by mail-parser, a decoder Herald did not write.
            let decoded =
                mail_parser::decoders::quoted_printable::quoted_printable_decode(&encoded)
                    .expect("valid quoted-printable");
            assert_eq!(decoded, crlf(&text), "round trip of {text:?}");
        }
    }

    #[test]
    fn text_bodies_take_the_encoding_lettre_would_choose() {
        let mut texts = awkward_texts();
        texts.extend(
            [
                "Short ASCII lines.\nOnly.",
                "Grüße",
                "Grüße aus Berlin, mit Dank.",
                "✓✓✓✓✓✓",
                "",
            ]
            .map(str::to_owned),
        );
        // Lines of 74 to 77 bytes, first and after a line break: lettre's edges.
        for n in 74..78 {
            texts.push("a".repeat(n));
            texts.push(format!("first\n{}", "a".repeat(n)));
            texts.push(format!("first\n{}\nlast", "a".repeat(n)));
        }
        let mut seen = std::collections::HashSet::new();
        for text in texts {
            let ours = text_body(&text).encoding();
            assert_eq!(ours, Body::new(text.clone()).encoding(), "{text:?}");
            seen.insert(format!("{ours:?}"));
        }
        assert_eq!(
            seen.len(),
            3,
            "7bit, quoted-printable and base64 all seen: {seen:?}"
        );
    }

    #[test]
    fn text_and_html_parts_read_back_whole_from_the_built_message() {
        for text in awkward_texts().into_iter().take(40) {
            let m = build(&OutgoingEmail {
                text: Some(text.clone()),
                html: Some(format!("<p>{text}</p>")),
                ..email()
            });
            let parsed = mail_parser::MessageParser::default()
                .parse(m.as_bytes())
                .expect("parses");
            let got = |s: &str| s.replace("\r\n", "\n");
            let want = |s: &str| {
                String::from_utf8(crlf(s))
                    .expect("utf-8")
                    .replace("\r\n", "\n")
            };
            assert_eq!(
                got(&parsed.body_text(0).expect("a text part")),
                want(&text),
                "text of {text:?}"
            );
            assert_eq!(
                got(&parsed.body_html(0).expect("an html part")),
                want(&format!("<p>{text}</p>")),
                "html of {text:?}"
            );
        }
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

    /// Every message the direct writer takes is the one lettre builds, byte for byte: plain
    /// and quoted names, lists, custom headers, lines of 76 characters (77 go to lettre,
    /// which folds them), 7bit, quoted-printable and base64 bodies, text or HTML alone.
    /// What it refuses (encoded words, escapes, folding, more than one part) lettre builds.
    #[test]
    fn the_direct_writer_writes_what_lettre_writes() {
        let date = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_790_000_123);
        let mailbox = |s: &str| Mailbox::parse(s).expect("valid");
        let names = [
            "orders@acme.com",
            "Acme <orders@acme.com>",
            "A.B_c-d9 <orders@acme.com>",
            "Acme Store Inc <orders@acme.com>",
            "\"Acme, Inc.\" <orders@acme.com>",
            "Café <orders@acme.com>",
            "\"Bob  Smith\" <orders@acme.com>",
        ];
        let subjects = [
            "Your order".to_owned(),
            format!("Order {}", "x".repeat(61)),
            format!("Order {}", "x".repeat(62)),
            "Ihre Bestellung — ✓".to_owned(),
            "a\tb".to_owned(),
            "=?utf-8?q?looks_encoded?=".to_owned(),
            "two  spaces".to_owned(),
        ];
        let lists = [
            vec![],
            vec![mailbox("ada@example.com")],
            vec![
                mailbox("Ada Lovelace <ada@example.com>"),
                mailbox("bob+tag@example.com"),
            ],
            vec![mailbox("Carol <carol@example.org>")],
            (0..6)
                .map(|i| mailbox(&format!("user{i}@example.com")))
                .collect(),
        ];
        let bodies = [
            (Some("Thanks.".to_owned()), None),
            (Some("Thanks. ".repeat(40)), None),
            (Some("Grüße ✓ ".repeat(30)), None),
            (Some("日本語のテキスト".repeat(10)), None),
            (None, Some("<p>Hi</p>".to_owned())),
            (Some("a".into()), Some("<p>a</p>".to_owned())),
        ];
        let (mut direct, mut total) = (0, 0);
        for from in names {
            for subject in &subjects {
                for (i, to) in lists.iter().enumerate() {
                    for (text, html) in &bodies {
                        let mut e = email();
                        e.from = mailbox(from);
                        e.subject = subject.clone();
                        e.to = to.clone();
                        // Cc and Reply-To from the lists that fit in a line.
                        e.cc = lists[(i + 1) % 4].clone();
                        e.reply_to = lists[(i + 2) % 4].clone();
                        e.text = text.clone();
                        e.html = html.clone();
                        if i == 3 {
                            e.headers.push(("X-Long".into(), "v".repeat(80)));
                        }
                        if e.recipients().is_empty() {
                            continue;
                        }
                        let want = lettre_message(&e, "<id-1@acme.com>", date).expect("builds");
                        total += 1;
                        if let Some(got) = simple_message(&e, "<id-1@acme.com>", date) {
                            direct += 1;
                            assert_eq!(
                                String::from_utf8_lossy(&got),
                                String::from_utf8_lossy(&want)
                            );
                        }
                    }
                }
            }
        }
        // Directly: 4 of the 7 senders (not the escaped, encoded or double-spaced names), 3
        // of the 7 subjects, the 3 list sets with short lines, the 5 single-part bodies.
        assert_eq!(direct, 4 * 3 * 3 * 5, "of {total}");
        // The bench's email, and an HTML one, take the direct way.
        let mut e = email();
        e.from = mailbox("Acme <orders@acme.com>");
        e.subject = "Your order".into();
        assert!(simple_message(&e, "<id-1@acme.com>", date).is_some());
        e.text = None;
        e.html = Some("<p>Hi</p>".into());
        assert!(simple_message(&e, "<id-1@acme.com>", date).is_some());
        // With an attachment it goes to lettre.
        e.attachments.push(Attachment {
            filename: "a.txt".into(),
            content: b"a".to_vec(),
            content_type: "text/plain".into(),
            content_id: None,
            inline: false,
        });
        assert!(simple_message(&e, "<id-1@acme.com>", date).is_none());
    }
}

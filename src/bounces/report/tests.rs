use super::*;

#[test]
fn a_header_is_found_whatever_the_bytes_before_it() {
    assert_eq!(
        header_in("Сообщение: x\nMessage-ID: <a@b>\n", "message-id").as_deref(),
        Some("<a@b>")
    );
    // The old reader sliced the line at the name's length, inside a Cyrillic letter.
    assert_eq!(header_in("Сообщение не доставлено\n", "message-id"), None);
    assert_eq!(header_in("漢字漢字漢字漢字\n", "message-id"), None);
}

#[test]
fn clip_cuts_on_a_character_boundary() {
    assert_eq!(clip("héllo", 2), "h");
    assert_eq!(clip("héllo", 3), "hé");
    assert_eq!(clip("abc", 10), "abc");
}

mod properties {
    use proptest::prelude::*;

    use super::super::{MAX_DIAGNOSTIC, MAX_RECIPIENTS, dsn, parse_report, plain};
    use super::*;

    /// Text that looks like bounces more often than random bytes do: report words, addresses,
    /// codes, field names, multibyte letters.
    fn bouncy() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("Final-Recipient: rfc822; ".to_owned()),
            Just("Action: failed\n".to_owned()),
            Just("Status: 5.1.1\n".to_owned()),
            Just("Diagnostic-Code: smtp; 550 ".to_owned()),
            Just("\n\n".to_owned()),
            Just(" said: 550 5.7.1 user unknown ".to_owned()),
            Just("Message-ID: <a@b>\n".to_owned()),
            Just("> From: x@y.z\n".to_owned()),
            Just("--- Below this line is a copy of the message.\n".to_owned()),
            "[a-z0-9.+=_-]{0,12}@[a-z0-9.-]{0,12}",
            "[\\PC]{0,20}",
            Just("Сообщение не доставлено: 漢字\n".to_owned()),
        ];
        prop::collection::vec(piece, 0..60).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn any_bytes_read_within_bounds(raw in prop::collection::vec(any::<u8>(), 0..4096)) {
            let r = parse_report(&raw);
            prop_assert!(r.recipients.len() <= MAX_RECIPIENTS);
        }

        #[test]
        fn any_bounce_like_text_reads_within_bounds(body in bouncy(), subject in bouncy()) {
            let raw = format!(
                "From: MAILER-DAEMON@x.example\nSubject: Undelivered {subject}\n\
                 Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n\
                 --B\nContent-Type: text/plain\n\n{body}\n--B\nContent-Type: message/delivery-status\n\n{body}\n--B--\n"
            );
            let r = parse_report(raw.as_bytes());
            prop_assert!(r.recipients.len() <= MAX_RECIPIENTS);
            for rr in &r.recipients {
                prop_assert!(rr.diagnostic.as_ref().is_none_or(|d| d.len() <= MAX_DIAGNOSTIC));
            }
        }

        #[test]
        fn plain_text_reads_within_bounds(text in bouncy(), from in "[a-z@.]{0,10}") {
            let found = plain::parse(&text, &from);
            prop_assert!(found.len() <= MAX_RECIPIENTS);
            for r in &found {
                prop_assert!(plain::is_internet_address(&r.address));
                prop_assert!(r.diagnostic.as_ref().is_none_or(|d| d.len() <= MAX_DIAGNOSTIC));
            }
        }

        #[test]
        fn status_fields_read_within_bounds(text in bouncy()) {
            let mut report = Report {
                kind: ReportKind::Dsn,
                recipients: Vec::new(),
                original_message_id: None,
                reporting_mta: None,
                complaint: None,
            };
            dsn::parse_fields(&text, &mut report);
            dsn::fill_from_text(&mut report, &text);
            prop_assert!(report.recipients.len() <= MAX_RECIPIENTS);
        }

        #[test]
        fn addresses_are_found_on_character_boundaries(line in "[\\PC@.<>]{0,200}") {
            for (start, end) in plain::find_addresses(&line) {
                prop_assert!(start < end && end <= line.len());
                let found = line.get(start..end);
                prop_assert!(found.is_some_and(|a| a.contains('@')));
            }
        }

        #[test]
        fn cleaning_and_clipping_never_panic(s in "\\PC{0,400}", n in 0usize..500) {
            let c = plain::clean_address(&s);
            prop_assert!(c.len() <= 330 + 1);
            let clipped = clip(&s, n);
            prop_assert!(clipped.len() <= n && s.starts_with(clipped));
            let _ = header_in(&s, "message-id");
            let _ = strip_tags(&s);
            let _ = first_reply_code(&s, 400);
        }

        #[test]
        fn the_classifier_takes_any_text(code in proptest::option::of(0u16..1000), text in "\\PC{0,300}") {
            let status = text.split_whitespace().next();
            let _ = crate::domain::bounce::classify_parts(code, status, &text);
        }
    }
}

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

//! What a Prefect server accepts of a message. Prefect 3.9.1 drops an event
//! over 1,500,000 bytes without an error ("Refusing to publish event of
//! size …", `PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES`), and a task run's
//! event carries its state message up to three times; its clients cut log
//! lines at 1,000,000 bytes (`PREFECT_LOGGING_TO_API_MAX_LOG_SIZE`). Every
//! message sent is cut well under both, with a marker; the run history
//! keeps the whole text.

use std::borrow::Cow;

/// The most bytes of one message sent to the server.
pub(crate) const MAX_MESSAGE_BYTES: usize = 100_000;

/// `text`, or its first bytes (on a character boundary) and a marker saying
/// how much was cut and where the whole text is, if it is too long.
pub(crate) fn for_server(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_MESSAGE_BYTES {
        return Cow::Borrowed(text);
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}… [cut by prefecto: {} more bytes; `prefecto flow-run inspect --json` shows the whole text]",
        &text[..end],
        text.len() - end
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_sent_whole() {
        assert!(matches!(for_server("boom"), Cow::Borrowed("boom")));
    }

    #[test]
    fn a_huge_message_is_cut_on_a_character_boundary_with_a_marker() {
        let huge = "é".repeat(1_000_000);
        let sent = for_server(&huge);
        assert!(sent.len() < MAX_MESSAGE_BYTES + 200);
        assert!(sent.ends_with("shows the whole text]"));
        assert!(sent.contains("1900000 more bytes"));
    }
}

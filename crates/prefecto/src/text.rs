//! Text from outside the program (task results and errors, parameters,
//! names, what a server sends back) made safe to show to a person: it may
//! hold terminal escape sequences, bells, newlines that would forge a log
//! line, or bidirectional overrides that reorder what a reader sees.
//!
//! Machine-readable output (`--json`, what goes to a server) keeps the exact
//! text; only what a person reads is escaped.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must not reach a terminal as itself: a control character
/// (C0, DEL, C1) or a Unicode bidirectional control.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every control character written as an escape (`\n`, `\t`,
/// `\u{1b}`), so that it stays on one line and changes nothing on the
/// terminal. Borrowed when there is nothing to escape.
///
/// ```
/// use prefecto::text::escape_controls;
///
/// assert_eq!(escape_controls("plain"), "plain");
/// assert_eq!(
///     escape_controls("bad\n12:00:00.000 | INFO    | forged\x1b[31m"),
///     r"bad\n12:00:00.000 | INFO    | forged\u{1b}[31m"
/// );
/// ```
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if is_unsafe(c) => {
                let _ = write!(escaped, "\\u{{{:x}}}", c as u32);
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// At most `max_chars` characters of `text`, escaped as by
/// [`escape_controls`], ending with a marker that says how much was left
/// out: for a table cell or a tooltip, where the whole text does not fit.
///
/// ```
/// use prefecto::text::for_display;
///
/// assert_eq!(for_display("short", 10), "short");
/// assert_eq!(for_display(&"x".repeat(30), 10), "xxxxxxxxxx… (20 more characters)");
/// ```
pub fn for_display(text: &str, max_chars: usize) -> Cow<'_, str> {
    let escaped = escape_controls(text);
    let total = escaped.chars().count();
    if total <= max_chars {
        return escaped;
    }
    let kept: String = escaped.chars().take(max_chars).collect();
    Cow::Owned(format!("{kept}… ({} more characters)", total - max_chars))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_control_character_and_bidi_override() {
        for c in [
            '\0', '\x07', '\x08', '\x1b', '\x7f', '\u{85}', '\u{9b}', '\u{202e}', '\u{2066}',
        ] {
            let text = format!("a{c}b");
            let escaped = escape_controls(&text);
            assert!(!escaped.chars().any(is_unsafe), "{c:?} -> {escaped:?}");
            assert!(escaped.starts_with('a') && escaped.ends_with('b'));
        }
    }

    #[test]
    fn leaves_printable_text_alone() {
        let text = "naïve 東京 \\n 'quoted' \"x\"";
        assert!(matches!(escape_controls(text), Cow::Borrowed(_)));
    }

    #[test]
    fn a_huge_message_is_cut_with_a_marker() {
        let huge = "é".repeat(1_000_000);
        let shown = for_display(&huge, 200);
        assert_eq!(
            shown.chars().count(),
            200 + "… (999800 more characters)".chars().count()
        );
    }
}

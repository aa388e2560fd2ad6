//! Make received text harmless for a terminal: no control characters, escape
//! sequences, line breaks or bidirectional overrides ever reach it raw, so a
//! message cannot change the terminal's state or fake a line from someone else.

use std::borrow::Cow;

/// `text` with every dangerous character replaced by a visible stand-in:
/// C0 controls (except tab) and DEL in caret notation (`^[`, `^J`, `^?`), C1
/// controls and bidirectional/invisible formatting characters as `<U+XXXX>`.
pub(crate) fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_dangerous) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !is_dangerous(c) {
            out.push(c);
        } else if (c as u32) < 0x20 {
            out.push('^');
            out.push(char::from(b'@' + c as u8));
        } else if c == '\u{7f}' {
            out.push_str("^?");
        } else {
            out.push_str(&format!("<U+{:04X}>", c as u32));
        }
    }
    Cow::Owned(out)
}

fn is_dangerous(c: char) -> bool {
    match c {
        '\t' => false,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        // Bidirectional embeddings, overrides and isolates, and marks that can
        // reorder what the reader sees.
        '\u{061c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' => true,
        // Line and paragraph separators, which some terminals treat as breaks.
        '\u{2028}' | '\u{2029}' => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_untouched_and_not_copied() {
        let text = "hello\twörld ✓";
        assert!(matches!(sanitize(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn controls_become_visible() {
        assert_eq!(sanitize("\x1b[2J\x07"), "^[[2J^G");
        assert_eq!(sanitize("hi\nbob: fake"), "hi^Jbob: fake");
        assert_eq!(sanitize("a\rb\x7f"), "a^Mb^?");
        assert_eq!(sanitize("\u{9b}31m"), "<U+009B>31m");
        assert_eq!(sanitize("abc\u{202e}def"), "abc<U+202E>def");
        assert_eq!(sanitize("\0"), "^@");
    }

    #[test]
    fn output_never_contains_a_control_character() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let clean = sanitize(&all);
        assert!(!clean
            .chars()
            .any(|c| c != '\t' && (c.is_control() || is_dangerous(c))));
    }
}

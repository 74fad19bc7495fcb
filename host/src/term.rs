//! Text for a terminal from sources nixtest does not trust: plugins, heal packs, report files,
//! the guest. Control characters (escape sequences, carriage returns, backspaces), C1
//! controls, and the invisible characters that reorder or hide text (bidi overrides, zero
//! width, line separators) are shown as visible escapes, so nothing can move the cursor,
//! recolour, retitle or fake a line on the user's screen.

use std::borrow::Cow;
use std::fmt::Write;

fn hidden(c: char, keep_newlines: bool) -> bool {
    match c {
        '\n' | '\t' if keep_newlines => false,
        c if c.is_control() => true,
        '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{2069}'
        | '\u{061C}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}' => true,
        _ => false,
    }
}

fn escape(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| hidden(c, keep_newlines)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if hidden(c, keep_newlines) {
            if (c as u32) < 0x100 {
                let _ = write!(out, "\\x{:02x}", c as u32);
            } else {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One line of untrusted text: every control character made visible, newlines included.
pub fn line(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// Untrusted text of several lines: newlines and tabs stay, every other control is visible.
pub fn text(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

/// One safe line of at most `max` characters, with `…` where it was cut.
pub fn clip(s: &str, max: usize) -> String {
    let safe = line(s);
    if safe.chars().count() <= max {
        return safe.into_owned();
    }
    let mut out: String = safe.chars().take(max).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_cannot_reach_the_terminal() {
        let fake = "ok\x1b[2K\r  capabilities: none\u{202e}\u{9b}31m";
        let shown = line(fake);
        assert!(!shown.chars().any(|c| c.is_control()));
        assert_eq!(
            shown,
            "ok\\x1b[2K\\x0d  capabilities: none\\u{202e}\\x9b31m"
        );
        assert_eq!(text("a\nb\tc\x07"), "a\nb\tc\\x07");
        assert_eq!(line("a\nb"), "a\\x0ab");
        assert!(matches!(line("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn clipping_counts_characters() {
        assert_eq!(clip("ééééé", 3), "ééé…");
        assert_eq!(clip("abc", 3), "abc");
    }
}

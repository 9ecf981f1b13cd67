//! Text that came from outside this program (a bucket, a server's error answer, a user's
//! program) before it reaches a terminal: control characters and the Unicode formatting
//! characters that reorder a line are shown as `\u{…}`, never sent as they are. An entry path
//! holding ESC or BEL would otherwise clear the screen or retitle the terminal.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as it is: C0 and C1 controls (ESC, BEL, CR, …) and the
/// bidirectional overrides, isolates and marks (which make a line read other than it is).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character written as `\u{hex}` (borrowed when there is none).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_sequences_are_shown_not_sent() {
        assert_eq!(escape("plain/path.bin"), "plain/path.bin");
        assert_eq!(escape("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("\u{7}x\u{9b}"), "\\u{7}x\\u{9b}");
        assert_eq!(escape("evil\u{202e}gnp.exe"), "evil\\u{202e}gnp.exe");
        assert_eq!(escape("line\nnext"), "line\\u{a}next");
        // Printable non-ASCII stays readable.
        assert_eq!(escape("Galaxie × ñ 銀河"), "Galaxie × ñ 銀河");
    }
}

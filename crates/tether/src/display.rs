//! Text that came from outside (an agent's name, host name, error messages,
//! anything an agent reports), made safe to print on a terminal. A hostile
//! agent must not be able to send escape sequences to an admin's terminal
//! (recolouring, retitling, hiding lines, rewriting the screen), nor fake
//! lines of output with a newline, nor reorder text with bidirectional
//! controls. [`safe`] escapes each such character visibly instead.
//!
//! JSON output (`--json`) needs none of this: serde escapes control
//! characters, and bidirectional controls are data a JSON reader keeps.

/// Characters that change how the rest of a line is displayed without being
/// control characters: the bidirectional embeddings, overrides and isolates
/// ("Trojan Source"), and the zero-width marks.
fn is_format_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
    )
}

/// `s` with every control character (C0, DEL, C1) and every display-changing
/// format character escaped: `\n`, `\r`, `\t`, else `\u{1b}` and the like.
/// Printable text, any script, is kept as it is.
pub fn safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_format_control(c) => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

/// [`safe`], cut to at most `max` characters of the original (with `…`), so
/// one hostile value cannot flood a screen.
pub fn safe_cut(s: &str, max: usize) -> String {
    let cut: String = s.chars().take(max).collect();
    let mut out = safe(&cut);
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_fake_lines_are_shown_not_obeyed() {
        let hostile = "ok\x1b]0;pwned\x07\x1b[2J\r\nStatus ACTIVE\x7f\u{9b}31m";
        let shown = safe(hostile);
        assert_eq!(
            shown,
            "ok\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\r\\nStatus ACTIVE\\u{7f}\\u{9b}31m"
        );
        assert!(!shown.chars().any(char::is_control));
    }

    #[test]
    fn bidirectional_overrides_are_escaped_and_scripts_kept() {
        assert_eq!(safe("admin\u{202e}gpj.exe"), "admin\\u{202e}gpj.exe");
        assert_eq!(safe("zero\u{200b}width"), "zero\\u{200b}width");
        assert_eq!(safe("東京-ñ-ü 😀"), "東京-ñ-ü 😀");
    }

    #[test]
    fn long_values_are_cut() {
        assert_eq!(safe_cut("abcdef", 3), "abc…");
        assert_eq!(safe_cut("a\x1bc", 5), "a\\u{1b}c");
    }
}

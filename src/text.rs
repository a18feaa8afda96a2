//! Showing text that came from outside (inputs, listings, MAST answers) to a person.
//!
//! Owns the one rule for echoing such text in errors, notes, tables and the manifest's
//! `message`: characters that could act on a terminal or reorder what it shows (control
//! characters, ANSI escape sequences, bidirectional overrides, zero-width marks) are written as
//! `\u{..}`, and an echoed item is cut to a length a person can read. It decides nothing about
//! what is valid; the parsers do that. Also owns the one-line form of an error and its causes
//! ([`chain`]), the form every per-file error and note takes.

use std::borrow::Cow;

/// Characters of an echoed item kept before it is cut: enough for any product name, URI or
/// listing key (MAST's longest are under 150), short enough that a binary file given as a list
/// cannot flood a terminal.
pub(crate) const SHOWN_CHARS: usize = 200;

/// An error and its causes on one line (`a: b: c`), each cause once: for the manifest, the
/// error line and notes.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let next = e.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = e.source();
    }
    s
}

/// Whether `c` must not reach a terminal as itself.
fn hostile(c: char) -> bool {
    c.is_control()
        || matches!(c,
            // Bidirectional embeddings, overrides, isolates and marks (Trojan Source).
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
            // Zero-width characters and the BOM: invisible, so two names would look alike.
            | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}'
            // Line and paragraph separators break lines on some terminals.
            | '\u{2028}' | '\u{2029}')
}

/// `s` with every hostile character written as `\u{..}` (nothing else changes, so escaping
/// twice gives the same text).
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(hostile) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if hostile(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// An echoed item: cut to [`SHOWN_CHARS`] characters (saying how much was left out), escaped.
pub(crate) fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        None => escape(s).into_owned(),
        Some((cut, _)) => {
            let rest = s[cut..].chars().count();
            format!("{}...({rest} more characters)", escape(&s[..cut]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_escaped() {
        assert_eq!(escape("plain_name.fits"), "plain_name.fits");
        assert_eq!(escape("a\u{1b}[31mred"), "a\\u{1b}[31mred");
        assert_eq!(escape("evil\u{202E}stif.exe"), "evil\\u{202e}stif.exe");
        assert_eq!(escape("nul\0tab\tnl\n"), "nul\\u{0}tab\\u{9}nl\\u{a}");
        assert_eq!(escape(&escape("x\u{7}")), escape("x\u{7}"));
    }

    #[test]
    fn long_items_are_cut() {
        let long = "é".repeat(1000);
        let s = shown(&long);
        assert!(s.starts_with(&"é".repeat(SHOWN_CHARS)));
        assert!(s.ends_with("...(800 more characters)"), "{s}");
        assert_eq!(shown("short"), "short");
    }
}

//! JSON string escapes, read without failing on lone surrogates.
//!
//! JSON's grammar lets a `\uXXXX` escape name any UTF-16 code unit, so valid
//! JSON text may hold a *lone surrogate*: `"\ud800"` without a low-surrogate
//! escape after it, or a lone `"\udc00"`. Such a string is not Unicode.
//! serde_json refuses it where it decodes a string (a `String`, a map key)
//! but accepts it in a `RawValue`, which it never decodes.
//!
//! The node refuses requests holding one (docs/protocol.md "Bad input"), but
//! text stored by earlier versions, or given to the library as a `RawValue`,
//! may hold one, and must still load and fold. What reads escapes therefore
//! lives here, robust to them:
//!
//! - [`unicode_escape`]: one `\u` escape with its low half;
//! - [`lone_surrogates`]: where a text holds them (the node's cold path);
//! - [`canonical_key`]: an escaped object key in one canonical spelling,
//!   the fold's identity for keys.

/// A `\u` escape, as read by [`unicode_escape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unicode {
    /// A character, and how many bytes its escape takes (6, or 12 for a
    /// surrogate pair).
    Char(char, usize),
    /// A lone surrogate (its escape takes 6 bytes).
    Lone(u16),
}

/// The code unit of four hex digits at `bytes[at..]`.
fn hex4(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = bytes.get(at..at + 4)?;
    digits.iter().try_fold(0u16, |n, &d| {
        let v = char::from(d).to_digit(16)?;
        // Four digits fit in 16 bits: the shift never loses any.
        Some(n << 4 | v as u16)
    })
}

/// The `\u` escape whose backslash is at `bytes[at]`, taken together with
/// the low-surrogate escape right after it when it is a high surrogate.
/// `None`: not followed by four hex digits (not JSON).
pub(crate) fn unicode_escape(bytes: &[u8], at: usize) -> Option<Unicode> {
    let unit = hex4(bytes, at + 2)?;
    match unit {
        0xD800..=0xDBFF => {
            let low = match bytes.get(at + 6..at + 8) {
                Some(b"\\u") => hex4(bytes, at + 8),
                _ => None,
            };
            match low {
                Some(low @ 0xDC00..=0xDFFF) => {
                    let c =
                        0x1_0000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
                    Some(char::from_u32(c).map_or(Unicode::Lone(unit), |c| Unicode::Char(c, 12)))
                }
                _ => Some(Unicode::Lone(unit)),
            }
        }
        0xDC00..=0xDFFF => Some(Unicode::Lone(unit)),
        _ => Some(
            char::from_u32(u32::from(unit)).map_or(Unicode::Lone(unit), |c| Unicode::Char(c, 6)),
        ),
    }
}

/// The byte offsets (of the backslash) of every lone-surrogate escape in
/// `text`, in order. Backslashes only occur inside strings in JSON, so this
/// need not follow the structure.
pub(crate) fn lone_surrogates(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(at) = b
        .get(i..)
        .and_then(|rest| rest.iter().position(|&c| c == b'\\'))
    {
        let at = i + at;
        i = at + 2;
        if b.get(at + 1) == Some(&b'u') {
            match unicode_escape(b, at) {
                Some(Unicode::Char(_, len)) => i = at + len,
                Some(Unicode::Lone(_)) => {
                    found.push(at);
                    i = at + 6;
                }
                None => {}
            }
        }
    }
    found
}

/// An object key (its text as written between the quotes, valid JSON) in
/// one spelling: its escapes decoded, then written back as serde_json
/// writes strings (`\"`, `\\`, control characters escaped, all else raw),
/// a lone surrogate as `\u` and four lowercase hex digits. Two keys are the
/// same key exactly when their canonical spellings are equal, and a key
/// without escapes is already canonical.
pub(crate) fn canonical_key(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let at_line = raw.len() - rest.len() + at;
        let (decoded, len) = match b.get(at_line + 1) {
            Some(b'u') => match unicode_escape(b, at_line) {
                Some(Unicode::Char(c, len)) => (Ok(c), len),
                Some(Unicode::Lone(unit)) => (Err(unit), 6),
                // Not JSON: keep the backslash as a character.
                None => (Ok('\\'), 1),
            },
            Some(b'b') => (Ok('\u{8}'), 2),
            Some(b'f') => (Ok('\u{c}'), 2),
            Some(b'n') => (Ok('\n'), 2),
            Some(b'r') => (Ok('\r'), 2),
            Some(b't') => (Ok('\t'), 2),
            Some(&c) if c.is_ascii() => (Ok(char::from(c)), 2),
            _ => (Ok('\\'), 1),
        };
        match decoded {
            Ok(c) => push_escaped(&mut out, c),
            Err(unit) => push_unit(&mut out, unit),
        }
        rest = raw.get(at_line + len..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// Appends `c` as serde_json writes it inside a string.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        // Four hex digits fit in the 16 bits of a control character.
        c if c < ' ' => push_unit(out, c as u16),
        c => out.push(c),
    }
}

/// Appends `\u` and `unit` in four lowercase hex digits.
fn push_unit(out: &mut String, unit: u16) {
    out.push_str(&format!("\\u{unit:04x}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_classified() {
        let at = |s: &str| unicode_escape(s.as_bytes(), 0);
        assert_eq!(at(r"\u0041"), Some(Unicode::Char('A', 6)));
        assert_eq!(at(r"\uD83D\uDE00"), Some(Unicode::Char('😀', 12)));
        assert_eq!(at(r"\ud800"), Some(Unicode::Lone(0xD800)));
        assert_eq!(at(r"\ud800x"), Some(Unicode::Lone(0xD800)));
        assert_eq!(at(r"\ud800\u0041"), Some(Unicode::Lone(0xD800)));
        assert_eq!(at(r"\ud800\ud800"), Some(Unicode::Lone(0xD800)));
        assert_eq!(at(r"\ud800\n"), Some(Unicode::Lone(0xD800)));
        assert_eq!(at(r"\udc00"), Some(Unicode::Lone(0xDC00)));
        assert_eq!(at(r"\u12g4"), None);
        assert_eq!(at(r"\u12"), None);
    }

    #[test]
    fn lone_surrogates_are_found_where_serde_refuses_the_string() {
        for (text, found) in [
            (r#""plain""#, vec![]),
            (r#""\ud800""#, vec![1]),
            (r#""\udc00""#, vec![1]),
            (r#""\ud83d\ude00""#, vec![]),
            (r#""a\\ud800""#, vec![]),
            (r#""\ud800\ud800\udc00""#, vec![1]),
            (r#""\udc00\ud800""#, vec![1, 7]),
            (r#"{"k":"\u00e9","\ud800":1}"#, vec![15]),
        ] {
            assert_eq!(lone_surrogates(text), found, "{text}");
            let decodes = serde_json::from_str::<serde_json::Value>(text).is_ok();
            assert_eq!(decodes, found.is_empty(), "{text}");
        }
    }

    #[test]
    fn keys_take_one_canonical_spelling() {
        for (raw, canonical) in [
            ("plain", "plain"),
            (r"\u0061", "a"),
            (r"\/", "/"),
            (r"\u00e9", "é"),
            (r"\ud83d\ude00", "😀"),
            (r#"\"\\"#, r#"\"\\"#),
            (r"\u0022\u005c", r#"\"\\"#),
            (r"\u000a\n\u0001", r"\n\n\u0001"),
            (r"\uD800", r"\ud800"),
            (r"a\udc00b", r"a\udc00b"),
        ] {
            assert_eq!(canonical_key(raw), canonical, "{raw}");
        }
        // Without lone surrogates, the canonical spelling is serde_json's.
        for raw in [r"\u0061\t\u001f", r#"x\"y"#, r"\u00e9\ud83d\ude00"] {
            let decoded: String = serde_json::from_str(&format!("\"{raw}\"")).unwrap();
            let written = serde_json::to_string(&decoded).unwrap();
            assert_eq!(canonical_key(raw), written[1..written.len() - 1], "{raw}");
        }
    }
}

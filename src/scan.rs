//! A validating, zero-copy JSON scanner: the node's fast path for decoding
//! request lines.
//!
//! # Why not serde_json alone
//!
//! Decoding was the largest cost of a request (a 214-byte append took
//! ~590 ns through serde's derived visitor over a 17-field struct of
//! `&RawValue`s: every string scanned twice, every key matched by `memcmp`
//! against a list, a 300-byte struct moved around). This scanner walks the
//! line once, validates every byte of JSON it passes over, and hands back
//! each field's raw text as a slice of the line.
//!
//! # The contract with serde_json
//!
//! The scanner is a *subset* parser: whenever it accepts a line, serde_json
//! accepts the same line and yields the same field texts; whenever anything
//! is unusual it returns `None` and the caller decodes the line with
//! serde_json, which produces the reply (and the error text) exactly as
//! before. It returns `None` for:
//!
//! - anything that is not valid JSON (serde words the error);
//! - a key with an escape at a level whose keys are matched (serde would
//!   unescape it and might match it to a field);
//! - a known field given twice (serde reports a duplicate field);
//! - nesting deeper than [`MAX_DEPTH`] inside a value (serde's own limit is
//!   higher, so it decides);
//! - shapes serde accepts but the scanner does not bother with (an
//!   envelope given as an array, a `null` body).
//!
//! Its validation matches serde_json's `ignore_value`: strings without raw
//! control characters and with only the escapes `\" \\ \/ \b \f \n \r \t
//! \uXXXX` (any four hex digits), numbers of the JSON grammar, the literals
//! `true`, `false`, `null`, and whitespace `' ' \t \n \r`. UTF-8 is checked
//! once for the whole line before the scanner runs. `tests` below and the
//! `node_lines` fuzz target check the subset property against serde_json.
//!
//! Like serde_json's `RawValue`, it accepts a lone surrogate escape (valid
//! JSON, but not Unicode), and notes that it saw one
//! ([`Scanner::saw_lone_surrogate`]): the node refuses such a request, the
//! fold reads such stored text. Only a string with a `\u` escape is checked
//! (out of line), so the common string costs nothing more.

use crate::escapes;

/// Deepest nesting of arrays and objects the scanner follows inside a
/// field's value; deeper values go to serde_json (whose limit is 128).
pub(crate) const MAX_DEPTH: usize = 64;

/// A position in a line of JSON text.
pub(crate) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    /// Whether a string passed so far has an escape of a surrogate (lone
    /// or paired: told apart only then, out of the scanning loop).
    surrogate_escape: bool,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Scanner<'a> {
        Scanner {
            text,
            pos: 0,
            surrogate_escape: false,
        }
    }

    /// Whether the text holds a lone surrogate (`"\ud800"` without a
    /// low-surrogate escape after it, or a lone `"\udc00"`): valid JSON, but
    /// not Unicode. The scanner accepts it, as serde_json's `RawValue` does;
    /// the node refuses the request (see `surrogates.rs`). Asked once the
    /// scan is done: the text is searched only if a string passed had an
    /// escape in `\uD800`..`\uDFFF`.
    pub(crate) fn saw_lone_surrogate(&self) -> bool {
        self.surrogate_escape && !escapes::lone_surrogates(self.text).is_empty()
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    pub(crate) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    /// Only whitespace is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.pos == self.text.len()
    }

    /// Whether the next value is an object (after whitespace).
    pub(crate) fn at_object(&mut self) -> bool {
        self.skip_ws();
        self.peek() == Some(b'{')
    }

    /// A string at the current position: its content (without quotes,
    /// escapes left as written) and whether it has escapes.
    fn string(&mut self) -> Option<(&'a str, bool)> {
        let b = self.bytes();
        debug_assert_eq!(b.get(self.pos), Some(&b'"'));
        let start = self.pos + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            i = crate::swar::find_string_special(b, i)?;
            match *b.get(i)? {
                b'"' => {
                    self.pos = i + 1;
                    // `start` and `i` sit next to ASCII quotes: char
                    // boundaries, so `get` cannot fail here.
                    return Some((self.text.get(start..i)?, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match *b.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                        b'u' => {
                            let hex = b.get(i + 2..i + 6)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            // `\uD800` to `\uDFFF`: only noted here, so
                            // that the scanning loop stays as tight as it
                            // was without the check.
                            if matches!(hex[0], b'd' | b'D') && hex[1] | 0x20 >= b'8' {
                                self.surrogate_escape = true;
                            }
                            i += 6;
                        }
                        _ => return None,
                    }
                }
                // A raw control character.
                _ => return None,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number of the JSON grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)?
    /// ([eE] [+-]? [0-9]+)?`. A leading zero followed by a digit is left for
    /// the caller to reject (the digit cannot follow a value).
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos + word.len();
        (self.bytes().get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// Skips one value (after whitespace), validating it; returns its text.
    pub(crate) fn value(&mut self) -> Option<&'a str> {
        self.skip_ws();
        let start = self.pos;
        self.skip_value(0)?;
        self.text.get(start..self.pos)
    }

    /// Skips one value (after whitespace) of text known to be valid JSON,
    /// at any depth, without recursion; returns its text. For stored text
    /// (the fold), whose nesting no limit bounds: only strings are checked.
    pub(crate) fn stored_value(&mut self) -> Option<&'a str> {
        self.skip_ws();
        let start = self.pos;
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => drop(self.string()?),
                b'{' | b'[' => {
                    depth += 1;
                    self.pos += 1;
                    continue;
                }
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    self.pos += 1;
                }
                // Inside a container: separators, whitespace, scalars.
                _ if depth > 0 => {
                    self.pos += 1;
                    continue;
                }
                // A scalar at the top: up to what ends it.
                _ => {
                    while self.peek().is_some_and(|c| {
                        !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                    }) {
                        self.pos += 1;
                    }
                }
            }
            if depth == 0 {
                return self.text.get(start..self.pos).filter(|v| !v.is_empty());
            }
        }
    }

    fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.object(|s, _, _| {
                    s.skip_ws();
                    s.skip_value(depth + 1)
                })
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.array(|s| {
                    s.skip_ws();
                    s.skip_value(depth + 1)
                })
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// Walks an object at the current position (after whitespace). For
    /// each member, `member` gets the scanner (before the value's
    /// whitespace), the key as written and whether the key has escapes; it
    /// must consume the value.
    pub(crate) fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &'a str, bool) -> Option<()>,
    ) -> Option<()> {
        self.skip_ws();
        self.eat(b'{')?;
        self.skip_ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let (key, escaped) = self.string()?;
            self.skip_ws();
            self.eat(b':')?;
            member(self, key, escaped)?;
            self.skip_ws();
            match self.peek()? {
                b',' => {
                    self.pos += 1;
                    self.skip_ws();
                }
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Walks an array at the current position (after whitespace); `element`
    /// gets the scanner before each element's whitespace and must consume
    /// the element.
    pub(crate) fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.skip_ws();
        self.eat(b'[')?;
        self.skip_ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            element(self)?;
            self.skip_ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// Walks an object whose known keys are stored by `set`, which gets each
/// key and its value's text and returns the key's bit (0 for an unknown
/// key, which is only validated). Refuses (`None`: let serde_json decide)
/// an escaped key and a known key given twice.
pub(crate) fn members<'a>(
    scanner: &mut Scanner<'a>,
    mut set: impl FnMut(&str, &'a str) -> u32,
) -> Option<()> {
    fields(scanner, |key, s| Some(set(key, s.value()?)))
}

/// [`members`] for a caller that reads each value itself (to descend into
/// one): `field` gets the key and the scanner before the value, must
/// consume the value, and returns the key's bit.
pub(crate) fn fields<'a>(
    scanner: &mut Scanner<'a>,
    mut field: impl FnMut(&str, &mut Scanner<'a>) -> Option<u32>,
) -> Option<()> {
    let mut seen = 0u32;
    scanner.object(|s, key, escaped| {
        if escaped {
            return None;
        }
        let bit = field(key, s)?;
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        Some(())
    })
}

/// The elements of an array given as text, each as raw text.
pub(crate) fn elements(text: &str) -> Option<Vec<&str>> {
    let mut scanner = Scanner::new(text);
    let mut items = Vec::new();
    scanner.array(|s| {
        items.push(s.value()?);
        Some(())
    })?;
    scanner.at_end().then_some(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    /// The scanner's verdict on a whole text as one value.
    fn scan(text: &str) -> Option<&str> {
        let mut s = Scanner::new(text);
        let v = s.value()?;
        s.at_end().then_some(v)
    }

    /// serde_json's verdict, with the raw text it borrows.
    fn serde(text: &str) -> Option<&str> {
        serde_json::from_str::<&RawValue>(text)
            .ok()
            .map(|r| r.get())
    }

    #[test]
    fn accepts_exactly_what_serde_accepts_on_a_corpus() {
        let corpus = [
            "0",
            "-0",
            "01",
            "-",
            "1.",
            "1.5",
            "1e",
            "1e+",
            "1E-7",
            "-12.5e10",
            ".5",
            "+1",
            "true",
            "tru",
            "nul",
            "null",
            "falsey",
            "\"\"",
            "\"a\\u00e9\"",
            "\"\\ud800\"",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"tab\there\"",
            "\"\u{7f}\"",
            "\"é√\"",
            "[]",
            "[1,]",
            "[,1]",
            "[1 2]",
            " [ 1 , [ ] , { } ] ",
            "{}",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{\"a\":1 \"b\":2}",
            "{1:2}",
            "{\"a\":[{\"b\":null}]}",
            "{\"a\\n\":1}",
            "\"unterminated",
            "[",
            "{",
            "1 2",
            "",
            "  ",
        ];
        for text in corpus {
            let ours = scan(text);
            if let Some(v) = ours {
                assert_eq!(Some(v), serde(text), "{text:?}");
            } else {
                // Refusing is always allowed; for these it must be because
                // serde refuses too.
                assert_eq!(serde(text), None, "scanner refused valid {text:?}");
            }
        }
    }

    #[test]
    fn deep_nesting_is_left_to_serde() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(scan(&deep), None);
        assert!(serde(&deep).is_some());
        let fine = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(scan(&fine), Some(&*fine));
    }

    #[test]
    fn members_refuse_duplicates_and_escaped_keys() {
        let get = |t: &'static str| {
            let mut found = [None; 2];
            let bit = |k: &str| ["a", "b"].iter().position(|&n| n == k);
            members(&mut Scanner::new(t), |k, v| match bit(k) {
                Some(i) => {
                    found[i] = Some(v);
                    1 << i
                }
                None => 0,
            })
            .map(|()| found)
        };
        assert_eq!(
            get(r#"{"a":1,"x":[true],"b":"s"}"#),
            Some([Some("1"), Some("\"s\"")])
        );
        assert_eq!(get(r#"{"b":null}"#), Some([None, Some("null")]));
        assert_eq!(get(r#"{"a":1,"a":2}"#), None);
        assert_eq!(get(r#"{"\u0061":1}"#), None);
        assert_eq!(get(r#"{"x":1,"x":2}"#), Some([None, None]));
    }

    #[test]
    fn lone_surrogates_are_accepted_and_noted() {
        for (text, lone) in [
            (r#"["\ud800"]"#, true),
            (r#"{"\uDC00":1}"#, true),
            (r#"["\ud800\u0041"]"#, true),
            (r#"["\ud83d\ude00","\uD83D\uDE00"]"#, false),
            (r#"["\u00e9\u0d80\\ud800"]"#, false),
        ] {
            let mut s = Scanner::new(text);
            assert_eq!(s.value(), Some(text), "{text}");
            assert_eq!(s.saw_lone_surrogate(), lone, "{text}");
            assert_eq!(serde(text), Some(text), "{text}");
        }
    }

    #[test]
    fn stored_values_nest_without_limit() {
        let deep = "[".repeat(10 * MAX_DEPTH) + r#"{"a":"]}\""}"# + &"]".repeat(10 * MAX_DEPTH);
        for text in [&deep[..], "12.5e3", "true", r#""s\"""#, "{}"] {
            let line = format!(" {text} ,9");
            let mut s = Scanner::new(&line);
            assert_eq!(s.stored_value(), Some(text), "{text}");
        }
        assert_eq!(Scanner::new("]").stored_value(), None);
        assert_eq!(Scanner::new(",").stored_value(), None);
    }

    #[test]
    fn elements_split_arrays() {
        assert_eq!(
            elements(r#"[ {"a":1} , 2,"x" ]"#),
            Some(vec![r#"{"a":1}"#, "2", "\"x\""])
        );
        assert_eq!(elements("[]"), Some(vec![]));
        assert_eq!(elements("[1,]"), None);
        assert_eq!(elements("{}"), None);
    }
}

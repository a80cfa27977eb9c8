//! A validating single-pass JSON scanner: checks that a text is JSON and
//! hands out the members (or elements) of its top-level object (or array)
//! as raw spans of the input, without building anything.
//!
//! Validity agrees exactly with
//! `serde_json::from_str::<&serde_json::value::RawValue>`, which is RFC 8259
//! with one liberty: `\u` escapes are not checked for surrogate pairing, so
//! a lone `"\ud800"` is accepted (serde's `ignore_escape` only requires four
//! hex digits; pairing is checked later, when a string is decoded).
//!
//! Speed comes from doing very little per byte: string contents are skipped
//! eight bytes at a time (a SWAR test for `"`, `\` and control characters),
//! whitespace and structure are single byte compares, and nesting is tracked
//! in a bit stack (one bit per open bracket) that lives in a `u64` until the
//! depth passes 64. Nothing is recursive, so any depth is fine, and nothing
//! allocates unless the nesting is deeper than 64.

use std::fmt;

/// Why a text is not valid JSON (byte offset and what was expected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    /// Byte offset of the offending byte (the text's length at end of input).
    pub offset: usize,
    /// What would have been valid there.
    pub expected: &'static str,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {} at byte {}", self.expected, self.offset)
    }
}

impl std::error::Error for ScanError {}

/// A member key: the text between its quotes, as written (escapes not decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'a> {
    /// The key's text between the quotes, escapes as written.
    pub raw: &'a str,
    /// Whether `raw` contains a backslash (an escape to decode).
    pub escaped: bool,
}

/// Validates that `text` is exactly one JSON value (RFC 8259), with optional
/// surrounding whitespace (space, \t, \n, \r). Returns the value's span (trimmed).
pub fn validate(text: &str) -> Result<&str, ScanError> {
    let b = text.as_bytes();
    let start = ws(b, 0);
    let end = value(b, start)?;
    end_of_input(b, end)?;
    Ok(&text[start..end])
}

/// Validates that `text` is one JSON object (surrounding whitespace allowed) and calls
/// `member(key, value)` for each top-level member in order; `value` is the member's
/// value text exactly, without surrounding whitespace, and is itself valid JSON.
/// If `member` returns Err, scanning stops and that error is returned.
///
/// The scan is a single pass: `member` sees each member as soon as it has
/// been scanned, so if the text turns out to be invalid further on, the
/// members before that point have already been passed to `member` (and the
/// result is the [`ScanError`]). Duplicate keys are passed on as they come.
pub fn scan_object<'a, E: From<ScanError>>(
    text: &'a str,
    mut member: impl FnMut(Key<'a>, &'a str) -> Result<(), E>,
) -> Result<(), E> {
    let b = text.as_bytes();
    let mut i = ws(b, 0);
    if at(b, i) != b'{' {
        return Err(fail(i, "'{'").into());
    }
    i = ws(b, i + 1);
    if at(b, i) == b'}' {
        i += 1;
    } else {
        loop {
            if at(b, i) != b'"' {
                return Err(fail(i, "'\"' (a key)").into());
            }
            let (key_end, escaped) = string(b, i + 1)?;
            let key = Key {
                raw: &text[i + 1..key_end - 1],
                escaped,
            };
            i = ws(b, key_end);
            if at(b, i) != b':' {
                return Err(fail(i, "':'").into());
            }
            let start = ws(b, i + 1);
            let end = value(b, start)?;
            member(key, &text[start..end])?;
            i = ws(b, end);
            match at(b, i) {
                b',' => i = ws(b, i + 1),
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return Err(fail(i, "',' or '}'").into()),
            }
        }
    }
    end_of_input(b, i)?;
    Ok(())
}

/// Same for a JSON array: calls `element(value)` for each top-level element.
///
/// As with [`scan_object`], elements before an invalid part of the text
/// have already been passed to `element` when the error is returned.
pub fn scan_array<'a, E: From<ScanError>>(
    text: &'a str,
    mut element: impl FnMut(&'a str) -> Result<(), E>,
) -> Result<(), E> {
    let b = text.as_bytes();
    let mut i = ws(b, 0);
    if at(b, i) != b'[' {
        return Err(fail(i, "'['").into());
    }
    i = ws(b, i + 1);
    if at(b, i) == b']' {
        i += 1;
    } else {
        loop {
            let end = value(b, i)?;
            element(&text[i..end])?;
            i = ws(b, end);
            match at(b, i) {
                b',' => i = ws(b, i + 1),
                b']' => {
                    i += 1;
                    break;
                }
                _ => return Err(fail(i, "',' or ']'").into()),
            }
        }
    }
    end_of_input(b, i)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The scanner. Every function takes the text's bytes and an index `i` with
// `i <= b.len()`, and returns the index just past what it scanned, so the
// invariant holds throughout. `at` reads past the end as 0, a byte that is
// invalid wherever a token is expected, so end of input needs no branch of
// its own (only the error message tells the two apart).

type Scan<T> = Result<T, ScanError>;

#[cold]
#[inline(never)]
fn fail(offset: usize, expected: &'static str) -> ScanError {
    ScanError { offset, expected }
}

/// The byte at `i`, or 0 at the end.
#[inline(always)]
fn at(b: &[u8], i: usize) -> u8 {
    match b.get(i) {
        Some(&c) => c,
        None => 0,
    }
}

/// Skips whitespace from `i`. Compact JSON has none, so the first test
/// (every whitespace byte is <= b' ') usually settles it.
#[inline(always)]
fn ws(b: &[u8], i: usize) -> usize {
    if at(b, i) > b' ' { i } else { skip_ws(b, i) }
}

#[inline(never)]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            break;
        }
        i += 1;
    }
    i
}

#[inline(always)]
fn end_of_input(b: &[u8], i: usize) -> Scan<()> {
    let i = ws(b, i);
    if i == b.len() {
        Ok(())
    } else {
        Err(fail(i, "end of input"))
    }
}

/// One value starting exactly at `i` (whitespace already skipped).
#[inline(always)]
fn value(b: &[u8], i: usize) -> Scan<usize> {
    match at(b, i) {
        b'"' => Ok(string(b, i + 1)?.0),
        c @ (b'-' | b'0'..=b'9') => number(b, i, c),
        b'{' | b'[' => nested(b, i),
        b't' => literal(b, i, b"true"),
        b'f' => literal(b, i, b"false"),
        b'n' => literal(b, i, b"null"),
        _ => Err(fail(i, "a value")),
    }
}

const ONES: u64 = u64::MAX / 255;
const HIGHS: u64 = ONES << 7;

/// Bytes a string scan must stop at: `"`, `\` and the control characters.
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// High bit set in each byte of `w` (little-endian) that is `"`, `\` or
/// below 0x20, and possibly in bytes above such a byte (a borrow only ever
/// starts at a true hit and runs upwards), so the lowest mark is exact,
/// which is all the caller uses. Bytes >= 0x80 are never marked (`!w`), and
/// for the others each subtraction has its high bit set exactly when the
/// byte is the one looked for.
#[inline(always)]
fn special_mask(w: u64) -> u64 {
    let quote = (w ^ (ONES * b'"' as u64)).wrapping_sub(ONES);
    let backslash = (w ^ (ONES * b'\\' as u64)).wrapping_sub(ONES);
    let control = w.wrapping_sub(ONES * 0x20);
    (quote | backslash | control) & !w & HIGHS
}

/// A string's contents from `i` (just past the opening quote). Returns the
/// index just past the closing quote and whether there was an escape.
#[inline(always)]
fn string(b: &[u8], mut i: usize) -> Scan<(usize, bool)> {
    let mut escaped = false;
    loop {
        let c;
        (i, c) = special(b, i);
        match c {
            b'"' => return Ok((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                i = escape(b, i + 1)?;
            }
            _ => return Err(string_error(b, i)),
        }
    }
}

/// The index and value of the first special byte from `i` (0 at the end):
/// eight bytes at a time, then one by one for the last few.
#[inline(always)]
fn special(b: &[u8], mut i: usize) -> (usize, u8) {
    // `i < end` means eight bytes from `i` are there.
    let end = b.len().saturating_sub(7);
    while i < end {
        let w = u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let m = special_mask(w);
        if m != 0 {
            let bit = m.trailing_zeros();
            return (i + (bit / 8) as usize, (w >> (bit & !7)) as u8);
        }
        i += 8;
    }
    let i = special_tail(b, i);
    (i, at(b, i))
}

/// The first special byte from `i` in the last few (< 8) bytes, or the end.
#[inline(never)]
fn special_tail(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if SPECIAL[c as usize] {
            break;
        }
        i += 1;
    }
    i
}

#[cold]
#[inline(never)]
fn string_error(b: &[u8], i: usize) -> ScanError {
    if i == b.len() {
        fail(i, "'\"' (end of string)")
    } else {
        fail(i, "an escape, not a control character")
    }
}

/// An escape from `i` (just past the backslash).
#[inline(never)]
fn escape(b: &[u8], i: usize) -> Scan<usize> {
    match at(b, i) {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(i + 1),
        b'u' => {
            for j in i + 1..i + 5 {
                if !at(b, j).is_ascii_hexdigit() {
                    return Err(fail(j, "a hex digit"));
                }
            }
            Ok(i + 5)
        }
        _ => Err(fail(i, "an escape character")),
    }
}

/// A number from `i` (at its '-' or first digit, `c`).
#[inline(always)]
fn number(b: &[u8], mut i: usize, mut c: u8) -> Scan<usize> {
    if c == b'-' {
        i += 1;
        c = at(b, i);
    }
    match c {
        // No leading zeros: a digit after this '0' is left to the caller,
        // where nothing accepts it.
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(b, i + 1),
        _ => return Err(fail(i, "a digit")),
    }
    match at(b, i) {
        b'.' | b'e' | b'E' => fraction_exponent(b, i),
        _ => Ok(i),
    }
}

/// The rest of a number from `i` (at its '.', 'e' or 'E').
#[inline(never)]
fn fraction_exponent(b: &[u8], mut i: usize) -> Scan<usize> {
    if at(b, i) == b'.' {
        if !at(b, i + 1).is_ascii_digit() {
            return Err(fail(i + 1, "a digit"));
        }
        i = digits(b, i + 2);
    }
    if matches!(at(b, i), b'e' | b'E') {
        i += 1;
        if matches!(at(b, i), b'+' | b'-') {
            i += 1;
        }
        if !at(b, i).is_ascii_digit() {
            return Err(fail(i, "a digit"));
        }
        i = digits(b, i + 1);
    }
    Ok(i)
}

#[inline(always)]
fn digits(b: &[u8], mut i: usize) -> usize {
    while at(b, i).is_ascii_digit() {
        i += 1;
    }
    i
}

/// `true`, `false` or `null` at `i`.
#[inline(always)]
fn literal(b: &[u8], i: usize, word: &'static [u8]) -> Scan<usize> {
    let end = i + word.len();
    if b.get(i..end) == Some(word) {
        Ok(end)
    } else {
        Err(literal_error(b, i, word))
    }
}

#[cold]
#[inline(never)]
fn literal_error(b: &[u8], i: usize, word: &'static [u8]) -> ScanError {
    let expected = match word {
        b"true" => "'true'",
        b"false" => "'false'",
        _ => "'null'",
    };
    let bad = (0..word.len()).find(|&k| at(b, i + k) != word[k]);
    fail(i + bad.unwrap_or(0), expected)
}

/// A key and its colon from `i` (whitespace allowed before each); returns
/// the index just past the colon.
#[inline(always)]
fn key(b: &[u8], mut i: usize) -> Scan<usize> {
    if at(b, i) != b'"' {
        i = skip_ws(b, i);
        if at(b, i) != b'"' {
            return Err(fail(i, "'\"' (a key)"));
        }
    }
    i = string(b, i + 1)?.0;
    if at(b, i) != b':' {
        i = skip_ws(b, i);
        if at(b, i) != b':' {
            return Err(fail(i, "':'"));
        }
    }
    Ok(i + 1)
}

/// An object or array from `i` (at its opening bracket), any depth, without
/// recursion: a loop of "a value at `i`" followed by "close what ends here,
/// then find the next value". Whitespace is allowed before every token but
/// only looked for where the expected byte is not there, so compact JSON
/// pays nothing for it.
///
/// The open brackets are a bit stack, one bit each (1: object, 0: array):
/// the innermost 64 in `top`, full words further out in `spill`, which is
/// only touched (and only allocates) past depth 64.
#[inline(never)]
fn nested(b: &[u8], mut i: usize) -> Scan<usize> {
    let mut depth = 0usize;
    let mut top = 0u64;
    let mut spill: Vec<u64> = Vec::new();
    loop {
        let c = at(b, i);
        if c == b'"' {
            i = string(b, i + 1)?.0;
        } else {
            i = match c {
                b'{' | b'[' => {
                    i += 1;
                    // '{' + 2 == '}' and '[' + 2 == ']'.
                    if at(b, i) <= b' ' {
                        i = skip_ws(b, i);
                    }
                    if at(b, i) == c + 2 {
                        i + 1
                    } else {
                        if depth.is_multiple_of(64) && depth != 0 {
                            spill_word(&mut spill, top);
                            top = 0;
                        }
                        depth += 1;
                        let object = c == b'{';
                        top = (top << 1) | object as u64;
                        if object {
                            i = key(b, i)?;
                        }
                        continue;
                    }
                }
                b'-' | b'0'..=b'9' => number(b, i, c)?,
                b't' => literal(b, i, b"true")?,
                b'f' => literal(b, i, b"false")?,
                b'n' => literal(b, i, b"null")?,
                b' ' | b'\t' | b'\n' | b'\r' => {
                    i = skip_ws(b, i);
                    continue;
                }
                _ => return Err(fail(i, "a value")),
            };
        }
        // After a value: close the containers that end here, then move to
        // the next value (past a comma and, in an object, a key).
        while depth != 0 {
            let c = at(b, i);
            let object = top & 1 != 0;
            if c == b',' {
                i += 1;
                if object {
                    i = key(b, i)?;
                }
                break;
            }
            // ']' + 0x20 == '}'.
            if c == b']' + ((object as u8) << 5) {
                i += 1;
                top >>= 1;
                depth -= 1;
                if depth.is_multiple_of(64) && depth != 0 {
                    top = unspill_word(&mut spill);
                }
            } else if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                i = skip_ws(b, i);
            } else {
                return Err(fail(i, if object { "',' or '}'" } else { "',' or ']'" }));
            }
        }
        if depth == 0 {
            return Ok(i);
        }
    }
}

#[cold]
#[inline(never)]
fn spill_word(spill: &mut Vec<u64>, top: u64) {
    spill.push(top);
}

#[cold]
#[inline(never)]
fn unspill_word(spill: &mut Vec<u64>) -> u64 {
    spill.pop().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::value::RawValue;

    fn serde_ok(t: &str) -> bool {
        serde_json::from_str::<&RawValue>(t).is_ok()
    }

    /// `validate` against serde, and the span against serde's.
    fn check(t: &str) -> bool {
        let ours = validate(t);
        let theirs = serde_json::from_str::<&RawValue>(t);
        assert_eq!(
            ours.is_ok(),
            theirs.is_ok(),
            "disagreement on {t:?}: ours {ours:?}, serde {theirs:?}"
        );
        let ok = ours.is_ok();
        if let (Ok(a), Ok(b)) = (ours, theirs) {
            assert_eq!(a, b.get(), "span of {t:?}");
        }
        ok
    }

    fn valid(t: &str) {
        assert!(check(t), "should be valid: {t:?}");
    }

    fn invalid(t: &str) {
        assert!(!check(t), "should be invalid: {t:?}");
    }

    type Members<'a> = Vec<(Key<'a>, &'a str)>;

    fn members(t: &str) -> Result<Members<'_>, ScanError> {
        let mut out = Vec::new();
        scan_object(t, |k, v| {
            out.push((k, v));
            Ok::<(), ScanError>(())
        })?;
        Ok(out)
    }

    fn elements(t: &str) -> Result<Vec<&str>, ScanError> {
        let mut out = Vec::new();
        scan_array(t, |v| {
            out.push(v);
            Ok::<(), ScanError>(())
        })?;
        Ok(out)
    }

    /// A top-level object as serde sees it: (raw key with quotes, raw value)
    /// in order, duplicates kept.
    struct Pairs<'a>(Vec<(&'a str, &'a str)>);

    impl<'de> Deserialize<'de> for Pairs<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Pairs<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs<'de>, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = map.next_entry::<&'de RawValue, &'de RawValue>()? {
                        out.push((k.get(), v.get()));
                    }
                    Ok(Pairs(out))
                }
            }
            d.deserialize_map(V)
        }
    }

    struct Elements<'a>(Vec<&'a str>);

    impl<'de> Deserialize<'de> for Elements<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Elements<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an array")
                }
                fn visit_seq<A: SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Elements<'de>, A::Error> {
                    let mut out = Vec::new();
                    while let Some(v) = seq.next_element::<&'de RawValue>()? {
                        out.push(v.get());
                    }
                    Ok(Elements(out))
                }
            }
            d.deserialize_seq(V)
        }
    }

    /// Everything about `t` against serde: validity and span, the members
    /// if it is an object, the elements if it is an array. Returns validity.
    fn differential(t: &str) -> bool {
        let ok = check(t);

        let ours = members(t);
        let theirs = serde_json::from_str::<Pairs>(t);
        assert_eq!(
            ours.is_ok(),
            theirs.is_ok(),
            "scan_object on {t:?}: {ours:?}"
        );
        if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
            assert_eq!(ours.len(), theirs.0.len(), "member count of {t:?}");
            for ((k, v), (tk, tv)) in ours.iter().zip(&theirs.0) {
                assert_eq!(format!("\"{}\"", k.raw), *tk, "key in {t:?}");
                assert_eq!(k.escaped, k.raw.contains('\\'), "escaped flag in {t:?}");
                assert_eq!(v, tv, "value in {t:?}");
                // Where the key is decodable, it decodes as serde's does.
                let decoded = serde_json::from_str::<String>(&format!("\"{}\"", k.raw));
                let serde_decoded = serde_json::from_str::<String>(tk);
                assert_eq!(decoded.ok(), serde_decoded.ok(), "decoded key in {t:?}");
                assert!(check(v));
            }
        }

        let ours = elements(t);
        let theirs = serde_json::from_str::<Elements>(t);
        assert_eq!(
            ours.is_ok(),
            theirs.is_ok(),
            "scan_array on {t:?}: {ours:?}"
        );
        if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
            assert_eq!(ours, theirs.0, "elements of {t:?}");
        }
        ok
    }

    #[test]
    fn literals() {
        for t in ["true", "false", "null", " true ", "\t\n\r null\r\n"] {
            valid(t);
        }
        for t in [
            "tru",
            "t",
            "nul",
            "fals",
            "True",
            "NULL",
            "truee",
            "nulll",
            "true false",
            "tRue",
            "n",
            "f",
        ] {
            invalid(t);
        }
    }

    #[test]
    fn numbers() {
        for t in [
            "0",
            "-0",
            "1",
            "-1",
            "123",
            "1e5",
            "1E5",
            "1E+5",
            "1e-5",
            "-0.0",
            "0.5",
            "1.25e+10",
            "-1.5E-300",
            "1e999",
            "123456789012345678901234567890",
            "-123456789012345678901234567890.123456789e-123456789",
            "0e0",
            "0E-0",
            " 7 ",
        ] {
            valid(t);
        }
        for t in [
            "01",
            "-01",
            "00",
            "1.",
            "1.e5",
            ".5",
            "-",
            "-.5",
            "+1",
            "1e",
            "1e+",
            "1E-",
            "1e+-5",
            "0x10",
            "1.5.",
            "--1",
            "- 1",
            "1 2",
            "Infinity",
            "NaN",
            "-Infinity",
            "1_000",
            "0.e1",
            "1ee5",
            "1e5.5",
        ] {
            invalid(t);
        }
    }

    #[test]
    fn strings() {
        for t in [
            r#""""#,
            r#""abc""#,
            r#""a\"b""#,
            r#""\\""#,
            r#""\/""#,
            r#""\b\f\n\r\t""#,
            r#""\u0041\u00e9\uFFFF""#,
            r#""\ud83d\ude00""#,
            "\"héllo wörld 😀\"",
            "\"\u{7f}\"",
            "\"a long string that runs well past eight bytes, with \\n an escape\"",
        ] {
            valid(t);
        }
        // Lone and misordered surrogate escapes: serde's RawValue only checks
        // for four hex digits, so these are valid for it, and so for us.
        for t in [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\udc00\ud800""#,
            r#""\ud800x""#,
            r#""\ud800\n""#,
            r#"{"\udfff":"\ud800"}"#,
        ] {
            valid(t);
        }
        for t in [
            "\"",
            "\"abc",
            r#""abc\""#,
            r#""\x""#,
            r#""\a""#,
            r#""\'""#,
            r#""\u""#,
            r#""\u12""#,
            r#""\u12G4""#,
            r#""\u004""#,
            r#""\U0041""#,
            "\"\\",
            "\"\\u00",
            "\"tab\there\"",
            "\"nl\nhere\"",
            "\"\u{0}\"",
            "\"\u{1f}\"",
            "\"a long string that runs well past eight bytes\u{1}, with a control\"",
            "'single'",
            "\"abc\"\"",
        ] {
            invalid(t);
        }
    }

    #[test]
    fn structure() {
        for t in [
            "{}",
            "[]",
            " { } ",
            "[ ]",
            "[1,2,3]",
            "[ 1 , 2 , 3 ]",
            r#"{"a":1}"#,
            r#"{ "a" : 1 , "b" : [ ] }"#,
            r#"{"a":{"b":{"c":[[],{},[{}]]}}}"#,
            r#"[{"a":[1,{"b":null}]},true,"x",-0.5e3]"#,
            r#"{"a":1,"a":2}"#,
            "[[[[[[]]]]]]",
        ] {
            valid(t);
        }
        for t in [
            "",
            " ",
            "\n\t\r ",
            "{",
            "}",
            "[",
            "]",
            "[1,]",
            "[,1]",
            "[,]",
            "[1 2]",
            "[1,,2]",
            r#"{"a":1,}"#,
            r#"{,"a":1}"#,
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a" 1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{a:1}"#,
            r#"{1:1}"#,
            r#"{"a":1]"#,
            r#"[1}"#,
            r#"{"a":[1}]"#,
            "[]]",
            "{}}",
            "[][]",
            "{} {}",
            "[1] x",
            "[\u{a0}1]",
            "[\u{c}1]",
            "[\u{b}1]",
            "\u{feff}[]",
            "[1,\u{0}2]",
            "[1]\u{0}",
            r#"{"a":1:2}"#,
            r#"{"a"::1}"#,
        ] {
            invalid(t);
        }
    }

    #[test]
    fn member_spans() {
        let t = r#" {"a" : 1 , "b":{"c":[1,2]} ,"\u0041":"x\"y"} "#;
        assert_eq!(
            members(t).unwrap(),
            vec![
                (
                    Key {
                        raw: "a",
                        escaped: false
                    },
                    "1"
                ),
                (
                    Key {
                        raw: "b",
                        escaped: false
                    },
                    r#"{"c":[1,2]}"#
                ),
                (
                    Key {
                        raw: r"\u0041",
                        escaped: true
                    },
                    r#""x\"y""#
                ),
            ]
        );
        differential(t);
        assert_eq!(members("{}").unwrap(), vec![]);
        assert_eq!(
            members(r#"{"":"","k":"v","k":-0}"#).unwrap(),
            vec![
                (
                    Key {
                        raw: "",
                        escaped: false
                    },
                    r#""""#
                ),
                (
                    Key {
                        raw: "k",
                        escaped: false
                    },
                    r#""v""#
                ),
                (
                    Key {
                        raw: "k",
                        escaped: false
                    },
                    "-0"
                ),
            ]
        );
    }

    #[test]
    fn element_spans() {
        let t = " [ 1 ,\"a\",[ ] , {\"x\" : [2]},null , -1.5e3 ] ";
        assert_eq!(
            elements(t).unwrap(),
            vec!["1", "\"a\"", "[ ]", "{\"x\" : [2]}", "null", "-1.5e3"]
        );
        differential(t);
        assert_eq!(elements("[]").unwrap(), Vec::<&str>::new());
    }

    #[test]
    fn wrong_kind_and_errors() {
        assert_eq!(
            members("[]").unwrap_err(),
            ScanError {
                offset: 0,
                expected: "'{'"
            }
        );
        assert_eq!(
            elements(" {}").unwrap_err(),
            ScanError {
                offset: 1,
                expected: "'['"
            }
        );
        assert!(members("").is_err());
        assert!(elements("1").is_err());
        assert!(members(r#"{"a":1} x"#).is_err());
        assert!(members(r#"{"a":1,}"#).is_err());

        let e = validate("[1,]").unwrap_err();
        assert_eq!(
            e,
            ScanError {
                offset: 3,
                expected: "a value"
            }
        );
        assert_eq!(e.to_string(), "expected a value at byte 3");
        assert_eq!(validate("").unwrap_err().offset, 0);
        assert_eq!(validate("[1] 2").unwrap_err().offset, 4);
        assert_eq!(validate("\"ab").unwrap_err().offset, 3);
        assert_eq!(validate("\"a\tb\"").unwrap_err().offset, 2);
        assert_eq!(validate("\"\\u12x4\"").unwrap_err().offset, 5);
        assert_eq!(validate("trxe").unwrap_err().offset, 2);
        assert_eq!(validate("1.x").unwrap_err().offset, 2);
        assert_eq!(validate(r#"{"a" 1}"#).unwrap_err().offset, 5);
        assert_eq!(validate("[1 2]").unwrap_err().offset, 3);
    }

    #[test]
    fn callback_error_stops_the_scan() {
        #[derive(Debug, PartialEq)]
        enum MyError {
            Scan(ScanError),
            Stop(String),
        }
        impl From<ScanError> for MyError {
            fn from(e: ScanError) -> Self {
                MyError::Scan(e)
            }
        }
        let mut seen = Vec::new();
        let r = scan_object(r#"{"a":1,"b":2,"c":3}"#, |k, v| {
            seen.push(k.raw);
            if k.raw == "b" {
                return Err(MyError::Stop(v.to_string()));
            }
            Ok(())
        });
        assert_eq!(r, Err(MyError::Stop("2".into())));
        assert_eq!(seen, ["a", "b"]);

        let r = scan_object(r#"{"a":1,"b":}"#, |_, _| Ok(()));
        assert_eq!(
            r,
            Err(MyError::Scan(ScanError {
                offset: 11,
                expected: "a value"
            }))
        );

        let mut n = 0;
        let r = scan_array("[1,2,3]", |_| {
            n += 1;
            if n == 2 {
                Err(MyError::Stop("two".into()))
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err(MyError::Stop("two".into())));
    }

    #[test]
    fn swar_boundaries() {
        // Specials at every offset relative to the 8-byte chunks, and
        // multibyte characters straddling chunk ends.
        for len in 0..40 {
            for pos in 0..len {
                for (special, ok) in [
                    ("\\n", true),
                    ("\\u00e9", true),
                    ("\u{1}", false),
                    ("\\q", false),
                ] {
                    let mut s = String::from("\"");
                    for k in 0..len {
                        if k == pos {
                            s.push_str(special);
                        } else {
                            s.push(if k % 3 == 0 { 'é' } else { 'x' });
                        }
                    }
                    s.push('"');
                    assert_eq!(check(&s), ok, "{s:?}");
                    let obj = format!("{{{s}:{s}}}");
                    assert_eq!(differential(&obj), ok, "{obj:?}");
                    let unterminated = &s[..s.len() - 1];
                    invalid(unterminated);
                }
            }
        }
    }

    #[test]
    fn deep_nesting() {
        const N: usize = 1_000_000;
        let deep = format!("{}{}", "[".repeat(N), "]".repeat(N));
        assert_eq!(validate(&deep).unwrap().len(), 2 * N);
        assert!(serde_ok(&deep), "serde's RawValue accepts any depth too");
        assert_eq!(elements(&deep).unwrap().len(), 1);

        let objects = format!("{}1{}", r#"{"a":"#.repeat(N), "}".repeat(N));
        valid(&objects);
        assert_eq!(members(&objects).unwrap().len(), 1);

        let mixed: String = (0..N)
            .map(|k| if k % 3 == 0 { r#"{"k":"# } else { "[" })
            .collect();
        let closing: String = (0..N)
            .rev()
            .map(|k| if k % 3 == 0 { "}" } else { "]" })
            .collect();
        valid(&format!("{mixed}null{closing}"));
        invalid(&format!("{mixed}null{}", &closing[1..]));
        invalid(&format!("{mixed}null{closing}]"));
        invalid(&format!("{mixed}null"));
        // One bracket of the wrong kind, deep inside (below a 64-bit word).
        let mut wrong = closing.clone().into_bytes();
        let k = N / 2 + 7;
        wrong[k] = if wrong[k] == b'}' { b']' } else { b'}' };
        invalid(&format!("{mixed}null{}", String::from_utf8(wrong).unwrap()));

        // Unbalanced plain brackets.
        invalid(&format!("{}{}", "[".repeat(N), "]".repeat(N - 1)));
        invalid(&format!("{}{}", "[".repeat(N - 1), "]".repeat(N)));
        invalid(&"[".repeat(N));
        invalid(&format!("{}1,{}", "[".repeat(N), "]".repeat(N)));
        // Depths around the bit stack's word size.
        for n in 60..200 {
            valid(&format!("{}{}", "[".repeat(n), "]".repeat(n)));
            invalid(&format!("{}{}", "[".repeat(n), "]".repeat(n - 1)));
            let m: String = (0..n)
                .map(|k| if k % 2 == 0 { r#"{"":"# } else { "[" })
                .collect();
            let c: String = (0..n)
                .rev()
                .map(|k| if k % 2 == 0 { "}" } else { "]" })
                .collect();
            valid(&format!("{m}0{c}"));
            invalid(&format!("{m}0{}", c.replacen('}', "]", 1)));
        }
    }

    /// splitmix64, and whether the generators may deliberately go wrong.
    struct Rng {
        state: u64,
        noise: bool,
    }

    impl Rng {
        fn next(&mut self) -> u64 {
            self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }

        /// A deliberate mistake, with this chance, in noisy texts.
        fn oops(&mut self, percent: usize) -> bool {
            self.noise && self.chance(percent)
        }

        fn pick<'t>(&mut self, items: &[&'t str]) -> &'t str {
            items[self.below(items.len())]
        }
    }

    /// Mostly valid whitespace, rarely something that only looks like it.
    fn ws(r: &mut Rng, out: &mut String) {
        if r.chance(70) {
            return;
        }
        for _ in 0..r.below(3) + 1 {
            out.push_str(r.pick(&[" ", " ", "\t", "\n", "\r", "  ", "\r\n"]));
        }
        if r.oops(2) {
            out.push_str(r.pick(&["\u{c}", "\u{b}", "\u{a0}", "\u{0}", "\u{2028}"]));
        }
    }

    fn gen_string(r: &mut Rng, out: &mut String) {
        out.push('"');
        let n = match r.below(4) {
            0 => 0,
            1 => r.below(4),
            2 => r.below(12),
            _ => r.below(40),
        };
        for _ in 0..n {
            if r.chance(85) {
                out.push_str(r.pick(&[
                    "a", "b", "k", "x", "Z", "0", " ", "é", "ü", "€", "😀", "'", "/", "{", "}",
                    "[", "]", ":", ",", "\u{7f}", "\u{80}", "\u{7ff}", "\u{fffd}",
                ]));
            } else if !r.oops(5) {
                out.push_str(r.pick(&[
                    r"\n",
                    r"\t",
                    r"\r",
                    r"\b",
                    r"\f",
                    r"\/",
                    r"\\",
                    r#"\""#,
                    r"\u0041",
                    r"\u00E9",
                    r"\uffff",
                    r"\ud800",
                    r"\udc00",
                    r"\ud83d\ude00",
                    r"\ud83d",
                    r"\u0000",
                    r"\u001f",
                    r"\uD834\uDD1E",
                ]));
            } else {
                out.push_str(r.pick(&[
                    r"\x", r"\u12", r"\u12G4", r"\U0041", r"\'", "\t", "\n", "\u{1}", "\u{0}",
                    r"\", r"\u", r"\ ", "\"",
                ]));
            }
        }
        out.push('"');
    }

    fn gen_number(r: &mut Rng, out: &mut String) {
        let sloppy = r.oops(8);
        if r.chance(30) {
            out.push('-');
        }
        if sloppy && r.chance(30) {
            out.push_str(r.pick(&["+", "", "-", ".", "0", "00"]));
        }
        match r.below(4) {
            0 => out.push('0'),
            1 => out.push(char::from(b'1' + r.below(9) as u8)),
            2 => out.push_str(&r.next().to_string()),
            _ => {
                let digits: String = (0..r.below(60) + 1)
                    .map(|_| char::from(b'0' + r.below(10) as u8))
                    .collect();
                out.push_str(if digits.starts_with('0') && !sloppy {
                    "7"
                } else {
                    ""
                });
                out.push_str(&digits);
            }
        }
        if r.chance(30) {
            out.push('.');
            if !sloppy || r.chance(50) {
                out.push_str(&(r.below(100_000)).to_string());
            }
        }
        if r.chance(25) {
            out.push_str(r.pick(&["e", "E"]));
            if r.chance(50) {
                out.push_str(r.pick(&["+", "-"]));
            }
            if !sloppy || r.chance(50) {
                out.push_str(&(r.below(1000)).to_string());
            }
        }
        if sloppy && r.chance(30) {
            out.push_str(r.pick(&[".", "e", "E", "x", "0", ".5", "e5"]));
        }
    }

    fn gen_value(r: &mut Rng, depth: usize, out: &mut String) {
        let kind = if depth >= 6 {
            2 + r.below(6)
        } else if depth == 0 && r.chance(60) {
            r.below(2)
        } else {
            r.below(8)
        };
        match kind {
            0 | 1 => {
                let object = kind == 0;
                out.push(if object { '{' } else { '[' });
                ws(r, out);
                let n = if r.chance(20) { 0 } else { r.below(5) + 1 };
                for k in 0..n {
                    if k > 0 {
                        ws(r, out);
                        out.push(',');
                        ws(r, out);
                    }
                    if object {
                        if r.oops(3) {
                            out.push_str(r.pick(&["a", "1", "null", "{}", "'a'"]));
                        } else {
                            gen_string(r, out);
                        }
                        ws(r, out);
                        if !r.oops(2) {
                            out.push(':');
                        }
                        ws(r, out);
                    }
                    gen_value(r, depth + 1, out);
                }
                ws(r, out);
                if r.oops(2) {
                    out.push(',');
                }
                out.push(if object ^ r.oops(2) { '}' } else { ']' });
            }
            2 | 3 => gen_string(r, out),
            4 | 5 => gen_number(r, out),
            _ => {
                let words = ["true", "false", "null"];
                let bad = ["tru", "nul", "fals", "True", "nulll", "n", "f"];
                out.push_str(if r.oops(3) {
                    r.pick(&bad)
                } else {
                    r.pick(&words)
                });
            }
        }
    }

    /// Random JSON-ish text: a generated value, or a token soup, then maybe
    /// mutated (char-wise, the input being a &str).
    fn gen_text(r: &mut Rng) -> String {
        let mut out = String::new();
        r.noise = r.chance(50);
        if r.chance(80) {
            ws(r, &mut out);
            gen_value(r, 0, &mut out);
            ws(r, &mut out);
            if r.oops(2) {
                gen_value(r, 5, &mut out);
            }
        } else {
            for _ in 0..r.below(16) {
                out.push_str(r.pick(&[
                    "{", "}", "[", "]", ",", ":", "\"a\"", "\"", "1", "-", "0", ".", "e", "+",
                    "true", "nul", " ", "\n", "\\", "\"\\u", "12", "x",
                ]));
            }
        }
        if r.chance(40) {
            let mut chars: Vec<char> = out.chars().collect();
            for _ in 0..r.below(3) + 1 {
                let len = chars.len();
                match r.below(5) {
                    0 if len > 0 => {
                        chars.remove(r.below(len));
                    }
                    1 => {
                        let c = r.pick(&[
                            "{", "}", "[", "]", ",", ":", "\"", "\\", "0", "1", "-", ".", "e", "E",
                            "+", " ", "\t", "\n", "\u{0}", "\u{1f}", "t", "n", "u", "é", "😀",
                        ]);
                        chars.insert(r.below(len + 1), c.chars().next().unwrap());
                    }
                    2 if len > 0 => {
                        let k = r.below(len);
                        // Flip a bit of an ASCII char, staying ASCII.
                        if chars[k].is_ascii() {
                            chars[k] = char::from((chars[k] as u8) ^ (1 << r.below(7)));
                        }
                    }
                    3 if len > 0 => chars.truncate(r.below(len)),
                    _ if len > 1 => {
                        let a = r.below(len);
                        let b = a + r.below(len - a);
                        let piece: Vec<char> = chars[a..b].to_vec();
                        let at = r.below(len + 1);
                        chars.splice(at..at, piece);
                    }
                    _ => {}
                }
            }
            out = chars.into_iter().collect();
        }
        out
    }

    #[test]
    fn differential_against_serde() {
        let mut r = Rng {
            state: 0x5EED_0FE7_E257_0001,
            noise: false,
        };
        let (mut total, mut ok, mut objects, mut arrays) = (0, 0, 0, 0);
        for _ in 0..200_000 {
            let t = gen_text(&mut r);
            total += 1;
            if differential(&t) {
                ok += 1;
                match validate(&t).unwrap().as_bytes()[0] {
                    b'{' => objects += 1,
                    b'[' => arrays += 1,
                    _ => {}
                }
            }
        }
        println!("{total} texts: {ok} valid, {objects} objects, {arrays} arrays");
        // The generator must exercise both sides of every question.
        assert!(
            ok > total / 5 && ok < total * 4 / 5,
            "{ok} of {total} valid"
        );
        assert!(
            objects > total / 20 && arrays > total / 20,
            "{objects} objects, {arrays} arrays"
        );
    }

    #[test]
    fn every_prefix_and_single_byte_change() {
        let line = r#"{"src":"c1","dest":"n1","body":{"type":"append","msg_id":1,"x":[true,false,null,-0.5e+3,"\u00e9\n"],"y":{}}}"#;
        assert!(differential(line));
        for k in 0..line.len() {
            differential(&line[..k]);
            let mut b = line.as_bytes().to_vec();
            b.remove(k);
            differential(std::str::from_utf8(&b).unwrap());
            for c in [
                b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'0', b' ', b'e', b'\0',
            ] {
                let mut b = line.as_bytes().to_vec();
                b[k] = c;
                differential(std::str::from_utf8(&b).unwrap());
            }
        }
    }

    #[test]
    fn whitespace_anywhere() {
        let line = r#"{"a":[1,-2.5e3,{"b":"c d","e":[]},{}],"f":{"g":[[true],null]},"h":"\u00e9"}"#;
        assert!(differential(line));
        for k in 0..=line.len() {
            for ws in [
                " ", "\t", "\n", "\r", "\r\n  ", "\u{b}", "\u{c}", "\u{a0}", "\u{feff}",
            ] {
                differential(&format!("{}{ws}{}", &line[..k], &line[k..]));
            }
        }
        let value: serde_json::Value = serde_json::from_str(LINE).unwrap();
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        assert!(pretty.contains("\n  "));
        assert!(differential(&pretty));
        assert_eq!(members(&pretty).unwrap().len(), 3);
    }

    #[test]
    fn special_mask_finds_the_first_special_byte() {
        // Every byte value at every position of a word, among varied filler.
        for filler in [
            b'x', b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xa2, 0xdc, 0xff,
        ] {
            for v in 0..=255u8 {
                for k in 0..8 {
                    let mut bytes = [filler; 8];
                    bytes[k] = v;
                    let m = special_mask(u64::from_le_bytes(bytes));
                    if SPECIAL[v as usize] {
                        assert_eq!(m.trailing_zeros() / 8, k as u32, "{v:#x} at {k}");
                    } else {
                        assert_eq!(m, 0, "{v:#x} at {k} among {filler:#x}");
                    }
                }
            }
        }
        // Several specials (borrows may mark bytes above the first one),
        // against a byte loop, from every start.
        let mut r = Rng {
            state: 7,
            noise: false,
        };
        let alphabet = [
            b'"', b'\\', 0x00, 0x01, 0x1f, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0x9f, 0xa2,
            0xc3, 0xdc, 0xff,
        ];
        for _ in 0..20_000 {
            let len = r.below(40);
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if r.chance(70) {
                        b'x'
                    } else {
                        alphabet[r.below(alphabet.len())]
                    }
                })
                .collect();
            for i in 0..=len {
                let first = (i..len)
                    .find(|&k| SPECIAL[bytes[k] as usize])
                    .unwrap_or(len);
                assert_eq!(
                    special(&bytes, i),
                    (first, at(&bytes, first)),
                    "{bytes:x?} from {i}"
                );
            }
        }
    }

    const LINE: &str = r#"{"src":"client","dest":"eventstore","body":{"type":"append","msg_id":123456,"aggregate_id":"agg-4711","event_type":"ItemAdded","event_data":{"sku":"SKU-841235","qty":2,"price":32.99,"note":"x"},"version":17}}"#;

    /// Micro benchmark: `cargo test --release --lib scan -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_scan_vs_serde() {
        use std::hint::black_box;
        use std::time::Instant;

        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Body<'a> {
            #[serde(borrow, rename = "type")]
            kind: Option<&'a RawValue>,
            #[serde(borrow)]
            msg_id: Option<&'a RawValue>,
            #[serde(borrow)]
            aggregate_id: Option<&'a RawValue>,
            #[serde(borrow)]
            event_type: Option<&'a RawValue>,
            #[serde(borrow)]
            event_data: Option<&'a RawValue>,
            #[serde(borrow)]
            version: Option<&'a RawValue>,
        }
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Envelope<'a> {
            #[serde(borrow)]
            src: Option<&'a RawValue>,
            #[serde(borrow)]
            dest: Option<&'a RawValue>,
            #[serde(borrow)]
            body: Option<Body<'a>>,
        }

        // This thread's CPU time, where Linux reports it (a busy machine
        // inflates wall time), else wall time.
        fn now_ns(start: Instant) -> u64 {
            std::fs::read_to_string("/proc/thread-self/schedstat")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| start.elapsed().as_nanos() as u64)
        }

        const N: usize = 1_000_000;
        const ROUNDS: usize = 7;
        let line = LINE;
        let epoch = Instant::now();
        let time = |name: &str, f: &dyn Fn(&str) -> usize| {
            let mut best = f64::MAX;
            for _ in 0..ROUNDS {
                let start = now_ns(epoch);
                let mut sum = 0;
                for _ in 0..N {
                    sum += f(black_box(line));
                }
                black_box(sum);
                best = best.min((now_ns(epoch) - start) as f64 / 1e9);
            }
            let ns = best * 1e9 / N as f64;
            println!(
                "{name:<44} {ns:7.1} ns/line {:6.2} ns/byte {:7.0} MB/s",
                ns / line.len() as f64,
                line.len() as f64 / ns * 1e3
            );
        };

        println!(
            "line: {} bytes, {N} iterations, best of {ROUNDS} (thread CPU time)",
            line.len()
        );
        time("scan::validate", &|t| validate(t).unwrap().len());
        time("scan::scan_object (envelope, then body)", &|t| {
            let mut body = "";
            let mut n = 0;
            scan_object(t, |k, v| {
                n += 1;
                if k.raw == "body" {
                    body = v;
                }
                Ok::<(), ScanError>(())
            })
            .unwrap();
            scan_object(body, |k, v| {
                n += k.raw.len() + v.len();
                Ok::<(), ScanError>(())
            })
            .unwrap();
            n
        });
        time("serde_json::from_str::<&RawValue>", &|t| {
            serde_json::from_str::<&RawValue>(t).unwrap().get().len()
        });
        time("serde_json into Option<&RawValue> structs", &|t| {
            let e: Envelope = serde_json::from_str(t).unwrap();
            e.body.unwrap().msg_id.unwrap().get().len()
        });
    }

    /// For `perf stat`: one million envelope+body scans and nothing else.
    #[test]
    #[ignore]
    fn perf_scan_only() {
        let n = std::env::var("SCAN_N")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        let mode = std::env::var("SCAN_MODE").unwrap_or_default();
        let mut sum = 0usize;
        for _ in 0..n {
            let t = std::hint::black_box(LINE);
            sum += match mode.as_str() {
                "serde" => serde_json::from_str::<&RawValue>(t).unwrap().get().len(),
                "none" => t.len(),
                "validate" => validate(t).unwrap().len(),
                _ => {
                    let mut body = "";
                    scan_object(t, |k, v| {
                        if k.raw == "body" {
                            body = v;
                        }
                        Ok::<(), ScanError>(())
                    })
                    .unwrap();
                    let mut m = 0;
                    scan_object(body, |_, v| {
                        m += v.len();
                        Ok::<(), ScanError>(())
                    })
                    .unwrap();
                    m
                }
            };
        }
        std::hint::black_box(sum);
    }
}

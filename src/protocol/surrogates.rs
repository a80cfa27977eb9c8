//! Requests holding a lone surrogate: the cold path of decoding.
//!
//! docs/protocol.md "Bad input": a string anywhere in a request (a key or a
//! value, in any field, the envelope's included) whose escapes leave a lone
//! surrogate (`"\ud800"` without a low-surrogate escape after it, or a lone
//! `"\udc00"`) is error 12, with `in_reply_to` whenever `msg_id` itself is
//! readable; a `src` that is not Unicode gets no reply.
//!
//! The two decoding paths see such a line differently. The scanner accepts
//! it and says so. serde_json accepts it in a raw value, but fails on it in
//! a key it matches against field names, which would lose `msg_id` or the
//! whole envelope. So the line is decoded once more, from a copy in which
//! every lone-surrogate escape is replaced by `\ufffd`: an escape of the
//! same length, so every field keeps its place, and `src` and `dest` read
//! from the copy are sliced out of the line itself at the same offsets. The
//! request is refused with an error naming the field (or path) of the first
//! lone surrogate, and its column in the line ([`rejection`]).
//!
//! Such lines are rare and nothing here is on the hot path: the scanner
//! checks only strings with a `\u` escape, out of line.

use super::envelope::decode_refused;
use super::position::Line;
use super::request::{Envelope, Message, Rejection};
use crate::types::JsonText;

/// Containers whose member the error's path names; deeper ones show as `…`.
const MAX_PATH_DEPTH: usize = 16;
/// Longest key shown in a path, in bytes (a longer one is cut, with `…`).
const MAX_KEY_BYTES: usize = 64;
/// The escape that stands in for a lone surrogate in the copy.
const STAND_IN: &str = "\\ufffd";

/// Decodes a line holding lone surrogates, whose escapes start at `found`
/// (byte offsets in the line's text, in order).
pub(crate) fn decode<'a>(line: Line<'a>, found: &[usize]) -> Message<'a> {
    let Some(&first) = found.first() else {
        return Message::Unanswerable("line ignored: no lone surrogate after all".to_owned());
    };
    let copy = sanitized(line.text(), found);
    let refusal = rejection(line, first);
    let envelope = match decode_refused(line.with_text(&copy), &refusal) {
        Message::Unanswerable(why) => return Message::Unanswerable(why),
        Message::Envelope(envelope) => envelope,
    };
    let Some(src) = rebase(line, &copy, envelope.src) else {
        return Message::Unanswerable("line ignored: the envelope could not be read".to_owned());
    };
    if let Some(at) = first_within(line, src, found) {
        return Message::Unanswerable(format!(
            "line ignored: \"src\" is not Unicode: lone surrogate {} at line 1 column {}",
            escape_at(line.text(), at),
            line.column(at)
        ));
    }
    // A `dest` that is not Unicode is not echoed: the reply comes from the
    // node's own id.
    let dest = envelope
        .dest
        .and_then(|d| rebase(line, &copy, d))
        .filter(|d| first_within(line, *d, found).is_none());
    Message::Envelope(Envelope {
        src,
        dest,
        msg_id: envelope.msg_id,
        // A `msg_id` problem (checked first) stands; anything else the
        // copy got is the refusal itself.
        request: Err(envelope.request.err().unwrap_or(refusal)),
    })
}

/// `text` with the lone-surrogate escape at each of `found` replaced by
/// [`STAND_IN`].
fn sanitized(text: &str, found: &[usize]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for &at in found {
        out.push_str(text.get(from..at).unwrap_or_default());
        out.push_str(STAND_IN);
        from = at + STAND_IN.len();
    }
    out.push_str(text.get(from..).unwrap_or_default());
    out
}

/// The text at the same place in the line as `part` is in `copy`.
fn rebase<'a>(line: Line<'a>, copy: &str, part: JsonText<'_>) -> Option<JsonText<'a>> {
    let part = part.get();
    let at = (part.as_ptr() as usize).checked_sub(copy.as_ptr() as usize)?;
    line.text().get(at..at + part.len()).map(JsonText::trusted)
}

/// The first of `found` inside `part` (a slice of the line's text).
fn first_within(line: Line<'_>, part: JsonText<'_>, found: &[usize]) -> Option<usize> {
    let start = (part.get().as_ptr() as usize).checked_sub(line.text().as_ptr() as usize)?;
    let end = start + part.get().len();
    found.iter().copied().find(|at| (start..end).contains(at))
}

/// The six bytes of the escape at `at`.
fn escape_at(text: &str, at: usize) -> &str {
    text.get(at..at + STAND_IN.len()).unwrap_or("\\u")
}

/// Error 12 for the lone surrogate whose escape starts at `at`, naming
/// where it is: a field of the body by its name and path
/// (`event_data.a`, `events[2].metadata`), anything else in the envelope
/// as `envelope.<path>`; a key by the object that holds it.
pub(crate) fn rejection(line: Line<'_>, at: usize) -> Rejection {
    let text = line.text();
    let escape = escape_at(text, at);
    let column = line.column(at);
    let place = locate(text, at);
    let (segments, deeper, key) = match place.key {
        // A key names the object that holds it.
        Some(key) => match place.path.split_last() {
            Some((_, holder)) if !place.deeper => (holder, false, Some(key)),
            _ => (&place.path[..], place.deeper, Some(key)),
        },
        None => (&place.path[..], place.deeper, None),
    };
    let field = field_name(segments, deeper);
    let problem = match key {
        Some(key) => format!(
            "key \"{}\" holds a lone surrogate {escape} at line 1 column {column}",
            shortened(key)
        ),
        None => format!("lone surrogate {escape} at line 1 column {column}"),
    };
    Rejection::malformed(&field, problem)
}

/// The member of one container on the way to a place.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Segment<'t> {
    /// An object's key, as written.
    Key(&'t str),
    /// An array's index.
    Index(usize),
}

/// Where a byte of the line is.
struct Place<'t> {
    /// The member of each container around it, outermost first (at most
    /// [`MAX_PATH_DEPTH`]).
    path: Vec<Segment<'t>>,
    /// Whether it sits deeper than the path shows.
    deeper: bool,
    /// The key (as written) when the byte is inside an object's key.
    key: Option<&'t str>,
}

/// Walks the line (valid JSON) up to the string holding byte `at`, without
/// recursion and in memory bounded by the line.
fn locate(text: &str, at: usize) -> Place<'_> {
    let b = text.as_bytes();
    // For every open container: whether it is an object.
    let mut objects: Vec<bool> = Vec::new();
    let mut path: Vec<Segment<'_>> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => {
                let end = string_end(b, i);
                let content = text.get(i + 1..end).unwrap_or_default();
                if (i..=end).contains(&at) {
                    return Place {
                        deeper: objects.len() > MAX_PATH_DEPTH,
                        path,
                        key: expect_key.then_some(content),
                    };
                }
                if expect_key {
                    if objects.len() <= MAX_PATH_DEPTH
                        && let Some(Segment::Key(key)) = path.last_mut()
                    {
                        *key = content;
                    }
                    expect_key = false;
                }
                i = end + 1;
                continue;
            }
            b'{' | b'[' => {
                objects.push(c == b'{');
                if objects.len() <= MAX_PATH_DEPTH {
                    path.push(if c == b'{' {
                        Segment::Key("")
                    } else {
                        Segment::Index(0)
                    });
                }
                expect_key = c == b'{';
            }
            b'}' | b']' => {
                if objects.len() <= MAX_PATH_DEPTH {
                    path.pop();
                }
                objects.pop();
                expect_key = false;
            }
            b',' => match objects.last() {
                Some(true) => expect_key = true,
                Some(false) if objects.len() <= MAX_PATH_DEPTH => {
                    if let Some(Segment::Index(n)) = path.last_mut() {
                        *n += 1;
                    }
                }
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    Place {
        path,
        deeper: false,
        key: None,
    }
}

/// The offset of the quote closing the string that opens at `start`.
fn string_end(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => return i,
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    b.len()
}

/// The field an error names: a body field by its path, the body itself as
/// `body`, anything else in the envelope as `envelope.<path>`.
fn field_name(segments: &[Segment<'_>], deeper: bool) -> String {
    match segments.split_first() {
        Some((Segment::Key("body"), [])) if !deeper => "body".to_owned(),
        Some((Segment::Key("body"), rest)) => rendered(rest, deeper),
        _ if segments.is_empty() && !deeper => "envelope".to_owned(),
        _ => format!("envelope.{}", rendered(segments, deeper)),
    }
}

fn rendered(segments: &[Segment<'_>], deeper: bool) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&shortened(key));
            }
            Segment::Index(n) => out.push_str(&format!("[{n}]")),
        }
    }
    if deeper {
        out.push_str(".…");
    }
    out
}

/// A key cut to [`MAX_KEY_BYTES`] (on a character boundary).
fn shortened(key: &str) -> String {
    if key.len() <= MAX_KEY_BYTES {
        return key.to_owned();
    }
    let mut end = MAX_KEY_BYTES;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", key.get(..end).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error text for the first lone surrogate of a body.
    fn text_for(body: &str) -> String {
        let line = format!(r#"{{"src":"c","body":{body}}}"#);
        let found = crate::escapes::lone_surrogates(&line);
        rejection(Line::new(&line, 0), found[0]).text
    }

    #[test]
    fn errors_name_the_path() {
        for (body, text) in [
            (
                r#"{"aggregate_id":"a\ud800"}"#,
                r"aggregate_id: lone surrogate \ud800 at line 1 column 37",
            ),
            (
                r#"{"event_data":{"a":[1,{"b":"\udc00"}]}}"#,
                r"event_data.a[1].b: lone surrogate \udc00 at line 1 column 47",
            ),
            (
                r#"{"event_data":{"x":1,"\udc00":1,"b":2}}"#,
                r#"event_data: key "\udc00" holds a lone surrogate \udc00 at line 1 column 41"#,
            ),
            (
                r#"{"events":[{},{"metadata":{"k":"\ud800"}}]}"#,
                r"events[1].metadata.k: lone surrogate \ud800 at line 1 column 51",
            ),
            (
                r#"{"type":"x","\ud800":1}"#,
                r#"body: key "\ud800" holds a lone surrogate \ud800 at line 1 column 32"#,
            ),
        ] {
            assert_eq!(text_for(body), text, "{body}");
        }
    }

    #[test]
    fn envelope_fields_are_named_as_such() {
        let line = r#"{"src":"c","x":{"\ud800":["\udc00"]},"body":{}}"#;
        let found = crate::escapes::lone_surrogates(line);
        assert_eq!(
            rejection(Line::new(line, 0), found[0]).text,
            r#"envelope.x: key "\ud800" holds a lone surrogate \ud800 at line 1 column 18"#
        );
        assert_eq!(
            rejection(Line::new(line, 3), found[1]).text,
            r"envelope.x.\ud800[0]: lone surrogate \udc00 at line 1 column 31"
        );
    }

    #[test]
    fn deep_and_long_paths_are_cut() {
        let deep = "[".repeat(40) + "\"\\ud800\"" + &"]".repeat(40);
        let text = text_for(&format!(r#"{{"event_data":{deep}}}"#));
        assert!(
            text.starts_with("event_data[0][0][0][0][0][0][0][0][0][0][0][0][0][0].…: lone"),
            "{text}"
        );
        let key = "k".repeat(100);
        let text = text_for(&format!(r#"{{"event_data":{{"{key}":"\ud800"}}}}"#));
        assert!(
            text.starts_with(&format!("event_data.{}…: lone", &key[..64])),
            "{text}"
        );
    }

    #[test]
    fn the_copy_keeps_every_offset() {
        let text = r#"{"a":"\ud800x","\udc00":"\ud83d\ude00"}"#;
        let found = crate::escapes::lone_surrogates(text);
        let copy = sanitized(text, &found);
        assert_eq!(copy, r#"{"a":"\ufffdx","\ufffd":"\ud83d\ude00"}"#);
        assert_eq!(copy.len(), text.len());
    }
}

//! Line → envelope and raw body fields: the first step of decoding.
//!
//! Each field of the body is kept as the raw JSON text the client sent (a
//! slice of the line, never copied or parsed into a tree); `request.rs`
//! then checks them one by one so that an error can name the field.
//!
//! Two paths produce the same `RawBody`:
//!
//! - the **fast path**, `scan`: one pass over the line, validating it
//!   and slicing out the known fields. It refuses anything unusual
//!   (invalid JSON, a duplicate field, an escaped key, deep nesting);
//! - the **serde path**: serde_json's derived deserialiser over the same
//!   struct, run when the fast path refused. It decides everything the
//!   fast path leaves open and words the errors; if it fails too, a second,
//!   more lenient pass works out whether the line deserves an error reply
//!   (a usable envelope) or none (not a JSON object with a string `src` and
//!   an object `body`).
//!
//! A line holding a lone surrogate (valid JSON, but not Unicode) takes a
//! third, cold path, `surrogates.rs`, which refuses the request with error
//! 12 and keeps `in_reply_to` whenever `msg_id` is readable. A leading UTF-8
//! byte-order mark is skipped; error positions still count within the line
//! as sent (`position.rs`).
//!
//! The fast path never accepts a line the serde path would refuse, and
//! yields the same field texts when both accept: unit tests below, the
//! debug assertions in `decode` and `JsonText::trusted`, and the
//! `node_lines` fuzz target check it.
//!
//! `null` counts as "not given" for every field except the JSON payloads
//! `event_data` and `state`, where it is a value like any other.

use super::position::Line;
use super::request::{Envelope, Message, Rejection, decode_body, msg_id};
use super::surrogates;
use crate::escapes;
use crate::scan::{self, Scanner};
use crate::types::JsonText;
use serde::{Deserialize, Deserializer};

/// A JSON value in a field, kept as raw text. Unlike `Option<JsonText<'_>>`,
/// a `null` is kept as the text `null` (absent fields default to `None`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Payload<'a>(pub(crate) Option<JsonText<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Payload<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        JsonText::deserialize(d).map(|r| Payload(Some(r)))
    }
}

/// The body's fields, each still raw: checked one by one afterwards, so
/// that an error can name the field.
#[derive(Deserialize, Default, Debug, PartialEq)]
pub(crate) struct RawBody<'a> {
    #[serde(rename = "type", borrow)]
    pub(crate) kind: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) msg_id: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) aggregate_id: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) event_type: Option<JsonText<'a>>,
    #[serde(borrow, default)]
    pub(crate) event_data: Payload<'a>,
    #[serde(borrow)]
    pub(crate) metadata: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) event_id: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) events: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) version: Option<JsonText<'a>>,
    #[serde(borrow, default)]
    pub(crate) state: Payload<'a>,
    #[serde(borrow)]
    pub(crate) use_snapshot: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) timestamp: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) from_version: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) from_sequence: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) max_count: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) node_id: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) node_ids: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) category: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) event_types: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) subscription: Option<JsonText<'a>>,
}

#[derive(Deserialize, Debug, Default, PartialEq)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    src: Option<JsonText<'a>>,
    #[serde(borrow)]
    dest: Option<JsonText<'a>>,
    #[serde(borrow)]
    body: Option<RawBody<'a>>,
}

/// The lenient envelope of the second pass: the body only as raw text.
#[derive(Deserialize)]
struct LooseEnvelope<'a> {
    #[serde(borrow)]
    src: Option<JsonText<'a>>,
    #[serde(borrow)]
    dest: Option<JsonText<'a>>,
    #[serde(borrow)]
    body: Option<JsonText<'a>>,
}

#[derive(Deserialize)]
struct LooseBody<'a> {
    #[serde(borrow)]
    msg_id: Option<JsonText<'a>>,
}

/// One element of an `events` array.
#[derive(Deserialize, Debug, Default, PartialEq)]
pub(crate) struct RawEvent<'a> {
    #[serde(borrow)]
    pub(crate) event_type: Option<JsonText<'a>>,
    #[serde(borrow, default)]
    pub(crate) event_data: Payload<'a>,
    #[serde(borrow)]
    pub(crate) metadata: Option<JsonText<'a>>,
    #[serde(borrow)]
    pub(crate) event_id: Option<JsonText<'a>>,
}

/// A field where `null` means "not given" (as serde's `Option`).
fn optional(text: &str) -> Option<JsonText<'_>> {
    (text != "null").then(|| JsonText::trusted(text))
}

/// A payload field, where `null` is a value.
fn payload(text: &str) -> Payload<'_> {
    Payload(Some(JsonText::trusted(text)))
}

impl<'a> RawBody<'a> {
    /// The fast path's setter: stores a known field's text and returns its
    /// bit (for duplicate detection), or 0 for an unknown key. A `match` on
    /// the key compiles to a switch on its length and inline compares.
    fn set(&mut self, key: &str, text: &'a str) -> u32 {
        let (bit, field) = match key {
            "type" => (0, &mut self.kind),
            "msg_id" => (1, &mut self.msg_id),
            "aggregate_id" => (2, &mut self.aggregate_id),
            "event_type" => (3, &mut self.event_type),
            "event_data" => {
                self.event_data = payload(text);
                return 1 << 4;
            }
            "metadata" => (5, &mut self.metadata),
            "event_id" => (6, &mut self.event_id),
            "events" => (7, &mut self.events),
            "version" => (8, &mut self.version),
            "state" => {
                self.state = payload(text);
                return 1 << 9;
            }
            "use_snapshot" => (10, &mut self.use_snapshot),
            "timestamp" => (11, &mut self.timestamp),
            "from_version" => (12, &mut self.from_version),
            "from_sequence" => (13, &mut self.from_sequence),
            "max_count" => (14, &mut self.max_count),
            "node_id" => (15, &mut self.node_id),
            "node_ids" => (16, &mut self.node_ids),
            "category" => (17, &mut self.category),
            "event_types" => (18, &mut self.event_types),
            "subscription" => (19, &mut self.subscription),
            _ => return 0,
        };
        *field = optional(text);
        1 << bit
    }
}

impl<'a> RawEvent<'a> {
    /// As [`RawBody::set`], for one element of an `events` array.
    fn set(&mut self, key: &str, text: &'a str) -> u32 {
        let (bit, field) = match key {
            "event_type" => (0, &mut self.event_type),
            "event_data" => {
                self.event_data = payload(text);
                return 1 << 1;
            }
            "metadata" => (2, &mut self.metadata),
            "event_id" => (3, &mut self.event_id),
            _ => return 0,
        };
        *field = optional(text);
        1 << bit
    }

    /// One element of an `events` array (an object).
    pub(crate) fn parse(item: JsonText<'a>) -> Result<RawEvent<'a>, serde_json::Error> {
        let mut event = RawEvent::default();
        let mut s = Scanner::new(item.get());
        match scan::members(&mut s, |key, text| event.set(key, text)) {
            Some(()) if s.at_end() => Ok(event),
            _ => serde_json::from_str(item.get()),
        }
    }
}

/// The elements of an `events` array (an array).
pub(crate) fn elements(raw: JsonText<'_>) -> Result<Vec<JsonText<'_>>, serde_json::Error> {
    match scan::elements(raw.get()) {
        Some(items) => Ok(items.into_iter().map(JsonText::trusted).collect()),
        None => serde_json::from_str(raw.get()),
    }
}

/// The fast path over a whole line, filling `envelope` in place (it is
/// large: returning it by value costs copies). `None` leaves the line to
/// the slow path (serde, or `surrogates.rs`), and `envelope` half filled.
fn fast_envelope<'a>(line: &'a str, envelope: &mut RawEnvelope<'a>) -> Option<()> {
    let mut s = Scanner::new(line);
    scan::fields(&mut s, |key, s| match key {
        "src" => {
            envelope.src = optional(s.value()?);
            Some(1)
        }
        "dest" => {
            envelope.dest = optional(s.value()?);
            Some(2)
        }
        "body" => {
            if !s.at_object() {
                return None;
            }
            let body = envelope.body.insert(RawBody::default());
            scan::members(s, |key, text| body.set(key, text))?;
            Some(4)
        }
        _ => s.value().map(|_| 0),
    })?;
    // A lone surrogate anywhere: the cold path decides (`surrogates.rs`).
    (s.at_end() && !s.saw_lone_surrogate()).then_some(())
}

/// The byte-order mark, skipped at the start of a line (many Windows tools
/// write one, as the bytes EF BB BF).
const BOM: &str = "\u{FEFF}";

/// Decodes one line (without its newline).
pub fn decode(line: &[u8]) -> Message<'_> {
    // Validate UTF-8 once for the whole line (SIMD-fast), then parse as
    // `str`: serde_json then skips re-validating every raw value it borrows.
    let Ok(text) = std::str::from_utf8(line) else {
        return Message::Unanswerable("line ignored: not valid UTF-8".to_owned());
    };
    let mut line = Line::new(text, 0);
    let mut envelope = RawEnvelope::default();
    if fast_envelope(text, &mut envelope).is_some() {
        // Read side of the fast path's contract (write side: `scan`):
        // whatever it accepts, serde accepts with the same fields.
        debug_assert_eq!(
            Some(&envelope),
            serde_json::from_str::<RawEnvelope<'_>>(text).ok().as_ref(),
            "the fast path disagrees with serde on {text}"
        );
    } else {
        match decode_slow(line) {
            Slow::Parsed(read, parsed) => (line, envelope) = (read, *parsed),
            Slow::Decided(message) => return message,
        }
    }
    let (Some(src), Some(body)) = (envelope.src.filter(|s| is_string(*s)), &envelope.body) else {
        return Message::Unanswerable(missing_envelope(envelope.src.is_some()));
    };
    let (msg_id, request) = match msg_id(body.msg_id) {
        Ok(id) => (id, decode_body(body, line)),
        Err(e) => (None, Err(e)),
    };
    Message::Envelope(Envelope {
        src,
        dest: envelope.dest.filter(|d| is_string(*d)),
        msg_id,
        request,
    })
}

/// A line the fast path left: the envelope as serde reads it (and the line
/// without its byte-order mark, if it had one), or the message when that is
/// all there is to say (a line with lone surrogates, or one serde refuses).
/// Out of line, so that `decode` stays small enough to inline its fast path
/// whole; a line with a byte-order mark comes here (the fast path refuses
/// its first byte), so the common line pays nothing for it.
#[inline(never)]
fn decode_slow(line: Line<'_>) -> Slow<'_> {
    let line = match line.text().strip_prefix(BOM) {
        Some(rest) => Line::new(rest, BOM.len()),
        None => line,
    };
    let found = escapes::lone_surrogates(line.text());
    if !found.is_empty() {
        return Slow::Decided(surrogates::decode(line, &found));
    }
    serde_envelope(line, None)
}

/// What the slow path made of a line.
enum Slow<'a> {
    /// The envelope as serde reads it, and the line it read (without a
    /// byte-order mark).
    Parsed(Line<'a>, Box<RawEnvelope<'a>>),
    /// The message, when that is all there is to say.
    Decided(Message<'a>),
}

/// The serde path: strict, then lenient (see the module docs). `refusal`:
/// the request's error, for the lenient pass to give.
fn serde_envelope<'a>(line: Line<'a>, refusal: Option<&Rejection>) -> Slow<'a> {
    // serde reads a struct from an array too (`[src, dest, body]`): only
    // an object is an envelope.
    let text = line.text().trim_start_matches([' ', '\t', '\n', '\r']);
    if text.starts_with('[') {
        return Slow::Decided(Message::Unanswerable(
            "line ignored: not a JSON object but an array".to_owned(),
        ));
    }
    match serde_json::from_str::<RawEnvelope<'_>>(line.text()) {
        Ok(envelope) => Slow::Parsed(line, Box::new(envelope)),
        Err(strict) => Slow::Decided(decode_loose(line, strict, refusal)),
    }
}

/// Decodes the copy of a line whose lone surrogates were replaced
/// (`surrogates.rs`) and refuses its request with `refusal`, unless
/// `msg_id` (checked first) is itself the problem.
pub(crate) fn decode_refused<'a>(line: Line<'a>, refusal: &Rejection) -> Message<'a> {
    let envelope = match serde_envelope(line, Some(refusal)) {
        Slow::Parsed(_, envelope) => *envelope,
        Slow::Decided(message) => return message,
    };
    let (Some(src), Some(body)) = (envelope.src.filter(|s| is_string(*s)), &envelope.body) else {
        return Message::Unanswerable(missing_envelope(envelope.src.is_some()));
    };
    let (msg_id, problem) = match msg_id(body.msg_id) {
        Ok(id) => (id, refusal.clone()),
        Err(e) => (None, e),
    };
    Message::Envelope(Envelope {
        src,
        dest: envelope.dest.filter(|d| is_string(*d)),
        msg_id,
        request: Err(problem),
    })
}

fn missing_envelope(has_src: bool) -> String {
    if has_src {
        "line ignored: the envelope needs a string \"src\" and an object \"body\"".to_owned()
    } else {
        "line ignored: the envelope needs a string \"src\"".to_owned()
    }
}

/// Second pass after the strict one failed: is the envelope usable?
fn decode_loose<'a>(
    line: Line<'a>,
    strict: serde_json::Error,
    refusal: Option<&Rejection>,
) -> Message<'a> {
    let text = line.text();
    let Ok(loose) = serde_json::from_str::<LooseEnvelope<'_>>(text) else {
        return Message::Unanswerable(format!(
            "line ignored: not a JSON object: {}",
            line.error_in(text, &strict)
        ));
    };
    let (Some(src), Some(body)) = (loose.src.filter(|s| is_string(*s)), loose.body) else {
        return Message::Unanswerable(missing_envelope(loose.src.is_some()));
    };
    if !body.get().starts_with('{') {
        return Message::Unanswerable(missing_envelope(true));
    }
    let msg_id = serde_json::from_str::<LooseBody<'_>>(body.get())
        .ok()
        .and_then(|b| msg_id(b.msg_id).ok().flatten());
    let problem = match refusal {
        Some(refusal) => refusal.clone(),
        None => Rejection::malformed("body", line.error_in(text, &strict)),
    };
    Message::Envelope(Envelope {
        src,
        dest: loose.dest.filter(|d| is_string(*d)),
        msg_id,
        request: Err(problem),
    })
}

fn is_string(raw: JsonText<'_>) -> bool {
    raw.get().starts_with('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path may refuse anything, but what it accepts serde must
    /// accept with the same fields.
    fn agrees(line: &str) -> bool {
        let serde = serde_json::from_str::<RawEnvelope<'_>>(line);
        let mut fast = RawEnvelope::default();
        match fast_envelope(line, &mut fast) {
            Some(()) => {
                assert_eq!(Some(&fast), serde.as_ref().ok(), "{line}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn fast_path_takes_ordinary_lines_and_agrees_with_serde() {
        let session = include_str!("../../examples/session.jsonl");
        for line in session.lines() {
            let valid = serde_json::from_str::<RawEnvelope<'_>>(line).is_ok();
            assert_eq!(agrees(line), valid, "{line}");
        }
        for line in [
            r#"{"src":"c","body":{"type":"append","aggregate_id":"a","event_type":"T","event_data":null,"metadata":null,"version":"any"}}"#,
            r#" { "dest" : "n" , "src" : "c" , "extra" : [1, {"x": "\u00e9"}], "body" : { "msg_id" : 1e3 , "type" : "read_all" } } "#,
            r#"{"src":null,"body":{}}"#,
            r#"{"src":"c","body":{"type":"append","events":[{"event_type":"T"}],"version":0}}"#,
            r#"{"src":"c","body":{"type":"x","state":null,"unknown":{"msg_id":1,"msg_id":2}}}"#,
            r#"{"src":"c"}"#,
        ] {
            assert!(agrees(line), "fast path refused {line}");
        }
    }

    #[test]
    fn fast_path_leaves_unusual_lines_to_serde() {
        for line in [
            r#"{"src":"c","body":{"type":"read_all","max_count":1,"max_count":2}}"#,
            r#"{"src":"c","src":"d","body":{}}"#,
            r#"{"src":"c","body":{"ty\u0070e":"read_all"}}"#,
            r#"{"src":"c","body":null}"#,
            r#"{"src":"c","body":5}"#,
            r#"["c","n",{"type":"read_all"}]"#,
            r#"{"src":"c","body":{"type":"read_all"}} x"#,
            r#"{"src":"c","body":{"type":"read_all",}}"#,
            r#"{"src":"c","body":{"type":"append","event_data":{"a":01}}}"#,
            r#"{"src":"c","body":{"type":"append","event_data":"tab	inside"}}"#,
            "",
        ] {
            assert!(!agrees(line), "fast path took {line}");
        }
    }

    #[test]
    fn setters_know_every_field_once() {
        let names = [
            "type",
            "msg_id",
            "aggregate_id",
            "event_type",
            "event_data",
            "metadata",
            "event_id",
            "events",
            "version",
            "state",
            "use_snapshot",
            "timestamp",
            "from_version",
            "from_sequence",
            "max_count",
            "node_id",
            "node_ids",
            "category",
            "event_types",
            "subscription",
        ];
        let mut body = RawBody::default();
        let bits: u32 = names.iter().map(|n| body.set(n, "1")).fold(0, |a, b| {
            assert_eq!(a & b, 0, "two fields share a bit");
            a | b
        });
        assert_eq!(bits.count_ones() as usize, names.len());
        let one = Some(JsonText::trusted("1"));
        let expected = RawBody {
            kind: one,
            msg_id: one,
            aggregate_id: one,
            event_type: one,
            event_data: Payload(one),
            metadata: one,
            event_id: one,
            events: one,
            version: one,
            state: Payload(one),
            use_snapshot: one,
            timestamp: one,
            from_version: one,
            from_sequence: one,
            max_count: one,
            node_id: one,
            node_ids: one,
            category: one,
            event_types: one,
            subscription: one,
        };
        assert_eq!(body, expected);
        assert_eq!(body.set("Type", "1"), 0);
        let mut event = RawEvent::default();
        assert_eq!(event.set("type", "1"), 0);
    }

    #[test]
    fn batch_elements_take_the_fast_path_and_agree() {
        let item = JsonText::trusted(r#"{"event_type":"T","event_data":null,"x":1}"#);
        let fast = RawEvent::parse(item).unwrap();
        assert_eq!(
            fast,
            serde_json::from_str::<RawEvent<'_>>(item.get()).unwrap()
        );
        assert_eq!(fast.event_data, Payload(Some(JsonText::trusted("null"))));
        let dup = JsonText::trusted(r#"{"event_type":"T","event_type":"U"}"#);
        assert!(RawEvent::parse(dup).is_err());
    }
}

//! Decoding one input line into a [`Message`]: the envelope, `msg_id`, the
//! request type and every field, each checked with an error that names it.
//!
//! Decoding borrows from the line: strings without escapes, `event_data`,
//! `metadata` and snapshot `state` are slices of the input (raw JSON text),
//! never copied or parsed into a tree. The common case is one serde pass
//! over the line into `RawEnvelope`; only if that fails does a second,
//! more lenient pass work out whether the line deserves an error reply (a
//! usable envelope) or none (not a JSON object with a string `src` and an
//! object `body`).
//!
//! `null` counts as "not given" for every optional field except the JSON
//! payloads `event_data` and `state`, where it is a value like any other.

use super::envelope::{Payload, RawBody, RawEvent, elements};
use super::position::{Line, problem};
use crate::aggregate::Aggregate;
use crate::event::NewEvent;
use crate::filter::Filter;
use crate::store::{EventStore, Prepared};
use crate::time::Timestamp;
use crate::types::{EventId, ExpectedVersion, JsonText, SequenceNumber, Version};
use std::borrow::Cow;
use std::sync::Arc;

/// Most events one batch append may carry.
pub const MAX_BATCH_EVENTS: usize = 1_000;
/// Default and largest `max_count` of `read_stream` / `read_all`.
pub const DEFAULT_MAX_COUNT: u64 = 1_000;
/// Values of `max_count` above this count as this.
pub const MAX_MAX_COUNT: u64 = 10_000;

/// The protocol's error codes (Maelstrom's): the one place their numbers
/// are written ([`Code::number`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Unknown message type.
    NotSupported = 10,
    /// Temporarily unavailable: too many subscriptions, or a full store.
    TemporarilyUnavailable = 11,
    /// Malformed request: a field missing, mistyped or out of range.
    MalformedRequest = 12,
    /// The node could not do what it should have (storage failed).
    Crash = 13,
    /// The thing asked for does not exist.
    KeyDoesNotExist = 20,
    /// A precondition (event-id uniqueness) failed.
    PreconditionFailed = 22,
}

impl Code {
    /// The code's number, as the reply carries it.
    pub fn number(self) -> u64 {
        self as u64
    }
}

/// The events of an append: one (the single form, no allocation) or many.
#[derive(Debug)]
pub enum Events<'a> {
    /// The single-event form.
    One(NewEvent<'a>),
    /// The `events` array form.
    Batch(Vec<NewEvent<'a>>),
}

impl<'a> Events<'a> {
    /// The events as a slice.
    pub fn as_slice(&self) -> &[NewEvent<'a>] {
        match self {
            Events::One(e) => std::slice::from_ref(e),
            Events::Batch(v) => v,
        }
    }

    /// Whether the request used the `events` array form.
    pub fn is_batch(&self) -> bool {
        matches!(self, Events::Batch(_))
    }
}

/// A request, every field checked.
#[derive(Debug)]
pub enum Request<'a> {
    /// `append`, single (`batch == false`) or batch form.
    Append {
        /// The aggregate.
        aggregate_id: Cow<'a, str>,
        /// The expected version.
        expected: ExpectedVersion,
        /// The events, checked and packed ([`EventStore::prepare`]) while
        /// decoding, on the parallel workers; taken by the apply step.
        prepared: Option<Prepared>,
        /// The aggregate, if it already existed when the parallel
        /// [`crate::protocol::resolve`] step looked it up (`None` after
        /// decoding): spares the serial apply step the map lookup.
        aggregate: Option<Arc<Aggregate>>,
        /// Whether the request used the `events` array form.
        batch: bool,
    },
    /// `create_snapshot`.
    CreateSnapshot {
        /// The aggregate.
        aggregate_id: Cow<'a, str>,
        /// The expected version, if given.
        expected: Option<Version>,
        /// The given state, if any.
        state: Option<JsonText<'a>>,
    },
    /// `read_snapshot`.
    ReadSnapshot {
        /// The aggregate.
        aggregate_id: Cow<'a, str>,
    },
    /// `replay`.
    Replay {
        /// The aggregate.
        aggregate_id: Cow<'a, str>,
        /// Start from the latest snapshot.
        use_snapshot: bool,
    },
    /// `get_state`.
    GetState {
        /// The aggregate.
        aggregate_id: Cow<'a, str>,
        /// The instant asked for.
        at: Timestamp,
        /// The timestamp exactly as given (echoed in the reply).
        timestamp: JsonText<'a>,
    },
    /// `read_stream`.
    ReadStream {
        /// The aggregate.
        aggregate_id: Cow<'a, str>,
        /// First version to read (≥ 1 after clamping).
        from_version: Version,
        /// Most events to return (already capped).
        max_count: u64,
    },
    /// `read_all`.
    ReadAll {
        /// First sequence number to read.
        from_sequence: SequenceNumber,
        /// Most events to return (already capped).
        max_count: u64,
        /// The filter, when any filter field is given.
        filter: Option<Arc<Filter>>,
    },
    /// `subscribe`.
    Subscribe {
        /// First sequence number wanted (`None`: only new events).
        from_sequence: Option<SequenceNumber>,
        /// Which events.
        filter: Arc<Filter>,
    },
    /// `unsubscribe`.
    Unsubscribe {
        /// The subscription's id.
        subscription: u64,
    },
    /// `init`.
    Init {
        /// This node's id.
        node_id: Cow<'a, str>,
    },
}

/// A request that cannot be served, as the error reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The protocol error code.
    pub code: Code,
    /// What was wrong, naming the field.
    pub text: String,
}

impl Rejection {
    pub(crate) fn malformed(field: &str, problem: impl std::fmt::Display) -> Rejection {
        let problem = problem.to_string();
        // Helpers called with an empty field name leave the text bare, for
        // the caller to prefix (see `event_spec`).
        let text = if field.is_empty() {
            problem
        } else {
            format!("{field}: {problem}")
        };
        Rejection {
            code: Code::MalformedRequest,
            text,
        }
    }
}

/// A decoded line.
#[derive(Debug)]
pub enum Message<'a> {
    /// A line that gets no reply (not a JSON object with a string `src` and
    /// an object `body`); the text says why, for stderr.
    Unanswerable(String),
    /// A line with a usable envelope.
    Envelope(Envelope<'a>),
}

/// The envelope of an answerable line, and its request or why it fails.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// The sender, as raw JSON string text (the reply's `dest`).
    pub src: JsonText<'a>,
    /// The addressee, as raw JSON string text, if a string was given.
    pub dest: Option<JsonText<'a>>,
    /// The request's `msg_id`, if it was a valid one.
    pub msg_id: Option<u64>,
    /// The request, or the error to reply with.
    pub request: Result<Request<'a>, Rejection>,
}

pub(crate) fn msg_id(raw: Option<JsonText<'_>>) -> Result<Option<u64>, Rejection> {
    raw.map(|r| uint(r, "msg_id")).transpose()
}

fn required<'a>(raw: Option<JsonText<'a>>, field: &str) -> Result<JsonText<'a>, Rejection> {
    raw.ok_or_else(|| Rejection::malformed(field, "missing"))
}

/// A JSON string field, borrowed when it has no escapes.
fn string<'a>(raw: JsonText<'a>, field: &str) -> Result<Cow<'a, str>, Rejection> {
    let text = raw.get();
    if !text.starts_with('"') {
        return Err(Rejection::malformed(
            field,
            format!("must be a string, got {}", kind(text)),
        ));
    }
    if !text.contains('\\') {
        return Ok(Cow::Borrowed(&text[1..text.len() - 1]));
    }
    // Lone surrogates were refused before any field is read, so this does
    // not fail; if it did, a position within the field would mislead.
    serde_json::from_str::<String>(text)
        .map(Cow::Owned)
        .map_err(|e| Rejection::malformed(field, problem(&e)))
}

fn non_empty_string<'a>(raw: Option<JsonText<'a>>, field: &str) -> Result<Cow<'a, str>, Rejection> {
    let s = string(required(raw, field)?, field)?;
    if s.is_empty() {
        return Err(Rejection::malformed(field, "must be a non-empty string"));
    }
    Ok(s)
}

/// A JSON integer ≥ 0 that fits in a `u64`; `-0` is 0. A number written
/// with a fraction or an exponent is refused, even when its value is whole
/// (`1.0`, `1e3`): the contract asks for integers.
fn uint(raw: JsonText<'_>, field: &str) -> Result<u64, Rejection> {
    let text = raw.get();
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().map_err(|_| {
            Rejection::malformed(
                field,
                format!("{text} is out of range (at most {})", u64::MAX),
            )
        });
    }
    if text == "-0" {
        return Ok(0);
    }
    let is_number = text.starts_with(|c: char| c == '-' || c.is_ascii_digit());
    let problem = if is_number {
        // A negative or fractional number: quote it, it is short.
        format!("must be an integer >= 0, got {text}")
    } else {
        format!("must be an integer >= 0, got {}", kind(text))
    };
    Err(Rejection::malformed(field, problem))
}

fn optional_uint(raw: Option<JsonText<'_>>, field: &str) -> Result<Option<u64>, Rejection> {
    raw.map(|r| uint(r, field)).transpose()
}

/// The filter fields of `read_all` and `subscribe` (`None`: none given).
fn filter(b: &RawBody<'_>) -> Result<Option<Filter>, Rejection> {
    let text = |raw: Option<JsonText<'_>>, field: &str| -> Result<Option<String>, Rejection> {
        raw.map(|r| {
            let s = string(r, field)?;
            if s.is_empty() {
                return Err(Rejection::malformed(field, "must be a non-empty string"));
            }
            Ok(s.into_owned())
        })
        .transpose()
    };
    let category = text(b.category, "category")?;
    let aggregate_id = text(b.aggregate_id, "aggregate_id")?;
    let event_types = b
        .event_types
        .map(|raw| {
            let types = serde_json::from_str::<Vec<String>>(raw.get()).map_err(|_| {
                let problem = match kind(raw.get()) {
                    "an array" => "must be an array of strings, got another element".to_owned(),
                    other => format!("must be an array of strings, got {other}"),
                };
                Rejection::malformed("event_types", problem)
            })?;
            if types.is_empty() {
                return Err(Rejection::malformed(
                    "event_types",
                    "must be a non-empty array of strings",
                ));
            }
            Ok(types)
        })
        .transpose()?;
    let filter = Filter {
        category,
        aggregate_id,
        event_types,
    };
    Ok((!filter.is_empty()).then_some(filter))
}

/// `max_count`: any integer ≥ 0, however large; above [`MAX_MAX_COUNT`] it
/// counts as that.
fn max_count(raw: Option<JsonText<'_>>) -> Result<u64, Rejection> {
    let count = match raw {
        None => DEFAULT_MAX_COUNT,
        // Only digits: an integer ≥ 0, too large for a u64 if it does not
        // parse.
        Some(r) if r.get().bytes().all(|b| b.is_ascii_digit()) => {
            r.get().parse::<u64>().unwrap_or(u64::MAX)
        }
        Some(r) => uint(r, "max_count")?,
    };
    Ok(count.min(MAX_MAX_COUNT))
}

/// Names the JSON type of a raw value, for error texts.
fn kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn expected_version(raw: Option<JsonText<'_>>) -> Result<ExpectedVersion, Rejection> {
    let raw = required(raw, "version")?;
    if raw.get() == "\"any\"" {
        return Ok(ExpectedVersion::Any);
    }
    if raw.get().starts_with('"') {
        return Err(Rejection::malformed(
            "version",
            format!("must be an integer >= 0 or \"any\", got {}", raw.get()),
        ));
    }
    uint(raw, "version").map(|v| ExpectedVersion::Exact(Version(v)))
}

fn event_id(raw: Option<JsonText<'_>>, field: &str) -> Result<Option<EventId>, Rejection> {
    let Some(raw) = raw else { return Ok(None) };
    let text = string(raw, field)?;
    EventId::parse(&text)
        .map(Some)
        .ok_or_else(|| Rejection::malformed(field, format!("{text:?} is not a UUID")))
}

fn metadata<'a>(raw: Option<JsonText<'a>>, field: &str) -> Result<Option<JsonText<'a>>, Rejection> {
    match raw {
        Some(r) if !r.get().starts_with('{') => Err(Rejection::malformed(
            field,
            format!("must be a JSON object, got {}", kind(r.get())),
        )),
        other => Ok(other),
    }
}

/// `{}`, the default `event_data`.
fn empty_object() -> JsonText<'static> {
    JsonText::trusted("{}")
}

/// Field names of one event: bare for the single form, `events[i].` for a
/// batch element (built only when an error needs it).
#[derive(Clone, Copy)]
enum Prefix {
    Single,
    Element(usize),
}

impl Prefix {
    fn field(self, name: &str) -> String {
        match self {
            Prefix::Single => name.to_owned(),
            Prefix::Element(i) => format!("events[{i}].{name}"),
        }
    }
}

fn event_spec<'a>(
    event_type: Option<JsonText<'a>>,
    data: Payload<'a>,
    meta: Option<JsonText<'a>>,
    id: Option<JsonText<'a>>,
    prefix: Prefix,
) -> Result<NewEvent<'a>, Rejection> {
    let with_field =
        |name: &'static str| move |r: Rejection| Rejection::malformed(&prefix.field(name), r.text);
    Ok(NewEvent {
        event_type: non_empty_string(event_type, "").map_err(with_field("event_type"))?,
        data: match data.0 {
            Some(d) => d,
            None => empty_object(),
        },
        metadata: metadata(meta, "").map_err(with_field("metadata"))?,
        id: event_id(id, "").map_err(with_field("event_id"))?,
    })
}

fn batch<'a>(raw: JsonText<'a>, line: Line<'_>) -> Result<Vec<NewEvent<'a>>, Rejection> {
    if !raw.get().starts_with('[') {
        return Err(Rejection::malformed(
            "events",
            format!("must be an array of event objects, got {}", kind(raw.get())),
        ));
    }
    let items =
        elements(raw).map_err(|e| Rejection::malformed("events", line.error_in(raw.get(), &e)))?;
    if items.is_empty() {
        return Err(Rejection::malformed(
            "events",
            "must hold at least one event",
        ));
    }
    if items.len() > MAX_BATCH_EVENTS {
        return Err(Rejection::malformed(
            "events",
            format!(
                "holds {} events, more than the limit of {MAX_BATCH_EVENTS}",
                items.len()
            ),
        ));
    }
    let mut specs = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let field = || format!("events[{i}]");
        if !item.get().starts_with('{') {
            return Err(Rejection::malformed(
                &field(),
                format!("must be an object, got {}", kind(item.get())),
            ));
        }
        let e = RawEvent::parse(item)
            .map_err(|e| Rejection::malformed(&field(), line.error_in(item.get(), &e)))?;
        let spec = event_spec(
            e.event_type,
            e.event_data,
            e.metadata,
            e.event_id,
            Prefix::Element(i),
        )?;
        if let Some(id) = spec.id
            && specs.iter().any(|s: &NewEvent<'_>| s.id == Some(id))
        {
            return Err(Rejection::malformed(
                &format!("{}.event_id", field()),
                format!("{id} appears twice in the batch"),
            ));
        }
        specs.push(spec);
    }
    Ok(specs)
}

fn append<'a>(b: &RawBody<'a>, line: Line<'_>) -> Result<Request<'a>, Rejection> {
    let aggregate_id = non_empty_string(b.aggregate_id, "aggregate_id")?;
    let events = match b.events {
        Some(raw) => {
            let single = [
                ("event_type", b.event_type.is_some()),
                ("event_data", b.event_data.0.is_some()),
                ("metadata", b.metadata.is_some()),
                ("event_id", b.event_id.is_some()),
            ];
            if let Some((name, _)) = single.iter().find(|(_, given)| *given) {
                return Err(Rejection::malformed(
                    "events",
                    format!(
                        "cannot be combined with {name}: give either the single-event fields or an events array"
                    ),
                ));
            }
            Events::Batch(batch(raw, line)?)
        }
        None => Events::One(event_spec(
            b.event_type,
            b.event_data,
            b.metadata,
            b.event_id,
            Prefix::Single,
        )?),
    };
    let expected = expected_version(b.version)?;
    let prepared = EventStore::prepare(&aggregate_id, events.as_slice())
        .map_err(|e| Rejection::malformed(&e.field, e.problem))?;
    Ok(Request::Append {
        aggregate_id,
        expected,
        prepared: Some(prepared),
        aggregate: None,
        batch: events.is_batch(),
    })
}

/// Checks every field of a body; `line` is the line it came on (error
/// positions count within it).
pub(crate) fn decode_body<'a>(b: &RawBody<'a>, line: Line<'_>) -> Result<Request<'a>, Rejection> {
    let kind_raw = required(b.kind, "type")?;
    let message_type = string(kind_raw, "type")?;
    let aggregate = || non_empty_string(b.aggregate_id, "aggregate_id");
    match &*message_type {
        "append" => append(b, line),
        "create_snapshot" => Ok(Request::CreateSnapshot {
            aggregate_id: aggregate()?,
            expected: optional_uint(b.version, "version")?.map(Version),
            state: b.state.0,
        }),
        "read_snapshot" => Ok(Request::ReadSnapshot {
            aggregate_id: aggregate()?,
        }),
        "replay" => Ok(Request::Replay {
            aggregate_id: aggregate()?,
            use_snapshot: match b.use_snapshot.map(JsonText::get) {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(Rejection::malformed(
                        "use_snapshot",
                        format!("must be a boolean, got {}", kind(other)),
                    ));
                }
            },
        }),
        "get_state" => {
            let aggregate_id = aggregate()?;
            let raw = required(b.timestamp, "timestamp")?;
            let text = string(raw, "timestamp")?;
            let at = Timestamp::parse_rfc3339(&text)
                .map_err(|e| Rejection::malformed("timestamp", e))?;
            Ok(Request::GetState {
                aggregate_id,
                at,
                timestamp: raw,
            })
        }
        "read_stream" => Ok(Request::ReadStream {
            aggregate_id: aggregate()?,
            from_version: Version(optional_uint(b.from_version, "from_version")?.unwrap_or(1)),
            max_count: max_count(b.max_count)?,
        }),
        "read_all" => Ok(Request::ReadAll {
            from_sequence: SequenceNumber(
                optional_uint(b.from_sequence, "from_sequence")?.unwrap_or(1),
            ),
            max_count: max_count(b.max_count)?,
            filter: filter(b)?.map(Arc::new),
        }),
        "subscribe" => Ok(Request::Subscribe {
            from_sequence: optional_uint(b.from_sequence, "from_sequence")?.map(SequenceNumber),
            filter: Arc::new(filter(b)?.unwrap_or_default()),
        }),
        "unsubscribe" => Ok(Request::Unsubscribe {
            subscription: uint(required(b.subscription, "subscription")?, "subscription")?,
        }),
        "init" => {
            let node_id = non_empty_string(b.node_id, "node_id")?;
            let ids = required(b.node_ids, "node_ids")?;
            if serde_json::from_str::<Vec<Cow<'_, str>>>(ids.get()).is_err() {
                return Err(Rejection::malformed(
                    "node_ids",
                    "must be an array of strings",
                ));
            }
            Ok(Request::Init { node_id })
        }
        other => Err(Rejection {
            code: Code::NotSupported,
            text: format!("type: unknown message type {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode;

    fn request(body: &str) -> Result<Request<'static>, Rejection> {
        let line: &'static str =
            Box::leak(format!(r#"{{"src":"c","dest":"n","body":{body}}}"#).into_boxed_str());
        match decode(line.as_bytes()) {
            Message::Envelope(e) => e.request,
            Message::Unanswerable(why) => panic!("unanswerable: {why}"),
        }
    }

    fn rejection(body: &str) -> (Code, String) {
        let r = request(body).expect_err("should be rejected");
        (r.code, r.text)
    }

    #[test]
    fn decodes_the_seed_append() {
        let r = request(
            r#"{"type":"append","msg_id":1,"aggregate_id":"user-123","event_type":"UserCreated","event_data":{"name":"John"},"version":0}"#,
        )
        .unwrap();
        let Request::Append {
            aggregate_id,
            expected,
            prepared,
            batch,
            ..
        } = r
        else {
            panic!()
        };
        let prepared = prepared.unwrap();
        let events = prepared.as_slice();
        assert_eq!(aggregate_id, "user-123");
        assert_eq!(expected, ExpectedVersion::Exact(Version(0)));
        assert!(!batch);
        assert_eq!(&*events[0].text, r#"UserCreated{"name":"John"}"#);
        assert_eq!(events[0].type_len, 11);
    }

    #[test]
    fn field_errors_name_the_field() {
        let cases = [
            (
                r#"{"type":"append","aggregate_id":"a","event_type":"T","version":-1}"#,
                "version",
            ),
            (
                r#"{"type":"append","aggregate_id":"a","event_type":"T","version":"5"}"#,
                "version",
            ),
            (
                r#"{"type":"append","aggregate_id":"a","event_type":"T"}"#,
                "version: missing",
            ),
            (
                r#"{"type":"append","aggregate_id":"","event_type":"T","version":0}"#,
                "aggregate_id",
            ),
            (
                r#"{"type":"append","aggregate_id":7,"event_type":"T","version":0}"#,
                "aggregate_id",
            ),
            (
                r#"{"type":"append","aggregate_id":"a","event_type":"","version":0}"#,
                "event_type",
            ),
            (
                r#"{"type":"append","aggregate_id":"a","event_type":"T","version":0,"metadata":[]}"#,
                "metadata",
            ),
            (
                r#"{"type":"append","aggregate_id":"a","event_type":"T","version":0,"event_id":"x"}"#,
                "event_id",
            ),
            (
                r#"{"type":"append","aggregate_id":"a","version":0,"events":[]}"#,
                "events",
            ),
            (
                r#"{"type":"append","aggregate_id":"a","version":0,"events":[{"event_type":""}]}"#,
                "events[0].event_type",
            ),
            (
                r#"{"type":"append","aggregate_id":"a","event_type":"T","version":0,"events":[{"event_type":"T"}]}"#,
                "events: cannot be combined",
            ),
            (r#"{"type":"read_all","max_count":1.5}"#, "max_count"),
            (
                r#"{"type":"replay","aggregate_id":"a","use_snapshot":"yes"}"#,
                "use_snapshot",
            ),
            (
                r#"{"type":"get_state","aggregate_id":"a","timestamp":"noon"}"#,
                "timestamp",
            ),
            (r#"{"msg_id":3}"#, "type: missing"),
        ];
        for (body, field) in cases {
            let (code, text) = rejection(body);
            assert_eq!(code, Code::MalformedRequest, "{body}");
            assert!(text.starts_with(field), "{body}: {text}");
        }
    }

    #[test]
    fn duplicate_ids_in_a_batch_are_rejected() {
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        let body = format!(
            r#"{{"type":"append","aggregate_id":"a","version":0,"events":[{{"event_type":"T","event_id":"{id}"}},{{"event_type":"T","event_id":"{id}"}}]}}"#
        );
        let (_, text) = rejection(&body);
        assert!(text.starts_with("events[1].event_id"), "{text}");
    }

    #[test]
    fn unknown_type_is_code_10() {
        assert_eq!(rejection(r#"{"type":"dance"}"#).0, Code::NotSupported);
    }

    #[test]
    fn bad_msg_id_is_reported_without_an_id() {
        let line = br#"{"src":"c","body":{"type":"read_all","msg_id":-4}}"#;
        let Message::Envelope(e) = decode(line) else {
            panic!()
        };
        assert_eq!(e.msg_id, None);
        assert!(e.request.unwrap_err().text.starts_with("msg_id"));
    }

    #[test]
    fn max_count_is_capped_and_defaults() {
        let Ok(Request::ReadAll { max_count, .. }) =
            request(r#"{"type":"read_all","max_count":99999}"#)
        else {
            panic!()
        };
        assert_eq!(max_count, MAX_MAX_COUNT);
        let Ok(Request::ReadAll {
            max_count,
            from_sequence,
            ..
        }) = request(r#"{"type":"read_all"}"#)
        else {
            panic!()
        };
        assert_eq!(
            (max_count, from_sequence),
            (DEFAULT_MAX_COUNT, SequenceNumber(1))
        );
    }

    #[test]
    fn numbers_follow_the_contract() {
        let read_all = |extra: &str| request(&format!(r#"{{"type":"read_all"{extra}}}"#));
        let Ok(Request::ReadAll {
            max_count,
            from_sequence,
            ..
        }) = read_all(r#","max_count":99999999999999999999999,"from_sequence":-0"#)
        else {
            panic!()
        };
        assert_eq!(
            (max_count, from_sequence),
            (MAX_MAX_COUNT, SequenceNumber(0))
        );
        let Ok(Request::ReadAll { max_count, .. }) = read_all(r#","max_count":-0"#) else {
            panic!()
        };
        assert_eq!(max_count, 0);
        for (extra, text) in [
            (
                r#","max_count":-99999999999999999999999"#,
                "max_count: must be an integer >= 0, got -99999999999999999999999",
            ),
            (
                r#","max_count":1.0"#,
                "max_count: must be an integer >= 0, got 1.0",
            ),
            (
                r#","from_sequence":1e3"#,
                "from_sequence: must be an integer >= 0, got 1e3",
            ),
            (
                r#","from_sequence":18446744073709551616"#,
                "from_sequence: 18446744073709551616 is out of range (at most 18446744073709551615)",
            ),
        ] {
            assert_eq!(read_all(extra).unwrap_err().text, text, "{extra}");
        }
        let Ok(Request::Append { expected, .. }) =
            request(r#"{"type":"append","aggregate_id":"a","event_type":"T","version":-0}"#)
        else {
            panic!()
        };
        assert_eq!(expected, ExpectedVersion::Exact(Version(0)));
        let line = br#"{"src":"c","body":{"type":"read_all","msg_id":-0}}"#;
        let Message::Envelope(e) = decode(line) else {
            panic!()
        };
        assert_eq!(e.msg_id, Some(0));
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped() {
        let line = b"\xEF\xBB\xBF{\"src\":\"c\",\"body\":{\"type\":\"read_all\",\"msg_id\":3,\"max_count\":1,\"max_count\":1}}";
        let Message::Envelope(e) = decode(line) else {
            panic!()
        };
        assert_eq!(e.msg_id, Some(3));
        // The column counts the mark's three bytes: within the line as sent.
        assert_eq!(
            e.request.unwrap_err().text,
            "body: duplicate field `max_count` at line 1 column 76"
        );
        assert!(matches!(decode(b"\xEF\xBB\xBF"), Message::Unanswerable(_)));
        assert!(matches!(
            decode(b"\xEF\xBB\xBF\xEF\xBB\xBF{\"src\":\"c\",\"body\":{}}"),
            Message::Unanswerable(_)
        ));
    }

    #[test]
    fn unanswerable_lines() {
        for line in [
            &b"not json"[..],
            b"[1]",
            br#"{"body":{}}"#,
            br#"{"src":1,"body":{}}"#,
            br#"{"src":"c","body":5}"#,
            b"\xff\xfe",
            b"",
        ] {
            assert!(
                matches!(decode(line), Message::Unanswerable(_)),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn duplicate_body_field_gets_an_error_reply_with_msg_id() {
        let line =
            br#"{"src":"c","body":{"type":"read_all","msg_id":9,"max_count":1,"max_count":2}}"#;
        let Message::Envelope(e) = decode(line) else {
            panic!()
        };
        assert_eq!(e.msg_id, Some(9));
        assert_eq!(e.request.unwrap_err().code, Code::MalformedRequest);
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let Ok(Request::ReadStream { aggregate_id, .. }) =
            request(r#"{"type":"read_stream","aggregate_id":"a\"b\u00e9"}"#)
        else {
            panic!()
        };
        assert_eq!(aggregate_id, "a\"bé");
    }

    #[test]
    fn null_payload_is_kept_and_null_option_is_absent() {
        let Ok(Request::Append { prepared, .. }) = request(
            r#"{"type":"append","aggregate_id":"a","event_type":"T","event_data":null,"metadata":null,"version":0}"#,
        ) else {
            panic!()
        };
        let Some(Prepared::One(event)) = prepared else {
            panic!()
        };
        assert_eq!(&*event.text, "Tnull");
    }
}

//! Fuzz target `node_lines`: a whole node session, one line at a time.
//!
//! A fresh [`Core`] over a fresh [`EventStore`] handles each line of the
//! input in turn (`Core::handle`, the serial path of `--workers 1`). The
//! target checks the contract of `/work/shared/PROTOCOL.md`:
//!
//! - nothing panics (debug assertions of the engine are on: `cargo fuzz`
//!   builds with `-C debug-assertions` unless `-O`);
//! - a line's output is one reply line followed by any number of `event`
//!   message lines, each ending in a newline; a line gets exactly one reply
//!   when it is a JSON object with a string `src` and an object `body`, and
//!   none (but a one-line stderr diagnostic, and no `event` message)
//!   otherwise;
//! - every reply is JSON `{"src","dest","body"}` going back to the sender,
//!   `body.type` is a reply type of the protocol (and the one that answers
//!   the request's type, or `error`), `in_reply_to` echoes a valid `msg_id`
//!   and is left out otherwise, and the body's fields are the protocol's, in
//!   its order (`subscribed`: `subscription`, `head`; `unsubscribed`:
//!   `subscription`; `all_read`: `events`, `next_sequence` only when a
//!   filter is given, `head`);
//! - bad input does not change stored data: only an `appended` reply may
//!   move the head, by exactly the events it reports;
//! - text must be Unicode: a request holding a lone surrogate escape
//!   (`"\ud800"` without a low half after it, a lone `"\udc00"`) anywhere
//!   gets error 12 saying "lone surrogate" (or the `msg_id` error, checked
//!   first), with `in_reply_to` whenever `msg_id` is readable; one whose
//!   `src` holds one gets no reply; valid pairs are text like any other;
//! - a leading UTF-8 byte-order mark is skipped; `-0` is 0;
//! - replies agree with the store (sequence numbers, ids, versions);
//! - `read_all` pages: an unfiltered page holds the events from
//!   `from_sequence` on, as many as `max_count` allows; a filtered one
//!   (`category`, `aggregate_id`, `event_types`) equals a naive scan that
//!   looks at the log from `from_sequence` (at least 1) until it has
//!   `max_count` matches, reaches the head or has looked at 100,000 events,
//!   and `next_sequence` is `from_sequence` plus the number looked at; a
//!   filter of the wrong type or an empty one is error 12;
//! - subscriptions, against a model of the live ones (id, subscriber, the
//!   `src` of its `subscribed` reply, filter, first sequence number):
//!   `subscribe` gets `subscribed` with the next id (1, 2, ..., never
//!   reused) and the head, unless a field is bad (error 12) or 1,000 are
//!   live (error 11); `unsubscribe` of a live id gets `unsubscribed`, of
//!   any other error 20; every `event` message has the shape
//!   `{"src","dest","body":{"type":"event","subscription","event"}}` with
//!   the event in the protocol's field order and equal to the stored one,
//!   goes to a live subscription's subscriber from that subscription's
//!   `src`, and its event matches the subscription's filter and is at or
//!   after its first sequence number; `subscribed` is followed by exactly
//!   the catch-up (the matching stored events from `from_sequence` to the
//!   head, in order), a fresh append by exactly one message per (new event
//!   x matching live subscription), events in order and subscriptions in
//!   id order for each, and every other reply (a retried append included)
//!   by none;
//! - after the session the store's invariants hold: the head equals the
//!   number of events `read_all` returns, sequence numbers are 1..=head, each
//!   aggregate's events have versions 1..n with rising sequence numbers,
//!   event ids are unique, `recorded_at` never goes back, and `replay`
//!   gives the shallow-merge fold of the aggregate's `event_data`.
//!
//! # Input modes
//!
//! The first byte picks the mode:
//!
//! - `< 0x80` (any text, e.g. a JSON line): **raw mode**. The whole input
//!   is split on `\n` and every piece is a line, as the node would see it.
//! - `>= 0x80`: **structured mode**. The remaining bytes drive a small
//!   generator that builds mostly-valid requests from templates (appends,
//!   batches, retries with ids from earlier replies, snapshots, replays,
//!   `get_state` at recorded times, reads (filtered or not), `subscribe`
//!   with or without `from_sequence` and filters, `unsubscribe` of live and
//!   unknown ids, `init`), occasionally hostile ones (filters of the wrong
//!   type, empty strings and arrays among them), and occasionally mutates a line byte-wise. Random bytes rarely
//!   form valid JSON; this mode reaches deep store states quickly.

#![no_main]

use eventstore::IdScheme;
use eventstore::testing::Core;
use eventstore::{EventStore, SequenceNumber};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let mut session = Session::new();
    match data.first() {
        Some(&mode) if mode >= 0x80 => Generator::new(&data[1..]).run(&mut session),
        _ => {
            for line in data.split(|&b| b == b'\n') {
                session.line(line);
            }
        }
    }
    session.check_store();
});

// ---------------------------------------------------------------- JSON view

/// A JSON object as its entries in order, values raw: duplicate keys and key
/// order stay visible (a `serde_json::Value` would hide both).
struct Obj<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Obj<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Obj<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Obj<'a>, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(Obj(entries))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<'a> Obj<'a> {
    fn parse(text: &'a [u8]) -> Option<Obj<'a>> {
        serde_json::from_slice(text).ok()
    }
    fn count(&self, key: &str) -> usize {
        self.0.iter().filter(|(k, _)| k == key).count()
    }
    /// The value of `key` when it occurs exactly once.
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        let mut found = self.0.iter().filter(|(k, _)| k == key);
        match (found.next(), found.next()) {
            (Some((_, v)), None) => Some(*v),
            _ => None,
        }
    }
    fn has_duplicates(&self) -> bool {
        let mut seen = HashSet::new();
        !self.0.iter().all(|(k, _)| seen.insert(k.as_str()))
    }
    /// Whether a key the node reads occurs twice (it ignores other keys).
    fn has_duplicate_fields(&self) -> bool {
        REQUEST_FIELDS.iter().any(|k| self.count(k) > 1)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
    fn string(&self, key: &str) -> Option<String> {
        self.get(key)
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    }
    fn u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| uint(v.get()))
    }
}

/// A JSON integer >= 0 fitting in u64, written as plain digits (or `-0`,
/// which is 0).
fn uint(text: &str) -> Option<u64> {
    if text == "-0" {
        Some(0)
    } else if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

// ------------------------------------------------------- lone surrogates

/// Where the escapes of lone surrogates start in JSON text (valid JSON:
/// backslashes only occur in strings). Written apart from the node's own
/// check, as an oracle.
fn lone_surrogates(text: &[u8]) -> Vec<usize> {
    let unit = |at: usize| -> Option<u32> {
        let hex = text.get(at..at + 6)?;
        if &hex[..2] != b"\\u" {
            return None;
        }
        u32::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'\\' {
            i += 1;
            continue;
        }
        match unit(i) {
            Some(0xD800..=0xDBFF) if matches!(unit(i + 6), Some(0xDC00..=0xDFFF)) => i += 12,
            Some(0xD800..=0xDFFF) => {
                found.push(i);
                i += 6;
            }
            Some(_) => i += 6,
            None => i += 2,
        }
    }
    found
}

/// A line as the oracle reads it: without a leading byte-order mark, and
/// with every lone surrogate escape replaced by `\ufffd` (same length, so
/// offsets stay), which serde_json can decode.
struct View {
    text: Vec<u8>,
    lone: Vec<usize>,
}

impl View {
    fn new(line: &[u8]) -> View {
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        let lone = if std::str::from_utf8(line).is_ok()
            && serde_json::from_slice::<IgnoredAny>(line).is_ok()
        {
            lone_surrogates(line)
        } else {
            Vec::new()
        };
        let mut text = line.to_vec();
        for &at in &lone {
            text[at..at + 6].copy_from_slice(b"\\ufffd");
        }
        View { text, lone }
    }

    /// Whether `part` (a slice of the view's text) holds a lone surrogate.
    fn has_lone(&self, part: &RawValue) -> bool {
        let start = part.get().as_ptr() as usize - self.text.as_ptr() as usize;
        let end = start + part.get().len();
        self.lone.iter().any(|at| (start..end).contains(at))
    }
}

fn is_string(raw: &RawValue) -> bool {
    raw.get().starts_with('"')
}

/// Two JSON strings name the same text (decoded; raw when undecodable).
fn same_string(a: &RawValue, b: &RawValue) -> bool {
    match (
        serde_json::from_str::<String>(a.get()),
        serde_json::from_str::<String>(b.get()),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.get() == b.get(),
    }
}

// ---------------------------------------------------------------- oracle

const REPLY_TYPES: &[&str] = &[
    "appended",
    "concurrency_error",
    "snapshot_created",
    "snapshot_read",
    "replayed",
    "state",
    "stream_read",
    "all_read",
    "subscribed",
    "unsubscribed",
    "init_ok",
    "error",
];

/// Every body field a request may carry.
const REQUEST_FIELDS: &[&str] = &[
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

/// The reply type answering a request type (besides `error`).
fn answer_to(request_type: &str) -> Option<&'static [&'static str]> {
    Some(match request_type {
        "append" => &["appended", "concurrency_error"],
        "create_snapshot" => &["snapshot_created", "concurrency_error"],
        "read_snapshot" => &["snapshot_read"],
        "replay" => &["replayed"],
        "get_state" => &["state"],
        "read_stream" => &["stream_read"],
        "read_all" => &["all_read"],
        "subscribe" => &["subscribed"],
        "unsubscribe" => &["unsubscribed"],
        "init" => &["init_ok"],
        _ => return None,
    })
}

/// An optional field as the node reads it: `null` counts as not given.
fn optional<'a>(b: &Obj<'a>, key: &str) -> Option<&'a RawValue> {
    b.get(key).filter(|v| v.get() != "null")
}

/// A filter of `read_all` and `subscribe`, decoded (an oracle written apart
/// from `eventstore::Filter`).
#[derive(Debug, Clone, Default)]
struct Filter {
    category: Option<String>,
    aggregate_id: Option<String>,
    event_types: Option<Vec<String>>,
}

impl Filter {
    /// The filter fields of a request: `Ok(None)` when none is given,
    /// `Err(field)` when one is of the wrong type or empty.
    fn of(b: &Obj<'_>) -> Result<Option<Filter>, &'static str> {
        let text = |key: &'static str| match optional(b, key) {
            None => Ok(None),
            Some(v) => match serde_json::from_str::<String>(v.get()) {
                Ok(s) if !s.is_empty() => Ok(Some(s)),
                _ => Err(key),
            },
        };
        let filter = Filter {
            category: text("category")?,
            aggregate_id: text("aggregate_id")?,
            event_types: match optional(b, "event_types") {
                None => None,
                Some(v) => match serde_json::from_str::<Vec<String>>(v.get()) {
                    Ok(types) if !types.is_empty() => Some(types),
                    _ => return Err("event_types"),
                },
            },
        };
        let given = filter.category.is_some()
            || filter.aggregate_id.is_some()
            || filter.event_types.is_some();
        Ok(given.then_some(filter))
    }

    /// `user` matches `user` and `user-...`, not `users-1`.
    fn matches(&self, aggregate_id: &str, event_type: &str) -> bool {
        let category = self.category.as_ref().is_none_or(|c| {
            aggregate_id == c
                || (aggregate_id.len() > c.len()
                    && aggregate_id.starts_with(c.as_str())
                    && aggregate_id.as_bytes()[c.len()] == b'-')
        });
        let aggregate = self.aggregate_id.as_ref().is_none_or(|a| a == aggregate_id);
        let types = self
            .event_types
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|t| t == event_type));
        category && aggregate && types
    }
}

/// `from_sequence` (`subscribe`, `read_all`): `Err` when it is not an
/// integer >= 0.
fn from_sequence(b: &Obj<'_>) -> Result<Option<u64>, ()> {
    optional(b, "from_sequence")
        .map(|v| uint(v.get()).ok_or(()))
        .transpose()
}

/// `max_count`: default 1,000; any integer >= 0, above 10,000 counting as
/// 10,000.
fn max_count(b: &Obj<'_>) -> Result<u64, ()> {
    match optional(b, "max_count") {
        None => Ok(1_000),
        Some(v) if v.get() == "-0" => Ok(0),
        Some(v) if v.get().bytes().all(|c| c.is_ascii_digit()) && !v.get().is_empty() => {
            Ok(v.get().parse::<u64>().map_or(10_000, |n| n.min(10_000)))
        }
        Some(_) => Err(()),
    }
}

/// Most events a filtered `read_all` looks at.
const LOOK_LIMIT: u64 = 100_000;

/// A live subscription, as the model knows it.
#[derive(Debug)]
struct Sub {
    id: u64,
    /// The `subscribe` request's `src` (decoded): whom its messages go to.
    client: String,
    /// The `src` of its `subscribed` reply (decoded): whom they come from.
    node: String,
    filter: Filter,
    /// The first sequence number it wants (at least 1).
    from: u64,
}

/// Which `event` messages may follow a reply line.
enum Follow {
    /// None.
    Nothing,
    /// Those of an `appended` reply: one per (new event, matching live
    /// subscription); none for a retry.
    Append,
    /// Subscription `id`'s catch-up, up to `head`.
    CatchUp { id: u64, head: u64 },
}

/// What the protocol says a line must get.
enum Expect<'a> {
    /// No reply (and one stderr line).
    Nothing,
    /// Exactly one reply to this envelope.
    Reply(Request<'a>),
    /// The protocol leaves it open (duplicate envelope keys, undecodable
    /// keys): still at most one reply, and a valid one.
    Unknown,
}

struct Request<'a> {
    src: &'a RawValue,
    dest: Option<&'a RawValue>,
    /// `Some(Some(id))`: must be echoed; `Some(None)`: must be left out;
    /// `None`: undecided (duplicate `msg_id`).
    msg_id: Option<Option<u64>>,
    /// The body, when no field the node reads occurs twice (only then are
    /// field checks made) and the line is Unicode.
    body: Option<Obj<'a>>,
    /// The line holds a lone surrogate: error 12 (or the `msg_id` error).
    lone: bool,
}

fn expect(view: &View) -> Expect<'_> {
    let line = &view.text[..];
    let Ok(text) = std::str::from_utf8(line) else {
        return Expect::Nothing; // JSON text is UTF-8
    };
    if serde_json::from_str::<IgnoredAny>(text).is_err() {
        return Expect::Nothing; // not JSON at all
    }
    let Some(top) = Obj::parse(line) else {
        let first = line.iter().find(|b| !b.is_ascii_whitespace());
        return if first == Some(&b'{') {
            Expect::Unknown // an object whose keys serde cannot decode
        } else {
            Expect::Nothing // JSON, not an object
        };
    };
    if ["src", "dest", "body"].iter().any(|k| top.count(k) > 1) {
        return Expect::Unknown;
    }
    let src = top.get("src").filter(|s| is_string(s));
    let body = top.get("body").filter(|b| b.get().starts_with('{'));
    let (Some(src), Some(body_raw)) = (src, body) else {
        return Expect::Nothing;
    };
    if view.has_lone(src) {
        return Expect::Nothing; // a src that is not Unicode
    }
    let lone = !view.lone.is_empty();
    let body = Obj::parse(body_raw.get().as_bytes());
    let msg_id = match &body {
        None => None,
        Some(b) => match b.count("msg_id") {
            0 => Some(None),
            1 => Some(b.get("msg_id").and_then(|v| uint(v.get()))),
            _ => None,
        },
    };
    Expect::Reply(Request {
        src,
        // A dest that is not Unicode is not echoed.
        dest: top
            .get("dest")
            .filter(|d| is_string(d) && !view.has_lone(d)),
        msg_id,
        body: body.filter(|b| !b.has_duplicate_fields() && !lone),
        lone,
    })
}

// ---------------------------------------------------------------- session

/// `FUZZ_TRACE=1` prints every line and its reply to stderr (for reading a
/// crash or a corpus entry: `FUZZ_TRACE=1 fuzz/target/.../node_lines FILE`).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some_and(|v| v != "0"))
}

struct Session {
    core: Core,
    store: Arc<EventStore>,
    /// The node id `init` set (decoded).
    node_id: Option<String>,
    /// Every aggregate id a request named (decoded).
    aggregates: HashSet<String>,
    /// Event ids seen in replies, for the generator's retries.
    seen_ids: Vec<String>,
    /// `recorded_at` values seen in replies, for the generator's `get_state`.
    seen_times: Vec<String>,
    /// The live subscriptions, in id order.
    subs: Vec<Sub>,
    /// The id of the last subscription made (0: none yet).
    last_sub: u64,
    lines: usize,
}

impl Session {
    fn new() -> Session {
        // A fixed id scheme: the same input gives the same ids on every run.
        let store = Arc::new(EventStore::with_id_scheme(IdScheme::from_parts(
            0x0123_4567_89ab_cdef,
            [1, 2, 3, 4],
        )));
        Session {
            core: Core::new(Arc::clone(&store)),
            store,
            node_id: None,
            aggregates: HashSet::new(),
            seen_ids: Vec::new(),
            seen_times: Vec::new(),
            subs: Vec::new(),
            last_sub: 0,
            lines: 0,
        }
    }

    fn line(&mut self, line: &[u8]) {
        self.lines += 1;
        let head_before = self.store.head().0;
        let mut out = Vec::new();
        let diagnostic = self.core.handle(line, &mut out);
        let head_after = self.store.head().0;
        let view = View::new(line);
        let expected = expect(&view);
        if trace() {
            eprintln!("> {}", String::from_utf8_lossy(line));
            eprintln!("< {}", String::from_utf8_lossy(&out).trim_end());
        }
        if let Expect::Reply(Request { body: Some(b), .. }) = &expected
            && let Some(agg) = b.string("aggregate_id")
            && !agg.is_empty()
        {
            self.aggregates.insert(agg);
        }
        let show = || String::from_utf8_lossy(line).into_owned();

        // A reply line, then `event` message lines, each ending in a newline.
        assert!(
            out.is_empty() || out.last() == Some(&b'\n'),
            "line {:?}: output does not end in a newline: {:?}",
            show(),
            String::from_utf8_lossy(&out)
        );
        if out.is_empty() {
            assert!(
                !matches!(expected, Expect::Reply(_)),
                "no reply to an answerable line {:?} (stderr: {diagnostic:?})",
                show()
            );
            let d = diagnostic
                .unwrap_or_else(|| panic!("line {:?}: no reply and no diagnostic", show()));
            assert!(!d.contains('\n'), "diagnostic is more than one line: {d:?}");
            assert_eq!(
                head_after,
                head_before,
                "an unanswered line {:?} changed the store",
                show()
            );
            return;
        }
        assert!(
            diagnostic.is_none(),
            "line {:?} got a reply and a diagnostic {diagnostic:?}",
            show()
        );
        assert!(
            !matches!(expected, Expect::Nothing),
            "a line that is not an envelope got a reply: {:?} -> {:?}",
            show(),
            String::from_utf8_lossy(&out)
        );
        let mut lines = out[..out.len() - 1].split(|&b| b == b'\n');
        let reply = lines.next().unwrap_or_default();
        let follow = self.check_reply(line, &expected, reply, head_before, head_after);
        let messages: Vec<&[u8]> = lines.collect();
        self.check_messages(line, reply, &messages, follow, head_before, head_after);
    }

    /// The `event` messages after a reply: each well-formed and for a live
    /// subscription, and together exactly those `follow` calls for.
    fn check_messages(
        &mut self,
        line: &[u8],
        reply: &[u8],
        messages: &[&[u8]],
        follow: Follow,
        before: u64,
        after: u64,
    ) {
        let ctx = |m: &[u8]| {
            format!(
                "\n  line:    {:?}\n  reply:   {:?}\n  message: {:?}",
                String::from_utf8_lossy(line),
                String::from_utf8_lossy(reply),
                String::from_utf8_lossy(m)
            )
        };
        let store = Arc::clone(&self.store);
        let wanted: Vec<(u64, u64)> = match follow {
            Follow::Nothing => Vec::new(),
            Follow::Append => {
                let mut pairs = Vec::new();
                for seq in before + 1..=after {
                    let e = store.event(SequenceNumber(seq)).unwrap();
                    for sub in &self.subs {
                        if seq >= sub.from && sub.filter.matches(e.aggregate_id(), e.event_type()) {
                            pairs.push((sub.id, seq));
                        }
                    }
                }
                pairs
            }
            Follow::CatchUp { id, head } => {
                let sub = self.subs.iter().find(|s| s.id == id).unwrap();
                (sub.from..=head)
                    .filter(|&seq| {
                        let e = store.event(SequenceNumber(seq)).unwrap();
                        sub.filter.matches(e.aggregate_id(), e.event_type())
                    })
                    .map(|seq| (id, seq))
                    .collect()
            }
        };
        let mut got = Vec::with_capacity(messages.len());
        for &m in messages {
            got.push(self.check_message(m, &|| ctx(m)));
        }
        if got != wanted {
            let first = got.iter().zip(&wanted).position(|(g, w)| g != w);
            panic!(
                "event messages (subscription, sequence number): got {} {:?}, want {} {:?} (first difference at {first:?}){}",
                got.len(),
                &got[..got.len().min(20)],
                wanted.len(),
                &wanted[..wanted.len().min(20)],
                ctx(b"")
            );
        }
    }

    /// One `event` message: its shape, its subscription, its event.
    /// Returns (subscription, sequence number).
    fn check_message(&mut self, m: &[u8], ctx: &dyn Fn() -> String) -> (u64, u64) {
        serde_json::from_slice::<IgnoredAny>(m)
            .unwrap_or_else(|e| panic!("event message is not JSON ({e}){}", ctx()));
        let top = Obj::parse(m).unwrap_or_else(|| panic!("event message not an object{}", ctx()));
        assert_eq!(
            top.keys(),
            ["src", "dest", "body"],
            "event message envelope keys{}",
            ctx()
        );
        let body = Obj::parse(top.get("body").unwrap().get().as_bytes())
            .unwrap_or_else(|| panic!("event message body is not an object{}", ctx()));
        assert_eq!(
            body.keys(),
            ["type", "subscription", "event"],
            "event message body keys{}",
            ctx()
        );
        assert_eq!(
            body.string("type").as_deref(),
            Some("event"),
            "event message type{}",
            ctx()
        );
        let id = body
            .u64("subscription")
            .unwrap_or_else(|| panic!("event message subscription is not a u64{}", ctx()));
        let sub = self
            .subs
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("event message of subscription {id}, not live{}", ctx()));
        let string = |key: &str| serde_json::from_str::<String>(top.get(key).unwrap().get()).ok();
        assert_eq!(
            string("dest").as_ref(),
            Some(&sub.client),
            "event message not to the subscriber{}",
            ctx()
        );
        assert_eq!(
            string("src").as_ref(),
            Some(&sub.node),
            "event message not from the subscribed reply's src{}",
            ctx()
        );
        let event = Obj::parse(body.get("event").unwrap().get().as_bytes())
            .unwrap_or_else(|| panic!("event message event is not an object{}", ctx()));
        let seq = event
            .u64("sequence_number")
            .unwrap_or_else(|| panic!("event message sequence_number{}", ctx()));
        let (from, filter) = (sub.from, sub.filter.clone());
        self.check_event(&event, seq, ctx);
        assert!(
            seq >= from,
            "event {seq} before the subscription's first {from}{}",
            ctx()
        );
        let stored = self.store.event(SequenceNumber(seq)).unwrap();
        assert!(
            filter.matches(stored.aggregate_id(), stored.event_type()),
            "event {seq} does not match the subscription's filter {filter:?}{}",
            ctx()
        );
        (id, seq)
    }

    /// An event object of a reply or message against the stored event `seq`.
    fn check_event(&mut self, e: &Obj<'_>, seq: u64, ctx: &dyn Fn() -> String) {
        self.note_event(e);
        let stored = self
            .store
            .event(SequenceNumber(seq))
            .unwrap_or_else(|| panic!("event {seq} is not stored{}", ctx()));
        assert_eq!(
            e.u64("sequence_number"),
            Some(seq),
            "sequence_number{}",
            ctx()
        );
        assert_eq!(
            e.string("event_id"),
            Some(stored.id().to_string()),
            "event {seq}: event_id{}",
            ctx()
        );
        assert_eq!(
            e.string("aggregate_id").as_deref(),
            Some(stored.aggregate_id()),
            "event {seq}: aggregate_id{}",
            ctx()
        );
        assert_eq!(
            e.u64("version"),
            Some(stored.version().0),
            "event {seq}: version{}",
            ctx()
        );
        assert_eq!(
            e.string("event_type").as_deref(),
            Some(stored.event_type()),
            "event {seq}: event_type{}",
            ctx()
        );
        let same_json = |got: Option<&RawValue>, want: Option<&str>| match (got, want) {
            (None, None) => true,
            (Some(g), Some(w)) => {
                g.get() == w
                    || matches!(
                        (serde_json::from_str::<Value>(g.get()), serde_json::from_str::<Value>(w)),
                        (Ok(a), Ok(b)) if a == b
                    )
            }
            _ => false,
        };
        assert!(
            same_json(e.get("event_data"), Some(stored.data())),
            "event {seq}: event_data{}",
            ctx()
        );
        assert!(
            same_json(e.get("metadata"), stored.metadata()),
            "event {seq}: metadata{}",
            ctx()
        );
    }

    fn check_reply(
        &mut self,
        line: &[u8],
        expected: &Expect<'_>,
        reply: &[u8],
        before: u64,
        after: u64,
    ) -> Follow {
        let ctx = || {
            format!(
                "\n  line:  {:?}\n  reply: {:?}",
                String::from_utf8_lossy(line),
                String::from_utf8_lossy(reply)
            )
        };
        serde_json::from_slice::<IgnoredAny>(reply)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}){}", ctx()));
        let top = Obj::parse(reply).unwrap_or_else(|| panic!("reply is not an object{}", ctx()));
        assert_eq!(
            top.keys(),
            ["src", "dest", "body"],
            "reply envelope keys{}",
            ctx()
        );
        let body = Obj::parse(top.get("body").unwrap().get().as_bytes())
            .unwrap_or_else(|| panic!("reply body is not an object{}", ctx()));
        assert!(
            !body.has_duplicates(),
            "duplicate keys in reply body{}",
            ctx()
        );
        let keys = body.keys();
        assert_eq!(
            keys.first(),
            Some(&"type"),
            "reply body must start with type{}",
            ctx()
        );
        let rtype = body
            .string("type")
            .unwrap_or_else(|| panic!("reply type is not a string{}", ctx()));
        assert!(
            REPLY_TYPES.contains(&rtype.as_str()),
            "unknown reply type {rtype:?}{}",
            ctx()
        );
        let in_reply_to = body.get("in_reply_to");
        let mut rest = &keys[1..];
        if in_reply_to.is_some() {
            assert_eq!(
                rest.first(),
                Some(&"in_reply_to"),
                "in_reply_to must follow type{}",
                ctx()
            );
            rest = &rest[1..];
        }
        let echoed = in_reply_to
            .map(|v| uint(v.get()).unwrap_or_else(|| panic!("in_reply_to not a u64{}", ctx())));

        // Only an appended reply may move the head.
        if rtype != "appended" {
            assert_eq!(
                after,
                before,
                "a {rtype} reply, yet the head moved{}",
                ctx()
            );
        }
        // Fields of each reply type, in the protocol's order.
        let fields: &[&str] = match rtype.as_str() {
            "appended" if body.get("event_ids").is_some() => {
                &["event_ids", "sequence_numbers", "version"]
            }
            "appended" => &["event_id", "sequence_number"],
            "concurrency_error" => &["error"],
            "snapshot_created" => &["aggregate_id", "version"],
            "snapshot_read" => &["aggregate_id", "version", "state"],
            "replayed" if body.get("snapshot_version").is_some() => &[
                "aggregate_id",
                "snapshot_version",
                "events_replayed",
                "state",
            ],
            "replayed" => &["aggregate_id", "events_replayed", "state"],
            "state" => &["aggregate_id", "timestamp", "state"],
            "stream_read" => &["aggregate_id", "version", "events"],
            "all_read" if body.get("next_sequence").is_some() => {
                &["events", "next_sequence", "head"]
            }
            "all_read" => &["events", "head"],
            "subscribed" => &["subscription", "head"],
            "unsubscribed" => &["subscription"],
            "init_ok" => &[],
            _ => &["code", "text"],
        };
        assert_eq!(rest, fields, "fields of a {rtype} reply{}", ctx());
        if rtype == "error" {
            let code = body.u64("code");
            assert!(
                matches!(code, Some(10 | 11 | 12 | 20 | 22)),
                "error code {code:?}{}",
                ctx()
            );
            assert!(
                body.string("text").is_some(),
                "error text is not a string{}",
                ctx()
            );
        }

        // What may follow: the model needs the request of a subscription
        // reply (the node refuses what the oracle cannot read).
        let follow = match rtype.as_str() {
            "appended" => Follow::Append,
            _ => Follow::Nothing,
        };
        let readable = matches!(expected, Expect::Reply(Request { body: Some(_), .. }));
        assert!(
            readable || !matches!(rtype.as_str(), "subscribed" | "unsubscribed"),
            "a {rtype} reply to a request the protocol refuses{}",
            ctx()
        );
        let Expect::Reply(req) = expected else {
            return follow;
        };
        // `init` names the node, its own reply included.
        if rtype == "init_ok" {
            self.node_id = req.body.as_ref().and_then(|b| b.string("node_id"));
            assert!(
                self.node_id.is_some(),
                "init_ok without a string node_id{}",
                ctx()
            );
        }
        // Back to the sender, from the addressee / node id / "eventstore".
        let dest = top.get("dest").unwrap();
        assert!(
            same_string(dest, req.src),
            "reply dest is not the request's src{}",
            ctx()
        );
        let src = top.get("src").unwrap();
        match (req.dest, &self.node_id) {
            (Some(d), _) => assert!(
                same_string(src, d),
                "reply src is not the request's dest{}",
                ctx()
            ),
            (None, Some(id)) => assert_eq!(
                serde_json::from_str::<String>(src.get()).ok().as_ref(),
                Some(id),
                "reply src is not the node id{}",
                ctx()
            ),
            (None, None) => assert_eq!(src.get(), "\"eventstore\"", "reply src{}", ctx()),
        }
        if let Some(msg_id) = req.msg_id {
            assert_eq!(
                echoed,
                msg_id,
                "in_reply_to vs the request's msg_id{}",
                ctx()
            );
        }
        if req.lone {
            let text = body.string("text").unwrap_or_default();
            assert!(
                rtype == "error"
                    && body.u64("code") == Some(12)
                    && (text.contains("lone surrogate") || text.starts_with("msg_id: ")),
                "a request holding a lone surrogate got no error 12 saying so{}",
                ctx()
            );
        }
        let Some(rb) = &req.body else { return follow };
        if rtype == "error" {
            self.check_error(rb, &body, &ctx);
            return follow;
        }
        let Some(qtype) = rb.string("type") else {
            panic!(
                "a non-error reply to a request without a string type{}",
                ctx()
            );
        };
        let answers = answer_to(&qtype)
            .unwrap_or_else(|| panic!("unknown request type answered with {rtype}{}", ctx()));
        assert!(
            answers.contains(&rtype.as_str()),
            "{qtype} answered with {rtype}{}",
            ctx()
        );
        match rtype.as_str() {
            "subscribed" => {
                let node = serde_json::from_str::<String>(top.get("src").unwrap().get())
                    .unwrap_or_else(|_| panic!("subscribed src{}", ctx()));
                let client = serde_json::from_str::<String>(req.src.get())
                    .unwrap_or_else(|_| panic!("subscribe src{}", ctx()));
                self.subscribed(rb, &body, node, client, before, after, &ctx)
            }
            "unsubscribed" => {
                self.unsubscribed(rb, &body, &ctx);
                follow
            }
            _ => {
                self.check_against_store(rb, &body, &rtype, before, after, &ctx);
                follow
            }
        }
    }

    /// A `subscribed` reply: the next id, the head, a valid request; the
    /// model gains the subscription.
    #[allow(clippy::too_many_arguments)]
    fn subscribed(
        &mut self,
        req: &Obj<'_>,
        body: &Obj<'_>,
        node: String,
        client: String,
        before: u64,
        after: u64,
        ctx: &dyn Fn() -> String,
    ) -> Follow {
        let filter = Filter::of(req)
            .unwrap_or_else(|field| panic!("subscribed despite a bad {field}{}", ctx()))
            .unwrap_or_default();
        let from = from_sequence(req)
            .unwrap_or_else(|_| panic!("subscribed despite a bad from_sequence{}", ctx()));
        assert!(
            self.subs.len() < 1_000,
            "a 1,001st live subscription{}",
            ctx()
        );
        let id = body.u64("subscription");
        assert_eq!(id, Some(self.last_sub + 1), "subscription id{}", ctx());
        let head = body.u64("head");
        assert_eq!(head, Some(before), "subscribed head{}", ctx());
        assert_eq!(after, before, "subscribe moved the head{}", ctx());
        let id = self.last_sub + 1;
        self.last_sub = id;
        self.subs.push(Sub {
            id,
            client,
            node,
            filter,
            // 0 and 1 both mean the first event; none: only new events.
            from: from.map_or(before + 1, |f| f.max(1)),
        });
        Follow::CatchUp { id, head: before }
    }

    /// An `unsubscribed` reply: a live subscription, the one asked for; the
    /// model loses it.
    fn unsubscribed(&mut self, req: &Obj<'_>, body: &Obj<'_>, ctx: &dyn Fn() -> String) {
        let id = body
            .u64("subscription")
            .unwrap_or_else(|| panic!("unsubscribed subscription{}", ctx()));
        assert_eq!(
            optional(req, "subscription").and_then(|v| uint(v.get())),
            Some(id),
            "unsubscribed names another subscription than asked{}",
            ctx()
        );
        let at = self
            .subs
            .iter()
            .position(|s| s.id == id)
            .unwrap_or_else(|| panic!("unsubscribed a subscription that is not live{}", ctx()));
        self.subs.remove(at);
    }

    /// An error reply to a readable request: errors 11 and 20 only where
    /// the protocol has them; `subscribe`, `unsubscribe` and filtered reads
    /// refused exactly when the protocol says.
    fn check_error(&self, req: &Obj<'_>, body: &Obj<'_>, ctx: &dyn Fn() -> String) {
        let code = body.u64("code");
        let text = body.string("text").unwrap_or_default();
        // The msg_id is checked first; its error says nothing of the rest.
        let msg_id_error = code == Some(12) && text.starts_with("msg_id");
        let qtype = req.string("type");
        let full = self.subs.len() >= 1_000;
        match qtype.as_deref() {
            Some("subscribe") => {
                let valid = Filter::of(req).is_ok() && from_sequence(req).is_ok();
                if code == Some(11) {
                    assert!(
                        full,
                        "error 11 with {} live subscriptions{}",
                        self.subs.len(),
                        ctx()
                    );
                }
                if valid && !msg_id_error {
                    assert!(
                        full && code == Some(11),
                        "a valid subscribe refused{}",
                        ctx()
                    );
                }
                if !valid {
                    assert!(
                        code == Some(12),
                        "a bad subscribe got error {code:?}{}",
                        ctx()
                    );
                }
            }
            Some("unsubscribe") if !msg_id_error => {
                match optional(req, "subscription").map(|v| uint(v.get())) {
                    Some(Some(id)) => {
                        assert!(
                            !self.subs.iter().any(|s| s.id == id),
                            "unsubscribe of live subscription {id} refused{}",
                            ctx()
                        );
                        assert_eq!(code, Some(20), "unsubscribe of unknown {id}{}", ctx());
                    }
                    _ => assert_eq!(code, Some(12), "unsubscribe without an id{}", ctx()),
                }
            }
            Some("read_all") => {
                if Filter::of(req).is_err() {
                    assert_eq!(code, Some(12), "read_all with a bad filter{}", ctx());
                }
                assert!(
                    code != Some(11) && code != Some(20),
                    "read_all error{}",
                    ctx()
                );
            }
            Some("read_snapshot") => assert!(code != Some(11), "read_snapshot error 11{}", ctx()),
            _ => assert!(
                code != Some(11) && code != Some(20),
                "error {code:?} to a {qtype:?}{}",
                ctx()
            ),
        }
    }

    fn check_against_store(
        &mut self,
        req: &Obj<'_>,
        body: &Obj<'_>,
        rtype: &str,
        before: u64,
        after: u64,
        ctx: &dyn Fn() -> String,
    ) {
        let store = &*self.store;
        let agg = req.string("aggregate_id");
        let version_of = |a: &str| store.stream_sequence_numbers(a).len() as u64;
        if let Some(a) = &agg
            && rtype != "appended"
            && rtype != "all_read"
            && rtype != "subscribed"
            && rtype != "unsubscribed"
            && rtype != "init_ok"
            && rtype != "concurrency_error"
        {
            assert_eq!(
                body.string("aggregate_id").as_ref(),
                Some(a),
                "aggregate_id echo{}",
                ctx()
            );
        }
        match rtype {
            "appended" => {
                let a = agg.unwrap_or_else(|| panic!("appended without aggregate_id{}", ctx()));
                let (ids, seqs): (Vec<String>, Vec<u64>) = if let Some(ids) = body.get("event_ids")
                {
                    let ids: Vec<String> = serde_json::from_str(ids.get()).unwrap();
                    let seqs: Vec<u64> =
                        serde_json::from_str(body.get("sequence_numbers").unwrap().get())
                            .unwrap_or_else(|_| panic!("sequence_numbers{}", ctx()));
                    (ids, seqs)
                } else {
                    let id = body
                        .string("event_id")
                        .unwrap_or_else(|| panic!("event_id{}", ctx()));
                    let seq = body
                        .u64("sequence_number")
                        .unwrap_or_else(|| panic!("sequence_number{}", ctx()));
                    (vec![id], vec![seq])
                };
                assert_eq!(ids.len(), seqs.len(), "ids vs sequence numbers{}", ctx());
                assert!(!seqs.is_empty(), "empty append{}", ctx());
                let grown = after - before;
                if grown == 0 {
                    assert!(
                        seqs.iter().all(|&s| s >= 1 && s <= before),
                        "a retry names unknown events{}",
                        ctx()
                    );
                } else {
                    let fresh: Vec<u64> = (before + 1..=after).collect();
                    assert_eq!(seqs, fresh, "a fresh append's sequence numbers{}", ctx());
                }
                for (id, &seq) in ids.iter().zip(&seqs) {
                    let e = store
                        .event(SequenceNumber(seq))
                        .unwrap_or_else(|| panic!("no event {seq}{}", ctx()));
                    assert_eq!(&e.id().to_string(), id, "event id at {seq}{}", ctx());
                    assert_eq!(e.aggregate_id(), a, "aggregate of event {seq}{}", ctx());
                    self.seen_ids.push(id.clone());
                }
                let last = store.event(SequenceNumber(*seqs.last().unwrap())).unwrap();
                if let Some(v) = body.u64("version") {
                    assert_eq!(v, last.version().0, "batch reply version{}", ctx());
                }
                let first = store.event(SequenceNumber(seqs[0])).unwrap();
                assert_eq!(
                    last.version().0 - first.version().0 + 1,
                    seqs.len() as u64,
                    "an append's events are not consecutive in the aggregate{}",
                    ctx()
                );
            }
            "concurrency_error" => {
                let a = agg
                    .unwrap_or_else(|| panic!("concurrency_error without aggregate_id{}", ctx()));
                let text = body.string("error").unwrap();
                let got = text
                    .rsplit_once(", got ")
                    .and_then(|(_, n)| n.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("concurrency error text {text:?}{}", ctx()));
                assert!(
                    text.starts_with("Expected version "),
                    "concurrency error text{}",
                    ctx()
                );
                assert_eq!(
                    got,
                    version_of(&a),
                    "concurrency error names the current version{}",
                    ctx()
                );
            }
            "snapshot_created" | "snapshot_read" => {
                let a = agg.unwrap();
                let v = body
                    .u64("version")
                    .unwrap_or_else(|| panic!("version{}", ctx()));
                assert!(
                    v <= version_of(&a),
                    "snapshot beyond the aggregate's version{}",
                    ctx()
                );
                if rtype == "snapshot_created" {
                    assert_eq!(
                        v,
                        version_of(&a),
                        "snapshot not at the current version{}",
                        ctx()
                    );
                }
            }
            "replayed" => {
                let a = agg.unwrap();
                let n = body
                    .u64("events_replayed")
                    .unwrap_or_else(|| panic!("events_replayed{}", ctx()));
                let sv = body
                    .get("snapshot_version")
                    .map(|v| uint(v.get()).unwrap())
                    .unwrap_or(0);
                assert_eq!(
                    sv + n,
                    version_of(&a),
                    "snapshot_version + events_replayed{}",
                    ctx()
                );
            }
            "stream_read" => {
                let a = agg.unwrap();
                let seqs = store.stream_sequence_numbers(&a);
                assert_eq!(
                    body.u64("version"),
                    Some(seqs.len() as u64),
                    "stream_read version{}",
                    ctx()
                );
                let events: Vec<Obj<'_>> = serde_json::from_str(body.get("events").unwrap().get())
                    .unwrap_or_else(|_| panic!("events{}", ctx()));
                let from = req.u64("from_version").unwrap_or(1).max(1);
                for (i, e) in events.iter().enumerate() {
                    let v = from + i as u64;
                    assert_eq!(
                        e.u64("version"),
                        Some(v),
                        "stream_read event version{}",
                        ctx()
                    );
                    assert_eq!(
                        e.u64("sequence_number"),
                        seqs.get(v as usize - 1).map(|s| s.0),
                        "stream_read seq{}",
                        ctx()
                    );
                    assert_eq!(
                        e.string("aggregate_id").as_ref(),
                        Some(&a),
                        "stream_read aggregate{}",
                        ctx()
                    );
                    self.note_event(e);
                }
            }
            "all_read" => {
                assert_eq!(body.u64("head"), Some(after), "all_read head{}", ctx());
                assert_eq!(after, before, "read_all moved the head{}", ctx());
                let events: Vec<Obj<'_>> = serde_json::from_str(body.get("events").unwrap().get())
                    .unwrap_or_else(|_| panic!("events{}", ctx()));
                let filter = Filter::of(req)
                    .unwrap_or_else(|field| panic!("all_read despite a bad {field}{}", ctx()));
                let from = from_sequence(req)
                    .unwrap_or_else(|_| panic!("all_read despite a bad from_sequence{}", ctx()))
                    .unwrap_or(1)
                    .max(1);
                let max = max_count(req)
                    .unwrap_or_else(|_| panic!("all_read despite a bad max_count{}", ctx()));
                assert_eq!(
                    body.get("next_sequence").is_some(),
                    filter.is_some(),
                    "next_sequence comes exactly with a filter{}",
                    ctx()
                );
                let (wanted, next): (Vec<u64>, Option<u64>) = match &filter {
                    None => {
                        let n = if from > after {
                            0
                        } else {
                            (after - from + 1).min(max)
                        };
                        ((from..from + n).collect(), None)
                    }
                    // The naive scan.
                    Some(f) => {
                        let (mut found, mut looked) = (Vec::new(), 0);
                        let mut seq = from;
                        while (found.len() as u64) < max && seq <= after && looked < LOOK_LIMIT {
                            let e = store.event(SequenceNumber(seq)).unwrap();
                            if f.matches(e.aggregate_id(), e.event_type()) {
                                found.push(seq);
                            }
                            looked += 1;
                            seq += 1;
                        }
                        (found, Some(from + looked))
                    }
                };
                let got: Vec<u64> = events
                    .iter()
                    .map(|e| e.u64("sequence_number").unwrap_or(0))
                    .collect();
                assert_eq!(got, wanted, "all_read page ({filter:?}){}", ctx());
                assert_eq!(
                    body.u64("next_sequence"),
                    next,
                    "all_read next_sequence ({filter:?}){}",
                    ctx()
                );
                for (e, seq) in events.iter().zip(wanted) {
                    self.check_event(e, seq, ctx);
                }
            }
            _ => {}
        }
    }

    fn note_event(&mut self, e: &Obj<'_>) {
        let keys = e.keys();
        let expected: &[&str] = if e.get("metadata").is_some() {
            &[
                "sequence_number",
                "event_id",
                "aggregate_id",
                "version",
                "event_type",
                "event_data",
                "metadata",
                "recorded_at",
            ]
        } else {
            &[
                "sequence_number",
                "event_id",
                "aggregate_id",
                "version",
                "event_type",
                "event_data",
                "recorded_at",
            ]
        };
        assert_eq!(keys, expected, "event fields");
        if let Some(t) = e.string("recorded_at") {
            self.seen_times.push(t);
        }
        if let Some(id) = e.string("event_id") {
            self.seen_ids.push(id);
        }
    }

    /// The store's invariants after the session.
    fn check_store(&self) {
        let store = &*self.store;
        let head = store.head().0;
        let all = store.read_all(SequenceNumber(1), usize::MAX);
        assert_eq!(all.head.0, head, "read_all head");
        assert_eq!(all.events.len() as u64, head, "head vs number of events");
        let mut ids = HashSet::new();
        let mut by_aggregate: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        let mut last_time = i64::MIN;
        for (i, e) in all.events.iter().enumerate() {
            let seq = i as u64 + 1;
            assert_eq!(
                e.sequence_number.0, seq,
                "sequence numbers are not 1..=head"
            );
            assert!(ids.insert(e.id()), "event id {} stored twice", e.id());
            let t = e.recorded_at().as_micros();
            assert!(t >= last_time, "recorded_at went back at {seq}");
            last_time = t;
            by_aggregate.entry(e.aggregate_id()).or_default().push(seq);
        }
        let mut total = 0;
        for (&agg, seqs) in &by_aggregate {
            let stream: Vec<u64> = store
                .stream_sequence_numbers(agg)
                .iter()
                .map(|s| s.0)
                .collect();
            assert_eq!(&stream, seqs, "aggregate {agg:?}: stream vs log");
            total += stream.len() as u64;
            let mut state = serde_json::Map::new();
            let mut foldable = true;
            for (i, &seq) in stream.iter().enumerate() {
                let e = store.event(SequenceNumber(seq)).expect("event in stream");
                assert_eq!(
                    e.version().0,
                    i as u64 + 1,
                    "aggregate {agg:?}: versions are not 1..n"
                );
                assert_eq!(e.aggregate_id(), agg);
                match serde_json::from_str::<Value>(e.data()) {
                    Ok(Value::Object(m)) => state.extend(m),
                    Ok(_) => {}
                    Err(_) => foldable = false,
                }
            }
            // The fold, checked when serde_json can model the data.
            let replay = store.replay(agg, false);
            assert_eq!(
                replay.events_replayed,
                stream.len() as u64,
                "aggregate {agg:?}: events replayed"
            );
            assert!(
                serde_json::from_str::<IgnoredAny>(&replay.state).is_ok(),
                "aggregate {agg:?}: replay state is not JSON: {:?}",
                replay.state
            );
            if foldable {
                let got = serde_json::from_str::<Value>(&replay.state).unwrap_or_else(|e| {
                    panic!("aggregate {agg:?}: replay state {:?}: {e}", replay.state)
                });
                assert_eq!(
                    got,
                    Value::Object(state),
                    "aggregate {agg:?}: replay state is not the fold"
                );
            }
        }
        assert_eq!(total, head, "events in aggregates vs head");
        for agg in &self.aggregates {
            if !by_aggregate.contains_key(agg.as_str()) {
                assert!(
                    store.stream_sequence_numbers(agg).is_empty(),
                    "aggregate {agg:?} has events the log lacks"
                );
            }
        }
    }
}

// ---------------------------------------------------------------- generator

/// Reads the fuzzer's bytes as choices (zeros when they run out).
struct Generator<'a> {
    data: &'a [u8],
    pos: usize,
    history: Vec<Vec<u8>>,
    msg_id: u64,
}

/// The valid aggregate ids come first.
const VALID_AGGREGATES: usize = 9;
const AGGREGATES: &[&str] = &[
    r#""a""#,
    r#""b""#,
    r#""a""#,
    r#""c""#,
    r#""ab""#,
    r#""user-1""#,
    r#""user""#,
    r#""users-1""#,
    r#""user-eu-1""#,
    r#""a\u0062""#,
    r#""ü""#,
    r#""x\"y""#,
    r#""""#,
    r#"7"#,
    r#"null"#,
    r#""a\nb""#,
    r#""\ud83d\ude00""#,
    r#""a\udc00""#,
    r#""\uD800b""#,
];
const EVENT_TYPES: &[&str] = &[
    r#""T""#,
    r#""Created""#,
    r#""Renamed""#,
    r#""T""#,
    r#""""#,
    r#"5"#,
    r#""t\u00e9""#,
    r#""T\ud800""#,
    r#""\ud83d\ude00""#,
];
const DATA: &[&str] = &[
    r#"{}"#,
    r#"{"k":1}"#,
    r#"{"k":2,"m":[1,2]}"#,
    r#"{"name":"John","age":41}"#,
    r#"{"k":null}"#,
    r#"null"#,
    r#"[1,2]"#,
    r#""s""#,
    r#"42"#,
    r#"{"a":{"b":{"c":1}}}"#,
    r#"{"k":1,"k":2}"#,
    r#"{"\u006b":3}"#,
    r#"{"":1}"#,
    r#"{"é":"\u00e9"}"#,
    r#"1e400"#,
    r#"-0"#,
    r#"{"k":1.5e3}"#,
    r#"{ "sp" : [ ] }"#,
    r#"{"big":123456789012345678901234567890}"#,
    r#"true"#,
    r#"{"\udc00":1,"b":2}"#,
    r#"{"k":"\ud800"}"#,
    r#"{"\ud83d\ude00":"\uD83D\uDE00"}"#,
    r#""\ud800\u0041""#,
    r#"["\ud800\ud800\udc00"]"#,
    r#"{"a":{"\uDBFF":"\udfff"}}"#,
];
const METADATA: &[&str] = &[
    r#"{"m":1}"#,
    r#"{}"#,
    r#"{"user":"u"}"#,
    r#"[]"#,
    r#""x""#,
    r#"null"#,
    r#"{"\ud800":1}"#,
    r#"{"m":"\ud83d\ude00"}"#,
];
const UUIDS: &[&str] = &[
    "67e55044-10b1-426f-9247-bb680e5fe0c8",
    "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    "6ba7b811-9dad-11d1-80b4-00c04fd430c8",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "67E55044-10B1-426F-9247-BB680E5FE0C8",
    "67e5504410b1426f9247bb680e5fe0c8",
    "not-a-uuid",
];
const TIMESTAMPS: &[&str] = &[
    "2026-11-24T06:21:45.123456Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "0000-01-01T00:00:00Z",
    "2100-01-01T00:00:00+14:00",
    "2020-02-29T12:00:00.5-05:30",
    "2021-02-29T00:00:00Z",
    "2016-12-31T23:59:60Z",
    "2026-11-24t06:21:45z",
    "2026-11-24 06:21:45Z",
    "2026-11-24T06:21:45.1234567890Z",
    "2026-11-24T06:21:45.Z",
    "noon",
    "2026-11-24T06:21:45",
    "2026-11-24T24:00:00Z",
    "2026-11-24T06:21:45+24:00",
    "9999-12-31T23:59:59-23:59",
];
const HOSTILE_UINTS: &[&str] = &[
    "-1",
    "1.5",
    "\"5\"",
    "null",
    "18446744073709551615",
    "18446744073709551616",
    "true",
    "1e2",
    "[]",
    "{}",
    "-0",
    "0",
];
/// Filter values: valid ones, then hostile ones (`null` is "not given").
const CATEGORIES: &[&str] = &[
    r#""user""#,
    r#""a""#,
    r#""user-eu""#,
    r#""ab""#,
    r#""\u0075ser""#,
    r#""us""#,
    r#""user-""#,
    r#""b""#,
];
const HOSTILE_CATEGORIES: &[&str] = &[
    r#""""#,
    "7",
    r#"["user"]"#,
    "true",
    "{}",
    "null",
    r#""\ud800""#,
    r#""user\u0000""#,
];
const HOSTILE_AGGREGATE_FILTERS: &[&str] = &[r#""""#, "5", "[]", r#"{"a":1}"#, "null", "false"];
const EVENT_TYPE_FILTERS: &[&str] = &[
    r#"["T"]"#,
    r#"["Created","Renamed"]"#,
    r#"["T","T"]"#,
    r#"["Renamed"]"#,
    r#"[""]"#,
    r#"["t\u00e9"]"#,
    r#"["Created","x"]"#,
    r#"["\u0054"]"#,
];
const HOSTILE_EVENT_TYPE_FILTERS: &[&str] = &[
    "[]",
    r#""T""#,
    "[1]",
    r#"["T",null]"#,
    "{}",
    "0",
    "null",
    r#"["\ud800"]"#,
    r#"[["T"]]"#,
];
const MUTATION_BYTES: &[u8] = b"{}[]\",:\\ \t\r0-1aZ\x00\xff\xc3";

impl<'a> Generator<'a> {
    fn new(data: &'a [u8]) -> Self {
        Generator {
            data,
            pos: 0,
            history: Vec::new(),
            msg_id: 0,
        }
    }
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.byte() as usize % xs.len()]
    }
    /// Mostly true: valid choices come from the low values of a byte.
    fn valid(&mut self) -> bool {
        self.byte() < 224
    }

    fn run(mut self, s: &mut Session) {
        while !self.done() && s.lines < 256 {
            let line = self.next_line(s);
            s.line(&line);
            self.history.push(line);
        }
    }

    fn next_line(&mut self, s: &Session) -> Vec<u8> {
        let op = self.byte() % 18;
        let line = match op {
            13 | 14 if !self.history.is_empty() => {
                let i = self.byte() as usize % self.history.len();
                let mut line = self.history[i].clone();
                if op == 14 {
                    self.mutate(&mut line);
                }
                return line;
            }
            _ => {
                let body = self.body(op, s);
                self.envelope(&body)
            }
        };
        let mut line = line.into_bytes();
        if self.byte() >= 240 {
            self.mutate(&mut line);
        }
        if self.byte() >= 250 {
            // A byte-order mark, as some Windows tools write.
            line.splice(0..0, *b"\xEF\xBB\xBF");
        }
        line
    }

    fn mutate(&mut self, line: &mut Vec<u8>) {
        for _ in 0..1 + self.byte() % 3 {
            let at = if line.is_empty() {
                0
            } else {
                self.byte() as usize * 7 % (line.len() + 1)
            };
            match self.byte() % 4 {
                0 => line.truncate(at),
                1 => {
                    let b = self.pick(MUTATION_BYTES);
                    line.insert(at, b)
                }
                2 if at < line.len() => {
                    line.remove(at);
                }
                _ if at < line.len() => {
                    let b = self.pick(MUTATION_BYTES);
                    line[at] = b
                }
                _ => {}
            }
        }
    }

    fn envelope(&mut self, body: &str) -> String {
        let src = if self.valid() {
            self.pick(&[r#""c1""#, r#""c2""#, r#""c1""#])
        } else {
            self.pick(&[
                r#""\u0063\u0031""#,
                "5",
                "null",
                r#""""#,
                r#""c\ud800""#,
                r#""\ud83d\ude00""#,
            ])
        };
        let dest = if self.valid() {
            self.pick(&[r#","dest":"n1""#, "", r#","dest":"n1""#])
        } else {
            self.pick(&[
                r#","dest":7"#,
                r#","dest":null"#,
                r#","dest":"n\"2""#,
                r#","extra":[1,{"x":2}]"#,
                r#","dest":"n\udc00""#,
                r#","x\ud800":1"#,
                r#","x":["\udc00"]"#,
            ])
        };
        if self.byte() >= 250 {
            format!(r#"{{"body":{body}{dest},"src":{src}}}"#)
        } else {
            format!(r#"{{"src":{src}{dest},"body":{body}}}"#)
        }
    }

    fn msg_id(&mut self) -> String {
        self.msg_id += 1;
        if self.valid() {
            format!(r#""msg_id":{},"#, self.msg_id)
        } else {
            match self.byte() % 3 {
                0 => String::new(),
                _ => format!(r#""msg_id":{},"#, self.pick(HOSTILE_UINTS)),
            }
        }
    }

    fn aggregate(&mut self) -> &'static str {
        if self.valid() {
            self.pick(&AGGREGATES[..VALID_AGGREGATES])
        } else {
            self.pick(AGGREGATES)
        }
    }

    /// An expected version, usually right for the aggregate.
    fn version(&mut self, s: &Session, agg: &str) -> String {
        let current = serde_json::from_str::<String>(agg)
            .map(|a| s.store.stream_sequence_numbers(&a).len() as u64)
            .unwrap_or(0);
        match self.byte() % 8 {
            0..=3 => current.to_string(),
            4 => "\"any\"".to_owned(),
            5 => current.saturating_sub(1).to_string(),
            6 => (current + 1).to_string(),
            _ => self.pick(HOSTILE_UINTS).to_owned(),
        }
    }

    fn uuid(&mut self, s: &Session) -> String {
        if !s.seen_ids.is_empty() && self.byte().is_multiple_of(2) {
            let i = self.byte() as usize % s.seen_ids.len();
            return s.seen_ids[s.seen_ids.len() - 1 - i].clone();
        }
        self.pick(UUIDS).to_owned()
    }

    /// The single-event fields, each usually valid.
    fn event_fields(&mut self, s: &Session) -> String {
        let mut f = String::new();
        let b = self.byte();
        if b % 16 != 15 {
            let t = if self.valid() {
                self.pick(&EVENT_TYPES[..4])
            } else {
                self.pick(EVENT_TYPES)
            };
            f += &format!(r#""event_type":{t},"#);
        }
        if b & 0x10 == 0 {
            let d = self.pick(DATA);
            f += &format!(r#""event_data":{d},"#);
        }
        if b & 0x20 != 0 {
            let m = self.pick(METADATA);
            f += &format!(r#""metadata":{m},"#);
        }
        if b & 0x40 != 0 {
            let id = self.uuid(s);
            f += &format!(r#""event_id":"{id}","#);
        }
        f
    }

    fn body(&mut self, op: u8, s: &Session) -> String {
        let msg_id = self.msg_id();
        let agg = self.aggregate();
        let mut b = match op {
            0..=3 => {
                let fields = self.event_fields(s);
                let v = self.version(s, agg);
                format!(r#"{{"type":"append",{msg_id}"aggregate_id":{agg},{fields}"version":{v}}}"#)
            }
            4 | 5 => {
                let n = match self.byte() {
                    0..=249 => 1 + self.byte() as usize % 4,
                    250..=253 => 0,
                    _ => 1001,
                };
                let events: Vec<String> = (0..n)
                    .map(|_| {
                        let f = self.event_fields(s);
                        format!("{{{}}}", f.trim_end_matches(','))
                    })
                    .collect();
                let v = self.version(s, agg);
                let both = if self.byte() >= 250 {
                    r#""event_type":"T","#
                } else {
                    ""
                };
                format!(
                    r#"{{"type":"append",{msg_id}"aggregate_id":{agg},{both}"events":[{}],"version":{v}}}"#,
                    events.join(",")
                )
            }
            6 => {
                let mut f = String::new();
                let b = self.byte();
                if b & 1 != 0 {
                    let v = self.version(s, agg);
                    f += &format!(r#","version":{v}"#);
                }
                if b & 2 != 0 {
                    let d = self.pick(DATA);
                    f += &format!(r#","state":{d}"#);
                }
                format!(r#"{{"type":"create_snapshot",{msg_id}"aggregate_id":{agg}{f}}}"#)
            }
            7 => format!(r#"{{"type":"read_snapshot",{msg_id}"aggregate_id":{agg}}}"#),
            8 => {
                let u = self.pick(&[
                    "",
                    r#","use_snapshot":true"#,
                    r#","use_snapshot":false"#,
                    r#","use_snapshot":true"#,
                    r#","use_snapshot":"yes""#,
                    r#","use_snapshot":null"#,
                ]);
                format!(r#"{{"type":"replay",{msg_id}"aggregate_id":{agg}{u}}}"#)
            }
            9 => {
                let t = if !s.seen_times.is_empty() && self.byte().is_multiple_of(2) {
                    let i = self.byte() as usize % s.seen_times.len();
                    s.seen_times[i].clone()
                } else {
                    self.pick(TIMESTAMPS).to_owned()
                };
                let t = if self.valid() {
                    format!("\"{t}\"")
                } else {
                    self.pick(&["5", "null", r#""\u0032026-11-24T06:21:45Z""#])
                        .to_owned()
                };
                format!(r#"{{"type":"get_state",{msg_id}"aggregate_id":{agg},"timestamp":{t}}}"#)
            }
            10 => {
                let f = self.reads();
                format!(
                    r#"{{"type":"read_stream",{msg_id}"aggregate_id":{agg}{}}}"#,
                    f.replace("from_", "from_version")
                )
            }
            11 => {
                let f = self.reads();
                let filters = if self.byte().is_multiple_of(2) {
                    self.filters()
                } else {
                    String::new()
                };
                format!(
                    r#"{{"type":"read_all",{msg_id}"x":0{}{filters}}}"#,
                    f.replace("from_", "from_sequence")
                )
            }
            15 | 16 => {
                let head = s.store.head().0;
                let from = match self.byte() % 8 {
                    0 | 1 => String::new(),
                    2 => ",\"from_sequence\":0".to_owned(),
                    3 => ",\"from_sequence\":1".to_owned(),
                    4 => format!(",\"from_sequence\":{head}"),
                    5 => format!(",\"from_sequence\":{}", head + 1),
                    6 => format!(
                        ",\"from_sequence\":{}",
                        head.saturating_sub(self.byte() as u64 % 4)
                    ),
                    _ if self.valid() => format!(",\"from_sequence\":{}", head + 2),
                    _ => format!(",\"from_sequence\":{}", self.pick(HOSTILE_UINTS)),
                };
                let filters = if !self.byte().is_multiple_of(4) {
                    self.filters()
                } else {
                    String::new()
                };
                // The order of the fields varies.
                if self.byte().is_multiple_of(2) {
                    format!(r#"{{{msg_id}"type":"subscribe"{from}{filters}}}"#)
                } else {
                    format!(r#"{{"type":"subscribe",{msg_id}"x":0{filters}{from}}}"#)
                }
            }
            17 => {
                let id = match self.byte() % 8 {
                    0..=3 if !s.subs.is_empty() => {
                        let i = self.byte() as usize % s.subs.len();
                        s.subs[i].id.to_string()
                    }
                    0..=4 => s.last_sub.to_string(),
                    5 => (s.last_sub + 1).to_string(),
                    6 => "0".to_owned(),
                    _ => self.pick(HOSTILE_UINTS).to_owned(),
                };
                if self.valid() {
                    format!(r#"{{{msg_id}"type":"unsubscribe","subscription":{id}}}"#)
                } else {
                    format!(r#"{{"type":"unsubscribe",{msg_id}"x":0}}"#)
                }
            }
            _ => {
                if self.valid() {
                    let node = self.pick(&[r#""n1""#, r#""n2""#, r#""n\"3""#, r#""""#, "1"]);
                    let ids = self.pick(&[r#"["n1","n2"]"#, "[]", r#"["n1"]"#, r#"[1]"#, "null"]);
                    format!(r#"{{"type":"init",{msg_id}"node_id":{node},"node_ids":{ids}}}"#)
                } else {
                    let t = self.pick(&[r#""dance""#, "5", "null", r#""APPEND""#, r#""append ""#]);
                    format!(r#"{{"type":{t},{msg_id}"aggregate_id":{agg}}}"#)
                }
            }
        };
        if self.byte() >= 245 {
            // A duplicate or unknown field at the end of the body.
            b.pop();
            b += self.pick(&[
                r#","msg_id":77}"#,
                r#","zzz":{"y":[null]}}"#,
                r#","type":"read_all"}"#,
                r#","aggregate_id":"b"}"#,
                r#","category":"a"}"#,
                r#","event_types":["T"]}"#,
                r#","subscription":1}"#,
                r#","\udc00":1}"#,
                r#","zz":"\ud800"}"#,
                r#","\ud83d\ude00":"\ud83d\ude00"}"#,
            ]);
        }
        b
    }

    /// Filter fields (`category`, `aggregate_id`, `event_types`), each
    /// usually valid, starting with a comma.
    fn filters(&mut self) -> String {
        let mut f = String::new();
        let b = self.byte();
        if b & 1 != 0 {
            let v = if self.valid() {
                self.pick(CATEGORIES)
            } else {
                self.pick(HOSTILE_CATEGORIES)
            };
            f += &format!(r#","category":{v}"#);
        }
        if b & 2 != 0 {
            let v = if self.valid() {
                self.pick(&AGGREGATES[..VALID_AGGREGATES])
            } else {
                self.pick(HOSTILE_AGGREGATE_FILTERS)
            };
            f += &format!(r#","aggregate_id":{v}"#);
        }
        if b & 4 != 0 {
            let v = if self.valid() {
                self.pick(EVENT_TYPE_FILTERS)
            } else {
                self.pick(HOSTILE_EVENT_TYPE_FILTERS)
            };
            f += &format!(r#","event_types":{v}"#);
        }
        f
    }

    /// `from_` and `max_count` fields of a read.
    fn reads(&mut self) -> String {
        let mut f = String::new();
        let b = self.byte();
        if b & 1 != 0 {
            let v = if self.valid() {
                (self.byte() % 6).to_string()
            } else {
                self.pick(HOSTILE_UINTS).to_owned()
            };
            f += &format!(r#","from_":{v}"#);
        }
        if b & 2 != 0 {
            let v = if self.valid() {
                (self.byte() % 4).to_string()
            } else {
                self.pick(&[
                    "10001",
                    "99999999999999999999",
                    "18446744073709551615",
                    "-3",
                    "2.0",
                ])
                .to_owned()
            };
            f += &format!(r#","max_count":{v}"#);
        }
        f
    }
}

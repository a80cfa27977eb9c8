//! One event as one NATS message, and back.
//!
//! - subject: the aggregate's ([`super::subject`]);
//! - payload: the event's `event_data`, its JSON text exactly;
//! - headers:
//!   - `Nats-Msg-Id`: the event id (the server's dedupe key: a publish
//!     retried after a lost acknowledgement is stored once);
//!   - `Es-Id`: the event id again (kept on the stored message whatever the
//!     server does with its own headers);
//!   - `Es-Type`: the event type, percent-encoded;
//!   - `Es-Version`: the event's version in its aggregate;
//!   - `Es-Meta`: the metadata JSON text, percent-encoded (absent when the
//!     append gave none);
//!   - `Es-Batch`: `i/n` on every event of an append of `n > 1` events
//!     (a reader applies the `n` together, as one append).
//!
//! Header values must be printable ASCII without CR/LF, and event types and
//! metadata are any Unicode text, so those two are percent-encoded: every
//! byte outside `0x21..=0x7E`, and `%` itself, becomes `%XX`.

use crate::event::Payload;
use crate::store::ReplicatedEvent;
use crate::types::{EventId, Version};
use async_nats::HeaderMap;
use std::borrow::Cow;
use std::fmt::Write as _;

pub(crate) const ID: &str = "Es-Id";
pub(crate) const TYPE: &str = "Es-Type";
pub(crate) const VERSION: &str = "Es-Version";
pub(crate) const META: &str = "Es-Meta";
pub(crate) const BATCH: &str = "Es-Batch";
/// On a snapshot message: the snapshot's version.
pub(crate) const SNAPSHOT_VERSION: &str = "Es-Snapshot-Version";
/// On a snapshot message: the sequence number of the aggregate's event at
/// that version (0: none), which a view must hold before taking it.
pub(crate) const SNAPSHOT_SEQ: &str = "Es-Snapshot-Seq";

/// Percent-encodes `text` for a header value (see the module docs).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if (0x21..=0x7E).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// [`percent_decode`], borrowing `text` when it holds no escape (the
/// usual case): no allocation.
fn decoded(text: &str) -> Option<Cow<'_, str>> {
    if text.contains('%') {
        percent_decode(text).map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(text))
    }
}

/// Reverses [`percent_encode`]; `None` for text it cannot have made.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The headers of event `index` (of `count`) of an append, at `version`.
pub(crate) fn event_headers(
    payload: &Payload,
    id: EventId,
    version: Version,
    index: usize,
    count: usize,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let id = id.to_string();
    headers.insert("Nats-Msg-Id", id.as_str());
    headers.insert(ID, id.as_str());
    let (event_type, _, meta) = parts(payload);
    headers.insert(TYPE, percent_encode(event_type));
    headers.insert(VERSION, version.0.to_string());
    if !meta.is_empty() {
        headers.insert(META, percent_encode(meta));
    }
    if count > 1 {
        headers.insert(BATCH, format!("{}/{count}", index + 1));
    }
    headers
}

/// A payload's type, data and metadata texts (metadata empty when absent).
pub(crate) fn parts(payload: &Payload) -> (&str, &str, &str) {
    let text = &*payload.text;
    let t = payload.type_len as usize;
    let d = t + payload.data_len as usize;
    (&text[..t], &text[t..d], &text[d..])
}

/// One stored message read back: what the view needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Incoming {
    pub event: ReplicatedEvent,
    pub version: Version,
    /// `(index, count)`, 1-based, for an event of a batch.
    pub batch: Option<(u64, u64)>,
}

/// Reads an event message's headers and payload; `Err` names what is wrong
/// with a message that is not one of ours.
pub(crate) fn read_event(headers: Option<&HeaderMap>, payload: &[u8]) -> Result<Incoming, String> {
    let headers = headers.ok_or("a message without headers")?;
    let get = |name: &str| headers.get(name).map(|v| v.as_str());
    let id = get(ID)
        .and_then(EventId::parse)
        .ok_or_else(|| format!("no valid {ID} header"))?;
    let event_type = get(TYPE)
        .and_then(decoded)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("no valid {TYPE} header"))?;
    let version = get(VERSION)
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("no valid {VERSION} header"))?;
    let metadata = match get(META) {
        None => None,
        Some(m) => Some(decoded(m).ok_or_else(|| format!("an invalid {META} header"))?),
    };
    let batch = match get(BATCH) {
        None => None,
        Some(b) => {
            let parsed = b
                .split_once('/')
                .and_then(|(i, n)| Some((i.parse::<u64>().ok()?, n.parse::<u64>().ok()?)))
                .filter(|&(i, n)| i >= 1 && i <= n && n > 1);
            Some(parsed.ok_or_else(|| format!("an invalid {BATCH} header {b:?}"))?)
        }
    };
    let data =
        std::str::from_utf8(payload).map_err(|_| "a payload that is not UTF-8".to_owned())?;
    serde_json::from_str::<&serde_json::value::RawValue>(data)
        .map_err(|e| format!("a payload that is not JSON: {e}"))?;
    Ok(Incoming {
        event: ReplicatedEvent::new(id, &event_type, data, metadata.as_deref()),
        version: Version(version),
        batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_round_trips_any_text() {
        for text in [
            "",
            "plain",
            "with space",
            "100%",
            "ünï\r\n\t",
            "{\"a\": [1, 2]}",
            "🎉%41",
        ] {
            let encoded = percent_encode(text);
            assert!(
                encoded.bytes().all(|b| (0x21..=0x7E).contains(&b)),
                "{encoded}"
            );
            assert_eq!(percent_decode(&encoded).as_deref(), Some(text));
        }
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ZZ"), None);
    }

    #[test]
    fn an_event_round_trips_through_headers() {
        let data = serde_json::value::RawValue::from_string("{\"n\": 1}".into()).expect("json");
        let meta =
            serde_json::value::RawValue::from_string("{\"by\": \"ünï\"}".into()).expect("json");
        let new = crate::NewEvent::new("Type with space", &data).with_metadata(&meta);
        let payload = Payload::pack(&new);
        let id = EventId::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef);
        let headers = event_headers(&payload, id, Version(3), 1, 2);
        let back = read_event(Some(&headers), data.get().as_bytes()).expect("ours");
        let expected = ReplicatedEvent::new(
            id,
            "Type with space",
            "{\"n\": 1}",
            Some("{\"by\": \"ünï\"}"),
        );
        assert_eq!(back.event, expected);
        assert_eq!(back.version, Version(3));
        assert_eq!(back.batch, Some((2, 2)));
        assert!(read_event(None, b"{}").is_err());
    }
}

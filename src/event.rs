//! Events: what a writer hands in ([`NewEvent`]) and what the store keeps
//! ([`Event`]).
//!
//! An event is stored compactly: its event type, `event_data` and `metadata`
//! are kept as the raw JSON text the writer gave, packed into one heap
//! allocation (`type ‖ data ‖ metadata`, split by two lengths). No
//! `serde_json::Value` tree is built: a tree of a 60-byte object costs
//! several allocations and ~10× the bytes, and raw text round-trips numbers
//! and key order exactly. Its sequence number, version and `recorded_at` are
//! not stored per event: they follow from the append (commit) that holds it
//! (`src/log.rs`), and [`RecordedEvent`] carries them.

use crate::aggregate::Aggregate;
use crate::json;
use crate::time::Timestamp;
use crate::types::{EventId, JsonText, SequenceNumber, Version};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::Arc;

/// An event to append.
#[derive(Clone, Debug)]
pub struct NewEvent<'a> {
    /// Non-empty name of what happened, e.g. `"UserCreated"` (borrowed from
    /// the request when it had no escapes).
    pub event_type: Cow<'a, str>,
    /// The event's payload: any JSON.
    pub data: JsonText<'a>,
    /// Optional metadata: must be a JSON object.
    pub metadata: Option<JsonText<'a>>,
    /// A client-chosen id (for idempotent retries); generated when `None`.
    pub id: Option<EventId>,
}

impl<'a> NewEvent<'a> {
    /// An event with the given type and data, no metadata, generated id.
    pub fn new(event_type: &'a str, data: &'a RawValue) -> NewEvent<'a> {
        NewEvent {
            event_type: Cow::Borrowed(event_type),
            data: data.into(),
            metadata: None,
            id: None,
        }
    }

    /// The same event with a client-chosen id.
    pub fn with_id(self, id: EventId) -> NewEvent<'a> {
        NewEvent {
            id: Some(id),
            ..self
        }
    }

    /// The same event with metadata (a JSON object).
    pub fn with_metadata(self, metadata: &'a RawValue) -> NewEvent<'a> {
        NewEvent {
            metadata: Some(metadata.into()),
            ..self
        }
    }
}

/// A stored event's own texts and client id. Immutable once appended. Its
/// position, version, aggregate and `recorded_at` belong to the append that
/// stored it: read them through [`RecordedEvent`].
#[derive(Debug, Clone)]
pub struct Event {
    /// `event_type ‖ event_data ‖ metadata` (metadata empty when absent: a
    /// JSON object is never zero bytes long).
    payload: Box<str>,
    type_len: u32,
    data_len: u32,
    /// The id the writer gave (or the restored id); `None`: generated from
    /// the sequence number. Boxed: most events have no given id, and the
    /// box keeps this field one word (an inline `Option<EventId>` is 17
    /// bytes, 24 with padding, in every event of the log).
    id: Option<Box<EventId>>,
}

/// The packed text of an event before it has a position (built before an
/// append takes any shared step, see `EventStore::prepare`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub(crate) text: Box<str>,
    pub(crate) type_len: u32,
    pub(crate) data_len: u32,
    pub(crate) id: Option<EventId>,
}

impl Payload {
    /// Packs restored texts (from a durable log) with their id.
    pub(crate) fn restored(event_type: &str, data: &str, metadata: &str, id: EventId) -> Payload {
        let mut text = String::with_capacity(event_type.len() + data.len() + metadata.len());
        text.push_str(event_type);
        text.push_str(data);
        text.push_str(metadata);
        Payload {
            text: text.into_boxed_str(),
            type_len: event_type.len() as u32,
            data_len: data.len() as u32,
            id: Some(id),
        }
    }

    /// Packs an event's texts. The caller has checked that every part fits
    /// in `u32` (see `store::validate`).
    pub(crate) fn pack(e: &NewEvent<'_>) -> Payload {
        let data = e.data.get();
        let meta = e.metadata.map_or("", JsonText::get);
        let mut text = String::with_capacity(e.event_type.len() + data.len() + meta.len());
        text.push_str(&e.event_type);
        text.push_str(data);
        text.push_str(meta);
        Payload {
            text: text.into_boxed_str(),
            type_len: e.event_type.len() as u32,
            data_len: data.len() as u32,
            id: e.id,
        }
    }
}

impl Event {
    pub(crate) fn new(payload: Payload) -> Event {
        Event {
            payload: payload.text,
            type_len: payload.type_len,
            data_len: payload.data_len,
            id: payload.id.map(Box::new),
        }
    }

    /// The id given with the event (`None`: generated).
    pub(crate) fn given_id(&self) -> Option<EventId> {
        self.id.as_deref().copied()
    }

    /// The event type.
    pub fn event_type(&self) -> &str {
        &self.payload[..self.type_len as usize]
    }

    /// The event data, as the JSON text the writer gave.
    pub fn data(&self) -> &str {
        let start = self.type_len as usize;
        &self.payload[start..start + self.data_len as usize]
    }

    /// Whether `other` holds exactly this event's type, data and metadata.
    pub(crate) fn same_text(&self, other: &Event) -> bool {
        self.payload == other.payload
            && self.type_len == other.type_len
            && self.data_len == other.data_len
    }

    /// The metadata JSON object text, if the writer gave one.
    pub fn metadata(&self) -> Option<&str> {
        let start = self.type_len as usize + self.data_len as usize;
        let meta = &self.payload[start..];
        (!meta.is_empty()).then_some(meta)
    }
}

/// An event together with its position in the global log and what its
/// append gave it.
#[derive(Clone, Copy, Debug)]
pub struct RecordedEvent<'a> {
    /// The event's position in the global log.
    pub sequence_number: SequenceNumber,
    event: &'a Event,
    id: EventId,
    version: Version,
    recorded_at: Timestamp,
    aggregate: &'a Arc<Aggregate>,
}

impl std::ops::Deref for RecordedEvent<'_> {
    type Target = Event;
    fn deref(&self) -> &Event {
        self.event
    }
}

impl<'a> RecordedEvent<'a> {
    pub(crate) fn new(
        sequence_number: SequenceNumber,
        event: &'a Event,
        id: EventId,
        version: Version,
        recorded_at: Timestamp,
        aggregate: &'a Arc<Aggregate>,
    ) -> RecordedEvent<'a> {
        RecordedEvent {
            sequence_number,
            event,
            id,
            version,
            recorded_at,
            aggregate,
        }
    }

    /// The stored texts.
    pub fn event(&self) -> &'a Event {
        self.event
    }

    /// The event's id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The aggregate the event belongs to.
    pub fn aggregate_id(&self) -> &'a str {
        self.aggregate.name()
    }

    pub(crate) fn aggregate(&self) -> &'a Arc<Aggregate> {
        self.aggregate
    }

    /// The aggregate's version after this event (1 for its first event).
    pub fn version(&self) -> Version {
        self.version
    }

    /// When the event was appended. Never earlier than the event before it
    /// in sequence order.
    pub fn recorded_at(&self) -> Timestamp {
        self.recorded_at
    }

    /// Appends the protocol's JSON form of this event:
    /// `{"sequence_number","event_id","aggregate_id","version","event_type",
    /// "event_data","metadata"?,"recorded_at"}`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        json::write_key(out, "sequence_number");
        json::write_u64(out, self.sequence_number.0);
        out.extend_from_slice(b",\"event_id\":\"");
        self.id.write_to(out);
        out.extend_from_slice(b"\",");
        json::write_key(out, "aggregate_id");
        json::write_str(out, self.aggregate_id());
        out.push(b',');
        json::write_key(out, "version");
        json::write_u64(out, self.version.0);
        out.push(b',');
        json::write_key(out, "event_type");
        json::write_str(out, self.event_type());
        out.push(b',');
        json::write_key(out, "event_data");
        out.extend_from_slice(self.data().as_bytes());
        if let Some(meta) = self.metadata() {
            out.push(b',');
            json::write_key(out, "metadata");
            out.extend_from_slice(meta.as_bytes());
        }
        out.extend_from_slice(b",\"recorded_at\":\"");
        self.recorded_at.write_rfc3339(out);
        out.extend_from_slice(b"\"}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_event_stays_compact() {
        // Every event costs this in its commit, 8 bytes of index and its
        // packed text; growing it costs ~1 MB per 100k events.
        assert!(std::mem::size_of::<Event>() <= 48);
    }

    #[test]
    fn payload_parts_unpack() {
        let data = RawValue::from_string(r#"{"a":1}"#.into()).unwrap();
        let meta = RawValue::from_string(r#"{"m":2}"#.into()).unwrap();
        let p = Payload::pack(&NewEvent::new("T", &data).with_metadata(&meta));
        assert_eq!(&*p.text, r#"T{"a":1}{"m":2}"#);
        assert_eq!((p.type_len, p.data_len), (1, 7));
    }
}

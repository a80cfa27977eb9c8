//! Newtypes that carry meaning: sequence numbers, versions, event ids and the
//! expected version of an append.
//!
//! They are plain `Copy` wrappers around integers so that a sequence number
//! can never be passed where a version is expected (the two are both `u64` and
//! both start at 1, which makes mixing them up an easy, silent bug).

use std::fmt;

/// Position of an event in the global log: the first event ever appended is
/// `SequenceNumber(1)`, each later one gets the next integer. Dense: no gaps,
/// no duplicates (a rejected append takes none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SequenceNumber(pub u64);

/// Version of an aggregate: the number of events appended to it. A new
/// aggregate is at `Version(0)`; the first event appended to it has
/// `Version(1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version(pub u64);

impl SequenceNumber {
    /// The position before the first event: "nothing appended yet".
    pub const ZERO: SequenceNumber = SequenceNumber(0);

    /// The integer value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl Version {
    /// The version of an aggregate with no events.
    pub const INITIAL: Version = Version(0);

    /// The integer value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a writer believes the aggregate's version to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append only if the aggregate is exactly at this version (optimistic
    /// concurrency: the writer read the aggregate at that version).
    Exact(Version),
    /// Append whatever the current version is.
    Any,
}

impl ExpectedVersion {
    /// Whether an aggregate at `current` satisfies the expectation.
    pub fn matches(self, current: Version) -> bool {
        match self {
            ExpectedVersion::Exact(v) => v == current,
            ExpectedVersion::Any => true,
        }
    }
}

/// One JSON value as text, known to be valid JSON (no surrounding
/// whitespace): an event's data or metadata, a snapshot's state. Stored and
/// written back byte for byte, never parsed into a tree.
///
/// Made from a `serde_json` [`RawValue`](serde_json::value::RawValue)
/// (which serde has validated), by [`JsonText::parse`], or, inside the
/// crate, by the request scanner, which validates what it hands out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct JsonText<'a>(&'a str);

impl<'a> JsonText<'a> {
    /// Checks that `text` is one JSON value (surrounding whitespace is
    /// allowed and left out).
    pub fn parse(text: &'a str) -> Result<JsonText<'a>, serde_json::Error> {
        serde_json::from_str::<&serde_json::value::RawValue>(text).map(JsonText::from)
    }

    /// Text the caller has validated as one JSON value.
    pub(crate) fn trusted(text: &'a str) -> JsonText<'a> {
        debug_assert!(
            serde_json::from_str::<&serde_json::value::RawValue>(text)
                .is_ok_and(|r| r.get() == text),
            "not one JSON value: {text:?}"
        );
        JsonText(text)
    }

    /// The JSON text.
    pub fn get(self) -> &'a str {
        self.0
    }
}

impl<'a> From<&'a serde_json::value::RawValue> for JsonText<'a> {
    fn from(raw: &'a serde_json::value::RawValue) -> JsonText<'a> {
        JsonText(raw.get())
    }
}

impl fmt::Debug for JsonText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Deserialises through serde_json's `RawValue`: works with serde_json's
/// deserializers only.
impl<'de: 'a, 'a> serde::Deserialize<'de> for JsonText<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a serde_json::value::RawValue>::deserialize(d).map(JsonText::from)
    }
}

/// A UUID identifying one event, unique in the whole store.
///
/// Stored as its 16 bytes (alignment 1, so it packs tightly inside `Event`);
/// displayed in canonical lowercase hyphenated form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub [u8; 16]);

impl EventId {
    /// The id as a `u128` (big-endian, as the canonical text reads).
    pub fn as_u128(self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// Builds an id from a `u128` (big-endian).
    pub fn from_u128(v: u128) -> EventId {
        EventId(v.to_be_bytes())
    }

    /// Parses the canonical hyphenated form (any case); `None` if malformed.
    pub fn parse(text: &str) -> Option<EventId> {
        uuid::Uuid::try_parse(text)
            .ok()
            .map(|u| EventId(*u.as_bytes()))
    }

    /// Writes the canonical lowercase hyphenated form (36 bytes).
    pub fn write_to(self, out: &mut Vec<u8>) {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let s = uuid::Uuid::from_bytes(self.0)
            .hyphenated()
            .encode_lower(&mut buf);
        out.extend_from_slice(s.as_bytes());
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        uuid::Uuid::from_bytes(self.0).hyphenated().fmt(f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_version_matches() {
        assert!(ExpectedVersion::Any.matches(Version(7)));
        assert!(ExpectedVersion::Exact(Version(3)).matches(Version(3)));
        assert!(!ExpectedVersion::Exact(Version(3)).matches(Version(4)));
    }

    #[test]
    fn event_id_round_trips_in_canonical_lowercase() {
        let text = "67E55044-10B1-426F-9247-BB680E5FE0C8";
        let id = EventId::parse(text).expect("valid uuid");
        assert_eq!(id.to_string(), text.to_lowercase());
        let mut out = Vec::new();
        id.write_to(&mut out);
        assert_eq!(out, text.to_lowercase().as_bytes());
        assert_eq!(EventId::from_u128(id.as_u128()), id);
    }

    #[test]
    fn event_id_rejects_malformed_text() {
        assert!(EventId::parse("not-a-uuid").is_none());
        assert!(EventId::parse("").is_none());
    }
}

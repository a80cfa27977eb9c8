//! Hooks for a store that is the local *view* of a replicated log (the
//! JetStream backend, `src/jetstream/`): the log lives elsewhere, and this
//! store only mirrors it, in the log's order.
//!
//! Two operations, both narrow:
//!
//! - [`EventStore::precheck_append`] decides an append against the view
//!   without changing it: the same checks, in the same order, as
//!   [`EventStore::append`] (client ids: a retry or a conflict; then the
//!   version), and where the aggregate's last event is, which the writer
//!   sends as its expectation to the log.
//! - [`EventStore::apply_replicated`] puts an append read from the log into
//!   the view at its own sequence number, version, time and ids (through
//!   the recovery path, `restore_append`), then wakes subscribers.
//!
//! Every event of a view carries its id explicitly (the writer chose it
//! before publishing), so all ids are in the client-id index and a retry is
//! recognised whichever front end wrote the original.

use super::append::concurrency;
use super::{Aggregate, Appended, EventStore};
use crate::error::{AppendError, IdConflict};
use crate::event::{Event, Payload};
use crate::store::Prepared;
use crate::time::Timestamp;
use crate::types::{EventId, ExpectedVersion, SequenceNumber, Version};
use std::sync::Arc;

/// What an append would do to the view right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precheck {
    /// A new append: the aggregate is at `version`, its last event at
    /// `last_seq` (0: no events).
    Fresh {
        /// The aggregate's version.
        version: Version,
        /// The sequence number of its last event (0 when it has none).
        last_seq: SequenceNumber,
    },
    /// A retry of an append already in the view: its original positions
    /// (`duplicate: true`).
    Stored(Appended),
}

/// One event of a replicated append, as read from the log: packed at
/// once into the text the store keeps (one allocation, no intermediate
/// strings: a view's events are allocated among its log client's
/// per-message garbage, and every extra allocation of ours there is one
/// more hole for the next event's text to land in, apart from the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatedEvent {
    payload: Payload,
}

impl ReplicatedEvent {
    /// The event `id` (every replicated event has one) of `event_type`,
    /// with `data` (JSON text) and `metadata` (JSON object text), if the
    /// append gave any.
    pub fn new(
        id: EventId,
        event_type: &str,
        data: &str,
        metadata: Option<&str>,
    ) -> ReplicatedEvent {
        ReplicatedEvent {
            payload: Payload::restored(event_type, data, metadata.unwrap_or(""), id),
        }
    }
}

impl EventStore {
    /// Decides an append of `prepared` to `aggregate_id` against this store,
    /// changing nothing: a retry ([`Precheck::Stored`]), an id conflict or
    /// a version mismatch (the errors of [`EventStore::append`]), or a new
    /// append ([`Precheck::Fresh`]).
    pub fn precheck_append(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        prepared: &Prepared,
    ) -> Result<Precheck, AppendError> {
        let aggregate = self.find(aggregate_id);
        let events: Vec<Event> = prepared
            .as_slice()
            .iter()
            .map(|p| {
                Event::new(Payload {
                    text: p.text.clone(),
                    type_len: p.type_len,
                    data_len: p.data_len,
                    id: p.id,
                })
            })
            .collect();
        for (i, e) in events.iter().enumerate() {
            let Some(id) = e.given_id() else { continue };
            let Some(node) = self.client_ids.get(&id).map(|n| *n) else {
                continue;
            };
            let seq = self.stored_id(node, id);
            let Some(stored) = self.recorded(seq) else {
                continue;
            };
            if let Some(a) = aggregate
                .as_ref()
                .filter(|a| i == 0 && Arc::ptr_eq(stored.aggregate(), a))
            {
                return self
                    .retry(a, stored.version(), &events)
                    .map(Precheck::Stored);
            }
            return Err(IdConflict::AlreadyStored {
                id,
                aggregate_id: stored.aggregate_id().to_owned(),
                version: stored.version(),
            }
            .into());
        }
        let (version, last_seq) = self.last_of(aggregate.as_deref());
        if !expected.matches(version) {
            return Err(concurrency(expected, version));
        }
        Ok(Precheck::Fresh { version, last_seq })
    }

    /// The sequence number of an aggregate's event at `version` (0 for
    /// version 0 or an event the store does not hold).
    pub fn position_at(&self, aggregate_id: &str, version: Version) -> SequenceNumber {
        self.find(aggregate_id)
            .and_then(|a| self.seq_at(&a, version))
            .unwrap_or(SequenceNumber::ZERO)
    }

    /// An aggregate's version and the sequence number of its last event
    /// (0 and 0 for an aggregate with no events).
    pub fn last_position(&self, aggregate_id: &str) -> (Version, SequenceNumber) {
        self.last_of(self.find(aggregate_id).as_deref())
    }

    fn last_of(&self, aggregate: Option<&Aggregate>) -> (Version, SequenceNumber) {
        let Some(aggregate) = aggregate else {
            return (Version::INITIAL, SequenceNumber::ZERO);
        };
        let version = self.version_of(self.visible(aggregate));
        let seq = self
            .seq_at(aggregate, version)
            .unwrap_or(SequenceNumber::ZERO);
        (version, seq)
    }

    /// Puts an append read from the replicated log into this view: its
    /// events at sequence numbers `first_seq..`, versions `first_version..`
    /// of `aggregate_id`, recorded at `at` (raised to the previous event's
    /// time if earlier). Fails, changing nothing, when the append does not
    /// continue the view exactly (a gap, or a version out of line).
    pub fn apply_replicated(
        &self,
        aggregate_id: &str,
        first_seq: SequenceNumber,
        first_version: Version,
        events: Vec<ReplicatedEvent>,
        at: Timestamp,
    ) -> Result<(), String> {
        if aggregate_id.is_empty() || events.is_empty() {
            return Err("a replicated append needs an aggregate and events".to_owned());
        }
        let payloads = events.into_iter().map(|e| (e.payload, true)).collect();
        self.restore_append(aggregate_id, first_seq.0, first_version.0, payloads, at)?;
        self.published.notify();
        Ok(())
    }

    /// Puts a snapshot read from the replicated log into this view
    /// (replacing the aggregate's earlier one).
    pub fn apply_replicated_snapshot(
        &self,
        aggregate_id: &str,
        version: Version,
        state: &serde_json::value::RawValue,
    ) {
        // Two front ends may snapshot one aggregate at once, and their
        // snapshots reach the stream in either order: the view keeps the
        // one of the highest version, as one store taking both would.
        if self
            .snapshot_record(aggregate_id)
            .is_some_and(|(_, kept)| kept.version > version)
        {
            return;
        }
        self.restore_snapshot(aggregate_id, version, Some(state));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NewEvent;
    use serde_json::value::RawValue;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).expect("JSON")
    }

    fn replicated(id: u128, event_type: &str) -> ReplicatedEvent {
        ReplicatedEvent::new(EventId::from_u128(id), event_type, "{\"a\":1}", None)
    }

    #[test]
    fn a_view_keeps_the_highest_snapshot_whatever_the_order() {
        use crate::types::ExpectedVersion;
        let view = EventStore::new();
        let data = raw("{\"a\":1}");
        for _ in 0..2 {
            view.append("a-1", ExpectedVersion::Any, &[NewEvent::new("E", &data)])
                .expect("append");
        }
        view.apply_replicated_snapshot("a-1", Version(2), &raw("{\"v\":2}"));
        view.apply_replicated_snapshot("a-1", Version(1), &raw("{\"v\":1}"));
        let kept = view.snapshot("a-1").expect("a snapshot");
        assert_eq!(
            (kept.version, kept.state.as_str()),
            (Version(2), "{\"v\":2}")
        );
    }

    #[test]
    fn a_view_takes_appends_in_line_and_refuses_gaps() {
        let view = EventStore::new();
        let at = Timestamp(1_000_000);
        let one = vec![replicated(1, "A")];
        view.apply_replicated("user-1", SequenceNumber(1), Version(1), one, at)
            .expect("first append");
        let two = vec![replicated(2, "B"), replicated(3, "C")];
        view.apply_replicated("user-2", SequenceNumber(2), Version(1), two, at)
            .expect("a batch");
        assert_eq!(view.head(), SequenceNumber(3));
        let gap = vec![replicated(4, "D")];
        assert!(
            view.apply_replicated("user-1", SequenceNumber(5), Version(2), gap.clone(), at)
                .is_err()
        );
        assert!(
            view.apply_replicated("user-1", SequenceNumber(4), Version(3), gap, at)
                .is_err()
        );
        assert_eq!(
            view.last_position("user-2"),
            (Version(2), SequenceNumber(3))
        );
        assert_eq!(
            view.event(SequenceNumber(2)).map(|e| e.id()),
            Some(EventId::from_u128(2))
        );
    }

    #[test]
    fn precheck_finds_retries_conflicts_and_versions() {
        let view = EventStore::new();
        let at = Timestamp(1_000_000);
        view.apply_replicated(
            "user-1",
            SequenceNumber(1),
            Version(1),
            vec![replicated(7, "A")],
            at,
        )
        .expect("append");
        let data = raw("{\"a\":1}");
        let retry = [NewEvent::new("A", &data).with_id(EventId::from_u128(7))];
        let prepared = EventStore::prepare("user-1", &retry).expect("valid");
        match view.precheck_append("user-1", ExpectedVersion::Exact(Version(0)), &prepared) {
            Ok(Precheck::Stored(a)) => assert!(a.duplicate),
            other => panic!("not a retry: {other:?}"),
        }
        let prepared = EventStore::prepare("user-2", &retry).expect("valid");
        assert!(matches!(
            view.precheck_append("user-2", ExpectedVersion::Any, &prepared),
            Err(AppendError::IdConflict(_))
        ));
        let fresh = [NewEvent::new("B", &data)];
        let prepared = EventStore::prepare("user-1", &fresh).expect("valid");
        assert_eq!(
            view.precheck_append("user-1", ExpectedVersion::Exact(Version(1)), &prepared),
            Ok(Precheck::Fresh {
                version: Version(1),
                last_seq: SequenceNumber(1)
            })
        );
        assert!(matches!(
            view.precheck_append("user-1", ExpectedVersion::Exact(Version(0)), &prepared),
            Err(AppendError::Concurrency(_))
        ));
    }
}

//! The append path: an append's fields checked and its texts packed
//! (nothing shared touched), then its node reserved on the aggregate and
//! linked into the global log (see the module docs of `src/store.rs` for
//! the steps, and `src/log/link.rs` for the protocol and its orderings).
//! An append carrying client ids goes through `claims.rs` first.

use super::EventStore;
use crate::aggregate::Aggregate;
use crate::error::{AppendError, ConcurrencyError, InvalidAppend};
use crate::event::{Event, NewEvent, Payload};
use crate::log::link::{self, Link, Refused};
use crate::log::{CAPACITY, Commit, Events};
use crate::storage::record;
use crate::time::Timestamp;
use crate::types::{EventId, ExpectedVersion, SequenceNumber, Version};
use std::collections::HashSet;
use std::sync::Arc;

/// Largest event type, data or metadata text the store accepts, in bytes
/// (the packed payload stores lengths as `u32`).
pub const MAX_EVENT_PART_BYTES: usize = u32::MAX as usize;

/// Where the events of a successful append are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Positions {
    /// A fresh append: `count` consecutive sequence numbers from `first`.
    Consecutive {
        /// The first event's sequence number.
        first: SequenceNumber,
        /// How many events.
        count: u64,
    },
    /// A recognised retry: the sequence numbers the events already had.
    Listed(Vec<SequenceNumber>),
}

impl Positions {
    /// The sequence numbers, in batch order.
    pub fn iter(&self) -> impl Iterator<Item = SequenceNumber> + '_ {
        let (range, list) = match self {
            Positions::Consecutive { first, count } => (first.0..first.0 + count, &[][..]),
            Positions::Listed(v) => (0..0, &v[..]),
        };
        range.map(SequenceNumber).chain(list.iter().copied())
    }

    /// The first event's sequence number.
    pub fn first(&self) -> SequenceNumber {
        self.iter().next().unwrap_or(SequenceNumber::ZERO)
    }
}

/// Events checked and packed for an append ([`EventStore::prepare`]).
#[derive(Debug)]
pub enum Prepared {
    /// One event (no allocation beyond its text).
    One(Payload),
    /// A batch.
    Many(Vec<Payload>),
}

impl Prepared {
    /// The packed events.
    pub fn as_slice(&self) -> &[Payload] {
        match self {
            Prepared::One(p) => std::slice::from_ref(p),
            Prepared::Many(v) => v,
        }
    }
}

/// The result of a successful append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The events' sequence numbers.
    pub positions: Positions,
    /// The aggregate's version after the last event of this append.
    pub version: Version,
    /// `true` when this was a retry of an append already stored: nothing new
    /// was appended.
    pub duplicate: bool,
}

impl Appended {
    /// The events' ids, in batch order.
    pub fn event_ids(&self, store: &EventStore) -> Vec<EventId> {
        self.positions
            .iter()
            .filter_map(|seq| store.event(seq).map(|e| e.id()))
            .collect()
    }
}

impl EventStore {
    /// Appends `events` to `aggregate_id` atomically (all or none, with
    /// consecutive sequence numbers) if the aggregate is at `expected`.
    ///
    /// Checked in this order: the fields ([`AppendError::Invalid`]), then
    /// client-given event ids (a retry of a stored append returns its
    /// original positions with `duplicate: true`, whatever `expected` is; an
    /// id stored elsewhere is [`AppendError::IdConflict`]), then the version
    /// ([`AppendError::Concurrency`]).
    ///
    /// A batch is a retry when its first id is stored in this aggregate and
    /// the events after that one carry the batch's other ids in order (an
    /// event of the batch without an id must match the stored one's type,
    /// data and metadata exactly).
    ///
    /// On a durable store ([`EventStore::open`]) the append is durable when
    /// this returns `Ok`: it waits for the journaller, sharing one
    /// `fdatasync` with every append waiting at the same time.
    pub fn append(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent<'_>],
    ) -> Result<Appended, AppendError> {
        let appended = self.append_deferred(aggregate_id, expected, events)?;
        if let Some(journal) = &self.journal {
            // An append holds at least one event (`validate`).
            let Some(last) = appended.positions.iter().max() else {
                panic!("an append with no positions: {appended:?}");
            };
            journal.sync_through(last.0)?;
            // Durable now: wake subscribers waiting for it.
            self.published.notify();
        }
        Ok(appended)
    }

    /// [`EventStore::append`] without waiting for durability: on a durable
    /// store the events are visible at once and are durable after the next
    /// [`EventStore::sync`]. For callers that batch acknowledgements (the
    /// node syncs once per batch of requests: group commit).
    pub fn append_deferred(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent<'_>],
    ) -> Result<Appended, AppendError> {
        let prepared = EventStore::prepare(aggregate_id, events)?;
        self.append_prepared(aggregate_id, expected, prepared)
    }

    /// Checks an append's fields and packs its events, without touching any
    /// store: the expensive, store-independent half of an append, which the
    /// node runs on its parallel workers.
    pub fn prepare(aggregate_id: &str, events: &[NewEvent<'_>]) -> Result<Prepared, InvalidAppend> {
        validate(aggregate_id, events)?;
        Ok(match events {
            [one] => Prepared::One(Payload::pack(one)),
            _ => Prepared::Many(events.iter().map(Payload::pack).collect()),
        })
    }

    /// Appends prepared events (see [`EventStore::prepare`]); otherwise as
    /// [`EventStore::append_deferred`].
    pub fn append_prepared(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        prepared: Prepared,
    ) -> Result<Appended, AppendError> {
        // Through the per-thread memo: a library caller typically read this
        // aggregate's version just before (see `store/recent.rs`). The node
        // calls `append_prepared_to` directly: its aggregates come from the
        // parallel `protocol::resolve` step, or vary request by request,
        // where the memo would only add work.
        let found = self.find_recent(aggregate_id);
        self.append_prepared_to(found, aggregate_id, expected, prepared)
    }

    /// [`EventStore::append_prepared`] given the aggregate's entry if the
    /// caller already looked it up (`found`, from [`EventStore::find`]).
    pub(crate) fn append_prepared_to(
        &self,
        found: Option<Arc<Aggregate>>,
        aggregate_id: &str,
        expected: ExpectedVersion,
        prepared: Prepared,
    ) -> Result<Appended, AppendError> {
        // A failed durable store takes no more writes: nothing after a gap
        // in the log file may ever be acknowledged (storage/wal.rs).
        self.check_storage()?;
        if self.is_durable() {
            let texts = prepared.as_slice().iter().map(|p| p.text.len());
            let bytes = record::append_payload_bytes(aggregate_id.len(), texts);
            self.record_fits("events", bytes)?;
        }
        // Read side of "an entry never changes once in the map" (write
        // side: `find_or_create` inserts only when absent).
        debug_assert!(
            found
                .as_ref()
                .is_none_or(|a| self.find(aggregate_id).is_some_and(|m| Arc::ptr_eq(a, &m)))
        );
        let has_client_ids = prepared.as_slice().iter().any(|p| p.id.is_some());
        // Fast path for stale appends to aggregates that do not exist: no
        // entry is created for a request that will be rejected.
        let aggregate = match found.or_else(|| self.find(aggregate_id)) {
            Some(a) => a,
            None if !has_client_ids && !expected.matches(Version::INITIAL) => {
                return Err(concurrency(expected, Version::INITIAL));
            }
            None => self.find_or_create(aggregate_id),
        };
        let count = prepared.as_slice().len() as u64;
        if count > CAPACITY - self.log.head() {
            return Err(AppendError::Full { capacity: CAPACITY });
        }
        // The log stamps `max(now, previous)`, so a reading taken before
        // the append's shared steps never breaks monotonic `recorded_at`.
        let now = Timestamp::now();
        let events: Events = match prepared {
            Prepared::One(p) => Events::One(Event::new(p)),
            Prepared::Many(v) => v.into_iter().map(Event::new).collect(),
        };
        if has_client_ids {
            return self.append_claiming(&aggregate, expected, events, now);
        }
        let make = || {
            self.log.add(Commit {
                link: Link::new(count, now.0, false),
                aggregate: Arc::clone(&aggregate),
                events,
            })
        };
        match link::reserve(
            &*self.log,
            self.log.chain(),
            &aggregate.last,
            exact(expected),
            make,
        ) {
            Ok((node, base)) => Ok(self.finish(node, base)),
            Err((Refused::Version(current), _)) => Err(concurrency(expected, Version(current))),
            Err((refused, _)) => panic!("append without client ids refused: {refused:?}"),
        }
    }

    /// Links a reserved node and reports it.
    pub(super) fn finish(&self, node: u64, base: u64) -> Appended {
        link::link(&*self.log, self.log.chain(), node);
        let commit = self.log.commit(node);
        let count = commit.link.count();
        if self.journal.is_none() {
            // In memory, published is visible: wake subscribers (durable
            // stores wake them when a sync makes events durable).
            self.published.notify();
        }
        Appended {
            positions: Positions::Consecutive {
                first: SequenceNumber(commit.first_seq()),
                count,
            },
            version: Version(base + count),
            duplicate: false,
        }
    }
}

/// The expected version as the protocol takes it.
pub(super) fn exact(expected: ExpectedVersion) -> Option<u64> {
    match expected {
        ExpectedVersion::Exact(v) => Some(v.0),
        ExpectedVersion::Any => None,
    }
}

pub(super) fn concurrency(expected: ExpectedVersion, current: Version) -> AppendError {
    let expected = match expected {
        ExpectedVersion::Exact(v) => v,
        ExpectedVersion::Any => current,
    };
    ConcurrencyError { expected, current }.into()
}

fn part_field(count: usize, i: usize, name: &str) -> String {
    if count == 1 {
        name.to_owned()
    } else {
        format!("events[{i}].{name}")
    }
}

pub(super) fn id_field(count: usize, i: usize) -> String {
    part_field(count, i, "event_id")
}

/// The field checks of an append (error 12 in the protocol).
fn validate(aggregate_id: &str, events: &[NewEvent<'_>]) -> Result<(), InvalidAppend> {
    if aggregate_id.is_empty() {
        return Err(InvalidAppend::new(
            "aggregate_id",
            "must be a non-empty string",
        ));
    }
    if events.is_empty() {
        return Err(InvalidAppend::new("events", "must hold at least one event"));
    }
    let n = events.len();
    let mut seen = HashSet::new();
    for (i, e) in events.iter().enumerate() {
        if e.event_type.is_empty() {
            return Err(InvalidAppend::new(
                part_field(n, i, "event_type"),
                "must be a non-empty string",
            ));
        }
        if let Some(meta) = e.metadata
            && !meta.get().trim_start().starts_with('{')
        {
            return Err(InvalidAppend::new(
                part_field(n, i, "metadata"),
                "must be a JSON object",
            ));
        }
        let parts = [
            ("event_type", e.event_type.len()),
            ("event_data", e.data.get().len()),
            ("metadata", e.metadata.map_or(0, |m| m.get().len())),
        ];
        for (name, len) in parts {
            if len > MAX_EVENT_PART_BYTES {
                return Err(InvalidAppend::new(
                    part_field(n, i, name),
                    format!("is {len} bytes, more than the limit of {MAX_EVENT_PART_BYTES}"),
                ));
            }
        }
        if let Some(id) = e.id
            && n > 1
            && !seen.insert(id)
        {
            return Err(InvalidAppend::new(
                id_field(n, i),
                format!("{id} appears twice in the batch"),
            ));
        }
    }
    Ok(())
}

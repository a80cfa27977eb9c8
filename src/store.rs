//! The engine: a thread-safe event store.
//!
//! # Shape
//!
//! - `aggregates`: a sharded `DashMap` from aggregate id to an
//!   [`Aggregate`], whose `parking_lot::Mutex` guards the aggregate's list
//!   of sequence numbers (its version is that list's length) and snapshot.
//!   A shard lock is held only to find or insert an entry, never across an
//!   append, so appends to different aggregates of one shard do not wait on
//!   each other.
//! - `log`: the global log (`src/log.rs`): a short serial section hands
//!   out sequence numbers and publishes them through one `AtomicU64`;
//!   readers see a contiguous prefix without locks.
//! - `client_ids`: the index of client-given event ids. Generated ids need
//!   no index ([`crate::ids`]).
//!
//! # Why the version advances under the aggregate's lock, not by CAS alone
//!
//! A version CAS followed by a separate `fetch_add` for the sequence number
//! can invert them: writer A wins v1, B wins v2 and takes its sequence number
//! first, so along the aggregate sequence numbers would fall as versions
//! rise. Entering the log's serial section while holding the aggregate's lock
//! makes "check version, take sequence numbers, publish, advance version" one
//! step per aggregate. The lock is uncontended unless writers share an
//! aggregate, and then they conflict anyway: with a CAS loser retrying, the
//! lock is the same serialisation with parking instead of spinning (see the
//! benches).
//!
//! # Invariants (each checked by tests in `tests/engine_*.rs`)
//!
//! 1. Sequence numbers are dense and unique; a rejected append takes none.
//! 2. Along one aggregate, sequence numbers rise with versions.
//! 3. Readers of the global log see a contiguous prefix, and an append that
//!    returned is visible to every read that starts after it.
//! 4. Nothing acknowledged is lost; a concurrency error means the aggregate
//!    really was at another version when the append was checked.
//!
//! # Lock order
//!
//! `id_gate` → aggregate lock → (DashMap shard, briefly). A snapshot's lazy
//! fold takes the aggregate lock and is never computed while holding it.

use crate::error::{AppendError, ConcurrencyError, IdConflict, InvalidAppend};
use crate::event::{Event, NewEvent, Payload, RecordedEvent};
use crate::hash::KeyedState;
use crate::ids::IdScheme;
use crate::log::Log;
use crate::notify::EventCount;
use crate::snapshot::SnapshotRecord;
use crate::state_cache::StateCache;
use crate::storage::Wal;
use crate::time::Timestamp;
use crate::types::{EventId, ExpectedVersion, SequenceNumber, Version};
use dashmap::DashMap;
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashSet;
use std::sync::Arc;

mod recent;

/// Largest event type, data or metadata text the store accepts, in bytes
/// (the packed payload stores lengths as `u32`).
pub const MAX_EVENT_PART_BYTES: usize = u32::MAX as usize;

/// One aggregate (stream). Shared by the map and by each of its events.
#[derive(Debug)]
pub struct Aggregate {
    name: Arc<str>,
    pub(crate) stream: Mutex<Stream>,
    /// Folded states kept for reads (`state_cache.rs`); appends never touch it.
    pub(crate) states: StateCache,
}

/// What an aggregate's lock guards.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    /// Sequence number of each event, by version - 1. Its length is the
    /// aggregate's version.
    pub(crate) seqs: Vec<SequenceNumber>,
    /// The latest snapshot.
    pub(crate) snapshot: Option<Arc<SnapshotRecord>>,
}

impl Aggregate {
    /// The aggregate's id.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Stream {
    pub(crate) fn version(&self) -> Version {
        Version(self.seqs.len() as u64)
    }
}

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

/// A thread-safe, in-memory event store. See the module docs.
///
/// ```
/// use eventstore::{EventStore, ExpectedVersion, NewEvent, Version};
/// use serde_json::value::RawValue;
///
/// let store = EventStore::new();
/// let data = RawValue::from_string(r#"{"name":"John"}"#.into()).unwrap();
/// let done = store
///     .append("user-123", ExpectedVersion::Exact(Version(0)), &[NewEvent::new("UserCreated", &data)])
///     .unwrap();
/// assert_eq!(done.version, Version(1));
/// assert_eq!(done.positions.first().get(), 1);
///
/// // A stale writer is rejected and nothing is appended.
/// let err = store
///     .append("user-123", ExpectedVersion::Exact(Version(0)), &[NewEvent::new("UserRenamed", &data)])
///     .unwrap_err();
/// assert_eq!(err.to_string(), "Expected version 0, got 1");
/// assert_eq!(store.head().get(), 1);
/// ```
pub struct EventStore {
    pub(crate) log: Log,
    aggregates: DashMap<Arc<str>, Arc<Aggregate>, KeyedState>,
    client_ids: DashMap<EventId, SequenceNumber, KeyedState>,
    /// Serialises appends that carry client-given ids, so that "is this id
    /// stored?" and "store it" are one step. Appends with only generated ids
    /// never take it (their ids cannot clash).
    id_gate: Mutex<()>,
    pub(crate) ids: IdScheme,
    /// The write-ahead log of a durable store (`None`: in memory only).
    pub(crate) wal: Option<Wal>,
    /// Process-unique: keys this store's entries in the per-thread lookup
    /// memo (`store/recent.rs`).
    id: u64,
    /// Subscribers waiting for the log to grow (`notify.rs`): notified
    /// after every append and every sync.
    pub(crate) published: EventCount,
}

impl Default for EventStore {
    fn default() -> Self {
        EventStore::new()
    }
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("head", &self.head())
            .field("aggregates", &self.aggregates.len())
            .finish()
    }
}

impl EventStore {
    /// An empty store with a fresh random id scheme.
    pub fn new() -> EventStore {
        EventStore::with_id_scheme(IdScheme::random())
    }

    /// An empty store generating ids with `ids` (durable stores restore it).
    pub fn with_id_scheme(ids: IdScheme) -> EventStore {
        EventStore {
            log: Log::new(),
            aggregates: DashMap::default(),
            client_ids: DashMap::default(),
            id_gate: Mutex::new(()),
            ids,
            wal: None,
            id: recent::new_store_id(),
            published: EventCount::default(),
        }
    }

    /// The id scheme (for persisting it).
    pub fn id_scheme(&self) -> IdScheme {
        self.ids
    }

    /// The highest sequence number appended so far (0 when empty).
    pub fn head(&self) -> SequenceNumber {
        self.log.head()
    }

    /// The highest sequence number a subscriber may see: the head in
    /// memory, the durable head on a durable store.
    pub fn visible_head(&self) -> SequenceNumber {
        match &self.wal {
            Some(wal) => SequenceNumber(wal.durable_seq()),
            None => self.head(),
        }
    }

    /// The event at `seq`, if it exists.
    pub fn event(&self, seq: SequenceNumber) -> Option<RecordedEvent<'_>> {
        self.log.event(seq).map(|event| RecordedEvent {
            sequence_number: seq,
            event,
        })
    }

    /// Number of aggregates the store knows.
    pub fn aggregate_count(&self) -> usize {
        self.aggregates.len()
    }

    pub(crate) fn attach_wal(mut self, wal: Wal) -> EventStore {
        self.wal = Some(wal);
        self
    }

    pub(crate) fn find(&self, aggregate_id: &str) -> Option<Arc<Aggregate>> {
        // The shard read lock is held only for the clone.
        self.aggregates.get(aggregate_id).map(|a| Arc::clone(&a))
    }

    /// [`EventStore::find`], answered from this thread's memo when its last
    /// lookup was the same aggregate (see `store/recent.rs`).
    pub(crate) fn find_recent(&self, aggregate_id: &str) -> Option<Arc<Aggregate>> {
        if let Some(a) = recent::recall(self.id, aggregate_id) {
            // Read side of "an entry never changes once in the map".
            debug_assert!(self.find(aggregate_id).is_some_and(|m| Arc::ptr_eq(&a, &m)));
            return Some(a);
        }
        let found = self.find(aggregate_id);
        if let Some(a) = &found {
            recent::remember(self.id, aggregate_id, a);
        }
        found
    }

    pub(crate) fn find_or_create(&self, aggregate_id: &str) -> Arc<Aggregate> {
        if let Some(a) = self.find(aggregate_id) {
            return a;
        }
        let name: Arc<str> = Arc::from(aggregate_id);
        let entry = self.aggregates.entry(Arc::clone(&name)).or_insert_with(|| {
            Arc::new(Aggregate {
                name,
                stream: Mutex::new(Stream::default()),
                states: StateCache::default(),
            })
        });
        Arc::clone(&entry)
    }

    /// The aggregate's current version (0 for an unknown aggregate).
    pub fn version(&self, aggregate_id: &str) -> Version {
        self.find_recent(aggregate_id)
            .map_or(Version::INITIAL, |a| a.stream.lock().version())
    }

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
    /// this returns `Ok`.
    pub fn append(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent<'_>],
    ) -> Result<Appended, AppendError> {
        let appended = self.append_deferred(aggregate_id, expected, events)?;
        self.sync()?;
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
        // Before the locks, to keep them short: the log stamps
        // `max(now, previous)`, so a reading taken a little early never
        // breaks monotonic `recorded_at`.
        let now = Timestamp::now();
        let _gate = has_client_ids.then(|| self.id_gate.lock());
        let mut stream = aggregate.stream.lock();
        if has_client_ids
            && let Some(done) = self.check_ids(&aggregate, &stream, prepared.as_slice())?
        {
            return Ok(done);
        }
        let current = stream.version();
        if !expected.matches(current) {
            return Err(concurrency(expected, current));
        }
        let ids: Vec<Option<EventId>> = if has_client_ids {
            prepared.as_slice().iter().map(|p| p.id).collect()
        } else {
            Vec::new()
        };
        let appended = match prepared {
            Prepared::One(p) => self.commit(&aggregate, &mut stream, std::iter::once(p), now),
            Prepared::Many(v) => self.commit(&aggregate, &mut stream, v.into_iter(), now),
        }
        .ok_or_else(|| InvalidAppend::new("events", "the store is full (2^38 events)"))?;
        for (seq, id) in appended.positions.iter().zip(ids) {
            if let Some(id) = id.filter(|&id| !self.ids.is_tagged(id)) {
                self.client_ids.insert(id, seq);
            }
        }
        drop(stream);
        drop(_gate);
        if self.wal.is_none() {
            // In memory, published is visible: wake subscribers (durable
            // stores wake them when a sync makes events durable).
            self.published.notify();
        }
        Ok(appended)
    }

    /// Puts prepared events at the end of the log and of the aggregate. The
    /// caller holds the aggregate's lock and has done every check. `None`
    /// (nothing appended) if the log is full.
    pub(crate) fn commit(
        &self,
        aggregate: &Arc<Aggregate>,
        stream: &mut MutexGuard<'_, Stream>,
        payloads: impl ExactSizeIterator<Item = Payload>,
        now: Timestamp,
    ) -> Option<Appended> {
        let count = payloads.len() as u64;
        let mut version = stream.version().0;
        let first_version = Version(version + 1);
        let build = |seq, at, payload: Payload| {
            version += 1;
            let id = payload.id.unwrap_or_else(|| self.ids.generate(seq));
            Event::new(payload, id, Arc::clone(aggregate), Version(version), at)
        };
        let persist = |first, log: &Log| {
            if let Some(wal) = &self.wal {
                crate::storage::persist_append(
                    wal,
                    log,
                    &self.ids,
                    aggregate.name(),
                    first,
                    first_version,
                    count,
                );
            }
        };
        let first = self.log.append(payloads, now, build, persist)?;
        let before = stream.seqs.len() as u64;
        stream
            .seqs
            .extend((first.0..first.0 + count).map(SequenceNumber));
        // Write side of "versions advance by one per event and sequence
        // numbers rise along the aggregate" (read side: `stream_slice`).
        debug_assert_eq!(version, before + count);
        debug_assert!(
            before == 0 || stream.seqs[before as usize - 1] < first,
            "sequence numbers fell along aggregate {}",
            aggregate.name
        );
        Some(Appended {
            positions: Positions::Consecutive { first, count },
            version: Version(version),
            duplicate: false,
        })
    }

    /// Records a client-given id (recovery; appends do it themselves).
    pub(crate) fn index_client_id(&self, id: EventId, seq: SequenceNumber) {
        self.client_ids.insert(id, seq);
    }

    /// Where the event with `id` is, if stored. A given id carrying this
    /// store's generated-id tag must name an existing event: otherwise it
    /// could clash with an id the store generates later.
    fn locate(
        &self,
        id: EventId,
        field: impl Fn() -> String,
    ) -> Result<Option<SequenceNumber>, InvalidAppend> {
        if let Some(seq) = self.client_ids.get(&id) {
            return Ok(Some(*seq));
        }
        match self.ids.sequence_of(id) {
            None => Ok(None),
            Some(seq) if self.log.event(seq).is_some_and(|e| e.id() == id) => Ok(Some(seq)),
            Some(_) => Err(InvalidAppend::new(
                field(),
                format!(
                    "{id} is reserved: it has the form of ids this store generates, but no event has it"
                ),
            )),
        }
    }

    /// The id checks of an append: `Some` when it is a retry of stored
    /// events, an error when an id clashes, `None` when all ids are new.
    fn check_ids(
        &self,
        aggregate: &Arc<Aggregate>,
        stream: &Stream,
        events: &[Payload],
    ) -> Result<Option<Appended>, AppendError> {
        let field = |i: usize| move || id_field(events.len(), i);
        for (i, e) in events.iter().enumerate() {
            let Some(id) = e.id else { continue };
            let Some(seq) = self.locate(id, field(i))? else {
                continue;
            };
            let Some(stored) = self.log.event(seq) else {
                continue;
            };
            if i == 0 && Arc::ptr_eq(stored.aggregate(), aggregate) {
                return self.retry(stream, stored.version(), events).map(Some);
            }
            return Err(IdConflict::AlreadyStored {
                id,
                aggregate_id: stored.aggregate_id().to_owned(),
                version: stored.version(),
            }
            .into());
        }
        Ok(None)
    }

    /// A batch whose first event is stored at `first_version`: a retry if the
    /// stored events after it match the batch's ids.
    fn retry(
        &self,
        stream: &Stream,
        first_version: Version,
        events: &[Payload],
    ) -> Result<Appended, AppendError> {
        let start = first_version.0 as usize - 1;
        let mut seqs = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let stored = stream
                .seqs
                .get(start + i)
                .and_then(|&s| self.log.event(s).map(|ev| (s, ev)));
            match stored {
                Some((seq, ev)) if same_event(e, ev) => seqs.push(seq),
                _ => {
                    return Err(IdConflict::RetryMismatch {
                        first: events[0].id.unwrap_or(EventId([0; 16])),
                        index: i,
                    }
                    .into());
                }
            }
        }
        Ok(Appended {
            positions: Positions::Listed(seqs),
            version: Version(first_version.0 + events.len() as u64 - 1),
            duplicate: true,
        })
    }

    /// The sequence numbers of versions `from..=to` of an aggregate (clamped
    /// to what exists), in version order.
    pub(crate) fn stream_slice(
        &self,
        aggregate: &Aggregate,
        from: Version,
        to: Version,
    ) -> Vec<SequenceNumber> {
        let stream = aggregate.stream.lock();
        let end = (to.0 as usize).min(stream.seqs.len());
        let start = (from.0.max(1) as usize - 1).min(end);
        let slice = stream.seqs[start..end].to_vec();
        // Read side of "sequence numbers rise along the aggregate".
        debug_assert!(slice.windows(2).all(|w| w[0] < w[1]));
        slice
    }

    /// The sequence number of the aggregate's event at `version` (≥ 1).
    pub(crate) fn seq_at(&self, aggregate: &Aggregate, version: Version) -> Option<SequenceNumber> {
        let i = usize::try_from(version.0.checked_sub(1)?).ok()?;
        aggregate.stream.lock().seqs.get(i).copied()
    }

    /// The sequence numbers of an aggregate's versions `from..=to`
    /// (clamped to what exists; empty for an unknown aggregate).
    pub fn stream_positions(
        &self,
        aggregate_id: &str,
        from: Version,
        to: Version,
    ) -> Vec<SequenceNumber> {
        self.find(aggregate_id)
            .map(|a| self.stream_slice(&a, from, to))
            .unwrap_or_default()
    }

    /// The sequence numbers of an aggregate's events within `from..=last`
    /// (sequence numbers), at most `max_count` of them: a binary search, then
    /// only what is returned is copied.
    pub fn stream_positions_between(
        &self,
        aggregate_id: &str,
        from: SequenceNumber,
        last: SequenceNumber,
        max_count: usize,
    ) -> Vec<SequenceNumber> {
        let Some(aggregate) = self.find(aggregate_id) else {
            return Vec::new();
        };
        let stream = aggregate.stream.lock();
        let start = stream.seqs.partition_point(|s| *s < from);
        let end = stream.seqs.partition_point(|s| *s <= last);
        let end = end.min(start.saturating_add(max_count)).max(start);
        stream.seqs[start..end].to_vec()
    }

    /// Filtered [`EventStore::read_all`]: the events matching `filter` from
    /// `from`, at most `max_count`, looking at no more than
    /// [`crate::filter::LOOK_LIMIT`] events; see [`crate::filter`].
    pub fn read_all_filtered<'s>(
        &'s self,
        from: SequenceNumber,
        max_count: u64,
        filter: &'s crate::filter::Filter,
    ) -> crate::filter::FilteredSlice<'s> {
        crate::filter::read(self, from, max_count, filter)
    }

    /// Reads up to `max_count` events of an aggregate from version `from`
    /// (1-based; 0 reads from the start), with its current version.
    pub fn read_stream(
        &self,
        aggregate_id: &str,
        from: Version,
        max_count: usize,
    ) -> StreamSlice<'_> {
        let Some(aggregate) = self.find(aggregate_id) else {
            return StreamSlice {
                version: Version::INITIAL,
                events: Vec::new(),
            };
        };
        let version = aggregate.stream.lock().version();
        let from = Version(from.0.max(1));
        let to = Version(
            from.0
                .saturating_add(max_count as u64)
                .saturating_sub(1)
                .min(version.0),
        );
        let events = if max_count == 0 {
            Vec::new()
        } else {
            self.stream_slice(&aggregate, from, to)
                .into_iter()
                .filter_map(|s| self.event(s))
                .collect()
        };
        StreamSlice { version, events }
    }

    /// Reads up to `max_count` events of the global log from `from` (0 reads
    /// from the start), with the head when the read started.
    pub fn read_all(&self, from: SequenceNumber, max_count: usize) -> AllSlice<'_> {
        let head = self.head();
        let from = from.0.max(1);
        let to = from
            .saturating_add(max_count as u64)
            .saturating_sub(1)
            .min(head.0);
        let events: Vec<_> = (from..=to)
            .filter_map(|s| self.event(SequenceNumber(s)))
            .collect();
        // Read side of density: a visible prefix has no holes.
        debug_assert_eq!(events.len() as u64, (to + 1).saturating_sub(from));
        AllSlice { head, events }
    }
}

/// Events of one aggregate, as read by [`EventStore::read_stream`].
#[derive(Debug)]
pub struct StreamSlice<'a> {
    /// The aggregate's version at the time of the read.
    pub version: Version,
    /// The events read, in version order.
    pub events: Vec<RecordedEvent<'a>>,
}

/// Events of the global log, as read by [`EventStore::read_all`].
#[derive(Debug)]
pub struct AllSlice<'a> {
    /// The highest sequence number at the time of the read.
    pub head: SequenceNumber,
    /// The events read, in sequence order.
    pub events: Vec<RecordedEvent<'a>>,
}

/// Whether a stored event is the one a retried batch carries: the same id
/// when the batch gives one, else the same type, data and metadata.
fn same_event(new: &Payload, stored: &Event) -> bool {
    match new.id {
        Some(id) => id == stored.id(),
        None => stored.same_text(new),
    }
}

fn concurrency(expected: ExpectedVersion, current: Version) -> AppendError {
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

fn id_field(count: usize, i: usize) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn commit_at(store: &EventStore, aggregate_id: &str, micros: i64) -> SequenceNumber {
        let data = RawValue::from_string("{}".into()).unwrap();
        let aggregate = store.find_or_create(aggregate_id);
        let mut stream = aggregate.stream.lock();
        let payload = Payload::pack(&NewEvent::new("T", &data));
        let done = store
            .commit(
                &aggregate,
                &mut stream,
                std::iter::once(payload),
                Timestamp(micros),
            )
            .unwrap();
        done.positions.first()
    }

    #[test]
    fn the_lookup_memo_never_answers_for_another_store() {
        let a = EventStore::new();
        commit_at(&a, "x", 1);
        let b = EventStore::new();
        commit_at(&b, "x", 1);
        commit_at(&b, "x", 2);
        let in_b = b.find_recent("x").unwrap();
        let in_a = a.find_recent("x").unwrap();
        assert!(!Arc::ptr_eq(&in_a, &in_b));
        assert!(Arc::ptr_eq(&a.find_recent("x").unwrap(), &in_a));
        assert_eq!((a.version("x"), b.version("x")), (Version(1), Version(2)));
        assert_eq!(a.version("y"), Version(0));
        drop((a, in_a));
        // A new store may take the dropped one's address: still no answer.
        let c = EventStore::new();
        assert!(c.find_recent("x").is_none());
        assert_eq!(c.version("x"), Version(0));
    }

    #[test]
    fn recorded_at_never_falls_even_when_the_clock_does() {
        // The writer's clock reading is only a floor: an event is stamped
        // max(now, previous recorded_at), whatever the order clocks were read.
        let store = EventStore::new();
        let first = commit_at(&store, "a", 1_000);
        let second = commit_at(&store, "b", 500);
        let third = commit_at(&store, "a", 2_000);
        let at = |seq| store.event(seq).unwrap().recorded_at().0;
        assert_eq!((at(first), at(second), at(third)), (1_000, 1_000, 2_000));
    }
}

//! The engine: a thread-safe event store whose appends take no lock and
//! never wait for another thread.
//!
//! # Shape
//!
//! - `aggregates`: a sharded `DashMap` from aggregate id to an
//!   [`Aggregate`] entry (`store/aggregate.rs`). A shard lock is held only
//!   to find or insert an entry, never across an append; a thread's
//!   repeated lookups of one aggregate skip the map (`store/recent.rs`).
//! - `log`: the global log (`src/log.rs`): one commit node per append,
//!   reserved on the aggregate by CAS and linked and sequenced by the
//!   lock-free protocol of `src/log/link.rs`, which holds the correctness
//!   argument and every atomic ordering.
//! - `client_ids`: claims on client-given event ids: id → the node that
//!   claimed it. Generated ids need no index ([`crate::ids`]).
//! - `journal`: on a durable store, the thread that writes the log to disk
//!   in sequence order (`storage/journal.rs`).
//!
//! # An append
//!
//! 1. Fields checked and texts packed ([`EventStore::prepare`]), the clock
//!    read: nothing shared touched.
//! 2. Client ids, if any, are claimed (below).
//! 3. `link::reserve`: the aggregate's last commit is finished if needed,
//!    the expected version checked against it (a mismatch fails at once,
//!    taking no sequence number), and the aggregate's `last` CAS'd to the
//!    new node.
//! 4. `link::link`: the node is linked after the global tail and sequenced
//!    (first sequence number = predecessor's end, `recorded_at` =
//!    max(clock, predecessor's)). Every step of 3–4 that an append needs
//!    from another, it does itself.
//!
//! # Client ids: claims
//!
//! Claiming an id is an insert-if-absent in `client_ids` (the shard lock
//! is held for that insert only). An existing claim is resolved by its
//! node's state: a *done* node stored the id (a retry of that batch, or a
//! conflict); a `FAILED` node's claim counts for nothing and is taken over;
//! a `PENDING` node is either its aggregate's `last` already (then it has
//! all its claims and anyone may confirm it, see `link.rs`) or is killed
//! (`link::kill`), and its owner starts over. A refused append withdraws
//! its claims; a claim of a node that is not done is never reported as
//! stored. So two threads retrying one batch at once end with one append
//! and one `duplicate: true`, in any interleaving.
//!
//! Killing makes the id path obstruction-free rather than lock-free: two
//! appends that keep claiming the same ids in opposite order could in
//! principle kill each other for ever (each kill needs the other to be in
//! the short window between its claims and its reservation).
//!
//! # Invariants (each checked by tests in `tests/engine_*.rs`, the loom
//! models in `tests/loom_link.rs` and `tests/engine_pause.rs`)
//!
//! 1. Sequence numbers are dense and unique; a rejected append takes none.
//! 2. Along one aggregate, sequence numbers rise with versions.
//! 3. Readers of the global log see a contiguous prefix, and an append that
//!    returned is visible to every read that starts after it.
//! 4. Nothing acknowledged is lost; a concurrency error means the aggregate
//!    really was at another version when the append was checked.
//! 5. `recorded_at` never falls along the global log.

use crate::error::{AppendError, ConcurrencyError, IdConflict, InvalidAppend};
use crate::event::{Event, NewEvent, Payload, RecordedEvent};
use crate::hash::KeyedState;
use crate::ids::IdScheme;
use crate::log::link::{self, Link, Refused};
use crate::log::{CAPACITY, Commit, Events, Log};
use crate::notify::EventCount;
use crate::storage::journal::Journal;
use crate::time::Timestamp;
use crate::types::{EventId, ExpectedVersion, SequenceNumber, Version};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

mod aggregate;
mod recent;
mod replica;
mod versions;

use versions::VersionIndex;

pub use replica::{Precheck, ReplicatedEvent};

pub use aggregate::Aggregate;

/// Largest event type, data or metadata text the store accepts, in bytes
/// (the packed payload stores lengths as `u32`).
pub const MAX_EVENT_PART_BYTES: usize = u32::MAX as usize;

/// The steps of an append a test hook can stop at ([`EventStore::with_pause_hook`]).
#[doc(hidden)]
pub use crate::log::link::Step as PauseStep;

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
    pub(crate) log: Arc<Log>,
    aggregates: DashMap<Arc<str>, Arc<Aggregate>, KeyedState>,
    /// Client-given id → the node that claimed it (see the module docs).
    client_ids: DashMap<EventId, u64, KeyedState>,
    pub(crate) ids: IdScheme,
    /// The journaller of a durable store (`None`: in memory only).
    pub(crate) journal: Option<Journal>,
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

/// How a client id's existing claim resolved.
enum Claim {
    /// Ours now.
    Taken,
    /// Stored by this done node.
    Stored(u64),
}

impl EventStore {
    /// An empty store with a fresh random id scheme.
    pub fn new() -> EventStore {
        EventStore::with_id_scheme(IdScheme::random())
    }

    /// An empty store generating ids with `ids` (durable stores restore it).
    pub fn with_id_scheme(ids: IdScheme) -> EventStore {
        EventStore {
            log: Arc::new(Log::new(Arc::new(Aggregate::new(Arc::from(""))))),
            aggregates: DashMap::default(),
            client_ids: DashMap::default(),
            ids,
            journal: None,
            id: recent::new_store_id(),
            published: EventCount::default(),
        }
    }

    /// An in-memory store that calls `hook` at each step of every append,
    /// on the appending thread (for tests that stop a writer mid-append).
    #[doc(hidden)]
    pub fn with_pause_hook(hook: fn(PauseStep)) -> EventStore {
        let mut store = EventStore::new();
        match Arc::get_mut(&mut store.log) {
            Some(log) => log.pause = Some(hook),
            None => panic!("a new store's log is shared"),
        }
        store
    }

    /// The id scheme (for persisting it).
    pub fn id_scheme(&self) -> IdScheme {
        self.ids
    }

    /// The highest sequence number appended so far (0 when empty).
    pub fn head(&self) -> SequenceNumber {
        SequenceNumber(self.log.head())
    }

    /// The highest sequence number a subscriber may see: the head in
    /// memory, the durable head on a durable store.
    pub fn visible_head(&self) -> SequenceNumber {
        match &self.journal {
            Some(journal) => SequenceNumber(journal.durable_seq()),
            None => self.head(),
        }
    }

    /// The event at `seq`, if it exists.
    pub fn event(&self, seq: SequenceNumber) -> Option<RecordedEvent<'_>> {
        if seq.0 == 0 || seq.0 > self.log.head() {
            return None;
        }
        self.recorded(seq)
    }

    /// The event at `seq`, which must be at or below a head this thread has
    /// read (the index entry is then published: see `log/link.rs`).
    pub(crate) fn recorded(&self, seq: SequenceNumber) -> Option<RecordedEvent<'_>> {
        let (commit, i) = self.log.locate(seq.0)?;
        let event = &commit.events[i];
        let id = event.given_id().unwrap_or_else(|| self.ids.generate(seq));
        // Relaxed: published by the node's `end` (see `log/link.rs`).
        let base = commit.link.base.load(Ordering::Relaxed);
        let at = commit.link.recorded.load(Ordering::Relaxed);
        Some(RecordedEvent::new(
            seq,
            event,
            id,
            Version(base + i as u64 + 1),
            Timestamp(at),
            &commit.aggregate,
        ))
    }

    /// Number of aggregates the store knows.
    pub fn aggregate_count(&self) -> usize {
        self.aggregates.len()
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
        // The shard write lock is held for this insert only.
        let entry = self
            .aggregates
            .entry(Arc::clone(&name))
            .or_insert_with(|| Arc::new(Aggregate::new(name)));
        Arc::clone(&entry)
    }

    /// The id of the aggregate's last visible commit (`NONE` if none).
    pub(crate) fn visible(&self, aggregate: &Aggregate) -> u64 {
        link::visible(&*self.log, &aggregate.last)
    }

    /// The aggregate version after commit `node`.
    pub(crate) fn version_of(&self, node: u64) -> Version {
        Version(link::version_of(&*self.log, node))
    }

    /// The aggregate's current version (0 for an unknown aggregate).
    pub fn version(&self, aggregate_id: &str) -> Version {
        self.find_recent(aggregate_id)
            .map_or(Version::INITIAL, |a| self.version_of(self.visible(&a)))
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
            let last = appended
                .positions
                .iter()
                .max()
                .unwrap_or(SequenceNumber::ZERO);
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
            return Err(InvalidAppend::new("events", "the store is full (2^38 events)").into());
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
    fn finish(&self, node: u64, base: u64) -> Appended {
        link::link(&*self.log, self.log.chain(), node);
        let commit = self.log.commit(node);
        let count = commit.link.count;
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

    /// An append carrying client ids: claim them, then reserve (see the
    /// module docs).
    fn append_claiming(
        &self,
        aggregate: &Arc<Aggregate>,
        expected: ExpectedVersion,
        events: Events,
        now: Timestamp,
    ) -> Result<Appended, AppendError> {
        let count = events.len() as u64;
        let mut events = Some(events);
        let mut previous = None;
        loop {
            // The texts move into the first node; a restart (rare: killed by
            // a competitor) copies them from the node before.
            let texts = match (events.take(), previous) {
                (Some(e), _) => e,
                (None, Some(p)) => self.log.commit(p).events.clone(),
                (None, None) => panic!("an append restarted without a node"),
            };
            let node = self.log.add(Commit {
                link: Link::new(count, now.0, true),
                aggregate: Arc::clone(aggregate),
                events: texts,
            });
            previous = Some(node);
            let events = &self.log.commit(node).events;
            let mut claimed = Vec::with_capacity(events.len());
            let mut stored = None;
            for (i, e) in events.iter().enumerate() {
                let Some(id) = e.given_id() else { continue };
                let field = || id_field(events.len(), i);
                let found = if self.ids.is_tagged(id) {
                    self.locate_generated(id, field)
                } else {
                    match self.claim(id, node) {
                        Claim::Taken => {
                            claimed.push(id);
                            Ok(None)
                        }
                        Claim::Stored(by) => Ok(Some(self.stored_id(by, id))),
                    }
                };
                match found {
                    Ok(None) => {}
                    Ok(Some(seq)) => {
                        stored = Some(Ok((i, id, seq)));
                        break;
                    }
                    Err(e) => {
                        stored = Some(Err(e));
                        break;
                    }
                }
            }
            if let Some(found) = stored {
                let killed =
                    self.log.commit(node).link.status.load(Ordering::Acquire) == link::FAILED;
                self.withdraw(node, &claimed);
                if killed {
                    // A competitor took one of our earlier ids meanwhile:
                    // what we found is judged from the batch's first id
                    // again.
                    continue;
                }
                let (i, id, seq) = found?;
                return self.stored_result(aggregate, i, id, seq, events);
            }
            match link::reserve(
                &*self.log,
                self.log.chain(),
                &aggregate.last,
                exact(expected),
                || node,
            ) {
                Ok((node, base)) => return Ok(self.finish(node, base)),
                Err((Refused::Version(current), _)) => {
                    self.withdraw(node, &claimed);
                    return Err(concurrency(expected, Version(current)));
                }
                // A competitor for one of our ids killed the node: start
                // over (its claims are taken over or withdrawn).
                Err((Refused::Killed, _)) => self.withdraw(node, &claimed),
                Err((Refused::Stopped, _)) => panic!("the store's pause hook stopped an append"),
            }
        }
    }

    /// Claims `id` for `node`: insert-if-absent, resolving a competing
    /// claim by its node's state (see the module docs).
    fn claim(&self, id: EventId, node: u64) -> Claim {
        loop {
            // The shard lock is held for this entry operation only.
            let other = match self.client_ids.entry(id) {
                Entry::Vacant(v) => {
                    v.insert(node);
                    return Claim::Taken;
                }
                Entry::Occupied(o) => *o.get(),
            };
            assert_ne!(other, node, "id {id} claimed twice by one node");
            let commit = self.log.commit(other);
            let mut state = commit.link.status.load(Ordering::Acquire);
            if state == link::PENDING {
                // In its aggregate's `last` already: it has all its claims,
                // finish it (`settle` in link.rs confirms it). Else kill it.
                state = if commit.aggregate.last.load(Ordering::Acquire) == other {
                    let _ = commit.link.status.compare_exchange(
                        link::PENDING,
                        link::RESERVED,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    commit.link.status.load(Ordering::Acquire)
                } else {
                    link::kill(&*self.log, other)
                };
            }
            match state {
                link::RESERVED => {
                    link::link(&*self.log, self.log.chain(), other);
                    return Claim::Stored(other);
                }
                link::FAILED => {
                    // Take it over if it is still the failed node's.
                    if let Entry::Occupied(mut o) = self.client_ids.entry(id)
                        && *o.get() == other
                    {
                        o.insert(node);
                        return Claim::Taken;
                    }
                }
                _ => {}
            }
        }
    }

    /// Withdraws a refused node's claims and marks it failed.
    fn withdraw(&self, node: u64, claimed: &[EventId]) {
        link::abandon(&*self.log, node);
        for id in claimed {
            self.client_ids.remove_if(id, |_, &v| v == node);
        }
    }

    /// The sequence number of `id` in the done node `node`.
    fn stored_id(&self, node: u64, id: EventId) -> SequenceNumber {
        let commit = self.log.commit(node);
        let Some(i) = commit.events.iter().position(|e| e.given_id() == Some(id)) else {
            panic!("node {node} claimed {id} but does not hold it");
        };
        SequenceNumber(commit.first_seq() + i as u64)
    }

    /// A batch whose event `i` (with `id`) is stored at `seq`: a retry when
    /// `i` is 0 and in this aggregate, else a conflict.
    fn stored_result(
        &self,
        aggregate: &Arc<Aggregate>,
        i: usize,
        id: EventId,
        seq: SequenceNumber,
        events: &[Event],
    ) -> Result<Appended, AppendError> {
        // At or below the head: `seq`'s node is done, and this thread saw
        // it done (Acquire), so `recorded` may be used.
        let Some(stored) = self.recorded(seq) else {
            panic!("stored event {seq} has no index entry");
        };
        if i == 0 && Arc::ptr_eq(stored.aggregate(), aggregate) {
            return self.retry(aggregate, stored.version(), events);
        }
        Err(IdConflict::AlreadyStored {
            id,
            aggregate_id: stored.aggregate_id().to_owned(),
            version: stored.version(),
        }
        .into())
    }

    /// Where the event with a generated-form `id` is: it must name an
    /// existing event, or it could clash with an id the store generates
    /// later.
    fn locate_generated(
        &self,
        id: EventId,
        field: impl Fn() -> String,
    ) -> Result<Option<SequenceNumber>, InvalidAppend> {
        match self.ids.sequence_of(id) {
            Some(seq) if self.event(seq).is_some_and(|e| e.id() == id) => Ok(Some(seq)),
            _ => Err(InvalidAppend::new(
                field(),
                format!(
                    "{id} is reserved: it has the form of ids this store generates, but no event has it"
                ),
            )),
        }
    }

    /// Records a client-given id (recovery: one thread, nothing to race).
    pub(crate) fn index_client_id(&self, id: EventId, node: u64) {
        self.client_ids.insert(id, node);
    }

    /// A batch whose first event is stored at `first_version`: a retry if the
    /// stored events after it match the batch's ids.
    fn retry(
        &self,
        aggregate: &Aggregate,
        first_version: Version,
        events: &[Event],
    ) -> Result<Appended, AppendError> {
        let last_version = Version(first_version.0 + events.len() as u64 - 1);
        let seqs = self.stream_slice(aggregate, first_version, last_version);
        let mut out = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let stored = seqs.get(i).and_then(|&s| self.recorded(s));
            match stored {
                Some(ev) if same_event(e, &ev) => out.push(ev.sequence_number),
                _ => {
                    return Err(IdConflict::RetryMismatch {
                        first: events[0].given_id().unwrap_or(EventId([0; 16])),
                        index: i,
                    }
                    .into());
                }
            }
        }
        Ok(Appended {
            positions: Positions::Listed(out),
            version: last_version,
            duplicate: true,
        })
    }

    /// The sequence numbers of versions `from..=to` of an aggregate (clamped
    /// to what is visible), in version order: through the version index
    /// (`store/versions.rs`), or, where an append has not indexed its
    /// versions yet, a walk back along the aggregate's commits from its
    /// last visible one.
    pub(crate) fn stream_slice(
        &self,
        aggregate: &Aggregate,
        from: Version,
        to: Version,
    ) -> Vec<SequenceNumber> {
        let from = from.0.max(1);
        let last = self.visible(aggregate);
        let to = Version(to.0.min(self.version_of(last).0));
        if from > to.0 {
            return Vec::new();
        }
        let index = aggregate.versions.get_or_init(Box::default);
        if index.indexed() < to.0 {
            self.index_versions(index, last);
        }
        let mut out = Vec::with_capacity((to.0 - from + 1).min(1 << 16) as usize);
        let mut v = from;
        while v <= to.0 {
            let Some(node) = index.get(v) else {
                panic!(
                    "version {v} of {} is below the indexed prefix but not indexed",
                    aggregate.name()
                );
            };
            let commit = self.log.commit(node);
            // Relaxed: the filler saw the node visible (see `versions.rs`).
            let base = commit.link.base.load(Ordering::Relaxed);
            let after = base + commit.link.count;
            assert!(
                base < v && v <= after,
                "the version index of {} sends version {v} to a commit of {}..={after}",
                aggregate.name(),
                base + 1
            );
            let first = commit.first_seq();
            let end = after.min(to.0);
            out.extend((v..=end).map(|w| SequenceNumber(first + (w - base - 1))));
            v = end + 1;
        }
        out
    }

    /// Extends `index` up to the version of `last` (an aggregate's visible
    /// commit) by walking the commits back from it to the indexed
    /// prefix (see `store/versions.rs`).
    fn index_versions(&self, index: &VersionIndex, last: u64) {
        let indexed = index.indexed();
        let top = self.version_of(last).0;
        if top <= indexed {
            // Another reader, with a newer `last`, got there first.
            return;
        }
        let mut node = last;
        while node != link::NONE {
            let commit = self.log.commit(node);
            // Relaxed: written before the node was published as `last`,
            // which `visible` acquired (or a later node's `prev` chain).
            let base = commit.link.base.load(Ordering::Relaxed);
            let after = base + commit.link.count;
            if after <= indexed {
                break;
            }
            for v in (base + 1).max(indexed + 1)..=after {
                index.set(v, node);
            }
            node = commit.link.prev.load(Ordering::Relaxed);
        }
        index.raise(top);
    }

    /// The sequence number of the aggregate's event at `version` (≥ 1).
    pub(crate) fn seq_at(&self, aggregate: &Aggregate, version: Version) -> Option<SequenceNumber> {
        self.stream_slice(aggregate, version, version)
            .first()
            .copied()
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
        let visible = self.version_of(self.visible(&aggregate)).0;
        // The first version at or after `from` (sequence numbers rise with
        // versions): a binary search over O(1) lookups.
        let (mut lo, mut hi) = (1, visible + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.seq_at(&aggregate, Version(mid)) {
                Some(seq) if seq < from => lo = mid + 1,
                _ => hi = mid,
            }
        }
        let to = visible.min(lo.saturating_add(max_count as u64).saturating_sub(1));
        let mut seqs = self.stream_slice(&aggregate, Version(lo), Version(to));
        seqs.retain(|s| *s <= last);
        seqs
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
        let top = self.visible(&aggregate);
        let version = self.version_of(top);
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
            // Every visible commit is done, and this thread acquired its
            // `end` (in `visible`) or a later one's: `recorded` may be used.
            self.stream_slice(&aggregate, from, to)
                .into_iter()
                .filter_map(|s| self.recorded(s))
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
            .filter_map(|s| self.recorded(SequenceNumber(s)))
            .collect();
        // Read side of density: a visible prefix has no holes.
        assert_eq!(
            events.len() as u64,
            (to + 1).saturating_sub(from),
            "hole in the visible log"
        );
        AllSlice { head, events }
    }

    /// Puts back an append read from a durable log (one thread, at open):
    /// checks that it continues the log and the aggregate exactly.
    pub(crate) fn restore_append(
        &self,
        aggregate_id: &str,
        first_seq: u64,
        first_version: u64,
        events: Vec<(Payload, bool)>,
        at: Timestamp,
    ) -> Result<(), String> {
        let expected_seq = self.log.head() + 1;
        if first_seq != expected_seq {
            return Err(format!(
                "append record starts at sequence number {first_seq}, expected {expected_seq}"
            ));
        }
        let count = events.len() as u64;
        if count > CAPACITY - self.log.head() {
            return Err("the log holds more events than a store can (2^38)".to_owned());
        }
        let aggregate = self.find_or_create(aggregate_id);
        let client: Vec<Option<EventId>> = events
            .iter()
            .map(|(p, client)| p.id.filter(|_| *client))
            .collect();
        let stored: Events = events
            .into_iter()
            .map(|(mut p, client)| {
                if !client {
                    p.id = None;
                }
                Event::new(p)
            })
            .collect();
        let make = || {
            self.log.add(Commit {
                link: Link::new(count, at.0, false),
                aggregate: Arc::clone(&aggregate),
                events: stored,
            })
        };
        let expected = first_version.checked_sub(1);
        match link::reserve(
            &*self.log,
            self.log.chain(),
            &aggregate.last,
            expected,
            make,
        ) {
            Ok((node, _)) => {
                link::link(&*self.log, self.log.chain(), node);
                for id in client.into_iter().flatten() {
                    self.index_client_id(id, node);
                }
                Ok(())
            }
            Err((Refused::Version(current), _)) => Err(format!(
                "append record for {aggregate_id:?} starts at version {first_version}, expected {}",
                current + 1
            )),
            Err((refused, _)) => panic!("restoring an append refused: {refused:?}"),
        }
    }
}

/// The expected version as the protocol takes it.
fn exact(expected: ExpectedVersion) -> Option<u64> {
    match expected {
        ExpectedVersion::Exact(v) => Some(v.0),
        ExpectedVersion::Any => None,
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
fn same_event(new: &Event, stored: &RecordedEvent<'_>) -> bool {
    match new.given_id() {
        Some(id) => id == stored.id(),
        None => stored.event().same_text(new),
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
        let event = Event::new(Payload::pack(&NewEvent::new("T", &data)));
        let make = || {
            store.log.add(Commit {
                link: Link::new(1, micros, false),
                aggregate: Arc::clone(&aggregate),
                events: Events::One(event),
            })
        };
        let (node, base) =
            link::reserve(&*store.log, store.log.chain(), &aggregate.last, None, make).unwrap();
        store.finish(node, base).positions.first()
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

//! The engine: a thread-safe event store whose appends take no lock and
//! never wait for another thread.
//!
//! # Shape
//!
//! - `aggregates`: a sharded `DashMap` from aggregate id to an
//!   [`Aggregate`] entry (`src/aggregate.rs`). A shard lock is held only
//!   to find or insert an entry, never across an append; a thread's
//!   repeated lookups of one aggregate skip the map (`store/recent.rs`).
//! - `log`: the global log (`src/log.rs`): one commit node per append,
//!   reserved on the aggregate by CAS and linked and sequenced by the
//!   lock-free protocol of `src/log/link.rs`, which holds the correctness
//!   argument and every atomic ordering.
//! - `client_ids`: claims on client-given event ids: id → the node that
//!   claimed it. Generated ids need no index ([`crate::ids`]).
//! - `journal`: on a durable store, the thread that writes the log to disk
//!   in sequence order (`store/journal.rs`).
//!
//! # An append
//!
//! 1. Fields checked and texts packed ([`EventStore::prepare`]), the clock
//!    read: nothing shared touched.
//! 2. Client ids, if any, are claimed (`store/claims.rs`).
//! 3. `link::reserve`: the aggregate's last commit is finished if needed,
//!    the expected version checked against it (a mismatch fails at once,
//!    taking no sequence number), and the aggregate's `last` CAS'd to the
//!    new node.
//! 4. `link::link`: the node is linked after the global tail and sequenced
//!    (first sequence number = predecessor's end, `recorded_at` =
//!    max(clock, predecessor's)). Every step of 3–4 that an append needs
//!    from another, it does itself.
//!
//! # Files
//!
//! - this file: the store, its constructors and lookups;
//! - `append.rs`: the append path (checks, packing, reserve and link);
//! - `claims.rs`: client ids: the claim protocol, with its argument;
//! - `reads.rs`: stream, global and filtered reads, the version index walk;
//! - `snapshots.rs`: snapshots, replay and state-at-a-time (fold plans);
//! - `subscription.rs`: library subscriptions;
//! - `durable.rs`: opening a durable store (recovery replayed through the
//!   append path), syncing; `journal.rs`: the journaller;
//! - `recent.rs`: the per-thread lookup memo.
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

use crate::aggregate::Aggregate;
use crate::event::RecordedEvent;
use crate::hash::KeyedState;
use crate::ids::IdScheme;
use crate::log::{Log, link};
use crate::notify::EventCount;
use crate::time::Timestamp;
use crate::types::{EventId, SequenceNumber, Version};
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

mod append;
mod categories;
mod claims;
mod durable;
mod journal;
mod reads;
mod recent;
mod replica;
mod snapshots;
mod subscription;

pub use append::{Appended, MAX_EVENT_PART_BYTES, Positions, Prepared};
use journal::Journal;
pub use reads::{AllSlice, FilteredSlice, StreamSlice};
#[cfg_attr(not(feature = "jetstream"), allow(unused_imports))]
pub use replica::{Precheck, ReplicatedEvent};
pub use snapshots::{FoldPlan, Replay, Snapshot};
pub use subscription::Subscription;

/// The steps of an append a test hook can stop at ([`EventStore::with_pause_hook`]).
#[doc(hidden)]
pub use crate::log::link::Step as PauseStep;

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
    /// Category → sequence numbers, built by readers (`store/categories.rs`).
    pub(crate) categories: categories::CategoryIndex,
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
            log: Arc::new(Log::new(Arc::new(Aggregate::new(
                Arc::from(""),
                link::NONE,
            )))),
            aggregates: DashMap::default(),
            client_ids: DashMap::default(),
            ids,
            journal: None,
            id: recent::new_store_id(),
            published: EventCount::default(),
            categories: Default::default(),
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
            .or_insert_with(|| Arc::new(Aggregate::new(name, link::NONE)));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, NewEvent, Payload};
    use crate::log::link::Link;
    use crate::log::{Commit, Events};
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

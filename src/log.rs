//! The global log: commit nodes in an append-only arena, linked and
//! sequenced by the lock-free protocol of `link.rs`, and an index from
//! sequence number to node for O(1) reads.
//!
//! # Layout
//!
//! - `nodes`: the arena ([`Chunks`] of `OnceLock<Commit>`). A node id is
//!   taken with one `fetch_add` and its cell is set once, by the appending
//!   thread alone, before the id is published anywhere, so no one ever
//!   waits on that cell (`OnceLock::get` never waits). Node 1 is the
//!   sentinel that starts the chain.
//! - `index`: sequence number → node id (`AtomicU64`s, 8 bytes per
//!   event), written by whoever sequences the node before it is done.
//! - `chain`: the global log's tail ([`link::Chain`]).
//!
//! A commit holds its events' texts, built before the append takes any
//! shared step; the sequence-dependent parts of an event (sequence number,
//! generated id, version, `recorded_at`) are derived from the node's header
//! when read ([`crate::event::RecordedEvent`]). Nothing is freed while the
//! log lives: a reader gets plain references tied to the log's lifetime,
//! and ids are never reused (no ABA).
//!
//! The nodes of refused appends that had already made their node (a lost
//! race on the aggregate, or client ids claimed first) stay in the arena,
//! unlinked, until the store is dropped.

mod chunks;
pub(crate) mod link;

use crate::aggregate::Aggregate;
use crate::event::Event;
pub(crate) use chunks::CAPACITY;
use chunks::Chunks;
use crossbeam::utils::CachePadded;
use link::{Chain, Graph, Link, Step};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// One append: its header for the protocol, its aggregate, its events.
pub(crate) struct Commit {
    pub(crate) link: Link,
    pub(crate) aggregate: Arc<Aggregate>,
    pub(crate) events: Events,
}

/// A commit's events: one inline (most appends: no second allocation), or
/// a boxed batch.
#[derive(Clone)]
pub(crate) enum Events {
    One(Event),
    Many(Box<[Event]>),
}

impl std::ops::Deref for Events {
    type Target = [Event];
    fn deref(&self) -> &[Event] {
        match self {
            Events::One(e) => std::slice::from_ref(e),
            Events::Many(v) => v,
        }
    }
}

impl FromIterator<Event> for Events {
    fn from_iter<I: IntoIterator<Item = Event>>(iter: I) -> Events {
        let mut v: Vec<Event> = iter.into_iter().collect();
        match v.len() {
            1 => match v.pop() {
                Some(e) => Events::One(e),
                None => unreachable!("a vector of length 1 pops an element"),
            },
            _ => Events::Many(v.into_boxed_slice()),
        }
    }
}

impl Commit {
    /// First sequence number (the node must be done).
    pub(crate) fn first_seq(&self) -> u64 {
        match self.link.done_end() {
            Some(end) => end - self.link.count(),
            None => panic!("sequence number of a commit not yet sequenced"),
        }
    }
}

/// The global log. See the module docs.
pub(crate) struct Log {
    nodes: Chunks<OnceLock<Commit>>,
    next_id: CachePadded<AtomicU64>,
    index: Chunks<AtomicU64>,
    chain: Chain,
    /// Test hook (`EventStore::with_pause_hook`).
    pub(crate) pause: Option<fn(Step)>,
}

const SENTINEL: u64 = 1;

impl Log {
    pub(crate) fn new(nobody: Arc<Aggregate>) -> Log {
        let log = Log {
            nodes: Chunks::new(),
            next_id: CachePadded::new(AtomicU64::new(SENTINEL)),
            index: Chunks::new(),
            chain: Chain::new(SENTINEL),
            pause: None,
        };
        let id = log.add(Commit {
            link: Link::sentinel(),
            aggregate: nobody,
            events: Events::Many(Box::new([])),
        });
        assert_eq!(id, SENTINEL);
        log
    }

    /// Stores a node and returns its id (not yet published anywhere).
    pub(crate) fn add(&self, commit: Commit) -> u64 {
        // Relaxed: only uniqueness matters; the node's contents are
        // published by the `OnceLock` (Release) and, to other threads, by
        // the protocol's Release operations that carry the id.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let Some(cell) = self.nodes.get_or_alloc(id) else {
            panic!("commit arena full ({id} nodes)");
        };
        assert!(cell.set(commit).is_ok(), "node {id} stored twice");
        self.nodes.allocate_ahead(id);
        id
    }

    /// The node `id` (which must exist).
    pub(crate) fn commit(&self, id: u64) -> &Commit {
        match self.nodes.get(id).and_then(OnceLock::get) {
            Some(c) => c,
            None => panic!("node {id} used before it was stored"),
        }
    }

    pub(crate) fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Highest visible sequence number (0 when the log is empty).
    pub(crate) fn head(&self) -> u64 {
        link::head(self, &self.chain)
    }

    /// The commit holding `seq` and the event's index in it, for `seq` at
    /// or below a head this thread has read ([`Log::head`]).
    pub(crate) fn locate(&self, seq: u64) -> Option<(&Commit, usize)> {
        if seq == 0 {
            return None;
        }
        // Relaxed: written before the node's `end` Release, which the
        // caller's `head` acquired (see `link.rs`).
        let id = self.index.get(seq - 1)?.load(Ordering::Relaxed);
        if id == link::NONE {
            return None;
        }
        let commit = self.commit(id);
        let first = commit.first_seq();
        assert!(
            (first..first + commit.link.count()).contains(&seq),
            "index entry {seq} names node {id}, which holds {first}.."
        );
        Some((commit, (seq - first) as usize))
    }
}

impl Graph for Log {
    fn link(&self, id: u64) -> &Link {
        &self.commit(id).link
    }

    fn publish(&self, id: u64, first: u64, count: u64) {
        for seq in first..first + count {
            let Some(entry) = self.index.get_or_alloc(seq - 1) else {
                // Appends check the capacity first (`EventStore::append`).
                panic!("sequence number {seq} beyond the log's capacity");
            };
            // Relaxed: published by the node's `end` (see `link.rs`); every
            // helper stores the same id.
            entry.store(id, Ordering::Relaxed);
        }
        self.index.allocate_ahead(first + count - 1);
    }

    fn last_of(&self, id: u64) -> &AtomicU64 {
        &self.commit(id).aggregate.last
    }

    fn pause(&self, step: Step) -> bool {
        // The store's hook may block the thread, never abandon the step.
        if let Some(hook) = self.pause {
            hook(step);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_event_commit_stays_compact() {
        // Per one-event append: this arena cell (the event inline), 8 bytes
        // of index and the event's packed text. Measured: event 32, link
        // 48, commit 88, cell 96 bytes (x86_64).
        assert!(std::mem::size_of::<Event>() <= 32);
        assert!(std::mem::size_of::<Link>() <= 48);
        let cell = std::mem::size_of::<OnceLock<Commit>>();
        assert!(cell <= 96, "{cell} bytes");
    }
}

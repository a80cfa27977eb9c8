//! An aggregate's entry: what the store's `DashMap` holds for each
//! aggregate id, shared by the map, the commits of its events and readers.
//!
//! The entry holds no lock that an append takes: the aggregate's version is
//! the version after `last`, the id of its latest reserved commit, which
//! appends compare-and-swap (the protocol, with its orderings, is in
//! `src/log/link.rs`). Along `last` and the commits' `prev` pointers lies the
//! aggregate's history, newest first.
//!
//! The latest snapshot sits behind its own small mutex: only snapshot
//! writes and reads take it, never an append, so nothing an append waits
//! for is held there (and it is held only to swap or clone an `Arc`).
//!
//! This module sits below the log (a commit holds its aggregate's entry)
//! and knows nothing of it: the value of `last` before the first commit is
//! the log's to give ([`Aggregate::new`]). What readers build on the entry
//! lives here too: the version index (`versions.rs`) and the cache of
//! folded states (`state_cache.rs`).

pub(crate) mod state_cache;
pub(crate) mod versions;

use crate::types::Version;
use parking_lot::Mutex;
use state_cache::StateCache;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use versions::VersionIndex;

/// One aggregate (stream). Shared by the map and by each of its commits.
#[derive(Debug)]
pub struct Aggregate {
    name: Arc<str>,
    /// Id of the latest reserved commit (`link::NONE`: no events yet).
    pub(crate) last: AtomicU64,
    /// The latest snapshot.
    pub(crate) snapshot: Mutex<Option<Arc<SnapshotRecord>>>,
    /// Version → commit node, built by readers on first use (`versions.rs`).
    pub(crate) versions: OnceLock<Box<VersionIndex>>,
    /// Folded states kept for reads (`state_cache.rs`); appends never
    /// touch it.
    pub(crate) states: StateCache,
}

impl Aggregate {
    /// An entry with no commit yet: `last` holds `none`, the log's id for
    /// "no commit" (`link::NONE`).
    pub(crate) fn new(name: Arc<str>, none: u64) -> Aggregate {
        Aggregate {
            name,
            last: AtomicU64::new(none),
            snapshot: Mutex::new(None),
            versions: OnceLock::new(),
            states: StateCache::default(),
        }
    }

    /// The aggregate's id.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A stored snapshot, as the entry's snapshot slot holds it (its state may
/// not be folded yet: see `store/snapshots.rs`).
#[derive(Debug)]
pub struct SnapshotRecord {
    pub(crate) version: Version,
    pub(crate) state: SnapshotState,
}

#[derive(Debug)]
pub(crate) enum SnapshotState {
    /// The state a client gave.
    Given(Box<str>),
    /// The fold of the first `version` events, computed on first read.
    Folded(OnceLock<Box<str>>),
}

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

use super::versions::VersionIndex;
use crate::snapshot::SnapshotRecord;
use crate::state_cache::StateCache;
use parking_lot::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

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
    pub(crate) fn new(name: Arc<str>) -> Aggregate {
        Aggregate {
            name,
            last: AtomicU64::new(crate::log::link::NONE),
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

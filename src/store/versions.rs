//! An aggregate's version index: version → commit node, so that reads find
//! any version in O(1) instead of walking the aggregate's commits back from
//! its last one.
//!
//! The index is a hint filled after the fact: an append, once its node is
//! linked, stores the node under each version it holds. An append stopped
//! between linking and indexing (preempted, paused) leaves a hole that a
//! reader bridges by walking the commits (`EventStore::stream_slice`), so
//! nobody ever waits for the index, and a version is only looked up once
//! it is visible (at or below the aggregate's visible version), when its
//! node is linked and sequenced.
//!
//! Storage: buckets of 1, 2, 4, … slots (bucket `b` holds versions
//! `2^b ..= 2^(b+1) - 1`), each allocated on first use outside its
//! `OnceLock` and offered to it (the loser drops its copy), so memory
//! stays within twice what is used and an empty aggregate costs 40 empty
//! cells.
//!
//! Orderings: a slot holds `node + 1` (0: empty), stored `Release` after
//! the node is linked; a reader `Acquire`-loads it, and so sees the node's
//! sequencing (its first sequence number), which the storing thread saw
//! when `link` returned.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets: versions up to 2⁴⁰ − 1 (the log holds at most 2³⁸ events).
const BUCKETS: usize = 40;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct VersionIndex {
    buckets: [OnceLock<Box<[AtomicU64]>>; BUCKETS],
}

impl Default for VersionIndex {
    fn default() -> Self {
        VersionIndex {
            buckets: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

/// Bucket and offset of `version` (≥ 1).
fn locate(version: u64) -> (usize, usize) {
    let bucket = 63 - version.leading_zeros() as usize;
    (bucket, (version - (1 << bucket)) as usize)
}

impl VersionIndex {
    /// Records that `version` is held by commit `node`.
    pub(crate) fn set(&self, version: u64, node: u64) {
        let (bucket, offset) = locate(version);
        let Some(cell) = self.buckets.get(bucket) else {
            panic!("version {version} beyond the index");
        };
        if cell.get().is_none() {
            // Allocated outside the cell; losing the race drops our copy.
            let _ = cell.set((0..1usize << bucket).map(|_| AtomicU64::new(0)).collect());
        }
        let Some(slots) = cell.get() else {
            panic!("a OnceLock is empty right after being set");
        };
        // Release: see the module docs.
        slots[offset].store(node + 1, Ordering::Release);
    }

    /// The commit node holding `version`, if indexed yet.
    pub(crate) fn get(&self, version: u64) -> Option<u64> {
        if version == 0 {
            return None;
        }
        let (bucket, offset) = locate(version);
        let slots = self.buckets.get(bucket)?.get()?;
        // Acquire: see the module docs.
        slots[offset].load(Ordering::Acquire).checked_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_onto_doubling_buckets() {
        assert_eq!(locate(1), (0, 0));
        assert_eq!(locate(2), (1, 0));
        assert_eq!(locate(3), (1, 1));
        assert_eq!(locate(4), (2, 0));
        assert_eq!(locate(1023), (9, 511));
        let index = VersionIndex::default();
        for v in 1..5000 {
            assert_eq!(index.get(v), None);
            index.set(v, v * 10);
        }
        for v in 1..5000 {
            assert_eq!(index.get(v), Some(v * 10));
        }
        assert_eq!(index.get(0), None);
    }
}

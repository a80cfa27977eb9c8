//! An aggregate's version index: version → commit node, so that reads find
//! any version in O(1) instead of walking the aggregate's commits back from
//! its last one.
//!
//! Readers build it, appenders never touch it: a reader that needs a
//! version past the indexed prefix walks the commits back from the
//! aggregate's last visible one down to that prefix, stores each node under
//! its versions, then raises the prefix (`indexed`). So the first read of a
//! long aggregate pays one walk, later reads only walk what was appended
//! since, appends pay nothing, and an aggregate nobody reads by version
//! has no index at all (`Aggregate::versions` is created on first use).
//! Two readers filling the same versions store the same nodes.
//!
//! Storage: buckets of 1, 2, 4, … slots (bucket `b` holds versions
//! `2^b ..= 2^(b+1) - 1`), each allocated on first use outside its
//! `OnceLock` and offered to it (the loser drops its copy), so memory
//! stays within twice what is used and an empty aggregate costs 40 empty
//! cells.
//!
//! Orderings: every slot at or below `indexed` is set. A filler stores its
//! slots, then raises `indexed` with a `Release` `fetch_max`; a reader
//! `Acquire`-loads `indexed` and then reads slots below it (Relaxed), and
//! so sees them and what the filler saw of their nodes (linked and
//! sequenced: they were visible to it).

use crate::once::get_or_offer;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets: versions up to 2⁴⁰ − 1 (the log holds at most 2³⁸ events).
const BUCKETS: usize = 40;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct VersionIndex {
    /// Every version `1..=indexed` has its slot set.
    indexed: AtomicU64,
    buckets: [OnceLock<Box<[AtomicU64]>>; BUCKETS],
}

impl Default for VersionIndex {
    fn default() -> Self {
        VersionIndex {
            indexed: AtomicU64::new(0),
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
        let slots = get_or_offer(cell, || {
            (0..1usize << bucket).map(|_| AtomicU64::new(0)).collect()
        });
        // Relaxed: published by the `Release` raise of `indexed`.
        slots[offset].store(node + 1, Ordering::Relaxed);
    }

    /// The versions indexed so far (`1..=` it).
    pub(crate) fn indexed(&self) -> u64 {
        // Acquire: pairs with `raise` (see the module docs).
        self.indexed.load(Ordering::Acquire)
    }

    /// Declares `1..=version` indexed: every slot up to it is set.
    pub(crate) fn raise(&self, version: u64) {
        self.indexed.fetch_max(version, Ordering::Release);
    }

    /// The commit node holding `version` (at most [`VersionIndex::indexed`]).
    pub(crate) fn get(&self, version: u64) -> Option<u64> {
        if version == 0 {
            return None;
        }
        let (bucket, offset) = locate(version);
        let slots = self.buckets.get(bucket)?.get()?;
        // Relaxed: see `set`.
        slots[offset].load(Ordering::Relaxed).checked_sub(1)
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

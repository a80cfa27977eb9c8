//! An append-only array of fixed chunks: index → `&T`, growing without
//! moving anything, never freeing while it lives.
//!
//! Chunks of 16 Ki elements are found through a two-level directory of
//! `OnceLock`ed pointers (4 Ki tables of 4 Ki chunks: room for 2³⁸
//! elements). A reader gets a plain `&T` tied to the array's lifetime.
//! Fixed-size chunks keep memory within one chunk of what is used and make
//! every chunk allocation equally cheap.
//!
//! Missing tables and chunks are allocated *before* being offered to the
//! directory cell (`OnceLock::set`; the loser drops its copy), so a thread
//! installing a chunk never waits while another allocates: the only wait
//! left is the standard library's own few instructions between claiming a
//! cell and storing its pointer. Callers allocate ahead (see `Log`), so
//! installs are rare and rarely contended.

use crate::once::get_or_offer;
use std::sync::OnceLock;

/// log2 of the elements in a chunk.
const CHUNK_BITS: u32 = 14;
/// log2 of the chunks in a table.
const TABLE_BITS: u32 = 12;
/// Tables in the directory.
const TABLES: usize = 1 << 12;
pub(crate) const CHUNK_LEN: usize = 1 << CHUNK_BITS;
const TABLE_LEN: usize = 1 << TABLE_BITS;
/// Most elements an array holds: 2³⁸ (≈ 2.7 × 10¹¹).
pub(crate) const CAPACITY: u64 = (TABLES as u64) << (TABLE_BITS + CHUNK_BITS);

type Chunk<T> = Box<[T]>;
type Table<T> = Box<[OnceLock<Chunk<T>>]>;

/// The array. See the module docs.
pub(crate) struct Chunks<T> {
    tables: Box<[OnceLock<Table<T>>]>,
}

/// Table, chunk and offset of index `i`.
fn locate(i: u64) -> (usize, usize, usize) {
    let offset = (i as usize) & (CHUNK_LEN - 1);
    let chunk = (i >> CHUNK_BITS) as usize;
    (chunk >> TABLE_BITS, chunk & (TABLE_LEN - 1), offset)
}

impl<T: Default> Chunks<T> {
    pub(crate) fn new() -> Chunks<T> {
        Chunks {
            tables: (0..TABLES).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Element `i`, if its chunk exists.
    pub(crate) fn get(&self, i: u64) -> Option<&T> {
        let (table, chunk, offset) = locate(i);
        let chunk = self.tables.get(table)?.get()?[chunk].get()?;
        Some(&chunk[offset])
    }

    /// Element `i`, allocating its table and chunk if needed. `None` only
    /// at or beyond [`CAPACITY`].
    pub(crate) fn get_or_alloc(&self, i: u64) -> Option<&T> {
        let (table, chunk, offset) = locate(i);
        let table = get_or_offer(self.tables.get(table)?, || {
            (0..TABLE_LEN).map(|_| OnceLock::new()).collect()
        });
        let chunk = get_or_offer(&table[chunk], || {
            (0..CHUNK_LEN).map(|_| T::default()).collect()
        });
        Some(&chunk[offset])
    }

    /// Allocates the chunk after `i`'s if `i` is in the last quarter of its
    /// own, so that few appends find a chunk missing.
    pub(crate) fn allocate_ahead(&self, i: u64) {
        let (_, _, offset) = locate(i);
        if offset >= CHUNK_LEN / 4 * 3 {
            let _ = self.get_or_alloc(i + (CHUNK_LEN - offset) as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_maps_indices_onto_consecutive_slots() {
        assert_eq!(locate(0), (0, 0, 0));
        assert_eq!(locate(CHUNK_LEN as u64 - 1), (0, 0, CHUNK_LEN - 1));
        assert_eq!(locate(CHUNK_LEN as u64), (0, 1, 0));
        assert_eq!(locate((CHUNK_LEN * TABLE_LEN) as u64), (1, 0, 0));
        assert_eq!(
            locate(CAPACITY - 1),
            (TABLES - 1, TABLE_LEN - 1, CHUNK_LEN - 1)
        );
    }

    #[test]
    fn elements_exist_only_once_allocated_and_never_beyond_capacity() {
        let a: Chunks<u8> = Chunks::new();
        assert!(a.get(0).is_none());
        assert!(a.get_or_alloc(0).is_some());
        assert!(a.get(CHUNK_LEN as u64 - 1).is_some());
        assert!(a.get(CHUNK_LEN as u64).is_none());
        assert!(a.get_or_alloc(CAPACITY).is_none());
    }
}

//! The global log: every event in sequence-number order, readable without
//! locks, appended through one short serial section that publishes an
//! `AtomicU64` head.
//!
//! # Layout
//!
//! Slots live in fixed chunks of 16 Ki slots (~1.2 MB), found through a
//! two-level directory of `OnceLock`ed pointers (4 Ki tables of 4 Ki
//! chunks: room for 2³⁸ events). Chunks never move and are never freed while
//! the log lives, so a reader gets a plain `&Event` tied to the log's
//! lifetime: no reference counts, no lock, no copy. Each slot is a
//! `OnceLock<Event>`: written once, by the one writer holding that sequence
//! number's turn. Fixed-size chunks keep memory within one chunk of what
//! is used and make every chunk allocation equally cheap (a doubling layout
//! was measured allocating ~75 MB at once around a million events, stalling
//! every writer behind the serial section for ~100 ms).
//!
//! # Appending: enter the section, write, publish
//!
//! 1. The writer enters the serial section ([`tail::Tail::enter`], a
//!    barging mutex: see `tail.rs` for why not a ticket queue). Its first
//!    sequence number is `published + 1`.
//! 2. It stamps `recorded_at = max(now, previous event's recorded_at)`, so
//!    timestamps never go backwards in sequence order even when the wall
//!    clock does or when two writers read it in the other order, then writes
//!    its slots.
//! 3. `published.store(last, Release)` makes them visible, and it leaves the
//!    section.
//!
//! Readers load `published` with `Acquire` and read only slots at or below
//! it. Hence the invariant the SQL-backed stores broke (a reader sees event
//! N+1 while N is still invisible, skips N for ever): here a reader always
//! sees a contiguous prefix, and an append that has returned is visible to
//! every later reader (linearizable).
//!
//! A rejected append never enters the section, so it takes no sequence
//! number (dense). The callers hold the aggregate's lock across all three
//! steps, so along one aggregate sequence numbers rise with versions.
//!
//! Nothing inside the section may panic: it would unlock without
//! publishing, and the next writer would find the slots taken. The only
//! operations there are a chunk lookup (which may allocate; allocation
//! failure aborts, it does not unwind), `OnceLock::set` on a slot nobody
//! else can reach, the caller's `build` and `persist` (which must not
//! panic either), and arithmetic.
//!
//! The section and the readers' side are [`tail::Tail`], model-checked by
//! loom in `tests/loom_tail.rs` (`scripts/loom.sh`).

mod tail;

use crate::event::Event;
use crate::time::Timestamp;
use crate::types::SequenceNumber;
use std::sync::OnceLock;
use tail::Tail;

/// log2 of the slots in a chunk.
const CHUNK_BITS: u32 = 14;
/// log2 of the chunks in a table.
const TABLE_BITS: u32 = 12;
/// Tables in the directory.
const TABLES: usize = 1 << 12;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;
const TABLE_LEN: usize = 1 << TABLE_BITS;
/// Most events a log holds: 2³⁸ (≈ 2.7 × 10¹¹).
pub(crate) const CAPACITY: u64 = (TABLES as u64) << (TABLE_BITS + CHUNK_BITS);

type Chunk = Box<[OnceLock<Event>]>;
type Table = Box<[OnceLock<Chunk>]>;

/// The append-only global log. See the module docs.
pub(crate) struct Log {
    tables: Box<[OnceLock<Table>]>,
    /// The serial section and publication: which slots are visible.
    tail: Tail,
}

/// Table, chunk and offset of a sequence number (which must be ≥ 1).
fn locate(seq: u64) -> (usize, usize, usize) {
    let i = seq - 1;
    let offset = (i as usize) & (CHUNK_LEN - 1);
    let chunk = (i >> CHUNK_BITS) as usize;
    (chunk >> TABLE_BITS, chunk & (TABLE_LEN - 1), offset)
}

fn new_chunk() -> Chunk {
    (0..CHUNK_LEN).map(|_| OnceLock::new()).collect()
}

fn new_table() -> Table {
    (0..TABLE_LEN).map(|_| OnceLock::new()).collect()
}

impl Log {
    pub(crate) fn new() -> Log {
        Log {
            tables: (0..TABLES).map(|_| OnceLock::new()).collect(),
            tail: Tail::new(),
        }
    }

    /// Highest visible sequence number (0 when the log is empty).
    pub(crate) fn head(&self) -> SequenceNumber {
        // Acquire (in `head`): pairs with the Release in `publish`, so every
        // slot at or below the value read is fully written and visible here.
        SequenceNumber(self.tail.head())
    }

    /// The event at `seq`, if it is visible.
    pub(crate) fn event(&self, seq: SequenceNumber) -> Option<&Event> {
        if seq.0 == 0 || seq > self.head() {
            return None;
        }
        let event = self.slot(seq.0).and_then(OnceLock::get);
        // Read side of the publication invariant: at or below `published`,
        // every slot is written.
        debug_assert!(event.is_some(), "published slot {seq} is empty");
        event
    }

    /// A slot written by the current section holder but maybe not yet
    /// published (for `persist` callbacks only).
    pub(crate) fn written(&self, seq: SequenceNumber) -> Option<&Event> {
        self.slot(seq.0).and_then(OnceLock::get)
    }

    /// The slot of `seq`, if its chunk exists.
    fn slot(&self, seq: u64) -> Option<&OnceLock<Event>> {
        let (table, chunk, offset) = locate(seq);
        let chunk = self.tables.get(table)?.get()?[chunk].get()?;
        Some(&chunk[offset])
    }

    /// The slot of `seq`, allocating its table and chunk if needed. `None`
    /// only beyond [`CAPACITY`], which `append` checks first.
    fn slot_or_init(&self, seq: u64) -> Option<&OnceLock<Event>> {
        let (table, chunk, offset) = locate(seq);
        let table = self.tables.get(table)?.get_or_init(new_table);
        Some(&table[chunk].get_or_init(new_chunk)[offset])
    }

    /// Appends `items.len()` events with consecutive sequence numbers and
    /// returns the first, or `None` (appending nothing) if they would not
    /// fit within [`CAPACITY`]: checked inside the serial section, where the
    /// next sequence number is known exactly, so that no append pays for a
    /// load of the contended head beforehand. `build` turns each prepared
    /// item into its event
    /// given its sequence number and timestamp; it must not panic.
    ///
    /// `now` is the caller's reading of the clock (taken before the section,
    /// to keep the clock read out of the serial section); the event gets
    /// `max(now, previous recorded_at)`.
    ///
    /// `persist` runs after the slots are written and before they are
    /// published, still in sequence order: durable stores serialise their
    /// log record there, so records reach the file in sequence order.
    pub(crate) fn append<T, I, F, P>(
        &self,
        items: I,
        now: Timestamp,
        mut build: F,
        persist: P,
    ) -> Option<SequenceNumber>
    where
        I: ExactSizeIterator<Item = T>,
        F: FnMut(SequenceNumber, Timestamp, T) -> Event,
        P: FnOnce(SequenceNumber, &Log),
    {
        let n = items.len() as u64;
        debug_assert!(n > 0, "empty append reached the log");
        // Step 1: the section; everything before `first` is published.
        let turn = self.tail.enter();
        let first = turn.first();
        if first + n - 1 > CAPACITY {
            // Nothing written: leaving the section without publishing is
            // safe here (see `Turn`).
            return None;
        }
        let recorded_at = Timestamp(now.0.max(turn.previous_recorded()));

        let mut seq = first;
        for item in items {
            let event = build(SequenceNumber(seq), recorded_at, item);
            let stored = self.slot_or_init(seq).map(|slot| slot.set(event));
            // Write side of the publication invariant: each slot is written
            // exactly once, in sequence order (and exists: checked above).
            debug_assert!(
                matches!(stored, Some(Ok(()))),
                "slot {seq} missing or written twice"
            );
            seq += 1;
        }
        debug_assert_eq!(seq, first + n, "iterator length lied");
        let last = seq - 1;
        persist(SequenceNumber(first), self);
        // Step 3. Release (in `publish`): makes the slot writes above (and
        // recorded_at) visible to whoever Acquire-loads `published`.
        turn.publish(last, recorded_at.0);

        // Outside the serial section now: if this append reached the last
        // quarter of its chunk, allocate the next one, so that writers
        // rarely allocate while others wait for the section.
        let (_, _, offset) = locate(last);
        if offset >= CHUNK_LEN / 4 * 3 {
            let _ = self.slot_or_init(last + (CHUNK_LEN - offset) as u64);
        }
        Some(SequenceNumber(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_maps_sequence_numbers_onto_consecutive_slots() {
        assert_eq!(locate(1), (0, 0, 0));
        assert_eq!(locate(CHUNK_LEN as u64), (0, 0, CHUNK_LEN - 1));
        assert_eq!(locate(CHUNK_LEN as u64 + 1), (0, 1, 0));
        assert_eq!(locate((CHUNK_LEN * TABLE_LEN) as u64 + 1), (1, 0, 0));
        assert_eq!(locate(CAPACITY), (TABLES - 1, TABLE_LEN - 1, CHUNK_LEN - 1));
        let mut prev = locate(1);
        for seq in 2..200_000u64 {
            let cur = locate(seq);
            if cur.1 == prev.1 {
                assert_eq!((cur.0, cur.2), (prev.0, prev.2 + 1));
            } else {
                assert_eq!((cur.1, cur.2, prev.2), (prev.1 + 1, 0, CHUNK_LEN - 1));
            }
            prev = cur;
        }
    }

    #[test]
    fn slots_exist_only_once_allocated_and_never_beyond_capacity() {
        let log = Log::new();
        assert!(log.slot(1).is_none());
        assert!(log.slot_or_init(1).is_some());
        assert!(log.slot(CHUNK_LEN as u64).is_some());
        assert!(log.slot(CHUNK_LEN as u64 + 1).is_none());
        assert!(log.slot_or_init(CAPACITY + 1).is_none());
    }
}

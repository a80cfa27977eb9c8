//! The global log: every event in sequence-number order, readable without
//! locks, appended through a ticket taken from one `AtomicU64`.
//!
//! # Layout
//!
//! Slots live in chunks that double in size (1 Ki, 2 Ki, 4 Ki, … slots), found
//! through a fixed directory of 53 `OnceLock`ed chunk pointers, enough for
//! 2⁶² events. Chunks never move and are never freed while the log lives, so a
//! reader gets a plain `&Event` tied to the log's lifetime: no reference
//! counts, no lock, no copy. Each slot is a `OnceLock<Event>`: written once, by
//! the one writer holding that sequence number's ticket.
//!
//! # Appending: reserve, wait for the turn, write, publish
//!
//! 1. `next.fetch_add(n)` reserves `n` consecutive sequence numbers (the
//!    ticket). The atomic's total modification order is the order of the log.
//! 2. The writer waits until `published == first - 1`: every earlier ticket
//!    has been written. Waiting is short (earlier writers are between steps 1
//!    and 4, which only move prepared values into slots) and bounded (each
//!    waits only on strictly smaller tickets, so there is no cycle).
//! 3. It stamps `recorded_at = max(now, previous event's recorded_at)`, so
//!    timestamps never go backwards in sequence order even when the wall
//!    clock does or when two writers read it in the other order, then writes
//!    its slots.
//! 4. `published.store(last, Release)` makes them visible.
//!
//! Readers load `published` with `Acquire` and read only slots at or below
//! it. Hence the invariant the SQL-backed stores broke (a reader sees event
//! N+1 while N is still invisible, skips N for ever): here a reader always
//! sees a contiguous prefix, and an append that has returned is visible to
//! every later reader (linearizable).
//!
//! A rejected append never reaches step 1, so it takes no sequence number
//! (dense). The callers hold the aggregate's lock across all four steps, so
//! along one aggregate sequence numbers rise with versions.
//!
//! Nothing between steps 1 and 4 may panic: a lost ticket would stall every
//! later writer. The only operations there are a chunk lookup (which may
//! allocate; allocation failure aborts, it does not unwind), `OnceLock::set`
//! on a slot nobody else can hold, and arithmetic.
//!
//! Steps 1, 2 and 4, and the readers' side, are [`ticket::TicketGate`],
//! model-checked by loom in `tests/loom_ticket.rs` (`scripts/loom.sh`).

mod ticket;

use crate::event::Event;
use crate::time::Timestamp;
use crate::types::SequenceNumber;
use std::sync::OnceLock;
use ticket::TicketGate;

/// log2 of the first chunk's slot count.
const FIRST_CHUNK_BITS: u32 = 10;
/// Chunks needed to cover sequence numbers up to 2⁶².
const CHUNKS: usize = 53;

type Chunk = Box<[OnceLock<Event>]>;

/// The append-only global log. See the module docs.
pub(crate) struct Log {
    chunks: [OnceLock<Chunk>; CHUNKS],
    /// Tickets and publication: which slots are written, which are visible.
    gate: TicketGate,
}

/// Chunk index and offset of a sequence number (which must be ≥ 1).
fn locate(seq: u64) -> (usize, usize) {
    let i = seq - 1 + (1 << FIRST_CHUNK_BITS);
    let chunk = (63 - i.leading_zeros() - FIRST_CHUNK_BITS) as usize;
    let offset = (i - (1 << (chunk as u32 + FIRST_CHUNK_BITS))) as usize;
    (chunk, offset)
}

fn chunk_len(chunk: usize) -> usize {
    1 << (chunk as u32 + FIRST_CHUNK_BITS)
}

fn new_chunk(chunk: usize) -> Chunk {
    (0..chunk_len(chunk)).map(|_| OnceLock::new()).collect()
}

impl Log {
    pub(crate) fn new() -> Log {
        Log {
            chunks: [const { OnceLock::new() }; CHUNKS],
            gate: TicketGate::new(),
        }
    }

    /// Highest visible sequence number (0 when the log is empty).
    pub(crate) fn head(&self) -> SequenceNumber {
        // Acquire (in `head`): pairs with the Release in `publish`, so every
        // slot at or below the value read is fully written and visible here.
        SequenceNumber(self.gate.head())
    }

    /// The event at `seq`, if it is visible.
    pub(crate) fn event(&self, seq: SequenceNumber) -> Option<&Event> {
        if seq.0 == 0 || seq > self.head() {
            return None;
        }
        let (chunk, offset) = locate(seq.0);
        let event = self.chunks[chunk].get().and_then(|c| c[offset].get());
        // Read side of the publication invariant: at or below `published`,
        // every slot is written.
        debug_assert!(event.is_some(), "published slot {seq} is empty");
        event
    }

    /// A slot written by the current ticket holder but maybe not yet
    /// published (for `persist` callbacks only).
    pub(crate) fn written(&self, seq: SequenceNumber) -> Option<&Event> {
        let (chunk, offset) = locate(seq.0);
        self.chunks[chunk].get().and_then(|c| c[offset].get())
    }

    /// Appends `items.len()` events with consecutive sequence numbers and
    /// returns the first. `build` turns each prepared item into its event
    /// given its sequence number and timestamp; it must not panic.
    ///
    /// `now` is the caller's reading of the clock (taken before the ticket,
    /// to keep the clock read out of the serial section); the event gets
    /// `max(now, previous recorded_at)`.
    ///
    /// `persist` runs after the slots are written and before they are
    /// published, still in ticket order: durable stores serialise their
    /// log record there, so records reach the file in sequence order.
    pub(crate) fn append<T, I, F, P>(
        &self,
        items: I,
        now: Timestamp,
        mut build: F,
        persist: P,
    ) -> SequenceNumber
    where
        I: ExactSizeIterator<Item = T>,
        F: FnMut(SequenceNumber, Timestamp, T) -> Event,
        P: FnOnce(SequenceNumber, &Log),
    {
        let n = items.len() as u64;
        debug_assert!(n > 0, "empty append reached the log");
        // Step 1, the ticket: a unique, consecutive range (Relaxed RMW).
        let first = self.gate.reserve(n);

        // Step 2: wait for every earlier ticket to publish (Acquire, so the
        // predecessor's recorded_at and slots are visible to us).
        self.gate.wait_turn(first);
        let recorded_at = Timestamp(now.0.max(self.gate.previous_recorded()));

        let mut seq = first;
        for item in items {
            let (chunk, offset) = locate(seq);
            let slots = self.chunks[chunk].get_or_init(|| new_chunk(chunk));
            let stored = slots[offset].set(build(SequenceNumber(seq), recorded_at, item));
            // Write side of the publication invariant: each slot is written
            // exactly once, in ticket order.
            debug_assert!(stored.is_ok(), "slot {seq} written twice");
            seq += 1;
        }
        debug_assert_eq!(seq, first + n, "iterator length lied");
        let last = seq - 1;
        persist(SequenceNumber(first), self);
        // Step 4. Release (in `publish`): makes the slot writes above (and
        // recorded_at) visible to whoever Acquire-loads `published`.
        self.gate.publish(last, recorded_at.0);

        // Outside the serial section now: if this append reached the upper
        // half of its chunk, allocate the next chunk, so that no writer
        // allocates (and initialises megabytes) while others wait on it.
        let (chunk, offset) = locate(last);
        if offset >= chunk_len(chunk) / 2 && chunk + 1 < CHUNKS {
            self.chunks[chunk + 1].get_or_init(|| new_chunk(chunk + 1));
        }
        SequenceNumber(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_maps_sequence_numbers_onto_doubling_chunks() {
        assert_eq!(locate(1), (0, 0));
        assert_eq!(locate(1024), (0, 1023));
        assert_eq!(locate(1025), (1, 0));
        assert_eq!(locate(1024 + 2048), (1, 2047));
        assert_eq!(locate(1024 + 2048 + 1), (2, 0));
        let (c, o) = locate(1 << 62);
        assert!(c < CHUNKS && o < chunk_len(c));
        // Every sequence number maps to exactly one slot: walk a range and
        // check offsets are consecutive within a chunk.
        let mut prev = locate(1);
        for seq in 2..100_000u64 {
            let cur = locate(seq);
            if cur.0 == prev.0 {
                assert_eq!(cur.1, prev.1 + 1);
            } else {
                assert_eq!(
                    (cur.0, cur.1, prev.1 + 1),
                    (prev.0 + 1, 0, chunk_len(prev.0))
                );
            }
            prev = cur;
        }
    }
}

//! One category's positions: an append-only, rising list of sequence
//! numbers, written by one thread at a time (the index's builder) and read
//! by any number of threads without a lock while it grows.
//!
//! # Layout
//!
//! A chain of segments of 4, 8, 16, … slots (`AtomicU64`s): segment `k`
//! holds list entries `4·(2^k − 1) ..< 4·(2^(k+1) − 1)`. A segment is never
//! moved or freed while the list lives, so a reader holding an `Arc` to one
//! keeps a valid view however far the writer has gone. Reaching entry `i`
//! walks `log2(i / 4 + 1)` links (at most 36 for the log's 2³⁸ events); a
//! seek for a sequence number walks the chain comparing each full segment's
//! last entry, then binary-searches one segment: O(log n) either way.
//!
//! Memory: 8 bytes per entry, plus the unused tail of the last segment
//! (less than the entries before it). A fresh segment is all zeros, which
//! the allocator hands out as untouched pages for large segments (the
//! release build folds the zero fill into a zeroed allocation), so the
//! resident cost stays close to 8 bytes per entry. A list of one entry
//! costs ~150 bytes (the list, its first segment, their `Arc`s).
//!
//! # Orderings
//!
//! The writer stores an entry's slot (Relaxed), then the list's `len`
//! (`Release`); a reader loads `len` (`Acquire`) and reads only slots below
//! it (Relaxed), so it sees them written. Segment links are `OnceLock`s
//! (set by the writer before the `len` that covers the new segment; a
//! reader's `get` is an `Acquire` load and never waits). Entries rise
//! strictly: asserted when pushed and again when read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Slots in the first segment.
const FIRST: usize = 4;

/// A list of rising sequence numbers. See the module docs.
#[derive(Debug)]
pub(crate) struct Positions {
    /// Entries published: every slot below it is set.
    len: AtomicU64,
    first: Arc<Segment>,
}

#[derive(Debug)]
struct Segment {
    slots: Box<[AtomicU64]>,
    next: OnceLock<Arc<Segment>>,
}

impl Segment {
    fn new(capacity: usize) -> Segment {
        Segment {
            // All zeros: the release build turns this into a zeroed
            // allocation (untouched pages for large segments).
            slots: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            next: OnceLock::new(),
        }
    }
}

/// The one writer of a list (the index's builder holds it).
#[derive(Debug)]
pub(crate) struct Writer {
    list: Arc<Positions>,
    /// The segment entries are added to, and the index of its first slot.
    tail: Arc<Segment>,
    tail_start: u64,
    /// Entries pushed (the list's `len`, which only this writer stores).
    len: u64,
    /// The last entry pushed (0: none).
    last: u64,
}

impl Writer {
    /// A new, empty list and its writer.
    pub(crate) fn new() -> Writer {
        let first = Arc::new(Segment::new(FIRST));
        Writer {
            list: Arc::new(Positions {
                len: AtomicU64::new(0),
                first: Arc::clone(&first),
            }),
            tail: first,
            tail_start: 0,
            len: 0,
            last: 0,
        }
    }

    /// The list, for readers.
    pub(crate) fn list(&self) -> &Arc<Positions> {
        &self.list
    }

    /// Appends the sequence numbers `first..=last`, which must all be
    /// above the last one pushed.
    pub(crate) fn push_range(&mut self, first: u64, last: u64) {
        assert!(
            first > self.last && first <= last,
            "category positions must rise: {first}..={last} after {}",
            self.last
        );
        for seq in first..=last {
            let capacity = self.tail.slots.len() as u64;
            if self.len - self.tail_start == capacity {
                let next = Arc::new(Segment::new(self.tail.slots.len() * 2));
                if self.tail.next.set(Arc::clone(&next)).is_err() {
                    panic!("a category list's segment was linked twice");
                }
                self.tail_start = self.len;
                self.tail = next;
            }
            let offset = (self.len - self.tail_start) as usize;
            // Relaxed: published by the `Release` store of `len` below.
            self.tail.slots[offset].store(seq, Ordering::Relaxed);
            self.len += 1;
        }
        self.last = last;
        // Release: publishes the slots just stored (see the module docs).
        self.list.len.store(self.len, Ordering::Release);
    }
}

impl Positions {
    /// The entries in `from..=through`, rising, as they are now (entries
    /// pushed later are not seen by this iterator).
    pub(crate) fn range(&self, from: u64, through: u64) -> Range {
        // Acquire: pairs with the writer's `Release` (see the module docs).
        let len = self.len.load(Ordering::Acquire);
        let mut segment = Arc::clone(&self.first);
        let mut start = 0u64;
        loop {
            let filled = (len - start).min(segment.slots.len() as u64) as usize;
            let full = filled == segment.slots.len() && start + (filled as u64) < len;
            // Relaxed: below `len` (see the module docs).
            if full && segment.slots[filled - 1].load(Ordering::Relaxed) < from {
                start += filled as u64;
                segment = match segment.next.get() {
                    Some(next) => Arc::clone(next),
                    None => panic!(
                        "a category list's entry {start} is published but its segment is not"
                    ),
                };
                continue;
            }
            let offset = segment.slots[..filled]
                // Relaxed: below `len`.
                .partition_point(|s| s.load(Ordering::Relaxed) < from);
            return Range {
                segment,
                offset,
                left: len - start - offset as u64,
                through,
                previous: 0,
            };
        }
    }
}

/// An iterator over a list's entries up to a bound ([`Positions::range`]).
#[derive(Debug)]
pub(crate) struct Range {
    segment: Arc<Segment>,
    offset: usize,
    /// Published entries not yet read.
    left: u64,
    through: u64,
    previous: u64,
}

impl Iterator for Range {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.left == 0 {
            return None;
        }
        if self.offset == self.segment.slots.len() {
            self.segment = match self.segment.next.get() {
                Some(next) => Arc::clone(next),
                None => panic!("a published category entry has no segment"),
            };
            self.offset = 0;
        }
        // Relaxed: below the `len` this range acquired.
        let seq = self.segment.slots[self.offset].load(Ordering::Relaxed);
        assert!(
            seq > self.previous,
            "category positions must rise: {seq} after {}",
            self.previous
        );
        if seq > self.through {
            self.left = 0;
            return None;
        }
        self.previous = seq;
        self.offset += 1;
        self.left -= 1;
        Some(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_find_their_start_in_every_segment() {
        let mut w = Writer::new();
        let list = Arc::clone(w.list());
        assert_eq!(list.range(0, u64::MAX).count(), 0);
        // Odd sequence numbers 1, 3, …, 2·1000 − 1 across ~8 segments.
        for i in 0..1000 {
            w.push_range(2 * i + 1, 2 * i + 1);
        }
        let all: Vec<u64> = list.range(0, u64::MAX).collect();
        assert_eq!(all, (0..1000).map(|i| 2 * i + 1).collect::<Vec<_>>());
        for from in [0, 1, 2, 3, 6, 7, 8, 59, 60, 61, 1000, 1998, 1999, 2000] {
            for through in [0, 1, 7, 500, 1999, u64::MAX] {
                let want: Vec<u64> = all
                    .iter()
                    .copied()
                    .filter(|s| (from..=through).contains(s))
                    .collect();
                let got: Vec<u64> = list.range(from, through).collect();
                assert_eq!(got, want, "{from}..={through}");
            }
        }
    }

    #[test]
    fn a_range_keeps_the_view_it_started_with() {
        let mut w = Writer::new();
        w.push_range(1, 10);
        let before = w.list().range(0, u64::MAX);
        w.push_range(20, 30);
        assert_eq!(before.count(), 10);
        assert_eq!(w.list().range(5, 25).collect::<Vec<_>>().len(), 6 + 6);
    }

    #[test]
    #[should_panic(expected = "must rise")]
    fn entries_must_rise() {
        let mut w = Writer::new();
        w.push_range(5, 6);
        w.push_range(6, 6);
    }

    #[test]
    fn readers_on_other_threads_see_a_rising_prefix() {
        let mut w = Writer::new();
        let list = Arc::clone(w.list());
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut seen = 0;
                while seen < 5_000 {
                    let got: Vec<u64> = list.range(0, u64::MAX).collect();
                    assert!(got.len() >= seen);
                    assert!(got.iter().zip(1..).all(|(s, i)| *s == 3 * i));
                    seen = got.len();
                }
            });
            for i in 1..=5_000 {
                w.push_range(3 * i, 3 * i);
            }
        });
    }
}

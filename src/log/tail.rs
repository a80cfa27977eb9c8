//! The log's serial section on its own: who may write which sequence
//! numbers, when, and when readers may see them. The slots themselves stay
//! in `log.rs`; this module only orders access to them.
//!
//! # A lock, not a ticket queue
//!
//! The first version handed out tickets with `fetch_add` and let each writer
//! wait (spin, then sleep) until every earlier ticket was published. That is
//! a FIFO hand-off, and FIFO hand-offs collapse when threads outnumber
//! cores: a writer preempted while holding a ticket, or while *next in
//! line*, stalls everyone behind it, and each later hand-off costs a futex
//! wake-up. Measured on 2 cores, 8 writers on 16 or 100,000 aggregates:
//! 0.08–0.22 M appends/s against 0.56–0.83 M for one `Mutex` around a
//! `HashMap` (`benches/engine.rs`).
//!
//! Now the serial section is a `parking_lot::Mutex`: whoever holds it reads
//! the next sequence number, writes its slots and publishes. The mutex is
//! *barging* (a running thread may take it ahead of a parked one), so a
//! preempted waiter delays nobody, and a preempted holder only delays the
//! threads that actually need the section during its absence — the same
//! behaviour as the one-lock baseline, with a shorter critical section
//! (no map lookup, no version check: those happen under the aggregate's own
//! lock, before). Uncontended, it is one CAS and one release store, and
//! unlike the ticket version it needs no fence to find sleepers.
//!
//! # The protocol, per append of `n` events
//!
//! 1. [`Tail::enter`] locks the section. The first sequence number is
//!    `published + 1`: everything before is published, because every
//!    holder publishes before it unlocks.
//! 2. The holder stamps `recorded_at = max(now, previous_recorded)`, writes
//!    its slots, and calls [`Turn::publish`], which stores `published` with
//!    `Release` and unlocks.
//!
//! Readers call [`Tail::head`] (`Acquire`) and read only slots at or below
//! it: a contiguous prefix, fully written.
//!
//! It is separate so that loom can check it: `tests/loom_tail.rs` includes
//! this very file (`#[path]`) and, built with `--cfg loom`, runs it on
//! loom's atomics and mutex under every interleaving (`scripts/loom.sh`).
//! Hence the rules for this file: no `crate::` paths (it is also compiled
//! inside the test crate), and every atomic and lock comes from `sync`.

use crossbeam::utils::CachePadded;
use sync::{AtomicU64, Mutex, MutexGuard, Ordering};

/// std's atomics and parking_lot's mutex, or loom's when this file is
/// compiled into a loom model test. `test` is part of the condition because
/// loom is a dev-dependency: under `--cfg loom` the library itself is still
/// built (as the test's dependency) without loom.
mod sync {
    #[cfg(all(loom, test))]
    pub(super) use loom::sync::atomic::{AtomicU64, Ordering};
    #[cfg(not(all(loom, test)))]
    pub(super) use parking_lot::{Mutex, MutexGuard};
    #[cfg(not(all(loom, test)))]
    pub(super) use std::sync::atomic::{AtomicU64, Ordering};

    /// loom's mutex with parking_lot's signature (no poisoning: a panic
    /// under the lock fails the model anyway).
    #[cfg(all(loom, test))]
    pub(super) struct Mutex<T>(loom::sync::Mutex<T>);

    #[cfg(all(loom, test))]
    pub(super) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    #[cfg(all(loom, test))]
    impl<T> Mutex<T> {
        pub(super) fn new(value: T) -> Mutex<T> {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(super) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// What only the holder of the section reads or writes.
struct Held {
    /// `recorded_at` of the event at `published`, in microseconds
    /// (`i64::MIN` before the first event).
    last_recorded_micros: i64,
}

/// The end of the log: the serial section and the published head.
pub(crate) struct Tail {
    /// Highest sequence number whose slot is written and visible. Stored
    /// only under `section`; loaded by anyone. On its own cache line, so
    /// that readers polling it do not contend with the lock word.
    published: CachePadded<AtomicU64>,
    section: Mutex<Held>,
}

/// The right to write the next sequence numbers: held from [`Tail::enter`]
/// to [`Turn::publish`]. Nothing the holder does in between may panic: the
/// section would unlock without publishing, and the next holder would find
/// slots already written. (Dropping a turn before writing anything is
/// fine: the next holder gets the same first sequence number.)
pub(crate) struct Turn<'a> {
    tail: &'a Tail,
    held: MutexGuard<'a, Held>,
    first: u64,
}

impl Tail {
    /// Nothing published, no previous timestamp.
    pub(crate) fn new() -> Tail {
        Tail {
            published: CachePadded::new(AtomicU64::new(0)),
            section: Mutex::new(Held {
                last_recorded_micros: i64::MIN,
            }),
        }
    }

    /// Waits for the serial section (see the module docs on why a barging
    /// lock) and returns the turn, whose first sequence number follows the
    /// last published one.
    pub(crate) fn enter(&self) -> Turn<'_> {
        let held = self.section.lock();
        // Relaxed: `published` is only stored under the lock we now hold,
        // so the last store is ordered before this load by the lock's own
        // acquire (and no other store can race with it).
        let first = self.published.load(Ordering::Relaxed) + 1;
        Turn {
            tail: self,
            held,
            first,
        }
    }

    /// Highest published sequence number (0 when nothing is).
    pub(crate) fn head(&self) -> u64 {
        // Acquire: pairs with the Release in `publish`, so every slot at or
        // below the value read is fully written and visible to this thread.
        self.published.load(Ordering::Acquire)
    }
}

impl Turn<'_> {
    /// The first sequence number of this turn.
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    /// `recorded_at` (microseconds) of the latest published event,
    /// `i64::MIN` before the first.
    pub(crate) fn previous_recorded(&self) -> i64 {
        self.held.last_recorded_micros
    }

    /// Makes the slots up to `last` (≥ `first`) visible, records
    /// `recorded_micros` as the latest `recorded_at`, and leaves the section.
    /// The slots must be written before this call.
    pub(crate) fn publish(mut self, last: u64, recorded_micros: i64) {
        debug_assert!(last >= self.first, "a turn publishes at least one event");
        self.held.last_recorded_micros = recorded_micros;
        // Release: makes the slot writes before this call visible to whoever
        // Acquire-loads this value (readers in `head`). The next holder sees
        // it through the lock.
        self.tail.published.store(last, Ordering::Release);
        // Dropping `self` unlocks.
    }
}

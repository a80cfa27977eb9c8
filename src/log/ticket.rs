//! The log's ticket and publication protocol on its own: who may write which
//! sequence numbers, when, and when readers may see them. The slots
//! themselves stay in `log.rs`; this module only orders access to them.
//!
//! It is separate so that loom can check it: `tests/loom_ticket.rs` includes
//! this very file (`#[path]`) and, built with `--cfg loom`, runs it on
//! loom's atomics under every interleaving and every value a weak memory
//! model allows a load to return (`scripts/loom.sh`). Hence the rules for
//! this file: no `crate::` paths (it is also compiled inside the test crate),
//! and every atomic comes from `sync` below.
//!
//! The protocol, per append of `n` events (see the `log` module docs):
//! [`reserve`](TicketGate::reserve) `n` sequence numbers,
//! [`wait_turn`](TicketGate::wait_turn) until every earlier ticket is
//! published, stamp with [`previous_recorded`](TicketGate::previous_recorded),
//! write the slots, [`publish`](TicketGate::publish). Readers call
//! [`head`](TicketGate::head) and read only slots at or below it.

use crossbeam::utils::CachePadded;
use sync::{AtomicI64, AtomicU64, Backoff, Ordering};

/// std's atomics and crossbeam's `Backoff`, or loom's atomics and a loom
/// `Backoff` when this file is compiled into a loom model test. `test` is
/// part of the condition because loom is a dev-dependency: under
/// `--cfg loom` the library itself is still built (as the test's
/// dependency) without loom, and keeps std's atomics.
mod sync {
    #[cfg(not(all(loom, test)))]
    pub(super) use crossbeam::utils::Backoff;
    #[cfg(all(loom, test))]
    pub(super) use loom::sync::atomic::{AtomicI64, AtomicU64, Ordering};
    #[cfg(not(all(loom, test)))]
    pub(super) use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

    /// Waiting for an earlier ticket holder, under loom.
    #[cfg(all(loom, test))]
    pub(super) struct Backoff {
        rounds: std::cell::Cell<u32>,
    }

    #[cfg(all(loom, test))]
    impl Backoff {
        /// Rounds of one wait after which loom stops exploring the
        /// execution (it still runs to the end, and its assertions hold).
        /// A round that reads the value `published` had in the previous
        /// one changes no state, so longer waits add no behaviour, only
        /// schedules; without a bound, loom's scheduler can alternate two
        /// waiting threads for ever and never run the one they wait on
        /// (tokio-rs/loom#53).
        const ROUNDS: u32 = 3;

        pub(super) fn new() -> Backoff {
            Backoff {
                rounds: std::cell::Cell::new(0),
            }
        }

        /// Yields to loom: this thread cannot progress until another runs
        /// (a bare spin would make loom explore the loop for ever).
        pub(super) fn snooze(&self) {
            loom::thread::yield_now();
            self.rounds.set(self.rounds.get() + 1);
            if self.rounds.get() >= Self::ROUNDS {
                loom::skip_branch();
            }
        }
    }
}

/// The state the ticket holder touches, on its own cache line so that
/// readers polling `published` do not share a line with `next`, which every
/// writer hammers.
struct Tail {
    /// Highest sequence number whose slot is written and visible.
    published: AtomicU64,
    /// `recorded_at` of the event at `published`, in microseconds. Written
    /// only by the ticket holder before it publishes, read by the next one
    /// after it has seen that publish (Acquire), so `Relaxed` suffices.
    last_recorded_micros: AtomicI64,
}

/// Rounds of spinning (crossbeam's `Backoff::snooze` spins, without
/// yielding, for its first 7 rounds: ~130 pause instructions in all) before
/// a waiter sleeps. Under loom a round yields to the model's scheduler and
/// waiters never sleep.
#[cfg(not(all(loom, test)))]
const SPIN_ROUNDS: u32 = 7;
#[cfg(all(loom, test))]
const SPIN_ROUNDS: u32 = u32::MAX;

/// Condition variables sleepers are spread over, by the sequence number
/// they wait for, so a publish wakes (almost) only the next ticket holder.
#[cfg(not(all(loom, test)))]
const WAKE_SLOTS: usize = 16;

/// Sequence-number tickets and their publication, in ticket order.
pub(crate) struct TicketGate {
    /// Highest sequence number handed out (ticket counter).
    next: CachePadded<AtomicU64>,
    tail: CachePadded<Tail>,
    /// Where writers sleep once spinning has not brought their turn
    /// (compiled out under loom, where waiters only yield).
    #[cfg_attr(all(loom, test), allow(dead_code))]
    parking: Parking,
}

/// An event count for writers waiting their turn. Spinning alone collapses
/// when threads outnumber cores: a preempted ticket holder makes every later
/// writer burn its time slice (measured: 8 writers on 2 cores fell to 0.1×
/// the Mutex baseline). After a short spin a waiter sleeps here, and a
/// publish wakes the sleepers, at the cost of one fence and one load when
/// nobody sleeps.
#[derive(Default)]
struct Parking {
    #[cfg(not(all(loom, test)))]
    sleepers: std::sync::atomic::AtomicUsize,
    #[cfg(not(all(loom, test)))]
    lock: parking_lot::Mutex<()>,
    /// A waiter for `published == k` sleeps on `wake[k % WAKE_SLOTS]`.
    #[cfg(not(all(loom, test)))]
    wake: [parking_lot::Condvar; WAKE_SLOTS],
}

impl TicketGate {
    /// Nothing reserved, nothing published, no previous timestamp
    /// (`i64::MIN`, so the first event keeps its own).
    pub(crate) fn new() -> TicketGate {
        TicketGate {
            next: CachePadded::new(AtomicU64::new(0)),
            tail: CachePadded::new(Tail {
                published: AtomicU64::new(0),
                last_recorded_micros: AtomicI64::new(i64::MIN),
            }),
            parking: Parking::default(),
        }
    }

    /// Reserves `n` (≥ 1) consecutive sequence numbers and returns the first.
    /// The caller must go on to `wait_turn` and `publish` them, without
    /// panicking in between: a lost ticket stalls every later writer.
    pub(crate) fn reserve(&self, n: u64) -> u64 {
        // Relaxed: the ticket only needs the RMW's atomicity (a unique,
        // consecutive range); ordering with other memory is done by the
        // Acquire/Release pair on `published`.
        self.next.fetch_add(n, Ordering::Relaxed) + 1
    }

    /// Waits until every ticket before `first` is published, i.e. until
    /// `published == first - 1`. Bounded: each writer waits only on strictly
    /// smaller tickets, so there is no cycle.
    pub(crate) fn wait_turn(&self, first: u64) {
        let backoff = Backoff::new();
        // Acquire: pairs with the predecessor's Release in `publish`, so its
        // `last_recorded_micros` (read next, in `previous_recorded`) and its
        // slot writes are visible to this thread.
        let mut rounds = 0;
        while self.tail.published.load(Ordering::Acquire) != first - 1 {
            if rounds == SPIN_ROUNDS {
                self.sleep_until_turn(first);
                return;
            }
            rounds += 1;
            backoff.snooze();
        }
    }

    /// The sleeping half of `wait_turn` (never under loom).
    #[cfg(not(all(loom, test)))]
    fn sleep_until_turn(&self, first: u64) {
        use std::sync::atomic::{Ordering as O, fence};
        let p = &self.parking;
        p.sleepers.fetch_add(1, O::Relaxed);
        // SeqCst fence, paired with the one in `publish` (Dekker): either
        // the publisher sees `sleepers > 0` and notifies, or this thread sees
        // its `published` store below. Both cannot miss the other.
        fence(O::SeqCst);
        let mut guard = p.lock.lock();
        // Checked under the lock: a publisher notifies under it too, so no
        // wake-up falls between this check and `wait`.
        let wake = &p.wake[(first - 1) as usize % WAKE_SLOTS];
        while self.tail.published.load(Ordering::Acquire) != first - 1 {
            wake.wait(&mut guard);
        }
        drop(guard);
        p.sleepers.fetch_sub(1, O::Relaxed);
    }

    #[cfg(all(loom, test))]
    fn sleep_until_turn(&self, _first: u64) {}

    /// `recorded_at` (microseconds) of the event at `published`, `i64::MIN`
    /// before the first. Meaningful to the ticket holder after `wait_turn`.
    pub(crate) fn previous_recorded(&self) -> i64 {
        // Relaxed: ordered after the predecessor's store by the Acquire in
        // `wait_turn` (and nobody else writes it until we publish).
        self.tail.last_recorded_micros.load(Ordering::Relaxed)
    }

    /// Makes the slots up to `last` (the holder's last sequence number)
    /// visible, recording `recorded_micros` as the latest `recorded_at`. The
    /// slots must be written before this call.
    pub(crate) fn publish(&self, last: u64, recorded_micros: i64) {
        // Relaxed: published by the Release store below.
        self.tail
            .last_recorded_micros
            .store(recorded_micros, Ordering::Relaxed);
        // Release: makes the slot writes before this call (and
        // last_recorded_micros) visible to whoever Acquire-loads this value:
        // readers in `head`, the next ticket holder in `wait_turn`.
        self.tail.published.store(last, Ordering::Release);
        self.wake_next(last);
    }

    /// Wakes whoever sleeps waiting for `published == last` (all sleepers
    /// sharing its slot; the others re-check and sleep again).
    #[cfg(not(all(loom, test)))]
    fn wake_next(&self, last: u64) {
        use std::sync::atomic::{Ordering as O, fence};
        // SeqCst fence: see `sleep_until_turn`.
        fence(O::SeqCst);
        let p = &self.parking;
        if p.sleepers.load(O::Relaxed) > 0 {
            let _guard = p.lock.lock();
            p.wake[last as usize % WAKE_SLOTS].notify_all();
        }
    }

    #[cfg(all(loom, test))]
    fn wake_next(&self, _last: u64) {}

    /// Highest published sequence number (0 when nothing is).
    pub(crate) fn head(&self) -> u64 {
        // Acquire: pairs with the Release in `publish`, so every slot at or
        // below the value read is fully written and visible to this thread.
        self.tail.published.load(Ordering::Acquire)
    }
}

//! The serial apply order: batch numbers, and the turns in which batches
//! apply to the protocol core.
//!
//! Every batch has a number from one counter ([`Sequencer::take`]), in the
//! order the numbers are taken. A batch applies to the [`Core`] only in
//! its turn ([`Sequencer::in_turn`]: when every lower number has applied),
//! and the output (`output.rs`) writes batches in number order, so every
//! number taken must be applied (or have its turn skipped) and finished.
//!
//! Numbers are taken by the reader, one per input batch, and — on a node
//! with a replicated backend — by the idle pusher (`idle.rs`), for a
//! *virtual batch* that has no input: it applies in its own turn like any
//! batch, so its `event` messages take their place in the output exactly
//! as a reply's would. The pusher takes a number only through
//! [`Sequencer::in_idle_turn`], which never waits: it succeeds only when
//! no batch is applying or waiting to apply.
//!
//! # Locks and atomics
//!
//! - `turn` (a mutex) holds the next number to apply and the core. A batch
//!   holds it for the whole of its apply step (that is the serial step);
//!   threads waiting for their turn sleep on `advanced`, which releases it.
//!   [`Sequencer::in_idle_turn`] only *tries* the lock.
//! - `numbers` is the counter. `Relaxed` everywhere: a number only has to
//!   be unique and every number below it taken, which the atomic
//!   read-modify-writes give in any ordering (they are totally ordered on
//!   the one location); no other data is published through it (a batch's
//!   bytes reach its worker through the channel, and the apply step
//!   through the `turn` mutex). `in_idle_turn` takes a number with a
//!   compare-exchange from the next number to apply, while holding `turn`:
//!   it succeeds only if no number was taken that has not applied yet (a
//!   number taken concurrently by the reader is then the next one, and
//!   waits for the virtual batch's turn like any other).

use crate::protocol::Core;
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers batches and admits them to the serial apply step in order.
pub(super) struct Sequencer {
    /// The next number [`Sequencer::take`] hands out.
    numbers: AtomicU64,
    /// The number of the next batch to apply, and the state it applies to.
    turn: Mutex<(u64, Core)>,
    /// Signalled whenever the turn advances.
    advanced: Condvar,
}

/// What [`Sequencer::in_idle_turn`] did.
pub(super) enum IdleTurn<D, R> {
    /// A batch is applying, or numbered and waiting to apply (or another
    /// thread is checking its turn): no number taken; try again later.
    Busy,
    /// The `decide` step declined, saying why; no number taken.
    Declined(D),
    /// Applied in turn number `.0`, which the caller must finish in the
    /// output.
    Applied(u64, R),
}

impl Sequencer {
    /// A sequencer for `core`, numbering from 0.
    pub(super) fn new(core: Core) -> Sequencer {
        Sequencer {
            numbers: AtomicU64::new(0),
            turn: Mutex::new((0, core)),
            advanced: Condvar::new(),
        }
    }

    /// The next batch number.
    pub(super) fn take(&self) -> u64 {
        self.numbers.fetch_add(1, Ordering::Relaxed)
    }

    /// Waits until batch `index` is next, runs `apply` on the core, and
    /// admits the next batch — also if `apply` panics, so one bad batch
    /// cannot stall the node.
    pub(super) fn in_turn<R>(&self, index: u64, apply: impl FnOnce(&mut Core) -> R) -> R {
        let mut guard = self.turn.lock();
        while guard.0 != index {
            self.advanced.wait(&mut guard);
        }
        let mut turn = Advance(self, guard);
        apply(&mut turn.1.1)
    }

    /// Without waiting for anything: if no batch is applying or numbered
    /// and waiting, and `decide` agrees (`Ok`), takes the next number and
    /// runs `apply` on the core in that turn (see the module docs).
    pub(super) fn in_idle_turn<D, R>(
        &self,
        decide: impl FnOnce(&Core) -> Result<(), D>,
        apply: impl FnOnce(&mut Core) -> R,
    ) -> IdleTurn<D, R> {
        let Some(guard) = self.turn.try_lock() else {
            return IdleTurn::Busy;
        };
        let index = guard.0;
        if self.numbers.load(Ordering::Relaxed) != index {
            return IdleTurn::Busy;
        }
        if let Err(why) = decide(&guard.1) {
            return IdleTurn::Declined(why);
        }
        if self
            .numbers
            .compare_exchange(index, index + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            // The reader took `index` since the load above.
            return IdleTurn::Busy;
        }
        let mut turn = Advance(self, guard);
        IdleTurn::Applied(index, apply(&mut turn.1.1))
    }
}

/// The turn being held: dropping it (also while unwinding) admits the next
/// batch.
struct Advance<'a>(&'a Sequencer, MutexGuard<'a, (u64, Core)>);

impl Drop for Advance<'_> {
    fn drop(&mut self) {
        self.1.0 += 1;
        // Wake every waiter: only the one holding the next number proceeds,
        // the others wait again. With a handful of workers this is cheaper
        // than per-number condition variables.
        self.0.advanced.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventStore;
    use std::sync::Arc;
    use std::sync::mpsc;

    fn sequencer() -> Sequencer {
        Sequencer::new(Core::new(Arc::new(EventStore::new())))
    }

    fn idle(s: &Sequencer, decide: Result<(), &'static str>) -> IdleTurn<&'static str, ()> {
        s.in_idle_turn(|_| decide, |_| ())
    }

    #[test]
    fn an_idle_turn_takes_the_next_number_only_when_nothing_waits() {
        let s = sequencer();
        assert!(matches!(idle(&s, Err("no")), IdleTurn::Declined("no")));
        assert!(matches!(idle(&s, Ok(())), IdleTurn::Applied(0, ())));
        // The reader's next batch comes after it.
        let one = s.take();
        assert_eq!(one, 1);
        // Numbered, not applied: busy, and no number taken.
        assert!(matches!(idle(&s, Ok(())), IdleTurn::Busy));
        s.in_turn(one, |_| ());
        assert!(matches!(idle(&s, Ok(())), IdleTurn::Applied(2, ())));
        assert_eq!(s.take(), 3);
    }

    #[test]
    fn an_idle_turn_never_waits_for_a_batch_applying() {
        let s = sequencer();
        let index = s.take();
        let (applying_tx, applying_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let s = &s;
            scope.spawn(move || {
                s.in_turn(index, |_| {
                    applying_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                })
            });
            applying_rx.recv().unwrap();
            assert!(matches!(idle(s, Ok(())), IdleTurn::Busy));
            release_tx.send(()).unwrap();
        });
        assert!(matches!(idle(&s, Ok(())), IdleTurn::Applied(1, ())));
    }
}

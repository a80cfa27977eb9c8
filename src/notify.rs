//! An event count: how subscribers wait for the log to grow without the
//! log ever waiting for them.
//!
//! A writer, after publishing (a `Release` store of the head), calls
//! [`EventCount::notify`]; a reader that found nothing new calls
//! [`EventCount::wait_until`] with its condition ("the head passed my
//! position").
//!
//! # Why no wake-up is lost
//!
//! The writer does: publish; `fence(SeqCst)`; load `waiters`. The waiter
//! does: increment `waiters`; `fence(SeqCst)`; check its condition (which
//! loads the head). The two fences are totally ordered, so either the
//! writer's load sees the waiter counted — and the writer takes the lock
//! and wakes every sleeper — or the waiter's check sees the new head and
//! does not sleep. The waiter checks its condition again under the lock
//! before each sleep, and the writer notifies under the same lock, so a
//! notification can never fall between that check and the sleep.
//!
//! # Cost
//!
//! With nobody waiting, `notify` is one fence and one load: no lock, no
//! shared write. With waiters, the writer takes a lock that only sleepers
//! and other notifiers use (never another append), for one `notify_all`.

use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::time::Instant;

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct EventCount {
    /// Threads inside `wait_until`.
    waiters: AtomicUsize,
    lock: Mutex<()>,
    woken: Condvar,
}

impl EventCount {
    /// Wakes every waiter; call after publishing what they wait for.
    pub(crate) fn notify(&self) {
        // Orders the caller's publication before the load of `waiters`
        // (pairs with the fence in `wait_until`).
        fence(Ordering::SeqCst);
        // Relaxed: the fences order it; a stale 0 is impossible by them.
        if self.waiters.load(Ordering::Relaxed) == 0 {
            return;
        }
        let _guard = self.lock.lock();
        self.woken.notify_all();
    }

    /// Waits until `ready()` holds or `deadline` passes (never, if `None`);
    /// returns whether it holds.
    pub(crate) fn wait_until(&self, ready: impl Fn() -> bool, deadline: Option<Instant>) -> bool {
        if ready() {
            return true;
        }
        // Relaxed increment, then the fence (pairs with `notify`'s): see
        // the module docs.
        self.waiters.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let mut guard = self.lock.lock();
        let holds = loop {
            if ready() {
                break true;
            }
            match deadline {
                Some(at) => {
                    if self.woken.wait_until(&mut guard, at).timed_out() {
                        break ready();
                    }
                }
                None => self.woken.wait(&mut guard),
            }
        };
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        holds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    #[test]
    fn ping_pong_without_timeouts_never_hangs() {
        // Two threads take turns, each waiting (no deadline) for the other's
        // publication: a single lost wake-up hangs this test.
        let ping = Arc::new((EventCount::default(), AtomicU64::new(0)));
        let pong = Arc::new((EventCount::default(), AtomicU64::new(0)));
        let (pi, po) = (Arc::clone(&ping), Arc::clone(&pong));
        let other = std::thread::spawn(move || {
            for i in 1..=20_000 {
                pi.0.wait_until(|| pi.1.load(Ordering::Acquire) >= i, None);
                po.1.store(i, Ordering::Release);
                po.0.notify();
            }
        });
        for i in 1..=20_000 {
            ping.1.store(i, Ordering::Release);
            ping.0.notify();
            pong.0
                .wait_until(|| pong.1.load(Ordering::Acquire) >= i, None);
        }
        other.join().unwrap();
    }

    #[test]
    fn a_deadline_ends_the_wait() {
        let count = EventCount::default();
        let at = Instant::now() + Duration::from_millis(20);
        assert!(!count.wait_until(|| false, Some(at)));
        assert!(Instant::now() >= at);
        assert!(count.wait_until(|| true, None));
    }
}

//! An event count: how subscribers wait for the log to grow without the
//! log ever waiting for them.
//!
//! A writer, after publishing (a `Release` store of the head), calls
//! [`EventCount::notify`]; a reader that found nothing new calls
//! [`EventCount::wait_until`] with its condition ("the head passed my
//! position").
//!
//! # The writer takes no lock
//!
//! `notify` is a fence, a load of `waiters` and, only when someone waits, a
//! condition-variable broadcast (a futex wake: no user-space lock), so a
//! writer never waits for a subscriber, however the subscriber was stopped.
//! The mutex beside the condition variable is taken by waiters only.
//!
//! # Why a wake-up is never lost for long
//!
//! The writer does: publish; `fence(SeqCst)`; load `waiters`. The waiter
//! does: increment `waiters`; `fence(SeqCst)`; check its condition (which
//! loads the head). The two fences are totally ordered, so either the
//! writer's load sees the waiter counted — and the writer broadcasts — or
//! the waiter's check sees the new head and does not sleep. A broadcast can
//! still fall between a waiter's last check and the moment it sleeps (the
//! writer does not take the waiter's lock, so nothing orders the two), so
//! every sleep is a nap bounded by a timeout that doubles from
//! [`MIN_NAP`] to [`MAX_NAP`] while nothing comes: such a lost broadcast
//! costs at most `MAX_NAP` of latency, never an event, and an idle
//! subscriber wakes a few hundred times a second at most.
//!
//! # Cost
//!
//! With nobody waiting, `notify` is one fence and one load: no lock, no
//! shared write.

use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The first nap of a waiter.
pub(crate) const MIN_NAP: Duration = Duration::from_micros(50);
/// The longest nap: the most a wake-up lost between a waiter's check and
/// its sleep can delay it.
pub(crate) const MAX_NAP: Duration = Duration::from_millis(2);

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct EventCount {
    /// Threads inside `wait_until`.
    waiters: AtomicUsize,
    /// Taken by waiters only (a condition variable needs one).
    lock: Mutex<()>,
    woken: Condvar,
}

impl EventCount {
    /// Wakes every waiter; call after publishing what they wait for.
    pub(crate) fn notify(&self) {
        // Orders the caller's publication before the load of `waiters`
        // (pairs with the fence in `wait_until`).
        fence(Ordering::SeqCst);
        // Relaxed: the fences order it.
        if self.waiters.load(Ordering::Relaxed) == 0 {
            return;
        }
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
        let mut nap = MIN_NAP;
        let holds = loop {
            if ready() {
                break true;
            }
            let now = Instant::now();
            let until = match deadline {
                Some(at) if at <= now => break false,
                Some(at) => at.min(now + nap),
                None => now + nap,
            };
            let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            // Woken, timed out or spurious: the loop checks again.
            drop(
                self.woken
                    .wait_timeout(guard, until.saturating_duration_since(now))
                    .unwrap_or_else(PoisonError::into_inner),
            );
            nap = (nap * 2).min(MAX_NAP);
        };
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
    fn a_writer_never_waits_for_a_stopped_waiter() {
        // A waiter stopped while holding the waiters' lock (as if preempted
        // inside `wait_until`): `notify` must still return at once.
        let count = Arc::new(EventCount::default());
        count.waiters.fetch_add(1, Ordering::Relaxed);
        let held = count.lock.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let c = Arc::clone(&count);
        std::thread::spawn(move || {
            c.notify();
            let _ = tx.send(());
        });
        let returned = rx.recv_timeout(Duration::from_secs(30)).is_ok();
        drop(held);
        assert!(returned, "notify waited for the waiters' lock");
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

//! The view's head as the writers see it: the highest sequence number the
//! event follower has applied, and the writers waiting for it to pass a
//! sequence number of theirs.
//!
//! # Why not a watch channel alone
//!
//! Every append in flight waits until the view holds its acknowledged
//! events, and the follower moves the head once per append. With a
//! `tokio::sync::watch` channel every move wakes *every* waiting writer (up
//! to the pipeline's window, 1,024), each of which checks the head and goes
//! back to sleep: O(window) wake-ups per event. Here the waiters are kept in
//! a map ordered by the sequence number they wait for, and a move wakes only
//! those it satisfies: each waiter is woken once.
//!
//! # No lost wake-up
//!
//! [`Head::advance`] raises the head *then* takes the waiter lock to drain
//! the satisfied waiters; [`Head::wait`] takes the lock *then* reads the
//! head. So a waiter either reads the raised head under the lock, or was
//! registered before the drain took the lock and is drained by it.
//!
//! The catch-up (`JetStream::catch_up`, and at start) waits here too: what
//! it waits for is in the stream, so the follower's watchdog may act on it
//! ([`Head::awaited`]). The watch channel stays for the snapshot follower
//! and the node's idle pusher (`head_watch.rs`), each a single receiver.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use tokio::sync::{oneshot, watch};

/// Why a wait for the head ended without it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stopped;

/// See the module docs.
pub(crate) struct Head {
    seq: watch::Sender<u64>,
    /// Waiters by the sequence number they wait for. `None` once stopped:
    /// no waiter is registered any more.
    waiters: Mutex<Option<BTreeMap<u64, Vec<oneshot::Sender<()>>>>>,
}

impl Head {
    pub(crate) fn new() -> Head {
        Head {
            seq: watch::Sender::new(0),
            waiters: Mutex::new(Some(BTreeMap::new())),
        }
    }

    /// The head now.
    pub(crate) fn current(&self) -> u64 {
        *self.seq.borrow()
    }

    /// A receiver of every move (for the waits that are not per append).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.seq.subscribe()
    }

    /// The follower applied everything up to `seq`: raise the head (it
    /// never falls) and wake the waiters it satisfies.
    pub(crate) fn advance(&self, seq: u64) {
        self.seq.send_if_modified(|h| {
            let raised = seq > *h;
            *h = (*h).max(seq);
            raised
        });
        let head = self.current();
        let ready = {
            // Lock scope: split the map; the senders are woken outside it.
            let mut waiters = self.waiters.lock();
            let Some(map) = waiters.as_mut() else {
                return;
            };
            if map.first_key_value().is_none_or(|(&k, _)| k > head) {
                return;
            }
            let later = map.split_off(&(head + 1));
            std::mem::replace(map, later)
        };
        for tx in ready.into_values().flatten() {
            // A waiter that gave up (timed out) dropped its receiver.
            let _ = tx.send(());
        }
    }

    /// Waits until the head is at least `seq`; `Err` once [`Head::stop`]
    /// was called (the follower stopped for good) and the head is below.
    /// A waiter that gives up (its caller's timeout) leaves its sender in
    /// the map until the head passes it: bounded by the writes in flight.
    pub(crate) async fn wait(&self, seq: u64) -> Result<(), Stopped> {
        if self.current() >= seq {
            return Ok(());
        }
        let rx = {
            // Lock, then read the head (see the module docs).
            let mut waiters = self.waiters.lock();
            if self.current() >= seq {
                return Ok(());
            }
            let Some(map) = waiters.as_mut() else {
                return Err(Stopped);
            };
            let (tx, rx) = oneshot::channel();
            map.entry(seq).or_default().push(tx);
            rx
        };
        rx.await.map_err(|_| Stopped)
    }

    /// The highest sequence number a writer waits for, if any (a waiter
    /// that gave up counts until the head passes it). Writers only wait
    /// for events the stream acknowledged, so one above the head means the
    /// stream holds an event the view does not yet.
    pub(crate) fn awaited(&self) -> Option<u64> {
        let waiters = self.waiters.lock();
        waiters.as_ref()?.last_key_value().map(|(&seq, _)| seq)
    }

    /// The follower stopped for good: every waiter (now and later) below
    /// the head gets `Err`, and watch receivers are woken.
    pub(crate) fn stop(&self) {
        let waiters = self.waiters.lock().take();
        drop(waiters);
        self.seq.send_modify(|_| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1) // as the backend runs
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_wait_ends_when_the_head_passes_it_and_not_before() {
        runtime().block_on(async {
            let head = Arc::new(Head::new());
            let waits: Vec<_> = [3u64, 1, 2, 5]
                .into_iter()
                .map(|seq| {
                    let head = Arc::clone(&head);
                    tokio::spawn(async move { (seq, head.wait(seq).await) })
                })
                .collect();
            tokio::task::yield_now().await;
            head.advance(2);
            head.advance(1); // never falls
            assert_eq!(head.current(), 2);
            head.advance(3);
            let mut done = Vec::new();
            for w in waits.into_iter().take(3) {
                done.push(w.await.expect("task"));
            }
            assert_eq!(done, vec![(3, Ok(())), (1, Ok(())), (2, Ok(()))]);
            // 5 still waits; a wait at or below the head returns at once.
            assert_eq!(head.wait(3).await, Ok(()));
            let five = Arc::clone(&head);
            let five = tokio::spawn(async move { five.wait(5).await });
            tokio::task::yield_now().await;
            assert!(!five.is_finished());
            head.advance(5);
            assert_eq!(five.await.expect("task"), Ok(()));
        });
    }

    #[test]
    fn awaited_is_the_highest_wait_above_the_head_until_it_is_passed() {
        use futures_util::FutureExt;
        let head = Head::new();
        assert_eq!(head.awaited(), None);
        // Polled once: registered, not done.
        let mut four = Box::pin(head.wait(4));
        let mut seven = Box::pin(head.wait(7));
        assert!(four.as_mut().now_or_never().is_none());
        assert!(seven.as_mut().now_or_never().is_none());
        assert_eq!(head.awaited(), Some(7));
        // A waiter that gave up still counts: its event is stored.
        drop(seven);
        assert_eq!(head.awaited(), Some(7));
        head.advance(5);
        assert_eq!(four.now_or_never(), Some(Ok(())));
        assert_eq!(head.awaited(), Some(7));
        head.advance(7);
        assert_eq!(head.awaited(), None);
        head.stop();
        assert_eq!(head.awaited(), None);
    }

    #[test]
    fn a_stop_ends_every_wait_below_the_head() {
        runtime().block_on(async {
            let head = Arc::new(Head::new());
            head.advance(4);
            let waiter = Arc::clone(&head);
            let pending = tokio::spawn(async move { waiter.wait(9).await });
            tokio::task::yield_now().await;
            head.stop();
            assert_eq!(pending.await.expect("task"), Err(Stopped));
            assert_eq!(head.wait(9).await, Err(Stopped));
            assert_eq!(head.wait(4).await, Ok(()));
        });
    }

    #[test]
    fn many_waiters_racing_the_follower_are_all_woken() {
        runtime().block_on(async {
            let head = Arc::new(Head::new());
            let n = 2_000u64;
            let waits: Vec<_> = (1..=n)
                .map(|seq| {
                    let head = Arc::clone(&head);
                    tokio::spawn(async move { head.wait(seq).await })
                })
                .collect();
            let mover = Arc::clone(&head);
            let follower = tokio::spawn(async move {
                for seq in 1..=n {
                    mover.advance(seq);
                    if seq % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            });
            follower.await.expect("follower");
            for w in waits {
                assert_eq!(w.await.expect("task"), Ok(()));
            }
        });
    }
}

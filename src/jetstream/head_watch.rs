//! The view's head, watched by the node's idle pusher (`node/idle.rs`),
//! which hands events from other front ends to subscribers while the node
//! gets no input.
//!
//! The event follower raises the view's head after every append it applies
//! (`follower.rs`, `head.rs`), which publishes it on a `tokio::sync::watch`
//! channel; sending on it never waits for a receiver. [`HeadWatch`] holds a
//! receiver of its own (`Head::subscribe`) and a `Notify` for
//! [`ViewWatch::wake`], and blocks the calling (non-async) thread on the
//! front end's runtime until either fires or the timeout passes. The
//! pusher waits on it only between its paced attempts, so the follower
//! wakes it at most once per attempt, not once per event.
//!
//! - No wake-up is lost: the receiver remembers which head version it saw
//!   last (so a head published between two waits is noticed by the
//!   second), the head is compared with `seen` before sleeping, and
//!   `Notify::notify_one` stores a permit when nobody waits.
//! - The receiver's mutex is taken only by the (single) waiting thread,
//!   for the length of its wait; the follower and `wake` never touch it.

use crate::protocol::ViewWatch;
use crate::types::SequenceNumber;
use futures_util::future::select;
use parking_lot::Mutex;
use std::pin::pin;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};

/// See the module docs.
pub(crate) struct HeadWatch {
    head: Mutex<watch::Receiver<u64>>,
    woken: Notify,
    runtime: Handle,
}

impl HeadWatch {
    /// A watch on `head` (a receiver of the view's head), waited on
    /// through `runtime`.
    pub(crate) fn new(head: watch::Receiver<u64>, runtime: Handle) -> HeadWatch {
        HeadWatch {
            head: Mutex::new(head),
            woken: Notify::new(),
            runtime,
        }
    }
}

impl ViewWatch for HeadWatch {
    fn wait(&self, seen: SequenceNumber, timeout: Duration) {
        let mut head = self.head.lock();
        self.runtime.block_on(async {
            let moved = async {
                if *head.borrow_and_update() > seen.0 {
                    return;
                }
                if head.changed().await.is_err() {
                    // The follower is gone for good: only a wake or the
                    // timeout ends the wait.
                    std::future::pending::<()>().await;
                }
            };
            let (moved, woken) = (pin!(moved), pin!(self.woken.notified()));
            // Whichever ends the wait (the head, a wake, the timeout), the
            // caller looks again.
            let _ended = tokio::time::timeout(timeout, select(moved, woken)).await;
        });
    }

    fn wake(&self) {
        self.woken.notify_one();
    }
}

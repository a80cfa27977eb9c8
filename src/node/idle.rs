//! The idle pusher: on a node whose store is the view of a replicated log
//! (JetStream), hands the events that other front ends appended to this
//! node's subscribers while no input comes.
//!
//! # Why
//!
//! A reply's [`Feed`] delivers the events the view holds when its request
//! is applied, so an event from another front end follows the reply to the
//! next request this node applies. Without input, nothing would be applied
//! and a subscriber would wait for ever. The pusher is a thread that
//! applies a *virtual batch* — a batch with no input and no reply, only a
//! feed of its own ([`Core::idle_feed`]) — when the view holds events no
//! feed delivers and the node is idle.
//!
//! # Why a batch, and why it keeps the order
//!
//! The virtual batch takes a number from the same counter as the reader's
//! batches and applies in its own turn (`sequencer.rs`); its `event`
//! messages go to the output through a sink of its own, written in number
//! order like any batch (`output.rs`). So it is, to the rest of the node,
//! a request with no reply line: its feed continues the chain of feeds
//! (`protocol/subscriptions.rs`) exactly where the reply before it left
//! off, hands on to the reply after it, and sees only the subscriptions
//! live at its turn. Every rule of the feed holds unchanged: each event
//! once and in log order per subscription, never before the `subscribed`
//! reply or after the `unsubscribed` one, an event appended through this
//! node after its own append's reply (a virtual batch applied after that
//! append delivers from the append's own mark on, and one applied before
//! it cannot hold an event the append had not yet made).
//!
//! A front end on its own gets byte-identical output: every event in its
//! view comes from an append applied before the virtual batch, whose reply
//! delivers up to its own last event, so a virtual batch there would
//! deliver nothing (and the pusher does not even make one: see "When").
//!
//! # When
//!
//! The pusher waits on the backend's [`ViewWatch`] until the view's head
//! passes what it last saw (event-driven: the follower wakes it, and never
//! waits for it). Then it tries [`Sequencer::in_idle_turn`], which never
//! waits:
//!
//! - a batch is applying, or is numbered and waits for its turn (the turn
//!   lock is held, or the counter is ahead of the turn): **busy**, look
//!   again after [`PACE`] (a batch made only of lines that get no reply
//!   captures no head, so the pusher cannot count on it);
//! - the core says ([`Core::idle_feed_state`]): no subscription is live,
//!   or the feeds made already deliver up to the head (the head when the
//!   last one was made, or the mark the last one set): **covered**, wait
//!   until the head moves past the one read before the attempt;
//! - the last feed's reply is still being made (its append's
//!   acknowledgement outstanding): it may deliver the new events itself
//!   (they may be its own), so **unknown**: look again after [`PACE`]. A
//!   front end writing on its own thus never makes a virtual batch;
//! - otherwise the pusher takes the next number, applies the idle feed in
//!   that turn and writes its messages.
//!
//! Attempts are at least [`PACE`] (5 ms) apart, so a busy log wakes the
//! pusher at most 200 times a second, and the events that arrive in the
//! meantime go out together. The first event after a quiet spell goes out
//! at once; the latency from the view holding an event to its message
//! being written is at most [`PACE`] plus a thread wake-up (the test
//! measured 4 ms median from the writing front end's reply, on a loaded
//! 2-core machine), unless a reply before it in the output is still
//! waiting for its own write, which it must follow.
//!
//! # Cost
//!
//! Only a node with a backend whose view grows on its own
//! ([`Backend::watch_view`]) starts the pusher: the embedded node has no
//! such thread. A node with no live subscription wakes it only when the
//! view's head moves, and it then declines (one `try_lock`).
//!
//! # Locks and atomics
//!
//! - The sequencer's turn lock is only *tried*, and held while the idle
//!   feed is decided and made (O(subscriptions), as for any request;
//!   reading the last feed's mark takes that mark's own lock inside it,
//!   an order no other thread reverses); never while waiting or writing.
//! - Delivering the feed waits for the feed before it (its mark) and for
//!   the output's turn, exactly as a worker encoding a reply does; the
//!   output's lock is held only inside its own calls.
//! - The stop flag: set (`Release`) when the reader reaches the end of
//!   input (or unwinds), then the watch is woken; the pusher loads it
//!   (`Acquire`) after every wait. Only the flag itself is published, and
//!   a wake is never lost ([`ViewWatch::wake`]), so the pusher ends within
//!   one wait.

use super::output::Output;
use super::sequencer::{IdleTurn, Sequencer};
use crate::protocol::{Backend, Core, Feed, IdleFeed, ViewWatch};
use crate::store::EventStore;
use crate::types::SequenceNumber;
use std::io::{self, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Scope;
use std::time::{Duration, Instant};

/// Least time between two attempts of the pusher (see the module docs).
const PACE: Duration = Duration::from_millis(5);

/// Longest single wait on the watch: a safety net only, as every wake-up
/// the pusher needs comes through the watch.
const SAFETY_WAIT: Duration = Duration::from_secs(1);

/// Stops the pusher when dropped (also while unwinding), so that the
/// thread scope it runs in can end.
pub(super) struct Stop {
    flag: Arc<AtomicBool>,
    watch: Arc<dyn ViewWatch>,
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.flag.store(true, Ordering::Release);
        self.watch.wake();
    }
}

/// Starts the pusher on `scope` if `backend`'s view grows without this
/// node; drop the returned [`Stop`] at the end of input.
pub(super) fn start<'scope, 'env, W: Write + Send>(
    scope: &'scope Scope<'scope, 'env>,
    backend: Option<&Arc<dyn Backend>>,
    sequencer: &'env Sequencer,
    output: &'env Output<W>,
    store: &'env EventStore,
) -> Option<Stop> {
    let watch = backend?.watch_view()?;
    let flag = Arc::new(AtomicBool::new(false));
    let pusher = Pusher {
        watch: Arc::clone(&watch),
        stop: Arc::clone(&flag),
        sequencer,
        output,
        store,
    };
    scope.spawn(move || pusher.run());
    Some(Stop { flag, watch })
}

struct Pusher<'env, W: Write> {
    watch: Arc<dyn ViewWatch>,
    stop: Arc<AtomicBool>,
    sequencer: &'env Sequencer,
    output: &'env Output<W>,
    store: &'env EventStore,
}

impl<W: Write> Pusher<'_, W> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire) || self.output.is_closed()
    }

    fn run(self) {
        // The head up to which nothing is left to push (as far as the
        // pusher knows).
        let mut seen = SequenceNumber::ZERO;
        let mut last_try: Option<Instant> = None;
        loop {
            self.watch.wait(seen, SAFETY_WAIT);
            if self.stopped() {
                return;
            }
            if let Some(at) = last_try {
                let rest = PACE.saturating_sub(at.elapsed());
                if !rest.is_zero() {
                    std::thread::sleep(rest);
                    if self.stopped() {
                        return;
                    }
                }
            }
            last_try = Some(Instant::now());
            let head = self.store.head();
            let decide = |core: &Core| match core.idle_feed_state() {
                IdleFeed::Wanted => Ok(()),
                other => Err(other),
            };
            // A panic while the turn is held must still finish the number's
            // output sink, or every later batch would wait for it forever:
            // the apply catches it and the number is released empty.
            let turn = self.sequencer.in_idle_turn(decide, |core| {
                catch_unwind(AssertUnwindSafe(|| {
                    (core.idle_feed(), core.store().wal_position())
                }))
            });
            match turn {
                // `seen` stays, so the wait returns at once and the next
                // attempt comes after the pace.
                // (`Wanted` is never declined.)
                IdleTurn::Busy | IdleTurn::Declined(IdleFeed::Unknown | IdleFeed::Wanted) => {}
                // Feeds made already deliver everything up to `head` (read
                // before the attempt): wait for the view to grow past it.
                IdleTurn::Declined(IdleFeed::Covered) => seen = head,
                IdleTurn::Applied(index, Ok((feed, position))) => {
                    seen = feed.as_ref().map_or(head, |f| f.head);
                    self.deliver(index, feed, position);
                }
                IdleTurn::Applied(index, Err(_)) => {
                    let _ = writeln!(
                        io::stderr().lock(),
                        "internal error: the idle feed panicked in batch {index}; the node goes on"
                    );
                    self.output.sink(index, 0).finish(true);
                    return;
                }
            }
        }
    }

    /// Writes the virtual batch `index`: the `event` messages of `feed`.
    fn deliver(&self, index: u64, feed: Option<Feed>, position: u64) {
        let mut sink = self.output.sink(index, 0);
        sink.set_position(position);
        let work = catch_unwind(AssertUnwindSafe(|| {
            if let Some(feed) = feed {
                feed.deliver(self.store, None, &mut sink);
            }
        }));
        if work.is_err() {
            // The feed, dropped while unwinding, let the replies after it
            // go on (see `Feed`'s `Drop`); its messages are lost.
            let _ = writeln!(
                io::stderr().lock(),
                "internal error: delivering events to subscribers panicked in batch {index}; the node goes on"
            );
        }
        sink.finish(work.is_err());
    }
}

//! The submit step as a task on the backend's runtime, fed by the node.
//!
//! The node's serial apply step hands every write (and every read's
//! settle) to one long-lived task, [`run`], through a bounded channel, and
//! moves on with a [`Ticket`]; the task submits them one at a time in the
//! order received, which is input order ([`pipeline::submit_append`] and
//! friends).
//!
//! # Why a task and not `block_on` in the apply step
//!
//! Submitting from the apply thread (`Runtime::block_on` per write) made
//! every publish a hand-over to the runtime's threads: the client's
//! connection task was woken (an `eventfd` write, a futex wake-up of a
//! parked worker) once per message. Measured on 50,000 seed requests: ~35k
//! voluntary context switches, against ~150 for a bare client publishing
//! from one task. Here the apply step only queues; the task, once woken,
//! takes every queued submission and publishes them in a burst, so the
//! connection task writes many messages per wake-up.
//!
//! # Backpressure and order
//!
//! A settle goes through the queue only while writes queued before it are
//! not yet submitted (a counter, `unsubmitted`); otherwise the reader takes
//! the completions to wait for from the pipeline itself, with no round
//! trip (reads are the common case).
//!
//! The channel holds at most [`QUEUE`] submissions; the apply step blocks
//! when it is full (the task itself waits for the pipeline's window, so
//! with both full the node's input stops being read). A settle is answered
//! in the task, in order, with the completions to wait for
//! ([`pipeline::unsettled`]); the caller then waits for them itself, so a
//! read never holds up the writes behind it in the queue.
//!
//! The task ends when the [`Submitter`] is dropped (its sender closes);
//! submissions that cannot be queued any more are answered with error 11.

use super::Shared;
use super::pipeline::{self, Done};
use super::resolver::panic_text;
use crate::protocol::{BackendError, Ticket, TicketSender};
use crate::store::Prepared;
use crate::types::{ExpectedVersion, Version};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Most submissions queued for the task.
pub const QUEUE: usize = 1024;

/// One thing for the submit step to do, in input order.
enum Submission {
    Append {
        aggregate_id: String,
        expected: ExpectedVersion,
        prepared: Prepared,
        reply: TicketSender,
    },
    Snapshot {
        aggregate_id: String,
        expected: Option<Version>,
        state: Option<String>,
        reply: TicketSender,
    },
    /// The completions a read must wait for (`None`: a read of anything).
    Settle {
        aggregate_id: Option<String>,
        reply: crossbeam::channel::Sender<Vec<Done>>,
    },
}

/// The node's side of the submit task (see the module docs).
pub(crate) struct Submitter {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Submission>,
    /// Writes queued and not yet submitted (in the channel, or taken by
    /// the task and not yet registered in the pipeline).
    unsubmitted: Arc<AtomicU64>,
}

fn gone() -> BackendError {
    BackendError::Unavailable("the front end is shutting down".into())
}

impl Submitter {
    /// Starts the task on `runtime`.
    pub(crate) fn start(shared: Arc<Shared>, runtime: &tokio::runtime::Runtime) -> Submitter {
        let (queue, rx) = mpsc::channel(QUEUE);
        let unsubmitted = Arc::new(AtomicU64::new(0));
        runtime.spawn(run(Arc::clone(&shared), rx, Arc::clone(&unsubmitted)));
        Submitter {
            shared,
            queue,
            unsubmitted,
        }
    }

    /// Queues `submission`; blocks while the queue is full. Must not be
    /// called from the runtime's own threads (the node's apply step is not).
    fn queue(&self, submission: Submission) {
        let write = !matches!(submission, Submission::Settle { .. });
        if write {
            // Relaxed: read back by this same thread (`unsettled`), or by
            // the task after the channel's own synchronisation.
            self.unsubmitted.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(mpsc::error::SendError(lost)) = self.queue.blocking_send(submission) {
            match lost {
                Submission::Append { reply, .. } | Submission::Snapshot { reply, .. } => {
                    self.unsubmitted.fetch_sub(1, Ordering::Relaxed);
                    reply.send(Err(gone()));
                }
                // Its receiver sees the sender dropped: nothing to wait for.
                Submission::Settle { .. } => {}
            }
        }
    }

    pub(crate) fn append(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        prepared: Prepared,
    ) -> Ticket {
        let (reply, ticket) = Ticket::pending();
        self.queue(Submission::Append {
            aggregate_id: aggregate_id.to_owned(),
            expected,
            prepared,
            reply,
        });
        ticket
    }

    pub(crate) fn create_snapshot(
        &self,
        aggregate_id: &str,
        expected: Option<Version>,
        state: Option<String>,
    ) -> Ticket {
        let (reply, ticket) = Ticket::pending();
        self.queue(Submission::Snapshot {
            aggregate_id: aggregate_id.to_owned(),
            expected,
            state,
            reply,
        });
        ticket
    }

    /// The completions a read of `aggregate_id` must wait for, taken after
    /// every submission queued before it.
    ///
    /// Reads are the common case and must not pay a round trip through the
    /// task (measured: 2–3× the CPU of the embedded node's reads when every
    /// read did): with every queued write submitted already, the
    /// completions are taken here, from the pipeline, at once.
    pub(crate) fn unsettled(&self, aggregate_id: Option<&str>) -> Vec<Done> {
        // Acquire: pairs with the task's Release after registering a
        // write, so the pipeline's state read next includes it.
        if self.unsubmitted.load(Ordering::Acquire) == 0 {
            return pipeline::unsettled(&self.shared, aggregate_id);
        }
        let (reply, rx) = crossbeam::channel::bounded(1);
        self.queue(Submission::Settle {
            aggregate_id: aggregate_id.map(str::to_owned),
            reply,
        });
        rx.recv().unwrap_or_default()
    }
}

/// Submissions taken from the queue at once.
const BURST: usize = 256;

/// The submit step: every submission in the order queued.
///
/// They are taken in bursts (`recv_many`): taking one frees one slot, and
/// with the apply step usually ahead and blocked on a full queue, each
/// freed slot was a futex wake-up of the apply thread (7.5% of the front
/// end's CPU, measured); a burst frees its slots in one go.
async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Submission>, unsubmitted: Arc<AtomicU64>) {
    let mut burst = Vec::with_capacity(BURST);
    while rx.recv_many(&mut burst, BURST).await > 0 {
        for submission in burst.drain(..) {
            let write = !matches!(submission, Submission::Settle { .. });
            // A panic (a broken invariant) must not end this task: reads
            // would then settle on nothing. The submission's reply is
            // dropped (error 11) and the front end refuses later writes.
            let work = AssertUnwindSafe(submit(&shared, submission)).catch_unwind();
            if let Err(payload) = work.await {
                let what = panic_text(payload.as_ref());
                shared.fail(format!("the submit step panicked: {what}"));
            }
            if write {
                // Release: the write is registered in the pipeline (or
                // answered) before a reader sees it counted out.
                unsubmitted.fetch_sub(1, Ordering::Release);
            }
        }
    }
}

async fn submit(shared: &Arc<Shared>, submission: Submission) {
    let shared = Arc::clone(shared);
    match submission {
        Submission::Append {
            aggregate_id,
            expected,
            prepared,
            reply,
        } => pipeline::submit_append(shared, &aggregate_id, expected, prepared, reply).await,
        Submission::Snapshot {
            aggregate_id,
            expected,
            state,
            reply,
        } => pipeline::submit_snapshot(shared, &aggregate_id, expected, state, reply).await,
        Submission::Settle {
            aggregate_id,
            reply,
        } => {
            let _ = reply.send(pipeline::unsettled(&shared, aggregate_id.as_deref()));
        }
    }
}

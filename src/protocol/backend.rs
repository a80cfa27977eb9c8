//! Where a node's writes go when its log is not the local store.
//!
//! By default the protocol core applies appends and snapshots to its
//! [`EventStore`](crate::EventStore) directly. A node on a replicated log
//! (the JetStream backend, `src/jetstream/`) hands them to a [`Backend`]
//! instead, which writes them to the log and resolves them once they are
//! acknowledged *and* in the local store, which then serves as the view for
//! everything else (reads, replays, subscriptions, encoding the reply).
//!
//! A backend write is a [`Ticket`]: the serial apply step submits it and
//! moves on (many writes in flight); the encoding step waits for it. Replies
//! still go out in input order (the node's output orders them), and a read
//! is applied only once the writes it could observe are resolved
//! ([`Backend::settle`]), so the replies equal one-at-a-time processing.
//!
//! The local store of a replicated log also grows without this node:
//! events appended through other front ends. [`Backend::watch_view`] lets
//! the node wait for that ([`ViewWatch`]), so that it hands such events to
//! its subscribers while no input comes (`node/idle.rs`).

use crate::error::{AppendError, ConcurrencyError};
use crate::store::{Appended, Prepared};
use crate::types::{ExpectedVersion, SequenceNumber, Version};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why a backend write failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// Decided against the log: the errors of a local append.
    Append(AppendError),
    /// The log could not be reached within the backend's bounded wait
    /// (error 11); nothing of the request is half stored.
    Unavailable(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Append(e) => e.fmt(f),
            BackendError::Unavailable(why) => write!(f, "the replicated log is unavailable: {why}"),
        }
    }
}

impl std::error::Error for BackendError {}

impl From<AppendError> for BackendError {
    fn from(e: AppendError) -> Self {
        BackendError::Append(e)
    }
}

impl From<ConcurrencyError> for BackendError {
    fn from(e: ConcurrencyError) -> Self {
        BackendError::Append(e.into())
    }
}

/// What a backend write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// An append: where its events are.
    Appended(Appended),
    /// A snapshot, at this version.
    Snapshot(Version),
}

/// The outcome of a backend write.
pub type WriteResult = Result<Written, BackendError>;

/// A backend write under way: submitted in input order by the serial apply
/// step, waited for by whoever encodes its reply.
#[derive(Debug)]
pub struct Ticket(TicketState);

#[derive(Debug)]
enum TicketState {
    Ready(WriteResult),
    Waiting(crossbeam::channel::Receiver<WriteResult>),
}

/// Where a backend sends a [`Ticket`]'s outcome.
#[derive(Debug)]
pub struct TicketSender(crossbeam::channel::Sender<WriteResult>);

impl Ticket {
    /// A ticket whose outcome is known already.
    pub fn ready(result: WriteResult) -> Ticket {
        Ticket(TicketState::Ready(result))
    }

    /// A ticket and the sender of its outcome.
    pub fn pending() -> (TicketSender, Ticket) {
        let (tx, rx) = crossbeam::channel::bounded(1);
        (TicketSender(tx), Ticket(TicketState::Waiting(rx)))
    }

    /// Waits for the outcome. A sender dropped without an outcome (a bug
    /// in the backend, or its runtime shut down) is error 11.
    pub fn wait(mut self) -> WriteResult {
        self.settle();
        match self.0 {
            TicketState::Ready(result) => result,
            TicketState::Waiting(_) => unreachable!("settled above"),
        }
    }

    /// Waits for the outcome and keeps it (a later [`Ticket::wait`] returns
    /// at once). The node settles the last ticket of an input batch first:
    /// writes are mostly acknowledged in order, so the batch's other
    /// tickets are then ready, and its thread sleeps once, not per write.
    pub fn settle(&mut self) {
        if let TicketState::Waiting(rx) = &self.0 {
            let result = rx.recv().unwrap_or_else(|_| {
                Err(BackendError::Unavailable(
                    "the write was abandoned before its outcome was known".into(),
                ))
            });
            self.0 = TicketState::Ready(result);
        }
    }
}

impl TicketSender {
    /// Sends the outcome (nobody waiting is fine).
    pub fn send(self, result: WriteResult) {
        let _ = self.0.send(result);
    }
}

/// A replicated log behind the node's writes (see the module docs).
///
/// Writes are *submitted* in input order by the node's serial apply step
/// and return a [`Ticket`] at once, so that many can be in flight; the
/// backend resolves them so that every outcome equals what one-at-a-time
/// processing in submission order gives. A read first calls
/// [`Backend::settle`], which returns once the local store holds every
/// earlier write it could observe.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Submits an append of prepared events at `expected`; the ticket's
    /// outcome comes once the log has acknowledged it and the local store
    /// holds it.
    fn append(&self, aggregate_id: &str, expected: ExpectedVersion, prepared: Prepared) -> Ticket;

    /// Submits a snapshot (see [`crate::EventStore::create_snapshot`]) of
    /// the aggregate at the version all earlier submitted writes leave it;
    /// the outcome comes once the log has acknowledged it and the local
    /// store holds it.
    fn create_snapshot(
        &self,
        aggregate_id: &str,
        expected: Option<Version>,
        state: Option<String>,
    ) -> Ticket;

    /// Waits until every write submitted so far to `aggregate_id` (`None`:
    /// to any aggregate) is resolved and in the local store.
    fn settle(&self, aggregate_id: Option<&str>);

    /// A watch on the local store's head, when it grows without this node
    /// (events from other writers of the log). `None` (the default): it
    /// grows only through this node's own writes.
    fn watch_view(&self) -> Option<Arc<dyn ViewWatch>> {
        None
    }
}

/// Waiting for the local store of a replicated log to grow (see
/// [`Backend::watch_view`]). The log's follower never waits for a
/// watcher.
pub trait ViewWatch: Send + Sync {
    /// Returns once the local store's head is past `seen` (at once if it
    /// is already), once [`ViewWatch::wake`] is called, or after
    /// `timeout`, whichever comes first. A wake while nobody waits makes
    /// the next call return at once: it is never lost.
    fn wait(&self, seen: SequenceNumber, timeout: Duration);

    /// Makes the waiting (or else the next) [`ViewWatch::wait`] return.
    fn wake(&self);
}

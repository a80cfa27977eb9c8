//! Pipelined writes: many appends of one front end in flight at once, every
//! outcome equal to what one-at-a-time processing in input order gives.
//!
//! # The problem
//!
//! An append is published with `Nats-Expected-Last-Subject-Sequence`, the
//! sequence number of the aggregate's last event. Waiting for each
//! acknowledgement before deciding the next append costs a quorum round trip
//! per request (~1.4k/s). Appends to *different* aggregates do not depend on
//! each other.
//!
//! # The design
//!
//! The node's serial apply step *submits* each write ([`submit_append`],
//! [`submit_snapshot`], through the submit task of `submitter.rs`) and
//! moves on; a future per write resolves it (`pipeline/resolve.rs`, all of
//! them driven by one task, `resolver.rs`; "its task" below means that
//! future), and its reply waits for that when it is encoded. The node's output writes
//! replies in input order anyway, so a reply goes out once its own write
//! and every earlier reply are done: no second reorder buffer is needed
//! (the output's durability gate stays for durable embedded nodes).
//!
//! The submit step keeps an **overlay**: per aggregate with writes in
//! flight, a *chain* holding the version and last sequence number the
//! aggregate will have once they land, and the completion of the last one.
//!
//! - **An append to an aggregate without a chain** is decided on the view
//!   exactly as one at a time ([`EventStore::precheck_append`]) and, when
//!   fresh, published at once with the view's last sequence number as its
//!   expectation: it does not wait for any earlier acknowledgement.
//! - **An append to an aggregate with a chain waits for the chain** (in the
//!   submit step, so the appends behind it wait too), then is decided on
//!   the view. Waiting only for it and letting later appends overtake was
//!   the first plan; two facts ruled it out. A clustered stream refuses an
//!   expectation on a subject that has a publish still in its consensus
//!   step (err_code 10164, "wrong last sequence", seen with 2.12+), so the
//!   append cannot be sent before the earlier one is acknowledged, whatever
//!   its expectation (and not right at the acknowledgement either: the
//!   leader acknowledges before it clears that mark, so the next append
//!   waits until the view holds the earlier one, `pipeline/resolve.rs`);
//!   and an append sent after later ones takes a later
//!   sequence number than one-at-a-time processing gives it, which the
//!   contract forbids ("one front end on its own gives exactly the output of
//!   one-at-a-time processing"). So publishes stay in input order and each
//!   append's outcome (including a rejection) is known before the next
//!   append to its aggregate is decided: a rejection never invalidates a
//!   later in-flight append. With uniformly spread aggregates a wait is
//!   rare (seed workload: 10,000 aggregates; see the README for figures).
//! - **A client id carried by a write in flight** makes the append wait for
//!   every write in flight, then decide on the view: a retry or error 22,
//!   as one at a time.
//! - **A snapshot** joins its aggregate's chain without waiting and without
//!   changing the prediction: it waits, in its task, for the earlier writes
//!   of its chain, then folds the view at the predicted version (later
//!   events may already be in the view) and publishes to the snapshot
//!   stream, which has no expectations. Its `expected` version is checked
//!   against the prediction; a mismatch is a *speculative*
//!   `concurrency_error` that stands once every earlier write of the chain
//!   landed as predicted (each task reports that, `held`); otherwise, and
//!   whenever the prediction is unknown, the snapshot is decided again one
//!   at a time (`write.rs`).
//! - **A publish that does not land as sent** (no answer, a duplicate, a
//!   wrong expectation because another front end wrote) is decided again
//!   one at a time in its task, with the same event ids, so the stream
//!   stores it once.
//!
//! Reads are not speculated: the apply step settles first ([`settle`]):
//! reads of one aggregate wait for its chain, `read_all` and `subscribe`
//! for every write in flight. The seed workload has no reads; a mixed one
//! pays up to a round trip per read that follows writes in flight.
//!
//! # The window
//!
//! At most [`WINDOW`] writes are in flight (a semaphore permit per write,
//! taken by the submit step, which waits for one when all are taken); the
//! JetStream context allows more acknowledgements in flight (4,096), so
//! the window is this one.
//!
//! [`EventStore::precheck_append`]: crate::EventStore::precheck_append

mod resolve;

use super::Shared;
use super::resolver::Resolver;
use super::write::fresh_id;
use crate::error::AppendError;
use crate::protocol::{BackendError, TicketSender, WriteResult, Written};
use crate::store::{Precheck, Prepared};
use crate::types::{EventId, ExpectedVersion, SequenceNumber, Version};
use parking_lot::Mutex;
use resolve::{Plan, Slot, resolve_append, resolve_snapshot};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Semaphore, watch};

/// Most writes in flight from one front end.
pub const WINDOW: usize = 1024;

/// A write's completion: `None` while under way, then whether it (and every
/// earlier write of its aggregate) landed exactly as predicted.
pub(crate) type Done = watch::Receiver<Option<bool>>;

/// The writes in flight to one aggregate.
struct Chain {
    /// The version once they all succeed.
    version: Version,
    /// The sequence number of its last event then (predicted).
    last_seq: u64,
    /// Whether the prediction can be made: `false` after a write that is
    /// decided again one at a time (its effect is unknown until it is done).
    speculable: bool,
    /// Whether the chain's last append is acknowledged and in the view:
    /// `version` and `last_seq` are then facts, and the next append may be
    /// sent.
    confirmed: bool,
    /// The chain's last append (0: none).
    append_id: u64,
    /// The last write's completion.
    tail: Done,
    tail_id: u64,
}

#[derive(Default)]
struct Overlay {
    chains: HashMap<String, Chain>,
    /// The stream's predicted head after the last published append.
    predicted_head: u64,
    next_id: u64,
    /// Client ids carried by writes in flight (with their count).
    given_ids: HashMap<EventId, usize>,
}

/// The pipeline's state, part of [`Shared`].
pub(crate) struct Pipeline {
    overlay: Mutex<Overlay>,
    /// Drives every write's resolution (`resolver.rs`).
    resolver: Resolver,
    window: Arc<Semaphore>,
    /// Bumped whenever an append is confirmed (acknowledged and in the
    /// view) or a write is done.
    progress: watch::Sender<u64>,
    /// Counts for `EVENTSTORE_DEBUG_PIPELINE` (see [`Pipeline::report`]).
    stats: Stats,
}

/// What the pipeline did, counted.
#[derive(Default)]
struct Stats {
    /// Appends that waited for an earlier one (same aggregate or client id).
    waits: AtomicU64,
    /// Appends published at once.
    sent: AtomicU64,
    /// Sum over sent appends of the writes in flight when each was sent.
    depth: AtomicU64,
    /// Writes decided again one at a time.
    slow: AtomicU64,
}

impl Pipeline {
    /// A pipeline with nothing in flight; must be called on the runtime
    /// (it starts the resolver's task).
    pub(crate) fn new() -> Pipeline {
        Pipeline {
            overlay: Mutex::new(Overlay::default()),
            resolver: Resolver::start(),
            window: Arc::new(Semaphore::new(WINDOW)),
            progress: watch::Sender::new(0),
            stats: Stats::default(),
        }
    }

    /// The first panic of a write's resolution, if any (`resolver.rs`).
    pub(crate) fn panicked(&self) -> Option<String> {
        self.resolver.panicked()
    }

    /// With `EVENTSTORE_DEBUG_PIPELINE` set: what the pipeline did, on
    /// stderr (the node's front end reports it when it stops).
    pub(crate) fn report(&self) {
        if std::env::var_os("EVENTSTORE_DEBUG_PIPELINE").is_some() {
            let s = &self.stats;
            eprintln!(
                "pipeline: {} appends sent at once ({:.0} writes in flight on average), {} waited for an earlier append, {} decided again one at a time",
                s.sent.load(Ordering::Relaxed),
                s.depth.load(Ordering::Relaxed) as f64
                    / s.sent.load(Ordering::Relaxed).max(1) as f64,
                s.waits.load(Ordering::Relaxed),
                s.slow.load(Ordering::Relaxed),
            );
        }
    }

    /// The completions to wait for before a read of `aggregate_id` (`None`:
    /// of everything).
    fn tails(&self, aggregate_id: Option<&str>) -> Vec<Done> {
        let overlay = self.overlay.lock();
        match aggregate_id {
            Some(a) => overlay
                .chains
                .get(a)
                .map(|c| c.tail.clone())
                .into_iter()
                .collect(),
            None => overlay.chains.values().map(|c| c.tail.clone()).collect(),
        }
    }
}

fn window_closed() -> WriteResult {
    Err(BackendError::Unavailable(
        "the front end is shutting down".into(),
    ))
}

/// A write registered in flight: its slot's parts.
struct Registered {
    id: u64,
    done: watch::Sender<Option<bool>>,
    earlier: Vec<Done>,
}

/// What a write registered on a chain makes of its prediction.
enum Predict {
    /// An append sent: the aggregate will be at this version, its last
    /// event at this sequence number (unconfirmed until acknowledged).
    Append(Version, u64),
    /// A snapshot: the prediction stays (this one when the chain is new).
    Keep(Version, u64),
    /// Not predictable until this write is done.
    Unknown,
}

/// Makes a write the tail of `aggregate_id`'s chain.
fn register(
    overlay: &mut Overlay,
    aggregate_id: &str,
    earlier: Vec<Done>,
    predict: Predict,
    given: &[EventId],
) -> Registered {
    overlay.next_id += 1;
    let id = overlay.next_id;
    let (done, tail) = watch::channel(None);
    let old = overlay.chains.get(aggregate_id);
    let (version, last_seq, speculable, confirmed, append_id) = match predict {
        Predict::Append(v, s) => (v, s, true, false, id),
        Predict::Keep(v, s) => (
            v,
            s,
            true,
            old.is_none_or(|c| c.confirmed),
            old.map_or(0, |c| c.append_id),
        ),
        Predict::Unknown => (Version::INITIAL, 0, false, false, 0),
    };
    overlay.chains.insert(
        aggregate_id.to_owned(),
        Chain {
            version,
            last_seq,
            speculable,
            confirmed,
            append_id,
            tail,
            tail_id: id,
        },
    );
    for g in given {
        *overlay.given_ids.entry(*g).or_insert(0) += 1;
    }
    Registered { id, done, earlier }
}

/// An append's fields once sent: version, last sequence number (its
/// expectation), event count, predicted last sequence number.
type Sending = (Version, u64, u64, u64);

/// What the submit step makes of an append now.
enum Decision {
    /// Wait for progress (an append confirmed, a write done), then decide.
    Wait,
    /// Decided on the view: no write.
    Now(WriteResult),
    /// A write in flight: sent at once (`Err`), or resolved by its task.
    Go(Result<Plan, Sending>, Registered),
}

fn decide_append(
    shared: &Shared,
    overlay: &mut Overlay,
    aggregate_id: &str,
    expected: ExpectedVersion,
    prepared: &Prepared,
    given: &[EventId],
    count: u64,
) -> Decision {
    let view = &shared.view;
    let clash = given.iter().any(|g| overlay.given_ids.contains_key(g));
    let chain = overlay.chains.get(aggregate_id);
    let ready = if clash {
        overlay.chains.is_empty()
    } else {
        chain.is_none_or(|c| c.speculable && c.confirmed)
    };
    if !ready {
        return Decision::Wait;
    }
    // The aggregate's state: the view's, or the acknowledged one of the
    // chain (its events may not be in the view yet).
    let (check, known) = match chain {
        None => (expected, None),
        Some(c) => (ExpectedVersion::Any, Some((c.version, c.last_seq))),
    };
    let earlier: Vec<Done> = chain.map(|c| c.tail.clone()).into_iter().collect();
    let fresh = match view.precheck_append(aggregate_id, check, prepared) {
        Ok(Precheck::Stored(appended)) => {
            return Decision::Now(Ok(Written::Appended(appended)));
        }
        Ok(Precheck::Fresh { version, last_seq }) => {
            let (version, last_seq) = known.unwrap_or((version, last_seq.0));
            expected.matches(version).then_some((version, last_seq))
        }
        Err(AppendError::Concurrency(_)) => None,
        Err(e) => return Decision::Now(Err(e.into())),
    };
    let Some((version, last_seq)) = fresh else {
        // A mismatch: the view may lag the stream, so it is confirmed one
        // at a time, after the earlier writes.
        let registered = register(overlay, aggregate_id, earlier, Predict::Unknown, given);
        return Decision::Go(Ok(Plan::Slow), registered);
    };
    let base = if overlay.chains.is_empty() {
        view.head().0
    } else {
        overlay.predicted_head.max(view.head().0)
    };
    let predicted_last = base.max(last_seq) + count;
    overlay.predicted_head = predicted_last;
    let predict = Predict::Append(Version(version.0 + count), predicted_last);
    let registered = register(overlay, aggregate_id, earlier, predict, given);
    Decision::Go(Err((version, last_seq, count, predicted_last)), registered)
}

/// Submits an append (see the module docs); called in input order.
pub(crate) async fn submit_append(
    shared: Arc<Shared>,
    aggregate_id: &str,
    expected: ExpectedVersion,
    prepared: Prepared,
    reply: TicketSender,
) {
    if let Some(stopped) = shared.stopped() {
        return reply.send(Err(stopped));
    }
    let given: Vec<EventId> = prepared.as_slice().iter().filter_map(|p| p.id).collect();
    let ids: Vec<EventId> = prepared
        .as_slice()
        .iter()
        .map(|p| p.id.unwrap_or_else(fresh_id))
        .collect();
    let Ok(permit) = Arc::clone(&shared.pipeline.window).acquire_owned().await else {
        return reply.send(window_closed());
    };
    let count = ids.len() as u64;
    // An aggregate whose last append in flight is not acknowledged and in
    // the view yet: wait for that (see the module docs: the stream cannot check an
    // expectation on a subject with a publish in flight); a client id
    // carried by a write in flight: wait for every write in flight.
    let mut progress = shared.pipeline.progress.subscribe();
    let mut waited = false;
    let (plan, registered) = loop {
        let decision = {
            let mut overlay = shared.pipeline.overlay.lock();
            decide_append(
                &shared,
                &mut overlay,
                aggregate_id,
                expected,
                &prepared,
                &given,
                count,
            )
        };
        match decision {
            Decision::Go(plan, registered) => break (plan, registered),
            Decision::Now(result) => return reply.send(result),
            // Every confirmed append and every finished write bumps it.
            Decision::Wait => {
                if !waited {
                    waited = true;
                    shared.pipeline.stats.waits.fetch_add(1, Ordering::Relaxed);
                }
                let _ = progress.changed().await;
            }
        }
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err((version, last_seq, count, predicted_last)) => {
            let stats = &shared.pipeline.stats;
            stats.sent.fetch_add(1, Ordering::Relaxed);
            let in_flight = WINDOW - shared.pipeline.window.available_permits();
            stats.depth.fetch_add(in_flight as u64, Ordering::Relaxed);
            // Sent in input order: the apply step submits one at a time.
            let subject = super::subject::encode(&shared.config.stream, aggregate_id);
            let sent = shared
                .send(&subject, &prepared, &ids, version, SequenceNumber(last_seq))
                .await;
            Plan::Fast {
                version,
                count,
                predicted_last,
                sent,
            }
        }
    };
    let slot = Slot {
        shared: Arc::clone(&shared),
        aggregate_id: aggregate_id.to_owned(),
        id: registered.id,
        done: registered.done,
        earlier: registered.earlier,
        given,
        reply,
        _permit: permit,
    };
    let resolver = &shared.pipeline.resolver;
    resolver.push(resolve_append(slot, expected, prepared, ids, plan));
}

/// Submits a snapshot (see the module docs); called in input order.
pub(crate) async fn submit_snapshot(
    shared: Arc<Shared>,
    aggregate_id: &str,
    expected: Option<Version>,
    state: Option<String>,
    reply: TicketSender,
) {
    if let Some(stopped) = shared.stopped() {
        return reply.send(Err(stopped));
    }
    let Ok(permit) = Arc::clone(&shared.pipeline.window).acquire_owned().await else {
        return reply.send(window_closed());
    };
    let (plan, registered) = {
        let mut overlay = shared.pipeline.overlay.lock();
        let overlay = &mut *overlay;
        let chain = overlay.chains.get(aggregate_id);
        let earlier: Vec<Done> = chain.map(|c| c.tail.clone()).into_iter().collect();
        let prediction = match chain {
            None => {
                let (version, last_seq) = shared.view.last_position(aggregate_id);
                Some((version, last_seq.0))
            }
            Some(c) if c.speculable => Some((c.version, c.last_seq)),
            Some(_) => None,
        };
        match prediction {
            Some((version, last_seq)) => {
                let plan = match expected {
                    Some(e) if e != version && chain.is_none() => Plan::Slow,
                    Some(e) if e != version => Plan::Conflict { current: version },
                    _ => Plan::SnapshotAt { version },
                };
                let keep = match plan {
                    Plan::Slow => Predict::Unknown,
                    _ => Predict::Keep(version, last_seq),
                };
                (plan, register(overlay, aggregate_id, earlier, keep, &[]))
            }
            None => (
                Plan::Slow,
                register(overlay, aggregate_id, earlier, Predict::Unknown, &[]),
            ),
        }
    };
    let slot = Slot {
        shared: Arc::clone(&shared),
        aggregate_id: aggregate_id.to_owned(),
        id: registered.id,
        done: registered.done,
        earlier: registered.earlier,
        given: Vec::new(),
        reply,
        _permit: permit,
    };
    let resolver = &shared.pipeline.resolver;
    resolver.push(resolve_snapshot(slot, expected, state, plan));
}

/// The completions a read of `aggregate_id` (`None`: of anything) must
/// wait for: the writes submitted so far that it could observe. Taken in
/// the submit step, in input order; waited for by [`settled`].
pub(crate) fn unsettled(shared: &Shared, aggregate_id: Option<&str>) -> Vec<Done> {
    shared.pipeline.tails(aggregate_id)
}

/// Waits until the writes [`unsettled`] returned are done and in the view.
pub(crate) async fn settled(tails: Vec<Done>) {
    for mut tail in tails {
        let _ = tail.wait_for(Option::is_some).await;
    }
}

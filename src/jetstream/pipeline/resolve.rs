//! The resolution of a write in flight: its [`Slot`] (what it holds while
//! under way) and the futures the resolver drives for it
//! ([`resolve_append`], [`resolve_snapshot`]): wait for the stream's
//! acknowledgement and the view, or decide again one at a time, then finish
//! the slot (its chain, its reply). The submit side is the parent module.

use super::Done;
use crate::error::{AppendError, ConcurrencyError, InvalidAppend};
use crate::jetstream::Shared;
use crate::jetstream::write::{Failure, classify, fold};
use crate::protocol::{BackendError, TicketSender, WriteResult, Written};
use crate::store::{Appended, Positions, Prepared};
use crate::types::{EventId, ExpectedVersion, JsonText, SequenceNumber, Version};
use async_nats::jetstream::context::PublishAckFuture;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;

/// How a submitted write is resolved.
pub(super) enum Plan {
    /// Published at once; it lands at `predicted_last` if all goes as
    /// predicted.
    Fast {
        version: Version,
        count: u64,
        predicted_last: u64,
        sent: Result<PublishAckFuture, Failure>,
    },
    /// A speculative version mismatch (the aggregate will be at `current`).
    Conflict { current: Version },
    /// A snapshot at the predicted `version`.
    SnapshotAt { version: Version },
    /// Decided one at a time once the earlier writes are done.
    Slow,
}

/// The bookkeeping of one write in flight.
pub(super) struct Slot {
    pub(super) shared: Arc<Shared>,
    pub(super) aggregate_id: String,
    pub(super) id: u64,
    pub(super) done: watch::Sender<Option<bool>>,
    pub(super) earlier: Vec<Done>,
    pub(super) given: Vec<EventId>,
    pub(super) reply: TicketSender,
    pub(super) _permit: OwnedSemaphorePermit,
}

impl Slot {
    /// Waits for the earlier writes; whether they all landed as predicted.
    /// (The wait is boxed, and skipped when there is nothing to wait for,
    /// to keep the write's future small: see `resolve_append`.)
    async fn earlier_held(&mut self) -> bool {
        if self.earlier.is_empty() {
            return true;
        }
        Box::pin(async {
            let mut held = true;
            for rx in &mut self.earlier {
                held &= match rx.wait_for(Option::is_some).await {
                    Ok(done) => done.unwrap_or(false),
                    Err(_) => false,
                };
            }
            held
        })
        .await
    }

    /// This append is acknowledged and in the view, its last event at
    /// `last_seq`: if it is still its chain's last append, the chain's state
    /// is now a fact.
    fn confirm(&self, last_seq: u64) {
        {
            let mut overlay = self.shared.pipeline.overlay.lock();
            if let Some(chain) = overlay.chains.get_mut(&self.aggregate_id)
                && chain.append_id == self.id
                && chain.speculable
            {
                chain.last_seq = last_seq;
                chain.confirmed = true;
            }
        }
        self.shared.pipeline.progress.send_modify(|n| *n += 1);
    }

    fn finish(self, result: WriteResult, held: bool) {
        {
            let mut overlay = self.shared.pipeline.overlay.lock();
            if overlay
                .chains
                .get(&self.aggregate_id)
                .is_some_and(|c| c.tail_id == self.id)
            {
                overlay.chains.remove(&self.aggregate_id);
            }
            for id in &self.given {
                if let Some(n) = overlay.given_ids.get_mut(id) {
                    *n -= 1;
                    if *n == 0 {
                        overlay.given_ids.remove(id);
                    }
                }
            }
        }
        self.done.send_replace(Some(held));
        self.shared.pipeline.progress.send_modify(|n| *n += 1);
        self.reply.send(result);
    }
}

fn mismatch(expected: ExpectedVersion, current: Version) -> BackendError {
    let expected = match expected {
        ExpectedVersion::Exact(v) => v,
        ExpectedVersion::Any => current,
    };
    ConcurrencyError { expected, current }.into()
}

/// Resolves a submitted append (see the module docs).
///
/// One future per write, so its size matters: an allocation of over 1 KiB
/// takes glibc's large-chunk path, which consolidates the small free lists
/// (measured when this was a tokio task of 3.5 KiB: `malloc_consolidate`
/// and page faults were 9% of the front end's CPU). So the rare paths
/// (deciding again one at a time, waiting for earlier writes) are boxed,
/// and the acknowledgement is cut down to what the reply needs (912 bytes
/// now).
pub(super) async fn resolve_append(
    mut slot: Slot,
    expected: ExpectedVersion,
    prepared: Prepared,
    ids: Vec<EventId>,
    plan: Plan,
) {
    let (result, held) = match plan {
        Plan::Fast {
            version,
            count,
            predicted_last,
            sent,
        } => match landed(&mut slot, version, count, predicted_last, sent).await {
            Ok(outcome) => outcome,
            Err(why) => {
                if std::env::var_os("EVENTSTORE_DEBUG_PIPELINE").is_some() {
                    eprintln!(
                        "pipeline: {} predicted at {predicted_last}: {why}",
                        slot.aggregate_id
                    );
                }
                let again = one_at_a_time(&slot, expected, prepared, ids);
                (Box::pin(again).await, false)
            }
        },
        // (Appends are submitted as `Fast` or `Slow` only.)
        Plan::Slow | Plan::Conflict { .. } | Plan::SnapshotAt { .. } => {
            slot.earlier_held().await;
            let again = one_at_a_time(&slot, expected, prepared, ids);
            (Box::pin(again).await, false)
        }
    };
    slot.finish(result, held);
}

/// A sent append's acknowledgement and its reply: `Err` (why, for the
/// debug output) when it did not land as sent (a duplicate, a wrong
/// expectation, no answer) and must be decided again one at a time, now
/// that the earlier writes are done.
async fn landed(
    slot: &mut Slot,
    version: Version,
    count: u64,
    predicted_last: u64,
    sent: Result<PublishAckFuture, Failure>,
) -> Result<(WriteResult, bool), String> {
    let ack = match sent {
        Ok(future) => Box::pin(future.into_future())
            .await
            .map(|ack| (ack.sequence, ack.duplicate))
            .map_err(|e| classify(e.kind(), e.to_string())),
        Err(failure) => Err(failure),
    };
    // The next append to this aggregate may be sent only once the view
    // holds this one, not at the acknowledgement: the stream's leader sends
    // the ack before it clears the subject's "expectation in process" mark,
    // and a publish with an expectation that arrives in between is refused
    // (err 10164), decided again after the appends behind it, and takes a
    // later sequence number than one at a time would (seen once in CI,
    // `jetstream_node`). The view holds the event only after the leader
    // stored it and a consumer delivered it, well after that mark is
    // cleared. (Confirmed before waiting for the earlier writes, as it was
    // at the acknowledgement: nothing of theirs is needed for it.)
    let in_view = match ack {
        Ok((sequence, false)) => {
            let shared = &slot.shared;
            // The events are stored: generous time for the view.
            let wait = Instant::now() + shared.config.unavailable_after;
            let in_view = Box::pin(shared.wait_head(sequence, wait)).await;
            if in_view.is_ok() {
                slot.confirm(sequence);
            }
            Some(in_view)
        }
        _ => None,
    };
    let earlier = slot.earlier_held().await;
    match (ack, in_view) {
        (Ok((sequence, false)), Some(in_view)) => {
            let result = in_view.map(|()| {
                Written::Appended(Appended {
                    positions: Positions::Consecutive {
                        first: SequenceNumber(sequence + 1 - count),
                        count,
                    },
                    version: Version(version.0 + count),
                    duplicate: false,
                })
            });
            let held = earlier && result.is_ok() && sequence == predicted_last;
            Ok((result, held))
        }
        (Err(Failure::Refused(why)), _) => Ok((
            Err(AppendError::Invalid(InvalidAppend::new("events", why)).into()),
            false,
        )),
        (Ok((sequence, true)), _) => Err(format!("duplicate of {sequence}")),
        (Err(Failure::WrongLast), _) => Err("wrong last sequence".to_owned()),
        (Err(Failure::Transient(why)), _) => Err(why),
        (Ok((_, false)), None) => unreachable!("a stored ack is always waited for in the view"),
    }
}

/// An append decided again one at a time, with the ids it was sent with.
fn one_at_a_time(
    slot: &Slot,
    expected: ExpectedVersion,
    prepared: Prepared,
    ids: Vec<EventId>,
) -> impl Future<Output = WriteResult> + use<> {
    let shared = Arc::clone(&slot.shared);
    let aggregate_id = slot.aggregate_id.clone();
    shared.pipeline.stats.slow.fetch_add(1, Ordering::Relaxed);
    async move {
        shared
            .append_with_ids(&aggregate_id, expected, prepared, ids)
            .await
            .map(Written::Appended)
    }
}

pub(super) async fn resolve_snapshot(
    mut slot: Slot,
    expected: Option<Version>,
    state: Option<String>,
    plan: Plan,
) {
    let shared = Arc::clone(&slot.shared);
    let aggregate_id = slot.aggregate_id.clone();
    let earlier = slot.earlier_held().await;
    let one_at_a_time = || async {
        let state = state.as_deref().map(JsonText::trusted);
        shared
            .create_snapshot(&aggregate_id, expected, state)
            .await
            .map(Written::Snapshot)
    };
    let (result, held) = match plan {
        _ if !earlier => (Box::pin(one_at_a_time()).await, false),
        Plan::Conflict { current } => (
            Err(mismatch(
                expected.map_or(ExpectedVersion::Any, ExpectedVersion::Exact),
                current,
            )),
            true,
        ),
        Plan::SnapshotAt { version } => {
            let deadline = Instant::now() + shared.config.unavailable_after;
            let state = match &state {
                Some(given) => given.clone(),
                None => {
                    let view = Arc::clone(&shared.view);
                    let id = aggregate_id.clone();
                    match fold(move || view.state_at_version(&id, version).0).await {
                        Ok(state) => state,
                        Err(why) => {
                            slot.finish(Err(BackendError::Unavailable(why)), false);
                            return;
                        }
                    }
                }
            };
            let last_seq = shared.view.position_at(&aggregate_id, version);
            let result = shared
                .publish_snapshot(&aggregate_id, version, last_seq, state, deadline)
                .await
                .map(Written::Snapshot);
            // A snapshot changes no event: the chain's prediction holds.
            (result, true)
        }
        Plan::Slow | Plan::Fast { .. } => (Box::pin(one_at_a_time()).await, false),
    };
    slot.finish(result, held);
}

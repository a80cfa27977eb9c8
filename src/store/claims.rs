//! Client ids: claims. The claim protocol itself (`link::claim`,
//! `confirm`, `kill`) lives in `log/link.rs` with the rest of the
//! lock-free protocol, where the loom models check it
//! (`tests/loom_link.rs`, `claims_*`); this file is the store's side: the
//! `DashMap` of claims, the retry loop, and what a found id means.
//!
//! Claiming an id is an insert-if-absent in `client_ids` (the shard lock
//! is held for that insert only). An existing claim is resolved by its
//! node's state: a *done* node stored the id (a retry of that batch, or a
//! conflict); a `FAILED` node's claim counts for nothing and is taken over;
//! a `PENDING` node is either its aggregate's `last` already (then it has
//! all its claims and anyone may confirm it, see `link.rs`) or is killed
//! (`link::kill`), and its owner starts over. A refused append withdraws
//! its claims; a claim of a node that is not done is never reported as
//! stored. So two threads retrying one batch at once end with one append
//! and one `duplicate: true`, in any interleaving.
//!
//! Killing makes the id path obstruction-free rather than lock-free: two
//! appends that keep claiming the same ids in opposite order could in
//! principle kill each other for ever (each kill needs the other to be in
//! the short window between its claims and its reservation).
//!
//! An append carrying client ids comes here from the append path
//! (`append.rs`), claims them, then reserves and links as any append.

use super::EventStore;
use super::append::{Appended, Positions, concurrency, exact, id_field};
use crate::aggregate::Aggregate;
use crate::error::{AppendError, IdConflict, InvalidAppend};
use crate::event::{Event, RecordedEvent};
use crate::hash::KeyedState;
use crate::log::link::{self, Claim, Link, Refused};
use crate::log::{Commit, Events};
use crate::time::Timestamp;
use crate::types::{EventId, ExpectedVersion, SequenceNumber, Version};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The store's claims map, as the claim protocol (`link::claim`) sees it.
struct ClientIds<'a>(&'a DashMap<EventId, u64, KeyedState>);

impl link::Claims for ClientIds<'_> {
    type Id = EventId;

    fn claim_if_absent(&self, id: EventId, node: u64) -> Option<u64> {
        // The shard lock is held for this entry operation only.
        match self.0.entry(id) {
            Entry::Vacant(v) => {
                v.insert(node);
                None
            }
            Entry::Occupied(o) => Some(*o.get()),
        }
    }

    fn take_over(&self, id: EventId, from: u64, to: u64) -> bool {
        // The shard lock is held for this entry operation only.
        match self.0.entry(id) {
            Entry::Occupied(mut o) if *o.get() == from => {
                o.insert(to);
                true
            }
            _ => false,
        }
    }
}

impl EventStore {
    /// An append carrying client ids: claim them, then reserve (see the
    /// module docs).
    pub(super) fn append_claiming(
        &self,
        aggregate: &Arc<Aggregate>,
        expected: ExpectedVersion,
        events: Events,
        now: Timestamp,
    ) -> Result<Appended, AppendError> {
        let count = events.len() as u64;
        let mut events = Some(events);
        let mut previous = None;
        loop {
            // The texts move into the first node; a restart (rare: killed by
            // a competitor) copies them from the node before.
            let texts = match (events.take(), previous) {
                (Some(e), _) => e,
                (None, Some(p)) => self.log.commit(p).events.clone(),
                (None, None) => panic!("an append restarted without a node"),
            };
            let node = self.log.add(Commit {
                link: Link::new(count, now.0, true),
                aggregate: Arc::clone(aggregate),
                events: texts,
            });
            previous = Some(node);
            let events = &self.log.commit(node).events;
            let mut claimed = Vec::with_capacity(events.len());
            let mut stored = None;
            for (i, e) in events.iter().enumerate() {
                let Some(id) = e.given_id() else { continue };
                let field = || id_field(events.len(), i);
                let found = if self.ids.is_tagged(id) {
                    self.locate_generated(id, field)
                } else {
                    let claims = ClientIds(&self.client_ids);
                    match link::claim(&*self.log, self.log.chain(), &claims, id, node) {
                        Claim::Taken => {
                            claimed.push(id);
                            Ok(None)
                        }
                        Claim::Stored(by) => Ok(Some(self.stored_id(by, id))),
                    }
                };
                match found {
                    Ok(None) => {}
                    Ok(Some(seq)) => {
                        stored = Some(Ok((i, id, seq)));
                        break;
                    }
                    Err(e) => {
                        stored = Some(Err(e));
                        break;
                    }
                }
            }
            if let Some(found) = stored {
                let killed =
                    self.log.commit(node).link.status.load(Ordering::Acquire) == link::FAILED;
                self.withdraw(node, &claimed);
                if killed {
                    // A competitor took one of our earlier ids meanwhile:
                    // what we found is judged from the batch's first id
                    // again.
                    continue;
                }
                let (i, id, seq) = found?;
                return self.stored_result(aggregate, i, id, seq, events);
            }
            match link::reserve(
                &*self.log,
                self.log.chain(),
                &aggregate.last,
                exact(expected),
                || node,
            ) {
                Ok((node, base)) => return Ok(self.finish(node, base)),
                Err((Refused::Version(current), _)) => {
                    self.withdraw(node, &claimed);
                    return Err(concurrency(expected, Version(current)));
                }
                // A competitor for one of our ids killed the node: start
                // over (its claims are taken over or withdrawn).
                Err((Refused::Killed, _)) => self.withdraw(node, &claimed),
                Err((Refused::Stopped, _)) => panic!("the store's pause hook stopped an append"),
            }
        }
    }

    /// Withdraws a refused node's claims and marks it failed.
    fn withdraw(&self, node: u64, claimed: &[EventId]) {
        link::abandon(&*self.log, node);
        for id in claimed {
            self.client_ids.remove_if(id, |_, &v| v == node);
        }
    }

    /// The sequence number of `id` in the done node `node`.
    pub(super) fn stored_id(&self, node: u64, id: EventId) -> SequenceNumber {
        let commit = self.log.commit(node);
        let Some(i) = commit.events.iter().position(|e| e.given_id() == Some(id)) else {
            panic!("node {node} claimed {id} but does not hold it");
        };
        SequenceNumber(commit.first_seq() + i as u64)
    }

    /// A batch whose event `i` (with `id`) is stored at `seq`: a retry when
    /// `i` is 0 and in this aggregate, else a conflict.
    fn stored_result(
        &self,
        aggregate: &Arc<Aggregate>,
        i: usize,
        id: EventId,
        seq: SequenceNumber,
        events: &[Event],
    ) -> Result<Appended, AppendError> {
        // At or below the head: `seq`'s node is done, and this thread saw
        // it done (Acquire), so `recorded` may be used.
        let Some(stored) = self.recorded(seq) else {
            panic!("stored event {seq} has no index entry");
        };
        if i == 0 && Arc::ptr_eq(stored.aggregate(), aggregate) {
            return self.retry(aggregate, stored.version(), events);
        }
        Err(IdConflict::AlreadyStored {
            id,
            aggregate_id: stored.aggregate_id().to_owned(),
            version: stored.version(),
        }
        .into())
    }

    /// Where the event with a generated-form `id` is: it must name an
    /// existing event, or it could clash with an id the store generates
    /// later.
    fn locate_generated(
        &self,
        id: EventId,
        field: impl Fn() -> String,
    ) -> Result<Option<SequenceNumber>, InvalidAppend> {
        match self.ids.sequence_of(id) {
            Some(seq) if self.event(seq).is_some_and(|e| e.id() == id) => Ok(Some(seq)),
            _ => Err(InvalidAppend::new(
                field(),
                format!(
                    "{id} is reserved: it has the form of ids this store generates, but no event has it"
                ),
            )),
        }
    }

    /// Records a client-given id (recovery: one thread, nothing to race).
    pub(crate) fn index_client_id(&self, id: EventId, node: u64) {
        self.client_ids.insert(id, node);
    }

    /// A batch whose first event is stored at `first_version`: a retry if the
    /// stored events after it match the batch's ids.
    pub(super) fn retry(
        &self,
        aggregate: &Aggregate,
        first_version: Version,
        events: &[Event],
    ) -> Result<Appended, AppendError> {
        let last_version = Version(first_version.0 + events.len() as u64 - 1);
        let seqs = self.stream_slice(aggregate, first_version, last_version);
        let mut out = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let stored = seqs.get(i).and_then(|&s| self.recorded(s));
            match stored {
                Some(ev) if same_event(e, &ev) => out.push(ev.sequence_number),
                _ => {
                    return Err(IdConflict::RetryMismatch {
                        first: match events[0].given_id() {
                            Some(id) => id,
                            // `retry` is only called for a batch whose first
                            // event's id was found stored.
                            None => panic!("a retry whose first event has no id"),
                        },
                        index: i,
                    }
                    .into());
                }
            }
        }
        Ok(Appended {
            positions: Positions::Listed(out),
            version: last_version,
            duplicate: true,
        })
    }
}

/// Whether a stored event is the one a retried batch carries: the same id
/// when the batch gives one, else the same type, data and metadata.
fn same_event(new: &Event, stored: &RecordedEvent<'_>) -> bool {
    match new.given_id() {
        Some(id) => id == stored.id(),
        None => stored.event().same_text(new),
    }
}

//! Snapshots, replay and state-at-a-time: the reads that fold events.
//!
//! # Plans: capture cheaply, fold later
//!
//! Each folding read is split in two. The *plan* is O(1): the aggregate,
//! its visible version and its snapshot at that instant (no lock an append
//! takes: the version is one atomic load, the snapshot slot has its own
//! mutex that appends never touch). *Executing* the plan folds the events,
//! with no lock held. Because events are immutable
//! and an aggregate's first `v` events never change, executing a plan later
//! gives exactly the state as of the instant it was taken. The node takes
//! plans in its serial apply step and executes them on its parallel workers.
//!
//! # Lazy snapshots
//!
//! A snapshot of the fold (no client-given state) is recorded as just its
//! version: the fold of the first `v` events is fixed forever, so it is
//! computed on first read and memoised (`OnceLock`). Creating one is O(1);
//! a snapshot with a given state stores that JSON text. The record lives
//! in the aggregate's snapshot slot ([`SnapshotRecord`], `src/aggregate.rs`).

use super::EventStore;
use crate::aggregate::state_cache::{CHECKPOINT_EVERY, Folded, worth_keeping};
use crate::aggregate::{Aggregate, SnapshotRecord, SnapshotState};
use crate::error::{AppendError, ConcurrencyError};
use crate::fold::Fold;
use crate::storage::record;
use crate::time::Timestamp;
use crate::types::{JsonText, Version};
use serde_json::value::RawValue;
use std::sync::{Arc, OnceLock};

/// A snapshot as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The aggregate's version when the snapshot was taken.
    pub version: Version,
    /// The state, as JSON text.
    pub state: String,
}

/// The result of a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// The version of the snapshot the fold started from (`Some(Version(0))`
    /// when a snapshot was asked for and there is none; `None` when none was
    /// asked for).
    pub snapshot_version: Option<Version>,
    /// How many events were folded (after the snapshot, if one was used).
    pub events_replayed: u64,
    /// The resulting state, as JSON text.
    pub state: String,
}

/// A folding read captured at one instant; see the module docs.
#[derive(Debug, Default)]
pub struct FoldPlan {
    aggregate: Option<Arc<Aggregate>>,
    snapshot: Option<Arc<SnapshotRecord>>,
    /// Fold from `start` (exclusive) ...
    start: Version,
    /// ... to `end` (inclusive).
    end: Version,
    /// Only events recorded at or before this time.
    until: Option<Timestamp>,
}

impl FoldPlan {
    /// The version of the snapshot the fold starts from (0 when none).
    pub fn snapshot_version(&self) -> Version {
        self.start
    }

    /// The most events the fold can take (it may take fewer when a time
    /// bound stops it early).
    pub fn events_at_most(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }

    /// Folds and writes the state as JSON text to `out`; returns the number
    /// of events the fold covers (after the snapshot, if one is used). A
    /// fold from `{}` starts from the nearest cached state at or before its
    /// end (`aggregate/state_cache.rs`); the result is the same, and so is
    /// the count.
    pub fn write_state(&self, store: &EventStore, out: &mut Vec<u8>) -> u64 {
        let Some(aggregate) = &self.aggregate else {
            out.extend_from_slice(b"{}");
            return 0;
        };
        let Some(snapshot) = &self.snapshot else {
            let end = match self.until {
                Some(t) => last_version_at(store, aggregate, self.end, t),
                None => self.end,
            };
            out.extend_from_slice(fold_from_empty(store, aggregate, end).as_bytes());
            return end.0 - self.start.0;
        };
        let mut fold = Fold::from_state(snapshot.state_text(store, aggregate));
        let seqs = store.stream_slice(aggregate, Version(self.start.0 + 1), self.end);
        let mut folded = 0;
        for seq in seqs {
            // Visible when the plan was taken: `recorded` may be used.
            let Some(event) = store.recorded(seq) else {
                panic!("event {seq} of aggregate {} is missing", aggregate.name());
            };
            if self.until.is_some_and(|t| event.recorded_at() > t) {
                // recorded_at never falls along the log, and sequence numbers
                // rise along the aggregate: no later event can qualify.
                break;
            }
            fold.apply(event.event().data());
            folded += 1;
        }
        fold.write(out);
        folded
    }

    /// Folds and returns the state as a string, with the count of events.
    pub fn state(&self, store: &EventStore) -> (String, u64) {
        let mut out = Vec::new();
        let n = self.write_state(store, &mut out);
        // States and folds are written from `str`s only.
        let state = String::from_utf8(out).unwrap_or_else(|e| panic!("a state is not UTF-8: {e}"));
        (state, n)
    }
}

/// The highest version of `aggregate` up to `end` whose event was recorded
/// at or before `at` (0 if none): a binary search, as `recorded_at` never
/// falls along an aggregate.
fn last_version_at(
    store: &EventStore,
    aggregate: &Aggregate,
    end: Version,
    at: Timestamp,
) -> Version {
    let recorded = |v: u64| {
        let event = store
            .seq_at(aggregate, Version(v))
            .and_then(|seq| store.recorded(seq));
        let Some(event) = event else {
            panic!("version {v} of aggregate {} is missing", aggregate.name());
        };
        event.recorded_at()
    };
    // Invariant: versions ≤ lo qualify, versions > hi do not.
    let (mut lo, mut hi) = (0, end.0);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if recorded(mid) <= at {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Version(lo)
}

/// The fold from `{}` of `aggregate`'s first `end` events, starting from the
/// nearest cached state at or before `end` and leaving checkpoints and the
/// latest state behind for later reads (see `aggregate/state_cache.rs`).
fn fold_from_empty(store: &EventStore, aggregate: &Aggregate, end: Version) -> Arc<str> {
    let base = aggregate.states.at_or_before(end.0);
    if let Some(base) = &base
        && base.version == end.0
    {
        return Arc::clone(&base.text);
    }
    let (from, mut covered) = base.as_ref().map_or((0, 0), |b| (b.version, b.covered));
    let mut fold = base
        .as_ref()
        .map_or_else(Fold::new, |b| Fold::from_state(&b.text));
    let seqs = store.stream_slice(aggregate, Version(from + 1), end);
    assert_eq!(
        seqs.len() as u64,
        end.0 - from,
        "versions of a plan are missing"
    );
    let mut since_checkpoint = 0;
    for (version, seq) in (from + 1..).zip(seqs) {
        let Some(event) = store.recorded(seq) else {
            panic!("event {seq} of aggregate {} is missing", aggregate.name());
        };
        fold.apply(event.event().data());
        covered += event.event().data().len();
        since_checkpoint += event.event().data().len();
        if version % CHECKPOINT_EVERY == 0 {
            let text = fold.to_json();
            if worth_keeping(text.len(), since_checkpoint) {
                aggregate.states.offer_checkpoint(Folded {
                    version,
                    text: Arc::from(text),
                    covered,
                });
            }
            since_checkpoint = 0;
        }
    }
    let text: Arc<str> = Arc::from(fold.to_json());
    if worth_keeping(text.len(), covered) {
        aggregate.states.offer_latest(Folded {
            version: end.0,
            text: Arc::clone(&text),
            covered,
        });
    }
    text
}

impl SnapshotRecord {
    /// The snapshot's state text, folding it on first use.
    fn state_text<'s>(&'s self, store: &EventStore, aggregate: &Aggregate) -> &'s str {
        match &self.state {
            SnapshotState::Given(text) => text,
            SnapshotState::Folded(memo) => {
                memo.get_or_init(|| Box::from(&*fold_from_empty(store, aggregate, self.version)))
            }
        }
    }
}

impl EventStore {
    /// Saves a snapshot at the aggregate's current version: `state` if given,
    /// else the fold of its events. Replaces its earlier snapshot. With
    /// `expected`, the aggregate must be at that version. An aggregate with no
    /// events is at version 0 and can be snapshotted there.
    ///
    /// On a durable store the snapshot is durable when this returns `Ok`;
    /// the errors are [`AppendError::Concurrency`],
    /// [`AppendError::Storage`], and on a durable store
    /// [`AppendError::Invalid`] for a given state whose record would exceed
    /// 1 GiB.
    pub fn create_snapshot(
        &self,
        aggregate_id: &str,
        expected: Option<Version>,
        state: Option<&RawValue>,
    ) -> Result<Version, AppendError> {
        self.check_storage()?;
        let version =
            self.create_snapshot_deferred(aggregate_id, expected, state.map(JsonText::from))?;
        self.sync()?;
        Ok(version)
    }

    /// [`EventStore::create_snapshot`] without waiting for durability (see
    /// [`EventStore::append_deferred`]).
    pub fn create_snapshot_deferred(
        &self,
        aggregate_id: &str,
        expected: Option<Version>,
        state: Option<JsonText<'_>>,
    ) -> Result<Version, AppendError> {
        if let Some(state) = state {
            let bytes = record::snapshot_payload_bytes(aggregate_id.len(), state.get().len());
            self.record_fits("state", bytes)?;
        }
        let aggregate = match self.find(aggregate_id) {
            Some(a) => a,
            None => match expected {
                Some(v) if v != Version::INITIAL => {
                    return Err(ConcurrencyError {
                        expected: v,
                        current: Version::INITIAL,
                    }
                    .into());
                }
                _ => self.find_or_create(aggregate_id),
            },
        };
        let state = match state {
            Some(raw) => SnapshotState::Given(raw.get().into()),
            None => SnapshotState::Folded(OnceLock::new()),
        };
        // The snapshot slot's own lock, which no append takes: held across
        // the version check so that two snapshots of one aggregate are
        // stored (and journalled) in the order of their versions.
        let mut slot = aggregate.snapshot.lock();
        let current = self.version_of(self.visible(&aggregate));
        if let Some(v) = expected.filter(|&v| v != current) {
            return Err(ConcurrencyError {
                expected: v,
                current,
            }
            .into());
        }
        if let Some(journal) = &self.journal {
            // Written after every event it covers (all visible now).
            let given = match &state {
                SnapshotState::Given(text) => Some(&**text),
                SnapshotState::Folded(_) => None,
            };
            journal.snapshot(self.head(), aggregate_id, current, given);
        }
        *slot = Some(Arc::new(SnapshotRecord {
            version: current,
            state,
        }));
        Ok(current)
    }

    /// The aggregate's latest snapshot, if any.
    pub fn snapshot(&self, aggregate_id: &str) -> Option<Snapshot> {
        let (aggregate, record) = self.snapshot_record(aggregate_id)?;
        Some(Snapshot {
            version: record.version,
            state: record.state_text(self, &aggregate).to_owned(),
        })
    }

    /// The aggregate and its latest snapshot record.
    pub(crate) fn snapshot_record(
        &self,
        aggregate_id: &str,
    ) -> Option<(Arc<Aggregate>, Arc<SnapshotRecord>)> {
        let aggregate = self.find(aggregate_id)?;
        let record = aggregate.snapshot.lock().clone()?;
        Some((aggregate, record))
    }

    /// Writes a snapshot record's version and state (for the node's encoder).
    pub(crate) fn write_snapshot_state(
        &self,
        aggregate: &Aggregate,
        record: &SnapshotRecord,
        out: &mut Vec<u8>,
    ) -> Version {
        out.extend_from_slice(record.state_text(self, aggregate).as_bytes());
        record.version
    }

    /// Captures a replay: all events, or those after the latest snapshot.
    pub fn replay_plan(&self, aggregate_id: &str, use_snapshot: bool) -> FoldPlan {
        self.plan(aggregate_id, use_snapshot, None)
    }

    /// The fold of an aggregate's events up to `version` (fewer if it has
    /// fewer), with the count folded: a snapshot decided at that version
    /// while later events may already be in the store (the JetStream
    /// backend's pipelined writes).
    #[cfg_attr(not(feature = "jetstream"), allow(dead_code))]
    pub(crate) fn state_at_version(&self, aggregate_id: &str, version: Version) -> (String, u64) {
        let mut plan = self.plan(aggregate_id, false, None);
        plan.end = Version(plan.end.0.min(version.0));
        plan.state(self)
    }

    /// Captures the fold of the events recorded at or before `at`.
    pub fn state_plan(&self, aggregate_id: &str, at: Timestamp) -> FoldPlan {
        self.plan(aggregate_id, false, Some(at))
    }

    fn plan(&self, aggregate_id: &str, use_snapshot: bool, until: Option<Timestamp>) -> FoldPlan {
        let Some(aggregate) = self.find(aggregate_id) else {
            return FoldPlan::default();
        };
        // Snapshot first: its version is then at most the version read
        // after it (versions only grow).
        let snapshot = if use_snapshot {
            aggregate.snapshot.lock().clone()
        } else {
            None
        };
        let end = self.version_of(self.visible(&aggregate));
        FoldPlan {
            start: snapshot.as_ref().map_or(Version::INITIAL, |s| s.version),
            aggregate: Some(aggregate),
            snapshot,
            end,
            until,
        }
    }

    /// Rebuilds an aggregate's state: the fold of all its events, or of the
    /// events after its latest snapshot starting from the snapshot's state.
    pub fn replay(&self, aggregate_id: &str, use_snapshot: bool) -> Replay {
        let plan = self.replay_plan(aggregate_id, use_snapshot);
        let (state, events_replayed) = plan.state(self);
        Replay {
            snapshot_version: use_snapshot.then(|| plan.snapshot_version()),
            events_replayed,
            state,
        }
    }

    /// The aggregate's state as of `at`: the fold of its events recorded at
    /// or before that time.
    pub fn state_at(&self, aggregate_id: &str, at: Timestamp) -> String {
        self.state_plan(aggregate_id, at).state(self).0
    }
}

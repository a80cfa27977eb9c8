//! Folded states kept per aggregate, so that a read folds only the events
//! since a state it (or another read) computed before, not the whole
//! history.
//!
//! # What is kept
//!
//! - The **latest** state computed: `(version, state text)`. A `replay` or a
//!   `get_state` at a version at or past it folds only the events after it.
//! - **Checkpoints**: the state at every [`CHECKPOINT_EVERY`]-th version,
//!   recorded by whichever read folds past that version. A read of an older
//!   version (`get_state` at a past time, a lazy snapshot) starts from the
//!   nearest checkpoint at or before it.
//!
//! Only folds that start from `{}` (no snapshot) are cached: the state at
//! version `v` is then a pure function of the first `v` events, which are
//! immutable, so a cached state can never be wrong — and a read only ever
//! uses a state at a version at or before the one it was planned at, never
//! one from its future.
//!
//! # Memory bound
//!
//! A state is kept only if its text is at most [`MAX_FRACTION`] (a quarter)
//! of the payload bytes (`event_data`) of the events it stands for: for a
//! checkpoint, the events since the previous checkpoint version; for the
//! latest state, all events up to it. So an aggregate's checkpoints
//! together cost at most a quarter of its events' payload, its latest state
//! at most another quarter: at most half in all. States too large to be
//! worth keeping (events that each add new keys) are not kept. A newer latest state
//! replaces the older one; checkpoints are never evicted (they are bounded
//! by the same fraction). Nothing here is persisted: after a restart the
//! caches fill again as reads come.
//!
//! # Concurrency
//!
//! Appenders never touch a cache. Readers take its mutex only to copy an
//! `Arc` out or to put one in — never while folding — so a reader folding a
//! long history holds up neither writers nor other readers.

use parking_lot::Mutex;
use std::sync::Arc;

/// A checkpoint is taken at every version that is a multiple of this.
pub const CHECKPOINT_EVERY: u64 = 1_024;

/// A state is kept only if its text is at most this fraction (1 / 4) of
/// the payload bytes of the events it covers.
pub const MAX_FRACTION: (usize, usize) = (1, 4);

/// A folded state: the version it is at, and its JSON text.
#[derive(Clone, Debug)]
pub(crate) struct Folded {
    pub(crate) version: u64,
    pub(crate) text: Arc<str>,
    /// Payload bytes of the events up to `version`.
    pub(crate) covered: usize,
}

#[derive(Debug, Default)]
struct Inner {
    latest: Option<Folded>,
    /// Ascending versions, each a multiple of `CHECKPOINT_EVERY`.
    checkpoints: Vec<Folded>,
}

/// One aggregate's cached states; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct StateCache {
    inner: Mutex<Inner>,
}

/// Whether a state of `state_bytes` is worth keeping for events of
/// `covered_bytes`.
pub(crate) fn worth_keeping(state_bytes: usize, covered_bytes: usize) -> bool {
    state_bytes.saturating_mul(MAX_FRACTION.1) <= covered_bytes.saturating_mul(MAX_FRACTION.0)
}

impl StateCache {
    /// The cached state at the highest version at or before `version`.
    pub(crate) fn at_or_before(&self, version: u64) -> Option<Folded> {
        let inner = self.inner.lock();
        let latest = inner.latest.as_ref().filter(|l| l.version <= version);
        let i = inner.checkpoints.partition_point(|c| c.version <= version);
        let checkpoint = i.checked_sub(1).map(|i| &inner.checkpoints[i]);
        match (latest, checkpoint) {
            (Some(l), Some(c)) if c.version > l.version => Some(c.clone()),
            (Some(l), _) => Some(l.clone()),
            (None, c) => c.cloned(),
        }
    }

    /// Records the state at `version` as the latest, if newer.
    pub(crate) fn offer_latest(&self, state: Folded) {
        let mut inner = self.inner.lock();
        if inner
            .latest
            .as_ref()
            .is_none_or(|l| l.version < state.version)
        {
            inner.latest = Some(state);
        }
    }

    /// Records a checkpoint (its version a multiple of `CHECKPOINT_EVERY`),
    /// unless one is there already.
    pub(crate) fn offer_checkpoint(&self, state: Folded) {
        assert_eq!(
            state.version % CHECKPOINT_EVERY,
            0,
            "checkpoint off the grid"
        );
        let mut inner = self.inner.lock();
        let i = inner
            .checkpoints
            .partition_point(|c| c.version < state.version);
        if inner
            .checkpoints
            .get(i)
            .is_none_or(|c| c.version != state.version)
        {
            inner.checkpoints.insert(i, state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(version: u64) -> Folded {
        Folded {
            version,
            text: Arc::from(format!("{{\"v\":{version}}}")),
            covered: 0,
        }
    }

    #[test]
    fn the_best_state_at_or_before_a_version() {
        let cache = StateCache::default();
        assert!(cache.at_or_before(5000).is_none());
        cache.offer_checkpoint(folded(1024));
        cache.offer_checkpoint(folded(3072));
        cache.offer_latest(folded(2000));
        assert_eq!(cache.at_or_before(1000).map(|f| f.version), None);
        assert_eq!(cache.at_or_before(1500).map(|f| f.version), Some(1024));
        assert_eq!(cache.at_or_before(2500).map(|f| f.version), Some(2000));
        assert_eq!(cache.at_or_before(9999).map(|f| f.version), Some(3072));
        cache.offer_latest(folded(1500));
        assert_eq!(
            cache.at_or_before(2500).map(|f| f.version),
            Some(2000),
            "older latest ignored"
        );
    }

    #[test]
    fn only_small_states_are_worth_keeping() {
        assert!(worth_keeping(100, 400));
        assert!(!worth_keeping(101, 400));
        assert!(!worth_keeping(1, 0));
    }
}

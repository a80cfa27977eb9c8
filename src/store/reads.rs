//! Reads: an aggregate's events by version, the global log by sequence
//! number, and filtered pages of the global log.
//!
//! A stream read finds its versions through the aggregate's version index
//! (`aggregate/versions.rs`), which readers build and appenders never
//! touch; a global read goes through the log's index. Every read sees a
//! contiguous prefix of the log (see `log/link.rs`) and checks it.

use super::EventStore;
use crate::aggregate::Aggregate;
use crate::aggregate::versions::VersionIndex;
use crate::event::RecordedEvent;
use crate::filter::{Filter, PageBounds};
use crate::log::link;
use crate::types::{SequenceNumber, Version};
use std::sync::atomic::Ordering;

impl EventStore {
    /// The sequence numbers of versions `from..=to` of an aggregate (clamped
    /// to what is visible), in version order: through the version index
    /// (`aggregate/versions.rs`), or, where an append has not indexed its
    /// versions yet, a walk back along the aggregate's commits from its
    /// last visible one.
    pub(crate) fn stream_slice(
        &self,
        aggregate: &Aggregate,
        from: Version,
        to: Version,
    ) -> Vec<SequenceNumber> {
        let from = from.0.max(1);
        let last = self.visible(aggregate);
        let to = Version(to.0.min(self.version_of(last).0));
        if from > to.0 {
            return Vec::new();
        }
        let index = aggregate.versions.get_or_init(Box::default);
        if index.indexed() < to.0 {
            self.index_versions(index, last);
        }
        let mut out = Vec::with_capacity((to.0 - from + 1).min(1 << 16) as usize);
        let mut v = from;
        while v <= to.0 {
            let Some(node) = index.get(v) else {
                panic!(
                    "version {v} of {} is below the indexed prefix but not indexed",
                    aggregate.name()
                );
            };
            let commit = self.log.commit(node);
            // Relaxed: the filler saw the node visible (see
            // `aggregate/versions.rs`).
            let base = commit.link.base.load(Ordering::Relaxed);
            let after = base + commit.link.count();
            assert!(
                base < v && v <= after,
                "the version index of {} sends version {v} to a commit of {}..={after}",
                aggregate.name(),
                base + 1
            );
            let first = commit.first_seq();
            let end = after.min(to.0);
            out.extend((v..=end).map(|w| SequenceNumber(first + (w - base - 1))));
            v = end + 1;
        }
        out
    }

    /// Extends `index` up to the version of `last` (an aggregate's visible
    /// commit) by walking the commits back from it to the indexed
    /// prefix (see `aggregate/versions.rs`).
    fn index_versions(&self, index: &VersionIndex, last: u64) {
        let indexed = index.indexed();
        let top = self.version_of(last).0;
        if top <= indexed {
            // Another reader, with a newer `last`, got there first.
            return;
        }
        let mut node = last;
        while node != link::NONE {
            let commit = self.log.commit(node);
            // Relaxed: written before the node was published as `last`,
            // which `visible` acquired (or a later node's `prev` chain).
            let base = commit.link.base.load(Ordering::Relaxed);
            let after = base + commit.link.count();
            if after <= indexed {
                break;
            }
            for v in (base + 1).max(indexed + 1)..=after {
                index.set(v, node);
            }
            node = commit.link.prev.load(Ordering::Relaxed);
        }
        index.raise(top);
    }

    /// The sequence number of the aggregate's event at `version` (≥ 1).
    pub(crate) fn seq_at(&self, aggregate: &Aggregate, version: Version) -> Option<SequenceNumber> {
        self.stream_slice(aggregate, version, version)
            .first()
            .copied()
    }

    /// The sequence numbers of an aggregate's versions `from..=to`
    /// (clamped to what exists; empty for an unknown aggregate).
    pub fn stream_positions(
        &self,
        aggregate_id: &str,
        from: Version,
        to: Version,
    ) -> Vec<SequenceNumber> {
        self.find(aggregate_id)
            .map(|a| self.stream_slice(&a, from, to))
            .unwrap_or_default()
    }

    /// The sequence numbers of an aggregate's events within `from..=last`
    /// (sequence numbers), at most `max_count` of them: a binary search, then
    /// only what is returned is copied.
    pub fn stream_positions_between(
        &self,
        aggregate_id: &str,
        from: SequenceNumber,
        last: SequenceNumber,
        max_count: usize,
    ) -> Vec<SequenceNumber> {
        let Some(aggregate) = self.find(aggregate_id) else {
            return Vec::new();
        };
        let visible = self.version_of(self.visible(&aggregate)).0;
        // The first version at or after `from` (sequence numbers rise with
        // versions): a binary search over O(1) lookups.
        let (mut lo, mut hi) = (1, visible + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.seq_at(&aggregate, Version(mid)) {
                Some(seq) if seq < from => lo = mid + 1,
                _ => hi = mid,
            }
        }
        let to = visible.min(lo.saturating_add(max_count as u64).saturating_sub(1));
        let mut seqs = self.stream_slice(&aggregate, Version(lo), Version(to));
        seqs.retain(|s| *s <= last);
        seqs
    }

    /// Filtered [`EventStore::read_all`]: the events matching `filter` from
    /// `from`, at most `max_count`, looking at no more than
    /// [`LOOK_LIMIT`](crate::LOOK_LIMIT) events; see [`Filter`].
    pub fn read_all_filtered<'s>(
        &'s self,
        from: SequenceNumber,
        max_count: u64,
        filter: &'s Filter,
    ) -> FilteredSlice<'s> {
        let head = self.head();
        let bounds = PageBounds::new(from, head);
        let events: Vec<_> = self
            .matching(filter, bounds, max_count)
            .filter_map(|seq| self.event(seq))
            .collect();
        let last = events.last().map(|e| e.sequence_number.0);
        let next = bounds.next_sequence(max_count, events.len() as u64, last);
        FilteredSlice {
            head,
            events,
            next_sequence: SequenceNumber(next),
        }
    }

    /// The matching sequence numbers of a filtered page, in order, at most
    /// `max_count`: an aggregate filter reads the aggregate's own positions,
    /// a category filter the category index's (`categories.rs`), an
    /// event-type filter alone scans the page (see `filter.rs`).
    pub(crate) fn matching<'s>(
        &'s self,
        filter: &'s Filter,
        bounds: PageBounds,
        max_count: u64,
    ) -> Box<dyn Iterator<Item = SequenceNumber> + 's> {
        let store = self;
        let wanted = usize::try_from(max_count).unwrap_or(usize::MAX);
        let matching =
            move |seq: &SequenceNumber| store.event(*seq).is_some_and(|e| filter.matches_event(&e));
        // With no type filter, every candidate of an aggregate matches.
        let cap = if filter.event_types.is_some() {
            usize::MAX
        } else {
            wanted
        };
        match (filter.aggregate_id.as_deref(), filter.category.as_deref()) {
            // The aggregate's own positions (sequence numbers rise with its
            // versions): with no type filter, exactly what is returned.
            (Some(aggregate_id), _) => {
                let seqs = store.stream_positions_between(
                    aggregate_id,
                    SequenceNumber(bounds.from),
                    SequenceNumber(bounds.last),
                    cap,
                );
                Box::new(seqs.into_iter().filter(matching).take(wanted))
            }
            // The category index's candidates, checked like scanned events.
            (None, Some(category)) => Box::new(
                store
                    .category_candidates(
                        category,
                        SequenceNumber(bounds.from),
                        SequenceNumber(bounds.last),
                        cap,
                    )
                    .filter(matching)
                    .take(wanted),
            ),
            (None, None) => Box::new(
                (bounds.from..=bounds.last)
                    .map(SequenceNumber)
                    .filter(matching)
                    .take(wanted),
            ),
        }
    }

    /// Reads up to `max_count` events of an aggregate from version `from`
    /// (1-based; 0 reads from the start), with its current version.
    pub fn read_stream(
        &self,
        aggregate_id: &str,
        from: Version,
        max_count: usize,
    ) -> StreamSlice<'_> {
        let Some(aggregate) = self.find(aggregate_id) else {
            return StreamSlice {
                version: Version::INITIAL,
                events: Vec::new(),
            };
        };
        let top = self.visible(&aggregate);
        let version = self.version_of(top);
        let from = Version(from.0.max(1));
        let to = Version(
            from.0
                .saturating_add(max_count as u64)
                .saturating_sub(1)
                .min(version.0),
        );
        let events = if max_count == 0 {
            Vec::new()
        } else {
            // Every visible commit is done, and this thread acquired its
            // `end` (in `visible`) or a later one's: `recorded` may be used.
            self.stream_slice(&aggregate, from, to)
                .into_iter()
                .map(|s| match self.recorded(s) {
                    Some(event) => event,
                    None => panic!(
                        "visible event {s} of {} has no index entry",
                        aggregate.name()
                    ),
                })
                .collect()
        };
        StreamSlice { version, events }
    }

    /// Reads up to `max_count` events of the global log from `from` (0 reads
    /// from the start), with the head when the read started.
    pub fn read_all(&self, from: SequenceNumber, max_count: usize) -> AllSlice<'_> {
        let head = self.head();
        let from = from.0.max(1);
        let to = from
            .saturating_add(max_count as u64)
            .saturating_sub(1)
            .min(head.0);
        let events: Vec<_> = (from..=to)
            .filter_map(|s| self.recorded(SequenceNumber(s)))
            .collect();
        // Read side of density: a visible prefix has no holes.
        assert_eq!(
            events.len() as u64,
            (to + 1).saturating_sub(from),
            "hole in the visible log"
        );
        AllSlice { head, events }
    }

    /// Sequence numbers of an aggregate's events (for tests and tools).
    pub fn stream_sequence_numbers(&self, aggregate_id: &str) -> Vec<SequenceNumber> {
        self.find(aggregate_id)
            .map(|a| self.stream_slice(&a, Version(1), Version(u64::MAX)))
            .unwrap_or_default()
    }
}

/// Events of one aggregate, as read by [`EventStore::read_stream`].
#[derive(Debug)]
pub struct StreamSlice<'a> {
    /// The aggregate's version at the time of the read.
    pub version: Version,
    /// The events read, in version order.
    pub events: Vec<RecordedEvent<'a>>,
}

/// Events of the global log, as read by [`EventStore::read_all`].
#[derive(Debug)]
pub struct AllSlice<'a> {
    /// The highest sequence number at the time of the read.
    pub head: SequenceNumber,
    /// The events read, in sequence order.
    pub events: Vec<RecordedEvent<'a>>,
}

/// A page of [`EventStore::read_all_filtered`].
#[derive(Debug)]
pub struct FilteredSlice<'a> {
    /// The highest sequence number at the time of the read.
    pub head: SequenceNumber,
    /// The matching events, in sequence order.
    pub events: Vec<RecordedEvent<'a>>,
    /// Where the next page starts.
    pub next_sequence: SequenceNumber,
}

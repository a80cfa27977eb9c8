//! The category index: for each category key, the sequence numbers of its
//! events, so that a category read costs what it returns (plus a binary
//! search), not the length of the log it skips.
//!
//! # What is indexed
//!
//! An event's *key* is its aggregate id up to the first dash (`user-eu-1`
//! → `user`); an aggregate without a dash has no key and costs the index
//! nothing. A category filter `c` (`c` itself and `c-…`, see
//! [`crate::filter`]) is answered from:
//! - `c` without a dash: the list of key `c` (exactly the aggregates
//!   `c-…`), merged with the aggregate named `c` itself, whose positions
//!   come from its own version index (`EventStore::stream_positions_between`);
//! - `c` with a dash (`user-eu`): the list of its first part (`user`), whose
//!   events the caller checks against the whole category, like scanned
//!   events. Indexing every dash-prefix instead would cost 8 bytes per dash
//!   per event (5 for a UUID); nested categories pay instead with the events
//!   of their top-level category that the page skips.
//!
//! [`EventStore::category_candidates`] returns *candidates*: a rising
//! superset of the category's events within the page's bounds, which the
//! caller filters with the whole filter (category, event types). So the
//! reply is the scan's, event for event (the page bounds, `next_sequence`
//! and `head` are computed as before, in `filter.rs`); only the events
//! outside the category are no longer looked at. The node's subscription
//! catch-up goes through the same page code (`filter::matches`), so it uses
//! the index too; live delivery and library subscriptions follow the log.
//!
//! # Built lazily, by readers
//!
//! Appends never touch the index. It covers the log up to `indexed` (a
//! prefix of the visible log). A category read whose page ends past
//! `indexed` first tries to extend it: whoever gets the builder's
//! `try_lock` walks the log's new commits once, from `indexed + 1` to the
//! head it reads, pushing each commit's sequence numbers onto its key's
//! list (`positions.rs`), and raises `indexed` as it goes. Each event is
//! indexed once over the store's life: the first category read after N
//! appends pays O(N), later ones only what was appended since.
//!
//! # Nobody waits
//!
//! - Appends: never read or write anything here.
//! - A reader that cannot take the builder's lock does not wait: it reads
//!   the indexed prefix from the lists and scans the rest of its page
//!   itself (a page is bounded by the look limit, so that scan is too).
//! - The map from key to list is a `DashMap`, touched only with `try_`
//!   calls: a reader that finds its key's shard locked (the builder adding
//!   a key) scans its page instead; a builder that finds a new key's shard
//!   locked (a reader cloning a list's `Arc`) stops its pass there, raising
//!   `indexed` to where it got, and the next pass goes on. A thread stopped
//!   anywhere, builder or reader, only makes others scan.
//! - Lists are read without any lock while the builder appends
//!   (`positions.rs`).
//!
//! # Orderings
//!
//! The builder adds a key's list to the map (the shard lock's release),
//! pushes positions (each list's `len`, `Release`), then raises `indexed`
//! (`Release`). A reader `Acquire`-loads `indexed` and then looks up the
//! map and loads a list's `len`: everything the builder did before raising
//! `indexed` happens before, so every event of the key up to `indexed` is
//! in the list. Lists may hold entries past the `indexed` a reader saw; it
//! ignores them (its scan covers them), so nothing is seen twice.
//!
//! # Memory
//!
//! 8 bytes per event of an aggregate with a dash (nothing for the others),
//! plus the last segment's unused tail of each list (untouched pages when
//! large), plus ~250 bytes per key (the list, its first segment, the map
//! entries of the readers and of the builder).

mod positions;

use super::EventStore;
use crate::hash::KeyedState;
use crate::log::Log;
use crate::types::SequenceNumber;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use dashmap::try_result::TryResult;
use parking_lot::Mutex;
use positions::{Positions, Range, Writer};
use std::collections::HashMap;
use std::iter::Peekable;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A builder's pass raises `indexed` at least this often (in events), so
/// readers use a long first pass's work before it ends.
const PUBLISH_EVERY: u64 = 1 << 14;

/// The index. See the module docs.
#[derive(Default)]
pub(crate) struct CategoryIndex {
    /// Every event at or below it is in its key's list.
    indexed: AtomicU64,
    /// Key → its list, for readers.
    lists: DashMap<Box<str>, Arc<Positions>, KeyedState>,
    /// The one thread extending the index (taken with `try_lock` only).
    builder: Mutex<Builder>,
}

/// The builder's own state.
#[derive(Default)]
struct Builder {
    /// What it has indexed (what it last stored in `indexed`, or more).
    through: u64,
    /// Key → the writing end of its list.
    writers: HashMap<Box<str>, Writer, KeyedState>,
}

/// The key an event of `aggregate_id` is indexed under (`None`: no dash,
/// not indexed).
fn key_of(aggregate_id: &str) -> Option<&str> {
    aggregate_id.split_once('-').map(|(key, _)| key)
}

impl std::fmt::Debug for CategoryIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CategoryIndex")
            .field("indexed", &self.indexed())
            .field("keys", &self.lists.len())
            .finish()
    }
}

impl CategoryIndex {
    /// The indexed prefix of the log (`1..=` it).
    fn indexed(&self) -> u64 {
        // Acquire: pairs with the builder's `Release` (see the module docs).
        self.indexed.load(Ordering::Acquire)
    }

    /// Indexes the log up to its head, unless another thread is at it
    /// (then returns at once). See the module docs.
    fn extend(&self, log: &Log) {
        let Some(mut guard) = self.builder.try_lock() else {
            return;
        };
        let builder = &mut *guard;
        let head = log.head();
        let mut published = builder.through;
        while builder.through < head {
            let seq = builder.through + 1;
            let Some((commit, i)) = log.locate(seq) else {
                panic!("visible event {seq} is missing from the log's index");
            };
            // The builder stops only at the end of a commit.
            assert_eq!(i, 0, "category index stopped inside the commit of {seq}");
            let end = seq + commit.link.count() - 1;
            if let Some(key) = key_of(commit.aggregate.name()) {
                match builder.writers.get_mut(key) {
                    Some(writer) => writer.push_range(seq, end),
                    None => {
                        let mut writer = Writer::new();
                        match self.lists.try_entry(Box::from(key)) {
                            Some(Entry::Vacant(slot)) => {
                                slot.insert(Arc::clone(writer.list()));
                            }
                            Some(Entry::Occupied(_)) => {
                                panic!("category key {key:?} listed without a writer")
                            }
                            // A reader holds the shard: stop here (see the
                            // module docs).
                            None => break,
                        }
                        writer.push_range(seq, end);
                        builder.writers.insert(Box::from(key), writer);
                    }
                }
            }
            builder.through = end;
            if end - published >= PUBLISH_EVERY {
                // Release: publishes the lists up to `end` (module docs).
                self.indexed.store(end, Ordering::Release);
                published = end;
            }
        }
        // Release: as above.
        self.indexed.store(builder.through, Ordering::Release);
    }
}

impl EventStore {
    /// The sequence numbers within `from..=last` that may hold events of
    /// `category`, rising: every event of the category in that range is
    /// among them (see the module docs; the caller checks each). `last`
    /// must be at or below a head this thread has read. `cap`: no more than
    /// that many events of the aggregate named `category` are wanted.
    pub(crate) fn category_candidates(
        &self,
        category: &str,
        from: SequenceNumber,
        last: SequenceNumber,
        cap: usize,
    ) -> Candidates {
        let index = &self.categories;
        let (from, last) = (from.0.max(1), last.0);
        if index.indexed() < last {
            index.extend(&self.log);
        }
        // What the lists answer for; the rest is scanned.
        let mut split = index.indexed().min(last);
        let (key, exact) = match category.split_once('-') {
            Some((key, _)) => (key, false),
            None => (category, true),
        };
        let mut listed = None;
        if split >= from {
            match index.lists.try_get(key) {
                TryResult::Present(entry) => {
                    // The shard's read lock is held only for this clone.
                    let list = Arc::clone(entry.value());
                    drop(entry);
                    listed = Some(list.range(from, split).peekable());
                }
                TryResult::Absent => {}
                // The builder is adding a key in this shard: scan.
                TryResult::Locked => split = from - 1,
            }
        }
        let own = if exact && split >= from {
            self.stream_positions_between(
                category,
                SequenceNumber(from),
                SequenceNumber(split),
                cap,
            )
        } else {
            Vec::new()
        };
        Candidates {
            listed,
            own: own.into_iter().peekable(),
            scan: (split.max(from - 1) + 1)..=last,
        }
    }
}

impl EventStore {
    /// For tests: brings the category index up to the head (waiting for
    /// the builder if another thread holds it) and returns what it covers
    /// and the list of `key` (an aggregate id's part before its first
    /// dash) within it.
    #[doc(hidden)]
    pub fn category_index_snapshot(&self, key: &str) -> (SequenceNumber, Vec<SequenceNumber>) {
        let index = &self.categories;
        let head = self.log.head();
        while index.indexed() < head {
            // A test helper may wait for the builder; readers never do.
            drop(index.builder.lock());
            index.extend(&self.log);
        }
        let indexed = index.indexed();
        let list = index.lists.get(key).map(|l| Arc::clone(&l));
        let seqs = list.map_or_else(Vec::new, |l| {
            l.range(1, indexed).map(SequenceNumber).collect()
        });
        (SequenceNumber(indexed), seqs)
    }
}

/// [`EventStore::category_candidates`]: the key's list merged with the
/// aggregate named like the category, up to the indexed prefix; then every
/// sequence number after it.
#[derive(Debug)]
pub(crate) struct Candidates {
    listed: Option<Peekable<Range>>,
    own: Peekable<std::vec::IntoIter<SequenceNumber>>,
    scan: RangeInclusive<u64>,
}

impl Iterator for Candidates {
    type Item = SequenceNumber;

    fn next(&mut self) -> Option<SequenceNumber> {
        let listed = self.listed.as_mut().and_then(|r| r.peek().copied());
        let own = self.own.peek().map(|s| s.0);
        let take_listed = match (listed, own) {
            (Some(l), Some(o)) => {
                // Different aggregates: never the same event.
                assert_ne!(
                    l, o,
                    "event {l} both in a category list and its own aggregate"
                );
                l < o
            }
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return self.scan.next().map(SequenceNumber),
        };
        if take_listed {
            self.listed
                .as_mut()
                .and_then(Iterator::next)
                .map(SequenceNumber)
        } else {
            self.own.next()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExpectedVersion, NewEvent};
    use serde_json::value::RawValue;

    fn append(store: &EventStore, aggregate: &str, count: usize) {
        let data = RawValue::from_string("{}".into()).unwrap();
        let events: Vec<_> = (0..count).map(|_| NewEvent::new("T", &data)).collect();
        store
            .append(aggregate, ExpectedVersion::Any, &events)
            .unwrap();
    }

    fn candidates(store: &EventStore, category: &str, from: u64, last: u64) -> Vec<u64> {
        store
            .category_candidates(
                category,
                SequenceNumber(from),
                SequenceNumber(last),
                usize::MAX,
            )
            .map(|s| s.0)
            .collect()
    }

    /// The category's events in `from..=last`, by looking at each.
    fn scanned(store: &EventStore, category: &str, from: u64, last: u64) -> Vec<u64> {
        (from.max(1)..=last)
            .filter(|s| {
                let name = store
                    .event(SequenceNumber(*s))
                    .unwrap()
                    .aggregate_id()
                    .to_owned();
                name == category || name.starts_with(&format!("{category}-"))
            })
            .collect()
    }

    fn in_category(store: &EventStore, category: &str, seqs: Vec<u64>) -> Vec<u64> {
        let all = scanned(store, category, 1, store.head().0);
        seqs.into_iter().filter(|s| all.contains(s)).collect()
    }

    #[test]
    fn keys_end_at_the_first_dash() {
        assert_eq!(key_of("user-1"), Some("user"));
        assert_eq!(key_of("user-eu-1"), Some("user"));
        assert_eq!(key_of("user-"), Some("user"));
        assert_eq!(key_of("-x"), Some(""));
        assert_eq!(key_of("user"), None);
    }

    #[test]
    fn simple_categories_are_answered_exactly_and_nested_ones_by_their_key() {
        let store = EventStore::new();
        for name in [
            "user-1",
            "users-1",
            "user",
            "user-eu-1",
            "order-1",
            "user-",
            "user-eu",
        ] {
            append(&store, name, 2);
        }
        let head = store.head().0;
        for category in ["user", "users", "order", "user-eu", "user-", "nobody", "-"] {
            for from in 0..=head + 1 {
                for last in [from.saturating_sub(1), from, from + 3, head].map(|l| l.min(head)) {
                    let got = candidates(&store, category, from, last);
                    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
                    assert!(got.iter().all(|s| (from.max(1)..=last).contains(s)));
                    let want = scanned(&store, category, from, last);
                    if category.contains('-') {
                        assert_eq!(in_category(&store, category, got), want);
                    } else {
                        assert_eq!(got, want, "{category} {from}..={last}");
                    }
                }
            }
        }
        assert_eq!(store.categories.indexed(), head);
    }

    #[test]
    fn each_read_indexes_only_what_is_new() {
        let store = EventStore::new();
        append(&store, "user-1", 3);
        assert_eq!(store.categories.indexed(), 0, "appends do not index");
        assert_eq!(candidates(&store, "user", 1, 3), [1, 2, 3]);
        append(&store, "order-1", 1);
        append(&store, "user-2", 1);
        assert_eq!(store.categories.indexed(), 3);
        // A read that ends within the indexed prefix does not extend it.
        assert_eq!(candidates(&store, "user", 1, 2), [1, 2]);
        assert_eq!(store.categories.indexed(), 3);
        assert_eq!(candidates(&store, "user", 1, 5), [1, 2, 3, 5]);
        assert_eq!(store.categories.indexed(), 5);
    }

    #[test]
    fn a_reader_without_the_builder_scans_past_the_indexed_prefix() {
        let store = EventStore::new();
        append(&store, "user-1", 2);
        assert_eq!(candidates(&store, "user", 1, 2), [1, 2]);
        append(&store, "order-1", 1);
        append(&store, "user-1", 1);
        let held = store.categories.builder.lock();
        // Indexed through 2; 3 and 4 are scanned (returned as candidates).
        assert_eq!(candidates(&store, "user", 1, 4), [1, 2, 3, 4]);
        assert_eq!(candidates(&store, "order", 1, 4), [3, 4]);
        drop(held);
        assert_eq!(candidates(&store, "user", 1, 4), [1, 2, 4]);
    }

    #[test]
    fn a_locked_shard_stops_the_builder_and_makes_readers_scan() {
        let store = EventStore::new();
        append(&store, "user-1", 1);
        assert_eq!(candidates(&store, "user", 1, 1), [1]);
        append(&store, "order-1", 1);
        append(&store, "user-2", 1);
        // Holding the shard of the new key `order`, as a reader would
        // (`user` may share it: then its reader scans everything).
        let held = store.categories.lists.entry(Box::from("order"));
        assert_eq!(candidates(&store, "user", 1, 3), [1, 2, 3]);
        assert_eq!(store.categories.indexed(), 1, "stopped before `order`");
        assert_eq!(candidates(&store, "order", 1, 3), [1, 2, 3], "scanned");
        drop(held);
        assert_eq!(candidates(&store, "order", 1, 3), [2]);
        assert_eq!(store.categories.indexed(), 3);
        assert_eq!(candidates(&store, "user", 1, 3), [1, 3]);
    }

    #[test]
    fn random_reads_equal_a_scan_whether_or_not_the_builder_is_free() {
        let names = [
            "user-1",
            "user",
            "users-1",
            "user-",
            "user-eu-1",
            "x",
            "-x",
            "order-1",
        ];
        let categories = ["user", "users", "user-", "user-eu", "x", "-x", "order", "o"];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut rng = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let store = EventStore::new();
        for _ in 0..1_500 {
            if rng(2) == 0 {
                let count = if rng(5) == 0 { 1 + rng(4) } else { 1 } as usize;
                append(&store, names[rng(names.len() as u64) as usize], count);
                continue;
            }
            let head = store.head().0;
            let category = categories[rng(categories.len() as u64) as usize];
            let from = rng(head + 2);
            let last = (from + rng(head + 1)).min(head);
            let held = (rng(3) == 0).then(|| store.categories.builder.lock());
            let got = in_category(&store, category, candidates(&store, category, from, last));
            drop(held);
            assert_eq!(
                got,
                scanned(&store, category, from, last),
                "{category} {from}..={last}"
            );
        }
    }

    #[test]
    fn batches_are_indexed_whole_even_across_publications() {
        let store = EventStore::new();
        append(&store, "user-1", 5);
        for _ in 0..(PUBLISH_EVERY / 1000 + 2) {
            append(&store, "user-2", 1000);
            append(&store, "x", 1);
        }
        let head = store.head().0;
        let got = candidates(&store, "user", 1, head);
        assert_eq!(got, scanned(&store, "user", 1, head));
        assert_eq!(candidates(&store, "user", 3, 4), [3, 4]);
        assert_eq!(
            candidates(&store, "x", 1, head).len() as u64,
            PUBLISH_EVERY / 1000 + 2
        );
    }
}

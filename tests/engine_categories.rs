//! Category reads through the category index (`src/store/categories.rs`)
//! against a trivially correct sequential model: random logs with every
//! category shape (`user`, `user-1`, `users-1`, `user-`, `user--x`,
//! `user-eu-1`, ids without a dash, ids starting with a dash), batches,
//! random `from` / `max_count` and combined filters; then readers racing
//! writers on a few hot aggregates, every reply checked against the log as
//! it ended, and the index equal to the model at the end.

mod support;

use eventstore::{EventStore, ExpectedVersion, Filter, NewEvent, SequenceNumber};
use eventstore::{FilteredSlice, LOOK_LIMIT};
use serde_json::value::RawValue;
use support::Rng;

const AGGREGATES: [&str; 12] = [
    "user-1",
    "user-2",
    "user",
    "users-1",
    "user-",
    "user--x",
    "user-eu-1",
    "user-eu",
    "order-1",
    "x",
    "-x",
    "usex-1",
];
const CATEGORIES: [&str; 10] = [
    "user", "users", "user-", "user-eu", "order", "x", "-x", "-", "use", "nobody",
];
const TYPES: [&str; 3] = ["A", "B", "C"];

/// The model: (aggregate, type) by sequence number - 1.
type Log = Vec<(String, String)>;

fn in_category(aggregate: &str, category: &str) -> bool {
    aggregate == category
        || aggregate
            .strip_prefix(category)
            .is_some_and(|rest| rest.starts_with('-'))
}

fn model_matches(filter: &Filter, aggregate: &str, event_type: &str) -> bool {
    filter
        .category
        .as_deref()
        .is_none_or(|c| in_category(aggregate, c))
        && filter
            .aggregate_id
            .as_deref()
            .is_none_or(|a| a == aggregate)
        && filter
            .event_types
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|t| t == event_type))
}

/// The contract's page, by looking at each event of `log[..head]` in turn:
/// (matching sequence numbers, next_sequence).
fn model_page(log: &Log, head: u64, filter: &Filter, from: u64, max: u64) -> (Vec<u64>, u64) {
    let start = from.max(1);
    let (mut found, mut next) = (Vec::new(), start);
    for seq in start..=head.min(start + LOOK_LIMIT - 1) {
        if found.len() as u64 == max {
            break;
        }
        next = seq + 1;
        let (aggregate, event_type) = &log[seq as usize - 1];
        if model_matches(filter, aggregate, event_type) {
            found.push(seq);
        }
    }
    (found, next)
}

fn append(store: &EventStore, aggregate: &str, types: &[&str]) -> Vec<u64> {
    let data = RawValue::from_string("{}".into()).unwrap();
    let events: Vec<_> = types.iter().map(|t| NewEvent::new(t, &data)).collect();
    store
        .append(aggregate, ExpectedVersion::Any, &events)
        .unwrap()
        .positions
        .iter()
        .map(|s| s.0)
        .collect()
}

fn random_filter(rng: &mut Rng) -> Filter {
    let mut filter = Filter {
        category: Some((*rng.pick(&CATEGORIES)).into()),
        ..Filter::default()
    };
    if rng.percent(25) {
        let n = 1 + rng.below(2) as usize;
        filter.event_types = Some((0..n).map(|_| (*rng.pick(&TYPES)).into()).collect());
    }
    if rng.percent(10) {
        filter.aggregate_id = Some((*rng.pick(&AGGREGATES)).into());
    }
    filter
}

fn random_types(rng: &mut Rng) -> Vec<&'static str> {
    let n = if rng.percent(20) { 2 + rng.below(4) } else { 1 };
    (0..n).map(|_| *rng.pick(&TYPES)).collect()
}

fn check(log: &Log, filter: &Filter, from: u64, max: u64, page: &FilteredSlice<'_>) {
    let (want, next) = model_page(log, page.head.0, filter, from, max);
    let got: Vec<u64> = page.events.iter().map(|e| e.sequence_number.0).collect();
    assert_eq!(
        got, want,
        "{filter:?} from {from} max {max} head {}",
        page.head.0
    );
    assert_eq!(
        page.next_sequence.0, next,
        "{filter:?} from {from} max {max}"
    );
    for e in &page.events {
        let (aggregate, event_type) = &log[e.sequence_number.0 as usize - 1];
        assert_eq!(
            (e.aggregate_id(), e.event_type()),
            (&**aggregate, &**event_type)
        );
    }
}

/// The index's list of every key against the model, up to the head.
fn check_index(store: &EventStore, log: &Log) {
    let mut keys: Vec<&str> = log
        .iter()
        .filter_map(|(a, _)| a.split_once('-').map(|(k, _)| k))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.push("nobody");
    for key in keys {
        let (indexed, seqs) = store.category_index_snapshot(key);
        assert_eq!(indexed.0, log.len() as u64);
        let want: Vec<u64> = (1..=log.len() as u64)
            .filter(|s| {
                log[*s as usize - 1]
                    .0
                    .split_once('-')
                    .is_some_and(|(k, _)| k == key)
            })
            .collect();
        let got: Vec<u64> = seqs.iter().map(|s| s.0).collect();
        assert_eq!(got, want, "key {key:?}");
    }
}

#[test]
fn category_reads_equal_the_sequential_model() {
    for seed in [1, 2, 3, 4] {
        let mut rng = Rng::new(seed * 0x51_7cc1);
        let store = EventStore::new();
        let mut log = Log::new();
        for _ in 0..1_500 {
            if rng.percent(60) {
                let aggregate = *rng.pick(&AGGREGATES);
                let types = random_types(&mut rng);
                let seqs = append(&store, aggregate, &types);
                assert_eq!(seqs[0], log.len() as u64 + 1);
                log.extend(
                    types
                        .iter()
                        .map(|t| (aggregate.to_owned(), (*t).to_owned())),
                );
            } else {
                let filter = random_filter(&mut rng);
                let head = log.len() as u64;
                let from = rng.below(head + 3);
                let max = if rng.percent(10) {
                    u64::MAX
                } else {
                    rng.below(12)
                };
                let page = store.read_all_filtered(SequenceNumber(from), max, &filter);
                assert_eq!(page.head.0, head);
                check(&log, &filter, from, max, &page);
            }
        }
        check_index(&store, &log);
    }
}

#[test]
fn sparse_categories_page_through_a_long_log() {
    // Past the look limit: `next_sequence` steps by the limit while the
    // category's events are far apart, as with the scan.
    let store = EventStore::new();
    let mut log = Log::new();
    let total = 2 * LOOK_LIMIT + 500;
    let mut seq = 0;
    while seq < total {
        let aggregate = if seq % 40_000 == 7 {
            "rare-1"
        } else {
            "bulk-1"
        };
        let n = if aggregate == "bulk-1" {
            1000.min(total - seq)
        } else {
            1
        };
        let types = vec!["A"; n as usize];
        append(&store, aggregate, &types);
        log.extend((0..n).map(|_| (aggregate.to_owned(), "A".to_owned())));
        seq += n;
    }
    let filter = Filter {
        category: Some("rare".into()),
        ..Filter::default()
    };
    let (mut from, mut seen) = (0, Vec::new());
    while from <= total {
        let page = store.read_all_filtered(SequenceNumber(from), 3, &filter);
        check(&log, &filter, from, 3, &page);
        seen.extend(page.events.iter().map(|e| e.sequence_number.0));
        from = page.next_sequence.0;
    }
    let want: Vec<u64> = (1..=total)
        .filter(|s| log[*s as usize - 1].0 == "rare-1")
        .collect();
    assert_eq!(seen, want);
    check_index(&store, &log);
}

#[test]
fn readers_racing_writers_see_the_model_and_the_index_ends_equal_to_it() {
    let _machine = support::whole_machine();
    const WRITERS: u64 = 4;
    const READERS: u64 = 3;
    let per_writer = support::scaled(10_000, 100_000) as u64;
    let hot = [
        "user-1",
        "user-2",
        "user",
        "users-1",
        "user-eu-1",
        "order-1",
        "x",
    ];
    let store = EventStore::new();
    // Each writer's appends: (first sequence number, aggregate, types).
    let (written, replies) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = &store;
                s.spawn(move || {
                    let mut rng = Rng::new(0xabc + w);
                    let mut mine = Vec::new();
                    let mut done = 0;
                    while done < per_writer {
                        let aggregate = *rng.pick(&hot);
                        let types = random_types(&mut rng);
                        let first = append(store, aggregate, &types)[0];
                        done += types.len() as u64;
                        mine.push((first, aggregate, types));
                    }
                    mine
                })
            })
            .collect();
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let store = &store;
                s.spawn(move || {
                    let mut rng = Rng::new(0xdef + r);
                    let mut pages = Vec::new();
                    for _ in 0..1_000 {
                        let filter = random_filter(&mut rng);
                        let head = store.head().0;
                        let from = rng.below(head + 2);
                        let max = rng.below(50);
                        let (seqs, next, head) = {
                            let page = store.read_all_filtered(SequenceNumber(from), max, &filter);
                            let seqs: Vec<u64> =
                                page.events.iter().map(|e| e.sequence_number.0).collect();
                            (seqs, page.next_sequence.0, page.head.0)
                        };
                        pages.push((filter, from, max, seqs, next, head));
                    }
                    pages
                })
            })
            .collect();
        let written: Vec<_> = writers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let replies: Vec<_> = readers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        (written, replies)
    });
    // The sequential model from what the writers were told.
    let total = (written.iter().map(|(_, _, t)| t.len()).sum::<usize>()) as u64;
    assert_eq!(store.head().0, total);
    let mut log: Log = vec![(String::new(), String::new()); total as usize];
    for (first, aggregate, types) in &written {
        for (i, t) in types.iter().enumerate() {
            let slot = &mut log[(*first as usize) + i - 1];
            assert!(
                slot.0.is_empty(),
                "sequence number {} given twice",
                first + i as u64
            );
            *slot = ((*aggregate).to_owned(), (*t).to_owned());
        }
    }
    for (filter, from, max, seqs, next, head) in &replies {
        let (want, want_next) = model_page(&log, *head, filter, *from, *max);
        assert_eq!(seqs, &want, "{filter:?} from {from} max {max} head {head}");
        assert_eq!(
            *next, want_next,
            "{filter:?} from {from} max {max} head {head}"
        );
    }
    check_index(&store, &log);
}

//! Library subscriptions and filtered reads: subscribers following writers
//! (one sleeping, then catching up) see every matching event once, in
//! order; a durable store shows subscribers only durable events; filtered
//! pages equal a naive scan.

mod support;

use eventstore::LOOK_LIMIT;
use eventstore::{EventStore, ExpectedVersion, Filter, FsyncPolicy, NewEvent, SequenceNumber};
use serde_json::value::RawValue;
use std::time::Duration;
use support::Rng;

const CATEGORIES: [&str; 3] = ["user", "users", "order"];
const TYPES: [&str; 3] = ["A", "B", "C"];

fn append(store: &EventStore, aggregate: &str, event_type: &str) {
    let data = RawValue::from_string("{}".into()).unwrap();
    store
        .append(
            aggregate,
            ExpectedVersion::Any,
            &[NewEvent::new(event_type, &data)],
        )
        .unwrap();
}

fn category(name: &str) -> Filter {
    Filter {
        category: Some(name.into()),
        ..Filter::default()
    }
}

#[test]
fn subscribers_see_every_event_once_in_order_even_after_sleeping() {
    const WRITERS: u64 = 4;
    const PER_WRITER: u64 = 2_000;
    let total = WRITERS * PER_WRITER;
    let store = EventStore::new();
    let filters = [
        Filter::default(),
        category("user"),
        Filter {
            event_types: Some(vec!["B".into()]),
            ..Filter::default()
        },
    ];
    let seen: Vec<Vec<(u64, String, String)>> = std::thread::scope(|s| {
        for w in 0..WRITERS {
            let store = &store;
            s.spawn(move || {
                let mut rng = Rng::new(w);
                for _ in 0..PER_WRITER {
                    let aggregate =
                        format!("{}-{}", CATEGORIES[rng.below(3) as usize], rng.below(20));
                    append(store, &aggregate, TYPES[rng.below(3) as usize]);
                }
            });
        }
        let subscribers: Vec<_> = filters
            .iter()
            .enumerate()
            .map(|(i, filter)| {
                let store = &store;
                let filter = filter.clone();
                s.spawn(move || {
                    let mut sub = store.subscribe(Some(SequenceNumber(1)), filter);
                    let mut got = Vec::new();
                    if i == 1 {
                        // Sleeps while the writers run, then catches up.
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    while sub.position().0 <= total {
                        match sub.next_timeout(Duration::from_millis(50)) {
                            Some(e) => got.push((
                                e.sequence_number.0,
                                e.aggregate_id().to_owned(),
                                e.event_type().to_owned(),
                            )),
                            None if store.head().0 == total => break,
                            None => {}
                        }
                    }
                    got
                })
            })
            .collect();
        subscribers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(store.head().0, total);
    for (filter, got) in filters.iter().zip(&seen) {
        let expected: Vec<(u64, String, String)> = (1..=total)
            .map(|s| store.event(SequenceNumber(s)).unwrap())
            .filter(|e| filter.matches_event(e))
            .map(|e| {
                (
                    e.sequence_number.0,
                    e.aggregate_id().to_owned(),
                    e.event_type().to_owned(),
                )
            })
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(
            got, &expected,
            "{filter:?}: missed, repeated or out of order"
        );
    }
}

#[test]
fn a_blocking_subscriber_wakes_for_a_new_event() {
    let store = EventStore::new();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            store
                .subscribe(None, Filter::default())
                .next()
                .expect("a subscription never ends")
                .sequence_number
        });
        std::thread::sleep(Duration::from_millis(30));
        append(&store, "a", "T");
        assert_eq!(waiter.join().unwrap(), SequenceNumber(1));
    });
}

#[test]
fn a_durable_store_shows_subscribers_only_durable_events() {
    let dir = std::env::temp_dir().join(format!("eventstore-sub-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = EventStore::open(&dir, FsyncPolicy::Always).unwrap();
    let data = RawValue::from_string("{}".into()).unwrap();
    let mut sub = store.subscribe(Some(SequenceNumber(1)), Filter::default());
    store
        .append_deferred("a", ExpectedVersion::Any, &[NewEvent::new("T", &data)])
        .unwrap();
    assert_eq!(store.head(), SequenceNumber(1));
    assert!(
        sub.try_next().is_none(),
        "an event that is not durable was shown"
    );
    store.sync().unwrap();
    assert_eq!(sub.try_next().unwrap().sequence_number, SequenceNumber(1));
    // `append` returns once durable: visible at once.
    append(&store, "a", "T");
    assert_eq!(sub.try_next().unwrap().sequence_number, SequenceNumber(2));
    // A subscriber blocked in `next` is woken by a durable append (a
    // watchdog turns a missed wake-up into a failure, not a hang).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let seq = sub
                .next()
                .expect("a subscription never ends")
                .sequence_number;
            let _ = tx.send(seq);
        });
        std::thread::sleep(Duration::from_millis(30));
        append(&store, "a", "T");
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(seq) => assert_eq!(seq, SequenceNumber(3)),
            Err(_) => {
                eprintln!("a subscriber waiting in next() was not woken by a durable append");
                std::process::exit(1);
            }
        }
    });
    // Deferred appends made durable by `sync_to` (the group-commit path)
    // become visible too.
    store
        .append_deferred("a", ExpectedVersion::Any, &[NewEvent::new("T", &data)])
        .unwrap();
    assert!(sub.try_next().is_none());
    store.sync_to(store.wal_position()).unwrap();
    assert_eq!(sub.try_next().unwrap().sequence_number, SequenceNumber(4));
    drop(store);
    // After a restart, everything recovered is there for subscribers.
    let store = EventStore::open(&dir, FsyncPolicy::Always).unwrap();
    let mut sub = store.subscribe(Some(SequenceNumber(1)), Filter::default());
    let seen: Vec<u64> = std::iter::from_fn(|| sub.try_next())
        .map(|e| e.sequence_number.0)
        .collect();
    assert_eq!(seen, [1, 2, 3, 4]);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn filtered_pages_equal_a_naive_scan() {
    let store = EventStore::new();
    let mut rng = Rng::new(7);
    for _ in 0..3_000 {
        let aggregate = format!("{}-{}", CATEGORIES[rng.below(3) as usize], rng.below(5));
        append(&store, &aggregate, TYPES[rng.below(3) as usize]);
    }
    for _ in 0..500 {
        let mut filter = Filter::default();
        if rng.below(2) == 0 {
            filter.category = Some(CATEGORIES[rng.below(3) as usize].into());
        }
        if rng.below(3) == 0 {
            filter.aggregate_id = Some(format!(
                "{}-{}",
                CATEGORIES[rng.below(3) as usize],
                rng.below(5)
            ));
        }
        if rng.below(2) == 0 {
            filter.event_types = Some(vec![TYPES[rng.below(3) as usize].into()]);
        }
        let from = rng.below(3_100);
        let max = rng.below(40);
        let page = store.read_all_filtered(SequenceNumber(from), max, &filter);
        // The naive scan of the contract.
        let start = from.max(1);
        let (mut want, mut next) = (Vec::new(), start);
        for seq in start..=3_000u64.min(start + LOOK_LIMIT - 1) {
            if want.len() as u64 == max {
                break;
            }
            next = seq + 1;
            let e = store.event(SequenceNumber(seq)).unwrap();
            if filter.matches_event(&e) {
                want.push(seq);
            }
        }
        let got: Vec<u64> = page.events.iter().map(|e| e.sequence_number.0).collect();
        assert_eq!(got, want, "{filter:?} from {from} max {max}");
        assert_eq!(
            page.next_sequence.0, next,
            "{filter:?} from {from} max {max}"
        );
        assert_eq!(page.head.0, 3_000);
    }
}

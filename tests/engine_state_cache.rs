//! Cached states and checkpoints (`src/aggregate/state_cache.rs`) against a
//! fold from scratch: random interleavings of appends, snapshots, replays and
//! `state_at` at random times, on long aggregates (thousands of events,
//! past several checkpoints) and short ones, with states small enough to be
//! cached and states that grow too large to be; and readers folding while
//! writers append, each result the fold of exactly the prefix it reports.

mod common;

use common::{Rng, fold};
use eventstore::{EventStore, ExpectedVersion, NewEvent, Timestamp, Version};
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// The model: each aggregate's `(event_data, recorded_at)` in version order.
#[derive(Default)]
struct Model {
    aggregates: std::collections::BTreeMap<String, Vec<(Value, Timestamp)>>,
}

fn data(rng: &mut Rng, wide: bool) -> Value {
    match rng.below(10) {
        0 => json!(rng.below(100)),
        1 => json!(null),
        // A new key every time: the state grows like the history.
        _ if wide => json!({format!("k{}", rng.next_u64()): rng.below(1000)}),
        _ => json!({format!("k{}", rng.below(8)): rng.below(1000), "n": rng.below(3)}),
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("state is JSON")
}

#[test]
fn reads_equal_a_fold_from_scratch_whatever_was_cached() {
    for seed in [1, 2, 3] {
        let mut rng = Rng::new(seed);
        let store = EventStore::new();
        let mut model = Model::default();
        let names = ["long-narrow", "long-wide", "short-1", "short-2"];
        for step in 0..12_000 {
            let name = names[match rng.below(20) {
                0..=9 => 0,
                10..=16 => 1,
                17..=18 => 2,
                _ => 3,
            }];
            let events = model.aggregates.entry(name.to_owned()).or_default();
            match rng.below(100) {
                0..=79 => {
                    let d = data(&mut rng, name == "long-wide");
                    let raw = RawValue::from_string(d.to_string()).unwrap();
                    let done = store
                        .append(name, ExpectedVersion::Any, &[NewEvent::new("T", &raw)])
                        .unwrap();
                    let at = store.event(done.positions.first()).unwrap().recorded_at();
                    events.push((d, at));
                }
                80..=87 => {
                    let replay = store.replay(name, false);
                    let want = fold(events.iter().map(|(d, _)| d));
                    assert_eq!(
                        parse(&replay.state),
                        want,
                        "seed {seed} step {step}: replay {name}"
                    );
                    assert_eq!(replay.events_replayed, events.len() as u64);
                }
                88..=95 if !events.is_empty() => {
                    // A time at, just before or just after a random event's.
                    let (_, at) = events[rng.below(events.len() as u64) as usize];
                    let at = Timestamp(at.0 + rng.below(3) as i64 - 1);
                    let state = store.state_at(name, at);
                    let want = fold(events.iter().filter(|(_, t)| *t <= at).map(|(d, _)| d));
                    assert_eq!(
                        parse(&state),
                        want,
                        "seed {seed} step {step}: state_at {name}"
                    );
                }
                96..=97 => {
                    store.create_snapshot(name, None, None).unwrap();
                    let snap = store.snapshot(name).unwrap();
                    assert_eq!(snap.version, Version(events.len() as u64));
                    assert_eq!(parse(&snap.state), fold(events.iter().map(|(d, _)| d)));
                }
                _ => {
                    let replay = store.replay(name, true);
                    assert_eq!(
                        parse(&replay.state),
                        fold(events.iter().map(|(d, _)| d)),
                        "seed {seed} step {step}: replay from snapshot {name}"
                    );
                }
            }
        }
        assert!(
            model.aggregates["long-narrow"].len() > 4_000,
            "past several checkpoints"
        );
    }
}

#[test]
fn readers_folding_while_writers_append_see_exact_prefixes() {
    let store = EventStore::new();
    let total = 6_000u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..total {
                let raw =
                    RawValue::from_string(format!(r#"{{"k{}":{i},"last":{i}}}"#, i % 5)).unwrap();
                store
                    .append("acct", ExpectedVersion::Any, &[NewEvent::new("T", &raw)])
                    .unwrap();
            }
        });
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let replay = store.replay("acct", false);
                    let n = replay.events_replayed;
                    let state = parse(&replay.state);
                    if n == 0 {
                        assert_eq!(state, json!({}));
                    } else {
                        // The fold of exactly the first n events.
                        let last = n - 1;
                        assert_eq!(state["last"], json!(last), "{state}");
                        for k in 0..5u64.min(n) {
                            let newest = (0..n).rev().find(|i| i % 5 == k).unwrap();
                            assert_eq!(state[format!("k{k}")], json!(newest));
                        }
                    }
                    if n == total {
                        break;
                    }
                }
            });
        }
    });
}

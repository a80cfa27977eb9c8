//! A writer stopped at each step of its append (the store's test-only
//! pause hook, `EventStore::with_pause_hook`) stops no other append or read:
//! while it is held, other writers on its aggregate and elsewhere, readers
//! of the log, the stream, the state and snapshots all finish, and what
//! they see keeps every invariant. Released, the stopped writer's append
//! returns as usual (its steps possibly done by others meanwhile).

use eventstore::testing::PauseStep;
use eventstore::{EventStore, ExpectedVersion, NewEvent, SequenceNumber, Version};
use serde_json::value::RawValue;
use std::cell::Cell;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// Held writers wait here until released.
static GATE: Mutex<(bool, bool)> = Mutex::new((false, false)); // (paused, released)
static SIGNAL: Condvar = Condvar::new();
/// The gate is shared: the tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());

thread_local! {
    static STOP_AT: Cell<Option<PauseStep>> = const { Cell::new(None) };
}

fn hook(step: PauseStep) {
    if STOP_AT.with(|s| s.get()) != Some(step) {
        return;
    }
    STOP_AT.with(|s| s.set(None));
    let mut gate = GATE.lock().unwrap();
    gate.0 = true;
    SIGNAL.notify_all();
    while !gate.1 {
        gate = SIGNAL.wait(gate).unwrap();
    }
}

fn data(n: u64) -> Box<RawValue> {
    RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap()
}

fn append(store: &EventStore, aggregate: &str, n: u64) -> SequenceNumber {
    let d = data(n);
    store
        .append(aggregate, ExpectedVersion::Any, &[NewEvent::new("T", &d)])
        .unwrap()
        .positions
        .first()
}

/// Runs `f` on another thread and fails the test if it does not finish
/// within 20 s (it would be waiting for the held writer).
fn must_finish<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} did not finish while a writer was held"))
}

/// The whole log: dense, `recorded_at` non-decreasing, versions and
/// sequence numbers rising together along each aggregate.
fn check_log(store: &EventStore) {
    let all = store.read_all(SequenceNumber(1), usize::MAX);
    assert_eq!(all.events.len() as u64, all.head.0, "holes in the log");
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    for (i, e) in all.events.iter().enumerate() {
        assert_eq!(e.sequence_number.0, i as u64 + 1);
        if i > 0 {
            assert!(all.events[i - 1].recorded_at() <= e.recorded_at());
        }
        let v = last.entry(e.aggregate_id().to_owned()).or_default();
        assert_eq!(e.version().0, *v + 1, "versions not consecutive");
        *v += 1;
    }
    for (aggregate, v) in last {
        assert!(store.version(&aggregate).0 >= v);
    }
}

#[test]
fn a_writer_held_at_any_step_stops_no_one() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let steps = [
        PauseStep::BeforeReserve,
        PauseStep::Reserved,
        PauseStep::BeforeLink,
        PauseStep::Linked,
        PauseStep::BeforeDone,
        PauseStep::Done,
    ];
    for step in steps {
        *GATE.lock().unwrap() = (false, false);
        let store = Arc::new(EventStore::with_pause_hook(hook));
        append(&store, "a", 0);
        append(&store, "b", 0);

        let held = {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                STOP_AT.with(|s| s.set(Some(step)));
                append(&store, "a", 1)
            })
        };
        {
            let mut gate = GATE.lock().unwrap();
            while !gate.0 {
                gate = SIGNAL.wait(gate).unwrap();
            }
        }

        // Others go on: on the held writer's aggregate, elsewhere, reads.
        let others = {
            let store = Arc::clone(&store);
            must_finish(
                &format!("appends with a writer held at {step:?}"),
                move || {
                    let mut seqs = Vec::new();
                    for i in 0..50 {
                        seqs.push(append(&store, "a", 100 + i));
                        seqs.push(append(&store, "b", 200 + i));
                        let v = store.version("a");
                        let d = data(300 + i);
                        let exact =
                            store.append("a", ExpectedVersion::Exact(v), &[NewEvent::new("T", &d)]);
                        seqs.push(exact.unwrap().positions.first());
                    }
                    seqs
                },
            )
        };
        {
            let store = Arc::clone(&store);
            must_finish("reads with a writer held", move || {
                check_log(&store);
                let stream = store.read_stream("a", Version(0), usize::MAX);
                assert_eq!(stream.version.0, stream.events.len() as u64);
                assert!(
                    stream
                        .events
                        .windows(2)
                        .all(|w| w[0].sequence_number < w[1].sequence_number)
                );
                store.create_snapshot("a", None, None).unwrap();
                let replay = store.replay("a", true);
                assert_eq!(replay.events_replayed, 0);
                assert!(
                    store
                        .state_at("a", eventstore::Timestamp::now())
                        .starts_with('{')
                );
            });
        }
        // Every append that returned is visible.
        let head = store.head();
        assert!(others.iter().all(|&s| s <= head));

        {
            let mut gate = GATE.lock().unwrap();
            gate.1 = true;
            SIGNAL.notify_all();
        }
        let seq = held.join().unwrap();
        assert!(
            seq <= store.head(),
            "held append not visible after it returned"
        );
        let e = store.event(seq).unwrap();
        assert_eq!((e.aggregate_id(), e.data()), ("a", r#"{"n":1}"#));
        check_log(&store);
        // Held after it reserved its version, its append went before the
        // others' on the same aggregate (they finished it for it).
        if step != PauseStep::BeforeReserve {
            assert_eq!(e.version(), Version(2), "held at {step:?}");
        }
    }
}

/// A writer carrying client ids, held before or after it reserves its
/// version, while another thread submits the same batch (a client retry):
/// the retry finishes at once (it confirms and finishes the held append, or
/// kills it and appends itself), and the held writer, released, reports the
/// same positions as a duplicate or as the append. Either way the ids are
/// stored once.
#[test]
fn a_held_client_id_append_and_its_retry() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for step in [
        PauseStep::BeforeReserve,
        PauseStep::Reserved,
        PauseStep::BeforeLink,
    ] {
        *GATE.lock().unwrap() = (false, false);
        let store = Arc::new(EventStore::with_pause_hook(hook));
        append(&store, "a", 0);
        let ids = [
            eventstore::EventId::from_u128(0x1111),
            eventstore::EventId::from_u128(0x2222),
        ];
        let submit = move |store: &EventStore| {
            let (d1, d2) = (data(1), data(2));
            store
                .append(
                    "a",
                    ExpectedVersion::Exact(Version(1)),
                    &[
                        NewEvent::new("T", &d1).with_id(ids[0]),
                        NewEvent::new("T", &d2).with_id(ids[1]),
                    ],
                )
                .unwrap()
        };
        let held = {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                STOP_AT.with(|s| s.set(Some(step)));
                submit(&store)
            })
        };
        {
            let mut gate = GATE.lock().unwrap();
            while !gate.0 {
                gate = SIGNAL.wait(gate).unwrap();
            }
        }
        let retry = {
            let store = Arc::clone(&store);
            must_finish(
                &format!("a retry with the writer held at {step:?}"),
                move || submit(&store),
            )
        };
        {
            let mut gate = GATE.lock().unwrap();
            gate.1 = true;
            SIGNAL.notify_all();
        }
        let first = held.join().unwrap();
        let (a, b): (Vec<_>, Vec<_>) = (
            first.positions.iter().collect(),
            retry.positions.iter().collect(),
        );
        assert_eq!(a, b, "held at {step:?}");
        assert_eq!(first.version, Version(3));
        assert_eq!(retry.version, Version(3));
        assert!(
            first.duplicate != retry.duplicate,
            "exactly one appended ({step:?})"
        );
        assert_eq!(store.head(), SequenceNumber(3));
        check_log(&store);
    }
}

//! Library subscriptions under load (run by `scripts/bench_subscriptions.sh`):
//!
//! 1. **Writers' cost.** 2 writer threads append `APPENDS` events each to
//!    1,000 aggregates, alone and with 8 subscribers following the whole log
//!    (blocking `next`), in `ROUNDS` interleaved rounds; reported: the
//!    median time per append of each, and their ratio.
//! 2. **Wake-up latency.** One writer appends an event every ~200 µs while a
//!    subscriber waits in `next`; the latency of an event is the time from
//!    just before its `append` call to the subscriber holding it
//!    (`Instant`s on one machine). Reported: p50 and p99 over `PINGS`
//!    events.
//!
//! `cargo run --release --example subscribers`

use eventstore::{EventStore, ExpectedVersion, Filter, NewEvent, SequenceNumber};
use serde_json::value::RawValue;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const APPENDS: u64 = 200_000;
const ROUNDS: usize = 5;
const SUBSCRIBERS: usize = 8;
const PINGS: usize = 5_000;

fn append(store: &EventStore, aggregate: &str, data: &RawValue) {
    if let Err(e) = store.append(aggregate, ExpectedVersion::Any, &[NewEvent::new("T", data)]) {
        panic!("append failed: {e}");
    }
}

/// Nanoseconds per append of 2 writers, with `subscribers` following.
fn writers(subscribers: usize) -> f64 {
    let store = EventStore::new();
    let data = RawValue::from_string(r#"{"n":1}"#.into()).expect("valid JSON");
    let names: Vec<String> = (0..1_000).map(|i| format!("acct-{i}")).collect();
    let total = 2 * APPENDS;
    let elapsed = std::thread::scope(|s| {
        for _ in 0..subscribers {
            s.spawn(|| {
                let mut sub = store.subscribe(Some(SequenceNumber(1)), Filter::default());
                while sub.position().0 <= total {
                    sub.next();
                }
            });
        }
        let start = Instant::now();
        let handles: Vec<_> = (0..2)
            .map(|w| {
                let (store, data, names) = (&store, &data, &names);
                s.spawn(move || {
                    for i in 0..APPENDS {
                        append(store, &names[((i * 2 + w) % 1_000) as usize], data);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer");
        }
        start.elapsed()
    });
    elapsed.as_nanos() as f64 / total as f64
}

fn latency() -> (f64, f64) {
    let store = EventStore::new();
    let data = RawValue::from_string(r#"{"n":1}"#.into()).expect("valid JSON");
    let sent: Mutex<Vec<Instant>> = Mutex::new(Vec::with_capacity(PINGS));
    let mut micros: Vec<f64> = std::thread::scope(|s| {
        let got = s.spawn(|| {
            let mut sub = store.subscribe(Some(SequenceNumber(1)), Filter::default());
            let mut at = Vec::with_capacity(PINGS);
            for _ in 0..PINGS {
                sub.next();
                at.push(Instant::now());
            }
            at
        });
        for _ in 0..PINGS {
            std::thread::sleep(Duration::from_micros(200));
            sent.lock().expect("lock").push(Instant::now());
            append(&store, "ping", &data);
        }
        let got = got.join().expect("subscriber");
        let sent = sent.lock().expect("lock");
        got.iter()
            .zip(sent.iter())
            .map(|(g, s)| g.duration_since(*s).as_nanos() as f64 / 1_000.0)
            .collect()
    });
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let (mut alone, mut followed) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        alone.push(writers(0));
        followed.push(writers(SUBSCRIBERS));
        eprintln!(
            "subscribers: round {round}: alone {:.0} ns/append, with {SUBSCRIBERS} subscribers {:.0} ns/append",
            alone[round - 1],
            followed[round - 1]
        );
    }
    let (a, f) = (median(alone), median(followed));
    println!("| library, 2 writers × {APPENDS} appends | median ns per append (of {ROUNDS}) |");
    println!("|---|---:|");
    println!("| alone | {a:.0} |");
    println!("| with {SUBSCRIBERS} subscribers following | {f:.0} |");
    println!();
    println!(
        "Subscribers add {:.0}% to the writers' time per append.",
        (f / a - 1.0) * 100.0
    );
    let (p50, p99) = latency();
    println!();
    println!(
        "Wake-up latency, append to a waiting subscriber holding the event ({PINGS} events): p50 {p50:.1} µs, p99 {p99:.1} µs."
    );
}

//! Category reads on short and long logs (run by `scripts/bench_category.sh`).
//!
//! Two logs, `SMALL` (10k) and `LARGE` (1M) events, of one shape: appends
//! of one event to 1,000 aggregates `bulk-…`, every tenth event to one of
//! 100 aggregates `user-…`, and exactly 100 events of category `audit`
//! spread evenly over the log. Reads (after one first read, which builds
//! the index, timed on its own):
//! - `audit`: all 100 events of the sparse category `audit`, paging with
//!   `max_count` 100 until `next_sequence` passes the head (1 page on the
//!   short log; 10 on the long one, whose pages end at the 100,000-event
//!   look limit);
//! - `user`: one page of 100 events of the dense category `user` from a
//!   random `from_sequence`;
//!
//! each through `read_all_filtered` (the index) and through the scan that
//! served them before (every event of the page's window looked at). The
//! two logs are measured in turns, `ROUNDS` rounds of `READS` reads each;
//! reported: the median µs per read and the ratio long / short.
//!
//! `cargo run --release --example category_read [-- memory|count N]`: with
//! `memory`, builds one log of N events and prints the peak RSS before and
//! after the first category read (the index's memory); with `count`, runs
//! `measured_reads` on a log of N events (for callgrind's instruction
//! counts, `scripts/bench_category.sh`).

use eventstore::testing::PageBounds;
use eventstore::{EventStore, ExpectedVersion, Filter, NewEvent, SequenceNumber};
use serde_json::value::RawValue;
use std::hint::black_box;
use std::time::Instant;

const SMALL: u64 = 10_000;
const LARGE: u64 = 1_000_000;
const ROUNDS: usize = 7;
const READS: usize = 200;

fn build(n: u64) -> EventStore {
    let store = EventStore::new();
    let data = RawValue::from_string(r#"{"n":1}"#.into()).expect("valid JSON");
    let every = n / 100;
    for i in 0..n {
        let name = if i % every == every / 2 {
            format!("audit-{}", i % 7)
        } else if i % 10 == 3 {
            format!("user-{}", i % 100)
        } else {
            format!("bulk-{}", i % 1_000)
        };
        let event = [NewEvent::new("T", &data)];
        if let Err(e) = store.append(&name, ExpectedVersion::Any, &event) {
            panic!("append failed: {e}");
        }
    }
    store
}

fn category(name: &str) -> Filter {
    Filter {
        category: Some(name.into()),
        ..Filter::default()
    }
}

/// A page the way it was read before the index: every event of the window.
fn scan_page(store: &EventStore, filter: &Filter, from: u64, max: u64) -> (u64, u64) {
    let bounds = PageBounds::new(SequenceNumber(from), store.head());
    let (mut found, mut last) = (0, None);
    for seq in bounds.from..=bounds.last {
        if found == max {
            break;
        }
        if let Some(e) = store.event(SequenceNumber(seq))
            && filter.matches_event(&e)
        {
            black_box(e.event_type());
            found += 1;
            last = Some(seq);
        }
    }
    (found, bounds.next_sequence(max, found, last))
}

fn index_page(store: &EventStore, filter: &Filter, from: u64, max: u64) -> (u64, u64) {
    let page = store.read_all_filtered(SequenceNumber(from), max, filter);
    for e in &page.events {
        black_box(e.event_type());
    }
    (page.events.len() as u64, page.next_sequence.0)
}

type Reader = fn(&EventStore, &Filter, u64, u64) -> (u64, u64);

/// Every event of `audit`, page by page: how many.
fn read_audit(store: &EventStore, read: Reader) -> u64 {
    let filter = category("audit");
    let (mut from, mut total) = (0, 0);
    while from <= store.head().0 {
        let (found, next) = read(store, &filter, from, 100);
        total += found;
        from = next;
    }
    total
}

/// Median µs per call of `f` over `ROUNDS` rounds for each store, the
/// stores measured in turns.
fn interleaved(
    stores: &[&EventStore; 2],
    reads: usize,
    mut f: impl FnMut(&EventStore, usize),
) -> [f64; 2] {
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (s, store) in stores.iter().enumerate() {
            let start = Instant::now();
            for i in 0..reads {
                f(store, i);
            }
            times[s].push(start.elapsed().as_secs_f64() * 1e6 / reads as f64);
        }
    }
    times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    })
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn memory(n: u64) {
    let store = build(n);
    let before = peak_rss_kib();
    let start = Instant::now();
    let got = read_audit(&store, index_page);
    let first = start.elapsed();
    let after = peak_rss_kib();
    println!(
        "{n} events: peak RSS {before} KiB after the appends, {after} KiB after the first \
         category read (+{} KiB, {:.2} B/event; read {got} events in {:.1} ms)",
        after - before,
        (after - before) as f64 * 1024.0 / n as f64,
        first.as_secs_f64() * 1e3
    );
}

/// The reads counted under callgrind (`--toggle-collect=*measured_reads*`):
/// 10 times all of `audit`, then 10 pages of 100 `user` events, through
/// the index.
#[inline(never)]
fn measured_reads(store: &EventStore) -> u64 {
    let user = category("user");
    let mut total = 0;
    for i in 0..10 {
        total += read_audit(store, index_page);
        let from = (i * 7_919) % store.head().0.saturating_sub(1_100).max(1);
        total += index_page(store, &user, from, 100).0;
    }
    total
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(LARGE);
    match args.first().map(String::as_str) {
        Some("memory") => return memory(n),
        Some("count") => {
            let store = build(n);
            assert_eq!(read_audit(&store, index_page), 100, "the first read");
            println!("{n} events: {} events read", measured_reads(&store));
            return;
        }
        _ => {}
    }
    let small = build(SMALL);
    let large = build(LARGE);
    for (n, store) in [(SMALL, &small), (LARGE, &large)] {
        let start = Instant::now();
        let got = read_audit(store, index_page);
        println!(
            "{n} events: first category read (builds the index) {:.2} ms, {got} events",
            start.elapsed().as_secs_f64() * 1e3
        );
        assert_eq!(got, 100);
        assert_eq!(read_audit(store, scan_page), 100);
    }
    let stores = [&small, &large];
    let user = category("user");
    let mut seed = 0x9e37_79b9_u64;
    let mut random_from = move |store: &EventStore| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % store.head().0.saturating_sub(1_100).max(1)
    };
    println!(
        "median µs per read ({ROUNDS} rounds; {READS} reads a round with the index, {} \
         scanning), {SMALL} | {LARGE} events, ratio:",
        READS / 40
    );
    let readers: [(&str, Reader, usize); 2] = [
        ("index", index_page, READS),
        ("scan", scan_page, READS / 40),
    ];
    for (name, read, reads) in readers {
        let t = interleaved(&stores, reads, |store, _| {
            black_box(read_audit(store, read));
        });
        println!(
            "  audit, all 100 events, {name}: {:.1} | {:.1} µs, {:.2}×",
            t[0],
            t[1],
            t[1] / t[0]
        );
        let t = interleaved(&stores, reads, |store, _| {
            let from = random_from(store);
            black_box(read(store, &user, from, 100));
        });
        println!(
            "  user, one page of 100, {name}: {:.1} | {:.1} µs, {:.2}×",
            t[0],
            t[1],
            t[1] / t[0]
        );
    }
}

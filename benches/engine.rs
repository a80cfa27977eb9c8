//! Engine benchmarks: `EventStore` against the stores a user would otherwise
//! write, on the same workload from the same threads.
//!
//! Run: `cargo bench --bench engine` (a few minutes on 2 cores), or
//! `cargo bench --bench engine -- --test` (each case once, as a smoke test).
//! One iteration is one append operation from one thread; the thread counts
//! are totals across threads, so criterion's `thrpt` is ops/s (events/s for
//! the batch group) of the whole machine. 4 and 8 threads on a 2-core box are
//! oversubscribed on purpose: that is where lock holders get preempted.
//!
//! Implementations (`impl` in the ids):
//! - `engine`: `EventStore` (DashMap of aggregates + lock-free global log).
//! - `mutex`: one `parking_lot::Mutex` around `HashMap<String, Stream>` (a
//!   stream is `Vec<Arc<Event>>`) plus a `Vec<Arc<Event>>` global log: check
//!   the version, number the event, push it to both, all under the lock.
//! - `rwlock`: the same behind one `parking_lot::RwLock` (version re-reads and
//!   the tailing reader take the read lock).
//! - `fetch_add`: the floor, one `AtomicU64::fetch_add` per op, nothing else.
//! - `hashmap`: single thread only, a plain `HashMap<String, Vec<Event>>`
//!   push, no lock, no global log: the cost of the data alone.
//!
//! Every implementation copies the event type and data out of a shared
//! ~60-byte `RawValue` and stamps a wall-clock time and a generated id; the
//! baselines copy them before taking their lock, as the engine packs its
//! payload before taking the aggregate's.
//!
//! Groups:
//! - `append_exact/{impl}/t{threads}/a{aggregates}`: each op is what a
//!   command handler does: pick an aggregate uniformly (per-thread
//!   splitmix64), read its version, append one event at that version; on a
//!   concurrency error (another writer got in between) read again and retry
//!   until it lands. One op = one landed append (+ its reads and retries).
//!   `a1` = one hot aggregate every thread fights over, `a16`, `a100000` =
//!   conflicts almost never happen, but the map no longer fits in cache.
//!   The retry rate is printed to stderr after each case. The `fetch_add`
//!   floor sits in this group, per thread count.
//! - `append_any/{impl}/t{threads}/a{1,16}`: `ExpectedVersion::Any` appends:
//!   no version read, no check, no retries.
//! - `append_batch10/{impl}/t{threads}`: exact-version ops (as above) of 10
//!   events at once over 16 aggregates; throughput counts events.
//! - `append_tailing/{impl}/t{threads}`: `append_exact` over 16 aggregates
//!   while one more thread tails the global log in pages of 1,000 (checking
//!   every sequence number is the next one). The time stops when the writers
//!   finish; how far the reader had got then is printed to stderr.
//! - `durable/engine/t{1,8,32}`: `EventStore::open` (fsync always) in a
//!   fresh temporary directory; each thread appends one event at a time
//!   (`Any`) to its own aggregate, each `append` returning once durable:
//!   threads waiting at once share one `fdatasync` (the journaller).
//! - `single_thread/{engine,hashmap}/a{16,100000}`: one writer on the bench
//!   thread itself (no spawn) appending at the version it knows (it is the
//!   only writer, so no reads, no conflicts): engine vs plain `HashMap` push.
//!
//! Method: each case owns one pre-built store (every aggregate already holds
//! one event) reused across samples; each sample spawns its threads, releases
//! them together from a `Barrier` and times from the first writer's start to
//! the last writer's end (each thread reads the clock itself).
//! Setup, thread spawn and the checks are outside the timing. A sample runs
//! at least 20,000 ops (see `min_ops`) and its time is scaled to the
//! iterations criterion asked for. After every sample the store's head must
//! equal the head before plus the events the sample appended (and the reader
//! must have seen each of them, in order), so a store that drops or
//! duplicates work fails the bench instead of looking fast.

use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use eventstore::{AppendError, EventStore, ExpectedVersion, NewEvent, SequenceNumber, Version};
use parking_lot::{Mutex, RwLock};
use serde_json::value::RawValue;
use std::cell::Cell;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const THREADS: [usize; 6] = [1, 2, 4, 8, 32, 64];
/// Thread counts of the durable group.
const DURABLE_THREADS: [usize; 3] = [1, 8, 32];
const EVENT_TYPE: &str = "ItemAdded";
/// ~60 bytes, like the node's seed workload.
const EVENT_DATA: &str = r#"{"sku":"SKU-004217","quantity":3,"price_cents":1999,"gift":false}"#;
const BATCH: usize = 10;
const TAIL_PAGE: usize = 1000;

// ---------------------------------------------------------------------------
// The stores under test, behind one small trait (static dispatch).

trait Store: Sync + Sized {
    const NAME: &'static str;
    fn new() -> Self;
    /// `expected: None` = any version. `Ok(new version)`, or `Err(current
    /// version)` on a concurrency error.
    fn append(
        &self,
        aggregate: &str,
        expected: Option<u64>,
        events: &[NewEvent<'_>],
    ) -> Result<u64, u64>;
    fn version(&self, aggregate: &str) -> u64;
    /// Highest sequence number.
    fn head(&self) -> u64;
    /// Calls `f(sequence_number, data)` for up to `max` events from `from`;
    /// returns how many.
    fn tail(&self, from: u64, max: usize, f: impl FnMut(u64, &str)) -> usize;
}

impl Store for EventStore {
    const NAME: &'static str = "engine";
    fn new() -> Self {
        EventStore::new()
    }
    fn append(
        &self,
        aggregate: &str,
        expected: Option<u64>,
        events: &[NewEvent<'_>],
    ) -> Result<u64, u64> {
        let expected =
            expected.map_or(ExpectedVersion::Any, |v| ExpectedVersion::Exact(Version(v)));
        match EventStore::append(self, aggregate, expected, events) {
            Ok(done) => Ok(done.version.0),
            Err(AppendError::Concurrency(e)) => Err(e.current.0),
            Err(e) => panic!("unexpected append error: {e}"),
        }
    }
    fn version(&self, aggregate: &str) -> u64 {
        EventStore::version(self, aggregate).0
    }
    fn head(&self) -> u64 {
        EventStore::head(self).0
    }
    fn tail(&self, from: u64, max: usize, mut f: impl FnMut(u64, &str)) -> usize {
        let slice = self.read_all(SequenceNumber(from), max);
        for e in &slice.events {
            f(e.sequence_number.0, e.data());
        }
        slice.events.len()
    }
}

/// The event of the baselines.
#[allow(dead_code)] // fields are written, and kept, as a real store would
struct BEvent {
    seq: u64,
    id: u128,
    aggregate_id: Arc<str>,
    version: u64,
    event_type: Box<str>,
    data: Box<str>,
    recorded_at: i64,
}

struct BStream {
    id: Arc<str>,
    events: Vec<Arc<BEvent>>,
}

#[derive(Default)]
struct Inner {
    streams: HashMap<String, BStream>,
    log: Vec<Arc<BEvent>>,
    last_micros: i64,
}

/// Parts built before taking the lock (like the engine's payloads).
type Parts = Vec<(Box<str>, Box<str>)>;

fn parts(events: &[NewEvent<'_>]) -> Parts {
    events
        .iter()
        .map(|e| (Box::from(&*e.event_type), Box::from(e.data.get())))
        .collect()
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A cheap generated id (the engine's is a keyed permutation of the seq).
fn gen_id(seq: u64) -> u128 {
    let mut s = seq;
    (u128::from(splitmix64(&mut s)) << 64) | u128::from(splitmix64(&mut s))
}

impl Inner {
    fn append(
        &mut self,
        aggregate: &str,
        expected: Option<u64>,
        parts: Parts,
        now: i64,
    ) -> Result<u64, u64> {
        if !self.streams.contains_key(aggregate) {
            if expected.is_some_and(|v| v != 0) {
                return Err(0);
            }
            let id: Arc<str> = Arc::from(aggregate);
            self.streams.insert(
                aggregate.to_owned(),
                BStream {
                    id,
                    events: Vec::new(),
                },
            );
        }
        let stream = self.streams.get_mut(aggregate).expect("just inserted");
        let current = stream.events.len() as u64;
        if expected.is_some_and(|v| v != current) {
            return Err(current);
        }
        let recorded_at = now.max(self.last_micros);
        self.last_micros = recorded_at;
        for (event_type, data) in parts {
            let seq = self.log.len() as u64 + 1;
            let event = Arc::new(BEvent {
                seq,
                id: gen_id(seq),
                aggregate_id: Arc::clone(&stream.id),
                version: stream.events.len() as u64 + 1,
                event_type,
                data,
                recorded_at,
            });
            stream.events.push(Arc::clone(&event));
            self.log.push(event);
        }
        Ok(stream.events.len() as u64)
    }

    fn version(&self, aggregate: &str) -> u64 {
        self.streams
            .get(aggregate)
            .map_or(0, |s| s.events.len() as u64)
    }

    fn page(&self, from: u64, max: usize) -> Vec<Arc<BEvent>> {
        let start = (from.max(1) - 1) as usize;
        let end = (start + max).min(self.log.len());
        self.log
            .get(start..end)
            .map_or_else(Vec::new, <[_]>::to_vec)
    }
}

/// Tail a page outside the lock (what a user would do: clone the Arcs out).
fn visit(page: Vec<Arc<BEvent>>, mut f: impl FnMut(u64, &str)) -> usize {
    for e in &page {
        f(e.seq, &e.data);
    }
    page.len()
}

struct MutexStore(Mutex<Inner>);

impl Store for MutexStore {
    const NAME: &'static str = "mutex";
    fn new() -> Self {
        MutexStore(Mutex::new(Inner::default()))
    }
    fn append(
        &self,
        aggregate: &str,
        expected: Option<u64>,
        events: &[NewEvent<'_>],
    ) -> Result<u64, u64> {
        let (parts, now) = (parts(events), now_micros());
        self.0.lock().append(aggregate, expected, parts, now)
    }
    fn version(&self, aggregate: &str) -> u64 {
        self.0.lock().version(aggregate)
    }
    fn head(&self) -> u64 {
        self.0.lock().log.len() as u64
    }
    fn tail(&self, from: u64, max: usize, f: impl FnMut(u64, &str)) -> usize {
        let page = self.0.lock().page(from, max);
        visit(page, f)
    }
}

struct RwLockStore(RwLock<Inner>);

impl Store for RwLockStore {
    const NAME: &'static str = "rwlock";
    fn new() -> Self {
        RwLockStore(RwLock::new(Inner::default()))
    }
    fn append(
        &self,
        aggregate: &str,
        expected: Option<u64>,
        events: &[NewEvent<'_>],
    ) -> Result<u64, u64> {
        let (parts, now) = (parts(events), now_micros());
        self.0.write().append(aggregate, expected, parts, now)
    }
    fn version(&self, aggregate: &str) -> u64 {
        self.0.read().version(aggregate)
    }
    fn head(&self) -> u64 {
        self.0.read().log.len() as u64
    }
    fn tail(&self, from: u64, max: usize, f: impl FnMut(u64, &str)) -> usize {
        let page = self.0.read().page(from, max);
        visit(page, f)
    }
}

// ---------------------------------------------------------------------------
// Workload.

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform index below `n` (Lemire's multiply-shift).
fn pick(state: &mut u64, n: usize) -> usize {
    (((splitmix64(state) >> 32) * n as u64) >> 32) as usize
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("order-{i}")).collect()
}

fn data() -> Box<RawValue> {
    RawValue::from_string(EVENT_DATA.to_owned()).expect("valid JSON")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Exact,
    Any,
}

/// One append op, as a command handler does it: read the aggregate's
/// version, append at it, and on a concurrency error (another writer got in
/// between) read again and retry until it lands. `Any` skips the read.
/// Returns the number of retries.
#[inline]
fn op<S: Store>(store: &S, mode: Mode, name: &str, events: &[NewEvent<'_>]) -> u64 {
    if mode == Mode::Any {
        store
            .append(name, None, events)
            .expect("any-version append failed");
        return 0;
    }
    let mut retries = 0;
    loop {
        let version = store.version(name);
        if store.append(name, Some(version), events).is_ok() {
            return retries;
        }
        retries += 1;
    }
}

/// Ops a sample runs at least, whatever criterion asks for; the time is then
/// scaled back to the `iters` asked for. Criterion sizes its samples from
/// the warm-up's wall time per iteration, and one scheduling hiccup in an
/// early, few-iteration warm-up call (thread spawn, a preempted writer on a
/// busy 2-core box) can make it pick samples of a handful of ops, which
/// would then measure thread start-up, not appends. (The engine has such
/// hiccups of its own: the writer that crosses the middle of a log chunk
/// allocates and initialises the next, twice as large, chunk inside its
/// append, ~0.1-0.8 s once the log holds 1-6M events.) When that happens
/// criterion warns "Unable to complete 10 samples in 1.0s" with an inflated
/// estimate; the samples are still >= `MIN_OPS` ops each and correctly
/// timed. With `--test` the minimum is 100, to keep the smoke run quick.
fn min_ops(normal: u64) -> u64 {
    static TEST: OnceLock<bool> = OnceLock::new();
    if *TEST.get_or_init(|| std::env::args().any(|a| a == "--test")) {
        normal.min(100)
    } else {
        normal
    }
}

/// Scales the time `ran` ops took to the `iters` criterion asked for.
fn scaled(elapsed: Duration, iters: u64, ran: u64) -> Duration {
    if ran == iters {
        elapsed
    } else {
        elapsed.mul_f64(iters as f64 / ran as f64)
    }
}

/// Minimum ops per sample for the store cases (a few ms of work).
const MIN_OPS: u64 = 20_000;
/// Minimum for the `fetch_add` floor (a few ms too).
const MIN_FLOOR_OPS: u64 = 2_000_000;

/// Counters a case prints to stderr after it ran (all samples and warm-up).
#[derive(Default)]
struct Stats {
    ops: Cell<u64>,
    retries: Cell<u64>,
    /// Events the reader had seen when the writers finished / appended.
    tail_seen: Cell<u64>,
    tail_due: Cell<u64>,
}

impl Stats {
    fn print(&self, id: &str) {
        let ops = self.ops.get();
        if ops == 0 {
            return; // filtered out
        }
        let mut line = format!(
            "    [{id}] retries/op {:.3}",
            self.retries.get() as f64 / ops as f64
        );
        if self.tail_due.get() > 0 {
            let pct = 100.0 * self.tail_seen.get() as f64 / self.tail_due.get() as f64;
            line += &format!(", reader had seen {pct:.1}% of the events when the writers finished");
        }
        eprintln!("{line}");
    }
}

/// One case's shape.
#[derive(Clone, Copy)]
struct Spec {
    threads: usize,
    aggregates: usize,
    mode: Mode,
    /// Events per append.
    batch: usize,
    /// Whether a reader thread tails the global log meanwhile.
    tail: bool,
}

struct Fixture<S> {
    store: S,
    names: Vec<String>,
    /// Per-thread PRNG state, kept between samples.
    rngs: Vec<u64>,
    data: Box<RawValue>,
    mode: Mode,
    batch: usize,
    tail: bool,
}

impl<S: Store> Fixture<S> {
    fn new(spec: Spec) -> Self {
        let Spec {
            threads,
            aggregates,
            mode,
            batch,
            tail,
        } = spec;
        let store = S::new();
        let names = names(aggregates);
        let data = data();
        let one = [NewEvent::new(EVENT_TYPE, &data)];
        for name in &names {
            assert_eq!(store.append(name, Some(0), &one), Ok(1));
        }
        let rngs = (0..threads as u64).map(|t| 0x5EED ^ (t << 32)).collect();
        Fixture {
            store,
            names,
            rngs,
            data,
            mode,
            batch,
            tail,
        }
    }

    /// One sample: `iters` ops (at least [`MIN_OPS`]) split over the writers.
    fn run(&mut self, iters: u64, stats: &Stats) -> Duration {
        let ran = iters.max(min_ops(MIN_OPS));
        let Fixture {
            store,
            names,
            rngs,
            data,
            mode,
            batch,
            tail,
        } = self;
        let (store, names, mode, tail) = (&*store, &names[..], *mode, *tail);
        let data: &RawValue = data;
        let events: Vec<NewEvent<'_>> = (0..*batch)
            .map(|_| NewEvent::new(EVENT_TYPE, data))
            .collect();
        let events = &events[..];
        let n = rngs.len() as u64;
        let head0 = store.head();
        let target = head0 + ran * *batch as u64;
        let barrier = &Barrier::new(rngs.len() + 1 + usize::from(tail));
        let progress = &AtomicU64::new(head0);

        let (elapsed, retries, seen_at_end) = std::thread::scope(|s| {
            let handles: Vec<_> = rngs
                .iter_mut()
                .enumerate()
                .map(|(t, rng)| {
                    let quota = ran / n + u64::from((t as u64) < ran % n);
                    s.spawn(move || {
                        let mut retries = 0;
                        barrier.wait();
                        let start = Instant::now();
                        for _ in 0..quota {
                            let i = pick(rng, names.len());
                            retries += op(store, mode, &names[i], events);
                        }
                        (start, Instant::now(), retries)
                    })
                })
                .collect();
            let reader = tail.then(|| {
                s.spawn(move || {
                    barrier.wait();
                    tail_until(store, head0, target, progress)
                })
            });
            barrier.wait();
            let spans: Vec<_> = handles
                .into_iter()
                .map(|h| h.join().expect("writer panicked"))
                .collect();
            let (elapsed, retries) = span(&spans);
            let seen_at_end = progress.load(Ordering::Relaxed) - head0;
            if let Some(r) = reader {
                r.join().expect("reader panicked");
            }
            (elapsed, retries, seen_at_end)
        });

        // A store that lost or duplicated work must not look fast.
        assert_eq!(store.head(), target, "{}: head after the sample", S::NAME);
        stats.ops.set(stats.ops.get() + ran);
        stats.retries.set(stats.retries.get() + retries);
        if tail {
            stats.tail_seen.set(stats.tail_seen.get() + seen_at_end);
            stats.tail_due.set(stats.tail_due.get() + (target - head0));
        }
        scaled(elapsed, iters, ran)
    }

    /// After the case: every aggregate's version adds up to the head.
    fn check(&self) {
        let sum: u64 = self.names.iter().map(|n| self.store.version(n)).sum();
        assert_eq!(
            sum,
            self.store.head(),
            "{}: versions do not add up to the head",
            S::NAME
        );
    }
}

/// The wall time the threads' work covered, from the first thread's start
/// to the last one's end (each thread takes its own times: the bench thread
/// may not even be scheduled between the barrier and the first ops on a busy
/// box), and the sum of their counts.
fn span(spans: &[(Instant, Instant, u64)]) -> (Duration, u64) {
    let start = spans
        .iter()
        .map(|s| s.0)
        .min()
        .expect("at least one thread");
    let end = spans
        .iter()
        .map(|s| s.1)
        .max()
        .expect("at least one thread");
    (end - start, spans.iter().map(|s| s.2).sum())
}

/// The tailing reader: reads from `head0 + 1` until it has seen `target`,
/// checking density and order; publishes its position in `progress`.
fn tail_until<S: Store>(store: &S, head0: u64, target: u64, progress: &AtomicU64) {
    let mut next = head0 + 1;
    let mut bytes = 0usize;
    while next <= target {
        let got = store.tail(next, TAIL_PAGE, |seq, data| {
            assert_eq!(seq, next, "{}: the global log skipped or repeated", S::NAME);
            bytes += data.len();
            next += 1;
        });
        progress.store(next - 1, Ordering::Relaxed);
        if got == 0 {
            std::thread::yield_now();
        }
    }
    black_box(bytes);
}

// ---------------------------------------------------------------------------
// Cases.

fn case<S: Store>(g: &mut BenchmarkGroup<'_, WallTime>, group: &str, id: String, spec: Spec) {
    let mut fx = Fixture::<S>::new(spec);
    let stats = Stats::default();
    g.bench_function(&id, |b| b.iter_custom(|iters| fx.run(iters, &stats)));
    fx.check();
    stats.print(&format!("{group}/{id}"));
}

/// The engine and both lock baselines on one spec; ids `{impl}/{suffix}`.
fn cases(g: &mut BenchmarkGroup<'_, WallTime>, group: &str, suffix: &str, spec: Spec) {
    case::<EventStore>(g, group, format!("engine/{suffix}"), spec);
    case::<MutexStore>(g, group, format!("mutex/{suffix}"), spec);
    case::<RwLockStore>(g, group, format!("rwlock/{suffix}"), spec);
}

fn floor(g: &mut BenchmarkGroup<'_, WallTime>, threads: usize) {
    g.bench_function(format!("fetch_add/t{threads}"), |b| {
        b.iter_custom(|iters| {
            let ran = iters.max(min_ops(MIN_FLOOR_OPS));
            let counter = &AtomicU64::new(0);
            let barrier = &Barrier::new(threads + 1);
            let n = threads as u64;
            let elapsed = std::thread::scope(|s| {
                let handles: Vec<_> = (0..n)
                    .map(|t| {
                        let quota = ran / n + u64::from(t < ran % n);
                        s.spawn(move || {
                            barrier.wait();
                            let start = Instant::now();
                            for _ in 0..quota {
                                counter.fetch_add(1, Ordering::Relaxed);
                            }
                            (start, Instant::now(), 0)
                        })
                    })
                    .collect();
                barrier.wait();
                let spans: Vec<_> = handles
                    .into_iter()
                    .map(|h| h.join().expect("thread panicked"))
                    .collect();
                span(&spans).0
            });
            assert_eq!(counter.load(Ordering::Relaxed), ran);
            scaled(elapsed, iters, ran)
        })
    });
}

fn group<'a>(c: &'a mut Criterion, name: &str, elements: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(elements));
    g
}

fn append_exact(c: &mut Criterion) {
    const NAME: &str = "append_exact";
    let mut g = group(c, NAME, 1);
    for threads in THREADS {
        for aggregates in [1, 16, 100_000] {
            let spec = Spec {
                threads,
                aggregates,
                mode: Mode::Exact,
                batch: 1,
                tail: false,
            };
            cases(&mut g, NAME, &format!("t{threads}/a{aggregates}"), spec);
        }
        floor(&mut g, threads);
    }
    g.finish();
}

fn append_any(c: &mut Criterion) {
    const NAME: &str = "append_any";
    let mut g = group(c, NAME, 1);
    for threads in THREADS {
        for aggregates in [1, 16] {
            let spec = Spec {
                threads,
                aggregates,
                mode: Mode::Any,
                batch: 1,
                tail: false,
            };
            cases(&mut g, NAME, &format!("t{threads}/a{aggregates}"), spec);
        }
    }
    g.finish();
}

fn append_batch(c: &mut Criterion) {
    const NAME: &str = "append_batch10";
    let mut g = group(c, NAME, BATCH as u64);
    for threads in THREADS {
        let spec = Spec {
            threads,
            aggregates: 16,
            mode: Mode::Exact,
            batch: BATCH,
            tail: false,
        };
        cases(&mut g, NAME, &format!("t{threads}"), spec);
    }
    g.finish();
}

fn append_tailing(c: &mut Criterion) {
    const NAME: &str = "append_tailing";
    let mut g = group(c, NAME, 1);
    for threads in THREADS {
        let spec = Spec {
            threads,
            aggregates: 16,
            mode: Mode::Exact,
            batch: 1,
            tail: true,
        };
        cases(&mut g, NAME, &format!("t{threads}"), spec);
    }
    g.finish();
}

/// The plain single-threaded store: no lock, no global log.
#[allow(dead_code)]
struct PEvent {
    seq: u64,
    id: u128,
    version: u64,
    event_type: Box<str>,
    data: Box<str>,
    recorded_at: i64,
}

fn single_thread(c: &mut Criterion) {
    let mut g = group(c, "single_thread", 1);
    for aggregates in [16, 100_000] {
        let names = names(aggregates);
        let data = data();
        let events = [NewEvent::new(EVENT_TYPE, &data)];

        let store = EventStore::new();
        for name in &names {
            Store::append(&store, name, Some(0), &events).expect("fresh aggregate");
        }
        let (mut rng, mut seen) = (1u64, vec![1u64; aggregates]);
        g.bench_function(format!("engine/a{aggregates}"), |b| {
            b.iter_custom(|iters| {
                let ran = iters.max(min_ops(MIN_OPS));
                let head0 = store.head().0;
                let start = Instant::now();
                for _ in 0..ran {
                    let i = pick(&mut rng, aggregates);
                    let done = store
                        .append(&names[i], ExpectedVersion::Exact(Version(seen[i])), &events)
                        .expect("single writer never conflicts");
                    seen[i] = done.version.0;
                }
                let elapsed = start.elapsed();
                assert_eq!(store.head().0, head0 + ran);
                scaled(elapsed, iters, ran)
            })
        });
        drop(store);

        let mut map: HashMap<String, Vec<PEvent>> =
            names.iter().map(|n| (n.clone(), Vec::new())).collect();
        let mut seq = 0u64;
        let (mut rng, mut seen) = (1u64, vec![0u64; aggregates]);
        g.bench_function(format!("hashmap/a{aggregates}"), |b| {
            b.iter_custom(|iters| {
                let ran = iters.max(min_ops(MIN_OPS));
                let seq0 = seq;
                let start = Instant::now();
                for _ in 0..ran {
                    let i = pick(&mut rng, aggregates);
                    let stream = map.get_mut(names[i].as_str()).expect("known aggregate");
                    assert_eq!(
                        stream.len() as u64,
                        seen[i],
                        "single writer never conflicts"
                    );
                    let version = stream.len() as u64 + 1;
                    seen[i] = version;
                    let (event_type, data) = (Box::from(EVENT_TYPE), Box::from(data.get()));
                    seq += 1;
                    stream.push(PEvent {
                        seq,
                        id: gen_id(seq),
                        version,
                        event_type,
                        data,
                        recorded_at: now_micros(),
                    });
                }
                let elapsed = start.elapsed();
                assert_eq!(seq, seq0 + ran);
                scaled(elapsed, iters, ran)
            })
        });
        assert_eq!(map.values().map(|s| s.len() as u64).sum::<u64>(), seq);
    }
    g.finish();
}

fn durable(c: &mut Criterion) {
    let mut g = group(c, "durable", 1);
    let data = data();
    let events = [NewEvent::new(EVENT_TYPE, &data)];
    for threads in DURABLE_THREADS {
        let dir = std::env::temp_dir().join(format!(
            "eventstore-bench-durable-{}-{threads}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let store = EventStore::open(&dir, eventstore::FsyncPolicy::Always).expect("open");
        let names = names(threads);
        g.bench_function(format!("engine/t{threads}"), |b| {
            b.iter_custom(|iters| {
                // fdatasync-bound: a few hundred ops per sample suffice.
                let ran = iters.max(200);
                let n = threads as u64;
                let barrier = &Barrier::new(threads + 1);
                let (store, names, events) = (&store, &names, &events);
                let head0 = store.head().0;
                let elapsed = std::thread::scope(|s| {
                    let handles: Vec<_> = (0..n)
                        .map(|t| {
                            let quota = ran / n + u64::from(t < ran % n);
                            s.spawn(move || {
                                barrier.wait();
                                let start = Instant::now();
                                for _ in 0..quota {
                                    store
                                        .append(&names[t as usize], ExpectedVersion::Any, events)
                                        .expect("durable append");
                                }
                                (start, Instant::now(), 0)
                            })
                        })
                        .collect();
                    barrier.wait();
                    let spans: Vec<_> = handles
                        .into_iter()
                        .map(|h| h.join().expect("thread panicked"))
                        .collect();
                    span(&spans).0
                });
                assert_eq!(store.head().0, head0 + ran);
                scaled(elapsed, iters, ran)
            })
        });
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1000))
        .without_plots();
    targets = append_exact, append_any, append_batch, append_tailing, single_thread, durable
}
criterion_main!(benches);

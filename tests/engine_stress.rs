//! Stress tests of the engine's concurrency invariants (see the module docs of
//! `src/store.rs` and `src/log.rs`):
//!
//! 1. sequence numbers are dense and unique; a rejected append takes none;
//! 2. along one aggregate, sequence numbers rise with versions;
//! 3. a reader of the global log sees a contiguous prefix, and an append that
//!    returned is visible to every read that starts after it;
//! 4. nothing acknowledged is lost; a concurrency error only when the version
//!    really moved.
//!
//! `mixed_writers_*`: eight writer threads hammer one, two or four hot
//! aggregates with a mix of exact-version appends (re-read and retry on a
//! concurrency error), `Any` appends, batches of 2–10 and now and then a
//! large one, with and without client-given ids, while one thread tails the
//! global log and another tails every hot aggregate, checking each read as
//! it comes. At the end every acknowledged event is looked up, and every
//! concurrency error is checked against the version the writer had seen.
//!
//! `racing_*`: the same client-given ids submitted by several threads at
//! once (released together by a spinning barrier), to one aggregate or to
//! several: exactly one submission stores them, the others are recognised
//! retries with the same positions, or id conflicts.
//!
//! Counts are small enough for a debug build on two cores; `EVENTSTORE_SOAK`
//! (`tests/support/mod.rs`) makes them heavier. The tests take turns (each uses
//! every core). A watchdog fails a test whose threads stop making progress
//! (a lost ticket, or a writer left asleep, stalls every later writer).

use eventstore::{
    AppendError, EventId, EventStore, ExpectedVersion, IdConflict, NewEvent, SequenceNumber,
    Timestamp, Version,
};
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Small helpers: PRNG, soak scaling, watchdog.

mod support;
use support::{Rng, raw, scaled, whole_machine};

fn seeded(seed: u64) -> Rng {
    Rng::new(seed ^ 0x5851_f42d_4c95_7f2d)
}

/// A client-given id, unique per (thread, counter), shaped like a v4 UUID.
fn client_id(salt: u64, thread: u64, counter: u64) -> EventId {
    let hi = (salt << 32) ^ (thread << 16) ^ 0x0000_0000_0000_4000;
    let hi = (hi & !0xF000) | 0x4000;
    let lo = (0b10u64 << 62) | (counter & ((1 << 62) - 1));
    EventId::from_u128((u128::from(hi) << 64) | u128::from(lo))
}

/// Counts finished workers even when they panic.
struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A barrier that releases its threads within nanoseconds of each other
/// when they are running (a `std::sync::Barrier` wakes them one by one,
/// microseconds apart, wider than the races it is meant to provoke): a
/// waiter spins for a short while, then blocks, so that more threads than
/// cores (or a loaded machine) still make progress. A thread that panics
/// while holding a [`SpinBarrier::join`] guard breaks the barrier, so that
/// its peers fail at once instead of waiting for it for ever.
struct SpinBarrier {
    n: usize,
    /// (arrived, generation)
    state: Mutex<(usize, usize)>,
    released: Condvar,
    generation: AtomicUsize,
    broken: AtomicBool,
}

/// Breaks its barrier if dropped while its thread panics.
struct BarrierMember<'a>(&'a SpinBarrier);

impl Drop for BarrierMember<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.broken.store(true, Ordering::SeqCst);
            let _state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
            self.0.released.notify_all();
        }
    }
}

impl SpinBarrier {
    fn new(n: usize) -> SpinBarrier {
        SpinBarrier {
            n,
            state: Mutex::new((0, 0)),
            released: Condvar::new(),
            generation: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
        }
    }

    /// To be held by each thread that waits on the barrier.
    fn join(&self) -> BarrierMember<'_> {
        BarrierMember(self)
    }

    fn wait(&self) {
        let check = || {
            if self.broken.load(Ordering::SeqCst) {
                panic!("another thread of this test panicked");
            }
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let generation = state.1;
        state.0 += 1;
        if state.0 == self.n {
            *state = (0, generation + 1);
            self.generation.store(generation + 1, Ordering::SeqCst);
            self.released.notify_all();
            return;
        }
        drop(state);
        let spinning = Instant::now();
        while self.generation.load(Ordering::SeqCst) == generation {
            check();
            if spinning.elapsed() > Duration::from_micros(50) {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                while state.1 == generation {
                    check();
                    state = self.released.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                return;
            }
            std::hint::spin_loop();
        }
    }
}

/// Runs `body` on its own thread and waits for it; fails the test if
/// `progress` does not move for `stall` (a lost ticket or a deadlock would
/// otherwise hang the test run for ever). A panic in `body` is re-raised.
fn with_watchdog<T: Send + 'static>(
    progress: Arc<AtomicU64>,
    stall: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let out = body();
        let _ = tx.send(());
        out
    });
    let mut last = progress.load(Ordering::SeqCst);
    let mut since = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = progress.load(Ordering::SeqCst);
                if now != last {
                    last = now;
                    since = Instant::now();
                } else if since.elapsed() > stall {
                    panic!(
                        "no progress for {stall:?} (progress counter stuck at {now}): \
                         a writer stalled (lost ticket?) or threads deadlocked"
                    );
                }
            }
        }
    }
    match handle.join() {
        Ok(v) => v,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

const STALL: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The mixed-writer stress test.

/// One acknowledged (successful, non-duplicate) append.
#[derive(Debug)]
struct Ack {
    aggregate: String,
    expected: ExpectedVersion,
    seqs: Vec<u64>,
    /// Version after the append.
    version: u64,
    ids: Vec<EventId>,
    types: Vec<String>,
    data: Vec<String>,
    metadata: Vec<Option<String>>,
}

/// One concurrency error a writer got.
#[derive(Debug)]
struct Conflict {
    aggregate: String,
    /// The version the writer had seen (and expected).
    seen: u64,
    /// The error's current version.
    current: u64,
    /// The aggregate's version read right after the error.
    version_after: u64,
    /// The head read right after the error.
    head_after: u64,
}

#[derive(Default)]
struct WriterLog {
    acks: Vec<Ack>,
    conflicts: Vec<Conflict>,
    any_appends: usize,
    exact_appends: usize,
}

/// An event as the log tailer saw it.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    aggregate: String,
    version: u64,
    id: EventId,
    recorded_at: Timestamp,
}

struct Shared {
    store: EventStore,
    aggregates: Vec<String>,
    /// Highest sequence number of an append that has returned.
    acked_head: AtomicU64,
    /// Per hot aggregate: highest version of an append that has returned.
    acked_version: Vec<AtomicU64>,
    writers_done: AtomicUsize,
    progress: Arc<AtomicU64>,
    start: SpinBarrier,
}

const WRITERS: usize = 8;

fn writer(shared: &Shared, thread: u64, ops: usize, seed: u64) -> WriterLog {
    let _done = Finished(&shared.writers_done);
    // All writers start together.
    let _member = shared.start.join();
    shared.start.wait();
    let store = &shared.store;
    let mut rng = seeded(seed ^ (thread << 40));
    let mut log = WriterLog::default();
    // This thread's (possibly stale) idea of each aggregate's version.
    let mut cached = vec![0u64; shared.aggregates.len()];
    let mut id_counter = 0u64;
    for op in 0..ops {
        let a = rng.below(shared.aggregates.len() as u64) as usize;
        let aggregate = &shared.aggregates[a];
        // Mostly single events and batches of 2–10; now and then a large
        // batch, which keeps its writer between ticket and publication (and
        // its ids between check and index) long enough for others to run.
        let n = match rng.below(100) {
            0 => 20 + rng.below(80) as usize,
            1..=25 => 2 + rng.below(9) as usize,
            _ => 1,
        };
        let with_ids = rng.percent(30);
        let types: Vec<String> = (0..n)
            .map(|i| format!("W{thread}T{}", (op + i) % 3))
            .collect();
        let data: Vec<String> = (0..n)
            .map(|i| {
                if rng.percent(10) {
                    format!("[{thread},{op},{i}]")
                } else {
                    format!(
                        r#"{{"w":{thread},"op":{op},"i":{i},"k{}":true}}"#,
                        rng.below(4)
                    )
                }
            })
            .collect();
        let metadata: Vec<Option<String>> = (0..n)
            .map(|i| {
                rng.percent(30)
                    .then(|| format!(r#"{{"writer":{thread},"i":{i}}}"#))
            })
            .collect();
        let ids: Vec<Option<EventId>> = (0..n)
            .map(|_| {
                (with_ids && rng.percent(80)).then(|| {
                    id_counter += 1;
                    client_id(seed, thread + 1, id_counter)
                })
            })
            .collect();
        let data_raw: Vec<Box<RawValue>> = data.iter().map(|d| raw(d)).collect();
        let meta_raw: Vec<Option<Box<RawValue>>> =
            metadata.iter().map(|m| m.as_deref().map(raw)).collect();
        let events: Vec<NewEvent<'_>> = (0..n)
            .map(|i| {
                let mut e = NewEvent::new(&types[i], &data_raw[i]);
                if let Some(m) = &meta_raw[i] {
                    e = e.with_metadata(m);
                }
                if let Some(id) = ids[i] {
                    e = e.with_id(id);
                }
                e
            })
            .collect();

        let use_any = rng.percent(40);
        let mut seen = if use_any {
            0
        } else {
            match rng.below(3) {
                0 => store.version(aggregate).0,
                1 => store.read_stream(aggregate, Version(u64::MAX), 0).version.0,
                // The cached value: stale whenever another writer got in since.
                _ => cached[a],
            }
        };
        if !use_any && rng.percent(10) {
            // Give the others a chance to move the version under our feet.
            std::thread::yield_now();
        }
        let mut attempts = 0u32;
        let appended = loop {
            attempts += 1;
            assert!(attempts < 100_000, "writer {thread} starved on {aggregate}");
            let expected = if use_any {
                ExpectedVersion::Any
            } else {
                ExpectedVersion::Exact(Version(seen))
            };
            match store.append(aggregate, expected, &events) {
                Ok(done) => break (expected, done),
                Err(AppendError::Concurrency(e)) => {
                    assert!(!use_any, "concurrency error for an `Any` append: {e}");
                    let version_after = store.version(aggregate).0;
                    let head_after = store.head().0;
                    assert_eq!(e.expected.0, seen, "error echoes another expected version");
                    // The version this writer saw was real at some earlier
                    // instant and versions only rise: a legitimate error has
                    // current > seen, and the aggregate is at least there now.
                    assert!(
                        e.current.0 > seen,
                        "{aggregate}: expected {seen}, error says current {} (not moved on)",
                        e.current
                    );
                    assert!(
                        version_after >= e.current.0,
                        "{aggregate}: error said current {}, but the version read right after is {version_after}",
                        e.current
                    );
                    log.conflicts.push(Conflict {
                        aggregate: aggregate.clone(),
                        seen,
                        current: e.current.0,
                        version_after,
                        head_after,
                    });
                    // Retry as a client would: from the error, or re-read.
                    seen = if rng.percent(50) {
                        e.current.0
                    } else {
                        version_after
                    };
                    cached[a] = seen;
                }
                Err(other) => panic!("writer {thread}: unexpected error {other}"),
            }
        };
        let (expected, done) = appended;
        shared.progress.fetch_add(1, Ordering::Relaxed);
        assert!(
            !done.duplicate,
            "fresh ids came back as a duplicate: {done:?}"
        );
        let seqs: Vec<u64> = done.positions.iter().map(|s| s.0).collect();
        assert_eq!(seqs.len(), n, "positions of a batch of {n}: {seqs:?}");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "batch not consecutive: {seqs:?}"
        );
        if let ExpectedVersion::Exact(v) = expected {
            assert_eq!(
                done.version.0,
                v.0 + n as u64,
                "exact append at {v} of {n} events"
            );
        }
        assert!(done.version.0 >= n as u64);
        // Visible at once to this thread: the append has returned.
        let first_version = done.version.0 + 1 - n as u64;
        let mut stored_ids = Vec::with_capacity(n);
        for (i, &seq) in seqs.iter().enumerate() {
            let e = store.event(SequenceNumber(seq)).unwrap_or_else(|| {
                panic!(
                    "event {seq} invisible right after its append returned (head {})",
                    store.head()
                )
            });
            assert_eq!(e.aggregate_id(), aggregate);
            assert_eq!(e.version().0, first_version + i as u64);
            assert_eq!(e.event_type(), types[i]);
            assert_eq!(e.data(), data[i]);
            assert_eq!(e.metadata(), metadata[i].as_deref());
            if let Some(id) = ids[i] {
                assert_eq!(e.id(), id, "client id not kept");
            }
            stored_ids.push(e.id());
        }
        assert_eq!(done.event_ids(store), stored_ids);
        cached[a] = done.version.0;
        shared
            .acked_head
            .fetch_max(*seqs.last().unwrap(), Ordering::SeqCst);
        shared.acked_version[a].fetch_max(done.version.0, Ordering::SeqCst);
        if use_any {
            log.any_appends += 1;
        } else {
            log.exact_appends += 1;
        }
        log.acks.push(Ack {
            aggregate: aggregate.clone(),
            expected,
            seqs,
            version: done.version.0,
            ids: stored_ids,
            types,
            data,
            metadata,
        });
    }
    log
}

/// Tails the global log from its last position until the writers are done,
/// checking each read. Returns what it saw, by sequence number - 1.
fn log_tailer(shared: &Shared, seed: u64) -> Vec<Seen> {
    let store = &shared.store;
    let mut rng = seeded(seed ^ 0x7a11);
    let mut seen: Vec<Seen> = Vec::new();
    let mut ids = HashSet::new();
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut last_at = Timestamp(i64::MIN);
    let mut last_head = 0u64;
    let mut reads = 0u64;
    loop {
        // Both loaded before the read starts: every append that returned
        // before this point must be visible to it.
        let done = shared.writers_done.load(Ordering::SeqCst) == WRITERS;
        let must_see = shared.acked_head.load(Ordering::SeqCst);
        let last = seen.len() as u64;
        let max = match rng.below(10) {
            0 => usize::MAX,
            1 => 1,
            _ => 1 + rng.below(300) as usize,
        };
        // Sometimes read from 0 (= from the start) and skip what was seen.
        let from = if last == 0 && rng.percent(50) {
            0
        } else {
            last + 1
        };
        let slice = store.read_all(SequenceNumber(from), max);
        reads += 1;
        let head = slice.head.0;
        assert!(
            head >= must_see,
            "read_all started after the append of seq {must_see} returned, but its head is {head}"
        );
        assert!(
            head >= last_head,
            "head went backwards: {last_head} then {head}"
        );
        last_head = head;
        let want = (head - last).min(max as u64) as usize;
        assert_eq!(
            slice.events.len(),
            want,
            "read_all(from {from}, max {max}) with head {head} after {last} seen returned {} events: not a contiguous prefix",
            slice.events.len()
        );
        for (i, e) in slice.events.iter().enumerate() {
            let seq = last + 1 + i as u64;
            assert_eq!(e.sequence_number.0, seq, "gap or disorder in the tail");
            assert!(
                e.recorded_at() >= last_at,
                "recorded_at fell at seq {seq}: {} after {}",
                e.recorded_at(),
                last_at
            );
            last_at = e.recorded_at();
            let v = versions.entry(e.aggregate_id().to_owned()).or_insert(0);
            assert_eq!(
                e.version().0,
                *v + 1,
                "seq {seq}: {} version {} follows version {} in sequence order",
                e.aggregate_id(),
                e.version(),
                v
            );
            *v += 1;
            assert!(
                ids.insert(e.id()),
                "event id {} seen twice (again at seq {seq})",
                e.id()
            );
            seen.push(Seen {
                aggregate: e.aggregate_id().to_owned(),
                version: e.version().0,
                id: e.id(),
                recorded_at: e.recorded_at(),
            });
        }
        // Now and then re-read an older window: events never change.
        if !seen.is_empty() && rng.percent(5) {
            let from = 1 + rng.below(seen.len() as u64);
            let again = store.read_all(SequenceNumber(from), 50);
            for e in again
                .events
                .iter()
                .filter(|e| e.sequence_number.0 <= seen.len() as u64)
            {
                let s = &seen[e.sequence_number.0 as usize - 1];
                assert_eq!(
                    (e.aggregate_id(), e.version().0, e.id()),
                    (s.aggregate.as_str(), s.version, s.id)
                );
            }
        }
        if done && seen.len() as u64 == head {
            break;
        }
        if slice.events.is_empty() {
            std::thread::yield_now();
        }
    }
    assert!(reads > 1);
    seen
}

/// Tails every hot aggregate with `read_stream`.
fn stream_tailer(shared: &Shared, seed: u64) {
    let store = &shared.store;
    let mut rng = seeded(seed ^ 0x57ea);
    let k = shared.aggregates.len();
    let mut versions = vec![0u64; k];
    let mut last_seq = vec![0u64; k];
    loop {
        let done = shared.writers_done.load(Ordering::SeqCst) == WRITERS;
        let a = rng.below(k as u64) as usize;
        let aggregate = &shared.aggregates[a];
        let must_see = shared.acked_version[a].load(Ordering::SeqCst);
        let max = 1 + rng.below(200) as usize;
        let from = versions[a] + 1;
        let slice = store.read_stream(aggregate, Version(from), max);
        let v = slice.version.0;
        assert!(
            v >= must_see,
            "read_stream({aggregate}) after version {must_see} was acknowledged says version {v}"
        );
        assert!(v >= versions[a], "version of {aggregate} went backwards");
        let want = (v - versions[a]).min(max as u64) as usize;
        assert_eq!(
            slice.events.len(),
            want,
            "read_stream({aggregate}, from {from}, max {max}) at version {v}"
        );
        for (i, e) in slice.events.iter().enumerate() {
            assert_eq!(e.version().0, from + i as u64);
            assert_eq!(e.aggregate_id(), aggregate);
            assert!(
                e.sequence_number.0 > last_seq[a],
                "{aggregate}: version {} has seq {}, not above the previous version's {}",
                e.version(),
                e.sequence_number,
                last_seq[a]
            );
            last_seq[a] = e.sequence_number.0;
        }
        versions[a] += want as u64;
        if done && (0..k).all(|a| versions[a] == store.version(&shared.aggregates[a]).0) {
            break;
        }
        if want == 0 {
            std::thread::yield_now();
        }
    }
}

fn run_mixed(hot: usize, seed: u64) {
    let ops = scaled(8_000, 80_000);
    let progress = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Shared {
        store: EventStore::new(),
        aggregates: (0..hot).map(|i| format!("hot-{i}")).collect(),
        acked_head: AtomicU64::new(0),
        acked_version: (0..hot).map(|_| AtomicU64::new(0)).collect(),
        writers_done: AtomicUsize::new(0),
        progress: Arc::clone(&progress),
        start: SpinBarrier::new(WRITERS),
    });
    let started = Instant::now();
    let s = Arc::clone(&shared);
    let (logs, tail) = with_watchdog(progress, STALL, move || {
        std::thread::scope(|scope| {
            let tail = scope.spawn(|| log_tailer(&s, seed));
            let streams = scope.spawn(|| stream_tailer(&s, seed));
            let writers: Vec<_> = (0..WRITERS as u64)
                .map(|t| {
                    let s = &s;
                    scope.spawn(move || writer(s, t, ops, seed))
                })
                .collect();
            let logs: Vec<WriterLog> = writers.into_iter().map(|h| h.join().unwrap()).collect();
            streams.join().unwrap();
            (logs, tail.join().unwrap())
        })
    });
    let store = &shared.store;

    // ---- Invariants 1 and 4: head = acknowledged events, each one present
    // exactly as acknowledged, every sequence number used exactly once.
    let acks: Vec<&Ack> = logs.iter().flat_map(|l| &l.acks).collect();
    let total: u64 = acks.iter().map(|a| a.seqs.len() as u64).sum();
    let head = store.head().0;
    assert_eq!(head, total, "head is not the number of acknowledged events");
    let all = store.read_all(SequenceNumber(0), usize::MAX);
    assert_eq!(all.head.0, head);
    assert_eq!(all.events.len() as u64, head);
    let mut owner: Vec<Option<(usize, usize)>> = vec![None; head as usize];
    for (k, ack) in acks.iter().enumerate() {
        let first_version = ack.version + 1 - ack.seqs.len() as u64;
        for (i, &seq) in ack.seqs.iter().enumerate() {
            assert!(
                (1..=head).contains(&seq),
                "acknowledged seq {seq} beyond head {head}"
            );
            let slot = &mut owner[seq as usize - 1];
            assert!(slot.is_none(), "seq {seq} acknowledged twice");
            *slot = Some((k, i));
            let e = &all.events[seq as usize - 1];
            assert_eq!(e.sequence_number.0, seq);
            assert_eq!(e.aggregate_id(), ack.aggregate, "seq {seq}");
            assert_eq!(e.version().0, first_version + i as u64, "seq {seq}");
            assert_eq!(e.id(), ack.ids[i], "seq {seq}");
            assert_eq!(e.event_type(), ack.types[i], "seq {seq}");
            assert_eq!(e.data(), ack.data[i], "seq {seq}");
            assert_eq!(e.metadata(), ack.metadata[i].as_deref(), "seq {seq}");
        }
        if let ExpectedVersion::Exact(v) = ack.expected {
            assert_eq!(first_version, v.0 + 1);
        }
    }
    assert!(
        owner.iter().all(Option::is_some),
        "an event in the log that nobody acknowledged"
    );

    // recorded_at never decreases, ids are unique, the tail saw the same log.
    let mut ids = HashSet::new();
    for w in all.events.windows(2) {
        assert!(
            w[0].recorded_at() <= w[1].recorded_at(),
            "recorded_at fell at seq {}",
            w[1].sequence_number
        );
    }
    for e in &all.events {
        assert!(ids.insert(e.id()), "duplicate event id {}", e.id());
    }
    assert_eq!(
        tail.len() as u64,
        head,
        "the tailer did not see the whole log"
    );
    for (i, (s, e)) in tail.iter().zip(&all.events).enumerate() {
        let now = Seen {
            aggregate: e.aggregate_id().to_owned(),
            version: e.version().0,
            id: e.id(),
            recorded_at: e.recorded_at(),
        };
        assert_eq!(*s, now, "event {} changed after the tailer read it", i + 1);
    }

    // ---- Invariant 2: each aggregate's versions are 1..n with rising seqs.
    let mut by_aggregate: HashMap<&str, u64> = HashMap::new();
    for ack in &acks {
        *by_aggregate.entry(&ack.aggregate).or_default() += ack.seqs.len() as u64;
    }
    let mut covered = 0u64;
    for aggregate in &shared.aggregates {
        let n = store.version(aggregate).0;
        assert_eq!(
            n,
            by_aggregate.get(aggregate.as_str()).copied().unwrap_or(0),
            "{aggregate}: version vs acknowledged"
        );
        let seqs = store.stream_sequence_numbers(aggregate);
        assert_eq!(seqs.len() as u64, n);
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{aggregate}: sequence numbers do not rise with versions"
        );
        let stream = store.read_stream(aggregate, Version(0), usize::MAX);
        assert_eq!(stream.version.0, n);
        assert_eq!(stream.events.len() as u64, n);
        for (i, e) in stream.events.iter().enumerate() {
            assert_eq!(e.version().0, i as u64 + 1);
            assert_eq!(e.sequence_number, seqs[i]);
            assert_eq!(e.aggregate_id(), aggregate);
        }
        let in_log: Vec<SequenceNumber> = all
            .events
            .iter()
            .filter(|e| e.aggregate_id() == aggregate)
            .map(|e| e.sequence_number)
            .collect();
        assert_eq!(in_log, seqs, "{aggregate}: the log and the stream disagree");
        covered += n;
    }
    assert_eq!(covered, head);

    // ---- Invariant 4, second half: each concurrency error was legitimate.
    for c in logs.iter().flat_map(|l| &l.conflicts) {
        let seqs = store.stream_sequence_numbers(&c.aggregate);
        assert!(
            c.current > c.seen && c.current <= seqs.len() as u64,
            "{c:?}"
        );
        assert!(c.version_after >= c.current, "{c:?}");
        // The event that took the aggregate to `current` was already published
        // when the error was returned.
        let seq = seqs[c.current as usize - 1].0;
        assert!(
            seq <= c.head_after,
            "{c:?}: version {} is seq {seq}, after the head read after the error",
            c.current
        );
    }

    let conflicts: usize = logs.iter().map(|l| l.conflicts.len()).sum();
    let any: usize = logs.iter().map(|l| l.any_appends).sum();
    let exact: usize = logs.iter().map(|l| l.exact_appends).sum();
    eprintln!(
        "{hot} hot aggregate(s): {total} events in {} appends ({exact} exact, {any} any), {conflicts} concurrency errors, {:?}",
        acks.len(),
        started.elapsed()
    );
    if hot == 1 {
        assert!(
            conflicts > 0,
            "no contention at all: the test is not exercising what it should"
        );
    }
}

#[test]
fn mixed_writers_on_one_hot_aggregate() {
    let _machine = whole_machine();
    run_mixed(1, 0x1111);
}

#[test]
fn mixed_writers_on_two_hot_aggregates() {
    let _machine = whole_machine();
    run_mixed(2, 0x2222);
}

#[test]
fn mixed_writers_on_four_hot_aggregates() {
    let _machine = whole_machine();
    run_mixed(4, 0x4444);
}

// ---------------------------------------------------------------------------
// Idempotent retries racing across threads.

struct Batch {
    aggregate: String,
    ids: Vec<EventId>,
    data: Vec<Box<RawValue>>,
}

impl Batch {
    fn events(&self) -> Vec<NewEvent<'_>> {
        self.ids
            .iter()
            .zip(&self.data)
            .map(|(&id, d)| NewEvent::new("Retried", d).with_id(id))
            .collect()
    }
}

/// Every batch is submitted by every thread, in the same order, so each one
/// races against its copies: exactly one submission appends, the others get
/// `duplicate: true` with the same positions and version.
#[test]
fn racing_retries_of_the_same_batch_append_once() {
    let _machine = whole_machine();
    const THREADS: usize = 8;
    let batches = scaled(1_000, 10_000);
    let mut rng = seeded(0xba7c4);
    let aggregates = ["r-0", "r-1", "r-2"];
    let batches: Arc<Vec<Batch>> = Arc::new(
        (0..batches as u64)
            .map(|b| {
                let n = if rng.percent(40) {
                    1
                } else {
                    2 + rng.below(5) as usize
                };
                Batch {
                    aggregate: aggregates[rng.below(3) as usize].to_owned(),
                    ids: (0..n as u64).map(|i| client_id(7, 1, b * 16 + i)).collect(),
                    data: (0..n)
                        .map(|i| raw(&format!(r#"{{"b":{b},"i":{i}}}"#)))
                        .collect(),
                }
            })
            .collect(),
    );
    let store = Arc::new(EventStore::new());
    let progress = Arc::new(AtomicU64::new(0));
    let (st, bs, pr) = (
        Arc::clone(&store),
        Arc::clone(&batches),
        Arc::clone(&progress),
    );
    // All threads submit each batch at once: a barrier before every batch.
    let barrier = SpinBarrier::new(THREADS);
    // results[thread][batch]
    let results = with_watchdog(progress, STALL, move || {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS as u64)
                .map(|t| {
                    let (store, batches, progress, barrier) = (&st, &bs, &pr, &barrier);
                    scope.spawn(move || {
                        let _member = barrier.join();
                        let mut rng = seeded(t);
                        let mut out = Vec::with_capacity(batches.len());
                        for batch in batches.iter() {
                            let events = batch.events();
                            barrier.wait();
                            let mut expected = match rng.below(3) {
                                0 => ExpectedVersion::Any,
                                // Exact at what it reads now: often stale by the
                                // time it is checked, which must not matter for a
                                // retry (ids are checked before the version).
                                _ => ExpectedVersion::Exact(store.version(&batch.aggregate)),
                            };
                            let done = loop {
                                match store.append(&batch.aggregate, expected, &events) {
                                    Ok(done) => break done,
                                    Err(AppendError::Concurrency(e)) => {
                                        // Legitimate only if nobody stored this batch yet.
                                        expected = ExpectedVersion::Exact(e.current);
                                    }
                                    Err(other) => panic!("thread {t}: {other}"),
                                }
                            };
                            progress.fetch_add(1, Ordering::Relaxed);
                            out.push(done);
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    });

    let mut total = 0u64;
    let mut used = HashSet::new();
    for (b, batch) in batches.iter().enumerate() {
        let fresh: Vec<usize> = (0..THREADS).filter(|&t| !results[t][b].duplicate).collect();
        assert_eq!(
            fresh.len(),
            1,
            "batch {b}: {} submissions appended (threads {fresh:?})",
            fresh.len()
        );
        let winner = &results[fresh[0]][b];
        let seqs: Vec<SequenceNumber> = winner.positions.iter().collect();
        assert_eq!(seqs.len(), batch.ids.len());
        for (t, thread_results) in results.iter().enumerate() {
            let r = &thread_results[b];
            assert_eq!(
                r.positions.iter().collect::<Vec<_>>(),
                seqs,
                "batch {b}, thread {t}: positions differ"
            );
            assert_eq!(
                r.version, winner.version,
                "batch {b}, thread {t}: version differs"
            );
        }
        for (i, (&seq, &id)) in seqs.iter().zip(&batch.ids).enumerate() {
            let e = store.event(seq).expect("acknowledged event");
            assert_eq!(e.id(), id);
            assert_eq!(e.aggregate_id(), batch.aggregate);
            assert_eq!(
                e.version().0,
                winner.version.0 + 1 - seqs.len() as u64 + i as u64
            );
            assert!(used.insert(seq.0), "seq {seq} given to two batches");
        }
        total += seqs.len() as u64;
    }
    assert_eq!(store.head().0, total, "head vs events of all batches");
    assert_eq!(used.len() as u64, total);

    // Later retries, sequentially: whatever the expected version, the same
    // answer; a retry of the batch's tail from its first event too.
    for (b, batch) in batches.iter().enumerate().step_by(7) {
        let want: Vec<SequenceNumber> = results[0][b].positions.iter().collect();
        let events = batch.events();
        for expected in [
            ExpectedVersion::Any,
            ExpectedVersion::Exact(Version(0)),
            ExpectedVersion::Exact(Version(u64::MAX)),
        ] {
            let again = store.append(&batch.aggregate, expected, &events).unwrap();
            assert!(again.duplicate);
            assert_eq!(again.positions.iter().collect::<Vec<_>>(), want);
            assert_eq!(again.version, results[0][b].version);
        }
        let single = store
            .append(&batch.aggregate, ExpectedVersion::Any, &events[..1])
            .unwrap();
        assert!(single.duplicate);
        assert_eq!(single.positions.iter().collect::<Vec<_>>(), want[..1]);
        let other = aggregates.iter().find(|&&a| a != batch.aggregate).unwrap();
        match store.append(other, ExpectedVersion::Any, &events) {
            Err(AppendError::IdConflict(IdConflict::AlreadyStored {
                id, aggregate_id, ..
            })) => {
                assert_eq!(id, batch.ids[0]);
                assert_eq!(aggregate_id, batch.aggregate);
            }
            other => panic!("batch {b} resubmitted to {other:?}"),
        }
    }
    assert_eq!(
        store.head().0,
        total,
        "a recognised retry appended something"
    );
}

/// The same client ids submitted to different aggregates by racing threads:
/// one append stores them, every other submission is a duplicate (same
/// aggregate) or an id conflict naming where the id is (other aggregate).
#[test]
fn racing_client_ids_across_aggregates_are_stored_once() {
    let _machine = whole_machine();
    // One thread per aggregate; few threads, so that on two cores the
    // submissions of a round really do overlap.
    const THREADS: u64 = 4;
    let rounds = scaled(1_000, 10_000) as u64;
    let store = Arc::new(EventStore::new());
    let progress = Arc::new(AtomicU64::new(0));
    let (st, pr) = (Arc::clone(&store), Arc::clone(&progress));
    let barrier = SpinBarrier::new(THREADS as usize);
    let outcomes = with_watchdog(progress, STALL, move || {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (store, progress, barrier) = (&st, &pr, &barrier);
                    scope.spawn(move || {
                        let _member = barrier.join();
                        let data = raw(&format!(r#"{{"thread":{t}}}"#));
                        let aggregate = format!("x-{t}");
                        let mut out = Vec::new();
                        for r in 0..rounds {
                            // Round r: one event, two, or a large batch (a wide
                            // window between checking the ids and indexing them),
                            // with ids shared by all threads.
                            let n = match r % 4 {
                                0 => 1,
                                1 => 2,
                                _ => 16 + (r * 7919) % 100,
                            };
                            let events: Vec<NewEvent<'_>> = (0..n)
                                .map(|i| {
                                    NewEvent::new("Raced", &data).with_id(client_id(
                                        9,
                                        2,
                                        r * 1024 + i,
                                    ))
                                })
                                .collect();
                            barrier.wait();
                            let result = store.append(&aggregate, ExpectedVersion::Any, &events);
                            progress.fetch_add(1, Ordering::Relaxed);
                            out.push((aggregate.clone(), result));
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    });

    let mut total = 0u64;
    for r in 0..rounds as usize {
        let results: Vec<&(String, Result<_, _>)> = outcomes.iter().map(|o| &o[r]).collect();
        let winners: Vec<_> = results
            .iter()
            .filter_map(|(a, res)| match res {
                Ok(done) if !done.duplicate => Some((a.clone(), done.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {r}: {} appends stored the same ids: {winners:?}",
            winners.len()
        );
        let (home, won) = &winners[0];
        let seqs: Vec<SequenceNumber> = won.positions.iter().collect();
        total += seqs.len() as u64;
        let first_id = store.event(seqs[0]).unwrap().id();
        for (aggregate, res) in &results {
            match res {
                Ok(done) => {
                    assert_eq!(
                        aggregate, home,
                        "round {r}: appended to {aggregate} and {home}"
                    );
                    assert_eq!(done.positions.iter().collect::<Vec<_>>(), seqs);
                    assert_eq!(done.version, won.version);
                }
                Err(AppendError::IdConflict(IdConflict::AlreadyStored {
                    id,
                    aggregate_id,
                    version,
                })) => {
                    assert_ne!(aggregate, home);
                    assert_eq!(*id, first_id, "round {r}");
                    assert_eq!(aggregate_id, home, "round {r}");
                    assert_eq!(version.0, won.version.0 + 1 - seqs.len() as u64);
                }
                Err(other) => panic!("round {r}: {other}"),
            }
        }
    }
    assert_eq!(store.head().0, total);
    let all = store.read_all(SequenceNumber(1), usize::MAX);
    let ids: HashSet<EventId> = all.events.iter().map(|e| e.id()).collect();
    assert_eq!(ids.len() as u64, total, "an id is stored twice");
}

//! Linearizability of the engine's appends and reads.
//!
//! Threads append to one to three aggregates and read the global log, the
//! aggregates and the head, recording each call's invocation and response
//! time on a global logical clock (an `AtomicU64` incremented at invoke and
//! at response: `a.resp < b.inv` means `a` returned before `b` was called).
//! A checker then decides whether one sequential order of all the calls
//! exists that respects real time and explains every reply.
//!
//! In the sequential model every successful append takes the next sequence
//! numbers, so the order of the appends is forced: their sequence-number
//! order. The checker verifies, in that order:
//!
//! - density: the appends' sequence numbers partition `1..=head`, each batch
//!   consecutive (a rejected append takes none);
//! - (a) real time: if append A responded before append B was invoked, A's
//!   sequence numbers are below B's;
//! - (b) versions: per aggregate, each append starts at the version the
//!   previous one (in sequence order) ended at, plus one; an exact-version
//!   append starts right after the version it expected;
//! - (c) each concurrency error's "current" version is the aggregate's
//!   version at some point inside the call's invocation–response interval;
//! - (d) each read (`read_all`, `read_stream`, `version`, `head`) observes
//!   exactly the state after some prefix of the appends, a prefix that
//!   includes every append that responded before the read was invoked and no
//!   append invoked after the read responded, with the events that state has;
//! - and all those observation points together respect real time among
//!   themselves (a later read never sees an older state), found greedily.
//!
//! The checker's own tests at the bottom feed it broken histories.

use eventstore::{AppendError, EventStore, ExpectedVersion, NewEvent, SequenceNumber, Version};
use serde_json::value::RawValue;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers.

mod support;
use support::{Rng, soak, whole_machine};

fn seeded(seed: u64) -> Rng {
    Rng::new(seed ^ 0x2545_f491_4f6c_dd1d)
}

// ---------------------------------------------------------------------------
// Histories.

/// An event as a read returned it.
#[derive(Clone, Debug, PartialEq)]
struct Obs {
    seq: u64,
    agg: usize,
    version: u64,
    /// The event's data text (unique per event written).
    tag: String,
}

#[derive(Clone, Debug)]
enum AppendResult {
    Ok { seqs: Vec<u64>, version: u64 },
    Conflict { expected: u64, current: u64 },
}

#[derive(Clone, Debug)]
enum Call {
    Append {
        agg: usize,
        /// `None` for `ExpectedVersion::Any`.
        expected: Option<u64>,
        tags: Vec<String>,
        result: AppendResult,
    },
    ReadAll {
        from: u64,
        max: usize,
        head: u64,
        events: Vec<Obs>,
    },
    ReadStream {
        agg: usize,
        from: u64,
        max: usize,
        version: u64,
        events: Vec<Obs>,
    },
    Version {
        agg: usize,
        version: u64,
    },
    Head {
        head: u64,
    },
}

#[derive(Clone, Debug)]
struct Op {
    /// Shown in failure messages only.
    #[allow(dead_code)]
    thread: usize,
    inv: u64,
    resp: u64,
    call: Call,
}

// ---------------------------------------------------------------------------
// The checker.

/// What a passing history contained (to assert the run exercised something).
#[derive(Debug, Default)]
struct Summary {
    appends: usize,
    events: u64,
    conflicts: usize,
    observations: usize,
    /// Appends whose interval overlapped another append's.
    overlapping_appends: usize,
    /// Observations that could be placed at more than one state, i.e. ran
    /// concurrently with at least one append.
    concurrent_observations: usize,
}

fn check_history(history: &[Op], aggs: usize, final_head: u64) -> Result<Summary, String> {
    let mut summary = Summary::default();
    for op in history {
        if op.inv >= op.resp {
            return Err(format!(
                "malformed op (inv {} ≥ resp {}): {op:?}",
                op.inv, op.resp
            ));
        }
    }

    // The successful appends, in sequence order: the only possible order.
    // (op, sequence numbers, version after, aggregate, expected version, tags)
    type AppendRow<'h> = (&'h Op, &'h [u64], u64, usize, Option<u64>, &'h [String]);
    let mut appends: Vec<AppendRow<'_>> = history
        .iter()
        .filter_map(|op| match &op.call {
            Call::Append {
                agg,
                expected,
                tags,
                result: AppendResult::Ok { seqs, version },
            } => Some((op, &seqs[..], *version, *agg, *expected, &tags[..])),
            _ => None,
        })
        .collect();
    for (op, seqs, ..) in &appends {
        if seqs.is_empty() {
            return Err(format!("append acknowledged with no positions: {op:?}"));
        }
    }
    appends.sort_by_key(|a| a.1[0]);
    summary.appends = appends.len();

    // Density: consecutive within a batch, batches back to back from 1.
    let mut next = 1u64;
    for (op, seqs, ..) in &appends {
        let want: Vec<u64> = (next..next + seqs.len() as u64).collect();
        if **seqs != want[..] {
            return Err(format!(
                "sequence numbers not dense: after {} the next append got {seqs:?} (op {op:?})",
                next - 1
            ));
        }
        next += seqs.len() as u64;
    }
    let head = next - 1;
    if head != final_head {
        return Err(format!(
            "the store's final head is {final_head} but acknowledged appends account for {head}: \
             a rejected append took sequence numbers, or an acknowledged one is missing"
        ));
    }
    summary.events = head;

    // (a) Real time: no append with a larger seq responded before an append
    // with a smaller seq was invoked.
    let n = appends.len();
    let mut suffix_min_resp = vec![u64::MAX; n + 1];
    for k in (0..n).rev() {
        suffix_min_resp[k] = suffix_min_resp[k + 1].min(appends[k].0.resp);
    }
    for k in 0..n {
        let b = appends[k].0;
        if suffix_min_resp[k + 1] < b.inv {
            let a = appends[k + 1..]
                .iter()
                .find(|x| x.0.resp < b.inv)
                .unwrap()
                .0;
            return Err(format!(
                "real-time order violated: append {a:?} responded (t={}) before append {b:?} was invoked (t={}), \
                 yet got larger sequence numbers",
                a.resp, b.inv
            ));
        }
    }
    // Overlap statistic: intervals sorted by inv.
    {
        let mut iv: Vec<(u64, u64)> = appends.iter().map(|a| (a.0.inv, a.0.resp)).collect();
        iv.sort();
        let mut max_resp = 0;
        for (inv, resp) in iv {
            if inv < max_resp {
                summary.overlapping_appends += 1;
            }
            max_resp = max_resp.max(resp);
        }
    }

    // (b) Versions along each aggregate, in sequence order; and the states
    // after each prefix of the appends.
    let mut version = vec![0u64; aggs];
    // version_at[agg][p]: the aggregate's version after the first p appends.
    let mut version_at: Vec<Vec<u64>> = vec![vec![0]; aggs];
    // head_at[p]: the head after the first p appends.
    let mut head_at = vec![0u64];
    // By seq - 1: (aggregate, version, tag).
    let mut by_seq: Vec<(usize, u64, &str)> = Vec::with_capacity(head as usize);
    // By aggregate, by version - 1: seq.
    let mut stream_seqs: Vec<Vec<u64>> = vec![Vec::new(); aggs];
    for (op, seqs, new_version, agg, expected, tags) in &appends {
        let agg = *agg;
        if agg >= aggs || tags.len() != seqs.len() {
            return Err(format!("malformed append {op:?}"));
        }
        if let Some(v) = expected
            && *v != version[agg]
        {
            return Err(format!(
                "exact append expecting version {v} succeeded but, in sequence order, aggregate {agg} was at {} (op {op:?})",
                version[agg]
            ));
        }
        let want = version[agg] + seqs.len() as u64;
        if *new_version != want {
            return Err(format!(
                "append returned version {new_version} but in sequence order aggregate {agg} goes from {} to {want} (op {op:?})",
                version[agg]
            ));
        }
        for (i, (&seq, tag)) in seqs.iter().zip(tags.iter()).enumerate() {
            by_seq.push((agg, version[agg] + 1 + i as u64, tag));
            stream_seqs[agg].push(seq);
        }
        version[agg] = want;
        for (a, v) in version_at.iter_mut().enumerate() {
            v.push(version[a]);
        }
        head_at.push(seqs[seqs.len() - 1]);
    }

    // (c), (d): each observation's possible points, then a joint choice.
    struct Obsn<'h> {
        op: &'h Op,
        lo: usize,
        hi: usize,
    }
    let mut observations: Vec<Obsn<'_>> = Vec::new();
    let event_matches = |o: &Obs| -> bool {
        o.seq >= 1
            && o.seq <= head
            && by_seq[o.seq as usize - 1] == (o.agg, o.version, o.tag.as_str())
    };
    // Positions p (0..=n) whose state has the aggregate at version v.
    let version_range = |agg: usize, v: u64| -> Option<(usize, usize)> {
        let at = &version_at[agg];
        let start = at.partition_point(|&x| x < v);
        let end = at.partition_point(|&x| x <= v);
        (start < end).then(|| (start, end - 1))
    };
    // by_resp: (resp, k) sorted by resp; lo_by_resp[i] = max k + 1 over the
    // first i entries. by_inv: (inv, k) sorted by inv; hi_by_inv[i] = min k
    // over entries i.. (n when none).
    let mut by_resp: Vec<(u64, usize)> = appends
        .iter()
        .enumerate()
        .map(|(k, a)| (a.0.resp, k))
        .collect();
    by_resp.sort();
    let mut lo_by_resp = vec![0usize; n + 1];
    for (i, &(_, k)) in by_resp.iter().enumerate() {
        lo_by_resp[i + 1] = lo_by_resp[i].max(k + 1);
    }
    let mut by_inv: Vec<(u64, usize)> = appends
        .iter()
        .enumerate()
        .map(|(k, a)| (a.0.inv, k))
        .collect();
    by_inv.sort();
    let mut hi_by_inv = vec![n; n + 1];
    for i in (0..n).rev() {
        hi_by_inv[i] = hi_by_inv[i + 1].min(by_inv[i].1);
    }
    for op in history {
        let (vlo, vhi) = match &op.call {
            Call::Append {
                result: AppendResult::Ok { .. },
                ..
            } => continue,
            Call::Append {
                agg,
                expected,
                result:
                    AppendResult::Conflict {
                        expected: echoed,
                        current,
                    },
                ..
            } => {
                let agg = *agg;
                if agg >= aggs {
                    return Err(format!("malformed op {op:?}"));
                }
                match expected {
                    None => return Err(format!("an `Any` append got a concurrency error: {op:?}")),
                    Some(e) if e != echoed => {
                        return Err(format!(
                            "concurrency error echoes another expected version: {op:?}"
                        ));
                    }
                    Some(e) if e == current => {
                        return Err(format!(
                            "concurrency error although the current version is the expected one: {op:?}"
                        ));
                    }
                    _ => {}
                }
                summary.conflicts += 1;
                version_range(agg, *current).ok_or_else(|| {
                    format!("concurrency error says aggregate {agg} is at {current}, a version it never had: {op:?}")
                })?
            }
            Call::ReadAll {
                from,
                max,
                head: h,
                events,
            } => {
                let p = head_at.binary_search(h).map_err(|_| {
                    format!("read_all saw head {h}, which is no state of the log (not a batch boundary, or never reached): {op:?}")
                })?;
                let from = (*from).max(1);
                let to = from.saturating_add(*max as u64).saturating_sub(1).min(*h);
                let want = (to + 1).saturating_sub(from);
                if events.len() as u64 != want {
                    return Err(format!(
                        "read_all(from {from}, max {max}) at head {h} returned {} events, want {want}: {op:?}",
                        events.len()
                    ));
                }
                for (i, e) in events.iter().enumerate() {
                    if e.seq != from + i as u64 || !event_matches(e) {
                        return Err(format!(
                            "read_all returned a wrong event {e:?} at index {i}: {op:?}"
                        ));
                    }
                }
                (p, p)
            }
            Call::Head { head: h } => {
                let p = head_at.binary_search(h).map_err(|_| {
                    format!("head() returned {h}, which is no state of the log: {op:?}")
                })?;
                (p, p)
            }
            Call::ReadStream {
                agg,
                from,
                max,
                version: v,
                events,
            } => {
                let agg = *agg;
                if agg >= aggs {
                    return Err(format!("malformed op {op:?}"));
                }
                let range = version_range(agg, *v)
                    .ok_or_else(|| format!("read_stream saw aggregate {agg} at version {v}, a version it never had: {op:?}"))?;
                let from = (*from).max(1);
                let to = from.saturating_add(*max as u64).saturating_sub(1).min(*v);
                let want = (to + 1).saturating_sub(from);
                if events.len() as u64 != want {
                    return Err(format!(
                        "read_stream(from {from}, max {max}) at version {v} returned {} events, want {want}: {op:?}",
                        events.len()
                    ));
                }
                for (i, e) in events.iter().enumerate() {
                    let version = from + i as u64;
                    let ok = e.agg == agg
                        && e.version == version
                        && stream_seqs[agg].get(version as usize - 1) == Some(&e.seq)
                        && event_matches(e);
                    if !ok {
                        return Err(format!(
                            "read_stream returned a wrong event {e:?} at index {i}: {op:?}"
                        ));
                    }
                }
                range
            }
            Call::Version { agg, version: v } => {
                let agg = *agg;
                if agg >= aggs {
                    return Err(format!("malformed op {op:?}"));
                }
                version_range(agg, *v).ok_or_else(|| {
                    format!("version() saw aggregate {agg} at {v}, a version it never had: {op:?}")
                })?
            }
        };
        // Real time against the appends: after every append that responded
        // before this call was invoked, before every one invoked after it
        // responded.
        let lo = lo_by_resp[by_resp.partition_point(|&(resp, _)| resp < op.inv)];
        let hi = hi_by_inv[by_inv.partition_point(|&(inv, _)| inv <= op.resp)];
        if lo < hi {
            summary.concurrent_observations += 1;
        }
        let (flo, fhi) = (lo.max(vlo), hi.min(vhi));
        if flo > fhi {
            let why = if vhi < lo {
                let a = appends[lo - 1].0;
                format!(
                    "it observed the state before append {a:?}, which had responded (t={}) before this call was invoked",
                    a.resp
                )
            } else {
                let a = appends[hi].0;
                format!(
                    "it observed the state after append {a:?}, which was invoked (t={}) after this call responded",
                    a.inv
                )
            };
            return Err(format!("not linearizable: {op:?}: {why}"));
        }
        observations.push(Obsn {
            op,
            lo: flo,
            hi: fhi,
        });
    }
    summary.observations = observations.len();

    // Joint placement: in invocation order, each at the earliest point that
    // is not before any observation that responded before it was invoked.
    observations.sort_by_key(|o| o.op.inv);
    let mut done: BinaryHeap<Reverse<(u64, usize, usize)>> = BinaryHeap::new();
    let mut floor = 0usize;
    let mut floor_by: Option<&Op> = None;
    for (i, o) in observations.iter().enumerate() {
        while let Some(&Reverse((resp, p, j))) = done.peek() {
            if resp >= o.op.inv {
                break;
            }
            done.pop();
            if p > floor || floor_by.is_none() {
                floor = floor.max(p);
                floor_by = Some(observations[j].op);
            }
        }
        let p = o.lo.max(floor);
        if p > o.hi {
            return Err(format!(
                "not linearizable: {:?} can only be placed at or before state {} (after {} appends), but {:?}, \
                 which responded before it was invoked, observed state {floor}: a later read saw an older state",
                o.op,
                o.hi,
                o.hi,
                floor_by.unwrap()
            ));
        }
        done.push(Reverse((o.op.resp, p, i)));
    }
    Ok(summary)
}

// ---------------------------------------------------------------------------
// Recording a concurrent run.

struct Config {
    threads: usize,
    aggregates: usize,
    ops_per_thread: usize,
    /// Percent of appends that are batches of 2–4.
    batch_percent: u64,
    seed: u64,
}

fn record(cfg: &Config) -> (Vec<Op>, u64) {
    let store = Arc::new(EventStore::new());
    let clock = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(AtomicUsize::new(0));
    let names: Arc<Vec<String>> =
        Arc::new((0..cfg.aggregates).map(|a| format!("lin-{a}")).collect());
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    // All threads start together, or in a release build the first ones may
    // be done before the last ones start.
    let start = Arc::new(Barrier::new(cfg.threads));
    for t in 0..cfg.threads {
        let (store, clock, progress, names, tx, start) = (
            Arc::clone(&store),
            Arc::clone(&clock),
            Arc::clone(&progress),
            Arc::clone(&names),
            tx.clone(),
            Arc::clone(&start),
        );
        let (ops, aggs, batch_percent, seed) = (
            cfg.ops_per_thread,
            cfg.aggregates,
            cfg.batch_percent,
            cfg.seed,
        );
        handles.push(std::thread::spawn(move || {
            let mut rng = seeded(seed ^ ((t as u64 + 1) << 32));
            let tick = || clock.fetch_add(1, Ordering::SeqCst) + 1;
            let index = |name: &str| names.iter().position(|n| n == name).unwrap_or(usize::MAX);
            let obs = |e: &eventstore::RecordedEvent<'_>| Obs {
                seq: e.sequence_number.0,
                agg: index(e.aggregate_id()),
                version: e.version().0,
                tag: e.data().to_owned(),
            };
            let mut cached_version = vec![0u64; aggs];
            let mut cached_head = 0u64;
            let mut out = Vec::with_capacity(ops);
            start.wait();
            for n in 0..ops {
                let agg = rng.below(aggs as u64) as usize;
                let name = &names[agg];
                let roll = rng.below(100);
                let (inv, call, resp);
                if roll < 60 {
                    let count = if rng.percent(2) {
                        // A large batch: a long stretch between its ticket
                        // and its publication, for others to run into.
                        20 + rng.below(60) as usize
                    } else if rng.percent(batch_percent) {
                        2 + rng.below(3) as usize
                    } else {
                        1
                    };
                    let tags: Vec<String> = (0..count)
                        .map(|i| format!(r#"{{"t":{t},"n":{n},"i":{i}}}"#))
                        .collect();
                    let raws: Vec<Box<RawValue>> = tags
                        .iter()
                        .map(|s| RawValue::from_string(s.clone()).unwrap())
                        .collect();
                    let events: Vec<NewEvent<'_>> =
                        raws.iter().map(|r| NewEvent::new("Lin", r)).collect();
                    let expected = match rng.below(3) {
                        0 => None,
                        _ => Some(cached_version[agg]),
                    };
                    let ev = expected
                        .map_or(ExpectedVersion::Any, |v| ExpectedVersion::Exact(Version(v)));
                    inv = tick();
                    let result = store.append(name, ev, &events);
                    resp = tick();
                    let result = match result {
                        Ok(done) => {
                            assert!(!done.duplicate);
                            cached_version[agg] = done.version.0;
                            AppendResult::Ok {
                                seqs: done.positions.iter().map(|s| s.0).collect(),
                                version: done.version.0,
                            }
                        }
                        Err(AppendError::Concurrency(e)) => {
                            cached_version[agg] = e.current.0;
                            AppendResult::Conflict {
                                expected: e.expected.0,
                                current: e.current.0,
                            }
                        }
                        Err(other) => panic!("unexpected append error: {other}"),
                    };
                    progress.fetch_add(1, Ordering::Relaxed);
                    call = Call::Append {
                        agg,
                        expected,
                        tags,
                        result,
                    };
                } else if roll < 77 {
                    let from = match rng.below(4) {
                        0 => 0,
                        1 => cached_head + 1,
                        _ => cached_head.saturating_sub(rng.below(5)),
                    };
                    let max = if rng.percent(20) {
                        usize::MAX
                    } else {
                        1 + rng.below(12) as usize
                    };
                    inv = tick();
                    let slice = store.read_all(SequenceNumber(from), max);
                    resp = tick();
                    cached_head = slice.head.0;
                    call = Call::ReadAll {
                        from,
                        max,
                        head: slice.head.0,
                        events: slice.events.iter().map(obs).collect(),
                    };
                } else if roll < 89 {
                    let from = cached_version[agg].saturating_sub(rng.below(4));
                    let max = if rng.percent(20) {
                        usize::MAX
                    } else {
                        1 + rng.below(8) as usize
                    };
                    inv = tick();
                    let slice = store.read_stream(name, Version(from), max);
                    resp = tick();
                    cached_version[agg] = slice.version.0;
                    call = Call::ReadStream {
                        agg,
                        from,
                        max,
                        version: slice.version.0,
                        events: slice.events.iter().map(obs).collect(),
                    };
                } else if roll < 96 {
                    inv = tick();
                    let v = store.version(name);
                    resp = tick();
                    cached_version[agg] = v.0;
                    call = Call::Version { agg, version: v.0 };
                } else {
                    inv = tick();
                    let h = store.head();
                    resp = tick();
                    cached_head = h.0;
                    call = Call::Head { head: h.0 };
                }
                out.push(Op {
                    thread: t,
                    inv,
                    resp,
                    call,
                });
            }
            let _ = tx.send(());
            out
        }));
    }
    drop(tx);
    // Watchdog: a lost ticket stalls every later writer for ever.
    let mut finished = 0;
    let mut last = progress.load(Ordering::SeqCst);
    let mut since = Instant::now();
    while finished < cfg.threads {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(()) => finished += 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = progress.load(Ordering::SeqCst);
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() > Duration::from_secs(30) {
                    panic!(
                        "no append completed for 30 s: a writer stalled (lost ticket?) or threads deadlocked"
                    );
                }
            }
        }
    }
    let mut history = Vec::new();
    for h in handles {
        match h.join() {
            Ok(ops) => history.extend(ops),
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
    let head = store.head().0;
    (history, head)
}

/// Records and checks `rounds` histories, and more (up to 20 times as many)
/// while none of them had concurrent calls: on a loaded machine threads can
/// run one after the other, and a history without overlap checks little.
fn run(cfg: Config, rounds: usize) {
    let started = Instant::now();
    let mut total = Summary::default();
    let mut round = 0;
    while round < rounds
        || (round < rounds * 20
            && (total.overlapping_appends == 0 || total.concurrent_observations == 0))
    {
        let cfg = Config {
            seed: cfg.seed.wrapping_add(round as u64 * 0x9e37),
            ..cfg
        };
        let (history, head) = record(&cfg);
        match check_history(&history, cfg.aggregates, head) {
            Ok(s) => {
                total.appends += s.appends;
                total.events += s.events;
                total.conflicts += s.conflicts;
                total.observations += s.observations;
                total.overlapping_appends += s.overlapping_appends;
                total.concurrent_observations += s.concurrent_observations;
            }
            Err(e) => panic!(
                "round {round} (seed {:#x}, {} threads, {} aggregates): {e}",
                cfg.seed, cfg.threads, cfg.aggregates
            ),
        }
        round += 1;
    }
    eprintln!("{round} rounds: {total:?} in {:?}", started.elapsed());
    assert!(
        total.overlapping_appends > 0,
        "no concurrent appends in {round} rounds: the test checked nothing"
    );
    assert!(
        total.concurrent_observations > 0,
        "no read ran concurrently with an append in {round} rounds"
    );
}

fn rounds() -> usize {
    if soak() { 200 } else { 16 }
}

#[test]
fn appends_and_reads_on_one_aggregate_are_linearizable() {
    let _machine = whole_machine();
    run(
        Config {
            threads: 6,
            aggregates: 1,
            ops_per_thread: 1_500,
            batch_percent: 20,
            seed: 0x11,
        },
        rounds(),
    );
}

#[test]
fn appends_and_reads_on_two_aggregates_are_linearizable() {
    let _machine = whole_machine();
    run(
        Config {
            threads: 8,
            aggregates: 2,
            ops_per_thread: 1_000,
            batch_percent: 30,
            seed: 0x22,
        },
        rounds(),
    );
}

#[test]
fn appends_and_reads_on_three_aggregates_are_linearizable() {
    let _machine = whole_machine();
    run(
        Config {
            threads: 4,
            aggregates: 3,
            ops_per_thread: 2_000,
            batch_percent: 40,
            seed: 0x33,
        },
        rounds(),
    );
}

// ---------------------------------------------------------------------------
// The checker's own tests: it accepts a valid history and rejects broken ones.

fn append(
    t: usize,
    inv: u64,
    resp: u64,
    agg: usize,
    expected: Option<u64>,
    seqs: &[u64],
    version: u64,
) -> Op {
    Op {
        thread: t,
        inv,
        resp,
        call: Call::Append {
            agg,
            expected,
            tags: seqs.iter().map(|s| format!("e{s}")).collect(),
            result: AppendResult::Ok {
                seqs: seqs.to_vec(),
                version,
            },
        },
    }
}

fn conflict(inv: u64, resp: u64, agg: usize, expected: u64, current: u64) -> Op {
    Op {
        thread: 9,
        inv,
        resp,
        call: Call::Append {
            agg,
            expected: Some(expected),
            tags: vec!["x".into()],
            result: AppendResult::Conflict { expected, current },
        },
    }
}

fn ev(seq: u64, agg: usize, version: u64) -> Obs {
    Obs {
        seq,
        agg,
        version,
        tag: format!("e{seq}"),
    }
}

fn read_all(inv: u64, resp: u64, from: u64, max: usize, head: u64, events: Vec<Obs>) -> Op {
    Op {
        thread: 8,
        inv,
        resp,
        call: Call::ReadAll {
            from,
            max,
            head,
            events,
        },
    }
}

fn version(inv: u64, resp: u64, agg: usize, version: u64) -> Op {
    Op {
        thread: 7,
        inv,
        resp,
        call: Call::Version { agg, version },
    }
}

#[test]
fn checker_accepts_a_valid_concurrent_history() {
    let h = vec![
        append(0, 1, 6, 0, Some(0), &[1], 1),
        append(1, 2, 7, 0, None, &[2, 3], 3),
        append(2, 3, 8, 1, None, &[4], 1),
        // Concurrent with all three: may see any state.
        read_all(4, 5, 0, 10, 3, vec![ev(1, 0, 1), ev(2, 0, 2), ev(3, 0, 3)]),
        conflict(4, 9, 0, 0, 3),
        version(10, 11, 0, 3),
        read_all(12, 13, 2, 2, 4, vec![ev(2, 0, 2), ev(3, 0, 3)]),
    ];
    check_history(&h, 2, 4).unwrap();
}

#[test]
fn checker_rejects_sequence_numbers_against_real_time() {
    let h = vec![
        append(0, 1, 2, 0, None, &[2], 2),
        append(1, 3, 4, 0, None, &[1], 1),
    ];
    let e = check_history(&h, 1, 2).unwrap_err();
    assert!(e.contains("real-time"), "{e}");
}

#[test]
fn checker_rejects_gaps_and_rejected_appends_taking_sequence_numbers() {
    let h = vec![
        append(0, 1, 2, 0, None, &[1], 1),
        append(1, 3, 4, 0, None, &[3], 2),
    ];
    assert!(check_history(&h, 1, 3).unwrap_err().contains("dense"));
    // Dense among the acknowledged ones, but the store holds one more.
    let h = vec![append(0, 1, 2, 0, None, &[1], 1), conflict(3, 4, 0, 0, 1)];
    assert!(check_history(&h, 1, 2).unwrap_err().contains("final head"));
}

#[test]
fn checker_rejects_versions_out_of_sequence_order() {
    // Concurrent, so real time allows either order; but version 2 got the
    // smaller sequence number.
    let h = vec![
        append(0, 1, 4, 0, None, &[1], 2),
        append(1, 2, 3, 0, None, &[2], 1),
    ];
    assert!(check_history(&h, 1, 2).is_err());
    // An exact append that did not start at its expected version.
    let h = vec![
        append(0, 1, 2, 0, None, &[1], 1),
        append(1, 3, 4, 0, Some(0), &[2], 2),
    ];
    assert!(
        check_history(&h, 1, 2)
            .unwrap_err()
            .contains("expecting version 0")
    );
}

#[test]
fn checker_rejects_a_concurrency_error_with_a_version_outside_its_interval() {
    let base = || {
        vec![
            append(0, 1, 2, 0, None, &[1], 1),
            append(0, 5, 6, 0, None, &[2], 2),
        ]
    };
    // At [3, 4] the aggregate was at 1 throughout.
    let mut h = base();
    h.push(conflict(3, 4, 0, 0, 1));
    check_history(&h, 1, 2).unwrap();
    let mut h = base();
    h.push(conflict(3, 4, 0, 0, 2));
    assert!(
        check_history(&h, 1, 2)
            .unwrap_err()
            .contains("not linearizable")
    );
    let mut h = base();
    h.push(conflict(7, 8, 0, 0, 1));
    assert!(
        check_history(&h, 1, 2)
            .unwrap_err()
            .contains("not linearizable")
    );
    // A version it never had, or the expected one.
    let mut h = base();
    h.push(conflict(7, 8, 0, 0, 5));
    assert!(check_history(&h, 1, 2).is_err());
    let mut h = base();
    h.push(conflict(7, 8, 0, 2, 2));
    assert!(check_history(&h, 1, 2).is_err());
}

#[test]
fn checker_rejects_stale_and_torn_reads() {
    let a = || append(0, 1, 2, 0, None, &[1, 2], 2);
    // A read invoked after the append returned must see it.
    let h = vec![a(), read_all(3, 4, 0, 10, 0, vec![])];
    assert!(
        check_history(&h, 1, 2)
            .unwrap_err()
            .contains("not linearizable")
    );
    // Half a batch is no state.
    let h = vec![a(), read_all(3, 4, 0, 10, 1, vec![ev(1, 0, 1)])];
    assert!(check_history(&h, 1, 2).unwrap_err().contains("no state"));
    // A hole: head 2 but only one event.
    let h = vec![a(), read_all(3, 4, 0, 10, 2, vec![ev(2, 0, 2)])];
    assert!(check_history(&h, 1, 2).is_err());
    // A read of the future: invoked and returned before the append started.
    let h = vec![
        read_all(1, 2, 0, 10, 2, vec![ev(1, 0, 1), ev(2, 0, 2)]),
        append(0, 3, 4, 0, None, &[1, 2], 2),
    ];
    assert!(
        check_history(&h, 1, 2)
            .unwrap_err()
            .contains("not linearizable")
    );
}

#[test]
fn checker_rejects_a_later_read_seeing_an_older_state() {
    // Two long appends; a read sees both, a later read sees only one.
    let h = vec![
        append(0, 1, 20, 0, None, &[1], 1),
        append(1, 2, 21, 0, None, &[2], 2),
        read_all(3, 4, 0, 10, 2, vec![ev(1, 0, 1), ev(2, 0, 2)]),
        read_all(5, 6, 0, 10, 1, vec![ev(1, 0, 1)]),
    ];
    assert!(check_history(&h, 1, 2).unwrap_err().contains("older state"));
    // The other way round is fine.
    let h = vec![
        append(0, 1, 20, 0, None, &[1], 1),
        append(1, 2, 21, 0, None, &[2], 2),
        read_all(3, 4, 0, 10, 1, vec![ev(1, 0, 1)]),
        version(5, 6, 0, 2),
    ];
    check_history(&h, 1, 2).unwrap();
}

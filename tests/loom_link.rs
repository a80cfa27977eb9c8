//! Loom model checks of the lock-free append protocol (`src/log/link.rs`):
//! reserve (CAS on the aggregate's last commit, helping an unfinished
//! predecessor), link (Michael–Scott enqueue with helping), sequencing
//! (first sequence number and `recorded_at` from the predecessor), the
//! published index, and what readers see.
//!
//! ```text
//! scripts/loom.sh                           # all models
//! LOOM_MAX_PREEMPTIONS=3 scripts/loom.sh    # one bound for all
//! ```
//!
//! The protocol file is compiled into this test (`#[path]`), where
//! `cfg(all(loom, test))` gives it loom's atomics. The index is loom
//! `AtomicU64`s written and read `Relaxed`, so only the protocol's
//! Release/Acquire pairs can make a reader see them.
//!
//! Invariants asserted (every execution):
//! - a reader sees a contiguous prefix: every index entry ≤ `head` is
//!   written and names a done node holding that sequence number, and
//!   `recorded_at` does not fall along it; a second `head` is no smaller;
//! - sequence numbers are dense and unique: the done nodes' ranges tile
//!   1..=head, and a refused append took none;
//! - along an aggregate (its `last`/`prev` chain), versions are consecutive
//!   and sequence numbers rise with them;
//! - an exact append whose expected version is not current fails, with the
//!   version that really was current;
//! - a thread stopped for ever at any step of its append (the hook returns
//!   "stop") stops no other: the others' appends finish and are visible.

#![cfg(loom)]

#[path = "../src/log/link.rs"]
#[allow(dead_code)]
mod link;

use link::{Chain, Claim, Claims, FAILED, Graph, Link, NONE, Refused, Step};
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// Node ids: 1 is the sentinel, then one per writer.
const NODES: usize = 4;
/// Sequence numbers in the model.
const SLOTS: usize = 4;

struct Shared {
    nodes: Vec<Link>,
    /// Node of each node id's aggregate (index into `last`).
    aggregate_of: Vec<usize>,
    last: [AtomicU64; 2],
    index: [AtomicU64; SLOTS],
    chain: Chain,
    /// Client id → claiming node (the store's `DashMap`: each operation
    /// atomic on its own, modelled by a mutex held for that operation).
    claims: Mutex<Vec<(u64, u64)>>,
}

/// One thread's view: the shared state plus where (if anywhere) this
/// thread stops for ever.
struct View<'a> {
    s: &'a Shared,
    stop_at: Option<Step>,
}

impl Graph for View<'_> {
    fn link(&self, id: u64) -> &Link {
        &self.s.nodes[usize::try_from(id).unwrap()]
    }

    fn publish(&self, id: u64, first: u64, count: u64) {
        for seq in first..first + count {
            self.s.index[usize::try_from(seq - 1).unwrap()].store(id, Ordering::Relaxed);
        }
    }

    fn last_of(&self, id: u64) -> &AtomicU64 {
        &self.s.last[self.s.aggregate_of[usize::try_from(id).unwrap()]]
    }

    fn pause(&self, step: Step) -> bool {
        self.stop_at == Some(step)
    }
}

/// A writer: aggregate, events, clock, expected version (None: any), and
/// where it stops for ever (None: never).
#[derive(Clone, Copy, Debug)]
struct Writer {
    aggregate: usize,
    count: u64,
    clock: i64,
    expected: Option<u64>,
    stop_at: Option<Step>,
}

/// What a writer's append returned.
#[derive(Debug, PartialEq)]
enum Outcome {
    Done { base: u64 },
    Refused(u64),
    Stopped,
}

fn shared(writers: &[Writer]) -> Shared {
    let mut nodes = vec![Link::new(0, 0, false), Link::sentinel()];
    let mut aggregate_of = vec![0, 0];
    for w in writers {
        nodes.push(Link::new(w.count, w.clock, false));
        aggregate_of.push(w.aggregate);
    }
    assert!(nodes.len() <= NODES + 1);
    Shared {
        nodes,
        aggregate_of,
        last: std::array::from_fn(|_| AtomicU64::new(NONE)),
        index: std::array::from_fn(|_| AtomicU64::new(NONE)),
        chain: Chain::new(1),
        claims: Mutex::new(Vec::new()),
    }
}

fn append(s: &Shared, id: u64, w: Writer) -> Outcome {
    let g = View {
        s,
        stop_at: w.stop_at,
    };
    match link::reserve(&g, &s.chain, &s.last[w.aggregate], w.expected, || id) {
        Ok((n, base)) => {
            assert_eq!(n, id);
            link::link(&g, &s.chain, n);
            if g.link(n).done_end().is_none() {
                // Only a stopped thread returns before its node is done.
                assert!(
                    w.stop_at.is_some(),
                    "link returned before node {n} was done"
                );
                return Outcome::Stopped;
            }
            Outcome::Done { base }
        }
        Err((Refused::Version(v), _)) => Outcome::Refused(v),
        Err((Refused::Stopped, _)) => Outcome::Stopped,
        Err((Refused::Killed, _)) => panic!("no claims in these models"),
    }
}

/// A reader: `head`, then every index entry up to it, then `head` again.
fn read(s: &Shared) -> u64 {
    let g = View { s, stop_at: None };
    let head = link::head(&g, &s.chain);
    let mut floor = i64::MIN;
    for seq in 1..=head {
        let id = s.index[usize::try_from(seq - 1).unwrap()].load(Ordering::Relaxed);
        assert_ne!(id, NONE, "seq {seq} visible (head {head}) but not indexed");
        let node = g.link(id);
        let end = node.end.load(Ordering::Relaxed);
        assert!(
            end != 0 && end - node.count() <= seq && seq < end,
            "seq {seq} indexed to node {id} that does not hold it"
        );
        let at = node.recorded.load(Ordering::Relaxed);
        assert!(at >= floor, "recorded_at fell at seq {seq}");
        floor = at;
    }
    let again = link::head(&g, &s.chain);
    assert!(again >= head, "head went backwards: {head} then {again}");
    head
}

/// Checks of the log itself once every thread has joined: done nodes tile
/// 1..=head, `recorded_at` never falls, each aggregate's chain has
/// consecutive versions and rising sequence numbers. Returns the head.
fn check_log(s: &Shared) -> u64 {
    let g = View { s, stop_at: None };
    let head = link::head(&g, &s.chain);
    // Done nodes tile 1..=head in link order, recorded_at non-decreasing.
    let mut done: Vec<(u64, u64, i64)> = (2..s.nodes.len())
        .filter_map(|i| {
            let n = &s.nodes[i];
            n.done_end().map(|end| {
                (
                    end - n.count(),
                    n.count(),
                    n.recorded.load(Ordering::Relaxed),
                )
            })
        })
        .collect();
    done.sort_unstable();
    let mut next = 1;
    let mut floor = i64::MIN;
    for &(first, count, at) in &done {
        assert_eq!(first, next, "sequence numbers not dense: {done:?}");
        assert!(at >= floor, "recorded_at fell: {done:?}");
        next += count;
        floor = at;
    }
    assert_eq!(
        head,
        next - 1,
        "head {head} is not the end of the done nodes"
    );
    // Along each aggregate: versions consecutive, sequence numbers rising.
    for last in &s.last {
        let mut n = link::visible(&g, last);
        let mut after = None::<(u64, u64)>; // (base, first seq) of the later node
        while n != NONE {
            let node = g.link(n);
            let end = node
                .done_end()
                .expect("visible chain holds done nodes only");
            let base = node.base.load(Ordering::Relaxed);
            if let Some((later_base, later_first)) = after {
                assert_eq!(base + node.count(), later_base, "versions not consecutive");
                assert!(
                    end <= later_first,
                    "sequence numbers fell along an aggregate"
                );
            }
            after = Some((base, end - node.count()));
            n = node.prev.load(Ordering::Relaxed);
        }
        if let Some((base, _)) = after {
            assert_eq!(base, 0, "aggregate chain does not start at version 0");
        }
    }
    head
}

/// Final checks once every thread has joined.
fn check_final(s: &Shared, writers: &[Writer], outcomes: &[Outcome]) {
    check_log(s);
    // Every non-stopped success is done and visible; refusals took nothing.
    for (i, (w, o)) in writers.iter().zip(outcomes).enumerate() {
        let node = &s.nodes[i + 2];
        match o {
            Outcome::Done { base } => {
                assert!(node.done_end().is_some());
                assert_eq!(node.base.load(Ordering::Relaxed), *base);
            }
            Outcome::Refused(v) => {
                assert!(
                    node.done_end().is_none(),
                    "refused append took sequence numbers"
                );
                assert!(w.expected.is_some_and(|e| e != *v));
            }
            Outcome::Stopped => assert!(w.stop_at.is_some()),
        }
    }
}

fn check(writers: &'static [Writer], preemptions: usize) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    let heads = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let heads_in = heads.clone();
    builder.check(move || {
        let s = Arc::new(shared(writers));
        let handles: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let s = Arc::clone(&s);
                thread::spawn(move || append(&s, i as u64 + 2, w))
            })
            .collect();
        let reader = {
            let s = Arc::clone(&s);
            thread::spawn(move || read(&s))
        };
        let outcomes: Vec<Outcome> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        heads_in.lock().unwrap().insert(reader.join().unwrap());
        check_final(&s, writers, &outcomes);
    });
    let heads = heads.lock().unwrap().clone();
    println!("{writers:?}: reader saw heads {heads:?}");
    assert!(heads.len() > 1, "the reader only ever saw {heads:?}");
}

const fn w(aggregate: usize, count: u64, clock: i64, expected: Option<u64>) -> Writer {
    Writer {
        aggregate,
        count,
        clock,
        expected,
        stop_at: None,
    }
}

const fn stopped(mut w: Writer, step: Step) -> Writer {
    w.stop_at = Some(step);
    w
}

/// Two writers on one aggregate (any version), later clock first.
#[test]
fn one_aggregate_two_writers() {
    static W: [Writer; 2] = [w(0, 1, 20, None), w(0, 2, 10, None)];
    check(&W, 2);
}

/// Two writers on two aggregates: linking races on the global tail.
#[test]
fn two_aggregates_two_writers() {
    static W: [Writer; 2] = [w(0, 2, 20, None), w(1, 1, 10, None)];
    check(&W, 2);
}

/// Two exact appends at version 0 on one aggregate: exactly one wins, the
/// other fails with version (its count), taking no sequence number.
#[test]
fn exact_appends_one_wins() {
    static W: [Writer; 2] = [w(0, 1, 20, Some(0)), w(0, 2, 10, Some(0))];
    check(&W, 2);
}

/// Three writers, two on one aggregate. Slow: not finished after 25 min
/// on 2 shared cores (the other nine models take ~10 min together); run it
/// alone (`scripts/loom.sh three_writers`) when there is time.
#[test]
fn three_writers() {
    static W: [Writer; 3] = [w(0, 1, 30, None), w(1, 1, 20, None), w(0, 1, 10, None)];
    check(&W, 1);
}

macro_rules! stop_model {
    ($name:ident, $step:expr) => {
        /// A writer stops for ever at this step; another on its aggregate
        /// still finishes (finishing the stopped one's steps as needed).
        #[test]
        fn $name() {
            static W: [Writer; 2] = [stopped(w(0, 1, 30, None), $step), w(0, 1, 20, None)];
            check(&W, 2);
        }
    };
}

stop_model!(stopped_before_reserve, Step::BeforeReserve);
stop_model!(stopped_after_reserve, Step::Reserved);
stop_model!(stopped_before_link, Step::BeforeLink);
stop_model!(stopped_after_link, Step::Linked);
stop_model!(stopped_before_done, Step::BeforeDone);
stop_model!(stopped_after_done, Step::Done);

// ---------------------------------------------------------------------
// Claims: appends carrying client ids (`link::claim`, `confirm`, `kill`).
//
// The writer's loop below mirrors `EventStore::append_claiming`
// (`src/store/claims.rs`): a `PENDING` node per attempt; claim each id;
// an id found stored ends the attempt (withdraw; a duplicate, unless this
// node was killed meanwhile: then start over); else reserve (killed:
// withdraw and start over) and link. Invariants asserted, besides the
// log's own (`check_log`): every id is held by at most one done node, and
// the claims map names it; no `FAILED` node is ever done; a writer that
// was not stopped ends `Done` or `Duplicate` of a done node holding its
// first id; each batch is stored exactly once.

impl Claims for Shared {
    type Id = u64;

    fn claim_if_absent(&self, id: u64, node: u64) -> Option<u64> {
        let mut claims = self.claims.lock().unwrap();
        if let Some(&(_, by)) = claims.iter().find(|(i, _)| *i == id) {
            return Some(by);
        }
        claims.push((id, node));
        None
    }

    fn take_over(&self, id: u64, from: u64, to: u64) -> bool {
        let mut claims = self.claims.lock().unwrap();
        match claims.iter_mut().find(|(i, by)| *i == id && *by == from) {
            Some(entry) => {
                entry.1 = to;
                true
            }
            None => false,
        }
    }
}

/// Nodes per claiming writer: one per attempt (a killed attempt starts
/// over with a new node, as the store does).
const ATTEMPTS: usize = 3;

/// A writer whose one-event append carries client ids.
#[derive(Clone, Copy, Debug)]
struct ClaimWriter {
    aggregate: usize,
    ids: &'static [u64],
    stop_at: Option<Step>,
}

#[derive(Debug, PartialEq)]
enum ClaimOutcome {
    /// Appended by node `node`.
    Done {
        node: u64,
    },
    /// The first id was found stored by this done node.
    Duplicate {
        by: u64,
    },
    Stopped,
}

fn claim_node(writer: usize, attempt: usize) -> u64 {
    (2 + writer * ATTEMPTS + attempt) as u64
}

fn shared_claiming(writers: &[ClaimWriter]) -> Shared {
    let mut s = shared(&[]);
    for (i, w) in writers.iter().enumerate() {
        for _ in 0..ATTEMPTS {
            s.nodes.push(Link::new(1, 10 + i as i64, true));
            s.aggregate_of.push(w.aggregate);
        }
    }
    s
}

fn withdraw(s: &Shared, g: &View<'_>, node: u64, claimed: &[u64]) {
    link::abandon(g, node);
    s.claims
        .lock()
        .unwrap()
        .retain(|(id, by)| !(claimed.contains(id) && *by == node));
}

fn append_claiming(s: &Shared, writer: usize, w: ClaimWriter) -> ClaimOutcome {
    let g = View {
        s,
        stop_at: w.stop_at,
    };
    for attempt in 0..ATTEMPTS {
        let node = claim_node(writer, attempt);
        let mut claimed = Vec::new();
        let mut stored = None;
        for &id in w.ids {
            match link::claim(&g, &s.chain, s, id, node) {
                Claim::Taken => claimed.push(id),
                Claim::Stored(by) => {
                    stored = Some(by);
                    break;
                }
            }
        }
        if let Some(by) = stored {
            let killed = g.link(node).status.load(Ordering::Acquire) == FAILED;
            withdraw(s, &g, node, &claimed);
            if killed {
                continue;
            }
            if g.link(by).done_end().is_none() {
                // Helping `by` along, this thread hit its stop step.
                assert!(w.stop_at.is_some(), "claim reported undone node {by}");
                return ClaimOutcome::Stopped;
            }
            return ClaimOutcome::Duplicate { by };
        }
        match link::reserve(&g, &s.chain, &s.last[w.aggregate], None, || node) {
            Ok((n, _)) => {
                assert_eq!(n, node);
                link::link(&g, &s.chain, n);
                if g.link(n).done_end().is_none() {
                    assert!(
                        w.stop_at.is_some(),
                        "link returned before node {n} was done"
                    );
                    return ClaimOutcome::Stopped;
                }
                return ClaimOutcome::Done { node };
            }
            Err((Refused::Killed, _)) => withdraw(s, &g, node, &claimed),
            Err((Refused::Stopped, _)) => return ClaimOutcome::Stopped,
            Err((Refused::Version(v), _)) => panic!("no expected version here, got {v}"),
        }
    }
    panic!("writer {writer} killed {ATTEMPTS} times (within the preemption bound)");
}

fn check_claims_final(s: &Shared, writers: &[ClaimWriter], outcomes: &[ClaimOutcome]) {
    check_log(s);
    let g = View { s, stop_at: None };
    let done: Vec<u64> = (2..s.nodes.len() as u64)
        .filter(|&n| g.link(n).done_end().is_some())
        .collect();
    for &n in &done {
        assert_ne!(
            g.link(n).status.load(Ordering::Acquire),
            FAILED,
            "failed node {n} is done"
        );
    }
    let writer_of = |n: u64| (n as usize - 2) / ATTEMPTS;
    // Each id: held by at most one done node, which the claims map names.
    let claims = s.claims.lock().unwrap().clone();
    let all_ids: std::collections::BTreeSet<u64> =
        writers.iter().flat_map(|w| w.ids.iter().copied()).collect();
    for id in all_ids {
        let holders: Vec<u64> = done
            .iter()
            .copied()
            .filter(|&n| writers[writer_of(n)].ids.contains(&id))
            .collect();
        assert!(holders.len() <= 1, "id {id} stored by nodes {holders:?}");
        if let Some(&h) = holders.first() {
            assert!(
                claims.contains(&(id, h)),
                "id {id} stored by {h}, claims say {claims:?}"
            );
        }
    }
    for (i, (w, o)) in writers.iter().zip(outcomes).enumerate() {
        match *o {
            ClaimOutcome::Done { node } => {
                assert_eq!(writer_of(node), i);
                assert!(done.contains(&node));
            }
            ClaimOutcome::Duplicate { by } => {
                assert!(done.contains(&by), "duplicate of undone node {by}");
                assert!(writers[writer_of(by)].ids.contains(&w.ids[0]));
            }
            ClaimOutcome::Stopped => assert!(w.stop_at.is_some()),
        }
        // A writer's own nodes: at most one done.
        let own = done.iter().filter(|&&n| writer_of(n) == i).count();
        assert!(own <= 1, "writer {i} stored {own} times");
    }
}

fn check_claims(writers: &'static [ClaimWriter], preemptions: usize) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let seen_in = seen.clone();
    builder.check(move || {
        let s = Arc::new(shared_claiming(writers));
        let handles: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let s = Arc::clone(&s);
                thread::spawn(move || append_claiming(&s, i, w))
            })
            .collect();
        let outcomes: Vec<ClaimOutcome> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        check_claims_final(&s, writers, &outcomes);
        seen_in.lock().unwrap().insert(format!("{outcomes:?}"));
    });
    let seen = seen.lock().unwrap().clone();
    println!("{writers:?}: outcomes {seen:?}");
    assert!(seen.len() > 1, "the model only ever saw {seen:?}");
}

const fn cw(aggregate: usize, ids: &'static [u64]) -> ClaimWriter {
    ClaimWriter {
        aggregate,
        ids,
        stop_at: None,
    }
}

const fn claim_stopped(mut w: ClaimWriter, step: Step) -> ClaimWriter {
    w.stop_at = Some(step);
    w
}

/// Two threads retry one append (same id, same aggregate) at once: one
/// append, one duplicate of it, in every interleaving.
#[test]
fn claims_one_id_retried_twice() {
    static W: [ClaimWriter; 2] = [cw(0, &[7]), cw(0, &[7])];
    check_claims(&W, 2);
}

/// One id given to two aggregates: stored once; the other append finds it
/// (the store answers error 22 there).
#[test]
fn claims_one_id_two_aggregates() {
    static W: [ClaimWriter; 2] = [cw(0, &[7]), cw(1, &[7])];
    check_claims(&W, 2);
}

/// Two ids claimed in opposite orders: kills and restarts, still one
/// append and one duplicate (within the preemption bound: the id path is
/// obstruction-free).
#[test]
fn claims_opposite_orders() {
    static W: [ClaimWriter; 2] = [cw(0, &[7, 8]), cw(0, &[8, 7])];
    check_claims(&W, 1);
}

/// A claiming writer stops for ever after its claims, before reserving:
/// the other kills its node, takes the id over and appends.
#[test]
fn claims_stopped_before_reserve() {
    static W: [ClaimWriter; 2] = [claim_stopped(cw(0, &[7]), Step::BeforeReserve), cw(0, &[7])];
    check_claims(&W, 2);
}

/// A claiming writer stops for ever once its node is the aggregate's
/// `last` (still `PENDING`): the other confirms and links it, and reports
/// a duplicate of it.
#[test]
fn claims_stopped_after_reserve() {
    static W: [ClaimWriter; 2] = [claim_stopped(cw(0, &[7]), Step::Reserved), cw(0, &[7])];
    check_claims(&W, 2);
}

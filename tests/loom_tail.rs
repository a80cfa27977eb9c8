//! Loom model checks of the global log's serial section and publication
//! (`src/log/tail.rs`): every interleaving of a few writers and a reader
//! (up to a preemption bound), and every value the memory model lets each
//! load return.
//!
//! ```text
//! scripts/loom.sh                               # all models, ~20 s once built
//! LOOM_MAX_PREEMPTIONS=3 scripts/loom.sh        # one bound for all (3: minutes)
//! ```
//!
//! The protocol file is compiled into this test (`#[path]`), where
//! `cfg(all(loom, test))` gives it loom's atomics and mutex. The log's slots are
//! modelled as loom `AtomicU64`s written and read `Relaxed`, so only the
//! Release/Acquire pairs on `published` can make a reader see them: if that
//! ordering, or the section's exclusion, is wrong, a model below fails.
//!
//! Invariants checked:
//! - a reader sees a contiguous prefix: every slot ≤ `head` is written;
//! - `head` never goes backwards for a reader;
//! - sequence numbers are dense and unique: the turns' ranges tile 1..=total;
//! - `recorded_at` never decreases along the sequence, although the writers'
//!   clocks (`now`) are deliberately out of order;
//! - at the end everything is published, and nothing past it written.
//!
//! And, so that the reader's checks cannot pass vacuously, every model
//! asserts that its reader saw each `head` value the writers can publish
//! (0, the total, and each intermediate one) in some execution.

#![cfg(loom)]

#[path = "../src/log/tail.rs"]
mod tail;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;
use std::collections::BTreeSet;
use std::sync::Mutex;
use tail::Tail;

/// Slots in the model: enough for the largest total below.
const SLOTS: usize = 4;

struct Shared {
    tail: Tail,
    /// Slot `seq - 1` holds the `recorded_at` stamped on `seq` (always ≥ 1
    /// here), 0 while unwritten.
    slots: [AtomicU64; SLOTS],
}

fn slot(shared: &Shared, seq: u64) -> &AtomicU64 {
    &shared.slots[usize::try_from(seq - 1).unwrap()]
}

/// One append of `n` events with the writer's clock at `now` (≥ 1): the
/// same steps as `Log::append`. Returns the first sequence number.
fn append(shared: &Shared, n: u64, now: i64) -> u64 {
    let turn = shared.tail.enter();
    let first = turn.first();
    let recorded = now.max(turn.previous_recorded());
    let last = first + n - 1;
    for seq in first..=last {
        // Written once, by the section's holder.
        assert_eq!(
            slot(shared, seq).load(Ordering::Relaxed),
            0,
            "slot {seq} written twice"
        );
        slot(shared, seq).store(u64::try_from(recorded).unwrap(), Ordering::Relaxed);
    }
    turn.publish(last, recorded);
    first
}

/// What a reader sees: `head`, every slot at or below it written, then a
/// later `head` no smaller. Returns the first `head`.
fn read(shared: &Shared) -> u64 {
    let head = shared.tail.head();
    assert!(head <= SLOTS as u64, "head {head} beyond every append");
    for seq in 1..=head {
        assert_ne!(
            slot(shared, seq).load(Ordering::Relaxed),
            0,
            "slot {seq} visible (head {head}) but not written"
        );
    }
    let again = shared.tail.head();
    assert!(again >= head, "head went backwards: {head} then {again}");
    head
}

/// Every `head` a reader may see with these batch sizes: 0, and the end of
/// every batch in every order of the turns.
fn possible_heads(batches: &[u64]) -> BTreeSet<u64> {
    let mut heads = BTreeSet::from([0]);
    for (i, &n) in batches.iter().enumerate() {
        let mut rest = batches.to_vec();
        rest.remove(i);
        heads.extend(possible_heads(&rest).into_iter().map(|h| h + n));
    }
    heads
}

/// Runs writers `(n, now)` and a reader, each in its own thread, then
/// checks the final state. Explores schedules with at most `preemptions`
/// preemptions (`LOOM_MAX_PREEMPTIONS` overrides). (The reader is spawned last rather than run on
/// the model's main thread: loom reorders an access only against the last
/// conflicting one, so a read done before the writers start would never be
/// moved after their publishes.)
fn check(writers: &'static [(u64, i64)], preemptions: usize) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    // Outside the model (std): what the reader saw, over all executions.
    let seen = std::sync::Arc::new(Mutex::new(BTreeSet::new()));
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (seen_in_model, executions_in_model) = (seen.clone(), executions.clone());
    builder.check(move || {
        executions_in_model.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let shared = Arc::new(Shared {
            tail: Tail::new(),
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        });
        let appends: Vec<_> = writers
            .iter()
            .map(|&(n, now)| {
                let shared = Arc::clone(&shared);
                thread::spawn(move || (append(&shared, n, now), n))
            })
            .collect();
        let reader = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || read(&shared))
        };

        let mut ranges: Vec<(u64, u64)> = appends.into_iter().map(|h| h.join().unwrap()).collect();
        let head = reader.join().unwrap();
        seen_in_model.lock().unwrap().insert(head);

        ranges.sort_unstable();
        // Dense and unique: the ranges tile 1..=total with no gap or overlap.
        let mut expected = 1;
        for &(first, n) in &ranges {
            assert_eq!(first, expected, "sequence numbers not dense: {ranges:?}");
            expected += n;
        }
        let total = expected - 1;
        assert_eq!(shared.tail.head(), total, "not everything published");
        // Every slot written, stamps non-decreasing along the sequence, and
        // nothing written past the last turn.
        let stamps: Vec<u64> = shared
            .slots
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect();
        let (written, rest) = stamps.split_at(usize::try_from(total).unwrap());
        assert!(
            written.iter().all(|&s| s != 0),
            "unwritten slot: {stamps:?}"
        );
        assert!(
            rest.iter().all(|&s| s == 0),
            "slot past the last turn written: {stamps:?}"
        );
        assert!(
            written.windows(2).all(|w| w[0] <= w[1]),
            "recorded_at went backwards along the sequence: {stamps:?}"
        );
        assert_eq!(
            u64::try_from(shared.tail.enter().previous_recorded()).unwrap(),
            written[written.len() - 1]
        );
    });

    let seen = seen.lock().unwrap().clone();
    let batches: Vec<u64> = writers.iter().map(|&(n, _)| n).collect();
    // Shown with --nocapture: how much the model explored.
    println!(
        "{writers:?}: {} executions, reader saw heads {seen:?}",
        executions.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(
        seen,
        possible_heads(&batches),
        "the reader did not see every possible head: the model explores too little"
    );
}

// Bounds: in release mode on 2 cores, ~27,000 executions (a few seconds)
// for each two-writer model at 4, ~127,000 (~15 s) for the three-writer
// model at 2; the latter takes 1.7 million (minutes) at 3.

/// Two writers, one appending two events, the later clock first.
#[test]
fn two_writers_one_batch_and_a_reader() {
    check(&[(1, 20), (2, 10)], 4);
}

/// Two batches of two: a reader could see half a batch only if publication
/// were per slot.
#[test]
fn two_batches_and_a_reader() {
    check(&[(2, 10), (2, 5)], 4);
}

/// Three writers, four events, clocks in reverse spawn order.
#[test]
fn three_writers_and_a_reader() {
    check(&[(1, 30), (1, 20), (2, 10)], 2);
}

//! The append protocol on its own: reserving a version on an aggregate,
//! linking the commit into the global log, sequencing it, and what readers
//! may see. No locks, and no thread ever waits for another: every step an
//! append needs from another append, it can do itself ("helping").
//!
//! # The structure
//!
//! Each append is a *commit node* (`Link` here: the atomic header of
//! `log::Commit`), named by a `u64` id into an append-only arena that never
//! frees anything while the store lives (so an id is never reused: no ABA).
//! Id 0 is "none"; the arena's first node is a sentinel: done, 0 events,
//! last sequence number 0.
//!
//! - Each aggregate has `last`: the id of its latest reserved commit. Along
//!   it, `prev` pointers form the aggregate's chain, and `base` is the
//!   aggregate's version before the commit.
//! - The global log is a Michael–Scott list: `next` pointers from the
//!   sentinel, and a `tail` that lags the end by at most one node at rest.
//! - A commit is *done* once `end` (its last sequence number + 1) is set.
//!   Its first sequence number is its predecessor's `end`, and its
//!   `recorded_at` is `max(own clock, predecessor's recorded_at)`: both are
//!   functions of the predecessor, so every helper computes the same values.
//!
//! # One append, step by step (`reserve`, then `link`)
//!
//! 1. Load the aggregate's `last` = `p`. If `p` is not done, finish it
//!    (`link(p)`): link order along an aggregate then follows version order.
//! 2. The current version is `p`'s version after it (0 with no `p`). An
//!    expected version that does not match fails at once: nothing global
//!    was touched, no sequence number taken.
//! 3. CAS `last` from `p` to the new node `n` (its `prev`/`base` written
//!    before). Lost: another append on this aggregate won (progress); retry.
//! 4. `link(n)`: loop { `t` = tail; if `t.next` is set, sequence it and swing
//!    the tail; else if `n` is done, return; else CAS `t.next` from none to
//!    `n` }. The tail only moves past done nodes, so a node is linked once
//!    (a second CAS finds `next` taken, or `n` done).
//! 5. Sequencing `x` after `t` (by anyone): write `x`'s `recorded`, publish
//!    its index entries (sequence number → node), then CAS `x.end` from 0.
//!    Losing that CAS to another helper is fine: it must hold the same
//!    value (asserted).
//!
//! Readers see the prefix up to the last *done* node reachable from the
//! tail ([`head`]): done order is link order, so that prefix is contiguous,
//! and an append returns only once its node is done, so every later read
//! sees it. An aggregate's visible version is `last`'s if done, else
//! `last.base` (its predecessor is done: step 1 of its append).
//!
//! # Claims (client ids)
//!
//! A node carrying client ids starts `PENDING` and is made `RESERVED` only
//! after it is the aggregate's `last`; a competitor for one of its ids may
//! `kill` a `PENDING` node (CAS to `FAILED`). A `FAILED` node found as an
//! aggregate's `last` is rolled back to its `prev` (by whoever finds it),
//! and no `FAILED` node is ever linked: linking requires `RESERVED`, which
//! is final. A node found `PENDING` as `last` has all its claims (its owner
//! claims before the CAS of step 3), so anyone may make it `RESERVED`.
//!
//! # Orderings
//!
//! - `last`, `tail` and `next`: CAS with `AcqRel` (Release publishes the
//!   node's fields written before; Acquire on success and on the loads lets
//!   the winner and every later reader see the fields of the node found),
//!   loads with `Acquire`.
//! - `end`: CAS `AcqRel`/loads `Acquire`: the Release publishes `recorded`
//!   and the index entries written before it; a helper's Acquire of the
//!   predecessor's `end` carries everything before it along (happens-before
//!   is transitive, so a reader that acquires one `end` sees every earlier
//!   node's index entries too).
//! - `recorded`, `prev`, `base`, index entries: `Relaxed`, always published
//!   by one of the Release operations above. Several helpers may store
//!   `recorded` and index entries concurrently, but always the same value.
//! - `status`: CAS `AcqRel`, loads `Acquire` (it decides who may link).
//!
//! It is separate so that loom can check it: `tests/loom_link.rs` includes
//! this very file (`#[path]`) and runs it on loom's atomics. Hence: no
//! `crate::` paths, every atomic from `sync`.

use sync::{AtomicI64, AtomicU8, AtomicU64, Ordering};

/// std's atomics, or loom's when compiled into the loom model test.
mod sync {
    #[cfg(all(loom, test))]
    pub(crate) use loom::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
    #[cfg(not(all(loom, test)))]
    pub(crate) use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
}

/// No node.
pub(crate) const NONE: u64 = 0;

/// Claim states (see the module docs).
pub(crate) const PENDING: u8 = 0;
/// Final: the node will be linked.
pub(crate) const RESERVED: u8 = 1;
/// Final: the node is never linked; its claims count for nothing.
pub(crate) const FAILED: u8 = 2;

/// Where an append may be stopped by a test hook (see `Graph::pause`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Version checked, before the CAS on the aggregate's `last`.
    BeforeReserve,
    /// `last` is the new node; not linked yet.
    Reserved,
    /// Before the CAS on the tail's `next`.
    BeforeLink,
    /// Linked, not sequenced.
    Linked,
    /// Index entries published, `end` not set yet.
    BeforeDone,
    /// Done, the tail not swung yet.
    Done,
}

/// The atomic header of a commit node.
pub(crate) struct Link {
    /// Events in the commit (0 only for the sentinel). `u32` so that it
    /// shares a word with `status` (a commit is at most 2^32 - 1 events).
    count: u32,
    pub(crate) status: AtomicU8,
    /// The aggregate's previous commit (written by the owner before the
    /// node is published as `last`).
    pub(crate) prev: AtomicU64,
    /// The aggregate's version before this commit (same).
    pub(crate) base: AtomicU64,
    /// The next node in the global log.
    pub(crate) next: AtomicU64,
    /// Last sequence number + 1 once done; 0 before.
    pub(crate) end: AtomicU64,
    /// Before `end` is set: the writer's clock reading (microseconds), a
    /// floor for `recorded_at`. Once `end` is set: `recorded_at`, i.e.
    /// `max(clock, predecessor's recorded_at)`. One word serves both: a
    /// helper reads either value and stores the same maximum (step 5).
    pub(crate) recorded: AtomicI64,
}

impl Link {
    /// A node of `count` events; `claims`: whether it starts `PENDING`.
    pub(crate) fn new(count: u64, clock: i64, claims: bool) -> Link {
        let Ok(count) = u32::try_from(count) else {
            panic!("a commit of {count} events (at most 2^32 - 1)");
        };
        Link {
            count,
            status: AtomicU8::new(if claims { PENDING } else { RESERVED }),
            prev: AtomicU64::new(NONE),
            base: AtomicU64::new(0),
            next: AtomicU64::new(NONE),
            end: AtomicU64::new(0),
            recorded: AtomicI64::new(clock),
        }
    }

    /// Events in the commit.
    pub(crate) fn count(&self) -> u64 {
        u64::from(self.count)
    }

    /// The sentinel: done, nothing in it, before sequence number 1.
    pub(crate) fn sentinel() -> Link {
        let link = Link::new(0, i64::MIN, false);
        link.end.store(1, Ordering::Relaxed);
        link
    }

    /// `end` if done (Acquire: see the module docs).
    pub(crate) fn done_end(&self) -> Option<u64> {
        let end = self.end.load(Ordering::Acquire);
        (end != 0).then_some(end)
    }

    /// The aggregate's version after this commit.
    pub(crate) fn version_after(&self) -> u64 {
        // Relaxed: written before the node was published (module docs).
        self.base.load(Ordering::Relaxed) + self.count()
    }
}

/// What the protocol needs from the store: nodes by id, the index, and the
/// test hook.
pub(crate) trait Graph {
    /// The node `id` (which must exist: ids are only ever handed out after
    /// their node is stored).
    fn link(&self, id: u64) -> &Link;
    /// Records that sequence numbers `first..first + count` belong to node
    /// `id` (idempotent: helpers may call it concurrently).
    fn publish(&self, id: u64, first: u64, count: u64);
    /// The `last` pointer of node `id`'s aggregate.
    fn last_of(&self, id: u64) -> &AtomicU64;
    /// Test hook: called at each step of an append by the thread taking
    /// it. `true` means "this thread stops here for ever" (the loom models
    /// use it: the caller returns at once, leaving the step undone).
    fn pause(&self, _step: Step) -> bool {
        false
    }
}

/// The global log's end.
pub(crate) struct Chain {
    /// A done node; at most a few nodes behind the last done one.
    tail: AtomicU64,
}

impl Chain {
    /// A chain whose only node is the sentinel `sentinel` (done).
    pub(crate) fn new(sentinel: u64) -> Chain {
        Chain {
            tail: AtomicU64::new(sentinel),
        }
    }
}

/// Sequences `x` (`node`), linked right after the done node `t` (`pred`),
/// by anyone. `false`: the test hook stopped this thread.
fn sequence<G: Graph>(g: &G, t: u64, pred: &Link, x: u64, node: &Link) -> bool {
    let Some(first) = pred.done_end() else {
        panic!("node {x} linked after node {t}, which is not done");
    };
    // Relaxed: `recorded` was written before `pred.end`'s Release, which the
    // Acquire in `done_end` just read.
    let floor = pred.recorded.load(Ordering::Relaxed);
    let end = first + node.count();
    if let Some(done) = node.done_end() {
        // Someone finished it: do not write its lines again.
        assert_eq!(done, end, "node {x} sequenced differently");
        return true;
    }
    // Relaxed: `recorded` holds the writer's clock until a helper stores
    // `max(clock, floor)`; either way this load gives that same maximum
    // (the stored value is ≥ the clock and ≥ `floor`), so every helper
    // stores one value. Published by `end`.
    let own = node.recorded.load(Ordering::Relaxed);
    node.recorded.store(own.max(floor), Ordering::Relaxed);
    g.publish(x, first, node.count());
    if g.pause(Step::BeforeDone) {
        return false;
    }
    // AcqRel: Release publishes `recorded` and the index entries.
    match node
        .end
        .compare_exchange(0, end, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => {}
        Err(other) => assert_eq!(other, end, "two helpers sequenced node {x} differently"),
    }
    true
}

/// Makes node `n` done: links it into the global log (unless someone has)
/// and sequences it, finishing any node linked before it.
pub(crate) fn link<G: Graph>(g: &G, chain: &Chain, n: u64) {
    // Each node is looked up once per use (the arena lookup is most of the
    // cost of this loop when nobody contends).
    let me = g.link(n);
    if me.done_end().is_some() {
        return;
    }
    assert_eq!(
        me.status.load(Ordering::Acquire),
        RESERVED,
        "node {n} linked without being reserved"
    );
    loop {
        // Acquire (tail, next): see the nodes' fields (module docs).
        let t = chain.tail.load(Ordering::Acquire);
        let tail = g.link(t);
        let next = tail.next.load(Ordering::Acquire);
        if next != NONE {
            let other = if next == n { me } else { g.link(next) };
            if !sequence(g, t, tail, next, other) {
                return;
            }
            // Whoever wins swings it; a loser finds it swung.
            let _ = chain
                .tail
                .compare_exchange(t, next, Ordering::AcqRel, Ordering::Relaxed);
            continue;
        }
        // The tail passed `n` only after `n` was done; and `n` linked but
        // not done would be `t.next` (it is never linked elsewhere).
        if me.done_end().is_some() {
            return;
        }
        if g.pause(Step::BeforeLink) {
            return;
        }
        if tail
            .next
            .compare_exchange(NONE, n, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            if g.pause(Step::Linked) {
                return;
            }
            if !sequence(g, t, tail, n, me) || g.pause(Step::Done) {
                return;
            }
            let _ = chain
                .tail
                .compare_exchange(t, n, Ordering::AcqRel, Ordering::Relaxed);
            return;
        }
    }
}

/// The last sequence number readers may see: the end of the last done node
/// reachable from the tail. Never waits; never goes backwards.
pub(crate) fn head<G: Graph>(g: &G, chain: &Chain) -> u64 {
    let mut t = chain.tail.load(Ordering::Acquire);
    loop {
        let node = g.link(t);
        let next = node.next.load(Ordering::Acquire);
        if next == NONE || g.link(next).done_end().is_none() {
            // The tail is always done.
            let Some(end) = node.done_end() else {
                panic!("tail node {t} is not done");
            };
            return end - 1;
        }
        t = next;
    }
}

/// The aggregate's last *visible* commit given its `last` pointer: `last`
/// if done, else its predecessor (done: see the module docs). `NONE` when
/// the aggregate has no visible commit.
pub(crate) fn visible<G: Graph>(g: &G, last: &AtomicU64) -> u64 {
    let p = last.load(Ordering::Acquire);
    if p == NONE || g.link(p).done_end().is_some() {
        return p;
    }
    let prev = g.link(p).prev.load(Ordering::Relaxed);
    assert!(
        prev == NONE || g.link(prev).done_end().is_some(),
        "node {p} reserved after an unfinished node {prev}"
    );
    prev
}

/// The aggregate version after `node` (0 for `NONE`).
pub(crate) fn version_of<G: Graph>(g: &G, node: u64) -> u64 {
    if node == NONE {
        0
    } else {
        g.link(node).version_after()
    }
}

/// Makes the aggregate's `last` a done node (helping it, or rolling back a
/// failed one) and returns it; `None` if the test hook stopped this thread.
fn settle<G: Graph>(g: &G, chain: &Chain, last: &AtomicU64) -> Option<u64> {
    loop {
        let p = last.load(Ordering::Acquire);
        if p == NONE {
            return Some(p);
        }
        let node = g.link(p);
        if node.done_end().is_some() {
            return Some(p);
        }
        // A `PENDING` node in `last` has all its claims: finish it for its
        // owner. `FAILED` (killed by a competitor for an id): roll back.
        if confirm(node) == FAILED {
            let prev = node.prev.load(Ordering::Relaxed);
            let _ = last.compare_exchange(p, prev, Ordering::AcqRel, Ordering::Relaxed);
            continue;
        }
        link(g, chain, p);
        return node.done_end().map(|_| p);
    }
}

/// Why a reservation did not happen.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The aggregate is at this other version.
    Version(u64),
    /// The node was killed (a competitor took one of its client ids).
    Killed,
    /// The test hook stopped this thread (loom models only).
    Stopped,
}

/// Steps 1–3: reserves the next version of the aggregate whose `last` this
/// is if `expected` (None: any) matches, for the node `make` returns (called
/// once, only after the version check passed: a refused append that loses
/// no race allocates nothing). Returns the node and the version before it;
/// refused, the node if one was made (never published as `last`).
pub(crate) fn reserve<G: Graph>(
    g: &G,
    chain: &Chain,
    last: &AtomicU64,
    expected: Option<u64>,
    make: impl FnOnce() -> u64,
) -> Result<(u64, u64), (Refused, Option<u64>)> {
    let mut make = Some(make);
    let mut made = None;
    loop {
        let Some(p) = settle(g, chain, last) else {
            return Err((Refused::Stopped, made));
        };
        let current = version_of(g, p);
        if expected.is_some_and(|v| v != current) {
            return Err((Refused::Version(current), made));
        }
        let n = match (made, make.take()) {
            (Some(n), _) => n,
            (None, Some(make)) => make(),
            (None, None) => unreachable!("`make` is taken only when `made` is set"),
        };
        made = Some(n);
        let node = g.link(n);
        // Relaxed: published by the Release of the CAS below.
        node.prev.store(p, Ordering::Relaxed);
        node.base.store(current, Ordering::Relaxed);
        if g.pause(Step::BeforeReserve) {
            return Err((Refused::Stopped, made));
        }
        if last
            .compare_exchange(p, n, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            if node.status.load(Ordering::Acquire) == FAILED {
                return Err((Refused::Killed, made));
            }
            continue;
        }
        if g.pause(Step::Reserved) {
            return Err((Refused::Stopped, made));
        }
        // Claims: confirm (or find killed, and roll back ourselves).
        if confirm(node) == FAILED {
            let _ = last.compare_exchange(n, p, Ordering::AcqRel, Ordering::Relaxed);
            return Err((Refused::Killed, made));
        }
        return Ok((n, current));
    }
}

/// Makes a `PENDING` node `RESERVED` unless a competitor killed it first,
/// and returns its final state (`RESERVED` or `FAILED`). Only a node that
/// is its aggregate's `last` may be confirmed (it then has all its claims).
/// A node without claims starts `RESERVED`: one load, no CAS (a failing
/// CAS would still take its cache line exclusively).
pub(crate) fn confirm(node: &Link) -> u8 {
    // Acquire: as every `status` load (module docs).
    let state = node.status.load(Ordering::Acquire);
    if state != PENDING {
        return state;
    }
    // AcqRel: decides who may link (module docs); a failure returns the
    // final state another thread set.
    match node
        .status
        .compare_exchange(PENDING, RESERVED, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => RESERVED,
        Err(state) => state,
    }
}

/// Where client-id claims live: id → the node that claimed it (the
/// store's `DashMap`; a mutex-guarded map in the loom models). Each
/// operation is atomic on its own; nothing is held between them.
pub(crate) trait Claims {
    /// A client id.
    type Id: Copy + std::fmt::Display;
    /// Claims `id` for `node` if nobody has (`None`); else the node
    /// holding it.
    fn claim_if_absent(&self, id: Self::Id, node: u64) -> Option<u64>;
    /// Moves `id`'s claim from `from` to `to` if `from` still holds it.
    fn take_over(&self, id: Self::Id, from: u64, to: u64) -> bool;
}

/// How claiming a client id ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Ours now.
    Taken,
    /// Stored by this node (done, unless the test hook stopped this thread
    /// while it helped the node along).
    Stored(u64),
}

/// Claims `id` for the `PENDING` node `node` (not yet any aggregate's
/// `last`): insert-if-absent, and an existing claim is resolved by its
/// node's state. `RESERVED`: the id is stored (finish the node for its
/// owner). `FAILED`: the claim counts for nothing, take it over.
/// `PENDING`: if the node is its aggregate's `last` it has all its claims,
/// so confirm and finish it; else kill it (its owner starts over).
///
/// Obstruction-free rather than lock-free: two appends claiming the same
/// ids in opposite orders could kill each other for ever, each kill
/// landing in the other's short window between its claims and its
/// reservation.
pub(crate) fn claim<G: Graph, M: Claims>(
    g: &G,
    chain: &Chain,
    claims: &M,
    id: M::Id,
    node: u64,
) -> Claim {
    loop {
        let Some(other) = claims.claim_if_absent(id, node) else {
            return Claim::Taken;
        };
        assert_ne!(other, node, "id {id} claimed twice by node {node}");
        let found = g.link(other);
        // Acquire: as every `status` load (module docs).
        let mut state = found.status.load(Ordering::Acquire);
        if state == PENDING {
            // Acquire: as every `last` load (module docs).
            state = if g.last_of(other).load(Ordering::Acquire) == other {
                confirm(found)
            } else {
                kill(g, other)
            };
        }
        match state {
            RESERVED => {
                link(g, chain, other);
                return Claim::Stored(other);
            }
            FAILED => {
                if claims.take_over(id, other, node) {
                    return Claim::Taken;
                }
            }
            // `confirm` and `kill` return final states only.
            state => panic!("claim of node {other} left in state {state}"),
        }
    }
}

/// Kills a `PENDING` node (a competitor for one of its client ids). Returns
/// its final state: `FAILED`, or `RESERVED` if it got there first.
pub(crate) fn kill<G: Graph>(g: &G, n: u64) -> u8 {
    match g
        .link(n)
        .status
        .compare_exchange(PENDING, FAILED, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => FAILED,
        Err(state) => state,
    }
}

/// Gives up a node that was never reserved (its claims count for nothing).
pub(crate) fn abandon<G: Graph>(g: &G, n: u64) {
    let state = kill(g, n);
    assert_ne!(state, RESERVED, "abandoning reserved node {n}");
}

//! A per-thread memo of the last aggregate the thread looked up, in front
//! of the store's `DashMap`.
//!
//! A command handler reads an aggregate's version, then appends to it; on a
//! hot aggregate many threads do so at once. Every map lookup takes the
//! shard's read lock — two atomic writes to a cache line that every thread
//! touching that shard shares — so on one hot aggregate the shard lock
//! bounces between cores as much as the aggregate's own lock. The memo
//! answers a thread's repeated lookups of one aggregate without the map:
//! a string compare and an `Arc` upgrade (a write to the aggregate's own
//! line, which the caller is about to lock anyway).
//!
//! Correct because an aggregate, once in a store's map, stays the same
//! object for the store's life (entries are only ever inserted), and the
//! memo is keyed by a store id that is never reused (not by address: a new
//! store may be allocated where a dropped one was). It holds a `Weak`, so
//! it keeps no aggregate, and no store's data, alive.

use crate::aggregate::Aggregate;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique store id (never 0, which marks an empty memo).
pub(crate) fn new_store_id() -> u64 {
    // Relaxed: only the uniqueness of the values matters.
    NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed)
}

struct Memo {
    store: u64,
    name: String,
    aggregate: Weak<Aggregate>,
}

thread_local! {
    static LAST: RefCell<Memo> = const {
        RefCell::new(Memo {
            store: 0,
            name: String::new(),
            aggregate: Weak::new(),
        })
    };
}

/// The aggregate `name` of store `store`, if it is what this thread last
/// remembered.
pub(crate) fn recall(store: u64, name: &str) -> Option<Arc<Aggregate>> {
    LAST.try_with(|memo| {
        let memo = memo.try_borrow().ok()?;
        (memo.store == store && memo.name == name)
            .then(|| memo.aggregate.upgrade())
            .flatten()
    })
    .ok()
    .flatten()
}

/// Remembers `aggregate` as this thread's last lookup of `name` in `store`.
pub(crate) fn remember(store: u64, name: &str, aggregate: &Arc<Aggregate>) {
    // A thread being torn down, or a re-entrant call, just skips the memo.
    let _ = LAST.try_with(|memo| {
        if let Ok(mut memo) = memo.try_borrow_mut() {
            memo.store = store;
            memo.name.clear();
            memo.name.push_str(name);
            memo.aggregate = Arc::downgrade(aggregate);
        }
    });
}

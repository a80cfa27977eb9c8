//! Set-once cells filled without waiting on another thread's allocation.
//!
//! Several lazily built structures (the log's chunk directory, an
//! aggregate's version buckets) fill an empty `OnceLock` with a freshly
//! allocated value. `OnceLock::get_or_init` would run the allocation while
//! holding the cell, so a thread stopped inside it would make every other
//! thread wait. Here the value is allocated first and then offered: the
//! first offer wins, a loser drops its copy, nobody waits for anybody's
//! allocation (only for the standard library's few instructions between
//! claiming the cell and storing into it).

use std::sync::OnceLock;

/// The cell's value, allocating it outside the cell if missing.
pub(crate) fn get_or_offer<V>(cell: &OnceLock<V>, make: impl FnOnce() -> V) -> &V {
    if let Some(v) = cell.get() {
        return v;
    }
    // Losing the race drops our copy.
    let _ = cell.set(make());
    match cell.get() {
        Some(v) => v,
        None => panic!("a OnceLock is empty right after being set"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_offer_wins_and_later_ones_are_dropped() {
        let cell = OnceLock::new();
        assert_eq!(*get_or_offer(&cell, || 1), 1);
        assert_eq!(*get_or_offer(&cell, || 2), 1);
    }
}

//! Helpers shared by the engine test files (`tests/engine_*.rs`): a
//! seedable PRNG, soak scaling, and a lock that makes the multi-threaded
//! tests take turns.

#![allow(dead_code)]

/// splitmix64: tiny, seedable, good enough for choosing operations. Each
/// test file mixes its seeds into the starting state its own way.
pub struct Rng(u64);

impl Rng {
    /// A generator starting at `state`.
    pub fn from_state(state: u64) -> Rng {
        Rng(state)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0..1` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// `true` with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Each of these tests starts more threads than a 2-core machine has cores;
/// run side by side (the harness runs a file's tests in parallel) they would
/// mostly wait for each other's time slices and race less. So they take
/// turns.
pub fn whole_machine() -> std::sync::MutexGuard<'static, ()> {
    static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    MACHINE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether `EVENTSTORE_SOAK` asks for the heavy settings.
pub fn soak() -> bool {
    std::env::var("EVENTSTORE_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `heavy` under soak, else `normal`.
pub fn scaled(normal: usize, heavy: usize) -> usize {
    if soak() { heavy } else { normal }
}

//! Helpers shared by every integration test file, each kept once: a
//! seedable PRNG, the soak switch, a lock that makes the multi-threaded
//! tests take turns, `RawValue`s from text, and the reference model of the
//! state fold.
//!
//! The engine tests include this module directly (`mod support;`); the
//! node tests get it through `tests/common/mod.rs`, which re-exports it.
//!
//! # `EVENTSTORE_SOAK`
//!
//! Set to anything but empty or `0` (`EVENTSTORE_SOAK=1 cargo test
//! --release`), it makes every heavy suite run its heavy settings: more
//! seeds, operations, rounds and threads ([`soak`], [`scaled`]). Every
//! suite reads it through [`soak`] and nowhere else.

#![allow(dead_code)]

use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// splitmix64: tiny, seedable, good enough for choosing operations, so a
/// failing run can be repeated. Each test file mixes its seeds into the
/// starting state its own way.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting at `state`.
    pub fn new(state: u64) -> Rng {
        Rng(state)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0..1` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// `true` with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// A random version-4 UUID in canonical lowercase form.
    pub fn uuid(&mut self) -> String {
        let v = (u128::from(self.next_u64()) << 64 | u128::from(self.next_u64()))
            & !(0xf << 76 | 0x3 << 62)
            | (0x4 << 76 | 0x2 << 62);
        uuid::Uuid::from_u128(v).hyphenated().to_string()
    }
}

/// Whether `EVENTSTORE_SOAK` asks for the heavy settings (see the module
/// docs).
pub fn soak() -> bool {
    std::env::var("EVENTSTORE_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `heavy` under soak, else `normal`.
pub fn scaled(normal: usize, heavy: usize) -> usize {
    if soak() { heavy } else { normal }
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

/// `text` as a `RawValue` (test JSON: it must be valid).
pub fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned())
        .unwrap_or_else(|e| panic!("test JSON is invalid, {text:?}: {e}"))
}

/// The reference model of the state fold (docs/protocol.md, "The state of
/// an aggregate"; the engine's is `src/fold.rs`), one event: an object
/// `event_data` is merged shallowly into the state (`dict.update`), a
/// non-object one leaves it unchanged. A state that is not an object (a
/// snapshot's given state) stays as it is until the first object event,
/// which merges into `{}`.
pub fn fold_into(state: &mut Value, data: &Value) {
    if let Value::Object(obj) = data {
        if !state.is_object() {
            *state = Value::Object(Map::new());
        }
        let Some(s) = state.as_object_mut() else {
            unreachable!("the state was just made an object");
        };
        for (k, v) in obj {
            s.insert(k.clone(), v.clone());
        }
    }
}

/// The fold of `data` values from `start` (a snapshot's state).
pub fn fold_from<'a>(start: Value, data: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut state = start;
    for d in data {
        fold_into(&mut state, d);
    }
    state
}

/// The fold of `data` values from `{}`.
pub fn fold<'a>(data: impl IntoIterator<Item = &'a Value>) -> Value {
    fold_from(Value::Object(Map::new()), data)
}

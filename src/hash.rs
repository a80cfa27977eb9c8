//! A fast keyed hasher for the store's maps.
//!
//! The default `RandomState` (SipHash-1-3) is built to resist hash flooding
//! and costs ~20–30 ns on an aggregate id; the store hashes one per request.
//! This hasher keeps the defence that matters, a per-map random key the
//! client cannot see, but mixes with a folded 64×64→128-bit multiply
//! (the construction of foldhash and of aHash's fallback) at a few ns per
//! key. Keys come from clients, so an unkeyed hash (FxHash) would let a
//! client pick colliding ids and degrade a shard to a linear scan.

use std::hash::{BuildHasher, Hasher};

const MULTIPLIER: u64 = 0x5851_f42d_4c95_7f2d;

fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Builds [`KeyedHasher`]s with one random key per map.
#[derive(Clone, Debug)]
pub struct KeyedState {
    k0: u64,
    k1: u64,
}

impl Default for KeyedState {
    fn default() -> Self {
        let seed = std::collections::hash_map::RandomState::new();
        KeyedState {
            k0: seed.hash_one(0x9e37_79b9_u64) | 1,
            k1: seed.hash_one(0x7f4a_7c15_u64),
        }
    }
}

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;

    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher {
            acc: self.k1,
            key: self.k0,
        }
    }
}

/// The hasher; see the module docs.
#[derive(Clone, Debug)]
pub struct KeyedHasher {
    acc: u64,
    key: u64,
}

impl Hasher for KeyedHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.acc = folded_multiply(self.acc ^ u64::from_le_bytes(word), self.key ^ MULTIPLIER);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.acc = folded_multiply(
                self.acc ^ u64::from_le_bytes(word),
                self.key.rotate_left(17),
            );
        }
        self.acc = self.acc.wrapping_add(bytes.len() as u64).rotate_left(23);
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.acc = folded_multiply(self.acc ^ i, self.key ^ MULTIPLIER);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        folded_multiply(self.acc, self.key.rotate_left(31))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn distinct_short_keys_hash_apart() {
        let s = KeyedState::default();
        let hashes: HashSet<u64> = (0..100_000)
            .map(|i| s.hash_one(format!("agg-{i}")))
            .collect();
        assert_eq!(hashes.len(), 100_000);
        // Prefix-related keys differ too (length is mixed in).
        assert_ne!(s.hash_one(""), s.hash_one("\0"));
        assert_ne!(s.hash_one("a"), s.hash_one("a\0"));
    }

    #[test]
    fn low_bits_spread_over_buckets() {
        let s = KeyedState::default();
        let mut buckets = [0u32; 64];
        for i in 0..64_000 {
            buckets[(s.hash_one(format!("user-{i}")) & 63) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (700..1300).contains(&b)),
            "{buckets:?}"
        );
    }

    #[test]
    fn keys_differ_between_maps() {
        let (a, b) = (KeyedState::default(), KeyedState::default());
        assert_ne!(a.hash_one("same"), b.hash_one("same"));
    }
}

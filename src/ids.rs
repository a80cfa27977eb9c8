//! Event ids the store generates: a keyed permutation of the sequence number.
//!
//! Every event needs a UUID, and a client may later present one to retry an
//! append, so the store must answer "is this id already stored, and where?"
//! for *every* id, generated or given. Keeping a hash index of all ids costs
//! ~30–50 bytes per event and a hash insert per append. Instead, a generated
//! id is an invertible function of the event's sequence number:
//!
//! ```text
//!   x   = tag (60 bits, random per store) ‖ sequence number (62 bits)
//!   id  = feistel_k(x): 122 bits, laid into a UUID around its version (4)
//!         and variant (0b10) bits
//! ```
//!
//! `feistel_k` is a 4-round Feistel network on 2 × 61 bits keyed by the
//! store's random key: a bijection, so generated ids never collide with each
//! other, and every bit of the id depends on every bit of the input, so ids
//! look random (a block cipher run over a counter is how most PRNGs make
//! random bits). Generating one costs a few multiplications and no syscall.
//! Looking one up inverts the permutation; if the recovered tag is this
//! store's, the rest is the sequence number, and the caller checks the
//! event there ([`IdScheme::sequence_of`]).
//!
//! Client-given ids live in a hash index of their own. A client id could
//! clash with a *future* generated id only if it inverts to this store's
//! 60-bit tag (odds 2⁻⁶⁰ for a random UUID); the store rejects such a given
//! id unless it names an event that already exists (see
//! `store::EventStore::append`), so the two spaces never overlap.
//!
//! The permutation is not cryptographic: it makes ids unique and invertible,
//! not unguessable. Durable stores persist the scheme so ids stay stable.

use crate::types::{EventId, SequenceNumber};
use std::hash::BuildHasher;

const MASK61: u64 = (1 << 61) - 1;
const MASK60: u64 = (1 << 60) - 1;
const MASK62: u64 = (1 << 62) - 1;

/// The key material of one store's id generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdScheme {
    tag: u64,
    keys: [u64; 4],
}

impl IdScheme {
    /// A scheme with fresh random key material (from the standard library's
    /// per-process random hash keys: no extra dependency, one call per store).
    pub fn random() -> IdScheme {
        let state = std::collections::hash_map::RandomState::new();
        let r = |i: u64| state.hash_one(i);
        IdScheme::from_parts(r(0), [r(1), r(2), r(3), r(4)])
    }

    /// Rebuilds a scheme from persisted parts (see [`IdScheme::parts`]).
    pub fn from_parts(tag: u64, keys: [u64; 4]) -> IdScheme {
        IdScheme {
            tag: tag & MASK60,
            keys,
        }
    }

    /// The tag and keys, for persisting.
    pub fn parts(&self) -> (u64, [u64; 4]) {
        (self.tag, self.keys)
    }

    /// The id of the event at `seq`. `seq` must be below 2⁶².
    pub fn generate(&self, seq: SequenceNumber) -> EventId {
        debug_assert!(seq.0 <= MASK62, "sequence number exceeds 62 bits");
        let x = (u128::from(self.tag) << 62) | u128::from(seq.0 & MASK62);
        let y = self.permute(x);
        // Spread the 122 bits around the UUID's version nibble (bits 76..80)
        // and variant bits (62..64).
        let high = (y >> 62) as u64; // 60 bits
        let low = (y as u64) & MASK62;
        let top = ((high >> 12) << 16) | 0x4000 | (high & 0xFFF);
        let bottom = (0b10 << 62) | low;
        EventId::from_u128((u128::from(top) << 64) | u128::from(bottom))
    }

    /// The sequence number whose generated id `id` would be, if it inverts
    /// to this store's tag. The caller still checks that the event at that
    /// position really has this id.
    pub fn sequence_of(&self, id: EventId) -> Option<SequenceNumber> {
        let v = id.as_u128();
        let (top, bottom) = ((v >> 64) as u64, v as u64);
        if (top >> 12) & 0xF != 4 || bottom >> 62 != 0b10 {
            return None;
        }
        let high = ((top >> 16) << 12) | (top & 0xFFF);
        let y = (u128::from(high) << 62) | u128::from(bottom & MASK62);
        let x = self.unpermute(y);
        ((x >> 62) as u64 == self.tag).then_some(SequenceNumber(x as u64 & MASK62))
    }

    /// Whether `id` has the form of an id this store generates.
    pub fn is_tagged(&self, id: EventId) -> bool {
        self.sequence_of(id).is_some()
    }

    fn round(&self, half: u64, i: usize) -> u64 {
        // splitmix64's finaliser over the half xor a round key: every input
        // bit affects every output bit.
        let mut z = half ^ self.keys[i];
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) & MASK61
    }

    fn permute(&self, x: u128) -> u128 {
        let (mut l, mut r) = ((x >> 61) as u64 & MASK61, x as u64 & MASK61);
        for i in 0..4 {
            (l, r) = (r, l ^ self.round(r, i));
        }
        (u128::from(l) << 61) | u128::from(r)
    }

    fn unpermute(&self, y: u128) -> u128 {
        let (mut l, mut r) = ((y >> 61) as u64 & MASK61, y as u64 & MASK61);
        for i in (0..4).rev() {
            (l, r) = (r ^ self.round(l, i), l);
        }
        (u128::from(l) << 61) | u128::from(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_ids_invert_to_their_sequence_number() {
        let s = IdScheme::random();
        for seq in (1..5_000).chain([MASK62 - 1, MASK62, 1 << 40]) {
            let id = s.generate(SequenceNumber(seq));
            assert_eq!(s.sequence_of(id), Some(SequenceNumber(seq)));
        }
    }

    #[test]
    fn generated_ids_are_distinct_v4_uuids() {
        let s = IdScheme::random();
        let mut seen = HashSet::new();
        for seq in 1..50_000 {
            let id = s.generate(SequenceNumber(seq));
            let u = uuid::Uuid::from_bytes(id.0);
            assert_eq!(u.get_version_num(), 4);
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn generated_ids_differ_in_their_leading_bits_too() {
        let s = IdScheme::random();
        let a = s.generate(SequenceNumber(1)).as_u128() >> 96;
        let b = s.generate(SequenceNumber(2)).as_u128() >> 96;
        let c = s.generate(SequenceNumber(3)).as_u128() >> 96;
        assert!(a != b || b != c);
    }

    #[test]
    fn foreign_ids_are_not_tagged() {
        let s = IdScheme::random();
        let other = IdScheme::random();
        let id = other.generate(SequenceNumber(1));
        assert_ne!(s, other);
        assert!(s.sequence_of(id).is_none());
        assert!(s.sequence_of(EventId([0; 16])).is_none());
    }

    #[test]
    fn persisted_parts_rebuild_the_same_scheme() {
        let s = IdScheme::random();
        let (tag, keys) = s.parts();
        let t = IdScheme::from_parts(tag, keys);
        assert_eq!(
            s.generate(SequenceNumber(42)),
            t.generate(SequenceNumber(42))
        );
    }
}

//! Word-at-a-time byte search ("SIMD within a register"), for the two
//! scans every request line goes through: finding its newline, and finding
//! the end of each JSON string in it.
//!
//! A byte loop costs several instructions per byte (load, compare, bounds
//! check, branch); reading eight bytes as one `u64` and testing all of them
//! with a few arithmetic operations costs about one and a half per byte,
//! in safe code. The classic bit tricks (Hacker's Delight, "find a zero
//! byte"):
//!
//! - `(x - 0x0101…01) & !x & 0x8080…80` is non-zero iff some byte of `x`
//!   is zero, and its lowest set bit lies in the *first* zero byte (a
//!   borrow only propagates towards higher bytes, so false positives can
//!   only appear above a true one). `x ^ splat(b)` turns bytes equal to `b`
//!   into zeros.
//! - `(x - splat(n)) & !x & 0x8080…80` likewise flags the first byte below
//!   `n` (for `n <= 0x80`).
//!
//! Words are read little-endian, so the lowest bit is the first byte.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

const fn splat(b: u8) -> u64 {
    ONES * b as u64
}

/// High bit set in each byte of `x` that is zero (exact for the first).
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// High bit set in each byte of `x` below 0x20 (exact for the first).
fn control_bytes(x: u64) -> u64 {
    x.wrapping_sub(splat(0x20)) & !x & HIGHS
}

/// The index of the first byte at or after `from` that `word` flags
/// (testing eight bytes at a time) or, in the last few bytes, that `byte`
/// accepts.
#[inline(always)]
fn first_from(
    bytes: &[u8],
    mut from: usize,
    word: impl Fn(u64) -> u64,
    byte: impl Fn(u8) -> bool,
) -> Option<usize> {
    while let Some(chunk) = bytes.get(from..from + 8) {
        let Ok(w) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let hits = word(u64::from_le_bytes(w));
        if hits != 0 {
            return Some(from + (hits.trailing_zeros() / 8) as usize);
        }
        from += 8;
    }
    bytes
        .get(from..)?
        .iter()
        .position(|&b| byte(b))
        .map(|p| from + p)
}

/// The index of the first `needle` in `bytes`.
pub(crate) fn find(bytes: &[u8], needle: u8) -> Option<usize> {
    first_from(bytes, 0, |x| zero_bytes(x ^ splat(needle)), |b| b == needle)
}

/// The index of the first byte at or after `from` that cannot appear
/// unescaped inside a JSON string: `"`, `\` or a control character (below
/// 0x20).
pub(crate) fn find_string_special(bytes: &[u8], from: usize) -> Option<usize> {
    first_from(
        bytes,
        from,
        |x| zero_bytes(x ^ splat(b'"')) | zero_bytes(x ^ splat(b'\\')) | control_bytes(x),
        |b| b == b'"' || b == b'\\' || b < 0x20,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_special(bytes: &[u8]) -> Option<usize> {
        bytes
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
    }

    #[test]
    fn agrees_with_a_byte_loop_at_every_position_and_byte() {
        // Every byte value at every offset of words and tails, with a
        // lower "decoy" byte before it to provoke borrows.
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    for decoy in [b'a', 0x21, 0xff, 0x80, 0x01] {
                        let mut v = vec![b'x'; len];
                        v[at] = b;
                        if at + 1 < len {
                            v[at + 1] = decoy;
                        }
                        assert_eq!(find_string_special(&v, 0), naive_special(&v), "{v:?}");
                        let from = at.min(3);
                        assert_eq!(
                            find_string_special(&v, from),
                            naive_special(&v[from..]).map(|p| p + from),
                            "{v:?} from {from}"
                        );
                        assert_eq!(find(&v, b'\n'), v.iter().position(|&c| c == b'\n'), "{v:?}");
                    }
                }
            }
        }
    }
}

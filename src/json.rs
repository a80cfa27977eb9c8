//! Small, allocation-free JSON writing helpers used on the hot path.
//!
//! Replies are built by appending bytes to one output buffer per batch;
//! these helpers write the pieces (escaped strings, integers) without going
//! through `fmt` or building a `serde_json::Value`.

/// Appends `s` as a JSON string literal (with quotes), escaped as
/// `serde_json` would.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let clean = s
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f);
    if clean {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec<u8> cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Appends the decimal form of `v`.
pub fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `"key":` (the key must need no escaping: callers pass literals).
pub fn write_key(out: &mut Vec<u8>, key: &str) {
    debug_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_like_serde_json() {
        for s in [
            "plain",
            "",
            "quote\"",
            "back\\slash",
            "nl\n",
            "ctl\u{1}",
            "ünï €",
            "\u{7f}",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn integers_print_in_decimal() {
        for v in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
    }
}

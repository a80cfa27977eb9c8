//! Aggregate ids as NATS subjects, reversibly.
//!
//! An aggregate's events go to `<stream>.<category>.<rest>`, where the
//! category is the id up to its first `-` (the protocol's category filter:
//! `user` matches `user-123`), so that a category is the subject wildcard
//! `<stream>.<category>.*` and one aggregate is one subject.
//!
//! A subject token cannot hold `.`, `*`, `>`, whitespace or be empty, so each
//! part is encoded:
//!
//! - bytes `A-Z a-z 0-9 - _` stay as they are;
//! - every other byte (UTF-8 bytes of non-ASCII characters included) is
//!   `~XX`, two upper-case hex digits;
//! - an empty part is `~` alone (a `~` not followed by two hex digits);
//! - an id without `-` has the rest token `~n` (no dash at all), which no
//!   encoded part can be, so `user` and `user-` stay apart.
//!
//! Decoding reverses this exactly; anything else is not a subject of ours.

use std::fmt::Write as _;

/// The rest token of an id that has no `-`.
const NO_DASH: &str = "~n";

/// The subject of `aggregate_id`'s events under `prefix` (the stream name).
pub fn encode(prefix: &str, aggregate_id: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + aggregate_id.len() + 8);
    out.push_str(prefix);
    out.push('.');
    match aggregate_id.split_once('-') {
        Some((category, rest)) => {
            token(category, &mut out);
            out.push('.');
            token(rest, &mut out);
        }
        None => {
            token(aggregate_id, &mut out);
            out.push('.');
            out.push_str(NO_DASH);
        }
    }
    out
}

/// The subject wildcard of a category (`<prefix>.<category>.*`).
pub fn category_filter(prefix: &str, category: &str) -> String {
    let mut out = format!("{prefix}.");
    token(category, &mut out);
    out.push_str(".*");
    out
}

fn token(part: &str, out: &mut String) {
    if part.is_empty() {
        out.push('~');
        return;
    }
    for &b in part.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            let _ = write!(out, "~{b:02X}");
        }
    }
}

/// The aggregate id of a subject made by [`encode`] with `prefix`, or
/// `None` when it is not one.
pub fn decode(prefix: &str, subject: &str) -> Option<String> {
    let tokens = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let (category, rest) = tokens.split_once('.')?;
    let mut id = untoken(category)?;
    if rest != NO_DASH {
        id.push('-');
        id.push_str(&untoken(rest)?);
    }
    Some(id)
}

fn untoken(token: &str) -> Option<String> {
    if token == "~" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'~' => {
                let hex = token.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_subject(s: &str) -> bool {
        s.split('.').all(|t| {
            !t.is_empty() && !t.contains(['*', '>', ' ', '\t', '\r', '\n']) && t.is_ascii()
        })
    }

    #[test]
    fn ids_round_trip_through_valid_subjects() {
        let ids = [
            "user-123",
            "user",
            "user-",
            "-",
            "-abc",
            "a.b-c.d",
            "with space-x y",
            "star*-gt>",
            "tilde~-~7E",
            "ünïcödé-日本",
            "emoji-🎉",
            "a--b",
            "tab\tand\nnewline",
            "~",
            "~n",
            "x-~n",
        ];
        for id in ids {
            let subject = encode("es", id);
            assert!(
                valid_subject(&subject),
                "{id:?} → invalid subject {subject:?}"
            );
            assert_eq!(decode("es", &subject).as_deref(), Some(id), "{subject}");
        }
    }

    #[test]
    fn the_category_is_its_own_token() {
        assert_eq!(encode("es", "user-123"), "es.user.123");
        assert_eq!(encode("es", "user-1-2"), "es.user.1-2");
        assert_eq!(encode("es", "user"), "es.user.~n");
        assert_eq!(encode("es", "user-"), "es.user.~");
        assert_eq!(encode("es", "-x"), "es.~.x");
        assert_eq!(encode("es", "a.b-c"), "es.a~2Eb.c");
        assert_eq!(category_filter("es", "user"), "es.user.*");
        assert_ne!(encode("es", "user"), encode("es", "user-"));
    }

    #[test]
    fn foreign_subjects_are_not_ids() {
        for s in [
            "es",
            "es.user",
            "other.user.1",
            "es.us~zz.1",
            "es.u.~4",
            "es.u.a.b",
            "es.u~C3.x",
        ] {
            assert_eq!(decode("es", s), None, "{s}");
        }
    }
}

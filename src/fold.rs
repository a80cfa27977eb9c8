//! The fold that turns an aggregate's events into its state.
//!
//! Starting from `{}`, each event whose `event_data` is a JSON object merges
//! its keys into the state, each replacing the key of the same name (a
//! shallow merge, like Python's `dict.update`: a replaced key keeps its
//! position, a new key goes last). A non-object `event_data` leaves the state
//! unchanged.
//!
//! A snapshot may start the fold from a state a client gave, which may be any
//! JSON. If it is not an object, it stays as it is until the first object
//! event, which merges into `{}` (there is nothing to merge into otherwise).
//!
//! The fold works on raw JSON text: each object is split into its top-level
//! `(key, raw value)` pairs by the request scanner, values are never parsed,
//! and the result is written back as text. Numbers, nested key order and
//! escapes inside values come out exactly as they went in, and deep nesting
//! below the top level costs nothing (values are skipped without recursion).
//!
//! Keys are compared in one canonical spelling (`escapes::canonical_key`), read
//! escape by escape without ever failing: stored text may hold a lone
//! surrogate (written by an earlier version, which accepted one, or given
//! to the library as a `RawValue`), and a key holding one is a key like any
//! other. (Decoding keys with serde_json, as this once did, failed on such
//! a key and dropped it and every key after it.)

use crate::escapes::canonical_key;
use crate::scan::Scanner;
use std::borrow::Cow;
use std::collections::HashMap;

/// Above this many keys the fold indexes keys in a hash map; below it a
/// linear scan of a short vector is faster.
const LINEAR_KEYS: usize = 16;

/// An in-progress fold, borrowing the texts it folds.
#[derive(Default)]
pub struct Fold<'a> {
    /// The state when it is not an object (only from a snapshot's state).
    other: Option<&'a str>,
    /// Each key in its canonical spelling (written back as it is), with its
    /// value's raw text.
    entries: Vec<(Cow<'a, str>, &'a str)>,
    index: HashMap<Cow<'a, str>, usize>,
}

impl<'a> Fold<'a> {
    /// A fold starting from `{}`.
    pub fn new() -> Fold<'a> {
        Fold::default()
    }

    /// A fold starting from a given state (any JSON text, already valid).
    pub fn from_state(state: &'a str) -> Fold<'a> {
        let mut fold = Fold::new();
        if is_object(state) {
            fold.merge(state);
        } else {
            fold.other = Some(state);
        }
        fold
    }

    /// Folds one event's `event_data` (valid JSON text) into the state.
    pub fn apply(&mut self, data: &'a str) {
        if is_object(data) {
            self.other = None;
            self.merge(data);
        }
    }

    fn merge(&mut self, object: &'a str) {
        let mut scanner = Scanner::new(object);
        let merged = scanner.object(|s, key, escaped| {
            let value = s.stored_value()?;
            let key = if escaped {
                Cow::Owned(canonical_key(key))
            } else {
                Cow::Borrowed(key)
            };
            self.set(key, value);
            Some(())
        });
        // The text was validated when it was stored; a failure here would be
        // a bug, and the safest response is to keep what was merged.
        debug_assert!(merged.is_some(), "stored JSON failed to parse: {object}");
    }

    fn set(&mut self, key: Cow<'a, str>, value: &'a str) {
        if self.entries.len() < LINEAR_KEYS {
            if let Some(slot) = self.entries.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = value;
                return;
            }
        } else {
            if self.index.is_empty() {
                for (i, (k, _)) in self.entries.iter().enumerate() {
                    self.index.insert(k.clone(), i);
                }
            }
            if let Some(&i) = self.index.get(&key) {
                self.entries[i].1 = value;
                return;
            }
            self.index.insert(key.clone(), self.entries.len());
        }
        self.entries.push((key, value));
    }

    /// Appends the state as JSON text.
    pub fn write(&self, out: &mut Vec<u8>) {
        if let Some(other) = self.other {
            out.extend_from_slice(other.as_bytes());
            return;
        }
        out.push(b'{');
        for (i, (key, value)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Canonical keys are written as they are: already escaped.
            out.push(b'"');
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'}');
    }

    /// The state as a JSON string.
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        self.write(&mut out);
        // Built only from valid UTF-8 pieces.
        String::from_utf8(out).unwrap_or_else(|e| panic!("a folded state is not UTF-8: {e}"))
    }
}

fn is_object(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(start: Option<&str>, events: &[&str]) -> String {
        let mut f = start.map_or_else(Fold::new, Fold::from_state);
        for e in events {
            f.apply(e);
        }
        f.to_json()
    }

    #[test]
    fn empty_fold_is_empty_object() {
        assert_eq!(fold(None, &[]), "{}");
    }

    #[test]
    fn shallow_merge_replaces_keys_in_place_and_appends_new_ones() {
        let state = fold(
            None,
            &[r#"{"a":1,"b":{"x":1}}"#, r#"{"c":3,"a":2,"b":{"y":2}}"#],
        );
        assert_eq!(state, r#"{"a":2,"b":{"y":2},"c":3}"#);
    }

    #[test]
    fn non_object_events_leave_state_unchanged() {
        assert_eq!(
            fold(None, &[r#"{"a":1}"#, "5", "[1,2]", "null", r#""s""#]),
            r#"{"a":1}"#
        );
    }

    #[test]
    fn raw_values_round_trip_exactly() {
        let data = r#"{"big":123456789012345678901234567890,"f":1.50,"e":"\u00e9\n","deep":[[[[{"k":[]}]]]]}"#;
        let state: serde_json::Value = serde_json::from_str(&fold(None, &[data])).unwrap();
        let given: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(state, given);
        assert!(fold(None, &[data]).contains("123456789012345678901234567890"));
        assert!(fold(None, &[data]).contains("1.50"));
    }

    #[test]
    fn escaped_keys_merge_with_plain_ones() {
        assert_eq!(fold(None, &[r#"{"a":1}"#, r#"{"\u0061":2}"#]), r#"{"a":2}"#);
    }

    #[test]
    fn lone_surrogate_keys_are_keys_like_any_other() {
        // The case of issue 13: the key and every key after it were lost.
        assert_eq!(
            fold(None, &[r#"{"a":1}"#, r#"{"\udc00":1,"b":2}"#]),
            r#"{"a":1,"\udc00":1,"b":2}"#
        );
        // Spelled differently, the same key; a different unit, another key.
        assert_eq!(
            fold(
                None,
                &[r#"{"\ud800":1,"x":0}"#, r#"{"\uD800":2,"\ud801":3}"#]
            ),
            r#"{"\ud800":2,"x":0,"\ud801":3}"#
        );
        // Lone surrogates inside values are kept as written.
        assert_eq!(
            fold(Some(r#"{"\ud800":"\udc00x"}"#), &[r#"{"b":["\ud800"]}"#]),
            r#"{"\ud800":"\udc00x","b":["\ud800"]}"#
        );
    }

    #[test]
    fn escaped_keys_are_written_as_serde_json_writes_them() {
        assert_eq!(
            fold(None, &[r#"{"\u00e9\/\u0022":1,"\ud83d\ude00\n":2}"#]),
            "{\"é/\\\"\":1,\"😀\\n\":2}"
        );
    }

    #[test]
    fn values_nest_deeper_than_any_limit() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let data = format!(r#"{{"d":{deep},"after":"x\"]}}"}}"#);
        assert_eq!(
            fold(None, &[r#"{"a":1}"#, &data]),
            format!(r#"{{"a":1,"d":{deep},"after":"x\"]}}"}}"#)
        );
    }

    #[test]
    fn duplicate_keys_in_one_object_last_wins() {
        assert_eq!(fold(None, &[r#"{"a":1,"b":2,"a":3}"#]), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn many_keys_switch_to_the_index_and_stay_correct() {
        let first: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let first = format!("{{{}}}", first.join(","));
        let second = r#"{"k3":"x","k39":"y","new":true}"#;
        let state: serde_json::Value =
            serde_json::from_str(&fold(None, &[&first, second])).unwrap();
        assert_eq!(state["k3"], "x");
        assert_eq!(state["k39"], "y");
        assert_eq!(state["k4"], 4);
        assert_eq!(state["new"], true);
        assert_eq!(state.as_object().unwrap().len(), 41);
    }

    #[test]
    fn snapshot_start_states() {
        assert_eq!(
            fold(Some(r#"{"a":1}"#), &[r#"{"b":2}"#]),
            r#"{"a":1,"b":2}"#
        );
        assert_eq!(fold(Some("42"), &[]), "42");
        assert_eq!(fold(Some("42"), &["7"]), "42");
        assert_eq!(fold(Some("42"), &[r#"{"b":2}"#]), r#"{"b":2}"#);
    }
}

//! Every message of docs/protocol.md, its reply fields and their order.

mod common;
use common::*;
use serde_json::{Value, json};

const ID_A: &str = "00000000-0000-4000-8000-00000000000a";
const ID_B: &str = "00000000-0000-4000-8000-00000000000b";
const ID_C: &str = "00000000-0000-4000-8000-00000000000c";
const ID_D: &str = "00000000-0000-4000-8000-00000000000d";

fn ev(event_type: &str, data: Value) -> Value {
    json!({"event_type": event_type, "event_data": data})
}

fn ev_id(event_type: &str, id: &str) -> Value {
    json!({"event_type": event_type, "event_data": {}, "event_id": id})
}

fn batch(msg_id: u64, aggregate: &str, events: Vec<Value>, version: Value) -> Value {
    json!({"type": "append", "msg_id": msg_id, "aggregate_id": aggregate, "events": events, "version": version})
}

fn append_id(msg_id: u64, aggregate: &str, id: &str, version: Value) -> Value {
    json!({"type": "append", "msg_id": msg_id, "aggregate_id": aggregate, "event_type": "T",
           "event_data": {}, "version": version, "event_id": id})
}

fn appended_id(in_reply_to: u64, id: &str, seq: u64) -> Value {
    json!({"type": "appended", "in_reply_to": in_reply_to, "event_id": id, "sequence_number": seq})
}

fn appended_batch(in_reply_to: u64, ids: Vec<Value>, seqs: Vec<u64>, version: u64) -> Value {
    json!({"type": "appended", "in_reply_to": in_reply_to, "event_ids": ids, "sequence_numbers": seqs, "version": version})
}

fn head(in_reply_to: u64, n: u64) -> Value {
    // An all_read whose events are not checked one by one: only their count.
    let events: Vec<Value> = (0..n).map(|_| json!("<any>")).collect();
    json!({"type": "all_read", "in_reply_to": in_reply_to, "events": events, "head": n})
}

fn conflict(in_reply_to: u64, expected: u64, current: u64) -> Value {
    json!({"type": "concurrency_error", "in_reply_to": in_reply_to,
           "error": format!("Expected version {expected}, got {current}")})
}

// ---------------------------------------------------------------- append

#[test]
fn append_single_versions_and_global_sequence() {
    check(
        &[
            req(append(1, "a", "T", json!({"x": 1}), json!(0))),
            req(append(2, "a", "T", json!({"x": 2}), json!(1))),
            req(append(3, "b", "T", json!({}), json!(0))),
            req(append(4, "a", "T", json!({}), json!(2))),
            req(read_stream(5, "a")),
        ],
        &[
            appended(1, 1),
            appended(2, 2),
            appended(3, 3),
            appended(4, 4),
            json!({"type": "stream_read", "in_reply_to": 5, "aggregate_id": "a", "version": 3, "events": [
                event(1, "a", 1, "T", json!({"x": 1}), None),
                event(2, "a", 2, "T", json!({"x": 2}), None),
                event(4, "a", 3, "T", json!({}), None),
            ]}),
        ],
    );
}

#[test]
fn append_any_version_skips_the_check() {
    check(
        &[
            req(append(1, "a", "T", json!({}), json!("any"))),
            req(append(2, "a", "T", json!({}), json!("any"))),
            req(append(3, "a", "T", json!({}), json!(2))),
        ],
        &[appended(1, 1), appended(2, 2), appended(3, 3)],
    );
}

#[test]
fn append_event_data_defaults_to_empty_object() {
    check(
        &[
            req(
                json!({"type": "append", "msg_id": 1, "aggregate_id": "a", "event_type": "T", "version": 0}),
            ),
            req(read_all(2)),
        ],
        &[
            appended(1, 1),
            json!({"type": "all_read", "in_reply_to": 2, "events": [event(1, "a", 1, "T", json!({}), None)], "head": 1}),
        ],
    );
}

#[test]
fn append_distinct_generated_event_ids() {
    let out = check(
        &[
            req(append(1, "a", "T", json!({}), json!(0))),
            req(append(2, "b", "T", json!({}), json!(0))),
            req(batch(
                3,
                "a",
                vec![ev("T", json!({})), ev("T", json!({}))],
                json!(1),
            )),
        ],
        &[
            appended(1, 1),
            appended(2, 2),
            appended_batch(3, vec![json!("<uuid>"), json!("<uuid>")], vec![3, 4], 3),
        ],
    );
    let b = out.bodies();
    let mut ids = vec![b[0]["event_id"].clone(), b[1]["event_id"].clone()];
    ids.extend(b[2]["event_ids"].as_array().unwrap().iter().cloned());
    let set: std::collections::HashSet<String> = ids.iter().map(|v| v.to_string()).collect();
    assert_eq!(set.len(), 4, "generated ids repeat: {ids:?}");
}

#[test]
fn concurrency_error_text_and_nothing_appended() {
    check(
        &[
            req(append(1, "a", "T", json!({}), json!(0))),
            req(append(2, "a", "T", json!({}), json!(3))),
            req(append(3, "a", "T", json!({}), json!(0))),
            req(append(4, "b", "T", json!({}), json!(1))),
            req(read_all(5)),
        ],
        &[
            appended(1, 1),
            conflict(2, 3, 1),
            conflict(3, 0, 1),
            conflict(4, 1, 0),
            head(5, 1),
        ],
    );
}

#[test]
fn append_with_metadata_and_client_event_id() {
    check(
        &[
            req(
                json!({"type": "append", "msg_id": 1, "aggregate_id": "a", "event_type": "T",
                       "event_data": {"k": [1, 2]}, "version": 0, "metadata": {"user": "u1", "n": 1},
                       "event_id": ID_A}),
            ),
            req(read_stream(2, "a")),
        ],
        &[
            appended_id(1, ID_A, 1),
            json!({"type": "stream_read", "in_reply_to": 2, "aggregate_id": "a", "version": 1, "events": [{
                "sequence_number": 1, "event_id": ID_A, "aggregate_id": "a", "version": 1, "event_type": "T",
                "event_data": {"k": [1, 2]}, "metadata": {"user": "u1", "n": 1}, "recorded_at": "<timestamp>"}]}),
        ],
    );
}

#[test]
fn append_batch() {
    check(
        &[
            req(append(1, "b", "T", json!({}), json!(0))),
            req(batch(
                2,
                "a",
                vec![
                    ev("X", json!({"i": 1})),
                    ev("Y", json!({"i": 2})),
                    ev("Z", json!(3)),
                ],
                json!(0),
            )),
            req(batch(3, "a", vec![ev("W", json!({}))], json!(3))),
            req(batch(4, "a", vec![ev("V", json!({}))], json!("any"))),
            req(read_stream(5, "a")),
        ],
        &[
            appended(1, 1),
            appended_batch(2, vec![json!("<uuid>"); 3], vec![2, 3, 4], 3),
            appended_batch(3, vec![json!("<uuid>")], vec![5], 4),
            appended_batch(4, vec![json!("<uuid>")], vec![6], 5),
            json!({"type": "stream_read", "in_reply_to": 5, "aggregate_id": "a", "version": 5, "events": [
                event(2, "a", 1, "X", json!({"i": 1}), None),
                event(3, "a", 2, "Y", json!({"i": 2}), None),
                event(4, "a", 3, "Z", json!(3), None),
                event(5, "a", 4, "W", json!({}), None),
                event(6, "a", 5, "V", json!({}), None),
            ]}),
        ],
    );
}

#[test]
fn append_batch_with_metadata_and_ids() {
    check(
        &[
            req(batch(
                1,
                "a",
                vec![
                    json!({"event_type": "X", "event_data": {"i": 1}, "metadata": {"m": 1}, "event_id": ID_A}),
                    json!({"event_type": "Y"}),
                ],
                json!(0),
            )),
            req(read_all(2)),
        ],
        &[
            appended_batch(1, vec![json!(ID_A), json!("<uuid>")], vec![1, 2], 2),
            json!({"type": "all_read", "in_reply_to": 2, "events": [
                {"sequence_number": 1, "event_id": ID_A, "aggregate_id": "a", "version": 1, "event_type": "X",
                 "event_data": {"i": 1}, "metadata": {"m": 1}, "recorded_at": "<timestamp>"},
                event(2, "a", 2, "Y", json!({}), None),
            ], "head": 2}),
        ],
    );
}

#[test]
fn append_batch_stale_version_appends_nothing() {
    check(
        &[
            req(append(1, "a", "T", json!({}), json!(0))),
            req(batch(
                2,
                "a",
                vec![ev("X", json!({})), ev("Y", json!({}))],
                json!(0),
            )),
            req(read_all(3)),
        ],
        &[appended(1, 1), conflict(2, 0, 1), head(3, 1)],
    );
}

#[test]
fn append_batch_of_1000_is_accepted() {
    let events: Vec<Value> = (0..1000).map(|i| ev("T", json!({"i": i}))).collect();
    let out = run_bytes(
        &[],
        input(&[req(batch(1, "a", events, json!(0)))]).as_bytes(),
    );
    assert!(out.status.success());
    assert_eq!(out.lines.len(), 1);
    let b = &out.lines[0]["body"];
    assert_eq!(b["type"], "appended");
    assert_eq!(b["version"], 1000);
    let seqs: Vec<u64> = b["sequence_numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=1000).collect::<Vec<u64>>());
    assert_eq!(b["event_ids"].as_array().unwrap().len(), 1000);
}

#[test]
fn append_batch_over_1000_is_error_12() {
    let events: Vec<Value> = (0..1001).map(|_| ev("T", json!({}))).collect();
    check(
        &[req(batch(1, "a", events, json!(0))), req(read_all(2))],
        &[error(1, 12, "<contains:events>"), head(2, 0)],
    );
}

#[test]
fn append_batch_empty_is_error_12() {
    check(
        &[req(batch(1, "a", vec![], json!(0))), req(read_all(2))],
        &[error(1, 12, "<contains:events>"), head(2, 0)],
    );
}

#[test]
fn append_both_forms_is_error_12() {
    let both = json!({"type": "append", "msg_id": 1, "aggregate_id": "a", "event_type": "T",
                      "events": [ev("T", json!({}))], "version": 0});
    check(
        &[req(both), req(read_all(2))],
        &[error(1, 12, "<string>"), head(2, 0)],
    );
}

#[test]
fn append_batch_duplicate_ids_is_error_12() {
    check(
        &[
            req(batch(
                1,
                "a",
                vec![ev_id("T", ID_A), ev_id("T", ID_B), ev_id("T", ID_A)],
                json!(0),
            )),
            req(read_all(2)),
        ],
        &[error(1, 12, "<string>"), head(2, 0)],
    );
}

// ------------------------------------------------------- idempotent retry

#[test]
fn retry_single_returns_the_original_whatever_the_version() {
    check(
        &[
            req(append_id(1, "a", ID_A, json!(0))),
            req(append(2, "b", "T", json!({}), json!(0))),
            req(append_id(3, "a", ID_A, json!(0))),
            req(append_id(4, "a", ID_A, json!(7))),
            req(append_id(5, "a", ID_A, json!("any"))),
            req(read_all(6)),
        ],
        &[
            appended_id(1, ID_A, 1),
            appended(2, 2),
            appended_id(3, ID_A, 1),
            appended_id(4, ID_A, 1),
            appended_id(5, ID_A, 1),
            head(6, 2),
        ],
    );
}

#[test]
fn retry_single_of_a_batch_event() {
    // A single append whose event_id is already in this aggregate (appended by a batch).
    check(
        &[
            req(batch(
                1,
                "a",
                vec![ev_id("T", ID_A), ev_id("T", ID_B)],
                json!(0),
            )),
            req(append_id(2, "a", ID_B, json!(0))),
            req(read_all(3)),
        ],
        &[
            appended_batch(1, vec![json!(ID_A), json!(ID_B)], vec![1, 2], 2),
            appended_id(2, ID_B, 2),
            head(3, 2),
        ],
    );
}

#[test]
fn single_id_used_in_another_aggregate_is_error_22() {
    check(
        &[
            req(append_id(1, "a", ID_A, json!(0))),
            req(append_id(2, "b", ID_A, json!(0))),
            // ids are checked before the version: still 22, not concurrency_error
            req(append_id(3, "b", ID_A, json!(9))),
            req(read_all(4)),
        ],
        &[
            appended_id(1, ID_A, 1),
            error(2, 22, "<string>"),
            error(3, 22, "<string>"),
            head(4, 1),
        ],
    );
}

#[test]
fn retry_batch_returns_the_original() {
    check(
        &[
            req(batch(
                1,
                "a",
                vec![ev_id("T", ID_A), ev_id("T", ID_B)],
                json!(0),
            )),
            req(append(2, "a", "T", json!({}), json!(2))),
            req(append(3, "b", "T", json!({}), json!(0))),
            // retried with the old expected version: the original, version that of its last event
            req(batch(
                4,
                "a",
                vec![ev_id("T", ID_A), ev_id("T", ID_B)],
                json!(0),
            )),
            req(batch(
                5,
                "a",
                vec![ev_id("T", ID_A), ev_id("T", ID_B)],
                json!("any"),
            )),
            req(read_all(6)),
        ],
        &[
            appended_batch(1, vec![json!(ID_A), json!(ID_B)], vec![1, 2], 2),
            appended(2, 3),
            appended(3, 4),
            appended_batch(4, vec![json!(ID_A), json!(ID_B)], vec![1, 2], 2),
            appended_batch(5, vec![json!(ID_A), json!(ID_B)], vec![1, 2], 2),
            head(6, 4),
        ],
    );
}

#[test]
fn retry_batch_mismatch_is_error_22() {
    check(
        &[
            req(batch(
                1,
                "a",
                vec![ev_id("T", ID_A), ev_id("T", ID_B)],
                json!(0),
            )),
            req(append_id(2, "a", ID_D, json!(2))),
            // first id known, the next one differs from what followed it
            req(batch(
                3,
                "a",
                vec![ev_id("T", ID_A), ev_id("T", ID_C)],
                json!(0),
            )),
            // first id known, but the batch is longer than what followed it (ID_D follows B)
            req(batch(
                4,
                "a",
                vec![ev_id("T", ID_A), ev_id("T", ID_B), ev_id("T", ID_C)],
                json!(0),
            )),
            // first id known, a later one already stored elsewhere in the aggregate
            req(batch(
                5,
                "a",
                vec![ev_id("T", ID_A), ev_id("T", ID_D)],
                json!(0),
            )),
            req(read_all(6)),
        ],
        &[
            appended_batch(1, vec![json!(ID_A), json!(ID_B)], vec![1, 2], 2),
            appended_id(2, ID_D, 3),
            error(3, 22, "<string>"),
            error(4, 22, "<string>"),
            error(5, 22, "<string>"),
            head(6, 3),
        ],
    );
}

#[test]
fn retry_of_a_batch_with_generated_ids_repeats_the_original() {
    let b = || {
        req(batch(
            0,
            "a",
            vec![ev_id("T", ID_A), ev("T", json!({})), ev("T", json!({}))],
            json!(0),
        ))
    };
    let out = check(
        &[
            b(),
            req(append(1, "b", "T", json!({}), json!(0))),
            b(),
            req(read_all(2)),
        ],
        &[
            appended_batch(
                0,
                vec![json!(ID_A), json!("<uuid>"), json!("<uuid>")],
                vec![1, 2, 3],
                3,
            ),
            appended(1, 4),
            appended_batch(
                0,
                vec![json!(ID_A), json!("<uuid>"), json!("<uuid>")],
                vec![1, 2, 3],
                3,
            ),
            head(2, 4),
        ],
    );
    let r = out.bodies();
    assert_eq!(
        r[0]["event_ids"], r[2]["event_ids"],
        "the retry must repeat the generated ids"
    );
}

#[test]
fn retry_rule_follows_the_stored_events_not_request_boundaries() {
    // docs/protocol.md: a batch whose first id is in this aggregate is a retry when
    // the events that follow it there carry the batch's ids in order.
    check(
        &[
            req(batch(
                1,
                "a",
                vec![ev_id("T", ID_A), ev_id("T", ID_B)],
                json!(0),
            )),
            req(append_id(2, "a", ID_C, json!(2))),
            req(batch(
                3,
                "a",
                vec![ev_id("T", ID_A), ev_id("T", ID_B), ev_id("T", ID_C)],
                json!(9),
            )),
            req(batch(
                4,
                "a",
                vec![ev_id("T", ID_B), ev_id("T", ID_C)],
                json!(9),
            )),
            req(batch(5, "a", vec![ev_id("T", ID_C)], json!(0))),
            req(read_all(6)),
        ],
        &[
            appended_batch(1, vec![json!(ID_A), json!(ID_B)], vec![1, 2], 2),
            appended_id(2, ID_C, 3),
            appended_batch(
                3,
                vec![json!(ID_A), json!(ID_B), json!(ID_C)],
                vec![1, 2, 3],
                3,
            ),
            appended_batch(4, vec![json!(ID_B), json!(ID_C)], vec![2, 3], 3),
            appended_batch(5, vec![json!(ID_C)], vec![3], 3),
            head(6, 3),
        ],
    );
}

#[test]
fn batch_with_a_later_id_already_stored_is_error_22() {
    check(
        &[
            req(append_id(1, "a", ID_B, json!(0))),
            req(append_id(2, "b", ID_C, json!(0))),
            // first id new, second already in this aggregate
            req(batch(
                3,
                "a",
                vec![ev_id("T", ID_A), ev_id("T", ID_B)],
                json!(1),
            )),
            // first id new, second in another aggregate
            req(batch(
                4,
                "a",
                vec![ev_id("T", ID_A), ev_id("T", ID_C)],
                json!(1),
            )),
            // first id in another aggregate
            req(batch(
                5,
                "a",
                vec![ev_id("T", ID_C), ev_id("T", ID_A)],
                json!(1),
            )),
            req(read_all(6)),
        ],
        &[
            appended_id(1, ID_B, 1),
            appended_id(2, ID_C, 2),
            error(3, 22, "<string>"),
            error(4, 22, "<string>"),
            error(5, 22, "<string>"),
            head(6, 2),
        ],
    );
}

#[test]
fn append_checks_fields_before_ids() {
    // Known id, but event_type is invalid: error 12 (fields first), not a retry.
    let bad = json!({"type": "append", "msg_id": 2, "aggregate_id": "a", "event_type": "",
                     "event_data": {}, "version": 0, "event_id": ID_A});
    check(
        &[
            req(append_id(1, "a", ID_A, json!(0))),
            req(bad),
            req(read_all(3)),
        ],
        &[
            appended_id(1, ID_A, 1),
            error(2, 12, "<contains:event_type>"),
            head(3, 1),
        ],
    );
}

// -------------------------------------------------------------- snapshots

#[test]
fn create_snapshot_of_the_fold_and_read_it() {
    check(
        &[
            req(append(1, "a", "T", json!({"a": 1, "b": 1}), json!(0))),
            req(append(2, "a", "T", json!({"b": 2, "c": 3}), json!(1))),
            req(json!({"type": "create_snapshot", "msg_id": 3, "aggregate_id": "a"})),
            req(json!({"type": "read_snapshot", "msg_id": 4, "aggregate_id": "a"})),
        ],
        &[
            appended(1, 1),
            appended(2, 2),
            json!({"type": "snapshot_created", "in_reply_to": 3, "aggregate_id": "a", "version": 2}),
            json!({"type": "snapshot_read", "in_reply_to": 4, "aggregate_id": "a", "version": 2,
                   "state": {"a": 1, "b": 2, "c": 3}}),
        ],
    );
}

#[test]
fn create_snapshot_with_given_state_and_version_replaces_the_old_one() {
    check(
        &[
            req(append(1, "a", "T", json!({"a": 1}), json!(0))),
            req(json!({"type": "create_snapshot", "msg_id": 2, "aggregate_id": "a"})),
            req(append(3, "a", "T", json!({"a": 2}), json!(1))),
            req(
                json!({"type": "create_snapshot", "msg_id": 4, "aggregate_id": "a", "version": 2,
                       "state": {"custom": [1, "x"]}}),
            ),
            req(json!({"type": "read_snapshot", "msg_id": 5, "aggregate_id": "a"})),
            req(json!({"type": "create_snapshot", "msg_id": 6, "aggregate_id": "a", "state": 42})),
            req(json!({"type": "read_snapshot", "msg_id": 7, "aggregate_id": "a"})),
        ],
        &[
            appended(1, 1),
            json!({"type": "snapshot_created", "in_reply_to": 2, "aggregate_id": "a", "version": 1}),
            appended(3, 2),
            json!({"type": "snapshot_created", "in_reply_to": 4, "aggregate_id": "a", "version": 2}),
            json!({"type": "snapshot_read", "in_reply_to": 5, "aggregate_id": "a", "version": 2,
                   "state": {"custom": [1, "x"]}}),
            json!({"type": "snapshot_created", "in_reply_to": 6, "aggregate_id": "a", "version": 2}),
            json!({"type": "snapshot_read", "in_reply_to": 7, "aggregate_id": "a", "version": 2, "state": 42}),
        ],
    );
}

#[test]
fn create_snapshot_stale_version_is_concurrency_error() {
    check(
        &[
            req(append(1, "a", "T", json!({"a": 1}), json!(0))),
            req(append(2, "a", "T", json!({"a": 2}), json!(1))),
            req(json!({"type": "create_snapshot", "msg_id": 3, "aggregate_id": "a", "version": 1})),
            req(json!({"type": "read_snapshot", "msg_id": 4, "aggregate_id": "a"})),
        ],
        &[
            appended(1, 1),
            appended(2, 2),
            conflict(3, 1, 2),
            json!({"type": "error", "in_reply_to": 4, "code": 20, "text": "<string>"}),
        ],
    );
}

#[test]
fn create_snapshot_of_an_empty_aggregate_at_version_0() {
    check(
        &[
            req(json!({"type": "create_snapshot", "msg_id": 1, "aggregate_id": "new"})),
            req(json!({"type": "read_snapshot", "msg_id": 2, "aggregate_id": "new"})),
            req(
                json!({"type": "create_snapshot", "msg_id": 3, "aggregate_id": "new2", "version": 0, "state": {"s": 1}}),
            ),
            req(json!({"type": "read_snapshot", "msg_id": 4, "aggregate_id": "new2"})),
            req(
                json!({"type": "create_snapshot", "msg_id": 5, "aggregate_id": "new3", "version": 1}),
            ),
            req(read_all(6)),
        ],
        &[
            json!({"type": "snapshot_created", "in_reply_to": 1, "aggregate_id": "new", "version": 0}),
            json!({"type": "snapshot_read", "in_reply_to": 2, "aggregate_id": "new", "version": 0, "state": {}}),
            json!({"type": "snapshot_created", "in_reply_to": 3, "aggregate_id": "new2", "version": 0}),
            json!({"type": "snapshot_read", "in_reply_to": 4, "aggregate_id": "new2", "version": 0, "state": {"s": 1}}),
            conflict(5, 1, 0),
            head(6, 0),
        ],
    );
}

#[test]
fn read_snapshot_without_one_is_error_20() {
    check(
        &[
            req(json!({"type": "read_snapshot", "msg_id": 1, "aggregate_id": "nope"})),
            req(append(2, "a", "T", json!({}), json!(0))),
            req(json!({"type": "read_snapshot", "msg_id": 3, "aggregate_id": "a"})),
        ],
        &[
            json!({"type": "error", "in_reply_to": 1, "code": 20, "text": "<string>"}),
            appended(2, 1),
            json!({"type": "error", "in_reply_to": 3, "code": 20, "text": "<string>"}),
        ],
    );
}

// ----------------------------------------------------------------- replay

#[test]
fn replay_with_and_without_snapshot() {
    check(
        &[
            req(append(1, "a", "T", json!({"a": 1}), json!(0))),
            req(append(2, "a", "T", json!({"b": 2}), json!(1))),
            req(
                json!({"type": "create_snapshot", "msg_id": 3, "aggregate_id": "a", "state": {"s": 1}}),
            ),
            req(append(4, "a", "T", json!({"c": 3}), json!(2))),
            req(json!({"type": "replay", "msg_id": 5, "aggregate_id": "a"})),
            req(json!({"type": "replay", "msg_id": 6, "aggregate_id": "a", "use_snapshot": false})),
            req(json!({"type": "replay", "msg_id": 7, "aggregate_id": "a", "use_snapshot": true})),
        ],
        &[
            appended(1, 1),
            appended(2, 2),
            json!({"type": "snapshot_created", "in_reply_to": 3, "aggregate_id": "a", "version": 2}),
            appended(4, 3),
            json!({"type": "replayed", "in_reply_to": 5, "aggregate_id": "a", "events_replayed": 3,
                   "state": {"a": 1, "b": 2, "c": 3}}),
            json!({"type": "replayed", "in_reply_to": 6, "aggregate_id": "a", "events_replayed": 3,
                   "state": {"a": 1, "b": 2, "c": 3}}),
            json!({"type": "replayed", "in_reply_to": 7, "aggregate_id": "a", "snapshot_version": 2,
                   "events_replayed": 1, "state": {"s": 1, "c": 3}}),
        ],
    );
}

#[test]
fn replay_use_snapshot_without_snapshot_is_version_0() {
    check(
        &[
            req(append(1, "a", "T", json!({"a": 1}), json!(0))),
            req(json!({"type": "replay", "msg_id": 2, "aggregate_id": "a", "use_snapshot": true})),
            req(
                json!({"type": "replay", "msg_id": 3, "aggregate_id": "none", "use_snapshot": true}),
            ),
            req(json!({"type": "replay", "msg_id": 4, "aggregate_id": "none"})),
        ],
        &[
            appended(1, 1),
            json!({"type": "replayed", "in_reply_to": 2, "aggregate_id": "a", "snapshot_version": 0,
                   "events_replayed": 1, "state": {"a": 1}}),
            json!({"type": "replayed", "in_reply_to": 3, "aggregate_id": "none", "snapshot_version": 0,
                   "events_replayed": 0, "state": {}}),
            json!({"type": "replayed", "in_reply_to": 4, "aggregate_id": "none", "events_replayed": 0, "state": {}}),
        ],
    );
}

#[test]
fn replay_snapshot_at_head_folds_nothing() {
    check(
        &[
            req(append(1, "a", "T", json!({"a": 1}), json!(0))),
            req(json!({"type": "create_snapshot", "msg_id": 2, "aggregate_id": "a"})),
            req(json!({"type": "replay", "msg_id": 3, "aggregate_id": "a", "use_snapshot": true})),
        ],
        &[
            appended(1, 1),
            json!({"type": "snapshot_created", "in_reply_to": 2, "aggregate_id": "a", "version": 1}),
            json!({"type": "replayed", "in_reply_to": 3, "aggregate_id": "a", "snapshot_version": 1,
                   "events_replayed": 0, "state": {"a": 1}}),
        ],
    );
}

#[test]
fn fold_is_a_shallow_merge_and_skips_non_objects() {
    let datas = [
        json!({"a": 1, "b": {"x": 1}, "c": 1}),
        json!({"b": {"y": 2}}),
        json!(5),
        json!([1, 2]),
        json!("str"),
        json!(null),
        json!(true),
        json!({"a": null, "d": {"z": [1]}}),
        json!({}),
    ];
    let mut lines: Vec<String> = datas
        .iter()
        .enumerate()
        .map(|(i, d)| req(append(i as u64 + 1, "a", "T", d.clone(), json!("any"))))
        .collect();
    lines.push(req(
        json!({"type": "replay", "msg_id": 100, "aggregate_id": "a"}),
    ));
    lines.push(req(
        json!({"type": "create_snapshot", "msg_id": 101, "aggregate_id": "a"}),
    ));
    lines.push(req(
        json!({"type": "read_snapshot", "msg_id": 102, "aggregate_id": "a"}),
    ));
    let state = json!({"a": null, "b": {"y": 2}, "c": 1, "d": {"z": [1]}});
    let mut expected: Vec<Value> = (1..=datas.len() as u64).map(|i| appended(i, i)).collect();
    expected.push(json!({"type": "replayed", "in_reply_to": 100, "aggregate_id": "a", "events_replayed": 9, "state": state}));
    expected.push(
        json!({"type": "snapshot_created", "in_reply_to": 101, "aggregate_id": "a", "version": 9}),
    );
    expected.push(json!({"type": "snapshot_read", "in_reply_to": 102, "aggregate_id": "a", "version": 9, "state": state}));
    check(&lines, &expected);
}

#[test]
fn fold_from_a_non_object_snapshot_state() {
    // A given snapshot state may be any JSON; a non-object event leaves it unchanged.
    check(
        &[
            req(append(1, "a", "T", json!({"a": 1}), json!(0))),
            req(
                json!({"type": "create_snapshot", "msg_id": 2, "aggregate_id": "a", "state": [1, 2]}),
            ),
            req(append(3, "a", "T", json!("not an object"), json!(1))),
            req(json!({"type": "replay", "msg_id": 4, "aggregate_id": "a", "use_snapshot": true})),
        ],
        &[
            appended(1, 1),
            json!({"type": "snapshot_created", "in_reply_to": 2, "aggregate_id": "a", "version": 1}),
            appended(3, 2),
            json!({"type": "replayed", "in_reply_to": 4, "aggregate_id": "a", "snapshot_version": 1,
                   "events_replayed": 1, "state": [1, 2]}),
        ],
    );
}

// -------------------------------------------------------------- get_state

#[test]
fn get_state_far_past_and_far_future() {
    check(
        &[
            req(append(1, "a", "T", json!({"a": 1}), json!(0))),
            req(append(2, "a", "T", json!({"b": 2}), json!(1))),
            req(
                json!({"type": "get_state", "msg_id": 3, "aggregate_id": "a", "timestamp": "1970-01-01T00:00:00Z"}),
            ),
            req(
                json!({"type": "get_state", "msg_id": 4, "aggregate_id": "a", "timestamp": "2999-12-31T23:59:59.999999Z"}),
            ),
            req(
                json!({"type": "get_state", "msg_id": 5, "aggregate_id": "a", "timestamp": "2999-01-01T00:00:00+05:00"}),
            ),
            req(
                json!({"type": "get_state", "msg_id": 6, "aggregate_id": "a", "timestamp": "2000-06-01T12:00:00.5Z"}),
            ),
            req(
                json!({"type": "get_state", "msg_id": 7, "aggregate_id": "nope", "timestamp": "2999-01-01T00:00:00Z"}),
            ),
        ],
        &[
            appended(1, 1),
            appended(2, 2),
            json!({"type": "state", "in_reply_to": 3, "aggregate_id": "a", "timestamp": "1970-01-01T00:00:00Z", "state": {}}),
            json!({"type": "state", "in_reply_to": 4, "aggregate_id": "a", "timestamp": "2999-12-31T23:59:59.999999Z",
                   "state": {"a": 1, "b": 2}}),
            json!({"type": "state", "in_reply_to": 5, "aggregate_id": "a", "timestamp": "2999-01-01T00:00:00+05:00",
                   "state": {"a": 1, "b": 2}}),
            json!({"type": "state", "in_reply_to": 6, "aggregate_id": "a", "timestamp": "2000-06-01T12:00:00.5Z", "state": {}}),
            json!({"type": "state", "in_reply_to": 7, "aggregate_id": "nope", "timestamp": "2999-01-01T00:00:00Z", "state": {}}),
        ],
    );
}

#[test]
fn get_state_at_an_events_recorded_at_includes_it() {
    let mut s = Session::start(&[]);
    s.call(&req(append(1, "a", "T", json!({"a": 1}), json!(0))));
    let all = s.call(&req(read_all(2)));
    let t1 = all["events"][0]["recorded_at"]
        .as_str()
        .unwrap()
        .to_string();
    // Let the clock move on (not asserted: only used to pick the expectation).
    std::thread::sleep(std::time::Duration::from_millis(5));
    s.call(&req(append(3, "a", "T", json!({"b": 2}), json!(1))));
    let all = s.call(&req(read_all(4)));
    let t2 = all["events"][1]["recorded_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(t2 >= t1, "recorded_at goes back: {t1} then {t2}");
    let st = s.call(&req(
        json!({"type": "get_state", "msg_id": 5, "aggregate_id": "a", "timestamp": t1}),
    ));
    let expected_state = if t2 > t1 {
        json!({"a": 1})
    } else {
        json!({"a": 1, "b": 2})
    };
    assert_matches(
        &st,
        &json!({"type": "state", "in_reply_to": 5, "aggregate_id": "a", "timestamp": t1, "state": expected_state}),
    );
    let (status, rest, _) = s.finish();
    assert!(status.success());
    assert!(rest.is_empty());
}

// ------------------------------------------------------- read_stream / all

fn five_on_a_two_on_b() -> Vec<String> {
    // seq: a1 a2 b1 a3 a4 b2 a5
    let mut l = vec![];
    let plan = [
        ("a", 0),
        ("a", 1),
        ("b", 0),
        ("a", 2),
        ("a", 3),
        ("b", 1),
        ("a", 4),
    ];
    for (i, (agg, v)) in plan.iter().enumerate() {
        l.push(req(append(
            i as u64 + 1,
            agg,
            "T",
            json!({"n": i + 1}),
            json!(v),
        )));
    }
    l
}

fn appended_7() -> Vec<Value> {
    (1..=7).map(|i| appended(i, i)).collect()
}

#[test]
fn read_stream_from_version_and_max_count() {
    let mut lines = five_on_a_two_on_b();
    lines.push(req(json!({"type": "read_stream", "msg_id": 10, "aggregate_id": "a", "from_version": 2, "max_count": 2})));
    lines.push(req(json!({"type": "read_stream", "msg_id": 11, "aggregate_id": "a", "from_version": 0, "max_count": 1})));
    lines.push(req(
        json!({"type": "read_stream", "msg_id": 12, "aggregate_id": "a", "from_version": 6}),
    ));
    lines.push(req(
        json!({"type": "read_stream", "msg_id": 13, "aggregate_id": "a", "max_count": 0}),
    ));
    lines.push(req(
        json!({"type": "read_stream", "msg_id": 14, "aggregate_id": "b"}),
    ));
    lines.push(req(
        json!({"type": "read_stream", "msg_id": 15, "aggregate_id": "zzz"}),
    ));
    lines.push(req(json!({"type": "read_stream", "msg_id": 16, "aggregate_id": "a", "from_version": 5, "max_count": 100000})));
    let mut expected = appended_7();
    expected.extend([
        json!({"type": "stream_read", "in_reply_to": 10, "aggregate_id": "a", "version": 5, "events": [
            event(2, "a", 2, "T", json!({"n": 2}), None), event(4, "a", 3, "T", json!({"n": 4}), None)]}),
        json!({"type": "stream_read", "in_reply_to": 11, "aggregate_id": "a", "version": 5, "events": [
            event(1, "a", 1, "T", json!({"n": 1}), None)]}),
        json!({"type": "stream_read", "in_reply_to": 12, "aggregate_id": "a", "version": 5, "events": []}),
        json!({"type": "stream_read", "in_reply_to": 13, "aggregate_id": "a", "version": 5, "events": []}),
        json!({"type": "stream_read", "in_reply_to": 14, "aggregate_id": "b", "version": 2, "events": [
            event(3, "b", 1, "T", json!({"n": 3}), None), event(6, "b", 2, "T", json!({"n": 6}), None)]}),
        json!({"type": "stream_read", "in_reply_to": 15, "aggregate_id": "zzz", "version": 0, "events": []}),
        json!({"type": "stream_read", "in_reply_to": 16, "aggregate_id": "a", "version": 5, "events": [
            event(7, "a", 5, "T", json!({"n": 7}), None)]}),
    ]);
    check(&lines, &expected);
}

#[test]
fn read_all_from_sequence_max_count_head() {
    let mut lines = vec![req(read_all(100))];
    lines.extend(five_on_a_two_on_b());
    lines.push(req(
        json!({"type": "read_all", "msg_id": 10, "from_sequence": 3, "max_count": 2}),
    ));
    lines.push(req(
        json!({"type": "read_all", "msg_id": 11, "from_sequence": 0, "max_count": 1}),
    ));
    lines.push(req(
        json!({"type": "read_all", "msg_id": 12, "from_sequence": 8}),
    ));
    lines.push(req(
        json!({"type": "read_all", "msg_id": 13, "max_count": 0}),
    ));
    lines.push(req(
        json!({"type": "read_all", "msg_id": 14, "from_sequence": 7}),
    ));
    let mut expected =
        vec![json!({"type": "all_read", "in_reply_to": 100, "events": [], "head": 0})];
    expected.extend(appended_7());
    expected.extend([
        json!({"type": "all_read", "in_reply_to": 10, "events": [
            event(3, "b", 1, "T", json!({"n": 3}), None), event(4, "a", 3, "T", json!({"n": 4}), None)], "head": 7}),
        json!({"type": "all_read", "in_reply_to": 11, "events": [event(1, "a", 1, "T", json!({"n": 1}), None)], "head": 7}),
        json!({"type": "all_read", "in_reply_to": 12, "events": [], "head": 7}),
        json!({"type": "all_read", "in_reply_to": 13, "events": [], "head": 7}),
        json!({"type": "all_read", "in_reply_to": 14, "events": [event(7, "a", 5, "T", json!({"n": 7}), None)], "head": 7}),
    ]);
    check(&lines, &expected);
}

#[test]
fn read_all_default_lists_everything_with_event_ids_matching_appends() {
    let mut lines = five_on_a_two_on_b();
    lines.push(req(read_all(10)));
    let out = run_bytes(&[], input(&lines).as_bytes());
    assert!(out.status.success());
    let b = out.bodies();
    let events = b[7]["events"].as_array().unwrap();
    assert_eq!(events.len(), 7);
    let mut last = String::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["event_id"], b[i]["event_id"],
            "read_all event_id differs from the append's"
        );
        let t = e["recorded_at"].as_str().unwrap().to_string();
        assert!(is_timestamp(&t), "bad recorded_at {t}");
        assert!(
            t >= last,
            "recorded_at decreases along sequence order: {last} then {t}"
        );
        last = t;
    }
}

#[test]
fn max_count_above_10000_counts_as_10000() {
    let mut lines: Vec<String> = (0..11)
        .map(|i| {
            req(batch(
                i + 1,
                "a",
                (0..1000).map(|_| json!({"event_type": "T"})).collect(),
                json!("any"),
            ))
        })
        .collect();
    lines.push(req(
        json!({"type": "read_all", "msg_id": 50, "max_count": 20000}),
    ));
    lines.push(req(
        json!({"type": "read_stream", "msg_id": 51, "aggregate_id": "a", "max_count": 1000000}),
    ));
    lines.push(req(
        json!({"type": "read_stream", "msg_id": 52, "aggregate_id": "a"}),
    ));
    let out = run_bytes(&[], input(&lines).as_bytes());
    assert!(out.status.success(), "stderr: {}", out.stderr);
    let b = out.bodies();
    assert_eq!(b.len(), 14);
    assert_eq!(b[10]["version"], 11000);
    assert_eq!(b[11]["type"], "all_read");
    assert_eq!(b[11]["events"].as_array().unwrap().len(), 10000);
    assert_eq!(b[11]["events"][9999]["sequence_number"], 10000);
    assert_eq!(b[11]["head"], 11000);
    assert_eq!(b[12]["events"].as_array().unwrap().len(), 10000);
    assert_eq!(b[12]["version"], 11000);
    assert_eq!(
        b[13]["events"].as_array().unwrap().len(),
        1000,
        "default max_count is 1000"
    );
}

// ----------------------------------------------------------- envelope, init

#[test]
fn init_and_reply_src() {
    let out = check(
        &[
            line("c1", None, read_all(1)),
            line(
                "c1",
                Some("eventstore"),
                json!({"type": "init", "msg_id": 2, "node_id": "n1", "node_ids": ["n1"]}),
            ),
            line("c2", None, read_all(3)),
            line("c3", Some("other"), read_all(4)),
        ],
        &[
            json!({"type": "all_read", "in_reply_to": 1, "events": [], "head": 0}),
            json!({"type": "init_ok", "in_reply_to": 2}),
            json!({"type": "all_read", "in_reply_to": 3, "events": [], "head": 0}),
            json!({"type": "all_read", "in_reply_to": 4, "events": [], "head": 0}),
        ],
    );
    let env: Vec<(Value, Value)> = out
        .lines
        .iter()
        .map(|l| (l["src"].clone(), l["dest"].clone()))
        .collect();
    assert_eq!(
        env,
        [
            (json!("eventstore"), json!("c1")),
            (json!("eventstore"), json!("c1")),
            (json!("n1"), json!("c2")),
            (json!("other"), json!("c3")),
        ]
    );
}

#[test]
fn requests_without_msg_id_get_replies_without_in_reply_to() {
    check(
        &[
            req(
                json!({"type": "append", "aggregate_id": "a", "event_type": "T", "event_data": {}, "version": 0}),
            ),
            req(
                json!({"type": "append", "aggregate_id": "a", "event_type": "T", "event_data": {}, "version": 0}),
            ),
            req(json!({"type": "create_snapshot", "aggregate_id": "a"})),
            req(json!({"type": "read_snapshot", "aggregate_id": "zz"})),
            req(json!({"type": "replay", "aggregate_id": "a"})),
            req(json!({"type": "read_all", "max_count": 0})),
            req(json!({"type": "frobnicate"})),
            req(json!({"type": "init", "node_id": "n1", "node_ids": ["n1"]})),
        ],
        &[
            json!({"type": "appended", "event_id": "<uuid>", "sequence_number": 1}),
            json!({"type": "concurrency_error", "error": "Expected version 0, got 1"}),
            json!({"type": "snapshot_created", "aggregate_id": "a", "version": 1}),
            json!({"type": "error", "code": 20, "text": "<string>"}),
            json!({"type": "replayed", "aggregate_id": "a", "events_replayed": 1, "state": {}}),
            json!({"type": "all_read", "events": [], "head": 1}),
            json!({"type": "error", "code": 10, "text": "<string>"}),
            json!({"type": "init_ok"}),
        ],
    );
}

#[test]
fn msg_id_zero_and_large_are_echoed() {
    check(
        &[
            req(json!({"type": "read_all", "msg_id": 0})),
            req(json!({"type": "read_all", "msg_id": u64::MAX})),
        ],
        &[
            json!({"type": "all_read", "in_reply_to": 0, "events": [], "head": 0}),
            json!({"type": "all_read", "in_reply_to": u64::MAX, "events": [], "head": 0}),
        ],
    );
}

#[test]
fn unknown_extra_fields_are_ignored() {
    // Open case: docs/protocol.md does not forbid extra fields; Maelstrom clients add some.
    check(
        &[
            req(
                json!({"type": "append", "msg_id": 1, "aggregate_id": "a", "event_type": "T", "version": 0, "extra": [1]}),
            ),
            line(
                "c",
                Some("eventstore"),
                json!({"type": "read_all", "msg_id": 2}),
            )
            .replacen('{', "{\"id\":7,", 1),
        ],
        &[appended(1, 1), head(2, 1)],
    );
}

#[test]
fn event_data_values_survive_a_round_trip() {
    let data = json!({"s": "é\u{1F600}\"\\\n\t", "f": 1.5, "neg": -3, "big": u64::MAX, "arr": [null, true, false],
                      "nested": {"z": 1, "a": {"m": []}}, "empty": "", "u": "\u{0001}"});
    check(
        &[
            req(append(1, "a", "T", data.clone(), json!(0))),
            // key order of the given event_data is kept, also when given with spaces
            r#"{"src":"c","dest":"eventstore","body":{"type":"append","msg_id":2,"aggregate_id":"a","event_type":"U","event_data": { "b" : 1 ,  "a" : [ 1 , 2 ] } ,"version":1}}"#.to_string(),
            req(read_stream(3, "a")),
        ],
        &[
            appended(1, 1),
            appended(2, 2),
            json!({"type": "stream_read", "in_reply_to": 3, "aggregate_id": "a", "version": 2, "events": [
                event(1, "a", 1, "T", data, None),
                event(2, "a", 2, "U", json!({"b": 1, "a": [1, 2]}), None),
            ]}),
        ],
    );
}

#[test]
fn last_line_without_newline_is_served() {
    let text = format!(
        "{}\n{}",
        req(append(1, "a", "T", json!({}), json!(0))),
        req(read_all(2))
    );
    let out = run_bytes(&[], text.as_bytes());
    check_output(&out, &[appended(1, 1), head(2, 1)]);
}

#[test]
fn unicode_aggregate_ids_are_distinct() {
    check(
        &[
            req(append(1, "é", "T", json!({}), json!(0))),
            req(append(2, "e\u{301}", "T", json!({}), json!(0))),
            req(append(3, " é", "T", json!({}), json!(0))),
            req(read_stream(4, "é")),
        ],
        &[
            appended(1, 1),
            appended(2, 2),
            appended(3, 3),
            json!({"type": "stream_read", "in_reply_to": 4, "aggregate_id": "é", "version": 1, "events": [
                event(1, "é", 1, "T", json!({}), None)]}),
        ],
    );
}

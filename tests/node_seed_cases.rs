//! The task's own sample cases (seeds/event-store-task.txt), each on a fresh
//! node, the seed's pretty JSON sent as one compact line.

mod common;
use common::*;
use serde_json::json;

const APPEND_SEED: &str = r#"{"src":"service","dest":"eventstore","body":{"type":"append","msg_id":1,"aggregate_id":"user-123","event_type":"UserCreated","event_data":{"name":"John"},"version":0}}"#;

#[test]
fn append_event_to_store() {
    let out = check(
        &[APPEND_SEED],
        &[
            json!({"type": "appended", "in_reply_to": 1, "event_id": "<uuid>", "sequence_number": 1}),
        ],
    );
    assert_eq!(out.lines[0]["src"], "eventstore");
    assert_eq!(out.lines[0]["dest"], "service");
    let keys: Vec<&String> = out.lines[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["src", "dest", "body"]);
}

#[test]
fn detect_concurrent_modification() {
    let l = r#"{"src":"service","dest":"eventstore","body":{"type":"append","msg_id":1,"aggregate_id":"user-123","event_type":"UserUpdated","event_data":{"name":"Jane"},"version":5}}"#;
    let out = check(
        &[l],
        &[
            json!({"type": "concurrency_error", "in_reply_to": 1, "error": "Expected version 5, got 0"}),
        ],
    );
    // The whole reply is predictable: compare the exact line.
    assert_eq!(
        out.raw,
        "{\"src\":\"eventstore\",\"dest\":\"service\",\"body\":{\"type\":\"concurrency_error\",\"in_reply_to\":1,\"error\":\"Expected version 5, got 0\"}}\n"
    );
}

#[test]
fn create_snapshot_example() {
    let snap = r#"{"src":"service","dest":"eventstore","body":{"type":"create_snapshot","msg_id":3,"aggregate_id":"user-123"}}"#;
    check(
        &[APPEND_SEED, snap],
        &[
            json!({"type": "appended", "in_reply_to": 1, "event_id": "<uuid>", "sequence_number": 1}),
            json!({"type": "snapshot_created", "in_reply_to": 3, "aggregate_id": "user-123", "version": 1}),
        ],
    );
}

#[test]
fn version_mismatch_after_an_append() {
    // The task text's "version mismatch" comment, after the first append.
    let stale = r#"{"src":"service","dest":"eventstore","body":{"type":"append","msg_id":2,"aggregate_id":"user-123","event_type":"UserUpdated","event_data":{"name":"Jane"},"version":5}}"#;
    check(
        &[APPEND_SEED, stale],
        &[
            json!({"type": "appended", "in_reply_to": 1, "event_id": "<uuid>", "sequence_number": 1}),
            json!({"type": "concurrency_error", "in_reply_to": 2, "error": "Expected version 5, got 1"}),
        ],
    );
}

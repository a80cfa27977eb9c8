//! Folding reads through the node never see a state from their future:
//! replays and `get_state`s sent in the same input as the appends around
//! them (so that, with several workers, a later append is applied — and a
//! later read may fill the state cache — before an earlier read is
//! encoded) answer exactly the fold of the events before them, for any
//! worker count, on aggregates long enough to pass several checkpoints.

mod common;

use common::*;
use serde_json::{Value, json};

#[test]
fn reads_answer_the_fold_of_the_events_before_them() {
    let mut lines = Vec::new();
    let mut expected: Vec<Value> = Vec::new();
    let mut history: Vec<Value> = Vec::new();
    let mut msg_id = 0;
    let mut next_id = || {
        msg_id += 1;
        msg_id
    };
    for round in 0..12u64 {
        // 500 events in one batch append...
        let events: Vec<Value> = (0..500u64)
            .map(|i| json!({"event_type": "T", "event_data": {format!("k{}", i % 7): round * 1000 + i}}))
            .collect();
        let id = next_id();
        lines.push(req(
            json!({"type": "append", "msg_id": id, "aggregate_id": "acct",
                              "version": "any", "events": events.clone()}),
        ));
        history.extend(events.iter().map(|e| e["event_data"].clone()));
        expected.push(
            json!({"type": "appended", "in_reply_to": id, "event_ids": "<any>",
                             "sequence_numbers": "<any>", "version": history.len()}),
        );
        // ... then reads of what is there now, interleaved with one-event
        // appends that each make the next read's answer differ.
        for j in 0..3u64 {
            let id = next_id();
            lines.push(req(
                json!({"type": "replay", "msg_id": id, "aggregate_id": "acct"}),
            ));
            expected.push(
                json!({"type": "replayed", "in_reply_to": id, "aggregate_id": "acct",
                "events_replayed": history.len(), "state": fold(&history)}),
            );
            let id = next_id();
            let d = json!({"last": round * 10 + j});
            lines.push(req(append(id, "acct", "T", d.clone(), json!("any"))));
            history.push(d);
            expected.push(
                json!({"type": "appended", "in_reply_to": id, "event_id": "<uuid>",
                                 "sequence_number": history.len()}),
            );
        }
        let id = next_id();
        lines.push(req(
            json!({"type": "get_state", "msg_id": id, "aggregate_id": "acct",
                              "timestamp": "2999-01-01T00:00:00Z"}),
        ));
        expected.push(
            json!({"type": "state", "in_reply_to": id, "aggregate_id": "acct",
            "timestamp": "2999-01-01T00:00:00Z", "state": fold(&history)}),
        );
        if round % 4 == 3 {
            let id = next_id();
            lines.push(req(
                json!({"type": "create_snapshot", "msg_id": id, "aggregate_id": "acct"}),
            ));
            expected.push(json!({"type": "snapshot_created", "in_reply_to": id,
                                 "aggregate_id": "acct", "version": history.len()}));
            let id = next_id();
            lines.push(req(
                json!({"type": "replay", "msg_id": id, "aggregate_id": "acct",
                                  "use_snapshot": true}),
            ));
            expected.push(
                json!({"type": "replayed", "in_reply_to": id, "aggregate_id": "acct",
                "snapshot_version": history.len(), "events_replayed": 0, "state": fold(&history)}),
            );
        }
    }
    for args in [
        &["--workers", "1"][..],
        &["--workers", "4"][..],
        &["--workers", "3", "--reply-buffer-bytes", "1"][..],
    ] {
        check_with(args, &lines, &expected);
    }
}

#[test]
fn get_state_at_a_past_time_folds_only_what_was_recorded_by_then() {
    // Appends one request at a time so that times differ, then asks for
    // the state at each recorded time, newest first (the cache then holds
    // later states than each read wants).
    let mut node = Session::start(&[]);
    let mut times = Vec::new();
    let mut history = Vec::new();
    for i in 0..3_000u64 {
        let d = json!({format!("k{}", i % 3): i});
        let body = node.call(&req(append(i + 1, "acct", "T", d.clone(), json!(i))));
        assert_eq!(body["type"], "appended");
        history.push(d);
        if i % 250 == 249 {
            let page = node.call(&req(json!({"type": "read_stream", "msg_id": 0,
                "aggregate_id": "acct", "from_version": i + 1, "max_count": 1})));
            times.push((page["events"][0]["recorded_at"].clone(), i + 1));
        }
    }
    assert_eq!(
        node.call(&req(
            json!({"type": "replay", "msg_id": 0, "aggregate_id": "acct"})
        ))["state"],
        fold(&history)
    );
    for (at, version) in times.iter().rev() {
        let body = node.call(&req(json!({"type": "get_state", "msg_id": 0,
                                         "aggregate_id": "acct", "timestamp": at})));
        // Events recorded in the same microsecond as `version`'s count too.
        let upto = (1..=history.len())
            .rev()
            .find(|&v| fold(&history[..v]) == body["state"])
            .expect("the state is the fold of a prefix");
        assert!(upto as u64 >= *version, "state at {at} misses events");
        assert!(
            upto as u64 <= *version + 50,
            "state at {at} holds later events"
        );
    }
    let (status, _, stderr) = node.finish();
    assert!(status.success(), "{stderr}");
}

//! docs/protocol.md "Bad input": hostile lines never stop the node and never
//! change stored data. Every case: a good append, the hostile line, then a
//! read_all and a read_stream showing the store still holds exactly the
//! first event.

mod common;
use common::*;
use serde_json::{Value, json};

/// The hostile line is a request body; the reply must be error 12 naming `field`.
fn field_error(body: Value, field: &str) {
    let in_reply_to = body["msg_id"].as_u64().unwrap();
    hostile(
        req(body),
        Some(error(in_reply_to, 12, &format!("<contains:{field}>"))),
    );
}

// ------------------------------------------------------ no reply possible

#[test]
fn invalid_json_gets_no_reply() {
    hostile("not json", None);
    hostile(
        r#"{"src":"c","dest":"eventstore","body":{"type":"read_all","msg_id":5}"#,
        None,
    );
    hostile(
        r#"{"src":"c","dest":"eventstore","body":{"type":"read_all","msg_id":5}} xyz"#,
        None,
    );
    hostile(
        r#"{"src":"c","body":{"type":"read_all","msg_id":5}}{"src":"c","body":{"type":"read_all","msg_id":6}}"#,
        None,
    );
    hostile(
        r#"{"src":"c","body":{"type":"read_all","msg_id":5},}"#,
        None,
    );
    hostile(r#"{'src':'c','body':{'type':'read_all','msg_id':5}}"#, None);
}

#[test]
fn non_object_lines_get_no_reply() {
    for bad in [
        "[1,2,3]",
        "\"str\"",
        "42",
        "null",
        "true",
        "[{\"src\":\"c\",\"body\":{\"type\":\"read_all\",\"msg_id\":5}}]",
    ] {
        hostile(bad, None);
    }
}

#[test]
fn missing_or_mistyped_src_or_body_gets_no_reply() {
    hostile(
        r#"{"dest":"eventstore","body":{"type":"read_all","msg_id":5}}"#,
        None,
    );
    hostile(r#"{"src":"c","dest":"eventstore"}"#, None);
    hostile(
        r#"{"src":5,"dest":"eventstore","body":{"type":"read_all","msg_id":5}}"#,
        None,
    );
    hostile(
        r#"{"src":null,"dest":"eventstore","body":{"type":"read_all","msg_id":5}}"#,
        None,
    );
    hostile(r#"{"src":"c","dest":"eventstore","body":"read_all"}"#, None);
    hostile(
        r#"{"src":"c","dest":"eventstore","body":[{"type":"read_all","msg_id":5}]}"#,
        None,
    );
    hostile(r#"{"src":"c","dest":"eventstore","body":null}"#, None);
    // a write with a broken envelope must not be applied either
    hostile(
        r#"{"dest":"eventstore","body":{"type":"append","msg_id":5,"aggregate_id":"a","event_type":"T","version":1}}"#,
        None,
    );
}

#[test]
fn invalid_utf8_gets_no_reply() {
    let mut bad = br#"{"src":"c","dest":"eventstore","body":{"type":"append","msg_id":5,"aggregate_id":"a","event_type":""#.to_vec();
    bad.extend_from_slice(b"\xff\xfe\xc3");
    bad.extend_from_slice(br#"","version":1}}"#);
    hostile(&bad, None);
    hostile(b"\xff\xfe\xfd garbage", None);
}

#[test]
fn unbalanced_deep_nesting_gets_no_reply() {
    let bad = format!(
        r#"{{"src":"c","dest":"eventstore","body":{{"type":"append","msg_id":5,"aggregate_id":"a","event_type":"T","version":1,"event_data":{}"#,
        "[".repeat(100_000)
    );
    hostile(bad, None);
    hostile(
        format!(r#"{{"src":"c","body":{}"#, "{\"a\":".repeat(100_000)),
        None,
    );
}

#[test]
fn deep_nesting_as_body_gets_no_reply() {
    let bad = format!(
        r#"{{"src":"c","dest":"eventstore","body":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    hostile(bad, None);
}

#[test]
fn balanced_deep_nesting_in_event_data() {
    // Open case: a well-formed line nested 100,000 deep. Accepted outcomes:
    // no reply (one stderr line), error 12, or appended as any other JSON
    // (then read back byte for byte, and folding it must not crash).
    // Replies are checked as text: serde_json's parser stops at depth 128.
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        let deep = format!("{}1{}", open.repeat(100_000), close.repeat(100_000));
        let bad = req(append(5, "a", "T", json!("X"), json!(1))).replace("\"X\"", &deep);
        let mut input = around(bad.as_bytes());
        for l in [
            req(json!({"type": "replay", "msg_id": 1002, "aggregate_id": "a"})),
            req(json!({"type": "create_snapshot", "msg_id": 1003, "aggregate_id": "a"})),
            req(
                json!({"type": "replay", "msg_id": 1004, "aggregate_id": "a", "use_snapshot": true}),
            ),
            req(
                json!({"type": "get_state", "msg_id": 1005, "aggregate_id": "a", "timestamp": "2999-01-01T00:00:00Z"}),
            ),
            req(json!({"type": "read_snapshot", "msg_id": 1006, "aggregate_id": "a"})),
        ] {
            input.extend_from_slice(l.as_bytes());
            input.push(b'\n');
        }
        let (raw, stderr, status) = run_text(&[], &input);
        assert!(status.success(), "exit {status:?}\nstderr:\n{stderr}");
        // Parse each reply with the deep value replaced by a marker.
        let inner = format!("{}1{}", open.repeat(99_999), close.repeat(99_999));
        let bodies: Vec<Value> = raw
            .lines()
            .map(|l| {
                let l = l.replace(&deep, "\"DEEP\"").replace(&inner, "\"INNER\"");
                serde_json::from_str::<Value>(&l).unwrap_or_else(|e| panic!("{e}: {l:.300}"))["body"].clone()
            })
            .collect();
        let stored_deep = bodies
            .iter()
            .any(|b| b["type"] == "appended" && b["in_reply_to"] == 5);
        let e1 = event(1, "a", 1, "T", json!({"k": 1}), None);
        let mut expected = vec![appended(1, 1)];
        let (events, state) = if stored_deep {
            expected.push(appended(5, 2));
            // a deep array leaves the state alone; a deep object merges its key "a"
            let state = if open == "[" {
                json!({"k": 1})
            } else {
                json!({"k": 1, "a": "INNER"})
            };
            (vec![e1, event(2, "a", 2, "T", json!("DEEP"), None)], state)
        } else {
            if bodies.len() == 9 {
                expected.push(error(5, 12, "<string>"));
            }
            (vec![e1], json!({"k": 1}))
        };
        let v = events.len();
        expected.extend([
            json!({"type": "all_read", "in_reply_to": 1000, "events": events.clone(), "head": v}),
            json!({"type": "stream_read", "in_reply_to": 1001, "aggregate_id": "a", "version": v, "events": events}),
            json!({"type": "replayed", "in_reply_to": 1002, "aggregate_id": "a", "events_replayed": v, "state": state}),
            json!({"type": "snapshot_created", "in_reply_to": 1003, "aggregate_id": "a", "version": v}),
            json!({"type": "replayed", "in_reply_to": 1004, "aggregate_id": "a", "snapshot_version": v,
                   "events_replayed": 0, "state": state}),
            json!({"type": "state", "in_reply_to": 1005, "aggregate_id": "a", "timestamp": "2999-01-01T00:00:00Z",
                   "state": state}),
            json!({"type": "snapshot_read", "in_reply_to": 1006, "aggregate_id": "a", "version": v, "state": state}),
        ]);
        assert_eq!(bodies.len(), expected.len(), "replies:\n{raw:.2000}");
        for (b, e) in bodies.iter().zip(&expected) {
            assert_matches(b, e);
        }
    }
}

#[test]
fn empty_and_whitespace_lines_get_no_reply() {
    // Open case: stderr may or may not note a blank line; at most one line.
    for bad in ["", "   \t  ", "\r"] {
        let out = run_bytes(&[], &around(bad.as_bytes()));
        let mut expected = vec![appended(1, 1)];
        expected.extend(stored());
        check_output(&out, &expected);
        assert!(out.stderr_lines() <= 1, "stderr: {}", out.stderr);
    }
}

#[test]
fn json_surrounded_by_whitespace_or_crlf_is_served() {
    let r = req(json!({"type": "read_snapshot", "msg_id": 5, "aggregate_id": "a"}));
    for bad in [format!("{r}\r"), format!("  \t{r}  ")] {
        hostile(
            bad,
            Some(json!({"type": "error", "in_reply_to": 5, "code": 20, "text": "<string>"})),
        );
    }
}

// ---------------------------------------------------------- over-long lines

#[test]
fn line_over_max_line_bytes_is_skipped() {
    let long = req(append(
        5,
        "a",
        "T",
        json!({"pad": "x".repeat(5000)}),
        json!(1),
    ));
    assert!(long.len() > 5000);
    hostile_with(&["--max-line-bytes", "1000"], &long, None);
    // garbage, and a very long line (1 MiB) too
    hostile_with(&["--max-line-bytes", "1000"], "z".repeat(5000), None);
    hostile_with(&["--max-line-bytes", "1000"], "[".repeat(1 << 20), None);
}

#[test]
fn line_within_max_line_bytes_is_served() {
    let ok = req(
        json!({"type": "read_snapshot", "msg_id": 5, "aggregate_id": "a", "pad": "x".repeat(800)}),
    );
    assert!(ok.len() < 1000);
    hostile_with(
        &["--max-line-bytes", "1000"],
        &ok,
        Some(json!({"type": "error", "in_reply_to": 5, "code": 20, "text": "<string>"})),
    );
}

#[test]
fn over_long_last_line_without_newline() {
    let mut input = around(b"");
    input.extend_from_slice(
        req(append(
            5,
            "a",
            "T",
            json!({"pad": "x".repeat(5000)}),
            json!(1),
        ))
        .as_bytes(),
    );
    let out = run_bytes(&["--max-line-bytes", "1000"], &input);
    let mut expected = vec![appended(1, 1)];
    expected.extend(stored());
    check_output(&out, &expected);
}

// ----------------------------------------------------------------- type

#[test]
fn unknown_type_is_error_10() {
    hostile(
        req(json!({"type": "frobnicate", "msg_id": 5})),
        Some(error(5, 10, "<string>")),
    );
    hostile(
        req(
            json!({"type": "APPEND", "msg_id": 5, "aggregate_id": "a", "event_type": "T", "version": 1}),
        ),
        Some(error(5, 10, "<string>")),
    );
    hostile(
        req(json!({"type": "", "msg_id": 5})),
        Some(error(5, 10, "<string>")),
    );
}

#[test]
fn missing_or_mistyped_type_is_error_12() {
    // Open case: a missing/non-string type is a bad field (12), not an unknown type (10).
    field_error(json!({"msg_id": 5, "aggregate_id": "a"}), "type");
    field_error(json!({"type": 7, "msg_id": 5}), "type");
    field_error(json!({"type": null, "msg_id": 5}), "type");
}

// ----------------------------------------------------------------- msg_id

fn msg_id_error() -> Option<Value> {
    Some(json!({"type": "error", "code": 12, "text": "<contains:msg_id>"}))
}

#[test]
fn bad_msg_id_is_error_12_without_in_reply_to() {
    for id in [
        json!("5"),
        json!(-1),
        json!(1.5),
        json!(true),
        json!([5]),
        json!({"n": 5}),
    ] {
        hostile(
            req(json!({"type": "read_all", "msg_id": id})),
            msg_id_error(),
        );
    }
}

#[test]
fn bad_msg_id_is_checked_first_and_nothing_is_appended() {
    hostile(
        req(json!({"type": "frobnicate", "msg_id": "x"})),
        msg_id_error(),
    );
    hostile(
        req(
            json!({"type": "append", "msg_id": -5, "aggregate_id": "a", "event_type": "T", "version": 1}),
        ),
        msg_id_error(),
    );
    hostile(
        req(
            json!({"type": "append", "msg_id": "7", "aggregate_id": "a", "event_type": "", "version": 1}),
        ),
        msg_id_error(),
    );
}

#[test]
fn huge_msg_id() {
    // Open case: an integer beyond u64. Accepted: error 12 without
    // in_reply_to, or the very same digits echoed. Never a lossy echo.
    for digits in ["99999999999999999999999", &"9".repeat(5000)] {
        let bad = format!(
            r#"{{"src":"c","dest":"eventstore","body":{{"type":"read_snapshot","msg_id":{digits},"aggregate_id":"a"}}}}"#
        );
        let out = run_bytes(&[], &around(bad.as_bytes()));
        assert!(out.status.success(), "stderr: {}", out.stderr);
        let raw_lines: Vec<&str> = out.raw.lines().collect();
        assert_eq!(raw_lines.len(), 4, "replies:\n{}", out.raw);
        if raw_lines[1].contains(&format!("\"in_reply_to\":{digits}")) {
            assert_eq!(out.lines[1]["body"]["code"], 20);
        } else {
            assert_matches(&out.lines[1]["body"], &msg_id_error().unwrap());
        }
        let mut expected = vec![appended(1, 1), json!("<any>")];
        expected.extend(stored());
        check_output(&out, &expected);
    }
}

// ------------------------------------------------------------- append fields

fn app(extra: Value) -> Value {
    let mut b = json!({"type": "append", "msg_id": 5, "aggregate_id": "a", "event_type": "T", "event_data": {}, "version": 1});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() && k.starts_with('-') {
            b.as_object_mut().unwrap().remove(&k[1..]);
        } else {
            b[k] = v.clone();
        }
    }
    b
}

#[test]
fn append_bad_aggregate_id() {
    field_error(app(json!({"-aggregate_id": null})), "aggregate_id");
    field_error(app(json!({"aggregate_id": 5})), "aggregate_id");
    field_error(app(json!({"aggregate_id": ""})), "aggregate_id");
    field_error(app(json!({"aggregate_id": null})), "aggregate_id");
}

#[test]
fn append_bad_event_type() {
    field_error(app(json!({"event_type": ""})), "event_type");
    field_error(app(json!({"event_type": 5})), "event_type");
    field_error(app(json!({"event_type": ["T"]})), "event_type");
    // neither event_type nor events: the text names one of them
    hostile(
        req(app(json!({"-event_type": null}))),
        Some(error(5, 12, "<contains:event>")),
    );
}

#[test]
fn append_bad_version() {
    field_error(app(json!({"-version": null})), "version");
    field_error(app(json!({"version": -1})), "version");
    field_error(app(json!({"version": 1.5})), "version");
    field_error(app(json!({"version": "1"})), "version");
    field_error(app(json!({"version": "ANY"})), "version");
    field_error(app(json!({"version": null})), "version");
    field_error(app(json!({"version": [1]})), "version");
}

#[test]
fn append_bad_metadata() {
    field_error(app(json!({"metadata": [1]})), "metadata");
    field_error(app(json!({"metadata": "x"})), "metadata");
    field_error(app(json!({"metadata": 3})), "metadata");
}

#[test]
fn append_bad_event_id() {
    field_error(app(json!({"event_id": "not-a-uuid"})), "event_id");
    field_error(app(json!({"event_id": 5})), "event_id");
    field_error(app(json!({"event_id": ""})), "event_id");
    field_error(
        app(json!({"event_id": "00000000-0000-4000-8000-00000000000"})),
        "event_id",
    );
    field_error(
        app(json!({"event_id": "00000000-0000-4000-8000-00000000000g"})),
        "event_id",
    );
}

#[test]
fn append_bad_events() {
    let batch = |events: Value| json!({"type": "append", "msg_id": 5, "aggregate_id": "a", "events": events, "version": 1});
    field_error(batch(json!("x")), "events");
    field_error(batch(json!({"event_type": "T"})), "events");
    field_error(batch(json!([5])), "events");
    field_error(
        batch(json!([{"event_type": "T"}, {"event_data": {}}])),
        "event_type",
    );
    field_error(batch(json!([{"event_type": ""}])), "event_type");
    field_error(
        batch(json!([{"event_type": "T", "metadata": 5}])),
        "metadata",
    );
    field_error(
        batch(json!([{"event_type": "T", "event_id": "bad"}])),
        "event_id",
    );
}

// -------------------------------------------------------- other messages

#[test]
fn create_snapshot_bad_fields() {
    field_error(
        json!({"type": "create_snapshot", "msg_id": 5}),
        "aggregate_id",
    );
    field_error(
        json!({"type": "create_snapshot", "msg_id": 5, "aggregate_id": 1}),
        "aggregate_id",
    );
    field_error(
        json!({"type": "create_snapshot", "msg_id": 5, "aggregate_id": "a", "version": -1}),
        "version",
    );
    field_error(
        json!({"type": "create_snapshot", "msg_id": 5, "aggregate_id": "a", "version": "1"}),
        "version",
    );
    field_error(
        json!({"type": "create_snapshot", "msg_id": 5, "aggregate_id": "a", "version": 0.5}),
        "version",
    );
}

#[test]
fn create_snapshot_error_leaves_the_old_snapshot() {
    let snap = |msg_id: u64, state: Value| json!({"type": "create_snapshot", "msg_id": msg_id, "aggregate_id": "a", "state": state});
    check(
        &[
            req(append(1, "a", "T", json!({"k": 1}), json!(0))),
            req(snap(2, json!("first"))),
            req(
                json!({"type": "create_snapshot", "msg_id": 3, "aggregate_id": "a", "version": 7, "state": "second"}),
            ),
            req(
                json!({"type": "create_snapshot", "msg_id": 4, "aggregate_id": "a", "version": -7, "state": "third"}),
            ),
            req(json!({"type": "read_snapshot", "msg_id": 5, "aggregate_id": "a"})),
        ],
        &[
            appended(1, 1),
            json!({"type": "snapshot_created", "in_reply_to": 2, "aggregate_id": "a", "version": 1}),
            json!({"type": "concurrency_error", "in_reply_to": 3, "error": "Expected version 7, got 1"}),
            error(4, 12, "<contains:version>"),
            json!({"type": "snapshot_read", "in_reply_to": 5, "aggregate_id": "a", "version": 1, "state": "first"}),
        ],
    );
}

#[test]
fn read_snapshot_and_replay_bad_fields() {
    field_error(
        json!({"type": "read_snapshot", "msg_id": 5}),
        "aggregate_id",
    );
    field_error(
        json!({"type": "read_snapshot", "msg_id": 5, "aggregate_id": ""}),
        "aggregate_id",
    );
    field_error(
        json!({"type": "replay", "msg_id": 5, "aggregate_id": ["a"]}),
        "aggregate_id",
    );
    field_error(
        json!({"type": "replay", "msg_id": 5, "aggregate_id": "a", "use_snapshot": "yes"}),
        "use_snapshot",
    );
    field_error(
        json!({"type": "replay", "msg_id": 5, "aggregate_id": "a", "use_snapshot": 1}),
        "use_snapshot",
    );
}

#[test]
fn get_state_bad_fields() {
    let gs =
        |ts: Value| json!({"type": "get_state", "msg_id": 5, "aggregate_id": "a", "timestamp": ts});
    field_error(
        json!({"type": "get_state", "msg_id": 5, "aggregate_id": "a"}),
        "timestamp",
    );
    field_error(
        json!({"type": "get_state", "msg_id": 5, "timestamp": "2999-01-01T00:00:00Z"}),
        "aggregate_id",
    );
    field_error(gs(json!("yesterday")), "timestamp");
    field_error(gs(json!(12345)), "timestamp");
    field_error(gs(json!("")), "timestamp");
    field_error(gs(json!("2024-13-01T00:00:00Z")), "timestamp");
    field_error(gs(json!("2024-01-01T25:00:00Z")), "timestamp");
    field_error(gs(json!("2024-01-01 00:00:00")), "timestamp");
}

#[test]
fn read_stream_bad_fields() {
    let rs = |extra: Value| {
        let mut b = json!({"type": "read_stream", "msg_id": 5, "aggregate_id": "a"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    field_error(json!({"type": "read_stream", "msg_id": 5}), "aggregate_id");
    field_error(rs(json!({"from_version": -1})), "from_version");
    field_error(rs(json!({"from_version": 1.5})), "from_version");
    field_error(rs(json!({"from_version": "1"})), "from_version");
    field_error(rs(json!({"max_count": "10"})), "max_count");
    field_error(rs(json!({"max_count": -1})), "max_count");
}

#[test]
fn read_all_bad_fields() {
    field_error(
        json!({"type": "read_all", "msg_id": 5, "from_sequence": -1}),
        "from_sequence",
    );
    field_error(
        json!({"type": "read_all", "msg_id": 5, "from_sequence": 1.5}),
        "from_sequence",
    );
    field_error(
        json!({"type": "read_all", "msg_id": 5, "from_sequence": "1"}),
        "from_sequence",
    );
    field_error(
        json!({"type": "read_all", "msg_id": 5, "max_count": true}),
        "max_count",
    );
    field_error(
        json!({"type": "read_all", "msg_id": 5, "max_count": -3}),
        "max_count",
    );
}

#[test]
fn mistyped_field_text_describes_the_value_truthfully() {
    // "text names the field and what was wrong": for a number given where a
    // string or boolean is due, the text must not misdescribe that number.
    for (body, field) in [
        (app(json!({"event_type": 5})), "event_type"),
        (app(json!({"aggregate_id": 7})), "aggregate_id"),
        (
            json!({"type": "replay", "msg_id": 5, "aggregate_id": "a", "use_snapshot": 1}),
            "use_snapshot",
        ),
        (json!({"type": 3, "msg_id": 5}), "type"),
    ] {
        let out = hostile(
            req(body.clone()),
            Some(error(5, 12, &format!("<contains:{field}>"))),
        );
        let text = out.bodies()[1]["text"].as_str().unwrap().to_string();
        assert!(
            !text.contains("not a non-negative integer") && !text.contains("not an integer"),
            "request {body}\n  error text misdescribes a non-negative integer: {text:?}"
        );
    }
}

// ------------------------------------------------------------- all at once

#[test]
fn a_burst_of_hostile_lines_then_normal_service() {
    let mut bad: Vec<u8> = Vec::new();
    for l in [
        b"not json".to_vec(),
        b"".to_vec(),
        b"\xff\xff".to_vec(),
        "[".repeat(200_000).into_bytes(),
        br#"{"src":"c","body":{"type":"append","msg_id":"x"}}"#.to_vec(),
        br#"{"src":"c","body":{"type":"nope","msg_id":6}}"#.to_vec(),
        br#"{"src":"c","body":{"type":"append","msg_id":7,"aggregate_id":"a","event_type":"T","version":-1}}"#.to_vec(),
    ] {
        bad.extend_from_slice(&l);
        bad.push(b'\n');
    }
    bad.extend_from_slice(req(append(8, "a", "T", json!({"k": 2}), json!(1))).as_bytes());
    let out = run_bytes(&[], &around(&bad));
    let e1 = event(1, "a", 1, "T", json!({"k": 1}), None);
    let e2 = event(2, "a", 2, "T", json!({"k": 2}), None);
    check_output(
        &out,
        &[
            appended(1, 1),
            json!({"type": "error", "code": 12, "text": "<contains:msg_id>"}),
            error(6, 10, "<string>"),
            error(7, 12, "<contains:version>"),
            appended(8, 2),
            json!({"type": "all_read", "in_reply_to": 1000, "events": [e1.clone(), e2.clone()], "head": 2}),
            json!({"type": "stream_read", "in_reply_to": 1001, "aggregate_id": "a", "version": 2, "events": [e1, e2]}),
        ],
    );
}

//! docs/protocol.md "Bad input", for input that is valid JSON but hostile text:
//! lone surrogates (error 12 naming the field, `in_reply_to` kept whenever
//! `msg_id` is readable), numbers at the edges (`-0`, beyond 2^64 - 1), a
//! leading byte-order mark, and error positions that count within the line.
//! Every hostile line is followed by reads showing the store unchanged
//! (`hostile` in tests/common); events stored with lone surrogates by
//! earlier versions still load and fold.

mod common;
use common::*;
use serde_json::{Value, json};

/// A request line with `body` given as raw JSON text (so that it can hold
/// escapes `json!` would never write).
fn raw_line(body: &str) -> String {
    format!(r#"{{"src":"c","dest":"eventstore","body":{body}}}"#)
}

/// Error 12 replying to msg_id 5, its text containing `text`.
fn error_5(text: &str) -> Option<Value> {
    Some(error(5, 12, &format!("<contains:{text}>")))
}

// ------------------------------------------------------- lone surrogates

#[test]
fn lone_surrogates_in_body_fields_are_error_12_naming_the_field() {
    let append = r#""type":"append","msg_id":5,"aggregate_id":"a","version":1"#;
    for (body, named) in [
        (
            format!(r#"{{{append},"aggregate_id":"b\ud800","event_type":"T"}}"#),
            // A duplicate aggregate_id: the serde path sees this line.
            r"aggregate_id: lone surrogate \ud800",
        ),
        (
            r#"{"type":"append","msg_id":5,"aggregate_id":"a\ud800","event_type":"T","version":1}"#.to_owned(),
            r"aggregate_id: lone surrogate \ud800",
        ),
        (
            format!(r#"{{{append},"event_type":"T\udc00"}}"#),
            r"event_type: lone surrogate \udc00",
        ),
        (
            format!(r#"{{{append},"event_type":"T","event_data":{{"a":"x\ud800y"}}}}"#),
            r"event_data.a: lone surrogate \ud800",
        ),
        (
            format!(r#"{{{append},"event_type":"T","event_data":{{"\udc00":1,"b":2}}}}"#),
            r#"event_data: key "\udc00" holds a lone surrogate \udc00"#,
        ),
        (
            format!(r#"{{{append},"event_type":"T","event_data":["\ud800\ud800\udc00"]}}"#),
            r"event_data[0]: lone surrogate \ud800",
        ),
        (
            format!(r#"{{{append},"event_type":"T","event_data":"\ud800\u0041"}}"#),
            r"event_data: lone surrogate \ud800",
        ),
        (
            format!(r#"{{{append},"event_type":"T","metadata":{{"m":{{"\uDBFF":0}}}}}}"#),
            r#"metadata.m: key "\uDBFF" holds a lone surrogate \uDBFF"#,
        ),
        (
            format!(r#"{{{append},"event_type":"T","event_id":"\udfff"}}"#),
            r"event_id: lone surrogate \udfff",
        ),
        (
            format!(
                r#"{{{append},"events":[{{"event_type":"T"}},{{"event_type":"T"}},{{"event_type":"T","metadata":{{"k":"\udc00"}}}}]}}"#
            ),
            r"events[2].metadata.k: lone surrogate \udc00",
        ),
        (
            format!(r#"{{{append},"events":[{{"event_type":"T","event_data":{{"\ud800":1}}}}]}}"#),
            r#"events[0].event_data: key "\ud800" holds a lone surrogate"#,
        ),
        (
            r#"{"type":"create_snapshot","msg_id":5,"aggregate_id":"a","state":{"s":"\ud800"}}"#
                .to_owned(),
            r"state.s: lone surrogate \ud800",
        ),
        (
            r#"{"type":"get_state","msg_id":5,"aggregate_id":"a","timestamp":"2026-01-01T00:00:00Z\udc00"}"#
                .to_owned(),
            r"timestamp: lone surrogate \udc00",
        ),
        (
            r#"{"type":"read_all","msg_id":5,"category":"\ud800"}"#.to_owned(),
            r"category: lone surrogate \ud800",
        ),
        // An unknown type is error 10, but text that is not Unicode is 12.
        (
            r#"{"type":"x\ud800","msg_id":5}"#.to_owned(),
            r"type: lone surrogate \ud800",
        ),
    ] {
        hostile(raw_line(&body), error_5(named));
    }
}

#[test]
fn lone_surrogate_in_an_unknown_field_keeps_in_reply_to() {
    for (line, named) in [
        (
            raw_line(r#"{"type":"read_all","msg_id":5,"x":"\ud800"}"#),
            r"x: lone surrogate \ud800",
        ),
        // Keys the fast path leaves to serde, which cannot decode them.
        (
            raw_line(r#"{"type":"read_all","msg_id":5,"\ud800":1}"#),
            r#"body: key "\ud800" holds a lone surrogate \ud800"#,
        ),
        (
            raw_line(r#"{"\udc00":1,"type":"read_all","msg_id":5,"max_count":1,"max_count":2}"#),
            r#"body: key "\udc00" holds"#,
        ),
        (
            r#"{"src":"c","x":["\ud800"],"body":{"type":"read_all","msg_id":5}}"#.to_owned(),
            r"envelope.x[0]: lone surrogate \ud800",
        ),
        (
            r#"{"src":"c","\udc00":1,"body":{"type":"read_all","msg_id":5}}"#.to_owned(),
            r#"envelope: key "\udc00" holds a lone surrogate \udc00"#,
        ),
        (
            r#"{"src":"c","dest":"eventstore\ud800","body":{"type":"read_all","msg_id":5}}"#
                .to_owned(),
            r"envelope.dest: lone surrogate \ud800",
        ),
    ] {
        hostile(line, error_5(named));
    }
}

#[test]
fn a_dest_that_is_not_unicode_is_not_echoed() {
    let out = hostile(
        r#"{"src":"c","dest":"n\ud800","body":{"type":"read_all","msg_id":5}}"#,
        error_5("envelope.dest"),
    );
    assert_eq!(out.lines[1]["src"], "eventstore", "{}", out.raw);
    assert_eq!(out.lines[1]["dest"], "c", "{}", out.raw);
}

#[test]
fn src_that_is_not_unicode_gets_no_reply() {
    for line in [
        r#"{"src":"c\ud800","body":{"type":"read_all","msg_id":5}}"#,
        r#"{"src":"\udc00","dest":"eventstore","body":{"type":"read_all","msg_id":5,"x":"\ud800"}}"#,
        // The first lone surrogate is elsewhere; src has one too.
        r#"{"x":"\ud800","src":"c\udc00","body":{"type":"read_all","msg_id":5}}"#,
    ] {
        let out = hostile(line, None);
        assert!(
            out.stderr.contains("\"src\" is not Unicode"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn a_msg_id_problem_comes_before_a_lone_surrogate() {
    for line in [
        raw_line(r#"{"type":"read_all","msg_id":-1,"x":"\ud800"}"#),
        raw_line(r#"{"type":"read_all","msg_id":"\ud800"}"#),
        raw_line(r#"{"type":"read_all","msg_id":1.5,"\ud800":1}"#),
    ] {
        hostile(
            line,
            Some(
                json!({"type": "error", "code": 12, "text": "<contains:msg_id: must be an integer >= 0>"}),
            ),
        );
    }
}

#[test]
fn lone_surrogate_columns_count_within_the_line() {
    let line = raw_line(
        r#"{"type":"append","msg_id":5,"aggregate_id":"a","event_type":"T","event_data":{"k":[0,"\udc00"]},"version":1}"#,
    );
    let out = hostile(&line, error_5("event_data.k[1]: lone surrogate"));
    let text = out.lines[1]["body"]["text"].as_str().unwrap().to_owned();
    let column: usize = text.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(&line[column - 1..column + 5], r"\udc00", "{text}");
    // The same request after a byte-order mark: three bytes further on.
    let mut bom_line = b"\xEF\xBB\xBF".to_vec();
    bom_line.extend_from_slice(line.as_bytes());
    let out = hostile(&bom_line, error_5("event_data.k[1]: lone surrogate"));
    assert_eq!(
        out.lines[1]["body"]["text"],
        text.replace(
            &format!("column {column}"),
            &format!("column {}", column + 3)
        )
    );
}

#[test]
fn valid_surrogate_pairs_are_text_like_any_other() {
    // Lower and upper case hex; the pair in a key and in a value.
    let append = raw_line(
        r#"{"type":"append","msg_id":2,"aggregate_id":"p\ud83d\ude00","event_type":"T","event_data":{"\uD83D\uDE00":"\ud83d\ude00!"},"version":0}"#,
    );
    let data = json!({"😀": "😀!"});
    check(
        &[
            append,
            req(read_stream(3, "p😀")),
            req(json!({"type": "replay", "msg_id": 4, "aggregate_id": "p😀"})),
        ],
        &[
            appended(2, 1),
            json!({"type": "stream_read", "in_reply_to": 3, "aggregate_id": "p😀", "version": 1,
                   "events": [event(1, "p😀", 1, "T", data.clone(), None)]}),
            json!({"type": "replayed", "in_reply_to": 4, "aggregate_id": "p😀",
                   "events_replayed": 1, "state": data}),
        ],
    );
}

#[test]
fn a_refused_snapshot_leaves_none_and_the_fold_as_it_was() {
    let snapshot = raw_line(
        r#"{"type":"create_snapshot","msg_id":2,"aggregate_id":"a","state":{"\ud800":1}}"#,
    );
    let append = raw_line(
        r#"{"type":"append","msg_id":3,"aggregate_id":"a","event_type":"T","event_data":{"\udc00":1,"b":2},"version":1}"#,
    );
    check(
        &[
            req(append_body(1)),
            snapshot,
            append,
            req(json!({"type": "read_snapshot", "msg_id": 4, "aggregate_id": "a"})),
            req(json!({"type": "replay", "msg_id": 5, "aggregate_id": "a"})),
            req(read_stream(6, "a")),
        ],
        &[
            appended(1, 1),
            error(
                2,
                12,
                r#"<contains:state: key "\ud800" holds a lone surrogate>"#,
            ),
            error(
                3,
                12,
                r#"<contains:event_data: key "\udc00" holds a lone surrogate>"#,
            ),
            error(4, 20, "<string>"),
            json!({"type": "replayed", "in_reply_to": 5, "aggregate_id": "a",
                   "events_replayed": 1, "state": {"a": 1}}),
            json!({"type": "stream_read", "in_reply_to": 6, "aggregate_id": "a", "version": 1,
                   "events": [event(1, "a", 1, "T", json!({"a": 1}), None)]}),
        ],
    );
}

fn append_body(msg_id: u64) -> Value {
    append(msg_id, "a", "T", json!({"a": 1}), json!(0))
}

/// Events and a snapshot holding lone surrogates, as an earlier version
/// stored them (the library still takes them: serde_json's `RawValue`
/// accepts a lone surrogate), load on restart and fold without losing
/// keys; `read_snapshot` and `replay` agree.
#[test]
fn stored_lone_surrogates_still_load_and_fold() {
    use eventstore::{ExpectedVersion, FsyncPolicy, NewEvent, Version};
    use serde_json::value::RawValue;
    let dir = TempDir::new("lone-surrogates");
    let text = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
    let first = text(r#"{"a":1}"#);
    let second = text(r#"{"\udc00":1,"b":2}"#);
    let third = text(r#"{"c":"\ud800","\udc00":3}"#);
    let state = text(r#"{"\ud800":1}"#);
    let folded = r#"{"a":1,"\udc00":3,"b":2,"c":"\ud800"}"#;
    {
        let store = open_store(dir.path(), FsyncPolicy::Always).unwrap();
        store
            .append(
                "s",
                ExpectedVersion::Exact(Version(0)),
                &[NewEvent::new("T", &first)],
            )
            .unwrap();
        store
            .append(
                "s",
                ExpectedVersion::Exact(Version(1)),
                &[NewEvent::new("T", &second)],
            )
            .unwrap();
        // The fold keeps the key and every key after it (it lost them).
        assert_eq!(
            store.replay("s", false).state,
            r#"{"a":1,"\udc00":1,"b":2}"#
        );
        store.create_snapshot("s", None, None).unwrap();
        store
            .append(
                "s",
                ExpectedVersion::Exact(Version(2)),
                &[NewEvent::new("T", &third)],
            )
            .unwrap();
        store.create_snapshot("given", None, Some(&state)).unwrap();
    }
    let store = open_store(dir.path(), FsyncPolicy::Always).unwrap();
    assert_eq!(store.replay("s", false).state, folded);
    assert_eq!(store.replay("s", true).state, folded);
    assert_eq!(store.replay("s", true).events_replayed, 1);
    assert_eq!(
        store.snapshot("s").unwrap().state,
        r#"{"a":1,"\udc00":1,"b":2}"#
    );
    assert_eq!(store.snapshot("given").unwrap().state, r#"{"\ud800":1}"#);
    assert_eq!(store.replay("given", true).state, r#"{"\ud800":1}"#);
    drop(store);

    // The node serves the same store: its replies carry the text as stored.
    // (Not parsed: serde_json, like most strict decoders, refuses them.)
    let (raw, stderr, status) = run_text(
        &["--data-dir", dir.arg()],
        input(&[
            req(json!({"type": "replay", "msg_id": 1, "aggregate_id": "s"})),
            req(json!({"type": "replay", "msg_id": 2, "aggregate_id": "given", "use_snapshot": true})),
            req(json!({"type": "read_snapshot", "msg_id": 3, "aggregate_id": "given"})),
        ])
        .as_bytes(),
    );
    assert!(status.success(), "{stderr}");
    let lines: Vec<&str> = raw.lines().collect();
    assert_eq!(lines.len(), 3, "{raw}");
    assert!(
        lines[0].contains(&format!(r#""state":{folded}}}"#)),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(r#""state":{"\ud800":1}}"#),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains(r#""state":{"\ud800":1}}"#),
        "{}",
        lines[2]
    );
}

// -------------------------------------------------------------- numbers

#[test]
fn minus_zero_is_zero() {
    check(
        &[
            raw_line(
                r#"{"type":"append","msg_id":-0,"aggregate_id":"a","event_type":"T","event_data":{"k":1},"version":-0}"#,
            ),
            raw_line(r#"{"type":"create_snapshot","msg_id":2,"aggregate_id":"a","version":-0}"#),
            raw_line(r#"{"type":"read_stream","msg_id":3,"aggregate_id":"a","from_version":-0}"#),
            raw_line(r#"{"type":"read_all","msg_id":4,"from_sequence":-0,"max_count":-0}"#),
        ],
        &[
            appended(0, 1),
            json!({"type": "concurrency_error", "in_reply_to": 2, "error": "Expected version 0, got 1"}),
            json!({"type": "stream_read", "in_reply_to": 3, "aggregate_id": "a", "version": 1,
                   "events": [event(1, "a", 1, "T", json!({"k": 1}), None)]}),
            json!({"type": "all_read", "in_reply_to": 4, "events": [], "head": 1}),
        ],
    );
}

#[test]
fn max_count_beyond_u64_counts_as_10000() {
    let e = event(1, "a", 1, "T", json!({"k": 1}), None);
    for digits in [
        "18446744073709551616",
        "99999999999999999999999",
        &"9".repeat(400),
    ] {
        check(
            &[
                req(append(1, "a", "T", json!({"k": 1}), json!(0))),
                raw_line(&format!(
                    r#"{{"type":"read_all","msg_id":2,"max_count":{digits}}}"#
                )),
                raw_line(&format!(
                    r#"{{"type":"read_stream","msg_id":3,"aggregate_id":"a","max_count":{digits}}}"#
                )),
            ],
            &[
                appended(1, 1),
                json!({"type": "all_read", "in_reply_to": 2, "events": [e.clone()], "head": 1}),
                json!({"type": "stream_read", "in_reply_to": 3, "aggregate_id": "a", "version": 1, "events": [e.clone()]}),
            ],
        );
    }
}

#[test]
fn other_integers_beyond_u64_are_error_12() {
    let big = "18446744073709551616";
    for (body, named) in [
        (
            format!(
                r#"{{"type":"append","msg_id":5,"aggregate_id":"a","event_type":"T","version":{big}}}"#
            ),
            format!("version: {big} is out of range"),
        ),
        (
            format!(
                r#"{{"type":"create_snapshot","msg_id":5,"aggregate_id":"a","version":{big}}}"#
            ),
            format!("version: {big} is out of range"),
        ),
        (
            format!(
                r#"{{"type":"read_stream","msg_id":5,"aggregate_id":"a","from_version":{big}}}"#
            ),
            format!("from_version: {big} is out of range"),
        ),
        (
            format!(r#"{{"type":"read_all","msg_id":5,"from_sequence":{big}}}"#),
            format!("from_sequence: {big} is out of range"),
        ),
    ] {
        hostile(raw_line(&body), error_5(&named));
    }
}

#[test]
fn negative_and_non_integer_numbers_are_error_12() {
    for (body, named) in [
        (
            r#"{"type":"read_all","msg_id":5,"max_count":-99999999999999999999999}"#,
            "max_count: must be an integer >= 0, got -99999999999999999999999",
        ),
        (
            r#"{"type":"read_all","msg_id":5,"max_count":-1}"#,
            "max_count: must be an integer >= 0, got -1",
        ),
        (
            r#"{"type":"read_all","msg_id":5,"max_count":1e3}"#,
            "max_count: must be an integer >= 0, got 1e3",
        ),
        (
            r#"{"type":"read_all","msg_id":5,"from_sequence":1.0}"#,
            "from_sequence: must be an integer >= 0, got 1.0",
        ),
        (
            r#"{"type":"append","msg_id":5,"aggregate_id":"a","event_type":"T","version":-0.0}"#,
            "version: must be an integer >= 0, got -0.0",
        ),
        (
            r#"{"type":"append","msg_id":5,"aggregate_id":"a","event_type":"T","version":1E0}"#,
            "version: must be an integer >= 0",
        ),
    ] {
        hostile(raw_line(body), error_5(named));
    }
    for id in ["1.0", "1e0", "-0.0", "-1"] {
        hostile(
            raw_line(&format!(r#"{{"type":"read_all","msg_id":{id}}}"#)),
            Some(
                json!({"type": "error", "code": 12, "text": format!("msg_id: must be an integer >= 0, got {id}")}),
            ),
        );
    }
}

// ----------------------------------------------------------- byte-order mark

#[test]
fn a_leading_byte_order_mark_is_skipped() {
    let bom = |line: String| [b"\xEF\xBB\xBF".as_slice(), line.as_bytes()].concat();
    let mut input = bom(req(append(1, "a", "T", json!({"k": 1}), json!(0))));
    input.push(b'\n');
    input.extend(bom(req(read_all(2))));
    input.extend(b"\n");
    let out = run_bytes(&[], &input);
    check_output(
        &out,
        &[
            appended(1, 1),
            json!({"type": "all_read", "in_reply_to": 2, "events": [event(1, "a", 1, "T", json!({"k": 1}), None)], "head": 1}),
        ],
    );
    assert_eq!(out.stderr_lines(), 0, "{}", out.stderr);
}

#[test]
fn a_byte_order_mark_anywhere_else_is_not_skipped() {
    let good = req(json!({"type": "read_all", "msg_id": 5}));
    // Twice, after whitespace, or alone: not a JSON object, no reply.
    for prefix in ["\u{FEFF}\u{FEFF}", " \u{FEFF}", "\u{FEFF} "] {
        if prefix.ends_with(' ') {
            // Whitespace after the mark is whitespace before the object.
            hostile(
                format!("{prefix}{good}"),
                Some(json!({"type": "all_read", "in_reply_to": 5, "events": "<any>", "head": 1})),
            );
        } else {
            hostile(format!("{prefix}{good}"), None);
        }
    }
    hostile("\u{FEFF}", None);
    // Inside a string it is text like any other.
    hostile(
        raw_line(r#"{"type":"read_stream","msg_id":5,"aggregate_id":"﻿a"}"#),
        Some(
            json!({"type": "stream_read", "in_reply_to": 5, "aggregate_id": "\u{FEFF}a", "version": 0, "events": []}),
        ),
    );
}

// ------------------------------------------------------------- positions

/// The column an error text ends with.
fn column_of(text: &Value) -> usize {
    text.as_str()
        .and_then(|t| t.rsplit(' ').next())
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no column in {text}"))
}

#[test]
fn duplicate_field_columns_count_within_the_line() {
    // In a batch element, the body and the envelope's body: each column
    // points at the end of the second key, in the line as sent.
    // (body, error, how many times the key occurs up to the column)
    for (body, field, times) in [
        (
            r#"{"type":"append","msg_id":5,"aggregate_id":"a","version":1,"events":[{"event_type":"T"},{"event_type":"T","event_type":"U"}]}"#,
            "events[1]: duplicate field `event_type` at line 1 column",
            3,
        ),
        (
            r#"{"type":"read_all","msg_id":5,"max_count":1,"max_count":2}"#,
            "body: duplicate field `max_count` at line 1 column",
            2,
        ),
    ] {
        let line = raw_line(body);
        let key = &field[field.find('`').unwrap()..field.rfind('`').unwrap() + 1];
        let key = format!("\"{}\"", &key[1..key.len() - 1]);
        for bom in [&b""[..], b"\xEF\xBB\xBF"] {
            let sent = [bom, line.as_bytes()].concat();
            let out = hostile(&sent, error_5(field));
            let column = column_of(&out.lines[1]["body"]["text"]);
            let before = String::from_utf8_lossy(&sent[..column]).into_owned();
            assert!(before.ends_with(&key), "column {column} in {line}");
            assert_eq!(
                before.matches(&key).count(),
                times,
                "column {column} in {line}"
            );
        }
    }
}

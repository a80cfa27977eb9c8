//! Hostile lines and every error code a client can cause, against the node
//! on JetStream (a real 3-server cluster): one input mixing the hostile
//! lines of `node_bad_input.rs` / `node_hostile_text.rs` (invalid JSON and
//! UTF-8, lone surrogates in every text field, deep nesting, BOMs, CRLF,
//! over-long lines, hostile ids and numbers, subject-hostile aggregate ids)
//! with appends and reads, answered exactly as by the embedded node (ids
//! and times masked), with the same diagnostics on stderr.
//!
//! Error 13 (storage failed) cannot come from a JetStream node (its view is
//! in memory); error 11 for JetStream being unreachable is in
//! `jetstream_failures.rs`.

#![cfg(feature = "jetstream")]

mod common;
mod nats;

use common::*;
use serde_json::{Value, json};

/// A request line from raw body text.
fn raw(body: &str) -> Vec<u8> {
    format!(r#"{{"src":"client","dest":"eventstore","body":{body}}}"#).into_bytes()
}

fn hostile_lines() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = Vec::new();
    for bad in [
        &b"not json"[..],
        b"{",
        b"[]",
        b"42",
        b"\"text\"",
        b"null",
        b"{}",
        b"{\"src\":1,\"body\":{}}",
        b"{\"src\":\"c\"}",
        b"{\"src\":\"c\",\"body\":[]}",
        b"\xff\xfe{\"src\":\"c\"}",
        b"{\"src\":\"c\",\"body\":{\"type\":\"read_all\",\"msg_id\":1}}\x00",
        b"",
        b"   \t ",
    ] {
        v.push(bad.to_vec());
    }
    v.push("[".repeat(100_000).into_bytes());
    v.push(format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)).into_bytes());
    // Deep but balanced nesting inside event_data.
    v.push(raw(&format!(
        r#"{{"type":"append","msg_id":2,"aggregate_id":"deep-1","event_type":"T","event_data":{{"k":{}1{}}},"version":"any"}}"#,
        "[".repeat(100),
        "]".repeat(100)
    )));
    // A BOM before a good request, and CRLF after one.
    let mut bom = "\u{FEFF}".as_bytes().to_vec();
    bom.extend(raw(r#"{"type":"read_all","msg_id":3,"max_count":1}"#));
    v.push(bom);
    let mut crlf = raw(r#"{"type":"read_all","msg_id":4,"max_count":1}"#);
    crlf.push(b'\r');
    v.push(crlf);
    // Over --max-line-bytes (set to 4096 below).
    v.push(raw(&format!(
        r#"{{"type":"append","msg_id":5,"aggregate_id":"long","event_type":"T","event_data":{{"s":"{}"}},"version":"any"}}"#,
        "x".repeat(5_000)
    )));
    // Hostile numbers and types.
    for body in [
        r#"{"type":"read_all","msg_id":18446744073709551616}"#,
        r#"{"type":"read_all","msg_id":-1}"#,
        r#"{"type":"read_all","msg_id":1.5}"#,
        r#"{"type":"frobnicate","msg_id":6}"#,
        r#"{"msg_id":7}"#,
        r#"{"type":7,"msg_id":8}"#,
        r#"{"type":"append","msg_id":9,"aggregate_id":"a","event_type":"T","event_data":{},"version":-1}"#,
        r#"{"type":"append","msg_id":10,"aggregate_id":"a","event_type":"T","event_data":{},"version":"x"}"#,
        r#"{"type":"append","msg_id":11,"aggregate_id":"a","event_type":"T","event_data":{},"version":1.5}"#,
        r#"{"type":"append","msg_id":12,"aggregate_id":"","event_type":"T","event_data":{},"version":0}"#,
        r#"{"type":"append","msg_id":13,"aggregate_id":"a","event_type":"","event_data":{},"version":"any"}"#,
        r#"{"type":"append","msg_id":14,"aggregate_id":"a","event_type":"T","event_data":{},"metadata":[1],"version":"any"}"#,
        r#"{"type":"append","msg_id":15,"aggregate_id":"a","event_type":"T","version":"any"}"#,
        r#"{"type":"append","msg_id":16,"aggregate_id":"a","events":[],"version":"any"}"#,
        r#"{"type":"append","msg_id":17,"aggregate_id":"a","event_type":"T","event_data":{},"event_id":"not-a-uuid","version":"any"}"#,
        r#"{"type":"append","msg_id":18,"aggregate_id":"a","version":"any","events":[{"event_type":"A","event_data":{},"event_id":"33333333-3333-4333-8333-333333333333"},{"event_type":"B","event_data":{},"event_id":"33333333-3333-4333-8333-333333333333"}]}"#,
        r#"{"type":"read_stream","msg_id":19,"aggregate_id":"a","from_version":18446744073709551615,"max_count":18446744073709551615}"#,
        r#"{"type":"read_all","msg_id":20,"from_sequence":18446744073709551615,"max_count":18446744073709551615}"#,
        r#"{"type":"get_state","msg_id":21,"aggregate_id":"a","timestamp":"yesterday"}"#,
        r#"{"type":"read_snapshot","msg_id":22,"aggregate_id":"nobody"}"#,
        r#"{"type":"unsubscribe","msg_id":23,"subscription":77}"#,
        r#"{"type":"create_snapshot","msg_id":24,"aggregate_id":"a","version":99}"#,
        r#"{"type":"create_snapshot","msg_id":25,"aggregate_id":"a","state":{"given":true}}"#,
        r#"{"type":"read_snapshot","msg_id":26,"aggregate_id":"a"}"#,
    ] {
        v.push(raw(body));
    }
    // Lone surrogates and escapes in every text field.
    for (field, text) in [
        ("aggregate_id", r#""sur-\ud800""#),
        ("event_type", r#""T\udfff""#),
        ("event_data", r#"{"k":"\ud800x"}"#),
        ("metadata", r#"{"m":"\udc00"}"#),
        ("event_data", r#"{"k":"\u0000\n\"\\"}"#),
        ("event_type", r#""\u0000 nul""#),
    ] {
        let mut body = json!({"type": "append", "msg_id": 30, "aggregate_id": "esc-1",
            "event_type": "T", "event_data": {}, "version": "any"});
        body[field] = json!("PLACEHOLDER");
        let text = body.to_string().replace(r#""PLACEHOLDER""#, text);
        v.push(raw(&text));
    }
    // Aggregate ids a subject cannot carry as they are.
    for (i, id) in [
        "dots.in.id",
        "star*",
        "gt>",
        "sp ace",
        "tilde~7E",
        "ünï-cödé",
        "-",
        "trailing-",
        "a-b-c",
        "tab\there",
    ]
    .iter()
    .enumerate()
    {
        v.push(
            req(
                json!({"type": "append", "msg_id": 40 + i, "aggregate_id": id,
            "event_type": "Odd.type *>", "event_data": {"id": id}, "version": 0}),
            )
            .into_bytes(),
        );
        v.push(
            req(json!({"type": "read_stream", "msg_id": 60 + i, "aggregate_id": id})).into_bytes(),
        );
    }
    v.push(
        req(
            json!({"type": "append", "msg_id": 80, "aggregate_id": "x".repeat(1000),
        "event_type": "T", "event_data": {}, "version": 0}),
        )
        .into_bytes(),
    );
    // A client id, then the same id in another aggregate: 22.
    v.push(raw(
        r#"{"type":"append","msg_id":81,"aggregate_id":"idc-1","event_type":"T","event_data":{},"event_id":"44444444-4444-4444-8444-444444444444","version":0}"#,
    ));
    v.push(raw(
        r#"{"type":"append","msg_id":82,"aggregate_id":"idc-2","event_type":"T","event_data":{},"event_id":"44444444-4444-4444-8444-444444444444","version":0}"#,
    ));
    v.push(raw(r#"{"type":"read_all","msg_id":83,"category":"idc"}"#));
    v
}

#[test]
fn hostile_lines_and_every_error_code_answer_like_the_embedded_node() {
    let _turn = nats::one_cluster_at_a_time();
    let cluster = nats::Cluster::start();
    let mut input = Vec::new();
    for (i, bad) in hostile_lines().into_iter().enumerate() {
        // Around each: an append before and a read after.
        input.extend(
            req(
                json!({"type": "append", "msg_id": 1000 + i, "aggregate_id": "around-1",
            "event_type": "T", "event_data": {"i": i}, "version": "any"}),
            )
            .into_bytes(),
        );
        input.push(b'\n');
        input.extend(bad);
        input.push(b'\n');
        input.extend(
            req(
                json!({"type": "read_stream", "msg_id": 5000 + i, "aggregate_id": "around-1",
            "from_version": i}),
            )
            .into_bytes(),
        );
        input.push(b'\n');
    }
    // Error 11: one subscription more than a node holds.
    for i in 0..1001u64 {
        input.extend(req(json!({"type": "subscribe", "msg_id": 10_000 + i})).into_bytes());
        input.push(b'\n');
    }
    let flags = ["--max-line-bytes", "4096"];
    let embedded = run_bytes(&flags, &input);
    assert!(embedded.status.success(), "{}", embedded.stderr);
    let urls = cluster.urls();
    let mut args = vec!["--nats", &urls, "--nats-stream", "hostile"];
    args.extend(flags);
    let replicated = run_bytes(&args, &input);
    assert!(
        replicated.status.success(),
        "stderr:\n{}",
        replicated.stderr
    );
    let (a, b): (Vec<Value>, Vec<Value>) = (
        embedded.lines.iter().map(mask).collect(),
        replicated.lines.iter().map(mask).collect(),
    );
    assert_eq!(a.len(), b.len(), "reply counts differ");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "reply {i} differs");
    }
    let codes: std::collections::BTreeSet<u64> = b
        .iter()
        .filter_map(|l| l["body"]["code"].as_u64())
        .collect();
    assert_eq!(codes, [10, 11, 12, 20, 22].into_iter().collect());
    // The same diagnostics for the lines that get no reply (in any order:
    // the reader reports over-long lines as it skips them, the others come
    // as their batch is encoded).
    let diagnostics = |out: &Output| -> Vec<String> {
        let mut lines: Vec<String> = out
            .stderr
            .lines()
            .filter(|l| !l.starts_with("eventstore:"))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(diagnostics(&embedded), diagnostics(&replicated));
    assert!(!diagnostics(&embedded).is_empty());
}

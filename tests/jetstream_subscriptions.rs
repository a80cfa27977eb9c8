//! Subscriptions on an idle JetStream front end (`--nats`, real 3-server
//! cluster): events appended through another front end reach a subscriber
//! whose own front end gets no more input (stdin open, nothing sent), as
//! `event` messages in sequence order, once each; an `unsubscribe` stops
//! them for that subscription while another one goes on.
//!
//! Both node loops are covered: default workers and `--workers 1`. No
//! timing is asserted; the deadlines only catch a node that never sends.

#![cfg(feature = "jetstream")]

mod common;
mod nats;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Generous: a slow, loaded 2-core machine runs three servers and three
/// front ends here.
const DEADLINE: Duration = Duration::from_secs(60);

fn nats_args(cluster: &nats::Cluster, stream: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--nats".into(),
        cluster.urls(),
        "--nats-stream".into(),
        stream.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Sends `body` with `msg_id` and returns the reply body; the front end
/// must send nothing else first.
fn call(s: &mut Session, msg_id: u64, mut body: Value) -> Value {
    body["msg_id"] = json!(msg_id);
    s.send(&req(body));
    let line = s.recv();
    assert_eq!(line["body"]["in_reply_to"], msg_id, "{line}");
    line["body"].clone()
}

/// The next `n` lines of an idle front end: each must be an `event`
/// message; returns their bodies.
fn events(s: &mut Session, who: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(line) = s.recv_within(left) else {
            panic!(
                "{who}: {} of {n} event messages within {DEADLINE:?} while idle: {got:#?}",
                got.len()
            );
        };
        assert_eq!(line["body"]["type"], "event", "{who}: {line}");
        got.push(line["body"].clone());
    }
    got
}

/// `(subscription, sequence_number, aggregate_id)` of event messages.
fn keys(events: &[Value]) -> Vec<(u64, u64, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["subscription"].as_u64().expect("subscription"),
                e["event"]["sequence_number"]
                    .as_u64()
                    .expect("sequence_number"),
                e["event"]["aggregate_id"]
                    .as_str()
                    .expect("aggregate_id")
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn an_idle_front_end_pushes_other_front_ends_events_until_unsubscribed() {
    let _turn = nats::one_cluster_at_a_time();
    let cluster = nats::Cluster::start();
    let mut writer = Session::start_serving(&as_strs(&nats_args(&cluster, "idle", &[])));
    let mut idle: Vec<(String, Session)> = [&[][..], &["--workers", "1"][..]]
        .iter()
        .map(|extra| {
            let args = nats_args(&cluster, "idle", extra);
            (
                format!("front end {extra:?}"),
                Session::start_serving(&as_strs(&args)),
            )
        })
        .collect();
    // Two subscriptions on each idle front end: 1 to everything, 2 to the
    // category `acct`. From then on they get no input until `unsubscribe`.
    for (who, s) in &mut idle {
        let all = call(s, 1, json!({"type": "subscribe"}));
        assert_eq!(all["subscription"], 1, "{who}: {all}");
        let acct = call(s, 2, json!({"type": "subscribe", "category": "acct"}));
        assert_eq!(acct["subscription"], 2, "{who}: {acct}");
        assert_eq!(acct["head"], 0, "{who}: {acct}");
    }

    // Through the writer: single events, an atomic batch, events of
    // another category.
    let mut msg_id = 100;
    let mut expected: Vec<(u64, u64, String)> = Vec::new();
    let mut seq = 0;
    let mut appended = |writer: &mut Session, aggregate: &str, count: usize| {
        msg_id += 1;
        let body = if count == 1 {
            json!({"type": "append", "aggregate_id": aggregate, "event_type": "Moved",
                "event_data": {"n": seq}, "version": "any"})
        } else {
            let events: Vec<Value> = (0..count)
                .map(|i| json!({"event_type": "Batched", "event_data": {"i": i}}))
                .collect();
            json!({"type": "append", "aggregate_id": aggregate, "events": events, "version": "any"})
        };
        let reply = call(writer, msg_id, body);
        assert_eq!(reply["type"], "appended", "{reply}");
        let mut made = Vec::new();
        for _ in 0..count {
            seq += 1;
            made.push((seq, aggregate.to_owned()));
        }
        made
    };
    for i in 0..20 {
        for (s, a) in appended(&mut writer, &format!("acct-{}", i % 3), 1) {
            expected.push((1, s, a.clone()));
            expected.push((2, s, a));
        }
    }
    for (s, a) in appended(&mut writer, "acct-9", 5) {
        expected.push((1, s, a.clone()));
        expected.push((2, s, a));
    }
    for _ in 0..5 {
        for (s, a) in appended(&mut writer, "other-1", 1) {
            expected.push((1, s, a));
        }
    }
    for (who, s) in &mut idle {
        let got = events(s, who, expected.len());
        assert_eq!(
            keys(&got),
            expected,
            "{who}: every event once, in order, each to its matching subscriptions in subscription order"
        );
    }

    // Unsubscribe 1; subscription 2 goes on while idle, 1 gets nothing.
    for (who, s) in &mut idle {
        let reply = call(s, 3, json!({"type": "unsubscribe", "subscription": 1}));
        assert_eq!(reply["type"], "unsubscribed", "{who}: {reply}");
    }
    let mut latencies = Vec::new();
    for _ in 0..10 {
        let made = appended(&mut writer, "acct-0", 1);
        let since = Instant::now();
        for (who, s) in &mut idle {
            let got = events(s, who, 1);
            let want: Vec<_> = made.iter().map(|(q, a)| (2, *q, a.clone())).collect();
            assert_eq!(
                keys(&got),
                want,
                "{who}: only subscription 2 after unsubscribe 1"
            );
        }
        latencies.push(since.elapsed());
    }
    latencies.sort();
    // For the record, not asserted: from the writer's reply to both idle
    // front ends' event messages.
    eprintln!(
        "idle push after the writer's reply: median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );

    for (who, s) in idle {
        let (status, rest, stderr) = s.finish();
        assert!(status.success(), "{who}: {status:?}\n{stderr}");
        assert!(rest.is_empty(), "{who}: nothing more may come: {rest:#?}");
    }
    let (status, rest, stderr) = writer.finish();
    assert!(status.success(), "writer: {status:?}\n{stderr}");
    assert!(rest.is_empty(), "writer: {rest:#?}");
}

//! The node on JetStream (`--nats`) against a real 3-server cluster: the
//! same replies as the embedded node, every error code, a node restarted
//! after kill -9 rebuilding its view, and error 11 when JetStream is gone.

#![cfg(feature = "jetstream")]

mod common;
mod nats;

use common::*;
use serde_json::{Value, json};

/// The node's flags for `cluster`, on stream `stream`.
fn nats_args(cluster: &nats::Cluster, stream: &str) -> Vec<String> {
    vec![
        "--nats".into(),
        cluster.urls(),
        "--nats-stream".into(),
        stream.into(),
    ]
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A session exercising every message type and most paths: appends exact,
/// "any", batches, client ids and their retries, conflicts, snapshots,
/// reads with and without filters, replays, states, subscriptions, and
/// every error code a client can cause.
fn session(seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut lines = Vec::new();
    let mut msg_id = 0u64;
    let mut next = |body: Value| {
        msg_id += 1;
        let mut body = body;
        body["msg_id"] = json!(msg_id);
        req(body)
    };
    lines.push(next(
        json!({"type": "init", "node_id": "n1", "node_ids": ["n1"]}),
    ));
    lines.push(next(json!({"type": "subscribe", "category": "user"})));
    lines.push(next(json!({"type": "append", "aggregate_id": "user-123", "event_type": "UserCreated", "event_data": {"name": "John", "age": 41}, "version": 0})));
    lines.push(next(json!({"type": "append", "aggregate_id": "user-123", "event_type": "UserUpdated", "event_data": {"name": "Jane"}, "version": 5})));
    lines.push(next(json!({"type": "append", "aggregate_id": "user-123", "event_type": "UserUpdated", "event_data": {"name": "Jane"}, "version": 1, "metadata": {"by": "ünï code"}})));
    lines.push(next(
        json!({"type": "create_snapshot", "aggregate_id": "user-123"}),
    ));
    lines.push(next(
        json!({"type": "create_snapshot", "aggregate_id": "user-123", "version": 7}),
    ));
    lines.push(next(
        json!({"type": "read_snapshot", "aggregate_id": "user-123"}),
    ));
    lines.push(next(
        json!({"type": "read_snapshot", "aggregate_id": "nobody"}),
    ));
    lines.push(next(json!({"type": "append", "aggregate_id": "order-1", "version": 0, "events": [
        {"event_type": "Created", "event_data": {"total": 1}, "event_id": "11111111-1111-4111-8111-111111111111"},
        {"event_type": "Paid", "event_data": {"paid": true}},
        {"event_type": "Odd type with spaces.and.dots*>", "event_data": [1, 2, 3]}
    ]})));
    // The batch again: a retry.
    lines.push(next(json!({"type": "append", "aggregate_id": "order-1", "version": 0, "events": [
        {"event_type": "Created", "event_data": {"total": 1}, "event_id": "11111111-1111-4111-8111-111111111111"},
        {"event_type": "Paid", "event_data": {"paid": true}},
        {"event_type": "Odd type with spaces.and.dots*>", "event_data": [1, 2, 3]}
    ]})));
    // Its first id in another aggregate: 22.
    lines.push(next(json!({"type": "append", "aggregate_id": "order-2", "version": 0, "event_type": "X", "event_data": {}, "event_id": "11111111-1111-4111-8111-111111111111"})));
    // A single event with a client id, then its retry at a stale version.
    lines.push(next(json!({"type": "append", "aggregate_id": "weird id.with*chars>-ü", "version": "any", "event_type": "X", "event_data": {"k": "v"}, "event_id": "22222222-2222-4222-8222-222222222222"})));
    lines.push(next(json!({"type": "append", "aggregate_id": "weird id.with*chars>-ü", "version": 0, "event_type": "X", "event_data": {"k": "v"}, "event_id": "22222222-2222-4222-8222-222222222222"})));
    // Errors: unknown type (10), malformed (12), a duplicate id in a batch (12).
    lines.push(next(json!({"type": "frobnicate"})));
    lines.push(next(
        json!({"type": "append", "aggregate_id": "user-1", "version": -1, "event_type": "X"}),
    ));
    lines.push(next(
        json!({"type": "append", "aggregate_id": "user-1", "version": 0, "events": [
            {"event_type": "A", "event_id": "33333333-3333-4333-8333-333333333333"},
            {"event_type": "B", "event_id": "33333333-3333-4333-8333-333333333333"}
        ]}),
    ));
    lines.push(next(json!({"type": "unsubscribe", "subscription": 99})));
    // A random mix over a few hot aggregates.
    let aggregates = ["user-1", "user-2", "order-1", "cart", "-dash", "user-"];
    let mut versions = std::collections::HashMap::new();
    for _ in 0..120 {
        let aggregate = *rng.pick(&aggregates);
        let version: u64 = *versions.get(aggregate).unwrap_or(&0);
        let body = match rng.below(10) {
            0..=3 => {
                let expected = if rng.percent(15) {
                    json!(version + 1)
                } else if rng.percent(20) {
                    json!("any")
                } else {
                    json!(version)
                };
                if expected == json!(version) || expected == json!("any") {
                    versions.insert(aggregate, version + 1);
                }
                json!({"type": "append", "aggregate_id": aggregate, "event_type": "Set", "event_data": {"v": rng.below(100), "k": rng.below(5)}, "version": expected})
            }
            4 => {
                let n = rng.range(2, 4);
                let events: Vec<Value> = (0..n)
                    .map(|i| json!({"event_type": "Batch", "event_data": {"i": i}}))
                    .collect();
                versions.insert(aggregate, version + n);
                json!({"type": "append", "aggregate_id": aggregate, "events": events, "version": version})
            }
            5 => {
                json!({"type": "read_stream", "aggregate_id": aggregate, "from_version": rng.below(3)})
            }
            6 => {
                json!({"type": "replay", "aggregate_id": aggregate, "use_snapshot": rng.percent(50)})
            }
            7 => json!({"type": "create_snapshot", "aggregate_id": aggregate}),
            8 => {
                json!({"type": "read_all", "from_sequence": rng.below(20), "max_count": rng.below(30)})
            }
            _ => {
                json!({"type": "get_state", "aggregate_id": aggregate, "timestamp": "2999-01-01T00:00:00Z"})
            }
        };
        lines.push(next(body));
    }
    lines.push(next(
        json!({"type": "read_all", "category": "user", "from_sequence": 0}),
    ));
    lines.push(next(
        json!({"type": "read_all", "event_types": ["Batch"], "max_count": 5}),
    ));
    lines.push(next(
        json!({"type": "get_state", "aggregate_id": "user-1", "timestamp": "1999-01-01T00:00:00Z"}),
    ));
    lines.push(next(
        json!({"type": "subscribe", "from_sequence": 0, "aggregate_id": "user-123"}),
    ));
    lines.push(next(json!({"type": "unsubscribe", "subscription": 1})));
    lines.push(next(json!({"type": "read_all"})));
    lines
}

/// The whole reply lines, masked (ids and times differ between runs).
fn masked(out: &Output) -> Vec<Value> {
    out.lines.iter().map(mask).collect()
}

#[test]
fn the_jetstream_node_answers_like_the_embedded_node() {
    let _turn = nats::one_cluster_at_a_time();
    let cluster = nats::Cluster::start();
    let seed = test_seed("the_jetstream_node_answers_like_the_embedded_node");
    let lines = session(seed);
    let text = input(&lines);
    if let Ok(path) = std::env::var("EVENTSTORE_DUMP_SESSION") {
        std::fs::write(path, &text).expect("dump the session");
    }
    let embedded = run_bytes(&[], text.as_bytes());
    assert!(embedded.status.success());
    let args = nats_args(&cluster, "equality");
    let replicated = run_bytes(&as_strs(&args), text.as_bytes());
    assert!(
        replicated.status.success(),
        "stderr:\n{}",
        replicated.stderr
    );
    let (a, b) = (masked(&embedded), masked(&replicated));
    assert_eq!(
        a.len(),
        b.len(),
        "reply counts differ\nstderr:\n{}",
        replicated.stderr
    );
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(
            x,
            y,
            "reply {i} differs (request {})",
            lines.get(i).map_or("?", |l| l)
        );
    }
    // Every error code a client can cause came up.
    let codes: std::collections::BTreeSet<u64> = b
        .iter()
        .filter_map(|l| l["body"]["code"].as_u64())
        .collect();
    assert_eq!(codes, [10, 12, 20, 22].into_iter().collect());

    // A second front end on the same stream reads the same log.
    let mut other = Session::start(&as_strs(&args));
    let (events, head) = read_whole_log(&mut other);
    let last = replicated.bodies().last().cloned().expect("a reply");
    assert_eq!(head, last["head"].as_u64().expect("head"));
    assert_eq!(json!(events), last["events"]);
    drop(other.finish());
}

/// A pipelined workload: many aggregates (so many appends are in flight at
/// once), interleaved reads, and exact-version conflicts inside the
/// window: A then B on one aggregate where A fails (B decided after A's
/// outcome), A then B where B is stale, batches, snapshots.
fn pipelined_session(seed: u64, requests: usize) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut lines = Vec::new();
    let mut versions: std::collections::HashMap<String, u64> = Default::default();
    for i in 0..requests {
        let msg_id = i as u64 + 1;
        let aggregate = format!("acct-{}", rng.below(300));
        let version = versions.get(&aggregate).copied().unwrap_or(0);
        let body = match rng.below(100) {
            0..=69 => {
                versions.insert(aggregate.clone(), version + 1);
                json!({"type": "append", "aggregate_id": aggregate, "event_type": "Set",
                    "event_data": {"v": rng.below(1000)}, "version": version})
            }
            70..=79 => {
                // A stale append, then the right one right behind it.
                lines.push(req(json!({"type": "append", "aggregate_id": aggregate,
                    "event_type": "Stale", "event_data": {}, "version": version + 1,
                    "msg_id": msg_id + 100_000})));
                versions.insert(aggregate.clone(), version + 1);
                json!({"type": "append", "aggregate_id": aggregate, "event_type": "After",
                    "event_data": {}, "version": version})
            }
            80..=84 => {
                versions.insert(aggregate.clone(), version + 2);
                json!({"type": "append", "aggregate_id": aggregate, "version": version,
                    "events": [{"event_type": "B1", "event_data": {}}, {"event_type": "B2", "event_data": {"x": 1}}]})
            }
            85..=88 => json!({"type": "create_snapshot", "aggregate_id": aggregate}),
            89..=92 => {
                json!({"type": "read_stream", "aggregate_id": aggregate, "from_version": 1})
            }
            93..=94 => json!({"type": "replay", "aggregate_id": aggregate, "use_snapshot": true}),
            95 => json!({"type": "read_all", "from_sequence": rng.below(50), "max_count": 5}),
            _ => {
                // An append expecting the version after the one just before.
                json!({"type": "append", "aggregate_id": aggregate, "event_type": "Late",
                    "event_data": {}, "version": version + 3})
            }
        };
        let mut body = body;
        body["msg_id"] = json!(msg_id);
        lines.push(req(body));
    }
    lines
}

#[test]
fn pipelined_appends_answer_like_one_at_a_time() {
    let _turn = nats::one_cluster_at_a_time();
    let cluster = nats::Cluster::start();
    let seed = test_seed("pipelined_appends_answer_like_one_at_a_time");
    let lines = pipelined_session(seed, 3_000);
    let text = input(&lines);
    let embedded = run_bytes(&[], text.as_bytes());
    assert!(embedded.status.success());
    let expected = masked(&embedded);
    assert!(
        expected
            .iter()
            .any(|l| l["body"]["type"] == "concurrency_error"),
        "the session has conflicts"
    );
    for (workers, stream) in [("1", "pipelined_w1"), ("4", "pipelined_w4")] {
        let mut args = nats_args(&cluster, stream);
        args.extend(["--workers".to_owned(), workers.to_owned()]);
        let replicated = run_bytes(&as_strs(&args), text.as_bytes());
        assert!(
            replicated.status.success(),
            "stderr:\n{}",
            replicated.stderr
        );
        let got = masked(&replicated);
        assert_eq!(
            expected.len(),
            got.len(),
            "--workers {workers}: reply counts differ"
        );
        for (i, (x, y)) in expected.iter().zip(&got).enumerate() {
            assert_eq!(
                x, y,
                "--workers {workers}: reply {i} differs; the node's stderr:\n{}",
                replicated.stderr
            );
        }
    }
}

/// Sends `body` (with `msg_id`) and reads lines until its reply, putting
/// the `event` messages read meanwhile into `events`; returns the reply.
fn call_collecting(
    s: &mut Session,
    msg_id: u64,
    mut body: Value,
    events: &mut Vec<Value>,
) -> Value {
    body["msg_id"] = json!(msg_id);
    s.send(&req(body));
    loop {
        let line = s.recv();
        let body = line["body"].clone();
        if body["type"] == "event" {
            events.push(body);
        } else if body["in_reply_to"] == msg_id {
            return body;
        }
    }
}

#[test]
fn a_subscriber_sees_the_events_of_every_front_end_in_order() {
    let _turn = nats::one_cluster_at_a_time();
    let cluster = nats::Cluster::start();
    let args = nats_args(&cluster, "fanout");
    let mut one = Session::start(&as_strs(&args));
    let mut two = Session::start(&as_strs(&args));
    // The `event` messages front end one sends.
    let mut seen: Vec<Value> = Vec::new();
    let mut msg_id = 0;
    let mut next = || {
        msg_id += 1;
        msg_id
    };
    let subscribed = call_collecting(&mut one, next(), json!({"type": "subscribe"}), &mut seen);
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    let total = 40u64;
    for i in 0..total {
        let body = json!({"type": "append", "aggregate_id": format!("acct-{}", i % 5),
            "event_type": "Moved", "event_data": {"i": i}, "version": "any"});
        let reply = if i % 4 == 0 {
            call_collecting(&mut one, next(), body, &mut seen)
        } else {
            call_collecting(&mut two, next(), body, &mut Vec::new())
        };
        assert_eq!(reply["type"], "appended", "append {i}: {reply}");
    }
    // Front end one hands out the other's events after its own replies:
    // ask until every event came (a condition, not a sleep).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ping = json!({"type": "read_all", "max_count": 0});
    while (seen.len() as u64) < total && std::time::Instant::now() < deadline {
        let reply = call_collecting(&mut one, next(), ping.clone(), &mut seen);
        assert_eq!(reply["type"], "all_read", "{reply}");
    }
    // One more request: nothing more may come.
    call_collecting(&mut one, next(), ping, &mut seen);
    let seqs: Vec<u64> = seen
        .iter()
        .map(|e| {
            e["event"]["sequence_number"]
                .as_u64()
                .expect("sequence_number")
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "every event once, in order"
    );
    drop(one.finish());
    drop(two.finish());
}

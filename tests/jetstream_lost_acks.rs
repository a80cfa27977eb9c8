//! Lost publish acknowledgements, made deterministic: the front end talks
//! to the cluster through a proxy that swallows the next acknowledgement
//! (`tests/nats/proxy.rs`). The events are stored, the front end hears
//! nothing, publishes again with the same `Nats-Msg-Id`s (or finds them in
//! its view) and answers as if the first acknowledgement had come: the
//! original sequence numbers, and the events stored once, for an exact
//! version, for `"any"` (where a second append would be accepted) and for
//! an atomic batch, with ids drawn by the front end and with the client's.

#![cfg(feature = "jetstream")]

mod common;
mod nats;

use common::*;
use serde_json::{Value, json};

/// Sends `body` (its `msg_id` set) with the next acknowledgement lost;
/// returns the reply body.
fn append_losing_its_ack(
    s: &mut Session,
    proxy: &nats::proxy::Proxy,
    msg_id: u64,
    mut body: Value,
) -> Value {
    let lost = proxy.dropped();
    proxy.drop_next_acks(1);
    body["msg_id"] = json!(msg_id);
    let reply = s.call(&req(body));
    assert_eq!(proxy.dropped(), lost + 1, "no acknowledgement was lost");
    reply
}

#[test]
fn an_append_whose_acknowledgement_is_lost_is_stored_once_and_answered_as_stored() {
    let _turn = nats::one_cluster_at_a_time();
    let cluster = nats::Cluster::start();
    let proxy = cluster.proxy_to_first();
    let args = [
        "--nats",
        &proxy.url(),
        "--nats-stream",
        "lost",
        "--nats-timeout-ms",
        "20000",
    ];
    let mut s = Session::start(&args);

    // An exact version, ids drawn by the front end.
    let body = append_losing_its_ack(
        &mut s,
        &proxy,
        1,
        json!({"type": "append", "aggregate_id": "user-1", "event_type": "A",
               "event_data": {"n": 1}, "version": 0}),
    );
    assert_eq!(body["type"], "appended", "{body}");
    assert_eq!(body["sequence_number"], 1, "{body}");
    let drawn = body["event_id"].as_str().expect("event_id").to_owned();
    assert!(is_canonical_uuid(&drawn), "{body}");

    // "any": a second append would be accepted, so only the ids keep the
    // retry from storing the event twice.
    let body = append_losing_its_ack(
        &mut s,
        &proxy,
        2,
        json!({"type": "append", "aggregate_id": "user-1", "event_type": "B",
               "event_data": {"n": 2}, "version": "any"}),
    );
    assert_eq!(body["type"], "appended", "{body}");
    assert_eq!(body["sequence_number"], 2, "{body}");

    // An atomic batch, the client's id on its first event, one drawn.
    let id = "55555555-5555-4555-8555-555555555555";
    let body = append_losing_its_ack(
        &mut s,
        &proxy,
        3,
        json!({"type": "append", "aggregate_id": "order-7", "version": 0,
               "events": [{"event_type": "C", "event_id": id}, {"event_type": "D"}]}),
    );
    assert_eq!(body["type"], "appended", "{body}");
    assert_eq!(body["sequence_numbers"], json!([3, 4]), "{body}");
    assert_eq!(body["event_ids"][0], id, "{body}");

    // The client's own retry of that batch gets the original answer.
    let body = s.call(&req(
        json!({"type": "append", "msg_id": 4, "aggregate_id": "order-7", "version": 0,
               "events": [{"event_type": "C", "event_id": id}, {"event_type": "D"}]}),
    ));
    assert_eq!(body["type"], "appended", "{body}");
    assert_eq!(body["sequence_numbers"], json!([3, 4]), "{body}");

    // The next exact append continues at the right version.
    let body = s.call(&req(
        json!({"type": "append", "msg_id": 5, "aggregate_id": "user-1", "event_type": "E",
               "version": 2}),
    ));
    assert_eq!(body["type"], "appended", "{body}");
    assert_eq!(body["sequence_number"], 5, "{body}");
    let (status, _, stderr) = s.finish();
    assert!(status.success(), "{stderr}");

    // A fresh front end, straight to the cluster: every event once.
    let direct = ["--nats", &cluster.urls(), "--nats-stream", "lost"];
    let mut fresh = Session::start(&direct);
    let (events, head) = read_whole_log(&mut fresh);
    assert_eq!(head, 5);
    let summary: Vec<(String, u64, String)> = events
        .iter()
        .map(|e| {
            (
                e["aggregate_id"].as_str().expect("aggregate").to_owned(),
                e["version"].as_u64().expect("version"),
                e["event_type"].as_str().expect("type").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, u64, String)> = [
        ("user-1", 1, "A"),
        ("user-1", 2, "B"),
        ("order-7", 1, "C"),
        ("order-7", 2, "D"),
        ("user-1", 3, "E"),
    ]
    .iter()
    .map(|(a, v, t)| ((*a).to_owned(), *v, (*t).to_owned()))
    .collect();
    assert_eq!(summary, expected);
    assert_eq!(events[0]["event_id"], drawn.as_str());
    let (status, _, stderr) = fresh.finish();
    assert!(status.success(), "{stderr}");
}

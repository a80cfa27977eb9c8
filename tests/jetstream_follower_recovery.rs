//! A front end's view recovers from its consumer's failures, made
//! deterministic with the proxy of `tests/nats/proxy.rs`: heartbeats lost
//! until the follower starts a new consumer, then a heartbeat claiming
//! messages that never came, before that consumer has delivered anything.
//! The client's ordered consumer then recreates itself from the stream's
//! first message (async-nats 0.52 starts after the last message it
//! delivered, and it delivered none), and messages the view already holds
//! come again. The view must start a new consumer from its head, not stop:
//! writes through this front end still succeed, and its view stays equal
//! to another front end's. And a consumer stuck on the server (deliveries
//! lost, heartbeats going on): the follower's watchdog replaces it, for a
//! write waiting and for a library `catch_up` waiting.

#![cfg(feature = "jetstream")]

mod common;
mod nats;

use common::*;
use serde_json::{Value, json};
use std::thread;
use std::time::{Duration, Instant};

/// Appends one event to `aggregate` through `s` until it is appended:
/// error 11 is retried (the client reconnecting), except one saying that
/// the view stopped, which never goes away.
fn append(s: &mut Session, msg_id: u64, aggregate: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    let id = format!("00000000-0000-4000-8000-{msg_id:012}");
    loop {
        let body = s.call(&req(json!({"type": "append", "msg_id": msg_id,
            "aggregate_id": aggregate, "event_type": "E", "event_data": {},
            "version": "any", "event_id": id})));
        match body["type"].as_str() {
            Some("appended") => return body,
            Some("error")
                if body["code"] == 11
                    && !body["message"].as_str().unwrap_or("").contains("stopped")
                    && Instant::now() < deadline =>
            {
                thread::sleep(Duration::from_millis(100));
            }
            _ => panic!("append {msg_id}: {body}\nstderr:\n{}", s.stderr_so_far()),
        }
    }
}

/// Waits until `what` shows in the node's stderr.
fn wait_for_stderr(s: &Session, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !s.stderr_so_far().contains(what) {
        let stderr = s.stderr_so_far();
        assert!(
            Instant::now() < deadline && !stderr.contains("view stopped"),
            "no {what:?} on stderr:\n{stderr}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_consumer_recreated_from_the_start_does_not_stop_the_view() {
    let _turn = nats::one_cluster_at_a_time();
    let cluster = nats::Cluster::start();
    let urls = cluster.urls();
    let proxy = cluster.proxy_to_first();
    let direct = ["--nats", urls.as_str(), "--nats-stream", "recover"];
    let proxied = ["--nats", &proxy.url(), "--nats-stream", "recover"];

    // Some events, then a front end through the proxy that holds them.
    let mut writer = Session::start(&direct);
    for i in 1..=3 {
        assert_eq!(append(&mut writer, i, "acct-1")["sequence_number"], i);
    }
    let mut front = Session::start(&proxied);
    let (_, head) = read_whole_log(&mut front);
    assert_eq!(head, 3);

    // Heartbeats lost: the ordered consumer reports a missed heartbeat
    // (after twice its 5 s interval) and the follower starts a new one.
    proxy.lose_heartbeats(true);
    wait_for_stderr(&front, "Events follower restarts: missed idle heartbeat");
    proxy.lose_heartbeats(false);
    // A heartbeat now says that this new consumer delivered messages the
    // client never got: the ordered consumer recreates itself, from the
    // stream's start, as it has delivered nothing yet (no event is written
    // meanwhile). Messages 1..3 come again; the follower must notice and
    // start a fresh consumer from its head.
    proxy.falsify_heartbeats(true);
    wait_for_stderr(&front, "the consumer went back to message 1");
    proxy.falsify_heartbeats(false);

    // Writes through the front end go on, and both views agree.
    for i in 4..=6 {
        assert_eq!(append(&mut front, i, "acct-2")["sequence_number"], i);
    }
    assert_eq!(append(&mut writer, 7, "acct-1")["sequence_number"], 7);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (ours, theirs) = loop {
        let (ours, head) = read_whole_log(&mut front);
        if head == 7 {
            break (ours, read_whole_log(&mut writer).0);
        }
        assert!(
            Instant::now() < deadline,
            "the front end's view is at {head}"
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ours, theirs, "the two views differ");
    for s in [front, writer] {
        let (status, _, stderr) = s.finish();
        assert!(status.success(), "{stderr}");
        assert!(!stderr.contains("view stopped"), "{stderr}");
    }
}

/// The server's consumer stops delivering while its heartbeats go on
/// (claiming nothing new was delivered): the client's ordered consumer
/// sees nothing wrong, so only the follower's watchdog can notice, from a
/// write waiting for an event the stream acknowledged. It starts a new
/// consumer; the write's retry is then answered with its sequence number.
#[test]
fn a_consumer_stuck_on_the_server_is_replaced_while_a_write_waits() {
    let _turn = nats::one_cluster_at_a_time();
    let cluster = nats::Cluster::start();
    let proxy = cluster.proxy_to_first();
    let args = [
        "--nats",
        &proxy.url(),
        "--nats-stream",
        "stuck",
        "--nats-timeout-ms",
        "2000",
    ];
    let mut front = Session::start(&args);
    assert_eq!(append(&mut front, 1, "acct-1")["sequence_number"], 1);

    proxy.stall_consumers();
    // Stored, but the view never gets it from the stalled consumer: error
    // 11 at the end of the wait (the watchdog's new consumer may also
    // bring it in time: then it is appended).
    let body = front.call(&req(json!({"type": "append", "msg_id": 2,
        "aggregate_id": "acct-1", "event_type": "E", "event_data": {},
        "version": "any", "event_id": "00000000-0000-4000-8000-000000000002"})));
    match body["type"].as_str() {
        Some("appended") => assert_eq!(body["sequence_number"], 2, "{body}"),
        Some("error") => assert_eq!(body["code"], 11, "{body}"),
        _ => panic!("{body}"),
    }
    // Retried with the same id until answered: the view gets it.
    assert_eq!(append(&mut front, 2, "acct-1")["sequence_number"], 2);
    assert_eq!(append(&mut front, 3, "acct-1")["sequence_number"], 3);
    let (status, _, stderr) = front.finish();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("Events follower restarts: no message for"),
        "the watchdog did not start a new consumer:\n{stderr}"
    );
}

/// The same stuck consumer on a library front end that only reads: its
/// `catch_up` waits for the stream's last event the way writers wait, so
/// the watchdog replaces the consumer and a later `catch_up` succeeds.
#[test]
fn a_catch_up_waiting_on_a_stuck_consumer_gets_it_replaced() {
    use eventstore::jetstream::{JetStream, JetStreamConfig};
    use eventstore::{ExpectedVersion, NewEvent, SequenceNumber};
    let _turn = nats::one_cluster_at_a_time();
    let cluster = nats::Cluster::start();
    let proxy = cluster.proxy_to_first();
    let connect = |url: &str| {
        let mut config = JetStreamConfig::new(url);
        config.stream = "catchup".to_owned();
        config.unavailable_after = Duration::from_secs(3);
        JetStream::connect(config).expect("connect")
    };
    let writer = connect(&cluster.urls());
    let reader = connect(&proxy.url());
    let data = serde_json::value::RawValue::from_string("{}".to_owned()).expect("json");
    let append = || {
        writer
            .append("acct-1", ExpectedVersion::Any, &[NewEvent::new("E", &data)])
            .expect("append")
    };
    append();
    assert_eq!(reader.catch_up().expect("caught up"), SequenceNumber(1));

    proxy.stall_consumers();
    append();
    // Stalled: the first tries give up; the watchdog's new consumer then
    // brings the event.
    let deadline = Instant::now() + Duration::from_secs(120);
    while reader.catch_up().is_err() {
        assert!(Instant::now() < deadline, "the reader never caught up");
    }
    assert_eq!(reader.view().head(), SequenceNumber(2));
}

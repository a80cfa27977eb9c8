//! Failures with the node on JetStream, against a real 3-server cluster:
//! a NATS server SIGKILLed while two front ends write the same hot
//! aggregates, a front end killed with kill -9 and restarted, and
//! JetStream gone altogether (error 11, reads still served).
//!
//! Nothing here depends on timing: clients retry until they get an answer
//! (with their event ids, so a retry is recognised), and every wait is a
//! condition polled under a generous limit.

#![cfg(feature = "jetstream")]

mod common;
mod nats;

use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Text shared between threads.
type Shared = Arc<Mutex<String>>;

/// The writers' progress, shared with the test's thread: rounds done, and
/// each writer's node stderr and last request, reported when they stall.
#[derive(Clone, Default)]
struct Progress {
    inner: Arc<Mutex<Rounds>>,
}

/// Rounds done, and each writer's (stderr, last request).
type Rounds = (u64, Vec<(Shared, Shared)>);

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a writer's front end, watched for the report.
    fn start(&self, args: &[String]) -> Session {
        let mut s = start(args);
        let last = Shared::default();
        s.set_last_request(Arc::clone(&last));
        self.lock().1.push((s.stderr_log(), last));
        s
    }

    /// One more round done.
    fn step(&self) {
        self.lock().0 += 1;
    }

    /// Waits until `n` rounds are done; panics after 120 s with what each
    /// writer's front end said and its last request.
    fn wait_for(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.lock().0 < n {
            if Instant::now() > deadline {
                let mut report = String::new();
                for (w, (stderr, last)) in self.lock().1.iter().enumerate() {
                    let stderr = stderr.lock().unwrap_or_else(|p| p.into_inner());
                    let last = last.lock().unwrap_or_else(|p| p.into_inner());
                    report.push_str(&format!(
                        "front end {w}: last request {last}\nstderr:\n{stderr}\n"
                    ));
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                panic!("writers stalled before {n} rounds (now {now:.3})\n{report}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn nats_args(cluster: &nats::Cluster, stream: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--nats".to_owned(),
        cluster.urls(),
        "--nats-stream".to_owned(),
        stream.to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn start(args: &[String]) -> Session {
    Session::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Appends one event with `id` until the node says `appended` (error 11
/// is retried with the same id, so the event is stored once); returns the
/// reply body.
fn append_until_acked(s: &mut Session, msg_id: &mut u64, aggregate: &str, id: &str) -> Value {
    let body = json!({"type": "append", "aggregate_id": aggregate, "event_type": "Hot",
        "event_data": {"id": id}, "version": "any", "event_id": id});
    retry_until_acked(s, msg_id, body)
}

/// Sends the append `body` until the node says `appended`, retrying error
/// 11 (the body carries its event ids, so the events are stored once).
fn retry_until_acked(s: &mut Session, msg_id: &mut u64, mut body: Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    let aggregate = body["aggregate_id"].clone();
    let id = body["event_id"].clone();
    loop {
        *msg_id += 1;
        body["msg_id"] = json!(*msg_id);
        let body = s.call(&req(body.clone()));
        match body["type"].as_str() {
            Some("appended") => return body,
            Some("error") if body["code"] == 11 && Instant::now() < deadline => {}
            _ => panic!("append of {id} to {aggregate}: {body}"),
        }
    }
}

/// Checks a whole log read from a fresh front end: dense sequence numbers,
/// versions 1..n along each aggregate; returns id → (sequence, aggregate).
fn check_log(events: &[Value], head: u64) -> HashMap<String, (u64, String)> {
    assert_eq!(events.len() as u64, head, "the log has holes");
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["sequence_number"],
            json!(i as u64 + 1),
            "sequence numbers not dense"
        );
        let aggregate = e["aggregate_id"].as_str().expect("aggregate_id").to_owned();
        let v = versions.entry(aggregate.clone()).or_insert(0);
        *v += 1;
        assert_eq!(e["version"], json!(*v), "versions of {aggregate} not 1..n");
        let id = e["event_id"].as_str().expect("event_id").to_owned();
        let seq = i as u64 + 1;
        assert!(
            ids.insert(id.clone(), (seq, aggregate)).is_none(),
            "{id} stored twice"
        );
    }
    ids
}

#[test]
fn two_front_ends_write_hot_aggregates_while_a_server_is_killed() {
    let _turn = nats::one_cluster_at_a_time();
    let mut cluster = nats::Cluster::start();
    let args = nats_args(&cluster, "hot", &[]);
    let seed = test_seed("two_front_ends_write_hot_aggregates_while_a_server_is_killed");
    let per_writer = 150;
    let progress = Progress::default();
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let args = args.clone();
            let progress = progress.clone();
            thread::spawn(move || {
                let mut rng = Rng::new(seed ^ w);
                let mut s = progress.start(&args);
                let mut msg_id = 0;
                let mut acked = Vec::new();
                for i in 0..per_writer {
                    let aggregate = format!("hot-{}", rng.below(3));
                    let id = rng.uuid();
                    let body = append_until_acked(&mut s, &mut msg_id, &aggregate, &id);
                    assert_eq!(body["event_id"], json!(id));
                    let seq = body["sequence_number"].as_u64().expect("sequence_number");
                    acked.push((id, seq, aggregate.clone()));
                    // Batches: stored whole (consecutive numbers) or not at all.
                    if i % 5 == 2 {
                        let ids: Vec<String> = (0..3).map(|_| rng.uuid()).collect();
                        let events: Vec<Value> = ids
                            .iter()
                            .map(|id| json!({"event_type": "Batched", "event_data": {}, "event_id": id}))
                            .collect();
                        let body = retry_until_acked(&mut s, &mut msg_id, json!({"type": "append",
                            "aggregate_id": aggregate, "events": events, "version": "any"}));
                        assert_eq!(body["event_ids"], json!(ids), "{body}");
                        let seqs = body["sequence_numbers"].as_array().expect("sequence_numbers");
                        for (id, seq) in ids.into_iter().zip(seqs) {
                            acked.push((id, seq.as_u64().expect("seq"), aggregate.clone()));
                        }
                        let first = seqs[0].as_u64().expect("seq");
                        assert_eq!(seqs, &[json!(first), json!(first + 1), json!(first + 2)]);
                    }
                    // Some exact appends at a version that may be stale:
                    // appended or concurrency_error, never anything else.
                    if i % 10 == 0 {
                        msg_id += 1;
                        let body = s.call(&req(json!({"type": "read_stream", "msg_id": msg_id,
                            "aggregate_id": "hot-0", "max_count": 0})));
                        let version = body["version"].as_u64().expect("version");
                        let id = rng.uuid();
                        msg_id += 1;
                        let body = s.call(&req(json!({"type": "append", "msg_id": msg_id,
                            "aggregate_id": "hot-0", "event_type": "Exact", "event_data": {},
                            "version": version, "event_id": id})));
                        match body["type"].as_str() {
                            Some("appended") => acked.push((
                                id,
                                body["sequence_number"].as_u64().expect("seq"),
                                "hot-0".to_owned(),
                            )),
                            Some("concurrency_error") => {}
                            // Unanswered within the wait: make sure of it
                            // with the same id ("any": stored once).
                            Some("error") if body["code"] == 11 => {
                                let body = append_until_acked(&mut s, &mut msg_id, "hot-0", &id);
                                acked.push((
                                    id,
                                    body["sequence_number"].as_u64().expect("seq"),
                                    "hot-0".to_owned(),
                                ));
                            }
                            _ => panic!("exact append: {body}"),
                        }
                    }
                    progress.step();
                }
                let (status, _, stderr) = s.finish();
                assert!(status.success(), "front end {w} failed: {stderr}");
                acked
            })
        })
        .collect();
    // Kill a server once the writers are well under way, bring it back later.
    progress.wait_for(60);
    cluster.kill(0);
    progress.wait_for(180);
    cluster.restart(0);
    let acked: Vec<(String, u64, String)> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer panicked"))
        .collect();

    // A fresh front end reads everything back.
    let mut fresh = start(&args);
    let (events, head) = read_whole_log(&mut fresh);
    let stored = check_log(&events, head);
    let acked_ids: HashSet<&str> = acked.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(acked_ids.len(), acked.len(), "an id acknowledged twice");
    for (id, seq, aggregate) in &acked {
        assert_eq!(
            stored.get(id),
            Some(&(*seq, aggregate.clone())),
            "acknowledged {id} not where acked"
        );
    }
    for id in stored.keys() {
        assert!(
            acked_ids.contains(id.as_str()),
            "{id} stored but never acknowledged"
        );
    }
    let (status, _, stderr) = fresh.finish();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_front_end_killed_and_restarted_sees_the_same_log_and_snapshots() {
    let _turn = nats::one_cluster_at_a_time();
    let cluster = nats::Cluster::start();
    let args = nats_args(&cluster, "restart", &[]);
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut node = KillableNode::start(&strs);
    let mut stdin = node.take_stdin();
    let mut lines = String::new();
    for i in 0..40u64 {
        let aggregate = format!("acct-{}", i % 4);
        lines.push_str(&req(
            json!({"type": "append", "msg_id": i, "aggregate_id": aggregate,
            "event_type": "Deposited", "event_data": {"n": i}, "version": "any"}),
        ));
        lines.push('\n');
        if i % 7 == 6 {
            lines.push_str(&req(
                json!({"type": "create_snapshot", "msg_id": 1000 + i, "aggregate_id": aggregate}),
            ));
            lines.push('\n');
        }
    }
    std::io::Write::write_all(&mut stdin, lines.as_bytes()).expect("write requests");
    // Wait, through a second front end, until all 40 are stored.
    let mut watcher = start(&args);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let body = watcher.call(&req(
            json!({"type": "read_all", "msg_id": 1, "max_count": 0}),
        ));
        if body["head"] == 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the writes did not arrive: {body}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    // Every snapshot request came before the 40th append, so all are
    // stored; wait until the watcher's view has them too.
    let snapshots = |s: &mut Session| -> Vec<Option<(u64, Value)>> {
        (0..4)
            .map(|a| read_snapshot_of(s, &format!("acct-{a}")))
            .collect()
    };
    let snaps_before = loop {
        let snaps = snapshots(&mut watcher);
        if snaps.iter().all(Option::is_some) {
            break snaps;
        }
        assert!(Instant::now() < deadline, "snapshots missing: {snaps:?}");
        thread::sleep(Duration::from_millis(50));
    };
    let killed = node.kill();
    let replies = killed.replies.len();
    assert!(
        replies >= 40,
        "{replies} replies before the kill\n{}",
        killed.stderr
    );
    let (before, head) = read_whole_log(&mut watcher);

    let mut restarted = start(&args);
    let (after, head_after) = read_whole_log(&mut restarted);
    assert_eq!(head_after, head);
    assert_eq!(after, before, "the restarted front end's log differs");
    assert_eq!(snapshots(&mut restarted), snaps_before);
    for s in [watcher, restarted] {
        let (status, _, stderr) = s.finish();
        assert!(status.success(), "{stderr}");
    }
}

#[test]
fn without_jetstream_writes_get_error_11_and_reads_go_on() {
    let _turn = nats::one_cluster_at_a_time();
    let mut cluster = nats::Cluster::start();
    let args = nats_args(&cluster, "gone", &["--nats-timeout-ms", "1500"]);
    let mut s = start(&args);
    // (Retried: on a loaded machine the view may take longer than the
    // short wait to show the first event; its id keeps it stored once.)
    let mut msg_id = 0;
    let body = retry_until_acked(
        &mut s,
        &mut msg_id,
        json!({"type": "append", "aggregate_id": "user-1", "event_type": "A",
        "event_data": {"a": 1}, "version": 0, "event_id": "33333333-3333-4333-8333-333333333333"}),
    );
    assert_eq!(body["sequence_number"], 1, "{body}");
    for i in 0..3 {
        cluster.kill(i);
    }
    let id = "44444444-4444-4444-8444-444444444444";
    let append = |msg_id: u64| {
        req(
            json!({"type": "append", "msg_id": msg_id, "aggregate_id": "user-1",
            "events": [{"event_type": "B", "event_id": id}, {"event_type": "C"}], "version": 1}),
        )
    };
    let body = s.call(&append(2));
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["code"], 11, "{body}");
    let body = s.call(&req(
        json!({"type": "create_snapshot", "msg_id": 3, "aggregate_id": "user-1"}),
    ));
    assert_eq!(body["code"], 11, "{body}");
    // Reads are served from the view meanwhile.
    let body = s.call(&req(
        json!({"type": "read_stream", "msg_id": 4, "aggregate_id": "user-1"}),
    ));
    assert_eq!(body["type"], "stream_read");
    assert_eq!(body["version"], 1);
    let body = s.call(&req(
        json!({"type": "replay", "msg_id": 5, "aggregate_id": "user-1"}),
    ));
    assert_eq!(body["state"], json!({"a": 1}));
    // Back again: the client retries with its ids; the batch is stored once.
    cluster.restart_stopped();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut msg_id = 10;
    let body = loop {
        msg_id += 1;
        let body = s.call(&append(msg_id));
        if body["type"] == "appended" || Instant::now() > deadline {
            break body;
        }
        assert_eq!(body["code"], 11, "{body}");
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(body["sequence_numbers"], json!([2, 3]), "{body}");
    let (events, head) = read_whole_log(&mut s);
    assert_eq!(head, 3);
    check_log(&events, head);
    let (status, _, stderr) = s.finish();
    assert!(status.success(), "{stderr}");
}

/// Atomic batches written while the stream's *leader* is SIGKILLed (found
/// through the servers' monitoring endpoint) and restarted: a fresh front
/// end then sees every batch whole (its events consecutive, all of them)
/// or not at all, each acknowledged one where it was acknowledged.
#[test]
fn a_leader_killed_during_batches_leaves_no_batch_partly_visible() {
    let _turn = nats::one_cluster_at_a_time();
    let mut cluster = nats::Cluster::start();
    let args = nats_args(&cluster, "leader", &[]);
    let seed = test_seed("a_leader_killed_during_batches_leaves_no_batch_partly_visible");
    let batches = 120u64;
    let size = 4u64;
    let progress = Progress::default();
    let writer = {
        let args = args.clone();
        let progress = progress.clone();
        thread::spawn(move || {
            let mut rng = Rng::new(seed);
            let mut s = progress.start(&args);
            let mut msg_id = 0;
            let mut acked = Vec::new();
            for b in 0..batches {
                let aggregate = format!("batch-{}", rng.below(6));
                let ids: Vec<String> = (0..size).map(|_| rng.uuid()).collect();
                let events: Vec<Value> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| json!({"event_type": "Part", "event_data": {"batch": b, "i": i}, "event_id": id}))
                    .collect();
                let body = retry_until_acked(
                    &mut s,
                    &mut msg_id,
                    json!({"type": "append",
                    "aggregate_id": aggregate, "events": events, "version": "any"}),
                );
                assert_eq!(body["event_ids"], json!(ids), "{body}");
                let seqs: Vec<u64> = body["sequence_numbers"]
                    .as_array()
                    .expect("sequence_numbers")
                    .iter()
                    .map(|s| s.as_u64().expect("seq"))
                    .collect();
                acked.push((b, seqs));
                progress.step();
            }
            let (status, _, stderr) = s.finish();
            assert!(status.success(), "front end failed: {stderr}");
            acked
        })
    };
    progress.wait_for(20);
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        if let Some(i) = cluster.stream_leader("leader") {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no server reports the stream's leader"
        );
        thread::sleep(Duration::from_millis(100));
    };
    cluster.kill(leader);
    progress.wait_for(70);
    cluster.restart(leader);
    let acked = writer.join().expect("writer panicked");

    let mut fresh = start(&args);
    let (events, head) = read_whole_log(&mut fresh);
    check_log(&events, head);
    let mut parts: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for e in &events {
        let b = e["event_data"]["batch"].as_u64().expect("batch");
        let i = e["event_data"]["i"].as_u64().expect("i");
        let seq = e["sequence_number"].as_u64().expect("seq");
        parts.entry(b).or_default().push((i, seq));
    }
    for (b, got) in &parts {
        let first = got[0].1;
        let whole: Vec<(u64, u64)> = (0..size).map(|i| (i, first + i)).collect();
        assert_eq!(
            got, &whole,
            "batch {b} is partly visible or not consecutive"
        );
    }
    for (b, seqs) in &acked {
        let stored: Vec<u64> = parts
            .get(b)
            .map(|p| p.iter().map(|x| x.1).collect())
            .unwrap_or_default();
        assert_eq!(
            &stored, seqs,
            "acknowledged batch {b} not where acknowledged"
        );
    }
    assert_eq!(
        parts.len(),
        acked.len(),
        "a batch stored that was never acknowledged"
    );
    let (status, _, stderr) = fresh.finish();
    assert!(status.success(), "{stderr}");
}

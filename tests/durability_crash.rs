//! Durability across crashes: the node is SIGKILLed at random points while a
//! client pipelines appends and snapshots into it; after each restart every
//! acknowledged write must be back, unchanged, and the log must go on where
//! it stopped. Also the same round trip through the library
//! (`EventStore::open`), and `--fsync never` (which must survive a killed
//! process: its data is in the page cache).
//!
//! `EVENTSTORE_SEED=N` repeats a run's random choices (kill timing aside);
//! Under `EVENTSTORE_SOAK` (`tests/support/mod.rs`) it runs many more
//! kill/restart rounds.

mod common;
use common::*;
use eventstore::{
    AppendError, EventId, EventStore, ExpectedVersion, FsyncPolicy, IdConflict, NewEvent,
    Positions, SequenceNumber, Version,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::thread;
use std::time::Duration;

/// Aggregate names, some needing escapes in JSON and UTF-8 in the records.
const AGGS: [&str; 4] = ["account-1", "account-2", "order/é", "cart \"x\" \\ ✓"];

// ---------------------------------------------------------------------------
// The node under SIGKILL
// ---------------------------------------------------------------------------

#[test]
fn sigkill_at_random_points_loses_no_acknowledged_write() {
    let rounds = if soak() { 40 } else { 6 };
    crash_rounds("fsync-always", &["--fsync", "always"], rounds);
}

#[test]
fn fsync_never_survives_sigkill_of_the_process() {
    let rounds = if soak() { 20 } else { 3 };
    crash_rounds("fsync-never", &["--fsync", "never"], rounds);
}

#[test]
fn fsync_never_keeps_everything_across_a_clean_exit() {
    let dir = TempDir::new("fsync-never-clean");
    let mut s = Session::start_serving(&["--data-dir", dir.arg(), "--fsync", "never"]);
    for (i, agg) in AGGS.iter().enumerate() {
        let body = s.call(&req(append(
            i as u64,
            agg,
            "Opened",
            json!({"i": i}),
            json!(0),
        )));
        assert_matches(&body, &appended(i as u64, i as u64 + 1));
    }
    let body = s.call(&req(
        json!({"type": "create_snapshot", "msg_id": 9, "aggregate_id": AGGS[0], "state": {"s": 1}}),
    ));
    assert_eq!(body["version"], 1, "{body}");
    let (before, head) = read_whole_log(&mut s);
    let (status, rest, stderr) = s.finish();
    assert!(
        status.success() && rest.is_empty(),
        "{status:?} {rest:?} {stderr}"
    );

    for fsync in ["never", "always"] {
        let mut s = Session::start_serving(&["--data-dir", dir.arg(), "--fsync", fsync]);
        assert_eq!(
            read_whole_log(&mut s),
            (before.clone(), head),
            "after restart with --fsync {fsync}"
        );
        assert_eq!(
            read_snapshot_of(&mut s, AGGS[0]),
            Some((1, json!({"s": 1})))
        );
        let (status, _, stderr) = s.finish();
        assert!(status.success(), "{stderr}");
    }
}

/// A client that waits for each reply: the node is idle when it is
/// killed right after one, so nothing but the reply itself says the data
/// reached the disk.
#[test]
fn sigkill_right_after_a_reply_keeps_what_it_acknowledged() {
    let dir = TempDir::new("kill-after-reply");
    let mut rng = Rng::new(test_seed("kill-after-reply"));
    let mut expected: Vec<(String, String)> = vec![]; // (event_id, aggregate)
    let mut snapshots: BTreeMap<&str, u64> = BTreeMap::new();
    for round in 0..6 {
        let workers = ["1", "2", "4"][round % 3];
        let fsync = ["always", "never"][round % 2];
        let mut s = Session::start_serving(&[
            "--data-dir",
            dir.arg(),
            "--workers",
            workers,
            "--fsync",
            fsync,
        ]);
        for i in 0..rng.range(1, 4) {
            let agg = *rng.pick(&AGGS);
            let v = expected.iter().filter(|e| e.1 == agg).count();
            let body = s.call(&req(append(i, agg, "T", json!({"round": round}), json!(v))));
            assert_matches(&body, &appended(i, expected.len() as u64 + 1));
            expected.push((
                body["event_id"].as_str().unwrap().to_owned(),
                agg.to_owned(),
            ));
            if rng.percent(30) {
                let body = s.call(&req(
                    json!({"type": "create_snapshot", "msg_id": 99, "aggregate_id": agg}),
                ));
                assert_eq!(body["version"], v + 1, "{body}");
                snapshots.insert(agg, v as u64 + 1);
            }
        }
        s.kill();
        let mut s = Session::start_serving(&["--data-dir", dir.arg()]);
        let (log, head) = read_whole_log(&mut s);
        let got: Vec<(String, String)> = log
            .iter()
            .map(|e| {
                (
                    e["event_id"].as_str().unwrap().to_owned(),
                    e["aggregate_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            (head, &got),
            (expected.len() as u64, &expected),
            "round {round} (--workers {workers} --fsync {fsync})"
        );
        for (agg, v) in &snapshots {
            assert_eq!(
                read_snapshot_of(&mut s, agg).map(|s| s.0),
                Some(*v),
                "round {round}: snapshot of {agg:?}"
            );
        }
        s.kill();
    }
}

/// `rounds` kill/restart cycles on one data dir, accumulating what was
/// acknowledged; each restart checks everything (see [`verify_recovery`])
/// and appends a little more to check that numbering continues.
fn crash_rounds(label: &str, flags: &[&str], rounds: usize) {
    let seed = test_seed(label);
    let mut rng = Rng::new(seed);
    let dir = TempDir::new(label);
    let mut model = Model::default();
    for round in 0..rounds {
        let workers = ["1", "2", "4"][round % 3];
        let ops = plan(&model, &mut rng, round, if soak() { 4000 } else { 1500 });
        let lines: Vec<String> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| request(op, i as u64))
            .collect();

        let mut args = vec!["--data-dir", dir.arg(), "--workers", workers];
        args.extend_from_slice(flags);
        let mut node = KillableNode::start(&args);
        let stdin = node.take_stdin();
        let pacing = Rng::new(rng.next_u64());
        let writer = thread::spawn(move || pipeline(stdin, &lines, pacing));
        let delay = rng.range(5, if soak() { 500 } else { 200 });
        thread::sleep(Duration::from_millis(delay));
        let killed = node.kill();
        drop(writer.join().unwrap());

        let ctx = format!(
            "{label}, seed {seed}, round {round} (--workers {workers}, killed after {delay} ms)"
        );
        let acked = acknowledged(&ops, &killed, &ctx);
        verify_recovery(&dir, flags, &mut model, &ops, &acked, &ctx);
    }
}

/// Writes `lines` in bursts of random size with short random pauses, so
/// the kill finds the node in every kind of state. Returns stdin still open
/// (the node must be killed, not see end of input) once done or broken.
fn pipeline(
    mut stdin: std::process::ChildStdin,
    lines: &[String],
    mut rng: Rng,
) -> std::process::ChildStdin {
    let mut i = 0;
    while i < lines.len() {
        let n = rng.range(1, 12) as usize;
        let mut burst = String::new();
        for l in &lines[i..(i + n).min(lines.len())] {
            burst.push_str(l);
            burst.push('\n');
        }
        i += n;
        if stdin
            .write_all(burst.as_bytes())
            .and_then(|()| stdin.flush())
            .is_err()
        {
            break; // killed
        }
        if rng.percent(70) {
            thread::sleep(Duration::from_micros(rng.range(200, 3000)));
        }
    }
    stdin
}

// ---------------------------------------------------------------------------
// The client's plan: requests whose every reply is known in advance
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Ev {
    event_type: String,
    data: Value,
    metadata: Option<Value>,
    id: Option<String>,
}

#[derive(Clone, Debug)]
enum Op {
    /// One `append` (single event, or a batch when `batch`), at the exact
    /// version the aggregate is at.
    Append {
        agg: String,
        events: Vec<Ev>,
        batch: bool,
        first_seq: u64,
        first_version: u64,
    },
    /// A `create_snapshot`, the given state or the fold, at `version`.
    Snapshot {
        agg: String,
        version: u64,
        state: Option<Value>,
        check_version: bool,
    },
    /// An append repeating a stored client event id of `agg`, with a stale
    /// version: answered with the stored event, nothing appended.
    Retry { agg: String, id: String, seq: u64 },
    /// An append to `agg` with a client id stored in another aggregate: error 22.
    Conflict { agg: String, id: String },
}

/// What the client knows of the store: the whole log and snapshots as last
/// read back, and everything ever acknowledged.
#[derive(Default)]
struct Model {
    log: Vec<Value>,
    snapshots: BTreeMap<String, Option<(u64, Value)>>,
    /// sequence number → (event_id, aggregate, version), as acknowledged.
    acked_events: BTreeMap<u64, (String, String, u64)>,
    /// aggregate → highest acknowledged snapshot version.
    acked_snapshots: BTreeMap<String, u64>,
    /// Stored client-given ids: (id, aggregate, sequence number).
    client_ids: Vec<(String, String, u64)>,
}

impl Model {
    fn version(&self, agg: &str) -> u64 {
        self.log.iter().filter(|e| e["aggregate_id"] == agg).count() as u64
    }
}

fn random_event(rng: &mut Rng, round: usize, k: usize, client_id: bool) -> Ev {
    let data = match rng.below(10) {
        0 => json!([round, k]),
        1 => json!(k),
        2 => json!({"text": "é \" \\ \n ✓ \u{1F600}", "k": k}),
        _ => json!({"round": round, "k": k, format!("f{}", rng.below(5)): rng.below(1000)}),
    };
    Ev {
        event_type: rng.pick(&["Deposited", "Withdrawn", "Noted ✓"]).to_string(),
        data,
        metadata: rng
            .percent(30)
            .then(|| json!({"corr": k, "by": "crash-test"})),
        id: client_id.then(|| rng.uuid()),
    }
}

/// `n` requests continuing from `model`, every outcome predicted.
fn plan(model: &Model, rng: &mut Rng, round: usize, n: usize) -> Vec<Op> {
    let mut versions: BTreeMap<&str, u64> = AGGS.iter().map(|a| (*a, model.version(a))).collect();
    let mut seq = model.log.len() as u64 + 1;
    let mut ops = Vec::with_capacity(n);
    for k in 0..n {
        let agg = *rng.pick(&AGGS);
        let roll = rng.below(100);
        let op = match roll {
            87..=94 if !model.client_ids.is_empty() => {
                let (id, agg, seq) = rng.pick(&model.client_ids).clone();
                Op::Retry { agg, id, seq }
            }
            95.. if !model.client_ids.is_empty() => {
                let (id, owner, _) = rng.pick(&model.client_ids).clone();
                let other = AGGS.iter().find(|a| **a != owner).unwrap();
                Op::Conflict {
                    agg: other.to_string(),
                    id,
                }
            }
            75..=86 => Op::Snapshot {
                agg: agg.to_owned(),
                version: versions[agg],
                state: rng
                    .percent(50)
                    .then(|| json!({"snapshot": format!("r{round}-{k}"), "n": rng.below(100)})),
                check_version: rng.percent(50),
            },
            _ => {
                let batch = (60..75).contains(&roll);
                let count = if batch { rng.range(2, 5) as usize } else { 1 };
                let events: Vec<Ev> = (0..count)
                    .map(|_| {
                        let client_id = rng.percent(35);
                        random_event(rng, round, k, client_id)
                    })
                    .collect();
                let first_version = versions[agg] + 1;
                let op = Op::Append {
                    agg: agg.to_owned(),
                    events,
                    batch,
                    first_seq: seq,
                    first_version,
                };
                seq += count as u64;
                *versions.get_mut(agg).unwrap() += count as u64;
                op
            }
        };
        ops.push(op);
    }
    ops
}

fn event_json(e: &Ev) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("event_type".into(), json!(e.event_type));
    m.insert("event_data".into(), e.data.clone());
    if let Some(md) = &e.metadata {
        m.insert("metadata".into(), md.clone());
    }
    if let Some(id) = &e.id {
        m.insert("event_id".into(), json!(id));
    }
    Value::Object(m)
}

fn request(op: &Op, msg_id: u64) -> String {
    req(match op {
        Op::Append {
            agg,
            events,
            batch: false,
            first_version,
            ..
        } => {
            let mut body = event_json(&events[0]);
            let m = body.as_object_mut().unwrap();
            m.insert("type".into(), json!("append"));
            m.insert("msg_id".into(), json!(msg_id));
            m.insert("aggregate_id".into(), json!(agg));
            m.insert("version".into(), json!(first_version - 1));
            body
        }
        Op::Append {
            agg,
            events,
            first_version,
            ..
        } => json!({
            "type": "append", "msg_id": msg_id, "aggregate_id": agg,
            "events": events.iter().map(event_json).collect::<Vec<_>>(), "version": first_version - 1}),
        Op::Snapshot {
            agg,
            version,
            state,
            check_version,
        } => {
            let mut body =
                json!({"type": "create_snapshot", "msg_id": msg_id, "aggregate_id": agg});
            if *check_version {
                body["version"] = json!(version);
            }
            if let Some(s) = state {
                body["state"] = s.clone();
            }
            body
        }
        Op::Retry { agg, id, .. } => {
            json!({"type": "append", "msg_id": msg_id, "aggregate_id": agg,
            "event_type": "Retried", "event_id": id, "version": 0})
        }
        Op::Conflict { agg, id } => json!({"type": "append", "msg_id": msg_id, "aggregate_id": agg,
            "event_type": "Stolen", "event_id": id, "version": "any"}),
    })
}

fn expected_reply(op: &Op, msg_id: u64) -> Value {
    let id = |e: &Ev| json!(e.id.as_deref().unwrap_or("<uuid>"));
    match op {
        Op::Append {
            events,
            batch: false,
            first_seq,
            ..
        } => json!({"type": "appended", "in_reply_to": msg_id,
            "event_id": id(&events[0]), "sequence_number": first_seq}),
        Op::Append {
            events,
            first_seq,
            first_version,
            ..
        } => json!({"type": "appended", "in_reply_to": msg_id,
            "event_ids": events.iter().map(id).collect::<Vec<_>>(),
            "sequence_numbers": (0..events.len() as u64).map(|i| first_seq + i).collect::<Vec<_>>(),
            "version": first_version + events.len() as u64 - 1}),
        Op::Snapshot { agg, version, .. } => {
            json!({"type": "snapshot_created", "in_reply_to": msg_id,
            "aggregate_id": agg, "version": version})
        }
        Op::Retry { id, seq, .. } => {
            json!({"type": "appended", "in_reply_to": msg_id, "event_id": id,
            "sequence_number": seq})
        }
        Op::Conflict { .. } => error(msg_id, 22, "<string>"),
    }
}

/// Checks the replies a killed node gave (each the predicted one, in order)
/// and returns them: reply `i` acknowledges request `i`.
fn acknowledged(ops: &[Op], killed: &Killed, ctx: &str) -> Vec<Value> {
    let bodies: Vec<Value> = killed.replies.iter().map(|r| r["body"].clone()).collect();
    assert!(
        bodies.len() <= ops.len(),
        "{ctx}: more replies than requests"
    );
    for (i, body) in bodies.iter().enumerate() {
        if let Err(msg) = matches(body, &expected_reply(&ops[i], i as u64), "body") {
            panic!(
                "{ctx}: reply {i} to {:?}: {msg}\nstderr:\n{}",
                ops[i], killed.stderr
            );
        }
    }
    bodies
}

// ---------------------------------------------------------------------------
// After the crash
// ---------------------------------------------------------------------------

/// Restarts the node on `dir` and checks what it recovered against what was
/// acknowledged and what was sent; then appends to every aggregate and
/// checks the numbers continue. Brings `model` up to date.
fn verify_recovery(
    dir: &TempDir,
    flags: &[&str],
    model: &mut Model,
    ops: &[Op],
    acked: &[Value],
    ctx: &str,
) {
    // What this round acknowledged joins what earlier rounds did.
    for (op, body) in ops.iter().zip(acked) {
        match op {
            Op::Append {
                agg,
                first_seq,
                first_version,
                ..
            } => {
                let ids: Vec<String> = match body.get("event_ids") {
                    Some(ids) => ids
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i.as_str().unwrap().to_owned())
                        .collect(),
                    None => vec![body["event_id"].as_str().unwrap().to_owned()],
                };
                for (i, id) in ids.into_iter().enumerate() {
                    model.acked_events.insert(
                        first_seq + i as u64,
                        (id, agg.clone(), first_version + i as u64),
                    );
                }
            }
            Op::Snapshot { agg, version, .. } => {
                let v = model.acked_snapshots.entry(agg.clone()).or_default();
                *v = (*v).max(*version);
            }
            Op::Retry { .. } | Op::Conflict { .. } => {}
        }
    }

    let mut args = vec!["--data-dir", dir.arg()];
    args.extend_from_slice(flags);
    let mut s = Session::start_serving(&args);
    let (log, head) = read_whole_log(&mut s);
    let ctx = format!("{ctx}, after restart (head {head})");
    check_log_invariants(&log, head, &ctx);

    // Everything from before this round is back exactly (ids, times, data).
    let base = model.log.len();
    assert!(
        log.len() >= base,
        "{ctx}: log shrank from {base} to {} events",
        log.len()
    );
    for (old, new) in model.log.iter().zip(&log) {
        assert_eq!(old, new, "{ctx}: an event from an earlier round changed");
    }
    // Every acknowledged event is back, same number, aggregate, version, id.
    for (seq, (id, agg, version)) in &model.acked_events {
        let e = log.get(*seq as usize - 1).unwrap_or_else(|| {
            panic!("{ctx}: acknowledged event {seq} ({agg:?} v{version}) is lost")
        });
        assert_eq!(
            (&e["event_id"], &e["aggregate_id"], &e["version"]),
            (&json!(id), &json!(agg), &json!(version)),
            "{ctx}: acknowledged event {seq} came back different: {e}"
        );
    }
    // The new events are a prefix of what was sent, whole appends only.
    let planned: Vec<(&Op, &Ev, u64)> = ops
        .iter()
        .flat_map(|op| match op {
            Op::Append {
                events,
                first_version,
                ..
            } => events
                .iter()
                .enumerate()
                .map(|(i, e)| (op, e, first_version + i as u64))
                .collect(),
            _ => vec![],
        })
        .collect();
    let recovered = log.len() - base;
    assert!(
        recovered <= planned.len(),
        "{ctx}: {recovered} new events, only {} were sent",
        planned.len()
    );
    for (e, (op, sent, version)) in log[base..].iter().zip(&planned) {
        let Op::Append { agg, .. } = op else {
            unreachable!()
        };
        assert_eq!(e["aggregate_id"], json!(agg), "{ctx}: {e}");
        assert_eq!(e["version"], json!(version), "{ctx}: {e}");
        assert_eq!(e["event_type"], json!(sent.event_type), "{ctx}: {e}");
        assert_eq!(e["event_data"], sent.data, "{ctx}: {e}");
        assert_eq!(e.get("metadata"), sent.metadata.as_ref(), "{ctx}: {e}");
        if let Some(id) = &sent.id {
            assert_eq!(e["event_id"], json!(id), "{ctx}: {e}");
        }
    }
    // Which requests' records are surely / possibly on disk.
    let (mut events_seen, mut last_recovered_op, mut first_lost_op) = (0, None, ops.len());
    for (j, op) in ops.iter().enumerate() {
        if let Op::Append { events, .. } = op {
            if events_seen + events.len() <= recovered {
                events_seen += events.len();
                last_recovered_op = Some(j);
            } else {
                first_lost_op = j;
                break;
            }
        }
    }
    assert_eq!(
        events_seen, recovered,
        "{ctx}: a batch was recovered in part"
    );
    let surely = acked.len().max(last_recovered_op.map_or(0, |j| j + 1));

    // Snapshots: the acknowledged one or a later one that reached the disk.
    let mut snapshots = BTreeMap::new();
    for agg in AGGS {
        let got = read_snapshot_of(&mut s, agg);
        let fold_at = |v: u64| {
            fold(
                log.iter()
                    .filter(|e| e["aggregate_id"] == agg && e["version"].as_u64() <= Some(v))
                    .map(|e| &e["event_data"]),
            )
        };
        let sent: Vec<(usize, u64, &Option<Value>)> = ops
            .iter()
            .enumerate()
            .filter_map(|(j, op)| match op {
                Op::Snapshot {
                    agg: a,
                    version,
                    state,
                    ..
                } if a == agg => Some((j, *version, state)),
                _ => None,
            })
            .collect();
        let last_sure = sent.iter().rposition(|(j, ..)| *j < surely);
        let mut candidates: Vec<Option<(u64, Value)>> = sent[last_sure.unwrap_or(0)..]
            .iter()
            .filter(|(j, ..)| *j < first_lost_op)
            .map(|(_, v, state)| Some((*v, (*state).clone().unwrap_or_else(|| fold_at(*v)))))
            .collect();
        if last_sure.is_none() {
            candidates.push(model.snapshots.get(agg).cloned().flatten());
        }
        assert!(
            candidates.contains(&got),
            "{ctx}: snapshot of {agg:?} is {got:?}; expected one of {candidates:?} (acknowledged: v{:?})",
            model.acked_snapshots.get(agg)
        );
        if let Some(v) = model.acked_snapshots.get(agg) {
            assert!(
                got.as_ref().is_some_and(|(g, _)| g >= v),
                "{ctx}: acknowledged snapshot of {agg:?} v{v} lost"
            );
        }
        snapshots.insert(agg.to_owned(), got);
    }
    model.snapshots = snapshots;
    for (op, ..) in planned.iter().take(recovered) {
        if let Op::Append {
            agg,
            events,
            first_seq,
            ..
        } = op
        {
            for (i, e) in events.iter().enumerate() {
                if let Some(id) = &e.id {
                    model
                        .client_ids
                        .push((id.clone(), agg.clone(), first_seq + i as u64));
                }
            }
        }
    }
    model.log = log;

    // The log goes on where it stopped: next sequence number, next version.
    let head = model.log.len() as u64;
    for (i, agg) in AGGS.iter().enumerate() {
        let (msg_id, next, v) = (i as u64 + 1, head + i as u64 + 1, model.version(agg));
        let body = s.call(&req(append(
            msg_id,
            agg,
            "AfterRestart",
            json!({"after": msg_id}),
            json!(v),
        )));
        assert_matches(&body, &appended(msg_id, next));
        model.acked_events.insert(
            next,
            (
                body["event_id"].as_str().unwrap().to_owned(),
                agg.to_string(),
                v + 1,
            ),
        );
        let stream = s.call(&req(
            json!({"type": "read_stream", "msg_id": msg_id, "aggregate_id": agg,
                                         "from_version": v + 1}),
        ));
        assert_eq!(
            (&stream["version"], &stream["events"][0]["sequence_number"]),
            (&json!(v + 1), &json!(next)),
            "{ctx}: {stream}"
        );
    }
    model.log = read_whole_log(&mut s).0;
    // Client ids stored before the crash still work as such.
    if let Some((id, agg, seq)) = model.client_ids.first().cloned() {
        let retry = Op::Retry {
            agg: agg.clone(),
            id: id.clone(),
            seq,
        };
        assert_matches(&s.call(&request(&retry, 77)), &expected_reply(&retry, 77));
        let conflict = Op::Conflict {
            agg: AGGS.iter().find(|a| **a != agg).unwrap().to_string(),
            id,
        };
        assert_matches(
            &s.call(&request(&conflict, 78)),
            &expected_reply(&conflict, 78),
        );
    }
    let (status, rest, stderr) = s.finish();
    assert!(
        status.success() && rest.is_empty(),
        "{ctx}: verifying node: {status:?} {rest:?}\n{stderr}"
    );
    let acked_new = ops.iter().take(acked.len()).map(|op| match op {
        Op::Append { events, .. } => events.len(),
        _ => 0,
    });
    eprintln!(
        "{ctx}: {recovered} new events back ({} acknowledged); stderr: {:?}",
        acked_new.sum::<usize>(),
        stderr.trim()
    );
}

/// Sequence numbers 1..=head dense, versions dense per aggregate, event ids
/// unique, `recorded_at` never falling.
fn check_log_invariants(log: &[Value], head: u64, ctx: &str) {
    assert_eq!(
        log.len() as u64,
        head,
        "{ctx}: read_all returned {} events, head {head}",
        log.len()
    );
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    let mut ids = HashSet::new();
    let mut last_time = "";
    for (i, e) in log.iter().enumerate() {
        assert_eq!(
            e["sequence_number"],
            i as u64 + 1,
            "{ctx}: sequence numbers not dense at {e}"
        );
        let v = versions
            .entry(e["aggregate_id"].as_str().unwrap())
            .or_default();
        *v += 1;
        assert_eq!(e["version"], *v, "{ctx}: versions not dense at {e}");
        assert!(
            ids.insert(e["event_id"].as_str().unwrap()),
            "{ctx}: duplicate event id at {e}"
        );
        let t = e["recorded_at"].as_str().unwrap();
        assert!(t >= last_time, "{ctx}: recorded_at fell at {e}");
        last_time = t;
    }
}

// ---------------------------------------------------------------------------
// The library: EventStore::open, drop, open again
// ---------------------------------------------------------------------------

/// Everything observable about one event, owned: sequence number, id,
/// aggregate, version, type, data, metadata, recorded_at.
type EventFields = (
    u64,
    EventId,
    String,
    u64,
    String,
    String,
    Option<String>,
    i64,
);

fn snapshot_of_log(store: &EventStore) -> Vec<EventFields> {
    store
        .read_all(SequenceNumber(1), usize::MAX)
        .events
        .iter()
        .map(|e| {
            (
                e.sequence_number.0,
                e.id(),
                e.aggregate_id().to_owned(),
                e.version().0,
                e.event_type().to_owned(),
                e.data().to_owned(),
                e.metadata().map(str::to_owned),
                e.recorded_at().0,
            )
        })
        .collect()
}

#[test]
fn library_reopen_keeps_events_ids_snapshots_and_numbering() {
    let dir = TempDir::new("library-reopen");
    let id = |n: u128| EventId::from_u128(0x1234_5678_9abc_4def_8000_0000_0000_0000 | n);
    let (d1, d2, meta) = (
        raw(r#"{"a":1,"b":"é"}"#),
        raw(r#"{"b":2}"#),
        raw(r#"{"m":true}"#),
    );
    let (log, streams, snapshots, replays, generated) = {
        let store = open_store(dir.path(), FsyncPolicy::Always).unwrap();
        assert!(store.is_durable());
        let a = store
            .append(
                "a",
                ExpectedVersion::Exact(Version(0)),
                &[NewEvent::new("A1", &d1)],
            )
            .unwrap();
        store
            .append(
                "a",
                ExpectedVersion::Exact(Version(1)),
                &[NewEvent::new("A2", &d2).with_id(id(1)).with_metadata(&meta)],
            )
            .unwrap();
        store
            .append(
                "b",
                ExpectedVersion::Any,
                &[
                    NewEvent::new("B1", &d1).with_id(id(2)),
                    NewEvent::new("B2", &d2).with_id(id(3)),
                ],
            )
            .unwrap();
        store.create_snapshot("a", Some(Version(2)), None).unwrap(); // the fold
        store
            .create_snapshot("b", None, Some(&raw(r#"{"given":[1,2]}"#)))
            .unwrap();
        store
            .append(
                "a",
                ExpectedVersion::Exact(Version(2)),
                &[NewEvent::new("A3", &raw("[1]"))],
            )
            .unwrap();
        let streams: Vec<_> = ["a", "b"]
            .iter()
            .map(|g| store.stream_sequence_numbers(g))
            .collect();
        let snapshots: Vec<_> = ["a", "b"].iter().map(|g| store.snapshot(g)).collect();
        let replays: Vec<_> = ["a", "b"].iter().map(|g| store.replay(g, true)).collect();
        (
            snapshot_of_log(&store),
            streams,
            snapshots,
            replays,
            a.event_ids(&store)[0],
        )
    };
    assert_eq!(log.len(), 5);
    assert_eq!(snapshots[0].as_ref().unwrap().state, r#"{"a":1,"b":2}"#);

    let mut head = 5;
    for reopen in 0..3 {
        let store = open_store(dir.path(), FsyncPolicy::Always).unwrap();
        let ctx = format!("reopen {reopen}");
        assert_eq!(store.head(), SequenceNumber(head), "{ctx}");
        assert_eq!(
            &snapshot_of_log(&store)[..5],
            &log[..],
            "{ctx}: events changed"
        );
        for (g, before) in ["a", "b"].iter().zip(&streams) {
            assert!(
                store.stream_sequence_numbers(g).starts_with(before),
                "{ctx}: stream {g:?} changed"
            );
        }
        if reopen == 0 {
            assert_eq!(
                ["a", "b"].map(|g| store.snapshot(g))[..],
                snapshots[..],
                "{ctx}"
            );
            assert_eq!(
                ["a", "b"].map(|g| store.replay(g, true))[..],
                replays[..],
                "{ctx}"
            );
        }
        // Retries of ids stored before the restart: the original positions.
        let retry = store
            .append(
                "a",
                ExpectedVersion::Exact(Version(0)),
                &[NewEvent::new("X", &d1).with_id(id(1))],
            )
            .unwrap();
        assert_eq!(
            (retry.positions.first(), retry.duplicate),
            (SequenceNumber(2), true),
            "{ctx}"
        );
        let batch = [
            NewEvent::new("B1", &d1).with_id(id(2)),
            NewEvent::new("B2", &d2).with_id(id(3)),
        ];
        let retry = store.append("b", ExpectedVersion::Any, &batch).unwrap();
        assert_eq!(
            retry.positions,
            Positions::Listed(vec![SequenceNumber(3), SequenceNumber(4)]),
            "{ctx}"
        );
        let retry = store
            .append(
                "a",
                ExpectedVersion::Any,
                &[NewEvent::new("A1", &d1).with_id(generated)],
            )
            .unwrap();
        assert_eq!(
            (retry.positions.first(), retry.duplicate),
            (SequenceNumber(1), true),
            "{ctx}: generated id"
        );
        // The same ids in another aggregate: a conflict naming the owner.
        for (wrong, used, owner, version) in [
            ("b", id(1), "a", 2),
            ("a", id(3), "b", 2),
            ("b", generated, "a", 1),
        ] {
            match store.append(
                wrong,
                ExpectedVersion::Any,
                &[NewEvent::new("X", &d1).with_id(used)],
            ) {
                Err(AppendError::IdConflict(IdConflict::AlreadyStored {
                    aggregate_id,
                    version: v,
                    ..
                })) => {
                    assert_eq!(
                        (aggregate_id.as_str(), v),
                        (owner, Version(version)),
                        "{ctx}"
                    )
                }
                other => panic!("{ctx}: {used} into {wrong:?}: {other:?}"),
            }
        }
        assert_eq!(
            store.head(),
            SequenceNumber(head),
            "{ctx}: a retry appended"
        );
        // Numbering continues; a fresh generated id is new.
        let va = store.version("a");
        let next = store
            .append(
                "a",
                ExpectedVersion::Exact(va),
                &[NewEvent::new("More", &d2)],
            )
            .unwrap();
        head += 1;
        assert_eq!(
            (next.positions.first(), next.version),
            (SequenceNumber(head), Version(va.0 + 1)),
            "{ctx}"
        );
        let new_id = next.event_ids(&store)[0];
        assert!(
            snapshot_of_log(&store)[..head as usize - 1]
                .iter()
                .all(|e| e.1 != new_id),
            "{ctx}: id reused"
        );
        // A snapshot taken now is the one the next open serves.
        let v = store
            .create_snapshot("b", None, Some(&raw(&format!(r#"{{"reopen":{reopen}}}"#))))
            .unwrap();
        assert_eq!(v, Version(2));
        drop(store);
        let store = open_store(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!(
            store.snapshot("b").unwrap().state,
            format!(r#"{{"reopen":{reopen}}}"#),
            "{ctx}"
        );
        assert_eq!(store.head(), SequenceNumber(head), "{ctx}");
    }
}

//! docs/protocol.md "Ordering": replies in request order, the same whatever the
//! number of workers (event_id / recorded_at aside), and each reply written
//! as soon as it is ready.

mod common;
use common::*;
use serde_json::{Value, json};

const AGGS: [&str; 4] = ["hot-0", "hot-1", "hot-2", "cool"];

/// A generated workload: the input lines, for each reply-deserving request
/// its msg_id (None: sent without one), and for each append the reply type
/// a one-at-a-time store gives (by reply index).
struct Workload {
    lines: Vec<String>,
    requests: Vec<String>,
    replies: Vec<Option<u64>>,
    predicted: Vec<(usize, &'static str)>,
    total_events: u64,
}

fn workload(seed: u64, n: usize) -> Workload {
    let mut r = Rng::new(seed);
    let mut versions = [0u64; 4];
    let mut ids: Vec<(String, usize)> = Vec::new(); // stored client ids, with aggregate
    let mut batches: Vec<(usize, Vec<String>)> = Vec::new(); // stored client-id batches
    let mut total = 0u64;
    let mut w = Workload {
        lines: vec![],
        requests: vec![],
        replies: vec![],
        predicted: vec![],
        total_events: 0,
    };
    let mut msg_id = 0u64;

    for _ in 0..n {
        msg_id += 1;
        let a = r.below(4) as usize;
        let agg = AGGS[a];
        let version = |r: &mut Rng, v: u64| -> (Value, bool) {
            match r.below(20) {
                0..=9 => (json!(v), true),
                10..=13 => (json!(if v > 0 { v - 1 } else { v + 1 }), false),
                14 => (json!(v + 3), false),
                _ => (json!("any"), true),
            }
        };
        let data = |r: &mut Rng| -> Value {
            match r.below(10) {
                0 => json!(r.below(100)),
                1 => json!(null),
                2 => json!([r.below(5)]),
                _ => {
                    json!({format!("k{}", r.below(6)): r.below(1000), "s": format!("v{}", r.below(3))})
                }
            }
        };
        let kind = r.below(100);
        let mut body = match kind {
            // single append
            0..=29 => {
                let (v, ok) = version(&mut r, versions[a]);
                let mut b = json!({"type": "append", "msg_id": msg_id, "aggregate_id": agg,
                                   "event_type": *r.pick(&["Created", "Updated", "Renamed"]),
                                   "event_data": data(&mut r), "version": v});
                if r.percent(20) {
                    b["metadata"] = json!({"corr": r.below(10)});
                }
                let id = match r.below(10) {
                    0..=3 => Some(r.uuid()),
                    4 if !ids.is_empty() => Some(r.pick(&ids).0.clone()),
                    _ => None,
                };
                let known = id
                    .as_ref()
                    .and_then(|id| ids.iter().find(|(i, _)| i == id).map(|(_, ia)| *ia));
                let outcome = match known {
                    Some(ia) if ia == a => "appended", // a retry: nothing appended
                    Some(_) => "error",                // id in another aggregate: 22
                    None if ok => {
                        versions[a] += 1;
                        total += 1;
                        if let Some(id) = &id {
                            ids.push((id.clone(), a));
                        }
                        "appended"
                    }
                    None => "concurrency_error",
                };
                if let Some(id) = id {
                    b["event_id"] = json!(id);
                }
                w.predicted.push((w.replies.len(), outcome));
                b
            }
            // batch append
            30..=39 => {
                let (v, ok) = version(&mut r, versions[a]);
                let retry = r.percent(25) && !batches.is_empty();
                let (events, outcome, fresh): (Vec<Value>, &str, Option<Vec<String>>) = if retry {
                    let (ba, bids) = r.pick(&batches).clone();
                    let outcome = if ba == a { "appended" } else { "error" };
                    let ev = bids
                        .iter()
                        .map(|i| json!({"event_type": "B", "event_id": i}))
                        .collect();
                    (ev, outcome, None)
                } else {
                    let k = 1 + r.below(5) as usize;
                    let with_ids = r.percent(40);
                    let new_ids: Vec<String> = (0..k).map(|_| r.uuid()).collect();
                    let ev = (0..k)
                        .map(|i| {
                            let mut e = json!({"event_type": "B", "event_data": data(&mut r)});
                            if with_ids {
                                e["event_id"] = json!(new_ids[i]);
                            }
                            e
                        })
                        .collect();
                    let outcome = if ok { "appended" } else { "concurrency_error" };
                    (ev, outcome, if with_ids { Some(new_ids) } else { None })
                };
                let n_events = events.len() as u64;
                if !retry && ok {
                    versions[a] += n_events;
                    total += n_events;
                    if let Some(new_ids) = fresh {
                        for i in &new_ids {
                            ids.push((i.clone(), a));
                        }
                        batches.push((a, new_ids));
                    }
                }
                w.predicted.push((w.replies.len(), outcome));
                json!({"type": "append", "msg_id": msg_id, "aggregate_id": agg, "events": events, "version": v})
            }
            40..=44 => {
                let mut b =
                    json!({"type": "create_snapshot", "msg_id": msg_id, "aggregate_id": agg});
                if r.percent(40) {
                    b["state"] = json!({"snap": r.below(100)});
                }
                if r.percent(50) {
                    b["version"] = version(&mut r, versions[a]).0;
                    if b["version"] == "any" {
                        b["version"] = json!(versions[a]);
                    }
                }
                b
            }
            45..=47 => json!({"type": "read_snapshot", "msg_id": msg_id, "aggregate_id": agg}),
            48..=55 => {
                json!({"type": "replay", "msg_id": msg_id, "aggregate_id": agg, "use_snapshot": r.percent(50)})
            }
            56..=60 => {
                let ts = *r.pick(&["1970-01-01T00:00:00Z", "2999-01-01T00:00:00.000000Z"]);
                json!({"type": "get_state", "msg_id": msg_id, "aggregate_id": agg, "timestamp": ts})
            }
            61..=74 => json!({"type": "read_stream", "msg_id": msg_id, "aggregate_id": agg,
                              "from_version": r.below(versions[a] + 2), "max_count": r.below(8)}),
            75..=88 => {
                json!({"type": "read_all", "msg_id": msg_id, "from_sequence": r.below(total + 2),
                              "max_count": r.below(8)})
            }
            89..=91 => {
                // no reply: not JSON / no body / over-long garbage
                let bad = match r.below(3) {
                    0 => "this is not json".to_string(),
                    1 => r#"{"src":"c","dest":"eventstore"}"#.to_string(),
                    _ => format!("[{}", "[".repeat(r.below(300) as usize)),
                };
                w.lines.push(bad);
                continue;
            }
            92..=93 => json!({"type": "bogus", "msg_id": msg_id}),
            94..=95 => {
                json!({"type": "append", "msg_id": msg_id, "aggregate_id": agg, "event_type": "T", "version": -1})
            }
            _ => {
                json!({"type": "read_all", "msg_id": msg_id, "from_sequence": total, "max_count": 3})
            }
        };
        let mut id = Some(msg_id);
        if r.percent(5) {
            body.as_object_mut().unwrap().remove("msg_id");
            id = None;
        }
        w.replies.push(id);
        let src = format!("client-{}", r.below(3));
        let l = line(&src, Some("eventstore"), body);
        w.requests.push(l.clone());
        w.lines.push(l);
    }
    msg_id += 1;
    w.replies.push(Some(msg_id));
    let l = req(json!({"type": "read_all", "msg_id": msg_id, "from_sequence": 1, "max_count": 0}));
    w.requests.push(l.clone());
    w.lines.push(l);
    w.total_events = total;
    w
}

/// Runs the workload with `args` (`"4"`: four workers; more flags may
/// follow, separated by spaces).
fn run_workload(w: &Workload, args: &str) -> Output {
    let mut argv = vec!["--workers"];
    argv.extend(args.split(' '));
    let out = run_bytes(&argv, input(&w.lines).as_bytes());
    assert!(
        out.status.success(),
        "--workers {args}: exit {:?}\nstderr:\n{}",
        out.status,
        out.stderr
    );
    out
}

/// Reply count, in_reply_to order, reply destinations, the predicted
/// outcome of every append and the final head.
fn check_workload(w: &Workload, out: &Output, what: &str) {
    assert_eq!(
        out.lines.len(),
        w.replies.len(),
        "{what}: reply count (one per request that deserves one)"
    );
    for (i, (reply, id)) in out.lines.iter().zip(&w.replies).enumerate() {
        let request: Value = serde_json::from_str(&w.requests[i]).unwrap();
        let got = reply["body"].get("in_reply_to");
        assert_eq!(
            got,
            id.map(|v| json!(v)).as_ref(),
            "{what}: reply {i} out of order\n  request: {request}\n  reply:   {reply}"
        );
        assert_eq!(
            reply["dest"], request["src"],
            "{what}: reply {i} goes to the wrong client"
        );
    }
    for &(i, ty) in &w.predicted {
        let body = &out.lines[i]["body"];
        assert_eq!(
            body["type"], ty,
            "{what}: reply {i} to\n  {}\n  is {body}",
            w.requests[i]
        );
        if ty == "error" {
            assert_eq!(body["code"], 22, "{what}: reply {i} to {}", w.requests[i]);
        }
    }
    let last = &out.lines.last().unwrap()["body"];
    assert_eq!(last["head"], w.total_events, "{what}: final head");
}

#[test]
fn replies_are_the_same_whatever_the_number_of_workers() {
    // `--reply-buffer-bytes 1` writes every reply out as soon as its batch
    // is in turn (the streaming path of a bounded output), 100 most replies
    // only with a batch's turn, the default whole small batches at once.
    for (seed, others) in [
        (0x5EED, &["4", "2", "8", "4 --reply-buffer-bytes 1"][..]),
        (42, &["4", "3 --reply-buffer-bytes 100"][..]),
        (7, &["3", "1 --reply-buffer-bytes 1"][..]),
    ] {
        let w = workload(seed, 3000);
        let one = run_workload(&w, "1");
        check_workload(&w, &one, &format!("seed {seed}, --workers 1"));
        for &workers in others {
            let what = format!("seed {seed}, --workers {workers}");
            let many = run_workload(&w, workers);
            check_workload(&w, &many, &what);
            for (i, (a, b)) in one.lines.iter().zip(&many.lines).enumerate() {
                let (a, b) = (mask(a).to_string(), mask(b).to_string());
                assert!(
                    a == b,
                    "{what}: reply {i} differs from --workers 1\n  request:   {}\n  workers 1: {a}\n  workers {workers}: {b}",
                    w.requests[i]
                );
            }
        }
    }
}

#[test]
fn the_workload_is_not_trivial() {
    // Guards the generator itself: every kind of outcome shows up.
    let w = workload(0x5EED, 3000);
    for ty in ["appended", "concurrency_error", "error"] {
        let n = w.predicted.iter().filter(|(_, t)| *t == ty).count();
        assert!(n > 20, "only {n} predicted {ty}");
    }
    assert!(w.total_events > 500);
    assert!(w.lines.len() > w.replies.len());
}

#[test]
fn a_client_waiting_for_its_reply_gets_it_without_closing_stdin() {
    for workers in ["1", "4"] {
        let mut s = Session::start(&["--workers", workers, "--max-line-bytes", "1000"]);
        assert_matches(
            &s.call(&req(append(1, "a", "T", json!({"k": 1}), json!(0)))),
            &appended(1, 1),
        );
        // lines that get no reply must not hold back the next reply
        s.send("garbage");
        s.send(&"x".repeat(5000));
        s.send("");
        let e = event(1, "a", 1, "T", json!({"k": 1}), None);
        assert_matches(
            &s.call(&req(read_all(2))),
            &json!({"type": "all_read", "in_reply_to": 2, "events": [e], "head": 1}),
        );
        assert_matches(
            &s.call(&req(json!({"type": "bogus", "msg_id": 3}))),
            &error(3, 10, "<string>"),
        );
        assert_matches(
            &s.call(&req(append(4, "a", "T", json!({}), json!(0)))),
            &json!({
            "type": "concurrency_error", "in_reply_to": 4, "error": "Expected version 0, got 1"}),
        );
        let (status, rest, stderr) = s.finish();
        assert!(
            status.success(),
            "--workers {workers}: exit {status:?}\nstderr:\n{stderr}"
        );
        assert!(rest.is_empty(), "unexpected replies: {rest:?}");
    }
}

#[test]
fn pipelined_requests_come_back_in_order() {
    let mut s = Session::start(&["--workers", "4"]);
    let n = 300u64;
    for i in 1..=n {
        let agg = format!("agg-{}", i % 3);
        s.send(&req(append(i, &agg, "T", json!({"i": i}), json!("any"))));
        if i % 50 == 0 {
            s.send("{not json");
        }
    }
    for i in 1..=n {
        assert_matches(&s.recv()["body"], &appended(i, i));
    }
    let (status, rest, _) = s.finish();
    assert!(status.success());
    assert!(rest.is_empty());
}

#[test]
fn small_batches_the_reader_serves_itself_wait_for_the_bursts_before_them() {
    // A burst (one write of many lines: large batches, taken by workers),
    // then single lines right behind it (small batches that the reader may
    // process itself while workers still hold the burst): replies must come
    // back in input order, each append with the next sequence number.
    let mut s = Session::start(&["--workers", "4"]);
    let mut next = 1u64;
    for round in 0..4 {
        let burst: Vec<String> = (0..1500)
            .map(|k| {
                req(append(
                    next + k,
                    "hot",
                    "T",
                    json!({"r": round}),
                    json!("any"),
                ))
            })
            .collect();
        s.send(&burst.join("\n"));
        next += 1500;
        for _ in 0..5 {
            s.send(&req(append(next, "hot", "T", json!({}), json!("any"))));
            next += 1;
        }
    }
    for i in 1..next {
        assert_matches(&s.recv()["body"], &appended(i, i));
    }
    let (status, rest, stderr) = s.finish();
    assert!(status.success(), "exit {status:?}\nstderr:\n{stderr}");
    assert!(rest.is_empty(), "unexpected replies: {rest:?}");
}

#[test]
fn end_of_input_flushes_every_reply() {
    let lines: Vec<String> = (1..=2000)
        .map(|i| req(append(i, "a", "T", json!({}), json!(i - 1))))
        .collect();
    let expected: Vec<Value> = (1..=2000).map(|i| appended(i, i)).collect();
    check_with(&["--workers", "4"], &lines, &expected);
}

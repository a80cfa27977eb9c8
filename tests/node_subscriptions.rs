//! Subscriptions and filtered reads through the binary: every output line
//! (replies and `event` messages, in order) against a trivially correct
//! sequential model, for one worker and for several (with tiny reply
//! buffers, so that every line is written on its own); the subscription
//! limit; hostile filter values, each followed by a check that nothing
//! changed.

mod common;

use common::*;
use serde_json::{Value, json};

/// The sequential model: the log and the live subscriptions.
#[derive(Default)]
struct Model {
    /// (aggregate, type, version) by sequence number - 1.
    log: Vec<(String, String, u64)>,
    /// (id, subscriber, filter, from).
    subs: Vec<(u64, String, Value, u64)>,
    last_sub: u64,
}

fn matches(filter: &Value, aggregate: &str, event_type: &str) -> bool {
    let category_ok = filter["category"].as_str().is_none_or(|c| {
        aggregate == c
            || aggregate
                .strip_prefix(c)
                .is_some_and(|rest| rest.starts_with('-'))
    });
    let aggregate_ok = filter["aggregate_id"]
        .as_str()
        .is_none_or(|a| a == aggregate);
    let types_ok = filter["event_types"]
        .as_array()
        .is_none_or(|ts| ts.iter().any(|t| t == event_type));
    category_ok && aggregate_ok && types_ok
}

impl Model {
    fn event(&self, seq: u64) -> Value {
        let (aggregate, event_type, version) = &self.log[seq as usize - 1];
        json!({"sequence_number": seq, "aggregate_id": aggregate, "version": version,
               "event_type": event_type})
    }

    fn message(&self, id: u64, to: &str, seq: u64) -> Value {
        json!({"dest": to, "body": {"type": "event", "subscription": id, "event": self.event(seq)}})
    }

    fn versions(&self, aggregate: &str) -> u64 {
        self.log.iter().filter(|(a, _, _)| a == aggregate).count() as u64
    }

    /// Applies one request; returns the lines it should produce.
    fn apply(&mut self, src: &str, body: &Value) -> Vec<Value> {
        let id = &body["msg_id"];
        let reply = |b: Value| json!({"dest": src, "body": b});
        match body["type"].as_str().unwrap() {
            "append" => {
                let aggregate = body["aggregate_id"].as_str().unwrap().to_owned();
                let types: Vec<String> = match body["events"].as_array() {
                    Some(events) => events
                        .iter()
                        .map(|e| e["event_type"].as_str().unwrap().to_owned())
                        .collect(),
                    None => vec![body["event_type"].as_str().unwrap().to_owned()],
                };
                let first = self.log.len() as u64 + 1;
                let mut version = self.versions(&aggregate);
                for t in &types {
                    version += 1;
                    self.log.push((aggregate.clone(), t.clone(), version));
                }
                let last = self.log.len() as u64;
                let mut out = vec![if body["events"].is_array() {
                    reply(json!({"type": "appended", "in_reply_to": id,
                        "sequence_numbers": (first..=last).collect::<Vec<_>>(), "version": version}))
                } else {
                    reply(json!({"type": "appended", "in_reply_to": id, "sequence_number": first}))
                }];
                for seq in first..=last {
                    let (a, t, _) = &self.log[seq as usize - 1];
                    for (sub, to, filter, from) in &self.subs {
                        if seq >= *from && matches(filter, a, t) {
                            out.push(self.message(*sub, to, seq));
                        }
                    }
                }
                out
            }
            "subscribe" => {
                let head = self.log.len() as u64;
                let from = body["from_sequence"]
                    .as_u64()
                    .map_or(head + 1, |f| f.max(1));
                self.last_sub += 1;
                let sub = self.last_sub;
                let filter = body.clone();
                let mut out = vec![reply(json!({"type": "subscribed", "in_reply_to": id,
                    "subscription": sub, "head": head}))];
                for seq in from..=head {
                    let (a, t, _) = &self.log[seq as usize - 1];
                    if matches(&filter, a, t) {
                        out.push(self.message(sub, src, seq));
                    }
                }
                self.subs.push((sub, src.to_owned(), filter, from));
                out
            }
            "unsubscribe" => {
                let sub = body["subscription"].as_u64().unwrap();
                match self.subs.iter().position(|s| s.0 == sub) {
                    Some(i) => {
                        self.subs.remove(i);
                        vec![reply(json!({"type": "unsubscribed", "in_reply_to": id,
                            "subscription": sub}))]
                    }
                    None => vec![reply(
                        json!({"type": "error", "in_reply_to": id, "code": 20,
                        "text": format!("subscription {sub} does not exist")}),
                    )],
                }
            }
            "read_all" => {
                let head = self.log.len() as u64;
                let from = body["from_sequence"].as_u64().unwrap_or(1).max(1);
                let max = body["max_count"].as_u64().unwrap_or(1000);
                let last = head.min(from + 100_000 - 1);
                let (mut events, mut next) = (Vec::new(), last.max(from - 1) + 1);
                if max == 0 {
                    next = from;
                }
                for seq in from..=last {
                    if events.len() as u64 == max {
                        break;
                    }
                    let (a, t, _) = &self.log[seq as usize - 1];
                    if matches(body, a, t) {
                        events.push(self.event(seq));
                        if events.len() as u64 == max {
                            next = seq + 1;
                        }
                    }
                }
                vec![reply(
                    json!({"type": "all_read", "in_reply_to": id, "events": events,
                    "next_sequence": next, "head": head}),
                )]
            }
            other => panic!("the workload has no {other}"),
        }
    }
}

/// What the model compares: event messages and replies without ids and
/// times (they are checked elsewhere).
fn shape(line: &Value) -> Value {
    let mut body = line["body"].clone();
    if let Some(o) = body.as_object_mut() {
        o.remove("event_id");
        o.remove("event_ids");
    }
    let strip = |e: &Value| {
        json!({"sequence_number": e["sequence_number"], "aggregate_id": e["aggregate_id"],
               "version": e["version"], "event_type": e["event_type"]})
    };
    if let Some(e) = body.get("event").cloned() {
        body["event"] = strip(&e);
    }
    if let Some(events) = body.get("events").and_then(Value::as_array).cloned() {
        body["events"] = Value::Array(events.iter().map(strip).collect());
    }
    json!({"dest": line["dest"], "body": body})
}

fn random_filter(rng: &mut Rng, body: &mut Value) {
    if rng.percent(40) {
        body["category"] = json!(rng.pick(&["user", "user-eu", "order", "users", "user-", "x"]));
    }
    if rng.percent(20) {
        body["aggregate_id"] = json!(rng.pick(&["user-1", "user-eu-2", "order-3", "users-1"]));
    }
    if rng.percent(30) {
        let n = rng.range(1, 3) as usize;
        let types: Vec<&str> = (0..n).map(|_| *rng.pick(&["A", "B", "C"])).collect();
        body["event_types"] = json!(types);
    }
}

/// A random workload: appends to aggregates of a few categories,
/// subscriptions with random filters and starts, unsubscribes (some of
/// unknown ids), filtered reads.
fn workload(seed: u64, n: usize) -> Vec<(String, Value)> {
    let mut rng = Rng::new(seed);
    let aggregates = [
        "user-1",
        "user-2",
        "user-eu-2",
        "users-1",
        "order-3",
        "user",
        "user-",
        "x",
    ];
    let mut out = Vec::new();
    for msg_id in 1..=n as u64 {
        let src = format!("c{}", rng.below(3));
        let roll = rng.below(100);
        let mut body = if roll < 60 {
            let aggregate = *rng.pick(&aggregates);
            if rng.percent(20) {
                let events: Vec<Value> = (0..rng.range(2, 4))
                    .map(|_| json!({"event_type": rng.pick(&["A", "B", "C"])}))
                    .collect();
                json!({"type": "append", "aggregate_id": aggregate, "version": "any", "events": events})
            } else {
                json!({"type": "append", "aggregate_id": aggregate, "version": "any",
                       "event_type": rng.pick(&["A", "B", "C"])})
            }
        } else if roll < 72 {
            let mut b = json!({"type": "subscribe"});
            if rng.percent(60) {
                b["from_sequence"] = json!(rng.below(msg_id));
            }
            random_filter(&mut rng, &mut b);
            b
        } else if roll < 80 {
            json!({"type": "unsubscribe", "subscription": rng.range(1, 12)})
        } else {
            let mut b = json!({"type": "read_all", "from_sequence": rng.below(msg_id + 2),
                               "max_count": rng.below(6)});
            random_filter(&mut rng, &mut b);
            if b.get("category").is_none()
                && b.get("aggregate_id").is_none()
                && b.get("event_types").is_none()
            {
                b["category"] = json!("user");
            }
            b
        };
        body["msg_id"] = json!(msg_id);
        out.push((src, body));
    }
    out
}

#[test]
fn output_equals_the_sequential_model_for_any_worker_count() {
    for seed in [1, 2, test_seed("subscriptions")] {
        let requests = workload(seed, 600);
        let mut model = Model::default();
        let expected: Vec<Value> = requests
            .iter()
            .flat_map(|(src, body)| model.apply(src, body))
            .collect();
        let lines: Vec<String> = requests
            .iter()
            .map(|(src, body)| line(src, Some("n1"), body.clone()))
            .collect();
        for args in [
            &["--workers", "1"][..],
            &["--workers", "4"][..],
            &["--workers", "3", "--reply-buffer-bytes", "1"][..],
        ] {
            let out = run_bytes(args, input(&lines).as_bytes());
            assert!(out.status.success(), "{args:?}: {}", out.stderr);
            let got: Vec<Value> = out.lines.iter().map(shape).collect();
            let want: Vec<Value> = expected.iter().map(shape).collect();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "seed {seed} {args:?}: line {i}");
            }
            assert_eq!(got.len(), want.len(), "seed {seed} {args:?}: line count");
            for l in &out.lines {
                if l["body"]["type"] == "event" {
                    assert_eq!(
                        l["src"], "n1",
                        "an event message comes from the subscribed reply's src"
                    );
                    assert!(is_timestamp(
                        l["body"]["event"]["recorded_at"].as_str().unwrap()
                    ));
                }
            }
        }
    }
}

#[test]
fn the_workload_is_not_trivial() {
    let requests = workload(1, 600);
    let mut model = Model::default();
    let lines: Vec<Value> = requests
        .iter()
        .flat_map(|(src, body)| model.apply(src, body))
        .collect();
    let count = |ty: &str| lines.iter().filter(|l| l["body"]["type"] == ty).count();
    assert!(count("event") > 200, "{} event messages", count("event"));
    assert!(count("unsubscribed") > 5 && count("error") > 5);
    let filtered_nonempty = lines
        .iter()
        .filter(|l| {
            l["body"]["events"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        })
        .count();
    assert!(filtered_nonempty > 20);
}

#[test]
fn a_node_holds_at_most_1000_subscriptions() {
    let mut lines: Vec<String> = (1..=1001)
        .map(|i| req(json!({"type": "subscribe", "msg_id": i})))
        .collect();
    lines.push(req(
        json!({"type": "unsubscribe", "msg_id": 1002, "subscription": 7}),
    ));
    lines.push(req(json!({"type": "subscribe", "msg_id": 1003})));
    let out = run_bytes(&[], input(&lines).as_bytes());
    let bodies = out.bodies();
    assert_eq!(bodies.len(), 1003);
    assert_eq!(bodies[999]["subscription"], 1000);
    assert_matches(&bodies[1000], &error(1001, 11, "<contains:at most 1000>"));
    assert_eq!(bodies[1001]["type"], "unsubscribed");
    assert_eq!(
        bodies[1002]["subscription"], 1001,
        "a refused subscribe takes no id"
    );
}

#[test]
fn hostile_filters_are_error_12_and_change_nothing() {
    for (field, value, says) in [
        ("category", json!(5), "category: must be a string"),
        (
            "category",
            json!(""),
            "category: must be a non-empty string",
        ),
        (
            "aggregate_id",
            json!(["a"]),
            "aggregate_id: must be a string",
        ),
        (
            "event_types",
            json!([]),
            "event_types: must be a non-empty array",
        ),
        ("event_types", json!("A"), "event_types: must be an array"),
        (
            "event_types",
            json!([1]),
            "event_types: must be an array of strings",
        ),
        ("from_sequence", json!(-1), "from_sequence"),
    ] {
        let mut subscribe = json!({"type": "subscribe", "msg_id": 2});
        subscribe[field] = value.clone();
        let mut read = json!({"type": "read_all", "msg_id": 3});
        read[field] = value;
        let lines = [
            req(append(1, "user-1", "A", json!({}), json!(0))),
            req(subscribe),
            req(read),
            // Nothing changed: the next subscription is number 1, and the
            // log holds the one event.
            req(json!({"type": "subscribe", "msg_id": 4, "from_sequence": 0})),
        ];
        let out = run_bytes(&[], input(&lines).as_bytes());
        let bodies = out.bodies();
        let text = format!("<contains:{says}>");
        assert_matches(&bodies[1], &error(2, 12, &text));
        assert_matches(&bodies[2], &error(3, 12, &text));
        assert_eq!(bodies[3]["subscription"], 1, "{field}");
        assert_eq!(bodies[4]["event"]["sequence_number"], 1);
        assert_eq!(bodies.len(), 5);
    }
}

#[test]
fn a_long_catch_up_streams_out_in_order() {
    // 20,000 events, then a subscription from the start: its catch-up
    // follows the reply, in order, before the reply to the next request.
    let mut lines = Vec::new();
    for b in 0..20 {
        let events: Vec<Value> = (0..1000).map(|_| json!({"event_type": "T"})).collect();
        lines.push(req(
            json!({"type": "append", "msg_id": b, "aggregate_id": format!("user-{b}"),
                              "version": 0, "events": events}),
        ));
    }
    lines.push(req(
        json!({"type": "subscribe", "msg_id": 100, "from_sequence": 1, "category": "user"}),
    ));
    lines.push(req(
        json!({"type": "read_all", "msg_id": 101, "max_count": 0}),
    ));
    for workers in ["1", "4"] {
        let out = run_bytes(
            &["--workers", workers, "--reply-buffer-bytes", "4096"],
            input(&lines).as_bytes(),
        );
        let bodies = out.bodies();
        assert_eq!(bodies.len(), 20 + 1 + 20_000 + 1);
        assert_eq!(bodies[20]["type"], "subscribed");
        for (i, b) in bodies[21..20_021].iter().enumerate() {
            assert_eq!(b["event"]["sequence_number"], i as u64 + 1);
        }
        assert_eq!(bodies[20_021]["in_reply_to"], 101);
    }
}

#[test]
fn a_durable_node_sends_event_messages_for_what_it_recovered() {
    let dir = TempDir::new("subscriptions");
    let first = [req(append(1, "user-1", "A", json!({}), json!(0)))];
    let out = run_bytes(&["--data-dir", dir.arg()], input(&first).as_bytes());
    assert!(out.status.success());
    let second = [
        req(json!({"type": "subscribe", "msg_id": 2, "from_sequence": 0})),
        req(append(3, "user-1", "B", json!({}), json!(1))),
    ];
    let out = run_bytes(&["--data-dir", dir.arg()], input(&second).as_bytes());
    let bodies = out.bodies();
    assert_eq!(bodies[0]["head"], 1);
    assert_eq!(bodies[1]["event"]["event_type"], "A");
    assert_eq!(bodies[2]["type"], "appended");
    assert_eq!(bodies[3]["event"]["event_type"], "B");
}

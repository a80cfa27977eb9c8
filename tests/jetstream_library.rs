//! The library on a real 3-server JetStream cluster: the blocking calls,
//! and many appends in flight from one thread (`JetStream::submit_append`)
//! giving exactly the outcomes of one-at-a-time appends in submission
//! order, checked against a sequential model; a second front end's view
//! then holds the same log.

#![cfg(feature = "jetstream")]

mod common;
mod nats;

use common::{Rng, test_seed};
use eventstore::jetstream::{BackendError, JetStream, JetStreamConfig};
use eventstore::{AppendError, ExpectedVersion, NewEvent, SequenceNumber, Version};
use serde_json::value::RawValue;
use std::collections::HashMap;

fn connect(cluster: &nats::Cluster, stream: &str) -> JetStream {
    let mut config = JetStreamConfig::new(&cluster.urls());
    config.stream = stream.to_owned();
    JetStream::connect(config).expect("connect to the cluster")
}

/// What the model expects of one submitted append.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Stored at these sequence numbers, the aggregate then at `version`.
    Stored(Vec<u64>, u64),
    /// A version mismatch: the aggregate is at this version.
    Mismatch(u64),
}

#[test]
fn appends_in_flight_from_one_thread_equal_one_at_a_time_appends() {
    let _turn = nats::one_cluster_at_a_time();
    let cluster = nats::Cluster::start();
    let js = connect(&cluster, "library");

    // The blocking calls first.
    let data = RawValue::from_string(r#"{"n":0}"#.to_owned()).expect("json");
    let first = js
        .append(
            "user-0",
            ExpectedVersion::Exact(Version(0)),
            &[NewEvent::new("Created", &data)],
        )
        .expect("append");
    assert_eq!(first.positions.first(), SequenceNumber(1));
    assert_eq!(
        js.create_snapshot("user-0", None, None).expect("snapshot"),
        Version(1)
    );
    let stale = js.append(
        "user-0",
        ExpectedVersion::Exact(Version(0)),
        &[NewEvent::new("Again", &data)],
    );
    assert!(
        matches!(
            stale,
            Err(BackendError::Append(AppendError::Concurrency(_)))
        ),
        "{stale:?}"
    );

    // Then many in flight: random aggregates, mostly the right version,
    // some stale, some "any", some batches; the model decides each in turn.
    let mut rng = Rng::new(test_seed("library_pipeline"));
    let mut versions: HashMap<String, u64> = HashMap::from([("user-0".to_owned(), 1)]);
    let mut head = 1u64;
    let mut pending = Vec::new();
    let texts: Vec<Box<RawValue>> = (0..4)
        .map(|i| RawValue::from_string(format!(r#"{{"i":{i}}}"#)).expect("json"))
        .collect();
    for _ in 0..600 {
        let aggregate = format!("user-{}", rng.below(40));
        let current = versions.get(&aggregate).copied().unwrap_or(0);
        let count = if rng.percent(10) { 3 } else { 1 };
        let (expected, matches) = match rng.below(10) {
            0 => (ExpectedVersion::Any, true),
            1 if current > 0 => (ExpectedVersion::Exact(Version(current - 1)), false),
            _ => (ExpectedVersion::Exact(Version(current)), true),
        };
        let events: Vec<NewEvent<'_>> = texts[..count]
            .iter()
            .map(|t| NewEvent::new("Changed", t))
            .collect();
        let outcome = if matches {
            let seqs: Vec<u64> = (head + 1..=head + count as u64).collect();
            head += count as u64;
            let version = current + count as u64;
            versions.insert(aggregate.clone(), version);
            Outcome::Stored(seqs, version)
        } else {
            Outcome::Mismatch(current)
        };
        pending.push((js.submit_append(&aggregate, expected, &events), outcome));
    }
    for (i, (submitted, expected)) in pending.into_iter().enumerate() {
        let got = match submitted.wait() {
            Ok(appended) => Outcome::Stored(
                appended.positions.iter().map(|s| s.0).collect(),
                appended.version.0,
            ),
            Err(BackendError::Append(AppendError::Concurrency(e))) => {
                Outcome::Mismatch(e.current.0)
            }
            Err(e) => panic!("append {i}: {e}"),
        };
        assert_eq!(got, expected, "append {i}");
    }
    assert_eq!(js.view().head(), SequenceNumber(head));

    // A second front end rebuilds the same log from the stream.
    let other = connect(&cluster, "library");
    assert_eq!(other.view().head(), SequenceNumber(head));
    let mine = js.view().read_all(SequenceNumber(1), head as usize);
    let theirs = other.view().read_all(SequenceNumber(1), head as usize);
    assert_eq!(mine.events.len() as u64, head);
    for (a, b) in mine.events.iter().zip(&theirs.events) {
        assert_eq!(
            (a.sequence_number, a.aggregate_id(), a.version(), a.id()),
            (b.sequence_number, b.aggregate_id(), b.version(), b.id())
        );
    }
}

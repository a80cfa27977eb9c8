//! End-to-end node benchmark: the `eventstore` binary over stdin/stdout on
//! the `seed` workload (97% appends at the right version over 10,000
//! aggregates with a ~57-byte `event_data`, 3% `create_snapshot`; the same
//! mix as `examples/workload.rs --kind seed`), at `--workers 1` and at the
//! default worker count, in memory and durable.
//!
//! `cargo bench --bench node` (`-- --test` runs each case once). Throughput
//! is requests/s through the whole process: start, parse, apply, encode,
//! write, exit. Every sample checks that each request got its reply and that
//! no append was rejected, so a node that drops or fails work cannot look
//! fast. The full 1M-request run with peak RSS and ping-pong latency is
//! `scripts/bench_node.sh`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REQUESTS: u64 = 200_000;
const AGGREGATES: usize = 10_000;

/// The seed mix, deterministic (splitmix64).
fn seed_workload() -> Vec<u8> {
    let mut state = 1u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut versions = vec![0u64; AGGREGATES];
    let mut out = Vec::with_capacity(REQUESTS as usize * 210);
    for msg_id in 1..=REQUESTS {
        let a = (next() % AGGREGATES as u64) as usize;
        let line = if next() % 100 < 3 {
            format!(
                r#"{{"src":"client","dest":"eventstore","body":{{"type":"create_snapshot","msg_id":{msg_id},"aggregate_id":"agg-{a}"}}}}"#
            )
        } else {
            let r = next();
            let line = format!(
                r#"{{"src":"client","dest":"eventstore","body":{{"type":"append","msg_id":{msg_id},"aggregate_id":"agg-{a}","event_type":"ItemAdded","event_data":{{"sku":"SKU-{:06}","qty":{},"price":{}.99}},"version":{}}}}}"#,
                r % 1_000_000,
                r % 9 + 1,
                r % 100,
                versions[a]
            );
            versions[a] += 1;
            line
        };
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Runs the node once on `input`; returns the wall time.
fn run_node(args: &[&str], input: &[u8]) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventstore"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the node");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut replies = Vec::new();
        stdout.read_to_end(&mut replies).expect("read replies");
        replies
    });
    stdin.write_all(input).expect("write requests");
    drop(stdin);
    let replies = reader.join().expect("reader thread");
    let status = child.wait().expect("node exit");
    let elapsed = start.elapsed();
    assert!(status.success(), "node failed: {status}");
    let lines = replies.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(lines, REQUESTS, "every request gets one reply");
    let text = String::from_utf8_lossy(&replies);
    assert!(
        !text.contains("\"error\"") && !text.contains("concurrency_error"),
        "the seed workload has no failing request"
    );
    elapsed
}

fn node(c: &mut Criterion) {
    let input = seed_workload();
    let data = std::env::temp_dir().join(format!("eventstore-bench-node-{}", std::process::id()));
    let data_arg = data.to_string_lossy().into_owned();
    let mut group = c.benchmark_group("node_seed");
    group.throughput(Throughput::Elements(REQUESTS));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.warm_up_time(Duration::from_secs(1));
    let cases: [(&str, Vec<&str>); 3] = [
        ("workers1", vec!["--workers", "1"]),
        ("default_workers", vec![]),
        ("durable", vec!["--data-dir", &data_arg]),
    ];
    for (name, args) in cases {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        // A fresh directory per run: the workload starts
                        // from an empty store.
                        let _ = std::fs::remove_dir_all(&data);
                        run_node(&args, &input)
                    })
                    .sum()
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&data);
}

criterion_group!(benches, node);
criterion_main!(benches);

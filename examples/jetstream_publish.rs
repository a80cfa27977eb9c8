//! The floors for a replicated append: bare JetStream publishes to a fresh
//! stream with the given replicas.
//!
//! ```text
//! cargo run --release --example jetstream_publish -- URLS [--requests N] [--replicas R] [--in-flight W]
//! ```
//!
//! - `--in-flight 1` (the default): one at a time, each waiting for its
//!   acknowledgement; prints `requests=N p50_us=.. p90_us=.. p99_us=..`.
//! - `--in-flight W`: up to `W` publishes awaiting their acknowledgement,
//!   from one task, each carrying the headers a front end sends (`Nats-Msg-Id`,
//!   `Nats-Expected-Last-Subject-Sequence` on 10,000 subjects, event id,
//!   type and version) and a 57-byte payload; prints
//!   `requests=N msgs_per_s=..`: what the cluster takes from a client that
//!   costs next to nothing.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(urls) = args.next() else {
        eprintln!("usage: jetstream_publish URLS [--requests N] [--replicas R]");
        return ExitCode::from(2);
    };
    let (mut requests, mut replicas, mut in_flight) = (2000usize, 3usize, 1usize);
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|v| v.parse::<usize>().ok());
        match (flag.as_str(), value) {
            ("--requests", Some(v)) => requests = v,
            ("--replicas", Some(v)) => replicas = v,
            ("--in-flight", Some(v)) if v >= 1 => in_flight = v,
            _ => {
                eprintln!("jetstream_publish: bad argument {flag}");
                return ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("jetstream_publish: {e}");
            return ExitCode::FAILURE;
        }
    };
    if in_flight > 1 {
        return match runtime.block_on(pipelined(&urls, requests, replicas, in_flight)) {
            Ok(rate) => {
                println!("requests={requests} msgs_per_s={rate:.0}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("jetstream_publish: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run(&urls, requests, replicas)) {
        Ok(mut times) => {
            times.sort();
            let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)].as_micros();
            println!(
                "requests={} p50_us={} p90_us={} p99_us={}",
                times.len(),
                pct(50),
                pct(90),
                pct(99)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jetstream_publish: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    urls: &str,
    requests: usize,
    replicas: usize,
) -> Result<Vec<Duration>, async_nats::Error> {
    let urls: Vec<String> = urls.split(',').map(str::to_owned).collect();
    let client = async_nats::connect(urls).await?;
    let js = jetstream::new(client);
    let name = "bench_floor";
    let _ = js.delete_stream(name).await;
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        num_replicas: replicas,
        ..Default::default()
    })
    .await?;
    let mut times = Vec::with_capacity(requests);
    for i in 0..requests + 200 {
        let start = Instant::now();
        js.publish(format!("{name}.a.{}", i % 100), "{\"n\":1}".into())
            .await?
            .await?;
        if i >= 200 {
            times.push(start.elapsed());
        }
    }
    js.delete_stream(name).await?;
    Ok(times)
}

/// Publishes `requests` events with up to `in_flight` awaiting their
/// acknowledgement; returns the rate.
async fn pipelined(
    urls: &str,
    requests: usize,
    replicas: usize,
    in_flight: usize,
) -> Result<f64, async_nats::Error> {
    const SUBJECTS: usize = 10_000;
    let urls: Vec<String> = urls.split(',').map(str::to_owned).collect();
    let client = async_nats::connect(urls).await?;
    let js = jetstream::new(client);
    let name = "bench_floor_pipelined";
    let _ = js.delete_stream(name).await;
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        num_replicas: replicas,
        allow_atomic_publish: true,
        allow_direct: true,
        ..Default::default()
    })
    .await?;
    let payload =
        bytes::Bytes::from_static(br#"{"name":"user-5665","age":48,"plan":"basic","score":51826}"#);
    // The last sequence of each subject, from the acknowledgements: a
    // subject's previous publish was acknowledged long before (10,000
    // subjects, round robin, fewer in flight).
    let mut last = vec![0u64; SUBJECTS];
    let mut waiting = VecDeque::with_capacity(in_flight);
    let start = Instant::now();
    for i in 0..requests {
        if waiting.len() == in_flight
            && let Some((subject, ack)) = waiting.pop_front()
        {
            let ack: jetstream::context::PublishAckFuture = ack;
            last[subject] = ack.await?.sequence;
        }
        let subject = i % SUBJECTS;
        let id = format!("00000000-0000-4000-8000-{i:012}");
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            last[subject].to_string(),
        );
        headers.insert("Es-Id", id.as_str());
        headers.insert("Es-Type", "UserCreated");
        headers.insert("Es-Version", (i / SUBJECTS + 1).to_string());
        let ack = js
            .publish_with_headers(format!("{name}.user.{subject}"), headers, payload.clone())
            .await?;
        waiting.push_back((subject, ack));
    }
    for (_, ack) in waiting {
        ack.await?;
    }
    let rate = requests as f64 / start.elapsed().as_secs_f64();
    js.delete_stream(name).await?;
    Ok(rate)
}

//! The floor for a replicated append: bare JetStream publishes, one at a
//! time (each waits for its acknowledgement), to a fresh stream with the
//! given replicas. Prints the round-trip percentiles.
//!
//! ```text
//! cargo run --release --example jetstream_publish -- URLS [--requests N] [--replicas R]
//! ```
//!
//! Prints one line: `requests=N p50_us=.. p90_us=.. p99_us=..`.

use async_nats::jetstream::{self, stream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(urls) = args.next() else {
        eprintln!("usage: jetstream_publish URLS [--requests N] [--replicas R]");
        return ExitCode::from(2);
    };
    let (mut requests, mut replicas) = (2000usize, 3usize);
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|v| v.parse::<usize>().ok());
        match (flag.as_str(), value) {
            ("--requests", Some(v)) => requests = v,
            ("--replicas", Some(v)) => replicas = v,
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

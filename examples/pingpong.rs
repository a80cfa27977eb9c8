//! Ping-pong latency client: spawns a line-oriented process (the node, or
//! `cat` as the echo baseline), sends request lines one at a time, each only
//! after the reply to the previous one has arrived, and reports the
//! round-trip percentiles.
//!
//! ```text
//! cargo run --release --example pingpong -- --input requests.jsonl [--requests 20000] [--warmup 1000] -- CMD [ARGS...]
//! ```
//!
//! Requests are the first `warmup + requests` lines of `--input` (e.g. made by
//! the `workload` example); the first `warmup` are sent but not measured.
//! Prints one line: `requests=N p50_us=.. p90_us=.. p99_us=.. max_us=.. mean_us=..`.
//! Exits non-zero if the process closes its output early or exits with failure.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

struct Args {
    input: String,
    requests: usize,
    warmup: usize,
    command: Vec<String>,
}

const USAGE: &str = "usage: pingpong --input FILE [--requests N] [--warmup W] -- CMD [ARGS...]";

fn parse_args() -> Result<Args, String> {
    let mut input = None;
    let mut requests = 20_000usize;
    let mut warmup = 1_000usize;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--" {
            break;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--input" => input = Some(value.clone()),
            "--requests" => requests = number()?,
            "--warmup" => warmup = number()?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let command: Vec<String> = it.collect();
    if command.is_empty() {
        return Err("no command given after --".into());
    }
    Ok(Args {
        input: input.ok_or("--input is required")?,
        requests,
        warmup,
        command,
    })
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1] as f64 / 1000.0
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pingpong: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let wanted = args.warmup + args.requests;
    let file = match std::fs::File::open(&args.input) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("pingpong: {}: {e}", args.input);
            return ExitCode::from(2);
        }
    };
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .take(wanted)
        .collect();
    if lines.len() < wanted {
        eprintln!(
            "pingpong: {} has {} lines, need {wanted}",
            args.input,
            lines.len()
        );
        return ExitCode::from(2);
    }

    let mut child = match Command::new(&args.command[0])
        .args(&args.command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pingpong: cannot start {:?}: {e}", args.command);
            return ExitCode::from(2);
        }
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));

    let mut rtts_ns = Vec::with_capacity(args.requests);
    let mut reply = String::new();
    let mut request = Vec::with_capacity(512);
    for (i, line) in lines.iter().enumerate() {
        request.clear();
        request.extend_from_slice(line.as_bytes());
        request.push(b'\n');
        let start = Instant::now();
        if let Err(e) = stdin.write_all(&request).and_then(|()| stdin.flush()) {
            eprintln!(
                "pingpong: write to the process failed at request {}: {e}",
                i + 1
            );
            let _ = child.kill();
            return ExitCode::FAILURE;
        }
        reply.clear();
        match stdout.read_line(&mut reply) {
            Ok(n) if n > 0 && reply.ends_with('\n') => {}
            Ok(_) => {
                eprintln!("pingpong: the process closed its output after {i} replies");
                let _ = child.kill();
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("pingpong: read failed at request {}: {e}", i + 1);
                let _ = child.kill();
                return ExitCode::FAILURE;
            }
        }
        let rtt = start.elapsed();
        if i >= args.warmup {
            rtts_ns.push(rtt.as_nanos() as u64);
        }
    }
    drop(stdin); // end of input: the process should exit
    let mut rest = String::new();
    let mut extra = 0usize;
    while stdout.read_line(&mut rest).map(|n| n > 0).unwrap_or(false) {
        extra += 1;
        rest.clear();
    }
    let status = child.wait();

    rtts_ns.sort_unstable();
    let mean = rtts_ns.iter().sum::<u64>() as f64 / rtts_ns.len().max(1) as f64 / 1000.0;
    println!(
        "requests={} p50_us={:.1} p90_us={:.1} p99_us={:.1} max_us={:.1} mean_us={:.1}",
        rtts_ns.len(),
        percentile(&rtts_ns, 50.0),
        percentile(&rtts_ns, 90.0),
        percentile(&rtts_ns, 99.0),
        percentile(&rtts_ns, 100.0),
        mean
    );
    if extra > 0 {
        eprintln!("pingpong: {extra} more reply lines than requests");
        return ExitCode::FAILURE;
    }
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("pingpong: the process exited with {s}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("pingpong: wait failed: {e}");
            ExitCode::FAILURE
        }
    }
}

//! Phase driver: starts one line-oriented process (the node) and sends it
//! request files one phase after another, each phase only once every reply
//! of the previous one arrived, timing each phase on its own and checking
//! every reply.
//!
//! ```text
//! cargo run --release --example drive -- [--untimed FILE] [--timed NAME=FILE]... \
//!     [--pingpong NAME=FILE:WARMUP:N]... -- CMD [ARGS...]
//! ```
//!
//! Phases run in the order given:
//!
//! - `--untimed FILE`: the whole file is written (by a writer thread) while
//!   its replies are read; not timed. Use it to bring the process to a
//!   state first: seed an embedded node, or let a JetStream front end
//!   connect and catch up (its first reply comes after the catch-up).
//! - `--timed NAME=FILE`: the same, timed from the first byte written to
//!   the last reply read. Prints
//!   `phase=NAME requests=N seconds=S per_s=R cpu_s=C events=E digest=D`,
//!   `cpu_s` the CPU time the process used in the phase (all its threads,
//!   from /proc; less sensitive than wall time to other load on the
//!   machine).
//! - `--pingpong NAME=FILE:WARMUP:N`: the first WARMUP + N lines of FILE,
//!   one at a time (each sent when the previous reply arrived); the last N
//!   are measured. Prints `phase=NAME requests=N p50_us=.. p90_us=..
//!   p99_us=.. mean_us=.. events=E digest=D`.
//!
//! Also printed: `phase=ready seconds=S`, from spawning the process to the
//! last reply of the first phase (for a front end with a one-line first
//! phase: its connect and catch-up).
//!
//! Checks, each failing the run (exit 1): every request gets exactly one
//! reply, in order (`in_reply_to` = the request's `msg_id`), none is an
//! `error` or `concurrency_error`, no reply is left over at the end, and
//! the process exits successfully. `events` counts the events the replies
//! carry (`sequence_number`s, plus `events_replayed`); `digest` is a hash
//! of the replies with the values of `event_id` and `recorded_at` blanked
//! (the two fields that differ between two stores holding the same events
//! appended separately), so two processes answering the same phase from the
//! same events print the same digest.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::Instant;

enum Phase {
    Untimed(String),
    Timed(String, String),
    PingPong {
        name: String,
        file: String,
        warmup: usize,
        requests: usize,
    },
}

const USAGE: &str = "usage: drive [--untimed FILE] [--timed NAME=FILE]... [--pingpong NAME=FILE:WARMUP:N]... -- CMD [ARGS...]";

fn parse_args() -> Result<(Vec<Phase>, Vec<String>), String> {
    let mut phases = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--" {
            break;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let named = || {
            value
                .split_once('=')
                .map(|(n, f)| (n.to_owned(), f.to_owned()))
                .ok_or_else(|| format!("{flag} {value}: want NAME=..."))
        };
        match flag.as_str() {
            "--untimed" => phases.push(Phase::Untimed(value.clone())),
            "--timed" => {
                let (name, file) = named()?;
                phases.push(Phase::Timed(name, file));
            }
            "--pingpong" => {
                let (name, spec) = named()?;
                let mut parts = spec.rsplitn(3, ':');
                let (Some(n), Some(w), Some(file)) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(format!("{flag} {value}: want NAME=FILE:WARMUP:N"));
                };
                let number = |s: &str| {
                    s.parse::<usize>()
                        .map_err(|e| format!("{flag} {value}: {s}: {e}"))
                };
                phases.push(Phase::PingPong {
                    name,
                    file: file.to_owned(),
                    warmup: number(w)?,
                    requests: number(n)?,
                });
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let command: Vec<String> = it.collect();
    if command.is_empty() {
        return Err("no command given after --".into());
    }
    if phases.is_empty() {
        return Err("no phase given".into());
    }
    Ok((phases, command))
}

/// The number after `"key":` in `line` (no space after the colon, as the
/// node writes it and the workload generator too).
fn number_after(line: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(line, key)? + key.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while let Some(at) = hay[from..].iter().position(|&b| b == first) {
        let at = from + at;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn count(hay: &[u8], needle: &[u8]) -> u64 {
    let mut n = 0;
    let mut rest = hay;
    while let Some(at) = find(rest, needle) {
        n += 1;
        rest = &rest[at + needle.len()..];
    }
    n
}

/// What the replies of one phase held.
#[derive(Default)]
struct Tally {
    replies: usize,
    events: u64,
    digest: u64,
}

impl Tally {
    /// Checks one reply against its request's `msg_id`, and folds it in.
    fn reply(&mut self, reply: &[u8], msg_id: Option<u64>) -> Result<(), String> {
        let shown = || String::from_utf8_lossy(&reply[..reply.len().min(300)]).into_owned();
        if find(reply, br#""type":"error""#).is_some()
            || find(reply, br#""type":"concurrency_error""#).is_some()
        {
            return Err(format!("error reply: {}", shown()));
        }
        let in_reply_to = number_after(reply, br#""in_reply_to":"#);
        if msg_id.is_some() && in_reply_to != msg_id {
            return Err(format!(
                "reply {} answers {in_reply_to:?}, expected msg_id {msg_id:?}: {}",
                self.replies + 1,
                shown()
            ));
        }
        self.replies += 1;
        self.events += count(reply, br#""sequence_number":"#);
        self.events += number_after(reply, br#""events_replayed":"#).unwrap_or(0);
        // FNV-1a over the reply with event ids and timestamps blanked.
        let mut h = self.digest ^ 0xcbf2_9ce4_8422_2325;
        let mut rest = reply;
        loop {
            let next = [&br#""event_id":""#[..], &br#""recorded_at":""#[..]]
                .iter()
                .filter_map(|k| find(rest, k).map(|at| at + k.len()))
                .min();
            let (keep, skip_to) = match next {
                Some(at) => {
                    let end = rest[at..]
                        .iter()
                        .position(|&b| b == b'"')
                        .map_or(rest.len(), |e| at + e);
                    (&rest[..at], end)
                }
                None => (rest, rest.len()),
            };
            for &b in keep {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            if skip_to >= rest.len() {
                break;
            }
            rest = &rest[skip_to..];
        }
        self.digest = h;
        Ok(())
    }
}

fn read_lines(file: &str, limit: usize) -> Result<Vec<Vec<u8>>, String> {
    let f = std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?;
    let lines: Vec<Vec<u8>> = BufReader::new(f)
        .split(b'\n')
        .map_while(Result::ok)
        .filter(|l| !l.trim_ascii().is_empty())
        .take(limit)
        .collect();
    Ok(lines)
}

/// Reads one reply line; `Err` at end of output.
fn next_reply(stdout: &mut BufReader<ChildStdout>, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    match stdout.read_until(b'\n', buf) {
        Ok(n) if n > 0 && buf.ends_with(b"\n") => Ok(()),
        Ok(_) => Err("the process closed its output".into()),
        Err(e) => Err(format!("read failed: {e}")),
    }
}

/// Sends `lines` all at once (from a writer thread) while reading their
/// replies into one buffer; returns the seconds from the first byte
/// written to the last reply read, and the checked replies. The checks run
/// after the clock stops, so the reader keeps up with any node.
fn pipelined(
    stdin: &mut ChildStdin,
    stdout: &mut BufReader<ChildStdout>,
    lines: &[Vec<u8>],
) -> Result<(f64, Tally), String> {
    let mut bytes = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        bytes.extend_from_slice(l);
        bytes.push(b'\n');
    }
    let mut replies = Vec::with_capacity(1 << 20);
    let (seconds, read) = std::thread::scope(|s| {
        let start = Instant::now();
        let writer = s.spawn(move || stdin.write_all(&bytes).and_then(|()| stdin.flush()));
        let mut read = Ok(());
        for _ in lines {
            match stdout.read_until(b'\n', &mut replies) {
                Ok(n) if n > 0 && replies.ends_with(b"\n") => {}
                Ok(_) => {
                    read = Err("the process closed its output".to_owned());
                    break;
                }
                Err(e) => {
                    read = Err(format!("read failed: {e}"));
                    break;
                }
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        match writer.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => read = read.and(Err(format!("write failed: {e}"))),
            Err(_) => read = read.and(Err("the writer panicked".into())),
        }
        (seconds, read)
    });
    read?;
    let mut tally = Tally::default();
    for (l, reply) in lines.iter().zip(replies.split_inclusive(|&b| b == b'\n')) {
        tally.reply(reply, number_after(l, br#""msg_id":"#))?;
    }
    Ok((seconds, tally))
}

/// CPU time the process `pid` used so far, in seconds: the sum of its
/// threads' run time (`/proc/PID/task/*/schedstat`, nanoseconds; threads
/// that already exited are not counted, the node's live for its whole run).
/// 0 where /proc is missing.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut ns = 0u64;
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ns as f64 / 1e9
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1] as f64 / 1000.0
}

fn run(phases: &[Phase], command: &[String]) -> Result<(), String> {
    let spawned = Instant::now();
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::with_capacity(1 << 16, child.stdout.take().expect("piped stdout"));
    let mut outcome = Ok(());
    for (i, phase) in phases.iter().enumerate() {
        let step = match phase {
            Phase::Untimed(file) => read_lines(file, usize::MAX)
                .and_then(|lines| pipelined(&mut stdin, &mut stdout, &lines))
                .map(|_| ()),
            Phase::Timed(name, file) => read_lines(file, usize::MAX).and_then(|lines| {
                let cpu_before = cpu_seconds(pid);
                let (seconds, tally) = pipelined(&mut stdin, &mut stdout, &lines)?;
                let cpu = cpu_seconds(pid) - cpu_before;
                println!(
                    "phase={name} requests={} seconds={seconds:.4} per_s={:.0} cpu_s={cpu:.4} events={} digest={:016x}",
                    tally.replies,
                    tally.replies as f64 / seconds,
                    tally.events,
                    tally.digest
                );
                Ok(())
            }),
            Phase::PingPong {
                name,
                file,
                warmup,
                requests,
            } => read_lines(file, warmup + requests).and_then(|lines| {
                if lines.len() < warmup + requests {
                    return Err(format!("{file} has {} lines, need {}", lines.len(), warmup + requests));
                }
                let mut tally = Tally::default();
                let mut rtts = Vec::with_capacity(*requests);
                let mut buf = Vec::with_capacity(1 << 16);
                let mut request = Vec::with_capacity(512);
                for (k, l) in lines.iter().enumerate() {
                    request.clear();
                    request.extend_from_slice(l);
                    request.push(b'\n');
                    let start = Instant::now();
                    stdin
                        .write_all(&request)
                        .and_then(|()| stdin.flush())
                        .map_err(|e| format!("write failed: {e}"))?;
                    next_reply(&mut stdout, &mut buf)?;
                    let rtt = start.elapsed();
                    tally.reply(&buf, number_after(l, br#""msg_id":"#))?;
                    if k >= *warmup {
                        rtts.push(rtt.as_nanos() as u64);
                    }
                }
                rtts.sort_unstable();
                let mean = rtts.iter().sum::<u64>() as f64 / rtts.len().max(1) as f64 / 1000.0;
                println!(
                    "phase={name} requests={} p50_us={:.1} p90_us={:.1} p99_us={:.1} mean_us={mean:.1} events={} digest={:016x}",
                    rtts.len(),
                    percentile(&rtts, 50.0),
                    percentile(&rtts, 90.0),
                    percentile(&rtts, 99.0),
                    tally.events,
                    tally.digest
                );
                Ok(())
            }),
        };
        if let Err(e) = step {
            outcome = Err(format!("phase {}: {e}", i + 1));
            break;
        }
        if i == 0 {
            println!("phase=ready seconds={:.4}", spawned.elapsed().as_secs_f64());
        }
    }
    drop(stdin); // end of input: the process should exit
    if outcome.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        return outcome;
    }
    let mut rest = Vec::new();
    let mut extra = 0usize;
    while next_reply(&mut stdout, &mut rest).is_ok() {
        extra += 1;
    }
    if extra > 0 {
        return Err(format!("{extra} more reply lines than requests"));
    }
    match child.wait() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("the process exited with {s}")),
        Err(e) => Err(format!("wait failed: {e}")),
    }
}

fn main() -> ExitCode {
    let (phases, command) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("drive: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&phases, &command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drive: {e}");
            ExitCode::FAILURE
        }
    }
}

//! Workload generator for the node: writes request lines in the node's
//! envelope format (`{"src":"client","dest":"eventstore","body":{...}}`, see
//! docs/protocol.md) to stdout, one per line, `msg_id` 1..=N.
//!
//! ```text
//! cargo run --release --example workload -- --kind seed|mixed --requests N [--seed S] [--aggregates 10000]
//! cargo run --release --example workload -- --kind read_stream|replay|read_all --after-seed S --requests N [--seed S] [--aggregates 10000]
//! ```
//!
//! - `seed`: 97% `append` at the right expected version (a uniformly chosen
//!   aggregate, ~60-byte `event_data` object), 3% `create_snapshot`. Every
//!   request succeeds, so the replies are `appended` / `snapshot_created`.
//! - `mixed`: 70% right-version appends, 8% stale appends (a version the
//!   aggregate is not at: `concurrency_error`), 3% `create_snapshot`, 7%
//!   `replay` (half with `use_snapshot`), 7% `read_stream`, 5% `read_all`.
//! - `read_stream`, `replay`, `read_all`: only that read, for a store that
//!   holds the `seed` workload of `--after-seed` requests (same `--seed` and
//!   `--aggregates`; the generator replays it silently to know every
//!   aggregate's version and the head). `read_stream`: a uniformly chosen
//!   aggregate from a random version (1..=version+1) with `max_count`
//!   1..=100; `replay`: half with `use_snapshot`; `read_all`: a page of
//!   1..=100 events from a random sequence number (1..=head+1). `msg_id`s
//!   go on from `--after-seed` + 1, so the seed and one or more read files
//!   can be sent to one node with distinct ids. Every read succeeds.
//!
//! The generator tracks each aggregate's version, assuming the requests are
//! applied in order (which the node guarantees). Deterministic for a given
//! `--seed` (splitmix64, no dependencies). Fast: ~1M lines in well under a
//! second in release.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), Lemire's multiply-shift.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    fn percent(&mut self) -> u64 {
        self.below(100)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Seed,
    Mixed,
    ReadStream,
    Replay,
    ReadAll,
}

struct Args {
    kind: Kind,
    requests: u64,
    seed: u64,
    aggregates: u64,
    after_seed: u64,
}

const USAGE: &str = "usage: workload --kind seed|mixed|read_stream|replay|read_all --requests N [--seed S] [--aggregates 10000] [--after-seed S]";

fn parse_args() -> Result<Args, String> {
    let mut kind = None;
    let mut requests = None;
    let mut seed = 1u64;
    let mut aggregates = 10_000u64;
    let mut after_seed = 0u64;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--kind" => {
                kind = Some(match value.as_str() {
                    "seed" => Kind::Seed,
                    "mixed" => Kind::Mixed,
                    "read_stream" => Kind::ReadStream,
                    "replay" => Kind::Replay,
                    "read_all" => Kind::ReadAll,
                    other => return Err(format!("unknown --kind {other}")),
                })
            }
            "--requests" => requests = Some(number()?),
            "--seed" => seed = number()?,
            "--aggregates" => aggregates = number()?,
            "--after-seed" => after_seed = number()?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if aggregates == 0 {
        return Err("--aggregates must be at least 1".into());
    }
    let kind = kind.ok_or("--kind is required")?;
    if after_seed > 0 && matches!(kind, Kind::Seed | Kind::Mixed) {
        return Err("--after-seed is for the read kinds".into());
    }
    Ok(Args {
        kind,
        requests: requests.ok_or("--requests is required")?,
        seed,
        aggregates,
        after_seed,
    })
}

const PLANS: [&str; 4] = ["free", "basic", "pro", "team"];
const EVENT_TYPES: [&str; 4] = [
    "ProfileUpdated",
    "PlanChanged",
    "EmailChanged",
    "ScoreRecorded",
];

struct Gen {
    rng: SplitMix64,
    versions: Vec<u32>,
    /// Events appended so far (the node's head after the requests so far).
    head: u64,
    line: Vec<u8>,
}

impl Gen {
    fn start(&mut self, msg_id: u64, kind: &str) {
        self.line.clear();
        self.line
            .extend_from_slice(br#"{"src":"client","dest":"eventstore","body":{"type":""#);
        self.line.extend_from_slice(kind.as_bytes());
        self.line.extend_from_slice(br#"","msg_id":"#);
        push_u64(&mut self.line, msg_id);
    }

    fn aggregate_field(&mut self, aggregate: u64) {
        self.line.extend_from_slice(br#","aggregate_id":"user-"#);
        push_u64(&mut self.line, aggregate);
        self.line.push(b'"');
    }

    fn finish(&mut self) {
        self.line.extend_from_slice(b"}}\n");
    }

    /// An append of one event to `aggregate` at expected `version`.
    fn append(&mut self, msg_id: u64, aggregate: u64, version: u64) {
        self.start(msg_id, "append");
        self.aggregate_field(aggregate);
        let event_type = if version == 0 {
            "UserCreated"
        } else {
            EVENT_TYPES[self.rng.below(4) as usize]
        };
        self.line.extend_from_slice(br#","event_type":""#);
        self.line.extend_from_slice(event_type.as_bytes());
        // ~60 bytes: {"name":"user-4821","age":37,"plan":"basic","score":81235}
        let r = self.rng.next();
        self.line
            .extend_from_slice(br#"","event_data":{"name":"user-"#);
        push_u64(&mut self.line, aggregate);
        self.line.extend_from_slice(br#"","age":"#);
        push_u64(&mut self.line, 18 + (r & 63));
        self.line.extend_from_slice(br#","plan":""#);
        self.line
            .extend_from_slice(PLANS[(r >> 8) as usize & 3].as_bytes());
        self.line.extend_from_slice(br#"","score":"#);
        push_u64(&mut self.line, (r >> 16) % 100_000);
        self.line.push(b'}');
        self.line.extend_from_slice(br#","version":"#);
        push_u64(&mut self.line, version);
        self.finish();
    }

    fn good_append(&mut self, msg_id: u64, aggregate: u64) {
        let v = &mut self.versions[aggregate as usize];
        let version = u64::from(*v);
        *v += 1;
        self.head += 1;
        self.append(msg_id, aggregate, version);
    }

    fn stale_append(&mut self, msg_id: u64, aggregate: u64) {
        let current = u64::from(self.versions[aggregate as usize]);
        let version = if current > 0 && self.rng.below(2) == 0 {
            self.rng.below(current) // behind
        } else {
            current + 1 + self.rng.below(3) // ahead
        };
        self.append(msg_id, aggregate, version);
    }

    fn snapshot(&mut self, msg_id: u64, aggregate: u64) {
        self.start(msg_id, "create_snapshot");
        self.aggregate_field(aggregate);
        self.finish();
    }

    fn replay(&mut self, msg_id: u64, aggregate: u64) {
        self.start(msg_id, "replay");
        self.aggregate_field(aggregate);
        if self.rng.below(2) == 0 {
            self.line.extend_from_slice(br#","use_snapshot":true"#);
        }
        self.finish();
    }

    fn read_stream(&mut self, msg_id: u64, aggregate: u64) {
        let current = u64::from(self.versions[aggregate as usize]);
        self.start(msg_id, "read_stream");
        self.aggregate_field(aggregate);
        self.line.extend_from_slice(br#","from_version":"#);
        push_u64(&mut self.line, 1 + self.rng.below(current + 1));
        self.line.extend_from_slice(br#","max_count":"#);
        push_u64(&mut self.line, 1 + self.rng.below(100));
        self.finish();
    }

    fn read_all(&mut self, msg_id: u64) {
        self.start(msg_id, "read_all");
        self.line.extend_from_slice(br#","from_sequence":"#);
        push_u64(&mut self.line, 1 + self.rng.below(self.head + 1));
        self.line.extend_from_slice(br#","max_count":"#);
        push_u64(&mut self.line, 1 + self.rng.below(100));
        self.finish();
    }
}

fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("workload: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let mut g = Gen {
        rng: SplitMix64(args.seed),
        versions: vec![0; args.aggregates as usize],
        head: 0,
        line: Vec::with_capacity(256),
    };
    // The seed the read kinds assume, generated exactly as `--kind seed`
    // does, but not written.
    for msg_id in 1..=args.after_seed {
        let aggregate = g.rng.below(args.aggregates);
        match g.rng.percent() {
            0..97 => g.good_append(msg_id, aggregate),
            _ => g.snapshot(msg_id, aggregate),
        }
    }
    let stdout = io::stdout().lock();
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    for msg_id in args.after_seed + 1..=args.after_seed + args.requests {
        let aggregate = g.rng.below(args.aggregates);
        let p = g.rng.percent();
        match args.kind {
            Kind::Seed => match p {
                0..97 => g.good_append(msg_id, aggregate),
                _ => g.snapshot(msg_id, aggregate),
            },
            Kind::ReadStream => g.read_stream(msg_id, aggregate),
            Kind::Replay => g.replay(msg_id, aggregate),
            Kind::ReadAll => g.read_all(msg_id),
            Kind::Mixed => match p {
                0..70 => g.good_append(msg_id, aggregate),
                70..78 => g.stale_append(msg_id, aggregate),
                78..81 => g.snapshot(msg_id, aggregate),
                81..88 => g.replay(msg_id, aggregate),
                88..95 => g.read_stream(msg_id, aggregate),
                _ => g.read_all(msg_id),
            },
        }
        if out.write_all(&g.line).is_err() {
            return ExitCode::SUCCESS; // reader went away (e.g. `| head`)
        }
    }
    if out.flush().is_err() {
        return ExitCode::SUCCESS;
    }
    ExitCode::SUCCESS
}

//! The "no store at all" baseline of issue #3: read the input, parse each
//! line with serde_json into a borrowed typed struct and write a reply of
//! about the size the node writes, on N threads (default 2), in input order.
//! What any JSON-lines service pays before it does anything; the node is
//! measured against it by `scripts/bench_node.sh`.
//!
//! `cargo run --release --example serde_baseline -- [THREADS] < requests.jsonl > replies`

use serde::Deserialize;
use serde_json::value::RawValue;
use std::io::{Read, Write};

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    src: &'a str,
    #[serde(borrow)]
    dest: &'a str,
    #[serde(borrow)]
    body: Body<'a>,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    msg_id: u64,
    #[serde(borrow)]
    aggregate_id: Option<&'a str>,
    #[serde(borrow)]
    event_type: Option<&'a str>,
    #[serde(borrow)]
    event_data: Option<&'a RawValue>,
    #[serde(borrow)]
    version: Option<&'a RawValue>,
}

/// Parses `lines` and writes one reply per line: the same envelope fields,
/// the request's numbers echoed, and a 36-byte id, as an `appended` reply.
fn serve(lines: &[&[u8]], out: &mut Vec<u8>) -> usize {
    let mut bad = 0;
    for line in lines {
        let Ok(r) = serde_json::from_slice::<Request<'_>>(line) else {
            bad += 1;
            continue;
        };
        let b = &r.body;
        let sequence = b.msg_id;
        let _ = (
            b.kind,
            b.aggregate_id,
            b.event_type,
            b.event_data,
            b.version,
        );
        let _ = writeln!(
            out,
            r#"{{"src":"{}","dest":"{}","body":{{"type":"appended","in_reply_to":{},"event_id":"00000000-0000-4000-8000-{:012x}","sequence_number":{}}}}}"#,
            r.dest, r.src, b.msg_id, sequence, sequence
        );
    }
    bad
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .map_or(2, |t| t.parse().expect("THREADS must be a number"));
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut input)
        .expect("read stdin");
    let lines: Vec<&[u8]> = input
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let per = lines.len().div_ceil(threads.max(1)).max(1);
    let outputs: Vec<(Vec<u8>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = lines
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    let mut out = Vec::with_capacity(part.len() * 160);
                    let bad = serve(part, &mut out);
                    (out, bad)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect()
    });
    let mut stdout = std::io::stdout().lock();
    let mut bad = 0;
    for (out, b) in &outputs {
        stdout.write_all(out).expect("write stdout");
        bad += b;
    }
    if bad > 0 {
        eprintln!("serde_baseline: {bad} lines did not parse as the typed struct");
    }
}

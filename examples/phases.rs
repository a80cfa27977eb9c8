//! Times the node's three steps separately over an input file, on one
//! thread: `cargo run --release --example phases -- FILE`. A profiling aid
//! for the pipeline (see README "Benchmarks").

use eventstore::EventStore;
use eventstore::testing::Lines;
use eventstore::testing::{Core, decode, encode};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: phases FILE");
    let data = std::fs::read(&path).expect("read input");
    let lines: Vec<&[u8]> = Lines::new(&data).collect();
    let n = lines.len() as f64;

    let t = Instant::now();
    let mut messages: Vec<_> = lines.iter().map(|l| decode(l)).collect();
    let decode_s = t.elapsed().as_secs_f64();

    let store = Arc::new(EventStore::new());
    let mut core = Core::new(Arc::clone(&store));
    let t = Instant::now();
    let outcomes: Vec<_> = messages.iter_mut().map(|m| core.apply(m)).collect();
    let apply_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut out = Vec::with_capacity(data.len());
    for (m, (s, o)) in messages.iter().zip(outcomes) {
        encode(&store, m, s, o, &mut out);
    }
    let encode_s = t.elapsed().as_secs_f64();

    for (name, s) in [
        ("decode", decode_s),
        ("apply", apply_s),
        ("encode", encode_s),
    ] {
        println!("{name:>7}: {:7.1} ms  {:6.0} ns/msg", s * 1e3, s * 1e9 / n);
    }
    println!("  lines: {}  reply bytes: {}", lines.len(), out.len());
}

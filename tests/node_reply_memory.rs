//! Reply memory stays bounded whatever the requests (docs/protocol.md, "Bad
//! input"): replies are written as they are made, never gathered per input
//! read, so a burst of reads that each return 10,000 large events needs
//! about as much memory as one of them, and their replies come out whole
//! and in order. (The time to the first reply is measured by
//! `scripts/bench_burst.sh`, not here: tests do not time.)

mod common;

use common::*;
use serde_json::json;

/// Events in the store, and per read.
const EVENTS: u64 = 10_000;
/// Bytes of padding per event: replies of ~10 MB each.
const PAD_BYTES: usize = 1_000;
/// Reads sent at once: ~300 MB of replies in all.
const READS: u64 = 30;
/// The bound checked: well below the replies of one input read gathered
/// (~300 MB, which is what the node did before), well above the store
/// (~12 MB) plus one worker's buffers per worker.
const PEAK_RSS_LIMIT_BYTES: u64 = 150 * 1024 * 1024;

fn fill(node: &mut Session) {
    let pad = "x".repeat(PAD_BYTES);
    for batch in 0..EVENTS / 1_000 {
        let events: Vec<_> = (0..1_000)
            .map(|i| json!({"event_type": "Padded", "event_data": {"i": i, "pad": pad}}))
            .collect();
        let body = node.call(&req(json!({"type": "append", "msg_id": batch,
            "aggregate_id": format!("big-{batch}"), "version": 0, "events": events})));
        assert_eq!(body["type"], "appended", "{body}");
    }
}

fn burst(args: &[&str]) {
    let mut node = Session::start(args);
    fill(&mut node);
    // The first half of the reads in one write, so that the node reads
    // them as one batch; the rest one line per write, so that they spread
    // over batches and workers. An append between every two reads, so
    // each read's head differs.
    let mut input = String::new();
    for r in 0..READS {
        let read = req(json!({"type": "read_all", "msg_id": 1_000 + r, "max_count": EVENTS}));
        let append = req(append(2_000 + r, "small", "T", json!({}), json!(r)));
        if r < READS / 2 {
            input.push_str(&format!("{read}\n{append}\n"));
        } else {
            if r == READS / 2 {
                node.send(input.trim_end());
            }
            node.send(&read);
            node.send(&append);
        }
    }
    for r in 0..READS {
        let reply = node.recv_raw();
        let head = format!(
            "{{\"src\":\"eventstore\",\"dest\":\"client\",\"body\":{{\"type\":\"all_read\",\"in_reply_to\":{},\"events\":[",
            1_000 + r
        );
        assert!(
            reply.starts_with(&head),
            "read {r}: {}",
            &reply[..200.min(reply.len())]
        );
        assert!(
            reply.ends_with(&format!("],\"head\":{}}}}}", EVENTS + r)),
            "read {r} sees the appends before it, and only those: {}",
            &reply[reply.len().saturating_sub(100)..]
        );
        assert_eq!(reply.matches("\"sequence_number\":").count() as u64, EVENTS);
        let appended = node.recv_raw();
        assert!(
            appended.contains(&format!("\"in_reply_to\":{},\"event_id\"", 2_000 + r)),
            "{appended}"
        );
    }
    let peak = node.peak_rss_bytes();
    eprintln!("{args:?}: peak RSS {} MiB", peak >> 20);
    assert!(
        peak < PEAK_RSS_LIMIT_BYTES,
        "peak RSS {} MiB for {READS} reads of ~10 MB",
        peak >> 20
    );
    let (status, rest, stderr) = node.finish();
    assert!(status.success() && rest.is_empty(), "{stderr}");
}

#[test]
fn a_burst_of_large_reads_streams_out_in_order_under_a_memory_bound() {
    burst(&["--workers", "4"]);
}

#[test]
fn a_burst_of_large_reads_on_one_worker_too() {
    burst(&["--workers", "1"]);
}

/// Durable: each streamed piece waits for the sync of the appends before
/// it (the reads interleave with appends, so most batches wait).
#[test]
fn a_burst_of_large_reads_on_a_durable_node_too() {
    let dir = TempDir::new("reply-memory");
    burst(&["--workers", "4", "--data-dir", dir.arg()]);
}

//! Fuzzes the durable log's frame decoder and recovery with arbitrary file
//! bytes.
//!
//! 1. The frame walk over the raw bytes: never panics, every frame it calls
//!    good really has a matching CRC-32C, offsets only move forward, and
//!    parsing a good payload never panics.
//! 2. Recovery: the bytes are appended after a valid segment header as the
//!    newest segment of a data directory, and `EventStore::open` runs on it.
//!    It must not panic; it either refuses (an error naming the damage) or
//!    opens a store whose global log is dense and whose aggregates have
//!    versions 1..n with rising sequence numbers. Appending after a
//!    successful open must work and continue the numbering.
#![no_main]

use eventstore::testing::crc32c;
use eventstore::testing::record::{self, FRAME_HEADER_BYTES, Frame};
use eventstore::{EventStore, ExpectedVersion, FsyncPolicy, NewEvent, SequenceNumber};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

fn walk_frames(data: &[u8]) {
    let mut at = 0;
    loop {
        match record::read_frame(data, at) {
            Frame::Good { payload, next } => {
                let stored =
                    u32::from_le_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
                assert_eq!(
                    crc32c(payload),
                    stored,
                    "good frame at {at} with a bad checksum"
                );
                assert_eq!(next, at + FRAME_HEADER_BYTES + payload.len());
                let _ = record::parse(payload);
                at = next;
            }
            Frame::BadChecksum { next } => {
                assert!(next > at);
                at = next;
            }
            Frame::End | Frame::Truncated => return,
        }
    }
}

static RUN: AtomicU64 = AtomicU64::new(0);

fn recover(data: &[u8]) {
    let dir = std::env::temp_dir().join(format!(
        "eventstore-fuzz-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut file = Vec::new();
    record::write_header(&mut file, 7, [1, 2, 3, 4]);
    file.extend_from_slice(data);
    std::fs::write(dir.join("segment-00000001.log"), &file).expect("write segment");
    if let Ok(store) = EventStore::open(&dir, FsyncPolicy::Never) {
        let head = store.head().0;
        let all = store.read_all(SequenceNumber(1), usize::MAX);
        assert_eq!(all.events.len() as u64, head, "global log not dense");
        let mut versions: HashMap<String, u64> = HashMap::new();
        for (i, e) in all.events.iter().enumerate() {
            assert_eq!(e.sequence_number.0, i as u64 + 1);
            let v = versions.entry(e.aggregate_id().to_owned()).or_default();
            *v += 1;
            assert_eq!(
                e.version().0,
                *v,
                "versions not dense along {}",
                e.aggregate_id()
            );
        }
        let data = RawValue::from_string("{}".into()).expect("json");
        let done = store
            .append(
                "fuzz-after",
                ExpectedVersion::Any,
                &[NewEvent::new("T", &data)],
            )
            .expect("append after recovery");
        assert_eq!(done.positions.first().0, head + 1);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fuzz_target!(|data: &[u8]| {
    walk_frames(data);
    recover(data);
});

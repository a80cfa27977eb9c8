//! Damaged data directories: a torn or garbage tail is cut and the log goes
//! on; damage anywhere else stops the start with a message naming the file
//! and offset, changing nothing; one node per directory (the lock).
//!
//! Segment format (src/storage/record.rs): frames `len u32 | crc32c u32 |
//! payload`, payload kind byte 0 header, 1 append, 2 snapshot.

mod common;
use common::*;
use eventstore::{
    EventStore, ExpectedVersion, FsyncPolicy, NewEvent, OpenError, SequenceNumber, Version,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::fs;
use std::path::Path;

const SEGMENT: &str = "segment-00000001.log";

/// Runs a node on `dir` with `bodies` as requests; asserts it exits 0 and
/// returns the reply bodies.
fn node(dir: &TempDir, bodies: &[Value]) -> Vec<Value> {
    let lines: Vec<String> = bodies.iter().cloned().map(req).collect();
    let (replies, stderr, status) = run(&["--data-dir", dir.arg()], &input(&lines));
    assert!(
        status.success(),
        "node on {} failed: {status:?}\n{stderr}",
        dir.arg()
    );
    replies.into_iter().map(|r| r["body"].clone()).collect()
}

/// The node's whole log and the snapshot of `agg`, read by a fresh node.
fn contents(dir: &TempDir, agg: &str) -> (Vec<Value>, u64, Option<(u64, Value)>) {
    let mut s = Session::start_serving(&["--data-dir", dir.arg()]);
    let (log, head) = read_whole_log(&mut s);
    let snapshot = read_snapshot_of(&mut s, agg);
    let (status, _, stderr) = s.finish();
    assert!(status.success(), "{stderr}");
    (log, head, snapshot)
}

/// Some history: singles, a batch with client ids, metadata, snapshots.
fn history(dir: &TempDir) {
    let mut bodies = vec![];
    for i in 0..6u64 {
        bodies.push(append(
            i,
            if i % 2 == 0 { "a" } else { "b" },
            "T",
            json!({"i": i, "s": "é✓"}),
            json!(i / 2),
        ));
    }
    bodies.push(json!({"type": "create_snapshot", "msg_id": 10, "aggregate_id": "a", "state": {"given": 1}}));
    bodies.push(json!({"type": "append", "msg_id": 11, "aggregate_id": "a", "version": 3, "events": [
        {"event_type": "B", "event_id": "6f1c1d5e-0a9b-4c3d-8e7f-0123456789ab", "metadata": {"m": 1}},
        {"event_type": "B", "event_data": [1, 2]}]}));
    bodies.push(json!({"type": "create_snapshot", "msg_id": 12, "aggregate_id": "a"}));
    for body in node(dir, &bodies) {
        assert!(
            body["type"] == "appended" || body["type"] == "snapshot_created",
            "{body}"
        );
    }
}

/// `(offset, length, kind)` of every frame of a segment (which must be whole).
fn frames(data: &[u8]) -> Vec<(usize, usize, u8)> {
    let mut at = 0;
    let mut out = vec![];
    while at < data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        out.push((at, 8 + len, data[at + 8]));
        at += 8 + len;
    }
    assert_eq!(at, data.len(), "segment does not end on a frame boundary");
    out
}

/// Starting a node and appending to `agg` continues at the right numbers;
/// a further restart serves the old events plus the new one.
fn appending_continues(dir: &TempDir, agg: &str, log: &[Value]) {
    let version = log.iter().filter(|e| e["aggregate_id"] == agg).count();
    let replies = node(
        dir,
        &[append(
            1,
            agg,
            "After",
            json!({"after": true}),
            json!(version),
        )],
    );
    assert_matches(&replies[0], &appended(1, log.len() as u64 + 1));
    let (after, head, _) = contents(dir, agg);
    assert_eq!(head, log.len() as u64 + 1);
    assert_eq!(&after[..log.len()], log, "old events changed");
    assert_eq!(
        (
            &after[log.len()]["aggregate_id"],
            &after[log.len()]["version"]
        ),
        (&json!(agg), &json!(version + 1))
    );
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut data = fs::read(path).unwrap();
    data.extend_from_slice(bytes);
    fs::write(path, data).unwrap();
}

#[test]
fn random_garbage_after_the_last_record_is_cut_and_appending_continues() {
    let seed = test_seed("garbage");
    let mut rng = Rng::new(seed);
    for len in [1, 7, 8, 9, 100, 5000] {
        let dir = TempDir::new("garbage");
        history(&dir);
        let before = contents(&dir, "a");
        append_bytes(&dir.join(SEGMENT), &rng.bytes(len));
        assert_eq!(
            contents(&dir, "a"),
            before,
            "seed {seed}, {len} bytes of garbage"
        );
        appending_continues(&dir, "a", &before.0);
    }
}

#[test]
fn a_final_write_cut_in_half_is_dropped_and_its_numbers_reused() {
    let dir = TempDir::new("torn");
    history(&dir);
    let before = contents(&dir, "a");
    let path = dir.join(SEGMENT);
    let whole = fs::read(&path).unwrap();
    let replies = node(
        &dir,
        &[
            json!({"type": "append", "msg_id": 1, "aggregate_id": "b", "version": 3,
        "events": [{"event_type": "Lost"}, {"event_type": "Lost", "event_data": {"x": 1}}]}),
        ],
    );
    assert_eq!(replies[0]["sequence_numbers"], json!([9, 10]));
    let grown = fs::read(&path).unwrap();
    fs::write(
        &path,
        &grown[..whole.len() + (grown.len() - whole.len()) / 2],
    )
    .unwrap();
    assert_eq!(
        contents(&dir, "a"),
        before,
        "the half batch must vanish whole"
    );
    appending_continues(&dir, "b", &before.0);
}

/// Every cut point of a final append and of a final snapshot, through the
/// library: the prefix before it comes back, and the log goes on.
#[test]
fn every_cut_point_of_the_last_record_recovers_the_prefix() {
    let dir = TempDir::new("cuts");
    let data = RawValue::from_string(r#"{"k":"v"}"#.into()).unwrap();
    let given = RawValue::from_string(r#"{"snap":2}"#.into()).unwrap();
    let path = dir.join(SEGMENT);
    let mut sizes = vec![];
    {
        let store = open_store(dir.path(), FsyncPolicy::Always).unwrap();
        store
            .append("a", ExpectedVersion::Any, &[NewEvent::new("T", &data)])
            .unwrap();
        store.create_snapshot("a", None, None).unwrap();
        sizes.push(fs::metadata(&path).unwrap().len() as usize);
        store
            .append(
                "a",
                ExpectedVersion::Any,
                &[NewEvent::new("T", &data), NewEvent::new("U", &data)],
            )
            .unwrap();
        sizes.push(fs::metadata(&path).unwrap().len() as usize);
        store.create_snapshot("a", None, Some(&given)).unwrap();
        sizes.push(fs::metadata(&path).unwrap().len() as usize);
    }
    let full = fs::read(&path).unwrap();
    assert_eq!(full.len(), sizes[2]);
    // (cut range, head and snapshot version that must survive)
    for (range, head, snap) in [(sizes[0]..sizes[1], 1, 1), (sizes[1]..sizes[2], 3, 1)] {
        for cut in range {
            fs::write(&path, &full[..cut]).unwrap();
            let ctx = format!("cut at byte {cut} of {}", full.len());
            let store =
                open_store(dir.path(), FsyncPolicy::Never).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(store.head(), SequenceNumber(head), "{ctx}");
            assert_eq!(
                store.snapshot("a").map(|s| s.version),
                Some(Version(snap)),
                "{ctx}"
            );
            let next = store
                .append(
                    "a",
                    ExpectedVersion::Exact(Version(head)),
                    &[NewEvent::new("N", &data)],
                )
                .unwrap();
            assert_eq!(next.positions.first(), SequenceNumber(head + 1), "{ctx}");
            drop(store);
            let store = open_store(dir.path(), FsyncPolicy::Never)
                .unwrap_or_else(|e| panic!("{ctx}, reopen: {e}"));
            assert_eq!(store.head(), SequenceNumber(head + 1), "{ctx}, reopen");
            assert_eq!(
                store.read_all(SequenceNumber(head + 1), 1).events[0].event_type(),
                "N",
                "{ctx}"
            );
        }
    }
}

/// Starts a node on a damaged dir: it must fail, reply nothing, name the
/// file and the offset of the bad frame on stderr, and change no byte.
fn start_refused(dir: &TempDir, file: &str, offset: usize, ctx: &str) {
    let segments = |d: &TempDir| {
        let mut v: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v.into_iter()
            .map(|p| (p.clone(), fs::read(p).unwrap()))
            .collect::<Vec<_>>()
    };
    let before = segments(dir);
    let (stdout, stderr, status) = run_text(
        &["--data-dir", dir.arg()],
        format!("{}\n", req(read_all(1))).as_bytes(),
    );
    assert!(
        !status.success(),
        "{ctx}: the node started on damaged data\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.is_empty(), "{ctx}: the node replied: {stdout}");
    assert!(
        stderr.contains(file),
        "{ctx}: stderr does not name {file}:\n{stderr}"
    );
    let numbers: Vec<&str> = stderr.split(|c: char| !c.is_ascii_digit()).collect();
    assert!(
        numbers.contains(&offset.to_string().as_str()),
        "{ctx}: stderr does not give offset {offset}:\n{stderr}"
    );
    assert!(
        segments(dir) == before,
        "{ctx}: a failed start changed the data dir"
    );
}

#[test]
fn a_flipped_byte_before_intact_records_stops_the_start_naming_file_and_offset() {
    let dir = TempDir::new("flip");
    history(&dir);
    let path = dir.join(SEGMENT);
    let clean = fs::read(&path).unwrap();
    let frames = frames(&clean);
    let appends: Vec<_> = frames.iter().filter(|f| f.2 == 1).collect();
    let (at, len, _) = *appends[appends.len() / 2];
    // In the length, the checksum, the kind byte, mid-payload, last byte.
    for pos in [at, at + 3, at + 5, at + 8, at + len / 2, at + len - 1] {
        for mask in [0x01, 0x80] {
            let mut bad = clean.clone();
            bad[pos] ^= mask;
            fs::write(&path, &bad).unwrap();
            start_refused(
                &dir,
                SEGMENT,
                at,
                &format!("byte {pos} ^ {mask:#x} in the frame at {at}"),
            );
        }
    }
    fs::write(&path, &clean).unwrap();
    assert_eq!(
        contents(&dir, "a").1,
        8,
        "the undamaged copy must still open"
    );
}

/// The same when the only intact records after the damage are snapshots
/// (acknowledged snapshots must not be cut off as if torn).
#[test]
fn a_flipped_byte_before_intact_snapshot_records_stops_the_start() {
    let dir = TempDir::new("flip-snap");
    let replies = node(
        &dir,
        &[
            append(1, "a", "T", json!({"x": 1}), json!(0)),
            json!({"type": "create_snapshot", "msg_id": 2, "aggregate_id": "a", "state": {"first": true}}),
            json!({"type": "create_snapshot", "msg_id": 3, "aggregate_id": "a", "state": {"second": true}}),
        ],
    );
    assert_eq!(replies[2]["type"], "snapshot_created");
    let path = dir.join(SEGMENT);
    let clean = fs::read(&path).unwrap();
    let frames = frames(&clean);
    // Damage the append (followed by two snapshots), then the first snapshot.
    for (at, len, kind) in frames[1..3].iter().copied() {
        let mut bad = clean.clone();
        bad[at + len / 2] ^= 0x10;
        fs::write(&path, &bad).unwrap();
        start_refused(
            &dir,
            SEGMENT,
            at,
            &format!("frame of kind {kind} at {at}, followed by intact snapshots"),
        );
    }
}

/// Two segments: segment 1 holds the first records, segment 2 (a header
/// then the rest) what a rotation would have put there. Damage in the
/// older segment is never a torn write, even in its last frame.
#[test]
fn damage_in_an_older_segment_stops_the_start_even_in_its_last_frame() {
    let dir = TempDir::new("two-segments");
    history(&dir);
    let path = dir.join(SEGMENT);
    let first = fs::read(&path).unwrap();
    node(
        &dir,
        &[
            append(1, "c", "Later", json!({}), json!(0)),
            append(2, "c", "Later", json!({}), json!(1)),
        ],
    );
    let all = fs::read(&path).unwrap();
    let header_len = frames(&first)[0].1;
    let mut second = all[..header_len].to_vec();
    second.extend_from_slice(&all[first.len()..]);
    fs::write(&path, &first).unwrap();
    fs::write(dir.join("segment-00000002.log"), &second).unwrap();
    let (log, head, _) = contents(&dir, "c");
    assert_eq!(
        (head, &log[9]["aggregate_id"]),
        (10, &json!("c")),
        "the split store must open whole"
    );

    let (at, len, _) = *frames(&first).last().unwrap();
    for (name, cut) in [("flipped byte", None), ("cut short", Some(first.len() - 1))] {
        let mut bad = first.clone();
        match cut {
            None => bad[at + len / 2] ^= 0x04,
            Some(n) => bad.truncate(n),
        }
        fs::write(&path, &bad).unwrap();
        start_refused(
            &dir,
            SEGMENT,
            at,
            &format!("{name} in the last frame of the older segment"),
        );
    }
}

/// A crash between creating a segment file and writing its header leaves
/// an empty (or partly written) newest segment: nothing in it was ever
/// acknowledged, so the node must start and keep everything acknowledged
/// before, and what it acknowledges next must survive the next restart.
#[test]
fn a_crash_while_starting_a_new_segment_is_recovered() {
    for torn in [0, 20] {
        let dir = TempDir::new("rotation-crash");
        history(&dir);
        let segment = fs::read(dir.join(SEGMENT)).unwrap();
        let before = contents(&dir, "a").0;
        // Segment 2 holds the first `torn` bytes of its header frame.
        fs::write(dir.join("segment-00000002.log"), &segment[..torn]).unwrap();
        let log = contents(&dir, "a").0;
        assert_eq!(
            log, before,
            "segment 2 with {torn} header bytes: events changed"
        );
        appending_continues(&dir, "a", &log);
    }
}

/// The very first start killed before the first header was written.
#[test]
fn a_crash_while_creating_the_first_segment_is_recovered() {
    let dir = TempDir::new("first-segment-crash");
    fs::write(dir.join(SEGMENT), b"").unwrap();
    let replies = node(&dir, &[append(1, "a", "T", json!({}), json!(0))]);
    assert_matches(&replies[0], &appended(1, 1));
    assert_eq!(contents(&dir, "a").1, 1);
}

#[test]
fn a_second_node_on_the_same_directory_is_refused_until_the_first_exits() {
    let dir = TempDir::new("lock");
    let mut first = Session::start_serving(&["--data-dir", dir.arg()]);
    assert_matches(
        &first.call(&req(append(1, "a", "T", json!({}), json!(0)))),
        &appended(1, 1),
    );

    let (stdout, stderr, status) = run_text(
        &["--data-dir", dir.arg()],
        format!("{}\n", req(append(1, "a", "T", json!({}), json!(1)))).as_bytes(),
    );
    assert!(!status.success(), "a second node started: {stdout}");
    assert!(stdout.is_empty(), "the second node replied: {stdout}");
    let text = stderr.to_lowercase();
    assert!(
        text.contains("lock") && text.contains("another eventstore"),
        "unclear error:\n{stderr}"
    );
    // In process too: the library refuses a second open.
    match EventStore::open(dir.path(), FsyncPolicy::Always) {
        Err(OpenError::Io(e)) => assert!(e.to_string().contains("another eventstore"), "{e}"),
        other => panic!("second open: {other:?}"),
    }

    // Removing every file but the segments (a `LOCK` file, say) changes
    // nothing: the lock is on the directory itself.
    for entry in fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".log") {
            fs::remove_file(&path).unwrap();
        }
    }
    let (stdout, _, status) = run_text(
        &["--data-dir", dir.arg()],
        format!("{}\n", req(append(1, "a", "T", json!({}), json!(1)))).as_bytes(),
    );
    assert!(!status.success(), "a second node started: {stdout}");

    // The first goes on untouched, then exits; after that a new one starts.
    assert_matches(
        &first.call(&req(append(2, "a", "T", json!({}), json!(1)))),
        &appended(2, 2),
    );
    let (status, _, stderr) = first.finish();
    assert!(status.success(), "{stderr}");
    let (log, head, _) = contents(&dir, "a");
    assert_eq!((head, log.len()), (2, 2));
    let store = open_store(dir.path(), FsyncPolicy::Always).unwrap();
    assert_eq!(store.head(), SequenceNumber(2));
}

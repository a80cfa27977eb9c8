//! A disk that fills up under a durable node or store (docs/protocol.md, "Storage
//! failure"): every request from the failure on gets error 13 naming the
//! cause, nothing applied but not durable is acknowledged, the node answers
//! to the end of its input and exits 1, the library refuses every later
//! write with `AppendError::Storage`, and a restart finds every
//! acknowledged event.
//!
//! The small disk is a 1 MiB tmpfs when this process may mount one (root,
//! as in CI); otherwise the node runs under a 1 MiB file-size limit
//! (`RLIMIT_FSIZE` via `prlimit`, with `SIGXFSZ` ignored so that the write
//! fails with `EFBIG` instead of killing the process);
//! `EVENTSTORE_SMALL_DISK=limit` forces that fallback.

mod common;

use common::*;
use eventstore::{AppendError, EventStore, ExpectedVersion, FsyncPolicy, NewEvent, Version};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::io::ErrorKind;
use std::process::Command;

const SMALL_DISK_BYTES: u64 = 1024 * 1024;

/// A data directory on which writes fail after about 1 MiB.
struct SmallDisk {
    dir: TempDir,
    /// A tmpfs is mounted on `dir` (else: file-size limit).
    tmpfs: bool,
}

impl SmallDisk {
    fn new(label: &str) -> SmallDisk {
        let dir = TempDir::new(label);
        let size = format!("size={SMALL_DISK_BYTES}");
        // EVENTSTORE_SMALL_DISK=limit tries the fallback even as root.
        let forced = std::env::var("EVENTSTORE_SMALL_DISK").is_ok_and(|v| v == "limit");
        let mounted = !forced
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &size, "tmpfs", dir.arg()])
                .output()
                .is_ok_and(|o| o.status.success());
        if !mounted {
            eprintln!("cannot mount a tmpfs here: using a file-size limit instead");
        }
        SmallDisk {
            dir,
            tmpfs: mounted,
        }
    }

    /// A command running `program args` with writes limited (the tmpfs
    /// limits by itself).
    fn limited(&self, program: &str, args: &[&str]) -> Command {
        if self.tmpfs {
            let mut c = Command::new(program);
            c.args(args);
            return c;
        }
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "trap '' XFSZ; exec prlimit --fsize={SMALL_DISK_BYTES} -- \"$@\""
            ))
            .arg("sh")
            .arg(program)
            .args(args);
        c
    }

    /// Makes room, so that a restarted node can recover and go on.
    fn grow(&self) {
        if self.tmpfs {
            let status = Command::new("mount")
                .args(["-o", "remount,size=64m", self.dir.arg()])
                .status()
                .expect("remount");
            assert!(status.success(), "remount of the tmpfs failed");
        }
    }

    /// The error kinds a full disk gives.
    fn is_full(kind: ErrorKind) -> bool {
        matches!(kind, ErrorKind::StorageFull | ErrorKind::FileTooLarge)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.tmpfs {
            let _ = Command::new("umount").arg(self.dir.arg()).status();
        }
    }
}

/// An event body of about 8 KiB.
fn big_data(i: usize) -> Value {
    json!({"i": i, "pad": "x".repeat(8000)})
}

/// Runs a durable node (with `flags`) on a small disk with enough appends
/// to fill it, reads in between, and checks every reply and what a restart
/// finds.
fn fill_the_disk(flags: &[&str]) {
    let disk = SmallDisk::new("full-disk");
    let mut lines = Vec::new();
    for i in 0..300usize {
        let id = (2 * i + 1) as u64;
        let aggregate = format!("acct-{}", i % 3);
        lines.push(req(
            json!({"type": "append", "msg_id": id, "aggregate_id": aggregate,
            "event_type": "Padded", "event_data": big_data(i), "version": "any"}),
        ));
        lines.push(req(
            json!({"type": "read_all", "msg_id": id + 1, "max_count": 1}),
        ));
    }
    let mut args = vec!["--data-dir", disk.dir.arg()];
    args.extend(flags);
    // The first requests one at a time (each is synced alone, and fits),
    // then the rest at once (synced in groups, until the disk is full).
    let mut node = Session::spawn(disk.limited(BIN, &args));
    let mut replies: Vec<Value> = lines[..20].iter().map(|l| node.call(l)).collect();
    for l in &lines[20..] {
        node.send(l);
    }
    let (status, rest, stderr) = node.finish();
    replies.extend(rest.into_iter().map(|r| r["body"].clone()));
    assert_eq!(
        replies.len(),
        lines.len(),
        "every request gets a reply\nstderr:\n{stderr}"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "exit status after a storage failure"
    );
    assert!(stderr.contains("storage failed"), "stderr: {stderr}");

    let mut acknowledged = Vec::new();
    let mut failed_at = None;
    for (i, body) in replies.iter().enumerate() {
        assert_eq!(body["in_reply_to"], json!(i + 1), "replies in input order");
        if body["type"] == "error" {
            assert_eq!(body["code"], 13, "{body}");
            let text = body["text"].as_str().unwrap();
            assert!(
                text.contains("storage failed")
                    && (text.contains("No space left") || text.contains("too large")),
                "error 13 must name the cause: {text}"
            );
            failed_at.get_or_insert(i);
        } else {
            assert!(
                failed_at.is_none(),
                "reply {i} after the failure is not error 13: {body}"
            );
            if body["type"] == "appended" {
                acknowledged.push((i / 2, body["sequence_number"].as_u64().unwrap()));
            } else {
                assert_eq!(body["type"], "all_read", "{body}");
            }
        }
    }
    let failed_at = failed_at.expect("1 MiB cannot hold 300 events of 8 KiB");
    assert!(failed_at >= 20, "the first appends fit");

    // After a restart with room again, every acknowledged event is there,
    // at its sequence number, and the store takes new appends.
    disk.grow();
    let mut node = Session::start_serving(&["--data-dir", disk.dir.arg()]);
    let (events, head) = read_whole_log(&mut node);
    assert!(head >= acknowledged.len() as u64);
    for (i, seq) in &acknowledged {
        let e = &events[(*seq - 1) as usize];
        assert_eq!(e["event_data"]["i"], json!(i), "event {seq}");
    }
    let body = node.call(&req(append(9, "after", "T", json!({}), json!(0))));
    assert_matches(&body, &appended(9, head + 1));
    let (status, _, stderr) = node.finish();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_full_disk_gets_error_13_to_the_end_of_input_and_loses_no_acknowledged_event() {
    fill_the_disk(&["--workers", "4"]);
}

#[test]
fn a_full_disk_on_one_worker_behaves_the_same() {
    fill_the_disk(&["--workers", "1"]);
}

/// Every reply written as soon as its batch is in turn and durable: the
/// failure reaches threads waiting to write part of a batch.
#[test]
fn a_full_disk_with_replies_streamed_one_by_one_behaves_the_same() {
    fill_the_disk(&["--workers", "4", "--reply-buffer-bytes", "1"]);
}

/// Set in the child process that runs the library test under a file-size
/// limit (when no tmpfs can be mounted).
const CHILD_DIR: &str = "EVENTSTORE_SMALL_DISK_DIR";

/// Appends until the disk is full; checks the failure and what follows.
/// Returns the acknowledged `(version, sequence)` pairs of aggregate "a".
fn library_fills_the_disk(dir: &std::path::Path) -> Vec<u64> {
    let store = EventStore::open(dir, FsyncPolicy::Always).expect("open");
    let mut acknowledged = Vec::new();
    let failure = loop {
        let data = RawValue::from_string(big_data(acknowledged.len()).to_string()).unwrap();
        match store.append("a", ExpectedVersion::Any, &[NewEvent::new("Padded", &data)]) {
            Ok(appended) => acknowledged.push(appended.positions.first().0),
            Err(e) => break e,
        }
        assert!(acknowledged.len() < 1000, "the disk never filled");
    };
    let AppendError::Storage(cause) = &failure else {
        panic!("expected a storage error, got {failure:?}");
    };
    assert!(SmallDisk::is_full(cause.kind()), "{cause:?}");
    let source = std::error::Error::source(&failure).expect("the io::Error is the source");
    let io = source
        .downcast_ref::<std::io::Error>()
        .expect("source is an io::Error");
    assert!(SmallDisk::is_full(io.kind()));
    assert!(failure.to_string().contains("storage failed"), "{failure}");

    // Every later write fails the same way, small ones and snapshots too.
    let small = RawValue::from_string("{}".into()).unwrap();
    let again = store
        .append(
            "b",
            ExpectedVersion::Exact(Version(0)),
            &[NewEvent::new("T", &small)],
        )
        .unwrap_err();
    assert_eq!(again, failure);
    let snapshot = store.create_snapshot("a", None, None).unwrap_err();
    assert_eq!(snapshot, failure);
    assert!(store.storage_failure().is_some());
    acknowledged
}

#[test]
fn the_library_refuses_every_write_after_the_disk_fills() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        let acknowledged = library_fills_the_disk(std::path::Path::new(&dir));
        println!("\nACKNOWLEDGED {}", acknowledged.len());
        return;
    }
    let disk = SmallDisk::new("library-full-disk");
    let acknowledged = if disk.tmpfs {
        library_fills_the_disk(disk.dir.path()).len()
    } else {
        // Only the child process runs under the limit.
        let exe = std::env::current_exe().unwrap();
        let name = "the_library_refuses_every_write_after_the_disk_fills";
        let mut child = disk.limited(
            exe.to_str().unwrap(),
            &["--exact", name, "--nocapture", "--test-threads", "1"],
        );
        let out = child.env(CHILD_DIR, disk.dir.path()).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .find_map(|l| l.split("ACKNOWLEDGED ").nth(1))
            .and_then(|n| n.trim().parse().ok())
            .expect("the child reports its acknowledged appends")
    };
    disk.grow();
    let store = open_store(disk.dir.path(), FsyncPolicy::Always).expect("reopen");
    assert!(store.version("a").0 >= acknowledged as u64);
    let data = RawValue::from_string("{}".into()).unwrap();
    store
        .append(
            "c",
            ExpectedVersion::Exact(Version(0)),
            &[NewEvent::new("T", &data)],
        )
        .expect("appends go on after a restart with room");
}

/// A subscriber of a durable node gets an `event` message only for events
/// that became durable: none for the appends answered with error 13.
#[test]
fn no_event_message_for_an_event_that_was_not_durable() {
    for workers in ["1", "4"] {
        let disk = SmallDisk::new("full-disk-subscribed");
        let args = ["--data-dir", disk.dir.arg(), "--workers", workers];
        let mut node = Session::spawn(disk.limited(BIN, &args));
        let subscribed = node.call(&req(json!({"type": "subscribe", "msg_id": 0})));
        assert_eq!(subscribed["type"], "subscribed");
        for i in 0..300usize {
            node.send(&req(
                json!({"type": "append", "msg_id": i + 1, "aggregate_id": "a",
                "event_type": "Padded", "event_data": big_data(i), "version": "any"}),
            ));
        }
        let (status, lines, stderr) = node.finish();
        assert_eq!(status.code(), Some(1), "{stderr}");
        let mut acknowledged = Vec::new();
        let mut announced = Vec::new();
        let mut failed = 0;
        for l in &lines {
            let body = &l["body"];
            match body["type"].as_str().unwrap() {
                "appended" => acknowledged.push(body["sequence_number"].as_u64().unwrap()),
                "event" => {
                    let seq = body["event"]["sequence_number"].as_u64().unwrap();
                    assert_eq!(
                        acknowledged.last(),
                        Some(&seq),
                        "an event message follows the reply of its append"
                    );
                    announced.push(seq);
                }
                "error" => {
                    assert_eq!(body["code"], 13, "{body}");
                    failed += 1;
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert!(failed > 0, "the disk filled up");
        assert_eq!(announced, acknowledged, "--workers {workers}");
    }
}

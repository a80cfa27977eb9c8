//! Helpers shared by the `tests/node_*.rs` integration tests of the
//! `eventstore` binary (protocol: docs/protocol.md).
//!
//! * [`run`] / [`run_bytes`]: run the node on some stdin, collect its replies.
//! * [`check`]: run the node and compare every reply body with an expected
//!   body, field by field and in the same key order. Expected string values
//!   may be placeholders, see [`assert_matches`].
//! * [`req`] / [`line`]: build request lines.
//! * [`mask`]: blank out unpredictable values for differential comparison.
//! * [`Session`]: an interactive node (one request, one reply, stdin open).
//! * [`hostile`]: a hostile line between an append and two reads that show
//!   the store unchanged (docs/protocol.md "Bad input").
//! * everything of `tests/support/mod.rs` (re-exported): [`Rng`], [`soak`],
//!   [`raw`], the fold model [`fold`].

#![allow(dead_code)]

#[path = "../support/mod.rs"]
mod support;
#[allow(unused_imports)] // Not every test file uses these.
pub use support::*;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_eventstore");

/// Generous limit against hangs: no test should come anywhere near it.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Everything a finished run of the node gave.
#[derive(Debug)]
pub struct Output {
    /// stdout, one parsed JSON value per line.
    pub lines: Vec<Value>,
    /// stdout as text, exactly as written.
    pub raw: String,
    /// stderr as text (lossy UTF-8).
    pub stderr: String,
    /// How the process ended.
    pub status: ExitStatus,
}

impl Output {
    /// The `body` of every reply.
    pub fn bodies(&self) -> Vec<Value> {
        self.lines.iter().map(|l| l["body"].clone()).collect()
    }

    /// Number of lines written on stderr.
    pub fn stderr_lines(&self) -> usize {
        self.stderr.lines().count()
    }
}

/// Runs the node with `args`, feeding `input` on stdin (from a thread, so
/// large inputs cannot deadlock against a full stdout pipe). Panics when
/// the node does not finish within [`TIMEOUT`] or writes a stdout line that
/// is not JSON.
pub fn run(args: &[&str], input: &str) -> (Vec<Value>, String, ExitStatus) {
    let out = run_bytes(args, input.as_bytes());
    (out.lines, out.stderr, out.status)
}

/// Like [`run`], with arbitrary bytes on stdin and the full [`Output`].
pub fn run_bytes(args: &[&str], input: &[u8]) -> Output {
    let (raw, stderr, status) = run_text(args, input);
    let lines = raw
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| {
                panic!("stdout line is not JSON ({e}): {l:?}\nstderr:\n{stderr}")
            })
        })
        .collect();
    Output {
        lines,
        raw,
        stderr,
        status,
    }
}

/// Runs the node, stdout and stderr as text (stdout not parsed).
pub fn run_text(args: &[&str], input: &[u8]) -> (String, String, ExitStatus) {
    run_command(node_command(args), input)
}

/// The command that runs the node with `args`.
pub fn node_command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args);
    command
}

/// [`run_text`] for any command that runs the node (e.g. under a wrapper).
pub fn run_command(mut command: Command, input: &[u8]) -> (String, String, ExitStatus) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn eventstore");

    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Errors (a node that died early: broken pipe) show in the exit status.
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
        drop(stdin);
    });
    let mut stdout = child.stdout.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });

    let status = wait_with_timeout(&mut child, TIMEOUT);
    writer.join().unwrap();
    let out = out_reader.join().unwrap();
    let err = err_reader.join().unwrap();
    let raw = String::from_utf8(out).expect("stdout is not UTF-8");
    (raw, String::from_utf8_lossy(&err).into_owned(), status)
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("eventstore did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A request line: `{"src":"client","dest":"eventstore","body":body}`.
pub fn req(body: Value) -> String {
    line("client", Some("eventstore"), body)
}

/// A request line with the given envelope (`dest` left out when `None`).
pub fn line(src: &str, dest: Option<&str>, body: Value) -> String {
    let mut env = serde_json::Map::new();
    env.insert("src".into(), json!(src));
    if let Some(d) = dest {
        env.insert("dest".into(), json!(d));
    }
    env.insert("body".into(), body);
    Value::Object(env).to_string()
}

/// Joins lines into stdin text, each ending in `\n`.
pub fn input<S: AsRef<str>>(lines: &[S]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(l.as_ref());
        s.push('\n');
    }
    s
}

/// Runs a fresh node (no flags) on `lines` and asserts that it exits 0 and
/// that its replies' bodies match `expected`, one for one (see
/// [`assert_matches`]). Returns the output for further checks.
pub fn check<S: AsRef<str>>(lines: &[S], expected: &[Value]) -> Output {
    check_with(&[], lines, expected)
}

/// [`check`] with command-line flags.
pub fn check_with<S: AsRef<str>>(args: &[&str], lines: &[S], expected: &[Value]) -> Output {
    let out = run_bytes(args, input(lines).as_bytes());
    check_output(&out, expected);
    out
}

/// Asserts a finished run exited 0 and its reply bodies match `expected`.
pub fn check_output(out: &Output, expected: &[Value]) {
    assert!(
        out.status.success(),
        "node exit status {:?}\nstderr:\n{}",
        out.status,
        out.stderr
    );
    let bodies = out.bodies();
    for (i, (a, e)) in bodies.iter().zip(expected).enumerate() {
        if let Err(msg) = matches(a, e, &format!("reply[{i}].body")) {
            panic!(
                "{msg}\n  actual reply:   {a}\n  expected reply: {e}\nall replies:\n{}\nstderr:\n{}",
                out.raw, out.stderr
            );
        }
    }
    assert_eq!(
        bodies.len(),
        expected.len(),
        "reply count differs\nreplies:\n{}\nstderr:\n{}",
        out.raw,
        out.stderr
    );
}

/// Asserts `actual` matches `expected`: objects have the same keys in the
/// same order with matching values, arrays the same length with matching
/// elements, other values are equal. An expected string can be a
/// placeholder:
///
/// * `"<uuid>"`: a UUID in canonical lowercase hyphenated form;
/// * `"<timestamp>"`: RFC 3339 UTC with 6 fractional digits and `Z`;
/// * `"<string>"`: any string;
/// * `"<contains:TEXT>"`: a string containing TEXT;
/// * `"<any>"`: any value.
pub fn assert_matches(actual: &Value, expected: &Value) {
    if let Err(msg) = matches(actual, expected, "$") {
        panic!("{msg}\n  actual:   {actual}\n  expected: {expected}");
    }
}

/// Non-panicking [`assert_matches`]: the first difference, with its path.
pub fn matches(actual: &Value, expected: &Value, path: &str) -> Result<(), String> {
    if let Value::String(p) = expected {
        let placeholder = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!("{path}: expected {what}, got {actual}"))
            }
        };
        match p.as_str() {
            "<uuid>" => {
                return placeholder(
                    actual.as_str().is_some_and(is_canonical_uuid),
                    "a canonical lowercase UUID",
                );
            }
            "<timestamp>" => {
                return placeholder(
                    actual.as_str().is_some_and(is_timestamp),
                    "an RFC 3339 UTC timestamp with microseconds",
                );
            }
            "<string>" => return placeholder(actual.is_string(), "a string"),
            "<any>" => return Ok(()),
            s if s.starts_with("<contains:") && s.ends_with('>') => {
                let needle = &s["<contains:".len()..s.len() - 1];
                return placeholder(
                    actual.as_str().is_some_and(|a| a.contains(needle)),
                    &format!("a string containing {needle:?}"),
                );
            }
            _ => {}
        }
    }
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            let ak: Vec<&String> = a.keys().collect();
            let ek: Vec<&String> = e.keys().collect();
            if ak != ek {
                return Err(format!(
                    "{path}: keys (in order) differ: got {ak:?}, expected {ek:?}"
                ));
            }
            for (k, ev) in e {
                matches(&a[k], ev, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(e)) => {
            if a.len() != e.len() {
                return Err(format!(
                    "{path}: array length {} (expected {})",
                    a.len(),
                    e.len()
                ));
            }
            for (i, (av, ev)) in a.iter().zip(e).enumerate() {
                matches(av, ev, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ if actual == expected => Ok(()),
        _ => Err(format!("{path}: got {actual}, expected {expected}")),
    }
}

/// A UUID in canonical lowercase hyphenated form (8-4-4-4-12 hex digits).
pub fn is_canonical_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => matches!(c, '0'..='9' | 'a'..='f'),
        })
        && uuid::Uuid::parse_str(s).is_ok_and(|u| u.hyphenated().to_string() == s)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` with plausible field values.
pub fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 27 {
        return false;
    }
    let shape = b.iter().enumerate().all(|(i, &c)| match i {
        4 | 7 => c == b'-',
        10 => c == b'T',
        13 | 16 => c == b':',
        19 => c == b'.',
        26 => c == b'Z',
        _ => c.is_ascii_digit(),
    });
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap();
    shape
        && (1..=12).contains(&num(5..7))
        && (1..=31).contains(&num(8..10))
        && num(11..13) < 24
        && num(14..16) < 60
        && num(17..19) < 61
}

/// A copy of `v` with every value under the keys `event_id`, `event_ids`
/// (each element) and `recorded_at` replaced by `"<masked>"`, at any depth.
pub fn mask(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        "event_id" | "recorded_at" => json!("<masked>"),
                        "event_ids" => match v {
                            Value::Array(a) => {
                                Value::Array(a.iter().map(|_| json!("<masked>")).collect())
                            }
                            _ => json!("<masked>"),
                        },
                        _ => mask(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(mask).collect()),
        _ => v.clone(),
    }
}

/// An error reply body: `{"type":"error","in_reply_to":id,"code":code,"text":text}`
/// (`text` usually a placeholder such as `"<contains:version>"`).
pub fn error(in_reply_to: u64, code: u64, text: &str) -> Value {
    json!({"type": "error", "in_reply_to": in_reply_to, "code": code, "text": text})
}

/// The body of an `append` of one event.
pub fn append(
    msg_id: u64,
    aggregate: &str,
    event_type: &str,
    data: Value,
    version: Value,
) -> Value {
    json!({"type": "append", "msg_id": msg_id, "aggregate_id": aggregate,
           "event_type": event_type, "event_data": data, "version": version})
}

/// The expected reply to a successful single append.
pub fn appended(in_reply_to: u64, sequence_number: u64) -> Value {
    json!({"type": "appended", "in_reply_to": in_reply_to, "event_id": "<uuid>",
           "sequence_number": sequence_number})
}

/// The body of a `read_all` of everything.
pub fn read_all(msg_id: u64) -> Value {
    json!({"type": "read_all", "msg_id": msg_id})
}

/// The body of a `read_stream` of everything.
pub fn read_stream(msg_id: u64, aggregate: &str) -> Value {
    json!({"type": "read_stream", "msg_id": msg_id, "aggregate_id": aggregate})
}

/// An expected event object (field order of docs/protocol.md), `metadata` left
/// out when `None`.
pub fn event(
    seq: u64,
    aggregate: &str,
    version: u64,
    event_type: &str,
    data: Value,
    metadata: Option<Value>,
) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("sequence_number".into(), json!(seq));
    m.insert("event_id".into(), json!("<uuid>"));
    m.insert("aggregate_id".into(), json!(aggregate));
    m.insert("version".into(), json!(version));
    m.insert("event_type".into(), json!(event_type));
    m.insert("event_data".into(), data);
    if let Some(md) = metadata {
        m.insert("metadata".into(), md);
    }
    m.insert("recorded_at".into(), json!("<timestamp>"));
    Value::Object(m)
}

// ------------------------------------------------ hostile lines (Bad input)
//
// docs/protocol.md "Bad input": every case is a good append, the hostile line,
// then a read_all and a read_stream showing the store still holds exactly
// the first event.

/// The replies to `read_all` (msg_id 1000) and `read_stream` of `a` (1001)
/// when the store holds exactly the event of [`around`]'s first line.
pub fn stored() -> [Value; 2] {
    let e = event(1, "a", 1, "T", json!({"k": 1}), None);
    [
        json!({"type": "all_read", "in_reply_to": 1000, "events": [e.clone()], "head": 1}),
        json!({"type": "stream_read", "in_reply_to": 1001, "aggregate_id": "a", "version": 1, "events": [e]}),
    ]
}

/// [`around`] without a hostile line.
pub fn around_nothing() -> Vec<u8> {
    let mut v = Vec::new();
    for l in [
        req(append(1, "a", "T", json!({"k": 1}), json!(0))),
        req(read_all(1000)),
        req(read_stream(1001, "a")),
    ] {
        v.extend_from_slice(l.as_bytes());
        v.push(b'\n');
    }
    v
}

/// Input: an append of `{"k":1}` to `a`, the hostile line `bad`, then a
/// `read_all` and a `read_stream` (replies: [`stored`]).
pub fn around(bad: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(req(append(1, "a", "T", json!({"k": 1}), json!(0))).as_bytes());
    v.push(b'\n');
    v.extend_from_slice(bad);
    v.push(b'\n');
    v.extend_from_slice(req(read_all(1000)).as_bytes());
    v.push(b'\n');
    v.extend_from_slice(req(read_stream(1001, "a")).as_bytes());
    v.push(b'\n');
    v
}

/// Runs the hostile line with `args`; `reply` is the expected reply body
/// (`None`: no reply at all, and exactly one more stderr line than without
/// the hostile line).
pub fn hostile_with(args: &[&str], bad: impl AsRef<[u8]>, reply: Option<Value>) -> Output {
    let out = run_bytes(args, &around(bad.as_ref()));
    let mut expected = vec![appended(1, 1)];
    expected.extend(reply.clone());
    expected.extend(stored());
    check_output(&out, &expected);
    if reply.is_none() {
        let base = run_bytes(args, &around_nothing());
        assert_eq!(
            out.stderr_lines(),
            base.stderr_lines() + 1,
            "a line that gets no reply gets exactly one stderr line\nstderr:\n{}\nbaseline stderr:\n{}",
            out.stderr,
            base.stderr
        );
    }
    out
}

/// [`hostile_with`] without flags: the node answers the hostile line with
/// `reply` (`None`: no reply, one stderr line), and the store still holds
/// exactly the first event.
pub fn hostile(bad: impl AsRef<[u8]>, reply: Option<Value>) -> Output {
    hostile_with(&[], bad, reply)
}

/// A node kept running: send a line, wait (with [`TIMEOUT`]) for one reply
/// line, stdin stays open until [`Session::finish`].
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: mpsc::Receiver<String>,
    /// stderr so far, filled line by line while the node runs.
    stderr_log: Arc<Mutex<String>>,
    stderr: Option<thread::JoinHandle<()>>,
    /// If set, the last request sent and when, for a stall report.
    last_request: Option<Arc<Mutex<String>>>,
}

/// The wall-clock time as seconds since the epoch, for reports.
fn wall_clock() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Session {
    /// Spawns the node with `args`.
    pub fn start(args: &[&str]) -> Session {
        Session::spawn(node_command(args))
    }

    /// Spawns `command`, which runs the node (e.g. under a wrapper).
    pub fn spawn(mut command: Command) -> Session {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn eventstore");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let err = child.stderr.take().unwrap();
        let stderr_log = Arc::new(Mutex::new(String::new()));
        let log = Arc::clone(&stderr_log);
        let stderr = thread::spawn(move || {
            let mut err = BufReader::new(err);
            let mut line = Vec::new();
            while matches!(err.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        });
        Session {
            child,
            stdin,
            replies: rx,
            stderr_log,
            stderr: Some(stderr),
            last_request: None,
        }
    }

    /// Writes one line (a `\n` is added) and flushes.
    pub fn send(&mut self, line: &str) {
        if let Some(last) = &self.last_request {
            let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
            *last = format!("sent at {:.3}: {line}", wall_clock());
        }
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(line.as_bytes()).expect("write request");
        stdin.write_all(b"\n").expect("write request");
        stdin.flush().expect("flush request");
    }

    /// Waits for the next reply line, panicking after [`TIMEOUT`].
    pub fn recv(&mut self) -> Value {
        let reply = self.replies.recv_timeout(TIMEOUT);
        if let (Some(last), Ok(_)) = (&self.last_request, &reply) {
            let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
            last.push_str(&format!(" (a reply came at {:.3})", wall_clock()));
        }
        match reply {
            Ok(l) => serde_json::from_str(&l)
                .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {l:?}")),
            Err(e) => {
                let _ = self.child.kill();
                panic!(
                    "no reply within {TIMEOUT:?} while stdin is open ({e}); stderr so far:\n{}",
                    self.stderr_so_far()
                );
            }
        }
    }

    /// Keeps the last request sent (and when) in `last`, for a stall
    /// report from another thread.
    pub fn set_last_request(&mut self, last: Arc<Mutex<String>>) {
        self.last_request = Some(last);
    }

    /// What the node has written on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A handle on the node's stderr so far, readable from another thread
    /// (e.g. to report what the nodes said when a test stalls).
    pub fn stderr_log(&self) -> Arc<Mutex<String>> {
        Arc::clone(&self.stderr_log)
    }

    /// The next line within `timeout`, parsed; `None` if none came (the
    /// node keeps running).
    pub fn recv_within(&mut self, timeout: Duration) -> Option<Value> {
        let l = self.replies.recv_timeout(timeout).ok()?;
        Some(serde_json::from_str(&l).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {l:?}")))
    }

    /// Waits for the next reply line and returns it unparsed, panicking
    /// after [`TIMEOUT`].
    pub fn recv_raw(&mut self) -> String {
        match self.replies.recv_timeout(TIMEOUT) {
            Ok(l) => l,
            Err(e) => {
                let _ = self.child.kill();
                panic!(
                    "no reply within {TIMEOUT:?} while stdin is open ({e}); stderr so far:\n{}",
                    self.stderr_so_far()
                );
            }
        }
    }

    /// The node's peak resident memory so far, in bytes (`VmHWM`).
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib * 1024
    }

    /// Sends `line` and returns the reply's body.
    pub fn call(&mut self, line: &str) -> Value {
        self.send(line);
        self.recv()["body"].clone()
    }

    /// Closes stdin, waits for the exit; returns the status, any replies
    /// still unread and stderr.
    pub fn finish(mut self) -> (ExitStatus, Vec<Value>, String) {
        drop(self.stdin.take());
        let status = wait_with_timeout(&mut self.child, TIMEOUT);
        let mut rest = Vec::new();
        while let Ok(l) = self.replies.recv_timeout(Duration::from_secs(5)) {
            rest.push(
                serde_json::from_str(&l)
                    .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {l:?}")),
            );
        }
        self.stderr.take().unwrap().join().unwrap();
        (status, rest, self.stderr_so_far())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            // A test that panicked mid-session: do not leave the node behind.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Durability helpers (tests/durability_*.rs): temp data dirs, a seeded PRNG,
// a node that can be SIGKILLed mid-stream, reading a whole store back.
// ---------------------------------------------------------------------------

/// A fresh, uniquely named directory under [`std::env::temp_dir`], removed
/// with everything in it on drop (kept, and its path printed, when the test
/// is panicking and `EVENTSTORE_KEEP_DIRS` is set: for a post-mortem).
pub struct TempDir {
    path: std::path::PathBuf,
}

impl TempDir {
    /// Creates `eventstore-LABEL-PID-N-NANOS` in the temp dir.
    pub fn new(label: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "eventstore-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The directory as a `--data-dir` argument.
    pub fn arg(&self) -> &str {
        self.path.to_str().expect("temp dir path is UTF-8")
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() && std::env::var_os("EVENTSTORE_KEEP_DIRS").is_some() {
            eprintln!("kept data dir {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The seed for a randomised test: `EVENTSTORE_SEED` if set, else the
/// clock. Printed (shown when the test fails) so the run can be repeated.
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("EVENTSTORE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed {seed} (repeat with EVENTSTORE_SEED={seed})");
    seed
}

/// A node whose stdin a test drives from its own thread and which the test
/// ends with SIGKILL ([`KillableNode::kill`]); a reader thread collects
/// stdout meanwhile, so the node never blocks on a full pipe. Dropped
/// without `kill` (a test that panicked), it is killed too.
pub struct KillableNode {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<thread::JoinHandle<Vec<u8>>>,
    stderr: Option<thread::JoinHandle<Vec<u8>>>,
}

/// What a killed node had written.
#[derive(Debug)]
pub struct Killed {
    /// Every complete (newline-terminated) reply line, parsed.
    pub replies: Vec<Value>,
    /// Bytes after the last newline: a reply cut off by the kill, which the
    /// client never fully received (so it acknowledges nothing).
    pub partial: String,
    /// stderr (lossy UTF-8).
    pub stderr: String,
    /// The exit status (a signal, unless the node had already exited).
    pub status: ExitStatus,
}

impl KillableNode {
    /// Spawns the node with `args`.
    pub fn start(args: &[&str]) -> KillableNode {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn eventstore");
        let stdin = child.stdin.take();
        let mut out = child.stdout.take().unwrap();
        let stdout = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        });
        KillableNode {
            child,
            stdin,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// The node's stdin, for a writer thread (writes fail once it is killed).
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("stdin already taken")
    }

    /// Sends SIGKILL (`Child::kill`), reaps the node and returns what it wrote.
    pub fn kill(mut self) -> Killed {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for killed node");
        drop(self.stdin.take());
        let out = self.stdout.take().unwrap().join().unwrap();
        let err = self.stderr.take().unwrap().join().unwrap();
        let cut = out.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let text = String::from_utf8(out[..cut].to_vec()).expect("stdout is not UTF-8");
        let replies = text
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {l:?}"))
            })
            .collect();
        Killed {
            replies,
            partial: String::from_utf8_lossy(&out[cut..]).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
            status,
        }
    }
}

impl Drop for KillableNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a node's whole log with `read_all` (in pages of 10,000): every
/// event object in order, and the head the last page reported. Panics on
/// any reply but `all_read`.
pub fn read_whole_log(s: &mut Session) -> (Vec<Value>, u64) {
    let mut events = Vec::new();
    let mut msg_id = 900_000_000;
    loop {
        msg_id += 1;
        let from = events.len() as u64 + 1;
        let body = s.call(&req(json!({"type": "read_all", "msg_id": msg_id,
                                      "from_sequence": from, "max_count": 10_000})));
        assert_eq!(body["type"], "all_read", "read_all from {from}: {body}");
        let page = body["events"].as_array().expect("events array").clone();
        let head = body["head"].as_u64().expect("head");
        let full = page.len() == 10_000;
        events.extend(page);
        if !full {
            return (events, head);
        }
    }
}

/// A node's snapshot of `aggregate` as `(version, state)`, `None` on
/// error 20 (no snapshot). Panics on any other reply.
pub fn read_snapshot_of(s: &mut Session, aggregate: &str) -> Option<(u64, Value)> {
    let body = s.call(&req(
        json!({"type": "read_snapshot", "msg_id": 900_000_000u64,
                                  "aggregate_id": aggregate}),
    ));
    match body["type"].as_str() {
        Some("snapshot_read") => {
            assert_eq!(body["aggregate_id"], aggregate, "{body}");
            Some((
                body["version"].as_u64().expect("version"),
                body["state"].clone(),
            ))
        }
        Some("error") if body["code"] == 20 => None,
        _ => panic!("read_snapshot {aggregate:?}: unexpected reply {body}"),
    }
}

impl Session {
    /// [`Session::start`], then waits for the node to answer a probe
    /// (`read_all` of nothing): panics with its exit status and stderr if
    /// it does not start serving (e.g. it refused a data dir).
    pub fn start_serving(args: &[&str]) -> Session {
        let mut s = Session::start(args);
        let probe = format!(
            "{}\n",
            req(json!({"type": "read_all", "msg_id": 0, "max_count": 0}))
        );
        let stdin = s.stdin.as_mut().expect("stdin");
        let sent = stdin
            .write_all(probe.as_bytes())
            .and_then(|()| stdin.flush());
        if sent.is_err() || s.replies.recv_timeout(TIMEOUT).is_err() {
            let (status, _, stderr) = s.finish();
            panic!("eventstore {args:?} did not start serving: {status:?}\nstderr:\n{stderr}");
        }
        s
    }
}

/// `EventStore::open`, retried for up to 2 s while the directory is
/// "locked". A store dropped by this process can stay locked for a moment
/// when another test thread is spawning a node: the child briefly holds a
/// copy of the lock file's descriptor between fork and exec.
pub fn open_store(
    dir: &std::path::Path,
    fsync: eventstore::FsyncPolicy,
) -> Result<eventstore::EventStore, eventstore::OpenError> {
    let start = Instant::now();
    loop {
        match eventstore::EventStore::open(dir, fsync) {
            Err(eventstore::OpenError::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && start.elapsed() < Duration::from_secs(2) =>
            {
                thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

impl Session {
    /// Sends SIGKILL (`Child::kill`) to the node, reaps it and returns its
    /// stderr. For request/response tests of "a reply means durable".
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.stdin.take());
        self.stderr.take().unwrap().join().unwrap();
        self.stderr_so_far()
    }
}

//! Every example exchange in `docs/protocol.md` runs against the binary, so
//! the reference cannot drift from the node.
//!
//! An example is a fenced block tagged `jsonl session`:
//!
//! * `$ eventstore ARGS` starts a fresh node (a block that starts with a
//!   request gets a plain `eventstore`); a later `$` line ends the node
//!   before it (stdin closed) and starts another, e.g. a restart on the same
//!   `DIR`. `DIR` stands for a temporary directory, one per block, also in
//!   replies. `$ prlimit --fsize=N eventstore ...` runs the node under a
//!   file-size limit of N bytes with `SIGXFSZ` ignored.
//! * `> LINE` is a request line, sent as written.
//! * `< LINE` is a reply line expected after the request before it, exactly
//!   (same fields, same order, same text), except that `<uuid>` matches a
//!   canonical lowercase UUID and `<timestamp>` an RFC 3339 UTC timestamp
//!   with microseconds. A request without `<` lines gets no reply.
//! * `exit N`: the node's exit status (0 when not given).
//!
//! Each node runs three times: with all its requests sent at once
//! (pipelined, input then closed), the same with `--workers 1`, and
//! interactively (each request sent only after the replies to the one
//! before it arrived). Without
//! `--data-dir`, stderr must have exactly one line per request without a
//! reply. Any other fenced block tagged `json` or `jsonl` fails the test:
//! every JSON example in the document is an executed one.

mod common;

use common::*;
use std::process::Command;

const DOC_PATH: &str = "docs/protocol.md";
const DOC: &str = include_str!("../docs/protocol.md");

/// The document must keep at least this many example sessions.
const MIN_BLOCKS: usize = 25;

/// Request types the node implements: each must appear in some example.
const REQUEST_TYPES: &[&str] = &[
    "init",
    "append",
    "create_snapshot",
    "read_snapshot",
    "replay",
    "get_state",
    "read_stream",
    "read_all",
    "subscribe",
    "unsubscribe",
];

/// Reply types: each must appear in some example.
const REPLY_TYPES: &[&str] = &[
    "init_ok",
    "appended",
    "concurrency_error",
    "snapshot_created",
    "snapshot_read",
    "replayed",
    "state",
    "stream_read",
    "all_read",
    "subscribed",
    "event",
    "unsubscribed",
    "error",
];

/// Error codes the node uses: each must appear in some example reply
/// (11 needs 1,001 subscriptions: `tests/node_subscriptions.rs` shows it).
const ERROR_CODES: &[u64] = &[10, 12, 13, 20, 22];

#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence in the document.
    doc_line: usize,
    nodes: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    /// Doc line of the `$` line (or of the first request).
    doc_line: usize,
    /// `prlimit --fsize=N`, if given.
    fsize: Option<u64>,
    args: Vec<String>,
    steps: Vec<Step>,
    exit: i32,
}

#[derive(Debug)]
struct Step {
    doc_line: usize,
    request: String,
    replies: Vec<String>,
}

fn parse_command(doc_line: usize, command: &str) -> Node {
    let mut words = command.split_whitespace().peekable();
    let mut fsize = None;
    if words.peek() == Some(&"prlimit") {
        words.next();
        let limit = words
            .next()
            .and_then(|w| w.strip_prefix("--fsize="))
            .and_then(|n| n.parse().ok());
        assert!(
            limit.is_some(),
            "{DOC_PATH}:{doc_line}: prlimit needs --fsize=N"
        );
        fsize = limit;
    }
    assert_eq!(
        words.next(),
        Some("eventstore"),
        "{DOC_PATH}:{doc_line}: a `$` line runs eventstore"
    );
    Node {
        doc_line,
        fsize,
        args: words.map(str::to_owned).collect(),
        steps: Vec::new(),
        exit: 0,
    }
}

fn parse(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    let mut in_other_fence = false;
    for (i, text) in doc.lines().enumerate() {
        let n = i + 1;
        if let Some(info) = text.strip_prefix("```") {
            let info = info.trim();
            if let Some(block) = current.take() {
                assert!(info.is_empty(), "{DOC_PATH}:{n}: fence inside a session");
                assert!(
                    block.nodes.iter().any(|node| !node.steps.is_empty()),
                    "{DOC_PATH}:{}: a session without requests",
                    block.doc_line
                );
                blocks.push(block);
            } else if in_other_fence {
                in_other_fence = false;
            } else if info == "jsonl session" {
                current = Some(Block {
                    doc_line: n,
                    nodes: Vec::new(),
                });
            } else {
                assert!(
                    !info.starts_with("json"),
                    "{DOC_PATH}:{n}: a `{info}` block is not run by this test: \
                     tag JSON examples `jsonl session`"
                );
                in_other_fence = true;
            }
            continue;
        }
        let Some(block) = current.as_mut() else {
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        if let Some(command) = text.strip_prefix("$ ") {
            block.nodes.push(parse_command(n, command));
        } else if let Some(request) = text.strip_prefix("> ") {
            if block.nodes.is_empty() {
                block.nodes.push(parse_command(n, "eventstore"));
            }
            block.nodes.last_mut().unwrap().steps.push(Step {
                doc_line: n,
                request: request.to_owned(),
                replies: Vec::new(),
            });
        } else if let Some(reply) = text.strip_prefix("< ") {
            let step = block
                .nodes
                .last_mut()
                .and_then(|node| node.steps.last_mut())
                .unwrap_or_else(|| panic!("{DOC_PATH}:{n}: a reply before any request"));
            step.replies.push(reply.to_owned());
        } else if let Some(code) = text.strip_prefix("exit ") {
            let node = block
                .nodes
                .last_mut()
                .unwrap_or_else(|| panic!("{DOC_PATH}:{n}: `exit` before any node"));
            node.exit = code
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{DOC_PATH}:{n}: `exit N` needs a number"));
        } else {
            panic!(
                "{DOC_PATH}:{n}: a session line starts with `$ `, `> `, `< ` or `exit `: {text:?}"
            );
        }
    }
    assert!(current.is_none(), "{DOC_PATH}: unclosed session block");
    blocks
}

/// Whether `actual` is `expected` with its placeholders filled in.
fn line_matches(actual: &str, expected: &str) -> Result<(), String> {
    type Check = fn(&str) -> bool;
    const HOLES: [(&str, usize, Check); 2] = [
        ("<uuid>", 36, is_canonical_uuid),
        ("<timestamp>", 27, is_timestamp),
    ];
    let (mut a, mut e) = (actual, expected);
    loop {
        let next = HOLES
            .iter()
            .filter_map(|h| e.find(h.0).map(|at| (at, h)))
            .min_by_key(|(at, _)| *at);
        let Some((at, &(token, len, ok))) = next else {
            return if a == e {
                Ok(())
            } else {
                Err(first_difference(a, e))
            };
        };
        if a.get(..at) != Some(&e[..at]) {
            return Err(first_difference(a, &e[..at]));
        }
        let value = a.get(at..at + len).unwrap_or_default();
        if !ok(value) {
            return Err(format!("{value:?} does not match {token}"));
        }
        a = &a[at + len..];
        e = &e[at + token.len()..];
    }
}

/// Where `actual` and `expected` part: the rest of each from there.
fn first_difference(actual: &str, expected: &str) -> String {
    let common = actual
        .char_indices()
        .zip(expected.chars())
        .find(|((_, a), e)| a != e)
        .map_or(actual.len().min(expected.len()), |((i, _), _)| i);
    let tail = |s: &str| {
        s.get(common..)
            .unwrap_or_default()
            .chars()
            .take(50)
            .collect::<String>()
    };
    format!(
        "differs at {:?} (expected {:?})",
        tail(actual),
        tail(expected)
    )
}

/// The command running `node`, with `extra` flags after its own.
fn command(node: &Node, dir: &TempDir, extra: &[&str]) -> Command {
    let args: Vec<String> = node
        .args
        .iter()
        .map(|a| a.replace("DIR", dir.arg()))
        .chain(extra.iter().map(|a| a.to_string()))
        .collect();
    match node.fsize {
        None => {
            let mut c = Command::new(BIN);
            c.args(&args);
            c
        }
        Some(limit) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!(
                    "trap '' XFSZ; exec prlimit --fsize={limit} -- \"$@\""
                ))
                .arg("sh")
                .arg(BIN)
                .args(&args);
            c
        }
    }
}

fn expected_replies<'a>(
    node: &'a Node,
    dir: &'a TempDir,
) -> impl Iterator<Item = (usize, String)> + 'a {
    node.steps.iter().flat_map(move |s| {
        s.replies
            .iter()
            .map(move |r| (s.doc_line, r.replace("DIR", dir.arg())))
    })
}

fn fail(block: &Block, node: &Node, what: String, raw: &str, stderr: &str) -> ! {
    panic!(
        "{DOC_PATH}:{} (session at line {}, node at line {}): {what}\n\
         node output:\n{raw}\nstderr:\n{stderr}",
        block.doc_line, block.doc_line, node.doc_line
    );
}

fn check_exit(
    block: &Block,
    node: &Node,
    status: std::process::ExitStatus,
    raw: &str,
    stderr: &str,
) {
    if status.code() != Some(node.exit) {
        fail(
            block,
            node,
            format!("exit status {status:?}, expected {}", node.exit),
            raw,
            stderr,
        );
    }
    let silent = node.steps.iter().filter(|s| s.replies.is_empty()).count();
    let durable = node.args.iter().any(|a| a.starts_with("--data-dir"));
    if !durable && stderr.lines().count() != silent {
        fail(
            block,
            node,
            format!(
                "{} stderr lines, expected one per request without a reply ({silent})",
                stderr.lines().count()
            ),
            raw,
            stderr,
        );
    }
}

/// All requests at once, then end of input.
fn run_pipelined(block: &Block, node: &Node, dir: &TempDir, extra: &[&str]) {
    let mut input = String::new();
    for s in &node.steps {
        input.push_str(&s.request);
        input.push('\n');
    }
    let (raw, stderr, status) = run_command(command(node, dir, extra), input.as_bytes());
    let actual: Vec<&str> = raw.lines().collect();
    let expected: Vec<(usize, String)> = expected_replies(node, dir).collect();
    for (i, (doc_line, e)) in expected.iter().enumerate() {
        let Some(a) = actual.get(i) else {
            fail(
                block,
                node,
                format!("pipelined: no reply for line {doc_line}"),
                &raw,
                &stderr,
            );
        };
        if let Err(why) = line_matches(a, e) {
            fail(
                block,
                node,
                format!(
                    "pipelined: reply to the request before line {doc_line}: {why}\n  \
                     expected: {e}\n  actual:   {a}"
                ),
                &raw,
                &stderr,
            );
        }
    }
    if actual.len() != expected.len() {
        fail(
            block,
            node,
            format!(
                "pipelined: {} replies, expected {}",
                actual.len(),
                expected.len()
            ),
            &raw,
            &stderr,
        );
    }
    check_exit(block, node, status, &raw, &stderr);
}

/// One request at a time, each after the replies to the one before it.
fn run_interactive(block: &Block, node: &Node, dir: &TempDir) {
    let mut session = Session::spawn(command(node, dir, &[]));
    let mut seen = String::new();
    for step in &node.steps {
        session.send(&step.request);
        for e in &step.replies {
            let e = e.replace("DIR", dir.arg());
            let a = session.recv_raw();
            seen.push_str(&a);
            seen.push('\n');
            if let Err(why) = line_matches(&a, &e) {
                let (_, _, stderr) = session.finish();
                fail(
                    block,
                    node,
                    format!(
                        "interactive: reply at line {}: {why}\n  expected: {e}\n  actual:   {a}",
                        step.doc_line
                    ),
                    &seen,
                    &stderr,
                );
            }
        }
    }
    let (status, rest, stderr) = session.finish();
    if !rest.is_empty() {
        fail(
            block,
            node,
            format!("interactive: unexpected replies {rest:?}"),
            &seen,
            &stderr,
        );
    }
    check_exit(block, node, status, &seen, &stderr);
}

/// How a session is run.
#[derive(Clone, Copy)]
enum Mode {
    /// All requests at once, with these flags added.
    Pipelined(&'static [&'static str]),
    /// One request at a time.
    Interactive,
}

fn run_block(block: &Block, mode: Mode) {
    let dir = TempDir::new("docs");
    for node in &block.nodes {
        match mode {
            Mode::Pipelined(extra) => run_pipelined(block, node, &dir, extra),
            Mode::Interactive => run_interactive(block, node, &dir),
        }
    }
}

#[test]
fn every_example_session_runs_as_shown() {
    let blocks = parse(DOC);
    for block in &blocks {
        run_block(block, Mode::Pipelined(&[]));
        // The same replies from one worker as from the default pool.
        run_block(block, Mode::Pipelined(&["--workers", "1"]));
    }
}

#[test]
fn every_example_session_runs_as_shown_one_request_at_a_time() {
    let blocks = parse(DOC);
    for block in &blocks {
        run_block(block, Mode::Interactive);
    }
}

#[test]
fn the_examples_cover_every_message_reply_and_error() {
    let blocks = parse(DOC);
    assert!(
        blocks.len() >= MIN_BLOCKS,
        "{DOC_PATH} has {} example sessions, expected at least {MIN_BLOCKS}",
        blocks.len()
    );
    let steps: Vec<&Step> = blocks
        .iter()
        .flat_map(|b| &b.nodes)
        .flat_map(|n| &n.steps)
        .collect();
    let replies: Vec<&String> = steps.iter().flat_map(|s| &s.replies).collect();
    for t in REQUEST_TYPES {
        let needle = format!("\"type\":\"{t}\"");
        assert!(
            steps.iter().any(|s| s.request.contains(&needle)),
            "no example request of type {t:?} in {DOC_PATH}"
        );
    }
    for t in REPLY_TYPES {
        let needle = format!("\"type\":\"{t}\"");
        assert!(
            replies.iter().any(|r| r.contains(&needle)),
            "no example reply of type {t:?} in {DOC_PATH}"
        );
    }
    for code in ERROR_CODES {
        let needle = format!("\"code\":{code},");
        assert!(
            replies.iter().any(|r| r.contains(&needle)),
            "no example of error {code} in {DOC_PATH}"
        );
    }
}

#[test]
fn placeholders_match_only_their_shape() {
    let id = "5a0c2f6e-8f3b-4f7a-9d2e-1b6c3a4d5e01";
    let at = "2026-12-04T15:54:43.033883Z";
    let expected = r#"{"event_id":"<uuid>","recorded_at":"<timestamp>"}"#;
    let line = |id: &str, at: &str| format!(r#"{{"event_id":"{id}","recorded_at":"{at}"}}"#);
    assert_eq!(line_matches(&line(id, at), expected), Ok(()));
    assert!(line_matches(&line(&id.to_uppercase(), at), expected).is_err());
    assert!(line_matches(&line(id, "2026-12-04T15:54:43Z"), expected).is_err());
    assert!(line_matches(&format!("{} ", line(id, at)), expected).is_err());
    assert!(line_matches(r#"{"a":1,"b":2}"#, r#"{"b":2,"a":1}"#).is_err());
}

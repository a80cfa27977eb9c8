//! A loopback TCP proxy in front of one NATS server that makes network
//! failures deterministic:
//! - it loses JetStream publish acknowledgements on demand: the lost-ack
//!   case of the issue ("a publish whose acknowledgement is lost is retried
//!   with the same `Nats-Msg-Id`, so it is stored once");
//! - it loses consumers' idle heartbeats while told to, so that the
//!   client's ordered consumer reports a missed heartbeat;
//! - it makes heartbeats claim deliveries that never came, so that the
//!   ordered consumer recreates itself;
//! - it stalls consumers: deliveries lost, heartbeats claiming none was
//!   made, so that the client sees a consumer with nothing to deliver.
//!
//! Client → server bytes pass unchanged. Server → client bytes are parsed
//! as NATS protocol operations (`MSG`/`HMSG` with their payloads, every
//! other operation one line). While armed, a `MSG` (no headers) whose
//! payload is a publish acknowledgement (`{"stream":…,"seq":…}`, no
//! `"error"`) is swallowed and the count goes down; events pushed to
//! consumers come as `HMSG`, API replies are not acks. While heartbeats are
//! lost, an `HMSG` whose headers are a `100` status (idle heartbeat, flow
//! control) is swallowed. A delivery is an `HMSG` whose reply subject is
//! `$JS.ACK.…` (it carries the consumer sequence number); heartbeats name
//! the last one in `Nats-Last-Consumer`. Everything else passes.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

/// See the module docs.
pub struct Proxy {
    port: u16,
    rules: Arc<Rules>,
}

/// What the proxy loses, shared with its connections' threads.
#[derive(Default)]
struct Rules {
    /// Acknowledgements still to lose.
    armed: AtomicUsize,
    /// Acknowledgements lost so far.
    dropped: AtomicUsize,
    /// Whether idle heartbeats are lost.
    no_heartbeats: AtomicBool,
    /// Whether idle heartbeats claim a consumer sequence never delivered.
    false_heartbeats: AtomicBool,
    /// Bumped to stall every consumer known so far (see
    /// [`Proxy::stall_consumers`]).
    stall_generation: AtomicUsize,
}

impl Proxy {
    /// Listens on a free loopback port, forwarding each connection to
    /// `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let rules = Arc::new(Rules::default());
        let upstream = upstream.to_owned();
        let r = Arc::clone(&rules);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                thread::spawn(move || copy(c2, s2));
                let r = Arc::clone(&r);
                thread::spawn(move || filter(server, client, &r));
            }
        });
        Proxy { port, rules }
    }

    /// The URL to give the client.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Loses the next `n` publish acknowledgements.
    pub fn drop_next_acks(&self, n: usize) {
        self.rules.armed.fetch_add(n, Ordering::SeqCst);
    }

    /// Acknowledgements lost so far.
    pub fn dropped(&self) -> usize {
        self.rules.dropped.load(Ordering::SeqCst)
    }

    /// Loses (`true`) or passes (`false`) idle heartbeats from now on.
    pub fn lose_heartbeats(&self, lose: bool) {
        self.rules.no_heartbeats.store(lose, Ordering::SeqCst);
    }

    /// From now on, idle heartbeats claim (`true`) that the consumer
    /// delivered messages the client never got (`Nats-Last-Consumer`
    /// raised), as after messages lost in flight; or pass as sent.
    pub fn falsify_heartbeats(&self, falsify: bool) {
        self.rules.false_heartbeats.store(falsify, Ordering::SeqCst);
    }

    /// Stalls, for good, every consumer that delivered (or sent a
    /// heartbeat) through the proxy so far: its deliveries are lost and its heartbeats claim the last
    /// one that passed, so the client sees a live consumer with nothing to
    /// deliver (a consumer stuck on the server). Consumers created later
    /// pass.
    pub fn stall_consumers(&self) {
        self.rules.stall_generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// An idle heartbeat `HMSG` frame whose `Nats-Last-Consumer` header is
/// `claim(the value sent)` (the sizes on its first line fixed up).
fn falsified(frame: &[u8], claim: impl Fn(u64) -> u64) -> Vec<u8> {
    const HEADER: &str = "Nats-Last-Consumer: ";
    let text = String::from_utf8_lossy(frame);
    let Some(at) = text.find(HEADER).map(|i| i + HEADER.len()) else {
        return frame.to_vec();
    };
    let end = at + text[at..].find("\r\n").expect("a header line");
    let sent: u64 = text[at..end].parse().expect("a consumer sequence");
    let claimed = claim(sent).to_string();
    let body = format!("{}{claimed}{}", &text[..at], &text[end..]);
    let grown = body.len() as i64 - text.len() as i64;
    // The first line: HMSG <subject> <sid> [reply] <header size> <total size>.
    let line_end = body.find("\r\n").expect("a first line");
    let mut tokens: Vec<String> = body[..line_end].split(' ').map(str::to_owned).collect();
    let n = tokens.len();
    for token in &mut tokens[n - 2..] {
        *token = (token.parse::<i64>().expect("a size") + grown).to_string();
    }
    format!("{}{}", tokens.join(" "), &body[line_end..]).into_bytes()
}

/// The consumer sequence number of a JetStream delivery, from its reply
/// subject, if the frame's first line is one: `$JS.ACK.<stream>.<consumer>.
/// <delivered>.<stream seq>.<consumer seq>.<time>.<pending>` (9 tokens), or
/// the form with `<domain>.<account hash>` after `ACK` and a token at the
/// end (12).
fn delivery(first_line: &str) -> Option<u64> {
    let reply = first_line
        .split_ascii_whitespace()
        .find(|t| t.starts_with("$JS.ACK."))?;
    let tokens: Vec<&str> = reply.split('.').collect();
    let at = match tokens.len() {
        9 => 6,
        n if n >= 12 => 8,
        _ => return None,
    };
    tokens[at].parse().ok()
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn filter(server: TcpStream, mut client: TcpStream, rules: &Rules) {
    let mut from = BufReader::new(server);
    // The consumer sequence of the last delivery passed to the client, by
    // subscription id (one per consumer).
    let mut passed: HashMap<String, u64> = HashMap::new();
    // The subscriptions stalled, and the generation that did it.
    let mut stalled: HashSet<String> = HashSet::new();
    let mut stalled_at = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        match from.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        let op = text.split_ascii_whitespace().next().unwrap_or("");
        let mut frame = line.clone();
        let mut is_ack = false;
        let mut is_heartbeat = false;
        if op.eq_ignore_ascii_case("MSG") || op.eq_ignore_ascii_case("HMSG") {
            // The last token is the payload size (headers included).
            let size: usize = text
                .split_ascii_whitespace()
                .last()
                .and_then(|s| s.parse().ok())
                .expect("a MSG size");
            let mut payload = vec![0u8; size + 2];
            if from.read_exact(&mut payload).is_err() {
                break;
            }
            let body = String::from_utf8_lossy(&payload[..size]);
            is_ack = op.eq_ignore_ascii_case("MSG")
                && body.starts_with("{\"stream\":")
                && body.contains("\"seq\":")
                && !body.contains("\"error\"");
            is_heartbeat = op.eq_ignore_ascii_case("HMSG") && body.starts_with("NATS/1.0 100");
            frame.extend_from_slice(&payload);
        }
        if is_ack
            && rules
                .armed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            rules.dropped.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        if is_heartbeat && rules.no_heartbeats.load(Ordering::SeqCst) {
            continue;
        }
        if is_heartbeat && rules.false_heartbeats.load(Ordering::SeqCst) {
            frame = falsified(&frame, |sent| sent + 1_000_000);
        }
        let generation = rules.stall_generation.load(Ordering::SeqCst);
        if generation != stalled_at {
            stalled_at = generation;
            stalled.extend(passed.keys().cloned());
        }
        // Deliveries come on the message's own subject: the subscription
        // id (`sid`) names the consumer's subscription.
        let sid = text.split_ascii_whitespace().nth(2).unwrap_or("");
        let stuck = stalled.contains(sid);
        if let Some(consumer_seq) = delivery(&text) {
            if stuck {
                continue;
            }
            passed.insert(sid.to_owned(), consumer_seq);
        }
        if is_heartbeat {
            // A consumer that delivered nothing yet is known by its
            // heartbeats (it has delivered up to 0).
            passed.entry(sid.to_owned()).or_insert(0);
        }
        if is_heartbeat && stuck {
            let last = passed.get(sid).copied().unwrap_or(0);
            frame = falsified(&frame, |_| last);
        }
        if client.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

//! A loopback TCP proxy in front of one NATS server that can lose
//! JetStream publish acknowledgements on demand: the lost-ack case of the
//! issue ("a publish whose acknowledgement is lost is retried with the same
//! `Nats-Msg-Id`, so it is stored once"), made deterministic.
//!
//! Client → server bytes pass unchanged. Server → client bytes are parsed
//! as NATS protocol operations (`MSG`/`HMSG` with their payloads, every
//! other operation one line); while armed, a `MSG` (no headers) whose
//! payload is a publish acknowledgement (`{"stream":…,"seq":…}`, no
//! `"error"`) is swallowed and the count goes down. Everything else passes:
//! events pushed to consumers come as `HMSG`, API replies are not acks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// See the module docs.
pub struct AckDropper {
    port: u16,
    armed: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl AckDropper {
    /// Listens on a free loopback port, forwarding each connection to
    /// `upstream` (`host:port`).
    pub fn start(upstream: &str) -> AckDropper {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let armed = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_owned();
        let (a, d) = (Arc::clone(&armed), Arc::clone(&dropped));
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
                let (a, d) = (Arc::clone(&a), Arc::clone(&d));
                thread::spawn(move || filter(server, client, &a, &d));
            }
        });
        AckDropper {
            port,
            armed,
            dropped,
        }
    }

    /// The URL to give the client.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Loses the next `n` publish acknowledgements.
    pub fn drop_next_acks(&self, n: usize) {
        self.armed.fetch_add(n, Ordering::SeqCst);
    }

    /// Acknowledgements lost so far.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn filter(server: TcpStream, mut client: TcpStream, armed: &AtomicUsize, dropped: &AtomicUsize) {
    let mut from = BufReader::new(server);
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
            frame.extend_from_slice(&payload);
        }
        if is_ack
            && armed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            dropped.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        if client.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

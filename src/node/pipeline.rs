//! The node's threads: a reader, a pool of workers, an in-order apply step
//! and a reorder buffer — the LMAX shape, sized for a few cores.
//!
//! ```text
//!             batches of whole lines              in batch order            any order → input order
//!   stdin ──► reader ──(bounded channel)──► worker: decode ─► [apply] ─► encode ──► reorder buffer ──► stdout
//!                                          worker: decode ─► [apply] ─► encode ──┘
//! ```
//!
//! - The **reader** (the calling thread) cuts stdin into batches of whole
//!   lines, one batch per `read`, never waiting for more input
//!   (`lines.rs`).
//! - **Workers** take batches from a bounded channel (backpressure: the
//!   reader stops reading when all workers are busy and the queue is full).
//!   Each decodes its whole batch in parallel with the others, and looks
//!   up the aggregates its appends go to (`protocol::resolve`), so the
//!   serial step does not pay for the map lookup's cache misses.
//! - **Apply** (`sequencer.rs`) is the one serial step: a worker applies its
//!   batch to the store only when every earlier batch has been applied, so
//!   state changes take effect in input order and every reply equals what
//!   one-at-a-time processing gives, whatever the worker count. Apply does
//!   O(1) work per read (it captures plans, see `protocol::handler`).
//! - Workers then **encode** replies in parallel (folds, event formatting)
//!   into a bounded per-batch sink, which writes them out in input order
//!   (`output.rs`): a small batch goes out with one `write` by
//!   whichever worker completes the batch next in line, a large one is
//!   streamed as it is made, so reply memory stays bounded.
//!
//! - **Durable nodes** add one thread, the sync loop: a batch's replies are
//!   written only once the log is durable up to the position its apply step
//!   reached; when the batch next in line waits for that, the loop syncs
//!   everything applied so far (group commit) and releases every batch it
//!   covers. Workers never wait for the disk. If the disk fails, every
//!   reply not yet written becomes error 13, and so does every later one;
//!   the node reads on to the end of input and then reports the failure.
//!
//! - **Nodes with a replicated backend** (JetStream) add one thread, the
//!   idle pusher (`idle.rs`): when the view receives events from other
//!   front ends while no input comes, it takes a turn of its own (a
//!   *virtual batch*, numbered like the reader's batches) and writes their
//!   `event` messages to the subscribers.
//!
//! With one worker, everything runs on the calling thread with no threads or
//! channels at all (and a durable node syncs once per input batch), the
//! idle pusher of a replicated node aside.

use super::idle;
use super::lines::{Lines, read_batches};
use super::output::{BatchSink, Output};
use super::sequencer::Sequencer;
use crate::protocol::{
    Core, Message, Outcome, ReplySource, decode, encode, encode_error_head, resolve,
};
use crate::store::EventStore;
use crossbeam::channel;
use std::io::{self, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// How the node runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Worker threads (1: everything on the calling thread).
    pub workers: usize,
    /// Longest accepted input line, in bytes (without its newline).
    pub max_line_bytes: usize,
    /// Where a durable node keeps its log (`None`: in memory).
    pub data_dir: Option<std::path::PathBuf>,
    /// When a durable node calls `fdatasync`.
    pub fsync: crate::storage::FsyncPolicy,
    /// Replies a batch buffers before writing them out (see
    /// `node/output.rs`).
    pub reply_buffer_bytes: usize,
    /// Where writes go when the log is replicated (`None`: the store
    /// itself; see `protocol/backend.rs`).
    pub backend: Option<Arc<dyn crate::protocol::Backend>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: default_workers(),
            max_line_bytes: super::DEFAULT_MAX_LINE_BYTES,
            data_dir: None,
            fsync: crate::storage::FsyncPolicy::Always,
            reply_buffer_bytes: super::FLUSH_BYTES,
            backend: None,
        }
    }
}

/// Twice the cores: a worker waiting for its turn to apply sleeps, and a
/// second worker per core decodes or encodes meanwhile (measured on 2
/// cores, 1M requests: 2 workers 1.62 s, 4 workers 1.00 s, 6 workers 1.02 s).
pub fn default_workers() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Largest batch the reader processes itself when no batch is queued for
/// the workers (see `run_parallel`). A saturated pipe delivers 64 KiB or
/// more per read, so this only catches input that trickles in, where
/// handing the batch to a worker would add a futex wake-up of another
/// thread (tens of µs on a VM whose vCPU idles) to every reply.
const INLINE_BATCH_BYTES: usize = 4 * 1024;

fn too_long(len: usize, max: usize) -> String {
    format!("line ignored: {len} bytes, longer than --max-line-bytes {max}")
}

/// Typical request line length, for sizing a batch's message vector
/// up front (a `Message` is large: regrowing the vector costs copies).
const TYPICAL_LINE_BYTES: usize = 160;

fn decode_batch(batch: &[u8], max_line_bytes: usize) -> Vec<Message<'_>> {
    let mut messages = Vec::with_capacity(batch.len() / TYPICAL_LINE_BYTES + 1);
    messages.extend(Lines::new(batch).map(|line| {
        if line.len() > max_line_bytes {
            Message::Unanswerable(too_long(line.len(), max_line_bytes))
        } else {
            decode(line)
        }
    }));
    messages
}

fn encode_batch<W: Write>(
    store: &EventStore,
    messages: &[Message<'_>],
    mut outcomes: Vec<(ReplySource, Outcome)>,
    sink: &mut BatchSink<'_, W>,
) {
    // A replicated node: wait for the batch's last write first (see
    // `Ticket::settle`).
    if let Some(ticket) = outcomes.iter_mut().rev().find_map(|(_, o)| o.ticket()) {
        ticket.settle();
    }
    let heads = sink.wants_heads();
    let mut diagnostics = String::new();
    for (message, (source, outcome)) in messages.iter().zip(outcomes) {
        if heads {
            encode_error_head(message, &source, sink.heads());
        }
        if let Some(why) = encode(store, message, source, outcome, sink) {
            diagnostics.push_str(&why);
            diagnostics.push('\n');
        }
    }
    if !diagnostics.is_empty() {
        // Diagnostics are best effort: a closed stderr must not stop replies.
        let _ = io::stderr().lock().write_all(diagnostics.as_bytes());
    }
}

fn report_skipped(len: usize, max: usize) {
    let _ = writeln!(io::stderr().lock(), "{}", too_long(len, max));
}

/// Runs the node until `input` ends (or `output` closes), writing replies to
/// `output`. On a durable store, each reply is written only after the
/// records of its request and of every request before it are durable (one
/// sync per batch at most: group commit). Returns an error if reading the
/// input failed, or if persisting failed (after answering every request,
/// those from the failure on with error 13).
pub fn run(
    config: &Config,
    store: Arc<EventStore>,
    input: impl Read,
    output: impl Write + Send,
) -> io::Result<()> {
    if config.workers <= 1 {
        run_serial(config, store, input, output)
    } else {
        run_parallel(config, store, input, output)
    }
}

fn run_serial(
    config: &Config,
    store: Arc<EventStore>,
    input: impl Read,
    output: impl Write + Send,
) -> io::Result<()> {
    let max = config.max_line_bytes;
    let output = Output::new(output, store.is_durable(), 1, config.reply_buffer_bytes);
    // The core sits behind the sequencer (an uncontended lock per batch)
    // so that the idle pusher of a node with a backend can take turns too.
    let sequencer = Sequencer::new(Core::with_backend(
        Arc::clone(&store),
        config.backend.clone(),
    ));
    std::thread::scope(|scope| {
        let _idle = idle::start(scope, config.backend.as_ref(), &sequencer, &output, &store);
        read_batches(
            input,
            max,
            |batch| {
                let index = sequencer.take();
                let mut sink = output.sink(index, batch.len());
                let work = catch_unwind(AssertUnwindSafe(|| {
                    let mut messages = decode_batch(&batch, max);
                    let (outcomes, position) = sequencer.in_turn(index, |core| {
                        let outcomes: Vec<_> = messages.iter_mut().map(|m| core.apply(m)).collect();
                        (outcomes, core.store().wal_position())
                    });
                    if store.is_durable() {
                        output.synced(store.sync().map(|()| position));
                    }
                    sink.set_position(position);
                    encode_batch(&store, &messages, outcomes, &mut sink);
                }));
                if let Err(panic) = work {
                    // Release the output (an idle pusher may wait for this
                    // batch's turn), then fail as before.
                    sink.finish(true);
                    std::panic::resume_unwind(panic);
                }
                sink.finish(false);
                !output.is_closed()
            },
            |len| report_skipped(len, max),
        )
    })?;
    output.into_failure().map_or(Ok(()), |e| Err(e.into()))
}

fn run_parallel(
    config: &Config,
    store: Arc<EventStore>,
    input: impl Read,
    output: impl Write + Send,
) -> io::Result<()> {
    let max = config.max_line_bytes;
    let sequencer = Sequencer::new(Core::with_backend(
        Arc::clone(&store),
        config.backend.clone(),
    ));
    let durable = store.is_durable();
    // The workers, plus the reader, which processes small batches itself.
    let output = Output::new(
        output,
        durable,
        config.workers + 1,
        config.reply_buffer_bytes,
    );
    let (tx, rx) = channel::bounded::<(u64, Vec<u8>)>(config.workers * 2);

    // One batch, start to finish: decode and resolve (parallel), apply (in
    // turn), encode (parallel) into the batch's sink, which writes in turn.
    let process = |index: u64, batch: Vec<u8>| {
        let mut sink = output.sink(index, batch.len());
        let mut applied = false;
        let work = catch_unwind(AssertUnwindSafe(|| {
            let mut messages = decode_batch(&batch, max);
            for message in &mut messages {
                resolve(&store, message);
            }
            let (outcomes, position) = sequencer.in_turn(index, |core| {
                applied = true;
                let outcomes: Vec<_> = messages.iter_mut().map(|m| core.apply(m)).collect();
                (outcomes, core.store().wal_position())
            });
            sink.set_position(position);
            encode_batch(&store, &messages, outcomes, &mut sink);
        }));
        let _abort = AbortOnPanic;
        if work.is_err() {
            report_bug(index);
            if !applied {
                // Keep the batches after it going: take its turn, apply nothing.
                sequencer.in_turn(index, |_| ());
            }
        }
        sink.finish(work.is_err());
    };

    std::thread::scope(|scope| {
        if durable {
            scope.spawn(|| {
                let _abort = AbortOnPanic;
                output.sync_loop(&store);
            });
        }
        for _ in 0..config.workers {
            let rx = rx.clone();
            let (process, output) = (&process, &output);
            scope.spawn(move || {
                for (index, batch) in rx {
                    process(index, batch);
                }
                output.producer_done();
            });
        }
        drop(rx);
        let idle = idle::start(scope, config.backend.as_ref(), &sequencer, &output, &store);
        let result = read_batches(
            input,
            max,
            |batch| {
                if output.is_closed() {
                    return false;
                }
                let index = sequencer.take();
                if batch.len() <= INLINE_BATCH_BYTES && tx.is_empty() {
                    // A small batch while the workers have nothing queued:
                    // the input trickles in (a client waiting for each
                    // reply). Handing it to a worker would add a thread
                    // wake-up to its latency; process it here instead.
                    process(index, batch);
                    true
                } else {
                    tx.send((index, batch)).is_ok()
                }
            },
            |len| report_skipped(len, max),
        );
        drop(idle);
        drop(tx);
        output.producer_done();
        result
    })?;
    output.into_failure().map_or(Ok(()), |e| Err(e.into()))
}

/// Turns a panic outside the per-batch `catch_unwind` — in the output's
/// bookkeeping or the sync loop, i.e. a broken invariant — into an abort:
/// the other threads wait for this one's turn, so going on would hang the
/// node for ever instead of failing loudly.
struct AbortOnPanic;

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = writeln!(
                io::stderr().lock(),
                "internal error: the node's output failed an invariant; aborting"
            );
            std::process::abort();
        }
    }
}

fn report_bug(index: u64) {
    let _ = writeln!(
        io::stderr().lock(),
        "internal error: a worker panicked on input batch {index}; its replies are lost, the node goes on"
    );
}

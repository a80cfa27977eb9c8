//! The node's output: replies in input order, streamed out under a memory
//! bound, each released only once the log is durable up to it.
//!
//! Input is cut into batches numbered in input order. Each batch's replies
//! are encoded by one thread into a [`BatchSink`]; batch `i` may write to
//! stdout only when batches `0..i` are written (its *turn*) and the log is
//! durable up to the position its apply step reached.
//!
//! # The memory bound
//!
//! Replies are never gathered per input read. A batch holds at most
//! `flush_bytes` ([`FLUSH_BYTES`] by default) of replies (plus the one piece being written, at most one
//! event or one folded state): once its buffer reaches that, it writes the
//! buffer out, first waiting for its turn if it must. A batch that finishes
//! with less is *deposited* whole, so that the thread can move on, and is
//! written by whichever thread completes the batch next in line (one
//! `write` per small batch, as before); deposits wait for room once
//! [`PENDING_BUFFERS`] × `flush_bytes` are waiting. So reply memory stays
//! below `(threads + PENDING_BUFFERS) × flush_bytes` plus the largest single
//! event or
//! state, whatever the requests: a stream of reads each returning 10,000
//! large events needs no more than one of them, and a reply is written
//! while it is still being made.
//!
//! # Durability and storage failure
//!
//! On a durable node a batch is released only once the log is durable up
//! to its position: the sync loop ([`Output::sync_loop`]) syncs whenever
//! the batch next in line waits for that (group commit). A batch keeps,
//! next to its replies, the *head* of each one as an error reply
//! (`protocol::encode_error_head`). If a sync fails, every batch not yet
//! released is written as error 13 from those heads instead: a request
//! applied but not durable is never acknowledged, and a read that might
//! have seen such a request is not answered either. A batch that has begun
//! writing was already durable, so it always completes normally.
//!
//! # Locking
//!
//! One mutex guards the output and its bookkeeping; it is held across the
//! `write` calls themselves, so bytes of two batches never interleave and
//! a slow reader of stdout holds back writers (backpressure), never memory.
//! Threads wait on `turn` for their turn or for room; the sync loop waits
//! on `sync_wanted`.

use crate::error::StorageError;
use crate::protocol::{Code, ReplySink, finish_error};
use crate::store::EventStore;
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// By default a batch writes out its buffered replies once they reach this
/// size (`--reply-buffer-bytes`).
pub const FLUSH_BYTES: usize = 256 * 1024;

/// Finished batches waiting for earlier ones may hold this many times the
/// reply buffer in total (1 MiB by default); a thread that finishes a batch
/// beyond that waits for its turn.
pub const PENDING_BUFFERS: usize = 4;

/// A finished batch waiting for its turn or for durability.
struct Finished {
    replies: Vec<u8>,
    /// Error-reply heads, one per line (durable nodes only).
    heads: Vec<u8>,
    position: u64,
}

impl Finished {
    /// What it counts against the room for waiting batches: its bytes,
    /// plus a little for the entry itself, so that batches without
    /// replies cannot pile up either.
    fn cost(&self) -> usize {
        self.replies.len() + self.heads.len() + 64
    }
}

struct State<W> {
    output: W,
    /// The batch whose turn it is to write.
    next: u64,
    pending: BTreeMap<u64, Finished>,
    pending_bytes: usize,
    /// Log position known durable (`u64::MAX` in memory).
    durable: u64,
    /// The position the batch in turn waits for while writing part of its
    /// replies (0: none waits).
    turn_wants: u64,
    /// Threads still producing batches; the sync loop ends when none are
    /// and nothing waits for a sync.
    producers: usize,
    /// stdout is closed: nothing more is written.
    closed: bool,
    /// The log failed: nothing more is released as is.
    failure: Option<StorageError>,
}

/// Ordered, bounded, durability-gated output; see the module docs.
pub struct Output<W> {
    state: Mutex<State<W>>,
    /// Signalled whenever `next` advances, `durable` rises, or the output
    /// closes or fails.
    turn: Condvar,
    sync_wanted: Condvar,
    durable_store: bool,
    flush_bytes: usize,
    /// `State::closed`, readable without the lock (the reader checks it
    /// once per batch). Relaxed: a hint to stop reading; nothing is
    /// published through it.
    closed: AtomicBool,
}

/// What became of a write attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Written,
    /// Nothing more of this batch will be written as made (stdout closed,
    /// or the log failed before the batch was durable).
    Stopped,
}

impl<W: Write> Output<W> {
    /// Output to `output` for `producers` threads; `durable_store` says
    /// whether replies must wait for durability; each batch buffers up to
    /// `flush_bytes` (at least 1) before writing out.
    pub fn new(output: W, durable_store: bool, producers: usize, flush_bytes: usize) -> Output<W> {
        Output {
            state: Mutex::new(State {
                output,
                next: 0,
                pending: BTreeMap::new(),
                pending_bytes: 0,
                durable: if durable_store { 0 } else { u64::MAX },
                turn_wants: 0,
                producers,
                closed: false,
                failure: None,
            }),
            turn: Condvar::new(),
            sync_wanted: Condvar::new(),
            durable_store,
            flush_bytes: flush_bytes.max(1),
            closed: AtomicBool::new(false),
        }
    }

    /// A sink for batch `index`'s replies, whose input was `input_bytes`
    /// long (replies are about as long: the buffer starts at that size, up
    /// to the flush size).
    pub fn sink(&self, index: u64, input_bytes: usize) -> BatchSink<'_, W> {
        BatchSink {
            output: self,
            index,
            position: 0,
            replies: Vec::with_capacity(input_bytes.min(self.flush_bytes)),
            heads: Vec::new(),
            streamed: false,
            stopped: false,
            ended_line: true,
        }
    }

    /// Whether stdout is closed (the reader may stop reading).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// A producing thread is done.
    pub fn producer_done(&self) {
        self.state.lock().producers -= 1;
        self.sync_wanted.notify_one();
    }

    /// Records the outcome of a sync up to `position` done by the caller
    /// (the single-threaded node syncs itself, in line).
    pub fn synced(&self, result: Result<u64, StorageError>) {
        let mut s = self.state.lock();
        match result {
            Ok(position) => s.durable = s.durable.max(position),
            Err(e) => {
                s.failure.get_or_insert(e);
            }
        }
        self.release(&mut s);
    }

    /// The storage failure, once the output is done with.
    pub fn into_failure(self) -> Option<StorageError> {
        self.state.into_inner().failure
    }

    /// The group-commit loop of a durable node: whenever the batch in turn
    /// waits for its records to be durable, sync everything applied so far
    /// (usually several batches' worth) and release what that covers.
    /// Returns once no producer is left and nothing waits, or the log failed.
    pub fn sync_loop(&self, store: &EventStore) {
        let mut s = self.state.lock();
        loop {
            while !s.needs_sync() && s.producers > 0 && s.failure.is_none() {
                self.sync_wanted.wait(&mut s);
            }
            if !s.needs_sync() {
                return;
            }
            drop(s);
            let target = store.wal_position();
            let result = store.sync_to(target).map(|()| target);
            let failed = result.is_err();
            s = self.state.lock();
            match result {
                Ok(position) => s.durable = s.durable.max(position),
                Err(e) => {
                    s.failure.get_or_insert(e);
                }
            }
            self.release(&mut s);
            if failed {
                return;
            }
        }
    }

    /// Writes part of batch `index`'s replies, waiting for its turn and for
    /// durability up to `position`.
    fn stream(&self, index: u64, position: u64, bytes: &[u8]) -> Flow {
        let mut s = self.state.lock();
        loop {
            if s.closed {
                return Flow::Stopped;
            }
            if s.next == index {
                if position <= s.durable {
                    s.write(bytes);
                    self.mirror_closed(&s);
                    if s.closed {
                        // Everyone waiting must learn that nothing more goes out.
                        self.turn.notify_all();
                    }
                    return if s.closed {
                        Flow::Stopped
                    } else {
                        Flow::Written
                    };
                }
                if s.failure.is_some() {
                    return Flow::Stopped;
                }
                s.turn_wants = position;
                self.sync_wanted.notify_one();
            }
            self.turn.wait(&mut s);
        }
    }

    /// Batch `index` is done: writes or deposits the rest of its replies.
    fn finish(&self, index: u64, batch: Finished, streamed: bool) {
        let mut s = self.state.lock();
        if streamed {
            // It holds the turn and was durable when it began writing.
            assert_eq!(s.next, index, "a batch that streamed lost its turn");
            assert!(
                batch.position <= s.durable,
                "a batch streamed before durable"
            );
            s.write(&batch.replies);
            s.next += 1;
            s.turn_wants = 0;
            self.mirror_closed(&s);
        } else {
            let room = PENDING_BUFFERS * self.flush_bytes;
            let cost = batch.cost();
            while !s.closed && s.next != index && s.pending_bytes + cost > room {
                self.turn.wait(&mut s);
            }
            if s.closed {
                // `release` wakes whoever waits, so they see it too.
                self.release(&mut s);
                return;
            }
            s.pending_bytes += cost;
            let earlier = s.pending.insert(index, batch);
            assert!(earlier.is_none(), "batch {index} finished twice");
        }
        self.release(&mut s);
    }

    /// Copies `closed` to the lock-free hint.
    fn mirror_closed(&self, s: &State<W>) {
        if s.closed {
            self.closed.store(true, Ordering::Relaxed);
        }
    }

    /// Writes, in turn, every deposited batch that may be written; wakes
    /// whoever that concerns.
    fn release(&self, s: &mut State<W>) {
        while !s.closed
            && let Some(entry) = s.pending.first_entry()
            && *entry.key() == s.next
        {
            let position = entry.get().position;
            if position > s.durable && s.failure.is_none() {
                break;
            }
            let batch = entry.remove();
            s.pending_bytes -= batch.cost();
            if position <= s.durable {
                s.write(&batch.replies);
            } else {
                // Not durable, yet released: only after a failure (above).
                let Some(failure) = &s.failure else {
                    panic!("a batch released before it is durable, with no failure");
                };
                let text = failure.to_string();
                let mut replies = Vec::with_capacity(batch.heads.len() * 2);
                for head in batch.heads.split(|&b| b == b'\n').filter(|h| !h.is_empty()) {
                    finish_error(head, Code::Crash, &text, &mut replies);
                }
                s.write(&replies);
            }
            s.next += 1;
        }
        if s.closed {
            s.pending.clear();
            s.pending_bytes = 0;
        }
        self.mirror_closed(s);
        // Wake the thread in turn (or waiting for room) when anything moved,
        // and the sync loop when the batch in turn needs it. (Both are a
        // plain atomic check when nobody waits.)
        // `durable` may have risen for a thread waiting in turn.
        self.turn.notify_all();
        if s.needs_sync() {
            self.sync_wanted.notify_one();
        }
    }
}

impl<W: Write> State<W> {
    fn write(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.closed {
            return;
        }
        // A closed stdout ends the node quietly.
        self.closed = self
            .output
            .write_all(bytes)
            .and_then(|()| self.output.flush())
            .is_err();
    }

    /// Whether the batch in turn waits only for a sync.
    fn needs_sync(&self) -> bool {
        if self.failure.is_some() || self.closed {
            return false;
        }
        let deposited = self
            .pending
            .first_key_value()
            .is_some_and(|(&i, b)| i == self.next && b.position > self.durable);
        deposited || self.turn_wants > self.durable
    }
}

/// Where one batch's replies are encoded: a bounded buffer that writes
/// itself out in turn (see the module docs).
pub struct BatchSink<'a, W: Write> {
    output: &'a Output<W>,
    index: u64,
    position: u64,
    replies: Vec<u8>,
    heads: Vec<u8>,
    /// Part of the batch is written: it holds the turn.
    streamed: bool,
    /// Nothing more is written as made (see [`Flow::Stopped`]).
    stopped: bool,
    /// What was written so far ends with a whole line.
    ended_line: bool,
}

impl<W: Write> BatchSink<'_, W> {
    /// The log position the batch's replies depend on (set after apply).
    pub fn set_position(&mut self, position: u64) {
        self.position = position;
    }

    /// Whether error heads must be kept (a durable store).
    pub fn wants_heads(&self) -> bool {
        self.output.durable_store
    }

    /// The error heads buffer (see `protocol::encode_error_head`).
    pub fn heads(&mut self) -> &mut Vec<u8> {
        &mut self.heads
    }

    /// The batch is done (also after a panic while encoding it: whatever it
    /// buffered is dropped, and the batches after it go on).
    pub fn finish(mut self, panicked: bool) {
        if panicked || self.stopped {
            self.replies.clear();
        }
        if panicked && self.streamed && !self.ended_line {
            // End the reply cut short, so that the next batch's first reply
            // is not glued onto it (the cut line itself is lost).
            self.replies.push(b'\n');
        }
        let batch = Finished {
            replies: std::mem::take(&mut self.replies),
            heads: std::mem::take(&mut self.heads),
            position: self.position,
        };
        self.output.finish(self.index, batch, self.streamed);
    }

    fn write_out(&mut self) {
        if !self.stopped
            && self.output.stream(self.index, self.position, &self.replies) == Flow::Written
        {
            self.streamed = true;
            self.ended_line = self.replies.last() == Some(&b'\n');
        } else {
            self.stopped = true;
        }
        self.replies.clear();
    }
}

impl<W: Write> ReplySink for BatchSink<'_, W> {
    fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.replies
    }

    fn boundary(&mut self) {
        if self.replies.len() >= self.output.flush_bytes {
            self.write_out();
        }
    }

    fn before_long_reply(&mut self) {
        if self.replies.is_empty() || self.stopped {
            return;
        }
        // Only if that needs no waiting: the batch is in turn and durable.
        let ready = {
            let s = self.output.state.lock();
            s.next == self.index && self.position <= s.durable && !s.closed
        };
        if ready {
            self.write_out();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A shared byte sink that fails every write after the first `ok`.
    #[derive(Clone)]
    struct Pipe {
        bytes: Arc<Mutex<Vec<u8>>>,
        ok: usize,
        writes: Arc<Mutex<usize>>,
    }

    use std::sync::Arc;

    impl Pipe {
        fn new(ok: usize) -> Pipe {
            Pipe {
                bytes: Arc::default(),
                ok,
                writes: Arc::default(),
            }
        }
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().clone()).unwrap()
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut writes = self.writes.lock();
            *writes += 1;
            if *writes > self.ok {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            self.bytes.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` on another thread; fails if it does not end within 30 s
    /// (a hang is the bug these tests look for).
    fn within_30s(f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("threads still waiting after 30 s: a lost wake-up");
    }

    /// Batch `i` has `i % 5 + 1` replies of a few bytes each.
    fn replies(i: u64) -> Vec<String> {
        (0..i % 5 + 1).map(|r| format!("b{i}r{r}\n")).collect()
    }

    /// `threads` threads encode `batches` batches, taking them in order
    /// but finishing them out of order, with `flush_bytes`.
    fn run(out: &Output<Pipe>, batches: u64, threads: u64) {
        std::thread::scope(|scope| {
            for t in 0..threads {
                scope.spawn(move || {
                    for i in (t..batches).step_by(threads as usize) {
                        let mut sink = out.sink(i, 0);
                        for reply in replies(i) {
                            sink.buffer().extend_from_slice(reply.as_bytes());
                            sink.boundary();
                        }
                        sink.finish(false);
                    }
                    out.producer_done();
                });
            }
        });
    }

    #[test]
    fn batches_come_out_whole_and_in_order_for_any_buffer_size() {
        for flush_bytes in [1, 7, 64, FLUSH_BYTES] {
            let pipe = Pipe::new(usize::MAX);
            let text = pipe.clone();
            within_30s(move || {
                let out = Output::new(pipe, false, 4, flush_bytes);
                run(&out, 200, 4);
            });
            let expected: String = (0..200).flat_map(replies).collect();
            assert_eq!(text.text(), expected, "flush_bytes {flush_bytes}");
        }
    }

    #[test]
    fn a_closed_output_stops_every_thread() {
        // The output closes on the 3rd write, while other threads wait for
        // their turn (in `stream`) or for room (in `finish`).
        for flush_bytes in [1, 10, 1000] {
            let pipe = Pipe::new(2);
            within_30s(move || {
                let out = Output::new(pipe, false, 4, flush_bytes);
                run(&out, 300, 4);
                assert!(out.is_closed());
            });
        }
    }

    #[test]
    fn nothing_is_written_before_it_is_durable_and_a_failure_turns_it_into_errors() {
        let pipe = Pipe::new(usize::MAX);
        let out = Output::new(pipe.clone(), true, 1, 1);
        // Batch 0 at position 10: held back until synced to 10.
        let mut sink = out.sink(0, 0);
        sink.set_position(10);
        sink.heads().extend_from_slice(b"{\"h\":0\n");
        sink.buffer().extend_from_slice(b"reply 0\n");
        sink.finish(false);
        assert_eq!(pipe.text(), "");
        out.synced(Ok(9));
        assert_eq!(pipe.text(), "");
        out.synced(Ok(10));
        assert_eq!(pipe.text(), "reply 0\n");
        // Batch 1 at position 20: the sync fails, its replies become
        // errors built from its heads.
        let mut sink = out.sink(1, 0);
        sink.set_position(20);
        sink.heads().extend_from_slice(b"{\"h\":1\n{\"h\":2\n");
        sink.buffer().extend_from_slice(b"reply 1\nreply 2\n");
        sink.finish(false);
        let failure = StorageError::new("writing x", io::Error::from(io::ErrorKind::StorageFull));
        out.synced(Err(failure.clone()));
        let text = pipe.text();
        assert!(!text.contains("reply 1"), "{text}");
        assert_eq!(text.matches("\"code\":13").count(), 2, "{text}");
        assert!(text.contains(&failure.to_string()), "{text}");
        assert_eq!(out.into_failure(), Some(failure));
    }
}

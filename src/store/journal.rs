//! The journaller: durability as a consumer of the log.
//!
//! Appends no longer pass through a serial section, so nothing orders their
//! WAL records but the log itself. One writer at a time (the *turn*) follows
//! the published log in sequence order: each round serialises every commit
//! between what has been written and the current head into the WAL's
//! pending buffer (one [`Wal::append`]), then the snapshot records whose
//! events are written. Records therefore lie in the file in sequence order,
//! and a snapshot record after every event it covers, which is what
//! recovery checks. The journal thread takes rounds in the background (woken
//! by snapshots and waiters, or every 50 ms); a thread waiting for its
//! records takes a round itself when the turn is free, so a lone writer
//! pays no thread hand-off.
//!
//! Waiting for durability ([`Journal::sync_through`]): until the records in
//! question are *written* (`written_seq`), then [`Wal::sync`] up to the WAL
//! position after them: the WAL's group commit, where the first waiter in
//! swaps out and `fdatasync`s whatever piled up and the ones queued behind
//! it find their position covered: N threads waiting at once share one
//! sync. The in-memory append path never takes the turn; only durability
//! waits for it (and for the disk).
//!
//! The WAL's failure rules are the WAL's own (`storage/wal.rs`): after
//! the first error every later sync reports it, so nothing after a gap is
//! ever acknowledged.
//!
//! # Orderings
//!
//! The journaller stores `written_lsn` before `written_seq` and
//! `written_snaps`, all `Release`; a waiter `Acquire`-loads the counter it
//! waits on, then `written_lsn`, which is therefore at least the position
//! after the records counted.

use crate::error::StorageError;
use crate::ids::IdScheme;
use crate::log::{Commit, Log};
use crate::storage::Wal;
use crate::storage::record::{self, EventRecord};
use crate::types::{SequenceNumber, Version};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A snapshot record waiting for the events it covers to be written.
struct SnapshotJob {
    /// Written once every sequence number up to this one is.
    cover: u64,
    aggregate_id: Box<str>,
    version: Version,
    state: Option<Box<str>>,
}

struct Shared {
    wal: Wal,
    log: Arc<Log>,
    ids: IdScheme,
    /// Sequence numbers through which append records are in the WAL.
    written_seq: AtomicU64,
    /// Snapshot records in the WAL.
    written_snaps: AtomicU64,
    /// WAL position after the last record written.
    written_lsn: AtomicU64,
    /// Snapshot records queued (counted in `queued_snaps`).
    snapshots: Mutex<VecDeque<SnapshotJob>>,
    queued_snaps: AtomicU64,
    /// The right to write records: the journal thread's, or a waiter's
    /// that found it free (`try_lock`). Never taken by the in-memory
    /// append path.
    turn: Mutex<()>,
    /// Held by the one waiter running [`Wal::sync`] for all (`sync_to`).
    syncing: Mutex<()>,
    /// Signalled after every round that wrote something and every sync.
    progress: Mutex<()>,
    progressed: Condvar,
    stop: AtomicBool,
}

/// The journaller of a durable store. Dropping it writes and syncs what
/// is left, then stops the thread.
pub(crate) struct Journal {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Journal {
    /// Starts journalling `log` into `wal`, whose file already holds every
    /// event up to the log's current head (recovered from it).
    pub(crate) fn start(wal: Wal, log: Arc<Log>, ids: IdScheme) -> io::Result<Journal> {
        let head = log.head();
        // Everything recovered is durable (the file was read back, its torn
        // tail cut and synced): subscribers may see it.
        wal.mark_durable_seq(head);
        let shared = Arc::new(Shared {
            wal,
            log,
            ids,
            written_seq: AtomicU64::new(head),
            written_snaps: AtomicU64::new(0),
            written_lsn: AtomicU64::new(0),
            snapshots: Mutex::new(VecDeque::new()),
            queued_snaps: AtomicU64::new(0),
            turn: Mutex::new(()),
            syncing: Mutex::new(()),
            progress: Mutex::new(()),
            progressed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("eventstore-journal".into())
            .spawn(move || for_thread.run())?;
        Ok(Journal {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues a snapshot record, written once sequence numbers up to
    /// `cover` are.
    pub(crate) fn snapshot(
        &self,
        cover: SequenceNumber,
        aggregate_id: &str,
        version: Version,
        state: Option<&str>,
    ) {
        let mut queue = self.shared.snapshots.lock();
        queue.push_back(SnapshotJob {
            cover: cover.0,
            aggregate_id: aggregate_id.into(),
            version,
            state: state.map(Into::into),
        });
        // Under the queue's lock, so the count matches the queue's order.
        self.shared.queued_snaps.fetch_add(1, Ordering::Relaxed);
        drop(queue);
        self.wake();
    }

    fn wake(&self) {
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// Waits until the journaller has written the records of sequence
    /// numbers through `seq` and `snaps` snapshot records; returns the WAL
    /// position after them.
    fn written(&self, seq: u64, snaps: u64) -> u64 {
        let s = &self.shared;
        // Acquire (counters), then the position: see the module docs.
        let done = || {
            s.written_seq.load(Ordering::Acquire) >= seq
                && s.written_snaps.load(Ordering::Acquire) >= snaps
        };
        while !done() {
            // Take the journaller's turn if it is free: no thread hand-off
            // when nobody is writing (one writer alone pays no wake-up).
            if let Some(_turn) = s.turn.try_lock() {
                s.round_and_notify();
                continue;
            }
            // The holder notifies (under `progress`) after its round, and
            // `done` is re-checked under `progress`: no lost wake-up.
            let mut guard = s.progress.lock();
            if done() {
                break;
            }
            // A journaller that stopped (it asserts impossible states)
            // will never write more: fail loudly rather than hang.
            assert!(
                self.thread.as_ref().is_some_and(|t| !t.is_finished()),
                "the journal thread stopped"
            );
            s.progressed.wait_for(&mut guard, Duration::from_millis(10));
        }
        s.written_lsn.load(Ordering::Acquire)
    }

    /// The WAL position after every append and snapshot made so far
    /// (waiting for the journaller to write them).
    pub(crate) fn position(&self) -> u64 {
        let snaps = self.shared.queued_snaps.load(Ordering::Relaxed);
        let head = self.shared.log.head();
        self.written(head, snaps)
    }

    /// Makes the appends through `seq` durable, and records that they are
    /// (see [`Journal::durable_seq`]).
    pub(crate) fn sync_through(&self, seq: u64) -> Result<(), StorageError> {
        let lsn = self.written(seq, 0);
        self.sync_to(lsn)?;
        self.shared.wal.mark_durable_seq(seq);
        Ok(())
    }

    /// The highest sequence number known durable: everything recovered at
    /// start, then raised by every successful sync to what the journaller
    /// had written (`mark_covered`), by [`Journal::sync_through`] and by
    /// `EventStore::sync`.
    pub(crate) fn durable_seq(&self) -> u64 {
        self.shared.wal.durable_seq()
    }

    /// Raises the durable sequence number to what the journaller has
    /// written, if the WAL is durable past it: `written_seq` first, then
    /// `written_lsn` (both Acquire; the journaller stores them the other
    /// way round, Release), so the position read covers the records
    /// counted.
    fn mark_covered(&self) {
        let s = &self.shared;
        let seq = s.written_seq.load(Ordering::Acquire);
        let lsn = s.written_lsn.load(Ordering::Acquire);
        if s.wal.durable_position() >= lsn {
            s.wal.mark_durable_seq(seq);
        }
    }

    /// Records that the appends through `seq` are durable.
    pub(crate) fn mark_durable_seq(&self, seq: u64) {
        self.shared.wal.mark_durable_seq(seq);
    }

    /// The failure that ended the WAL, if any.
    /// `fdatasync` calls made so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.shared.wal.syncs()
    }

    pub(crate) fn failure(&self) -> Option<&StorageError> {
        self.shared.wal.failure()
    }

    /// Makes the WAL durable up to `lsn`: one waiter syncs (everything
    /// written so far), the others sleep until it is done and are woken
    /// together, rather than queueing on the WAL's writer lock and waking
    /// one after another (a convoy of thread switches per sync).
    pub(crate) fn sync_to(&self, lsn: u64) -> Result<(), StorageError> {
        let s = &self.shared;
        loop {
            // A failed WAL reports its first error to every later waiter,
            // even one whose records happen to be durable.
            if let Some(e) = s.wal.failure() {
                return Err(e.clone());
            }
            if s.wal.durable_position() >= lsn {
                self.mark_covered();
                return Ok(());
            }
            if let Some(syncing) = s.syncing.try_lock() {
                // Write what was appended while we waited, so that this
                // one sync covers it too (the WAL syncs all it holds).
                if let Some(_turn) = s.turn.try_lock() {
                    s.round_and_notify();
                }
                // A failed WAL reports its first error here, every time.
                let result = s.wal.sync(lsn);
                // Released before the notification: a waiter that misses
                // it finds the turn free and syncs itself.
                drop(syncing);
                let _guard = s.progress.lock();
                s.progressed.notify_all();
                if result.is_ok() {
                    self.mark_covered();
                }
                return result;
            }
            let mut guard = s.progress.lock();
            if s.wal.durable_position() < lsn && s.syncing.is_locked() {
                // The syncer notifies under `progress` once it is done.
                s.progressed.wait_for(&mut guard, Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.wake();
        if let Some(t) = self.thread.take() {
            // A journaller that panicked has nothing left to write.
            let _ = t.join();
        }
    }
}

impl Shared {
    fn run(&self) {
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            let wrote = {
                let _turn = self.turn.lock();
                self.round_and_notify()
            };
            if wrote {
                continue;
            }
            if stopping {
                // Make what was written durable before the store goes.
                let _ = self.wal.sync(self.written_lsn.load(Ordering::Acquire));
                return;
            }
            thread::park_timeout(Duration::from_millis(50));
        }
    }

    /// A round (the caller holds `turn`), then wakes the waiters if it
    /// wrote anything; whether it did.
    fn round_and_notify(&self) -> bool {
        let wrote = self.round();
        if wrote {
            let _guard = self.progress.lock();
            self.progressed.notify_all();
        }
        wrote
    }

    /// Writes what is new; whether anything was. Only under `turn`.
    fn round(&self) -> bool {
        let head = self.log.head();
        // Relaxed: only stored under `turn`, which we hold.
        let from = self.written_seq.load(Ordering::Relaxed);
        let mut wrote = false;
        if head > from {
            let lsn = self.wal.append(|buf| {
                let mut seq = from + 1;
                while seq <= head {
                    // At or below the head this thread read: published.
                    let Some((commit, 0)) = self.log.locate(seq) else {
                        panic!("journal: sequence number {seq} does not start a commit");
                    };
                    write_commit(buf, commit, seq, &self.ids);
                    seq += commit.link.count();
                }
                assert_eq!(seq, head + 1, "journal: commits overran the head");
            });
            self.written_lsn.store(lsn, Ordering::Release);
            self.written_seq.store(head, Ordering::Release);
            wrote = true;
        }
        let written = head.max(from);
        let mut queue = self.snapshots.lock();
        let mut snaps = 0;
        while queue.front().is_some_and(|j| j.cover <= written) {
            let Some(job) = queue.pop_front() else {
                panic!("journal: the snapshot queue emptied under its lock");
            };
            let lsn = self.wal.append(|buf| {
                record::write_snapshot(buf, &job.aggregate_id, job.version.0, job.state.as_deref());
            });
            self.written_lsn.store(lsn, Ordering::Release);
            snaps += 1;
        }
        drop(queue);
        if snaps > 0 {
            self.written_snaps.fetch_add(snaps, Ordering::Release);
            wrote = true;
        }
        wrote
    }
}

/// Serialises one commit (first sequence number `first`) as an append record.
fn write_commit(buf: &mut Vec<u8>, commit: &Commit, first: u64, ids: &IdScheme) {
    use std::sync::atomic::Ordering::Relaxed;
    // Relaxed: published by the node's `end`, which `head` acquired.
    let base = commit.link.base.load(Relaxed);
    let recorded_at = commit.link.recorded.load(Relaxed);
    let count = u32::try_from(commit.link.count())
        .unwrap_or_else(|_| panic!("a commit of {} events", commit.link.count()));
    // The frame says `count` events follow: it must hold exactly those.
    assert_eq!(
        commit.events.len() as u64,
        commit.link.count(),
        "journal: the commit at {first} holds a different number of events than its header"
    );
    let at = record::begin_append(buf, first, base + 1, count, commit.aggregate.name());
    for (i, e) in commit.events.iter().enumerate() {
        let (id, client_id) = match e.given_id() {
            Some(id) => (id, true),
            None => (ids.generate(SequenceNumber(first + i as u64)), false),
        };
        record::write_event(
            buf,
            &EventRecord {
                recorded_at,
                id: id.0,
                client_id,
                event_type: e.event_type(),
                data: e.data(),
                metadata: e.metadata().unwrap_or(""),
            },
        );
    }
    record::end_frame(buf, at);
}

//! Durable storage: an append-only, checksummed log on disk, written with
//! group commit and replayed on open.
//!
//! - [`record`]: the frame and record format (documented there).
//! - [`wal`]: segment files, the pending buffer, group commit, the lock.
//! - `journal`: the thread that writes the log to the WAL in sequence order.
//! - this file: opening a store, and recovery.
//!
//! # The durability promise
//!
//! With [`FsyncPolicy::Always`], [`EventStore::append`] and
//! [`EventStore::create_snapshot`] return only after their record is on
//! stable storage (`fdatasync`), and the node writes a reply only after
//! every record of every request before it is. Events become *visible* to
//! readers in memory slightly before they are durable; nothing is
//! *acknowledged* before.
//!
//! # Recovery
//!
//! [`EventStore::open`] replays every segment in order through the same
//! code paths appends use, rebuilding aggregates, the global log, snapshots
//! and the client id index, and checking as it goes that sequence numbers
//! and versions continue exactly. A frame cut short at the end of the newest
//! segment (a crash mid-write) is cut off the file. Any other damage — a bad
//! checksum with intact records after it, a damaged frame in an older
//! segment, a record that does not continue the log — stops the open with
//! an error naming the file and offset: data is never silently dropped.

pub mod crc32c;
pub(crate) mod journal;
pub mod record;
pub mod wal;

use crate::error::StorageError;
use crate::event::Payload;
use crate::ids::IdScheme;
use crate::store::EventStore;
use crate::time::Timestamp;
use crate::types::{EventId, Version};
use journal::Journal;
use record::{Frame, Record};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
pub use wal::{FsyncPolicy, Tail, Wal};

/// Why a data directory could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// An I/O error (including "locked by another process").
    Io(io::Error),
    /// Damaged or inconsistent data.
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the bad frame.
        offset: usize,
        /// What is wrong.
        problem: String,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io(e) => e.fmt(f),
            OpenError::Corrupt {
                file,
                offset,
                problem,
            } => write!(
                f,
                "{} is damaged at byte offset {offset}: {problem}; refusing to start (nothing was changed)",
                file.display()
            ),
        }
    }
}

impl std::error::Error for OpenError {}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}

impl EventStore {
    /// Opens (or creates) a durable store in `dir`, recovering everything it
    /// holds. Fails if another process has it open, or if its data is
    /// damaged anywhere but in a torn final write.
    pub fn open(dir: impl AsRef<Path>, fsync: FsyncPolicy) -> Result<EventStore, OpenError> {
        let dir = dir.as_ref();
        let lock = wal::lock_dir(dir)?;
        let numbers = wal::segments(dir)?;
        let Some(&newest) = numbers.last() else {
            let ids = IdScheme::random();
            let wal = Wal::start(dir, lock, ids, fsync, Tail::Create { number: 1 })?;
            return EventStore::with_id_scheme(ids).attach_wal(wal);
        };
        let mut store: Option<EventStore> = None;
        let mut newest_len = 0;
        for &number in &numbers {
            let path = wal::segment_path(dir, number);
            let data = fs::read(&path)?;
            let valid = recover_segment(&path, &data, number == newest, &mut store)?;
            if number == newest {
                if valid < data.len() {
                    eprintln!(
                        "eventstore: {}: cut {} bytes of an incomplete final write at offset {valid}",
                        path.display(),
                        data.len() - valid
                    );
                    let file = OpenOptions::new().write(true).open(&path)?;
                    file.set_len(valid as u64)?;
                    file.sync_all()?;
                }
                newest_len = valid as u64;
            }
        }
        let tail = if newest_len == 0 {
            // Not even the header of the newest segment was written: a
            // crash while starting it (or the very first segment). Nothing
            // in it was ever acknowledged; start it again.
            fs::remove_file(wal::segment_path(dir, newest))?;
            Tail::Create { number: newest }
        } else {
            Tail::Append {
                number: newest,
                bytes: newest_len,
            }
        };
        let store = match store {
            Some(store) => store,
            // Only possible when the one segment there is had no header.
            None => EventStore::with_id_scheme(IdScheme::random()),
        };
        let wal = Wal::start(dir, lock, store.ids, fsync, tail)?;
        store.attach_wal(wal)
    }

    /// Starts the journaller on `wal`, which holds everything in the store.
    fn attach_wal(mut self, wal: Wal) -> Result<EventStore, OpenError> {
        self.journal = Some(Journal::start(
            wal,
            std::sync::Arc::clone(&self.log),
            self.ids,
        )?);
        Ok(self)
    }

    /// Whether the store writes to disk.
    pub fn is_durable(&self) -> bool {
        self.journal.is_some()
    }

    /// The storage failure that ended this store's writes, if any. A
    /// durable store whose disk failed refuses every later write with it;
    /// its in-memory view may hold writes that never became durable.
    pub fn storage_failure(&self) -> Option<&StorageError> {
        self.journal.as_ref().and_then(Journal::failure)
    }

    /// Refuses a write once the store has failed.
    pub(crate) fn check_storage(&self) -> Result<(), StorageError> {
        self.storage_failure().map_or(Ok(()), |e| Err(e.clone()))
    }

    /// Makes every write so far durable (no-op in memory), and lets
    /// subscribers see the events it covers.
    pub fn sync(&self) -> Result<(), StorageError> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        // The head first: the position taken after it (which waits for the
        // journaller to write everything up to the head then) covers every
        // event up to it.
        let head = self.head();
        journal.sync_to(journal.position())?;
        journal.mark_durable_seq(head.0);
        self.published.notify();
        Ok(())
    }

    /// The log position after every append and snapshot so far (0 in
    /// memory), once the journaller has written them; pass it to
    /// [`EventStore::sync_to`].
    pub fn wal_position(&self) -> u64 {
        self.journal.as_ref().map_or(0, Journal::position)
    }

    /// Makes writes up to `position` durable (no-op in memory).
    pub fn sync_to(&self, position: u64) -> Result<(), StorageError> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        journal.sync_to(position)?;
        // The sync may have made events durable: wake subscribers.
        self.published.notify();
        Ok(())
    }

    fn restore(&self, record: Record<'_>) -> Result<(), String> {
        match record {
            Record::Header { .. } => Err("segment header in the middle of a segment".into()),
            Record::Append {
                first_seq,
                first_version,
                aggregate_id,
                events,
            } => {
                let at = Timestamp(events.first().map_or(0, |e| e.recorded_at));
                let payloads: Vec<(Payload, bool)> = events
                    .iter()
                    .map(|e| {
                        let p = Payload::restored(e.event_type, e.data, e.metadata, EventId(e.id));
                        (p, e.client_id)
                    })
                    .collect();
                self.restore_append(aggregate_id, first_seq, first_version, payloads, at)
            }
            Record::Snapshot {
                aggregate_id,
                version,
                state,
            } => {
                let current = self.version(aggregate_id);
                if version > current.0 {
                    return Err(format!(
                        "snapshot of {aggregate_id:?} at version {version}, beyond its version {current}"
                    ));
                }
                let raw = state
                    .map(|s| serde_json::value::RawValue::from_string(s.to_owned()))
                    .transpose()
                    .map_err(|e| format!("snapshot state is not JSON: {e}"))?;
                self.restore_snapshot(aggregate_id, Version(version), raw.as_deref());
                Ok(())
            }
        }
    }
}

/// Replays one segment into `store` (created from the first header);
/// returns the length of its valid prefix.
fn recover_segment(
    path: &Path,
    data: &[u8],
    newest: bool,
    store: &mut Option<EventStore>,
) -> Result<usize, OpenError> {
    let corrupt = |offset: usize, problem: String| OpenError::Corrupt {
        file: path.to_owned(),
        offset,
        problem,
    };
    let mut at = 0;
    let mut first = true;
    loop {
        match record::read_frame(data, at) {
            Frame::Good { payload, next } => {
                let record = record::parse(payload).map_err(|why| corrupt(at, why.to_owned()))?;
                match (first, record, store.as_ref()) {
                    (true, Record::Header { tag, keys }, None) => {
                        *store = Some(EventStore::with_id_scheme(IdScheme::from_parts(tag, keys)));
                    }
                    (true, Record::Header { tag, keys }, Some(s)) => {
                        if IdScheme::from_parts(tag, keys) != s.ids {
                            return Err(corrupt(
                                at,
                                "segment belongs to another store (id scheme differs)".into(),
                            ));
                        }
                    }
                    (true, _, _) => {
                        return Err(corrupt(at, "segment does not start with a header".into()));
                    }
                    (false, record, Some(s)) => {
                        s.restore(record).map_err(|why| corrupt(at, why))?
                    }
                    // `first` is false only once a header has made the store.
                    (false, _, None) => return Err(corrupt(at, "record before any header".into())),
                }
                first = false;
                at = next;
            }
            Frame::End => return Ok(at),
            Frame::Truncated | Frame::BadChecksum { .. }
                if newest && !intact_frames_follow(data, at, store.as_ref()) =>
            {
                return Ok(at);
            }
            Frame::Truncated => {
                return Err(corrupt(
                    at,
                    "record cut short before the end of the log".into(),
                ));
            }
            Frame::BadChecksum { .. } => return Err(corrupt(at, "checksum mismatch".into())),
        }
    }
}

/// Whether a valid record frame starts anywhere after `at`: if so, the
/// damage at `at` is not a torn final write but damage in the middle, and
/// cutting there would destroy acknowledged data. Candidates are filtered by
/// their kind byte (and, for appends, the sequence number they must carry)
/// before any checksum is computed, so the scan stays cheap.
fn intact_frames_follow(data: &[u8], at: usize, store: Option<&EventStore>) -> bool {
    let next_seq = store.map_or(1, |s| s.head().0 + 1);
    let header = record::FRAME_HEADER_BYTES;
    (at + 1..data.len().saturating_sub(header + 9)).any(|p| {
        let plausible = match data[p + header] {
            1 => {
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&data[p + header + 1..p + header + 9]);
                let seq = u64::from_le_bytes(seq);
                seq >= next_seq && seq - next_seq < (1 << 32)
            }
            2 => true,
            _ => false,
        };
        plausible && matches!(record::read_frame(data, p), Frame::Good { payload, .. } if record::parse(payload).is_ok())
    })
}

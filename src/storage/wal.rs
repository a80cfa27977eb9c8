//! The write-ahead log: segment files, group commit, the directory lock.
//!
//! # Writing
//!
//! Records are serialised into an in-memory `pending` buffer by the thread
//! that makes them (the journaller, `store/journal.rs`, following the log,
//! so records lie in the file in sequence-number order). A logical position
//! (LSN: bytes ever appended) names every point in the log.
//!
//! [`Wal::sync`] makes everything up to an LSN durable. Callers queue on the
//! `writer` lock; the first one in swaps out the whole pending buffer, writes
//! it with one `write` and one `fdatasync`, and publishes the new durable LSN;
//! the ones queued behind it usually find their LSN already covered and
//! return at once. That is group commit: one sync per burst, however many
//! records it holds.
//!
//! # Segments
//!
//! Files are `segment-NNNNNNNN.log` in the data directory, each starting
//! with a header frame. A new segment is started (and the directory synced)
//! once the current one passes [`SEGMENT_BYTES`]; records never span files.
//!
//! # Failure
//!
//! After any write or sync error the log is failed for good: every later
//! `sync` reports the first error (a [`StorageError`] keeping the
//! `io::Error` and its kind), so nothing written after a gap can ever be
//! acknowledged. [`Wal::failure`] lets writers refuse work up front.
//!
//! # The directory lock
//!
//! The data directory itself is locked (`flock` on a descriptor of the
//! directory), not a file in it: a lock file can be unlinked while a node
//! runs, after which a second node would lock a new file of the same name
//! and both would write the same segments. A directory cannot be removed
//! while it holds files, and renaming it moves the lock with it.

use super::record;
use crate::error::StorageError;
use crate::ids::IdScheme;
use parking_lot::Mutex;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A segment is closed once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 128 * 1024 * 1024;

/// Where writing resumes when a log is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// Append to segment `number`, whose first `bytes` are whole records.
    Append {
        /// The segment.
        number: u64,
        /// Its valid length.
        bytes: u64,
    },
    /// Create segment `number` (with its header).
    Create {
        /// The segment.
        number: u64,
    },
}

/// When to call `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Before acknowledging: a reply means the data is on stable storage.
    #[default]
    Always,
    /// Never: data reaches the OS page cache before a reply, so it survives
    /// the process being killed, but not a power loss or kernel crash.
    Never,
}

struct Pending {
    buf: Vec<u8>,
    /// LSN just past the last byte appended.
    end: u64,
}

struct Writer {
    file: File,
    number: u64,
    bytes: u64,
    /// The buffer swapped out of `pending`, kept to reuse its capacity.
    spare: Vec<u8>,
}

/// The write-ahead log of a durable store. See the module docs.
pub struct Wal {
    dir: PathBuf,
    ids: IdScheme,
    fsync: FsyncPolicy,
    pending: Mutex<Pending>,
    writer: Mutex<Writer>,
    /// LSN up to which everything is durable. Release/Acquire so that a
    /// thread that sees it also sees the writer's bookkeeping.
    durable: AtomicU64,
    /// The highest sequence number known durable (set by the store after
    /// a sync, see `EventStore::sync`); Release/Acquire so that a reader
    /// that sees it also sees those events.
    durable_seq: AtomicU64,
    failed: OnceLock<StorageError>,
    /// `fdatasync` calls made (a statistic: group commit shows as fewer
    /// syncs than durable appends). Relaxed: nothing is published by it.
    syncs: AtomicU64,
    /// Held for the store's lifetime: a second node on the directory fails.
    _lock: File,
}

/// Path of segment `number` in `dir`.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("segment-{number:08}.log"))
}

/// The segment numbers in `dir`, ascending.
pub fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("segment-")
            .and_then(|s| s.strip_suffix(".log"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Creates `dir` if needed and locks it (see the module docs), or fails if
/// another process holds it.
pub fn lock_dir(dir: &Path) -> io::Result<File> {
    if dir.as_os_str().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the data directory path is empty",
        ));
    }
    fs::create_dir_all(dir)?;
    let file = File::open(dir)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "{} is locked: another eventstore is using this data directory",
                dir.display()
            ),
        )),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn new_segment(dir: &Path, number: u64, ids: IdScheme) -> io::Result<(File, u64)> {
    let path = segment_path(dir, number);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    let mut header = Vec::new();
    let (tag, keys) = ids.parts();
    record::write_header(&mut header, tag, keys);
    file.write_all(&header)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok((file, header.len() as u64))
}

impl Wal {
    /// Starts writing a directory at `tail`: appending to an existing
    /// segment (already cut to its last whole record) or creating one.
    pub fn start(
        dir: &Path,
        lock: File,
        ids: IdScheme,
        fsync: FsyncPolicy,
        tail: Tail,
    ) -> io::Result<Wal> {
        let (file, number, bytes) = match tail {
            Tail::Append { number, bytes } => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(segment_path(dir, number))?;
                (file, number, bytes)
            }
            Tail::Create { number } => {
                let (file, bytes) = new_segment(dir, number, ids)?;
                (file, number, bytes)
            }
        };
        Ok(Wal {
            dir: dir.to_owned(),
            ids,
            fsync,
            pending: Mutex::new(Pending {
                buf: Vec::new(),
                end: 0,
            }),
            writer: Mutex::new(Writer {
                file,
                number,
                bytes,
                spare: Vec::new(),
            }),
            durable: AtomicU64::new(0),
            durable_seq: AtomicU64::new(0),
            failed: OnceLock::new(),
            syncs: AtomicU64::new(0),
            _lock: lock,
        })
    }

    /// Appends records (written by `write` into the pending buffer) and
    /// returns the LSN just past them.
    pub fn append(&self, write: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let mut p = self.pending.lock();
        let before = p.buf.len();
        write(&mut p.buf);
        p.end += (p.buf.len() - before) as u64;
        p.end
    }

    /// The highest sequence number known durable.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq.load(Ordering::Acquire)
    }

    /// Records that every event up to `seq` is durable (it only rises).
    pub fn mark_durable_seq(&self, seq: u64) {
        self.durable_seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// The failure that ended this log, if any: once set, every later
    /// write is refused.
    pub fn failure(&self) -> Option<&StorageError> {
        self.failed.get()
    }

    /// `fdatasync` calls made so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// The LSN up to which everything is durable.
    pub fn durable_position(&self) -> u64 {
        // Acquire: pairs with the Release store after the sync.
        self.durable.load(Ordering::Acquire)
    }

    /// Makes everything up to `lsn` durable (group commit; see module docs).
    pub fn sync(&self, lsn: u64) -> Result<(), StorageError> {
        if let Some(e) = self.failed.get() {
            return Err(e.clone());
        }
        if self.durable.load(Ordering::Acquire) >= lsn {
            return Ok(());
        }
        let mut w = self.writer.lock();
        // Again under `writer`: another thread's write may have failed while
        // we waited, and nothing may be written after a gap.
        if let Some(e) = self.failed.get() {
            return Err(e.clone());
        }
        if self.durable.load(Ordering::Acquire) >= lsn {
            return Ok(());
        }
        let end = {
            let mut p = self.pending.lock();
            std::mem::swap(&mut p.buf, &mut w.spare);
            p.end
        };
        let result = self.write_out(&mut w);
        w.spare.clear();
        match result {
            Ok(()) => {
                self.durable.store(end, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                // The first failure wins (only one can happen: we hold
                // `writer`, and nothing is written once `failed` is set).
                Err(self.failed.get_or_init(|| e).clone())
            }
        }
    }

    fn write_out(&self, w: &mut Writer) -> Result<(), StorageError> {
        if w.spare.is_empty() {
            return Ok(());
        }
        let path = |number| segment_path(&self.dir, number).display().to_string();
        if w.bytes >= SEGMENT_BYTES {
            // Close the full segment durably before starting the next.
            w.file
                .sync_data()
                .map_err(|e| StorageError::new(format!("syncing {}", path(w.number)), e))?;
            let next = w.number + 1;
            let (file, bytes) = new_segment(&self.dir, next, self.ids)
                .map_err(|e| StorageError::new(format!("creating {}", path(next)), e))?;
            w.file = file;
            w.number = next;
            w.bytes = bytes;
        }
        // A failed write may leave part of the buffer in the file: a torn
        // record, which recovery cuts (it is the newest segment's tail,
        // since nothing is ever written after a failure).
        w.file
            .write_all(&w.spare)
            .map_err(|e| StorageError::new(format!("writing {}", path(w.number)), e))?;
        w.bytes += w.spare.len() as u64;
        if self.fsync == FsyncPolicy::Always {
            w.file
                .sync_data()
                .map_err(|e| StorageError::new(format!("syncing {}", path(w.number)), e))?;
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

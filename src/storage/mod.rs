//! Durable storage: an append-only, checksummed log on disk, and reading
//! it back. A leaf: it knows records and files, nothing of the store (the
//! store drives it: `store/journal.rs` writes, `store/durable.rs` replays).
//!
//! - [`crc32c`]: the record checksum.
//! - [`record`]: the frame and record format (documented there).
//! - [`wal`]: segment files, the pending buffer, group commit, the lock.
//! - [`recover`]: segments read back in order as records; a torn tail cut,
//!   any other damage refused with file and offset.

pub mod crc32c;
pub mod record;
pub mod recover;
pub mod wal;

use std::fmt;
use std::io;
use std::path::PathBuf;
pub use wal::{FsyncPolicy, Wal};

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

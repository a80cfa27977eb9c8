//! Errors of the engine. Each `Display` names the problem in words a client
//! can act on; the node maps them onto the protocol's replies:
//! [`ConcurrencyError`] → `concurrency_error`, [`IdConflict`] → error 22,
//! [`InvalidAppend`] → error 12, [`AppendError::Full`] → error 11,
//! [`StorageError`] → error 13.

use crate::types::{EventId, Version};
use std::fmt;
use std::io;
use std::sync::Arc;

/// The aggregate is not at the version the writer expected. Nothing was
/// appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConcurrencyError {
    /// The version the writer expected.
    pub expected: Version,
    /// The aggregate's version when the append was checked.
    pub current: Version,
}

impl fmt::Display for ConcurrencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Expected version {}, got {}",
            self.expected, self.current
        )
    }
}

/// A client-given event id is already used in a way that makes the append
/// neither new nor a retry. Nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdConflict {
    /// The id belongs to an event of another aggregate, or to an event of
    /// this aggregate that is not the first of the batch.
    AlreadyStored {
        /// The id that clashed.
        id: EventId,
        /// The aggregate holding the event with that id.
        aggregate_id: String,
        /// That event's version in its aggregate.
        version: Version,
    },
    /// The batch's first id is in this aggregate but the events that follow
    /// it there do not carry the batch's other ids in order.
    RetryMismatch {
        /// The batch's first id (already stored).
        first: EventId,
        /// Index in the batch of the first event that differs.
        index: usize,
    },
}

impl fmt::Display for IdConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdConflict::AlreadyStored {
                id,
                aggregate_id,
                version,
            } => write!(
                f,
                "event_id {id} is already stored, as version {version} of aggregate {aggregate_id:?}"
            ),
            IdConflict::RetryMismatch { first, index } => write!(
                f,
                "batch starting with stored event_id {first} is not a retry: event {index} differs from what was stored after it"
            ),
        }
    }
}

/// An append the store refuses to look at: a field is missing, empty,
/// malformed or too large.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidAppend {
    /// The field, e.g. `aggregate_id` or `events[3].event_type`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for InvalidAppend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Why an append was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The expected version did not match.
    Concurrency(ConcurrencyError),
    /// An event id clashes with a stored event.
    IdConflict(IdConflict),
    /// The request itself is malformed.
    Invalid(InvalidAppend),
    /// The store holds as many events as it can: nothing was appended (the
    /// request was fine; the store has no room for it).
    Full {
        /// The most events a store holds.
        capacity: u64,
    },
    /// A durable store could not persist: this write may be in memory but
    /// is not durable, and every later write fails the same way.
    Storage(StorageError),
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::Concurrency(e) => e.fmt(f),
            AppendError::IdConflict(e) => e.fmt(f),
            AppendError::Invalid(e) => e.fmt(f),
            AppendError::Full { capacity } => {
                write!(f, "the store is full: it holds at most {capacity} events")
            }
            AppendError::Storage(e) => e.fmt(f),
        }
    }
}

/// The disk failed a durable store (full, I/O error). The store is failed
/// for good from then on: the first error is kept and every later write or
/// sync reports it again, so nothing written after a gap is ever
/// acknowledged. Its [`source`](std::error::Error::source) is the
/// `io::Error` the operating system gave (its kind, e.g.
/// [`io::ErrorKind::StorageFull`], is kept).
#[derive(Clone, Debug)]
pub struct StorageError {
    /// What was being done, e.g. "writing /data/segment-00000001.log".
    doing: Arc<str>,
    cause: Arc<io::Error>,
}

impl StorageError {
    /// `cause` happened while `doing` (a phrase like "writing FILE").
    pub fn new(doing: impl Into<Arc<str>>, cause: io::Error) -> StorageError {
        StorageError {
            doing: doing.into(),
            cause: Arc::new(cause),
        }
    }

    /// The operating system's error.
    pub fn cause(&self) -> &io::Error {
        &self.cause
    }

    /// The error's kind (e.g. [`io::ErrorKind::StorageFull`]).
    pub fn kind(&self) -> io::ErrorKind {
        self.cause.kind()
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage failed while {}: {}", self.doing, self.cause)
    }
}

/// Two failures are equal when they describe the same thing (an
/// `io::Error` itself has no equality).
impl PartialEq for StorageError {
    fn eq(&self, other: &StorageError) -> bool {
        self.doing == other.doing
            && self.cause.kind() == other.cause.kind()
            && self.cause.to_string() == other.cause.to_string()
    }
}

impl Eq for StorageError {}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.cause)
    }
}

/// For callers that deal in `io::Result` (the node's plumbing): the same
/// kind and text, with the `StorageError` itself inside (`get_ref`), so
/// the operating system's error stays in the `source` chain.
impl From<StorageError> for io::Error {
    fn from(e: StorageError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

impl std::error::Error for ConcurrencyError {}
impl std::error::Error for IdConflict {}
impl std::error::Error for InvalidAppend {}

impl std::error::Error for AppendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppendError::Storage(e) => e.source(),
            _ => None,
        }
    }
}

impl From<ConcurrencyError> for AppendError {
    fn from(e: ConcurrencyError) -> Self {
        AppendError::Concurrency(e)
    }
}

impl From<IdConflict> for AppendError {
    fn from(e: IdConflict) -> Self {
        AppendError::IdConflict(e)
    }
}

impl From<StorageError> for AppendError {
    fn from(e: StorageError) -> Self {
        AppendError::Storage(e)
    }
}

impl From<InvalidAppend> for AppendError {
    fn from(e: InvalidAppend) -> Self {
        AppendError::Invalid(e)
    }
}

impl InvalidAppend {
    pub(crate) fn new(field: impl Into<String>, problem: impl Into<String>) -> InvalidAppend {
        InvalidAppend {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_error_reads_like_the_protocol() {
        let e = ConcurrencyError {
            expected: Version(5),
            current: Version(0),
        };
        assert_eq!(e.to_string(), "Expected version 5, got 0");
    }

    #[test]
    fn a_full_store_is_not_an_invalid_append() {
        let e = AppendError::Full { capacity: 1 << 38 };
        assert_eq!(
            e.to_string(),
            "the store is full: it holds at most 274877906944 events"
        );
        assert!(!matches!(e, AppendError::Invalid(_)));
    }

    #[test]
    fn a_storage_error_as_io_error_keeps_kind_text_and_source() {
        let e = StorageError::new("writing x", io::Error::from(io::ErrorKind::StorageFull));
        let text = e.to_string();
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::StorageFull);
        assert_eq!(io.to_string(), text);
        let inner = io.get_ref().and_then(|i| i.downcast_ref::<StorageError>());
        assert!(inner.is_some_and(|s| s.kind() == io::ErrorKind::StorageFull));
        let source = io.get_ref().and_then(|i| i.source());
        assert!(source.is_some_and(|s| s.downcast_ref::<io::Error>().is_some()));
    }
}

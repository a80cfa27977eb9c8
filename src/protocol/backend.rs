//! Where a node's writes go when its log is not the local store.
//!
//! By default the protocol core applies appends and snapshots to its
//! [`EventStore`](crate::EventStore) directly. A node on a replicated log
//! (the JetStream backend, `src/jetstream/`) hands them to a [`Backend`]
//! instead, which writes them to the log and returns once they are
//! acknowledged *and* in the local store, which then serves as the view for
//! everything else (reads, replays, subscriptions, encoding the reply).

use crate::error::{AppendError, ConcurrencyError};
use crate::store::{Appended, Prepared};
use crate::types::{ExpectedVersion, JsonText, Version};
use std::fmt;

/// Why a backend write failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// Decided against the log: the errors of a local append.
    Append(AppendError),
    /// The log could not be reached within the backend's bounded wait
    /// (error 11); nothing of the request is half stored.
    Unavailable(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Append(e) => e.fmt(f),
            BackendError::Unavailable(why) => write!(f, "the replicated log is unavailable: {why}"),
        }
    }
}

impl std::error::Error for BackendError {}

impl From<AppendError> for BackendError {
    fn from(e: AppendError) -> Self {
        BackendError::Append(e)
    }
}

impl From<ConcurrencyError> for BackendError {
    fn from(e: ConcurrencyError) -> Self {
        BackendError::Append(e.into())
    }
}

/// A replicated log behind the node's writes (see the module docs).
pub trait Backend: Send + Sync + fmt::Debug {
    /// Appends prepared events at `expected`; returns once the log has
    /// acknowledged them and the local store holds them.
    fn append(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        prepared: Prepared,
    ) -> Result<Appended, BackendError>;

    /// Saves a snapshot (see [`crate::EventStore::create_snapshot`]);
    /// returns once the log has acknowledged it and the local store
    /// holds it.
    fn create_snapshot(
        &self,
        aggregate_id: &str,
        expected: Option<Version>,
        state: Option<JsonText<'_>>,
    ) -> Result<Version, BackendError>;
}

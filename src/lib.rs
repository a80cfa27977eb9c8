//! An event store: an append-only log of immutable events, grouped into
//! aggregates (streams) with optimistic concurrency, numbered by a dense
//! global sequence.
//!
//! The crate is two things: the **engine**, a thread-safe [`EventStore`]
//! that many threads append to and read from at once, and the **node**, the
//! `eventstore` binary speaking JSON lines on stdin/stdout (the protocol is
//! in `docs/protocol.md`, summarised in the README).
//!
//! # Layout
//!
//! Modules are layered: each uses only modules above it in this list (its
//! own children aside), so the imports form a tree, leaves first.
//!
//! ```text
//! types.rs      newtypes: SequenceNumber, Version, EventId, ExpectedVersion
//! time.rs       Timestamp: microseconds, RFC 3339 format and parse
//! ids.rs        generated event ids: a keyed permutation of the sequence number
//! json.rs       allocation-free JSON writing helpers
//! escapes.rs    \u escapes read without failing on lone surrogates; canonical keys
//! hash.rs       a fast keyed hasher for the maps
//! swar.rs       word-at-a-time byte search (newlines, JSON string ends)
//! scan.rs       validating zero-copy JSON scanner (decoding, the fold)
//! error.rs      error enums with protocol-ready messages
//! notify.rs     event count: subscribers wait for the log without the log waiting
//! once.rs       set-once cells filled without waiting on another thread's allocation
//! fold.rs       the state fold (shallow merge) on raw JSON text
//! aggregate.rs  the aggregate entry: last-commit atomic, snapshot slot (record type)
//!   versions.rs   version → commit index, built by readers (appends never touch it)
//!   state_cache.rs  folded states kept per aggregate (latest, checkpoints), bounded
//! event.rs      NewEvent (input), Event (stored texts), RecordedEvent (with its position)
//! filter.rs     filters (category, aggregate, event types); filtered page bounds
//! log.rs        the global log: commit nodes in an arena, seq → node index
//!   chunks.rs     append-only chunked array (never moves, never frees)
//!   link.rs       the lock-free protocol: reserve (CAS), link (helping), head (loom-checked)
//! storage/      durability, a leaf: checksummed segment files, knows nothing of the store
//!   crc32c.rs     the record checksum
//!   record.rs     frame and record format
//!   wal.rs        pending buffer, segments, fdatasync, the directory lock
//!   recover.rs    segments read back as records: torn tail cut, damage refused
//!   mod.rs        OpenError
//! store.rs      EventStore: the struct, constructors, lookups
//!   append.rs     the append path (no lock, no waiting)
//!   claims.rs     client ids: the claim protocol, with its argument
//!   reads.rs      stream, global and filtered reads
//!   replica.rs    a replicated log's view: precheck an append, apply one
//!   categories.rs category → its events' sequence numbers, built lazily by readers
//!     positions.rs  one category's rising list: one writer, lock-free readers
//!   snapshots.rs  snapshots, replay, state-at-time (plans executed later)
//!   subscription.rs  library subscriptions: catch-up, then live, filtered
//!   journal.rs    the journaller: one thread writes the log to the WAL in sequence order
//!   durable.rs    opening a durable store (recovery replayed), sync
//!   recent.rs     per-thread memo of the last aggregate looked up (spares the shard lock)
//! protocol/     the sans-IO core: decode a line, apply it, encode the reply
//!   envelope.rs   line → raw fields (serde_json only as the fallback)
//!   request.rs    raw fields → Request (borrowed, every field checked); error Codes
//!   surrogates.rs lone surrogates: the cold path that names where they are
//!   position.rs   error columns within the line
//!   sink.rs       ReplySink: where replies are written, piece by piece
//!   handler.rs    Request → Outcome (serial, on the store) → reply bytes
//!   backend.rs    where appends and snapshots go when not to the store (JetStream)
//!   subscriptions.rs  the node's subscriptions: who gets which event message
//! node/         plumbing: threads and pipes around the protocol core
//!   lines.rs      splitting input into lines, skipping over-long ones
//!   pipeline.rs   reader thread, worker pool, in-order apply
//!   sequencer.rs  batch numbers and the serial apply's turns
//!   output.rs     replies in input order: bounded per-batch buffers written in
//!                 turn, released once durable, error 13 after a storage failure
//!   idle.rs       a replicated node's idle pusher: other front ends' events to
//!                 subscribers while no input comes (a turn with no request)
//! jetstream/    (feature `jetstream`) NATS JetStream as the replicated log,
//!               this engine as each front end's local view
//!   subject.rs    aggregate ids ↔ subjects, reversibly, category as a token
//!   headers.rs    one event ↔ one message (id, type, version, metadata)
//!   setup.rs      connecting; the event and snapshot streams
//!   follower.rs   ordered consumers feeding the view, in stream order
//!   gather.rs     messages → appends, each message checked as the one due
//!   write.rs      appends and snapshots: decide, publish with expectation, ack
//!     snapshot.rs snapshots: confirm the version, fold, publish, wait
//!   pipeline.rs   many writes in flight, outcomes as one at a time
//!     resolve.rs  a write in flight: acknowledgement, view, reply
//!   submitter.rs  the node's writes queued to one submit task, in bursts
//!   resolver.rs   one task driving every write's resolution
//!   head.rs       the view's head; writers woken by sequence number
//!   head_watch.rs the view's head, watched by the node's idle pusher
//!   error.rs      the backend's errors
//! main.rs       the binary: flags only
//! ```
//!
//! The API is re-exported at the crate root; [`node`] runs the binary's
//! loop. Internals are private (the fuzz targets and examples reach a few
//! through the hidden `testing` module, which is not part of the API).
//!
//! # Example
//!
//! ```
//! use eventstore::{EventStore, ExpectedVersion, NewEvent, Version};
//! use serde_json::value::RawValue;
//!
//! let store = EventStore::new();
//! let created = RawValue::from_string(r#"{"name":"John","age":41}"#.into()).unwrap();
//! let renamed = RawValue::from_string(r#"{"name":"Jane"}"#.into()).unwrap();
//! store.append("user-1", ExpectedVersion::Exact(Version(0)), &[NewEvent::new("Created", &created)]).unwrap();
//! store.append("user-1", ExpectedVersion::Any, &[NewEvent::new("Renamed", &renamed)]).unwrap();
//!
//! store.create_snapshot("user-1", None, None).unwrap();
//! let replay = store.replay("user-1", true);
//! assert_eq!(replay.state, r#"{"name":"Jane","age":41}"#);
//! assert_eq!(replay.events_replayed, 0);
//!
//! let all = store.read_all(eventstore::SequenceNumber(1), 10);
//! assert_eq!(all.events.len(), 2);
//! assert_eq!(all.events[1].event_type(), "Renamed");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod aggregate;
mod error;
mod escapes;
mod event;
mod filter;
mod fold;
mod hash;
mod ids;
#[cfg(feature = "jetstream")]
pub mod jetstream;
mod json;
mod log;
pub mod node;
mod notify;
mod once;
mod protocol;
mod scan;
mod storage;
mod store;
mod swar;
mod time;
mod types;

pub use error::{AppendError, ConcurrencyError, IdConflict, InvalidAppend, StorageError};
pub use event::{Event, NewEvent, RecordedEvent};
pub use filter::{Filter, LOOK_LIMIT};
pub use ids::IdScheme;
pub use storage::{FsyncPolicy, OpenError};
pub use store::{
    AllSlice, Appended, EventStore, FilteredSlice, FoldPlan, MAX_EVENT_PART_BYTES, Positions,
    Prepared, Replay, Snapshot, StreamSlice, Subscription,
};
pub use time::Timestamp;
pub use types::{EventId, ExpectedVersion, JsonText, SequenceNumber, Version};

/// Internals opened for the crate's own fuzz targets, examples and tests:
/// not part of the API, not covered by semver, hidden from the docs.
#[doc(hidden)]
pub mod testing {
    pub use crate::filter::PageBounds;
    pub use crate::node::lines::Lines;
    pub use crate::protocol::{Core, decode, encode};
    pub use crate::storage::crc32c::crc32c;
    pub use crate::storage::record;
    pub use crate::store::PauseStep;
}

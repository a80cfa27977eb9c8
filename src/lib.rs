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
//! ```text
//! types.rs      newtypes: SequenceNumber, Version, EventId, ExpectedVersion
//! time.rs       Timestamp: microseconds, RFC 3339 format and parse
//! ids.rs        generated event ids: a keyed permutation of the sequence number
//! json.rs       allocation-free JSON writing helpers
//! escapes.rs    \u escapes read without failing on lone surrogates; canonical keys
//! hash.rs       a fast keyed hasher for the maps
//! swar.rs       word-at-a-time byte search (newlines, JSON string ends)
//! event.rs      NewEvent (input), Event (stored texts), RecordedEvent (with its position)
//! fold.rs       the state fold (shallow merge) on raw JSON text
//! filter.rs     filters (category, aggregate, event types); filtered log pages
//! log.rs        the global log: commit nodes in an arena, seq → node index
//!   chunks.rs     append-only chunked array (never moves, never frees)
//!   link.rs       the lock-free protocol: reserve (CAS), link (helping), head (loom-checked)
//! store.rs      EventStore: append (no lock, no waiting), client id claims, reads
//!   replica.rs    a replicated log's view: precheck an append, apply one
//!   aggregate.rs  the aggregate entry: last-commit atomic, snapshot slot, state cache
//!   versions.rs   version → commit index, built by readers (appends never touch it)
//!   recent.rs     per-thread memo of the last aggregate looked up (spares the shard lock)
//! notify.rs     event count: subscribers wait for the log without the log waiting
//! subscription.rs  library subscriptions: catch-up, then live, filtered
//! state_cache.rs  folded states kept per aggregate (latest, checkpoints), bounded
//! snapshot.rs   snapshots, replay, state-at-time (plans executed later)
//! error.rs      error enums with protocol-ready messages
//! storage/      durability: checksummed segment files, group commit, recovery
//!   crc32c.rs     the record checksum
//!   record.rs     frame and record format
//!   wal.rs        pending buffer, segments, fdatasync, the directory lock
//!   journal.rs    the journaller: one thread writes the log to the WAL in sequence order
//!   mod.rs        opening a store; recovery on open
//! protocol/     the sans-IO core: decode a line, apply it, encode the reply
//!   scan.rs       validating zero-copy JSON scanner (the decode fast path)
//!   envelope.rs   line → raw fields (serde_json only as the fallback)
//!   request.rs    raw fields → Request (borrowed, every field checked)
//!   surrogates.rs lone surrogates: the cold path that names where they are
//!   position.rs   error columns within the line
//!   handler.rs    Request → Outcome (serial, on the store) → reply bytes
//!   subscriptions.rs  the node's subscriptions: who gets which event message
//! node/         plumbing: threads and pipes around the protocol core
//!   lines.rs      splitting input into lines, skipping over-long ones
//!   pipeline.rs   reader thread, worker pool, in-order apply
//!   output.rs     replies in input order: bounded per-batch buffers written in
//!                 turn, released once durable, error 13 after a storage failure
//! jetstream/    (feature `jetstream`) NATS JetStream as the replicated log,
//!               this engine as each front end's local view
//!   subject.rs    aggregate ids ↔ subjects, reversibly, category as a token
//!   headers.rs    one event ↔ one message (id, type, version, metadata)
//!   setup.rs      connecting; the event and snapshot streams
//!   follower.rs   ordered consumers feeding the view, in stream order
//!   write.rs      appends and snapshots: decide, publish with expectation, ack
//!   error.rs      the backend's errors
//! main.rs       the binary: flags only
//! ```
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

pub mod error;
pub(crate) mod escapes;
pub mod event;
pub mod filter;
pub mod fold;
pub mod hash;
pub mod ids;
#[cfg(feature = "jetstream")]
pub mod jetstream;
pub mod json;
mod log;
pub mod node;
mod notify;
pub mod protocol;
pub mod snapshot;
mod state_cache;
pub mod storage;
pub mod store;
pub mod subscription;
pub(crate) mod swar;
pub mod time;
pub mod types;

pub use error::{AppendError, ConcurrencyError, IdConflict, InvalidAppend};
pub use event::{Event, NewEvent, RecordedEvent};
pub use filter::Filter;
pub use snapshot::{FoldPlan, Replay, Snapshot};
pub use storage::{FsyncPolicy, OpenError};
pub use store::{AllSlice, Appended, EventStore, Positions, StreamSlice};
pub use subscription::Subscription;
pub use time::Timestamp;
pub use types::{EventId, ExpectedVersion, JsonText, SequenceNumber, Version};

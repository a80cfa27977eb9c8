//! A durable store: opening it (recovery replayed into the store) and
//! making writes durable.
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
//! [`EventStore::open`] reads the segments back (`storage/recover.rs`,
//! which cuts a torn final write and refuses any other damage) and replays
//! every record in order through the same code paths appends use,
//! rebuilding aggregates, the global log, snapshots and the client id
//! index, and checking as it goes that sequence numbers and versions
//! continue exactly: a record that does not continue the log stops the open
//! with an error naming the file and offset, like damage.

use super::EventStore;
use super::journal::Journal;
use crate::aggregate::{SnapshotRecord, SnapshotState};
use crate::error::{InvalidAppend, StorageError};
use crate::event::{Event, Payload};
use crate::ids::IdScheme;
use crate::log::link::{self, Link, Refused};
use crate::log::{CAPACITY, Commit, Events};
use crate::storage::record::{MAX_FRAME_BYTES, Record};
use crate::storage::recover::recover;
use crate::storage::{FsyncPolicy, OpenError, Wal, wal};
use crate::time::Timestamp;
use crate::types::{EventId, Version};
use serde_json::value::RawValue;
use std::path::Path;
use std::sync::{Arc, OnceLock};

impl EventStore {
    /// Opens (or creates) a durable store in `dir`, recovering everything it
    /// holds. Fails if another process has it open, or if its data is
    /// damaged anywhere but in a torn final write.
    pub fn open(dir: impl AsRef<Path>, fsync: FsyncPolicy) -> Result<EventStore, OpenError> {
        let dir = dir.as_ref();
        let lock = wal::lock_dir(dir)?;
        // Made from the first segment's header (`recover` hands it over
        // before any other record).
        let mut store: Option<EventStore> = None;
        let tail = recover(dir, |record| match (record, &store) {
            (Record::Header { tag, keys }, None) => {
                store = Some(EventStore::with_id_scheme(IdScheme::from_parts(tag, keys)));
                Ok(())
            }
            (record, Some(s)) => s.restore(record),
            (record, None) => panic!("recovery handed over {record:?} before a header"),
        })?;
        let store = match store {
            Some(store) => store,
            // No segment yet, or only one that had no header.
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

    /// How many `fdatasync` calls the store has made (0 in memory, or with
    /// [`crate::FsyncPolicy::Never`]). With group commit, threads appending at
    /// once share syncs: fewer syncs than durable appends.
    pub fn syncs(&self) -> u64 {
        self.journal.as_ref().map_or(0, Journal::syncs)
    }

    /// The storage failure that ended this store's writes, if any. A
    /// durable store whose disk failed refuses every later write with it;
    /// its in-memory view may hold writes that never became durable.
    pub fn storage_failure(&self) -> Option<&StorageError> {
        self.journal.as_ref().and_then(Journal::failure)
    }

    /// On a durable store, refuses a write whose record (`payload_bytes`,
    /// see `storage/record.rs`) would not fit in one frame: recovery reads
    /// a frame over [`MAX_FRAME_BYTES`] as torn, so such a write would be
    /// acknowledged and then lost on reopening. In memory there is no such
    /// limit.
    pub(crate) fn record_fits(&self, field: &str, payload_bytes: u64) -> Result<(), InvalidAppend> {
        if self.journal.is_none() || payload_bytes <= MAX_FRAME_BYTES as u64 {
            return Ok(());
        }
        Err(InvalidAppend::new(
            field,
            format!(
                "its record would take {payload_bytes} bytes; a durable store writes at most \
                 {MAX_FRAME_BYTES} bytes (1 GiB) per append or snapshot"
            ),
        ))
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

    /// Replays one recovered record; `Err` says why it does not continue
    /// the store (recovery reports it with its file and offset).
    fn restore(&self, record: Record<'_>) -> Result<(), String> {
        match record {
            // `recover` hands over one header, first, and refuses any other.
            Record::Header { .. } => panic!("a segment header replayed into a store"),
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

    /// Puts back an append read from a durable log (one thread, at open):
    /// checks that it continues the log and the aggregate exactly.
    pub(crate) fn restore_append(
        &self,
        aggregate_id: &str,
        first_seq: u64,
        first_version: u64,
        events: Vec<(Payload, bool)>,
        at: Timestamp,
    ) -> Result<(), String> {
        let expected_seq = self.log.head() + 1;
        if first_seq != expected_seq {
            return Err(format!(
                "append record starts at sequence number {first_seq}, expected {expected_seq}"
            ));
        }
        let count = events.len() as u64;
        if count > CAPACITY - self.log.head() {
            return Err("the log holds more events than a store can (2^38)".to_owned());
        }
        let aggregate = self.find_or_create(aggregate_id);
        let client: Vec<Option<EventId>> = events
            .iter()
            .map(|(p, client)| p.id.filter(|_| *client))
            .collect();
        let stored: Events = events
            .into_iter()
            .map(|(mut p, client)| {
                if !client {
                    p.id = None;
                }
                Event::new(p)
            })
            .collect();
        let make = || {
            self.log.add(Commit {
                link: Link::new(count, at.0, false),
                aggregate: Arc::clone(&aggregate),
                events: stored,
            })
        };
        let expected = first_version.checked_sub(1);
        match link::reserve(
            &*self.log,
            self.log.chain(),
            &aggregate.last,
            expected,
            make,
        ) {
            Ok((node, _)) => {
                link::link(&*self.log, self.log.chain(), node);
                for id in client.into_iter().flatten() {
                    self.index_client_id(id, node);
                }
                Ok(())
            }
            Err((Refused::Version(current), _)) => Err(format!(
                "append record for {aggregate_id:?} starts at version {first_version}, expected {}",
                current + 1
            )),
            Err((refused, _)) => panic!("restoring an append refused: {refused:?}"),
        }
    }

    /// Puts back a snapshot read from a durable log.
    pub(crate) fn restore_snapshot(
        &self,
        aggregate_id: &str,
        version: Version,
        state: Option<&RawValue>,
    ) {
        let aggregate = self.find_or_create(aggregate_id);
        let state = match state {
            Some(raw) => SnapshotState::Given(raw.get().into()),
            None => SnapshotState::Folded(OnceLock::new()),
        };
        *aggregate.snapshot.lock() = Some(Arc::new(SnapshotRecord { version, state }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_durable_store_refuses_a_record_over_the_frame_limit_and_memory_does_not() {
        let dir = std::env::temp_dir().join(format!("es-record-fits-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let durable = EventStore::open(&dir, FsyncPolicy::Never).expect("open");
        let limit = MAX_FRAME_BYTES as u64;
        assert!(durable.record_fits("events", limit).is_ok());
        let e = durable.record_fits("events", limit + 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "events: its record would take {} bytes; a durable store writes at most \
                 1073741824 bytes (1 GiB) per append or snapshot",
                limit + 1
            )
        );
        assert!(EventStore::new().record_fits("events", u64::MAX).is_ok());
        drop(durable);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

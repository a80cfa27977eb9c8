//! Writes: an append or a snapshot, decided on the local view, published
//! with an expectation, confirmed by the stream, and answered once the view
//! holds it.
//!
//! # An append
//!
//! 1. The view decides ([`EventStore::precheck_append`]): a retry of a
//!    stored append (answered from the view), an id conflict (error 22), a
//!    version mismatch, or a new append with the subject's last sequence
//!    number.
//! 2. A version mismatch is confirmed against the stream before it is
//!    answered: the last message of the aggregate's subject (a direct get).
//!    If the view lags behind it, the front end waits for the view and
//!    decides again; `concurrency_error` means the aggregate really is at
//!    another version.
//! 3. The events are published with `Nats-Expected-Last-Subject-Sequence`
//!    = that last sequence number (a batch as one atomic batch, the
//!    expectation on its first message) and `Nats-Msg-Id` = each event's
//!    id: the client's, or one drawn here once per request, so that every
//!    retry of the publish carries the same ids.
//! 4. The acknowledgement (stored on a quorum of replicas):
//!    - stored: wait until the view holds it, answer `appended`;
//!    - a duplicate `Nats-Msg-Id` (a retry within the stream's window, or
//!      another front end's event with that id): wait until the view holds
//!      the original, go back to 1 (which answers the retry, or error 22);
//!    - wrong last sequence (err 10071: someone appended meanwhile): wait
//!      until the view holds the subject's new last event, go back to 1.
//!      With `"any"` this is simply a retry;
//!    - no answer (server lost, leader change): publish again with the same
//!      ids, so the stream stores the events once;
//!    - past the bounded wait: error 11. An atomic publish is stored whole
//!      or not at all, so nothing is half stored; a client that retries
//!      with its `event_id`s gets the original answer if it was stored.
//!
//! Snapshots: `write/snapshot.rs`.

use super::Shared;
use super::headers;
use super::subject;
use crate::error::{AppendError, InvalidAppend};
use crate::protocol::BackendError;
use crate::store::{Appended, Positions, Precheck, Prepared};
use crate::types::{EventId, ExpectedVersion, SequenceNumber, Version};
use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::DirectGetErrorKind;
use bytes::Bytes;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

mod snapshot;

const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";

/// Pause before publishing again after no answer.
const REPUBLISH_PAUSE: Duration = Duration::from_millis(100);

/// Longest wait to hand one message to the client. While disconnected the
/// client stops draining its command queue, so an unbounded send could
/// hold the caller (the node's apply step) for as long as the outage;
/// bounded, it is a transient failure retried until the request's deadline.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// A fresh random (version 4) UUID: 128 bits from the standard library's
/// randomly keyed SipHash over a process-wide counter.
pub(crate) fn fresh_id() -> EventId {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(std::collections::hash_map::RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let high = keys.hash_one((n, 0u8));
    let low = keys.hash_one((n, 1u8));
    let mut v = (u128::from(high) << 64) | u128::from(low);
    v = (v & !(0xF << 76)) | (0x4 << 76);
    v = (v & !(0b11 << 62)) | (0b10 << 62);
    EventId::from_u128(v)
}

/// Runs a fold of the view (a snapshot's state: as long as the aggregate)
/// on tokio's blocking pool: on the runtime's one worker it would hold up
/// every acknowledgement, the followers and the submit step meanwhile.
pub(crate) async fn fold<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("folding the view for a snapshot failed: {e}"))
}

/// Why one publish did not store.
pub(crate) enum Failure {
    /// 10071: the subject moved.
    WrongLast,
    /// No answer or a transient server error: publish again.
    Transient(String),
    /// The server refuses this message for good (too large, …).
    Refused(String),
}

fn unavailable(why: impl std::fmt::Display, limit: Duration) -> BackendError {
    BackendError::Unavailable(format!("{why} (gave up after {limit:?})"))
}

impl Shared {
    /// Waits until the view holds `seq`, or the deadline.
    pub(crate) async fn wait_head(&self, seq: u64, deadline: Instant) -> Result<(), BackendError> {
        match tokio::time::timeout_at(deadline, self.head.wait(seq)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(self.stopped().unwrap_or_else(|| {
                unavailable(
                    format!("the local view did not reach sequence number {seq}"),
                    self.config.unavailable_after,
                )
            })),
        }
    }

    /// The follower's fatal problem as an error 11, if it stopped.
    pub(crate) fn stopped(&self) -> Option<BackendError> {
        self.failure()
            .map(|why| BackendError::Unavailable(format!("the local view stopped: {why}")))
    }

    /// The stream sequence of the last message on `subject` (0: none),
    /// asked of the stream itself.
    async fn subject_last(&self, subject: &str, deadline: Instant) -> Result<u64, BackendError> {
        loop {
            let problem = match self.events.direct_get_last_for_subject(subject).await {
                Ok(message) => return Ok(message.sequence),
                Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => return Ok(0),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(unavailable(
                    format!("cannot read the last event of {subject}: {problem}"),
                    self.config.unavailable_after,
                ));
            }
            tokio::time::sleep(REPUBLISH_PAUSE).await;
        }
    }

    /// Whether a mismatch seen on the view is real: `Ok(None)` when the
    /// view holds the subject's last event, else the sequence number to
    /// wait for.
    async fn confirm(
        &self,
        subject: &str,
        view_last: SequenceNumber,
        deadline: Instant,
    ) -> Result<Option<u64>, BackendError> {
        let last = self.subject_last(subject, deadline).await?;
        Ok((last > view_last.0).then_some(last))
    }

    /// An append (see the module docs).
    pub(crate) async fn append(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        prepared: Prepared,
    ) -> Result<Appended, BackendError> {
        let ids: Vec<EventId> = prepared
            .as_slice()
            .iter()
            .map(|p| p.id.unwrap_or_else(fresh_id))
            .collect();
        self.append_with_ids(aggregate_id, expected, prepared, ids)
            .await
    }

    /// [`Shared::append`] with the events' ids chosen (the caller's where
    /// given, fresh ones otherwise): a publish sent before with these ids
    /// is recognised by the stream's deduplication.
    pub(crate) async fn append_with_ids(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        prepared: Prepared,
        ids: Vec<EventId>,
    ) -> Result<Appended, BackendError> {
        let deadline = Instant::now() + self.config.unavailable_after;
        let subject = subject::encode(&self.config.stream, aggregate_id);
        let count = ids.len() as u64;
        // The view knows every stored event's id. With the chosen ids in
        // the payloads, its precheck recognises this very append once an
        // earlier attempt of it is stored (an acknowledgement lost, or a
        // batch re-sent and refused as a duplicate), instead of deciding
        // it again and answering a version mismatch. Ours, not a retry of
        // the client's, when the first id was drawn here.
        // Only then: with the client's first id, the view already knows the
        // append by it, and a later event's id drawn for this request
        // would not match one drawn for the client's earlier request.
        let first_drawn = prepared.as_slice().first().is_some_and(|p| p.id.is_none());
        let prepared = if first_drawn {
            with_ids(prepared, &ids)
        } else {
            prepared
        };
        let mut wait_for = 0;
        loop {
            if let Some(stopped) = self.stopped() {
                return Err(stopped);
            }
            if wait_for > 0 {
                self.wait_head(wait_for, deadline).await?;
                wait_for = 0;
            }
            let (version, last_seq) =
                match self.view.precheck_append(aggregate_id, expected, &prepared) {
                    Ok(Precheck::Stored(mut appended)) => {
                        appended.duplicate &= !first_drawn;
                        return Ok(appended);
                    }
                    Ok(Precheck::Fresh { version, last_seq }) => (version, last_seq),
                    Err(AppendError::Concurrency(e)) => {
                        let (_, view_last) = self.view.last_position(aggregate_id);
                        match self.confirm(&subject, view_last, deadline).await? {
                            None => return Err(e.into()),
                            Some(seq) => {
                                wait_for = seq;
                                continue;
                            }
                        }
                    }
                    Err(e) => return Err(e.into()),
                };
            match self
                .publish(&subject, &prepared, &ids, version, last_seq)
                .await
            {
                Ok(ack) if !ack.duplicate => {
                    // Answer only from the view, after the stream's ack:
                    // generous extra time, the events are stored.
                    let wait = deadline.max(Instant::now() + self.config.unavailable_after);
                    self.wait_head(ack.sequence, wait).await?;
                    return Ok(Appended {
                        positions: Positions::Consecutive {
                            first: SequenceNumber(ack.sequence + 1 - count),
                            count,
                        },
                        version: Version(version.0 + count),
                        duplicate: false,
                    });
                }
                Ok(ack) => {
                    // Stored before (a publish whose ack was lost, with
                    // these ids): ours if the stored event is this
                    // append's last, in this aggregate.
                    let wait = deadline.max(Instant::now() + self.config.unavailable_after);
                    self.wait_head(ack.sequence, wait).await?;
                    let ours = self.view.event(SequenceNumber(ack.sequence)).filter(|e| {
                        Some(e.id()) == ids.last().copied() && e.aggregate_id() == aggregate_id
                    });
                    if let Some(event) = ours {
                        return Ok(Appended {
                            positions: Positions::Consecutive {
                                first: SequenceNumber(ack.sequence + 1 - count),
                                count,
                            },
                            version: event.version(),
                            duplicate: false,
                        });
                    }
                    wait_for = ack.sequence;
                }
                Err(Failure::WrongLast) => {
                    let (_, view_last) = self.view.last_position(aggregate_id);
                    wait_for = self
                        .confirm(&subject, view_last, deadline)
                        .await?
                        .unwrap_or(0);
                }
                Err(Failure::Refused(why)) => {
                    return Err(AppendError::Invalid(InvalidAppend::new("events", why)).into());
                }
                Err(Failure::Transient(why)) => {
                    if Instant::now() >= deadline {
                        return Err(unavailable(
                            format!("no acknowledgement from JetStream: {why}"),
                            self.config.unavailable_after,
                        ));
                    }
                    tokio::time::sleep(REPUBLISH_PAUSE).await;
                }
            }
        }
    }

    /// Publishes the events of one append: one message, or an atomic batch.
    async fn publish(
        &self,
        subject: &str,
        prepared: &Prepared,
        ids: &[EventId],
        version: Version,
        last_seq: SequenceNumber,
    ) -> Result<PublishAck, Failure> {
        let future = self.send(subject, prepared, ids, version, last_seq).await?;
        future.await.map_err(|e| classify(e.kind(), e.to_string()))
    }

    /// Sends the events of one append (one message, or an atomic batch)
    /// without waiting for the stream's acknowledgement: the future
    /// resolves to it. Sends from one task reach the stream in order.
    pub(crate) async fn send(
        &self,
        subject: &str,
        prepared: &Prepared,
        ids: &[EventId],
        version: Version,
        last_seq: SequenceNumber,
    ) -> Result<PublishAckFuture, Failure> {
        let events = prepared.as_slice();
        let count = events.len();
        let batch_id = (count > 1).then(|| fresh_id().to_string());
        for (i, (payload, &id)) in events.iter().zip(ids).enumerate() {
            let mut h =
                headers::event_headers(payload, id, Version(version.0 + 1 + i as u64), i, count);
            if i == 0 {
                h.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, last_seq.0.to_string());
            }
            let data = Bytes::copy_from_slice(headers::parts(payload).1.as_bytes());
            let Some(batch_id) = &batch_id else {
                return self.send_one(subject, h, data).await;
            };
            h.insert("Nats-Batch-Id", batch_id.as_str());
            h.insert("Nats-Batch-Sequence", (i + 1).to_string());
            if i + 1 == count {
                h.insert("Nats-Batch-Commit", "1");
                return self.send_one(subject, h, data).await;
            }
            let send = self
                .client
                .publish_with_headers(subject.to_owned(), h, data);
            match tokio::time::timeout(SEND_TIMEOUT, send).await {
                Ok(sent) => sent.map_err(|e| Failure::Transient(e.to_string()))?,
                Err(_) => {
                    return Err(Failure::Transient(
                        "sending a batch message timed out".into(),
                    ));
                }
            }
        }
        Err(Failure::Refused("an append without events".to_owned()))
    }

    /// Sends one message with a reply subject; the future is its ack.
    async fn send_one(
        &self,
        subject: &str,
        h: HeaderMap,
        data: Bytes,
    ) -> Result<PublishAckFuture, Failure> {
        let send = self.js.publish_with_headers(subject.to_owned(), h, data);
        match tokio::time::timeout(SEND_TIMEOUT, send).await {
            Ok(sent) => sent.map_err(|e| classify(e.kind(), e.to_string())),
            Err(_) => Err(Failure::Transient("sending a message timed out".into())),
        }
    }

    /// Publishes one message with a reply subject and waits for its ack.
    async fn publish_one(
        &self,
        subject: &str,
        h: HeaderMap,
        data: Bytes,
    ) -> Result<PublishAck, Failure> {
        let future: PublishAckFuture = match self
            .js
            .publish_with_headers(subject.to_owned(), h, data)
            .await
        {
            Ok(f) => f,
            Err(e) => return Err(classify(e.kind(), e.to_string())),
        };
        future.await.map_err(|e| classify(e.kind(), e.to_string()))
    }
}

pub(crate) fn classify(kind: PublishErrorKind, text: String) -> Failure {
    match kind {
        PublishErrorKind::WrongLastSequence => Failure::WrongLast,
        PublishErrorKind::MaxPayloadExceeded => Failure::Refused(text),
        _ => Failure::Transient(text),
    }
}

/// `prepared` with each event's id set to the chosen one.
fn with_ids(prepared: Prepared, ids: &[EventId]) -> Prepared {
    assert_eq!(prepared.as_slice().len(), ids.len(), "one id per event");
    match prepared {
        Prepared::One(mut p) => {
            p.id = Some(ids[0]);
            Prepared::One(p)
        }
        Prepared::Many(mut events) => {
            for (p, id) in events.iter_mut().zip(ids) {
                p.id = Some(*id);
            }
            Prepared::Many(events)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_distinct_version_4_uuids() {
        let a = fresh_id();
        let b = fresh_id();
        assert_ne!(a, b);
        for id in [a, b] {
            let text = id.to_string();
            assert_eq!(text.as_bytes()[14], b'4', "{text}");
            assert!(
                matches!(text.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
                "{text}"
            );
        }
    }
}

//! Snapshot writes: decided the same way as appends (the version
//! confirmed against the stream), folded on the view at that version,
//! published to the aggregate's subject of the snapshot stream (which keeps
//! the last message per subject), and answered once the snapshot follower
//! has applied it.

use super::{Failure, REPUBLISH_PAUSE, fold, unavailable};
use crate::error::ConcurrencyError;
use crate::jetstream::Shared;
use crate::jetstream::headers::{SNAPSHOT_SEQ, SNAPSHOT_VERSION};
use crate::jetstream::{setup, subject};
use crate::protocol::BackendError;
use crate::types::{JsonText, SequenceNumber, Version};
use async_nats::HeaderMap;
use bytes::Bytes;
use std::sync::Arc;
use tokio::time::Instant;

impl Shared {
    /// A snapshot (see the module docs).
    pub(crate) async fn create_snapshot(
        &self,
        aggregate_id: &str,
        expected: Option<Version>,
        state: Option<JsonText<'_>>,
    ) -> Result<Version, BackendError> {
        let deadline = Instant::now() + self.config.unavailable_after;
        let subject = subject::encode(&self.config.stream, aggregate_id);
        loop {
            if let Some(stopped) = self.stopped() {
                return Err(stopped);
            }
            let (version, last_seq) = self.view.last_position(aggregate_id);
            if let Some(e) = expected.filter(|&e| e != version) {
                match self.confirm(&subject, last_seq, deadline).await? {
                    None => {
                        return Err(ConcurrencyError {
                            expected: e,
                            current: version,
                        }
                        .into());
                    }
                    Some(seq) => {
                        self.wait_head(seq, deadline).await?;
                        continue;
                    }
                }
            }
            let state = match state {
                Some(given) => given.get().to_owned(),
                None => {
                    // Folded off the runtime's one worker (see `fold`).
                    let view = Arc::clone(&self.view);
                    let id = aggregate_id.to_owned();
                    let replay = match fold(move || view.replay(&id, false)).await {
                        Ok(replay) => replay,
                        Err(why) => return Err(BackendError::Unavailable(why)),
                    };
                    if replay.events_replayed != version.0 {
                        continue; // the follower moved it meanwhile
                    }
                    replay.state
                }
            };
            return self
                .publish_snapshot(aggregate_id, version, last_seq, state, deadline)
                .await;
        }
    }

    /// Publishes the snapshot `state` of `aggregate_id` at `version` (its
    /// last event at `last_seq`) and waits until the view holds it.
    pub(crate) async fn publish_snapshot(
        &self,
        aggregate_id: &str,
        version: Version,
        last_seq: SequenceNumber,
        state: String,
        deadline: Instant,
    ) -> Result<Version, BackendError> {
        let snapshot_subject =
            subject::encode(&setup::snapshot_stream(&self.config.stream), aggregate_id);
        let state = Bytes::from(state.into_bytes());
        loop {
            let mut h = HeaderMap::new();
            h.insert(SNAPSHOT_VERSION, version.0.to_string());
            h.insert(SNAPSHOT_SEQ, last_seq.0.to_string());
            match self.publish_one(&snapshot_subject, h, state.clone()).await {
                Ok(ack) => {
                    let mut rx = self.snapshots_applied.subscribe();
                    let wait = deadline.max(Instant::now() + self.config.unavailable_after);
                    return match tokio::time::timeout_at(wait, rx.wait_for(|&s| s >= ack.sequence))
                        .await
                    {
                        Ok(Ok(_)) => Ok(version),
                        _ => Err(self.stopped().unwrap_or_else(|| {
                            unavailable(
                                "the snapshot did not reach the view",
                                self.config.unavailable_after,
                            )
                        })),
                    };
                }
                Err(Failure::Refused(why)) => {
                    return Err(BackendError::Unavailable(format!(
                        "JetStream refused the snapshot: {why}"
                    )));
                }
                Err(Failure::WrongLast) | Err(Failure::Transient(_))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(REPUBLISH_PAUSE).await;
                }
                Err(Failure::WrongLast) => {
                    return Err(unavailable(
                        "the snapshot was not stored",
                        self.config.unavailable_after,
                    ));
                }
                Err(Failure::Transient(why)) => {
                    return Err(unavailable(
                        format!("no acknowledgement for the snapshot: {why}"),
                        self.config.unavailable_after,
                    ));
                }
            }
        }
    }
}

//! The followers: tasks that feed the local view from the streams, in
//! stream order, catch-up first and then live.
//!
//! - **Events**: an ordered push consumer on the event stream from the
//!   view's head + 1. Each message is one event; the events of a batch
//!   (`Es-Batch: i/n`) are gathered and applied as one append. Every append
//!   goes through [`EventStore::apply_replicated`], which checks that it
//!   continues the view exactly (sequence number and version); the time is
//!   the stream's timestamp, raised to the previous event's (`recorded_at`
//!   is the running maximum, the same in every view). After each append the
//!   head is published on a watch channel that writers wait on.
//! - **Snapshots**: an ordered push consumer on the snapshot stream, last
//!   message per subject first, then live. A snapshot is applied once the
//!   view holds the event it was taken at (`Es-Snapshot-Seq`).
//!
//! The ordered consumer recreates itself after a gap or a lost heartbeat
//! (server lost, leader change); a follower that fails otherwise starts a
//! new consumer from where the view is. Every message's sequence number is
//! checked against the one due (`gather.rs`): one that comes again (the
//! ordered consumer may recreate itself from the stream's start) starts a
//! new consumer too. A message that is not ours, a gap still there from a
//! new consumer, an append that does not continue the view, or a panic
//! stops the follower for good: the view then stays as it was, every later
//! write gets error 11 naming the problem, and reads keep being served.
//!
//! [`EventStore::apply_replicated`]: crate::EventStore::apply_replicated

use super::Shared;
use super::gather::{Gatherer, Step};
use super::headers::{self, SNAPSHOT_SEQ, SNAPSHOT_VERSION};
use super::resolver::panic_text;
use super::subject;
use crate::time::Timestamp;
use crate::types::{SequenceNumber, Version};
use async_nats::jetstream::consumer::{DeliverPolicy, push};
use futures_util::future::{Either, select};
use futures_util::{FutureExt, StreamExt};
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How a follower's run ended.
enum Stop {
    /// Try again with a new consumer.
    Retry(String),
    /// A message beyond the one due (`due`): try again with a new
    /// consumer, and stop for good if the gap is there again.
    Gap { due: u64, why: String },
    /// Stop for good.
    Fatal(String),
}

fn retry(e: impl std::fmt::Display) -> Stop {
    Stop::Retry(e.to_string())
}

/// The event follower's watchdog period. The client's ordered consumer
/// recreates itself when heartbeats stop, but nothing checks that it
/// delivers what the stream holds: a consumer stuck in its recreation, or
/// fed by a stuck server, would leave every write waiting for the view
/// (error 11) for as long as it lasts. So when a writer (or a catch-up)
/// has waited a whole period, with no message, for an acknowledged event
/// the view does not hold, the follower starts a new consumer from its
/// head: 5 to 10 s after the wait began.
const WATCHDOG_PERIOD: Duration = Duration::from_secs(5);

/// Pause before a new consumer after a failure.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// What a follower follows.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Followed {
    /// The event stream.
    Events,
    /// The snapshot stream.
    Snapshots,
}

/// Follows a stream into the view until the process ends or a fatal
/// problem; a transient one restarts it after a pause.
pub(crate) async fn follow(shared: Arc<Shared>, what: Followed) {
    // A panic (a broken invariant) would end the task silently and leave
    // writers waiting for a view that never moves: stop the view instead,
    // so that writes get error 11 naming it.
    let run = AssertUnwindSafe(follow_until_fatal(&shared, what)).catch_unwind();
    if let Err(payload) = run.await {
        let panic = panic_text(payload.as_ref());
        shared.fail(format!("the {what:?} follower panicked: {panic}"));
    }
}

async fn follow_until_fatal(shared: &Shared, what: Followed) {
    // Where the last run found a gap: a fresh consumer finding it again
    // means messages are missing from the stream.
    let mut last_gap = None;
    loop {
        let stop = match what {
            Followed::Events => events_once(shared).await,
            Followed::Snapshots => snapshots_once(shared).await,
        };
        let why = match stop {
            Stop::Gap { due, why } if last_gap != Some(due) => {
                last_gap = Some(due);
                why
            }
            Stop::Gap { why, .. } => {
                shared.fail(format!("{why}, again from a new consumer"));
                return;
            }
            Stop::Retry(why) => {
                last_gap = None;
                why
            }
            Stop::Fatal(why) => {
                shared.fail(why);
                return;
            }
        };
        shared.note(&format!("{what:?} follower restarts: {why}"));
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// The stream time of a message, in microseconds.
fn stream_time(info: &async_nats::jetstream::message::Info<'_>) -> Timestamp {
    Timestamp((info.published.unix_timestamp_nanos() / 1000) as i64)
}

fn start_policy(next: u64) -> DeliverPolicy {
    if next <= 1 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: next,
        }
    }
}

async fn events_once(shared: &Shared) -> Stop {
    let name = &shared.config.stream;
    let next = shared.view.head().0 + 1;
    let consumer = match shared
        .events
        .create_consumer(push::OrderedConfig {
            deliver_subject: shared.client.new_inbox(),
            deliver_policy: start_policy(next),
            ..Default::default()
        })
        .await
    {
        Ok(c) => c,
        Err(e) => return retry(e),
    };
    let mut messages = match consumer.messages().await {
        Ok(m) => m,
        Err(e) => return retry(e),
    };
    let mut gatherer = Gatherer::new(next);
    let mut watchdog = pin!(tokio::time::sleep(WATCHDOG_PERIOD));
    // Whether no message came since the last tick, and what a writer
    // waited for above the head at that tick.
    let mut quiet = true;
    let mut awaited = None;
    loop {
        let message = match select(messages.next(), watchdog.as_mut()).await {
            Either::Left((Some(message), _)) => message,
            Either::Left((None, _)) => break,
            Either::Right(((), _)) => {
                if let Some(stop) = stalled(shared, quiet, awaited) {
                    return stop;
                }
                quiet = true;
                let head = shared.view.head().0;
                awaited = shared.head.awaited().filter(|&seq| seq > head);
                watchdog.as_mut().reset(Instant::now() + WATCHDOG_PERIOD);
                continue;
            }
        };
        quiet = false;
        let message = match message {
            Ok(m) => m,
            Err(e) => return retry(e),
        };
        let (seq, at) = match message.info() {
            Ok(info) => (info.stream_sequence, stream_time(&info)),
            Err(e) => return retry(e),
        };
        let aggregate_id = subject::decode(name, &message.subject);
        let incoming = headers::read_event(message.headers.as_ref(), &message.payload);
        let append = match gatherer.take(seq, aggregate_id, incoming) {
            Step::More => continue,
            Step::Append(append) => append,
            Step::WentBack(why) => return Stop::Retry(why),
            Step::Gap { due, why } => return Stop::Gap { due, why },
            Step::Fatal(why) => return Stop::Fatal(why),
        };
        if let Err(why) = shared.view.apply_replicated(
            &append.aggregate_id,
            SequenceNumber(append.first_seq),
            append.first_version,
            append.events,
            at,
        ) {
            return Stop::Fatal(format!("message {seq} does not continue the view: {why}"));
        }
        // Paired with the gatherer's check of each message: the view's
        // head is the last message taken.
        let head = shared.view.head().0;
        assert_eq!(head, seq, "the view's head is not the message just applied");
        shared.head.advance(head);
    }
    Stop::Retry("the event consumer ended".to_owned())
}

/// The watchdog's check, once a period: `Some` (start a new consumer) when
/// a writer already waited at the last tick for an event the stream
/// acknowledged beyond the view's head (`awaited`), and no message came in
/// the whole period since (`quiet`): that writer waited a whole period for
/// nothing. (Not just a writer waiting now: one that started waiting right
/// before the tick would find a healthy consumer replaced.)
fn stalled(shared: &Shared, quiet: bool, awaited: Option<u64>) -> Option<Stop> {
    let head = shared.view.head().0;
    let awaited = awaited.filter(|&seq| quiet && seq > head)?;
    Some(Stop::Retry(format!(
        "no message for {WATCHDOG_PERIOD:?} while a write waited for {awaited} (the view is at {head})"
    )))
}

async fn snapshots_once(shared: &Shared) -> Stop {
    let prefix = super::setup::snapshot_stream(&shared.config.stream);
    // After a restart of this follower: the latest of every subject again
    // (applying one twice is harmless; they come in stream order).
    let consumer = match shared
        .snapshots
        .create_consumer(push::OrderedConfig {
            deliver_subject: shared.client.new_inbox(),
            deliver_policy: DeliverPolicy::LastPerSubject,
            filter_subject: format!("{prefix}.>"),
            ..Default::default()
        })
        .await
    {
        Ok(c) => c,
        Err(e) => return retry(e),
    };
    let mut messages = match consumer.messages().await {
        Ok(m) => m,
        Err(e) => return retry(e),
    };
    let mut head = shared.head.subscribe();
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(m) => m,
            Err(e) => return retry(e),
        };
        let seq = match message.info() {
            Ok(info) => info.stream_sequence,
            Err(e) => return retry(e),
        };
        let fatal = |why: &str| Stop::Fatal(format!("snapshot message {seq}: {why}"));
        let Some(aggregate_id) = subject::decode(&prefix, &message.subject) else {
            return fatal("its subject names no aggregate");
        };
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .and_then(|v| v.as_str().parse::<u64>().ok())
        };
        let (Some(version), Some(at_seq)) = (header(SNAPSHOT_VERSION), header(SNAPSHOT_SEQ)) else {
            return fatal("no valid version headers");
        };
        let Ok(state) =
            serde_json::from_slice::<Box<serde_json::value::RawValue>>(&message.payload)
        else {
            return fatal("its state is not JSON");
        };
        // The view must hold the event the snapshot was taken at.
        if head.wait_for(|&h| h >= at_seq).await.is_err() {
            return Stop::Fatal("the event follower is gone".to_owned());
        }
        shared
            .view
            .apply_replicated_snapshot(&aggregate_id, Version(version), &state);
        shared.snapshots_applied.send_modify(|s| *s = (*s).max(seq));
    }
    Stop::Retry("the snapshot consumer ended".to_owned())
}

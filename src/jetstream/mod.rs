//! The JetStream backend: a NATS JetStream stream as the replicated log,
//! the embedded engine as each front end's local view (feature
//! `jetstream`).
//!
//! # Design
//!
//! ```text
//!   writes ──► write.rs: decide on the view, publish with an expectation ──► JetStream (R replicas)
//!                                                                                │
//!   reads ◄── the view (an EventStore) ◄── follower.rs: ordered consumers ◄─────┘
//! ```
//!
//! - **The log** is the event stream: one message per event, its stream
//!   sequence the event's `sequence_number` (a rejected publish takes
//!   none, so they stay dense), one subject per aggregate with the category
//!   as its own token ([`subject`]), id/type/version/metadata in headers
//!   ([`headers`]), batches as atomic batches. Snapshots are the last
//!   message per subject of a second stream ([`setup`]).
//! - **The view** is an [`EventStore`] fed only by the followers
//!   ([`follower`]), in stream order: catch-up on start, then live. Every
//!   read, replay, state and subscription is served from it, at the
//!   embedded engine's speed. `recorded_at` is the running maximum of the
//!   stream's timestamps, so every view derives the same one.
//! - **Writes** ([`write`]) are decided on the view and published with
//!   `Nats-Expected-Last-Subject-Sequence`; the stream is the arbiter. A
//!   reply waits for the stream's acknowledgement (a quorum of replicas)
//!   and for the view to hold the write, so a front end reads its own
//!   writes.
//! - **The node pipelines writes** (`pipeline.rs`): its serial apply step
//!   submits each write and moves on (up to [`WINDOW`] in flight), appends
//!   to different aggregates are published without waiting for each
//!   other's acknowledgements, and replies wait for their own write in the
//!   node's ordered output. The library has the same pipeline
//!   ([`JetStream::submit_append`]); its blocking calls ([`JetStream::append`]
//!   and the others) are the one-at-a-time path (`write.rs`) that the
//!   pipeline falls back to.
//! - **Idle front ends** (`head_watch.rs`): the view's head is watched by the
//!   node's idle pusher, which hands events from other front ends to its
//!   subscribers while it gets no input (`node/idle.rs`).
//! - **The runtime**: the NATS client is async; a tokio runtime owned by
//!   [`JetStream`] runs it and the followers, and the API is blocking, like
//!   [`EventStore`]'s. Nothing outside this module sees tokio.
//!
//! # Guarantees
//!
//! - Acknowledged events are on a quorum of the stream's replicas: with 3
//!   replicas one server may be lost (killed, restarted, partitioned) and
//!   nothing acknowledged is lost or doubled.
//! - Sequence numbers are dense and the same in every view; versions along
//!   an aggregate are 1..n; a batch is visible whole or not at all.
//! - `Nats-Msg-Id` = the event id: a publish retried within the stream's
//!   duplicate window (default 120 s) is stored once; after it, the view
//!   knows the id (every event's id is indexed), so a client retry is still
//!   recognised.
//! - When JetStream cannot be reached within the bounded wait
//!   ([`JetStreamConfig::unavailable_after`]), a write gets error 11 and
//!   reads go on from the view.
//! - Only front ends write the stream: a foreign message stops the view
//!   (see [`follower`]).

pub mod error;
mod follower;
mod gather;
mod head;
mod head_watch;
pub mod headers;
mod pipeline;
mod resolver;
pub mod setup;
pub mod subject;
mod submitter;
mod write;

pub use error::JetStreamError;
pub use pipeline::WINDOW;

use crate::event::NewEvent;
pub use crate::protocol::BackendError;
use crate::protocol::{Backend, Ticket, ViewWatch, Written};
use crate::store::{Appended, EventStore, Prepared};
use crate::types::{ExpectedVersion, JsonText, SequenceNumber, Version};
use async_nats::jetstream;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How a front end reaches JetStream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// Server URLs (`nats://host:port`); any one reachable is enough.
    pub urls: Vec<String>,
    /// The event stream's name (also the subject prefix); the snapshot
    /// stream is `<stream>_snapshots`.
    pub stream: String,
    /// Replicas of both streams when this front end creates them.
    pub replicas: usize,
    /// The bounded wait of a write: past it, error 11.
    pub unavailable_after: Duration,
    /// How long connecting, creating the streams and the first catch-up may
    /// take.
    pub startup_timeout: Duration,
    /// The stream's `Nats-Msg-Id` duplicate window when this front end
    /// creates it.
    pub duplicate_window: Duration,
}

/// The default stream name.
pub const DEFAULT_STREAM: &str = "eventstore";
/// The default replica count.
pub const DEFAULT_REPLICAS: usize = 3;

impl Default for JetStreamConfig {
    fn default() -> Self {
        JetStreamConfig {
            urls: vec!["nats://127.0.0.1:4222".to_owned()],
            stream: DEFAULT_STREAM.to_owned(),
            replicas: DEFAULT_REPLICAS,
            unavailable_after: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(60),
            duplicate_window: Duration::from_secs(120),
        }
    }
}

impl JetStreamConfig {
    /// A configuration for the comma-separated `urls`, defaults otherwise.
    pub fn new(urls: &str) -> JetStreamConfig {
        JetStreamConfig {
            urls: urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect(),
            ..JetStreamConfig::default()
        }
    }

    fn check(&self) -> Result<(), JetStreamError> {
        if self.urls.is_empty() {
            return Err(JetStreamError::Config("no server URL given".into()));
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.stream.is_empty() || !self.stream.chars().all(valid) {
            return Err(JetStreamError::Config(format!(
                "stream name {:?}: use letters, digits, '-' and '_' only",
                self.stream
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(JetStreamError::Config(format!(
                "{} replicas: JetStream takes 1 to 5",
                self.replicas
            )));
        }
        Ok(())
    }
}

/// What the writers and the followers share.
pub(crate) struct Shared {
    config: JetStreamConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    events: jetstream::stream::Stream,
    snapshots: jetstream::stream::Stream,
    view: Arc<EventStore>,
    /// The view's head, raised by the event follower after each append.
    head: head::Head,
    /// The last snapshot-stream sequence the snapshot follower applied.
    snapshots_applied: watch::Sender<u64>,
    /// A follower's fatal problem: the view stopped there.
    failed: Mutex<Option<String>>,
    /// The writes in flight (`pipeline.rs`).
    pipeline: pipeline::Pipeline,
    /// The last diagnostic written, so a flapping follower does not flood
    /// stderr.
    last_note: Mutex<Option<(String, std::time::Instant)>>,
}

impl Shared {
    /// Why the front end stopped taking writes: a follower's fatal
    /// problem, or a panic in the write pipeline.
    fn failure(&self) -> Option<String> {
        self.failed.lock().clone().or_else(|| {
            self.pipeline
                .panicked()
                .map(|what| format!("the write pipeline panicked: {what}"))
        })
    }

    fn fail(&self, why: String) {
        eprintln!("eventstore: JetStream view stopped: {why}");
        self.failed.lock().get_or_insert(why);
        // Wake writers waiting for the view: they report the failure.
        self.head.stop();
    }

    fn note(&self, what: &str) {
        let mut last = self.last_note.lock();
        let quiet = last
            .as_ref()
            .is_some_and(|(w, at)| w == what && at.elapsed() < Duration::from_secs(10));
        if !quiet {
            eprintln!("eventstore: {what}");
            *last = Some((what.to_owned(), std::time::Instant::now()));
        }
    }
}

/// A front end on JetStream: the same operations as [`EventStore`], the
/// log replicated (see the module docs). Reads go to [`JetStream::view`].
pub struct JetStream {
    shared: Arc<Shared>,
    /// The node's writes go through it (`Backend`). Its task ends with the
    /// runtime's shutdown (in `drop`), which drops what is still queued:
    /// those tickets are answered with error 11.
    submitter: submitter::Submitter,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for JetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStream")
            .field("stream", &self.shared.config.stream)
            .field("urls", &self.shared.config.urls)
            .field("view_head", &self.shared.view.head())
            .finish()
    }
}

impl JetStream {
    /// Connects, creates the streams if needed, starts the followers and
    /// waits until the view holds everything the stream held at the start.
    pub fn connect(config: JetStreamConfig) -> Result<JetStream, JetStreamError> {
        config.check()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            // One worker: the submit task, the resolver, the followers and
            // the client's connection all run on it, so handing work between
            // them wakes no other thread. Measured on 50,000 seed requests
            // against two workers: 20% less CPU per message and half the
            // context switches (~18k against ~38k); at ~25 µs per message
            // one thread keeps up with the cluster on this machine.
            .worker_threads(1)
            .thread_name("eventstore-nats")
            .enable_all()
            .build()
            .map_err(JetStreamError::Runtime)?;
        let shared = runtime.block_on(start(config))?;
        let js = JetStream {
            submitter: submitter::Submitter::start(Arc::clone(&shared), &runtime),
            shared,
            runtime: Some(runtime),
        };
        js.catch_up_within(js.shared.config.startup_timeout)?;
        Ok(js)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        match &self.runtime {
            Some(r) => r,
            None => unreachable!("the runtime is only taken on drop"),
        }
    }

    /// The local view: serve reads, replays, states and subscriptions from
    /// it. Never write to it directly.
    pub fn view(&self) -> &Arc<EventStore> {
        &self.shared.view
    }

    /// The configuration in use.
    pub fn config(&self) -> &JetStreamConfig {
        &self.shared.config
    }

    /// Appends `events` to `aggregate_id` at `expected` (see
    /// [`EventStore::append`]); returns once the stream acknowledged them
    /// and the view holds them.
    pub fn append(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent<'_>],
    ) -> Result<Appended, BackendError> {
        let prepared = EventStore::prepare(aggregate_id, events)
            .map_err(|e| BackendError::Append(e.into()))?;
        self.append_prepared(aggregate_id, expected, prepared)
    }

    /// [`JetStream::append`] of prepared events ([`EventStore::prepare`]).
    pub fn append_prepared(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        prepared: Prepared,
    ) -> Result<Appended, BackendError> {
        self.runtime()
            .block_on(self.shared.append(aggregate_id, expected, prepared))
    }

    /// Submits an append without waiting for it: many can be in flight
    /// from one thread (up to [`WINDOW`]; beyond, this call waits for room).
    /// Appends submitted through one `JetStream` are decided in submission
    /// order, each outcome (sequence numbers included) the one that calling
    /// [`JetStream::append`] for each in turn would give; appends to
    /// different aggregates do not wait for each other's acknowledgements.
    /// [`PendingAppend::wait`] returns the outcome. Blocking: not for an
    /// async context (like the rest of this API).
    pub fn submit_append(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent<'_>],
    ) -> PendingAppend {
        match EventStore::prepare(aggregate_id, events) {
            Ok(prepared) => PendingAppend(self.submitter.append(aggregate_id, expected, prepared)),
            Err(e) => PendingAppend(Ticket::ready(Err(BackendError::Append(e.into())))),
        }
    }

    /// Saves a snapshot (see [`EventStore::create_snapshot`]); returns once
    /// the stream acknowledged it and the view holds it.
    pub fn create_snapshot(
        &self,
        aggregate_id: &str,
        expected: Option<Version>,
        state: Option<JsonText<'_>>,
    ) -> Result<Version, BackendError> {
        self.runtime()
            .block_on(self.shared.create_snapshot(aggregate_id, expected, state))
    }

    /// Waits until the view holds every event the stream holds now (and
    /// every snapshot): after it, reads see every write acknowledged to
    /// anyone before the call.
    pub fn catch_up(&self) -> Result<SequenceNumber, JetStreamError> {
        self.catch_up_within(self.shared.config.unavailable_after)
    }

    fn catch_up_within(&self, limit: Duration) -> Result<SequenceNumber, JetStreamError> {
        let shared = Arc::clone(&self.shared);
        self.runtime().block_on(async move {
            let deadline = Instant::now() + limit;
            let unavailable = |what: &str| JetStreamError::Unavailable {
                what: what.to_owned(),
                waited: limit,
            };
            let events = last_sequence(&shared.events, deadline)
                .await
                .ok_or_else(|| unavailable("reading the event stream's last sequence"))?;
            let snapshots = last_sequence(&shared.snapshots, deadline)
                .await
                .ok_or_else(|| unavailable("reading the snapshot stream's last sequence"))?;
            let mut snaps = shared.snapshots_applied.subscribe();
            let caught_up = async {
                // Through `Head::wait`, as writers wait: the stream holds
                // `events`, so the follower's watchdog may act on it.
                shared.head.wait(events).await.is_ok()
                    && snaps.wait_for(|&s| s >= snapshots).await.is_ok()
            };
            match tokio::time::timeout_at(deadline, caught_up).await {
                Ok(true) => Ok(SequenceNumber(events)),
                _ => Err(match shared.failure() {
                    Some(why) => JetStreamError::Follower(why),
                    None => unavailable("catching the view up with the stream"),
                }),
            }
        })
    }
}

/// A stream's last sequence number, asked until the deadline.
async fn last_sequence(stream: &jetstream::stream::Stream, deadline: Instant) -> Option<u64> {
    let mut stream = stream.clone();
    loop {
        match stream.info().await {
            Ok(info) => return Some(info.state.last_sequence),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => return None,
        }
    }
}

async fn start(config: JetStreamConfig) -> Result<Arc<Shared>, JetStreamError> {
    let client = setup::connect(&config).await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2).min(config.unavailable_after))
        .max_ack_inflight(4096)
        .backpressure_on_inflight(true)
        .build(client.clone());
    let (events, snapshots) = setup::streams(&js, &config).await?;
    let shared = Arc::new(Shared {
        config,
        client,
        js,
        events,
        snapshots,
        view: Arc::new(EventStore::new()),
        head: head::Head::new(),
        snapshots_applied: watch::Sender::new(0),
        failed: Mutex::new(None),
        pipeline: pipeline::Pipeline::new(),
        last_note: Mutex::new(None),
    });
    tokio::spawn(follower::follow(
        Arc::clone(&shared),
        follower::Followed::Events,
    ));
    tokio::spawn(follower::follow(
        Arc::clone(&shared),
        follower::Followed::Snapshots,
    ));
    Ok(shared)
}

/// An append submitted with [`JetStream::submit_append`], under way.
#[derive(Debug)]
#[must_use = "an append's outcome (an error included) is known only by waiting for it"]
pub struct PendingAppend(Ticket);

impl PendingAppend {
    /// Waits for the outcome: once the stream acknowledged the events and
    /// the view holds them, or the error (error 11 when the front end is
    /// dropped first).
    pub fn wait(self) -> Result<Appended, BackendError> {
        match self.0.wait()? {
            Written::Appended(appended) => Ok(appended),
            Written::Snapshot(v) => unreachable!("an append answered as a snapshot at {v:?}"),
        }
    }
}

impl Drop for JetStream {
    fn drop(&mut self) {
        self.shared.pipeline.report();
        // The followers run until the process ends; do not wait for them.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Backend for JetStream {
    fn append(&self, aggregate_id: &str, expected: ExpectedVersion, prepared: Prepared) -> Ticket {
        self.submitter.append(aggregate_id, expected, prepared)
    }

    fn create_snapshot(
        &self,
        aggregate_id: &str,
        expected: Option<Version>,
        state: Option<String>,
    ) -> Ticket {
        self.submitter
            .create_snapshot(aggregate_id, expected, state)
    }

    fn settle(&self, aggregate_id: Option<&str>) {
        let tails = self.submitter.unsettled(aggregate_id);
        if !tails.is_empty() {
            self.runtime().block_on(pipeline::settled(tails));
        }
    }

    /// The view also grows with other front ends' events (`head_watch.rs`).
    fn watch_view(&self) -> Option<Arc<dyn ViewWatch>> {
        Some(Arc::new(head_watch::HeadWatch::new(
            self.shared.head.subscribe(),
            self.runtime().handle().clone(),
        )))
    }
}

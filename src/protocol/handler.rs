//! Acting on a decoded request and encoding its reply — the sans-IO core.
//!
//! Handling a line has three steps, split so the node can run two of them in
//! parallel:
//!
//! 1. [`decode`] (pure, parallel): bytes → [`Message`].
//! 2. [`Core::apply`] (serial, in input order): acts on the store and
//!    returns an [`Outcome`]. Every state change and every observation that
//!    depends on order happens here, and nothing else: reads capture an
//!    O(1) plan (a version, a head, a snapshot pointer) instead of copying
//!    events.
//! 3. [`encode`] (pure given the store, parallel): [`Outcome`] → reply
//!    bytes, executing the plans (folding, formatting events). Because
//!    stored events are immutable, encoding later gives the same bytes as
//!    encoding at apply time.
//!
//! [`Core::handle`] runs all three on one line, for tests.
//!
//! Encoding writes into a [`ReplySink`]: a buffer plus a hook called
//! between the pieces of a reply (each event of a long read) and after each
//! reply, where the node may write out what is buffered. That is how a
//! reply of 10,000 large events goes out without ever being whole in
//! memory; the protocol itself stays free of I/O.
//!
//! Once a durable store has failed ([`EventStore::storage_failure`]),
//! [`Core::apply`] answers every request with error 13: nothing is applied
//! after a gap in the log file, and reads are refused too, as the
//! in-memory view may hold writes that never became durable.

use super::backend::{Backend, BackendError, Ticket, Written};
use super::envelope::decode;
use super::request::{Code, Envelope, Message, Rejection, Request};
use super::sink::{ReplySink, write_events};
use super::subscriptions::{
    self, Delivery, Feed, FeedMark, Full, MAX_SUBSCRIPTIONS, Subscriber, Subscriptions,
};
use crate::aggregate::{Aggregate, SnapshotRecord};
use crate::error::{AppendError, ConcurrencyError};
use crate::filter::{Filter, PageBounds};
use crate::json;
use crate::store::{Appended, EventStore, FoldPlan};
use crate::types::{SequenceNumber, Version};
use std::sync::Arc;

/// Reads of at least this many events, or folds over at least this many,
/// count as long replies (see [`ReplySink::before_long_reply`]).
const LONG_REPLY_EVENTS: u64 = 256;

/// The serial state of a node: the store and the node id from `init`.
pub struct Core {
    store: Arc<EventStore>,
    /// The node id as JSON string text, once `init` has named it.
    node_id: Option<Arc<str>>,
    subscriptions: Subscriptions,
    /// Where writes go when the log is replicated (`None`: the store).
    backend: Option<Arc<dyn Backend>>,
    /// With a backend and live subscriptions: the mark of the last reply's
    /// [`Feed`], which the next reply's feed continues.
    feed_tail: Option<Arc<FeedMark>>,
    /// The view's head when the last [`Feed`] was made: the feeds made so
    /// far deliver at least up to there.
    fed_head: SequenceNumber,
}

/// What [`Core::idle_feed_state`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleFeed {
    /// Every event the view holds is delivered by a feed made already (or
    /// no subscription is live): nothing to do until the view grows.
    Covered,
    /// The last feed's reply is still being made, and it may deliver what
    /// the view holds (its own append's events): look again shortly.
    Unknown,
    /// The view holds events no feed made so far delivers.
    Wanted,
}

/// Whom a reply comes from.
#[derive(Debug, Clone)]
pub enum ReplySource {
    /// The request's `dest`.
    Dest,
    /// The node id from `init` (JSON string text).
    Node(Arc<str>),
    /// `"eventstore"`: no `dest`, no `init`.
    Default,
}

/// What applying a request produced; encoded into a reply by [`encode`].
#[derive(Debug)]
pub enum Outcome {
    /// The line gets no reply.
    Silent,
    /// An error reply.
    Error(Rejection),
    /// A successful append (or recognised retry).
    Appended {
        /// Where the events are.
        appended: Appended,
        /// The request used the batch form.
        batch: bool,
        /// The `event` messages it sends to subscribers.
        deliveries: Vec<Delivery>,
    },
    /// `subscribed`, then the catch-up: the matching events of
    /// `from..=head`.
    Subscribed {
        /// The new subscription.
        subscriber: Arc<Subscriber>,
        /// The head when it was made.
        head: SequenceNumber,
    },
    /// `unsubscribed`.
    Unsubscribed(u64),
    /// `all_read` with a filter: the matches within `bounds`, at most
    /// `max_count`, and `next_sequence`.
    AllReadFiltered {
        /// What the read looks at.
        bounds: PageBounds,
        /// Most matches to return.
        max_count: u64,
        /// The head when the request was applied.
        head: SequenceNumber,
        /// Which events.
        filter: Arc<Filter>,
    },
    /// A version mismatch.
    Concurrency(ConcurrencyError),
    /// `snapshot_created` at this version.
    SnapshotCreated(Version),
    /// `snapshot_read` of this record.
    SnapshotRead(Arc<Aggregate>, Arc<SnapshotRecord>),
    /// `replayed`, folding this plan.
    Replayed(FoldPlan, bool),
    /// `state`, folding this plan.
    State(FoldPlan),
    /// `stream_read` of versions `from..=to` with the aggregate at `version`.
    StreamRead {
        /// The aggregate's version when the request was applied.
        version: Version,
        /// First version to include.
        from: Version,
        /// Last version to include.
        to: Version,
    },
    /// `all_read` of sequence numbers `from..=to`, with the head then.
    AllRead {
        /// First sequence number to include.
        from: u64,
        /// Last sequence number to include.
        to: u64,
        /// The head when the request was applied.
        head: SequenceNumber,
    },
    /// `init_ok`.
    InitOk,
    /// A backend write under way: resolved into one of the outcomes above
    /// when the reply is encoded (see [`super::backend`]).
    Pending {
        /// The write.
        ticket: Ticket,
        /// The request used the batch form (appends).
        batch: bool,
    },
    /// An outcome followed by the `event` messages of a replicated log's
    /// [`Feed`] (a node with a backend and live subscriptions).
    Fed(Box<Outcome>, Feed),
}

/// Step 1½ (pure lookups, parallel, optional): finds the aggregate an
/// append goes to, if it exists, so that [`Core::apply`] skips the map
/// lookup — in the node the lookup's cache misses then fall on the parallel
/// workers instead of the serial step. Never creates an aggregate, and an
/// aggregate once in the map stays the same object for good, so what this
/// finds is still right when the append is applied later.
pub fn resolve(store: &EventStore, message: &mut Message<'_>) {
    if let Message::Envelope(Envelope {
        request:
            Ok(Request::Append {
                aggregate_id,
                aggregate,
                ..
            }),
        ..
    }) = message
    {
        *aggregate = store.find(aggregate_id);
    }
}

impl Core {
    /// A core serving `store`.
    pub fn new(store: Arc<EventStore>) -> Core {
        Core {
            store,
            node_id: None,
            subscriptions: Subscriptions::default(),
            backend: None,
            feed_tail: None,
            fed_head: SequenceNumber::ZERO,
        }
    }

    /// A core whose appends and snapshots go to `backend` (when given),
    /// `store` being its local view (see [`super::backend`]).
    pub fn with_backend(store: Arc<EventStore>, backend: Option<Arc<dyn Backend>>) -> Core {
        Core {
            backend,
            ..Core::new(store)
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<EventStore> {
        &self.store
    }

    /// Decodes, applies and encodes one line, appending the reply (if any,
    /// with its newline) to `out`. Returns the stderr diagnostic of a line
    /// that gets no reply.
    pub fn handle(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<String> {
        let mut message = decode(line);
        let (source, outcome) = self.apply(&mut message);
        encode(&self.store, &message, source, outcome, out)
    }

    /// Step 2: acts on the store in input order.
    pub fn apply(&mut self, message: &mut Message<'_>) -> (ReplySource, Outcome) {
        let Message::Envelope(envelope) = message else {
            return (ReplySource::Default, Outcome::Silent);
        };
        let outcome = match &mut envelope.request {
            Err(rejection) => Outcome::Error(rejection.clone()),
            Ok(_) if let Some(failure) = self.store.storage_failure() => {
                Outcome::Error(Rejection {
                    code: Code::Crash,
                    text: failure.to_string(),
                })
            }
            Ok(Request::Subscribe {
                from_sequence,
                filter,
            }) => {
                if let Some(backend) = &self.backend {
                    backend.settle(None);
                }
                let node = source_text(&self.source(envelope.dest.is_some()), envelope.dest);
                let client = Arc::from(envelope.src.get());
                self.subscribe(node, client, *from_sequence, Arc::clone(filter))
            }
            Ok(request) => {
                if let Some(backend) = &self.backend {
                    settle_for(backend.as_ref(), request);
                }
                self.apply_request(request)
            }
        };
        let outcome = self.feed(outcome);
        // After applying: the reply to `init` comes from the id it gave.
        (self.source(envelope.dest.is_some()), outcome)
    }

    /// With a backend, while subscriptions are live: the reply's share of
    /// the log for them (see [`Feed`]).
    fn feed(&mut self, outcome: Outcome) -> Outcome {
        match self.next_feed() {
            Some(feed) => Outcome::Fed(Box::new(outcome), feed),
            None => outcome,
        }
    }

    /// The next link of the chain of [`Feed`]s, while a backend's
    /// subscriptions are live.
    fn next_feed(&mut self) -> Option<Feed> {
        let subscribers = match &self.backend {
            Some(_) => self.subscriptions.live(),
            None => Vec::new(),
        };
        if subscribers.is_empty() {
            self.feed_tail = None;
            return None;
        }
        let head = self.store.head();
        let prev = self
            .feed_tail
            .take()
            .unwrap_or_else(|| FeedMark::at(head.0));
        let own = Arc::new(FeedMark::default());
        self.feed_tail = Some(Arc::clone(&own));
        self.fed_head = head;
        Some(Feed {
            prev,
            own,
            head,
            subscribers,
        })
    }

    /// Whether the view holds events for live subscriptions that no
    /// [`Feed`] made so far delivers: events from other writers of the
    /// replicated log that arrived after the last request was applied (see
    /// [`IdleFeed`]). Always [`IdleFeed::Covered`] without a backend.
    pub fn idle_feed_state(&self) -> IdleFeed {
        if self.backend.is_none() || self.subscriptions.is_empty() {
            return IdleFeed::Covered;
        }
        let head = self.store.head();
        if head <= self.fed_head {
            // The feeds made deliver at least up to `fed_head`.
            return IdleFeed::Covered;
        }
        match self.feed_tail.as_ref().map(|tail| tail.get()) {
            None => IdleFeed::Covered,
            // The last feed is delivered, and up to here.
            Some(Some(upto)) if head.0 <= upto => IdleFeed::Covered,
            Some(Some(_)) => IdleFeed::Wanted,
            // Its reply is still being made: it may deliver up to its own
            // append's events, beyond `fed_head`.
            Some(None) => IdleFeed::Unknown,
        }
    }

    /// A [`Feed`] of its own, with no reply before it: the node's idle
    /// pusher (`node/idle.rs`) applies it in a turn of its own while no
    /// input comes, and delivers it like the feed of a reply. `None` unless
    /// [`Core::idle_feed_state`] is [`IdleFeed::Wanted`].
    pub fn idle_feed(&mut self) -> Option<Feed> {
        match self.idle_feed_state() {
            IdleFeed::Wanted => self.next_feed(),
            IdleFeed::Covered | IdleFeed::Unknown => None,
        }
    }

    /// Whom a reply comes from.
    fn source(&self, has_dest: bool) -> ReplySource {
        if has_dest {
            ReplySource::Dest
        } else if let Some(id) = &self.node_id {
            ReplySource::Node(Arc::clone(id))
        } else {
            ReplySource::Default
        }
    }

    fn subscribe(
        &mut self,
        node: Arc<str>,
        client: Arc<str>,
        from_sequence: Option<SequenceNumber>,
        filter: Arc<Filter>,
    ) -> Outcome {
        let head = self.store.head();
        // 0 and 1 both mean the first event; none given: only new events.
        let from = from_sequence.map_or(SequenceNumber(head.0 + 1), |s| SequenceNumber(s.0.max(1)));
        match self.subscriptions.add(node, client, filter, from, head) {
            Ok(subscriber) => Outcome::Subscribed { subscriber, head },
            Err(Full) => Outcome::Error(Rejection {
                code: Code::TemporarilyUnavailable,
                text: format!(
                    "too many subscriptions: a node holds at most {MAX_SUBSCRIPTIONS}; unsubscribe first"
                ),
            }),
        }
    }

    fn apply_request(&mut self, request: &mut Request<'_>) -> Outcome {
        let store = &*self.store;
        match request {
            Request::Append {
                aggregate_id,
                expected,
                prepared,
                aggregate,
                batch,
            } => match (prepared.take(), &self.backend) {
                // Applying one message twice is a bug in the caller.
                (None, _) => Outcome::Error(Rejection {
                    code: Code::Crash,
                    text: "request applied twice".into(),
                }),
                (Some(p), None) => {
                    let result = store
                        .append_prepared_to(aggregate.take(), aggregate_id, *expected, p)
                        .map_err(BackendError::Append);
                    let deliveries = |a: &Appended| self.subscriptions.deliveries(store, a);
                    append_outcome(result, *batch, deliveries)
                }
                (Some(p), Some(backend)) => Outcome::Pending {
                    ticket: backend.append(aggregate_id, *expected, p),
                    batch: *batch,
                },
            },
            Request::CreateSnapshot {
                aggregate_id,
                expected,
                state,
            } => match &self.backend {
                None => match store.create_snapshot_deferred(aggregate_id, *expected, *state) {
                    Ok(v) => Outcome::SnapshotCreated(v),
                    Err(e) => refused(BackendError::Append(e)),
                },
                Some(backend) => Outcome::Pending {
                    ticket: backend.create_snapshot(
                        aggregate_id,
                        *expected,
                        state.map(|s| s.get().to_owned()),
                    ),
                    batch: false,
                },
            },
            Request::ReadSnapshot { aggregate_id } => match store.snapshot_record(aggregate_id) {
                Some((aggregate, record)) => Outcome::SnapshotRead(aggregate, record),
                None => Outcome::Error(Rejection {
                    code: Code::KeyDoesNotExist,
                    text: format!("aggregate {aggregate_id:?} has no snapshot"),
                }),
            },
            Request::Replay {
                aggregate_id,
                use_snapshot,
            } => Outcome::Replayed(
                store.replay_plan(aggregate_id, *use_snapshot),
                *use_snapshot,
            ),
            Request::GetState {
                aggregate_id, at, ..
            } => Outcome::State(store.state_plan(aggregate_id, *at)),
            Request::ReadStream {
                aggregate_id,
                from_version,
                max_count,
            } => {
                let version = store.version(aggregate_id);
                let from = Version(from_version.0.max(1));
                let to = Version(
                    from.0
                        .saturating_add(*max_count)
                        .saturating_sub(1)
                        .min(version.0),
                );
                Outcome::StreamRead { version, from, to }
            }
            Request::ReadAll {
                from_sequence,
                max_count,
                filter: Some(filter),
            } => {
                let head = store.head();
                Outcome::AllReadFiltered {
                    bounds: PageBounds::new(*from_sequence, head),
                    max_count: *max_count,
                    head,
                    filter: Arc::clone(filter),
                }
            }
            Request::Subscribe { .. } => {
                unreachable!("subscribe is applied with its envelope (Core::apply)")
            }
            Request::Unsubscribe { subscription } => {
                if self.subscriptions.remove(*subscription) {
                    Outcome::Unsubscribed(*subscription)
                } else {
                    Outcome::Error(Rejection {
                        code: Code::KeyDoesNotExist,
                        text: format!("subscription {subscription} does not exist"),
                    })
                }
            }
            Request::ReadAll {
                from_sequence,
                max_count,
                filter: None,
            } => {
                let head = store.head();
                let from = from_sequence.0.max(1);
                let to = from
                    .saturating_add(*max_count)
                    .saturating_sub(1)
                    .min(head.0);
                Outcome::AllRead { from, to, head }
            }
            Request::Init { node_id } => {
                let mut text = Vec::with_capacity(node_id.len() + 2);
                json::write_str(&mut text, node_id);
                self.node_id = Some(String::from_utf8_lossy(&text).into());
                Outcome::InitOk
            }
        }
    }
}

/// Step 3: writes the reply line for `outcome` (nothing for a silent one)
/// and returns the stderr diagnostic of an unanswerable line.
pub fn encode(
    store: &EventStore,
    message: &Message<'_>,
    source: ReplySource,
    outcome: Outcome,
    sink: &mut impl ReplySink,
) -> Option<String> {
    let envelope = match message {
        Message::Unanswerable(why) => return Some(why.clone()),
        Message::Envelope(e) => e,
    };
    let (outcome, feed) = match outcome {
        Outcome::Fed(outcome, feed) => (resolve_pending(*outcome), Some(feed)),
        outcome => (resolve_pending(outcome), None),
    };
    let appended_last = match &outcome {
        Outcome::Appended { appended, .. } => appended.positions.iter().last(),
        _ => None,
    };
    if is_long(&outcome) {
        sink.before_long_reply();
    }
    write_head(envelope, &source, reply_type(&outcome), sink.buffer());
    let trailer = encode_fields(store, envelope, outcome, sink);
    sink.buffer().extend_from_slice(b"}}\n");
    sink.boundary();
    match trailer {
        Trailer::Nothing => {}
        Trailer::Deliveries(deliveries) => {
            for d in &deliveries {
                subscriptions::write_event_message(store, &d.subscriber, d.seq, sink.buffer());
                sink.boundary();
            }
        }
        Trailer::CatchUp(subscriber, head) => {
            subscriptions::write_catch_up(store, &subscriber, head, sink);
        }
    }
    if let Some(feed) = feed {
        feed.deliver(store, appended_last, sink);
    }
    None
}

impl Outcome {
    /// The backend write this outcome waits for, if any.
    pub fn ticket(&mut self) -> Option<&mut Ticket> {
        match self {
            Outcome::Pending { ticket, .. } => Some(ticket),
            Outcome::Fed(outcome, _) => outcome.ticket(),
            _ => None,
        }
    }
}

/// Waits for a backend write and turns it into its outcome.
/// (Its `event` messages, if any, come from the reply's [`Feed`].)
fn resolve_pending(outcome: Outcome) -> Outcome {
    let Outcome::Pending { ticket, batch } = outcome else {
        return outcome;
    };
    match ticket.wait() {
        Ok(Written::Appended(appended)) => append_outcome(Ok(appended), batch, |_| Vec::new()),
        Ok(Written::Snapshot(version)) => Outcome::SnapshotCreated(version),
        Err(e) => refused(e),
    }
}

/// Makes the backend settle the writes a read could observe.
fn settle_for(backend: &dyn Backend, request: &Request<'_>) {
    match request {
        Request::ReadSnapshot { aggregate_id }
        | Request::Replay { aggregate_id, .. }
        | Request::GetState { aggregate_id, .. }
        | Request::ReadStream { aggregate_id, .. } => backend.settle(Some(aggregate_id)),
        Request::ReadAll { .. } | Request::Subscribe { .. } => backend.settle(None),
        Request::Append { .. }
        | Request::CreateSnapshot { .. }
        | Request::Unsubscribe { .. }
        | Request::Init { .. } => {}
    }
}

/// The outcome of an append (or, for its errors, of a snapshot).
fn append_outcome(
    result: Result<Appended, BackendError>,
    batch: bool,
    deliveries: impl FnOnce(&Appended) -> Vec<Delivery>,
) -> Outcome {
    match result {
        Ok(appended) => Outcome::Appended {
            deliveries: deliveries(&appended),
            appended,
            batch,
        },
        Err(e) => refused(e),
    }
}

/// What follows a reply line: `event` messages.
enum Trailer {
    Nothing,
    /// Those of a fresh append.
    Deliveries(Vec<Delivery>),
    /// A new subscription's catch-up, up to the head when it was made.
    CatchUp(Arc<Subscriber>, SequenceNumber),
}

/// Writes the start of `message`'s reply as an error reply, up to and
/// including `in_reply_to`, followed by a newline (nothing for a line that
/// gets no reply). The node keeps these for replies not yet written on a
/// durable store: if the disk fails before they are durable, each becomes
/// error 13 with [`finish_error`].
pub fn encode_error_head(message: &Message<'_>, source: &ReplySource, out: &mut Vec<u8>) {
    if let Message::Envelope(envelope) = message {
        write_head(envelope, source, "error", out);
        out.push(b'\n');
    }
}

/// Completes a head from [`encode_error_head`] (given without its newline)
/// into an error reply line with `code` and `text`.
pub fn finish_error(head: &[u8], code: Code, text: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(head);
    out.extend_from_slice(b",\"code\":");
    json::write_u64(out, code.number());
    out.extend_from_slice(b",\"text\":");
    json::write_str(out, text);
    out.extend_from_slice(b"}}\n");
}

/// `{"src":…,"dest":…,"body":{"type":"<kind>"` and `in_reply_to`.
fn write_head(envelope: &Envelope<'_>, source: &ReplySource, kind: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"src\":");
    match source {
        ReplySource::Dest => out.extend_from_slice(
            envelope
                .dest
                .map_or("\"eventstore\"", |d| d.get())
                .as_bytes(),
        ),
        ReplySource::Node(id) => out.extend_from_slice(id.as_bytes()),
        ReplySource::Default => out.extend_from_slice(b"\"eventstore\""),
    }
    out.extend_from_slice(b",\"dest\":");
    out.extend_from_slice(envelope.src.get().as_bytes());
    out.extend_from_slice(b",\"body\":{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.push(b'"');
    if let Some(id) = envelope.msg_id {
        out.extend_from_slice(b",\"in_reply_to\":");
        json::write_u64(out, id);
    }
}

/// Whether encoding `outcome` takes long (many events to format or fold).
fn is_long(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::AllRead { from, to, .. } => to.saturating_sub(*from) >= LONG_REPLY_EVENTS,
        Outcome::StreamRead { from, to, .. } => to.0.saturating_sub(from.0) >= LONG_REPLY_EVENTS,
        Outcome::Replayed(plan, _) | Outcome::State(plan) => {
            plan.events_at_most() >= LONG_REPLY_EVENTS
        }
        _ => false,
    }
}

fn reply_type(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Silent | Outcome::Error(_) => "error",
        Outcome::Appended { .. } => "appended",
        Outcome::Concurrency(_) => "concurrency_error",
        Outcome::SnapshotCreated(_) => "snapshot_created",
        Outcome::SnapshotRead(..) => "snapshot_read",
        Outcome::Replayed(..) => "replayed",
        Outcome::State(_) => "state",
        Outcome::StreamRead { .. } => "stream_read",
        Outcome::AllRead { .. } | Outcome::AllReadFiltered { .. } => "all_read",
        Outcome::Subscribed { .. } => "subscribed",
        Outcome::Unsubscribed(_) => "unsubscribed",
        Outcome::InitOk => "init_ok",
        Outcome::Pending { .. } | Outcome::Fed(..) => unreachable!("resolved before encoding"),
    }
}

fn aggregate_field(envelope: &Envelope<'_>, out: &mut Vec<u8>) {
    if let Ok(
        Request::CreateSnapshot { aggregate_id, .. }
        | Request::ReadSnapshot { aggregate_id }
        | Request::Replay { aggregate_id, .. }
        | Request::GetState { aggregate_id, .. }
        | Request::ReadStream { aggregate_id, .. },
    ) = &envelope.request
    {
        out.extend_from_slice(b",\"aggregate_id\":");
        json::write_str(out, aggregate_id);
    }
}

fn encode_fields(
    store: &EventStore,
    envelope: &Envelope<'_>,
    outcome: Outcome,
    sink: &mut impl ReplySink,
) -> Trailer {
    // Only the event lists are written piece by piece; every other field is
    // small or (a folded state) one piece.
    match outcome {
        Outcome::Appended {
            appended,
            batch,
            deliveries,
        } => {
            encode_appended(store, &appended, batch, sink.buffer());
            if !deliveries.is_empty() {
                return Trailer::Deliveries(deliveries);
            }
        }
        Outcome::Subscribed { subscriber, head } => {
            let out = sink.buffer();
            out.extend_from_slice(b",\"subscription\":");
            json::write_u64(out, subscriber.id);
            out.extend_from_slice(b",\"head\":");
            json::write_u64(out, head.0);
            return Trailer::CatchUp(subscriber, head);
        }
        Outcome::Unsubscribed(id) => {
            let out = sink.buffer();
            out.extend_from_slice(b",\"subscription\":");
            json::write_u64(out, id);
        }
        Outcome::AllReadFiltered {
            bounds,
            max_count,
            head,
            filter,
        } => {
            sink.buffer().extend_from_slice(b",\"events\":[");
            let (mut found, mut last) = (0, None);
            let matches = store.matching(&filter, bounds, max_count).inspect(|seq| {
                found += 1;
                last = Some(seq.0);
            });
            write_events(store, matches, sink);
            let out = sink.buffer();
            out.extend_from_slice(b"],\"next_sequence\":");
            json::write_u64(out, bounds.next_sequence(max_count, found, last));
            out.extend_from_slice(b",\"head\":");
            json::write_u64(out, head.0);
        }
        Outcome::StreamRead { version, from, to } => {
            let out = sink.buffer();
            aggregate_field(envelope, out);
            out.extend_from_slice(b",\"version\":");
            json::write_u64(out, version.0);
            out.extend_from_slice(b",\"events\":[");
            if let Ok(Request::ReadStream { aggregate_id, .. }) = &envelope.request {
                let seqs = store.stream_positions(aggregate_id, from, to);
                write_events(store, seqs.into_iter(), sink);
            }
            sink.buffer().push(b']');
        }
        Outcome::AllRead { from, to, head } => {
            sink.buffer().extend_from_slice(b",\"events\":[");
            write_events(store, (from..=to).map(SequenceNumber), sink);
            let out = sink.buffer();
            out.extend_from_slice(b"],\"head\":");
            json::write_u64(out, head.0);
        }
        outcome => encode_small_fields(store, envelope, outcome, sink.buffer()),
    }
    Trailer::Nothing
}

fn encode_small_fields(
    store: &EventStore,
    envelope: &Envelope<'_>,
    outcome: Outcome,
    out: &mut Vec<u8>,
) {
    match outcome {
        Outcome::Silent | Outcome::InitOk => {}
        Outcome::Error(r) => {
            out.extend_from_slice(b",\"code\":");
            json::write_u64(out, r.code.number());
            out.extend_from_slice(b",\"text\":");
            json::write_str(out, &r.text);
        }
        Outcome::Concurrency(e) => {
            out.extend_from_slice(b",\"error\":");
            json::write_str(out, &e.to_string());
        }
        Outcome::Appended { .. }
        | Outcome::Subscribed { .. }
        | Outcome::Unsubscribed(_)
        | Outcome::AllReadFiltered { .. }
        | Outcome::Pending { .. }
        | Outcome::Fed(..) => {
            unreachable!("written by encode_fields")
        }
        Outcome::SnapshotCreated(version) => {
            aggregate_field(envelope, out);
            out.extend_from_slice(b",\"version\":");
            json::write_u64(out, version.0);
        }
        Outcome::SnapshotRead(aggregate, record) => {
            aggregate_field(envelope, out);
            let mut state = Vec::new();
            let version = store.write_snapshot_state(&aggregate, &record, &mut state);
            out.extend_from_slice(b",\"version\":");
            json::write_u64(out, version.0);
            out.extend_from_slice(b",\"state\":");
            out.extend_from_slice(&state);
        }
        Outcome::Replayed(plan, use_snapshot) => {
            aggregate_field(envelope, out);
            if use_snapshot {
                out.extend_from_slice(b",\"snapshot_version\":");
                json::write_u64(out, plan.snapshot_version().0);
            }
            let mut state = Vec::new();
            let folded = plan.write_state(store, &mut state);
            out.extend_from_slice(b",\"events_replayed\":");
            json::write_u64(out, folded);
            out.extend_from_slice(b",\"state\":");
            out.extend_from_slice(&state);
        }
        Outcome::State(plan) => {
            aggregate_field(envelope, out);
            if let Ok(Request::GetState { timestamp, .. }) = &envelope.request {
                out.extend_from_slice(b",\"timestamp\":");
                out.extend_from_slice(timestamp.get().as_bytes());
            }
            out.extend_from_slice(b",\"state\":");
            plan.write_state(store, out);
        }
        Outcome::StreamRead { .. } | Outcome::AllRead { .. } => {
            unreachable!("event lists are written by encode_fields")
        }
    }
}

/// The JSON text of a reply's `src`.
fn source_text(source: &ReplySource, dest: Option<crate::types::JsonText<'_>>) -> Arc<str> {
    match source {
        ReplySource::Dest => Arc::from(dest.map_or("\"eventstore\"", |d| d.get())),
        ReplySource::Node(id) => Arc::clone(id),
        ReplySource::Default => Arc::from("\"eventstore\""),
    }
}

/// The reply to a refused append or snapshot.
fn refused(e: BackendError) -> Outcome {
    let (code, text) = match e {
        BackendError::Append(AppendError::Concurrency(e)) => return Outcome::Concurrency(e),
        BackendError::Append(AppendError::IdConflict(e)) => {
            (Code::PreconditionFailed, e.to_string())
        }
        BackendError::Append(AppendError::Invalid(e)) => (Code::MalformedRequest, e.to_string()),
        // The request is fine: the store has no room for it (nothing was
        // appended).
        BackendError::Append(e @ AppendError::Full { .. }) => {
            (Code::TemporarilyUnavailable, e.to_string())
        }
        // Only when the store failed before this write (a deferred write
        // does no I/O; the failure itself surfaces in a sync).
        BackendError::Append(AppendError::Storage(e)) => (Code::Crash, e.to_string()),
        e @ BackendError::Unavailable(_) => (Code::TemporarilyUnavailable, e.to_string()),
    };
    Outcome::Error(Rejection { code, text })
}

fn encode_appended(store: &EventStore, appended: &Appended, batch: bool, out: &mut Vec<u8>) {
    // `recorded`, not `event`: the events of an append that returned are
    // visible (its node was done before it returned, and that happens
    // before this encode), so there is no need to read the head again.
    if !batch {
        let seq = appended.positions.first();
        out.extend_from_slice(b",\"event_id\":\"");
        if let Some(event) = store.recorded(seq) {
            event.id().write_to(out);
        }
        out.extend_from_slice(b"\",\"sequence_number\":");
        json::write_u64(out, seq.0);
        return;
    }
    out.extend_from_slice(b",\"event_ids\":[");
    for (i, seq) in appended.positions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        if let Some(event) = store.recorded(seq) {
            event.id().write_to(out);
        }
        out.push(b'"');
    }
    out.extend_from_slice(b"],\"sequence_numbers\":[");
    for (i, seq) in appended.positions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_u64(out, seq.0);
    }
    out.extend_from_slice(b"],\"version\":");
    json::write_u64(out, appended.version.0);
}

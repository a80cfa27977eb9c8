//! The node's subscriptions: who gets an `event` message for which event,
//! decided in the serial apply step so that the output stays what
//! one-at-a-time processing gives.
//!
//! A subscription is registered when its `subscribe` request is applied.
//! Its *catch-up* is the matching events already stored (from its
//! `from_sequence` up to the head at that moment), written right after the
//! `subscribed` reply; every event appended later is matched against the
//! live subscriptions when its append is applied, and its messages are
//! written right after that append's reply, in subscription order, one
//! event after the other. `unsubscribe` removes it at its own place in the
//! input, so no message of it follows the `unsubscribed` reply. All of this
//! is plain data decided in input order; the node's workers only encode it.

use super::sink::{ReplySink, write_event};
use crate::filter::{Filter, PageBounds};
use crate::json;
use crate::store::{Appended, EventStore};
use crate::types::SequenceNumber;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;

/// A node holds at most this many subscriptions; one more is error 11.
pub const MAX_SUBSCRIPTIONS: usize = 1_000;

/// One subscription.
#[derive(Debug)]
pub struct Subscriber {
    /// Its id (1, 2, … in the order subscriptions are made).
    pub id: u64,
    /// The `src` of its `event` messages — the `src` of the `subscribed`
    /// reply — as JSON text.
    pub node: Arc<str>,
    /// The subscriber (the `subscribe` request's `src`), as JSON text.
    pub client: Arc<str>,
    /// Which events it wants.
    pub filter: Arc<Filter>,
    /// The first sequence number it wants.
    pub from: SequenceNumber,
    /// The head when it was made: its catch-up covers the events up to
    /// there, `event` messages only later ones.
    pub after: SequenceNumber,
}

/// An `event` message to write: event `seq` for `subscriber`.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event.
    pub seq: SequenceNumber,
    /// Whom it goes to.
    pub subscriber: Arc<Subscriber>,
}

/// The live subscriptions, in id order.
#[derive(Debug, Default)]
pub struct Subscriptions {
    last_id: u64,
    live: Vec<Arc<Subscriber>>,
}

/// Why a subscription was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Subscriptions {
    /// Registers a subscription, or refuses when [`MAX_SUBSCRIPTIONS`] are
    /// live.
    pub fn add(
        &mut self,
        node: Arc<str>,
        client: Arc<str>,
        filter: Arc<Filter>,
        from: SequenceNumber,
        after: SequenceNumber,
    ) -> Result<Arc<Subscriber>, Full> {
        if self.live.len() >= MAX_SUBSCRIPTIONS {
            return Err(Full);
        }
        self.last_id += 1;
        let subscriber = Arc::new(Subscriber {
            id: self.last_id,
            node,
            client,
            filter,
            from,
            after,
        });
        // Ids only rise, so pushing keeps the list in id order.
        assert!(self.live.last().is_none_or(|s| s.id < subscriber.id));
        self.live.push(Arc::clone(&subscriber));
        Ok(subscriber)
    }

    /// Removes subscription `id`; `false` if there is none.
    pub fn remove(&mut self, id: u64) -> bool {
        match self.live.binary_search_by_key(&id, |s| s.id) {
            Ok(i) => {
                self.live.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// The `event` messages a fresh append sends: for each of its events in
    /// order, one per matching subscription in subscription order. A retry
    /// appended nothing and sends nothing.
    pub fn deliveries(&self, store: &EventStore, appended: &Appended) -> Vec<Delivery> {
        deliveries_to(&self.live, store, appended)
    }

    /// Whether no subscription is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The live subscriptions now, in id order (for deliveries decided
    /// later, see [`deliveries_to`]).
    pub fn live(&self) -> Vec<Arc<Subscriber>> {
        self.live.clone()
    }
}

/// [`Subscriptions::deliveries`] to the subscriptions `live`.
pub fn deliveries_to(
    live: &[Arc<Subscriber>],
    store: &EventStore,
    appended: &Appended,
) -> Vec<Delivery> {
    {
        if live.is_empty() || appended.duplicate {
            return Vec::new();
        }
        let mut out = Vec::new();
        for seq in appended.positions.iter() {
            let Some(event) = store.event(seq) else {
                panic!("appended event {seq} is not in the log");
            };
            for subscriber in live {
                if seq >= subscriber.from && subscriber.filter.matches_event(&event) {
                    out.push(Delivery {
                        seq,
                        subscriber: Arc::clone(subscriber),
                    });
                }
            }
        }
        out
    }
}

/// One link of the chain that hands out the events of a replicated log to
/// a node's subscribers (see [`Feed`]): the sequence number up to which the
/// replies before it delivered, set once.
#[derive(Debug, Default)]
pub struct FeedMark {
    upto: Mutex<Option<u64>>,
    set: Condvar,
}

impl FeedMark {
    /// A mark set to `upto` already.
    pub fn at(upto: u64) -> Arc<FeedMark> {
        Arc::new(FeedMark {
            upto: Mutex::new(Some(upto)),
            set: Condvar::new(),
        })
    }

    /// The mark, if set.
    pub fn get(&self) -> Option<u64> {
        *self.upto.lock()
    }

    fn wait(&self) -> u64 {
        let mut upto = self.upto.lock();
        loop {
            if let Some(n) = *upto {
                return n;
            }
            self.set.wait(&mut upto);
        }
    }

    fn set(&self, n: u64) {
        let mut upto = self.upto.lock();
        if upto.is_none() {
            *upto = Some(n);
            self.set.notify_all();
        }
    }
}

/// The `event` messages that follow one reply on a node whose store is the
/// view of a replicated log, where events also come from other front ends.
/// Replies hand out the log in input order: each delivers the events after
/// what the reply before it delivered (`prev`), up to the later of the head
/// when its request was applied and its own append's last event, and marks
/// that (`own`) for the next. So every subscriber gets every event once, in
/// log order; an event appended through this node follows its append's
/// reply, and one from elsewhere follows the reply to the first request
/// applied after the view held it — or, on a node that gets no input, the
/// node's own *idle feed*, a feed with no reply before it
/// ([`super::Core::idle_feed`], applied in a turn of its own by
/// `node/idle.rs`).
#[derive(Debug)]
pub struct Feed {
    /// What the replies before this one delivered.
    pub prev: Arc<FeedMark>,
    /// What this one delivers, for the next.
    pub own: Arc<FeedMark>,
    /// The view's head when the request was applied.
    pub head: SequenceNumber,
    /// The subscriptions live then.
    pub subscribers: Vec<Arc<Subscriber>>,
}

impl Feed {
    /// Writes the `event` messages of this reply (the events after
    /// `prev`'s mark up to the later of `head` and `appended_last`),
    /// offering the sink a boundary after each, and sets `own`'s mark.
    /// Waits for the reply before it to have done the same.
    pub fn deliver(
        &self,
        store: &EventStore,
        appended_last: Option<SequenceNumber>,
        sink: &mut impl ReplySink,
    ) {
        let from = self.prev.wait();
        let upto = from
            .max(self.head.0)
            .max(appended_last.map_or(0, |s| s.0))
            .min(store.head().0);
        for seq in (from + 1..=upto).map(SequenceNumber) {
            let Some(event) = store.event(seq) else {
                continue;
            };
            for subscriber in &self.subscribers {
                if seq > subscriber.after
                    && seq >= subscriber.from
                    && subscriber.filter.matches_event(&event)
                {
                    write_event_message(store, subscriber, seq, sink.buffer());
                    sink.boundary();
                }
            }
        }
        self.own.set(upto);
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        // Not delivered (a panic while encoding): do not stall the replies
        // after it; they deliver from the head of its request, or from
        // what the replies before delivered if that is later (so nothing
        // goes out twice). A mark set already (after `deliver`) stays.
        let before = self.prev.get().unwrap_or(0);
        self.own.set(self.head.0.max(before));
    }
}

/// Writes `{"src":node,"dest":client,"body":{"type":"event",
/// "subscription":id,"event":{…}}}` and a newline.
pub fn write_event_message(
    store: &EventStore,
    subscriber: &Subscriber,
    seq: SequenceNumber,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"{\"src\":");
    out.extend_from_slice(subscriber.node.as_bytes());
    out.extend_from_slice(b",\"dest\":");
    out.extend_from_slice(subscriber.client.as_bytes());
    out.extend_from_slice(b",\"body\":{\"type\":\"event\",\"subscription\":");
    json::write_u64(out, subscriber.id);
    out.extend_from_slice(b",\"event\":");
    write_event(store, seq, out);
    out.extend_from_slice(b"}}\n");
}

/// Writes a new subscription's catch-up: an `event` message for each
/// matching event from its `from` to `head`, offering the sink a boundary
/// after each (a catch-up of a million events is never whole in memory).
pub fn write_catch_up(
    store: &EventStore,
    subscriber: &Subscriber,
    head: SequenceNumber,
    sink: &mut impl ReplySink,
) {
    if subscriber.from > head {
        return;
    }
    sink.before_long_reply();
    let bounds = PageBounds {
        from: subscriber.from.0,
        last: head.0,
    };
    for seq in store.matching(&subscriber.filter, bounds, u64::MAX) {
        write_event_message(store, subscriber, seq, sink.buffer());
        sink.boundary();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subscribes `"c"` to everything from the first event.
    fn add(subs: &mut Subscriptions) -> Result<Arc<Subscriber>, Full> {
        subs.add(
            Arc::from("\"n\""),
            Arc::from("\"c\""),
            Arc::default(),
            SequenceNumber(1),
            SequenceNumber::ZERO,
        )
    }

    #[test]
    fn ids_rise_and_the_limit_holds() {
        let mut subs = Subscriptions::default();
        for i in 1..=MAX_SUBSCRIPTIONS as u64 {
            assert_eq!(add(&mut subs).unwrap().id, i);
        }
        assert_eq!(add(&mut subs).unwrap_err(), Full);
        assert!(subs.remove(5));
        assert!(!subs.remove(5));
        let s = add(&mut subs).unwrap();
        assert_eq!(s.id, MAX_SUBSCRIPTIONS as u64 + 1, "ids are never reused");
    }
}

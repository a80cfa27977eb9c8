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

//! Library subscriptions: follow the global log from a position, filtered,
//! first through the stored events (catch-up), then through each new one
//! as it is published.
//!
//! A [`Subscription`] is only a position, a filter and a borrow of the
//! store: it reads the log, the log never pushes to it, so a slow or
//! stopped subscriber holds up no writer and costs no memory. Waiting uses
//! the store's event count (`notify.rs`): an append pays a fence and a load
//! when nobody waits, a futex broadcast when someone does, and never takes
//! a lock a subscriber holds.
//!
//! On a durable store a subscriber sees an event only once it is durable
//! (effects downstream must never come from events a crash could take
//! back): the visible end is the durable head, which advances with every
//! sync, not the published head.

use super::EventStore;
use crate::event::RecordedEvent;
use crate::filter::Filter;
use crate::types::SequenceNumber;
use std::time::{Duration, Instant};

/// Looks (yielding the CPU in between) before sleeping: a subscriber that
/// keeps up with busy writers then rarely sleeps, so writers rarely pay
/// for waking it.
const SPINS: u32 = 16;

/// A position in the log and a filter; see the module docs.
#[derive(Debug)]
pub struct Subscription<'s> {
    store: &'s EventStore,
    /// The next sequence number to look at.
    next: SequenceNumber,
    filter: Filter,
}

impl EventStore {
    /// Follows the log from `from` (0 and 1: the first event; `None`: only
    /// events appended from now on) with `filter`. See [`Subscription`].
    pub fn subscribe(&self, from: Option<SequenceNumber>, filter: Filter) -> Subscription<'_> {
        let next = match from {
            Some(s) => SequenceNumber(s.0.max(1)),
            None => SequenceNumber(self.head().0 + 1),
        };
        Subscription {
            store: self,
            next,
            filter,
        }
    }
}

impl<'s> Subscription<'s> {
    /// The next matching event if one is visible now, else `None`.
    pub fn try_next(&mut self) -> Option<RecordedEvent<'s>> {
        let end = self.store.visible_head();
        while self.next <= end {
            let seq = self.next;
            self.next = SequenceNumber(seq.0 + 1);
            // Visible events are published, and published events stay.
            let Some(event) = self.store.event(seq) else {
                panic!("visible event {seq} is not in the log");
            };
            if self.filter.matches_event(&event) {
                return Some(event);
            }
        }
        None
    }

    /// The next matching event, waiting at most `timeout`.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<RecordedEvent<'s>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.try_next() {
                return Some(event);
            }
            if !self.wait(Some(deadline)) {
                return self.try_next();
            }
        }
    }

    /// The sequence number this subscription looks at next.
    pub fn position(&self) -> SequenceNumber {
        self.next
    }

    /// Waits until something past the position is visible; `false` if the
    /// deadline passed first.
    fn wait(&self, deadline: Option<Instant>) -> bool {
        let next = self.next;
        for _ in 0..SPINS {
            if self.store.visible_head() >= next {
                return true;
            }
            std::thread::yield_now();
        }
        self.store
            .published
            .wait_until(|| self.store.visible_head() >= next, deadline)
    }
}

/// A subscription is an endless iterator: `next` waits for the next
/// matching event as long as it takes (it never returns `None`), so
/// `for event in store.subscribe(…)` follows the log for good.
impl<'s> Iterator for Subscription<'s> {
    type Item = RecordedEvent<'s>;

    fn next(&mut self) -> Option<RecordedEvent<'s>> {
        loop {
            if let Some(event) = self.try_next() {
                return Some(event);
            }
            self.wait(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ExpectedVersion;
    use crate::{JsonText, NewEvent};

    fn append(store: &EventStore, aggregate: &str, event_type: &str) {
        let data = JsonText::trusted("{}");
        let event = NewEvent {
            event_type: event_type.into(),
            data,
            metadata: None,
            id: None,
        };
        store
            .append(aggregate, ExpectedVersion::Any, &[event])
            .unwrap();
    }

    #[test]
    fn catch_up_then_live_with_a_filter() {
        let store = EventStore::new();
        append(&store, "user-1", "A");
        append(&store, "users-1", "A");
        let filter = Filter {
            category: Some("user".into()),
            ..Filter::default()
        };
        let mut sub = store.subscribe(Some(SequenceNumber(0)), filter);
        assert_eq!(sub.try_next().unwrap().sequence_number, SequenceNumber(1));
        assert!(sub.try_next().is_none());
        assert!(sub.next_timeout(Duration::from_millis(10)).is_none());
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                append(&store, "order-1", "A");
                append(&store, "user-2", "B");
            });
            assert_eq!(sub.next().unwrap().aggregate_id(), "user-2");
        });
        let mut only_new = store.subscribe(None, Filter::default());
        assert!(only_new.try_next().is_none());
        append(&store, "x", "T");
        assert_eq!(
            only_new.try_next().unwrap().sequence_number,
            SequenceNumber(5)
        );
    }
}

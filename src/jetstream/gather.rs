//! The event follower's pure core: turns the event stream's messages, in
//! delivery order, into the view's appends, and checks that each message is
//! the one due.
//!
//! The view must get every stream sequence number once, in order. The
//! ordered consumer mostly guarantees it, but not always: when it recreates
//! itself (a lost connection, a missed heartbeat, a sequence mismatch) it
//! starts after the last message *it* delivered, and a consumer that has
//! delivered nothing yet restarts from the stream's first message
//! (async-nats 0.52, `push::Ordered`: the last stream sequence starts at 0,
//! which means `DeliverPolicy::All`). So a message may come again, or the
//! whole stream from 1: that is [`Step::Restart`] with a fresh consumer
//! from the view's head + 1, never a reason to stop the view. A message
//! beyond the one due (a gap) is also restarted once; a gap at the same
//! place from a fresh consumer is real (messages deleted from the stream),
//! and the follower stops (see `follower.rs`).
//!
//! Kept apart from the NATS client so that these cases are unit tests.

use super::headers::Incoming;
use crate::store::ReplicatedEvent;
use crate::types::Version;

/// The events of one append to the view, gathered from the stream.
pub(crate) struct Gathered {
    pub aggregate_id: String,
    /// The stream sequence number of the first event.
    pub first_seq: u64,
    /// The version of the first event.
    pub first_version: Version,
    pub events: Vec<ReplicatedEvent>,
}

/// What to do after a message.
pub(crate) enum Step {
    /// An event of a batch not yet complete: wait for the next message.
    More,
    /// Apply this append to the view.
    Append(Gathered),
    /// The message came again (the consumer went back): start a fresh
    /// consumer from the view's head + 1.
    WentBack(String),
    /// The message is beyond the one due (`due`): start a fresh consumer
    /// from the view's head + 1, and stop if the gap is still there.
    Gap { due: u64, why: String },
    /// A message that is not ours, or a batch out of line: stop the view.
    Fatal(String),
}

/// Gathers messages into appends (see the module docs).
pub(crate) struct Gatherer {
    /// The stream sequence number the next message must have.
    due: u64,
    /// The events of a batch read so far: (aggregate, event, version).
    batch: Vec<(String, ReplicatedEvent, Version)>,
}

impl Gatherer {
    /// A gatherer whose first message must be `due` (the view's head + 1).
    pub(crate) fn new(due: u64) -> Gatherer {
        Gatherer {
            due,
            batch: Vec::new(),
        }
    }

    /// Takes message `seq`: its aggregate (`None`: its subject names none)
    /// and its event as read from its headers.
    pub(crate) fn take(
        &mut self,
        seq: u64,
        aggregate_id: Option<String>,
        incoming: Result<Incoming, String>,
    ) -> Step {
        // The sequence number first: a message delivered again is not
        // looked at further (it was applied, or is part of a batch that a
        // fresh consumer will deliver again whole).
        if seq < self.due {
            return Step::WentBack(format!(
                "the consumer went back to message {seq}; {} was due",
                self.due
            ));
        }
        if seq > self.due {
            return Step::Gap {
                due: self.due,
                why: format!("message {seq} came where {} was due", self.due),
            };
        }
        let Some(aggregate_id) = aggregate_id else {
            return Step::Fatal(format!("message {seq}'s subject names no aggregate"));
        };
        let incoming = match incoming {
            Ok(i) => i,
            Err(why) => return Step::Fatal(format!("message {seq} is not an event: {why}")),
        };
        self.due = seq + 1;
        let Some((index, count)) = incoming.batch else {
            if !self.batch.is_empty() {
                return Step::Fatal(format!(
                    "message {seq} is a single event inside a batch of {}",
                    self.batch.len() + 1
                ));
            }
            return Step::Append(Gathered {
                aggregate_id,
                first_seq: seq,
                first_version: incoming.version,
                events: vec![incoming.event],
            });
        };
        let in_line = self.batch.len() as u64 + 1 == index
            && index <= count
            && self.batch.last().is_none_or(|(a, _, _)| *a == aggregate_id);
        if !in_line {
            return Step::Fatal(format!(
                "message {seq} is event {index} of a batch of {count}, out of line"
            ));
        }
        self.batch
            .push((aggregate_id, incoming.event, incoming.version));
        if index < count {
            return Step::More;
        }
        let first_seq = seq + 1 - count;
        let mut events = Vec::with_capacity(self.batch.len());
        let mut first = None;
        for (aggregate_id, event, version) in self.batch.drain(..) {
            first.get_or_insert((aggregate_id, version));
            events.push(event);
        }
        let (aggregate_id, first_version) = first.expect("a complete batch has events");
        Step::Append(Gathered {
            aggregate_id,
            first_seq,
            first_version,
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EventId;

    fn event(n: u128, version: u64, batch: Option<(u64, u64)>) -> Result<Incoming, String> {
        Ok(Incoming {
            event: ReplicatedEvent::new(EventId::from_u128(n), "E", "{}", None),
            version: Version(version),
            batch,
        })
    }

    fn agg(a: &str) -> Option<String> {
        Some(a.to_owned())
    }

    fn appended(step: Step) -> (String, u64, u64, usize) {
        match step {
            Step::Append(g) => (
                g.aggregate_id,
                g.first_seq,
                g.first_version.0,
                g.events.len(),
            ),
            _ => panic!("expected an append"),
        }
    }

    #[test]
    fn single_events_and_batches_become_appends() {
        let mut g = Gatherer::new(5);
        assert_eq!(
            appended(g.take(5, agg("a"), event(5, 1, None))),
            ("a".into(), 5, 1, 1)
        );
        assert!(matches!(
            g.take(6, agg("b"), event(6, 1, Some((1, 3)))),
            Step::More
        ));
        assert!(matches!(
            g.take(7, agg("b"), event(7, 2, Some((2, 3)))),
            Step::More
        ));
        assert_eq!(
            appended(g.take(8, agg("b"), event(8, 3, Some((3, 3))))),
            ("b".into(), 6, 1, 3)
        );
        assert_eq!(
            appended(g.take(9, agg("a"), event(9, 2, None))),
            ("a".into(), 9, 2, 1)
        );
    }

    /// The ordered consumer recreated from the stream's start (it had
    /// delivered nothing yet): the follower starts a fresh consumer rather
    /// than stopping the view.
    #[test]
    fn a_consumer_that_goes_back_is_restarted_not_fatal() {
        let mut g = Gatherer::new(40);
        assert!(matches!(
            g.take(1, agg("a"), event(1, 1, None)),
            Step::WentBack(_)
        ));
        // Even a message that is not ours: it was applied before (or it
        // will stop the view when it comes where due).
        let mut g = Gatherer::new(40);
        assert!(matches!(
            g.take(39, None, Err("junk".into())),
            Step::WentBack(_)
        ));
        // Within a batch: the fresh consumer delivers the batch whole.
        let mut g = Gatherer::new(10);
        assert!(matches!(
            g.take(10, agg("b"), event(1, 1, Some((1, 2)))),
            Step::More
        ));
        assert!(matches!(
            g.take(10, agg("b"), event(1, 1, Some((1, 2)))),
            Step::WentBack(_)
        ));
    }

    #[test]
    fn a_gap_names_the_sequence_number_due() {
        let mut g = Gatherer::new(7);
        assert!(matches!(
            g.take(9, agg("a"), event(9, 1, None)),
            Step::Gap { due: 7, .. }
        ));
        let mut g = Gatherer::new(7);
        assert!(matches!(
            g.take(7, agg("b"), event(7, 1, Some((1, 3)))),
            Step::More
        ));
        assert!(matches!(
            g.take(9, agg("b"), event(9, 3, Some((3, 3)))),
            Step::Gap { due: 8, .. }
        ));
    }

    #[test]
    fn foreign_messages_and_batches_out_of_line_are_fatal() {
        let fatal = |step: Step| matches!(step, Step::Fatal(_));
        assert!(fatal(Gatherer::new(1).take(1, None, event(1, 1, None))));
        assert!(fatal(Gatherer::new(1).take(
            1,
            agg("a"),
            Err("no headers".into())
        )));
        assert!(fatal(Gatherer::new(1).take(
            1,
            agg("a"),
            event(1, 1, Some((2, 2)))
        )));
        let mut g = Gatherer::new(1);
        assert!(matches!(
            g.take(1, agg("a"), event(1, 1, Some((1, 2)))),
            Step::More
        ));
        assert!(fatal(g.take(2, agg("other"), event(2, 2, Some((2, 2))))));
        let mut g = Gatherer::new(1);
        assert!(matches!(
            g.take(1, agg("a"), event(1, 1, Some((1, 2)))),
            Step::More
        ));
        assert!(fatal(g.take(2, agg("a"), event(2, 2, None))));
    }
}

//! Where replies are written: a [`ReplySink`] is a buffer plus hooks at
//! which a long reply may be written out piece by piece (the node's
//! bounded output, `node/output.rs`), and the event writers that offer
//! those hooks. Shared by the handler's replies and the subscriptions'
//! `event` messages.

use crate::store::EventStore;
use crate::types::SequenceNumber;

/// Where `handler::encode` writes replies (see the module docs).
pub trait ReplySink {
    /// The buffer replies are appended to.
    fn buffer(&mut self) -> &mut Vec<u8>;
    /// Called between two pieces of a long reply and after every reply:
    /// the buffer may be written out here once it holds enough.
    fn boundary(&mut self);
    /// Called before a reply that takes long to make: whatever is buffered
    /// may be written out now, if that needs no waiting.
    fn before_long_reply(&mut self);
}

/// A plain buffer: everything stays in memory (tests, `Core::handle`).
impl ReplySink for Vec<u8> {
    fn buffer(&mut self) -> &mut Vec<u8> {
        self
    }
    fn boundary(&mut self) {}
    fn before_long_reply(&mut self) {}
}

/// Writes the events as a comma-separated list, offering the sink a
/// boundary after each one, so that a long list is never whole in memory.
pub(super) fn write_events(
    store: &EventStore,
    seqs: impl Iterator<Item = SequenceNumber>,
    sink: &mut impl ReplySink,
) {
    for (i, seq) in seqs.enumerate() {
        let out = sink.buffer();
        if i > 0 {
            out.push(b',');
        }
        // The plan only names published events (apply captured them below
        // the head), and published events are never removed.
        write_event(store, seq, out);
        sink.boundary();
    }
}

/// Writes the event at `seq`, which a plan names: plans only name
/// published events, and published events are never removed.
pub(crate) fn write_event(store: &EventStore, seq: SequenceNumber, out: &mut Vec<u8>) {
    let Some(event) = store.event(seq) else {
        panic!("event {seq} of a read plan is missing");
    };
    event.write_json(out);
}

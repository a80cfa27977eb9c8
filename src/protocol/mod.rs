//! The node's protocol, without any I/O: decode a request line, apply it to
//! the store, encode the reply. See `docs/protocol.md` for the contract and
//! [`handler`] for how the three steps are split between serial and
//! parallel work.

mod backend;
mod envelope;
mod handler;
mod position;
mod request;
mod sink;
mod subscriptions;
mod surrogates;

#[cfg_attr(not(feature = "jetstream"), allow(unused_imports))]
pub use backend::{Backend, BackendError, Ticket, TicketSender, ViewWatch, WriteResult, Written};
pub use envelope::decode;
pub use handler::{
    Core, IdleFeed, Outcome, ReplySource, encode, encode_error_head, finish_error, resolve,
};
pub use request::Code;
pub use request::Message;
pub use sink::ReplySink;
pub use subscriptions::Feed;

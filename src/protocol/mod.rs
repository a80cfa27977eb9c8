//! The node's protocol, without any I/O: decode a request line, apply it to
//! the store, encode the reply. See `docs/protocol.md` for the contract and
//! [`handler`] for how the three steps are split between serial and
//! parallel work.

pub mod backend;
pub mod envelope;
pub mod handler;
mod position;
pub mod request;
pub(crate) mod scan;
pub mod subscriptions;
mod surrogates;

pub use backend::{Backend, BackendError};
pub use envelope::decode;
pub use handler::{
    Core, Outcome, ReplySink, ReplySource, encode, encode_error_head, finish_error, resolve,
};
pub use request::code;
pub use request::{Message, Rejection, Request};

//! The node: the `eventstore` binary's plumbing around the protocol core.
//!
//! `lines` cuts the input into batches of whole lines; `pipeline` runs
//! them through decode → apply (in order, `sequencer`) → encode on a pool
//! of workers; `idle` hands out events from other front ends of a
//! replicated log while no input comes;
//! `output` writes replies in input order, streamed under a memory bound and
//! gated on durability. All protocol logic lives in `crate::protocol`;
//! this module only moves bytes between threads. Its API is [`run`] with
//! a [`Config`].

mod idle;
pub(crate) mod lines;
mod output;
mod pipeline;
mod sequencer;

pub use output::{FLUSH_BYTES, PENDING_BUFFERS};

pub use pipeline::{Config, run};

/// Default longest input line: 16 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

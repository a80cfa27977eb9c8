//! What can go wrong between a front end and JetStream.

use std::fmt;
use std::time::Duration;

/// A boxed error from the NATS client.
pub type ClientError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the JetStream backend could not start or serve.
#[derive(Debug)]
pub enum JetStreamError {
    /// The configuration is unusable (named in the text).
    Config(String),
    /// The backend's runtime could not be built.
    Runtime(std::io::Error),
    /// No server of `urls` could be reached.
    Connect {
        /// The servers tried.
        urls: String,
        /// The client's error.
        source: ClientError,
    },
    /// A stream could not be created, found or updated.
    Stream {
        /// The stream's name.
        name: String,
        /// The client's error.
        source: ClientError,
    },
    /// JetStream did not answer within the bounded wait.
    Unavailable {
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// The follower found something in the stream it cannot apply: the
    /// local view stopped there.
    Follower(String),
}

impl fmt::Display for JetStreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JetStreamError::Config(why) => write!(f, "invalid JetStream configuration: {why}"),
            JetStreamError::Runtime(e) => write!(f, "cannot start the JetStream runtime: {e}"),
            JetStreamError::Connect { urls, source } => {
                write!(f, "cannot connect to NATS at {urls}: {source}")
            }
            JetStreamError::Stream { name, source } => {
                write!(f, "cannot set up JetStream stream {name:?}: {source}")
            }
            JetStreamError::Unavailable { what, waited } => {
                write!(
                    f,
                    "JetStream unavailable: {what} not done within {waited:?}"
                )
            }
            JetStreamError::Follower(why) => write!(f, "the local view stopped: {why}"),
        }
    }
}

impl std::error::Error for JetStreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JetStreamError::Runtime(e) => Some(e),
            JetStreamError::Connect { source, .. } | JetStreamError::Stream { source, .. } => {
                Some(&**source)
            }
            _ => None,
        }
    }
}

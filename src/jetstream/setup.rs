//! Connecting and making sure the two streams exist.
//!
//! - the **event stream** `<name>`, subjects `<name>.>`: one message per
//!   event, `allow_atomic` (batches), `allow_direct` (the last message of a
//!   subject without a consumer), a duplicate window for `Nats-Msg-Id`;
//! - the **snapshot stream** `<name>_snapshots`, subjects
//!   `<name>_snapshots.>`: the last message per subject, one subject per
//!   aggregate (a key-value bucket in all but name, with subjects encoded
//!   like the events' since KV keys cannot carry every id).
//!
//! Both have the configured replica count. An existing stream is used as
//! it is, except that `allow_atomic` and `allow_direct` are switched on if
//! missing. The client (async-nats 0.52) knows `allow_atomic`
//! (`allow_atomic_publish`), so no raw `$JS.API.STREAM.CREATE` request is
//! needed.

use super::JetStreamConfig;
use super::error::{ClientError, JetStreamError};
use async_nats::jetstream::{self, stream};
use std::time::Duration;
use tokio::time::Instant;

/// The snapshot stream's name (and subject prefix) for event stream `name`.
pub fn snapshot_stream(name: &str) -> String {
    format!("{name}_snapshots")
}

/// Connects to the configured servers; the client then reconnects by
/// itself for as long as the process lives.
pub(crate) async fn connect(
    config: &JetStreamConfig,
) -> Result<async_nats::Client, JetStreamError> {
    let urls = config.urls.join(",");
    let options = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .max_reconnects(None::<usize>);
    let connect = async_nats::connect_with_options(config.urls.clone(), options);
    match tokio::time::timeout(config.startup_timeout, connect).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(JetStreamError::Connect {
            urls,
            source: Box::new(e),
        }),
        Err(_) => Err(JetStreamError::Unavailable {
            what: format!("connecting to {urls}"),
            waited: config.startup_timeout,
        }),
    }
}

/// The event and snapshot streams, created or updated as needed. Retries
/// (a cluster may still be electing its leaders) until the startup timeout.
pub(crate) async fn streams(
    js: &jetstream::Context,
    config: &JetStreamConfig,
) -> Result<(stream::Stream, stream::Stream), JetStreamError> {
    let events = stream::Config {
        name: config.stream.clone(),
        subjects: vec![format!("{}.>", config.stream)],
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        allow_direct: true,
        allow_atomic_publish: true,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let snapshots_name = snapshot_stream(&config.stream);
    let snapshots = stream::Config {
        name: snapshots_name.clone(),
        subjects: vec![format!("{snapshots_name}.>")],
        num_replicas: config.replicas,
        max_messages_per_subject: 1,
        allow_direct: true,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let deadline = Instant::now() + config.startup_timeout;
    let events = ensure(js, events, deadline).await?;
    let snapshots = ensure(js, snapshots, deadline).await?;
    Ok((events, snapshots))
}

async fn ensure(
    js: &jetstream::Context,
    wanted: stream::Config,
    deadline: Instant,
) -> Result<stream::Stream, JetStreamError> {
    let name = wanted.name.clone();
    let fail = |source: ClientError| JetStreamError::Stream {
        name: name.clone(),
        source,
    };
    loop {
        match try_ensure(js, &wanted).await {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() >= deadline => return Err(fail(e)),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

async fn try_ensure(
    js: &jetstream::Context,
    wanted: &stream::Config,
) -> Result<stream::Stream, ClientError> {
    let mut stream = js.get_or_create_stream(wanted.clone()).await?;
    let info = stream.info().await?;
    if !info.config.allow_atomic_publish || !info.config.allow_direct {
        let mut config = info.config.clone();
        config.allow_atomic_publish = true;
        config.allow_direct = true;
        js.update_stream(&config).await?;
        stream = js.get_stream(&wanted.name).await?;
    }
    Ok(stream)
}

//! One task that drives the resolution of every write in flight.
//!
//! Each write submitted by the pipeline becomes a future (await the
//! stream's acknowledgement, wait for the view, answer:
//! `pipeline/resolve.rs`).
//! They used to be one tokio task each. A task is a 128-byte-aligned
//! allocation of the whole future plus tokio's header, scheduled on either
//! worker; measured on 50,000 seed requests, `tokio::spawn` alone was 9% of
//! the front end's CPU, most of it glibc's large-chunk path
//! (`malloc_consolidate`) for the ~1 KiB cells, and every acknowledgement
//! could wake the other worker.
//!
//! Here they are polled by one task through a `FuturesUnordered`: a write
//! is one ordinary allocation (its boxed future), an acknowledgement wakes
//! only its own future's entry and the driving task once, and nothing moves
//! between workers. The futures only wait (acknowledgements, the view,
//! earlier writes) and do little work between waits, so one task keeps up
//! with the window of writes in flight.
//!
//! The channel is unbounded: the pipeline's window (a semaphore permit held
//! by each write) bounds what is in flight. The driver runs until the
//! runtime shuts down (the futures hold the shared state, which holds the
//! sender); a future dropped unfinished drops its reply, which the node
//! answers with error 11.
//!
//! A panic in one future (a broken invariant) would end the driving task
//! and with it every write in flight, silently. So each future runs under
//! `catch_unwind`: the panic is written to stderr and kept
//! ([`Resolver::panicked`]); the front end then refuses every later write
//! with error 11 naming it (`Shared::failure`), and reads go on.

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use parking_lot::Mutex;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::sync::mpsc;

/// A write's resolution.
pub(crate) type Resolution = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where writes are handed to the driving task.
pub(crate) struct Resolver {
    tx: mpsc::UnboundedSender<Resolution>,
    /// The first panic of a resolution, if any.
    panicked: Arc<Mutex<Option<String>>>,
}

impl Resolver {
    /// Starts the driving task; must be called on the runtime.
    pub(crate) fn start() -> Resolver {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(rx));
        Resolver {
            tx,
            panicked: Arc::new(Mutex::new(None)),
        }
    }

    /// Hands `resolution` to the driving task.
    pub(crate) fn push(&self, resolution: impl Future<Output = ()> + Send + 'static) {
        let panicked = Arc::clone(&self.panicked);
        let guarded = AssertUnwindSafe(resolution).catch_unwind().map(move |r| {
            if let Err(payload) = r {
                let what = panic_text(payload.as_ref());
                eprintln!("eventstore: internal error: a write's resolution panicked: {what}");
                panicked.lock().get_or_insert(what);
            }
        });
        // Fails only once the runtime is shutting down: the dropped future
        // drops its reply (error 11 for the node).
        let _ = self.tx.send(Box::pin(guarded));
    }

    /// The first panic of a resolution, if any.
    pub(crate) fn panicked(&self) -> Option<String> {
        self.panicked.lock().clone()
    }
}

/// A panic's message.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Polls every resolution handed over until the senders are gone and all
/// are done.
async fn drive(mut rx: mpsc::UnboundedReceiver<Resolution>) {
    let mut running: FuturesUnordered<Resolution> = FuturesUnordered::new();
    let mut open = true;
    std::future::poll_fn(|cx| {
        // New writes first, so they are polled in this same pass (unless
        // the task's budget runs out first: then they wake themselves).
        while open {
            match rx.poll_recv(cx) {
                Poll::Ready(Some(resolution)) => running.push(resolution),
                Poll::Ready(None) => open = false,
                Poll::Pending => break,
            }
        }
        // Drive until nothing is ready; `Ready(None)`: none left.
        while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
        if !open && running.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::oneshot;

    #[test]
    fn every_resolution_runs_to_its_end_whatever_order_it_is_woken_in() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1) // as the backend runs
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let resolver = Resolver::start();
            let done = Arc::new(AtomicUsize::new(0));
            let (finished_tx, mut finished_rx) = mpsc::unbounded_channel();
            let mut triggers = Vec::new();
            for i in 0..500usize {
                let (tx, rx) = oneshot::channel::<usize>();
                triggers.push(tx);
                let done = Arc::clone(&done);
                let finished = finished_tx.clone();
                resolver.push(async move {
                    let n = rx.await.expect("trigger");
                    assert_eq!(n, i);
                    done.fetch_add(1, Ordering::Relaxed);
                    let _ = finished.send(i);
                });
            }
            // Wake them in reverse order, from another task.
            tokio::spawn(async move {
                for (i, tx) in triggers.into_iter().enumerate().rev() {
                    let _ = tx.send(i);
                    if i % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            });
            let mut seen = vec![false; 500];
            for _ in 0..500 {
                let i = finished_rx.recv().await.expect("finished");
                assert!(!seen[i], "resolution {i} ran twice");
                seen[i] = true;
            }
            assert_eq!(done.load(Ordering::Relaxed), 500);
        });
    }
}

//! One task that drives the resolution of every write in flight.
//!
//! Each write submitted by the pipeline becomes a future (await the
//! stream's acknowledgement, wait for the view, answer: `pipeline.rs`).
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
//! by each write) bounds what is in flight. The driver ends when every
//! sender is dropped and every future is done; a future dropped unfinished
//! (the runtime shutting down) drops its reply, which the node answers
//! with error 11.

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use tokio::sync::mpsc;

/// A write's resolution.
pub(crate) type Resolution = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where writes are handed to the driving task.
pub(crate) struct Resolver {
    tx: mpsc::UnboundedSender<Resolution>,
}

impl Resolver {
    /// Starts the driving task; must be called on the runtime.
    pub(crate) fn start() -> Resolver {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(rx));
        Resolver { tx }
    }

    /// Hands `resolution` to the driving task.
    pub(crate) fn push(&self, resolution: impl Future<Output = ()> + Send + 'static) {
        // Fails only once the runtime is shutting down: the dropped future
        // drops its reply (error 11 for the node).
        let _ = self.tx.send(Box::pin(resolution));
    }
}

/// Polls every resolution handed over until the senders are gone and all
/// are done.
async fn drive(mut rx: mpsc::UnboundedReceiver<Resolution>) {
    let mut running: FuturesUnordered<Resolution> = FuturesUnordered::new();
    let mut open = true;
    std::future::poll_fn(|cx| {
        // New writes first, so they are polled (and register their wakers)
        // in this same pass.
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
            .worker_threads(2)
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

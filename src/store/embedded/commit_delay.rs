//! The commit delay: how a busy writer's batch waits for requests that have not come yet.
//!
//! When a commit answers its callers, the queue holds only what arrived during that commit; the
//! callers just answered are still signing and sending their next requests. Committing at once
//! would then mean many small commits, each paying the same dozen page writes and fsync. So a
//! batch that follows one of at least [`BUSY_BATCH_REQUESTS`] requests, and finds the queue empty
//! before it is as large as that one, waits, like PostgreSQL's `commit_delay`: until as many
//! requests as the previous batch took are in it, or until the delay has passed since the batch
//! began, whichever comes first. A few callers answered together are back together, so their
//! batch commits as soon as the last one is in, not when the delay runs out; under a heavier
//! load the delay bounds what a caller can wait, and batches grow (what arrives while a batch is
//! applied joins it too). A batch after a small one never waits: one connector logging at a time
//! gets its answer as soon as the disk allows.
//!
//! Waiting is a trade, which is why the delay is off unless configured: with a few busy callers,
//! all of them end up in every batch, and while the writer waits for the last of them nothing
//! else overlaps its commit; BENCHMARKS.md ("Group commit window") has the figures.
//!
//! The writer thread parks while it waits. Waking it for every request that arrives would cost a
//! context switch per request, so it says how many queued requests it needs ([`CommitWait`]'s
//! `wake_at`), and only the caller whose request makes them that many wakes it.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// A batch waits for more requests only after a batch of at least this many: below it,
/// requests come from a few callers, and waiting would mostly add to their latency.
pub(super) const BUSY_BATCH_REQUESTS: usize = 4;

/// Shared between the writer thread, which waits, and the callers, which wake it.
#[derive(Debug)]
pub(super) struct CommitWait {
    delay: Duration,
    /// How many queued requests wake the waiting writer; `usize::MAX` while it is not waiting.
    wake_at: AtomicUsize,
}

/// What one batch waits for: set when it begins.
pub(super) struct BatchWait {
    /// The batch waits while it holds fewer requests than this.
    wanted: usize,
    /// None when the delay reaches past what the clock can represent: then only the requests
    /// wanted, or the store's shutdown, end the wait.
    deadline: Option<Instant>,
}

impl CommitWait {
    pub(super) fn new(delay: Duration) -> Self {
        Self {
            delay,
            wake_at: AtomicUsize::new(usize::MAX),
        }
    }

    /// What a batch beginning now, after a batch of `previous` requests, waits for.
    pub(super) fn for_batch(&self, previous: usize) -> BatchWait {
        if previous < BUSY_BATCH_REQUESTS || self.delay.is_zero() {
            return BatchWait {
                wanted: 0,
                deadline: None,
            };
        }
        BatchWait {
            wanted: previous,
            deadline: Instant::now().checked_add(self.delay),
        }
    }

    /// Called by the writer thread when the queue is empty and its batch holds `held`
    /// requests: waits, if `batch` says so, until the queue holds the requests still wanted or
    /// the deadline has passed (or the store shuts down), and returns the next request if one
    /// came.
    pub(super) fn wait<T>(
        &self,
        batch: &BatchWait,
        held: usize,
        queue: &mut mpsc::Receiver<T>,
    ) -> Option<T> {
        let needed = batch.wanted.checked_sub(held).filter(|&n| n > 0)?;
        self.wake_at.store(needed, Ordering::SeqCst);
        // With the fence in `queued`: either the queue's length read below counts a caller's
        // request, or that caller sees `wake_at` and wakes us. The channel's own orderings are
        // not sequentially consistent, so without the fences both could miss.
        fence(Ordering::SeqCst);
        loop {
            // A closed queue: the store is shutting down (`Writer::stop` wakes us for it), so
            // no more requests are coming.
            if queue.len() >= needed || queue.is_closed() {
                break;
            }
            match batch.deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    std::thread::park_timeout(deadline - now);
                }
                None => std::thread::park(),
            }
        }
        self.wake_at.store(usize::MAX, Ordering::SeqCst);
        queue.try_recv().ok()
    }

    /// Called by a caller after it queued a request, with the queue's length then: wakes the
    /// writer if it waits for that many.
    pub(super) fn queued(&self, queued: usize, writer: &Thread) {
        if self.delay.is_zero() {
            return;
        }
        fence(Ordering::SeqCst);
        if queued >= self.wake_at.load(Ordering::SeqCst) {
            writer.unpark();
        }
    }
}

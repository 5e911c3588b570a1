//! CPU-heavy work of a request, done off the tokio worker threads.
//!
//! A tokio worker runs the tasks of many connections in turn, so whatever keeps it busy holds up
//! all of them: preparing an entry with a payload of a few MiB (hashing it, see
//! [`crate::store::PreparedEntry`]) takes milliseconds, an RSA receipt signature about half of
//! one. Such work runs on a few threads of our own, one per core ([`Offload`]), fed through a
//! bounded queue: a burst of it waits in the queue while the requests' tasks yield, instead of
//! growing threads. Work that costs less than handing it over stays inline: entries whose payload
//! is below [`INLINE_PREPARATION_LIMIT`](crate::store::INLINE_PREPARATION_LIMIT), and ES256 and
//! EdDSA signatures (BENCHMARKS.md, "CPU work off the async workers", has the measurements behind
//! both choices).
//!
//! Fairness under overload (RSA receipts at the signing limit): the queue is FIFO, so every
//! request waits behind the same number of signatures and latency grows evenly instead of
//! starving some; never more than one signature per core runs at once, so the signatures in
//! progress finish at the speed of the cores; and the offload threads run at a lower scheduling
//! priority ([`OFFLOAD_NICE`]) than the tokio workers, so that while they keep every core busy
//! the connection tasks (reading, ACKing, writing replies), handshakes, queries and `/health`
//! still get a core as soon as they have work. Idle cores still go to the signatures: a nice
//! value shares the CPU, it does not reserve any.
//!
//! Metrics: `clearinghouse_offloaded_total{work}`, `work` being `payload_hash` (an entry
//! prepared, which is mostly hashing its payload; the label is kept for existing dashboards) or
//! `receipt_signature`, counted on the offload thread once the work is done;
//! `clearinghouse_offload_queued`, the jobs waiting for a thread or running on one.

use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};

use crate::receipt::{ReceiptAlgorithm, ReceiptClaims, ReceiptError, ReceiptSigner};
use crate::store::{NewEntry, PreparedEntry};

/// Work waiting for a thread. Every request holds at most one, so this is only reached with more
/// requests in flight than a server has connections by default.
const QUEUE_CAPACITY: usize = 1024;

/// Prefix of the offload threads' names, as `top -H` and debuggers show them.
pub(crate) const THREAD_NAME: &str = "ch-offload";

/// How much the offload threads' nice value (Linux, per thread) is above the rest of the
/// process's: at 5 more the scheduler gives a tokio worker that has work about three times the
/// share of a busy offload thread.
const OFFLOAD_NICE: i32 = 5;

/// Metric: jobs handed to the offload threads and not finished yet.
const QUEUED: &str = "clearinghouse_offload_queued";

type Job = Box<dyn FnOnce() + Send>;

/// Why offloaded work gave no result.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    /// The work panicked (its thread carries on); nothing else drops it.
    #[error("the offloaded {0} did not complete")]
    Lost(&'static str),
    /// Signing the receipt failed.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
}

/// Threads for CPU-heavy work, one per core. Dropping it lets them finish what is queued and end.
pub struct Offload {
    /// `None` only if no thread could be started; then all work runs inline.
    jobs: Option<mpsc::Sender<Job>>,
}

impl Offload {
    /// As many threads as the machine has cores.
    pub fn per_core() -> Offload {
        Self::with_threads(std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
    }

    pub(crate) fn with_threads(threads: usize) -> Offload {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let receiver = Arc::new(Mutex::new(receiver));
        let mut started = 0;
        for index in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            let spawned = std::thread::Builder::new()
                .name(format!("{THREAD_NAME}-{index}"))
                .spawn(move || work(&receiver));
            match spawned {
                Ok(_) => started += 1,
                Err(error) => {
                    tracing::warn!(%error, "cannot start an offload thread");
                }
            }
        }
        if started == 0 {
            tracing::warn!("no offload thread: hashing and signing run on the async workers");
        }
        Offload {
            jobs: (started > 0).then_some(sender),
        }
    }

    /// Runs `job` on an offload thread and waits (asynchronously) for its result; `work` names
    /// it in the metric and in errors.
    pub async fn run<T: Send + 'static>(
        &self,
        work: &'static str,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, OffloadError> {
        let Some(jobs) = &self.jobs else {
            return Ok(job());
        };
        let (reply, result) = oneshot::channel();
        let queued = Queued::new();
        let job: Job = Box::new(move || {
            let _queued = queued;
            // The caller may have gone (its connection closed); the work is wasted, not wrong.
            let _ = reply.send(job());
            metrics::counter!("clearinghouse_offloaded_total", "work" => work).increment(1);
        });
        jobs.send(job).await.map_err(|_| OffloadError::Lost(work))?;
        result.await.map_err(|_| OffloadError::Lost(work))
    }

    /// The entry prepared for the store (payload hashed, header canonicalized), here or on an
    /// offload thread as [`NewEntry::prepares_inline`] says.
    pub(crate) async fn prepare_entry(
        &self,
        entry: NewEntry,
    ) -> Result<PreparedEntry, OffloadError> {
        if entry.prepares_inline() {
            return Ok(entry.prepare());
        }
        self.run("payload_hash", move || entry.prepare()).await
    }

    /// A receipt JWT: RSA signatures on an offload thread, the cheap ones inline.
    pub(crate) async fn sign_receipt(
        &self,
        signer: &Arc<ReceiptSigner>,
        claims: ReceiptClaims,
    ) -> Result<String, OffloadError> {
        if signs_inline(signer.algorithm()) {
            return Ok(signer.sign(&claims)?);
        }
        let signer = Arc::clone(signer);
        Ok(self
            .run("receipt_signature", move || signer.sign(&claims))
            .await??)
    }
}

/// ES256 and EdDSA signatures cost about what the hand-over does (tens of µs), RSA ones 20 to 30
/// times as much (BENCHMARKS.md).
fn signs_inline(algorithm: ReceiptAlgorithm) -> bool {
    match algorithm {
        ReceiptAlgorithm::Es256 | ReceiptAlgorithm::EdDsa => true,
        ReceiptAlgorithm::Ps512 | ReceiptAlgorithm::Rs256 => false,
    }
}

/// Counts a job in [`QUEUED`] from its hand-over until it is done, panics or is dropped unrun.
struct Queued;

impl Queued {
    fn new() -> Queued {
        metrics::gauge!(QUEUED).increment(1.0);
        Queued
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        metrics::gauge!(QUEUED).decrement(1.0);
    }
}

/// Raises the calling thread's nice value by [`OFFLOAD_NICE`] (relative, so that a server
/// started with `nice` keeps its offload threads below its own workers); where that cannot be
/// done the thread runs at the priority it has, which costs fairness, not correctness.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; getpriority and setpriority with PRIO_PROCESS and
        // a thread id read and change the nice value of that thread only (Linux keeps it per
        // thread). getpriority's -1 may be an error; the worst that follows is a nice of 4.
        let result = unsafe {
            let tid = libc::gettid() as libc::id_t;
            let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, (nice + OFFLOAD_NICE).min(19))
        };
        if result != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "cannot lower the priority of an offload thread"
            );
        }
    }
}

/// An offload thread: takes jobs until the [`Offload`] is dropped.
fn work(jobs: &Mutex<mpsc::Receiver<Job>>) {
    lower_priority();
    loop {
        // One thread waits on the queue while the others wait for the lock; nothing panics
        // while holding it, and a receiver is usable whatever happened to an earlier holder.
        let job = jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocking_recv();
        let Some(job) = job else {
            return;
        };
        // A job that panics drops its reply sender, which its caller sees as an error; the
        // thread stays to take the next one.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a job ran: its thread's name, and whether that thread belongs to a tokio runtime.
    fn whereabouts() -> (Option<String>, bool) {
        (
            std::thread::current().name().map(str::to_owned),
            tokio::runtime::Handle::try_current().is_ok(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_run_on_offload_threads_not_on_tokio_workers() {
        let offload = Offload::with_threads(2);
        let (name, in_runtime) = offload.run("test", whereabouts).await.unwrap();
        assert!(
            name.as_deref().is_some_and(|n| n.starts_with(THREAD_NAME)),
            "{name:?}"
        );
        assert!(!in_runtime, "the job ran on a thread of the runtime");
        // The caller itself is on a worker, so the check above can tell the two apart.
        assert!(whereabouts().1);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn offload_threads_run_below_the_priority_of_the_rest() {
        let nice = || {
            // SAFETY: as in lower_priority; getpriority only reads.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
        };
        let offload = Offload::with_threads(1);
        let here = nice();
        let there = offload.run("test", nice).await.unwrap();
        assert_eq!(there, (here + OFFLOAD_NICE).min(19));
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_threads_carry_on() {
        let offload = Offload::with_threads(1);
        let lost = offload.run("test", || panic!("on purpose")).await;
        assert!(matches!(lost, Err(OffloadError::Lost("test"))), "{lost:?}");
        assert_eq!(offload.run("test", || 7).await.unwrap(), 7);
    }
}

//! The embedded store's one writer: a thread that applies creations, appends and owner changes
//! (an append that also replaces the owners) in batches,
//! one fsync'd write transaction per batch (group commit).
//!
//! A receipt may only be signed once its entry is on disk, so every commit is fsync'd
//! (`Durability::Immediate`, redb's default). One fsync per append would cap a disk at a few
//! hundred appends per second; instead, appends and process creations queue for a single writer
//! thread that takes everything waiting (up to [`MAX_BATCH_REQUESTS`] requests or
//! [`MAX_BATCH_BYTES`] of payload), applies it in order in one write transaction, commits once,
//! and then answers every caller. Appends to the same process within a batch chain onto each
//! other, because each one reads the head the previous one wrote in the same transaction. One
//! writer also means one order per process, so sequences and chain hashes need no locking. An
//! append arrives prepared (payload hashed, header canonical: [`PreparedEntry`]), so the thread
//! only does what must be serialized: read the head, link, write.
//!
//! What a batch costs the writer is mostly redb's: each insert, and at the commit the pages it
//! dirtied (checksummed, written one `pwrite` each, fsync'd). So a batch keeps taking requests
//! that arrive while it is being applied, before it commits; the heads of its processes are
//! written once, before the commit, not once per append; the records of its appends to one
//! process are written as one row once there are enough of them (see `chunks`); the time index
//! gets a row only for the first entry of each timestamp (see `reads`); and an entry is indexed
//! by the number its document id was derived from (see `document_ids`), not by the id: numbers
//! grow, so a batch adds its rows at the end of `document_numbers` and dirties its last page or
//! two, where random ids dirtied a page of the index per entry. Ids derived from distinct
//! numbers are distinct (the derivation is a permutation), so no id is looked up before it is
//! written; a number found in use already means a damaged file and abandons the batch.
//!
//! Once the writer is busy, a batch also waits a little for requests that have not come yet:
//! see `commit_delay`.
//!
//! Each request is checked before anything of it is written, so a request that is refused
//! (unknown process, owners changed, erased process) leaves nothing behind and fails alone; the
//! rest of its batch commits. A write that fails part way could leave half an entry in the
//! transaction, so it abandons the batch: the transaction is aborted and every caller in the
//! batch gets the error, as they do when the commit itself fails. redb refuses all further
//! writes after an I/O error (after a failed fsync the page cache cannot be trusted), so from
//! then on the writer reports itself failed ([`Writer::check`]) until the store is reopened.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, Table, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::chunks::{Chunk, ENTRY_CHUNKS};
use super::commit_delay::CommitWait;
use super::process_cache::ProcessCache;
use super::record::{encode_entry, read_head, ProcessHead};
use super::{DOCUMENT_NUMBERS, ENTRIES, ENTRY_TIMES, OWNERS, PROCESSES};
use crate::store::chain::{self, ChainHead};
use crate::store::sealing::{EntryKeys, Erasure, KeyState, Sealing};
use crate::store::{now_ms, CreateOutcome, Entry, OwnerChange, PreparedEntry, StoreError};

/// Most requests one write transaction takes; bounds the latency a batch adds to its first caller.
const MAX_BATCH_REQUESTS: usize = 512;
/// A batch stops taking requests once its payloads reach this many bytes, bounding its memory.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Requests waiting for the writer; callers beyond this wait to enqueue (backpressure).
const QUEUE_CAPACITY: usize = 1024;

/// The store's handle on its writer thread. Dropping it lets the writer finish what is queued
/// and waits for it.
pub(super) struct Writer {
    /// `None` only while dropping, so that the writer sees the queue close.
    requests: Option<mpsc::Sender<WriteRequest>>,
    thread: Option<JoinHandle<()>>,
    health: Arc<WriterHealth>,
    commit_wait: Arc<CommitWait>,
}

/// What the writer reports back to the store's handles.
#[derive(Default)]
struct WriterHealth {
    commits: AtomicU64,
    /// Set for good once a batch could not be committed.
    failed: AtomicBool,
}

impl Writer {
    /// Creates every table (read transactions fail on tables that were never created) and
    /// starts the writer thread; its busy batches wait `commit_delay` for more requests.
    pub(super) fn start(
        database: &Arc<Database>,
        sealing: &Arc<Sealing>,
        processes: &Arc<ProcessCache>,
        commit_delay: Duration,
    ) -> Result<Self, StoreError> {
        let transaction = database.begin_write()?;
        WriteTables::open(&transaction)?;
        // Written no more (see `chunks`), but read, and reads need every table to exist.
        transaction.open_table(ENTRIES)?;
        transaction.commit()?;

        let (requests, queue) = mpsc::channel(QUEUE_CAPACITY);
        let health = Arc::new(WriterHealth::default());
        let commit_wait = Arc::new(CommitWait::new(commit_delay));
        let thread = std::thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn({
                let database = Arc::clone(database);
                let health = Arc::clone(&health);
                let sealing = Arc::clone(sealing);
                let processes = Arc::clone(processes);
                let commit_wait = Arc::clone(&commit_wait);
                move || {
                    run_writer(
                        &database,
                        &sealing,
                        &processes,
                        queue,
                        &health,
                        &commit_wait,
                    )
                }
            })?;
        Ok(Self {
            requests: Some(requests),
            thread: Some(thread),
            health,
            commit_wait,
        })
    }

    /// Write transactions committed so far.
    pub(super) fn commits(&self) -> u64 {
        self.health.commits.load(Ordering::Relaxed)
    }

    /// Whether the writer still takes writes: running, and no batch has failed.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        let alive = self
            .requests
            .as_ref()
            .is_some_and(|requests| !requests.is_closed());
        if !alive {
            return Err(writer_gone());
        }
        if self.health.failed.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable(
                "a write to the store failed; it takes writes again once reopened".to_owned(),
            ));
        }
        Ok(())
    }

    pub(super) async fn create(
        &self,
        pid: String,
        owners: BTreeSet<String>,
    ) -> Result<CreateOutcome, StoreError> {
        self.submit(|reply| WriteRequest::Create { pid, owners, reply })
            .await
    }

    /// Appends `entry`, whose document id was derived from `number`.
    pub(super) async fn append(
        &self,
        number: u64,
        entry: PreparedEntry,
    ) -> Result<Entry, StoreError> {
        self.submit(|reply| WriteRequest::Append {
            number,
            entry,
            reply,
        })
        .await
    }

    /// Changes owners as `change` says; its entry's document id was derived from `number`.
    pub(super) async fn change_owners(
        &self,
        number: u64,
        change: OwnerChange,
    ) -> Result<Entry, StoreError> {
        self.submit(|reply| WriteRequest::ChangeOwners {
            number,
            change,
            reply,
        })
        .await
    }

    pub(super) async fn erase(&self, pid: String, by: String) -> Result<Erasure, StoreError> {
        self.submit(|reply| WriteRequest::Erase { pid, by, reply })
            .await
    }

    async fn submit<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> WriteRequest,
    ) -> Result<T, StoreError> {
        let requests = self.requests.as_ref().ok_or_else(writer_gone)?;
        let (reply, answer) = oneshot::channel();
        requests
            .send(request(reply))
            .await
            .map_err(|_| writer_gone())?;
        if let Some(thread) = &self.thread {
            let queued = requests.max_capacity() - requests.capacity();
            self.commit_wait.queued(queued, thread.thread());
        }
        answer.await.map_err(|_| writer_gone())?
    }

    /// Lets the writer finish what is queued and waits for it. Waits at most for one batch to
    /// commit; later calls do nothing.
    pub(super) fn stop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            // A writer waiting for more requests (commit delay) sees the queue closed.
            thread.thread().unpark();
            if thread.join().is_err() {
                tracing::error!("the store writer thread panicked");
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the store writer has stopped".to_owned())
}

enum WriteRequest {
    Create {
        pid: String,
        owners: BTreeSet<String>,
        reply: oneshot::Sender<Result<CreateOutcome, StoreError>>,
    },
    Append {
        number: u64,
        entry: PreparedEntry,
        reply: oneshot::Sender<Result<Entry, StoreError>>,
    },
    ChangeOwners {
        number: u64,
        change: OwnerChange,
        reply: oneshot::Sender<Result<Entry, StoreError>>,
    },
    Erase {
        pid: String,
        by: String,
        reply: oneshot::Sender<Result<Erasure, StoreError>>,
    },
}

impl WriteRequest {
    fn payload_bytes(&self) -> usize {
        match self {
            Self::Create { .. } | Self::Erase { .. } => 0,
            Self::Append { entry, .. } => entry.entry().payload.len(),
            Self::ChangeOwners { change, .. } => change.entry.entry().payload.len(),
        }
    }

    /// The process whose owners or content this request changes, if it goes through.
    fn changed_process(&self) -> Option<&str> {
        match self {
            Self::Create { .. } | Self::Append { .. } => None,
            Self::ChangeOwners { change, .. } => Some(&change.entry.entry().pid),
            Self::Erase { pid, .. } => Some(pid),
        }
    }

    fn apply(self, tables: &mut WriteTables<'_>, sealing: &Sealing) -> Applied {
        match self {
            Self::Create { pid, owners, reply } => Applied::Create {
                result: create(tables, sealing, pid, owners),
                reply,
            },
            Self::Append {
                number,
                entry,
                reply,
            } => Applied::Append {
                result: append(tables, sealing, number, entry),
                reply,
            },
            // Answered like an append: with the entry that records the change.
            Self::ChangeOwners {
                number,
                change,
                reply,
            } => Applied::Append {
                result: change_owners(tables, sealing, number, change),
                reply,
            },
            Self::Erase { pid, by, reply } => Applied::Erase {
                result: erase(tables, sealing, pid, by),
                reply,
            },
        }
    }

    fn fail(self, error: &StoreError) {
        // A caller that gave up waiting has dropped its receiver; nobody is left to tell.
        match self {
            Self::Create { reply, .. } => drop(reply.send(Err(error.for_another_caller()))),
            Self::Append { reply, .. } | Self::ChangeOwners { reply, .. } => {
                drop(reply.send(Err(error.for_another_caller())))
            }
            Self::Erase { reply, .. } => drop(reply.send(Err(error.for_another_caller()))),
        }
    }
}

/// Why a request did not go through.
enum Failure {
    /// Found before writing: nothing of the request is in the transaction.
    Refused(StoreError),
    /// A write failed part way: the transaction must not be committed.
    Storage(StoreError),
}

impl Failure {
    fn into_error(self) -> StoreError {
        match self {
            Self::Refused(error) | Self::Storage(error) => error,
        }
    }
}

/// A request applied to the transaction, waiting for the commit to answer its caller.
enum Applied {
    Create {
        result: Result<CreateOutcome, Failure>,
        reply: oneshot::Sender<Result<CreateOutcome, StoreError>>,
    },
    Append {
        result: Result<Entry, Failure>,
        reply: oneshot::Sender<Result<Entry, StoreError>>,
    },
    Erase {
        result: Result<Erasure, Failure>,
        reply: oneshot::Sender<Result<Erasure, StoreError>>,
    },
}

impl Applied {
    fn storage_failure(&self) -> Option<&StoreError> {
        match self {
            Self::Create {
                result: Err(Failure::Storage(error)),
                ..
            }
            | Self::Append {
                result: Err(Failure::Storage(error)),
                ..
            }
            | Self::Erase {
                result: Err(Failure::Storage(error)),
                ..
            } => Some(error),
            _ => None,
        }
    }

    fn committed(self) {
        match self {
            Self::Create { result, reply } => drop(reply.send(result.map_err(Failure::into_error))),
            Self::Append { result, reply } => drop(reply.send(result.map_err(Failure::into_error))),
            Self::Erase { result, reply } => drop(reply.send(result.map_err(Failure::into_error))),
        }
    }

    /// The batch was not committed: requests that had gone through report the batch's error,
    /// requests that had failed keep their own, more specific one.
    fn rolled_back(self, error: &StoreError) {
        let own_or = |failure: Option<Failure>| {
            failure.map_or_else(|| error.for_another_caller(), Failure::into_error)
        };
        match self {
            Self::Create { result, reply } => drop(reply.send(Err(own_or(result.err())))),
            Self::Append { result, reply } => drop(reply.send(Err(own_or(result.err())))),
            Self::Erase { result, reply } => drop(reply.send(Err(own_or(result.err())))),
        }
    }
}

fn run_writer(
    database: &Database,
    sealing: &Sealing,
    processes: &ProcessCache,
    mut queue: mpsc::Receiver<WriteRequest>,
    health: &WriterHealth,
    commit_wait: &CommitWait,
) {
    let mut previous_batch = 0;
    while let Some(first) = queue.blocking_recv() {
        let wait = commit_wait.for_batch(previous_batch);
        previous_batch = write_batch(
            database,
            sealing,
            processes,
            first,
            &mut queue,
            health,
            |held, queue| commit_wait.wait(&wait, held, queue),
        );
    }
}

/// Writes one batch in one transaction: `first`, then whatever is queued, then records the
/// outcome in `health` and forgets the processes it changed (owners, erasure) from `processes`
/// before answering the callers, so that a caller who got an answer sees the store's state after
/// it. Returns how many requests the batch took.
///
/// The batch takes requests from the queue until it is empty (or the batch full), also those
/// that arrived while the batch was being applied: a commit and its fsync cost about the same
/// for one request as for hundreds. Once the queue is empty, `wait` (given how many requests the
/// batch holds) may wait for the next one: see `commit_delay`.
fn write_batch(
    database: &Database,
    sealing: &Sealing,
    processes: &ProcessCache,
    first: WriteRequest,
    queue: &mut mpsc::Receiver<WriteRequest>,
    health: &WriterHealth,
    mut wait: impl FnMut(usize, &mut mpsc::Receiver<WriteRequest>) -> Option<WriteRequest>,
) -> usize {
    let transaction = match database.begin_write() {
        Ok(transaction) => transaction,
        Err(error) => return fail_all(vec![first], &error.into(), health),
    };
    let mut tables = match WriteTables::open(&transaction) {
        Ok(tables) => tables,
        Err(error) => return fail_all(vec![first], &error, health),
    };
    let mut applied = Vec::new();
    let mut changed_processes = Vec::new();
    let mut batch_bytes = 0usize;
    let mut abandoned = None;
    let mut next = Some(first);
    while let Some(request) = next.take() {
        batch_bytes = batch_bytes.saturating_add(request.payload_bytes());
        if let Some(pid) = request.changed_process() {
            changed_processes.push(pid.to_owned());
        }
        let done = request.apply(&mut tables, sealing);
        abandoned = done.storage_failure().map(StoreError::for_another_caller);
        applied.push(done);
        if abandoned.is_some() {
            break;
        }
        if applied.len() < MAX_BATCH_REQUESTS && batch_bytes < MAX_BATCH_BYTES {
            next = queue.try_recv().ok().or_else(|| wait(applied.len(), queue));
        }
    }
    let requests = applied.len();
    if abandoned.is_none() {
        abandoned = tables
            .write_heads()
            .and_then(|()| tables.write_chunks())
            .err();
    }
    drop(tables);

    let outcome = match abandoned {
        Some(error) => {
            // Discards everything the batch wrote; the batch's error is what callers need.
            drop(transaction.abort());
            Err(error)
        }
        None => transaction.commit().map_err(StoreError::from),
    };
    for pid in &changed_processes {
        processes.forget(pid);
    }
    match outcome {
        Ok(()) => {
            health.commits.fetch_add(1, Ordering::Relaxed);
            // Its count is the commits (one fsync each), its sum the requests they carried.
            metrics::histogram!("clearinghouse_store_commit_size").record(requests as f64);
            applied.into_iter().for_each(Applied::committed);
        }
        Err(error) => {
            health.failed.store(true, Ordering::Relaxed);
            tracing::error!(%error, requests = applied.len(), "store batch not committed");
            for request in applied {
                request.rolled_back(&error);
            }
        }
    }
    requests
}

/// Fails every request of `batch` with `error`; returns how many there were.
fn fail_all(batch: Vec<WriteRequest>, error: &StoreError, health: &WriterHealth) -> usize {
    health.failed.store(true, Ordering::Relaxed);
    let requests = batch.len();
    tracing::error!(%error, requests, "store write transaction failed");
    for request in batch {
        request.fail(error);
    }
    requests
}

struct WriteTables<'txn> {
    /// Read and written through [`Self::head`] and [`Self::set_head`] only.
    processes: Table<'txn, &'static str, &'static [u8]>,
    /// The heads of the processes this batch touched, as it left them: written to `processes`
    /// once per batch ([`Self::write_heads`]) rather than once per append, since the appends
    /// of a batch mostly chain onto the same few processes.
    heads: HashMap<String, ProcessHead>,
    /// The records of the entries this batch appended, a chunk per process, written to
    /// `entry_chunks` once per batch ([`Self::write_chunks`]).
    chunks: HashMap<String, Chunk>,
    entry_chunks: Table<'txn, (&'static str, u64), &'static [u8]>,
    document_numbers: Table<'txn, u64, (&'static str, u64)>,
    entry_times: Table<'txn, (&'static str, i64, u64), ()>,
    owners: Table<'txn, (&'static str, &'static str), ()>,
}

impl<'txn> WriteTables<'txn> {
    fn open(transaction: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            processes: transaction.open_table(PROCESSES)?,
            heads: HashMap::new(),
            chunks: HashMap::new(),
            entry_chunks: transaction.open_table(ENTRY_CHUNKS)?,
            document_numbers: transaction.open_table(DOCUMENT_NUMBERS)?,
            entry_times: transaction.open_table(ENTRY_TIMES)?,
            owners: transaction.open_table(OWNERS)?,
        })
    }

    /// The head of `pid` as this batch left it so far.
    fn head(&self, pid: &str) -> Result<Option<ProcessHead>, StoreError> {
        match self.heads.get(pid) {
            Some(head) => Ok(Some(head.clone())),
            None => read_head(&self.processes, pid),
        }
    }

    fn set_head(&mut self, pid: &str, head: ProcessHead) {
        match self.heads.get_mut(pid) {
            Some(cached) => *cached = head,
            None => {
                self.heads.insert(pid.to_owned(), head);
            }
        }
    }

    /// Adds the record of entry `sequence` of `pid` to the process's chunk of this batch. The
    /// batch appends to a process in sequence, so a record that does not follow the chunk's last
    /// is a bug, and abandons the batch rather than store a chunk that reads wrong.
    fn add_record(&mut self, pid: &str, sequence: u64, record: Vec<u8>) -> Result<(), StoreError> {
        let chunk = match self.chunks.get_mut(pid) {
            Some(chunk) => chunk,
            None => self
                .chunks
                .entry(pid.to_owned())
                .or_insert_with(|| Chunk::new(sequence)),
        };
        if chunk.next() != sequence {
            return Err(StoreError::Corrupt(format!(
                "entry {pid}/{sequence} does not follow {pid}/{} in its batch",
                chunk.next().saturating_sub(1)
            )));
        }
        chunk.push(record);
        Ok(())
    }

    /// Writes this batch's chunks; a failure abandons the batch.
    fn write_chunks(&mut self) -> Result<(), StoreError> {
        for (pid, chunk) in &self.chunks {
            for (first, row) in chunk.rows()? {
                self.entry_chunks
                    .insert((pid.as_str(), first), row.as_slice())?;
            }
        }
        Ok(())
    }

    /// Writes the heads this batch changed; a failure abandons the batch.
    fn write_heads(&mut self) -> Result<(), StoreError> {
        for (pid, head) in &self.heads {
            self.processes
                .insert(pid.as_str(), head.encode().as_slice())?;
        }
        Ok(())
    }
}

fn create(
    tables: &mut WriteTables<'_>,
    sealing: &Sealing,
    pid: String,
    owners: BTreeSet<String>,
) -> Result<CreateOutcome, Failure> {
    if let Some(head) = tables.head(&pid).map_err(Failure::Refused)? {
        return Ok(CreateOutcome::Exists(head.process(pid)));
    }
    let now = now_ms();
    let head = ProcessHead {
        owners,
        created_at_ms: now,
        sequence: 0,
        // The first entry is never dated before its process.
        timestamp_ms: now,
        chain_hash: chain::genesis_hash(&pid),
        keys: sealing.new_process(&pid),
    };
    write_process(tables, &pid, head.clone()).map_err(Failure::Storage)?;
    Ok(CreateOutcome::Created(head.process(pid)))
}

fn write_process(
    tables: &mut WriteTables<'_>,
    pid: &str,
    head: ProcessHead,
) -> Result<(), StoreError> {
    for owner in &head.owners {
        tables.owners.insert((owner.as_str(), pid), ())?;
    }
    tables.set_head(pid, head);
    Ok(())
}

fn append(
    tables: &mut WriteTables<'_>,
    sealing: &Sealing,
    number: u64,
    prepared: PreparedEntry,
) -> Result<Entry, Failure> {
    let Stamped {
        entry,
        head,
        record,
        starts_timestamp,
    } = stamp(tables, sealing, prepared).map_err(Failure::Refused)?;
    write_entry(tables, number, &entry, record, starts_timestamp)?;
    tables.set_head(&entry.pid, head);
    Ok(entry)
}

/// The entry of an owner change and the new owners, in the same transaction, both or neither.
fn change_owners(
    tables: &mut WriteTables<'_>,
    sealing: &Sealing,
    number: u64,
    change: OwnerChange,
) -> Result<Entry, Failure> {
    let OwnerChange {
        entry,
        previous,
        owners,
    } = change;
    let pid = entry.entry().pid.clone();
    let current = tables
        .head(&pid)
        .map_err(Failure::Refused)?
        .ok_or_else(|| Failure::Refused(StoreError::UnknownProcess(pid.clone())))?;
    if current.owners != previous {
        return Err(Failure::Refused(StoreError::OwnersChanged(pid)));
    }
    let Stamped {
        entry,
        mut head,
        record,
        starts_timestamp,
    } = stamp(tables, sealing, entry).map_err(Failure::Refused)?;
    write_entry(tables, number, &entry, record, starts_timestamp)?;
    head.owners = owners;
    let write = |tables: &mut WriteTables<'_>| -> Result<(), StoreError> {
        for removed in previous.difference(&head.owners) {
            tables.owners.remove((removed.as_str(), pid.as_str()))?;
        }
        write_process(tables, &pid, head)
    };
    write(tables).map_err(Failure::Storage)?;
    Ok(entry)
}

/// An entry joined to its chain, not yet written.
struct Stamped {
    entry: Entry,
    /// The process's head once the entry is written.
    head: ProcessHead,
    record: Vec<u8>,
    /// Whether the entry is its process's first with its timestamp, and so goes into
    /// `entry_times`.
    starts_timestamp: bool,
}

/// Decides sequence, timestamp and hashes against the current head, writing nothing.
fn stamp(
    tables: &WriteTables<'_>,
    sealing: &Sealing,
    prepared: PreparedEntry,
) -> Result<Stamped, StoreError> {
    let pid = prepared.entry().pid.as_str();
    let mut head = tables
        .head(pid)?
        .ok_or_else(|| StoreError::UnknownProcess(pid.to_owned()))?;
    let keys = match sealing.entry_keys(pid, &head.keys)? {
        EntryKeys::Plaintext => None,
        EntryKeys::Keys(keys) => Some(keys),
        EntryKeys::Erased => return Err(erased(pid, &head.keys)),
    };
    let chain_head = ChainHead {
        sequence: head.sequence,
        chain_hash: head.chain_hash,
    };
    let link = chain::append_link(&chain_head, head.timestamp_ms, &prepared, keys.as_deref())?;
    // The head's timestamp is its latest entry's (only `create` and this write it), so an
    // entry that differs from it is the first with its own.
    let starts_timestamp = head.sequence == 0 || link.timestamp_ms != head.timestamp_ms;
    head.sequence = link.sequence;
    head.timestamp_ms = link.timestamp_ms;
    head.chain_hash = link.chain_hash;
    let record = encode_entry(
        &prepared,
        &link,
        keys.as_deref().map(|keys| (keys, sealing.random())),
    );
    Ok(Stamped {
        entry: prepared.into_stored(&link, keys.as_deref()),
        head,
        record,
        starts_timestamp,
    })
}

fn erased(pid: &str, state: &KeyState) -> StoreError {
    match state {
        KeyState::Erased(erasure) => StoreError::Erased {
            pid: pid.to_owned(),
            by: erasure.by.clone(),
            at_ms: erasure.at_ms,
        },
        _ => StoreError::Corrupt(format!("process {pid} is erased and is not")),
    }
}

/// Replaces the data key of `pid` with the record of its erasure.
fn erase(
    tables: &mut WriteTables<'_>,
    sealing: &Sealing,
    pid: String,
    by: String,
) -> Result<Erasure, Failure> {
    let mut head = tables
        .head(&pid)
        .map_err(Failure::Refused)?
        .ok_or_else(|| Failure::Refused(StoreError::UnknownProcess(pid.clone())))?;
    let erasure = match &head.keys {
        KeyState::Erased(erasure) => return Ok(erasure.clone()),
        KeyState::Plaintext => return Err(Failure::Refused(StoreError::NotErasable(pid))),
        KeyState::Wrapped(_) => Erasure {
            by,
            at_ms: now_ms(),
        },
    };
    head.keys = KeyState::Erased(erasure.clone());
    tables.set_head(&pid, head);
    sealing.forget(&pid);
    Ok(erasure)
}

/// Writes the entry's index rows and adds its record to the batch's chunk of its process (the
/// caller updates the head). Every write here is one the batch must not commit on its own, so
/// any failure abandons the batch.
fn write_entry(
    tables: &mut WriteTables<'_>,
    number: u64,
    entry: &Entry,
    record: Vec<u8>,
    starts_timestamp: bool,
) -> Result<(), Failure> {
    let storage = |error: redb::StorageError| Failure::Storage(error.into());
    let pid = entry.pid.as_str();
    let in_use = tables
        .document_numbers
        .insert(number, (pid, entry.sequence))
        .map_err(storage)?
        .is_some();
    if in_use {
        // The counter starts past the last number in the table and never goes back.
        return Err(Failure::Storage(StoreError::Corrupt(format!(
            "document number {number} is in use twice (entry {pid}/{})",
            entry.sequence
        ))));
    }
    tables
        .add_record(pid, entry.sequence, record)
        .map_err(Failure::Storage)?;
    // Timestamps never decrease along a chain, so the first entry of each timestamp is all a
    // time range needs (see `reads`): at thousands of appends per second, a row per
    // millisecond rather than per entry.
    if starts_timestamp {
        tables
            .entry_times
            .insert((pid, entry.timestamp_ms, entry.sequence), ())
            .map_err(storage)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::io;

    use super::*;
    use crate::store::embedded::tests::one_byte_entry;
    use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
    use crate::store::ProcessStore;

    /// Storage in memory that fails every write and sync while `failing` is set, like a disk
    /// gone bad, and holds every sync while `syncs` is held, like a slow disk.
    #[derive(Debug, Default)]
    struct TestDisk {
        memory: redb::backends::InMemoryBackend,
        failing: Arc<AtomicBool>,
        syncs: Arc<SyncGate>,
    }

    /// Holds syncs until released, and counts those it holds.
    #[derive(Debug, Default)]
    struct SyncGate {
        /// Whether syncs are held, and how many are waiting.
        state: std::sync::Mutex<(bool, usize)>,
        changed: std::sync::Condvar,
    }

    impl SyncGate {
        fn hold(&self) {
            self.state.lock().unwrap().0 = true;
        }

        fn release(&self) {
            self.state.lock().unwrap().0 = false;
            self.changed.notify_all();
        }

        fn pass(&self) {
            let mut state = self.state.lock().unwrap();
            state.1 += 1;
            state = self.changed.wait_while(state, |(held, _)| *held).unwrap();
            state.1 -= 1;
        }

        fn waiting(&self) -> usize {
            self.state.lock().unwrap().1
        }
    }

    impl TestDisk {
        fn check(&self) -> io::Result<()> {
            if self.failing.load(Ordering::Relaxed) {
                Err(io::Error::other("injected disk failure"))
            } else {
                Ok(())
            }
        }
    }

    impl redb::StorageBackend for TestDisk {
        fn len(&self) -> io::Result<u64> {
            self.memory.len()
        }

        fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
            self.memory.read(offset, out)
        }

        fn set_len(&self, len: u64) -> io::Result<()> {
            self.memory.set_len(len)
        }

        fn sync_data(&self) -> io::Result<()> {
            self.syncs.pass();
            self.check()?;
            self.memory.sync_data()
        }

        fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.check()?;
            self.memory.write(offset, data)
        }
    }

    #[tokio::test]
    async fn an_append_that_is_not_durable_is_never_acknowledged() {
        let disk = TestDisk::default();
        let failing = Arc::clone(&disk.failing);
        let store = store_on(disk, EmbeddedOptions::default()).await;
        store.ping().await.unwrap();

        failing.store(true, Ordering::Relaxed);
        let result = store.append(one_byte_entry("p-1")).await;
        assert!(matches!(result, Err(StoreError::Io(_))), "{result:?}");
        assert_eq!(store.commits(), 1, "only the creation committed");
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
    }

    /// A store on `disk` that holds the process `p-1`.
    async fn store_on(disk: TestDisk, options: EmbeddedOptions) -> Arc<EmbeddedStore> {
        let database = redb::Builder::new().create_with_backend(disk).unwrap();
        let store = Arc::new(EmbeddedStore::start(database, options).unwrap());
        let owners: BTreeSet<String> = ["a".to_owned()].into();
        store.create_process("p-1", &owners).await.unwrap();
        store
    }

    fn append_in_background(store: &Arc<EmbeddedStore>) -> tokio::task::JoinHandle<u64> {
        let store = Arc::clone(store);
        tokio::spawn(async move { store.append(one_byte_entry("p-1")).await.unwrap().sequence })
    }

    /// Polls `done` until it holds; the writer thread gets there on its own time.
    async fn until(done: impl Fn() -> bool) {
        while !done() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A store whose writer is busy: its last batch took five appends, which queued while the
    /// disk held the commit before.
    async fn busy_store(commit_delay: Duration) -> Arc<EmbeddedStore> {
        let disk = TestDisk::default();
        let syncs = Arc::clone(&disk.syncs);
        let options = EmbeddedOptions {
            commit_delay,
            ..EmbeddedOptions::default()
        };
        let store = store_on(disk, options).await;
        let queued = |n: usize| {
            let requests = store.writer.requests.as_ref().unwrap();
            requests.max_capacity() - requests.capacity() == n
        };
        syncs.hold();
        let held = append_in_background(&store);
        until(|| syncs.waiting() == 1).await;
        let busy: Vec<_> = (0..5).map(|_| append_in_background(&store)).collect();
        until(|| queued(5)).await;
        syncs.release();
        held.await.unwrap();
        for append in busy {
            append.await.unwrap();
        }
        assert_eq!(
            store.commits(),
            3,
            "creation, the held append, the five queued"
        );
        store
    }

    /// Awaits `work`, failing the test if it takes a minute: far below the delays the tests
    /// set, so that waiting for one fails the test rather than hanging it.
    async fn within_a_minute<T>(work: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), work)
            .await
            .expect("waited for the commit delay")
    }

    #[tokio::test]
    async fn a_busy_writer_keeps_its_batch_open_for_requests_that_come_within_the_delay() {
        let store = busy_store(Duration::from_secs(3)).await;
        // The batch finds the queue empty after its first append, and waits for the second;
        // fewer than the previous batch's five come, so it commits when the delay has passed.
        let first = append_in_background(&store);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = append_in_background(&store);
        assert_eq!((first.await.unwrap(), second.await.unwrap()), (7, 8));
        assert_eq!(store.commits(), 4, "both appends in one commit");
    }

    #[tokio::test]
    async fn a_busy_batch_commits_once_it_is_as_large_as_the_one_before() {
        let store = busy_store(Duration::from_secs(3600)).await;
        let first = append_in_background(&store);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rest: Vec<_> = (0..4).map(|_| append_in_background(&store)).collect();
        let sequences = within_a_minute(async {
            let mut sequences = vec![first.await.unwrap()];
            for append in rest {
                sequences.push(append.await.unwrap());
            }
            sequences.sort_unstable();
            sequences
        })
        .await;
        assert_eq!(sequences, [7, 8, 9, 10, 11]);
        assert_eq!(store.commits(), 4, "the five appends in one commit");
    }

    #[tokio::test]
    async fn a_writer_that_is_not_busy_commits_without_waiting_for_the_delay() {
        let options = EmbeddedOptions {
            commit_delay: Duration::from_secs(3600),
            ..EmbeddedOptions::default()
        };
        let store = store_on(TestDisk::default(), options).await;
        within_a_minute(async {
            for _ in 0..3 {
                store.append(one_byte_entry("p-1")).await.unwrap();
            }
        })
        .await;
        assert_eq!(store.commits(), 4);
    }

    #[tokio::test]
    async fn a_store_stops_at_once_while_its_writer_waits_for_more_requests() {
        let store = busy_store(Duration::from_secs(3600)).await;
        // The writer takes this append and waits for four more, which never come.
        let first = append_in_background(&store);
        tokio::time::sleep(Duration::from_millis(100)).await;
        first.abort();
        until(|| Arc::strong_count(&store) == 1).await;
        // A thread of its own, which a failing test leaves behind rather than wait for.
        let (stopped, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(store);
            let _ = stopped.send(());
        });
        let stopped = done.recv_timeout(Duration::from_secs(60));
        assert!(
            stopped.is_ok(),
            "the store waited for the commit delay to stop"
        );
    }
}

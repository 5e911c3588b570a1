//! The production backend: processes and entries in MongoDB, shared by any number of
//! clearing-house instances.
//!
//! The embedded store can rely on one writer thread to keep each process's chain linear; several
//! clearing-house instances on one database cannot, and no lock held in one instance's memory
//! helps the others. So every guarantee of [`ProcessStore`] is made by the database itself: a
//! unique index that lets exactly one writer claim the next sequence number of a process, and a
//! compare-and-swap on the process head that only moves it forward over an entry that is stored.
//!
//! - this file: the store, its configuration, and the protocol below;
//! - `documents`: the process and entry documents, and how they encode and decode;
//! - `collections`: connecting, the indexes, and every bounded read and write;
//! - `committer`: the task that runs the append protocol for one instance;
//! - `usage`: the quota counters;
//! - `views`: the saved views of processes (collection `views`).
//!
//! # Appending
//!
//! Each instance appends through one task, its *committer* (`committer`), which takes every
//! append waiting at that moment (up to a batch limit) and commits them together, as the
//! embedded store's writer thread does: an acknowledged write waits for the journal, so a
//! write per append would make every append pay a disk sync and several round trips.
//!
//! 1. Start from the head of each process in the batch (sequence `n`, chain hash, timestamp):
//!    as the committer last left it, or as read from the database the first time.
//! 2. Compute the next entries of each process in the order they arrived: timestamp now but not
//!    before the head's, both hashes from [`chain`].
//! 3. Insert all entries with one ordered `insert_many`. The unique `(pid, sequence)` index lets
//!    exactly one writer claim each sequence number; ordered means the database stops at the
//!    first entry it refuses, so what is stored is a prefix of the batch and, for each process,
//!    a gapless run after its head. A refused entry is a duplicate key: its sequence number was
//!    taken (by another instance, or an orphan, see below), or its document id is in use (told
//!    apart by looking the document id up).
//! 4. Move the head of every process in the stored prefix over its run with one `update`
//!    command, a compare-and-swap per process: each statement matches only while the head
//!    still has sequence `n` and the chain hash step 2 chained onto.
//! 5. Acknowledge the stored entries. Appends after the refused entry are not stored and go
//!    into the next round; the process whose sequence number was taken has its head read again
//!    (and orphans adopted, below) first. An append whose process lost its sequence number
//!    [`MongoConfig::max_append_attempts`] times fails with [`StoreError::Conflict`].
//!
//! The committer keeps the heads it wrote in memory, so a busy process costs no read per
//! batch. That is only a starting point, never trusted: if another instance moved the head
//! meanwhile, the next sequence number is taken and step 3 finds out.
//!
//! The entries are written before the head on purpose. A writer can die (or lose the database)
//! between steps 3 and 4, leaving entries the head does not cover yet: *orphans*. The other
//! order could leave a head without its entries, which no one could ever repair, as their
//! content was only in the dead writer's memory. Orphans are repaired by the next writer of
//! their process, which finds sequence `n + 1` taken while the head stays at `n`: it reads the
//! run of entries after the head, checks that each one's entry hash matches its content, that
//! it chains onto the one before and is not dated before it, and moves the head over them (the
//! same compare-and-swap), then appends after them. Adopting rather than deleting is the only
//! safe repair: the orphans' writer may still be alive and about to move the head itself, and
//! its step 4 then finds the head already past its entries, which is all it needs to
//! acknowledge. An orphan right after the head that does not verify is never adopted; the
//! append fails with [`StoreError::Corrupt`], since someone wrote into the log.
//!
//! An append is acknowledged only after its head moved, so every acknowledged entry is covered
//! by the head, and reads only ever show entries the head covers: an orphan stays invisible
//! until it is adopted.
//!
//! Document ids are random UUIDs v4, drawn once per append as it arrives
//! ([`random_document_id`]), so the committer's retries of one append keep its id; the unique
//! index on `_id` refuses a second entry with an id in use ([`StoreError::DuplicateDocument`],
//! a chance of 2^-122 per pair). A caller that retries a failed append makes a new entry with a
//! new id; if the first try was stored after all, it becomes an orphan and is adopted.
//!
//! A process's owners change only through an owner change (`owners`), which is rare, so each
//! instance also keeps the process records it has read for a second, and authorizing an append
//! to a busy process costs no read either. An owner change made through this instance takes
//! effect here at once; one made through another instance at most a second later.
//!
//! Multi-document transactions would give the same result with more round trips: concurrent
//! transactions on one head fail with write conflicts and need the same retry loop, and they
//! require a replica set, where this scheme also works on a standalone server.
//!
//! # Durability and consistency
//!
//! Every write waits for the configured write concern, by default a majority of the replica set
//! with the journal flushed (`{w: "majority", j: true}`), so an acknowledged entry survives a
//! crash and a failover and the receipt that follows is never signed for an entry that could be
//! rolled back. Weaker settings ([`WriteAcknowledgment::Nodes`], `journal: false`) trade that
//! away for latency. Every read uses read concern `majority`, so nothing read can be rolled back
//! either. Both replace whatever the connection string says about them.
//!
//! # When the database goes away
//!
//! Every database operation is bounded by [`MongoConfig::timeout`]: the driver's server
//! selection, connect and write-concern timeouts and the server-side time limit of reads are set
//! to it, and the operation is abandoned when it runs out all the same. A request makes a few
//! operations in a row (an append: insert the entries, move the heads), and fails with
//! [`StoreError::Unavailable`] at the first one that cannot complete: it never hangs, and never
//! reports an entry it did not store. The driver reconnects by itself when the database
//! returns; [`ProcessStore::ping`] tells when it has.
//!
//! # Untrusted strings
//!
//! Pids, document ids and client ids are only ever compared as BSON string values
//! (`{_id: <string>}`), never spliced into a query document, so a pid like `{"$gt": ""}` is a
//! pid like any other.

mod collections;
mod committer;
mod documents;
mod owners;
mod usage;
mod views;

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::TryStreamExt;
use mongodb::bson::{doc, DateTime};
use tokio::sync::{mpsc, oneshot};

use super::chain;
use super::query::{self, SequenceRange};
use super::sealing::{EntryKeys, Erasure, KeyState, Sealing};
use super::{
    now_ms, CreateOutcome, Entry, Order, OwnerChange, Page, PageQuery, PreparedEntry, Process,
    ProcessInfo, ProcessStore, RewrapBatch, SavedView, StoreError,
};
use collections::{Collections, Insert};
use committer::AppendRequest;
use documents::{binary, to_u64, DataKeyDocument, HeadDocument, PidOnly, ProcessDocument};

/// The first retry waits up to this long; each further one up to twice as long as the last.
const FIRST_BACKOFF: Duration = Duration::from_millis(2);
/// No retry waits longer than this, so that a loser keeps trying while the process is busy.
const MAX_BACKOFF: Duration = Duration::from_millis(100);
/// Process records an instance keeps; past this many it forgets them all and reads again.
const KNOWN_PROCESSES_LIMIT: usize = 100_000;
/// How long an instance trusts a process record it read: an owner change made through another
/// instance takes effect here at most this much later.
const KNOWN_PROCESS_LIFETIME: Duration = Duration::from_secs(1);
/// Appends that may wait for the committer; further callers wait to hand theirs over.
const APPEND_QUEUE: usize = 4096;

/// How many members of the replica set must have a write before MongoDB acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteAcknowledgment {
    /// A majority (`w: "majority"`): acknowledged writes survive a failover. The default.
    Majority,
    /// This many members (`w: n`); fewer than a majority can be rolled back by a failover.
    Nodes(NonZeroU32),
}

/// How to reach the database, and how long to wait for it.
///
/// No `Debug`: the URI may carry a password.
#[derive(Clone)]
pub struct MongoConfig {
    /// A `mongodb://` or `mongodb+srv://` connection string (hosts, credentials, TLS, replica
    /// set). Its write and read concern options are replaced by the ones below.
    pub(crate) uri: String,
    /// The database holding the `processes` and `entries` collections.
    pub(crate) database: String,
    /// Bounds every database operation: server selection, connecting, waiting for the write
    /// concern, and the operation as a whole. Requests fail with [`StoreError::Unavailable`]
    /// once it runs out.
    pub timeout: Duration,
    pub(crate) write_acknowledgment: WriteAcknowledgment,
    /// Whether MongoDB acknowledges writes only once they are in its on-disk journal (`j: true`).
    pub(crate) journal: bool,
    /// How often one append may find its sequence number taken by a concurrent writer (or one
    /// creation its process created but not yet readable) before it gives up with
    /// [`StoreError::Conflict`]. At least 1.
    pub max_append_attempts: u32,
    /// Encryption of new processes, and the keys to read encrypted ones (off by default).
    pub(crate) sealing: Arc<Sealing>,
}

impl MongoConfig {
    /// The durable defaults: majority and journal, 5 seconds, 64 attempts.
    pub fn new(uri: impl Into<String>, database: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            database: database.into(),
            timeout: Duration::from_secs(5),
            write_acknowledgment: WriteAcknowledgment::Majority,
            journal: true,
            max_append_attempts: 64,
            sealing: Arc::new(Sealing::disabled()),
        }
    }

    /// The same configuration, encrypting new processes and reading encrypted ones with
    /// `sealing`.
    pub fn with_sealing(self, sealing: Sealing) -> Self {
        Self {
            sealing: Arc::new(sealing),
            ..self
        }
    }
}

/// A [`ProcessStore`] on MongoDB; see the module documentation.
pub struct MongoStore {
    collections: Collections,
    /// To this instance's committer, which owns every append.
    appends: mpsc::Sender<AppendRequest>,
    /// Process records read recently, with when they were read (see [`KNOWN_PROCESS_LIFETIME`]).
    known_processes: Mutex<HashMap<String, (Process, Instant)>>,
    /// [`MongoConfig::max_append_attempts`], which also bounds how often a creation that lost
    /// a race reads the winner's process.
    max_attempts: u32,
}

impl MongoStore {
    /// Connects and creates the indexes (which creates the collections). Fails with
    /// [`StoreError::Unavailable`] if the database cannot be reached within the timeout or the
    /// configuration is unusable.
    pub async fn connect(config: MongoConfig) -> Result<Self, StoreError> {
        let collections = Collections::connect(&config).await?;
        let max_attempts = config.max_append_attempts.max(1);
        Ok(Self {
            appends: committer::start(collections.clone(), max_attempts),
            collections,
            known_processes: Mutex::new(HashMap::new()),
            max_attempts,
        })
    }

    async fn create(
        &self,
        pid: &str,
        owners: &BTreeSet<String>,
    ) -> Result<CreateOutcome, StoreError> {
        let now = now_ms();
        let data_key = match self.collections.sealing.new_process(pid) {
            KeyState::Wrapped(key) => Some(DataKeyDocument::new(&key)),
            _ => None,
        };
        let document = ProcessDocument {
            pid: pid.to_owned(),
            owners: owners.iter().cloned().collect(),
            created_at: DateTime::from_millis(now),
            head: HeadDocument {
                sequence: 0,
                chain_hash: binary(chain::genesis_hash(pid).to_vec()),
                // The first entry is never dated before its process.
                timestamp: DateTime::from_millis(now),
            },
            data_key,
            erasure: None,
        };
        let collections = &self.collections;
        for attempt in 1..=self.max_attempts {
            if let Insert::Done = collections
                .insert(&collections.processes, &document)
                .await?
            {
                return document
                    .decode()
                    .map(|(process, _)| CreateOutcome::Created(process));
            }
            // Created concurrently: report it once a majority read sees it.
            if let Some(existing) = collections.read_process(pid).await? {
                return existing
                    .decode()
                    .map(|(process, _)| CreateOutcome::Exists(process));
            }
            backoff(attempt).await;
        }
        Err(StoreError::Conflict(format!(
            "process {pid} exists but could not be read back"
        )))
    }

    async fn known_process(&self, pid: &str) -> Result<Option<Process>, StoreError> {
        if let Some((process, read_at)) = self.known().get(pid) {
            if read_at.elapsed() < KNOWN_PROCESS_LIFETIME {
                return Ok(Some(process.clone()));
            }
        }
        let Some(document) = self.collections.read_process(pid).await? else {
            return Ok(None);
        };
        let (process, _) = document.decode()?;
        let mut known = self.known();
        if known.len() >= KNOWN_PROCESSES_LIMIT {
            known.clear();
        }
        known.insert(pid.to_owned(), (process.clone(), Instant::now()));
        Ok(Some(process))
    }

    /// Makes the next [`ProcessStore::process`] read `pid` again: its owners changed.
    fn forget_process(&self, pid: &str) {
        self.known().remove(pid);
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Process, Instant)>> {
        // The map is only ever inserted into, removed from or cleared: a panic elsewhere cannot
        // leave it half-changed, so a poisoned lock is still good.
        self.known_processes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn hand_to_committer(&self, prepared: PreparedEntry) -> Result<Entry, StoreError> {
        let (reply, done) = oneshot::channel();
        self.appends
            .send(AppendRequest { prepared, reply })
            .await
            .map_err(|_| committer::gone())?;
        done.await.map_err(|_| committer::gone())?
    }

    async fn find_entry(&self, pid: &str, document_id: &str) -> Result<Option<Entry>, StoreError> {
        let collections = &self.collections;
        let Some(found) = collections
            .read_entry(doc! { "_id": document_id, "pid": pid })
            .await?
        else {
            return Ok(None);
        };
        // An entry the head does not cover is not in the log yet.
        let head = match collections.read_process(pid).await? {
            Some(process) => process.decode()?.1,
            None => {
                return Err(StoreError::Corrupt(format!(
                    "entry {document_id} belongs to process {pid}, which does not exist"
                )))
            }
        };
        if to_u64(found.sequence)? > head.sequence {
            return Ok(None);
        }
        found.decode(&self.entry_keys(&head)?).map(Some)
    }

    fn entry_keys(&self, head: &documents::Head) -> Result<EntryKeys, StoreError> {
        self.collections.sealing.entry_keys(&head.pid, &head.keys)
    }

    /// Destroys the data key of `pid`, then deletes its saved view (see `views` for the order).
    async fn erase_process(&self, pid: &str, by: &str) -> Result<Erasure, StoreError> {
        let erasure = self.destroy_key(pid, by).await?;
        self.collections.delete_view(pid).await?;
        Ok(erasure)
    }

    async fn destroy_key(&self, pid: &str, by: &str) -> Result<Erasure, StoreError> {
        let collections = &self.collections;
        let erasure = Erasure {
            by: by.to_owned(),
            at_ms: now_ms(),
        };
        // One update: the key goes and the erasure is recorded together, or neither.
        let result = collections
            .bounded(
                "erasing a process",
                collections.processes.update_one(
                    doc! { "_id": pid, "data_key": { "$exists": true } },
                    doc! {
                        "$unset": { "data_key": "" },
                        "$set": { "erasure": {
                            "by": by,
                            "at": DateTime::from_millis(erasure.at_ms),
                        } },
                    },
                ),
            )
            .await?;
        self.forget_process(pid);
        collections.sealing.forget(pid);
        if result.matched_count == 1 {
            return Ok(erasure);
        }
        let Some(document) = collections.read_process(pid).await? else {
            return Err(StoreError::UnknownProcess(pid.to_owned()));
        };
        match document.decode()?.1.keys {
            KeyState::Erased(first) => Ok(first),
            KeyState::Plaintext => Err(StoreError::NotErasable(pid.to_owned())),
            KeyState::Wrapped(_) => Err(StoreError::Conflict(format!(
                "process {pid} changed while it was being erased; erase it again"
            ))),
        }
    }

    async fn page(&self, query: &PageQuery) -> Result<Page, StoreError> {
        query::validate(query)?;
        let collections = &self.collections;
        let pid = query.pid.as_str();
        let head = collections.read_head(pid).await?;
        let empty = Page {
            entries: Vec::new(),
            total: 0,
        };
        // Timestamps never decrease with the sequence, so the time range is the run of
        // sequences from the first entry at or after `from_ms` to the last at or before `to_ms`.
        let first = match query.from_ms {
            None => 1,
            Some(from_ms) => {
                let at_or_after = doc! { "$gte": DateTime::from_millis(from_ms) };
                match collections.sequence_at(pid, &head, at_or_after, 1).await? {
                    Some(sequence) => sequence,
                    None => return Ok(empty),
                }
            }
        };
        let last = match query.to_ms {
            None => head.sequence,
            Some(to_ms) => {
                let at_or_before = doc! { "$lte": DateTime::from_millis(to_ms) };
                match collections
                    .sequence_at(pid, &head, at_or_before, -1)
                    .await?
                {
                    Some(sequence) => sequence,
                    None => return Ok(empty),
                }
            }
        };
        let Some(matched) = SequenceRange::new(first, last) else {
            return Ok(empty);
        };
        let entries = match matched.page(query.page, query.size, query.order) {
            Some(window) => {
                let keys = self.entry_keys(&head)?;
                collections
                    .read_run(pid, window, query.order, query.max_bytes, &keys)
                    .await?
            }
            None => Vec::new(),
        };
        Ok(Page {
            entries,
            total: matched.len(),
        })
    }

    async fn run_from(
        &self,
        pid: &str,
        from_sequence: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let head = self.collections.read_head(pid).await?;
        let end = from_sequence.saturating_add(u64::try_from(limit).unwrap_or(u64::MAX));
        let Some(last) = end.checked_sub(1).map(|last| last.min(head.sequence)) else {
            return Ok(Vec::new());
        };
        match SequenceRange::new(from_sequence.max(1), last) {
            Some(range) => {
                let keys = self.entry_keys(&head)?;
                self.collections
                    .read_run(pid, range, Order::Asc, usize::MAX, &keys)
                    .await
            }
            None => Ok(Vec::new()),
        }
    }

    async fn owned_by(&self, client_id: &str) -> Result<Vec<String>, StoreError> {
        let collections = &self.collections;
        let found: Vec<PidOnly> = collections
            .bounded("listing processes", async {
                collections
                    .processes
                    .clone_with_type::<PidOnly>()
                    .find(doc! { "owners": client_id })
                    .sort(doc! { "_id": 1 })
                    .projection(doc! { "_id": 1 })
                    .max_time(collections.timeout)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        Ok(found.into_iter().map(|found| found.pid).collect())
    }
}

impl ProcessStore for MongoStore {
    fn create_process(
        &self,
        pid: &str,
        owners: &BTreeSet<String>,
    ) -> BoxFuture<'_, Result<CreateOutcome, StoreError>> {
        let pid = pid.to_owned();
        let owners = owners.clone();
        Box::pin(async move { self.create(&pid, &owners).await })
    }

    fn process(&self, pid: &str) -> BoxFuture<'_, Result<Option<Process>, StoreError>> {
        let pid = pid.to_owned();
        Box::pin(async move { self.known_process(&pid).await })
    }

    fn append(&self, entry: PreparedEntry) -> BoxFuture<'_, Result<Entry, StoreError>> {
        Box::pin(self.hand_to_committer(entry.with_document_id(random_document_id())))
    }

    fn process_info(&self, pid: &str) -> BoxFuture<'_, Result<Option<ProcessInfo>, StoreError>> {
        let pid = pid.to_owned();
        Box::pin(async move { self.fresh_info(&pid).await })
    }

    fn change_owners(&self, change: OwnerChange) -> BoxFuture<'_, Result<Entry, StoreError>> {
        Box::pin(self.change(change.with_document_id(random_document_id())))
    }

    fn entry(
        &self,
        pid: &str,
        document_id: &str,
    ) -> BoxFuture<'_, Result<Option<Entry>, StoreError>> {
        let pid = pid.to_owned();
        let document_id = document_id.to_owned();
        Box::pin(async move { self.find_entry(&pid, &document_id).await })
    }

    fn query(&self, query: &PageQuery) -> BoxFuture<'_, Result<Page, StoreError>> {
        let query = query.clone();
        Box::pin(async move { self.page(&query).await })
    }

    fn processes_of(&self, client_id: &str) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let client_id = client_id.to_owned();
        Box::pin(async move { self.owned_by(&client_id).await })
    }

    fn entries_from(
        &self,
        pid: &str,
        from_sequence: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Entry>, StoreError>> {
        let pid = pid.to_owned();
        Box::pin(async move { self.run_from(&pid, from_sequence, limit).await })
    }

    fn erase(&self, pid: &str, by: &str) -> BoxFuture<'_, Result<Erasure, StoreError>> {
        let pid = pid.to_owned();
        let by = by.to_owned();
        Box::pin(async move { self.erase_process(&pid, &by).await })
    }

    fn data_key_keks(&self) -> BoxFuture<'_, Result<BTreeSet<String>, StoreError>> {
        Box::pin(self.collections.data_key_keks())
    }

    fn rewrap_data_keys(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RewrapBatch, StoreError>> {
        Box::pin(async move {
            let batch = self.collections.rewrap(after, limit.max(1)).await?;
            Ok(batch)
        })
    }

    fn saved_view(&self, pid: &str) -> BoxFuture<'_, Result<Option<SavedView>, StoreError>> {
        let pid = pid.to_owned();
        Box::pin(async move { self.read_saved_view(&pid).await })
    }

    fn save_view(&self, pid: &str, view: SavedView) -> BoxFuture<'_, Result<(), StoreError>> {
        let pid = pid.to_owned();
        Box::pin(async move { self.write_saved_view(&pid, view).await })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // Like every command without a read preference, this needs the primary, the member
            // that takes writes.
            self.collections
                .bounded(
                    "answering a ping",
                    self.collections.database.run_command(doc! { "ping": 1 }),
                )
                .await
                .map(drop)
        })
    }
}

/// A new entry's document id: a random UUID v4, as the entries' unique `_id` index expects of
/// every instance (the embedded store's counter-derived ids need a store-wide counter, which
/// instances sharing a database do not have).
fn random_document_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Waits a random time below a bound that doubles with every attempt, so that writers that
/// collided once do not collide again in lockstep.
async fn backoff(attempt: u32) {
    let bound = FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    // Jitter needs no cryptographic randomness; std's randomly keyed hasher is enough.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let bound_us = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX).max(1);
    tokio::time::sleep(Duration::from_micros(random % bound_us)).await;
}

//! The production backend: processes and entries in MongoDB, shared by any number of
//! clearing-house instances.
//!
//! The embedded store can rely on one writer thread to keep each process's chain linear; several
//! clearing-house instances on one database cannot, and no lock held in one instance's memory
//! helps the others. So every guarantee of [`ProcessStore`] is made by the database itself: a
//! unique index that lets exactly one writer claim the next sequence number of a process, and a
//! compare-and-swap on the process head that only moves it forward over an entry that is stored.
//!
//! # Documents
//!
//! Collection `processes`, one document per process:
//!
//! ```text
//! { _id:        <pid: string>,
//!   owners:     [<client id: string>, ...],       // sorted, no duplicates
//!   created_at: <Date>,                           // UTC milliseconds
//!   head: { sequence:   <Int64>,                  // of the latest entry in the chain, 0 if none
//!           chain_hash: <BinData 0, 32 bytes>,    // its chain hash (the genesis hash if none)
//!           timestamp:  <Date> } }                // its timestamp (created_at if none)
//! ```
//!
//! Collection `entries`, one document per entry:
//!
//! ```text
//! { _id:          <document id: string>,
//!   pid:          <string>,
//!   sequence:     <Int64>,                        // 1, 2, 3, ... per pid
//!   timestamp:    <Date>,                         // UTC milliseconds
//!   client_id:    <string>,
//!   payload_type: <string>,                       // "" when the payload has no media type
//!   header:       <string>,                       // the header's canonical JSON (see chain)
//!   payload:      <BinData 0>,
//!   entry_hash:   <BinData 0, 32 bytes>,
//!   chain_hash:   <BinData 0, 32 bytes> }
//! ```
//!
//! Indexes, created (idempotently) by [`MongoStore::connect`]: `entries` `{pid: 1, sequence: 1}`
//! unique (one entry per sequence number, and the index behind every page), `{pid: 1,
//! timestamp: 1, sequence: 1}` (the two lookups that turn a time range into a run of sequence
//! numbers), the document id as `_id` (unique across all processes by definition), and
//! `processes` `{owners: 1, _id: 1}` (the pids of a client, already sorted). Collection `usage`
//! holds the quota counters ([`usage`]).
//!
//! The header is stored as its canonical JSON *string*, not as a BSON document: header keys
//! come from clients, and MongoDB gives keys starting with `$` or containing `.` a meaning of
//! their own, so a string is the only form that is stored and returned exactly as it was hashed.
//! A BSON document is limited to 16 MiB, so payload plus header must stay below that.
//!
//! # Appending
//!
//! Each instance appends through one task, its *committer* ([`committer`]), which takes every
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
//! until it is adopted. Its document id is in use all the same, so retrying a failed append
//! with the same document id gets [`StoreError::DuplicateDocument`] if the first try did store
//! the entry.
//!
//! Processes never change once created (their owners are fixed), so each instance also keeps
//! the process records it has read, and authorizing an append costs no read either.
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

mod committer;
mod usage;

use std::collections::{BTreeSet, HashMap};
use std::future::{Future, IntoFuture};
use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::TryStreamExt;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, DateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, ClientOptions, IndexOptions, ReadConcern, WriteConcern};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::chain::{self};
use super::query::{self, SequenceRange};
use super::{
    now_ms, CreateOutcome, Entry, Order, Page, PageQuery, PreparedEntry, Process, ProcessStore,
    StoreError,
};
use committer::AppendRequest;

const PROCESSES: &str = "processes";
const ENTRIES: &str = "entries";
/// MongoDB's error code for a violated unique index.
const DUPLICATE_KEY: i32 = 11000;
/// The first retry waits up to this long; each further one up to twice as long as the last.
const FIRST_BACKOFF: Duration = Duration::from_millis(2);
/// No retry waits longer than this, so that a loser keeps trying while the process is busy.
const MAX_BACKOFF: Duration = Duration::from_millis(100);
/// Process records an instance keeps; past this many it forgets them all and reads again.
const KNOWN_PROCESSES_LIMIT: usize = 100_000;
/// Appends that may wait for the committer; further callers wait to hand theirs over.
const APPEND_QUEUE: usize = 4096;

/// How many members of the replica set must have a write before MongoDB acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteAcknowledgment {
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
    pub uri: String,
    /// The database holding the `processes` and `entries` collections.
    pub database: String,
    /// Bounds every database operation: server selection, connecting, waiting for the write
    /// concern, and the operation as a whole. Requests fail with [`StoreError::Unavailable`]
    /// once it runs out.
    pub timeout: Duration,
    pub write_acknowledgment: WriteAcknowledgment,
    /// Whether MongoDB acknowledges writes only once they are in its on-disk journal (`j: true`).
    pub journal: bool,
    /// How often one append may find its sequence number taken by a concurrent writer (or one
    /// creation its process created but not yet readable) before it gives up with
    /// [`StoreError::Conflict`]. At least 1.
    pub max_append_attempts: u32,
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
        }
    }
}

/// A [`ProcessStore`] on MongoDB; see the module documentation.
pub struct MongoStore {
    collections: Collections,
    /// To this instance's committer, which owns every append.
    appends: mpsc::Sender<AppendRequest>,
    /// Process records read so far: they never change once created.
    known_processes: Mutex<HashMap<String, Process>>,
    /// [`MongoConfig::max_append_attempts`], which also bounds how often a creation that lost
    /// a race reads the winner's process.
    max_attempts: u32,
}

impl MongoStore {
    /// Connects and creates the indexes (which creates the collections). Fails with
    /// [`StoreError::Unavailable`] if the database cannot be reached within the timeout or the
    /// configuration is unusable.
    pub async fn connect(config: MongoConfig) -> Result<Self, StoreError> {
        let timeout = config.timeout;
        // Parsing resolves DNS for `mongodb+srv://` URIs, so it is bounded as well.
        let mut options = bounded(timeout, "parsing the connection string", async {
            ClientOptions::parse(&config.uri).await
        })
        .await?;
        let write_concern = WriteConcern::builder()
            .w(match config.write_acknowledgment {
                WriteAcknowledgment::Majority => Acknowledgment::Majority,
                WriteAcknowledgment::Nodes(nodes) => Acknowledgment::Nodes(nodes.get()),
            })
            .journal(config.journal)
            .w_timeout(timeout)
            .build();
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.write_concern = Some(write_concern.clone());
        options.read_concern = Some(ReadConcern::majority());
        options
            .app_name
            .get_or_insert_with(|| "clearinghouse".to_owned());
        let client = Client::with_options(options).map_err(classify)?;
        let database = client.database(&config.database);
        let collections = Collections {
            processes: database.collection(PROCESSES),
            entries: database.collection(ENTRIES),
            database,
            timeout,
            write_concern,
        };
        collections.create_indexes().await?;
        collections.create_usage_index().await?;
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
        if let Some(process) = self.known().get(pid) {
            return Ok(Some(process.clone()));
        }
        let Some(document) = self.collections.read_process(pid).await? else {
            return Ok(None);
        };
        let (process, _) = document.decode()?;
        let mut known = self.known();
        if known.len() >= KNOWN_PROCESSES_LIMIT {
            known.clear();
        }
        known.insert(pid.to_owned(), process.clone());
        Ok(Some(process))
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Process>> {
        // The map is only ever inserted into or cleared: a panic elsewhere cannot leave it
        // half-changed, so a poisoned lock is still good.
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
            Some(process) => process.head.decode(pid)?,
            None => {
                return Err(StoreError::Corrupt(format!(
                    "entry {document_id} belongs to process {pid}, which does not exist"
                )))
            }
        };
        if to_u64(found.sequence)? > head.sequence {
            return Ok(None);
        }
        found.decode().map(Some)
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
                collections
                    .read_run(pid, window, query.order, query.max_bytes)
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
                self.collections
                    .read_run(pid, range, Order::Asc, usize::MAX)
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

/// The two collections and how to talk to them; shared by the store and its committer.
#[derive(Clone)]
struct Collections {
    database: Database,
    processes: Collection<ProcessDocument>,
    entries: Collection<EntryDocument>,
    timeout: Duration,
    /// As configured; commands sent with `run_command` must name it themselves.
    write_concern: WriteConcern,
}

impl Collections {
    async fn create_indexes(&self) -> Result<(), StoreError> {
        let index = |name: &str, keys: Document, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_owned())
                        .unique(unique)
                        .build(),
                )
                .build()
        };
        self.bounded("creating the entry indexes", async {
            self.entries
                .create_indexes([
                    index("pid_sequence", doc! { "pid": 1, "sequence": 1 }, true),
                    index(
                        "pid_timestamp",
                        doc! { "pid": 1, "timestamp": 1, "sequence": 1 },
                        false,
                    ),
                ])
                .await
        })
        .await?;
        self.bounded("creating the process indexes", async {
            self.processes
                .create_index(index("owners", doc! { "owners": 1, "_id": 1 }, false))
                .await
        })
        .await?;
        Ok(())
    }

    fn bounded<T>(
        &self,
        what: &'static str,
        operation: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> impl Future<Output = Result<T, StoreError>> {
        bounded(self.timeout, what, operation)
    }

    /// Inserts a document, telling a violated unique index apart from other failures.
    async fn insert<T: Serialize + Send + Sync>(
        &self,
        collection: &Collection<T>,
        document: &T,
    ) -> Result<Insert, StoreError> {
        let outcome = tokio::time::timeout(self.timeout, collection.insert_one(document)).await;
        match outcome {
            Err(_) => Err(timed_out(self.timeout, "inserting")),
            Ok(Ok(_)) => Ok(Insert::Done),
            Ok(Err(error)) if is_duplicate_key(&error) => Ok(Insert::DuplicateKey),
            Ok(Err(error)) => Err(classify(error)),
        }
    }

    async fn read_process(&self, pid: &str) -> Result<Option<ProcessDocument>, StoreError> {
        self.bounded(
            "reading a process",
            self.processes.find_one(doc! { "_id": pid }),
        )
        .await
    }

    async fn read_head(&self, pid: &str) -> Result<Head, StoreError> {
        match self.read_process(pid).await? {
            Some(process) => process.head.decode(pid),
            None => Err(StoreError::UnknownProcess(pid.to_owned())),
        }
    }

    async fn read_entry(&self, filter: Document) -> Result<Option<EntryDocument>, StoreError> {
        self.bounded("reading an entry", self.entries.find_one(filter))
            .await
    }

    /// Entries of `pid` with sequences in `range`, in `order`; all of them must be there, and
    /// their payloads and headers must not add up to more than `max_bytes`
    /// ([`StoreError::PageTooLarge`]).
    async fn read_run(
        &self,
        pid: &str,
        range: SequenceRange,
        order: Order,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let direction = match order {
            Order::Asc => 1,
            Order::Desc => -1,
        };
        let filter = doc! {
            "pid": pid,
            "sequence": { "$gte": to_i64(range.first)?, "$lte": to_i64(range.last)? },
        };
        let documents = self
            .bounded("reading entries", async {
                let mut cursor = self
                    .entries
                    .find(filter)
                    .sort(doc! { "sequence": direction })
                    .max_time(self.timeout)
                    .await?;
                let mut documents = Vec::new();
                let mut bytes = 0usize;
                while let Some(document) = cursor.try_next().await? {
                    bytes =
                        bytes.saturating_add(document.payload.bytes.len() + document.header.len());
                    if bytes > max_bytes {
                        return Ok(Err(StoreError::PageTooLarge { limit: max_bytes }));
                    }
                    documents.push(document);
                }
                Ok(Ok(documents))
            })
            .await??;
        if documents.len() as u64 != range.len() {
            return Err(StoreError::Corrupt(format!(
                "process {pid} lacks entries between sequences {} and {}",
                range.first, range.last
            )));
        }
        documents.into_iter().map(EntryDocument::decode).collect()
    }

    /// The sequence of the first (`direction` 1) or last (-1) entry of `pid` matching
    /// `timestamp`, among those the head covers.
    async fn sequence_at(
        &self,
        pid: &str,
        head: &Head,
        timestamp: Document,
        direction: i32,
    ) -> Result<Option<u64>, StoreError> {
        let filter = doc! {
            "pid": pid,
            "timestamp": timestamp,
            "sequence": { "$lte": to_i64(head.sequence)? },
        };
        let found = self
            .bounded("looking up a time range", async {
                self.entries
                    .clone_with_type::<SequenceOnly>()
                    .find_one(filter)
                    .sort(doc! { "timestamp": direction, "sequence": direction })
                    .projection(doc! { "sequence": 1 })
                    .max_time(self.timeout)
                    .await
            })
            .await?;
        found.map(|found| to_u64(found.sequence)).transpose()
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
        Box::pin(self.hand_to_committer(entry))
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

enum Insert {
    Done,
    DuplicateKey,
}

/// The state of a process's chain, as its `head` subdocument holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    pid: String,
    sequence: u64,
    chain_hash: [u8; 32],
    timestamp_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct ProcessDocument {
    #[serde(rename = "_id")]
    pid: String,
    owners: Vec<String>,
    created_at: DateTime,
    head: HeadDocument,
}

impl ProcessDocument {
    fn decode(self) -> Result<(Process, Head), StoreError> {
        let head = self.head.decode(&self.pid)?;
        Ok((
            Process {
                pid: self.pid,
                owners: self.owners.into_iter().collect(),
                created_at_ms: self.created_at.timestamp_millis(),
            },
            head,
        ))
    }
}

#[derive(Serialize, Deserialize)]
struct HeadDocument {
    sequence: i64,
    chain_hash: Binary,
    timestamp: DateTime,
}

impl HeadDocument {
    fn decode(self, pid: &str) -> Result<Head, StoreError> {
        Ok(Head {
            pid: pid.to_owned(),
            sequence: to_u64(self.sequence)?,
            chain_hash: hash(&self.chain_hash, || format!("head of process {pid}"))?,
            timestamp_ms: self.timestamp.timestamp_millis(),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct EntryDocument {
    #[serde(rename = "_id")]
    document_id: String,
    pid: String,
    sequence: i64,
    timestamp: DateTime,
    client_id: String,
    payload_type: String,
    header: String,
    payload: Binary,
    entry_hash: Binary,
    chain_hash: Binary,
}

impl EntryDocument {
    fn decode(self) -> Result<Entry, StoreError> {
        let name = || {
            format!(
                "entry {}/{} ({})",
                self.pid, self.sequence, self.document_id
            )
        };
        let header = serde_json::from_str(&self.header).map_err(|error| {
            StoreError::Corrupt(format!("{}: header is not JSON: {error}", name()))
        })?;
        let entry_hash = hash(&self.entry_hash, name)?;
        let chain_hash = hash(&self.chain_hash, name)?;
        Ok(Entry {
            sequence: to_u64(self.sequence)?,
            pid: self.pid,
            document_id: self.document_id,
            timestamp_ms: self.timestamp.timestamp_millis(),
            client_id: self.client_id,
            header,
            payload: Bytes::from(self.payload.bytes),
            payload_type: self.payload_type,
            entry_hash,
            chain_hash,
        })
    }
}

#[derive(Deserialize)]
struct SequenceOnly {
    sequence: i64,
}

#[derive(Deserialize)]
struct PidOnly {
    #[serde(rename = "_id")]
    pid: String,
}

fn binary(bytes: Vec<u8>) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    }
}

fn hash(stored: &Binary, name: impl FnOnce() -> String) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(stored.bytes.as_slice())
        .map_err(|_| StoreError::Corrupt(format!("{}: a hash is not 32 bytes", name())))
}

/// Sequences are unsigned in the store's API and Int64 in BSON; both stay far below 2^63.
fn to_i64(sequence: u64) -> Result<i64, StoreError> {
    i64::try_from(sequence)
        .map_err(|_| StoreError::Corrupt(format!("sequence {sequence} does not fit in BSON")))
}

fn to_u64(sequence: i64) -> Result<u64, StoreError> {
    u64::try_from(sequence)
        .map_err(|_| StoreError::Corrupt(format!("stored sequence {sequence} is negative")))
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

/// Runs one database operation, giving up after `timeout` whatever the driver is waiting for.
async fn bounded<T>(
    timeout: Duration,
    what: &'static str,
    operation: impl IntoFuture<Output = mongodb::error::Result<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, operation).await {
        Ok(result) => result.map_err(classify),
        Err(_) => Err(timed_out(timeout, what)),
    }
}

fn timed_out(timeout: Duration, what: &str) -> StoreError {
    StoreError::Unavailable(format!("MongoDB did not finish {what} within {timeout:?}"))
}

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    match &*error.kind {
        ErrorKind::Write(WriteFailure::WriteError(write)) => write.code == DUPLICATE_KEY,
        ErrorKind::Command(command) => command.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// Sorts the driver's errors into what a caller can act on.
///
/// Stored documents that do not have the documented shape are [`StoreError::Corrupt`]. All
/// else is [`StoreError::Unavailable`]: the network, server selection, a primary stepping down
/// or shutting down, a write concern that timed out (the write may exist, but is not durable
/// as asked, so no receipt may be signed for it), authentication, and an unusable connection
/// string all leave the store unable to serve until the database or its configuration is back.
fn classify(error: mongodb::error::Error) -> StoreError {
    match &*error.kind {
        ErrorKind::BsonDeserialization(_) => {
            StoreError::Corrupt(format!("a stored document does not decode: {error}"))
        }
        _ => StoreError::Unavailable(format!("MongoDB: {error}")),
    }
}

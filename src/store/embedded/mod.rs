//! The embedded backend: one redb file, written by one thread with group commit.
//!
//! A receipt may only be signed once its entry is on disk, so every commit is fsync'd
//! (`Durability::Immediate`, redb's default). One fsync per append would cap a disk at a few
//! hundred appends per second; instead, appends and process creations queue for a single writer
//! thread that takes everything waiting (up to [`MAX_BATCH_REQUESTS`] requests or
//! [`MAX_BATCH_BYTES`] of payload), applies it in order in one write transaction, commits once,
//! and then answers every caller. Appends to the same process within a batch chain onto each
//! other, because each one reads the head the previous one wrote in the same transaction. One
//! writer also means one order per process, so sequences and chain hashes need no locking.
//!
//! Each request is checked before anything of it is written, so a request that is refused
//! (unknown process, duplicate document id) leaves nothing behind and fails alone; the rest of
//! its batch commits. A write that fails part way could leave half an entry in the transaction,
//! so it abandons the batch: the transaction is aborted and every caller in the batch
//! gets the error, as they do when the commit itself fails. redb refuses all further writes after
//! an I/O error (after a failed fsync the page cache cannot be trusted), so from then on
//! [`ProcessStore::ping`] reports the store unavailable until it is reopened.
//!
//! Reads run in read transactions on tokio's blocking pool. redb gives them a snapshot, so
//! they never wait for the writer, and no tokio worker thread waits for the disk. The one
//! exception is [`ProcessStore::process`], which every log and query starts with: it reads one
//! small record from the `processes` table, whose pages stay in redb's cache, so it runs inline.
//! Handing it to the blocking pool and back cost more than the read itself: about a fifth of the
//! server's CPU time per logged message (see BENCHMARKS.md).
//!
//! Tables:
//! - `processes`: pid -> process record (owners, creation time, head sequence, head chain hash,
//!   head timestamp);
//! - `entries`: (pid, sequence) -> entry record;
//! - `documents`: document id -> (pid, sequence);
//! - `entry_times`: (pid, timestamp_ms, sequence) -> (), for time ranges;
//! - `owners`: (client id, pid) -> (), for [`ProcessStore::processes_of`];
//! - `usage`: the quota counters, written outside the writer thread (see [`usage`]).
//!
//! Records are a compact binary encoding rather than JSON, so that payloads of several MiB are
//! stored as they are (no base64) and read back without copying twice. Both start with a format
//! byte (1), then fixed-width fields (integers big-endian, hashes as 32 raw bytes), then
//! variable-width fields each prefixed by its byte length as a big-endian u64:
//! - entry record: format, timestamp_ms (i64), entry_hash, chain_hash, document_id, client_id,
//!   payload_type, canonical header JSON, payload (pid and sequence are the key);
//! - process record: format, created_at_ms (i64), head sequence (u64), head timestamp_ms (i64),
//!   head chain hash, number of owners (u64), then each owner.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use futures::future::BoxFuture;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};
use tokio::sync::{mpsc, oneshot};

use super::chain::{self, ChainHead, Link};
use super::query::{self, SequenceRange};
use super::{
    now_ms, CreateOutcome, Entry, Order, Page, PageQuery, PreparedEntry, Process, ProcessStore,
    StoreError,
};

mod usage;

const PROCESSES: TableDefinition<&str, &[u8]> = TableDefinition::new("processes");
const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");
const DOCUMENTS: TableDefinition<&str, (&str, u64)> = TableDefinition::new("documents");
const ENTRY_TIMES: TableDefinition<(&str, i64, u64), ()> = TableDefinition::new("entry_times");
const OWNERS: TableDefinition<(&str, &str), ()> = TableDefinition::new("owners");

/// Most requests one write transaction takes; bounds the latency a batch adds to its first caller.
pub const MAX_BATCH_REQUESTS: usize = 512;
/// A batch stops taking requests once its payloads reach this many bytes, bounding its memory.
pub const MAX_BATCH_BYTES: usize = 8 << 20;
/// Requests waiting for the writer; callers beyond this wait to enqueue (backpressure).
const QUEUE_CAPACITY: usize = 1024;

const RECORD_FORMAT: u8 = 1;

/// A [`ProcessStore`] in one redb file.
pub struct EmbeddedStore {
    database: Arc<Database>,
    /// `None` only while dropping, so that the writer sees the queue close.
    requests: Option<mpsc::Sender<WriteRequest>>,
    writer: Option<JoinHandle<()>>,
    health: Arc<WriterHealth>,
}

/// What the writer reports back to the store's handles.
#[derive(Default)]
struct WriterHealth {
    commits: AtomicU64,
    /// Set for good once a batch could not be committed.
    failed: AtomicBool,
}

impl EmbeddedStore {
    /// Opens the store at `path`, creating the file if it does not exist, and starts its writer.
    /// Blocks on disk I/O (and on recovery after a crash): call it at startup, not on a hot path.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::start(Database::create(path)?)
    }

    fn start(database: Database) -> Result<Self, StoreError> {
        let database = Arc::new(database);
        // Read transactions fail on tables that were never created, so create them all up front.
        let transaction = database.begin_write()?;
        WriteTables::open(&transaction)?;
        transaction.commit()?;

        let (requests, queue) = mpsc::channel(QUEUE_CAPACITY);
        let health = Arc::new(WriterHealth::default());
        let writer = std::thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn({
                let database = Arc::clone(&database);
                let health = Arc::clone(&health);
                move || run_writer(&database, queue, &health)
            })?;
        Ok(Self {
            database,
            requests: Some(requests),
            writer: Some(writer),
            health,
        })
    }

    /// Write transactions committed by the writer so far (each one fsync): with group commit,
    /// usually far fewer than the appends and creations they carried.
    pub fn commits(&self) -> u64 {
        self.health.commits.load(Ordering::Relaxed)
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
        answer.await.map_err(|_| writer_gone())?
    }

    fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let database = Arc::clone(&self.database);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || work(&database.begin_read()?))
                .await
                .map_err(|error| StoreError::Unavailable(format!("read task failed: {error}")))?
        })
    }
}

impl Drop for EmbeddedStore {
    /// Lets the writer finish what is queued and waits for it, so that the file is closed when
    /// the store is gone and can be reopened at once. Waits at most for one batch to commit.
    fn drop(&mut self) {
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the store writer thread panicked");
            }
        }
    }
}

impl ProcessStore for EmbeddedStore {
    fn create_process(
        &self,
        pid: &str,
        owners: &BTreeSet<String>,
    ) -> BoxFuture<'_, Result<CreateOutcome, StoreError>> {
        let pid = pid.to_owned();
        let owners = owners.clone();
        Box::pin(self.submit(|reply| WriteRequest::Create { pid, owners, reply }))
    }

    fn process(&self, pid: &str) -> BoxFuture<'_, Result<Option<Process>, StoreError>> {
        let pid = pid.to_owned();
        let database = Arc::clone(&self.database);
        // Inline, not on the blocking pool: see the module documentation.
        Box::pin(async move {
            let transaction = database.begin_read()?;
            let processes = transaction.open_table(PROCESSES)?;
            Ok(read_head(&processes, &pid)?.map(|head| head.process(pid)))
        })
    }

    fn append(&self, entry: PreparedEntry) -> BoxFuture<'_, Result<Entry, StoreError>> {
        Box::pin(self.submit(|reply| WriteRequest::Append { entry, reply }))
    }

    fn entry(
        &self,
        pid: &str,
        document_id: &str,
    ) -> BoxFuture<'_, Result<Option<Entry>, StoreError>> {
        let pid = pid.to_owned();
        let document_id = document_id.to_owned();
        self.read(move |transaction| {
            let documents = transaction.open_table(DOCUMENTS)?;
            let sequence = match documents.get(document_id.as_str())? {
                Some(location) if location.value().0 == pid => location.value().1,
                _ => return Ok(None),
            };
            let entries = transaction.open_table(ENTRIES)?;
            let record = entries.get((pid.as_str(), sequence))?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "document {document_id} is indexed as {pid}/{sequence}, which does not exist"
                ))
            })?;
            decode_entry(&pid, sequence, record.value()).map(Some)
        })
    }

    fn query(&self, query: &PageQuery) -> BoxFuture<'_, Result<Page, StoreError>> {
        let query = query.clone();
        self.read(move |transaction| read_page(transaction, &query))
    }

    fn processes_of(&self, client_id: &str) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let client_id = client_id.to_owned();
        self.read(move |transaction| {
            let owners = transaction.open_table(OWNERS)?;
            let mut pids = Vec::new();
            for item in owners.range((client_id.as_str(), "")..)? {
                let (key, _) = item?;
                let (owner, pid) = key.value();
                if owner != client_id {
                    break;
                }
                pids.push(pid.to_owned());
            }
            Ok(pids)
        })
    }

    fn entries_from(
        &self,
        pid: &str,
        from_sequence: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Entry>, StoreError>> {
        let pid = pid.to_owned();
        self.read(move |transaction| {
            let processes = transaction.open_table(PROCESSES)?;
            if read_head(&processes, &pid)?.is_none() {
                return Err(StoreError::UnknownProcess(pid));
            }
            let end = from_sequence.saturating_add(u64::try_from(limit).unwrap_or(u64::MAX));
            let entries = transaction.open_table(ENTRIES)?;
            let mut found = Vec::new();
            for item in entries.range((pid.as_str(), from_sequence)..(pid.as_str(), end))? {
                let (key, record) = item?;
                found.push(decode_entry(&pid, key.value().1, record.value())?);
            }
            Ok(found)
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let writer_alive = self
            .requests
            .as_ref()
            .is_some_and(|requests| !requests.is_closed());
        let writes_failed = self.health.failed.load(Ordering::Relaxed);
        let read = self.read(|transaction| {
            transaction.open_table(PROCESSES)?;
            Ok(())
        });
        Box::pin(async move {
            if !writer_alive {
                return Err(writer_gone());
            }
            if writes_failed {
                return Err(StoreError::Unavailable(
                    "a write to the store failed; it takes writes again once reopened".to_owned(),
                ));
            }
            read.await
        })
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the store writer has stopped".to_owned())
}

fn read_page(transaction: &ReadTransaction, query: &PageQuery) -> Result<Page, StoreError> {
    query::validate(query)?;
    let pid = query.pid.as_str();
    let processes = transaction.open_table(PROCESSES)?;
    let head =
        read_head(&processes, pid)?.ok_or_else(|| StoreError::UnknownProcess(pid.to_owned()))?;
    let empty = Page {
        entries: Vec::new(),
        total: 0,
    };

    // Timestamps never decrease with the sequence, so the time range is the run of sequences
    // from the first entry at or after `from_ms` to the last entry at or before `to_ms`.
    let entry_times = transaction.open_table(ENTRY_TIMES)?;
    let first = match query.from_ms {
        None => 1,
        Some(from_ms) => match entry_times
            .range((pid, from_ms, 0)..=(pid, i64::MAX, u64::MAX))?
            .next()
        {
            Some(item) => item?.0.value().2,
            None => return Ok(empty),
        },
    };
    let last = match query.to_ms {
        None => head.sequence,
        Some(to_ms) => match entry_times
            .range((pid, i64::MIN, 0)..=(pid, to_ms, u64::MAX))?
            .next_back()
        {
            Some(item) => item?.0.value().2,
            None => return Ok(empty),
        },
    };
    let Some(matched) = SequenceRange::new(first, last) else {
        return Ok(empty);
    };
    let Some(window) = matched.page(query.page, query.size, query.order) else {
        return Ok(Page {
            entries: Vec::new(),
            total: matched.len(),
        });
    };

    let entries = transaction.open_table(ENTRIES)?;
    let range = entries.range((pid, window.first)..=(pid, window.last))?;
    let records: Box<dyn Iterator<Item = _>> = match query.order {
        Order::Asc => Box::new(range),
        Order::Desc => Box::new(range.rev()),
    };
    let mut page = Vec::new();
    let mut bytes = 0usize;
    for item in records {
        let (key, record) = item?;
        // A record is the entry's payload and header plus a few fixed fields, all of which a
        // reply carries too: past the budget, the reply would be past it as well.
        bytes = bytes.saturating_add(record.value().len());
        if bytes > query.max_bytes {
            return Err(StoreError::PageTooLarge {
                limit: query.max_bytes,
            });
        }
        page.push(decode_entry(pid, key.value().1, record.value())?);
    }
    if page.len() as u64 != window.len() {
        return Err(StoreError::Corrupt(format!(
            "process {pid} lacks entries between sequences {} and {}",
            window.first, window.last
        )));
    }
    Ok(Page {
        entries: page,
        total: matched.len(),
    })
}

fn read_head(
    processes: &impl ReadableTable<&'static str, &'static [u8]>,
    pid: &str,
) -> Result<Option<ProcessHead>, StoreError> {
    match processes.get(pid)? {
        Some(record) => ProcessHead::decode(pid, record.value()).map(Some),
        None => Ok(None),
    }
}

/// A process and the state of its chain.
struct ProcessHead {
    owners: BTreeSet<String>,
    created_at_ms: i64,
    sequence: u64,
    timestamp_ms: i64,
    chain_hash: [u8; 32],
}

impl ProcessHead {
    fn process(self, pid: String) -> Process {
        Process {
            pid,
            owners: self.owners,
            created_at_ms: self.created_at_ms,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut record = vec![RECORD_FORMAT];
        record.extend_from_slice(&self.created_at_ms.to_be_bytes());
        record.extend_from_slice(&self.sequence.to_be_bytes());
        record.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        record.extend_from_slice(&self.chain_hash);
        record.extend_from_slice(&(self.owners.len() as u64).to_be_bytes());
        for owner in &self.owners {
            put_field(&mut record, owner.as_bytes());
        }
        record
    }

    fn decode(pid: &str, record: &[u8]) -> Result<Self, StoreError> {
        let mut reader = RecordReader::new(record, RecordName::Process(pid))?;
        let created_at_ms = reader.i64()?;
        let sequence = reader.u64()?;
        let timestamp_ms = reader.i64()?;
        let chain_hash = reader.hash()?;
        let mut owners = BTreeSet::new();
        for _ in 0..reader.u64()? {
            let owner = reader.field()?;
            owners.insert(reader.string(owner)?);
        }
        reader.finish()?;
        Ok(Self {
            owners,
            created_at_ms,
            sequence,
            timestamp_ms,
            chain_hash,
        })
    }
}

/// The record of `prepared` once `link` joined it to the chain.
fn encode_entry(prepared: &PreparedEntry, link: &Link) -> Vec<u8> {
    let entry = prepared.entry();
    let canonical_header = prepared.canonical_header().as_bytes();
    let mut record = Vec::with_capacity(
        1 + 8
            + 32
            + 32
            + 5 * 8
            + entry.document_id.len()
            + entry.client_id.len()
            + entry.payload_type.len()
            + canonical_header.len()
            + entry.payload.len(),
    );
    record.push(RECORD_FORMAT);
    record.extend_from_slice(&link.timestamp_ms.to_be_bytes());
    record.extend_from_slice(&link.entry_hash);
    record.extend_from_slice(&link.chain_hash);
    put_field(&mut record, entry.document_id.as_bytes());
    put_field(&mut record, entry.client_id.as_bytes());
    put_field(&mut record, entry.payload_type.as_bytes());
    put_field(&mut record, canonical_header);
    put_field(&mut record, &entry.payload);
    record
}

fn decode_entry(pid: &str, sequence: u64, record: &[u8]) -> Result<Entry, StoreError> {
    // One copy out of the database; the payload is then a slice of it rather than a second copy.
    let record = Bytes::copy_from_slice(record);
    let mut reader = RecordReader::new(&record, RecordName::Entry(pid, sequence))?;
    let timestamp_ms = reader.i64()?;
    let entry_hash = reader.hash()?;
    let chain_hash = reader.hash()?;
    let document_id = reader.field()?;
    let document_id = reader.string(document_id)?;
    let client_id = reader.field()?;
    let client_id = reader.string(client_id)?;
    let payload_type = reader.field()?;
    let payload_type = reader.string(payload_type)?;
    let header = reader.field()?;
    let header = serde_json::from_slice(&record[header])
        .map_err(|error| reader.corrupt(&format!("header is not JSON: {error}")))?;
    let payload = reader.field()?;
    reader.finish()?;
    Ok(Entry {
        pid: pid.to_owned(),
        sequence,
        document_id,
        timestamp_ms,
        client_id,
        header,
        payload: record.slice(payload),
        payload_type,
        entry_hash,
        chain_hash,
    })
}

fn put_field(record: &mut Vec<u8>, bytes: &[u8]) {
    record.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    record.extend_from_slice(bytes);
}

/// Which record a [`RecordReader`] reads, for naming it in errors.
#[derive(Clone, Copy)]
enum RecordName<'a> {
    Process(&'a str),
    Entry(&'a str, u64),
}

impl std::fmt::Display for RecordName<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Process(pid) => write!(formatter, "process {pid}"),
            Self::Entry(pid, sequence) => write!(formatter, "entry {pid}/{sequence}"),
        }
    }
}

/// Reads a record front to back; every failure names the record, since it means corruption.
struct RecordReader<'a> {
    record: &'a [u8],
    position: usize,
    name: RecordName<'a>,
}

impl<'a> RecordReader<'a> {
    fn new(record: &'a [u8], name: RecordName<'a>) -> Result<Self, StoreError> {
        let mut reader = Self {
            record,
            position: 0,
            name,
        };
        let format = reader.array::<1>()?;
        if format == [RECORD_FORMAT] {
            Ok(reader)
        } else {
            Err(reader.corrupt(&format!("unknown record format {}", format[0])))
        }
    }

    fn corrupt(&self, problem: &str) -> StoreError {
        StoreError::Corrupt(format!("{}: {problem}", self.name))
    }

    fn take(&mut self, length: usize) -> Result<Range<usize>, StoreError> {
        let start = self.position;
        match start.checked_add(length) {
            Some(end) if end <= self.record.len() => {
                self.position = end;
                Ok(start..end)
            }
            _ => Err(self.corrupt("record is truncated")),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let range = self.take(N)?;
        let mut array = [0u8; N];
        array.copy_from_slice(&self.record[range]);
        Ok(array)
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        self.array().map(u64::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, StoreError> {
        self.array().map(i64::from_be_bytes)
    }

    fn hash(&mut self) -> Result<[u8; 32], StoreError> {
        self.array()
    }

    /// A length-prefixed field, as a range of the record.
    fn field(&mut self) -> Result<Range<usize>, StoreError> {
        let length = usize::try_from(self.u64()?)
            .map_err(|_| self.corrupt("field length exceeds the address space"))?;
        self.take(length)
    }

    fn string(&self, range: Range<usize>) -> Result<String, StoreError> {
        String::from_utf8(self.record[range].to_vec())
            .map_err(|_| self.corrupt("text field is not UTF-8"))
    }

    fn finish(self) -> Result<(), StoreError> {
        if self.position == self.record.len() {
            Ok(())
        } else {
            Err(self.corrupt("trailing bytes after the record"))
        }
    }
}

enum WriteRequest {
    Create {
        pid: String,
        owners: BTreeSet<String>,
        reply: oneshot::Sender<Result<CreateOutcome, StoreError>>,
    },
    Append {
        entry: PreparedEntry,
        reply: oneshot::Sender<Result<Entry, StoreError>>,
    },
}

impl WriteRequest {
    fn payload_bytes(&self) -> usize {
        match self {
            Self::Create { .. } => 0,
            Self::Append { entry, .. } => entry.entry().payload.len(),
        }
    }

    fn apply(self, tables: &mut WriteTables<'_>) -> Applied {
        match self {
            Self::Create { pid, owners, reply } => Applied::Create {
                result: create(tables, pid, owners),
                reply,
            },
            Self::Append { entry, reply } => Applied::Append {
                result: append(tables, entry),
                reply,
            },
        }
    }

    fn fail(self, error: &StoreError) {
        // A caller that gave up waiting has dropped its receiver; nobody is left to tell.
        match self {
            Self::Create { reply, .. } => drop(reply.send(Err(error.for_another_caller()))),
            Self::Append { reply, .. } => drop(reply.send(Err(error.for_another_caller()))),
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
            } => Some(error),
            _ => None,
        }
    }

    fn committed(self) {
        match self {
            Self::Create { result, reply } => drop(reply.send(result.map_err(Failure::into_error))),
            Self::Append { result, reply } => drop(reply.send(result.map_err(Failure::into_error))),
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
        }
    }
}

fn run_writer(database: &Database, mut queue: mpsc::Receiver<WriteRequest>, health: &WriterHealth) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch_bytes = first.payload_bytes();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_REQUESTS && batch_bytes < MAX_BATCH_BYTES {
            match queue.try_recv() {
                Ok(request) => {
                    batch_bytes += request.payload_bytes();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        write_batch(database, batch, health);
    }
}

/// Writes one batch in one transaction, then records the outcome in `health` before answering
/// the callers, so that a caller who got an answer sees the store's state after it.
fn write_batch(database: &Database, batch: Vec<WriteRequest>, health: &WriterHealth) {
    let transaction = match database.begin_write() {
        Ok(transaction) => transaction,
        Err(error) => return fail_all(batch, &error.into(), health),
    };
    let mut tables = match WriteTables::open(&transaction) {
        Ok(tables) => tables,
        Err(error) => return fail_all(batch, &error, health),
    };
    let mut applied = Vec::with_capacity(batch.len());
    let mut unapplied = batch.into_iter();
    let mut abandoned = None;
    for request in unapplied.by_ref() {
        let done = request.apply(&mut tables);
        abandoned = done.storage_failure().map(StoreError::for_another_caller);
        applied.push(done);
        if abandoned.is_some() {
            break;
        }
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
    match outcome {
        Ok(()) => {
            health.commits.fetch_add(1, Ordering::Relaxed);
            applied.into_iter().for_each(Applied::committed);
        }
        Err(error) => {
            health.failed.store(true, Ordering::Relaxed);
            let requests = applied.len() + unapplied.len();
            tracing::error!(%error, requests, "store batch not committed");
            for request in applied {
                request.rolled_back(&error);
            }
            for request in unapplied {
                request.fail(&error);
            }
        }
    }
}

fn fail_all(batch: Vec<WriteRequest>, error: &StoreError, health: &WriterHealth) {
    health.failed.store(true, Ordering::Relaxed);
    tracing::error!(%error, requests = batch.len(), "store write transaction failed");
    for request in batch {
        request.fail(error);
    }
}

struct WriteTables<'txn> {
    processes: Table<'txn, &'static str, &'static [u8]>,
    entries: Table<'txn, (&'static str, u64), &'static [u8]>,
    documents: Table<'txn, &'static str, (&'static str, u64)>,
    entry_times: Table<'txn, (&'static str, i64, u64), ()>,
    owners: Table<'txn, (&'static str, &'static str), ()>,
}

impl<'txn> WriteTables<'txn> {
    fn open(transaction: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            processes: transaction.open_table(PROCESSES)?,
            entries: transaction.open_table(ENTRIES)?,
            documents: transaction.open_table(DOCUMENTS)?,
            entry_times: transaction.open_table(ENTRY_TIMES)?,
            owners: transaction.open_table(OWNERS)?,
        })
    }
}

fn create(
    tables: &mut WriteTables<'_>,
    pid: String,
    owners: BTreeSet<String>,
) -> Result<CreateOutcome, Failure> {
    if let Some(head) = read_head(&tables.processes, &pid).map_err(Failure::Refused)? {
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
    };
    write_process(tables, &pid, &head).map_err(Failure::Storage)?;
    Ok(CreateOutcome::Created(head.process(pid)))
}

fn write_process(
    tables: &mut WriteTables<'_>,
    pid: &str,
    head: &ProcessHead,
) -> Result<(), StoreError> {
    tables.processes.insert(pid, head.encode().as_slice())?;
    for owner in &head.owners {
        tables.owners.insert((owner.as_str(), pid), ())?;
    }
    Ok(())
}

fn append(tables: &mut WriteTables<'_>, prepared: PreparedEntry) -> Result<Entry, Failure> {
    let (stored, head, record) = stamp(tables, prepared).map_err(Failure::Refused)?;
    write_entry(tables, &stored, &head, &record).map_err(Failure::Storage)?;
    Ok(stored)
}

/// Decides sequence, timestamp and hashes against the current head, writing nothing; returns
/// the entry, the process's new head and the entry's record.
fn stamp(
    tables: &WriteTables<'_>,
    prepared: PreparedEntry,
) -> Result<(Entry, ProcessHead, Vec<u8>), StoreError> {
    let pid = prepared.entry().pid.as_str();
    let mut head = read_head(&tables.processes, pid)?
        .ok_or_else(|| StoreError::UnknownProcess(pid.to_owned()))?;
    let document_id = prepared.entry().document_id.as_str();
    if tables.documents.get(document_id)?.is_some() {
        return Err(StoreError::DuplicateDocument(document_id.to_owned()));
    }
    let chain_head = ChainHead {
        sequence: head.sequence,
        chain_hash: head.chain_hash,
    };
    let link = chain::append_link(&chain_head, head.timestamp_ms, &prepared)?;
    head.sequence = link.sequence;
    head.timestamp_ms = link.timestamp_ms;
    head.chain_hash = link.chain_hash;
    let record = encode_entry(&prepared, &link);
    Ok((prepared.into_stored(&link), head, record))
}

fn write_entry(
    tables: &mut WriteTables<'_>,
    entry: &Entry,
    head: &ProcessHead,
    record: &[u8],
) -> Result<(), StoreError> {
    let pid = entry.pid.as_str();
    tables.entries.insert((pid, entry.sequence), record)?;
    tables
        .documents
        .insert(entry.document_id.as_str(), (pid, entry.sequence))?;
    tables
        .entry_times
        .insert((pid, entry.timestamp_ms, entry.sequence), ())?;
    tables.processes.insert(pid, head.encode().as_slice())?;
    Ok(())
}

/// Sorts redb's errors into what a caller can act on.
fn classify(error: redb::Error) -> StoreError {
    match error {
        redb::Error::Io(error) => StoreError::Io(error),
        redb::Error::Corrupted(detail) => StoreError::Corrupt(detail),
        // The file is a redb database, but not one this store wrote (or an older format).
        error @ (redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. }) => StoreError::Corrupt(error.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

macro_rules! from_redb_errors {
    ($($error:ty),*) => {
        $(impl From<$error> for StoreError {
            fn from(error: $error) -> Self {
                classify(error.into())
            }
        })*
    };
}

from_redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[cfg(test)]
mod tests {
    use std::io;

    use serde_json::json;

    use super::*;
    use crate::store::NewEntry;

    /// An entry as prepared, and the link a chain gave it.
    fn sample_entry() -> (PreparedEntry, Link) {
        let entry = NewEntry {
            pid: "p-1".to_owned(),
            document_id: "7d3f5d2e-1f0b-4c55-9a51-0c7f3f4b9e11".to_owned(),
            client_id: "SKI:keyid:AKI".to_owned(),
            header: json!({"@type": "ids:LogMessage", "ids:modelVersion": "4.2.7"}),
            payload: Bytes::from_static(b"\x00\x01 binary"),
            payload_type: "application/octet-stream".to_owned(),
        };
        let link = Link {
            sequence: 7,
            timestamp_ms: 1_700_000_000_123,
            entry_hash: [1; 32],
            chain_hash: [2; 32],
        };
        (entry.prepare(), link)
    }

    #[test]
    fn an_entry_record_round_trips() {
        let (prepared, link) = sample_entry();
        let record = encode_entry(&prepared, &link);
        assert_eq!(
            decode_entry("p-1", 7, &record).unwrap(),
            prepared.into_stored(&link)
        );
    }

    #[test]
    fn a_process_record_round_trips() {
        let head = ProcessHead {
            owners: ["a".to_owned(), "b".to_owned()].into(),
            created_at_ms: -5,
            sequence: 42,
            timestamp_ms: 1_700_000_000_000,
            chain_hash: [9; 32],
        };
        let decoded = ProcessHead::decode("p", &head.encode()).unwrap();
        assert_eq!(decoded.owners, head.owners);
        assert_eq!(
            (
                decoded.created_at_ms,
                decoded.sequence,
                decoded.timestamp_ms,
                decoded.chain_hash
            ),
            (-5, 42, 1_700_000_000_000, [9; 32])
        );
    }

    #[tokio::test]
    async fn timestamps_never_go_back_when_the_clock_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
        let owners: BTreeSet<String> = ["a".to_owned()].into();
        store.create_process("p-1", &owners).await.unwrap();
        // Date the head an hour ahead, as if the clock had since been set back by an hour.
        let ahead_ms = now_ms() + 3_600_000;
        let transaction = store.database.begin_write().unwrap();
        {
            let mut processes = transaction.open_table(PROCESSES).unwrap();
            let mut head = read_head(&processes, "p-1").unwrap().unwrap();
            head.timestamp_ms = ahead_ms;
            processes.insert("p-1", head.encode().as_slice()).unwrap();
        }
        transaction.commit().unwrap();

        let entry = NewEntry {
            pid: "p-1".to_owned(),
            document_id: "d-1".to_owned(),
            client_id: "a".to_owned(),
            header: json!({}),
            payload: Bytes::from_static(b"x"),
            payload_type: String::new(),
        };
        assert_eq!(
            store.append(entry.prepare()).await.unwrap().timestamp_ms,
            ahead_ms
        );
    }

    /// Storage that fails every write and sync while `failing` is set, like a disk gone bad.
    #[derive(Debug)]
    struct FailingDisk {
        memory: redb::backends::InMemoryBackend,
        failing: Arc<AtomicBool>,
    }

    impl FailingDisk {
        fn check(&self) -> io::Result<()> {
            if self.failing.load(Ordering::Relaxed) {
                Err(io::Error::other("injected disk failure"))
            } else {
                Ok(())
            }
        }
    }

    impl redb::StorageBackend for FailingDisk {
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
        let failing = Arc::new(AtomicBool::new(false));
        let disk = FailingDisk {
            memory: redb::backends::InMemoryBackend::new(),
            failing: Arc::clone(&failing),
        };
        let database = redb::Builder::new().create_with_backend(disk).unwrap();
        let store = EmbeddedStore::start(database).unwrap();
        let owners: BTreeSet<String> = ["a".to_owned()].into();
        store.create_process("p-1", &owners).await.unwrap();
        store.ping().await.unwrap();

        failing.store(true, Ordering::Relaxed);
        let entry = NewEntry {
            pid: "p-1".to_owned(),
            document_id: "d-1".to_owned(),
            client_id: "a".to_owned(),
            header: json!({}),
            payload: Bytes::from_static(b"x"),
            payload_type: String::new(),
        };
        let result = store.append(entry.prepare()).await;
        assert!(matches!(result, Err(StoreError::Io(_))), "{result:?}");
        assert_eq!(store.commits(), 1, "only the creation committed");
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
    }

    #[test]
    fn damaged_records_are_reported_as_corrupt() {
        let (prepared, link) = sample_entry();
        let record = encode_entry(&prepared, &link);
        let truncated = &record[..record.len() - 1];
        let mut extended = record.clone();
        extended.push(0);
        let mut unknown_format = record.clone();
        unknown_format[0] = 99;
        for damaged in [truncated, &extended[..], &unknown_format[..], &[][..]] {
            match decode_entry("p-1", 7, damaged) {
                Err(StoreError::Corrupt(detail)) => assert!(detail.contains("p-1/7"), "{detail}"),
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
    }
}

//! The embedded backend: one redb file, written by one thread with group commit.
//!
//! - this file: the store, its tables, and how [`ProcessStore`] maps onto them;
//! - `writer`: the writer thread, which applies creations, appends and owner changes in batches,
//!   one fsync'd write transaction per batch (group commit), and why a receipt can rely on it;
//! - `commit_delay`: how a busy writer's batch waits for more requests before it commits;
//! - `chunks`: entries stored a batch at a time, and read back from chunks and older rows;
//! - `record`: the binary records of processes and entries;
//! - `process_cache`: the processes logs and queries look up, kept between their changes;
//! - `reads`: entries, pages, export runs and owned processes, read from snapshots;
//! - `document_ids`: the document ids the store assigns, UUIDs v4 numbered in order;
//! - `usage`: the quota counters;
//! - `views`: the saved views of processes.
//!
//! Writes go through the one writer, so sequences and chain hashes need no locking. Reads run in
//! read transactions on tokio's blocking pool. redb gives them a snapshot, so they never wait for
//! the writer, and no tokio worker thread waits for the disk. The one exception is
//! [`ProcessStore::process`], which every log and query starts with: it reads one small record
//! from the `processes` table, whose pages stay in redb's cache, so it runs inline. Handing it to
//! the blocking pool and back cost more than the read itself: about a fifth of the server's CPU
//! time per logged message (see BENCHMARKS.md). What it read is kept until the process changes
//! (`process_cache`), so most requests do not read it at all. Once a write has failed, redb
//! takes no more writes, and [`ProcessStore::ping`] reports the store unavailable until it is
//! reopened.
//!
//! Tables:
//! - `processes`: pid -> process record (owners, creation time, head sequence, head chain hash,
//!   head timestamp);
//! - `entry_chunks`: (pid, sequence of the first) -> the records of a process's entries written
//!   in one batch (see `chunks`);
//! - `entries`: (pid, sequence) -> entry record, for entries written before chunks; read only,
//!   the store adds no rows;
//! - `document_numbers`: number -> (pid, sequence): where the entry whose document id is that
//!   number's lies (see `document_ids`); numbers only grow, so appends touch its end;
//! - `documents`: document id -> (pid, sequence), for entries written before document ids were
//!   numbered (random ids chosen by the caller); read only, the store adds no rows;
//! - `meta`: the store's own settings: the key of its document ids;
//! - `entry_times`: (pid, timestamp_ms, sequence) -> (), for time ranges: the first entry of each
//!   timestamp of a process (before issue 14, every entry; both read the same, see `reads`);
//! - `owners`: (client id, pid) -> (), for [`ProcessStore::processes_of`];
//! - `usage`: the quota counters, written outside the writer thread;
//! - `views`: pid -> saved view, written outside the writer thread.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};

use super::sealing::{Erasure, KeyState, Sealing};
use super::{
    CreateOutcome, Entry, OwnerChange, Page, PageQuery, PreparedEntry, Process, ProcessInfo,
    ProcessStore, RewrapBatch, SavedView, StoreError,
};
use allocated_file::AllocatedFile;
use document_ids::DocumentIds;
use process_cache::ProcessCache;
use writer::Writer;

mod allocated_file;
mod chunks;
mod commit_delay;
mod document_ids;
mod process_cache;
mod reads;
mod record;
mod usage;
mod views;
mod writer;

const PROCESSES: TableDefinition<&str, &[u8]> = TableDefinition::new("processes");
const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");
const DOCUMENT_NUMBERS: TableDefinition<u64, (&str, u64)> =
    TableDefinition::new("document_numbers");
/// Legacy: see the module documentation.
const DOCUMENTS: TableDefinition<&str, (&str, u64)> = TableDefinition::new("documents");
const ENTRY_TIMES: TableDefinition<(&str, i64, u64), ()> = TableDefinition::new("entry_times");
const OWNERS: TableDefinition<(&str, &str), ()> = TableDefinition::new("owners");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// How long a busy batch of writes waits for more before it commits, unless
/// [`EmbeddedOptions::commit_delay`] says otherwise: not at all. Measured in BENCHMARKS.md
/// ("Group commit window"), waiting saves 4 to 6% of the server's CPU per receipt at 64
/// connections but costs 10 to 19% of the throughput at 4 to 16, where the callers of one batch
/// come back together and waiting for them stops the next batch from forming meanwhile; like
/// PostgreSQL's `commit_delay`, it is for operators who measured their own load.
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::ZERO;

/// How [`EmbeddedStore::open_with`] opens a store.
pub struct EmbeddedOptions {
    /// How new processes are encrypted and encrypted ones read; default: not at all.
    pub sealing: Sealing,
    /// How long a batch of writes waits for more requests before it commits, once the writer is
    /// busy (see `writer`); zero commits every batch as soon as the queue is empty.
    pub commit_delay: Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            sealing: Sealing::disabled(),
            commit_delay: DEFAULT_COMMIT_DELAY,
        }
    }
}

/// A store encrypted with `sealing` and default batching.
impl From<Sealing> for EmbeddedOptions {
    fn from(sealing: Sealing) -> Self {
        Self {
            sealing,
            ..Self::default()
        }
    }
}

/// A [`ProcessStore`] in one redb file.
pub struct EmbeddedStore {
    database: Arc<Database>,
    sealing: Arc<Sealing>,
    document_ids: Arc<DocumentIds>,
    /// Shared with the writer, which forgets the processes it changes.
    processes: Arc<ProcessCache>,
    /// Dropped with the store: the writer finishes what is queued and the file is closed.
    writer: Writer,
}

impl EmbeddedStore {
    /// Opens the store at `path`, creating the file if it does not exist, and starts its writer.
    /// Blocks on disk I/O (and on recovery after a crash): call it at startup, not on a hot path.
    /// New processes are plaintext, and encrypted ones cannot be read: see [`Self::open_with`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// [`Self::open`] with `options` (or just a [`Sealing`]): encrypting new processes and
    /// reading encrypted ones with their sealing, and batching writes with their commit delay.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: impl Into<EmbeddedOptions>,
    ) -> Result<Self, StoreError> {
        let database = redb::Builder::new().create_with_backend(AllocatedFile::open(path)?)?;
        Self::start(database, options.into())
    }

    fn start(database: Database, options: EmbeddedOptions) -> Result<Self, StoreError> {
        let database = Arc::new(database);
        let sealing = Arc::new(options.sealing);
        let document_ids = Arc::new(DocumentIds::open(&database)?);
        let processes = Arc::new(ProcessCache::default());
        let writer = Writer::start(&database, &sealing, &processes, options.commit_delay)?;
        Ok(Self {
            database,
            sealing,
            document_ids,
            processes,
            writer,
        })
    }

    /// Write transactions committed by the writer so far (each one fsync): with group commit,
    /// usually far fewer than the appends and creations they carried.
    pub fn commits(&self) -> u64 {
        self.writer.commits()
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
    /// Closes the file before the store is gone, so that it can be reopened at once (a restart
    /// in the same process, a test): the writer finishes what is queued, and a blocking read
    /// whose caller was cancelled (an aborted task) still holds the database until it returns,
    /// which a read transaction does quickly. Bounded, so that a stuck read cannot hang a drop.
    fn drop(&mut self) {
        self.writer.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.database) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl ProcessStore for EmbeddedStore {
    fn create_process(
        &self,
        pid: &str,
        owners: &BTreeSet<String>,
    ) -> BoxFuture<'_, Result<CreateOutcome, StoreError>> {
        Box::pin(self.writer.create(pid.to_owned(), owners.clone()))
    }

    fn process(&self, pid: &str) -> BoxFuture<'_, Result<Option<Process>, StoreError>> {
        if let Some(process) = self.processes.get(pid) {
            return Box::pin(std::future::ready(Ok(Some(process))));
        }
        let pid = pid.to_owned();
        // Inline, not on the blocking pool: see the module documentation.
        Box::pin(async move {
            let since = self.processes.changes();
            let transaction = self.database.begin_read()?;
            let table = transaction.open_table(PROCESSES)?;
            let process = record::read_head(&table, &pid)?.map(|head| head.process(pid));
            if let Some(process) = &process {
                self.processes.keep(since, process);
            }
            Ok(process)
        })
    }

    fn erase(&self, pid: &str, by: &str) -> BoxFuture<'_, Result<Erasure, StoreError>> {
        let pid = pid.to_owned();
        let by = by.to_owned();
        // The view goes after the key (see `views`); erasing again retries a failed delete.
        Box::pin(async move {
            let erasure = self.writer.erase(pid.clone(), by).await?;
            self.delete_saved_view(&pid).await?;
            Ok(erasure)
        })
    }

    fn data_key_keks(&self) -> BoxFuture<'_, Result<BTreeSet<String>, StoreError>> {
        self.read(reads::data_key_keks)
    }

    fn rewrap_data_keys(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RewrapBatch, StoreError>> {
        let database = Arc::clone(&self.database);
        let sealing = Arc::clone(&self.sealing);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                rewrap(&database, &sealing, after.as_deref(), limit.max(1))
            })
            .await
            .map_err(|error| StoreError::Unavailable(format!("rewrap task failed: {error}")))?
        })
    }

    fn append(&self, entry: PreparedEntry) -> BoxFuture<'_, Result<Entry, StoreError>> {
        // Numbered here, on the caller's thread, so that the writer does none of the AES.
        let (number, document_id) = self.document_ids.assign();
        Box::pin(
            self.writer
                .append(number, entry.with_document_id(document_id)),
        )
    }

    fn process_info(&self, pid: &str) -> BoxFuture<'_, Result<Option<ProcessInfo>, StoreError>> {
        let pid = pid.to_owned();
        self.read(move |transaction| {
            let processes = transaction.open_table(PROCESSES)?;
            Ok(record::read_head(&processes, &pid)?.map(|head| head.info(pid)))
        })
    }

    fn change_owners(&self, change: OwnerChange) -> BoxFuture<'_, Result<Entry, StoreError>> {
        let (number, document_id) = self.document_ids.assign();
        Box::pin(
            self.writer
                .change_owners(number, change.with_document_id(document_id)),
        )
    }

    fn entry(
        &self,
        pid: &str,
        document_id: &str,
    ) -> BoxFuture<'_, Result<Option<Entry>, StoreError>> {
        let pid = pid.to_owned();
        let document_id = document_id.to_owned();
        let sealing = Arc::clone(&self.sealing);
        let document_ids = Arc::clone(&self.document_ids);
        self.read(move |transaction| {
            let number = document_ids.number(&document_id);
            reads::entry(transaction, &sealing, &pid, &document_id, number)
        })
    }

    fn query(&self, query: &PageQuery) -> BoxFuture<'_, Result<Page, StoreError>> {
        let query = query.clone();
        let sealing = Arc::clone(&self.sealing);
        self.read(move |transaction| reads::page(transaction, &sealing, &query))
    }

    fn processes_of(&self, client_id: &str) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let client_id = client_id.to_owned();
        self.read(move |transaction| reads::processes_of(transaction, &client_id))
    }

    fn entries_from(
        &self,
        pid: &str,
        from_sequence: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Entry>, StoreError>> {
        let pid = pid.to_owned();
        let sealing = Arc::clone(&self.sealing);
        self.read(move |transaction| {
            reads::entries_from(transaction, &sealing, &pid, from_sequence, limit)
        })
    }

    fn saved_view(&self, pid: &str) -> BoxFuture<'_, Result<Option<SavedView>, StoreError>> {
        self.read_saved_view(pid)
    }

    fn save_view(&self, pid: &str, view: SavedView) -> BoxFuture<'_, Result<(), StoreError>> {
        self.write_saved_view(pid, view)
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let writes = self.writer.check();
        let read = self.read(|transaction| {
            transaction.open_table(PROCESSES)?;
            Ok(())
        });
        Box::pin(async move {
            writes?;
            read.await
        })
    }
}

/// Re-wraps, in one write transaction, the data keys among the first `limit` processes after
/// `after` that a KEK other than the active one wraps. redb runs one write transaction at a
/// time, so this waits for the writer's batch and the writer for this.
fn rewrap(
    database: &Database,
    sealing: &Sealing,
    after: Option<&str>,
    limit: usize,
) -> Result<RewrapBatch, StoreError> {
    let transaction = database.begin_write()?;
    let mut batch = RewrapBatch {
        examined: 0,
        rewrapped: 0,
        last_pid: None,
    };
    {
        let mut processes = transaction.open_table(PROCESSES)?;
        let mut rewrapped = Vec::new();
        {
            let range = match after {
                Some(after) => processes.range::<&str>((
                    std::ops::Bound::Excluded(after),
                    std::ops::Bound::Unbounded,
                ))?,
                None => processes.range::<&str>(..)?,
            };
            for item in range.take(limit) {
                let (pid, record) = item?;
                let pid = pid.value().to_owned();
                let mut head = record::ProcessHead::decode(&pid, record.value())?;
                batch.examined += 1;
                if let KeyState::Wrapped(key) = &head.keys {
                    if let Some(new_key) = sealing.rewrap(&pid, key)? {
                        head.keys = KeyState::Wrapped(new_key);
                        rewrapped.push((pid.clone(), head.encode()));
                    }
                }
                batch.last_pid = Some(pid);
            }
        }
        // Written after the scan: a table cannot be changed while it is being iterated.
        for (pid, record) in &rewrapped {
            processes.insert(pid.as_str(), record.as_slice())?;
        }
        batch.rewrapped = rewrapped.len() as u64;
    }
    transaction.commit()?;
    Ok(batch)
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
    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::store::{now_ms, NewEntry};

    /// A minimal entry for `pid`, by owner `a`, prepared.
    pub(super) fn one_byte_entry(pid: &str) -> PreparedEntry {
        NewEntry {
            pid: pid.to_owned(),
            client_id: "a".to_owned(),
            header: json!({}),
            payload: Bytes::from_static(b"x"),
            payload_type: String::new(),
        }
        .prepare()
    }

    /// Sequences of the entries of `p-1` in `[from_ms, to_ms]`, and how many match.
    async fn in_range(
        store: &EmbeddedStore,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> (Vec<u64>, u64) {
        let query = PageQuery {
            pid: "p-1".to_owned(),
            page: 1,
            size: 100,
            order: crate::store::Order::Asc,
            from_ms,
            to_ms,
            max_bytes: usize::MAX,
        };
        let page = store.query(&query).await.unwrap();
        let sequences = page.entries.iter().map(|entry| entry.sequence).collect();
        (sequences, page.total)
    }

    /// Dates the head of `pid` an hour ahead, as if the clock had since been set back by an
    /// hour, and returns that timestamp.
    fn date_head_an_hour_ahead(store: &EmbeddedStore, pid: &str) -> i64 {
        let ahead_ms = now_ms() + 3_600_000;
        let transaction = store.database.begin_write().unwrap();
        {
            let mut processes = transaction.open_table(PROCESSES).unwrap();
            let mut head = record::read_head(&processes, pid).unwrap().unwrap();
            head.timestamp_ms = ahead_ms;
            processes.insert(pid, head.encode().as_slice()).unwrap();
        }
        transaction.commit().unwrap();
        ahead_ms
    }

    fn entry_times_rows(store: &EmbeddedStore) -> usize {
        let transaction = store.database.begin_read().unwrap();
        let table = transaction.open_table(ENTRY_TIMES).unwrap();
        table.iter().unwrap().count()
    }

    #[tokio::test]
    async fn the_time_index_keeps_the_first_entry_of_each_timestamp_and_reads_older_stores() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
        let owners: BTreeSet<String> = ["a".to_owned()].into();
        store.create_process("p-1", &owners).await.unwrap();
        // Its entries all share the head's timestamp, an hour ahead.
        let ahead_ms = date_head_an_hour_ahead(&store, "p-1");
        for _ in 1..=4 {
            let appended = store.append(one_byte_entry("p-1")).await.unwrap();
            assert_eq!(appended.timestamp_ms, ahead_ms);
        }
        assert_eq!(entry_times_rows(&store), 1, "one row per timestamp");

        let all = (vec![1, 2, 3, 4], 4);
        let none = (vec![], 0);
        let expected = [
            ((None, None), all.clone()),
            ((Some(ahead_ms), None), all.clone()),
            ((Some(ahead_ms), Some(ahead_ms)), all.clone()),
            ((None, Some(i64::MAX)), all.clone()),
            ((None, Some(ahead_ms - 1)), none.clone()),
            ((Some(ahead_ms + 1), None), none.clone()),
            ((Some(ahead_ms + 1), Some(i64::MAX)), none),
        ];
        for ((from_ms, to_ms), want) in &expected {
            assert_eq!(
                &in_range(&store, *from_ms, *to_ms).await,
                want,
                "{from_ms:?}..={to_ms:?}"
            );
        }

        // A store written before issue 14 holds a row for every entry: it reads the same.
        let transaction = store.database.begin_write().unwrap();
        {
            let mut entry_times = transaction.open_table(ENTRY_TIMES).unwrap();
            for sequence in 2..=4 {
                entry_times.insert(("p-1", ahead_ms, sequence), ()).unwrap();
            }
        }
        transaction.commit().unwrap();
        assert_eq!(entry_times_rows(&store), 4);
        for ((from_ms, to_ms), want) in &expected {
            assert_eq!(
                &in_range(&store, *from_ms, *to_ms).await,
                want,
                "{from_ms:?}..={to_ms:?}, a row per entry"
            );
        }
    }

    #[tokio::test]
    async fn timestamps_never_go_back_when_the_clock_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
        let owners: BTreeSet<String> = ["a".to_owned()].into();
        store.create_process("p-1", &owners).await.unwrap();
        let ahead_ms = date_head_an_hour_ahead(&store, "p-1");

        let appended = store.append(one_byte_entry("p-1")).await.unwrap();
        assert_eq!(appended.timestamp_ms, ahead_ms);
    }
}

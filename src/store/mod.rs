//! The logbook's storage: processes, their entries, and the per-process hash chain.
//!
//! Everything the clearing house promises about a log entry (its sequence number, its timestamp,
//! its place in the hash chain, and that it survives a crash once a receipt was signed for it)
//! is decided here, below the protocol, so that every backend keeps the same promises. The
//! [`ProcessStore`] trait is that contract; `tests/it/store_contract.rs` checks it once for every
//! backend.
//!
//! - [`chain`]: the canonical entry encoding, the hash chain, and an offline chain verifier.
//! - `entry`: what a caller asks to log ([`NewEntry`]) and its one preparation
//!   ([`PreparedEntry`]: payload hash and canonical header, computed once per request).
//! - [`embedded`]: a single-file backend on redb with group commit.
//! - `mongodb`: the production backend on MongoDB, shared by several clearing-house instances
//!   (compare-and-swap on each process head, majority and journaled writes).
//! - `owners`: owner changes, which are entries of their process's chain as well.
//! - `usage`: per-connector usage counters behind the quotas, kept by both backends.
//! - [`sealing`]: encryption at rest: per-process data keys wrapped by KEKs, sealed payloads
//!   and headers, erasure by destroying a data key. Backends seal as they write (inside their
//!   single writer, since the sequence is part of what a ciphertext is bound to) and open as
//!   they read, so callers see plaintext entries and, for an erased process, entries whose
//!   [`Entry::protection`] says their content is gone.
//! - `views`: derived views of a process (its transfers and contracts), saved so that a query
//!   folds only the entries that arrived since.
//!
//! Backends never see tokens or decide who may do what: callers strip the security tokens from
//! the header and check ownership before they ask.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures::future::BoxFuture;

pub mod chain;
pub mod embedded;
mod entry;
pub(crate) mod mongodb;
mod owners;
mod query;
pub mod sealing;
pub(crate) mod usage;
mod views;

pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use entry::{NewEntry, PreparedEntry};
pub use mongodb::{MongoConfig, MongoStore};
pub use owners::{OwnerChange, OWNER_CHANGE_PAYLOAD_TYPE};
pub use sealing::{Erasure, KeyState, Protection, Sealing};
pub use usage::{Usage, UsageStore};
pub use views::SavedView;

/// Now, in UTC milliseconds: the clock every backend stamps entries and processes with.
pub(crate) fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    now.unix_timestamp() * 1000 + i64::from(now.millisecond())
}

/// A named log with the clients allowed to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// The process id.
    pub pid: String,
    /// The connector ids that may log to and read the process.
    pub owners: BTreeSet<String>,
    /// When the process was created, UTC milliseconds.
    pub created_at_ms: i64,
    /// Whether its entries are encrypted (it has a data key), and whether it was erased.
    pub content: ProcessContent,
}

/// How a process's content is kept (see [`sealing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessContent {
    /// In the clear: created before encryption, or with it off.
    Plaintext,
    /// Sealed under the process's data key.
    Encrypted,
    /// The data key was destroyed: entries are kept, their content is gone for good.
    Erased(Erasure),
}

impl ProcessContent {
    pub(crate) fn of(state: &KeyState) -> Self {
        match state {
            KeyState::Plaintext => Self::Plaintext,
            KeyState::Wrapped(_) => Self::Encrypted,
            KeyState::Erased(erasure) => Self::Erased(erasure.clone()),
        }
    }
}

/// A process and the state of its chain: what an owner's process-info query shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process.
    pub process: Process,
    /// The latest entry's sequence (0 without entries, so also the number of entries) and
    /// chain hash (the genesis hash without entries).
    pub head: chain::ChainHead,
}

/// A stored log entry, as appended and as returned by every read.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The process the entry belongs to.
    pub pid: String,
    /// 1, 2, 3, ... per process, without gaps.
    pub sequence: u64,
    /// A UUID v4 the store assigned, unique across all processes.
    pub document_id: String,
    /// UTC milliseconds; never smaller than the previous entry's of the same process.
    pub timestamp_ms: i64,
    /// The connector that logged the entry.
    pub client_id: String,
    /// The IDS JSON-LD header, without its tokens.
    pub header: serde_json::Value,
    /// The logged bytes.
    pub payload: Bytes,
    /// The payload's media type, `""` if none was given.
    pub payload_type: String,
    /// The hash of the entry's content. See [`chain`] for how both hashes are computed.
    pub entry_hash: [u8; 32],
    /// The hash that links the entry to the one before it.
    pub chain_hash: [u8; 32],
    /// Whether the content was stored encrypted, and whether it is still there (erasure).
    pub protection: Protection,
}

/// The order of a page, by sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

/// One page of a process's entries, optionally restricted to a time range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    /// The process.
    pub pid: String,
    /// 1-based.
    pub page: u64,
    /// At least 1; capping it is the caller's business.
    pub size: u64,
    /// The order of the entries.
    pub order: Order,
    /// Inclusive lower bound on `timestamp_ms`.
    pub from_ms: Option<i64>,
    /// Inclusive upper bound on `timestamp_ms`.
    pub to_ms: Option<i64>,
    /// The most bytes of entries (payloads and headers as stored) the page may hold. Reading
    /// stops with [`StoreError::PageTooLarge`] once they exceed it, so that a page of large
    /// entries is refused before all of it is in memory.
    pub max_bytes: usize,
}

/// The entries of one page and how many entries the whole query matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The page's entries, in the order asked for.
    pub entries: Vec<Entry>,
    /// Entries in the time range over all pages, so that clients know when they have everything.
    pub total: u64,
}

/// Whether `create_process` made the process or found it already there (left unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The process is new.
    Created(Process),
    /// The process was there already.
    Exists(Process),
}

/// The entry a page stopped at because it would not fit [`PageQuery::max_bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfitEntry {
    /// The entry's sequence number.
    pub sequence: u64,
    /// The entry's document id.
    pub document_id: String,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No process has this pid.
    #[error("process {0:?} does not exist")]
    UnknownProcess(String),
    /// An entry with this document id is stored already: a random id that came up twice
    /// (MongoDB; a chance of 2^-122 per pair).
    #[error("document id {0:?} is already in use")]
    DuplicateDocument(String),
    /// The query cannot be run as asked.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// The page's entries exceed [`PageQuery::max_bytes`]: the first `fitting` entries of the
    /// page (in its order) fit, `first_unfit` is the one that does not, so that the caller can
    /// be told how many to ask for, or which entry is too large on its own.
    #[error("the page holds more than {limit} bytes of entries")]
    PageTooLarge {
        /// [`PageQuery::max_bytes`].
        limit: usize,
        /// How many entries of the page fit.
        fitting: u64,
        /// The first entry that does not.
        first_unfit: UnfitEntry,
    },
    /// The backend is down, timed out, or shutting down; retrying later may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data does not decode or contradicts itself; needs an operator.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// An owner change found other owners than the ones it was decided on.
    #[error("the owners of process {0:?} changed meanwhile")]
    OwnersChanged(String),
    /// Concurrent writers kept winning the race for a process head (backends that use
    /// compare-and-swap across instances, such as MongoDB).
    #[error("conflicting concurrent update: {0}")]
    Conflict(String),
    /// Reading or writing the store's files failed.
    #[error("store I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The process was erased: it takes no more entries.
    #[error("process {pid:?} was erased by {by} at {at_ms} (UTC ms); it takes no more entries")]
    Erased {
        /// The process.
        pid: String,
        /// Who erased it.
        by: String,
        /// When, UTC milliseconds.
        at_ms: i64,
    },
    /// The process's data key cannot be unwrapped with the configured KEKs.
    #[error("process {pid:?}: {reason}")]
    MissingKek {
        /// The process.
        pid: String,
        /// Which KEK, and why.
        reason: String,
    },
    /// Erasure asked of a process that has no data key to destroy.
    #[error("process {0:?} is stored in plaintext (it was created before encryption or with it off): it has no data key to destroy")]
    NotErasable(String),
}

impl StoreError {
    /// The same failure for another caller of a batch that failed as a whole (`StoreError` is
    /// not `Clone`, because `io::Error` is not).
    pub(crate) fn for_another_caller(&self) -> StoreError {
        match self {
            StoreError::UnknownProcess(pid) => StoreError::UnknownProcess(pid.clone()),
            StoreError::DuplicateDocument(id) => StoreError::DuplicateDocument(id.clone()),
            StoreError::InvalidQuery(detail) => StoreError::InvalidQuery(detail.clone()),
            StoreError::PageTooLarge {
                limit,
                fitting,
                first_unfit,
            } => StoreError::PageTooLarge {
                limit: *limit,
                fitting: *fitting,
                first_unfit: first_unfit.clone(),
            },
            StoreError::Unavailable(detail) => StoreError::Unavailable(detail.clone()),
            StoreError::Corrupt(detail) => StoreError::Corrupt(detail.clone()),
            StoreError::Conflict(detail) => StoreError::Conflict(detail.clone()),
            StoreError::OwnersChanged(pid) => StoreError::OwnersChanged(pid.clone()),
            StoreError::Erased { pid, by, at_ms } => StoreError::Erased {
                pid: pid.clone(),
                by: by.clone(),
                at_ms: *at_ms,
            },
            StoreError::MissingKek { pid, reason } => StoreError::MissingKek {
                pid: pid.clone(),
                reason: reason.clone(),
            },
            StoreError::NotErasable(pid) => StoreError::NotErasable(pid.clone()),
            StoreError::Io(error) => {
                StoreError::Io(std::io::Error::new(error.kind(), error.to_string()))
            }
        }
    }
}

/// The storage contract every backend fulfils.
///
/// Futures are boxed so that the service can hold any backend as `Arc<dyn ProcessStore>`.
pub trait ProcessStore: Send + Sync + 'static {
    /// Creates the process with exactly these owners, or reports the existing one unchanged.
    fn create_process(
        &self,
        pid: &str,
        owners: &BTreeSet<String>,
    ) -> BoxFuture<'_, Result<CreateOutcome, StoreError>>;

    /// The process `pid`, if it exists.
    fn process(&self, pid: &str) -> BoxFuture<'_, Result<Option<Process>, StoreError>>;

    /// The process with the head of its chain, read fresh (never from a cache).
    fn process_info(&self, pid: &str) -> BoxFuture<'_, Result<Option<ProcessInfo>, StoreError>>;

    /// Atomically, as one write: appends `change.entry` as [`append`](Self::append) does and
    /// replaces the process's owners with `change.owners`, so that the chain records every
    /// owner change and no change happens without its entry. Fails with
    /// [`StoreError::OwnersChanged`] (writing nothing) unless the owners are still
    /// `change.previous`, so that a change decided on owners read earlier cannot undo one made
    /// meanwhile; otherwise fails as `append` does.
    fn change_owners(&self, change: OwnerChange) -> BoxFuture<'_, Result<Entry, StoreError>>;

    /// Atomically: assigns the entry's document id (a UUID v4, unique in the store: drawn at
    /// random, or derived from a counter by the embedded store; see `entry`), the next sequence
    /// (1, 2, 3, ... no gaps per process), the timestamp (now in UTC ms, but never earlier than
    /// the process's previous entry, so that timestamps are non-decreasing with the sequence),
    /// computes entry_hash and chain_hash against the current process head (from the payload
    /// hash and canonical header `entry` was prepared with, never computing them again), and
    /// stores entry + new head together. Returns only once the entry is durable. Fails with
    /// [`StoreError::UnknownProcess`] if the process does not exist and with
    /// [`StoreError::DuplicateDocument`] if the backend drew a document id already stored. If
    /// the future is dropped before it completes, the entry may or may not have been stored.
    fn append(&self, entry: PreparedEntry) -> BoxFuture<'_, Result<Entry, StoreError>>;

    /// The entry with this document id, if it belongs to `pid` (`None` when it belongs to
    /// another process, so that ids of other processes reveal nothing).
    fn entry(
        &self,
        pid: &str,
        document_id: &str,
    ) -> BoxFuture<'_, Result<Option<Entry>, StoreError>>;

    /// One page of entries. A page past the end is empty and still carries the total.
    /// Fails with [`StoreError::UnknownProcess`] and, for page or size 0, [`StoreError::InvalidQuery`].
    fn query(&self, query: &PageQuery) -> BoxFuture<'_, Result<Page, StoreError>>;

    /// The pids this client owns, sorted.
    fn processes_of(&self, client_id: &str) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Entries with sequence in `[from_sequence, from_sequence + limit)`, ascending: for export
    /// and chain verification in bounded batches. Fails with [`StoreError::UnknownProcess`].
    fn entries_from(
        &self,
        pid: &str,
        from_sequence: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Entry>, StoreError>>;

    /// Succeeds when the backend can serve reads and writes (readiness).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Erases the content of `pid` for good by destroying its data key (see [`sealing`]), and
    /// records `by` and the time in its place, in one write. Entries, their hashes and the chain
    /// stay; reads return the entries with their content withheld, and appends are refused with
    /// [`StoreError::Erased`]. Erasing an erased process returns its first erasure unchanged.
    /// Fails with [`StoreError::NotErasable`] for a plaintext process.
    fn erase(&self, pid: &str, by: &str) -> BoxFuture<'_, Result<Erasure, StoreError>>;

    /// The ids of the KEKs that wrap the store's data keys, so that startup can refuse a store
    /// whose keys it could not unwrap.
    fn data_key_keks(&self) -> BoxFuture<'_, Result<BTreeSet<String>, StoreError>>;

    /// Looks at up to `limit` processes in pid order after `after` and re-wraps under the active
    /// KEK the data keys among them that another KEK wraps. Entries are not touched. Callers
    /// continue after [`RewrapBatch::last_pid`] until it is `None`.
    fn rewrap_data_keys(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RewrapBatch, StoreError>>;

    /// The view of `pid` saved last (see `views`), if any.
    fn saved_view(&self, pid: &str) -> BoxFuture<'_, Result<Option<SavedView>, StoreError>>;

    /// Saves `view` for `pid` unless the saved one reaches as far or further. Not durable by
    /// itself (a view is derived; a lost one is folded again).
    fn save_view(&self, pid: &str, view: SavedView) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// What one call of [`ProcessStore::rewrap_data_keys`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapBatch {
    /// Processes looked at.
    pub examined: u64,
    /// Data keys re-wrapped.
    pub rewrapped: u64,
    /// The last pid looked at; `None` when there were no more.
    pub last_pid: Option<String>,
}

//! The MongoDB backend's collections: connecting, the indexes every guarantee rests on, and the
//! reads and writes the store and its committer make, each bounded in time.
//!
//! Indexes, created (idempotently) by [`Collections::connect`]: `entries` `{pid: 1, sequence: 1}`
//! unique (one entry per sequence number, and the index behind every page), `{pid: 1,
//! timestamp: 1, sequence: 1}` (the two lookups that turn a time range into a run of sequence
//! numbers), the document id as `_id` (unique across all processes by definition), and
//! `processes` `{owners: 1, _id: 1}` (the pids of a client, already sorted). Collection `usage`
//! holds the quota counters (see `usage`).
//!
//! The operations only the committer makes (ordered inserts, the heads' compare-and-swap,
//! reading orphans) are next to it, in `committer`. Every operation is bounded by the
//! configured timeout ([`bounded`]), and the driver's errors are sorted into what a caller can
//! act on ([`classify`]).

use std::collections::BTreeSet;
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, ClientOptions, IndexOptions, ReadConcern, WriteConcern};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::Serialize;

use super::documents::{
    to_i64, to_u64, DataKeyDocument, EntryDocument, Head, ProcessDocument, SequenceOnly,
};
use super::{MongoConfig, WriteAcknowledgment};
use crate::store::query::SequenceRange;
use crate::store::sealing::{EntryKeys, KeyState, Sealing};
use crate::store::{Entry, Order, RewrapBatch, StoreError, UnfitEntry};

pub(super) const PROCESSES: &str = "processes";
const ENTRIES: &str = "entries";
/// MongoDB's error code for a violated unique index.
pub(super) const DUPLICATE_KEY: i32 = 11000;

/// The two collections and how to talk to them; shared by the store and its committer.
#[derive(Clone)]
pub(super) struct Collections {
    pub(super) database: Database,
    pub(super) processes: Collection<ProcessDocument>,
    pub(super) entries: Collection<EntryDocument>,
    pub(super) timeout: Duration,
    /// As configured; commands sent with `run_command` must name it themselves.
    pub(super) write_concern: WriteConcern,
    /// Seals new entries and opens stored ones.
    pub(super) sealing: Arc<Sealing>,
}

impl Collections {
    /// Connects and creates the indexes (which creates the collections). Fails with
    /// [`StoreError::Unavailable`] if the database cannot be reached within the timeout or the
    /// configuration is unusable.
    pub(super) async fn connect(config: &MongoConfig) -> Result<Self, StoreError> {
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
        let collections = Self {
            processes: database.collection(PROCESSES),
            entries: database.collection(ENTRIES),
            database,
            timeout,
            write_concern,
            sealing: Arc::clone(&config.sealing),
        };
        collections.create_indexes().await?;
        collections.create_usage_index().await?;
        Ok(collections)
    }

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

    pub(super) fn bounded<T>(
        &self,
        what: &'static str,
        operation: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> impl Future<Output = Result<T, StoreError>> {
        bounded(self.timeout, what, operation)
    }

    /// Inserts a document, telling a violated unique index apart from other failures.
    pub(super) async fn insert<T: Serialize + Send + Sync>(
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

    pub(super) async fn read_process(
        &self,
        pid: &str,
    ) -> Result<Option<ProcessDocument>, StoreError> {
        self.bounded(
            "reading a process",
            self.processes.find_one(doc! { "_id": pid }),
        )
        .await
    }

    pub(super) async fn read_head(&self, pid: &str) -> Result<Head, StoreError> {
        match self.read_process(pid).await? {
            Some(process) => Ok(process.decode()?.1),
            None => Err(StoreError::UnknownProcess(pid.to_owned())),
        }
    }

    /// The ids of the KEKs wrapping data keys, with one `$group`.
    pub(super) async fn data_key_keks(&self) -> Result<BTreeSet<String>, StoreError> {
        let groups: Vec<Document> = self
            .bounded("listing the KEKs of data keys", async {
                self.processes
                    .aggregate([
                        doc! { "$match": { "data_key": { "$exists": true } } },
                        doc! { "$group": { "_id": "$data_key.kek" } },
                    ])
                    .max_time(self.timeout)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        groups
            .iter()
            .map(|group| {
                group.get_str("_id").map(str::to_owned).map_err(|_| {
                    StoreError::Corrupt("a process's data_key.kek is not a string".to_owned())
                })
            })
            .collect()
    }

    /// See [`crate::store::ProcessStore::rewrap_data_keys`]: each key is replaced only if it is
    /// still the one read (a compare-and-swap on the wrapped bytes), so that an erasure or
    /// another rewrap meanwhile wins.
    pub(super) async fn rewrap(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<RewrapBatch, StoreError> {
        let filter = match &after {
            Some(after) => doc! { "_id": { "$gt": after.as_str() } },
            None => doc! {},
        };
        let documents: Vec<ProcessDocument> = self
            .bounded("reading processes to rewrap", async {
                self.processes
                    .find(filter)
                    .sort(doc! { "_id": 1 })
                    .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                    .max_time(self.timeout)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        let mut batch = RewrapBatch {
            examined: documents.len() as u64,
            rewrapped: 0,
            last_pid: documents.last().map(|document| document.pid.clone()),
        };
        for document in documents {
            let (process, head) = document.decode()?;
            let KeyState::Wrapped(key) = &head.keys else {
                continue;
            };
            let Some(new_key) = self.sealing.rewrap(&process.pid, key)? else {
                continue;
            };
            let old = DataKeyDocument::new(key);
            let new = DataKeyDocument::new(&new_key);
            let result = self
                .bounded(
                    "rewrapping a data key",
                    self.processes.update_one(
                        doc! { "_id": process.pid.as_str(), "data_key.wrapped": old.wrapped },
                        doc! { "$set": { "data_key": { "kek": new.kek, "wrapped": new.wrapped } } },
                    ),
                )
                .await?;
            batch.rewrapped += result.modified_count;
        }
        Ok(batch)
    }

    pub(super) async fn read_entry(
        &self,
        filter: Document,
    ) -> Result<Option<EntryDocument>, StoreError> {
        self.bounded("reading an entry", self.entries.find_one(filter))
            .await
    }

    /// Entries of `pid` with sequences in `range`, in `order`; all of them must be there, and
    /// their payloads and headers must not add up to more than `max_bytes`
    /// ([`StoreError::PageTooLarge`]).
    pub(super) async fn read_run(
        &self,
        pid: &str,
        range: SequenceRange,
        order: Order,
        max_bytes: usize,
        keys: &EntryKeys,
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
                    bytes = bytes.saturating_add(document.stored_bytes());
                    if bytes > max_bytes {
                        return Ok(Err(StoreError::PageTooLarge {
                            limit: max_bytes,
                            fitting: documents.len() as u64,
                            first_unfit: UnfitEntry {
                                sequence: u64::try_from(document.sequence).unwrap_or_default(),
                                document_id: document.document_id,
                            },
                        }));
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
        documents
            .into_iter()
            .map(|document| document.decode(keys))
            .collect()
    }

    /// The sequence of the first (`direction` 1) or last (-1) entry of `pid` matching
    /// `timestamp`, among those the head covers.
    pub(super) async fn sequence_at(
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

pub(super) enum Insert {
    Done,
    DuplicateKey,
}

/// Runs one database operation, giving up after `timeout` whatever the driver is waiting for.
pub(super) async fn bounded<T>(
    timeout: Duration,
    what: &'static str,
    operation: impl IntoFuture<Output = mongodb::error::Result<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, operation).await {
        Ok(result) => result.map_err(classify),
        Err(_) => Err(timed_out(timeout, what)),
    }
}

pub(super) fn timed_out(timeout: Duration, what: &str) -> StoreError {
    StoreError::Unavailable(format!("MongoDB did not finish {what} within {timeout:?}"))
}

pub(super) fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
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
pub(super) fn classify(error: mongodb::error::Error) -> StoreError {
    match &*error.kind {
        ErrorKind::BsonDeserialization(_) => {
            StoreError::Corrupt(format!("a stored document does not decode: {error}"))
        }
        _ => StoreError::Unavailable(format!("MongoDB: {error}")),
    }
}

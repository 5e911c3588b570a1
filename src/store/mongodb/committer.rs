//! The committer: the one task of a [`MongoStore`](super::MongoStore) that writes appends, in
//! groups.
//!
//! The protocol (ordered insert of a batch's entries, one compare-and-swap per process head,
//! orphans adopted) is described in the [module documentation](super); this is how one
//! instance runs it. Appends reach the committer through a bounded channel. It takes all that
//! are waiting, up to [`MAX_BATCH_ENTRIES`] or [`MAX_BATCH_BYTES`], and commits them in
//! *rounds*: a round writes what it can, acknowledges what is stored and covered by its head,
//! and hands back the appends that must be tried again. While a batch is being written the next
//! one gathers, so the busier the store, the larger the batches and the fewer the journal
//! syncs per append.
//!
//! The committer is the only writer of entries in its instance, so the process heads it keeps
//! in memory are exact unless another instance appended to the same process; the database
//! tells it so by refusing the next sequence number.
//!
//! Metrics: `clearinghouse_store_sequence_conflicts_total` counts the entries the database
//! refused because another writer had taken their sequence number, and
//! `clearinghouse_store_appends_retried_total` the appends sent into another round after such a
//! refusal (the refused one and those behind it in its batch): how much instances on one
//! database get in each other's way.

use std::collections::HashMap;
use std::sync::Arc;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::error::ErrorKind;
use tokio::sync::{mpsc, oneshot};

use super::collections::{classify, timed_out, Collections, DUPLICATE_KEY, PROCESSES};
use super::documents::{binary, to_i64, EntryDocument, Head, ProcessDocument};
use super::{backoff, APPEND_QUEUE};
use crate::store::chain::{self, ChainHead, Link};
use crate::store::owners::recorded_owners;
use crate::store::sealing::{EntryKeys, KeyState, ProcessKeys};
use crate::store::{Entry, PreparedEntry, StoreError};

/// Metric: entries refused because their sequence number was taken by another writer.
const SEQUENCE_CONFLICTS: &str = "clearinghouse_store_sequence_conflicts_total";
/// Metric: appends tried again in a later round after a refusal.
const APPENDS_RETRIED: &str = "clearinghouse_store_appends_retried_total";

/// The most appends one batch takes.
const MAX_BATCH_ENTRIES: usize = 512;
/// A batch takes no further append once its payloads and headers add up to this, so that one
/// `insert_many` stays a single message to the database.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Process heads the committer keeps; past this many it forgets them all and reads again.
const KNOWN_HEADS_LIMIT: usize = 100_000;

/// One append on its way to the committer, and where its outcome goes.
pub(super) struct AppendRequest {
    pub(super) prepared: PreparedEntry,
    pub(super) reply: oneshot::Sender<Result<Entry, StoreError>>,
}

/// Starts the committer of one store; it ends when the store (the last sender) is dropped.
pub(super) fn start(collections: Collections, max_attempts: u32) -> mpsc::Sender<AppendRequest> {
    let (sender, requests) = mpsc::channel(APPEND_QUEUE);
    let committer = Committer {
        collections,
        max_attempts,
        heads: HashMap::new(),
    };
    tokio::spawn(committer.run(requests));
    sender
}

/// What an append gets if the committer is not there to answer.
pub(super) fn gone() -> StoreError {
    StoreError::Unavailable("the MongoDB committer has stopped".to_owned())
}

struct Committer {
    collections: Collections,
    max_attempts: u32,
    /// The head of each process as this committer last wrote or read it.
    heads: HashMap<String, Head>,
}

/// An append in a batch.
struct Pending {
    request: AppendRequest,
    /// Rounds in which this append lost its sequence number to another writer.
    lost: u32,
    /// The process's content keys, when it is encrypted, as the current round planned with.
    keys: Option<Arc<ProcessKeys>>,
}

impl Pending {
    fn pid(&self) -> &str {
        &self.request.prepared.entry().pid
    }

    fn bytes(&self) -> usize {
        let prepared = &self.request.prepared;
        prepared.entry().payload.len() + prepared.canonical_header().len()
    }

    fn answer(self, outcome: Result<Entry, StoreError>) {
        // The caller may have given up (its connection closed); then nobody is waiting.
        let _ = self.request.reply.send(outcome);
    }

    /// The entry document this append becomes as `link`.
    fn document(
        &self,
        link: &Link,
        random: &ring::rand::SystemRandom,
    ) -> Result<EntryDocument, StoreError> {
        let sealing = self.keys.as_deref().map(|keys| (keys, random));
        EntryDocument::new(&self.request.prepared, link, sealing)
    }

    fn acknowledge(self, link: &Link) {
        let AppendRequest { prepared, reply } = self.request;
        // The caller may have given up meanwhile; the entry is stored all the same.
        let _ = reply.send(Ok(prepared.into_stored(link, self.keys.as_deref())));
    }
}

/// How the database took a batch's ordered insert.
enum Inserted {
    All,
    /// The entries before `index` are stored; the one at `index` was refused, the rest not tried.
    Until {
        index: usize,
        code: i32,
        message: String,
    },
}

/// A head to move from `from` to `to`, and the appends stored in between.
struct HeadMove {
    from: Head,
    to: Head,
    appends: Vec<(Pending, Link)>,
}

impl Committer {
    async fn run(mut self, mut requests: mpsc::Receiver<AppendRequest>) {
        while let Some(first) = requests.recv().await {
            let mut batch = vec![Pending {
                request: first,
                lost: 0,
                keys: None,
            }];
            let mut bytes = batch[0].bytes();
            while batch.len() < MAX_BATCH_ENTRIES && bytes < MAX_BATCH_BYTES {
                let Ok(request) = requests.try_recv() else {
                    break;
                };
                let pending = Pending {
                    request,
                    lost: 0,
                    keys: None,
                };
                bytes += pending.bytes();
                batch.push(pending);
            }
            while !batch.is_empty() {
                batch = self.round(batch).await;
            }
            if self.heads.len() > KNOWN_HEADS_LIMIT {
                self.heads.clear();
            }
        }
    }

    /// Writes what it can of `pending`, answers every append it settles, and returns the
    /// appends to try again, in their order.
    async fn round(&mut self, pending: Vec<Pending>) -> Vec<Pending> {
        // An append whose caller gave up is not written: no one would get its receipt.
        let pending: Vec<Pending> = pending
            .into_iter()
            .filter(|pending| !pending.request.reply.is_closed())
            .collect();
        let pending = self.with_known_heads(pending).await;

        // Chain each append onto the one before it in its process.
        let mut heads: HashMap<String, Head> = HashMap::new();
        let mut planned = Vec::with_capacity(pending.len());
        let mut documents = Vec::with_capacity(pending.len());
        for mut append in pending {
            let Some(head) = heads
                .get(append.pid())
                .or_else(|| self.heads.get(append.pid()))
                .cloned()
            else {
                // `with_known_heads` answered it already; never here.
                continue;
            };
            append.keys = match self.collections.sealing.entry_keys(&head.pid, &head.keys) {
                Ok(EntryKeys::Plaintext) => None,
                Ok(EntryKeys::Keys(keys)) => Some(keys),
                Ok(EntryKeys::Erased) => {
                    append.answer(Err(erased(&head)));
                    continue;
                }
                Err(error) => {
                    append.answer(Err(error));
                    continue;
                }
            };
            let chain_head = ChainHead {
                sequence: head.sequence,
                chain_hash: head.chain_hash,
            };
            let link = match chain::append_link(
                &chain_head,
                head.timestamp_ms,
                &append.request.prepared,
                append.keys.as_deref(),
            ) {
                Ok(link) => link,
                Err(error) => {
                    append.answer(Err(error));
                    continue;
                }
            };
            match append.document(&link, self.collections.sealing.random()) {
                Ok(document) => documents.push(document),
                Err(error) => {
                    append.answer(Err(error));
                    continue;
                }
            }
            heads.insert(append.pid().to_owned(), head.after(&link));
            planned.push((append, link));
        }
        if planned.is_empty() {
            return Vec::new();
        }

        let inserted = match self.collections.insert_entries(&documents).await {
            Ok(inserted) => inserted,
            Err(error) => {
                // What is stored is not known: let the heads be read again, and adopt then.
                for (append, _) in planned {
                    self.heads.remove(append.pid());
                    append.answer(Err(error.for_another_caller()));
                }
                return Vec::new();
            }
        };
        let (mut stored, refused) = match inserted {
            Inserted::All => (planned, None),
            Inserted::Until {
                index,
                code,
                message,
            } => {
                let mut rest = planned.split_off(index);
                let refused = rest.remove(0);
                let document = documents.swap_remove(index);
                (planned, Some((refused, document, code, message, rest)))
            }
        };
        let Some(((append, link), document, code, message, rest)) = refused else {
            self.move_heads(stored).await;
            return Vec::new();
        };

        let mut retry = Vec::with_capacity(rest.len() + 1);
        let mut lost_sequence = None;
        if code != DUPLICATE_KEY {
            append.answer(Err(StoreError::Unavailable(format!(
                "MongoDB refused entry {}: {message}",
                document.document_id
            ))));
        } else {
            match self.collections.is_own(&document).await {
                // A driver retry of an insert whose reply was lost: stored after all.
                Ok(true) => stored.push((append, link)),
                Ok(false) => {
                    metrics::counter!(SEQUENCE_CONFLICTS).increment(1);
                    lost_sequence = Some(append.pid().to_owned());
                    retry.push(append);
                }
                Err(error) => append.answer(Err(error)),
            }
        }
        self.move_heads(stored).await;
        retry.extend(rest.into_iter().map(|(append, _)| append));

        metrics::counter!(APPENDS_RETRIED).increment(retry.len() as u64);
        let Some(pid) = lost_sequence else {
            return retry;
        };
        let caught_up = self.catch_up(&pid).await;
        let mut again = Vec::with_capacity(retry.len());
        for mut append in retry {
            if append.pid() != pid {
                again.push(append);
                continue;
            }
            if let Err(error) = &caught_up {
                append.answer(Err(error.for_another_caller()));
                continue;
            }
            if append.request.prepared.document_id() == document.document_id {
                append.lost += 1;
                if append.lost >= self.max_attempts {
                    let attempts = append.lost;
                    append.answer(Err(StoreError::Conflict(format!(
                        "gave up appending to process {pid} after {attempts} attempts: other writers kept taking the next sequence number"
                    ))));
                    continue;
                }
            }
            again.push(append);
        }
        again
    }

    /// Makes sure the head of every process in `pending` is known, reading the ones that are
    /// not; answers (and drops) the appends whose process does not exist or cannot be read.
    async fn with_known_heads(&mut self, pending: Vec<Pending>) -> Vec<Pending> {
        let mut missing: Vec<String> = pending
            .iter()
            .map(Pending::pid)
            .filter(|pid| !self.heads.contains_key(*pid))
            .map(str::to_owned)
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let mut unreadable = None;
        if !missing.is_empty() {
            match self.collections.read_heads(&missing).await {
                Ok(found) => self.heads.extend(found),
                Err(error) => unreadable = Some(error),
            }
        }
        let mut known = Vec::with_capacity(pending.len());
        for append in pending {
            if self.heads.contains_key(append.pid()) {
                known.push(append);
                continue;
            }
            let error = match &unreadable {
                Some(error) => error.for_another_caller(),
                None => StoreError::UnknownProcess(append.pid().to_owned()),
            };
            append.answer(Err(error));
        }
        known
    }

    /// Moves the head of every process in `stored` over its run of entries, then acknowledges
    /// them; or fails them, if the heads could not be moved.
    async fn move_heads(&mut self, stored: Vec<(Pending, Link)>) {
        let mut moves: Vec<HeadMove> = Vec::new();
        for (append, link) in stored {
            let pid = append.pid().to_owned();
            match moves.iter_mut().find(|head_move| head_move.from.pid == pid) {
                Some(head_move) => {
                    head_move.to = head_move.to.after(&link);
                    head_move.appends.push((append, link));
                }
                None => {
                    let Some(from) = self.heads.get(&pid).cloned() else {
                        // Every stored append was planned from a known head; never here.
                        append.answer(Err(StoreError::Corrupt(format!(
                            "the head of process {pid} was forgotten during an append"
                        ))));
                        continue;
                    };
                    moves.push(HeadMove {
                        to: from.after(&link),
                        from,
                        appends: vec![(append, link)],
                    });
                }
            }
        }
        if moves.is_empty() {
            return;
        }
        let swaps: Vec<(&Head, &Head)> = moves
            .iter()
            .map(|head_move| (&head_move.from, &head_move.to))
            .collect();
        let all_moved = match self.collections.swap_heads(&swaps).await {
            Ok(moved) => moved == moves.len(),
            Err(error) => return self.fail_moves(moves, &error),
        };
        // A head that did not move was moved past these entries by another writer adopting
        // them (or by a retried swap whose reply was lost); it can be nowhere else, since the
        // head only ever moves over the entry stored at the next sequence.
        let current = if all_moved {
            HashMap::new()
        } else {
            let pids: Vec<String> = moves.iter().map(|m| m.from.pid.clone()).collect();
            match self.collections.read_heads(&pids).await {
                Ok(current) => current,
                Err(error) => return self.fail_moves(moves, &error),
            }
        };
        for head_move in moves {
            let pid = head_move.from.pid.clone();
            let outcome = match current.get(&pid) {
                None if all_moved => Ok(head_move.to),
                Some(head) if head.sequence >= head_move.to.sequence => Ok(head.clone()),
                // Erased meanwhile: the entries stay orphans, sealed under a destroyed key.
                Some(head) if matches!(head.keys, KeyState::Erased(_)) => Err(erased(head)),
                found => Err(StoreError::Corrupt(format!(
                    "process {pid} head is at sequence {} and did not move over the entries just stored up to {}",
                    found.map_or(0, |head| head.sequence),
                    head_move.to.sequence
                ))),
            };
            match outcome {
                Ok(head) => {
                    self.heads.insert(pid, head);
                    for (append, link) in head_move.appends {
                        append.acknowledge(&link);
                    }
                }
                Err(error) => {
                    self.heads.remove(&pid);
                    for (append, _) in head_move.appends {
                        append.answer(Err(error.for_another_caller()));
                    }
                }
            }
        }
    }

    /// Fails the appends of `moves`, whose heads may or may not have moved: the heads are read
    /// again next time.
    fn fail_moves(&mut self, moves: Vec<HeadMove>, error: &StoreError) {
        for head_move in moves {
            self.heads.remove(&head_move.from.pid);
            for (append, _) in head_move.appends {
                append.answer(Err(error.for_another_caller()));
            }
        }
    }

    /// After `pid` lost a sequence number: reads its head again and, if nobody moved it, adopts
    /// the orphans after it.
    async fn catch_up(&mut self, pid: &str) -> Result<(), StoreError> {
        let known = self.heads.remove(pid);
        let current = self.collections.read_head(pid).await?;
        let head = if Some(&current) == known.as_ref() {
            let adopted = self.adopt_orphans(current.clone()).await?;
            if adopted == current {
                // The entry that took the sequence is not visible to a majority read yet.
                backoff(1).await;
            }
            adopted
        } else {
            current
        };
        self.heads.insert(pid.to_owned(), head);
        Ok(())
    }

    /// Moves the head over the run of entries stored after it by a writer that has not moved
    /// it (yet), as far as they verify, and returns the head to continue from.
    async fn adopt_orphans(&mut self, head: Head) -> Result<Head, StoreError> {
        let pid = head.pid.as_str();
        let orphans = self
            .collections
            .read_after(pid, head.sequence, MAX_BATCH_ENTRIES)
            .await?;
        let mut adopted = head.clone();
        // An orphaned owner change sets its owners as it is adopted (see `owners`).
        let mut owners = None;
        let keys = self.collections.sealing.entry_keys(pid, &head.keys)?;
        for orphan in orphans {
            let orphan = orphan.decode(&keys)?;
            let verifies = orphan.sequence == adopted.sequence + 1
                && chain::entry_hash(&orphan) == Some(orphan.entry_hash)
                && chain::chain_hash(&adopted.chain_hash, &orphan.entry_hash) == orphan.chain_hash
                && orphan.timestamp_ms >= adopted.timestamp_ms;
            if !verifies && adopted == head {
                return Err(StoreError::Corrupt(format!(
                    "entry {pid}/{} ({}) was stored after the head but does not chain onto it",
                    orphan.sequence, orphan.document_id
                )));
            }
            if !verifies {
                break;
            }
            if let Some(recorded) = recorded_owners(&orphan)? {
                owners = Some(recorded);
            }
            adopted = Head {
                pid: head.pid.clone(),
                sequence: orphan.sequence,
                chain_hash: orphan.chain_hash,
                timestamp_ms: orphan.timestamp_ms,
                keys: head.keys.clone(),
            };
        }
        if adopted == head {
            return Ok(head);
        }
        tracing::info!(
            pid,
            from = head.sequence,
            to = adopted.sequence,
            "moved a process head over entries their writer left behind"
        );
        let swapped = match &owners {
            Some(owners) => {
                self.collections
                    .swap_head_and_owners(&head, &adopted, owners)
                    .await?
            }
            None => self.collections.swap_heads(&[(&head, &adopted)]).await? == 1,
        };
        if swapped {
            Ok(adopted)
        } else {
            self.collections.read_head(pid).await
        }
    }
}

impl Head {
    /// The head once `link` is appended after it.
    fn after(&self, link: &Link) -> Head {
        Head {
            pid: self.pid.clone(),
            sequence: link.sequence,
            chain_hash: link.chain_hash,
            timestamp_ms: link.timestamp_ms,
            keys: self.keys.clone(),
        }
    }
}

/// What an append to the erased process of `head` gets.
pub(super) fn erased(head: &Head) -> StoreError {
    match &head.keys {
        KeyState::Erased(erasure) => StoreError::Erased {
            pid: head.pid.clone(),
            by: erasure.by.clone(),
            at_ms: erasure.at_ms,
        },
        _ => StoreError::Corrupt(format!("process {} is erased and is not", head.pid)),
    }
}

impl Collections {
    /// Inserts `documents` in order, stopping at the first one the database refuses.
    async fn insert_entries(&self, documents: &[EntryDocument]) -> Result<Inserted, StoreError> {
        let insert = self.entries.insert_many(documents).ordered(true);
        let error = match tokio::time::timeout(self.timeout, insert).await {
            Err(_) => return Err(timed_out(self.timeout, "inserting entries")),
            Ok(Ok(_)) => return Ok(Inserted::All),
            Ok(Err(error)) => error,
        };
        if let ErrorKind::InsertMany(failure) = &*error.kind {
            let first_refused = failure
                .write_errors
                .as_deref()
                .unwrap_or_default()
                .iter()
                .min_by_key(|refused| refused.index);
            // With a write concern error nothing is known to be durable: no receipts.
            if let (Some(refused), None) = (first_refused, &failure.write_concern_error) {
                return Ok(Inserted::Until {
                    index: refused.index.min(documents.len().saturating_sub(1)),
                    code: refused.code,
                    message: refused.message.clone(),
                });
            }
        }
        Err(classify(error))
    }

    /// After a duplicate key: whether the entry stored under this document id is this very
    /// document (an insert the driver retried after a lost reply, which had succeeded), or, if
    /// another entry has the id, [`StoreError::DuplicateDocument`]. `false` means the sequence
    /// number was taken.
    pub(super) async fn is_own(&self, document: &EntryDocument) -> Result<bool, StoreError> {
        match self
            .read_entry(doc! { "_id": document.document_id.as_str() })
            .await?
        {
            Some(stored)
                if stored.pid == document.pid
                    && stored.sequence == document.sequence
                    && stored.entry_hash == document.entry_hash =>
            {
                Ok(true)
            }
            Some(_) => Err(StoreError::DuplicateDocument(document.document_id.clone())),
            // Not visible to a majority read yet, or never there: then it was the sequence.
            None => Ok(false),
        }
    }

    /// Compare-and-swaps each head from its first to its second value, all in one update
    /// statement; returns how many matched.
    ///
    /// One statement rather than one per process: a server may make each statement durable on
    /// its own (the test server syncs its journal per statement: 64 statements took 17 ms, one
    /// statement 5 ms). The statement matches each process whose head is still the
    /// expected one and sets the head the same pipeline looks up by `_id`. Pids go into the
    /// pipeline only inside `$literal`, so that a pid starting with `$` stays a string.
    async fn swap_heads(&self, swaps: &[(&Head, &Head)]) -> Result<usize, StoreError> {
        let mut expected = Vec::with_capacity(swaps.len());
        let mut pids = Vec::with_capacity(swaps.len());
        let mut heads = Vec::with_capacity(swaps.len());
        for (from, to) in swaps {
            expected.push(doc! {
                "_id": from.pid.as_str(),
                "head.sequence": to_i64(from.sequence)?,
                "head.chain_hash": binary(from.chain_hash.to_vec()),
                // An erased process takes no more entries, whatever a writer remembered.
                "erasure": { "$exists": false },
            });
            pids.push(Bson::String(from.pid.clone()));
            heads.push(Bson::Document(doc! {
                "sequence": to_i64(to.sequence)?,
                "chain_hash": binary(to.chain_hash.to_vec()),
                "timestamp": DateTime::from_millis(to.timestamp_ms),
            }));
        }
        let new_head = doc! { "$arrayElemAt": [
            { "$literal": heads },
            { "$indexOfArray": [{ "$literal": pids.clone() }, "$_id"] },
        ] };
        let updates = vec![doc! {
            // The `$in` lets the server find the processes by index before it tries the `$or`
            // (the test server scans the collection for an `$or` alone: 17 ms instead of 7 for
            // 64 of 1,000 processes).
            "q": { "_id": { "$in": pids }, "$or": expected },
            "u": [{ "$set": { "head": new_head } }],
            "multi": true,
        }];
        let write_concern =
            mongodb::bson::serialize_to_document(&self.write_concern).map_err(|error| {
                StoreError::Unavailable(format!("the write concern does not encode: {error}"))
            })?;
        let command = doc! {
            "update": PROCESSES,
            "updates": updates,
            "ordered": false,
            "writeConcern": write_concern,
        };
        let reply = self
            .bounded("moving process heads", self.database.run_command(command))
            .await?;
        // `run_command` hands back the reply as it is: write and write concern errors come
        // with `ok: 1`.
        if let Ok(error) = reply.get_document("writeConcernError") {
            return Err(StoreError::Unavailable(format!(
                "MongoDB moved process heads but not as durably as asked: {error}"
            )));
        }
        if let Some(error) = reply
            .get_array("writeErrors")
            .ok()
            .and_then(|errors| errors.first())
        {
            return Err(StoreError::Unavailable(format!(
                "MongoDB refused to move a process head: {error}"
            )));
        }
        let matched = match reply.get("n") {
            Some(Bson::Int32(n)) => i64::from(*n),
            Some(Bson::Int64(n)) => *n,
            other => {
                return Err(StoreError::Unavailable(format!(
                    "MongoDB's reply to moving process heads has no count: {other:?}"
                )))
            }
        };
        Ok(usize::try_from(matched).unwrap_or(0))
    }

    /// The heads of those of `pids` that exist.
    async fn read_heads(&self, pids: &[String]) -> Result<HashMap<String, Head>, StoreError> {
        let documents: Vec<ProcessDocument> = self
            .bounded("reading process heads", async {
                self.processes
                    .find(doc! { "_id": { "$in": pids } })
                    .max_time(self.timeout)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        documents
            .into_iter()
            .map(|document| {
                let (process, head) = document.decode()?;
                Ok((process.pid, head))
            })
            .collect()
    }

    /// Up to `limit` entries of `pid` after `sequence`, in order, whether a head covers them
    /// or not.
    async fn read_after(
        &self,
        pid: &str,
        sequence: u64,
        limit: usize,
    ) -> Result<Vec<EntryDocument>, StoreError> {
        let filter: Document = doc! { "pid": pid, "sequence": { "$gt": to_i64(sequence)? } };
        self.bounded("reading entries after a head", async {
            self.entries
                .find(filter)
                .sort(doc! { "sequence": 1 })
                .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                .max_time(self.timeout)
                .await?
                .try_collect()
                .await
        })
        .await
    }
}

//! Owner changes on MongoDB: the entry and the new owners, written so that neither is ever
//! seen without the other.
//!
//! A change claims the next sequence number with its entry, as an append does (step 3 of the
//! protocol in the [module documentation](super)), then moves the head over it and sets the
//! owners in one compare-and-swap on the process document: owners and head live in the same
//! document, so they change together. The owners only ever change with the head, so a head
//! that is still where the change read it carries the owners the change was decided on.
//!
//! A writer that dies between the two steps leaves the entry as an orphan; the next writer of
//! the process adopts it (the committer does, on its next append) and, because the entry is an
//! owner change, sets the owners it records with the same compare-and-swap
//! ([`Collections::swap_head_and_owners`]). The chain and the owners never disagree for longer
//! than an orphan lives, and an orphan is invisible to reads until adopted.
//!
//! This bypasses the committer: its remembered head of the process is then behind, its next
//! append to the process finds the sequence number taken and reads the head again, the path
//! every concurrent writer takes. Owner changes are rare enough for that extra round.

use std::collections::BTreeSet;

use mongodb::bson::{doc, DateTime};

use super::collections::{Collections, Insert};
use super::committer::erased;
use super::documents::{binary, to_i64, EntryDocument, Head};
use super::{backoff, MongoStore};
use crate::store::chain::{self, ChainHead};
use crate::store::sealing::EntryKeys;
use crate::store::{Entry, OwnerChange, ProcessInfo, StoreError};

impl MongoStore {
    pub(super) async fn fresh_info(&self, pid: &str) -> Result<Option<ProcessInfo>, StoreError> {
        let Some(document) = self.collections.read_process(pid).await? else {
            return Ok(None);
        };
        let (process, head) = document.decode()?;
        Ok(Some(ProcessInfo {
            process,
            head: ChainHead {
                sequence: head.sequence,
                chain_hash: head.chain_hash,
            },
        }))
    }

    pub(super) async fn change(&self, change: OwnerChange) -> Result<Entry, StoreError> {
        let pid = change.entry.entry().pid.clone();
        let collections = &self.collections;
        for attempt in 1..=self.max_attempts {
            let Some(document) = collections.read_process(&pid).await? else {
                return Err(StoreError::UnknownProcess(pid));
            };
            let (process, head) = document.decode()?;
            if process.owners != change.previous {
                return Err(StoreError::OwnersChanged(pid));
            }
            let chain_head = ChainHead {
                sequence: head.sequence,
                chain_hash: head.chain_hash,
            };
            let keys = match collections.sealing.entry_keys(&pid, &head.keys)? {
                EntryKeys::Plaintext => None,
                EntryKeys::Keys(keys) => Some(keys),
                EntryKeys::Erased => return Err(erased(&head)),
            };
            let link = chain::append_link(
                &chain_head,
                head.timestamp_ms,
                &change.entry,
                keys.as_deref(),
            )?;
            let sealing = keys
                .as_deref()
                .map(|keys| (keys, collections.sealing.random()));
            let entry = EntryDocument::new(&change.entry, &link, sealing)?;
            let stored = match collections.insert(&collections.entries, &entry).await? {
                Insert::Done => true,
                Insert::DuplicateKey => collections.is_own(&entry).await?,
            };
            if !stored {
                // Another writer took the sequence number: decide again on what it left.
                backoff(attempt).await;
                continue;
            }
            let to = Head {
                pid: pid.clone(),
                sequence: link.sequence,
                chain_hash: link.chain_hash,
                timestamp_ms: link.timestamp_ms,
                keys: head.keys.clone(),
            };
            if !collections
                .swap_head_and_owners(&head, &to, &change.owners)
                .await?
            {
                // Adopted meanwhile by another writer, which set the owners the entry records.
                let current = collections.read_head(&pid).await?;
                if current.sequence < to.sequence {
                    return Err(StoreError::Corrupt(format!(
                        "process {pid} head is at sequence {} and did not move over the owner change stored at {}",
                        current.sequence, to.sequence
                    )));
                }
            }
            self.forget_process(&pid);
            return Ok(change.entry.into_stored(&link, keys.as_deref()));
        }
        Err(StoreError::Conflict(format!(
            "gave up changing the owners of process {pid} after {} attempts: other writers kept taking the next sequence number",
            self.max_attempts
        )))
    }
}

impl Collections {
    /// Compare-and-swap: moves the head of `from.pid` from `from` to `to` and sets its owners,
    /// if the head is still `from`; whether it was.
    pub(super) async fn swap_head_and_owners(
        &self,
        from: &Head,
        to: &Head,
        owners: &BTreeSet<String>,
    ) -> Result<bool, StoreError> {
        let filter = doc! {
            "_id": from.pid.as_str(),
            "head.sequence": to_i64(from.sequence)?,
            "head.chain_hash": binary(from.chain_hash.to_vec()),
            "erasure": { "$exists": false },
        };
        let owners: Vec<&str> = owners.iter().map(String::as_str).collect();
        let update = doc! { "$set": {
            "head": {
                "sequence": to_i64(to.sequence)?,
                "chain_hash": binary(to.chain_hash.to_vec()),
                "timestamp": DateTime::from_millis(to.timestamp_ms),
            },
            "owners": owners,
        } };
        let result = self
            .bounded(
                "changing the owners of a process",
                self.processes.update_one(filter, update),
            )
            .await?;
        Ok(result.matched_count == 1)
    }
}

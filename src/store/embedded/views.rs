//! The embedded store's saved views: table `views`, pid -> view record (the sequence the view
//! reaches, 8 bytes big-endian, then the view's bytes, sealed with the process's content key
//! when its entries are; see `store::views`).
//!
//! A view is written in a write transaction of its own on the blocking pool, as the usage
//! counters are: redb runs it between two of the writer thread's batches, and the table is one
//! the writer never touches. It is committed without an fsync (`Durability::None`): a view is
//! derived, and the writer's next commit makes it durable; a crash before that costs a fold.
//! The transaction reads the process record too, for its keys (cached unwrapped, as for
//! entries) and to save nothing for an erased process: redb runs write transactions one at a
//! time, so a save is wholly before an erasure or sees it.
//!
//! Erasure deletes the view right after the writer's erasure commits, in a durable transaction
//! of its own (the writer's batches never touch this table). A crash between the two leaves a
//! view sealed under a key that no longer exists: it cannot be opened, reads treat it as absent.

use futures::future::BoxFuture;
use redb::{Durability, ReadableTable, TableDefinition, TableError};

use super::record::read_head;
use super::{EmbeddedStore, PROCESSES};
use crate::store::{views, SavedView, StoreError};

const VIEWS: TableDefinition<&str, &[u8]> = TableDefinition::new("views");

impl EmbeddedStore {
    pub(super) fn read_saved_view(
        &self,
        pid: &str,
    ) -> BoxFuture<'static, Result<Option<SavedView>, StoreError>> {
        let pid = pid.to_owned();
        let sealing = std::sync::Arc::clone(&self.sealing);
        self.read(move |transaction| {
            let table = match transaction.open_table(VIEWS) {
                Ok(table) => table,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(error) => return Err(error.into()),
            };
            let Some(stored) = table.get(pid.as_str())?.and_then(|r| decode(r.value())) else {
                return Ok(None);
            };
            let processes = transaction.open_table(PROCESSES)?;
            let Some(head) = read_head(&processes, &pid)? else {
                return Ok(None);
            };
            let keys = sealing.entry_keys(&pid, &head.keys)?;
            Ok(views::open(&keys, &pid, stored))
        })
    }

    pub(super) fn write_saved_view(
        &self,
        pid: &str,
        view: SavedView,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let database = self.database.clone();
        let sealing = std::sync::Arc::clone(&self.sealing);
        let pid = pid.to_owned();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut transaction = database.begin_write()?;
                transaction
                    .set_durability(Durability::None)
                    .map_err(|error| StoreError::Unavailable(error.to_string()))?;
                {
                    let processes = transaction.open_table(PROCESSES)?;
                    let Some(head) = read_head(&processes, &pid)? else {
                        return Ok(());
                    };
                    let keys = sealing.entry_keys(&pid, &head.keys)?;
                    let mut table = transaction.open_table(VIEWS)?;
                    let saved = table.get(pid.as_str())?.and_then(|r| decode(r.value()));
                    if saved.is_some_and(|saved| saved.entries_seen >= view.entries_seen) {
                        return Ok(());
                    }
                    let Some(sealed) = views::seal(&sealing, &keys, &pid, view) else {
                        return Ok(());
                    };
                    table.insert(pid.as_str(), encode(&sealed).as_slice())?;
                }
                transaction.commit()?;
                Ok(())
            })
            .await
            .map_err(|error| StoreError::Unavailable(format!("view task failed: {error}")))?
        })
    }

    /// Deletes the saved view of `pid` (it was erased), durably.
    pub(super) async fn delete_saved_view(&self, pid: &str) -> Result<(), StoreError> {
        let database = self.database.clone();
        let pid = pid.to_owned();
        tokio::task::spawn_blocking(move || {
            let transaction = database.begin_write()?;
            {
                let mut table = transaction.open_table(VIEWS)?;
                table.remove(pid.as_str())?;
            }
            transaction.commit()?;
            Ok(())
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("view task failed: {error}")))?
    }
}

/// The one place a view (sealed by `store::views` when the process's entries are) becomes a
/// record.
fn encode(view: &SavedView) -> Vec<u8> {
    let mut record = Vec::with_capacity(8 + view.bytes.len());
    record.extend_from_slice(&view.entries_seen.to_be_bytes());
    record.extend_from_slice(&view.bytes);
    record
}

/// A record as a view; `None` when it is too short to be one (the view is then folded again).
fn decode(record: &[u8]) -> Option<SavedView> {
    let (seen, bytes) = record.split_first_chunk::<8>()?;
    Some(SavedView {
        entries_seen: u64::from_be_bytes(*seen),
        bytes: bytes.to_vec(),
    })
}

//! The embedded store's saved views: table `views`, pid -> view record (the sequence the view
//! reaches, 8 bytes big-endian, then the view's bytes).
//!
//! A view is written in a write transaction of its own on the blocking pool, as the usage
//! counters are: redb runs it between two of the writer thread's batches, and the table is one
//! the writer never touches. It is committed without an fsync (`Durability::None`): a view is
//! derived, and the writer's next commit makes it durable; a crash before that costs a fold.

use futures::future::BoxFuture;
use redb::{Durability, ReadableTable, TableDefinition, TableError};

use super::EmbeddedStore;
use crate::store::{SavedView, StoreError};

const VIEWS: TableDefinition<&str, &[u8]> = TableDefinition::new("views");

impl EmbeddedStore {
    pub(super) fn read_saved_view(
        &self,
        pid: &str,
    ) -> BoxFuture<'static, Result<Option<SavedView>, StoreError>> {
        let pid = pid.to_owned();
        self.read(move |transaction| {
            let table = match transaction.open_table(VIEWS) {
                Ok(table) => table,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(error) => return Err(error.into()),
            };
            Ok(table
                .get(pid.as_str())?
                .and_then(|record| decode(record.value())))
        })
    }

    pub(super) fn write_saved_view(
        &self,
        pid: &str,
        view: SavedView,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let database = self.database.clone();
        let pid = pid.to_owned();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut transaction = database.begin_write()?;
                transaction
                    .set_durability(Durability::None)
                    .map_err(|error| StoreError::Unavailable(error.to_string()))?;
                {
                    let mut table = transaction.open_table(VIEWS)?;
                    let saved = table.get(pid.as_str())?.and_then(|r| decode(r.value()));
                    if saved.is_some_and(|saved| saved.entries_seen >= view.entries_seen) {
                        return Ok(());
                    }
                    table.insert(pid.as_str(), encode(&view).as_slice())?;
                }
                transaction.commit()?;
                Ok(())
            })
            .await
            .map_err(|error| StoreError::Unavailable(format!("view task failed: {error}")))?
        })
    }
}

/// The one place a view becomes a record (and is to be sealed, once entries are).
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

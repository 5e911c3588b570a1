//! The MongoDB backend's saved views, shared by every instance on the database.
//!
//! Collection `views`, one document per process:
//!
//! ```text
//! { _id:          "<pid>",
//!   entries_seen: <Int64>,     // the last entry the view has folded in
//!   view:         <Binary> }   // the view's bytes, sealed when the process's entries are
//! ```
//!
//! Saving is one upsert whose filter only matches a view that reaches less far, so a slower
//! instance cannot move a view back: when a further one is stored, the upsert meets it on the
//! unique `_id` and gives way. A view larger than [`MAX_VIEW_BYTES`] is not saved (MongoDB
//! documents end at 16 MiB); it is then folded from the last one saved.
//!
//! The process's keys come from its process document, as for entries (the unwrapped key is
//! cached, see `sealing`): a read fetches it beside the view, at the same time, and a save reads
//! it first, to seal the view (`store::views`) or, for an erased process, to save nothing.
//!
//! Erasure deletes the view document after the update that destroys the key has succeeded, so
//! that an erasure that fails leaves the process as it was, and a save that comes after finds
//! the process erased and stores nothing. A crash (or a failed delete) between the two leaves a
//! view sealed under a key that no longer exists, which cannot be opened (reads treat it as
//! absent); erasing again deletes it. A save that read the key just before the erasure can
//! likewise store such a view after the delete: unreadable for the same reason.

use futures::future::BoxFuture;
use mongodb::bson::{doc, Bson, Document};

use super::collections::{classify, is_duplicate_key, timed_out, Collections};
use super::documents::binary;
use super::MongoStore;
use crate::store::{views, SavedView, StoreError};

const VIEWS: &str = "views";
/// Larger views are kept out of the database.
pub(super) const MAX_VIEW_BYTES: usize = 15 << 20;

impl Collections {
    async fn saved_view(&self, pid: &str) -> Result<Option<SavedView>, StoreError> {
        let views = self.database.collection::<Document>(VIEWS);
        let (process, found) = tokio::try_join!(
            self.read_process(pid),
            self.bounded("reading a saved view", views.find_one(doc! { "_id": pid }))
        )?;
        let (Some(process), Some(stored)) = (process, found.as_ref().and_then(decode)) else {
            return Ok(None);
        };
        let keys = self.sealing.entry_keys(pid, &process.decode()?.1.keys)?;
        Ok(views::open(&keys, pid, stored))
    }

    async fn save_view(&self, pid: &str, view: SavedView) -> Result<(), StoreError> {
        if view.bytes.len() > MAX_VIEW_BYTES {
            return Ok(());
        }
        let Some(process) = self.read_process(pid).await? else {
            return Ok(());
        };
        let keys = self.sealing.entry_keys(pid, &process.decode()?.1.keys)?;
        let Some(sealed) = views::seal(&self.sealing, &keys, pid, view) else {
            return Ok(());
        };
        let (entries_seen, stored) = encode(sealed);
        let views = self.database.collection::<Document>(VIEWS);
        let update = views
            .update_one(
                doc! { "_id": pid, "entries_seen": { "$lt": entries_seen } },
                doc! { "$set": { "entries_seen": entries_seen, "view": stored } },
            )
            .upsert(true);
        match tokio::time::timeout(self.timeout, update).await {
            Err(_) => Err(timed_out(self.timeout, "saving a view")),
            Ok(Ok(_)) => Ok(()),
            // A view that reaches as far or further is there already.
            Ok(Err(error)) if is_duplicate_key(&error) => Ok(()),
            Ok(Err(error)) => Err(classify(error)),
        }
    }

    /// Deletes the saved view of `pid`: it was erased.
    pub(super) async fn delete_view(&self, pid: &str) -> Result<(), StoreError> {
        self.bounded(
            "deleting an erased process's view",
            self.database
                .collection::<Document>(VIEWS)
                .delete_one(doc! { "_id": pid }),
        )
        .await?;
        Ok(())
    }
}

/// The one place a view (sealed by `store::views` when the process's entries are) becomes what
/// is stored.
fn encode(view: SavedView) -> (i64, Bson) {
    let entries_seen = i64::try_from(view.entries_seen).unwrap_or(i64::MAX);
    (entries_seen, Bson::Binary(binary(view.bytes)))
}

/// A stored document as a view; `None` when it does not have the shape (it is then folded again).
fn decode(document: &Document) -> Option<SavedView> {
    let entries_seen = u64::try_from(document.get_i64("entries_seen").ok()?).ok()?;
    let bytes = document.get_binary_generic("view").ok()?.clone();
    Some(SavedView {
        entries_seen,
        bytes,
    })
}

impl MongoStore {
    pub(super) fn read_saved_view<'a>(
        &'a self,
        pid: &'a str,
    ) -> BoxFuture<'a, Result<Option<SavedView>, StoreError>> {
        Box::pin(self.collections.saved_view(pid))
    }

    pub(super) fn write_saved_view<'a>(
        &'a self,
        pid: &'a str,
        view: SavedView,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.collections.save_view(pid, view))
    }
}

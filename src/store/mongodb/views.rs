//! The MongoDB backend's saved views, shared by every instance on the database.
//!
//! Collection `views`, one document per process:
//!
//! ```text
//! { _id:          "<pid>",
//!   entries_seen: <Int64>,     // the last entry the view has folded in
//!   view:         <Binary> }   // the view's bytes
//! ```
//!
//! Saving is one upsert whose filter only matches a view that reaches less far, so a slower
//! instance cannot move a view back: when a further one is stored, the upsert meets it on the
//! unique `_id` and gives way. A view larger than [`MAX_VIEW_BYTES`] is not saved (MongoDB
//! documents end at 16 MiB); it is then folded from the last one saved.

use futures::future::BoxFuture;
use mongodb::bson::{doc, Bson, Document};

use super::collections::{classify, is_duplicate_key, timed_out, Collections};
use super::documents::binary;
use super::MongoStore;
use crate::store::{SavedView, StoreError};

const VIEWS: &str = "views";
/// Larger views are kept out of the database.
pub(super) const MAX_VIEW_BYTES: usize = 15 << 20;

impl Collections {
    async fn saved_view(&self, pid: &str) -> Result<Option<SavedView>, StoreError> {
        let found = self
            .bounded(
                "reading a saved view",
                self.database
                    .collection::<Document>(VIEWS)
                    .find_one(doc! { "_id": pid }),
            )
            .await?;
        Ok(found.as_ref().and_then(decode))
    }

    async fn save_view(&self, pid: &str, view: SavedView) -> Result<(), StoreError> {
        if view.bytes.len() > MAX_VIEW_BYTES {
            return Ok(());
        }
        let (entries_seen, stored) = encode(view);
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
}

/// The one place a view becomes what is stored (and is to be sealed, once entries are).
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

//! The MongoDB backend's usage counters, shared by every instance on the database.
//!
//! Collection `usage`, one document per connector and window:
//!
//! ```text
//! { _id:        "<window start, unix ms>:<connector id>",   // the number cannot contain ':'
//!   processes:  <Int64>,
//!   bytes:      <Int64>,
//!   expires_at: <Date> }       // the end of the next window: a TTL index removes it then
//! ```
//!
//! A sync costs two round trips however many connectors it carries: one `update` command with an
//! upserting `$inc` per connector that used something, then one `find` for the totals. Two
//! instances upserting the same new document at once can meet on the unique `_id`; the loser
//! finds the document there when it repeats its statement, which is why a failed `update` is
//! tried once more.

use futures::future::BoxFuture;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

use super::collections::{Collections, DUPLICATE_KEY};
use super::MongoStore;
use crate::store::{StoreError, Usage, UsageStore};

const USAGE: &str = "usage";

impl Collections {
    /// The TTL index that removes the counters of past windows.
    pub(super) async fn create_usage_index(&self) -> Result<(), StoreError> {
        let index = IndexModel::builder()
            .keys(doc! { "expires_at": 1 })
            .options(
                IndexOptions::builder()
                    .name("expires_at".to_owned())
                    .expire_after(std::time::Duration::ZERO)
                    .build(),
            )
            .build();
        self.bounded(
            "creating the usage index",
            self.database
                .collection::<Document>(USAGE)
                .create_index(index),
        )
        .await?;
        Ok(())
    }

    async fn add_usage(
        &self,
        window_start_ms: i64,
        window_ms: i64,
        amounts: &[(String, Usage)],
    ) -> Result<Vec<Usage>, StoreError> {
        let key = |connector: &str| format!("{window_start_ms}:{connector}");
        let expires_at = DateTime::from_millis(window_start_ms.saturating_add(2 * window_ms));
        let updates: Vec<Document> = amounts
            .iter()
            .filter(|(_, amount)| !amount.is_zero())
            .map(|(connector, amount)| {
                doc! {
                    "q": { "_id": key(connector) },
                    "u": {
                        "$inc": { "processes": int64(amount.processes), "bytes": int64(amount.bytes) },
                        "$setOnInsert": { "expires_at": expires_at },
                    },
                    "upsert": true,
                }
            })
            .collect();
        if !updates.is_empty() {
            self.increment(updates).await?;
        }
        let ids: Vec<String> = amounts
            .iter()
            .map(|(connector, _)| key(connector))
            .collect();
        let found: Vec<Document> = self
            .bounded("reading usage counters", async {
                self.database
                    .collection::<Document>(USAGE)
                    .find(doc! { "_id": { "$in": &ids } })
                    .max_time(self.timeout)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        let totals: std::collections::HashMap<&str, Usage> = found
            .iter()
            .filter_map(|document| {
                let id = document.get_str("_id").ok()?;
                Some((
                    id,
                    Usage {
                        processes: count(document.get("processes")),
                        bytes: count(document.get("bytes")),
                    },
                ))
            })
            .collect();
        Ok(ids
            .iter()
            .map(|id| totals.get(id.as_str()).copied().unwrap_or_default())
            .collect())
    }

    /// Runs the `$inc` statements; those that lost an upsert race run once more.
    async fn increment(&self, mut updates: Vec<Document>) -> Result<(), StoreError> {
        let write_concern =
            mongodb::bson::serialize_to_document(&self.write_concern).map_err(|error| {
                StoreError::Unavailable(format!("the write concern does not encode: {error}"))
            })?;
        for attempt in 0..2 {
            let command = doc! {
                "update": USAGE,
                "updates": &updates,
                "ordered": false,
                "writeConcern": write_concern.clone(),
            };
            let reply = self
                .bounded(
                    "adding to usage counters",
                    self.database.run_command(command),
                )
                .await?;
            if let Ok(error) = reply.get_document("writeConcernError") {
                return Err(StoreError::Unavailable(format!(
                    "MongoDB added to usage counters but not as durably as asked: {error}"
                )));
            }
            let errors: Vec<&Document> = reply
                .get_array("writeErrors")
                .map(|errors| errors.iter().filter_map(Bson::as_document).collect())
                .unwrap_or_default();
            let Some(first) = errors.first() else {
                return Ok(());
            };
            let lost_races = errors
                .iter()
                .all(|error| error.get_i32("code").ok() == Some(DUPLICATE_KEY));
            if !lost_races || attempt > 0 {
                return Err(StoreError::Unavailable(format!(
                    "MongoDB refused to add to usage counters: {first}"
                )));
            }
            // The other statements were applied and must not run again.
            updates = errors
                .iter()
                .filter_map(|error| usize::try_from(error.get_i32("index").ok()?).ok())
                .filter_map(|index| updates.get(index).cloned())
                .collect();
        }
        Ok(())
    }
}

impl UsageStore for MongoStore {
    fn add_usage<'a>(
        &'a self,
        window_start_ms: i64,
        window_ms: i64,
        amounts: &'a [(String, Usage)],
    ) -> BoxFuture<'a, Result<Vec<Usage>, StoreError>> {
        Box::pin(
            self.collections
                .add_usage(window_start_ms, window_ms, amounts),
        )
    }
}

fn int64(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A counter as stored; anything else (which only an intruder could have written) counts as 0.
fn count(value: Option<&Bson>) -> u64 {
    match value {
        Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

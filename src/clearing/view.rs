//! `ids:QueryMessage` with `ch-ids-view`: a page of a process's transfers or contracts, as
//! `understand` derives them from its entries. Only an owner of the process may read it.
//!
//! The view is derived state with a watermark (the last sequence it has folded in), not a
//! second write on the log path: an append stays exactly what it was (its receipt cannot depend
//! on our parser, and a log costs nothing more), and a query folds only the entries that
//! arrived since the view it starts from. That view is the one this clearing house folded last
//! (kept in memory for at most [`CACHED_VIEWS`] processes and [`CACHED_RECORDS`] transfer and
//! contract records in all, about 100 bytes each), else the one saved in the store, else an
//! empty one. Folding reads [`FOLD_BATCH`] entries at a time, so at most that many payloads are
//! in memory, and runs on the blocking pool, since a batch of large payloads costs milliseconds.
//! The view is saved again once it has advanced [`SAVE_EVERY`] entries past the saved one, so a
//! restart or another instance on the same MongoDB folds at most that many entries more; the
//! save runs after the reply, one at a time (a query that finds one running leaves saving to a
//! later query), so neither its encoding nor its write adds to a query's latency.
//! Entries never change once appended, so any instance's view of a process is the fold of the
//! same entries, and a saved view can only be replaced by one that reaches further.
//!
//! The saved view of an encrypted process is sealed under its key (see `store::views`). An
//! erased process's view is empty, as its entries' content is withheld: the reply has no
//! transfers or contracts and `"erased": true`, as the entries' query documents do, and nothing
//! is folded. Erasing drops the process's view from memory here and from the store; another
//! instance on the same MongoDB reads the erasure in the process record its query reads first,
//! so it answers the empty view too (its memory drops the old view when it is evicted).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::Value;

use super::error::ClearingError;
use super::request::{Caller, Outcome, ReplyKind};
use super::ClearingHouse;
use crate::ids::{compact_json, page_extra_headers, Pid, QueryParams, ViewKind};
use crate::store::{ProcessContent, ProcessStore, SavedView, StoreError};
use crate::understand::{ProcessView, ViewPage};

/// Processes whose latest view is kept in memory.
pub(crate) const CACHED_VIEWS: usize = 64;
/// Records (transfers, contracts and their events) the cached views may hold in all.
pub(crate) const CACHED_RECORDS: usize = 1_000_000;
/// Entries read per store call while folding.
pub(crate) const FOLD_BATCH: usize = 16;
/// A view is saved once it reaches this many entries past the saved one.
pub(crate) const SAVE_EVERY: u64 = 256;

/// The views folded last, per process, with how far the saved copy reaches.
#[derive(Default)]
pub struct ViewCache {
    views: Mutex<CachedViews>,
    /// Set while a view is being saved: one save at a time, so that saves cannot pile up.
    saving: Arc<AtomicBool>,
}

#[derive(Default)]
struct CachedViews {
    by_pid: HashMap<String, (Arc<ProcessView>, u64)>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<String>,
    /// The records of every cached view.
    records: usize,
}

impl ViewCache {
    /// Whether this caller may save a view now (and must release [`Self::saving`] after).
    fn start_saving(&self) -> bool {
        !self.saving.swap(true, Ordering::AcqRel)
    }

    fn saving(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.saving)
    }

    fn take(&self, pid: &str) -> Option<(Arc<ProcessView>, u64)> {
        let mut views = self
            .views
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let taken = views.by_pid.remove(pid)?;
        views.order.retain(|cached| cached != pid);
        views.records -= taken.0.records();
        Some(taken)
    }

    /// Drops the view of `pid`: it was erased.
    pub(super) fn forget(&self, pid: &str) {
        self.take(pid);
    }

    fn get(&self, pid: &str) -> Option<(Arc<ProcessView>, u64)> {
        let views = self
            .views
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        views.by_pid.get(pid).cloned()
    }

    fn put(&self, pid: &str, view: Arc<ProcessView>, saved: u64) {
        let mut views = self
            .views
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let CachedViews {
            by_pid,
            order,
            records,
        } = &mut *views;
        *records += view.records();
        match by_pid.insert(pid.to_owned(), (view, saved)) {
            Some((replaced, _)) => *records -= replaced.records(),
            None => order.push_back(pid.to_owned()),
        }
        while order.len() > CACHED_VIEWS || (*records > CACHED_RECORDS && order.len() > 1) {
            let Some(oldest) = order.pop_front() else {
                break;
            };
            if let Some((evicted, _)) = by_pid.remove(&oldest) {
                *records -= evicted.records();
            }
        }
    }
}

impl ClearingHouse {
    pub(super) async fn query_view(
        &self,
        caller: &Caller<'_>,
        pid: Pid,
        view: ViewKind,
        spec: QueryParams,
    ) -> Result<Outcome, ClearingError> {
        let Some(info) = self.store.process_info(pid.as_str()).await? else {
            return Err(ClearingError::NoSuchProcess(pid));
        };
        if !info.process.owners.contains(caller.client_id()) {
            return Err(ClearingError::NotAnOwner(pid));
        }
        let erased = matches!(info.process.content, ProcessContent::Erased(_));
        let folded = if erased {
            Arc::new(ProcessView::default())
        } else {
            current_view(&self.store, &self.views, pid.as_str(), info.head.sequence).await?
        };
        let mut reply = folded.render(ViewPage {
            kind: view,
            page: spec.page,
            size: spec.size,
        });
        let total = reply.get("total").and_then(Value::as_u64).unwrap_or(0);
        if let Some(object) = reply.as_object_mut() {
            object.insert("pid".to_owned(), Value::from(pid.as_str()));
            if erased {
                object.insert("erased".to_owned(), Value::Bool(true));
            }
        }
        Ok(Outcome {
            kind: ReplyKind::Result,
            payload: Bytes::from(compact_json(&reply)),
            extra_headers: page_extra_headers(pid.as_str(), &spec, total),
        })
    }
}

/// The view of `pid` up to entry `head`: the latest one there is, with what came since folded in.
/// (Public for the view benchmark, `benches/view.rs`.)
pub async fn current_view(
    store: &Arc<dyn ProcessStore>,
    cache: &ViewCache,
    pid: &str,
    head: u64,
) -> Result<Arc<ProcessView>, StoreError> {
    if let Some((view, _)) = cache.get(pid) {
        if view.entries_seen() >= head {
            return Ok(view);
        }
    }
    // Taken out of the cache while it is folded, so that folding does not copy it (unless a
    // query still renders it); a query meanwhile starts from the saved view.
    let (view, saved) = match cache.take(pid) {
        Some(cached) => cached,
        None => {
            let view = saved_view(store.as_ref(), pid).await?;
            // The store holds a view this far (or none: 0).
            let saved = view.entries_seen();
            (Arc::new(view), saved)
        }
    };
    let mut folding = Arc::unwrap_or_clone(view);
    while folding.entries_seen() < head {
        let batch = store
            .entries_from(pid, folding.entries_seen() + 1, FOLD_BATCH)
            .await?;
        if batch.is_empty() {
            break;
        }
        folding = tokio::task::spawn_blocking(move || {
            batch.iter().for_each(|entry| folding.apply(entry));
            folding
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("folding a view failed: {error}")))?;
    }
    let view = Arc::new(folding);
    let saved = if view.entries_seen() >= saved + SAVE_EVERY && cache.start_saving() {
        save_in_background(Arc::clone(store), cache.saving(), pid, Arc::clone(&view));
        view.entries_seen()
    } else {
        saved
    };
    cache.put(pid, Arc::clone(&view), saved);
    Ok(view)
}

/// The view saved in the store, or an empty one when there is none (or it does not decode).
async fn saved_view(store: &dyn ProcessStore, pid: &str) -> Result<ProcessView, StoreError> {
    let Some(stored) = store.saved_view(pid).await? else {
        return Ok(ProcessView::default());
    };
    let decoded = tokio::task::spawn_blocking(move || {
        ProcessView::decode(&stored.bytes).filter(|view| view.entries_seen() == stored.entries_seen)
    })
    .await
    .map_err(|error| StoreError::Unavailable(format!("decoding a view failed: {error}")))?;
    Ok(decoded.unwrap_or_default())
}

/// Saves `view` off the query path; `saving` is released when done. A failed save only costs
/// a longer fold later, so it is logged, not returned.
fn save_in_background(
    store: Arc<dyn ProcessStore>,
    saving: Arc<AtomicBool>,
    pid: &str,
    view: Arc<ProcessView>,
) {
    let pid = pid.to_owned();
    tokio::spawn(async move {
        let entries_seen = view.entries_seen();
        let encoded = tokio::task::spawn_blocking(move || view.encode()).await;
        let result = match encoded {
            Ok(bytes) => {
                store
                    .save_view(
                        &pid,
                        SavedView {
                            entries_seen,
                            bytes,
                        },
                    )
                    .await
            }
            Err(error) => Err(StoreError::Unavailable(error.to_string())),
        };
        if let Err(error) = result {
            tracing::warn!(pid, %error, "saving a process view failed; it is folded again later");
        }
        saving.store(false, Ordering::Release);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_the_latest_views_within_its_bounds() {
        let cache = ViewCache::default();
        for n in 0..CACHED_VIEWS + 5 {
            cache.put(&format!("p{n}"), Arc::new(ProcessView::default()), 0);
        }
        assert!(cache.get("p0").is_none());
        assert!(cache.get(&format!("p{}", CACHED_VIEWS + 4)).is_some());
        let views = cache.views.lock().unwrap();
        assert_eq!(views.by_pid.len(), CACHED_VIEWS);
        assert_eq!(views.order.len(), CACHED_VIEWS);
    }
}

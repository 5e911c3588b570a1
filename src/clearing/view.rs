//! `ids:QueryMessage` with `ch-ids-view`: a page of a process's transfers or contracts, as
//! `understand` derives them from its entries. Only an owner of the process may read it.
//!
//! The view is derived state with a watermark (the last sequence it has folded in), not a
//! second write on the log path: an append stays exactly what it was (its receipt cannot depend
//! on our parser, and a log costs nothing more), and a query folds only the entries that
//! arrived since the view it starts from. That view is the one this clearing house folded last
//! (kept in memory for [`CACHED_VIEWS`] processes), else the one saved in the store, else an
//! empty one. Folding reads [`FOLD_BATCH`] entries at a time, so at most that many payloads are
//! in memory, and runs on the blocking pool, since a batch of large payloads costs milliseconds.
//! The view is saved again once it has advanced [`SAVE_EVERY`] entries past the saved one, so a
//! restart or another instance on the same MongoDB folds at most that many entries more.
//! Entries never change once appended, so any instance's view of a process is the fold of the
//! same entries, and a saved view can only be replaced by one that reaches further.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::Value;

use super::error::ClearingError;
use super::request::{Caller, Outcome, ReplyKind};
use super::ClearingHouse;
use crate::ids::{compact_json, page_extra_headers, Pid, QueryParams, ViewKind};
use crate::store::{ProcessStore, SavedView, StoreError};
use crate::understand::{ProcessView, ViewPage};

/// Processes whose latest view is kept in memory.
pub(crate) const CACHED_VIEWS: usize = 64;
/// Entries read per store call while folding.
pub(crate) const FOLD_BATCH: usize = 16;
/// A view is saved once it reaches this many entries past the saved one.
pub(crate) const SAVE_EVERY: u64 = 256;

/// The views folded last, per process, with how far the saved copy reaches.
#[derive(Default)]
pub struct ViewCache {
    views: Mutex<CachedViews>,
}

#[derive(Default)]
struct CachedViews {
    by_pid: HashMap<String, (Arc<ProcessView>, u64)>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<String>,
}

impl ViewCache {
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
        let CachedViews { by_pid, order } = &mut *views;
        if by_pid.insert(pid.to_owned(), (view, saved)).is_none() {
            order.push_back(pid.to_owned());
            while order.len() > CACHED_VIEWS {
                if let Some(oldest) = order.pop_front() {
                    by_pid.remove(&oldest);
                }
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
        let folded =
            current_view(&*self.store, &self.views, pid.as_str(), info.head.sequence).await?;
        let mut reply = folded.render(ViewPage {
            kind: view,
            page: spec.page,
            size: spec.size,
        });
        let total = reply.get("total").and_then(Value::as_u64).unwrap_or(0);
        if let Some(object) = reply.as_object_mut() {
            object.insert("pid".to_owned(), Value::from(pid.as_str()));
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
    store: &dyn ProcessStore,
    cache: &ViewCache,
    pid: &str,
    head: u64,
) -> Result<Arc<ProcessView>, StoreError> {
    let (mut view, mut saved) = match cache.get(pid) {
        Some(cached) => cached,
        None => match store.saved_view(pid).await? {
            Some(stored) => match ProcessView::decode(&stored.bytes) {
                Some(view) if view.entries_seen() == stored.entries_seen => {
                    (Arc::new(view), stored.entries_seen)
                }
                _ => (Arc::new(ProcessView::default()), 0),
            },
            None => (Arc::new(ProcessView::default()), 0),
        },
    };
    let started_at = view.entries_seen();
    while view.entries_seen() < head {
        let batch = store
            .entries_from(pid, view.entries_seen() + 1, FOLD_BATCH)
            .await?;
        if batch.is_empty() {
            break;
        }
        let mut folding = Arc::unwrap_or_clone(view);
        view = tokio::task::spawn_blocking(move || {
            batch.iter().for_each(|entry| folding.apply(entry));
            Arc::new(folding)
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("folding a view failed: {error}")))?;
    }
    if view.entries_seen() >= saved + SAVE_EVERY {
        let to_save = Arc::clone(&view);
        let bytes = tokio::task::spawn_blocking(move || to_save.encode())
            .await
            .map_err(|error| StoreError::Unavailable(format!("encoding a view failed: {error}")))?;
        store
            .save_view(
                pid,
                SavedView {
                    entries_seen: view.entries_seen(),
                    bytes,
                },
            )
            .await?;
        saved = view.entries_seen();
    }
    if view.entries_seen() != started_at || cache.get(pid).is_none() {
        cache.put(pid, Arc::clone(&view), saved);
    }
    Ok(view)
}

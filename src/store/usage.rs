//! Counters of what each connector made the clearing house store in a quota window: processes
//! created and payload bytes logged.
//!
//! The quotas (`crate::clearing::quota`) count locally on every request and only meet the store
//! here, every `quotas.sync_interval_ms`, to add what this instance counted and learn what all
//! instances on the same database counted together. That keeps the store off the request path
//! while several instances still share one quota, within what they admit between two syncs.
//!
//! Windows are fixed and aligned to the unix epoch (a `window_s` of 86400 is the UTC day), so
//! every instance agrees on which window a request falls into without talking to the others.

use futures::future::BoxFuture;

use super::StoreError;

/// What one connector used in one window, or an amount to add to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub(crate) processes: u64,
    pub(crate) bytes: u64,
}

impl Usage {
    pub(crate) fn is_zero(&self) -> bool {
        self.processes == 0 && self.bytes == 0
    }

    pub(crate) fn plus(self, other: Usage) -> Usage {
        Usage {
            processes: self.processes.saturating_add(other.processes),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

/// The shared usage counters of a backend.
pub trait UsageStore: Send + Sync + 'static {
    /// Adds each connector's amount to its counters of the window that starts at
    /// `window_start_ms` and returns each connector's totals after that, in the order asked.
    /// An amount of zero only reads. Counters of earlier windows may be forgotten.
    fn add_usage<'a>(
        &'a self,
        window_start_ms: i64,
        window_ms: i64,
        amounts: &'a [(String, Usage)],
    ) -> BoxFuture<'a, Result<Vec<Usage>, StoreError>>;
}

//! The processes that log and query requests look up, kept in memory between their changes.
//!
//! Every log and query begins with [`ProcessStore::process`](crate::store::ProcessStore::process):
//! who owns the process, and whether it was erased. Read from redb, that is a read transaction
//! per request, about 2% of the server's CPU per receipt at 64 connections (BENCHMARKS.md), for
//! a record that almost never changes: a process's owners and content change only through the
//! writer thread (an owner change, an erasure). So the store keeps what it read, and the writer
//! forgets a process once a change to it has committed, before it answers the caller that asked
//! for the change; from then on, a lookup reads the table again.
//!
//! The one race is a lookup that read the table before a change committed and puts what it read
//! in the cache after the writer forgot it. Every forget first counts a change, and a lookup
//! keeps what it read only if no change was counted since before its read began. Inserting and
//! forgetting hold the same lock, so an insert either precedes the forget (which then removes
//! it) or sees the count.
//!
//! Bounded: a peer that touches many processes (each within its process quota) empties the
//! cache now and then instead of growing it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::store::Process;

/// Processes kept at most; beyond it, the cache starts over. A process's record is a few hundred
/// bytes, so this holds a few MiB.
const CAPACITY: usize = 8192;

#[derive(Default)]
pub(super) struct ProcessCache {
    processes: Mutex<HashMap<String, Process>>,
    /// Changes forgotten so far.
    changes: AtomicU64,
}

impl ProcessCache {
    pub(super) fn get(&self, pid: &str) -> Option<Process> {
        self.lock().get(pid).cloned()
    }

    /// The count to give [`Self::keep`] for a read that begins now.
    pub(super) fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Keeps `process`, read in a transaction begun after [`Self::changes`] returned `since`,
    /// unless a change has been forgotten since.
    pub(super) fn keep(&self, since: u64, process: &Process) {
        let mut processes = self.lock();
        if self.changes.load(Ordering::SeqCst) != since {
            return;
        }
        if processes.len() >= CAPACITY {
            processes.clear();
        }
        processes.insert(process.pid.clone(), process.clone());
    }

    /// Forgets `pid`, whose owners or content a committed write has just changed.
    pub(super) fn forget(&self, pid: &str) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.lock().remove(pid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Process>> {
        // A panic while holding the lock cannot leave the map half-changed in a way that
        // matters: at worst a process is missing, and is read again.
        self.processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::store::ProcessContent;

    fn process(pid: &str, owner: &str) -> Process {
        Process {
            pid: pid.to_owned(),
            owners: BTreeSet::from([owner.to_owned()]),
            created_at_ms: 1,
            content: ProcessContent::Plaintext,
        }
    }

    #[test]
    fn a_read_that_began_before_a_change_is_not_kept() {
        let cache = ProcessCache::default();
        let since = cache.changes();
        cache.forget("p");
        cache.keep(since, &process("p", "old-owner"));
        assert_eq!(cache.get("p"), None);

        let since = cache.changes();
        cache.keep(since, &process("p", "new-owner"));
        assert_eq!(cache.get("p"), Some(process("p", "new-owner")));
    }

    #[test]
    fn a_forgotten_process_is_read_again() {
        let cache = ProcessCache::default();
        cache.keep(cache.changes(), &process("p", "a"));
        cache.keep(cache.changes(), &process("q", "a"));
        cache.forget("p");
        assert_eq!(cache.get("p"), None);
        assert_eq!(cache.get("q"), Some(process("q", "a")));
    }

    #[test]
    fn the_cache_starts_over_when_full() {
        let cache = ProcessCache::default();
        for index in 0..CAPACITY {
            cache.keep(cache.changes(), &process(&format!("p{index}"), "a"));
        }
        assert!(cache.get("p0").is_some());
        cache.keep(cache.changes(), &process("one-more", "a"));
        assert_eq!(cache.get("p0"), None);
        assert!(cache.get("one-more").is_some());
        assert_eq!(cache.lock().len(), 1);
    }
}

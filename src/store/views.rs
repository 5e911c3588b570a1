//! Derived views of a process, saved beside its entries: opaque bytes and the sequence they
//! reach.
//!
//! The clearing house derives a view (see `understand`) by folding a process's entries in
//! order, and saves the fold so that the next query only folds the entries that arrived since.
//! The store neither reads nor checks the bytes: a view is derived, so a lost or stale one costs
//! only a fold of the entries after it, and [`ProcessStore::save_view`](super::ProcessStore::save_view)
//! keeps whichever saved view reaches further, so two clearing houses folding the same process
//! at once cannot move it back. Each backend turns a view into what it stores in one function
//! (`embedded::views`, `mongodb::views`): the place where it is to be sealed with the process's
//! key once entries are, since a view repeats what the entries say.

/// A view as saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedView {
    /// The last entry the view has folded in.
    pub entries_seen: u64,
    /// The view, as its deriver encoded it.
    pub bytes: Vec<u8>,
}

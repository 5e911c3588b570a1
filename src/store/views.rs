//! Derived views of a process, saved beside its entries: opaque bytes and the sequence they
//! reach.
//!
//! The clearing house derives a view (see `understand`) by folding a process's entries in
//! order, and saves the fold so that the next query only folds the entries that arrived since.
//! The store does not interpret the bytes: a view is derived, so a lost or stale one costs only
//! a fold of the entries after it, and [`ProcessStore::save_view`](super::ProcessStore::save_view)
//! keeps whichever saved view reaches further, so two clearing houses folding the same process
//! at once cannot move it back.
//!
//! A view repeats what the entries say (transfer and agreement ids, connectors), so it is kept
//! as they are: [`seal`] and [`open`] are the one place a view meets the process's keys, which
//! each backend reads as it does for entries. A view of an encrypted process is sealed with its
//! content key (see `sealing`, field `view`), bound to the pid and to the sequence it reaches:
//! moved to another process or passed off as a later view, it does not open, and a view that
//! does not open is absent (the entries are folded again), never an error. Only the sequence
//! reached stays in the clear, as the process head's does. A plaintext process's view is kept
//! in the clear. An erased process has no view: erasure deletes it, and none is saved after.

use super::sealing::{self, EntryKeys, Field, Sealing};

/// A view as saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedView {
    /// The last entry the view has folded in.
    pub entries_seen: u64,
    /// The view, as its deriver encoded it.
    pub bytes: Vec<u8>,
}

/// `view` of `pid` as it is to be stored, or `None` if the process is erased (nothing is stored).
pub(crate) fn seal(
    sealing: &Sealing,
    keys: &EntryKeys,
    pid: &str,
    view: SavedView,
) -> Option<SavedView> {
    match keys {
        EntryKeys::Plaintext => Some(view),
        EntryKeys::Erased => None,
        EntryKeys::Keys(keys) => Some(SavedView {
            entries_seen: view.entries_seen,
            bytes: keys.seal(
                sealing.random(),
                sealing::view_place(pid, view.entries_seen),
                Field::View,
                &view.bytes,
            ),
        }),
    }
}

/// The view of `pid` stored as `stored`, or `None` if it does not open: the process is erased,
/// or the view was sealed for another process or another sequence, or altered.
pub(crate) fn open(keys: &EntryKeys, pid: &str, stored: SavedView) -> Option<SavedView> {
    match keys {
        EntryKeys::Plaintext => Some(stored),
        EntryKeys::Erased => None,
        EntryKeys::Keys(keys) => Some(SavedView {
            entries_seen: stored.entries_seen,
            bytes: keys.open(
                sealing::view_place(pid, stored.entries_seen),
                Field::View,
                &stored.bytes,
            )?,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::sealing::test_keys;

    fn sealed(pid: &str, entries_seen: u64) -> (EntryKeys, SavedView) {
        let keys = EntryKeys::Keys(Arc::new(test_keys([7; 32])));
        let view = SavedView {
            entries_seen,
            bytes: b"consumerPid urn:uuid:c-1".to_vec(),
        };
        let stored = seal(&Sealing::disabled(), &keys, pid, view).unwrap();
        (keys, stored)
    }

    #[test]
    fn a_sealed_view_opens_where_it_was_sealed_only() {
        let (keys, stored) = sealed("p-1", 256);
        assert!(!stored.bytes.windows(8).any(|window| window == b"urn:uuid"));
        let opened = open(&keys, "p-1", stored.clone()).unwrap();
        assert_eq!(opened.bytes, b"consumerPid urn:uuid:c-1");
        assert_eq!(opened.entries_seen, 256);

        assert_eq!(open(&keys, "p-2", stored.clone()), None, "another process");
        let later = SavedView {
            entries_seen: 512,
            ..stored.clone()
        };
        assert_eq!(
            open(&keys, "p-1", later),
            None,
            "passed off as a later view"
        );
        let mut altered = stored.clone();
        let last = altered.bytes.len() - 1;
        altered.bytes[last] ^= 1;
        assert_eq!(open(&keys, "p-1", altered), None, "altered");
        assert_eq!(open(&EntryKeys::Erased, "p-1", stored), None, "erased");
    }

    #[test]
    fn an_erased_process_saves_no_view_and_a_plaintext_one_its_view_as_is() {
        let view = SavedView {
            entries_seen: 1,
            bytes: b"clear".to_vec(),
        };
        let sealing = Sealing::disabled();
        assert_eq!(seal(&sealing, &EntryKeys::Erased, "p", view.clone()), None);
        assert_eq!(
            seal(&sealing, &EntryKeys::Plaintext, "p", view.clone()),
            Some(view)
        );
    }
}

//! Owner changes: the one way a process's owners change after its creation, and always an
//! entry of the process's own chain, so that auditors see who changed what and when.
//!
//! An owner change is an entry like a logged one (sequence, timestamp, hashes, receipt) whose
//! payload type is [`OWNER_CHANGE_PAYLOAD_TYPE`] and whose payload is
//! `{"previous_owners": [...], "owners": [...], "changed_by": <client id>}`. The backends write
//! the entry and the new owners in one atomic step ([`ProcessStore::change_owners`]). The MongoDB
//! backend can leave such an entry behind as an orphan when its writer dies half way; whoever
//! adopts it then reads the owners from the entry with [`recorded_owners`], which is why the
//! payload type is reserved (the log command refuses it) and the payload is built here.
//!
//! [`ProcessStore::change_owners`]: super::ProcessStore::change_owners

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::{json, Value};

use super::{Entry, NewEntry, PreparedEntry, StoreError};

/// The media type of the entry that records an owner change; reserved for it.
pub const OWNER_CHANGE_PAYLOAD_TYPE: &str = "application/vnd.clearinghouse.owners+json";

/// An owner change as [`ProcessStore::change_owners`](super::ProcessStore::change_owners) takes
/// it: the entry that records it, the owners the caller saw, and the owners to set. Built only
/// by [`OwnerChange::new`], so that the entry always says what the change does.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerChange {
    pub(crate) entry: PreparedEntry,
    pub(crate) previous: BTreeSet<String>,
    pub(crate) owners: BTreeSet<String>,
}

impl OwnerChange {
    /// `changed_by` (an owner) replaces `previous` with `owners` in process `pid`; `header` is
    /// the request's header without tokens, stored with the entry as a log's is.
    pub fn new(
        pid: &str,
        changed_by: &str,
        header: Value,
        previous: BTreeSet<String>,
        owners: BTreeSet<String>,
    ) -> Self {
        let payload = json!({
            "previous_owners": previous,
            "owners": owners,
            "changed_by": changed_by,
        });
        let entry = NewEntry {
            pid: pid.to_owned(),
            client_id: changed_by.to_owned(),
            header,
            payload: Bytes::from(payload.to_string()),
            payload_type: OWNER_CHANGE_PAYLOAD_TYPE.to_owned(),
        };
        Self {
            entry: entry.prepare(),
            previous,
            owners,
        }
    }

    /// The entry that records the change, as its receipt names it.
    pub fn entry(&self) -> &PreparedEntry {
        &self.entry
    }

    /// The change with the document id its backend assigned to its entry.
    pub(crate) fn with_document_id(self, document_id: String) -> Self {
        Self {
            entry: self.entry.with_document_id(document_id),
            ..self
        }
    }
}

/// The owners an entry sets, if it records an owner change.
pub(crate) fn recorded_owners(entry: &Entry) -> Result<Option<BTreeSet<String>>, StoreError> {
    if entry.payload_type != OWNER_CHANGE_PAYLOAD_TYPE {
        return Ok(None);
    }
    let corrupt = || {
        StoreError::Corrupt(format!(
            "entry {}/{} is an owner change without a list of owners",
            entry.pid, entry.sequence
        ))
    };
    let payload: Value = serde_json::from_slice(&entry.payload).map_err(|_| corrupt())?;
    let owners = payload["owners"].as_array().ok_or_else(corrupt)?;
    owners
        .iter()
        .map(|owner| owner.as_str().map(str::to_owned).ok_or_else(corrupt))
        .collect::<Result<BTreeSet<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chain::{self, ChainHead};

    #[test]
    fn the_entry_of_a_change_records_the_owners_it_sets() {
        let set = |ids: &[&str]| {
            ids.iter()
                .map(|id| (*id).to_owned())
                .collect::<BTreeSet<_>>()
        };
        let change = OwnerChange::new(
            "p-1",
            "a",
            json!({"@type": "ids:RequestMessage"}),
            set(&["a"]),
            set(&["b", "a"]),
        )
        .with_document_id("d-1".to_owned());
        let head = ChainHead {
            sequence: 0,
            chain_hash: chain::genesis_hash("p-1"),
        };
        let link = chain::append_link(&head, 0, change.entry(), None).unwrap();
        let entry = change.entry.clone().into_stored(&link, None);
        assert_eq!(recorded_owners(&entry).unwrap(), Some(set(&["a", "b"])));
        let payload: Value = serde_json::from_slice(&entry.payload).unwrap();
        assert_eq!(
            payload,
            json!({"previous_owners": ["a"], "owners": ["a", "b"], "changed_by": "a"})
        );

        let mut logged = entry.clone();
        logged.payload_type = "application/json".into();
        assert_eq!(recorded_owners(&logged).unwrap(), None);
        let mut broken = entry;
        broken.payload = Bytes::from_static(b"{\"owners\": 1}");
        assert!(matches!(
            recorded_owners(&broken),
            Err(StoreError::Corrupt(_))
        ));
    }
}

//! `ch-ids-operation: erase`: an admin erases a process's content for good (a data-protection
//! erasure request), by having the store destroy its data key (see `store::sealing`).
//!
//! Only connectors listed in `admin.identities` may erase, and they need not own the process:
//! erasure is an operator's act on behalf of a data subject, not a participant's. The store
//! records who erased the process and when in the process record, in the same write that
//! destroys the key, and the process-info query, the entries' query documents (`"erased":
//! true`), exports and `verify chain` show it to auditors. The process's saved view, which
//! repeats its content, goes too: the store deletes it after the key, and this clearing house
//! drops it from memory (`view`); a view query then answers an empty view, `"erased": true`.
//! The chain itself is not extended: an erasure entry would have to be written in the clear
//! into an encrypted process, in a second write that a crash could separate from the first.

use bytes::Bytes;
use serde_json::json;

use super::error::ClearingError;
use super::request::{Caller, Outcome, ReplyKind};
use super::ClearingHouse;
use crate::ids::{compact_json, reply_extra_headers, rfc3339_of_ms, Pid};

impl ClearingHouse {
    pub(super) async fn erase(
        &self,
        caller: &Caller<'_>,
        pid: Pid,
    ) -> Result<Outcome, ClearingError> {
        if !self.admins.contains(caller.client_id()) {
            return Err(ClearingError::NotAnAdmin);
        }
        let erasure = self.store.erase(pid.as_str(), caller.client_id()).await?;
        self.views.forget(pid.as_str());
        tracing::warn!(pid = %pid, by = %erasure.by, at_ms = erasure.at_ms, "process erased");
        let payload = json!({
            "pid": pid.as_str(),
            "erasure": { "by": erasure.by, "at": rfc3339_of_ms(erasure.at_ms) },
        });
        Ok(Outcome {
            kind: ReplyKind::Result,
            payload: Bytes::from(compact_json(&payload)),
            extra_headers: reply_extra_headers(pid.as_str()),
        })
    }
}

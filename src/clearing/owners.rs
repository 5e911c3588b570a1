//! A process's owners after its creation: an owner reads the process (`ch-ids-operation: info`)
//! and changes its owners (`ch-ids-operation: set-owners`; see [`crate::ids::command`]).
//!
//! An owner change is an entry of the process's own chain, written in one step with the new
//! owners (see `store::owners`), and answered with a receipt like a logged entry: auditors see
//! in the chain who changed the owners, when, from what to what. The change is decided on the
//! owners the caller was authorized with; the store refuses it if they changed meanwhile, so
//! that a removed owner cannot slip a change in after its removal.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::Value;

use super::error::ClearingError;
use super::request::{Caller, Outcome, ReplyKind};
use super::ClearingHouse;
use crate::ids::{
    compact_json, process_info_payload, reply_extra_headers, Pid, ProcessInfoDocument,
};
use crate::receipt::payload_hash_claim;
use crate::store::{OwnerChange, ProcessContent, StoreError};

impl ClearingHouse {
    pub(super) async fn process_info(
        &self,
        caller: &Caller<'_>,
        pid: Pid,
    ) -> Result<Outcome, ClearingError> {
        let Some(info) = self.store.process_info(pid.as_str()).await? else {
            return Err(ClearingError::NoSuchProcess(pid));
        };
        if !info.process.owners.contains(caller.client_id()) {
            return Err(ClearingError::NotAnOwner(pid));
        }
        let (content, erasure) = match &info.process.content {
            ProcessContent::Plaintext => ("plaintext", None),
            ProcessContent::Encrypted => ("encrypted", None),
            ProcessContent::Erased(erasure) => {
                ("erased", Some((erasure.by.as_str(), erasure.at_ms)))
            }
        };
        let payload = process_info_payload(&ProcessInfoDocument {
            pid: pid.as_str(),
            owners: info.process.owners.iter().map(String::as_str).collect(),
            created_at_ms: info.process.created_at_ms,
            head_sequence: info.head.sequence,
            head_chain_hash: &info.head.chain_hash,
            content,
            erasure,
        });
        Ok(Outcome {
            kind: ReplyKind::Result,
            payload: Bytes::from(compact_json(&payload)),
            extra_headers: reply_extra_headers(pid.as_str()),
        })
    }

    pub(super) async fn set_owners(
        &self,
        caller: &Caller<'_>,
        pid: Pid,
        owners: BTreeSet<String>,
        stored_header: Value,
    ) -> Result<Outcome, ClearingError> {
        let max_owners = self.limits.max_owners;
        if owners.len() > max_owners {
            return Err(ClearingError::TooManyOwners {
                count: owners.len(),
                max: max_owners,
            });
        }
        let Some(process) = self.store.process(pid.as_str()).await? else {
            return Err(ClearingError::NoSuchProcess(pid));
        };
        if !process.owners.contains(caller.client_id()) {
            return Err(ClearingError::NotAnOwner(pid));
        }
        refuse_erased(&process.content, &pid)?;
        let change = OwnerChange::new(
            pid.as_str(),
            caller.client_id(),
            stored_header,
            process.owners,
            owners,
        );
        let size = change.entry().entry().payload.len();
        let reservation = self.quotas.reserve_bytes(caller.client_id(), size as u64)?;
        let payload_hash = payload_hash_claim(change.entry().payload_sha256());
        let entry = self.store.change_owners(change).await?;
        reservation.keep();
        tracing::info!(pid = %pid, by = caller.client_id(), sequence = entry.sequence, "owners changed");
        self.receipt(entry, payload_hash).await
    }
}

/// An erased process takes no more entries; refused before any work, as the store would.
pub(super) fn refuse_erased(content: &ProcessContent, pid: &Pid) -> Result<(), ClearingError> {
    match content {
        ProcessContent::Erased(erasure) => Err(ClearingError::Store(StoreError::Erased {
            pid: pid.to_string(),
            by: erasure.by.clone(),
            at_ms: erasure.at_ms,
        })),
        _ => Ok(()),
    }
}

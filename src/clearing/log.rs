//! `ids:LogMessage`: append an entry to a process and answer with a signed receipt.
//!
//! The receipt is signed only after the store reports the entry durable: a receipt is a promise
//! that the entry exists, and a crash must not be able to break it. Owner changes, which are
//! entries too, get their receipts here as well. The store assigns the entry's document id (a
//! UUID v4) as it appends; the receipt names the one it chose.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::Value;

use super::error::ClearingError;
use super::request::{Caller, Outcome, ReplyKind};
use super::ClearingHouse;
use crate::ids::{push_json_string, reply_extra_headers, Pid};
use crate::receipt::{payload_hash_claim, ReceiptClaims};
use crate::store::{CreateOutcome, Entry, NewEntry};

impl ClearingHouse {
    pub(super) async fn log(
        &self,
        caller: &Caller<'_>,
        pid: Pid,
        payload_type: String,
        payload: Bytes,
        stored_header: Value,
    ) -> Result<Outcome, ClearingError> {
        let size = payload.len();
        let reservation = self.quotas.reserve_bytes(caller.client_id(), size as u64)?;
        self.ensure_owner(&pid, caller.client_id()).await?;
        let entry = NewEntry {
            pid: pid.to_string(),
            client_id: caller.client_id().to_owned(),
            header: stored_header,
            payload,
            payload_type,
        };
        let entry = self
            .offload
            .prepare_entry(entry)
            .await
            .map_err(ClearingError::NotCompleted)?;
        let payload_hash = payload_hash_claim(entry.payload_sha256());
        let entry = self.store.append(entry).await?;
        reservation.keep();
        self.receipt(entry, payload_hash).await
    }

    /// The answer to a stored entry: its signed receipt. `payload_hash` is the receipt's claim
    /// of the entry's payload hash, computed when the entry was prepared.
    pub(super) async fn receipt(
        &self,
        entry: Entry,
        payload_hash: String,
    ) -> Result<Outcome, ClearingError> {
        let pid = entry.pid.clone();
        let claims = ReceiptClaims {
            iss: self.connector_id.clone(),
            iat: time::OffsetDateTime::now_utc().unix_timestamp(),
            process_id: entry.pid,
            document_id: entry.document_id,
            sequence: entry.sequence,
            timestamp: entry.timestamp_ms.div_euclid(1000),
            timestamp_ms: entry.timestamp_ms,
            client_id: entry.client_id,
            payload_hash,
            entry_hash: hex::encode(entry.entry_hash),
            chain_hash: hex::encode(entry.chain_hash),
            clearing_house_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let receipt = self
            .offload
            .sign_receipt(&self.signer, claims)
            .await
            .map_err(ClearingError::ReceiptNotSigned)?;
        super::metering::receipt_signed();
        Ok(Outcome {
            kind: ReplyKind::Processed,
            payload: Bytes::from(receipt_payload(&receipt)),
            extra_headers: reply_extra_headers(&pid),
        })
    }

    /// Logging to an unknown process creates it with the caller as its only owner, which
    /// counts against the caller's process quota like a create.
    async fn ensure_owner(&self, pid: &Pid, client_id: &str) -> Result<(), ClearingError> {
        let process = match self.store.process(pid.as_str()).await? {
            Some(process) => process,
            None => {
                let reservation = self.quotas.reserve_process(client_id)?;
                let owners = BTreeSet::from([client_id.to_owned()]);
                match self.store.create_process(pid.as_str(), &owners).await? {
                    CreateOutcome::Created(process) => {
                        reservation.keep();
                        process
                    }
                    CreateOutcome::Exists(process) => process,
                }
            }
        };
        if !process.owners.contains(client_id) {
            return Err(ClearingError::NotAnOwner(pid.clone()));
        }
        super::owners::refuse_erased(&process.content, pid)
    }
}

/// `{"data": receipt}`, the reference's reply payload, written as text: the same bytes as
/// `compact_json` of that object.
fn receipt_payload(receipt: &str) -> String {
    let mut payload = String::with_capacity(receipt.len() + 12);
    payload.push_str("{\"data\":");
    push_json_string(&mut payload, receipt);
    payload.push('}');
    payload
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ids::compact_json;

    #[test]
    fn the_receipt_payload_is_the_data_object() {
        for receipt in ["eyJ.a.b", "", "odd \"quoted\" \n"] {
            assert_eq!(
                receipt_payload(receipt),
                compact_json(&json!({ "data": receipt }))
            );
        }
    }
}

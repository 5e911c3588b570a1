//! `ids:LogMessage`: append an entry to a process and answer with a signed receipt.
//!
//! The receipt is signed only after the store reports the entry durable: a receipt is a promise
//! that the entry exists, and a crash must not be able to break it.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::json;
use uuid::Uuid;

use super::create::not_authorized;
use super::request::{Outcome, ReplyKind, Request};
use super::{not_completed, store_rejection, ClearingHouse};
use crate::ids::{compact_json, reply_extra_headers, Rejection, RejectionReason};
use crate::receipt::{payload_hash_claim, ReceiptClaims};
use crate::store::{CreateOutcome, NewEntry};

impl ClearingHouse {
    pub(super) async fn log(&self, request: &Request<'_>) -> Result<Outcome, Rejection> {
        let pid = request.params.pid()?;
        let size = request.payload.len();
        if size == 0 {
            return Err(Rejection::with_default_status(
                RejectionReason::BadParameters,
                "the payload to log is empty",
            ));
        }
        if size > self.max_payload {
            return Err(Rejection::new(
                RejectionReason::BadParameters,
                413,
                format!(
                    "the payload of {size} bytes exceeds the limit of {} bytes",
                    self.max_payload
                ),
            ));
        }
        let reservation = self.quotas.reserve_bytes(request.client_id, size as u64)?;
        self.ensure_owner(pid, request.client_id).await?;
        let entry = NewEntry {
            pid: pid.to_owned(),
            document_id: Uuid::new_v4().to_string(),
            client_id: request.client_id.to_owned(),
            header: request.header.stored_form(),
            payload: request.payload.clone(),
            payload_type: request.params.content_type.clone().unwrap_or_default(),
        };
        let entry = self
            .offload
            .prepare_entry(entry)
            .await
            .map_err(not_completed)?;
        let payload_hash = payload_hash_claim(entry.payload_sha256());
        let entry = self.store.append(entry).await.map_err(store_rejection)?;
        reservation.keep();
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
            .map_err(|e| {
                tracing::error!(error = %e, "cannot sign a receipt");
                Rejection::with_default_status(
                    RejectionReason::InternalRecipientError,
                    "the entry was stored but its receipt could not be signed",
                )
            })?;
        super::metering::receipt_signed();
        Ok(Outcome {
            kind: ReplyKind::Processed,
            payload: Bytes::from(compact_json(&json!({ "data": receipt }))),
            extra_headers: reply_extra_headers(pid),
        })
    }

    /// Logging to an unknown process creates it with the caller as its only owner, which
    /// counts against the caller's process quota like a create.
    async fn ensure_owner(&self, pid: &str, client_id: &str) -> Result<(), Rejection> {
        let process = match self.store.process(pid).await.map_err(store_rejection)? {
            Some(process) => process,
            None => {
                let reservation = self.quotas.reserve_process(client_id)?;
                let owners = BTreeSet::from([client_id.to_owned()]);
                match self.store.create_process(pid, &owners).await {
                    Ok(CreateOutcome::Created(process)) => {
                        reservation.keep();
                        process
                    }
                    Ok(CreateOutcome::Exists(process)) => process,
                    Err(e) => return Err(store_rejection(e)),
                }
            }
        };
        if process.owners.contains(client_id) {
            Ok(())
        } else {
            Err(not_authorized(pid))
        }
    }
}

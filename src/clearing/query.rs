//! `ids:QueryMessage`: read one entry by id, or a page of a process's entries.

use bytes::Bytes;
use serde_json::Value;

use super::create::not_authorized;
use super::request::{Outcome, ReplyKind, Request};
use super::{store_rejection, ClearingHouse};
use crate::ids::{
    compact_json, log_document, page_extra_headers, page_payload, reply_extra_headers, LogDocument,
    Rejection, RejectionReason, SortOrder,
};
use crate::store::{Entry, Order, PageQuery};

impl ClearingHouse {
    pub(super) async fn query(&self, request: &Request<'_>) -> Result<Outcome, Rejection> {
        let pid = request.params.pid()?;
        match self.store.process(pid).await.map_err(store_rejection)? {
            None => return Err(not_found(format!("process {pid:?} does not exist"))),
            Some(process) if !process.owners.contains(request.client_id) => {
                return Err(not_authorized(pid))
            }
            Some(_) => {}
        }
        if let Some(id) = request.params.id.as_deref() {
            let entry = self
                .store
                .entry(pid, id)
                .await
                .map_err(store_rejection)?
                .ok_or_else(|| not_found(format!("process {pid:?} has no document {id:?}")))?;
            return Ok(Outcome {
                kind: ReplyKind::Result,
                payload: Bytes::from(compact_json(&entry_document(&entry)?)),
                extra_headers: reply_extra_headers(pid),
            });
        }
        let query = request.params.query()?;
        let page = self
            .store
            .query(&PageQuery {
                pid: pid.to_owned(),
                page: query.page,
                size: query.size,
                order: match query.order {
                    SortOrder::Asc => Order::Asc,
                    SortOrder::Desc => Order::Desc,
                },
                from_ms: query.from_ms,
                to_ms: query.to_ms,
                max_bytes: self.max_reply,
            })
            .await
            .map_err(store_rejection)?;
        let documents = page
            .entries
            .iter()
            .map(entry_document)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Outcome {
            kind: ReplyKind::Result,
            payload: Bytes::from(compact_json(&page_payload(&query, page.total, documents))),
            extra_headers: page_extra_headers(pid, &query, page.total),
        })
    }
}

fn not_found(message: String) -> Rejection {
    Rejection::with_default_status(RejectionReason::NotFound, message)
}

/// A stored entry as the `ids:LogMessage` document a query returns.
pub fn entry_document(entry: &Entry) -> Result<Value, Rejection> {
    log_document(&LogDocument {
        header: &entry.header,
        payload: &entry.payload,
        payload_type: &entry.payload_type,
        document_id: &entry.document_id,
        sequence: entry.sequence,
        timestamp_ms: entry.timestamp_ms,
        client_id: &entry.client_id,
        entry_hash: &entry.entry_hash,
        chain_hash: &entry.chain_hash,
    })
}

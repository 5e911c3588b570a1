//! `ids:QueryMessage`: read one entry by id, or a page of a process's entries. Only an owner of
//! the process may read it.

use bytes::Bytes;
use serde_json::Value;

use super::error::ClearingError;
use super::request::{Caller, Outcome, ReplyKind};
use super::ClearingHouse;
use crate::ids::{
    compact_json, log_document, page_extra_headers, page_payload, reply_extra_headers, LogDocument,
    Pid, QueryParams, Rejection, SortOrder,
};
use crate::store::{Entry, Order, PageQuery, Protection, UnfitEntry};

impl ClearingHouse {
    pub(super) async fn query_one(
        &self,
        caller: &Caller<'_>,
        pid: Pid,
        id: String,
    ) -> Result<Outcome, ClearingError> {
        self.ensure_readable(&pid, caller).await?;
        let Some(entry) = self.store.entry(pid.as_str(), &id).await? else {
            return Err(ClearingError::NoSuchDocument { pid, id });
        };
        Ok(Outcome {
            kind: ReplyKind::Result,
            payload: Bytes::from(compact_json(&entry_document(&entry)?)),
            extra_headers: reply_extra_headers(pid.as_str()),
        })
    }

    pub(super) async fn query_page(
        &self,
        caller: &Caller<'_>,
        pid: Pid,
        spec: QueryParams,
    ) -> Result<Outcome, ClearingError> {
        self.ensure_readable(&pid, caller).await?;
        let page = self
            .store
            .query(&PageQuery {
                pid: pid.to_string(),
                page: spec.page,
                size: spec.size,
                order: match spec.order {
                    SortOrder::Asc => Order::Asc,
                    SortOrder::Desc => Order::Desc,
                },
                from_ms: spec.from_ms,
                to_ms: spec.to_ms,
                max_bytes: self.max_reply,
            })
            .await?;
        let documents = page
            .entries
            .iter()
            .map(entry_document)
            .collect::<Result<Vec<_>, _>>()?;
        let payload = Bytes::from(compact_json(&page_payload(&spec, page.total, documents)));
        // The store counts stored bytes; a binary payload grows by a third as base64. A page
        // of one entry that still does not fit names it: fewer entries would not help.
        if let [entry] = page.entries.as_slice() {
            if payload.len() > self.max_reply {
                return Err(ClearingError::EntryTooLarge {
                    entry: UnfitEntry {
                        sequence: entry.sequence,
                        document_id: entry.document_id.clone(),
                    },
                    max_reply: self.max_reply,
                });
            }
        }
        Ok(Outcome {
            kind: ReplyKind::Result,
            payload,
            extra_headers: page_extra_headers(pid.as_str(), &spec, page.total),
        })
    }

    async fn ensure_readable(&self, pid: &Pid, caller: &Caller<'_>) -> Result<(), ClearingError> {
        match self.store.process(pid.as_str()).await? {
            None => Err(ClearingError::NoSuchProcess(pid.clone())),
            Some(process) if !process.owners.contains(caller.client_id()) => {
                Err(ClearingError::NotAnOwner(pid.clone()))
            }
            Some(_) => Ok(()),
        }
    }
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
        erased: entry.protection == Protection::Erased,
    })
}

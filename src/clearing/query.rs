//! `ids:QueryMessage`: read one entry by id, or a page of a process's entries.

use bytes::Bytes;
use serde_json::Value;

use super::create::not_authorized;
use super::request::{Outcome, ReplyKind, Request};
use super::{store_rejection, ClearingHouse};
use crate::ids::{
    log_document, page_extra_headers, page_payload, reply_extra_headers, LogDocument, Rejection,
    RejectionReason, SortOrder,
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
                payload: json_bytes(&entry_document(&entry)?)?,
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
            payload: json_bytes(&page_payload(&query, page.total, documents))?,
            extra_headers: page_extra_headers(pid, &query, page.total),
        })
    }
}

/// The compact JSON of a reply payload. `serde_json::to_vec` writes straight into one buffer,
/// where `Value::to_string` (its `Display`) passes every fragment through `fmt::Formatter`: that
/// detour was about a fifth of the server's instructions for a 100-entry page under callgrind
/// (see BENCHMARKS.md). Both write the same bytes.
fn json_bytes(value: &Value) -> Result<Bytes, Rejection> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| {
        Rejection::with_default_status(
            RejectionReason::InternalRecipientError,
            format!("cannot serialize the reply: {e}"),
        )
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bytes_are_the_compact_json_to_string_wrote() {
        let value = serde_json::json!({
            "documents": [{"payload": "line\n\"quoted\" \u{7f} \u{1F600}", "sequence": 1}],
            "total": 1_000_000u64,
            "date_from": null,
            "ratio": 0.5,
        });
        let bytes = json_bytes(&value).unwrap();
        assert_eq!(bytes, value.to_string().into_bytes());
    }
}

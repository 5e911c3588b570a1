//! What the clearing house counts, through the `metrics` facade (a no-op until a recorder is
//! installed, as `serve` does for `/metrics`). Names and labels are static strings, so recording
//! costs a lookup, never an allocation per request.
//!
//! - `clearinghouse_messages_total{type, outcome, door}`: `type` is `request`, `log`, `query`,
//!   `unsupported`, `malformed` or `generic`; `outcome` is `ok` or the rejection reason code;
//!   `door` is `idscp2` or `https`, the front door the message came through.
//! - `clearinghouse_request_duration_seconds{type, door}`: from receipt of a message to its reply.
//! - `clearinghouse_store_duration_seconds{operation}`: each store call, wrapped by [`MeteredStore`].
//! - `clearinghouse_receipts_signed_total`.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;

use crate::ids::MessageType;
use crate::store::{
    CreateOutcome, Entry, Erasure, OwnerChange, Page, PageQuery, PreparedEntry, Process,
    ProcessInfo, ProcessStore, RewrapBatch, SavedView, StoreError,
};

pub(super) fn message_type(message_type: &MessageType) -> &'static str {
    match message_type {
        MessageType::Request => "request",
        MessageType::Log => "log",
        MessageType::Query => "query",
        MessageType::Other(_) => "unsupported",
    }
}

/// Counts one message answered through `door` and the time it took.
pub(super) fn message(
    door: &'static str,
    kind: &'static str,
    outcome: &'static str,
    started: Instant,
) {
    metrics::counter!("clearinghouse_messages_total", "type" => kind, "outcome" => outcome, "door" => door)
        .increment(1);
    metrics::histogram!("clearinghouse_request_duration_seconds", "type" => kind, "door" => door)
        .record(started.elapsed().as_secs_f64());
}

pub(super) fn receipt_signed() {
    metrics::counter!("clearinghouse_receipts_signed_total").increment(1);
}

/// Times every call into the store it wraps.
pub(super) struct MeteredStore(pub(crate) Arc<dyn ProcessStore>);

fn timed<'a, T: Send + 'a>(
    operation: &'static str,
    call: impl Future<Output = T> + Send + 'a,
) -> BoxFuture<'a, T> {
    Box::pin(async move {
        let started = Instant::now();
        let result = call.await;
        metrics::histogram!("clearinghouse_store_duration_seconds", "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        result
    })
}

impl ProcessStore for MeteredStore {
    fn create_process(
        &self,
        pid: &str,
        owners: &BTreeSet<String>,
    ) -> BoxFuture<'_, Result<CreateOutcome, StoreError>> {
        timed("create_process", self.0.create_process(pid, owners))
    }

    fn process(&self, pid: &str) -> BoxFuture<'_, Result<Option<Process>, StoreError>> {
        timed("process", self.0.process(pid))
    }

    fn append(&self, entry: PreparedEntry) -> BoxFuture<'_, Result<Entry, StoreError>> {
        timed("append", self.0.append(entry))
    }

    fn process_info(&self, pid: &str) -> BoxFuture<'_, Result<Option<ProcessInfo>, StoreError>> {
        timed("process_info", self.0.process_info(pid))
    }

    fn change_owners(&self, change: OwnerChange) -> BoxFuture<'_, Result<Entry, StoreError>> {
        timed("change_owners", self.0.change_owners(change))
    }

    fn entry(
        &self,
        pid: &str,
        document_id: &str,
    ) -> BoxFuture<'_, Result<Option<Entry>, StoreError>> {
        timed("entry", self.0.entry(pid, document_id))
    }

    fn query(&self, query: &PageQuery) -> BoxFuture<'_, Result<Page, StoreError>> {
        timed("query", self.0.query(query))
    }

    fn processes_of(&self, client_id: &str) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        timed("processes_of", self.0.processes_of(client_id))
    }

    fn entries_from(
        &self,
        pid: &str,
        from_sequence: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Entry>, StoreError>> {
        timed(
            "entries_from",
            self.0.entries_from(pid, from_sequence, limit),
        )
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        timed("ping", self.0.ping())
    }

    fn erase(&self, pid: &str, by: &str) -> BoxFuture<'_, Result<Erasure, StoreError>> {
        timed("erase", self.0.erase(pid, by))
    }

    fn data_key_keks(&self) -> BoxFuture<'_, Result<BTreeSet<String>, StoreError>> {
        timed("data_key_keks", self.0.data_key_keks())
    }

    fn rewrap_data_keys(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RewrapBatch, StoreError>> {
        timed("rewrap_data_keys", self.0.rewrap_data_keys(after, limit))
    }

    fn saved_view(&self, pid: &str) -> BoxFuture<'_, Result<Option<SavedView>, StoreError>> {
        timed("saved_view", self.0.saved_view(pid))
    }

    fn save_view(&self, pid: &str, view: SavedView) -> BoxFuture<'_, Result<(), StoreError>> {
        timed("save_view", self.0.save_view(pid, view))
    }
}

//! The operations endpoint: plain HTTP for orchestrators, monitoring and auditors, kept apart
//! from the IDSCP2 port (and on loopback by default) because it carries no authentication.
//!
//! - `/health`: the process is up (liveness).
//! - `/ready`: the store answers [`ProcessStore::ping`] (readiness); 503 when it does not.
//! - `/metrics`: Prometheus text format, rendered from the recorder [`install_metrics`] installed,
//!   followed by the per-connector quota usage ([`Quotas::render_metrics`]).
//! - `/.well-known/jwks.json`: the receipt keys, current and retired, to verify receipts with.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::clearing::Quotas;
use crate::store::ProcessStore;

/// Buckets for every histogram of seconds: from a fast in-memory read to a slow fsync under load.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for the embedded store's requests per commit, which run from 1 to the writer's
/// batch limit of 512.
const COMMIT_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Installs the process-wide Prometheus recorder and describes every metric, so that `/metrics`
/// has a `# HELP` line for each. No exporter listener is started: the handle is rendered by
/// `/metrics` here.
pub(crate) fn install_metrics() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("clearinghouse_store_commit_size".to_owned()),
            COMMIT_SIZE_BUCKETS,
        )?
        .install_recorder()?;
    describe_metrics();
    Ok(handle)
}

/// What each metric means. The metrics are recorded all over the crate (IDSCP2 server, admission
/// and memory budget, the clearing service, quotas); their help texts live here, in one list, so
/// that the operator's documentation of them is in one place (README, "Operations").
/// The per-connector quota gauges are rendered, with their help, by `Quotas::render_metrics`.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "clearinghouse_connections_open",
        "IDSCP2 connections established and not yet closed"
    );
    describe_gauge!(
        "clearinghouse_handshakes_pending",
        "Connections in the TLS or IDSCP2 handshake now"
    );
    describe_counter!(
        "clearinghouse_handshakes_total",
        "Finished IDSCP2 handshakes, by outcome"
    );
    describe_counter!(
        "clearinghouse_connections_refused_total",
        "New connections closed at once because a handshake bound was reached, by reason"
    );
    describe_counter!(
        "clearinghouse_transport_closes_total",
        "Connections closed because the peer broke a transport bound, by reason"
    );
    describe_gauge!(
        "clearinghouse_buffered_bytes",
        Unit::Bytes,
        "Peer data held in memory by all connections now (bounded by server.max_buffered_bytes)"
    );
    describe_counter!(
        "clearinghouse_messages_total",
        "IDS messages answered, by message type, outcome and front door (idscp2, https)"
    );
    describe_histogram!(
        "clearinghouse_request_duration_seconds",
        Unit::Seconds,
        "Time from receiving an IDS message to its reply, by message type and front door"
    );
    describe_histogram!(
        "clearinghouse_store_duration_seconds",
        Unit::Seconds,
        "Time of each call into the store, by operation"
    );
    describe_counter!(
        "clearinghouse_receipts_signed_total",
        "Receipts signed for logged entries"
    );
    describe_counter!(
        "clearinghouse_offloaded_total",
        "CPU-heavy work done on the blocking pool beside the async workers, by kind"
    );
    describe_histogram!(
        "clearinghouse_store_commit_size",
        "Embedded store: write requests (appends, creations, owner changes, erasures; refused ones too) per fsync'd commit"
    );
    describe_counter!(
        "clearinghouse_store_sequence_conflicts_total",
        "MongoDB: entries refused because another instance had taken their sequence number"
    );
    describe_counter!(
        "clearinghouse_store_appends_retried_total",
        "MongoDB: appends tried again after a sequence conflict in their batch"
    );
    describe_gauge!(
        "clearinghouse_offload_queued",
        "Hashing and signing jobs waiting for or running on an offload thread"
    );
    describe_counter!(
        "clearinghouse_quota_rejections_total",
        "Requests rejected over a per-connector quota, by quota"
    );
}

#[derive(Clone)]
pub(crate) struct OpsState {
    pub(crate) store: Arc<dyn ProcessStore>,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) jwks: Arc<Value>,
    pub(crate) quotas: Arc<Quotas>,
}

pub(crate) fn router(state: OpsState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(state)
}

/// Serves the endpoint on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    state: OpsState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<OpsState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({"ready": true})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": e.to_string()})),
        )
            .into_response(),
    }
}

async fn render_metrics(State(state): State<OpsState>) -> Response {
    // Without a listener of its own the exporter relies on its caller to drain histograms.
    state.metrics.run_upkeep();
    let mut text = state.metrics.render();
    text.push_str(&state.quotas.render_metrics());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn jwks(State(state): State<OpsState>) -> Json<Value> {
    Json(state.jwks.as_ref().clone())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every metric the crate records is described in [`super::describe_metrics`]: a metric added
    /// elsewhere without a help text fails here rather than on an operator's dashboard.
    #[test]
    fn every_recorded_metric_is_described() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let described = std::fs::read_to_string(src.join("ops.rs")).unwrap();
        let mut recorded = Vec::new();
        collect_recorded(&src, &mut recorded);
        // The transport's metrics are named by the idscp2 crate under our prefix.
        let transport = idscp2::metric_names::MetricNames::new(crate::cli::setup::METRICS_PREFIX);
        recorded.extend(transport.all().map(str::to_owned));
        assert!(recorded.len() >= 12, "{recorded:?}");
        for name in recorded {
            assert!(
                described.contains(&format!("\"{name}\"")),
                "{name} is recorded but not described in ops::describe_metrics"
            );
        }
    }

    /// The names in `counter!("…"`, `gauge!("…"` and `histogram!("…"` under `dir`.
    fn collect_recorded(dir: &Path, names: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                collect_recorded(&path, names);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for macro_name in ["counter!(\"", "gauge!(\"", "histogram!(\""] {
                    for (at, _) in text.match_indices(macro_name) {
                        let rest = &text[at + macro_name.len()..];
                        if let Some(end) = rest.find('"') {
                            let name = &rest[..end];
                            let is_name = !name.is_empty()
                                && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
                            if is_name && !text[..at].ends_with("describe_") {
                                names.push(name.to_owned());
                            }
                        }
                    }
                }
            }
        }
    }
}

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
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::clearing::Quotas;
use crate::store::ProcessStore;

/// Buckets for every histogram (seconds): from a fast in-memory read to a slow fsync under load.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder. No exporter listener is started: the handle is
/// rendered by `/metrics` here.
pub fn install_metrics() -> Result<PrometheusHandle, BuildError> {
    PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)?
        .install_recorder()
}

#[derive(Clone)]
pub struct OpsState {
    pub store: Arc<dyn ProcessStore>,
    pub metrics: PrometheusHandle,
    pub jwks: Arc<Value>,
    pub quotas: Arc<Quotas>,
}

pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(state)
}

/// Serves the endpoint on `listener` until `shutdown` completes.
pub async fn serve(
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

//! A server asked for more RSA receipts than its cores can sign stays responsive: the signatures
//! wait in the offload queue (FIFO, one per core at a time, at a lower scheduling priority), and
//! meanwhile `/health`, a new connection's handshake and a query are answered. Driven over real
//! sockets against the real `clearinghouse serve` with PS512 receipts.
//!
//! Nothing here is timed: the test waits (with a generous limit) until the server's own gauge
//! shows more signatures queued than it has cores, asks its questions, and checks that the
//! queue was still that long after the answers came, so they were answered during the overload.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clearinghouse::client::QueryOptions;

use crate::support::cli::{dev_pki, http_get, library_client, metric, Serve};

/// Connections that log back to back; each keeps one receipt in the signing queue at a time.
const LOGGING_CONNECTIONS: usize = 24;
/// How long the test waits for the queue to fill before it gives up.
const PATIENCE: Duration = Duration::from_secs(60);

fn queued(ops: &str) -> f64 {
    let (status, metrics) = http_get(ops, "/metrics");
    assert_eq!(status, 200, "{metrics}");
    metric(&metrics, "clearinghouse_offload_queued")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_handshakes_and_queries_are_answered_while_signing_is_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    // RSA-4096, the reference's key size: each signature costs several times what a client
    // spends on its request, so the queue stays long while the test asks its questions.
    let rsa_key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/receipt-rsa4096.key"
    );
    let serve = Serve::start(
        dir,
        &[],
        &[
            ("CH_RECEIPT_ALGORITHM", "PS512"),
            ("CH_RECEIPT_KEY", rsa_key),
        ],
    );
    let cores = std::thread::available_parallelism().unwrap().get() as f64;

    let mut first = library_client(&serve.idscp2, &pki, "connector-a").await;
    let reply = first
        .log("busy", Bytes::from_static(b"{\"n\":0}"), None)
        .await
        .unwrap();
    assert!(!reply.is_rejection(), "{reply:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let mut loggers = Vec::new();
    for _ in 0..LOGGING_CONNECTIONS {
        let mut client = library_client(&serve.idscp2, &pki, "connector-a").await;
        let stop = stop.clone();
        loggers.push(tokio::spawn(async move {
            let mut receipts = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let reply = client
                    .log("busy", Bytes::from_static(b"{\"n\":1}"), None)
                    .await
                    .unwrap();
                assert!(!reply.is_rejection(), "{reply:?}");
                receipts += 1;
            }
            client.close().await;
            receipts
        }));
    }

    let ops = serve.ops.clone();
    let started = Instant::now();
    loop {
        let ops = ops.clone();
        let now = tokio::task::spawn_blocking(move || queued(&ops))
            .await
            .unwrap();
        if now > cores {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the signing queue never grew past {cores} jobs (last: {now})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Overloaded: more receipts wait than the cores sign at once. The rest still answers.
    let health = {
        let ops = ops.clone();
        tokio::task::spawn_blocking(move || http_get(&ops, "/health"))
            .await
            .unwrap()
    };
    assert_eq!(health.0, 200, "{health:?}");
    let mut auditor = library_client(&serve.idscp2, &pki, "connector-a").await;
    let page = auditor
        .query("busy", &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(
        page.message_type, "ids:ResultMessage",
        "a query during the overload: {page:?}"
    );
    let after = {
        let ops = ops.clone();
        tokio::task::spawn_blocking(move || queued(&ops))
            .await
            .unwrap()
    };
    assert!(
        after > cores,
        "the overload ended before the answers came ({after} jobs queued), so they prove nothing"
    );

    stop.store(true, Ordering::Relaxed);
    let mut receipts = 0;
    for logger in loggers {
        receipts += logger.await.unwrap();
    }
    assert!(receipts > 0);
    auditor.close().await;
    first.close().await;
}

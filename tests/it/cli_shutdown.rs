//! SIGTERM while several clients are logging: the process exits 0, and after a restart every
//! entry a client got a receipt for is there, exactly as the receipt describes it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clearinghouse::client::ClearingHouseClient;
use clearinghouse::receipt::{Jwks, ReceiptClaims};

use crate::support::cli::*;

const CLIENTS: usize = 4;
/// Receipts collected before SIGTERM is sent, so that the signal lands in the middle of load.
const RECEIPTS_BEFORE_SIGNAL: usize = 40;

/// Logs until the server goes away; returns every receipt it got.
async fn log_until_closed(
    mut client: ClearingHouseClient,
    pid: String,
    count: Arc<AtomicUsize>,
) -> Vec<String> {
    let mut receipts = Vec::new();
    for n in 0.. {
        match client
            .log(
                &pid,
                Bytes::from(format!("message {n}")),
                Some("text/plain"),
            )
            .await
        {
            Ok(reply) if !reply.is_rejection() => {
                receipts.push(reply.json().unwrap()["data"].as_str().unwrap().to_owned());
                count.fetch_add(1, Ordering::SeqCst);
            }
            Ok(reply) => panic!("rejected under load: {reply:?}"),
            Err(_) => break,
        }
    }
    receipts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_and_loses_no_receipted_entry() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    let serve = Serve::start(dir, &[], &[]);
    let jwks = Jwks::parse(serve.get("/.well-known/jwks.json").1.as_bytes()).unwrap();

    // Two clients of different connectors share each process, so appends to one chain race.
    let b_id = connector_id(&pki, "connector-b");
    let mut creator = library_client(&serve.idscp2, &pki, "connector-a").await;
    for pid in (0..CLIENTS / 2).map(|i| format!("load-{i}")) {
        let reply = creator
            .create(&pid, std::slice::from_ref(&b_id))
            .await
            .unwrap();
        assert!(!reply.is_rejection(), "{reply:?}");
    }
    creator.close().await;

    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let name = ["connector-a", "connector-b"][i % 2];
        let client = library_client(&serve.idscp2, &pki, name).await;
        let pid = format!("load-{}", i / 2);
        tasks.push(tokio::spawn(log_until_closed(client, pid, count.clone())));
    }
    while count.load(Ordering::SeqCst) < RECEIPTS_BEFORE_SIGNAL {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, log) = tokio::task::spawn_blocking(move || serve.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit {status:?}\n{log}");
    let mut receipts = Vec::new();
    for task in tasks {
        receipts.extend(task.await.unwrap());
    }
    assert!(receipts.len() >= RECEIPTS_BEFORE_SIGNAL);

    let serve = Serve::start(dir, &[], &[]);
    let mut reader = library_client(&serve.idscp2, &pki, "connector-a").await;
    for receipt in &receipts {
        let claims: ReceiptClaims = jwks.verify(receipt).unwrap();
        let reply = reader
            .get(&claims.process_id, &claims.document_id)
            .await
            .unwrap();
        assert_eq!(
            reply.message_type, "ids:ResultMessage",
            "{receipt}: {reply:?}"
        );
        let document = reply.json().unwrap();
        assert_eq!(document["sequence"], claims.sequence);
        assert_eq!(document["chain_hash"], claims.chain_hash);
    }
    let (status, _) = serve.terminate();
    assert!(status.success());
}

//! `cargo bench --bench view`: what a `ch-ids-view: transfers` query costs on a process of
//! 100,000 entries holding 10,000 Dataspace Protocol transfers (each: request, ACK, start and
//! completion, every message logged by its sender and its receiver, plus two opaque entries),
//! in the embedded store.
//!
//! Times the query's work below the transport: the process read, bringing the view up to date
//! ([`current_view`]), rendering a page of 100 transfers and writing it as JSON. The IDSCP2 round
//! trip around it is that of any query (BENCHMARKS.md, "Queries"). Cases:
//! - `first fold`: nothing folded yet, all 100,000 entries read and folded (once per process);
//! - `steady`: nothing new since the last query (the view is in memory);
//! - `100 new entries`: 100 appended (10 new transfers) before each query;
//! - `from the saved view`: a fresh cache (a restart), the view read from the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clearinghouse::clearing::{current_view, ViewCache};
use clearinghouse::ids::ViewKind;
use clearinghouse::store::{EmbeddedStore, NewEntry, ProcessStore};
use clearinghouse::understand::ViewPage;
use futures::StreamExt;
use serde_json::{json, Value};

#[path = "support/cpu.rs"]
mod cpu;
use cpu::cpu_seconds;

const PID: &str = "bench-view";
const TRANSFERS: u64 = 10_000;
const CONSUMER: &str = "consumer";
const PROVIDER: &str = "provider";

/// The ten entries of transfer `n`, in order: (logger, received, payload).
fn transfer(n: u64) -> Vec<(&'static str, bool, Value)> {
    let message = |kind: &str| {
        json!({"@context": ["https://w3id.org/dspace/2024/1/context.json"],
               "@type": format!("dspace:{kind}"), "dspace:consumerPid": format!("urn:uuid:c-{n}"),
               "dspace:providerPid": format!("urn:uuid:p-{n}"), "dspace:agreementId": "urn:a"})
    };
    let mut entries = Vec::new();
    for (kind, sender) in [
        ("TransferRequestMessage", CONSUMER),
        ("TransferProcess", PROVIDER),
        ("TransferStartMessage", PROVIDER),
        ("TransferCompletionMessage", CONSUMER),
    ] {
        let receiver = if sender == CONSUMER {
            PROVIDER
        } else {
            CONSUMER
        };
        entries.push((sender, false, message(kind)));
        entries.push((receiver, true, message(kind)));
    }
    entries.push((CONSUMER, false, json!({"opaque": n})));
    entries.push((PROVIDER, false, json!({"opaque": n})));
    entries
}

fn entry(logger: &str, received: bool, payload: &Value) -> NewEntry {
    let mut header = json!({"@type": "ids:LogMessage", "@id": "urn:m"});
    if received {
        header["ch-ids-direction"] = Value::from("received");
    }
    NewEntry {
        pid: PID.into(),
        client_id: logger.into(),
        header,
        payload: Bytes::from(payload.to_string()),
        payload_type: "application/json".into(),
    }
}

/// Appends transfers `range`, a thousand at a time, each transfer's entries in order.
async fn append(store: &EmbeddedStore, range: std::ops::Range<u64>) {
    let numbers: Vec<u64> = range.collect();
    for group in numbers.chunks(1000) {
        let transfers: Vec<_> = group.iter().map(|n| transfer(*n)).collect();
        for step in 0..transfers[0].len() {
            let appends = transfers.iter().map(|entries| {
                let (logger, received, payload) = &entries[step];
                store.append(entry(logger, *received, payload).prepare())
            });
            let results = futures::stream::iter(appends).buffer_unordered(1000);
            results
                .for_each(|result| {
                    result.expect("append");
                    async {}
                })
                .await;
        }
    }
}

async fn query(store: &Arc<dyn ProcessStore>, cache: &ViewCache) -> Duration {
    let started = Instant::now();
    let head = store
        .process_info(PID)
        .await
        .unwrap()
        .unwrap()
        .head
        .sequence;
    let view = current_view(store, cache, PID, head).await.unwrap();
    let page = view.render(ViewPage {
        kind: ViewKind::Transfers,
        page: 1,
        size: 100,
    });
    let bytes = serde_json::to_vec(&page).unwrap();
    assert!(bytes.len() > 1000);
    started.elapsed()
}

fn report(case: &str, mut times: Vec<Duration>, cpu: f64) {
    let cpu_per_query = cpu / times.len() as f64;
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{case:22} n={:5} p50={:8.2} ms p99={:8.2} ms max={:8.2} ms cpu/query={:8.2} ms",
        times.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        cpu_per_query * 1e3
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a 100,000-entry fill has no place in the test suite.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path().join("view.redb")).unwrap());
    let owners = [CONSUMER, PROVIDER]
        .map(str::to_owned)
        .into_iter()
        .collect();
    store.create_process(PID, &owners).await.unwrap();
    let started = Instant::now();
    append(&store, 0..TRANSFERS).await;
    let head = store
        .process_info(PID)
        .await
        .unwrap()
        .unwrap()
        .head
        .sequence;
    eprintln!(
        "filled: {head} entries in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let cache = ViewCache::default();
    let dyn_store: Arc<dyn ProcessStore> = store.clone();
    let cpu = cpu_seconds();
    let first = query(&dyn_store, &cache).await;
    report("first fold", vec![first], cpu_seconds() - cpu);
    let mut steady = Vec::new();
    let cpu = cpu_seconds();
    for _ in 0..1000 {
        steady.push(query(&dyn_store, &cache).await);
    }
    report("steady", steady, cpu_seconds() - cpu);
    // CPU here includes the appends.
    let mut catching_up = Vec::new();
    let cpu = cpu_seconds();
    for round in 0..100 {
        let first = TRANSFERS + round * 10;
        append(&store, first..first + 10).await;
        catching_up.push(query(&dyn_store, &cache).await);
    }
    report("100 new entries", catching_up, cpu_seconds() - cpu);
    // Let the last background save finish, as a restart would find it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut from_saved = Vec::new();
    let cpu = cpu_seconds();
    for _ in 0..20 {
        from_saved.push(query(&dyn_store, &ViewCache::default()).await);
    }
    report("from the saved view", from_saved, cpu_seconds() - cpu);
}

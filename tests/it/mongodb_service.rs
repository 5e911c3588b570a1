//! The clearing house on MongoDB, as operators run it: real `clearinghouse serve` processes on a
//! real MongoDB-protocol server. Two instances on one database keep one chain per process, and
//! when the database goes away requests are refused with TEMPORARILY_NOT_AVAILABLE, `/ready`
//! says so, and service resumes when it is back, with every receipted entry in place.
//!
//! Needs `CH_TEST_MONGODB_URI` and `CH_TEST_MONGODB_BIN` (set by `scripts/test`); without them
//! the tests are skipped with a note, except in CI, where they fail.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clearinghouse::audit::verify_store;
use clearinghouse::receipt::Jwks;
use clearinghouse::store::{MongoConfig, MongoStore, ProcessStore};

use crate::support::cli::{dev_pki, dev_sealing, library_client, Serve};
use crate::support::mongo::{required_env, serve_env, OwnServer, TestDatabase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_on_one_database_keep_one_chain_per_process() {
    let Some(db) = TestDatabase::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = dev_pki(dir.path());
    let env = serve_env(&db.uri, &db.name);
    let first = Serve::start(dir.path(), &[], &env);
    let second = Serve::start(dir.path(), &[], &env);
    let jwks = Jwks::parse(first.get("/.well-known/jwks.json").1.as_bytes()).unwrap();

    const PER_CONNECTION: usize = 6;
    let mut tasks = vec![];
    for instance in [&first.idscp2, &second.idscp2] {
        for _ in 0..16 {
            let mut client = library_client(instance, &pki, "connector-a").await;
            tasks.push(tokio::spawn(async move {
                let mut receipts = vec![];
                for n in 0..PER_CONNECTION {
                    let reply = client
                        .log("shared", Bytes::from(format!("{n}")), None)
                        .await
                        .unwrap();
                    assert!(!reply.is_rejection(), "{reply:?}");
                    receipts.push(reply.json().unwrap()["data"].as_str().unwrap().to_owned());
                }
                receipts
            }));
        }
    }
    let mut sequences = vec![];
    for task in tasks {
        for receipt in task.await.unwrap() {
            sequences.push(jwks.verify(&receipt).unwrap().sequence);
        }
    }
    sequences.sort_unstable();
    let expected: Vec<u64> = (1..=(32 * PER_CONNECTION) as u64).collect();
    assert_eq!(
        sequences, expected,
        "one gapless sequence across both instances"
    );

    let store = db.instance_with(dev_sealing(dir.path())).await;
    let head = verify_store(store.as_ref(), "shared").await.unwrap();
    assert_eq!(head.head.sequence, expected.len() as u64);
    for serve in [first, second] {
        let (status, log) = tokio::task::spawn_blocking(move || serve.terminate())
            .await
            .unwrap();
        assert!(status.success(), "{log}");
    }
    db.drop_database().await;
}

/// What the logging clients saw, shared with the test.
#[derive(Default)]
struct Observed {
    receipts: Mutex<Vec<String>>,
    unavailable: AtomicUsize,
    other_rejections: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_reported_and_survived() {
    let Some(binary) = required_env("CH_TEST_MONGODB_BIN") else {
        return;
    };
    let mut database = tokio::task::block_in_place(|| OwnServer::start(binary));
    let uri = database.uri();
    let dir = tempfile::tempdir().unwrap();
    let pki = dev_pki(dir.path());
    let serve = Serve::start(dir.path(), &[], &serve_env(&uri, "outage"));
    assert_eq!(serve.get("/ready").0, 200);

    let observed = Arc::new(Observed::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![];
    for c in 0..4 {
        let mut client = library_client(&serve.idscp2, &pki, "connector-a").await;
        let (observed, stop) = (observed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let payload = Bytes::from(format!("{c}/{n}"));
                let reply = client.log("through-outage", payload, None).await.unwrap();
                match reply.rejection_reason.as_deref() {
                    None => observed
                        .receipts
                        .lock()
                        .unwrap()
                        .push(reply.json().unwrap()["data"].as_str().unwrap().to_owned()),
                    Some("TEMPORARILY_NOT_AVAILABLE") => {
                        observed.unavailable.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Some(_) => observed
                        .other_rejections
                        .lock()
                        .unwrap()
                        .push(format!("{reply:?}")),
                }
            }
        }));
    }
    let receipts = || observed.receipts.lock().unwrap().len();
    wait_until("receipts before the outage", || receipts() >= 20).await;

    tokio::task::block_in_place(|| database.kill());
    wait_until("refusals during the outage", || {
        observed.unavailable.load(Ordering::SeqCst) >= 4
    })
    .await;
    assert_eq!(serve.get("/ready").0, 503, "/ready reports the outage");
    let (_, metrics) = serve.get("/metrics");
    assert!(
        metrics.contains("TEMPORARILY_NOT_AVAILABLE"),
        "refusals are counted"
    );

    let before_restart = receipts();
    tokio::task::block_in_place(|| database.run());
    wait_until("receipts after the outage", || {
        receipts() >= before_restart + 20
    })
    .await;
    assert_eq!(
        serve.get("/ready").0,
        200,
        "/ready recovers without a restart"
    );
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        *observed.other_rejections.lock().unwrap(),
        Vec::<String>::new()
    );

    // Every receipt the service issued has its entry, and the chain holds.
    let jwks = Jwks::parse(serve.get("/.well-known/jwks.json").1.as_bytes()).unwrap();
    let mut config = MongoConfig::new(&uri, "outage").with_sealing(dev_sealing(dir.path()));
    config.timeout = Duration::from_secs(20);
    let store = MongoStore::connect(config).await.unwrap();
    let receipts = observed.receipts.lock().unwrap().clone();
    for receipt in &receipts {
        let claims = jwks.verify(receipt).unwrap();
        let entry = store
            .entry(&claims.process_id, &claims.document_id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("receipted entry {} is missing", claims.sequence));
        assert_eq!(hex::encode(entry.chain_hash), claims.chain_hash);
    }
    verify_store(&store, "through-outage").await.unwrap();
    let (status, log) = tokio::task::spawn_blocking(move || serve.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{log}");
}

/// Polls `condition` until it holds; fails the test after two minutes (a stuck service).
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..1200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting for {what}");
}

//! What only the MongoDB backend has to show, beyond the store contract (`store_contract.rs`):
//! one linear chain per process when several clearing-house instances append to one database,
//! the repair of an entry a crashed writer left behind, strings from clients that stay strings,
//! and failing fast (and recovering) when the database goes away.
//!
//! Like the contract suite, these need `CH_TEST_MONGODB_URI` (and the outage test
//! `CH_TEST_MONGODB_BIN`, the server binary); `scripts/test` sets both. Without them a test is
//! skipped with a note, except in CI (`CI` set), where it fails.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clearinghouse::store::chain::{self, verify_chain, EntryFields};
use clearinghouse::store::{
    CreateOutcome, Entry, MongoConfig, MongoStore, NewEntry, PageQuery, ProcessStore, StoreError,
};
use futures::future::join_all;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, DateTime, Document};
use serde_json::json;

use crate::support::mongo::{free_port, required_env, OwnServer, TestDatabase};

fn owners(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| name.to_string()).collect()
}

fn new_entry(pid: &str, n: u64) -> NewEntry {
    NewEntry {
        pid: pid.to_owned(),
        client_id: "client-a".to_owned(),
        header: json!({"@type": "ids:LogMessage", "n": n}),
        payload: Bytes::from(format!("entry {n} of {pid}")),
        payload_type: "text/plain".to_owned(),
    }
}

async fn create(store: &dyn ProcessStore, pid: &str) {
    let outcome = store
        .create_process(pid, &owners(&["client-a"]))
        .await
        .unwrap();
    assert!(matches!(outcome, CreateOutcome::Created(_)), "{outcome:?}");
}

async fn all_entries(store: &dyn ProcessStore, pid: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    loop {
        let batch = store
            .entries_from(pid, entries.len() as u64 + 1, 50)
            .await
            .unwrap();
        if batch.is_empty() {
            return entries;
        }
        entries.extend(batch);
    }
}

fn binary(bytes: &[u8]) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    }
}

/// An entry document in the documented shape, chained onto `previous`, as a writer that died
/// before moving the head leaves it behind.
fn orphan_after(previous: &Entry, chain_onto: [u8; 32]) -> (Entry, Document) {
    let header = json!({"@type": "ids:LogMessage", "orphan": true});
    let canonical = chain::canonical_json(&header);
    let mut entry = Entry {
        pid: previous.pid.clone(),
        sequence: previous.sequence + 1,
        document_id: uuid::Uuid::new_v4().to_string(),
        timestamp_ms: previous.timestamp_ms + 1,
        client_id: "client-a".to_owned(),
        header,
        payload: Bytes::from_static(b"left behind"),
        payload_type: "text/plain".to_owned(),
        entry_hash: [0; 32],
        chain_hash: [0; 32],
        protection: clearinghouse::store::Protection::Plaintext,
    };
    entry.entry_hash = EntryFields {
        pid: &entry.pid,
        sequence: entry.sequence,
        document_id: &entry.document_id,
        timestamp_ms: entry.timestamp_ms,
        client_id: &entry.client_id,
        payload_type: &entry.payload_type,
        payload_hash: &chain::payload_hash(&entry.payload),
        canonical_header: &canonical,
    }
    .entry_hash();
    entry.chain_hash = chain::chain_hash(&chain_onto, &entry.entry_hash);
    let document = doc! {
        "_id": entry.document_id.as_str(),
        "pid": entry.pid.as_str(),
        "sequence": entry.sequence as i64,
        "timestamp": DateTime::from_millis(entry.timestamp_ms),
        "client_id": entry.client_id.as_str(),
        "payload_type": entry.payload_type.as_str(),
        "header": String::from_utf8(canonical).unwrap(),
        "payload": binary(&entry.payload),
        "entry_hash": binary(&entry.entry_hash),
        "chain_hash": binary(&entry.chain_hash),
    };
    (entry, document)
}

/// Stores an entry document past the store, as a writer that died before moving the head
/// leaves it behind.
async fn plant(raw: &mongodb::Database, document: Document) {
    raw.collection::<Document>("entries")
        .insert_one(document)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_appending_to_one_process_keep_one_gapless_chain() {
    let Some(database) = TestDatabase::new() else {
        return;
    };
    let instances = [database.instance().await, database.instance().await];
    create(&*instances[0], "p-1").await;

    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let store = Arc::clone(&instances[task % 2]);
            tokio::spawn(async move {
                let mut appended = Vec::new();
                for n in 0..8 {
                    let entry = store
                        .append(new_entry("p-1", task as u64 * 100 + n).prepare())
                        .await;
                    appended.push(entry.unwrap());
                }
                appended
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    acknowledged.sort_by_key(|entry| entry.sequence);
    let sequences: Vec<u64> = acknowledged.iter().map(|entry| entry.sequence).collect();
    assert_eq!(sequences, (1..=128).collect::<Vec<_>>());

    // Both instances read the same log, and it is exactly what was acknowledged.
    for store in &instances {
        let stored = all_entries(&**store, "p-1").await;
        assert_eq!(stored, acknowledged);
        assert!(stored
            .windows(2)
            .all(|pair| pair[0].timestamp_ms <= pair[1].timestamp_ms));
        let head = verify_chain("p-1", stored).unwrap();
        assert_eq!(head.sequence, 128);
        assert_eq!(head.chain_hash, acknowledged[127].chain_hash);
    }
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_left_behind_by_a_crashed_writer_is_adopted_by_the_next_append() {
    let Some(database) = TestDatabase::new() else {
        return;
    };
    let store = database.instance().await;
    create(&*store, "p-1").await;
    let before = vec![
        store.append(new_entry("p-1", 1).prepare()).await.unwrap(),
        store.append(new_entry("p-1", 2).prepare()).await.unwrap(),
    ];
    let (orphan, document) = orphan_after(&before[1], before[1].chain_hash);
    plant(&database.raw().await, document).await;

    // Not in the log until the head covers it.
    assert_eq!(all_entries(&*store, "p-1").await, before);
    assert_eq!(store.entry("p-1", &orphan.document_id).await.unwrap(), None);
    let everything = PageQuery {
        pid: "p-1".to_owned(),
        page: 1,
        size: 10,
        order: clearinghouse::store::Order::Asc,
        from_ms: Some(0),
        to_ms: None,
        max_bytes: usize::MAX,
    };
    assert_eq!(store.query(&everything).await.unwrap().total, 2);
    // Another instance's next append moves the head over it and chains after it.
    let other = database.instance().await;
    let next = other.append(new_entry("p-1", 4).prepare()).await.unwrap();
    assert_eq!(next.sequence, 4);
    assert_eq!(
        next.chain_hash,
        chain::chain_hash(&orphan.chain_hash, &next.entry_hash)
    );
    let stored = all_entries(&*store, "p-1").await;
    assert_eq!(stored, [before, vec![orphan.clone(), next]].concat());
    assert_eq!(verify_chain("p-1", stored).unwrap().sequence, 4);
    assert_eq!(
        store.entry("p-1", &orphan.document_id).await.unwrap(),
        Some(orphan)
    );
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_entries_left_behind_by_a_crashed_batch_is_adopted_by_the_next_append() {
    let Some(database) = TestDatabase::new() else {
        return;
    };
    let store = database.instance().await;
    create(&*store, "p-1").await;
    let first = store.append(new_entry("p-1", 1).prepare()).await.unwrap();
    // A writer that stored three entries with one insert and died before moving the head.
    let raw = database.raw().await;
    let mut orphans: Vec<Entry> = Vec::new();
    for _ in 0..3 {
        let previous = orphans.last().unwrap_or(&first);
        let (orphan, document) = orphan_after(previous, previous.chain_hash);
        plant(&raw, document).await;
        orphans.push(orphan);
    }
    assert_eq!(
        all_entries(&*store, "p-1").await,
        std::slice::from_ref(&first)
    );

    let other = database.instance().await;
    let next = other.append(new_entry("p-1", 2).prepare()).await.unwrap();
    assert_eq!(next.sequence, 5);
    assert_eq!(
        next.chain_hash,
        chain::chain_hash(&orphans[2].chain_hash, &next.entry_hash)
    );
    let stored = all_entries(&*store, "p-1").await;
    assert_eq!(stored, [vec![first], orphans, vec![next]].concat());
    assert_eq!(verify_chain("p-1", stored).unwrap().sequence, 5);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_after_the_head_that_does_not_chain_onto_it_is_never_adopted() {
    let Some(database) = TestDatabase::new() else {
        return;
    };
    let store = database.instance().await;
    create(&*store, "p-1").await;
    let first = store.append(new_entry("p-1", 1).prepare()).await.unwrap();
    // Chained onto the genesis hash instead of entry 1: written by someone who is no writer.
    let (_, document) = orphan_after(&first, chain::genesis_hash("p-1"));
    plant(&database.raw().await, document).await;

    match store.append(new_entry("p-1", 2).prepare()).await {
        Err(StoreError::Corrupt(detail)) => assert!(detail.contains("p-1/2"), "{detail}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(all_entries(&*store, "p-1").await, [first]);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_keeps_losing_its_sequence_gives_up_with_conflict() {
    let Some(database) = TestDatabase::new() else {
        return;
    };
    let mut config = database.config();
    config.max_append_attempts = 1;
    let store = MongoStore::connect(config).await.unwrap();
    create(&store, "p-1").await;
    let first = store.append(new_entry("p-1", 1).prepare()).await.unwrap();
    // Sequence 2 is taken behind the head's back, so the one attempt allowed loses it.
    let (orphan, document) = orphan_after(&first, first.chain_hash);
    plant(&database.raw().await, document).await;

    let asked = new_entry("p-1", 2);
    match store.append(asked.clone().prepare()).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
    // Losing moved the head over the entry that won, and stored nothing of its own.
    assert_eq!(all_entries(&store, "p-1").await, [first, orphan]);
    assert_eq!(store.append(asked.prepare()).await.unwrap().sequence, 3);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_never_go_back_when_the_clock_does() {
    let Some(database) = TestDatabase::new() else {
        return;
    };
    let store = database.instance().await;
    create(&*store, "p-1").await;
    // Date the head an hour ahead, as if this instance's clock (or another instance's) were an
    // hour behind the one that wrote the latest entry.
    let ahead_ms = store
        .append(new_entry("p-1", 1).prepare())
        .await
        .unwrap()
        .timestamp_ms
        + 3_600_000;
    let moved = database
        .raw()
        .await
        .collection::<Document>("processes")
        .update_one(
            doc! { "_id": "p-1" },
            doc! { "$set": { "head.timestamp": DateTime::from_millis(ahead_ms) } },
        )
        .await
        .unwrap();
    assert_eq!(moved.matched_count, 1);

    // Another instance appends next: this one keeps the head it wrote, and only an entry moves
    // a head, so it would never see the change made behind its back.
    let other = database.instance().await;
    let next = other.append(new_entry("p-1", 2).prepare()).await.unwrap();
    assert_eq!(next.timestamp_ms, ahead_ms);
    assert_eq!(
        verify_chain("p-1", all_entries(&*store, "p-1").await)
            .unwrap()
            .sequence,
        2
    );
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_from_clients_never_become_query_operators() {
    let Some(database) = TestDatabase::new() else {
        return;
    };
    let store = database.instance().await;
    create(&*store, "p-1").await;
    store.append(new_entry("p-1", 1).prepare()).await.unwrap();

    // Would match every pid, owner or entry if they were taken as query documents.
    let operator_pid = r#"{"$gt": ""}"#;
    let operator_owner = r#"{"$ne": null}"#;
    assert_eq!(store.process(operator_pid).await.unwrap(), None);
    assert!(store.processes_of(operator_owner).await.unwrap().is_empty());
    assert!(matches!(
        store.append(new_entry(operator_pid, 1).prepare()).await,
        Err(StoreError::UnknownProcess(_))
    ));
    assert!(matches!(
        store.entries_from(operator_pid, 1, 10).await,
        Err(StoreError::UnknownProcess(_))
    ));

    // As plain strings they work like any other.
    store
        .create_process(operator_pid, &owners(&[operator_owner]))
        .await
        .unwrap();
    assert_eq!(
        store.processes_of(operator_owner).await.unwrap(),
        [operator_pid]
    );
    let header = json!({
        "$set": {"owners": ["mallory"]},
        "a.b": {"$where": "sleep(1000)", "c.d": [{"$gt": ""}]},
        "@type": "ids:LogMessage",
        "$": "$.",
    });
    let mut asked = new_entry(operator_pid, 1);
    asked.client_id = "$client.id".to_owned();
    asked.header = header.clone();
    let stored = store.append(asked.prepare()).await.unwrap();
    assert_eq!(stored.header, header);
    assert_eq!(stored.sequence, 1);

    let found = store
        .entry(operator_pid, &stored.document_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, stored);
    assert_eq!(found.client_id, "$client.id");
    // Spliced into a query, this id would match every entry.
    for pid in [operator_pid, "p-1"] {
        assert_eq!(
            store.entry(pid, r#"{"$exists": true}"#).await.unwrap(),
            None
        );
    }
    assert_eq!(
        verify_chain(operator_pid, all_entries(&*store, operator_pid).await)
            .unwrap()
            .sequence,
        1
    );
    // The other process is untouched.
    assert_eq!(all_entries(&*store, "p-1").await.len(), 1);
    assert_eq!(store.processes_of("client-a").await.unwrap(), ["p-1"]);

    // A pid that an aggregation expression would read as a field path, its head moved in the
    // same statement as another process's (the two appends are issued together).
    let path_pid = "$_id";
    create(&*store, path_pid).await;
    let (on_path_pid, on_p1) = futures::join!(
        store.append(new_entry(path_pid, 2).prepare()),
        store.append(new_entry("p-1", 2).prepare())
    );
    assert_eq!(on_path_pid.unwrap().sequence, 1);
    assert_eq!(on_p1.unwrap().sequence, 2);
    for (pid, length) in [(path_pid, 1), ("p-1", 2)] {
        let stored = all_entries(&*store, pid).await;
        assert_eq!(verify_chain(pid, stored).unwrap().sequence, length);
    }
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_not_a_hang() {
    let uri = format!("mongodb://127.0.0.1:{}/?directConnection=true", free_port());
    let mut config = MongoConfig::new(uri, "nowhere");
    config.timeout = Duration::from_millis(500);
    match MongoStore::connect(config).await {
        Err(StoreError::Unavailable(_)) => {}
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("connected to a port nobody listens on"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_fail_fast_while_the_database_is_gone_and_work_again_when_it_is_back() {
    let Some(binary) = required_env("CH_TEST_MONGODB_BIN") else {
        return;
    };
    let mut server = OwnServer::start(binary);
    let mut config = MongoConfig::new(server.uri(), "outage");
    config.timeout = Duration::from_secs(2);
    let store = Arc::new(MongoStore::connect(config).await.unwrap());
    create(&*store, "p-1").await;

    // Writers append without pause until the database fails them.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8u64)
        .map(|writer| {
            let store = Arc::clone(&store);
            let acknowledged = Arc::clone(&acknowledged);
            let killed = Arc::clone(&killed);
            tokio::spawn(async move {
                for n in writer * 1_000_000.. {
                    match store.append(new_entry("p-1", n).prepare()).await {
                        Ok(entry) => acknowledged.lock().unwrap().push(entry),
                        Err(StoreError::Unavailable(_)) if killed.load(Ordering::SeqCst) => {
                            return Ok(());
                        }
                        Err(error) => return Err(error),
                    }
                }
                Err(StoreError::Conflict("ran out of numbers".to_owned()))
            })
        })
        .collect();
    for _ in 0..600 {
        if acknowledged.lock().unwrap().len() >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(acknowledged.lock().unwrap().len() >= 40, "appends stalled");
    killed.store(true, Ordering::SeqCst);
    server.kill();

    // Every writer comes back with Unavailable. The bound only turns a hang into a failure: it
    // is many times the configured timeout, not a measurement.
    let ended = tokio::time::timeout(Duration::from_secs(300), join_all(writers))
        .await
        .expect("appends hung while the database was gone");
    for writer in ended {
        writer.unwrap().unwrap();
    }
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.append(new_entry("p-1", 0).prepare()).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.entries_from("p-1", 1, 10).await,
        Err(StoreError::Unavailable(_))
    ));

    // Same data dir, same port, same store object: it recovers by itself.
    server.run();
    let mut recovered = false;
    for _ in 0..120 {
        if store.ping().await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(recovered, "ping kept failing after the database came back");
    let after = store.append(new_entry("p-1", 1).prepare()).await.unwrap();

    // Nothing acknowledged was lost, and the chain holds (entries whose append failed may be
    // in it too: they were written but not acknowledged).
    let stored = all_entries(&*store, "p-1").await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    for entry in acknowledged.iter().chain([&after]) {
        assert_eq!(
            stored.get(entry.sequence as usize - 1),
            Some(entry),
            "acknowledged entry {} is missing or changed",
            entry.sequence
        );
    }
    let head = verify_chain("p-1", stored).unwrap();
    assert_eq!(head.sequence, after.sequence);
    assert_eq!(head.chain_hash, after.chain_hash);
}

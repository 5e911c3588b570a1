//! The store's part of process info and owner changes, for both backends: an owner change is
//! an entry of the process's chain written in one step with the new owners, refused (writing
//! nothing) when the owners changed meanwhile; and a page past its byte budget says how many of
//! its entries fit and which one did not.
//!
//! The MongoDB checks need `CH_TEST_MONGODB_URI` (`scripts/test` starts a MongoDB-protocol
//! server and sets it); without it they are skipped with a note, except in CI.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::support::mongo::TestDatabase;
use bytes::Bytes;
use clearinghouse::store::chain::{self, verify_chain, ChainHead, LinkFields};
use clearinghouse::store::{
    EmbeddedStore, Entry, NewEntry, Order, OwnerChange, PageQuery, ProcessStore, StoreError,
    OWNER_CHANGE_PAYLOAD_TYPE,
};
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, DateTime, Document};
use serde_json::json;

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

fn logged(pid: &str, n: u64, payload: Bytes) -> NewEntry {
    NewEntry {
        pid: pid.to_owned(),
        client_id: "a".to_owned(),
        header: json!({"@type": "ids:LogMessage", "n": n}),
        payload,
        payload_type: "text/plain".to_owned(),
    }
}

fn change(pid: &str, by: &str, previous: &[&str], owners: &[&str]) -> OwnerChange {
    OwnerChange::new(
        pid,
        by,
        json!({"@type": "ids:RequestMessage"}),
        set(previous),
        set(owners),
    )
}

async fn chain_of(store: &dyn ProcessStore, pid: &str) -> Vec<Entry> {
    store.entries_from(pid, 1, 1000).await.unwrap()
}

async fn owner_changes_are_entries_of_the_chain(store: Arc<dyn ProcessStore>) {
    store.create_process("p-1", &set(&["a"])).await.unwrap();
    let first = store
        .append(logged("p-1", 1, Bytes::from_static(b"one")).prepare())
        .await
        .unwrap();
    let info = store.process_info("p-1").await.unwrap().unwrap();
    assert_eq!(info.process.owners, set(&["a"]));
    // Read before every change below, so that a store that kept what it read would show it.
    assert_eq!(
        store.process("p-1").await.unwrap().unwrap().owners,
        set(&["a"])
    );
    assert_eq!(
        info.head,
        ChainHead {
            sequence: 1,
            chain_hash: first.chain_hash
        }
    );
    assert_eq!(store.process_info("nowhere").await.unwrap(), None);

    let changed = store
        .change_owners(change("p-1", "a", &["a"], &["a", "b"]))
        .await
        .unwrap();
    assert_eq!(
        (
            changed.sequence,
            changed.payload_type.as_str(),
            changed.client_id.as_str()
        ),
        (2, OWNER_CHANGE_PAYLOAD_TYPE, "a")
    );
    assert_eq!(
        store.process("p-1").await.unwrap().unwrap().owners,
        set(&["a", "b"])
    );
    assert_eq!(store.processes_of("b").await.unwrap(), ["p-1"]);
    let info = store.process_info("p-1").await.unwrap().unwrap();
    assert_eq!(
        (info.head.sequence, info.head.chain_hash),
        (2, changed.chain_hash)
    );

    // Decided on owners that are no longer the process's: refused, nothing written.
    let stale = store
        .change_owners(change("p-1", "a", &["a"], &["a"]))
        .await;
    assert!(
        matches!(stale, Err(StoreError::OwnersChanged(ref pid)) if pid == "p-1"),
        "{stale:?}"
    );
    assert_eq!(
        store
            .process_info("p-1")
            .await
            .unwrap()
            .unwrap()
            .head
            .sequence,
        2
    );

    // Handing over: the old owner's listing loses the process.
    assert_eq!(
        store.process("p-1").await.unwrap().unwrap().owners,
        set(&["a", "b"])
    );
    store
        .change_owners(change("p-1", "b", &["a", "b"], &["b"]))
        .await
        .unwrap();
    assert_eq!(store.processes_of("a").await.unwrap(), Vec::<String>::new());
    assert_eq!(
        store.process("p-1").await.unwrap().unwrap().owners,
        set(&["b"])
    );
    let missing = store
        .change_owners(change("p-2", "a", &["a"], &["b"]))
        .await;
    assert!(
        matches!(missing, Err(StoreError::UnknownProcess(_))),
        "{missing:?}"
    );

    // Appends go on after the changes, in one linear chain.
    let next = store
        .append(logged("p-1", 4, Bytes::from_static(b"four")).prepare())
        .await
        .unwrap();
    assert_eq!(next.sequence, 4);
    let stored = chain_of(&*store, "p-1").await;
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[1], changed);
    assert_eq!(verify_chain("p-1", stored).unwrap().sequence, 4);
}

async fn a_page_too_large_says_how_much_of_it_fits(store: Arc<dyn ProcessStore>) {
    store.create_process("p-1", &set(&["a"])).await.unwrap();
    let mut entries = Vec::new();
    for n in 1..=10 {
        let entry = logged("p-1", n, Bytes::from(vec![b'x'; 1000]));
        entries.push(store.append(entry.prepare()).await.unwrap());
    }
    for (order, unfit) in [(Order::Asc, 4), (Order::Desc, 5)] {
        let query = PageQuery {
            pid: "p-1".to_owned(),
            page: 1,
            size: 10,
            order,
            from_ms: None,
            to_ms: None,
            max_bytes: 5_000,
        };
        match store.query(&query).await {
            Err(StoreError::PageTooLarge {
                limit: 5_000,
                fitting: 4,
                first_unfit,
            }) => {
                assert_eq!(first_unfit.sequence, entries[unfit].sequence);
                assert_eq!(first_unfit.document_id, entries[unfit].document_id);
            }
            other => panic!("expected PageTooLarge with 4 fitting, got {other:?}"),
        }
    }
}

fn embedded() -> (tempfile::TempDir, Arc<dyn ProcessStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
    (dir, Arc::new(store))
}

#[tokio::test]
async fn embedded_owner_changes_are_entries_of_the_chain() {
    let (_dir, store) = embedded();
    owner_changes_are_entries_of_the_chain(store).await;
}

#[tokio::test]
async fn embedded_a_page_too_large_says_how_much_of_it_fits() {
    let (_dir, store) = embedded();
    a_page_too_large_says_how_much_of_it_fits(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_owner_changes_are_entries_of_the_chain() {
    let Some(database) = TestDatabase::new() else {
        return;
    };
    owner_changes_are_entries_of_the_chain(database.instance().await).await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_a_page_too_large_says_how_much_of_it_fits() {
    let Some(database) = TestDatabase::new() else {
        return;
    };
    a_page_too_large_says_how_much_of_it_fits(database.instance().await).await;
    database.drop_database().await;
}

fn binary(bytes: &[u8]) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    }
}

/// The entry document of `change` after `head`, as a writer that died before moving the head
/// leaves it behind, with the random document id the store would have given it.
fn orphaned(change: &OwnerChange, head: &ChainHead, head_timestamp_ms: i64) -> Document {
    let prepared = change.entry();
    let entry = prepared.entry();
    let document_id = uuid::Uuid::new_v4().to_string();
    let fields = LinkFields {
        pid: &entry.pid,
        document_id: &document_id,
        client_id: &entry.client_id,
        payload_type: &entry.payload_type,
        payload_hash: prepared.payload_sha256(),
        canonical_header: prepared.canonical_header().as_bytes(),
        commitment_key: None,
    };
    let link = chain::next_link(head, head_timestamp_ms, head_timestamp_ms + 1, fields).unwrap();
    doc! {
        "_id": document_id.as_str(),
        "pid": entry.pid.as_str(),
        "sequence": link.sequence as i64,
        "timestamp": DateTime::from_millis(link.timestamp_ms),
        "client_id": entry.client_id.as_str(),
        "payload_type": entry.payload_type.as_str(),
        "header": prepared.canonical_header(),
        "payload": binary(&entry.payload),
        "entry_hash": binary(&link.entry_hash),
        "chain_hash": binary(&link.chain_hash),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_an_orphaned_owner_change_sets_its_owners_when_adopted() {
    let Some(database) = TestDatabase::new() else {
        return;
    };
    let store = database.instance().await;
    store.create_process("p-1", &set(&["a"])).await.unwrap();
    let first = store
        .append(logged("p-1", 1, Bytes::from_static(b"one")).prepare())
        .await
        .unwrap();
    let head = ChainHead {
        sequence: 1,
        chain_hash: first.chain_hash,
    };
    let orphan = orphaned(
        &change("p-1", "a", &["a"], &["a", "c"]),
        &head,
        first.timestamp_ms,
    );
    database
        .raw()
        .await
        .collection::<Document>("entries")
        .insert_one(orphan)
        .await
        .unwrap();
    // Not applied until adopted.
    let other = database.instance().await;
    assert_eq!(
        other.process("p-1").await.unwrap().unwrap().owners,
        set(&["a"])
    );

    let next = other
        .append(logged("p-1", 3, Bytes::from_static(b"three")).prepare())
        .await
        .unwrap();
    assert_eq!(next.sequence, 3);
    let info = other.process_info("p-1").await.unwrap().unwrap();
    assert_eq!(info.process.owners, set(&["a", "c"]));
    assert_eq!(info.head.sequence, 3);
    assert_eq!(other.processes_of("c").await.unwrap(), ["p-1"]);
    assert_eq!(
        verify_chain("p-1", chain_of(&*other, "p-1").await)
            .unwrap()
            .sequence,
        3
    );
    database.drop_database().await;
}

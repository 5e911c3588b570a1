//! Encryption at rest, through the real binary and both real stores: a copy of the redb file or
//! of the MongoDB collections reveals no payload, no header and nothing that confirms a guess of
//! either, nor anything of a process's saved view (sealed as its entries are); ciphertexts moved
//! between entries or processes are caught and named; a store written before encryption keeps
//! working beside encrypted processes.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use clearinghouse::client::{ClearingHouseClient, QueryOptions};
use clearinghouse::ids::ViewKind;
use clearinghouse::idscp2::proto::app::{
    app_layer_message, AppLayerMessage, HeaderEntry, IdsMessage,
};
use clearinghouse::store::chain::{self, EntryFields};
use clearinghouse::store::sealing::Keyring;
use clearinghouse::store::{
    EmbeddedStore, NewEntry, ProcessStore, Protection, Sealing, StoreError,
};
use futures::TryStreamExt;
use ring::digest::{digest, SHA256};
use serde_json::{json, Value};

use crate::support::cli::*;
use crate::support::mongo::{serve_env, TestDatabase};
use crate::support::stored_entries;

/// A low-entropy payload anyone could guess. Long enough that the kilobytes of ciphertext in a
/// dump cannot contain it by chance: the bare three bytes `yes` turn up in about one dump in a
/// thousand of random bytes this size, and did once.
const YES: &[u8] = b"yes, I consent to the transfer";
/// A string only the stored header carries.
const MARKER: &str = "marker-7f3a9c-only-in-the-header";

/// Every form in which `secret` must not be found: as it is, and its SHA-256 raw, in hex and in
/// base64.
fn forms(secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    let sha = digest(&SHA256, secret);
    let sha = sha.as_ref();
    vec![
        ("plain".into(), secret.to_vec()),
        ("sha256".into(), sha.to_vec()),
        ("sha256 hex".into(), hex::encode(sha).into_bytes()),
        ("SHA256 HEX".into(), hex::encode_upper(sha).into_bytes()),
        ("sha256 base64".into(), STANDARD.encode(sha).into_bytes()),
        (
            "sha256 base64url".into(),
            URL_SAFE_NO_PAD.encode(sha).into_bytes(),
        ),
    ]
}

fn assert_nothing_of(dump: &[u8], secret: &[u8], name: &str) {
    for (form, needle) in forms(secret) {
        assert!(
            !dump.windows(needle.len()).any(|window| window == needle),
            "the store reveals {name} ({form})"
        );
    }
}

/// A LogMessage whose header carries [`MARKER`], with payload [`YES`].
fn marked_log(pid: &str, n: u32) -> AppLayerMessage {
    let header = json!({
        "@type": "ids:LogMessage",
        "@id": format!("https://w3id.org/idsa/autogen/logMessage/{n}"),
        "ids:modelVersion": "4.2.7",
        "ids:issuerConnector": {"@id": "https://connector-a.test/connector"},
        "ids:senderAgent": {"@id": "https://connector-a.test/connector"},
        "ids:contentVersion": MARKER,
        "ids:securityToken": {
            "@type": "ids:DynamicAttributeToken",
            "ids:tokenValue": "placeholder-token",
        },
    });
    AppLayerMessage {
        message: Some(app_layer_message::Message::IdsMessage(IdsMessage {
            header: header.to_string(),
            payload: Bytes::from_static(YES),
            extra_headers: vec![
                HeaderEntry {
                    name: "ch-ids-pid".into(),
                    value: pid.into(),
                },
                HeaderEntry {
                    name: "Content-Type".into(),
                    value: "text/plain".into(),
                },
            ],
        })),
    }
}

/// Logs two marked entries to `pid` and returns their receipts.
async fn log_marked(client: &mut ClearingHouseClient, pid: &str) -> Vec<String> {
    let mut receipts = Vec::new();
    for n in 1..=2 {
        let reply = client.exchange(marked_log(pid, n)).await.unwrap();
        assert_eq!(
            reply.message_type, "ids:MessageProcessedNotificationMessage",
            "{reply:?}"
        );
        receipts.push(reply.json().unwrap()["data"].as_str().unwrap().to_owned());
    }
    // The owner reads its content back in the clear.
    let page = client
        .query(pid, &QueryOptions::default())
        .await
        .unwrap()
        .json()
        .unwrap();
    let documents = page["documents"].as_array().unwrap();
    assert_eq!(documents.len(), 2, "{page}");
    assert_eq!(
        documents[0]["payload"].as_str().map(str::as_bytes),
        Some(YES)
    );
    assert_eq!(documents[0]["ids:contentVersion"], MARKER);
    receipts
}

/// A consumerPid and an agreementId only the DSP messages logged by [`log_a_saved_view`] carry,
/// so only those entries and the view folded from them.
const VIEW_CONSUMER_PID: &str = "urn:uuid:marker-5e1d-view-consumer";
const VIEW_AGREEMENT: &str = "urn:uuid:marker-5e1d-view-agreement";
/// Entries past its saved view after which a view query saves it again (`clearing::view`).
const SAVE_EVERY: u32 = 256;

/// Logs [`SAVE_EVERY`] DSP transfer requests carrying the view markers to `pid`, then queries
/// its transfers, which folds them and saves the view in the background; waits a moment for
/// that save (the callers check that it happened by reading the store afterwards).
pub(crate) async fn log_a_saved_view(client: &mut ClearingHouseClient, pid: &str) {
    let request = json!({
        "@context": ["https://w3id.org/dspace/2024/1/context.json"],
        "@type": "dspace:TransferRequestMessage",
        "dspace:consumerPid": VIEW_CONSUMER_PID,
        "dspace:agreementId": VIEW_AGREEMENT,
        "dct:format": "example:HTTP_PULL",
    });
    let payload = Bytes::from(request.to_string());
    for _ in 0..SAVE_EVERY {
        let reply = client
            .log_message(pid, payload.clone(), Some("application/ld+json"), false)
            .await
            .unwrap();
        assert_eq!(
            reply.message_type, "ids:MessageProcessedNotificationMessage",
            "{reply:?}"
        );
    }
    let reply = client
        .view(pid, ViewKind::Transfers, None, None)
        .await
        .unwrap();
    assert_eq!(reply.message_type, "ids:ResultMessage", "{reply:?}");
    let view = reply.json().unwrap().to_string();
    assert!(view.contains(VIEW_CONSUMER_PID), "{view}");
    assert!(view.contains(VIEW_AGREEMENT), "{view}");
    // The save runs after the reply, off the query path.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}

/// `store` holds a saved view of `pid` that opens and shows the markers: the save path ran, so
/// the dump scans have a view to look at.
pub(crate) async fn assert_view_saved(store: &dyn ProcessStore, pid: &str) {
    let saved = store.saved_view(pid).await.unwrap().expect("a saved view");
    assert!(saved.entries_seen >= u64::from(SAVE_EVERY), "{saved:?}");
    let bytes = String::from_utf8_lossy(&saved.bytes).into_owned();
    assert!(bytes.contains(VIEW_CONSUMER_PID), "{bytes}");
}

fn assert_nothing_of_the_view(dump: &[u8]) {
    assert_nothing_of(dump, VIEW_CONSUMER_PID.as_bytes(), "the view's consumerPid");
    assert_nothing_of(dump, VIEW_AGREEMENT.as_bytes(), "the view's agreementId");
}

/// What the chain commits to must not confirm a guess either: the version 1 entry hash of the
/// exact guessed content, which anyone can compute from the cleartext fields, is not stored.
fn assert_no_confirmable_hash(dump: &[u8], export: &str) {
    for line in export.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["content"], "encrypted", "{line}");
        let header = chain::canonical_json(&line["header"]);
        let guess = EntryFields {
            pid: line["pid"].as_str().unwrap(),
            sequence: line["sequence"].as_u64().unwrap(),
            document_id: line["document_id"].as_str().unwrap(),
            timestamp_ms: line["timestamp_ms"].as_i64().unwrap(),
            client_id: line["client_id"].as_str().unwrap(),
            payload_type: line["payload_type"].as_str().unwrap(),
            payload_hash: &chain::payload_hash(YES),
            canonical_header: &header,
        }
        .entry_hash();
        assert_ne!(hex::encode(guess), line["entry_hash"].as_str().unwrap());
        assert_nothing_of(dump, &header, "the canonical header");
        assert!(!dump.windows(32).any(|window| window == guess));
    }
}

/// `verify receipt` of every one of `receipts` against the export at `export_arg`, with the
/// JWKS the binary prints: each must say OK.
pub(crate) fn verify_receipts_with_export(
    dir: &Path,
    env: &[(&str, &str)],
    export_arg: &str,
    receipts: &[String],
) {
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, ok(run_with_env(dir, &["jwks"], env, b""))).unwrap();
    let mut args = vec![
        "verify",
        "receipt",
        "--jwks",
        jwks.to_str().unwrap(),
        "--export",
        export_arg,
    ];
    args.extend(receipts.iter().map(String::as_str));
    let checked = ok(run(dir, &args));
    assert_eq!(checked.matches(": OK").count(), receipts.len(), "{checked}");
}

/// `export` and `verify` of `pid` through the binary, with the server stopped: the chain
/// verifies, the receipts match their entries; returns the export.
fn export_and_verify(dir: &Path, pid: &str, receipts: &[String], env: &[(&str, &str)]) -> String {
    let export = dir.join(format!("{pid}.jsonl"));
    let export_arg = export.to_str().unwrap();
    ok(run_with_env(
        dir,
        &["export", "--pid", pid, "--output", export_arg],
        env,
        b"",
    ));
    let verified = ok(run_with_env(
        dir,
        &["verify", "chain", "--pid", pid],
        env,
        b"",
    ));
    assert!(verified.contains("OK (2 entries"), "{verified}");
    verify_receipts_with_export(dir, env, export_arg, receipts);
    std::fs::read_to_string(&export).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redb_file_reveals_no_payload_header_or_hash_of_either() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    // Development mode: encryption is on without a word, with a generated KEK.
    let serve = Serve::start(dir, &[], &[]);
    let mut client = library_client(&serve.idscp2, &pki, "connector-a").await;
    let receipts = log_marked(&mut client, "secret").await;
    log_a_saved_view(&mut client, "viewed").await;
    client.close().await;
    let (status, log) = tokio::task::spawn_blocking(move || serve.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{log}");
    assert!(dir.join("data/dev-pki/store-kek.hex").exists());

    let dump = std::fs::read(dir.join("data/clearinghouse.redb")).unwrap();
    assert_nothing_of(&dump, YES, "the payload");
    assert_nothing_of(&dump, MARKER.as_bytes(), "the header marker");
    assert_nothing_of_the_view(&dump);
    let store =
        EmbeddedStore::open_with(dir.join("data/clearinghouse.redb"), dev_sealing(dir)).unwrap();
    assert_view_saved(&store, "viewed").await;
    drop(store);
    let export = export_and_verify(dir, "secret", &receipts, &[]);
    assert_no_confirmable_hash(&dump, &export);
}

/// Every document of every collection of `db`, as the raw BSON bytes a dump would hold.
async fn dump(db: &TestDatabase) -> Vec<u8> {
    let raw = db.raw().await;
    let mut bytes = Vec::new();
    for name in raw.list_collection_names().await.unwrap() {
        let collection = raw.collection::<mongodb::bson::RawDocumentBuf>(&name);
        let documents: Vec<_> = collection
            .find(mongodb::bson::doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        for document in documents {
            bytes.extend_from_slice(document.as_bytes());
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mongodb_collections_reveal_no_payload_header_or_hash_of_either() {
    let Some(db) = TestDatabase::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    let env = serve_env(&db.uri, &db.name);
    let serve = Serve::start(dir, &[], &env);
    let mut client = library_client(&serve.idscp2, &pki, "connector-a").await;
    let receipts = log_marked(&mut client, "secret").await;
    log_a_saved_view(&mut client, "viewed").await;
    client.close().await;
    let (status, log) = tokio::task::spawn_blocking(move || serve.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{log}");

    let dumped = dump(&db).await;
    assert!(!dumped.is_empty());
    assert_nothing_of(&dumped, YES, "the payload");
    assert_nothing_of(&dumped, MARKER.as_bytes(), "the header marker");
    assert_nothing_of_the_view(&dumped);
    assert_view_saved(db.instance_with(dev_sealing(dir)).await.as_ref(), "viewed").await;
    let export = export_and_verify(dir, "secret", &receipts, &env);
    assert_no_confirmable_hash(&dumped, &export);
    db.drop_database().await;
}

fn keyring(keys: &[(&str, u8, bool)]) -> Sealing {
    let keys = keys
        .iter()
        .map(|(id, byte, active)| ((*id).to_owned(), [*byte; 32], *active))
        .collect();
    Sealing::with_keyring(Keyring::new(keys).unwrap())
}

fn entry(pid: &str, n: u32) -> NewEntry {
    NewEntry {
        pid: pid.to_owned(),
        client_id: "a".to_owned(),
        header: json!({"@type": "ids:LogMessage", "n": n}),
        payload: Bytes::from(format!("payload {n}")),
        payload_type: "text/plain".to_owned(),
    }
}

async fn fill(store: &dyn ProcessStore, pid: &str, entries: u32) {
    store
        .create_process(pid, &["a".to_owned()].into())
        .await
        .unwrap();
    for n in 1..=entries {
        store.append(entry(pid, n).prepare()).await.unwrap();
    }
}

fn corrupt_naming(result: Result<Vec<clearinghouse::store::Entry>, StoreError>, entry: &str) {
    match result {
        Err(StoreError::Corrupt(detail)) => {
            assert!(detail.contains(entry), "{detail}");
            assert!(detail.contains("does not decrypt"), "{detail}");
        }
        other => panic!("expected the moved ciphertext of {entry} to be named, got {other:?}"),
    }
}

#[tokio::test]
async fn ciphertext_moved_within_redb_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store = EmbeddedStore::open_with(&path, keyring(&[("k", 1, true)])).unwrap();
        fill(&store, "p-1", 2).await;
        fill(&store, "p-2", 1).await;
    }
    {
        let database = redb::Database::open(&path).unwrap();
        let transaction = database.begin_write().unwrap();
        let mut p1 = stored_entries::records(&transaction, "p-1");
        let first = p1[&1].clone();
        let second = p1[&2].clone();
        // Entries 1 and 2 of p-1 swapped; p-2's only entry replaced by p-1's first.
        p1.insert(1, second);
        p1.insert(2, first.clone());
        stored_entries::replace(&transaction, "p-1", &p1);
        stored_entries::replace(&transaction, "p-2", &BTreeMap::from([(1, first)]));
        transaction.commit().unwrap();
    }
    let store = EmbeddedStore::open_with(&path, keyring(&[("k", 1, true)])).unwrap();
    corrupt_naming(store.entries_from("p-1", 1, 10).await, "p-1/1");
    corrupt_naming(store.entries_from("p-1", 2, 10).await, "p-1/2");
    corrupt_naming(store.entries_from("p-2", 1, 10).await, "p-2/1");
}

#[tokio::test]
async fn ciphertext_moved_within_mongodb_is_named() {
    let Some(db) = TestDatabase::new() else {
        return;
    };
    let store = db.instance_with(keyring(&[("k", 1, true)])).await;
    fill(store.as_ref(), "p-1", 2).await;
    fill(store.as_ref(), "p-2", 1).await;
    let entries = db
        .raw()
        .await
        .collection::<mongodb::bson::Document>("entries");
    let sealed = |pid: &str, sequence: i64| {
        let entries = entries.clone();
        let pid = pid.to_owned();
        async move {
            let found = entries
                .find_one(mongodb::bson::doc! { "pid": pid, "sequence": sequence })
                .await
                .unwrap()
                .unwrap();
            (
                found.get("payload").unwrap().clone(),
                found.get("sealed_header").unwrap().clone(),
            )
        }
    };
    let first = sealed("p-1", 1).await;
    let second = sealed("p-1", 2).await;
    for (pid, sequence, (payload, header)) in [
        ("p-1", 1, second),
        ("p-1", 2, first.clone()),
        ("p-2", 1, first),
    ] {
        entries
            .update_one(
                mongodb::bson::doc! { "pid": pid, "sequence": sequence as i64 },
                mongodb::bson::doc! { "$set": { "payload": payload, "sealed_header": header } },
            )
            .await
            .unwrap();
    }
    corrupt_naming(store.entries_from("p-1", 1, 1).await, "p-1/1");
    corrupt_naming(store.entries_from("p-1", 2, 1).await, "p-1/2");
    corrupt_naming(store.entries_from("p-2", 1, 1).await, "p-2/1");
    db.drop_database().await;
}

#[tokio::test]
async fn a_store_written_before_encryption_keeps_working_beside_encrypted_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        // As every store was before encryption existed.
        let store = EmbeddedStore::open(&path).unwrap();
        fill(&store, "before", 2).await;
    }
    let store = EmbeddedStore::open_with(&path, keyring(&[("k", 1, true)])).unwrap();
    check_mixed(&store).await;
}

#[tokio::test]
async fn a_mongodb_database_written_before_encryption_keeps_working() {
    let Some(db) = TestDatabase::new() else {
        return;
    };
    fill(db.instance().await.as_ref(), "before", 2).await;
    let store = db.instance_with(keyring(&[("k", 1, true)])).await;
    check_mixed(store.as_ref()).await;
    db.drop_database().await;
}

/// `before` holds two plaintext entries: they read and verify as version 1, a new process is
/// encrypted, and the store names only the new process's KEK.
async fn check_mixed(store: &dyn ProcessStore) {
    let old = store.entries_from("before", 1, 10).await.unwrap();
    assert_eq!(old.len(), 2);
    assert!(old
        .iter()
        .all(|entry| entry.protection == Protection::Plaintext));
    assert_eq!(old[1].payload, Bytes::from("payload 2"));
    fill(store, "after", 1).await;
    let new = store.entries_from("after", 1, 10).await.unwrap();
    assert!(matches!(new[0].protection, Protection::Encrypted { .. }));
    assert_eq!(new[0].payload, Bytes::from("payload 1"));
    // Appending to an old process keeps it plaintext: its data never had a key.
    store.append(entry("before", 3).prepare()).await.unwrap();
    for pid in ["before", "after"] {
        clearinghouse::audit::verify_store(store, pid)
            .await
            .unwrap();
    }
    assert_eq!(
        store.data_key_keks().await.unwrap(),
        ["k".to_owned()].into()
    );
}

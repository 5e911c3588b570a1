//! Auditor tools against a log written through real IDSCP2: exports round-trip and verify, and
//! tampering with the store or with an export is detected and the first bad entry named.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use clearinghouse::audit::{
    export_process, verify_export, verify_receipt, verify_store, AuditError,
};
use clearinghouse::store::chain::ChainError;
use clearinghouse::store::{EmbeddedStore, ProcessStore};

use crate::support::clearing::TestClearingHouse;
use crate::support::stored_entries;

const PID: &str = "audited";

/// Logs four entries and returns the clearing house (stopped) and the receipts.
async fn logged() -> (TestClearingHouse, Vec<String>) {
    let ch = TestClearingHouse::start().await;
    let mut client = ch.client("connector-a").await;
    let mut receipts = vec![];
    for i in 1..=4 {
        let reply = client
            .log(PID, Bytes::from(format!("entry {i}")), Some("text/plain"))
            .await
            .unwrap();
        receipts.push(reply.json().unwrap()["data"].as_str().unwrap().to_owned());
    }
    client.close().await;
    (ch, receipts)
}

async fn export(store: &dyn ProcessStore) -> Vec<String> {
    let mut out = Vec::new();
    assert_eq!(export_process(store, PID, &mut out).await.unwrap(), 4);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn verify_lines(lines: &[String]) -> Result<u64, AuditError> {
    verify_export(PID, Cursor::new(lines.join("\n"))).map(|verified| verified.head.sequence)
}

#[tokio::test]
async fn an_export_verifies_and_its_receipts_match_its_entries() {
    let (ch, receipts) = logged().await;
    let lines = export(ch.store.as_ref()).await;
    assert_eq!(verify_lines(&lines).unwrap(), 4);
    assert_eq!(
        verify_store(ch.store.as_ref(), PID)
            .await
            .unwrap()
            .head
            .sequence,
        4
    );
    for receipt in &receipts {
        let claims = verify_receipt(&ch.jwks, receipt, None).unwrap();
        let entry = ch
            .store
            .entry(PID, &claims.document_id)
            .await
            .unwrap()
            .unwrap();
        verify_receipt(&ch.jwks, receipt, Some(&entry)).unwrap();
    }
    // A receipt checked against another entry is refused.
    let other = ch.store.entries_from(PID, 1, 1).await.unwrap().remove(0);
    assert!(matches!(
        verify_receipt(&ch.jwks, &receipts[3], Some(&other)),
        Err(AuditError::ReceiptMismatch(_))
    ));
}

#[tokio::test]
async fn tampered_exports_name_the_first_bad_entry() {
    let (ch, _) = logged().await;
    let lines = export(ch.store.as_ref()).await;

    let mut modified = lines.clone();
    modified[1] = modified[1].replace("ZW50cnkgMg==", "ZW50cnkgOQ=="); // "entry 2" -> "entry 9"
    assert_ne!(modified[1], lines[1]);
    assert!(matches!(
        verify_lines(&modified),
        Err(AuditError::Chain(ChainError::Modified { sequence: 2, .. }))
    ));

    let mut deleted = lines.clone();
    deleted.remove(1);
    assert!(matches!(
        verify_lines(&deleted),
        Err(AuditError::Chain(ChainError::Missing { sequence: 2, .. }))
    ));

    let mut reordered = lines.clone();
    reordered.swap(1, 2);
    assert!(matches!(
        verify_lines(&reordered),
        Err(AuditError::Chain(ChainError::Reordered { sequence: 2, .. }))
    ));
}

/// Stops the clearing house, edits the records of its entries in the redb file underneath it,
/// and verifies from a fresh store.
async fn verify_after(
    ch: TestClearingHouse,
    tamper: impl FnOnce(&mut BTreeMap<u64, Vec<u8>>),
) -> Result<u64, AuditError> {
    let path = ch.store_path.clone();
    let data = ch.data.clone();
    let store = ch.stop().await;
    drop(Arc::into_inner(store).expect("no one else holds the store"));
    {
        let db = redb::Database::open(&path).unwrap();
        let tx = db.begin_write().unwrap();
        let mut records = stored_entries::records(&tx, PID);
        tamper(&mut records);
        stored_entries::replace(&tx, PID, &records);
        tx.commit().unwrap();
    }
    let store = EmbeddedStore::open(&path).unwrap();
    let result = verify_store(&store, PID)
        .await
        .map(|verified| verified.head.sequence);
    drop(data);
    result
}

#[tokio::test]
async fn a_modified_entry_in_the_store_is_detected() {
    let (ch, _) = logged().await;
    let result = verify_after(ch, |records| {
        let bytes = records.get_mut(&2).unwrap();
        // The payload is the record's last field: change its last byte.
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
    })
    .await;
    assert!(
        matches!(
            result,
            Err(AuditError::Chain(ChainError::Modified { sequence: 2, .. }))
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_deleted_entry_in_the_store_is_detected() {
    let (ch, _) = logged().await;
    let result = verify_after(ch, |records| {
        records.remove(&2).unwrap();
    })
    .await;
    assert!(
        matches!(
            result,
            Err(AuditError::Chain(ChainError::Missing { sequence: 2, .. }))
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn reordered_entries_in_the_store_are_detected() {
    let (ch, _) = logged().await;
    let result = verify_after(ch, |records| {
        let third = records.remove(&3).unwrap();
        let second = records.insert(2, third).unwrap();
        records.insert(3, second);
    })
    .await;
    // Entry 3's record now sits at sequence 2: its hash no longer fits its place.
    assert!(
        matches!(
            result,
            Err(AuditError::Chain(ChainError::Modified { sequence: 2, .. }))
        ),
        "{result:?}"
    );
}

//! Erasure by crypto-shredding, end to end through the real binary on both stores: an admin
//! erases a process through the clearing house's door (a non-admin cannot), the content is gone
//! from queries and exports, the chain and every receipt still verify, logging to the process is
//! refused, auditors see who erased it and when, and the data key is no longer in the store, nor
//! the process's saved view (a view query answers an empty view marked erased). An operator can
//! erase offline too.

use std::path::Path;
use std::process::Output;

use bytes::Bytes;
use clearinghouse::ids::ViewKind;
use clearinghouse::store::{ProcessContent, ProcessStore};
use redb::ReadableDatabase;
use serde_json::Value;

use crate::encryption::{log_a_saved_view, verify_receipts_with_export};
use crate::support::cli::*;
use crate::support::mongo::{serve_env, TestDatabase};

fn json(output: Output) -> Value {
    serde_json::from_str(&ok(output)).unwrap()
}

fn rejected(output: Output, reason: &str) -> String {
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{message}");
    assert!(message.contains(reason), "{message}");
    message
}

/// Logs two entries to `erased` (and one to `kept`), erases `erased` through the server as the
/// admin connector-b, and checks what owners and auditors see while it runs; returns the
/// receipts of `erased`.
fn erase_through_the_server(dir: &Path, env: &[(&str, &str)]) -> Vec<String> {
    let pki = dir.join("data/dev-pki");
    let admin = connector_id(&pki, "connector-b");
    let admins = format!("[{admin:?}]");
    let mut env = env.to_vec();
    env.push(("CH_ADMIN_IDENTITIES", &admins));
    let serve = Serve::start(dir, &[], &env);
    let cli = |name: &str, args: &[&str]| run_client(dir, &serve.idscp2, &pki, name, args);

    let mut receipts = Vec::new();
    for data in ["first", "second"] {
        let logged = json(cli(
            "connector-a",
            &["log", "--pid", "erased", "--data", data],
        ));
        receipts.push(logged["receipt"].as_str().unwrap().to_owned());
    }
    ok(cli(
        "connector-a",
        &["log", "--pid", "kept", "--data", "stays"],
    ));

    // Owners may not erase; admins may, without owning the process.
    rejected(
        cli("connector-a", &["erase", "--pid", "erased"]),
        "NOT_AUTHORIZED",
    );
    rejected(
        cli("connector-b", &["erase", "--pid", "nowhere"]),
        "NOT_FOUND",
    );
    let erased = json(cli("connector-b", &["erase", "--pid", "erased"]));
    assert_eq!(erased["erasure"]["by"], admin.as_str());
    assert!(
        erased["erasure"]["at"].as_str().unwrap().ends_with('Z'),
        "{erased}"
    );
    // Erasing again changes nothing: the first erasure is what is recorded.
    let again = json(cli("connector-b", &["erase", "--pid", "erased"]));
    assert_eq!(again["erasure"], erased["erasure"]);

    // No more entries; the content is withheld and marked; the erasure is visible.
    let refusal = rejected(
        cli(
            "connector-a",
            &["log", "--pid", "erased", "--data", "third"],
        ),
        "BAD_PARAMETERS",
    );
    assert!(refusal.contains("was erased"), "{refusal}");
    let page = json(cli(
        "connector-a",
        &["query", "--pid", "erased", "--format", "json"],
    ));
    let documents = page["documents"].as_array().unwrap();
    assert_eq!(documents.len(), 2, "{page}");
    for document in documents {
        assert_eq!(document["erased"], true, "{document}");
        assert_eq!(document["payload"], "", "{document}");
        assert!(document.get("ids:contentVersion").is_none());
    }
    let info = json(cli("connector-a", &["info", "--pid", "erased"]));
    assert_eq!(info["content"], "erased");
    assert_eq!(info["erasure"], erased["erasure"]);
    assert_eq!(info["entries"], 2);
    let kept = json(cli("connector-a", &["info", "--pid", "kept"]));
    assert_eq!(kept["content"], "encrypted");
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
    receipts
}

/// With the server stopped: the chain verifies and names the unverifiable entries, the export
/// carries no content, and every receipt still verifies against it.
fn audit_after_erasure(dir: &Path, env: &[(&str, &str)], receipts: &[String], by: &str) {
    let verified = ok(run_with_env(
        dir,
        &["verify", "chain", "--pid", "erased"],
        env,
        b"",
    ));
    assert!(verified.contains("OK (2 entries"), "{verified}");
    assert!(
        verified.contains(&format!("was erased by {by}")),
        "{verified}"
    );
    assert!(
        verified.contains("content of entries 1 to 2 can no longer be checked"),
        "{verified}"
    );
    let export = dir.join("erased.jsonl");
    let export_arg = export.to_str().unwrap();
    ok(run_with_env(
        dir,
        &["export", "--pid", "erased", "--output", export_arg],
        env,
        b"",
    ));
    let text = std::fs::read_to_string(&export).unwrap();
    for line in text.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["content"], "erased", "{line}");
        assert_eq!(
            (&line["header"], &line["payload"]),
            (&Value::Null, &Value::from(""))
        );
    }
    let from_export = ok(run(
        dir,
        &["verify", "chain", "--pid", "erased", "--export", export_arg],
    ));
    assert!(
        from_export.contains("content of entries 1 to 2"),
        "{from_export}"
    );
    verify_receipts_with_export(dir, env, export_arg, receipts);
}

/// The store as the server left it: `erased` has no data key any more, `kept` still has one.
async fn assert_key_gone(store: &dyn ProcessStore) {
    let erased = store.process("erased").await.unwrap().unwrap();
    assert!(
        matches!(erased.content, ProcessContent::Erased(_)),
        "{erased:?}"
    );
    assert_eq!(
        store.data_key_keks().await.unwrap(),
        ["development".to_owned()].into(),
        "only kept's key is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_through_the_server_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_path_buf();
    let pki = dev_pki(&dir);
    let admin = connector_id(&pki, "connector-b");
    let receipts = tokio::task::block_in_place(|| erase_through_the_server(&dir, &[]));
    tokio::task::block_in_place(|| audit_after_erasure(&dir, &[], &receipts, &admin));
    let store = clearinghouse::store::EmbeddedStore::open_with(
        dir.join("data/clearinghouse.redb"),
        dev_sealing(&dir),
    )
    .unwrap();
    assert_key_gone(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_through_the_server_on_mongodb() {
    let Some(db) = TestDatabase::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_path_buf();
    let pki = dev_pki(&dir);
    let admin = connector_id(&pki, "connector-b");
    let env = serve_env(&db.uri, &db.name);
    let receipts = tokio::task::block_in_place(|| erase_through_the_server(&dir, &env));
    tokio::task::block_in_place(|| audit_after_erasure(&dir, &env, &receipts, &admin));
    assert_key_gone(db.instance_with(dev_sealing(&dir)).await.as_ref()).await;
    // In the document itself: the wrapped key is gone, the erasure is there.
    let document = db
        .raw()
        .await
        .collection::<mongodb::bson::Document>("processes")
        .find_one(mongodb::bson::doc! { "_id": "erased" })
        .await
        .unwrap()
        .unwrap();
    assert!(document.get("data_key").is_none(), "{document}");
    assert_eq!(
        document
            .get_document("erasure")
            .unwrap()
            .get_str("by")
            .unwrap(),
        admin
    );
    db.drop_database().await;
}

#[test]
fn an_operator_erases_a_stopped_store_offline() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    let serve = Serve::start(dir, &[], &[]);
    let logged = json(run_client(
        dir,
        &serve.idscp2,
        &pki,
        "connector-a",
        &["log", "--pid", "p", "--data", "x"],
    ));
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");

    let erased = ok(run(
        dir,
        &["keys", "erase", "--pid", "p", "--by", "dpo-ticket-42"],
    ));
    assert!(
        erased.contains("process p erased by cli:dpo-ticket-42 at "),
        "{erased}"
    );
    let verified = ok(run(dir, &["verify", "chain", "--pid", "p"]));
    assert!(
        verified.contains("was erased by cli:dpo-ticket-42"),
        "{verified}"
    );
    assert!(
        verified.contains("content of entry 1 can no longer be checked"),
        "{verified}"
    );
    let exported = ok(run(dir, &["export", "--pid", "p"]));
    assert!(exported.contains("\"content\":\"erased\""), "{exported}");
    assert!(
        exported.contains(logged["claims"]["entry_hash"].as_str().unwrap()),
        "{exported}"
    );

    // Erasing again keeps the first erasure on record.
    let again = ok(run(
        dir,
        &["keys", "erase", "--pid", "p", "--by", "someone-else"],
    ));
    assert!(again.contains("erased by cli:dpo-ticket-42"), "{again}");
}

/// Saves a view of `viewed` through the server (its owner connector-a logs and queries), has
/// the admin connector-b erase it, and checks that the view query then answers an empty view
/// marked erased, as the entries' query marks their documents.
async fn erase_a_viewed_process(dir: &Path, env: &[(&str, &str)]) {
    let pki = dir.join("data/dev-pki");
    let admins = format!("[{:?}]", connector_id(&pki, "connector-b"));
    let mut env = env.to_vec();
    env.push(("CH_ADMIN_IDENTITIES", &admins));
    let serve = Serve::start(dir, &[], &env);
    let mut owner = library_client(&serve.idscp2, &pki, "connector-a").await;
    log_a_saved_view(&mut owner, "viewed").await;
    let mut admin = library_client(&serve.idscp2, &pki, "connector-b").await;
    let erased = admin.erase("viewed").await.unwrap();
    assert_eq!(erased.message_type, "ids:ResultMessage", "{erased:?}");
    let view = owner
        .view("viewed", ViewKind::Transfers, None, None)
        .await
        .unwrap();
    assert_eq!(view.message_type, "ids:ResultMessage", "{view:?}");
    let view = view.json().unwrap();
    assert_eq!(view["erased"], true, "{view}");
    assert_eq!(view["transfers"], serde_json::json!([]), "{view}");
    assert_eq!(view["total"], 0, "{view}");
    // The owner's requests above read the process before the erasure; its next entry is
    // refused all the same.
    let late = owner
        .log_message("viewed", Bytes::from_static(b"late"), None, false)
        .await
        .unwrap();
    assert_eq!(late.message_type, "ids:RejectionMessage", "{late:?}");
    owner.close().await;
    admin.close().await;
    let (status, log) = tokio::task::spawn_blocking(move || serve.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_deletes_the_saved_view_in_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    dev_pki(dir);
    erase_a_viewed_process(dir, &[]).await;
    let database = redb::Database::open(dir.join("data/clearinghouse.redb")).unwrap();
    let read = database.begin_read().unwrap();
    let views = read
        .open_table(redb::TableDefinition::<&str, &[u8]>::new("views"))
        .unwrap();
    assert!(views.get("viewed").unwrap().is_none(), "the view is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_deletes_the_saved_view_in_mongodb() {
    let Some(db) = TestDatabase::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    dev_pki(dir);
    erase_a_viewed_process(dir, &serve_env(&db.uri, &db.name)).await;
    let views = db
        .raw()
        .await
        .collection::<mongodb::bson::Document>("views");
    let left = views
        .find_one(mongodb::bson::doc! { "_id": "viewed" })
        .await
        .unwrap();
    assert!(left.is_none(), "the view is left");
    db.drop_database().await;
}

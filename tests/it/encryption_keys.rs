//! KEK files and rotation through the real binary: KEK files that are missing, of the wrong
//! length, or configured twice, and a store whose data keys need a KEK that is not configured,
//! are refused at startup with exit code 2 and a message naming `store.encryption.keys`; `keys
//! rewrap` moves every data key to the active KEK (beside a live server on MongoDB), after which
//! the old KEK can go.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::support::cli::*;
use crate::support::mongo::{serve_env, TestDatabase};

/// `store.encryption.keys` as an environment value.
fn keys(items: &[(&str, &str, bool)]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|(id, file, active)| format!("{{id = {id:?}, file = {file:?}, active = {active}}}"))
        .collect();
    format!("[{}]", items.join(", "))
}

fn refused(dir: &Path, args: &[&str], env: &[(&str, &str)], expected: &[&str]) {
    let output = run_with_env(dir, args, env, b"");
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("store.encryption.keys"), "{message}");
    for part in expected {
        assert!(message.contains(part), "{part:?} not in: {message}");
    }
}

#[test]
fn unusable_kek_files_are_refused_at_startup_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    dev_pki(dir);
    ok(run(dir, &["keys", "generate", "--output", "good.key"]));
    std::fs::write(dir.join("short.key"), [7u8; 31]).unwrap();
    let serve = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--ops-listen",
        "127.0.0.1:0",
    ];
    let cases = [
        (
            keys(&[("a", "missing.key", true)]),
            vec!["missing.key", "cannot read"],
        ),
        (
            keys(&[("a", "short.key", true)]),
            vec!["short.key", "256-bit", "31 bytes"],
        ),
        (
            keys(&[("a", "good.key", true), ("a", "good.key", false)]),
            vec!["\"a\" appears more than once"],
        ),
        (
            keys(&[("a", "good.key", true), ("b", "good.key", true)]),
            vec!["exactly one"],
        ),
    ];
    for (setting, expected) in &cases {
        refused(
            dir,
            &serve,
            &[("CH_STORE_ENCRYPTION_KEYS", setting)],
            expected,
        );
    }
}

/// Logs one entry to each of `pids` through a server started with `env`, then stops it.
fn log_through_serve(dir: &Path, env: &[(&str, &str)], pids: &[&str]) {
    let pki = dir.join("data/dev-pki");
    let serve = Serve::start(dir, &[], env);
    for pid in pids {
        ok(run_client(
            dir,
            &serve.idscp2,
            &pki,
            "connector-a",
            &["log", "--pid", pid, "--data", "secret"],
        ));
    }
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
}

fn generate(dir: &Path, file: &str) {
    ok(run(dir, &["keys", "generate", "--output", file]));
}

#[test]
fn rewrap_moves_every_data_key_to_the_new_kek_and_the_old_one_can_go() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    dev_pki(dir);
    generate(dir, "old.key");
    generate(dir, "new.key");
    let old = keys(&[("old", "old.key", true)]);
    let both = keys(&[("old", "old.key", false), ("new", "new.key", true)]);
    let new = keys(&[("new", "new.key", true)]);
    log_through_serve(dir, &[("CH_STORE_ENCRYPTION_KEYS", &old)], &["p1", "p2"]);

    // Without the KEK its data keys are wrapped by, the store is refused, and so is a store
    // without encryption at all.
    let export = ["export", "--pid", "p1"];
    refused(
        dir,
        &export,
        &[("CH_STORE_ENCRYPTION_KEYS", &new)],
        &["\"old\""],
    );
    refused(
        dir,
        &export,
        &[("CH_STORE_ENCRYPTION_ENABLED", "false")],
        &["\"old\""],
    );

    let rewrapped = ok(run_with_env(
        dir,
        &["keys", "rewrap"],
        &[("CH_STORE_ENCRYPTION_KEYS", &both)],
        b"",
    ));
    assert!(
        rewrapped.contains("re-wrapped 2 data keys of 2 processes"),
        "{rewrapped}"
    );
    assert!(rewrapped.contains("{\"new\"}"), "{rewrapped}");
    // Nothing left to do the second time.
    let again = ok(run_with_env(
        dir,
        &["keys", "rewrap"],
        &[("CH_STORE_ENCRYPTION_KEYS", &both)],
        b"",
    ));
    assert!(again.contains("re-wrapped 0 data keys"), "{again}");

    // The old KEK is gone: everything reads and verifies with the new one alone.
    let env = [("CH_STORE_ENCRYPTION_KEYS", new.as_str())];
    for pid in ["p1", "p2"] {
        let verified = ok(run_with_env(
            dir,
            &["verify", "chain", "--pid", pid],
            &env,
            b"",
        ));
        assert!(verified.contains("OK (1 entry"), "{verified}");
        let exported = ok(run_with_env(dir, &["export", "--pid", pid], &env, b""));
        assert!(exported.contains("\"content\":\"encrypted\""), "{exported}");
        assert!(
            exported.contains(&format!("\"payload\":\"{}\"", base64_of(b"secret"))),
            "{exported}"
        );
    }
    refused(
        dir,
        &export,
        &[("CH_STORE_ENCRYPTION_KEYS", &old)],
        &["\"new\""],
    );
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrap_beside_a_live_server_on_mongodb_loses_no_entry() {
    let Some(db) = TestDatabase::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    generate(dir, "old.key");
    generate(dir, "new.key");
    let old = keys(&[("old", "old.key", true)]);
    let both = keys(&[("old", "old.key", false), ("new", "new.key", true)]);
    let with = |keys: &str| {
        let mut env: Vec<(String, String)> = serve_env(&db.uri, &db.name)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        env.push(("CH_STORE_ENCRYPTION_KEYS".into(), keys.to_owned()));
        env
    };
    let env_old = with(&old);
    let pids: Vec<String> = (0..20).map(|n| format!("p{n}")).collect();
    {
        let env: Vec<(&str, &str)> = env_old
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let serve = Serve::start(dir, &[], &env);
        let mut client = library_client(&serve.idscp2, &pki, "connector-a").await;
        for pid in &pids {
            let reply = client
                .log(pid, Bytes::from_static(b"before"), None)
                .await
                .unwrap();
            assert!(!reply.is_rejection(), "{reply:?}");
        }
        client.close().await;
        let (status, log) = tokio::task::spawn_blocking(move || serve.terminate())
            .await
            .unwrap();
        assert!(status.success(), "{log}");
    }

    // The server knows both KEKs; it keeps logging to every process while `keys rewrap` runs.
    let env_both = with(&both);
    let env: Vec<(&str, &str)> = env_both
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let serve = Serve::start(dir, &[], &env);
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn({
        let server = serve.idscp2.clone();
        let pki = pki.clone();
        let pids = pids.clone();
        let stop = Arc::clone(&stop);
        async move {
            let mut client = library_client(&server, &pki, "connector-a").await;
            let mut logged = 0u64;
            while !stop.load(Ordering::SeqCst) {
                for pid in &pids {
                    let reply = client
                        .log(pid, Bytes::from_static(b"during"), None)
                        .await
                        .unwrap();
                    assert!(!reply.is_rejection(), "{reply:?}");
                    logged += 1;
                }
            }
            client.close().await;
            logged
        }
    });
    let rewrap_dir = dir.to_path_buf();
    let rewrap_env = env_both.clone();
    let rewrapped = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = rewrap_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        ok(run_with_env(&rewrap_dir, &["keys", "rewrap"], &env, b""))
    })
    .await
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    let logged_during = traffic.await.unwrap();
    assert!(
        logged_during >= pids.len() as u64,
        "traffic ran: {logged_during}"
    );
    assert!(rewrapped.contains("re-wrapped 20 data keys"), "{rewrapped}");
    assert!(rewrapped.contains("{\"new\"}"), "{rewrapped}");
    let (status, log) = tokio::task::spawn_blocking(move || serve.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{log}");

    // With the new KEK alone every entry, before and during the rewrap, decrypts and verifies.
    let store = db
        .instance_with({
            use clearinghouse::store::sealing::{KekFile, Keyring};
            clearinghouse::store::Sealing::with_keyring(
                Keyring::load(&[KekFile {
                    id: "new".into(),
                    file: dir.join("new.key"),
                    active: true,
                }])
                .unwrap(),
            )
        })
        .await;
    let mut entries = 0;
    for pid in &pids {
        let verified = clearinghouse::audit::verify_store(store.as_ref(), pid)
            .await
            .unwrap();
        entries += verified.head.sequence;
        let all = clearinghouse::store::ProcessStore::entries_from(store.as_ref(), pid, 1, 10_000)
            .await
            .unwrap();
        assert!(all[1..]
            .iter()
            .all(|entry| entry.payload == Bytes::from_static(b"during")));
    }
    assert_eq!(entries, pids.len() as u64 + logged_during);
    db.drop_database().await;
}

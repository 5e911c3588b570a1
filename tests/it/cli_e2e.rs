//! The whole life of a clearing house through the real binary: `dev-pki`, `serve`, `client`
//! create / log / query / get, `/metrics` and the other operations routes, SIGTERM, then
//! `export` and `verify` of receipts and chain, including tampered ones.

use crate::support::cli::*;
use serde_json::Value;

#[test]
fn log_query_verify_export_and_metrics_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    assert!(pki.join("ca.crt").exists() && pki.join("receipt-es256.key").exists());
    let serve = Serve::start(dir, &[], &[]);
    let server = serve.idscp2.clone();

    assert_eq!(
        ok(client_a(dir, &server, &pki, &["create", "--pid", "p1"])).trim(),
        "p1"
    );
    let again = client_a(dir, &server, &pki, &["create", "--pid", "p1"]);
    assert_eq!(again.status.code(), Some(4), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    let mut receipts = Vec::new();
    for message in ["first", "second"] {
        let out = ok(client_a(
            dir,
            &server,
            &pki,
            &["log", "--pid", "p1", "--data", message, "--raw"],
        ));
        receipts.push(out.trim().to_owned());
    }
    std::fs::write(dir.join("third.txt"), "third").unwrap();
    let decoded: Value = serde_json::from_str(&ok(client_a(
        dir,
        &server,
        &pki,
        &[
            "log",
            "--pid",
            "p1",
            "--file",
            "third.txt",
            "--content-type",
            "text/plain",
        ],
    )))
    .unwrap();
    assert_eq!(decoded["claims"]["sequence"], 3);
    assert_eq!(decoded["claims"]["process_id"], "p1");
    receipts.push(decoded["receipt"].as_str().unwrap().to_owned());
    let stdin_log = run_with_input(
        dir,
        &client_args(&server, &pki, "connector-a")
            .iter()
            .map(String::as_str)
            .chain(["log", "--pid", "p1", "--raw"])
            .collect::<Vec<_>>(),
        b"fourth",
    );
    receipts.push(ok(stdin_log).trim().to_owned());

    let page: Value = serde_json::from_str(&ok(client_a(
        dir,
        &server,
        &pki,
        &[
            "query", "--pid", "p1", "--all", "--size", "3", "--format", "json",
        ],
    )))
    .unwrap();
    assert_eq!(page["total"], 4);
    let payloads: Vec<&str> = page["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["first", "second", "third", "fourth"]);
    let table = ok(client_a(dir, &server, &pki, &["query", "--pid", "p1"]));
    assert!(
        table.contains("document_id") && table.contains("fourth"),
        "{table}"
    );
    let document_id = decoded["claims"]["document_id"].as_str().unwrap();
    let one: Value = serde_json::from_str(&ok(client_a(
        dir,
        &server,
        &pki,
        &["get", "--pid", "p1", "--id", document_id],
    )))
    .unwrap();
    assert_eq!(one["payload"], "third");
    let missing = client_a(dir, &server, &pki, &["query", "--pid", "nope"]);
    assert_eq!(missing.status.code(), Some(4));

    // Receipts against the JWKS the operations endpoint publishes.
    let jwks_url = format!("http://{}/.well-known/jwks.json", serve.ops);
    let mut args = vec!["verify", "receipt", "--jwks", &jwks_url];
    args.extend(receipts.iter().map(String::as_str));
    let verified = ok(run(dir, &args));
    assert_eq!(verified.matches(": OK").count(), 4, "{verified}");
    let mut forged = receipts[0].clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let bad = run(dir, &["verify", "receipt", "--jwks", &jwks_url, &forged]);
    assert_eq!(bad.status.code(), Some(3), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("receipt 1"), "{}", stderr(&bad));

    // Operations endpoint.
    assert_eq!(serve.get("/health").0, 200);
    let (status, ready) = serve.get("/ready");
    assert_eq!((status, ready.as_str()), (200, r#"{"ready":true}"#));
    let (_, published) = serve.get("/.well-known/jwks.json");
    let printed = ok(run(dir, &["jwks"]));
    assert_eq!(
        serde_json::from_str::<Value>(&published).unwrap(),
        serde_json::from_str::<Value>(&printed).unwrap()
    );
    let (status, metrics) = serve.get("/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&metrics, "clearinghouse_receipts_signed_total"),
        4.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"clearinghouse_messages_total{type="log",outcome="ok",door="idscp2"}"#
        ),
        4.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"clearinghouse_messages_total{type="request",outcome="ok",door="idscp2"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"clearinghouse_messages_total{type="request",outcome="BAD_PARAMETERS",door="idscp2"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"clearinghouse_messages_total{type="query",outcome="NOT_FOUND",door="idscp2"}"#
        ),
        1.0
    );
    // One IDSCP2 connection per client command so far.
    assert_eq!(
        metric(&metrics, r#"clearinghouse_handshakes_total{outcome="ok"}"#),
        10.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE clearinghouse_connections_open gauge"),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"clearinghouse_request_duration_seconds_count{type="log",door="idscp2"}"#
        ),
        4.0
    );
    assert!(
        metric(
            &metrics,
            r#"clearinghouse_store_duration_seconds_count{operation="append"}"#
        ) >= 4.0
    );

    let (status, log) = serve.terminate();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        !log.contains("fourth") && !log.contains("BEGIN"),
        "logs carry no payloads or keys"
    );

    // Offline: export, chain from the export and from the store, receipts against entries.
    ok(run(dir, &["export", "--pid", "p1", "--output", "p1.jsonl"]));
    let export = std::fs::read_to_string(dir.join("p1.jsonl")).unwrap();
    assert_eq!(export.lines().count(), 4);
    assert!(ok(run(
        dir,
        &["verify", "chain", "--pid", "p1", "--export", "p1.jsonl"]
    ))
    .contains("OK (4 entries"));
    assert!(ok(run(dir, &["verify", "chain", "--pid", "p1"])).contains("OK (4 entries"));
    let printed_jwks = dir.join("jwks.json");
    std::fs::write(&printed_jwks, printed).unwrap();
    let mut args = vec![
        "verify",
        "receipt",
        "--jwks",
        "jwks.json",
        "--export",
        "p1.jsonl",
    ];
    args.extend(receipts.iter().map(String::as_str));
    ok(run(dir, &args));

    // A modified entry is named.
    let mut lines: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines[1]["payload"] = Value::from("c2Vjb25k"); // "second", unchanged...
    lines[1]["payload_type"] = Value::from("text/html"); // ...but the media type is not
    let tampered: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("tampered.jsonl"), tampered).unwrap();
    let bad = run(
        dir,
        &[
            "verify",
            "chain",
            "--pid",
            "p1",
            "--export",
            "tampered.jsonl",
        ],
    );
    assert_eq!(bad.status.code(), Some(3), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("entry 2"), "{}", stderr(&bad));
    let mut args = vec![
        "verify",
        "receipt",
        "--jwks",
        "jwks.json",
        "--export",
        "tampered.jsonl",
    ];
    args.push(&receipts[1]);
    assert_eq!(run(dir, &args).status.code(), Some(3));
}

/// Large payloads are hashed, and RSA receipts signed, on the offload threads rather than on the
/// async workers that serve every connection: the server's own count says where the work ran.
#[test]
fn rsa_receipts_and_large_payloads_are_worked_off_the_async_workers() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    let rsa_key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/receipt-rsa.key"
    );
    let serve = Serve::start(
        dir,
        &[],
        &[
            ("CH_RECEIPT_ALGORITHM", "PS512"),
            ("CH_RECEIPT_KEY", rsa_key),
        ],
    );
    let server = serve.idscp2.clone();
    let large = vec![b'x'; 1 << 20];
    std::fs::write(dir.join("large.bin"), &large).unwrap();

    let small = ok(client_a(
        dir,
        &server,
        &pki,
        &["log", "--pid", "p1", "--data", "small", "--raw"],
    ));
    let logged: Value = serde_json::from_str(&ok(client_a(
        dir,
        &server,
        &pki,
        &["log", "--pid", "p1", "--file", "large.bin"],
    )))
    .unwrap();
    assert_eq!(
        logged["claims"]["payload_hash"],
        clearinghouse::receipt::payload_hash(&large),
        "{logged}"
    );

    let (_, metrics) = serve.get("/metrics");
    assert_eq!(
        metric(
            &metrics,
            r#"clearinghouse_offloaded_total{work="receipt_signature"}"#
        ),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"clearinghouse_offloaded_total{work="payload_hash"}"#
        ),
        1.0,
        "only the large payload is handed over: {metrics}"
    );
    let jwks_url = format!("http://{}/.well-known/jwks.json", serve.ops);
    let receipts = [small.trim(), logged["receipt"].as_str().unwrap()];
    let mut args = vec!["verify", "receipt", "--jwks", &jwks_url];
    args.extend(receipts);
    let verified = ok(run(dir, &args));
    assert_eq!(verified.matches(": OK").count(), 2, "{verified}");
}

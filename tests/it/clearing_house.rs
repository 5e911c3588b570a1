//! The clearing house through a real IDSCP2 client and server on loopback: the conformance cases
//! of the reference's end-to-end suite, the fixes we promise, receipts, the hash chain, and
//! concurrency.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use clearinghouse::client::QueryOptions;
use clearinghouse::ids::{MessageType, Reply};
use clearinghouse::idscp2::proto::app::{
    app_layer_message, AppLayerMessage, GenericMessage, HeaderEntry,
};
use clearinghouse::store::chain::verify_chain;
use clearinghouse::store::ProcessStore;
use serde_json::{json, Value};

use crate::support::clearing::*;

fn receipt_of(reply: &Reply) -> String {
    assert_eq!(
        reply.message_type, "ids:MessageProcessedNotificationMessage",
        "{reply:?}"
    );
    reply.json().unwrap()["data"].as_str().unwrap().to_owned()
}

fn documents(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.message_type, "ids:ResultMessage", "{reply:?}");
    reply.json().unwrap()["documents"]
        .as_array()
        .unwrap()
        .clone()
}

fn payloads(reply: &Reply) -> Vec<String> {
    documents(reply)
        .iter()
        .map(|d| d["payload"].as_str().unwrap().to_owned())
        .collect()
}

fn options(page: u64, size: u64, sort: &str) -> QueryOptions {
    QueryOptions {
        page: Some(page),
        size: Some(size),
        sort: Some(sort.into()),
        ..QueryOptions::default()
    }
}

// ---- create ---------------------------------------------------------------------------------

#[tokio::test]
async fn create_without_owners_makes_the_caller_the_owner() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    let reply = a.create("p-1", &[]).await.unwrap();
    assert_eq!(
        reply.message_type,
        "ids:MessageProcessedNotificationMessage"
    );
    assert_eq!(reply.json(), Some(json!("p-1")));
    assert_eq!(reply.extra_header("ch-ids-pid"), Some("p-1"));
    let process = ch.store.process("p-1").await.unwrap().unwrap();
    assert_eq!(process.owners, BTreeSet::from([ch.id_of("connector-a")]));
}

#[tokio::test]
async fn create_with_an_extra_owner_lets_both_log_and_read() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    let mut b = ch.client("connector-b").await;
    let reply = a
        .create("shared", &[ch.id_of("connector-b")])
        .await
        .unwrap();
    assert!(!reply.is_rejection(), "{reply:?}");
    receipt_of(
        &b.log("shared", Bytes::from_static(b"from b"), Some("text/plain"))
            .await
            .unwrap(),
    );
    receipt_of(
        &a.log("shared", Bytes::from_static(b"from a"), Some("text/plain"))
            .await
            .unwrap(),
    );
    // The co-owner reads everything, as auditors do.
    let page = b.query("shared", &options(1, 10, "asc")).await.unwrap();
    assert_eq!(payloads(&page), ["from b", "from a"]);
}

#[tokio::test]
async fn duplicate_owners_collapse() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    let b = ch.id_of("connector-b");
    let me = ch.id_of("connector-a");
    let reply = a
        .create("dups", &[b.clone(), b.clone(), me.clone()])
        .await
        .unwrap();
    assert!(!reply.is_rejection(), "{reply:?}");
    let owners = ch.store.process("dups").await.unwrap().unwrap().owners;
    assert_eq!(owners, BTreeSet::from([b, me]));
}

#[tokio::test]
async fn creating_an_existing_process_is_409_for_owners_and_403_for_others() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    let mut b = ch.client("connector-b").await;
    a.create("taken", &[]).await.unwrap();
    assert_rejected(
        &a.create("taken", &[]).await.unwrap(),
        "BAD_PARAMETERS",
        409,
    );
    assert_rejected(
        &b.create("taken", &[]).await.unwrap(),
        "NOT_AUTHORIZED",
        403,
    );
}

#[tokio::test]
async fn malformed_owner_lists_are_400() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    let json_headers = |pid: &str| {
        vec![
            HeaderEntry {
                name: "ch-ids-pid".into(),
                value: pid.into(),
            },
            HeaderEntry {
                name: "Content-Type".into(),
                value: "application/json".into(),
            },
        ]
    };
    for (pid, body) in [
        ("m1", &b"{not json"[..]),
        ("m2", br#"{"owners": "connector-b"}"#),
        ("m3", br#"{"owners": [1, 2]}"#),
        ("m4", br#"["owners"]"#),
    ] {
        let reply = a
            .request(
                MessageType::Request,
                json_headers(pid),
                Bytes::from_static(body),
            )
            .await
            .unwrap();
        assert_rejected(&reply, "BAD_PARAMETERS", 400);
        assert!(ch.store.process(pid).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn invalid_and_reserved_pids_are_rejected() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    for pid in [
        "default",
        "",
        "has space",
        "{\"$gt\": \"\"}",
        &"x".repeat(256),
    ] {
        let reply = a.log(pid, Bytes::from_static(b"x"), None).await.unwrap();
        assert_rejected(&reply, "BAD_PARAMETERS", 400);
    }
}

// ---- log ------------------------------------------------------------------------------------

#[tokio::test]
async fn log_to_a_new_pid_creates_it_for_the_caller() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    let mut b = ch.client("connector-b").await;
    receipt_of(
        &a.log("fresh", Bytes::from_static(b"hello"), None)
            .await
            .unwrap(),
    );
    let owners = ch.store.process("fresh").await.unwrap().unwrap().owners;
    assert_eq!(owners, BTreeSet::from([ch.id_of("connector-a")]));
    // Now it is a's: b may neither log to it nor read it.
    assert_rejected(
        &b.log("fresh", Bytes::from_static(b"x"), None)
            .await
            .unwrap(),
        "NOT_AUTHORIZED",
        403,
    );
    assert_rejected(
        &b.query("fresh", &QueryOptions::default()).await.unwrap(),
        "NOT_AUTHORIZED",
        403,
    );
}

#[tokio::test]
async fn log_to_an_own_pid_appends_in_sequence() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    a.create("mine", &[]).await.unwrap();
    let mut sequences = vec![];
    for i in 0..3 {
        let receipt = receipt_of(
            &a.log("mine", Bytes::from(format!("entry {i}")), None)
                .await
                .unwrap(),
        );
        sequences.push(ch.jwks.verify(&receipt).unwrap().sequence);
    }
    assert_eq!(sequences, [1, 2, 3]);
}

#[tokio::test]
async fn empty_and_oversized_payloads_are_rejected() {
    let ch = TestClearingHouse::start_with(Limits {
        max_payload: 1024,
        ..Limits::default()
    })
    .await;
    let mut a = ch.client("connector-a").await;
    assert_rejected(
        &a.log("p", Bytes::new(), None).await.unwrap(),
        "BAD_PARAMETERS",
        400,
    );
    assert_rejected(
        &a.log("p", Bytes::from(vec![b'x'; 1025]), None)
            .await
            .unwrap(),
        "BAD_PARAMETERS",
        413,
    );
    receipt_of(
        &a.log("p", Bytes::from(vec![b'x'; 1024]), None)
            .await
            .unwrap(),
    );
}

// ---- receipts -------------------------------------------------------------------------------

#[tokio::test]
async fn receipts_verify_against_the_jwks_and_match_the_stored_entry() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    let payload = Bytes::from_static(br#"{"event": "transfer", "bytes": 1024}"#);
    let reply = a
        .log("receipts", payload.clone(), Some("application/json"))
        .await
        .unwrap();
    let claims = ch.jwks.verify(&receipt_of(&reply)).unwrap();
    let entry = ch
        .store
        .entry("receipts", &claims.document_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claims.iss, CH_CONNECTOR_ID);
    assert_eq!(claims.process_id, "receipts");
    assert_eq!(claims.sequence, entry.sequence);
    assert_eq!(claims.timestamp_ms, entry.timestamp_ms);
    assert_eq!(claims.timestamp, entry.timestamp_ms / 1000);
    assert_eq!(claims.client_id, ch.id_of("connector-a"));
    assert_eq!(claims.client_id, entry.client_id);
    assert_eq!(
        claims.payload_hash,
        clearinghouse::receipt::payload_hash(&payload)
    );
    assert_eq!(claims.entry_hash, hex::encode(entry.entry_hash));
    assert_eq!(claims.chain_hash, hex::encode(entry.chain_hash));
    assert_eq!(entry.payload, payload);
    assert_eq!(entry.payload_type, "application/json");
    // Tokens never reach the log.
    assert!(entry.header.get("ids:securityToken").is_none());
    assert_eq!(entry.header["@type"], "ids:LogMessage");
    // A receipt that was tampered with does not verify.
    let receipt = receipt_of(&reply);
    let mut parts: Vec<String> = receipt.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].replacen('e', "f", 1);
    assert!(ch.jwks.verify(&parts.join(".")).is_err());
}

// ---- query ----------------------------------------------------------------------------------

#[tokio::test]
async fn query_one_entry_by_id() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    let claims = ch
        .jwks
        .verify(&receipt_of(
            &a.log("one", Bytes::from_static(b"the entry"), Some("text/plain"))
                .await
                .unwrap(),
        ))
        .unwrap();
    a.log("other", Bytes::from_static(b"elsewhere"), None)
        .await
        .unwrap();

    let reply = a.get("one", &claims.document_id).await.unwrap();
    assert_eq!(reply.message_type, "ids:ResultMessage");
    let document = reply.json().unwrap();
    assert_eq!(document["@type"], "ids:LogMessage");
    assert_eq!(document["payload"], "the entry");
    assert_eq!(document["payload_encoding"], "utf-8");
    assert_eq!(document["document_id"], claims.document_id.as_str());
    assert_eq!(document["sequence"], 1);
    assert_eq!(document["chain_hash"], claims.chain_hash.as_str());

    assert_rejected(
        &a.get("one", "00000000-0000-4000-8000-000000000000")
            .await
            .unwrap(),
        "NOT_FOUND",
        404,
    );
    // An id that exists, but in another process.
    assert_rejected(
        &a.get("other", &claims.document_id).await.unwrap(),
        "NOT_FOUND",
        404,
    );
}

#[tokio::test]
async fn query_pages_of_a_process() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    a.create("empty", &[]).await.unwrap();
    let empty = a.query("empty", &QueryOptions::default()).await.unwrap();
    assert_eq!(documents(&empty), Vec::<Value>::new());
    assert_eq!(empty.json().unwrap()["total"], 0);
    assert_eq!(empty.json().unwrap()["pages"], 0);

    for i in 1..=3 {
        a.log("three", Bytes::from(format!("e{i}")), Some("text/plain"))
            .await
            .unwrap();
    }
    // Default order: newest first.
    let page = a.query("three", &QueryOptions::default()).await.unwrap();
    assert_eq!(payloads(&page), ["e3", "e2", "e1"]);
    let body = page.json().unwrap();
    assert_eq!(
        (
            body["page"].as_u64(),
            body["size"].as_u64(),
            body["total"].as_u64(),
            body["pages"].as_u64()
        ),
        (Some(1), Some(100), Some(3), Some(1))
    );
    assert_eq!(body["order"], "desc");
    assert_eq!(page.extra_header("ch-ids-total"), Some("3"));

    let asc = a.query("three", &options(2, 2, "asc")).await.unwrap();
    assert_eq!(payloads(&asc), ["e3"]);
    assert_eq!(asc.json().unwrap()["pages"], 2);
    let desc = a.query("three", &options(2, 2, "desc")).await.unwrap();
    assert_eq!(payloads(&desc), ["e1"]);
    let past_the_end = a.query("three", &options(9, 2, "asc")).await.unwrap();
    assert_eq!(documents(&past_the_end), Vec::<Value>::new());
    assert_eq!(past_the_end.json().unwrap()["total"], 3);

    assert_rejected(
        &a.query("nobody", &QueryOptions::default()).await.unwrap(),
        "NOT_FOUND",
        404,
    );
}

#[tokio::test]
async fn oversized_page_sizes_are_lowered_and_said_so() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    a.log("big", Bytes::from_static(b"x"), None).await.unwrap();
    let reply = a.query("big", &options(1, 5000, "asc")).await.unwrap();
    assert_eq!(reply.json().unwrap()["size"], 1000);
    assert_eq!(reply.extra_header("ch-ids-size"), Some("1000"));
}

#[tokio::test]
async fn a_page_larger_than_a_reply_may_be_is_too_many_results() {
    let ch = TestClearingHouse::start_with(Limits {
        max_reply: 4096,
        ..Limits::default()
    })
    .await;
    let mut a = ch.client("connector-a").await;
    for _ in 0..3 {
        receipt_of(
            &a.log("bulky", Bytes::from(vec![b'x'; 1500]), Some("text/plain"))
                .await
                .unwrap(),
        );
    }
    let reply = a.query("bulky", &options(1, 3, "asc")).await.unwrap();
    assert_rejected(&reply, "TOO_MANY_RESULTS", 400);
    // A smaller page fits, and the connection carries on.
    assert_eq!(
        documents(&a.query("bulky", &options(1, 1, "asc")).await.unwrap()).len(),
        1
    );
}

#[tokio::test]
async fn date_filters_are_inclusive_and_validated() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    let mut stamps = vec![];
    for i in 0..3 {
        let receipt = receipt_of(
            &a.log("dated", Bytes::from(format!("d{i}")), None)
                .await
                .unwrap(),
        );
        stamps.push(ch.jwks.verify(&receipt).unwrap().timestamp_ms);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let rfc3339 = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let window = |from: Option<String>, to: Option<String>| QueryOptions {
        sort: Some("asc".into()),
        date_from: from,
        date_to: to,
        ..QueryOptions::default()
    };
    // Instants: both bounds inclusive to the millisecond.
    let reply = a
        .query(
            "dated",
            &window(Some(rfc3339(stamps[1])), Some(rfc3339(stamps[2]))),
        )
        .await
        .unwrap();
    assert_eq!(payloads(&reply), ["d1", "d2"]);
    assert_eq!(reply.json().unwrap()["total"], 2);
    let reply = a
        .query("dated", &window(Some(rfc3339(stamps[2] + 1)), None))
        .await
        .unwrap();
    assert_eq!(payloads(&reply), Vec::<String>::new());

    // Whole days: today as both from and to includes everything logged today (no hidden
    // two-week window, and date_to = today works).
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let reply = a
        .query("dated", &window(Some(today.clone()), Some(today.clone())))
        .await
        .unwrap();
    assert_eq!(payloads(&reply), ["d0", "d1", "d2"]);
    let yesterday = (time::OffsetDateTime::now_utc().date() - time::Duration::days(1)).to_string();
    let reply = a
        .query("dated", &window(None, Some(yesterday)))
        .await
        .unwrap();
    assert_eq!(payloads(&reply), Vec::<String>::new());

    // from > to and garbage are rejected, never ignored.
    let tomorrow = (time::OffsetDateTime::now_utc().date() + time::Duration::days(1)).to_string();
    assert_rejected(
        &a.query("dated", &window(Some(tomorrow), Some(today)))
            .await
            .unwrap(),
        "BAD_PARAMETERS",
        400,
    );
    assert_rejected(
        &a.query("dated", &window(Some("last tuesday".into()), None))
            .await
            .unwrap(),
        "BAD_PARAMETERS",
        400,
    );
    assert_rejected(
        &a.query("dated", &window(None, Some("2024-13-45".into())))
            .await
            .unwrap(),
        "BAD_PARAMETERS",
        400,
    );
}

// ---- bad requests ---------------------------------------------------------------------------

#[tokio::test]
async fn bad_headers_and_message_types_get_typed_rejections() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    let pid = || {
        vec![HeaderEntry {
            name: "ch-ids-pid".into(),
            value: "p".into(),
        }]
    };
    let raw = |header: &str| AppLayerMessage {
        message: Some(app_layer_message::Message::IdsMessage(
            clearinghouse::idscp2::proto::app::IdsMessage {
                header: header.into(),
                payload: Bytes::from_static(b"x"),
                extra_headers: pid(),
            },
        )),
    };
    for header in [
        "not json",
        "[]",
        r#"{"@id": "urn:x"}"#,
        r#"{"@type": "ids:LogMessage"}"#,
    ] {
        let reply = a.exchange(raw(header)).await.unwrap();
        assert_rejected(&reply, "MALFORMED_MESSAGE", 400);
        assert_eq!(reply.correlation, None);
    }
    let reply = a
        .request(
            MessageType::Other("ids:DescriptionRequestMessage".into()),
            pid(),
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_rejected(&reply, "MESSAGE_TYPE_NOT_SUPPORTED", 400);
    assert!(
        reply.correlation.is_some(),
        "a readable request is correlated"
    );

    // An AppLayerMessage with nothing in it.
    let reply = a.exchange(AppLayerMessage { message: None }).await.unwrap();
    assert_rejected(&reply, "MALFORMED_MESSAGE", 400);

    // A GenericMessage is answered in kind.
    let generic = AppLayerMessage {
        message: Some(app_layer_message::Message::GenericMessage(GenericMessage {
            header: "hello".into(),
            payload: Bytes::new(),
            extra_headers: vec![],
        })),
    };
    let reply = a
        .connection_mut()
        .unwrap()
        .request(&generic, std::time::Duration::from_secs(10), Some)
        .await
        .unwrap();
    match reply.message {
        Some(app_layer_message::Message::GenericMessage(m)) => {
            let header: Value = serde_json::from_str(&m.header).unwrap();
            assert_eq!(header["@type"], "ids:RejectionMessage");
            assert_eq!(
                header["ids:rejectionReason"]["@id"],
                "https://w3id.org/idsa/code/MESSAGE_TYPE_NOT_SUPPORTED"
            );
        }
        other => panic!("expected a GenericMessage reply, got {other:?}"),
    }
    // After all that, the connection still works.
    receipt_of(&a.log("p", Bytes::from_static(b"ok"), None).await.unwrap());
}

// ---- hash chain -----------------------------------------------------------------------------

async fn chain_entries(store: &dyn ProcessStore, pid: &str) -> Vec<clearinghouse::store::Entry> {
    store.entries_from(pid, 1, 10_000).await.unwrap()
}

#[tokio::test]
async fn concurrent_appends_to_one_process_form_one_chain() {
    let ch = TestClearingHouse::start().await;
    let mut owner = ch.client("connector-a").await;
    owner
        .create("hot", &[ch.id_of("connector-b")])
        .await
        .unwrap();
    let per_connection = 8;
    let mut tasks = vec![];
    for c in 0..32 {
        let mut client = ch.client(["connector-a", "connector-b"][c % 2]).await;
        tasks.push(tokio::spawn(async move {
            let mut replies = vec![];
            for i in 0..per_connection {
                replies.push(
                    client
                        .log("hot", Bytes::from(format!("{c}/{i}")), None)
                        .await
                        .unwrap(),
                );
            }
            replies
        }));
    }
    let mut sequences = vec![];
    for task in tasks {
        for reply in task.await.unwrap() {
            sequences.push(ch.jwks.verify(&receipt_of(&reply)).unwrap().sequence);
        }
    }
    sequences.sort_unstable();
    let expected: Vec<u64> = (1..=32 * per_connection as u64).collect();
    assert_eq!(sequences, expected, "no gap, no repeat");
    let entries = chain_entries(ch.store.as_ref(), "hot").await;
    assert_eq!(
        verify_chain("hot", entries).unwrap().sequence,
        expected.len() as u64
    );
}

#[tokio::test]
async fn appends_to_different_processes_proceed_side_by_side() {
    let ch = TestClearingHouse::start().await;
    let mut tasks = vec![];
    for c in 0..8 {
        let mut client = ch.client("connector-a").await;
        tasks.push(tokio::spawn(async move {
            let pid = format!("lane-{c}");
            for i in 0..10 {
                receipt_of(
                    &client
                        .log(&pid, Bytes::from(format!("{i}")), None)
                        .await
                        .unwrap(),
                );
            }
            pid
        }));
    }
    for task in tasks {
        let pid = task.await.unwrap();
        let entries = chain_entries(ch.store.as_ref(), &pid).await;
        // Each process has its own chain, starting at 1.
        assert_eq!(verify_chain(&pid, entries).unwrap().sequence, 10);
    }
}

#[tokio::test]
async fn entries_chain_and_receipts_survive_a_restart() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    let mut receipts = vec![];
    for i in 0..5 {
        receipts.push(receipt_of(
            &a.log("durable", Bytes::from(format!("before {i}")), None)
                .await
                .unwrap(),
        ));
    }
    drop(a);
    let ch = ch.restart().await;
    let mut a = ch.client("connector-a").await;
    // The new instance verifies the old receipts and continues the same chain.
    for receipt in &receipts {
        let claims = ch.jwks.verify(receipt).unwrap();
        let entry = ch
            .store
            .entry("durable", &claims.document_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hex::encode(entry.chain_hash), claims.chain_hash);
    }
    let next = ch
        .jwks
        .verify(&receipt_of(
            &a.log("durable", Bytes::from_static(b"after"), None)
                .await
                .unwrap(),
        ))
        .unwrap();
    assert_eq!(next.sequence, 6);
    let page = a.query("durable", &options(1, 10, "asc")).await.unwrap();
    assert_eq!(
        payloads(&page),
        ["before 0", "before 1", "before 2", "before 3", "before 4", "after"]
    );
    assert_eq!(
        verify_chain("durable", chain_entries(ch.store.as_ref(), "durable").await)
            .unwrap()
            .sequence,
        6
    );
}

// ---- identity -------------------------------------------------------------------------------

/// With a DAPS, the clearing house knows clients by their DAT; a JWT in the header must be a
/// valid DAT of the same party.
#[tokio::test]
async fn a_header_token_of_another_party_is_not_authenticated() {
    use crate::support::daps::{daps_endpoint, verifier, Party, TestDaps, DAPS_KID};
    use crate::support::transport::{
        client_config, server_tls, test_settings, FixedIssuer, TestServer,
    };
    use clearinghouse::client::ClearingHouseClient;
    use clearinghouse::idscp2::dat::DatIssuer;

    let pki = crate::support::pki::TestPki::new();
    let daps = TestDaps::start(std::time::Duration::from_secs(300)).await;
    let server_party = Party::new(&daps, &pki.server_cert(), &pki.server_key());
    let a = Party::new(
        &daps,
        &pki.client_cert("connector-a"),
        &pki.client_key("connector-a"),
    );
    let b = Party::new(
        &daps,
        &pki.client_cert("connector-b"),
        &pki.client_key("connector-b"),
    );
    let data = tempfile::tempdir().unwrap();
    let store =
        Arc::new(clearinghouse::store::EmbeddedStore::open(data.path().join("s.redb")).unwrap());
    let service = clearing_house(
        store.clone(),
        receipt_signer(&pki),
        Some(server_party.issuer(&daps)),
        verifier(&daps),
        Limits::default(),
    );
    let server = TestServer::start(
        server_tls(&pki),
        daps_endpoint(test_settings(), &server_party, &daps),
        service,
    )
    .await;

    let connect = |header_dat: Arc<dyn DatIssuer>| {
        let config = client_config(
            &pki,
            "connector-a",
            daps_endpoint(test_settings(), &a, &daps),
        );
        let server = &server;
        async move {
            let connection = server.connect(&config).await.unwrap();
            ClearingHouseClient::new(
                connection,
                "https://a.test".into(),
                Some(header_dat),
                std::time::Duration::from_secs(10),
            )
        }
    };

    // Our own DAT in the header: accepted, and we are known by its sub.
    let mut honest = connect(a.issuer(&daps)).await;
    let reply = honest
        .log("ids", Bytes::from_static(b"x"), None)
        .await
        .unwrap();
    let receipt = receipt_of(&reply);
    assert_eq!(
        clearinghouse::receipt::Jwks::new(&receipt_signer(&pki), vec![])
            .verify(&receipt)
            .unwrap()
            .client_id,
        a.connector_id
    );
    // Replies carry the clearing house's own DAT.
    let header = reply.header().unwrap();
    let token = header["ids:securityToken"]["ids:tokenValue"]
        .as_str()
        .unwrap();
    assert_eq!(token.split('.').count(), 3);

    // Connected as a, claiming to be b in the header: refused, and nothing is logged.
    let dat = |party: &Party| -> Arc<dyn DatIssuer> { party.issuer(&daps) };
    let mut impostor = connect(dat(&b)).await;
    assert_rejected(
        &impostor
            .log("ids", Bytes::from_static(b"y"), None)
            .await
            .unwrap(),
        "NOT_AUTHENTICATED",
        401,
    );
    // A forged token in the header: refused too.
    let forged = daps.sign_with_unknown_key(daps.valid_claims(&a.connector_id, &a.fingerprint));
    let mut forger = connect(Arc::new(FixedIssuer(Bytes::from(forged)))).await;
    assert_rejected(
        &forger
            .log("ids", Bytes::from_static(b"z"), None)
            .await
            .unwrap(),
        "NOT_AUTHENTICATED",
        401,
    );
    // A token of ours from the DAPS, sent as a plain header token: accepted.
    let ours = daps.sign(
        daps.valid_claims(&a.connector_id, &a.fingerprint),
        Some(DAPS_KID),
    );
    let mut plain = connect(Arc::new(FixedIssuer(Bytes::from(ours)))).await;
    receipt_of(
        &plain
            .log("ids", Bytes::from_static(b"w"), None)
            .await
            .unwrap(),
    );
    assert_eq!(store.entries_from("ids", 1, 10).await.unwrap().len(), 2);
}

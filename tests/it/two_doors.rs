//! One table of conformance cases, run through both front doors: IDSCP2 and IDS-Multipart over
//! HTTPS (a real `reqwest` client on loopback). Whichever door a request comes through, it gets
//! the same reply type, rejection reason and status (and over HTTPS the HTTP status says the
//! same), the same entry, and a receipt that verifies against the same JWKS. Then a process used
//! through both doors at once, and the DATs of the HTTPS door.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clearinghouse::client::{ClearingHouseClient, QueryOptions};
use clearinghouse::http::ClientAuth;
use clearinghouse::ids::{MessageType, Reply};
use clearinghouse::idscp2::dat::DatIssuer;
use clearinghouse::idscp2::proto::app::{
    app_layer_message, AppLayerMessage, HeaderEntry, IdsMessage,
};
use clearinghouse::store::ProcessStore;
use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::support::clearing::{Limits, CH_CONNECTOR_ID};
use crate::support::daps::{verifier, Party, TestDaps, DAPS_KID};
use crate::support::doors::{Door, DoorOptions, TwoDoors, DOORS};
use crate::support::transport::FixedIssuer;

/// What a case gets: the clearing house, two connectors' clients through one door, and a pid
/// prefix of its own so that the doors' cases do not meet.
struct Ctx {
    house: Arc<TwoDoors>,
    expect: Expect,
    a: ClearingHouseClient,
    b: ClearingHouseClient,
    prefix: String,
}

impl Ctx {
    fn pid(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// What a reply through the case's door must look like.
#[derive(Clone, Copy)]
struct Expect {
    door: Door,
}

impl Expect {
    /// A success: the reply type, and over HTTPS the status that goes with it.
    fn accepted(&self, reply: &Reply, message_type: &str) {
        assert_eq!(
            reply.message_type, message_type,
            "{:?}: {reply:?}",
            self.door
        );
        let status = match message_type {
            "ids:ResultMessage" => 200,
            _ => 201,
        };
        self.http_status(reply, status);
    }

    fn receipt(&self, reply: &Reply) -> String {
        self.accepted(reply, "ids:MessageProcessedNotificationMessage");
        reply.json().unwrap()["data"].as_str().unwrap().to_owned()
    }

    fn page(&self, reply: &Reply) -> Value {
        self.accepted(reply, "ids:ResultMessage");
        reply.json().unwrap()
    }

    fn rejected(&self, reply: &Reply, reason: &str, status: u16) {
        assert_eq!(
            reply.message_type, "ids:RejectionMessage",
            "{:?}: {reply:?}",
            self.door
        );
        assert_eq!(
            reply.rejection_reason.as_deref(),
            Some(reason),
            "{:?}: {reply:?}",
            self.door
        );
        let payload = reply.json().unwrap();
        assert_eq!(payload["status"], status, "{:?}: {payload}", self.door);
        assert!(payload["message"].as_str().is_some_and(|m| !m.is_empty()));
        self.http_status(reply, status);
    }

    fn http_status(&self, reply: &Reply, status: u16) {
        let expected = (self.door == Door::Multipart).then_some(status);
        assert_eq!(reply.http_status, expected, "{:?}: {reply:?}", self.door);
    }
}

fn header(name: &str, value: &str) -> HeaderEntry {
    HeaderEntry {
        name: name.into(),
        value: value.into(),
    }
}

async fn create_and_owners(mut ctx: Ctx) {
    let e = ctx.expect;
    let (pid, shared) = (ctx.pid("own"), ctx.pid("shared"));
    let reply = ctx.a.create(&pid, &[]).await.unwrap();
    e.accepted(&reply, "ids:MessageProcessedNotificationMessage");
    let b = ctx.house.id_of("connector-b");
    let reply = ctx.a.create(&shared, &[b]).await.unwrap();
    e.accepted(&reply, "ids:MessageProcessedNotificationMessage");
    e.receipt(
        &ctx.b
            .log(&shared, Bytes::from_static(b"by b"), None)
            .await
            .unwrap(),
    );
    // Taken: 409 for an owner, 403 for anyone else.
    e.rejected(
        &ctx.a.create(&pid, &[]).await.unwrap(),
        "BAD_PARAMETERS",
        409,
    );
    e.rejected(
        &ctx.b.create(&pid, &[]).await.unwrap(),
        "NOT_AUTHORIZED",
        403,
    );
    e.rejected(
        &ctx.b
            .log(&pid, Bytes::from_static(b"x"), None)
            .await
            .unwrap(),
        "NOT_AUTHORIZED",
        403,
    );
    e.rejected(
        &ctx.b.query(&pid, &QueryOptions::default()).await.unwrap(),
        "NOT_AUTHORIZED",
        403,
    );
}

async fn malformed_owner_lists(mut ctx: Ctx) {
    let e = ctx.expect;
    for body in [
        &b"{not json"[..],
        br#"{"owners": "x"}"#,
        br#"{"owners": [1]}"#,
    ] {
        let pid = ctx.pid("owners");
        let headers = vec![
            header("ch-ids-pid", &pid),
            header("Content-Type", "application/json"),
        ];
        let reply = ctx
            .a
            .request(MessageType::Request, headers, Bytes::from_static(body))
            .await
            .unwrap();
        e.rejected(&reply, "BAD_PARAMETERS", 400);
        assert!(ctx.house.store.process(&pid).await.unwrap().is_none());
    }
}

async fn invalid_pids(mut ctx: Ctx) {
    let e = ctx.expect;
    for pid in ["default", "has space", "{\"$gt\": \"\"}", &"x".repeat(256)] {
        let reply = ctx
            .a
            .log(pid, Bytes::from_static(b"x"), None)
            .await
            .unwrap();
        e.rejected(&reply, "BAD_PARAMETERS", 400);
    }
}

async fn log_in_sequence_with_receipts(mut ctx: Ctx) {
    let e = ctx.expect;
    let pid = ctx.pid("seq");
    let mut sequences = vec![];
    for i in 0..3 {
        let payload = Bytes::from(format!("{{\"entry\": {i}}}"));
        let reply = ctx
            .a
            .log(&pid, payload.clone(), Some("application/json"))
            .await
            .unwrap();
        let claims = ctx.house.jwks.verify(&e.receipt(&reply)).unwrap();
        assert_eq!(claims.iss, CH_CONNECTOR_ID);
        assert_eq!(claims.client_id, ctx.house.id_of("connector-a"));
        let entry = ctx
            .house
            .store
            .entry(&pid, &claims.document_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(entry.payload, payload);
        assert_eq!(entry.payload_type, "application/json");
        assert_eq!(claims.entry_hash, hex::encode(entry.entry_hash));
        sequences.push(claims.sequence);
    }
    assert_eq!(sequences, [1, 2, 3]);
}

async fn empty_and_oversized_payloads(mut ctx: Ctx) {
    let e = ctx.expect;
    let pid = ctx.pid("sizes");
    e.rejected(
        &ctx.a.log(&pid, Bytes::new(), None).await.unwrap(),
        "BAD_PARAMETERS",
        400,
    );
    let max = table_limits().max_payload;
    let over = Bytes::from(vec![b'x'; max + 1]);
    e.rejected(
        &ctx.a.log(&pid, over, None).await.unwrap(),
        "BAD_PARAMETERS",
        413,
    );
    e.receipt(
        &ctx.a
            .log(&pid, Bytes::from(vec![b'x'; max]), None)
            .await
            .unwrap(),
    );
}

async fn queries(mut ctx: Ctx) {
    let e = ctx.expect;
    let pid = ctx.pid("pages");
    let mut ids = vec![];
    for i in 1..=5 {
        let reply = ctx
            .a
            .log(&pid, Bytes::from(format!("e{i}")), None)
            .await
            .unwrap();
        ids.push(
            ctx.house
                .jwks
                .verify(&e.receipt(&reply))
                .unwrap()
                .document_id,
        );
    }
    let options = QueryOptions {
        page: Some(2),
        size: Some(2),
        sort: Some("asc".into()),
        ..QueryOptions::default()
    };
    let reply = ctx.a.query(&pid, &options).await.unwrap();
    let page = e.page(&reply);
    let payloads: Vec<&str> = page["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["e3", "e4"]);
    assert_eq!(reply.extra_header("ch-ids-total"), Some("5"));
    assert_eq!(reply.extra_header("ch-ids-pid"), Some(pid.as_str()));
    // A page size beyond the maximum is lowered, and the reply says so.
    let big = QueryOptions {
        size: Some(5000),
        ..QueryOptions::default()
    };
    let reply = ctx.a.query(&pid, &big).await.unwrap();
    e.page(&reply);
    assert_eq!(reply.extra_header("ch-ids-size"), Some("1000"));
    let bad = QueryOptions {
        date_from: Some("yesterday".into()),
        ..QueryOptions::default()
    };
    e.rejected(
        &ctx.a.query(&pid, &bad).await.unwrap(),
        "BAD_PARAMETERS",
        400,
    );
    // One entry by its id; an unknown one is 404.
    let one = e.page(&ctx.a.get(&pid, &ids[1]).await.unwrap());
    assert_eq!(one["payload"], "e2", "{one}");
    e.rejected(
        &ctx.a.get(&pid, "no-such-entry").await.unwrap(),
        "NOT_FOUND",
        404,
    );
    e.rejected(
        &ctx.a
            .query(&ctx.pid("none"), &QueryOptions::default())
            .await
            .unwrap(),
        "NOT_FOUND",
        404,
    );
}

async fn operations(mut ctx: Ctx) {
    let e = ctx.expect;
    let pid = ctx.pid("ops");
    ctx.a.create(&pid, &[]).await.unwrap();
    let headers = vec![
        header("ch-ids-pid", &pid),
        header("ch-ids-operation", "info"),
    ];
    let reply = ctx
        .a
        .request(MessageType::Query, headers, Bytes::new())
        .await
        .unwrap();
    let info = e.page(&reply);
    assert_eq!(info["owners"], json!([ctx.house.id_of("connector-a")]));
    let headers = vec![
        header("ch-ids-pid", &pid),
        header("ch-ids-operation", "dance"),
    ];
    let reply = ctx
        .a
        .request(MessageType::Query, headers, Bytes::new())
        .await
        .unwrap();
    e.rejected(&reply, "BAD_PARAMETERS", 400);
}

async fn unsupported_and_unreadable_messages(mut ctx: Ctx) {
    let e = ctx.expect;
    let pid = ctx.pid("types");
    let other = MessageType::Other("ids:DescriptionRequestMessage".into());
    let reply = ctx
        .a
        .request(
            other,
            vec![header("ch-ids-pid", &pid)],
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap();
    e.rejected(&reply, "MESSAGE_TYPE_NOT_SUPPORTED", 400);
    for unreadable in ["not json", "[]", r#"{"@type": "ids:LogMessage"}"#] {
        let message = AppLayerMessage {
            message: Some(app_layer_message::Message::IdsMessage(IdsMessage {
                header: unreadable.into(),
                payload: Bytes::from_static(b"x"),
                extra_headers: vec![header("ch-ids-pid", &pid)],
            })),
        };
        let reply = ctx.a.exchange(message).await.unwrap();
        e.rejected(&reply, "MALFORMED_MESSAGE", 400);
        assert_eq!(reply.correlation, None);
    }
}

type Case = (&'static str, fn(Ctx) -> BoxFuture<'static, ()>);

const CASES: [Case; 9] = [
    ("create_and_owners", |ctx| Box::pin(create_and_owners(ctx))),
    ("malformed_owner_lists", |ctx| {
        Box::pin(malformed_owner_lists(ctx))
    }),
    ("invalid_pids", |ctx| Box::pin(invalid_pids(ctx))),
    ("log_in_sequence_with_receipts", |ctx| {
        Box::pin(log_in_sequence_with_receipts(ctx))
    }),
    ("empty_and_oversized_payloads", |ctx| {
        Box::pin(empty_and_oversized_payloads(ctx))
    }),
    ("queries", |ctx| Box::pin(queries(ctx))),
    ("operations", |ctx| Box::pin(operations(ctx))),
    ("unsupported_and_unreadable_messages", |ctx| {
        Box::pin(unsupported_and_unreadable_messages(ctx))
    }),
    ("same_request_same_entry", |ctx| {
        Box::pin(same_request_same_entry(ctx))
    }),
];

fn table_limits() -> Limits {
    Limits {
        max_payload: 64 * 1024,
        ..Limits::default()
    }
}

#[tokio::test]
async fn the_conformance_cases_pass_through_both_doors() {
    let house = Arc::new(
        TwoDoors::start_with(DoorOptions {
            limits: table_limits(),
            ..DoorOptions::default()
        })
        .await,
    );
    for (name, case) in CASES {
        for door in DOORS {
            let ctx = Ctx {
                a: house.client(door, "connector-a").await,
                b: house.client(door, "connector-b").await,
                house: house.clone(),
                expect: Expect { door },
                prefix: format!("{name}-{door:?}-"),
            };
            eprintln!("case {name} through {door:?}");
            case(ctx).await;
        }
    }
}

/// The same IDS message through either door is stored as the same entry: header, payload,
/// payload type and caller (only the pid, the time and the hashes that cover them differ).
async fn same_request_same_entry(mut ctx: Ctx) {
    let e = ctx.expect;
    let pid = ctx.pid("same");
    let header = json!({
        "@context": {"ids": "https://w3id.org/idsa/core/"},
        "@type": "ids:LogMessage",
        "@id": "urn:message:same",
        "ids:modelVersion": "4.2.7",
        "ids:issuerConnector": {"@id": "urn:connector:a"},
        "ids:senderAgent": {"@id": "urn:connector:a"},
        "ids:securityToken": {"@type": "ids:DynamicAttributeToken", "ids:tokenValue": "dev"},
    });
    let message = AppLayerMessage {
        message: Some(app_layer_message::Message::IdsMessage(IdsMessage {
            header: header.to_string(),
            payload: Bytes::from_static(b"<same/>"),
            extra_headers: vec![
                self::header("ch-ids-pid", &pid),
                self::header("Content-Type", "application/xml"),
            ],
        })),
    };
    let reply = ctx.a.exchange(message).await.unwrap();
    let claims = ctx.house.jwks.verify(&e.receipt(&reply)).unwrap();
    let entry = ctx
        .house
        .store
        .entry(&pid, &claims.document_id)
        .await
        .unwrap()
        .unwrap();
    let stored = json!({
        "header": entry.header,
        "payload": String::from_utf8(entry.payload.to_vec()).unwrap(),
        "payload_type": entry.payload_type,
        "client_id": entry.client_id,
        "sequence": entry.sequence,
    });
    let mut expected = header.clone();
    expected
        .as_object_mut()
        .unwrap()
        .remove("ids:securityToken");
    assert_eq!(
        stored,
        json!({
            "header": expected,
            "payload": "<same/>",
            "payload_type": "application/xml",
            "client_id": ctx.house.id_of("connector-a"),
            "sequence": 1,
        })
    );
}

#[tokio::test]
async fn a_process_is_used_through_both_doors_as_one_chain() {
    let house = TwoDoors::start().await;
    let mut over_idscp2 = house.client(Door::Idscp2, "connector-a").await;
    let mut over_https = house.client(Door::Multipart, "connector-a").await;
    let mut b_over_https = house.client(Door::Multipart, "connector-b").await;
    let b = house.id_of("connector-b");
    over_idscp2.create("both", &[b]).await.unwrap();
    let mut receipts = vec![];
    for (client, payload) in [
        (&mut over_https, "1 over https"),
        (&mut over_idscp2, "2 over idscp2"),
        (&mut b_over_https, "3 over https by b"),
    ] {
        let reply = client
            .log("both", Bytes::from(payload), None)
            .await
            .unwrap();
        assert_eq!(
            reply.message_type, "ids:MessageProcessedNotificationMessage",
            "{reply:?}"
        );
        receipts.push(reply.json().unwrap()["data"].as_str().unwrap().to_owned());
    }
    let sequences: Vec<u64> = receipts
        .iter()
        .map(|receipt| house.jwks.verify(receipt).unwrap().sequence)
        .collect();
    assert_eq!(sequences, [1, 2, 3]);
    let page = over_idscp2
        .query(
            "both",
            &QueryOptions {
                sort: Some("asc".into()),
                ..QueryOptions::default()
            },
        )
        .await
        .unwrap();
    let payloads: Vec<String> = page.json().unwrap()["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["payload"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        payloads,
        ["1 over https", "2 over idscp2", "3 over https by b"]
    );
    let verified = clearinghouse::audit::verify_store(house.store.as_ref(), "both")
        .await
        .unwrap();
    assert_eq!(verified.head.sequence, 3);
    house.stop().await;
}

/// The HTTPS door with a DAPS: the DAT in the header names the caller, bound to the client
/// certificate when one is presented, and a bearer token when none is.
#[tokio::test]
async fn the_https_door_identifies_callers_by_their_dat() {
    let daps = TestDaps::start(Duration::from_secs(300)).await;
    let house = TwoDoors::start_with(DoorOptions {
        verifier: Some(verifier(&daps)),
        client_auth: ClientAuth::Optional,
        ..DoorOptions::default()
    })
    .await;
    let a = Party::new(
        &daps,
        &house.pki.client_cert("connector-a"),
        &house.pki.client_key("connector-a"),
    );
    let b = Party::new(
        &daps,
        &house.pki.client_cert("connector-b"),
        &house.pki.client_key("connector-b"),
    );
    let token = |claims: Value| -> Option<Arc<dyn DatIssuer>> {
        Some(Arc::new(FixedIssuer(Bytes::from(
            daps.sign(claims, Some(DAPS_KID)),
        ))))
    };
    let client = |name: Option<&str>, dat: Option<Arc<dyn DatIssuer>>| {
        ClearingHouseClient::over_https(
            house.https_transport(name),
            "https://a.test/connector".into(),
            dat,
            Duration::from_secs(10),
        )
    };
    let a_dat = daps.valid_claims(&a.connector_id, &a.fingerprint);

    // With a's certificate and a's DAT: logged as a.
    let mut bound = client(Some("connector-a"), token(a_dat.clone()));
    let reply = bound
        .log("dat", Bytes::from_static(b"1"), None)
        .await
        .unwrap();
    assert_eq!(reply.http_status, Some(201), "{reply:?}");
    let receipt = reply.json().unwrap()["data"].as_str().unwrap().to_owned();
    assert_eq!(
        house.jwks.verify(&receipt).unwrap().client_id,
        a.connector_id
    );

    // Without a certificate, a's DAT is a bearer token: logged as a too.
    let mut bearer = client(None, token(a_dat.clone()));
    let reply = bearer
        .log("dat", Bytes::from_static(b"2"), None)
        .await
        .unwrap();
    assert_eq!(reply.http_status, Some(201), "{reply:?}");

    // b's certificate with a's DAT: the DAT is bound to another certificate.
    let mut stolen = client(Some("connector-b"), token(a_dat.clone()));
    let reply = stolen
        .log("dat", Bytes::from_static(b"3"), None)
        .await
        .unwrap();
    assert_eq!(
        reply.rejection_reason.as_deref(),
        Some("NOT_AUTHENTICATED"),
        "{reply:?}"
    );
    assert_eq!(reply.http_status, Some(401));

    // No DAT at all, an expired one, a forged one: 401, nothing logged.
    let mut expired = a_dat.clone();
    expired["exp"] = json!(1_000_000_000);
    let forged = daps.sign_with_unknown_key(a_dat.clone());
    for dat in [
        None,
        token(expired),
        Some(Arc::new(FixedIssuer(Bytes::from(forged))) as Arc<dyn DatIssuer>),
    ] {
        let mut refused = client(Some("connector-a"), dat);
        let reply = refused
            .log("dat", Bytes::from_static(b"x"), None)
            .await
            .unwrap();
        assert_eq!(
            reply.rejection_reason.as_deref(),
            Some("NOT_AUTHENTICATED"),
            "{reply:?}"
        );
        assert_eq!(reply.http_status, Some(401));
    }
    // b with its own DAT is b, and not an owner of a's process.
    let mut other = client(
        Some("connector-b"),
        token(daps.valid_claims(&b.connector_id, &b.fingerprint)),
    );
    let reply = other
        .log("dat", Bytes::from_static(b"4"), None)
        .await
        .unwrap();
    assert_eq!(
        reply.rejection_reason.as_deref(),
        Some("NOT_AUTHORIZED"),
        "{reply:?}"
    );
    assert_eq!(reply.http_status, Some(403));
    assert_eq!(
        house.store.entries_from("dat", 1, 100).await.unwrap().len(),
        2
    );
    house.stop().await;
}

/// In development mode the client certificate is the identity, so TLS requires one.
#[tokio::test]
async fn development_mode_requires_a_client_certificate() {
    let house = TwoDoors::start().await;
    let mut anonymous = ClearingHouseClient::over_https(
        house.https_transport(None),
        "https://anonymous.test/connector".into(),
        None,
        Duration::from_secs(10),
    );
    let error = anonymous
        .log("x", Bytes::from_static(b"x"), None)
        .await
        .unwrap_err();
    assert!(error.to_string().starts_with("HTTPS"), "{error}");
    assert!(house.store.process("x").await.unwrap().is_none());
}

//! A clearing house that understands what it logs, through its own door (real IDSCP2, both
//! stores): a provider and a consumer connector, two identities owning one process, each log
//! their side of a contract negotiation (IDS messages) and a pull transfer (Dataspace Protocol
//! messages); `ch-ids-view` then shows the agreement, one COMPLETED transfer and no findings.
//! Variants of the story each produce one finding. Payloads that are not messages (garbage,
//! truncated JSON, 4 MiB, 10,000 levels deep, huge arrays) are logged like any other, and the
//! view rebuilt offline from an export (`clearinghouse verify view`) equals the live one.
//!
//! The MongoDB runs need `CH_TEST_MONGODB_URI` (`scripts/test` sets it); without it they are
//! skipped with a note.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clearinghouse::client::ClearingHouseClient;
use clearinghouse::ids::{Reply, ViewKind};
use clearinghouse::idscp2::dat::DevelopmentVerifier;
use serde_json::{json, Value};

use crate::support::clearing::{
    assert_rejected, clearing_house, connector_id_of, receipt_signer, Limits, TestClearingHouse,
};
use crate::support::cli;
use crate::support::mongo::TestDatabase;
use crate::support::pki::TestPki;
use crate::support::transport::{
    client_config, dev_endpoint, server_tls, test_settings, TestServer,
};

const CONSUMER: &str = "connector-a";
const PROVIDER: &str = "connector-b";
const AGREEMENT: &str = "urn:uuid:agreement-1";
const DSP_CONTEXT: &str = "https://w3id.org/dspace/2024/1/context.json";

/// Who logs a step, and whether that party sent or received the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    Consumer,
    Provider,
}

#[derive(Debug, Clone)]
struct Step {
    by: By,
    received: bool,
    payload: Value,
}

fn sent(by: By, payload: Value) -> Step {
    Step {
        by,
        received: false,
        payload,
    }
}

fn received(by: By, payload: Value) -> Step {
    Step {
        by,
        received: true,
        payload,
    }
}

/// The same message, logged by its sender and then by its receiver.
fn exchanged(sender: By, payload: Value) -> [Step; 2] {
    let receiver = match sender {
        By::Consumer => By::Provider,
        By::Provider => By::Consumer,
    };
    [sent(sender, payload.clone()), received(receiver, payload)]
}

fn ids_message(message_type: &str, issuer: &str, fields: Value) -> Value {
    let mut header = json!({
        "@context": {"ids": "https://w3id.org/idsa/core/", "idsc": "https://w3id.org/idsa/code/"},
        "@type": format!("ids:{message_type}"),
        "@id": format!("https://w3id.org/idsa/autogen/{message_type}/{}", uuid::Uuid::new_v4()),
        "ids:modelVersion": "4.2.7",
        "ids:issuerConnector": {"@id": issuer},
    });
    if let (Some(header), Value::Object(fields)) = (header.as_object_mut(), fields) {
        header.extend(fields);
    }
    header
}

fn dsp(message_type: &str, consumer_pid: &str, fields: Value) -> Value {
    let mut message = json!({
        "@context": [DSP_CONTEXT],
        "@type": format!("dspace:{message_type}"),
        "dspace:consumerPid": consumer_pid,
    });
    if let (Some(message), Value::Object(fields)) = (message.as_object_mut(), fields) {
        message.extend(fields);
    }
    message
}

fn provider_pid() -> Value {
    json!({"dspace:providerPid": "urn:uuid:provider-tp-1"})
}

/// A contract negotiation (IDS) and a pull transfer (DSP), each message logged by both sides.
fn happy_path(consumer_pid: &str) -> Vec<Step> {
    let consumer = "https://consumer.example/connector";
    let provider = "https://provider.example/connector";
    let mut steps = Vec::new();
    steps.extend(exchanged(
        By::Consumer,
        ids_message(
            "ContractRequestMessage",
            consumer,
            json!({"ids:recipientConnector": [{"@id": provider}]}),
        ),
    ));
    steps.extend(exchanged(
        By::Provider,
        json!({
            "header": ids_message("ContractAgreementMessage", provider, json!({})),
            "payload": {"@context": {"ids": "https://w3id.org/idsa/core/"},
                        "@type": "ids:ContractAgreement", "@id": AGREEMENT,
                        "ids:provider": {"@id": provider}, "ids:consumer": {"@id": consumer}},
        }),
    ));
    steps.extend(exchanged(
        By::Consumer,
        dsp(
            "TransferRequestMessage",
            consumer_pid,
            json!({"dspace:agreementId": AGREEMENT, "dct:format": "example:HTTP_PULL",
                   "dspace:callbackAddress": "https://consumer.example/callback"}),
        ),
    ));
    steps.extend(exchanged(
        By::Provider,
        dsp(
            "TransferProcess",
            consumer_pid,
            json!({"dspace:providerPid": "urn:uuid:provider-tp-1", "dspace:state": "dspace:REQUESTED"}),
        ),
    ));
    steps.extend(exchanged(
        By::Provider,
        dsp("TransferStartMessage", consumer_pid, provider_pid()),
    ));
    steps.extend(exchanged(
        By::Consumer,
        ids_message(
            "ArtifactRequestMessage",
            consumer,
            json!({"ids:transferContract": {"@id": AGREEMENT},
                   "ids:requestedArtifact": {"@id": "https://provider.example/artifacts/7"}}),
        ),
    ));
    steps.extend(exchanged(
        By::Consumer,
        dsp("TransferCompletionMessage", consumer_pid, provider_pid()),
    ));
    steps
}

struct Parties {
    consumer: ClearingHouseClient,
    provider: ClearingHouseClient,
    consumer_id: String,
    provider_id: String,
}

async fn connect(pki: &TestPki, server: &TestServer, name: &str) -> ClearingHouseClient {
    let connection = server
        .connect(&client_config(pki, name, dev_endpoint(test_settings())))
        .await
        .unwrap();
    ClearingHouseClient::new(
        connection,
        format!("https://{name}.test/connector"),
        None,
        Duration::from_secs(30),
    )
}

async fn parties(pki: &TestPki, server: &TestServer) -> Parties {
    Parties {
        consumer: connect(pki, server, CONSUMER).await,
        provider: connect(pki, server, PROVIDER).await,
        consumer_id: connector_id_of(pki, CONSUMER),
        provider_id: connector_id_of(pki, PROVIDER),
    }
}

impl Parties {
    /// The consumer creates the process with the provider as co-owner.
    async fn open(&mut self, pid: &str) {
        let reply = self
            .consumer
            .create(pid, std::slice::from_ref(&self.provider_id))
            .await
            .unwrap();
        assert_eq!(
            reply.message_type, "ids:MessageProcessedNotificationMessage",
            "{reply:?}"
        );
    }

    async fn log(&mut self, pid: &str, step: &Step) {
        let client = match step.by {
            By::Consumer => &mut self.consumer,
            By::Provider => &mut self.provider,
        };
        let payload = Bytes::from(step.payload.to_string());
        let reply = client
            .log_message(pid, payload, Some("application/ld+json"), step.received)
            .await
            .unwrap();
        assert_receipt(&reply);
    }

    async fn run(&mut self, pid: &str, steps: &[Step]) {
        self.open(pid).await;
        for step in steps {
            self.log(pid, step).await;
        }
    }

    async fn view(&mut self, pid: &str, kind: ViewKind) -> Value {
        let reply = self.provider.view(pid, kind, None, None).await.unwrap();
        assert_eq!(reply.message_type, "ids:ResultMessage", "{reply:?}");
        reply.json().expect("a view is JSON")
    }
}

fn assert_receipt(reply: &Reply) {
    assert_eq!(
        reply.message_type, "ids:MessageProcessedNotificationMessage",
        "{reply:?}"
    );
    assert!(reply.json().unwrap()["data"].is_string(), "{reply:?}");
}

fn findings(transfer: &Value) -> Vec<String> {
    transfer["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// The story told right: the agreement, one transfer COMPLETED in both records, no findings.
async fn the_story_both_parties_tell(parties: &mut Parties) {
    let steps = happy_path("urn:uuid:consumer-tp-1");
    parties.run("deal-1", &steps).await;

    let view = parties.view("deal-1", ViewKind::Transfers).await;
    assert_eq!(view["view"], "transfers");
    assert_eq!(view["pid"], "deal-1");
    assert_eq!(view["entries"], steps.len() as u64);
    assert_eq!(view["total"], 1, "{view:#}");
    assert_eq!(view["findings"], 0, "{view:#}");
    let transfer = &view["transfers"][0];
    assert_eq!(transfer["consumer_pid"], "urn:uuid:consumer-tp-1");
    assert_eq!(transfer["provider_pid"], "urn:uuid:provider-tp-1");
    assert_eq!(transfer["agreement_id"], AGREEMENT);
    assert_eq!(transfer["format"], "example:HTTP_PULL");
    assert_eq!(transfer["state"], "COMPLETED", "{transfer:#}");
    let parties_json = transfer["parties"].as_array().unwrap();
    assert_eq!(parties_json.len(), 2);
    for (party, id, side) in [
        (&parties_json[0], &parties.consumer_id, "consumer"),
        (&parties_json[1], &parties.provider_id, "provider"),
    ] {
        assert_eq!(party["client_id"], id.as_str());
        assert_eq!(party["side"], side);
        assert_eq!(party["state"], "COMPLETED");
    }
    let timeline: Vec<(&str, &str, &str)> = transfer["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["message"].as_str().unwrap(),
                e["logged_by"].as_str().unwrap(),
                e["direction"].as_str().unwrap(),
            )
        })
        .collect();
    let (c, p) = (parties.consumer_id.as_str(), parties.provider_id.as_str());
    assert_eq!(
        timeline,
        [
            ("TransferRequestMessage", c, "sent"),
            ("TransferRequestMessage", p, "received"),
            ("TransferProcess", p, "sent"),
            ("TransferProcess", c, "received"),
            ("TransferStartMessage", p, "sent"),
            ("TransferStartMessage", c, "received"),
            ("TransferCompletionMessage", c, "sent"),
            ("TransferCompletionMessage", p, "received"),
        ]
    );
    assert!(findings(transfer).is_empty());

    let contracts = parties.view("deal-1", ViewKind::Contracts).await;
    assert_eq!(contracts["total"], 1, "{contracts:#}");
    let contract = &contracts["contracts"][0];
    assert_eq!(contract["agreement_id"], AGREEMENT);
    assert_eq!(
        contract["agreed_at"], 3,
        "the provider's record of the agreement"
    );
    assert_eq!(contract["artifact_requests"], 2, "sent and received");
    assert_eq!(contract["transfers"], 1);
    assert_eq!(contracts["ids_messages"]["ContractRequestMessage"], 2);
}

/// Each variant of the story and the one finding it must produce.
async fn each_finding(parties: &mut Parties) {
    let consumer_pid = "urn:uuid:consumer-tp-1";
    let start = dsp("TransferStartMessage", consumer_pid, provider_pid());
    let request = dsp(
        "TransferRequestMessage",
        consumer_pid,
        json!({"dspace:agreementId": AGREEMENT}),
    );
    let completion_position = |steps: &[Step]| {
        steps
            .iter()
            .position(|s| s.payload["@type"] == "dspace:TransferCompletionMessage")
            .unwrap()
    };
    let variants: Vec<(&str, Vec<Step>, &str)> = vec![
        (
            "started-after-completed",
            {
                let mut steps = happy_path(consumer_pid);
                steps.push(sent(By::Provider, start.clone()));
                steps
            },
            "illegal_transition",
        ),
        (
            "consumer-claims-start",
            {
                let mut steps = happy_path(consumer_pid);
                let position = completion_position(&steps);
                steps.insert(position, sent(By::Consumer, start.clone()));
                steps
            },
            "wrong_side",
        ),
        (
            "completion-one-sided",
            {
                let mut steps = happy_path(consumer_pid);
                steps.pop();
                steps
            },
            "unmatched_completion",
        ),
        (
            "unknown-agreement",
            {
                let mut steps = happy_path(consumer_pid);
                steps.retain(|s| s.payload.get("header").is_none());
                steps
            },
            "unknown_agreement",
        ),
        (
            "repeated-request",
            {
                let mut steps = happy_path(consumer_pid);
                let position = completion_position(&steps);
                steps.insert(position, sent(By::Consumer, request.clone()));
                steps
            },
            "repeated_request",
        ),
    ];
    for (pid, steps, expected) in variants {
        parties.run(pid, &steps).await;
        let view = parties.view(pid, ViewKind::Transfers).await;
        let transfer = &view["transfers"][0];
        assert_eq!(findings(transfer), [expected], "{pid}: {transfer:#}");
        assert_eq!(view["findings"], 1, "{pid}");
        let finding = &transfer["findings"][0];
        assert!(
            finding["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{finding}"
        );
    }
    // The wrong-side claim did not move the consumer's record: both still end COMPLETED.
    let view = parties
        .view("consumer-claims-start", ViewKind::Transfers)
        .await;
    assert_eq!(view["transfers"][0]["state"], "COMPLETED", "{view:#}");
}

/// Whatever the payload, it is logged and answered with a receipt; the view reads it as
/// nothing it knows.
async fn anything_is_logged(parties: &mut Parties) {
    parties.open("odd").await;
    let depth = 10_000;
    let payloads: Vec<Vec<u8>> = vec![
        b"\x00\xff garbage \x01".to_vec(),
        br#"{"@type": "dspace:TransferStartMessage", "dspace:consumerPid": "urn:c""#.to_vec(),
        format!(
            r#"{{"@type": "dspace:TransferRequestMessage", "dspace:consumerPid": {}"urn:deep"{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
        .into_bytes(),
        format!("[{}0]", "0,".repeat(1_500_000)).into_bytes(),
        {
            let mut large = br#"{"@type": "dspace:TransferRequestMessage", "dspace:consumerPid": "urn:large", "pad": ""#.to_vec();
            large.resize(4 * 1024 * 1024 - 64, b'x');
            large.extend_from_slice(b"\"}");
            large
        },
    ];
    for payload in payloads {
        let reply = parties
            .consumer
            .log("odd", Bytes::from(payload), Some("application/json"))
            .await
            .unwrap();
        assert_receipt(&reply);
    }
    let view = parties.view("odd", ViewKind::Transfers).await;
    assert_eq!(view["entries"], 5);
    // The deep one is a request whose consumerPid cannot be read: it cannot be placed.
    assert_eq!(view["unplaced"], 1, "{view:#}");
    // The 4 MiB one is within the bounds and recognised.
    assert_eq!(view["total"], 1, "{view:#}");
    assert_eq!(view["transfers"][0]["consumer_pid"], "urn:large");
}

/// A view is for owners only, like any query; a bad `ch-ids-view` or direction says so.
async fn views_are_queries(parties: &mut Parties, pki: &TestPki, server: &TestServer) {
    let mut auditor = connect(pki, server, "auditor").await;
    let reply = auditor
        .view("deal-1", ViewKind::Transfers, None, None)
        .await
        .unwrap();
    assert_rejected(&reply, "NOT_AUTHORIZED", 403);
    let reply = auditor
        .view("nowhere", ViewKind::Transfers, None, None)
        .await
        .unwrap();
    assert_rejected(&reply, "NOT_FOUND", 404);
    let header = |name: &str, value: &str| clearinghouse::idscp2::proto::app::HeaderEntry {
        name: name.to_owned(),
        value: value.to_owned(),
    };
    let reply = parties
        .consumer
        .request(
            clearinghouse::ids::MessageType::Query,
            vec![
                header("ch-ids-pid", "deal-1"),
                header("ch-ids-view", "everything"),
            ],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_rejected(&reply, "BAD_PARAMETERS", 400);
    let reply = parties
        .consumer
        .request(
            clearinghouse::ids::MessageType::Log,
            vec![
                header("ch-ids-pid", "deal-1"),
                header("ch-ids-direction", "sideways"),
            ],
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap();
    assert_rejected(&reply, "BAD_PARAMETERS", 400);
    // Paging: one transfer per page.
    let reply = parties
        .provider
        .view("deal-1", ViewKind::Transfers, Some(2), Some(1))
        .await
        .unwrap();
    let page = reply.json().unwrap();
    assert_eq!(
        (page["page"].as_u64(), page["pages"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(page["transfers"], json!([]));
}

#[tokio::test]
async fn embedded_store() {
    let ch = TestClearingHouse::start().await;
    let mut parties = parties(&ch.pki, &ch.server).await;
    the_story_both_parties_tell(&mut parties).await;
    each_finding(&mut parties).await;
    anything_is_logged(&mut parties).await;
    views_are_queries(&mut parties, &ch.pki, &ch.server).await;

    // The view survives a restart (saved, or folded again from the entries) unchanged.
    let before = parties.view("deal-1", ViewKind::Transfers).await;
    let ch = ch.restart().await;
    let mut parties = self::parties(&ch.pki, &ch.server).await;
    assert_eq!(parties.view("deal-1", ViewKind::Transfers).await, before);
}

#[tokio::test]
async fn mongodb_store() {
    let Some(database) = TestDatabase::new() else {
        eprintln!("note: CH_TEST_MONGODB_URI not set; skipping the MongoDB run");
        return;
    };
    let pki = TestPki::new();
    let store = database.instance().await;
    let service = clearing_house(
        store,
        receipt_signer(&pki),
        None,
        Arc::new(DevelopmentVerifier::new()),
        Limits::default(),
    );
    let server = TestServer::start(server_tls(&pki), dev_endpoint(test_settings()), service).await;
    let mut parties = parties(&pki, &server).await;
    the_story_both_parties_tell(&mut parties).await;
    each_finding(&mut parties).await;
    views_are_queries(&mut parties, &pki, &server).await;
    server.stop().await;
    database.drop_database().await;
}

/// `clearinghouse verify view --export` folds an export into the same view the live query
/// returns, and `client query --view transfers` prints it as a table with the findings.
#[tokio::test]
async fn offline_rebuild_equals_the_live_view() {
    let ch = TestClearingHouse::start().await;
    let mut parties = parties(&ch.pki, &ch.server).await;
    let mut steps = happy_path("urn:uuid:consumer-tp-1");
    steps.extend(happy_path("urn:uuid:consumer-tp-2").into_iter().skip(4));
    steps.push(sent(
        By::Consumer,
        dsp(
            "TransferStartMessage",
            "urn:uuid:consumer-tp-2",
            provider_pid(),
        ),
    ));
    parties.run("audited", &steps).await;
    let live = parties.view("audited", ViewKind::Transfers).await;
    assert_eq!(live["total"], 2);

    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("audited.jsonl");
    let mut file = std::fs::File::create(&export).unwrap();
    clearinghouse::audit::export_process(ch.store.as_ref(), "audited", &mut file)
        .await
        .unwrap();
    let export = export.to_str().unwrap();
    let offline: Value = serde_json::from_str(&cli::ok(cli::run(
        dir.path(),
        &["verify", "view", "--export", export, "--format", "json"],
    )))
    .unwrap();
    for field in ["transfers", "entries", "total", "findings", "unplaced"] {
        assert_eq!(offline[field], live[field], "{field}");
    }
    assert_eq!(
        offline["findings"], 1,
        "the consumer's claim to have started tp-2"
    );

    // The binary talks to this test's server: it must not block the runtime serving it.
    let (dir_path, server, pki) = (
        dir.path().to_owned(),
        ch.server.addr(),
        ch.pki.dir().to_owned(),
    );
    let table = tokio::task::spawn_blocking(move || {
        cli::ok(cli::run_client(
            &dir_path,
            &server,
            &pki,
            CONSUMER,
            &["query", "--pid", "audited", "--view", "transfers"],
        ))
    })
    .await
    .unwrap();
    assert!(table.contains("COMPLETED"), "{table}");
    assert!(table.contains("wrong_side"), "{table}");
    assert!(table.contains("1 findings in all"), "{table}");
    let offline_table = cli::ok(cli::run(
        dir.path(),
        &["verify", "view", "--export", export],
    ));
    assert!(offline_table.contains("wrong_side"), "{offline_table}");
}

/// Both stores keep the saved view that reaches furthest, whatever order saves arrive in, and
/// none for a process they do not hold.
async fn saved_views_keep_the_furthest(store: Arc<dyn clearinghouse::store::ProcessStore>) {
    use clearinghouse::store::SavedView;
    let view = |entries_seen: u64| SavedView {
        entries_seen,
        bytes: format!("view at {entries_seen}").into_bytes(),
    };
    store.save_view("p-other", view(1)).await.unwrap();
    assert_eq!(store.saved_view("p-other").await.unwrap(), None);
    store
        .create_process("p-views", &["owner".to_owned()].into())
        .await
        .unwrap();
    assert_eq!(store.saved_view("p-views").await.unwrap(), None);
    store.save_view("p-views", view(5)).await.unwrap();
    assert_eq!(store.saved_view("p-views").await.unwrap(), Some(view(5)));
    store.save_view("p-views", view(3)).await.unwrap();
    store.save_view("p-views", view(5)).await.unwrap();
    assert_eq!(store.saved_view("p-views").await.unwrap(), Some(view(5)));
    store.save_view("p-views", view(9)).await.unwrap();
    assert_eq!(store.saved_view("p-views").await.unwrap(), Some(view(9)));
    assert_eq!(store.saved_view("p-other").await.unwrap(), None);
}

#[tokio::test]
async fn saved_views_in_both_stores() {
    let dir = tempfile::tempdir().unwrap();
    let embedded =
        clearinghouse::store::EmbeddedStore::open(dir.path().join("views.redb")).unwrap();
    saved_views_keep_the_furthest(Arc::new(embedded)).await;
    let Some(database) = TestDatabase::new() else {
        eprintln!("note: CH_TEST_MONGODB_URI not set; skipping the MongoDB run");
        return;
    };
    saved_views_keep_the_furthest(database.instance().await).await;
    database.drop_database().await;
}

//! IDS headers in JSON-LD spellings other than the `ids:` prefix, through a real IDSCP2 client and
//! server on loopback: a connector writing full IRIs or bare terms under the IDS context creates,
//! logs and queries like one writing `ids:`, gets verifiable receipts, and its header is stored
//! as sent without its token.

use crate::support::clearing::*;
use bytes::Bytes;
use clearinghouse::ids::Reply;
use clearinghouse::idscp2::proto::app::{
    app_layer_message, AppLayerMessage, HeaderEntry, IdsMessage,
};
use clearinghouse::store::ProcessStore;
use serde_json::{json, Value};

const IDS: &str = "https://w3id.org/idsa/core/";
const IDS_CONTEXT: &str = "https://w3id.org/idsa/contexts/context.jsonld";

/// A request header of `kind` (`LogMessage`, ...) with names spelled by `name`, under `context`.
fn header(context: Option<&str>, name: &dyn Fn(&str) -> String, kind: &str, n: u32) -> Value {
    let mut header = json!({
        "@type": name(kind),
        "@id": format!("https://w3id.org/idsa/autogen/{kind}/{n}"),
        (name("modelVersion")): "4.2.7",
        (name("issuerConnector")): {"@id": "https://connector-a.test/connector"},
        (name("senderAgent")): {"@id": "https://connector-a.test/connector"},
        // Not a JWT: a placeholder the clearing house does not verify, but never stores.
        (name("securityToken")): {
            "@type": name("DynamicAttributeToken"),
            (name("tokenValue")): "placeholder-token",
        },
    });
    if let Some(context) = context {
        header["@context"] = json!(context);
    }
    header
}

fn message(header: &Value, pid: &str, payload: &'static [u8]) -> AppLayerMessage {
    let mut extra_headers = vec![HeaderEntry {
        name: "ch-ids-pid".into(),
        value: pid.into(),
    }];
    if !payload.is_empty() {
        extra_headers.push(HeaderEntry {
            name: "Content-Type".into(),
            value: "text/plain".into(),
        });
    }
    AppLayerMessage {
        message: Some(app_layer_message::Message::IdsMessage(IdsMessage {
            header: header.to_string(),
            payload: Bytes::from_static(payload),
            extra_headers,
        })),
    }
}

fn receipt_of(reply: &Reply) -> String {
    assert_eq!(
        reply.message_type, "ids:MessageProcessedNotificationMessage",
        "{reply:?}"
    );
    reply.json().unwrap()["data"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn full_iri_and_bare_term_headers_create_log_and_query() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    let full = |term: &str| format!("{IDS}{term}");
    let bare = |term: &str| term.to_owned();

    let create = header(None, &full, "RequestMessage", 1);
    let reply = a.exchange(message(&create, "spelled", b"")).await.unwrap();
    assert_eq!(
        reply.message_type, "ids:MessageProcessedNotificationMessage",
        "{reply:?}"
    );
    assert_eq!(reply.correlation.as_deref(), create["@id"].as_str());
    let process = ch.store.process("spelled").await.unwrap().unwrap();
    assert!(process.owners.contains(&ch.id_of("connector-a")));

    let logs = [
        (
            header(None, &full, "LogMessage", 2),
            &b"full IRI"[..],
            full("securityToken"),
        ),
        (
            header(Some(IDS_CONTEXT), &bare, "LogMessage", 3),
            b"bare term",
            bare("securityToken"),
        ),
    ];
    for (sent, payload, token_key) in &logs {
        let reply = a.exchange(message(sent, "spelled", payload)).await.unwrap();
        assert_eq!(reply.correlation.as_deref(), sent["@id"].as_str());
        let claims = ch.jwks.verify(&receipt_of(&reply)).unwrap();
        assert_eq!(claims.client_id, ch.id_of("connector-a"));
        let entry = ch
            .store
            .entry("spelled", &claims.document_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(entry.payload, *payload);
        let mut stored = sent.clone();
        stored.as_object_mut().unwrap().remove(token_key);
        assert_eq!(entry.header, stored, "stored as sent, without the token");
    }

    let query = header(Some(IDS_CONTEXT), &bare, "QueryMessage", 4);
    let reply = a.exchange(message(&query, "spelled", b"")).await.unwrap();
    assert_eq!(reply.message_type, "ids:ResultMessage", "{reply:?}");
    let page = reply.json().unwrap();
    let documents = page["documents"].as_array().unwrap();
    let payloads: Vec<&str> = documents
        .iter()
        .map(|d| d["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["bare term", "full IRI"]);
    for document in documents {
        assert_eq!(document["@type"], "ids:LogMessage");
        // The sender gave modelVersion in its own spelling: it is not filled in a second time.
        assert!(document.get("ids:modelVersion").is_none(), "{document}");
    }
}

#[tokio::test]
async fn a_namespace_that_is_not_the_ids_one_is_still_not_supported() {
    let ch = TestClearingHouse::start().await;
    let mut a = ch.client("connector-a").await;
    let other = |term: &str| format!("http://w3id.org/idsa/core/{term}");
    let sent = header(None, &other, "LogMessage", 1);
    let reply = a.exchange(message(&sent, "other", b"x")).await.unwrap();
    assert_rejected(&reply, "MESSAGE_TYPE_NOT_SUPPORTED", 400);
    assert!(ch.store.process("other").await.unwrap().is_none());
}

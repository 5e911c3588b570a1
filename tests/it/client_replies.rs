//! The clearing-house client matches each reply to its request: after a request timed out, its
//! late reply must not be taken for the answer to the next one. A real clearing house on a
//! loopback port holds back its first answer until the client has given up on it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clearinghouse::clearing::ClearingHouse;
use clearinghouse::client::{ClearingHouseClient, RequestError};
use clearinghouse::ids::{request_header, MessageType, Reply, RequestContext, RequestHeader};
use clearinghouse::idscp2::client::ClientError;
use clearinghouse::idscp2::connection::PeerInfo;
use clearinghouse::idscp2::dat::DevelopmentVerifier;
use clearinghouse::idscp2::proto::app::{
    app_layer_message, AppLayerMessage, HeaderEntry, IdsMessage,
};
use clearinghouse::idscp2::server::Service;
use clearinghouse::receipt::{payload_hash, Jwks};
use clearinghouse::store::embedded::EmbeddedStore;
use tokio::sync::oneshot;

use crate::support::clearing::{clearing_house, receipt_signer, Limits};
use crate::support::pki::TestPki;
use crate::support::transport::{client_config, dev_endpoint, test_settings, TestServer};

/// Short enough that the held-back first request times out quickly; the server answers the
/// others at once.
const REPLY_TIMEOUT: Duration = Duration::from_millis(300);
const CONNECTOR: &str = "https://connector-a.test/connector";
const PID: &str = "late-replies";

/// A clearing house that answers its first request only once the test lets it, so that the
/// answer arrives after the client stopped waiting for it.
struct HoldFirstAnswer {
    inner: ClearingHouse,
    release: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Service for HoldFirstAnswer {
    type Message = AppLayerMessage;

    async fn handle(
        &self,
        peer: Arc<PeerInfo>,
        message: Result<AppLayerMessage, prost::DecodeError>,
    ) -> Option<AppLayerMessage> {
        let release = self.release.lock().unwrap().take();
        if let Some(release) = release {
            let _ = release.await;
        }
        self.inner.handle(peer, message).await
    }
}

struct Setup {
    client: ClearingHouseClient,
    release: oneshot::Sender<()>,
    jwks: Jwks,
    /// Both live as long as the test.
    server: TestServer,
    data: tempfile::TempDir,
}

async fn setup() -> Setup {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(data.path().join("ch.redb")).unwrap());
    let signer = receipt_signer(&pki);
    let jwks = Jwks::new(&signer, vec![]);
    let (release, held) = oneshot::channel();
    let service = HoldFirstAnswer {
        inner: clearing_house(
            store,
            signer,
            None,
            Arc::new(DevelopmentVerifier::new()),
            Limits::default(),
        ),
        release: Mutex::new(Some(held)),
    };
    let endpoint = dev_endpoint(test_settings());
    let server = TestServer::start(
        crate::support::transport::server_tls(&pki),
        endpoint,
        service,
    )
    .await;
    let config = client_config(&pki, "connector-a", dev_endpoint(test_settings()));
    let connection = server.connect(&config).await.unwrap();
    Setup {
        client: ClearingHouseClient::new(connection, CONNECTOR.into(), None, REPLY_TIMEOUT),
        release,
        jwks,
        server,
        data,
    }
}

/// An IDS message with `header`, logging `payload` to [`PID`].
fn message(header: String, payload: &'static [u8]) -> AppLayerMessage {
    AppLayerMessage {
        message: Some(app_layer_message::Message::IdsMessage(IdsMessage {
            header,
            payload: Bytes::from_static(payload),
            extra_headers: vec![HeaderEntry {
                name: "ch-ids-pid".into(),
                value: PID.into(),
            }],
        })),
    }
}

fn log_header() -> String {
    let ctx = RequestContext {
        connector_id: CONNECTOR,
        sender_agent: CONNECTOR,
        security_token: None,
    };
    request_header(&ctx, &MessageType::Log)
}

fn assert_timed_out(result: Result<Reply, RequestError>) {
    match result {
        Err(RequestError::Transport(ClientError::Timeout(_))) => {}
        other => panic!("expected the request to time out, got {other:?}"),
    }
}

/// Checks that `reply` carries a valid receipt for exactly `payload`.
fn assert_receipt_for(jwks: &Jwks, reply: &Reply, payload: &[u8]) {
    assert_eq!(
        reply.message_type, "ids:MessageProcessedNotificationMessage",
        "{reply:?}"
    );
    let receipt = reply.json().unwrap()["data"].as_str().unwrap().to_owned();
    let claims = jwks.verify(&receipt).unwrap();
    assert_eq!(
        claims.payload_hash,
        payload_hash(payload),
        "the receipt is for another payload"
    );
}

#[tokio::test]
async fn a_late_reply_does_not_answer_the_next_request() {
    let Setup {
        mut client,
        release,
        jwks,
        server: _server,
        data: _data,
    } = setup().await;

    assert_timed_out(client.log(PID, Bytes::from_static(b"first"), None).await);
    // The server now answers the first request, late, and then the second.
    release.send(()).unwrap();

    let header = log_header();
    let id = RequestHeader::parse(&header).unwrap().id;
    let reply = client.exchange(message(header, b"second")).await.unwrap();
    assert_eq!(reply.correlation.as_deref(), Some(id.as_str()));
    assert_receipt_for(&jwks, &reply, b"second");

    // Nothing is left over for the request after.
    let reply = client
        .log(PID, Bytes::from_static(b"third"), None)
        .await
        .unwrap();
    assert_receipt_for(&jwks, &reply, b"third");
}

#[tokio::test]
async fn a_late_uncorrelated_reply_does_not_answer_a_later_request() {
    let Setup {
        mut client,
        release,
        jwks,
        server: _server,
        data: _data,
    } = setup().await;

    // The server cannot read this header, so its rejection carries no correlation.
    assert_timed_out(client.exchange(message("not json".into(), b"x")).await);
    release.send(()).unwrap();

    // A readable request recognises the late rejection as not its own.
    let reply = client
        .log(PID, Bytes::from_static(b"second"), None)
        .await
        .unwrap();
    assert_receipt_for(&jwks, &reply, b"second");

    // And the next unreadable request gets its own rejection, not a left-over one.
    let reply = client.exchange(message("[]".into(), b"x")).await.unwrap();
    assert_eq!(reply.rejection_reason.as_deref(), Some("MALFORMED_MESSAGE"));
    let text = reply.json().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("not a JSON object"), "{text}");
}

#[tokio::test]
async fn two_late_uncorrelated_replies_are_both_dropped() {
    let Setup {
        mut client,
        release,
        server: _server,
        data: _data,
        ..
    } = setup().await;

    assert_timed_out(client.exchange(message("not json".into(), b"x")).await);
    // The server is still held on the first, so this one times out too.
    assert_timed_out(
        client
            .exchange(message(r#"{"@id": "urn:x"}"#.into(), b"x"))
            .await,
    );
    release.send(()).unwrap();

    let reply = client.exchange(message("[]".into(), b"x")).await.unwrap();
    let text = reply.json().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("not a JSON object"), "{text}");
}

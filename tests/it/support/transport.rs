//! IDSCP2 plumbing for integration tests: TLS configurations from a test PKI, endpoints in
//! development or DAPS mode, a server on a loopback port that stops when told, and a raw peer
//! that speaks frames by hand for the cases a well-behaved client cannot produce.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clearinghouse::idscp2::admission::HandshakeLimits;
use clearinghouse::idscp2::client::{self, ClientConfig, ClientError};
use clearinghouse::idscp2::connection::{Connection, PeerInfo};
use clearinghouse::idscp2::dat::{
    DatError, DatIssuer, DatVerifier, DevelopmentIssuer, DevelopmentVerifier,
};
use clearinghouse::idscp2::endpoint::{Endpoint, Settings};
use clearinghouse::idscp2::frame::IdscpCodec;
use clearinghouse::idscp2::proto::app::{
    app_layer_message, AppLayerMessage, HeaderEntry, IdsMessage,
};
use clearinghouse::idscp2::proto::idscp_message::Message;
use clearinghouse::idscp2::proto::{IdscpAck, IdscpDat, IdscpData, IdscpHello};
use clearinghouse::idscp2::ra::RaRegistry;
use clearinghouse::idscp2::server::{Server, ServerConfig, Service};
use clearinghouse::idscp2::tls::{self, TlsIdentity};
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

use super::pki::TestPki;

/// Short timeouts so that failure cases finish quickly.
pub fn test_settings() -> Settings {
    Settings {
        handshake_timeout: Duration::from_secs(3),
        ..Settings::default()
    }
}

pub fn with_suites(settings: Settings, supported: &[&str], expected: &[&str]) -> Settings {
    Settings {
        supported_ra: supported.iter().map(|s| s.to_string()).collect(),
        expected_ra: expected.iter().map(|s| s.to_string()).collect(),
        ..settings
    }
}

pub fn endpoint(
    settings: Settings,
    issuer: Arc<dyn DatIssuer>,
    verifier: Arc<dyn DatVerifier>,
) -> Endpoint {
    Endpoint::new(settings, issuer, verifier, RaRegistry::builtin()).unwrap()
}

/// Development mode: tokens are not checked, identities come from certificates.
pub fn dev_endpoint(settings: Settings) -> Endpoint {
    endpoint(
        settings,
        Arc::new(DevelopmentIssuer::new()),
        Arc::new(DevelopmentVerifier::new()),
    )
}

pub fn server_tls(pki: &TestPki) -> Arc<rustls::ServerConfig> {
    let identity = TlsIdentity::from_pem_files(&pki.server_cert(), &pki.server_key()).unwrap();
    let cas = tls::load_ca_file(&pki.ca_cert()).unwrap();
    tls::server_config(&identity, &cas).unwrap()
}

/// A client's TLS configuration: its certificate from `client_pki`, trusting `server_pki`'s CA.
pub fn client_tls(
    client_pki: &TestPki,
    server_pki: &TestPki,
    name: &str,
) -> Arc<rustls::ClientConfig> {
    let identity =
        TlsIdentity::from_pem_files(&client_pki.client_cert(name), &client_pki.client_key(name))
            .unwrap();
    let cas = tls::load_ca_file(&server_pki.ca_cert()).unwrap();
    tls::client_config(&identity, &cas).unwrap()
}

pub fn client_config(pki: &TestPki, name: &str, endpoint: Endpoint) -> ClientConfig {
    ClientConfig {
        tls: client_tls(pki, pki, name),
        endpoint,
    }
}

/// A server on an ephemeral loopback port, shut down gracefully by [`TestServer::stop`].
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start<S: Service>(
        tls: Arc<rustls::ServerConfig>,
        endpoint: Endpoint,
        service: S,
    ) -> TestServer {
        let config = ServerConfig {
            tls,
            endpoint,
            max_connections: 256,
            handshake_limits: HandshakeLimits::default(),
        };
        Self::start_with(config, service).await
    }

    pub async fn start_with<S: Service>(config: ServerConfig, service: S) -> TestServer {
        let server = Server::bind("127.0.0.1:0", config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel();
        let task = tokio::spawn(server.run(Arc::new(service), async {
            let _ = stop.await;
        }));
        TestServer {
            addr,
            shutdown: Some(shutdown),
            task,
        }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub async fn connect(&self, config: &ClientConfig) -> Result<Connection, ClientError> {
        client::connect(&self.addr(), "localhost", config).await
    }

    /// Signals shutdown; the returned future completes when every connection is closed.
    pub fn stop(mut self) -> impl Future<Output = ()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        async move {
            tokio::time::timeout(Duration::from_secs(10), self.task)
                .await
                .expect("server drains within 10 s")
                .unwrap();
        }
    }
}

/// Always hands out the same token, whatever it is: how tests present forged or broken DATs.
pub struct FixedIssuer(pub Bytes);

impl DatIssuer for FixedIssuer {
    fn token(&self) -> BoxFuture<'_, Result<Bytes, DatError>> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
}

/// A TLS connection on which the test writes and reads IDSCP2 frames itself.
pub struct RawPeer {
    pub framed: Framed<TlsStream<TcpStream>, IdscpCodec>,
}

/// A raw peer in development mode with Dummy2 both ways is established as soon as Hellos cross.
pub async fn established_raw_peer(server: &TestServer, pki: &TestPki, name: &str) -> RawPeer {
    let mut peer = RawPeer::connect(&server.addr(), client_tls(pki, pki, name)).await;
    peer.hello(&["Dummy2"], &["Dummy2"]).await;
    assert!(matches!(peer.next().await, Some(Message::IdscpHello(_))));
    peer
}

/// An IdscpData frame carrying `message` with alternating bit `bit`.
pub fn data_frame(message: &AppLayerMessage, bit: bool) -> Message {
    Message::IdscpData(IdscpData {
        data: Bytes::from(prost::Message::encode_to_vec(message)),
        alternating_bit: bit,
    })
}

impl RawPeer {
    pub async fn connect(addr: &str, tls: Arc<rustls::ClientConfig>) -> RawPeer {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let stream = TlsConnector::from(tls).connect(name, tcp).await.unwrap();
        RawPeer {
            framed: Framed::new(stream, IdscpCodec::new(16 * 1024 * 1024)),
        }
    }

    pub async fn send(&mut self, message: Message) {
        self.framed.send(message).await.unwrap();
    }

    /// The next frame, or `None` once the server closed the stream; fails the test after 10 s.
    pub async fn next(&mut self) -> Option<Message> {
        match tokio::time::timeout(Duration::from_secs(10), self.framed.next()).await {
            Ok(Some(Ok(message))) => Some(message),
            Ok(Some(Err(_))) | Ok(None) => None,
            Err(_) => panic!("no frame from the server within 10 s"),
        }
    }

    /// Sends `data` until its ACK arrives, as a real peer does: data that arrives while the other
    /// side is still attesting is dropped without an ACK.
    pub async fn send_until_acked(&mut self, data: Message) {
        let Message::IdscpData(IdscpData {
            alternating_bit, ..
        }) = &data
        else {
            panic!("send_until_acked takes IdscpData");
        };
        let bit = *alternating_bit;
        for _attempt in 0..50 {
            self.send(data.clone()).await;
            match tokio::time::timeout(Duration::from_millis(200), self.framed.next()).await {
                Ok(Some(Ok(Message::IdscpAck(IdscpAck { alternating_bit }))))
                    if alternating_bit == bit =>
                {
                    return
                }
                Ok(Some(Ok(other))) => panic!("expected an ACK, got {other:?}"),
                Ok(_) => panic!("connection closed while waiting for an ACK"),
                Err(_) => {}
            }
        }
        panic!("no ACK after 50 attempts");
    }

    pub async fn hello(&mut self, supported: &[&str], expected: &[&str]) {
        self.send(Message::IdscpHello(IdscpHello {
            version: 2,
            dynamic_attribute_token: Some(IdscpDat {
                token: Bytes::from_static(b"raw-peer"),
            }),
            supported_ra_suite: supported.iter().map(|s| s.to_string()).collect(),
            expected_ra_suite: expected.iter().map(|s| s.to_string()).collect(),
        }))
        .await;
    }
}

/// Answers every message with its payload, the peer's identity as header, the number of messages
/// it handled so far, and the `exp` of the peer's DAT as the server sees it.
#[derive(Default, Clone)]
pub struct Echo {
    pub handled: Arc<AtomicU64>,
    pub delay: Duration,
}

impl Service for Echo {
    type Message = AppLayerMessage;

    async fn handle(
        &self,
        peer: Arc<PeerInfo>,
        message: Result<AppLayerMessage, prost::DecodeError>,
    ) -> Option<AppLayerMessage> {
        let count = self.handled.fetch_add(1, Ordering::SeqCst) + 1;
        // What does not decode is left unanswered at once; only answers take `delay`.
        let payload = match message.ok()?.message? {
            app_layer_message::Message::IdsMessage(m) => m.payload,
            app_layer_message::Message::GenericMessage(m) => m.payload,
        };
        tokio::time::sleep(self.delay).await;
        let header = |name: &str, value: String| HeaderEntry {
            name: name.into(),
            value,
        };
        Some(AppLayerMessage {
            message: Some(app_layer_message::Message::IdsMessage(IdsMessage {
                header: peer.identity.clone(),
                payload,
                extra_headers: vec![
                    header("count", count.to_string()),
                    header("peer-exp", peer.dat_claims["exp"].to_string()),
                ],
            })),
        })
    }
}

/// An IdsMessage with an empty header: enough for transport tests.
pub fn ids(payload: impl Into<Bytes>) -> AppLayerMessage {
    AppLayerMessage {
        message: Some(app_layer_message::Message::IdsMessage(IdsMessage {
            header: "{}".into(),
            payload: payload.into(),
            extra_headers: vec![],
        })),
    }
}

/// The header, payload and extra headers of an IdsMessage reply.
pub fn reply_parts(reply: &AppLayerMessage) -> (String, Bytes, Vec<(String, String)>) {
    match &reply.message {
        Some(app_layer_message::Message::IdsMessage(m)) => (
            m.header.clone(),
            m.payload.clone(),
            m.extra_headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        ),
        other => panic!("unexpected reply {other:?}"),
    }
}

pub fn header_value(reply: &AppLayerMessage, name: &str) -> String {
    let (_, _, headers) = reply_parts(reply);
    headers
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_default()
}

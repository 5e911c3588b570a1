//! Connections that never finish their handshake must not hold up anyone else: they count against
//! their own pool with a share per source address, sockets beyond it are closed at once, and a
//! peer beyond `max_connections` is told why. Real clearing house, real sockets; the flood binds
//! its sockets to other loopback addresses (127.0.0.0/8 is all loopback on Linux) than the
//! legitimate clients (127.0.0.1), so the per-address share can be seen at work.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clearinghouse::client::ClearingHouseClient;
use clearinghouse::idscp2::admission::HandshakeLimits;
use clearinghouse::idscp2::client::ClientError;
use clearinghouse::idscp2::dat::DevelopmentVerifier;
use clearinghouse::idscp2::endpoint::Settings;
use clearinghouse::idscp2::proto::idscp_close::CloseCause;
use clearinghouse::idscp2::server::ServerConfig;
use clearinghouse::receipt::{payload_hash, Jwks};
use clearinghouse::store::embedded::EmbeddedStore;
use tokio::net::TcpSocket;

use crate::support::clearing::{clearing_house, receipt_signer, Limits};
use crate::support::pki::TestPki;
use crate::support::transport::{
    client_config, dev_endpoint, server_tls, test_settings, TestServer,
};

const POOL: usize = 8;
const PER_ADDRESS: usize = 4;
/// Far more than the pool.
const FLOOD: usize = 40;
/// Turns a hang into a failure; nothing is asserted about how long anything takes.
const GENEROUS: Duration = Duration::from_secs(20);

const FLOOD_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const OTHER_FLOOD_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const NEWCOMER_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);

struct ClearingHouseUnderTest {
    pki: TestPki,
    server: TestServer,
    jwks: Jwks,
    _data: tempfile::TempDir,
}

/// A clearing house with a small handshake pool whose pending handshakes would wait a minute, so
/// that an idle flood stays in place for the whole test unless the server closes it.
async fn start(max_connections: usize) -> ClearingHouseUnderTest {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(data.path().join("ch.redb")).unwrap());
    let signer = receipt_signer(&pki);
    let jwks = Jwks::new(&signer, vec![]);
    let service = clearing_house(
        store,
        signer,
        None,
        Arc::new(DevelopmentVerifier::new()),
        Limits::default(),
    );
    let patient = Duration::from_secs(60);
    let config = ServerConfig {
        tls: server_tls(&pki),
        endpoint: dev_endpoint(Settings {
            handshake_timeout: patient,
            ..test_settings()
        }),
        max_connections,
        handshake_limits: HandshakeLimits {
            max_pending: POOL,
            max_pending_per_source: PER_ADDRESS,
            client_hello_timeout: patient,
        },
    };
    ClearingHouseUnderTest {
        server: TestServer::start_with(config, service).await,
        pki,
        jwks,
        _data: data,
    }
}

impl ClearingHouseUnderTest {
    async fn try_client(&self, name: &str) -> Result<ClearingHouseClient, ClientError> {
        let config = client_config(&self.pki, name, dev_endpoint(test_settings()));
        let connection = self.server.connect(&config).await?;
        Ok(ClearingHouseClient::new(
            connection,
            format!("https://{name}.test/connector"),
            None,
            Duration::from_secs(10),
        ))
    }

    async fn client(&self, name: &str) -> ClearingHouseClient {
        self.try_client(name).await.unwrap()
    }

    /// A client once the server has room again (it frees places as it notices closed sockets).
    async fn client_eventually(&self, name: &str) -> ClearingHouseClient {
        tokio::time::timeout(GENEROUS, async {
            loop {
                match self.try_client(name).await {
                    Ok(client) => return client,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .await
        .expect("the server takes a new client once it has room")
    }

    /// Logs `payload` (to a new process of its own) and checks the receipt vouches for it.
    async fn log_with_receipt(&self, client: &mut ClearingHouseClient, payload: &'static [u8]) {
        let pid = payload_hash(payload);
        let reply = client
            .log(&pid, Bytes::from_static(payload), None)
            .await
            .unwrap();
        assert_eq!(
            reply.message_type, "ids:MessageProcessedNotificationMessage",
            "{reply:?}"
        );
        let receipt = reply.json().unwrap()["data"].as_str().unwrap().to_owned();
        let claims = self.jwks.verify(&receipt).unwrap();
        assert_eq!(claims.payload_hash, payload_hash(payload));
    }
}

/// `n` TCP connections from `source` that never send a byte.
async fn idle_sockets(source: Ipv4Addr, server: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        let stream = socket.connect(server).await.unwrap();
        // Checked with plain system calls below, independent of the runtime's readiness events.
        sockets.push(stream.into_std().unwrap());
    }
    sockets
}

/// Whether the server closed `socket` (EOF or reset); it is non-blocking, so this does not wait.
fn closed_by_server(socket: &std::net::TcpStream) -> bool {
    match socket.peek(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => panic!("the server sent data before the ClientHello"),
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// Waits until at least `closed` of `sockets` are closed by the server; returns how many are.
async fn wait_for_closed(sockets: &[std::net::TcpStream], closed: usize) -> usize {
    let count = || sockets.iter().filter(|s| closed_by_server(s)).count();
    tokio::time::timeout(GENEROUS, async {
        while count() < closed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {closed} sockets were closed", count()));
    count()
}

#[tokio::test]
async fn an_idle_flood_from_one_address_does_not_hold_up_others() {
    let ch = start(4).await;
    let mut established = ch.client("connector-a").await;
    ch.log_with_receipt(&mut established, b"before the flood")
        .await;

    let flood = idle_sockets(FLOOD_ADDRESS, ch.server.addr, FLOOD).await;

    // A legitimate peer gets through its handshake and is served while the flood is open.
    let mut newcomer = tokio::time::timeout(GENEROUS, ch.try_client("connector-b"))
        .await
        .expect("the handshake is not held up by the flood")
        .expect("the handshake succeeds during the flood");
    ch.log_with_receipt(&mut newcomer, b"during the flood")
        .await;
    // The established peer is served as before.
    ch.log_with_receipt(&mut established, b"still served").await;

    // The flood beyond its address's share was closed at once; its share is still pending.
    assert_eq!(
        wait_for_closed(&flood, FLOOD - PER_ADDRESS).await,
        FLOOD - PER_ADDRESS
    );
    ch.log_with_receipt(&mut newcomer, b"after the check").await;
    let open = flood.iter().filter(|s| !closed_by_server(s)).count();
    assert_eq!(open, PER_ADDRESS, "the address's share stays pending");
}

#[tokio::test]
async fn a_full_handshake_pool_refuses_newcomers_and_recovers() {
    let ch = start(4).await;
    let first = idle_sockets(FLOOD_ADDRESS, ch.server.addr, PER_ADDRESS).await;
    let second = idle_sockets(OTHER_FLOOD_ADDRESS, ch.server.addr, PER_ADDRESS).await;

    // The pool is full: a newcomer from any address is closed before TLS.
    let newcomer = idle_sockets(NEWCOMER_ADDRESS, ch.server.addr, 1).await;
    assert_eq!(wait_for_closed(&newcomer, 1).await, 1);
    assert!(ch.try_client("connector-a").await.is_err());
    assert!(
        first.iter().chain(&second).all(|s| !closed_by_server(s)),
        "pending handshakes keep their places"
    );

    // When one address's pending sockets go away, their places are free again.
    drop(first);
    let mut client = ch.client_eventually("connector-a").await;
    ch.log_with_receipt(&mut client, b"served again").await;
    assert!(second.iter().all(|s| !closed_by_server(s)));
}

#[tokio::test]
async fn a_peer_beyond_max_connections_is_told_why() {
    let ch = start(1).await;
    let mut established = ch.client("connector-a").await;

    let refused = ch.try_client("connector-b").await.err().expect("refused");
    let reason = refused.close_reason().expect("an IdscpClose");
    assert_eq!(reason.cause, CloseCause::Error, "{reason}");
    assert!(reason.by_peer, "{reason}");
    assert!(reason.message.contains("too many connections"), "{reason}");
    ch.log_with_receipt(&mut established, b"unaffected").await;

    established.close().await;
    let mut next = ch.client_eventually("connector-b").await;
    ch.log_with_receipt(&mut next, b"its turn").await;
}

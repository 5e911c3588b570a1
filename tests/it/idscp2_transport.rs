//! Our IDSCP2 client against our IDSCP2 server over real TLS on loopback, plus a raw peer that
//! writes frames by hand where the behaviour under test needs a misbehaving peer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clearinghouse::idscp2::client::ClientError;
use clearinghouse::idscp2::connection::ConnectionError;
use clearinghouse::idscp2::proto::app::AppLayerMessage;
use clearinghouse::idscp2::proto::idscp_close::CloseCause;
use clearinghouse::idscp2::proto::idscp_message::Message;
use clearinghouse::idscp2::proto::{IdscpAck, IdscpData};
use clearinghouse::idscp2::tls::{PeerCertificate, TlsIdentity};
use prost::Message as _;

use crate::support::pki::TestPki;
use crate::support::transport::*;

const REPLY_WAIT: Duration = Duration::from_secs(10);

fn connector_id(pki: &TestPki, name: &str) -> String {
    let identity =
        TlsIdentity::from_pem_files(&pki.client_cert(name), &pki.client_key(name)).unwrap();
    PeerCertificate::new(identity.leaf().clone())
        .connector_id()
        .unwrap()
}

fn close_cause(error: &ClientError) -> CloseCause {
    error
        .close_reason()
        .unwrap_or_else(|| panic!("expected an IDSCP2 close, got {error}"))
        .cause
}

async fn dev_pair(suites: &[&str]) -> (TestPki, TestServer, Echo) {
    let pki = TestPki::new();
    let echo = Echo::default();
    let settings = with_suites(test_settings(), suites, suites);
    let server = TestServer::start(server_tls(&pki), dev_endpoint(settings), echo.clone()).await;
    (pki, server, echo)
}

async fn round_trip_with_suites(suites: &[&str]) -> u64 {
    let (pki, server, _) = dev_pair(suites).await;
    let settings = with_suites(test_settings(), suites, suites);
    let config = client_config(&pki, "connector-a", dev_endpoint(settings));
    let mut connection = server.connect(&config).await.unwrap();
    let reply = connection
        .request(&ids("ping"), REPLY_WAIT, Some)
        .await
        .unwrap();
    let (identity, payload, _) = reply_parts(&reply);
    assert_eq!(identity, connector_id(&pki, "connector-a"));
    assert_eq!(&payload[..], b"ping");
    assert_eq!(
        connection.peer().identity,
        "".to_string() + &server_identity(&pki)
    );
    let ra_messages = connection.stats().ra_messages_sent.load(Ordering::SeqCst)
        + connection
            .stats()
            .ra_messages_received
            .load(Ordering::SeqCst);
    connection.close().await;
    server.stop().await;
    ra_messages
}

fn server_identity(pki: &TestPki) -> String {
    let identity = TlsIdentity::from_pem_files(&pki.server_cert(), &pki.server_key()).unwrap();
    PeerCertificate::new(identity.leaf().clone())
        .connector_id()
        .unwrap()
}

#[tokio::test]
async fn handshake_with_dummy2_exchanges_no_ra_messages() {
    assert_eq!(round_trip_with_suites(&["Dummy2"]).await, 0);
}

#[tokio::test]
async fn handshake_with_dummy_runs_two_rounds_each_way() {
    // Our prover and verifier each send two messages and receive two.
    assert_eq!(round_trip_with_suites(&["Dummy"]).await, 8);
}

#[tokio::test]
async fn handshake_with_null_ra_sends_one_message_each_way() {
    assert_eq!(round_trip_with_suites(&["NullRa"]).await, 4);
}

#[tokio::test]
async fn rsa_client_certificates_are_accepted() {
    let (pki, server, _) = dev_pair(&["Dummy2"]).await;
    let (cert, key) = pki.rsa_client();
    let identity = TlsIdentity::from_pem_files(&cert, &key).unwrap();
    let cas = clearinghouse::idscp2::tls::load_ca_file(&pki.ca_cert()).unwrap();
    let config = clearinghouse::idscp2::client::ClientConfig {
        tls: clearinghouse::idscp2::tls::client_config(&identity, &cas).unwrap(),
        endpoint: dev_endpoint(with_suites(test_settings(), &["Dummy2"], &["Dummy2"])),
    };
    let mut connection = server.connect(&config).await.unwrap();
    let reply = connection
        .request(&ids("rsa"), REPLY_WAIT, Some)
        .await
        .unwrap();
    let expected = PeerCertificate::new(identity.leaf().clone())
        .connector_id()
        .unwrap();
    assert_eq!(reply_parts(&reply).0, expected);
    server.stop().await;
}

#[tokio::test]
async fn ra_mismatch_closes_the_handshake() {
    let (pki, server, _) = dev_pair(&["Dummy2", "Dummy"]).await;
    let settings = with_suites(test_settings(), &["NullRa"], &["NullRa"]);
    let config = client_config(&pki, "connector-a", dev_endpoint(settings));
    let error = server
        .connect(&config)
        .await
        .err()
        .expect("handshake must fail");
    assert_eq!(close_cause(&error), CloseCause::NoRaMechanismMatchProver);
    server.stop().await;
}

#[tokio::test]
async fn server_names_the_side_without_a_match() {
    let (pki, server, _) = dev_pair(&["Dummy2"]).await;
    let tls = client_tls(&pki, &pki, "connector-a");
    // The server cannot prove anything we expect: cause 4.
    let mut peer = RawPeer::connect(&server.addr(), tls.clone()).await;
    peer.hello(&["Dummy2"], &["TPM2d"]).await;
    assert!(matches!(peer.next().await, Some(Message::IdscpHello(_))));
    match peer.next().await {
        Some(Message::IdscpClose(close)) => {
            assert_eq!(
                close.cause_code,
                CloseCause::NoRaMechanismMatchProver as i32
            )
        }
        other => panic!("expected IdscpClose, got {other:?}"),
    }
    // We cannot prove anything the server expects: cause 5.
    let mut peer = RawPeer::connect(&server.addr(), tls).await;
    peer.hello(&["TPM2d"], &["Dummy2"]).await;
    assert!(matches!(peer.next().await, Some(Message::IdscpHello(_))));
    match peer.next().await {
        Some(Message::IdscpClose(close)) => {
            assert_eq!(
                close.cause_code,
                CloseCause::NoRaMechanismMatchVerifier as i32
            )
        }
        other => panic!("expected IdscpClose, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn silent_peer_is_closed_with_timeout() {
    let pki = TestPki::new();
    let settings = Settings {
        handshake_timeout: Duration::from_millis(500),
        ..test_settings()
    };
    let server = TestServer::start(server_tls(&pki), dev_endpoint(settings), Echo::default()).await;
    let mut peer = RawPeer::connect(&server.addr(), client_tls(&pki, &pki, "connector-a")).await;
    assert!(matches!(peer.next().await, Some(Message::IdscpHello(_))));
    match peer.next().await {
        Some(Message::IdscpClose(close)) => {
            assert_eq!(close.cause_code, CloseCause::Timeout as i32)
        }
        other => panic!("expected IdscpClose TIMEOUT, got {other:?}"),
    }
    assert!(peer.next().await.is_none(), "the server closes the stream");
    server.stop().await;
}

use clearinghouse::idscp2::endpoint::Settings;

#[tokio::test]
async fn lost_acks_cause_resends_but_each_message_is_delivered_once() {
    let (pki, server, echo) = dev_pair(&["Dummy2"]).await;
    let mut peer = established_raw_peer(&server, &pki, "connector-a").await;

    // We "lose" the server's ACK and resend: the server ACKs again but handles it once.
    peer.send_until_acked(data_frame(&ids("one"), false)).await;
    peer.send(data_frame(&ids("one"), false)).await;
    // The ACK of the duplicate may wait for company (`Settings::ack_delay`) and so come before
    // or after the reply.
    let mut acks = 0;
    let mut reply = None;
    while reply.is_none() || acks == 0 {
        match peer.next().await {
            Some(Message::IdscpAck(IdscpAck {
                alternating_bit: false,
            })) => acks += 1,
            Some(Message::IdscpData(d)) if reply.is_none() => reply = Some(d),
            other => panic!("unexpected {other:?}"),
        }
    }
    let reply = reply.unwrap();
    assert_eq!(acks, 1, "the duplicate is ACKed again");
    assert!(
        !reply.alternating_bit,
        "the server's first data carries bit 0"
    );

    // Now we withhold our ACK for the reply: the server resends the same data until we ACK.
    let resent = peer.next().await;
    assert_eq!(resent, Some(Message::IdscpData(reply.clone())));
    peer.send(Message::IdscpAck(IdscpAck {
        alternating_bit: false,
    }))
    .await;

    // The next exchange uses bit 1 on both sides, and nothing else was handled twice.
    peer.send(data_frame(&ids("two"), true)).await;
    assert_eq!(
        peer.next().await,
        Some(Message::IdscpAck(IdscpAck {
            alternating_bit: true
        }))
    );
    match peer.next().await {
        Some(Message::IdscpData(d)) => {
            assert!(d.alternating_bit);
            let reply = AppLayerMessage::decode(d.data).unwrap();
            assert_eq!(reply_parts(&reply).1, Bytes::from_static(b"two"));
            assert_eq!(header_value(&reply, "count"), "2");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(echo.handled.load(Ordering::SeqCst), 2);
    server.stop().await;
}

#[tokio::test]
async fn our_client_resends_when_an_ack_is_lost() {
    // The raw peer plays the server this time: it ignores the first copy of our data.
    let pki = TestPki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let acceptor = tokio_rustls::TlsAcceptor::from(server_tls(&pki));
    let raw_server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let mut framed = tokio_util::codec::Framed::new(
            tls,
            clearinghouse::idscp2::frame::IdscpCodec::new(1 << 20),
        );
        let mut raw = RawPeerServer {
            framed: &mut framed,
        };
        raw.send(hello()).await;
        let mut copies = vec![];
        while copies.len() < 2 {
            match raw.next().await {
                Some(Message::IdscpData(d)) => copies.push(d),
                Some(Message::IdscpHello(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        // Deliver once: ACK the second copy and answer.
        assert_eq!(copies[0], copies[1], "a resend is the same frame");
        raw.send(Message::IdscpAck(IdscpAck {
            alternating_bit: false,
        }))
        .await;
        raw.send(data_frame(&ids("answer"), false)).await;
        assert_eq!(
            raw.next().await,
            Some(Message::IdscpAck(IdscpAck {
                alternating_bit: false
            }))
        );
        copies.len()
    });
    let config = client_config(
        &pki,
        "connector-a",
        dev_endpoint(with_suites(test_settings(), &["Dummy2"], &["Dummy2"])),
    );
    let mut connection = clearinghouse::idscp2::client::connect(&addr, "localhost", &config)
        .await
        .unwrap();
    let reply = connection
        .request(&ids("question"), REPLY_WAIT, Some)
        .await
        .unwrap();
    assert_eq!(reply_parts(&reply).1, Bytes::from_static(b"answer"));
    assert_eq!(raw_server.await.unwrap(), 2);
    assert!(connection.stats().data_resent.load(Ordering::SeqCst) >= 1);
}

struct RawPeerServer<'a, S> {
    framed: &'a mut tokio_util::codec::Framed<S, clearinghouse::idscp2::frame::IdscpCodec>,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> RawPeerServer<'_, S> {
    async fn send(&mut self, message: Message) {
        use futures::SinkExt;
        self.framed.send(message).await.unwrap();
    }
    async fn next(&mut self) -> Option<Message> {
        use futures::StreamExt;
        tokio::time::timeout(REPLY_WAIT, self.framed.next())
            .await
            .unwrap()
            .and_then(Result::ok)
    }
}

fn hello() -> Message {
    Message::IdscpHello(clearinghouse::idscp2::proto::IdscpHello {
        version: 2,
        dynamic_attribute_token: Some(clearinghouse::idscp2::proto::IdscpDat {
            token: Bytes::from_static(b"raw"),
        }),
        supported_ra_suite: vec!["Dummy2".into()],
        expected_ra_suite: vec!["Dummy2".into()],
    })
}

#[tokio::test]
async fn oversized_and_garbage_frames_close_with_error() {
    use tokio::io::AsyncWriteExt;
    let (pki, server, _) = dev_pair(&["Dummy2"]).await;
    for frame in [
        vec![0x7f, 0xff, 0xff, 0xff],       // 2 GiB announced
        vec![0xff, 0xff, 0xff, 0xf0],       // "negative" to the JVM
        vec![0, 0, 0, 3, 0xff, 0xff, 0xff], // not protobuf
    ] {
        let mut peer = established_raw_peer(&server, &pki, "connector-a").await;
        peer.framed.get_mut().write_all(&frame).await.unwrap();
        peer.framed.get_mut().flush().await.unwrap();
        match peer.next().await {
            Some(Message::IdscpClose(close)) => {
                assert_eq!(
                    close.cause_code,
                    CloseCause::Error as i32,
                    "{}",
                    close.cause_msg
                )
            }
            other => panic!("expected IdscpClose ERROR, got {other:?}"),
        }
        assert!(peer.next().await.is_none());
    }
    // The server is unharmed.
    let config = client_config(
        &pki,
        "connector-b",
        dev_endpoint(with_suites(test_settings(), &["Dummy2"], &["Dummy2"])),
    );
    let mut connection = server.connect(&config).await.unwrap();
    assert!(connection
        .request(&ids("still here"), REPLY_WAIT, Some)
        .await
        .is_ok());
    server.stop().await;
}

#[tokio::test]
async fn garbage_application_data_reaches_the_service_as_an_error() {
    let (pki, server, echo) = dev_pair(&["Dummy2"]).await;
    let mut peer = established_raw_peer(&server, &pki, "connector-a").await;
    peer.send_until_acked(Message::IdscpData(IdscpData {
        data: Bytes::from_static(&[0xff, 0xff, 0xff]),
        alternating_bit: false,
    }))
    .await;
    // Echo answers nothing to a message that did not decode, but it was asked.
    tokio::time::timeout(REPLY_WAIT, async {
        while echo.handled.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    // And the connection still works.
    peer.send(data_frame(&ids("fine"), true)).await;
    assert_eq!(
        peer.next().await,
        Some(Message::IdscpAck(IdscpAck {
            alternating_bit: true
        }))
    );
    assert!(matches!(peer.next().await, Some(Message::IdscpData(_))));
    server.stop().await;
}

#[tokio::test]
async fn tls_refuses_foreign_missing_and_old_client_certificates() {
    let (pki, server, echo) = dev_pair(&["Dummy2"]).await;
    let settings = with_suites(test_settings(), &["Dummy2"], &["Dummy2"]);
    let server_cas = clearinghouse::idscp2::tls::load_ca_file(&pki.ca_cert()).unwrap();

    // A client certificate from another CA.
    let other = TestPki::other_ca();
    let foreign = clearinghouse::idscp2::client::ClientConfig {
        tls: client_tls(&other, &pki, "connector-a"),
        endpoint: dev_endpoint(settings.clone()),
    };
    assert_tls_refused(server.connect(&foreign).await.err());

    // No client certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    for ca in &server_cas {
        roots.add(ca.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let anonymous = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let anonymous = clearinghouse::idscp2::client::ClientConfig {
        tls: Arc::new(anonymous),
        endpoint: dev_endpoint(settings.clone()),
    };
    assert_tls_refused(server.connect(&anonymous).await.err());

    // A client that speaks TLS 1.2 only, with a valid certificate.
    let identity = TlsIdentity::from_pem_files(
        &pki.client_cert("connector-a"),
        &pki.client_key("connector-a"),
    )
    .unwrap();
    let old = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .unwrap();
    let old = clearinghouse::idscp2::client::ClientConfig {
        tls: Arc::new(old),
        endpoint: dev_endpoint(settings),
    };
    assert_tls_refused(server.connect(&old).await.err());

    assert_eq!(echo.handled.load(Ordering::SeqCst), 0);
    server.stop().await;
}

/// TLS 1.3 lets a client finish its side before the server judges its certificate, so the refusal
/// shows either in the handshake or as the server's alert on the first read.
fn assert_tls_refused(error: Option<ClientError>) {
    let error = error.expect("the connection must be refused");
    let text = error.to_string();
    match &error {
        ClientError::Tls { .. } => {}
        ClientError::Connection(ConnectionError::Closed(reason)) => {
            assert!(reason.by_peer, "{text}");
            assert!(
                text.contains("alert")
                    || text.contains("reset")
                    || text.contains("without IdscpClose"),
                "{text}"
            );
        }
        other => panic!("expected a TLS refusal, got {other}"),
    }
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_then_closes_with_user_shutdown() {
    let pki = TestPki::new();
    let echo = Echo {
        delay: Duration::from_millis(500),
        ..Echo::default()
    };
    let settings = with_suites(test_settings(), &["Dummy2"], &["Dummy2"]);
    let server = TestServer::start(
        server_tls(&pki),
        dev_endpoint(settings.clone()),
        echo.clone(),
    )
    .await;
    let config = client_config(&pki, "connector-a", dev_endpoint(settings));
    let mut connection = server.connect(&config).await.unwrap();
    connection.send(&ids("slow")).await.unwrap();
    // Stop while the service is still working on the request.
    tokio::time::timeout(REPLY_WAIT, async {
        while echo.handled.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let stopped = tokio::spawn(server.stop());
    let reply = tokio::time::timeout(REPLY_WAIT, connection.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply_parts(&reply).1, Bytes::from_static(b"slow"));
    match tokio::time::timeout(REPLY_WAIT, connection.recv())
        .await
        .unwrap()
    {
        Err(ConnectionError::Closed(reason)) => {
            assert_eq!(reason.cause, CloseCause::UserShutdown);
            assert!(reason.by_peer);
        }
        other => panic!("expected USER_SHUTDOWN, got {other:?}"),
    }
    stopped.await.unwrap();
}

#[tokio::test]
async fn silent_sockets_neither_block_others_nor_stay_open() {
    use tokio::io::AsyncReadExt;
    let pki = TestPki::new();
    let settings = Settings {
        handshake_timeout: Duration::from_millis(500),
        ..with_suites(test_settings(), &["Dummy2"], &["Dummy2"])
    };
    let server = TestServer::start(
        server_tls(&pki),
        dev_endpoint(settings.clone()),
        Echo::default(),
    )
    .await;
    // Peers that open TCP and never start TLS.
    let mut silent = vec![];
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    // Meanwhile a real client is served.
    let config = client_config(&pki, "connector-a", dev_endpoint(settings));
    let mut connection = server.connect(&config).await.unwrap();
    assert!(connection
        .request(&ids("served"), REPLY_WAIT, Some)
        .await
        .is_ok());
    // And the silent ones are dropped by the server (EOF) after the handshake timeout.
    for mut socket in silent {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(REPLY_WAIT, socket.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_message_too_large_for_a_frame_is_refused_locally_and_the_connection_goes_on() {
    let (pki, server, _) = dev_pair(&["Dummy2"]).await;
    let settings = Settings {
        max_frame: 4096,
        ..with_suites(test_settings(), &["Dummy2"], &["Dummy2"])
    };
    let config = client_config(&pki, "connector-a", dev_endpoint(settings));
    let mut connection = server.connect(&config).await.unwrap();
    match connection.send(&ids(vec![0u8; 5000])).await {
        Err(ConnectionError::TooLarge { size, limit }) => assert!(size > limit),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let reply = connection
        .request(&ids("small"), REPLY_WAIT, Some)
        .await
        .unwrap();
    assert_eq!(reply_parts(&reply).1, Bytes::from_static(b"small"));
    server.stop().await;
}

/// Not an application message: the service answers nothing, so its ACK has no answer to wait for.
fn unanswered(bit: bool) -> Message {
    Message::IdscpData(IdscpData {
        data: Bytes::from_static(b"\xff\xff\xff"),
        alternating_bit: bit,
    })
}

#[tokio::test]
async fn the_ack_of_a_request_waits_for_its_answer_beyond_the_ack_delay() {
    let pki = TestPki::new();
    let echo = Echo {
        delay: Duration::from_millis(200),
        ..Echo::default()
    };
    // A quarter of this ACK timeout, 500 ms, is the longest an ACK may wait for an answer.
    let settings = Settings {
        ack_timeout: Duration::from_secs(2),
        ack_delay: Duration::from_millis(10),
        ..with_suites(test_settings(), &["Dummy2"], &["Dummy2"])
    };
    let server = TestServer::start(server_tls(&pki), dev_endpoint(settings), echo.clone()).await;
    let mut peer = established_raw_peer(&server, &pki, "connector-a").await;
    // Data is taken once the server's attestation is done; a message left unanswered is ACKed
    // on its own (after the ACK delay), well before our resend.
    peer.send_until_acked(unanswered(false)).await;

    peer.send(data_frame(&ids("slow"), true)).await;
    // The answer takes 200 ms, twenty times the ACK delay: the ACK waits for it instead of going
    // out alone after 10 ms, which would cost the server a TLS record and a write of its own.
    let early = tokio::time::timeout(Duration::from_millis(120), peer.next()).await;
    assert!(
        early.is_err(),
        "something came before the answer: {early:?}"
    );
    assert_eq!(
        peer.next().await,
        Some(Message::IdscpAck(IdscpAck {
            alternating_bit: true
        }))
    );
    match peer.next().await {
        Some(Message::IdscpData(d)) => {
            let reply = AppLayerMessage::decode(d.data).unwrap();
            assert_eq!(reply_parts(&reply).1, Bytes::from_static(b"slow"));
        }
        other => panic!("expected the answer, got {other:?}"),
    }
    assert_eq!(echo.handled.load(Ordering::SeqCst), 2);
    server.stop().await;
}

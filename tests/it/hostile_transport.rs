//! Peers that hold valid certificates and still misbehave, against our IDSCP2 server over real TLS
//! on loopback: one that pipelines requests and never ACKs the replies, many that announce big
//! frames and never finish them, one that reads but never ACKs. Each must be stopped by the
//! server's bounds (in-flight slots, the memory budget, the frame timeout, the resend limit)
//! while a well-behaved client goes on being served. Small limits keep each test to seconds.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use clearinghouse::idscp2::budget::MemoryLimits;
use clearinghouse::idscp2::endpoint::{Endpoint, Settings};
use clearinghouse::idscp2::proto::idscp_close::CloseCause;
use clearinghouse::idscp2::proto::idscp_message::Message;
use clearinghouse::idscp2::proto::IdscpClose;
use futures::StreamExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::support::pki::TestPki;
use crate::support::transport::*;
use tokio::io::AsyncWriteExt;

const REPLY_WAIT: Duration = Duration::from_secs(10);
/// How long our raw peers wait for an ACK before they resend, as real peers do.
const RESEND: Duration = Duration::from_millis(200);
const MAX_FRAME: usize = 256 * 1024;
const HANDSHAKE_FRAME: usize = 4096;
const IN_FLIGHT: usize = 2;
const MAX_RESENDS: u32 = 3;
/// Time enough for the checks while the pipelining peer is stuck.
const PIPELINE_MAX_RESENDS: u32 = 15;

/// A pool of 1 MiB after 8 connections' small-frame allowances and floors (8 x 2 x 4 KiB).
fn limits() -> MemoryLimits {
    MemoryLimits {
        total: 8 * 2 * HANDSHAKE_FRAME + 1024 * 1024,
        per_connection: 2 * MAX_FRAME,
        connections: 8,
    }
}

fn hostile_settings(max_resends: u32) -> Settings {
    Settings {
        max_frame: MAX_FRAME,
        handshake_max_frame: HANDSHAKE_FRAME,
        frame_timeout: Duration::from_secs(1),
        requests_in_flight: IN_FLIGHT,
        max_resends,
        memory: limits(),
        // The clearing house's metric names, which resend_limit_closes reads.
        metrics_prefix: "clearinghouse".into(),
        ..with_suites(test_settings(), &["Dummy2"], &["Dummy2"])
    }
}

async fn hostile_server(max_resends: u32) -> (TestPki, TestServer, Endpoint) {
    let pki = TestPki::new();
    let endpoint = dev_endpoint(hostile_settings(max_resends));
    let server = TestServer::start(server_tls(&pki), endpoint.clone(), Echo::default()).await;
    (pki, server, endpoint)
}

/// A well-behaved client gets its answer.
async fn still_served(server: &TestServer, pki: &TestPki) {
    let settings = with_suites(test_settings(), &["Dummy2"], &["Dummy2"]);
    let config = client_config(pki, "connector-b", dev_endpoint(settings));
    let mut connection = server.connect(&config).await.unwrap();
    let reply = connection
        .request(&ids("served"), REPLY_WAIT, Some)
        .await
        .unwrap();
    assert_eq!(reply_parts(&reply).1, Bytes::from_static(b"served"));
    connection.close().await;
}

fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

fn resend_limit_closes() -> u64 {
    let rendered = metrics().render();
    rendered
        .lines()
        .find_map(|line| {
            line.strip_prefix(r#"clearinghouse_transport_closes_total{reason="resend_limit"} "#)
        })
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// Waits for the metric to pass `before`: the server counts the close just after sending it.
async fn resend_limit_closes_after(before: u64) -> u64 {
    tokio::time::timeout(REPLY_WAIT, async {
        loop {
            let now = resend_limit_closes();
            if now > before {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the resend-limit close is counted")
}

fn assert_resend_limit_close(close: &IdscpClose, resends: u32) {
    assert_eq!(close.cause_code, CloseCause::Timeout as i32, "{close:?}");
    assert_eq!(
        close.cause_msg,
        format!("Peer did not acknowledge our data after {resends} resends")
    );
}

#[tokio::test]
async fn a_pipelining_peer_that_never_acks_gets_its_slots_and_no_more() {
    let before = resend_limit_closes();
    let (pki, server, endpoint) = hostile_server(PIPELINE_MAX_RESENDS).await;
    let mut peer = established_raw_peer(&server, &pki, "connector-a").await;
    // Requests of 100 kB, answered with their payload: replies too big for any floor.
    let request = ids(vec![7u8; 100_000]);
    let mut acked = 0;
    let mut replies = 0;
    let mut closed = None;
    let mut checked = false;
    'requests: for i in 0..6 {
        let bit = i % 2 == 1;
        peer.send(data_frame(&request, bit)).await;
        // Like a real peer: resend every 200 ms until ACKed; never ACK the server's data.
        let mut resend_at = tokio::time::Instant::now() + RESEND;
        loop {
            match tokio::time::timeout_at(resend_at, peer.framed.next()).await {
                Ok(Some(Ok(Message::IdscpAck(ack)))) if ack.alternating_bit == bit => {
                    acked += 1;
                    break;
                }
                Ok(Some(Ok(Message::IdscpData(_)))) => replies += 1,
                Ok(Some(Ok(Message::IdscpClose(close)))) => {
                    closed = Some(close);
                    break 'requests;
                }
                Ok(Some(Ok(other))) => panic!("unexpected {other:?}"),
                Ok(_) => panic!("the stream ended without IdscpClose"),
                Err(_) => {
                    if acked == IN_FLIGHT && !checked {
                        // Stuck as we should be: the server's memory for us stays within our
                        // share, and others are served meanwhile.
                        checked = true;
                        assert!(endpoint.budget.pool_held() <= limits().per_connection);
                        still_served(&server, &pki).await;
                    }
                    peer.send(data_frame(&request, bit)).await;
                    resend_at = tokio::time::Instant::now() + RESEND;
                }
            }
        }
    }
    assert_eq!(acked, IN_FLIGHT, "only the in-flight slots were taken");
    let close = closed.expect("the server closed the peer");
    assert_resend_limit_close(&close, PIPELINE_MAX_RESENDS);
    assert!(checked);
    assert!(
        replies > PIPELINE_MAX_RESENDS as usize,
        "{replies} copies of replies"
    );
    assert!(resend_limit_closes_after(before).await > before);
    // Everything the peer held is given back once it is gone.
    tokio::time::timeout(REPLY_WAIT, async {
        while endpoint.budget.pool_held() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the budget is given back");
    server.stop().await;
}

#[tokio::test]
async fn a_reader_that_never_acks_is_closed_after_the_resend_limit() {
    let before = resend_limit_closes();
    let (pki, server, _) = hostile_server(MAX_RESENDS).await;
    let mut peer = established_raw_peer(&server, &pki, "connector-a").await;
    peer.send_until_acked(data_frame(&ids("read me"), false))
        .await;
    let mut copies = vec![];
    let close = loop {
        assert!(
            copies.len() <= 1 + MAX_RESENDS as usize,
            "resent beyond the limit"
        );
        match peer.next().await {
            Some(Message::IdscpData(reply)) => copies.push(reply),
            Some(Message::IdscpClose(close)) => break close,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_resend_limit_close(&close, MAX_RESENDS);
    assert_eq!(
        copies.len(),
        1 + MAX_RESENDS as usize,
        "the reply, then its resends"
    );
    assert!(copies.iter().all(|copy| *copy == copies[0]));
    assert!(peer.next().await.is_none(), "the server closes the stream");
    assert!(resend_limit_closes_after(before).await > before);
    still_served(&server, &pki).await;
    server.stop().await;
}

#[tokio::test]
async fn unfinished_big_frames_hold_no_more_than_the_budget_and_are_closed_in_time() {
    let (pki, server, endpoint) = hostile_server(MAX_RESENDS).await;
    // Six peers announce an almost maximal data frame and send most of it: four fit into the
    // pool of 1 MiB, the other two are not read until room is made.
    let announced: u32 = 250_000;
    let mut peers = vec![];
    for _ in 0..6 {
        let mut peer = established_raw_peer(&server, &pki, "connector-a").await;
        let mut partial = announced.to_be_bytes().to_vec();
        partial.push((8 << 3) | 2);
        partial.resize(4 + 200_000, 0);
        peers.push(tokio::spawn(async move {
            let stream = peer.framed.get_mut();
            stream.write_all(&partial).await.unwrap();
            stream.flush().await.unwrap();
            peer.next().await
        }));
    }
    tokio::time::timeout(REPLY_WAIT, async {
        while endpoint.budget.pool_held() < 4 * announced as usize - 4 * HANDSHAKE_FRAME {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("four frames are being read");
    assert!(endpoint.budget.pool_held() < 5 * announced as usize - 5 * HANDSHAKE_FRAME);
    // With the pool spent, a client with small requests is served from its floor.
    still_served(&server, &pki).await;
    for peer in peers {
        match peer.await.unwrap() {
            Some(Message::IdscpClose(close)) => {
                assert_eq!(close.cause_code, CloseCause::Timeout as i32, "{close:?}");
                assert!(
                    close
                        .cause_msg
                        .contains("frame of 250000 bytes not complete"),
                    "{}",
                    close.cause_msg
                );
            }
            other => panic!("expected IdscpClose TIMEOUT, got {other:?}"),
        }
    }
    assert_eq!(endpoint.budget.pool_held(), 0);
    still_served(&server, &pki).await;
    server.stop().await;
}

#[tokio::test]
async fn before_its_dat_is_accepted_a_peer_cannot_announce_a_big_frame() {
    let (pki, server, _) = hostile_server(MAX_RESENDS).await;
    let mut peer = RawPeer::connect(&server.addr(), client_tls(&pki, &pki, "connector-a")).await;
    let stream = peer.framed.get_mut();
    stream
        .write_all(&(HANDSHAKE_FRAME as u32 + 1).to_be_bytes())
        .await
        .unwrap();
    stream.flush().await.unwrap();
    assert!(matches!(peer.next().await, Some(Message::IdscpHello(_))));
    match peer.next().await {
        Some(Message::IdscpClose(close)) => {
            assert_eq!(close.cause_code, CloseCause::Error as i32);
            assert!(
                close.cause_msg.contains("exceeds the limit of 4096 bytes"),
                "{}",
                close.cause_msg
            );
        }
        other => panic!("expected IdscpClose ERROR, got {other:?}"),
    }
    server.stop().await;
}

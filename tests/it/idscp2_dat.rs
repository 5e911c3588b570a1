//! DAT handling over real IDSCP2 connections: tokens come from a DAPS running on loopback, the
//! server verifies them against the DAPS's JWKS fetched over HTTP, and forged or broken tokens end
//! the handshake with NO_VALID_DAT.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clearinghouse::idscp2::client::ClientError;
use clearinghouse::idscp2::proto::app::app_layer_message;
use clearinghouse::idscp2::proto::idscp_close::CloseCause;
use clearinghouse::idscp2::tls::{PeerCertificate, TlsIdentity};
use serde_json::json;

use crate::support::daps::{daps_endpoint, verifier, Party, TestDaps, DAPS_KID};
use crate::support::pki::TestPki;
use crate::support::transport::*;

const REPLY_WAIT: Duration = Duration::from_secs(10);

struct World {
    pki: TestPki,
    daps: TestDaps,
    server: TestServer,
    server_party: Party,
    client: Party,
}

async fn world(token_lifetime: Duration) -> World {
    let pki = TestPki::new();
    let daps = TestDaps::start(token_lifetime).await;
    let server_party = Party::new(&daps, &pki.server_cert(), &pki.server_key());
    let client = Party::new(
        &daps,
        &pki.client_cert("connector-a"),
        &pki.client_key("connector-a"),
    );
    let server = TestServer::start(
        server_tls(&pki),
        daps_endpoint(test_settings(), &server_party, &daps),
        Echo::default(),
    )
    .await;
    World {
        pki,
        daps,
        server,
        server_party,
        client,
    }
}

#[tokio::test]
async fn a_dat_from_the_daps_establishes_both_identities() {
    let w = world(Duration::from_secs(300)).await;
    let config = client_config(
        &w.pki,
        "connector-a",
        daps_endpoint(test_settings(), &w.client, &w.daps),
    );
    let mut connection = w.server.connect(&config).await.unwrap();
    let reply = connection
        .request(&ids("hi"), REPLY_WAIT, Some)
        .await
        .unwrap();
    let Some(app_layer_message::Message::IdsMessage(reply)) = reply.message else {
        panic!("unexpected reply");
    };
    assert_eq!(
        reply.header, w.client.connector_id,
        "the server knows us by our DAT's sub"
    );
    let server = connection.peer();
    assert_eq!(server.identity, w.server_party.connector_id);
    assert_eq!(server.certificate.fingerprint, w.server_party.fingerprint);
    assert_eq!(server.dat_claims["iss"], json!(w.daps.issuer()));
    assert_eq!(w.daps.issued_count(&w.client.connector_id), 1);
    w.server.stop().await;
}

/// Connects presenting `token` as our DAT and returns how the handshake ended.
async fn present(w: &World, token: impl Into<Bytes>) -> ClientError {
    let endpoint = endpoint(
        test_settings(),
        Arc::new(FixedIssuer(token.into())),
        verifier(&w.daps),
    );
    let config = client_config(&w.pki, "connector-a", endpoint);
    w.server
        .connect(&config)
        .await
        .err()
        .expect("the server must refuse this DAT")
}

fn assert_no_valid_dat(error: ClientError) {
    let reason = error
        .close_reason()
        .unwrap_or_else(|| panic!("expected an IDSCP2 close, got {error}"));
    assert_eq!(reason.cause, CloseCause::NoValidDat, "{reason}");
    assert!(reason.by_peer);
    assert_eq!(reason.message, "No valid DAT");
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn forged_and_broken_dats_close_with_no_valid_dat() {
    let w = world(Duration::from_secs(300)).await;
    let valid = w
        .daps
        .valid_claims(&w.client.connector_id, &w.client.fingerprint);
    let with = |key: &str, value: serde_json::Value| {
        let mut claims = valid.clone();
        claims[key] = value;
        claims
    };
    let other_fingerprint = {
        let other = TlsIdentity::from_pem_files(
            &w.pki.client_cert("connector-b"),
            &w.pki.client_key("connector-b"),
        )
        .unwrap();
        PeerCertificate::new(other.leaf().clone()).fingerprint
    };
    let mut bad_signature = w.daps.sign(valid.clone(), Some(DAPS_KID));
    // Flip one character of the signature segment.
    let last = bad_signature.pop().unwrap();
    bad_signature.push(if last == 'A' { 'B' } else { 'A' });

    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            w.daps
                .sign(with("exp", json!(now() - 3600)), Some(DAPS_KID)),
        ),
        (
            "wrong issuer",
            w.daps
                .sign(with("iss", json!("https://evil.example")), Some(DAPS_KID)),
        ),
        (
            "wrong audience",
            w.daps
                .sign(with("aud", json!(["idsc:SOMEONE_ELSE"])), Some(DAPS_KID)),
        ),
        ("bad signature", bad_signature),
        (
            "unknown kid",
            w.daps.sign(valid.clone(), Some("no-such-kid")),
        ),
        (
            "signed by another key",
            w.daps.sign_with_unknown_key(valid.clone()),
        ),
        (
            "another certificate",
            w.daps.sign(
                with("transportCertsSha256", json!([other_fingerprint])),
                Some(DAPS_KID),
            ),
        ),
        ("INVALID_DAT", "INVALID_DAT".to_string()),
    ];
    for (case, token) in cases {
        eprintln!("case: {case}");
        assert_no_valid_dat(present(&w, token).await);
    }
    // The same path accepts the untampered token, so each case failed for its own reason.
    let config = client_config(
        &w.pki,
        "connector-a",
        endpoint(
            test_settings(),
            Arc::new(FixedIssuer(w.daps.sign(valid, Some(DAPS_KID)).into())),
            verifier(&w.daps),
        ),
    );
    assert!(w.server.connect(&config).await.is_ok());
    w.server.stop().await;
}

#[tokio::test]
async fn short_lived_dats_are_renewed_both_ways_while_data_flows() {
    // Tokens live 3 s; each side asks for a new one after two thirds of that.
    let w = world(Duration::from_secs(3)).await;
    let config = client_config(
        &w.pki,
        "connector-a",
        daps_endpoint(test_settings(), &w.client, &w.daps),
    );
    let mut connection = w.server.connect(&config).await.unwrap();

    let mut client_exps_seen_by_server = BTreeSet::new();
    let mut server_exps_seen_by_client = BTreeSet::new();
    let started = tokio::time::Instant::now();
    let mut sent = 0u32;
    while started.elapsed() < Duration::from_secs(7) {
        let payload = format!("message {sent}");
        let reply = connection
            .request(&ids(payload.clone()), REPLY_WAIT, Some)
            .await
            .unwrap();
        let Some(app_layer_message::Message::IdsMessage(reply)) = reply.message else {
            panic!("unexpected reply");
        };
        assert_eq!(
            reply.payload,
            Bytes::from(payload),
            "replies come in order, none lost or doubled"
        );
        client_exps_seen_by_server.insert(reply.extra_headers[1].value.clone());
        server_exps_seen_by_client.insert(connection.peer().dat_claims["exp"].to_string());
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sent > 50, "data kept flowing: {sent} round trips");
    assert!(
        client_exps_seen_by_server.len() >= 2,
        "server saw our renewed DAT: {client_exps_seen_by_server:?}"
    );
    assert!(
        server_exps_seen_by_client.len() >= 2,
        "we saw the server's renewed DAT: {server_exps_seen_by_client:?}"
    );
    assert!(w.daps.issued_count(&w.client.connector_id) >= 2);
    assert!(w.daps.issued_count(&w.server_party.connector_id) >= 2);
    let stats = connection.stats();
    use std::sync::atomic::Ordering::SeqCst;
    assert!(stats.own_dats_sent.load(SeqCst) >= 1);
    assert!(stats.peer_dats_accepted.load(SeqCst) >= 2);
    connection.close().await;
    w.server.stop().await;
}

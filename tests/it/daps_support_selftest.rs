//! The DAT drivers against a real DAPS over HTTP: the test DAPS in `support/daps.rs` issues DATs
//! to `DapsIssuer`, and `DapsVerifier` verifies them with the JWKS fetched from it.

use std::sync::Arc;
use std::time::Duration;

use clearinghouse::idscp2::dat::{
    daps_http_client, DapsIssuer, DapsIssuerConfig, DapsVerifier, DapsVerifierConfig, DatError,
    DatIssuer, DatVerifier, JwksSource,
};
use clearinghouse::idscp2::tls::PeerCertificate;
use futures::future::join_all;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use crate::support::daps::{TestDaps, DAPS_KID};

/// A connector as the DAPS knows it: certificate with SKI and AKI, and its private key.
struct Connector {
    id: String,
    certificate: PeerCertificate,
    key_pem: String,
}

fn connector() -> Connector {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.use_authority_key_identifier_extension = true;
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let certificate = PeerCertificate::new(cert.der().clone());
    Connector {
        id: certificate.connector_id().unwrap(),
        certificate,
        key_pem: key.serialize_pem(),
    }
}

fn register(daps: &TestDaps, connector: &Connector) {
    daps.register(
        &connector.id,
        connector.certificate.der.as_ref(),
        &connector.certificate.fingerprint,
    );
}

fn issuer(daps: &TestDaps, connector: &Connector) -> DapsIssuer {
    DapsIssuer::new(DapsIssuerConfig::new(
        daps.token_url(),
        &connector.id,
        connector.key_pem.clone().into_bytes(),
        daps_http_client().unwrap(),
    ))
    .unwrap()
}

fn verifier(daps: &TestDaps, refetch_interval: Duration) -> DapsVerifier {
    let mut config = DapsVerifierConfig::new(
        daps.issuer(),
        JwksSource::Url(daps.jwks_url()),
        daps_http_client().unwrap(),
    );
    config.jwks_refetch_interval = refetch_interval;
    DapsVerifier::new(config).unwrap()
}

#[tokio::test]
async fn issued_dat_verifies_against_the_fetched_jwks() {
    let daps = TestDaps::start(Duration::from_secs(3600)).await;
    let connector = connector();
    register(&daps, &connector);

    let token = issuer(&daps, &connector).token().await.unwrap();
    let dat = verifier(&daps, Duration::from_secs(60))
        .verify(&token, &connector.certificate)
        .await
        .unwrap();

    assert_eq!(dat.subject, connector.id);
    assert_eq!(dat.claims["scope"], "idsc:IDS_CONNECTOR_ATTRIBUTES_ALL");
    assert!(dat.expires_in.unwrap() > Duration::from_secs(3500));
    assert_eq!(daps.issued_count(&connector.id), 1);
    assert_eq!(daps.jwks_fetch_count(), 1);
}

#[tokio::test]
async fn dat_of_one_connector_does_not_verify_for_another_certificate() {
    let daps = TestDaps::start(Duration::from_secs(3600)).await;
    let (alice, mallory) = (connector(), connector());
    register(&daps, &alice);

    let token = issuer(&daps, &alice).token().await.unwrap();
    let err = verifier(&daps, Duration::from_secs(60))
        .verify(&token, &mallory.certificate)
        .await
        .unwrap_err();
    assert!(matches!(err, DatError::FingerprintMismatch), "{err}");
}

#[tokio::test]
async fn token_endpoint_refuses_a_bad_assertion() {
    let daps = TestDaps::start(Duration::from_secs(3600)).await;
    let (registered, impostor) = (connector(), connector());
    register(&daps, &registered);

    // The registered id, but an assertion signed with another key.
    let wrong_key = Connector {
        id: registered.id.clone(),
        certificate: impostor.certificate.clone(),
        key_pem: impostor.key_pem.clone(),
    };
    let err = issuer(&daps, &wrong_key).token().await.unwrap_err();
    assert!(matches!(err, DatError::TokenRequest(_)), "{err}");
    assert!(err.to_string().contains("401"), "{err}");
    assert!(err.to_string().contains("invalid_client"), "{err}");

    let err = issuer(&daps, &impostor).token().await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    assert_eq!(daps.issued_count(&registered.id), 0);
}

#[tokio::test]
async fn forged_tokens_fail_verification() {
    let daps = TestDaps::start(Duration::from_secs(3600)).await;
    let connector = connector();
    let verifier = verifier(&daps, Duration::from_secs(60));
    let claims = daps.valid_claims(&connector.id, &connector.certificate.fingerprint);
    let verify = |token: String| {
        let verifier = &verifier;
        let peer = &connector.certificate;
        async move { verifier.verify(token.as_bytes(), peer).await }
    };

    verify(daps.sign(claims.clone(), Some(DAPS_KID)))
        .await
        .unwrap();
    let err = verify(daps.sign_with_unknown_key(claims.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, DatError::BadSignature), "{err}");
    let mut other_issuer = claims.clone();
    other_issuer["iss"] = "https://evil.example".into();
    let err = verify(daps.sign(other_issuer, Some(DAPS_KID)))
        .await
        .unwrap_err();
    assert!(matches!(err, DatError::IssuerMismatch { .. }), "{err}");
    let err = verify(daps.sign(claims, None)).await.unwrap_err();
    assert!(matches!(err, DatError::MissingKid), "{err}");
}

#[tokio::test]
async fn cold_cache_burst_fetches_the_jwks_once() {
    let daps = TestDaps::start(Duration::from_secs(3600)).await;
    let connector = connector();
    let verifier = Arc::new(verifier(&daps, Duration::from_secs(60)));
    let token = daps.sign(
        daps.valid_claims(&connector.id, &connector.certificate.fingerprint),
        Some(DAPS_KID),
    );

    let results = join_all((0..16).map(|_| {
        let (verifier, token, peer) = (
            verifier.clone(),
            token.clone(),
            connector.certificate.clone(),
        );
        tokio::spawn(async move { verifier.verify(token.as_bytes(), &peer).await })
    }))
    .await;

    for result in results {
        result.unwrap().unwrap();
    }
    assert_eq!(daps.jwks_fetch_count(), 1);
}

#[tokio::test]
async fn unknown_kid_refetches_the_jwks_at_most_once_per_interval() {
    let interval = Duration::from_secs(2);
    let daps = TestDaps::start(Duration::from_secs(3600)).await;
    let connector = connector();
    let verifier = Arc::new(verifier(&daps, interval));
    let claims = daps.valid_claims(&connector.id, &connector.certificate.fingerprint);
    let verify_many = |token: String| {
        join_all((0..8).map(|_| {
            let (verifier, token, peer) = (
                verifier.clone(),
                token.clone(),
                connector.certificate.clone(),
            );
            tokio::spawn(async move { verifier.verify(token.as_bytes(), &peer).await })
        }))
    };

    verifier
        .verify(
            daps.sign(claims.clone(), Some(DAPS_KID)).as_bytes(),
            &connector.certificate,
        )
        .await
        .unwrap();
    assert_eq!(daps.jwks_fetch_count(), 1);

    // The DAPS rotates its key, but we fetched moments ago: the new kid waits for the interval.
    daps.publish_kid("rotated");
    let rotated = daps.sign(claims.clone(), Some("rotated"));
    for result in verify_many(rotated.clone()).await {
        let err = result.unwrap().unwrap_err();
        assert!(matches!(err, DatError::UnknownKid(_)), "{err}");
    }
    assert_eq!(daps.jwks_fetch_count(), 1);

    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    for result in verify_many(rotated).await {
        result.unwrap().unwrap();
    }
    assert_eq!(daps.jwks_fetch_count(), 2);

    // Made-up kids right after a fetch cost the DAPS nothing.
    for result in verify_many(daps.sign(claims, Some("made-up"))).await {
        let err = result.unwrap().unwrap_err();
        assert!(matches!(err, DatError::UnknownKid(_)), "{err}");
    }
    assert_eq!(daps.jwks_fetch_count(), 2);
}

#[tokio::test]
async fn issuer_renews_once_less_than_half_the_lifetime_remains() {
    let daps = TestDaps::start(Duration::from_secs(2)).await;
    let connector = connector();
    register(&daps, &connector);
    let issuer = issuer(&daps, &connector);

    let first = issuer.token().await.unwrap();
    assert_eq!(issuer.token().await.unwrap(), first);
    assert_eq!(daps.issued_count(&connector.id), 1);

    // Issued with exp = now + 2 s in whole seconds, the lifetime is between 1 and 2 s,
    // so after 1.1 s less than half of it is left.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let renewed = issuer.token().await.unwrap();
    assert_ne!(renewed, first);
    assert_eq!(daps.issued_count(&connector.id), 2);
    verifier(&daps, Duration::from_secs(60))
        .verify(&renewed, &connector.certificate)
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_token_calls_share_one_request() {
    let daps = TestDaps::start(Duration::from_secs(3600)).await;
    let connector = connector();
    register(&daps, &connector);
    let issuer = Arc::new(issuer(&daps, &connector));

    let tokens = join_all((0..8).map(|_| {
        let issuer = issuer.clone();
        tokio::spawn(async move { issuer.token().await })
    }))
    .await;

    let tokens: Vec<_> = tokens.into_iter().map(|t| t.unwrap().unwrap()).collect();
    assert!(tokens.iter().all(|token| *token == tokens[0]));
    assert_eq!(daps.issued_count(&connector.id), 1);
}

#[tokio::test]
async fn metadata_points_at_the_endpoints() {
    let daps = TestDaps::start(Duration::from_secs(3600)).await;
    let metadata: serde_json::Value = reqwest::get(daps.metadata_url())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["issuer"], daps.issuer());
    assert_eq!(metadata["token_endpoint"], daps.token_url());
    assert_eq!(metadata["jwks_uri"], daps.jwks_url());
}

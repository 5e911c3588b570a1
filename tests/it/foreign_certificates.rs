//! Certificates as foreign IDSCP2 stacks and older PKIs bring them: a peer certificate without
//! SubjectKeyIdentifier (a test certificate of another stack) is known by its fingerprint in
//! development mode and refused with a message naming it in DAPS mode; an X.509 v1 certificate as
//! our own is refused at startup with a message naming it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clearinghouse::idscp2::client::ClientConfig;
use clearinghouse::idscp2::dat::{DevelopmentIssuer, DevelopmentVerifier};
use clearinghouse::idscp2::proto::app::app_layer_message;
use clearinghouse::idscp2::proto::idscp_close::CloseCause;
use clearinghouse::idscp2::tls::{self, PeerCertificate, TlsIdentity};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::CertificateDer;

use crate::support::cli;
use crate::support::daps::{verifier, TestDaps};
use crate::support::transport::*;

/// A CA, a server certificate as ours are, and a client certificate as another stack's test PKI
/// makes them: no SubjectKeyIdentifier, no AuthorityKeyIdentifier.
struct ForeignPki {
    ca: CertificateDer<'static>,
    server: TlsIdentity,
    client: TlsIdentity,
}

impl ForeignPki {
    fn new() -> ForeignPki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let mut server = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server.is_ca = IsCa::ExplicitNoCa;
        server.use_authority_key_identifier_extension = true;
        let server = server.signed_by(&server_key, &issuer).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(vec!["foreign-connector".to_owned()]).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "foreign-connector");
        // rcgen writes no SubjectKeyIdentifier for a certificate that does not state its CA-ness.
        let client = client.signed_by(&client_key, &issuer).unwrap();

        let identity = |cert: &rcgen::Certificate, key: &KeyPair| {
            TlsIdentity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
        };
        let pki = ForeignPki {
            ca: ca.der().clone(),
            server: identity(&server, &server_key),
            client: identity(&client, &client_key),
        };
        assert!(!PeerCertificate::new(pki.client.leaf().clone())
            .has_subject_key_id()
            .unwrap());
        pki
    }

    fn server_tls(&self) -> Arc<rustls::ServerConfig> {
        tls::server_config(&self.server, std::slice::from_ref(&self.ca)).unwrap()
    }

    fn client_config(&self) -> ClientConfig {
        ClientConfig {
            tls: tls::client_config(&self.client, std::slice::from_ref(&self.ca)).unwrap(),
            endpoint: dev_endpoint(test_settings()),
        }
    }
}

#[tokio::test]
async fn development_mode_knows_a_certificate_without_ski_by_its_fingerprint() {
    let pki = ForeignPki::new();
    let server = TestServer::start(
        pki.server_tls(),
        dev_endpoint(test_settings()),
        Echo::default(),
    )
    .await;
    let mut connection = server.connect(&pki.client_config()).await.unwrap();
    let reply = connection
        .request(&ids("hi"), Duration::from_secs(10), Some)
        .await
        .unwrap();
    let Some(app_layer_message::Message::IdsMessage(reply)) = reply.message else {
        panic!("unexpected reply");
    };
    let fingerprint = PeerCertificate::new(pki.client.leaf().clone()).fingerprint;
    assert_eq!(reply.header, format!("sha256:{fingerprint}"));
    connection.close().await;
    server.stop().await;
}

#[tokio::test]
async fn daps_mode_refuses_a_certificate_without_ski_naming_it() {
    let pki = ForeignPki::new();
    let daps = TestDaps::start(Duration::from_secs(300)).await;
    let server = TestServer::start(
        pki.server_tls(),
        endpoint(
            test_settings(),
            Arc::new(DevelopmentIssuer::new()),
            verifier(&daps),
        ),
        Echo::default(),
    )
    .await;
    let mut config = pki.client_config();
    config.endpoint = endpoint(
        test_settings(),
        Arc::new(DevelopmentIssuer::new()),
        Arc::new(DevelopmentVerifier::new()),
    );
    let error = server.connect(&config).await.err().unwrap();
    let reason = error.close_reason().unwrap_or_else(|| panic!("{error}"));
    assert_eq!(reason.cause, CloseCause::Error, "{reason}");
    assert!(reason.by_peer);
    assert!(
        reason.message.contains("CN=foreign-connector")
            && reason.message.contains("has no SubjectKeyIdentifier"),
        "{reason}"
    );
    server.stop().await;
}

#[test]
fn a_v1_certificate_of_our_own_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    cli::dev_pki(dir);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cert = fixtures.join("v1-certificate.crt").display().to_string();
    let key = fixtures.join("v1-certificate.key").display().to_string();
    let output = cli::command(dir)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ops-listen",
            "127.0.0.1:0",
        ])
        .envs([
            ("CH_TLS_CERTIFICATE", cert.as_str()),
            ("CH_TLS_PRIVATE_KEY", key.as_str()),
        ])
        .output()
        .unwrap();
    let stderr = cli::stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for needle in [
        "tls.certificate",
        "v1-certificate.crt",
        "X.509 v1 certificates are not supported; reissue as v3 with SAN, SKI, AKI",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
    assert!(!stderr.contains("tls.private_key"), "{stderr}");
}

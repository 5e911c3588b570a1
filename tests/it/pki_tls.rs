//! The test PKI as the transport will use it: real TLS 1.3 handshakes with mutual authentication,
//! in memory, through rustls with the ring provider. If these fail, every transport test would fail
//! for reasons that have nothing to do with the transport.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig,
    ServerConnection,
};

use crate::support::pki::TestPki;
use x509_parser::extensions::ParsedExtension;

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(pki: &TestPki) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certs(&pki.ca_cert()) {
        roots.add(cert).unwrap();
    }
    Arc::new(roots)
}

fn server_config(pki: &TestPki) -> Arc<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(pki), provider())
        .build()
        .unwrap();
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&pki.server_cert()), key(&pki.server_key()))
        .unwrap();
    Arc::new(config)
}

fn client_config(trusted: &TestPki, cert: &Path, key_path: &Path) -> Arc<ClientConfig> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(trusted), provider())
        .build()
        .unwrap();
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(certs(cert), key(key_path))
        .unwrap();
    Arc::new(config)
}

/// Moves everything `from` has to send into `to` and lets `to` process it.
fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).unwrap();
    }
    let mut unread = &wire[..];
    while !unread.is_empty() {
        to.read_tls(&mut unread).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}

/// Runs a handshake to completion; returns the client certificate the server accepted.
fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    server_name: &str,
) -> Result<CertificateDer<'static>, rustls::Error> {
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let mut client = Connection::from(ClientConnection::new(client, name).unwrap());
    let mut server = Connection::from(ServerConnection::new(server).unwrap());
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            let peer = server.peer_certificates().unwrap();
            assert_eq!(peer.len(), 1);
            return Ok(peer[0].clone());
        }
        transfer(&mut client, &mut server)?;
        transfer(&mut server, &mut client)?;
    }
    panic!("handshake did not finish");
}

fn rejected_certificate(
    result: Result<CertificateDer<'static>, rustls::Error>,
) -> CertificateError {
    match result {
        Err(rustls::Error::InvalidCertificate(error)) => error,
        other => panic!("expected a certificate error, got {other:?}"),
    }
}

fn key_identifiers(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let mut ski = None;
    let mut aki = None;
    for ext in cert.iter_extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => ski = Some(id.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(id) => {
                aki = id.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => {}
        }
    }
    (ski.unwrap(), aki.unwrap_or_default())
}

#[test]
fn ecdsa_connectors_complete_mutual_tls() {
    let pki = TestPki::new();
    for name in ["connector-a", "connector-b", "auditor"] {
        let client = client_config(&pki, &pki.client_cert(name), &pki.client_key(name));
        for server_name in ["localhost", "127.0.0.1", "::1"] {
            let peer = handshake(client.clone(), server_config(&pki), server_name).unwrap();
            assert_eq!(peer, certs(&pki.client_cert(name))[0]);
        }
    }
}

#[test]
fn the_rsa_connector_completes_mutual_tls() {
    let pki = TestPki::new();
    let (cert, key_path) = pki.rsa_client();
    let peer = handshake(
        client_config(&pki, &cert, &key_path),
        server_config(&pki),
        "localhost",
    )
    .unwrap();

    let (_, parsed) = x509_parser::parse_x509_certificate(&peer).unwrap();
    assert_eq!(
        parsed.public_key().algorithm.algorithm,
        x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION
    );
    let (ca_ski, _) = key_identifiers(&certs(&pki.ca_cert())[0]);
    let (ski, aki) = key_identifiers(&peer);
    assert_eq!(ski.len(), 20);
    assert_eq!(aki, ca_ski);
}

#[test]
fn a_connector_of_another_ca_is_refused() {
    let (pki, other) = (TestPki::new(), TestPki::other_ca());
    let stranger = client_config(
        &pki,
        &other.client_cert("connector-a"),
        &other.client_key("connector-a"),
    );
    let error = rejected_certificate(handshake(stranger, server_config(&pki), "localhost"));
    assert!(
        matches!(error, CertificateError::UnknownIssuer),
        "{error:?}"
    );
}

#[test]
fn a_server_of_another_ca_or_name_is_refused() {
    let (pki, other) = (TestPki::new(), TestPki::other_ca());
    let client = client_config(
        &pki,
        &pki.client_cert("connector-a"),
        &pki.client_key("connector-a"),
    );
    let error = rejected_certificate(handshake(
        client.clone(),
        server_config(&other),
        "localhost",
    ));
    assert!(
        matches!(error, CertificateError::UnknownIssuer),
        "{error:?}"
    );
    let error = rejected_certificate(handshake(client, server_config(&pki), "example.org"));
    assert!(
        matches!(error, CertificateError::NotValidForNameContext { .. }),
        "{error:?}"
    );
}

#[test]
fn the_directory_lives_as_long_as_the_test_pki() {
    let pki = TestPki::new();
    let dir = pki.dir().to_path_buf();
    assert!(pki.ca_cert().starts_with(&dir));
    assert!(pki.rsa_client().0.exists());
    drop(pki);
    assert!(!dir.exists());
}

//! The `idscp2` crate's example client (crates/idscp2/examples/client.rs, included as it is)
//! completes a handshake with the real clearing-house binary: the crate works for a connector
//! that knows nothing of the clearing house.

// The example's `main` is for `cargo run`; this test calls its `handshake`.
#[allow(dead_code)]
#[path = "../../crates/idscp2/examples/client.rs"]
mod example_client;

use std::path::Path;

use crate::support::cli::{dev_pki, Serve};
use clearinghouse::idscp2::tls::{PeerCertificate, TlsIdentity};

fn connector_id_of(cert: &Path, key: &Path) -> String {
    let identity = TlsIdentity::from_pem_files(cert, key).unwrap();
    PeerCertificate::new(identity.leaf().clone())
        .connector_id()
        .unwrap()
}

#[tokio::test]
async fn the_crate_example_client_completes_a_handshake_with_the_clearing_house() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dev_pki(dir.path());
    let serve = Serve::start(dir.path(), &[], &[]);
    let (peer, closed) = example_client::handshake(
        &serve.idscp2,
        "localhost",
        &pki.join("clients/connector-a.crt"),
        &pki.join("clients/connector-a.key"),
        &pki.join("ca.crt"),
    )
    .await
    .unwrap();
    // The identity comes from the server's accepted DAT, which only an established connection has.
    let server = connector_id_of(&pki.join("server.crt"), &pki.join("server.key"));
    assert_eq!(peer, server);
    assert!(closed.starts_with("USER_SHUTDOWN"), "{closed}");
    serve.terminate();
}

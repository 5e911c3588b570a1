//! An IDSCP2 client: connects to a peer, completes TLS 1.3 and the IDSCP2 handshake (development
//! DATs, the built-in RA suites), prints who the peer is, and closes.
//!
//! ```text
//! cargo run -p idscp2 --example client -- ADDR SERVER_NAME CERT KEY CA
//! ```
//!
//! CERT and KEY are our PEM certificate and private key, CA the PEM certificates we trust the
//! peer's certificate to chain to; SERVER_NAME is the name the peer's certificate must carry. A
//! clearing house started with `clearinghouse dev-pki` and `clearinghouse serve` takes, for
//! example, `127.0.0.1:29292 localhost data/dev-pki/clients/connector-a.crt
//! data/dev-pki/clients/connector-a.key data/dev-pki/ca.crt`.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use idscp2::client::{connect, ClientConfig};
use idscp2::connection::Connection;
use idscp2::dat::{DevelopmentIssuer, DevelopmentVerifier};
use idscp2::endpoint::{Endpoint, Settings};
use idscp2::ra::RaRegistry;
use idscp2::tls::{client_config, load_ca_file, TlsIdentity};

/// Connects to `addr` and completes both handshakes; returns the peer's identity (in development
/// mode, the connector id of its certificate) and how the connection closed.
pub async fn handshake(
    addr: &str,
    server_name: &str,
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<(String, String), Box<dyn Error>> {
    let identity = TlsIdentity::from_pem_files(cert, key)?;
    let cas = load_ca_file(ca)?;
    let endpoint = Endpoint::new(
        Settings::default(),
        Arc::new(DevelopmentIssuer::new()),
        Arc::new(DevelopmentVerifier::new()),
        RaRegistry::builtin(),
    )?;
    let config = ClientConfig {
        tls: client_config(&identity, &cas)?,
        endpoint,
    };
    // The handshake does not depend on the application layer; raw bytes stand in for it.
    let connection: Connection<Vec<u8>> = connect(addr, server_name, &config).await?;
    let peer = connection.peer().identity.clone();
    let closed = connection.close().await;
    Ok((peer, closed.to_string()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, server_name, cert, key, ca] = args.as_slice() else {
        return Err("usage: client ADDR SERVER_NAME CERT KEY CA".into());
    };
    let (peer, closed) = handshake(
        addr,
        server_name,
        Path::new(cert),
        Path::new(key),
        Path::new(ca),
    )
    .await?;
    println!("handshake complete with {peer}; closed: {closed}");
    Ok(())
}

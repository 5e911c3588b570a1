//! The load generator's IDS-Multipart mode (`--transport multipart`): the server role serves the
//! HTTPS door instead of IDSCP2, and the `log` scenario's clients post to it over HTTP/1.1
//! keep-alive, one request at a time each, with the same header, DAT and payload as over IDSCP2.
//! The other scenarios speak IDSCP2 only.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::ValueEnum;
use clearinghouse::clearing::ClearingHouse;
use clearinghouse::client::{MultipartConfig, MultipartTransport};
use clearinghouse::devpki::DevPki;
use clearinghouse::http::{server_tls, ClientAuth, HttpDoorConfig, HttpLimits, HttpServer};
use clearinghouse::idscp2::dat::DevelopmentVerifier;
use clearinghouse::idscp2::endpoint::Endpoint;
use clearinghouse::idscp2::tls::{self, TlsIdentity};

/// Which front door the load goes through.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum Transport {
    Idscp2,
    Multipart,
}

/// Serves the HTTPS door on `listen` until `shutdown`, printing the `listening` line the load
/// generator waits for. Request bodies count against `endpoint`'s memory budget, as in `serve`.
pub(crate) async fn serve(
    service: Arc<ClearingHouse>,
    pki: &DevPki,
    listen: &str,
    max_connections: usize,
    endpoint: &Endpoint,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let identity = TlsIdentity::from_pem_files(&pki.server_cert(), &pki.server_key())?;
    let cas = tls::load_ca_file(&pki.ca_cert())?;
    let server = HttpServer::bind(
        listen,
        HttpDoorConfig {
            tls: server_tls(&identity, &cas, ClientAuth::Required)?,
            limits: HttpLimits {
                max_body_bytes: 4 * 1024 * 1024 + 64 * 1024,
                max_header_bytes: 16 * 1024,
                read_timeout: Duration::from_secs(30),
                max_connections,
            },
            budget: endpoint.budget.clone(),
            verifier: Arc::new(DevelopmentVerifier::new()),
            token_required: false,
        },
    )
    .await?;
    println!(
        "listening {} pid {}",
        server.local_addr()?,
        std::process::id()
    );
    std::io::Write::flush(&mut std::io::stdout())?;
    server.run(service, shutdown).await;
    Ok(())
}

/// A client of the HTTPS door at `addr`, with the load generator's certificate; its clones
/// share one pool of keep-alive connections.
pub(crate) fn transport(
    addr: &str,
    server_name: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<MultipartTransport> {
    let addr: SocketAddr = addr
        .parse()
        .context("--server must be an IP address and port")?;
    let mut identity = std::fs::read(cert)?;
    identity.push(b'\n');
    identity.extend(std::fs::read(key)?);
    let ca_pem = std::fs::read(ca)?;
    Ok(MultipartTransport::new(&MultipartConfig {
        server_name,
        addr,
        ca_pem: &ca_pem,
        identity_pem: Some(&identity),
    })?)
}

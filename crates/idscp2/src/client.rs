//! The IDSCP2 client: TCP, TLS with server name verification, the IDSCP2 handshake. Connectors,
//! auditors, the tests and the load generator all connect through it.

use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::TlsConnector;

use super::connection::{CloseReason, Connection, ConnectionError};
use super::endpoint::Endpoint;
use super::tls::PeerCertificate;

/// Why a client could not connect, or a request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server name is not a valid DNS name or IP address.
    #[error("invalid server name {0:?}")]
    ServerName(String),
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address connected to.
        addr: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The TLS handshake failed (the certificate check included).
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// The address connected to.
        addr: String,
        /// What TLS said.
        source: std::io::Error,
    },
    /// The named step did not finish within the handshake timeout (or the request limit).
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The server completed TLS without a certificate.
    #[error("the server presented no certificate")]
    NoServerCertificate,
    /// The IDSCP2 connection failed or closed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
}

impl ClientError {
    /// The IDSCP2 close, if the connection ended with one.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        match self {
            ClientError::Connection(ConnectionError::Closed(reason)) => Some(reason),
            _ => None,
        }
    }
}

/// What a client needs besides the address: its TLS configuration and its IDSCP2 endpoint.
#[derive(Clone)]
pub struct ClientConfig {
    /// Our certificate, the CAs we trust, TLS 1.3 only: see [`tls::client_config`](crate::tls::client_config).
    pub tls: std::sync::Arc<rustls::ClientConfig>,
    /// Our IDSCP2 settings and drivers.
    pub endpoint: Endpoint,
}

/// Connects to `addr` and completes TLS (checking the certificate against `server_name`) and the
/// IDSCP2 handshake, each bounded by the handshake timeout.
pub async fn connect<M: prost::Message + Default>(
    addr: &str,
    server_name: &str,
    config: &ClientConfig,
) -> Result<Connection<M>, ClientError> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|_| ClientError::ServerName(server_name.to_string()))?;
    let limit = config.endpoint.settings.handshake_timeout;
    let tcp = timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| ClientError::Timeout("TCP connect"))?
        .map_err(|source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    // Small frames and stop-and-wait: Nagle would add a delay to every round trip.
    let _ = tcp.set_nodelay(true);
    let tls = timeout(
        limit,
        TlsConnector::from(config.tls.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| ClientError::Timeout("TLS handshake"))?
    .map_err(|source| ClientError::Tls {
        addr: addr.to_string(),
        source,
    })?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or(ClientError::NoServerCertificate)?;
    let certificate = PeerCertificate::new(leaf.clone().into_owned());
    Ok(Connection::establish(tls, certificate, config.endpoint.clone()).await?)
}

impl<M: prost::Message + Default> Connection<M> {
    /// Sends one message and hands each message from the peer to `take_reply` until it takes one
    /// (returns `Some`), for up to `limit` in all; the messages it passes over are dropped.
    ///
    /// A peer may still answer an earlier request whose caller stopped waiting, so "the next
    /// message" is not necessarily the reply. Only the layer above can tell (IDS replies carry the
    /// request's `@id` as `ids:correlationMessage`); a caller whose peer answers every message in
    /// order and that drops the connection after a timeout may take the next message as it is.
    pub async fn request<T>(
        &mut self,
        message: &M,
        limit: Duration,
        mut take_reply: impl FnMut(M) -> Option<T>,
    ) -> Result<T, ClientError> {
        self.send(message).await?;
        let deadline = Instant::now() + limit;
        loop {
            let received = timeout_at(deadline, self.recv())
                .await
                .map_err(|_| ClientError::Timeout("waiting for the reply"))??;
            if let Some(reply) = take_reply(received) {
                return Ok(reply);
            }
        }
    }
}

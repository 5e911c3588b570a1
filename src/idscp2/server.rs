//! The IDSCP2 server: accepts TCP, runs TLS and the IDSCP2 handshake, then hands each request to a
//! [`Service`] and sends back its answer.
//!
//! Shaped like mini-redis: a semaphore bounds open connections, each connection is a task with its
//! own tracing span, and shutdown is a broadcast. On shutdown the server stops accepting, lets every
//! connection finish the request it is working on, delivers the answer, and closes with
//! USER_SHUTDOWN. Every phase before establishment is bounded by the handshake timeout, so a silent
//! or slow peer holds one permit for at most that long and never holds up others.
//!
//! Metrics: `clearinghouse_connections_open` (gauge) and `clearinghouse_handshakes_total`
//! by `outcome` (`ok`, `tls_failed`, `tls_timeout`, `no_certificate`, `idscp2_failed`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, info_span, warn, Instrument};

use super::connection::{Connection, ConnectionError, PeerInfo, Request};
use super::endpoint::Endpoint;
use super::proto::app::AppLayerMessage;
use super::tls::PeerCertificate;

/// What the layer above does with each message a peer sends.
pub trait Service: Send + Sync + 'static {
    /// Answers one message (or a message that did not decode). `None` sends nothing back.
    fn handle(
        &self,
        peer: Arc<PeerInfo>,
        message: Result<AppLayerMessage, prost::DecodeError>,
    ) -> impl Future<Output = Option<AppLayerMessage>> + Send;
}

pub struct ServerConfig {
    pub tls: Arc<rustls::ServerConfig>,
    pub endpoint: Endpoint,
    pub max_connections: usize,
}

pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    endpoint: Endpoint,
    limit: Arc<Semaphore>,
}

impl Server {
    pub async fn bind(addr: &str, config: ServerConfig) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server {
            listener,
            acceptor: TlsAcceptor::from(config.tls),
            endpoint: config.endpoint,
            limit: Arc::new(Semaphore::new(config.max_connections)),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then drains every connection and returns.
    pub async fn run<S: Service>(self, service: Arc<S>, shutdown: impl Future<Output = ()>) {
        let (notify_shutdown, _) = broadcast::channel(1);
        // Each connection task holds a sender; when all are dropped, every connection is done.
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        tokio::select! {
            _ = self.accept_loop(&service, &notify_shutdown, &done_tx) => {}
            _ = shutdown => info!("shutting down: no new connections"),
        }
        drop(notify_shutdown);
        drop(done_tx);
        let _ = done_rx.recv().await;
        info!("all connections closed");
    }

    async fn accept_loop<S: Service>(
        &self,
        service: &Arc<S>,
        notify_shutdown: &broadcast::Sender<()>,
        done: &mpsc::Sender<()>,
    ) {
        loop {
            let Ok(permit) = self.limit.clone().acquire_owned().await else {
                return;
            };
            let (socket, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let handler = Handler {
                acceptor: self.acceptor.clone(),
                endpoint: self.endpoint.clone(),
                service: service.clone(),
                shutdown: notify_shutdown.subscribe(),
                _done: done.clone(),
            };
            tokio::spawn(
                async move {
                    let open = metrics::gauge!("clearinghouse_connections_open");
                    open.increment(1.0);
                    handler.run(socket).await;
                    open.decrement(1.0);
                    drop(permit);
                }
                .instrument(info_span!("connection", %addr, peer = tracing::field::Empty)),
            );
        }
    }
}

struct Handler<S> {
    acceptor: TlsAcceptor,
    endpoint: Endpoint,
    service: Arc<S>,
    shutdown: broadcast::Receiver<()>,
    _done: mpsc::Sender<()>,
}

impl<S: Service> Handler<S> {
    async fn run(mut self, socket: TcpStream) {
        // Small frames and stop-and-wait: Nagle would add a delay to every round trip.
        let _ = socket.set_nodelay(true);
        let handshake_timeout = self.endpoint.settings.handshake_timeout;
        let tls = match timeout(handshake_timeout, self.acceptor.accept(socket)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                handshake("tls_failed");
                return debug!(error = %e, "TLS handshake failed");
            }
            Err(_) => {
                handshake("tls_timeout");
                return debug!("TLS handshake timed out");
            }
        };
        let Some(leaf) = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
        else {
            handshake("no_certificate");
            return warn!("TLS peer presented no certificate");
        };
        let certificate = PeerCertificate::new(leaf.clone().into_owned());
        let establish = Connection::establish(tls, certificate, self.endpoint.clone());
        let mut connection = tokio::select! {
            result = establish => match result {
                Ok(connection) => connection,
                Err(e) => {
                    handshake("idscp2_failed");
                    return info!(error = %e, "IDSCP2 handshake failed");
                }
            },
            _ = self.shutdown.recv() => return,
        };
        handshake("ok");
        tracing::Span::current().record("peer", connection.peer().identity.as_str());
        loop {
            let received = tokio::select! {
                received = connection.next_request() => received,
                _ = self.shutdown.recv() => break,
            };
            let Ok(Request { message, in_flight }) = received else {
                return;
            };
            // The request keeps its in-flight slot until the peer ACKs the reply (or, without
            // a reply, until here), so a peer that stops ACKing stops being read.
            if let Some(reply) = self.service.handle(connection.peer(), message).await {
                match connection.answer(&reply, in_flight).await {
                    Ok(()) => {}
                    // The service's fault, not the peer's: the connection stays usable.
                    Err(e @ ConnectionError::TooLarge { .. }) => warn!(error = %e, "reply dropped"),
                    Err(_) => return,
                }
            }
        }
        connection.close().await;
    }
}

fn handshake(outcome: &'static str) {
    metrics::counter!("clearinghouse_handshakes_total", "outcome" => outcome).increment(1);
}

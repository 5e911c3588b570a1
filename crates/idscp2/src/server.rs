//! The IDSCP2 server: accepts TCP, runs TLS and the IDSCP2 handshake, then hands each request to a
//! [`Service`] and sends back its answer.
//!
//! Shaped like mini-redis: each connection is a task with its own tracing span, and shutdown is a
//! broadcast. On shutdown the server stops accepting, drops the connections still in their
//! handshake, lets every established connection finish the request it is working on, delivers
//! the answer, and closes with USER_SHUTDOWN.
//!
//! The accept loop never waits for room: [`admission`](super::admission) decides at once whether a
//! new socket gets a place in the bounded handshake pool (with a share per source address) and
//! closes it otherwise, so a flood of idle sockets cannot hold up anyone else's handshake or the
//! established peers. A pending connection must send its TLS ClientHello within the short
//! ClientHello timeout and finish TLS within the handshake timeout; the IDSCP2 handshake is bounded
//! by the state machine's own timers. After TLS it takes one of the `max_connections` places, or is
//! closed with IdscpClose{ERROR} when there is none.
//!
//! Every line of a connection is logged in its `connection` span: the peer's address from the
//! start, its identity once its DAT is accepted. TLS handshakes that fail are warned about with
//! their reason, rate-limited per reason (`tls_failures`).
//!
//! Metrics: `{prefix}_connections_open`, `{prefix}_handshakes_pending`, `{prefix}_handshakes_total`
//! and `{prefix}_connections_refused_total`, described in [`metric_names`](super::metric_names).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::FramedWrite;
use tracing::{debug, info, info_span, warn, Instrument};

use super::admission::{Admission, HandshakeLimits, HandshakeSlot, Refusal};
use super::connection::{Connection, ConnectionError, PeerInfo, Request};
use super::endpoint::Endpoint;
use super::frame::{FrameError, IdscpCodec};
use super::metric_names::MetricNames;
use super::proto::idscp_close::CloseCause;
use super::proto::idscp_message::Message;
use super::proto::IdscpClose;
use super::tls::PeerCertificate;
use super::tls_failures::{self, TlsFailureLog};

/// How long a refused peer gets to read its IdscpClose and close its side.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// What the layer above does with each message a peer sends.
pub trait Service: Send + Sync + 'static {
    /// The application layer's message, carried in IDSCP2 data both ways.
    type Message: prost::Message + Default + Send + 'static;

    /// The largest reply `message` may get, when that is more than a small frame (a page of
    /// entries, say): the server reserves it in the connection's memory budget before
    /// [`Service::handle`] builds the reply, so that replies being built count against the bound
    /// too. 0 (the default): the reply is reserved once built.
    fn reply_reservation(&self, message: &Result<Self::Message, prost::DecodeError>) -> usize {
        let _ = message;
        0
    }

    /// Answers one message (or a message that did not decode). `None` sends nothing back.
    fn handle(
        &self,
        peer: Arc<PeerInfo>,
        message: Result<Self::Message, prost::DecodeError>,
    ) -> impl Future<Output = Option<Self::Message>> + Send;
}

/// What a server needs besides its address.
pub struct ServerConfig {
    /// Our certificate, the CAs whose clients we accept, TLS 1.3 only: see [`tls::server_config`](crate::tls::server_config).
    pub tls: Arc<rustls::ServerConfig>,
    /// Our IDSCP2 settings and drivers.
    pub endpoint: Endpoint,
    /// Established connections at most; more are refused with an IdscpClose.
    pub max_connections: usize,
    /// The bounds on connections still in their handshake.
    pub handshake_limits: HandshakeLimits,
}

/// A bound IDSCP2 server; [`Server::run`] serves.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    endpoint: Endpoint,
    admission: Arc<Admission>,
    tls_failures: Arc<TlsFailureLog>,
}

impl Server {
    /// Binds the listening socket.
    pub async fn bind(addr: &str, config: ServerConfig) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server {
            listener,
            acceptor: TlsAcceptor::from(config.tls),
            admission: Admission::new(
                config.max_connections,
                config.handshake_limits,
                config.endpoint.metrics.clone(),
            ),
            endpoint: config.endpoint,
            tls_failures: Arc::default(),
        })
    }

    /// The address it listens on (with the port, when 0 was asked for).
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
            let (socket, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let slot = match self.admission.begin_handshake(addr.ip()) {
                Ok(slot) => slot,
                Err(refusal) => {
                    // Dropping the socket closes it before any TLS work.
                    self.admission.refused(refusal, addr);
                    continue;
                }
            };
            let handler = Handler {
                handshake: Handshake {
                    acceptor: self.acceptor.clone(),
                    endpoint: self.endpoint.clone(),
                    admission: self.admission.clone(),
                    tls_failures: self.tls_failures.clone(),
                    addr,
                },
                service: service.clone(),
                shutdown: notify_shutdown.subscribe(),
                _done: done.clone(),
            };
            tokio::spawn(
                handler
                    .run(socket, slot)
                    // `peer` is connection::PEER_SPAN_FIELD, recorded when the DAT is accepted.
                    .instrument(info_span!("connection", %addr, peer = tracing::field::Empty)),
            );
        }
    }
}

struct Handler<S> {
    handshake: Handshake,
    service: Arc<S>,
    shutdown: broadcast::Receiver<()>,
    _done: mpsc::Sender<()>,
}

impl<S: Service> Handler<S> {
    async fn run(mut self, socket: TcpStream, slot: HandshakeSlot) {
        let established = tokio::select! {
            established = self.handshake.run::<S::Message>(socket) => established,
            // A connection still in its handshake has no request to finish.
            _ = self.shutdown.recv() => return,
        };
        drop(slot);
        let Some((mut connection, _open)) = established else {
            return;
        };
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
            let reserved = match self.service.reply_reservation(&message) {
                0 => None,
                bytes => match connection.reserve(bytes).await {
                    Ok(held) => Some(held),
                    Err(_) => return,
                },
            };
            if let Some(reply) = self.service.handle(connection.peer(), message).await {
                match connection.answer(&reply, in_flight, reserved).await {
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

/// A connection until it is established: what it needs and where it comes from.
struct Handshake {
    acceptor: TlsAcceptor,
    endpoint: Endpoint,
    admission: Arc<Admission>,
    tls_failures: Arc<TlsFailureLog>,
    addr: SocketAddr,
}

impl Handshake {
    /// TLS and the IDSCP2 handshake. Returns the established connection with its place among the
    /// open ones, or `None` when the peer did not make it (counted and logged here).
    async fn run<M: prost::Message + Default>(
        &self,
        socket: TcpStream,
    ) -> Option<(Connection<M>, OpenConnection)> {
        let settings = &self.endpoint.settings;
        let deadline = Instant::now() + settings.handshake_timeout;
        // Small frames and stop-and-wait: Nagle would add a delay to every round trip.
        let _ = socket.set_nodelay(true);
        let hello_timeout = self.admission.limits().client_hello_timeout;
        // Whatever arrives first (data, EOF or an error), TLS deals with it.
        if timeout(hello_timeout, socket.peek(&mut [0u8; 1]))
            .await
            .is_err()
        {
            self.count_handshake("client_hello_timeout");
            debug!("no TLS ClientHello in time");
            return None;
        }
        let tls = match timeout_at(deadline, self.acceptor.accept(socket)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                self.count_handshake("tls_failed");
                self.log_tls_failure(&e);
                return None;
            }
            Err(_) => {
                self.count_handshake("tls_timeout");
                debug!("TLS handshake timed out");
                return None;
            }
        };
        let Some(leaf) = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
        else {
            self.count_handshake("no_certificate");
            warn!("TLS peer presented no certificate");
            return None;
        };
        let certificate = PeerCertificate::new(leaf.clone().into_owned());
        let open = match self.admission.open_connection() {
            Ok(permit) => OpenConnection::new(permit, &self.endpoint.metrics),
            Err(refusal) => {
                self.admission.refused(refusal, self.addr);
                self.refuse(tls, refusal).await;
                return None;
            }
        };
        match Connection::establish(tls, certificate, self.endpoint.clone()).await {
            Ok(connection) => {
                self.count_handshake("ok");
                Some((connection, open))
            }
            Err(e) => {
                self.count_handshake("idscp2_failed");
                info!(error = %e, "IDSCP2 handshake failed");
                None
            }
        }
    }

    /// A warning with the reason (the span names the address), rate-limited per reason.
    fn log_tls_failure(&self, error: &std::io::Error) {
        let Some(reason) = tls_failures::reason(error) else {
            debug!(%error, "peer closed the connection during the TLS handshake");
            return;
        };
        if let Some(suppressed) = self.tls_failures.admit(reason, std::time::Instant::now()) {
            // `suppressed`: failures of this reason since its last line.
            warn!(reason, %error, suppressed, "TLS handshake failed");
        }
    }

    fn count_handshake(&self, outcome: &'static str) {
        let name = self.endpoint.metrics.handshakes.clone();
        metrics::counter!(name, "outcome" => outcome).increment(1);
    }

    /// Tells a peer that got through TLS why it is not served, before its IDSCP2 handshake.
    async fn refuse(&self, tls: TlsStream<TcpStream>, refusal: Refusal) {
        let settings = &self.endpoint.settings;
        let close = Message::IdscpClose(IdscpClose {
            cause_code: CloseCause::Error as i32,
            cause_msg: format!("{refusal}; try again later"),
        });
        let mut writer = FramedWrite::new(tls, IdscpCodec::new(settings.max_frame));
        // Best effort: the peer may be gone already.
        let _ = timeout(settings.write_timeout, async {
            writer.send(close).await?;
            writer.get_mut().shutdown().await?;
            Ok::<(), FrameError>(())
        })
        .await;
        // Closing with the peer's Hello unread would reset the connection, and a reset can discard
        // the IdscpClose before the peer reads it; so wait a moment for the peer to close first.
        let mut tls = writer.into_inner();
        let mut discard = [0u8; 1024];
        let _ = timeout(REFUSAL_LINGER, async {
            while matches!(tls.read(&mut discard).await, Ok(read) if read > 0) {}
        })
        .await;
    }
}

/// An established connection's place among `max_connections`, shown in the open-connections gauge.
struct OpenConnection {
    _permit: OwnedSemaphorePermit,
    gauge: metrics::Gauge,
}

impl OpenConnection {
    fn new(permit: OwnedSemaphorePermit, metrics: &MetricNames) -> Self {
        let gauge = metrics::gauge!(metrics.connections_open.clone());
        gauge.increment(1.0);
        OpenConnection {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

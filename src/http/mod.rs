//! The second front door: IDS-Multipart over HTTPS, for the connectors that do not speak IDSCP2.
//!
//! Behind it is the same [`ClearingHouse`] as behind IDSCP2: each request becomes the
//! [`IdsMessage`] an IDSCP2 peer would have sent (IDS header, `ch-ids-*` extra headers, payload)
//! and goes through `ClearingHouse::answer`, so the same request makes the same entry, the
//! same receipt and the same rejection through either door. This room only speaks HTTP:
//! routes, reading the body within its bounds, who the caller is (`caller`), and writing the
//! reply.
//!
//! - `route`: the four routes, and the parameters from path, URL query and HTTP headers.
//! - `multipart`: reading the `header` and `payload` parts (multer), writing a reply's.
//! - `caller`: the identity of a request: its DAT, bound to the client certificate if any.
//!
//! # The protocol, as deployed connectors speak it (spec notes)
//!
//! What the reference clearing house and its clients do, in our words:
//! - Routes: `POST /process/{pid}` with an `ids:RequestMessage` creates a process; its payload
//!   (`Content-Type: application/json`) is `{"owners": [...]}`, the connector ids of the other
//!   owners. `POST /messages/log/{pid}` with an `ids:LogMessage` appends an entry.
//!   `POST /messages/query/{pid}` with an `ids:QueryMessage` reads a page,
//!   `POST /messages/query/{pid}/{id}` one entry. The Dataspace Connector and the TRUE Connector
//!   configure the clearing house as a base URL and append `messages/log/` (or `process/`) and
//!   the pid, which they derive from the transfer contract's UUID.
//! - Body: `multipart/form-data` with a part named `header`, the message header as JSON-LD
//!   (the Java IDS serializer's output, sent as `application/json` or `application/ld+json`),
//!   and a part named `payload`. The payload part's `Content-Type` is the payload's media
//!   type; the IDS Messaging Services send `text/plain` or `application/json`. Clients send
//!   nothing else, but may add a filename or a charset; parts of other names are ignored here
//!   (at most `multipart::MAX_PARTS` parts).
//! - The DAT travels only in the header: `ids:securityToken` is an `ids:DynamicAttributeToken`
//!   whose `ids:tokenValue` is the JWT. There is no `Authorization` header.
//! - Success: the clients check the status only: 201 Created after a log or a create (the
//!   sovity EDC extension and the TRUE Connector treat anything else as a failure), 200 after a
//!   query. The body is again `multipart/form-data` with `header` (a
//!   `MessageProcessedNotificationMessage` or a `ResultMessage`) and `payload`; the IDS Messaging
//!   Services parse it into a message and a payload and map it by the header's type. The
//!   receipt of a log is the payload `{"data": "<JWT>"}` as on IDSCP2.
//! - Failure: a `RejectionMessage` header with `ids:rejectionReason`, a JSON payload
//!   `{status, error, message}`, and the HTTP status the payload names (400, 401, 403, 404, 409,
//!   413, 429, 503). Requests refused before an IDS header could be read get an uncorrelated
//!   RejectionMessage the same way (415 for a body that is not multipart, 413 for a body over
//!   `http.max_body_bytes`, 408 for one not received within `http.read_timeout_ms`).
//! - Parameters of a page: `ch-ids-*` HTTP headers as on IDSCP2, or the URL query (`page`,
//!   `size`, `sort`, `date_from`, `date_to`). Given twice, they must agree (see `route`); the
//!   reply's `ch-ids-*` extra headers become HTTP headers of the response.
//!
//! # Bounds
//!
//! Connections are bounded by `http.max_connections` (further sockets are closed at once), the
//! request line and headers by `http.max_header_bytes`, their arrival by `http.read_timeout_ms`,
//! and a body by `http.max_body_bytes` and by the same time: a body still trickling in when the
//! time is up is answered 408. Every body chunk is reserved in the memory budget the IDSCP2
//! connections share (twice: once as received, once as parts) before it is kept, and a query's
//! largest possible reply before the store is read (as on IDSCP2; without room the query is
//! answered 503), so the HTTP door cannot make the process hold more than the memory bound either. HTTP/1.1 only, with
//! keep-alive and pipelining (answered in order); HTTP/1.0 clients are answered and closed.

mod caller;
pub(crate) mod multipart;
mod route;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info_span, warn, Instrument};

use crate::clearing::{Answer, Answered, ClearingHouse};
use crate::ids::rejection::too_large;
use crate::ids::{MessageType, Rejection, RejectionReason};
use crate::idscp2::budget::{ConnectionBudget, Held, MemoryBudget};
use crate::idscp2::dat::DatVerifier;
use crate::idscp2::proto::app::IdsMessage;
use crate::idscp2::tls::{PeerCertificate, TlsIdentity};
use caller::HttpCaller;

/// The least `http.max_header_bytes` (hyper's smallest read buffer).
pub const MIN_HEADER_BYTES: usize = 8192;

/// Whether the HTTPS door asks for a TLS client certificate (`http.client_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Asked for; a client without one is identified by its DAT alone (a bearer token).
    #[default]
    Optional,
    /// Required: TLS refuses a client without a certificate from a trusted CA.
    Required,
}

/// Bounds on what one HTTPS client can make the door hold or wait for (`http.*`).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// The largest request body.
    pub max_body_bytes: usize,
    /// The largest request line plus headers (at least 8192).
    pub max_header_bytes: usize,
    /// Time for the TLS handshake, for a request's headers, and for its whole body.
    pub read_timeout: Duration,
    /// Open connections; further ones are closed at once.
    pub max_connections: usize,
}

/// What the HTTPS door needs besides the clearing house.
pub struct HttpDoorConfig {
    /// From [`server_tls`].
    pub tls: Arc<rustls::ServerConfig>,
    /// The bounds.
    pub limits: HttpLimits,
    /// The memory bound the IDSCP2 connections share: request bodies count against it.
    pub budget: MemoryBudget,
    /// Verifies the DATs in request headers: the IDSCP2 endpoint's verifier.
    pub verifier: Arc<dyn DatVerifier>,
    /// Whether the header must carry a DAT (not in development mode, where the client
    /// certificate names the caller and must then be required).
    pub token_required: bool,
}

/// The TLS configuration of the HTTPS door: our certificate (the IDSCP2 listener's), TLS 1.2 or
/// 1.3, HTTP/1.1 or 1.0 by ALPN, client certificates from `client_cas` asked for or required.
pub fn server_tls(
    identity: &TlsIdentity,
    client_cas: &[rustls::pki_types::CertificateDer<'static>],
    client_auth: ClientAuth,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in client_cas {
        roots.add(ca.clone())?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let verifier = match client_auth {
        ClientAuth::Optional => verifier.allow_unauthenticated(),
        ClientAuth::Required => verifier,
    }
    .build()
    .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    // A client that offers ALPN must find its protocol, or rustls refuses the handshake.
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(Arc::new(config))
}

/// The HTTPS listener.
pub struct HttpServer {
    listener: TcpListener,
    config: Arc<HttpDoorConfig>,
}

/// What every connection's requests share.
struct Shared {
    house: Arc<ClearingHouse>,
    config: Arc<HttpDoorConfig>,
}

/// One TLS connection: who is on the other side, and its part of the memory budget.
struct ConnectionState {
    shared: Arc<Shared>,
    certificate: Option<PeerCertificate>,
    budget: Arc<ConnectionBudget>,
}

impl HttpServer {
    /// Binds `addr`.
    pub async fn bind(addr: &str, config: HttpDoorConfig) -> std::io::Result<HttpServer> {
        Ok(HttpServer {
            listener: TcpListener::bind(addr).await?,
            config: Arc::new(config),
        })
    }

    /// The bound address (the port, when 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; then stops accepting, lets every connection finish
    /// the request it is working on, and returns when all are closed.
    pub async fn run(self, house: Arc<ClearingHouse>, shutdown: impl Future<Output = ()>) {
        let shared = Arc::new(Shared {
            house,
            config: self.config.clone(),
        });
        let acceptor = TlsAcceptor::from(self.config.tls.clone());
        let places = Arc::new(Semaphore::new(self.config.limits.max_connections));
        let (stop, stopped) = watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, say: keep serving those we have.
                        warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(place) = places.clone().try_acquire_owned() else {
                debug!(%peer, "HTTPS connection refused: http.max_connections reached");
                continue;
            };
            let connection =
                serve_connection(stream, acceptor.clone(), shared.clone(), stopped.clone());
            tokio::spawn(
                async move {
                    connection.await;
                    drop(place);
                }
                .instrument(info_span!("https", %peer)),
            );
        }
        let _ = stop.send(true);
        // Every connection holds a place until it is closed.
        let all = self.config.limits.max_connections as u32;
        let _ = places.acquire_many(all).await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let limits = shared.config.limits;
    // A reply is one small write after the request's last: Nagle would hold it for the
    // client's delayed ACK.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let tls = match tokio::time::timeout(limits.read_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!("TLS handshake timed out");
            return;
        }
    };
    let certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| PeerCertificate::new(leaf.clone().into_owned()));
    let state = Arc::new(ConnectionState {
        budget: shared.config.budget.connection(),
        shared,
        certificate,
    });
    let service = hyper::service::service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        // hyper's floor; `http.max_header_bytes` is validated against it.
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES))
        .keep_alive(true)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = async { let _ = stopped.wait_for(|stop| *stop).await; } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "HTTPS connection ended");
    }
}

/// The `door` label of this door's metrics.
const METRIC_LABEL: &str = "https";

/// Answers one request; every answer is IDS-Multipart, a rejection included.
async fn handle(state: &ConnectionState, request: Request<Incoming>) -> Response<ReplyBody> {
    let house = &state.shared.house;
    let (answer, reserved) = match read_request(state, request).await {
        Ok((mut caller, message, mut held)) => {
            let reserved = reserve_reply(state, &mut caller, &mut held).await;
            // The body's reservations are given back once the request is answered.
            let answer = house.answer(&caller.door(state), message).await;
            drop(held);
            (answer, reserved)
        }
        Err(rejection) => (house.refuse(METRIC_LABEL, rejection).await, None),
    };
    render(answer, reserved)
}

/// A query's page may be as large as the reply limit, so that much is reserved in the memory
/// budget before the store is read, as on IDSCP2. There is no room when the connection's share
/// cannot hold it beside the request's body, or the shared pool has none before the request's
/// time (`http.read_timeout_ms`) is up: the query is then answered 503, correlated with its header.
async fn reserve_reply(
    state: &ConnectionState,
    caller: &mut RouteCaller,
    body: &mut Vec<Held>,
) -> Option<Held> {
    if caller.route.message_type != MessageType::Query || caller.refused.is_some() {
        return None;
    }
    let bytes = state.shared.house.query_reply_reservation();
    let share = state.budget.share();
    let mut held: usize = body.iter().map(Held::bytes).sum();
    // As on IDSCP2, where one small frame is read without a reservation: a share of just one
    // reply (`server.connection_buffer_bytes` = `idscp2.max_frame`) still takes a small query.
    if held <= state.budget.small_frame() {
        body.clear();
        held = 0;
    }
    let reserved = if held + bytes > share {
        None
    } else {
        tokio::time::timeout_at(caller.deadline, state.budget.reserve(bytes))
            .await
            .ok()
            .and_then(Result::ok)
    };
    if reserved.is_none() {
        caller.refused = Some(Rejection::with_default_status(
            RejectionReason::TemporarilyNotAvailable,
            format!(
                "no room in the memory budget for the reply of a query (up to {bytes} bytes beside the request's {held}; server.connection_buffer_bytes, server.max_buffered_bytes); try again later"
            ),
        ));
    }
    reserved
}

/// What [`HttpCaller`] needs of the request, owned, so that the body can be read meanwhile.
struct RouteCaller {
    route: route::Route,
    /// When the request's time (`http.read_timeout_ms`) is up.
    deadline: Instant,
    /// Why the request's parameters cannot be used, if they cannot.
    refused: Option<Rejection>,
}

impl RouteCaller {
    fn door<'a>(&'a self, state: &'a ConnectionState) -> HttpCaller<'a> {
        HttpCaller {
            route_type: self.route.message_type.clone(),
            route: self.route.pattern,
            certificate: state.certificate.as_ref(),
            verifier: &state.shared.config.verifier,
            token_required: state.shared.config.token_required,
            refused: self.refused.as_ref(),
        }
    }
}

/// The route and the IDS message of a request, read within the door's bounds, and its
/// reservations in the memory budget.
async fn read_request(
    state: &ConnectionState,
    request: Request<Incoming>,
) -> Result<(RouteCaller, IdsMessage, Vec<Held>), Rejection> {
    let started = Instant::now();
    let config = &state.shared.config;
    let (parts, body) = request.into_parts();
    let Some(route) = route::route(parts.uri.path())? else {
        return Err(Rejection::with_default_status(
            RejectionReason::NotFound,
            format!(
                "no route {}; IDS-Multipart takes POST /process/{{pid}}, /messages/log/{{pid}}, /messages/query/{{pid}} and /messages/query/{{pid}}/{{id}}",
                parts.uri.path()
            ),
        ));
    };
    if parts.method != Method::POST {
        return Err(Rejection::new(
            RejectionReason::MalformedMessage,
            405,
            format!("{} takes POST, not {}", route.pattern, parts.method),
        ));
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let boundary = multipart::boundary(content_type)?;
    let max_body = config.limits.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_body as u64) {
        return Err(body_too_large(max_body));
    }
    let deadline = started + config.limits.read_timeout;
    let (chunks, held) = tokio::time::timeout_at(deadline, receive(state, body, max_body))
        .await
        .map_err(|_| {
            Rejection::new(
                RejectionReason::MalformedMessage,
                408,
                format!(
                    "the body did not arrive within {} ms (http.read_timeout_ms)",
                    config.limits.read_timeout.as_millis()
                ),
            )
        })??;
    let read = multipart::read(chunks, boundary).await?;
    // Refused parameters are answered like any other, correlated with the header.
    let (extra_headers, refused) = match route::extra_headers(
        &route,
        parts.uri.query(),
        &parts.headers,
        read.payload_type,
        state.shared.house.param_limits(),
    ) {
        Ok(extra_headers) => (extra_headers, None),
        Err(rejection) => (Vec::new(), Some(rejection)),
    };
    let message = IdsMessage {
        header: read.header,
        payload: read.payload,
        extra_headers,
    };
    let caller = RouteCaller {
        route,
        deadline,
        refused,
    };
    Ok((caller, message, held))
}

fn body_too_large(max_body: usize) -> Rejection {
    too_large(
        "http.max_body_bytes",
        max_body,
        format!("the body exceeds the limit of {max_body} bytes (http.max_body_bytes)"),
    )
}

/// The body's chunks, each reserved (twice, for the parts made of it) in the connection's
/// memory budget before it is kept; waiting for room stops reading, as on IDSCP2.
async fn receive(
    state: &ConnectionState,
    mut body: Incoming,
    max_body: usize,
) -> Result<(Vec<Bytes>, Vec<Held>), Rejection> {
    let mut chunks = Vec::new();
    let mut held = Vec::new();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Rejection::with_default_status(
                RejectionReason::MalformedMessage,
                format!("the body cannot be read: {e}"),
            )
        })?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        received += chunk.len();
        if received > max_body {
            return Err(body_too_large(max_body));
        }
        // More than the connection may ever hold would wait for room that never comes.
        let share = state.budget.share() / 2;
        let over_share = || {
            too_large(
                "server.connection_buffer_bytes",
                share,
                format!("the body exceeds the {share} bytes one connection may hold (half of server.connection_buffer_bytes)"),
            )
        };
        if received > share {
            return Err(over_share());
        }
        let reservation = state
            .budget
            .reserve(2 * chunk.len())
            .await
            .map_err(|_| over_share())?;
        held.push(reservation);
        chunks.push(chunk);
    }
    Ok((chunks, held))
}

fn render(answer: Answer, reserved: Option<Held>) -> Response<ReplyBody> {
    let status = match answer.answered {
        Answered::Processed => StatusCode::CREATED,
        Answered::Result => StatusCode::OK,
        Answered::Rejected(status) => {
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST)
        }
    };
    let (content_type, body) = multipart::reply(&answer.message.header, &answer.message.payload);
    let reserved = reserved.map(|mut held| {
        held.shrink_to(body.len());
        held
    });
    let mut response = Response::new(ReplyBody {
        data: Some(body),
        _reserved: reserved,
    });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    for extra in &answer.message.extra_headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(extra.name.as_bytes()),
            HeaderValue::from_str(&extra.value),
        ) {
            headers.append(name, value);
        }
    }
    response
}

/// A reply's body, and the reservation of a query's reply, held until hyper takes the body to
/// write it.
struct ReplyBody {
    data: Option<Bytes>,
    _reserved: Option<Held>,
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        // Moved into hyper's write buffer (and then the socket's): no longer ours to count.
        this._reserved = None;
        Poll::Ready(this.data.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |data| data.len() as u64))
    }
}

//! One IDSCP2 connection: a task that owns the TLS stream and drives the state machine.
//!
//! The task reads frames, verifies DATs, runs the RA drivers, keeps the timers and writes what the
//! state machine says. The layer above holds a [`Connection`] and sees only application messages
//! and the peer's verified identity. Reading never waits on the layer above: a message is ACKed
//! as soon as it arrives and queued for [`Connection::recv`], however long the answer takes. The
//! ACK may wait in the write buffer for the answer, so that both go out in one TLS record and one
//! write: `Settings::ack_delay`, and up to a quarter of the ACK timeout while the layer above
//! still holds the request (`AnswerAwaited`).
//!
//! What a peer can make us hold is bounded twice. By count: the peer may have
//! `requests_in_flight` messages accepted and not yet answered (an answer counts until the peer
//! ACKs it); further data is not acknowledged, and a big data frame that could not be taken is
//! read past without being buffered, so that the ACKs behind it still arrive. By bytes: every
//! frame being read, message accepted and message queued for the peer holds its bytes in the
//! endpoint's [`MemoryBudget`](super::budget::MemoryBudget); when the budget is spent the
//! connection stops reading (TCP then stops the peer) and [`Connection::send`] waits.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::channel::mpsc as ra_channel;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::FramedWrite;
use tracing::{debug, info, warn, Instrument};

use super::budget::{ConnectionBudget, Held};
use super::dat::{DatError, VerifiedDat};
use super::endpoint::Endpoint;
use super::frame::{FrameError, IdscpCodec};
use super::fsm::{DatCheck, Event, Fsm, Input, Timer};
use super::metric_names::MetricNames;
use super::proto::idscp_close::CloseCause;
use super::proto::idscp_message::Message;
use super::ra::{RaChannel, RaEvent, RaEventKind, RaRole};
use super::reader::{FrameReader, ReadFrame};
use super::tls::PeerCertificate;

/// The field of the caller's span that gets the peer's identity once its DAT is accepted
/// (the server's `connection` span declares it empty), so that every line of the connection
/// after that carries it.
pub const PEER_SPAN_FIELD: &str = "peer";

/// Who the peer is, as established by its verified DAT and TLS certificate.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The DAT's `sub` (or, in development mode, the certificate's `SKI:keyid:AKI`, or
    /// `sha256:FINGERPRINT` for a certificate without key identifiers).
    pub identity: String,
    /// The peer's TLS leaf certificate (with its SHA-256 fingerprint), which its DATs are bound to.
    pub certificate: PeerCertificate,
    /// All claims of the peer's current DAT; replaced when the peer renews it.
    pub dat_claims: serde_json::Value,
    /// The peer's current DAT as it was sent, so that the layer above can recognise the same
    /// token in a message header without verifying it again.
    pub dat_token: Bytes,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The IDSCP2 close cause.
    pub cause: CloseCause,
    /// The close message, as sent or received.
    pub message: String,
    /// The peer sent the IdscpClose (or vanished); otherwise we closed.
    pub by_peer: bool,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = if self.by_peer { "peer" } else { "we" };
        write!(
            f,
            "{} ({}; closed by {side})",
            self.cause.as_str_name(),
            self.message
        )
    }
}

/// Why a connection could not be established or used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The connection is closed (or never got established), and why.
    #[error("connection closed: {0}")]
    Closed(CloseReason),
    /// Data from the peer that does not decode as the application message; the connection goes on.
    #[error("received data that does not decode as the application message: {0}")]
    MalformedMessage(#[from] prost::DecodeError),
    #[error("a message of {size} bytes exceeds the frame limit (at most {limit} bytes of data)")]
    /// A message too large for one frame (or for this connection's memory share).
    TooLarge {
        /// The message's (or reservation's) size in bytes.
        size: usize,
        /// The most that fits.
        limit: usize,
    },
}

/// Bytes an IdscpMessage adds around IdscpData's data: tags, length varints, the bit.
const DATA_FRAME_OVERHEAD: usize = 32;

/// The largest application message that fits into a frame of `max_frame` bytes.
pub fn max_message_size(max_frame: usize) -> usize {
    max_frame.saturating_sub(DATA_FRAME_OVERHEAD)
}

/// Counters of what crossed the connection, for tests and metrics.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Remote attestation messages our drivers sent.
    pub ra_messages_sent: AtomicU64,
    /// Remote attestation messages the peer's drivers sent.
    pub ra_messages_received: AtomicU64,
    /// DATs of the peer accepted (the first and every renewal).
    pub peer_dats_accepted: AtomicU64,
    /// DATs of ours sent on request (IdscpDatExpired).
    pub own_dats_sent: AtomicU64,
    /// Times our unacknowledged data was sent again.
    pub data_resent: AtomicU64,
    /// Peer data not taken (and not ACKed) because its in-flight slots or the budget were full.
    pub data_refused: AtomicU64,
}

impl ConnectionStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a message accepted from the peer holds until it is answered or dropped: its bytes in the
/// memory budget and one of the peer's in-flight slots. Given to [`Connection::answer`], the slot
/// stays taken until the peer ACKs the answer. While it is held, the message's ACK may wait for
/// the answer (see `AnswerAwaited`).
pub struct InFlight {
    bytes: Option<Held>,
    slot: OwnedSemaphorePermit,
    awaited: AnswerAwaited,
}

/// Counts a message of the peer's that the layer above holds and may still answer. While one is
/// counted, the ACKs in the write buffer wait for the answer beyond `Settings::ack_delay`, up to a
/// quarter of the ACK timeout: under load an answer often takes longer than the delay, and an ACK
/// sent alone costs a TLS record, a write and a wake-up of the peer.
struct AnswerAwaited(Arc<AtomicUsize>);

impl AnswerAwaited {
    fn new(count: &Arc<AtomicUsize>) -> AnswerAwaited {
        count.fetch_add(1, Ordering::Relaxed);
        AnswerAwaited(count.clone())
    }
}

impl Drop for AnswerAwaited {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A message from the peer, for a server's request loop.
pub struct Request<M> {
    /// The message, or why it does not decode as an `M`.
    pub message: Result<M, prost::DecodeError>,
    /// What the message holds until it is answered (or dropped).
    pub in_flight: InFlight,
}

/// A message for the peer with what it holds until the peer ACKs it.
struct Outgoing {
    data: Bytes,
    _held: Held,
    _slot: Option<OwnedSemaphorePermit>,
}

enum Command {
    Send(Outgoing),
    Close,
}

struct Incoming {
    data: Bytes,
    in_flight: InFlight,
}

/// The layer above's handle on an established connection whose data messages are `M`s: the
/// application layer's protobuf message (idscp2-jvm's app layer, or any other).
pub struct Connection<M> {
    commands: mpsc::Sender<Command>,
    incoming: mpsc::Receiver<Incoming>,
    peer: watch::Receiver<Arc<PeerInfo>>,
    closed: watch::Receiver<Option<CloseReason>>,
    stats: Arc<ConnectionStats>,
    budget: Arc<ConnectionBudget>,
    task: JoinHandle<()>,
    max_message: usize,
    message: PhantomData<fn(M) -> M>,
}

impl<M: prost::Message + Default> Connection<M> {
    /// Runs the IDSCP2 handshake over an established TLS stream and returns once both sides are
    /// attested, or with the reason the handshake ended.
    pub async fn establish<S>(
        stream: S,
        peer_certificate: PeerCertificate,
        endpoint: Endpoint,
    ) -> Result<Connection<M>, ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let settings = endpoint.settings.clone();
        let max_message = max_message_size(settings.max_frame);
        let (read_half, write_half) = tokio::io::split(stream);
        let budget = endpoint.budget.connection();
        // The FSM's bounded queue is where messages wait; the channel only hands them over.
        let (commands_tx, commands) = mpsc::channel(1);
        // Every message in it holds an in-flight slot, so it never holds more than that.
        let (deliver, incoming) = mpsc::channel(settings.requests_in_flight);
        let (ra_events_tx, ra_events) = ra_channel::channel(16);
        let (closed_tx, closed) = watch::channel(None);
        let (established_tx, established) = oneshot::channel();
        let stats = Arc::new(ConnectionStats::default());
        let task = Task {
            fsm: Fsm::new(settings.clone()),
            // Until the peer's DAT is accepted, only handshake-sized frames.
            reader: FrameReader::new(
                read_half,
                settings.handshake_frame_limit(),
                settings.frame_timeout,
                budget.clone(),
            ),
            writer: FramedWrite::new(write_half, IdscpCodec::new(settings.max_frame)),
            budget: budget.clone(),
            slots: Arc::new(Semaphore::new(settings.requests_in_flight)),
            in_flight: None,
            answers_awaited: Arc::default(),
            outgoing: VecDeque::new(),
            ack_due: None,
            ack_buffered: None,
            peer_certificate,
            endpoint,
            candidate_dat: None,
            peer: None,
            deliver,
            commands,
            close_requested: false,
            ra_events_tx,
            ra_events,
            prover: None,
            verifier: None,
            established: Some(established_tx),
            closed: closed_tx,
            stats: stats.clone(),
        };
        // The task logs in the caller's span: a server's connection span names the peer's address.
        let task = tokio::spawn(task.run().in_current_span());
        let peer = match established.await {
            Ok(peer) => peer,
            Err(_) => {
                // The task ended before establishment; it recorded why.
                let mut closed = closed;
                let reason = closed
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|r| r.clone())
                    .unwrap_or_else(task_ended);
                return Err(ConnectionError::Closed(reason));
            }
        };
        Ok(Connection {
            commands: commands_tx,
            incoming,
            peer,
            closed,
            stats,
            budget,
            task,
            max_message,
            message: PhantomData,
        })
    }

    /// The peer as of its latest accepted DAT.
    pub fn peer(&self) -> Arc<PeerInfo> {
        self.peer.borrow().clone()
    }

    /// Counters of what crossed this connection.
    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    /// Queues a message for the peer; it is resent until acknowledged. Waits while the send
    /// queue or this connection's share of the memory budget is full. A message too large for
    /// one frame is refused here, so that it cannot take the connection down on the way out.
    pub async fn send(&self, message: &M) -> Result<(), ConnectionError> {
        self.queue(message, None, None).await
    }

    /// Sends the answer to a request; the request's in-flight slot stays taken until the peer
    /// ACKs the answer, its bytes are given back now. `reserved` is what [`Connection::reserve`]
    /// set aside for this answer before it was built; it shrinks to the answer's size. Waits like
    /// [`Connection::send`].
    pub async fn answer(
        &self,
        message: &M,
        request: InFlight,
        reserved: Option<Held>,
    ) -> Result<(), ConnectionError> {
        let InFlight {
            bytes,
            slot,
            awaited,
        } = request;
        drop(bytes);
        let queued = self.queue(message, Some(slot), reserved).await;
        // Only now, with the answer in the task's queue: the ACK it waits for must not go first.
        drop(awaited);
        queued
    }

    /// Sets `bytes` aside in this connection's share of the memory budget, waiting until there is
    /// room, for an answer that may be that large: reserved before the answer is built, so that
    /// building it cannot hold memory the bound does not count.
    pub async fn reserve(&self, bytes: usize) -> Result<Held, ConnectionError> {
        let bytes = bytes.min(self.max_message);
        let mut closed = self.closed.clone();
        // The task gives back what it held when it ends; a reservation must not outwait it.
        tokio::select! {
            held = self.budget.reserve(bytes) => held.map_err(|_| ConnectionError::TooLarge {
                size: bytes,
                limit: self.budget.share(),
            }),
            _ = closed.wait_for(Option::is_some) => {
                Err(ConnectionError::Closed(self.close_reason()))
            }
        }
    }

    async fn queue(
        &self,
        message: &M,
        slot: Option<OwnedSemaphorePermit>,
        reserved: Option<Held>,
    ) -> Result<(), ConnectionError> {
        let size = message.encoded_len();
        if size > self.max_message {
            return Err(ConnectionError::TooLarge {
                size,
                limit: self.max_message,
            });
        }
        let held = match reserved {
            Some(mut held) if held.bytes() >= size => {
                held.shrink_to(size);
                held
            }
            // Too small a reservation is given back before the right one is waited for.
            _ => self.reserve(size).await?,
        };
        let outgoing = Outgoing {
            data: Bytes::from(message.encode_to_vec()),
            _held: held,
            _slot: slot,
        };
        if self.commands.send(Command::Send(outgoing)).await.is_err() {
            return Err(ConnectionError::Closed(self.close_reason()));
        }
        Ok(())
    }

    /// The next message from the peer. A message that does not decode is an error of its own,
    /// after which the connection goes on.
    pub async fn recv(&mut self) -> Result<M, ConnectionError> {
        Ok(self.next_request().await?.message?)
    }

    /// The next message from the peer with its in-flight slot, for [`Connection::answer`].
    pub async fn next_request(&mut self) -> Result<Request<M>, ConnectionError> {
        match self.incoming.recv().await {
            Some(Incoming { data, in_flight }) => Ok(Request {
                message: M::decode(data),
                in_flight,
            }),
            None => Err(ConnectionError::Closed(self.close_reason())),
        }
    }

    /// Delivers what is queued, then closes with USER_SHUTDOWN, and returns how it ended.
    pub async fn close(self) -> CloseReason {
        // If the task is gone already, the close reason says why.
        let _ = self.commands.send(Command::Close).await;
        let Connection { task, closed, .. } = self;
        let _ = task.await;
        let reason = closed.borrow().clone();
        reason.unwrap_or_else(task_ended)
    }

    fn close_reason(&self) -> CloseReason {
        self.closed.borrow().clone().unwrap_or_else(task_ended)
    }
}

struct RunningDriver {
    task: JoinHandle<()>,
    to_driver: ra_channel::Sender<Bytes>,
}

struct Task<S> {
    fsm: Fsm,
    reader: FrameReader<tokio::io::ReadHalf<S>>,
    writer: FramedWrite<tokio::io::WriteHalf<S>, IdscpCodec>,
    budget: Arc<ConnectionBudget>,
    /// The peer's in-flight slots (`requests_in_flight`).
    slots: Arc<Semaphore>,
    /// What the data being handed to the state machine will hold once delivered.
    in_flight: Option<InFlight>,
    /// Messages of the peer's the layer above holds and may still answer ([`AnswerAwaited`]).
    answers_awaited: Arc<AtomicUsize>,
    /// What each message in the state machine's send queue holds, oldest first.
    outgoing: VecDeque<Outgoing>,
    /// When the ACKs waiting in the write buffer go out alone (`Settings::ack_delay`, or later
    /// while an answer is awaited), unless a message of ours takes them along first.
    ack_due: Option<Instant>,
    /// When the first of the ACKs waiting in the write buffer was put there.
    ack_buffered: Option<Instant>,
    peer_certificate: PeerCertificate,
    endpoint: Endpoint,
    /// The last DAT that passed verification, until the state machine accepts it.
    candidate_dat: Option<(VerifiedDat, Bytes)>,
    peer: Option<watch::Sender<Arc<PeerInfo>>>,
    deliver: mpsc::Sender<Incoming>,
    commands: mpsc::Receiver<Command>,
    close_requested: bool,
    ra_events_tx: ra_channel::Sender<RaEvent>,
    ra_events: ra_channel::Receiver<RaEvent>,
    prover: Option<RunningDriver>,
    verifier: Option<RunningDriver>,
    established: Option<oneshot::Sender<watch::Receiver<Arc<PeerInfo>>>>,
    closed: watch::Sender<Option<CloseReason>>,
    stats: Arc<ConnectionStats>,
}

/// How the task loop goes on after an event.
enum Flow {
    Continue,
    Stop(CloseReason),
}

impl<S> Task<S>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    async fn run(mut self) {
        let reason = self.drive().await;
        match (reason.by_peer, reason.cause) {
            (_, CloseCause::UserShutdown) => debug!(%reason, "IDSCP2 connection closed"),
            _ => info!(%reason, "IDSCP2 connection closed"),
        }
        for driver in [self.prover.take(), self.verifier.take()]
            .into_iter()
            .flatten()
        {
            driver.task.abort();
        }
        // Best effort: the peer may be gone already.
        let _ = timeout(
            self.endpoint.settings.write_timeout,
            self.writer.get_mut().shutdown(),
        )
        .await;
        self.closed.send_replace(Some(reason));
    }

    async fn drive(&mut self) -> CloseReason {
        let start = match self.endpoint.dat_issuer.token().await {
            Ok(our_dat) => Input::Start { our_dat },
            Err(e) => {
                warn!(error = %e, "cannot obtain our own DAT");
                Input::Abort {
                    cause: CloseCause::Error,
                    message: "Could not obtain own DAT".into(),
                }
            }
        };
        if let Flow::Stop(reason) = self.handle(start).await {
            return reason;
        }
        loop {
            let next_timer = self.fsm.poll_timeout();
            let takes_data = self.slots.available_permits() > 0;
            let ack_due = self.ack_due;
            let event = tokio::select! {
                _ = sleep_until(ack_due.unwrap_or_else(far_future)), if ack_due.is_some() => {
                    if self.ack_waits_for_answer() {
                        continue;
                    }
                    if let Flow::Stop(reason) = self.flush().await {
                        return reason;
                    }
                    continue;
                },
                frame = self.reader.next(takes_data) => match frame {
                    Ok(Some(ReadFrame { message, held })) => match self.peer_event(message, held).await {
                        Some(event) => event,
                        None => continue,
                    },
                    Ok(None) => return lost("peer closed the connection without IdscpClose".into()),
                    Err(FrameError::Io(e)) => return lost(format!("read failed: {e}")),
                    Err(e) => {
                        warn!(error = %e, "bad frame from peer");
                        transport_close(&self.endpoint.metrics, match e {
                            FrameError::Incomplete { .. } => "frame_timeout",
                            FrameError::TooLarge(..) => "frame_too_large",
                            _ => "malformed_frame",
                        });
                        let cause = match e {
                            FrameError::Incomplete { .. } => CloseCause::Timeout,
                            _ => CloseCause::Error,
                        };
                        Input::Abort { cause, message: e.to_string() }
                    }
                },
                command = self.commands.recv(), if !self.close_requested && self.fsm.can_send() => match command {
                    Some(Command::Send(outgoing)) => {
                        let data = outgoing.data.clone();
                        self.outgoing.push_back(outgoing);
                        Input::Send(data)
                    }
                    // A dropped handle means the layer above is done, like an explicit close.
                    Some(Command::Close) | None => {
                        self.close_requested = true;
                        Input::Close
                    }
                },
                Some(RaEvent { role, run, kind }) = self.ra_events.next() => match kind {
                    RaEventKind::Output(data) => Input::RaOutput { role, run, data },
                    RaEventKind::Finished(result) => Input::RaFinished { role, run, result },
                },
                _ = sleep_until(next_timer.map_or_else(far_future, |(_, at)| Instant::from_std(at))), if next_timer.is_some() => {
                    let timer = next_timer.map_or(Timer::Handshake, |(timer, _)| timer);
                    if timer == Timer::Ack && self.fsm.undelivered() > 0 {
                        ConnectionStats::bump(&self.stats.data_resent);
                    }
                    Input::Timer(timer)
                }
            };
            let resend_timer = event == Input::Timer(Timer::Ack);
            if let Flow::Stop(reason) = self.handle(event).await {
                // Closed by the state machine on an ACK timer: the resend limit, not an I/O error.
                if resend_timer && self.fsm.is_closed() {
                    transport_close(&self.endpoint.metrics, "resend_limit");
                }
                return reason;
            }
        }
    }

    /// Turns a peer frame into an event, doing the asynchronous work (DAT verification, fetching
    /// our own DAT) first so that the state machine stays synchronous.
    async fn peer_event(&mut self, message: Message, held: Option<Held>) -> Option<Input> {
        Some(match message {
            Message::IdscpHello(hello) => match self
                .verify_dat(hello.dynamic_attribute_token.map(|d| d.token))
                .await
            {
                Ok(dat) => Input::PeerHello {
                    dat,
                    supported_ra: hello.supported_ra_suite,
                    expected_ra: hello.expected_ra_suite,
                },
                Err(abort) => abort,
            },
            Message::IdscpClose(close) => Input::PeerClose {
                cause: CloseCause::try_from(close.cause_code).unwrap_or(CloseCause::Error),
                message: close.cause_msg,
            },
            Message::IdscpDatExpired(_) => match self.endpoint.dat_issuer.token().await {
                Ok(our_dat) => {
                    ConnectionStats::bump(&self.stats.own_dats_sent);
                    Input::PeerDatExpired { our_dat }
                }
                Err(e) => {
                    warn!(error = %e, "cannot renew our own DAT");
                    Input::Abort {
                        cause: CloseCause::Error,
                        message: "Could not obtain own DAT".into(),
                    }
                }
            },
            Message::IdscpDat(dat) => match self.verify_dat(Some(dat.token)).await {
                Ok(dat) => Input::PeerDat(dat),
                Err(abort) => abort,
            },
            Message::IdscpReRa(_) => Input::PeerReRa,
            Message::IdscpRaProver(ra) => {
                ConnectionStats::bump(&self.stats.ra_messages_received);
                Input::PeerRaProver(ra.data)
            }
            Message::IdscpRaVerifier(ra) => {
                ConnectionStats::bump(&self.stats.ra_messages_received);
                Input::PeerRaVerifier(ra.data)
            }
            Message::IdscpData(data) => {
                let bit = data.alternating_bit;
                if self.fsm.takes_new_data(bit) {
                    // Without a slot or the bytes for it, take nothing (no ACK): the peer
                    // resends later, which is the flow control the alternating bit gives us.
                    let Some(in_flight) = self.in_flight_for(&data.data, held) else {
                        ConnectionStats::bump(&self.stats.data_refused);
                        return None;
                    };
                    self.in_flight = Some(in_flight);
                }
                Input::PeerData {
                    data: data.data,
                    bit,
                }
            }
            Message::IdscpAck(ack) => Input::PeerAck {
                bit: ack.alternating_bit,
            },
        })
    }

    /// A slot and the bytes for new data from the peer, if both are free. A big frame reserved
    /// its bytes before it was read; a small one was read without and reserves them now.
    fn in_flight_for(&self, data: &Bytes, held: Option<Held>) -> Option<InFlight> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        let bytes = match held {
            Some(held) => held,
            None => self.budget.try_reserve(data.len())?,
        };
        // A receiver that is gone means nobody listens; the data is dropped on delivery.
        (self.deliver.capacity() > 0 || self.deliver.is_closed()).then(|| InFlight {
            bytes: Some(bytes),
            slot,
            awaited: AnswerAwaited::new(&self.answers_awaited),
        })
    }

    /// The verdict on a DAT of the peer's, or the close when its certificate is at fault.
    async fn verify_dat(&mut self, token: Option<Bytes>) -> Result<DatCheck, Input> {
        let token = token.unwrap_or_default();
        let verifier = self.endpoint.dat_verifier.clone();
        let limit = self.endpoint.settings.handshake_timeout;
        let verdict = match timeout(limit, verifier.verify(&token, &self.peer_certificate)).await {
            Ok(verdict) => verdict,
            Err(_) => Err(DatError::Timeout),
        };
        let dat = match verdict {
            Ok(dat) => dat,
            Err(e) if e.is_certificate_problem() => {
                warn!(error = %e, "peer certificate refused");
                return Err(Input::Abort {
                    cause: CloseCause::Error,
                    message: e.to_string(),
                });
            }
            Err(e) => {
                warn!(error = %e, "peer DAT rejected");
                return Ok(DatCheck::Invalid(e.to_string()));
            }
        };
        if let Some(peer) = &self.peer {
            let identity = &peer.borrow().identity;
            if *identity != dat.subject {
                warn!(%identity, renewed = %dat.subject, "renewed peer DAT names another subject");
                return Ok(DatCheck::Invalid(
                    "renewed DAT names another subject".into(),
                ));
            }
        }
        let expires_in = dat.expires_in;
        self.candidate_dat = Some((dat, token));
        Ok(DatCheck::Valid { expires_in })
    }

    /// Hands one input to the state machine and carries out what it asks for: first the
    /// messages for the peer, then the events (so that a close we initiate follows its
    /// IdscpClose).
    async fn handle(&mut self, input: Input) -> Flow {
        let flow = match self.fsm.handle_input(std::time::Instant::now(), input) {
            Ok(()) => self.execute().await,
            // The loop drains the machine after every input and takes a message from the layer
            // above only when it can send, so this is a bug here, not the peer's doing.
            Err(refused) => Flow::Stop(CloseReason {
                cause: CloseCause::Error,
                message: format!("state machine refused an input: {refused}"),
                by_peer: false,
            }),
        };
        // Data the state machine did not deliver (a resend, or no longer attested) holds nothing.
        self.in_flight = None;
        flow
    }

    async fn execute(&mut self) -> Flow {
        let mut wrote = false;
        let mut only_acks = true;
        // Everything one input asks us to send goes into the write buffer first and out with one
        // flush: one TLS record, one write. An ACK alone may wait there for the answer to the
        // data it acknowledges (`Settings::ack_delay`), so that the two go out together.
        while let Some(message) = self.fsm.poll_transmit() {
            only_acks &= matches!(message, Message::IdscpAck(_));
            if let Flow::Stop(reason) = self.transmit(message).await {
                return Flow::Stop(reason);
            }
            wrote = true;
        }
        let delay = self
            .endpoint
            .settings
            .ack_delay
            .min(self.longest_ack_wait());
        if wrote && only_acks && !delay.is_zero() {
            if self.ack_due.is_none() {
                let now = Instant::now();
                self.ack_buffered = Some(now);
                self.ack_due = Some(now + delay);
            }
        } else if wrote {
            if let Flow::Stop(reason) = self.flush().await {
                return Flow::Stop(reason);
            }
            // A write the peer held up must not eat into the ACK timeout it armed.
            self.fsm.transmitted(std::time::Instant::now());
        }
        while let Some(event) = self.fsm.poll_event() {
            if let Flow::Stop(reason) = self.on_event(event) {
                return Flow::Stop(reason);
            }
        }
        Flow::Continue
    }

    async fn transmit(&mut self, message: Message) -> Flow {
        if matches!(
            message,
            Message::IdscpRaProver(_) | Message::IdscpRaVerifier(_)
        ) {
            ConnectionStats::bump(&self.stats.ra_messages_sent);
        }
        // Buffered only; FramedWrite writes out early if the buffer passes its boundary.
        let write = self.writer.feed(message);
        written(timeout(self.endpoint.settings.write_timeout, write).await)
    }

    /// Our own ACK timeout stands in for the peer's, which we do not know: a quarter of it
    /// leaves the peer's timer room to spare.
    fn longest_ack_wait(&self) -> std::time::Duration {
        self.endpoint.settings.ack_timeout / 4
    }

    /// Whether the ACKs whose `ack_delay` is up wait on for an answer the layer above may still
    /// send (or has sent, and the task has not taken yet); if so, the timer is set to the
    /// longest wait.
    fn ack_waits_for_answer(&mut self) -> bool {
        let Some(buffered) = self.ack_buffered else {
            return false;
        };
        let answer_coming =
            self.answers_awaited.load(Ordering::Relaxed) > 0 || !self.commands.is_empty();
        let last_moment = buffered + self.longest_ack_wait();
        if answer_coming && Instant::now() < last_moment {
            self.ack_due = Some(last_moment);
            return true;
        }
        false
    }

    /// Writes out what [`Task::transmit`] buffered.
    async fn flush(&mut self) -> Flow {
        self.ack_due = None;
        self.ack_buffered = None;
        let flush = self.writer.flush();
        let flushed = timeout(self.endpoint.settings.write_timeout, flush).await;
        let flow = written(flushed);
        // The buffer keeps the capacity of the largest frame written so far;
        // a big reply's copy must not stay with the connection.
        if self.writer.write_buffer().capacity() > RETAINED_WRITE_BUFFER {
            *self.writer.write_buffer_mut() = BytesMut::new();
        }
        flow
    }

    fn on_event(&mut self, event: Event) -> Flow {
        match event {
            Event::StartRa { role, suite, run } => self.start_driver(role, &suite, run),
            Event::StopRa(role) => {
                if let Some(driver) = self.driver_slot(role).take() {
                    driver.task.abort();
                }
            }
            Event::ToRa { role, data } => {
                if let Some(driver) = self.driver_slot(role) {
                    // Drivers exchange a handful of messages; a flood from the peer is dropped.
                    if driver.to_driver.try_send(data).is_err() {
                        warn!(?role, "RA driver is not taking messages; dropped one");
                    }
                }
            }
            Event::Deliver(data) => {
                // Capacity was checked before the input; a closed receiver means nobody listens.
                if let Some(in_flight) = self.in_flight.take() {
                    let _ = self.deliver.try_send(Incoming { data, in_flight });
                }
            }
            Event::Acknowledged => {
                self.outgoing.pop_front();
            }
            Event::PeerDatAccepted => {
                // The peer is authenticated now (its DAT names its certificate); data may follow
                // its Hello before our drivers report, so the limit goes up here, not later.
                self.reader.set_max_frame(self.endpoint.settings.max_frame);
                self.accept_dat();
            }
            Event::Established => {
                if let (Some(established), Some(peer)) = (self.established.take(), &self.peer) {
                    let identity = &peer.borrow().identity;
                    // Named here only when no span of the caller's carries it already.
                    if tracing::Span::current().has_field(PEER_SPAN_FIELD) {
                        info!("IDSCP2 connection established");
                    } else {
                        info!(peer = %identity, "IDSCP2 connection established");
                    }
                    // The caller of establish may have given up; then the close follows.
                    let _ = established.send(peer.subscribe());
                }
            }
            Event::Closed {
                cause,
                message,
                by_peer,
            } => {
                return Flow::Stop(CloseReason {
                    cause,
                    message,
                    by_peer,
                })
            }
        }
        Flow::Continue
    }

    fn accept_dat(&mut self) {
        let Some((dat, token)) = self.candidate_dat.take() else {
            return;
        };
        ConnectionStats::bump(&self.stats.peer_dats_accepted);
        // A server's connection span has a `peer` field for this; every later line carries it.
        tracing::Span::current().record(PEER_SPAN_FIELD, dat.subject.as_str());
        let info = Arc::new(PeerInfo {
            identity: dat.subject,
            certificate: self.peer_certificate.clone(),
            dat_claims: dat.claims,
            dat_token: token,
        });
        match &self.peer {
            Some(peer) => {
                peer.send_replace(info);
            }
            None => self.peer = Some(watch::channel(info).0),
        }
    }

    fn start_driver(&mut self, role: RaRole, suite: &str, run: u64) {
        if let Some(old) = self.driver_slot(role).take() {
            old.task.abort();
        }
        let (channel, to_driver) = RaChannel::new(role, run, self.ra_events_tx.clone());
        let mut events = self.ra_events_tx.clone();
        let driver = self.endpoint.ra.driver(role, suite);
        let task = tokio::spawn(
            async move {
                match driver {
                    Some(driver) => channel.run(driver).await,
                    // Endpoint::new rules this out; fail the run rather than hang if it happens.
                    None => {
                        let _ = events
                            .send(RaEvent {
                                role,
                                run,
                                kind: RaEventKind::Finished(Err("no driver for suite".into())),
                            })
                            .await;
                    }
                }
            }
            .in_current_span(),
        );
        *self.driver_slot(role) = Some(RunningDriver { task, to_driver });
    }

    fn driver_slot(&mut self, role: RaRole) -> &mut Option<RunningDriver> {
        match role {
            RaRole::Prover => &mut self.prover,
            RaRole::Verifier => &mut self.verifier,
        }
    }
}

/// How a write (or flush) bounded by the write timeout ended.
fn written<E: std::fmt::Display>(
    outcome: Result<Result<(), E>, tokio::time::error::Elapsed>,
) -> Flow {
    match outcome {
        Ok(Ok(())) => Flow::Continue,
        Ok(Err(e)) => Flow::Stop(lost(format!("write failed: {e}"))),
        Err(_) => Flow::Stop(CloseReason {
            cause: CloseCause::Timeout,
            message: "peer does not read".into(),
            by_peer: false,
        }),
    }
}

/// Write buffers beyond this are freed after the frame went out rather than kept for the next.
const RETAINED_WRITE_BUFFER: usize = 64 * 1024;

/// Counts a connection we closed because its peer broke a bound.
fn transport_close(metrics: &MetricNames, reason: &'static str) {
    metrics::counter!(metrics.transport_closes.clone(), "reason" => reason).increment(1);
}

/// What we know when the connection task ended without recording why (it panicked).
fn task_ended() -> CloseReason {
    CloseReason {
        cause: CloseCause::Error,
        message: "connection task ended".into(),
        by_peer: false,
    }
}

/// The peer went away without a word.
fn lost(message: String) -> CloseReason {
    CloseReason {
        cause: CloseCause::Error,
        message,
        by_peer: true,
    }
}

fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(86_400 * 365)
}

//! The IDSCP2 handshake and data state machine: the sans-IO core of a connection.
//!
//! Shaped like quinn-proto's `Connection`: [`Fsm::handle_input`] takes an [`Input`] (a decoded
//! peer message, a driver's output, a timer that fired, a command from the layer above), and the
//! results wait in the machine until they are polled: [`Fsm::poll_transmit`] gives the messages
//! to write to the peer, [`Fsm::poll_event`] what the driver must do or tell the layer above
//! (start an RA driver, deliver data, ...), [`Fsm::poll_timeout`] when the next timer is due. Time
//! enters only as the `now` of each input, and DATs arrive already verified, so every
//! state x input pair is a plain function call that tests can drive without sockets or clocks.
//! A driver whose writes can block calls [`Fsm::transmitted`] once they finished, so that the
//! timers armed with them (the ACK timer above all) count from the write, not from the input.
//! The tokio driver (`connection`, feature `tokio`) does the I/O around it: it delimits and
//! decodes frames (reserving their memory first), verifies DATs and runs the RA drivers, and
//! turns the peer's messages into inputs.
//!
//! The JVM's named states ([`State`]) are derived from a few orthogonal facts (is the prover
//! running, is the verifier running or waiting for a new DAT, is data awaiting an ACK) rather than
//! stored, so that re-attestation and DAT renewal can overlap in either direction without a state
//! per combination.
//!
//! Everything the machine keeps is bounded: at most `send_queue` messages wait behind the one
//! awaiting its ACK ([`Fsm::can_send`] says whether another fits; the connection asks before it
//! takes the next message from the layer above, and a send beyond it is refused with
//! [`Refused::SendQueueFull`]), and that one is resent at most `max_resends` times before the
//! connection is closed with TIMEOUT. An input adds a handful of outputs at most, and an input that
//! arrives while more than [`OUTPUT_BACKLOG`] outputs wait unpolled is refused with
//! [`Refused::Backlog`], so a driver that stops polling cannot make the queues grow.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::proto::idscp_close::CloseCause;
use super::proto::idscp_message::Message;
use super::proto::{
    IdscpAck, IdscpClose, IdscpDat, IdscpDatExpired, IdscpData, IdscpHello, IdscpRaProver,
    IdscpRaVerifier, IdscpReRa,
};
use super::ra::RaRole;
use super::settings::Settings;

/// The protocol version every known peer sends (and none checks).
const IDSCP2_VERSION: i32 = 2;

/// The states as idscp2-jvm names them, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started, or ended.
    Closed,
    /// Our Hello is out, waiting for the peer's.
    WaitForHello,
    /// Both our prover and our verifier are running.
    WaitForRa,
    /// Our prover is running; the peer is attested.
    WaitForRaProver,
    /// Our verifier is running; our proof is done.
    WaitForRaVerifier,
    /// Waiting for a renewed DAT from the peer while our prover runs.
    WaitForDatAndRa,
    /// Waiting for a renewed DAT from the peer.
    WaitForDatAndRaVerifier,
    /// Both sides attested; data flows.
    Established,
    /// Established, with our data awaiting its ACK.
    WaitForAck,
}

/// The timers a connection keeps; each is either unarmed or due at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Waiting for the peer's Hello, for a renewed DAT, or for our last data to drain on close.
    Handshake,
    /// Our prover must finish in time.
    ProverHandshake,
    /// Our verifier must finish in time.
    VerifierHandshake,
    /// Resend unacknowledged data.
    Ack,
    /// Re-attest the peer.
    Ra,
    /// The peer's DAT is about to expire: ask for a new one.
    Dat,
}

impl Timer {
    /// Every timer, in the order [`Fsm::poll_timeout`] breaks ties.
    pub const ALL: [Timer; TIMERS] = [
        Timer::Handshake,
        Timer::ProverHandshake,
        Timer::VerifierHandshake,
        Timer::Ack,
        Timer::Ra,
        Timer::Dat,
    ];
}

/// The verdict on a DAT the peer sent, reached by the connection's DAT verifier.
#[derive(Debug, Clone, PartialEq)]
pub enum DatCheck {
    /// The DAT is valid.
    Valid {
        /// How long it stays valid, if it expires.
        expires_in: Option<Duration>,
    },
    /// The DAT is refused, and why.
    Invalid(String),
}

/// What goes into the machine: the peer's messages (DATs already verified), our RA drivers'
/// output, timers, and the layer above's commands.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// TLS is up: send our Hello with our current DAT.
    Start {
        /// Our current DAT.
        our_dat: Bytes,
    },
    /// The peer's Hello.
    PeerHello {
        /// The suites the peer can prove.
        supported_ra: Vec<String>,
        /// The suites the peer wants us to prove, in its order of preference.
        expected_ra: Vec<String>,
        /// The verdict on the Hello's DAT.
        dat: DatCheck,
    },
    /// The peer ended the connection.
    PeerClose {
        /// The cause it gave.
        cause: CloseCause,
        /// The message it gave.
        message: String,
    },
    /// The peer wants our DAT again; the connection fetched our current one.
    PeerDatExpired {
        /// Our current DAT.
        our_dat: Bytes,
    },
    /// The peer sent a renewed DAT, with its verdict.
    PeerDat(DatCheck),
    /// The peer asks us to prove ourselves again.
    PeerReRa,
    /// A message from the peer's prover, for our verifier.
    PeerRaProver(Bytes),
    /// A message from the peer's verifier, for our prover.
    PeerRaVerifier(Bytes),
    /// Data from the peer.
    PeerData {
        /// The application message, encoded.
        data: Bytes,
        /// Its alternating bit.
        bit: bool,
    },
    /// The peer acknowledges our data.
    PeerAck {
        /// The bit of the data it acknowledges.
        bit: bool,
    },
    /// A message one of our RA drivers wants sent to the peer.
    RaOutput {
        /// The role of the driver.
        role: RaRole,
        /// The run it belongs to.
        run: u64,
        /// The message.
        data: Bytes,
    },
    /// One of our RA drivers finished.
    RaFinished {
        /// The role of the driver.
        role: RaRole,
        /// The run it belongs to.
        run: u64,
        /// Success, or why it failed.
        result: Result<(), String>,
    },
    /// The timer [`Fsm::poll_timeout`] named is due (a timer that is not armed is ignored, as is
    /// one whose phase has passed).
    Timer(Timer),
    /// The layer above wants this delivered to the peer. Only when [`Fsm::can_send`]: a message
    /// beyond the bound is refused ([`Refused::SendQueueFull`]).
    Send(Bytes),
    /// The layer above is done: deliver what is queued, then close with USER_SHUTDOWN.
    Close,
    /// The connection cannot go on (malformed frame, I/O error): tell the peer and close.
    Abort {
        /// The close cause to send.
        cause: CloseCause,
        /// The close message to send.
        message: String,
    },
}

/// What the driver must do, or tell the layer above, after an input: see [`Fsm::poll_event`].
/// Messages for the peer and timers are polled on their own ([`Fsm::poll_transmit`],
/// [`Fsm::poll_timeout`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Start a fresh run of a driver, replacing any run of that role.
    StartRa {
        /// Prover or verifier.
        role: RaRole,
        /// The suite to run.
        suite: String,
        /// The run id that its output and verdict must carry.
        run: u64,
    },
    /// Stop the running driver of this role: its result is no longer wanted.
    StopRa(RaRole),
    /// Route a peer message to our driver of this role.
    ToRa {
        /// The role of the driver.
        role: RaRole,
        /// The message.
        data: Bytes,
    },
    /// Data from the peer for the layer above (it was ACKed already).
    Deliver(Bytes),
    /// The peer ACKed the oldest message the layer above gave us: whatever it held can go.
    Acknowledged,
    /// The DAT last handed in as valid is now the peer's accepted DAT.
    PeerDatAccepted,
    /// Both attestations succeeded for the first time.
    Established,
    /// Terminal. If we initiated it, an `IdscpClose` is the last message to transmit.
    Closed {
        /// The close cause.
        cause: CloseCause,
        /// The close message.
        message: String,
        /// Whether the peer closed; otherwise we did.
        by_peer: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    WaitForHello,
    Running,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    Idle,
    Running {
        run: u64,
    },
    Done,
    /// Verifier only: we asked for a new DAT and re-attest once it arrives.
    WaitingForDat,
}

/// Why [`Fsm::handle_input`] did not take an input; the input had no effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// More than [`OUTPUT_BACKLOG`] outputs wait to be polled: poll them first.
    #[error("more than {OUTPUT_BACKLOG} outputs wait to be polled")]
    Backlog,
    /// [`Input::Send`] while [`Fsm::can_send`] is false: the send queue is full, or the
    /// connection is closing or closed.
    #[error("the send queue is full or the connection is closing")]
    SendQueueFull,
}

/// Outputs (messages to transmit plus events) that may wait unpolled before inputs are refused.
pub const OUTPUT_BACKLOG: usize = 64;

const TIMERS: usize = 6;

/// One IDSCP2 connection's protocol state, without I/O.
pub struct Fsm {
    config: Arc<Settings>,
    phase: Phase,
    prover_suite: String,
    verifier_suite: String,
    prover: Driver,
    verifier: Driver,
    next_run: u64,
    established: bool,
    send_queue: VecDeque<Bytes>,
    unacked: Option<Bytes>,
    /// Times `unacked` went out again because its ACK did not come in time.
    resends: u32,
    next_send_bit: bool,
    expected_receive_bit: bool,
    closing: bool,
    /// The `now` of the input being handled: timers are set relative to it.
    now: Instant,
    transmits: VecDeque<Message>,
    events: VecDeque<Event>,
    timers: [Option<Instant>; TIMERS],
    /// The timers the input being handled armed, which [`Fsm::transmitted`] moves.
    armed_by_input: [bool; TIMERS],
}

impl Fsm {
    /// A connection that has not started yet ([`State::Closed`]); [`Input::Start`] begins it.
    pub fn new(config: Arc<Settings>) -> Self {
        Fsm {
            config,
            phase: Phase::Idle,
            prover_suite: String::new(),
            verifier_suite: String::new(),
            prover: Driver::Idle,
            verifier: Driver::Idle,
            next_run: 1,
            established: false,
            send_queue: VecDeque::new(),
            unacked: None,
            resends: 0,
            next_send_bit: false,
            expected_receive_bit: false,
            closing: false,
            now: Instant::now(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timers: [None; TIMERS],
            armed_by_input: [false; TIMERS],
        }
    }

    /// The state as idscp2-jvm would name it.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Idle | Phase::Closed => State::Closed,
            Phase::WaitForHello => State::WaitForHello,
            Phase::Running => {
                let prover_running = self.prover != Driver::Done;
                match self.verifier {
                    Driver::WaitingForDat if prover_running => State::WaitForDatAndRa,
                    Driver::WaitingForDat => State::WaitForDatAndRaVerifier,
                    Driver::Done if prover_running => State::WaitForRaProver,
                    Driver::Done if self.unacked.is_some() => State::WaitForAck,
                    Driver::Done => State::Established,
                    _ if prover_running => State::WaitForRa,
                    _ => State::WaitForRaVerifier,
                }
            }
        }
    }

    /// Whether the connection ended (by either side); it takes no more input then.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Messages accepted from the layer above but not yet acknowledged by the peer.
    pub fn undelivered(&self) -> usize {
        self.send_queue.len() + usize::from(self.unacked.is_some())
    }

    /// Whether an [`Input::Send`] would be taken now.
    pub fn can_send(&self) -> bool {
        !self.closing
            && self.phase != Phase::Closed
            && self.send_queue.len() < self.config.send_queue
    }

    /// Whether data from the peer with this bit would be delivered (rather than dropped, or
    /// ACKed again as a resend), so that the connection can make room for it first.
    pub fn takes_new_data(&self, bit: bool) -> bool {
        self.attested() && bit == self.expected_receive_bit
    }

    /// Feeds one input in, at `now`. Its results wait for [`Fsm::poll_transmit`],
    /// [`Fsm::poll_event`] and [`Fsm::poll_timeout`]. Once closed, inputs are taken and ignored.
    pub fn handle_input(&mut self, now: Instant, input: Input) -> Result<(), Refused> {
        if self.transmits.len() + self.events.len() > OUTPUT_BACKLOG {
            return Err(Refused::Backlog);
        }
        if matches!(input, Input::Send(_)) && !self.can_send() {
            return Err(Refused::SendQueueFull);
        }
        self.now = now;
        self.armed_by_input = [false; TIMERS];
        if let Input::Timer(timer) = input {
            // Due or not, a timer handed in is spent; the machine re-arms it if it goes on.
            self.cancel_timer(timer);
        }
        if self.phase != Phase::Closed {
            self.dispatch(input);
        }
        Ok(())
    }

    /// The next message to write to the peer, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.transmits.pop_front()
    }

    /// The messages of the last input went out at `now`: the timers that input armed while
    /// sending them (ACK, resend, handshake) count from here, as if armed after the write. A write
    /// that the peer held up for longer than `ack_timeout` is then not followed by a resend at
    /// once. The DAT timer stays put: it follows the token's expiry, not the write.
    pub fn transmitted(&mut self, now: Instant) {
        let Some(delay) = now.checked_duration_since(self.now) else {
            return;
        };
        for timer in Timer::ALL {
            let index = timer_index(timer);
            if timer == Timer::Dat || !self.armed_by_input[index] {
                continue;
            }
            if let Some(at) = &mut self.timers[index] {
                *at = at.checked_add(delay).unwrap_or(*at);
            }
        }
        self.now = now;
        self.armed_by_input = [false; TIMERS];
    }

    /// The next thing the driver must do or tell the layer above, oldest first. Write what
    /// [`Fsm::poll_transmit`] gives first: a [`Event::Closed`] we initiated follows its
    /// `IdscpClose`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The timer due first, and when; hand it in as [`Input::Timer`] once that time has come.
    pub fn poll_timeout(&self) -> Option<(Timer, Instant)> {
        Timer::ALL
            .iter()
            .filter_map(|&timer| self.timer(timer).map(|at| (timer, at)))
            .min_by_key(|&(_, at)| at)
    }

    /// When `timer` is due, if it is armed.
    pub fn timer(&self, timer: Timer) -> Option<Instant> {
        self.timers[timer_index(timer)]
    }

    fn dispatch(&mut self, input: Input) {
        match input {
            Input::Start { our_dat } => self.on_start(our_dat),
            Input::PeerHello {
                supported_ra,
                expected_ra,
                dat,
            } => self.on_hello(supported_ra, expected_ra, dat),
            Input::PeerClose { cause, message } => self.closed(cause, message, true),
            Input::PeerDatExpired { our_dat } if self.phase == Phase::Running => {
                self.emit(Message::IdscpDat(IdscpDat { token: our_dat }));
                self.start_driver(RaRole::Prover);
            }
            Input::PeerDat(dat) => self.on_renewed_dat(dat),
            Input::PeerReRa if self.phase == Phase::Running => self.start_driver(RaRole::Prover),
            Input::PeerRaProver(data) => self.route_to_driver(RaRole::Verifier, data),
            Input::PeerRaVerifier(data) => self.route_to_driver(RaRole::Prover, data),
            Input::PeerData { data, bit } => self.on_data(data, bit),
            Input::PeerAck { bit } => self.on_ack(bit),
            Input::RaOutput { role, run, data } => {
                if self.driver(role) == (Driver::Running { run }) {
                    self.emit(match role {
                        RaRole::Prover => Message::IdscpRaProver(IdscpRaProver { data }),
                        RaRole::Verifier => Message::IdscpRaVerifier(IdscpRaVerifier { data }),
                    });
                }
            }
            Input::RaFinished { role, run, result } => self.on_ra_finished(role, run, result),
            Input::Timer(timer) => self.on_timer(timer),
            Input::Send(data) => {
                self.send_queue.push_back(data);
                self.send_next();
            }
            Input::Close => self.on_close_request(),
            Input::Abort { cause, message } => self.close(cause, message),
            Input::PeerDatExpired { .. } | Input::PeerReRa => {}
        }
    }

    fn on_start(&mut self, our_dat: Bytes) {
        if self.phase != Phase::Idle {
            return;
        }
        self.emit(Message::IdscpHello(IdscpHello {
            version: IDSCP2_VERSION,
            dynamic_attribute_token: Some(IdscpDat { token: our_dat }),
            supported_ra_suite: self.config.supported_ra.clone(),
            expected_ra_suite: self.config.expected_ra.clone(),
        }));
        self.set_timer(Timer::Handshake, self.config.handshake_timeout);
        self.phase = Phase::WaitForHello;
    }

    fn on_hello(&mut self, peer_supported: Vec<String>, peer_expected: Vec<String>, dat: DatCheck) {
        if self.phase != Phase::WaitForHello {
            return;
        }
        self.cancel_timer(Timer::Handshake);
        // The peer's order decides what we prove; our order decides what we verify.
        let prover = peer_expected
            .iter()
            .find(|suite| self.config.supported_ra.contains(suite));
        let verifier = self
            .config
            .expected_ra
            .iter()
            .find(|suite| peer_supported.contains(suite));
        let (prover, verifier) = match (prover, verifier) {
            (None, _) => {
                return self.close(
                    CloseCause::NoRaMechanismMatchProver,
                    "No RA mechanism match for the prover".into(),
                )
            }
            (_, None) => {
                return self.close(
                    CloseCause::NoRaMechanismMatchVerifier,
                    "No RA mechanism match for the verifier".into(),
                )
            }
            (Some(p), Some(v)) => (p.clone(), v.clone()),
        };
        let DatCheck::Valid { expires_in } = dat else {
            return self.close(CloseCause::NoValidDat, "No valid DAT".into());
        };
        self.accept_dat(expires_in);
        self.prover_suite = prover;
        self.verifier_suite = verifier;
        self.phase = Phase::Running;
        self.start_driver(RaRole::Prover);
        self.start_driver(RaRole::Verifier);
    }

    fn on_renewed_dat(&mut self, dat: DatCheck) {
        if self.phase != Phase::Running || self.verifier != Driver::WaitingForDat {
            return;
        }
        let DatCheck::Valid { expires_in } = dat else {
            return self.close(CloseCause::NoValidDat, "No valid DAT".into());
        };
        self.cancel_timer(Timer::Handshake);
        self.accept_dat(expires_in);
        self.start_driver(RaRole::Verifier);
    }

    fn accept_dat(&mut self, expires_in: Option<Duration>) {
        self.events.push_back(Event::PeerDatAccepted);
        if let Some(expires_in) = expires_in {
            let renew_after = expires_in.mul_f64(self.config.dat_renewal_threshold);
            self.set_timer(Timer::Dat, renew_after);
        }
    }

    fn on_data(&mut self, data: Bytes, bit: bool) {
        // Like the JVM, take no data while either side is (re-)attesting: no ACK, so the peer
        // resends it once we are established again.
        if !self.attested() {
            return;
        }
        self.emit(Message::IdscpAck(IdscpAck {
            alternating_bit: bit,
        }));
        if bit == self.expected_receive_bit {
            self.expected_receive_bit = !bit;
            self.events.push_back(Event::Deliver(data));
        }
        // Otherwise a resend of data we already delivered: its ACK was lost, so ACK again.
    }

    fn on_ack(&mut self, bit: bool) {
        if self.unacked.is_none() || bit != self.next_send_bit {
            return;
        }
        self.unacked = None;
        self.next_send_bit = !self.next_send_bit;
        self.cancel_timer(Timer::Ack);
        self.events.push_back(Event::Acknowledged);
        self.send_next();
    }

    fn send_next(&mut self) {
        if !self.attested() || self.unacked.is_some() {
            return;
        }
        match self.send_queue.pop_front() {
            Some(data) => {
                self.unacked = Some(data);
                self.resends = 0;
                self.send_unacked();
            }
            None if self.closing => self.close(CloseCause::UserShutdown, "Shutdown".into()),
            None => {}
        }
    }

    fn send_unacked(&mut self) {
        if let Some(data) = self.unacked.clone() {
            self.emit(Message::IdscpData(IdscpData {
                data,
                alternating_bit: self.next_send_bit,
            }));
            self.set_timer(Timer::Ack, self.config.ack_timeout);
        }
    }

    fn on_ra_finished(&mut self, role: RaRole, run: u64, result: Result<(), String>) {
        if self.driver(role) != (Driver::Running { run }) {
            return;
        }
        if let Err(reason) = result {
            let cause = match role {
                RaRole::Prover => CloseCause::RaProverFailed,
                RaRole::Verifier => CloseCause::RaVerifierFailed,
            };
            return self.close(cause, reason);
        }
        *self.driver_mut(role) = Driver::Done;
        self.cancel_timer(handshake_timer_of(role));
        if role == RaRole::Verifier {
            self.set_timer(Timer::Ra, self.config.ra_interval);
        }
        if self.attested() {
            if !self.established {
                self.established = true;
                self.events.push_back(Event::Established);
            }
            // Data that was in flight when re-attestation began goes out again.
            if self.unacked.is_some() {
                self.send_unacked();
            } else {
                self.send_next();
            }
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Handshake => {
                let waiting = self.phase == Phase::WaitForHello
                    || self.verifier == Driver::WaitingForDat
                    || self.closing;
                if waiting {
                    self.close(CloseCause::Timeout, "Handshake timeout".into());
                }
            }
            Timer::ProverHandshake | Timer::VerifierHandshake => {
                let role = if timer == Timer::ProverHandshake {
                    RaRole::Prover
                } else {
                    RaRole::Verifier
                };
                if matches!(self.driver(role), Driver::Running { .. }) {
                    self.close(CloseCause::Timeout, "Attestation timeout".into());
                }
            }
            Timer::Ack => {
                if !self.attested() || self.unacked.is_none() {
                    return;
                }
                if self.resends >= self.config.max_resends {
                    let message = format!(
                        "Peer did not acknowledge our data after {} resends",
                        self.resends
                    );
                    return self.close(CloseCause::Timeout, message);
                }
                self.resends += 1;
                self.send_unacked();
            }
            Timer::Ra => {
                if self.phase == Phase::Running && self.verifier == Driver::Done {
                    self.emit(Message::IdscpReRa(IdscpReRa {
                        cause: "Re-attestation interval elapsed".into(),
                    }));
                    self.start_driver(RaRole::Verifier);
                }
            }
            Timer::Dat => {
                if self.phase == Phase::Running && self.verifier != Driver::WaitingForDat {
                    self.emit(Message::IdscpDatExpired(IdscpDatExpired {}));
                    if matches!(self.verifier, Driver::Running { .. }) {
                        self.events.push_back(Event::StopRa(RaRole::Verifier));
                        self.cancel_timer(Timer::VerifierHandshake);
                    }
                    self.verifier = Driver::WaitingForDat;
                    self.set_timer(Timer::Handshake, self.config.handshake_timeout);
                }
            }
        }
    }

    fn on_close_request(&mut self) {
        if self.established && self.undelivered() > 0 {
            self.closing = true;
            // Bounds how long a peer that stopped ACKing can keep us.
            self.set_timer(Timer::Handshake, self.config.handshake_timeout);
        } else {
            self.close(CloseCause::UserShutdown, "Shutdown".into());
        }
    }

    fn route_to_driver(&mut self, role: RaRole, data: Bytes) {
        if matches!(self.driver(role), Driver::Running { .. }) {
            self.events.push_back(Event::ToRa { role, data });
        }
    }

    fn start_driver(&mut self, role: RaRole) {
        let run = self.next_run;
        self.next_run += 1;
        *self.driver_mut(role) = Driver::Running { run };
        let suite = match role {
            RaRole::Prover => self.prover_suite.clone(),
            RaRole::Verifier => self.verifier_suite.clone(),
        };
        self.events.push_back(Event::StartRa { role, suite, run });
        self.set_timer(handshake_timer_of(role), self.config.handshake_timeout);
    }

    fn attested(&self) -> bool {
        self.phase == Phase::Running && self.prover == Driver::Done && self.verifier == Driver::Done
    }

    fn driver(&self, role: RaRole) -> Driver {
        match role {
            RaRole::Prover => self.prover,
            RaRole::Verifier => self.verifier,
        }
    }

    fn driver_mut(&mut self, role: RaRole) -> &mut Driver {
        match role {
            RaRole::Prover => &mut self.prover,
            RaRole::Verifier => &mut self.verifier,
        }
    }

    fn emit(&mut self, message: Message) {
        self.transmits.push_back(message);
    }

    fn set_timer(&mut self, timer: Timer, after: Duration) {
        // DAT lifetimes are capped where they are verified; saturate rather than panic anyway.
        let at = self.now.checked_add(after).unwrap_or(self.now);
        self.timers[timer_index(timer)] = Some(at);
        self.armed_by_input[timer_index(timer)] = true;
    }

    fn cancel_timer(&mut self, timer: Timer) {
        self.timers[timer_index(timer)] = None;
    }

    /// We end the connection: tell the peer why, then stop.
    fn close(&mut self, cause: CloseCause, message: String) {
        self.emit(Message::IdscpClose(IdscpClose {
            cause_code: cause as i32,
            cause_msg: message.clone(),
        }));
        self.closed(cause, message, false);
    }

    fn closed(&mut self, cause: CloseCause, message: String, by_peer: bool) {
        self.phase = Phase::Closed;
        // Nothing is due on a closed connection.
        self.timers = [None; TIMERS];
        self.events.push_back(Event::Closed {
            cause,
            message,
            by_peer,
        });
    }
}

fn timer_index(timer: Timer) -> usize {
    match timer {
        Timer::Handshake => 0,
        Timer::ProverHandshake => 1,
        Timer::VerifierHandshake => 2,
        Timer::Ack => 3,
        Timer::Ra => 4,
        Timer::Dat => 5,
    }
}

fn handshake_timer_of(role: RaRole) -> Timer {
    match role {
        RaRole::Prover => Timer::ProverHandshake,
        RaRole::Verifier => Timer::VerifierHandshake,
    }
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;

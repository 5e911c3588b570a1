//! Target `fsm`: random input sequences into the IDSCP2 handshake and alternating-bit state
//! machine, checked against a model kept from the outside (inputs in; messages to transmit, timers
//! and events polled out after each, in that order, as one list of actions).
//!
//! The peer is honest in half of the cases (it sends its messages in turn with the right bit,
//! resends the unacknowledged one, acknowledges what it got), so that exact delivery can be
//! checked; in the other half it also sends data and ACKs with any bit. Every case draws its own
//! small bounds (a send queue of 1 to 4, 0 to 4 resends) and the ACK timer sometimes fires
//! several times in a row (a peer gone quiet), so that a full queue and the resend limit come up
//! often rather than never, as they would under the deployed defaults.
//!
//! Invariants, after every event:
//! - nothing panics, and a closed machine stays silent;
//! - no data is delivered, and none of ours sent, before the handshake is done (both
//!   attestations succeeded for the runs the machine last started, a DAT was accepted) or while
//!   either side re-attests or waits for a DAT;
//! - receiving: only the event's own data is delivered, at most once; attested data is always
//!   ACKed with its bit; delivered messages alternate their bits; from an honest peer every
//!   message is delivered exactly once and in order, and ACKed only once delivered;
//!   `takes_new_data` says beforehand whether a message will be delivered;
//! - sending: the layer above hands in a message when `can_send()` says it fits (and sometimes
//!   when it does not: that message is refused as SendQueueFull, with no action, and never
//!   leaves); `can_send()`
//!   agrees with the model (not closing, fewer than `send_queue` waiting behind the one awaiting
//!   its ACK); at most one IdscpData unacknowledged, and every IdscpData arms the ACK timer;
//!   resends repeat it exactly; the next one goes out only after the matching ACK and with the
//!   other bit; our messages leave in the order they were accepted, each once; each ACK of
//!   ours is reported as `Acknowledged` exactly once, and nothing else is;
//! - the resend limit: an ACK timer that fires while attested with data unacknowledged resends
//!   it while fewer than `max_resends` such resends of that message went out, and otherwise
//!   closes with TIMEOUT (announced to the peer); an ACK timer at any other time does nothing;
//! - `undelivered()` counts exactly what was accepted and not yet ACKed, and never exceeds
//!   `send_queue + 1` (the queue plus the one awaiting its ACK);
//! - a requested close happens once everything was delivered, and a close we initiate is
//!   announced to the peer with its cause (the last message it transmits); a closed machine has
//!   no timer armed;
//! - every input at most adds a handful of outputs: none is refused as a backlog, since every
//!   output is polled after each input.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clearinghouse::idscp2::endpoint::Settings;
use clearinghouse::idscp2::fsm::{DatCheck, Event, Fsm, Input, Refused, State, Timer};
use clearinghouse::idscp2::proto::idscp_close::CloseCause;
use clearinghouse::idscp2::proto::idscp_message::Message;
use clearinghouse::idscp2::proto::{IdscpAck, IdscpData};
use clearinghouse::idscp2::ra::RaRole;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::runner::{fuzz, Budget, Outcome, Target};

pub const TARGET: Target = Target { name: "fsm", run };

const SUITES: &[&str] = &["Dummy2", "Dummy", "NullRa", "TPM2d"];

#[derive(Debug, Clone, Copy)]
enum RunPick {
    /// The run the machine started last for that role.
    Current,
    Stale,
    Any(u64),
}

#[derive(Debug, Clone)]
enum Dat {
    Valid(Option<Duration>),
    Invalid,
}

#[derive(Debug, Clone)]
enum Step {
    Start,
    Hello {
        supported: Vec<&'static str>,
        expected: Vec<&'static str>,
        dat: Dat,
    },
    PeerClose(CloseCause),
    PeerDatExpired,
    PeerDat(Dat),
    PeerReRa,
    PeerRaProver,
    PeerRaVerifier,
    /// The peer sends its next message, or resends the unacknowledged one; our ACK to it may
    /// be lost on the way.
    PeerData {
        ack_lost: bool,
    },
    /// The peer resends its unacknowledged message, if it has one.
    PeerResend {
        ack_lost: bool,
    },
    /// The peer acknowledges the last IdscpData it got from us.
    PeerAckLast,
    /// Hostile peers only: data and ACKs with any bit.
    RawData(bool),
    RawAck(bool),
    RaOutput(RaRole, RunPick),
    RaFinished(RaRole, RunPick, bool),
    Timer(Timer),
    /// The peer went quiet: the ACK timer fires this many times in a row, so that the resend
    /// limit is reached in cases that would otherwise end before.
    AckTimeouts(u32),
    /// The layer above hands in a message if `can_send()` says it fits, as the connection does;
    /// `anyway`: also when it does not fit.
    Send {
        anyway: bool,
    },
    Close,
    Abort(CloseCause),
}

#[derive(Debug, Clone)]
struct Case {
    hostile: bool,
    /// Start with a complete handshake, so that most cases spend their steps in the data phase.
    handshake_first: bool,
    dat_renewal_threshold: f64,
    send_queue: usize,
    max_resends: u32,
    steps: Vec<Step>,
}

fn cause() -> impl Strategy<Value = CloseCause> {
    select(vec![
        CloseCause::UserShutdown,
        CloseCause::Timeout,
        CloseCause::Error,
        CloseCause::NoValidDat,
        CloseCause::NoRaMechanismMatchProver,
        CloseCause::NoRaMechanismMatchVerifier,
        CloseCause::RaProverFailed,
        CloseCause::RaVerifierFailed,
    ])
}

fn dat() -> impl Strategy<Value = Dat> {
    prop_oneof![
        4 => proptest::option::of(
            // Verified DATs report at most MAX_DAT_LIFETIME (the verifiers cap it).
            (0u64..=clearinghouse::idscp2::dat::MAX_DAT_LIFETIME.as_secs()).prop_map(Duration::from_secs)
        )
        .prop_map(Dat::Valid),
        1 => Just(Dat::Invalid),
    ]
}

fn role() -> impl Strategy<Value = RaRole> {
    prop_oneof![Just(RaRole::Prover), Just(RaRole::Verifier)]
}

fn run_pick() -> impl Strategy<Value = RunPick> {
    prop_oneof![
        6 => Just(RunPick::Current),
        1 => Just(RunPick::Stale),
        1 => (0u64..8).prop_map(RunPick::Any),
    ]
}

fn suites() -> impl Strategy<Value = Vec<&'static str>> {
    prop_oneof![
        3 => Just(vec!["Dummy2"]),
        1 => vec(select(SUITES), 0..4),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => Just(Step::Start),
        1 => (suites(), suites(), dat()).prop_map(|(supported, expected, dat)| Step::Hello { supported, expected, dat }),
        1 => cause().prop_map(Step::PeerClose),
        1 => Just(Step::PeerDatExpired),
        2 => dat().prop_map(Step::PeerDat),
        1 => Just(Step::PeerReRa),
        1 => Just(Step::PeerRaProver),
        1 => Just(Step::PeerRaVerifier),
        10 => any::<bool>().prop_map(|lost| Step::PeerData { ack_lost: lost }),
        3 => any::<bool>().prop_map(|lost| Step::PeerResend { ack_lost: lost }),
        10 => Just(Step::PeerAckLast),
        3 => any::<bool>().prop_map(Step::RawData),
        3 => any::<bool>().prop_map(Step::RawAck),
        1 => (role(), run_pick()).prop_map(|(role, run)| Step::RaOutput(role, run)),
        5 => (role(), run_pick(), prop::bool::weighted(0.9)).prop_map(|(role, run, ok)| Step::RaFinished(role, run, ok)),
        4 => select(vec![Timer::Handshake, Timer::ProverHandshake, Timer::VerifierHandshake, Timer::Ack, Timer::Ra, Timer::Dat]).prop_map(Step::Timer),
        2 => (1u32..=6).prop_map(Step::AckTimeouts),
        10 => prop::bool::weighted(0.2).prop_map(|anyway| Step::Send { anyway }),
        1 => Just(Step::Close),
        1 => cause().prop_map(Step::Abort),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        prop::bool::weighted(0.8),
        prop_oneof![Just(0.666), Just(1.0), 0.001f64..=1.0],
        1usize..=4,
        // The endpoint refuses 0, but the machine takes it (it closes at the first ACK timeout).
        0u32..=4,
        vec(step(), 0..150),
    )
        .prop_map(
            |(hostile, handshake_first, dat_renewal_threshold, send_queue, max_resends, steps)| {
                Case {
                    hostile,
                    handshake_first,
                    dat_renewal_threshold,
                    send_queue,
                    max_resends,
                    steps,
                }
            },
        )
}

fn settings(case: &Case) -> Arc<Settings> {
    Arc::new(Settings {
        supported_ra: vec!["Dummy2".into(), "Dummy".into()],
        expected_ra: vec!["Dummy2".into(), "Dummy".into()],
        dat_renewal_threshold: case.dat_renewal_threshold,
        send_queue: case.send_queue,
        max_resends: case.max_resends,
        ..Settings::default()
    })
}

fn run(budget: &Budget) -> Outcome {
    fuzz(TARGET.name, budget, case(), check)
}

fn check(case: Case) -> Result<(), TestCaseError> {
    let mut harness = Harness::new(&case);
    let handshake = [
        Step::Start,
        Step::Hello {
            supported: vec!["Dummy2"],
            expected: vec!["Dummy2"],
            dat: Dat::Valid(None),
        },
        Step::RaFinished(RaRole::Prover, RunPick::Current, true),
        Step::RaFinished(RaRole::Verifier, RunPick::Current, true),
    ];
    let prefix = if case.handshake_first {
        &handshake[..]
    } else {
        &[]
    };
    for step in prefix.iter().chain(&case.steps) {
        harness.step(step)?;
    }
    Ok(())
}

/// What the peer has sent us, as an honest alternating-bit sender keeps it.
#[derive(Debug, Default)]
struct PeerSender {
    next_sequence: u64,
    bit: bool,
    /// Sent, not yet acknowledged.
    in_flight: Option<u64>,
}

/// One role's attestation as seen from outside: the run last started, and how it stands.
#[derive(Debug, Default, Clone, Copy)]
struct Attestation {
    run: Option<u64>,
    progress: Progress,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Not started, or (verifier) waiting for a renewed DAT before starting again.
    #[default]
    Waiting,
    Running,
    Succeeded,
}

/// What one input led to: the messages to transmit, then the timers it armed (with their delay)
/// or disarmed, then the events.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    Send(Message),
    SetTimer(Timer, Duration),
    CancelTimer(Timer),
    Event(Event),
}

/// Hands `input` to the machine at `now` and polls everything it produced.
fn drive(fsm: &mut Fsm, now: Instant, input: Input) -> Result<Vec<Action>, Refused> {
    let fired = match input {
        Input::Timer(timer) => Some(timer),
        _ => None,
    };
    // A timer handed in is spent; only a re-arm of it is news.
    let before = Timer::ALL.map(|timer| fsm.timer(timer).filter(|_| Some(timer) != fired));
    fsm.handle_input(now, input)?;
    let mut actions: Vec<Action> = std::iter::from_fn(|| fsm.poll_transmit())
        .map(Action::Send)
        .collect();
    for (timer, was) in Timer::ALL.into_iter().zip(before) {
        match (was, fsm.timer(timer)) {
            (_, Some(at)) if was != Some(at) => actions.push(Action::SetTimer(timer, at - now)),
            (Some(_), None) => actions.push(Action::CancelTimer(timer)),
            _ => {}
        }
    }
    actions.extend(std::iter::from_fn(|| fsm.poll_event()).map(Action::Event));
    Ok(actions)
}

struct Harness {
    fsm: Fsm,
    /// The time of the last input; every input comes a millisecond after the one before.
    now: Instant,
    hostile: bool,
    send_queue: u64,
    max_resends: u32,
    closed: bool,
    /// Close was requested while data was still undelivered.
    closing: bool,
    dat_accepted: bool,
    established: bool,
    prover: Attestation,
    verifier: Attestation,
    peer: PeerSender,
    /// Raw data payloads get unique tags, so that a delivery can be traced to its event.
    raw_count: u64,
    /// Honest peer messages delivered so far (they are delivered in order, so this is the next).
    delivered_from_peer: u64,
    last_delivered_bit: Option<bool>,
    // Our side.
    /// Messages the machine accepted.
    handed_in: u64,
    /// Messages handed in beyond the bound, each with its own payload so that one that leaves
    /// anyway is caught.
    dropped: u64,
    first_sends: u64,
    acked: u64,
    /// The IdscpData awaiting its ACK: (our message number, bit).
    outstanding: Option<(u64, bool)>,
    /// Times the ACK timer resent `outstanding`.
    resends: u32,
    next_send_bit: bool,
    /// The last IdscpData the peer got from us, for its ACK.
    peer_got: Option<bool>,
}

impl Harness {
    fn new(case: &Case) -> Self {
        Harness {
            fsm: Fsm::new(settings(case)),
            now: Instant::now(),
            hostile: case.hostile,
            send_queue: case.send_queue as u64,
            max_resends: case.max_resends,
            closed: false,
            closing: false,
            dat_accepted: false,
            established: false,
            prover: Attestation::default(),
            verifier: Attestation::default(),
            peer: PeerSender::default(),
            raw_count: 0,
            delivered_from_peer: 0,
            last_delivered_bit: None,
            handed_in: 0,
            dropped: 0,
            first_sends: 0,
            acked: 0,
            outstanding: None,
            resends: 0,
            next_send_bit: false,
            peer_got: None,
        }
    }

    fn attestation(&mut self, role: RaRole) -> &mut Attestation {
        match role {
            RaRole::Prover => &mut self.prover,
            RaRole::Verifier => &mut self.verifier,
        }
    }

    fn pick(&mut self, role: RaRole, pick: RunPick) -> u64 {
        let current = self.attestation(role).run.unwrap_or(0);
        match pick {
            RunPick::Current => current,
            RunPick::Stale => current.saturating_sub(1),
            RunPick::Any(run) => run,
        }
    }

    fn attested(&self) -> bool {
        self.dat_accepted
            && self.prover.progress == Progress::Succeeded
            && self.verifier.progress == Progress::Succeeded
    }

    /// Whether another message fits: while no close was requested, `send_queue` messages may
    /// wait behind the one awaiting its ACK (before the handshake, all of them wait).
    fn send_fits(&self) -> bool {
        !self.closing && self.handed_in - self.first_sends < self.send_queue
    }

    /// Turns a step into an event (or nothing, for steps that do not apply), feeds it, and checks.
    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        let mut received = None;
        let mut ack_lost = false;
        let event = match step {
            Step::Start => Input::Start {
                our_dat: Bytes::from_static(b"our DAT"),
            },
            Step::Hello {
                supported,
                expected,
                dat,
            } => Input::PeerHello {
                supported_ra: supported.iter().map(|s| s.to_string()).collect(),
                expected_ra: expected.iter().map(|s| s.to_string()).collect(),
                dat: dat_check(dat),
            },
            Step::PeerClose(cause) => Input::PeerClose {
                cause: *cause,
                message: "peer closes".into(),
            },
            Step::PeerDatExpired => Input::PeerDatExpired {
                our_dat: Bytes::from_static(b"our renewed DAT"),
            },
            Step::PeerDat(dat) => Input::PeerDat(dat_check(dat)),
            Step::PeerReRa => Input::PeerReRa,
            Step::PeerRaProver => Input::PeerRaProver(Bytes::from_static(b"proof")),
            Step::PeerRaVerifier => Input::PeerRaVerifier(Bytes::from_static(b"challenge")),
            Step::PeerData { ack_lost: lost } | Step::PeerResend { ack_lost: lost } => {
                let sequence = match (self.peer.in_flight, step) {
                    (Some(sequence), _) => sequence,
                    (None, Step::PeerData { .. }) => {
                        let sequence = self.peer.next_sequence;
                        self.peer.next_sequence += 1;
                        self.peer.in_flight = Some(sequence);
                        sequence
                    }
                    (None, _) => return Ok(()),
                };
                ack_lost = *lost;
                let data = Bytes::from(format!("peer {sequence}"));
                received = Some((data.clone(), self.peer.bit, Some(sequence)));
                Input::PeerData {
                    data,
                    bit: self.peer.bit,
                }
            }
            Step::PeerAckLast => match self.peer_got {
                Some(bit) => Input::PeerAck { bit },
                None => return Ok(()),
            },
            Step::RawData(_) | Step::RawAck(_) if !self.hostile => return Ok(()),
            Step::RawData(bit) => {
                self.raw_count += 1;
                let data = Bytes::from(format!("raw {}", self.raw_count));
                received = Some((data.clone(), *bit, None));
                Input::PeerData { data, bit: *bit }
            }
            Step::RawAck(bit) => Input::PeerAck { bit: *bit },
            Step::RaOutput(role, pick) => Input::RaOutput {
                role: *role,
                run: self.pick(*role, *pick),
                data: Bytes::from_static(b"ra"),
            },
            Step::RaFinished(role, pick, ok) => Input::RaFinished {
                role: *role,
                run: self.pick(*role, *pick),
                result: if *ok { Ok(()) } else { Err("failed".into()) },
            },
            Step::Timer(timer) => Input::Timer(*timer),
            Step::AckTimeouts(times) => {
                for _ in 0..*times {
                    self.step(&Step::Timer(Timer::Ack))?;
                }
                return Ok(());
            }
            Step::Send { anyway } => match self.fsm.can_send() {
                true => Input::Send(ours(self.handed_in)),
                // The connection would wait for room.
                false if !anyway => return Ok(()),
                false => {
                    self.dropped += 1;
                    Input::Send(Bytes::from(format!("dropped {}", self.dropped)))
                }
            },
            Step::Close => Input::Close,
            Step::Abort(cause) => Input::Abort {
                cause: *cause,
                message: "aborted".into(),
            },
        };
        let attested_before = self.attested();
        let state_before = self.fsm.state();
        let send_fits = self.send_fits();
        let takes_new_data = received
            .as_ref()
            .map(|(_, bit, _)| self.fsm.takes_new_data(*bit));
        self.now += Duration::from_millis(1);
        let actions = match drive(&mut self.fsm, self.now, event.clone()) {
            Ok(actions) => actions,
            Err(Refused::SendQueueFull) => {
                prop_assert!(
                    matches!(event, Input::Send(_)) && (!send_fits || self.closed),
                    "{event:?} refused as SendQueueFull"
                );
                Vec::new()
            }
            Err(Refused::Backlog) => {
                return Err(TestCaseError::fail(format!(
                    "{event:?} refused as a backlog although every output was polled"
                )))
            }
        };

        if self.closed {
            prop_assert!(actions.is_empty(), "a closed machine acted: {actions:?}");
            prop_assert_eq!(
                self.fsm.poll_timeout(),
                None,
                "a closed machine has a timer armed"
            );
            return Ok(());
        }
        // What the event itself settles, before the actions are read.
        let mut acknowledged = false;
        let mut resend_due = false;
        match (&event, step) {
            (Input::RaFinished { role, run, result }, _) => {
                let attestation = self.attestation(*role);
                if attestation.run == Some(*run)
                    && attestation.progress == Progress::Running
                    && result.is_ok()
                {
                    attestation.progress = Progress::Succeeded;
                }
            }
            (Input::Send(_), _) if send_fits => self.handed_in += 1,
            (Input::Send(_), _) => {
                prop_assert!(
                    actions.is_empty(),
                    "a send beyond the bound was acted on: {actions:?}"
                );
            }
            (Input::PeerAck { bit }, _)
                if self.outstanding.is_some_and(|(_, sent)| sent == *bit) =>
            {
                self.outstanding = None;
                self.acked += 1;
                self.next_send_bit = !bit;
                acknowledged = true;
            }
            (Input::Timer(Timer::Ack), _) if attested_before && self.outstanding.is_some() => {
                resend_due = true;
            }
            (Input::Timer(Timer::Ack), _) => {
                prop_assert!(
                    actions.is_empty(),
                    "an ACK timer with nothing to resend was acted on: {actions:?}"
                );
            }
            _ => {}
        }
        prop_assert_eq!(
            actions
                .iter()
                .filter(|action| **action == Action::Event(Event::Acknowledged))
                .count(),
            usize::from(acknowledged),
            "Acknowledged must be reported once for each ACK of our data: {:?}",
            actions
        );
        if resend_due {
            self.check_ack_timeout(&actions)?;
        }

        let mut delivered = Vec::new();
        let mut acks = Vec::new();
        // The input's events settle the model (a run started, the handshake done) before the
        // messages it transmitted are checked against it; its close comes last, as polled.
        let settles = |action: &Action| matches!(action, Action::Event(event) if !matches!(event, Event::Closed { .. }));
        let settling = actions
            .iter()
            .enumerate()
            .filter(|(_, action)| settles(action));
        let checked = actions
            .iter()
            .enumerate()
            .filter(|(_, action)| !settles(action));
        for (index, action) in settling.chain(checked) {
            match action {
                Action::Event(Event::StartRa { role, run, .. }) => {
                    *self.attestation(*role) = Attestation {
                        run: Some(*run),
                        progress: Progress::Running,
                    };
                }
                Action::Send(Message::IdscpDatExpired(_)) => {
                    self.verifier.progress = Progress::Waiting
                }
                Action::Event(Event::PeerDatAccepted) => self.dat_accepted = true,
                Action::Event(Event::Established) => {
                    prop_assert!(!self.established, "Established twice");
                    prop_assert!(
                        self.attested(),
                        "Established before both attestations succeeded: {:?} {:?}, DAT accepted {}",
                        self.prover,
                        self.verifier,
                        self.dat_accepted
                    );
                    self.established = true;
                }
                Action::Event(Event::Deliver(data)) => delivered.push(data.clone()),
                Action::Send(Message::IdscpAck(IdscpAck { alternating_bit })) => {
                    acks.push(*alternating_bit)
                }
                Action::Send(Message::IdscpData(IdscpData {
                    data,
                    alternating_bit,
                })) => {
                    self.our_data_sent(data, *alternating_bit)?;
                    prop_assert!(
                        actions[index..]
                            .iter()
                            .any(|later| matches!(later, Action::SetTimer(Timer::Ack, _))),
                        "our data went out without arming the ACK timer: {:?}",
                        actions
                    );
                }
                Action::Event(Event::Closed { cause, by_peer, .. }) => {
                    prop_assert_eq!(index, actions.len() - 1, "Closed is not the last action");
                    match (&event, by_peer) {
                        (Input::PeerClose { cause: theirs, .. }, true) => {
                            prop_assert_eq!(cause, theirs)
                        }
                        (_, false) => {
                            // The IdscpClose is the last message the input transmits.
                            let announced = actions.iter().rev().find_map(|action| match action {
                                Action::Send(message) => Some(message),
                                _ => None,
                            });
                            let expected_close = matches!(
                                announced,
                                Some(Message::IdscpClose(close))
                                    if close.cause_code == *cause as i32
                            );
                            prop_assert!(
                                expected_close,
                                "closing without telling the peer: {actions:?}"
                            );
                        }
                        (event, true) => {
                            return Err(TestCaseError::fail(format!("closed by peer on {event:?}")))
                        }
                    }
                    self.closed = true;
                }
                _ => {}
            }
        }
        if matches!(event, Input::PeerClose { .. }) {
            prop_assert!(self.closed, "the peer's close was not taken");
        }

        // Receiving.
        match received {
            Some((data, bit, sequence)) => {
                if attested_before {
                    prop_assert_eq!(
                        &acks,
                        &vec![bit],
                        "attested data must be ACKed once, with its bit"
                    );
                } else {
                    prop_assert!(
                        acks.is_empty() && delivered.is_empty(),
                        "data taken while not attested ({state_before:?}): acks {acks:?}, delivered {delivered:?}"
                    );
                }
                prop_assert!(
                    delivered.len() <= 1,
                    "one message delivered twice: {delivered:?}"
                );
                prop_assert_eq!(
                    takes_new_data,
                    Some(!delivered.is_empty()),
                    "takes_new_data({}) disagrees with the delivery",
                    bit
                );
                if let Some(got) = delivered.first() {
                    prop_assert_eq!(
                        got,
                        &data,
                        "delivered something other than the event's data"
                    );
                    prop_assert!(
                        self.established,
                        "data delivered before the handshake was done"
                    );
                    let expected_bit = !self.last_delivered_bit.unwrap_or(true);
                    prop_assert_eq!(
                        bit,
                        expected_bit,
                        "delivered a message with the bit of the one before (a duplicate)"
                    );
                    self.last_delivered_bit = Some(bit);
                }
                // Raw data from a hostile peer shifts the bit the machine expects, after which
                // the honest sender's messages may rightly be taken as new or as duplicates.
                if let Some(sequence) = sequence {
                    if !self.hostile && !delivered.is_empty() {
                        prop_assert_eq!(
                            sequence,
                            self.delivered_from_peer,
                            "honest peer's messages out of order or twice"
                        );
                        self.delivered_from_peer += 1;
                    }
                    if !acks.is_empty() && !ack_lost {
                        if !self.hostile {
                            prop_assert!(
                                sequence < self.delivered_from_peer,
                                "ACKed message {sequence} before delivering it"
                            );
                        }
                        self.peer.in_flight = None;
                        self.peer.bit = !self.peer.bit;
                    }
                }
            }
            None => {
                prop_assert!(
                    delivered.is_empty(),
                    "delivered without data from the peer: {delivered:?}"
                );
                prop_assert!(
                    acks.is_empty(),
                    "ACKed without data from the peer: {acks:?}"
                );
            }
        }

        if self.closed {
            return Ok(());
        }
        if matches!(event, Input::Close) {
            self.closing = true;
        }
        let undelivered = self.fsm.undelivered() as u64;
        prop_assert_eq!(
            undelivered,
            self.handed_in - self.acked,
            "undelivered() does not count what was handed in and not ACKed"
        );
        prop_assert!(
            undelivered <= self.send_queue + 1,
            "{} messages held, bound {} waiting plus the one awaiting its ACK",
            undelivered,
            self.send_queue
        );
        prop_assert_eq!(
            self.fsm.can_send(),
            self.send_fits(),
            "can_send() disagrees with the model: {} handed in, {} sent, closing {}",
            self.handed_in,
            self.first_sends,
            self.closing
        );
        // (While re-attesting, the close waits for the attestation or the handshake timer.)
        if self.closing && self.attested() {
            prop_assert!(
                undelivered > 0,
                "a requested close did not happen once all was delivered"
            );
        }
        let state = self.fsm.state();
        prop_assert_eq!(
            matches!(state, State::Established | State::WaitForAck),
            self.attested(),
            "state {:?} disagrees with the attestations seen: {:?} {:?}",
            state,
            self.prover,
            self.verifier
        );
        prop_assert_eq!(
            state == State::WaitForAck,
            self.attested() && self.outstanding.is_some(),
            "state {:?} disagrees with our data awaiting an ACK: {:?}",
            state,
            self.outstanding
        );
        Ok(())
    }

    /// The ACK timer fired while our data awaited its ACK: a resend below the limit, the close
    /// with TIMEOUT at it.
    fn check_ack_timeout(&mut self, actions: &[Action]) -> Result<(), TestCaseError> {
        let closed = actions.iter().find_map(|action| match action {
            Action::Event(Event::Closed { cause, .. }) => Some(*cause),
            _ => None,
        });
        let resent = actions
            .iter()
            .filter(|action| matches!(action, Action::Send(Message::IdscpData(_))))
            .count();
        if self.resends < self.max_resends {
            prop_assert!(
                closed.is_none() && resent == 1,
                "resend {} of at most {} must resend once and not close: {:?}",
                self.resends + 1,
                self.max_resends,
                actions
            );
            self.resends += 1;
        } else {
            prop_assert!(
                closed == Some(CloseCause::Timeout) && resent == 0,
                "after {} unanswered resends the next ACK timeout must close with TIMEOUT: {:?}",
                self.resends,
                actions
            );
        }
        Ok(())
    }

    /// One of our IdscpData left: a resend of the outstanding one, or the next one in turn.
    fn our_data_sent(&mut self, data: &Bytes, bit: bool) -> Result<(), TestCaseError> {
        prop_assert!(
            self.established && self.attested(),
            "sent data while not attested"
        );
        match self.outstanding {
            Some((number, sent_bit)) => {
                prop_assert_eq!(data, &ours(number), "a resend changed the data");
                prop_assert_eq!(bit, sent_bit, "a resend changed the bit");
            }
            None => {
                prop_assert_eq!(data, &ours(self.first_sends), "our messages out of order");
                prop_assert_eq!(
                    bit,
                    self.next_send_bit,
                    "the bit flipped without a matching ACK"
                );
                self.outstanding = Some((self.first_sends, bit));
                self.first_sends += 1;
                self.resends = 0;
            }
        }
        self.peer_got = Some(bit);
        Ok(())
    }
}

fn ours(number: u64) -> Bytes {
    Bytes::from(format!("ours {number}"))
}

fn dat_check(dat: &Dat) -> DatCheck {
    match dat {
        Dat::Valid(expires_in) => DatCheck::Valid {
            expires_in: *expires_in,
        },
        Dat::Invalid => DatCheck::Invalid("invalid".into()),
    }
}

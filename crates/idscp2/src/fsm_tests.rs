//! Every transition of spec section 4 and 5, driven by inputs and checked by what the machine
//! then transmits, arms and reports.

use std::ops::{Deref, DerefMut};

use super::*;

const MS: Duration = Duration::from_millis(1);

/// What one input led to, as a list: the messages to transmit, then the timers it armed (with
/// their delay) or disarmed, then the events, each in the order the machine produced them.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    Send(Message),
    SetTimer(Timer, Duration),
    CancelTimer(Timer),
    Event(Event),
}

/// A state machine driven as a connection drives it: every input at a fresh `now` (a
/// millisecond after the last), every output polled right after.
struct Driven {
    fsm: Fsm,
    now: Instant,
}

impl Driven {
    fn new(config: Arc<Settings>) -> Self {
        Driven {
            fsm: Fsm::new(config),
            now: Instant::now(),
        }
    }

    /// Hands `input` in and returns what it led to; an input the machine refuses leads to
    /// nothing.
    fn handle(&mut self, input: Input) -> Vec<Action> {
        self.try_handle(input).unwrap_or_default()
    }

    fn try_handle(&mut self, input: Input) -> Result<Vec<Action>, Refused> {
        self.now += MS;
        let mut before = Timer::ALL.map(|timer| self.fsm.timer(timer));
        if let Input::Timer(timer) = &input {
            // Firing spends the timer; only a re-arm is news.
            before[timer_index(*timer)] = None;
        }
        self.fsm.handle_input(self.now, input)?;
        let mut actions: Vec<Action> = std::iter::from_fn(|| self.fsm.poll_transmit())
            .map(Action::Send)
            .collect();
        for (timer, was) in Timer::ALL.into_iter().zip(before) {
            match (was, self.fsm.timer(timer)) {
                (_, Some(at)) if was != Some(at) => {
                    actions.push(Action::SetTimer(timer, at - self.now))
                }
                (Some(_), None) => actions.push(Action::CancelTimer(timer)),
                _ => {}
            }
        }
        actions.extend(std::iter::from_fn(|| self.fsm.poll_event()).map(Action::Event));
        Ok(actions)
    }
}

impl Deref for Driven {
    type Target = Fsm;

    fn deref(&self) -> &Fsm {
        &self.fsm
    }
}

impl DerefMut for Driven {
    fn deref_mut(&mut self) -> &mut Fsm {
        &mut self.fsm
    }
}

fn config() -> Arc<Settings> {
    Arc::new(Settings {
        supported_ra: vec!["Dummy2".into(), "Dummy".into()],
        expected_ra: vec!["Dummy2".into(), "Dummy".into()],
        handshake_timeout: 5000 * MS,
        ack_timeout: 200 * MS,
        ra_interval: 3_600_000 * MS,
        dat_renewal_threshold: 0.5,
        ..Settings::default()
    })
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn valid(expires_in: Option<Duration>) -> DatCheck {
    DatCheck::Valid { expires_in }
}

fn hello(supported: &[&str], expected: &[&str], dat: DatCheck) -> Input {
    Input::PeerHello {
        supported_ra: strings(supported),
        expected_ra: strings(expected),
        dat,
    }
}

fn started() -> Driven {
    let mut fsm = Driven::new(config());
    fsm.handle(Input::Start {
        our_dat: Bytes::from_static(b"our-dat"),
    });
    fsm
}

/// The run id the machine assigned to the driver it started for `wanted`.
fn run_of(actions: &[Action], wanted: RaRole) -> u64 {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Event(Event::StartRa { role, run, .. }) if *role == wanted => Some(*run),
            _ => None,
        })
        .expect("driver started")
}

/// The run ids of a prover and a verifier started together.
fn runs(actions: &[Action]) -> (u64, u64) {
    (
        run_of(actions, RaRole::Prover),
        run_of(actions, RaRole::Verifier),
    )
}

fn finish(fsm: &mut Driven, role: RaRole, run: u64) -> Vec<Action> {
    fsm.handle(Input::RaFinished {
        role,
        run,
        result: Ok(()),
    })
}

fn established_with(dat: DatCheck) -> Driven {
    let mut fsm = started();
    let actions = fsm.handle(hello(&["Dummy2"], &["Dummy2"], dat));
    let (prover, verifier) = runs(&actions);
    finish(&mut fsm, RaRole::Prover, prover);
    let actions = finish(&mut fsm, RaRole::Verifier, verifier);
    assert!(actions.contains(&Action::Event(Event::Established)));
    assert_eq!(fsm.state(), State::Established);
    fsm
}

fn established() -> Driven {
    established_with(valid(None))
}

fn sent(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn data(bytes: &'static [u8], bit: bool) -> Message {
    Message::IdscpData(IdscpData {
        data: Bytes::from_static(bytes),
        alternating_bit: bit,
    })
}

fn ack(bit: bool) -> Message {
    Message::IdscpAck(IdscpAck {
        alternating_bit: bit,
    })
}

fn assert_closed_with(actions: &[Action], expected: CloseCause) {
    match sent(actions).last() {
        Some(Message::IdscpClose(close)) => assert_eq!(close.cause_code, expected as i32),
        other => panic!("expected an IdscpClose, got {other:?}"),
    }
    assert!(
        matches!(actions.last(), Some(Action::Event(Event::Closed { cause, by_peer: false, .. })) if *cause == expected),
        "{actions:?}"
    );
}

#[test]
fn start_sends_hello_with_dat_and_suites_and_arms_the_handshake_timer() {
    let mut fsm = Driven::new(config());
    assert_eq!(fsm.state(), State::Closed);
    let actions = fsm.handle(Input::Start {
        our_dat: Bytes::from_static(b"T"),
    });
    assert_eq!(
        actions,
        vec![
            Action::Send(Message::IdscpHello(IdscpHello {
                version: 2,
                dynamic_attribute_token: Some(IdscpDat {
                    token: Bytes::from_static(b"T")
                }),
                supported_ra_suite: strings(&["Dummy2", "Dummy"]),
                expected_ra_suite: strings(&["Dummy2", "Dummy"]),
            })),
            Action::SetTimer(Timer::Handshake, 5000 * MS),
        ]
    );
    assert_eq!(fsm.state(), State::WaitForHello);
}

#[test]
fn prover_follows_the_peers_order_and_verifier_follows_ours() {
    let mut fsm = started();
    let actions = fsm.handle(hello(
        &["Dummy", "Dummy2"],
        &["Dummy", "Dummy2"],
        valid(None),
    ));
    let suites: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(Event::StartRa { role, suite, .. }) => Some((*role, suite.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        suites,
        vec![(RaRole::Prover, "Dummy"), (RaRole::Verifier, "Dummy2")]
    );
    assert!(actions.contains(&Action::CancelTimer(Timer::Handshake)));
    assert!(actions.contains(&Action::Event(Event::PeerDatAccepted)));
    assert!(actions.contains(&Action::SetTimer(Timer::ProverHandshake, 5000 * MS)));
    assert!(actions.contains(&Action::SetTimer(Timer::VerifierHandshake, 5000 * MS)));
    assert_eq!(fsm.state(), State::WaitForRa);
}

#[test]
fn no_prover_match_closes_with_cause_4() {
    let mut fsm = started();
    let actions = fsm.handle(hello(&["Dummy2"], &["TPM2d"], valid(None)));
    assert_closed_with(&actions, CloseCause::NoRaMechanismMatchProver);
    assert_eq!(fsm.state(), State::Closed);
}

#[test]
fn no_verifier_match_closes_with_cause_5() {
    let mut fsm = started();
    let actions = fsm.handle(hello(&["TPM2d"], &["Dummy2"], valid(None)));
    assert_closed_with(&actions, CloseCause::NoRaMechanismMatchVerifier);
}

#[test]
fn invalid_dat_in_hello_closes_with_no_valid_dat() {
    let mut fsm = started();
    let actions = fsm.handle(hello(
        &["Dummy2"],
        &["Dummy2"],
        DatCheck::Invalid("expired".into()),
    ));
    assert_closed_with(&actions, CloseCause::NoValidDat);
    assert_eq!(
        sent(&actions).last(),
        Some(&Message::IdscpClose(IdscpClose {
            cause_code: CloseCause::NoValidDat as i32,
            cause_msg: "No valid DAT".into()
        }))
    );
    assert!(!actions.contains(&Action::Event(Event::PeerDatAccepted)));
}

#[test]
fn a_dat_with_expiry_arms_the_dat_timer_at_the_threshold() {
    let mut fsm = started();
    let actions = fsm.handle(hello(&["Dummy2"], &["Dummy2"], valid(Some(1000 * MS))));
    assert!(actions.contains(&Action::SetTimer(Timer::Dat, 500 * MS)));
}

#[test]
fn silent_peer_times_out_waiting_for_hello() {
    let mut fsm = started();
    let actions = fsm.handle(Input::Timer(Timer::Handshake));
    assert_closed_with(&actions, CloseCause::Timeout);
}

#[test]
fn hanging_prover_or_verifier_times_out() {
    for timer in [Timer::ProverHandshake, Timer::VerifierHandshake] {
        let mut fsm = started();
        fsm.handle(hello(&["Dummy2"], &["Dummy2"], valid(None)));
        let actions = fsm.handle(Input::Timer(timer));
        assert_closed_with(&actions, CloseCause::Timeout);
    }
}

#[test]
fn handshake_timers_that_fire_after_their_phase_are_ignored() {
    let mut fsm = established();
    for timer in [
        Timer::Handshake,
        Timer::ProverHandshake,
        Timer::VerifierHandshake,
    ] {
        assert_eq!(fsm.handle(Input::Timer(timer)), vec![]);
    }
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn ra_messages_are_routed_between_peer_and_drivers() {
    let mut fsm = started();
    let actions = fsm.handle(hello(&["Dummy"], &["Dummy"], valid(None)));
    let (prover, verifier) = runs(&actions);
    assert_eq!(
        fsm.handle(Input::PeerRaProver(Bytes::from_static(b"p"))),
        vec![Action::Event(Event::ToRa {
            role: RaRole::Verifier,
            data: Bytes::from_static(b"p")
        })]
    );
    assert_eq!(
        fsm.handle(Input::PeerRaVerifier(Bytes::from_static(b"v"))),
        vec![Action::Event(Event::ToRa {
            role: RaRole::Prover,
            data: Bytes::from_static(b"v")
        })]
    );
    assert_eq!(
        sent(&fsm.handle(Input::RaOutput {
            role: RaRole::Prover,
            run: prover,
            data: Bytes::from_static(b"test")
        })),
        vec![Message::IdscpRaProver(IdscpRaProver {
            data: Bytes::from_static(b"test")
        })]
    );
    assert_eq!(
        sent(&fsm.handle(Input::RaOutput {
            role: RaRole::Verifier,
            run: verifier,
            data: Bytes::from_static(b"test")
        })),
        vec![Message::IdscpRaVerifier(IdscpRaVerifier {
            data: Bytes::from_static(b"test")
        })]
    );
    // A superseded run speaks no more.
    assert_eq!(
        fsm.handle(Input::RaOutput {
            role: RaRole::Prover,
            run: prover + 100,
            data: Bytes::new()
        }),
        vec![]
    );
}

#[test]
fn ra_messages_for_a_finished_driver_are_dropped() {
    let mut fsm = established();
    assert_eq!(fsm.handle(Input::PeerRaProver(Bytes::new())), vec![]);
    assert_eq!(fsm.handle(Input::PeerRaVerifier(Bytes::new())), vec![]);
}

#[test]
fn failing_prover_and_verifier_close_with_their_causes() {
    for (role, cause) in [
        (RaRole::Prover, CloseCause::RaProverFailed),
        (RaRole::Verifier, CloseCause::RaVerifierFailed),
    ] {
        let mut fsm = started();
        let (prover, verifier) = runs(&fsm.handle(hello(&["Dummy2"], &["Dummy2"], valid(None))));
        let run = if role == RaRole::Prover {
            prover
        } else {
            verifier
        };
        let actions = fsm.handle(Input::RaFinished {
            role,
            run,
            result: Err("bad quote".into()),
        });
        assert_closed_with(&actions, cause);
    }
}

#[test]
fn established_once_both_drivers_succeed_in_either_order() {
    let mut fsm = started();
    let (prover, verifier) = runs(&fsm.handle(hello(&["Dummy2"], &["Dummy2"], valid(None))));
    let actions = finish(&mut fsm, RaRole::Verifier, verifier);
    assert!(actions.contains(&Action::SetTimer(Timer::Ra, 3_600_000 * MS)));
    assert!(actions.contains(&Action::CancelTimer(Timer::VerifierHandshake)));
    assert!(!actions.contains(&Action::Event(Event::Established)));
    assert_eq!(fsm.state(), State::WaitForRaProver);
    let actions = finish(&mut fsm, RaRole::Prover, prover);
    assert!(actions.contains(&Action::Event(Event::Established)));
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn data_sent_before_establishment_waits_and_starts_with_bit_zero() {
    let mut fsm = started();
    assert_eq!(fsm.handle(Input::Send(Bytes::from_static(b"a"))), vec![]);
    let (prover, verifier) = runs(&fsm.handle(hello(&["Dummy2"], &["Dummy2"], valid(None))));
    finish(&mut fsm, RaRole::Prover, prover);
    let actions = finish(&mut fsm, RaRole::Verifier, verifier);
    assert_eq!(sent(&actions), vec![data(b"a", false)]);
    assert!(actions.contains(&Action::SetTimer(Timer::Ack, 200 * MS)));
    assert_eq!(fsm.state(), State::WaitForAck);
}

#[test]
fn one_message_in_flight_and_the_bit_alternates() {
    let mut fsm = established();
    assert_eq!(
        sent(&fsm.handle(Input::Send(Bytes::from_static(b"a")))),
        vec![data(b"a", false)]
    );
    assert_eq!(fsm.handle(Input::Send(Bytes::from_static(b"b"))), vec![]);
    assert_eq!(fsm.undelivered(), 2);
    // An ACK for the other bit is stale and changes nothing.
    assert_eq!(fsm.handle(Input::PeerAck { bit: true }), vec![]);
    let actions = fsm.handle(Input::PeerAck { bit: false });
    // The ACK timer of "a" is done with; the one now running is a fresh one, for "b".
    assert!(actions.contains(&Action::SetTimer(Timer::Ack, 200 * MS)));
    assert_eq!(sent(&actions), vec![data(b"b", true)]);
    let actions = fsm.handle(Input::PeerAck { bit: true });
    assert_eq!(sent(&actions), vec![]);
    assert_eq!(fsm.state(), State::Established);
    assert_eq!(
        sent(&fsm.handle(Input::Send(Bytes::from_static(b"c")))),
        vec![data(b"c", false)]
    );
}

#[test]
fn timers_armed_by_a_send_count_from_when_the_write_finished() {
    let mut fsm = established();
    let sent_at = fsm.now + MS;
    fsm.handle(Input::Send(Bytes::from_static(b"a")));
    assert_eq!(fsm.timer(Timer::Ack), Some(sent_at + 200 * MS));
    // The peer held the write up for a second: the ACK timer starts after it.
    let written = sent_at + Duration::from_secs(1);
    fsm.transmitted(written);
    assert_eq!(fsm.timer(Timer::Ack), Some(written + 200 * MS));
    // Only the timers of that input move, and only once.
    fsm.transmitted(written + Duration::from_secs(1));
    assert_eq!(fsm.timer(Timer::Ack), Some(written + 200 * MS));
}

#[test]
fn ack_timeout_resends_the_same_message() {
    let mut fsm = established();
    fsm.handle(Input::Send(Bytes::from_static(b"a")));
    let actions = fsm.handle(Input::Timer(Timer::Ack));
    assert_eq!(sent(&actions), vec![data(b"a", false)]);
    assert!(actions.contains(&Action::SetTimer(Timer::Ack, 200 * MS)));
    // Once acknowledged, a late timer sends nothing.
    fsm.handle(Input::PeerAck { bit: false });
    assert_eq!(fsm.handle(Input::Timer(Timer::Ack)), vec![]);
}

#[test]
fn received_data_is_acked_and_delivered_once() {
    let mut fsm = established();
    let actions = fsm.handle(Input::PeerData {
        data: Bytes::from_static(b"x"),
        bit: false,
    });
    assert_eq!(
        actions,
        vec![
            Action::Send(ack(false)),
            Action::Event(Event::Deliver(Bytes::from_static(b"x")))
        ]
    );
    // The peer missed our ACK and resends: ACK again, deliver nothing.
    let actions = fsm.handle(Input::PeerData {
        data: Bytes::from_static(b"x"),
        bit: false,
    });
    assert_eq!(actions, vec![Action::Send(ack(false))]);
    let actions = fsm.handle(Input::PeerData {
        data: Bytes::from_static(b"y"),
        bit: true,
    });
    assert_eq!(
        actions,
        vec![
            Action::Send(ack(true)),
            Action::Event(Event::Deliver(Bytes::from_static(b"y")))
        ]
    );
}

#[test]
fn data_during_attestation_is_dropped_unacked() {
    let mut fsm = started();
    fsm.handle(hello(&["Dummy2"], &["Dummy2"], valid(None)));
    let event = Input::PeerData {
        data: Bytes::from_static(b"x"),
        bit: false,
    };
    assert_eq!(fsm.handle(event), vec![]);
}

#[test]
fn ra_timer_re_attests_the_peer_and_resends_data_in_flight_afterwards() {
    let mut fsm = established();
    fsm.handle(Input::Send(Bytes::from_static(b"a")));
    let actions = fsm.handle(Input::Timer(Timer::Ra));
    assert!(matches!(&sent(&actions)[..], [Message::IdscpReRa(_)]));
    let verifier = run_of(&actions, RaRole::Verifier);
    assert_eq!(fsm.state(), State::WaitForRaVerifier);
    // Neither the ack timer nor new data go anywhere while re-attesting.
    assert_eq!(fsm.handle(Input::Timer(Timer::Ack)), vec![]);
    let actions = finish(&mut fsm, RaRole::Verifier, verifier);
    assert!(!actions.contains(&Action::Event(Event::Established)));
    assert_eq!(sent(&actions), vec![data(b"a", false)]);
    assert_eq!(fsm.state(), State::WaitForAck);
}

#[test]
fn peer_re_ra_restarts_our_prover() {
    let mut fsm = established();
    let actions = fsm.handle(Input::PeerReRa);
    assert!(matches!(
        &actions[..],
        [
            Action::SetTimer(Timer::ProverHandshake, _),
            Action::Event(Event::StartRa {
                role: RaRole::Prover,
                ..
            }),
        ]
    ));
    assert_eq!(fsm.state(), State::WaitForRaProver);
}

#[test]
fn peer_dat_expired_gets_our_dat_and_restarts_our_prover() {
    let mut fsm = established();
    let actions = fsm.handle(Input::PeerDatExpired {
        our_dat: Bytes::from_static(b"fresh"),
    });
    assert_eq!(
        sent(&actions),
        vec![Message::IdscpDat(IdscpDat {
            token: Bytes::from_static(b"fresh")
        })]
    );
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Event(Event::StartRa {
            role: RaRole::Prover,
            ..
        })
    )));
    assert_eq!(fsm.state(), State::WaitForRaProver);
}

#[test]
fn dat_timer_asks_for_a_new_dat_then_re_verifies() {
    let mut fsm = established_with(valid(Some(1000 * MS)));
    let actions = fsm.handle(Input::Timer(Timer::Dat));
    assert_eq!(
        sent(&actions),
        vec![Message::IdscpDatExpired(IdscpDatExpired {})]
    );
    assert!(actions.contains(&Action::SetTimer(Timer::Handshake, 5000 * MS)));
    assert_eq!(fsm.state(), State::WaitForDatAndRaVerifier);
    // Data waits meanwhile.
    assert_eq!(fsm.handle(Input::Send(Bytes::from_static(b"a"))), vec![]);
    let actions = fsm.handle(Input::PeerDat(valid(Some(2000 * MS))));
    assert!(actions.contains(&Action::Event(Event::PeerDatAccepted)));
    assert!(actions.contains(&Action::CancelTimer(Timer::Handshake)));
    assert!(actions.contains(&Action::SetTimer(Timer::Dat, 1000 * MS)));
    let verifier = run_of(&actions, RaRole::Verifier);
    assert_eq!(fsm.state(), State::WaitForRaVerifier);
    let actions = finish(&mut fsm, RaRole::Verifier, verifier);
    assert_eq!(sent(&actions), vec![data(b"a", false)]);
}

#[test]
fn dat_timer_during_our_own_proving_waits_for_dat_and_ra() {
    let mut fsm = established_with(valid(Some(1000 * MS)));
    fsm.handle(Input::PeerReRa);
    fsm.handle(Input::Timer(Timer::Dat));
    assert_eq!(fsm.state(), State::WaitForDatAndRa);
}

#[test]
fn dat_timer_stops_a_running_verifier() {
    let mut fsm = established_with(valid(Some(1000 * MS)));
    fsm.handle(Input::Timer(Timer::Ra));
    let actions = fsm.handle(Input::Timer(Timer::Dat));
    assert!(actions.contains(&Action::Event(Event::StopRa(RaRole::Verifier))));
    assert!(actions.contains(&Action::CancelTimer(Timer::VerifierHandshake)));
}

#[test]
fn invalid_renewed_dat_closes_with_no_valid_dat() {
    let mut fsm = established_with(valid(Some(1000 * MS)));
    fsm.handle(Input::Timer(Timer::Dat));
    let actions = fsm.handle(Input::PeerDat(DatCheck::Invalid("wrong issuer".into())));
    assert_closed_with(&actions, CloseCause::NoValidDat);
}

#[test]
fn no_renewed_dat_in_time_closes_with_timeout() {
    let mut fsm = established_with(valid(Some(1000 * MS)));
    fsm.handle(Input::Timer(Timer::Dat));
    let actions = fsm.handle(Input::Timer(Timer::Handshake));
    assert_closed_with(&actions, CloseCause::Timeout);
}

#[test]
fn unsolicited_dat_and_second_hello_are_ignored() {
    let mut fsm = established();
    assert_eq!(
        fsm.handle(Input::PeerDat(DatCheck::Invalid("x".into()))),
        vec![]
    );
    assert_eq!(
        fsm.handle(hello(&["Dummy2"], &["Dummy2"], valid(None))),
        vec![]
    );
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn peer_close_ends_without_an_answer_in_any_state() {
    let close = || Input::PeerClose {
        cause: CloseCause::Error,
        message: "bye".into(),
    };
    for mut fsm in [started(), established()] {
        let actions = fsm.handle(close());
        // Whatever timers were running are disarmed: nothing is due on a closed connection.
        let (disarmed, rest): (Vec<_>, Vec<_>) = actions
            .into_iter()
            .partition(|action| matches!(action, Action::CancelTimer(_)));
        assert!(!disarmed.is_empty());
        assert_eq!(fsm.poll_timeout(), None);
        assert_eq!(
            rest,
            vec![Action::Event(Event::Closed {
                cause: CloseCause::Error,
                message: "bye".into(),
                by_peer: true
            })]
        );
        assert!(fsm.is_closed());
        // Nothing happens after the end.
        assert_eq!(fsm.handle(Input::Send(Bytes::from_static(b"late"))), vec![]);
        assert_eq!(fsm.handle(Input::Timer(Timer::Handshake)), vec![]);
    }
}

#[test]
fn close_drains_queued_data_before_user_shutdown() {
    let mut fsm = established();
    fsm.handle(Input::Send(Bytes::from_static(b"a")));
    fsm.handle(Input::Send(Bytes::from_static(b"b")));
    let actions = fsm.handle(Input::Close);
    assert_eq!(actions, vec![Action::SetTimer(Timer::Handshake, 5000 * MS)]);
    // Sends after the close request are refused.
    assert_eq!(fsm.handle(Input::Send(Bytes::from_static(b"c"))), vec![]);
    assert_eq!(
        sent(&fsm.handle(Input::PeerAck { bit: false })),
        vec![data(b"b", true)]
    );
    let actions = fsm.handle(Input::PeerAck { bit: true });
    assert_closed_with(&actions, CloseCause::UserShutdown);
}

#[test]
fn close_with_nothing_queued_is_immediate() {
    let mut fsm = established();
    assert_closed_with(&fsm.handle(Input::Close), CloseCause::UserShutdown);
}

#[test]
fn a_peer_that_never_acks_cannot_hold_a_close_forever() {
    let mut fsm = established();
    fsm.handle(Input::Send(Bytes::from_static(b"a")));
    fsm.handle(Input::Close);
    assert_closed_with(
        &fsm.handle(Input::Timer(Timer::Handshake)),
        CloseCause::Timeout,
    );
}

#[test]
fn abort_tells_the_peer_the_cause() {
    let mut fsm = established();
    let actions = fsm.handle(Input::Abort {
        cause: CloseCause::Error,
        message: "malformed frame".into(),
    });
    assert_closed_with(&actions, CloseCause::Error);
}

fn bounded(send_queue: usize, max_resends: u32) -> Driven {
    let mut fsm = established();
    fsm.config = Arc::new(Settings {
        send_queue,
        max_resends,
        ..(*fsm.config).clone()
    });
    fsm
}

#[test]
fn the_send_queue_is_bounded_and_says_when_it_is_full() {
    let mut fsm = bounded(2, 25);
    for (i, payload) in [&b"a"[..], b"b", b"c"].into_iter().enumerate() {
        assert!(fsm.can_send(), "message {i} fits");
        fsm.handle(Input::Send(Bytes::from_static(payload)));
    }
    // One awaits its ACK, two wait behind it: full.
    assert!(!fsm.can_send());
    assert_eq!(fsm.undelivered(), 3);
    assert_eq!(
        fsm.try_handle(Input::Send(Bytes::from_static(b"d"))),
        Err(Refused::SendQueueFull)
    );
    assert_eq!(fsm.undelivered(), 3, "a send beyond the bound is not taken");
    let actions = fsm.handle(Input::PeerAck { bit: false });
    assert!(actions.contains(&Action::Event(Event::Acknowledged)));
    assert_eq!(sent(&actions), vec![data(b"b", true)]);
    assert!(fsm.can_send());
}

#[test]
fn each_ack_of_our_data_is_reported_once() {
    let mut fsm = established();
    fsm.handle(Input::Send(Bytes::from_static(b"a")));
    let acknowledged = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| **a == Action::Event(Event::Acknowledged))
            .count()
    };
    assert_eq!(acknowledged(&fsm.handle(Input::PeerAck { bit: false })), 1);
    // A duplicate ACK acknowledges nothing more.
    assert_eq!(acknowledged(&fsm.handle(Input::PeerAck { bit: false })), 0);
}

#[test]
fn resends_are_bounded_then_the_peer_is_closed_with_timeout() {
    let mut fsm = bounded(4, 3);
    fsm.handle(Input::Send(Bytes::from_static(b"a")));
    for _ in 0..3 {
        let actions = fsm.handle(Input::Timer(Timer::Ack));
        assert_eq!(sent(&actions), vec![data(b"a", false)]);
    }
    let actions = fsm.handle(Input::Timer(Timer::Ack));
    assert_closed_with(&actions, CloseCause::Timeout);
    match sent(&actions).last() {
        Some(Message::IdscpClose(close)) => assert_eq!(
            close.cause_msg,
            "Peer did not acknowledge our data after 3 resends"
        ),
        other => panic!("expected an IdscpClose, got {other:?}"),
    }
}

#[test]
fn an_ack_starts_the_resend_count_afresh_for_the_next_message() {
    let mut fsm = bounded(4, 2);
    fsm.handle(Input::Send(Bytes::from_static(b"a")));
    fsm.handle(Input::Send(Bytes::from_static(b"b")));
    fsm.handle(Input::Timer(Timer::Ack));
    fsm.handle(Input::Timer(Timer::Ack));
    fsm.handle(Input::PeerAck { bit: false });
    for _ in 0..2 {
        let actions = fsm.handle(Input::Timer(Timer::Ack));
        assert_eq!(sent(&actions), vec![data(b"b", true)]);
    }
    assert!(!fsm.is_closed());
}

#[test]
fn new_data_is_told_apart_from_resends_and_from_data_during_attestation() {
    assert!(!started().takes_new_data(false), "not attested yet");
    let mut fsm = established();
    assert!(fsm.takes_new_data(false));
    assert!(!fsm.takes_new_data(true));
    fsm.handle(Input::PeerData {
        data: Bytes::from_static(b"x"),
        bit: false,
    });
    assert!(!fsm.takes_new_data(false), "a resend of what was delivered");
    assert!(fsm.takes_new_data(true));
}

#[test]
fn inputs_are_refused_while_too_many_outputs_wait_unpolled() {
    let mut driven = established();
    let now = driven.now;
    let fsm = &mut driven.fsm;
    let mut bit = false;
    let mut taken = 0;
    // Every new data message adds an ACK to transmit and a delivery; nobody polls them.
    let refused = loop {
        let input = Input::PeerData {
            data: Bytes::from_static(b"x"),
            bit,
        };
        match fsm.handle_input(now, input) {
            Ok(()) => taken += 1,
            Err(refused) => break refused,
        }
        bit = !bit;
        assert!(taken <= OUTPUT_BACKLOG, "the backlog grows without bound");
    };
    assert_eq!(refused, Refused::Backlog);
    assert_eq!(taken, OUTPUT_BACKLOG / 2 + 1);
    // Polling makes room again, and what was refused had no effect: the same bit is still new.
    while fsm.poll_transmit().is_some() {}
    while fsm.poll_event().is_some() {}
    let input = Input::PeerData {
        data: Bytes::from_static(b"x"),
        bit,
    };
    assert_eq!(fsm.handle_input(now, input), Ok(()));
    assert_eq!(
        fsm.poll_event(),
        Some(Event::Deliver(Bytes::from_static(b"x")))
    );
}

#[test]
fn poll_timeout_names_the_timer_due_first() {
    let mut fsm = started();
    let now = fsm.now;
    assert_eq!(
        fsm.poll_timeout(),
        Some((Timer::Handshake, now + 5000 * MS))
    );
    let actions = fsm.handle(hello(&["Dummy2"], &["Dummy2"], valid(Some(1000 * MS))));
    let now = fsm.now;
    assert!(actions.contains(&Action::CancelTimer(Timer::Handshake)));
    // The DAT timer (half of 1 s) is due before the attestation timeouts (5 s).
    assert_eq!(fsm.poll_timeout(), Some((Timer::Dat, now + 500 * MS)));
}

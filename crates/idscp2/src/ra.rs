//! Remote attestation (RA) drivers.
//!
//! During the IDSCP2 handshake each side runs one *prover* (proves its own state to the peer) and one
//! *verifier* (checks the peer's proof), chosen from the suites both sides advertise in their Hello.
//! A driver is a task that exchanges opaque messages with its counterpart on the peer through an
//! [`RaChannel`] and finishes with success or failure; the state machine only routes its messages
//! and waits for the verdict. Real attestation (TPM, CMC, SEV-SNP) plugs in by implementing
//! [`RaDriver`] and registering it in an [`RaRegistry`] under its suite id.
//!
//! Drivers are futures over `futures` channels, so they belong to the sans-IO core and run on
//! whatever executor the driver of the connection uses (the tokio driver spawns them as tasks).
//!
//! Built in, for interoperability with deployed peers (spec section 7): `Dummy2` (no messages),
//! `Dummy` (two rounds of "test" messages, contents unchecked) and `NullRa` (idscp2-rust: one empty
//! message each way).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};

/// Which half of the attestation a driver plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaRole {
    /// Proves our state to the peer.
    Prover,
    /// Checks the peer's proof.
    Verifier,
}

/// Why a driver run did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RaError {
    /// The connection went away (or stopped the run).
    #[error("the connection closed while attestation was running")]
    ChannelClosed,
    /// The attestation itself failed, and why.
    #[error("attestation failed: {0}")]
    Failed(String),
}

/// What a running driver reports to its connection.
#[derive(Debug)]
pub struct RaEvent {
    /// The role of the driver reporting.
    pub role: RaRole,
    /// Which run of this role the event belongs to; events of a superseded run are ignored.
    pub run: u64,
    /// What it reports.
    pub kind: RaEventKind,
}

/// What a driver reports.
#[derive(Debug)]
pub enum RaEventKind {
    /// A message for the peer's counterpart driver.
    Output(Bytes),
    /// The run is over: success, or why it failed.
    Finished(Result<(), String>),
}

/// A driver's line to its counterpart on the peer, through the connection.
pub struct RaChannel {
    role: RaRole,
    run: u64,
    events: mpsc::Sender<RaEvent>,
    incoming: mpsc::Receiver<Bytes>,
}

impl RaChannel {
    /// Returns the channel for the driver and the sender the connection uses to route the peer's
    /// messages to it.
    pub fn new(
        role: RaRole,
        run: u64,
        events: mpsc::Sender<RaEvent>,
    ) -> (Self, mpsc::Sender<Bytes>) {
        let (to_driver, incoming) = mpsc::channel(8);
        (
            RaChannel {
                role,
                run,
                events,
                incoming,
            },
            to_driver,
        )
    }

    /// Sends `data` to the counterpart on the peer.
    pub async fn send(&mut self, data: Bytes) -> Result<(), RaError> {
        self.report(RaEventKind::Output(data)).await
    }

    /// The next message from the counterpart on the peer.
    pub async fn recv(&mut self) -> Result<Bytes, RaError> {
        self.incoming.next().await.ok_or(RaError::ChannelClosed)
    }

    async fn report(&mut self, kind: RaEventKind) -> Result<(), RaError> {
        let event = RaEvent {
            role: self.role,
            run: self.run,
            kind,
        };
        self.events
            .send(event)
            .await
            .map_err(|_| RaError::ChannelClosed)
    }

    /// Runs `driver` to completion and reports its verdict; the connection spawns this as a task.
    pub async fn run(self, driver: Box<dyn RaDriver>) {
        let mut events = self.events.clone();
        let (role, run) = (self.role, self.run);
        let verdict = driver.run(self).await.map_err(|e| e.to_string());
        // The connection may be gone already; then nobody needs the verdict.
        let _ = events
            .send(RaEvent {
                role,
                run,
                kind: RaEventKind::Finished(verdict),
            })
            .await;
    }
}

/// One run of a prover or verifier.
pub trait RaDriver: Send + 'static {
    /// Runs once, exchanging messages through `channel`, and says whether the attestation succeeded.
    fn run(self: Box<Self>, channel: RaChannel) -> BoxFuture<'static, Result<(), RaError>>;
}

type DriverFactory = Arc<dyn Fn() -> Box<dyn RaDriver> + Send + Sync>;

/// The provers and verifiers this endpoint can run, by suite id.
#[derive(Clone, Default)]
pub struct RaRegistry {
    drivers: HashMap<(RaRole, String), DriverFactory>,
}

impl RaRegistry {
    /// `Dummy2`, `Dummy` and `NullRa`, as provers and verifiers.
    pub fn builtin() -> Self {
        let mut registry = RaRegistry::default();
        for role in [RaRole::Prover, RaRole::Verifier] {
            registry.register(role, DUMMY2, || Box::new(Dummy2));
            registry.register(role, NULL_RA, move || Box::new(NullRa { role }));
            registry.register(role, DUMMY, move || Box::new(Dummy { role }));
        }
        registry
    }

    /// Registers `factory` as the driver of `suite` in `role`, replacing any before.
    pub fn register(
        &mut self,
        role: RaRole,
        suite: &str,
        factory: impl Fn() -> Box<dyn RaDriver> + Send + Sync + 'static,
    ) {
        self.drivers
            .insert((role, suite.to_string()), Arc::new(factory));
    }

    /// Whether a driver of `suite` is registered for `role`.
    pub fn supports(&self, role: RaRole, suite: &str) -> bool {
        self.drivers.contains_key(&(role, suite.to_string()))
    }

    /// A fresh driver for one run, if the suite is registered for the role.
    pub fn driver(&self, role: RaRole, suite: &str) -> Option<Box<dyn RaDriver>> {
        self.drivers
            .get(&(role, suite.to_string()))
            .map(|factory| factory())
    }
}

/// The suite id of `Dummy2`: success at once, without a message.
pub const DUMMY2: &str = "Dummy2";
/// The suite id of the deprecated JVM dummy: two rounds of "test" messages.
pub const DUMMY: &str = "Dummy";
/// The suite id of idscp2-rust's null attestation: one empty message each way.
pub const NULL_RA: &str = "NullRa";

/// Succeeds at once without a message: what deployed Camel endpoints prefer.
struct Dummy2;

impl RaDriver for Dummy2 {
    fn run(self: Box<Self>, _channel: RaChannel) -> BoxFuture<'static, Result<(), RaError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The deprecated JVM dummy: two rounds of a "test" message answered by the counterpart.
struct Dummy {
    role: RaRole,
}

impl RaDriver for Dummy {
    fn run(self: Box<Self>, mut channel: RaChannel) -> BoxFuture<'static, Result<(), RaError>> {
        Box::pin(async move {
            for _round in 0..2 {
                match self.role {
                    RaRole::Prover => {
                        channel.send(Bytes::from_static(b"test")).await?;
                        channel.recv().await?;
                    }
                    RaRole::Verifier => {
                        channel.recv().await?;
                        channel.send(Bytes::from_static(b"test")).await?;
                    }
                }
            }
            Ok(())
        })
    }
}

/// idscp2-rust's null attestation: one empty message from the prover, one empty answer.
struct NullRa {
    role: RaRole,
}

impl RaDriver for NullRa {
    fn run(self: Box<Self>, mut channel: RaChannel) -> BoxFuture<'static, Result<(), RaError>> {
        Box::pin(async move {
            match self.role {
                RaRole::Prover => {
                    channel.send(Bytes::new()).await?;
                    channel.recv().await?;
                }
                RaRole::Verifier => {
                    channel.recv().await?;
                    channel.send(Bytes::new()).await?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a prover and a verifier of one suite against each other, as two connections would,
    /// and returns the messages each side sent.
    async fn pair(suite: &str) -> (Vec<Bytes>, Vec<Bytes>) {
        let registry = RaRegistry::builtin();
        let (prover_events, mut from_prover) = mpsc::channel(8);
        let (verifier_events, mut from_verifier) = mpsc::channel(8);
        let (prover_channel, mut to_prover) = RaChannel::new(RaRole::Prover, 1, prover_events);
        let (verifier_channel, mut to_verifier) =
            RaChannel::new(RaRole::Verifier, 1, verifier_events);
        tokio::spawn(prover_channel.run(registry.driver(RaRole::Prover, suite).unwrap()));
        tokio::spawn(verifier_channel.run(registry.driver(RaRole::Verifier, suite).unwrap()));
        let (mut sent_by_prover, mut sent_by_verifier) = (vec![], vec![]);
        let (mut prover_done, mut verifier_done) = (false, false);
        while !(prover_done && verifier_done) {
            tokio::select! {
                Some(e) = from_prover.next() => match e.kind {
                    RaEventKind::Output(data) => { sent_by_prover.push(data.clone()); to_verifier.send(data).await.unwrap(); }
                    RaEventKind::Finished(r) => { r.unwrap(); prover_done = true; }
                },
                Some(e) = from_verifier.next() => match e.kind {
                    RaEventKind::Output(data) => { sent_by_verifier.push(data.clone()); to_prover.send(data).await.unwrap(); }
                    RaEventKind::Finished(r) => { r.unwrap(); verifier_done = true; }
                },
            }
        }
        (sent_by_prover, sent_by_verifier)
    }

    #[tokio::test]
    async fn dummy2_exchanges_nothing() {
        assert_eq!(pair(DUMMY2).await, (vec![], vec![]));
    }

    #[tokio::test]
    async fn dummy_runs_two_rounds() {
        let test = Bytes::from_static(b"test");
        assert_eq!(
            pair(DUMMY).await,
            (vec![test.clone(), test.clone()], vec![test.clone(), test])
        );
    }

    #[tokio::test]
    async fn null_ra_sends_one_empty_message_each_way() {
        assert_eq!(
            pair(NULL_RA).await,
            (vec![Bytes::new()], vec![Bytes::new()])
        );
    }

    #[tokio::test]
    async fn a_driver_fails_when_its_connection_goes_away() {
        let registry = RaRegistry::builtin();
        let (events, mut reports) = mpsc::channel(8);
        let (channel, to_driver) = RaChannel::new(RaRole::Verifier, 7, events);
        drop(to_driver);
        channel
            .run(registry.driver(RaRole::Verifier, DUMMY).unwrap())
            .await;
        let report = reports.next().await.unwrap();
        assert_eq!((report.role, report.run), (RaRole::Verifier, 7));
        assert!(matches!(report.kind, RaEventKind::Finished(Err(_))));
    }

    #[test]
    fn registry_knows_only_what_was_registered() {
        let registry = RaRegistry::builtin();
        assert!(registry.supports(RaRole::Prover, "Dummy2"));
        assert!(!registry.supports(RaRole::Prover, "TPM2d"));
        assert!(registry.driver(RaRole::Verifier, "TPM2d").is_none());
    }
}

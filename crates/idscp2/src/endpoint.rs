//! What one side of IDSCP2 brings to every connection: protocol settings, its DAT drivers and its
//! RA drivers, and the memory budget all its connections share. Server and client share it, since
//! the handshake is symmetric.

use std::sync::Arc;
use std::time::Duration;

use super::budget::{BudgetError, MemoryBudget, MemoryLimits};
use super::dat::{DatIssuer, DatVerifier};
use super::frame::{DEFAULT_HANDSHAKE_MAX_FRAME, DEFAULT_MAX_FRAME};
use super::metric_names::MetricNames;
use super::ra::{RaRegistry, RaRole, DUMMY, DUMMY2};

#[derive(Debug, Clone)]
pub struct Settings {
    /// Our provers, advertised in Hello as `supportedRaSuite`.
    pub supported_ra: Vec<String>,
    /// Our verifiers, in order of preference, advertised as `expectedRaSuite`.
    pub expected_ra: Vec<String>,
    /// Bounds the TLS handshake, waiting for Hello, each attestation run, and waiting for a DAT.
    pub handshake_timeout: Duration,
    pub ack_timeout: Duration,
    pub ra_interval: Duration,
    /// Fraction of the peer DAT's lifetime after which we ask for a new one (0.666 for DAPS tokens).
    pub dat_renewal_threshold: f64,
    pub max_frame: usize,
    /// The frame limit until the peer's DAT is accepted (or `max_frame`, if smaller): Hello and
    /// DAT frames are small, so a peer that is not yet authenticated cannot make us hold a big
    /// buffer. Also the size of frame every connection may always read (see [`MemoryBudget`]).
    pub handshake_max_frame: usize,
    /// A frame whose length arrived must be complete this long after; a peer that announces a big
    /// frame and then trickles or stops is closed with TIMEOUT instead of holding its buffer.
    pub frame_timeout: Duration,
    /// A peer that does not take our bytes for this long is gone.
    pub write_timeout: Duration,
    /// Messages the peer may have in flight: received and not yet answered (or, for a client,
    /// not yet taken by [`Connection::recv`](super::connection::Connection::recv)). Further
    /// data is not acknowledged, so the peer's resends wait for us instead of our memory growing.
    pub requests_in_flight: usize,
    /// Messages of ours queued behind the one awaiting its ACK; when full,
    /// [`Connection::send`](super::connection::Connection::send) waits.
    pub send_queue: usize,
    /// Resends of unacknowledged data before the connection is closed with TIMEOUT.
    pub max_resends: u32,
    /// What all connections of this endpoint together may hold of peer data.
    pub memory: MemoryLimits,
    /// What the driver's metric names start with ([`DEFAULT_METRICS_PREFIX`] unless set); see
    /// [`metric_names`](super::metric_names).
    pub metrics_prefix: String,
}

/// The prefix of the driver's metric names unless the application chooses another.
pub const DEFAULT_METRICS_PREFIX: &str = "idscp2";

impl Settings {
    /// The frame limit until the peer's DAT is accepted.
    pub fn handshake_frame_limit(&self) -> usize {
        self.handshake_max_frame.min(self.max_frame)
    }
}

impl Default for Settings {
    /// The values deployed Camel endpoints use, so a default clearing house talks to them as is.
    fn default() -> Self {
        let suites = vec![DUMMY2.to_string(), DUMMY.to_string()];
        Settings {
            supported_ra: suites.clone(),
            expected_ra: suites,
            handshake_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_millis(200),
            ra_interval: Duration::from_secs(3600),
            dat_renewal_threshold: 0.666,
            max_frame: DEFAULT_MAX_FRAME,
            handshake_max_frame: DEFAULT_HANDSHAKE_MAX_FRAME,
            frame_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            requests_in_flight: 2,
            send_queue: 4,
            // Five seconds' worth at the default ACK timeout.
            max_resends: 25,
            memory: MemoryLimits::default(),
            metrics_prefix: DEFAULT_METRICS_PREFIX.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("RA suite {suite:?} is advertised as {role:?} but no driver is registered for it")]
    UnknownRaSuite { role: RaRole, suite: String },
    #[error("at least one RA suite is needed as prover and as verifier")]
    NoRaSuite,
    #[error("dat_renewal_threshold must be in (0, 1], not {0}")]
    BadThreshold(f64),
    #[error("handshake_max_frame must be at least {MIN_HANDSHAKE_FRAME}, not {0}")]
    HandshakeFrameTooSmall(usize),
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
    #[error(transparent)]
    Memory(#[from] BudgetError),
}

/// A Hello carries a DAT (a JWT of one or two KiB) and the suite lists; less would refuse real ones.
const MIN_HANDSHAKE_FRAME: usize = 4096;

/// One side's settings and drivers, cheap to clone into every connection.
#[derive(Clone)]
pub struct Endpoint {
    pub settings: Arc<Settings>,
    pub dat_issuer: Arc<dyn DatIssuer>,
    pub dat_verifier: Arc<dyn DatVerifier>,
    pub ra: RaRegistry,
    pub budget: MemoryBudget,
    /// The names this endpoint's metrics are recorded under.
    pub metrics: Arc<MetricNames>,
}

impl Endpoint {
    /// Checks that every advertised suite has a driver, so a handshake never picks one we lack.
    pub fn new(
        settings: Settings,
        dat_issuer: Arc<dyn DatIssuer>,
        dat_verifier: Arc<dyn DatVerifier>,
        ra: RaRegistry,
    ) -> Result<Self, EndpointError> {
        if settings.supported_ra.is_empty() || settings.expected_ra.is_empty() {
            return Err(EndpointError::NoRaSuite);
        }
        let advertised = (settings.supported_ra.iter().map(|s| (RaRole::Prover, s)))
            .chain(settings.expected_ra.iter().map(|s| (RaRole::Verifier, s)));
        for (role, suite) in advertised {
            if !ra.supports(role, suite) {
                return Err(EndpointError::UnknownRaSuite {
                    role,
                    suite: suite.clone(),
                });
            }
        }
        let threshold = settings.dat_renewal_threshold;
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(EndpointError::BadThreshold(threshold));
        }
        if settings.handshake_max_frame < MIN_HANDSHAKE_FRAME {
            return Err(EndpointError::HandshakeFrameTooSmall(
                settings.handshake_max_frame,
            ));
        }
        for (name, value) in [
            ("requests_in_flight", settings.requests_in_flight),
            ("send_queue", settings.send_queue),
            ("max_resends", settings.max_resends as usize),
        ] {
            if value == 0 {
                return Err(EndpointError::Zero(name));
            }
        }
        let metrics = Arc::new(MetricNames::new(&settings.metrics_prefix));
        let budget = MemoryBudget::new(
            settings.memory,
            settings.handshake_frame_limit(),
            settings.max_frame,
            &metrics,
        )?;
        Ok(Endpoint {
            settings: Arc::new(settings),
            dat_issuer,
            dat_verifier,
            ra,
            budget,
            metrics,
        })
    }
}

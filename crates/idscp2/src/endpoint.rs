//! What one side of IDSCP2 brings to every connection: protocol settings, its DAT drivers and its
//! RA drivers, and the memory budget all its connections share. Server and client share it, since
//! the handshake is symmetric.

use std::sync::Arc;

use super::budget::{BudgetError, MemoryBudget};
use super::dat::{DatIssuer, DatVerifier};
use super::metric_names::MetricNames;
use super::ra::{RaRegistry, RaRole};

pub use super::settings::{Settings, DEFAULT_METRICS_PREFIX};

/// Settings that cannot work, found before any peer connects.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("RA suite {suite:?} is advertised as {role:?} but no driver is registered for it")]
    /// A suite is advertised without a driver for it.
    UnknownRaSuite {
        /// Whether it is advertised as prover or verifier.
        role: RaRole,
        /// The suite.
        suite: String,
    },
    /// No RA suite is advertised as prover, or none as verifier.
    #[error("at least one RA suite is needed as prover and as verifier")]
    NoRaSuite,
    /// `dat_renewal_threshold` is not in (0, 1].
    #[error("dat_renewal_threshold must be in (0, 1], not {0}")]
    BadThreshold(f64),
    /// `handshake_max_frame` is too small for a Hello with a DAT.
    #[error("handshake_max_frame must be at least {MIN_HANDSHAKE_FRAME}, not {0}")]
    HandshakeFrameTooSmall(usize),
    /// The named setting is 0.
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
    /// The memory limits do not add up.
    #[error(transparent)]
    Memory(#[from] BudgetError),
}

/// A Hello carries a DAT (a JWT of one or two KiB) and the suite lists; less would refuse real ones.
const MIN_HANDSHAKE_FRAME: usize = 4096;

/// One side's settings and drivers, cheap to clone into every connection.
#[derive(Clone)]
pub struct Endpoint {
    /// The protocol settings.
    pub settings: Arc<Settings>,
    /// Obtains our own DAT.
    pub dat_issuer: Arc<dyn DatIssuer>,
    /// Verifies the peer's DATs.
    pub dat_verifier: Arc<dyn DatVerifier>,
    /// The RA drivers, by suite.
    pub ra: RaRegistry,
    /// The memory bound all connections of this endpoint share.
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

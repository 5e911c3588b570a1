//! What one side of IDSCP2 brings to every connection: protocol settings, its DAT drivers and its
//! RA drivers. Server and client share it, since the handshake is symmetric.

use std::sync::Arc;
use std::time::Duration;

use super::dat::{DatIssuer, DatVerifier};
use super::frame::DEFAULT_MAX_FRAME;
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
    /// A peer that does not take our bytes for this long is gone.
    pub write_timeout: Duration,
    /// Messages received but not yet taken by the layer above; when full we stop ACKing, so the
    /// peer's resends wait for us instead of our memory growing.
    pub receive_queue: usize,
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
            write_timeout: Duration::from_secs(10),
            receive_queue: 16,
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
}

/// One side's settings and drivers, cheap to clone into every connection.
#[derive(Clone)]
pub struct Endpoint {
    pub settings: Arc<Settings>,
    pub dat_issuer: Arc<dyn DatIssuer>,
    pub dat_verifier: Arc<dyn DatVerifier>,
    pub ra: RaRegistry,
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
        Ok(Endpoint {
            settings: Arc::new(settings),
            dat_issuer,
            dat_verifier,
            ra,
        })
    }
}

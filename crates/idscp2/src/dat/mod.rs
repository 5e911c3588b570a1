//! Dynamic Attribute Tokens: how we prove who we are to a peer, and how we check the peer's proof.
//!
//! A DAT is a JWT issued by the data space's DAPS and bound to a connector's TLS certificate. The
//! IDSCP2 handshake sends ours in IdscpHello/IdscpDat and verifies the peer's; it does so through the
//! two traits here so that the DAPS-backed drivers, a file-based token and the development drivers
//! are interchangeable:
//! - [`DapsVerifier`] checks a peer's DAT against the DAPS key set and our policy;
//! - [`DapsIssuer`] obtains and renews our own DAT from the DAPS;
//! - [`StaticIssuer`] serves a DAT an operator put into a file;
//! - [`DevelopmentVerifier`] and [`DevelopmentIssuer`] speak the NullDAPS convention and verify
//!   nothing, for tests and local setups only.

#[cfg(feature = "tokio")]
mod daps_issuer;
#[cfg(feature = "tokio")]
mod daps_verifier;
mod development;
#[cfg(feature = "tokio")]
mod static_token;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::tls::{PeerCertificate, TlsError};

#[cfg(feature = "tokio")]
pub use daps_issuer::{DapsIssuer, DapsIssuerConfig};
#[cfg(feature = "tokio")]
pub use daps_verifier::{DapsVerifier, DapsVerifierConfig, JwksSource};
pub use development::{DevelopmentIssuer, DevelopmentVerifier, NULL_DAPS_TOKEN};
#[cfg(feature = "tokio")]
pub use static_token::StaticIssuer;

/// What a successful verification tells the layers above about the peer.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedDat {
    /// The peer's identity: the DAT's `sub`, or in development mode the certificate-derived
    /// connector id (`sha256:FINGERPRINT` for a certificate without key identifiers).
    pub subject: String,
    /// All claims of the DAT (an empty object in development mode).
    pub claims: serde_json::Value,
    /// Time until `exp` at verification, capped at [`MAX_DAT_LIFETIME`] so that timers derived from
    /// it cannot overflow; `None` when the token does not expire (development mode).
    pub expires_in: Option<Duration>,
}

/// Longest lifetime reported in [`VerifiedDat::expires_in`]; a DAT timer then merely fires early.
pub const MAX_DAT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// One variant per failed check, so that logs say precisely why a peer was refused.
/// No variant ever carries token text.
#[derive(Debug, thiserror::Error)]
pub enum DatError {
    /// The peer sent the literal INVALID_DAT.
    #[error("peer sent INVALID_DAT: its own DAPS request failed")]
    InvalidDatLiteral,
    /// The token is not a well-formed JWT.
    #[error("DAT is not a JWT: {0}")]
    Malformed(String),
    /// The JWT is signed with an algorithm we do not accept.
    #[error("DAT algorithm {0:?} is not accepted")]
    AlgorithmNotAccepted(String),
    /// The JWT header names no key.
    #[error("DAT header has no kid")]
    MissingKid,
    /// No key of the DAPS has this `kid`.
    #[error("unknown kid {0:?}")]
    UnknownKid(String),
    /// The key's type does not fit the JWT's algorithm.
    #[error("DAT algorithm does not fit the JWKS key {0:?}")]
    KeyAlgorithmMismatch(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A required claim is missing.
    #[error("DAT has no {0} claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong shape.
    #[error("DAT claim {claim} is malformed: expected {expected}")]
    MalformedClaim {
        /// The claim.
        claim: &'static str,
        /// What it should have been.
        expected: &'static str,
    },
    /// `exp` has passed.
    #[error("DAT expired")]
    Expired,
    /// `nbf` (or `iat`) lies in the future.
    #[error("DAT not yet valid")]
    NotYetValid,
    #[error("DAT issuer mismatch: expected {expected}")]
    /// `iss` is not the DAPS we trust.
    IssuerMismatch {
        /// The issuer we trust.
        expected: String,
    },
    #[error("DAT audience mismatch: expected one of {}", expected.join(", "))]
    /// `aud` names none of the audiences we accept.
    AudienceMismatch {
        /// The audiences we accept.
        expected: Vec<String>,
    },
    /// `transportCertsSha256` does not name the TLS certificate the peer presented.
    #[error("DAT fingerprint does not match the TLS certificate")]
    FingerprintMismatch,
    #[error("DAT security profile {actual:?} is below the required {minimum}")]
    /// The security profile is below what we require.
    SecurityProfileTooLow {
        /// The profile the DAT states.
        actual: String,
        /// The least profile we accept.
        minimum: String,
    },
    /// The security profile is none of the three IDS ones.
    #[error("unknown security profile {0:?} (expected BASE, TRUST or TRUST_PLUS)")]
    UnknownSecurityProfile(String),
    #[error("cannot load JWKS file {}: {reason}", path.display())]
    /// The key set file cannot be read or parsed.
    JwksFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key set could not be fetched.
    #[error("JWKS fetch failed: {0}")]
    JwksFetch(String),
    /// The DAPS did not issue a token.
    #[error("DAPS token request failed: {0}")]
    TokenRequest(String),
    /// Our key cannot sign the DAPS client assertion.
    #[error("unusable connector key for the DAPS client assertion: {0}")]
    AssertionKey(String),
    /// The token file cannot be read.
    #[error("cannot read DAT file {}: {source}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    #[error("DAT file {} is empty", path.display())]
    /// The token file is empty.
    EmptyTokenFile {
        /// The file.
        path: PathBuf,
    },
    /// The peer's certificate cannot be read for its identity.
    #[error("peer certificate yields no connector id: {0}")]
    PeerIdentity(#[source] TlsError),
    /// The peer's certificate has no SubjectKeyIdentifier, so it names no IDS connector (DAPS
    /// modes; development mode identifies such a peer by its fingerprint instead).
    #[error(
        "peer certificate {certificate} has no SubjectKeyIdentifier: IDS connector certificates \
         need SKI and AKI (X.509 v3)"
    )]
    NoSubjectKeyIdentifier {
        /// The certificate's subject.
        certificate: String,
    },
    /// The verifier identifies peers by their TLS certificate, and none was presented.
    #[error("a TLS client certificate is required to identify the peer")]
    CertificateRequired,
    /// The HTTP client for the DAPS cannot be built.
    #[error("cannot build the DAPS HTTP client: {0}")]
    HttpClient(String),
    /// Verification took longer than the handshake timeout.
    #[error("DAT verification timed out")]
    Timeout,
}

impl DatError {
    /// Whether the peer's certificate, not its token, is at fault: the connection is then closed
    /// with a message naming the certificate rather than with NO_VALID_DAT, which would send the
    /// peer's operator looking at tokens.
    pub fn is_certificate_problem(&self) -> bool {
        matches!(
            self,
            DatError::PeerIdentity(_) | DatError::NoSubjectKeyIdentifier { .. }
        )
    }
}

/// Checks a peer's DAT, bound to the TLS certificate the peer presented.
pub trait DatVerifier: Send + Sync + 'static {
    /// Verifies `token` as the DAT of the peer that presented `peer`, and what it says about the peer.
    fn verify<'a>(
        &'a self,
        token: &'a [u8],
        peer: &'a PeerCertificate,
    ) -> BoxFuture<'a, Result<VerifiedDat, DatError>>;

    /// Verifies `token` from a peer that presented no certificate (a bearer token over HTTPS,
    /// say): every check of [`verify`](Self::verify) except the binding to a certificate. A
    /// verifier that identifies peers by their certificate refuses with
    /// [`DatError::CertificateRequired`] (the default).
    fn verify_unbound<'a>(
        &'a self,
        token: &'a [u8],
    ) -> BoxFuture<'a, Result<VerifiedDat, DatError>> {
        let _ = token;
        Box::pin(async { Err(DatError::CertificateRequired) })
    }
}

/// Supplies our own DAT.
pub trait DatIssuer: Send + Sync + 'static {
    /// Our current DAT; renews it from its source when less than half its lifetime remains.
    fn token(&self) -> BoxFuture<'_, Result<bytes::Bytes, DatError>>;
}

#[cfg(feature = "tokio")]
/// An HTTP client for talking to a DAPS, with timeouts so that a hung DAPS fails a handshake
/// instead of stalling it past the peer's handshake timeout.
pub fn daps_http_client() -> Result<reqwest::Client, DatError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| DatError::HttpClient(e.to_string()))
}

#[cfg(feature = "tokio")]
/// Seconds since the Unix epoch, the clock JWT NumericDates use.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(feature = "tokio")]
/// Turns a number of seconds from a token into a `Duration` without panicking on hostile values.
fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0))
        .unwrap_or(MAX_DAT_LIFETIME)
        .min(MAX_DAT_LIFETIME)
}

//! The protocol settings of one side of IDSCP2: timeouts, frame limits, the bounds on what a peer
//! can make us hold, and the RA suites we offer and expect. Plain data, shared by the sans-IO core
//! and the tokio driver.

use std::time::Duration;

use super::frame::{DEFAULT_HANDSHAKE_MAX_FRAME, DEFAULT_MAX_FRAME};
use super::ra::{DUMMY, DUMMY2};

/// One side's protocol settings; [`Settings::default`] talks to deployed Camel endpoints as is.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Our provers, advertised in Hello as `supportedRaSuite`.
    pub supported_ra: Vec<String>,
    /// Our verifiers, in order of preference, advertised as `expectedRaSuite`.
    pub expected_ra: Vec<String>,
    /// Bounds the TLS handshake, waiting for Hello, each attestation run, and waiting for a DAT.
    pub handshake_timeout: Duration,
    /// How long our data waits for its ACK before it is sent again.
    pub ack_timeout: Duration,
    /// How long an ACK of the peer's data may wait in our write buffer for company: an answer
    /// sent within this time goes out with it, in one TLS record and one write, instead of two.
    /// While the layer above still holds a request it may answer (its `InFlight`), the ACK waits
    /// on for that answer up to a quarter of our own `ack_timeout`. It must stay well below the
    /// peer's ACK timeout (200 ms by default), after which the peer resends, so no ACK waits
    /// longer than that quarter; zero sends every ACK at once.
    pub ack_delay: Duration,
    /// How often we attest the peer again.
    pub ra_interval: Duration,
    /// Fraction of the peer DAT's lifetime after which we ask for a new one (0.666 for DAPS tokens).
    pub dat_renewal_threshold: f64,
    /// The largest frame once the peer is authenticated (see `handshake_max_frame`).
    pub max_frame: usize,
    /// The frame limit until the peer's DAT is accepted (or `max_frame`, if smaller): Hello and
    /// DAT frames are small, so a peer that is not yet authenticated cannot make us hold a big
    /// buffer. Also the size of frame every connection may always read (see `MemoryBudget`).
    pub handshake_max_frame: usize,
    /// A frame whose length arrived must be complete this long after; a peer that announces a big
    /// frame and then trickles or stops is closed with TIMEOUT instead of holding its buffer.
    pub frame_timeout: Duration,
    /// A peer that does not take our bytes for this long is gone.
    pub write_timeout: Duration,
    /// Messages the peer may have in flight: received and not yet answered (or, for a client,
    /// not yet taken by `Connection::recv`). Further data is not acknowledged, so the peer's
    /// resends wait for us instead of our memory growing.
    pub requests_in_flight: usize,
    /// Messages of ours queued behind the one awaiting its ACK; when full, `Connection::send`
    /// waits.
    pub send_queue: usize,
    /// Resends of unacknowledged data before the connection is closed with TIMEOUT.
    pub max_resends: u32,
    /// What all connections of this endpoint together may hold of peer data.
    pub memory: MemoryLimits,
    /// What the driver's metric names start with ([`DEFAULT_METRICS_PREFIX`] unless set); see
    /// the `metric_names` module (feature `tokio`).
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
            ack_delay: Duration::from_millis(10),
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

/// The configured bound; see the module documentation for how it is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Bytes of peer data all connections together may hold.
    pub total: usize,
    /// Bytes one connection may hold (floor included).
    pub per_connection: usize,
    /// Connections that get a small-frame allowance and a floor: the server's connection limit.
    pub connections: usize,
}

impl Default for MemoryLimits {
    /// Sized for a 2 GiB machine serving 1,024 connections; README ("Memory bound") says why.
    fn default() -> Self {
        MemoryLimits {
            total: 512 * 1024 * 1024,
            per_connection: 32 * 1024 * 1024,
            connections: 1024,
        }
    }
}

//! Admission: which sockets the server takes on before their peers have proved who they are.
//!
//! Until a connection has finished TLS and the IDSCP2 handshake, all the server knows about it is
//! its source address, and anyone who can reach the port can open one. So pending connections
//! count against their own pool ([`HandshakeLimits::max_pending`]), of which one source may hold
//! at most [`HandshakeLimits::max_pending_per_source`]. A source is an IPv4 address or an IPv6 /64
//! (the smallest block a host is usually given, so a single host cannot pose as many sources).
//!
//! A new socket that finds the pool or its source's share full is closed at once, before any TLS
//! work. Evicting the oldest pending handshake instead would let a flood that reconnects fast
//! enough cancel legitimate handshakes in progress; refusing the newcomer keeps every handshake
//! that got a place, keeps the accept loop from ever waiting, and costs nothing to track. An idle
//! socket is also let go early: a legitimate client sends its TLS ClientHello right after connecting,
//! so one that sends nothing within [`HandshakeLimits::client_hello_timeout`] (much shorter than the
//! handshake timeout) is closed.
//!
//! Established connections count against `max_connections` instead. A connection takes that
//! permit right after TLS has proved a certificate of the data space, so that a peer refused for
//! lack of room learns why in an IdscpClose before any DAT or attestation work is done.
//!
//! Refusals are counted in `{prefix}_connections_refused_total` by `reason` and logged at most
//! once per [`REFUSAL_LOG_INTERVAL`], with the number left out since; a flood would otherwise fill
//! the log. `{prefix}_handshakes_pending` is the pool's occupancy (see
//! [`metric_names`](super::metric_names)).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::metric_names::MetricNames;
use tokio::time::Instant;
use tracing::warn;

/// Bounds on connections that have not finished TLS and the IDSCP2 handshake.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeLimits {
    /// Connections in TLS or the IDSCP2 handshake at once, from all sources.
    pub max_pending: usize,
    /// Of those, from one IPv4 address or IPv6 /64.
    pub max_pending_per_source: usize,
    /// How long a new socket may stay silent before its TLS ClientHello.
    pub client_hello_timeout: Duration,
}

impl Default for HandshakeLimits {
    /// Well above what hundreds of connectors reconnecting after a restart need (a handshake is
    /// over in a few round trips), small enough that the pool's TLS state stays in tens of MB,
    /// and a flood needs at least 16 sources to fill it.
    fn default() -> Self {
        HandshakeLimits {
            max_pending: 512,
            max_pending_per_source: 32,
            client_hello_timeout: Duration::from_secs(3),
        }
    }
}

/// Logging every refused socket would let a flood fill the log.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a connection was not taken on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The pool of connections in their handshake is full.
    #[error("too many connections are in their handshake")]
    HandshakePoolFull,
    /// The peer's source address has its share of the pool in use already.
    #[error("too many connections from this address are in their handshake")]
    SourceHandshakesFull,
    /// `max_connections` connections are established already.
    #[error("too many connections are open")]
    ConnectionsFull,
}

impl Refusal {
    /// The `reason` label of the refusal counter.
    fn label(self) -> &'static str {
        match self {
            Refusal::HandshakePoolFull => "handshake_pool_full",
            Refusal::SourceHandshakesFull => "source_handshakes_full",
            Refusal::ConnectionsFull => "connections_full",
        }
    }
}

/// The server's books on pending handshakes and open connections.
pub struct Admission {
    metrics: Arc<MetricNames>,
    limits: HandshakeLimits,
    pending: Mutex<Pending>,
    connections: Arc<Semaphore>,
    refusal_log: Mutex<RefusalLog>,
}

#[derive(Default)]
struct Pending {
    total: usize,
    /// Only sources with a pending handshake, so the map never outgrows the pool.
    by_source: HashMap<IpAddr, usize>,
}

#[derive(Default)]
struct RefusalLog {
    quiet_until: Option<Instant>,
    left_out: u64,
}

impl Admission {
    /// Counts and gauges under the names of `metrics`.
    pub fn new(
        max_connections: usize,
        limits: HandshakeLimits,
        metrics: Arc<MetricNames>,
    ) -> Arc<Admission> {
        Arc::new(Admission {
            metrics,
            limits,
            pending: Mutex::default(),
            connections: Arc::new(Semaphore::new(max_connections)),
            refusal_log: Mutex::default(),
        })
    }

    /// The bounds this admission was made with.
    pub fn limits(&self) -> &HandshakeLimits {
        &self.limits
    }

    /// A place in the handshake pool for a connection from `peer`, held until it is dropped.
    pub fn begin_handshake(self: &Arc<Self>, peer: IpAddr) -> Result<HandshakeSlot, Refusal> {
        let source = source_of(peer);
        let mut pending = lock(&self.pending);
        if pending.total >= self.limits.max_pending {
            return Err(Refusal::HandshakePoolFull);
        }
        let of_source = pending.by_source.entry(source).or_default();
        if *of_source >= self.limits.max_pending_per_source {
            return Err(Refusal::SourceHandshakesFull);
        }
        *of_source += 1;
        pending.total += 1;
        metrics::gauge!(self.metrics.handshakes_pending.clone()).increment(1.0);
        Ok(HandshakeSlot {
            admission: self.clone(),
            source,
        })
    }

    /// A place among the open connections, held until it is dropped; never waits.
    pub fn open_connection(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        self.connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::ConnectionsFull)
    }

    /// Counts a refusal and logs it, unless another was logged within [`REFUSAL_LOG_INTERVAL`].
    pub fn refused(&self, refusal: Refusal, peer: SocketAddr) {
        metrics::counter!(self.metrics.connections_refused.clone(), "reason" => refusal.label())
            .increment(1);
        let now = Instant::now();
        let left_out = {
            let mut log = lock(&self.refusal_log);
            if log.quiet_until.is_some_and(|until| now < until) {
                log.left_out += 1;
                return;
            }
            log.quiet_until = Some(now + REFUSAL_LOG_INTERVAL);
            std::mem::take(&mut log.left_out)
        };
        warn!(
            %peer,
            reason = refusal.label(),
            refused_without_log_line = left_out,
            "connection refused: {refusal}; further refusals are logged at most every {} s \
             and all are counted in {}",
            REFUSAL_LOG_INTERVAL.as_secs(),
            self.metrics.connections_refused,
        );
    }
}

/// A connection's place in the handshake pool; dropping it gives the place back.
pub struct HandshakeSlot {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut pending = lock(&self.admission.pending);
        pending.total -= 1;
        if let Some(count) = pending.by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                pending.by_source.remove(&self.source);
            }
        }
        metrics::gauge!(self.admission.metrics.handshakes_pending.clone()).decrement(1.0);
    }
}

/// The source a peer address is counted under: IPv4 addresses as they are (also when mapped into
/// IPv6), IPv6 addresses by their /64.
fn source_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// The counts stay consistent even if a holder panicked: every update is a single step.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_pending: usize, max_pending_per_source: usize) -> HandshakeLimits {
        HandshakeLimits {
            max_pending,
            max_pending_per_source,
            ..HandshakeLimits::default()
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_share_and_places_come_back_when_dropped() {
        let admission = Admission::new(1, limits(4, 2), Arc::new(MetricNames::default()));
        let first = admission.begin_handshake(ip("10.0.0.1")).unwrap();
        let _second = admission.begin_handshake(ip("10.0.0.1")).unwrap();
        assert_eq!(
            admission.begin_handshake(ip("10.0.0.1")).err(),
            Some(Refusal::SourceHandshakesFull)
        );
        let _other = admission.begin_handshake(ip("10.0.0.2")).unwrap();
        drop(first);
        let _again = admission.begin_handshake(ip("10.0.0.1")).unwrap();
        assert_eq!(lock(&admission.pending).by_source.len(), 2);
    }

    #[test]
    fn a_full_pool_refuses_every_source() {
        let admission = Admission::new(1, limits(2, 2), Arc::new(MetricNames::default()));
        let _a = admission.begin_handshake(ip("10.0.0.1")).unwrap();
        let b = admission.begin_handshake(ip("10.0.0.2")).unwrap();
        assert_eq!(
            admission.begin_handshake(ip("10.0.0.3")).err(),
            Some(Refusal::HandshakePoolFull)
        );
        drop(b);
        assert!(admission.begin_handshake(ip("10.0.0.3")).is_ok());
    }

    #[test]
    fn an_ipv6_host_counts_as_one_source_across_its_64() {
        let admission = Admission::new(1, limits(8, 1), Arc::new(MetricNames::default()));
        let _a = admission.begin_handshake(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            admission.begin_handshake(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Refusal::SourceHandshakesFull)
        );
        assert!(admission.begin_handshake(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = admission.begin_handshake(ip("192.0.2.7")).unwrap();
        assert_eq!(
            admission.begin_handshake(ip("::ffff:192.0.2.7")).err(),
            Some(Refusal::SourceHandshakesFull)
        );
    }

    #[test]
    fn open_connections_are_bounded_without_waiting() {
        let admission = Admission::new(1, limits(1, 1), Arc::new(MetricNames::default()));
        let permit = admission.open_connection().unwrap();
        assert_eq!(
            admission.open_connection().err(),
            Some(Refusal::ConnectionsFull)
        );
        drop(permit);
        assert!(admission.open_connection().is_ok());
    }
}

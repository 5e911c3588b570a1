//! The names of the driver's metrics, under a prefix the application chooses.
//!
//! The driver counts through the `metrics` facade, so whatever recorder the application installs
//! (Prometheus, say) sees them; without one, counting costs next to nothing. A library should not
//! name its metrics after one of its users, so every name starts with
//! [`Settings::metrics_prefix`](crate::endpoint::Settings::metrics_prefix) ("idscp2" unless set):
//!
//! - `{prefix}_connections_open`: gauge of established server connections;
//! - `{prefix}_handshakes_pending`: gauge of server connections in their handshake;
//! - `{prefix}_handshakes_total` by `outcome` (`ok`, `client_hello_timeout`, `tls_failed`,
//!   `tls_timeout`, `no_certificate`, `idscp2_failed`);
//! - `{prefix}_connections_refused_total` by `reason` (`handshake_pool_full`,
//!   `source_handshakes_full`, `connections_full`);
//! - `{prefix}_transport_closes_total` by `reason` (`frame_timeout`, `frame_too_large`,
//!   `malformed_frame`, `resend_limit`): connections we closed because the peer broke a bound;
//! - `{prefix}_buffered_bytes`: gauge of peer data held in the memory budget.
//!
//! The names are built once per endpoint and shared, so counting never formats a string.

use metrics::SharedString;

/// The full names of every metric the driver records, for one prefix.
#[derive(Debug, Clone)]
pub struct MetricNames {
    pub(crate) connections_open: SharedString,
    pub(crate) handshakes_pending: SharedString,
    pub(crate) handshakes: SharedString,
    pub(crate) connections_refused: SharedString,
    pub(crate) transport_closes: SharedString,
    pub(crate) buffered_bytes: SharedString,
}

impl MetricNames {
    /// The names under `prefix` (`{prefix}_connections_open` and so on).
    pub fn new(prefix: &str) -> Self {
        let name = |suffix: &str| SharedString::from(format!("{prefix}_{suffix}"));
        MetricNames {
            connections_open: name("connections_open"),
            handshakes_pending: name("handshakes_pending"),
            handshakes: name("handshakes_total"),
            connections_refused: name("connections_refused_total"),
            transport_closes: name("transport_closes_total"),
            buffered_bytes: name("buffered_bytes"),
        }
    }

    /// Every name, for an application that describes its metrics (help texts) or checks them.
    pub fn all(&self) -> [&str; 6] {
        [
            &self.connections_open,
            &self.handshakes_pending,
            &self.handshakes,
            &self.connections_refused,
            &self.transport_closes,
            &self.buffered_bytes,
        ]
    }
}

impl Default for MetricNames {
    fn default() -> Self {
        MetricNames::new(crate::endpoint::DEFAULT_METRICS_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_starts_with_the_prefix() {
        let names = MetricNames::new("clearinghouse");
        assert_eq!(
            &*names.transport_closes,
            "clearinghouse_transport_closes_total"
        );
        assert_eq!(&*names.buffered_bytes, "clearinghouse_buffered_bytes");
        assert_eq!(&*names.handshakes, "clearinghouse_handshakes_total");
        assert_eq!(
            &*names.connections_refused,
            "clearinghouse_connections_refused_total"
        );
        assert_eq!(
            &*names.handshakes_pending,
            "clearinghouse_handshakes_pending"
        );
        assert_eq!(&*names.connections_open, "clearinghouse_connections_open");
    }
}

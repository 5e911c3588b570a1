//! Warnings about TLS handshakes that fail: an operator must see why a connector cannot connect
//! (its certificate is from an unknown CA, it presents none, it does not speak TLS), but a peer
//! that retries in a loop, or a flood, must not flood the log.
//!
//! So each failure is classified into one of a few fixed reasons, and per reason at most one line
//! is written per [`INTERVAL`]; that line says how many failures of the same reason went unlogged
//! since the one before. The handshake metric (`outcome="tls_failed"`) still counts every one.
//! A peer that closes or resets the socket before TLS got anywhere (a port scan, a TCP health
//! check) is no TLS failure and stays at debug.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::{CertificateError, Error as RustlsError};

/// At most one warning per reason per this long.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// Why a TLS handshake failed, in the words of the warning.
pub(crate) fn reason(error: &std::io::Error) -> Option<&'static str> {
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<RustlsError>())
    else {
        return match error.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => None,
            _ => Some("I/O error"),
        };
    };
    Some(match tls {
        RustlsError::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "client certificate from an unknown CA"
        }
        RustlsError::InvalidCertificate(_) => "invalid client certificate",
        RustlsError::NoCertificatesPresented => "no client certificate",
        RustlsError::InvalidMessage(_)
        | RustlsError::InappropriateMessage { .. }
        | RustlsError::InappropriateHandshakeMessage { .. } => "not TLS, or malformed TLS",
        RustlsError::PeerIncompatible(_) => "incompatible TLS (not 1.3, or no common cipher suite)",
        RustlsError::AlertReceived(_) => "the client aborted with an alert",
        _ => "other TLS error",
    })
}

/// Which failures get a line now, per reason.
#[derive(Default)]
pub(crate) struct TlsFailureLog {
    /// Keyed by the fixed reasons of [`reason`], so it stays a handful of entries.
    reasons: Mutex<HashMap<&'static str, Window>>,
}

struct Window {
    logged_at: Instant,
    suppressed: u64,
}

impl TlsFailureLog {
    /// Whether a failure for `reason` at `now` gets a line: `Some(n)` with the number of failures
    /// of that reason left unlogged since its last line, `None` if this one is left unlogged.
    pub(crate) fn admit(&self, reason: &'static str, now: Instant) -> Option<u64> {
        let mut reasons = self.reasons.lock().unwrap_or_else(PoisonError::into_inner);
        match reasons.get_mut(reason) {
            Some(window) if now.saturating_duration_since(window.logged_at) < INTERVAL => {
                window.suppressed += 1;
                None
            }
            Some(window) => {
                let suppressed = std::mem::take(&mut window.suppressed);
                window.logged_at = now;
                Some(suppressed)
            }
            None => {
                reasons.insert(
                    reason,
                    Window {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_per_interval_with_the_count_left_out() {
        let log = TlsFailureLog::default();
        let start = Instant::now();
        assert_eq!(log.admit("no client certificate", start), Some(0));
        for _ in 0..99 {
            assert_eq!(log.admit("no client certificate", start), None);
        }
        // Another reason has its own window.
        assert_eq!(log.admit("not TLS, or malformed TLS", start), Some(0));
        let later = start + INTERVAL;
        assert_eq!(log.admit("no client certificate", later), Some(99));
        assert_eq!(log.admit("no client certificate", later), None);
    }

    #[test]
    fn reasons_name_what_went_wrong() {
        let tls = |e: RustlsError| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert_eq!(
            reason(&tls(RustlsError::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))),
            Some("client certificate from an unknown CA")
        );
        assert_eq!(
            reason(&tls(RustlsError::NoCertificatesPresented)),
            Some("no client certificate")
        );
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(reason(&eof), None);
    }
}

//! `[http]`: the IDS-Multipart door over HTTPS (see `crate::http`), off unless `http.listen`
//! names an address.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::clearing::DEFAULT_MAX_PAYLOAD;
use crate::http::{ClientAuth, HttpLimits, MIN_HEADER_BYTES};

/// Room for the IDS header and the multipart framing next to the largest payload.
const BODY_ROOM: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct HttpConfig {
    /// Where the HTTPS door listens; empty: no HTTPS door.
    pub(crate) listen: String,
    /// `optional` or `required`: whether TLS client certificates are required.
    pub(crate) client_auth: ClientAuth,
    /// The largest request body (IDS header, payload and multipart framing).
    pub(crate) max_body_bytes: usize,
    /// The largest request line plus HTTP headers.
    pub(crate) max_header_bytes: usize,
    /// Time for the TLS handshake, for a request's headers, and for its body.
    pub(crate) read_timeout_ms: u64,
    /// Open HTTPS connections at once.
    pub(crate) max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: String::new(),
            client_auth: ClientAuth::Optional,
            max_body_bytes: DEFAULT_MAX_PAYLOAD + BODY_ROOM,
            max_header_bytes: 16 * 1024,
            read_timeout_ms: 30_000,
            max_connections: 1024,
        }
    }
}

impl HttpConfig {
    /// Whether the door is on.
    pub(crate) fn enabled(&self) -> bool {
        !self.listen.trim().is_empty()
    }

    pub(crate) fn limits(&self) -> HttpLimits {
        HttpLimits {
            max_body_bytes: self.max_body_bytes,
            max_header_bytes: self.max_header_bytes,
            read_timeout: Duration::from_millis(self.read_timeout_ms),
            max_connections: self.max_connections,
        }
    }

    /// `connection_buffer_bytes` is what one connection may hold of the memory bound; a body is
    /// reserved twice (as received, and as parts).
    pub(super) fn validate(&self, connection_buffer_bytes: usize) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        self.listen.parse::<std::net::SocketAddr>().map_err(|_| {
            ConfigError::setting(
                "http.listen",
                format!(
                    "{:?} is not an address of the form host-ip:port",
                    self.listen
                ),
            )
        })?;
        for (setting, value) in [
            ("http.max_body_bytes", self.max_body_bytes as u64),
            ("http.read_timeout_ms", self.read_timeout_ms),
            ("http.max_connections", self.max_connections as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::setting(setting, "must be greater than 0"));
            }
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(ConfigError::setting(
                "http.max_header_bytes",
                format!("must be at least {MIN_HEADER_BYTES}"),
            ));
        }
        if self.max_body_bytes.saturating_mul(2) > connection_buffer_bytes {
            return Err(ConfigError::setting(
                "http.max_body_bytes",
                format!(
                    "twice it must fit into server.connection_buffer_bytes ({connection_buffer_bytes}): a body is held as received and as parts"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(change: impl FnOnce(&mut HttpConfig)) -> String {
        let mut config = HttpConfig {
            listen: "127.0.0.1:8443".into(),
            ..HttpConfig::default()
        };
        config.validate(32 << 20).unwrap();
        change(&mut config);
        config.validate(32 << 20).unwrap_err().to_string()
    }

    /// A change to a valid configuration, and the setting its refusal must name.
    type Case = (fn(&mut HttpConfig), &'static str);

    #[test]
    fn settings_are_checked_and_named() {
        HttpConfig::default().validate(0).unwrap();
        let cases: [Case; 5] = [
            (|c| c.listen = "8443".into(), "http.listen"),
            (|c| c.max_body_bytes = 0, "http.max_body_bytes"),
            (|c| c.max_body_bytes = 17 << 20, "http.max_body_bytes"),
            (|c| c.max_header_bytes = 1024, "http.max_header_bytes"),
            (|c| c.read_timeout_ms = 0, "http.read_timeout_ms"),
        ];
        for (change, setting) in cases {
            let message = refused(change);
            assert!(message.starts_with(setting), "{message}");
        }
    }
}

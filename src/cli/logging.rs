//! Log output: `tracing` to stderr, human-readable or JSON Lines, so that stdout stays free for
//! what a command prints (addresses, receipts, query results).
//!
//! Nothing in this program logs payloads, tokens or keys; the server's per-connection span
//! (`connection{addr, peer}`) is what ties a log line to a peer.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, LogConfig, LogFormat};

/// For `serve`: format and filter from the configuration.
pub(crate) fn init(config: &LogConfig) -> Result<(), ConfigError> {
    let filter =
        EnvFilter::try_new(&config.level).map_err(|e| ConfigError::setting("log.level", e))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second initialisation (only possible in tests) keeps the first subscriber.
    let _ = match config.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}

/// For the tools: warnings and errors only, unless `RUST_LOG` asks for more.
pub(crate) fn init_quiet() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

//! The `clearinghouse` command line: one file per subcommand, the clap definitions here;
//! `setup` turns a configuration into the library's parts, [`report`] renders errors.
//!
//! This is the top level of the program, so errors are `anyhow` here; what decides the exit
//! code travels as a typed error (`config::ConfigError`, `Failure`) inside
//! it, and [`exit_code`] reads it back.

mod client;
mod dev_pki;
mod export;
mod jwks;
mod keys;
mod logging;
pub mod report;
mod serve;
pub(crate) mod setup;
mod verify;
mod view_table;
mod whoami;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, Loaded};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  runtime failure (I/O, network, the server went away, ...)
  2  usage or configuration error (the message names the setting)
  3  verification failed (a receipt or a chain does not verify)
  4  the clearing house rejected the request";

/// An IDS Clearing House: the neutral, tamper-evident logbook of a data space, spoken to over IDSCP2.
#[derive(Debug, Parser)]
#[command(name = "clearinghouse", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the clearing house: IDSCP2 on server.listen, operations HTTP on ops.listen.
    #[command(after_help = EXIT_CODES)]
    Serve(serve::ServeArgs),
    /// Talk to a clearing house over IDSCP2, as a connector does.
    #[command(after_help = EXIT_CODES)]
    Client(Box<client::ClientArgs>),
    /// Verify receipts against a JWKS, or a process's hash chain.
    #[command(after_help = EXIT_CODES)]
    Verify(verify::VerifyArgs),
    /// Export a process from the store as JSON Lines (stop `serve` first: the embedded store is locked).
    #[command(after_help = EXIT_CODES)]
    Export(export::ExportArgs),
    /// Create (or extend) a development PKI: CA, server and client certificates, receipt key.
    #[command(name = "dev-pki", after_help = EXIT_CODES)]
    DevPki(dev_pki::DevPkiArgs),
    /// Print the receipt JWKS (current and retired keys) the configuration publishes.
    #[command(after_help = EXIT_CODES)]
    Jwks(jwks::JwksArgs),
    /// Print the connector id (SKI:keyid:AKI) the clearing house derives for a certificate.
    #[command(after_help = EXIT_CODES)]
    Whoami(whoami::WhoamiArgs),
    /// Encryption at rest: generate a KEK, re-wrap data keys after a rotation, erase a process.
    #[command(after_help = EXIT_CODES)]
    Keys(keys::KeysArgs),
}

/// Where the configuration comes from, for the subcommands that read it.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Configuration")]
struct ConfigArgs {
    /// Configuration file [default: config/clearinghouse.toml when it exists]
    #[arg(long, env = "CH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Overrides server.data_dir (development PKI, embedded store)
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
}

impl ConfigArgs {
    /// The configuration with `overrides` on top; logging is not set up yet.
    fn load(&self, mut overrides: Vec<(&str, String)>) -> Result<Loaded, ConfigError> {
        overrides.extend(self.data_dir.clone().map(|v| ("server.data_dir", v)));
        crate::config::load(self.config.as_deref(), &overrides)
    }

    /// For the tools: their quiet logging, then the configuration.
    fn load_for_tool(&self, overrides: Vec<(&str, String)>) -> Result<Config, ConfigError> {
        logging::init_quiet();
        let loaded = self.load(overrides)?;
        loaded.log_ignored();
        Ok(loaded.config)
    }
}

/// [`ConfigArgs`] for the subcommands that open the store.
#[derive(Debug, clap::Args)]
struct StoreConfigArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Overrides store.path (the embedded store's file)
    #[arg(long, value_name = "FILE", help_heading = "Configuration")]
    store_path: Option<String>,
}

impl StoreConfigArgs {
    fn overrides(&self) -> Vec<(&'static str, String)> {
        self.store_path
            .clone()
            .map(|v| ("store.path", v))
            .into_iter()
            .collect()
    }

    fn load(&self, mut overrides: Vec<(&str, String)>) -> Result<Loaded, ConfigError> {
        overrides.extend(self.overrides());
        self.config.load(overrides)
    }

    fn load_for_tool(&self) -> Result<Config, ConfigError> {
        self.config.load_for_tool(self.overrides())
    }
}

/// Outcomes that are not runtime failures and have exit codes of their own.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("{0}")]
    Verification(String),
    #[error("the clearing house rejected the request: {0}")]
    Rejected(String),
}

/// Runs the subcommand `cli` names, to its end (for `serve`: until a shutdown signal).
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Client(args) => client::run(*args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Export(args) => export::run(args).await,
        Command::DevPki(args) => dev_pki::run(args),
        Command::Jwks(args) => jwks::run(args),
        Command::Whoami(args) => whoami::run(args),
        Command::Keys(args) => keys::run(args).await,
    }
}

/// The documented exit code for an error [`run`] returned.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<ConfigError>() {
            return 2;
        }
        match cause.downcast_ref::<Failure>() {
            Some(Failure::Verification(_)) => return 3,
            Some(Failure::Rejected(_)) => return 4,
            None => {}
        }
    }
    1
}

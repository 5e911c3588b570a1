//! An IDS Clearing House: the neutral, tamper-evident logbook of a data space.
//!
//! Rooms, each knowing nothing of the rooms above it:
//! - [`idscp2`]: the transport (TLS, framing, handshake, DAT and RA drivers, server and client):
//!   the `idscp2` crate (crates/idscp2), carrying the IDS application layer.
//! - [`ids`]: the IDS message layer: request headers and `ch-ids-*` parameters in, reply headers,
//!   rejections and query documents out.
//! - [`store`]: processes and their hash-chained entries, embedded (redb) or on MongoDB.
//! - [`understand`]: DSP and IDS messages recognised in entries, and each process's transfers and
//!   contracts as both parties recorded them (a derived, reproducible view).
//! - [`receipt`]: receipts signed as JWTs, and the JWKS that lets anyone verify them offline.
//! - [`clearing`]: the clearing house: one handler per message type, authorization, receipts.
//! - [`http`]: the second front door, IDS-Multipart over HTTPS, into the same clearing house.
//! - [`client`]: the clearing-house client used by the CLI, the tests and the load generator.
//! - [`audit`]: exports, and offline verification of receipts and chains.
//! - [`devpki`]: a development CA with server, connector and receipt keys, for trying things out and for tests.
//!
//! Around them, the operable service:
//! - [`config`]: the configuration file, `CH_...` environment overrides, validation.
//! - `ops`: the operations HTTP endpoint: health, readiness, Prometheus metrics, the JWKS.
//! - [`cli`]: the `clearinghouse` command line (serve, client, verify, export, dev-pki, jwks).
//!
//! # The public surface
//!
//! The library exists for the `clearinghouse` binary, the integration tests and the benchmarks;
//! it is not a stable API. Public is only what they use, everything else is `pub(crate)` (the
//! package's `unreachable_pub` lint keeps it that way, `missing_docs` keeps what is public
//! documented):
//! - the binary: [`cli::Cli`], [`cli::run`], [`cli::exit_code`], [`cli::report::one_line`];
//! - serving in-process: [`clearing::ClearingHouse`] and its config, over a [`store`] backend
//!   with a [`receipt::ReceiptSigner`], on the transport of [`idscp2`] (all of the crate);
//! - talking to it as a connector: [`client::ClearingHouseClient`], the request headers and
//!   reply reading of [`ids`];
//! - checking what it wrote: [`audit`], [`store::chain`], [`receipt::Jwks`];
//! - setting things up: [`devpki`], and the [`config`] sections the tests set in code;
//! - what the benchmarks time: the hot paths in [`ids`], [`clearing::Offload`],
//!   [`clearing::Quotas`], [`clearing::current_view`].

pub mod audit;
pub mod clearing;
pub mod cli;
pub mod client;
pub mod config;
pub mod devpki;
pub mod http;
pub mod ids;
pub mod idscp2;
mod ops;
pub mod receipt;
pub mod store;
pub mod understand;

//! The integration tests, one test binary: each module was once a binary of its own, and linking
//! twenty of them against the whole crate took longer than running them. `cargo test --test it
//! MODULE::` runs one module (e.g. `cargo test --test it hostile_transport::`).
//!
//! All modules share one process and run in parallel, so a test never assumes it is alone: it
//! binds port 0, works in its own temporary directory and database, starts its own servers, and
//! reads process-wide state (the metrics recorder) only as "grew since before".
//!
//! - [`support`]: the test PKIs, DAPS, servers and the binary driver these modules share.

// A test binary has no public API: `pub` marks what its modules share (the package's
// `unreachable_pub` lint is for the library).
#![allow(unreachable_pub)]

mod support;

mod audit;
mod clearing_house;
mod cli_config;
mod cli_e2e;
mod cli_environment;
mod cli_first_run;
mod cli_https;
mod cli_large_entries;
mod cli_metrics_help;
mod cli_operator;
mod cli_owners;
mod cli_shutdown;
mod cli_unprivileged;
mod client_replies;
mod crash_durability;
mod daps_support_selftest;
mod encryption;
mod encryption_keys;
mod erasure;
mod fair_use;
mod foreign_certificates;
mod golden;
mod hostile_handshake;
mod hostile_https;
mod hostile_transport;
mod idscp2_dat;
mod idscp2_example;
mod idscp2_transport;
mod jsonld_spellings;
mod mongodb_service;
mod mongodb_store;
mod pki_tls;
mod signing_overload;
mod store_contract;
mod store_owners;
mod transport_logs;
mod two_doors;
mod understand;

//! IDSCP2, the transport of the International Data Spaces, wire-compatible with idscp2-jvm.
//!
//! This crate knows nothing about what travels over it. It turns a TCP stream into an attested,
//! mutually authenticated channel (TLS 1.3, the IDSCP2 handshake with DAT and remote attestation)
//! and hands the layer above plain application messages together with the peer's verified identity.
//!
//! # Layout
//!
//! Like quinn-proto and quinn, in two layers. The **sans-IO core** builds without any runtime
//! (`default-features = false`) and does no I/O:
//! - [`proto`]: the generated protobuf types of `idscp2.proto`.
//! - [`frame`]: the length-prefixed frame codec over byte buffers, with a size bound.
//! - [`fsm`]: the handshake and alternating-bit state machine of one connection, poll-based:
//!   `handle_input`, `poll_transmit`, `poll_event`, `poll_timeout`.
//! - [`settings`]: one side's protocol settings.
//! - [`ra`]: remote attestation: suite selection lives in the state machine, the driver trait, the
//!   registry and the built-in suites here.
//! - [`dat`]: Dynamic Attribute Tokens: the verifier and issuer traits and the development drivers.
//! - [`tls`]: TLS 1.3 configurations (rustls), our identity, and the peer certificate's
//!   fingerprint and connector id.
//!
//! The **tokio driver** (default feature `tokio`) does the I/O around the core:
//! - [`endpoint`]: one side's settings and drivers, and the memory budget its connections share.
//! - [`connection`]: the task that drives one connection's state machine over a TLS stream.
//! - [`server`] and [`client`].
//! - [`budget`]: the memory bound on peer data; [`admission`]: the bounded handshake pool and the
//!   bound on open connections.
//! - [`metric_names`]: the names of the driver's metrics, under a prefix of the application's
//!   choosing.
//! - DAT drivers that do I/O: a DAPS over HTTP, a token file.
//!
//! The application layer is the user's: connections, servers and clients are generic over the
//! protobuf message carried in IDSCP2 data (idscp2-jvm's `AppLayerMessage`, or any other).

#![warn(missing_docs)]

#[cfg(feature = "tokio")]
pub mod admission;
#[cfg(feature = "tokio")]
pub mod budget;
#[cfg(feature = "tokio")]
pub mod client;
#[cfg(feature = "tokio")]
pub mod connection;
pub mod dat;
#[cfg(feature = "tokio")]
pub mod endpoint;
pub mod frame;
pub mod fsm;
#[cfg(feature = "tokio")]
pub mod metric_names;
pub mod proto;
pub mod ra;
#[cfg(feature = "tokio")]
mod reader;
#[cfg(feature = "tokio")]
pub mod server;
pub mod settings;
pub mod tls;

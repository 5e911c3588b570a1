//! IDSCP2, the transport of the International Data Spaces, wire-compatible with idscp2-jvm.
//!
//! This crate knows nothing about clearing houses. It turns a TCP stream into an attested,
//! mutually authenticated channel (TLS 1.3, the IDSCP2 handshake with DAT and remote attestation)
//! and hands the layer above plain application messages together with the peer's verified identity.
//!
//! - [`proto`]: the generated protobuf types.
//! - [`frame`]: length-delimited framing with a size bound, and the reader that reserves a frame's
//!   bytes in the memory budget before reading it.
//! - [`budget`]: the memory bound on peer data, shared by all connections.
//! - [`tls`]: TLS 1.3 configurations, our identity, and peer certificate fingerprint and connector id.
//! - [`dat`]: Dynamic Attribute Token drivers: verifying the peer's DAT, obtaining our own.
//! - [`ra`]: remote attestation drivers behind one trait.
//! - [`fsm`]: the handshake and alternating-bit state machine, without I/O.
//! - [`endpoint`]: one side's settings and drivers.
//! - [`connection`]: the per-connection task around the state machine.
//! - [`admission`]: the bounded pool of connections still in their handshake, with a share per
//!   source address, and the bound on open connections.
//! - [`server`] and [`client`].

pub mod admission;
pub mod budget;
pub mod client;
pub mod connection;
pub mod dat;
pub mod endpoint;
pub mod frame;
pub mod fsm;
pub mod metric_names;
pub mod proto;
pub mod ra;
pub mod server;
pub mod tls;

//! An IDS Clearing House: the neutral, tamper-evident logbook of a data space.
//!
//! Rooms, each knowing nothing of the rooms above it:
//! - [`idscp2`]: the transport (TLS, framing, handshake, DAT and RA drivers, server and client).
//! - [`devpki`]: a development CA with server, connector and receipt keys, for trying things out and for tests.
//! - [`store`]: processes, their log entries and per-process hash chains, durable before any receipt.

pub mod devpki;
pub mod idscp2;
pub mod store;

//! IDSCP2, the transport of the International Data Spaces, wire-compatible with idscp2-jvm.
//!
//! This room knows nothing about clearing houses. It turns a TCP stream into an attested,
//! mutually authenticated channel (TLS 1.3, the IDSCP2 handshake with DAT and remote attestation)
//! and hands the layer above plain application messages together with the peer's verified identity.
//!
//! - [`proto`]: the generated protobuf types.
//! - [`dat`]: Dynamic Attribute Token drivers: verifying the peer's DAT, obtaining our own.
//! - [`tls`]: TLS 1.3 configurations, our identity, and peer certificate fingerprint and connector id.

pub mod dat;
pub mod proto;
pub mod tls;

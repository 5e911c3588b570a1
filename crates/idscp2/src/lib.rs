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
//!
//! # Example
//!
//! A server that answers every message with its length, and a client that asks it once, over
//! loopback. Both sides use development DATs (checked against nothing) and the built-in RA
//! suites; the certificates are made on the spot with rcgen, as a data space's CA would issue them
//! (connector certificates carry subject and authority key identifiers).
//!
//! ```
//! # #[cfg(feature = "tokio")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use idscp2::admission::HandshakeLimits;
//! use idscp2::client::{connect, ClientConfig};
//! use idscp2::connection::{Connection, PeerInfo};
//! use idscp2::dat::{DevelopmentIssuer, DevelopmentVerifier};
//! use idscp2::endpoint::{Endpoint, Settings};
//! use idscp2::ra::RaRegistry;
//! use idscp2::server::{Server, ServerConfig, Service};
//! use idscp2::tls::{client_config, server_config, TlsIdentity};
//! use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
//!
//! /// Answers every message (a protobuf `string`) with its length.
//! struct Length;
//!
//! impl Service for Length {
//!     type Message = String;
//!
//!     async fn handle(
//!         &self,
//!         _peer: Arc<PeerInfo>,
//!         message: Result<String, prost::DecodeError>,
//!     ) -> Option<String> {
//!         message.ok().map(|text| text.len().to_string())
//!     }
//! }
//!
//! // A CA, and a certificate for each side.
//! let ca_key = KeyPair::generate()?;
//! let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
//! ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
//! let ca = ca_params.self_signed(&ca_key)?;
//! let issuer = Issuer::new(ca_params, ca_key);
//! let identity = |name: &str| -> Result<TlsIdentity, Box<dyn std::error::Error>> {
//!     let key = KeyPair::generate()?;
//!     let mut params = CertificateParams::new(vec![name.to_string()])?;
//!     params.is_ca = IsCa::ExplicitNoCa;
//!     params.use_authority_key_identifier_extension = true;
//!     let cert = params.signed_by(&key, &issuer)?;
//!     Ok(TlsIdentity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())?)
//! };
//! let cas = [ca.der().clone()];
//! let endpoint = || {
//!     Endpoint::new(
//!         Settings::default(),
//!         Arc::new(DevelopmentIssuer::new()),
//!         Arc::new(DevelopmentVerifier::new()),
//!         RaRegistry::builtin(),
//!     )
//! };
//!
//! // The server, on a free loopback port, until `stop` fires.
//! let server = Server::bind(
//!     "127.0.0.1:0",
//!     ServerConfig {
//!         tls: server_config(&identity("localhost")?, &cas)?,
//!         endpoint: endpoint()?,
//!         max_connections: 16,
//!         handshake_limits: HandshakeLimits::default(),
//!     },
//! )
//! .await?;
//! let addr = server.local_addr()?.to_string();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let serving = tokio::spawn(server.run(Arc::new(Length), async {
//!     let _ = stopped.await;
//! }));
//!
//! // The client: TLS 1.3, the IDSCP2 handshake, one request.
//! let config = ClientConfig {
//!     tls: client_config(&identity("connector")?, &cas)?,
//!     endpoint: endpoint()?,
//! };
//! let mut connection: Connection<String> = connect(&addr, "localhost", &config).await?;
//! let reply = connection
//!     .request(&"hello".to_string(), Duration::from_secs(5), Some)
//!     .await?;
//! assert_eq!(reply, "5");
//! connection.close().await;
//!
//! let _ = stop.send(());
//! serving.await?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "tokio"))]
//! # fn main() {}
//! ```

// The overview above links the driver's modules, which a build without it lacks.
#![cfg_attr(not(feature = "tokio"), allow(rustdoc::broken_intra_doc_links))]

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
#[cfg(feature = "tokio")]
mod tls_failures;

//! Helpers shared by the integration test modules.
//!
//! - [`pki`]: throw-away development PKIs (a trusted one, an unrelated one, an RSA connector).
//! - [`daps`]: a test DAPS issuing DATs.
//! - [`transport`]: IDSCP2 servers and clients in this process, and raw peers that misbehave.
//! - [`clearing`]: a clearing house in this process, on the embedded store.
//! - [`doors`]: one clearing house behind both doors (IDSCP2, IDS-Multipart over HTTPS).
//! - [`mongo`]: the MongoDB-protocol server of `scripts/test`, and servers of a test's own.
//! - [`cli`]: the real `clearinghouse` binary, run as commands and as a `serve` process.
//! - [`stored_entries`]: the entries of an embedded store's file, for tests that tamper with them.

pub mod clearing;
pub mod cli;
pub mod daps;
pub mod doors;
pub mod mongo;
pub mod pki;
pub mod stored_entries;
pub mod transport;

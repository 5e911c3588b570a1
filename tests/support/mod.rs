//! Helpers shared by the integration test binaries. Each binary declares `mod support;` and uses
//! what it needs, hence the crate-wide allowance for unused helpers below.
//!
//! - [`pki`]: throw-away development PKIs (a trusted one, an unrelated one, an RSA connector).
//! - [`daps`]: a test DAPS issuing DATs.

#![allow(dead_code)]

pub mod clearing;
pub mod daps;
pub mod mongo;
pub mod pki;
pub mod transport;

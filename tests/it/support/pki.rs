//! Throw-away development PKIs for integration tests.
//!
//! Every test gets its own CA in a temporary directory, so tests run in parallel without sharing
//! keys and a test can never pass because of files another test left behind. The PKI is the one
//! the CLI generates ([`DevPki`]), so the tests exercise the certificates users actually get.

use std::fs;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use clearinghouse::devpki::{DevPki, DevPkiOptions};
use tempfile::TempDir;

/// The client name under which [`TestPki::rsa_client`] is enrolled.
pub const RSA_CLIENT: &str = "connector-rsa";

/// A [`DevPki`] (default options: server `localhost`/`127.0.0.1`/`::1`, clients `connector-a`,
/// `connector-b`, `auditor`) plus an RSA connector, living as long as this value.
///
/// It dereferences to [`DevPki`] for the paths: `pki.ca_cert()`, `pki.client_key("auditor")`, ...
pub struct TestPki {
    pki: DevPki,
    // Held for its Drop, which deletes the directory.
    _dir: TempDir,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(dir.path(), &DevPkiOptions::default()).unwrap();
        // JVM connectors have RSA keys; rcgen on ring cannot generate RSA keys, so the key is a fixture.
        pki.issue_client_with_key(RSA_CLIENT, &fs::read_to_string(rsa_key_fixture()).unwrap())
            .unwrap();
        TestPki { pki, _dir: dir }
    }

    /// A second PKI whose CA has nothing to do with any other: its certificates must be rejected
    /// by a peer trusting only another `TestPki`.
    pub fn other_ca() -> TestPki {
        TestPki::new()
    }

    /// The certificate and key of a client whose key is RSA-2048, signed by this PKI's CA.
    pub fn rsa_client(&self) -> (PathBuf, PathBuf) {
        (self.client_cert(RSA_CLIENT), self.client_key(RSA_CLIENT))
    }

    pub fn dir(&self) -> &Path {
        &self.pki.dir
    }
}

impl Deref for TestPki {
    type Target = DevPki;

    fn deref(&self) -> &DevPki {
        &self.pki
    }
}

fn rsa_key_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/connector-rsa.key")
}

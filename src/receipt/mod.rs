//! Receipts: the clearing house's signed word that an entry is durable, and the keys to check it.
//!
//! A receipt is a plain JWS-signed JWT so that any JOSE library can verify it, offline, from the
//! published JWKS alone; together with the hash chain it lets a client prove later what was
//! logged and when, without trusting the operator's database. Keys rotate, receipts do not
//! expire: the JWKS therefore keeps retired public keys next to the current one.
//!
//! - [`signer`]: the receipt key and signing.
//! - `key`: the key's public half, as a JWK named by its RFC 7638 thumbprint.
//! - [`jwks`]: the published key set (current and retired keys), and verification.

pub mod jwks;
mod key;
pub mod signer;

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};

pub use jwks::{retired_jwk_from_pem, Jwks};
pub use signer::ReceiptSigner;

/// The JWS algorithms a receipt key may use. ES256 is the default because it is the fastest to
/// sign; PS512 is what the reference clearing house used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReceiptAlgorithm {
    #[default]
    Es256,
    EdDsa,
    Ps512,
    Rs256,
}

impl ReceiptAlgorithm {
    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Ps512 => "PS512",
            Self::Rs256 => "RS256",
        }
    }

    fn jwt_algorithm(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Self::Ps512 => jsonwebtoken::Algorithm::PS512,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

impl fmt::Display for ReceiptAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReceiptAlgorithm {
    type Err = ReceiptError;

    /// Exact JWS names only: `alg` values are case-sensitive (RFC 7515), and a configuration
    /// that says `es256` is better told than guessed at.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        [Self::Es256, Self::EdDsa, Self::Ps512, Self::Rs256]
            .into_iter()
            .find(|algorithm| algorithm.as_str() == name)
            .ok_or_else(|| ReceiptError::UnknownAlgorithm(name.to_owned()))
    }
}

/// What a receipt vouches for.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReceiptClaims {
    /// The clearing house's connector id.
    pub iss: String,
    pub iat: i64,
    pub process_id: String,
    pub document_id: String,
    pub sequence: u64,
    /// Unix seconds, the reference's claim; `timestamp_ms` has the stored precision.
    pub timestamp: i64,
    pub timestamp_ms: i64,
    pub client_id: String,
    /// base64url (no padding) SHA-256 of the payload: the hash stands in for the payload itself.
    pub payload_hash: String,
    /// Lowercase hex.
    pub entry_hash: String,
    /// Lowercase hex.
    pub chain_hash: String,
    pub clearing_house_version: String,
}

/// The `payload_hash` claim: base64url (no padding) SHA-256 of the logged payload, so a client
/// can match a receipt to the bytes it sent without the receipt carrying them.
pub fn payload_hash(payload: &[u8]) -> String {
    payload_hash_claim(digest(&SHA256, payload).as_ref())
}

/// The `payload_hash` claim of a payload whose SHA-256 is already known.
pub fn payload_hash_claim(sha256: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(sha256)
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("unknown receipt algorithm {0:?} (expected ES256, EdDSA, PS512 or RS256)")]
    UnknownAlgorithm(String),
    #[error("the key file is not valid PEM: {0}")]
    Pem(#[source] std::io::Error),
    #[error("the key file holds no key")]
    NoKey,
    #[error("the key file holds {found}; expected {expected}")]
    KeyFormat {
        found: &'static str,
        expected: &'static str,
    },
    #[error("the key does not fit {algorithm}: {reason}")]
    KeyMismatch {
        algorithm: ReceiptAlgorithm,
        reason: String,
    },
    #[error("signing the receipt failed")]
    Signing,
    #[error("encoding the receipt claims failed: {0}")]
    Claims(#[from] serde_json::Error),
    #[error("not a usable JWKS: {0}")]
    InvalidJwks(String),
    #[error("not a well-formed receipt JWT: {0}")]
    Malformed(#[source] jsonwebtoken::errors::Error),
    #[error("the receipt names no kid")]
    MissingKid,
    #[error("no published key has kid {0:?}")]
    UnknownKey(String),
    #[error("the receipt claims {receipt_alg} but key {kid:?} is published for {key_algs}")]
    AlgorithmMismatch {
        kid: String,
        receipt_alg: String,
        key_algs: String,
    },
    #[error("the receipt does not verify: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_parse_from_their_jws_names_only() {
        for algorithm in [
            ReceiptAlgorithm::Es256,
            ReceiptAlgorithm::EdDsa,
            ReceiptAlgorithm::Ps512,
            ReceiptAlgorithm::Rs256,
        ] {
            assert_eq!(
                algorithm.as_str().parse::<ReceiptAlgorithm>().unwrap(),
                algorithm
            );
            assert_eq!(algorithm.to_string(), algorithm.as_str());
        }
        assert_eq!(
            "EdDSA".parse::<ReceiptAlgorithm>().unwrap(),
            ReceiptAlgorithm::EdDsa
        );
        for bad in ["es256", "ES384", "HS256", ""] {
            assert!(matches!(
                bad.parse::<ReceiptAlgorithm>(),
                Err(ReceiptError::UnknownAlgorithm(name)) if name == bad
            ));
        }
    }

    #[test]
    fn payload_hash_is_unpadded_base64url_sha256() {
        // FIPS 180-2 "abc" vector, ba7816bf...15ad in hex.
        assert_eq!(
            payload_hash(b"abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        assert_eq!(
            payload_hash(b""),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn default_algorithm_is_es256() {
        assert_eq!(ReceiptAlgorithm::default(), ReceiptAlgorithm::Es256);
    }
}

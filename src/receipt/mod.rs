//! Receipts: the clearing house's signed word that an entry is durable, and the keys to check it.
//!
//! A receipt is a plain JWS-signed JWT so that any JOSE library can verify it, offline, from the
//! published JWKS alone; together with the hash chain it lets a client prove later what was
//! logged and when, without trusting the operator's database. Keys rotate, receipts do not
//! expire: the JWKS therefore keeps retired public keys next to the current one.
//!
//! - `signer`: the receipt key and signing.
//! - `key`: the key's public half, as a JWK named by its RFC 7638 thumbprint.
//! - `jwks`: the published key set (current and retired keys), and verification.

pub(crate) mod jwks;
mod key;
pub(crate) mod signer;

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};

pub(crate) use jwks::retired_jwk_from_pem;
pub use jwks::Jwks;
pub use signer::ReceiptSigner;

/// The JWS algorithms a receipt key may use. ES256 is the default because it is the fastest to
/// sign; PS512 is what the reference clearing house used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReceiptAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    #[default]
    Es256,
    /// Ed25519.
    EdDsa,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
}

impl ReceiptAlgorithm {
    /// The JWS `alg` name.
    pub(crate) fn as_str(self) -> &'static str {
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
    /// When the receipt was signed, unix seconds.
    pub iat: i64,
    /// The process the entry was logged to.
    pub process_id: String,
    /// The entry's document id, for reading it back.
    pub document_id: String,
    /// The entry's position in its process's chain, from 1.
    pub sequence: u64,
    /// Unix seconds, the reference's claim; `timestamp_ms` has the stored precision.
    pub timestamp: i64,
    /// When the entry was stored, unix milliseconds.
    pub timestamp_ms: i64,
    /// The connector that logged the entry.
    pub client_id: String,
    /// base64url (no padding) SHA-256 of the payload: the hash stands in for the payload itself.
    pub payload_hash: String,
    /// Lowercase hex.
    pub entry_hash: String,
    /// Lowercase hex.
    pub chain_hash: String,
    /// The version of the clearing house that signed.
    pub clearing_house_version: String,
}

/// The `payload_hash` claim: base64url (no padding) SHA-256 of the logged payload, so a client
/// can match a receipt to the bytes it sent without the receipt carrying them.
pub fn payload_hash(payload: &[u8]) -> String {
    payload_hash_claim(digest(&SHA256, payload).as_ref())
}

/// The `payload_hash` claim of a payload whose SHA-256 is already known.
pub(crate) fn payload_hash_claim(sha256: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(sha256)
}

/// Why a receipt key cannot be used, or a receipt cannot be signed or verified.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// The algorithm name is not one of [`ReceiptAlgorithm`]'s.
    #[error("unknown receipt algorithm {0:?} (expected ES256, EdDSA, PS512 or RS256)")]
    UnknownAlgorithm(String),
    /// The key file cannot be read as PEM.
    #[error("the key file is not valid PEM: {0}")]
    Pem(#[source] std::io::Error),
    /// The key file has no PEM section with a key.
    #[error("the key file holds no key")]
    NoKey,
    /// The key file holds something else than a key of the expected form.
    #[error("the key file holds {found}; expected {expected}")]
    KeyFormat {
        /// What the file holds, e.g. "a certificate".
        found: &'static str,
        /// What was expected instead.
        expected: &'static str,
    },
    /// The key is not a key of the configured algorithm.
    #[error("the key does not fit {algorithm}: {reason}")]
    KeyMismatch {
        /// The configured algorithm.
        algorithm: ReceiptAlgorithm,
        /// Why the key does not fit it.
        reason: String,
    },
    /// The signature could not be made.
    #[error("signing the receipt failed")]
    Signing,
    /// The claims could not be encoded as JSON.
    #[error("encoding the receipt claims failed: {0}")]
    Claims(#[from] serde_json::Error),
    /// The JWKS cannot be read, or a key in it cannot be used.
    #[error("not a usable JWKS: {0}")]
    InvalidJwks(String),
    /// The receipt is not a JWT.
    #[error("not a well-formed receipt JWT: {0}")]
    Malformed(#[source] jsonwebtoken::errors::Error),
    /// The receipt's header has no `kid` to find its key by.
    #[error("the receipt names no kid")]
    MissingKid,
    /// No key of the JWKS has the receipt's `kid`.
    #[error("no published key has kid {0:?}")]
    UnknownKey(String),
    /// The receipt's `alg` is not the algorithm its key is published for.
    #[error("the receipt claims {receipt_alg} but key {kid:?} is published for {key_algs}")]
    AlgorithmMismatch {
        /// The receipt's `kid`.
        kid: String,
        /// The receipt's `alg`.
        receipt_alg: String,
        /// The algorithms the keys with that `kid` are published for.
        key_algs: String,
    },
    /// The signature or the claims do not verify.
    #[error("{}", jwt_failure(.0))]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

/// Why a receipt's signature or claims do not check out, in words rather than the JWT library's
/// variant names.
fn jwt_failure(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidSignature => {
            "the signature does not match the published key it names (kid)".into()
        }
        ErrorKind::ExpiredSignature => "the receipt has expired".into(),
        ErrorKind::ImmatureSignature => "the receipt is not valid yet".into(),
        ErrorKind::InvalidAlgorithm => {
            "the receipt's algorithm is not the one its key is published for".into()
        }
        _ => format!("the receipt is not valid: {error}"),
    }
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

//! The receipt key's public half: what a receipt is verified with, in the forms it is published
//! and named in.
//!
//! The signer derives it from its private key, the JWKS from an operator's retired key files;
//! both name it by its RFC 7638 thumbprint and publish it as the same JWK, so the two can never
//! disagree on which `kid` a key has.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::digest::{digest, SHA256};
use serde_json::{json, Value};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey as X509PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::{ReceiptAlgorithm, ReceiptError};

/// The public half of a receipt key, as the big-endian octets JWKs are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PublicKey {
    P256 { x: Vec<u8>, y: Vec<u8> },
    Ed25519 { x: Vec<u8> },
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl PublicKey {
    /// From an uncompressed P-256 point, `04 || x || y`.
    pub(super) fn from_p256_point(
        algorithm: ReceiptAlgorithm,
        point: &[u8],
    ) -> Result<Self, ReceiptError> {
        match point {
            [0x04, coordinates @ ..] if coordinates.len() == 64 => {
                let (x, y) = coordinates.split_at(32);
                Ok(Self::P256 {
                    x: x.to_vec(),
                    y: y.to_vec(),
                })
            }
            _ => Err(ReceiptError::KeyMismatch {
                algorithm,
                reason: "not an uncompressed P-256 point".into(),
            }),
        }
    }

    /// From a DER SubjectPublicKeyInfo, checked to be a key of `algorithm`'s kind.
    pub(super) fn from_spki(algorithm: ReceiptAlgorithm, der: &[u8]) -> Result<Self, ReceiptError> {
        let mismatch = |reason: String| ReceiptError::KeyMismatch { algorithm, reason };
        let (_, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|error| mismatch(format!("not a SubjectPublicKeyInfo: {error}")))?;
        let key_type = &spki.algorithm.algorithm;
        let key_bits = spki.subject_public_key.data.as_ref();
        match algorithm {
            ReceiptAlgorithm::Es256 => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|parameters| parameters.as_oid().ok());
                if *key_type != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
                    return Err(mismatch("not a P-256 EC public key".into()));
                }
                Self::from_p256_point(algorithm, key_bits)
            }
            ReceiptAlgorithm::EdDsa => {
                if *key_type != OID_SIG_ED25519 || key_bits.len() != 32 {
                    return Err(mismatch("not an Ed25519 public key".into()));
                }
                Ok(Self::Ed25519 {
                    x: key_bits.to_vec(),
                })
            }
            ReceiptAlgorithm::Ps512 | ReceiptAlgorithm::Rs256 => {
                match (*key_type == OID_PKCS1_RSAENCRYPTION, spki.parsed()) {
                    (true, Ok(X509PublicKey::RSA(rsa))) => Ok(Self::rsa(rsa.modulus, rsa.exponent)),
                    _ => Err(mismatch("not an RSA public key".into())),
                }
            }
        }
    }

    /// RSA integers as DER stores them may carry a sign octet; JWK wants the minimal form.
    fn rsa(n: &[u8], e: &[u8]) -> Self {
        let minimal = |octets: &[u8]| {
            let start = octets.iter().position(|&b| b != 0).unwrap_or(octets.len());
            octets[start..].to_vec()
        };
        Self::Rsa {
            n: minimal(n),
            e: minimal(e),
        }
    }

    /// RFC 7638: base64url SHA-256 of the required members in lexicographic order without
    /// whitespace. Every value is a fixed name or base64url, which JSON never escapes, so the
    /// canonical form can be written out directly instead of trusting a serializer's key order.
    pub(super) fn thumbprint(&self) -> String {
        let canonical = match self {
            Self::P256 { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64(x),
                b64(y)
            ),
            Self::Ed25519 { x } => {
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(x))
            }
            Self::Rsa { n, e } => {
                format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n))
            }
        };
        b64(digest(&SHA256, canonical.as_bytes()).as_ref())
    }

    /// The JWK as published: key members plus `kid`, `alg` and `use`.
    pub(super) fn jwk(&self, algorithm: ReceiptAlgorithm) -> Value {
        let mut jwk = match self {
            Self::P256 { x, y } => json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)}),
            Self::Ed25519 { x } => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x)}),
            Self::Rsa { n, e } => json!({"kty": "RSA", "n": b64(n), "e": b64(e)}),
        };
        if let Some(members) = jwk.as_object_mut() {
            members.insert("kid".into(), self.thumbprint().into());
            members.insert("alg".into(), algorithm.as_str().into());
            members.insert("use".into(), "sig".into());
        }
        jwk
    }
}

fn b64(octets: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(octets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_rsa_example_thumbprint() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let key = PublicKey::Rsa {
            n: URL_SAFE_NO_PAD.decode(n).unwrap(),
            e: URL_SAFE_NO_PAD.decode("AQAB").unwrap(),
        };
        assert_eq!(
            key.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        let jwk = key.jwk(ReceiptAlgorithm::Rs256);
        assert_eq!(jwk["n"], json!(n));
        assert_eq!(
            jwk["kid"],
            json!("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }

    #[test]
    fn rfc8037_ed25519_example_thumbprint() {
        let key = PublicKey::Ed25519 {
            x: URL_SAFE_NO_PAD
                .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
                .unwrap(),
        };
        assert_eq!(
            key.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn rsa_members_drop_der_sign_octets() {
        assert_eq!(
            PublicKey::rsa(&[0, 0x80, 1], &[0, 1, 0, 1]),
            PublicKey::Rsa {
                n: vec![0x80, 1],
                e: vec![1, 0, 1]
            }
        );
    }
}

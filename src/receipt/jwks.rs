//! Publishing receipt keys as a JWKS, and verifying receipts against one.
//!
//! The `kid` of every key is its RFC 7638 thumbprint, so it is derived from the key itself: an
//! auditor can recompute it, and no operator choice can give two different keys the same one.
//! Retired keys stay published because receipts do not expire; whoever holds an old receipt
//! must still be able to check it years later.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{DecodingKey, Validation};
use rustls_pki_types::pem::SectionKind;
use serde_json::{json, Value};

use super::key::PublicKey;
use super::signer::{read_pem, section_kind, ReceiptSigner};
use super::{ReceiptAlgorithm, ReceiptClaims, ReceiptError};

/// The published key set: the current key first, then retired ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Jwks {
    keys: Vec<Value>,
}

// One key set may check receipts from many tasks at once (`verify` takes `&self`).
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Jwks>();
};

impl Jwks {
    /// The JWKS to publish: `current`'s key first, then the `retired` JWKs, each key once.
    pub fn new(current: &ReceiptSigner, retired: Vec<Value>) -> Self {
        Self::from_keys(std::iter::once(current.public_jwk()).chain(retired))
    }

    /// An operator listing the current key among the retired ones as well is harmless; the
    /// duplicate is just not published twice.
    fn from_keys(keys: impl IntoIterator<Item = Value>) -> Self {
        let mut unique: Vec<Value> = Vec::new();
        for key in keys {
            if !unique.contains(&key) {
                unique.push(key);
            }
        }
        Self { keys: unique }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({"keys": self.keys})
    }

    /// Keys of kinds this clearing house does not use are kept (and never match a receipt), so a
    /// JWKS shared with other services still works.
    pub fn parse(json: &[u8]) -> Result<Jwks, ReceiptError> {
        let document: Value = serde_json::from_slice(json)
            .map_err(|error| ReceiptError::InvalidJwks(error.to_string()))?;
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| ReceiptError::InvalidJwks("no \"keys\" array".into()))?;
        if !keys.iter().all(Value::is_object) {
            return Err(ReceiptError::InvalidJwks("a key is not an object".into()));
        }
        Ok(Self { keys: keys.clone() })
    }

    /// Checks a receipt's signature with the key its `kid` names. The algorithm is the one the
    /// key is published for, never just what the receipt claims, so a receipt cannot pick a
    /// weaker or different scheme for a known key. Receipts carry no `exp` and never expire.
    pub fn verify(&self, receipt_jwt: &str) -> Result<ReceiptClaims, ReceiptError> {
        let header = jsonwebtoken::decode_header(receipt_jwt).map_err(ReceiptError::Malformed)?;
        let kid = header.kid.ok_or(ReceiptError::MissingKid)?;
        let same_kid: Vec<&Value> = self
            .keys
            .iter()
            .filter(|key| key.get("kid").and_then(Value::as_str) == Some(kid.as_str()))
            .collect();
        if same_kid.is_empty() {
            return Err(ReceiptError::UnknownKey(kid));
        }
        let published_alg = |key: &Value| key.get("alg").and_then(Value::as_str).map(str::to_owned);
        // One RSA key may be published for both PS512 and RS256 (same kid) after an operator
        // switched algorithms; the receipt's alg selects among those, and nothing else.
        let Some((algorithm, jwk)) = same_kid.iter().find_map(|key| {
            let algorithm: ReceiptAlgorithm = published_alg(key)?.parse().ok()?;
            (algorithm.jwt_algorithm() == header.alg).then_some((algorithm, *key))
        }) else {
            return Err(ReceiptError::AlgorithmMismatch {
                receipt_alg: format!("{:?}", header.alg),
                key_algs: same_kid
                    .iter()
                    .map(|key| published_alg(key).unwrap_or_else(|| "no alg".into()))
                    .collect::<Vec<_>>()
                    .join(", "),
                kid,
            });
        };
        let jwk: Jwk = serde_json::from_value(jwk.clone())
            .map_err(|error| ReceiptError::InvalidJwks(format!("key {kid:?}: {error}")))?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|error| ReceiptError::InvalidJwks(format!("key {kid:?}: {error}")))?;
        let mut validation = Validation::new(algorithm.jwt_algorithm());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        jsonwebtoken::decode::<ReceiptClaims>(receipt_jwt, &key, &validation)
            .map(|data| data.claims)
            .map_err(ReceiptError::Invalid)
    }
}

/// The JWK of a retired key, from the file an operator kept: the old private key PEM or its
/// SPKI public key PEM (`-----BEGIN PUBLIC KEY-----`).
pub(crate) fn retired_jwk_from_pem(
    algorithm: ReceiptAlgorithm,
    pem: &[u8],
) -> Result<Value, ReceiptError> {
    match read_pem(pem)? {
        (SectionKind::PrivateKey, der) => {
            ReceiptSigner::from_pkcs8(algorithm, &der).map(|s| s.public_jwk())
        }
        (SectionKind::PublicKey, der) => Ok(PublicKey::from_spki(algorithm, &der)?.jwk(algorithm)),
        (other, _) => Err(ReceiptError::KeyFormat {
            found: section_kind(other),
            expected: "a PKCS#8 private key or a public key (-----BEGIN PUBLIC KEY-----)",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};

    const RSA_PEM: &[u8] = include_bytes!("../../tests/fixtures/receipt-rsa.key");
    /// `openssl pkey -pubout` of the key above: rcgen cannot write RSA public keys.
    const RSA_PUBLIC_PEM: &[u8] = include_bytes!("../../tests/fixtures/receipt-rsa.pub");

    fn claims(sequence: u64) -> ReceiptClaims {
        ReceiptClaims {
            iss: "https://clearinghouse.example/connector".into(),
            iat: 1_710_028_800,
            process_id: "p-1".into(),
            document_id: "7d4c1a9e-4c1f-4f3e-9a55-2b1d1c0e9f10".into(),
            sequence,
            timestamp: 1_710_028_800,
            timestamp_ms: 1_710_028_800_123,
            client_id: "AA:BB:keyid:CC:DD".into(),
            payload_hash: "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg".into(),
            entry_hash: "ab".repeat(32),
            chain_hash: "cd".repeat(32),
            clearing_house_version: "0.1.0".into(),
        }
    }

    fn ec_pem() -> String {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem()
    }

    fn ed_pem() -> String {
        KeyPair::generate_for(&PKCS_ED25519)
            .unwrap()
            .serialize_pem()
    }

    fn signer(algorithm: ReceiptAlgorithm) -> ReceiptSigner {
        let pem = match algorithm {
            ReceiptAlgorithm::Es256 => ec_pem().into_bytes(),
            ReceiptAlgorithm::EdDsa => ed_pem().into_bytes(),
            ReceiptAlgorithm::Ps512 | ReceiptAlgorithm::Rs256 => RSA_PEM.to_vec(),
        };
        ReceiptSigner::from_pem(algorithm, &pem).unwrap()
    }

    /// Replaces one base64url JWT segment by a re-encoded, edited version of it.
    fn edit_segment(jwt: &str, index: usize, edit: impl FnOnce(&mut Value)) -> String {
        let mut segments: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        let mut value: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&segments[index]).unwrap()).unwrap();
        edit(&mut value);
        segments[index] = URL_SAFE_NO_PAD.encode(value.to_string());
        segments.join(".")
    }

    #[test]
    fn every_algorithm_signs_and_verifies_through_the_jwks() {
        for algorithm in [
            ReceiptAlgorithm::Es256,
            ReceiptAlgorithm::EdDsa,
            ReceiptAlgorithm::Ps512,
            ReceiptAlgorithm::Rs256,
        ] {
            let signer = signer(algorithm);
            let receipt = signer.sign(&claims(7)).unwrap();
            let published = Jwks::new(&signer, vec![]).to_json().to_string();
            let jwks = Jwks::parse(published.as_bytes()).unwrap();
            assert_eq!(jwks.verify(&receipt).unwrap(), claims(7), "{algorithm}");
        }
    }

    #[test]
    fn signer_kid_is_the_thumbprint_of_its_published_members() {
        for algorithm in [
            ReceiptAlgorithm::Es256,
            ReceiptAlgorithm::EdDsa,
            ReceiptAlgorithm::Rs256,
        ] {
            let signer = signer(algorithm);
            let jwk = signer.public_jwk();
            let member = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
            let key = match algorithm {
                ReceiptAlgorithm::Es256 => PublicKey::P256 {
                    x: member("x"),
                    y: member("y"),
                },
                ReceiptAlgorithm::EdDsa => PublicKey::Ed25519 { x: member("x") },
                _ => PublicKey::Rsa {
                    n: member("n"),
                    e: member("e"),
                },
            };
            assert_eq!(signer.kid(), key.thumbprint(), "{algorithm}");
        }
    }

    #[test]
    fn rotated_out_key_verifies_only_while_listed_as_retired() {
        let old = signer(ReceiptAlgorithm::Es256);
        let old_receipt = old.sign(&claims(1)).unwrap();
        let new = signer(ReceiptAlgorithm::EdDsa);

        let with_retired = Jwks::new(&new, vec![old.public_jwk()]);
        assert_eq!(with_retired.verify(&old_receipt).unwrap(), claims(1));
        let new_receipt = new.sign(&claims(2)).unwrap();
        assert_eq!(with_retired.verify(&new_receipt).unwrap(), claims(2));

        let without = Jwks::new(&new, vec![]);
        assert!(matches!(
            without.verify(&old_receipt),
            Err(ReceiptError::UnknownKey(kid)) if kid == old.kid()
        ));
    }

    #[test]
    fn retired_jwk_from_private_or_public_pem_matches_the_signer() {
        let ec = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let ed = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let rsa = ReceiptSigner::from_pem(ReceiptAlgorithm::Ps512, RSA_PEM).unwrap();
        let cases: Vec<(ReceiptAlgorithm, String, Value)> = vec![
            (
                ReceiptAlgorithm::Es256,
                ec.serialize_pem(),
                ReceiptSigner::from_pem(ReceiptAlgorithm::Es256, ec.serialize_pem().as_bytes())
                    .unwrap()
                    .public_jwk(),
            ),
            (
                ReceiptAlgorithm::EdDsa,
                ed.public_key_pem(),
                ReceiptSigner::from_pem(ReceiptAlgorithm::EdDsa, ed.serialize_pem().as_bytes())
                    .unwrap()
                    .public_jwk(),
            ),
            (
                ReceiptAlgorithm::Es256,
                ec.public_key_pem(),
                ReceiptSigner::from_pem(ReceiptAlgorithm::Es256, ec.serialize_pem().as_bytes())
                    .unwrap()
                    .public_jwk(),
            ),
            (
                ReceiptAlgorithm::Ps512,
                String::from_utf8(RSA_PEM.to_vec()).unwrap(),
                rsa.public_jwk(),
            ),
        ];
        for (algorithm, pem, expected) in cases {
            assert_eq!(
                retired_jwk_from_pem(algorithm, pem.as_bytes()).unwrap(),
                expected,
                "{algorithm}"
            );
        }
        assert_eq!(
            retired_jwk_from_pem(ReceiptAlgorithm::Ps512, RSA_PUBLIC_PEM).unwrap(),
            rsa.public_jwk()
        );
    }

    #[test]
    fn retired_public_key_of_the_wrong_type_is_refused() {
        let ec = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let ed = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let cases = [
            (ReceiptAlgorithm::EdDsa, ec.public_key_pem()),
            (ReceiptAlgorithm::Rs256, ec.public_key_pem()),
            (ReceiptAlgorithm::Es256, ed.public_key_pem()),
            (ReceiptAlgorithm::Ps512, ed.public_key_pem()),
        ];
        for (algorithm, pem) in cases {
            assert!(
                matches!(
                    retired_jwk_from_pem(algorithm, pem.as_bytes()),
                    Err(ReceiptError::KeyMismatch { .. })
                ),
                "{algorithm}"
            );
        }
        let certificate = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            retired_jwk_from_pem(ReceiptAlgorithm::Es256, certificate.as_bytes()),
            Err(ReceiptError::KeyFormat {
                found: "a certificate",
                ..
            })
        ));
    }

    #[test]
    fn jwks_lists_current_first_without_duplicates() {
        let ec = ec_pem();
        let ed = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let current = ReceiptSigner::from_pem(ReceiptAlgorithm::Es256, ec.as_bytes()).unwrap();
        let retired = vec![
            retired_jwk_from_pem(ReceiptAlgorithm::EdDsa, ed.public_key_pem().as_bytes()).unwrap(),
            retired_jwk_from_pem(ReceiptAlgorithm::Es256, ec.as_bytes()).unwrap(),
        ];
        let keys = Jwks::new(&current, retired).to_json()["keys"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], current.public_jwk());
        assert_eq!(keys[1]["crv"], json!("Ed25519"));
    }

    #[test]
    fn tampered_receipt_fails() {
        for algorithm in [
            ReceiptAlgorithm::Es256,
            ReceiptAlgorithm::EdDsa,
            ReceiptAlgorithm::Ps512,
        ] {
            let signer = signer(algorithm);
            let jwks = Jwks::new(&signer, vec![]);
            let receipt = signer.sign(&claims(1)).unwrap();
            let tampered = edit_segment(&receipt, 1, |claims| claims["sequence"] = json!(2));
            assert!(
                matches!(jwks.verify(&tampered), Err(ReceiptError::Invalid(_))),
                "{algorithm}"
            );
            let mut flipped = receipt.clone().into_bytes();
            let last = flipped.len() - 5;
            flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
            let flipped = String::from_utf8(flipped).unwrap();
            assert!(
                jwks.verify(&flipped).is_err(),
                "{algorithm} signature bit flip"
            );
        }
    }

    #[test]
    fn receipt_claiming_another_alg_than_its_jwk_fails() {
        let rs256 = signer(ReceiptAlgorithm::Rs256);
        let ps512 = signer(ReceiptAlgorithm::Ps512);
        let ps512_receipt = ps512.sign(&claims(1)).unwrap();
        // Same RSA key, same kid, a valid PS512 signature: only the published alg refuses it.
        let rs256_only = Jwks::new(&rs256, vec![]);
        assert!(matches!(
            rs256_only.verify(&ps512_receipt),
            Err(ReceiptError::AlgorithmMismatch { ref key_algs, .. }) if key_algs == "RS256"
        ));
        let both = Jwks::new(&rs256, vec![ps512.public_jwk()]);
        assert_eq!(both.verify(&ps512_receipt).unwrap(), claims(1));

        let es256 = signer(ReceiptAlgorithm::Es256);
        let es256_jwks = Jwks::new(&es256, vec![]);
        let relabelled = edit_segment(&es256.sign(&claims(1)).unwrap(), 0, |header| {
            header["alg"] = json!("HS256")
        });
        assert!(matches!(
            es256_jwks.verify(&relabelled),
            Err(ReceiptError::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn receipt_without_kid_or_not_a_jwt_fails() {
        let signer = signer(ReceiptAlgorithm::Es256);
        let jwks = Jwks::new(&signer, vec![]);
        let receipt = signer.sign(&claims(1)).unwrap();
        let no_kid = edit_segment(&receipt, 0, |header| {
            header.as_object_mut().unwrap().remove("kid");
        });
        assert!(matches!(
            jwks.verify(&no_kid),
            Err(ReceiptError::MissingKid)
        ));
        assert!(matches!(
            jwks.verify("not.a-jwt"),
            Err(ReceiptError::Malformed(_))
        ));
    }

    #[test]
    fn jwks_json_round_trips_and_keeps_foreign_keys() {
        let signer = signer(ReceiptAlgorithm::Es256);
        let foreign = json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
        let jwks = Jwks::new(&signer, vec![foreign.clone()]);
        let json = jwks.to_json();
        assert_eq!(json, json!({"keys": [signer.public_jwk(), foreign]}));
        let parsed = Jwks::parse(json.to_string().as_bytes()).unwrap();
        assert_eq!(parsed, jwks);
        let receipt = signer.sign(&claims(1)).unwrap();
        assert_eq!(parsed.verify(&receipt).unwrap(), claims(1));
    }

    #[test]
    fn malformed_jwks_is_refused() {
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            b"{\"keys\": {}}",
            b"{\"keys\": [1]}",
        ] {
            assert!(
                matches!(Jwks::parse(bad), Err(ReceiptError::InvalidJwks(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

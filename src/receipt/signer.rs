//! The receipt key and signing.
//!
//! Signing is done directly on a key parsed once at start-up: jsonwebtoken's `encode`
//! re-parses (and for RSA re-validates) the PKCS#8 key on every call, which would cost more
//! than the signature itself on the path every log message takes.
//!
//! The signatures come from aws-lc-rs, not ring (which the rest of the crate uses for hashes,
//! HMAC and AES-GCM, where the two are within a few percent of each other). For RSA the
//! difference is the whole story of the reference's own configuration, PS512 with an RSA-4096
//! key: on this project's machines (AMD EPYC with AVX-512 IFMA) ring signs in about 5 ms and
//! `openssl speed` in 3.6 ms, while AWS-LC's IFMA code signs in about 2 ms, so a server signing
//! with ring could never reach the machine's OpenSSL signing limit (BENCHMARKS.md, issue 14).
//! ECDSA P-256 is also about 15% cheaper. The API is ring's, so the choice stays local to this
//! file.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaEncoding, RsaKeyPair,
    RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256, RSA_PSS_SHA512,
};
use rustls_pki_types::pem::{self, PemObject as _, SectionKind};
use serde_json::{json, Value};

use super::key::PublicKey;
use super::{ReceiptAlgorithm, ReceiptClaims, ReceiptError};

/// Signs receipts with the clearing house's current receipt key.
#[derive(Debug)]
pub struct ReceiptSigner {
    algorithm: ReceiptAlgorithm,
    key: SigningKey,
    rng: SystemRandom,
    kid: String,
    public_jwk: Value,
    /// base64url of the JOSE header, identical for every receipt of this key.
    encoded_header: String,
}

// One signer is shared by every connection's handler task.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<ReceiptSigner>();
};

#[derive(Debug)]
enum SigningKey {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair, &'static dyn RsaEncoding),
}

impl ReceiptSigner {
    /// From an unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`): EC P-256 for ES256,
    /// Ed25519 for EdDSA, RSA (2048 to 4096 bits) for PS512 and RS256.
    pub fn from_pem(
        algorithm: ReceiptAlgorithm,
        private_key_pem: &[u8],
    ) -> Result<Self, ReceiptError> {
        match read_pem(private_key_pem)? {
            (SectionKind::PrivateKey, der) => Self::from_pkcs8(algorithm, &der),
            (other, _) => Err(ReceiptError::KeyFormat {
                found: section_kind(other),
                expected: PKCS8_EXPECTED,
            }),
        }
    }

    pub(super) fn from_pkcs8(
        algorithm: ReceiptAlgorithm,
        pkcs8: &[u8],
    ) -> Result<Self, ReceiptError> {
        let key = match algorithm {
            ReceiptAlgorithm::Es256 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                    .map(SigningKey::Ecdsa)
            }
            // v1 PKCS#8 (what OpenSSL writes) carries no public key to check against, so the
            // unchecked variant is the one that accepts every Ed25519 key file in use.
            ReceiptAlgorithm::EdDsa => {
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map(SigningKey::Ed25519)
            }
            ReceiptAlgorithm::Ps512 => {
                RsaKeyPair::from_pkcs8(pkcs8).map(|key| SigningKey::Rsa(key, &RSA_PSS_SHA512))
            }
            ReceiptAlgorithm::Rs256 => {
                RsaKeyPair::from_pkcs8(pkcs8).map(|key| SigningKey::Rsa(key, &RSA_PKCS1_SHA256))
            }
        }
        .map_err(|rejected| ReceiptError::KeyMismatch {
            algorithm,
            reason: rejected.to_string(),
        })?;

        let public = match &key {
            SigningKey::Ecdsa(pair) => {
                PublicKey::from_p256_point(algorithm, pair.public_key().as_ref())?
            }
            SigningKey::Ed25519(pair) => PublicKey::Ed25519 {
                x: pair.public_key().as_ref().to_vec(),
            },
            SigningKey::Rsa(pair, _) => {
                let components = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                PublicKey::Rsa {
                    n: components.n,
                    e: components.e,
                }
            }
        };
        let kid = public.thumbprint();
        let header = json!({"alg": algorithm.as_str(), "typ": "JWT", "kid": kid});
        Ok(Self {
            algorithm,
            key,
            rng: SystemRandom::new(),
            kid,
            public_jwk: public.jwk(algorithm),
            encoded_header: URL_SAFE_NO_PAD.encode(header.to_string()),
        })
    }

    /// The algorithm receipts are signed with.
    pub fn algorithm(&self) -> ReceiptAlgorithm {
        self.algorithm
    }

    /// The RFC 7638 JWK thumbprint of the public key, used as the JWS `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK with `kid`, `alg` and `use: "sig"`.
    pub fn public_jwk(&self) -> Value {
        self.public_jwk.clone()
    }

    /// A compact JWS: header `{"alg", "typ": "JWT", "kid"}`, the claims, the signature.
    pub fn sign(&self, claims: &ReceiptClaims) -> Result<String, ReceiptError> {
        let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?);
        let mut jwt = format!("{}.{claims}", self.encoded_header);
        let signature = match &self.key {
            SigningKey::Ecdsa(pair) => pair
                .sign(&self.rng, jwt.as_bytes())
                .map_err(|_| ReceiptError::Signing)?
                .as_ref()
                .to_vec(),
            SigningKey::Ed25519(pair) => pair.sign(jwt.as_bytes()).as_ref().to_vec(),
            SigningKey::Rsa(pair, encoding) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(*encoding, &self.rng, jwt.as_bytes(), &mut signature)
                    .map_err(|_| ReceiptError::Signing)?;
                signature
            }
        };
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(jwt)
    }
}

const PKCS8_EXPECTED: &str = "an unencrypted PKCS#8 private key (-----BEGIN PRIVATE KEY-----)";

/// The first PEM section of a kind rustls-pki-types knows, with its DER; sections with other
/// labels before it are skipped.
pub(super) fn read_pem(pem: &[u8]) -> Result<(SectionKind, Vec<u8>), ReceiptError> {
    match <(SectionKind, Vec<u8>)>::pem_slice_iter(pem).next() {
        Some(Ok(section)) => Ok(section),
        None => Err(ReceiptError::NoKey),
        Some(Err(error)) => Err(ReceiptError::Pem(pem_error(error))),
    }
}

/// A PEM syntax error as the `io::Error` (`InvalidData`) that [`ReceiptError::Pem`] carries,
/// with the offending marker or line as text (pki-types would print them as byte lists).
fn pem_error(error: pem::Error) -> std::io::Error {
    let message = match error {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "section end {:?} missing",
            String::from_utf8_lossy(&end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "illegal section start: {:?}",
            String::from_utf8_lossy(&line)
        ),
        pem::Error::Base64Decode(error) => error,
        other => other.to_string(),
    };
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// A name for what was found instead of the expected key, precise enough to say how to convert
/// it (e.g. SEC1 and PKCS#1 files go through `openssl pkcs8 -topk8 -nocrypt`).
pub(super) fn section_kind(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => "a certificate",
        SectionKind::PublicKey => "a public key",
        SectionKind::RsaPrivateKey => "a PKCS#1 RSA private key",
        SectionKind::PrivateKey => "a PKCS#8 private key",
        SectionKind::EcPrivateKey => "a SEC1 EC private key",
        SectionKind::Crl => "a certificate revocation list",
        SectionKind::Csr => "a certificate signing request",
        _ => "an unsupported PEM section",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};

    const RSA_PEM: &[u8] = include_bytes!("../../tests/fixtures/receipt-rsa.key");

    fn claims() -> ReceiptClaims {
        ReceiptClaims {
            iss: "https://clearinghouse.example/connector".into(),
            iat: 1_710_028_800,
            process_id: "p-1".into(),
            document_id: "7d4c1a9e-4c1f-4f3e-9a55-2b1d1c0e9f10".into(),
            sequence: 1,
            timestamp: 1_710_028_800,
            timestamp_ms: 1_710_028_800_123,
            client_id: "AA:BB:keyid:CC:DD".into(),
            payload_hash: "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg".into(),
            entry_hash: "ab".repeat(32),
            chain_hash: "cd".repeat(32),
            clearing_house_version: "0.1.0".into(),
        }
    }

    fn decode_segment(segment: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
    }

    #[test]
    fn jwt_header_and_claims_are_as_specified() {
        let pem = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem();
        let signer = ReceiptSigner::from_pem(ReceiptAlgorithm::Es256, pem.as_bytes()).unwrap();
        let jwt = signer.sign(&claims()).unwrap();
        let segments: Vec<&str> = jwt.split('.').collect();
        assert_eq!(segments.len(), 3);
        assert_eq!(
            decode_segment(segments[0]),
            json!({"alg": "ES256", "typ": "JWT", "kid": signer.kid()})
        );
        let decoded: ReceiptClaims = serde_json::from_value(decode_segment(segments[1])).unwrap();
        assert_eq!(decoded, claims());
        assert_eq!(URL_SAFE_NO_PAD.decode(segments[2]).unwrap().len(), 64);
    }

    #[test]
    fn public_jwks_have_the_members_of_their_key_type() {
        let ec = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem();
        let ed = KeyPair::generate_for(&PKCS_ED25519)
            .unwrap()
            .serialize_pem();
        let es256 = ReceiptSigner::from_pem(ReceiptAlgorithm::Es256, ec.as_bytes()).unwrap();
        let eddsa = ReceiptSigner::from_pem(ReceiptAlgorithm::EdDsa, ed.as_bytes()).unwrap();
        let ps512 = ReceiptSigner::from_pem(ReceiptAlgorithm::Ps512, RSA_PEM).unwrap();

        let names = |jwk: &Value| {
            let mut names: Vec<String> = jwk.as_object().unwrap().keys().cloned().collect();
            names.sort();
            names
        };
        assert_eq!(
            names(&es256.public_jwk()),
            ["alg", "crv", "kid", "kty", "use", "x", "y"]
        );
        assert_eq!(es256.public_jwk()["crv"], json!("P-256"));
        assert_eq!(
            names(&eddsa.public_jwk()),
            ["alg", "crv", "kid", "kty", "use", "x"]
        );
        assert_eq!(eddsa.public_jwk()["kty"], json!("OKP"));
        assert_eq!(eddsa.public_jwk()["crv"], json!("Ed25519"));
        assert_eq!(
            names(&ps512.public_jwk()),
            ["alg", "e", "kid", "kty", "n", "use"]
        );
        assert_eq!(ps512.public_jwk()["e"], json!("AQAB"));
        // 2048-bit modulus, no leading zero octet: 256 bytes = 342 base64url characters.
        assert_eq!(ps512.public_jwk()["n"].as_str().unwrap().len(), 342);
        for signer in [&es256, &eddsa, &ps512] {
            let jwk = signer.public_jwk();
            assert_eq!(jwk["use"], json!("sig"));
            assert_eq!(jwk["alg"], json!(signer.algorithm().as_str()));
            assert_eq!(jwk["kid"], json!(signer.kid()));
        }
    }

    #[test]
    fn kid_depends_on_the_key_not_the_algorithm() {
        let rs256 = ReceiptSigner::from_pem(ReceiptAlgorithm::Rs256, RSA_PEM).unwrap();
        let ps512 = ReceiptSigner::from_pem(ReceiptAlgorithm::Ps512, RSA_PEM).unwrap();
        assert_eq!(rs256.kid(), ps512.kid());
        let ec = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem();
        let es256 = ReceiptSigner::from_pem(ReceiptAlgorithm::Es256, ec.as_bytes()).unwrap();
        assert_ne!(es256.kid(), rs256.kid());
    }

    #[test]
    fn a_key_of_the_wrong_type_is_refused() {
        let ec = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem();
        let ed = KeyPair::generate_for(&PKCS_ED25519)
            .unwrap()
            .serialize_pem();
        let cases: [(ReceiptAlgorithm, &[u8]); 5] = [
            (ReceiptAlgorithm::Es256, ed.as_bytes()),
            (ReceiptAlgorithm::Es256, RSA_PEM),
            (ReceiptAlgorithm::EdDsa, ec.as_bytes()),
            (ReceiptAlgorithm::Ps512, ec.as_bytes()),
            (ReceiptAlgorithm::Rs256, ed.as_bytes()),
        ];
        for (algorithm, pem) in cases {
            match ReceiptSigner::from_pem(algorithm, pem) {
                Err(ReceiptError::KeyMismatch { algorithm: a, .. }) => assert_eq!(a, algorithm),
                other => panic!("{algorithm}: expected KeyMismatch, got {other:?}"),
            }
        }
    }

    #[test]
    fn non_pkcs8_pem_is_refused_with_what_was_found() {
        let ec = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let public = ec.public_key_pem();
        match ReceiptSigner::from_pem(ReceiptAlgorithm::Es256, public.as_bytes()) {
            Err(ReceiptError::KeyFormat { found, .. }) => assert_eq!(found, "a public key"),
            other => panic!("expected KeyFormat, got {other:?}"),
        }
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        match ReceiptSigner::from_pem(ReceiptAlgorithm::Es256, sec1.as_bytes()) {
            Err(ReceiptError::KeyFormat { found, .. }) => {
                assert_eq!(found, "a SEC1 EC private key")
            }
            other => panic!("expected KeyFormat, got {other:?}"),
        }
    }

    #[test]
    fn empty_or_broken_pem_is_refused() {
        assert!(matches!(
            ReceiptSigner::from_pem(ReceiptAlgorithm::Es256, b"not pem at all"),
            Err(ReceiptError::NoKey)
        ));
        assert!(matches!(
            ReceiptSigner::from_pem(
                ReceiptAlgorithm::Es256,
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n"
            ),
            Err(ReceiptError::Pem(_))
        ));
    }

    #[test]
    fn pem_syntax_errors_quote_the_section_label_as_text() {
        let error = ReceiptSigner::from_pem(
            ReceiptAlgorithm::Es256,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n",
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"the key file is not valid PEM: section end "PRIVATE KEY" missing"#
        );
    }

    #[test]
    fn garbage_pkcs8_is_a_key_mismatch_not_a_panic() {
        let pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        for algorithm in [
            ReceiptAlgorithm::Es256,
            ReceiptAlgorithm::EdDsa,
            ReceiptAlgorithm::Rs256,
        ] {
            assert!(matches!(
                ReceiptSigner::from_pem(algorithm, pem.as_bytes()),
                Err(ReceiptError::KeyMismatch { .. })
            ));
        }
    }
}

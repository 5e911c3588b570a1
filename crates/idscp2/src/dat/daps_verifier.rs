//! Verifying a peer's DAT against the DAPS: signature by `kid` from the DAPS key set (JWKS), then
//! the claims idscp2-jvm checks (spec section 6).
//!
//! The JWKS is fetched lazily and cached. A `kid` we do not know may mean the DAPS rotated its keys,
//! so it triggers a refetch, but at most one per `jwks_refetch_interval`: otherwise anyone could make
//! us hammer the DAPS by sending tokens with made-up key ids. Fetches are serialized, so a burst of
//! handshakes after start-up or a rotation produces one request, not one per connection.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures::future::BoxFuture;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::{seconds, unix_now, DatError, DatVerifier, VerifiedDat};
use crate::tls::PeerCertificate;

/// What a peer whose DAPS request failed sends instead of a DAT.
const INVALID_DAT: &str = "INVALID_DAT";

/// Asymmetric algorithms only: `none` and HMAC would let anyone who can read the JWKS forge tokens.
const ACCEPTED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Where the DAPS signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS document on disk, read once at construction (for air-gapped or pinned setups).
    File(PathBuf),
    /// The DAPS JWKS endpoint, usually `{issuer}/.well-known/jwks.json`.
    Url(String),
}

/// How to verify the peer's DATs: the DAPS's issuer and keys, and our policy.
#[derive(Debug, Clone)]
pub struct DapsVerifierConfig {
    /// Expected `iss`: the DAPS issuer URL.
    pub issuer: String,
    /// Where the DAPS's public keys come from.
    pub jwks: JwksSource,
    /// A DAT is accepted when its `aud` contains any of these.
    pub audiences: Vec<String>,
    /// When set, the DAT's `securityProfile` must be at least this (BASE < TRUST < TRUST_PLUS).
    pub minimum_security_profile: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// Minimum time between JWKS fetches triggered by an unknown `kid`.
    pub jwks_refetch_interval: Duration,
    /// Used for JWKS fetches; give it timeouts (see [`super::daps_http_client`]).
    pub http: reqwest::Client,
}

impl DapsVerifierConfig {
    /// The audiences idscp2-jvm accepts: the current IDS one and its predecessor.
    pub const DEFAULT_AUDIENCES: [&'static str; 2] = ["idsc:IDS_CONNECTORS_ALL", "IDS_Connector"];
    /// Clock skew tolerated for `exp`, `nbf` and `iat`.
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
    /// Least time between two fetches of the key set for an unknown `kid`.
    pub const DEFAULT_JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);

    /// A configuration with the defaults above and no security profile requirement.
    pub fn new(issuer: impl Into<String>, jwks: JwksSource, http: reqwest::Client) -> Self {
        Self {
            issuer: issuer.into(),
            jwks,
            audiences: Self::DEFAULT_AUDIENCES.map(String::from).to_vec(),
            minimum_security_profile: None,
            leeway: Self::DEFAULT_LEEWAY,
            jwks_refetch_interval: Self::DEFAULT_JWKS_REFETCH_INTERVAL,
            http,
        }
    }
}

/// Verifies DATs issued by one DAPS.
pub struct DapsVerifier {
    issuer: String,
    audiences: Vec<String>,
    minimum_security_profile: Option<SecurityProfile>,
    leeway: Duration,
    keys: KeyCache,
}

impl DapsVerifier {
    /// Reads a `File` key set at once, so a bad file stops start-up rather than every handshake.
    pub fn new(config: DapsVerifierConfig) -> Result<Self, DatError> {
        let minimum_security_profile = config
            .minimum_security_profile
            .as_deref()
            .map(|name| {
                SecurityProfile::parse(name)
                    .ok_or_else(|| DatError::UnknownSecurityProfile(name.to_owned()))
            })
            .transpose()?;
        let keys = match config.jwks {
            JwksSource::File(path) => {
                let set = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|body| parse_jwks(&body))
                    .map_err(|reason| DatError::JwksFile { path, reason })?;
                KeyCache::new(set, KeySource::File)
            }
            JwksSource::Url(url) => KeyCache::new(
                KeySet::new(),
                KeySource::Url {
                    url,
                    http: config.http,
                    refetch_interval: config.jwks_refetch_interval,
                    fetch: tokio::sync::Mutex::new(FetchState::default()),
                },
            ),
        };
        Ok(Self {
            issuer: config.issuer,
            audiences: config.audiences,
            minimum_security_profile,
            leeway: config.leeway,
            keys,
        })
    }

    /// Without `peer`, the token is taken as a bearer token: not bound to a certificate.
    async fn verify_token(
        &self,
        token: &[u8],
        peer: Option<&PeerCertificate>,
    ) -> Result<VerifiedDat, DatError> {
        // The DAT's `sub` is a connector id made of the certificate's key identifiers; a
        // certificate without them is no connector's, whatever the token says.
        if let Some(peer) = peer {
            if !peer.has_subject_key_id().map_err(DatError::PeerIdentity)? {
                return Err(DatError::NoSubjectKeyIdentifier {
                    certificate: peer.subject(),
                });
            }
        }
        let token = std::str::from_utf8(token)
            .map_err(|_| DatError::Malformed("not UTF-8".to_owned()))?
            .trim();
        if token == INVALID_DAT {
            return Err(DatError::InvalidDatLiteral);
        }
        let (algorithm, kid) = read_header(token)?;
        let key = self.keys.get(&kid).await?;
        // A key of another family (an RS256 token under an EC key's id) is the same refusal
        // as a JWK that declares another `alg`; jsonwebtoken would only say "invalid key format".
        if key.algorithm.is_some_and(|declared| declared != algorithm)
            || key.key.family() != algorithm.family()
        {
            return Err(DatError::KeyAlgorithmMismatch(kid));
        }
        let claims = verify_signature(token, &key.key, algorithm, &kid)?;
        let (subject, expires_in) = self.check_claims(&claims, peer)?;
        Ok(VerifiedDat {
            subject,
            claims,
            expires_in: Some(expires_in),
        })
    }

    /// Applies every claim check; returns the subject and the time left until `exp`.
    fn check_claims(
        &self,
        claims: &Value,
        peer: Option<&PeerCertificate>,
    ) -> Result<(String, Duration), DatError> {
        let now = unix_now();
        let leeway = self.leeway.as_secs_f64();
        let exp = numeric_date(claims, "exp")?.ok_or(DatError::MissingClaim("exp"))?;
        if exp + leeway < now {
            return Err(DatError::Expired);
        }
        if numeric_date(claims, "nbf")?.is_some_and(|nbf| nbf > now + leeway) {
            return Err(DatError::NotYetValid);
        }
        if string_claim(claims, "iss")? != self.issuer {
            return Err(DatError::IssuerMismatch {
                expected: self.issuer.clone(),
            });
        }
        let audiences = string_or_list(claims, "aud")?;
        if !audiences.iter().any(|aud| self.audiences.contains(aud)) {
            return Err(DatError::AudienceMismatch {
                expected: self.audiences.clone(),
            });
        }
        let subject = string_claim(claims, "sub")?;
        if let Some(peer) = peer {
            let fingerprints = string_or_list(claims, "transportCertsSha256")?;
            if !fingerprints
                .iter()
                .flat_map(|entry| entry.split_whitespace())
                .any(|entry| same_fingerprint(entry, &peer.fingerprint))
            {
                return Err(DatError::FingerprintMismatch);
            }
        }
        if let Some(minimum) = self.minimum_security_profile {
            let actual = string_claim(claims, "securityProfile")?;
            if SecurityProfile::parse(&actual).is_none_or(|profile| profile < minimum) {
                return Err(DatError::SecurityProfileTooLow {
                    actual,
                    minimum: minimum.name().to_owned(),
                });
            }
        }
        Ok((subject, seconds(exp - now)))
    }
}

impl DatVerifier for DapsVerifier {
    fn verify<'a>(
        &'a self,
        token: &'a [u8],
        peer: &'a PeerCertificate,
    ) -> BoxFuture<'a, Result<VerifiedDat, DatError>> {
        Box::pin(self.verify_token(token, Some(peer)))
    }

    fn verify_unbound<'a>(
        &'a self,
        token: &'a [u8],
    ) -> BoxFuture<'a, Result<VerifiedDat, DatError>> {
        Box::pin(self.verify_token(token, None))
    }
}

/// IDS security profiles in ascending strength. The IDS-G names (`idsc:TRUST_SECURITY_PROFILE`)
/// and the older ones idscp2-jvm compares against (`idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE`) are
/// both accepted, with or without the `idsc:` prefix, as are the short forms for configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SecurityProfile {
    Base,
    Trust,
    TrustPlus,
}

impl SecurityProfile {
    fn parse(name: &str) -> Option<Self> {
        match name.strip_prefix("idsc:").unwrap_or(name) {
            "BASE" | "BASE_SECURITY_PROFILE" | "BASE_CONNECTOR_SECURITY_PROFILE" => {
                Some(Self::Base)
            }
            "TRUST" | "TRUST_SECURITY_PROFILE" | "TRUSTED_CONNECTOR_SECURITY_PROFILE" => {
                Some(Self::Trust)
            }
            "TRUST_PLUS"
            | "TRUST_PLUS_SECURITY_PROFILE"
            | "TRUSTED_CONNECTOR_PLUS_SECURITY_PROFILE" => Some(Self::TrustPlus),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Base => "idsc:BASE_SECURITY_PROFILE",
            Self::Trust => "idsc:TRUST_SECURITY_PROFILE",
            Self::TrustPlus => "idsc:TRUST_PLUS_SECURITY_PROFILE",
        }
    }
}

/// Reads `alg` and `kid` ourselves instead of through jsonwebtoken, whose header type cannot even
/// represent `none` and would report it as a parse error rather than a refused algorithm.
fn read_header(token: &str) -> Result<(Algorithm, String), DatError> {
    let encoded = token
        .split('.')
        .next()
        .filter(|_| token.split('.').count() == 3)
        .ok_or_else(|| DatError::Malformed("expected three dot-separated parts".to_owned()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|e| DatError::Malformed(format!("header is not base64url: {e}")))?;
    let header: Value = serde_json::from_slice(&bytes)
        .map_err(|e| DatError::Malformed(format!("header is not JSON: {e}")))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| DatError::Malformed("header has no alg".to_owned()))?;
    let algorithm = Algorithm::from_str(alg)
        .ok()
        .filter(|algorithm| ACCEPTED_ALGORITHMS.contains(algorithm))
        .ok_or_else(|| DatError::AlgorithmNotAccepted(alg.to_owned()))?;
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(DatError::MissingKid)?;
    Ok((algorithm, kid.to_owned()))
}

/// Checks the signature only; every claim is checked by us, with our own error for each.
fn verify_signature(
    token: &str,
    key: &DecodingKey,
    algorithm: Algorithm,
    kid: &str,
) -> Result<Value, DatError> {
    let mut validation = Validation::new(algorithm);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => DatError::BadSignature,
            ErrorKind::InvalidAlgorithm => DatError::KeyAlgorithmMismatch(kid.to_owned()),
            _ => DatError::Malformed(e.to_string()),
        })
}

fn numeric_date(claims: &Value, claim: &'static str) -> Result<Option<f64>, DatError> {
    match claims.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_f64().map(Some).ok_or(DatError::MalformedClaim {
            claim,
            expected: "a NumericDate",
        }),
    }
}

fn string_claim(claims: &Value, claim: &'static str) -> Result<String, DatError> {
    match claims.get(claim) {
        None | Some(Value::Null) => Err(DatError::MissingClaim(claim)),
        Some(Value::String(s)) if s.is_empty() => Err(DatError::MissingClaim(claim)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(DatError::MalformedClaim {
            claim,
            expected: "a string",
        }),
    }
}

/// A claim that may be a single string or a list of strings (`aud`, `transportCertsSha256`).
fn string_or_list(claims: &Value, claim: &'static str) -> Result<Vec<String>, DatError> {
    let malformed = DatError::MalformedClaim {
        claim,
        expected: "a string or a list of strings",
    };
    match claims.get(claim) {
        None | Some(Value::Null) => Err(DatError::MissingClaim(claim)),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(malformed),
        Some(_) => Err(malformed),
    }
}

/// Case-insensitive, and tolerant of the colon-separated form certificate tools print.
fn same_fingerprint(claimed: &str, actual: &str) -> bool {
    let mut claimed = claimed.chars().filter(|c| *c != ':');
    let mut actual = actual.chars();
    loop {
        match (claimed.next(), actual.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(&b) => {}
            _ => return false,
        }
    }
}

#[derive(Clone)]
struct JwksKey {
    key: DecodingKey,
    /// The JWK's own `alg`, when it declares one; a token must then use exactly that.
    algorithm: Option<Algorithm>,
}

type KeySet = HashMap<String, JwksKey>;

/// Parses a JWKS, skipping entries we cannot or must not use (encryption keys, symmetric keys,
/// key types jsonwebtoken does not know) instead of failing the whole set because of one of them.
fn parse_jwks(body: &[u8]) -> Result<KeySet, String> {
    let document: Value =
        serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let entries = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS has no \"keys\" array")?;
    let mut set = KeySet::new();
    for entry in entries {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            tracing::debug!("skipping a JWKS entry jsonwebtoken cannot parse");
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
            || matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
        {
            continue;
        }
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let algorithm = match jwk.common.key_algorithm {
            None => None,
            Some(declared) => match Algorithm::from_str(&declared.to_string()) {
                Ok(algorithm) => Some(algorithm),
                // An encryption algorithm such as RSA-OAEP: not a signing key.
                Err(_) => continue,
            },
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            tracing::debug!(kid, "skipping a JWKS entry with unusable key material");
            continue;
        };
        set.insert(kid, JwksKey { key, algorithm });
    }
    if set.is_empty() {
        return Err("JWKS contains no usable signing key".to_owned());
    }
    Ok(set)
}

enum KeySource {
    File,
    Url {
        url: String,
        http: reqwest::Client,
        refetch_interval: Duration,
        /// Held across a fetch, so concurrent misses wait for one request instead of each sending one.
        fetch: tokio::sync::Mutex<FetchState>,
    },
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

struct KeyCache {
    current: Mutex<Arc<KeySet>>,
    source: KeySource,
}

impl KeyCache {
    fn new(set: KeySet, source: KeySource) -> Self {
        Self {
            current: Mutex::new(Arc::new(set)),
            source,
        }
    }

    fn cached(&self, kid: &str) -> Option<JwksKey> {
        let set = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        set.get(kid).cloned()
    }

    async fn get(&self, kid: &str) -> Result<JwksKey, DatError> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let KeySource::Url {
            url,
            http,
            refetch_interval,
            fetch,
        } = &self.source
        else {
            return Err(DatError::UnknownKid(kid.to_owned()));
        };
        let mut state = fetch.lock().await;
        // Whoever held the lock before us may have fetched the key we are looking for.
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        if let Some(last) = state.last_attempt {
            if last.elapsed() < *refetch_interval {
                return Err(match &state.last_error {
                    Some(error) => DatError::JwksFetch(format!(
                        "{error} (next attempt at most once per {}s)",
                        refetch_interval.as_secs()
                    )),
                    None => DatError::UnknownKid(kid.to_owned()),
                });
            }
        }
        state.last_attempt = Some(Instant::now());
        match fetch_jwks(http, url).await {
            Ok(set) => {
                state.last_error = None;
                *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
            }
            Err(error) => {
                state.last_error = Some(error.clone());
                return Err(DatError::JwksFetch(error));
            }
        }
        self.cached(kid)
            .ok_or_else(|| DatError::UnknownKid(kid.to_owned()))
    }
}

async fn fetch_jwks(http: &reqwest::Client, url: &str) -> Result<KeySet, String> {
    tracing::debug!(url, "fetching the DAPS JWKS");
    let response = http
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| e.to_string())?;
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    parse_jwks(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::signature::KeyPair;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls_pki_types::pem::PemObject;
    use serde_json::json;

    const DAPS_KEY: &[u8] = include_bytes!("../../tests/fixtures/daps-rsa.key");
    const OTHER_RSA_KEY: &[u8] = include_bytes!("../../tests/fixtures/rsa-pkcs1.key");
    const ISSUER: &str = "https://daps.example";
    const KID: &str = "daps-key-1";

    /// One connector certificate (with key identifiers) for every test.
    fn peer() -> PeerCertificate {
        static PEER: std::sync::OnceLock<CertificateDer<'static>> = std::sync::OnceLock::new();
        let der = PEER.get_or_init(|| {
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let issuer = rcgen::Issuer::new(ca, ca_key);
            let mut leaf = rcgen::CertificateParams::new(vec!["peer".to_owned()]).unwrap();
            leaf.is_ca = rcgen::IsCa::ExplicitNoCa;
            leaf.use_authority_key_identifier_extension = true;
            leaf.signed_by(&rcgen::KeyPair::generate().unwrap(), &issuer)
                .unwrap()
                .der()
                .clone()
        });
        PeerCertificate::new(der.clone())
    }

    fn rsa_jwk(kid: &str) -> Value {
        let pem = PrivateKeyDer::from_pem_slice(DAPS_KEY).unwrap();
        let pair = ring::rsa::KeyPair::from_pkcs8(pem.secret_der()).unwrap();
        let components = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
        json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(&components.n),
            "e": URL_SAFE_NO_PAD.encode(&components.e),
        })
    }

    fn now() -> i64 {
        unix_now() as i64
    }

    fn valid_claims() -> Value {
        json!({
            "iss": ISSUER,
            "sub": "D2:70:1A:2A:keyid:CB:8C:0E:E8",
            "aud": ["idsc:IDS_CONNECTORS_ALL"],
            "iat": now(),
            "nbf": now(),
            "exp": now() + 3600,
            "securityProfile": "idsc:BASE_SECURITY_PROFILE",
            "transportCertsSha256": [peer().fingerprint],
            "scope": "idsc:IDS_CONNECTOR_ATTRIBUTES_ALL",
        })
    }

    fn sign_with(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn sign(claims: &Value) -> String {
        let key = EncodingKey::from_rsa_pem(DAPS_KEY).unwrap();
        sign_with(Algorithm::RS256, &key, Some(KID), claims)
    }

    fn with(claim: &str, value: Value) -> Value {
        let mut claims = valid_claims();
        claims[claim] = value;
        claims
    }

    fn without(claim: &str) -> Value {
        let mut claims = valid_claims();
        claims.as_object_mut().unwrap().remove(claim);
        claims
    }

    /// A verifier reading `jwks` from a file; the directory lives as long as the test needs it.
    fn verifier_for(
        jwks: &Value,
        adjust: impl FnOnce(&mut DapsVerifierConfig),
    ) -> (DapsVerifier, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks.to_string()).unwrap();
        let mut config =
            DapsVerifierConfig::new(ISSUER, JwksSource::File(path), reqwest::Client::new());
        adjust(&mut config);
        (DapsVerifier::new(config).unwrap(), dir)
    }

    fn verifier() -> (DapsVerifier, tempfile::TempDir) {
        verifier_for(&json!({ "keys": [rsa_jwk(KID)] }), |_| {})
    }

    async fn verify(verifier: &DapsVerifier, token: &str) -> Result<VerifiedDat, DatError> {
        verifier.verify(token.as_bytes(), &peer()).await
    }

    async fn verify_claims(claims: &Value) -> Result<VerifiedDat, DatError> {
        let (verifier, _dir) = verifier();
        verify(&verifier, &sign(claims)).await
    }

    #[tokio::test]
    async fn accepts_a_valid_dat() {
        let claims = valid_claims();
        let dat = verify_claims(&claims).await.unwrap();
        assert_eq!(dat.subject, "D2:70:1A:2A:keyid:CB:8C:0E:E8");
        assert_eq!(dat.claims, claims);
        let expires_in = dat.expires_in.unwrap();
        assert!(expires_in > Duration::from_secs(3590) && expires_in <= Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn rejects_an_expired_dat() {
        let err = verify_claims(&with("exp", json!(now() - 60)))
            .await
            .unwrap_err();
        assert!(matches!(err, DatError::Expired), "{err}");
        assert_eq!(err.to_string(), "DAT expired");
    }

    #[tokio::test]
    async fn tolerates_expiry_within_the_leeway() {
        let dat = verify_claims(&with("exp", json!(now() - 10)))
            .await
            .unwrap();
        assert_eq!(dat.expires_in, Some(Duration::ZERO));
    }

    #[tokio::test]
    async fn rejects_a_dat_without_exp() {
        let err = verify_claims(&without("exp")).await.unwrap_err();
        assert!(matches!(err, DatError::MissingClaim("exp")), "{err}");
    }

    #[tokio::test]
    async fn rejects_a_dat_not_yet_valid() {
        let err = verify_claims(&with("nbf", json!(now() + 600)))
            .await
            .unwrap_err();
        assert!(matches!(err, DatError::NotYetValid), "{err}");
    }

    #[tokio::test]
    async fn rejects_a_wrong_issuer() {
        let err = verify_claims(&with("iss", json!("https://other.example")))
            .await
            .unwrap_err();
        assert!(matches!(err, DatError::IssuerMismatch { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "DAT issuer mismatch: expected https://daps.example"
        );
    }

    #[tokio::test]
    async fn rejects_a_wrong_audience() {
        let err = verify_claims(&with("aud", json!(["idsc:SOMEONE_ELSE"])))
            .await
            .unwrap_err();
        assert!(matches!(err, DatError::AudienceMismatch { .. }), "{err}");
    }

    #[tokio::test]
    async fn accepts_the_legacy_audience_as_a_plain_string() {
        verify_claims(&with("aud", json!("IDS_Connector")))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn rejects_a_bad_signature() {
        let other = EncodingKey::from_rsa_pem(OTHER_RSA_KEY).unwrap();
        let token = sign_with(Algorithm::RS256, &other, Some(KID), &valid_claims());
        let (verifier, _dir) = verifier();
        let err = verify(&verifier, &token).await.unwrap_err();
        assert!(matches!(err, DatError::BadSignature), "{err}");
    }

    #[tokio::test]
    async fn rejects_an_unknown_kid() {
        let key = EncodingKey::from_rsa_pem(DAPS_KEY).unwrap();
        let token = sign_with(Algorithm::RS256, &key, Some("rotated"), &valid_claims());
        let (verifier, _dir) = verifier();
        let err = verify(&verifier, &token).await.unwrap_err();
        assert!(
            matches!(err, DatError::UnknownKid(ref kid) if kid == "rotated"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn rejects_a_token_without_kid() {
        let key = EncodingKey::from_rsa_pem(DAPS_KEY).unwrap();
        let token = sign_with(Algorithm::RS256, &key, None, &valid_claims());
        let (verifier, _dir) = verifier();
        let err = verify(&verifier, &token).await.unwrap_err();
        assert!(matches!(err, DatError::MissingKid), "{err}");
    }

    #[tokio::test]
    async fn an_unbound_dat_passes_every_check_but_the_certificate() {
        let (verifier, _dir) = verifier();
        let other = "ab".repeat(32);
        let token = sign(&with("transportCertsSha256", json!([other])));
        let dat = verifier.verify_unbound(token.as_bytes()).await.unwrap();
        assert_eq!(dat.subject, valid_claims()["sub"]);
        let expired = sign(&with("exp", json!(1_000_000_000)));
        let err = verifier
            .verify_unbound(expired.as_bytes())
            .await
            .unwrap_err();
        assert!(matches!(err, DatError::Expired), "{err}");
        let issuer = sign(&with("iss", json!("https://other.example")));
        let err = verifier
            .verify_unbound(issuer.as_bytes())
            .await
            .unwrap_err();
        assert!(matches!(err, DatError::IssuerMismatch { .. }), "{err}");
        let err = crate::dat::DevelopmentVerifier::new()
            .verify_unbound(token.as_bytes())
            .await
            .unwrap_err();
        assert!(matches!(err, DatError::CertificateRequired), "{err}");
    }

    #[tokio::test]
    async fn rejects_a_dat_for_another_certificate() {
        let other = "ab".repeat(32);
        let err = verify_claims(&with("transportCertsSha256", json!([other])))
            .await
            .unwrap_err();
        assert!(matches!(err, DatError::FingerprintMismatch), "{err}");
    }

    #[tokio::test]
    async fn rejects_a_dat_without_fingerprint() {
        let err = verify_claims(&without("transportCertsSha256"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DatError::MissingClaim("transportCertsSha256")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn finds_the_fingerprint_in_every_accepted_shape() {
        let ours = peer().fingerprint;
        let other = "ab".repeat(32);
        let colon_separated = ours
            .as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        for shape in [
            json!(ours.to_uppercase()),
            json!(format!("{other} {ours}")),
            json!([other, ours]),
            json!(colon_separated),
        ] {
            verify_claims(&with("transportCertsSha256", shape.clone()))
                .await
                .unwrap_or_else(|e| panic!("{shape}: {e}"));
        }
    }

    #[tokio::test]
    async fn rejects_the_invalid_dat_literal_and_garbage() {
        let (verifier, _dir) = verifier();
        let err = verify(&verifier, "INVALID_DAT").await.unwrap_err();
        assert!(matches!(err, DatError::InvalidDatLiteral), "{err}");
        for garbage in ["", "a.b", "not.a.jwt", "\u{fffd}.x.y"] {
            let err = verify(&verifier, garbage).await.unwrap_err();
            assert!(matches!(err, DatError::Malformed(_)), "{garbage:?}: {err}");
        }
        let err = verifier.verify(&[0xff, 0xfe], &peer()).await.unwrap_err();
        assert!(matches!(err, DatError::Malformed(_)), "{err}");
    }

    #[tokio::test]
    async fn rejects_a_dat_without_sub() {
        let err = verify_claims(&without("sub")).await.unwrap_err();
        assert!(matches!(err, DatError::MissingClaim("sub")), "{err}");
        let err = verify_claims(&with("sub", json!(42))).await.unwrap_err();
        assert!(
            matches!(err, DatError::MalformedClaim { claim: "sub", .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn enforces_a_minimum_security_profile() {
        let (verifier, _dir) = verifier_for(&json!({ "keys": [rsa_jwk(KID)] }), |config| {
            config.minimum_security_profile = Some("TRUST".to_owned());
        });
        let base = sign(&valid_claims());
        let err = verify(&verifier, &base).await.unwrap_err();
        assert!(
            matches!(err, DatError::SecurityProfileTooLow { .. }),
            "{err}"
        );

        for accepted in [
            "idsc:TRUST_SECURITY_PROFILE",
            "TRUST_PLUS_SECURITY_PROFILE",
            "idsc:TRUSTED_CONNECTOR_SECURITY_PROFILE",
        ] {
            let token = sign(&with("securityProfile", json!(accepted)));
            verify(&verifier, &token)
                .await
                .unwrap_or_else(|e| panic!("{accepted}: {e}"));
        }
        let unknown = sign(&with("securityProfile", json!("idsc:GOLD")));
        let err = verify(&verifier, &unknown).await.unwrap_err();
        assert!(
            matches!(err, DatError::SecurityProfileTooLow { .. }),
            "{err}"
        );
        let missing = sign(&without("securityProfile"));
        let err = verify(&verifier, &missing).await.unwrap_err();
        assert!(
            matches!(err, DatError::MissingClaim("securityProfile")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn ignores_the_security_profile_without_a_minimum() {
        verify_claims(&without("securityProfile")).await.unwrap();
    }

    #[test]
    fn refuses_an_unknown_minimum_security_profile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, json!({ "keys": [rsa_jwk(KID)] }).to_string()).unwrap();
        let mut config =
            DapsVerifierConfig::new(ISSUER, JwksSource::File(path), reqwest::Client::new());
        config.minimum_security_profile = Some("GOLD".to_owned());
        assert!(matches!(
            DapsVerifier::new(config),
            Err(DatError::UnknownSecurityProfile(_))
        ));
    }

    #[tokio::test]
    async fn refuses_hmac_and_none() {
        let (verifier, _dir) = verifier();
        let hmac = sign_with(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"public knowledge").unwrap(),
            Some(KID),
            &valid_claims(),
        );
        let err = verify(&verifier, &hmac).await.unwrap_err();
        assert!(
            matches!(err, DatError::AlgorithmNotAccepted(ref a) if a == "HS256"),
            "{err}"
        );

        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"daps-key-1"}"#);
        let payload = URL_SAFE_NO_PAD.encode(valid_claims().to_string());
        let unsigned = format!("{header}.{payload}.");
        let err = verify(&verifier, &unsigned).await.unwrap_err();
        assert!(
            matches!(err, DatError::AlgorithmNotAccepted(ref a) if a == "none"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn refuses_an_algorithm_other_than_the_one_the_jwk_declares() {
        let key = EncodingKey::from_rsa_pem(DAPS_KEY).unwrap();
        let token = sign_with(Algorithm::PS256, &key, Some(KID), &valid_claims());
        let (verifier, _dir) = verifier();
        let err = verify(&verifier, &token).await.unwrap_err();
        assert!(matches!(err, DatError::KeyAlgorithmMismatch(_)), "{err}");
    }

    #[tokio::test]
    async fn accepts_ps256_and_es256() {
        let mut rsa_without_alg = rsa_jwk("rsa");
        rsa_without_alg.as_object_mut().unwrap().remove("alg");

        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        // An uncompressed P-256 point: 0x04, then x and y of 32 bytes each.
        let point = pair.public_key().as_ref();
        let ec_jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": "ec", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        });
        let (verifier, _dir) = verifier_for(&json!({ "keys": [rsa_without_alg, ec_jwk] }), |_| {});

        let rsa = EncodingKey::from_rsa_pem(DAPS_KEY).unwrap();
        let ps256 = sign_with(Algorithm::PS256, &rsa, Some("rsa"), &valid_claims());
        verify(&verifier, &ps256).await.unwrap();

        let ec = EncodingKey::from_ec_der(pkcs8.as_ref());
        let es256 = sign_with(Algorithm::ES256, &ec, Some("ec"), &valid_claims());
        verify(&verifier, &es256).await.unwrap();

        // An RSA signature presented under the EC key's id must not get through.
        let mismatched = sign_with(Algorithm::RS256, &rsa, Some("ec"), &valid_claims());
        let err = verify(&verifier, &mismatched).await.unwrap_err();
        assert!(matches!(err, DatError::KeyAlgorithmMismatch(_)), "{err}");
    }

    #[test]
    fn jwks_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing-jwks.json");
        let config =
            DapsVerifierConfig::new(ISSUER, JwksSource::File(missing), reqwest::Client::new());
        let err = DapsVerifier::new(config).err().unwrap();
        assert!(err.to_string().contains("missing-jwks.json"), "{err}");

        let empty = dir.path().join("empty-jwks.json");
        std::fs::write(
            &empty,
            r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}"#,
        )
        .unwrap();
        let config =
            DapsVerifierConfig::new(ISSUER, JwksSource::File(empty), reqwest::Client::new());
        let err = DapsVerifier::new(config).err().unwrap();
        assert!(err.to_string().contains("empty-jwks.json"), "{err}");
        assert!(err.to_string().contains("no usable signing key"), "{err}");
    }

    #[tokio::test]
    async fn jwks_file_skips_entries_it_cannot_use() {
        let jwks = json!({ "keys": [
            { "kty": "RSA", "use": "enc", "kid": KID, "n": "AQAB", "e": "AQAB" },
            { "kty": "weird", "kid": "x" },
            rsa_jwk(KID),
        ]});
        let (verifier, _dir) = verifier_for(&jwks, |_| {});
        verify(&verifier, &sign(&valid_claims())).await.unwrap();
    }

    #[test]
    fn default_configuration_matches_idscp2_jvm() {
        let config = DapsVerifierConfig::new(
            ISSUER,
            JwksSource::Url(format!("{ISSUER}/.well-known/jwks.json")),
            reqwest::Client::new(),
        );
        assert_eq!(
            config.audiences,
            vec![
                "idsc:IDS_CONNECTORS_ALL".to_owned(),
                "IDS_Connector".to_owned()
            ]
        );
        assert_eq!(config.leeway, Duration::from_secs(30));
        assert_eq!(config.jwks_refetch_interval, Duration::from_secs(60));
        assert_eq!(config.minimum_security_profile, None);
    }
}

//! Obtaining our own DAT from a DAPS: OAuth2 client credentials, authenticated by a `private_key_jwt`
//! client assertion signed with our connector key (RFC 7523), as IDS DAPS instances expect.
//!
//! The DAT is cached and shared by every connection; it is renewed once less than half of its
//! lifetime remains, so a DAT we hand out always has a useful life left, and one request at a time
//! goes to the DAPS however many handshakes need a token at once.

use std::fmt;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use futures::future::BoxFuture;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use rustls::pki_types::PrivateKeyDer;
use rustls_pki_types::pem::{self, PemObject};
use serde_json::{json, Value};

use super::{seconds, unix_now, DatError, DatIssuer};

/// How long our client assertion is valid: long enough for clock skew, short against replay.
const ASSERTION_LIFETIME_SECS: i64 = 60;

/// Longest error text from a DAPS we repeat in our own errors.
const MAX_ERROR_TEXT: usize = 200;

/// Where and as whom to ask a DAPS for our DAT.
#[derive(Clone)]
pub struct DapsIssuerConfig {
    /// The DAPS token endpoint, also the `aud` of our client assertion.
    pub token_url: String,
    /// Our connector id, `SKI:keyid:AKI` of our certificate: `iss` and `sub` of the assertion.
    pub client_id: String,
    /// Our connector private key in PEM: RSA (RS256 assertion) or EC P-256 (ES256 assertion).
    pub key_pem: Vec<u8>,
    /// The scope asked for ([`Self::DEFAULT_SCOPE`] unless set).
    pub scope: String,
    /// Used for token requests; give it timeouts (see [`super::daps_http_client`]).
    pub http: reqwest::Client,
}

impl DapsIssuerConfig {
    /// The scope every IDS connector asks for.
    pub const DEFAULT_SCOPE: &'static str = "idsc:IDS_CONNECTOR_ATTRIBUTES_ALL";

    /// A configuration with the default scope.
    pub fn new(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        key_pem: Vec<u8>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            token_url: token_url.into(),
            client_id: client_id.into(),
            key_pem,
            scope: Self::DEFAULT_SCOPE.to_owned(),
            http,
        }
    }
}

/// Written by hand so that the private key never reaches a log.
impl fmt::Debug for DapsIssuerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DapsIssuerConfig")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("key_pem", &"<redacted>")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Obtains our DAT from a DAPS (OAuth 2 client credentials with a signed JWT assertion) and keeps it until it is due for renewal.
pub struct DapsIssuer {
    token_url: String,
    client_id: String,
    scope: String,
    http: reqwest::Client,
    key: AssertionKey,
    /// Held across a renewal, which is what keeps renewals one at a time.
    cache: tokio::sync::Mutex<Option<CachedToken>>,
}

struct CachedToken {
    token: Bytes,
    fetched: Instant,
    lifetime: Duration,
}

impl CachedToken {
    fn remaining(&self) -> Duration {
        self.lifetime.saturating_sub(self.fetched.elapsed())
    }
}

impl DapsIssuer {
    /// Parses the key now, so a wrong key stops start-up instead of the first handshake.
    /// Nothing is fetched until the first [`DatIssuer::token`] call.
    pub fn new(config: DapsIssuerConfig) -> Result<Self, DatError> {
        Ok(Self {
            key: AssertionKey::from_pem(&config.key_pem)?,
            token_url: config.token_url,
            client_id: config.client_id,
            scope: config.scope,
            http: config.http,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    async fn current(&self) -> Result<Bytes, DatError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref() {
            if cached.remaining() > cached.lifetime / 2 {
                return Ok(cached.token.clone());
            }
        }
        match self.fetch().await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                *cache = Some(fresh);
                Ok(token)
            }
            // A DAPS outage should not cut us off while the DAT we have is still good.
            Err(error) => match cache.as_ref().filter(|c| !c.remaining().is_zero()) {
                Some(cached) => {
                    tracing::warn!(%error, "DAT renewal failed, keeping the current DAT until it expires");
                    Ok(cached.token.clone())
                }
                None => Err(error),
            },
        }
    }

    async fn fetch(&self) -> Result<CachedToken, DatError> {
        let assertion = self.assertion()?;
        tracing::debug!(url = %self.token_url, "requesting a DAT from the DAPS");
        let response = self
            .http
            .post(&self.token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
                ("scope", self.scope.as_str()),
            ])
            .send()
            .await
            .map_err(|e| DatError::TokenRequest(e.to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| DatError::TokenRequest(e.to_string()))?;
        if !status.is_success() {
            return Err(DatError::TokenRequest(format!(
                "HTTP {status}{}",
                oauth_error(&body)
            )));
        }
        let fetched = Instant::now();
        let response: Value = serde_json::from_slice(&body)
            .map_err(|e| DatError::TokenRequest(format!("response is not JSON: {e}")))?;
        let token = response
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| DatError::TokenRequest("response has no access_token".to_owned()))?;
        let lifetime = token_lifetime(token, response.get("expires_in"), unix_now())?;
        Ok(CachedToken {
            token: Bytes::copy_from_slice(token.as_bytes()),
            fetched,
            lifetime,
        })
    }

    fn assertion(&self) -> Result<String, DatError> {
        let now = unix_now() as i64;
        let header = json!({ "alg": self.key.algorithm(), "typ": "JWT" });
        let claims = json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "iat": now,
            "nbf": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(signing_input.as_bytes())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

impl DatIssuer for DapsIssuer {
    fn token(&self) -> BoxFuture<'_, Result<Bytes, DatError>> {
        Box::pin(self.current())
    }
}

/// The lifetime of a fresh DAT: from its own `exp` (read without verification: we trust the DAPS
/// we just asked over TLS, and the peers verify it anyway), else from the response's `expires_in`.
fn token_lifetime(token: &str, expires_in: Option<&Value>, now: f64) -> Result<Duration, DatError> {
    let from_exp = unverified_claims(token)
        .and_then(|claims| claims.get("exp").and_then(Value::as_f64))
        .map(|exp| exp - now);
    let from_response = expires_in.and_then(|value| match value {
        Value::String(s) => s.trim().parse::<f64>().ok(),
        other => other.as_f64(),
    });
    let seconds_left = from_exp.or(from_response).ok_or_else(|| {
        DatError::TokenRequest("the DAT has no exp and the response no expires_in".to_owned())
    })?;
    let lifetime = seconds(seconds_left);
    if lifetime.is_zero() {
        return Err(DatError::TokenRequest(
            "the DAPS issued an already expired DAT".to_owned(),
        ));
    }
    Ok(lifetime)
}

fn unverified_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `error` and `error_description` of an OAuth error response, shortened; never the body as a
/// whole, which we do not control.
fn oauth_error(body: &[u8]) -> String {
    let Ok(response) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let field = |name: &str| {
        response
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let text = match (field("error"), field("error_description")) {
        (Some(error), Some(description)) => format!("{error}: {description}"),
        (Some(error), None) => error,
        (None, Some(description)) => description,
        (None, None) => return String::new(),
    };
    format!(
        " ({})",
        text.chars().take(MAX_ERROR_TEXT).collect::<String>()
    )
}

/// The key our client assertion is signed with.
enum AssertionKey {
    Rsa(RsaKeyPair),
    EcP256(EcdsaKeyPair),
}

impl AssertionKey {
    fn from_pem(pem: &[u8]) -> Result<Self, DatError> {
        let unusable = |reason: &str| DatError::AssertionKey(reason.to_owned());
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
            pem::Error::NoItemsFound => unusable("no unencrypted private key in the PEM input"),
            e => DatError::AssertionKey(format!("malformed PEM: {e}")),
        })?;
        let rng = SystemRandom::new();
        let p256_pkcs8 =
            |der: &[u8]| EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng).ok();
        match &key {
            PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der())
                .map(Self::Rsa)
                .map_err(|e| DatError::AssertionKey(format!("bad RSA key: {e}"))),
            PrivateKeyDer::Pkcs8(der) => {
                let der = der.secret_pkcs8_der();
                if let Ok(rsa) = RsaKeyPair::from_pkcs8(der) {
                    Ok(Self::Rsa(rsa))
                } else {
                    p256_pkcs8(der)
                        .map(Self::EcP256)
                        .ok_or_else(|| unusable("PKCS#8 key is neither RSA nor EC P-256"))
                }
            }
            PrivateKeyDer::Sec1(der) => p256_pkcs8(&sec1_p256_to_pkcs8(der.secret_sec1_der()))
                .map(Self::EcP256)
                .ok_or_else(|| unusable("SEC1 key is not an EC P-256 key")),
            _ => Err(unusable("unsupported private key type")),
        }
    }

    fn algorithm(&self) -> &'static str {
        match self {
            Self::Rsa(_) => "RS256",
            Self::EcP256(_) => "ES256",
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DatError> {
        let rng = SystemRandom::new();
        let failed = |_| DatError::AssertionKey("signing the client assertion failed".to_owned());
        match self {
            Self::Rsa(pair) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .map_err(failed)?;
                Ok(signature)
            }
            Self::EcP256(pair) => pair
                .sign(&rng, message)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(failed),
        }
    }
}

/// ring reads EC keys only as PKCS#8, so a SEC1 `EC PRIVATE KEY` is wrapped into one:
/// SEQUENCE { INTEGER 0, SEQUENCE { id-ecPublicKey, prime256v1 }, OCTET STRING { sec1 } }.
fn sec1_p256_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    const VERSION_AND_ALGORITHM: &[u8] = &[
        0x02, 0x01, 0x00, // INTEGER 0
        0x30, 0x13, // SEQUENCE of the two OIDs
        0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // 1.2.840.10045.2.1
        0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, // 1.2.840.10045.3.1.7
    ];
    let mut content = VERSION_AND_ALGORITHM.to_vec();
    content.extend(der_element(0x04, sec1));
    der_element(0x30, &content)
}

fn der_element(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let significant: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
        out.push(0x80 | significant.len() as u8);
        out.extend(significant);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use ring::signature::KeyPair;

    const RSA_PKCS8_KEY: &[u8] = include_bytes!("../../tests/fixtures/daps-rsa.key");
    const RSA_PKCS1_KEY: &[u8] = include_bytes!("../../tests/fixtures/rsa-pkcs1.key");
    const EC_SEC1_KEY: &[u8] = include_bytes!("../../tests/fixtures/ec-sec1.key");
    const TOKEN_URL: &str = "https://daps.example/token";
    const CLIENT_ID: &str = "D2:70:1A:2A:keyid:CB:8C:0E:E8";

    fn issuer(key_pem: &[u8]) -> DapsIssuer {
        DapsIssuer::new(DapsIssuerConfig::new(
            TOKEN_URL,
            CLIENT_ID,
            key_pem.to_vec(),
            reqwest::Client::new(),
        ))
        .unwrap()
    }

    fn decoding_key(issuer: &DapsIssuer) -> DecodingKey {
        match &issuer.key {
            AssertionKey::Rsa(pair) => DecodingKey::from_rsa_der(pair.public().as_ref()),
            AssertionKey::EcP256(pair) => DecodingKey::from_ec_der(pair.public_key().as_ref()),
        }
    }

    /// Verifies the assertion as a DAPS would and returns its claims.
    fn verified_assertion(issuer: &DapsIssuer, algorithm: Algorithm) -> Value {
        let assertion = issuer.assertion().unwrap();
        let mut validation = Validation::new(algorithm);
        validation.set_audience(&[TOKEN_URL]);
        validation.set_issuer(&[CLIENT_ID]);
        validation.sub = Some(CLIENT_ID.to_owned());
        jsonwebtoken::decode::<Value>(&assertion, &decoding_key(issuer), &validation)
            .unwrap()
            .claims
    }

    #[test]
    fn rsa_keys_sign_rs256_assertions() {
        for pem in [RSA_PKCS8_KEY, RSA_PKCS1_KEY] {
            let claims = verified_assertion(&issuer(pem), Algorithm::RS256);
            let exp = claims["exp"].as_i64().unwrap();
            assert_eq!(exp - claims["iat"].as_i64().unwrap(), 60);
            assert_eq!(claims["nbf"], claims["iat"]);
            assert!(uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
        }
    }

    #[test]
    fn ec_p256_keys_sign_es256_assertions() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pkcs8_pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
        );
        for pem in [pkcs8_pem.as_bytes(), EC_SEC1_KEY] {
            let claims = verified_assertion(&issuer(pem), Algorithm::ES256);
            assert_eq!(claims["sub"], CLIENT_ID);
        }
    }

    #[test]
    fn assertions_are_unique() {
        let issuer = issuer(EC_SEC1_KEY);
        assert_ne!(
            verified_assertion(&issuer, Algorithm::ES256)["jti"],
            verified_assertion(&issuer, Algorithm::ES256)["jti"]
        );
    }

    #[test]
    fn other_keys_are_refused() {
        let rng = SystemRandom::new();
        let p384 =
            EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
                .unwrap();
        let p384_pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(p384.as_ref())
        );
        for pem in [p384_pem.as_bytes(), b"no key here".as_slice()] {
            let result = DapsIssuer::new(DapsIssuerConfig::new(
                TOKEN_URL,
                CLIENT_ID,
                pem.to_vec(),
                reqwest::Client::new(),
            ));
            assert!(matches!(result, Err(DatError::AssertionKey(_))));
        }
    }

    #[test]
    fn config_debug_hides_the_key() {
        let config = DapsIssuerConfig::new(
            TOKEN_URL,
            CLIENT_ID,
            RSA_PKCS1_KEY.to_vec(),
            reqwest::Client::new(),
        );
        let debug = format!("{config:?}");
        assert!(debug.contains(CLIENT_ID));
        assert!(!debug.contains("PRIVATE KEY"));
        assert_eq!(config.scope, "idsc:IDS_CONNECTOR_ATTRIBUTES_ALL");
    }

    fn token_with_exp(exp: f64) -> String {
        let payload = URL_SAFE_NO_PAD.encode(json!({ "exp": exp }).to_string());
        format!("e30.{payload}.c2ln")
    }

    #[test]
    fn lifetime_comes_from_exp_then_expires_in() {
        let now = 1_000_000.0;
        let from_exp = token_lifetime(&token_with_exp(now + 300.0), Some(&json!(60)), now);
        assert_eq!(from_exp.unwrap(), Duration::from_secs(300));
        let from_response = token_lifetime("opaque-token", Some(&json!("120")), now);
        assert_eq!(from_response.unwrap(), Duration::from_secs(120));
        let neither = token_lifetime("opaque-token", None, now);
        assert!(matches!(neither, Err(DatError::TokenRequest(_))));
        let expired = token_lifetime(&token_with_exp(now - 1.0), None, now);
        assert!(matches!(expired, Err(DatError::TokenRequest(_))));
    }

    #[test]
    fn oauth_errors_are_short_and_structured() {
        let body = json!({ "error": "invalid_client", "error_description": "x".repeat(500) });
        let text = oauth_error(body.to_string().as_bytes());
        assert!(text.starts_with(" (invalid_client: xxx"));
        assert!(text.len() < MAX_ERROR_TEXT + 10);
        assert_eq!(oauth_error(b"<html>secret stuff</html>"), "");
    }

    #[test]
    fn der_lengths_use_the_long_form_past_127_bytes() {
        assert_eq!(der_element(0x04, &[7; 3]), vec![0x04, 3, 7, 7, 7]);
        let long = der_element(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }
}

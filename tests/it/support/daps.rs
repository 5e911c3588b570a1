//! A small but real DAPS for integration tests: an HTTP server on 127.0.0.1 that publishes its JWKS
//! and metadata and issues DATs to registered clients that authenticate with a `private_key_jwt`
//! client assertion, as an IDS DAPS does. It also forges tokens on demand, so tests can change one
//! claim at a time or sign with a key the JWKS does not contain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use serde_json::{json, Value};

use clearinghouse::idscp2::dat::{
    daps_http_client, DapsIssuer, DapsIssuerConfig, DapsVerifier, DapsVerifierConfig, JwksSource,
};
use clearinghouse::idscp2::endpoint::{Endpoint, Settings};
use clearinghouse::idscp2::tls::{PeerCertificate, TlsIdentity};

use super::transport::endpoint;

/// The key the DAPS signs DATs with, an RSA-2048 PKCS#8 key generated once for these tests.
const DAPS_KEY: &[u8] = include_bytes!("../../fixtures/daps-rsa.key");
/// Another RSA key, for tokens the DAPS key set cannot verify.
const UNKNOWN_KEY: &[u8] = include_bytes!("../../fixtures/rsa-pkcs1.key");
/// The `kid` of the DAPS key in its JWKS and in every DAT it signs.
pub const DAPS_KID: &str = "test-daps-key-1";

const RSA_ENCRYPTION_OID: &str = "1.2.840.113549.1.1.1";
const EC_PUBLIC_KEY_OID: &str = "1.2.840.10045.2.1";

pub struct TestDaps {
    state: Arc<DapsState>,
    server: tokio::task::JoinHandle<()>,
}

struct DapsState {
    issuer: String,
    token_lifetime: Duration,
    signing_key: EncodingKey,
    /// The DAPS public key as JWK `n` and `e`.
    modulus: String,
    exponent: String,
    /// Every kid the JWKS lists for the DAPS key; tests add some to mimic a key rotation.
    published_kids: Mutex<Vec<String>>,
    clients: Mutex<HashMap<String, Client>>,
    jwks_requests: AtomicUsize,
}

struct Client {
    key: DecodingKey,
    algorithm: Algorithm,
    fingerprint: String,
    issued: usize,
}

impl TestDaps {
    /// Starts the DAPS on an ephemeral port; DATs it issues live `token_lifetime` (whole seconds).
    pub async fn start(token_lifetime: Duration) -> TestDaps {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let key_der = PrivateKeyDer::from_pem_slice(DAPS_KEY).unwrap();
        let pair = ring::rsa::KeyPair::from_pkcs8(key_der.secret_der()).unwrap();
        let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
        let state = Arc::new(DapsState {
            issuer,
            token_lifetime,
            signing_key: EncodingKey::from_rsa_pem(DAPS_KEY).unwrap(),
            modulus: URL_SAFE_NO_PAD.encode(&public.n),
            exponent: URL_SAFE_NO_PAD.encode(&public.e),
            published_kids: Mutex::new(vec![DAPS_KID.to_owned()]),
            clients: Mutex::new(HashMap::new()),
            jwks_requests: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/.well-known/jwks.json", get(jwks))
            .route("/.well-known/oauth-authorization-server", get(metadata))
            .route("/token", post(token))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestDaps { state, server }
    }

    /// The base URL, which is also the `iss` of every DAT.
    pub fn issuer(&self) -> String {
        self.state.issuer.clone()
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.state.issuer)
    }

    pub fn token_url(&self) -> String {
        self.state.token_url()
    }

    pub fn metadata_url(&self) -> String {
        format!(
            "{}/.well-known/oauth-authorization-server",
            self.state.issuer
        )
    }

    /// Registers a connector: its client assertions must verify with the public key of
    /// `cert_der` (RSA: RS256, EC P-256: ES256), and its DATs name `cert_fingerprint`.
    pub fn register(&self, client_id: &str, cert_der: &[u8], cert_fingerprint: &str) {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der).unwrap();
        let spki = cert.public_key();
        let point_or_pkcs1 = &spki.subject_public_key.data;
        let (key, algorithm) = match spki.algorithm.algorithm.to_id_string().as_str() {
            RSA_ENCRYPTION_OID => (DecodingKey::from_rsa_der(point_or_pkcs1), Algorithm::RS256),
            EC_PUBLIC_KEY_OID => (DecodingKey::from_ec_der(point_or_pkcs1), Algorithm::ES256),
            other => panic!("test DAPS cannot register a key of type {other}"),
        };
        self.state.clients.lock().unwrap().insert(
            client_id.to_owned(),
            Client {
                key,
                algorithm,
                fingerprint: cert_fingerprint.to_owned(),
                issued: 0,
            },
        );
    }

    /// How many DATs the token endpoint issued to `client_id`.
    pub fn issued_count(&self, client_id: &str) -> usize {
        self.state
            .clients
            .lock()
            .unwrap()
            .get(client_id)
            .map_or(0, |client| client.issued)
    }

    /// How many times the JWKS was requested.
    pub fn jwks_fetch_count(&self) -> usize {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    /// Lists the DAPS key under one more kid, as a DAPS does after rotating its keys.
    pub fn publish_kid(&self, kid: &str) {
        self.state
            .published_kids
            .lock()
            .unwrap()
            .push(kid.to_owned());
    }

    /// Signs `claims` with the DAPS key (RS256); `kid` None leaves the header without a kid.
    pub fn sign(&self, claims: Value, kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &self.state.signing_key).unwrap()
    }

    /// Signs `claims` with a key the JWKS does not contain, under the DAPS kid: a forgery.
    pub fn sign_with_unknown_key(&self, claims: Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(DAPS_KID.to_owned());
        let key = EncodingKey::from_rsa_pem(UNKNOWN_KEY).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    /// The claims of a DAT this DAPS would issue to `client_id` now.
    pub fn valid_claims(&self, client_id: &str, fingerprint: &str) -> Value {
        self.state
            .claims(client_id, fingerprint, "idsc:IDS_CONNECTOR_ATTRIBUTES_ALL")
    }
}

impl Drop for TestDaps {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl DapsState {
    fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    fn claims(&self, client_id: &str, fingerprint: &str, scope: &str) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        json!({
            "@context": "https://w3id.org/idsa/contexts/context.jsonld",
            "@type": "ids:DatPayload",
            "iss": self.issuer,
            "sub": client_id,
            "aud": ["idsc:IDS_CONNECTORS_ALL"],
            "iat": now,
            "nbf": now,
            "exp": now + self.token_lifetime.as_secs(),
            "jti": uuid::Uuid::new_v4().to_string(),
            "scope": scope,
            "securityProfile": "idsc:BASE_SECURITY_PROFILE",
            "referringConnector": format!("https://connector.example/{client_id}"),
            "transportCertsSha256": [fingerprint],
        })
    }

    /// Checks a client assertion as RFC 7523 asks and returns the client it authenticates.
    fn authenticate(&self, assertion: &str) -> Result<String, String> {
        let client_id = unverified_claims(assertion)
            .and_then(|claims| claims.get("sub")?.as_str().map(str::to_owned))
            .ok_or("assertion has no sub")?;
        let clients = self.clients.lock().unwrap();
        let client = clients.get(&client_id).ok_or("unknown client")?;
        let mut validation = Validation::new(client.algorithm);
        validation.set_audience(&[self.token_url()]);
        validation.set_issuer(&[&client_id]);
        validation.sub = Some(client_id.clone());
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        jsonwebtoken::decode::<Value>(assertion, &client.key, &validation)
            .map_err(|e| format!("assertion rejected: {e}"))?;
        Ok(client_id)
    }
}

async fn jwks(State(state): State<Arc<DapsState>>) -> Json<Value> {
    state.jwks_requests.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = state
        .published_kids
        .lock()
        .unwrap()
        .iter()
        .map(|kid| {
            json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": state.modulus, "e": state.exponent,
            })
        })
        .collect();
    Json(json!({ "keys": keys }))
}

async fn metadata(State(state): State<Arc<DapsState>>) -> Json<Value> {
    Json(json!({
        "issuer": state.issuer,
        "token_endpoint": state.token_url(),
        "jwks_uri": format!("{}/.well-known/jwks.json", state.issuer),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
        "scopes_supported": ["idsc:IDS_CONNECTOR_ATTRIBUTES_ALL"],
    }))
}

async fn token(State(state): State<Arc<DapsState>>, body: String) -> Response {
    let form = parse_form(&body);
    let field = |name: &str| form.get(name).map(String::as_str);
    if field("grant_type") != Some("client_credentials") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "");
    }
    if field("client_assertion_type")
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_assertion_type",
        );
    }
    let Some(assertion) = field("client_assertion") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_assertion",
        );
    };
    let client_id = match state.authenticate(assertion) {
        Ok(client_id) => client_id,
        Err(reason) => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &reason),
    };
    let scope = field("scope").unwrap_or("idsc:IDS_CONNECTOR_ATTRIBUTES_ALL");
    let fingerprint = {
        let mut clients = state.clients.lock().unwrap();
        let client = clients.get_mut(&client_id).unwrap();
        client.issued += 1;
        client.fingerprint.clone()
    };
    let claims = state.claims(&client_id, &fingerprint, scope);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(DAPS_KID.to_owned());
    let dat = jsonwebtoken::encode(&header, &claims, &state.signing_key).unwrap();
    Json(json!({
        "access_token": dat,
        "token_type": "bearer",
        "expires_in": state.token_lifetime.as_secs(),
        "scope": scope,
    }))
    .into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

fn unverified_claims(token: &str) -> Option<Value> {
    let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
    serde_json::from_slice(&payload).ok()
}

/// `application/x-www-form-urlencoded`, decoded by hand because axum's form support is not enabled.
fn parse_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (percent_decode(name), percent_decode(value)))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (other, None) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A party of the data space: its certificate, its DAPS identity, and the DAPS knowing it.
pub struct Party {
    pub identity: TlsIdentity,
    pub key_pem: Vec<u8>,
    pub connector_id: String,
    pub fingerprint: String,
}

impl Party {
    pub fn new(daps: &TestDaps, cert: &std::path::Path, key: &std::path::Path) -> Party {
        let identity = TlsIdentity::from_pem_files(cert, key).unwrap();
        let peer = PeerCertificate::new(identity.leaf().clone());
        let party = Party {
            key_pem: std::fs::read(key).unwrap(),
            connector_id: peer.connector_id().unwrap(),
            fingerprint: peer.fingerprint.clone(),
            identity,
        };
        daps.register(
            &party.connector_id,
            identity_cert_der(&party),
            &party.fingerprint,
        );
        party
    }

    pub fn issuer(&self, daps: &TestDaps) -> Arc<DapsIssuer> {
        Arc::new(
            DapsIssuer::new(DapsIssuerConfig::new(
                daps.token_url(),
                self.connector_id.clone(),
                self.key_pem.clone(),
                daps_http_client().unwrap(),
            ))
            .unwrap(),
        )
    }
}

fn identity_cert_der(party: &Party) -> &[u8] {
    party.identity.leaf().as_ref()
}

pub fn verifier(daps: &TestDaps) -> Arc<DapsVerifier> {
    let config = DapsVerifierConfig::new(
        daps.issuer(),
        JwksSource::Url(daps.jwks_url()),
        daps_http_client().unwrap(),
    );
    Arc::new(DapsVerifier::new(config).unwrap())
}

pub fn daps_endpoint(settings: Settings, party: &Party, daps: &TestDaps) -> Endpoint {
    endpoint(settings, party.issuer(daps), verifier(daps))
}

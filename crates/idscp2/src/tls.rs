//! TLS for IDSCP2: our identity, the rustls configurations both sides use, and the peer certificate
//! as the layers above see it.
//!
//! IDSCP2 runs over mutually authenticated TLS 1.3, and a peer's identity is bound to its TLS leaf
//! certificate twice: its DAT names the certificate's SHA-256 fingerprint, and its connector id
//! (`SKI:keyid:AKI`) is read from the certificate's key identifiers. This room owns both derivations
//! so that the handshake and the DAT drivers agree on them.
//!
//! idscp2-jvm offers a single suite, TLS_AES_256_GCM_SHA384; we keep it and the other two TLS 1.3
//! suites, and refuse TLS 1.2 entirely.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::ClientConfig;
use rustls::crypto::ring::cipher_suite::{
    TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};
use rustls_pki_types::pem::{self, PemObject};
use x509_parser::extensions::ParsedExtension;

/// Everything that can go wrong while loading TLS material or building a configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Wraps an error found in a file's content, so the operator learns which file is wrong.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        #[source]
        source: Box<TlsError>,
    },
    /// The PEM input is malformed.
    #[error("malformed PEM: {0}")]
    Pem(#[source] rustls_pki_types::pem::Error),
    /// The PEM input holds no certificate.
    #[error("no certificate found in the PEM input")]
    NoCertificate,
    /// The PEM input holds no usable private key.
    #[error("no unencrypted private key (PKCS#8, PKCS#1 RSA or SEC1 EC) found in the PEM input")]
    NoPrivateKey,
    /// The key is of a kind rustls cannot sign with.
    #[error("unsupported private key: {0}")]
    UnsupportedKey(#[source] rustls::Error),
    /// The key does not belong to the leaf certificate.
    #[error("the private key does not match the public key of the leaf certificate")]
    KeyMismatch,
    /// Whether the key belongs to the certificate could not be checked.
    #[error("cannot check that the private key matches the leaf certificate: {0}")]
    KeyCheck(#[source] rustls::Error),
    /// No CA certificate was given.
    #[error("no CA certificate given to verify peers against")]
    NoCaCertificate,
    /// A CA certificate is unusable.
    #[error("unusable CA certificate: {0}")]
    CaCertificate(#[source] rustls::Error),
    /// The client certificate verifier cannot be built.
    #[error("cannot build the client certificate verifier: {0}")]
    ClientVerifier(#[source] VerifierBuilderError),
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Config(#[source] rustls::Error),
    /// The certificate is not valid X.509 DER.
    #[error("cannot parse the certificate: {0}")]
    CertificateParse(String),
    /// The certificate is X.509 v1 or v2: it cannot carry the extensions IDS identities need.
    #[error(
        "X.509 v{0} certificates are not supported; reissue as v3 with SAN, SKI, AKI \
         (subjectAltName, subject and authority key identifiers)"
    )]
    UnsupportedVersion(u32),
    /// The certificate lacks the named extension.
    #[error("the certificate has no {0} extension")]
    MissingExtension(&'static str),
}

/// Our certificate chain (leaf first) and the private key belonging to the leaf.
#[derive(Debug)]
pub struct TlsIdentity {
    /// The certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl TlsIdentity {
    /// Loads a PEM certificate chain and a PEM private key; every error names the file at fault.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = parse_chain(&read(cert)?)
            .and_then(|chain| check_version(&chain[0]).map(|()| chain))
            .map_err(|e| in_file(cert, e))?;
        let private_key = parse_key(&read(key)?).map_err(|e| in_file(key, e))?;
        // A mismatch is reported against the key file: that is the one operators swap by mistake.
        Self::checked(chain, private_key).map_err(|e| in_file(key, e))
    }

    /// Parses a PEM certificate chain and a PEM private key and checks that they belong together.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let chain = parse_chain(cert_pem)?;
        check_version(&chain[0])?;
        Self::checked(chain, parse_key(key_pem)?)
    }

    /// The end-entity certificate.
    ///
    /// # Panics
    /// If the struct was built by hand with an empty chain; the constructors never produce one.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// Refuses a key that does not belong to the leaf now, rather than at the first handshake,
    /// where the failure would look like a peer problem.
    fn checked(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let signing_key = provider()
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(TlsError::UnsupportedKey)?;
        match CertifiedKey::new(chain.clone(), signing_key).keys_match() {
            Ok(()) => Ok(Self { chain, key }),
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                Err(TlsError::KeyMismatch)
            }
            Err(e) => Err(TlsError::KeyCheck(e)),
        }
    }
}

/// Loads a PEM bundle of CA certificates; an empty bundle is an error because it would make every
/// peer untrusted without saying why.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_chain(&read(path)?).map_err(|e| in_file(path, e))
}

/// The server side: TLS 1.3 only, and a client certificate chaining to `client_cas` is required.
pub fn server_config(
    identity: &TlsIdentity,
    client_cas: &[CertificateDer<'static>],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(client_cas)?),
        provider.clone(),
    )
    .build()
    .map_err(TlsError::ClientVerifier)?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(TlsError::Config)?;
    Ok(Arc::new(config))
}

/// The client side: TLS 1.3 only, the server chain is verified against `server_cas` and its
/// subjectAltName against the `ServerName` the caller connects with; we present our identity.
pub fn client_config(
    identity: &TlsIdentity,
    server_cas: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_root_certificates(root_store(server_cas)?)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(TlsError::Config)?;
    Ok(Arc::new(config))
}

/// The peer's TLS leaf certificate, with the fingerprint its DAT must name.
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    /// The certificate as presented.
    pub der: CertificateDer<'static>,
    /// Its SHA-256 fingerprint, as DATs name it.
    pub fingerprint: String,
    /// [`Self::connector_id`], once derived. In development mode it is asked for on every request
    /// that carries a JWT, and parsing the DER each time was about 8% of the server's
    /// instructions per logged message (callgrind, see BENCHMARKS.md).
    connector_id: OnceLock<String>,
}

/// The same certificate, whether or not its connector id was derived yet.
impl PartialEq for PeerCertificate {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der && self.fingerprint == other.fingerprint
    }
}

impl Eq for PeerCertificate {}

impl PeerCertificate {
    /// The certificate with its fingerprint.
    pub fn new(der: CertificateDer<'static>) -> Self {
        let fingerprint = fingerprint(der.as_ref());
        Self {
            der,
            fingerprint,
            connector_id: OnceLock::new(),
        }
    }

    /// The connector id the IDS world derives from a certificate: `SKI:keyid:AKI`, each key
    /// identifier as uppercase colon-separated hex. DAPS registrations and DAT `sub` claims use it.
    /// Derived once per certificate; an error is not cached (it ends the request anyway).
    pub fn connector_id(&self) -> Result<String, TlsError> {
        if let Some(id) = self.connector_id.get() {
            return Ok(id.clone());
        }
        let id = self.derive_connector_id()?;
        Ok(self.connector_id.get_or_init(|| id).clone())
    }

    fn derive_connector_id(&self) -> Result<String, TlsError> {
        let KeyIdentifiers { subject, authority } = self.key_identifiers()?;
        let ski = subject.ok_or(TlsError::MissingExtension(SUBJECT_KEY_IDENTIFIER))?;
        let aki = authority.ok_or(TlsError::MissingExtension(
            "AuthorityKeyIdentifier (with keyIdentifier)",
        ))?;
        Ok(format!("{}:keyid:{}", colon_hex(&ski), colon_hex(&aki)))
    }

    /// Whether the certificate carries a SubjectKeyIdentifier, which IDS connector ids need.
    pub fn has_subject_key_id(&self) -> Result<bool, TlsError> {
        Ok(self.key_identifiers()?.subject.is_some())
    }

    /// The identity development mode gives a certificate without key identifiers (a foreign
    /// stack's test certificate, say): `sha256:` and its fingerprint. It cannot be mistaken for
    /// a connector id (`SKI:keyid:AKI`), and it names exactly this certificate.
    pub fn fingerprint_identity(&self) -> String {
        format!("{FINGERPRINT_IDENTITY_PREFIX}{}", self.fingerprint)
    }

    /// The subject's distinguished name (`CN=…, O=…`), for log lines and close messages that
    /// must name the certificate; the fingerprint when there is no subject to name.
    pub fn subject(&self) -> String {
        let subject = x509_parser::parse_x509_certificate(self.der.as_ref())
            .map(|(_, cert)| cert.subject().to_string())
            .unwrap_or_default();
        if subject.is_empty() {
            format!("with SHA-256 fingerprint {}", self.fingerprint)
        } else {
            subject
        }
    }

    fn key_identifiers(&self) -> Result<KeyIdentifiers, TlsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(self.der.as_ref())
            .map_err(|e| TlsError::CertificateParse(e.to_string()))?;
        let mut subject_key_id = None;
        let mut authority_key_id = None;
        for extension in cert.extensions() {
            match extension.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => subject_key_id = Some(id.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => {}
            }
        }
        Ok(KeyIdentifiers {
            subject: subject_key_id,
            authority: authority_key_id,
        })
    }
}

/// The SubjectKeyIdentifier and the AuthorityKeyIdentifier's keyIdentifier, where present.
struct KeyIdentifiers {
    subject: Option<Vec<u8>>,
    authority: Option<Vec<u8>>,
}

/// What [`PeerCertificate::fingerprint_identity`] starts with.
pub const FINGERPRINT_IDENTITY_PREFIX: &str = "sha256:";

/// The extension an IDS connector id is made of first, as error messages name it.
pub const SUBJECT_KEY_IDENTIFIER: &str = "SubjectKeyIdentifier";

/// SHA-256 over the DER, lowercase hex without separators: the form `transportCertsSha256` uses.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The ring provider restricted to the TLS 1.3 suites, AES-256-GCM first because it is the only
/// one idscp2-jvm offers.
fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        TLS13_AES_256_GCM_SHA384,
        TLS13_AES_128_GCM_SHA256,
        TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

fn root_store(cas: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    if cas.is_empty() {
        return Err(TlsError::NoCaCertificate);
    }
    let mut store = RootCertStore::empty();
    for ca in cas {
        store.add(ca.clone()).map_err(TlsError::CaCertificate)?;
    }
    Ok(store)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn in_file(path: &Path, error: TlsError) -> TlsError {
    TlsError::InFile {
        path: path.to_owned(),
        source: Box::new(error),
    }
}

fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Pem)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(chain)
}

/// Refuses a v1 (or v2) leaf before anything else looks at it: rustls would refuse it only while
/// matching the key, with an error that points at the key file.
fn check_version(leaf: &CertificateDer<'_>) -> Result<(), TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| TlsError::CertificateParse(e.to_string()))?;
    match cert.version().0 {
        2 => Ok(()),
        older => Err(TlsError::UnsupportedVersion(older + 1)),
    }
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey,
        e => TlsError::Pem(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, IsCa, Issuer, KeyIdMethod, KeyPair, PublicKeyData,
    };
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    const RSA_PKCS1_KEY: &[u8] = include_bytes!("../tests/fixtures/rsa-pkcs1.key");
    const EC_SEC1_KEY: &[u8] = include_bytes!("../tests/fixtures/ec-sec1.key");

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        cert: CertificateDer<'static>,
        pem: String,
    }

    fn ca(key_id: KeyIdMethod) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_identifier_method = key_id;
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            cert: cert.der().clone(),
            pem: cert.pem(),
        }
    }

    /// A leaf for `localhost` with SKI and AKI, as IDS connector certificates have them.
    fn leaf_params(key_id: KeyIdMethod) -> CertificateParams {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        // rcgen writes a SubjectKeyIdentifier only for certificates that state their CA-ness.
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = key_id;
        params
    }

    fn leaf_pem(ca: &Ca, public_key: &impl PublicKeyData) -> String {
        leaf_params(KeyIdMethod::Sha256)
            .signed_by(public_key, &ca.issuer)
            .unwrap()
            .pem()
    }

    fn identity(ca: &Ca) -> TlsIdentity {
        let key = KeyPair::generate().unwrap();
        TlsIdentity::from_pem(
            leaf_pem(ca, &key).as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .unwrap()
    }

    /// The public half of a PEM private key that rcgen cannot load itself (PKCS#1, SEC1), so rcgen
    /// can still issue a certificate for it.
    struct RawPublicKey {
        bits: Vec<u8>,
        algorithm: &'static rcgen::SignatureAlgorithm,
    }

    impl PublicKeyData for RawPublicKey {
        fn der_bytes(&self) -> &[u8] {
            &self.bits
        }

        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            self.algorithm
        }
    }

    fn public_key_of(key_pem: &[u8]) -> RawPublicKey {
        use x509_parser::prelude::FromDer;
        let key = parse_key(key_pem).unwrap();
        let algorithm: &'static rcgen::SignatureAlgorithm = match key {
            PrivateKeyDer::Pkcs1(_) => &rcgen::PKCS_RSA_SHA256,
            _ => &rcgen::PKCS_ECDSA_P256_SHA256,
        };
        let signing = provider().key_provider.load_private_key(key).unwrap();
        let spki = signing.public_key().unwrap();
        let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref()).unwrap();
        RawPublicKey {
            bits: parsed.subject_public_key.data.to_vec(),
            algorithm,
        }
    }

    #[test]
    fn fingerprint_is_lowercase_hex_sha256() {
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn peer_certificate_carries_its_fingerprint() {
        let ca = ca(KeyIdMethod::Sha256);
        let peer = PeerCertificate::new(ca.cert.clone());
        assert_eq!(peer.fingerprint, fingerprint(ca.cert.as_ref()));
    }

    #[test]
    fn connector_id_is_ski_keyid_aki_in_uppercase_colon_hex() {
        let ca = ca(KeyIdMethod::PreSpecified(vec![0xcb, 0x8c, 0x0e, 0xe8]));
        let key = KeyPair::generate().unwrap();
        let cert = leaf_params(KeyIdMethod::PreSpecified(vec![0xd2, 0x70, 0x1a, 0x2a]))
            .signed_by(&key, &ca.issuer)
            .unwrap();
        let peer = PeerCertificate::new(cert.der().clone());
        assert_eq!(
            peer.connector_id().unwrap(),
            "D2:70:1A:2A:keyid:CB:8C:0E:E8"
        );
    }

    #[test]
    fn connector_id_is_derived_once_and_does_not_affect_equality() {
        let ca = ca(KeyIdMethod::PreSpecified(vec![0xcb, 0x8c, 0x0e, 0xe8]));
        let key = KeyPair::generate().unwrap();
        let cert = leaf_params(KeyIdMethod::PreSpecified(vec![0xd2, 0x70, 0x1a, 0x2a]))
            .signed_by(&key, &ca.issuer)
            .unwrap();
        let fresh = PeerCertificate::new(cert.der().clone());
        let asked = fresh.clone();
        assert_eq!(asked.connector_id().unwrap(), asked.connector_id().unwrap());
        assert_eq!(
            asked.connector_id().unwrap(),
            "D2:70:1A:2A:keyid:CB:8C:0E:E8"
        );
        // A clone taken after the first call carries the cached id along.
        assert_eq!(
            asked.clone().connector_id().unwrap(),
            "D2:70:1A:2A:keyid:CB:8C:0E:E8"
        );
        assert_eq!(fresh, asked);
        assert_ne!(fresh, PeerCertificate::new(ca.cert.clone()));
    }

    #[test]
    fn connector_id_without_key_identifiers_is_an_error() {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let err = PeerCertificate::new(cert.der().clone())
            .connector_id()
            .unwrap_err();
        assert!(matches!(
            err,
            TlsError::MissingExtension("SubjectKeyIdentifier")
        ));
    }

    #[test]
    fn key_not_matching_the_leaf_is_rejected() {
        let ca = ca(KeyIdMethod::Sha256);
        let cert_key = KeyPair::generate().unwrap();
        let other_key = KeyPair::generate().unwrap();
        let err = TlsIdentity::from_pem(
            leaf_pem(&ca, &cert_key).as_bytes(),
            other_key.serialize_pem().as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch), "{err}");
        assert!(err.to_string().contains("does not match"));
    }

    #[test]
    fn rsa_pkcs1_and_ec_sec1_keys_load() {
        let ca = ca(KeyIdMethod::Sha256);
        for key_pem in [RSA_PKCS1_KEY, EC_SEC1_KEY] {
            let cert_pem = leaf_pem(&ca, &public_key_of(key_pem));
            let identity = TlsIdentity::from_pem(cert_pem.as_bytes(), key_pem).unwrap();
            assert!(!matches!(identity.key, PrivateKeyDer::Pkcs8(_)));
            assert_eq!(identity.chain.len(), 1);
        }
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(KeyIdMethod::Sha256);
        let key = KeyPair::generate().unwrap();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        fs::write(&cert_path, leaf_pem(&ca, &key)).unwrap();
        fs::write(&key_path, "not a key").unwrap();

        let err = TlsIdentity::from_pem_files(&cert_path, &key_path).unwrap_err();
        assert!(err.to_string().contains("key.pem"), "{err}");
        assert!(
            err.to_string().contains("no unencrypted private key"),
            "{err}"
        );

        let missing = dir.path().join("missing.pem");
        let err = TlsIdentity::from_pem_files(&missing, &key_path).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");

        fs::write(&key_path, key.serialize_pem()).unwrap();
        let identity = TlsIdentity::from_pem_files(&cert_path, &key_path).unwrap();
        assert_eq!(identity.leaf(), &identity.chain[0]);
    }

    #[test]
    fn ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        fs::write(&path, "").unwrap();
        let err = load_ca_file(&path).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");

        let ca = ca(KeyIdMethod::Sha256);
        fs::write(&path, &ca.pem).unwrap();
        assert_eq!(load_ca_file(&path).unwrap(), vec![ca.cert.clone()]);
    }

    #[test]
    fn configs_refuse_an_empty_ca_list() {
        let ca = ca(KeyIdMethod::Sha256);
        let identity = identity(&ca);
        assert!(matches!(
            server_config(&identity, &[]),
            Err(TlsError::NoCaCertificate)
        ));
        assert!(matches!(
            client_config(&identity, &[]),
            Err(TlsError::NoCaCertificate)
        ));
    }

    fn rustls_error(err: &std::io::Error) -> Option<&rustls::Error> {
        err.get_ref()?.downcast_ref()
    }

    async fn loopback() -> (tokio::net::TcpListener, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    #[tokio::test]
    async fn tls13_handshake_with_client_certificate_succeeds() {
        let ca = ca(KeyIdMethod::Sha256);
        let server = identity(&ca);
        let client = identity(&ca);
        let client_leaf = client.leaf().clone();
        let acceptor =
            TlsAcceptor::from(server_config(&server, std::slice::from_ref(&ca.cert)).unwrap());
        let connector =
            TlsConnector::from(client_config(&client, std::slice::from_ref(&ca.cert)).unwrap());
        let (listener, addr) = loopback().await;

        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let (_, connection) = tls.get_ref();
            assert_eq!(
                connection.protocol_version(),
                Some(rustls::ProtocolVersion::TLSv1_3)
            );
            let peer = connection.peer_certificates().unwrap()[0].clone();
            tls.write_all(b"ok").await.unwrap();
            tls.shutdown().await.unwrap();
            peer
        });

        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"ok");
        assert_eq!(server_task.await.unwrap(), client_leaf);
    }

    #[tokio::test]
    async fn client_refuses_a_server_name_missing_from_the_certificate() {
        let ca = ca(KeyIdMethod::Sha256);
        let server = identity(&ca);
        let client = identity(&ca);
        let acceptor =
            TlsAcceptor::from(server_config(&server, std::slice::from_ref(&ca.cert)).unwrap());
        let connector =
            TlsConnector::from(client_config(&client, std::slice::from_ref(&ca.cert)).unwrap());
        let (listener, addr) = loopback().await;
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.map(|_| ())
        });

        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("other.example").unwrap();
        let err = connector.connect(name, tcp).await.unwrap_err();
        assert!(
            matches!(
                rustls_error(&err),
                Some(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. }
                ))
            ),
            "{err}"
        );
        assert!(server_task.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn client_offering_only_tls12_is_refused() {
        let ca = ca(KeyIdMethod::Sha256);
        let server = identity(&ca);
        let client = identity(&ca);
        let acceptor =
            TlsAcceptor::from(server_config(&server, std::slice::from_ref(&ca.cert)).unwrap());
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert.clone()).unwrap();
        let tls12_only =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(client.chain.clone(), client.key.clone_key())
                .unwrap();
        let connector = TlsConnector::from(Arc::new(tls12_only));
        let (listener, addr) = loopback().await;

        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.map(|_| ())
        });

        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        assert!(connector.connect(name, tcp).await.is_err());
        let err = server_task.await.unwrap().unwrap_err();
        assert!(
            matches!(
                rustls_error(&err),
                Some(rustls::Error::PeerIncompatible(
                    rustls::PeerIncompatible::Tls12NotOfferedOrEnabled
                ))
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn client_without_certificate_is_refused() {
        let ca = ca(KeyIdMethod::Sha256);
        let server = identity(&ca);
        let acceptor =
            TlsAcceptor::from(server_config(&server, std::slice::from_ref(&ca.cert)).unwrap());
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert.clone()).unwrap();
        let anonymous = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = TlsConnector::from(Arc::new(anonymous));
        let (listener, addr) = loopback().await;

        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.map(|_| ())
        });

        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        // In TLS 1.3 the client finishes first; its failure shows when it reads the alert.
        if let Ok(mut tls) = connector.connect(name, tcp).await {
            let mut buf = [0u8; 1];
            assert!(tls.read(&mut buf).await.is_err());
        }
        assert!(server_task.await.unwrap().is_err());
    }
}

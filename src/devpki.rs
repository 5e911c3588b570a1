//! A development PKI: one self-signed CA, a server certificate, connector (client) certificates and
//! the receipt signing key, written as PEM files into one directory.
//!
//! IDSCP2 cannot be tried without mutual TLS, and setting up a CA by hand is where first-time users
//! give up, so the CLI (`clearinghouse dev-pki`) and the test suites generate the same layout here.
//! The certificates are shaped for the peers a clearing house meets:
//! - connector identities are derived as `SKI:keyid:AKI`, so every leaf carries a
//!   SubjectKeyIdentifier and an AuthorityKeyIdentifier equal to the CA's SubjectKeyIdentifier;
//! - idscp2-jvm checks the server's subjectAltName (never the CN) and, on its server side, the
//!   client certificate's SANs against the client's IP, so clients carry `DNS:<name>` and `IP:127.0.0.1`;
//! - idscp2-jvm rejects a peer certificate not valid both now and 24 h from now, and clocks drift,
//!   so validity starts an hour in the past.
//!
//! This is for development only: the CA key lies next to the certificates it signed.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData,
    SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::x509::X509Name;

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.crt";
const SERVER_KEY: &str = "server.key";
const RECEIPT_KEY: &str = "receipt-es256.key";
const CLIENTS_DIR: &str = "clients";
const ORGANIZATION: &str = "clearinghouse dev-pki";

/// How far back validity starts, so that a peer whose clock runs behind still accepts the certificate.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// A century: long enough for any development setup, and far from the year-9999 end of X.509 time.
const MAX_VALIDITY_DAYS: u32 = 36_500;

/// Private keys are readable by their owner only; certificates are public.
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

/// What to put into a freshly generated development PKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPkiOptions {
    /// Names the server certificate is valid for: DNS names (a leading `*.` label is allowed) or IP addresses.
    pub server_names: Vec<String>,
    /// One client certificate per name; the name is also the certificate's DNS SAN and file name.
    pub clients: Vec<String>,
    /// Lifetime of the CA, counted from now; every leaf expires with the CA. idscp2-jvm peers
    /// refuse a certificate that expires within 24 h, so anything below 2 days is for expiry tests.
    pub validity_days: u32,
}

impl Default for DevPkiOptions {
    fn default() -> Self {
        DevPkiOptions {
            server_names: ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec(),
            clients: ["connector-a", "connector-b", "auditor"]
                .map(String::from)
                .to_vec(),
            validity_days: 365,
        }
    }
}

/// Why a development PKI could not be generated, opened or extended.
#[derive(Debug, thiserror::Error)]
pub enum DevPkiError {
    /// A file or directory of the PKI cannot be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Generating would overwrite this file.
    #[error("{0} already exists; refusing to overwrite it")]
    AlreadyExists(PathBuf),
    /// The directory has some of a PKI's files, but not all.
    #[error("{dir} holds an incomplete development PKI ({missing} is missing); remove the directory and generate again")]
    Incomplete {
        /// The PKI's directory.
        dir: PathBuf,
        /// The first file found missing.
        missing: PathBuf,
    },
    /// The server certificate would have no name.
    #[error("at least one server name is needed")]
    NoServerNames,
    /// A server name is neither an IP address nor a DNS name.
    #[error("invalid server name {0:?}: expected an IP address or a DNS name")]
    InvalidServerName(String),
    /// A client name cannot be a DNS name (and so a file name).
    #[error("invalid client name {0:?}: expected a DNS name of letters, digits, '-' and '.'")]
    InvalidClientName(String),
    /// A client name is given more than once.
    #[error("client {0:?} is listed twice")]
    DuplicateClient(String),
    /// The validity is 0 days or longer than the longest allowed.
    #[error("validity_days is {0}; it must be between 1 and {MAX_VALIDITY_DAYS}")]
    InvalidValidity(u32),
    /// A certificate file of the PKI cannot be parsed or used.
    #[error("{path} is not a usable certificate: {reason}")]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA key file does not belong to the CA certificate.
    #[error("{key} is not the key of the CA certificate {cert}")]
    CaKeyMismatch {
        /// The CA certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The CA can sign no more certificates.
    #[error("the development CA {0} has expired; generate a new PKI")]
    CaExpired(PathBuf),
    /// A private key cannot be used for signing.
    #[error("cannot use the private key")]
    InvalidKey(#[source] rcgen::Error),
    /// A certificate cannot be made.
    #[error("cannot create a certificate")]
    Certificate(#[source] rcgen::Error),
}

/// A development PKI on disk. All paths are inside `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    /// The directory holding the PKI's files.
    pub dir: PathBuf,
}

/// The CA as loaded from disk, ready to sign leaves.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    not_after: OffsetDateTime,
}

impl DevPki {
    /// Generates a new PKI into `dir` (created if needed). Refuses to touch a directory that already
    /// holds any of the files it would write; use [`DevPki::open_or_generate`] to reuse one.
    pub fn generate(dir: &Path, options: &DevPkiOptions) -> Result<DevPki, DevPkiError> {
        validate(options)?;
        let pki = DevPki {
            dir: dir.to_path_buf(),
        };
        // Checked up front so that a refusal leaves no half-written PKI behind.
        if let Some(existing) = pki
            .files(&options.clients)
            .into_iter()
            .find(|path| path.exists())
        {
            return Err(DevPkiError::AlreadyExists(existing));
        }
        create_dir(&dir.join(CLIENTS_DIR))?;

        let now = OffsetDateTime::now_utc();
        let not_after = now + Duration::days(i64::from(options.validity_days));
        let ca_key = generate_key()?;
        let ca_params = ca_params(&ca_key, now - CLOCK_SKEW, not_after);
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(DevPkiError::Certificate)?;
        write_new(&pki.ca_key(), ca_key.serialize_pem().as_bytes(), KEY_MODE)?;
        write_new(&pki.ca_cert(), ca_cert.pem().as_bytes(), CERT_MODE)?;

        // Leaves are signed by the CA as read back from disk, the same path `issue_client` takes
        // later, so a CA that cannot be reloaded shows up now rather than at enrolment time.
        let ca = pki.load_ca()?;
        let server_key = generate_key()?;
        let server_cn = options
            .server_names
            .first()
            .ok_or(DevPkiError::NoServerNames)?;
        let server_cert = ca.sign_leaf(server_cn, &options.server_names, &server_key)?;
        write_new(
            &pki.server_key(),
            server_key.serialize_pem().as_bytes(),
            KEY_MODE,
        )?;
        write_new(&pki.server_cert(), server_cert.as_bytes(), CERT_MODE)?;
        for name in &options.clients {
            let key = generate_key()?;
            pki.write_client(&ca, name, &key, &key.serialize_pem())?;
        }
        write_new(
            &pki.receipt_key(),
            generate_key()?.serialize_pem().as_bytes(),
            KEY_MODE,
        )?;
        Ok(pki)
    }

    /// Reuses the PKI in `dir` when its CA, server and receipt files are all present, issuing any
    /// client of `options` it lacks; generates a new one when none of them is present. A partial
    /// PKI is an error: guessing which half to trust would hand out certificates nobody can verify.
    /// A reused PKI keeps its server names and validity; `options` only adds clients.
    pub fn open_or_generate(dir: &Path, options: &DevPkiOptions) -> Result<DevPki, DevPkiError> {
        validate(options)?;
        let pki = DevPki {
            dir: dir.to_path_buf(),
        };
        let core = pki.core_files();
        let missing: Vec<&PathBuf> = core.iter().filter(|path| !path.exists()).collect();
        if missing.len() == core.len() {
            return DevPki::generate(dir, options);
        }
        if let Some(missing) = missing.first() {
            return Err(pki.incomplete(missing.to_path_buf()));
        }
        for name in &options.clients {
            match (
                pki.client_cert(name).exists(),
                pki.client_key(name).exists(),
            ) {
                (true, true) => {}
                (false, false) => {
                    pki.issue_client(name)?;
                }
                (true, false) => return Err(pki.incomplete(pki.client_key(name))),
                (false, true) => return Err(pki.incomplete(pki.client_cert(name))),
            }
        }
        Ok(pki)
    }

    /// The CA certificate peers trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    /// The CA's private key, kept so that further clients can be enrolled.
    pub(crate) fn ca_key(&self) -> PathBuf {
        self.dir.join(CA_KEY)
    }

    /// The clearing house's TLS certificate, with the server names.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join(SERVER_CERT)
    }

    /// The private key of [`server_cert`](Self::server_cert).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join(SERVER_KEY)
    }

    /// The TLS certificate of the client (connector) `name`.
    pub fn client_cert(&self, name: &str) -> PathBuf {
        self.dir.join(CLIENTS_DIR).join(format!("{name}.crt"))
    }

    /// The private key of [`client_cert`](Self::client_cert).
    pub fn client_key(&self, name: &str) -> PathBuf {
        self.dir.join(CLIENTS_DIR).join(format!("{name}.key"))
    }

    /// The P-256 key (PKCS#8 PEM) the clearing house signs ES256 receipts with.
    pub fn receipt_key(&self) -> PathBuf {
        self.dir.join(RECEIPT_KEY)
    }

    /// The names (DNS names and IP addresses) the server certificate is valid for.
    pub(crate) fn server_names(&self) -> Result<Vec<String>, DevPkiError> {
        let path = self.server_cert();
        let pem = fs::read(&path).map_err(|source| io_error(&path, source))?;
        let bad = |reason: String| DevPkiError::BadCertificate {
            path: path.clone(),
            reason,
        };
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| bad(e.to_string()))?;
        let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad("it has no subjectAltName".into()))?;
        Ok(san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(name) => Some(name.to_string()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                    _ => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                }
                .map(|ip| ip.to_string()),
                _ => None,
            })
            .collect())
    }

    /// Makes the server certificate valid for `names` too: when it lacks any of them, it is
    /// reissued by the stored CA for its old names and the new ones, with the same key, so that
    /// clients need nothing new (a running `serve` must be restarted to present it). Returns the
    /// names that were added.
    pub(crate) fn add_server_names(&self, names: &[String]) -> Result<Vec<String>, DevPkiError> {
        validate(&DevPkiOptions {
            server_names: names.to_vec(),
            ..DevPkiOptions::default()
        })?;
        let mut all = self.server_names()?;
        let added: Vec<String> = names
            .iter()
            .filter(|name| !all.iter().any(|have| same_name(have, name)))
            .cloned()
            .collect();
        if added.is_empty() {
            return Ok(added);
        }
        all.extend(added.iter().cloned());
        let ca = self.load_ca()?;
        let key_path = self.server_key();
        let key_pem =
            fs::read_to_string(&key_path).map_err(|source| io_error(&key_path, source))?;
        let key = KeyPair::from_pem(&key_pem).map_err(DevPkiError::InvalidKey)?;
        let cert = ca.sign_leaf(&all[0], &all, &key)?;
        replace(&self.server_cert(), cert.as_bytes(), CERT_MODE)?;
        Ok(added)
    }

    /// Enrols a further connector: a fresh P-256 key and a client certificate signed by the stored CA.
    /// Returns the certificate and key paths.
    pub(crate) fn issue_client(&self, name: &str) -> Result<(PathBuf, PathBuf), DevPkiError> {
        let key = generate_key()?;
        self.issue_client_with_key(name, &key.serialize_pem())
    }

    /// Enrols a connector whose key already exists (PKCS#8 PEM, ECDSA or RSA), for instance an
    /// RSA key as JVM connectors use. The key is copied into the PKI next to its certificate.
    pub fn issue_client_with_key(
        &self,
        name: &str,
        key_pem: &str,
    ) -> Result<(PathBuf, PathBuf), DevPkiError> {
        validate_client_name(name)?;
        let key = KeyPair::from_pem(key_pem).map_err(DevPkiError::InvalidKey)?;
        let ca = self.load_ca()?;
        create_dir(&self.dir.join(CLIENTS_DIR))?;
        self.write_client(&ca, name, &key, key_pem)
    }

    fn write_client(
        &self,
        ca: &Ca,
        name: &str,
        key: &KeyPair,
        key_pem: &str,
    ) -> Result<(PathBuf, PathBuf), DevPkiError> {
        let (cert_path, key_path) = (self.client_cert(name), self.client_key(name));
        if let Some(existing) = [&cert_path, &key_path].into_iter().find(|p| p.exists()) {
            return Err(DevPkiError::AlreadyExists(existing.clone()));
        }
        // The IP SAN satisfies JVM servers, which match client SANs against the client's address.
        let sans = [name.to_owned(), "127.0.0.1".to_owned()];
        let cert = ca.sign_leaf(name, &sans, key)?;
        write_new(&key_path, key_pem.as_bytes(), KEY_MODE)?;
        write_new(&cert_path, cert.as_bytes(), CERT_MODE)?;
        Ok((cert_path, key_path))
    }

    fn load_ca(&self) -> Result<Ca, DevPkiError> {
        let (cert_path, key_path) = (self.ca_cert(), self.ca_key());
        let cert_pem = fs::read(&cert_path).map_err(|source| io_error(&cert_path, source))?;
        let key_pem =
            fs::read_to_string(&key_path).map_err(|source| io_error(&key_path, source))?;
        let bad = |reason: String| DevPkiError::BadCertificate {
            path: cert_path.clone(),
            reason,
        };
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(&cert_pem).map_err(|e| bad(e.to_string()))?;
        let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(DevPkiError::InvalidKey)?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(DevPkiError::CaKeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        let not_after = cert.validity().not_after.to_datetime();
        if not_after <= OffsetDateTime::now_utc() {
            return Err(DevPkiError::CaExpired(cert_path));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(cert.subject()).map_err(bad)?;
        // The AKI of every leaf must repeat the CA's SKI byte for byte, whatever method made it.
        params.key_identifier_method = KeyIdMethod::PreSpecified(
            subject_key_identifier(&cert)
                .ok_or_else(|| bad("no SubjectKeyIdentifier".to_owned()))?,
        );
        Ok(Ca {
            issuer: Issuer::new(params, key),
            not_after,
        })
    }

    /// The files without which the PKI is unusable; clients can be added later.
    fn core_files(&self) -> [PathBuf; 5] {
        [
            self.ca_cert(),
            self.ca_key(),
            self.server_cert(),
            self.server_key(),
            self.receipt_key(),
        ]
    }

    fn files(&self, clients: &[String]) -> Vec<PathBuf> {
        let mut files = self.core_files().to_vec();
        for name in clients {
            files.push(self.client_cert(name));
            files.push(self.client_key(name));
        }
        files
    }

    fn incomplete(&self, missing: PathBuf) -> DevPkiError {
        DevPkiError::Incomplete {
            dir: self.dir.clone(),
            missing,
        }
    }
}

impl Ca {
    /// Signs a leaf for `key` usable as both TLS server and client: IDSCP2 peers are symmetric,
    /// JVM connectors use one certificate for both roles, and the clearing house dials out too.
    fn sign_leaf(
        &self,
        common_name: &str,
        sans: &[String],
        key: &KeyPair,
    ) -> Result<String, DevPkiError> {
        let mut params = CertificateParams::new(sans).map_err(DevPkiError::Certificate)?;
        params.distinguished_name = subject(common_name);
        // rcgen writes the SubjectKeyIdentifier only for certificates with BasicConstraints.
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_identifier_method = KeyIdMethod::Sha256;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(random_serial());
        params.not_before = OffsetDateTime::now_utc() - CLOCK_SKEW;
        params.not_after = self.not_after;
        let cert = params
            .signed_by(key, &self.issuer)
            .map_err(DevPkiError::Certificate)?;
        Ok(cert.pem())
    }
}

fn ca_params(
    key: &KeyPair,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.key_identifier_method = KeyIdMethod::Sha256;
    // A CN of its own per CA keeps "unknown issuer" errors readable when several dev PKIs meet.
    let key_id = hex::encode_upper(&params.key_identifier(key)[..4]);
    params.distinguished_name = subject(&format!("clearinghouse dev CA {key_id}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params.not_before = not_before;
    params.not_after = not_after;
    params
}

fn subject(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, ORGANIZATION);
    name.push(DnType::CommonName, common_name);
    name
}

/// Rebuilds the CA's subject for rcgen with the same string types, because certificate path
/// building compares a leaf's issuer with the CA's subject byte for byte.
fn distinguished_name(name: &X509Name<'_>) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    for attr in name.iter_attributes() {
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or("subject attribute OID out of range")?
            .collect();
        let text = attr.as_str().map_err(|e| e.to_string())?;
        let value = match attr.attr_value().tag() {
            Tag::Utf8String => DnValue::Utf8String(text.to_owned()),
            Tag::PrintableString => {
                DnValue::PrintableString(text.try_into().map_err(|e| format!("{e}"))?)
            }
            tag => return Err(format!("subject attribute of unsupported type {tag:?}")),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

fn subject_key_identifier(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

fn validate(options: &DevPkiOptions) -> Result<(), DevPkiError> {
    if !(1..=MAX_VALIDITY_DAYS).contains(&options.validity_days) {
        return Err(DevPkiError::InvalidValidity(options.validity_days));
    }
    if options.server_names.is_empty() {
        return Err(DevPkiError::NoServerNames);
    }
    for name in &options.server_names {
        let wildcard_free = name.strip_prefix("*.").unwrap_or(name);
        if name.parse::<std::net::IpAddr>().is_err() && !is_dns_name(wildcard_free) {
            return Err(DevPkiError::InvalidServerName(name.clone()));
        }
    }
    for (i, name) in options.clients.iter().enumerate() {
        validate_client_name(name)?;
        if options.clients[..i].contains(name) {
            return Err(DevPkiError::DuplicateClient(name.clone()));
        }
    }
    Ok(())
}

/// Client names become file names as well as SANs, so this also keeps them inside the PKI directory.
fn validate_client_name(name: &str) -> Result<(), DevPkiError> {
    if is_dns_name(name) {
        Ok(())
    } else {
        Err(DevPkiError::InvalidClientName(name.to_owned()))
    }
}

fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn generate_key() -> Result<KeyPair, DevPkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(DevPkiError::InvalidKey)
}

/// rcgen's default serial is a hash of the public key, which repeats when one key is certified twice.
fn random_serial() -> SerialNumber {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    // A positive INTEGER of fixed length: clear the sign bit.
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn create_dir(dir: &Path) -> Result<(), DevPkiError> {
    fs::create_dir_all(dir).map_err(|source| io_error(dir, source))
}

/// Writes `contents` to `path` so that readers see either no file or the whole file, and never
/// replaces an existing one: the data goes to a temporary file first, which is then hard-linked
/// into place (a link, unlike a rename, fails when the target exists).
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), DevPkiError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", uuid::Uuid::new_v4()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .map_err(|source| io_error(&tmp, source));
    let linked = written.and_then(|()| {
        fs::hard_link(&tmp, path).map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => DevPkiError::AlreadyExists(path.to_path_buf()),
            _ => io_error(path, source),
        })
    });
    let removed = match fs::remove_file(&tmp) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(io_error(&tmp, source)),
        _ => Ok(()),
    };
    linked.and(removed)
}

/// Replaces `path` with `contents` at once: written beside it, then renamed over it.
fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), DevPkiError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", uuid::Uuid::new_v4()));
    write_new(&tmp, contents, mode)?;
    fs::rename(&tmp, path).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        io_error(path, source)
    })
}

/// Whether two server names are the same: IP addresses by value, DNS names without case.
fn same_name(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.eq_ignore_ascii_case(b),
    }
}

fn io_error(path: &Path, source: io::Error) -> DevPkiError {
    DevPkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::RootCertStore;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    const DAY: u64 = 86_400;

    fn read_cert(path: &Path) -> Vec<u8> {
        let pem = fs::read(path).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        assert_eq!(pem.label, "CERTIFICATE");
        pem.contents
    }

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        x509_parser::parse_x509_certificate(der).unwrap().1
    }

    fn sans(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<IpAddr>) {
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(name) => dns.push(name.to_string()),
                GeneralName::IPAddress(bytes) => ips.push(match bytes.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap()),
                    _ => IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap()),
                }),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        (dns, ips)
    }

    fn authority_key_identifier(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
        cert.iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => None,
            })
    }

    fn roots(ca_der: &[u8]) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca_der.to_vec())).unwrap();
        Arc::new(roots)
    }

    fn in_days(days: u64) -> UnixTime {
        let now = UnixTime::now().as_secs();
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(now + days * DAY))
    }

    /// What a rustls server decides about `leaf_der` presented as a client certificate.
    fn verify_as_client(ca_der: &[u8], leaf_der: &[u8], at: UnixTime) -> Result<(), rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_der), provider)
            .build()
            .unwrap();
        let leaf = CertificateDer::from(leaf_der.to_vec());
        verifier.verify_client_cert(&leaf, &[], at).map(|_| ())
    }

    /// What a rustls client connecting to `name` decides about `leaf_der` as the server certificate.
    fn verify_as_server(
        ca_der: &[u8],
        leaf_der: &[u8],
        name: &str,
        at: UnixTime,
    ) -> Result<(), rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca_der), provider)
            .build()
            .unwrap();
        let leaf = CertificateDer::from(leaf_der.to_vec());
        let name = ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], at)
            .map(|_| ())
    }

    /// Checks everything a leaf needs to be accepted by rustls and idscp2-jvm and to yield an identity.
    fn assert_leaf_of(ca_der: &[u8], leaf_der: &[u8], validity_days: u64) {
        let (ca, leaf) = (parse(ca_der), parse(leaf_der));
        let ca_ski = subject_key_identifier(&ca).expect("CA SKI");
        let leaf_ski = subject_key_identifier(&leaf).expect("leaf SKI");
        assert_eq!(leaf_ski.len(), 20);
        assert_ne!(leaf_ski, ca_ski);
        assert_eq!(authority_key_identifier(&leaf), Some(ca_ski));
        assert!(!leaf.is_ca());

        // idscp2-jvm wants the peer certificate valid now and 24 h from now; it must not outlive the CA.
        verify_as_client(ca_der, leaf_der, UnixTime::now()).unwrap();
        verify_as_client(ca_der, leaf_der, in_days(1)).unwrap();
        assert!(verify_as_client(ca_der, leaf_der, in_days(validity_days + 1)).is_err());

        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);

        let now = OffsetDateTime::now_utc().unix_timestamp();
        let not_before = leaf.validity().not_before.timestamp();
        let not_after = leaf.validity().not_after.timestamp();
        assert!((now - 3600 - 60..=now - 3600 + 60).contains(&not_before));
        assert_eq!(not_after, ca.validity().not_after.timestamp());
        let expected_end = now + i64::try_from(validity_days * DAY).unwrap();
        assert!((expected_end - 60..=expected_end + 60).contains(&not_after));
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generates_a_ca_with_server_and_client_leaves() {
        let tmp = tempfile::tempdir().unwrap();
        let options = DevPkiOptions::default();
        let pki = DevPki::generate(&tmp.path().join("pki"), &options).unwrap();

        let ca_der = read_cert(&pki.ca_cert());
        let ca = parse(&ca_der);
        assert!(ca.is_ca());
        assert_eq!(ca.issuer().as_raw(), ca.subject().as_raw());
        assert!(subject_key_identifier(&ca).is_some());

        let server_der = read_cert(&pki.server_cert());
        assert_leaf_of(&ca_der, &server_der, 365);
        for name in ["localhost", "127.0.0.1", "::1"] {
            verify_as_server(&ca_der, &server_der, name, UnixTime::now()).unwrap();
        }
        assert!(verify_as_server(&ca_der, &server_der, "example.org", UnixTime::now()).is_err());
        let (dns, ips) = sans(&parse(&server_der));
        assert_eq!(dns, ["localhost"]);
        assert_eq!(
            ips,
            [
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );

        for name in ["connector-a", "connector-b", "auditor"] {
            let der = read_cert(&pki.client_cert(name));
            assert_leaf_of(&ca_der, &der, 365);
            // Connectors are IDSCP2 servers too.
            verify_as_server(&ca_der, &der, name, UnixTime::now()).unwrap();
            let (dns, ips) = sans(&parse(&der));
            assert_eq!(dns, [name]);
            assert_eq!(ips, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
        }
    }

    #[test]
    fn keys_are_private_pkcs8_and_match_their_certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(tmp.path(), &DevPkiOptions::default()).unwrap();
        let pairs = [
            (pki.ca_cert(), pki.ca_key()),
            (pki.server_cert(), pki.server_key()),
            (pki.client_cert("auditor"), pki.client_key("auditor")),
        ];
        for (cert, key) in &pairs {
            assert_eq!(mode(key), 0o600, "{}", key.display());
            let key_pem = fs::read_to_string(key).unwrap();
            assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            let key = KeyPair::from_pem(&key_pem).unwrap();
            assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);
            let der = read_cert(cert);
            assert_eq!(parse(&der).public_key().raw, key.subject_public_key_info());
        }
        assert_eq!(mode(&pki.receipt_key()), 0o600);
        let receipt = KeyPair::from_pem(&fs::read_to_string(pki.receipt_key()).unwrap()).unwrap();
        assert_eq!(receipt.algorithm(), &PKCS_ECDSA_P256_SHA256);
        // Nothing of the atomic writes is left behind.
        let leftovers: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn custom_options_shape_the_certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let options = DevPkiOptions {
            server_names: vec![
                "ch.example.test".into(),
                "*.ch.example.test".into(),
                "10.1.2.3".into(),
            ],
            clients: vec!["broker".into()],
            validity_days: 30,
        };
        let pki = DevPki::generate(tmp.path(), &options).unwrap();
        let ca_der = read_cert(&pki.ca_cert());
        let server_der = read_cert(&pki.server_cert());
        assert_leaf_of(&ca_der, &server_der, 30);
        let (dns, ips) = sans(&parse(&server_der));
        assert_eq!(dns, ["ch.example.test", "*.ch.example.test"]);
        assert_eq!(ips, ["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert!(pki.client_cert("broker").exists());
        assert!(!pki.client_cert("connector-a").exists());
    }

    #[test]
    fn every_generated_ca_is_distinct() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = DevPki::generate(a.path(), &DevPkiOptions::default()).unwrap();
        let b = DevPki::generate(b.path(), &DevPkiOptions::default()).unwrap();
        let (a_der, b_der) = (read_cert(&a.ca_cert()), read_cert(&b.ca_cert()));
        let (a_ca, b_ca) = (parse(&a_der), parse(&b_der));
        assert_ne!(a_ca.subject().as_raw(), b_ca.subject().as_raw());
        assert_ne!(a_ca.raw_serial(), b_ca.raw_serial());
        let leaf = read_cert(&b.client_cert("connector-a"));
        verify_as_client(&b_der, &leaf, UnixTime::now()).unwrap();
        assert!(verify_as_client(&a_der, &leaf, UnixTime::now()).is_err());
    }

    #[test]
    fn open_or_generate_reuses_a_complete_pki() {
        let tmp = tempfile::tempdir().unwrap();
        let options = DevPkiOptions::default();
        let first = DevPki::open_or_generate(tmp.path(), &options).unwrap();
        let files = first.files(&options.clients);
        let before: Vec<Vec<u8>> = files.iter().map(|p| fs::read(p).unwrap()).collect();
        let second = DevPki::open_or_generate(tmp.path(), &options).unwrap();
        assert_eq!(first, second);
        let after: Vec<Vec<u8>> = files.iter().map(|p| fs::read(p).unwrap()).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn open_or_generate_enrols_clients_it_lacks() {
        let tmp = tempfile::tempdir().unwrap();
        let mut options = DevPkiOptions::default();
        let pki = DevPki::open_or_generate(tmp.path(), &options).unwrap();
        let server_before = fs::read(pki.server_cert()).unwrap();
        options.clients.push("connector-c".into());
        DevPki::open_or_generate(tmp.path(), &options).unwrap();
        assert_eq!(fs::read(pki.server_cert()).unwrap(), server_before);
        let ca_der = read_cert(&pki.ca_cert());
        assert_leaf_of(&ca_der, &read_cert(&pki.client_cert("connector-c")), 365);
    }

    #[test]
    fn added_server_names_reissue_the_server_certificate_with_the_same_key() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(tmp.path(), &DevPkiOptions::default()).unwrap();
        let key_before = fs::read(pki.server_key()).unwrap();
        let names = vec!["ch.example".to_owned(), "LOCALHOST".to_owned()];
        assert_eq!(pki.add_server_names(&names).unwrap(), ["ch.example"]);
        let mut names_now = pki.server_names().unwrap();
        names_now.sort();
        assert_eq!(names_now, ["127.0.0.1", "::1", "ch.example", "localhost"]);
        assert_eq!(fs::read(pki.server_key()).unwrap(), key_before);
        let ca = read_cert(&pki.ca_cert());
        let leaf = read_cert(&pki.server_cert());
        verify_as_server(&ca, &leaf, "ch.example", UnixTime::now()).unwrap();
        assert!(pki.add_server_names(&names).unwrap().is_empty());
    }

    #[test]
    fn open_or_generate_refuses_a_partial_pki() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(tmp.path(), &DevPkiOptions::default()).unwrap();
        fs::remove_file(pki.server_key()).unwrap();
        match DevPki::open_or_generate(tmp.path(), &DevPkiOptions::default()) {
            Err(DevPkiError::Incomplete { missing, .. }) => assert_eq!(missing, pki.server_key()),
            other => panic!("expected Incomplete, got {other:?}"),
        }
        assert!(!pki.server_key().exists());
    }

    #[test]
    fn generate_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(tmp.path(), &DevPkiOptions::default()).unwrap();
        let ca_before = fs::read(pki.ca_cert()).unwrap();
        fs::remove_file(pki.server_cert()).unwrap();
        match DevPki::generate(tmp.path(), &DevPkiOptions::default()) {
            Err(DevPkiError::AlreadyExists(path)) => assert_eq!(path, pki.ca_cert()),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        assert_eq!(fs::read(pki.ca_cert()).unwrap(), ca_before);
        assert!(!pki.server_cert().exists());
    }

    #[test]
    fn issue_client_signs_with_the_stored_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(tmp.path(), &DevPkiOptions::default()).unwrap();
        let (cert, key) = pki.issue_client("connector-new").unwrap();
        assert_eq!(cert, pki.client_cert("connector-new"));
        assert_eq!(key, pki.client_key("connector-new"));
        assert_eq!(mode(&key), 0o600);
        let ca_der = read_cert(&pki.ca_cert());
        let leaf_der = read_cert(&cert);
        assert_leaf_of(&ca_der, &leaf_der, 365);
        let (dns, _) = sans(&parse(&leaf_der));
        assert_eq!(dns, ["connector-new"]);

        match pki.issue_client("connector-new") {
            Err(DevPkiError::AlreadyExists(path)) => assert_eq!(path, cert),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        assert_eq!(read_cert(&cert), leaf_der);
    }

    #[test]
    fn issue_client_with_key_keeps_the_given_key() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(tmp.path(), &DevPkiOptions::default()).unwrap();
        let key_pem = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem();
        let (cert, key) = pki.issue_client_with_key("byok", &key_pem).unwrap();
        assert_eq!(fs::read_to_string(&key).unwrap(), key_pem);
        let public = KeyPair::from_pem(&key_pem)
            .unwrap()
            .subject_public_key_info();
        assert_eq!(parse(&read_cert(&cert)).public_key().raw, public);

        assert!(matches!(
            pki.issue_client_with_key("garbage", "not a key"),
            Err(DevPkiError::InvalidKey(_))
        ));
        assert!(!pki.client_cert("garbage").exists());
    }

    #[test]
    fn a_ca_key_that_does_not_match_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(tmp.path(), &DevPkiOptions::default()).unwrap();
        fs::remove_file(pki.ca_key()).unwrap();
        fs::write(pki.ca_key(), generate_key().unwrap().serialize_pem()).unwrap();
        assert!(matches!(
            pki.issue_client("connector-c"),
            Err(DevPkiError::CaKeyMismatch { .. })
        ));
    }

    #[test]
    fn invalid_options_are_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in [
            "",
            "../escape",
            "a/b",
            "-lead",
            "trail-",
            "a..b",
            "sp ace",
            "*.wild",
        ] {
            let options = DevPkiOptions {
                clients: vec![bad.into()],
                ..DevPkiOptions::default()
            };
            assert!(
                matches!(DevPki::generate(tmp.path(), &options), Err(DevPkiError::InvalidClientName(n)) if n == bad),
                "{bad:?}"
            );
        }
        for bad in ["", "a b", "host_name", "*"] {
            let options = DevPkiOptions {
                server_names: vec![bad.into()],
                ..DevPkiOptions::default()
            };
            assert!(
                matches!(DevPki::generate(tmp.path(), &options), Err(DevPkiError::InvalidServerName(n)) if n == bad),
                "{bad:?}"
            );
        }
        let duplicate = DevPkiOptions {
            clients: vec!["x".into(), "x".into()],
            ..DevPkiOptions::default()
        };
        assert!(matches!(
            DevPki::generate(tmp.path(), &duplicate),
            Err(DevPkiError::DuplicateClient(n)) if n == "x"
        ));
        let no_servers = DevPkiOptions {
            server_names: vec![],
            ..DevPkiOptions::default()
        };
        assert!(matches!(
            DevPki::generate(tmp.path(), &no_servers),
            Err(DevPkiError::NoServerNames)
        ));
        for days in [0, MAX_VALIDITY_DAYS + 1, u32::MAX] {
            let options = DevPkiOptions {
                validity_days: days,
                ..DevPkiOptions::default()
            };
            assert!(matches!(
                DevPki::generate(tmp.path(), &options),
                Err(DevPkiError::InvalidValidity(d)) if d == days
            ));
        }
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
        let pki = DevPki {
            dir: tmp.path().to_path_buf(),
        };
        assert!(matches!(
            pki.issue_client("../escape"),
            Err(DevPkiError::InvalidClientName(_))
        ));
    }
}

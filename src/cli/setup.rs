//! Turns a [`Config`] into the library's parts: TLS, DAT drivers, the IDSCP2 endpoint, the
//! receipt signer and JWKS, and the store. Everything is loaded and checked here, before
//! anything listens, and every failure is a [`ConfigError`] naming the setting to fix.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::report::one_line;
use crate::config::{or_default, Config, ConfigError, DatMode, EncryptionSwitch, StoreBackend};
use crate::devpki::{DevPki, DevPkiOptions};
use crate::idscp2::budget::{BudgetError, MemoryLimits};
use crate::idscp2::dat::{
    daps_http_client, DapsIssuer, DapsIssuerConfig, DapsVerifier, DapsVerifierConfig, DatError,
    DatIssuer, DatVerifier, DevelopmentIssuer, DevelopmentVerifier, JwksSource, StaticIssuer,
};
use crate::idscp2::endpoint::{Endpoint, EndpointError, Settings};
use crate::idscp2::ra::{RaRegistry, RaRole};
use crate::idscp2::tls::{self, PeerCertificate, TlsError, TlsIdentity};
use crate::receipt::{retired_jwk_from_pem, Jwks, ReceiptSigner};
use crate::store::mongodb::{MongoConfig, MongoStore, WriteAcknowledgment};
use crate::store::sealing::{generate_kek_file, KekFile, Keyring};
use crate::store::{EmbeddedOptions, EmbeddedStore, ProcessStore, Sealing, UsageStore};

/// The TLS and receipt files in use, defaults filled in.
pub(crate) struct Files {
    pub(crate) certificate: PathBuf,
    pub(crate) private_key: PathBuf,
    pub(crate) ca_certificates: PathBuf,
    pub(crate) receipt_key: PathBuf,
    /// Set when some file comes from the development PKI.
    pub(crate) dev_pki: Option<DevPki>,
}

/// Fills in empty TLS and receipt paths from the development PKI in `<data_dir>/dev-pki`,
/// generating it when `generate` is set and it does not exist yet (the first run).
pub(crate) fn files(config: &Config, generate: bool) -> Result<Files, ConfigError> {
    let dev_pki = if config.uses_dev_pki() {
        let dir = config.dev_pki_dir();
        let pki = if generate {
            DevPki::open_or_generate(&dir, &DevPkiOptions::default()).map_err(|e| {
                ConfigError::setting(
                    "server.data_dir",
                    format!("development PKI in {}: {}", dir.display(), one_line(&e)),
                )
            })?
        } else {
            DevPki { dir }
        };
        Some(pki)
    } else {
        None
    };
    let from_pki = |setting: &Path, file: fn(&DevPki) -> PathBuf| match &dev_pki {
        Some(pki) => or_default(setting, || file(pki)),
        None => setting.to_path_buf(),
    };
    Ok(Files {
        certificate: from_pki(&config.tls.certificate, DevPki::server_cert),
        private_key: from_pki(&config.tls.private_key, DevPki::server_key),
        ca_certificates: from_pki(&config.tls.ca_certificates, DevPki::ca_cert),
        receipt_key: from_pki(&config.receipt.key, DevPki::receipt_key),
        dev_pki,
    })
}

/// Our TLS identity and the server-side rustls configuration.
pub(crate) fn server_tls(
    files: &Files,
) -> Result<(TlsIdentity, Arc<rustls::ServerConfig>), ConfigError> {
    let identity =
        TlsIdentity::from_pem_files(&files.certificate, &files.private_key).map_err(|e| {
            let setting = match tls_error_path(&e) {
                Some(path) if path == files.certificate => "tls.certificate",
                _ => "tls.private_key",
            };
            ConfigError::setting(setting, e)
        })?;
    let cas = tls::load_ca_file(&files.ca_certificates)
        .map_err(|e| ConfigError::setting("tls.ca_certificates", e))?;
    let config = tls::server_config(&identity, &cas)
        .map_err(|e| ConfigError::setting("tls.ca_certificates", e))?;
    Ok((identity, config))
}

fn tls_error_path(error: &TlsError) -> Option<&Path> {
    match error {
        TlsError::Read { path, .. } | TlsError::InFile { path, .. } => Some(path),
        _ => None,
    }
}

/// `SKI:keyid:AKI` of our certificate: our DAPS client id, and the default connector id's core.
pub(crate) fn certificate_id(identity: &TlsIdentity) -> Result<String, ConfigError> {
    PeerCertificate::new(identity.leaf().clone())
        .connector_id()
        .map_err(|e| ConfigError::setting("tls.certificate", e))
}

pub(crate) fn connector_id(config: &Config, identity: &TlsIdentity) -> Result<String, ConfigError> {
    if !config.server.connector_id.is_empty() {
        return Ok(config.server.connector_id.clone());
    }
    Ok(format!("urn:clearinghouse:{}", certificate_id(identity)?))
}

/// Our DAT issuer and the verifier of peers' DATs (also used for tokens in message headers).
pub(crate) struct DatDrivers {
    pub(crate) issuer: Arc<dyn DatIssuer>,
    pub(crate) verifier: Arc<dyn DatVerifier>,
    /// `None` in development mode: replies then carry no security token.
    pub(crate) own_dat: Option<Arc<dyn DatIssuer>>,
}

pub(crate) fn dat_drivers(
    config: &Config,
    files: &Files,
    identity: &TlsIdentity,
) -> Result<DatDrivers, ConfigError> {
    let dat = &config.dat;
    if dat.mode == DatMode::Development {
        tracing::warn!(
            "dat.mode = \"development\": peers are identified by their certificates alone and \
             their DATs are NOT verified; do not use this in a data space"
        );
        return Ok(DatDrivers {
            issuer: Arc::new(DevelopmentIssuer::new()),
            verifier: Arc::new(DevelopmentVerifier::new()),
            own_dat: None,
        });
    }
    let http = daps_http_client().map_err(|e| ConfigError::setting("dat.daps_url", e))?;
    let issuer_url = dat.daps_url.trim_end_matches('/');
    let jwks = if dat.jwks.is_empty() {
        JwksSource::Url(format!("{issuer_url}/.well-known/jwks.json"))
    } else if dat.jwks.starts_with("http://") || dat.jwks.starts_with("https://") {
        JwksSource::Url(dat.jwks.clone())
    } else {
        JwksSource::File(PathBuf::from(&dat.jwks))
    };
    let mut verifier_config = DapsVerifierConfig::new(dat.daps_url.clone(), jwks, http.clone());
    if !dat.minimum_security_profile.is_empty() {
        verifier_config.minimum_security_profile = Some(dat.minimum_security_profile.clone());
    }
    let verifier = DapsVerifier::new(verifier_config).map_err(|e| match e {
        DatError::UnknownSecurityProfile(_) => {
            ConfigError::setting("dat.minimum_security_profile", e)
        }
        other => ConfigError::setting("dat.jwks", other),
    })?;
    let issuer: Arc<dyn DatIssuer> = match dat.mode {
        DatMode::Static => Arc::new(
            StaticIssuer::new(&dat.token_file)
                .map_err(|e| ConfigError::setting("dat.token_file", e))?,
        ),
        _ => {
            let key_pem = std::fs::read(&files.private_key).map_err(|e| {
                ConfigError::setting(
                    "tls.private_key",
                    format!("cannot read {}: {e}", files.private_key.display()),
                )
            })?;
            let client = DapsIssuerConfig::new(
                dat.token_url.clone(),
                certificate_id(identity)?,
                key_pem,
                http,
            );
            Arc::new(
                DapsIssuer::new(client).map_err(|e| ConfigError::setting("tls.private_key", e))?,
            )
        }
    };
    Ok(DatDrivers {
        issuer: issuer.clone(),
        verifier: Arc::new(verifier),
        own_dat: Some(issuer),
    })
}

/// What the transport's metric names start with: `clearinghouse_handshakes_total` and so on, as
/// the README's metrics table and dashboards know them.
pub(crate) const METRICS_PREFIX: &str = "clearinghouse";

pub(crate) fn endpoint(config: &Config, dat: &DatDrivers) -> Result<Endpoint, ConfigError> {
    let idscp2 = &config.idscp2;
    let settings = Settings {
        supported_ra: idscp2.supported_ra.clone(),
        expected_ra: idscp2.expected_ra.clone(),
        handshake_timeout: Duration::from_millis(idscp2.handshake_timeout_ms),
        ack_timeout: Duration::from_millis(idscp2.ack_timeout_ms),
        ack_delay: Duration::from_millis(idscp2.ack_delay_ms),
        ra_interval: Duration::from_secs(idscp2.ra_interval_s),
        dat_renewal_threshold: idscp2.dat_renewal_threshold,
        max_frame: idscp2.max_frame,
        max_resends: idscp2.max_resends,
        frame_timeout: Duration::from_millis(idscp2.frame_timeout_ms),
        handshake_max_frame: idscp2.handshake_max_frame,
        requests_in_flight: config.server.requests_in_flight,
        memory: MemoryLimits {
            total: config.server.max_buffered_bytes,
            per_connection: config.server.connection_buffer_bytes,
            connections: config.server.max_connections,
        },
        metrics_prefix: METRICS_PREFIX.to_string(),
        ..Settings::default()
    };
    Endpoint::new(
        settings,
        dat.issuer.clone(),
        dat.verifier.clone(),
        RaRegistry::builtin(),
    )
    .map_err(|e| {
        let setting = match &e {
            EndpointError::UnknownRaSuite {
                role: RaRole::Verifier,
                ..
            } => "idscp2.expected_ra",
            EndpointError::UnknownRaSuite { .. } | EndpointError::NoRaSuite => {
                "idscp2.supported_ra"
            }
            EndpointError::BadThreshold(_) => "idscp2.dat_renewal_threshold",
            EndpointError::HandshakeFrameTooSmall(_) => "idscp2.handshake_max_frame",
            EndpointError::Zero("max_resends") => "idscp2.max_resends",
            EndpointError::Zero(_) => "server.requests_in_flight",
            EndpointError::Memory(BudgetError::ShareTooSmall { .. }) => {
                "server.connection_buffer_bytes"
            }
            EndpointError::Memory(_) => "server.max_buffered_bytes",
        };
        ConfigError::setting(setting, e)
    })
}

/// The receipt signer and the JWKS with the current and the retired keys.
pub(crate) fn receipts(
    config: &Config,
    files: &Files,
) -> Result<(Arc<ReceiptSigner>, Jwks), ConfigError> {
    let pem = std::fs::read(&files.receipt_key).map_err(|e| {
        ConfigError::setting(
            "receipt.key",
            format!("{}: {e}", files.receipt_key.display()),
        )
    })?;
    let signer = ReceiptSigner::from_pem(config.receipt_algorithm()?, &pem).map_err(|e| {
        ConfigError::setting(
            "receipt.key",
            format!("{}: {e}", files.receipt_key.display()),
        )
    })?;
    let mut retired = Vec::new();
    for (index, key) in config.receipt.retired_keys.iter().enumerate() {
        let setting = format!("receipt.retired_keys[{index}].key");
        let algorithm = key.algorithm.parse().map_err(|e| {
            ConfigError::setting(format!("receipt.retired_keys[{index}].algorithm"), e)
        })?;
        let pem = std::fs::read(&key.key)
            .map_err(|e| ConfigError::setting(&setting, format!("{}: {e}", key.key.display())))?;
        retired.push(
            retired_jwk_from_pem(algorithm, &pem).map_err(|e| {
                ConfigError::setting(&setting, format!("{}: {e}", key.key.display()))
            })?,
        );
    }
    let jwks = Jwks::new(&signer, retired);
    Ok((Arc::new(signer), jwks))
}

/// The store's encryption as configured: the KEK files read and checked, or, in development
/// mode without KEK files, the development KEK beside the development PKI (generated when
/// `generate` is set and it does not exist yet, i.e. by `serve`).
pub(crate) fn sealing(config: &Config, generate: bool) -> Result<Sealing, ConfigError> {
    let encryption = &config.store.encryption;
    let setting = |reason: String| ConfigError::setting("store.encryption.keys", reason);
    if encryption.enabled == EncryptionSwitch::Off {
        tracing::warn!(
            "store.encryption.enabled = false: new processes are stored in the clear; anyone              with a copy of the store reads their payloads and headers"
        );
        return Ok(Sealing::disabled());
    }
    let files: Vec<KekFile> = if encryption.keys.is_empty() {
        // `Config::validate` allows this in development mode only.
        let file = config.dev_kek_file();
        if !file.exists() {
            if !generate {
                return Ok(Sealing::disabled());
            }
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| setting(format!("{}: {e}", dir.display())))?;
            }
            generate_kek_file(&file).map_err(|e| {
                setting(format!(
                    "cannot write the development KEK {}: {e}",
                    file.display()
                ))
            })?;
        }
        vec![KekFile {
            id: "development".to_owned(),
            file,
            active: true,
        }]
    } else {
        encryption
            .keys
            .iter()
            .map(|kek| KekFile {
                id: kek.id.clone(),
                file: kek.file.clone(),
                active: kek.active,
            })
            .collect()
    };
    let keyring = Keyring::load(&files).map_err(|e| setting(e.to_string()))?;
    Ok(Sealing::with_keyring(keyring))
}

/// Opens the configured store and checks that it answers: the one place a backend is chosen.
pub(crate) async fn store(config: &Config) -> Result<Arc<dyn ProcessStore>, ConfigError> {
    Ok(stores(config, false).await?.0)
}

/// The configured store, and the same backend's usage counters for the quotas; `generate` as
/// for [`sealing`].
pub(crate) async fn stores(
    config: &Config,
    generate: bool,
) -> Result<(Arc<dyn ProcessStore>, Arc<dyn UsageStore>), ConfigError> {
    let sealing = sealing(config, generate)?;
    let configured_keks = sealing.kek_ids();
    let (store, usage): (Arc<dyn ProcessStore>, Arc<dyn UsageStore>) = match config.store.backend {
        StoreBackend::Embedded => {
            let path = config.store_path();
            let setting = |reason: String| {
                ConfigError::setting("store.path", format!("{}: {reason}", path.display()))
            };
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| setting(e.to_string()))?;
            }
            let options = EmbeddedOptions {
                sealing,
                commit_delay: Duration::from_micros(config.store.commit_delay_us),
            };
            let store = Arc::new(EmbeddedStore::open_with(&path, options).map_err(|e| {
                let reason = one_line(&e);
                // redb's lock: another process (usually `serve`) has the file open.
                if reason.contains("already open") {
                    setting(format!(
                        "{reason}; another process has it open: stop `clearinghouse serve` first, \
                         or read the process through the running server with \
                         `clearinghouse client query --pid PID --all --format json`"
                    ))
                } else {
                    setting(reason)
                }
            })?);
            (store.clone(), store)
        }
        StoreBackend::Mongodb => {
            let mongo = &config.store.mongodb;
            let write_acknowledgment = match mongo.write_concern.as_str() {
                "majority" => WriteAcknowledgment::Majority,
                nodes => WriteAcknowledgment::Nodes(nodes.parse().map_err(|_| {
                    ConfigError::setting(
                        "store.mongodb.write_concern",
                        format!("{nodes:?} is neither \"majority\" nor a positive number"),
                    )
                })?),
            };
            let settings = MongoConfig {
                timeout: Duration::from_millis(mongo.timeout_ms),
                write_acknowledgment,
                journal: mongo.journal,
                ..MongoConfig::new(&mongo.uri, &mongo.database)
            }
            .with_sealing(sealing);
            let store = Arc::new(
                MongoStore::connect(settings)
                    .await
                    .map_err(|e| mongodb_unreachable(mongo, &e.to_string()))?,
            );
            (store.clone(), store)
        }
    };
    store.ping().await.map_err(|e| match config.store.backend {
        StoreBackend::Mongodb => mongodb_unreachable(&config.store.mongodb, &e.to_string()),
        StoreBackend::Embedded => ConfigError::setting(
            "store.path",
            format!("{}: not usable: {e}", config.store_path().display()),
        ),
    })?;
    check_keks(store.as_ref(), &configured_keks).await?;
    Ok((store, usage))
}

/// Refuses a store whose data keys are wrapped by KEKs that are not configured: it could not
/// read those processes, and a later `keys rewrap` could not move them.
async fn check_keks(
    store: &dyn ProcessStore,
    configured: &BTreeSet<String>,
) -> Result<(), ConfigError> {
    let setting = |reason: String| ConfigError::setting("store.encryption.keys", reason);
    let referenced = store.data_key_keks().await.map_err(|e| {
        setting(format!(
            "cannot list the KEKs of the store's data keys: {e}"
        ))
    })?;
    let missing: Vec<&String> = referenced
        .iter()
        .filter(|id| !configured.contains(*id))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(setting(match configured.is_empty() {
        true => format!(
            "the store holds encrypted processes (data keys wrapped by KEK {missing:?}), but encryption is off or has no KEK; configure their KEK files"
        ),
        false => format!(
            "the store holds data keys wrapped by KEK {missing:?}, which is not configured; add its file (keep it until `clearinghouse keys rewrap` has moved every data key to the active KEK)"
        ),
    }))
}

/// MongoDB did not answer at start: one line with the address (credentials hidden) and the
/// reason, instead of the driver's description of its whole topology.
fn mongodb_unreachable(mongo: &crate::config::MongoConfig, detail: &str) -> ConfigError {
    ConfigError::setting(
        "store.mongodb.uri",
        format!(
            "MongoDB at {} is unavailable: {}",
            without_credentials(&mongo.uri),
            mongodb_reason(detail, mongo.timeout_ms)
        ),
    )
}

/// The first server error in a driver message (`… Servers: [ { …, Error: Kind: I/O error:
/// Connection refused (os error 111), labels: … } ] …`), or the message's own first part.
fn mongodb_reason(detail: &str, timeout_ms: u64) -> String {
    let detail = detail.strip_prefix("store unavailable: ").unwrap_or(detail);
    let detail = detail.strip_prefix("MongoDB: ").unwrap_or(detail);
    let server_error = detail
        .split_once("Servers: [")
        .and_then(|(_, servers)| servers.split_once("Error: Kind: "))
        .map(|(_, error)| error);
    let reason = server_error
        .unwrap_or(detail)
        .split(", labels:")
        .next()
        .unwrap_or_default()
        .trim_start_matches("Kind: ")
        .trim();
    if detail.contains("Server selection timeout") && server_error.is_none() {
        return format!("no server answered within store.mongodb.timeout_ms ({timeout_ms} ms)");
    }
    reason.to_owned()
}

/// `mongodb://user:secret@host/…` as `mongodb://***@host/…`.
fn without_credentials(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_topology_dump_becomes_its_reason() {
        let dump = "store unavailable: MongoDB: Kind: Server selection timeout: No available \
            servers. Topology: { Type: Single, Servers: [ { Address: 127.0.0.1:1, Type: Unknown, \
            Error: Kind: I/O error: Connection refused (os error 111), labels: \
            {\"SystemOverloadedError\"}, source: None } ] }, labels: {}, source: None";
        assert_eq!(
            mongodb_reason(dump, 500),
            "I/O error: Connection refused (os error 111)"
        );
        let silent = "MongoDB: Kind: Server selection timeout: No available servers. \
            Topology: { Type: Unknown, Servers: [ ] }, labels: {}";
        assert_eq!(
            mongodb_reason(silent, 500),
            "no server answered within store.mongodb.timeout_ms (500 ms)"
        );
    }

    #[test]
    fn credentials_are_hidden() {
        assert_eq!(
            without_credentials("mongodb://ch:secret@db:27017/?replicaSet=rs0"),
            "mongodb://***@db:27017/?replicaSet=rs0"
        );
        assert_eq!(
            without_credentials("mongodb://db:27017/?x=a@b"),
            "mongodb://db:27017/?x=a@b"
        );
    }
}

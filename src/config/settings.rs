//! Every setting with its default. `config/clearinghouse.toml` documents the same keys; unknown
//! keys are refused so that a misspelt setting is an error instead of a silently ignored line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::http::HttpConfig;
use super::ConfigError;
use crate::clearing::DEFAULT_MAX_PAYLOAD;
use crate::ids::params::ParamLimits;
use crate::ids::pid::MAX_PID_LEN;
use crate::idscp2::admission::HandshakeLimits;
use crate::idscp2::budget::MemoryLimits;
use crate::idscp2::frame::{DEFAULT_HANDSHAKE_MAX_FRAME, DEFAULT_MAX_FRAME};
use crate::receipt::ReceiptAlgorithm;
use crate::store::embedded::DEFAULT_COMMIT_DELAY;

/// The longest `store.commit_delay_us`: past it, the wait would be felt as latency, and batches
/// are already as large as the load can make them.
const MAX_COMMIT_DELAY_US: u64 = 10_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) server: ServerConfig,
    pub(crate) tls: TlsConfig,
    pub(crate) idscp2: Idscp2Config,
    pub(crate) dat: DatConfig,
    pub(crate) receipt: ReceiptConfig,
    pub(crate) store: StoreConfig,
    pub(crate) ops: OpsConfig,
    pub(crate) log: LogConfig,
    pub(crate) limits: LimitsConfig,
    pub(crate) quotas: QuotasConfig,
    pub(crate) admin: AdminConfig,
    pub(crate) http: HttpConfig,
}

/// `[admin]`: operators' connectors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AdminConfig {
    /// Connector ids that may erase processes (`ch-ids-operation: erase`).
    pub(crate) identities: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ServerConfig {
    pub(crate) listen: String,
    pub(crate) max_connections: usize,
    /// Our connector IRI; empty: `urn:clearinghouse:<SKI:keyid:AKI of tls.certificate>`.
    pub(crate) connector_id: String,
    pub(crate) data_dir: PathBuf,
    pub(crate) max_payload: usize,
    /// Connections in TLS or the IDSCP2 handshake at once; further new sockets are closed at once.
    pub(crate) max_handshakes: usize,
    /// Of those, from one IPv4 address or IPv6 /64.
    pub(crate) max_handshakes_per_address: usize,
    /// A new socket that sends no TLS ClientHello for this long is closed.
    pub(crate) client_hello_timeout_ms: u64,
    /// Bytes of peer data all connections together may hold (the memory bound).
    pub(crate) max_buffered_bytes: usize,
    /// Bytes of peer data one connection may hold.
    pub(crate) connection_buffer_bytes: usize,
    /// Requests a peer may have in flight (received, not yet answered and ACKed).
    pub(crate) requests_in_flight: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let handshakes = HandshakeLimits::default();
        ServerConfig {
            listen: "0.0.0.0:29292".into(),
            max_connections: 1024,
            connector_id: String::new(),
            data_dir: PathBuf::from("data"),
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_handshakes: handshakes.max_pending,
            max_handshakes_per_address: handshakes.max_pending_per_source,
            client_hello_timeout_ms: handshakes.client_hello_timeout.as_millis() as u64,
            max_buffered_bytes: MemoryLimits::default().total,
            connection_buffer_bytes: MemoryLimits::default().per_connection,
            requests_in_flight: 2,
        }
    }
}

/// Empty paths mean the development PKI in `<data_dir>/dev-pki` (development mode only).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TlsConfig {
    pub(crate) certificate: PathBuf,
    pub(crate) private_key: PathBuf,
    pub(crate) ca_certificates: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Idscp2Config {
    pub(crate) handshake_timeout_ms: u64,
    pub(crate) ack_timeout_ms: u64,
    /// How long an ACK may wait for the answer to go out with it (0: at once).
    pub(crate) ack_delay_ms: u64,
    pub(crate) ra_interval_s: u64,
    pub(crate) dat_renewal_threshold: f64,
    pub(crate) supported_ra: Vec<String>,
    pub(crate) expected_ra: Vec<String>,
    pub(crate) max_frame: usize,
    /// Resends of unacknowledged data before the peer is closed with TIMEOUT.
    pub(crate) max_resends: u32,
    /// A frame must be complete this long after its length arrived.
    pub(crate) frame_timeout_ms: u64,
    /// The frame limit until the peer's DAT is accepted.
    pub(crate) handshake_max_frame: usize,
}

impl Default for Idscp2Config {
    fn default() -> Self {
        let suites = vec!["Dummy2".to_owned(), "Dummy".to_owned()];
        Idscp2Config {
            handshake_timeout_ms: 10_000,
            ack_timeout_ms: 200,
            ack_delay_ms: 10,
            ra_interval_s: 3600,
            dat_renewal_threshold: 0.666,
            supported_ra: suites.clone(),
            expected_ra: suites,
            max_frame: DEFAULT_MAX_FRAME,
            max_resends: 25,
            frame_timeout_ms: 30_000,
            handshake_max_frame: DEFAULT_HANDSHAKE_MAX_FRAME,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DatMode {
    /// NullDAPS tokens, identities from certificates; for trying things out and tests.
    #[default]
    Development,
    /// Our DAT from the DAPS token endpoint; peers' DATs checked against the DAPS keys.
    Daps,
    /// Our DAT from `dat.token_file`; peers' DATs checked against the DAPS keys.
    Static,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DatConfig {
    pub(crate) mode: DatMode,
    /// The DAPS issuer (`iss` of DATs); required in `daps` and `static` mode.
    pub(crate) daps_url: String,
    /// DAPS keys: an `http(s)://` URL or a file; empty: `<daps_url>/.well-known/jwks.json`.
    pub(crate) jwks: String,
    /// Required in `daps` mode.
    pub(crate) token_url: String,
    /// Required in `static` mode.
    pub(crate) token_file: PathBuf,
    /// `BASE`, `TRUST` or `TRUST_PLUS` (with or without `idsc:` and `_SECURITY_PROFILE`); empty: none.
    pub(crate) minimum_security_profile: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ReceiptConfig {
    pub(crate) algorithm: String,
    /// PKCS#8 PEM; empty: the development PKI's receipt key (development mode only).
    pub(crate) key: PathBuf,
    pub(crate) retired_keys: Vec<RetiredKey>,
}

impl Default for ReceiptConfig {
    fn default() -> Self {
        ReceiptConfig {
            algorithm: ReceiptAlgorithm::Es256.as_str().to_owned(),
            key: PathBuf::new(),
            retired_keys: Vec::new(),
        }
    }
}

/// A key receipts were signed with before; published so that its receipts still verify.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetiredKey {
    pub(crate) algorithm: String,
    /// The old private key or its public key (`-----BEGIN PUBLIC KEY-----`).
    pub(crate) key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StoreBackend {
    #[default]
    Embedded,
    Mongodb,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StoreConfig {
    pub(crate) backend: StoreBackend,
    /// The embedded store's file; empty: `<data_dir>/clearinghouse.redb`.
    pub(crate) path: PathBuf,
    /// How long the embedded store's busy write batches wait for more before they commit.
    pub(crate) commit_delay_us: u64,
    pub(crate) mongodb: MongoConfig,
    pub(crate) encryption: EncryptionConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::default(),
            path: PathBuf::new(),
            commit_delay_us: DEFAULT_COMMIT_DELAY.as_micros() as u64,
            mongodb: MongoConfig::default(),
            encryption: EncryptionConfig::default(),
        }
    }
}

/// `[store.encryption]`: encryption at rest (see `store::sealing`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct EncryptionConfig {
    pub(crate) enabled: EncryptionSwitch,
    /// `[{ id, file, active }]`: the KEK files; with more than one, exactly one `active = true`.
    pub(crate) keys: Vec<KekSetting>,
}

/// One `store.encryption.keys` item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KekSetting {
    pub(crate) id: String,
    pub(crate) file: PathBuf,
    #[serde(default)]
    pub(crate) active: bool,
}

/// `store.encryption.enabled`: `true`, `false`, or not set (`""`): on in development mode, and
/// outside it an error unless KEK files are configured, so that nobody runs a production store
/// in the clear without having said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum EncryptionSwitch {
    #[default]
    Unset,
    On,
    Off,
}

impl Serialize for EncryptionSwitch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            // A string in the defaults, so that `CH_STORE_ENCRYPTION_ENABLED` takes any text and
            // the deserializer below says what is wrong with it.
            Self::Unset => serializer.serialize_str(""),
            Self::On => serializer.serialize_bool(true),
            Self::Off => serializer.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for EncryptionSwitch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bool(true) => Ok(Self::On),
            Raw::Bool(false) => Ok(Self::Off),
            Raw::Text(text) => match text.trim() {
                "" => Ok(Self::Unset),
                "true" => Ok(Self::On),
                "false" => Ok(Self::Off),
                other => Err(serde::de::Error::custom(format!(
                    "{other:?} is neither true nor false"
                ))),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct MongoConfig {
    pub(crate) uri: String,
    pub(crate) database: String,
    pub(crate) timeout_ms: u64,
    pub(crate) write_concern: String,
    pub(crate) journal: bool,
}

impl Default for MongoConfig {
    fn default() -> Self {
        MongoConfig {
            uri: "mongodb://127.0.0.1:27017/?directConnection=true".into(),
            database: "clearinghouse".into(),
            timeout_ms: 5000,
            write_concern: "majority".into(),
            journal: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct OpsConfig {
    pub(crate) listen: String,
}

impl Default for OpsConfig {
    fn default() -> Self {
        OpsConfig {
            listen: "127.0.0.1:29293".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LogConfig {
    pub(crate) format: LogFormat,
    /// A tracing filter: `info`, `debug`, `clearinghouse=debug,info`, ...
    pub(crate) level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Bounds on every size a peer controls in one request; each rejection names its setting.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Bytes of a request's IDS header (JSON-LD), checked before it is parsed.
    pub max_header_bytes: usize,
    /// Bytes of a create (`ids:RequestMessage`) payload, checked before it is parsed.
    pub max_create_payload: usize,
    /// Owners of a new process, the caller included.
    pub max_owners: usize,
    /// Extra headers (`ch-ids-*` and any other) per request.
    pub max_parameters: usize,
    /// Bytes of one extra header, name plus value.
    pub max_parameter_bytes: usize,
    /// Characters of a pid, at most 255.
    pub max_pid_length: usize,
    /// Entries per query page; larger requested pages are lowered to it.
    pub max_page_size: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let params = ParamLimits::default();
        LimitsConfig {
            max_header_bytes: 64 * 1024,
            max_create_payload: 64 * 1024,
            max_owners: 64,
            max_parameters: params.max_parameters,
            max_parameter_bytes: params.max_parameter_bytes,
            max_pid_length: params.max_pid_length,
            max_page_size: params.max_page_size,
        }
    }
}

impl LimitsConfig {
    pub(crate) fn params(&self) -> ParamLimits {
        ParamLimits {
            max_parameters: self.max_parameters,
            max_parameter_bytes: self.max_parameter_bytes,
            max_pid_length: self.max_pid_length,
            max_page_size: self.max_page_size,
        }
    }

    fn validate(&self, max_frame: usize) -> Result<(), ConfigError> {
        for (setting, value) in [
            ("limits.max_header_bytes", self.max_header_bytes),
            ("limits.max_create_payload", self.max_create_payload),
            ("limits.max_owners", self.max_owners),
            ("limits.max_parameters", self.max_parameters),
            ("limits.max_parameter_bytes", self.max_parameter_bytes),
            ("limits.max_pid_length", self.max_pid_length),
        ] {
            positive(setting, value as u64)?;
        }
        positive("limits.max_page_size", self.max_page_size)?;
        if self.max_pid_length > MAX_PID_LEN {
            return Err(ConfigError::setting(
                "limits.max_pid_length",
                format!("must be at most {MAX_PID_LEN}, the protocol's limit"),
            ));
        }
        for (setting, value) in [
            ("limits.max_header_bytes", self.max_header_bytes),
            ("limits.max_create_payload", self.max_create_payload),
        ] {
            if value >= max_frame {
                return Err(ConfigError::setting(
                    setting,
                    format!("must be smaller than idscp2.max_frame ({max_frame})"),
                ));
            }
        }
        Ok(())
    }
}

/// Per-connector quotas, keyed by the verified connector id. 0 means "no limit".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotasConfig {
    /// Requests per second (token bucket refill rate), over all of the connector's connections.
    pub requests_per_second: f64,
    /// Requests the bucket holds (a burst); 0: one second's worth, at least 1.
    pub burst: u64,
    /// Processes created (explicitly or by a first log) per window.
    pub processes_per_window: u64,
    /// Payload bytes logged per window.
    pub bytes_per_window: u64,
    /// The quota window in seconds, aligned to the unix epoch (86400: the UTC day).
    pub window_s: u64,
    /// Instances sharing one database: each one's bucket gets this share of the rate and burst.
    pub instances: u32,
    /// How often usage counters are added to the store and the totals of all instances read.
    pub sync_interval_ms: u64,
    /// Connectors shown by name on /metrics (those nearest a limit); the rest are "other".
    pub metrics_connectors: usize,
    /// A rejection over a quota is sent when the quota has room again, but at most this late:
    /// a connection waiting for its answer sends nothing, so a connector that ignores its quota
    /// cannot make the clearing house spend its CPU on rejections. 0: reply at once.
    pub max_hold_ms: u64,
    /// Overrides per connector id: `[quotas.connectors."<connector id>"]`.
    pub connectors: BTreeMap<String, QuotaOverride>,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        QuotasConfig {
            requests_per_second: 0.0,
            burst: 0,
            processes_per_window: 0,
            bytes_per_window: 0,
            window_s: 86_400,
            instances: 1,
            sync_interval_ms: 1000,
            metrics_connectors: 10,
            max_hold_ms: 1000,
            connectors: BTreeMap::new(),
        }
    }
}

/// A connector's own quotas; what it leaves out is the global setting.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaOverride {
    /// This connector's [`QuotasConfig::requests_per_second`].
    pub requests_per_second: Option<f64>,
    /// This connector's [`QuotasConfig::burst`].
    pub burst: Option<u64>,
    /// This connector's [`QuotasConfig::processes_per_window`].
    pub processes_per_window: Option<u64>,
    /// This connector's [`QuotasConfig::bytes_per_window`].
    pub bytes_per_window: Option<u64>,
}

impl QuotasConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        rate("quotas.requests_per_second", self.requests_per_second)?;
        positive("quotas.window_s", self.window_s)?;
        positive("quotas.instances", u64::from(self.instances))?;
        positive("quotas.sync_interval_ms", self.sync_interval_ms)?;
        for (connector, quota) in &self.connectors {
            if let Some(value) = quota.requests_per_second {
                rate(
                    &format!("quotas.connectors.{connector:?}.requests_per_second"),
                    value,
                )?;
            }
        }
        Ok(())
    }
}

/// Checks `log.level` as a tracing filter. A bare word is a level or, to tracing, the name of a
/// target to log everything of; a misspelt level (`verbose`) would then silence every other line,
/// the development-mode warning included, so a bare word must be a level here.
fn log_filter(level: &str) -> Result<(), ConfigError> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[', ':']);
        if bare && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(ConfigError::setting(
                "log.level",
                format!(
                    "{directive:?} is neither a level ({}) nor a `target=level` directive",
                    LEVELS.join(", ")
                ),
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| ConfigError::setting("log.level", e))?;
    Ok(())
}

fn rate(setting: &str, value: f64) -> Result<(), ConfigError> {
    if !value.is_finite() || value < 0.0 {
        return Err(ConfigError::setting(
            setting,
            "must be a number >= 0 (0: no limit)",
        ));
    }
    Ok(())
}

impl Config {
    /// Checks what can be checked without touching files or the network.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        socket_addr("server.listen", &self.server.listen)?;
        socket_addr("ops.listen", &self.ops.listen)?;
        positive("server.max_connections", self.server.max_connections as u64)?;
        positive("server.max_payload", self.server.max_payload as u64)?;
        positive(
            "idscp2.handshake_timeout_ms",
            self.idscp2.handshake_timeout_ms,
        )?;
        positive("idscp2.ack_timeout_ms", self.idscp2.ack_timeout_ms)?;
        // A peer resends after its ACK timeout; ours stands in for it.
        if self.idscp2.ack_delay_ms > self.idscp2.ack_timeout_ms / 4 {
            return Err(ConfigError::setting(
                "idscp2.ack_delay_ms",
                format!(
                    "must be at most a quarter of idscp2.ack_timeout_ms ({} ms)",
                    self.idscp2.ack_timeout_ms / 4
                ),
            ));
        }
        self.validate_handshake_limits()?;
        if self.store.commit_delay_us > MAX_COMMIT_DELAY_US {
            return Err(ConfigError::setting(
                "store.commit_delay_us",
                format!(
                    "must be at most {MAX_COMMIT_DELAY_US} (10 ms): every busy write waits for it"
                ),
            ));
        }
        positive("idscp2.ra_interval_s", self.idscp2.ra_interval_s)?;
        positive(
            "server.requests_in_flight",
            self.server.requests_in_flight as u64,
        )?;
        positive("idscp2.max_resends", self.idscp2.max_resends.into())?;
        positive("idscp2.frame_timeout_ms", self.idscp2.frame_timeout_ms)?;
        // A payload travels inside one frame together with its IDS header.
        if self.server.max_payload >= self.idscp2.max_frame {
            return Err(ConfigError::setting(
                "server.max_payload",
                format!(
                    "must be smaller than idscp2.max_frame ({})",
                    self.idscp2.max_frame
                ),
            ));
        }
        self.limits.validate(self.idscp2.max_frame)?;
        self.quotas.validate()?;
        self.http.validate(self.server.connection_buffer_bytes)?;
        self.receipt_algorithm()?;
        for (index, retired) in self.receipt.retired_keys.iter().enumerate() {
            retired.algorithm.parse::<ReceiptAlgorithm>().map_err(|e| {
                ConfigError::setting(format!("receipt.retired_keys[{index}].algorithm"), e)
            })?;
        }
        log_filter(&self.log.level)?;
        match self.dat.mode {
            DatMode::Development => Ok(()),
            DatMode::Daps => {
                required("dat.daps_url", &self.dat.daps_url)?;
                required("dat.token_url", &self.dat.token_url)?;
                self.production_files()
            }
            DatMode::Static => {
                required("dat.daps_url", &self.dat.daps_url)?;
                required_path("dat.token_file", &self.dat.token_file)?;
                self.production_files()
            }
        }?;
        // Last: in production, what the DAT settings lack is the first thing to fix.
        self.validate_encryption()
    }

    /// What can be told without reading the KEK files, which `cli::setup` reads.
    fn validate_encryption(&self) -> Result<(), ConfigError> {
        let encryption = &self.store.encryption;
        let mut ids = std::collections::BTreeSet::new();
        for kek in &encryption.keys {
            if kek.id.trim().is_empty() || kek.file.as_os_str().is_empty() {
                return Err(ConfigError::setting(
                    "store.encryption.keys",
                    "every key needs an id and a file",
                ));
            }
            if !ids.insert(kek.id.as_str()) {
                return Err(ConfigError::setting(
                    "store.encryption.keys",
                    format!("KEK id {:?} appears more than once", kek.id),
                ));
            }
        }
        let active = encryption.keys.iter().filter(|kek| kek.active).count();
        if encryption.keys.len() > 1 && active != 1 {
            return Err(ConfigError::setting(
                "store.encryption.keys",
                format!(
                    "exactly one of the {} keys must be marked active = true ({active} are)",
                    encryption.keys.len()
                ),
            ));
        }
        if encryption.keys.is_empty()
            && encryption.enabled != EncryptionSwitch::Off
            && self.dat.mode != DatMode::Development
        {
            return Err(ConfigError::setting(
                "store.encryption.keys",
                "is required outside dat.mode = \"development\": name KEK files, or set store.encryption.enabled = false to keep new processes in the clear",
            ));
        }
        Ok(())
    }

    /// Where the development KEK lives (generated on first run), beside the development PKI.
    pub(crate) fn dev_kek_file(&self) -> PathBuf {
        self.dev_pki_dir().join("store-kek.hex")
    }

    fn validate_handshake_limits(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        positive("server.max_handshakes", server.max_handshakes as u64)?;
        positive(
            "server.max_handshakes_per_address",
            server.max_handshakes_per_address as u64,
        )?;
        positive(
            "server.client_hello_timeout_ms",
            server.client_hello_timeout_ms,
        )?;
        if server.max_handshakes_per_address > server.max_handshakes {
            return Err(ConfigError::setting(
                "server.max_handshakes_per_address",
                format!(
                    "must not exceed server.max_handshakes ({})",
                    server.max_handshakes
                ),
            ));
        }
        if server.client_hello_timeout_ms > self.idscp2.handshake_timeout_ms {
            return Err(ConfigError::setting(
                "server.client_hello_timeout_ms",
                format!(
                    "must not exceed idscp2.handshake_timeout_ms ({}), which bounds TLS as a whole",
                    self.idscp2.handshake_timeout_ms
                ),
            ));
        }
        Ok(())
    }

    /// The bounds on connections that have not finished their handshake.
    pub(crate) fn handshake_limits(&self) -> HandshakeLimits {
        HandshakeLimits {
            max_pending: self.server.max_handshakes,
            max_pending_per_source: self.server.max_handshakes_per_address,
            client_hello_timeout: std::time::Duration::from_millis(
                self.server.client_hello_timeout_ms,
            ),
        }
    }

    /// Outside development mode nothing falls back to the development PKI.
    fn production_files(&self) -> Result<(), ConfigError> {
        required_path("tls.certificate", &self.tls.certificate)?;
        required_path("tls.private_key", &self.tls.private_key)?;
        required_path("tls.ca_certificates", &self.tls.ca_certificates)?;
        required_path("receipt.key", &self.receipt.key)
    }

    pub(crate) fn receipt_algorithm(&self) -> Result<ReceiptAlgorithm, ConfigError> {
        self.receipt
            .algorithm
            .parse()
            .map_err(|e| ConfigError::setting("receipt.algorithm", e))
    }

    /// Where the development PKI lives (and is generated on first run).
    pub(crate) fn dev_pki_dir(&self) -> PathBuf {
        self.server.data_dir.join("dev-pki")
    }

    /// The embedded store's file.
    pub(crate) fn store_path(&self) -> PathBuf {
        or_default(&self.store.path, || {
            self.server.data_dir.join("clearinghouse.redb")
        })
    }

    /// Whether a TLS or receipt file is left to the development PKI.
    pub(crate) fn uses_dev_pki(&self) -> bool {
        [
            &self.tls.certificate,
            &self.tls.private_key,
            &self.tls.ca_certificates,
            &self.receipt.key,
        ]
        .iter()
        .any(|path| path.as_os_str().is_empty())
    }
}

/// `path`, or `default()` when the setting is empty.
pub(crate) fn or_default(path: &Path, default: impl FnOnce() -> PathBuf) -> PathBuf {
    if path.as_os_str().is_empty() {
        default()
    } else {
        path.to_path_buf()
    }
}

fn socket_addr(setting: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::setting(
            setting,
            format!("{value:?} is not an address of the form host-ip:port"),
        )
    })
}

fn positive(setting: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::setting(setting, "must be greater than 0"));
    }
    Ok(())
}

fn required(setting: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::setting(
            setting,
            "is required in this dat.mode",
        ));
    }
    Ok(())
}

fn required_path(setting: &str, value: &Path) -> Result<(), ConfigError> {
    if value.as_os_str().is_empty() {
        return Err(ConfigError::setting(
            setting,
            "is required outside dat.mode = \"development\"",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod fair_use_tests {
    use super::*;

    fn refused(change: impl FnOnce(&mut Config)) -> String {
        let mut config = Config::default();
        change(&mut config);
        config.validate().unwrap_err().to_string()
    }

    /// A change to the defaults, and the setting its refusal must name.
    type Case = (fn(&mut Config), &'static str);

    #[test]
    fn limits_and_quotas_are_checked_and_named() {
        Config::default().validate().unwrap();
        let cases: [Case; 6] = [
            (|c| c.limits.max_owners = 0, "limits.max_owners"),
            (|c| c.limits.max_pid_length = 256, "limits.max_pid_length"),
            (
                |c| c.limits.max_header_bytes = c.idscp2.max_frame,
                "limits.max_header_bytes",
            ),
            (
                |c| c.quotas.requests_per_second = f64::NAN,
                "quotas.requests_per_second",
            ),
            (|c| c.quotas.window_s = 0, "quotas.window_s"),
            (
                |c| {
                    c.quotas.connectors.insert(
                        "x".into(),
                        QuotaOverride {
                            requests_per_second: Some(-1.0),
                            ..QuotaOverride::default()
                        },
                    );
                },
                "quotas.connectors.\"x\".requests_per_second",
            ),
        ];
        for (change, setting) in cases {
            let message = refused(change);
            assert!(message.starts_with(setting), "{message}");
        }
    }

    #[test]
    fn an_ack_waits_at_most_a_quarter_of_the_ack_timeout() {
        let message = refused(|c| c.idscp2.ack_delay_ms = 51);
        assert!(message.starts_with("idscp2.ack_delay_ms"), "{message}");
        assert!(message.contains("50 ms"), "{message}");
        let mut config = Config::default();
        config.idscp2.ack_delay_ms = 50;
        config.validate().unwrap();
        config.idscp2.ack_delay_ms = 0;
        config.validate().unwrap();
    }

    #[test]
    fn the_commit_delay_is_at_most_ten_milliseconds() {
        let message = refused(|c| c.store.commit_delay_us = 10_001);
        assert!(message.starts_with("store.commit_delay_us"), "{message}");
        let mut config = Config::default();
        config.store.commit_delay_us = 10_000;
        config.validate().unwrap();
        config.store.commit_delay_us = 0;
        config.validate().unwrap();
    }
}

#[cfg(test)]
mod encryption_tests {
    use super::*;

    #[test]
    fn outside_development_mode_encryption_is_a_choice_the_operator_makes() {
        let mut config = Config::default();
        config.dat.mode = DatMode::Daps;
        config.dat.daps_url = "https://daps.test".into();
        config.dat.token_url = "https://daps.test/token".into();
        config.tls.certificate = "server.crt".into();
        config.tls.private_key = "server.key".into();
        config.tls.ca_certificates = "ca.crt".into();
        config.receipt.key = "receipt.key".into();
        let refusal = config.validate().unwrap_err().to_string();
        assert!(refusal.starts_with("store.encryption.keys"), "{refusal}");
        assert!(
            refusal.contains("store.encryption.enabled = false"),
            "{refusal}"
        );

        config.store.encryption.enabled = EncryptionSwitch::Off;
        config.validate().unwrap();
        config.store.encryption.enabled = EncryptionSwitch::Unset;
        config.store.encryption.keys = vec![KekSetting {
            id: "k".into(),
            file: "k.key".into(),
            active: false,
        }];
        config.validate().unwrap();
    }
}

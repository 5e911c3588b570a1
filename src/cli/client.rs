//! `clearinghouse client create | log | query | get | info | owners`: the requests a connector sends, over a
//! real IDSCP2 connection with the given certificates and DAT settings. Handy for trying a
//! deployment and for scripts; a rejection exits with code 4 and prints the clearing house's
//! error payload.

use std::io::{IsTerminal, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tokio::time::timeout;
use tracing::warn;

use super::view_table::{print_view, ViewArg};
use super::Failure;
use super::EXIT_CODES;
use crate::client::{ClearingHouseClient, MultipartConfig, MultipartTransport, QueryOptions};
use crate::ids::params::{ChParams, DateBound, ParamLimits};
use crate::ids::{check_owner_id, Reply};
use crate::idscp2::client::{connect, ClientConfig, ClientError};
use crate::idscp2::dat::{
    daps_http_client, DapsIssuer, DapsIssuerConfig, DapsVerifier, DapsVerifierConfig, DatIssuer,
    DatVerifier, DevelopmentIssuer, DevelopmentVerifier, JwksSource, StaticIssuer,
};
use crate::idscp2::endpoint::{Endpoint, EndpointError, Settings};
use crate::idscp2::proto::app::HeaderEntry;
use crate::idscp2::ra::{RaRegistry, RaRole};
use crate::idscp2::tls::{self, PeerCertificate, TlsError, TlsIdentity};

/// The name `--server-name` expects in the server certificate unless told otherwise.
pub(super) const DEFAULT_SERVER_NAME: &str = "localhost";

/// Page size `query --all` asks for when none is given: the server's maximum.
const ALL_PAGE_SIZE: u64 = 1000;

/// The server's page size when none is asked for (`ch-ids-size`'s default).
const DEFAULT_PAGE_SIZE: u64 = 100;

#[derive(Debug, clap::Args)]
pub(crate) struct ClientArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    request: Request,
}

/// How to reach the clearing house and who we are: flags every request takes.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Connection")]
struct ConnectArgs {
    /// The clearing house's IDSCP2 address
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:29292",
        value_name = "HOST:PORT"
    )]
    server: String,
    /// The name the server certificate must carry (subjectAltName)
    #[arg(long, global = true, default_value = DEFAULT_SERVER_NAME, value_name = "NAME")]
    server_name: String,
    /// Our certificate (PEM chain, leaf first) [required]
    #[arg(long, global = true, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Our private key (PEM) [required]
    #[arg(long, global = true, value_name = "FILE")]
    key: Option<PathBuf>,
    /// CA certificates to verify the server with (PEM) [required]
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Where our DAT comes from; `daps` and `file` also verify the server's DAT with the DAPS keys
    #[arg(long, global = true, value_enum, default_value = "development")]
    dat_mode: DatModeArg,
    /// The DAPS issuer (its keys are read from <URL>/.well-known/jwks.json)
    #[arg(long, global = true, value_name = "URL")]
    daps_url: Option<String>,
    /// The DAPS token endpoint (dat-mode daps)
    #[arg(long, global = true, value_name = "URL")]
    token_url: Option<String>,
    /// A file holding our DAT (dat-mode file)
    #[arg(long, global = true, value_name = "FILE")]
    dat_file: Option<PathBuf>,
    /// Our connector IRI in request headers [default: urn:connector:<SKI:keyid:AKI>]
    #[arg(long, global = true, value_name = "IRI")]
    connector_id: Option<String>,
    /// RA suites we can prove with, in order of preference (a NullRa-only peer: NullRa)
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_values_t = Settings::default().supported_ra,
        value_name = "SUITE,..."
    )]
    ra_supported: Vec<String>,
    /// RA suites we accept from the server, in order of preference
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_values_t = Settings::default().expected_ra,
        value_name = "SUITE,..."
    )]
    ra_expected: Vec<String>,
    /// Seconds to wait for a reply
    #[arg(long, global = true, default_value_t = 30, value_name = "SECONDS")]
    timeout: u64,
    /// How to reach the clearing house: IDSCP2, or IDS-Multipart over HTTPS (then --server is
    /// the address of its HTTPS door, http.listen)
    #[arg(long, global = true, value_enum, default_value = "idscp2")]
    transport: TransportArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TransportArg {
    Idscp2,
    Multipart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DatModeArg {
    Development,
    Daps,
    File,
}

#[derive(Debug, clap::Subcommand)]
enum Request {
    /// Create a process (ids:RequestMessage); prints its pid.
    #[command(after_help = EXIT_CODES)]
    Create {
        /// The process id: 1 to 255 characters of A-Z a-z 0-9 . _ : ~ -
        #[arg(long, value_parser = pid)]
        pid: String,
        /// A further owner's client id (repeatable); we are always an owner
        #[arg(long = "owner", value_name = "CLIENT_ID", value_parser = owner)]
        owners: Vec<String>,
    },
    /// Log a message (ids:LogMessage); prints the receipt.
    #[command(after_help = EXIT_CODES)]
    Log {
        /// The process id: 1 to 255 characters of A-Z a-z 0-9 . _ : ~ -
        #[arg(long, value_parser = pid)]
        pid: String,
        /// The payload; without --data or --file it is read from stdin
        #[arg(long, conflicts_with = "file", value_name = "TEXT")]
        data: Option<String>,
        /// A file holding the payload
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// The payload's media type
        #[arg(long, value_name = "MEDIA_TYPE")]
        content_type: Option<String>,
        /// Print only the receipt JWT instead of JSON with its decoded claims
        #[arg(long)]
        raw: bool,
        /// Whether we sent the logged message or received it (ch-ids-direction), for the
        /// clearing house's transfer view
        #[arg(long, value_enum, default_value = "sent")]
        direction: DirectionArg,
    },
    /// Query a page of a process (ids:QueryMessage), or every page with --all.
    #[command(after_help = EXIT_CODES)]
    Query {
        /// The process id: 1 to 255 characters of A-Z a-z 0-9 . _ : ~ -
        #[arg(long, value_parser = pid)]
        pid: String,
        /// The page to fetch, from 1 [default: 1]
        #[arg(long, value_parser = positive, value_name = "N")]
        page: Option<u64>,
        /// Entries per page, from 1 (the server caps it at limits.max_page_size) [default: the server's, 100]
        #[arg(long, value_parser = positive, value_name = "N")]
        size: Option<u64>,
        /// Entry order by sequence number [default: desc; with --all: asc]
        #[arg(long, value_enum)]
        sort: Option<SortArg>,
        /// First day or instant to include: YYYY-MM-DD or RFC 3339
        #[arg(long, value_parser = date, value_name = "DATE")]
        from: Option<String>,
        /// Last day or instant to include: YYYY-MM-DD or RFC 3339
        #[arg(long, value_parser = date, value_name = "DATE")]
        to: Option<String>,
        /// Follow every page (progress on stderr)
        #[arg(long, conflicts_with = "page")]
        all: bool,
        /// Instead of entries, a page of what the clearing house understood of them: the
        /// Dataspace Protocol transfers (state, both parties' records, findings) or the contracts
        #[arg(long, value_enum, conflicts_with_all = ["sort", "from", "to", "all"])]
        view: Option<ViewArg>,
        /// How to print the entries: a table of shortened fields, or the server's JSON
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Fetch one entry by its document id.
    #[command(after_help = EXIT_CODES)]
    Get {
        /// The process id: 1 to 255 characters of A-Z a-z 0-9 . _ : ~ -
        #[arg(long, value_parser = pid)]
        pid: String,
        /// The entry's document id (a receipt's document_id)
        #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new(), value_name = "DOCUMENT_ID")]
        id: String,
    },
    /// Show a process: owners, creation time, number of entries, head (owners only).
    #[command(after_help = EXIT_CODES)]
    Info {
        /// The process id: 1 to 255 characters of A-Z a-z 0-9 . _ : ~ -
        #[arg(long, value_parser = pid)]
        pid: String,
        /// Print only the owners, one per line
        #[arg(long)]
        owners_only: bool,
    },
    /// Replace the owners of a process (owners only); recorded in its chain, prints the receipt.
    #[command(after_help = EXIT_CODES)]
    Owners {
        /// The process id: 1 to 255 characters of A-Z a-z 0-9 . _ : ~ -
        #[arg(long, value_parser = pid)]
        pid: String,
        /// An owner's client id (repeatable): the complete new set, which may leave us out
        /// (`clearinghouse whoami --cert FILE` prints a certificate's id)
        #[arg(long = "set", value_name = "CLIENT_ID", value_parser = owner, required = true)]
        owners: Vec<String>,
        /// Print only the receipt JWT instead of JSON with its decoded claims
        #[arg(long)]
        raw: bool,
    },
    /// Erase a process's content for good (admins only: admin.identities); prints who and when.
    #[command(after_help = EXIT_CODES)]
    Erase {
        /// The process id: 1 to 255 characters of A-Z a-z 0-9 . _ : ~ -
        #[arg(long, value_parser = pid)]
        pid: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DirectionArg {
    Sent,
    Received,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SortArg {
    Asc,
    Desc,
}

impl SortArg {
    fn as_str(self) -> &'static str {
        match self {
            SortArg::Asc => "asc",
            SortArg::Desc => "desc",
        }
    }
}

/// `--pid`, checked as the clearing house checks `ch-ids-pid` (at the protocol's length limit;
/// a server with a lower `limits.max_pid_length` may still refuse it).
fn pid(text: &str) -> Result<String, String> {
    let headers = [HeaderEntry {
        name: "ch-ids-pid".into(),
        value: text.into(),
    }];
    ChParams::parse(&headers, &ParamLimits::default())
        .and_then(|params| params.pid().map(|pid| pid.as_str().to_owned()))
        .map_err(|rejection| {
            rejection
                .message
                .replace("ch-ids-pid", "the pid")
                .replace(" (limits.max_pid_length)", "")
        })
}

/// `--page` and `--size`.
fn positive(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(value) if value >= 1 => Ok(value),
        _ => Err("expected a whole number of 1 or more".into()),
    }
}

/// `--from` and `--to`: a day or an instant, as the server reads them.
fn date(text: &str) -> Result<String, String> {
    DateBound::parse(text)
        .map(|_| text.to_owned())
        .ok_or_else(|| "expected a date (YYYY-MM-DD) or an RFC 3339 instant".into())
}

/// `--owner`: checked as the clearing house checks the owners of a process.
fn owner(text: &str) -> Result<String, String> {
    check_owner_id(text)
        .map(|()| text.to_owned())
        .map_err(|error| format!("not a connector id: {error}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum OutputFormat {
    Table,
    Json,
}

pub(crate) async fn run(args: ClientArgs) -> anyhow::Result<()> {
    super::logging::init_quiet();
    if let Request::Query {
        from: Some(from),
        to: Some(to),
        ..
    } = &args.request
    {
        let first = DateBound::parse(from).map(|bound| bound.first_ms());
        let last = DateBound::parse(to).map(|bound| bound.last_ms());
        if first > last {
            return Err(usage("--from", "is after --to: the range is empty"));
        }
    }
    let mut client = args.connect.connect().await?;
    let result = perform(&mut client, args.request).await;
    // Every outcome (a rejection, a timeout, a reply we cannot read) ends with an IdscpClose and
    // TLS close_notify, so that the server sees a USER_SHUTDOWN rather than a vanished peer.
    if timeout(CLOSE_LIMIT, client.close()).await.is_err() {
        warn!("the server did not take our close in time; exiting anyway");
    }
    result
}

/// How long closing may take: the close waits for data the server has not ACKed yet.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

async fn perform(client: &mut ClearingHouseClient, request: Request) -> anyhow::Result<()> {
    match request {
        Request::Create { pid, owners } => {
            let reply = accepted(client.create(&pid, &owners).await?)?;
            println!(
                "{}",
                reply
                    .json()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or(pid)
            );
            Ok(())
        }
        Request::Log {
            pid,
            data,
            file,
            content_type,
            raw,
            direction,
        } => {
            let payload = payload(data, file)?;
            let received = direction == DirectionArg::Received;
            let reply = accepted(
                client
                    .log_message(&pid, payload, content_type.as_deref(), received)
                    .await?,
            )?;
            print_receipt(&reply, raw)
        }
        Request::Query {
            pid,
            page,
            size,
            view: Some(view),
            format,
            ..
        } => {
            let reply = accepted(client.view(&pid, view.kind(), page, size).await?)?;
            let page = reply.json().context("the result is not JSON")?;
            print_view(&page, view.kind(), format == OutputFormat::Json)
        }
        Request::Query {
            pid,
            page,
            size,
            sort,
            from,
            to,
            all,
            view: None,
            format,
        } => {
            let options = QueryOptions {
                page,
                size,
                sort: sort.map(|sort| sort.as_str().to_owned()),
                date_from: from,
                date_to: to,
            };
            if all {
                query_all(client, &pid, options, format).await
            } else if options.page.is_none() && options.size.is_none() {
                // With default flags, a page of large entries shrinks until it fits.
                let (page, _) = fitting_page(client, &pid, &mut options.clone(), 0).await?;
                print_documents(&page, format)
            } else {
                let reply = accepted(client.query(&pid, &options).await?)?;
                let page = reply.json().context("the result is not JSON")?;
                print_documents(&page, format)
            }
        }
        Request::Get { pid, id } => {
            let reply = accepted(client.get(&pid, &id).await?)?;
            let document = reply.json().context("the result is not JSON")?;
            println!("{}", serde_json::to_string_pretty(&document)?);
            Ok(())
        }
        Request::Info { pid, owners_only } => {
            let reply = accepted(client.info(&pid).await?)?;
            let info = reply.json().context("the result is not JSON")?;
            match info["owners"].as_array() {
                Some(owners) if owners_only => {
                    owners
                        .iter()
                        .filter_map(Value::as_str)
                        .for_each(|owner| println!("{owner}"));
                }
                _ => println!("{}", serde_json::to_string_pretty(&info)?),
            }
            Ok(())
        }
        Request::Owners { pid, owners, raw } => {
            let reply = accepted(client.set_owners(&pid, &owners).await?)?;
            print_receipt(&reply, raw)
        }
        Request::Erase { pid } => {
            let reply = accepted(client.erase(&pid).await?)?;
            let erased = reply.json().context("the result is not JSON")?;
            println!("{}", serde_json::to_string_pretty(&erased)?);
            Ok(())
        }
    }
}

impl ConnectArgs {
    async fn connect(&self) -> anyhow::Result<ClearingHouseClient> {
        let missing: Vec<&str> = [
            ("--cert", self.cert.is_none()),
            ("--key", self.key.is_none()),
            ("--ca", self.ca.is_none()),
        ]
        .into_iter()
        .filter_map(|(flag, missing)| missing.then_some(flag))
        .collect();
        let (Some(cert), Some(key), Some(ca)) = (&self.cert, &self.key, &self.ca) else {
            return Err(usage(
                &missing.join(", "),
                "required: the certificate and key we connect with, and the CA that verifies the server",
            ));
        };
        let identity = TlsIdentity::from_pem_files(cert, key).map_err(|e| {
            let flag = match &e {
                TlsError::Read { path, .. } | TlsError::InFile { path, .. } if path == key => {
                    "--key"
                }
                TlsError::KeyMismatch | TlsError::KeyCheck(_) => "--key",
                _ => "--cert",
            };
            usage(flag, e)
        })?;
        let cas = tls::load_ca_file(ca).map_err(|e| usage("--ca", e))?;
        let tls = tls::client_config(&identity, &cas).map_err(|e| usage("--ca", e))?;
        let certificate_id = PeerCertificate::new(identity.leaf().clone())
            .connector_id()
            .map_err(|e| usage("--cert", e))?;
        let (issuer, verifier) = self.dat_drivers(key, &certificate_id)?;
        let connector_id = self
            .connector_id
            .clone()
            .unwrap_or_else(|| format!("urn:connector:{certificate_id}"));
        let own_dat = (self.dat_mode != DatModeArg::Development).then_some(issuer.clone());
        if self.transport == TransportArg::Multipart {
            let transport = self.https_transport(cert, key, ca).await?;
            return Ok(ClearingHouseClient::over_https(
                transport,
                connector_id,
                own_dat,
                Duration::from_secs(self.timeout),
            ));
        }
        let settings = Settings {
            supported_ra: self.ra_supported.clone(),
            expected_ra: self.ra_expected.clone(),
            ..Settings::default()
        };
        let endpoint = Endpoint::new(settings, issuer.clone(), verifier, RaRegistry::builtin())
            .map_err(|e| match e {
                EndpointError::UnknownRaSuite {
                    role: RaRole::Verifier,
                    ..
                } => usage("--ra-expected", e),
                EndpointError::UnknownRaSuite { .. } | EndpointError::NoRaSuite => {
                    usage("--ra-supported", e)
                }
                other => anyhow::Error::new(other).context("IDSCP2 settings"),
            })?;
        let connection = connect(
            &self.server,
            &self.server_name,
            &ClientConfig { tls, endpoint },
        )
        .await
        .map_err(|e| self.connect_failure(e, ca))?;
        Ok(ClearingHouseClient::new(
            connection,
            connector_id,
            own_dat,
            Duration::from_secs(self.timeout),
        ))
    }

    /// An HTTPS client of the IDS-Multipart door at `--server`, with our certificate.
    async fn https_transport(
        &self,
        cert: &Path,
        key: &Path,
        ca: &Path,
    ) -> anyhow::Result<MultipartTransport> {
        let read = |flag: &str, path: &Path| {
            std::fs::read(path).map_err(|e| usage(flag, format!("{}: {e}", path.display())))
        };
        let mut identity = read("--cert", cert)?;
        identity.push(b'\n');
        identity.extend(read("--key", key)?);
        let ca_pem = read("--ca", ca)?;
        let addr = tokio::net::lookup_host(&self.server)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| usage("--server", format!("{:?} is not a HOST:PORT", self.server)))?;
        MultipartTransport::new(&MultipartConfig {
            server_name: &self.server_name,
            addr,
            ca_pem: &ca_pem,
            identity_pem: Some(&identity),
        })
        .map_err(|e| usage("--cert", e))
    }

    /// Why we could not connect, in the operator's terms: a certificate the TLS library refused
    /// is explained with the flag to look at instead of its error variant's name.
    fn connect_failure(&self, error: ClientError, ca: &Path) -> anyhow::Error {
        let reason = match &error {
            ClientError::Tls { source, .. } => source
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .and_then(|tls| self.explain_tls(tls, ca)),
            _ => None,
        };
        let server = &self.server;
        match reason {
            Some(reason) => anyhow::anyhow!("cannot talk IDSCP2 to {server}: {reason}"),
            None => anyhow::Error::new(error).context(format!("cannot talk IDSCP2 to {server}")),
        }
    }

    fn explain_tls(&self, error: &rustls::Error, ca: &Path) -> Option<String> {
        use rustls::{AlertDescription, CertificateError};
        let ca = ca.display();
        Some(match error {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                format!("the server's certificate is not signed by a CA in --ca {ca}")
            }
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
            | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                ..
            }) => format!(
                "the server's certificate is not valid for --server-name {} (give a name it carries)",
                self.server_name
            ),
            rustls::Error::InvalidCertificate(CertificateError::Expired)
            | rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
                "the server's certificate has expired".into()
            }
            rustls::Error::AlertReceived(
                AlertDescription::UnknownCA
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown,
            ) => "the server does not accept our certificate (--cert): it is not signed by a CA \
                  the server trusts"
                .into(),
            rustls::Error::AlertReceived(AlertDescription::CertificateExpired) => {
                "the server does not accept our certificate (--cert): it has expired".into()
            }
            _ => return None,
        })
    }

    fn dat_drivers(
        &self,
        key: &PathBuf,
        certificate_id: &str,
    ) -> anyhow::Result<(Arc<dyn DatIssuer>, Arc<dyn DatVerifier>)> {
        if self.dat_mode == DatModeArg::Development {
            return Ok((
                Arc::new(DevelopmentIssuer::new()),
                Arc::new(DevelopmentVerifier::new()),
            ));
        }
        let daps_url = self
            .daps_url
            .as_deref()
            .ok_or_else(|| usage("--daps-url", "required with --dat-mode daps or file"))?;
        let http = daps_http_client()?;
        let jwks = JwksSource::Url(format!(
            "{}/.well-known/jwks.json",
            daps_url.trim_end_matches('/')
        ));
        let verifier = DapsVerifier::new(DapsVerifierConfig::new(daps_url, jwks, http.clone()))?;
        let issuer: Arc<dyn DatIssuer> = match (&self.dat_mode, &self.dat_file, &self.token_url) {
            (DatModeArg::File, Some(file), _) => Arc::new(StaticIssuer::new(file)?),
            (DatModeArg::File, None, _) => {
                return Err(usage("--dat-file", "required with --dat-mode file"))
            }
            (_, _, Some(token_url)) => {
                let key_pem = std::fs::read(key).with_context(|| format!("{}", key.display()))?;
                Arc::new(DapsIssuer::new(DapsIssuerConfig::new(
                    token_url.as_str(),
                    certificate_id,
                    key_pem,
                    http,
                ))?)
            }
            (_, _, None) => return Err(usage("--token-url", "required with --dat-mode daps")),
        };
        Ok((issuer, Arc::new(verifier)))
    }
}

/// A usage error: exit code 2, like clap's own.
fn usage(flag: &str, message: impl std::fmt::Display) -> anyhow::Error {
    crate::config::ConfigError::setting(flag, message).into()
}

/// Turns a RejectionMessage into [`Failure::Rejected`], printing its payload on stderr.
fn accepted(reply: Reply) -> anyhow::Result<Reply> {
    if reply.is_rejection() {
        let detail = reply
            .json()
            .map(|payload| payload.to_string())
            .unwrap_or_else(|| String::from_utf8_lossy(&reply.payload).into_owned());
        let reason = reply.rejection_reason.clone().unwrap_or_default();
        return Err(Failure::Rejected(format!("{reason} {detail}")).into());
    }
    Ok(reply)
}

fn payload(data: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Bytes> {
    Ok(match (data, file) {
        (Some(data), _) => Bytes::from(data),
        (None, Some(file)) => Bytes::from(
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?,
        ),
        (None, None) => {
            if std::io::stdin().is_terminal() {
                eprintln!("reading the payload from stdin (end with Ctrl-D)");
            }
            let mut buffer = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buffer)
                .context("cannot read the payload from stdin")?;
            Bytes::from(buffer)
        }
    })
}

fn print_receipt(reply: &Reply, raw: bool) -> anyhow::Result<()> {
    let receipt = reply
        .json()
        .and_then(|payload| payload["data"].as_str().map(str::to_owned))
        .context("the reply carries no receipt")?;
    if raw {
        println!("{receipt}");
        return Ok(());
    }
    // Decoded for reading only; `clearinghouse verify receipt` checks the signature.
    let claims = receipt
        .split('.')
        .nth(1)
        .and_then(|part| URL_SAFE_NO_PAD.decode(part).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .context("the receipt is not a JWT")?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({"receipt": receipt, "claims": claims}))?
    );
    Ok(())
}

async fn query_all(
    client: &mut ClearingHouseClient,
    pid: &str,
    mut options: QueryOptions,
    format: OutputFormat,
) -> anyhow::Result<()> {
    options.size = options.size.or(Some(ALL_PAGE_SIZE));
    // Ascending, so that entries logged meanwhile land after what was read, not shift it.
    options.sort = options.sort.or(Some("asc".into()));
    let progress = ProgressBar::new(0);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} entries ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut documents = Vec::new();
    let mut total = 0;
    loop {
        let read = documents.len() as u64;
        let (body, size) = fitting_page(client, pid, &mut options, read).await?;
        total = body["total"].as_u64().unwrap_or(total);
        progress.set_length(total);
        let batch = body["documents"].as_array().cloned().unwrap_or_default();
        let batch_len = batch.len() as u64;
        progress.inc(batch_len);
        documents.extend(batch);
        if batch_len < size || read + batch_len >= total {
            break;
        }
    }
    progress.finish_and_clear();
    print_documents(
        &json!({"pid": pid, "total": total, "documents": documents}),
        format,
    )
}

/// The page after the first `read` entries, with the page size of `options` or, while the
/// clearing house answers TOO_MANY_RESULTS (the page would not fit a reply), a smaller one;
/// the page's JSON and the size it has, which `options` keeps for the next page. An entry
/// that does not fit on its own is an error naming it (the server's message does), not a loop.
async fn fitting_page(
    client: &mut ClearingHouseClient,
    pid: &str,
    options: &mut QueryOptions,
    read: u64,
) -> anyhow::Result<(Value, u64)> {
    let mut size = options.size.unwrap_or(DEFAULT_PAGE_SIZE);
    loop {
        options.size = Some(size);
        options.page = Some(read / size + 1);
        let reply = client.query(pid, options).await?;
        if reply.rejection_reason.as_deref() != Some("TOO_MANY_RESULTS") || size == 1 {
            let body = accepted(reply)?.json().context("the result is not JSON")?;
            // The server may have capped the size (limits.max_page_size): go on with its size.
            let size = body["size"].as_u64().filter(|&s| s >= 1).unwrap_or(size);
            options.size = Some(size);
            return Ok((body, size));
        }
        size = smaller_page_size(size, read);
    }
}

/// Half of `size` or less, such that `read` entries are a whole number of pages of it (so that
/// the next page starts right after them): 1 at the least.
fn smaller_page_size(size: u64, read: u64) -> u64 {
    (1..=(size / 2).max(1))
        .rev()
        .find(|candidate| read.is_multiple_of(*candidate))
        .unwrap_or(1)
}

/// Widths of the table's columns, so that a table fits 120 columns: ids are shortened in the
/// middle (their ends tell them apart), text at its end; `--format json` has every field whole.
const COLUMNS: [(&str, usize, Shorten); 6] = [
    ("sequence", 8, Shorten::End),
    ("document_id", 13, Shorten::Middle),
    ("timestamp", 20, Shorten::Seconds),
    ("client_id", 21, Shorten::Middle),
    ("payload_type", 16, Shorten::End),
    ("payload", 22, Shorten::End),
];

#[derive(Debug, Clone, Copy)]
pub(super) enum Shorten {
    End,
    Middle,
    /// An RFC 3339 timestamp to the second.
    Seconds,
}

pub(super) fn shorten(text: &str, width: usize, how: Shorten) -> String {
    let chars: Vec<char> = text.chars().collect();
    if let Shorten::Seconds = how {
        // 2026-12-03T12:16:08.219Z -> 2026-12-03T12:16:08Z
        if chars.len() > 20 && text.ends_with('Z') {
            return chars[..19].iter().collect::<String>() + "Z";
        }
    }
    if chars.len() <= width {
        return text.to_owned();
    }
    match how {
        Shorten::Middle => {
            let head = (width - 1) / 2;
            let tail = width - 1 - head;
            chars[..head].iter().collect::<String>()
                + "…"
                + &chars[chars.len() - tail..].iter().collect::<String>()
        }
        Shorten::End | Shorten::Seconds => chars[..width - 1].iter().collect::<String>() + "…",
    }
}

fn table(documents: &[Value]) -> Table {
    let mut table = Table::new();
    table.set_header(COLUMNS.map(|(name, _, _)| name));
    for document in documents {
        let text = |name: &str| match &document[name] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        table.add_row(COLUMNS.map(|(name, width, how)| shorten(&text(name), width, how)));
    }
    table
}

fn print_documents(page: &Value, format: OutputFormat) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(page)?);
        return Ok(());
    }
    let Some(documents) = page["documents"].as_array() else {
        bail!("the result has no documents");
    };
    println!("{}", table(documents));
    let count = documents.len();
    let entries = |n: u64| if n == 1 { "entry" } else { "entries" };
    match (
        page["total"].as_u64(),
        page["page"].as_u64(),
        page["pages"].as_u64(),
    ) {
        (Some(total), Some(number), Some(pages)) => println!(
            "page {number} of {pages}: {count} of {total} {}",
            entries(total)
        ),
        (Some(total), _, _) => println!("{count} of {total} {}", entries(total)),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_smaller_page_size_keeps_the_entries_read_a_whole_number_of_pages() {
        assert_eq!(smaller_page_size(1000, 0), 500);
        assert_eq!(smaller_page_size(500, 0), 250);
        assert_eq!(smaller_page_size(250, 500), 125);
        assert_eq!(smaller_page_size(125, 500), 50);
        assert_eq!(smaller_page_size(3, 7), 1);
        assert_eq!(smaller_page_size(1, 0), 1);
    }

    #[test]
    fn a_table_of_long_fields_fits_120_columns() {
        let long = "E9:DF:AD:90:AC:96:7B:A8:BF:98:B1:10:9B:95:80:2F:7B:07:1C:AC:keyid:70:01:0D";
        let document = json!({
            "sequence": 12345678,
            "document_id": "9fd8f9a8-1281-40e2-9509-0cee30bd26b0",
            "timestamp": "2026-12-03T12:16:08.219Z",
            "client_id": long,
            "payload_type": "application/vnd.example+json; charset=utf-8",
            "payload": "x".repeat(500),
        });
        let table = table(&[document]);
        for line in table.to_string().lines() {
            assert!(
                line.chars().count() <= 120,
                "{} wide: {line}",
                line.chars().count()
            );
        }
        assert_eq!(shorten(long, 21, Shorten::Middle), "E9:DF:AD:9…d:70:01:0D");
        assert_eq!(
            shorten("2026-12-03T12:16:08.219Z", 20, Shorten::Seconds),
            "2026-12-03T12:16:08Z"
        );
    }
}

//! `clearinghouse client create | log | query | get`: the requests a connector sends, over a
//! real IDSCP2 connection with the given certificates and DAT settings. Handy for trying a
//! deployment and for scripts; a rejection exits with code 4 and prints the clearing house's
//! error payload.

use std::io::{IsTerminal, Read as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::Failure;
use crate::client::{ClearingHouseClient, QueryOptions};
use crate::ids::Reply;
use crate::idscp2::client::{connect, ClientConfig};
use crate::idscp2::dat::{
    daps_http_client, DapsIssuer, DapsIssuerConfig, DapsVerifier, DapsVerifierConfig, DatIssuer,
    DatVerifier, DevelopmentIssuer, DevelopmentVerifier, JwksSource, StaticIssuer,
};
use crate::idscp2::endpoint::{Endpoint, Settings};
use crate::idscp2::ra::RaRegistry;
use crate::idscp2::tls::{self, PeerCertificate, TlsIdentity};

/// Page size `query --all` asks for when none is given: the server's maximum.
const ALL_PAGE_SIZE: u64 = 1000;

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    request: Request,
}

#[derive(Debug, clap::Args)]
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
    #[arg(long, global = true, default_value = "localhost")]
    server_name: String,
    /// Our certificate (PEM chain, leaf first)
    #[arg(long, global = true, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Our private key (PEM)
    #[arg(long, global = true, value_name = "FILE")]
    key: Option<PathBuf>,
    /// CA certificates to verify the server with (PEM)
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
    #[arg(long, global = true)]
    connector_id: Option<String>,
    /// Seconds to wait for a reply
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
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
    Create {
        #[arg(long)]
        pid: String,
        /// A further owner's client id (repeatable); we are always an owner
        #[arg(long = "owner", value_name = "CLIENT_ID")]
        owners: Vec<String>,
    },
    /// Log a message (ids:LogMessage); prints the receipt.
    Log {
        #[arg(long)]
        pid: String,
        /// The payload; without --data or --file it is read from stdin
        #[arg(long, conflicts_with = "file")]
        data: Option<String>,
        /// A file holding the payload
        #[arg(long)]
        file: Option<PathBuf>,
        /// The payload's media type
        #[arg(long)]
        content_type: Option<String>,
        /// Print only the receipt JWT instead of JSON with its decoded claims
        #[arg(long)]
        raw: bool,
    },
    /// Query a page of a process (ids:QueryMessage), or every page with --all.
    Query {
        #[arg(long)]
        pid: String,
        #[arg(long)]
        page: Option<u64>,
        #[arg(long)]
        size: Option<u64>,
        /// asc or desc (the server's default is desc; --all defaults to asc)
        #[arg(long)]
        sort: Option<String>,
        /// YYYY-MM-DD or an RFC 3339 instant, inclusive
        #[arg(long)]
        from: Option<String>,
        /// YYYY-MM-DD or an RFC 3339 instant, inclusive
        #[arg(long)]
        to: Option<String>,
        /// Follow every page (progress on stderr)
        #[arg(long, conflicts_with = "page")]
        all: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Fetch one entry by its document id.
    Get {
        #[arg(long)]
        pid: String,
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    super::logging::init_quiet();
    let mut client = args.connect.connect().await?;
    let result = match args.request {
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
        } => {
            let payload = payload(data, file)?;
            let reply = accepted(client.log(&pid, payload, content_type.as_deref()).await?)?;
            print_receipt(&reply, raw)
        }
        Request::Query {
            pid,
            page,
            size,
            sort,
            from,
            to,
            all,
            format,
        } => {
            let options = QueryOptions {
                page,
                size,
                sort,
                date_from: from,
                date_to: to,
            };
            if all {
                query_all(&mut client, &pid, options, format).await
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
    };
    client.close().await;
    result
}

impl ConnectArgs {
    async fn connect(&self) -> anyhow::Result<ClearingHouseClient> {
        let (Some(cert), Some(key), Some(ca)) = (&self.cert, &self.key, &self.ca) else {
            return Err(usage("--cert, --key and --ca are required"));
        };
        let identity = TlsIdentity::from_pem_files(cert, key).map_err(|e| usage(e.to_string()))?;
        let cas = tls::load_ca_file(ca).map_err(|e| usage(e.to_string()))?;
        let tls = tls::client_config(&identity, &cas).map_err(|e| usage(e.to_string()))?;
        let certificate_id = PeerCertificate::new(identity.leaf().clone())
            .connector_id()
            .map_err(|e| usage(format!("--cert: {e}")))?;
        let (issuer, verifier) = self.dat_drivers(key, &certificate_id)?;
        let endpoint = Endpoint::new(
            Settings::default(),
            issuer.clone(),
            verifier,
            RaRegistry::builtin(),
        )
        .context("IDSCP2 settings")?;
        let connection = connect(
            &self.server,
            &self.server_name,
            &ClientConfig { tls, endpoint },
        )
        .await
        .with_context(|| format!("cannot talk IDSCP2 to {}", self.server))?;
        let own_dat = (self.dat_mode != DatModeArg::Development).then_some(issuer);
        Ok(ClearingHouseClient::new(
            connection,
            self.connector_id
                .clone()
                .unwrap_or_else(|| format!("urn:connector:{certificate_id}")),
            own_dat,
            Duration::from_secs(self.timeout),
        ))
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
            .ok_or_else(|| usage("--daps-url is required with --dat-mode daps or file"))?;
        let http = daps_http_client()?;
        let jwks = JwksSource::Url(format!(
            "{}/.well-known/jwks.json",
            daps_url.trim_end_matches('/')
        ));
        let verifier = DapsVerifier::new(DapsVerifierConfig::new(daps_url, jwks, http.clone()))?;
        let issuer: Arc<dyn DatIssuer> = match (&self.dat_mode, &self.dat_file, &self.token_url) {
            (DatModeArg::File, Some(file), _) => Arc::new(StaticIssuer::new(file)?),
            (DatModeArg::File, None, _) => {
                return Err(usage("--dat-file is required with --dat-mode file"))
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
            (_, _, None) => return Err(usage("--token-url is required with --dat-mode daps")),
        };
        Ok((issuer, Arc::new(verifier)))
    }
}

/// A usage error: exit code 2, like clap's own.
fn usage(message: impl Into<String>) -> anyhow::Error {
    crate::config::ConfigError::setting("client", message.into()).into()
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
    let mut page = 1;
    loop {
        options.page = Some(page);
        let reply = accepted(client.query(pid, &options).await?)?;
        let body = reply.json().context("the result is not JSON")?;
        total = body["total"].as_u64().unwrap_or(total);
        progress.set_length(total);
        let batch = body["documents"].as_array().cloned().unwrap_or_default();
        let pages = body["pages"].as_u64().unwrap_or(page);
        progress.inc(batch.len() as u64);
        let done = batch.is_empty() || page >= pages;
        documents.extend(batch);
        if done {
            break;
        }
        page += 1;
    }
    progress.finish_and_clear();
    print_documents(
        &json!({"pid": pid, "total": total, "documents": documents}),
        format,
    )
}

fn print_documents(page: &Value, format: OutputFormat) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(page)?);
        return Ok(());
    }
    let Some(documents) = page["documents"].as_array() else {
        bail!("the result has no documents");
    };
    let mut table = Table::new();
    table.set_header([
        "sequence",
        "document_id",
        "timestamp",
        "client_id",
        "payload_type",
        "payload",
    ]);
    for document in documents {
        let text = |name: &str| match &document[name] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let mut payload = text("payload");
        if payload.chars().count() > 40 {
            payload = payload.chars().take(39).collect::<String>() + "…";
        }
        table.add_row([
            text("sequence"),
            text("document_id"),
            text("timestamp"),
            text("client_id"),
            text("payload_type"),
            payload,
        ]);
    }
    println!("{table}");
    if let Some(total) = page["total"].as_u64() {
        println!("{} of {total} entries", documents.len());
    }
    Ok(())
}

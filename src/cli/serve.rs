//! `clearinghouse serve`: loads and checks the whole configuration, then serves IDSCP2 (and, with
//! `http.listen`, IDS-Multipart over HTTPS) and the operations endpoint until SIGTERM or SIGINT.
//!
//! Shutdown order matters for the receipts promise: both doors stop accepting at the same signal
//! and let each connection finish the request it is working on (IDSCP2 closes with
//! USER_SHUTDOWN); only when both are done is the last handle on the store dropped, which for the
//! embedded store waits for its writer thread to commit what it holds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::info;

use super::client::DEFAULT_SERVER_NAME;
use super::{logging, setup, StoreConfigArgs};
use crate::clearing::{ClearingHouse, ClearingHouseConfig, Quotas};
use crate::config::{Config, ConfigError, DatMode, LogFormat};
use crate::devpki::DevPki;
use crate::http::{self, ClientAuth, HttpDoorConfig, HttpServer};
use crate::idscp2::endpoint::Endpoint;
use crate::idscp2::server::{Server, ServerConfig};
use crate::idscp2::tls::{self, TlsIdentity};
use crate::ops::{self, OpsState};

/// A client of the default development PKI, used in the printed example command.
const DEMO_CLIENT: &str = "connector-a";

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    config: StoreConfigArgs,
    /// Overrides server.listen (port 0 picks a free port; the bound address is printed)
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Overrides ops.listen
    #[arg(long, value_name = "ADDR")]
    ops_listen: Option<String>,
    /// Overrides http.listen: serve IDS-Multipart over HTTPS there too
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Overrides log.format
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
    /// Overrides log.level
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Human,
    Json,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut overrides = Vec::new();
    overrides.extend(args.listen.map(|v| ("server.listen", v)));
    overrides.extend(args.ops_listen.map(|v| ("ops.listen", v)));
    overrides.extend(args.http_listen.map(|v| ("http.listen", v)));
    overrides.extend(args.log_level.map(|v| ("log.level", v)));
    overrides.extend(args.log_format.map(|format| {
        let format = match format {
            LogFormatArg::Human => LogFormat::Human,
            LogFormatArg::Json => LogFormat::Json,
        };
        ("log.format", format!("{format:?}").to_lowercase())
    }));
    let loaded = args.config.load(overrides)?;
    logging::init(&loaded.config.log)?;
    loaded.log_ignored();
    let config = loaded.config;
    let metrics = ops::install_metrics().context("cannot install the metrics recorder")?;

    let files = setup::files(&config, true)?;
    let (identity, tls) = setup::server_tls(&files)?;
    let connector_id = setup::connector_id(&config, &identity)?;
    let dat = setup::dat_drivers(&config, &files, &identity)?;
    let endpoint = setup::endpoint(&config, &dat)?;
    let (signer, jwks) = setup::receipts(&config, &files)?;
    let (store, usage) = setup::stores(&config, true).await?;

    let http_server = match config.http.enabled() {
        true => Some(http_door(&config, &files, &identity, &dat, &endpoint).await?),
        false => None,
    };
    let server = Server::bind(
        &config.server.listen,
        ServerConfig {
            tls,
            endpoint,
            max_connections: config.server.max_connections,
            handshake_limits: config.handshake_limits(),
        },
    )
    .await
    .map_err(|e| ConfigError::setting("server.listen", format!("cannot listen: {e}")))?;
    let ops_listener = TcpListener::bind(&config.ops.listen)
        .await
        .map_err(|e| ConfigError::setting("ops.listen", format!("cannot listen: {e}")))?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;

    let idscp2_addr = server.local_addr().context("no local address")?;
    let ops_addr = ops_listener.local_addr().context("no local address")?;
    // The backend as the configuration spells it (`embedded`, `mongodb`), not its Rust name.
    let backend = toml::Value::try_from(config.store.backend)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let http_addr = match &http_server {
        Some(server) => Some(server.local_addr().context("no local address")?),
        None => None,
    };
    info!(%idscp2_addr, %ops_addr, ?http_addr, %connector_id, store = %backend, "clearing house ready");
    // Parsable lines on stdout, for scripts and tests that let the port be chosen.
    println!("clearinghouse: IDSCP2 listening on {idscp2_addr}");
    println!("clearinghouse: operations endpoint on http://{ops_addr}");
    if let Some(http_addr) = http_addr {
        println!("clearinghouse: IDS-Multipart listening on https://{http_addr}");
    }
    if config.dat.mode == DatMode::Development {
        print_try_it(idscp2_addr, http_addr, &files);
    }

    let quotas = Arc::new(Quotas::new(&config.quotas));
    let quota_sync = quotas.spawn_sync(
        usage.clone(),
        Duration::from_millis(config.quotas.sync_interval_ms),
    );
    let service = Arc::new(ClearingHouse::new(ClearingHouseConfig {
        store: store.clone(),
        signer,
        connector_id,
        own_dat: dat.own_dat,
        token_verifier: dat.verifier,
        max_payload: config.server.max_payload,
        max_reply: crate::clearing::reply_limit(config.idscp2.max_frame),
        limits: config.limits.clone(),
        quotas: quotas.clone(),
        admins: config.admin.identities.iter().cloned().collect(),
    }));
    let (stop_ops, mut ops_stopped) = watch::channel(false);
    let ops_task = tokio::spawn(ops::serve(
        ops_listener,
        OpsState {
            store: store.clone(),
            metrics,
            jwks: Arc::new(jwks.to_json()),
            quotas: quotas.clone(),
        },
        async move {
            let _ = ops_stopped.changed().await;
        },
    ));

    // One shutdown for both doors: each stops accepting and finishes the requests it has.
    let (stop_doors, doors_stopped) = watch::channel(false);
    let http_task = http_server.map(|http| {
        let mut stopped = doors_stopped.clone();
        tokio::spawn(http.run(service.clone(), async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }))
    });
    server
        .run(service, async move {
            tokio::select! {
                _ = terminate.recv() => info!("SIGTERM received"),
                _ = interrupt.recv() => info!("SIGINT received"),
            }
            let _ = stop_doors.send(true);
        })
        .await;
    if let Some(http_task) = http_task {
        if let Err(e) = http_task.await {
            tracing::warn!(error = %e, "HTTPS door task failed");
        }
    }
    let _ = stop_ops.send(true);
    match ops_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "operations endpoint failed"),
        Err(e) => tracing::warn!(error = %e, "operations endpoint task failed"),
    }
    // What was counted since the last sync goes to the store before it closes; the sync task's
    // handle on the store must be gone by then.
    quota_sync.abort();
    let _ = quota_sync.await;
    if let Err(e) = quotas.sync(usage.as_ref()).await {
        tracing::warn!(error = %e, "cannot save the last quota usage");
    }
    drop(usage);
    // The last handle: dropping it flushes and closes the store.
    drop(store);
    info!("store closed; bye");
    Ok(())
}

/// The HTTPS door on `http.listen`, with the IDSCP2 listener's certificate and CAs, its DAT
/// verifier and its memory budget.
async fn http_door(
    config: &Config,
    files: &setup::Files,
    identity: &TlsIdentity,
    dat: &setup::DatDrivers,
    endpoint: &Endpoint,
) -> anyhow::Result<HttpServer> {
    let development = config.dat.mode == DatMode::Development;
    // Development mode has no DATs to verify: the client certificate is the identity.
    let client_auth = match development {
        true => ClientAuth::Required,
        false => config.http.client_auth,
    };
    if client_auth == ClientAuth::Optional {
        tracing::warn!(
            "http.client_auth = \"optional\": an HTTPS client without a certificate is \
             identified by its DAT alone, which is then a bearer token for its lifetime"
        );
    }
    let cas = tls::load_ca_file(&files.ca_certificates)
        .map_err(|e| ConfigError::setting("tls.ca_certificates", e))?;
    let tls = http::server_tls(identity, &cas, client_auth)
        .map_err(|e| ConfigError::setting("tls.certificate", e))?;
    let door = HttpDoorConfig {
        tls,
        limits: config.http.limits(),
        budget: endpoint.budget.clone(),
        verifier: dat.verifier.clone(),
        token_required: !development,
    };
    Ok(HttpServer::bind(&config.http.listen, door)
        .await
        .map_err(|e| ConfigError::setting("http.listen", format!("cannot listen: {e}")))?)
}

/// The exact command that talks to this server with a development client certificate, when
/// there is one that works: the server must trust the development CA (so that it accepts the
/// client certificate) and present the development server certificate (so that the development
/// CA verifies it); otherwise what to use instead.
fn print_try_it(addr: SocketAddr, https: Option<SocketAddr>, files: &setup::Files) {
    let Some(pki) = &files.dev_pki else {
        return;
    };
    if files.ca_certificates != pki.ca_cert() || files.certificate != pki.server_cert() {
        println!(
            "clearinghouse: development mode; connect with a client certificate issued by a CA in \
             {} and --ca naming the CA that issued {}",
            files.ca_certificates.display(),
            files.certificate.display()
        );
        return;
    }
    let Some(client) = demo_client(pki) else {
        println!(
            "clearinghouse: development mode; issue a client certificate with `clearinghouse dev-pki --dir {} --client NAME`",
            pki.dir.display()
        );
        return;
    };
    let reachable = |addr: SocketAddr| match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::new([127, 0, 0, 1].into(), addr.port())
        }
        ip if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    let host = reachable(addr);
    // The client checks the name it is given (default `localhost`) against the certificate.
    let names = pki.server_names().unwrap_or_default();
    let host_ip = host.ip().to_string();
    let server_name = if names.iter().any(|name| name == DEFAULT_SERVER_NAME) {
        String::new()
    } else {
        names
            .iter()
            .find(|name| **name == host_ip)
            .or(names.first())
            .map(|name| format!(" --server-name {name}"))
            .unwrap_or_default()
    };
    // argv[0] is how this very binary was started, so the command works as printed.
    let program = std::env::args()
        .next()
        .unwrap_or_else(|| "clearinghouse".to_owned());
    let credentials = format!(
        "--ca {} --cert {} --key {}",
        pki.ca_cert().display(),
        pki.client_cert(&client).display(),
        pki.client_key(&client).display(),
    );
    println!("clearinghouse: development mode; try:");
    println!(
        "  {program} client log --server {host}{server_name} {credentials} --pid demo --data 'hello'"
    );
    if let Some(https) = https {
        let https = reachable(https);
        println!(
            "  {program} client log --transport multipart --server {https}{server_name} {credentials} --pid demo --data 'hello'"
        );
    }
}

/// `connector-a` when the PKI has it, else the first client with both files.
fn demo_client(pki: &DevPki) -> Option<String> {
    let complete = |name: &str| pki.client_cert(name).exists() && pki.client_key(name).exists();
    if complete(DEMO_CLIENT) {
        return Some(DEMO_CLIENT.to_owned());
    }
    let mut names: Vec<String> = std::fs::read_dir(pki.dir.join("clients"))
        .ok()?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".crt").map(str::to_owned)
        })
        .filter(|name| complete(name))
        .collect();
    names.sort();
    names.into_iter().next()
}

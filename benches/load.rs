//! The load generator, and the clearing-house server it drives, in one bench binary.
//!
//! `cargo bench --bench load -- <role> ...`:
//! - `server`: a clearing house on IDSCP2 (development PKI in `--dir`, development DAT mode,
//!   ES256 receipts, the store chosen by `--store`), optionally filling one process first. It
//!   prints `listening <addr> pid <pid>` and runs until stdin closes or SIGTERM/SIGINT.
//! - `run <scenario>`: drives a server over real IDSCP2 and reports what it measured. Without
//!   `--server` it starts the `server` role as a child process of this same binary, so that the
//!   server's CPU time and memory can be read from /proc apart from the load generator's own.
//! - `summarize FILE...`: the median of every figure over repeated runs (JSON lines from `--json`).
//!
//! Errors on the wire are counted by kind and never end a run; only setup failures do.

use std::collections::BTreeMap;
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use clearinghouse::clearing::{
    reply_limit, ClearingHouse, ClearingHouseConfig, Quotas, DEFAULT_MAX_PAYLOAD,
};
use clearinghouse::client::{ClearingHouseClient, QueryOptions, RequestError};
use clearinghouse::config::{LimitsConfig, QuotaOverride, QuotasConfig};
use clearinghouse::devpki::{DevPki, DevPkiOptions};
use clearinghouse::ids::{request_header, MessageType, Reply, RequestContext, RequestHeader};
use clearinghouse::idscp2::admission::HandshakeLimits;
use clearinghouse::idscp2::client::{self, ClientConfig, ClientError};
use clearinghouse::idscp2::connection::ConnectionError;
use clearinghouse::idscp2::dat::{DatError, DatIssuer, DevelopmentIssuer, DevelopmentVerifier};
use clearinghouse::idscp2::endpoint::{Endpoint, Settings};
use clearinghouse::idscp2::frame::{decode_message, IdscpCodec, DEFAULT_MAX_FRAME};
use clearinghouse::idscp2::proto::IdscpData;
use clearinghouse::idscp2::ra::{RaRegistry, DUMMY2};
use clearinghouse::idscp2::server::{Server, ServerConfig};
use clearinghouse::idscp2::tls::{self, PeerCertificate, TlsIdentity};
use clearinghouse::receipt::{ReceiptAlgorithm, ReceiptSigner};
use clearinghouse::store::sealing::{generate_kek_file, KekFile, Keyring};
use clearinghouse::store::{
    EmbeddedOptions, EmbeddedStore, MongoConfig, MongoStore, NewEntry, Order, PageQuery,
    ProcessStore, Sealing, UsageStore,
};
use futures::future::BoxFuture;
use futures::{stream, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Semaphore;

#[path = "load/multipart.rs"]
mod multipart;
#[path = "load/signing.rs"]
mod signing;

// The same allocator as the `clearinghouse` binary, so that the server role costs what the real
// server does (and the load generator, which shares these 2 cores, gets the same saving).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The client certificate every load connection presents; one identity owns every process.
const CLIENT: &str = "connector-a";
/// The connector the throttled scenario's server limits.
const THROTTLED_CLIENT: &str = "connector-b";
const CH_CONNECTOR_ID: &str = "https://clearinghouse.bench/connector";
const STORE_FILE: &str = "clearinghouse.redb";

#[derive(Parser)]
#[command(
    name = "load",
    about = "Clearing-house load generator: cargo bench --bench load -- <server|run|summarize> ..."
)]
struct Cli {
    #[command(subcommand)]
    command: Role,
}

#[derive(Subcommand)]
enum Role {
    /// A clearing-house server for the load generator.
    Server(ServerArgs),
    /// Drive a server with one scenario.
    Run(RunArgs),
    /// Receipts per second this build's signer makes on every core with a given key.
    SigningSpeed(signing::SigningSpeedArgs),
    /// Median of each figure over runs with the same name, from `run --json` output files.
    Summarize {
        files: Vec<PathBuf>,
        /// Print the medians as JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Where entries go. The store is a server-side setting only: the load generator never knows.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum StoreKind {
    Embedded,
    /// Not on this branch yet: the MongoDB backend is being written separately.
    Mongodb,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Mongodb => "mongodb",
        }
    }
}

#[derive(Args)]
struct ServerArgs {
    /// Development PKI (generated if missing) and the embedded store's file live here.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    #[arg(long, value_enum, default_value = "embedded")]
    store: StoreKind,
    /// Open connections the server accepts at once.
    #[arg(long, default_value_t = 20_000)]
    max_connections: usize,
    /// Fill this process (owned by the load generator's identity) before listening.
    #[arg(long)]
    prefill_pid: Option<String>,
    /// How many entries the prefilled process should hold; only the missing ones are appended.
    #[arg(long, default_value_t = 0)]
    prefill: u64,
    /// Payload bytes of each prefilled entry.
    #[arg(long, default_value_t = 256)]
    prefill_payload: usize,
    /// Create this many processes (`proc-0`, `proc-1`, ...) before listening, e.g. to time
    /// `clearinghouse keys rewrap` on them.
    #[arg(long, default_value_t = 0)]
    prefill_processes: u64,
    /// Receipt algorithm; ES256 uses the development PKI's receipt key, others need --receipt-key.
    #[arg(long, default_value = "ES256")]
    receipt_alg: String,
    #[arg(long)]
    receipt_key: Option<PathBuf>,
    /// The MongoDB database (default: CH_BENCH_MONGODB_DATABASE, else clearinghouse_bench).
    #[arg(long)]
    database: Option<String>,
    /// Record the store's conflict counters and commit sizes and print them (`metric NAME VALUE`)
    /// on shutdown.
    #[arg(long)]
    store_metrics: bool,
    #[command(flatten)]
    quotas: QuotaArgs,
    /// The door served: IDSCP2, or IDS-Multipart over HTTPS.
    #[arg(long, value_enum, default_value = "idscp2")]
    transport: multipart::Transport,
    /// The embedded store's commit delay in µs (default: the store's own).
    #[arg(long)]
    commit_delay_us: Option<u64>,
}

/// The server role's quotas (fair use); without these flags there are none.
#[derive(Args)]
struct QuotaArgs {
    /// Every quota on, with limits no request reaches: what checking them costs.
    #[arg(long)]
    quotas: bool,
    /// connector-b (the throttled scenario's hostile connector) may send this many requests
    /// per second.
    #[arg(long)]
    throttle_rps: Option<f64>,
}

impl QuotaArgs {
    fn config(&self, pki: &DevPki) -> Result<QuotasConfig> {
        let mut config = QuotasConfig::default();
        if self.quotas {
            config.requests_per_second = 1e9;
            config.burst = 1_000_000_000;
            config.processes_per_window = u64::MAX / 2;
            config.bytes_per_window = u64::MAX / 2;
        }
        if let Some(rps) = self.throttle_rps {
            let throttled = connector_id(
                &pki.client_cert(THROTTLED_CLIENT),
                &pki.client_key(THROTTLED_CLIENT),
            )?;
            config.connectors.insert(
                throttled,
                QuotaOverride {
                    requests_per_second: Some(rps),
                    burst: Some(rps.ceil().max(1.0) as u64),
                    ..QuotaOverride::default()
                },
            );
        }
        Ok(config)
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// LogMessages: receipts per second and latency.
    Log(LogArgs),
    /// QueryMessages on one large process: first, middle and date-filtered pages, one entry by id.
    Query(QueryArgs),
    /// Full TLS 1.3 + IDSCP2 handshakes (no session resumption), each followed by a close.
    Handshake(HandshakeArgs),
    /// Server memory per idle established connection.
    Idle(IdleArgs),
    /// Server memory under hostile peers (no-ACK pipeline, partial-frame flood), and the
    /// throughput of well-behaved connections meanwhile.
    Hostile(HostileArgs),
    /// Fair use: a well-behaved connector's log throughput alone, then while another connector
    /// (connector-b) sends as fast as it can and is throttled by its request quota.
    Throttled(ThrottledArgs),
    /// Two clearing-house instances on one MongoDB database (CH_BENCH_MONGODB_URI, a fresh
    /// database per run), each with its own connections, logging to the same processes; then
    /// every chain is verified.
    Scaleout(ScaleoutArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// An external server (host:port). Without it a server child process is started.
    #[arg(long)]
    server: Option<String>,
    /// The name the server certificate must carry.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// With --server: CA certificate, client certificate and key (PEM). Default: from --dir.
    #[arg(long)]
    ca: Option<PathBuf>,
    #[arg(long)]
    cert: Option<PathBuf>,
    #[arg(long)]
    key: Option<PathBuf>,
    /// With --server on this machine: its PID, for CPU time and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Development PKI and store of the spawned server (kept, so a prefill is reused).
    /// Default: a fresh temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Store of the spawned server.
    #[arg(long, value_enum, default_value = "embedded")]
    store: StoreKind,
    /// One JSON object per result line instead of text.
    #[arg(long)]
    json: bool,
    /// Name of the result (for `summarize`); default: derived from the scenario's parameters.
    #[arg(long)]
    label: Option<String>,
    /// Bytes of the DAT placed into each request header's ids:securityToken.
    #[arg(long, default_value_t = 1000)]
    token_bytes: usize,
    /// IDSCP2, or IDS-Multipart over HTTPS (HTTP/1.1 keep-alive; the log scenario only).
    #[arg(long, value_enum, default_value = "idscp2")]
    transport: multipart::Transport,
    /// The spawned server's embedded store commit delay in µs (default: the store's own).
    #[arg(long)]
    commit_delay_us: Option<u64>,
}

#[derive(Args)]
struct LogArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent connections, each one request at a time (IDSCP2 is stop-and-wait).
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// Processes the messages are spread over (created before the measurement).
    #[arg(long, short = 'p', default_value_t = 1)]
    processes: usize,
    /// Payload bytes per message.
    #[arg(long, short = 's', default_value_t = 256)]
    payload: usize,
    /// `opaque` JSON, or `dsp`: a Dataspace Protocol TransferStartMessage the clearing house
    /// recognises (padded to --payload bytes).
    #[arg(long, value_enum, default_value = "opaque")]
    payload_kind: PayloadKind,
    /// Measured seconds (after --warmup).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// A fixed number of messages instead of a duration (no warm-up).
    #[arg(long)]
    messages: Option<u64>,
    /// Total messages per second, spread evenly over the connections; latency then counts from
    /// each message's scheduled time, so a server that falls behind shows it (no coordinated
    /// omission). Default: as fast as the server answers.
    #[arg(long)]
    rate: Option<f64>,
    /// The spawned server checks every quota (with limits never reached).
    #[arg(long)]
    quotas: bool,
    /// The spawned server's receipt algorithm (ES256, EdDSA, PS512, RS256).
    #[arg(long)]
    receipt_alg: Option<String>,
    /// The spawned server's receipt key (PKCS#8 PEM); needed for every algorithm but ES256.
    #[arg(long)]
    receipt_key: Option<PathBuf>,
    /// The machine's signing limit in signatures per second (`openssl speed` × cores), to
    /// report the throughput as a share of it.
    #[arg(long)]
    signing_limit: Option<f64>,
    /// This build's own signing limit (`load signing-speed`), to report the share of it too.
    #[arg(long)]
    signer_limit: Option<f64>,
    /// Have the spawned server record its store's commit sizes, and report the writes per
    /// commit (over the server's whole life, warm-up included; recording costs it a little).
    #[arg(long)]
    commit_sizes: bool,
}

#[derive(Args)]
struct QueryArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, short = 'c', default_value_t = 1)]
    connections: usize,
    /// The process to query; the spawned server fills it to --prefill entries first.
    #[arg(long, default_value = "bench-query")]
    pid: String,
    #[arg(long, default_value_t = 1_000_000)]
    prefill: u64,
    #[arg(long, default_value_t = 256)]
    prefill_payload: usize,
    #[arg(long, default_value_t = 100)]
    page_size: u64,
    /// Measured seconds per case.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

#[derive(Args)]
struct HandshakeArgs {
    #[command(flatten)]
    common: Common,
    /// Handshakes in flight at once.
    #[arg(long, short = 'c', default_value_t = 8)]
    connections: usize,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

#[derive(Args)]
struct ThrottledArgs {
    #[command(flatten)]
    common: Common,
    /// Connections of the well-behaved connector (connector-a).
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// Connections of the hostile connector (connector-b), each sending as fast as it is answered.
    #[arg(long, default_value_t = 32)]
    hostile_connections: usize,
    /// connector-b's request quota (requests per second).
    #[arg(long, default_value_t = 10.0)]
    throttle_rps: f64,
    #[arg(long, short = 's', default_value_t = 256)]
    payload: usize,
    /// Measured seconds of each phase (after --warmup).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
}

#[derive(Args)]
struct ScaleoutArgs {
    #[command(flatten)]
    common: Common,
    /// Connections per instance.
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// Processes, shared by both instances: every connection goes round all of them.
    #[arg(long, short = 'p', default_value_t = 16)]
    processes: usize,
    /// Each instance logs to its own half of the processes instead (as if they were sharded by
    /// process between the instances): no two instances ever append to one process.
    #[arg(long)]
    own_processes: bool,
    #[arg(long, short = 's', default_value_t = 256)]
    payload: usize,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
}

#[derive(Args)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open and hold.
    #[arg(long, short = 'c', default_value_t = 10_000)]
    connections: usize,
    /// Handshakes in flight while opening them.
    #[arg(long, default_value_t = 32)]
    open_concurrency: usize,
    /// Seconds to wait after the last one is established before reading memory.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
}

/// Hostile peers, at the server's connection limit, while well-behaved connections log.
#[derive(Args)]
struct HostileArgs {
    #[command(flatten)]
    common: Common,
    /// No-ACK pipeline: connections that send QueryMessages back to back (each one ACKed by the
    /// server before the next, bits alternating) and never ACK a reply.
    #[arg(long, default_value_t = 0)]
    pipeline: usize,
    /// QueryMessages each pipeline connection sends at most.
    #[arg(long, default_value_t = 60)]
    queries: usize,
    /// Entries of the process the pipeline queries; every query asks for all of them in one page.
    #[arg(long, default_value_t = 4)]
    entries: usize,
    /// Payload bytes of each of those entries.
    #[arg(long, default_value_t = 3_000_000)]
    entry_bytes: usize,
    /// Partial-frame flood: connections that announce a frame of --frame-length bytes, send
    /// --frame-sent bytes of it and never the rest.
    #[arg(long, default_value_t = 0)]
    flood: usize,
    #[arg(long, default_value_t = 16_000_000)]
    frame_length: u32,
    #[arg(long, default_value_t = 15_000_000)]
    frame_sent: usize,
    /// Well-behaved connections that log 256-byte messages all along.
    #[arg(long, short = 'c', default_value_t = 8)]
    good: usize,
    /// Handshakes in flight while the hostile connections open.
    #[arg(long, default_value_t = 16)]
    open_concurrency: usize,
    /// Connection limit of the spawned server. Default: the hostile and good connections plus
    /// one, so that hostile peers hold every slot the good ones do not.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Seconds the good connections are measured alone (after 1 s of warm-up), before the
    /// hostile ones start.
    #[arg(long, default_value_t = 5.0)]
    baseline: f64,
    /// Seconds measured from the start of the hostile connections.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// The run ends early, dropping the hostile connections, once the server's resident memory
    /// passes this many MiB: a server without a memory bound can exhaust a shared machine.
    #[arg(long, default_value_t = 3072)]
    rss_limit_mib: u64,
}

fn main() -> Result<()> {
    // `cargo bench` appends `--bench` to every bench binary's arguments; it means nothing here.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    if args.len() == 1 {
        // Plain `cargo bench` runs every bench target: this one needs to be told what to do.
        eprintln!(
            "load: nothing to do; see `cargo bench --bench load -- --help` and scripts/bench"
        );
        return Ok(());
    }
    let cli = Cli::parse_from(args);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = match cli.command {
        Role::Server(args) => runtime.block_on(serve(args)),
        Role::Run(args) => runtime.block_on(run(args)),
        Role::SigningSpeed(args) => signing::signing_speed(args),
        Role::Summarize { files, json } => summarize(&files, json),
    };
    // The server's stdin reader is a blocking read that never returns while stdin stays open
    // (after SIGTERM); waiting for it would keep the process alive forever.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

// ---- server role -----------------------------------------------------------------------------

async fn serve(args: ServerArgs) -> Result<()> {
    // Only when asked: a recorder makes every metric the server records cost something.
    let metrics = if args.store_metrics {
        Some(metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?)
    } else {
        None
    };
    let pki = DevPki::open_or_generate(&args.dir, &DevPkiOptions::default())?;
    let sealing = bench_sealing(&args.dir)?;
    let (store, usage): (Arc<dyn ProcessStore>, Arc<dyn UsageStore>) = match args.store {
        StoreKind::Embedded => {
            let mut options = EmbeddedOptions::from(sealing);
            if let Some(delay) = args.commit_delay_us {
                options.commit_delay = Duration::from_micros(delay);
            }
            let store = Arc::new(EmbeddedStore::open_with(
                args.dir.join(STORE_FILE),
                options,
            )?);
            (store.clone(), store)
        }
        // The database comes from the environment, so that `run` passes it on to the server
        // role it starts without a flag of its own.
        StoreKind::Mongodb => {
            let uri = std::env::var("CH_BENCH_MONGODB_URI")
                .context("--store mongodb needs CH_BENCH_MONGODB_URI")?;
            let database = match &args.database {
                Some(database) => database.clone(),
                None => std::env::var("CH_BENCH_MONGODB_DATABASE")
                    .unwrap_or_else(|_| "clearinghouse_bench".into()),
            };
            let config = MongoConfig::new(uri, database).with_sealing(sealing);
            let store = Arc::new(MongoStore::connect(config).await?);
            (store.clone(), store)
        }
    };
    if let Some(pid) = &args.prefill_pid {
        prefill(&*store, &pki, pid, args.prefill, args.prefill_payload).await?;
    }
    if args.prefill_processes > 0 {
        let started = Instant::now();
        let owners = [CLIENT.to_owned()].into_iter().collect();
        let created: Vec<_> = stream::iter(0..args.prefill_processes)
            .map(|n| store.create_process(&format!("proc-{n}"), &owners))
            .buffer_unordered(1024)
            .collect()
            .await;
        created.into_iter().collect::<Result<Vec<_>, _>>()?;
        eprintln!(
            "prefill: {} processes in {:.1} s",
            args.prefill_processes,
            started.elapsed().as_secs_f64()
        );
    }
    let algorithm: ReceiptAlgorithm = args.receipt_alg.parse()?;
    let key_path = match (&args.receipt_key, algorithm) {
        (Some(path), _) => path.clone(),
        (None, ReceiptAlgorithm::Es256) => pki.receipt_key(),
        (None, other) => bail!("--receipt-key is needed for {other}"),
    };
    let signer = Arc::new(ReceiptSigner::from_pem(
        algorithm,
        &std::fs::read(&key_path).with_context(|| key_path.display().to_string())?,
    )?);
    let quotas = Arc::new(Quotas::new(&args.quotas.config(&pki)?));
    // Usage goes to the store as `serve` sends it, so that its cost is part of the figures.
    let quota_sync = quotas.spawn_sync(usage, Duration::from_secs(1));
    let service = Arc::new(ClearingHouse::new(ClearingHouseConfig {
        store: store.clone(),
        signer,
        connector_id: CH_CONNECTOR_ID.into(),
        own_dat: None,
        token_verifier: Arc::new(DevelopmentVerifier::new()),
        max_payload: DEFAULT_MAX_PAYLOAD,
        max_reply: reply_limit(DEFAULT_MAX_FRAME),
        limits: LimitsConfig::default(),
        quotas: quotas.clone(),
        admins: Default::default(),
    }));
    if args.transport == multipart::Transport::Multipart {
        let endpoint = dev_endpoint()?;
        multipart::serve(
            service,
            &pki,
            &args.listen,
            args.max_connections,
            &endpoint,
            shutdown_signal(),
        )
        .await?;
        quota_sync.abort();
        return Ok(());
    }
    let identity = TlsIdentity::from_pem_files(&pki.server_cert(), &pki.server_key())?;
    let cas = tls::load_ca_file(&pki.ca_cert())?;
    let config = ServerConfig {
        tls: tls::server_config(&identity, &cas)?,
        endpoint: dev_endpoint()?,
        max_connections: args.max_connections,
        // Every load connection comes from this one address.
        handshake_limits: HandshakeLimits {
            max_pending_per_source: HandshakeLimits::default().max_pending,
            ..HandshakeLimits::default()
        },
    };
    let server = Server::bind(&args.listen, config).await?;
    println!(
        "listening {} pid {}",
        server.local_addr()?,
        std::process::id()
    );
    std::io::stdout().flush()?;
    server.run(service, shutdown_signal()).await;
    quota_sync.abort();
    let _ = quota_sync.await;
    drop(store);
    if let Some(metrics) = metrics {
        for line in metrics.render().lines() {
            if line.starts_with("clearinghouse_store_sequence_conflicts_total")
                || line.starts_with("clearinghouse_store_appends_retried_total")
                || line.starts_with("clearinghouse_store_commit_size_")
            {
                println!("metric {line}");
            }
        }
    }
    Ok(())
}

/// Stdin closing (the load generator went away) or SIGTERM/SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let stdin_closed = async {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    };
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = stdin_closed => {}
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn dev_endpoint() -> Result<Endpoint> {
    Ok(Endpoint::new(
        Settings::default(),
        Arc::new(DevelopmentIssuer::new()),
        Arc::new(DevelopmentVerifier::new()),
        RaRegistry::builtin(),
    )?)
}

/// Appends entries through the store API (the same append the log handler uses, without the
/// network round trips) until `pid` holds `target` entries.
async fn prefill(
    store: &dyn ProcessStore,
    pki: &DevPki,
    pid: &str,
    target: u64,
    payload_size: usize,
) -> Result<()> {
    let owner = connector_id(&pki.client_cert(CLIENT), &pki.client_key(CLIENT))?;
    store
        .create_process(pid, &[owner.clone()].into_iter().collect())
        .await?;
    let have = entry_count(store, pid).await?;
    if have >= target {
        eprintln!("prefill: {pid} already holds {have} entries");
        return Ok(());
    }
    let header = RequestHeader::parse(&bench_header(MessageType::Log, None))?.stored;
    let payload = payload_of(payload_size);
    let started = Instant::now();
    let missing = target - have;
    let done = AtomicU64::new(0);
    // Enough appends in flight to fill every group commit.
    let results = stream::iter(0..missing)
        .map(|_| {
            let entry = NewEntry {
                pid: pid.to_owned(),
                client_id: owner.clone(),
                header: header.clone(),
                payload: payload.clone(),
                payload_type: "application/json".into(),
            };
            let done = &done;
            async move {
                let result = store.append(entry.prepare()).await;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(100_000) {
                    eprintln!(
                        "prefill: {n}/{missing} in {:.0} s",
                        started.elapsed().as_secs_f64()
                    );
                }
                result
            }
        })
        .buffer_unordered(1024);
    futures::pin_mut!(results);
    while let Some(result) = results.next().await {
        result?;
    }
    eprintln!(
        "prefill: {pid} now holds {target} entries ({missing} appended in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn entry_count(store: &dyn ProcessStore, pid: &str) -> Result<u64> {
    let page = store
        .query(&PageQuery {
            pid: pid.to_owned(),
            page: 1,
            size: 1,
            order: Order::Asc,
            from_ms: None,
            to_ms: None,
            max_bytes: usize::MAX,
        })
        .await?;
    Ok(page.total)
}

fn connector_id(cert: &Path, key: &Path) -> Result<String> {
    let identity = TlsIdentity::from_pem_files(cert, key)?;
    Ok(PeerCertificate::new(identity.leaf().clone()).connector_id()?)
}

// ---- the load generator's side ---------------------------------------------------------------

/// How the load generator reaches the server, and the server's process if it can see it.
struct Target {
    addr: String,
    server_name: String,
    config: ClientConfig,
    /// With `--transport multipart`: the HTTPS client every load client shares.
    https: Option<clearinghouse::client::MultipartTransport>,
    server_pid: Option<u32>,
    store: String,
    /// The spawned server, if any; stopped when the run ends.
    child: Option<ServerChild>,
    /// Keeps a temporary --dir alive for the run.
    _temp: Option<tempfile::TempDir>,
}

struct ServerChild {
    child: tokio::process::Child,
    /// The rest of the server's stdout: what it prints on shutdown.
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl ServerChild {
    /// Closing stdin asks the server to shut down gracefully; SIGKILL if it takes too long.
    /// Returns the lines the server printed meanwhile.
    async fn stop(mut self) -> Vec<String> {
        drop(self.child.stdin.take());
        let mut printed = Vec::new();
        let stdout = async {
            while let Ok(Some(line)) = self.stdout.next_line().await {
                printed.push(line);
            }
        };
        let waited = tokio::time::timeout(Duration::from_secs(60), async {
            stdout.await;
            self.child.wait().await
        })
        .await;
        if waited.is_err() {
            eprintln!("server did not stop within 60 s; killing it");
            let _ = self.child.kill().await;
        }
        printed
    }
}

/// The `metric NAME VALUE` lines a server role with `--store-metrics` prints on shutdown.
fn printed_metrics(printed: &[String]) -> BTreeMap<String, f64> {
    printed
        .iter()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("metric") {
                return None;
            }
            Some((words.next()?.to_owned(), words.next()?.parse().ok()?))
        })
        .collect()
}

impl Target {
    async fn open(common: &Common, server_args: &[String]) -> Result<Target> {
        let (dir, temp) = match &common.dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new().prefix("ch-bench-").tempdir()?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let paths =
            |explicit: &Option<PathBuf>, default: PathBuf| explicit.clone().unwrap_or(default);
        let mut server_args = server_args.to_vec();
        if common.transport == multipart::Transport::Multipart {
            server_args.extend(["--transport".to_owned(), "multipart".to_owned()]);
        }
        if let Some(delay) = common.commit_delay_us {
            // A setting of the spawned server's embedded store: anywhere else it would be
            // ignored, and the run's label would claim it.
            if common.server.is_some() || common.store != StoreKind::Embedded {
                bail!("--commit-delay-us needs a spawned server on the embedded store");
            }
            server_args.extend(["--commit-delay-us".to_owned(), delay.to_string()]);
        }
        let (addr, server_pid, child, pki_dir) = match &common.server {
            Some(addr) => (addr.clone(), common.server_pid, None, dir),
            None => {
                // Generated here, before the child starts, so the two never race to write it.
                DevPki::open_or_generate(&dir, &DevPkiOptions::default())?;
                let (addr, pid, child) = spawn_server(&dir, common.store, &server_args).await?;
                (addr, Some(pid), Some(child), dir)
            }
        };
        let pki = DevPki {
            dir: pki_dir.clone(),
        };
        let ca = paths(&common.ca, pki.ca_cert());
        let cert = paths(&common.cert, pki.client_cert(CLIENT));
        let key = paths(&common.key, pki.client_key(CLIENT));
        let identity = TlsIdentity::from_pem_files(&cert, &key)
            .with_context(|| format!("client identity {}", cert.display()))?;
        let cas = tls::load_ca_file(&ca)?;
        let config = ClientConfig {
            tls: tls::client_config(&identity, &cas)?,
            endpoint: dev_endpoint()?,
        };
        let https = match common.transport {
            multipart::Transport::Multipart => Some(multipart::transport(
                &addr,
                &common.server_name,
                &ca,
                &cert,
                &key,
            )?),
            multipart::Transport::Idscp2 => None,
        };
        Ok(Target {
            addr,
            server_name: common.server_name.clone(),
            config,
            https,
            server_pid,
            store: if common.server.is_some() {
                "external".into()
            } else {
                common.store.name().into()
            },
            child,
            _temp: temp,
        })
    }

    async fn connect(&self) -> Result<clearinghouse::idscp2::connection::Connection, ClientError> {
        client::connect(&self.addr, &self.server_name, &self.config).await
    }

    /// A load client through the chosen door.
    async fn client(&self, token: &Arc<FixedToken>) -> Result<ClearingHouseClient, ClientError> {
        match &self.https {
            Some(https) => Ok(ClearingHouseClient::over_https(
                https.clone(),
                "https://connector-a.example.org/connector".into(),
                Some(token.clone() as Arc<dyn DatIssuer>),
                Duration::from_secs(30),
            )),
            None => Ok(client_of(self.connect().await?, token)),
        }
    }

    /// Stops the spawned server, if any; returns what it printed on shutdown.
    async fn close(self) -> Vec<String> {
        match self.child {
            Some(child) => child.stop().await,
            None => Vec::new(),
        }
    }

    fn server_cpu(&self) -> Option<Duration> {
        self.server_pid.and_then(process_cpu)
    }

    fn server_rss_kib(&self) -> Option<u64> {
        self.server_pid.and_then(|pid| vm_rss_kib(&pid.to_string()))
    }
}

/// Encryption at rest for the server role: on when `CH_BENCH_ENCRYPT=1` (inherited by the
/// server child of `run`), with a KEK in `dir` as `serve` keeps one beside the development PKI.
fn bench_sealing(dir: &Path) -> Result<Sealing> {
    if std::env::var("CH_BENCH_ENCRYPT").as_deref() != Ok("1") {
        return Ok(Sealing::disabled());
    }
    let file = dir.join("store-kek.hex");
    if !file.exists() {
        generate_kek_file(&file)?;
    }
    let keyring = Keyring::load(&[KekFile {
        id: "bench".into(),
        file,
        active: true,
    }])?;
    Ok(Sealing::with_keyring(keyring))
}

async fn spawn_server(
    dir: &Path,
    store: StoreKind,
    extra: &[String],
) -> Result<(String, u32, ServerChild)> {
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .arg("server")
        .arg("--dir")
        .arg(dir)
        .arg("--store")
        .arg(store.name())
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the server role")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    // A prefill of a million entries takes a few minutes; nothing else takes long.
    let line = tokio::time::timeout(Duration::from_secs(1800), lines.next_line())
        .await
        .context("the server did not start within 30 minutes")??
        .ok_or_else(|| anyhow!("the server exited before listening"))?;
    let mut words = line.split_whitespace();
    let (Some("listening"), Some(addr), Some("pid"), Some(pid)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        bail!("unexpected first line from the server: {line:?}");
    };
    let pid = pid.parse()?;
    Ok((
        addr.to_owned(),
        pid,
        ServerChild {
            child,
            stdout: lines,
        },
    ))
}

/// A fixed token in every request header, shaped and sized like a DAPS DAT.
struct FixedToken(Bytes);

impl DatIssuer for FixedToken {
    fn token(&self) -> BoxFuture<'_, Result<Bytes, DatError>> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
}

/// A JWT of about `size` bytes with the claims a DAPS puts into a DAT. The server in development
/// mode does not check its signature, but parses it and compares its subject, as with a real one.
fn realistic_dat(size: usize) -> String {
    let b64 = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let header = b64(&json!({"typ": "at+jwt", "kid": "default", "alg": "RS256"}));
    let claims = json!({
        "scopes": ["idsc:IDS_CONNECTOR_ATTRIBUTES_ALL"],
        "aud": ["idsc:IDS_CONNECTORS_ALL"],
        "iss": "https://daps.example.org",
        "nbf": 1_700_000_000, "iat": 1_700_000_000, "exp": 1_700_003_600,
        "@context": "https://w3id.org/idsa/contexts/context.jsonld",
        "@type": "ids:DatPayload",
        "securityProfile": "idsc:BASE_SECURITY_PROFILE",
        "referringConnector": "https://connector-a.example.org/connector",
        "transportCertsSha256": "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b",
        "sub": "9C:C8:4C:A4:E1:6B:9F:84:18:62:63:15:90:7F:E1:B7:1A:68:E8:4E:keyid:CB:8C:C7:B6:85:79:A8:23:A6:CB:15:AB:17:50:2F:E6:65:43:5D:E8",
        "client_id": "9C:C8:4C:A4:E1:6B:9F:84:18:62:63:15:90:7F:E1:B7:1A:68:E8:4E:keyid:CB:8C:C7:B6:85:79:A8:23:A6:CB:15:AB:17:50:2F:E6:65:43:5D:E8",
    });
    let claims = b64(&claims);
    let used = header.len() + claims.len() + 2;
    // An RS256 signature is 342 characters; pad the signature to reach the size asked for.
    let signature = "S".repeat(size.saturating_sub(used).max(342));
    format!("{header}.{claims}.{signature}")
}

fn bench_header(message_type: MessageType, token: Option<&str>) -> String {
    request_header(
        &RequestContext {
            connector_id: "https://connector-a.example.org/connector",
            sender_agent: "https://connector-a.example.org/agent",
            security_token: token,
        },
        &message_type,
    )
}

/// A JSON payload of exactly `size` bytes (at least `{"d":""}`).
#[derive(Clone, Copy, clap::ValueEnum)]
enum PayloadKind {
    Opaque,
    Dsp,
}

fn payload_of(size: usize) -> Bytes {
    let filler = size.saturating_sub(8);
    Bytes::from(format!("{{\"d\":\"{}\"}}", "x".repeat(filler)))
}

fn client_of(
    connection: clearinghouse::idscp2::connection::Connection,
    token: &Arc<FixedToken>,
) -> ClearingHouseClient {
    ClearingHouseClient::new(
        connection,
        "https://connector-a.example.org/connector".into(),
        Some(token.clone() as Arc<dyn DatIssuer>),
        Duration::from_secs(30),
    )
}

/// The kind under which a failed request is counted.
fn error_kind(error: &RequestError) -> String {
    match error {
        RequestError::Transport(e) => client_error_kind(e),
        RequestError::Reply(_) | RequestError::NotIdsMessage => "bad-reply".into(),
        RequestError::Https(_) => "https".into(),
    }
}

fn client_error_kind(error: &ClientError) -> String {
    match error {
        ClientError::Timeout(what) => format!("timeout: {what}"),
        ClientError::Connect { source, .. } => format!("connect: {:?}", source.kind()),
        ClientError::Tls { .. } => "tls".into(),
        ClientError::Connection(ConnectionError::Closed(reason)) => {
            format!("closed: {}", reason.cause.as_str_name())
        }
        ClientError::Connection(ConnectionError::MalformedMessage(_)) => "malformed".into(),
        ClientError::Connection(ConnectionError::TooLarge { .. }) => "too-large".into(),
        ClientError::ServerName(_) | ClientError::NoServerCertificate => "setup".into(),
    }
}

/// Whether the reply is the one expected; otherwise its kind as an error.
fn check_reply(reply: &Reply, expected_type: &str) -> Result<(), String> {
    if let Some(reason) = &reply.rejection_reason {
        Err(format!("rejected: {reason}"))
    } else if reply.message_type != expected_type {
        Err(format!("unexpected reply: {}", reply.message_type))
    } else {
        Ok(())
    }
}

/// What one task measured.
struct Tally {
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            // Microseconds, 1 µs to 5 minutes, 3 significant digits.
            latency: Histogram::new_with_bounds(1, 300_000_000, 3).expect("valid bounds"),
            errors: BTreeMap::new(),
        }
    }

    fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(micros.max(1));
    }

    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
    }
}

/// The measured window and what the server spent in it.
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn after(warmup: f64, duration: f64) -> Window {
        let start = Instant::now() + Duration::from_secs_f64(warmup);
        Window {
            start,
            end: start + Duration::from_secs_f64(duration),
        }
    }

    fn contains(&self, from: Instant, to: Instant) -> bool {
        from >= self.start && to <= self.end
    }
}

/// Server CPU time and memory across the measured window, read by a task of its own so that the
/// readings fall on the window's edges whatever the load tasks are doing.
fn sample_server(
    target: &Target,
    start: Instant,
    end: Option<Instant>,
) -> tokio::task::JoinHandle<(Option<Duration>, Option<Duration>)> {
    sample_cpu(target.server_pid, start, end)
}

/// CPU time of process `pid` at `start` and `end`, read by a task of its own.
fn sample_cpu(
    pid: Option<u32>,
    start: Instant,
    end: Option<Instant>,
) -> tokio::task::JoinHandle<(Option<Duration>, Option<Duration>)> {
    tokio::spawn(async move {
        tokio::time::sleep_until(start.into()).await;
        let before = pid.and_then(process_cpu);
        let Some(end) = end else {
            return (before, None);
        };
        tokio::time::sleep_until(end.into()).await;
        (before, pid.and_then(process_cpu))
    })
}

fn cpu_between(sample: (Option<Duration>, Option<Duration>)) -> Option<Duration> {
    match sample {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    }
}

async fn run(args: RunArgs) -> Result<()> {
    match args.scenario {
        Scenario::Log(args) => run_log(args).await,
        Scenario::Query(args) => run_query(args).await,
        Scenario::Handshake(args) => run_handshake(args).await,
        Scenario::Idle(args) => run_idle(args).await,
        Scenario::Hostile(args) => run_hostile(args).await,
        Scenario::Throttled(args) => run_throttled(args).await,
        Scenario::Scaleout(args) => run_scaleout(args).await,
    }
}

/// Opens `n` clients, `concurrency` handshakes at a time.
async fn connect_many(
    target: &Arc<Target>,
    token: &Arc<FixedToken>,
    n: usize,
    concurrency: usize,
) -> Result<Vec<ClearingHouseClient>> {
    let clients: Vec<_> = stream::iter(0..n)
        .map(|_| {
            let target = target.clone();
            async move { target.client(token).await }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    clients
        .into_iter()
        .map(|c| c.map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()
        .context("cannot open the load connections")
}

async fn run_log(args: LogArgs) -> Result<()> {
    if args.connections == 0 || args.processes == 0 {
        bail!("--connections and --processes must be at least 1");
    }
    let mut server_args = Vec::new();
    if args.quotas {
        server_args.push("--quotas".to_owned());
    }
    if let Some(alg) = &args.receipt_alg {
        server_args.extend(["--receipt-alg".to_owned(), alg.clone()]);
    }
    if let Some(key) = &args.receipt_key {
        server_args.extend(["--receipt-key".to_owned(), key.display().to_string()]);
    }
    if args.commit_sizes {
        if args.common.server.is_some() {
            bail!("--commit-sizes needs a spawned server (no --server)");
        }
        server_args.push("--store-metrics".to_owned());
    }
    let target = Arc::new(Target::open(&args.common, &server_args).await?);
    let token = Arc::new(FixedToken(Bytes::from(realistic_dat(
        args.common.token_bytes,
    ))));
    let header_bytes = bench_header(
        MessageType::Log,
        Some(std::str::from_utf8(&token.0).unwrap_or_default()),
    )
    .len();
    let mut clients = connect_many(&target, &token, args.connections, 64).await?;

    // Fresh processes for every run, so repeated runs on one store do not share chains.
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let pids: Arc<Vec<String>> = Arc::new(
        (0..args.processes)
            .map(|k| format!("bench-{run_id}-{k}"))
            .collect(),
    );
    let n = clients.len();
    let creations = clients.iter_mut().enumerate().map(|(c, client)| {
        let pids = pids.clone();
        async move {
            for pid in pids.iter().skip(c).step_by(n) {
                let reply = client.create(pid, &[]).await?;
                check_reply(&reply, "ids:MessageProcessedNotificationMessage")
                    .map_err(|e| anyhow!("creating {pid}: {e}"))?;
            }
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(creations).await?;

    let payload = match args.payload_kind {
        PayloadKind::Opaque => payload_of(args.payload),
        PayloadKind::Dsp => Bytes::from(format!(
            r#"{{"@context":["https://w3id.org/dspace/2024/1/context.json"],"@type":"dspace:TransferStartMessage","dspace:consumerPid":"urn:uuid:c","dspace:providerPid":"urn:uuid:p","pad":"{}"}}"#,
            "x".repeat(args.payload.saturating_sub(170))
        )),
    };
    let (window, budget) = match args.messages {
        Some(count) => (
            Window::after(0.0, 1e6),
            Some(Arc::new(AtomicU64::new(count))),
        ),
        None => (Window::after(args.warmup, args.duration), None),
    };
    let window = Arc::new(window);
    let sampler = sample_server(
        &target,
        window.start,
        budget.is_none().then_some(window.end),
    );
    let own_sampler = sample_cpu(
        Some(std::process::id()),
        window.start,
        budget.is_none().then_some(window.end),
    );
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(n as f64 / rate));
    let began = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, client)| {
            let (target, token, pids, payload, window, budget) = (
                target.clone(),
                token.clone(),
                pids.clone(),
                payload.clone(),
                window.clone(),
                budget.clone(),
            );
            tokio::spawn(async move {
                let mut tally = Tally::new();
                let mut client = Some(client);
                // Connections start their schedules staggered over one interval.
                let mut next = interval.map(|i| began + i.mul_f64(c as f64 / n as f64));
                let mut i = 0usize;
                loop {
                    if let Some(budget) = &budget {
                        if budget
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                                b.checked_sub(1)
                            })
                            .is_err()
                        {
                            break;
                        }
                    } else if Instant::now() >= window.end {
                        break;
                    }
                    let scheduled = match (&mut next, interval) {
                        (Some(next), Some(interval)) => {
                            tokio::time::sleep_until((*next).into()).await;
                            let scheduled = *next;
                            *next += interval;
                            scheduled
                        }
                        _ => Instant::now(),
                    };
                    let Some(ch) = client.as_mut() else {
                        // The previous request broke the connection: open a new one.
                        match target.client(&token).await {
                            Ok(c) => client = Some(c),
                            Err(e) => {
                                tally.error(format!("reconnect: {}", client_error_kind(&e)));
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                        continue;
                    };
                    let pid = &pids[(c + i * n) % pids.len()];
                    i += 1;
                    let result = ch.log(pid, payload.clone(), Some("application/json")).await;
                    let done = Instant::now();
                    let counted = window.contains(scheduled, done);
                    match result {
                        Ok(reply) => {
                            match check_reply(&reply, "ids:MessageProcessedNotificationMessage") {
                                Ok(()) if counted => tally.record(done - scheduled),
                                Ok(()) => {}
                                Err(kind) if counted => tally.error(kind),
                                Err(_) => {}
                            }
                        }
                        Err(e) => {
                            if counted {
                                tally.error(error_kind(&e));
                            }
                            // After a transport error the reply may still come and would be
                            // taken for the next one's: start over on a new connection.
                            client = None;
                        }
                    }
                }
                if let Some(client) = client {
                    client.close().await;
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::new();
    for task in tasks {
        tally.merge(task.await?);
    }
    let finished = Instant::now();
    let (measured, cpu, own_cpu) = match budget {
        Some(_) => {
            let before = sampler.await?.0;
            let after = target.server_cpu();
            let own_before = own_sampler.await?.0;
            let own_after = process_cpu(std::process::id());
            (
                finished - window.start,
                cpu_between((before, after)),
                cpu_between((own_before, own_after)),
            )
        }
        None => (
            window.end - window.start,
            cpu_between(sampler.await?),
            cpu_between(own_sampler.await?),
        ),
    };
    let label = args.common.label.clone().unwrap_or_else(|| {
        format!(
            "log{} c={} p={} s={}{}{}{}{}",
            match args.common.transport {
                multipart::Transport::Idscp2 => "",
                multipart::Transport::Multipart => " multipart",
            },
            args.connections,
            args.processes,
            args.payload,
            args.rate.map(|r| format!(" rate={r}")).unwrap_or_default(),
            if args.quotas { " quotas" } else { "" },
            args.common
                .commit_delay_us
                .map(|delay| format!(" delay={delay}us"))
                .unwrap_or_default(),
            args.receipt_alg
                .as_ref()
                .map(|alg| format!(" {alg}"))
                .unwrap_or_default()
        )
    });
    let mut result = report(&label, "log", &target, &tally, measured, cpu);
    let completed = tally.latency.len();
    if let Some(own_cpu) = own_cpu.filter(|_| completed > 0) {
        result["client_cpu_us_per_op"] = json!(own_cpu.as_secs_f64() * 1e6 / completed as f64);
    }
    let per_second = completed as f64 / measured.as_secs_f64();
    if args.rate.is_none() && completed > 0 {
        // Little's law for a closed loop: every connection always has one request in flight.
        result["littles_law_mean_ms"] = json!(args.connections as f64 / per_second * 1000.0);
    }
    if let Some(limit) = args.signing_limit {
        result["signing_limit_per_s"] = json!(limit);
        result["signing_limit_percent"] = json!(per_second / limit * 100.0);
    }
    if let Some(limit) = args.signer_limit {
        result["signer_limit_per_s"] = json!(limit);
        result["signer_limit_percent"] = json!(per_second / limit * 100.0);
    }
    result["connections"] = json!(args.connections);
    result["processes"] = json!(args.processes);
    result["payload_bytes"] = json!(args.payload);
    result["header_bytes"] = json!(header_bytes);
    result["target_rate"] = json!(args.rate);
    result["quotas"] = json!(args.quotas);
    let printed = Arc::try_unwrap(target)
        .map_err(|_| anyhow!("target still shared"))?
        .close()
        .await;
    if args.commit_sizes {
        let metrics = printed_metrics(&printed);
        let sum = metrics.get("clearinghouse_store_commit_size_sum");
        let count = metrics
            .get("clearinghouse_store_commit_size_count")
            .filter(|&&n| n > 0.0);
        result["writes_per_commit"] = json!(sum.zip(count).map(|(sum, count)| sum / count));
    }
    print_result(&result, args.common.json);
    Ok(())
}

/// The common part of every result: throughput, latency percentiles, errors, server CPU.
fn report(
    name: &str,
    scenario: &str,
    target: &Target,
    tally: &Tally,
    measured: Duration,
    server_cpu: Option<Duration>,
) -> Value {
    let completed = tally.latency.len();
    let seconds = measured.as_secs_f64();
    let ms = |micros: u64| micros as f64 / 1000.0;
    let latency = if completed == 0 {
        Value::Null
    } else {
        json!({
            "p50": ms(tally.latency.value_at_quantile(0.50)),
            "p95": ms(tally.latency.value_at_quantile(0.95)),
            "p99": ms(tally.latency.value_at_quantile(0.99)),
            "max": ms(tally.latency.max()),
            "mean": tally.latency.mean() / 1000.0,
        })
    };
    json!({
        "name": name,
        "scenario": scenario,
        "store": target.store,
        "completed": completed,
        "seconds": seconds,
        "per_second": completed as f64 / seconds,
        "latency_ms": latency,
        "errors": tally.errors,
        "server_cpu_seconds": server_cpu.map(|c| c.as_secs_f64()),
        "server_cpu_us_per_op": server_cpu
            .filter(|_| completed > 0)
            .map(|c| c.as_secs_f64() * 1e6 / completed as f64),
    })
}

fn print_result(result: &Value, as_json: bool) {
    if as_json {
        println!("{result}");
        return;
    }
    let get = |path: &[&str]| {
        path.iter()
            .try_fold(result, |v, k| v.get(k))
            .and_then(Value::as_f64)
    };
    let f = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    println!("{}", result["name"].as_str().unwrap_or_default());
    println!(
        "  completed {} in {} s: {} /s",
        result["completed"],
        f(get(&["seconds"]), 1),
        f(get(&["per_second"]), 0)
    );
    println!(
        "  latency ms: p50 {}  p95 {}  p99 {}  max {}",
        f(get(&["latency_ms", "p50"]), 3),
        f(get(&["latency_ms", "p95"]), 3),
        f(get(&["latency_ms", "p99"]), 3),
        f(get(&["latency_ms", "max"]), 3)
    );
    println!(
        "  server CPU: {} s, {} µs per operation",
        f(get(&["server_cpu_seconds"]), 2),
        f(get(&["server_cpu_us_per_op"]), 1)
    );
    if let Some(client) = get(&["client_cpu_us_per_op"]) {
        println!("  load generator CPU: {client:.1} µs per operation");
    }
    if let Some(little) = get(&["littles_law_mean_ms"]) {
        println!(
            "  mean latency {} ms; Little's law: {little:.3} ms",
            f(get(&["latency_ms", "mean"]), 3)
        );
    }
    if let Some(limit) = get(&["signing_limit_per_s"]) {
        println!(
            "  signing limit {limit:.0} /s: {}%",
            f(get(&["signing_limit_percent"]), 1)
        );
    }
    if let Some(limit) = get(&["signer_limit_per_s"]) {
        println!(
            "  this build's signer limit {limit:.0} /s: {}%",
            f(get(&["signer_limit_percent"]), 1)
        );
    }
    if let Some(writes) = get(&["writes_per_commit"]) {
        println!("  store: {writes:.1} writes per commit");
    }
    if let Some(rss) = get(&["server_rss_kib_per_connection"]) {
        println!(
            "  server RSS: {} -> {} KiB, {:.1} KiB per connection",
            result["server_rss_kib_before"], result["server_rss_kib_after"], rss
        );
    }
    let errors = result["errors"].as_object().filter(|e| !e.is_empty());
    match errors {
        Some(errors) => {
            for (kind, count) in errors {
                println!("  errors: {kind}: {count}");
            }
        }
        None => println!("  errors: none"),
    }
}

/// One query case: which request, sent again and again.
#[derive(Clone)]
enum QueryCase {
    Page(QueryOptions),
    Entry(String),
}

async fn run_query(args: QueryArgs) -> Result<()> {
    let server_args = [
        "--prefill-pid".to_owned(),
        args.pid.clone(),
        "--prefill".to_owned(),
        args.prefill.to_string(),
        "--prefill-payload".to_owned(),
        args.prefill_payload.to_string(),
    ];
    let target = Arc::new(Target::open(&args.common, &server_args).await?);
    let token = Arc::new(FixedToken(Bytes::from(realistic_dat(
        args.common.token_bytes,
    ))));
    let mut clients = connect_many(&target, &token, args.connections.max(1), 64).await?;

    // The total, the middle page's first entry, and timestamps to filter on, from the server.
    let size = args.page_size;
    let probe = &mut clients[0];
    let page = |page: u64| QueryOptions {
        page: Some(page),
        size: Some(size),
        sort: Some("asc".into()),
        ..QueryOptions::default()
    };
    let first = probe.query(&args.pid, &page(1)).await?;
    let total: u64 = first
        .extra_header("ch-ids-total")
        .and_then(|t| t.parse().ok())
        .or_else(|| first.json()?.get("total")?.as_u64())
        .ok_or_else(|| anyhow!("no total in the reply to the first page: {first:?}"))?;
    let middle_page = (total / size / 2).max(1);
    let documents = |reply: &Reply| -> Result<Vec<Value>> {
        check_reply(reply, "ids:ResultMessage").map_err(|e| anyhow!("probe query: {e}"))?;
        reply
            .json()
            .and_then(|j| j.get("documents")?.as_array().cloned())
            .filter(|d| !d.is_empty())
            .ok_or_else(|| anyhow!("probe query returned no documents"))
    };
    let middle = documents(&probe.query(&args.pid, &page(middle_page)).await?)?;
    let later = documents(
        &probe
            .query(&args.pid, &page((total / size * 3 / 4).max(1)))
            .await?,
    )?;
    let field = |doc: &Value, name: &str| -> Result<String> {
        doc[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("document without {name}"))
    };
    let entry_id = field(&middle[0], "document_id")?;
    // From the middle of the process to three quarters: the index has to find the start.
    let date_from = field(&middle[0], "timestamp")?;
    let date_to = field(&later[0], "timestamp")?;
    let cases = [
        ("first page", QueryCase::Page(page(1))),
        ("middle page", QueryCase::Page(page(middle_page))),
        (
            "date-filtered page",
            QueryCase::Page(QueryOptions {
                date_from: Some(date_from),
                date_to: Some(date_to),
                ..page(1)
            }),
        ),
        ("entry by id", QueryCase::Entry(entry_id)),
    ];
    for (case, query) in cases {
        let window = Arc::new(Window::after(args.warmup, args.duration));
        let sampler = sample_server(&target, window.start, Some(window.end));
        let tasks: Vec<_> = clients
            .drain(..)
            .map(|mut client| {
                let (window, query, pid) = (window.clone(), query.clone(), args.pid.clone());
                tokio::spawn(async move {
                    let mut tally = Tally::new();
                    while Instant::now() < window.end {
                        let sent = Instant::now();
                        let result = match &query {
                            QueryCase::Page(options) => client.query(&pid, options).await,
                            QueryCase::Entry(id) => client.get(&pid, id).await,
                        };
                        let done = Instant::now();
                        if !window.contains(sent, done) {
                            continue;
                        }
                        match result {
                            Ok(reply) => match check_reply(&reply, "ids:ResultMessage") {
                                Ok(()) => tally.record(done - sent),
                                Err(kind) => tally.error(kind),
                            },
                            Err(e) => {
                                tally.error(error_kind(&e));
                                // A broken connection ends this client's part of the case.
                                return (tally, None);
                            }
                        }
                    }
                    (tally, Some(client))
                })
            })
            .collect();
        let mut tally = Tally::new();
        for task in tasks {
            let (part, client) = task.await?;
            tally.merge(part);
            clients.extend(client);
        }
        if clients.is_empty() {
            bail!("every query connection broke during {case}");
        }
        let cpu = cpu_between(sampler.await?);
        let label = args.common.label.clone().unwrap_or_else(|| {
            format!("query {} entries c={} size={size}", total, args.connections)
        });
        let mut result = report(
            &format!("{label}: {case}"),
            "query",
            &target,
            &tally,
            window.end - window.start,
            cpu,
        );
        result["case"] = json!(case);
        result["entries"] = json!(total);
        result["page_size"] = json!(size);
        print_result(&result, args.common.json);
    }
    for client in clients {
        client.close().await;
    }
    Arc::try_unwrap(target)
        .map_err(|_| anyhow!("target still shared"))?
        .close()
        .await;
    Ok(())
}

async fn run_handshake(args: HandshakeArgs) -> Result<()> {
    let mut target = Target::open(&args.common, &[]).await?;
    // Every handshake a full one: no TLS session resumption.
    let mut tls = (*target.config.tls).clone();
    tls.resumption = rustls::client::Resumption::disabled();
    target.config.tls = Arc::new(tls);
    let target = Arc::new(target);
    let window = Arc::new(Window::after(args.warmup, args.duration));
    let sampler = sample_server(&target, window.start, Some(window.end));
    let tasks: Vec<_> = (0..args.connections.max(1))
        .map(|_| {
            let (target, window) = (target.clone(), window.clone());
            tokio::spawn(async move {
                let mut tally = Tally::new();
                while Instant::now() < window.end {
                    let started = Instant::now();
                    let result = target.connect().await;
                    let done = Instant::now();
                    let counted = window.contains(started, done);
                    match result {
                        Ok(connection) => {
                            if counted {
                                tally.record(done - started);
                            }
                            connection.close().await;
                        }
                        Err(e) => {
                            if counted {
                                tally.error(client_error_kind(&e));
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::new();
    for task in tasks {
        tally.merge(task.await?);
    }
    let cpu = cpu_between(sampler.await?);
    let label = args
        .common
        .label
        .clone()
        .unwrap_or_else(|| format!("handshake c={}", args.connections));
    let mut result = report(
        &label,
        "handshake",
        &target,
        &tally,
        window.end - window.start,
        cpu,
    );
    result["connections"] = json!(args.connections);
    print_result(&result, args.common.json);
    Arc::try_unwrap(target)
        .map_err(|_| anyhow!("target still shared"))?
        .close()
        .await;
    Ok(())
}

async fn run_idle(args: IdleArgs) -> Result<()> {
    // Each connection costs the load generator one descriptor and the server another.
    if let Some(limit) = open_files_limit() {
        if (args.connections as u64) + 256 > limit {
            bail!(
                "{} connections need more than the open-files limit of {limit}: raise it with \
                 `ulimit -n` (scripts/bench does)",
                args.connections
            );
        }
    }
    let server_args = [
        "--max-connections".to_owned(),
        (args.connections + 64).to_string(),
    ];
    let target = Arc::new(Target::open(&args.common, &server_args).await?);
    let token = Arc::new(FixedToken(Bytes::from(realistic_dat(
        args.common.token_bytes,
    ))));
    // A few connections first, so that what every server allocates once is in the baseline.
    let warm = connect_many(&target, &token, 8, 8).await?;
    for client in warm {
        client.close().await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = target.server_rss_kib();
    let own_before = vm_rss_kib("self");
    let started = Instant::now();
    let semaphore = Arc::new(Semaphore::new(args.open_concurrency.max(1)));
    let opened: Vec<_> = (0..args.connections)
        .map(|_| {
            let (target, semaphore) = (target.clone(), semaphore.clone());
            tokio::spawn(async move {
                let _permit = semaphore.acquire().await;
                let started = Instant::now();
                let result = target.connect().await;
                (result, started.elapsed())
            })
        })
        .collect();
    let mut connections = Vec::with_capacity(args.connections);
    let mut tally = Tally::new();
    for task in opened {
        match task.await? {
            (Ok(connection), elapsed) => {
                tally.record(elapsed);
                connections.push(connection);
            }
            (Err(e), _) => tally.error(client_error_kind(&e)),
        }
    }
    let opening = started.elapsed();
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let after = target.server_rss_kib();
    let own_after = vm_rss_kib("self");
    let established = connections.len();
    let per_connection = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) if established > 0 => {
            Some(a.saturating_sub(b) as f64 / established as f64)
        }
        _ => None,
    };
    let label = args
        .common
        .label
        .clone()
        .unwrap_or_else(|| format!("idle c={}", args.connections));
    let mut result = report(&label, "idle", &target, &tally, opening, None);
    result["connections"] = json!(args.connections);
    result["established"] = json!(established);
    result["server_rss_kib_before"] = json!(before);
    result["server_rss_kib_after"] = json!(after);
    result["server_rss_kib_per_connection"] = json!(per_connection(before, after));
    result["client_rss_kib_per_connection"] = json!(per_connection(own_before, own_after));
    print_result(&result, args.common.json);
    // Closing ten thousand connections one by one takes long; the server's shutdown closes
    // them from its side, and our end goes with this process.
    drop(connections);
    Arc::try_unwrap(target)
        .map_err(|_| anyhow!("target still shared"))?
        .close()
        .await;
    Ok(())
}

// ---- hostile peers ---------------------------------------------------------------------------

/// What the hostile connections did, counted as they go: a run that ends early (or aborts the
/// tasks at its end) keeps every count.
#[derive(Default)]
struct HostileTally {
    established: AtomicU64,
    queries_acked: AtomicU64,
    /// Bytes of server frames too large to be anything but replies, read and thrown away.
    reply_bytes_skipped: AtomicU64,
    /// Small IdscpData from the server: rejections, where the pipeline expects pages.
    small_data_frames: AtomicU64,
    partial_frame_bytes_sent: AtomicU64,
    /// Why hostile connections ended (or failed to open) before the run did.
    ended: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl HostileTally {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn ended(&self, why: String) {
        let mut ended = self
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *ended.entry(why).or_default() += 1;
    }

    fn to_json(&self) -> Value {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let ended = self
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        json!({
            "established": get(&self.established),
            "queries_acked": get(&self.queries_acked),
            "reply_bytes_skipped": get(&self.reply_bytes_skipped),
            "small_data_frames": get(&self.small_data_frames),
            "partial_frame_bytes_sent": get(&self.partial_frame_bytes_sent),
            "ended": ended,
        })
    }
}

type RawReader = tokio::io::ReadHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
type RawWriter = tokio::io::WriteHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Server frames larger than this can only be replies, which a hostile peer never looks at: they
/// are read past unparsed, so that the load generator does not hold them.
const SKIP_FRAMES_OVER: usize = 64 * 1024;

/// A hostile peer waits this long for the ACK of its data before it sends the data again, as
/// the server's default `ack_timeout` does.
const HOSTILE_ACK_WAIT: Duration = Duration::from_millis(200);

enum Frame {
    Message(clearinghouse::idscp2::proto::idscp_message::Message),
    Skipped(usize),
}

async fn write_frame(
    writer: &mut RawWriter,
    message: clearinghouse::idscp2::proto::idscp_message::Message,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut frame = bytes::BytesMut::new();
    IdscpCodec::new(DEFAULT_MAX_FRAME)
        .encode(message, &mut frame)
        .map_err(std::io::Error::other)?;
    writer.write_all(&frame).await?;
    writer.flush().await
}

async fn next_frame(reader: &mut RawReader) -> std::io::Result<Frame> {
    use tokio::io::AsyncReadExt as _;
    let length = reader.read_u32().await? as usize;
    if length > SKIP_FRAMES_OVER {
        let skipped = tokio::io::copy(
            &mut (&mut *reader).take(length as u64),
            &mut tokio::io::sink(),
        )
        .await?;
        if skipped < length as u64 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        return Ok(Frame::Skipped(length));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    decode_message(Bytes::from(body))
        .map(Frame::Message)
        .map_err(std::io::Error::other)
}

/// TLS and the IDSCP2 handshake by hand (Dummy2 both ways, so established once Hellos cross).
async fn raw_connect(target: &Target) -> Result<(RawReader, RawWriter), String> {
    use clearinghouse::idscp2::proto::idscp_message::Message;
    use clearinghouse::idscp2::proto::{IdscpDat, IdscpHello};
    let tcp = tokio::net::TcpStream::connect(&target.addr)
        .await
        .map_err(|e| format!("connect: {:?}", e.kind()))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(target.server_name.clone())
        .map_err(|_| "bad server name".to_owned())?;
    let tls = tokio_rustls::TlsConnector::from(target.config.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|_| "tls".to_owned())?;
    let (mut reader, mut writer) = tokio::io::split(tls);
    let token = target
        .config
        .endpoint
        .dat_issuer
        .token()
        .await
        .map_err(|e| format!("own DAT: {e}"))?;
    let hello = Message::IdscpHello(IdscpHello {
        version: 2,
        dynamic_attribute_token: Some(IdscpDat { token }),
        supported_ra_suite: vec![DUMMY2.to_owned()],
        expected_ra_suite: vec![DUMMY2.to_owned()],
    });
    write_frame(&mut writer, hello)
        .await
        .map_err(|e| format!("write: {:?}", e.kind()))?;
    loop {
        match next_frame(&mut reader).await {
            Ok(Frame::Message(Message::IdscpHello(_))) => return Ok((reader, writer)),
            Ok(Frame::Message(Message::IdscpClose(close))) => {
                return Err(format!(
                    "handshake closed: {}",
                    close_cause(close.cause_code)
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(format!("handshake read: {:?}", e.kind())),
        }
    }
}

fn close_cause(code: i32) -> &'static str {
    clearinghouse::idscp2::proto::idscp_close::CloseCause::try_from(code)
        .map_or("unknown cause", |cause| cause.as_str_name())
}

/// Reads the server's frames until the connection ends, passing on the bits of its ACKs; returns
/// why it ended.
async fn read_server_frames(
    mut reader: RawReader,
    acks: tokio::sync::mpsc::Sender<bool>,
    tally: &HostileTally,
) -> String {
    use clearinghouse::idscp2::proto::idscp_message::Message;
    loop {
        match next_frame(&mut reader).await {
            Ok(Frame::Skipped(length)) => {
                HostileTally::add(&tally.reply_bytes_skipped, length as u64)
            }
            Ok(Frame::Message(Message::IdscpAck(ack))) => {
                // Nobody waits for ACKs once the writer is done, or for a flood's at all.
                let _ = acks.try_send(ack.alternating_bit);
            }
            Ok(Frame::Message(Message::IdscpData(_))) => {
                HostileTally::add(&tally.small_data_frames, 1)
            }
            Ok(Frame::Message(Message::IdscpClose(close))) => {
                return format!("closed by the server: {}", close_cause(close.cause_code))
            }
            Ok(Frame::Message(_)) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return "the server closed the stream".to_owned()
            }
            Err(e) => return format!("read: {:?}", e.kind()),
        }
    }
}

/// Sends `query` up to `queries` times, each after the previous one was ACKed (resending it
/// until it is), and never ACKs anything.
async fn send_queries(
    writer: &mut RawWriter,
    query: Bytes,
    queries: usize,
    acks: &mut tokio::sync::mpsc::Receiver<bool>,
    tally: &HostileTally,
) -> Result<(), String> {
    use clearinghouse::idscp2::proto::idscp_message::Message;
    let mut bit = false;
    for _ in 0..queries {
        let data = Message::IdscpData(IdscpData {
            data: query.clone(),
            alternating_bit: bit,
        });
        'acked: loop {
            write_frame(writer, data.clone())
                .await
                .map_err(|e| format!("write: {:?}", e.kind()))?;
            let resend_at = tokio::time::Instant::now() + HOSTILE_ACK_WAIT;
            loop {
                match tokio::time::timeout_at(resend_at, acks.recv()).await {
                    Ok(Some(acked)) if acked == bit => break 'acked,
                    // The ACK of a resend of the previous message.
                    Ok(Some(_)) => {}
                    Ok(None) => return Err("reader ended".to_owned()),
                    Err(_) => break,
                }
            }
        }
        HostileTally::add(&tally.queries_acked, 1);
        bit = !bit;
    }
    Ok(())
}

/// What a hostile connection does once established.
#[derive(Clone)]
enum Hostility {
    /// The no-ACK pipeline: `queries` times the encoded QueryMessage `query`.
    Pipeline { query: Bytes, queries: usize },
    /// The partial-frame flood: a prefix announcing `length` bytes, then `sent` of them.
    Flood { length: u32, sent: usize },
}

/// One hostile connection, until the server closes it or the run aborts the task.
async fn hostile_peer(
    target: Arc<Target>,
    hostility: Hostility,
    opening: Arc<Semaphore>,
    tally: Arc<HostileTally>,
) {
    let connected = {
        let _permit = opening.acquire().await;
        tokio::time::timeout(Duration::from_secs(30), raw_connect(&target)).await
    };
    let (reader, mut writer) = match connected {
        Ok(Ok(halves)) => halves,
        Ok(Err(why)) => return tally.ended(why),
        Err(_) => return tally.ended("handshake timeout".to_owned()),
    };
    HostileTally::add(&tally.established, 1);
    let (acks_in, mut acks) = tokio::sync::mpsc::channel(16);
    let reading = read_server_frames(reader, acks_in, &tally);
    tokio::pin!(reading);
    let sending = async {
        match hostility {
            Hostility::Pipeline { query, queries } => {
                send_queries(&mut writer, query, queries, &mut acks, &tally).await
            }
            Hostility::Flood { length, sent } => {
                send_partial_frame(&mut writer, length, sent, &tally).await
            }
        }
    };
    let ended = tokio::select! {
        ended = &mut reading => ended,
        sent = sending => match sent {
            // All is sent: keep reading (and never ACKing) until the end.
            Ok(()) => reading.await,
            Err(why) => why,
        },
    };
    tally.ended(ended);
}

async fn send_partial_frame(
    writer: &mut RawWriter,
    length: u32,
    sent: usize,
    tally: &HostileTally,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt as _;
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let write_failed = |e: std::io::Error| format!("write: {:?}", e.kind());
    writer
        .write_all(&length.to_be_bytes())
        .await
        .map_err(write_failed)?;
    let mut left = sent;
    while left > 0 {
        let chunk = left.min(ZEROS.len());
        writer
            .write_all(&ZEROS[..chunk])
            .await
            .map_err(write_failed)?;
        HostileTally::add(&tally.partial_frame_bytes_sent, chunk as u64);
        left -= chunk;
    }
    writer.flush().await.map_err(write_failed)
}

/// The encoded AppLayerMessage of a QueryMessage for the first page of `size` entries of `pid`.
fn query_message(pid: &str, size: usize, token: &FixedToken) -> Bytes {
    use clearinghouse::idscp2::proto::app::{
        app_layer_message, AppLayerMessage, HeaderEntry, IdsMessage,
    };
    use prost::Message as _;
    let header = |name: &str, value: String| HeaderEntry {
        name: name.to_owned(),
        value,
    };
    let message = IdsMessage {
        header: bench_header(MessageType::Query, std::str::from_utf8(&token.0).ok()),
        payload: Bytes::new(),
        extra_headers: vec![
            header("ch-ids-pid", pid.to_owned()),
            header("ch-ids-page", "1".to_owned()),
            header("ch-ids-size", size.to_string()),
        ],
    };
    Bytes::from(
        AppLayerMessage {
            message: Some(app_layer_message::Message::IdsMessage(message)),
        }
        .encode_to_vec(),
    )
}

/// Server RSS every 100 ms: the peak, and `over` fires once it passes `limit_kib`.
fn watch_server_rss(
    target: &Target,
    limit_kib: u64,
    over: tokio::sync::oneshot::Sender<u64>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<Option<u64>> {
    let pid = target.server_pid;
    tokio::spawn(async move {
        let pid = pid?.to_string();
        let mut peak = 0;
        let mut over = Some(over);
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = &mut stop => return Some(peak),
            }
            let Some(rss) = vm_rss_kib(&pid) else {
                return Some(peak);
            };
            peak = peak.max(rss);
            if rss > limit_kib {
                if let Some(over) = over.take() {
                    let _ = over.send(rss);
                }
            }
        }
    })
}

async fn run_hostile(args: HostileArgs) -> Result<()> {
    if args.pipeline + args.flood == 0 {
        bail!("nothing hostile to run: give --pipeline and/or --flood");
    }
    if args.flood > 0 && args.frame_sent >= args.frame_length as usize {
        bail!("--frame-sent must be below --frame-length, or the frame is complete");
    }
    let max_connections = args
        .max_connections
        .unwrap_or(args.pipeline + args.flood + args.good + 1);
    let server_args = ["--max-connections".to_owned(), max_connections.to_string()];
    let target = Arc::new(Target::open(&args.common, &server_args).await?);
    if target.server_pid.is_none() {
        eprintln!("hostile: no --server-pid, so server memory is not read and --rss-limit-mib not enforced");
    }
    let token = Arc::new(FixedToken(Bytes::from(realistic_dat(
        args.common.token_bytes,
    ))));
    let mut clients = connect_many(&target, &token, args.good.max(1), 64).await?;
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let good_pid = format!("hostile-good-{run_id}");
    let big_pid = format!("hostile-big-{run_id}");
    let setup = &mut clients[0];
    for pid in [&good_pid, &big_pid] {
        check_reply(
            &setup.create(pid, &[]).await?,
            "ids:MessageProcessedNotificationMessage",
        )
        .map_err(|e| anyhow!("creating {pid}: {e}"))?;
    }
    if args.pipeline > 0 {
        let big = payload_of(args.entry_bytes);
        for _ in 0..args.entries {
            let reply = setup
                .log(&big_pid, big.clone(), Some("application/json"))
                .await?;
            check_reply(&reply, "ids:MessageProcessedNotificationMessage")
                .map_err(|e| anyhow!("logging the entries the pipeline queries: {e}"))?;
        }
    }
    let query = query_message(&big_pid, args.entries, &token);

    // Good connections: measured alone, then from the moment the hostile ones start.
    let baseline = Window::after(1.0, args.baseline);
    let attack = Window {
        start: baseline.end,
        end: baseline.end + Duration::from_secs_f64(args.duration),
    };
    let windows = Arc::new((baseline, attack));
    let payload = payload_of(256);
    let good: Vec<_> = clients
        .into_iter()
        .take(args.good)
        .map(|mut client| {
            let (windows, pid, payload) = (windows.clone(), good_pid.clone(), payload.clone());
            tokio::spawn(async move {
                let (baseline, attack) = &*windows;
                let (mut alone, mut beside) = (Tally::new(), Tally::new());
                while Instant::now() < attack.end {
                    let sent = Instant::now();
                    let result = client
                        .log(&pid, payload.clone(), Some("application/json"))
                        .await;
                    let done = Instant::now();
                    let tally = if baseline.contains(sent, done) {
                        &mut alone
                    } else if attack.contains(sent, done) {
                        &mut beside
                    } else {
                        continue;
                    };
                    match result {
                        Ok(reply) => {
                            match check_reply(&reply, "ids:MessageProcessedNotificationMessage") {
                                Ok(()) => tally.record(done - sent),
                                Err(kind) => tally.error(kind),
                            }
                        }
                        Err(e) => {
                            // A broken connection ends this client's part of the run.
                            tally.error(error_kind(&e));
                            return (alone, beside);
                        }
                    }
                }
                client.close().await;
                (alone, beside)
            })
        })
        .collect();

    tokio::time::sleep_until(windows.1.start.into()).await;
    let rss_before = target.server_rss_kib();
    let sampler = sample_server(&target, windows.1.start, Some(windows.1.end));
    let (over_tx, over) = tokio::sync::oneshot::channel();
    let (stop_watch, stop) = tokio::sync::oneshot::channel();
    let watcher = watch_server_rss(&target, args.rss_limit_mib * 1024, over_tx, stop);
    let tally = Arc::new(HostileTally::default());
    let opening = Arc::new(Semaphore::new(args.open_concurrency.max(1)));
    let mut hostile = tokio::task::JoinSet::new();
    let pipeline = Hostility::Pipeline {
        query,
        queries: args.queries,
    };
    let flood = Hostility::Flood {
        length: args.frame_length,
        sent: args.frame_sent,
    };
    let peers =
        std::iter::repeat_n(pipeline, args.pipeline).chain(std::iter::repeat_n(flood, args.flood));
    for hostility in peers {
        hostile.spawn(hostile_peer(
            target.clone(),
            hostility,
            opening.clone(),
            tally.clone(),
        ));
    }
    let aborted = tokio::select! {
        _ = tokio::time::sleep_until(windows.1.end.into()) => None,
        Ok(rss) = over => Some(rss),
    };
    if let Some(rss) = aborted {
        eprintln!(
            "hostile: server RSS {} MiB passed --rss-limit-mib {}: dropping the hostile connections",
            rss / 1024,
            args.rss_limit_mib
        );
    }
    hostile.shutdown().await;
    let _ = stop_watch.send(());
    let peak = watcher.await?;
    let (mut alone, mut beside) = (Tally::new(), Tally::new());
    for task in good {
        let (a, b) = task.await?;
        alone.merge(a);
        beside.merge(b);
    }
    let cpu = cpu_between(sampler.await?);
    // What the server gives back once the hostile peers are gone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = target.server_rss_kib();

    let label = args.common.label.clone().unwrap_or_else(|| {
        format!(
            "hostile pipeline={}x{} flood={} good={}",
            args.pipeline, args.queries, args.flood, args.good
        )
    });
    let (baseline, attack) = &*windows;
    let alone = report(
        &format!("{label}: good connections alone"),
        "hostile",
        &target,
        &alone,
        baseline.end - baseline.start,
        None,
    );
    let mut result = report(
        &label,
        "hostile",
        &target,
        &beside,
        attack.end - attack.start,
        cpu,
    );
    result["good_connections"] = json!(args.good);
    result["baseline_per_second"] = alone["per_second"].clone();
    result["baseline_latency_ms"] = alone["latency_ms"].clone();
    result["baseline_errors"] = alone["errors"].clone();
    result["max_connections"] = json!(max_connections);
    result["server_rss_kib_before"] = json!(rss_before);
    result["server_rss_kib_peak"] = json!(peak);
    result["server_rss_kib_after_close"] = json!(rss_after);
    result["rss_limit_kib"] = json!(args.rss_limit_mib * 1024);
    result["aborted_at_rss_kib"] = json!(aborted);
    result["pipeline"] = json!({
        "connections": args.pipeline,
        "queries": args.queries,
        "entries": args.entries,
        "entry_bytes": args.entry_bytes,
    });
    result["flood"] = json!({
        "connections": args.flood,
        "frame_length": args.frame_length,
        "frame_sent": args.frame_sent,
    });
    result["hostile"] = tally.to_json();
    print_result(&result, args.common.json);
    if !args.common.json {
        let mib = |kib: &Value| {
            kib.as_u64()
                .map_or("-".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0))
        };
        println!(
            "  good connections alone: {} /s, p99 {} ms",
            alone["per_second"]
                .as_f64()
                .map_or("-".to_owned(), |v| format!("{v:.0}")),
            alone["latency_ms"]["p99"]
                .as_f64()
                .map_or("-".to_owned(), |v| format!("{v:.3}"))
        );
        println!(
            "  server RSS MiB: before {}  peak {}  1 s after the hostile peers left {}{}",
            mib(&result["server_rss_kib_before"]),
            mib(&result["server_rss_kib_peak"]),
            mib(&result["server_rss_kib_after_close"]),
            aborted.map_or(String::new(), |rss| format!(
                "  (ABORTED at {} MiB)",
                rss / 1024
            ))
        );
        println!("  hostile: {}", result["hostile"]);
    }
    Arc::try_unwrap(target)
        .map_err(|_| anyhow!("target still shared"))?
        .close()
        .await;
    Ok(())
}

/// Logs on every client until `window` ends, counting what falls inside it; hands the clients back.
/// Client `c` goes round `pids` starting at `pids[c]`.
async fn log_until(
    clients: Vec<ClearingHouseClient>,
    pids: &[String],
    payload: &Bytes,
    window: &Arc<Window>,
) -> Result<(Vec<ClearingHouseClient>, Tally)> {
    let pids: Arc<[String]> = pids.into();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| {
            let (pids, payload, window) = (pids.clone(), payload.clone(), window.clone());
            tokio::spawn(async move {
                let mut tally = Tally::new();
                let mut next = c;
                while Instant::now() < window.end {
                    let pid = &pids[next % pids.len()];
                    next += 1;
                    let started = Instant::now();
                    let reply = client.log(pid, payload.clone(), None).await;
                    let done = Instant::now();
                    if !window.contains(started, done) {
                        continue;
                    }
                    match reply {
                        Ok(reply) => {
                            match check_reply(&reply, "ids:MessageProcessedNotificationMessage") {
                                Ok(()) => tally.record(done - started),
                                Err(kind) => tally.error(kind),
                            }
                        }
                        Err(e) => return Err(anyhow!("the connection broke: {}", error_kind(&e))),
                    }
                }
                Ok((client, tally))
            })
        })
        .collect();
    let mut clients = Vec::new();
    let mut tally = Tally::new();
    for task in tasks {
        let (client, one) = task.await??;
        clients.push(client);
        tally.merge(one);
    }
    Ok((clients, tally))
}

async fn run_scaleout(args: ScaleoutArgs) -> Result<()> {
    if args.connections == 0 || args.processes == 0 {
        bail!("--connections and --processes must be at least 1");
    }
    let uri =
        std::env::var("CH_BENCH_MONGODB_URI").context("scaleout needs CH_BENCH_MONGODB_URI")?;
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let database = format!("scaleout_{run_id}");
    // Both instances share one development PKI, so that one identity owns every process.
    let temp = tempfile::Builder::new().prefix("ch-bench-").tempdir()?;
    let mut common = args.common.clone();
    common.store = StoreKind::Mongodb;
    common.dir = Some(temp.path().to_path_buf());
    let server_args = [
        "--database".to_owned(),
        database.clone(),
        "--store-metrics".to_owned(),
    ];
    let mut instances = Vec::new();
    for _ in 0..2 {
        instances.push(Arc::new(Target::open(&common, &server_args).await?));
    }
    let token = Arc::new(FixedToken(Bytes::from(realistic_dat(common.token_bytes))));
    let pids: Vec<String> = (0..args.processes)
        .map(|k| format!("bench-{run_id}-{k}"))
        .collect();
    let mut clients = Vec::new();
    for instance in &instances {
        clients.push(connect_many(instance, &token, args.connections, 64).await?);
    }
    for pid in &pids {
        let reply = clients[0][0].create(pid, &[]).await?;
        check_reply(&reply, "ids:MessageProcessedNotificationMessage")
            .map_err(|e| anyhow!("creating {pid}: {e}"))?;
    }
    let payload = payload_of(args.payload);
    let window = Arc::new(Window::after(args.warmup, args.duration));
    let samplers: Vec<_> = instances
        .iter()
        .map(|instance| sample_server(instance, window.start, Some(window.end)))
        .collect();
    let loads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(instance, clients)| {
            let pids: Vec<String> = if args.own_processes {
                pids.iter().skip(instance).step_by(2).cloned().collect()
            } else {
                pids.clone()
            };
            let (payload, window) = (payload.clone(), window.clone());
            tokio::spawn(async move { log_until(clients, &pids, &payload, &window).await })
        })
        .collect();
    let mut tally = Tally::new();
    let mut per_instance = Vec::new();
    for load in loads {
        let (clients, one) = load.await??;
        per_instance.push(one.latency.len() as f64 / args.duration);
        tally.merge(one);
        for client in clients {
            client.close().await;
        }
    }
    let mut cpu = Some(Duration::ZERO);
    for sampler in samplers {
        cpu = cpu.zip(cpu_between(sampler.await?)).map(|(a, b)| a + b);
    }
    // The store's counters, summed over both instances, as the servers print them on shutdown.
    // A counter nothing incremented is not rendered at all: it starts at 0 here.
    let mut counters: BTreeMap<String, f64> = [
        "clearinghouse_store_sequence_conflicts_total",
        "clearinghouse_store_appends_retried_total",
    ]
    .into_iter()
    .map(|name| (name.to_owned(), 0.0))
    .collect();
    let store_kind = instances[0].store.clone();
    for instance in instances {
        let instance = Arc::try_unwrap(instance).map_err(|_| anyhow!("target still shared"))?;
        for (name, value) in printed_metrics(&instance.close().await) {
            *counters.entry(name).or_default() += value;
        }
    }
    // Every chain, read back through a third store handle on the same database.
    let store = MongoStore::connect(MongoConfig::new(uri.clone(), database.clone())).await?;
    let mut entries = 0;
    for pid in &pids {
        let verified = clearinghouse::audit::verify_store(&store, pid)
            .await
            .with_context(|| format!("the chain of {pid} does not verify"))?;
        entries += verified.head.sequence;
    }
    drop(store);
    mongodb::Client::with_uri_str(&uri)
        .await?
        .database(&database)
        .drop()
        .await?;

    let measured = window.end - window.start;
    let label = args.common.label.clone().unwrap_or_else(|| {
        format!(
            "scaleout 2 instances x c={} p={}{}",
            args.connections,
            args.processes,
            if args.own_processes {
                " own processes"
            } else {
                " shared"
            }
        )
    });
    let mut result = json!({
        "name": label,
        "scenario": "scaleout",
        "store": store_kind,
        "completed": tally.latency.len(),
        "seconds": measured.as_secs_f64(),
        "per_second": tally.latency.len() as f64 / measured.as_secs_f64(),
        "per_second_per_instance": per_instance,
        "errors": tally.errors,
        "server_cpu_seconds": cpu.map(|c| c.as_secs_f64()),
        "server_cpu_us_per_op": cpu
            .filter(|_| !tally.latency.is_empty())
            .map(|c| c.as_secs_f64() * 1e6 / tally.latency.len() as f64),
        "store_counters": counters,
        "chains_verified": pids.len(),
        "entries_verified": entries,
    });
    if !tally.latency.is_empty() {
        let ms = |micros: u64| micros as f64 / 1000.0;
        result["latency_ms"] = json!({
            "p50": ms(tally.latency.value_at_quantile(0.50)),
            "p95": ms(tally.latency.value_at_quantile(0.95)),
            "p99": ms(tally.latency.value_at_quantile(0.99)),
            "max": ms(tally.latency.max()),
            "mean": tally.latency.mean() / 1000.0,
        });
    }
    print_result(&result, args.common.json);
    if !args.common.json {
        println!("  per instance: {per_instance:.0?} /s");
        println!("  store counters (both instances): {counters:?}");
        println!("  chains verified: {} ({entries} entries)", pids.len());
    }
    Ok(())
}

async fn run_throttled(args: ThrottledArgs) -> Result<()> {
    if args.common.server.is_some() {
        bail!("throttled needs the spawned server, which it configures with --throttle-rps");
    }
    let mut common = args.common.clone();
    let temp = tempfile::Builder::new().prefix("ch-bench-").tempdir()?;
    let dir = common
        .dir
        .get_or_insert_with(|| temp.path().to_path_buf())
        .clone();
    let target = Arc::new(
        Target::open(
            &common,
            &["--throttle-rps".to_owned(), args.throttle_rps.to_string()],
        )
        .await?,
    );
    let token = Arc::new(FixedToken(Bytes::from(realistic_dat(common.token_bytes))));
    let pki = DevPki { dir };
    let hostile_identity = TlsIdentity::from_pem_files(
        &pki.client_cert(THROTTLED_CLIENT),
        &pki.client_key(THROTTLED_CLIENT),
    )?;
    let hostile_config = ClientConfig {
        tls: tls::client_config(&hostile_identity, &tls::load_ca_file(&pki.ca_cert())?)?,
        endpoint: dev_endpoint()?,
    };
    let mut hostile = Vec::new();
    for _ in 0..args.hostile_connections {
        let connection =
            client::connect(&target.addr, &target.server_name, &hostile_config).await?;
        hostile.push(client_of(connection, &token));
    }
    let clients = connect_many(&target, &token, args.connections, 64).await?;
    let pid = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let payload = payload_of(args.payload);

    // Phase 1: the well-behaved connector alone.
    let window = Arc::new(Window::after(args.warmup, args.duration));
    let sampler = sample_server(&target, window.start, Some(window.end));
    let (clients, alone) =
        log_until(clients, std::slice::from_ref(&pid), &payload, &window).await?;
    let alone_cpu = cpu_between(sampler.await?);

    // Phase 2: the same, while connector-b sends as fast as it is answered.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let hammers: Vec<_> = hostile
        .into_iter()
        .map(|mut client| {
            let (stop, accepted, throttled, payload) = (
                stop.clone(),
                accepted.clone(),
                throttled.clone(),
                payload.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.log("hostile", payload.clone(), None).await {
                        Ok(reply) if reply.is_rejection() => {
                            throttled.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => break,
                    }
                }
                client.close().await;
            })
        })
        .collect();
    let window = Arc::new(Window::after(args.warmup, args.duration));
    let sampler = sample_server(&target, window.start, Some(window.end));
    let counts_at_start = {
        tokio::time::sleep_until(window.start.into()).await;
        (
            accepted.load(Ordering::Relaxed),
            throttled.load(Ordering::Relaxed),
        )
    };
    let (clients, beside) =
        log_until(clients, std::slice::from_ref(&pid), &payload, &window).await?;
    let counts_at_end = (
        accepted.load(Ordering::Relaxed),
        throttled.load(Ordering::Relaxed),
    );
    let beside_cpu = cpu_between(sampler.await?);
    stop.store(true, Ordering::Relaxed);
    for hammer in hammers {
        hammer.await?;
    }
    for client in clients {
        client.close().await;
    }

    let measured = window.end - window.start;
    let label = args.common.label.clone().unwrap_or_else(|| {
        format!(
            "throttled c={} h={} rps={}",
            args.connections, args.hostile_connections, args.throttle_rps
        )
    });
    let mut result = report(
        &format!("{label}: alone"),
        "throttled",
        &target,
        &alone,
        measured,
        alone_cpu,
    );
    result["connections"] = json!(args.connections);
    print_result(&result, args.common.json);
    let mut result = report(
        &format!("{label}: beside a throttled connector"),
        "throttled",
        &target,
        &beside,
        measured,
        beside_cpu,
    );
    let seconds = measured.as_secs_f64();
    result["connections"] = json!(args.connections);
    result["hostile_accepted_per_second"] =
        json!((counts_at_end.0 - counts_at_start.0) as f64 / seconds);
    result["hostile_rejected_per_second"] =
        json!((counts_at_end.1 - counts_at_start.1) as f64 / seconds);
    print_result(&result, args.common.json);
    if !args.common.json {
        println!(
            "  hostile connector: {:.1} accepted/s, {:.0} rejected/s",
            result["hostile_accepted_per_second"]
                .as_f64()
                .unwrap_or_default(),
            result["hostile_rejected_per_second"]
                .as_f64()
                .unwrap_or_default()
        );
    }
    Arc::try_unwrap(target)
        .map_err(|_| anyhow!("target still shared"))?
        .close()
        .await;
    Ok(())
}

// ---- /proc -----------------------------------------------------------------------------------

/// utime + stime of a process (all its threads), from /proc/<pid>/stat.
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

fn vm_rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3)?.parse().ok())
}

// ---- summarize -------------------------------------------------------------------------------

/// The figures summarize takes the median of, with their column titles.
const FIGURES: [(&str, &[&str]); 18] = [
    ("per s", &["per_second"]),
    ("p50 ms", &["latency_ms", "p50"]),
    ("p95 ms", &["latency_ms", "p95"]),
    ("p99 ms", &["latency_ms", "p99"]),
    ("max ms", &["latency_ms", "max"]),
    ("mean ms", &["latency_ms", "mean"]),
    ("Little ms", &["littles_law_mean_ms"]),
    ("signing limit /s", &["signing_limit_per_s"]),
    ("% of limit", &["signing_limit_percent"]),
    ("signer limit /s", &["signer_limit_per_s"]),
    ("% of signer", &["signer_limit_percent"]),
    ("srv CPU µs/op", &["server_cpu_us_per_op"]),
    ("writes/commit", &["writes_per_commit"]),
    ("client CPU µs/op", &["client_cpu_us_per_op"]),
    ("srv KiB/conn", &["server_rss_kib_per_connection"]),
    (
        "seq. conflicts",
        &[
            "store_counters",
            "clearinghouse_store_sequence_conflicts_total",
        ],
    ),
    (
        "appends retried",
        &[
            "store_counters",
            "clearinghouse_store_appends_retried_total",
        ],
    ),
    ("errors", &["error_count"]),
];

fn summarize(files: &[PathBuf], as_json: bool) -> Result<()> {
    let mut runs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut order = Vec::new();
    for file in files {
        let reader = std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| file.display().to_string())?,
        );
        for line in reader.lines() {
            let line = line?;
            let Ok(mut result) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let Some(name) = result["name"].as_str().map(str::to_owned) else {
                continue;
            };
            let errors: u64 = result["errors"]
                .as_object()
                .map(|e| e.values().filter_map(Value::as_u64).sum())
                .unwrap_or(0);
            result["error_count"] = json!(errors);
            if !runs.contains_key(&name) {
                order.push(name.clone());
            }
            runs.entry(name).or_default().push(result);
        }
    }
    if !as_json {
        let titles: Vec<&str> = FIGURES.iter().map(|(title, _)| *title).collect();
        println!("| scenario | runs | {} |", titles.join(" | "));
        println!("|---|---|{}", "---|".repeat(titles.len()));
    }
    for name in order {
        let results = &runs[&name];
        let medians: Vec<Option<f64>> = FIGURES
            .iter()
            .map(|(_, path)| {
                median(
                    results
                        .iter()
                        .filter_map(|r| path.iter().try_fold(r, |v, k| v.get(k))?.as_f64())
                        .collect(),
                )
            })
            .collect();
        if as_json {
            let figures: serde_json::Map<String, Value> = FIGURES
                .iter()
                .zip(&medians)
                .map(|((title, _), m)| ((*title).to_owned(), json!(m)))
                .collect();
            println!(
                "{}",
                json!({"name": name, "runs": results.len(), "median": figures})
            );
        } else {
            let cells: Vec<String> = medians
                .iter()
                .map(|m| match m {
                    None => "-".to_owned(),
                    Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
                    Some(v) => format!("{v:.2}"),
                })
                .collect();
            println!("| {name} | {} | {} |", results.len(), cells.join(" | "));
        }
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

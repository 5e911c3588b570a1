//! Crash durability, on both stores: a receipt means durable, whenever the process dies.
//!
//! The real `clearinghouse serve` takes log messages from several connections on several
//! processes (two connectors share each process, so appends to one chain race) and is killed
//! with SIGKILL at a random moment under that load, then restarted on the same store. After
//! every cycle:
//!
//! - offline, with the project's CLI on the killed store (a copy of the embedded file, or the
//!   MongoDB database itself): `export` each process, `verify chain` it straight from the store,
//!   and `verify receipt --export` the cycle's receipts against the JWKS and the export;
//! - in the test, every receipt of every cycle so far is in the export at its receipted
//!   sequence, with its document id and chain hash, and the sequences run 1, 2, 3, ... without
//!   a gap; no two receipts name one sequence of a process;
//! - through the restarted server, a query of every page shows the same entries (the export is
//!   a prefix of what it serves: a MongoDB write sent just before the kill may still land).
//!
//! An entry the server wrote but never receipted (in flight at the kill) may or may not be
//! there; a receipted one must. The next cycle appends on, so a restart that resumed at a
//! stale head would show up as a sequence receipted twice or as a gap.
//!
//! `CH_CRASH_CYCLES` sets the cycles per store (default [`DEFAULT_CYCLES`], what `scripts/test`
//! runs); `scripts/crash-test` runs many more. The kill moments come from `CH_CRASH_SEED`, or a
//! seed printed at the start, so a failing run can be repeated. The MongoDB variant needs
//! `CH_TEST_MONGODB_URI` (set by `scripts/test`) and is skipped with a note without it, except
//! in CI, where it fails.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clearinghouse::audit::read_export;
use clearinghouse::client::{ClearingHouseClient, QueryOptions};
use clearinghouse::receipt::{Jwks, ReceiptClaims};
use clearinghouse::store::{Entry, Protection};

use crate::support::cli::*;
use crate::support::mongo::{serve_env, TestDatabase};

const DEFAULT_CYCLES: usize = 3;
/// Processes (chains) under load, each shared by two connectors.
const PROCESSES: usize = 3;
/// Logging connections per process.
const CONNECTIONS_PER_PROCESS: usize = 4;
/// The kill lands this long at most after the cycle's first receipt.
const MAX_KILL_DELAY: Duration = Duration::from_millis(400);
/// A cycle whose load yields no receipt within this long is stuck.
const FIRST_RECEIPT_LIMIT: Duration = Duration::from_secs(60);
/// The server's page size limit: the fewest pages to read a process back.
const PAGE_SIZE: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_loses_no_receipted_entry_when_killed() {
    let dir = tempfile::tempdir().unwrap();
    run_cycles(dir.path(), &Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_store_loses_no_receipted_entry_when_killed() {
    let Some(db) = TestDatabase::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    run_cycles(
        dir.path(),
        &Backend::MongoDb {
            uri: db.uri.clone(),
            database: db.name.clone(),
        },
    )
    .await;
    db.drop_database().await;
}

/// The store under test, and how `serve` and the offline CLI reach it.
enum Backend {
    /// `<dir>/data/clearinghouse.redb`, the default path.
    Embedded,
    MongoDb {
        uri: String,
        database: String,
    },
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::MongoDb { .. } => "mongodb",
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        match self {
            Backend::Embedded => Vec::new(),
            Backend::MongoDb { uri, database } => serve_env(uri, database),
        }
    }

    /// The store as the killed server left it, for the offline CLI: the arguments that point
    /// `export` and `verify chain` at it. The embedded file is copied, so that the restarted
    /// server recovers the original itself rather than finding it already opened and repaired.
    fn crashed_store(&self, dir: &Path) -> Vec<String> {
        match self {
            Backend::Embedded => {
                std::fs::copy(
                    dir.join("data/clearinghouse.redb"),
                    dir.join("crashed.redb"),
                )
                .unwrap();
                vec!["--store-path".into(), "crashed.redb".into()]
            }
            Backend::MongoDb { .. } => Vec::new(),
        }
    }
}

/// What a receipt says about its entry, and when it was issued.
#[derive(Debug, Clone)]
struct Receipted {
    document_id: String,
    chain_hash: String,
    cycle: usize,
}

/// Every receipt of the run, by process and sequence.
#[derive(Default)]
struct Ledger {
    entries: BTreeMap<(String, u64), Receipted>,
    /// Receipts that named a sequence another receipt had already named.
    reissued: Vec<String>,
    chains_verified: usize,
}

impl Ledger {
    fn record(&mut self, claims: &ReceiptClaims, cycle: usize) {
        let receipted = Receipted {
            document_id: claims.document_id.clone(),
            chain_hash: claims.chain_hash.clone(),
            cycle,
        };
        let key = (claims.process_id.clone(), claims.sequence);
        if let Some(earlier) = self.entries.insert(key, receipted.clone()) {
            self.reissued.push(format!(
                "process {} sequence {}: receipted in cycle {} for {} and in cycle {} for {}",
                claims.process_id,
                claims.sequence,
                earlier.cycle,
                earlier.document_id,
                cycle,
                receipted.document_id
            ));
        }
    }

    /// Receipted entries of `pid` that `entries` (sequence 1, 2, ... in order) lacks or
    /// describes otherwise.
    fn missing_from(&self, pid: &str, entries: &[(u64, String, String)]) -> Vec<String> {
        let range = (pid.to_owned(), 0)..=(pid.to_owned(), u64::MAX);
        self.entries
            .range(range)
            .filter_map(|((_, sequence), receipted)| {
                let found = usize::try_from(*sequence - 1)
                    .ok()
                    .and_then(|index| entries.get(index));
                match found {
                    Some((_, document_id, chain_hash))
                        if *document_id == receipted.document_id
                            && *chain_hash == receipted.chain_hash =>
                    {
                        None
                    }
                    other => Some(format!(
                        "process {pid} sequence {sequence} (receipted in cycle {}, document {}, \
                         chain hash {}): found {other:?}",
                        receipted.cycle, receipted.document_id, receipted.chain_hash
                    )),
                }
            })
            .collect()
    }
}

/// Kill moments: splitmix64, seeded from `CH_CRASH_SEED` or the clock.
struct KillMoments(u64);

impl KillMoments {
    fn new(store: &str) -> Self {
        let seed = match std::env::var("CH_CRASH_SEED") {
            Ok(seed) => seed.parse().expect("CH_CRASH_SEED is a u64"),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        };
        println!("crash durability ({store} store): CH_CRASH_SEED={seed}");
        KillMoments(seed)
    }

    /// A delay in `0..=limit`.
    fn next(&mut self, limit: Duration) -> Duration {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        limit.mul_f64(z as f64 / u64::MAX as f64)
    }
}

fn cycles() -> usize {
    std::env::var("CH_CRASH_CYCLES")
        .ok()
        .map(|text| text.parse().expect("CH_CRASH_CYCLES is a number"))
        .unwrap_or(DEFAULT_CYCLES)
}

async fn run_cycles(dir: &Path, backend: &Backend) {
    let cycles = cycles();
    let mut moments = KillMoments::new(backend.name());
    let pki = dev_pki(dir);
    let env = backend.env();
    let mut serve = Serve::start(dir, &[], &env);
    let jwks_text = serve.get("/.well-known/jwks.json").1;
    let jwks = Jwks::parse(jwks_text.as_bytes()).unwrap();
    std::fs::write(dir.join("jwks.json"), &jwks_text).unwrap();

    let pids: Vec<String> = (0..PROCESSES).map(|i| format!("crash-{i}")).collect();
    let co_owner = connector_id(&pki, "connector-b");
    let mut creator = library_client(&serve.idscp2, &pki, "connector-a").await;
    for pid in &pids {
        let reply = creator
            .create(pid, std::slice::from_ref(&co_owner))
            .await
            .unwrap();
        assert!(!reply.is_rejection(), "{reply:?}");
    }
    creator.close().await;

    let mut ledger = Ledger::default();
    for cycle in 1..=cycles {
        let delay = moments.next(MAX_KILL_DELAY);
        let receipts = load_and_kill(serve, &pki, &pids, cycle, delay).await;
        let mut by_pid: HashMap<String, Vec<String>> = HashMap::new();
        for receipt in receipts {
            let claims = jwks.verify(&receipt).unwrap();
            ledger.record(&claims, cycle);
            by_pid.entry(claims.process_id).or_default().push(receipt);
        }

        let store_args = backend.crashed_store(dir);
        let mut exported = HashMap::new();
        for pid in &pids {
            let cycle_receipts = by_pid.remove(pid).unwrap_or_default();
            let Some(entries) = export_and_verify_chain(dir, &env, &store_args, pid) else {
                panic!(
                    "{} store, cycle {cycle}, killed {delay:?} after the first receipt: process \
                     {pid}, created before the first cycle, is gone with its {} receipted entries",
                    backend.name(),
                    ledger.missing_from(pid, &[]).len()
                )
            };
            ledger.chains_verified += 1;
            let problems = ledger.missing_from(pid, &entries);
            assert!(
                problems.is_empty(),
                "{} store, cycle {cycle}, killed {delay:?} after the first receipt: {} \
                 receipted entries lost or changed:\n{}",
                backend.name(),
                problems.len(),
                problems.join("\n")
            );
            verify_receipts_offline(dir, pid, &cycle_receipts);
            exported.insert(pid.clone(), entries);
        }
        assert!(
            ledger.reissued.is_empty(),
            "{} store: sequences receipted twice:\n{}",
            backend.name(),
            ledger.reissued.join("\n")
        );

        serve = Serve::start(dir, &[], &env);
        assert_eq!(
            serve.get("/.well-known/jwks.json").1,
            jwks_text,
            "the receipt keys survive a restart"
        );
        let mut reader = library_client(&serve.idscp2, &pki, "connector-a").await;
        for pid in &pids {
            let served = served_entries(&mut reader, pid).await;
            assert_gapless(pid, &served, "served");
            let offline = &exported[pid];
            assert!(
                served.len() >= offline.len() && served[..offline.len()] == offline[..],
                "{} store, cycle {cycle}: the restarted server serves other entries of {pid} \
                 than the crashed store held ({} exported, {} served)",
                backend.name(),
                offline.len(),
                served.len()
            );
            let problems = ledger.missing_from(pid, &served);
            assert!(problems.is_empty(), "{}", problems.join("\n"));
        }
        reader.close().await;
    }

    println!(
        "crash durability ({} store): {cycles} cycles, {} receipts checked, lost entries = 0, \
         {} chains verified",
        backend.name(),
        ledger.entries.len(),
        ledger.chains_verified
    );
    let (status, log) = tokio::task::spawn_blocking(move || serve.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{log}");
}

/// Logs from every connection until the server is killed, `delay` after the cycle's first
/// receipt; returns every receipt the clients got.
async fn load_and_kill(
    serve: Serve,
    pki: &Path,
    pids: &[String],
    cycle: usize,
    delay: Duration,
) -> Vec<String> {
    let receipted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (index, pid) in pids
        .iter()
        .flat_map(|pid| std::iter::repeat_n(pid, CONNECTIONS_PER_PROCESS))
        .enumerate()
    {
        let name = ["connector-a", "connector-b"][index % 2];
        let client = library_client(&serve.idscp2, pki, name).await;
        let label = format!("cycle {cycle} connection {index}");
        tasks.push(tokio::spawn(log_until_closed(
            client,
            pid.clone(),
            label,
            receipted.clone(),
        )));
    }
    let started = Instant::now();
    while receipted.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < FIRST_RECEIPT_LIMIT,
            "no receipt in cycle {cycle}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(delay).await;
    tokio::task::spawn_blocking(move || serve.kill())
        .await
        .unwrap();
    let mut receipts = Vec::new();
    for task in tasks {
        receipts.extend(task.await.unwrap());
    }
    receipts
}

/// Logs until the connection fails (the server was killed); returns the receipts.
async fn log_until_closed(
    mut client: ClearingHouseClient,
    pid: String,
    label: String,
    receipted: Arc<AtomicUsize>,
) -> Vec<String> {
    let mut receipts = Vec::new();
    for n in 0.. {
        let payload = Bytes::from(format!("{label} message {n}"));
        match client.log(&pid, payload, Some("text/plain")).await {
            Ok(reply) => {
                assert!(!reply.is_rejection(), "{label}: rejected: {reply:?}");
                receipts.push(reply.json().unwrap()["data"].as_str().unwrap().to_owned());
                receipted.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => break,
        }
    }
    receipts
}

/// `(sequence, document id, chain hash)` of each entry, in sequence order.
type EntryFacts = (u64, String, String);

/// The CLI on the crashed store: exports `pid` to `<pid>.jsonl` and verifies its chain
/// straight from the store. Returns the exported entries, checked to be numbered 1, 2, 3, ...,
/// or `None` if the store has no process `pid`.
fn export_and_verify_chain(
    dir: &Path,
    env: &[(&str, &str)],
    store_args: &[String],
    pid: &str,
) -> Option<Vec<EntryFacts>> {
    let cli = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(store_args.iter().map(String::as_str));
        run_with_env(dir, &all, env, b"")
    };
    let export = export_file(pid);
    let exported = cli(&["export", "--pid", pid, "--output", &export]);
    if stderr(&exported).contains("does not exist") {
        return None;
    }
    ok(exported);
    let verified = ok(cli(&["verify", "chain", "--pid", pid]));
    assert!(verified.contains(": OK ("), "{verified}");

    let entries: Vec<Entry> = read_export(BufReader::new(File::open(dir.join(&export)).unwrap()))
        .collect::<Result<_, _>>()
        .unwrap();
    // Development mode encrypts: the crashes happen to sealed entries.
    assert!(entries
        .iter()
        .all(|entry| matches!(entry.protection, Protection::Encrypted { .. })));
    let facts: Vec<EntryFacts> = entries
        .into_iter()
        .map(|entry| {
            (
                entry.sequence,
                entry.document_id,
                hex::encode(entry.chain_hash),
            )
        })
        .collect();
    assert_gapless(pid, &facts, "exported");
    Some(facts)
}

/// `verify receipt --export`: each receipt against the JWKS and against the entry it names in
/// the export of `pid` (whose chain that verifies too).
fn verify_receipts_offline(dir: &Path, pid: &str, receipts: &[String]) {
    if receipts.is_empty() {
        return;
    }
    let export = export_file(pid);
    let args = [
        "verify",
        "receipt",
        "--jwks",
        "jwks.json",
        "--export",
        &export,
        "-",
    ];
    let out = ok(run_with_input(dir, &args, receipts.join("\n").as_bytes()));
    assert_eq!(out.matches(": OK (").count(), receipts.len(), "{out}");
}

fn export_file(pid: &str) -> String {
    format!("{pid}.jsonl")
}

fn assert_gapless(pid: &str, entries: &[EntryFacts], how: &str) {
    for (index, (sequence, ..)) in entries.iter().enumerate() {
        assert_eq!(*sequence, index as u64 + 1, "a gap in {pid} as {how}");
    }
}

/// Every entry of `pid` as the running server serves it, page by page.
async fn served_entries(reader: &mut ClearingHouseClient, pid: &str) -> Vec<EntryFacts> {
    let mut entries = Vec::new();
    for page in 1.. {
        let options = QueryOptions {
            page: Some(page),
            size: Some(PAGE_SIZE),
            sort: Some("asc".into()),
            ..QueryOptions::default()
        };
        let reply = reader.query(pid, &options).await.unwrap();
        assert!(!reply.is_rejection(), "{reply:?}");
        let body = reply.json().unwrap();
        for document in body["documents"].as_array().unwrap() {
            entries.push((
                document["sequence"].as_u64().unwrap(),
                document["document_id"].as_str().unwrap().to_owned(),
                document["chain_hash"].as_str().unwrap().to_owned(),
            ));
        }
        if page >= body["pages"].as_u64().unwrap() {
            break;
        }
    }
    entries
}

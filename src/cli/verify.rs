//! `clearinghouse verify receipt | chain | view`: what an auditor runs, trusting nothing but the
//! JWKS and the entries in hand. A receipt or chain that does not verify exits with code 3 and
//! names the receipt or the first entry at fault. `verify view` rebuilds a process's transfer or
//! contract view from an export, as `client query --view` shows it live.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use anyhow::Context as _;

use super::client::OutputFormat;
use super::view_table::{print_view, ViewArg};
use super::{setup, Failure, StoreConfigArgs, EXIT_CODES};
use crate::audit::{self, AuditError};
use crate::receipt::Jwks;
use crate::store::chain::verify_chain;
use crate::store::{Entry, ProcessContent};
use crate::understand::ViewPage;

#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Check receipt signatures against a JWKS and, with --export, against the entries they name.
    #[command(after_help = EXIT_CODES)]
    Receipt {
        /// The JWKS: a file, or an http(s) URL such as http://127.0.0.1:29293/.well-known/jwks.json
        #[arg(long, value_name = "FILE|URL")]
        jwks: String,
        /// An export (JSON Lines) to check each receipt against its entry
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
        /// Receipt JWTs; `-` reads them from stdin, one per line
        #[arg(required = true, value_name = "RECEIPT")]
        receipts: Vec<String>,
    },
    /// Recompute a process's hash chain from an export, or straight from the store.
    #[command(after_help = EXIT_CODES)]
    Chain {
        /// The process whose chain to check
        #[arg(long)]
        pid: String,
        /// An export (JSON Lines); without it the configured store is read (stop `serve` first)
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
        #[command(flatten)]
        config: StoreConfigArgs,
    },
    /// Rebuild a process's view (its transfers or contracts) from an export, all of it on one page.
    #[command(after_help = EXIT_CODES)]
    View {
        /// An export (JSON Lines) of the process
        #[arg(long, value_name = "FILE")]
        export: PathBuf,
        /// Which view
        #[arg(long, value_enum, default_value = "transfers")]
        view: ViewArg,
        /// A table with the findings in words, or the JSON a `ch-ids-view` query returns
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
}

pub(crate) async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    super::logging::init_quiet();
    match args.what {
        What::Receipt {
            jwks,
            export,
            receipts,
        } => verify_receipts(&jwks, export, receipts).await,
        What::Chain {
            pid,
            export,
            config,
        } => verify_process(&pid, export, &config).await,
        What::View {
            export,
            view,
            format,
        } => {
            let kind = view.kind();
            let folded = audit::view_of_export(open(&export)?)
                .map_err(|e| Failure::Verification(e.to_string()))?;
            let page = folded.render(ViewPage {
                kind,
                page: 1,
                size: u64::MAX,
            });
            print_view(&page, kind, format == OutputFormat::Json)
        }
    }
}

async fn verify_receipts(
    jwks: &str,
    export: Option<PathBuf>,
    receipts: Vec<String>,
) -> anyhow::Result<()> {
    let jwks = load_jwks(jwks).await?;
    let entries: Vec<Entry> = match &export {
        Some(path) => audit::read_export(open(path)?).collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    // A receipt matches the hashes an entry carries; only the chain shows whether the entry's
    // content still produces those hashes.
    if let Some(first) = entries.first() {
        verify_chain(&first.pid, entries.iter().cloned()).map_err(|e| {
            Failure::Verification(format!("the export of process {}: {e}", first.pid))
        })?;
    }
    let mut receipts_in = Vec::new();
    for receipt in receipts {
        if receipt == "-" {
            for line in std::io::stdin().lock().lines() {
                let line = line.context("cannot read receipts from stdin")?;
                if !line.trim().is_empty() {
                    receipts_in.push(line.trim().to_owned());
                }
            }
        } else {
            receipts_in.push(receipt);
        }
    }
    for (index, receipt) in receipts_in.iter().enumerate() {
        let number = index + 1;
        let claims = audit::verify_receipt(&jwks, receipt, None).map_err(|e| {
            Failure::Verification(format!("receipt {number}: {}", receipt_failure(&e)))
        })?;
        if export.is_some() {
            let entry = entries
                .iter()
                .find(|entry| entry.document_id == claims.document_id)
                .ok_or_else(|| {
                    Failure::Verification(format!(
                        "receipt {number}: document {} is not in the export",
                        claims.document_id
                    ))
                })?;
            audit::verify_receipt(&jwks, receipt, Some(entry)).map_err(|e| {
                Failure::Verification(format!("receipt {number}: {}", receipt_failure(&e)))
            })?;
        }
        println!(
            "receipt {number}: OK (process {}, sequence {}, document {})",
            claims.process_id, claims.sequence, claims.document_id
        );
    }
    Ok(())
}

async fn verify_process(
    pid: &str,
    export: Option<PathBuf>,
    config: &StoreConfigArgs,
) -> anyhow::Result<()> {
    let mut erasure = None;
    let verified = match export {
        Some(path) => audit::verify_export(pid, open(&path)?),
        None => {
            let config = config.load_for_tool()?;
            let store = setup::store(&config).await?;
            if let Some(process) = store.process(pid).await? {
                if let ProcessContent::Erased(erased) = process.content {
                    erasure = Some(erased);
                }
            }
            audit::verify_store(store.as_ref(), pid).await
        }
    };
    let verified = verified.map_err(|e| match e {
        AuditError::Chain(_) | AuditError::Export { .. } => {
            anyhow::Error::from(Failure::Verification(format!("process {pid}: {e}")))
        }
        other => other.into(),
    })?;
    let head = verified.head;
    let entries = if head.sequence == 1 {
        "entry"
    } else {
        "entries"
    };
    println!(
        "chain of process {pid}: OK ({} {entries}, head chain hash {})",
        head.sequence,
        hex::encode(head.chain_hash)
    );
    if let Some(erasure) = erasure {
        println!(
            "process {pid} was erased by {} at {}",
            erasure.by,
            crate::ids::rfc3339_of_ms(erasure.at_ms)
        );
    }
    for (first, last) in &verified.erased {
        let which = if first == last {
            format!("entry {first}")
        } else {
            format!("entries {first} to {last}")
        };
        println!(
            "content of {which} can no longer be checked: the process was erased; their links in the chain verify"
        );
    }
    Ok(())
}

/// Why a receipt does not verify, said once: the receipt's own reason, without the prefix
/// that the audit error adds for callers that do not say "receipt" themselves.
fn receipt_failure(error: &AuditError) -> String {
    match error {
        AuditError::Receipt(receipt) => receipt.to_string(),
        other => other.to_string(),
    }
}

fn open(path: &PathBuf) -> anyhow::Result<BufReader<File>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(BufReader::new(file))
}

async fn load_jwks(source: &str) -> anyhow::Result<Jwks> {
    let bytes = if source.starts_with("http://") || source.starts_with("https://") {
        reqwest::get(source)
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("cannot fetch the JWKS from {source}"))?
            .bytes()
            .await
            .with_context(|| format!("cannot fetch the JWKS from {source}"))?
            .to_vec()
    } else {
        std::fs::read(source).with_context(|| format!("cannot read the JWKS {source}"))?
    };
    Jwks::parse(&bytes).with_context(|| format!("JWKS {source}"))
}

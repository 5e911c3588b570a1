//! `clearinghouse keys generate | rewrap | erase`: the operator's side of encryption at rest
//! (see `store::sealing`).
//!
//! - `generate --output FILE` writes a new random KEK (64 hex digits), for
//!   `store.encryption.keys`.
//! - `rewrap` re-wraps every data key under the active KEK, in batches, and says how many it
//!   moved; entries are not rewritten. On MongoDB it runs beside live servers (each key is
//!   replaced by a compare-and-swap, and servers that have both KEKs read either wrapping); the
//!   embedded store is locked by `serve`, so stop it first. Once it reports nothing left under
//!   the old KEK, remove the old KEK from the configuration.
//! - `erase --pid P --by NAME` erases a process offline (stop `serve` first on the embedded
//!   store), recording `cli:NAME` as who erased it. Running servers erase through the door
//!   instead: `ch-ids-operation: erase` from a connector in `admin.identities`.

use std::path::PathBuf;

use anyhow::Context as _;

use super::{setup, StoreConfigArgs};
use crate::ids::rfc3339_of_ms;
use crate::store::sealing::generate_kek_file;

/// Processes looked at per rewrap batch.
const REWRAP_BATCH: usize = 1000;

#[derive(Debug, clap::Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Write a new random KEK (256 bits, as 64 hex digits) to a new file, readable by its owner.
    Generate {
        /// The file to create; an existing file is never overwritten.
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
    },
    /// Re-wrap every process's data key under the active KEK (store.encryption.keys).
    Rewrap {
        #[command(flatten)]
        config: StoreConfigArgs,
    },
    /// Erase a process's content for good by destroying its data key (stop `serve` first on the
    /// embedded store).
    Erase {
        /// The process to erase
        #[arg(long)]
        pid: String,
        /// Who asks for the erasure (recorded as `cli:<NAME>` for auditors)
        #[arg(long, value_name = "NAME")]
        by: String,
        #[command(flatten)]
        config: StoreConfigArgs,
    },
}

pub(crate) async fn run(args: KeysArgs) -> anyhow::Result<()> {
    match args.what {
        What::Generate { output } => {
            if output.exists() {
                anyhow::bail!(
                    "{} exists; a KEK file is never overwritten",
                    output.display()
                );
            }
            generate_kek_file(&output)
                .with_context(|| format!("cannot write {}", output.display()))?;
            eprintln!("wrote a new KEK to {}", output.display());
            Ok(())
        }
        What::Rewrap { config } => rewrap(&config).await,
        What::Erase { pid, by, config } => erase(&pid, &by, &config).await,
    }
}

async fn rewrap(config: &StoreConfigArgs) -> anyhow::Result<()> {
    let config = config.load_for_tool()?;
    let store = setup::store(&config).await?;
    let (mut examined, mut rewrapped) = (0, 0);
    let mut after = None;
    loop {
        let batch = store.rewrap_data_keys(after, REWRAP_BATCH).await?;
        examined += batch.examined;
        rewrapped += batch.rewrapped;
        match batch.last_pid {
            Some(last) => after = Some(last),
            None => break,
        }
    }
    let left = store.data_key_keks().await?;
    println!(
        "re-wrapped {rewrapped} data keys of {examined} processes; data keys are now wrapped by {:?}",
        left
    );
    Ok(())
}

async fn erase(pid: &str, by: &str, config: &StoreConfigArgs) -> anyhow::Result<()> {
    let config = config.load_for_tool()?;
    let store = setup::store(&config).await?;
    let erasure = store.erase(pid, &format!("cli:{by}")).await?;
    println!(
        "process {pid} erased by {} at {}",
        erasure.by,
        rfc3339_of_ms(erasure.at_ms)
    );
    Ok(())
}

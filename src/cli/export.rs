//! `clearinghouse export --pid`: a process as JSON Lines, for auditors to verify offline with
//! `clearinghouse verify chain --export` or their own tools.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context as _;

use super::{setup, StoreConfigArgs};
use crate::audit;

#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// The process to export
    #[arg(long)]
    pid: String,
    /// Write here instead of stdout
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    config: StoreConfigArgs,
}

pub(crate) async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let config = args.config.load_for_tool()?;
    let store = setup::store(&config).await?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(&mut out);
    let written = audit::export_process(store.as_ref(), &args.pid, &mut out).await?;
    out.flush().context("cannot write the export")?;
    let entries = if written == 1 { "entry" } else { "entries" };
    eprintln!("exported {written} {entries} of process {}", args.pid);
    Ok(())
}

//! `clearinghouse jwks`: the receipt JWKS of the configuration, as `/.well-known/jwks.json`
//! serves it, for publishing it elsewhere or handing it to an auditor.

use super::{setup, ConfigArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct JwksArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

pub(crate) fn run(args: JwksArgs) -> anyhow::Result<()> {
    let config = args.config.load_for_tool(Vec::new())?;
    // Never generates a PKI: printing keys must not invent new ones.
    let files = setup::files(&config, false)?;
    let (_, jwks) = setup::receipts(&config, &files)?;
    println!("{}", serde_json::to_string_pretty(&jwks.to_json())?);
    Ok(())
}

//! `clearinghouse whoami --cert FILE`: the connector id the clearing house derives for a
//! certificate, the one to give as an owner (`client create --owner`, `client owners --set`).
//!
//! Owners are connector ids (`SKI:keyid:AKI`), which a partner cannot see on its certificate;
//! before this command they were copied from receipts, and a typo locked a partner out.

use std::path::{Path, PathBuf};

use crate::idscp2::tls::{self, PeerCertificate};

#[derive(Debug, clap::Args)]
pub(crate) struct WhoamiArgs {
    /// A certificate (PEM; of a chain, the first is taken)
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
}

pub(crate) fn run(args: WhoamiArgs) -> anyhow::Result<()> {
    let id = connector_id(&args.cert)
        .map_err(|message| crate::config::ConfigError::setting("--cert", message))?;
    println!("{id}");
    eprintln!(
        "the connector id in development mode (dat.mode = \"development\"); with a DAPS it is \
         the DAT's sub claim, which a DAPS registers as this same SKI:keyid:AKI"
    );
    Ok(())
}

/// The connector id of the first certificate in the PEM file at `path`.
pub(super) fn connector_id(path: &Path) -> Result<String, String> {
    let chain = tls::load_ca_file(path).map_err(|e| e.to_string())?;
    let leaf = chain
        .into_iter()
        .next()
        .ok_or_else(|| format!("{}: no certificate", path.display()))?;
    PeerCertificate::new(leaf)
        .connector_id()
        .map_err(|e| format!("{}: {e}", path.display()))
}

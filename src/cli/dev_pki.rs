//! `clearinghouse dev-pki`: a development CA with a server certificate, client certificates and
//! a receipt key, in the layout `serve` falls back to. Run again to add clients, or server names
//! (the server certificate is then reissued with the same key).

use std::path::PathBuf;

use crate::devpki::{DevPki, DevPkiOptions};

#[derive(Debug, clap::Args)]
pub(crate) struct DevPkiArgs {
    /// Where to write the PKI (serve's default is <data_dir>/dev-pki)
    #[arg(long, default_value = "data/dev-pki", value_name = "DIR")]
    dir: PathBuf,
    /// A DNS name or IP address for the server certificate (repeatable); on an existing PKI the
    /// certificate is reissued with the names it lacks added [default: localhost, 127.0.0.1, ::1]
    #[arg(long = "server-name", value_name = "NAME")]
    server_names: Vec<String>,
    /// A client certificate to issue (repeatable) [default: connector-a, connector-b, auditor]
    #[arg(long = "client", value_name = "NAME")]
    clients: Vec<String>,
    /// Validity of a new CA in days (an existing PKI keeps its CA)
    #[arg(long, default_value_t = 365, value_name = "DAYS")]
    validity_days: u32,
}

pub(crate) fn run(args: DevPkiArgs) -> anyhow::Result<()> {
    let defaults = DevPkiOptions::default();
    let options = DevPkiOptions {
        server_names: if args.server_names.is_empty() {
            defaults.server_names
        } else {
            args.server_names.clone()
        },
        clients: if args.clients.is_empty() {
            defaults.clients
        } else {
            args.clients
        },
        validity_days: args.validity_days,
    };
    let existed = DevPki {
        dir: args.dir.clone(),
    }
    .server_cert()
    .exists();
    let pki = DevPki::open_or_generate(&args.dir, &options)?;
    // An existing PKI keeps its CA and keys; asked for names its server certificate lacks, the
    // certificate is reissued for them.
    let added = if existed && !args.server_names.is_empty() {
        pki.add_server_names(&args.server_names)?
    } else {
        Vec::new()
    };
    println!(
        "development PKI in {} (for development only)",
        pki.dir.display()
    );
    println!("  CA certificate:     {}", pki.ca_cert().display());
    println!(
        "  server certificate: {} (valid for {})",
        pki.server_cert().display(),
        pki.server_names()?.join(", ")
    );
    if !added.is_empty() {
        println!(
            "  reissued the server certificate, same key, adding {}: restart `serve` to use it",
            added.join(", ")
        );
    }
    println!("  server key:         {}", pki.server_key().display());
    println!("  receipt key:        {}", pki.receipt_key().display());
    for name in &options.clients {
        let certificate = pki.client_cert(name);
        println!(
            "  client {name}: {} {}",
            certificate.display(),
            pki.client_key(name).display()
        );
        // The id to name this client by as an owner (see `clearinghouse whoami`).
        if let Ok(id) = super::whoami::connector_id(&certificate) {
            println!("    connector id: {id}");
        }
    }
    Ok(())
}

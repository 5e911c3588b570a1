//! `clearinghouse dev-pki`: a development CA with a server certificate, client certificates and
//! a receipt key, in the layout `serve` falls back to. Run again to add clients.

use std::path::PathBuf;

use crate::devpki::{DevPki, DevPkiOptions};

#[derive(Debug, clap::Args)]
pub struct DevPkiArgs {
    /// Where to write the PKI (serve's default is <data_dir>/dev-pki)
    #[arg(long, default_value = "data/dev-pki")]
    dir: PathBuf,
    /// A DNS name or IP address for the server certificate (repeatable) [default: localhost, 127.0.0.1, ::1]
    #[arg(long = "server-name", value_name = "NAME")]
    server_names: Vec<String>,
    /// A client certificate to issue (repeatable) [default: connector-a, connector-b, auditor]
    #[arg(long = "client", value_name = "NAME")]
    clients: Vec<String>,
    /// Validity of a new CA in days
    #[arg(long, default_value_t = 365)]
    validity_days: u32,
}

pub fn run(args: DevPkiArgs) -> anyhow::Result<()> {
    let defaults = DevPkiOptions::default();
    let options = DevPkiOptions {
        server_names: if args.server_names.is_empty() {
            defaults.server_names
        } else {
            args.server_names
        },
        clients: if args.clients.is_empty() {
            defaults.clients
        } else {
            args.clients
        },
        validity_days: args.validity_days,
    };
    let pki = DevPki::open_or_generate(&args.dir, &options)?;
    println!(
        "development PKI in {} (for development only)",
        pki.dir.display()
    );
    println!("  CA certificate:     {}", pki.ca_cert().display());
    println!("  server certificate: {}", pki.server_cert().display());
    println!("  server key:         {}", pki.server_key().display());
    println!("  receipt key:        {}", pki.receipt_key().display());
    for name in &options.clients {
        println!(
            "  client {name}: {} {}",
            pki.client_cert(name).display(),
            pki.client_key(name).display()
        );
    }
    Ok(())
}

//! The load generator's `signing-speed` role: how many receipts per second this build's own
//! signer can sign with a given key when every core does nothing else. It is the other
//! ceiling next to `openssl speed` for the PS512 row: the issue states the machine's limit as
//! OpenSSL's, but the clearing house signs with aws-lc-rs, which is faster than OpenSSL 3.0 on
//! CPUs with AVX-512 IFMA, so the share of OpenSSL's limit alone would overstate how close the
//! server comes to what its own signer allows.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args;
use clearinghouse::receipt::{ReceiptAlgorithm, ReceiptClaims, ReceiptSigner};

#[derive(Args)]
pub(crate) struct SigningSpeedArgs {
    /// Receipt algorithm (ES256, EdDSA, PS512, RS256).
    #[arg(long)]
    receipt_alg: String,
    /// Receipt key (PKCS#8 PEM).
    #[arg(long)]
    receipt_key: PathBuf,
    /// How long to sign.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Signing threads. Default: one per core.
    #[arg(long)]
    threads: Option<usize>,
}

/// Prints the signatures per second of all threads together (one number, for scripts/bench).
pub(crate) fn signing_speed(args: SigningSpeedArgs) -> Result<()> {
    let algorithm: ReceiptAlgorithm = args.receipt_alg.parse()?;
    let pem =
        std::fs::read(&args.receipt_key).with_context(|| args.receipt_key.display().to_string())?;
    let signer = Arc::new(ReceiptSigner::from_pem(algorithm, &pem)?);
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let signed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (signer, signed, stop) = (signer.clone(), signed.clone(), stop.clone());
            std::thread::spawn(move || -> Result<()> {
                let claims = claims();
                while !stop.load(Ordering::Relaxed) {
                    signer.sign(&claims)?;
                    signed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(args.seconds));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("a signing thread panicked"))??;
    }
    let per_second = signed.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("{per_second:.1}");
    Ok(())
}

/// Claims of the size a log receipt has.
fn claims() -> ReceiptClaims {
    ReceiptClaims {
        iss: "https://clearinghouse.example/connector".into(),
        iat: 1_710_028_800,
        process_id: "load-0".into(),
        document_id: "7d4c1a9e-4c1f-4f3e-9a55-2b1d1c0e9f10".into(),
        sequence: 1,
        timestamp: 1_710_028_800,
        timestamp_ms: 1_710_028_800_123,
        client_id: "AA:BB:CC:DD:keyid:EE:FF:00:11".into(),
        payload_hash: "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg".into(),
        entry_hash: "ab".repeat(32),
        chain_hash: "cd".repeat(32),
        clearing_house_version: env!("CARGO_PKG_VERSION").into(),
    }
}

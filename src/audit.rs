//! Auditor tools: exporting a process, and verifying receipts and chains without trusting the
//! clearing house.
//!
//! An export is JSON Lines, one entry per line in sequence order, with every field the hashes
//! cover (payload in standard base64, hashes in lowercase hex), so that anyone holding an export
//! and the JWKS can recompute every entry hash and chain hash (see [`crate::store::chain`]) and
//! check them against the receipts they were given.
//!
//! Each line says how its entry was stored in `content`: `"plaintext"` (entry hash version 1:
//! written before encryption, or with it off), `"encrypted"` (version 2; the line carries the
//! process's `commitment_key` in hex, which recomputing a version 2 entry hash needs and which
//! reveals nothing the decrypted content beside it does not), or `"erased"` (the process was
//! erased: `header` is null and `payload` empty, and only the entry's link can be checked).
//! Lines without `content` (exports made before encryption) are plaintext.
//!
//! A receipt is checked against its entry claim by claim; for an erased entry the
//! `payload_hash` claim cannot be (the payload is gone, and the store never kept a plain hash of
//! it): the connector that logged the payload holds it, and the entry and chain hashes, which
//! are checked, still bind the receipt to its place in the chain.
//!
//! The same entries give the view of the
//! process that the clearing house answers `ch-ids-view` queries with ([`view_of_export`]), so
//! an auditor can rebuild it offline and compare.

use std::io::{BufRead, Write};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::receipt::{Jwks, ReceiptClaims, ReceiptError};
use crate::store::chain::{verify_entries, ChainError, ChainHead, ChainVerifier};
use crate::store::{Entry, ProcessStore, Protection, StoreError};
use crate::understand::ProcessView;

/// Entries fetched from the store per round trip while exporting or verifying.
const BATCH: usize = 1000;

/// Why an export or a verification failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An entry's hashes or sequence do not follow from the entries before it.
    #[error("chain does not verify: {0}")]
    Chain(#[from] ChainError),
    /// The receipt's signature or key does not check out against the JWKS.
    #[error("receipt does not verify: {0}")]
    Receipt(#[from] ReceiptError),
    /// A line of an export cannot be read as an entry.
    #[error("export line {line}: {reason}")]
    Export {
        /// 1-based line number in the export.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing the export failed.
    #[error("cannot write the export: {0}")]
    Write(#[source] std::io::Error),
    /// The receipt verifies, but describes another entry than the one at hand.
    #[error("the receipt does not match the stored entry: {0}")]
    ReceiptMismatch(String),
}

/// One line of an export.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportedEntry {
    pub(crate) pid: String,
    pub(crate) sequence: u64,
    pub(crate) document_id: String,
    pub(crate) timestamp_ms: i64,
    pub(crate) client_id: String,
    pub(crate) header: serde_json::Value,
    /// Standard base64 of the payload bytes.
    pub(crate) payload: String,
    pub(crate) payload_type: String,
    pub(crate) entry_hash: String,
    pub(crate) chain_hash: String,
    /// `plaintext`, `encrypted` or `erased`; absent in exports made before encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) content: Option<String>,
    /// Hex; encrypted entries only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) commitment_key: Option<String>,
}

const PLAINTEXT: &str = "plaintext";
const ENCRYPTED: &str = "encrypted";
const ERASED: &str = "erased";

impl From<&Entry> for ExportedEntry {
    fn from(entry: &Entry) -> Self {
        let (content, commitment_key) = match &entry.protection {
            Protection::Plaintext => (PLAINTEXT, None),
            Protection::Encrypted { commitment_key } => {
                (ENCRYPTED, Some(hex::encode(commitment_key)))
            }
            Protection::Erased => (ERASED, None),
        };
        ExportedEntry {
            content: Some(content.to_owned()),
            commitment_key,
            pid: entry.pid.clone(),
            sequence: entry.sequence,
            document_id: entry.document_id.clone(),
            timestamp_ms: entry.timestamp_ms,
            client_id: entry.client_id.clone(),
            header: entry.header.clone(),
            payload: STANDARD.encode(&entry.payload),
            payload_type: entry.payload_type.clone(),
            entry_hash: hex::encode(entry.entry_hash),
            chain_hash: hex::encode(entry.chain_hash),
        }
    }
}

impl TryFrom<ExportedEntry> for Entry {
    type Error = String;

    fn try_from(line: ExportedEntry) -> Result<Self, String> {
        let hash = |name: &str, text: &str| -> Result<[u8; 32], String> {
            let bytes = hex::decode(text).map_err(|e| format!("{name} is not hex: {e}"))?;
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| format!("{name} is not 32 bytes"))
        };
        let protection = match (line.content.as_deref(), &line.commitment_key) {
            (None | Some(PLAINTEXT), None) => Protection::Plaintext,
            (Some(ENCRYPTED), Some(key)) => Protection::Encrypted {
                commitment_key: hash("commitment_key", key)?,
            },
            // An erased entry carries no content: a line that says "erased" cannot pass off
            // content whose hash is not checked.
            (Some(ERASED), None) if line.header.is_null() && line.payload.is_empty() => {
                Protection::Erased
            }
            (Some(ERASED), None) => {
                return Err("an erased entry must have a null header and an empty payload".into())
            }
            (Some(ENCRYPTED), None) => {
                return Err("an encrypted entry needs its commitment_key".into())
            }
            (_, Some(_)) => return Err("only an encrypted entry has a commitment_key".into()),
            (Some(other), None) => {
                return Err(format!(
                    "content {other:?} is none of \"plaintext\", \"encrypted\", \"erased\""
                ))
            }
        };
        Ok(Entry {
            protection,
            entry_hash: hash("entry_hash", &line.entry_hash)?,
            chain_hash: hash("chain_hash", &line.chain_hash)?,
            payload: Bytes::from(
                STANDARD
                    .decode(&line.payload)
                    .map_err(|e| format!("payload is not base64: {e}"))?,
            ),
            pid: line.pid,
            sequence: line.sequence,
            document_id: line.document_id,
            timestamp_ms: line.timestamp_ms,
            client_id: line.client_id,
            header: line.header,
            payload_type: line.payload_type,
        })
    }
}

/// Writes every entry of `pid` as JSON Lines and returns how many were written.
pub async fn export_process(
    store: &dyn ProcessStore,
    pid: &str,
    out: &mut impl Write,
) -> Result<u64, AuditError> {
    let mut next = 1;
    loop {
        let batch = store.entries_from(pid, next, BATCH).await?;
        for entry in &batch {
            serde_json::to_writer(&mut *out, &ExportedEntry::from(entry))
                .map_err(|e| AuditError::Write(e.into()))?;
            out.write_all(b"\n").map_err(AuditError::Write)?;
        }
        match batch.last() {
            Some(last) if batch.len() == BATCH => next = last.sequence + 1,
            Some(last) => return Ok(last.sequence),
            None => return Ok(next - 1),
        }
    }
}

/// Reads an export back into entries.
pub fn read_export(input: impl BufRead) -> impl Iterator<Item = Result<Entry, AuditError>> {
    input.lines().enumerate().filter_map(|(index, line)| {
        let line_number = index as u64 + 1;
        let error = |reason: String| AuditError::Export {
            line: line_number,
            reason,
        };
        match line {
            Ok(text) if text.trim().is_empty() => None,
            Ok(text) => Some(
                serde_json::from_str::<ExportedEntry>(&text)
                    .map_err(|e| error(e.to_string()))
                    .and_then(|exported| Entry::try_from(exported).map_err(error)),
            ),
            Err(e) => Some(Err(error(e.to_string()))),
        }
    })
}

/// What a verified chain showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The last entry's sequence and chain hash.
    pub head: ChainHead,
    /// Runs of entries (first and last sequence) whose process was erased: their links verify,
    /// their content can no longer be checked.
    pub erased: Vec<(u64, u64)>,
}

impl Verified {
    fn of(verifier: &ChainVerifier) -> Self {
        Self {
            head: verifier.head(),
            erased: verifier.erased().to_vec(),
        }
    }
}

/// Verifies the chain of an export of `pid`, naming the first entry that does not verify.
pub fn verify_export(pid: &str, input: impl BufRead) -> Result<Verified, AuditError> {
    let entries: Vec<Entry> = read_export(input).collect::<Result<_, _>>()?;
    Ok(Verified::of(&verify_entries(pid, entries)?))
}

/// The view of the process an export holds, folded entry by entry as the clearing house folds
/// them (one entry in memory at a time, besides the view).
pub fn view_of_export(input: impl BufRead) -> Result<ProcessView, AuditError> {
    let mut view = ProcessView::default();
    for entry in read_export(input) {
        view.apply(&entry?);
    }
    Ok(view)
}

/// Verifies the chain of `pid` straight from the store, in bounded batches.
pub async fn verify_store(store: &dyn ProcessStore, pid: &str) -> Result<Verified, AuditError> {
    let mut verifier = ChainVerifier::new(pid);
    let mut next = 1;
    loop {
        let batch = store.entries_from(pid, next, BATCH).await?;
        for entry in &batch {
            verifier.push(entry)?;
        }
        match batch.last() {
            Some(last) if batch.len() == BATCH => next = last.sequence + 1,
            _ => return Ok(Verified::of(&verifier)),
        }
    }
}

/// Verifies a receipt's signature and, when the entry it names is at hand, that it describes
/// exactly that entry.
pub fn verify_receipt(
    jwks: &Jwks,
    receipt: &str,
    entry: Option<&Entry>,
) -> Result<ReceiptClaims, AuditError> {
    let claims = jwks.verify(receipt)?;
    if let Some(entry) = entry {
        let checks = [
            ("process_id", claims.process_id == entry.pid),
            ("document_id", claims.document_id == entry.document_id),
            ("sequence", claims.sequence == entry.sequence),
            ("timestamp_ms", claims.timestamp_ms == entry.timestamp_ms),
            ("client_id", claims.client_id == entry.client_id),
            (
                "payload_hash",
                // An erased entry's payload is gone; the connector keeps what the claim hashes.
                entry.protection == Protection::Erased
                    || claims.payload_hash == crate::receipt::payload_hash(&entry.payload),
            ),
            (
                "entry_hash",
                claims.entry_hash == hex::encode(entry.entry_hash),
            ),
            (
                "chain_hash",
                claims.chain_hash == hex::encode(entry.chain_hash),
            ),
        ];
        if let Some((claim, _)) = checks.iter().find(|(_, ok)| !ok) {
            return Err(AuditError::ReceiptMismatch(format!(
                "{claim} differs from entry {} ({})",
                entry.sequence, entry.document_id
            )));
        }
    }
    Ok(claims)
}

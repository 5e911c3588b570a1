//! The per-process hash chain: how an entry is hashed, how hashes chain, and how anyone holding
//! the entries verifies them offline.
//!
//! Auditors re-implement this, so the encoding is spelled out to the byte. Every hash is SHA-256.
//!
//! # Entry hash
//!
//! `entry_hash = SHA-256(F(tag) || F(pid) || F(sequence) || F(document_id) || F(timestamp_ms) ||
//! F(client_id) || F(payload_type) || F(SHA-256(payload)) || F(header))`, where
//!
//! - `F(x) = len(x) || x`, `len(x)` being the byte length of `x` as an unsigned 64-bit big-endian
//!   integer (8 bytes), so no two different field lists encode to the same bytes;
//! - `tag` is the 22 ASCII bytes `clearinghouse-entry-v1`;
//! - strings (`pid`, `document_id`, `client_id`, `payload_type`) are their UTF-8 bytes,
//!   `payload_type` being empty when the payload has no media type;
//! - `sequence` is 8 bytes, unsigned big-endian; `timestamp_ms` (UTC milliseconds since the Unix
//!   epoch) is 8 bytes, big-endian two's complement; both are still prefixed by their length 8;
//! - `SHA-256(payload)` is the 32-byte digest of the payload bytes;
//! - `header` is the canonical JSON of the stored header: no whitespace; object members sorted
//!   by key, comparing keys as UTF-8 byte strings, at every depth; array order kept; strings
//!   written as raw UTF-8 except that `"` and `\` become `\"` and `\\`, U+0008, U+0009, U+000A,
//!   U+000C and U+000D become `\b`, `\t`, `\n`, `\f` and `\r`, and the other characters below
//!   U+0020 become `\u00xx` with lowercase hex digits (`/` and everything else is not escaped);
//!   `true`, `false`, `null`; integers (numbers written without fraction or exponent that fit
//!   an i64 or u64, except `-0`) in plain decimal, with `-` if negative; all other numbers,
//!   which are IEEE 754 doubles, in scientific notation with the fewest significant digits that
//!   read back as the same double: `-` if negative, the first digit, then `.` and the remaining
//!   digits if there are any, then `e` and the decimal exponent (with `-` if negative, never
//!   `+`). So `0.5` is `5e-1`, `100.0` is `1e2`, `-1.5e300` is `-1.5e300`, `-0.0` is `-0e0`.
//!   (This is Rust's `{:e}` format; it is spelled out because serde_json's own float output has
//!   changed between releases, and a hash must not.)
//!
//! # Entry hash, version 2 (encrypted processes)
//!
//! Version 1 lets anyone holding an entry hash confirm a guessed payload: hash the guess, hash
//! the (guessable) other fields, compare. An encrypted process (see
//! [`sealing`](super::sealing)) must not leak that, so its entries are hashed as
//!
//! `entry_hash = SHA-256(F(tag2) || F(pid) || F(sequence) || F(document_id) || F(timestamp_ms) ||
//! F(client_id) || F(payload_type) || F(commitment))`, with `tag2` the 22 ASCII bytes
//! `clearinghouse-entry-v2` and
//!
//! `commitment = HMAC-SHA256(commitment_key, F(SHA-256(payload)) || F(header))`,
//!
//! everything else as in version 1. The commitment key is derived from the process's data key
//! (HKDF-SHA256, see `sealing`), so without it the entry hash reveals nothing about the content,
//! and with it (an export carries it, as `commitment_key`) an auditor recomputes every hash from
//! the plaintext as before. Committing to the plaintext under a key, rather than hashing the
//! ciphertext, was chosen because it keeps what the chain proves about the *content*: an
//! auditor with an export checks the payload and header themselves, not merely bytes that the
//! clearing house says decrypt to them. The price is that after erasure (the data key, hence
//! the commitment key, destroyed) an entry's content can no longer be checked: its stored entry
//! hash is taken as it is, and the chain still proves that no entry was added, removed,
//! reordered or had its hash changed. The verifier says which entries that applies to.
//!
//! Each entry carries its own version (an encrypted entry is version 2, a plaintext one
//! version 1), and the chain hash below is the same for both, so a process's genesis hash does
//! not depend on whether it is encrypted and stores written before encryption keep verifying
//! byte for byte. Together, versions 1 and 2 are the encoding `clearinghouse-chain-v2`.
//!
//! # Chain hash
//!
//! `chain_hash(0) = SHA-256("clearinghouse-chain-v1" || pid)` (plain concatenation of the ASCII
//! tag and the pid's UTF-8 bytes), and for the entry with sequence `n >= 1`
//! `chain_hash(n) = SHA-256(chain_hash(n-1) || entry_hash(n))` (64 bytes in).
//!
//! Each process has its own chain, so the chain hash of a process's latest entry (which its
//! receipt carries) commits to every earlier entry of that process.
//!
//! # Verification
//!
//! `ChainVerifier` takes entries one by one in sequence order, in bounded memory, and names the
//! first entry that does not verify; [`verify_chain`] runs it over a whole sequence of entries and
//! tells a missing entry from one that appears later than it should. Entries cut off at the end
//! are invisible to both: compare the returned [`ChainHead`] with the latest receipt.

use ring::digest::{self, Context, SHA256};
use ring::hmac;
use std::fmt::Write as _;

use serde_json::{Number, Value};

use super::sealing::{ProcessKeys, Protection};
use super::{now_ms, Entry, PreparedEntry, StoreError};
use crate::ids::push_json_string;

const ENTRY_TAG: &[u8] = b"clearinghouse-entry-v1";
const ENTRY_TAG_V2: &[u8] = b"clearinghouse-entry-v2";
const CHAIN_TAG: &[u8] = b"clearinghouse-chain-v1";

/// The hashed fields of an entry, with the payload and header already reduced to their digest
/// and canonical bytes, so that a store can compute those before it serializes appends.
#[derive(Debug, Clone, Copy)]
pub struct EntryFields<'a> {
    /// The process.
    pub pid: &'a str,
    /// The entry's position in the chain, from 1.
    pub sequence: u64,
    /// The entry's document id.
    pub document_id: &'a str,
    /// When the entry was stored, unix milliseconds.
    pub timestamp_ms: i64,
    /// The connector that logged the entry.
    pub client_id: &'a str,
    /// The payload's media type.
    pub payload_type: &'a str,
    /// [`payload_hash`] of the payload.
    pub payload_hash: &'a [u8; 32],
    /// [`canonical_json`] of the IDS header.
    pub canonical_header: &'a [u8],
}

impl EntryFields<'_> {
    /// The entry hash: SHA-256 over every field, each prefixed with its length.
    pub fn entry_hash(&self) -> [u8; 32] {
        self.hash_with(ENTRY_TAG, &[self.payload_hash, self.canonical_header])
    }

    /// The version 2 entry hash: the content enters only through `commitment` (see
    /// [`content_commitment`]); `payload_hash` and `canonical_header` are not used.
    pub fn entry_hash_v2(&self, commitment: &[u8; 32]) -> [u8; 32] {
        self.hash_with(ENTRY_TAG_V2, &[commitment])
    }

    fn hash_with(&self, tag: &[u8], content: &[&[u8]]) -> [u8; 32] {
        let mut context = Context::new(&SHA256);
        let fields: [&[u8]; 7] = [
            tag,
            self.pid.as_bytes(),
            &self.sequence.to_be_bytes(),
            self.document_id.as_bytes(),
            &self.timestamp_ms.to_be_bytes(),
            self.client_id.as_bytes(),
            self.payload_type.as_bytes(),
        ];
        for field in fields.iter().chain(content) {
            update_field(&mut context, field);
        }
        to_array(context.finish())
    }
}

fn update_field(context: &mut Context, field: &[u8]) {
    // usize to u64 never truncates on the 32- and 64-bit targets Rust supports.
    context.update(&(field.len() as u64).to_be_bytes());
    context.update(field);
}

/// `HMAC-SHA256(key, F(payload_hash) || F(canonical_header))`: what a version 2 entry hash
/// commits to content with.
pub fn content_commitment(
    key: &hmac::Key,
    payload_hash: &[u8; 32],
    canonical_header: &[u8],
) -> [u8; 32] {
    let mut context = hmac::Context::with_key(key);
    for field in [&payload_hash[..], canonical_header] {
        context.update(&(field.len() as u64).to_be_bytes());
        context.update(field);
    }
    let mut commitment = [0u8; 32];
    commitment.copy_from_slice(context.sign().as_ref());
    commitment
}

/// Recomputes the entry hash of a stored entry from its content, in the entry's version; `None`
/// for an erased entry, whose content is gone.
pub fn entry_hash(entry: &Entry) -> Option<[u8; 32]> {
    let payload_hash = payload_hash(&entry.payload);
    let canonical_header = canonical_json(&entry.header);
    let fields = EntryFields {
        pid: &entry.pid,
        sequence: entry.sequence,
        document_id: &entry.document_id,
        timestamp_ms: entry.timestamp_ms,
        client_id: &entry.client_id,
        payload_type: &entry.payload_type,
        payload_hash: &payload_hash,
        canonical_header: &canonical_header,
    };
    match &entry.protection {
        Protection::Plaintext => Some(fields.entry_hash()),
        Protection::Encrypted { commitment_key } => {
            let key = hmac::Key::new(hmac::HMAC_SHA256, commitment_key);
            let commitment = content_commitment(&key, &payload_hash, &canonical_header);
            Some(fields.entry_hash_v2(&commitment))
        }
        Protection::Erased => None,
    }
}

/// SHA-256 of a payload, as the entry hash covers it.
pub fn payload_hash(payload: &[u8]) -> [u8; 32] {
    to_array(digest::digest(&SHA256, payload))
}

/// `chain_hash(0)`: where a process's chain starts.
pub fn genesis_hash(pid: &str) -> [u8; 32] {
    let mut context = Context::new(&SHA256);
    context.update(CHAIN_TAG);
    context.update(pid.as_bytes());
    to_array(context.finish())
}

/// `chain_hash(n)` from `chain_hash(n-1)` and `entry_hash(n)`.
pub fn chain_hash(previous: &[u8; 32], entry_hash: &[u8; 32]) -> [u8; 32] {
    let mut context = Context::new(&SHA256);
    context.update(previous);
    context.update(entry_hash);
    to_array(context.finish())
}

/// The canonical JSON described in the module documentation.
///
/// Keys are sorted here rather than relying on serde_json's map order, which turns into
/// insertion order as soon as any crate in the build enables its `preserve_order` feature.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    canonical_json_string(value).into_bytes()
}

/// [`canonical_json`] as the text it is: it is written from UTF-8 strings and ASCII only, so a
/// store that keeps it as a string (MongoDB) needs no check that could fail.
pub(crate) fn canonical_json_string(value: &Value) -> String {
    // Room for a typical stored request header (about 500 bytes without its tokens), so that
    // writing it rarely grows the string.
    let mut out = String::with_capacity(CANONICAL_CAPACITY);
    write_canonical(value, &mut out);
    out
}

const CANONICAL_CAPACITY: usize = 1024;

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(number, out),
        Value::String(text) => push_json_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            // serde_json's map iterates in key order (a `BTreeMap<String, _>`, whose order is
            // the byte order the encoding asks for) unless some crate in the build turns on
            // `preserve_order`: only then are the members collected and sorted.
            let by_bytes = |a: &&String, b: &&String| a.as_bytes() <= b.as_bytes();
            if members.keys().is_sorted_by(by_bytes) {
                write_members(members.iter(), out);
            } else {
                let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
                sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                write_members(sorted.into_iter(), out);
            }
            out.push('}');
        }
    }
}

/// `"key":value` for each member, comma-separated, in the order given.
fn write_members<'v>(members: impl Iterator<Item = (&'v String, &'v Value)>, out: &mut String) {
    for (index, (key, member)) in members.enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_json_string(out, key);
        out.push(':');
        write_canonical(member, out);
    }
}

fn write_number(number: &Number, out: &mut String) {
    // Writing into `out` rather than through `format!` saves an allocation per number; the
    // text is the same.
    let written = match number.as_f64() {
        Some(float) if number.is_f64() => write!(out, "{float:e}"),
        // Integers, which serde_json writes in plain decimal.
        _ => write!(out, "{number}"),
    };
    // Writing into a `String` cannot fail.
    debug_assert!(written.is_ok());
}

fn to_array(digest: digest::Digest) -> [u8; 32] {
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// How far a chain verified: the sequence and chain hash of its last verified entry
/// (sequence 0 and the genesis hash when there were no entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// The last entry's sequence number.
    pub sequence: u64,
    /// The last entry's chain hash.
    pub chain_hash: [u8; 32],
}

/// What an entry adds to its process's chain, besides what the caller gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The new entry's sequence number.
    pub sequence: u64,
    /// The new entry's timestamp, unix milliseconds.
    pub timestamp_ms: i64,
    /// The new entry's entry hash.
    pub entry_hash: [u8; 32],
    /// The new entry's chain hash: the previous chain hash and this entry hash, hashed.
    pub chain_hash: [u8; 32],
}

/// The caller's part of an entry's hashed fields; the chain supplies sequence and timestamp.
#[derive(Debug, Clone, Copy)]
pub struct LinkFields<'a> {
    /// The process.
    pub pid: &'a str,
    /// The entry's document id.
    pub document_id: &'a str,
    /// The connector that logs the entry.
    pub client_id: &'a str,
    /// The payload's media type.
    pub payload_type: &'a str,
    /// [`payload_hash`] of the payload.
    pub payload_hash: &'a [u8; 32],
    /// [`canonical_json`] of the IDS header.
    pub canonical_header: &'a [u8],
    /// For an encrypted process, its commitment key: the entry is hashed as version 2.
    pub commitment_key: Option<&'a hmac::Key>,
}

/// The link an append adds after `head`, whose latest entry is stamped `head_timestamp_ms`: the
/// next sequence number, a timestamp of `now_ms` but never before the head's (so that a time
/// range is a run of sequence numbers), and both hashes. `None` once sequence numbers run out.
/// Every backend appends through this (by way of `append_link`), so that all compute the same
/// chain.
pub fn next_link(
    head: &ChainHead,
    head_timestamp_ms: i64,
    now_ms: i64,
    fields: LinkFields<'_>,
) -> Option<Link> {
    let sequence = head.sequence.checked_add(1)?;
    let timestamp_ms = now_ms.max(head_timestamp_ms);
    let entry_fields = EntryFields {
        pid: fields.pid,
        sequence,
        document_id: fields.document_id,
        timestamp_ms,
        client_id: fields.client_id,
        payload_type: fields.payload_type,
        payload_hash: fields.payload_hash,
        canonical_header: fields.canonical_header,
    };
    let entry_hash = match fields.commitment_key {
        None => entry_fields.entry_hash(),
        Some(key) => entry_fields.entry_hash_v2(&content_commitment(
            key,
            fields.payload_hash,
            fields.canonical_header,
        )),
    };
    Some(Link {
        sequence,
        timestamp_ms,
        entry_hash,
        chain_hash: chain_hash(&head.chain_hash, &entry_hash),
    })
}

/// The link `entry` adds to its process after `head`, whose latest entry (or, before the first
/// one, the process's creation) is stamped `head_timestamp_ms`: [`next_link`], dated now.
///
/// Both backends append through this, while they hold whatever serializes their appends (the
/// embedded writer thread, the MongoDB committer), so that they compute the same chain from the
/// same prepared fields and refuse an exhausted process the same way. `keys` are the process's
/// content keys when it is encrypted (version 2), `None` for a plaintext process (version 1).
pub(crate) fn append_link(
    head: &ChainHead,
    head_timestamp_ms: i64,
    entry: &PreparedEntry,
    keys: Option<&ProcessKeys>,
) -> Result<Link, StoreError> {
    let fields = entry.link_fields(keys.map(ProcessKeys::commitment));
    next_link(head, head_timestamp_ms, now_ms(), fields).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "process {} has no sequence numbers left",
            entry.entry().pid
        ))
    })
}

/// The first entry that does not verify, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An entry of another process is among the entries.
    #[error(
        "entry {sequence} ({document_id}) belongs to process {found_pid:?}, not {expected_pid:?}"
    )]
    OtherProcess {
        /// The entry's sequence number.
        sequence: u64,
        /// The entry's document id.
        document_id: String,
        /// The process being verified.
        expected_pid: String,
        /// The process the entry names.
        found_pid: String,
    },
    /// An entry is missing: the next one present has a later sequence number.
    #[error("entry {sequence} is missing: the next entry present is {next_sequence} ({next_document_id})")]
    Missing {
        /// The missing entry's sequence number.
        sequence: u64,
        /// The sequence number of the entry found in its place.
        next_sequence: u64,
        /// The document id of the entry found in its place.
        next_document_id: String,
    },
    /// An entry is present, but out of place: it comes after entry `after`.
    #[error("entry {sequence} ({document_id}) is out of order: it comes after entry {after}")]
    Reordered {
        /// The entry's sequence number.
        sequence: u64,
        /// The entry's document id.
        document_id: String,
        /// The sequence number of the entry it comes after.
        after: u64,
    },
    /// An entry's content does not hash to its entry hash.
    #[error(
        "entry {sequence} ({document_id}) was modified: its content does not match its entry hash"
    )]
    Modified {
        /// The entry's sequence number.
        sequence: u64,
        /// The entry's document id.
        document_id: String,
    },
    /// An entry's chain hash does not follow from the previous entry's.
    #[error("entry {sequence} ({document_id}) breaks the chain: its chain hash does not follow from the previous entry")]
    ChainBroken {
        /// The entry's sequence number.
        sequence: u64,
        /// The entry's document id.
        document_id: String,
    },
}

/// Verifies one process's entries fed in sequence order, one at a time.
#[derive(Debug, Clone)]
pub(crate) struct ChainVerifier {
    pid: String,
    head: ChainHead,
    /// Runs of erased entries (first, last), whose content could not be checked.
    erased: Vec<(u64, u64)>,
}

impl ChainVerifier {
    pub(crate) fn new(pid: &str) -> Self {
        Self {
            pid: pid.to_owned(),
            head: ChainHead {
                sequence: 0,
                chain_hash: genesis_hash(pid),
            },
            erased: Vec::new(),
        }
    }

    /// Checks that `entry` is the next one and that both its hashes verify, then moves past it.
    /// After an error the verifier stays where it was.
    pub(crate) fn push(&mut self, entry: &Entry) -> Result<(), ChainError> {
        if entry.pid != self.pid {
            return Err(ChainError::OtherProcess {
                sequence: entry.sequence,
                document_id: entry.document_id.clone(),
                expected_pid: self.pid.clone(),
                found_pid: entry.pid.clone(),
            });
        }
        let expected = self.head.sequence + 1;
        if entry.sequence > expected {
            return Err(ChainError::Missing {
                sequence: expected,
                next_sequence: entry.sequence,
                next_document_id: entry.document_id.clone(),
            });
        }
        if entry.sequence < expected {
            return Err(ChainError::Reordered {
                sequence: entry.sequence,
                document_id: entry.document_id.clone(),
                after: self.head.sequence,
            });
        }
        // An erased entry's content is gone: only its link can be checked.
        let recomputed = entry_hash(entry).unwrap_or(entry.entry_hash);
        if recomputed != entry.entry_hash {
            return Err(ChainError::Modified {
                sequence: entry.sequence,
                document_id: entry.document_id.clone(),
            });
        }
        let chained = chain_hash(&self.head.chain_hash, &recomputed);
        if chained != entry.chain_hash {
            return Err(ChainError::ChainBroken {
                sequence: entry.sequence,
                document_id: entry.document_id.clone(),
            });
        }
        self.head = ChainHead {
            sequence: entry.sequence,
            chain_hash: chained,
        };
        if entry.protection == Protection::Erased {
            match self.erased.last_mut() {
                Some((_, last)) if *last + 1 == entry.sequence => *last = entry.sequence,
                _ => self.erased.push((entry.sequence, entry.sequence)),
            }
        }
        Ok(())
    }

    pub(crate) fn head(&self) -> ChainHead {
        self.head
    }

    /// The runs of entries (first and last sequence) verified by their links only, because
    /// their process was erased.
    pub(crate) fn erased(&self) -> &[(u64, u64)] {
        &self.erased
    }
}

/// Verifies a process's entries from sequence 1 on and returns the head they lead to.
///
/// When an entry seems missing, the rest of the entries are scanned for it (in constant memory),
/// so that an entry that is present but out of place is reported as [`ChainError::Reordered`].
pub fn verify_chain(
    pid: &str,
    entries: impl IntoIterator<Item = Entry>,
) -> Result<ChainHead, ChainError> {
    verify_entries(pid, entries).map(|verifier| verifier.head())
}

/// [`verify_chain`], returning the verifier that went through the entries (for what it saw
/// besides the head: [`ChainVerifier::erased`]).
pub(crate) fn verify_entries(
    pid: &str,
    entries: impl IntoIterator<Item = Entry>,
) -> Result<ChainVerifier, ChainError> {
    let mut verifier = ChainVerifier::new(pid);
    let mut entries = entries.into_iter();
    while let Some(entry) = entries.next() {
        match verifier.push(&entry) {
            Ok(()) => {}
            Err(ChainError::Missing {
                sequence,
                next_sequence,
                next_document_id,
            }) => {
                let mut after = next_sequence;
                for later in entries {
                    if later.sequence == sequence {
                        return Err(ChainError::Reordered {
                            sequence,
                            document_id: later.document_id,
                            after,
                        });
                    }
                    after = later.sequence;
                }
                return Err(ChainError::Missing {
                    sequence,
                    next_sequence,
                    next_document_id,
                });
            }
            Err(error) => return Err(error),
        }
    }
    Ok(verifier)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;

    fn field(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u64).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    fn sha256(bytes: &[u8]) -> [u8; 32] {
        to_array(digest::digest(&SHA256, bytes))
    }

    /// Builds a chain the way a store does, from the functions under test.
    fn chain_of(pid: &str, count: u64) -> Vec<Entry> {
        let mut previous = genesis_hash(pid);
        (1..=count)
            .map(|sequence| {
                let mut entry = Entry {
                    pid: pid.to_owned(),
                    sequence,
                    document_id: format!("doc-{sequence}"),
                    timestamp_ms: 1_700_000_000_000 + sequence as i64,
                    client_id: "client-a".to_owned(),
                    header: json!({"@type": "ids:LogMessage", "n": sequence}),
                    payload: Bytes::from(format!("payload {sequence}")),
                    payload_type: "text/plain".to_owned(),
                    entry_hash: [0; 32],
                    chain_hash: [0; 32],
                    protection: Protection::Plaintext,
                };
                entry.entry_hash = entry_hash(&entry).unwrap();
                entry.chain_hash = chain_hash(&previous, &entry.entry_hash);
                previous = entry.chain_hash;
                entry
            })
            .collect()
    }

    #[test]
    fn entry_hash_matches_the_documented_encoding() {
        let entry = Entry {
            pid: "p".to_owned(),
            sequence: 1,
            document_id: "d".to_owned(),
            timestamp_ms: -2,
            client_id: "c".to_owned(),
            header: json!({"b": 1, "c": -0.5, "a": [true, null, "x\"\n\u{1}é/"]}),
            payload: Bytes::from_static(b"x"),
            payload_type: "".to_owned(),
            entry_hash: [0; 32],
            chain_hash: [0; 32],
            protection: Protection::Plaintext,
        };
        let mut expected = Vec::new();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 22]);
        expected.extend_from_slice(b"clearinghouse-entry-v1");
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, b'p']);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, b'd']);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 8]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, b'c']);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&field(&sha256(b"x")));
        expected.extend_from_slice(&field(
            "{\"a\":[true,null,\"x\\\"\\n\\u0001é/\"],\"b\":1,\"c\":-5e-1}".as_bytes(),
        ));

        assert_eq!(entry_hash(&entry), Some(sha256(&expected)));
        // The same digest computed outside Rust (Python hashlib over the bytes above), so that a
        // change to both the encoder and this test's byte layout cannot go unnoticed.
        assert_eq!(
            hex::encode(entry_hash(&entry).unwrap()),
            "0b91afa73d351aab71f1c5cc40fb34f7458ff56f17472b1266713ceba6ed333b"
        );
    }

    #[test]
    fn chain_hashes_follow_the_documented_formulas() {
        let mut genesis_input = b"clearinghouse-chain-v1".to_vec();
        genesis_input.extend_from_slice(b"p-1");
        assert_eq!(genesis_hash("p-1"), sha256(&genesis_input));

        let entries = chain_of("p-1", 2);
        let mut link = genesis_hash("p-1").to_vec();
        link.extend_from_slice(&entries[0].entry_hash);
        assert_eq!(entries[0].chain_hash, sha256(&link));
        let mut link = entries[0].chain_hash.to_vec();
        link.extend_from_slice(&entries[1].entry_hash);
        assert_eq!(entries[1].chain_hash, sha256(&link));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let value =
            json!({"z": {"b": [{"y": 1, "x": 2}], "a": -3}, "A": null, "é": "", "e": false});
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            r#"{"A":null,"e":false,"z":{"a":-3,"b":[{"x":2,"y":1}]},"é":""}"#
        );
    }

    #[test]
    fn canonical_numbers_keep_integers_and_write_doubles_in_shortest_scientific_form() {
        let value = json!([
            0,
            -7,
            u64::MAX,
            i64::MIN,
            0.5,
            100.0,
            -1.5e300,
            -0.0,
            1e-7,
            1.0715660391465826e-75
        ]);
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            "[0,-7,18446744073709551615,-9223372036854775808,5e-1,1e2,-1.5e300,-0e0,1e-7,1.0715660391465826e-75]"
        );
    }

    #[test]
    fn canonical_json_reads_back_as_the_same_value() {
        // Stores keep the canonical bytes and verifiers re-canonicalize what they read back, so
        // doubles must survive the trip bit for bit (serde_json's `float_roundtrip`).
        let value = json!({"f": [1.0715660391465826e-75, -1.81996730402717e-179, 1.603964615428183e143, 0.1, 100.0], "i": [1, -1]});
        let read_back: Value = serde_json::from_slice(&canonical_json(&value)).unwrap();
        assert_eq!(read_back, value);
        assert_eq!(canonical_json(&read_back), canonical_json(&value));
    }

    #[test]
    fn canonical_strings_are_escaped_like_serde_json() {
        let text: String = (0u8..0x80)
            .map(char::from)
            .chain("é€😀\u{2028}".chars())
            .collect();
        let value = Value::String(text);
        assert_eq!(canonical_json(&value), serde_json::to_vec(&value).unwrap());
    }

    /// The canonical writer as it was before it skipped sorting maps that iterate in order and
    /// scanned strings a word at a time: the encoding is hashed, so the writer must produce the
    /// same bytes on every shape a header can take.
    fn canonical_as_written_before(value: &Value, out: &mut String) {
        match value {
            Value::Null => out.push_str("null"),
            Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
            Value::Number(number) => match number.as_f64() {
                Some(float) if number.is_f64() => out.push_str(&format!("{float:e}")),
                _ => out.push_str(&number.to_string()),
            },
            Value::String(text) => {
                out.push('"');
                for c in text.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\u{8}' => out.push_str("\\b"),
                        '\t' => out.push_str("\\t"),
                        '\n' => out.push_str("\\n"),
                        '\u{c}' => out.push_str("\\f"),
                        '\r' => out.push_str("\\r"),
                        c if c < ' ' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            Value::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    canonical_as_written_before(item, out);
                }
                out.push(']');
            }
            Value::Object(members) => {
                let mut members: Vec<(&String, &Value)> = members.iter().collect();
                members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                out.push('{');
                for (index, (key, member)) in members.into_iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    canonical_as_written_before(&Value::String((*key).clone()), out);
                    out.push(':');
                    canonical_as_written_before(member, out);
                }
                out.push('}');
            }
        }
    }

    /// A pseudo-random JSON value (xorshift, so every run checks the same shapes): strings
    /// from pieces that need every kind of escape, and none, at word and byte boundaries;
    /// integers and doubles of every size; nested arrays and objects with keys that sort
    /// differently as bytes and as characters.
    fn shape(seed: &mut u64, depth: u32) -> Value {
        match next(seed) % if depth == 0 { 6 } else { 8 } {
            0 => Value::Null,
            1 => Value::Bool(next(seed).is_multiple_of(2)),
            2 => Value::from(next(seed) as i64 >> (next(seed) % 64)),
            3 => Value::from(next(seed) >> (next(seed) % 64)),
            4 => {
                let float = f64::from_bits(next(seed));
                Value::from(if float.is_finite() { float } else { 0.5 })
            }
            5 => Value::String(text(seed)),
            6 => Value::Array(
                (0..next(seed) % 5)
                    .map(|_| shape(seed, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..next(seed) % 6)
                    .map(|_| (text(seed), shape(seed, depth - 1)))
                    .collect(),
            ),
        }
    }

    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    fn text(seed: &mut u64) -> String {
        const PIECES: [&str; 14] = [
            "",
            "a",
            "plain text",
            "\"",
            "\\",
            "/",
            "\u{0}",
            "\u{1f}",
            "\n\r\t\u{8}\u{c}",
            "\u{7f}",
            "é",
            "€😀",
            "\u{2028}",
            "eyJhbGciOiJSUzI1NiJ9",
        ];
        (0..next(seed) % 6)
            .map(|_| PIECES[(next(seed) % PIECES.len() as u64) as usize])
            .collect()
    }

    #[test]
    fn canonical_json_is_written_as_before_on_many_shapes() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..5_000 {
            let value = shape(&mut seed, 4);
            let mut before = String::new();
            canonical_as_written_before(&value, &mut before);
            assert_eq!(canonical_json_string(&value), before, "{value}");
        }
        // A request header as connectors send it, with duplicate keys (the last one counts, as
        // in every reader of the header) and a number in every form JSON allows.
        let text = r#"{"@type":"ids:LogMessage","@id":"urn:m:1","z":1,"z":[2.50,-0,1E3,-0.0,12345678901234567890],"ids:issued":{"@value":"2026-12-03T18:00:00.000Z","@type":"xsd:dateTimeStamp"},"a\u00e9\/":"\ud83d\ude00"}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let mut before = String::new();
        canonical_as_written_before(&value, &mut before);
        assert_eq!(canonical_json_string(&value), before);
        assert_eq!(
            before,
            r#"{"@id":"urn:m:1","@type":"ids:LogMessage","aé/":"😀","ids:issued":{"@type":"xsd:dateTimeStamp","@value":"2026-12-03T18:00:00.000Z"},"z":[2.5e0,-0e0,1e3,-0e0,12345678901234567890]}"#
        );
    }

    /// The chain `append_link` computes for three entries, against hashes recorded from the
    /// code both backends appended with before it existed (`next_link` over
    /// `LinkFields::of(entry, canonical_json(header))`), so that existing stores and exports
    /// go on verifying. The head is dated in 2100, which fixes every entry's timestamp.
    #[test]
    fn append_link_chains_as_the_backends_did_before() {
        let recorded = [
            (
                "7d254b89b0313cb306c91a837cddd7df4504aad42adb791d7fecd98aa6eeef53",
                "5359e4c940c0fd92435183a78dfb3496f208c04214fc0fa5917e099697a18bac",
            ),
            (
                "3c54d03de32223146791f1bb92e4137bb45f535fc6e71f651fe21a4c11659a8c",
                "5f21a78272e3213c2bb3646956a55363bce7e4d2b6e2d574f12f1ff80e6de211",
            ),
            (
                "8ec001c19ed03c9037ac2cd4a841645f2a593259c6389423f86a0fcdb7e13a64",
                "b09634d720790031864e422155b338cf44d3e0710d614ba1063b446fcd68c66a",
            ),
        ];
        let head_timestamp_ms = 4_102_444_800_000;
        let mut head = ChainHead {
            sequence: 0,
            chain_hash: genesis_hash("p-vector"),
        };
        let mut stored = Vec::new();
        for (n, (entry_hash, chain_hash)) in (1u64..).zip(recorded) {
            let prepared = crate::store::NewEntry {
                pid: "p-vector".to_owned(),
                client_id: "client-a".to_owned(),
                header: json!({
                    "@type": "ids:LogMessage",
                    "n": n,
                    "x-ratio": 1.0715660391465826e-75,
                    "note": "tab\there \"q\" é\u{1}",
                }),
                payload: Bytes::from(format!("payload {n}")),
                payload_type: "text/plain".to_owned(),
            }
            .prepare()
            .with_document_id(format!("doc-{n}"));
            let link = append_link(&head, head_timestamp_ms, &prepared, None).unwrap();
            assert_eq!(
                (
                    link.sequence,
                    link.timestamp_ms,
                    hex::encode(link.entry_hash),
                    hex::encode(link.chain_hash)
                ),
                (
                    n,
                    head_timestamp_ms,
                    entry_hash.to_owned(),
                    chain_hash.to_owned()
                )
            );
            head = ChainHead {
                sequence: link.sequence,
                chain_hash: link.chain_hash,
            };
            stored.push(prepared.into_stored(&link, None));
        }
        assert_eq!(verify_chain("p-vector", stored), Ok(head));
    }

    #[test]
    fn append_link_refuses_a_process_without_sequence_numbers_left() {
        let prepared = crate::store::NewEntry {
            pid: "p-full".to_owned(),
            client_id: "c".to_owned(),
            header: json!({}),
            payload: Bytes::from_static(b"x"),
            payload_type: String::new(),
        }
        .prepare()
        .with_document_id("d".to_owned());
        let head = ChainHead {
            sequence: u64::MAX,
            chain_hash: [0; 32],
        };
        match append_link(&head, 0, &prepared, None) {
            Err(StoreError::Corrupt(detail)) => assert!(detail.contains("p-full"), "{detail}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn a_chain_of_three_verifies() {
        let entries = chain_of("p-1", 3);
        let head = verify_chain("p-1", entries.clone()).unwrap();
        assert_eq!(
            head,
            ChainHead {
                sequence: 3,
                chain_hash: entries[2].chain_hash
            }
        );
    }

    #[test]
    fn an_empty_chain_ends_at_the_genesis_hash() {
        assert_eq!(
            verify_chain("p-1", Vec::new()).unwrap(),
            ChainHead {
                sequence: 0,
                chain_hash: genesis_hash("p-1")
            }
        );
    }

    #[test]
    fn a_modified_payload_is_named() {
        let mut entries = chain_of("p-1", 3);
        entries[1].payload = Bytes::from_static(b"forged");
        assert_eq!(
            verify_chain("p-1", entries),
            Err(ChainError::Modified {
                sequence: 2,
                document_id: "doc-2".to_owned()
            })
        );
    }

    #[test]
    fn a_rehashed_modification_breaks_the_chain() {
        let mut entries = chain_of("p-1", 3);
        entries[1].header = json!({"forged": true});
        entries[1].entry_hash = entry_hash(&entries[1]).unwrap();
        assert_eq!(
            verify_chain("p-1", entries),
            Err(ChainError::ChainBroken {
                sequence: 2,
                document_id: "doc-2".to_owned()
            })
        );
    }

    #[test]
    fn a_deleted_entry_is_named_with_its_successor() {
        let mut entries = chain_of("p-1", 3);
        entries.remove(1);
        assert_eq!(
            verify_chain("p-1", entries),
            Err(ChainError::Missing {
                sequence: 2,
                next_sequence: 3,
                next_document_id: "doc-3".to_owned()
            })
        );
    }

    #[test]
    fn a_deleted_first_entry_is_named() {
        let mut entries = chain_of("p-1", 3);
        entries.remove(0);
        assert_eq!(
            verify_chain("p-1", entries),
            Err(ChainError::Missing {
                sequence: 1,
                next_sequence: 2,
                next_document_id: "doc-2".to_owned()
            })
        );
    }

    #[test]
    fn an_entry_moved_back_is_reported_as_reordered() {
        let mut entries = chain_of("p-1", 4);
        let moved = entries.remove(1);
        entries.push(moved);
        assert_eq!(
            verify_chain("p-1", entries),
            Err(ChainError::Reordered {
                sequence: 2,
                document_id: "doc-2".to_owned(),
                after: 4
            })
        );
    }

    #[test]
    fn a_repeated_entry_is_reported_as_reordered() {
        let mut entries = chain_of("p-1", 3);
        entries.insert(2, entries[0].clone());
        assert_eq!(
            verify_chain("p-1", entries),
            Err(ChainError::Reordered {
                sequence: 1,
                document_id: "doc-1".to_owned(),
                after: 2
            })
        );
    }

    #[test]
    fn an_entry_of_another_process_is_named() {
        let mut entries = chain_of("p-1", 2);
        entries[1] = chain_of("p-2", 2).remove(1);
        assert_eq!(
            verify_chain("p-1", entries),
            Err(ChainError::OtherProcess {
                sequence: 2,
                document_id: "doc-2".to_owned(),
                expected_pid: "p-1".to_owned(),
                found_pid: "p-2".to_owned()
            })
        );
    }

    /// The version 2 encoding to the byte, against digests computed outside Rust (Python's
    /// hmac and hashlib over the documented bytes).
    #[test]
    fn entry_hash_v2_matches_the_documented_encoding() {
        let entry = Entry {
            pid: "p".to_owned(),
            sequence: 1,
            document_id: "d".to_owned(),
            timestamp_ms: -2,
            client_id: "c".to_owned(),
            header: json!({"b": 1, "c": -0.5, "a": [true, null, "x\"\n\u{1}é/"]}),
            payload: Bytes::from_static(b"x"),
            payload_type: "".to_owned(),
            entry_hash: [0; 32],
            chain_hash: [0; 32],
            protection: Protection::Encrypted {
                commitment_key: [0x42; 32],
            },
        };
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[0x42; 32]);
        let commitment = content_commitment(&key, &sha256(b"x"), &canonical_json(&entry.header));
        assert_eq!(
            hex::encode(commitment),
            "3d6b31ee7d5feff57d7929926a5a2e3e070b9433fb73f005dd78a96604508a41"
        );
        let mut expected = field(b"clearinghouse-entry-v2");
        expected.extend_from_slice(&field(b"p"));
        expected.extend_from_slice(&field(&1u64.to_be_bytes()));
        expected.extend_from_slice(&field(b"d"));
        expected.extend_from_slice(&field(&(-2i64).to_be_bytes()));
        expected.extend_from_slice(&field(b"c"));
        expected.extend_from_slice(&field(b""));
        expected.extend_from_slice(&field(&commitment));
        assert_eq!(entry_hash(&entry), Some(sha256(&expected)));
        assert_eq!(
            hex::encode(entry_hash(&entry).unwrap()),
            "ad24c358a77ca091b2fa08287d554f2ae39c6ab392029b708e62b4d16d79e8cc"
        );
        // Without the key, a guessed payload cannot be confirmed: the v1 hash of the same
        // fields, which anyone can compute, is not it.
        let mut plain = entry.clone();
        plain.protection = Protection::Plaintext;
        assert_ne!(entry_hash(&plain), entry_hash(&entry));
    }

    /// What `append_link` computes for an encrypted process with data key `[5; 32]`, recorded
    /// when version 2 was introduced, so that encrypted stores and their exports go on verifying.
    #[test]
    fn append_link_chains_version_2_as_recorded() {
        let keys = crate::store::sealing::test_keys([5; 32]);
        let head = ChainHead {
            sequence: 0,
            chain_hash: genesis_hash("p-v2"),
        };
        let prepared = crate::store::NewEntry {
            pid: "p-v2".to_owned(),
            client_id: "client-a".to_owned(),
            header: json!({"@type": "ids:LogMessage", "marker": "secret"}),
            payload: Bytes::from_static(b"yes"),
            payload_type: "text/plain".to_owned(),
        }
        .prepare()
        .with_document_id("doc-1".to_owned());
        let link = append_link(&head, 4_102_444_800_000, &prepared, Some(&keys)).unwrap();
        assert_eq!(
            (hex::encode(link.entry_hash), hex::encode(link.chain_hash)),
            (V2_ENTRY_HASH.to_owned(), V2_CHAIN_HASH.to_owned())
        );
        let stored = prepared.into_stored(&link, Some(&keys));
        assert_eq!(entry_hash(&stored), Some(link.entry_hash));
        assert_eq!(
            verify_chain("p-v2", [stored]).map(|head| head.chain_hash),
            Ok(link.chain_hash)
        );
    }

    // Also computed outside Rust, from the documented derivation (Python's hmac and hashlib:
    // HKDF-SHA256 of the data key, the commitment, the entry hash, the chain hash).
    const V2_ENTRY_HASH: &str = "773223dda6ba57c546c6d9507cd96ddec572730362f1c9defb1a1b5f1263f50d";
    const V2_CHAIN_HASH: &str = "adc8aa9b65866c3b1e910b7fad241c058701ec89c4aa037fa288c5449d3642f2";

    #[test]
    fn erased_entries_verify_by_their_links_and_are_named() {
        let mut entries = chain_of("p-1", 4);
        for entry in &mut entries[1..3] {
            entry.protection = Protection::Erased;
            entry.payload = Bytes::new();
            entry.header = Value::Null;
        }
        let mut verifier = ChainVerifier::new("p-1");
        for entry in &entries {
            verifier.push(entry).unwrap();
        }
        assert_eq!(verifier.head().chain_hash, entries[3].chain_hash);
        assert_eq!(verifier.erased(), &[(2, 3)]);

        // A changed entry hash still breaks the chain where the content cannot be checked.
        entries[1].entry_hash[0] ^= 1;
        assert_eq!(
            verify_chain("p-1", entries),
            Err(ChainError::ChainBroken {
                sequence: 2,
                document_id: "doc-2".to_owned()
            })
        );
    }

    #[test]
    fn an_encrypted_entry_under_another_commitment_key_is_named() {
        let mut entries = chain_of("p-1", 1);
        let key = [8u8; 32];
        entries[0].protection = Protection::Encrypted {
            commitment_key: key,
        };
        entries[0].entry_hash = entry_hash(&entries[0]).unwrap();
        entries[0].chain_hash = chain_hash(&genesis_hash("p-1"), &entries[0].entry_hash);
        assert!(verify_chain("p-1", entries.clone()).is_ok());
        entries[0].protection = Protection::Encrypted {
            commitment_key: [9u8; 32],
        };
        assert_eq!(
            verify_chain("p-1", entries),
            Err(ChainError::Modified {
                sequence: 1,
                document_id: "doc-1".to_owned()
            })
        );
    }

    #[test]
    fn the_verifier_stays_put_after_an_error() {
        let entries = chain_of("p-1", 2);
        let mut verifier = ChainVerifier::new("p-1");
        verifier.push(&entries[0]).unwrap();
        let mut forged = entries[1].clone();
        forged.client_id = "mallory".to_owned();
        assert!(verifier.push(&forged).is_err());
        assert_eq!(verifier.head().sequence, 1);
        verifier.push(&entries[1]).unwrap();
        assert_eq!(verifier.head().chain_hash, entries[1].chain_hash);
    }
}

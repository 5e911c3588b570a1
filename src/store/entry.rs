//! What a caller asks to log, and the one preparation every append goes through.
//!
//! Before an entry can join its process's chain, its payload is hashed (SHA-256) and its header
//! written as canonical JSON (see [`chain`](super::chain)). Both depend only on what the caller
//! sent, not on the chain, so they are computed once per request, by the caller, before the
//! backend serializes its appends: [`PreparedEntry`] holds the results, and everything after it
//! takes them from there: the receipt's `payload_hash` claim, the entry hash both backends
//! compute through [`chain::append_link`](super::chain::append_link), the embedded store's
//! record and the MongoDB entry's `header` string. Nothing downstream hashes the payload or
//! canonicalizes the header again, and a backend's single writer (the embedded writer thread,
//! the MongoDB committer) does only what has to be serialized.
//!
//! Preparing costs about a millisecond per MiB of payload on a busy 2-core machine
//! (BENCHMARKS.md, "CPU work off the async workers"), so a caller on an async worker prepares an
//! entry whose payload reaches [`INLINE_PREPARATION_LIMIT`] on another thread
//! ([`NewEntry::prepares_inline`] tells; the log handler does so through `clearing::offload`).
//!
//! The document id is not the caller's: the backend assigns it as it appends
//! ([`PreparedEntry::with_document_id`]), a UUID v4 either way. The MongoDB backend draws it at
//! random; the embedded store derives it from a store-wide counter so that its index grows at
//! the end (see `embedded::document_ids`).

use bytes::Bytes;

use super::chain::{self, Link, LinkFields};
use super::sealing::{ProcessKeys, Protection};
use super::Entry;

/// Entries whose payload is at least this large are prepared on an offload thread; smaller ones
/// inline, where preparing costs less than the hand-over.
pub(crate) const INLINE_PREPARATION_LIMIT: usize = 64 * 1024;

/// What a caller asks to be logged; the store adds document id, sequence, timestamp and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    /// The process to append to.
    pub pid: String,
    /// The connector that logs the entry.
    pub client_id: String,
    /// The IDS JSON-LD header, already stripped of its tokens by the caller.
    pub header: serde_json::Value,
    /// The logged bytes.
    pub payload: Bytes,
    /// The payload's media type, `""` if none was given.
    pub payload_type: String,
}

impl NewEntry {
    /// Whether [`NewEntry::prepare`] costs less than handing it to another thread.
    pub(crate) fn prepares_inline(&self) -> bool {
        self.payload.len() < INLINE_PREPARATION_LIMIT
    }

    /// Hashes the payload and canonicalizes the header, once: see the module documentation.
    pub fn prepare(self) -> PreparedEntry {
        PreparedEntry {
            payload_sha256: chain::payload_hash(&self.payload),
            canonical_header: chain::canonical_json_string(&self.header),
            entry: self,
            document_id: String::new(),
        }
    }
}

/// A [`NewEntry`] with its payload's SHA-256 and its header's canonical JSON, as
/// [`ProcessStore::append`](super::ProcessStore::append) takes it. Built only by
/// [`NewEntry::prepare`], and its fields are private, so that neither can disagree with the
/// entry they were computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedEntry {
    entry: NewEntry,
    payload_sha256: [u8; 32],
    canonical_header: String,
    /// Empty until the backend assigns it, before the entry is linked or stored.
    document_id: String,
}

impl PreparedEntry {
    /// The entry as the caller asked for it.
    pub fn entry(&self) -> &NewEntry {
        &self.entry
    }

    /// The payload's SHA-256, as the entry hash and the receipt's `payload_hash` claim take it.
    pub fn payload_sha256(&self) -> &[u8; 32] {
        &self.payload_sha256
    }

    /// The header's canonical JSON, as the entry hash takes it and the backends store it.
    pub fn canonical_header(&self) -> &str {
        &self.canonical_header
    }

    /// The document id the backend assigned (empty before it did).
    pub fn document_id(&self) -> &str {
        &self.document_id
    }

    /// The entry with the document id its backend assigned: a UUID v4, unique in the store.
    /// Backends call this first in their append, before the id enters the entry hash.
    pub(crate) fn with_document_id(self, document_id: String) -> Self {
        Self {
            document_id,
            ..self
        }
    }

    /// The caller's part of the entry's hashed fields; `commitment_key` for an encrypted
    /// process.
    pub(crate) fn link_fields<'a>(
        &'a self,
        commitment_key: Option<&'a ring::hmac::Key>,
    ) -> LinkFields<'a> {
        LinkFields {
            pid: &self.entry.pid,
            document_id: &self.document_id,
            client_id: &self.entry.client_id,
            payload_type: &self.entry.payload_type,
            payload_hash: &self.payload_sha256,
            canonical_header: self.canonical_header.as_bytes(),
            commitment_key,
        }
    }

    /// The entry as stored once `link` (computed from this entry, with `keys` when its process
    /// is encrypted) joined it to the chain.
    pub(crate) fn into_stored(self, link: &Link, keys: Option<&ProcessKeys>) -> Entry {
        let document_id = self.document_id;
        let NewEntry {
            pid,
            client_id,
            header,
            payload,
            payload_type,
        } = self.entry;
        Entry {
            pid,
            sequence: link.sequence,
            document_id,
            timestamp_ms: link.timestamp_ms,
            client_id,
            header,
            payload,
            payload_type,
            entry_hash: link.entry_hash,
            chain_hash: link.chain_hash,
            protection: match keys {
                Some(keys) => Protection::Encrypted {
                    commitment_key: keys.commitment_key(),
                },
                None => Protection::Plaintext,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::chain::{self, ChainHead};

    fn entry_with(payload: Bytes) -> NewEntry {
        NewEntry {
            pid: "p-1".to_owned(),
            client_id: "client-a".to_owned(),
            header: json!({"b": [1, 0.5], "a": "é\n"}),
            payload,
            payload_type: "text/plain".to_owned(),
        }
    }

    #[test]
    fn preparing_computes_the_plain_sha256_and_canonical_header_the_chain_expects() {
        let prepared = entry_with(Bytes::from_static(b"abc"))
            .prepare()
            .with_document_id("d-1".to_owned());
        // SHA-256("abc") from FIPS 180-2, appendix B.1.
        assert_eq!(
            hex::encode(prepared.payload_sha256()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(prepared.canonical_header(), r#"{"a":"é\n","b":[1,5e-1]}"#);
        let fields = prepared.link_fields(None);
        assert_eq!(fields.payload_hash, prepared.payload_sha256());
        assert_eq!(
            fields.canonical_header,
            prepared.canonical_header().as_bytes()
        );

        // What the chain computes from the prepared digest is what a verifier recomputes from
        // the stored entry's own bytes.
        let head = ChainHead {
            sequence: 0,
            chain_hash: chain::genesis_hash("p-1"),
        };
        let link = chain::append_link(&head, 0, &prepared, None).unwrap();
        let stored = prepared.into_stored(&link, None);
        assert_eq!(chain::entry_hash(&stored), Some(link.entry_hash));
    }

    #[test]
    fn entries_from_the_inline_limit_on_are_prepared_elsewhere() {
        let below = entry_with(Bytes::from(vec![0; INLINE_PREPARATION_LIMIT - 1]));
        let at = entry_with(Bytes::from(vec![0; INLINE_PREPARATION_LIMIT]));
        assert!(below.prepares_inline());
        assert!(!at.prepares_inline());
    }
}

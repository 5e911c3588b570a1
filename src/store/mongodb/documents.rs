//! The MongoDB backend's documents: what a process and an entry look like in their collections,
//! and how they turn into the store's types and back.
//!
//! Collection `processes`, one document per process:
//!
//! ```text
//! { _id:        <pid: string>,
//!   owners:     [<client id: string>, ...],       // sorted, no duplicates
//!   created_at: <Date>,                           // UTC milliseconds
//!   head: { sequence:   <Int64>,                  // of the latest entry in the chain, 0 if none
//!           chain_hash: <BinData 0, 32 bytes>,    // its chain hash (the genesis hash if none)
//!           timestamp:  <Date> } }                // its timestamp (created_at if none)
//! ```
//!
//! Collection `entries`, one document per entry:
//!
//! ```text
//! { _id:          <document id: string>,
//!   pid:          <string>,
//!   sequence:     <Int64>,                        // 1, 2, 3, ... per pid
//!   timestamp:    <Date>,                         // UTC milliseconds
//!   client_id:    <string>,
//!   payload_type: <string>,                       // "" when the payload has no media type
//!   header:       <string>,                       // the header's canonical JSON (see chain)
//!   payload:      <BinData 0>,
//!   entry_hash:   <BinData 0, 32 bytes>,
//!   chain_hash:   <BinData 0, 32 bytes> }
//! ```
//!
//! The header is stored as its canonical JSON *string*, not as a BSON document: header keys
//! come from clients, and MongoDB gives keys starting with `$` or containing `.` a meaning of
//! their own, so a string is the only form that is stored and returned exactly as it was hashed.
//! A BSON document is limited to 16 MiB, so payload plus header must stay below that.
//!
//! Every decoding failure is [`StoreError::Corrupt`] naming the document: a document that does
//! not have this shape was not written by a clearing house.

use bytes::Bytes;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, DateTime};
use serde::{Deserialize, Serialize};

use crate::store::chain::Link;
use crate::store::{Entry, PreparedEntry, Process, StoreError};

/// The state of a process's chain, as its `head` subdocument holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) pid: String,
    pub(super) sequence: u64,
    pub(super) chain_hash: [u8; 32],
    pub(super) timestamp_ms: i64,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ProcessDocument {
    #[serde(rename = "_id")]
    pub(super) pid: String,
    pub(super) owners: Vec<String>,
    pub(super) created_at: DateTime,
    pub(super) head: HeadDocument,
}

impl ProcessDocument {
    pub(super) fn decode(self) -> Result<(Process, Head), StoreError> {
        let head = self.head.decode(&self.pid)?;
        Ok((
            Process {
                pid: self.pid,
                owners: self.owners.into_iter().collect(),
                created_at_ms: self.created_at.timestamp_millis(),
            },
            head,
        ))
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct HeadDocument {
    pub(super) sequence: i64,
    pub(super) chain_hash: Binary,
    pub(super) timestamp: DateTime,
}

impl HeadDocument {
    pub(super) fn decode(self, pid: &str) -> Result<Head, StoreError> {
        Ok(Head {
            pid: pid.to_owned(),
            sequence: to_u64(self.sequence)?,
            chain_hash: hash(&self.chain_hash, || format!("head of process {pid}"))?,
            timestamp_ms: self.timestamp.timestamp_millis(),
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct EntryDocument {
    #[serde(rename = "_id")]
    pub(super) document_id: String,
    pub(super) pid: String,
    pub(super) sequence: i64,
    pub(super) timestamp: DateTime,
    pub(super) client_id: String,
    pub(super) payload_type: String,
    pub(super) header: String,
    pub(super) payload: Binary,
    pub(super) entry_hash: Binary,
    pub(super) chain_hash: Binary,
}

impl EntryDocument {
    /// The document of `prepared` once `link` joined it to the chain: the header is the
    /// canonical JSON the entry hash was computed from.
    pub(super) fn new(prepared: &PreparedEntry, link: &Link) -> Result<Self, StoreError> {
        let entry = prepared.entry();
        Ok(Self {
            document_id: entry.document_id.clone(),
            pid: entry.pid.clone(),
            sequence: to_i64(link.sequence)?,
            timestamp: DateTime::from_millis(link.timestamp_ms),
            client_id: entry.client_id.clone(),
            payload_type: entry.payload_type.clone(),
            header: prepared.canonical_header().to_owned(),
            payload: binary(entry.payload.to_vec()),
            entry_hash: binary(link.entry_hash.to_vec()),
            chain_hash: binary(link.chain_hash.to_vec()),
        })
    }

    pub(super) fn decode(self) -> Result<Entry, StoreError> {
        let name = || {
            format!(
                "entry {}/{} ({})",
                self.pid, self.sequence, self.document_id
            )
        };
        let header = serde_json::from_str(&self.header).map_err(|error| {
            StoreError::Corrupt(format!("{}: header is not JSON: {error}", name()))
        })?;
        let entry_hash = hash(&self.entry_hash, name)?;
        let chain_hash = hash(&self.chain_hash, name)?;
        Ok(Entry {
            sequence: to_u64(self.sequence)?,
            pid: self.pid,
            document_id: self.document_id,
            timestamp_ms: self.timestamp.timestamp_millis(),
            client_id: self.client_id,
            header,
            payload: Bytes::from(self.payload.bytes),
            payload_type: self.payload_type,
            entry_hash,
            chain_hash,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct SequenceOnly {
    pub(super) sequence: i64,
}

#[derive(Deserialize)]
pub(super) struct PidOnly {
    #[serde(rename = "_id")]
    pub(super) pid: String,
}

pub(super) fn binary(bytes: Vec<u8>) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    }
}

pub(super) fn hash(stored: &Binary, name: impl FnOnce() -> String) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(stored.bytes.as_slice())
        .map_err(|_| StoreError::Corrupt(format!("{}: a hash is not 32 bytes", name())))
}

/// Sequences are unsigned in the store's API and Int64 in BSON; both stay far below 2^63.
pub(super) fn to_i64(sequence: u64) -> Result<i64, StoreError> {
    i64::try_from(sequence)
        .map_err(|_| StoreError::Corrupt(format!("sequence {sequence} does not fit in BSON")))
}

pub(super) fn to_u64(sequence: i64) -> Result<u64, StoreError> {
    u64::try_from(sequence)
        .map_err(|_| StoreError::Corrupt(format!("stored sequence {sequence} is negative")))
}

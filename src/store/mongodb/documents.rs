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
//!           timestamp:  <Date> },                 // its timestamp (created_at if none)
//!   data_key: { kek: <string>,                    // encrypted processes: the wrapped data key
//!               wrapped: <BinData 0, 60 bytes> }, //   and the id of the KEK wrapping it
//!   erasure: { by: <string>, at: <Date> } }       // erased processes, instead of data_key
//! ```
//!
//! A process with neither `data_key` nor `erasure` is a plaintext one (see `sealing`).
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
//!   header:       <string>,                       // the header's canonical JSON (see chain),
//!                                                 //   "" when sealed
//!   sealed_header: <BinData 0>,                   // encrypted processes only: the sealed header
//!   payload:      <BinData 0>,                    // sealed in encrypted processes
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
use crate::store::sealing::{
    EntryKeys, Erasure, Field, KeyState, Place, ProcessKeys, Protection, WrappedKey,
};
use crate::store::{Entry, PreparedEntry, Process, ProcessContent, StoreError};

/// The state of a process's chain, as its `head` subdocument holds it, and the process's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) pid: String,
    pub(super) sequence: u64,
    pub(super) chain_hash: [u8; 32],
    pub(super) timestamp_ms: i64,
    pub(super) keys: KeyState,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ProcessDocument {
    #[serde(rename = "_id")]
    pub(super) pid: String,
    pub(super) owners: Vec<String>,
    pub(super) created_at: DateTime,
    pub(super) head: HeadDocument,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) data_key: Option<DataKeyDocument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) erasure: Option<ErasureDocument>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct DataKeyDocument {
    pub(super) kek: String,
    pub(super) wrapped: Binary,
}

impl DataKeyDocument {
    pub(super) fn new(key: &WrappedKey) -> Self {
        Self {
            kek: key.kek_id.clone(),
            wrapped: binary(key.wrapped.clone()),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct ErasureDocument {
    pub(super) by: String,
    pub(super) at: DateTime,
}

impl ProcessDocument {
    pub(super) fn decode(self) -> Result<(Process, Head), StoreError> {
        let keys = match (self.data_key, self.erasure) {
            (_, Some(erasure)) => KeyState::Erased(Erasure {
                by: erasure.by,
                at_ms: erasure.at.timestamp_millis(),
            }),
            (Some(key), None) => KeyState::Wrapped(WrappedKey {
                kek_id: key.kek,
                wrapped: key.wrapped.bytes,
            }),
            (None, None) => KeyState::Plaintext,
        };
        let head = self.head.decode(&self.pid, keys)?;
        Ok((
            Process {
                pid: self.pid,
                owners: self.owners.into_iter().collect(),
                created_at_ms: self.created_at.timestamp_millis(),
                content: ProcessContent::of(&head.keys),
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
    fn decode(self, pid: &str, keys: KeyState) -> Result<Head, StoreError> {
        Ok(Head {
            pid: pid.to_owned(),
            sequence: to_u64(self.sequence)?,
            chain_hash: hash(&self.chain_hash, || format!("head of process {pid}"))?,
            timestamp_ms: self.timestamp.timestamp_millis(),
            keys,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) sealed_header: Option<Binary>,
    pub(super) payload: Binary,
    pub(super) entry_hash: Binary,
    pub(super) chain_hash: Binary,
}

impl EntryDocument {
    /// The document of `prepared` once `link` joined it to the chain: the header is the
    /// canonical JSON the entry hash was computed from; header and payload are sealed when
    /// `sealing` gives the process's keys.
    pub(super) fn new(
        prepared: &PreparedEntry,
        link: &Link,
        sealing: Option<(&ProcessKeys, &ring::rand::SystemRandom)>,
    ) -> Result<Self, StoreError> {
        let entry = prepared.entry();
        let place = Place {
            pid: &entry.pid,
            sequence: link.sequence,
            document_id: prepared.document_id(),
        };
        let (header, sealed_header, payload) = match sealing {
            None => (
                prepared.canonical_header().to_owned(),
                None,
                entry.payload.to_vec(),
            ),
            Some((keys, random)) => (
                String::new(),
                Some(binary(keys.seal(
                    random,
                    place,
                    Field::Header,
                    prepared.canonical_header().as_bytes(),
                ))),
                keys.seal(random, place, Field::Payload, &entry.payload),
            ),
        };
        Ok(Self {
            document_id: prepared.document_id().to_owned(),
            pid: entry.pid.clone(),
            sequence: to_i64(link.sequence)?,
            timestamp: DateTime::from_millis(link.timestamp_ms),
            client_id: entry.client_id.clone(),
            payload_type: entry.payload_type.clone(),
            header,
            sealed_header,
            payload: binary(payload),
            entry_hash: binary(link.entry_hash.to_vec()),
            chain_hash: binary(link.chain_hash.to_vec()),
        })
    }

    /// The stored bytes of payload and header, as a page's size is counted.
    pub(super) fn stored_bytes(&self) -> usize {
        self.payload.bytes.len()
            + self.header.len()
            + self
                .sealed_header
                .as_ref()
                .map_or(0, |sealed| sealed.bytes.len())
    }

    /// The entry, read with `keys` (how its process's entries are read).
    pub(super) fn decode(self, keys: &EntryKeys) -> Result<Entry, StoreError> {
        let name = format!(
            "entry {}/{} ({})",
            self.pid, self.sequence, self.document_id
        );
        let corrupt = |problem: &str| StoreError::Corrupt(format!("{name}: {problem}"));
        let sequence = to_u64(self.sequence)?;
        let place = Place {
            pid: &self.pid,
            sequence,
            document_id: &self.document_id,
        };
        let (header, payload, protection) = match (self.sealed_header, keys) {
            (None, _) => (
                self.header.into_bytes(),
                self.payload.bytes,
                Protection::Plaintext,
            ),
            (Some(_), EntryKeys::Erased) => (Vec::new(), Vec::new(), Protection::Erased),
            (Some(_), EntryKeys::Plaintext) => {
                return Err(corrupt("is sealed, but its process has no data key"))
            }
            (Some(sealed_header), EntryKeys::Keys(keys)) => {
                let open = |field: Field, what: &str, sealed: &[u8]| {
                    keys.open(place, field, sealed).ok_or_else(|| {
                        corrupt(&format!("its {what} does not decrypt: it was modified, or moved from another entry or process"))
                    })
                };
                (
                    open(Field::Header, "header", &sealed_header.bytes)?,
                    open(Field::Payload, "payload", &self.payload.bytes)?,
                    Protection::Encrypted {
                        commitment_key: keys.commitment_key(),
                    },
                )
            }
        };
        let header = match protection {
            Protection::Erased => serde_json::Value::Null,
            _ => serde_json::from_slice(&header)
                .map_err(|error| corrupt(&format!("header is not JSON: {error}")))?,
        };
        let entry_hash = hash(&self.entry_hash, || name.clone())?;
        let chain_hash = hash(&self.chain_hash, || name.clone())?;
        Ok(Entry {
            sequence,
            pid: self.pid,
            document_id: self.document_id,
            timestamp_ms: self.timestamp.timestamp_millis(),
            client_id: self.client_id,
            header,
            payload: Bytes::from(payload),
            payload_type: self.payload_type,
            entry_hash,
            chain_hash,
            protection,
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

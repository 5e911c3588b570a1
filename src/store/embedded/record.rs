//! The embedded store's records: how a process and an entry are laid out as the bytes of a redb
//! value, and read back.
//!
//! Records are a compact binary encoding rather than JSON, so that payloads of several MiB are
//! stored as they are (no base64) and read back without copying twice. Both start with a format
//! byte, then fixed-width fields (integers big-endian, hashes as 32 raw bytes), then
//! variable-width fields each prefixed by its byte length as a big-endian u64:
//! - entry record: format, timestamp_ms (i64), entry_hash, chain_hash, document_id, client_id,
//!   payload_type, header, payload (pid and sequence are the key). Format 1: header and payload
//!   in the clear (the header as canonical JSON); format 2: both sealed (see
//!   [`sealing`](crate::store::sealing)).
//! - process record: format, created_at_ms (i64), head sequence (u64), head timestamp_ms (i64),
//!   head chain hash, number of owners (u64), then each owner. Format 2 adds the key state: one
//!   byte, 1 for a wrapped data key (then the KEK id and the wrapped key as fields), 2 for an
//!   erased one (then the erasure time, i64, and who erased it as a field). Format 1 is a
//!   plaintext process, as every process was before encryption.
//!
//! Both the writer and the reads decode records, and a record that does not decode means the
//! file was damaged, so every decoding failure is [`StoreError::Corrupt`] naming the record.

use std::collections::BTreeSet;
use std::ops::Range;

use bytes::Bytes;
use redb::ReadableTable;

use crate::store::chain::{ChainHead, Link};
use crate::store::sealing::{
    EntryKeys, Erasure, Field, KeyState, Place, ProcessKeys, Protection, WrappedKey,
};
use crate::store::{Entry, PreparedEntry, Process, ProcessContent, ProcessInfo, StoreError};

/// Plaintext entries and processes without a data key.
const PLAIN_FORMAT: u8 = 1;
/// Sealed entries, and processes with a key state.
const SEALED_FORMAT: u8 = 2;
const KEY_WRAPPED: u8 = 1;
const KEY_ERASED: u8 = 2;

pub(super) fn read_head(
    processes: &impl ReadableTable<&'static str, &'static [u8]>,
    pid: &str,
) -> Result<Option<ProcessHead>, StoreError> {
    match processes.get(pid)? {
        Some(record) => ProcessHead::decode(pid, record.value()).map(Some),
        None => Ok(None),
    }
}

/// A process and the state of its chain.
#[derive(Clone)]
pub(super) struct ProcessHead {
    pub(super) owners: BTreeSet<String>,
    pub(super) created_at_ms: i64,
    pub(super) sequence: u64,
    pub(super) timestamp_ms: i64,
    pub(super) chain_hash: [u8; 32],
    pub(super) keys: KeyState,
}

impl ProcessHead {
    pub(super) fn process(self, pid: String) -> Process {
        Process {
            pid,
            owners: self.owners,
            created_at_ms: self.created_at_ms,
            content: ProcessContent::of(&self.keys),
        }
    }

    pub(super) fn info(self, pid: String) -> ProcessInfo {
        let head = ChainHead {
            sequence: self.sequence,
            chain_hash: self.chain_hash,
        };
        ProcessInfo {
            process: self.process(pid),
            head,
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let format = match self.keys {
            KeyState::Plaintext => PLAIN_FORMAT,
            _ => SEALED_FORMAT,
        };
        let mut record = vec![format];
        record.extend_from_slice(&self.created_at_ms.to_be_bytes());
        record.extend_from_slice(&self.sequence.to_be_bytes());
        record.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        record.extend_from_slice(&self.chain_hash);
        record.extend_from_slice(&(self.owners.len() as u64).to_be_bytes());
        for owner in &self.owners {
            put_field(&mut record, owner.as_bytes());
        }
        match &self.keys {
            KeyState::Plaintext => {}
            KeyState::Wrapped(key) => {
                record.push(KEY_WRAPPED);
                put_field(&mut record, key.kek_id.as_bytes());
                put_field(&mut record, &key.wrapped);
            }
            KeyState::Erased(erasure) => {
                record.push(KEY_ERASED);
                record.extend_from_slice(&erasure.at_ms.to_be_bytes());
                put_field(&mut record, erasure.by.as_bytes());
            }
        }
        record
    }

    pub(super) fn decode(pid: &str, record: &[u8]) -> Result<Self, StoreError> {
        let (mut reader, format) = RecordReader::new(record, RecordName::Process(pid))?;
        let created_at_ms = reader.i64()?;
        let sequence = reader.u64()?;
        let timestamp_ms = reader.i64()?;
        let chain_hash = reader.hash()?;
        let mut owners = BTreeSet::new();
        for _ in 0..reader.u64()? {
            let owner = reader.field()?;
            owners.insert(reader.string(owner)?);
        }
        let keys = match format {
            PLAIN_FORMAT => KeyState::Plaintext,
            _ => match reader.array::<1>()? {
                [KEY_WRAPPED] => {
                    let kek_id = reader.field()?;
                    let kek_id = reader.string(kek_id)?;
                    let wrapped = reader.field()?;
                    KeyState::Wrapped(WrappedKey {
                        kek_id,
                        wrapped: record[wrapped].to_vec(),
                    })
                }
                [KEY_ERASED] => {
                    let at_ms = reader.i64()?;
                    let by = reader.field()?;
                    KeyState::Erased(Erasure {
                        by: reader.string(by)?,
                        at_ms,
                    })
                }
                [other] => return Err(reader.corrupt(&format!("unknown key state {other}"))),
            },
        };
        reader.finish()?;
        Ok(Self {
            owners,
            created_at_ms,
            sequence,
            timestamp_ms,
            chain_hash,
            keys,
        })
    }
}

/// The record of `prepared` once `link` joined it to the chain; sealed when `sealing` gives the
/// process's keys (and the random source for the nonces).
pub(super) fn encode_entry(
    prepared: &PreparedEntry,
    link: &Link,
    sealing: Option<(&ProcessKeys, &ring::rand::SystemRandom)>,
) -> Vec<u8> {
    let entry = prepared.entry();
    let place = Place {
        pid: &entry.pid,
        sequence: link.sequence,
        document_id: prepared.document_id(),
    };
    let sealed = sealing.map(|(keys, random)| {
        (
            keys.seal(
                random,
                place,
                Field::Header,
                prepared.canonical_header().as_bytes(),
            ),
            keys.seal(random, place, Field::Payload, &entry.payload),
        )
    });
    let (format, canonical_header, payload): (u8, &[u8], &[u8]) = match &sealed {
        Some((header, payload)) => (SEALED_FORMAT, header, payload),
        None => (
            PLAIN_FORMAT,
            prepared.canonical_header().as_bytes(),
            &entry.payload,
        ),
    };
    let mut record = Vec::with_capacity(
        1 + 8
            + 32
            + 32
            + 5 * 8
            + prepared.document_id().len()
            + entry.client_id.len()
            + entry.payload_type.len()
            + canonical_header.len()
            + payload.len(),
    );
    record.push(format);
    record.extend_from_slice(&link.timestamp_ms.to_be_bytes());
    record.extend_from_slice(&link.entry_hash);
    record.extend_from_slice(&link.chain_hash);
    put_field(&mut record, prepared.document_id().as_bytes());
    put_field(&mut record, entry.client_id.as_bytes());
    put_field(&mut record, entry.payload_type.as_bytes());
    put_field(&mut record, canonical_header);
    put_field(&mut record, payload);
    record
}

/// The entry a record holds; `keys` are how its process's entries are read.
pub(super) fn decode_entry(
    pid: &str,
    sequence: u64,
    record: &[u8],
    keys: &EntryKeys,
) -> Result<Entry, StoreError> {
    // One copy out of the database; the payload is then a slice of it rather than a second copy.
    let record = Bytes::copy_from_slice(record);
    let (mut reader, format) = RecordReader::new(&record, RecordName::Entry(pid, sequence))?;
    let timestamp_ms = reader.i64()?;
    let entry_hash = reader.hash()?;
    let chain_hash = reader.hash()?;
    let document_id = reader.field()?;
    let document_id = reader.string(document_id)?;
    let client_id = reader.field()?;
    let client_id = reader.string(client_id)?;
    let payload_type = reader.field()?;
    let payload_type = reader.string(payload_type)?;
    let header = reader.field()?;
    let payload = reader.field()?;
    reader.finish()?;
    let place = Place {
        pid,
        sequence,
        document_id: &document_id,
    };
    let (header, payload, protection) = match (format, keys) {
        (PLAIN_FORMAT, _) => (
            record.slice(header),
            record.slice(payload),
            Protection::Plaintext,
        ),
        (_, EntryKeys::Erased) => (Bytes::new(), Bytes::new(), Protection::Erased),
        (_, EntryKeys::Plaintext) => {
            return Err(reader.corrupt("is sealed, but its process has no data key"))
        }
        (_, EntryKeys::Keys(keys)) => {
            let open = |field: Field, range: Range<usize>| {
                keys.open(place, field, &record[range]).ok_or_else(|| {
                    reader.corrupt(&format!(
                        "({document_id}) its {} does not decrypt: it was modified, or moved from another entry or process",
                        field.name()
                    ))
                })
            };
            (
                Bytes::from(open(Field::Header, header)?),
                Bytes::from(open(Field::Payload, payload)?),
                Protection::Encrypted {
                    commitment_key: keys.commitment_key(),
                },
            )
        }
    };
    let header = match protection {
        Protection::Erased => serde_json::Value::Null,
        _ => serde_json::from_slice(&header)
            .map_err(|error| reader.corrupt(&format!("header is not JSON: {error}")))?,
    };
    Ok(Entry {
        pid: pid.to_owned(),
        sequence,
        document_id,
        timestamp_ms,
        client_id,
        header,
        payload,
        payload_type,
        entry_hash,
        chain_hash,
        protection,
    })
}

fn put_field(record: &mut Vec<u8>, bytes: &[u8]) {
    record.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    record.extend_from_slice(bytes);
}

/// Which record a [`RecordReader`] reads, for naming it in errors.
#[derive(Clone, Copy)]
enum RecordName<'a> {
    Process(&'a str),
    Entry(&'a str, u64),
}

impl std::fmt::Display for RecordName<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Process(pid) => write!(formatter, "process {pid}"),
            Self::Entry(pid, sequence) => write!(formatter, "entry {pid}/{sequence}"),
        }
    }
}

/// Reads a record front to back; every failure names the record, since it means corruption.
struct RecordReader<'a> {
    record: &'a [u8],
    position: usize,
    name: RecordName<'a>,
}

impl<'a> RecordReader<'a> {
    /// A reader past the format byte, and the format.
    fn new(record: &'a [u8], name: RecordName<'a>) -> Result<(Self, u8), StoreError> {
        let mut reader = Self {
            record,
            position: 0,
            name,
        };
        match reader.array::<1>()? {
            [format @ (PLAIN_FORMAT | SEALED_FORMAT)] => Ok((reader, format)),
            [other] => Err(reader.corrupt(&format!("unknown record format {other}"))),
        }
    }

    fn corrupt(&self, problem: &str) -> StoreError {
        StoreError::Corrupt(format!("{}: {problem}", self.name))
    }

    fn take(&mut self, length: usize) -> Result<Range<usize>, StoreError> {
        let start = self.position;
        match start.checked_add(length) {
            Some(end) if end <= self.record.len() => {
                self.position = end;
                Ok(start..end)
            }
            _ => Err(self.corrupt("record is truncated")),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let range = self.take(N)?;
        let mut array = [0u8; N];
        array.copy_from_slice(&self.record[range]);
        Ok(array)
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        self.array().map(u64::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, StoreError> {
        self.array().map(i64::from_be_bytes)
    }

    fn hash(&mut self) -> Result<[u8; 32], StoreError> {
        self.array()
    }

    /// A length-prefixed field, as a range of the record.
    fn field(&mut self) -> Result<Range<usize>, StoreError> {
        let length = usize::try_from(self.u64()?)
            .map_err(|_| self.corrupt("field length exceeds the address space"))?;
        self.take(length)
    }

    fn string(&self, range: Range<usize>) -> Result<String, StoreError> {
        String::from_utf8(self.record[range].to_vec())
            .map_err(|_| self.corrupt("text field is not UTF-8"))
    }

    fn finish(&self) -> Result<(), StoreError> {
        if self.position == self.record.len() {
            Ok(())
        } else {
            Err(self.corrupt("trailing bytes after the record"))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::NewEntry;

    /// An entry as prepared, and the link a chain gave it.
    fn sample_entry() -> (PreparedEntry, Link) {
        let entry = NewEntry {
            pid: "p-1".to_owned(),
            client_id: "SKI:keyid:AKI".to_owned(),
            header: json!({"@type": "ids:LogMessage", "ids:modelVersion": "4.2.7"}),
            payload: Bytes::from_static(b"\x00\x01 binary"),
            payload_type: "application/octet-stream".to_owned(),
        };
        let link = Link {
            sequence: 7,
            timestamp_ms: 1_700_000_000_123,
            entry_hash: [1; 32],
            chain_hash: [2; 32],
        };
        let prepared = entry
            .prepare()
            .with_document_id("7d3f5d2e-1f0b-4c55-9a51-0c7f3f4b9e11".to_owned());
        (prepared, link)
    }

    #[test]
    fn an_entry_record_round_trips() {
        let (prepared, link) = sample_entry();
        let record = encode_entry(&prepared, &link, None);
        assert_eq!(
            decode_entry("p-1", 7, &record, &EntryKeys::Plaintext).unwrap(),
            prepared.clone().into_stored(&link, None)
        );

        let keys = std::sync::Arc::new(crate::store::sealing::test_keys([1; 32]));
        let random = ring::rand::SystemRandom::new();
        let sealed = encode_entry(&prepared, &link, Some((&keys, &random)));
        assert!(!sealed.windows(8).any(|w| w == b"LogMessa"));
        let read = decode_entry("p-1", 7, &sealed, &EntryKeys::Keys(keys.clone())).unwrap();
        assert_eq!(read, prepared.clone().into_stored(&link, Some(&keys)));
        let erased = decode_entry("p-1", 7, &sealed, &EntryKeys::Erased).unwrap();
        assert_eq!(
            (erased.payload.len(), erased.protection, erased.entry_hash),
            (0, Protection::Erased, link.entry_hash)
        );
        // Under another sequence (the record moved), the content does not open.
        match decode_entry("p-1", 8, &sealed, &EntryKeys::Keys(keys)) {
            Err(StoreError::Corrupt(detail)) => {
                assert!(
                    detail.contains("p-1/8") && detail.contains("does not decrypt"),
                    "{detail}"
                )
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn a_process_record_round_trips() {
        let head = ProcessHead {
            owners: ["a".to_owned(), "b".to_owned()].into(),
            created_at_ms: -5,
            sequence: 42,
            timestamp_ms: 1_700_000_000_000,
            chain_hash: [9; 32],
            keys: KeyState::Plaintext,
        };
        let decoded = ProcessHead::decode("p", &head.encode()).unwrap();
        assert_eq!(decoded.owners, head.owners);
        for keys in [
            KeyState::Wrapped(WrappedKey {
                kek_id: "k".into(),
                wrapped: vec![1, 2, 3],
            }),
            KeyState::Erased(Erasure {
                by: "admin".into(),
                at_ms: 5,
            }),
        ] {
            let keyed = ProcessHead {
                keys: keys.clone(),
                owners: head.owners.clone(),
                created_at_ms: head.created_at_ms,
                sequence: head.sequence,
                timestamp_ms: head.timestamp_ms,
                chain_hash: head.chain_hash,
            };
            assert_eq!(
                ProcessHead::decode("p", &keyed.encode()).unwrap().keys,
                keys
            );
        }
        assert_eq!(
            (
                decoded.created_at_ms,
                decoded.sequence,
                decoded.timestamp_ms,
                decoded.chain_hash
            ),
            (-5, 42, 1_700_000_000_000, [9; 32])
        );
    }

    #[test]
    fn damaged_records_are_reported_as_corrupt() {
        let (prepared, link) = sample_entry();
        let record = encode_entry(&prepared, &link, None);
        let truncated = &record[..record.len() - 1];
        let mut extended = record.clone();
        extended.push(0);
        let mut unknown_format = record.clone();
        unknown_format[0] = 99;
        for damaged in [truncated, &extended[..], &unknown_format[..], &[][..]] {
            match decode_entry("p-1", 7, damaged, &EntryKeys::Plaintext) {
                Err(StoreError::Corrupt(detail)) => assert!(detail.contains("p-1/7"), "{detail}"),
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
    }
}

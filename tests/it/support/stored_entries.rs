//! The entries of an embedded store's file as records, for tests that tamper with them.
//!
//! The store keeps a process's entries in `entry_chunks`, one row per write batch: a `u32`
//! count, the records' lengths (`u32` each), then the records, little-endian, keyed by the
//! process and the sequence of the chunk's first entry. Written here from that description,
//! not with the store's code, so that a tampering test also checks the format.

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

const ENTRY_CHUNKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entry_chunks");

/// Every record of `pid`, by sequence.
pub fn records(transaction: &WriteTransaction, pid: &str) -> BTreeMap<u64, Vec<u8>> {
    let chunks = transaction.open_table(ENTRY_CHUNKS).unwrap();
    let mut records = BTreeMap::new();
    for item in chunks.range((pid, 0)..=(pid, u64::MAX)).unwrap() {
        let (key, chunk) = item.unwrap();
        let chunk = chunk.value();
        let word = |at: usize| u32::from_le_bytes(chunk[at..at + 4].try_into().unwrap()) as usize;
        let count = word(0);
        let mut at = 4 + 4 * count;
        for index in 0..count {
            let length = word(4 + 4 * index);
            records.insert(
                key.value().1 + index as u64,
                chunk[at..at + length].to_vec(),
            );
            at += length;
        }
    }
    records
}

/// Replaces the records of `pid` with `records`: a chunk per run of consecutive sequences.
pub fn replace(transaction: &WriteTransaction, pid: &str, records: &BTreeMap<u64, Vec<u8>>) {
    let mut chunks = transaction.open_table(ENTRY_CHUNKS).unwrap();
    chunks
        .extract_from_if((pid, 0)..=(pid, u64::MAX), |_, _| true)
        .unwrap()
        .for_each(|removed| drop(removed.unwrap()));
    let mut runs: Vec<(u64, Vec<&Vec<u8>>)> = Vec::new();
    for (&sequence, record) in records {
        match runs.last_mut() {
            Some((first, run)) if *first + run.len() as u64 == sequence => run.push(record),
            _ => runs.push((sequence, vec![record])),
        }
    }
    for (first, run) in runs {
        let mut chunk = (run.len() as u32).to_le_bytes().to_vec();
        for record in &run {
            chunk.extend_from_slice(&(record.len() as u32).to_le_bytes());
        }
        for record in &run {
            chunk.extend_from_slice(record);
        }
        chunks.insert((pid, first), chunk.as_slice()).unwrap();
    }
}

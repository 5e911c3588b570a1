//! Entries stored a batch at a time: one row of `entry_chunks` per process per write batch
//! (several when the batch's records pass [`MAX_CHUNK_BYTES`]).
//!
//! An entry's record is a few KiB (the load generator's are 2.4 KB), so as a row of its own
//! it filled most of a 4 KiB B-tree page by itself, and every commit allocated, zeroed,
//! checksummed, wrote and synced one page per entry, each its own block request. The writer's
//! appends to a process within one batch are consecutive entries, so they are stored as one
//! row, keyed by the process and the sequence of the batch's first entry: its records lie next
//! to each other in pages of their own. `cargo bench --bench store_layout` measured 21.5 µs of
//! CPU per entry with a row per entry and 13.0 µs with a row per batch, at 21 entries per
//! commit (BENCHMARKS.md, "Tenth session"). A batch that holds fewer than
//! [`MIN_ENTRIES_TOGETHER`] entries of a process writes a chunk of one per entry, which costs
//! what a row per entry did: small chunks cost more than that.
//!
//! A chunk is `u32` count, the records' lengths (`u32` each), then the records, all
//! little-endian. Stores written before chunks keep their entries in `entries`, a row per entry,
//! and nothing is added there any more: a process's rows in `entries` all come before its
//! first chunk. So the entries of a range are its rows in `entries`, then its chunks' records.

use std::ops::RangeInclusive;

use redb::{ReadTransaction, TableDefinition};

use super::ENTRIES;
use crate::store::{Order, StoreError};

pub(super) const ENTRY_CHUNKS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("entry_chunks");

/// What [`visit_records`] calls with each entry's sequence and record; an error stops the visit.
pub(super) type RecordVisitor<'v> = dyn FnMut(u64, &[u8]) -> Result<(), StoreError> + 'v;

/// The records of one process's entries written in one batch, in order.
#[derive(Debug)]
pub(super) struct Chunk {
    first: u64,
    records: Vec<Vec<u8>>,
}

impl Chunk {
    pub(super) fn new(first: u64) -> Self {
        Self {
            first,
            records: Vec::new(),
        }
    }

    /// The sequence the next record must have.
    pub(super) fn next(&self) -> u64 {
        self.first + self.records.len() as u64
    }

    pub(super) fn push(&mut self, record: Vec<u8>) {
        self.records.push(record);
    }

    /// The rows to write, each keyed by its first sequence. Records are grouped in order into
    /// chunks of at most [`MAX_CHUNK_BYTES`] (a record larger than that is a group of its own); a
    /// group below [`MIN_ENTRIES_TOGETHER`] records is written a chunk of one per record.
    pub(super) fn rows(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut rows = Vec::new();
        let mut group_first = 0;
        let mut group_bytes = 0;
        for (index, record) in self.records.iter().enumerate() {
            if index > group_first && group_bytes + record.len() > MAX_CHUNK_BYTES {
                self.group_rows(group_first..index, &mut rows)?;
                group_first = index;
                group_bytes = 0;
            }
            group_bytes += record.len();
        }
        self.group_rows(group_first..self.records.len(), &mut rows)?;
        Ok(rows)
    }

    fn group_rows(
        &self,
        group: std::ops::Range<usize>,
        rows: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let first = self.first + group.start as u64;
        let records = &self.records[group];
        if records.len() >= MIN_ENTRIES_TOGETHER {
            rows.push((first, encode(records)?));
            return Ok(());
        }
        for (sequence, record) in (first..).zip(records) {
            rows.push((sequence, encode(std::slice::from_ref(record))?));
        }
        Ok(())
    }
}

/// A chunk holds at most this many bytes of records (unless one record is larger), because a
/// read of one entry reads its whole chunk: without a bound, a batch of 512 requests or 8 MiB
/// would be read for each lookup. At the 2.4 KB entries of the load generator, that is about 100
/// entries, several batches' worth at 64 connections, so the bound costs the writer nothing there.
const MAX_CHUNK_BYTES: usize = 256 * 1024;

/// Fewer records than this are written a chunk of one each. Measured at 4 connections (about
/// 2 entries per commit), chunks of 2 to 4 cost 3% more server CPU per receipt and 5% of the
/// throughput than a row each; at 64 connections (about 20 per commit) one chunk saves 5% of
/// the CPU (BENCHMARKS.md, "Tenth session").
const MIN_ENTRIES_TOGETHER: usize = 8;

fn encode(records: &[Vec<u8>]) -> Result<Vec<u8>, StoreError> {
    let length = |n: usize| {
        u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("a chunk part of {n} bytes")))
    };
    let bytes: usize = records.iter().map(Vec::len).sum();
    let mut encoded = Vec::with_capacity(4 + 4 * records.len() + bytes);
    encoded.extend_from_slice(&length(records.len())?.to_le_bytes());
    for record in records {
        encoded.extend_from_slice(&length(record.len())?.to_le_bytes());
    }
    for record in records {
        encoded.extend_from_slice(record);
    }
    Ok(encoded)
}

/// The records of an encoded chunk, in order; an error if the chunk is malformed.
fn records<'a>(pid: &str, first: u64, chunk: &'a [u8]) -> Result<Vec<&'a [u8]>, StoreError> {
    let malformed = || StoreError::Corrupt(format!("the chunk of {pid} from {first} is malformed"));
    let word = |at: usize| -> Result<usize, StoreError> {
        let bytes = chunk.get(at..at + 4).ok_or_else(malformed)?;
        let bytes: [u8; 4] = bytes.try_into().map_err(|_| malformed())?;
        usize::try_from(u32::from_le_bytes(bytes)).map_err(|_| malformed())
    };
    let count = word(0)?;
    let mut at = count
        .checked_mul(4)
        .and_then(|lengths| lengths.checked_add(4))
        .filter(|&start| start <= chunk.len())
        .ok_or_else(malformed)?;
    let mut records = Vec::with_capacity(count);
    for index in 0..count {
        let length = word(4 + 4 * index)?;
        let end = at.checked_add(length).ok_or_else(malformed)?;
        records.push(chunk.get(at..end).ok_or_else(malformed)?);
        at = end;
    }
    if at != chunk.len() {
        return Err(malformed());
    }
    Ok(records)
}

/// Calls `visit` with the sequence and record of every entry of `pid` in `first..=last` that
/// the store holds, ascending or descending; stops at the first error `visit` returns.
///
/// Old rows and chunks are read one after the other, which is right as long as every row comes
/// before every chunk. A binary from before chunks that wrote to the store after a newer one
/// would have added rows after chunks; that, and any overlap, is reported as `Corrupt` when
/// the sequences stop running strictly in `order`, not returned out of order.
pub(super) fn visit_records(
    transaction: &ReadTransaction,
    pid: &str,
    first: u64,
    last: u64,
    order: Order,
    visit: &mut RecordVisitor<'_>,
) -> Result<(), StoreError> {
    if first > last {
        return Ok(());
    }
    let mut previous = None;
    let visit = &mut |sequence: u64, record: &[u8]| -> Result<(), StoreError> {
        if let Some(previous) = previous {
            let in_order = match order {
                Order::Asc => sequence > previous,
                Order::Desc => sequence < previous,
            };
            if !in_order {
                return Err(StoreError::Corrupt(format!(
                    "the entries of {pid} are out of order: {sequence} after {previous} (rows \
                     written after chunks, by a binary older than the store?)"
                )));
            }
        }
        previous = Some(sequence);
        visit(sequence, record)
    };
    let row_table = transaction.open_table(ENTRIES)?;
    let chunk_table = transaction.open_table(ENTRY_CHUNKS)?;
    // The chunk that holds `first` may begin before it.
    let start = match chunk_table.range((pid, 0)..=(pid, first))?.next_back() {
        Some(item) => item?.0.value().1,
        None => first,
    };
    let row_range = row_table.range((pid, first)..=(pid, last))?;
    let chunk_range = chunk_table.range((pid, start)..=(pid, last))?;
    let (mut rows, mut chunks): (Box<dyn Iterator<Item = _>>, Box<dyn Iterator<Item = _>>) =
        match order {
            Order::Asc => (Box::new(row_range), Box::new(chunk_range)),
            Order::Desc => (Box::new(row_range.rev()), Box::new(chunk_range.rev())),
        };
    // Rows come before chunks: ascending, the rows are read first; descending, the chunks.
    let rows_first = order == Order::Asc;
    for rows_now in [rows_first, !rows_first] {
        if rows_now {
            for item in rows.by_ref() {
                let (key, record) = item?;
                visit(key.value().1, record.value())?;
            }
        } else {
            for item in chunks.by_ref() {
                let (key, chunk) = item?;
                let range = first..=last;
                visit_chunk(pid, key.value().1, chunk.value(), range, order, visit)?;
            }
        }
    }
    Ok(())
}

/// [`visit_records`] for the records of one chunk, which begins at `key`, that lie in `range`.
fn visit_chunk(
    pid: &str,
    key: u64,
    chunk: &[u8],
    range: RangeInclusive<u64>,
    order: Order,
    visit: &mut RecordVisitor<'_>,
) -> Result<(), StoreError> {
    let mut numbered = Vec::new();
    for (index, record) in records(pid, key, chunk)?.into_iter().enumerate() {
        let sequence = u64::try_from(index)
            .ok()
            .and_then(|index| key.checked_add(index))
            .ok_or_else(|| {
                StoreError::Corrupt(format!("the chunk of {pid} from {key} runs past the end"))
            })?;
        if range.contains(&sequence) {
            numbered.push((sequence, record));
        }
    }
    if order == Order::Desc {
        numbered.reverse();
    }
    numbered
        .into_iter()
        .try_for_each(|(sequence, record)| visit(sequence, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(records: &[&[u8]]) -> Vec<Vec<u8>> {
        records.iter().map(|record| record.to_vec()).collect()
    }

    #[test]
    fn a_few_records_are_written_a_chunk_each_and_more_together() {
        let parts: Vec<Vec<u8>> = (0..MIN_ENTRIES_TOGETHER as u8).map(|n| vec![n]).collect();
        let mut chunk = Chunk::new(5);
        for record in &parts[..MIN_ENTRIES_TOGETHER - 1] {
            chunk.push(record.clone());
        }
        let rows = chunk.rows().unwrap();
        assert_eq!(rows.len(), MIN_ENTRIES_TOGETHER - 1);
        for ((first, row), (sequence, record)) in rows.iter().zip((5..).zip(&parts)) {
            assert_eq!(*first, sequence);
            assert_eq!(records("p", *first, row).unwrap(), [record.as_slice()]);
        }
        chunk.push(parts[MIN_ENTRIES_TOGETHER - 1].clone());
        let rows = chunk.rows().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, 5);
        assert_eq!(records("p", 5, &rows[0].1).unwrap(), parts);
    }

    #[test]
    fn chunks_are_bounded_in_bytes_and_a_larger_record_is_a_chunk_of_its_own() {
        let eighth = MAX_CHUNK_BYTES / MIN_ENTRIES_TOGETHER;
        let mut parts: Vec<Vec<u8>> = (0..20u8).map(|n| vec![n; eighth]).collect();
        parts.insert(8, vec![99; MAX_CHUNK_BYTES + 1]);
        let mut chunk = Chunk::new(5);
        for record in &parts {
            chunk.push(record.clone());
        }
        let rows = chunk.rows().unwrap();
        let firsts: Vec<u64> = rows.iter().map(|(first, _)| *first).collect();
        // 8 records fill a chunk; the large one stands alone; the next 8 fill another; the last
        // 4 are too few to go together.
        assert_eq!(firsts, [5, 13, 14, 22, 23, 24, 25]);
        let read: Vec<&[u8]> = rows
            .iter()
            .flat_map(|(first, row)| records("p", *first, row).unwrap())
            .collect();
        assert_eq!(read, parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert!(rows
            .iter()
            .all(|(_, row)| row.len() <= MAX_CHUNK_BYTES + 4 * 9));
    }

    #[test]
    fn a_chunk_reads_back_its_records() {
        let encoded = encode(&owned(&[b"one", b"", b"three"])).unwrap();
        assert_eq!(
            records("p", 7, &encoded).unwrap(),
            [&b"one"[..], b"", b"three"]
        );
    }

    #[test]
    fn a_chunk_keyed_too_close_to_the_last_sequence_is_corrupt() {
        let encoded = encode(&owned(&[b"one", b"two"])).unwrap();
        let mut visited = Vec::new();
        let result = visit_chunk(
            "p",
            u64::MAX,
            &encoded,
            0..=u64::MAX,
            Order::Asc,
            &mut |sequence, _| {
                visited.push(sequence);
                Ok(())
            },
        );
        assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
        assert!(visited.is_empty(), "{visited:?}");
    }

    #[test]
    fn a_malformed_chunk_is_corrupt_not_a_panic() {
        let encoded = encode(&owned(&[b"one", b"two"])).unwrap();
        for cut in 0..encoded.len() {
            assert!(
                matches!(
                    records("p", 1, &encoded[..cut]),
                    Err(StoreError::Corrupt(_))
                ),
                "cut at {cut}"
            );
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert!(matches!(
            records("p", 1, &longer),
            Err(StoreError::Corrupt(_))
        ));
        let huge_count = u32::MAX.to_le_bytes();
        assert!(matches!(
            records("p", 1, &huge_count),
            Err(StoreError::Corrupt(_))
        ));
    }
}

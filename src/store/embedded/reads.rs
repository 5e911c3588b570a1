//! The embedded store's reads: one entry, a page, a run for export, the processes of a client.
//!
//! Each runs in a read transaction, on tokio's blocking pool (the store hands them there), so
//! that no tokio worker thread waits for the disk. redb gives a read transaction a snapshot, so
//! reads never wait for the writer and always see whole batches. Pages never count or skip
//! entries one by one: a time range becomes a run of sequence numbers with two lookups in
//! `entry_times` (see [`crate::store::query`]), and the page is a range scan of `entries`.
//! `entry_times` holds the first entry of each timestamp of a process (stores written before
//! it did so hold every entry, which reads the same): timestamps never decrease with the
//! sequence, so that is enough to find where a time range starts and ends.

use redb::{ReadTransaction, ReadableTable};

use super::record::{decode_entry, read_head, ProcessHead};
use super::{DOCUMENTS, ENTRIES, ENTRY_TIMES, OWNERS, PROCESSES};
use crate::store::query::{self, SequenceRange};
use crate::store::sealing::{EntryKeys, KeyState, Sealing};
use crate::store::{Entry, Order, Page, PageQuery, StoreError, UnfitEntry};

/// The head of `pid` and how its entries are read.
fn keyed_head(
    transaction: &ReadTransaction,
    sealing: &Sealing,
    pid: &str,
) -> Result<(ProcessHead, EntryKeys), StoreError> {
    let processes = transaction.open_table(PROCESSES)?;
    let head =
        read_head(&processes, pid)?.ok_or_else(|| StoreError::UnknownProcess(pid.to_owned()))?;
    let keys = sealing.entry_keys(pid, &head.keys)?;
    Ok((head, keys))
}

/// The entry with this document id, if it belongs to `pid`.
pub(super) fn entry(
    transaction: &ReadTransaction,
    sealing: &Sealing,
    pid: &str,
    document_id: &str,
) -> Result<Option<Entry>, StoreError> {
    let documents = transaction.open_table(DOCUMENTS)?;
    let sequence = match documents.get(document_id)? {
        Some(location) if location.value().0 == pid => location.value().1,
        _ => return Ok(None),
    };
    let (_, keys) = keyed_head(transaction, sealing, pid)?;
    let entries = transaction.open_table(ENTRIES)?;
    let record = entries.get((pid, sequence))?.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "document {document_id} is indexed as {pid}/{sequence}, which does not exist"
        ))
    })?;
    decode_entry(pid, sequence, record.value(), &keys).map(Some)
}

/// One page of entries; see [`crate::store::ProcessStore::query`].
pub(super) fn page(
    transaction: &ReadTransaction,
    sealing: &Sealing,
    query: &PageQuery,
) -> Result<Page, StoreError> {
    query::validate(query)?;
    let pid = query.pid.as_str();
    let (head, keys) = keyed_head(transaction, sealing, pid)?;
    let empty = Page {
        entries: Vec::new(),
        total: 0,
    };

    // Timestamps never decrease with the sequence, so the time range is the run of sequences
    // from the first entry at or after `from_ms` to the last entry at or before `to_ms`.
    let entry_times = transaction.open_table(ENTRY_TIMES)?;
    let first = match query.from_ms {
        None => 1,
        Some(from_ms) => match entry_times
            .range((pid, from_ms, 0)..=(pid, i64::MAX, u64::MAX))?
            .next()
        {
            Some(item) => item?.0.value().2,
            None => return Ok(empty),
        },
    };
    // The index holds the first entry of each timestamp (see `writer`), so the last entry at or
    // before `to_ms` is the one before the first entry after it.
    let after_to = query.to_ms.and_then(|to_ms| to_ms.checked_add(1));
    let last = match after_to {
        None => head.sequence,
        Some(after_to) => match entry_times
            .range((pid, after_to, 0)..=(pid, i64::MAX, u64::MAX))?
            .next()
        {
            Some(item) => item?.0.value().2.saturating_sub(1),
            None => head.sequence,
        },
    };
    let Some(matched) = SequenceRange::new(first, last) else {
        return Ok(empty);
    };
    let Some(window) = matched.page(query.page, query.size, query.order) else {
        return Ok(Page {
            entries: Vec::new(),
            total: matched.len(),
        });
    };

    let entries = transaction.open_table(ENTRIES)?;
    let range = entries.range((pid, window.first)..=(pid, window.last))?;
    let records: Box<dyn Iterator<Item = _>> = match query.order {
        Order::Asc => Box::new(range),
        Order::Desc => Box::new(range.rev()),
    };
    let mut page = Vec::new();
    let mut bytes = 0usize;
    for item in records {
        let (key, record) = item?;
        // A record is the entry's payload and header plus a few fixed fields, all of which a
        // reply carries too: past the budget, the reply would be past it as well.
        bytes = bytes.saturating_add(record.value().len());
        let entry = decode_entry(pid, key.value().1, record.value(), &keys)?;
        if bytes > query.max_bytes {
            return Err(StoreError::PageTooLarge {
                limit: query.max_bytes,
                fitting: page.len() as u64,
                first_unfit: UnfitEntry {
                    sequence: entry.sequence,
                    document_id: entry.document_id,
                },
            });
        }
        page.push(entry);
    }
    if page.len() as u64 != window.len() {
        return Err(StoreError::Corrupt(format!(
            "process {pid} lacks entries between sequences {} and {}",
            window.first, window.last
        )));
    }
    Ok(Page {
        entries: page,
        total: matched.len(),
    })
}

/// The pids `client_id` owns, sorted (the `owners` table's key order).
pub(super) fn processes_of(
    transaction: &ReadTransaction,
    client_id: &str,
) -> Result<Vec<String>, StoreError> {
    let owners = transaction.open_table(OWNERS)?;
    let mut pids = Vec::new();
    for item in owners.range((client_id, "")..)? {
        let (key, _) = item?;
        let (owner, pid) = key.value();
        if owner != client_id {
            break;
        }
        pids.push(pid.to_owned());
    }
    Ok(pids)
}

/// Up to `limit` entries of `pid` from `from_sequence` on, ascending.
pub(super) fn entries_from(
    transaction: &ReadTransaction,
    sealing: &Sealing,
    pid: &str,
    from_sequence: u64,
    limit: usize,
) -> Result<Vec<Entry>, StoreError> {
    let (_, keys) = keyed_head(transaction, sealing, pid)?;
    let end = from_sequence.saturating_add(u64::try_from(limit).unwrap_or(u64::MAX));
    let entries = transaction.open_table(ENTRIES)?;
    let mut found = Vec::new();
    for item in entries.range((pid, from_sequence)..(pid, end))? {
        let (key, record) = item?;
        found.push(decode_entry(pid, key.value().1, record.value(), &keys)?);
    }
    Ok(found)
}

/// The ids of the KEKs that wrap data keys, from every process record.
pub(super) fn data_key_keks(
    transaction: &ReadTransaction,
) -> Result<std::collections::BTreeSet<String>, StoreError> {
    let processes = transaction.open_table(PROCESSES)?;
    let mut keks = std::collections::BTreeSet::new();
    for item in processes.iter()? {
        let (pid, record) = item?;
        if let KeyState::Wrapped(key) = ProcessHead::decode(pid.value(), record.value())?.keys {
            keks.insert(key.kek_id);
        }
    }
    Ok(keks)
}

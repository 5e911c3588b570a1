//! The embedded store's reads: one entry, a page, a run for export, the processes of a client.
//!
//! Each runs in a read transaction, on tokio's blocking pool (the store hands them there), so
//! that no tokio worker thread waits for the disk. redb gives a read transaction a snapshot, so
//! reads never wait for the writer and always see whole batches. Pages never count or skip
//! entries one by one: a time range becomes a run of sequence numbers with two lookups in
//! `entry_times` (see [`crate::store::query`]), and the page is a range scan of the chunks (and
//! older rows) that hold its entries (see `chunks`).
//! `entry_times` holds the first entry of each timestamp of a process (stores written before
//! it did so hold every entry, which reads the same): timestamps never decrease with the
//! sequence, so that is enough to find where a time range starts and ends.

use redb::{ReadTransaction, ReadableTable};

use super::chunks::visit_records;
use super::record::{decode_entry, read_head, ProcessHead};
use super::{DOCUMENTS, DOCUMENT_NUMBERS, ENTRY_TIMES, OWNERS, PROCESSES};
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

/// The entry with this document id, if it belongs to `pid`. `number` is the number the id was
/// derived from if it can be one of the store's numbered ids (see `document_ids`): that entry
/// is the one asked for if it is of `pid` and carries this very id. Otherwise, and for ids of
/// entries written before ids were numbered, the legacy `documents` table tells.
pub(super) fn entry(
    transaction: &ReadTransaction,
    sealing: &Sealing,
    pid: &str,
    document_id: &str,
    number: Option<u64>,
) -> Result<Option<Entry>, StoreError> {
    if let Some(number) = number {
        let numbers = transaction.open_table(DOCUMENT_NUMBERS)?;
        let sequence = match numbers.get(number)? {
            Some(location) if location.value().0 == pid => Some(location.value().1),
            _ => None,
        };
        if let Some(sequence) = sequence {
            let found = read_entry(transaction, sealing, pid, sequence, document_id)?;
            if found.document_id == document_id {
                return Ok(Some(found));
            }
        }
    }
    let documents = transaction.open_table(DOCUMENTS)?;
    let sequence = match documents.get(document_id)? {
        Some(location) if location.value().0 == pid => location.value().1,
        _ => return Ok(None),
    };
    read_entry(transaction, sealing, pid, sequence, document_id).map(Some)
}

/// The entry `pid`/`sequence`, which an index gave for `document_id`.
fn read_entry(
    transaction: &ReadTransaction,
    sealing: &Sealing,
    pid: &str,
    sequence: u64,
    document_id: &str,
) -> Result<Entry, StoreError> {
    let (_, keys) = keyed_head(transaction, sealing, pid)?;
    let mut found = None;
    visit_records(
        transaction,
        pid,
        sequence,
        sequence,
        Order::Asc,
        &mut |sequence, record| {
            found = Some(decode_entry(pid, sequence, record, &keys)?);
            Ok(())
        },
    )?;
    found.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "document {document_id} is indexed as {pid}/{sequence}, which does not exist"
        ))
    })
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

    let mut page = Vec::new();
    let mut bytes = 0usize;
    visit_records(
        transaction,
        pid,
        window.first,
        window.last,
        query.order,
        &mut |sequence, record| {
            // A record is the entry's payload and header plus a few fixed fields, all of which
            // a reply carries too: past the budget, the reply would be past it as well.
            bytes = bytes.saturating_add(record.len());
            let entry = decode_entry(pid, sequence, record, &keys)?;
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
            Ok(())
        },
    )?;
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
    let Some(after_first) = limit.checked_sub(1) else {
        return Ok(Vec::new());
    };
    let last = from_sequence.saturating_add(u64::try_from(after_first).unwrap_or(u64::MAX));
    let mut found = Vec::new();
    visit_records(
        transaction,
        pid,
        from_sequence,
        last,
        Order::Asc,
        &mut |sequence, record| {
            found.push(decode_entry(pid, sequence, record, &keys)?);
            Ok(())
        },
    )?;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use redb::{Database, ReadableDatabase, ReadableTableMetadata};
    use uuid::Uuid;

    use super::super::record::encode_entry;
    use super::super::tests::one_byte_entry;
    use super::super::{EmbeddedStore, DOCUMENT_NUMBERS, ENTRIES};
    use super::*;
    use crate::store::chain::{self, verify_chain, ChainHead};
    use crate::store::sealing::KeyState;
    use crate::store::{now_ms, PageQuery, ProcessStore};

    /// Creates `pid`, owned by `a`, as every build did: a process record and an owner row.
    fn create_legacy_process(database: &Database, pid: &str) {
        let transaction = database.begin_write().unwrap();
        {
            let head = ProcessHead {
                owners: ["a".to_owned()].into(),
                created_at_ms: now_ms(),
                sequence: 0,
                timestamp_ms: now_ms(),
                chain_hash: chain::genesis_hash(pid),
                keys: KeyState::Plaintext,
            };
            let mut processes = transaction.open_table(PROCESSES).unwrap();
            processes.insert(pid, head.encode().as_slice()).unwrap();
            let mut owners = transaction.open_table(OWNERS).unwrap();
            owners.insert(("a", pid), ()).unwrap();
        }
        transaction.commit().unwrap();
    }

    /// Appends entries with these document ids to `pid` as builds before numbered ids did: the
    /// caller's random id in the record and in `documents`, a row per entry in `entry_times`.
    fn append_legacy_entries(database: &Database, pid: &str, ids: &[String]) -> Vec<Entry> {
        let transaction = database.begin_write().unwrap();
        let mut appended = Vec::new();
        {
            let mut processes = transaction.open_table(PROCESSES).unwrap();
            let mut entries = transaction.open_table(ENTRIES).unwrap();
            let mut documents = transaction.open_table(DOCUMENTS).unwrap();
            let mut entry_times = transaction.open_table(ENTRY_TIMES).unwrap();
            let mut head = read_head(&processes, pid).unwrap().unwrap();
            for id in ids {
                let prepared = one_byte_entry(pid).with_document_id(id.clone());
                let chain_head = ChainHead {
                    sequence: head.sequence,
                    chain_hash: head.chain_hash,
                };
                let link =
                    chain::append_link(&chain_head, head.timestamp_ms, &prepared, None).unwrap();
                let record = encode_entry(&prepared, &link, None);
                entries
                    .insert((pid, link.sequence), record.as_slice())
                    .unwrap();
                documents.insert(id.as_str(), (pid, link.sequence)).unwrap();
                entry_times
                    .insert((pid, link.timestamp_ms, link.sequence), ())
                    .unwrap();
                head.sequence = link.sequence;
                head.timestamp_ms = link.timestamp_ms;
                head.chain_hash = link.chain_hash;
                appended.push(prepared.into_stored(&link, None));
            }
            processes.insert(pid, head.encode().as_slice()).unwrap();
        }
        transaction.commit().unwrap();
        appended
    }

    /// A store file as builds before numbered ids left it: no `meta`, no `document_numbers`.
    fn write_legacy_store(path: &Path, pid: &str, count: usize) -> Vec<Entry> {
        let database = Database::create(path).unwrap();
        create_legacy_process(&database, pid);
        let ids: Vec<String> = (0..count).map(|_| Uuid::new_v4().to_string()).collect();
        append_legacy_entries(&database, pid, &ids)
    }

    /// The first page of `size` entries of `pid` in `order`, with no time range or byte limit.
    fn first_page(pid: &str, size: u64, order: Order) -> PageQuery {
        PageQuery {
            pid: pid.to_owned(),
            page: 1,
            size,
            order,
            from_ms: None,
            to_ms: None,
            max_bytes: usize::MAX,
        }
    }

    async fn find(store: &EmbeddedStore, pid: &str, document_id: &str) -> Option<Entry> {
        store.entry(pid, document_id).await.unwrap()
    }

    #[tokio::test]
    async fn a_store_written_with_random_ids_finds_old_and_new_entries_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let old = write_legacy_store(&path, "p-1", 3);

        let store = EmbeddedStore::open(&path).unwrap();
        let owners: BTreeSet<String> = ["a".to_owned()].into();
        store.create_process("p-2", &owners).await.unwrap();
        let mut new = Vec::new();
        for pid in ["p-1", "p-2", "p-1"] {
            new.push(store.append(one_byte_entry(pid)).await.unwrap());
        }
        assert_eq!(
            new.iter().map(|entry| entry.sequence).collect::<Vec<_>>(),
            [4, 1, 5]
        );
        for entry in old.iter().chain(&new) {
            assert_eq!(
                find(&store, &entry.pid, &entry.document_id).await.as_ref(),
                Some(entry)
            );
            let other = if entry.pid == "p-1" { "p-2" } else { "p-1" };
            assert_eq!(find(&store, other, &entry.document_id).await, None);
            // Other spellings of the same UUID decode to the same number, but are not the id.
            let uuid = Uuid::parse_str(&entry.document_id).unwrap();
            for spelling in [
                entry.document_id.to_uppercase(),
                uuid.simple().to_string(),
                uuid.urn().to_string(),
            ] {
                assert_eq!(
                    find(&store, &entry.pid, &spelling).await,
                    None,
                    "{spelling}"
                );
            }
        }
        // New entries go to the numbered index only.
        {
            let transaction = store.database.begin_read().unwrap();
            let documents = transaction.open_table(DOCUMENTS).unwrap();
            assert_eq!(documents.len().unwrap(), 3);
            let numbers = transaction.open_table(DOCUMENT_NUMBERS).unwrap();
            let rows: Vec<(u64, String, u64)> = numbers
                .iter()
                .unwrap()
                .map(|row| {
                    let (number, location) = row.unwrap();
                    let (pid, sequence) = location.value();
                    (number.value(), pid.to_owned(), sequence)
                })
                .collect();
            assert_eq!(
                rows,
                [
                    (1, "p-1".to_owned(), 4),
                    (2, "p-2".to_owned(), 1),
                    (3, "p-1".to_owned(), 5)
                ]
            );
        }
        let chain = store.entries_from("p-1", 1, 10).await.unwrap();
        assert_eq!(verify_chain("p-1", chain).unwrap().sequence, 5);
        // Pages and runs across the old rows (1 to 3) and the new chunks (4 and 5), both ways.
        for (order, expected) in [(Order::Asc, [1, 2, 3, 4]), (Order::Desc, [5, 4, 3, 2])] {
            let page = store.query(&first_page("p-1", 4, order)).await.unwrap();
            let sequences: Vec<u64> = page.entries.iter().map(|entry| entry.sequence).collect();
            assert_eq!((sequences, page.total), (expected.to_vec(), 5));
        }
        let run = store.entries_from("p-1", 3, 2).await.unwrap();
        assert_eq!(
            run.iter().map(|entry| entry.sequence).collect::<Vec<_>>(),
            [3, 4]
        );

        // The key and the counter survive a reopen: old ids still decode, new ones follow on.
        drop(store);
        let store = EmbeddedStore::open(&path).unwrap();
        for entry in old.iter().chain(&new) {
            assert_eq!(
                find(&store, &entry.pid, &entry.document_id).await.as_ref(),
                Some(entry)
            );
        }
        let next = store.append(one_byte_entry("p-2")).await.unwrap();
        assert!(new
            .iter()
            .all(|entry| entry.document_id != next.document_id));
        assert_eq!(find(&store, "p-2", &next.document_id).await, Some(next));
    }

    /// A binary from before chunks, run on a store a newer one wrote, appends rows after the
    /// chunks. Read as rows then chunks, the run would come out of order; it is reported.
    #[tokio::test]
    async fn rows_written_after_chunks_are_reported_not_read_out_of_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
        let owners: BTreeSet<String> = ["a".to_owned()].into();
        store.create_process("p-1", &owners).await.unwrap();
        for _ in 0..2 {
            store.append(one_byte_entry("p-1")).await.unwrap();
        }
        append_legacy_entries(&store.database, "p-1", &[Uuid::new_v4().to_string()]);
        for order in [Order::Asc, Order::Desc] {
            let page = store.query(&first_page("p-1", 10, order)).await;
            assert!(
                matches!(&page, Err(StoreError::Corrupt(detail)) if detail.contains("out of order")),
                "{page:?}"
            );
        }
        let run = store.entries_from("p-1", 1, 10).await;
        assert!(matches!(run, Err(StoreError::Corrupt(_))), "{run:?}");
        // Entries that do not span both still read.
        let run = store.entries_from("p-1", 3, 1).await.unwrap();
        assert_eq!(run.len(), 1);
    }

    /// The chance is 2^-122 per pair (see `document_ids`), so the collision is made by hand: a
    /// legacy entry of another process that has a new entry's id.
    #[tokio::test]
    async fn a_legacy_id_equal_to_a_new_one_finds_each_entry_under_its_own_process() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
        let owners: BTreeSet<String> = ["a".to_owned()].into();
        store.create_process("p-new", &owners).await.unwrap();
        store.create_process("p-old", &owners).await.unwrap();
        let new = store.append(one_byte_entry("p-new")).await.unwrap();
        let old = append_legacy_entries(
            &store.database,
            "p-old",
            std::slice::from_ref(&new.document_id),
        );

        assert_eq!(find(&store, "p-new", &new.document_id).await, Some(new));
        assert_eq!(
            find(&store, "p-old", &old[0].document_id).await.as_ref(),
            old.first()
        );
    }
}

//! `cargo bench --bench store_layout`: what making entries durable costs in CPU per entry, in
//! the embedded store's layout, the one before it, and a log file, on this machine's disk.
//!
//! The embedded store's writer thread takes about a quarter of the server's CPU per receipt
//! (BENCHMARKS.md, "Tenth session"), nearly all of it in redb. With a row per entry, each entry
//! of about 2.4 KB filled most of a 4 KiB page of a copy-on-write B-tree by itself, a page
//! allocated, zeroed, checksummed, written and synced on its own; and every commit also rewrites
//! the branch pages, table roots and free-page lists above them. This bench writes the
//! same stream of entries (one process, batches of B entries, each batch durable before the next,
//! as the writer's group commit does) three ways, measuring only the storage work:
//! - `rows`: the store's layout until 2026-12-04, one `(pid, sequence)` row per entry, plus the
//!   rows the writer adds per entry (`document_numbers`) and per batch (`entry_times`, the
//!   process head), one durable redb commit per batch;
//! - `chunks`: the store's layout since, one row per process per batch holding the batch's
//!   records (the store's `entry_chunks`);
//! - `log`: the records appended to a log file (one `pwrite` and one `fdatasync` per batch), and
//!   only small index rows in redb, committed without a sync except every 64th batch. This is
//!   the I/O pattern of a log-structured entry store, not a design: recovery (replaying the log
//!   into the index after a crash) is not here, and its cost falls on restarts, not on receipts.
//!
//! Prints, per layout and batch size, CPU (user + system) and wall time per entry. Each case
//! first writes `PREFILL` entries so that the B-trees have depth. `CH_BENCH_DIR` says where the
//! files go (default: the current directory, which for `cargo bench` is the package's).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};

#[path = "support/cpu.rs"]
mod cpu;
use cpu::cpu_seconds;

const PROCESSES: TableDefinition<&str, &[u8]> = TableDefinition::new("processes");
const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");
const DOCUMENT_NUMBERS: TableDefinition<u64, (&str, u64)> =
    TableDefinition::new("document_numbers");
const ENTRY_TIMES: TableDefinition<(&str, i64, u64), ()> = TableDefinition::new("entry_times");
const CHUNKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("chunks");
const LOG_OFFSETS: TableDefinition<(&str, u64), u64> = TableDefinition::new("log_offsets");

const PID: &str = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
/// An entry's record with the load generator's message: a 2 KiB header and 256 bytes of payload,
/// plus hashes, ids and lengths.
const RECORD_BYTES: usize = 2400;
const PREFILL: u64 = 20_000;
/// Entries written per measured case.
const ENTRIES_PER_CASE: u64 = 40_000;
/// Under `log`, every this many batches the index is committed with a sync.
const LOG_SYNC_EVERY: u64 = 64;

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Rows,
    Chunks,
    Log,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Self::Rows => "rows",
            Self::Chunks => "chunks",
            Self::Log => "log",
        }
    }
}

/// One layout's files and where its stream of entries stands.
struct Writer {
    layout: Layout,
    database: Database,
    log: File,
    log_end: u64,
    sequence: u64,
    batches: u64,
    record: Vec<u8>,
}

impl Writer {
    fn create(layout: Layout, dir: &Path) -> Writer {
        let log = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join("entries.log"))
            .expect("log file");
        Writer {
            layout,
            database: Database::create(dir.join("store.redb")).expect("database"),
            log,
            log_end: 0,
            sequence: 0,
            batches: 0,
            record: vec![0x5a; RECORD_BYTES],
        }
    }

    fn write(&mut self, entries: u64, batch: u64) {
        for _ in 0..entries.div_ceil(batch) {
            self.write_batch(batch);
        }
    }

    fn write_batch(&mut self, batch: u64) {
        let mut transaction = self.database.begin_write().expect("write transaction");
        self.batches += 1;
        if self.layout == Layout::Log && !self.batches.is_multiple_of(LOG_SYNC_EVERY) {
            transaction
                .set_durability(Durability::None)
                .expect("durability");
        }
        let first = self.sequence + 1;
        let mut records = Vec::new();
        {
            let mut numbers = transaction
                .open_table(DOCUMENT_NUMBERS)
                .expect("document_numbers");
            for _ in 0..batch {
                self.sequence += 1;
                numbers
                    .insert(self.sequence, (PID, self.sequence))
                    .expect("insert");
                match self.layout {
                    Layout::Rows => {
                        let mut entries = transaction.open_table(ENTRIES).expect("entries");
                        entries
                            .insert((PID, self.sequence), self.record.as_slice())
                            .expect("insert");
                    }
                    Layout::Chunks => records.extend_from_slice(&self.record),
                    Layout::Log => {
                        let offset = self.log_end + records.len() as u64;
                        let mut offsets = transaction.open_table(LOG_OFFSETS).expect("offsets");
                        offsets
                            .insert((PID, self.sequence), offset)
                            .expect("insert");
                        records.extend_from_slice(&self.record);
                    }
                }
            }
        }
        match self.layout {
            Layout::Rows => {}
            Layout::Chunks => {
                let mut chunks = transaction.open_table(CHUNKS).expect("chunks");
                chunks
                    .insert((PID, first), records.as_slice())
                    .expect("insert");
            }
            Layout::Log => {
                self.log
                    .write_all_at(&records, self.log_end)
                    .expect("log write");
                self.log.sync_data().expect("log sync");
                self.log_end += records.len() as u64;
            }
        }
        write_head(&transaction, self.sequence, first);
        transaction.commit().expect("commit");
    }
}

/// What the writer does once per batch whatever the layout: a row in the time index and the
/// process's head.
fn write_head(transaction: &WriteTransaction, sequence: u64, first: u64) {
    let mut times = transaction.open_table(ENTRY_TIMES).expect("entry_times");
    times
        .insert((PID, sequence as i64, first), ())
        .expect("insert");
    let mut processes = transaction.open_table(PROCESSES).expect("processes");
    let head = processes
        .get(PID)
        .expect("head")
        .map_or_else(|| vec![1; 200], |head| head.value().to_vec());
    processes.insert(PID, head.as_slice()).expect("insert");
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and minutes of fsyncs have no place in the test suite.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    println!(
        "{:7} {:>5} {:>14} {:>15}",
        "layout", "batch", "CPU µs/entry", "wall µs/entry"
    );
    for batch in [1, 4, 21, 64] {
        // Fewer entries for small batches, where each costs a commit.
        let entries = ENTRIES_PER_CASE * batch.min(21) / 21;
        for layout in [Layout::Rows, Layout::Chunks, Layout::Log] {
            let dir = tempfile::tempdir_in(std::env::var_os("CH_BENCH_DIR").unwrap_or(".".into()))
                .expect("temporary directory");
            let mut writer = Writer::create(layout, dir.path());
            writer.write(PREFILL, 64);
            let (cpu, wall) = (cpu_seconds(), Instant::now());
            writer.write(entries, batch);
            let cpu = cpu_seconds() - cpu;
            let wall = wall.elapsed().as_secs_f64();
            println!(
                "{:7} {batch:>5} {:>14.1} {:>15.1}",
                layout.name(),
                cpu * 1e6 / entries as f64,
                wall * 1e6 / entries as f64,
            );
        }
    }
}

//! The store's file as redb sees it, with its growth written out rather than left sparse.
//!
//! redb grows its file with `set_len`, which leaves a hole. Every page redb later writes into
//! the hole makes the file system allocate blocks, and the next `fdatasync` must then also
//! write that metadata and wait for it: on this project's ext4 machines, two more waits for the
//! disk (`fsync_buffers_list`, `ext4_write_inode`) after the data's own. Writing zeros over the
//! new range once, when the file grows, allocates it then: later commits overwrite blocks that
//! exist, and their `fdatasync` waits for the data alone. PostgreSQL zero-fills its WAL
//! segments for the same reason. Measured (BENCHMARKS.md, "Eleventh session"): block
//! allocations per second from about 1,000 to nearly none; at four connections 12 to 23% more
//! receipts per second.
//!
//! The price: the file's space is allocated when redb grows it, not when pages are used, and a
//! grow writes its zeros before the commit that needed it. redb doubles a small file and grows a
//! large one a region at a time, so the zeros total at most the file's size, written once.

use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::path::Path;

use redb::backends::FileBackend;
use redb::{BackendError, DatabaseError, StorageBackend};

/// Zeros are written a megabyte at a time: a grow of hundreds of megabytes must not need as
/// much memory.
const ZEROS: usize = 1 << 20;

/// A [`FileBackend`] whose growth is written with zeros instead of left as a hole.
#[derive(Debug)]
pub(super) struct AllocatedFile {
    file: FileBackend,
}

impl AllocatedFile {
    /// Opens the file at `path` as [`redb::Database::create`] does: created if missing, never
    /// truncated.
    pub(super) fn open(path: impl AsRef<Path>) -> Result<Self, DatabaseError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Self {
            file: FileBackend::new(file)?,
        })
    }
}

impl StorageBackend for AllocatedFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut end = self.file.len()?;
        // The length changes in one step, as with a plain `set_len`, and the zeros come after:
        // redb rebuilds its layout from the file's length after a crash and refuses a length
        // that no layout has, which a crash between steps of the zeros could leave. A crash
        // during the zeros leaves only holes, as a sparse grow would.
        self.file.set_len(len)?;
        if len <= end {
            return Ok(());
        }
        let zeros = vec![0; ZEROS];
        while end < len {
            let step = (len - end).min(ZEROS as u64) as usize;
            self.file.write(end, &zeros[..step])?;
            end += step as u64;
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.file.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// Bytes the file system has allocated to the file at `path`, and the file's length.
    fn allocated_and_length(path: &Path) -> (u64, u64) {
        let metadata = std::fs::metadata(path).unwrap();
        (metadata.blocks() * 512, metadata.len())
    }

    #[test]
    fn growth_is_allocated_and_reads_back_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let file = AllocatedFile::open(&path).unwrap();
        file.write(0, b"head").unwrap();
        let length = 3 * ZEROS as u64 + 4096 + 17;
        file.set_len(length).unwrap();
        assert_eq!(file.len().unwrap(), length);
        let (allocated, on_disk) = allocated_and_length(&path);
        assert_eq!(on_disk, length);
        assert!(
            allocated >= length,
            "{allocated} of {length} bytes allocated"
        );
        let mut read = vec![1; length as usize];
        file.read(0, &mut read).unwrap();
        assert_eq!(&read[..4], b"head");
        assert!(read[4..].iter().all(|&byte| byte == 0));
        file.set_len(4).unwrap();
        assert_eq!(file.len().unwrap(), 4);
    }

    #[test]
    fn a_store_file_grown_by_redb_has_no_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let database = redb::Builder::new()
            .create_with_backend(AllocatedFile::open(&path).unwrap())
            .unwrap();
        let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
        let value = vec![7; 64 * 1024];
        for key in 0..64 {
            let transaction = database.begin_write().unwrap();
            transaction
                .open_table(table)
                .unwrap()
                .insert(key, value.as_slice())
                .unwrap();
            transaction.commit().unwrap();
        }
        drop(database);
        let (allocated, length) = allocated_and_length(&path);
        assert!(length > 4 * 1024 * 1024, "the file grew to {length} bytes");
        assert!(
            allocated >= length,
            "{allocated} of {length} bytes allocated"
        );
    }
}

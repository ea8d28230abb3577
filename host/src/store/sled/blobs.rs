//! sled's blob files, made durable at each checkpoint.
//!
//! sled 0.34 writes an item larger than a quarter of a log segment (~128 KiB:
//! our packed blocks reach that) to a file of its own under `blobs/`, and
//! never syncs it: its flush syncs the log segment that points at the blob,
//! not the blob. After a kernel crash or a power cut the segment can survive
//! and the blob not, and sled's recovery treats the blob that fails its CRC as
//! the end of its log. Between checkpoints the write-ahead log holds every
//! turn since the last one and redoes what such a cut loses; a checkpoint,
//! which starts the log over, must first make every blob sled's flushed state
//! points at durable. [`BlobSync::sync_new`] does, once per file (sled writes
//! a blob once, under a new name, and only ever removes it). Not covered: a
//! blob file lost whole between checkpoints, which sled's recovery takes for
//! one it removed (see the README's *Reliability*).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The blob files synced so far, so each is synced once.
#[derive(Debug)]
pub(super) struct BlobSync {
    dir: PathBuf,
    synced: HashSet<OsString>,
}

impl BlobSync {
    /// Blobs of the sled store at `db_dir`; none counted as synced yet, so the
    /// first [`BlobSync::sync_new`] syncs every blob file there is.
    pub(super) fn new(db_dir: &Path) -> Self {
        Self {
            dir: db_dir.join("blobs"),
            synced: HashSet::new(),
        }
    }

    /// Sync every blob file not synced before, and then the directory (so the
    /// new names are durable too). Returns how many files were synced. A blob
    /// sled removes meanwhile is skipped: sled no longer needs it.
    pub(super) fn sync_new(&mut self) -> io::Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::with_capacity(self.synced.len());
        let mut newly = 0;
        for entry in entries {
            let name = entry?.file_name();
            if !self.synced.contains(&name) {
                match File::open(self.dir.join(&name)).and_then(|f| f.sync_all()) {
                    Ok(()) => newly += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            present.insert(name);
        }
        if newly > 0 {
            File::open(&self.dir)?.sync_all()?;
        }
        // Names sled has removed are dropped, so the set stays as small as the
        // directory.
        self.synced = present;
        Ok(newly)
    }

    /// How many blob files are known to be synced.
    #[cfg(test)]
    pub(super) fn synced(&self) -> usize {
        self.synced.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_blob_file_is_synced_once_and_removed_ones_are_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut blobs = BlobSync::new(dir.path());
        assert_eq!(blobs.sync_new().expect("no blobs dir yet"), 0);

        let blob_dir = dir.path().join("blobs");
        std::fs::create_dir(&blob_dir).expect("blobs dir");
        std::fs::write(blob_dir.join("100"), b"a").expect("blob");
        std::fs::write(blob_dir.join("200"), b"b").expect("blob");
        assert_eq!(blobs.sync_new().expect("sync"), 2);
        assert_eq!(blobs.sync_new().expect("sync"), 0, "already synced");

        std::fs::remove_file(blob_dir.join("100")).expect("remove");
        std::fs::write(blob_dir.join("300"), b"c").expect("blob");
        assert_eq!(blobs.sync_new().expect("sync"), 1, "only the new one");
        assert_eq!(blobs.synced(), 2, "the removed blob is forgotten");
    }

    #[test]
    fn sleds_large_values_land_in_blob_files_this_finds() {
        // Pins the premise: sled 0.34 puts a value over ~128 KiB in a blob
        // file under `blobs/` (if a later sled stops doing so, this says so).
        let dir = tempfile::tempdir().expect("tempdir");
        let db = ::sled::open(dir.path()).expect("sled");
        db.insert(b"big", vec![7u8; 512 * 1024]).expect("insert");
        db.flush().expect("flush");
        let mut blobs = BlobSync::new(dir.path());
        assert!(blobs.sync_new().expect("sync") >= 1);
    }
}

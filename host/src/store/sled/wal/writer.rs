//! How the log's records reach the device: written with `O_DIRECT` where the
//! file system takes it, then waited for with `sync_file_range`.
//!
//! A buffered append (a `pwrite` into the page cache) and then
//! `sync_file_range` (write the dirty pages out and wait) took 73-90 µs for a
//! 500-byte record on this project's disk; the same bytes written straight
//! from memory to the device, one `pwrite` on a file opened with `O_DIRECT`,
//! 49-58 µs (4 KB records: 84-162 against 55-57 µs; 60 KB: 106-142 against
//! 90-95). The guarantee is the same: the device has the bytes (neither
//! flushes the device's own volatile cache, see `wal.rs`). The
//! `sync_file_range` after each write is for file systems that serve some
//! direct writes through the page cache (ext4 with `data=journal`); after a
//! real direct write it finds nothing to write and returns in ~2 µs.
//!
//! Direct writes must start on a block boundary of the file and of memory and
//! cover whole blocks. So the appended bytes wait in a buffer that starts at
//! the block holding the end of the last write: each write covers that block
//! again (its earlier bytes as they are, the rest zeros) and the new records,
//! and its last partial block stays in the buffer for the next write. A file
//! system that refuses a direct write gets the same writes without `O_DIRECT`
//! (whole blocks do no harm there): one path either way.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// The block size writes are aligned to (in the file and in memory): the
/// page size, which covers devices with 512-byte and 4 KiB blocks.
pub const ALIGN: usize = 4096;

#[cfg(target_os = "linux")]
const O_DIRECT: i32 = libc::O_DIRECT;
/// Elsewhere [`LogWriter::open`] never asks for it.
#[cfg(not(target_os = "linux"))]
const O_DIRECT: i32 = 0;

/// Buffer capacity kept between writes (a bulk request's turn is ~1 MiB).
const BUFFER_KEPT: usize = 2 * 1024 * 1024;

/// A file opened for the log's writes, and the bytes waiting to be written.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    direct: bool,
    /// `buf[pad..]` starts on an [`ALIGN`] boundary of memory and holds the
    /// file's bytes from `base` on: the start of the block the last write
    /// ended in, then every byte appended since.
    buf: Vec<u8>,
    pad: usize,
    /// A multiple of [`ALIGN`].
    base: u64,
}

impl LogWriter {
    /// `path` opened for the log's writes: with `O_DIRECT` if a direct write
    /// of one block, tried first on a file of its own beside it, succeeds;
    /// else without (any failure of the try).
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::open_as(path, true)
    }

    /// [`LogWriter::open`]; without `O_DIRECT` unless `direct`.
    pub(super) fn open_as(path: &Path, direct: bool) -> io::Result<Self> {
        let direct = direct
            && cfg!(target_os = "linux")
            && {
                let probe_path = path.with_extension("direct-probe");
                let probe = Self::open_file(&probe_path, true).and_then(|file| {
                    let mut probe = Self::new(file, true);
                    probe.extend(&[0; 8]);
                    probe.write()
                });
                let _ = std::fs::remove_file(&probe_path);
                if let Err(e) = &probe {
                    tracing::info!(
                        dir = %path.parent().unwrap_or(path).display(),
                        error = %e,
                        "the store's log is written without O_DIRECT: the file system refused a direct write"
                    );
                }
                probe.is_ok()
            };
        Ok(Self::new(Self::open_file(path, direct)?, direct))
    }

    fn open_file(path: &Path, direct: bool) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(if direct { O_DIRECT } else { 0 })
            .open(path)
    }

    fn new(file: File, direct: bool) -> Self {
        let mut log = Self {
            file,
            direct,
            buf: Vec::new(),
            pad: 0,
            base: 0,
        };
        log.reserve(ALIGN);
        log
    }

    /// Whether the writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The next byte appended goes to `offset`: the bytes of its block before
    /// it are read back from the file, to be written again with it.
    pub fn start_at(&mut self, offset: u64) -> io::Result<()> {
        let head = (offset % ALIGN as u64) as usize;
        self.base = offset - head as u64;
        self.buf.truncate(self.pad);
        if head > 0 {
            // A whole block into the aligned buffer, as a direct read wants.
            self.reserve(ALIGN);
            self.buf.resize(self.pad + ALIGN, 0);
            let mut read = 0;
            while read < head {
                let at = self.base + read as u64;
                match self.file.read_at(&mut self.buf[self.pad + read..], at)? {
                    0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                    n => read += n,
                }
            }
            self.buf.truncate(self.pad + head);
        }
        Ok(())
    }

    /// Append `bytes` after the last ones (written at the next
    /// [`LogWriter::write`]).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    /// Write every appended byte (whole blocks, the last one completed with
    /// zeros: the file must be allocated that far) and wait until the device
    /// has them.
    pub fn write(&mut self) -> io::Result<()> {
        let pending = self.buf.len() - self.pad;
        let whole = pending.next_multiple_of(ALIGN);
        if whole == 0 {
            return Ok(());
        }
        // Zeros after the last byte, to the end of its block (`reserve` kept
        // room: the buffer does not move).
        self.buf.resize(self.pad + whole, 0);
        let written = self
            .file
            .write_all_at(&self.buf[self.pad..], self.base)
            .and_then(|()| sync_range(&self.file, self.base, whole as u64));
        // Whatever happened, the buffer again ends at the last appended byte:
        // a failed write can be made again.
        self.buf.truncate(self.pad + pending);
        written?;
        // The last partial block stays for the next write.
        let kept_from = pending - pending % ALIGN;
        self.base += kept_from as u64;
        if self.buf.capacity() > BUFFER_KEPT {
            let tail = self.buf[self.pad + kept_from..].to_vec();
            self.buf = Vec::new();
            self.pad = 0;
            self.extend(&tail);
        } else {
            self.buf.copy_within(self.pad + kept_from.., self.pad);
            self.buf.truncate(self.pad + pending - kept_from);
        }
        Ok(())
    }

    /// Room for `more` bytes and the zeros that complete their block, without
    /// the buffer moving (which would lose its alignment) before the write.
    fn reserve(&mut self, more: usize) {
        let needed = self.buf.len() + more + ALIGN;
        if self.buf.capacity() >= needed {
            return;
        }
        let pending = &self.buf[self.pad.min(self.buf.len())..];
        let mut grown: Vec<u8> = Vec::with_capacity((needed - self.pad).max(2 * ALIGN) + ALIGN);
        let addr = grown.as_ptr().addr();
        let pad = addr.next_multiple_of(ALIGN) - addr;
        grown.resize(pad, 0);
        grown.extend_from_slice(pending);
        self.buf = grown;
        self.pad = pad;
    }

    /// From now on every write fails as on a device error (fault injection
    /// for tests).
    #[cfg(test)]
    pub(super) fn refuse_writes(&mut self, path: &Path) {
        self.file = File::open(path).expect("the log, read-only");
    }
}

/// Write out `len` bytes of `file` from `offset` and wait for the device: the
/// call sled's flush makes. After a direct write it finds them clean.
/// No safe binding of `sync_file_range` exists in std, rustix or nix; sled
/// makes the same call through `libc`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn sync_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return file.sync_data();
    };
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a plain system call on a descriptor `file` keeps open for its
    // duration; it reads and writes none of this process's memory.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere: the file's data and what is needed to read it back.
#[cfg(not(target_os = "linux"))]
fn sync_range(file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Each test runs with direct writes and without.
    const MODES: [bool; 2] = [true, false];

    fn read(path: &Path, at: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        File::open(path)
            .expect("open")
            .read_exact_at(&mut out, at)
            .expect("read");
        out
    }

    /// A writer on `dir`'s file `log`, from `offset`.
    fn log_at(dir: &Path, direct: bool, offset: u64) -> (PathBuf, LogWriter) {
        let path = dir.join("log");
        let mut log = LogWriter::open_as(&path, direct).expect("open");
        if direct && !log.is_direct() {
            eprintln!("this file system takes no direct writes: tested without");
        }
        assert!(direct || !log.is_direct());
        log.start_at(offset).expect("start");
        (path, log)
    }

    #[test]
    fn appends_land_in_order_across_blocks_and_writes() {
        for direct in MODES {
            let dir = tempfile::tempdir().expect("dir");
            std::fs::write(dir.path().join("log"), vec![0xEE; 8 * ALIGN]).expect("file");
            // Mid-block: the block's first 100 bytes are read back and kept.
            let (path, mut log) = log_at(dir.path(), direct, ALIGN as u64 + 100);
            let mut expected = vec![0xEE; 100];
            // Small records inside one block, then ones that cross blocks.
            for (i, len) in [10usize, 300, 4000, 5000, 1, 9000].into_iter().enumerate() {
                let record = vec![i as u8 + 1; len];
                log.extend(&record);
                expected.extend_from_slice(&record);
                log.write().expect("write");
                assert_eq!(
                    read(&path, ALIGN as u64, expected.len()),
                    expected,
                    "record {i}, direct {direct}"
                );
            }
            // The rest of the last block is zeros; the block before the
            // start is as it was.
            let end = ALIGN + expected.len();
            let tail = end.next_multiple_of(ALIGN) - end;
            assert_eq!(read(&path, end as u64, tail), vec![0; tail]);
            assert_eq!(read(&path, 0, ALIGN), vec![0xEE; ALIGN]);
        }
    }

    #[test]
    fn a_large_write_leaves_a_small_buffer_and_the_bytes_continue() {
        for direct in MODES {
            let dir = tempfile::tempdir().expect("dir");
            let (path, mut log) = log_at(dir.path(), direct, 0);
            let big: Vec<u8> = (0..3 * BUFFER_KEPT + 123)
                .map(|i| (i % 251) as u8)
                .collect();
            log.extend(&big);
            log.write().expect("write");
            assert!(
                log.buf.capacity() <= 2 * ALIGN + ALIGN,
                "{}",
                log.buf.capacity()
            );
            log.extend(b"after");
            log.write().expect("write");
            let mut expected = big;
            expected.extend_from_slice(b"after");
            assert_eq!(read(&path, 0, expected.len()), expected);
        }
    }

    #[test]
    fn a_failed_write_keeps_its_bytes_for_the_next() {
        for direct in MODES {
            let dir = tempfile::tempdir().expect("dir");
            let (path, mut log) = log_at(dir.path(), direct, 0);
            log.extend(b"one");
            log.write().expect("write");
            let file = std::mem::replace(&mut log.file, File::open(&path).expect("read-only"));
            log.extend(b"two");
            assert!(log.write().is_err());
            log.file = file;
            log.write().expect("write");
            // The failed write left no padding behind: the next record
            // follows the last byte, not a block later.
            log.extend(b"three");
            log.write().expect("write");
            assert_eq!(read(&path, 0, 11), b"onetwothree");
        }
    }
}

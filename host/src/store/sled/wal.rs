//! The store's write-ahead log: each writer turn, appended and synced before
//! anyone hears it is durable and before sled is given its keys.
//!
//! A durable write used to end in sled's `flush`: sled hands its log buffer to
//! its I/O pool (waking all seven of its threads) and waits for it, and a turn
//! of more than a few keys was an `apply_batch`, whose B-tree work (a leaf
//! cloned per key, a split every ~8 appended keys) ran before its waiters were
//! answered: ~40% of a bulk submit's round trip with one request in flight. So
//! the writer appends the turn, encoded, to this file and syncs it itself; its
//! waiters are answered then, and sled gets the keys afterwards, while the
//! next request is being parsed.
//!
//! A record is written with `O_DIRECT` (see `wal/writer.rs`; buffered on a
//! file system that takes no direct writes) and is on the device once
//! `sync_file_range` (the call sled's flush makes: the written range on the
//! device, waited for) returns after it. So a turn is as durable as it was
//! under sled: it survives the process being killed at any instant and the
//! kernel crashing (a power cut can lose what the device's volatile cache
//! held, as under sled; and sled itself never syncs its blob files, see the
//! README's *Reliability*). For the sync to cover a record's bytes without
//! the file's metadata, the file grows in steps of zeros, each synced with
//! `fdatasync` before records are written into it; the writer grows it
//! [`HEADROOM`] ahead after answering a turn's waiters
//! ([`Wal::grow_ahead`]), so a sync on their path never waits for a growth
//! unless one turn outruns the headroom.
//!
//! sled is made durable only at a checkpoint ([`CHECKPOINT_BYTES`] of log, and
//! at close), after which the log starts over.
//!
//! Layout: a header page (magic, epoch, CRC), then records: length (u32 LE),
//! CRC-32 (u32 LE) of the epoch (u64 LE) followed by the payload, payload (a
//! turn as `commit.rs` encodes it). A checkpoint bumps the epoch and writes
//! records from the start again, over the old ones: a record of an earlier
//! epoch fails its CRC, so the log ends at the first record that does not
//! check (or is cut short). Overwriting in place keeps the file's blocks
//! allocated after its first cycle, so a sync flushes data and no metadata.
//!
//! Recovery ([`Wal::open`]) returns every record of the current epoch; applied
//! to sled in order they give the state after the last synced turn whatever
//! sled had already persisted of them (each write sets a key's final value:
//! applying a turn again is applying it once), because every turn is synced
//! here before sled sees it and sled is flushed before the log starts over.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use self::writer::{ALIGN, LogWriter};
use super::commit::{self, Writes};
use crate::store::StoreError;
use crate::store::codec::CodecError;

pub mod writer;

/// The log's file, in the store's directory.
pub(super) const FILE_NAME: &str = "wasmjobs.wal";

/// Log bytes after which the writer checkpoints (flushes sled, starts over).
/// Bounds the log's size and the replay after a crash: ~80k single submits.
pub(super) const CHECKPOINT_BYTES: u64 = 32 * 1024 * 1024;

/// The first bytes of the file: name and layout version.
const MAGIC: [u8; 8] = *b"wjwal\0\0\x01";

/// Records start after the header's page.
const HEADER_LEN: u64 = 4096;

/// A record's length and CRC.
const RECORD_HEADER: usize = 8;

/// How much the file grows at a time (zeros, synced with its new length).
const GROWTH: u64 = 1024 * 1024;

/// How far ahead of the next record the file is grown off the waiters' path.
const HEADROOM: u64 = 4 * GROWTH;

/// Largest record buffer kept between turns.
const BUFFER_KEPT: usize = 1024 * 1024;

/// The open log, owned by the store's writer.
#[derive(Debug)]
pub(super) struct Wal {
    /// Reads at open, the file's growth and its header.
    file: File,
    /// The records' writes.
    writer: LogWriter,
    epoch: u64,
    /// Where the next record goes.
    offset: u64,
    /// Where the last sync ended.
    synced: u64,
    /// The file's length: its bytes are allocated and their length durable.
    allocated: u64,
    /// The record being written (kept between turns).
    record: Vec<u8>,
}

impl Wal {
    /// Open the log in `dir`, creating it if there is none, and return the
    /// turns it holds since the last checkpoint, oldest first. Apply them to
    /// sled, flush sled, then [`Wal::restart`] (which writes a new log's
    /// header) before appending.
    pub(super) fn open(dir: &Path) -> Result<(Self, Vec<Writes>), StoreError> {
        Self::open_as(dir, true)
    }

    /// [`Wal::open`], with direct writes if `direct` and the file system takes
    /// them.
    fn open_as(dir: &Path, direct: bool) -> Result<(Self, Vec<Writes>), StoreError> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
        let len = file.metadata().map_err(io_error)?.len();
        let writer = LogWriter::open_as(&path, direct).map_err(io_error)?;
        let mut wal = Self {
            file,
            writer,
            epoch: 0,
            offset: HEADER_LEN,
            synced: HEADER_LEN,
            allocated: len,
            record: Vec::new(),
        };
        if len < HEADER_LEN {
            // New, or cut short before its first header reached the disk (a
            // header is only written after sled holds every turn before it):
            // nothing to replay. Its name is made durable in the directory;
            // the caller's restart writes its header.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error)?;
            wal.writer.start_at(wal.offset).map_err(io_error)?;
            return Ok((wal, Vec::new()));
        }
        let mut header = [0u8; 20];
        wal.file.read_exact_at(&mut header, 0).map_err(io_error)?;
        wal.epoch = read_header(&header)?;
        let turns = wal.read_turns(len)?;
        // Appends continue after the last record, inside its block.
        wal.writer.start_at(wal.offset).map_err(io_error)?;
        Ok((wal, turns))
    }

    /// The records of the current epoch from the header on, in a file of
    /// `file_len` bytes (the zeros and stale records after them are not
    /// read); leaves `offset` after the last.
    fn read_turns(&mut self, file_len: u64) -> Result<Vec<Writes>, StoreError> {
        let mut turns = Vec::new();
        let mut at = HEADER_LEN;
        let mut head = [0u8; RECORD_HEADER];
        let mut payload = Vec::new();
        while at + RECORD_HEADER as u64 <= file_len {
            self.file.read_exact_at(&mut head, at).map_err(io_error)?;
            let len = u64::from(u32::from_le_bytes(head[..4].try_into().expect("4 bytes")));
            let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
            let start = at + RECORD_HEADER as u64;
            if len == 0 || start + len > file_len {
                break;
            }
            payload.resize(len as usize, 0);
            self.file
                .read_exact_at(&mut payload, start)
                .map_err(io_error)?;
            if checksum(self.epoch, &payload) != crc {
                break;
            }
            // A record that checks but does not decode was written so: the
            // log cannot be trusted past it.
            let turn = commit::decode(&payload).map_err(|source| StoreError::Corrupt {
                key: format!("{FILE_NAME} record at byte {at}"),
                source,
            })?;
            turns.push(turn);
            at = start + len;
        }
        self.offset = at;
        self.synced = self.offset;
        Ok(turns)
    }

    /// Append `writes` as one record (durable at the next [`Wal::sync`]; until
    /// then it may not be in the file at all).
    pub(super) fn append(&mut self, writes: &Writes) -> io::Result<()> {
        let mut record = std::mem::take(&mut self.record);
        record.clear();
        record.extend_from_slice(&[0; RECORD_HEADER]);
        commit::encode_into(writes, &mut record);
        let len = u32::try_from(record.len() - RECORD_HEADER)
            .map_err(|_| io::Error::other("a store turn of 4 GiB or more"))?;
        let crc = checksum(self.epoch, &record[RECORD_HEADER..]);
        record[..4].copy_from_slice(&len.to_le_bytes());
        record[4..RECORD_HEADER].copy_from_slice(&crc.to_le_bytes());
        // The write covers its last block whole.
        let end = self.offset + record.len() as u64;
        let grown = self.grow_to(end.next_multiple_of(ALIGN as u64));
        if grown.is_ok() {
            self.writer.extend(&record);
            self.offset = end;
        }
        if record.capacity() <= BUFFER_KEPT {
            self.record = record;
        }
        grown
    }

    /// From now on every append fails as on a device error: the file is
    /// swapped for a read-only handle on itself (fault injection for tests).
    #[cfg(test)]
    pub(super) fn refuse_appends(&mut self, dir: &Path) {
        let path = dir.join(FILE_NAME);
        self.file = File::open(&path).expect("the log, read-only");
        self.writer.refuse_writes(&path);
    }

    /// Wait until every appended record is on the device.
    pub(super) fn sync(&mut self) -> io::Result<()> {
        if self.synced < self.offset {
            self.writer.write()?;
            self.synced = self.offset;
        }
        Ok(())
    }

    /// Grow the file [`HEADROOM`] ahead of the next record, if it is not
    /// already (after a turn's waiters are answered).
    pub(super) fn grow_ahead(&mut self) -> io::Result<()> {
        self.grow_to(self.offset + HEADROOM)
    }

    /// Grow the file with zeros to cover `end`, its new length synced: the
    /// records later written into it change no metadata.
    fn grow_to(&mut self, end: u64) -> io::Result<()> {
        if end <= self.allocated {
            return Ok(());
        }
        // From a static page of zeros: a buffer of the growth's size, touched
        // to be zeroed, stayed with the allocator (+4.6 MiB of idle RSS).
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let new_len = end.div_ceil(GROWTH) * GROWTH;
        let mut at = self.allocated;
        while at < new_len {
            let n = (new_len - at).min(ZEROS.len() as u64);
            self.file.write_all_at(&ZEROS[..n as usize], at)?;
            at += n;
        }
        self.file.sync_data()?;
        self.allocated = new_len;
        Ok(())
    }

    /// Whether the log has grown past [`CHECKPOINT_BYTES`].
    pub(super) fn wants_checkpoint(&self) -> bool {
        self.offset >= CHECKPOINT_BYTES
    }

    /// Start over with a new epoch: the records so far are no longer read.
    /// Only once sled durably holds every turn appended so far.
    pub(super) fn restart(&mut self) -> io::Result<()> {
        let epoch = self.epoch + 1;
        let mut header = [0u8; 20];
        header[..8].copy_from_slice(&MAGIC);
        header[8..16].copy_from_slice(&epoch.to_le_bytes());
        let crc = crc32fast::hash(&header[..16]);
        header[16..].copy_from_slice(&crc.to_le_bytes());
        let mut page = vec![0u8; HEADER_LEN as usize];
        page[..header.len()].copy_from_slice(&header);
        self.file.write_all_at(&page, 0)?;
        self.file.sync_data()?;
        self.allocated = self.allocated.max(HEADER_LEN);
        self.epoch = epoch;
        self.offset = HEADER_LEN;
        self.synced = HEADER_LEN;
        self.writer.start_at(HEADER_LEN)
    }
}

/// The epoch in a log's header.
fn read_header(header: &[u8; 20]) -> Result<u64, StoreError> {
    let crc = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
    if header[..8] != MAGIC || crc32fast::hash(&header[..16]) != crc {
        // Not a wasmjobs log, or damaged: what it holds cannot be replayed.
        return Err(StoreError::Corrupt {
            key: format!("{FILE_NAME} header"),
            source: CodecError::Checksum,
        });
    }
    Ok(u64::from_le_bytes(
        header[8..16].try_into().expect("8 bytes"),
    ))
}

fn io_error(e: io::Error) -> StoreError {
    StoreError::Io(::sled::Error::Io(e))
}

/// A record's CRC: of its epoch, then its payload.
fn checksum(epoch: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&epoch.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use ::sled::IVec;

    use super::*;

    fn turn(pairs: &[(&str, Option<&str>)]) -> Writes {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    IVec::from(k.as_bytes()),
                    v.map(|v| IVec::from(v.as_bytes())),
                )
            })
            .collect()
    }

    /// A new log in `dir`, ready for appends (as the store's open leaves it),
    /// with direct writes or without.
    fn new_log(dir: &Path, direct: bool) -> Wal {
        let (mut wal, turns) = Wal::open_as(dir, direct).expect("open");
        assert!(turns.is_empty());
        if direct && !wal.writer.is_direct() {
            eprintln!("this file system takes no direct writes: the log is tested without");
        }
        assert!(direct || !wal.writer.is_direct());
        wal.restart().expect("restart");
        wal
    }

    /// Each test runs on a log with direct writes and on one without.
    const MODES: [bool; 2] = [true, false];

    #[test]
    fn appended_turns_are_read_back_in_order_until_a_restart() {
        for direct in MODES {
            appended_turns_are_read_back(direct);
        }
    }

    fn appended_turns_are_read_back(direct: bool) {
        let dir = tempfile::tempdir().expect("dir");
        let mut wal = new_log(dir.path(), direct);
        let one = turn(&[("a", Some("1")), ("b", None)]);
        let two = turn(&[("a", Some("2"))]);
        wal.append(&one).expect("append");
        wal.append(&two).expect("append");
        wal.sync().expect("sync");
        drop(wal);
        let (mut wal, turns) = Wal::open_as(dir.path(), direct).expect("reopen");
        assert_eq!(turns, [one.clone(), two.clone()]);
        // Appends continue after what was read (inside its last block).
        let three = turn(&[("c", Some("3"))]);
        wal.append(&three).expect("append");
        wal.sync().expect("sync");
        drop(wal);
        let (mut wal, turns) = Wal::open_as(dir.path(), direct).expect("reopen");
        assert_eq!(turns, [one, two, three]);
        // A restart drops them all, though their bytes are still in the file.
        wal.restart().expect("restart");
        let four = turn(&[("d", Some("4"))]);
        wal.append(&four).expect("append");
        wal.sync().expect("sync");
        drop(wal);
        let (_wal, turns) = Wal::open_as(dir.path(), direct).expect("reopen");
        assert_eq!(turns, [four], "the old epoch's later records end the log");
    }

    #[test]
    fn a_record_cut_short_or_damaged_ends_the_log() {
        for direct in MODES {
            a_damaged_record_ends_the_log(direct);
        }
    }

    fn a_damaged_record_ends_the_log(direct: bool) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(FILE_NAME);
        let mut wal = new_log(dir.path(), direct);
        let one = turn(&[("a", Some("1"))]);
        wal.append(&one).expect("append");
        wal.sync().expect("sync");
        let end_of_one = wal.offset;
        wal.append(&turn(&[("b", Some("2"))])).expect("append");
        wal.sync().expect("sync");
        let end_of_two = wal.offset as usize;
        drop(wal);
        let full = std::fs::read(&path).expect("read");
        assert!(
            full.len() > end_of_two,
            "the file grows ahead of its records"
        );
        for cut in end_of_one as usize..end_of_two {
            std::fs::write(&path, &full[..cut]).expect("write");
            let (_wal, turns) = Wal::open_as(dir.path(), direct).expect("reopen");
            assert_eq!(turns, std::slice::from_ref(&one), "cut at {cut}");
        }
        // A flipped byte in the second record's payload.
        let mut damaged = full.clone();
        damaged[end_of_two - 1] ^= 0x40;
        std::fs::write(&path, &damaged).expect("write");
        let (_wal, turns) = Wal::open(dir.path()).expect("reopen");
        assert_eq!(turns, [one]);
        // A damaged header is refused: the log cannot be trusted.
        let mut damaged = full;
        damaged[9] ^= 1;
        std::fs::write(&path, &damaged).expect("write");
        assert!(matches!(
            Wal::open(dir.path()),
            Err(StoreError::Corrupt {
                source: CodecError::Checksum,
                ..
            })
        ));
    }

    #[test]
    fn the_file_is_grown_ahead_of_the_next_record() {
        let dir = tempfile::tempdir().expect("dir");
        let mut wal = new_log(dir.path(), true);
        wal.append(&turn(&[("a", Some("1"))])).expect("append");
        wal.grow_ahead().expect("grow");
        let len = std::fs::metadata(dir.path().join(FILE_NAME))
            .expect("meta")
            .len();
        assert!(len >= wal.offset + HEADROOM, "{len} bytes");
        assert_eq!(len % GROWTH, 0);
        assert_eq!(wal.allocated, len);
    }

    #[test]
    fn the_log_asks_for_a_checkpoint_past_its_size() {
        let dir = tempfile::tempdir().expect("dir");
        let mut wal = new_log(dir.path(), true);
        let big = vec![(
            IVec::from(&b"k"[..]),
            Some(IVec::from(vec![7u8; 1024 * 1024])),
        )];
        while !wal.wants_checkpoint() {
            wal.append(&big).expect("append");
            wal.sync().expect("sync");
        }
        assert!(wal.offset >= CHECKPOINT_BYTES);
        wal.restart().expect("restart");
        assert!(!wal.wants_checkpoint());
        let len = std::fs::metadata(dir.path().join(FILE_NAME))
            .expect("meta")
            .len();
        assert!(len >= CHECKPOINT_BYTES, "the file keeps its blocks");
    }
}

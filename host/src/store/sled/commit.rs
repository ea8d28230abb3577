//! How one writer turn reaches sled: logged and synced first ([`Wal`]), so it
//! is durable, all of it or (after a crash) none, before its waiters are
//! answered; then applied to sled key by key ([`Committer::settle`]; readers
//! see the keys in the overlay meanwhile). sled is flushed only at a
//! checkpoint, when the log has grown long and at close, its blob files synced
//! too ([`BlobSync`]); at open, the turns the log holds are applied again
//! ([`Committer::open`]).
//!
//! Earlier releases made a small turn durable under one sled key
//! ([`TURN_KEY`]) and a large one as an `apply_batch`; a store they wrote may
//! still hold a turn key, which the open applies first.

use std::path::Path;

use ::sled::{Db, IVec};

use super::blobs::BlobSync;
use super::keys;
use super::queue_blocks::QueueBlocks;
use super::wal::Wal;
use crate::store::StoreError;
use crate::store::codec::CodecError;

/// The `m` key under which earlier releases stored their latest small turn.
const TURN_KEY: [u8; 5] = [keys::META, b't', b'u', b'r', b'n'];

/// The format byte of an encoded turn.
const TURN_V1: u8 = 1;

/// One writer turn: every key it sets (`Some`) or removes (`None`).
pub(super) type Writes = Vec<(IVec, Option<IVec>)>;

/// Writes turns to the log and to sled; owned by the writer thread.
#[derive(Debug)]
pub(super) struct Committer {
    db: Db,
    wal: Wal,
    /// The writes of the last logged turn not yet applied to sled.
    unsettled: Writes,
    /// Packs the turns' queue entries.
    queue: QueueBlocks,
    /// sled's blob files, synced at each checkpoint.
    blobs: BlobSync,
}

impl Committer {
    /// Open the log of the store in `dir` (sled's `db`) and recover: the turn
    /// key of an earlier release, then every turn in the log, applied and
    /// flushed before the log starts over. Run before anything reads the store.
    pub(super) fn open(db: Db, dir: &Path) -> Result<Self, StoreError> {
        recover_turn_key(&db)?;
        let (mut wal, turns) = Wal::open(dir)?;
        let mut blobs = BlobSync::new(dir);
        if !turns.is_empty() {
            // One batch: a later turn's write of a key replaces an earlier one's.
            let mut batch = ::sled::Batch::default();
            for turn in turns {
                add_to_batch(&mut batch, turn);
            }
            db.apply_batch(batch)?;
            db.flush()?;
        }
        // A process killed before it could checkpoint may have left blobs the
        // kernel holds but the device does not: all of them are synced before
        // the log that covers them starts over.
        blobs.sync_new().map_err(::sled::Error::Io)?;
        wal.restart().map_err(::sled::Error::Io)?;
        Ok(Self {
            db,
            wal,
            unsettled: Writes::new(),
            queue: QueueBlocks::default(),
            blobs,
        })
    }

    /// Log `writes`, all of them or (after a crash) none: durable at the next
    /// [`Committer::sync`], in sled's own keys at [`Committer::settle`].
    /// Returns whether anything was logged.
    pub(super) fn commit(&mut self, mut writes: Writes) -> Result<bool, ::sled::Error> {
        self.settle()?;
        // After the settle: the blocks it rewrites are in sled under their keys.
        self.queue.pack(&self.db, &mut writes)?;
        if writes.is_empty() {
            return Ok(false);
        }
        self.wal.append(&writes)?;
        self.unsettled = writes;
        Ok(true)
    }

    #[cfg(test)]
    pub(super) fn wal(&mut self) -> &mut Wal {
        &mut self.wal
    }

    /// Wait until every logged turn is on the device.
    pub(super) fn sync(&mut self) -> Result<(), ::sled::Error> {
        Ok(self.wal.sync()?)
    }

    /// Apply the last logged turn's writes to sled (only once it is synced:
    /// sled must never hold a write the log could lose), checkpoint when the
    /// log has grown long, and grow its file ahead of the next turns.
    pub(super) fn settle(&mut self) -> Result<(), ::sled::Error> {
        self.apply_unsettled()?;
        if self.wal.wants_checkpoint() {
            self.checkpoint()?;
        }
        Ok(self.wal.grow_ahead()?)
    }

    /// Make sled durable and start the log over (at close, and as the log
    /// grows), so that a restart has little or nothing to replay.
    pub(super) fn checkpoint(&mut self) -> Result<(), ::sled::Error> {
        let started = std::time::Instant::now();
        self.apply_unsettled()?;
        self.db.flush()?;
        let blobs = self.blobs.sync_new()?;
        self.wal.restart()?;
        tracing::debug!(
            blobs,
            elapsed_us = started.elapsed().as_micros() as u64,
            "store checkpoint"
        );
        Ok(())
    }

    fn apply_unsettled(&mut self) -> Result<(), ::sled::Error> {
        for (key, value) in std::mem::take(&mut self.unsettled) {
            match value {
                Some(v) => self.db.insert(key, v)?,
                None => self.db.remove(key)?,
            };
        }
        Ok(())
    }
}

/// Apply the small turn an earlier release may have left under [`TURN_KEY`]
/// (cut short by a crash), and remove the key.
fn recover_turn_key(db: &Db) -> Result<(), StoreError> {
    let Some(turn) = db.get(TURN_KEY)? else {
        return Ok(());
    };
    let writes = decode(&turn).map_err(|source| StoreError::Corrupt {
        key: "m/turn".into(),
        source,
    })?;
    let mut batch = ::sled::Batch::default();
    add_to_batch(&mut batch, writes);
    batch.remove(&TURN_KEY[..]);
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}

/// Add `writes` to `batch` (sled applies a batch atomically across a crash).
fn add_to_batch(batch: &mut ::sled::Batch, writes: Writes) {
    for (key, value) in writes {
        match value {
            Some(v) => batch.insert(key, v),
            None => batch.remove(key),
        }
    }
}

fn encoded_len(writes: &Writes) -> usize {
    5 + writes
        .iter()
        .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, |v| v.len()))
        .sum::<usize>()
}

/// `writes` appended to `out`: `[TURN_V1]`, the number of writes (u32 BE),
/// then per write: key length (u32 BE), key, then `0` (removed) or `1`, value
/// length (u32 BE), value.
pub(super) fn encode_into(writes: &Writes, out: &mut Vec<u8>) {
    out.reserve(encoded_len(writes));
    out.push(TURN_V1);
    out.extend_from_slice(&(writes.len() as u32).to_be_bytes());
    for (key, value) in writes {
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        match value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
}

pub(super) fn decode(mut rest: &[u8]) -> Result<Writes, CodecError> {
    match rest.split_first() {
        Some((&TURN_V1, tail)) => rest = tail,
        Some((&other, _)) => return Err(CodecError::UnknownFormat(other)),
        None => return Err(CodecError::Empty),
    }
    let (count, tail) = rest.split_first_chunk::<4>().ok_or(CodecError::Truncated)?;
    let count = u32::from_be_bytes(*count) as usize;
    rest = tail;
    // Each write takes at least 5 bytes: no allocation past what is there.
    let mut writes = Writes::with_capacity(count.min(rest.len() / 5));
    for _ in 0..count {
        let key = take_sized(&mut rest)?;
        let (&tag, tail) = rest.split_first().ok_or(CodecError::Truncated)?;
        rest = tail;
        let value = match tag {
            0 => None,
            1 => Some(IVec::from(take_sized(&mut rest)?)),
            other => return Err(CodecError::UnknownFormat(other)),
        };
        writes.push((IVec::from(key), value));
    }
    if !rest.is_empty() {
        return Err(CodecError::Trailing);
    }
    Ok(writes)
}

/// A u32-length-prefixed slice off the front of `rest`.
fn take_sized<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], CodecError> {
    let (len, tail) = rest.split_first_chunk::<4>().ok_or(CodecError::Truncated)?;
    let len = u32::from_be_bytes(*len) as usize;
    if tail.len() < len {
        return Err(CodecError::Truncated);
    }
    let (item, tail) = tail.split_at(len);
    *rest = tail;
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(s: &str) -> IVec {
        IVec::from(s.as_bytes())
    }

    fn encode(writes: &Writes) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(writes, &mut out);
        out
    }

    /// Tests reopen the directory right after dropping a handle on it.
    fn open(dir: &Path) -> Db {
        super::super::tests::when_free(|| ::sled::Config::new().path(dir).open())
    }

    #[test]
    fn a_turn_decodes_to_what_was_encoded() {
        let writes = vec![
            (iv("a"), Some(iv("1"))),
            (iv("b"), None),
            (iv("c"), Some(IVec::from(&[][..]))),
        ];
        assert_eq!(decode(&encode(&writes)).expect("decode"), writes);
        let bytes = encode(&writes);
        for cut in 1..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut} decoded");
        }
        assert!(matches!(decode(&[9]), Err(CodecError::UnknownFormat(9))));
    }

    #[test]
    fn a_logged_turn_not_yet_in_sled_is_applied_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path());
        db.insert("gone", "x").expect("insert");
        let mut committer = Committer::open(db.clone(), dir.path()).expect("committer");
        let turn = vec![(iv("k1"), Some(iv("v1"))), (iv("gone"), None)];
        assert!(committer.commit(turn).expect("commit"));
        committer.sync().expect("sync");
        // Durable in the log, not in sled: what a crash before the settle leaves.
        assert_eq!(db.get("k1").expect("get"), None);
        assert_eq!(db.get("gone").expect("get"), Some(iv("x")));
        drop((committer, db));
        let db = open(dir.path());
        let mut committer = Committer::open(db.clone(), dir.path()).expect("recover");
        assert_eq!(db.get("k1").expect("get"), Some(iv("v1")));
        assert_eq!(db.get("gone").expect("get"), None);
        // A later turn's write of the same key wins over an earlier one's.
        committer
            .commit(vec![(iv("k1"), Some(iv("v2")))])
            .expect("commit");
        committer.settle().expect("settle");
        committer
            .commit(vec![(iv("k1"), Some(iv("v3"))), (iv("k2"), Some(iv("w")))])
            .expect("commit");
        committer.sync().expect("sync");
        drop((committer, db));
        let db = open(dir.path());
        let _committer = Committer::open(db.clone(), dir.path()).expect("recover");
        assert_eq!(db.get("k1").expect("get"), Some(iv("v3")));
        assert_eq!(db.get("k2").expect("get"), Some(iv("w")));
    }

    #[test]
    fn a_checkpoint_leaves_nothing_to_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path());
        let mut committer = Committer::open(db.clone(), dir.path()).expect("committer");
        committer
            .commit(vec![(iv("k"), Some(iv("v")))])
            .expect("commit");
        committer.sync().expect("sync");
        committer.checkpoint().expect("checkpoint");
        assert_eq!(db.get("k").expect("get"), Some(iv("v")), "settled");
        let (_wal, turns) = Wal::open(dir.path()).expect("log");
        assert!(turns.is_empty(), "the log started over");
    }

    #[test]
    fn a_settle_past_the_logs_size_checkpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path());
        let mut committer = Committer::open(db.clone(), dir.path()).expect("committer");
        let size = super::super::wal::CHECKPOINT_BYTES as usize;
        let big = IVec::from(vec![7u8; size]);
        assert!(
            committer
                .commit(vec![(iv("big"), Some(big))])
                .expect("commit")
        );
        committer.sync().expect("sync");
        committer.settle().expect("settle");
        assert_eq!(db.get("big").expect("get").map(|v| v.len()), Some(size));
        let (_wal, turns) = Wal::open(dir.path()).expect("log");
        assert!(turns.is_empty(), "the log started over");
    }

    #[test]
    fn a_checkpoint_syncs_the_blob_files_sled_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path());
        let mut committer = Committer::open(db.clone(), dir.path()).expect("committer");
        // Over sled's blob threshold (a quarter of its 512 KiB segments).
        let big = IVec::from(vec![7u8; 256 * 1024]);
        assert!(
            committer
                .commit(vec![(iv("big"), Some(big))])
                .expect("commit")
        );
        committer.sync().expect("sync");
        committer.checkpoint().expect("checkpoint");
        assert!(
            committer.blobs.sync_new().expect("sync") == 0 && committer.blobs.synced() >= 1,
            "the checkpoint synced the blob the value went to"
        );
    }

    #[test]
    fn an_earlier_releases_turn_key_is_applied_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path());
        db.insert("gone", "x").expect("insert");
        // What a crash could leave: the turn key, and only some of its writes.
        let turn = vec![
            (iv("k1"), Some(iv("v1"))),
            (iv("gone"), None),
            (iv("k2"), Some(iv("v2"))),
        ];
        db.insert(TURN_KEY, encode(&turn)).expect("insert");
        db.insert("k1", "v1").expect("insert");
        let _committer = Committer::open(db.clone(), dir.path()).expect("recover");
        assert_eq!(db.get("k1").expect("get"), Some(iv("v1")));
        assert_eq!(db.get("k2").expect("get"), Some(iv("v2")));
        assert_eq!(db.get("gone").expect("get"), None);
        assert_eq!(db.get(TURN_KEY).expect("get"), None);
    }

    #[test]
    fn a_corrupt_turn_key_stops_the_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path());
        db.insert(TURN_KEY, &[TURN_V1, 0, 0, 0, 1, 0][..])
            .expect("insert");
        assert!(matches!(
            Committer::open(db, dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }
}

//! How one writer turn reaches sled, atomic across a crash, with one device
//! sync when it is small.
//!
//! sled makes a multi-key `apply_batch` atomic by reserving a marker in its log
//! and writing out its log buffer, `sync_file_range` and all, before the
//! batch's own entries; the flush then writes out the buffer holding them. So
//! every flushed batch waited for the device twice. Measured here with `perf
//! trace` while one client submitted: two `sync_file_range` per submit, ~110 µs
//! each, the largest part of a lone durable submit.
//!
//! A small turn goes to sled as plain writes instead: first the whole turn as
//! one value under one key ([`TURN_KEY`]), which is all a durability wait needs
//! (one sync at the flush); then, once the waiters are answered, each of its
//! keys ([`Committer::settle`]; readers see them in the overlay meanwhile).
//! sled recovers a prefix of its log, so after a crash either the turn key is
//! there, and [`recover`] applies the turn again (every write sets a key's
//! final value: applying it twice is applying it once), or none of the turn
//! is. A turn's own writes precede the next turn's key in the log, so the key
//! only ever needs to hold the latest turn. A large turn is one `apply_batch`
//! (one more sync is nothing next to hundreds of keys) that also removes the
//! turn key, and so does the recovery: applying the key again never undoes a
//! later write.

use ::sled::{Db, IVec};

use super::keys;
use super::queue_blocks::QueueBlocks;
use crate::store::StoreError;
use crate::store::codec::CodecError;

/// The `m` key holding the latest turn if it was written as a small one.
const TURN_KEY: [u8; 5] = [keys::META, b't', b'u', b'r', b'n'];

/// Turns of up to this many bytes (keys, values and framing) are small: well
/// under sled's log buffer, and far under the size it stores apart as a blob
/// file.
const SMALL_TURN_BYTES: usize = 32 * 1024;

/// The format byte of an encoded turn.
const TURN_V1: u8 = 1;

/// One writer turn: every key it sets (`Some`) or removes (`None`).
pub(super) type Writes = Vec<(IVec, Option<IVec>)>;

/// Writes turns to sled; owned by the writer thread.
#[derive(Debug)]
pub(super) struct Committer {
    db: Db,
    /// Whether sled holds a turn under [`TURN_KEY`].
    turn_stored: bool,
    /// The writes of the small turn under [`TURN_KEY`] not yet applied to
    /// their own keys.
    unsettled: Writes,
    /// Packs the turns' queue entries.
    queue: QueueBlocks,
}

impl Committer {
    /// The committer of a store that [`recover`] has run on.
    pub(super) fn new(db: Db) -> Self {
        Self {
            db,
            turn_stored: false,
            unsettled: Writes::new(),
            queue: QueueBlocks::default(),
        }
    }

    /// Write `writes` to sled, all of them or (after a crash) none; durable at
    /// the next flush. A small turn reaches its own keys only at
    /// [`Committer::settle`]: until then sled has it under [`TURN_KEY`] alone.
    pub(super) fn commit(&mut self, mut writes: Writes) -> Result<(), ::sled::Error> {
        self.settle()?;
        // After the settle: the blocks it rewrites are in sled under their keys.
        self.queue.pack(&self.db, &mut writes)?;
        if writes.is_empty() {
            return Ok(());
        }
        if encoded_len(&writes) <= SMALL_TURN_BYTES {
            self.db.insert(TURN_KEY, encode(&writes))?;
            self.turn_stored = true;
            self.unsettled = writes;
            return Ok(());
        }
        let mut batch = batch_of(writes);
        if self.turn_stored {
            batch.remove(&TURN_KEY[..]);
        }
        self.db.apply_batch(batch)?;
        self.turn_stored = false;
        Ok(())
    }

    /// Apply the last small turn's writes to their own keys (before the next
    /// turn's key, so that key may replace this one).
    pub(super) fn settle(&mut self) -> Result<(), ::sled::Error> {
        for (key, value) in std::mem::take(&mut self.unsettled) {
            match value {
                Some(v) => self.db.insert(key, v)?,
                None => self.db.remove(key)?,
            };
        }
        Ok(())
    }
}

/// Apply the small turn a crash may have cut short, if one is stored; run at
/// open, before anything reads the store.
pub(super) fn recover(db: &Db) -> Result<(), StoreError> {
    let Some(turn) = db.get(TURN_KEY)? else {
        return Ok(());
    };
    let writes = decode(&turn).map_err(|source| StoreError::Corrupt {
        key: "m/turn".into(),
        source,
    })?;
    let mut batch = batch_of(writes);
    batch.remove(&TURN_KEY[..]);
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}

/// `writes` as one sled batch (atomic across a crash).
fn batch_of(writes: Writes) -> ::sled::Batch {
    let mut batch = ::sled::Batch::default();
    for (key, value) in writes {
        match value {
            Some(v) => batch.insert(key, v),
            None => batch.remove(key),
        }
    }
    batch
}

fn encoded_len(writes: &Writes) -> usize {
    5 + writes
        .iter()
        .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, |v| v.len()))
        .sum::<usize>()
}

/// `[TURN_V1]`, the number of writes (u32 BE), then per write: key length
/// (u32 BE), key, then `0` (removed) or `1`, value length (u32 BE), value.
fn encode(writes: &Writes) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(writes));
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
    out
}

fn decode(mut rest: &[u8]) -> Result<Writes, CodecError> {
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

    fn temp_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = ::sled::Config::new().path(dir.path()).open().expect("open");
        (dir, db)
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
    fn a_small_turn_cut_short_by_a_crash_is_applied_at_open() {
        let (_dir, db) = temp_db();
        db.insert("gone", "x").expect("insert");
        // What a crash can leave: the turn key, and only some of its writes.
        let turn = vec![
            (iv("k1"), Some(iv("v1"))),
            (iv("gone"), None),
            (iv("k2"), Some(iv("v2"))),
        ];
        db.insert(TURN_KEY, encode(&turn)).expect("insert");
        db.insert("k1", "v1").expect("insert");
        recover(&db).expect("recover");
        assert_eq!(db.get("k1").expect("get"), Some(iv("v1")));
        assert_eq!(db.get("k2").expect("get"), Some(iv("v2")));
        assert_eq!(db.get("gone").expect("get"), None);
        assert_eq!(db.get(TURN_KEY).expect("get"), None);
    }

    #[test]
    fn a_small_turn_is_durable_by_its_key_until_settled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || ::sled::Config::new().path(dir.path()).open().expect("open");
        let db = open();
        db.insert("gone", "x").expect("insert");
        let mut committer = Committer::new(db.clone());
        let turn = vec![(iv("k1"), Some(iv("v1"))), (iv("gone"), None)];
        committer.commit(turn.clone()).expect("commit");
        // What a durability wait sees flushed: the turn key, not its writes.
        db.flush().expect("flush");
        assert_eq!(db.get("k1").expect("get"), None);
        assert_eq!(db.get("gone").expect("get"), Some(iv("x")));
        // A crash before the writes are settled: the open applies the turn.
        drop((committer, db));
        let db = open();
        recover(&db).expect("recover");
        assert_eq!(db.get("k1").expect("get"), Some(iv("v1")));
        assert_eq!(db.get("gone").expect("get"), None);
        assert_eq!(db.get(TURN_KEY).expect("get"), None);
        // Settled, the writes are under their own keys; the next turn's key
        // replaces this one's.
        let mut committer = Committer::new(db.clone());
        committer
            .commit(vec![(iv("k2"), Some(iv("v2")))])
            .expect("commit");
        committer.settle().expect("settle");
        assert_eq!(db.get("k2").expect("get"), Some(iv("v2")));
        committer
            .commit(vec![(iv("k3"), Some(iv("v3")))])
            .expect("commit");
        let stored = db.get(TURN_KEY).expect("get").expect("turn key");
        assert_eq!(
            decode(&stored).expect("decode"),
            [(iv("k3"), Some(iv("v3")))]
        );
        assert_eq!(db.get("k2").expect("get"), Some(iv("v2")));
    }

    #[test]
    fn a_large_turn_retires_the_small_one_before_it() {
        let (_dir, db) = temp_db();
        let mut committer = Committer::new(db.clone());
        committer
            .commit(vec![(iv("k"), Some(iv("small")))])
            .expect("small");
        committer.settle().expect("settle");
        assert_eq!(db.get("k").expect("get"), Some(iv("small")));
        assert!(db.get(TURN_KEY).expect("get").is_some());
        let big = IVec::from(vec![7u8; SMALL_TURN_BYTES]);
        committer
            .commit(vec![(iv("k"), Some(iv("large"))), (iv("big"), Some(big))])
            .expect("large");
        assert_eq!(db.get(TURN_KEY).expect("get"), None);
        // A reopen must not bring the small turn's value back.
        recover(&db).expect("recover");
        assert_eq!(db.get("k").expect("get"), Some(iv("large")));
    }

    #[test]
    fn a_corrupt_turn_stops_the_open() {
        let (_dir, db) = temp_db();
        db.insert(TURN_KEY, &[TURN_V1, 0, 0, 0, 1, 0][..])
            .expect("insert");
        assert!(matches!(recover(&db), Err(StoreError::Corrupt { .. })));
    }
}

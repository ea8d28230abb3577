//! The ready queue's entries in sled, packed per writer turn.
//!
//! The store stages one `q` key per queued job (its priority, sequence and id),
//! and reads them only from memory ([`ReadyQueue`](super::ready::ReadyQueue));
//! sled's copy is read back only when the store opens. A drained job cost two
//! sled writes, its record's and its queue entry's removal, at ~7 µs each on
//! the store writer, which bounded the drain; a submitted job two, its record
//! and its queue entry. So the writer packs a turn's new queue entries into
//! blocks ([`QueueBlocks::pack`]): one `Q` key per priority (and per
//! [`MAX_ENTRIES`]) holding the entries, and retires entries from a block by
//! rewriting it once per turn, removing it when it is empty.
//!
//! A block's key is the priority and the sequence of its first entry, and a
//! block holds only entries above every entry packed before it (a queued job
//! takes its sequence and is staged under the store's write lock, so a turn's
//! new entries are all above the previous turn's; one that is not is written as
//! a single `q` key). So the blocks of one priority hold disjoint, ordered runs
//! of sequences: the block that may hold an entry is the last one of its
//! priority starting at or before its sequence, found with one sled look-up,
//! and blocks in key order yield entries in key order (the queue loader relies
//! on that). Single `q` keys from earlier releases are still read and removed.
//!
//! The writer reads a block back from sled when it retires its entries: every
//! earlier turn is then in sled under its own keys (`Committer::commit` settles
//! the last small turn before it packs the next).

use ::sled::IVec;

use super::commit::Writes;
use super::ready::QueueKey;
use crate::store::keys;

/// Entries a block holds at most: a rewrite copies up to 12 KiB.
const MAX_ENTRIES: usize = 512;

/// The first byte of a block: then, per entry, its sequence (8 bytes,
/// big-endian) and job id (16), in ascending order.
const BLOCK_V1: u8 = 1;

/// A block's entry: sequence and job id, as in the queue key.
type Entry = [u8; 24];

/// A block's key: `Q`, the inverted priority, the first entry's sequence.
type BlockKey = [u8; 13];

/// The block key that `key`'s block would have if `key` were its first entry.
fn block_key_of(key: &QueueKey) -> BlockKey {
    let mut k = [0u8; 13];
    k[0] = keys::QUEUE_BLOCK;
    k[1..].copy_from_slice(&key[1..13]);
    k
}

fn entry_of(key: &QueueKey) -> Entry {
    key[5..]
        .try_into()
        .expect("a queue key ends with sequence and id")
}

fn seq_of(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[5..13].try_into().expect("a sequence"))
}

/// The queue key of `entry` in the block keyed `block`.
fn queue_key(block: &[u8], entry: &[u8]) -> QueueKey {
    let mut k = [0u8; keys::QUEUE_KEY_LEN];
    k[0] = keys::QUEUE;
    k[1..5].copy_from_slice(&block[1..5]);
    k[5..].copy_from_slice(entry);
    k
}

fn encode(entries: &[Entry]) -> IVec {
    let mut out = Vec::with_capacity(1 + entries.len() * 24);
    out.push(BLOCK_V1);
    for e in entries {
        out.extend_from_slice(e);
    }
    IVec::from(out)
}

fn decode(value: &[u8]) -> Option<Vec<Entry>> {
    let body = value.strip_prefix(&[BLOCK_V1])?;
    let (chunks, rest) = body.as_chunks::<24>();
    rest.is_empty().then(|| chunks.to_vec())
}

/// The queue keys held by block `key` with value `value`, in key order; `None`
/// if it is not a block of this layout.
pub(super) fn entries(key: &[u8], value: &[u8]) -> Option<Vec<QueueKey>> {
    if key.len() != 13 || key[0] != keys::QUEUE_BLOCK {
        return None;
    }
    Some(decode(value)?.iter().map(|e| queue_key(key, e)).collect())
}

/// The writer's packing of queue entries; owned by the writer thread.
#[derive(Debug, Default)]
pub(super) struct QueueBlocks {
    /// The highest sequence packed into a block by this process: later blocks
    /// hold only entries above it.
    packed_upto: u64,
}

/// A block being retired from within one turn.
struct Open {
    key: BlockKey,
    entries: Vec<Entry>,
    /// The sequence of its last entry when read: the next block of its
    /// priority starts above it.
    last_seq: u64,
    /// Positions in `entries` of the entries retired, increasing (the turn's
    /// removals come in key order). Dropped all at once in [`Open::write`]:
    /// removing each from the vector as it was found shifted the rest of the
    /// block every time, and a drain's turn retires hundreds of entries from
    /// the front of a block of up to a thousand.
    retired: Vec<usize>,
}

impl Open {
    /// Retire the entry `entry`; whether the block held it.
    fn retire(&mut self, entry: &Entry) -> bool {
        let Ok(at) = self.entries.binary_search(entry) else {
            return false;
        };
        // (A turn holds each key once; a repeat is still retired once.)
        if self.retired.last() != Some(&at) {
            self.retired.push(at);
        }
        true
    }

    /// The write that leaves it without its retired entries, if any.
    fn write(mut self) -> Option<(IVec, Option<IVec>)> {
        if self.retired.is_empty() {
            return None;
        }
        let key = IVec::from(&self.key[..]);
        if self.retired.len() == self.entries.len() {
            return Some((key, None));
        }
        let mut retired = self.retired.iter().copied().peekable();
        let mut at = 0;
        self.entries.retain(|_| {
            let gone = retired.next_if_eq(&at).is_some();
            at += 1;
            !gone
        });
        Some((key, Some(encode(&self.entries))))
    }

    /// Whether an entry with `key` would be in this block.
    fn covers(&self, key: &QueueKey) -> bool {
        let seq = seq_of(key);
        self.key[1..5] == key[1..5] && seq_of(&self.key) <= seq && seq <= self.last_seq
    }
}

impl QueueBlocks {
    /// Replace the `q` writes of a turn with block writes: new entries packed
    /// into new blocks, removed ones retired from theirs. Reads the blocks it
    /// retires from in `db`.
    pub(super) fn pack(
        &mut self,
        db: &::sled::Db,
        writes: &mut Writes,
    ) -> Result<(), ::sled::Error> {
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let floor = self.packed_upto;
        writes.retain(|(key, value)| {
            let Ok(key) = QueueKey::try_from(key.as_ref()) else {
                return true;
            };
            if key[0] != keys::QUEUE {
                return true;
            }
            match value {
                // Not above the blocks already packed: kept as a single key.
                Some(_) if seq_of(&key) <= floor => true,
                Some(_) => {
                    added.push(key);
                    false
                }
                None => {
                    removed.push(key);
                    false
                }
            }
        });
        self.retire(db, removed, writes)?;
        self.add(added, writes);
        Ok(())
    }

    /// New blocks for `added`, by priority, [`MAX_ENTRIES`] at most each.
    fn add(&mut self, mut added: Vec<QueueKey>, writes: &mut Writes) {
        added.sort_unstable();
        for run in added.chunk_by(|a, b| a[1..5] == b[1..5]) {
            for chunk in run.chunks(MAX_ENTRIES) {
                let entries: Vec<Entry> = chunk.iter().map(entry_of).collect();
                writes.push((
                    IVec::from(&block_key_of(&chunk[0])[..]),
                    Some(encode(&entries)),
                ));
            }
        }
        if let Some(top) = added.iter().map(|k| seq_of(k)).max() {
            self.packed_upto = self.packed_upto.max(top);
        }
    }

    /// Take `removed` out of their blocks (each block rewritten once); an entry
    /// in no block is removed as a single key.
    fn retire(
        &self,
        db: &::sled::Db,
        mut removed: Vec<QueueKey>,
        writes: &mut Writes,
    ) -> Result<(), ::sled::Error> {
        removed.sort_unstable();
        let mut open: Option<Open> = None;
        for key in removed {
            if !open.as_ref().is_some_and(|o| o.covers(&key)) {
                writes.extend(open.take().and_then(Open::write));
                open = block_holding(db, &key)?;
            }
            let entry = entry_of(&key);
            if !open.as_mut().is_some_and(|o| o.retire(&entry)) {
                writes.push((IVec::from(&key[..]), None));
            }
        }
        writes.extend(open.and_then(Open::write));
        Ok(())
    }
}

/// The block that may hold `key`: the last one of its priority starting at or
/// before its sequence.
fn block_holding(db: &::sled::Db, key: &QueueKey) -> Result<Option<Open>, ::sled::Error> {
    let hi = block_key_of(key);
    let mut lo = hi;
    lo[5..].fill(0);
    let Some((block, value)) = db.range(lo..=hi).next_back().transpose()? else {
        return Ok(None);
    };
    let Some(entries) = decode(&value) else {
        tracing::error!(key = ?block, "a queue block is corrupt: its entries are skipped");
        return Ok(None);
    };
    let Ok(key) = BlockKey::try_from(block.as_ref()) else {
        return Ok(None);
    };
    let last_seq = entries.last().map_or(0, |e| {
        u64::from_be_bytes(e[..8].try_into().expect("a sequence"))
    });
    Ok(Some(Open {
        key,
        entries,
        last_seq,
        retired: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn key(priority: i32, seq: u64) -> QueueKey {
        keys::queue(priority, seq, Uuid::from_u128(u128::from(seq)))
    }

    /// Pack `added` and `removed` as one turn and apply it to `db`, as the
    /// committer does; returns the turn's writes.
    fn turn(
        blocks: &mut QueueBlocks,
        db: &::sled::Db,
        added: &[QueueKey],
        removed: &[QueueKey],
    ) -> Writes {
        let mut writes: Writes = added
            .iter()
            .map(|k| (IVec::from(&k[..]), Some(IVec::default())))
            .chain(removed.iter().map(|k| (IVec::from(&k[..]), None)))
            .collect();
        writes.push((IVec::from("j-other"), Some(IVec::from("record"))));
        blocks.pack(db, &mut writes).expect("pack");
        for (k, v) in &writes {
            match v {
                Some(v) => db.insert(k, v.clone()).expect("insert"),
                None => db.remove(k).expect("remove"),
            };
        }
        writes
    }

    /// Every queue entry in `db`, single or packed, in key order.
    fn queued(db: &::sled::Db) -> Vec<QueueKey> {
        let mut out: Vec<QueueKey> = db
            .scan_prefix([keys::QUEUE])
            .map(|e| QueueKey::try_from(e.expect("entry").0.as_ref()).expect("a queue key"))
            .collect();
        for e in db.scan_prefix([keys::QUEUE_BLOCK]) {
            let (k, v) = e.expect("entry");
            out.extend(entries(&k, &v).expect("a block"));
        }
        out.sort_unstable();
        out
    }

    fn count(db: &::sled::Db, prefix: u8) -> usize {
        db.scan_prefix([prefix]).count()
    }

    #[test]
    fn a_turns_new_entries_are_packed_by_priority_and_size() {
        let dir = tempfile::tempdir().expect("dir");
        let db = ::sled::open(dir.path()).expect("sled");
        let mut blocks = QueueBlocks::default();
        let n = MAX_ENTRIES as u64 + 10;
        let mut added: Vec<QueueKey> = (1..=n).map(|s| key(0, s)).collect();
        added.push(key(5, n + 1));
        added.reverse();
        let writes = turn(&mut blocks, &db, &added, &[]);
        // Three blocks (512 + 10 at priority 0, 1 at priority 5) and the record.
        assert_eq!(writes.len(), 4, "{writes:?}");
        assert_eq!(count(&db, keys::QUEUE), 0, "no single keys");
        assert_eq!(count(&db, keys::QUEUE_BLOCK), 3);
        added.sort_unstable();
        assert_eq!(queued(&db), added);
        // Blocks in key order yield the entries in key order.
        let in_order: Vec<QueueKey> = db
            .scan_prefix([keys::QUEUE_BLOCK])
            .flat_map(|e| {
                let (k, v) = e.expect("entry");
                entries(&k, &v).expect("a block")
            })
            .collect();
        assert_eq!(in_order, added);
    }

    #[test]
    fn removed_entries_are_retired_from_their_blocks() {
        let dir = tempfile::tempdir().expect("dir");
        let db = ::sled::open(dir.path()).expect("sled");
        // An entry from an earlier release, under its own key.
        db.insert(&key(0, 1)[..], &[][..]).expect("insert");
        let mut blocks = QueueBlocks::default();
        let first: Vec<QueueKey> = (10..20).map(|s| key(0, s)).collect();
        turn(&mut blocks, &db, &first, &[]);
        let second: Vec<QueueKey> = (20..30).map(|s| key(0, s)).collect();
        turn(&mut blocks, &db, &second, &[]);
        assert_eq!(count(&db, keys::QUEUE_BLOCK), 2);

        // Two from the first block, three from the second, and the single one:
        // one rewrite per block, the single key removed.
        let removed = [
            key(0, 11),
            key(0, 12),
            key(0, 20),
            key(0, 25),
            key(0, 29),
            key(0, 1),
        ];
        let writes = turn(&mut blocks, &db, &[], &removed);
        assert_eq!(
            writes.len(),
            4,
            "two blocks, the single key, the record: {writes:?}"
        );
        let mut left: Vec<QueueKey> = first.iter().chain(&second).copied().collect();
        left.retain(|k| !removed.contains(k));
        assert_eq!(queued(&db), left);

        // The first block emptied: its key goes. A key in no block (removed
        // before) is removed as a single key, harmlessly.
        let rest: Vec<QueueKey> = first
            .iter()
            .filter(|k| !removed.contains(k))
            .copied()
            .collect();
        let writes = turn(
            &mut blocks,
            &db,
            &[],
            &[rest.clone(), vec![key(0, 11)]].concat(),
        );
        assert!(writes.contains(&(IVec::from(&block_key_of(&first[0])[..]), None)));
        assert!(writes.contains(&(IVec::from(&key(0, 11)[..]), None)));
        assert_eq!(count(&db, keys::QUEUE_BLOCK), 1);
        left.retain(|k| !rest.contains(k));
        assert_eq!(queued(&db), left);
    }

    /// A drain's turn retires many entries of one block at once: exactly
    /// those leave it, whatever their pattern.
    #[test]
    fn many_entries_retired_from_one_block_leave_exactly_the_others() {
        let dir = tempfile::tempdir().expect("dir");
        let db = ::sled::open(dir.path()).expect("sled");
        let mut blocks = QueueBlocks::default();
        let all: Vec<QueueKey> = (1..=MAX_ENTRIES as u64).map(|s| key(0, s)).collect();
        turn(&mut blocks, &db, &all, &[]);
        assert_eq!(count(&db, keys::QUEUE_BLOCK), 1);
        // The first 300 but every third, and the last one.
        let mut removed: Vec<QueueKey> = all[..300]
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, k)| *k)
            .collect();
        removed.push(all[all.len() - 1]);
        let writes = turn(&mut blocks, &db, &[], &removed);
        assert_eq!(
            writes.len(),
            2,
            "one block rewritten, the record: {writes:?}"
        );
        let left: Vec<QueueKey> = all
            .iter()
            .filter(|k| !removed.contains(k))
            .copied()
            .collect();
        assert_eq!(queued(&db), left);
    }

    #[test]
    fn an_entry_below_the_packed_ones_stays_a_single_key() {
        let dir = tempfile::tempdir().expect("dir");
        let db = ::sled::open(dir.path()).expect("sled");
        let mut blocks = QueueBlocks::default();
        turn(&mut blocks, &db, &[key(0, 10), key(0, 20)], &[]);
        // Sequence 15 would fall inside the block of 10..=20: packing it would
        // break the blocks' disjoint runs.
        turn(&mut blocks, &db, &[key(0, 15), key(0, 30)], &[]);
        assert_eq!(count(&db, keys::QUEUE), 1);
        assert_eq!(count(&db, keys::QUEUE_BLOCK), 2);
        assert_eq!(
            queued(&db),
            [key(0, 10), key(0, 15), key(0, 20), key(0, 30)]
        );
        turn(&mut blocks, &db, &[], &[key(0, 15), key(0, 20)]);
        assert_eq!(queued(&db), [key(0, 10), key(0, 30)]);
        assert_eq!(count(&db, keys::QUEUE), 0);
    }

    #[test]
    fn a_new_process_packs_above_the_blocks_of_the_last() {
        let dir = tempfile::tempdir().expect("dir");
        let db = ::sled::open(dir.path()).expect("sled");
        turn(
            &mut QueueBlocks::default(),
            &db,
            &[key(0, 10), key(0, 20)],
            &[],
        );
        // A reopened store hands out sequences above every earlier one.
        let mut blocks = QueueBlocks::default();
        turn(&mut blocks, &db, &[key(0, 40)], &[]);
        turn(&mut blocks, &db, &[], &[key(0, 20), key(0, 40)]);
        assert_eq!(queued(&db), [key(0, 10)]);
        assert_eq!(count(&db, keys::QUEUE_BLOCK), 1);
    }
}

//! The ready queue's index (`q` keys) in memory: claims take the first key
//! without reading sled, and every staged write keeps it in step (`apply`).
//! With it, the latest staged record of the jobs queued by this process (up to
//! [`RECORDS_BUDGET`] bytes): a claim decodes it instead of reading sled, whose
//! reads wait while the store writer applies a batch (sled holds its global
//! lock for the whole batch), as did the claim's locks and every store writer
//! queued behind them.
//!
//! At open, the entries in sled (packed in `Q` blocks, see `queue_blocks.rs`,
//! or single `q` keys from earlier releases) are loaded in key order
//! (priority, then sequence), both places side by side: the first [`CHUNK`] of
//! each before the store is returned, the rest on a thread, so a node with a
//! million queued jobs is ready in the time sled takes to open, not that plus
//! a full scan. While loading, a claim looks only at keys up to the last one
//! loaded from a place that has more: past it, older jobs may still be
//! missing, and jobs of one priority must run in order.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use ::sled::IVec;

use super::keys;

pub(super) type QueueKey = [u8; keys::QUEUE_KEY_LEN];

/// A queue key as the map holds it: its bytes as two big-endian numbers (the
/// first 16 bytes, then the other 13 zero-padded), so it orders, and equals,
/// as its bytes do. Comparing two 29-byte arrays is a call to `memcmp`; a
/// search of a queue of thousands of keys makes ~25 comparisons, and a
/// drained job costs three searches (its claim, the removal of its entry, the
/// entry's record kept at submit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Slot(u128, u128);

impl Slot {
    fn of(key: &QueueKey) -> Self {
        let (head, tail) = key.split_at(16);
        let mut low = [0u8; 16];
        low[..tail.len()].copy_from_slice(tail);
        let head: [u8; 16] = head.try_into().expect("a queue key is 29 bytes");
        Self(u128::from_be_bytes(head), u128::from_be_bytes(low))
    }

    fn key(self) -> QueueKey {
        let mut key = [0u8; keys::QUEUE_KEY_LEN];
        key[..16].copy_from_slice(&self.0.to_be_bytes());
        key[16..].copy_from_slice(&self.1.to_be_bytes()[..keys::QUEUE_KEY_LEN - 16]);
        key
    }
}

/// Keys loaded per lock of the queue.
const CHUNK: usize = 8192;

/// Bytes of queued jobs' records kept for claims (a noop job's is ~200).
const RECORDS_BUDGET: usize = 16 << 20;

#[derive(Debug)]
pub(super) struct ReadyQueue {
    /// Every queued key, with the job's latest staged record if it is kept
    /// (beside its key: a claim finds both in the same node of the map; they
    /// were in a hash map by id, whose look-ups missed the cache in a long
    /// queue, three per drained job). Jobs queued before the store opened, or
    /// past the budget, have no record here: a claim reads the store.
    entries: BTreeMap<Slot, Option<IVec>>,
    /// While loading: every key in sled up to this one is in `entries`. `None`
    /// once all are. Held as the map's own key type: every claim candidate
    /// is compared with it.
    loaded_upto: Option<Slot>,
    /// Bytes of the records kept in `entries`.
    record_bytes: usize,
}

impl ReadyQueue {
    pub(super) fn insert(&mut self, key: QueueKey) {
        self.entries.entry(Slot::of(&key)).or_insert(None);
    }

    pub(super) fn remove(&mut self, key: &QueueKey) {
        if let Some(Some(record)) = self.entries.remove(&Slot::of(key)) {
            self.record_bytes -= record.len();
        }
    }

    /// Keep `record` as the latest record of the job queued under `key`, if
    /// it is queued and the budget allows. Called for every record the store
    /// stages for a queued job: a kept record is never older than the store's.
    pub(super) fn keep(&mut self, key: &QueueKey, record: &IVec) {
        let Some(slot) = self.entries.get_mut(&Slot::of(key)) else {
            return;
        };
        if let Some(old) = slot.take() {
            self.record_bytes -= old.len();
        }
        if self.record_bytes + record.len() <= RECORDS_BUDGET {
            self.record_bytes += record.len();
            *slot = Some(record.clone());
        }
    }

    /// The first key a claim may take after `after` (from the start if
    /// `None`), in claim order, with the job's kept record if there is one.
    pub(super) fn next_claimable(
        &self,
        after: Option<&QueueKey>,
    ) -> Option<(QueueKey, Option<IVec>)> {
        let from = after.map_or(Bound::Unbounded, |k| Bound::Excluded(Slot::of(k)));
        // Only the first key is wanted: the loaded bound is checked on it
        // rather than searched for in the map.
        let (slot, record) = self.entries.range((from, Bound::Unbounded)).next()?;
        if self.loaded_upto.is_some_and(|upto| *slot > upto) {
            return None;
        }
        Some((slot.key(), record.clone()))
    }

    /// The keys a claim may take, in claim order.
    #[cfg(test)]
    fn claimable(&self) -> impl Iterator<Item = QueueKey> {
        let upto = self.loaded_upto;
        self.entries
            .keys()
            .take_while(move |k| upto.is_none_or(|upto| **k <= upto))
            .map(|k| k.key())
    }

    /// The kept record of the job queued under `key`.
    #[cfg(test)]
    fn record(&self, key: &QueueKey) -> Option<&IVec> {
        self.entries.get(&Slot::of(key))?.as_ref()
    }

    /// Whether every key in sled has been loaded.
    pub(super) fn is_loaded(&self) -> bool {
        self.loaded_upto.is_none()
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

pub(super) type SharedQueue = Arc<Mutex<ReadyQueue>>;

pub(super) fn lock(queue: &Mutex<ReadyQueue>) -> MutexGuard<'_, ReadyQueue> {
    queue.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where the loading of the queue stands in each of the two places sled keeps
/// entries: single `q` keys and packed `Q` blocks (see `queue_blocks.rs`).
/// `None`: that place is loaded whole.
#[derive(Debug, Clone)]
struct Cursor {
    singles: Option<Bound<IVec>>,
    blocks: Option<Bound<IVec>>,
}

impl Cursor {
    fn start() -> Self {
        Self {
            singles: Some(Bound::Included(IVec::from(&[keys::QUEUE][..]))),
            blocks: Some(Bound::Included(IVec::from(&[keys::QUEUE_BLOCK][..]))),
        }
    }
}

/// A queue with nothing loaded yet.
fn unloaded() -> SharedQueue {
    Arc::new(Mutex::new(ReadyQueue {
        entries: BTreeMap::new(),
        // Below every `q` key: nothing is claimable until the first chunk.
        loaded_upto: Some(Slot::of(&[0; keys::QUEUE_KEY_LEN])),
        record_bytes: 0,
    }))
}

/// The queue of `db`: its first chunk loaded now, the rest by a thread that
/// stops early if the store closes (it holds the queue only while it loads a
/// chunk).
pub(super) fn open(db: &::sled::Db) -> Result<SharedQueue, ::sled::Error> {
    let queue = unloaded();
    let Some(next) = load_chunk(db, &queue, Cursor::start())? else {
        return Ok(queue);
    };
    let (db, weak) = (db.clone(), Arc::downgrade(&queue));
    std::thread::Builder::new()
        .name("wasmjobs-queue-loader".into())
        .spawn(move || keep_loading(db, weak, next))
        .map_err(::sled::Error::Io)?;
    Ok(queue)
}

fn keep_loading(db: ::sled::Db, queue: Weak<Mutex<ReadyQueue>>, mut next: Cursor) {
    let mut failures = 0u32;
    loop {
        let Some(queue) = queue.upgrade() else {
            return; // the store closed
        };
        match load_chunk(&db, &queue, next.clone()) {
            Ok(Some(cursor)) => {
                next = cursor;
                failures = 0;
            }
            Ok(None) => return,
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, failures, "cannot load the ready queue; retrying");
                drop(queue);
                let backoff = Duration::from_millis(100 * u64::from(failures));
                std::thread::sleep(backoff.min(Duration::from_secs(1)));
            }
        }
    }
}

/// Up to [`CHUNK`] keys of one place from `start` (at least one whole block),
/// the sled key to go on after, and whether there is more; appended to `out`.
fn load_place(
    db: &::sled::Db,
    prefix: u8,
    start: Bound<IVec>,
    out: &mut Vec<QueueKey>,
) -> Result<(Option<IVec>, bool), ::sled::Error> {
    let end = Bound::Excluded(IVec::from(&[prefix + 1][..]));
    let (mut taken, mut last) = (0, None);
    for entry in db.range::<IVec, _>((start, end)) {
        let (key, value) = entry?;
        if taken >= CHUNK {
            return Ok((last, true));
        }
        if prefix == keys::QUEUE {
            out.extend(QueueKey::try_from(key.as_ref()).ok());
            taken += 1;
        } else if let Some(entries) = super::queue_blocks::entries(&key, &value) {
            taken += entries.len().max(1);
            out.extend(entries);
        } else {
            tracing::error!(key = ?key, "a queue block is corrupt: its entries are skipped");
        }
        last = Some(key);
    }
    Ok((last, false))
}

/// Load the next chunk of each place from `cursor` into `queue`; where to go
/// on, or `None` when both places are loaded whole (the queue is then fully
/// loaded).
fn load_chunk(
    db: &::sled::Db,
    queue: &Mutex<ReadyQueue>,
    cursor: Cursor,
) -> Result<Option<Cursor>, ::sled::Error> {
    let mut next = Cursor {
        singles: None,
        blocks: None,
    };
    // Claims may look up to the last key loaded from a place that has more:
    // past it, that place may hold older jobs not loaded yet.
    let mut upto: Option<QueueKey> = None;
    let mut loaded = Vec::new();
    for (prefix, start, slot) in [
        (keys::QUEUE, cursor.singles, &mut next.singles),
        (keys::QUEUE_BLOCK, cursor.blocks, &mut next.blocks),
    ] {
        let Some(start) = start else { continue };
        let from = loaded.len();
        let (last, more) = load_place(db, prefix, start, &mut loaded)?;
        if more {
            *slot = last.map(Bound::Excluded);
            // (Nothing readable loaded: nothing is claimable yet.)
            let high = loaded[from..]
                .iter()
                .max()
                .copied()
                .unwrap_or([0; keys::QUEUE_KEY_LEN]);
            upto = Some(upto.map_or(high, |u| u.min(high)));
        }
    }
    let mut queue = lock(queue);
    // A key staged since the open may be loaded from sled too: its kept
    // record stays.
    for key in loaded {
        queue.insert(key);
    }
    let done = next.singles.is_none() && next.blocks.is_none();
    queue.loaded_upto = if done {
        None
    } else {
        upto.as_ref().map(Slot::of)
    };
    Ok((!done).then_some(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seq: u64) -> QueueKey {
        keys::queue(0, seq, uuid::Uuid::from_u128(u128::from(seq)))
    }

    #[test]
    fn slots_order_and_match_as_their_keys_bytes_do() {
        let mut samples = Vec::new();
        for priority in [i32::MIN, -5, 0, 7, i32::MAX] {
            for seq in [0, 1, 255, 256, u64::MAX] {
                for id in [0, 1, 0xff, 1 << 100, u128::MAX] {
                    samples.push(keys::queue(priority, seq, uuid::Uuid::from_u128(id)));
                }
            }
        }
        for a in &samples {
            assert_eq!(Slot::of(a).key(), *a, "round trip of {a:?}");
            for b in &samples {
                assert_eq!(Slot::of(a).cmp(&Slot::of(b)), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn a_claim_never_looks_past_the_keys_loaded_so_far() {
        let mut q = ReadyQueue {
            entries: BTreeMap::new(),
            loaded_upto: Some(Slot::of(&key(10))),
            record_bytes: 0,
        };
        q.insert(key(5));
        // Staged live while loading: an older job (seq 20) may still be in sled only.
        q.insert(key(30));
        assert_eq!(q.claimable().collect::<Vec<_>>(), [key(5)]);
        assert_eq!(q.next_claimable(None), Some((key(5), None)));
        assert_eq!(
            q.next_claimable(Some(&key(5))),
            None,
            "a claim passed the bound"
        );
        q.loaded_upto = None;
        assert_eq!(q.claimable().count(), 2);
        assert!(q.is_loaded());
    }

    #[test]
    fn a_record_is_kept_beside_its_queued_key_within_the_budget() {
        let mut q = ReadyQueue {
            entries: BTreeMap::new(),
            loaded_upto: None,
            record_bytes: 0,
        };
        let (a, b) = (key(1), key(2));
        q.keep(&a, &IVec::from(&b"lost"[..]));
        assert_eq!(q.record_bytes, 0, "not queued: not kept");
        q.insert(a);
        q.keep(&a, &IVec::from(&b"first"[..]));
        q.keep(&a, &IVec::from(&b"second"[..]));
        assert_eq!(q.record(&a).map(|r| &r[..]), Some(&b"second"[..]));
        assert_eq!(
            q.record_bytes, 6,
            "the replaced record's bytes are given back"
        );
        // Loaded from sled after it was staged here: the record stays.
        q.insert(a);
        assert_eq!(
            q.next_claimable(None),
            Some((a, Some(IVec::from(&b"second"[..]))))
        );
        q.insert(b);
        q.keep(&b, &IVec::from(vec![0; RECORDS_BUDGET]));
        assert_eq!(q.record(&b), None, "past the budget: read from the store");
        assert_eq!(q.next_claimable(Some(&a)), Some((b, None)));
        q.remove(&a);
        assert_eq!(q.record_bytes, 0);
        q.keep(&b, &IVec::from(vec![0; RECORDS_BUDGET]));
        assert_eq!(q.record_bytes, RECORDS_BUDGET, "room again");
    }

    #[test]
    fn single_keys_and_blocks_are_loaded_together_in_key_order() {
        let dir = tempfile::tempdir().expect("dir");
        let db = ::sled::open(dir.path()).expect("sled");
        // More than a chunk of each: every third sequence under a single key
        // (an earlier release's), the others packed in blocks by turns of
        // 1000; one block and one single key of other priorities.
        let n = 3 * CHUNK as u64 + 5;
        let mut expected = Vec::new();
        for seq in (0..n).step_by(3) {
            db.insert(&key(seq)[..], &[][..]).expect("insert");
            expected.push(key(seq));
        }
        let mut blocks = super::super::queue_blocks::QueueBlocks::default();
        let packed: Vec<QueueKey> = (0..n).filter(|s| s % 3 != 0).map(key).collect();
        let urgent = keys::queue(5, n + 1, uuid::Uuid::from_u128(1));
        let late = keys::queue(-1, n + 2, uuid::Uuid::from_u128(2));
        db.insert(&late[..], &[][..]).expect("insert");
        let turns = packed.chunks(1000).count();
        for (i, turn) in packed.chunks(1000).enumerate() {
            // (Its sequence is the highest: in the last turn, as a store would.)
            let mut writes: super::super::commit::Writes = turn
                .iter()
                .chain((i + 1 == turns).then_some(&urgent))
                .map(|k| (IVec::from(&k[..]), Some(IVec::default())))
                .collect();
            blocks.pack(&db, &mut writes).expect("pack");
            assert!(writes.iter().all(|(k, _)| k[0] == keys::QUEUE_BLOCK));
            for (k, v) in writes {
                db.insert(k, v.expect("an insert")).expect("insert");
            }
        }
        expected.extend(packed);
        expected.extend([urgent, late]);
        expected.sort_unstable();

        // Chunk by chunk, whatever is claimable is a prefix of the whole
        // queue: no claim passes over an older entry not loaded yet.
        let queue = unloaded();
        let mut cursor = Some(Cursor::start());
        let mut claimable = 0;
        while let Some(at) = cursor {
            cursor = load_chunk(&db, &queue, at).expect("load");
            let now: Vec<QueueKey> = lock(&queue).claimable().collect();
            assert_eq!(now, expected[..now.len()]);
            assert!(now.len() > claimable, "each chunk makes more claimable");
            claimable = now.len();
        }
        assert!(lock(&queue).is_loaded());
        assert_eq!(claimable, expected.len());
    }

    #[test]
    fn a_queue_larger_than_a_chunk_is_loaded_whole_in_key_order() {
        let dir = tempfile::tempdir().expect("dir");
        let db = ::sled::open(dir.path()).expect("sled");
        let n = 2 * CHUNK as u64 + 5;
        for seq in 0..n {
            db.insert(&key(seq)[..], &[][..]).expect("insert");
        }
        db.insert(b"r-not-a-queue-key", &[][..]).expect("insert");
        let queue = open(&db).expect("open");
        {
            let q = lock(&queue);
            // The first chunk is there before `open` returns, and claimable.
            assert!(q.len() >= CHUNK);
            assert_eq!(q.claimable().next(), Some(key(0)));
        }
        let started = std::time::Instant::now();
        while !lock(&queue).is_loaded() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "loading stalled"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let q = lock(&queue);
        assert_eq!(q.len() as u64, n);
        let all: Vec<QueueKey> = q.claimable().collect();
        assert_eq!(all, (0..n).map(key).collect::<Vec<_>>());
    }
}

//! The ready queue's index (`q` keys) in memory: claims take the first key
//! without reading sled, and every staged write keeps it in step (`apply`).
//! With it, the latest staged record of the jobs queued by this process (up to
//! [`RECORDS_BUDGET`] bytes): a claim decodes it instead of reading sled, whose
//! reads wait while the store writer applies a batch (sled holds its global
//! lock for the whole batch), as did the claim's locks and every store writer
//! queued behind them.
//!
//! At open, the keys in sled are loaded in key order (priority, then sequence):
//! the first [`CHUNK`] before the store is returned, the rest on a thread, so a
//! node with a million queued jobs is ready in the time sled takes to open, not
//! that plus a full scan (~1 s per million keys here). While loading, a claim
//! looks only at keys up to the last one loaded: past it, older jobs may still
//! be missing, and jobs of one priority must run in order.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use ::sled::IVec;
use uuid::Uuid;

use super::keys;

pub(super) type QueueKey = [u8; keys::QUEUE_KEY_LEN];

/// Keys loaded per lock of the queue.
const CHUNK: usize = 8192;

/// Bytes of queued jobs' records kept for claims (a noop job's is ~200).
const RECORDS_BUDGET: usize = 16 << 20;

#[derive(Debug)]
pub(super) struct ReadyQueue {
    keys: BTreeSet<QueueKey>,
    /// While loading: every key in sled up to this one is in `keys`. `None`
    /// once all are.
    loaded_upto: Option<QueueKey>,
    /// Queued jobs' latest staged records, by id; jobs queued before the store
    /// opened, or past the budget, are read from the store.
    records: HashMap<Uuid, IVec>,
    /// Bytes in `records`.
    record_bytes: usize,
}

impl ReadyQueue {
    pub(super) fn insert(&mut self, key: QueueKey) {
        self.keys.insert(key);
    }

    pub(super) fn remove(&mut self, key: &QueueKey) {
        self.keys.remove(key);
        if let Some(id) = keys::id_suffix(key) {
            self.forget(id);
        }
    }

    /// Keep `record` as the latest record of queued job `id`, if the budget
    /// allows. Called for every record the store stages for a job it queues or
    /// has queued: a kept record is never older than the store's.
    pub(super) fn keep(&mut self, id: Uuid, record: &IVec) {
        self.forget(id);
        if self.record_bytes + record.len() <= RECORDS_BUDGET {
            self.record_bytes += record.len();
            self.records.insert(id, record.clone());
        }
    }

    /// Drop the kept record of `id` (no longer queued, or removed).
    pub(super) fn forget(&mut self, id: Uuid) {
        if let Some(old) = self.records.remove(&id) {
            self.record_bytes -= old.len();
        }
    }

    /// Whether the record of `id` is kept (so a new one must replace it).
    pub(super) fn keeps(&self, id: &Uuid) -> bool {
        self.records.contains_key(id)
    }

    /// The first key a claim may take after `after` (from the start if
    /// `None`), in claim order, with the job's kept record if there is one.
    pub(super) fn next_claimable(
        &self,
        after: Option<&QueueKey>,
    ) -> Option<(QueueKey, Option<IVec>)> {
        let upto = self
            .loaded_upto
            .as_ref()
            .map_or(Bound::Unbounded, Bound::Included);
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let key = *self.keys.range::<QueueKey, _>((from, upto)).next()?;
        let record = keys::id_suffix(&key).and_then(|id| self.records.get(&id).cloned());
        Some((key, record))
    }

    /// The keys a claim may take, in claim order.
    #[cfg(test)]
    fn claimable(&self) -> impl Iterator<Item = &QueueKey> {
        let upto = self
            .loaded_upto
            .as_ref()
            .map_or(Bound::Unbounded, Bound::Included);
        self.keys.range::<QueueKey, _>((Bound::Unbounded, upto))
    }

    /// Whether every key in sled has been loaded.
    pub(super) fn is_loaded(&self) -> bool {
        self.loaded_upto.is_none()
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }
}

pub(super) type SharedQueue = Arc<Mutex<ReadyQueue>>;

pub(super) fn lock(queue: &Mutex<ReadyQueue>) -> MutexGuard<'_, ReadyQueue> {
    queue.lock().unwrap_or_else(|p| p.into_inner())
}

/// The queue of `db`: its first chunk loaded now, the rest by a thread that
/// stops early if the store closes (it holds the queue only while it loads a
/// chunk).
pub(super) fn open(db: &::sled::Db) -> Result<SharedQueue, ::sled::Error> {
    let queue = Arc::new(Mutex::new(ReadyQueue {
        keys: BTreeSet::new(),
        // Below every `q` key: nothing is claimable until the first chunk.
        loaded_upto: Some([0; keys::QUEUE_KEY_LEN]),
        records: HashMap::new(),
        record_bytes: 0,
    }));
    let start = Bound::Included(IVec::from(&[keys::QUEUE][..]));
    let Some(next) = load_chunk(db, &queue, start)? else {
        return Ok(queue);
    };
    let (db, weak) = (db.clone(), Arc::downgrade(&queue));
    std::thread::Builder::new()
        .name("wasmjobs-queue-loader".into())
        .spawn(move || keep_loading(db, weak, next))
        .map_err(::sled::Error::Io)?;
    Ok(queue)
}

fn keep_loading(db: ::sled::Db, queue: Weak<Mutex<ReadyQueue>>, mut next: QueueKey) {
    let mut failures = 0u32;
    loop {
        let Some(queue) = queue.upgrade() else {
            return; // the store closed
        };
        match load_chunk(&db, &queue, Bound::Excluded(IVec::from(&next[..]))) {
            Ok(Some(last)) => {
                next = last;
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

/// Load up to [`CHUNK`] keys from `start` into `queue`; the last one loaded, or
/// `None` when the scan reached the end (the queue is then fully loaded).
fn load_chunk(
    db: &::sled::Db,
    queue: &Mutex<ReadyQueue>,
    start: Bound<IVec>,
) -> Result<Option<QueueKey>, ::sled::Error> {
    let end = Bound::Excluded(IVec::from(&[keys::QUEUE + 1][..]));
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut more = false;
    for entry in db.range::<IVec, _>((start, end)) {
        let (key, _) = entry?;
        if let Ok(key) = QueueKey::try_from(key.as_ref()) {
            if chunk.len() == CHUNK {
                more = true;
                break;
            }
            chunk.push(key);
        }
    }
    let mut queue = lock(queue);
    queue.keys.extend(chunk.iter().copied());
    let last = chunk.last().copied();
    queue.loaded_upto = if more { last } else { None };
    Ok(if more { last } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seq: u64) -> QueueKey {
        keys::queue(0, seq, uuid::Uuid::from_u128(u128::from(seq)))
    }

    #[test]
    fn a_claim_never_looks_past_the_keys_loaded_so_far() {
        let mut q = ReadyQueue {
            keys: BTreeSet::new(),
            loaded_upto: Some(key(10)),
            records: HashMap::new(),
            record_bytes: 0,
        };
        q.insert(key(5));
        // Staged live while loading: an older job (seq 20) may still be in sled only.
        q.insert(key(30));
        assert_eq!(q.claimable().collect::<Vec<_>>(), [&key(5)]);
        q.loaded_upto = None;
        assert_eq!(q.claimable().count(), 2);
        assert!(q.is_loaded());
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
            assert_eq!(q.claimable().next(), Some(&key(0)));
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
        let all: Vec<QueueKey> = q.claimable().copied().collect();
        assert_eq!(all, (0..n).map(key).collect::<Vec<_>>());
    }
}

//! Write-behind staging with group commit in front of sled.
//!
//! sled's `apply_batch` writes out and syncs its log buffer (`sync_file_range`,
//! waiting for the device) at the start of every batch: measured here, four
//! synced writes per noop job and ~800 KB of block I/O per job, which bounded the
//! drain at ~2-4k jobs/s with the tokio threads blocked in the kernel. So writers
//! do not call sled. Each store operation stages its whole change (every key it
//! sets or removes) here, under the store's write lock, and returns; a turn
//! takes everything staged since the last one as **one** commit: it appends
//! the turn to the store's log and syncs it (atomic across a crash: a crash
//! keeps a prefix of whole turns, see `commit.rs` and `wal.rs`), answers the
//! waiters, and only then writes the turn's keys into sled. The writer thread
//! runs the turns, or a waiter that finds the log free runs its own (see
//! `writer.rs`). Under load one record and one sync cover hundreds of
//! operations; when idle a lone write costs one of each.
//!
//! Until the writer has applied an entry, reads find it here: [`Staging::get`]
//! looks here first, then in sled, and [`Staging::scan`] merges both in key order
//! (a staged entry shadows sled's; a staged removal hides it). An entry leaves
//! the overlay only after sled has it, and never while a scan runs (the scan
//! holds the read side of `gate`), so a read never misses a write that was
//! staged before it began.

use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use ::sled::IVec;
use tokio::sync::watch;

use super::commit::Committer;
pub(super) use super::scan::Scan;
use super::scan::{SledItem, prefix_bounds};

mod overlay;
mod writer;

use overlay::{Overlay, Taken};

/// How long the writer gathers writes that nobody waits for before it applies
/// them (a durability wait or [`MAX_LINGER_WRITES`] writes end it early).
const LINGER: Duration = Duration::from_millis(5);
/// Staged writes that end the writer's lingering.
const MAX_LINGER_WRITES: usize = 8192;

/// What the writer takes for one turn: the writes (listed once the staging
/// lock is let go), the generation they reach, and whether the store is
/// closing.
type Turn = (Taken, u64, bool);

#[derive(Debug, Default)]
struct State {
    /// Every staged write sled does not have yet, per turn.
    overlay: Overlay,
    /// Writes staged since the writer's last turn (ends its lingering).
    untaken: usize,
    /// Generation of the last write the writer took.
    taken: u64,
    /// Generation of the last staged operation.
    staged: u64,
    /// Highest generation a caller waits to see durable.
    flush_wanted: u64,
    /// Generation of the last turn synced to the log.
    durable: u64,
    /// A caller logged a turn itself ([`Staging::lead`]): the writer applies
    /// it to sled.
    settle_wanted: bool,
    closed: bool,
}

impl State {
    /// Whether writes wait for the writer.
    fn has_untaken(&self) -> bool {
        self.staged > self.taken
    }

    /// Take every write staged since the last turn: the latest value of each key
    /// (sled's batch would keep only the last one anyway). O(1): the caller
    /// lists them after letting go of the lock.
    fn take(&mut self) -> Turn {
        let taken = self.overlay.take(self.staged);
        self.taken = self.staged;
        self.untaken = 0;
        (taken, self.staged, self.closed)
    }
}

/// The writes of one store operation, applied together or not at all.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// Key, value (`None`: remove), and whether the key is new to the store.
    writes: Vec<(IVec, Option<IVec>, bool)>,
    /// What the batch does to running jobs' records, decoded: a running job's
    /// latest record, or `None` when the job stops running. The store's cache
    /// of running jobs takes it when the batch is staged; staging ignores it.
    pub(super) running: Vec<(uuid::Uuid, Option<crate::job::Job>)>,
    /// The records of queued (pending) jobs, under their queue keys: the
    /// ready queue keeps them for claims. Staging ignores it.
    pub(super) queued: Vec<(super::ready::QueueKey, IVec)>,
}

impl Batch {
    /// Room for `writes` writes, `running` running jobs' records and `queued`
    /// queued ones: a worker's pass stages ~7 writes, and an empty vector grows
    /// twice (a reallocation and a copy each) to hold them.
    pub(super) fn with_capacity(writes: usize, running: usize, queued: usize) -> Self {
        Self {
            writes: Vec::with_capacity(writes),
            running: Vec::with_capacity(running),
            queued: Vec::with_capacity(queued),
        }
    }

    pub(super) fn insert(&mut self, key: impl Into<IVec>, value: impl Into<IVec>) {
        self.writes.push((key.into(), Some(value.into()), false));
    }

    /// Insert a key the store does not have (an index entry that did not exist).
    pub(super) fn insert_new(&mut self, key: impl Into<IVec>, value: impl Into<IVec>) {
        self.writes.push((key.into(), Some(value.into()), true));
    }

    pub(super) fn remove(&mut self, key: impl Into<IVec>) {
        self.writes.push((key.into(), None, false));
    }

    /// Each write's key and value (`None`: removed), in the order staged.
    pub(super) fn writes(&self) -> impl Iterator<Item = (&[u8], Option<&IVec>)> {
        self.writes.iter().map(|(k, v, _)| (k.as_ref(), v.as_ref()))
    }
}

/// The staging area, its writer thread and its durability watch.
#[derive(Debug)]
pub(super) struct Staging {
    db: ::sled::Db,
    state: Mutex<State>,
    wake: Condvar,
    /// The store's log, held by whoever logs a turn: the writer thread, or a
    /// caller waiting for its own write that finds it free. Taken before
    /// `state`, and turns are taken from `state` under it, so they reach the
    /// log in the order they were taken.
    log: Mutex<writer::Log>,
    /// Scans hold it shared; the writer holds it exclusively while it removes
    /// applied entries from the overlay.
    gate: RwLock<()>,
    /// The durable generation, or the writer's fatal error.
    done: watch::Sender<Result<u64, String>>,
}

impl Staging {
    /// Start the writer thread for `db`, committing through `committer`.
    pub(super) fn start(db: ::sled::Db, committer: Committer) -> std::io::Result<Arc<Self>> {
        let staging = Self::new(db);
        staging.spawn_writer(committer)?;
        Ok(staging)
    }

    fn new(db: ::sled::Db) -> Arc<Self> {
        Arc::new(Self {
            db,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            log: Mutex::new(writer::Log::default()),
            gate: RwLock::new(()),
            done: watch::channel(Ok(0)).0,
        })
    }

    /// The database, for reads that merge it with the overlay themselves.
    pub(super) fn db(&self) -> &::sled::Db {
        &self.db
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stage one operation's writes (all or none reach sled together). Returns
    /// its generation.
    pub(super) fn stage(&self, batch: Batch) -> u64 {
        let mut state = self.lock();
        let was_empty = !state.has_untaken();
        state.staged += 1;
        let generation = state.staged;
        state.untaken += batch.writes.len();
        // One search of the overlay per key: writers queue on this lock.
        for (key, value, new) in batch.writes {
            state.overlay.stage(key, value, new);
        }
        let full = state.untaken >= MAX_LINGER_WRITES;
        drop(state);
        // The writer sleeps while nothing is staged, and lingers (without being
        // woken by every write) while it fills.
        if was_empty || full {
            self.wake.notify_one();
        }
        generation
    }

    /// The value of `key`, staged or applied.
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<IVec>, ::sled::Error> {
        if let Some(entry) = self.lock().overlay.get(key) {
            return Ok(entry.value.clone());
        }
        // Not staged, or applied and removed from the overlay after sled had it.
        self.db.get(key)
    }

    /// Entries with keys in `range`, in key order (`rev`: descending), staged
    /// writes merged over sled's. Drop a scan before starting another on the same
    /// thread: a writer waiting to prune the overlay holds back new scans.
    pub(super) fn scan(&self, lo: Bound<IVec>, hi: Bound<IVec>, rev: bool) -> Scan<'_> {
        let gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        Scan::new(self, Some(gate), lo, hi, rev)
    }

    /// Run `read` while no applied entry can leave the overlay: whatever was
    /// staged before it began is in the overlay for its whole run (and may be
    /// in sled as well). For reads that look at sled and the overlay apart
    /// (the changefeed's blocks); `read` must not start a gated scan itself.
    pub(super) fn hold<R>(&self, read: impl FnOnce(Held<'_>) -> R) -> R {
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        read(Held { staging: self })
    }

    /// Wait until sled holds every write staged so far under its own key (a
    /// turn is durable in the log first; tests reading sled directly wait for
    /// this).
    #[cfg(test)]
    pub(super) async fn settled(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            {
                let state = self.lock();
                if state.overlay.is_empty() && !state.has_untaken() {
                    return;
                }
            }
            assert!(std::time::Instant::now() < deadline, "writes never settled");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Hold the log until the guard drops: nothing staged from now on is
    /// logged, by the writer thread or by a waiter (which finds the log busy
    /// and waits for the writer).
    #[cfg(test)]
    pub(super) fn pause_flushes(&self) -> impl Sized + '_ {
        self.lock_log()
    }

    /// The first staged entry of `window` in scan order (`rev`: the last); the
    /// overlay is locked only for the look-up.
    pub(super) fn next_staged(
        &self,
        window: &(Bound<IVec>, Bound<IVec>),
        rev: bool,
    ) -> Option<(IVec, Option<IVec>)> {
        let state = self.lock();
        let bounds = (
            window.0.as_ref().map(|k| &k[..]),
            window.1.as_ref().map(|k| &k[..]),
        );
        let next = state.overlay.first_in(bounds, rev);
        next.map(|(k, e)| (k.ivec().clone(), e.value.clone()))
    }

    /// Entries whose keys start with `prefix`, in key order.
    pub(super) fn scan_prefix(&self, prefix: &[u8]) -> Scan<'_> {
        let (lo, hi) = prefix_bounds(prefix);
        self.scan(lo, hi, false)
    }

    /// Entries from `start` on, in key order.
    pub(super) fn range_from(&self, start: &[u8]) -> Scan<'_> {
        self.scan(Bound::Included(IVec::from(start)), Bound::Unbounded, false)
    }

    /// Entries whose keys start with `prefix`, descending.
    pub(super) fn scan_prefix_rev(&self, prefix: &[u8]) -> Scan<'_> {
        let (lo, hi) = prefix_bounds(prefix);
        self.scan(lo, hi, true)
    }

    /// The generation of the last turn synced to the log.
    pub(super) fn durable_generation(&self) -> u64 {
        self.lock().durable
    }

    /// Return once every operation staged before this call is durable.
    pub(super) async fn durable(&self) -> Result<(), ::sled::Error> {
        let staged = self.lock().staged;
        self.durable_through(staged).await
    }

    /// Return once the operations up to generation `ticket` (see
    /// [`Staging::stage`]) are durable (synced to the log): logged and synced
    /// on this thread when the log is free ([`Staging::lead`]), else by the
    /// writer thread (or a caller that got there first).
    pub(super) async fn durable_through(&self, ticket: u64) -> Result<(), ::sled::Error> {
        if self.lock().durable >= ticket {
            return Ok(());
        }
        if self.lead(ticket)? {
            // The waiters the turn answered were woken into this thread's
            // LIFO slot: they go first (a worker's guest starts before this
            // caller's answer is written).
            tokio::task::yield_now().await;
            return Ok(());
        }
        {
            let mut state = self.lock();
            if state.durable >= ticket {
                return Ok(());
            }
            state.flush_wanted = state.flush_wanted.max(ticket);
        }
        self.wake.notify_one();
        let mut rx = self.done.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                Ok(done) if *done >= ticket => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(::sled::Error::Io(std::io::Error::other(e.clone()))),
            }
            if rx.changed().await.is_err() {
                return Err(writer::stopped());
            }
        }
    }

    /// Apply what is staged and checkpoint, then end the writer thread (the
    /// store is being dropped; the thread's handle on sled is the last one).
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }
}

/// Reads made while [`Staging::hold`] keeps applied entries in the overlay.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held<'a> {
    staging: &'a Staging,
}

impl<'a> Held<'a> {
    /// Entries in `lo..hi` (`rev`: descending), staged merged over applied.
    pub(super) fn scan(self, lo: Bound<IVec>, hi: Bound<IVec>, rev: bool) -> Scan<'a> {
        Scan::new(self.staging, None, lo, hi, rev)
    }

    /// Entries in `lo..hi` that sled has, staged ones ignored.
    pub(super) fn applied(
        self,
        lo: Bound<IVec>,
        hi: Bound<IVec>,
    ) -> impl DoubleEndedIterator<Item = SledItem> + 'a {
        self.staging.db().range::<IVec, _>((lo, hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(s: &str) -> IVec {
        IVec::from(s.as_bytes())
    }

    fn keys(scan: Scan<'_>) -> Vec<String> {
        scan.map(|e| String::from_utf8(e.expect("entry").0.to_vec()).expect("utf8"))
            .collect()
    }

    #[tokio::test]
    async fn staged_writes_are_read_merged_and_applied() {
        let dir = tempfile::tempdir().expect("dir");
        let db = ::sled::open(dir.path()).expect("sled");
        db.insert("a1", "old").expect("insert");
        db.insert("a3", "x").expect("insert");
        db.insert("a5", "x").expect("insert");
        db.insert("b1", "x").expect("insert");
        // No writer yet: what is staged stays in the overlay while we look.
        let staging = Staging::new(db.clone());
        let mut batch = Batch::default();
        batch.insert("a1", "new");
        batch.insert("a2", "x");
        batch.remove("a3");
        batch.insert("a6", "x");
        staging.stage(batch);
        assert_eq!(staging.get(b"a1").expect("get"), Some(iv("new")));
        assert_eq!(staging.get(b"a3").expect("get"), None);
        assert_eq!(
            keys(staging.scan_prefix(b"a")),
            ["a1", "a2", "a5", "a6"],
            "forward"
        );
        let (lo, hi) = prefix_bounds(b"a");
        assert_eq!(
            keys(staging.scan(lo, hi, true)),
            ["a6", "a5", "a2", "a1"],
            "reverse"
        );
        let committer = Committer::open(db.clone(), dir.path()).expect("committer");
        staging.spawn_writer(committer).expect("writer");
        staging.durable().await.expect("durable");
        // Applied entries leave the overlay once in sled (after the flush).
        staging.settled().await;
        assert_eq!(db.get("a1").expect("get"), Some(iv("new")), "applied");
        assert_eq!(db.get("a3").expect("get"), None, "removed");
        assert_eq!(keys(staging.scan_prefix(b"a")), ["a1", "a2", "a5", "a6"]);
        staging.close();
    }

    #[test]
    fn a_new_key_removed_before_the_writer_takes_it_never_reaches_sled() {
        let dir = tempfile::tempdir().expect("dir");
        let db = ::sled::open(dir.path()).expect("sled");
        db.insert("old", "x").expect("insert");
        let staging = Staging::new(db.clone());
        let mut batch = Batch::default();
        batch.insert_new("q1", "");
        batch.insert_new("q2", "");
        batch.insert("old", "y");
        staging.stage(batch);
        let mut batch = Batch::default();
        batch.remove("q1");
        batch.remove("old");
        staging.stage(batch);
        assert_eq!(staging.get(b"q1").expect("get"), None);
        assert_eq!(staging.get(b"q2").expect("get"), Some(iv("")));
        let (taken, generation, ..) = staging.lock().take();
        let writes = taken.writes();
        assert_eq!(
            writes,
            [(iv("old"), None), (iv("q2"), Some(iv("")))],
            "no write of q1, one of each other key"
        );
        let committer = Committer::open(db.clone(), dir.path()).expect("committer");
        let mut log = writer::Log::new(committer);
        staging.apply(&mut log, writes, generation).expect("apply");
        assert_eq!(db.get("q2").expect("get"), Some(iv("")), "a kept new key");
        assert_eq!(db.get("old").expect("get"), None, "an old key's removal");
        // A turn whose writes were all dropped still empties the overlay.
        let mut batch = Batch::default();
        batch.insert_new("q3", "");
        staging.stage(batch);
        let mut batch = Batch::default();
        batch.remove("q3");
        staging.stage(batch);
        let (taken, generation, ..) = staging.lock().take();
        let writes = taken.writes();
        assert!(writes.is_empty());
        staging.apply(&mut log, writes, generation).expect("apply");
        assert!(staging.lock().overlay.is_empty());
    }

    #[test]
    fn a_new_key_the_writer_has_taken_is_removed_for_real() {
        let dir = tempfile::tempdir().expect("dir");
        let staging = Staging::new(::sled::open(dir.path()).expect("sled"));
        let mut batch = Batch::default();
        batch.insert_new("q1", "");
        staging.stage(batch);
        // The writer takes the insert (and is applying it) when the removal comes.
        let writes = staging.lock().take().0.writes();
        assert_eq!(writes, [(iv("q1"), Some(iv("")))]);
        let mut batch = Batch::default();
        batch.remove("q1");
        staging.stage(batch);
        let writes = staging.lock().take().0.writes();
        assert_eq!(writes, [(iv("q1"), None)], "sled gets the removal");
    }

    #[test]
    fn prefix_bounds_end_after_the_prefix() {
        assert_eq!(prefix_bounds(b"q").1, Bound::Excluded(iv("r")));
        assert_eq!(
            prefix_bounds(&[7, 0xff]).1,
            Bound::Excluded(IVec::from(&[8u8][..]))
        );
        assert_eq!(prefix_bounds(&[0xff]).1, Bound::Unbounded);
    }
}

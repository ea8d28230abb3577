//! Who logs the staged writes: the writer thread, and callers that lead.
//!
//! A turn is everything staged since the last one: logged and synced
//! ([`Staging::log_turn`]), its waiters answered, then applied to sled and
//! dropped from the overlay ([`Staging::settle_turn`]). The writer thread runs
//! turns for writes nobody waits for (after lingering to gather more of them)
//! and for waiters that found the log busy.
//!
//! A caller that waits for its own write and finds the log free logs the turn
//! itself ([`Staging::lead`], the leader of a group commit, as RocksDB's
//! writers do): it takes every write staged so far, its own and whatever others
//! staged before it, syncs, answers the others, and leaves the turn's sled
//! work to the writer thread. With the writer thread in the middle, a lone
//! waiter's write crossed threads twice more (woken writer, then woken waiter),
//! and a sleeping vCPU of this project's VMs takes tens of microseconds to
//! wake: more than the work of the turn.

use std::sync::{Arc, MutexGuard, PoisonError, TryLockError};
use std::time::Instant;

use super::super::commit::{Committer, Writes};
use super::{LINGER, MAX_LINGER_WRITES, Staging};

/// The most staged writes a waiter logs itself: a few hundred single
/// submits' worth (one is ~6 writes), well short of a bulk request's.
const LEAD_MAX_WRITES: usize = 1024;

/// The log's side of the store, behind [`Staging`]'s `log` lock.
#[derive(Debug, Default)]
pub(super) struct Log {
    /// `None` before the writer starts, after a fatal error, and after close.
    committer: Option<Committer>,
    /// The last logged turn's generation and the writes logged since the last
    /// settle: synced, not yet all in sled nor out of the overlay.
    unsettled: Option<(u64, usize)>,
}

impl Log {
    #[cfg(test)]
    pub(super) fn new(committer: Committer) -> Self {
        Self {
            committer: Some(committer),
            unsettled: None,
        }
    }
}

impl Staging {
    pub(super) fn lock_log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| self.poisoned(p))
    }

    /// The log's lock after a panic while it was held: a turn may have been
    /// taken and never logged, so no later turn may say it is durable. The
    /// store stops writing, as after an I/O error.
    fn poisoned<'a>(&self, p: PoisonError<MutexGuard<'a, Log>>) -> MutexGuard<'a, Log> {
        let mut log = p.into_inner();
        let e = ::sled::Error::Io(std::io::Error::other(
            "a thread panicked while it logged a turn",
        ));
        self.fail(&mut log, &e);
        log
    }

    pub(super) fn spawn_writer(self: &Arc<Self>, committer: Committer) -> std::io::Result<()> {
        self.lock_log().committer = Some(committer);
        let writer = self.clone();
        std::thread::Builder::new()
            .name("wasmjobs-store-writer".into())
            .spawn(move || writer.writer_loop())?;
        Ok(())
    }

    /// Log and sync, on the caller's thread, the turn that makes `ticket`
    /// durable, if nobody else is logging: returns whether it is durable now.
    /// Blocks the caller for one append and one sync of the log (the device's
    /// sync, ~60-150 µs here); the turn's sled work is the writer thread's.
    pub(super) fn lead(&self, ticket: u64) -> Result<bool, ::sled::Error> {
        let mut log = match self.log.try_lock() {
            Ok(log) => log,
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Poisoned(p)) => {
                drop(self.poisoned(p));
                return Err(stopped());
            }
        };
        // The writer has yet to apply the last turn to sled: that is its
        // work, and long for a large turn.
        if log.committer.is_none() || log.unsettled.is_some() {
            return Ok(false);
        }
        let (taken, generation) = {
            let mut state = self.lock();
            if state.durable >= ticket {
                return Ok(true);
            }
            // A large turn (a bulk request's, or a linger's worth of claims and
            // finishes) is the writer's: its encoding and append would hold a
            // tokio thread for milliseconds.
            if state.closed || state.untaken > LEAD_MAX_WRITES {
                return Ok(false);
            }
            let (taken, generation, _) = state.take();
            (taken, generation)
        };
        let logged = self.log_turn(&mut log, taken.writes(), generation);
        if let Err(e) = &logged {
            self.fail(&mut log, e);
        }
        drop(log);
        self.lock().settle_wanted = true;
        self.wake.notify_one();
        logged.map(|()| true)
    }

    fn writer_loop(self: Arc<Self>) {
        // When the writes nobody waits for stop being gathered.
        let mut linger_until = None;
        loop {
            let lingering = {
                let mut state = self.lock();
                while !state.has_untaken()
                    && state.flush_wanted <= state.durable
                    && !state.settle_wanted
                    && !state.closed
                {
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                // Nobody waits for these writes (worker claims and finishes,
                // check-ins): gather more of them into this turn, settling a
                // leader's turn meanwhile (before the next leader would).
                let wants_turn = |s: &super::State| {
                    s.flush_wanted > s.durable || s.closed || s.untaken >= MAX_LINGER_WRITES
                };
                if state.has_untaken() {
                    let until = *linger_until.get_or_insert_with(|| Instant::now() + LINGER);
                    state = self
                        .wake
                        .wait_timeout_while(
                            state,
                            until.saturating_duration_since(Instant::now()),
                            |s| !wants_turn(s) && !s.settle_wanted,
                        )
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                state.settle_wanted = false;
                state.has_untaken()
                    && !wants_turn(&state)
                    && linger_until.is_some_and(|until| Instant::now() < until)
            };
            let mut log = self.lock_log();
            if log.committer.is_none() {
                // A leader's turn failed: it has reported the error.
                return;
            }
            if lingering {
                if let Err(e) = self.settle_turn(&mut log) {
                    self.fail(&mut log, &e);
                    return;
                }
                continue;
            }
            linger_until = None;
            // Taken under the log's lock: a leader may have logged some or all
            // of what woke us since.
            let (taken, generation, closed) = self.lock().take();
            if let Err(e) = self.apply(&mut log, taken.writes(), generation) {
                self.fail(&mut log, &e);
                return;
            }
            if closed && !self.lock().has_untaken() {
                // A clean stop leaves the log empty: the next open replays nothing.
                if let Some(mut committer) = log.committer.take()
                    && let Err(e) = committer.checkpoint()
                {
                    tracing::error!(error = %e, "the store's closing checkpoint failed; the next open replays its log");
                }
                return;
            }
        }
    }

    /// Log `writes` (staged up to `generation`) and settle them.
    pub(super) fn apply(
        &self,
        log: &mut Log,
        writes: Writes,
        generation: u64,
    ) -> Result<(), ::sled::Error> {
        self.log_turn(log, writes, generation)?;
        self.settle_turn(log)
    }

    /// Append the turn to the log and sync it, then answer its waiters.
    fn log_turn(
        &self,
        log: &mut Log,
        mut writes: Writes,
        generation: u64,
    ) -> Result<(), ::sled::Error> {
        if writes.is_empty() && generation <= self.lock().durable {
            // Nothing staged since a leader's turn.
            return Ok(());
        }
        let committer = log.committer.as_mut().ok_or_else(stopped)?;
        // The turn's changefeed records and creation-order entries go to sled
        // as one block each.
        super::super::logs::pack(&mut writes);
        let count = writes.len();
        let logged = committer.commit(writes)?;
        // Every turn is synced, waited for or not: sled gets its keys only
        // after the log holds them (see `wal.rs`).
        if logged {
            committer.sync()?;
        }
        self.lock().durable = generation;
        let _previous = self.done.send_replace(Ok(generation));
        let pending = log.unsettled.map_or(0, |(_, count)| count);
        log.unsettled = Some((generation, pending + count));
        Ok(())
    }

    /// Off the waiters' path: the logged turns' keys into sled, then out of
    /// the overlay (unless staged again since).
    fn settle_turn(&self, log: &mut Log) -> Result<(), ::sled::Error> {
        let Some((generation, count)) = log.unsettled.take() else {
            return Ok(());
        };
        log.committer.as_mut().ok_or_else(stopped)?.settle()?;
        if count > 0 {
            reclaim_garbage(count);
        }
        // sled has them (or, for new keys that ended removed, need not). The
        // turns' maps leave under the locks and are dropped after.
        let settled = {
            let _gate = self.gate.write().unwrap_or_else(|p| p.into_inner());
            self.lock().overlay.settle(generation)
        };
        drop(settled);
        Ok(())
    }

    /// The log cannot be written: every durable wait from now on fails, and
    /// the writer thread ends. Staged entries stay in the overlay: reads stay
    /// consistent with what was answered.
    fn fail(&self, log: &mut Log, e: &::sled::Error) {
        if log.committer.take().is_none() {
            // Already failed (or closed): the first error stands.
            return;
        }
        tracing::error!(error = %e, "the store cannot write; acknowledged writes now fail");
        let _previous = self.done.send_replace(Err(e.to_string()));
    }
}

pub(super) fn stopped() -> ::sled::Error {
    ::sled::Error::Io(std::io::Error::other("the store writer stopped"))
}

/// Free the B-tree pages that `count` sled writes replaced.
///
/// sled frees a replaced page through `crossbeam-epoch`: every write clones its
/// leaf and defers the old one's drop. crossbeam frees deferred garbage only
/// when a thread pins, and then at most 8 bags of 64 every 128 pins per
/// thread; `apply_batch` pins once for the whole batch. So a writer applying
/// thousands of writes per pin piled garbage up faster than it was freed:
/// measured, ~8 KB per bulk-submitted job, 0.6-1.1 GiB of RSS after 100k jobs
/// with small records, all of it freed only when the store closed. Pinning and
/// flushing here (each flush frees up to 8 expired bags) keeps up with what the
/// batch deferred: ~200 MiB at the same point.
fn reclaim_garbage(count: usize) {
    // About two deferred drops per write (the page and its cache entry), 512
    // per flush, and a few rounds for the epoch to advance past them.
    for _ in 0..count / 256 + 4 {
        crossbeam_epoch::pin().flush();
    }
}

#[cfg(test)]
mod tests {
    use ::sled::IVec;

    use super::super::Batch;
    use super::*;
    use crate::store::sled::wal::Wal;

    fn iv(s: &str) -> IVec {
        IVec::from(s.as_bytes())
    }

    fn stage(staging: &Staging, key: &str) -> u64 {
        let mut batch = Batch::default();
        batch.insert(key, "v");
        staging.stage(batch)
    }

    /// The keys of every turn in the log, in order.
    fn logged(dir: &std::path::Path) -> Vec<Vec<IVec>> {
        let (_wal, turns) = Wal::open(dir).expect("log");
        turns
            .into_iter()
            .map(|t| t.into_iter().map(|(k, _)| k).collect())
            .collect()
    }

    /// A staging with its log ready and no writer thread started: a turn is
    /// logged only by a waiter that leads, or by a writer the test starts.
    fn unstarted(dir: &std::path::Path) -> (::sled::Db, Arc<Staging>) {
        let db = ::sled::open(dir).expect("sled");
        let staging = Staging::new(db.clone());
        let committer = Committer::open(db.clone(), dir).expect("committer");
        staging.lock_log().committer = Some(committer);
        (db, staging)
    }

    /// How the wait for `generation` ended (it must end in time).
    async fn waited(staging: &Staging, generation: u64) -> Result<(), ::sled::Error> {
        let wait = std::time::Duration::from_secs(10);
        tokio::time::timeout(wait, staging.durable_through(generation))
            .await
            .expect("the wait ends in time")
    }

    async fn durable(staging: &Staging, generation: u64) {
        waited(staging, generation).await.expect("no store error");
    }

    /// With no writer thread to hand the turn to, a waiter still gets its
    /// write durable: it logs and syncs the turn itself. sled gets the keys
    /// from the writer thread afterwards; until then the next waiter leaves
    /// its turn to the writer, which logs it after the first.
    #[tokio::test]
    async fn a_waiter_logs_its_own_turn_when_the_log_is_free() {
        let dir = tempfile::tempdir().expect("dir");
        let (db, staging) = unstarted(dir.path());
        let a = stage(&staging, "a1");
        durable(&staging, a).await;
        assert_eq!(logged(dir.path()), [vec![iv("a1")]], "the turn is logged");
        assert_eq!(db.get("a1").expect("get"), None, "sled's keys wait");
        assert_eq!(staging.get(b"a1").expect("get"), Some(iv("v")));

        // The first turn is not in sled yet: the second is the writer's.
        let b = stage(&staging, "b1");
        assert!(!staging.lead(b).expect("lead"), "led before a settle");
        let writer = staging.clone();
        let writer = std::thread::spawn(move || writer.writer_loop());
        durable(&staging, b).await;
        assert_eq!(logged(dir.path()), [vec![iv("a1")], vec![iv("b1")]]);
        staging.settled().await;
        assert_eq!(db.get("a1").expect("get"), Some(iv("v")), "settled");
        assert_eq!(db.get("b1").expect("get"), Some(iv("v")), "settled");
        staging.close();
        writer.join().expect("writer");
        assert!(logged(dir.path()).is_empty(), "the close checkpointed");
    }

    /// A bulk-sized turn is the writer's, not a waiter's; and once a thread
    /// panicked holding the log (a turn may have been taken and lost), no
    /// wait succeeds.
    #[tokio::test]
    async fn large_turns_and_a_poisoned_log_are_not_led() {
        let dir = tempfile::tempdir().expect("dir");
        let (_db, staging) = unstarted(dir.path());
        let mut batch = Batch::default();
        for n in 0..=LEAD_MAX_WRITES {
            batch.insert(format!("k{n:05}").into_bytes(), "v");
        }
        let big = staging.stage(batch);
        assert!(
            !staging.lead(big).expect("lead"),
            "a bulk-sized turn was led"
        );
        assert!(logged(dir.path()).is_empty());

        let holder = staging.clone();
        let panicked = std::thread::spawn(move || {
            let _log = holder.lock_log();
            panic!("a panic while logging (expected by the test)");
        })
        .join();
        assert!(panicked.is_err());
        assert!(staging.lead(big).is_err(), "a poisoned log was led");
        assert!(
            waited(&staging, big).await.is_err(),
            "durable after a poisoned log"
        );
        assert!(logged(dir.path()).is_empty(), "nothing was logged");
    }

    /// A leader whose append fails (a device error) fails its own wait and
    /// every later one: nothing it took is published as durable, and what
    /// was staged stays readable, as after the writer thread's own failure.
    #[tokio::test]
    async fn a_leader_whose_append_fails_stops_the_store() {
        let dir = tempfile::tempdir().expect("dir");
        let (_db, staging) = unstarted(dir.path());
        {
            let mut log = staging.lock_log();
            let committer = log.committer.as_mut().expect("the log's committer");
            committer.wal().refuse_appends(dir.path());
        }
        let a = stage(&staging, "a1");
        assert!(
            waited(&staging, a).await.is_err(),
            "durable though its append failed"
        );
        assert!(staging.durable_generation() < a, "published as durable");
        assert_eq!(staging.get(b"a1").expect("get"), Some(iv("v")));
        // A later write finds no log to lead and no writer: its wait fails too.
        let b = stage(&staging, "b1");
        assert!(!staging.lead(b).expect("lead"), "led a stopped log");
        assert!(
            waited(&staging, b).await.is_err(),
            "durable after the store stopped"
        );
        assert!(logged(dir.path()).is_empty(), "nothing was logged");
    }

    /// Many waiters at once, leading or not: each one's write is in the log
    /// when its wait returns, and the log holds every write once, in the
    /// order staged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_waiters_are_logged_in_order_before_they_return() {
        let dir = tempfile::tempdir().expect("dir");
        let db = ::sled::open(dir.path()).expect("sled");
        let committer = Committer::open(db.clone(), dir.path()).expect("committer");
        let staging = Staging::start(db, committer).expect("staging");
        let (tasks, each) = (16, 10);
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for t in 0..tasks {
            let (staging, order, dir) = (staging.clone(), order.clone(), dir.path().to_owned());
            handles.push(tokio::spawn(async move {
                for n in 0..each {
                    let key = format!("k{t:02}-{n:02}");
                    let generation = {
                        // Staged and noted together: the order they were staged.
                        let mut order = order.lock().expect("order");
                        let generation = stage(&staging, &key);
                        order.push(iv(&key));
                        generation
                    };
                    durable(&staging, generation).await;
                    let all: Vec<IVec> = logged(&dir).concat();
                    assert!(
                        all.contains(&iv(&key)),
                        "{key} returned before it was logged"
                    );
                }
            }));
        }
        for h in handles {
            h.await.expect("task");
        }
        // A turn lists its keys sorted; the turns follow the staging order.
        let order = order.lock().expect("order").clone();
        let turns = logged(dir.path());
        let mut all: Vec<IVec> = turns.concat();
        all.sort();
        let mut staged = order.clone();
        staged.sort();
        assert_eq!(all, staged, "every write logged once");
        let rank = |k: &IVec| order.iter().position(|o| o == k).expect("staged");
        for pair in turns.windows(2) {
            let last = pair[0].iter().map(rank).max().expect("a write");
            let first = pair[1].iter().map(rank).min().expect("a write");
            assert!(
                last < first,
                "a turn logged a write staged after the next turn's"
            );
        }
        staging.close();
    }
}

//! Moving due scheduled jobs (`s` keys) to the ready queue, and where the
//! earliest of them is.
//!
//! A burst of jobs due at once is moved `limit` at a time, each pass removing
//! the `s` keys it took. Until the store writer has applied those removals they
//! are staged removals over keys sled still has, and a scan from the start of
//! the schedule walks every one of them again: under a burst the writer lags,
//! so each pass re-read thousands of keys already taken, holding the write lock
//! that claims wait for. The [`DueFloor`] lets a pass start after the last key
//! the previous one took.

use std::ops::Bound;

use ::sled::IVec;

use super::SledStore;
use super::index::Prior;
use super::scan::prefix_bounds;
use super::staging::Batch;
use crate::job::Status;
use crate::store::{StoreError, keys};

/// A schedule (`s`) key.
type ScheduleKey = [u8; keys::SCHEDULE_KEY_LEN];

/// No live `s` key sorts at or below `floor`: the keys below it were taken by
/// earlier passes (moved, or removed as stale). Any `s` key staged at or below
/// it unsets it, and a pass notes the lowest key staged while it runs, so that
/// a key staged behind its scan unsets the floor it would have set.
#[derive(Debug, Default)]
pub(super) struct DueFloor {
    floor: Option<ScheduleKey>,
    /// While a pass runs: the lowest `s` key staged since it began.
    lowest_staged: Option<ScheduleKey>,
}

impl DueFloor {
    /// `key` is the lowest `s` key a batch sets (removals do not count).
    pub(super) fn staged(&mut self, key: &[u8]) {
        let Ok(key) = ScheduleKey::try_from(key) else {
            return;
        };
        if self.floor.is_some_and(|floor| key <= floor) {
            self.floor = None;
        }
        self.lowest_staged = Some(self.lowest_staged.map_or(key, |low| low.min(key)));
    }

    /// A pass begins: where its scan starts.
    fn begin(&mut self) -> Option<ScheduleKey> {
        self.lowest_staged = None;
        self.floor
    }

    /// The pass that began at `start` took every key up to `last` (`None`: it
    /// took none) and has staged their removal.
    fn end(&mut self, start: Option<ScheduleKey>, last: Option<ScheduleKey>) {
        let reached = last.or(start);
        self.floor = match (self.lowest_staged, reached) {
            // Staged during the pass at or below where it reached: perhaps
            // behind its scan. The next pass starts from the beginning.
            // (A key staged below `start` meanwhile is one of these.)
            (Some(low), Some(reached)) if low <= reached => None,
            _ => reached,
        };
    }
}

impl SledStore {
    fn lock_due(&self) -> std::sync::MutexGuard<'_, DueFloor> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Note the lowest `s` key a batch sets; called while the batch is staged.
    pub(super) fn note_scheduled(&self, key: &[u8]) {
        self.lock_due().staged(key);
    }

    /// The schedule from `after` (exclusive; `None`: from its start).
    fn schedule_from(&self, after: Option<ScheduleKey>) -> super::staging::Scan<'_> {
        let (lo, hi) = prefix_bounds(&[keys::SCHEDULE]);
        let lo = after.map_or(lo, |k| Bound::Excluded(IVec::from(&k[..])));
        self.staging.scan(lo, hi, false)
    }

    /// See [`Store::job_schedule_due`](crate::store::Store::job_schedule_due).
    pub(super) fn schedule_due(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        let _w = self.lock();
        let start = self.lock_due().begin();
        let mut batch = Batch::default();
        // Read first, staged after under the order lock: finishes (which do not
        // hold the write lock) wait for the staging only, not for the reads.
        let mut due = Vec::new();
        let mut last = None;
        for entry in self.schedule_from(start) {
            let (key, _) = entry?;
            if due.len() >= limit || keys::schedule_time(&key).is_none_or(|at| at > now) {
                break;
            }
            last = ScheduleKey::try_from(&key[..]).ok();
            match keys::id_suffix(&key)
                .map(|id| self.load(id))
                .transpose()?
                .flatten()
            {
                // Only writers holding the write lock change a scheduled job.
                Some(old) if old.status == Status::Scheduled => due.push(old),
                _ => batch.remove(key),
            }
        }
        let moved = due.len();
        let order = self.order();
        for mut job in due {
            let prior = Prior::of(&job);
            self.requeue(&mut job)?;
            job.update_time = now;
            self.stage(&order, &mut batch, Some(prior), &mut job)?;
        }
        self.apply(batch, order)?;
        self.lock_due().end(start, last);
        Ok(moved)
    }

    /// See [`Store::job_next_due`](crate::store::Store::job_next_due).
    pub(super) fn next_due(&self) -> Result<Option<u64>, StoreError> {
        let after = self.lock_due().floor;
        let scheduled = self.schedule_from(after).next().transpose()?;
        let template = self
            .staging
            .scan_prefix(&[keys::TEMPLATE])
            .next()
            .transpose()?;
        Ok([scheduled, template]
            .into_iter()
            .flatten()
            .filter_map(|(key, _)| keys::schedule_time(&key))
            .min())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::sled::tests::pending_noop;

    fn scheduled_at(run_at: u64) -> crate::job::Job {
        let mut job = pending_noop();
        job.status = Status::Scheduled;
        job.run_at = Some(run_at);
        job
    }

    async fn status(store: &SledStore, id: uuid::Uuid) -> Status {
        store.job_get(id).await.expect("get").expect("job").status
    }

    /// A job scheduled below where the last pass stopped (due at once, or
    /// retried with no back-off) is still moved: the pass after it starts
    /// from the beginning again.
    #[tokio::test]
    async fn a_job_scheduled_below_the_last_pass_is_still_moved() {
        let dir = tempfile::tempdir().expect("dir");
        let store = SledStore::open(dir.path()).expect("store");
        let (a, b, c) = (scheduled_at(100), scheduled_at(200), scheduled_at(300));
        let ids = [a.id, b.id, c.id];
        store.job_insert_many(vec![a, b, c]).await.expect("insert");
        assert_eq!(store.schedule_due(250, 1).expect("due"), 1);
        assert_eq!(status(&store, ids[0]).await, Status::Pending);
        assert!(store.lock_due().floor.is_some(), "the pass set a floor");
        let early = scheduled_at(50);
        let early_id = early.id;
        store.job_insert_many(vec![early]).await.expect("insert");
        assert_eq!(store.next_due().expect("next"), Some(50));
        assert_eq!(store.schedule_due(250, 10).expect("due"), 2);
        assert_eq!(status(&store, early_id).await, Status::Pending);
        assert_eq!(status(&store, ids[1]).await, Status::Pending);
        assert_eq!(status(&store, ids[2]).await, Status::Scheduled);
        assert_eq!(store.next_due().expect("next"), Some(300));
    }

    /// Passes through a burst start where the previous one stopped, and
    /// between them take every due job once, in time order.
    #[tokio::test]
    async fn passes_through_a_burst_take_every_job_once() {
        let dir = tempfile::tempdir().expect("dir");
        let store = SledStore::open(dir.path()).expect("store");
        let jobs: Vec<_> = (0..25).map(|i| scheduled_at(1000 + i)).collect();
        let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
        store.job_insert_many(jobs).await.expect("insert");
        let mut floors = Vec::new();
        let mut moved = 0;
        loop {
            let n = store.schedule_due(2000, 10).expect("due");
            floors.push(store.lock_due().floor.and_then(|k| keys::schedule_time(&k)));
            moved += n;
            if n < 10 {
                break;
            }
        }
        assert_eq!(moved, 25);
        assert_eq!(floors, [Some(1009), Some(1019), Some(1024)]);
        for id in ids {
            assert_eq!(status(&store, id).await, Status::Pending);
        }
        assert_eq!(store.schedule_due(2000, 10).expect("due"), 0);
        assert_eq!(store.next_due().expect("next"), None);
    }

    /// The floor's bookkeeping on its own: a key staged at or below the floor,
    /// or below where a running pass reached, unsets it.
    #[test]
    fn a_key_staged_at_or_below_the_floor_unsets_it() {
        let key = |at: u64| keys::schedule(at, uuid::Uuid::nil());
        let mut floor = DueFloor::default();
        let start = floor.begin();
        floor.end(start, Some(key(10)));
        assert_eq!(floor.floor, Some(key(10)));
        floor.staged(&key(11));
        assert_eq!(floor.floor, Some(key(10)), "above the floor: kept");
        floor.staged(&key(10));
        assert_eq!(floor.floor, None, "at the floor: unset");
        // A pass from the start reaching 20 while 15 is staged behind it.
        let start = floor.begin();
        floor.staged(&key(15));
        floor.end(start, Some(key(20)));
        assert_eq!(floor.floor, None);
        // Staged beyond where the pass reached: the floor holds.
        let start = floor.begin();
        floor.staged(&key(30));
        floor.end(start, Some(key(20)));
        assert_eq!(floor.floor, Some(key(20)));
        // A pass that took nothing keeps the floor it began at, unless a key
        // below it was staged meanwhile.
        let start = floor.begin();
        floor.end(start, None);
        assert_eq!(floor.floor, Some(key(20)));
        let start = floor.begin();
        floor.staged(&key(5));
        floor.end(start, None);
        assert_eq!(floor.floor, None);
    }
}

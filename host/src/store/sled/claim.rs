//! Claiming the next ready job: the first queued job (priority, then age) that
//! is still pending and fits the node's free capacity becomes running, with a
//! new attempt. A claim is one pass of the store's locks on its own, or the
//! second half of the pass that records a worker's previous job (`finish.rs`).

use std::sync::MutexGuard;

use uuid::Uuid;

use super::SledStore;
use super::index::Prior;
use super::locks::Order;
use super::ready::QueueKey;
use super::staging::Batch;
use crate::job::{Attempt, Job, Status};
use crate::store::{CLAIM_SCAN, StoreError, keys};

/// What a claim found: queue entries with no pending job behind them (to
/// drop), and the job it chose, as stored.
pub(super) type Picked = (Vec<QueueKey>, Option<Job>);

/// The `fits` of a claim: called under the write lock for each candidate, in
/// queue order; it may reserve the job's capacity when it says yes.
pub(super) type Fits<'f> = &'f mut (dyn for<'j> FnMut(&'j Job) -> bool + Send);

impl SledStore {
    /// Claim under the write lock `_w` (claims are decided one at a time).
    pub(super) fn claim(
        &self,
        _w: MutexGuard<'_, ()>,
        worker_id: &str,
        now: u64,
        fits: Fits<'_>,
    ) -> Result<Option<Job>, StoreError> {
        let (stale, chosen) = self.pick(fits)?;
        if stale.is_empty() && chosen.is_none() {
            return Ok(None);
        }
        let order = self.order();
        // The claimed job's record, change and index entries, and the stale
        // entries dropped on the way.
        let mut batch = Batch::with_capacity(4 + stale.len(), 1, 0);
        let claimed = self.stage_claim(&order, &mut batch, (stale, chosen), worker_id, now)?;
        self.apply(batch, order)?;
        Ok(claimed)
    }

    /// Find the job to claim. The caller holds the write lock: no other claim,
    /// submit or command changes a queued job meanwhile.
    pub(super) fn pick(&self, fits: Fits<'_>) -> Result<Picked, StoreError> {
        let mut stale = Vec::new();
        // The queue in memory: a claim reads no index from sled, and mostly no
        // record either (the queue keeps those it staged). The queue is locked
        // per candidate only: finishes stage through it meanwhile.
        let mut after = None;
        for _ in 0..CLAIM_SCAN {
            let Some((key, record)) = self.lock_queue().next_claimable(after.as_ref()) else {
                break;
            };
            after = Some(key);
            let job = match (keys::id_suffix(&key), record) {
                (Some(id), Some(bytes)) => Some(self.decode_job(id, &bytes)?),
                (Some(id), None) => self.load(id)?,
                (None, _) => None,
            };
            match job {
                Some(job) if job.status == Status::Pending => {
                    if fits(&job) {
                        return Ok((stale, Some(job)));
                    }
                }
                // An index entry without a pending job behind it: drop it.
                _ => stale.push(key),
            }
        }
        Ok((stale, None))
    }

    /// Stage what [`SledStore::pick`] found: the stale entries' removal and the
    /// chosen job's start (running, with a new attempt on `worker_id`).
    pub(super) fn stage_claim(
        &self,
        order: &Order<'_>,
        batch: &mut Batch,
        (stale, chosen): Picked,
        worker_id: &str,
        now: u64,
    ) -> Result<Option<Job>, StoreError> {
        for key in stale {
            batch.remove(&key[..]);
        }
        let Some(mut job) = chosen else {
            return Ok(None);
        };
        let prior = Prior::of(&job);
        job.status = Status::Running;
        job.update_time = now;
        job.started_at = Some(now);
        job.finished_at = None;
        let number = job.attempts.last().map_or(1, |a| a.number + 1);
        let retry_from_id = job.attempts.last().map(|a| a.id);
        job.attempts.push(Attempt {
            id: Uuid::new_v4(),
            number,
            retry_from_id,
            worker_id: worker_id.to_string(),
            started_at: now,
            finished_at: None,
            outcome: None,
            message: None,
            plugin_digest: String::new(),
            startup_us: None,
            duration_us: None,
            peak_memory: None,
            fuel_used: None,
        });
        job.event("Started", format!("attempt {number} on {worker_id}"));
        self.stage(order, batch, Some(prior), &mut job)?;
        Ok(Some(job))
    }
}

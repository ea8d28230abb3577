//! The end of an attempt: the running job's record moves on (a final status,
//! or a retry after a back-off), alone or together with the claim of the
//! worker's next job.

use std::sync::MutexGuard;

use uuid::Uuid;

use super::SledStore;
use super::claim::Fits;
use super::index::Prior;
use super::staging::Batch;
use super::write::must_be_running;
use crate::job::{Job, Status};
use crate::store::{AttemptEnd, Next, StoreError};

impl SledStore {
    /// Record the end of `id`'s attempt and claim the worker's next job in one
    /// pass of the store's locks and one staged batch: both are written or
    /// neither. A worker in a busy queue takes the order lock once per job
    /// instead of twice, and its claim no longer queues behind other workers'
    /// finishes (the runtime threads slept in those locks).
    pub(super) fn finish_then_claim(
        &self,
        _w: MutexGuard<'_, ()>,
        id: Uuid,
        (end, next): (AttemptEnd, Next),
        now: u64,
        worker_id: &str,
        fits: Fits<'_>,
    ) -> Result<(Job, Option<Job>), StoreError> {
        // The write lock `_w` first, then the job's stripe (see `stripe`).
        let _s = self.stripe(id);
        // Taken out of the running jobs' cache rather than copied: the batch
        // drops it from there anyway. (The cache is only a cache: should this
        // pass fail, reads decode the staged record instead.)
        let cached = self.lock_running().remove(&id);
        let mut new = match cached {
            Some(job) => job,
            None => self.must_load(id)?,
        };
        must_be_running(&new)?;
        let prior = Prior::of(&new);
        end_attempt(&mut new, end, next, now);
        let picked = self.pick(fits)?;
        let order = self.order();
        // Two jobs' records, changes and index entries (see `stage`).
        let mut batch = Batch::with_capacity(8 + picked.0.len(), 2, 0);
        self.stage(&order, &mut batch, Some(prior), &mut new)?;
        let claimed = self.stage_claim(&order, &mut batch, picked, worker_id, now)?;
        self.apply(batch, order)?;
        Ok((new, claimed))
    }
}

/// Close `job`'s running attempt with `end` and move the job on as `next` says.
pub(super) fn end_attempt(job: &mut Job, end: AttemptEnd, next: Next, now: u64) {
    let summary = match &end.message {
        Some(m) => format!("{}: {m}", end.outcome),
        None => end.outcome.clone(),
    };
    if end.outcome == "killed" {
        job.event("Killed", end.message.clone().unwrap_or_default());
    }
    if let Some(a) = job.attempts.last_mut() {
        a.finished_at = Some(now);
        a.outcome = Some(end.outcome);
        a.message = end.message;
        a.plugin_digest = end.plugin_digest;
        a.startup_us = Some(end.startup_us);
        a.duration_us = Some(end.duration_us);
        a.peak_memory = Some(end.peak_memory);
        a.fuel_used = end.fuel_used;
    }
    job.event("Terminated", summary);
    match next {
        Next::RetryAt(_) => job.event("Restarting", end.decision),
        Next::Final(Status::Error) => job.event("Not Restarting", end.decision),
        Next::Final(_) => {}
    }
    job.update_time = now;
    match next {
        Next::Final(status) => {
            job.status = status;
            job.finished_at = Some(now);
            if status == Status::Error {
                job.die_at = Some(now);
            }
        }
        Next::RetryAt(at) => {
            job.status = Status::Scheduled;
            job.run_at = Some(at);
            job.retries_left = job.retries_left.saturating_sub(1);
        }
    }
}

//! Claiming the next ready job: the first queued job (priority, then age) that
//! is still pending and fits the node's free capacity becomes running, with a
//! new attempt.

use uuid::Uuid;

use super::SledStore;
use super::staging::Batch;
use crate::job::{Attempt, Job, Status};
use crate::store::{CLAIM_SCAN, StoreError, keys};

impl SledStore {
    /// Claim under the write lock (claims are decided one at a time); `fits`
    /// reserves the job's capacity when it says yes.
    pub(super) fn claim(
        &self,
        worker_id: &str,
        now: u64,
        fits: &mut (dyn for<'j> FnMut(&'j Job) -> bool + Send),
    ) -> Result<Option<Job>, StoreError> {
        let _w = self.lock();
        let mut stale = Vec::new();
        let mut chosen = None;
        // The queue in memory: a claim reads no index from sled, and mostly no
        // record either (the queue keeps those it staged). The queue is locked
        // per candidate only: finishes stage through it meanwhile. Under the
        // write lock no other claim, submit or command changes a queued job.
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
                        chosen = Some(job);
                        break;
                    }
                }
                // An index entry without a pending job behind it: drop it.
                _ => stale.push(key),
            }
        }
        let mut batch = Batch::default();
        for key in stale {
            batch.remove(&key[..]);
        }
        if let Some(old) = chosen {
            let mut job = old.clone();
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
            let order = self.order();
            self.stage(&order, &mut batch, Some(&old), &mut job)?;
            self.apply(batch, order)?;
            return Ok(Some(job));
        }
        if !batch.is_empty() {
            self.apply(batch, self.order())?;
        }
        Ok(None)
    }
}

//! Moves scheduled jobs (Scheduled kind, and failed jobs waiting out their
//! back-off) to the ready queue when their time comes. It sleeps until the
//! earliest due time, and is woken early when an earlier job is scheduled.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::JobService;
use crate::job::now_ms;
use crate::store::StoreError;

/// Jobs moved per store write.
const BATCH: usize = 1000;
/// Longest sleep between looks (bounds clock jumps and missed wake-ups).
const MAX_SLEEP: Duration = Duration::from_secs(1);

impl JobService {
    pub fn start_scheduler(&self) -> JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move { service.scheduler_loop().await })
    }

    async fn scheduler_loop(self) {
        let mut shutdown = self.shutting_down();
        while !*shutdown.borrow() {
            let wait = match self.schedule_due(now_ms()).await {
                Ok(moved) if moved >= BATCH => Duration::ZERO,
                Ok(_) => match self.store().job_next_due().await {
                    Ok(Some(at)) => {
                        Duration::from_millis(at.saturating_sub(now_ms())).min(MAX_SLEEP)
                    }
                    Ok(None) => MAX_SLEEP,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the schedule");
                        MAX_SLEEP
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "cannot move due jobs");
                    MAX_SLEEP
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.inner.scheduled.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Move the jobs due at `now` to the queue (and fire due periodic templates)
    /// and wake workers; returns how many jobs became ready.
    pub async fn schedule_due(&self, now: u64) -> Result<usize, StoreError> {
        let fired = self.fire_periodic(now).await?;
        let moved = self.store().job_schedule_due(now, BATCH).await? + fired;
        for _ in 0..moved {
            self.inner.ready.notify_one();
        }
        Ok(moved)
    }

    /// After a crash: requeue the jobs that were running. Call before the workers
    /// start.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let requeued = self.store().job_recover(now_ms()).await?;
        if !requeued.is_empty() {
            tracing::warn!(
                count = requeued.len(),
                "requeued jobs interrupted by the last shutdown"
            );
        }
        Ok(requeued.len())
    }
}

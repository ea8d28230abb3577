//! Moves scheduled jobs (Scheduled kind, and failed jobs waiting out their
//! back-off) to the ready queue when their time comes. It sleeps until the
//! earliest due time, and is woken early when an earlier job is scheduled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::JobService;
use crate::job::now_ms;
use crate::store::StoreError;

/// Jobs moved per store write.
const BATCH: usize = 1000;
/// Longest sleep between looks (bounds clock jumps and missed wake-ups).
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Wakes the scheduler when a job becomes due before the time it planned to
/// look next, and only then: a submit of a job scheduled an hour out, or a
/// retry backing off past the next look, costs no scheduler pass.
#[derive(Debug)]
pub(super) struct SchedulerWake {
    /// The time (ms) of the scheduler's next look; `u64::MAX` during a pass,
    /// so that every job announced meanwhile wakes it once more.
    planned: AtomicU64,
    notify: Notify,
}

impl Default for SchedulerWake {
    fn default() -> Self {
        Self {
            planned: AtomicU64::new(u64::MAX),
            notify: Notify::new(),
        }
    }
}

impl SchedulerWake {
    /// A job becomes due at `at` (ms since the epoch), and is already visible
    /// in the store: wake the scheduler if it planned to look later.
    pub(super) fn due_at(&self, at: u64) {
        if self.planned.fetch_min(at, Ordering::SeqCst) > at {
            self.notify.notify_one();
        }
    }

    /// Wake the scheduler whatever it planned (shutdown).
    pub(super) fn wake(&self) {
        self.notify.notify_waiters();
    }

    /// A pass begins: what is announced from now on wakes the scheduler again
    /// (a permit is kept if it is not waiting yet), as the pass may have
    /// missed it.
    fn begin_pass(&self) {
        self.planned.store(u64::MAX, Ordering::SeqCst);
    }

    /// The pass is over and planned its next look for `at`; returns the time
    /// of the next look, earlier if a job announced during the pass is due
    /// sooner.
    fn plan(&self, at: u64) -> u64 {
        self.planned.fetch_min(at, Ordering::SeqCst).min(at)
    }
}

impl JobService {
    pub fn start_scheduler(&self) -> JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move { service.scheduler_loop().await })
    }

    async fn scheduler_loop(self) {
        let mut shutdown = self.shutting_down();
        let wake = &self.inner.scheduled;
        while !*shutdown.borrow() {
            wake.begin_pass();
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
            let now = now_ms();
            let at = wake.plan(now.saturating_add(wait.as_millis() as u64));
            let wait = Duration::from_millis(at.saturating_sub(now));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = wake.notify.notified() => {}
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

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    /// Whether the scheduler, waiting now, would be woken at once.
    fn woken(wake: &SchedulerWake) -> bool {
        wake.notify.notified().now_or_never().is_some()
    }

    #[test]
    fn a_job_due_after_the_planned_look_does_not_wake_the_scheduler() {
        let wake = SchedulerWake::default();
        wake.begin_pass();
        assert_eq!(wake.plan(5_000), 5_000);
        wake.due_at(9_000);
        assert!(!woken(&wake), "due after the next look");
        wake.due_at(5_000);
        assert!(!woken(&wake), "due at the next look");
    }

    #[test]
    fn a_job_due_before_the_planned_look_wakes_it_and_moves_the_look() {
        let wake = SchedulerWake::default();
        wake.begin_pass();
        wake.plan(5_000);
        wake.due_at(2_000);
        assert!(woken(&wake));
        wake.due_at(3_000);
        assert!(!woken(&wake), "the look is at 2,000 now");
    }

    #[test]
    fn a_job_announced_during_a_pass_wakes_it_and_shortens_its_plan() {
        let wake = SchedulerWake::default();
        wake.begin_pass();
        // The pass may have read the schedule before this job was stored.
        wake.due_at(9_000);
        assert_eq!(wake.plan(5_000), 5_000);
        assert!(woken(&wake), "a pass again, which will see the job");
        wake.begin_pass();
        wake.due_at(3_000);
        assert_eq!(wake.plan(5_000), 3_000, "the earlier of the two");
    }
}

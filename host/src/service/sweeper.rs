//! The job-log sweeper (Harbor's FILE logger sweeper): deletes log files older
//! than the retention period, never those of jobs running on this node.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::JobService;
use crate::job::now_ms;

impl JobService {
    /// Start the sweeper if the FILE logger has a retention period.
    pub fn start_sweeper(&self) -> Option<JoinHandle<()>> {
        let retention = self.logs().retention()?;
        let period = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        let service = self.clone();
        Some(tokio::spawn(async move {
            let mut shutdown = service.shutting_down();
            while !*shutdown.borrow() {
                service.sweep_logs(retention).await;
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }))
    }

    /// One sweep: delete the logs not written to for `retention` whose job is not
    /// running here and finished (or vanished) more than `retention` ago. Returns
    /// how many were deleted.
    pub async fn sweep_logs(&self, retention: Duration) -> usize {
        let logs = self.logs().clone();
        let stale = match tokio::task::spawn_blocking(move || logs.stale(retention)).await {
            Ok(Ok(ids)) => ids,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot list job logs");
                return 0;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the log sweeper panicked");
                return 0;
            }
        };
        let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
        let mut removed = 0;
        for id in stale {
            if self.lock_running().contains_key(&id) {
                continue;
            }
            let expired = match self.store().job_get(id).await {
                Ok(Some(job)) => {
                    job.status.is_final() && job.finished_at.is_some_and(|t| t < cutoff)
                }
                Ok(None) => true,
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "cannot read a job while sweeping logs");
                    false
                }
            };
            if expired {
                match self.logs().remove(id) {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::warn!(job = %id, error = %e, "cannot delete a job log"),
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "swept old job logs");
        }
        removed
    }
}

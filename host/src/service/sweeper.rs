//! The job-log sweeper (Harbor's FILE logger sweeper): deletes log files older
//! than the retention period, never those of jobs running on this node.

use std::collections::HashSet;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::JobService;

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

    /// One sweep; returns how many logs were deleted.
    pub async fn sweep_logs(&self, retention: Duration) -> usize {
        let live: HashSet<_> = self.lock_running().keys().copied().collect();
        let logs = self.logs().clone();
        let swept = tokio::task::spawn_blocking(move || logs.sweep(retention, &live)).await;
        match swept {
            Ok(Ok(n)) => {
                if n > 0 {
                    tracing::info!(removed = n, "swept old job logs");
                }
                n
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot sweep job logs");
                0
            }
            Err(e) => {
                tracing::warn!(error = %e, "the log sweeper panicked");
                0
            }
        }
    }
}

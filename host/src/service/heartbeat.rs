//! The node's heartbeat (DTR's workers): every few seconds the node writes its
//! capacity, what is in use and when it should be considered gone.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::JobService;
use crate::job::now_ms;
use crate::store::WorkerRecord;

/// Time between heartbeats.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A node that missed this many heartbeats counts as gone.
const MISSES: u32 = 3;

impl JobService {
    pub fn start_heartbeat(&self) -> JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut shutdown = service.shutting_down();
            while !*shutdown.borrow() {
                if let Err(e) = service.heartbeat().await {
                    tracing::warn!(error = %e, "cannot record the heartbeat");
                }
                tokio::select! {
                    () = tokio::time::sleep(HEARTBEAT) => {}
                    _ = shutdown.changed() => {}
                }
            }
        })
    }

    /// Write this node's worker record now.
    pub async fn heartbeat(&self) -> Result<(), crate::store::StoreError> {
        let record = WorkerRecord {
            id: self.node_id().to_string(),
            capacity_map: self.inner.capacity.total().clone(),
            in_use: self.inner.capacity.in_use(),
            concurrency: self.config().workers,
            running: self.running_count() as u32,
            heartbeat_expiration: now_ms() + (HEARTBEAT * MISSES).as_millis() as u64,
        };
        self.store().worker_heartbeat(&record).await
    }
}

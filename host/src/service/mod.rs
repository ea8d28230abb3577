//! The job service: turns requests into stored jobs, runs them on the worker pool
//! in the engine, and applies operator actions. The REST layer (`api`) is a thin
//! shell over [`JobService`].
//!
//! - `submit` checks a request (plugin known, kind rules, the plugin's own
//!   `validate`) and stores it durably before answering;
//! - `worker` claims ready jobs and runs attempts; `scheduler` moves due jobs to
//!   the queue; `host` is what a running guest reaches;
//! - `stop`/`cancel` end a waiting job at once, or reach a running one through its
//!   [`Control`] (killed after its stop timeout); `retry` requeues a failed job.

mod capacity;
mod heartbeat;
mod hook_policy;
mod hooks;
mod host;
mod periodic;
pub use periodic::execution_id;
pub mod retry;
mod scheduler;
mod submit;
mod sweeper;
mod worker;

pub use hook_policy::{HookPolicy, PolicyResolver};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{Notify, watch};
use uuid::Uuid;

pub use submit::{JobRequest, ServiceError};

use crate::config::Config;
use crate::job::{Command, Job, now_ms};
use crate::logs::JobLogs;
use crate::runtime::{Control, PluginRegistry, Runtime};
use crate::store::{CommandEffect, Store};

/// The job service of one node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct JobService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    node_id: String,
    started_at: SystemTime,
    store: Arc<dyn Store>,
    registry: Arc<PluginRegistry>,
    logs: JobLogs,
    properties: Arc<HashMap<String, String>>,
    /// Controls of the attempts running on this node.
    running: Mutex<HashMap<Uuid, Control>>,
    /// Wakes idle workers when jobs become ready.
    /// The store's [`Store::ready_signal`](crate::store::Store::ready_signal):
    /// idle workers wait on it.
    ready: Arc<Notify>,
    /// Wakes the scheduler when a job is scheduled earlier than it planned.
    scheduled: scheduler::SchedulerWake,
    /// Set once to stop claiming new jobs.
    shutdown: watch::Sender<bool>,
    dropped_hooks: std::sync::atomic::AtomicU64,
    /// Attempts this node's workers ran and recorded since it started.
    attempts_recorded: std::sync::atomic::AtomicU64,
    capacity: capacity::Capacity,
    /// Permits of the blocking queries allowed to wait at once.
    blocking_waiters: Arc<tokio::sync::Semaphore>,
}

impl JobService {
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        registry: Arc<PluginRegistry>,
        logs: JobLogs,
    ) -> Self {
        let node_id = format!(
            "{}-{}",
            hostname(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        let capacity = config.capacity.clone();
        let ready = store.ready_signal();
        let blocking_waiters = Arc::new(tokio::sync::Semaphore::new(config.max_blocking_waiters));
        Self {
            inner: Arc::new(Inner {
                properties: Arc::new(config.properties.clone()),
                config,
                node_id,
                started_at: SystemTime::now(),
                store,
                registry,
                logs,
                running: Mutex::new(HashMap::new()),
                ready,
                scheduled: scheduler::SchedulerWake::default(),
                shutdown: watch::channel(false).0,
                dropped_hooks: std::sync::atomic::AtomicU64::new(0),
                attempts_recorded: std::sync::atomic::AtomicU64::new(0),
                capacity: capacity::Capacity::new(capacity),
                blocking_waiters,
            }),
        }
    }

    /// A place among the blocking queries allowed to wait, held until dropped;
    /// `None` when `max_blocking_waiters` are waiting.
    pub fn blocking_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.blocking_waiters.clone().try_acquire_owned().ok()
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }
    pub fn started_at(&self) -> SystemTime {
        self.inner.started_at
    }
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }
    pub fn registry(&self) -> &Arc<PluginRegistry> {
        &self.inner.registry
    }
    pub fn runtime(&self) -> &Arc<Runtime> {
        self.inner.registry.runtime()
    }
    pub fn logs(&self) -> &JobLogs {
        &self.inner.logs
    }
    fn properties(&self) -> Arc<HashMap<String, String>> {
        self.inner.properties.clone()
    }

    /// One job by id.
    pub async fn get(&self, id: Uuid) -> Result<Job, ServiceError> {
        self.store()
            .job_get(id)
            .await?
            .ok_or(ServiceError::NotFound(id))
    }

    /// Stop or cancel a job. Waiting jobs end at once; a running job sees the
    /// command through `op-command` and is killed after its stop timeout; a
    /// finished job is left as it is. The job's unfinished sub-jobs and periodic
    /// executions (and theirs) get the same command; a stopped periodic template
    /// fires no more.
    pub async fn command(&self, id: Uuid, command: Command) -> Result<CommandEffect, ServiceError> {
        let effect = self.command_one(id, command).await?;
        let mut todo = vec![id];
        let mut seen = std::collections::HashSet::from([id]);
        while let Some(parent) = todo.pop() {
            let mut after = None;
            loop {
                let page = self.store().job_executions(parent, after, 500).await?;
                let Some(&(last, _)) = page.last() else { break };
                after = Some(last);
                for (_, child) in page {
                    if seen.insert(child) {
                        if let Err(e) = self.command_one(child, command).await {
                            tracing::warn!(job = %child, error = %e, "cannot pass the command to a child job");
                        }
                        todo.push(child);
                    }
                }
            }
        }
        Ok(effect)
    }

    async fn command_one(&self, id: Uuid, command: Command) -> Result<CommandEffect, ServiceError> {
        let (effect, _job) = self.store().job_command(id, command, now_ms()).await?;
        if effect == CommandEffect::Delivered {
            let control = self.lock_running().get(&id).cloned();
            match (control, command) {
                (Some(c), Command::Stop) => c.stop(),
                (Some(c), Command::Cancel) => c.cancel(),
                // Claimed but not started yet: the worker reads the stored command
                // before it starts the attempt.
                (None, _) => {}
            }
        }
        Ok(effect)
    }

    /// A job's executions after position `after`, with the cursor of each.
    pub async fn executions(
        &self,
        id: Uuid,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Job)>, ServiceError> {
        self.get(id).await?;
        let mut out = Vec::new();
        for (pos, child) in self.store().job_executions(id, after, limit).await? {
            if let Some(job) = self.store().job_get(child).await? {
                out.push((pos, job));
            }
        }
        Ok(out)
    }

    /// Record plugin loads and unloads in the changefeed, as they happen.
    pub fn start_plugin_audit(&self) -> tokio::task::JoinHandle<()> {
        use crate::runtime::RegistryEvent;
        use crate::store::ChangeRecord;
        let mut events = self.registry().subscribe();
        let store = self.store().clone();
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "plugin events were missed by the changefeed");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let (name, status, digest) = match event {
                    RegistryEvent::Loaded { name, digest, .. } => (name, "loaded", Some(digest)),
                    RegistryEvent::Unloaded { name, digest, .. } => {
                        (name, "unloaded", Some(digest))
                    }
                    RegistryEvent::Invalid { file, .. } => {
                        (file.display().to_string(), "invalid", None)
                    }
                };
                let record = ChangeRecord {
                    id: 0,
                    created_at: now_ms(),
                    category: "plugin".into(),
                    job_id: None,
                    name,
                    status: status.into(),
                    version: 0,
                    plugin_digest: digest,
                };
                if let Err(e) = store.change_append(record).await {
                    tracing::warn!(error = %e, "cannot record a plugin change");
                }
            }
        })
    }

    /// Hooks given up after retrying for `hook_retry_for`.
    pub fn dropped_hooks(&self) -> u64 {
        self.inner
            .dropped_hooks
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_dropped_hook(&self) {
        self.inner
            .dropped_hooks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The retry action: a job in `error`, `stopped` or `cancelled` runs again.
    pub async fn retry(&self, id: Uuid) -> Result<Job, ServiceError> {
        let job = self.store().job_retry(id, now_ms()).await?;
        self.inner.ready.notify_one();
        Ok(job)
    }

    /// Ask the workers and the scheduler to stop. Running attempts go on; see
    /// [`crate::server`] for how long they are given.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        self.inner.ready.notify_waiters();
        self.inner.scheduled.wake();
    }

    /// Attempts this node's workers ran to an end and recorded since it started
    /// (a throughput counter: jobs/s is its rate).
    pub fn attempts_recorded(&self) -> u64 {
        self.inner
            .attempts_recorded
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Attempts running on this node now.
    pub fn running_count(&self) -> usize {
        self.lock_running().len()
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Control>> {
        self.inner.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shutting_down(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string())
}

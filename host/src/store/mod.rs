//! Where jobs live. One trait, [`Store`], named noun-first like River's driver
//! (`job_insert`, `job_claim`, ...), so that a second backend (PostgreSQL, for
//! several nodes) can slot in and pass the same conformance tests.
//!
//! Every status change goes through [`crate::job::Status::can_become`] inside the
//! store, in the same atomic write as the queue and schedule indexes it touches.

pub mod codec;
mod keys;
mod sled;

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

pub use self::sled::{LogWriter, SledStore};
use crate::job::{Command, Job, Status};

/// Candidates a claim looks at before giving up (jobs that do not fit now).
pub const CLAIM_SCAN: usize = 1024;

/// Most idle workers one write wakes (see [`Store::ready_signal`]); more jobs
/// than that are found by workers going back to the queue after each job.
pub const READY_WAKES: usize = 64;

/// One queued webhook delivery: the job as it was at the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecord {
    /// Position in the delivery queue (global order; per job, change order).
    pub seq: u64,
    pub url: String,
    pub job: Job,
    pub attempts: u32,
    /// Unix ms when the change happened.
    pub created_at: u64,
    /// Unix ms before which it is not retried.
    pub next_at: u64,
}

/// One entry of the audit changefeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// Only grows.
    pub id: u64,
    /// Unix ms.
    pub created_at: u64,
    /// `job` for job status changes, `plugin` for plugin loads and unloads.
    /// (`Cow`: a job's change is recorded with every transition, and these are
    /// constants then; read back, they are owned.)
    pub category: Cow<'static, str>,
    pub job_id: Option<Uuid>,
    pub name: String,
    pub status: Cow<'static, str>,
    /// The job's revision (or 0 for plugins).
    pub version: u64,
    pub plugin_digest: Option<String>,
}

/// A store failure. I/O and corruption are the store's fault (5xx); the rest
/// describe the request (4xx).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error: {0}")]
    Io(#[from] ::sled::Error),
    #[error("corrupt record {key}: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: codec::CodecError,
    },
    #[error("no job {0}")]
    NotFound(Uuid),
    #[error("job {id} is {from}; it cannot become {to}")]
    Transition { id: Uuid, from: Status, to: Status },
    #[error("two unique jobs of the request have the same name ({name}) and parameters")]
    DuplicateInRequest { name: String },
    #[error("the store refuses writes (fault injected)")]
    Injected,
    #[error("a job with the same name and parameters is already {status}: {existing}")]
    Duplicate { existing: Uuid, status: Status },
}

/// How an attempt ended, as the store records it.
#[derive(Debug, Clone)]
pub struct AttemptEnd {
    /// `success`, `failed`, `stopped`, `cancelled`, `trapped`, `killed`.
    pub outcome: String,
    pub message: Option<String>,
    pub plugin_digest: String,
    pub startup_us: u64,
    pub duration_us: u64,
    pub peak_memory: u64,
    pub fuel_used: Option<u64>,
    /// Why the job retries or stops retrying (the `Restarting` / `Not Restarting`
    /// event's message).
    pub decision: String,
}

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<Status>,
    pub name: Option<String>,
    pub kind: Option<crate::job::Kind>,
    pub upstream: Option<Uuid>,
}

impl JobFilter {
    pub fn matches(&self, job: &Job) -> bool {
        self.status.is_none_or(|s| job.status == s)
            && self.name.as_ref().is_none_or(|n| job.name == *n)
            && self.kind.is_none_or(|k| job.kind == k)
            && self.upstream.is_none_or(|u| job.upstream_job_id == Some(u))
    }
}

/// A node's heartbeat (DTR's worker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: String,
    pub capacity_map: std::collections::BTreeMap<String, u32>,
    pub in_use: std::collections::BTreeMap<String, u32>,
    pub concurrency: u32,
    pub running: u32,
    /// Unix ms after which the node counts as gone.
    pub heartbeat_expiration: u64,
}

/// What happens to a job after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A final status.
    Final(Status),
    /// Wait until this unix-ms time, then run again.
    RetryAt(u64),
}

/// What a stop or cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandEffect {
    /// The job had not started: it is now final and will never run.
    Ended(Status),
    /// The job is running: the command was recorded; the worker delivers it.
    Delivered,
    /// The job had already finished: nothing changed.
    AlreadyFinal(Status),
}

/// The job store.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Insert new jobs, all or none, and return once they are durable. A `unique`
    /// job whose name and parameters match a live one (pending, scheduled or
    /// running) is refused with [`StoreError::Duplicate`], and so is the batch.
    /// Returns the jobs as stored (with their sequence numbers and `Received`
    /// event), in the order given.
    async fn job_insert_many(&self, jobs: Vec<Job>) -> Result<Vec<Job>, StoreError>;

    /// Return once the write that queued job `id` (its submit, a retry, a due
    /// schedule, a periodic fire) is durable, at once when it has long been. A
    /// worker waits for it between claiming a job and starting its guest: a job
    /// runs only from a state a crash cannot take back, while the wake-up and
    /// the claim overlap the flush.
    async fn job_durable(&self, id: Uuid) -> Result<(), StoreError>;

    async fn job_get(&self, id: Uuid) -> Result<Option<Job>, StoreError>;

    /// Take the first ready job (highest priority, then oldest) for which `fits`
    /// answers true, and mark it running with a new attempt on `worker_id`. `fits`
    /// is called under the store's write lock, in queue order, for at most
    /// [`CLAIM_SCAN`] candidates; it may reserve capacity when it answers true. Jobs
    /// that do not fit stay queued without holding back the ones behind them.
    async fn job_claim(
        &self,
        worker_id: &str,
        now: u64,
        fits: &mut (dyn for<'j> FnMut(&'j Job) -> bool + Send),
    ) -> Result<Option<Job>, StoreError>;

    /// Record an event on a job (e.g. a sub-job that failed validation).
    async fn job_event(&self, id: Uuid, kind: &str, message: &str) -> Result<(), StoreError>;

    /// Jobs in creation order after `after` (exclusive) matching `filter`. Looks at
    /// no more than `scan` jobs; returns the page and the position to continue from
    /// (`None` at the end).
    async fn job_list(
        &self,
        filter: &JobFilter,
        after: Option<u64>,
        limit: usize,
        scan: usize,
    ) -> Result<(Vec<Job>, Option<u64>), StoreError>;

    /// Active periodic templates, by next fire time.
    async fn job_templates(&self, limit: usize) -> Result<Vec<Job>, StoreError>;

    /// Record a node's heartbeat.
    async fn worker_heartbeat(&self, worker: &WorkerRecord) -> Result<(), StoreError>;

    /// Every node that has heartbeated.
    async fn worker_list(&self) -> Result<Vec<WorkerRecord>, StoreError>;

    /// Write and flush a probe record: fails when the store cannot be written.
    async fn probe(&self) -> Result<(), StoreError>;

    /// Fault injection for tests: while on, writes fail with
    /// [`StoreError::Injected`] and change nothing.
    fn refuse_writes(&self, on: bool);

    /// Record a check-in of a running job. Returns the updated job, or `None` if the
    /// job is no longer running (a late check-in is dropped).
    async fn job_checkin(
        &self,
        id: Uuid,
        message: &str,
        now: u64,
    ) -> Result<Option<Job>, StoreError>;

    /// Record the end of the running attempt and move the job on.
    async fn job_finish(
        &self,
        id: Uuid,
        end: AttemptEnd,
        next: Next,
        now: u64,
    ) -> Result<Job, StoreError>;

    /// [`Store::job_finish`], and in the same write [`Store::job_claim`] of the
    /// worker's next job (`None` when nothing is ready and fits): a worker that
    /// finished a job takes its next one in the same pass of the store's locks.
    /// Both are written or neither.
    async fn job_finish_then_claim(
        &self,
        id: Uuid,
        end: AttemptEnd,
        next: Next,
        now: u64,
        worker_id: &str,
        fits: &mut (dyn for<'j> FnMut(&'j Job) -> bool + Send),
    ) -> Result<(Job, Option<Job>), StoreError>;

    /// Stop or cancel a job (durable on return).
    async fn job_command(
        &self,
        id: Uuid,
        command: Command,
        now: u64,
    ) -> Result<(CommandEffect, Job), StoreError>;

    /// The retry action: a job in `error`, `stopped` or `cancelled` goes back to the
    /// queue with a fresh retry budget (durable on return).
    async fn job_retry(&self, id: Uuid, now: u64) -> Result<Job, StoreError>;

    /// Move scheduled jobs whose time has come to the queue; returns how many.
    async fn job_schedule_due(&self, now: u64, limit: usize) -> Result<usize, StoreError>;

    /// The earliest time a scheduled job is due.
    async fn job_next_due(&self) -> Result<Option<u64>, StoreError>;

    /// After a crash: every job still marked running gets its attempt closed as
    /// `interrupted` and goes back to the queue (or to its requested stop/cancel).
    /// Returns the ids requeued.
    async fn job_recover(&self, now: u64) -> Result<Vec<Uuid>, StoreError>;

    /// Link a sub-job to its upstream job.
    async fn job_add_execution(
        &self,
        upstream: Uuid,
        child: Uuid,
        now: u64,
    ) -> Result<(), StoreError>;

    /// Executions of `upstream` in launch order, after position `after` (exclusive),
    /// with their positions (the paging cursor).
    async fn job_executions(
        &self,
        upstream: Uuid,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Uuid)>, StoreError>;

    /// The latest `limit` executions of `upstream`, oldest first.
    async fn job_executions_latest(
        &self,
        upstream: Uuid,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError>;

    /// Periodic templates whose next fire time is at or before `now`.
    async fn job_due_templates(&self, now: u64, limit: usize) -> Result<Vec<Job>, StoreError>;

    /// Fire a periodic template due at `due`: insert `execution` unless a job with
    /// its id exists (the id derives from template and fire time, so a fire time runs
    /// at most once, across restarts and racing schedulers), and move the template
    /// to `next` (none: the schedule is over). Returns the inserted execution; `None`
    /// if the template was not due at `due` any more (another scheduler fired it, or
    /// it was stopped).
    async fn job_fire(
        &self,
        template: Uuid,
        due: u64,
        execution: Option<Job>,
        next: Option<u64>,
        now: u64,
    ) -> Result<Option<Job>, StoreError>;

    /// The first `limit` queued webhook deliveries, in queue order.
    async fn hook_list(&self, limit: usize) -> Result<Vec<HookRecord>, StoreError>;

    /// Remove a delivered (or abandoned) hook.
    async fn hook_done(&self, seq: u64) -> Result<(), StoreError>;

    /// Store a failed hook's new attempt count and retry time.
    async fn hook_retry(&self, hook: &HookRecord) -> Result<(), StoreError>;

    /// Changefeed records after id `after` (exclusive), oldest first.
    async fn change_list(&self, after: u64, limit: usize) -> Result<Vec<ChangeRecord>, StoreError>;

    /// The `limit` changefeed records before id `before` (exclusive; `u64::MAX`:
    /// the latest), oldest first.
    async fn change_list_before(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<ChangeRecord>, StoreError>;

    /// Whether a changefeed record with this id exists.
    async fn change_exists(&self, id: u64) -> Result<bool, StoreError>;

    /// Append a changefeed record that is not a job status change (plugins).
    async fn change_append(&self, record: ChangeRecord) -> Result<u64, StoreError>;

    /// The store's modify index (grows with every write); wakes on change.
    fn watch_index(&self) -> watch::Receiver<u64>;

    /// Notified as soon as jobs become claimable (one `notify_one` per job, up
    /// to [`READY_WAKES`]), before they are durable: a worker may claim a job
    /// whose submit is still waiting for its flush (a crash keeps a prefix of
    /// the store's operations, so the claim is never durable without the job),
    /// and waits for [`Store::job_durable`] before the guest starts.
    fn ready_signal(&self) -> Arc<tokio::sync::Notify>;

    /// Notified (`notify_one`: a permit waits if nobody does) whenever a
    /// webhook delivery is staged: the dispatcher sleeps on it instead of on
    /// [`Store::watch_index`], which changes with every write.
    fn hook_signal(&self) -> Arc<tokio::sync::Notify>;

    /// Jobs waiting in the ready queue.
    async fn queue_len(&self) -> Result<usize, StoreError>;

    /// Make every write so far durable.
    async fn flush(&self) -> Result<(), StoreError>;
}

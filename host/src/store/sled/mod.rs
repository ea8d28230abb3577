//! The embedded store: one sled tree (layout in `keys.rs`), writes serialized by
//! one lock so a check-then-write is atomic, each staged whole so a crash leaves
//! either all of a change or none of it; a writer thread applies what is staged
//! in sled batches (`staging.rs`). Acknowledged writes wait for a
//! group-committed flush.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use uuid::Uuid;

mod blobs;
mod changes;
mod claim;
mod commit;
mod due;
mod durable;
mod feeds;
mod finish;
mod ids;
mod index;
mod locks;
mod logs;
mod overlay_key;
mod queue_blocks;
mod ready;
mod scan;
mod staging;
mod wal;
mod write;

pub use self::wal::writer::LogWriter;

use self::index::Prior;
use self::staging::{Batch, Staging};
use super::keys;
use super::{
    AttemptEnd, ChangeRecord, CommandEffect, HookRecord, JobFilter, Next, Store, StoreError,
    WorkerRecord,
};
use crate::job::{Command, Job, Kind, Status, now_ms};

/// Per-job locks: enough that two workers' jobs rarely share one.
const STRIPES: usize = 64;

/// The sled-backed [`Store`].
#[derive(Debug)]
pub struct SledStore {
    write: Mutex<()>,
    staging: Arc<Staging>,
    /// The ready queue's index entries (`q` keys), kept in memory in step with
    /// every staged write: claims take the first one without reading sled.
    queue: ready::SharedQueue,
    /// The decoded records of the running jobs, in step with every staged
    /// write (`apply`): check-ins and finishes read them without decoding.
    running: Mutex<std::collections::HashMap<Uuid, Job>>,
    /// Per-job locks (by id), see [`SledStore::stripe`].
    stripes: Box<[Mutex<()>]>,
    /// See [`locks::Order`].
    order: Mutex<()>,
    /// Job sequences, modify indexes, changefeed ids (see `ids.rs`).
    ids: ids::Ids,
    /// Highest modify index staged so far, published after each write.
    staged_index: AtomicU64,
    index: watch::Sender<u64>,
    /// See [`Store::ready_signal`].
    ready: Arc<tokio::sync::Notify>,
    /// See [`Store::hook_signal`].
    hooks: Arc<tokio::sync::Notify>,
    /// Jobs whose queueing may not be durable yet: id -> the staging generation
    /// that queued it (see [`Store::job_durable`]). Entries are dropped once
    /// durable, when the next job is queued.
    unflushed: Mutex<std::collections::HashMap<Uuid, u64>>,
    /// Where the schedule's live keys begin (see `due.rs`).
    due: Mutex<due::DueFloor>,
    /// Fault injection: refuse every write (tests of health and of failure paths).
    refuse_writes: std::sync::atomic::AtomicBool,
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.staging.close();
    }
}

impl SledStore {
    /// Open (or create) the store under `dir`, and start its writer thread.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = ::sled::Config::new()
            .path(dir)
            .cache_capacity(64 * 1024 * 1024)
            .open()?;
        let committer = commit::Committer::open(db.clone(), dir)?;
        let queue = ready::open(&db)?;
        let ids = ids::Ids::open(&db)?;
        let staging = Staging::start(db, committer).map_err(|e| StoreError::Io(e.into()))?;
        Ok(Self {
            write: Mutex::new(()),
            staging,
            queue,
            running: Mutex::default(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            order: Mutex::new(()),
            ids,
            staged_index: AtomicU64::new(0),
            index: watch::channel(0).0,
            ready: Arc::default(),
            hooks: Arc::default(),
            unflushed: Mutex::default(),
            due: Mutex::default(),
            refuse_writes: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

#[async_trait::async_trait]
impl Store for SledStore {
    async fn job_insert_many(&self, mut jobs: Vec<Job>) -> Result<Vec<Job>, StoreError> {
        {
            let _w = self.lock();
            // Per job: its creation-order entry, record, change and queue or
            // schedule entry (a unique one also its unique key).
            let mut batch = Batch::with_capacity(5 * jobs.len(), 0, jobs.len());
            let mut seen = BTreeSet::new();
            for job in &mut jobs {
                if job.unique {
                    let key = keys::unique(&job.name, &job.params);
                    if let Some(v) = self.staging.get(&key)? {
                        let existing = keys::id_suffix(&v).unwrap_or_default();
                        let status = self.load(existing)?.map_or(Status::Pending, |j| j.status);
                        return Err(StoreError::Duplicate { existing, status });
                    }
                    if !seen.insert(key) {
                        return Err(StoreError::DuplicateInRequest {
                            name: job.name.clone(),
                        });
                    }
                }
                job.seq = self.next_id()?;
                job.created_seq = job.seq;
                job.event("Received", "accepted and stored");
            }
            let order = self.order();
            for job in &mut jobs {
                batch.insert(&keys::all(job.created_seq, job.id)[..], Vec::<u8>::new());
                self.stage(&order, &mut batch, None, job)?;
            }
            self.apply(batch, order)?;
        }
        self.staging.durable().await?;
        Ok(jobs)
    }

    async fn job_durable(&self, id: Uuid) -> Result<(), StoreError> {
        self.durable_job(id).await
    }

    async fn job_get(&self, id: Uuid) -> Result<Option<Job>, StoreError> {
        self.load(id)
    }

    async fn job_claim(
        &self,
        worker_id: &str,
        now: u64,
        fits: &mut (dyn for<'j> FnMut(&'j Job) -> bool + Send),
    ) -> Result<Option<Job>, StoreError> {
        let w = self.lock_yielding().await;
        self.claim(w, worker_id, now, fits)
    }

    async fn job_checkin(
        &self,
        id: Uuid,
        message: &str,
        now: u64,
    ) -> Result<Option<Job>, StoreError> {
        let result = self.update_running(id, |job| {
            job.check_in = Some(message.to_string());
            job.check_in_at = Some(now);
            job.event("Checkin", message);
            job.update_time = now;
            Ok(())
        });
        match result {
            Ok(job) => Ok(Some(job)),
            Err(StoreError::Transition { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn job_finish(
        &self,
        id: Uuid,
        end: AttemptEnd,
        next: Next,
        now: u64,
    ) -> Result<Job, StoreError> {
        self.update_running(id, |job| {
            finish::end_attempt(job, end, next, now);
            Ok(())
        })
    }

    async fn job_finish_then_claim(
        &self,
        id: Uuid,
        end: AttemptEnd,
        next: Next,
        now: u64,
        worker_id: &str,
        fits: &mut (dyn for<'j> FnMut(&'j Job) -> bool + Send),
    ) -> Result<(Job, Option<Job>), StoreError> {
        let w = self.lock_yielding().await;
        self.finish_then_claim(w, id, (end, next), now, worker_id, fits)
    }

    async fn job_command(
        &self,
        id: Uuid,
        command: Command,
        now: u64,
    ) -> Result<(CommandEffect, Job), StoreError> {
        let mut effect = CommandEffect::Delivered;
        let job = self.update(id, |job| {
            match job.status {
                Status::Pending | Status::Scheduled => {
                    job.status = command.final_status();
                    job.finished_at = Some(now);
                    job.command = Some(command);
                    job.event("Terminated", format!("{} before it ran", job.status));
                    effect = CommandEffect::Ended(job.status);
                }
                Status::Running => {
                    // The first command wins: a cancel after a stop stays a stop.
                    if job.command.is_none() {
                        job.command = Some(command);
                        let what = if command == Command::Stop {
                            "stop"
                        } else {
                            "cancel"
                        };
                        job.event(
                            "Killing",
                            format!(
                                "{what} requested; killed after the stop timeout if still running"
                            ),
                        );
                    }
                    effect = CommandEffect::Delivered;
                }
                done => effect = CommandEffect::AlreadyFinal(done),
            }
            job.update_time = now;
            Ok(())
        })?;
        self.staging.durable().await?;
        Ok((effect, job))
    }

    async fn job_retry(&self, id: Uuid, now: u64) -> Result<Job, StoreError> {
        let job = self.update(id, |job| {
            // A periodic template never runs itself: it cannot be retried either.
            if job.kind == Kind::Periodic
                || !matches!(
                    job.status,
                    Status::Error | Status::Stopped | Status::Cancelled
                )
            {
                return Err(StoreError::Transition {
                    id,
                    from: job.status,
                    to: Status::Pending,
                });
            }
            self.requeue(job)?;
            job.retries_left = job.retries_total;
            job.command = None;
            job.die_at = None;
            job.finished_at = None;
            job.update_time = now;
            Ok(())
        })?;
        self.staging.durable().await?;
        Ok(job)
    }

    async fn job_schedule_due(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        self.schedule_due(now, limit)
    }

    async fn job_next_due(&self) -> Result<Option<u64>, StoreError> {
        self.next_due()
    }

    async fn job_recover(&self, now: u64) -> Result<Vec<Uuid>, StoreError> {
        let ids: Vec<Uuid> = self
            .staging
            .scan_prefix(&[keys::RUNNING])
            .filter_map(|e| e.ok().and_then(|(k, _)| keys::id_suffix(&k)))
            .collect();
        let mut requeued = Vec::new();
        for id in ids {
            let job = self.update(id, |job| {
                if job.status != Status::Running {
                    return Ok(());
                }
                if let Some(a) = job.attempts.last_mut() {
                    a.finished_at = Some(now);
                    a.outcome = Some("interrupted".into());
                    a.message = Some("the server stopped while the attempt ran".into());
                }
                job.event("Restarting", "interrupted by a server restart");
                job.update_time = now;
                match job.command {
                    Some(c) => {
                        job.status = c.final_status();
                        job.finished_at = Some(now);
                    }
                    None => self.requeue(job)?,
                }
                Ok(())
            })?;
            if job.status == Status::Pending {
                requeued.push(id);
            }
        }
        self.staging.durable().await?;
        Ok(requeued)
    }

    async fn job_add_execution(
        &self,
        upstream: Uuid,
        child: Uuid,
        now: u64,
    ) -> Result<(), StoreError> {
        let _w = self.lock();
        // The upstream job may be running (a guest launching a sub-job).
        let _s = self.stripe(upstream);
        let mut job = self.must_load(upstream)?;
        let prior = Prior::of(&job);
        job.has_executions = true;
        job.update_time = now;
        job.event("Sub-job launched", child.to_string());
        let mut batch = Batch::default();
        batch.insert(
            &keys::execution(upstream, self.next_id()?)[..],
            child.as_bytes().to_vec(),
        );
        let order = self.order();
        self.stage(&order, &mut batch, Some(prior), &mut job)?;
        self.apply(batch, order)
    }

    async fn job_executions(
        &self,
        upstream: Uuid,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Uuid)>, StoreError> {
        feeds::job_executions(self, upstream, after, limit)
    }

    async fn job_executions_latest(
        &self,
        upstream: Uuid,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        feeds::job_executions_latest(self, upstream, limit)
    }

    async fn job_due_templates(&self, now: u64, limit: usize) -> Result<Vec<Job>, StoreError> {
        feeds::job_due_templates(self, now, limit)
    }

    async fn job_fire(
        &self,
        template: Uuid,
        due: u64,
        execution: Option<Job>,
        next: Option<u64>,
        now: u64,
    ) -> Result<Option<Job>, StoreError> {
        let inserted = {
            let _w = self.lock();
            let Some(mut t) = self.load(template)? else {
                return Ok(None);
            };
            if t.kind != Kind::Periodic || t.status != Status::Scheduled || t.run_at != Some(due) {
                return Ok(None);
            }
            let prior = Prior::of(&t);
            let mut batch = Batch::default();
            let mut inserted = None;
            let order = self.order();
            if let Some(mut exec) = execution
                && self.load(exec.id)?.is_none()
            {
                exec.seq = self.next_id()?;
                exec.created_seq = exec.seq;
                exec.event("Received", format!("periodic execution of {template}"));
                batch.insert(&keys::all(exec.created_seq, exec.id)[..], Vec::<u8>::new());
                self.stage(&order, &mut batch, None, &mut exec)?;
                batch.insert(
                    &keys::execution(template, self.next_id()?)[..],
                    exec.id.as_bytes().to_vec(),
                );
                t.has_executions = true;
                inserted = Some(exec);
            }
            t.run_at = next;
            t.update_time = now;
            if next.is_none() {
                // The schedule will never fire again.
                t.status = Status::Success;
                t.finished_at = Some(now);
            }
            self.stage(&order, &mut batch, Some(prior), &mut t)?;
            self.apply(batch, order)?;
            inserted
        };
        self.staging.durable().await?;
        Ok(inserted)
    }

    async fn hook_list(&self, limit: usize) -> Result<Vec<HookRecord>, StoreError> {
        feeds::hook_list(self, limit)
    }

    async fn hook_done(&self, seq: u64) -> Result<(), StoreError> {
        feeds::hook_done(self, seq)
    }

    async fn hook_retry(&self, hook: &HookRecord) -> Result<(), StoreError> {
        feeds::hook_retry(self, hook)
    }

    async fn change_list(&self, after: u64, limit: usize) -> Result<Vec<ChangeRecord>, StoreError> {
        changes::list_after(self, after, limit)
    }

    async fn change_append(&self, record: ChangeRecord) -> Result<u64, StoreError> {
        changes::append(self, record)
    }

    fn refuse_writes(&self, on: bool) {
        self.refuse_writes.store(on, Ordering::Release);
    }

    fn watch_index(&self) -> watch::Receiver<u64> {
        self.index.subscribe()
    }

    async fn job_event(&self, id: Uuid, kind: &str, message: &str) -> Result<(), StoreError> {
        self.update(id, |job| {
            job.event(kind, message);
            Ok(())
        })?;
        Ok(())
    }

    async fn job_list(
        &self,
        filter: &JobFilter,
        after: Option<u64>,
        limit: usize,
        scan: usize,
    ) -> Result<(Vec<Job>, Option<u64>), StoreError> {
        feeds::job_list(self, filter, after, limit, scan)
    }

    async fn job_templates(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        feeds::job_templates(self, limit)
    }

    async fn worker_heartbeat(&self, worker: &WorkerRecord) -> Result<(), StoreError> {
        feeds::worker_heartbeat(self, worker)
    }

    async fn worker_list(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        feeds::worker_list(self)
    }

    async fn probe(&self) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.insert(&[keys::META, b'p'][..], &now_ms().to_be_bytes()[..]);
        self.apply(batch, self.order())?;
        Ok(self.staging.durable().await?)
    }

    async fn change_list_before(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<ChangeRecord>, StoreError> {
        changes::list_before(self, before, limit)
    }

    async fn change_exists(&self, id: u64) -> Result<bool, StoreError> {
        changes::exists(self, id)
    }

    fn ready_signal(&self) -> Arc<tokio::sync::Notify> {
        self.ready.clone()
    }

    fn hook_signal(&self) -> Arc<tokio::sync::Notify> {
        self.hooks.clone()
    }

    async fn queue_len(&self) -> Result<usize, StoreError> {
        // Counted once the keys stored before the open are all loaded.
        loop {
            {
                let queue = self.lock_queue();
                if queue.is_loaded() {
                    return Ok(queue.len());
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(self.staging.durable().await?)
    }
}

#[cfg(test)]
pub(super) mod tests;

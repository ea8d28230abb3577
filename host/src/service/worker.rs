//! The worker pool: each worker claims the next ready job, runs one attempt in the
//! engine, and records how it ended: success, a final failure, a retry after a
//! back-off, or the stop/cancel an operator asked for.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::JobService;
use super::host::AttemptHost;
use super::retry::backoff;
use crate::job::{Job, Status, now_ms};
use crate::runtime::{
    AttemptReport, AttemptSpec, Control, KillReason, LogLevel, OpCommand, Outcome, Plugin,
};
use crate::store::{AttemptEnd, Next};

/// How long an idle worker sleeps before looking at the queue again even if
/// nothing woke it (a safety net; wake-ups normally come from submissions).
const IDLE_POLL: Duration = Duration::from_secs(1);

impl JobService {
    /// Start the configured number of workers.
    pub fn start_workers(&self) -> Vec<JoinHandle<()>> {
        (0..self.config().workers)
            .map(|n| {
                let service = self.clone();
                let worker_id = format!("{}/w{n}", self.node_id());
                tokio::spawn(async move { service.worker_loop(worker_id).await })
            })
            .collect()
    }

    async fn worker_loop(self, worker_id: String) {
        let mut shutdown = self.shutting_down();
        while !*shutdown.borrow() {
            let control = Control::new();
            // Called under the store's write lock for the job about to be claimed:
            // reserve its capacity and register its control there, so a stop that
            // follows the claim always finds the control (no re-read needed).
            let mut reserved = None;
            let mut fits = |job: &Job| {
                let fits = self.inner.capacity.try_reserve(&job.capacity_map);
                if fits {
                    deliver(&control, job.command);
                    self.lock_running().insert(job.id, control.clone());
                    reserved = Some(job.capacity_map.clone());
                }
                fits
            };
            let claimed = self
                .store()
                .job_claim(&worker_id, now_ms(), &mut fits)
                .await;
            if let Err(e) = &claimed {
                // The claim's write failed after `fits` said yes: undo both.
                tracing::error!(worker = %worker_id, error = %e, "cannot claim a job");
                self.lock_running().retain(|_, c| !c.same(&control));
                if let Some(needs) = reserved.take() {
                    self.inner.capacity.release(&needs);
                }
            }
            match claimed {
                Ok(Some(job)) => {
                    let needs = job.capacity_map.clone();
                    self.execute(job, control).await;
                    self.inner.capacity.release(&needs);
                    // A job that did not fit may fit now.
                    self.inner.ready.notify_one();
                }
                Ok(None) => {
                    tokio::select! {
                        () = self.inner.ready.notified() => {}
                        _ = shutdown.changed() => {}
                        () = tokio::time::sleep(IDLE_POLL) => {}
                    }
                }
                Err(_) => tokio::time::sleep(IDLE_POLL).await,
            }
        }
    }

    /// Run one claimed attempt to its end and record it.
    #[tracing::instrument(skip_all, fields(job = %job.id, name = %job.name))]
    async fn execute(&self, job: Job, control: Control) {
        let id = job.id;
        let attempt = job.last_attempt().map_or(1, |a| a.number);
        let log = self.logs().writer(id);
        let Some(plugin) = self.registry().get(&job.name) else {
            let message = format!("no loaded plugin provides job name {:?}", job.name);
            log.line(LogLevel::Error, crate::runtime::LogStream::Host, &message);
            self.lock_running().remove(&id);
            let end = AttemptEnd {
                outcome: "failed".into(),
                message: Some(message),
                plugin_digest: String::new(),
                startup_us: 0,
                duration_us: 0,
                peak_memory: 0,
                fuel_used: None,
                decision: "the plugin is not loaded".into(),
            };
            let next = match control.command() {
                OpCommand::None if job.retries_left > 0 => Next::RetryAt(now_ms() + 10_000),
                OpCommand::None => Next::Final(Status::Error),
                c => Next::Final(final_of(c)),
            };
            self.record(&job, end, next).await;
            return;
        };

        // Woken as soon as the job was staged: its guest starts only once its
        // submit is durable, so a crash cannot erase a job that has run.
        let waited = std::time::Instant::now();
        if let Err(e) = self.store().job_durable(id).await {
            // The store cannot write: the job stays running in it and is
            // recovered (run again) when the node restarts.
            tracing::error!(job = %id, error = %e, "the job's submit is not durable; not starting it");
            log.line(
                LogLevel::Error,
                crate::runtime::LogStream::Host,
                &e.to_string(),
            );
            self.lock_running().remove(&id);
            return;
        }
        let durability_wait = waited.elapsed();
        let host = AttemptHost::new(self.clone(), id, log);
        let spec = AttemptSpec {
            job_id: id.to_string(),
            attempt,
            upstream_job_id: job.upstream_job_id.map(|u| u.to_string()),
            params: job.params.clone(),
            deadline: job.deadline_ms.map(Duration::from_millis),
            stop_timeout: job.stop_timeout_ms.map(Duration::from_millis),
            fuel: None,
        };
        let report = self
            .runtime()
            .run(&plugin, &spec, host.clone(), control.clone())
            .await;
        // The guest is gone: wait for its check-ins to be written, so none lands
        // after the job's final state.
        host.finish().await;
        self.lock_running().remove(&id);

        let (next, decision) = self
            .next_step(&job, &plugin, &report, control.command())
            .await;
        let (outcome, message) = outcome_fields(&report.outcome);
        let end = AttemptEnd {
            outcome: outcome.into(),
            message,
            plugin_digest: report.plugin_digest.clone(),
            // From the claim to the guest's call: the wait above, then the
            // fresh instance.
            startup_us: (durability_wait + report.startup).as_micros() as u64,
            duration_us: report.duration.as_micros() as u64,
            peak_memory: report.peak_memory,
            fuel_used: report.fuel_used,
            decision,
        };
        self.record(&job, end, next).await;
    }

    async fn record(&self, job: &Job, end: AttemptEnd, next: Next) {
        match self.store().job_finish(job.id, end, next, now_ms()).await {
            Ok(_) => {
                self.inner
                    .attempts_recorded
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if matches!(next, Next::RetryAt(_)) {
                    self.inner.scheduled.notify_one();
                }
            }
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "cannot record the end of an attempt")
            }
        }
    }

    /// What follows an attempt: its final status, or a retry after a back-off;
    /// with the reason (the `Restarting` / `Not Restarting` event).
    async fn next_step(
        &self,
        job: &Job,
        plugin: &Plugin,
        report: &AttemptReport,
        command: OpCommand,
    ) -> (Next, String) {
        let failure = match &report.outcome {
            Outcome::Success => return (Next::Final(Status::Success), String::new()),
            Outcome::Stopped => return (Next::Final(Status::Stopped), String::new()),
            Outcome::Cancelled => return (Next::Final(Status::Cancelled), String::new()),
            Outcome::Killed {
                reason: KillReason::StopTimeout,
            } => return (Next::Final(final_of(command)), String::new()),
            // DTR: a job past its deadline is killed and marked error.
            Outcome::Killed {
                reason: KillReason::Deadline,
            } => {
                return (
                    Next::Final(Status::Error),
                    "deadline exceeded: not retried".into(),
                );
            }
            Outcome::Failed { message } | Outcome::Trapped { message } => message.clone(),
            Outcome::Killed { reason } => reason.to_string(),
        };
        // A job asked to stop that fails on its way out ends as asked.
        if command != OpCommand::None {
            return (Next::Final(final_of(command)), String::new());
        }
        if job.retries_left == 0 {
            let total = job.retries_total + 1;
            return (
                Next::Final(Status::Error),
                format!("out of retries after {total} attempts"),
            );
        }
        let attempt = job.last_attempt().map_or(1, |a| a.number);
        let retry = match self.runtime().should_retry(plugin, &failure, attempt).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "should-retry failed; retrying by default");
                true
            }
        };
        if !retry {
            return (
                Next::Final(Status::Error),
                "the plugin's should-retry refused a retry".into(),
            );
        }
        let retry_number = job.retries_total - job.retries_left + 1;
        let wait = backoff(plugin.info(), retry_number);
        let why = format!(
            "retry {retry_number} of {} in {}",
            job.retries_total,
            humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
        );
        (Next::RetryAt(now_ms() + wait.as_millis() as u64), why)
    }
}

fn deliver(control: &Control, command: Option<crate::job::Command>) {
    match command {
        Some(crate::job::Command::Stop) => control.stop(),
        Some(crate::job::Command::Cancel) => control.cancel(),
        None => {}
    }
}

/// The final status of a job that was asked to stop or cancel.
fn final_of(command: OpCommand) -> Status {
    match command {
        OpCommand::Cancel => Status::Cancelled,
        _ => Status::Stopped,
    }
}

fn outcome_fields(outcome: &Outcome) -> (&'static str, Option<String>) {
    match outcome {
        Outcome::Success => ("success", None),
        Outcome::Failed { message } => ("failed", Some(message.clone())),
        Outcome::Stopped => ("stopped", None),
        Outcome::Cancelled => ("cancelled", None),
        Outcome::Trapped { message } => ("trapped", Some(message.clone())),
        Outcome::Killed { reason } => ("killed", Some(reason.to_string())),
    }
}

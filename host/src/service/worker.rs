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
        // The job the last finish claimed along with it, if any: it runs even
        // if shutdown began meanwhile, as a job claimed just before it would.
        let mut next: Option<(Job, Control)> = None;
        loop {
            let claimed = match next.take() {
                Some(claimed) => Ok(Some(claimed)),
                None if *shutdown.borrow() => return,
                None => self.claim(&worker_id).await,
            };
            match claimed {
                Ok(Some((job, control))) => {
                    next = self.execute(job, control, &worker_id).await;
                }
                Ok(None) => {
                    tokio::select! {
                        () = self.inner.ready.notified() => {}
                        _ = shutdown.changed() => {}
                        () = tokio::time::sleep(IDLE_POLL) => {}
                    }
                }
                Err(()) => tokio::time::sleep(IDLE_POLL).await,
            }
        }
    }

    /// Claim the next ready job that fits, with its control registered and its
    /// capacity reserved. `Err` once logged.
    async fn claim(&self, worker_id: &str) -> Result<Option<(Job, Control)>, ()> {
        let mut claiming = Claiming::new(self);
        let claimed = self
            .store()
            .job_claim(worker_id, now_ms(), &mut |job: &Job| claiming.fits(job))
            .await;
        claiming.settle(claimed).map_err(|e| {
            tracing::error!(worker = %worker_id, error = %e, "cannot claim a job");
        })
    }

    /// Run one claimed attempt to its end and record it. Its capacity is
    /// released before the end is recorded; the job the worker claimed in the
    /// same write, if any, is returned.
    // At `debug`, as `Runtime::run`'s span: at `info` the two cost ~2 µs a job.
    #[tracing::instrument(level = "debug", skip_all, fields(job = %job.id, name = %job.name))]
    async fn execute(&self, job: Job, control: Control, worker_id: &str) -> Option<(Job, Control)> {
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
            return self.record(&job, end, next, worker_id).await;
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
            self.release_capacity(&job);
            return None;
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
        // Boxed, as is `retry_step` below: each would otherwise be laid out
        // inside this future (16.6 KB with both, 2.1 KB without), which is
        // copied whole when it is created, every job.
        let report = Box::pin(
            self.runtime()
                .run(&plugin, &spec, host.clone(), control.clone()),
        )
        .await;
        // The guest is gone: wait for its check-ins to be written, so none lands
        // after the job's final state.
        host.finish().await;
        self.lock_running().remove(&id);

        let (next, decision) = match settled(&job, &report, control.command()) {
            Ok(decided) => decided,
            Err(failure) => Box::pin(self.retry_step(&job, &plugin, &failure)).await,
        };
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
        self.record(&job, end, next, worker_id).await
    }

    /// Give `job`'s capacity back to the node; a queued job that did not fit
    /// may fit now.
    fn release_capacity(&self, job: &Job) {
        self.inner.capacity.release(&job.capacity_map);
        self.inner.ready.notify_one();
    }

    /// Record the end of `job`'s attempt after releasing its capacity, and
    /// (unless the node is shutting down) claim the worker's next job in the
    /// same write.
    async fn record(
        &self,
        job: &Job,
        end: AttemptEnd,
        next: Next,
        worker_id: &str,
    ) -> Option<(Job, Control)> {
        self.release_capacity(job);
        let recorded = if *self.shutting_down().borrow() {
            let finished = self.store().job_finish(job.id, end, next, now_ms()).await;
            finished.map(|_| None)
        } else {
            let mut claiming = Claiming::new(self);
            let result = self
                .store()
                .job_finish_then_claim(job.id, end, next, now_ms(), worker_id, &mut |j: &Job| {
                    claiming.fits(j)
                })
                .await;
            claiming.settle(result.map(|(_, claimed)| claimed))
        };
        match recorded {
            Ok(claimed) => {
                self.inner
                    .attempts_recorded
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Next::RetryAt(at) = next {
                    self.inner.scheduled.due_at(at);
                }
                claimed
            }
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "cannot record the end of an attempt");
                None
            }
        }
    }

    /// The next step of a failed attempt that may be retried: the plugin's
    /// `should-retry` decides whether, then the back-off sets when.
    async fn retry_step(&self, job: &Job, plugin: &Plugin, failure: &str) -> (Next, String) {
        let attempt = job.last_attempt().map_or(1, |a| a.number);
        let retry = match self.runtime().should_retry(plugin, failure, attempt).await {
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

/// What follows an attempt, when it is settled without asking the plugin: its
/// final status, with the reason (the `Not Restarting` event) when it failed.
/// `Err(failure)`: a failure that may be retried ([`JobService::retry_step`]).
/// (Kept out of the async path: the attempts that succeed, nearly all of them,
/// build no future for it.)
fn settled(
    job: &Job,
    report: &AttemptReport,
    command: OpCommand,
) -> Result<(Next, String), String> {
    let failure = match &report.outcome {
        Outcome::Success => return Ok((Next::Final(Status::Success), String::new())),
        Outcome::Stopped => return Ok((Next::Final(Status::Stopped), String::new())),
        Outcome::Cancelled => return Ok((Next::Final(Status::Cancelled), String::new())),
        Outcome::Killed {
            reason: KillReason::StopTimeout,
        } => return Ok((Next::Final(final_of(command)), String::new())),
        // DTR: a job past its deadline is killed and marked error.
        Outcome::Killed {
            reason: KillReason::Deadline,
        } => {
            return Ok((
                Next::Final(Status::Error),
                "deadline exceeded: not retried".into(),
            ));
        }
        Outcome::Failed { message } | Outcome::Trapped { message } => message.clone(),
        Outcome::Killed { reason } => reason.to_string(),
    };
    // A job asked to stop that fails on its way out ends as asked.
    if command != OpCommand::None {
        return Ok((Next::Final(final_of(command)), String::new()));
    }
    if job.retries_left == 0 {
        let total = job.retries_total + 1;
        return Ok((
            Next::Final(Status::Error),
            format!("out of retries after {total} attempts"),
        ));
    }
    Err(failure)
}

/// What a claim reserves for the job it takes, from inside the store's write
/// lock: the job's control, registered where a stop that follows the claim
/// finds it (no re-read needed), and its capacity.
struct Claiming<'s> {
    service: &'s JobService,
    control: Control,
    reserved: Option<std::collections::BTreeMap<String, u32>>,
}

impl<'s> Claiming<'s> {
    fn new(service: &'s JobService) -> Self {
        Self {
            service,
            control: Control::new(),
            reserved: None,
        }
    }

    /// The claim's `fits`: whether `job` fits the node's free capacity, which
    /// it then reserves.
    fn fits(&mut self, job: &Job) -> bool {
        let fits = self.service.inner.capacity.try_reserve(&job.capacity_map);
        if fits {
            deliver(&self.control, job.command);
            self.service
                .lock_running()
                .insert(job.id, self.control.clone());
            self.reserved = Some(job.capacity_map.clone());
        }
        fits
    }

    /// The claimed job with its control; or, when the claim's write failed
    /// after `fits` said yes, the registration and the reservation undone.
    fn settle<E>(self, claimed: Result<Option<Job>, E>) -> Result<Option<(Job, Control)>, E> {
        match claimed {
            Ok(job) => Ok(job.map(|job| (job, self.control))),
            Err(e) => {
                let control = &self.control;
                self.service.lock_running().retain(|_, c| !c.same(control));
                if let Some(needs) = &self.reserved {
                    self.service.inner.capacity.release(needs);
                }
                Err(e)
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Kind;

    fn report(outcome: Outcome) -> AttemptReport {
        AttemptReport {
            outcome,
            plugin: "p".into(),
            plugin_digest: String::new(),
            startup: Duration::ZERO,
            duration: Duration::ZERO,
            peak_memory: 0,
            fuel_used: None,
        }
    }

    fn job(retries_left: u32) -> Job {
        let mut job = Job::new(
            uuid::Uuid::now_v7(),
            "p".into(),
            Kind::Generic,
            "{}".into(),
            Status::Running,
            0,
        );
        job.retries_total = 2;
        job.retries_left = retries_left;
        job
    }

    fn failed() -> Outcome {
        Outcome::Failed {
            message: "boom".into(),
        }
    }

    #[test]
    fn only_a_retryable_failure_is_left_to_the_plugin() {
        let none = OpCommand::None;
        let final_status = |r: Result<(Next, String), String>| match r {
            Ok((Next::Final(status), why)) => (status, why),
            other => panic!("not settled as final: {other:?}"),
        };
        assert_eq!(
            final_status(settled(&job(2), &report(Outcome::Success), none)),
            (Status::Success, String::new())
        );
        let deadline = Outcome::Killed {
            reason: KillReason::Deadline,
        };
        assert_eq!(
            final_status(settled(&job(2), &report(deadline), none)),
            (Status::Error, "deadline exceeded: not retried".into())
        );
        // A job asked to stop that fails on its way out ends as asked.
        assert_eq!(
            final_status(settled(&job(2), &report(failed()), OpCommand::Stop)).0,
            Status::Stopped
        );
        assert_eq!(
            final_status(settled(&job(0), &report(failed()), none)),
            (Status::Error, "out of retries after 3 attempts".into())
        );
        assert_eq!(
            settled(&job(1), &report(failed()), none).map(|_| ()),
            Err("boom".to_string())
        );
    }
}

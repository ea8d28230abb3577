//! The job domain: kinds, statuses, the stored job record, and the one place where
//! status transitions are checked. Pure data, no I/O.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job's kind (Harbor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Kind {
    /// Run as soon as a worker is free.
    Generic,
    /// Run once, `schedule_delay` seconds after submission.
    Scheduled,
    /// A template that creates an execution at every cron fire time.
    Periodic,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "Generic" => Some(Kind::Generic),
            "Scheduled" => Some(Kind::Scheduled),
            "Periodic" => Some(Kind::Periodic),
            _ => None,
        }
    }
}

/// A job's status (Harbor's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In the ready queue.
    Pending,
    /// Waiting for its time: a Scheduled job, or a failed one waiting to retry.
    Scheduled,
    Running,
    Stopped,
    Cancelled,
    /// Failed for good (out of retries, or not retryable).
    Error,
    Success,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Scheduled => "scheduled",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Cancelled => "cancelled",
            Status::Error => "error",
            Status::Success => "success",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Scheduled,
            Status::Running,
            Status::Stopped,
            Status::Cancelled,
            Status::Error,
            Status::Success,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// A final status: the job will not run again unless retried by an operator.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Stopped | Status::Cancelled | Status::Error | Status::Success
        )
    }

    /// Whether a job may go from `self` to `to`. Every status change goes through
    /// this check (in the store), so no code path can, say, revive a successful job
    /// or turn a stopped job into a success.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        match (self, to) {
            // Claimed by a worker.
            (Pending, Running) => true,
            // Due (schedule reached, retry back-off over).
            (Scheduled, Pending) => true,
            // Ended before running.
            (Pending | Scheduled, Stopped | Cancelled) => true,
            // An attempt ended: for good, or waiting to retry, or requeued after a
            // crash.
            (Running, Success | Error | Stopped | Cancelled | Scheduled | Pending) => true,
            // The retry action, on a job that did not succeed.
            (Error | Stopped | Cancelled, Pending) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A stop or cancel an operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Stop,
    Cancel,
}

impl Command {
    /// The final status a job asked to do this ends in.
    pub fn final_status(self) -> Status {
        match self {
            Command::Stop => Status::Stopped,
            Command::Cancel => Status::Cancelled,
        }
    }
}

/// One attempt's record, kept in the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub id: Uuid,
    /// 1 for the first attempt.
    pub number: u32,
    /// The attempt this one retries (DTR's `retryFromID`).
    pub retry_from_id: Option<Uuid>,
    pub worker_id: String,
    /// Unix milliseconds.
    pub started_at: u64,
    pub finished_at: Option<u64>,
    /// `success`, `failed`, `stopped`, `cancelled`, `trapped`, `killed`,
    /// `interrupted` (the process died while it ran), or none while running.
    pub outcome: Option<String>,
    pub message: Option<String>,
    pub plugin_digest: String,
    /// Microseconds from the claim to the guest's `run` call: waiting for the
    /// job's own submit to be durable, then the fresh instance.
    pub startup_us: Option<u64>,
    pub duration_us: Option<u64>,
    pub peak_memory: Option<u64>,
    pub fuel_used: Option<u64>,
}

/// The stored job. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: Uuid,
    pub name: String,
    pub kind: Kind,
    /// The parameters as the canonical JSON text of an object (never re-parsed on
    /// the hot path).
    pub params: String,
    pub unique: bool,
    pub priority: i32,
    /// Position in the ready queue among jobs of the same priority (assigned each
    /// time the job is queued).
    pub seq: u64,
    /// Position in creation order (the jobs list's cursor); set on insert.
    #[serde(default)]
    pub created_seq: u64,
    pub status: Status,
    pub status_hook: Option<String>,
    pub schedule_delay: Option<u64>,
    pub cron_spec: Option<String>,
    /// When it runs (Scheduled) or retries (after a failure).
    pub run_at: Option<u64>,
    pub enqueue_time: u64,
    pub update_time: u64,
    pub check_in: Option<String>,
    pub check_in_at: Option<u64>,
    pub die_at: Option<u64>,
    pub upstream_job_id: Option<Uuid>,
    /// Whether any sub-job or periodic execution names this job upstream (the
    /// executions themselves are in the store's executions index).
    pub has_executions: bool,
    pub capacity_map: BTreeMap<String, u32>,
    /// Per-attempt wall-clock limit, milliseconds.
    pub deadline_ms: Option<u64>,
    pub stop_timeout_ms: Option<u64>,
    /// Failed attempts allowed (the plugin's `max-fails`).
    pub retries_total: u32,
    pub retries_left: u32,
    pub attempts: Vec<Attempt>,
    /// A stop or cancel requested while the job was running.
    pub command: Option<Command>,
    /// Bumped by every change; a status hook receiver drops older revisions.
    pub revision: u64,
    /// Position of the last change in the store's global order (blocking queries).
    pub modify_index: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// The latest task events (Nomad), oldest first.
    #[serde(default)]
    pub events: Vec<TaskEvent>,
}

/// Events kept per job.
pub const MAX_EVENTS: usize = 10;

/// A typed event in a job's life (Nomad's task events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskEvent {
    /// `Received`, `Started`, `Checkin`, `Killing`, `Killed`, `Terminated`,
    /// `Restarting`, `Not Restarting`, `Sub-job launched`, `Failed Validation`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix nanoseconds.
    #[schema(value_type = u64)]
    pub time: u128,
    pub message: String,
}

/// Unix time in nanoseconds.
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

impl Job {
    /// A job that has never run, with default settings (no hook, no schedule,
    /// priority 0, no capacity needs, no retries): callers set what differs.
    pub fn new(
        id: Uuid,
        name: String,
        kind: Kind,
        params: String,
        status: Status,
        now: u64,
    ) -> Job {
        Job {
            id,
            name,
            kind,
            params,
            unique: false,
            priority: 0,
            seq: 0,
            created_seq: 0,
            status,
            status_hook: None,
            schedule_delay: None,
            cron_spec: None,
            run_at: None,
            enqueue_time: now,
            update_time: now,
            check_in: None,
            check_in_at: None,
            die_at: None,
            upstream_job_id: None,
            has_executions: false,
            capacity_map: BTreeMap::new(),
            deadline_ms: None,
            stop_timeout_ms: None,
            retries_total: 0,
            retries_left: 0,
            attempts: Vec::new(),
            command: None,
            revision: 1,
            modify_index: 0,
            started_at: None,
            finished_at: None,
            events: Vec::new(),
        }
    }

    /// Record an event, keeping the latest [`MAX_EVENTS`].
    pub fn event(&mut self, kind: &str, message: impl Into<String>) {
        if self.events.len() >= MAX_EVENTS {
            self.events.remove(0);
        }
        self.events.push(TaskEvent {
            kind: kind.to_string(),
            time: now_ns(),
            message: message.into(),
        });
    }

    /// The attempt running now or last run.
    pub fn last_attempt(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    /// The worker of the running or last attempt.
    pub fn worker_id(&self) -> Option<&str> {
        self.last_attempt().map(|a| a.worker_id.as_str())
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    const ALL: [Status; 7] = [
        Pending, Scheduled, Running, Stopped, Cancelled, Error, Success,
    ];

    #[test]
    fn no_final_status_becomes_another_final_status() {
        for from in ALL.into_iter().filter(|s| s.is_final()) {
            for to in ALL.into_iter().filter(|s| s.is_final()) {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn success_is_forever_and_only_failures_are_retried() {
        assert!(ALL.iter().all(|&to| !Success.can_become(to)));
        for from in [Error, Stopped, Cancelled] {
            assert!(from.can_become(Pending));
            assert!(!from.can_become(Running), "a retry goes through the queue");
        }
    }

    #[test]
    fn a_job_runs_only_from_the_queue() {
        for from in ALL {
            assert_eq!(from.can_become(Running), from == Pending, "{from}");
        }
    }

    #[test]
    fn names_round_trip() {
        for s in ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("done"), None);
        assert_eq!(Kind::parse("Periodic"), Some(Kind::Periodic));
        assert_eq!(Kind::parse("generic"), None);
    }
}

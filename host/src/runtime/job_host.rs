//! What a running guest can reach, as the job service provides it.
//!
//! The engine serves the WIT imports; each one lands on a [`JobHost`] (check-ins,
//! log lines, sub-jobs, properties) or on the attempt's [`Control`] (op-commands).
//! The engine owns `Control` because it must also *act* on a stop: once a stop or
//! cancel is requested, the kill clock (`stop_timeout`) starts even if the guest
//! never polls.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

/// A boxed future, for the one async import.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Severity of a job log line (the WIT `level`, plus the level given to captured
/// stdout/stderr lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
    Fatal,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
            LogLevel::Fatal => "FATAL",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// The guest's `host.log` import.
    Logger,
    /// The guest's stdout (level `INFO`).
    Stdout,
    /// The guest's stderr (level `ERROR`).
    Stderr,
    /// The host itself, about this attempt (e.g. dropped lines).
    Host,
}

/// A sub-job request from a running guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjobRequest {
    /// Job name of a loaded plugin.
    pub name: String,
    /// Parameters, a JSON object as text (not yet checked: the launcher validates).
    pub parameters: String,
}

/// The job service's side of a running attempt. Calls come from the guest's thread
/// while it runs: they must return quickly and never block (queue the work).
pub trait JobHost: Send + Sync + 'static {
    /// A check-in message from the guest (`host.checkin`).
    fn checkin(&self, message: &str);
    /// One log line, already bounded by the attempt's log budget.
    fn log(&self, level: LogLevel, stream: LogStream, message: &str);
    /// A context property (`host.get`).
    fn property(&self, key: &str) -> Option<String>;
    /// Create a sub-job; the answer is the new job's id, or an error the guest sees.
    fn launch_subjob(&self, request: SubjobRequest) -> BoxFuture<'static, Result<String, String>>;
}

/// The [`JobHost`] of calls outside a job (`describe`, `max-fails`, `validate`,
/// `should-retry`): log lines go to tracing, check-ins are ignored, sub-jobs are
/// refused and no property is set, so these calls depend on their arguments only.
#[derive(Debug, Clone, Copy, Default)]
pub struct DetachedHost;

impl JobHost for DetachedHost {
    fn checkin(&self, _message: &str) {}

    fn log(&self, level: LogLevel, stream: LogStream, message: &str) {
        tracing::debug!(%level, ?stream, message, "plugin output outside a job");
    }

    fn property(&self, _key: &str) -> Option<String> {
        None
    }

    fn launch_subjob(&self, _request: SubjobRequest) -> BoxFuture<'static, Result<String, String>> {
        Box::pin(async { Err("sub-jobs can only be launched from run".to_string()) })
    }
}

/// An operator's command for a running attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCommand {
    None,
    Stop,
    Cancel,
}

/// The op-command channel of one attempt: the job service calls [`Control::stop`]
/// or [`Control::cancel`]; the guest reads it through `host.op-command`; the engine
/// starts the kill clock. The first command wins: a cancel after a stop stays a stop.
///
/// One is made per attempt, so it is one small allocation: the command in an
/// atomic and a [`Notify`] for the engine's wait (a `watch` channel cost two
/// allocations, one with eight notifiers, per job).
#[derive(Debug, Clone)]
pub struct Control {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// An [`OpCommand`] as its `u8` (see [`OpCommand::from_u8`]).
    command: AtomicU8,
    requested: Notify,
}

impl OpCommand {
    const fn as_u8(self) -> u8 {
        match self {
            OpCommand::None => 0,
            OpCommand::Stop => 1,
            OpCommand::Cancel => 2,
        }
    }

    const fn from_u8(v: u8) -> Self {
        match v {
            1 => OpCommand::Stop,
            2 => OpCommand::Cancel,
            _ => OpCommand::None,
        }
    }
}

impl Default for Control {
    fn default() -> Self {
        Self::new()
    }
}

impl Control {
    pub fn new() -> Self {
        Self {
            shared: Arc::default(),
        }
    }

    /// Ask the job to stop (it ends `stopped`).
    pub fn stop(&self) {
        self.send(OpCommand::Stop);
    }

    /// Ask the job to give up (it ends `cancelled`).
    pub fn cancel(&self) {
        self.send(OpCommand::Cancel);
    }

    fn send(&self, command: OpCommand) {
        let first = self.shared.command.compare_exchange(
            OpCommand::None.as_u8(),
            command.as_u8(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if first.is_ok() {
            self.shared.requested.notify_waiters();
        }
    }

    /// Whether `other` is a handle on the same control.
    pub fn same(&self, other: &Control) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The current command.
    pub fn command(&self) -> OpCommand {
        OpCommand::from_u8(self.shared.command.load(Ordering::Acquire))
    }

    /// Resolves once a stop or cancel has been requested.
    pub(crate) async fn requested(&self) -> OpCommand {
        loop {
            let notified = self.shared.requested.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the command is read: a command sent after the
            // read wakes this waiter.
            notified.as_mut().enable();
            let command = self.command();
            if command != OpCommand::None {
                return command;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_command_wins() {
        let c = Control::new();
        assert_eq!(c.command(), OpCommand::None);
        c.stop();
        c.cancel();
        assert_eq!(c.command(), OpCommand::Stop);
    }

    #[tokio::test]
    async fn requested_resolves_on_command() {
        let c = Control::new();
        let c2 = c.clone();
        let waiter = tokio::spawn(async move { c2.requested().await });
        // The test's runtime has one thread: the waiter runs, finds no
        // command and sleeps on the notification before the cancel is sent.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "resolved with no command");
        c.cancel();
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
        assert_eq!(
            woken.expect("the waiter was woken").expect("join"),
            OpCommand::Cancel
        );
    }

    #[tokio::test]
    async fn a_command_sent_before_the_wait_is_seen_by_every_handle() {
        let c = Control::new();
        let other = c.clone();
        assert!(c.same(&other) && !c.same(&Control::new()));
        other.stop();
        // No notification is pending for a waiter that starts now: it must
        // read the command itself.
        let seen = tokio::time::timeout(std::time::Duration::from_secs(5), c.requested()).await;
        assert_eq!(seen.expect("the stop was already there"), OpCommand::Stop);
        assert_eq!(c.command(), OpCommand::Stop);
    }
}

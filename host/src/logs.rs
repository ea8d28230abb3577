//! Job logs (Harbor's job loggers): the `FILE` logger writes one file per job
//! under `<data_dir>/logs`, one line per guest log line, stdout/stderr line or
//! host note, with time and level; `STD_OUTPUT` copies lines to the server's log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use uuid::Uuid;

use crate::config::{JobLoggers, Level};
use crate::runtime::{LogLevel, LogStream};

/// The job logs of one data directory.
#[derive(Debug, Clone)]
pub struct JobLogs {
    /// Shared with every [`LogWriter`]: a writer is made per attempt, and most
    /// never write a line, so it builds its file's path only when it does.
    dir: Arc<Path>,
    loggers: JobLoggers,
}

impl JobLogs {
    pub fn open(data_dir: &Path, loggers: JobLoggers) -> std::io::Result<Self> {
        let dir = data_dir.join("logs");
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir: dir.into(),
            loggers,
        })
    }

    pub fn path(&self, id: Uuid) -> PathBuf {
        log_path(&self.dir, id)
    }

    /// A writer appending to job `id`'s log. The file is created by the first
    /// line written: most jobs (all `noop`s) never write one, and creating a file
    /// per job was the largest cost of running a short job.
    pub fn writer(&self, id: Uuid) -> LogWriter {
        LogWriter {
            id,
            dir: self.dir.clone(),
            file_level: self.loggers.file,
            file: Mutex::new(None),
            stdout: self.loggers.stdout,
        }
    }

    /// How long logs are kept, if they are swept.
    pub fn retention(&self) -> Option<std::time::Duration> {
        self.loggers.retention
    }

    /// The jobs whose log file was not written to for `older_than`.
    pub fn stale(&self, older_than: std::time::Duration) -> std::io::Result<Vec<Uuid>> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| Uuid::parse_str(n).ok())
            else {
                continue;
            };
            if entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| m < cutoff)
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Delete job `id`'s log file.
    pub fn remove(&self, id: Uuid) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The whole log of job `id`, or `None` if it has none.
    pub async fn read(&self, id: Uuid) -> std::io::Result<Option<String>> {
        match tokio::fs::read(self.path(id)).await {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Where job `id`'s log file is, in the logs' directory `dir`.
fn log_path(dir: &Path, id: Uuid) -> PathBuf {
    dir.join(format!("{id}.log"))
}

/// Appends the lines of one job.
#[derive(Debug)]
pub struct LogWriter {
    id: Uuid,
    /// The logs' directory: the file's path is built by the first line.
    dir: Arc<Path>,
    file_level: Option<Level>,
    /// Opened by the first line.
    file: Mutex<Option<File>>,
    stdout: Option<Level>,
}

impl LogWriter {
    pub fn line(&self, level: LogLevel, stream: LogStream, message: &str) {
        if let Some(min) = self.file_level
            && min.admits(level)
        {
            let tag = match stream {
                LogStream::Logger => "",
                LogStream::Stdout => " [stdout]",
                LogStream::Stderr => " [stderr]",
                LogStream::Host => " [host]",
            };
            let now = humantime::format_rfc3339_millis(SystemTime::now());
            let line = format!("{now} [{level}]{tag} {message}\n");
            let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
            if file.is_none() {
                match OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log_path(&self.dir, self.id))
                {
                    Ok(f) => *file = Some(f),
                    Err(e) => {
                        tracing::error!(job = %self.id, error = %e, "cannot open the job log file")
                    }
                }
            }
            // One write per line on an O_APPEND file: lines never interleave.
            if let Some(f) = file.as_mut()
                && let Err(e) = f.write_all(line.as_bytes())
            {
                tracing::warn!(job = %self.id, error = %e, "cannot write the job log");
            }
        }
        if let Some(min) = self.stdout
            && min.admits(level)
        {
            tracing::info!(job = %self.id, %level, ?stream, "{message}");
        }
    }
}

/// A job's log as served: the file's lines merged, by time, with a line for the
/// start and the end of each attempt (taken from the job's record, so a job that
/// printed nothing still has a log).
pub fn compose(file: Option<&str>, attempts: &[crate::job::Attempt]) -> String {
    let stamp = |ms: u64| {
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string()
    };
    let mut notes: Vec<(String, String)> = Vec::new();
    for a in attempts {
        let at = stamp(a.started_at);
        notes.push((
            at.clone(),
            format!(
                "{at} [INFO] [host] attempt {} started on {}",
                a.number, a.worker_id
            ),
        ));
        if let (Some(end), Some(outcome)) = (a.finished_at, &a.outcome) {
            let at = stamp(end);
            let digest = if a.plugin_digest.is_empty() {
                String::new()
            } else {
                format!(" ({})", a.plugin_digest)
            };
            let detail = a
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            notes.push((
                at.clone(),
                format!(
                    "{at} [INFO] [host] attempt {} ended{digest}: {outcome}{detail}",
                    a.number
                ),
            ));
        }
    }
    let mut out = String::new();
    let mut notes = notes.into_iter().peekable();
    for line in file.unwrap_or_default().lines() {
        let at = line.get(..24).unwrap_or(line);
        while let Some((t, _)) = notes.peek() {
            if t.as_str() > at {
                break;
            }
            if let Some((_, n)) = notes.next() {
                out.push_str(&n);
                out.push('\n');
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    for (_, n) in notes {
        out.push_str(&n);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_appended_with_level_and_stream_filtered_by_level() {
        let dir = tempfile::tempdir().unwrap();
        let logs = JobLogs::open(
            dir.path(),
            JobLoggers {
                file: Some(Level::Info),
                stdout: None,
                retention: None,
            },
        )
        .unwrap();
        let id = Uuid::new_v4();
        assert_eq!(logs.read(id).await.unwrap(), None);
        let w = logs.writer(id);
        w.line(LogLevel::Debug, LogStream::Logger, "hidden");
        w.line(LogLevel::Info, LogStream::Logger, "hello");
        w.line(LogLevel::Error, LogStream::Stderr, "oops");
        let text = logs.read(id).await.unwrap().unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with(" [INFO] hello"), "{text}");
        assert!(lines[1].ends_with(" [ERROR] [stderr] oops"), "{text}");
    }

    #[test]
    fn compose_merges_attempt_lines_by_time() {
        let attempt = crate::job::Attempt {
            id: Uuid::nil(),
            number: 1,
            retry_from_id: None,
            worker_id: "n/w0".into(),
            started_at: 1_000,
            finished_at: Some(3_000),
            outcome: Some("success".into()),
            message: None,
            plugin_digest: "sha256:ab".into(),
            startup_us: None,
            duration_us: None,
            peak_memory: None,
            fuel_used: None,
        };
        let file = "1970-01-01T00:00:02.000Z [INFO] hello\n";
        let text = compose(Some(file), std::slice::from_ref(&attempt));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0]
                .starts_with("1970-01-01T00:00:01.000Z [INFO] [host] attempt 1 started on n/w0")
        );
        assert_eq!(lines[1], "1970-01-01T00:00:02.000Z [INFO] hello");
        assert!(
            lines[2].ends_with("attempt 1 ended (sha256:ab): success"),
            "{text}"
        );
        // A job that printed nothing still has its attempt lines.
        assert_eq!(compose(None, &[attempt]).lines().count(), 2);
    }
}

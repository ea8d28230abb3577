//! Job logs (Harbor's job loggers): the `FILE` logger writes one file per job
//! under `<data_dir>/logs`, one line per guest log line, stdout/stderr line or
//! host note, with time and level; `STD_OUTPUT` copies lines to the server's log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use uuid::Uuid;

use crate::config::{JobLoggers, Level};
use crate::runtime::{LogLevel, LogStream};

/// The job logs of one data directory.
#[derive(Debug, Clone)]
pub struct JobLogs {
    dir: PathBuf,
    loggers: JobLoggers,
}

impl JobLogs {
    pub fn open(data_dir: &Path, loggers: JobLoggers) -> std::io::Result<Self> {
        let dir = data_dir.join("logs");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, loggers })
    }

    pub fn path(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A writer appending to job `id`'s log (the file is created now, so a job that
    /// has started always has a log).
    pub fn writer(&self, id: Uuid) -> LogWriter {
        let file = self.loggers.file.and_then(|level| {
            let opened = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(id));
            match opened {
                Ok(f) => Some((level, Mutex::new(f))),
                Err(e) => {
                    tracing::error!(job = %id, error = %e, "cannot open the job log file");
                    None
                }
            }
        });
        LogWriter {
            id,
            file,
            stdout: self.loggers.stdout,
        }
    }

    /// How long logs are kept, if they are swept.
    pub fn retention(&self) -> Option<std::time::Duration> {
        self.loggers.retention
    }

    /// Delete the log files not written to for `older_than`, except those of the
    /// jobs in `live` (running here). Returns how many were deleted.
    pub fn sweep(
        &self,
        older_than: std::time::Duration,
        live: &std::collections::HashSet<Uuid>,
    ) -> std::io::Result<usize> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
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
            if live.contains(&id) {
                continue;
            }
            let modified = entry.metadata().and_then(|m| m.modified());
            if modified.is_ok_and(|m| m < cutoff) {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
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

/// Appends the lines of one job.
#[derive(Debug)]
pub struct LogWriter {
    id: Uuid,
    file: Option<(Level, Mutex<File>)>,
    stdout: Option<Level>,
}

impl LogWriter {
    pub fn line(&self, level: LogLevel, stream: LogStream, message: &str) {
        if let Some((min, file)) = &self.file
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
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            // One write per line on an O_APPEND file: lines never interleave.
            if let Err(e) = f.write_all(line.as_bytes()) {
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
}

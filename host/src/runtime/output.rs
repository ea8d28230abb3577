//! The guest's log output: the `host.log` import and captured stdout/stderr share
//! one budget per attempt, so a chatty or hostile guest cannot flood the job log.
//! Captured streams are split into lines and forwarded to the [`JobHost`] as they
//! come, so a long job's log is live, not written at the end.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi_io::bytes::Bytes;

use super::job_host::{JobHost, LogLevel, LogStream};

/// The log budget of one attempt, shared by every writer.
#[derive(Debug)]
pub struct LogBudget {
    remaining: AtomicUsize,
    max_line: usize,
    dropped_lines: AtomicU64,
    dropped_bytes: AtomicU64,
}

impl LogBudget {
    pub fn new(max_bytes: usize, max_line: usize) -> Self {
        Self {
            remaining: AtomicUsize::new(max_bytes),
            max_line,
            dropped_lines: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
        }
    }

    /// Forward one line if the budget allows, cutting it to the line limit.
    pub fn emit(&self, host: &dyn JobHost, level: LogLevel, stream: LogStream, line: &str) {
        let line = cut_at_char_boundary(line, self.max_line);
        let cost = line.len().max(1);
        let took = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(cost)
            });
        if took.is_ok() {
            host.log(level, stream, line);
        } else {
            self.dropped_lines.fetch_add(1, Ordering::Relaxed);
            self.dropped_bytes
                .fetch_add(line.len() as u64, Ordering::Relaxed);
        }
    }

    /// Lines and bytes dropped so far.
    pub fn dropped(&self) -> (u64, u64) {
        (
            self.dropped_lines.load(Ordering::Relaxed),
            self.dropped_bytes.load(Ordering::Relaxed),
        )
    }
}

fn cut_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A captured stdout or stderr of one attempt. Cloned handles share the partial
/// line, so every WASI stream the guest opens writes into the same log.
#[derive(Clone)]
pub struct Capture {
    inner: Arc<CaptureInner>,
}

struct CaptureInner {
    host: Arc<dyn JobHost>,
    budget: Arc<LogBudget>,
    stream: LogStream,
    level: LogLevel,
    partial: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("stream", &self.inner.stream)
            .finish()
    }
}

impl Capture {
    pub fn new(host: Arc<dyn JobHost>, budget: Arc<LogBudget>, stream: LogStream) -> Self {
        let level = if stream == LogStream::Stderr {
            LogLevel::Error
        } else {
            LogLevel::Info
        };
        Self {
            inner: Arc::new(CaptureInner {
                host,
                budget,
                stream,
                level,
                partial: Mutex::new(Vec::new()),
            }),
        }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let inner = &*self.inner;
        let mut partial = inner.partial.lock().unwrap_or_else(|p| p.into_inner());
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            partial.extend_from_slice(&rest[..nl]);
            inner.emit(&partial);
            partial.clear();
            rest = &rest[nl + 1..];
        }
        // Bound the pending line too: a guest writing without newlines is cut into
        // lines of the maximum length instead of growing host memory.
        partial.extend_from_slice(rest);
        while partial.len() >= inner.budget.max_line {
            let line: Vec<u8> = partial.drain(..inner.budget.max_line).collect();
            inner.emit(&line);
        }
    }

    /// Emit the last line if it had no newline. Called when the attempt ends.
    pub fn finish(&self) {
        let inner = &*self.inner;
        let mut partial = inner.partial.lock().unwrap_or_else(|p| p.into_inner());
        if !partial.is_empty() {
            inner.emit(&partial);
            partial.clear();
        }
    }
}

impl CaptureInner {
    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        self.budget.emit(&*self.host, self.level, self.stream, line);
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready: bytes past the budget are counted and dropped, never refused,
        // so a guest is not made to fail by its own logging.
        Ok(64 * 1024)
    }
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::job_host::{BoxFuture, SubjobRequest};

    #[derive(Default)]
    struct Lines(Mutex<Vec<(LogLevel, LogStream, String)>>);

    impl JobHost for Lines {
        fn checkin(&self, _: &str) {}
        fn log(&self, level: LogLevel, stream: LogStream, message: &str) {
            self.0
                .lock()
                .unwrap()
                .push((level, stream, message.to_string()));
        }
        fn property(&self, _: &str) -> Option<String> {
            None
        }
        fn launch_subjob(&self, _: SubjobRequest) -> BoxFuture<'static, Result<String, String>> {
            Box::pin(async { Err("no".into()) })
        }
    }

    #[test]
    fn splits_lines_across_writes_and_flushes_the_tail() {
        let host = Arc::new(Lines::default());
        let budget = Arc::new(LogBudget::new(1024, 100));
        let cap = Capture::new(host.clone(), budget, LogStream::Stderr);
        cap.write_bytes(b"hel");
        cap.write_bytes(b"lo\r\nwor");
        cap.write_bytes(b"ld\nend");
        cap.finish();
        let lines = host.0.lock().unwrap();
        let texts: Vec<&str> = lines.iter().map(|l| l.2.as_str()).collect();
        assert_eq!(texts, ["hello", "world", "end"]);
        assert!(
            lines
                .iter()
                .all(|l| l.0 == LogLevel::Error && l.1 == LogStream::Stderr)
        );
    }

    #[test]
    fn budget_drops_and_counts_past_the_limit() {
        let host = Arc::new(Lines::default());
        let budget = Arc::new(LogBudget::new(10, 100));
        let cap = Capture::new(host.clone(), budget.clone(), LogStream::Stdout);
        cap.write_bytes(b"12345\n12345\nxyz\n");
        assert_eq!(host.0.lock().unwrap().len(), 2);
        assert_eq!(budget.dropped(), (1, 3));
    }

    #[test]
    fn long_lines_without_newline_are_cut() {
        let host = Arc::new(Lines::default());
        let budget = Arc::new(LogBudget::new(1 << 20, 4));
        let cap = Capture::new(host.clone(), budget, LogStream::Stdout);
        cap.write_bytes(b"abcdefghij");
        cap.finish();
        let texts: Vec<String> = host.0.lock().unwrap().iter().map(|l| l.2.clone()).collect();
        assert_eq!(texts, ["abcd", "efgh", "ij"]);
    }

    #[test]
    fn cut_respects_utf8() {
        assert_eq!(cut_at_char_boundary("héllo", 2), "h");
        assert_eq!(cut_at_char_boundary("abc", 10), "abc");
    }
}

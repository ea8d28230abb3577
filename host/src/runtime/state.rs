//! The data of one instance's Store, and the WIT imports served from it.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, Level};
use super::job_host::{Control, JobHost, LogLevel, LogStream, OpCommand, SubjobRequest};
use super::limiter::MemoryLimiter;
use super::output::{Capture, LogBudget};

/// Everything an instance can reach: its WASI context (no files, no sockets, no
/// environment), the job host, the op-command control, and its limits.
pub struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    host: Arc<dyn JobHost>,
    control: Control,
    budget: Arc<LogBudget>,
    stdout: Capture,
    stderr: Capture,
}

impl InstanceState {
    pub fn new(
        host: Arc<dyn JobHost>,
        control: Control,
        budget: Arc<LogBudget>,
        limiter: MemoryLimiter,
    ) -> Self {
        let stdout = Capture::new(host.clone(), budget.clone(), LogStream::Stdout);
        let stderr = Capture::new(host.clone(), budget.clone(), LogStream::Stderr);
        // No preopened directories, no environment, no arguments, no network.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter,
            host,
            control,
            budget,
            stdout,
            stderr,
        }
    }

    /// Flush partial output lines and note dropped log volume. Call once the guest
    /// has returned (or been killed).
    pub fn finish_output(&self) {
        self.stdout.finish();
        self.stderr.finish();
        let (lines, bytes) = self.budget.dropped();
        if lines > 0 {
            // The note bypasses the budget: it is the one line that says it is full.
            self.host.log(
                LogLevel::Warning,
                LogStream::Host,
                &format!("log limit reached: {lines} lines ({bytes} bytes) were dropped"),
            );
        }
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::wasmjobs::plugin::types::Host for InstanceState {}

impl bindings::wasmjobs::plugin::host::Host for InstanceState {
    fn checkin(&mut self, message: String) {
        self.host.checkin(&message);
    }

    fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warning => LogLevel::Warning,
            Level::Error => LogLevel::Error,
            Level::Fatal => LogLevel::Fatal,
        };
        for line in message.lines() {
            self.budget
                .emit(&*self.host, level, LogStream::Logger, line);
        }
    }

    fn op_command(&mut self) -> bindings::Command {
        match self.control.command() {
            OpCommand::None => bindings::Command::None,
            OpCommand::Stop => bindings::Command::Stop,
            OpCommand::Cancel => bindings::Command::Cancel,
        }
    }

    async fn launch_subjob(&mut self, request: bindings::SubjobRequest) -> Result<String, String> {
        let request = SubjobRequest {
            name: request.name,
            parameters: request.parameters,
        };
        self.host.launch_subjob(request).await
    }

    fn get(&mut self, key: String) -> Option<String> {
        self.host.property(&key)
    }
}

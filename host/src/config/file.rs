//! The YAML configuration file: its shape (Harbor's keys plus ours, unknown keys
//! refused) and how it applies over the defaults.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{
    Config, ConfigError, HookPolicy, JobLoggers, Level, MIB, invalid, parse_duration, parse_listen,
    parse_protocol,
};
use crate::cron::MissedRuns;

/// The YAML file's shape. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    protocol: Option<String>,
    port: Option<u16>,
    https_config: Option<HttpsFile>,
    listen: Option<String>,
    secret: Option<String>,
    data_dir: Option<PathBuf>,
    plugins_dir: Option<PathBuf>,
    worker_pool: Option<WorkerPoolFile>,
    job_loggers: Option<Vec<LoggerFile>>,
    loggers: Option<Vec<LoggerFile>>,
    sandbox: Option<SandboxFile>,
    capacity: Option<BTreeMap<String, u32>>,
    properties: Option<HashMap<String, String>>,
    max_body_bytes: Option<usize>,
    max_batch: Option<usize>,
    request_timeout: Option<String>,
    max_connections: Option<usize>,
    max_blocking_waiters: Option<usize>,
    blocking_max_wait: Option<String>,
    max_subjobs_per_attempt: Option<u32>,
    shutdown_timeout: Option<String>,
    periodic: Option<PeriodicFile>,
    hooks: Option<HooksFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeriodicFile {
    missed_runs: Option<MissedRuns>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HooksFile {
    /// How long a failing webhook is retried before it is dropped.
    retry_for: Option<String>,
    /// Networks (CIDR) or addresses hooks may reach even if denied.
    allow: Option<Vec<String>>,
    /// Networks denied on top of loopback, link-local and unspecified.
    deny: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpsFile {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerPoolFile {
    workers: Option<u32>,
    /// Harbor's backend name; only `sled` (embedded) exists here.
    backend: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoggerFile {
    name: String,
    level: Option<Level>,
    sweeper: Option<SweeperFile>,
    settings: Option<HashMap<String, serde_yaml_ng::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweeperFile {
    /// Days to keep job logs.
    duration: u32,
    settings: Option<HashMap<String, serde_yaml_ng::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxFile {
    memory_mib: Option<u64>,
    max_memory_mib: Option<u64>,
    default_deadline: Option<String>,
    stop_timeout: Option<String>,
    call_timeout: Option<String>,
    fuel_metering: Option<bool>,
    max_log_bytes: Option<usize>,
}

impl Config {
    pub(super) fn apply_file(&mut self, f: FileConfig) -> Result<(), ConfigError> {
        let mut port = None;
        let mut https = false;
        if let Some(p) = f.protocol {
            https = parse_protocol("protocol", &p)?;
        }
        if let Some(p) = f.port {
            port = Some(p);
        }
        if let Some(l) = f.listen {
            self.listen = parse_listen("listen", &l)?;
        }
        if let Some(p) = port {
            self.listen.set_port(p);
        }
        if let Some(h) = f.https_config {
            self.tls = Some((h.cert, h.key));
        }
        if https && self.tls.is_none() {
            return Err(invalid(
                "https_config",
                "protocol is https but https_config (cert, key) is missing",
            ));
        }
        if !https {
            self.tls = None;
        }
        if let Some(s) = f.secret {
            self.secret = Some(s);
        }
        if let Some(d) = f.data_dir {
            self.data_dir = d;
        }
        if let Some(d) = f.plugins_dir {
            self.plugins_dir = d;
        }
        if let Some(wp) = f.worker_pool {
            if let Some(w) = wp.workers {
                self.workers = w;
            }
            if let Some(b) = wp.backend
                && b != "sled"
            {
                return Err(invalid(
                    "worker_pool.backend",
                    format!("{b:?} is not available; use \"sled\""),
                ));
            }
        }
        if let Some(loggers) = f.job_loggers {
            self.job_loggers = JobLoggers {
                file: None,
                stdout: None,
                retention: None,
            };
            for (i, l) in loggers.into_iter().enumerate() {
                let level = l.level.unwrap_or(Level::Info);
                let _ = l.settings; // base_dir etc.: logs always live under data_dir
                match l.name.as_str() {
                    "FILE" => {
                        self.job_loggers.file = Some(level);
                        if let Some(sw) = l.sweeper {
                            let _ = sw.settings;
                            if sw.duration == 0 {
                                return Err(invalid(
                                    &format!("job_loggers[{i}].sweeper.duration"),
                                    "must be at least 1 (day)",
                                ));
                            }
                            self.job_loggers.retention =
                                Some(Duration::from_secs(u64::from(sw.duration) * 86_400));
                        }
                    }
                    "STD_OUTPUT" => self.job_loggers.stdout = Some(level),
                    other => {
                        return Err(invalid(
                            &format!("job_loggers[{i}].name"),
                            format!("{other:?} is not a logger; use FILE or STD_OUTPUT"),
                        ));
                    }
                }
            }
        }
        if let Some(loggers) = f.loggers {
            for (i, l) in loggers.into_iter().enumerate() {
                if l.name != "STD_OUTPUT" {
                    return Err(invalid(
                        &format!("loggers[{i}].name"),
                        format!("{:?}: the server logs to STD_OUTPUT only", l.name),
                    ));
                }
                self.log_level = l.level.unwrap_or(Level::Info);
            }
        }
        if let Some(sb) = f.sandbox {
            let rt = &mut self.runtime;
            if let Some(m) = sb.memory_mib {
                rt.default_memory = m.saturating_mul(MIB);
            }
            if let Some(m) = sb.max_memory_mib {
                rt.max_memory = m.saturating_mul(MIB);
            }
            if let Some(d) = sb.default_deadline {
                rt.default_deadline = parse_duration("sandbox.default_deadline", &d)?;
            }
            if let Some(d) = sb.stop_timeout {
                rt.default_stop_timeout = parse_duration("sandbox.stop_timeout", &d)?;
            }
            if let Some(d) = sb.call_timeout {
                rt.call_timeout = parse_duration("sandbox.call_timeout", &d)?;
            }
            if let Some(f) = sb.fuel_metering {
                rt.fuel_metering = f;
            }
            if let Some(b) = sb.max_log_bytes {
                rt.max_log_bytes = b;
            }
        }
        if let Some(c) = f.capacity {
            self.capacity = c;
        }
        if let Some(p) = f.properties {
            self.properties = p;
        }
        if let Some(b) = f.max_body_bytes {
            self.max_body_bytes = b;
        }
        if let Some(b) = f.max_batch {
            self.max_batch = b;
        }
        if let Some(t) = f.request_timeout {
            self.request_timeout = parse_duration("request_timeout", &t)?;
        }
        if let Some(n) = f.max_connections {
            self.max_connections = n;
        }
        if let Some(n) = f.max_blocking_waiters {
            self.max_blocking_waiters = n;
        }
        if let Some(n) = f.max_subjobs_per_attempt {
            self.max_subjobs_per_attempt = n;
        }
        if let Some(t) = f.blocking_max_wait {
            self.blocking_max_wait = parse_duration("blocking_max_wait", &t)?;
        }
        if let Some(t) = f.shutdown_timeout {
            self.shutdown_timeout = parse_duration("shutdown_timeout", &t)?;
        }
        if let Some(m) = f.periodic.and_then(|p| p.missed_runs) {
            self.missed_runs = m;
        }
        if let Some(hooks) = f.hooks {
            if let Some(t) = hooks.retry_for {
                self.hook_retry_for = parse_duration("hooks.retry_for", &t)?;
            }
            let (allow, deny) = (
                hooks.allow.unwrap_or_default(),
                hooks.deny.unwrap_or_default(),
            );
            HookPolicy::new(&allow, &[]).map_err(|e| invalid("hooks.allow", e))?;
            self.hook_policy =
                HookPolicy::new(&allow, &deny).map_err(|e| invalid("hooks.deny", e))?;
        }
        Ok(())
    }
}

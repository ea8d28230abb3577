//! Service configuration: a YAML file (Harbor's keys where Harbor has one), then
//! environment variables, then command-line flags, each overriding the one before.
//! A bad value is refused at start with a message naming the key.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod file;
use file::FileConfig;

use crate::cron::MissedRuns;
use crate::runtime::RuntimeConfig;
use crate::service::HookPolicy;

const MIB: u64 = 1024 * 1024;

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// Severity threshold of a logger (Harbor's level names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Fatal,
}

impl Level {
    pub fn admits(self, level: crate::runtime::LogLevel) -> bool {
        use crate::runtime::LogLevel as L;
        let rank = match level {
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warning => Level::Warning,
            L::Error => Level::Error,
            L::Fatal => Level::Fatal,
        };
        rank >= self
    }
}

/// Where job log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLoggers {
    /// `FILE`: one file per job under `<data_dir>/logs`, at this level.
    pub file: Option<Level>,
    /// `STD_OUTPUT`: the server's own log (tracing), at this level.
    pub stdout: Option<Level>,
    /// Keep job log files this long (the FILE logger's sweeper).
    pub retention: Option<Duration>,
}

/// The resolved configuration of a server.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// TLS certificate and key (PEM) when the protocol is https.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The shared secret of `Authorization: Harbor-Secret <secret>`; `None` means
    /// "use (or create) `<data_dir>/secret`".
    pub secret: Option<String>,
    pub data_dir: PathBuf,
    pub plugins_dir: PathBuf,
    pub workers: u32,
    pub job_loggers: JobLoggers,
    /// Level of the server's own log.
    pub log_level: Level,
    /// This node's capacity map (DTR), e.g. `{"scan": 1}`.
    pub capacity: BTreeMap<String, u32>,
    /// Properties guests read with `host.get`.
    pub properties: HashMap<String, String>,
    pub max_body_bytes: usize,
    pub max_batch: usize,
    /// Longest time one request may take (a blocking query gets its `wait` on
    /// top); past it the client gets a 503.
    pub request_timeout: Duration,
    /// API connections open at once; more are closed when accepted.
    pub max_connections: usize,
    /// Blocking queries waiting at once; more get a 429.
    pub max_blocking_waiters: usize,
    /// Longest `wait` of a blocking query, and its default.
    pub blocking_max_wait: Duration,
    /// Sub-jobs one attempt may launch; more are refused (the guest sees an error).
    pub max_subjobs_per_attempt: u32,
    /// How long a graceful shutdown waits for running jobs.
    pub shutdown_timeout: Duration,
    /// Periodic fire times missed while the server was down.
    pub missed_runs: MissedRuns,
    /// How long a failing status hook is retried before it is dropped.
    pub hook_retry_for: Duration,
    /// Which addresses status hooks may reach (`hooks.allow`, `hooks.deny`).
    pub hook_policy: HookPolicy,
    pub runtime: RuntimeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9443)),
            tls: None,
            secret: None,
            data_dir: PathBuf::from("data"),
            plugins_dir: PathBuf::from("plugins.d"),
            workers: 4,
            job_loggers: JobLoggers {
                file: Some(Level::Debug),
                stdout: None,
                retention: Some(Duration::from_secs(86_400)),
            },
            log_level: Level::Info,
            capacity: BTreeMap::new(),
            properties: HashMap::new(),
            max_body_bytes: 1024 * 1024,
            max_batch: 10_000,
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_blocking_waiters: 512,
            blocking_max_wait: Duration::from_secs(300),
            max_subjobs_per_attempt: 10_000,
            shutdown_timeout: Duration::from_secs(10),
            missed_runs: MissedRuns::Latest,
            hook_retry_for: Duration::from_secs(3600),
            hook_policy: HookPolicy::default(),
            runtime: RuntimeConfig::default(),
        }
    }
}

/// Command-line overrides (the highest precedence).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub plugins_dir: Option<PathBuf>,
}

/// Parse a duration such as `30s`, `500ms`, `5m`, `1h 30m`.
pub fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        invalid(
            key,
            format!("{value:?} is not a duration like 30s, 500ms or 5m ({e})"),
        )
    })
}

impl Config {
    /// Load: defaults, then the file (if any), then `env`, then `overrides`.
    pub fn load(
        file: Option<&Path>,
        env: &HashMap<String, String>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let parsed = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                serde_yaml_ng::from_str::<Option<FileConfig>>(&text)
                    .map_err(|source| ConfigError::Parse {
                        path: path.to_path_buf(),
                        source,
                    })?
                    .unwrap_or_default()
            }
            None => FileConfig::default(),
        };
        let mut cfg = Config::default();
        cfg.apply_file(parsed)?;
        cfg.apply_env(env)?;
        cfg.apply_overrides(overrides)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        let get = |k: &str| env.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let mut https = self.tls.is_some();
        if let Some(p) = get("JOB_SERVICE_PROTOCOL") {
            https = parse_protocol("JOB_SERVICE_PROTOCOL", p)?;
        }
        if let Some(l) = get("WASMJOBS_LISTEN") {
            self.listen = parse_listen("WASMJOBS_LISTEN", l)?;
        }
        if let Some(p) = get("JOB_SERVICE_PORT") {
            let port = p
                .parse()
                .map_err(|_| invalid("JOB_SERVICE_PORT", format!("{p:?} is not a port number")))?;
            self.listen.set_port(port);
        }
        let cert = get("JOB_SERVICE_HTTPS_CERT").map(PathBuf::from);
        let key = get("JOB_SERVICE_HTTPS_KEY").map(PathBuf::from);
        match (cert, key) {
            (Some(c), Some(k)) => self.tls = Some((c, k)),
            (None, None) => {}
            _ => {
                return Err(invalid(
                    "JOB_SERVICE_HTTPS_CERT",
                    "set both JOB_SERVICE_HTTPS_CERT and JOB_SERVICE_HTTPS_KEY",
                ));
            }
        }
        if https && self.tls.is_none() {
            return Err(invalid(
                "JOB_SERVICE_PROTOCOL",
                "https needs a certificate and key",
            ));
        }
        if !https {
            self.tls = None;
        }
        if let Some(w) = get("JOB_SERVICE_POOL_WORKERS") {
            self.workers = w.parse().map_err(|_| {
                invalid(
                    "JOB_SERVICE_POOL_WORKERS",
                    format!("{w:?} is not a number of workers"),
                )
            })?;
        }
        if let Some(s) = get("CORE_SECRET").or(get("JOBSERVICE_SECRET")) {
            self.secret = Some(s.to_string());
        }
        if let Some(d) = get("WASMJOBS_DATA_DIR") {
            self.data_dir = PathBuf::from(d);
        }
        if let Some(d) = get("WASMJOBS_PLUGINS_DIR") {
            self.plugins_dir = PathBuf::from(d);
        }
        if let Some(m) = get("WASMJOBS_MEMORY_MIB") {
            let mib: u64 = m
                .parse()
                .map_err(|_| invalid("WASMJOBS_MEMORY_MIB", format!("{m:?} is not a number")))?;
            self.runtime.default_memory = mib.saturating_mul(MIB);
        }
        if let Some(d) = get("WASMJOBS_DEFAULT_DEADLINE") {
            self.runtime.default_deadline = parse_duration("WASMJOBS_DEFAULT_DEADLINE", d)?;
        }
        if let Some(d) = get("WASMJOBS_STOP_TIMEOUT") {
            self.runtime.default_stop_timeout = parse_duration("WASMJOBS_STOP_TIMEOUT", d)?;
        }
        if let Some(c) = get("WASMJOBS_CAPACITY") {
            self.capacity = serde_json::from_str(c).map_err(|e| {
                invalid(
                    "WASMJOBS_CAPACITY",
                    format!("{c:?} is not a JSON map of names to amounts ({e})"),
                )
            })?;
        }
        Ok(())
    }

    fn apply_overrides(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        if let Some(l) = &o.listen {
            self.listen = parse_listen("--listen", l)?;
        }
        if let Some(d) = &o.data_dir {
            self.data_dir = d.clone();
        }
        if let Some(d) = &o.plugins_dir {
            self.plugins_dir = d.clone();
        }
        Ok(())
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        if self.workers == 0 || self.workers > 1000 {
            return Err(invalid(
                "worker_pool.workers",
                format!("{} must be between 1 and 1000", self.workers),
            ));
        }
        self.runtime.max_concurrent_jobs = self.workers;
        self.runtime.cache_dir = Some(self.data_dir.join("cache"));
        if let Some(s) = &self.secret
            && s.len() < 8
        {
            return Err(invalid("secret", "must be at least 8 characters"));
        }
        for (name, amount) in &self.capacity {
            if name.is_empty() || *amount == 0 {
                return Err(invalid(
                    &format!("capacity.{name}"),
                    "capacity names must be non-empty and amounts at least 1",
                ));
            }
        }
        for key in self.properties.keys() {
            if key.is_empty() {
                return Err(invalid("properties", "a property name is empty"));
            }
        }
        if self.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024"));
        }
        if self.max_batch == 0 {
            return Err(invalid("max_batch", "must be at least 1"));
        }
        if self.request_timeout < Duration::from_millis(100) {
            return Err(invalid("request_timeout", "must be at least 100ms"));
        }
        if self.max_connections == 0 || self.max_connections > 1_000_000 {
            return Err(invalid("max_connections", "must be between 1 and 1000000"));
        }
        if self.blocking_max_wait.is_zero() || self.blocking_max_wait > Duration::from_secs(3600) {
            return Err(invalid("blocking_max_wait", "must be between 1ms and 1h"));
        }
        if self.max_blocking_waiters > 1_000_000 {
            return Err(invalid("max_blocking_waiters", "must be at most 1000000"));
        }
        self.runtime
            .validate()
            .map_err(|e| invalid("sandbox", e.to_string()))
    }
}

fn parse_protocol(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "http" => Ok(false),
        "https" => Ok(true),
        other => Err(invalid(key, format!("{other:?} must be http or https"))),
    }
}

fn parse_listen(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            key,
            format!("{value:?} is not an address like 127.0.0.1:9443"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yml");
        std::fs::write(&path, yaml).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(Some(&path), &env, &Overrides::default())
    }

    #[test]
    fn harbor_keys_and_env_overrides() {
        let yaml = "port: 8080\nworker_pool:\n  workers: 3\n  backend: sled\njob_loggers:\n  - name: FILE\n    level: INFO\n    sweeper:\n      duration: 2\n  - name: STD_OUTPUT\n    level: ERROR\ncapacity:\n  scan: 2\nproperties:\n  email_from: a@b.c\nsandbox:\n  stop_timeout: 3s\n";
        let cfg = load(
            yaml,
            &[
                ("JOB_SERVICE_POOL_WORKERS", "5"),
                ("CORE_SECRET", "s3cret-value"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.listen.port(), 8080);
        assert_eq!(cfg.workers, 5, "env beats the file");
        assert_eq!(cfg.runtime.max_concurrent_jobs, 5);
        assert_eq!(cfg.secret.as_deref(), Some("s3cret-value"));
        assert_eq!(cfg.job_loggers.file, Some(Level::Info));
        assert_eq!(cfg.job_loggers.stdout, Some(Level::Error));
        assert_eq!(
            cfg.job_loggers.retention,
            Some(Duration::from_secs(2 * 86_400))
        );
        assert_eq!(cfg.capacity.get("scan"), Some(&2));
        assert_eq!(
            cfg.properties.get("email_from").map(String::as_str),
            Some("a@b.c")
        );
        assert_eq!(cfg.runtime.default_stop_timeout, Duration::from_secs(3));
    }

    #[test]
    fn hook_networks() {
        let yaml = "hooks:\n  allow: [\"127.0.0.1\"]\n  deny: [\"10.0.0.0/8\"]\n";
        let p = load(yaml, &[]).unwrap().hook_policy;
        assert!(p.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check("::1".parse().unwrap()).is_err());
        assert!(p.check("10.1.1.1".parse().unwrap()).is_err());
        assert_eq!(load("", &[]).unwrap().hook_policy, HookPolicy::default());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("worker_pool:\n  workers: 0\n", "worker_pool.workers"),
            ("port: nope\n", "port"),
            ("bogus_key: 1\n", "bogus_key"),
            ("sandbox:\n  stop_timeout: soon\n", "sandbox.stop_timeout"),
            ("protocol: https\n", "https_config"),
            ("job_loggers:\n  - name: DB\n", "job_loggers[0].name"),
            ("worker_pool:\n  backend: redis\n", "worker_pool.backend"),
            ("secret: short\n", "secret"),
            ("sandbox:\n  memory_mib: 0\n", "sandbox"),
            ("hooks:\n  allow: [\"localhost\"]\n", "hooks.allow"),
            ("hooks:\n  deny: [\"10.0.0.0/33\"]\n", "hooks.deny"),
            ("max_connections: 0\n", "max_connections"),
            ("request_timeout: 1ms\n", "request_timeout"),
        ];
        for (yaml, key) in cases {
            let err = load(yaml, &[]).expect_err(yaml).to_string();
            assert!(err.contains(key), "{yaml:?}: {err}");
        }
        let err = load("", &[("JOB_SERVICE_PORT", "99999")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("JOB_SERVICE_PORT"), "{err}");
        let err = load("", &[("WASMJOBS_CAPACITY", "{\"scan\": -1}")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("WASMJOBS_CAPACITY"), "{err}");
    }

    #[test]
    fn overrides_win() {
        let env = HashMap::from([("WASMJOBS_LISTEN".to_string(), "127.0.0.1:1".to_string())]);
        let o = Overrides {
            listen: Some("127.0.0.1:2".into()),
            ..Overrides::default()
        };
        let cfg = Config::load(None, &env, &o).unwrap();
        assert_eq!(cfg.listen.port(), 2);
    }
}

//! The `wasmjobs` command: thin glue over the library (parse arguments, set up
//! tracing, call into `wasmjobs::runtime`).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use wasmjobs::config::{Config, Level, Overrides};
use wasmjobs::runtime::{
    AttemptSpec, BoxFuture, Control, FileStatus, JobHost, LogLevel, LogStream, Outcome,
    PluginRegistry, Runtime, RuntimeConfig, SubjobRequest,
};
use wasmjobs::server::Node;
use wasmjobs::telemetry::init_tracing;

/// sled clones and frees whole B-tree pages on every write; under glibc's malloc
/// that was a quarter of the drain's CPU (README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "wasmjobs",
    version,
    about = "A job runner whose jobs are sandboxed WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the job service: REST API, worker pool, scheduler, plugin directory
    /// watch, sled store under the data dir.
    Serve {
        /// YAML configuration file (see the README's configuration reference).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on, e.g. 127.0.0.1:9443 (overrides the config).
        #[arg(long)]
        listen: Option<String>,
        /// Data directory: store, job logs, compiled-plugin cache, secret.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Plugin directory, watched for new, changed and removed `.wasm` files.
        #[arg(long)]
        plugins_dir: Option<PathBuf>,
    },
    /// Load every plugin of a directory and list them with digest and status.
    Plugins {
        /// Directory of plugin components (`*.wasm`).
        #[arg(long, env = "WASMJOBS_PLUGINS_DIR", default_value = "plugins.d")]
        plugins_dir: PathBuf,
    },
    /// Run one job locally, printing its log as it runs and its report at the end.
    /// Ctrl-C asks the job to stop (a second Ctrl-C cancels it).
    Run {
        #[arg(long, env = "WASMJOBS_PLUGINS_DIR", default_value = "plugins.d")]
        plugins_dir: PathBuf,
        /// Job name (as the plugin describes itself).
        name: String,
        /// Parameters, a JSON object.
        #[arg(default_value = "{}")]
        params: String,
        /// Wall-clock limit, e.g. `30s`, `500ms`, `2m`.
        #[arg(long, value_parser = parse_duration)]
        deadline: Option<Duration>,
        /// Time allowed to honour a stop before the job is killed.
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        stop_timeout: Duration,
    },
}

/// `<n>ms`, `<n>s`, `<n>m` or `<n>h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.len()),
    );
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 30s, 2m or 1h"))?;
    let ms = match unit {
        "ms" => n,
        "s" | "" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(Duration::from_millis(ms))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve {
            config,
            listen,
            data_dir,
            plugins_dir,
        } => {
            let overrides = Overrides {
                listen,
                data_dir,
                plugins_dir,
            };
            serve(config, overrides).await
        }
        Command::Plugins { plugins_dir } => {
            init_tracing("warn");
            list_plugins(plugins_dir).await
        }
        Command::Run {
            plugins_dir,
            name,
            params,
            deadline,
            stop_timeout,
        } => {
            init_tracing("warn");
            run_one(plugins_dir, name, params, deadline, stop_timeout).await
        }
    }
}

async fn serve(file: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = Config::load(file.as_deref(), &env, &overrides)?;
    init_tracing(match config.log_level {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warning => "warn",
        Level::Error | Level::Fatal => "error",
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let node = Node::start(config).await?;
    tracing::info!("listening on {scheme}://{}", listener.local_addr()?);
    node.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn open_registry(dir: PathBuf) -> anyhow::Result<Arc<PluginRegistry>> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let registry = PluginRegistry::new(runtime, &dir)
        .with_context(|| format!("cannot open the plugin directory {}", dir.display()))?;
    registry.scan().await?;
    Ok(registry)
}

async fn list_plugins(dir: PathBuf) -> anyhow::Result<()> {
    let registry = open_registry(dir).await?;
    let mut out = std::io::stdout().lock();
    for entry in registry.list() {
        let file = entry
            .file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match (&entry.status, &entry.serving) {
            (FileStatus::Ready, Some(p)) => writeln!(
                out,
                "{:<12} ready    {file}  {}  max_fails={} memory={}MiB capacity={:?}",
                p.name(),
                p.digest(),
                p.info().max_fails,
                p.info().memory_cap >> 20,
                p.info().capacity
            )?,
            (FileStatus::Invalid { error }, serving) => {
                let name = serving.as_ref().map_or("-", |p| p.name());
                writeln!(out, "{name:<12} INVALID  {error}")?
            }
            (FileStatus::Ready, None) => writeln!(out, "{:<12} ready    {file}", "-")?,
        }
    }
    Ok(())
}

async fn run_one(
    dir: PathBuf,
    name: String,
    params: String,
    deadline: Option<Duration>,
    stop_timeout: Duration,
) -> anyhow::Result<()> {
    let registry = open_registry(dir).await?;
    let Some(plugin) = registry.get(&name) else {
        let names: Vec<String> = registry
            .list()
            .iter()
            .filter_map(|e| e.serving.as_ref().map(|p| p.name().to_string()))
            .collect();
        bail!("no plugin named {name:?} (loaded: {})", names.join(", "));
    };
    let runtime = registry.runtime().clone();
    if let Err(message) = runtime.validate(&plugin, &params).await? {
        bail!("{name}: invalid parameters: {message}");
    }
    let control = Control::new();
    let signals = control.clone();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if signals.command() == wasmjobs::runtime::OpCommand::None {
                eprintln!("stopping (Ctrl-C again to cancel)");
                signals.stop();
            } else {
                signals.cancel();
            }
        }
    });
    let spec = AttemptSpec {
        job_id: "local".into(),
        attempt: 1,
        params,
        deadline,
        stop_timeout: Some(stop_timeout),
        ..AttemptSpec::default()
    };
    let report = runtime
        .run(&plugin, &spec, Arc::new(PrintHost), control)
        .await;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.outcome != Outcome::Success {
        std::process::exit(1);
    }
    Ok(())
}

/// Prints the job's check-ins and log lines as they come.
struct PrintHost;

impl JobHost for PrintHost {
    fn checkin(&self, message: &str) {
        println!("CHECKIN {message}");
    }

    fn log(&self, level: LogLevel, stream: LogStream, message: &str) {
        let from = match stream {
            LogStream::Logger => "",
            LogStream::Stdout => " [stdout]",
            LogStream::Stderr => " [stderr]",
            LogStream::Host => " [host]",
        };
        println!("{level:<7}{from} {message}");
    }

    fn property(&self, key: &str) -> Option<String> {
        std::env::var(format!(
            "WASMJOBS_PROP_{}",
            key.replace(['.', '-'], "_").to_uppercase()
        ))
        .ok()
    }

    fn launch_subjob(&self, request: SubjobRequest) -> BoxFuture<'static, Result<String, String>> {
        let msg = format!(
            "sub-job {:?} not launched: `wasmjobs run` runs a single job",
            request.name
        );
        Box::pin(async move { Err(msg) })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }
}

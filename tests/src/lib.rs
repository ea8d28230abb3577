//! Shared fixtures of the end-to-end tests and benchmarks: the bundled plugins
//! (built once per process through `scripts/build-plugins`, as a user would), a
//! runtime sized for tests, a [`RecordingHost`] that keeps what a guest sent, and
//! a [`server::TestServer`] running a real node on `127.0.0.1:0`.

pub mod bench;
pub mod process;
pub mod server;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use wasmjobs::runtime::{
    BoxFuture, JobHost, LogLevel, LogStream, PluginRegistry, Runtime, RuntimeConfig, SubjobRequest,
};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The directory holding every bundled plugin as `<name>.wasm`, built on first use.
pub fn plugins_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_once("build-plugins", &[], "test-plugins"))
}

/// The directory holding the example jobs of `examples/` (wordcount in C,
/// JavaScript, Python and WAT) as `wordcount-<lang>.wasm`, built on first use by
/// `scripts/build-examples --all`, which installs their toolchains first
/// (`scripts/install-example-toolchains`). Fails, naming the missing toolchain,
/// when one cannot be installed.
pub fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_once("build-examples", &["--all"], "test-examples"))
}

/// Run `scripts/<script> [args] <target>/<out>` under a file lock (test binaries
/// and nextest's processes may build at the same time); the output directory.
fn build_once(script: &str, args: &[&str], out: &str) -> PathBuf {
    let target = target_dir();
    let dir = target.join(out);
    let lock = File::create(target.join(format!("{out}.lock"))).expect("create lock file");
    lock.lock().expect("lock the build");
    let output = std::process::Command::new("bash")
        .arg(repo_root().join("scripts").join(script))
        .args(args)
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
    assert!(
        output.status.success(),
        "scripts/{script} {args:?} failed ({}){}:\n{}",
        output.status,
        if script == "build-examples" {
            "; see scripts/install-example-toolchains"
        } else {
            ""
        },
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

/// A component made from a hand-written WAT core module against the plugin world
/// (a file under `tests/fixtures/`), with the project's componentize tool.
pub fn component_from_wat(file: &str) -> Vec<u8> {
    let root = repo_root();
    let out = tempfile::tempdir().expect("temp dir");
    let wasm = out.path().join("component.wasm");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "-p",
            "wasmjobs-componentize",
            "--",
            "component",
        ])
        .arg(root.join("tests/fixtures").join(file))
        .arg("--wit")
        .arg(root.join("wit"))
        .arg("-o")
        .arg(&wasm)
        .current_dir(&root)
        .status()
        .expect("run wasmjobs-componentize");
    assert!(status.success(), "componentizing {file} failed");
    std::fs::read(&wasm).expect("read component")
}

/// Cargo's target directory, created if needed.
pub fn target_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    std::fs::create_dir_all(&target).expect("create target dir");
    target
}

/// The `wasmjobs` binary, built (or brought up to date) on first use with the
/// cargo that runs the tests.
pub fn wasmjobs_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_wasmjobs(false))
}

/// The release build of the `wasmjobs` binary (benchmarks), built on first use.
pub fn wasmjobs_release_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_wasmjobs(true))
}

fn build_wasmjobs(release: bool) -> PathBuf {
    let root = repo_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut args = vec!["build", "--quiet", "-p", "wasmjobs", "--bin", "wasmjobs"];
    if release {
        args.push("--release");
    }
    let status = std::process::Command::new(cargo)
        .args(args)
        .current_dir(&root)
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build of the wasmjobs binary failed"
    );
    target_dir()
        .join(if release { "release" } else { "debug" })
        .join("wasmjobs")
}

/// The bytes of bundled plugin `name`.
pub fn plugin_bytes(name: &str) -> Vec<u8> {
    let path = plugins_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Copy bundled plugins into `dir`.
pub fn install(dir: &Path, names: &[&str]) {
    for name in names {
        std::fs::write(dir.join(format!("{name}.wasm")), plugin_bytes(name))
            .expect("install plugin");
    }
}

/// `sha256:<hex>` of some bytes, computed independently of the host.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A new version of a component with the same behaviour: the same bytes plus a
/// custom section, so its digest differs.
pub fn new_version(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"wasmjobs-test-version";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    assert!(payload.len() < 128, "tag too long for a one-byte LEB size");
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

/// Settings for tests: a small pool and short call timeouts.
pub fn test_config() -> RuntimeConfig {
    RuntimeConfig {
        max_concurrent_jobs: 4,
        call_slots: 2,
        call_timeout: Duration::from_secs(10),
        default_stop_timeout: Duration::from_secs(5),
        default_deadline: Duration::from_secs(60),
        ..RuntimeConfig::default()
    }
}

pub fn runtime() -> Arc<Runtime> {
    Runtime::new(test_config()).expect("runtime")
}

/// A registry over a fresh directory holding the named bundled plugins, scanned.
pub async fn registry_with(names: &[&str]) -> (tempfile::TempDir, Arc<PluginRegistry>) {
    registry_on(runtime(), names).await
}

pub async fn registry_on(
    rt: Arc<Runtime>,
    names: &[&str],
) -> (tempfile::TempDir, Arc<PluginRegistry>) {
    let dir = tempfile::tempdir().expect("temp dir");
    install(dir.path(), names);
    let registry = PluginRegistry::new(rt, dir.path()).expect("registry");
    registry.scan().await.expect("scan");
    (dir, registry)
}

/// One log line a guest produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub level: LogLevel,
    pub stream: LogStream,
    pub text: String,
}

/// A [`JobHost`] that records everything and answers sub-job requests with ids
/// `sub-<n>`, or refuses the names in `refuse`.
#[derive(Debug, Default)]
pub struct RecordingHost {
    pub properties: HashMap<String, String>,
    pub refuse: Vec<String>,
    pub checkins: Mutex<Vec<String>>,
    pub lines: Mutex<Vec<Line>>,
    pub subjobs: Mutex<Vec<SubjobRequest>>,
}

impl RecordingHost {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn with_properties(props: &[(&str, &str)]) -> Arc<Self> {
        Arc::new(Self {
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Self::default()
        })
    }

    pub fn checkins(&self) -> Vec<String> {
        self.checkins.lock().expect("lock").clone()
    }

    pub fn lines(&self) -> Vec<Line> {
        self.lines.lock().expect("lock").clone()
    }

    pub fn texts(&self, stream: LogStream) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.text)
            .collect()
    }
}

impl JobHost for RecordingHost {
    fn checkin(&self, message: &str) {
        self.checkins
            .lock()
            .expect("lock")
            .push(message.to_string());
    }

    fn log(&self, level: LogLevel, stream: LogStream, message: &str) {
        self.lines.lock().expect("lock").push(Line {
            level,
            stream,
            text: message.to_string(),
        });
    }

    fn property(&self, key: &str) -> Option<String> {
        self.properties.get(key).cloned()
    }

    fn launch_subjob(&self, request: SubjobRequest) -> BoxFuture<'static, Result<String, String>> {
        let answer = if self.refuse.contains(&request.name) {
            Err(format!("unknown job name '{}'", request.name))
        } else {
            let mut subjobs = self.subjobs.lock().expect("lock");
            subjobs.push(request);
            Ok(format!("sub-{}", subjobs.len()))
        };
        Box::pin(async move { answer })
    }
}

//! Error types of the runtime layer. Each keeps its source so a caller can tell a
//! broken file from a broken configuration, and none is flattened into a string.

use std::path::PathBuf;

/// Why a plugin file could not be loaded. The file keeps its previous good version,
/// if it had one.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{file}: cannot read the file: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a WebAssembly component ({reason})")]
    NotAComponent { file: PathBuf, reason: String },
    #[error(
        "{file}: the component does not fit the job plugin world `wasmjobs:plugin/plugin@0.1.0`: {reason}"
    )]
    WrongWorld { file: PathBuf, reason: String },
    #[error("{file}: the component needs more than the sandbox allows: {reason}")]
    TooLarge { file: PathBuf, reason: String },
    #[error("{file}: `{call}` failed while loading: {reason}")]
    Describe {
        file: PathBuf,
        call: &'static str,
        reason: String,
    },
    #[error("{file}: invalid job info: {reason}")]
    BadInfo { file: PathBuf, reason: String },
    #[error("{file}: job name `{name}` is already provided by {owner}")]
    NameTaken {
        file: PathBuf,
        name: String,
        owner: PathBuf,
    },
}

/// Why the runtime could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid runtime setting `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("cannot build the wasmtime engine: {0}")]
    Engine(String),
    #[error("cannot prepare the artifact cache at {dir}: {source}")]
    Cache {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a guest call (validate, should-retry) could not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the plugin `{plugin}` trapped in `{call}`: {reason}")]
    Trapped {
        plugin: String,
        call: &'static str,
        reason: String,
    },
    #[error("the plugin `{plugin}` did not answer `{call}` within {limit_ms} ms")]
    TimedOut {
        plugin: String,
        call: &'static str,
        limit_ms: u64,
    },
    #[error("the plugin `{plugin}` exceeded its memory cap in `{call}`")]
    MemoryLimit { plugin: String, call: &'static str },
}

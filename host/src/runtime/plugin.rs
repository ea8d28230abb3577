//! One loaded version of a plugin file: its digest, what it says about itself, and
//! the pre-linked component every attempt instantiates from.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::Runtime;
use super::bindings::{self, JobInfo};
use super::engine::{MAX_MEMORIES_PER_COMPONENT, MAX_TABLE_ELEMENTS, MAX_TABLES_PER_COMPONENT};
use super::state::InstanceState;
use crate::error::PluginError;

const MIB: u64 = 1024 * 1024;
const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];

/// What a plugin declares about its job type (`describe` and `max-fails`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PluginInfo {
    /// The job name users submit.
    pub name: String,
    pub description: String,
    /// Default capacity needs of one job, e.g. `[("scan", 1)]`.
    pub capacity: Vec<(String, u32)>,
    /// Failed attempts allowed before the job ends in `error` (0 in the plugin means 4).
    pub max_fails: u32,
    /// Milliseconds.
    #[serde(with = "millis")]
    #[schema(value_type = u64)]
    pub initial_backoff: Duration,
    /// Milliseconds.
    #[serde(with = "millis")]
    #[schema(value_type = u64)]
    pub max_backoff: Duration,
    /// Memory cap of one instance, in bytes (the plugin's own or the host default).
    pub memory_cap: u64,
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
    }
}

/// Harbor's default when a job declares `MaxFails() == 0`.
pub const DEFAULT_MAX_FAILS: u32 = 4;

/// One loaded, ready version of a plugin file. Running attempts hold an `Arc` of
/// the version they started with, so replacing the file never disturbs them.
pub struct Plugin {
    info: PluginInfo,
    digest: String,
    file: PathBuf,
    size: u64,
    loaded_at: SystemTime,
    pub(super) pre: bindings::PluginPre<InstanceState>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.info.name)
            .field("digest", &self.digest)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.info.name
    }
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }
    /// `sha256:<hex>` of the file's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }
    pub fn file(&self) -> &Path {
        &self.file
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Runtime {
    /// Load a plugin from its bytes: compile it (or take the cached artifact), check
    /// it targets the plugin world and fits the sandbox, and ask it to describe itself.
    pub async fn load_plugin(
        &self,
        file: &Path,
        bytes: Vec<u8>,
    ) -> Result<Arc<Plugin>, PluginError> {
        let digest = digest_of(&bytes);
        let size = bytes.len() as u64;
        if size > self.config().max_plugin_bytes {
            return Err(PluginError::TooLarge {
                file: file.to_path_buf(),
                reason: format!(
                    "{size} bytes, the limit is {}",
                    self.config().max_plugin_bytes
                ),
            });
        }
        let component = self.compile(file, &digest, bytes).await?;
        let initial_memory = check_resources(file, &component)?;
        // `describe` runs under the host's maximum cap: a component that cannot even
        // start within it is refused here, with its figure, not by a failed call.
        check_initial_memory(
            file,
            initial_memory,
            self.config().max_memory,
            "`sandbox.max_memory_mib`",
        )?;
        let wrong_world = |reason: String| PluginError::WrongWorld {
            file: file.to_path_buf(),
            reason,
        };
        let pre = self
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| wrong_world(format!("{e:#}")))?;
        let pre = bindings::PluginPre::new(pre).map_err(|e| wrong_world(format!("{e:#}")))?;
        let (raw, max_fails) = self.describe(file, &pre).await?;
        let info = self.check_info(file, raw, max_fails)?;
        check_initial_memory(
            file,
            initial_memory,
            info.memory_cap,
            "the plugin's `memory-mib`, or `sandbox.memory_mib`",
        )?;
        Ok(Arc::new(Plugin {
            info,
            digest,
            file: file.to_path_buf(),
            size,
            loaded_at: SystemTime::now(),
            pre,
        }))
    }

    async fn compile(
        &self,
        file: &Path,
        digest: &str,
        bytes: Vec<u8>,
    ) -> Result<Component, PluginError> {
        if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
            return Err(PluginError::NotAComponent {
                file: file.to_path_buf(),
                reason: "the file does not start with the WebAssembly magic bytes".into(),
            });
        }
        if bytes[4..8] == CORE_MODULE_VERSION {
            return Err(PluginError::NotAComponent {
                file: file.to_path_buf(),
                reason: "it is a core module; build for wasm32-wasip2 or wrap it with \
                         `wasm-tools component new`"
                    .into(),
            });
        }
        let engine = self.engine().clone();
        let cache = self.cache().cloned();
        let digest = digest.to_string();
        // Compilation is CPU-bound (tens of ms to seconds): keep it off the async
        // workers so running jobs are not delayed.
        let compiled = tokio::task::spawn_blocking(move || {
            let hex = digest.trim_start_matches("sha256:");
            if let Some(c) = cache.as_ref().and_then(|c| c.get(&engine, hex)) {
                return Ok(c);
            }
            let c = Component::from_binary(&engine, &bytes)?;
            if let Some(cache) = &cache {
                cache.put(hex, &c);
            }
            Ok::<_, wasmtime::Error>(c)
        })
        .await;
        match compiled {
            Ok(Ok(c)) => Ok(c),
            // wasmtime checks a component against the pool's limits as it compiles
            // it; its message has the figures.
            Ok(Err(e)) if format!("{e:#}").contains("pooling allocator") => {
                Err(PluginError::TooLarge {
                    file: file.to_path_buf(),
                    reason: format!(
                        "it does not fit the instance pool (raise `sandbox.max_memory_mib` \
                         for memory): {e:#}"
                    ),
                })
            }
            Ok(Err(e)) => Err(PluginError::NotAComponent {
                file: file.to_path_buf(),
                reason: format!("{e:#}"),
            }),
            Err(join) => Err(PluginError::NotAComponent {
                file: file.to_path_buf(),
                reason: format!("the compiler panicked: {join}"),
            }),
        }
    }

    fn check_info(
        &self,
        file: &Path,
        raw: JobInfo,
        max_fails: u32,
    ) -> Result<PluginInfo, PluginError> {
        let bad = |reason: String| PluginError::BadInfo {
            file: file.to_path_buf(),
            reason,
        };
        let name = raw.name;
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if name.is_empty() || name.len() > 64 || !name.chars().all(valid_char) {
            return Err(bad(format!(
                "job name {name:?} must be 1-64 characters of [A-Za-z0-9_.-]"
            )));
        }
        let mut capacity = Vec::with_capacity(raw.capacity.len());
        for (key, amount) in raw.capacity {
            if key.is_empty() || key.len() > 64 || !key.chars().all(valid_char) {
                return Err(bad(format!(
                    "capacity name {key:?} must be 1-64 characters of [A-Za-z0-9_.-]"
                )));
            }
            if capacity.iter().any(|(k, _)| *k == key) {
                return Err(bad(format!("capacity {key:?} is listed twice")));
            }
            capacity.push((key, amount));
        }
        let cfg = self.config();
        let memory_cap = match u64::from(raw.memory_mib) * MIB {
            0 => cfg.default_memory,
            m if m > cfg.max_memory => {
                return Err(bad(format!(
                    "memory-mib {} is above this host's maximum of {} MiB",
                    raw.memory_mib,
                    cfg.max_memory / MIB
                )));
            }
            m => m,
        };
        let initial_backoff = Duration::from_millis(raw.backoff.initial_backoff_ms);
        let max_backoff = Duration::from_millis(raw.backoff.max_backoff_ms);
        if initial_backoff > max_backoff {
            return Err(bad(
                "initial-backoff-ms is greater than max-backoff-ms".into()
            ));
        }
        Ok(PluginInfo {
            name,
            description: raw.description.chars().take(512).collect(),
            capacity,
            max_fails: if max_fails == 0 {
                DEFAULT_MAX_FAILS
            } else {
                max_fails
            },
            initial_backoff,
            max_backoff,
            memory_cap,
        })
    }
}

/// Refuse components the instance pool could never hold, with a reason, instead of
/// failing every attempt at instantiation. Returns the largest initial linear
/// memory (bytes) of the component's memories.
fn check_resources(file: &Path, component: &Component) -> Result<u64, PluginError> {
    let Some(r) = component.resources_required() else {
        return Ok(0);
    };
    let too_large = |reason: String| {
        Err(PluginError::TooLarge {
            file: file.to_path_buf(),
            reason,
        })
    };
    if r.num_memories > MAX_MEMORIES_PER_COMPONENT {
        return too_large(format!(
            "{} linear memories, the limit is {MAX_MEMORIES_PER_COMPONENT}",
            r.num_memories
        ));
    }
    if r.num_tables > MAX_TABLES_PER_COMPONENT {
        return too_large(format!(
            "{} tables, the limit is {MAX_TABLES_PER_COMPONENT}",
            r.num_tables
        ));
    }
    if let Some(t) = r.max_initial_table_size
        && t > MAX_TABLE_ELEMENTS as u64
    {
        return too_large(format!(
            "a table of {t} elements, the limit is {MAX_TABLE_ELEMENTS}"
        ));
    }
    Ok(r.max_initial_memory_size
        .map_or(0, |pages| pages.saturating_mul(WASM_PAGE)))
}

/// Bytes of one wasm page.
const WASM_PAGE: u64 = 64 * 1024;

/// Refuse a component whose linear memory starts above `cap` (language runtimes
/// such as componentize-js and componentize-py start with several MiB): every
/// instantiation would fail. `setting` names what raises the cap.
fn check_initial_memory(
    file: &Path,
    initial: u64,
    cap: u64,
    setting: &str,
) -> Result<(), PluginError> {
    if initial <= cap {
        return Ok(());
    }
    Err(PluginError::TooLarge {
        file: file.to_path_buf(),
        reason: format!(
            "its linear memory starts at {:.1} MiB, above the memory cap of {:.1} MiB \
             (raise {setting})",
            initial as f64 / MIB as f64,
            cap as f64 / MIB as f64
        ),
    })
}

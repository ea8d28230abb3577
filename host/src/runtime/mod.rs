//! The plugin engine: loads job plugins (Wasm components) and runs their calls in
//! fresh, limited sandboxes.
//!
//! - [`Runtime`] owns the wasmtime engine, the linker and the instance pool; it
//!   loads plugins ([`Runtime::load_plugin`]) and runs attempts ([`Runtime::run`]).
//! - [`PluginRegistry`] maps job names to the current [`Plugin`] version of each
//!   file in a directory; [`PluginWatcher`] keeps it in step with the directory.
//! - [`JobHost`] is what the job service provides to a running guest, [`Control`]
//!   carries stop/cancel to it.

mod attempt;
mod bindings;
mod cache;
mod calls;
mod config;
mod engine;
mod job_host;
mod limiter;
mod output;
mod plugin;
mod registry;
mod sandbox;
mod state;
mod watch;

use std::sync::Arc;

use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::Engine;
use wasmtime::component::Linker;

pub use attempt::{AttemptReport, AttemptSpec, Outcome};
pub use config::RuntimeConfig;
pub use job_host::{
    BoxFuture, Control, DetachedHost, JobHost, LogLevel, LogStream, OpCommand, SubjobRequest,
};
pub use limiter::MemoryCapExceeded;
pub use plugin::{DEFAULT_MAX_FAILS, Plugin, PluginInfo, digest_of};
pub use registry::{FileStatus, PluginEntry, PluginRegistry, RegistryEvent};
pub use sandbox::KillReason;
pub use watch::PluginWatcher;

use crate::error::ConfigError;
use cache::ArtifactCache;
use engine::EpochTicker;
use state::InstanceState;

/// The sandbox engine of one node. Cheap to share (`Arc`); dropping the last
/// handle stops its epoch ticker.
pub struct Runtime {
    config: RuntimeConfig,
    engine: Engine,
    linker: Linker<InstanceState>,
    cache: Option<ArtifactCache>,
    job_slots: Semaphore,
    call_slots: Semaphore,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("running_jobs", &self.running_jobs())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Build the engine, the instance pool and the epoch ticker for `config`.
    pub fn new(config: RuntimeConfig) -> Result<Arc<Self>, ConfigError> {
        config.validate()?;
        let engine = engine::build_engine(&config)?;
        let linker = engine::build_linker(&engine)?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(ArtifactCache::open(dir, &engine)?),
            None => None,
        };
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick)?;
        Ok(Arc::new(Self {
            job_slots: Semaphore::new(config.max_concurrent_jobs as usize),
            call_slots: Semaphore::new(config.call_slots as usize),
            config,
            engine,
            linker,
            cache,
            _ticker: ticker,
        }))
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self) -> &Linker<InstanceState> {
        &self.linker
    }

    pub(crate) fn cache(&self) -> Option<&ArtifactCache> {
        self.cache.as_ref()
    }

    /// Jobs running now.
    pub fn running_jobs(&self) -> usize {
        self.config.max_concurrent_jobs as usize - self.job_slots.available_permits()
    }

    async fn job_slot(&self) -> SemaphorePermit<'_> {
        // The semaphore is never closed, so acquire cannot fail.
        self.job_slots
            .acquire()
            .await
            .expect("the job slots semaphore is never closed")
    }

    async fn call_slot(&self) -> SemaphorePermit<'_> {
        self.call_slots
            .acquire()
            .await
            .expect("the call slots semaphore is never closed")
    }
}

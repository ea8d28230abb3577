//! The wasmtime engine every plugin is compiled for and every instance runs in:
//! a pooling allocator sized to the node's concurrency, epoch interruption driven
//! by one ticker thread, and a linker holding WASI (denied through each context)
//! plus the job host imports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings;
use super::config::RuntimeConfig;
use super::state::InstanceState;
use crate::error::ConfigError;

/// Most core modules one component may instantiate (language runtimes such as
/// componentize-py use a dozen or more).
pub(crate) const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 64;
/// Most linear memories one component may define.
pub(crate) const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
/// Most tables one component may define.
pub(crate) const MAX_TABLES_PER_COMPONENT: u32 = 16;
/// Largest table (elements); JS and Python runtimes need tens of thousands.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 200_000;
/// Linear memory (per slot) reset in place when an instance ends, instead of
/// being returned to the kernel with `madvise`: with `pagemap_scan` only the pages
/// the guest dirtied are reset. `madvise` on a multi-threaded process flushes the
/// TLB of every core (an IPI per call), which halved throughput with two workers;
/// small jobs now never call it. Bounds the resident memory a slot keeps.
const MEMORY_KEEP_RESIDENT: usize = 2 * 1024 * 1024;
/// Same for tables.
const TABLE_KEEP_RESIDENT: usize = 256 * 1024;
/// Wasm stack of a guest; deeper recursion traps with "call stack exhausted".
const MAX_WASM_STACK: usize = 1024 * 1024;

/// Build the engine for `config`.
pub(crate) fn build_engine(config: &RuntimeConfig) -> Result<Engine, ConfigError> {
    let slots = config.pool_slots();
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots * MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .total_memories(slots * MAX_MEMORIES_PER_COMPONENT)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .total_tables(slots * MAX_TABLES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .table_elements(MAX_TABLE_ELEMENTS)
        .total_stacks(slots)
        .max_memory_size(usize::try_from(config.max_memory).unwrap_or(usize::MAX))
        // Reset dirty pages of a returned memory slot by scanning the page map
        // instead of a blanket madvise (Linux >= 6.7; a no-op elsewhere).
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT);

    let mut wasm = Config::new();
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .consume_fuel(config.fuel_metering)
        .max_wasm_stack(MAX_WASM_STACK)
        .async_stack_size(MAX_WASM_STACK + 1024 * 1024)
        .wasm_component_model(true)
        .parallel_compilation(true);
    Engine::new(&wasm).map_err(|e| ConfigError::Engine(format!("{e:#}")))
}

/// The linker shared by every plugin: WASI p2 (all interfaces, so language runtimes
/// that import sockets or files link; the per-instance context grants none of them)
/// and the `wasmjobs:plugin/host` imports.
pub(crate) fn build_linker(engine: &Engine) -> Result<Linker<InstanceState>, ConfigError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| ConfigError::Engine(format!("linking WASI: {e:#}")))?;
    bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
        .map_err(|e| ConfigError::Engine(format!("linking host imports: {e:#}")))?;
    Ok(linker)
}

/// Advances the engine's epoch every tick, so that running guests yield and can be
/// killed. Stops when dropped.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: std::time::Duration) -> Result<Self, ConfigError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wasmjobs-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| ConfigError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

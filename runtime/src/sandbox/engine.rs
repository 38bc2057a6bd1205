//! One wasmtime `Engine` per node, its linker, and the modules prepared for it.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::JobPre;
use super::cache::ArtifactCache;
use super::state::JobState;

/// Guest wasm stack. Deep recursion past it traps with `stack_overflow`.
pub const MAX_WASM_STACK: usize = 512 << 10;
/// Native stack of the fiber an attempt runs on: the wasm stack plus room for
/// host calls.
pub const ASYNC_STACK: usize = 2 << 20;
/// The largest module `stoker deploy` accepts.
pub const MAX_MODULE_BYTES: usize = 32 << 20;

/// What a node's sandbox is sized for.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Attempts running at once on this node (the worker's `--concurrency`);
    /// the pooling allocator reserves slots for this many instances.
    pub concurrency: u32,
    /// The largest memory cap of any class this node will run.
    pub max_memory_bytes: u64,
    /// Where compiled artifacts are cached; none disables the cache.
    pub cache_dir: Option<PathBuf>,
}

/// The node's engine, linker and artifact cache. Cheap to share (`Arc`).
pub struct Sandbox {
    pub(super) engine: Engine,
    /// The pool's per-memory size: no class can use more on this node.
    pub(super) max_memory_bytes: u64,
    linker: Linker<JobState>,
    cache: Option<ArtifactCache>,
}

/// A job module compiled, linked and pre-instantiated: each attempt only
/// instantiates it in a fresh store.
pub struct JobModule {
    /// The module's sha256 digest (hex).
    pub digest: String,
    pub(super) pre: JobPre<JobState>,
}

impl Sandbox {
    /// Builds the engine and linker for `config`.
    pub fn new(config: &SandboxConfig) -> anyhow::Result<Arc<Sandbox>> {
        let engine = Engine::new(&wasmtime_config(config))
            .map_err(|e| anyhow::anyhow!("cannot create the wasmtime engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        super::state::link(&mut linker)?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(ArtifactCache::open(dir, &engine).map_err(|e| {
                anyhow::anyhow!("cannot use cache directory {}: {e}", dir.display())
            })?),
            None => None,
        };
        Ok(Arc::new(Sandbox {
            engine,
            max_memory_bytes: config.max_memory_bytes,
            linker,
            cache,
        }))
    }

    /// Checks that `wasm` is a job component this host can run, as `stoker deploy`
    /// does before storing it; the error says what is wrong and what to do.
    pub fn validate(&self, wasm: &[u8]) -> Result<(), String> {
        check_header(wasm)?;
        let component = Component::new(&self.engine, wasm).map_err(|e| {
            format!(
                "the component does not compile: {}",
                crate::render::error(&e)
            )
        })?;
        self.link(&component, "validate").map(drop)
    }

    /// Compiles (or loads from the cache) and links a module stored under `digest`.
    pub fn prepare(&self, digest: &str, wasm: &[u8]) -> Result<JobModule, String> {
        check_header(wasm)?;
        let component = match &self.cache {
            Some(cache) => cache.component(&self.engine, digest, wasm),
            None => Component::new(&self.engine, wasm),
        }
        .map_err(|e| {
            format!(
                "the component does not compile: {}",
                crate::render::error(&e)
            )
        })?;
        self.link(&component, digest)
    }

    fn link(&self, component: &Component, digest: &str) -> Result<JobModule, String> {
        let instance_pre = self.linker.instantiate_pre(component).map_err(|e| {
            format!(
                "the component imports something this host does not provide ({}); a job may \
                 import only the stoker:job world and WASI 0.2",
                crate::render::error(&e)
            )
        })?;
        let pre = JobPre::new(instance_pre).map_err(|e| {
            format!(
                "the component is not a stoker:job job ({}); build it with stoker-sdk and \
                 `export_job!`",
                crate::render::error(&e)
            )
        })?;
        Ok(JobModule {
            digest: digest.to_owned(),
            pre,
        })
    }
}

/// Cheap structural checks, for clear messages before compiling.
fn check_header(wasm: &[u8]) -> Result<(), String> {
    if wasm.len() > MAX_MODULE_BYTES {
        return Err(format!(
            "the module is {} bytes; the limit is {MAX_MODULE_BYTES} bytes",
            wasm.len()
        ));
    }
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(
            "not a WebAssembly file (no `\\0asm` header); build the job with \
                    `cargo build --target wasm32-wasip2`"
                .into(),
        );
    }
    match wasm[4..8] {
        [1, 0, 0, 0] => Err(
            "this is a core WebAssembly module, not a component; build for \
                             `wasm32-wasip2` (which emits components) with stoker-sdk"
                .into(),
        ),
        [_, _, 1, 0] => Ok(()),
        _ => Err("unknown WebAssembly binary version; expected a component".into()),
    }
}

fn wasmtime_config(config: &SandboxConfig) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.consume_fuel(true);
    c.max_wasm_stack(MAX_WASM_STACK);
    c.async_stack_size(ASYNC_STACK);
    // Not from `WASMTIME_BACKTRACE_DETAILS`: what a record shows must not
    // depend on the worker's environment.
    c.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);

    // Pool sized from the node's concurrency: one component instance per running
    // attempt, plus slack for instances being torn down. A Rust wasip2 component
    // holds a handful of core instances, memories and tables.
    let slots = config.concurrency.max(1) + 4;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots * 8)
        .total_memories(slots * 2)
        .total_tables(slots * 8)
        .total_stacks(slots)
        .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
        // Keep the first pages of each slot resident and reset them with
        // pagemap_scan where the kernel has it (>= 6.7): instantiate+call drops
        // from ~25-43 us to ~12-20 us on this machine kind.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks_say_what_is_wrong() {
        assert!(
            check_header(b"hello world")
                .unwrap_err()
                .contains("not a WebAssembly file")
        );
        assert!(
            check_header(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}

//! One wasmtime `Engine` per node, its linker, and the modules prepared for it.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::cache::ArtifactCache;
use super::compile::{self, CompileError};
use super::limits::MAX_TABLE_ELEMENTS;
use super::shape::{self, Caps, Shape, ShapeError, check_component};
use super::state::JobState;
use crate::wit::JobPre;

/// Guest wasm stack. Deep recursion past it traps with `stack_overflow`.
pub const MAX_WASM_STACK: usize = 512 << 10;
/// Native stack of the fiber an attempt runs on: the wasm stack plus room for
/// host calls.
pub const ASYNC_STACK: usize = 2 << 20;
/// The largest module `stoker deploy` accepts.
pub const MAX_MODULE_BYTES: usize = 32 << 20;

/// The size of one memory slot of a worker's pool unless `--max-memory` says
/// otherwise; `stoker deploy --max-memory` defaults to the same.
pub const DEFAULT_POOL_MEMORY: u64 = 1 << 30;

/// What a node's sandbox is sized for.
///
/// # The pool
/// Each node preallocates a pool (wasmtime's pooling allocator): for each of
/// `concurrency + 4` job instances, [`shape::MAX_CORE_INSTANCES`] core
/// instances, [`shape::MAX_MEMORIES`] memory slots of `max_memory_bytes` each,
/// and [`shape::MAX_TABLES`] table slots of [`MAX_TABLE_ELEMENTS`] elements.
/// A job can never use more than one memory slot, whatever its class says.
///
/// Deploy knows the workers' pool from its own `--max-memory` (default
/// [`DEFAULT_POOL_MEMORY`], the workers' default): it checks each module
/// against `min(class memory, pool slot)` and the fixed per-job limits, and a
/// class whose `memory` is above the pool slot is deployed with a warning and
/// clamped to the slot at run time (a node started with a larger
/// `--max-memory` gives it more). A job whose module still does not fit the
/// node it lands on (a node started with a smaller pool, a class cap lowered
/// after deploy) ends `memory_limit`, not retried.
///
/// [`MAX_TABLE_ELEMENTS`]: super::limits::MAX_TABLE_ELEMENTS
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Attempts running at once on this node (the worker's `--concurrency`);
    /// the pooling allocator reserves slots for this many instances.
    pub concurrency: u32,
    /// The size of one memory slot of the pool: the largest memory cap of any
    /// class this node will run (the worker's `--max-memory`).
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
    /// What it asks for when instantiated (checked against each attempt's caps).
    pub shape: Shape,
    pub(super) pre: JobPre<JobState>,
}

/// Why a module cannot be run on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleRefused {
    /// Whether it is well formed but needs more memory or tables than the caps
    /// give (a `memory_limit`), rather than invalid (`module_missing`).
    pub too_big_to_run: bool,
    /// What is wrong, and what to do.
    pub message: String,
}

impl std::fmt::Display for ModuleRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ModuleRefused {}

impl From<ShapeError> for ModuleRefused {
    fn from(e: ShapeError) -> Self {
        ModuleRefused {
            too_big_to_run: e.too_big_to_run,
            message: e.message,
        }
    }
}

fn invalid(message: String) -> ModuleRefused {
    ModuleRefused {
        too_big_to_run: false,
        message,
    }
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

    /// The caps a module is checked against on this node when its class allows
    /// `class_memory_bytes`.
    pub fn caps(&self, class_memory_bytes: u64) -> Caps {
        Caps {
            class_memory_bytes: class_memory_bytes.min(self.max_memory_bytes),
            pool_memory_bytes: self.max_memory_bytes,
        }
    }

    /// Checks that `wasm` is a job component this host can run under a class
    /// cap of `class_memory_bytes`, as `stoker deploy` does before storing it:
    /// its shape first, then a bounded compile and the link. The error says
    /// what is wrong and what to do.
    pub fn validate(&self, wasm: &[u8], class_memory_bytes: u64) -> Result<Shape, ModuleRefused> {
        let shape = self.check_shape(wasm, class_memory_bytes)?;
        self.validate_compiles(wasm)?;
        Ok(shape)
    }

    /// The first half of [`Sandbox::validate`]: the shape checks alone
    /// ([`check_component`] with this node's [`Sandbox::caps`]), no compile.
    pub fn check_shape(
        &self,
        wasm: &[u8],
        class_memory_bytes: u64,
    ) -> Result<Shape, ModuleRefused> {
        Ok(check_component(wasm, &self.caps(class_memory_bytes))?)
    }

    /// The second half of [`Sandbox::validate`]: a bounded compile and the
    /// link, for a module whose shape was checked (deploy does it once per
    /// module, however many classes use it).
    pub fn validate_compiles(&self, wasm: &[u8]) -> Result<(), ModuleRefused> {
        let component = self.compile(wasm, None)?;
        self.link(&component, "validate", Shape::default())
            .map(drop)
    }

    /// Compiles (or loads from the cache) and links a module stored under
    /// `digest`, after the same shape checks as deploy against this node's pool
    /// (a module may come from an older deploy, or have been changed in Redis).
    pub fn prepare(&self, digest: &str, wasm: &[u8]) -> Result<JobModule, ModuleRefused> {
        let shape = check_component(wasm, &self.caps(self.max_memory_bytes))?;
        let component = self.compile(wasm, Some(digest))?;
        self.link(&component, digest, shape)
    }

    /// A bounded compile ([`compile`]), through the artifact cache when there
    /// is one and `digest` is given.
    fn compile(&self, wasm: &[u8], digest: Option<&str>) -> Result<Component, ModuleRefused> {
        let mut failure = None;
        let mut bounded = || {
            compile::compile(&self.engine, wasm).map_err(|e| {
                let message = match &e {
                    CompileError::Invalid(m) if m.contains("pooling allocator") => {
                        // Past the shape checks, the pool's own accounting
                        // (e.g. an instance's context over its slot).
                        failure = Some(ModuleRefused {
                            too_big_to_run: true,
                            message: format!(
                                "the component does not fit a worker's pool: {}",
                                first_line(m)
                            ),
                        });
                        m.clone()
                    }
                    CompileError::Invalid(m) => {
                        failure = Some(invalid(format!(
                            "the component does not compile: {}",
                            first_line(m)
                        )));
                        m.clone()
                    }
                    CompileError::Runaway(m) => {
                        failure = Some(invalid(format!(
                            "the component is refused: {m}; make it smaller (fewer or smaller \
                             functions)"
                        )));
                        m.clone()
                    }
                    CompileError::Host(m) => {
                        failure =
                            Some(invalid(format!("the component could not be compiled: {m}")));
                        m.clone()
                    }
                };
                wasmtime::Error::msg(message)
            })
        };
        let result = match (&self.cache, digest) {
            (Some(cache), Some(digest)) => cache.component(&self.engine, digest, &mut bounded),
            _ => bounded(),
        };
        result.map_err(|e| {
            failure.take().unwrap_or_else(|| {
                invalid(format!(
                    "the component does not compile: {}",
                    first_line(&format!("{e:#}"))
                ))
            })
        })
    }

    fn link(
        &self,
        component: &Component,
        digest: &str,
        shape: Shape,
    ) -> Result<JobModule, ModuleRefused> {
        let instance_pre = self.linker.instantiate_pre(component).map_err(|e| {
            invalid(format!(
                "the component imports something this host does not provide ({}); a job may \
                 import only the stoker:job world and WASI 0.2",
                crate::render::error(&e)
            ))
        })?;
        let pre = JobPre::new(instance_pre).map_err(|e| {
            invalid(format!(
                "the component is not a stoker:job job ({}); build it with stoker-sdk and \
                 `export_job!`",
                crate::render::error(&e)
            ))
        })?;
        Ok(JobModule {
            digest: digest.to_owned(),
            shape,
            pre,
        })
    }
}

/// The first line of a compiler message, at most 300 characters.
pub(super) fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(300) {
        Some((at, _)) => &line[..at],
        None => line,
    }
}

/// Cheap structural checks, for clear messages before parsing.
pub(super) fn check_header(wasm: &[u8]) -> Result<(), String> {
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

/// The engine settings that shape generated code: what a compile child uses
/// (no pool, which does not change the code), and the base of a node's engine.
pub(super) fn compile_config() -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.consume_fuel(true);
    c.max_wasm_stack(MAX_WASM_STACK);
    c.async_stack_size(ASYNC_STACK);
    // Not from `WASMTIME_BACKTRACE_DETAILS`: what a record shows must not
    // depend on the worker's environment.
    c.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
    c
}

pub(super) fn wasmtime_config(config: &SandboxConfig) -> Config {
    let mut c = compile_config();

    // Pool sized from the node's concurrency: one component instance per running
    // attempt, plus slack for instances being torn down. A Rust wasip2 component
    // holds a handful of core instances, memories and tables; the per-component
    // limits are the shape checks' (so what deploy admits fits every slot).
    let slots = config.concurrency.max(1) + 4;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots * shape::MAX_CORE_INSTANCES)
        .total_memories(slots * shape::MAX_MEMORIES)
        .total_tables(slots * shape::MAX_TABLES)
        .total_stacks(slots)
        .max_core_instances_per_component(shape::MAX_CORE_INSTANCES)
        .max_memories_per_component(shape::MAX_MEMORIES)
        .max_tables_per_component(shape::MAX_TABLES)
        .max_memories_per_module(shape::MAX_MEMORIES_PER_MODULE)
        .max_tables_per_module(shape::MAX_TABLES_PER_MODULE)
        .table_elements(MAX_TABLE_ELEMENTS)
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

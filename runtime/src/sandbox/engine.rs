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

/// Bytes wasmtime reserves after each linear memory (its default): accesses
/// at an offset within it need no check of the offset.
pub const MEMORY_GUARD: u64 = 32 << 20;
/// The reservation that covers a 32-bit memory's whole index space (4 GiB),
/// so that wasmtime elides bounds checks.
pub const FULL_RESERVATION: u64 = 1 << 32;
/// Address space the memory pool may take with [`FULL_RESERVATION`]s: above
/// it, each memory reserves only the node's `--max-memory`. A quarter of
/// x86-64's 128 TiB of user address space: about 4,000 job slots.
pub const FULL_RESERVATION_BUDGET: u64 = 32 << 40;
/// Address space the memory pool may take at all (of 128 TiB): a node
/// asking for more is refused at start with the numbers.
pub const POOL_ADDRESS_BUDGET: u64 = 96 << 40;

/// Memory mappings (kernel VMAs) one job slot of the pool costs: two from the
/// start (its fiber stack and the stack's guard page), about four more while
/// a job runs in it (its two memories' accessible parts, splitting the pool's
/// inaccessible mapping, and the module's copy-on-write image), as counted in
/// `/proc/PID/maps` under `stoker bench waiting`; and one to spare.
pub const MAPS_PER_SLOT: u64 = 7;
/// Mappings the rest of the worker uses (code, heap arenas, threads), with
/// room to spare.
pub const MAPS_BASE: u64 = 4_096;

/// The kernel's limit on a process's memory mappings (`vm.max_map_count`),
/// if it can be read.
fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How each linear memory of the pool lies in the address space: the bytes
/// reserved for it and the guard after. It shapes generated code (wasmtime
/// elides bounds checks only when reservation and guard cover the 4 GiB index
/// space), so compiled artifacts are specific to it: compile children get it,
/// and the artifact cache's key covers it (wasmtime's
/// `precompile_compatibility_hash` includes these settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    /// Address space reserved per memory; no memory grows past it.
    pub reservation: u64,
    /// Inaccessible bytes after each reservation.
    pub guard: u64,
}

impl MemoryLayout {
    /// The layout of a node running `slots` job instances with memories of at
    /// most `max_memory_bytes`: [`FULL_RESERVATION`]s while the pool fits
    /// [`FULL_RESERVATION_BUDGET`], else a reservation of `max_memory_bytes`
    /// (whole 64 KiB pages) with explicit bounds checks.
    pub fn for_node(slots: u32, max_memory_bytes: u64) -> MemoryLayout {
        let full = MemoryLayout {
            reservation: FULL_RESERVATION.max(max_memory_bytes.next_multiple_of(1 << 16)),
            guard: MEMORY_GUARD,
        };
        if full.pool_bytes(slots) <= FULL_RESERVATION_BUDGET {
            return full;
        }
        MemoryLayout {
            reservation: max_memory_bytes.max(1).next_multiple_of(1 << 16),
            guard: MEMORY_GUARD,
        }
    }

    /// Address space of the memories of `slots` job instances.
    pub fn pool_bytes(&self, slots: u32) -> u64 {
        u64::from(slots)
            .saturating_mul(u64::from(shape::MAX_MEMORIES))
            .saturating_mul(self.reservation.saturating_add(self.guard))
    }

    /// Whether it covers a 32-bit memory's index space, so that wasmtime
    /// elides bounds checks.
    pub fn elides_bounds_checks(&self) -> bool {
        self.reservation >= FULL_RESERVATION
    }
}

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
    /// The memory layout its code is compiled for.
    layout: MemoryLayout,
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
        let layout = config.layout();
        let needed = layout.pool_bytes(config.slots());
        anyhow::ensure!(
            needed <= POOL_ADDRESS_BUDGET,
            "--concurrency {} with --max-memory {} needs {} GiB of address space for job \
             memories ({} per job, each reserving its --max-memory plus a {} MiB guard); \
             the limit is {} GiB: lower --max-memory or --concurrency",
            config.concurrency,
            shape::mib(config.max_memory_bytes),
            needed >> 30,
            shape::MAX_MEMORIES,
            MEMORY_GUARD >> 20,
            POOL_ADDRESS_BUDGET >> 30,
        );
        // Past the kernel's mapping limit, allocations fail (ENOMEM) while
        // jobs run: refuse at start instead.
        let maps = u64::from(config.slots()) * MAPS_PER_SLOT + MAPS_BASE;
        if let Some(allowed) = max_map_count().filter(|&allowed| maps > allowed) {
            anyhow::bail!(
                "--concurrency {} needs about {maps} memory mappings ({MAPS_PER_SLOT} per job); \
                 the kernel allows {allowed} (vm.max_map_count): raise it (`sysctl -w \
                 vm.max_map_count={}`) or lower --concurrency to {} at most",
                config.concurrency,
                maps.next_multiple_of(1 << 16),
                (allowed.saturating_sub(MAPS_BASE) / MAPS_PER_SLOT).saturating_sub(4),
            );
        }
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
            layout,
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
            compile::compile(&self.engine, self.layout, wasm).map_err(|e| {
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
pub(super) fn compile_config(layout: MemoryLayout) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.memory_reservation(layout.reservation);
    c.memory_guard_size(layout.guard);
    // Memories never move (the pool's do not; a compile child runs nothing),
    // so generated code may keep a memory's base in a register.
    c.memory_may_move(false);
    c.memory_reservation_for_growth(0);
    c.consume_fuel(true);
    c.max_wasm_stack(MAX_WASM_STACK);
    c.async_stack_size(ASYNC_STACK);
    // Not from `WASMTIME_BACKTRACE_DETAILS`: what a record shows must not
    // depend on the worker's environment.
    c.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
    c
}

impl SandboxConfig {
    /// Job instances the pool holds: one per running attempt, plus slack for
    /// instances being torn down.
    pub fn slots(&self) -> u32 {
        self.concurrency.max(1).saturating_add(4)
    }

    /// The memory layout of this node ([`MemoryLayout::for_node`]).
    pub fn layout(&self) -> MemoryLayout {
        MemoryLayout::for_node(self.slots(), self.max_memory_bytes)
    }
}

pub(super) fn wasmtime_config(config: &SandboxConfig) -> Config {
    wasmtime_config_with(config, config.layout())
}

/// A node's engine settings with memories laid out as `layout` says (which
/// must reserve at least `config.max_memory_bytes`), not as its size picks.
pub(super) fn wasmtime_config_with(config: &SandboxConfig, layout: MemoryLayout) -> Config {
    let mut c = compile_config(layout);

    // Pool sized from the node's concurrency (`slots`). A Rust wasip2 component
    // holds a handful of core instances, memories and tables; the per-component
    // limits are the shape checks' (so what deploy admits fits every slot).
    let slots = config.slots();
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

    #[test]
    fn memories_reserve_4_gib_while_the_pool_fits_else_the_node_cap() {
        let small = MemoryLayout::for_node(64, 1 << 30);
        assert_eq!(small.reservation, FULL_RESERVATION);
        assert!(small.elides_bounds_checks());
        let wide = MemoryLayout::for_node(20_004, 1 << 30);
        assert_eq!(wide.reservation, 1 << 30);
        assert!(!wide.elides_bounds_checks());
        assert!(wide.pool_bytes(20_004) <= POOL_ADDRESS_BUDGET);
        // A cap that is not a whole number of wasm pages is rounded up to one.
        assert_eq!(
            MemoryLayout::for_node(20_004, (1 << 20) + 1).reservation,
            (1 << 20) + (1 << 16)
        );
        // A cap of 4 GiB or more is reserved whole.
        assert_eq!(MemoryLayout::for_node(4, 6 << 30).reservation, 6 << 30);
        // The switch comes where the 4 GiB reservations stop fitting.
        let per_slot = u64::from(shape::MAX_MEMORIES) * (FULL_RESERVATION + MEMORY_GUARD);
        let last = (FULL_RESERVATION_BUDGET / per_slot) as u32;
        assert!(MemoryLayout::for_node(last, 1 << 30).elides_bounds_checks());
        assert!(!MemoryLayout::for_node(last + 1, 1 << 30).elides_bounds_checks());
    }

    #[test]
    fn a_pool_past_the_address_space_is_refused_with_the_numbers() {
        let err = Sandbox::new(&SandboxConfig {
            concurrency: 20_000,
            max_memory_bytes: 4 << 30,
            cache_dir: None,
        })
        .err()
        .expect("refused");
        let message = err.to_string();
        assert!(
            message.contains("--concurrency 20000 with --max-memory 4096 MiB")
                && message.contains("lower --max-memory or --concurrency"),
            "{message}"
        );
    }

    #[test]
    fn compiled_code_is_cached_per_memory_layout() {
        let key = |layout| {
            super::super::cache::engine_key(&Engine::new(&compile_config(layout)).unwrap())
        };
        let full = MemoryLayout::for_node(1, 1 << 30);
        let sized = MemoryLayout::for_node(20_004, 1 << 30);
        assert_ne!(key(full), key(sized));
        assert_ne!(
            key(sized),
            key(MemoryLayout {
                reservation: 2 << 30,
                ..sized
            })
        );
        assert_eq!(key(sized), key(sized));
    }

    /// `(module (memory 1) (func (export "grow") (param i32) (result i32)
    /// (memory.grow (local.get 0))) (func (export "load") (param i32)
    /// (result i32) (i32.load (local.get 0))))`
    fn grower() -> Vec<u8> {
        use wasm_encoder::{
            CodeSection, ExportKind, ExportSection, Function, FunctionSection, MemArg,
            MemorySection, MemoryType, Module, TypeSection, ValType,
        };
        let mut m = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([ValType::I32], [ValType::I32]);
        m.section(&types);
        let mut funcs = FunctionSection::new();
        funcs.function(0);
        funcs.function(0);
        m.section(&funcs);
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        m.section(&memories);
        let mut exports = ExportSection::new();
        exports.export("grow", ExportKind::Func, 0);
        exports.export("load", ExportKind::Func, 1);
        m.section(&exports);
        let mut code = CodeSection::new();
        let mut grow = Function::new([]);
        grow.instructions().local_get(0).memory_grow(0).end();
        code.function(&grow);
        let mut load = Function::new([]);
        load.instructions()
            .local_get(0)
            .i32_load(MemArg {
                offset: 0,
                align: 2,
                memory_index: 0,
            })
            .end();
        code.function(&load);
        m.section(&code);
        m.finish()
    }

    /// A memory under a reservation sized to the node's cap (bounds checks
    /// explicit) with a class cap equal to it: it grows to the cap and no
    /// further, every byte below its size is readable, and any access past
    /// it traps as out of bounds, inside the reservation, inside the guard
    /// and far past both.
    #[tokio::test]
    async fn a_sized_reservation_still_bounds_every_access() {
        use crate::sandbox::limits::{MemoryLimitExceeded, StoreLimits};
        use wasmtime::{Store, Trap};
        const CAP: u64 = 2 << 20;
        let config = SandboxConfig {
            concurrency: 1,
            max_memory_bytes: CAP,
            cache_dir: None,
        };
        let layout = MemoryLayout {
            reservation: CAP,
            guard: MEMORY_GUARD,
        };
        assert!(!layout.elides_bounds_checks());
        let engine = Engine::new(&wasmtime_config_with(&config, layout)).unwrap();
        let module = wasmtime::Module::new(&engine, grower()).unwrap();
        let mut store = Store::new(&engine, StoreLimits::new(CAP));
        store.limiter(|l| l);
        store.set_fuel(u64::MAX).unwrap();
        let instance = wasmtime::Instance::new_async(&mut store, &module, &[])
            .await
            .unwrap();
        let grow = instance
            .get_typed_func::<i32, i32>(&mut store, "grow")
            .unwrap();
        let load = instance
            .get_typed_func::<i32, i32>(&mut store, "load")
            .unwrap();
        let pages = (CAP >> 16) as i32;
        let out_of_bounds = |e: wasmtime::Error| {
            assert_eq!(
                e.downcast_ref::<Trap>(),
                Some(&Trap::MemoryOutOfBounds),
                "{e:?}"
            );
        };
        // One page: its last word reads, the next one traps.
        assert_eq!(load.call_async(&mut store, 65_532).await.unwrap(), 0);
        out_of_bounds(load.call_async(&mut store, 65_536).await.unwrap_err());
        // Up to the cap (the whole reservation).
        assert_eq!(grow.call_async(&mut store, pages - 1).await.unwrap(), 1);
        assert_eq!(
            load.call_async(&mut store, CAP as i32 - 4).await.unwrap(),
            0
        );
        // Past it: inside the guard, past the guard, at the top of the index
        // space, and a word straddling the end.
        for at in [
            CAP as i32,
            (CAP + MEMORY_GUARD / 2) as i32,
            (CAP + MEMORY_GUARD + (1 << 20)) as i32,
            -4,
            CAP as i32 - 2,
        ] {
            out_of_bounds(load.call_async(&mut store, at).await.unwrap_err());
        }
        // One page more: refused as the class's memory limit.
        let err = grow.call_async(&mut store, 1).await.unwrap_err();
        assert!(
            err.downcast_ref::<MemoryLimitExceeded>().is_some(),
            "{err:?}"
        );
    }
}

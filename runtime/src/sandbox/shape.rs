//! Shape checks: what a component asks of the host, read with `wasmparser`
//! before anything is compiled.
//!
//! Deploy and workers run [`check_component`] on every module before compiling
//! it: a module whose memories or tables cannot fit its class's caps or the
//! workers' pool is refused with the numbers, and a module shaped to make the
//! compiler run away (tens of thousands of locals, huge bodies, deep nesting)
//! is refused in milliseconds instead of compiling for minutes. The check is
//! linear in the module's size and allocates little, so it is safe on any
//! input (it is what the deploy-validation fuzz target drives).
//!
//! Every limit below is meant to be far above what the SDK's guests use (a
//! Rust wasip2 job is one main module plus a few wit-component shims, one
//! memory of about 1 MiB, a table or two, a few hundred functions, ~100 KiB of
//! code); the shipped examples all deploy under them (the integration tests
//! deploy every one).
//!
//! The walk over a component's sections is in `walk`; the checks of its
//! memories, tables and instances against the caps and the pool, with the
//! numbers their refusals name, in `refusal`.

mod refusal;
#[cfg(test)]
pub(crate) mod tests;
mod walk;

use std::fmt;

pub use walk::check_component;

/// Core modules one component may define (nested components included).
pub const MAX_CORE_MODULES: usize = 32;
/// Core instances one component may create (its pool slot holds this many).
pub const MAX_CORE_INSTANCES: u32 = 16;
/// Linear memories one core module may define (the pool's per-module limit).
pub const MAX_MEMORIES_PER_MODULE: u32 = 1;
/// Linear memories one component instance may hold.
pub const MAX_MEMORIES: u32 = 2;
/// Tables one core module may define (the pool's per-module limit).
pub const MAX_TABLES_PER_MODULE: u32 = 1;
/// Tables one component instance may hold.
pub const MAX_TABLES: u32 = 16;
/// Functions (imported and defined) of one core module: bounds the instance's
/// context, which the pool holds in 1 MiB.
pub const MAX_FUNCTIONS: u32 = 20_000;
/// Globals of one core module.
pub const MAX_GLOBALS: u32 = 1_000;
/// Types of one core module.
pub const MAX_TYPES: u32 = 20_000;
/// Locals (parameters excluded) of one function: compile time grows with
/// locals times body size.
pub const MAX_LOCALS_PER_FUNCTION: u32 = 5_000;
/// Locals of all the functions of one core module.
pub const MAX_TOTAL_LOCALS: u64 = 500_000;
/// Bytes of one function body.
pub const MAX_FUNCTION_BYTES: usize = 1 << 20;
/// Bytes of code (all function bodies) in one component.
pub const MAX_CODE_BYTES: usize = 16 << 20;
/// Nested blocks (`block`, `loop`, `if`, `try`) in one function.
pub const MAX_BLOCK_DEPTH: u32 = 1_000;
/// Components nested in one another.
pub const MAX_COMPONENT_DEPTH: u32 = 4;

/// The memory caps a module is checked against.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// The class's `memory`: all of a job's linear memory together.
    pub class_memory_bytes: u64,
    /// The size of one memory slot of the workers' pool (their `--max-memory`).
    pub pool_memory_bytes: u64,
}

/// What a component asks for when it is instantiated, as read before compiling.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Core modules defined.
    pub modules: usize,
    /// Core instances created by instantiating a module.
    pub core_instances: u32,
    /// Linear memories defined by the instantiated modules.
    pub memories: u32,
    /// Tables defined by the instantiated modules.
    pub tables: u32,
    /// Linear memory all instantiated memories start with, bytes.
    pub initial_memory_bytes: u64,
    /// The largest initial size of one memory, bytes.
    pub largest_memory_bytes: u64,
    /// Elements all instantiated tables start with.
    pub initial_table_elements: u64,
    /// Functions, over all modules.
    pub functions: u64,
    /// Bytes of code, over all modules.
    pub code_bytes: usize,
    /// The most locals of one function.
    pub max_locals: u32,
    /// The largest function body, bytes.
    pub max_function_bytes: usize,
    /// The deepest block nesting of one function.
    pub max_block_depth: u32,
}

/// Why a module was refused: one sentence with the numbers and what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeError {
    /// Whether the module is well formed but needs more memory or table
    /// space than its class or the pool gives (`memory_limit` when met at run
    /// time), as opposed to malformed or shaped beyond the compile bounds.
    pub too_big_to_run: bool,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ShapeError {}

/// A size in MiB for messages (`4096 MiB`, `0.06 MiB`).
pub fn mib(bytes: u64) -> String {
    if bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
    }
}

//! The sandbox: runs one attempt of a job in a fresh wasmtime store under its
//! class's limits, and reports what it used.
//!
//! The rest of the runtime speaks in job terms ([`Limits`]: CPU time, fuel,
//! memory bytes, timeout); this module alone turns them into wasmtime settings.
//!
//! # Fuel, not epochs
//! CPU is metered with fuel, and fuel also provides the interruption points: the
//! store yields to tokio every [`YIELD_INTERVAL`] units of fuel, and at each yield
//! the attempt's CPU time, wall-clock deadline and shutdown signal are checked.
//! Measured with `stoker bench --metering` ([`calibrate`]) on this machine kind,
//! on the call-heavy `fib` example: fuel 1.40x, epochs 1.29x, both 1.90x (on tight
//! loops, measured for wasmtime 48: fuel 1.11x, epochs 1.00-1.04x). Paying both is
//! out; of the two, fuel gives a deterministic instruction count (`fuel_used`,
//! the optional `fuel` budget) besides the interruption points, so epochs are not
//! enabled at all.
//! A guest parked in a host call consumes no fuel; every host call carries its
//! own deadline, and the wall-clock timer fires there because the call is async.

mod bounded;
mod bounded_redis;
mod cache;
pub mod calibrate;
pub mod compile;
mod engine;
mod limits;
mod run;
pub mod shape;
mod state;

pub use engine::{
    DEFAULT_POOL_MEMORY, JobModule, MAX_MODULE_BYTES, MemoryLayout, ModuleRefused, Sandbox,
    SandboxConfig,
};
pub use limits::MAX_TABLE_ELEMENTS;
pub use run::{Attempt, Failure, MAX_ERROR_MESSAGE_BYTES, RunOutcome, RunReport, Usage};
pub use shape::{Caps, Shape, ShapeError, check_component};

/// Fuel between two yields to the host (about 0.3-1 ms of guest execution):
/// bounds how late a CPU-time, deadline or shutdown check can come.
pub const YIELD_INTERVAL: u64 = 1_000_000;

pub use crate::config::Limits;

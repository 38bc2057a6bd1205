//! Host functions: what a job can reach, one file per capability.
//!
//! Each capability has the same shape: its per-attempt state (a field of the
//! store's state), its limits, and its impl of the generated `Host` trait, linked
//! by [`crate::sandbox`] with access to that field only.
//!
//! - [`log`]: the `stoker:job/log` interface, into the job's capped log.
//! - [`stdio`]: WASI stdout and stderr, captured into the same log.

pub mod log;
pub mod stdio;

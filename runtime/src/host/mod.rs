//! Host functions: what a job can reach, one file per capability.
//!
//! Each capability has the same shape: its per-attempt state (a field of the
//! store's state), its limits, and its impl of the generated `Host` trait, linked
//! by [`crate::sandbox`] with access to that field only.
//!
//! - [`checkpoint`]: the `stoker:job/checkpoint` and `stoker:job/enqueue`
//!   interfaces: commits, child jobs, and the host's request to stop.
//! - [`batch`]: the `stoker:job/batch` interface: batches of child jobs with
//!   callbacks, staged like child jobs.
//! - [`http`]: `wasi:http/outgoing-handler`, through one policy point:
//!   allowlist, SSRF guard, timeouts, size caps, retries, idempotency keys;
//!   [`origin`] checks a request's authority, [`egress`] holds the table of
//!   addresses no call may reach, [`http_wire`] connects and reads.
//! - [`log`]: the `stoker:job/log` interface, into the job's capped log.
//! - [`redis`]: the `stoker:job/redis` interface: typed operations under the
//!   class's key-prefix ACL and quotas; writes immediate or staged.
//! - [`stdio`]: WASI stdout and stderr, captured into the same log.

pub mod batch;
pub mod checkpoint;
pub mod egress;
pub mod http;
pub mod http_wire;
pub mod log;
pub mod origin;
pub mod redis;
pub mod stdio;

//! Host functions: what a job can reach, one context per capability.
//!
//! Each capability has the same shape, after wasmtime-wasi's `WasiCtx` and
//! `WasiCtxView`: a context that owns its per-attempt state and its limits
//! (`RedisCtx`, `HttpCtx`, ...), built from the class when the attempt starts,
//! and its impl of the generated `Host` trait ([`crate::wit`]) on a [`View`]
//! of that context: its own state, the job's lease ([`JobLink`]) and what is
//! staged for the next commit ([`Staged`](crate::queue::staged::Staged)).
//! The sandbox holds one field per context and makes each call's view in one
//! place, which counts the call. Adding a capability is adding its file here,
//! its field and its linking in the sandbox.
//!
//! - [`job`]: the job's side of an attempt: its lease, what the worker hands
//!   the sandbox and gets back ([`JobContext`]), and the view.
//! - [`checkpoint`]: the `stoker:job/checkpoint` interface: commits, and the
//!   host's request to stop.
//! - [`enqueue`]: the `stoker:job/enqueue` interface: child jobs, staged, in
//!   bounded job trees.
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
pub mod enqueue;
pub mod http;
pub mod http_wire;
pub mod job;
pub mod log;
pub mod redis;
pub mod stdio;

pub use job::{ClassQueues, JobContext, JobLink, View};

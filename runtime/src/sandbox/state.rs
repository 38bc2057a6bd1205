//! The per-attempt store state: one field per capability; each host module
//! borrows only its own field.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::stoker;
use super::limits::StoreLimits;
use crate::config::Limits;
use crate::host::checkpoint::{JobContext, JobHost, Meter};
use crate::host::http::HttpHooks;
use crate::host::log::JobLog;
use crate::host::stdio::Captured;

/// Everything one attempt's store holds.
pub struct JobState {
    /// WASI: no preopened directories, no environment, no arguments, no sockets
    /// or name lookups; stdout and stderr captured into `log`.
    pub wasi: WasiCtx,
    /// WASI resources (streams, pollables).
    pub table: ResourceTable,
    /// Memory and table caps.
    pub limits: StoreLimits,
    /// The job's log.
    pub log: JobLog,
    /// The job's link to the runtime: checkpoints, child jobs, Redis.
    pub job: JobHost,
    /// wasi:http's state.
    pub http: WasiHttpCtx,
    /// The HTTP policy point.
    pub http_hooks: HttpHooks,
}

impl JobState {
    /// A fresh state for one attempt under `limits`, of the queued job `job`
    /// (none: a module run outside a queue), its CPU time counted in `cpu_ns`.
    pub fn new(limits: &Limits, job: Option<JobContext>, cpu_ns: Arc<AtomicU64>) -> Self {
        let log = JobLog::new(limits.log_bytes);
        let started = Instant::now();
        let http_hooks = match &job {
            Some(j) => HttpHooks::new(
                j.http.clone(),
                j.id.clone(),
                j.lease,
                j.calls.clone(),
                started + Duration::from_millis(limits.timeout_ms),
                log.clone(),
                Some(j.conn.clone()),
            ),
            None => HttpHooks::new(
                Default::default(),
                String::new(),
                0,
                Default::default(),
                started,
                log.clone(),
                None,
            ),
        };
        let wasi = WasiCtx::builder()
            .stdout(Captured(log.clone()))
            .stderr(Captured(log.clone()))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        JobState {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimits::new(limits.memory_bytes),
            log,
            job: JobHost {
                meter: Meter {
                    started,
                    cpu_ns,
                    cpu_budget: Duration::from_millis(limits.cpu_ms),
                    timeout: Duration::from_millis(limits.timeout_ms),
                    slice: limits.slice_ms.map(Duration::from_millis),
                    retained: limits.retained_bytes,
                },
                ctx: job,
            },
            http: WasiHttpCtx::new(),
            http_hooks,
        }
    }
}

/// Links everything a job may import: WASI (sandboxed by [`JobState::new`])
/// and the `stoker:job` interfaces, each with access to its own field; the
/// imports that take large arguments are then relinked by
/// [`super::bounded`], which bounds them before copying.
pub fn link(linker: &mut Linker<JobState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)
        .map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
        .map_err(|e| anyhow::anyhow!("linking wasi:http: {e}"))?;
    stoker::job::log::add_to_linker::<JobState, HasSelf<JobLog>>(linker, |s| &mut s.log)
        .map_err(|e| anyhow::anyhow!("linking stoker:job/log: {e}"))?;
    stoker::job::checkpoint::add_to_linker::<JobState, HasSelf<JobHost>>(linker, |s| &mut s.job)
        .map_err(|e| anyhow::anyhow!("linking stoker:job/checkpoint: {e}"))?;
    stoker::job::enqueue::add_to_linker::<JobState, HasSelf<JobHost>>(linker, |s| &mut s.job)
        .map_err(|e| anyhow::anyhow!("linking stoker:job/enqueue: {e}"))?;
    stoker::job::batch::add_to_linker::<JobState, HasSelf<JobHost>>(linker, |s| &mut s.job)
        .map_err(|e| anyhow::anyhow!("linking stoker:job/batch: {e}"))?;
    stoker::job::redis::add_to_linker::<JobState, HasSelf<JobHost>>(linker, |s| &mut s.job)
        .map_err(|e| anyhow::anyhow!("linking stoker:job/redis: {e}"))?;
    // Imports taking bytes that must be bounded before they are copied out of
    // guest memory, relinked over the arguments in place.
    super::bounded::link(linker)
}

impl WasiHttpView for JobState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl WasiView for JobState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

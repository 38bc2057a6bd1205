//! The per-attempt store state: one field per capability, each the
//! capability's own context ([`crate::host`]), built from the class and the
//! job when the attempt starts; what is staged for the next commit, shared by
//! the capabilities that stage; and the one place every `stoker:job` host
//! call passes to get its view ([`JobState::view`]).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use super::limits::StoreLimits;
use crate::config::Limits;
use crate::host::checkpoint::{CheckpointCtx, Meter, Signals};
use crate::host::enqueue::{EnqueueCtx, TreeLimits};
use crate::host::http::HttpCtx;
use crate::host::log::JobLog;
use crate::host::redis::RedisCtx;
use crate::host::stdio::Captured;
use crate::host::{JobContext, JobLink, View};
use crate::queue::staged::Staged;
use crate::wit::stoker;

/// Everything one attempt's store holds.
pub struct JobState {
    /// WASI: no preopened directories, no environment, no arguments, no sockets
    /// or name lookups; stdout and stderr captured into `log`.
    pub wasi: WasiCtx,
    /// WASI resources (streams, pollables, HTTP requests and bodies).
    pub table: ResourceTable,
    /// Memory and table caps.
    pub limits: StoreLimits,
    /// The job's log (`stoker:job/log`, stdout, stderr).
    pub log: JobLog,
    /// Outbound HTTP: wasi:http's state and the policy point.
    pub http: HttpCtx,
    /// Checkpoints and should-yield.
    pub checkpoint: CheckpointCtx,
    /// Child jobs and batches.
    pub enqueue: EnqueueCtx,
    /// Redis reads and writes.
    pub redis: RedisCtx,
    /// What is staged for the next commit.
    pub staged: Staged,
    /// The queued job's lease; none when the sandbox runs a module outside a
    /// queue (calibration).
    pub job: Option<JobLink>,
    /// `stoker:job` host calls made, by capability.
    pub calls: HostCalls,
}

/// `stoker:job` host calls an attempt made, counted where each call gets its
/// view.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostCalls {
    /// Checkpoint and should-yield calls.
    pub checkpoint: u64,
    /// Enqueue and batch calls.
    pub enqueue: u64,
    /// Redis calls.
    pub redis: u64,
}

/// A capability whose host calls get a [`View`] of its context.
pub trait Capability: Sized + Send + 'static {
    /// Its name in traces.
    const NAME: &'static str;
    /// Its context among the store's fields, and its call counter.
    fn pick(f: Fields<'_>) -> (&mut Self, &mut u64);
}

impl Capability for CheckpointCtx {
    const NAME: &'static str = "checkpoint";
    fn pick(f: Fields<'_>) -> (&mut Self, &mut u64) {
        (f.checkpoint, &mut f.calls.checkpoint)
    }
}

impl Capability for EnqueueCtx {
    const NAME: &'static str = "enqueue";
    fn pick(f: Fields<'_>) -> (&mut Self, &mut u64) {
        (f.enqueue, &mut f.calls.enqueue)
    }
}

impl Capability for RedisCtx {
    const NAME: &'static str = "redis";
    fn pick(f: Fields<'_>) -> (&mut Self, &mut u64) {
        (f.redis, &mut f.calls.redis)
    }
}

/// The linker's handle on capability `C`'s view.
struct Cap<C>(std::marker::PhantomData<C>);

impl<C: Capability> HasData for Cap<C> {
    type Data<'a> = View<'a, C>;
}

impl JobState {
    /// A fresh state for one attempt under `limits`, of the queued job `job`
    /// (none: a module run outside a queue), its CPU time counted in `cpu_ns`.
    pub fn new(limits: &Limits, job: Option<JobContext>, cpu_ns: Arc<AtomicU64>) -> Self {
        let log = JobLog::new(limits.log_bytes);
        let started = Instant::now();
        let meter = Meter {
            started,
            cpu_ns,
            cpu_budget: Duration::from_millis(limits.cpu_ms),
            timeout: Duration::from_millis(limits.timeout_ms),
            slice: limits.slice_ms.map(Duration::from_millis),
            retained: limits.retained_bytes,
        };
        let wasi = WasiCtx::builder()
            .stdout(Captured(log.clone()))
            .stderr(Captured(log.clone()))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let (http, checkpoint, enqueue, redis, staged, link) = match job {
            Some(j) => (
                HttpCtx::new(
                    j.http,
                    started + Duration::from_millis(limits.timeout_ms),
                    log.clone(),
                    Some(&j.link),
                ),
                CheckpointCtx::new(
                    meter,
                    Some(Signals {
                        classes: j.classes.clone(),
                        shutdown: j.shutdown,
                        quiet_from: j.quiet_from,
                    }),
                ),
                EnqueueCtx::new(Some(j.classes), j.depth, j.tree),
                RedisCtx::new(j.redis),
                j.staged,
                Some(j.link),
            ),
            None => (
                HttpCtx::new(Default::default(), started, log.clone(), None),
                CheckpointCtx::new(meter, None),
                EnqueueCtx::new(None, 0, TreeLimits::default()),
                RedisCtx::new(Default::default()),
                Staged::default(),
                None,
            ),
        };
        JobState {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimits::new(limits.memory_bytes),
            log,
            http,
            checkpoint,
            enqueue,
            redis,
            staged,
            job: link,
            calls: HostCalls::default(),
        }
    }

    /// What a host call of capability `C` borrows: every `stoker:job` call
    /// passes here, where it is counted and traced.
    pub fn view<C: Capability>(&mut self) -> View<'_, C> {
        let JobState {
            checkpoint,
            enqueue,
            redis,
            staged,
            job,
            calls,
            ..
        } = self;
        // Split borrows: the capability's field, the lease and the staged
        // value are distinct fields of the store.
        let (ctx, count) = C::pick(Fields {
            checkpoint,
            enqueue,
            redis,
            calls,
        });
        *count += 1;
        tracing::trace!(capability = C::NAME, calls = *count, "host call");
        View {
            ctx,
            job: job.as_mut(),
            staged,
        }
    }

    /// The job's context as the attempt left it: its lease and commits, what
    /// is still staged, the last stop reason, whether it was parked.
    pub fn take_job(&mut self) -> Option<JobContext> {
        let link = self.job.take()?;
        let signals = self.checkpoint.signals.take()?;
        let classes = self.enqueue.classes.take()?;
        Some(JobContext {
            link,
            classes,
            shutdown: signals.shutdown,
            redis: self.redis.access().clone(),
            http: self.http.access().clone(),
            depth: self.enqueue.depth,
            tree: self.enqueue.tree,
            quiet_from: signals.quiet_from,
            staged: std::mem::take(&mut self.staged),
            snapshot_bytes: self.checkpoint.snapshot_bytes,
            stop: self.checkpoint.stop,
            parked: self.http.parked(),
        })
    }
}

/// The store's capability fields, borrowed apart from the lease and the
/// staged value.
pub struct Fields<'a> {
    checkpoint: &'a mut CheckpointCtx,
    enqueue: &'a mut EnqueueCtx,
    redis: &'a mut RedisCtx,
    calls: &'a mut HostCalls,
}

/// Links everything a job may import: WASI (sandboxed by [`JobState::new`])
/// and the `stoker:job` interfaces, each with a view of its own context; the
/// imports that take large arguments are then relinked by
/// [`super::bounded`], which bounds them before copying.
pub fn link(linker: &mut Linker<JobState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)
        .map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
        .map_err(|e| anyhow::anyhow!("linking wasi:http: {e}"))?;
    stoker::job::log::add_to_linker::<JobState, HasSelf<JobLog>>(linker, |s| &mut s.log)
        .map_err(|e| anyhow::anyhow!("linking stoker:job/log: {e}"))?;
    stoker::job::checkpoint::add_to_linker::<JobState, Cap<CheckpointCtx>>(linker, |s| s.view())
        .map_err(|e| anyhow::anyhow!("linking stoker:job/checkpoint: {e}"))?;
    stoker::job::enqueue::add_to_linker::<JobState, Cap<EnqueueCtx>>(linker, |s| s.view())
        .map_err(|e| anyhow::anyhow!("linking stoker:job/enqueue: {e}"))?;
    stoker::job::batch::add_to_linker::<JobState, Cap<EnqueueCtx>>(linker, |s| s.view())
        .map_err(|e| anyhow::anyhow!("linking stoker:job/batch: {e}"))?;
    stoker::job::redis::add_to_linker::<JobState, Cap<RedisCtx>>(linker, |s| s.view())
        .map_err(|e| anyhow::anyhow!("linking stoker:job/redis: {e}"))?;
    // Imports taking bytes that must be bounded before they are copied out of
    // guest memory, relinked over the arguments in place.
    super::bounded::link(linker)
}

impl WasiHttpView for JobState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let seq = self.job.as_ref().map_or(0, |j| j.seq);
        self.http.view(&mut self.table, seq)
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

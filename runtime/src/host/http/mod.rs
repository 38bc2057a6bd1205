//! Outbound HTTP: standard `wasi:http/outgoing-handler` for the guest, one
//! policy point on the host. Every request a job makes passes through
//! [`HttpHooks::send_request`]:
//!
//! 1. **Origin**: the request's scheme and authority are checked and
//!    normalised by [`check_uri`](crate::config::origin::check_uri) (userinfo,
//!    percent-encoding, zones, odd ports and characters are refused:
//!    `HTTP-request-URI-invalid`); the result must be an origin the class
//!    names in `http.allow`, otherwise `HTTP-request-denied`. The `Host`
//!    header is always the checked origin's, whatever the job set.
//! 2. **SSRF guard**: a name is resolved here, and every address it resolves
//!    to is judged by the special-purpose address table of
//!    [`egress`](super::egress) (loopback, private, link-local with the cloud
//!    metadata address, unique-local, documentation, reserved, multicast,
//!    and the IPv6 forms that embed IPv4, decoded or refused); the connection
//!    goes to an address that passed, never to a second lookup (no DNS
//!    rebinding). Refused: `destination-IP-prohibited`. The one way to reach
//!    such an address is explicit: the operator names that exact IP literal
//!    in `http.allow` (as the tests do for their 127.0.0.1 servers), and a
//!    request to that literal is trusted as named. A name (DNS, or pinned by
//!    `stoker worker --resolve`) is always checked, even one that resolves to
//!    an allowed literal's address.
//! 3. **Limits**: connect, first-byte and whole-request timeouts, all bounded by
//!    the attempt's deadline; request and response body caps
//!    (`HTTP-request-body-size`, `HTTP-response-body-size`); request and
//!    response header caps ([`MAX_REQUEST_HEADERS`],
//!    [`MAX_REQUEST_HEAD_BYTES`], [`MAX_RESPONSE_HEADERS`],
//!    [`MAX_RESPONSE_HEAD_BYTES`]); no proxy from the environment; redirects
//!    are returned to the job, never followed here (a follow is a new request
//!    through this same policy).
//! 4. **Retries**: an idempotent request (GET, HEAD, PUT, DELETE, OPTIONS), or
//!    one the job marks with the header `stoker-retry: 1`, or any request of a
//!    class whose retry policy is "calls APIs" (see `config::RetryPolicy`), is
//!    retried by the host
//!    on a connection failure or a 502/503/504, up to `http.retries` times with
//!    backoff. Each request carries `Idempotency-Key: JOB-SEQ-N` (unless the job
//!    sets one): job id, the checkpoint sequence it runs after and its index
//!    since that checkpoint, so a step repeated after a crash repeats its calls
//!    with the same keys.
//!
//! 5. **Destinations**: an origin with `[destinations."ORIGIN"]` passes its
//!    circuit breaker and then its limiters (in order) before each call,
//!    after the SSRF guard and before connecting: rates and windows first (a
//!    rate reserves the call's turn when it comes within the limiter's
//!    `wait_timeout`, so waiters queue in order instead of racing), then
//!    concurrency (asked again when it says a slot may be free, for up to its
//!    `wait_timeout`). Past that, or when the breaker is open, the job is
//!    *parked*: the call fails
//!    with `internal-error("stoker-parked: ...")` (the SDK turns it into a
//!    yield), and when the attempt ends the job waits in the scheduled set
//!    until the limiter or breaker expects capacity, without using a retry,
//!    and resumes from its last checkpoint. A concurrent slot is held until
//!    the response body is read or dropped.
//!
//! Each refusal and failure is written to the job's log with its reason, in
//! one bounded line (see [`http_wire`](super::http_wire)); what reaches the
//! guest is a `wasi:http` error code, never host text that depends on the
//! host's environment.

mod gate;
mod guard;
mod transport;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
};

pub use self::guard::pin_names;
pub use super::http_wire::{MAX_RESPONSE_HEAD_BYTES, MAX_RESPONSE_HEADERS};
use super::job::JobLink;
use super::log::JobLog;
use crate::config::HttpAccess;
use crate::queue::Conn;

/// The header a job sets to have a non-idempotent request retried.
pub const RETRY_HEADER: &str = "stoker-retry";

/// How a parking refusal starts its `internal-error` message (the SDK looks
/// for it).
pub const PARKED: &str = "stoker-parked: ";

/// Most headers a request may carry; more: `HTTP-request-header-section-size`.
pub const MAX_REQUEST_HEADERS: usize = 100;
/// Largest request header section (names, values, `: ` and CRLF), bytes;
/// more: `HTTP-request-header-section-size`.
pub const MAX_REQUEST_HEAD_BYTES: usize = 64 << 10;
/// Longest `METHOD URL` quoted in a log line, bytes.
const LOGGED_REQUEST: usize = 240;

/// Why and for how long an attempt's job is parked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Park {
    /// Until the limiter or breaker expects capacity.
    pub delay: Duration,
    /// Which limiter or breaker, for the log and the record.
    pub reason: String,
}

/// Which call of the job this is, for idempotency keys (numbered again from
/// each commit), and what the attempt's calls met; shared with the calls'
/// futures, which outlive the host call that starts them.
#[derive(Debug, Default)]
pub struct CallCounter {
    /// The last committed checkpoint sequence.
    pub seq: u64,
    /// Requests made since it.
    pub index: u64,
    /// Requests made in this attempt.
    pub made: u64,
    /// Requests refused by the policy in this attempt.
    pub refused: u64,
    /// Set when a destination's limiter or breaker parked the job.
    pub parked: Option<Park>,
    /// Time spent waiting for destination limiters, this attempt.
    pub waited: Duration,
}

/// The HTTP capability's state for one attempt: wasi:http's own state and
/// the policy point every request passes ([`HttpHooks`]).
pub struct HttpCtx {
    wasi: WasiHttpCtx,
    hooks: HttpHooks,
}

impl HttpCtx {
    /// The state of an attempt under `access`, which must end by `deadline`,
    /// logging into `log`; `job` is the queued job's lease (none: a module run
    /// outside a queue, whose destinations' limiters are not asked).
    pub fn new(
        access: Arc<HttpAccess>,
        deadline: Instant,
        log: JobLog,
        job: Option<&JobLink>,
    ) -> HttpCtx {
        no_host_backtraces();
        let seq = job.map_or(0, |j| j.seq);
        HttpCtx {
            wasi: WasiHttpCtx::new(),
            hooks: HttpHooks {
                access,
                job_id: job.map_or_else(String::new, |j| j.id.clone()),
                attempt: job.map_or(0, |j| j.lease),
                seq,
                calls: Arc::new(Mutex::new(CallCounter {
                    seq,
                    ..Default::default()
                })),
                deadline,
                log,
                conn: job.map(|j| j.conn.clone()),
            },
        }
    }

    /// What wasi:http borrows for one call, with the resource `table`; `seq`
    /// is the job's last committed sequence, which starts the numbering of
    /// idempotency keys again when it moved.
    pub fn view<'a>(&'a mut self, table: &'a mut ResourceTable, seq: u64) -> WasiHttpCtxView<'a> {
        self.hooks.seq = seq;
        WasiHttpCtxView {
            ctx: &mut self.wasi,
            table,
            hooks: &mut self.hooks,
        }
    }

    /// The class's HTTP access.
    pub fn access(&self) -> &Arc<HttpAccess> {
        &self.hooks.access
    }

    /// Requests made and refused by this attempt, and the time they waited
    /// for destination limiters.
    pub fn counts(&self) -> (u64, u64, Duration) {
        let c = lock(&self.hooks.calls);
        (c.made, c.refused, c.waited)
    }

    /// Whether a destination parked the job, and why.
    pub fn parked(&self) -> Option<Park> {
        lock(&self.hooks.calls).parked.clone()
    }
}

/// The policy point of one attempt.
pub struct HttpHooks {
    access: Arc<HttpAccess>,
    job_id: String,
    attempt: u32,
    /// The job's last committed sequence, as of this call.
    seq: u64,
    calls: Arc<Mutex<CallCounter>>,
    deadline: Instant,
    log: JobLog,
    conn: Option<Conn>,
}

fn lock(calls: &Mutex<CallCounter>) -> std::sync::MutexGuard<'_, CallCounter> {
    calls.lock().unwrap_or_else(|e| e.into_inner())
}

/// Errors wasmtime builds from the host's carry no host backtrace, whatever
/// `RUST_BACKTRACE` says: a response body's error becomes the guest's
/// `wasi:io/error`, whose `to-debug-string` is that error's `{:?}`, and a
/// trap's text goes to the job's record. What a guest or a record sees must
/// not depend on the host's environment. Process-wide, set before the first
/// attempt's guest runs.
fn no_host_backtraces() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(wasmtime::error::disable_backtrace);
}

impl HttpHooks {
    fn refuse(&self, what: &str, why: &str) {
        refused(&self.calls, &self.log, what, why);
    }
}

/// Counts a refusal and logs `warn: http: refused WHAT: WHY`.
fn refused(calls: &Mutex<CallCounter>, log: &JobLog, what: &str, why: &str) {
    lock(calls).refused += 1;
    log.append(format!("warn: http: refused {what}: {why}\n").as_bytes());
}

impl WasiHttpHooks for HttpHooks {
    /// The `Host` header is set in [`transport::send`], from the checked origin.
    fn set_host_header(&mut self) -> bool {
        false
    }

    /// Every scheme reaches [`HttpHooks::plan`], which refuses all but
    /// `http` and `https` with a line in the job's log.
    fn is_supported_scheme(&mut self, _scheme: &http::uri::Scheme) -> bool {
        true
    }

    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), Error>> + Send>,
                    ),
                    Error,
                >,
            > + Send,
    > {
        let plan = self.plan(&request);
        Box::new(async move {
            let plan = plan?;
            let response = transport::send(plan, request, options).await?;
            let done: Box<dyn Future<Output = Result<(), Error>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

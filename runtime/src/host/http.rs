//! Outbound HTTP: standard `wasi:http/outgoing-handler` for the guest, one
//! policy point on the host. Every request a job makes passes through
//! [`HttpHooks::send_request`]:
//!
//! 1. **Origin**: the request's scheme and authority are checked and
//!    normalised by [`check_uri`](super::origin::check_uri) (userinfo,
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

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, Request, Response, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::egress;
use super::http_wire::{self, Note, Timeouts, bounded};
pub use super::http_wire::{MAX_RESPONSE_HEAD_BYTES, MAX_RESPONSE_HEADERS};
use super::log::JobLog;
use super::origin::check_uri;
use crate::config::{Destination, HttpAccess, Limiter, LimiterKind, Origin};
use crate::limit::{self, Decision, breaker};
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

/// Which call of the job this is, for idempotency keys; shared with the job's
/// commits, which start a new sequence.
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

/// Whether a destination parked the job of these calls, and why.
pub fn parked(calls: &Mutex<CallCounter>) -> Option<Park> {
    calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .parked
        .clone()
}

/// The policy point of one attempt.
pub struct HttpHooks {
    access: Arc<HttpAccess>,
    job_id: String,
    attempt: u32,
    calls: Arc<Mutex<CallCounter>>,
    deadline: Instant,
    log: JobLog,
    conn: Option<Conn>,
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
    /// The hooks of attempt `attempt` of job `job_id` under `access`, which
    /// must end by `deadline`; `conn` reaches the destinations' limiters and
    /// breakers (none: a module run outside a queue, whose destinations pass).
    pub fn new(
        access: Arc<HttpAccess>,
        job_id: String,
        attempt: u32,
        calls: Arc<Mutex<CallCounter>>,
        deadline: Instant,
        log: JobLog,
        conn: Option<Conn>,
    ) -> HttpHooks {
        no_host_backtraces();
        HttpHooks {
            access,
            job_id,
            attempt,
            calls,
            deadline,
            log,
            conn,
        }
    }

    /// Requests made and refused by this attempt, and the time they waited
    /// for destination limiters.
    pub fn counts(&self) -> (u64, u64, Duration) {
        let c = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        (c.made, c.refused, c.waited)
    }

    fn refuse(&self, what: &str, why: &str) {
        refused(&self.calls, &self.log, what, why);
    }
}

/// Counts a refusal and logs `warn: http: refused WHAT: WHY`.
fn refused(calls: &Mutex<CallCounter>, log: &JobLog, what: &str, why: &str) {
    calls.lock().unwrap_or_else(|e| e.into_inner()).refused += 1;
    log.append(format!("warn: http: refused {what}: {why}\n").as_bytes());
}

/// Names resolved by the operator (`stoker worker --resolve NAME:IP`), not by
/// DNS; set once at start.
static PINNED: std::sync::OnceLock<std::collections::HashMap<String, Vec<IpAddr>>> =
    std::sync::OnceLock::new();

/// Resolves each name in `names` to its addresses instead of asking DNS, for
/// this process. The SSRF guard applies to them as to any lookup.
pub fn pin_names(names: std::collections::HashMap<String, Vec<IpAddr>>) {
    let _ = PINNED.set(names);
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

/// `METHOD scheme://authority/path` for the log: bounded, userinfo masked.
fn describe(method: &Method, uri: &http::Uri) -> String {
    let authority = uri.authority().map_or("", |a| a.as_str());
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("[userinfo]@{host}"),
        None => authority.to_owned(),
    };
    let target = uri.path_and_query().map_or("", |p| p.as_str());
    let scheme = uri.scheme_str().unwrap_or("https");
    bounded(
        &format!("{method} {scheme}://{authority}{target}"),
        LOGGED_REQUEST,
    )
}

/// How many headers `h` holds and their size on the wire, bytes.
fn head_size(h: &HeaderMap) -> (usize, usize) {
    let bytes = h.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    (h.len(), bytes)
}

/// A request the policy let through: where it goes and how.
struct Plan {
    origin: Origin,
    /// The allowlist names this IP literal: connect to it as named.
    literal: Option<IpAddr>,
    retries: u32,
    idempotency_key: String,
    access: Arc<HttpAccess>,
    deadline: Instant,
    note: Note,
    calls: Arc<Mutex<CallCounter>>,
    /// The origin's limiters and breaker, with the connection to ask them.
    gate: Option<(Destination, Conn)>,
    /// This call's holder id in concurrent limiters.
    holder: String,
}

impl WasiHttpHooks for HttpHooks {
    /// The `Host` header is set in [`send`], from the checked origin.
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
            let response = send(plan, request, options).await?;
            let done: Box<dyn Future<Output = Result<(), Error>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

impl HttpHooks {
    /// The origin check, the allowlist and the header caps, decided before
    /// anything leaves the host.
    fn plan(&mut self, request: &Request<WasiBody>) -> Result<Plan, Error> {
        let what = describe(request.method(), request.uri());
        let origin = match check_uri(request.uri()) {
            Ok(o) => o,
            Err(why) => {
                self.refuse(&what, &format!("HTTP-request-URI-invalid: {why}"));
                return Err(Error::HttpRequestUriInvalid);
            }
        };
        if !self.access.allow.contains(&origin) {
            let why = if self.access.allow.is_empty() {
                "the class allows no HTTP (add `[classes.NAME.http] allow = [...]`)".to_owned()
            } else {
                format!("{origin} is not in the class's http.allow list")
            };
            self.refuse(&what, &why);
            return Err(Error::HttpRequestDenied);
        }
        let (count, bytes) = head_size(request.headers());
        if count > MAX_REQUEST_HEADERS || bytes > MAX_REQUEST_HEAD_BYTES {
            self.refuse(
                &what,
                &format!(
                    "HTTP-request-header-section-size: {count} headers of {bytes} bytes \
                     (at most {MAX_REQUEST_HEADERS} headers, {} in all)",
                    http_wire::size(MAX_REQUEST_HEAD_BYTES as u64)
                ),
            );
            return Err(Error::HttpRequestHeaderSectionSize(Some(
                bytes.min(u32::MAX as usize) as u32,
            )));
        }
        if let Some(park) = parked(&self.calls) {
            // The job is on its way out: it does not get to call again.
            self.refuse(&what, &format!("the job is parked ({})", park.reason));
            return Err(parked_error(&park));
        }
        let retry_marked = request.headers().contains_key(RETRY_HEADER);
        let any = self.access.retry_any_method;
        let retries = if idempotent(request.method()) || retry_marked || any {
            self.access.retries
        } else {
            0
        };
        let (key, made) = {
            let mut c = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            c.made += 1;
            c.index += 1;
            (format!("{}-{}-{}", self.job_id, c.seq, c.index), c.made)
        };
        let gate = match (self.access.destination(&origin), &self.conn) {
            (Some(d), Some(conn)) => Some((d.clone(), conn.clone())),
            _ => None,
        };
        Ok(Plan {
            literal: origin.ip_literal(),
            origin,
            retries,
            idempotency_key: key,
            access: self.access.clone(),
            deadline: self.deadline,
            note: Note {
                log: self.log.clone(),
                what,
            },
            calls: self.calls.clone(),
            gate,
            holder: format!("{}:{}:{made}", self.job_id, self.attempt),
        })
    }
}

fn parked_error(park: &Park) -> Error {
    Error::InternalError(Some(format!(
        "{PARKED}{} (due again in {} ms)",
        bounded(&park.reason, 200),
        park.delay.as_millis()
    )))
}
/// Concurrent-limiter slots a call holds, given back when dropped (with the
/// response body, or with the call when it fails).
struct Held {
    conn: Conn,
    limiters: Vec<Limiter>,
    holder: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.limiters.is_empty() {
            return;
        }
        let (mut conn, limiters, holder) = (
            self.conn.clone(),
            std::mem::take(&mut self.limiters),
            std::mem::take(&mut self.holder),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { limit::release_all(&mut conn, &limiters, &holder).await });
        }
    }
}

/// Passes the destination's breaker and limiters, waiting for each limiter up
/// to its `wait_timeout`; `Err` parks the job.
async fn pass(plan: &Plan) -> Result<Option<Held>, Error> {
    let what = &plan.note.what;
    let Some((dest, conn)) = &plan.gate else {
        return Ok(None);
    };
    let mut conn = conn.clone();
    let unavailable = |e: redis::RedisError| {
        plan.note.warn(&format!(
            "the limiters cannot be asked (Redis: {})",
            bounded(&e.to_string(), 160)
        ));
        Error::InternalError(Some(
            "stoker: the destination's limiters cannot be asked (Redis is unavailable; see the job's log)"
                .into(),
        ))
    };
    let park = |delay: Duration, reason: String| {
        let park = Park {
            delay: delay.max(Duration::from_millis(1)),
            reason,
        };
        plan.note.log.append(
            format!(
                "info: http: {what}: parked for {} ms: {}\n",
                park.delay.as_millis(),
                park.reason
            )
            .as_bytes(),
        );
        let e = parked_error(&park);
        plan.calls.lock().unwrap_or_else(|e| e.into_inner()).parked = Some(park);
        e
    };
    if let Some(b) = &dest.breaker {
        let probe = plan.deadline.saturating_duration_since(Instant::now());
        if let Decision::Denied(wait) = breaker::check(&mut conn, &dest.origin, b, probe)
            .await
            .map_err(unavailable)?
        {
            return Err(park(
                wait,
                format!("the circuit breaker of {} is open", dest.origin),
            ));
        }
    }
    let mut held = Held {
        conn: conn.clone(),
        limiters: Vec::new(),
        holder: plan.holder.clone(),
    };
    // Rates and windows first, then concurrency: a call never holds a
    // concurrent slot while it waits for its turn at a rate, and a rate's
    // reserved turn is used at once.
    let started = Instant::now();
    let concurrent = |l: &&Limiter| l.kind == LimiterKind::Concurrent;
    let ordered = (dest.limiters.iter().filter(|l| !concurrent(l)))
        .chain(dest.limiters.iter().filter(concurrent));
    for l in ordered {
        let budget = Duration::from_millis(l.wait_ms);
        let began = Instant::now();
        loop {
            let left = budget
                .saturating_sub(began.elapsed())
                .min(plan.deadline.saturating_duration_since(Instant::now()));
            match limit::reserve(&mut conn, l, &plan.holder, left)
                .await
                .map_err(unavailable)?
            {
                Decision::Granted => break,
                Decision::Reserved(turn) => {
                    tokio::time::sleep(turn).await;
                    break;
                }
                Decision::Denied(wait) => {
                    if wait > left {
                        // `held` gives back the slots taken so far.
                        return Err(park(wait, format!("limiter `{}` is at its limit", l.name)));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if concurrent(&l) {
            held.limiters.push(l.clone());
        }
    }
    plan.calls.lock().unwrap_or_else(|e| e.into_inner()).waited += started.elapsed();
    Ok(Some(held))
}

/// Resolves, reads the body, connects to a checked address, sends, retries.
async fn send(
    plan: Plan,
    request: Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<Response<WasiBody>, Error> {
    let started = Instant::now();
    let deadline = plan
        .deadline
        .min(started + Duration::from_millis(plan.access.timeout_ms));
    let addr = match resolve(&plan).await {
        Ok(a) => a,
        Err((e, why)) => {
            refused(&plan.calls, &plan.note.log, &plan.note.what, &why);
            return Err(e);
        }
    };
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let max = plan.access.max_request_bytes;
    let body = match http_wire::collect(body, declared, max, deadline, &plan.note).await {
        Ok(b) => b,
        Err(e) => {
            if matches!(e, Error::HttpRequestBodySize(_)) {
                plan.calls.lock().unwrap_or_else(|e| e.into_inner()).refused += 1;
            }
            return Err(e);
        }
    };
    let held = pass(&plan).await?;
    let timeouts = Timeouts {
        connect: options
            .and_then(|o| o.connect_timeout)
            .unwrap_or(Duration::MAX)
            .min(Duration::from_millis(plan.access.connect_ms)),
        first_byte: options
            .and_then(|o| o.first_byte_timeout)
            .unwrap_or(Duration::MAX)
            .min(Duration::from_millis(plan.access.first_byte_ms)),
        deadline,
    };
    let target = match parts.uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") => "/".to_owned(),
        Some(p) if p.starts_with('/') => p.to_owned(),
        Some(p) => format!("/{p}"),
    };
    // The checked origin, whatever the job's URI or headers said.
    let host = http::HeaderValue::from_str(&plan.origin.host_header())
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    let mut pause = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        let mut req = Request::builder()
            .method(parts.method.clone())
            .uri(target.as_str())
            .version(http::Version::HTTP_11);
        for (name, value) in &parts.headers {
            if !(name == header::HOST || name == header::CONTENT_LENGTH || name == RETRY_HEADER) {
                req = req.header(name, value);
            }
        }
        req = req.header(header::HOST, host.clone());
        if !body.is_empty() || declared.is_some() {
            req = req.header(header::CONTENT_LENGTH, body.len());
        }
        if !parts.headers.contains_key("idempotency-key") {
            req = req.header("idempotency-key", &plan.idempotency_key);
        }
        let req = req
            .body(Full::new(body.clone()))
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let outcome = http_wire::once(
            &plan.origin,
            addr,
            req,
            &timeouts,
            plan.access.max_response_bytes,
            &plan.note,
        )
        .await;
        let retryable = match &outcome {
            Ok(r) => matches!(r.status().as_u16(), 502..=504),
            Err(e) => matches!(
                e,
                Error::Connect(_)
                    | Error::ConnectionRefused
                    | Error::ConnectionTimeout
                    | Error::ConnectionTerminated
                    | Error::HttpResponseIncomplete
            ),
        };
        if !retryable || attempt >= plan.retries || Instant::now() + pause >= deadline {
            report(&plan, healthy(&outcome)).await;
            // The concurrent slots go back when the body is read or dropped.
            return outcome.map(|r| match held {
                Some(held) => r.map(|body| Holding { body, _held: held }.boxed_unsync()),
                None => r,
            });
        }
        attempt += 1;
        plan.note.log.append(
            format!(
                "info: http: retrying {} ({attempt}/{}) in {pause:?}\n",
                plan.note.what, plan.retries
            )
            .as_bytes(),
        );
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
}

/// Whether a call's outcome speaks for its origin's health: a connection
/// failure or a 5xx counts against it.
fn healthy(outcome: &Result<Response<WasiBody>, Error>) -> bool {
    match outcome {
        Ok(r) => r.status().as_u16() < 500,
        Err(e) => !matches!(
            e,
            Error::Connect(_)
                | Error::ConnectionRefused
                | Error::ConnectionTimeout
                | Error::ConnectionTerminated
                | Error::ConnectionReadTimeout
                | Error::ConnectionWriteTimeout
                | Error::DestinationUnavailable
                | Error::HttpResponseIncomplete
                | Error::HttpResponseTimeout
                | Error::Tls(_)
                | Error::TlsProtocolError
                | Error::TlsCertificateError
                | Error::TlsAlertReceived { .. }
        ),
    }
}

/// Tells the destination's breaker how the call went.
async fn report(plan: &Plan, ok: bool) {
    let Some((dest, conn)) = &plan.gate else {
        return;
    };
    let Some(b) = &dest.breaker else {
        return;
    };
    match breaker::report(&mut conn.clone(), &dest.origin, b, ok).await {
        Ok(true) => plan.note.warn(&format!(
            "{} consecutive failures opened the circuit breaker of {} for {} ms",
            b.failures, dest.origin, b.cool_down_ms
        )),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(origin = %dest.origin, error = %e, "cannot record a call in its breaker")
        }
    }
}

/// A response body that holds its call's concurrent-limiter slots.
struct Holding {
    body: WasiBody,
    _held: Held,
}

impl Body for Holding {
    type Data = bytes::Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}

/// The address to connect to: the literal the allowlist names, or the first
/// resolved address the [`egress`] table allows.
async fn resolve(plan: &Plan) -> Result<SocketAddr, (Error, String)> {
    let port = plan.origin.port;
    if let Some(ip) = plan.literal {
        // Named exactly in the class's allowlist by the operator: trusted.
        return Ok(SocketAddr::new(ip, port));
    }
    let budget = plan.deadline.saturating_duration_since(Instant::now());
    let pinned = PINNED.get().and_then(|p| p.get(&plan.origin.host));
    let lookup = async {
        match pinned {
            Some(ips) => Ok(ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect::<Vec<_>>()),
            None => tokio::net::lookup_host((plan.origin.host.as_str(), port))
                .await
                .map(|a| a.collect()),
        }
    };
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(budget, lookup).await {
        Err(_) => {
            return Err((
                Error::DnsTimeout,
                "DNS-timeout: the name lookup timed out".into(),
            ));
        }
        Ok(Err(e)) => {
            return Err((
                Error::DnsError {
                    rcode: None,
                    info_code: None,
                },
                format!(
                    "DNS-error: cannot resolve {}: {}",
                    plan.origin.host,
                    bounded(&e.to_string(), 160)
                ),
            ));
        }
        Ok(Ok(a)) => a,
    };
    let mut reasons = Vec::new();
    for a in &addrs {
        match egress::check(a.ip()) {
            Ok(()) => return Ok(*a),
            Err(why) => reasons.push(why.to_string()),
        }
    }
    if addrs.is_empty() {
        return Err((
            Error::DestinationNotFound,
            format!("destination-not-found: {} has no address", plan.origin.host),
        ));
    }
    let shown = reasons.len().min(4);
    let more = match reasons.len() - shown {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    Err((
        Error::DestinationIpProhibited,
        format!(
            "{} resolves only to addresses jobs may not reach ({}{more}); name the IP \
             literal in http.allow to allow it",
            plan.origin.host,
            reasons[..shown].join("; ")
        ),
    ))
}

//! Outbound HTTP: standard `wasi:http/outgoing-handler` for the guest, one
//! policy point on the host. Every request a job makes passes through
//! [`HttpHooks::send_request`]:
//!
//! 1. **Allowlist**: the request's origin (`scheme://host:port`) must be one the
//!    class names in `http.allow`; otherwise `HTTP-request-denied`.
//! 2. **SSRF guard**: a name is resolved here, and every address it resolves to
//!    that is loopback, private, link-local (cloud metadata 169.254.169.254),
//!    unique-local (fd00:ec2::254), unspecified, multicast, or an IPv4 address
//!    embedded in IPv6 (mapped, compatible, NAT64, 6to4, Teredo) is refused
//!    ([`forbidden`]); the connection goes to an address that passed, never to a
//!    second lookup (no DNS rebinding). An IP literal the allowlist names
//!    exactly is trusted as named. Refused: `destination-IP-prohibited`.
//! 3. **Limits**: connect, first-byte and whole-request timeouts, all bounded by
//!    the attempt's deadline; request and response body caps; no proxy from the
//!    environment; redirects are returned to the job, never followed here (a
//!    follow is a new request through this same policy).
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
//! Each refusal is written to the job's log with its reason.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::log::JobLog;
use crate::config::{Destination, HttpAccess, Limiter, LimiterKind, Origin};
use crate::limit::{self, Decision, breaker};
use crate::queue::Conn;

/// The header a job sets to have a non-idempotent request retried.
pub const RETRY_HEADER: &str = "stoker-retry";

/// How a parking refusal starts its `internal-error` message (the SDK looks
/// for it).
pub const PARKED: &str = "stoker-parked: ";

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
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).refused += 1;
        self.log
            .append(format!("warn: http: refused {what}: {why}\n").as_bytes());
    }
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

/// Why `ip` may not be called (when the allowlist does not name it exactly).
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            if a.is_loopback() {
                Some("loopback")
            } else if a.is_private() {
                Some("private")
            } else if a.is_link_local() {
                Some("link-local (cloud metadata lives here)")
            } else if a.is_unspecified() || o[0] == 0 {
                Some("unspecified / this network")
            } else if a.is_broadcast() || a.is_multicast() {
                Some("broadcast or multicast")
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                Some("shared address space (carrier-grade NAT)")
            } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
                Some("IETF protocol assignments")
            } else if o[0] == 198 && (18..20).contains(&o[1]) {
                Some("benchmarking")
            } else if o[0] >= 240 {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            if a.is_loopback() {
                Some("loopback")
            } else if a.is_unspecified() {
                Some("unspecified")
            } else if a.is_multicast() {
                Some("multicast")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique local (cloud metadata fd00:ec2::254 lives here)")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if a.to_ipv4_mapped().is_some() || s[..6] == [0; 6] {
                Some("IPv4 embedded in IPv6 (mapped or compatible)")
            } else if s[0] == 0x64 && s[1] == 0xff9b {
                Some("IPv4 embedded in IPv6 (NAT64)")
            } else if s[0] == 0x2002 {
                Some("IPv4 embedded in IPv6 (6to4)")
            } else if s[0] == 0x2001 && s[1] == 0 {
                Some("IPv4 embedded in IPv6 (Teredo)")
            } else if s[0] == 0x2001 && s[1] == 0xdb8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

/// A request the policy let through: where it goes and how.
struct Plan {
    origin: Origin,
    literal: bool,
    retries: u32,
    idempotency_key: String,
    access: Arc<HttpAccess>,
    deadline: Instant,
    log: JobLog,
    calls: Arc<Mutex<CallCounter>>,
    /// The origin's limiters and breaker, with the connection to ask them.
    gate: Option<(Destination, Conn)>,
    /// This call's holder id in concurrent limiters.
    holder: String,
}

impl WasiHttpHooks for HttpHooks {
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
    /// The allowlist, decided before anything leaves the host.
    fn plan(&mut self, request: &Request<WasiBody>) -> Result<Plan, Error> {
        let uri = request.uri();
        let what = format!("{} {uri}", request.method());
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let Some(host) = uri.host() else {
            self.refuse(&what, "no host");
            return Err(Error::HttpRequestUriInvalid);
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        let origin = Origin { scheme, host, port };
        if !self.access.allow.contains(&origin) {
            let why = if self.access.allow.is_empty() {
                "the class allows no HTTP (add `[classes.NAME.http] allow = [...]`)".to_owned()
            } else {
                format!("{origin} is not in the class's http.allow list")
            };
            self.refuse(&what, &why);
            return Err(Error::HttpRequestDenied);
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
            literal: origin.host.parse::<IpAddr>().is_ok(),
            origin,
            retries,
            idempotency_key: key,
            access: self.access.clone(),
            deadline: self.deadline,
            log: self.log.clone(),
            calls: self.calls.clone(),
            gate,
            holder: format!("{}:{}:{made}", self.job_id, self.attempt),
        })
    }
}

fn parked_error(park: &Park) -> Error {
    Error::InternalError(Some(format!(
        "{PARKED}{} (due again in {} ms)",
        park.reason,
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
async fn pass(plan: &Plan, what: &str) -> Result<Option<Held>, Error> {
    let Some((dest, conn)) = &plan.gate else {
        return Ok(None);
    };
    let mut conn = conn.clone();
    let unavailable = |e: redis::RedisError| {
        plan.log.append(
            format!("warn: http: {what}: the limiters cannot be asked (Redis: {e})\n").as_bytes(),
        );
        Error::InternalError(Some(format!("stoker: limiters unavailable: {e}")))
    };
    let park = |delay: Duration, reason: String| {
        let park = Park {
            delay: delay.max(Duration::from_millis(1)),
            reason,
        };
        plan.log.append(
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

/// Resolves, connects to a checked address, sends, retries.
async fn send(
    plan: Plan,
    request: Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<Response<WasiBody>, Error> {
    let what = format!("{} {}", request.method(), request.uri());
    let started = Instant::now();
    let deadline = plan
        .deadline
        .min(started + Duration::from_millis(plan.access.timeout_ms));
    let addr = match resolve(&plan).await {
        Ok(a) => a,
        Err((e, why)) => {
            plan.calls.lock().unwrap_or_else(|e| e.into_inner()).refused += 1;
            plan.log
                .append(format!("warn: http: refused {what}: {why}\n").as_bytes());
            return Err(e);
        }
    };
    let (parts, body) = request.into_parts();
    let body = collect(body, plan.access.max_request_bytes).await?;
    let held = pass(&plan, &what).await?;
    let connect = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(Duration::MAX)
        .min(Duration::from_millis(plan.access.connect_ms));
    let first_byte = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(Duration::MAX)
        .min(Duration::from_millis(plan.access.first_byte_ms));

    let mut pause = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        let mut req = Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
            .version(http::Version::HTTP_11);
        for (name, value) in &parts.headers {
            if name.as_str() != RETRY_HEADER {
                req = req.header(name, value);
            }
        }
        if !parts.headers.contains_key("idempotency-key") {
            req = req.header("idempotency-key", &plan.idempotency_key);
        }
        let req = req
            .body(Full::new(body.clone()))
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let outcome = once(&plan, addr, req, connect, first_byte, deadline).await;
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
            report(&plan, &what, healthy(&outcome)).await;
            // The concurrent slots go back when the body is read or dropped.
            return outcome.map(|r| match held {
                Some(held) => r.map(|body| Holding { body, _held: held }.boxed_unsync()),
                None => r,
            });
        }
        attempt += 1;
        plan.log.append(
            format!(
                "info: http: retrying {what} ({attempt}/{}) in {pause:?}\n",
                plan.retries
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
                | Error::HttpResponseIncomplete
                | Error::HttpResponseTimeout
                | Error::Tls(_)
        ),
    }
}

/// Tells the destination's breaker how the call went.
async fn report(plan: &Plan, what: &str, ok: bool) {
    let Some((dest, conn)) = &plan.gate else {
        return;
    };
    let Some(b) = &dest.breaker else {
        return;
    };
    match breaker::report(&mut conn.clone(), &dest.origin, b, ok).await {
        Ok(true) => {
            plan.log.append(
                format!(
                    "warn: http: {what}: {} consecutive failures opened the circuit breaker of {} for {} ms\n",
                    b.failures, dest.origin, b.cool_down_ms
                )
                .as_bytes(),
            );
        }
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
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}

/// The address to connect to: the literal the allowlist names, or the first
/// resolved address that passes the SSRF guard.
async fn resolve(plan: &Plan) -> Result<SocketAddr, (Error, String)> {
    let port = plan.origin.port;
    if plan.literal {
        let ip: IpAddr = plan.origin.host.parse().expect("checked literal");
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
        Err(_) => return Err((Error::DnsTimeout, "name lookup timed out".into())),
        Ok(Err(e)) => {
            return Err((
                Error::DnsError {
                    rcode: Some(e.to_string()),
                    info_code: None,
                },
                format!("cannot resolve {}: {e}", plan.origin.host),
            ));
        }
        Ok(Ok(a)) => a,
    };
    let mut reasons = Vec::new();
    for a in &addrs {
        match forbidden(a.ip()) {
            None => return Ok(*a),
            Some(why) => reasons.push(format!("{} is {why}", a.ip())),
        }
    }
    if addrs.is_empty() {
        return Err((Error::DestinationNotFound, "no address".into()));
    }
    Err((
        Error::DestinationIpProhibited,
        format!(
            "{} resolves only to addresses jobs may not reach ({}); name the IP literal in http.allow to allow it",
            plan.origin.host,
            reasons.join(", ")
        ),
    ))
}

async fn collect(mut body: WasiBody, max: u64) -> Result<Bytes, Error> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if out.len() as u64 + data.len() as u64 > max {
                return Err(Error::HttpRequestBodySize(Some(max)));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.into())
}

static TLS: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
});

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// One try: connect, TLS, send, the response head.
async fn once(
    plan: &Plan,
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
    connect: Duration,
    first_byte: Duration,
    deadline: Instant,
) -> Result<Response<WasiBody>, Error> {
    let left = || deadline.saturating_duration_since(Instant::now());
    let tcp = tokio::time::timeout(connect.min(left()), TcpStream::connect(addr))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
            _ => Error::Connect(e),
        })?;
    let stream: Box<dyn Stream> = if plan.origin.scheme == "https" {
        let name = rustls::pki_types::ServerName::try_from(plan.origin.host.clone())
            .map_err(|_| Error::TlsProtocolError)?;
        let tls = tokio_rustls::TlsConnector::from(TLS.clone());
        let s = tokio::time::timeout(connect.min(left()), tls.connect(name, tcp))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
        Box::new(s)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Error::from)?;
    // The connection runs until the response body is read or dropped.
    tokio::spawn(conn);
    let mut req = req;
    if !req.headers().contains_key(http::header::HOST) {
        let host = match plan.origin.host.contains(':') {
            true => format!("[{}]:{}", plan.origin.host, plan.origin.port),
            false => format!("{}:{}", plan.origin.host, plan.origin.port),
        };
        if let Ok(v) = http::HeaderValue::from_str(&host) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    let response = tokio::time::timeout(first_byte.min(left()), sender.send_request(req))
        .await
        .map_err(|_| Error::HttpResponseTimeout)?
        .map_err(Error::from)?;
    let max = plan.access.max_response_bytes;
    Ok(response.map(|incoming| {
        Capped {
            inner: incoming,
            left: max,
            max,
            deadline: Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
                deadline,
            ))),
        }
        .boxed_unsync()
    }))
}

/// A response body held to the size cap and the request's deadline.
struct Capped {
    inner: hyper::body::Incoming,
    left: u64,
    max: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Error::HttpResponseTimeout)));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.left {
                        let max = self.max;
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(max)))));
                    }
                    self.left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssrf_guard_refuses_internal_and_embedded_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::a00:1",
            "2002:a00:1::",
        ] {
            assert!(forbidden(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(forbidden(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }
}

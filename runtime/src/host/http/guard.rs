//! The guard: a request's origin checked against the class's allowlist and
//! its header caps before anything leaves the host, and the SSRF guard that
//! picks the address to connect to.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{HeaderMap, Method, Request};
use wasmtime_wasi_http::{Error, WasiBody};

use super::gate::parked_error;
use super::{
    CallCounter, HttpHooks, LOGGED_REQUEST, MAX_REQUEST_HEAD_BYTES, MAX_REQUEST_HEADERS,
    RETRY_HEADER, lock,
};
use crate::config::origin::check_uri;
use crate::config::{Destination, HttpAccess, Origin};
use crate::host::egress;
use crate::host::http_wire::{self, Note};
use crate::queue::Conn;
use crate::render::quote;

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
    quote(
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
pub(super) struct Plan {
    pub(super) origin: Origin,
    /// The allowlist names this IP literal: connect to it as named.
    pub(super) literal: Option<IpAddr>,
    pub(super) retries: u32,
    pub(super) idempotency_key: String,
    pub(super) access: Arc<HttpAccess>,
    pub(super) deadline: Instant,
    pub(super) note: Note,
    pub(super) calls: Arc<Mutex<CallCounter>>,
    /// The origin's limiters and breaker, with the connection to ask them.
    pub(super) gate: Option<(Destination, Conn)>,
    /// This call's holder id in concurrent limiters.
    pub(super) holder: String,
}

impl HttpHooks {
    /// The origin check, the allowlist and the header caps, decided before
    /// anything leaves the host.
    pub(super) fn plan(&mut self, request: &Request<WasiBody>) -> Result<Plan, Error> {
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
        if let Some(park) = lock(&self.calls).parked.clone() {
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
            let mut c = lock(&self.calls);
            if c.seq != self.seq {
                // A commit since the last call: keys count from it again.
                c.seq = self.seq;
                c.index = 0;
            }
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

/// The address to connect to: the literal the allowlist names, or the first
/// resolved address the [`egress`] table allows.
pub(super) async fn resolve(plan: &Plan) -> Result<SocketAddr, (Error, String)> {
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
                    quote(&e.to_string(), 160)
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

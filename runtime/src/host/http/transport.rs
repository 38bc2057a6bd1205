//! The transport: a request that passed the guard and the gate, sent to its
//! checked address, with the host's retries.

use std::time::{Duration, Instant};

use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use super::gate::{Holding, pass, report};
use super::guard::{Plan, resolve};
use super::{RETRY_HEADER, lock, refused};
use crate::host::http_wire::{self, Timeouts};

/// Resolves, reads the body, connects to a checked address, sends, retries.
pub(super) async fn send(
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
                lock(&plan.calls).refused += 1;
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

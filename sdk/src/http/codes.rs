//! `wasi:http` error codes in words: each failure of a request becomes one
//! bounded line, `http: CODE: what happened`, with the code as `wasi:http`
//! spells it (`HTTP-response-body-size`), so a job's record names the problem
//! and never carries host text beyond a short quote.

use wasip2::http::types::{ErrorCode, FutureIncomingResponse, IncomingResponse};
use wasip2::io::streams::StreamError;

use crate::Error;

/// The longest host text quoted in a message, bytes.
const QUOTE: usize = 160;

/// Blocks until the response (or the request's failure) is in.
pub(super) fn wait(
    pending: &FutureIncomingResponse,
) -> Result<Result<IncomingResponse, ErrorCode>, ()> {
    loop {
        if let Some(r) = pending.get() {
            return r;
        }
        pending.subscribe().block();
    }
}

/// `n` bytes in words.
fn size(n: Option<u64>) -> String {
    match n {
        None => "the class's limit".into(),
        Some(n) if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        Some(n) if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        Some(n) => format!("{n} bytes"),
    }
}

/// `text` on one line, cut to [`QUOTE`] bytes on a character boundary.
fn quote(text: &str) -> String {
    let line: String = text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() <= QUOTE {
        return line;
    }
    let mut end = QUOTE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

/// The job's error for a failed request.
pub(super) fn error(e: ErrorCode) -> Error {
    use ErrorCode as C;
    let permanent = |code: &str, words: &str| Error::permanent(format!("http: {code}: {words}"));
    let transient = |code: &str, words: &str| Error::new(format!("http: {code}: {words}"));
    match e {
        C::InternalError(Some(m)) if m.starts_with("stoker-parked: ") => Error::parked(format!(
            "http: parked: {}",
            quote(&m["stoker-parked: ".len()..])
        )),
        C::HttpRequestDenied => permanent(
            "HTTP-request-denied",
            "request denied: the origin is not in the class's http.allow list (see the job's log)",
        ),
        C::DestinationIpProhibited => permanent(
            "destination-IP-prohibited",
            "destination prohibited: the host resolves to an address jobs may not reach (see the job's log)",
        ),
        C::HttpRequestUriInvalid => permanent(
            "HTTP-request-URI-invalid",
            "the URL was refused: userinfo, or a host or port that is not plain (see the job's log)",
        ),
        C::HttpRequestBodySize(n) => permanent(
            "HTTP-request-body-size",
            &format!(
                "the request body exceeded {} (the class's http.max_request)",
                size(n)
            ),
        ),
        C::HttpResponseBodySize(n) => permanent(
            "HTTP-response-body-size",
            &format!(
                "the response exceeded {} (the class's http.max_response)",
                size(n)
            ),
        ),
        C::HttpRequestHeaderSectionSize(_) | C::HttpRequestHeaderSize(_) => permanent(
            "HTTP-request-header-section-size",
            "the request's headers are too many or too large (see the job's log)",
        ),
        C::HttpResponseHeaderSectionSize(_) | C::HttpResponseHeaderSize(_) => permanent(
            "HTTP-response-header-section-size",
            "the response's headers are too many or too large (see the job's log)",
        ),
        C::HttpRequestMethodInvalid => {
            permanent("HTTP-request-method-invalid", "the method is not valid")
        }
        C::HttpRequestUriTooLong => permanent("HTTP-request-URI-too-long", "the URL is too long"),
        C::TlsCertificateError => permanent(
            "TLS-certificate-error",
            "the server's certificate is not valid for the host (see the job's log)",
        ),
        C::DnsTimeout => transient("DNS-timeout", "the name lookup timed out"),
        C::DnsError(_) => transient(
            "DNS-error",
            "the name cannot be resolved (see the job's log)",
        ),
        C::DestinationNotFound => transient("destination-not-found", "the name has no address"),
        C::DestinationUnavailable => {
            transient("destination-unavailable", "no route to the destination")
        }
        C::DestinationIpUnroutable => {
            transient("destination-IP-unroutable", "the address is unroutable")
        }
        C::ConnectionRefused => {
            transient("connection-refused", "the server refused the connection")
        }
        C::ConnectionTerminated => {
            transient("connection-terminated", "the connection closed early")
        }
        C::ConnectionTimeout => transient("connection-timeout", "connecting took too long"),
        C::ConnectionReadTimeout => {
            transient("connection-read-timeout", "the server stopped sending")
        }
        C::ConnectionWriteTimeout => transient(
            "connection-write-timeout",
            "the request could not be sent in time",
        ),
        C::ConnectionLimitReached => transient("connection-limit-reached", "too many connections"),
        C::TlsProtocolError => transient(
            "TLS-protocol-error",
            "the TLS handshake failed (see the job's log)",
        ),
        C::TlsAlertReceived(a) => transient(
            "TLS-alert-received",
            &format!(
                "the server ended the TLS handshake ({})",
                quote(a.alert_message.as_deref().unwrap_or("no description"))
            ),
        ),
        C::HttpResponseIncomplete => transient(
            "HTTP-response-incomplete",
            "the connection closed before the response was complete",
        ),
        C::HttpResponseTimeout => transient(
            "HTTP-response-timeout",
            "the response did not arrive in time (the class's http timeouts or the job's deadline)",
        ),
        C::HttpProtocolError => transient(
            "HTTP-protocol-error",
            "the exchange is not valid HTTP (see the job's log)",
        ),
        C::InternalError(m) => transient(
            "internal-error",
            &quote(m.as_deref().unwrap_or("the host failed the request")),
        ),
        other => transient("HTTP-error", &quote(&format!("{other:?}"))),
    }
}

/// wasmtime's words for the errors a response body stream ends with (its
/// `wasi:io/error` carries no error code), and the codes they stand for.
const STREAM_TEXTS: &[(&str, fn(Option<u64>) -> ErrorCode)] = &[
    (
        "HTTP response body size exceeds limit",
        ErrorCode::HttpResponseBodySize,
    ),
    ("HTTP response timeout", |_| ErrorCode::HttpResponseTimeout),
    ("incomplete HTTP response", |_| {
        ErrorCode::HttpResponseIncomplete
    }),
    ("connection terminated", |_| ErrorCode::ConnectionTerminated),
    ("connection read timeout", |_| {
        ErrorCode::ConnectionReadTimeout
    }),
    ("connection write timeout", |_| {
        ErrorCode::ConnectionWriteTimeout
    }),
    (
        "HTTP request body size exceeds limit",
        ErrorCode::HttpRequestBodySize,
    ),
    ("HTTP protocol error", |_| ErrorCode::HttpProtocolError),
];

/// The job's error for a body stream that failed while `doing` something.
pub(super) fn stream_error(doing: &str, e: StreamError) -> Error {
    let io = match e {
        StreamError::Closed => {
            return Error::new(format!("http: {doing}: the stream closed early"));
        }
        StreamError::LastOperationFailed(io) => io,
    };
    if let Some(code) = wasip2::http::types::http_error_code(&io) {
        return error(code);
    }
    let text = io.to_debug_string();
    let line = quote(&text);
    for (prefix, code) in STREAM_TEXTS {
        if let Some(rest) = line.strip_prefix(prefix) {
            // `...: N bytes`
            let n = rest
                .trim_start_matches(':')
                .trim()
                .strip_suffix(" bytes")
                .and_then(|n| n.parse().ok());
            return error(code(n));
        }
    }
    Error::new(format!("http: {doing} failed: {line}"))
}

//! The wire side of the HTTP policy point: the request body read within its
//! cap, one connection (TCP, TLS, HTTP/1.1) to a checked address, the
//! response held to its caps and deadline, and every failure turned into a
//! `wasi:http` error code plus one bounded line for the job's log.
//!
//! What reaches a guest is the error code alone (a response body's error also
//! reaches it as the text of its `wasi:io/error`: the code's own short
//! description). Host detail (an OS error, a TLS alert, hyper's words) goes
//! to the job's log, bounded, never a host backtrace or source path.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, WasiBody};

use super::log::JobLog;
use crate::config::Origin;

/// Most headers a response may carry; more fail the call with
/// `HTTP-response-header-section-size`.
pub const MAX_RESPONSE_HEADERS: usize = 100;
/// Largest response head (status line and headers), bytes; more fail the
/// call with `HTTP-response-header-section-size`.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 << 10;
/// Longest host detail (an OS or TLS error's words) quoted in a log line.
const DETAIL: usize = 160;

/// Where a call's log lines go, and how they name the call.
#[derive(Clone)]
pub(super) struct Note {
    /// The job's log.
    pub log: JobLog,
    /// `METHOD URL`, bounded.
    pub what: String,
}

impl Note {
    /// Appends `warn: http: WHAT: WORDS` to the job's log.
    pub fn warn(&self, words: &str) {
        self.log
            .append(format!("warn: http: {}: {words}\n", self.what).as_bytes());
    }
}

/// `n` bytes in words: `4 MiB`, `512 KiB`, `1000 bytes`.
pub fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// Reads the request body the guest writes, within `max` bytes and by
/// `deadline`. Over the cap, the rest is read and dropped (so the guest's
/// writes and `finish` succeed and it learns why from the response:
/// `HTTP-request-body-size`); nothing is sent.
pub(super) async fn collect(
    mut body: WasiBody,
    declared: Option<u64>,
    max: u64,
    deadline: Instant,
    note: &Note,
) -> Result<Bytes, Error> {
    let deadline = tokio::time::Instant::from_std(deadline);
    let mut out = Vec::new();
    let over = declared.is_some_and(|n| n > max);
    if !over {
        let read = async {
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    if out.len() as u64 + data.len() as u64 > max {
                        return Ok(false);
                    }
                    out.extend_from_slice(&data);
                }
            }
            Ok::<_, Error>(true)
        };
        match tokio::time::timeout_at(deadline, read).await {
            Err(_) => {
                note.warn(
                    "connection-write-timeout: the job did not finish the request body \
                     before the request's timeout; nothing was sent",
                );
                return Err(Error::ConnectionWriteTimeout);
            }
            Ok(Err(e)) => {
                note.warn(
                    "HTTP-protocol-error: the job aborted the request body; nothing was sent",
                );
                return Err(e);
            }
            Ok(Ok(true)) => return Ok(out.into()),
            Ok(Ok(false)) => {}
        }
    }
    drop(out);
    note.warn(&format!(
        "HTTP-request-body-size: the request body exceeds {} (the class's \
         http.max_request); nothing was sent",
        size(max)
    ));
    let drain = async { while let Some(Ok(_)) = body.frame().await {} };
    let _ = tokio::time::timeout_at(deadline, drain).await;
    Err(Error::HttpRequestBodySize(Some(max)))
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

/// How long each phase of one try may take.
pub(super) struct Timeouts {
    /// TCP connect, and the TLS handshake.
    pub connect: Duration,
    /// Request sent to response head.
    pub first_byte: Duration,
    /// The whole request, body included.
    pub deadline: Instant,
}

/// One try: connect to `addr` (checked), TLS for `https` (the server must
/// prove it is `origin`'s host), send, read the response head; the body is
/// held to `max_body` bytes and the deadline.
pub(super) async fn once(
    origin: &Origin,
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
    t: &Timeouts,
    max_body: u64,
    note: &Note,
) -> Result<http::Response<WasiBody>, Error> {
    let left = || t.deadline.saturating_duration_since(Instant::now());
    let fail = |e: Error, words: String| {
        note.warn(&words);
        e
    };
    let tcp = match tokio::time::timeout(t.connect.min(left()), TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(fail(
                Error::ConnectionTimeout,
                format!("connection-timeout: connecting to {addr} took too long"),
            ));
        }
        Ok(Err(e)) => {
            let (code, words) = connect_error(&e);
            return Err(fail(code, format!("{words}: connecting to {addr}")));
        }
        Ok(Ok(s)) => s,
    };
    let stream: Box<dyn Stream> = if origin.scheme == "https" {
        let name = rustls::pki_types::ServerName::try_from(origin.host.clone()).map_err(|_| {
            fail(
                Error::TlsProtocolError,
                "TLS-protocol-error: the host is not a name TLS can verify".into(),
            )
        })?;
        let tls = tokio_rustls::TlsConnector::from(TLS.clone());
        match tokio::time::timeout(t.connect.min(left()), tls.connect(name, tcp)).await {
            Err(_) => {
                return Err(fail(
                    Error::ConnectionTimeout,
                    format!("connection-timeout: the TLS handshake with {addr} took too long"),
                ));
            }
            Ok(Err(e)) => {
                let (code, words) = tls_error(&e);
                return Err(fail(code, words));
            }
            Ok(Ok(s)) => Box::new(s),
        }
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_headers(MAX_RESPONSE_HEADERS)
        .max_header_size(MAX_RESPONSE_HEAD_BYTES)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| {
            let (code, words) = hyper_error(&e);
            fail(code, words)
        })?;
    // The connection runs until the response body is read or dropped.
    tokio::spawn(conn);
    let response =
        match tokio::time::timeout(t.first_byte.min(left()), sender.send_request(req)).await {
            Err(_) => {
                return Err(fail(
                    Error::HttpResponseTimeout,
                    "HTTP-response-timeout: no response head within the first-byte timeout \
                 (http.first_byte_timeout, http.timeout or the job's deadline)"
                        .into(),
                ));
            }
            Ok(Err(e)) => {
                let (code, words) = hyper_error(&e);
                return Err(fail(code, words));
            }
            Ok(Ok(r)) => r,
        };
    let deadline = Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
        t.deadline,
    )));
    Ok(response.map(|incoming| {
        Capped {
            inner: incoming,
            left: max_body,
            max: max_body,
            deadline,
            note: note.clone(),
            done: false,
        }
        .boxed_unsync()
    }))
}

/// The code and words for a connect error (the OS error's number only, not
/// its localised text).
fn connect_error(e: &std::io::Error) -> (Error, String) {
    use std::io::ErrorKind as K;
    let (code, words) = match e.kind() {
        K::ConnectionRefused => (Error::ConnectionRefused, "connection-refused: refused"),
        K::TimedOut => (Error::ConnectionTimeout, "connection-timeout: timed out"),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => (
            Error::ConnectionTerminated,
            "connection-terminated: closed by the peer",
        ),
        K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown | K::AddrNotAvailable => (
            Error::DestinationUnavailable,
            "destination-unavailable: no route to the address",
        ),
        _ => (
            Error::ConnectionRefused,
            "connection-refused: the connection failed",
        ),
    };
    match e.raw_os_error() {
        Some(n) => (code, format!("{words} (os error {n})")),
        None => (code, words.to_owned()),
    }
}

/// The code and words for a failed TLS handshake.
fn tls_error(e: &std::io::Error) -> (Error, String) {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        let (code, words) = connect_error(e);
        return (code, format!("{words} during the TLS handshake"));
    };
    let detail = crate::render::quote(&tls.to_string(), DETAIL);
    match tls {
        rustls::Error::InvalidCertificate(_) => (
            Error::TlsCertificateError,
            format!("TLS-certificate-error: {detail}"),
        ),
        rustls::Error::AlertReceived(alert) => (
            Error::TlsAlertReceived {
                alert_id: Some(u8::from(*alert)),
                alert_message: Some(crate::render::quote(&format!("{alert:?}"), 40)),
            },
            format!("TLS-alert-received: {detail}"),
        ),
        _ => (
            Error::TlsProtocolError,
            format!("TLS-protocol-error: {detail}"),
        ),
    }
}

/// The code and words for a hyper error (sending, the response head or
/// body).
fn hyper_error(e: &hyper::Error) -> (Error, String) {
    if e.is_parse_too_large() {
        return (
            Error::HttpResponseHeaderSectionSize(Some(MAX_RESPONSE_HEAD_BYTES as u32)),
            format!(
                "HTTP-response-header-section-size: the response head exceeds {} or {} headers",
                size(MAX_RESPONSE_HEAD_BYTES as u64),
                MAX_RESPONSE_HEADERS
            ),
        );
    }
    if e.is_timeout() {
        return (
            Error::HttpResponseTimeout,
            "HTTP-response-timeout: the response timed out".into(),
        );
    }
    if e.is_incomplete_message() {
        return (
            Error::HttpResponseIncomplete,
            "HTTP-response-incomplete: the connection closed before the response was complete"
                .into(),
        );
    }
    if e.is_canceled() || e.is_closed() || e.is_body_write_aborted() {
        return (
            Error::ConnectionTerminated,
            "connection-terminated: the connection closed".into(),
        );
    }
    if e.is_parse() || e.is_parse_status() {
        return (
            Error::HttpProtocolError,
            format!(
                "HTTP-protocol-error: the response is not valid HTTP/1.1 ({})",
                crate::render::quote(&e.to_string(), DETAIL)
            ),
        );
    }
    (
        Error::HttpProtocolError,
        format!(
            "HTTP-protocol-error: {}",
            crate::render::quote(&e.to_string(), DETAIL)
        ),
    )
}

/// A response body held to the size cap and the request's deadline; its
/// first failure is logged and ends it.
struct Capped {
    inner: hyper::body::Incoming,
    left: u64,
    max: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
    note: Note,
    done: bool,
}

impl Capped {
    fn fail(&mut self, e: Error, words: &str) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.done = true;
        self.note.warn(words);
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return self.fail(
                Error::HttpResponseTimeout,
                "HTTP-response-timeout: the response body did not arrive in time \
                 (http.timeout or the job's deadline)",
            );
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.left {
                        let max = self.max;
                        return self.fail(
                            Error::HttpResponseBodySize(Some(max)),
                            &format!(
                                "HTTP-response-body-size: the response exceeded {} \
                                 (the class's http.max_response)",
                                size(max)
                            ),
                        );
                    }
                    self.left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let (code, words) = hyper_error(&e);
                self.fail(code, &words)
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(4 << 20), "4 MiB");
        assert_eq!(size(512 << 10), "512 KiB");
        assert_eq!(size(1000), "1000 bytes");
    }
}

//! Outbound HTTP: a small client on standard `wasi:http/outgoing-handler`.
//!
//! The runtime sends every request through its policy point: only origins in
//! the class's `http.allow` list, never to internal addresses (loopback,
//! private, link-local, metadata) unless the list names that exact IP, under
//! the class's timeouts and size caps. Idempotent requests (GET, HEAD, PUT,
//! DELETE, OPTIONS) are retried by the host on connection failures and
//! 502/503/504; [`Request::retry`] opts other methods in. Each request carries
//! an `Idempotency-Key` derived from the job, its last checkpoint and the
//! call's index since, so a step repeated after a crash repeats its calls with
//! the same keys. Redirects come back as responses: following one is a new
//! request.
//!
//! An origin may have limiters and a circuit breaker (`[destinations.ORIGIN]`
//! in `stoker.toml`). A call waits for its limiters up to their
//! `wait_timeout`; past that, or while the breaker is open, the call fails with
//! an error that [`is_yield`](crate::Error::is_yield): return it (`?` does) and
//! the job is *parked*: it waits in the scheduled set, without holding a worker
//! or using up a retry, until capacity returns, and resumes from its last
//! checkpoint. A step repeated then repeats its calls with the same
//! idempotency keys.
//!
//! Any `wasi:http` client crate works too; this one is here for convenience.
//!
//! ```no_run
//! let r = stoker_sdk::http::get("https://api.example.com/v1/status")?;
//! let status: serde_json::Value = r.json()?;
//! # Ok::<(), stoker_sdk::Error>(())
//! ```

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme};
use wasip2::io::streams::StreamError;

use crate::{Error, Result};

mod codes;
use codes::{error, stream_error, wait};

/// A request being built.
///
/// ```no_run
/// use stoker_sdk::http::Request;
/// let r = Request::new("PATCH", "https://api.example.com/v1/orders/7")
///     .header("content-type", "application/json")
///     .body(br#"{"state":"shipped"}"#.to_vec())
///     .timeout(std::time::Duration::from_secs(5))
///     .send()?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

/// A response, its body read in full (within the class's `http.max_response`).
///
/// ```no_run
/// let r = stoker_sdk::http::get("https://api.example.com/")?;
/// if r.status == 200 {
///     stoker_sdk::log::info(&r.text());
/// }
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (invalid UTF-8 replaced).
    ///
    /// ```no_run
    /// # let r = stoker_sdk::http::get("https://x.example/")?;
    /// let text = r.text();
    /// # Ok::<(), stoker_sdk::Error>(())
    /// ```
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded as JSON.
    ///
    /// ```no_run
    /// # let r = stoker_sdk::http::get("https://x.example/")?;
    /// let v: serde_json::Value = r.json()?;
    /// # Ok::<(), stoker_sdk::Error>(())
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::new(format!("http: the response is not the JSON expected: {e}")))
    }

    /// The first value of header `name` (case-insensitive).
    ///
    /// ```no_run
    /// # let r = stoker_sdk::http::get("https://x.example/")?;
    /// let kind = r.header("content-type");
    /// # Ok::<(), stoker_sdk::Error>(())
    /// ```
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &v[..])
    }
}

/// `GET url`.
///
/// ```no_run
/// let r = stoker_sdk::http::get("https://api.example.com/v1/status")?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn get(url: &str) -> Result<Response> {
    Request::new("GET", url).send()
}

/// `POST url` with `value` as a JSON body.
///
/// ```no_run
/// let r = stoker_sdk::http::post_json("https://api.example.com/v1/events", &serde_json::json!({"kind": "ping"}))?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn post_json<T: Serialize + ?Sized>(url: &str, value: &T) -> Result<Response> {
    let body = serde_json::to_vec(value)
        .map_err(|e| Error::permanent(format!("http: the body cannot be encoded: {e}")))?;
    Request::new("POST", url)
        .header("content-type", "application/json")
        .body(body)
        .send()
}

impl Request {
    /// A request with `method` to `url` (`http://` or `https://`).
    ///
    /// ```no_run
    /// let req = stoker_sdk::http::Request::new("DELETE", "https://api.example.com/v1/orders/7");
    /// ```
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// Adds a header.
    ///
    /// ```no_run
    /// let req = stoker_sdk::http::Request::new("GET", "https://x.example/").header("accept", "text/plain");
    /// ```
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Request {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    ///
    /// ```no_run
    /// let req = stoker_sdk::http::Request::new("PUT", "https://x.example/a").body(b"data".to_vec());
    /// ```
    pub fn body(mut self, body: Vec<u8>) -> Request {
        self.body = body;
        self
    }

    /// Bounds connecting and the wait for the response's head (the class's
    /// timeouts and the job's deadline bound them too).
    ///
    /// ```no_run
    /// let req = stoker_sdk::http::Request::new("GET", "https://x.example/").timeout(std::time::Duration::from_secs(2));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// Lets the host retry this request even though its method is not
    /// idempotent (the server honours `Idempotency-Key`).
    ///
    /// ```no_run
    /// let req = stoker_sdk::http::Request::new("POST", "https://x.example/charge").retry();
    /// ```
    pub fn retry(self) -> Request {
        self.header("stoker-retry", "1")
    }

    /// Sends the request and reads the whole response.
    ///
    /// ```no_run
    /// let r = stoker_sdk::http::Request::new("GET", "https://x.example/").send()?;
    /// # Ok::<(), stoker_sdk::Error>(())
    /// ```
    pub fn send(self) -> Result<Response> {
        let (scheme, authority, path) = split_url(&self.url)?;
        let fields: Vec<(String, Vec<u8>)> = self.headers.clone();
        let headers = Fields::from_list(&fields)
            .map_err(|e| Error::permanent(format!("http: bad header: {e:?}")))?;
        let req = OutgoingRequest::new(headers);
        let method = match self.method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        };
        let invalid =
            |what: &str| Error::permanent(format!("http: invalid {what} in `{}`", self.url));
        req.set_method(&method).map_err(|_| invalid("method"))?;
        req.set_scheme(Some(&scheme))
            .map_err(|_| invalid("scheme"))?;
        req.set_authority(Some(authority))
            .map_err(|_| invalid("host"))?;
        req.set_path_with_query(Some(path))
            .map_err(|_| invalid("path"))?;
        let options = RequestOptions::new();
        if let Some(t) = self.timeout {
            let ns = t.as_nanos() as u64;
            let _ = options.set_connect_timeout(Some(ns));
            let _ = options.set_first_byte_timeout(Some(ns));
        }
        let out = req
            .body()
            .map_err(|_| Error::new("http: the request body is unavailable"))?;
        let pending = outgoing_handler::handle(req, Some(options)).map_err(error)?;
        {
            let stream = out
                .write()
                .map_err(|_| Error::new("http: the request body is unavailable"))?;
            for chunk in self.body.chunks(4096) {
                if let Err(e) = stream.blocking_write_and_flush(chunk) {
                    drop(stream);
                    drop(out);
                    // The host stopped reading the body: its answer says why.
                    return Err(match wait(&pending) {
                        Ok(Err(code)) => error(code),
                        _ => stream_error("sending the body", e),
                    });
                }
            }
        }
        OutgoingBody::finish(out, None).map_err(error)?;
        let response = wait(&pending)
            .map_err(|_| Error::new("http: the response was already taken"))?
            .map_err(error)?;
        let status = response.status();
        let headers = response.headers().entries().into_iter().collect::<Vec<_>>();
        let incoming = response
            .consume()
            .map_err(|_| Error::new("http: the response body is unavailable"))?;
        let stream = incoming
            .stream()
            .map_err(|_| Error::new("http: the response body is unavailable"))?;
        let mut body = Vec::new();
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(stream_error("reading the response", e)),
            }
        }
        drop(stream);
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn split_url(url: &str) -> Result<(Scheme, &str, &str)> {
    let bad = || Error::permanent(format!("http: `{url}` is not an http(s) URL"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(bad()),
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        return Err(bad());
    }
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}

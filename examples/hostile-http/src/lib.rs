//! `hostile-http`: one request made with raw `wasi:http` calls, the way a
//! hostile or careless guest would, for the tests of the HTTP policy point.
//! Whatever happens, the job succeeds and its result says what the guest saw
//! at each step: the stage that failed, the `wasi:http` error code, and the
//! text of the `wasi:io/error` (`to-debug-string`) exactly as the host gave it.
//!
//! Args: `{"scheme": "http", "authority": "HOST[:PORT]", "path": "/",
//! "method": "GET", "headers": [["name", "value"]], "body_bytes": 0,
//! "content_length": null}`.
//!
//! ```text
//! stoker enqueue hostile-http '{"authority": "user@127.0.0.1:8080"}'
//! ```
use serde::{Deserialize, Serialize};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

#[derive(Deserialize)]
struct Args {
    #[serde(default = "http")]
    scheme: String,
    authority: String,
    #[serde(default = "slash")]
    path: String,
    #[serde(default = "get")]
    method: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    /// A body of this many `x` bytes.
    #[serde(default)]
    body_bytes: u64,
    /// A `content-length` header to declare.
    #[serde(default)]
    content_length: Option<u64>,
}

fn http() -> String {
    "http".into()
}
fn slash() -> String {
    "/".into()
}
fn get() -> String {
    "GET".into()
}

/// What the guest saw.
#[derive(Default, Serialize)]
struct Seen {
    /// `done`, or the step that failed: `authority`, `handle`, `write`,
    /// `finish`, `response`, `read`.
    stage: String,
    /// Headers the guest could not set, and why.
    refused_headers: Vec<String>,
    status: Option<u16>,
    /// The first 4 KiB of the response body, as text.
    body: String,
    body_bytes: u64,
    /// The error code, as the guest's bindings print it.
    code: Option<String>,
    /// The `wasi:io/error`'s text, whole.
    debug: Option<String>,
    /// After a failed write: the response's error code, if it has one.
    response_code: Option<String>,
}

fn code(e: &ErrorCode) -> Option<String> {
    Some(format!("{e:?}"))
}

fn stream(seen: &mut Seen, stage: &str, e: StreamError) {
    seen.stage = stage.into();
    if let StreamError::LastOperationFailed(io) = e {
        seen.debug = Some(io.to_debug_string());
        seen.code = wasip2::http::types::http_error_code(&io)
            .as_ref()
            .and_then(code);
    } else {
        seen.debug = Some("closed".into());
    }
}

fn run(args: Args) -> stoker_sdk::Result<Seen> {
    let mut seen = Seen::default();
    let fields = Fields::new();
    for (name, value) in &args.headers {
        if let Err(e) = fields.append(name, value.as_bytes()) {
            seen.refused_headers.push(format!("{name}: {e:?}"));
        }
    }
    if let Some(n) = args.content_length {
        let _ = fields.append("content-length", n.to_string().as_bytes());
    }
    let req = OutgoingRequest::new(fields);
    let method = match args.method.as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        other => Method::Other(other.into()),
    };
    let _ = req.set_method(&method);
    let scheme = match args.scheme.as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.into()),
    };
    let _ = req.set_scheme(Some(&scheme));
    if req.set_authority(Some(&args.authority)).is_err() {
        seen.stage = "authority".into();
        return Ok(seen);
    }
    let _ = req.set_path_with_query(Some(&args.path));
    let out = req.body().expect("the body, once");
    let pending = match outgoing_handler::handle(req, None) {
        Ok(p) => p,
        Err(e) => {
            seen.stage = "handle".into();
            seen.code = code(&e);
            return Ok(seen);
        }
    };
    let wait = || loop {
        if let Some(r) = pending.get() {
            break r.expect("the response, once");
        }
        pending.subscribe().block();
    };
    {
        let w = out.write().expect("the body's stream, once");
        let chunk = vec![b'x'; 4096];
        let mut left = args.body_bytes;
        while left > 0 {
            let n = left.min(4096) as usize;
            if let Err(e) = w.blocking_write_and_flush(&chunk[..n]) {
                stream(&mut seen, "write", e);
                drop(w);
                drop(out);
                seen.response_code = wait().err().as_ref().and_then(code);
                return Ok(seen);
            }
            left -= n as u64;
        }
    }
    if let Err(e) = OutgoingBody::finish(out, None) {
        seen.stage = "finish".into();
        seen.code = code(&e);
        return Ok(seen);
    }
    let response = match wait() {
        Ok(r) => r,
        Err(e) => {
            seen.stage = "response".into();
            seen.code = code(&e);
            return Ok(seen);
        }
    };
    seen.status = Some(response.status());
    let incoming = response.consume().expect("the response body, once");
    let body = incoming.stream().expect("its stream, once");
    let mut text = Vec::new();
    loop {
        match body.blocking_read(64 << 10) {
            Ok(chunk) => {
                seen.body_bytes += chunk.len() as u64;
                let room = 4096usize.saturating_sub(text.len());
                text.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Err(StreamError::Closed) => break,
            Err(e) => {
                stream(&mut seen, "read", e);
                seen.body = String::from_utf8_lossy(&text).into_owned();
                return Ok(seen);
            }
        }
    }
    seen.body = String::from_utf8_lossy(&text).into_owned();
    seen.stage = "done".into();
    Ok(seen)
}

stoker_sdk::export_job!(run);

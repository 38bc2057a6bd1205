//! `fetch`: one HTTP request through the runtime's policy point, for the tests
//! of outbound HTTP. Args: `{"url": "...", "method": "GET", "body": "...",
//! "retry": false, "timeout_ms": null}`. Result: the response's status, body
//! (as text) and the `idempotency-key` the server echoed, if any; a refused or
//! failed request fails the job with the reason.
//!
//! ```text
//! stoker enqueue fetch '{"url": "http://127.0.0.1:8080/status"}'
//! ```
use serde::{Deserialize, Serialize};
use stoker_sdk::http::Request;

#[derive(Deserialize)]
struct Args {
    url: String,
    #[serde(default = "get")]
    method: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    retry: bool,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

fn get() -> String {
    "GET".into()
}

#[derive(Serialize)]
struct Fetched {
    status: u16,
    body: String,
    echoed_key: Option<String>,
}

fn fetch(args: Args) -> stoker_sdk::Result<Fetched> {
    let mut req = Request::new(&args.method, &args.url).body(args.body.into_bytes());
    if args.retry {
        req = req.retry();
    }
    if let Some(ms) = args.timeout_ms {
        req = req.timeout(std::time::Duration::from_millis(ms));
    }
    let r = req.send()?;
    Ok(Fetched {
        status: r.status,
        echoed_key: r
            .header("x-seen-idempotency-key")
            .map(|v| String::from_utf8_lossy(v).into_owned()),
        body: r.text(),
    })
}

stoker_sdk::export_job!(fetch);

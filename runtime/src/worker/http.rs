//! The node's HTTP port (`stoker worker --http ADDR`):
//! 1. `GET /metrics`: the node's [`crate::observe::metrics`], with its busy
//!    slots and its queues' sizes read at the scrape, in the OpenMetrics
//!    text format;
//! 2. `GET /healthz`: the process serves;
//! until the node stops.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::queue::keys::QueueKeys;

/// The content type of `/metrics`.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the HTTP endpoint needs from the node.
pub struct Endpoint {
    /// The node whose metrics are served.
    pub node: Arc<super::Node>,
    /// The worker's queues (their sizes are read on a scrape).
    pub queues: Vec<QueueKeys>,
    /// The node's slots and how many there are (busy = all − free).
    pub slots: Arc<Semaphore>,
    /// The node's concurrency.
    pub concurrency: usize,
}

/// Serves `/metrics` and `/healthz` on `listener` until `stopped` turns true.
pub async fn serve(listener: TcpListener, endpoint: Endpoint, mut stopped: watch::Receiver<bool>) {
    let endpoint = Arc::new(endpoint);
    endpoint.node.metrics.set_slots(endpoint.concurrency);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|s| *s) => return,
        };
        match stream {
            Ok((stream, _)) => {
                tokio::spawn(respond(stream, endpoint.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a /metrics connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Most bytes of a request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Answers one request, then closes the connection.
async fn respond(mut stream: TcpStream, endpoint: Arc<Endpoint>) {
    let mut head = Vec::with_capacity(512);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .is_err()
    {
        return;
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (words.next().unwrap_or_default(), words.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    let (status, content_type, body) = match (method, path) {
        (b"GET", Some(b"/metrics")) => {
            let e = &endpoint;
            let busy = e.concurrency - e.slots.available_permits().min(e.concurrency);
            let mut conn = e.node.conn.clone();
            let text = e.node.metrics.scrape(&mut conn, &e.queues, busy).await;
            ("200 OK", CONTENT_TYPE, text)
        }
        (b"GET", Some(b"/healthz")) => ("200 OK", "text/plain", "ok\n".to_owned()),
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

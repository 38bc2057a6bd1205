//! The test process's own HTTP/1.1 server: the origins the guests call, each
//! path a behaviour (flaky, big, slow, held, ...), every request recorded.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the server saw.
#[derive(Clone, Debug)]
pub(crate) struct Hit {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub at: Instant,
}

/// What the server's threads share.
#[derive(Default)]
pub(crate) struct Seen {
    hits: Mutex<Vec<Hit>>,
    /// Held requests being answered now, and the most at once.
    active: AtomicUsize,
    max_active: AtomicUsize,
    /// `/down` answers 503 while this is set.
    down: AtomicBool,
}

/// A tiny HTTP/1.1 server: `/ok`, `/flaky` (503 twice, then 200), `/big`
/// (2 MiB), `/slow` (answers after 3 s), `/redirect` (302 to the metadata
/// address), `/hold` (answers after 300 ms) and `/orders/*` (after 150 ms),
/// both counting the requests answered at once; `/down` (503 while
/// [`Server::set_down`], else 200); `/host` (the `Host` header it got),
/// `/length` (the request body's length), `/wide` (150 headers), `/tall` (a
/// 100 KiB header), `/trickle` (10 bytes of a promised 100,000, then 8 s of
/// silence).
pub(crate) struct Server {
    pub addr: SocketAddr,
    seen: Arc<Seen>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the test server");
        let addr = listener.local_addr().expect("its address");
        let seen: Arc<Seen> = Arc::default();
        let shared = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = shared.clone();
                std::thread::spawn(move || {
                    let _ = answer(stream, &seen);
                });
            }
        });
        Server { addr, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests to `path`, or under it when it ends with `/`.
    pub fn hits(&self, path: &str) -> Vec<Hit> {
        let hits = self.seen.hits.lock().unwrap();
        hits.iter()
            .filter(|h| h.path == path || (path.ends_with('/') && h.path.starts_with(path)))
            .cloned()
            .collect()
    }

    /// The most held requests answered at once.
    pub fn max_active(&self) -> usize {
        self.seen.max_active.load(Ordering::SeqCst)
    }

    /// Makes `/down` fail (503) or answer (200).
    pub fn set_down(&self, down: bool) {
        self.seen.down.store(down, Ordering::SeqCst);
    }
}

fn answer(stream: TcpStream, seen: &Seen) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let key = headers.get("idempotency-key").cloned().unwrap_or_default();
    let host = headers.get("host").cloned().unwrap_or_default();
    let n = {
        let mut seen = seen.hits.lock().unwrap();
        seen.push(Hit {
            method,
            path: path.clone(),
            headers,
            at: Instant::now(),
        });
        seen.iter().filter(|h| h.path == path).count()
    };
    let (status, extra, body): (&str, String, Vec<u8>) = match path.as_str() {
        "/ok" => ("200 OK", String::new(), b"hello".to_vec()),
        "/flaky" if n <= 2 => ("503 Service Unavailable", String::new(), b"busy".to_vec()),
        "/flaky" => ("200 OK", String::new(), b"finally".to_vec()),
        "/big" => ("200 OK", String::new(), vec![b'x'; 2 << 20]),
        "/slow" => {
            // A slow origin: the delay is the behaviour under test.
            std::thread::sleep(Duration::from_secs(3));
            ("200 OK", String::new(), b"late".to_vec())
        }
        p if p == "/hold" || p.starts_with("/orders/") => {
            let now = seen.active.fetch_add(1, Ordering::SeqCst) + 1;
            seen.max_active.fetch_max(now, Ordering::SeqCst);
            let hold = if p == "/hold" { 300 } else { 150 };
            // Each call holds its connection this long: what limiters count.
            std::thread::sleep(Duration::from_millis(hold));
            seen.active.fetch_sub(1, Ordering::SeqCst);
            ("200 OK", String::new(), b"held".to_vec())
        }
        "/down" if seen.down.load(Ordering::SeqCst) => {
            ("503 Service Unavailable", String::new(), b"down".to_vec())
        }
        "/down" => ("200 OK", String::new(), b"up".to_vec()),
        "/redirect" => (
            "302 Found",
            "location: http://169.254.169.254/latest/meta-data/\r\n".to_owned(),
            Vec::new(),
        ),
        "/host" => ("200 OK", String::new(), host.clone().into_bytes()),
        "/length" => ("200 OK", String::new(), body.len().to_string().into_bytes()),
        "/wide" => (
            "200 OK",
            (0..150).map(|i| format!("x-wide-{i}: {i}\r\n")).collect(),
            b"wide".to_vec(),
        ),
        "/tall" => (
            "200 OK",
            format!("x-tall: {}\r\n", "t".repeat(100 << 10)),
            b"tall".to_vec(),
        ),
        "/trickle" => {
            // A head promising 100,000 bytes, 10 of them, then silence.
            let mut out = stream;
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n0123456789"
            )?;
            out.flush()?;
            // The silence is the behaviour under test (the body never comes).
            std::thread::sleep(Duration::from_secs(8));
            return Ok(());
        }
        _ => ("404 Not Found", String::new(), Vec::new()),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nx-seen-idempotency-key: {key}\r\nconnection: close\r\n{extra}\r\n",
        body.len()
    )?;
    out.write_all(&body)?;
    out.flush()
}

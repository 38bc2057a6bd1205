//! The HTTP policy point: the allowlist decision on a request's URI
//! (`HttpHooks::send_request`, which decides before anything leaves the host)
//! and the SSRF guard's address check (`forbidden`).
//!
//! Checks: a request is let through only if its authority carries no
//! userinfo and its scheme, host and port name an origin of the class's
//! `http.allow` exactly (as read independently here), and every such request
//! is let through; each decision counts once (made or refused); origins in
//! `http.allow` survive Display/parse; an IPv4 address the guard refuses is
//! refused in every IPv6 form that embeds it (mapped, translated, compatible,
//! NAT64, 6to4, Teredo); the guard's answer depends only on the address.
//!
//! Nothing is sent: an allowed request's future is dropped unpolled.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, Once};
use std::time::Instant;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use libfuzzer_sys::fuzz_target;
use stoker::config::{HttpAccess, Origin};
use stoker::host::http::{CallCounter, HttpHooks, forbidden};
use stoker::host::log::JobLog;
use wasmtime_wasi_http::WasiHttpHooks;

const ORIGINS: &[&str] = &[
    "https://api.example.com",
    "http://127.0.0.1:18081",
    "https://[::1]:8443",
    "http://example.com:8080",
    "https://10.0.0.1",
    "http://[fd00:ec2::254]",
];
const SCHEMES: &[&str] = &["http", "https", "HTTP", "Https", "ftp", "ws"];
const HOSTS: &[&str] = &[
    "api.example.com",
    "API.Example.COM",
    "127.0.0.1",
    "[::1]",
    "example.com",
    "10.0.0.1",
    "[fd00:ec2::254]",
    "169.254.169.254",
    "api.example.com.",
    "[::ffff:127.0.0.1]",
    "0x7f.1",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

#[derive(Arbitrary, Debug)]
enum Uri {
    Parts {
        scheme: Option<u8>,
        userinfo: Option<Result<u8, String>>,
        host: Result<u8, String>,
        port: Option<Result<u16, String>>,
        path: String,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    allow: Vec<Result<u8, String>>,
    uri: Uri,
    method: u8,
    retry_header: bool,
    ips: Vec<Ip>,
}

#[derive(Arbitrary, Debug)]
enum Ip {
    V4([u8; 4]),
    V6([u16; 8]),
    /// An IPv4 address in the embedding the index picks.
    Embedded([u8; 4], u8, u16),
}

/// Gaps of the runtime this build links, found by probing it once: checks
/// that would fail on every input are skipped, with a notice on stderr.
struct Gaps {
    userinfo: bool,
    translated: bool,
    port: bool,
}

static PROBE: Once = Once::new();
static mut GAPS: Gaps = Gaps {
    userinfo: false,
    translated: false,
    port: false,
};

fn gaps() -> &'static Gaps {
    PROBE.call_once(|| {
        let allow = vec![Origin::parse("http://127.0.0.1:18081").unwrap()];
        let uri: http::Uri = "http://169.254.169.254:18080@127.0.0.1:18081/"
            .parse()
            .unwrap();
        let userinfo = decide(&allow, &uri, "GET", false);
        let translated = forbidden("::ffff:0:7f00:1".parse().unwrap()).is_none();
        let allow80 = vec![Origin::parse("http://127.0.0.1").unwrap()];
        let odd: http::Uri = "http://127.0.0.1:___/".parse().unwrap();
        let port = decide(&allow80, &odd, "GET", false);
        for (gap, what) in [
            (
                port,
                "a port that is not a number is read as the scheme's default",
            ),
            (userinfo, "userinfo in an authority is let through"),
            (
                translated,
                "IPv4-translated addresses (::ffff:0:0/96) are not refused",
            ),
        ] {
            if gap {
                eprintln!("NOTICE: known gap of this runtime, not checked: {what}");
            }
        }
        // SAFETY: written once, here, before any read (inside `call_once`).
        unsafe {
            GAPS = Gaps {
                userinfo,
                translated,
                port,
            }
        };
    });
    // SAFETY: only read after `call_once` wrote it.
    unsafe { &*std::ptr::addr_of!(GAPS) }
}

/// The policy's decision on a request to `uri` under `allow`.
///
/// To swap in a pure origin check, call it here instead of the hooks.
fn decide(allow: &[Origin], uri: &http::Uri, method: &str, retry_header: bool) -> bool {
    let access = Arc::new(HttpAccess {
        allow: allow.to_vec(),
        ..HttpAccess::default()
    });
    let calls = Arc::new(Mutex::new(CallCounter::default()));
    let mut hooks = HttpHooks::new(
        access,
        "job".into(),
        1,
        calls,
        Instant::now(),
        JobLog::new(64 << 10),
        None,
    );
    let mut request = http::Request::builder().method(method).uri(uri.clone());
    if retry_header {
        request = request.header("stoker-retry", "1");
    }
    let Ok(request) = request.body(Empty::<Bytes>::new().map_err(|n| match n {}).boxed_unsync())
    else {
        return false;
    };
    let before = hooks.counts();
    let future = hooks.send_request(request, None, Box::new(async { Ok(()) }));
    drop(future);
    let after = hooks.counts();
    let made = after.0 - before.0;
    let refused = after.1 - before.1;
    assert_eq!(made + refused, 1, "a request is made or refused, once");
    made == 1
}

/// The origin a URI names, read here without the runtime's code: `None`
/// when it has no host or a port that is not a number.
fn origin_of(uri: &http::Uri) -> Option<(Origin, bool)> {
    let authority = uri.authority()?.as_str();
    let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((_, h)) => (true, h),
        None => (false, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None | Some("") => match scheme.as_str() {
            "http" => 80,
            _ => 443,
        },
        Some(p) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) if gaps().port => match scheme.as_str() {
                "http" => 80,
                _ => 443,
            },
            Err(_) => return None,
        },
    };
    let host = host.to_ascii_lowercase();
    Some((Origin { scheme, host, port }, userinfo))
}

fn pick<'a>(from: &[&'a str], i: u8) -> &'a str {
    from[i as usize % from.len()]
}

fn uri_text(uri: Uri) -> String {
    match uri {
        Uri::Raw(s) => s,
        Uri::Parts {
            scheme,
            userinfo,
            host,
            port,
            path,
        } => {
            let mut s = String::new();
            if let Some(i) = scheme {
                s.push_str(pick(SCHEMES, i));
                s.push_str("://");
            }
            match userinfo {
                Some(Ok(i)) => s.push_str(&format!("{}@", pick(HOSTS, i))),
                Some(Err(u)) => s.push_str(&format!("{u}@")),
                None => {}
            }
            match host {
                Ok(i) => s.push_str(pick(HOSTS, i)),
                Err(h) => s.push_str(&h),
            }
            match port {
                Some(Ok(p)) => s.push_str(&format!(":{p}")),
                Some(Err(p)) => s.push_str(&format!(":{p}")),
                None => {}
            }
            if !path.is_empty() {
                s.push('/');
                s.push_str(&path);
            }
            s
        }
    }
}

fn embed(v4: Ipv4Addr, how: u8, extra: u16) -> Ipv6Addr {
    let [a, b, c, d] = v4.octets();
    let (hi, lo) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
    match how % 7 {
        0 => v4.to_ipv6_mapped(),
        1 => Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo),
        2 => Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo),
        3 => Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
        4 => Ipv6Addr::new(0x64, 0xff9b, 1, extra, 0, 0, hi, lo),
        5 => Ipv6Addr::new(0x2002, hi, lo, extra, 0, 0, 0, 1),
        // Teredo: the client's address is stored inverted.
        _ => Ipv6Addr::new(0x2001, 0, hi, lo, 0, extra, !hi, !lo),
    }
}

fn check_ip(ip: Ip) {
    match ip {
        Ip::V4(o) => {
            let a = Ipv4Addr::from(o);
            let why = forbidden(IpAddr::V4(a));
            assert_eq!(why, forbidden(IpAddr::V4(a)));
            if why.is_some() {
                for how in 0..7 {
                    if how == 1 && gaps().translated {
                        continue;
                    }
                    let v6 = embed(a, how, 0);
                    assert!(
                        forbidden(IpAddr::V6(v6)).is_some(),
                        "{a} is refused ({why:?}) but not as {v6}"
                    );
                }
            }
        }
        Ip::V6(s) => {
            let a = Ipv6Addr::from(s);
            assert_eq!(forbidden(IpAddr::V6(a)), forbidden(IpAddr::V6(a)));
        }
        Ip::Embedded(o, how, extra) => {
            let a = Ipv4Addr::from(o);
            if how % 7 == 1 && gaps().translated {
                return;
            }
            let v6 = embed(a, how, extra);
            if forbidden(IpAddr::V4(a)).is_some() {
                assert!(
                    forbidden(IpAddr::V6(v6)).is_some(),
                    "{a} is refused but not as {v6}"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let gaps = gaps();
    let mut allow = Vec::new();
    for a in input.allow.iter().take(8) {
        let text = match a {
            Ok(i) => pick(ORIGINS, *i).to_owned(),
            Err(s) => s.clone(),
        };
        if let Ok(o) = Origin::parse(&text) {
            assert_eq!(Origin::parse(&o.to_string()).as_ref(), Ok(&o), "{text}");
            allow.push(o);
        }
    }
    for ip in input.ips.into_iter().take(8) {
        check_ip(ip);
    }
    let Ok(uri) = uri_text(input.uri).parse::<http::Uri>() else {
        return;
    };
    let allowed = decide(
        &allow,
        &uri,
        pick(METHODS, input.method),
        input.retry_header,
    );
    let expected = match origin_of(&uri) {
        Some((origin, userinfo)) => allow.contains(&origin) && (!userinfo || gaps.userinfo),
        None => false,
    };
    assert_eq!(allowed, expected, "{uri} under {allow:?}");
});

//! The HTTP policy point: the origin check (`check_origin`, `check_uri`,
//! pure), the allowlist decision on a request's URI
//! (`HttpHooks::send_request`, which decides before anything leaves the host)
//! and the refused-address table (`egress::check`).
//!
//! Checks: `check_origin` and `check_uri` accept exactly the one plain
//! spelling `host/origin.rs` documents (as read independently here: http or
//! https in any case, no userinfo, a name of 1-63-byte labels of at most 253
//! bytes with one trailing dot dropped, a dotted quad or a bracketed IPv6
//! literal without zone, a port of 1 to 5 digits without a leading zero, 1 to
//! 65535, or none) and normalise it the same way; a normalised origin checks
//! back to itself and survives Display/`Origin::parse`; a refusal is one
//! bounded line; `Origin::parse` accepts what the check accepts; a request is
//! let through exactly when its URI's origin is in the class's `http.allow`,
//! and each decision counts once (made or refused); the table's answer
//! depends only on the address; an IPv4 address it refuses is refused in
//! every IPv6 form that embeds it; the IPv4-mapped (`::ffff:0:0/96`),
//! -translated (`::ffff:0:0:0/96`), -compatible (`::/96`) and NAT64 local-use
//! (`64:ff9b:1::/48`) forms are refused whatever they embed; NAT64
//! (`64:ff9b::/96`), 6to4 and Teredo addresses are allowed exactly when what
//! they embed is.
//!
//! Nothing is sent: an allowed request's future is dropped unpolled.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use libfuzzer_sys::fuzz_target;
use stoker::config::{HttpAccess, Origin};
use stoker::host::egress;
use stoker::host::http::HttpCtx;
use stoker::host::log::JobLog;
use stoker::host::origin::{MAX_AUTHORITY, check_origin, check_uri};
use wasmtime::component::ResourceTable;

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
    "127.0.0.1.",
    "Example.com..",
    "[fe80::1%25eth0]",
    "127.0.0.01",
    "a_b-c.d",
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
    /// Straight to `check_origin`.
    origin: Option<(Result<u8, String>, String)>,
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

/// The policy point's decision on a request to `uri` under `allow`.
fn decide(allow: &[Origin], uri: &http::Uri, method: &str, retry_header: bool) -> bool {
    let access = Arc::new(HttpAccess {
        allow: allow.to_vec(),
        ..HttpAccess::default()
    });
    let mut ctx = HttpCtx::new(access, Instant::now(), JobLog::new(64 << 10), None);
    let mut request = http::Request::builder().method(method).uri(uri.clone());
    if retry_header {
        request = request.header("stoker-retry", "1");
    }
    let Ok(request) = request.body(Empty::<Bytes>::new().map_err(|n| match n {}).boxed_unsync())
    else {
        return false;
    };
    let before = ctx.counts();
    let mut table = ResourceTable::new();
    let view = ctx.view(&mut table, 1);
    let future = view
        .hooks
        .send_request(request, None, Box::new(async { Ok(()) }));
    drop(future);
    let after = ctx.counts();
    let made = after.0 - before.0;
    let refused = after.1 - before.1;
    assert_eq!(made + refused, 1, "a request is made or refused, once");
    made == 1
}

/// The origin `scheme` and `authority` name, read here from
/// `host/origin.rs`'s documentation without its code; `None`: refused.
fn expected(scheme: &str, authority: &str) -> Option<Origin> {
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => "http",
        "https" => "https",
        _ => return None,
    };
    if authority.len() > MAX_AUTHORITY
        || !authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
    {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let close = rest.find(']')?;
        let v6: Ipv6Addr = rest[..close].parse().ok()?;
        let port = match &rest[close + 1..] {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (v6.to_string(), port)
    } else {
        if authority.contains(['[', ']']) || authority.matches(':').count() > 1 {
            return None;
        }
        let mut parts = authority.splitn(2, ':');
        let host = parts.next()?;
        let port = parts.next();
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() || host.len() > 253 {
            return None;
        }
        let host = match host.parse::<Ipv4Addr>() {
            Ok(v4) => v4.to_string(),
            Err(_) => {
                if host.split('.').any(|l| l.is_empty() || l.len() > 63) {
                    return None;
                }
                host.to_ascii_lowercase()
            }
        };
        (host, port)
    };
    let port = match port {
        None if scheme == "http" => 80,
        None => 443,
        Some(p) => {
            let digits = (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
            if !digits || p.starts_with('0') {
                return None;
            }
            u16::try_from(p.parse::<u32>().ok()?).ok()?
        }
    };
    Some(Origin {
        scheme: scheme.to_owned(),
        host,
        port,
    })
}

/// Checks `check_origin(scheme, authority)` against [`expected`], and what
/// it accepts for normalisation and round trips.
fn check_pair(scheme: &str, authority: &str) -> Option<Origin> {
    let got = check_origin(scheme, authority);
    assert_eq!(
        got.clone().ok(),
        expected(scheme, authority),
        "check_origin({scheme:?}, {authority:?}) = {got:?}"
    );
    match got {
        Ok(o) => {
            let host = match o.host.contains(':') {
                true => format!("[{}]", o.host),
                false => o.host.clone(),
            };
            let again = check_origin(&o.scheme, &format!("{host}:{}", o.port));
            assert_eq!(again.as_ref(), Ok(&o), "normalised is stable");
            assert_eq!(check_origin(&o.scheme, &o.host_header()).as_ref(), Ok(&o));
            assert_eq!(Origin::parse(&o.to_string()).as_ref(), Ok(&o));
            Some(o)
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty() && !text.contains(['\n', '\r']), "{text:?}");
            assert!(text.len() <= 200, "a {}-byte refusal: {text:?}", text.len());
            None
        }
    }
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

fn refused(ip: IpAddr) -> bool {
    let a = egress::check(ip);
    assert_eq!(
        a,
        egress::check(ip),
        "the answer depends only on the address"
    );
    if let Err(r) = &a {
        let text = r.to_string();
        assert!(!text.contains('\n'), "{text:?}");
    }
    a.is_err()
}

fn check_embedded(a: Ipv4Addr, how: u8, extra: u16) {
    let v4 = refused(IpAddr::V4(a));
    let v6 = embed(a, how, extra);
    let got = refused(IpAddr::V6(v6));
    match how % 7 {
        // Mapped, translated, compatible, NAT64 local-use: whatever they embed.
        0..=2 | 4 => assert!(got, "{v6} (embedding {a}) is not refused"),
        // NAT64, 6to4, Teredo: as the address they reach.
        _ => assert_eq!(got, v4, "{v6} judged unlike the {a} it embeds"),
    }
}

fn check_ip(ip: Ip) {
    match ip {
        Ip::V4(o) => {
            for how in 0..7 {
                check_embedded(Ipv4Addr::from(o), how, 0);
            }
        }
        Ip::V6(s) => {
            refused(IpAddr::V6(Ipv6Addr::from(s)));
        }
        Ip::Embedded(o, how, extra) => check_embedded(Ipv4Addr::from(o), how, extra),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut allow = Vec::new();
    for a in input.allow.iter().take(8) {
        let text = match a {
            Ok(i) => pick(ORIGINS, *i).to_owned(),
            Err(s) => s.clone(),
        };
        let parsed = Origin::parse(&text);
        let want = text
            .split_once("://")
            .and_then(|(scheme, rest)| expected(scheme, rest.strip_suffix('/').unwrap_or(rest)));
        assert_eq!(
            parsed.clone().ok(),
            want,
            "Origin::parse({text:?}) = {parsed:?}"
        );
        if let Ok(o) = parsed {
            assert_eq!(Origin::parse(&o.to_string()).as_ref(), Ok(&o), "{text}");
            allow.push(o);
        }
    }
    if let Some((scheme, authority)) = &input.origin {
        let scheme = match scheme {
            Ok(i) => pick(SCHEMES, *i),
            Err(s) => s,
        };
        check_pair(scheme, authority);
    }
    for ip in input.ips.into_iter().take(8) {
        check_ip(ip);
    }
    let Ok(uri) = uri_text(input.uri).parse::<http::Uri>() else {
        return;
    };
    let origin = check_uri(&uri).ok();
    let authority = uri.authority().map_or("", |a| a.as_str());
    let want = match authority {
        "" => None,
        a => check_pair(uri.scheme_str().unwrap_or("https"), a),
    };
    assert_eq!(origin, want, "check_uri({uri})");
    let allowed = decide(
        &allow,
        &uri,
        pick(METHODS, input.method),
        input.retry_header,
    );
    let expected = origin.is_some_and(|o| allow.contains(&o));
    assert_eq!(allowed, expected, "{uri} under {allow:?}");
});

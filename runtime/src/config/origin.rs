//! The origin check: one pure function that turns a request's scheme and
//! authority (or an allowlist entry's) into the [`Origin`] the policy point
//! compares, connects to and names in the `Host` header, or refuses it.
//!
//! Parsers disagree about authorities (userinfo, percent-encoding, zones,
//! backslashes, odd ports), and every disagreement is a way to make the
//! allowlist check one host while the connection or the `Host` header names
//! another. So the check accepts one plain spelling and refuses the rest:
//!
//! - scheme `http` or `https` (any case);
//! - no userinfo (`user@`, `user:password@`): refused, never stripped;
//! - a DNS name of letters, digits, `-` and `_` in dot-separated labels of
//!   1 to 63 bytes (at most 253 in all), lowercased, one trailing dot dropped;
//!   or an IPv4 literal in dotted-quad form; or an IPv6 literal in brackets,
//!   without a zone (`%`), written back in its canonical form;
//! - a port of 1 to 5 decimal digits without a leading zero, 1 to 65535, or
//!   none (the scheme's: 80 or 443); `host:` with an empty port is refused;
//! - nothing else: `%`, `\`, spaces, controls, non-ASCII and every other
//!   character are refused.
//!
//! A spelling such as `127.1` or `0x7f000001` is a *name* here (it is not a
//! dotted quad): it matches only an allowlist entry spelled the same, and the
//! address it resolves to is checked like any name's.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::Origin;

/// The longest authority accepted, in bytes: a 253-byte name, `:` and a
/// 5-digit port, with room for a bracketed IPv6 literal.
pub const MAX_AUTHORITY: usize = 262;

/// Why an origin is refused. Its text is one line, bounded, and quotes at
/// most one character of the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not `http` or `https`.
    Scheme,
    /// No host.
    NoHost,
    /// Longer than [`MAX_AUTHORITY`] bytes.
    TooLong(usize),
    /// `user@` or `user:password@` before the host.
    Userinfo,
    /// A character no host or port may hold.
    Character(char),
    /// A host that is not a plain name or IP literal.
    Host(&'static str),
    /// A port that is not plain decimal 1 to 65535.
    Port(&'static str),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Scheme => write!(f, "the scheme is not http or https"),
            Refusal::NoHost => write!(f, "the URL names no host"),
            Refusal::TooLong(n) => write!(
                f,
                "the authority is {n} bytes long (at most {MAX_AUTHORITY})"
            ),
            Refusal::Userinfo => write!(
                f,
                "the authority carries userinfo (`user@` before the host); \
                 put credentials in a header, never in the URL"
            ),
            Refusal::Character(c) => write!(
                f,
                "the authority contains {:?} (U+{:04X}), which no host or port may hold",
                c, *c as u32
            ),
            Refusal::Host(why) => write!(f, "the host {why}"),
            Refusal::Port(why) => write!(f, "the port {why}"),
        }
    }
}

/// Checks and normalises `scheme` and `authority` (`host[:port]`, as in a
/// URL between `//` and the path) into an [`Origin`]: lowercase scheme and
/// name, canonical IP literal (IPv6 without brackets), explicit port.
/// Pure: no lookup, no I/O.
pub fn check_origin(scheme: &str, authority: &str) -> Result<Origin, Refusal> {
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        "http"
    } else if scheme.eq_ignore_ascii_case("https") {
        "https"
    } else {
        return Err(Refusal::Scheme);
    };
    if authority.len() > MAX_AUTHORITY {
        return Err(Refusal::TooLong(authority.len()));
    }
    if authority.contains('@') {
        return Err(Refusal::Userinfo);
    }
    if let Some(c) = authority
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']')))
    {
        return Err(Refusal::Character(c));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (literal, after) = v6
                .split_once(']')
                .ok_or(Refusal::Host("has an unclosed `[`"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or(Refusal::Host("has text after the IPv6 literal"))?,
                ),
            };
            let ip: Ipv6Addr = literal
                .parse()
                .map_err(|_| Refusal::Host("is not a valid IPv6 literal"))?;
            (ip.to_string(), port)
        }
        None => {
            if authority.contains(['[', ']']) {
                return Err(Refusal::Host("has a stray `[` or `]`"));
            }
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if port.is_some_and(|p| p.contains(':')) {
                return Err(Refusal::Host(
                    "has more than one `:` (an IPv6 literal goes in brackets)",
                ));
            }
            (name(host)?, port)
        }
    };
    let port = match port {
        None => match scheme {
            "http" => 80,
            _ => 443,
        },
        Some(p) => self::port(p)?,
    };
    Ok(Origin {
        scheme: scheme.to_owned(),
        host,
        port,
    })
}

/// A DNS name or dotted-quad IPv4 literal, normalised.
fn name(host: &str) -> Result<String, Refusal> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(Refusal::NoHost);
    }
    if host.len() > 253 {
        return Err(Refusal::Host("is longer than 253 bytes"));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(ip.to_string());
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err(Refusal::Host("has an empty label (`..` or a leading `.`)"));
        }
        if label.len() > 63 {
            return Err(Refusal::Host("has a label longer than 63 bytes"));
        }
    }
    Ok(host.to_ascii_lowercase())
}

/// A port: 1 to 5 decimal digits, no leading zero, 1 to 65535.
fn port(p: &str) -> Result<u16, Refusal> {
    if p.is_empty() {
        return Err(Refusal::Port("is empty (drop the `:` for the default)"));
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::Port("is not a decimal number"));
    }
    if p.starts_with('0') {
        return Err(Refusal::Port("has a leading zero (or is 0)"));
    }
    match p.parse::<u16>() {
        Ok(n) if p.len() <= 5 => Ok(n),
        _ => Err(Refusal::Port("is out of range (1 to 65535)")),
    }
}

/// Checks the origin of a request's URI, as the policy point receives it
/// (a missing scheme is `https`, as wasi:http defaults it).
pub fn check_uri(uri: &http::Uri) -> Result<Origin, Refusal> {
    let authority = uri.authority().map_or("", |a| a.as_str());
    if authority.is_empty() {
        return Err(Refusal::NoHost);
    }
    check_origin(uri.scheme_str().unwrap_or("https"), authority)
}

impl Origin {
    /// The value of the `Host` header for this origin: the host (an IPv6
    /// literal in brackets), and the port unless it is the scheme's default.
    pub fn host_header(&self) -> String {
        let default = matches!(
            (self.scheme.as_str(), self.port),
            ("http", 80) | ("https", 443)
        );
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        match default {
            true => host,
            false => format!("{host}:{}", self.port),
        }
    }

    /// The IP literal this origin names, if it names one.
    pub fn ip_literal(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(scheme: &str, authority: &str) -> (String, String, u16) {
        let o = check_origin(scheme, authority)
            .unwrap_or_else(|e| panic!("{scheme}://{authority}: {e}"));
        (o.scheme, o.host, o.port)
    }

    fn refused(scheme: &str, authority: &str) -> Refusal {
        match check_origin(scheme, authority) {
            Ok(o) => panic!("{scheme}://{authority} was accepted as {o}"),
            Err(e) => e,
        }
    }

    #[test]
    fn plain_origins_are_normalised() {
        let s = |a: &str, b: &str, p| (a.to_owned(), b.to_owned(), p);
        assert_eq!(
            ok("HTTPS", "API.Example.COM"),
            s("https", "api.example.com", 443)
        );
        assert_eq!(ok("http", "example.com."), s("http", "example.com", 80));
        assert_eq!(
            ok("http", "example.com.:8080"),
            s("http", "example.com", 8080)
        );
        assert_eq!(ok("http", "127.0.0.1:65535"), s("http", "127.0.0.1", 65535));
        assert_eq!(ok("http", "a_b-c.d:1"), s("http", "a_b-c.d", 1));
        assert_eq!(ok("http", "[::1]"), s("http", "::1", 80));
        assert_eq!(
            ok("http", "[::FFFF:7F00:1]:81"),
            s("http", "::ffff:127.0.0.1", 81)
        );
        assert_eq!(
            ok("http", "[2001:DB8:0:0::1]"),
            s("http", "2001:db8::1", 80)
        );
        // Not dotted quads: names (resolved, then checked like any name).
        assert_eq!(ok("http", "127.1"), s("http", "127.1", 80));
        assert_eq!(ok("http", "0x7F000001"), s("http", "0x7f000001", 80));
        assert_eq!(ok("http", "127.0.0.01"), s("http", "127.0.0.01", 80));
    }

    #[test]
    fn authority_confusions_are_refused() {
        assert_eq!(
            refused("http", "169.254.169.254:18080@127.0.0.1:18081"),
            Refusal::Userinfo
        );
        assert_eq!(refused("http", "user@example.com"), Refusal::Userinfo);
        assert_eq!(refused("http", "user:pw@example.com"), Refusal::Userinfo);
        assert_eq!(refused("http", "@example.com"), Refusal::Userinfo);
        assert_eq!(refused("ftp", "example.com"), Refusal::Scheme);
        assert_eq!(refused("file", ""), Refusal::Scheme);
        assert_eq!(refused("http", ""), Refusal::NoHost);
        assert_eq!(refused("http", ":80"), Refusal::NoHost);
        assert_eq!(refused("http", "."), Refusal::NoHost);
        for (a, c) in [
            ("127.0.0.%31", '%'),
            ("ex%61mple.com", '%'),
            ("[fe80::1%25eth0]", '%'),
            ("[fe80::1%eth0]:80", '%'),
            ("example.com\\x", '\\'),
            ("evil.com\\.example.com", '\\'),
            ("example.com ", ' '),
            ("exa\tmple.com", '\t'),
            ("example.com\r\nx:y", '\r'),
            ("exämple.com", 'ä'),
            ("example.com#", '#'),
            ("example.com/", '/'),
            ("example.com?", '?'),
            ("*.example.com", '*'),
            ("example.com,evil.com", ','),
            ("example.com;x", ';'),
            ("exa\0mple.com", '\0'),
            ("example.com:+80", '+'),
        ] {
            assert_eq!(refused("http", a), Refusal::Character(c), "{a:?}");
        }
        for a in [
            "example.com:",
            "example.com:0",
            "example.com:080",
            "example.com:00080",
            "example.com:65536",
            "example.com:99999",
            "example.com:123456",
            "example.com:8a",
            "[::1]:",
            "[::1]:0",
        ] {
            assert!(matches!(refused("http", a), Refusal::Port(_)), "{a}");
        }
        for a in [
            "::1",
            "fe80::1:80",
            "[::1",
            "::1]",
            "[::1]x",
            "[::1]]",
            "[[::1]]",
            "[127.0.0.1]",
            "[v1.x]",
            "[]",
            "example..com",
            ".example.com",
            "example.com..",
        ] {
            assert!(matches!(refused("http", a), Refusal::Host(_)), "{a}");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(matches!(refused("http", &long), Refusal::Host(_)));
        let long = ["a"; 130].join(".");
        assert!(matches!(refused("http", &long), Refusal::Host(_)));
        let huge = "a".repeat(10_000);
        assert_eq!(refused("http", &huge), Refusal::TooLong(10_000));
    }

    #[test]
    fn refusals_are_one_bounded_line() {
        for a in ["a@b", "\u{202e}x", "x:99999", "[::1", "", "x\ny"] {
            let text = refused("http", a).to_string();
            assert!(!text.contains('\n') && text.len() < 200, "{text}");
        }
    }

    #[test]
    fn the_host_header_names_the_checked_origin() {
        let h = |s, a| check_origin(s, a).unwrap().host_header();
        assert_eq!(h("http", "Example.com:80"), "example.com");
        assert_eq!(h("https", "example.com"), "example.com");
        assert_eq!(h("https", "example.com:80"), "example.com:80");
        assert_eq!(h("http", "127.0.0.1:18081"), "127.0.0.1:18081");
        assert_eq!(h("http", "[::1]:81"), "[::1]:81");
        assert_eq!(h("http", "example.com."), "example.com");
    }

    #[test]
    fn a_request_uri_is_checked_on_its_scheme_and_whole_authority() {
        let uri: http::Uri = "http://169.254.169.254:18080@127.0.0.1:18081/x"
            .parse()
            .unwrap();
        assert_eq!(uri.host(), Some("127.0.0.1"), "what http::Uri sees");
        assert_eq!(check_uri(&uri), Err(Refusal::Userinfo));
        let uri: http::Uri = "HTTP://Example.COM:8080/x?y".parse().unwrap();
        let o = check_uri(&uri).unwrap();
        assert_eq!(o.to_string(), "http://example.com:8080");
        let uri: http::Uri = "/only/a/path".parse().unwrap();
        assert_eq!(check_uri(&uri), Err(Refusal::NoHost));
    }
}

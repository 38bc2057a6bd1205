//! What a class's jobs may reach and how much: Redis key prefixes and quotas
//! (`[classes.NAME.redis]`), HTTP origins and limits (`[classes.NAME.http]`).
//! The specs are what `stoker.toml` says; the access types are what a deploy
//! stores with each class.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Destination, duration, size};

/// One `[classes.NAME.http]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// Origins the job may call: `scheme://host[:port]`.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Whole request, connect to last byte.
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// Connecting (TCP and TLS).
    #[serde(default, deserialize_with = "duration")]
    pub connect_timeout: Option<Duration>,
    /// From the request sent to the response's head.
    #[serde(default, deserialize_with = "duration")]
    pub first_byte_timeout: Option<Duration>,
    /// Largest request body.
    #[serde(default, deserialize_with = "size")]
    pub max_request: Option<u64>,
    /// Largest response body.
    #[serde(default, deserialize_with = "size")]
    pub max_response: Option<u64>,
    /// Host retries of an idempotent request (or one the job marks retryable).
    #[serde(default)]
    pub retries: Option<u32>,
}

/// A `scheme://host:port` a class may call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// A DNS name (lowercase, no trailing dot) or a canonical IP literal
    /// (IPv6 without brackets).
    pub host: String,
    /// The port, explicit or the scheme's.
    pub port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing `/` is allowed, a path is
    /// not), normalised by the same check as a job's requests
    /// ([`check_origin`](crate::config::origin::check_origin)), so an entry
    /// matches exactly the requests that name it.
    pub fn parse(text: &str) -> Result<Origin, String> {
        use crate::config::origin::{Refusal, check_origin};
        let quoted = crate::render::quote(text, 120);
        let bad = |why: &str| format!("`http.allow`: `{quoted}` {why}");
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("is not scheme://host[:port]"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        check_origin(scheme, rest).map_err(|e| match e {
            Refusal::Scheme => bad("must use http or https"),
            Refusal::Userinfo | Refusal::Character('/' | '?' | '#' | '*' | '@') => {
                bad("must name a host and port only (no path, user or wildcard)")
            }
            Refusal::Port(_) => bad(&format!("has an invalid port: {e}")),
            e => bad(&format!("is not a plain origin: {e}")),
        })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// What a class's jobs may do over HTTP, as deployed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpAccess {
    /// Origins the job may call; none: no HTTP at all.
    pub allow: Vec<Origin>,
    /// Whole request, ms (and never past the attempt's deadline).
    pub timeout_ms: u64,
    /// Connecting, ms.
    pub connect_ms: u64,
    /// Request sent to response head, ms.
    pub first_byte_ms: u64,
    /// Largest request body, bytes.
    pub max_request_bytes: u64,
    /// Largest response body, bytes.
    pub max_response_bytes: u64,
    /// Host retries.
    pub retries: u32,
    /// Retry requests of any method, not only idempotent ones (the class's
    /// retry policy is "calls APIs": its idempotency keys make this safe).
    #[serde(default)]
    pub retry_any_method: bool,
    /// Limiters and breakers of the allowed origins that have them.
    #[serde(default)]
    pub destinations: Vec<Destination>,
}

impl HttpAccess {
    /// The limiters and breaker of calls to `origin`, if it has any.
    pub fn destination(&self, origin: &Origin) -> Option<&Destination> {
        self.destinations.iter().find(|d| &d.origin == origin)
    }
}

impl Default for HttpAccess {
    fn default() -> Self {
        HttpAccess {
            allow: Vec::new(),
            timeout_ms: 30_000,
            connect_ms: 5_000,
            first_byte_ms: 15_000,
            max_request_bytes: 8 << 20,
            max_response_bytes: 16 << 20,
            retries: 2,
            retry_any_method: false,
            destinations: Vec::new(),
        }
    }
}

impl HttpSpec {
    /// The access this spec grants, checked.
    pub fn access(&self) -> Result<HttpAccess, String> {
        let d = HttpAccess::default();
        let ms = |t: Option<Duration>, d: u64| t.map_or(d, |t| t.as_millis() as u64);
        let access = HttpAccess {
            allow: self
                .allow
                .iter()
                .map(|o| Origin::parse(o))
                .collect::<Result<_, _>>()?,
            timeout_ms: ms(self.timeout, d.timeout_ms),
            connect_ms: ms(self.connect_timeout, d.connect_ms),
            first_byte_ms: ms(self.first_byte_timeout, d.first_byte_ms),
            max_request_bytes: self.max_request.unwrap_or(d.max_request_bytes),
            max_response_bytes: self.max_response.unwrap_or(d.max_response_bytes),
            retries: self.retries.unwrap_or(d.retries),
            retry_any_method: false,
            destinations: Vec::new(),
        };
        if access.timeout_ms == 0 || access.connect_ms == 0 || access.first_byte_ms == 0 {
            return Err("`http` timeouts must be at least 1ms".into());
        }
        if access.retries > 10 {
            return Err("`http.retries` must be at most 10".into());
        }
        Ok(access)
    }
}

/// One `[classes.NAME.redis]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSpec {
    /// Readable key prefixes.
    #[serde(default)]
    pub read: Vec<String>,
    /// Writable (and readable) key prefixes.
    #[serde(default)]
    pub write: Vec<String>,
    /// Operations per attempt.
    #[serde(default)]
    pub ops: Option<u64>,
    /// Operations per second per attempt.
    #[serde(default)]
    pub ops_per_sec: Option<u64>,
    /// Reply bytes per attempt.
    #[serde(default, deserialize_with = "size")]
    pub reply: Option<u64>,
}

/// What a class's jobs may do in Redis, as deployed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisAccess {
    /// Readable key prefixes (normalized: no trailing `:`).
    pub read: Vec<String>,
    /// Writable key prefixes (normalized).
    pub write: Vec<String>,
    /// Operations per attempt.
    pub ops: u64,
    /// Operations per second per attempt.
    pub ops_per_sec: u64,
    /// Reply bytes per attempt.
    pub reply_bytes: u64,
}

/// Default Redis operations per attempt.
pub const DEFAULT_REDIS_OPS: u64 = 10_000;
/// Default Redis operations per second per attempt.
pub const DEFAULT_REDIS_OPS_PER_SEC: u64 = 1_000;
/// Default Redis reply bytes per attempt.
pub const DEFAULT_REDIS_REPLY: u64 = 16 << 20;

impl Default for RedisAccess {
    fn default() -> Self {
        RedisAccess {
            read: Vec::new(),
            write: Vec::new(),
            ops: DEFAULT_REDIS_OPS,
            ops_per_sec: DEFAULT_REDIS_OPS_PER_SEC,
            reply_bytes: DEFAULT_REDIS_REPLY,
        }
    }
}

impl RedisAccess {
    /// Whether `key` is inside one of `prefixes`.
    fn inside(prefixes: &[String], key: &str) -> bool {
        prefixes.iter().any(|p| {
            key.strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
        })
    }

    /// Whether the job may read `key`.
    pub fn may_read(&self, key: &str) -> bool {
        !reserved(key) && (Self::inside(&self.read, key) || Self::inside(&self.write, key))
    }

    /// Whether the job may write `key`.
    pub fn may_write(&self, key: &str) -> bool {
        !reserved(key) && Self::inside(&self.write, key)
    }
}

/// Keys of Stoker itself: never reachable by a job.
fn reserved(key: &str) -> bool {
    key == "stoker" || key.starts_with("stoker:")
}

impl RedisSpec {
    /// The access this spec grants, checked and normalized.
    pub fn access(&self) -> Result<RedisAccess, String> {
        let d = RedisAccess::default();
        let norm = |list: &[String], what: &str| -> Result<Vec<String>, String> {
            list.iter()
                .map(|p| {
                    let n = p.trim_end_matches(':');
                    if n.is_empty() || n.chars().any(|c| c.is_whitespace() || c == '*') {
                        return Err(format!(
                            "`redis.{what}`: prefix `{p}` must be non-empty, without spaces or `*`"
                        ));
                    }
                    if reserved(n) {
                        return Err(format!(
                            "`redis.{what}`: prefix `{p}` is Stoker's own key space"
                        ));
                    }
                    Ok(n.to_owned())
                })
                .collect()
        };
        let access = RedisAccess {
            read: norm(&self.read, "read")?,
            write: norm(&self.write, "write")?,
            ops: self.ops.unwrap_or(d.ops),
            ops_per_sec: self.ops_per_sec.unwrap_or(d.ops_per_sec),
            reply_bytes: self.reply.unwrap_or(d.reply_bytes),
        };
        if access.ops_per_sec == 0 {
            return Err("`redis.ops_per_sec` must be positive".into());
        }
        Ok(access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_with_default_ports() {
        let o = Origin::parse("https://API.example.com").unwrap();
        assert_eq!(
            (o.scheme.as_str(), o.host.as_str(), o.port),
            ("https", "api.example.com", 443)
        );
        let o = Origin::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 8080));
        let o = Origin::parse("http://[::1]:81").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("::1", 81));
        assert_eq!(o.to_string(), "http://[::1]:81");
        for bad in [
            "ftp://x",
            "x.com",
            "https://x.com/path",
            "https://*.x.com",
            "http://u@x",
            "http://x:99999",
            "http://x:080",
            "http://x:",
            "http://ex%61mple.com",
            "http://[fe80::1%25eth0]",
            "http://a\\b",
            "http://",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
        // Spelled as requests are normalised, so they compare equal.
        assert_eq!(
            Origin::parse("HTTP://Example.COM.:8080/").unwrap(),
            Origin::parse("http://example.com:8080").unwrap()
        );
        let o = Origin::parse("http://[::FFFF:7F00:1]:81").unwrap();
        assert_eq!(o.host, "::ffff:127.0.0.1");
        let e = Origin::parse("http://user:pw@api.example.com").unwrap_err();
        assert!(e.contains("no path, user or wildcard"), "{e}");
    }

    #[test]
    fn redis_prefixes_match_whole_segments() {
        let spec = RedisSpec {
            read: vec!["app:a".into()],
            write: vec!["app:out:".into()],
            ..Default::default()
        };
        let a = spec.access().unwrap();
        assert!(a.may_read("app:a") && a.may_read("app:a:1"));
        assert!(!a.may_read("app:ab") && !a.may_read("app"));
        assert!(!a.may_write("app:a:1"));
        assert!(a.may_write("app:out:x") && a.may_read("app:out"));
        assert!(!a.may_write("app:outside"));
        let stoker = RedisSpec {
            write: vec!["stoker:".into()],
            ..Default::default()
        };
        assert!(stoker.access().unwrap_err().contains("own key space"));
        let star = RedisSpec {
            read: vec!["app:*".into()],
            ..Default::default()
        };
        assert!(star.access().is_err());
    }
}

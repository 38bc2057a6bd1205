//! Reading a Redis URL into a [`Target`], and [`redact`]ing one for
//! messages (the forms are in the [module docs](super)).

use std::path::PathBuf;

use redis::{ErrorKind, RedisError, RedisResult};

/// What every form of URL looks like, for error messages.
const EXPECTED: &str = "redis://HOST:PORT/DB (one server), \
     redis+cluster://[USER:PASSWORD@]HOST:PORT,HOST:PORT (Redis Cluster seed nodes) or \
     redis+sentinel://[USER:PASSWORD@]HOST:PORT,HOST:PORT/MASTER[/DB] (Sentinels and the name \
     of their primary); rediss... for TLS, with ?ca=PATH or ?insecure_skip_verify=true";

/// The query parameters that hold a secret, masked by [`redact`].
const SECRET_PARAMS: &[&str] = &["sentinel_password", "password", "pass"];

/// A password from a URL: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The password itself, for the server's `AUTH`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Who a connection authenticates as (`AUTH [USER] PASSWORD`); none: no
/// `AUTH`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    /// The ACL user; none: `default`.
    pub user: Option<String>,
    /// The password.
    pub password: Option<Secret>,
}

/// The TLS settings of a `rediss...` URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// `?ca=PATH`: a PEM file of the certificates to trust, instead of
    /// Mozilla's roots (a private CA, a self-signed server).
    pub ca: Option<PathBuf>,
    /// `?insecure_skip_verify=true`: no certificate is checked (anyone on
    /// the path can read and change the traffic; for tests only).
    pub insecure: bool,
}

/// A URL, which `Debug` shows [`redact`]ed.
#[derive(Clone, PartialEq, Eq)]
pub struct Url(pub String);

impl std::fmt::Debug for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Url({:?})", redact(&self.0))
    }
}

/// Where a URL says Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server.
    Single {
        /// The URL as redis-rs reads it (credentials, `/DB`, `#insecure`
        /// and `?protocol=` included).
        url: Url,
        /// Stoker's own TLS parameters of a `rediss://` URL (none for a
        /// plain one).
        tls: Option<Tls>,
    },
    /// Redis Cluster, reached through these seed nodes.
    Cluster {
        /// `(host, port)` of each seed node.
        seeds: Vec<(String, u16)>,
        /// For every node.
        auth: Auth,
        /// TLS to every node, or none.
        tls: Option<Tls>,
    },
    /// The primary that the Sentinels call `master`.
    Sentinel {
        /// `(host, port)` of each Sentinel.
        sentinels: Vec<(String, u16)>,
        /// The primary's name in the Sentinels' configuration.
        master: String,
        /// The database on the primary.
        db: i64,
        /// For the primary.
        auth: Auth,
        /// For the Sentinels (`sentinel_username`, `sentinel_password`).
        sentinel_auth: Auth,
        /// TLS to the Sentinels and to the primary, or none.
        tls: Option<Tls>,
    },
}

/// `url` with its password, and any query parameter that holds a secret,
/// replaced by `***`: the form every message and log shows.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL; it may still hold a password.
        return match url.rsplit_once('@') {
            Some((_, after)) => format!("***@{after}"),
            None => url.to_owned(),
        };
    };
    let (main, query) = match rest.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (rest, None),
    };
    let mut out = format!("{scheme}://");
    match main.rsplit_once('@') {
        Some((userinfo, after)) => {
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***@")),
                None => out.push_str(&format!("{userinfo}@")),
            }
            out.push_str(after);
        }
        None => out.push_str(main),
    }
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if SECRET_PARAMS.contains(&key) => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// `s` percent-decoded (`%40` is `@`; a `+` stays a `+`), as UTF-8.
fn decode(s: &str, what: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|d| d.into_owned())
        .map_err(|_| format!("the {what} is not UTF-8 once percent-decoded"))
}

/// The query parameters of a URL, each once, percent-decoded.
fn params(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key, "name of a query parameter")?;
        if out.iter().any(|(k, _)| *k == key) {
            return Err(format!("query parameter `{key}` is given twice"));
        }
        let value = decode(value, &format!("value of `{key}`"))?;
        out.push((key, value));
    }
    Ok(out)
}

/// Takes Stoker's TLS parameters out of `params`: `Some` for a TLS scheme,
/// an error when a TLS parameter comes with a plain one.
fn tls_params(
    params: &mut Vec<(String, String)>,
    tls: bool,
    scheme: &str,
) -> Result<Option<Tls>, String> {
    let mut out = Tls::default();
    let mut given = None;
    let mut rest = Vec::new();
    for (key, value) in params.drain(..) {
        match key.as_str() {
            "ca" => {
                if value.is_empty() {
                    return Err("`ca=` names no file".into());
                }
                out.ca = Some(PathBuf::from(value));
                given = Some("ca");
            }
            "insecure_skip_verify" => {
                out.insecure = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(format!(
                            "`insecure_skip_verify` is `true` or `false`, not `{value}`"
                        ));
                    }
                };
                given = Some("insecure_skip_verify");
            }
            _ => rest.push((key, value)),
        }
    }
    *params = rest;
    if !tls {
        if let Some(key) = given {
            return Err(format!(
                "`{key}` is a TLS setting, and `{scheme}://` is plain TCP; write `{}://`",
                scheme
                    .replacen("redis", "rediss", 1)
                    .replacen("valkey", "valkeys", 1)
            ));
        }
        return Ok(None);
    }
    Ok(Some(out))
}

/// `USER:PASSWORD` (each percent-decoded; `:PASSWORD` for the default user).
fn userinfo(userinfo: &str) -> Result<Auth, String> {
    let Some((user, password)) = userinfo.split_once(':') else {
        return Err(
            "credentials without a password (`USER@`): write `USER:PASSWORD@`, or \
             `:PASSWORD@` for the default user"
                .into(),
        );
    };
    if password.is_empty() {
        return Err("an empty password in the credentials".into());
    }
    let user = decode(user, "user")?;
    Ok(Auth {
        user: (!user.is_empty()).then_some(user),
        password: Some(Secret(decode(password, "password")?)),
    })
}

impl Target {
    /// Reads a Redis URL. An error names what was wrong and the forms
    /// expected, with the URL [`redact`]ed.
    pub fn parse(url: &str) -> RedisResult<Target> {
        let bad = |why: String| {
            RedisError::from((
                ErrorKind::InvalidClientConfig,
                "bad Redis URL",
                format!("`{}`: {why}; expected {EXPECTED}", redact(url)),
            ))
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad("no scheme".into()));
        };
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        // A fragment (`#insecure`, which redis-rs reads in the single form)
        // ends the query.
        let (query, fragment) = query.split_once('#').unwrap_or((query, ""));
        let mut given = params(query).map_err(bad)?;
        let tls = match scheme {
            "redis+cluster" | "redis+sentinel" => false,
            "rediss+cluster" | "rediss+sentinel" => true,
            "redis" | "rediss" | "valkey" | "valkeys" => {
                let authority = rest.split(['/', '?']).next().unwrap_or("");
                // After the credentials, if any (a password may hold a comma).
                let hosts = authority.rsplit('@').next().unwrap_or("");
                if hosts.contains(',') {
                    return Err(bad(format!(
                        "several hosts in a `{scheme}://` URL; for Redis Cluster write \
                         redis+cluster://, for Sentinel redis+sentinel://.../MASTER"
                    )));
                }
                let secure = matches!(scheme, "rediss" | "valkeys");
                let tls = tls_params(&mut given, secure, scheme).map_err(bad)?;
                if let Some((key, _)) = given.iter().find(|(k, _)| k.starts_with("sentinel_")) {
                    return Err(bad(format!("`{key}` is for redis+sentinel:// URLs")));
                }
                // redis-rs reads the rest (and ignores what it does not know).
                redis::Client::open(url).map_err(|e| bad(e.to_string()))?;
                return Ok(Target::Single {
                    url: Url(url.to_owned()),
                    tls,
                });
            }
            "unix" | "redis+unix" | "valkey+unix" => {
                redis::Client::open(url).map_err(|e| bad(e.to_string()))?;
                return Ok(Target::Single {
                    url: Url(url.to_owned()),
                    tls: None,
                });
            }
            other => return Err(bad(format!("unknown scheme `{other}`"))),
        };
        let tls = tls_params(&mut given, tls, scheme).map_err(bad)?;
        let (auth, hostpath) = match main.rsplit_once('@') {
            Some((info, after)) => (userinfo(info).map_err(bad)?, after),
            None => (Auth::default(), main),
        };
        if hostpath.contains('#') || !fragment.is_empty() {
            return Err(bad(
                "a `#` fragment; for TLS without checks write ?insecure_skip_verify=true, \
                 and percent-encode a `#` in a password as %23"
                    .into(),
            ));
        }
        let (hosts, path) = hostpath.split_once('/').unwrap_or((hostpath, ""));
        let cluster = scheme.ends_with("+cluster");
        let mut sentinel_auth = Auth::default();
        for (key, value) in given {
            match key.as_str() {
                "sentinel_username" if !cluster => sentinel_auth.user = Some(value),
                "sentinel_password" if !cluster => sentinel_auth.password = Some(Secret(value)),
                _ => {
                    let known = if cluster {
                        "ca, insecure_skip_verify"
                    } else {
                        "ca, insecure_skip_verify, sentinel_username, sentinel_password"
                    };
                    return Err(bad(format!(
                        "unknown query parameter `{key}` (known here: {known})"
                    )));
                }
            }
        }
        if sentinel_auth.user.is_some() && sentinel_auth.password.is_none() {
            return Err(bad("`sentinel_username` without `sentinel_password`".into()));
        }
        if cluster {
            let path = path.trim_end_matches('/');
            if !path.is_empty() {
                return Err(bad(format!(
                    "Redis Cluster has database 0 only, so the URL takes no `/{path}`"
                )));
            }
            let seeds = host_list(hosts, 6379).map_err(bad)?;
            return Ok(Target::Cluster { seeds, auth, tls });
        }
        let sentinels = host_list(hosts, 26379).map_err(bad)?;
        let mut parts = path.trim_end_matches('/').split('/');
        let master = parts.next().unwrap_or("");
        if master.is_empty() {
            return Err(bad(
                "no primary's name after the Sentinels (`/MASTER`, as in the Sentinels' \
                 `sentinel monitor MASTER ...`)"
                    .into(),
            ));
        }
        let db = match parts.next() {
            None => 0,
            Some(db) => db
                .parse::<i64>()
                .ok()
                .filter(|db| *db >= 0)
                .ok_or_else(|| bad(format!("database `{db}` is not a number")))?,
        };
        if let Some(extra) = parts.next() {
            return Err(bad(format!("`/{extra}` after the database")));
        }
        Ok(Target::Sentinel {
            sentinels,
            master: master.to_owned(),
            db,
            auth,
            sentinel_auth,
            tls,
        })
    }
}

/// `HOST[:PORT],HOST[:PORT],...` (a host may be an `[IPv6]` literal).
fn host_list(hosts: &str, default_port: u16) -> Result<Vec<(String, u16)>, String> {
    let mut out = Vec::new();
    for host in hosts.split(',') {
        let (name, port) = match host.strip_prefix('[') {
            Some(v6) => {
                let (name, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("`{host}` opens `[` without `]`"))?;
                (name, after.strip_prefix(':'))
            }
            None => match host.rsplit_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (host, None),
            },
        };
        if name.is_empty() {
            return Err(format!("an empty host in `{hosts}`"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse()
                .map_err(|_| format!("port `{p}` of `{host}` is not a number"))?,
        };
        out.push((name.to_owned(), port));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

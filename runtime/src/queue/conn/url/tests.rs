//! The URL parser's unit tests.

use super::*;

fn hosts(list: &[(&str, u16)]) -> Vec<(String, u16)> {
    list.iter().map(|(h, p)| (h.to_string(), *p)).collect()
}

fn single(url: &str) -> Target {
    Target::Single {
        url: Url(url.into()),
        tls: None,
    }
}

fn auth(user: Option<&str>, password: &str) -> Auth {
    Auth {
        user: user.map(str::to_owned),
        password: Some(Secret(password.into())),
    }
}

#[test]
fn each_form_of_url_reads() {
    assert_eq!(
        Target::parse("redis://127.0.0.1:6379/3").unwrap(),
        single("redis://127.0.0.1:6379/3")
    );
    assert_eq!(
        Target::parse("redis://u:p,w@h:1/2").unwrap(),
        single("redis://u:p,w@h:1/2")
    );
    assert_eq!(
        Target::parse("redis+cluster://a:7000,b:7001,[::1]:7002,c").unwrap(),
        Target::Cluster {
            seeds: hosts(&[("a", 7000), ("b", 7001), ("::1", 7002), ("c", 6379)]),
            auth: Auth::default(),
            tls: None,
        }
    );
    assert_eq!(
        Target::parse("redis+sentinel://a:26380,b/mymaster").unwrap(),
        Target::Sentinel {
            sentinels: hosts(&[("a", 26380), ("b", 26379)]),
            master: "mymaster".into(),
            db: 0,
            auth: Auth::default(),
            sentinel_auth: Auth::default(),
            tls: None,
        }
    );
    assert_eq!(
        Target::parse("redis+sentinel://a:26380/mymaster/4/").unwrap(),
        Target::Sentinel {
            sentinels: hosts(&[("a", 26380)]),
            master: "mymaster".into(),
            db: 4,
            auth: Auth::default(),
            sentinel_auth: Auth::default(),
            tls: None,
        }
    );
}

#[test]
fn credentials_and_tls_read_in_every_form() {
    // Percent-decoded; a raw `@`, `,` or `/` in a password works too (the
    // credentials end at the last `@` before the query); `+` stays `+`.
    assert_eq!(
        Target::parse("redis+cluster://app:p%40ss%3Aw+rd@a:7000,b:7001").unwrap(),
        Target::Cluster {
            seeds: hosts(&[("a", 7000), ("b", 7001)]),
            auth: auth(Some("app"), "p@ss:w+rd"),
            tls: None,
        }
    );
    assert_eq!(
        Target::parse("redis+cluster://:s3,cr@t/x@a:7000").unwrap(),
        Target::Cluster {
            seeds: hosts(&[("a", 7000)]),
            auth: auth(None, "s3,cr@t/x"),
            tls: None,
        }
    );
    assert_eq!(
        Target::parse("rediss+cluster://a:7000?ca=/etc/redis/ca.pem").unwrap(),
        Target::Cluster {
            seeds: hosts(&[("a", 7000)]),
            auth: Auth::default(),
            tls: Some(Tls {
                ca: Some("/etc/redis/ca.pem".into()),
                insecure: false
            }),
        }
    );
    assert_eq!(
        Target::parse(
            "rediss+sentinel://app:pw@a,b:26380/mymaster/2?sentinel_username=watch&\
             sentinel_password=s%26p&insecure_skip_verify=true"
        )
        .unwrap(),
        Target::Sentinel {
            sentinels: hosts(&[("a", 26379), ("b", 26380)]),
            master: "mymaster".into(),
            db: 2,
            auth: auth(Some("app"), "pw"),
            sentinel_auth: auth(Some("watch"), "s&p"),
            tls: Some(Tls {
                ca: None,
                insecure: true
            }),
        }
    );
    // A Sentinel password alone (the Sentinels' `requirepass`).
    let Target::Sentinel { sentinel_auth, .. } =
        Target::parse("redis+sentinel://a/m?sentinel_password=x").unwrap()
    else {
        panic!("not Sentinel")
    };
    assert_eq!(sentinel_auth, auth(None, "x"));
    // One server: redis-rs reads the URL; Stoker's TLS parameters too.
    assert_eq!(
        Target::parse("rediss://u:p@h:6380/1?ca=/ca.pem").unwrap(),
        Target::Single {
            url: Url("rediss://u:p@h:6380/1?ca=/ca.pem".into()),
            tls: Some(Tls {
                ca: Some("/ca.pem".into()),
                insecure: false
            }),
        }
    );
    assert_eq!(
        Target::parse("rediss://h:6380/0?ca=/ca.pem#insecure").unwrap(),
        Target::Single {
            url: Url("rediss://h:6380/0?ca=/ca.pem#insecure".into()),
            tls: Some(Tls {
                ca: Some("/ca.pem".into()),
                insecure: false
            }),
        }
    );
    assert_eq!(
        Target::parse("rediss://h:6380").unwrap(),
        Target::Single {
            url: Url("rediss://h:6380".into()),
            tls: Some(Tls::default()),
        }
    );
}

#[test]
fn a_bad_url_says_what_was_expected() {
    for (url, says) in [
        ("redis+cluster://a:7000,b:7001/2", "database 0 only"),
        ("redis+sentinel://a:26379", "no primary's name"),
        (
            "redis+sentinel://a:26379/m/x",
            "database `x` is not a number",
        ),
        ("redis+sentinel://a:26379/m/1/2", "after the database"),
        (
            "redis+cluster://a:port",
            "port `port` of `a:port` is not a number",
        ),
        ("redis+cluster://a:1,,b:2", "an empty host"),
        ("redis://a:1,b:2/0", "several hosts"),
        ("http://a:1", "unknown scheme `http`"),
        ("127.0.0.1:6379", "no scheme"),
        ("redis+cluster://app@a:1", "without a password"),
        ("redis+cluster://app:@a:1", "empty password"),
        ("redis+cluster://a:1?ca=/x.pem", "write `rediss+cluster://`"),
        ("redis://a:1?insecure_skip_verify=true", "write `rediss://`"),
        (
            "rediss+cluster://a:1?insecure_skip_verify=yes",
            "`true` or `false`",
        ),
        ("rediss+cluster://a:1?ca=", "names no file"),
        (
            "redis+cluster://a:1?sentinel_password=x",
            "unknown query parameter `sentinel_password`",
        ),
        ("redis+sentinel://a/m?db=2", "unknown query parameter `db`"),
        ("redis+sentinel://a/m?ca=1&ca=2", "given twice"),
        (
            "redis+sentinel://a/m?sentinel_username=w",
            "without `sentinel_password`",
        ),
        ("rediss+cluster://a:1#insecure", "insecure_skip_verify=true"),
        (
            "rediss+cluster://a:1?ca=/x#insecure",
            "insecure_skip_verify=true",
        ),
        ("redis://a:1/0?sentinel_password=x", "redis+sentinel://"),
    ] {
        let e = Target::parse(url).unwrap_err().to_string();
        assert!(e.contains(says), "{url}: {e}");
        assert!(
            e.contains("redis+sentinel://[USER:PASSWORD@]HOST:PORT"),
            "{url}: {e}"
        );
    }
}

#[test]
fn a_password_is_never_shown() {
    for url in [
        "redis+cluster://app:hunter2@a:port",
        "redis+cluster://:hunter2@a:1/3",
        "redis+cluster://app:hunter2@a:1?nope=1",
        "redis+sentinel://app:hunter2@a/m/x",
        "redis+sentinel://a/m?sentinel_password=hunter2&bad=1",
        "rediss+sentinel://app:hun%74er2@a/m?sentinel_password=hunter2&ca=",
        "redis://app:hunter2@a:1,b:2",
        "redis+cluster://app:hun@ter2@a:x",
    ] {
        let e = Target::parse(url).unwrap_err().to_string();
        assert!(!e.contains("hunter2") && !e.contains("ter2"), "{url}: {e}");
        assert!(e.contains("***"), "{url}: {e}");
    }
    let parsed =
        Target::parse("rediss+sentinel://u:hunter2@a/m?sentinel_password=hunter2").unwrap();
    assert!(!format!("{parsed:?}").contains("hunter2"), "{parsed:?}");
    let parsed = Target::parse("redis://u:hunter2@a:1/0").unwrap();
    assert!(!format!("{parsed:?}").contains("hunter2"), "{parsed:?}");
    assert_eq!(
        redact("redis+sentinel://u:p@a/m?ca=/x&sentinel_password=q"),
        "redis+sentinel://u:***@a/m?ca=/x&sentinel_password=***"
    );
    assert_eq!(redact("redis://a:1/0"), "redis://a:1/0");
    assert_eq!(redact("redis://tok@a:1"), "redis://tok@a:1");
    assert_eq!(redact("u:p@a:1"), "***@a:1");
}

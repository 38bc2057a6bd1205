//! No SSRF: shorthand, hex, userinfo and other authority tricks, and names
//! resolving to internal or embedded IPv4 addresses, are refused before any
//! connection, with the reason logged; the `Host` header is the checked
//! origin's.

use super::{Server, classes, error, hostile, log, raw, run};
use crate::support::{TestEnv, state};

#[test]
fn ssrf_tricks_are_refused_before_any_connection() {
    let server = Server::start();
    let env = TestEnv::new();
    let port = server.addr.port();
    // Shorthand and hex spellings of 127.0.0.1 are names to the allowlist,
    // and resolve to loopback.
    let allow = format!(
        "\"http://{}\", \"http://127.1:{port}\", \"http://0x7f000001:{port}\"",
        server.addr
    );
    env.deploy(&classes(&allow, ""));
    let mut worker = env.spawn_worker(&[]);
    for host in ["127.1", "0x7f000001"] {
        let (_, r) = run(
            &env,
            serde_json::json!({"url": format!("http://{host}:{port}/ok")}),
        );
        assert_eq!(state(&r), "dead", "{host}: {r:#}");
        assert!(
            error(&r).contains("destination prohibited"),
            "{host}: {r:#}"
        );
        assert!(
            r["log"].as_str().unwrap_or_default().contains("loopback"),
            "{r:#}"
        );
    }
    // Not named by the allowlist: the IPv4-mapped spelling, the metadata
    // address, another scheme, another port.
    for url in [
        format!("http://[::ffff:127.0.0.1]:{port}/ok"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("https://127.0.0.1:{port}/ok"),
        format!("http://127.0.0.1:{}/ok", port.wrapping_add(1)),
    ] {
        let (_, r) = run(&env, serde_json::json!({ "url": url }));
        assert_eq!(state(&r), "dead", "{url}: {r:#}");
        assert!(error(&r).contains("request denied"), "{url}: {r:#}");
    }
    assert!(server.hits("/ok").is_empty(), "nothing reached the server");
    worker.assert_alive();
}

#[test]
fn userinfo_is_refused_and_the_host_header_is_the_checked_origin() {
    let allowed = Server::start();
    let trap = Server::start();
    let env = TestEnv::new();
    env.deploy(&hostile(&format!("\"http://{}\"", allowed.addr), ""));
    let mut worker = env.spawn_worker(&[]);

    // The example: the allowlist sees the host after `@`.
    let tricky = format!("{}@{}", trap.addr, allowed.addr);
    let (_, r) = run(
        &env,
        serde_json::json!({ "url": format!("http://{tricky}/host") }),
    );
    assert_eq!(state(&r), "dead", "{r:#}");
    assert!(error(&r).contains("HTTP-request-URI-invalid"), "{r:#}");
    assert!(log(&r).contains("userinfo"), "{r:#}");
    assert!(
        !log(&r).contains(&trap.addr.to_string()),
        "userinfo masked: {r:#}"
    );
    for authority in [tricky.clone(), format!("user@{}", allowed.addr)] {
        let seen = raw(
            &env,
            serde_json::json!({ "authority": authority, "path": "/host" }),
        );
        assert_eq!(seen["stage"], "response", "{authority}: {seen:#}");
        assert_eq!(
            seen["code"], "ErrorCode::HttpRequestUriInvalid",
            "{authority}: {seen:#}"
        );
    }
    assert!(allowed.hits("/host").is_empty() && trap.hits("/host").is_empty());

    // The Host header is the checked origin's, whatever the guest tried.
    let (_, r) = run(&env, serde_json::json!({ "url": allowed.url("/host") }));
    assert_eq!(r["result"]["body"], allowed.addr.to_string(), "{r:#}");
    let seen = raw(
        &env,
        serde_json::json!({
            "authority": format!("{}.:{}", allowed.addr.ip(), allowed.addr.port()),
            "path": "/host",
            "headers": [["host", "169.254.169.254"], ["Host", "evil.example"]],
        }),
    );
    assert_eq!(seen["stage"], "done", "{seen:#}");
    assert_eq!(seen["body"], allowed.addr.to_string(), "{seen:#}");
    let hits = allowed.hits("/host");
    assert_eq!(hits.len(), 2);
    assert!(
        hits.iter()
            .all(|h| h.headers["host"] == allowed.addr.to_string())
    );
    worker.assert_alive();
}

#[test]
fn authority_confusions_are_refused_with_the_reason_logged() {
    let server = Server::start();
    let env = TestEnv::new();
    let port = server.addr.port();
    env.deploy(&hostile(&format!("\"http://{}\"", server.addr), ""));
    let mut worker = env.spawn_worker(&[]);
    for (scheme, authority) in [
        ("http", format!("127.0.0.1:0{port}")),
        ("http", format!("127.0.0.%31:{port}")),
        ("http", format!("127.0.0.1:{}", u32::from(port) + 65536)),
        ("http", format!("[::ffff:127.0.0.1]:{port}")),
        ("http", format!("[fe80::1%25lo]:{port}")),
        ("http", format!("127.0.0.1:{port}:{port}")),
        ("http", format!(":{port}")),
        ("http", "127.0.0.1:".to_owned()),
        ("ftp", server.addr.to_string()),
        ("HTTPS", server.addr.to_string()),
    ] {
        let seen = raw(
            &env,
            serde_json::json!({"scheme": scheme, "authority": authority, "path": "/ok"}),
        );
        // Refused by wasmtime's own parser (`authority`, `handle`) or by the
        // policy point (an error code for the response).
        let code = seen["code"].as_str().unwrap_or_default();
        assert!(
            seen["stage"] == "authority"
                || code.contains("HttpRequestUriInvalid")
                || code.contains("HttpRequestDenied")
                || code.contains("HttpProtocolError"),
            "{scheme}://{authority}: {seen:#}"
        );
    }
    assert!(server.hits("/ok").is_empty(), "nothing reached the server");
    // Upper case and a trailing dot name the same origin: allowed.
    let seen = raw(
        &env,
        serde_json::json!({"scheme": "HTTP", "authority": format!("127.0.0.1.:{port}"), "path": "/ok"}),
    );
    assert_eq!(seen["status"], 200, "{seen:#}");
    worker.assert_alive();
}

#[test]
fn names_resolving_to_embedded_ipv4_are_refused() {
    let server = Server::start();
    let env = TestEnv::new();
    let port = server.addr.port();
    let names = [
        ("translated.test", "::ffff:0:7f00:1", "IPv4-translated"),
        ("mapped.test", "::ffff:127.0.0.1", "IPv4-mapped"),
        ("compatible.test", "::127.0.0.1", "IPv4-compatible"),
        ("nat64.test", "64:ff9b::7f00:1", "NAT64 well-known prefix"),
        (
            "nat64-local.test",
            "64:ff9b:1::7f00:1",
            "NAT64 local-use prefix",
        ),
        (
            "metadata64.test",
            "64:ff9b::a9fe:a9fe",
            "reaching 169.254.169.254",
        ),
        ("sixtofour.test", "2002:7f00:1::1", "6to4"),
        ("teredo.test", "2001:0:7f00:1:0:0:80ff:fffe", "Teredo"),
        ("metadata.test", "fd00:ec2::254", "unique-local"),
    ];
    let allow = names
        .iter()
        .map(|(n, _, _)| format!("\"http://{n}:{port}\""))
        .collect::<Vec<_>>()
        .join(", ");
    env.deploy(&classes(&allow, ""));
    let mut args = Vec::new();
    for (name, ip, _) in &names {
        args.push("--resolve".to_owned());
        args.push(format!("{name}:{ip}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut worker = env.spawn_worker(&args);
    for (name, _, why) in names {
        let (_, r) = run(
            &env,
            serde_json::json!({ "url": format!("http://{name}:{port}/ok") }),
        );
        assert_eq!(state(&r), "dead", "{name}: {r:#}");
        assert!(
            error(&r).contains("destination prohibited"),
            "{name}: {r:#}"
        );
        assert!(log(&r).contains(why), "{name}: {r:#}");
    }
    assert!(server.hits("/ok").is_empty(), "nothing reached the server");
    worker.assert_alive();
}

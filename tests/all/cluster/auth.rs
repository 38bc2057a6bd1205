//! Credentials and TLS, as a managed Redis asks for them: a TLS server with a
//! password (`rediss://`), a TLS Cluster whose nodes admit an ACL user only
//! (`rediss+cluster://USER:PASSWORD@...`), and a TLS Sentinel set where the
//! Sentinels and the primary have passwords of their own
//! (`rediss+sentinel://:PASSWORD@.../MASTER/DB?sentinel_password=...`). Every
//! server speaks TLS only, with certificates made in the test
//! ([`crate::cluster_env::certs`]); each test starts its own servers on free
//! ports. A wrong or missing password is refused, and never printed.

use std::fs;
use std::time::Duration;

use redis::AsyncCommands;
use stoker::queue::Link;

use super::{deploy_hello, hello_done, runtime, scratch, worker};
use crate::cluster_env::{
    MASTER, certs, create_cluster, free_ports, fresh_dir, node_args, server, spawn, stoker,
    stoker_ok, tls_args,
};
use crate::support::{poll_until, wait_until};

/// How long servers may take to come up.
const START: Duration = Duration::from_secs(60);

/// A password with the characters a URL must percent-encode, and its
/// encoded form.
const PASSWORD: &str = "p@ss/w:rd%1";
const PASSWORD_IN_URL: &str = "p%40ss%2Fw%3Ard%251";

/// Runs `cmd` on the TLS server at `port`, as `creds` (`USER:PASSWORD`,
/// URL-encoded, or `:PASSWORD`), trusting the test CA.
fn tls_query<T: redis::FromRedisValue>(
    port: u16,
    creds: &str,
    cmd: &redis::Cmd,
) -> redis::RedisResult<T> {
    tls_query_db(port, creds, 0, cmd)
}

/// [`tls_query`] in database `db`.
fn tls_query_db<T: redis::FromRedisValue>(
    port: u16,
    creds: &str,
    db: i64,
    cmd: &redis::Cmd,
) -> redis::RedisResult<T> {
    let url = format!("rediss://{creds}@127.0.0.1:{port}/{db}");
    let ca = fs::read(&certs().ca).expect("the CA file");
    let client = redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca),
        },
    )?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
    cmd.query(&mut conn)
}

/// Waits until the TLS servers on `ports` answer `PING` as `creds`.
fn wait_tls(ports: &[u16], creds: &str, dir: &std::path::Path) {
    let up = poll_until(START, || {
        ports
            .iter()
            .all(|p| tls_query::<String>(*p, creds, &redis::cmd("PING")).is_ok())
    });
    assert!(
        up,
        "TLS servers on {ports:?} did not start; see {}",
        dir.display()
    );
}

/// `?ca=` with the test CA.
fn ca_param() -> String {
    format!("ca={}", certs().ca.display())
}

/// `stoker status` at `url` fails, saying `says`, and does not print
/// `secret`.
fn refused_without_echo(url: &str, says: &str, secret: &str) {
    let out = stoker(url, &["status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(says), "expected `{says}` in: {err}");
    assert!(!err.contains(secret), "the password is printed: {err}");
    assert!(err.contains("***"), "the URL is not shown redacted: {err}");
}

#[test]
fn one_tls_server_takes_rediss_with_its_ca_and_a_password() {
    let dir = fresh_dir("redis-tls-one");
    let port = free_ports(1)[0];
    let mut args = tls_args(port);
    args.extend(["--requirepass".into(), PASSWORD.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    server(&dir, port, &args);
    let creds = format!(":{PASSWORD_IN_URL}");
    wait_tls(&[port], &creds, &dir);

    let url = format!("rediss://{creds}@127.0.0.1:{port}/2?{}", ca_param());
    runtime().block_on(async {
        let mut conn = stoker::queue::connect(&url).await.unwrap();
        assert!(
            matches!(conn.link(), Link::Single(_)),
            "not a single server"
        );
        let () = conn.set("over-tls", "1").await.unwrap();
        // Without the CA, the server's certificate is not trusted (Mozilla's
        // roots do not know the test CA); skipping verification connects.
        let untrusted = format!("rediss://{creds}@127.0.0.1:{port}/2");
        let e = stoker::queue::connect(&untrusted)
            .await
            .err()
            .expect("a certificate no root vouches for must be refused");
        eprintln!("without ?ca=: {e}");
        let insecure = format!("{untrusted}?insecure_skip_verify=true");
        let mut conn = stoker::queue::connect(&insecure).await.unwrap();
        let v: Option<String> = conn.get("over-tls").await.unwrap();
        assert_eq!(v.as_deref(), Some("1"));
    });
    let v: Option<String> =
        tls_query_db(port, &creds, 2, redis::cmd("GET").arg("over-tls")).unwrap();
    assert_eq!(v.as_deref(), Some("1"), "not written to database 2");
    // The CLI works over it, and a wrong password is refused unprinted.
    stoker_ok(&url, &["status"]);
    refused_without_echo(
        &format!("rediss://:wrong-secret@127.0.0.1:{port}/2?{}", ca_param()),
        "cannot connect to Redis at rediss://:***@127.0.0.1",
        "wrong-secret",
    );
    let _ = tls_query::<()>(port, &creds, redis::cmd("SHUTDOWN").arg("NOSAVE"));
}

#[test]
fn a_tls_cluster_with_an_acl_user_runs_jobs() {
    let dir = fresh_dir("redis-tls-cluster");
    let ports = free_ports(6);
    let (data, bus) = ports.split_at(3);
    for (port, bus) in data.iter().zip(bus) {
        let mut args = tls_args(*port);
        args.extend(node_args(*bus));
        args.extend(
            [
                "--tls-cluster",
                "yes",
                // The default user is off: only `app` gets in.
                "--user",
                "default",
                "off",
                "--user",
                "app",
                "on",
                &format!(">{PASSWORD}"),
                "~*",
                "&*",
                "+@all",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        server(&dir.join(port.to_string()), *port, &args);
    }
    let creds = format!("app:{PASSWORD_IN_URL}");
    wait_tls(data, &creds, &dir);
    let ca = certs().ca.display().to_string();
    let cli: [&str; 8] = [
        "--tls",
        "--cacert",
        &ca,
        "--user",
        "app",
        "--pass",
        PASSWORD,
        "--no-auth-warning",
    ];
    create_cluster(data, 0, &cli);
    wait_until(START, "cluster_state:ok on every node", || {
        data.iter().all(|p| {
            tls_query::<String>(*p, &creds, redis::cmd("CLUSTER").arg("INFO")).is_ok_and(|i| {
                i.contains("cluster_state:ok") && i.contains("cluster_known_nodes:3")
            })
        })
    });

    let url = format!(
        "rediss+cluster://{creds}@127.0.0.1:{},127.0.0.1:{}?{}",
        data[0],
        data[1],
        ca_param()
    );
    runtime().block_on(async {
        let mut conn = stoker::queue::connect(&url).await.unwrap();
        assert!(
            matches!(conn.link(), Link::Cluster(_)),
            "not a cluster connection"
        );
        for i in 0..30 {
            let () = conn.set(format!("k{i}"), i).await.unwrap();
        }
    });
    // The keys reached every primary, the third one (no seed) found from
    // the others, over TLS as `app`.
    for p in data {
        let n: u64 = tls_query(*p, &creds, &redis::cmd("DBSIZE")).unwrap();
        assert!(n > 0, "no key on {p}");
    }

    // The worker subscribes to its queue's wake-ups, as `app` over TLS, and
    // a job runs to done, started at once by one.
    let work = scratch("tls-cluster-jobs");
    deploy_hello(&url, &work, &["tls"]);
    let mut w = worker(&url, &work, &["tls"]);
    let channel = stoker::queue::keys::QueueKeys::new("tls").wake();
    wait_until(START, "the worker's sharded subscription", || {
        let subscribers = |p: &u16| -> i64 {
            tls_query::<(String, i64)>(
                *p,
                &creds,
                redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(&channel),
            )
            .map_or(0, |(_, n)| n)
        };
        data.iter().map(subscribers).sum::<i64>() > 0
    });
    hello_done(&url, "tls", "Ada", &mut w);
    w.assert_alive();
    drop(w);

    // The default user is off, a wrong password is refused; neither printed.
    let seeds = format!("127.0.0.1:{},127.0.0.1:{}", data[0], data[1]);
    refused_without_echo(
        &format!("rediss+cluster://app:wrong-secret@{seeds}?{}", ca_param()),
        "cannot connect to Redis at rediss+cluster://app:***@127.0.0.1",
        "wrong-secret",
    );
    let out = stoker(
        &format!("rediss+cluster://{seeds}?{}", ca_param()),
        &["status"],
    );
    assert_eq!(out.status.code(), Some(1));
    for p in data {
        let _ = tls_query::<()>(*p, &creds, redis::cmd("SHUTDOWN").arg("NOSAVE"));
    }
}

#[test]
fn a_tls_sentinel_with_passwords_of_its_own_names_its_primary() {
    let dir = fresh_dir("redis-tls-sentinel");
    let ports = free_ports(2);
    let (data, sentinel) = (ports[0], ports[1]);
    let mut args = tls_args(data);
    args.extend(["--requirepass".into(), PASSWORD.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    server(&dir.join(data.to_string()), data, &args);
    let creds = format!(":{PASSWORD_IN_URL}");
    wait_tls(&[data], &creds, &dir);

    let c = certs();
    let sdir = dir.join(sentinel.to_string());
    fs::create_dir_all(&sdir).expect("a sentinel dir");
    let conf = sdir.join("sentinel.conf");
    fs::write(
        &conf,
        format!(
            "port 0\ntls-port {sentinel}\nbind 127.0.0.1\ndir {}\nlogfile {}\n\
             tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
             tls-auth-clients no\ntls-replication yes\n\
             requirepass sentinel-secret\n\
             sentinel monitor {MASTER} 127.0.0.1 {data} 1\n\
             sentinel auth-pass {MASTER} {PASSWORD}\n\
             sentinel down-after-milliseconds {MASTER} 1000\n",
            sdir.display(),
            sdir.join("sentinel.log").display(),
            c.cert.display(),
            c.key.display(),
            c.ca.display(),
        ),
    )
    .expect("writing sentinel.conf");
    spawn((
        "redis-server".into(),
        vec![conf.display().to_string(), "--sentinel".into()],
        sdir.clone(),
    ));
    wait_until(START, "the Sentinel to see its primary up", || {
        tls_query::<Vec<String>>(
            sentinel,
            ":sentinel-secret",
            redis::cmd("SENTINEL").arg("MASTER").arg(MASTER),
        )
        .is_ok_and(|fields| {
            fields
                .iter()
                .position(|f| f == "flags")
                .and_then(|i| fields.get(i + 1))
                .is_some_and(|flags| flags == "master")
        })
    });

    let base = format!("rediss+sentinel://{creds}@127.0.0.1:{sentinel}/{MASTER}");
    let url = format!("{base}/3?{}&sentinel_password=sentinel-secret", ca_param());
    runtime().block_on(async {
        let mut conn = stoker::queue::connect(&url).await.unwrap();
        assert!(
            matches!(conn.link(), Link::Sentinel(_)),
            "not a Sentinel connection"
        );
        let () = conn.set("via-tls-sentinel", "1").await.unwrap();
    });
    let got: Option<String> =
        tls_query_db(data, &creds, 3, redis::cmd("GET").arg("via-tls-sentinel")).unwrap();
    assert_eq!(got.as_deref(), Some("1"), "not written to database 3");

    // The worker subscribes on the primary the Sentinel names, and a job
    // runs to done, started by a wake-up.
    let work = scratch("tls-sentinel-jobs");
    deploy_hello(&url, &work, &["tls"]);
    let mut w = worker(&url, &work, &["tls"]);
    let channel = stoker::queue::keys::QueueKeys::new("tls").wake();
    wait_until(START, "the worker's subscription on the primary", || {
        tls_query::<(String, i64)>(
            data,
            &creds,
            redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel),
        )
        .is_ok_and(|(_, n)| n > 0)
    });
    hello_done(&url, "tls", "Grace", &mut w);
    w.assert_alive();
    drop(w);

    // The Sentinel's password is its own: without it the Sentinel refuses,
    // and a wrong one for the primary is refused by the primary.
    let out = stoker(&format!("{base}?{}", ca_param()), &["status"]);
    assert_eq!(out.status.code(), Some(1), "the Sentinel let us in");
    refused_without_echo(
        &format!("{base}?{}&sentinel_password=wrong-secret", ca_param()),
        "cannot connect to Redis at rediss+sentinel://:***@127.0.0.1",
        "wrong-secret",
    );
    let _ = tls_query::<()>(
        sentinel,
        ":sentinel-secret",
        redis::cmd("SHUTDOWN").arg("NOSAVE"),
    );
    let _ = tls_query::<()>(data, &creds, redis::cmd("SHUTDOWN").arg("NOSAVE"));
}

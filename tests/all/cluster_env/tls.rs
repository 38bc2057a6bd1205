//! TLS for the servers: certificates made once, and a server's arguments.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::servers::fresh_dir;

/// Certificates for TLS servers: a CA, and a certificate it signed for
/// `127.0.0.1` and `localhost` with its key, PEM files made once per test
/// binary with the `openssl` CLI.
pub struct Certs {
    /// The CA's certificate (what a client trusts: `?ca=`).
    pub ca: PathBuf,
    /// The servers' certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// [`Certs`], made on first use.
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = fresh_dir("tls-certs");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("running openssl (install Debian's openssl)");
            assert!(
                out.status.success(),
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509", "-days", "2", "-subj", "/CN=Stoker test CA"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat());
        run(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat());
        fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("writing ext.cnf");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ]);
        Certs {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    })
}

/// The arguments (after [`server`](super::server)'s) that make a
/// `redis-server` speak TLS only, on `port`, with [`certs`], asking no
/// client certificate; on a cluster node, the bus and replication speak TLS
/// too.
pub fn tls_args(port: u16) -> Vec<String> {
    let c = certs();
    let mut args: Vec<String> = ["--port", "0", "--tls-port", &port.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (flag, path) in [
        ("--tls-cert-file", &c.cert),
        ("--tls-key-file", &c.key),
        ("--tls-ca-cert-file", &c.ca),
    ] {
        args.extend([flag.to_string(), path.display().to_string()]);
    }
    args.extend(
        ["--tls-auth-clients", "no", "--tls-replication", "yes"]
            .iter()
            .map(|s| s.to_string()),
    );
    args
}

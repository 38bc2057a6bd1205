//! The servers' processes: started as children of a keeper thread, killed
//! with SIGKILL and started again as they were; and what the harnesses ask
//! a server (one command, whether it answers, its role).

use std::collections::HashMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

use super::START;
use crate::support::{poll_until, target_dir, wait_until};

/// The process id of the server at `port` (to stop and resume it).
pub fn pid_of(port: u16) -> u32 {
    let info: String = query(port, redis::cmd("INFO").arg("server"));
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .expect("process_id in INFO server")
}

/// Runs one command on the server at `port`.
pub fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> T {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    cmd.query(&mut conn)
        .unwrap_or_else(|e| panic!("127.0.0.1:{port}: {e}"))
}

/// Whether the server at `port` answers.
pub(super) fn answers(port: u16) -> bool {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

/// `master` or `slave`, from `ROLE`.
pub(super) fn role(port: u16) -> String {
    let role: Vec<redis::Value> = query(port, &redis::cmd("ROLE"));
    match &role[0] {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        other => panic!("ROLE: {other:?}"),
    }
}

/// Whether the primary at `port` has a replica in sync.
pub(super) fn replica_online(port: u16) -> bool {
    let info: String = query(port, redis::cmd("INFO").arg("replication"));
    info.lines()
        .any(|l| l.starts_with("slave0:") && l.contains("state=online"))
}

/// `count` distinct free loopback ports.
pub fn free_ports(count: usize) -> Vec<u16> {
    // Held open together, so no port is handed out twice.
    let held: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// A fresh directory `target/stoker-tests/NAME-PID`, after removing those of
/// earlier runs whose process is gone.
pub fn fresh_dir(name: &str) -> PathBuf {
    let scratch = target_dir().join("stoker-tests");
    if let Ok(entries) = fs::read_dir(&scratch) {
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let pid = file
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|pid| pid.parse::<libc::pid_t>().ok());
            // SAFETY: kill(2) with signal 0 only checks that the process exists.
            if let Some(pid) = pid
                && unsafe { libc::kill(pid, 0) } != 0
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = scratch.join(format!("{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("creating a server dir");
    dir
}

/// What the keeper thread is asked to start: a program and its arguments, in
/// a working directory.
pub type Launch = (String, Vec<String>, PathBuf);

/// Starts `launch` as a child of the keeper thread, which lives as long as
/// the test binary (a child started with `PR_SET_PDEATHSIG` dies with the
/// thread that forked it).
pub fn spawn(launch: Launch) {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<(Launch, mpsc::Sender<String>)>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Launch, mpsc::Sender<String>)>();
        std::thread::Builder::new()
            .name("redis-keeper".into())
            .spawn(move || {
                let mut children = Vec::new();
                // Runs until the binary exits: the children must not outlive it.
                for ((program, args, dir), reply) in rx {
                    let log = fs::File::create(dir.join("stdout.log")).expect("a log file");
                    let mut cmd = Command::new(&program);
                    cmd.args(&args)
                        .current_dir(&dir)
                        .stdin(Stdio::null())
                        .stdout(log.try_clone().expect("log"))
                        .stderr(log);
                    // SAFETY: only async-signal-safe calls between fork and exec.
                    let parent = unsafe { libc::getpid() };
                    unsafe {
                        use std::os::unix::process::CommandExt;
                        cmd.pre_exec(move || {
                            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                            // The binary may have died before the prctl.
                            if libc::getppid() != parent {
                                libc::_exit(1);
                            }
                            Ok(())
                        });
                    }
                    match cmd.spawn() {
                        Ok(child) => {
                            children.push(child);
                            let _ = reply.send(String::new());
                        }
                        Err(e) => {
                            let _ = reply.send(format!("cannot start {program}: {e}"));
                        }
                    }
                }
            })
            .expect("the keeper thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    let what = launch.0.clone();
    keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((launch, reply_tx))
        .expect("the keeper thread is gone");
    let error = reply_rx.recv().expect("the keeper thread is gone");
    assert!(
        error.is_empty(),
        "{error} (install Debian's redis-server and redis-tools; {what} must be on PATH)"
    );
}

/// Starts a `redis-server` with `args` (after the common ones) in `dir`.
pub fn server(dir: &Path, port: u16, args: &[&str]) {
    fs::create_dir_all(dir).expect("a server dir");
    let mut all: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        &dir.display().to_string(),
        "--logfile",
        &dir.join("redis.log").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(args.iter().map(|s| s.to_string()));
    let launch: Launch = ("redis-server".into(), all, dir.to_owned());
    launches()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(port, launch.clone());
    spawn(launch);
}

/// How each server [`server`] started was started, by port.
fn launches() -> &'static Mutex<HashMap<u16, Launch>> {
    static LAUNCHES: OnceLock<Mutex<HashMap<u16, Launch>>> = OnceLock::new();
    LAUNCHES.get_or_init(Default::default)
}

/// Kills the server at `port` with SIGKILL (nothing of it runs after: no
/// reply, no replication, no goodbye on the cluster bus) and waits until
/// the port is closed.
pub fn kill9(port: u16) {
    let pid = pid_of(port) as libc::pid_t;
    // SAFETY: kill(2) on a server this binary started.
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGKILL) },
        0,
        "kill -9 {pid}"
    );
    wait_until(START, "the killed server's port to close", || {
        !answers(port)
    });
}

/// Starts the server once at `port` (see [`server`]) again, in its directory
/// and with its arguments, `extra` after them (a later option wins), and
/// waits until it answers. Its data is gone (no persistence); a Cluster node
/// keeps its `nodes.conf`.
pub fn restart(port: u16, extra: &[&str]) {
    let (program, mut args, dir) = launches()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&port)
        .cloned()
        .unwrap_or_else(|| panic!("no server was started on {port}"));
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn((program, args, dir.clone()));
    wait_answers(&[port], &dir);
}

/// Waits until the servers on `ports` answer (their logs are under `dir`).
pub(super) fn wait_answers(ports: &[u16], dir: &Path) {
    let up = poll_until(START, || ports.iter().all(|p| answers(*p)));
    assert!(
        up,
        "Redis servers on {ports:?} did not start; see {}",
        dir.display()
    );
}

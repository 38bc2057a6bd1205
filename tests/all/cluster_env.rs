//! Real multi-node Redis for the `cluster` group: a Redis Cluster (3 primaries,
//! 3 replicas) and a Sentinel set (a primary, a replica, 3 Sentinels), each
//! started once per test binary on free loopback ports, in its own directories
//! under `target/stoker-tests/`, and shared by the group's tests one at a time
//! ([`Cluster::take`], [`Sentinels::take`]).
//!
//! Needs `redis-server` and `redis-cli` (Debian's `redis-server` and
//! `redis-tools`), Redis 7 or later. Every server is a child of a thread that
//! lives as long as the test binary and is started with `PR_SET_PDEATHSIG`:
//! when the binary exits, however it exits, the kernel kills them all.

use std::collections::HashMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, mpsc};
use std::time::Duration;

use crate::support::{poll_until, stoker_path, target_dir, wait_until};

/// How long a deployment may take to come up.
const START: Duration = Duration::from_secs(60);

/// The primary's name in the Sentinels' configuration.
pub const MASTER: &str = "stoker";

/// A running Redis Cluster.
pub struct Cluster {
    /// `redis+cluster://` with every node as a seed.
    pub url: String,
    /// The nodes' ports (primaries and replicas, as created).
    pub ports: Vec<u16>,
    lock: Mutex<()>,
}

/// A running Sentinel set.
pub struct Sentinels {
    /// `redis+sentinel://SENTINELS/stoker`.
    pub url: String,
    /// The ports of the two data servers (one primary, one replica).
    pub data: [u16; 2],
    /// The Sentinels' ports.
    pub sentinels: [u16; 3],
    lock: Mutex<()>,
}

impl Cluster {
    /// The cluster, started on first use, held by the caller alone (the
    /// data of the previous holder flushed).
    pub fn take() -> (&'static Cluster, MutexGuard<'static, ()>) {
        static CLUSTER: OnceLock<Cluster> = OnceLock::new();
        let c = CLUSTER.get_or_init(start_cluster);
        let guard = c.lock.lock().unwrap_or_else(|e| e.into_inner());
        for port in c.primaries() {
            let () = query(port, &redis::cmd("FLUSHALL"));
        }
        (c, guard)
    }

    /// The ports of the current primaries (of the nodes that answer).
    pub fn primaries(&self) -> Vec<u16> {
        self.ports
            .iter()
            .copied()
            .filter(|p| answers(*p) && role(*p) == "master")
            .collect()
    }

    /// A node that answers.
    fn any_node(&self) -> u16 {
        self.ports
            .iter()
            .copied()
            .find(|p| answers(*p))
            .expect("a cluster node that answers")
    }

    /// The port of the primary serving `key`'s slot.
    pub fn primary_of(&self, key: &str) -> u16 {
        let node = self.any_node();
        let slot: u16 = query(node, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key));
        let ranges: Vec<redis::Value> = query(node, redis::cmd("CLUSTER").arg("SLOTS"));
        for range in ranges {
            let redis::Value::Array(range) = range else {
                continue;
            };
            let n = |v: &redis::Value| match v {
                redis::Value::Int(i) => *i,
                _ => -1,
            };
            let (from, to) = (n(&range[0]), n(&range[1]));
            if (from..=to).contains(&i64::from(slot)) {
                let redis::Value::Array(primary) = &range[2] else {
                    break;
                };
                return n(&primary[1]) as u16;
            }
        }
        panic!("no primary serves slot {slot} of `{key}`");
    }
}

impl Cluster {
    /// `CLUSTER FAILOVER` on a replica of the primary serving `key`'s slot;
    /// waits until that replica is the primary of the slot. Returns the new
    /// primary's port.
    pub fn failover_of(&self, key: &str) -> u16 {
        self.failover(self.primary_of(key))
    }

    /// `CLUSTER FAILOVER` on a replica of the primary at `primary`; waits
    /// until the replica is a primary, the old one its replica, and the
    /// cluster says every slot is served with none left to the old one.
    /// Returns the new primary's port.
    pub fn failover(&self, primary: u16) -> u16 {
        let replica = self.replica_of(primary);
        let () = query(replica, redis::cmd("CLUSTER").arg("FAILOVER"));
        wait_until(START, "the replica to take over the slots", || {
            role(replica) == "master"
                && role(primary) == "slave"
                && self.ports.iter().all(|p| {
                    let info: String = query(*p, redis::cmd("CLUSTER").arg("INFO"));
                    info.contains("cluster_state:ok") && !slot_primaries(*p).contains(&primary)
                })
        });
        replica
    }
}

impl Cluster {
    /// The port of the replica of the primary at `primary`.
    pub fn replica_of(&self, primary: u16) -> u16 {
        self.ports
            .iter()
            .copied()
            .find(|p| {
                *p != primary && answers(*p) && role(*p) == "slave" && {
                    let info: String = query(*p, redis::cmd("INFO").arg("replication"));
                    info.lines()
                        .any(|l| l.trim() == format!("master_port:{primary}"))
                }
            })
            .expect("a replica of the primary")
    }

    /// kill -9 of the primary at `primary` (no `CLUSTER FAILOVER`: its
    /// replica takes over by itself once the other primaries agree it is
    /// down, after `cluster-node-timeout`, 2 s here, and an election). The
    /// node is started again when the [`Downed`] is dropped, if
    /// [`Downed::restore`] did not. `replica`: its replica, looked up
    /// beforehand ([`Cluster::replica_of`]; it may be stopped by now).
    pub fn kill_primary(&self, primary: u16, replica: u16) -> Downed<'_> {
        kill9(primary);
        Downed {
            cluster: self,
            port: primary,
            replica,
            restored: false,
        }
    }

    /// Whether the cluster is whole: every node answers and says
    /// `cluster_state:ok` with every slot served by an answering primary,
    /// three primaries, each with one replica online.
    pub fn whole(&self) -> bool {
        if !self.ports.iter().all(|p| answers(*p)) {
            return false;
        }
        let primaries = self.primaries();
        primaries.len() == 3
            && primaries.iter().all(|p| replica_online(*p))
            && self.ports.iter().all(|p| {
                let info: String = query(*p, redis::cmd("CLUSTER").arg("INFO"));
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && slot_primaries(*p).iter().all(|s| primaries.contains(s))
            })
    }
}

/// A Cluster primary killed by [`Cluster::kill_primary`].
pub struct Downed<'a> {
    cluster: &'a Cluster,
    /// The killed node's port.
    pub port: u16,
    /// Its replica when it was killed (the one to take over).
    pub replica: u16,
    restored: bool,
}

impl Downed<'_> {
    /// Waits until the replica is the primary of the killed node's slots,
    /// by itself: it says `master` and every live node says
    /// `cluster_state:ok` with no slot left to the dead node.
    pub fn promoted(&self) {
        let live: Vec<u16> = (self.cluster.ports.iter().copied())
            .filter(|p| *p != self.port)
            .collect();
        wait_until(START, "the replica to take over by itself", || {
            role(self.replica) == "master"
                && live.iter().all(|p| {
                    let info: String = query(*p, redis::cmd("CLUSTER").arg("INFO"));
                    info.contains("cluster_state:ok") && !slot_primaries(*p).contains(&self.port)
                })
        });
    }

    /// Starts the killed node again from its directory: its `nodes.conf`
    /// names it a primary of slots the cluster gave another since (a newer
    /// config epoch), so it turns itself into that one's replica and syncs
    /// from it. Waits until the cluster is [`Cluster::whole`] again, the
    /// node the new primary's replica.
    pub fn restore(mut self) {
        self.restored = true;
        restart(self.port, &[]);
        wait_until(
            START,
            "the killed node back as a replica, the cluster whole",
            || role(self.port) == "slave" && self.cluster.whole(),
        );
    }
}

impl Drop for Downed<'_> {
    fn drop(&mut self) {
        // A test that failed with the node down: the later tests get a whole
        // cluster anyway (no second panic here).
        if !self.restored {
            restart(self.port, &[]);
            let _ = poll_until(START, || self.cluster.whole());
        }
    }
}

/// The ports of the primaries the node at `port` says serve slots.
fn slot_primaries(port: u16) -> Vec<u16> {
    let ranges: Vec<redis::Value> = query(port, redis::cmd("CLUSTER").arg("SLOTS"));
    ranges
        .iter()
        .filter_map(|range| match range {
            redis::Value::Array(range) => match range.get(2) {
                Some(redis::Value::Array(primary)) => match primary.get(1) {
                    Some(redis::Value::Int(p)) => Some(*p as u16),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect()
}

impl Sentinels {
    /// The Sentinel set, started on first use, held by the caller alone (its
    /// data flushed).
    pub fn take() -> (&'static Sentinels, MutexGuard<'static, ()>) {
        static SENTINELS: OnceLock<Sentinels> = OnceLock::new();
        let s = SENTINELS.get_or_init(start_sentinels);
        let guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
        let () = query(s.primary(), &redis::cmd("FLUSHALL"));
        (s, guard)
    }

    /// The port of the primary the Sentinels name now.
    pub fn primary(&self) -> u16 {
        let (_, port): (String, u16) = query(
            self.sentinels[0],
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER),
        );
        port
    }

    /// The port of the replica (the server that is not the primary now).
    pub fn replica(&self) -> u16 {
        let primary = self.primary();
        self.data
            .into_iter()
            .find(|p| *p != primary)
            .expect("two data servers")
    }

    /// `SENTINEL FAILOVER`, then waits until the Sentinels name the other
    /// server, which says it is the primary, and the old one follows it.
    /// Returns the new primary's port.
    pub fn failover(&self) -> u16 {
        let old = self.primary();
        let new = if old == self.data[0] {
            self.data[1]
        } else {
            self.data[0]
        };
        let () = query(
            self.sentinels[0],
            redis::cmd("SENTINEL").arg("FAILOVER").arg(MASTER),
        );
        wait_until(START, "the Sentinels to promote the replica", || {
            self.sentinels.iter().all(|s| {
                let (_, port): (String, u16) = query(
                    *s,
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(MASTER),
                );
                port == new
            }) && role(new) == "master"
                && replica_online(new)
        });
        new
    }
}

impl Sentinels {
    /// kill -9 of the primary (no `SENTINEL FAILOVER`: the Sentinels see it
    /// down after `down-after-milliseconds`, 1 s here, agree and promote
    /// the replica). Returns a guard that starts it again when dropped, if
    /// [`DownedPrimary::restore`] did not.
    pub fn kill_primary(&self) -> DownedPrimary<'_> {
        let port = self.primary();
        let replica = self.replica();
        kill9(port);
        DownedPrimary {
            sentinels: self,
            port,
            replica,
            restored: false,
        }
    }

    /// Whether every Sentinel names `port` the primary, which says it is
    /// one and has its replica in sync, and every Sentinel sees the replica
    /// up.
    fn whole_with(&self, port: u16) -> bool {
        self.data.iter().all(|p| answers(*p))
            && self.sentinels.iter().all(|s| {
                let (_, named): (String, u16) = query(
                    *s,
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(MASTER),
                );
                named == port && {
                    let replicas: Vec<HashMap<String, String>> =
                        query(*s, redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER));
                    replicas.len() == 1
                        && replicas.iter().all(|r| {
                            r.get("flags").is_some_and(|f| f == "slave")
                                && r.get("master-link-status").is_some_and(|l| l == "ok")
                        })
                }
            })
            && role(port) == "master"
            && replica_online(port)
    }
}

/// The Sentinels' primary killed by [`Sentinels::kill_primary`].
pub struct DownedPrimary<'a> {
    sentinels: &'a Sentinels,
    /// The killed server's port.
    pub port: u16,
    /// The replica when it was killed (the one to be promoted).
    pub replica: u16,
    restored: bool,
}

impl DownedPrimary<'_> {
    /// Waits until every Sentinel names the replica the primary and it says
    /// it is one.
    pub fn promoted(&self) {
        wait_until(START, "the Sentinels to promote the replica", || {
            self.sentinels.sentinels.iter().all(|s| {
                let (_, port): (String, u16) = query(
                    *s,
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(MASTER),
                );
                port == self.replica
            }) && role(self.replica) == "master"
        });
    }

    /// Starts the killed server again, as a replica of the new primary from
    /// its first breath (started as it was, it could come up as an empty
    /// primary until the Sentinels reconfigure it), and waits until it is in
    /// sync and every Sentinel sees the set whole.
    pub fn restore(mut self) {
        self.restored = true;
        let new = self.replica.to_string();
        restart(self.port, &["--replicaof", "127.0.0.1", &new]);
        wait_until(
            START,
            "the old primary back as a replica, seen by the Sentinels",
            || self.sentinels.whole_with(self.replica),
        );
    }
}

impl Drop for DownedPrimary<'_> {
    fn drop(&mut self) {
        if !self.restored {
            let new = self.replica.to_string();
            restart(self.port, &["--replicaof", "127.0.0.1", &new]);
            let _ = poll_until(START, || self.sentinels.whole_with(self.replica));
        }
    }
}

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
fn answers(port: u16) -> bool {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

/// `master` or `slave`, from `ROLE`.
fn role(port: u16) -> String {
    let role: Vec<redis::Value> = query(port, &redis::cmd("ROLE"));
    match &role[0] {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        other => panic!("ROLE: {other:?}"),
    }
}

/// Whether the primary at `port` has a replica in sync.
fn replica_online(port: u16) -> bool {
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

fn wait_answers(ports: &[u16], dir: &Path) {
    let up = poll_until(START, || ports.iter().all(|p| answers(*p)));
    assert!(
        up,
        "Redis servers on {ports:?} did not start; see {}",
        dir.display()
    );
}

fn start_cluster() -> Cluster {
    let dir = fresh_dir("redis-cluster");
    // Each node's port and its cluster bus port.
    let ports = free_ports(12);
    let (data, bus) = ports.split_at(6);
    for (port, bus) in data.iter().zip(bus) {
        server(
            &dir.join(port.to_string()),
            *port,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ],
        );
    }
    wait_answers(data, &dir);
    let mut create = Command::new("redis-cli");
    create.args(["--cluster", "create"]);
    create.args(data.iter().map(|p| format!("127.0.0.1:{p}")));
    create.args(["--cluster-replicas", "1", "--cluster-yes"]);
    let out = create
        .output()
        .expect("running redis-cli (install Debian's redis-tools)");
    assert!(
        out.status.success(),
        "redis-cli --cluster create failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(START, "cluster_state:ok on every node", || {
        data.iter().all(|p| {
            let info: String = query(*p, redis::cmd("CLUSTER").arg("INFO"));
            info.contains("cluster_state:ok")
                && info.contains("cluster_slots_ok:16384")
                && info.contains("cluster_known_nodes:6")
        })
    });
    // Each primary's replica done with its first sync: a write that waits
    // for a replica (`--durability replica`) is not held by it.
    wait_until(START, "every primary's replica in sync", || {
        data.iter()
            .filter(|p| role(**p) == "master")
            .all(|p| replica_online(*p))
    });
    let seeds: Vec<String> = data.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    Cluster {
        url: format!("redis+cluster://{}", seeds.join(",")),
        ports: data.to_vec(),
        lock: Mutex::new(()),
    }
}

fn start_sentinels() -> Sentinels {
    let dir = fresh_dir("redis-sentinel");
    let ports = free_ports(5);
    let data = [ports[0], ports[1]];
    let sentinels = [ports[2], ports[3], ports[4]];
    server(&dir.join(data[0].to_string()), data[0], &[]);
    server(
        &dir.join(data[1].to_string()),
        data[1],
        &["--replicaof", "127.0.0.1", &data[0].to_string()],
    );
    wait_answers(&data, &dir);
    wait_until(START, "the replica in sync", || replica_online(data[0]));
    for port in sentinels {
        let sdir = dir.join(port.to_string());
        fs::create_dir_all(&sdir).expect("a sentinel dir");
        let conf = sdir.join("sentinel.conf");
        fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nlogfile {}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 10000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                sdir.display(),
                sdir.join("sentinel.log").display(),
                data[0],
            ),
        )
        .expect("writing sentinel.conf");
        spawn((
            "redis-server".into(),
            vec![conf.display().to_string(), "--sentinel".into()],
            sdir,
        ));
    }
    wait_answers(&sentinels, &dir);
    // Each Sentinel knows the replica and the two other Sentinels: a failover
    // can be agreed on.
    wait_until(
        START,
        "the Sentinels to know each other and the replica",
        || {
            sentinels.iter().all(|s| {
                let others: Vec<redis::Value> =
                    query(*s, redis::cmd("SENTINEL").arg("SENTINELS").arg(MASTER));
                let replicas: Vec<redis::Value> =
                    query(*s, redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER));
                others.len() == 2 && replicas.len() == 1
            })
        },
    );
    let hosts: Vec<String> = sentinels.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    Sentinels {
        url: format!("redis+sentinel://{}/{MASTER}", hosts.join(",")),
        data,
        sentinels,
        lock: Mutex::new(()),
    }
}

/// A `stoker` process on one of these deployments (a worker): killed when
/// dropped, its stderr kept in a log file and shown if the test fails.
pub struct Stoker {
    child: std::process::Child,
    log: PathBuf,
}

impl Stoker {
    /// Starts `stoker --redis URL ARGS...`, its stderr in `dir/NAME.log`.
    pub fn spawn(url: &str, args: &[&str], dir: &Path, name: &str) -> Stoker {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(stoker_path())
            .arg("--redis")
            .arg(url)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("a log file"))
            .env("NO_COLOR", "1")
            .spawn()
            .expect("starting stoker");
        Stoker { child, log }
    }

    /// Panics, with the log, if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("stoker exited ({status}); its log:\n{}", self.log());
        }
    }

    /// Kills the process with SIGKILL (nothing of it runs after) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Stoker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log());
        }
    }
}

/// Runs `stoker --redis URL ARGS...` to its end.
pub fn stoker(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(stoker_path())
        .arg("--redis")
        .arg(url)
        .args(args)
        .output()
        .expect("running stoker")
}

/// [`stoker`], which must succeed; its stdout.
pub fn stoker_ok(url: &str, args: &[&str]) -> String {
    let out = stoker(url, args);
    assert!(
        out.status.success(),
        "`stoker {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

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

/// The arguments (after [`server`]'s) that make a `redis-server` speak TLS
/// only, on `port`, with [`certs`], asking no client certificate; on a
/// cluster node, the bus and replication speak TLS too.
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

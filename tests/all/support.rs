//! The harness: a throwaway Redis database per test, the `stoker` CLI and worker
//! processes pointed at it, condition waits, and the no-job-lost check of
//! RELIABILITY.md.
//!
//! Tests wait on conditions ([`wait_until`]), never on wall time: a wait costs
//! only as long as the condition takes, and its timeout is a failure, so it can
//! be generous.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use stoker::inspect::JobRecord;
use stoker::queue::keys::{self, QueueKeys};

/// The databases tests take, one each at a time.
const DBS: std::ops::RangeInclusive<u8> = 8..=15;
/// Heartbeat TTL given to workers unless a test says otherwise: a killed worker's
/// jobs are recovered within about 1.5 times this.
const HEARTBEAT_TTL: &str = "2s";

/// Where things are: the binary, the guests, and this suite's scratch space.
struct Paths {
    stoker: PathBuf,
    guests: PathBuf,
    /// `target/stoker-tests`: temp dirs, DB locks, the shared compile cache.
    scratch: PathBuf,
    workspace: PathBuf,
}

/// The paths, once the binary and guests are up to date (built once per run).
fn paths() -> &'static Paths {
    static PATHS: OnceLock<Paths> = OnceLock::new();
    PATHS.get_or_init(|| {
        // The test binary is target/release/deps/all-HASH; stoker is target/release/stoker.
        let exe = std::env::current_exe().expect("current_exe");
        let release = exe.parent().and_then(Path::parent).expect("target/release");
        let target = release.parent().expect("target");
        let p = Paths {
            stoker: release.join("stoker"),
            guests: target.join("wasm32-wasip2/guest"),
            scratch: target.join("stoker-tests"),
            workspace: Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        };
        build(&p);
        fs::create_dir_all(&p.scratch).expect("creating target/stoker-tests");
        p
    })
}

/// Brings the worker binary and the guests up to date, so the processes under test
/// run the code `cargo test` just compiled (a no-op build takes a second).
fn build(p: &Paths) {
    let guests = example_packages(&p.workspace);
    let cargo = std::env::var_os("CARGO");
    if let Some(cargo) = cargo.filter(|_| std::env::var_os("STOKER_TEST_NO_BUILD").is_none()) {
        let mut build_guests = vec!["build", "--profile", "guest", "--target", "wasm32-wasip2"];
        for g in &guests {
            build_guests.extend(["-p", g]);
        }
        for args in [
            vec!["build", "--release", "-p", "stoker", "--bin", "stoker"],
            build_guests,
        ] {
            let mut cmd = Command::new(&cargo);
            // Cargo gives this test process its package's variables; passed on,
            // they would rerun build scripts that watch them (ring's) and
            // rebuild the binary that `./test.sh` just built.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if [
                    "CARGO_PKG_",
                    "CARGO_MANIFEST_",
                    "CARGO_CRATE_",
                    "CARGO_BIN_",
                    "CARGO_PRIMARY_",
                ]
                .iter()
                .any(|p| name.starts_with(p))
                {
                    cmd.env_remove(name.as_ref());
                }
            }
            let status = cmd
                .args(&args)
                .current_dir(&p.workspace)
                .status()
                .expect("running cargo");
            assert!(status.success(), "`cargo {}` failed", args.join(" "));
        }
    }
    assert!(
        p.stoker.exists(),
        "{} is missing: `cargo build --release -p stoker`",
        p.stoker.display()
    );
    for g in &guests {
        let wasm = p.guests.join(format!("{}.wasm", g.replace('-', "_")));
        assert!(
            wasm.exists(),
            "{} is missing: `cargo build --profile guest --target wasm32-wasip2 -p {g}`",
            wasm.display()
        );
    }
}

/// The package names of `examples/*/Cargo.toml`: the guests.
fn example_packages(workspace: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for dir in fs::read_dir(workspace.join("examples")).expect("examples/") {
        let Ok(toml) = fs::read_to_string(dir.expect("examples/*").path().join("Cargo.toml"))
        else {
            continue;
        };
        let name = toml.lines().find_map(|l| {
            let v = l.strip_prefix("name")?.trim_start().strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_owned())
        });
        names.extend(name);
    }
    names.sort();
    names
}

/// A Redis database held by one test: flushed when taken and when let go. The
/// hold is an `flock` on `target/stoker-tests/locks/db-N.lock`, so two tests never
/// share a database, in this process or in another run of the suite; a test
/// waits while all are taken.
struct DbLease {
    url: String,
    _lock: File,
}

impl DbLease {
    fn take() -> DbLease {
        let url = std::env::var("STOKER_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        // The server's URL without a database of its own: `redis://HOST:PORT`.
        let host_at = url.find("://").map_or(0, |i| i + 3);
        let base = match url[host_at..].find('/') {
            Some(slash) => &url[..host_at + slash],
            None => &url,
        };
        let locks = paths().scratch.join("locks");
        fs::create_dir_all(&locks).expect("creating the lock dir");
        loop {
            for n in DBS {
                let lock = File::create(locks.join(format!("db-{n}.lock"))).expect("lock file");
                // SAFETY: flock on a file descriptor we own, for the life of `lock`.
                if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                    let lease = DbLease {
                        url: format!("{base}/{n}"),
                        _lock: lock,
                    };
                    lease.flush().unwrap_or_else(|e| {
                        panic!("no Redis at {} (set STOKER_TEST_REDIS_URL): {e}", lease.url)
                    });
                    return lease;
                }
            }
            // Every database is held: poll until a test lets one go.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The whole of a Redis server a test started itself (database 0).
    fn own(url: &str) -> DbLease {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let locks = paths().scratch.join("locks");
        fs::create_dir_all(&locks).expect("creating the lock dir");
        let name = format!(
            "own-{}-{}.lock",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let lease = DbLease {
            url: url.to_owned(),
            _lock: File::create(locks.join(name)).expect("lock file"),
        };
        lease
            .flush()
            .unwrap_or_else(|e| panic!("no Redis at {url}: {e}"));
        lease
    }

    fn flush(&self) -> redis::RedisResult<()> {
        let mut conn = redis::Client::open(self.url.as_str())?.get_connection()?;
        redis::cmd("FLUSHDB").query(&mut conn)
    }
}

impl Drop for DbLease {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// One test's world: its database, a temp dir, and the CLI pointed at both.
pub struct TestEnv {
    /// The database's URL, `redis://HOST:PORT/N`.
    pub url: String,
    dir: PathBuf,
    conn: RefCell<redis::Connection>,
    workers: Cell<usize>,
    db: Arc<DbLease>,
}

impl TestEnv {
    /// Takes a database (waiting for one if all are in use) and a temp dir.
    pub fn new() -> TestEnv {
        TestEnv::with(DbLease::take())
    }

    /// A world on the Redis server at `url`, which the test started itself
    /// (to stop, pause or restart it).
    pub fn on(url: &str) -> TestEnv {
        TestEnv::with(DbLease::own(url))
    }

    fn with(db: DbLease) -> TestEnv {
        let db = Arc::new(db);
        let conn = redis::Client::open(db.url.as_str())
            .and_then(|c| c.get_connection())
            .expect("connecting to the test database");
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let test = std::thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "-");
        let dir = paths().scratch.join(format!(
            "{test}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("creating the test's temp dir");
        TestEnv {
            url: db.url.clone(),
            dir,
            conn: RefCell::new(conn),
            workers: Cell::new(0),
            db,
        }
    }

    /// Connects the test's own connection again (after its Redis restarted).
    pub fn reconnect(&self) {
        let conn = redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection())
            .expect("connecting to the test database");
        *self.conn.borrow_mut() = conn;
    }

    /// This test's temp dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `stoker --redis URL ARGS...`.
    pub fn stoker(&self, args: &[&str]) -> Output {
        Command::new(&paths().stoker)
            .arg("--redis")
            .arg(&self.url)
            .args(args)
            .output()
            .expect("running stoker")
    }

    /// A `stoker --redis URL` command to add arguments to and spawn.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&paths().stoker);
        cmd.arg("--redis").arg(&self.url);
        cmd
    }

    /// Runs the CLI and returns its stdout; panics with its stderr if it failed.
    pub fn stoker_ok(&self, args: &[&str]) -> String {
        let out = self.stoker(args);
        assert!(
            out.status.success(),
            "`stoker {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }

    /// Writes `toml` as a manifest and runs `stoker deploy` on it. In the text,
    /// `$GUESTS` stands for the directory of the built example guests and `$DIR`
    /// for this test's temp dir.
    pub fn try_deploy(&self, toml: &str) -> Output {
        let text = toml
            .replace("$GUESTS", &paths().guests.display().to_string())
            .replace("$DIR", &self.dir.display().to_string());
        let manifest = self.dir.join("stoker.toml");
        fs::write(&manifest, text).expect("writing the manifest");
        self.stoker(&["deploy", manifest.to_str().expect("UTF-8 path")])
    }

    /// [`TestEnv::try_deploy`], which must succeed; returns what it printed.
    pub fn deploy(&self, toml: &str) -> String {
        let out = self.try_deploy(toml);
        assert!(
            out.status.success(),
            "deploy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }

    /// `stoker enqueue CLASS ARGS EXTRA...`; returns the job id.
    pub fn enqueue(&self, class: &str, args: &str, extra: &[&str]) -> String {
        let mut cli = vec!["enqueue", class, args];
        cli.extend(extra);
        self.stoker_ok(&cli).trim().to_owned()
    }

    /// `stoker job ID --json`.
    pub fn job_json(&self, id: &str) -> Value {
        serde_json::from_str(&self.stoker_ok(&["job", id, "--json"]))
            .expect("`stoker job --json` prints JSON")
    }

    /// The `stoker job --json` documents of many jobs of `queue`, read straight
    /// from their records (the same rendering as the CLI, without a process per
    /// job); `Value::Null` for a job without a record.
    pub fn records(&self, queue: &str, ids: &[String]) -> Vec<Value> {
        let q = QueueKeys::new(queue);
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(q.job(id));
        }
        let all: Vec<HashMap<String, String>> = self.query_pipe(&pipe);
        all.into_iter()
            .map(|fields| {
                if fields.is_empty() {
                    return Value::Null;
                }
                let queue = queue.to_owned();
                JobRecord { queue, fields }.to_json()
            })
            .collect()
    }

    /// A job's record as stored: every field of its hash, including those the
    /// `stoker job` document leaves out (`seq`, `lease`, `resumed`, `crashes`,
    /// `progress`, `parent`, ...). Empty when the job has no record.
    pub fn fields(&self, queue: &str, id: &str) -> HashMap<String, String> {
        self.query(redis::cmd("HGETALL").arg(QueueKeys::new(queue).job(id)))
    }

    /// One job's document (see [`TestEnv::records`]).
    pub fn record(&self, queue: &str, id: &str) -> Value {
        self.records(queue, &[id.to_owned()]).remove(0)
    }

    /// Waits until every job is `done` or `dead`; returns their documents.
    pub fn wait_settled(&self, queue: &str, ids: &[String], timeout: Duration) -> Vec<Value> {
        let mut records = Vec::new();
        wait_until(timeout, &format!("{} jobs to settle", ids.len()), || {
            records = self.records(queue, ids);
            records
                .iter()
                .all(|r| matches!(state(r), "done" | "dead" | "collapsed"))
        });
        records
    }

    /// Runs one Redis command on the test's database.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        cmd.query(&mut *self.conn.borrow_mut())
            .unwrap_or_else(|e| panic!("redis: {e}"))
    }

    /// Runs a pipeline on the test's database.
    pub fn query_pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> T {
        pipe.query(&mut *self.conn.borrow_mut())
            .unwrap_or_else(|e| panic!("redis: {e}"))
    }

    /// Redis's clock (`TIME`), in ms since the epoch: the clock schedules use.
    pub fn redis_now_ms(&self) -> u64 {
        let (secs, micros): (u64, u64) = self.query(&redis::cmd("TIME"));
        secs * 1000 + micros / 1000
    }

    /// Starts `stoker worker EXTRA...` with this test's database, the suite's
    /// shared compile cache and a 2 s heartbeat TTL (unless `extra` sets one).
    pub fn spawn_worker(&self, extra: &[&str]) -> Worker {
        self.spawn_worker_env(extra, &[])
    }

    /// [`TestEnv::spawn_worker`] with `env` set in the worker's environment.
    pub fn spawn_worker_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Worker {
        let n = self.workers.replace(self.workers.get() + 1);
        let log = self.dir.join(format!("worker-{n}.log"));
        let mut cmd = Command::new(&paths().stoker);
        cmd.arg("--redis").arg(&self.url).arg("worker").args(extra);
        // The artifact cache shared by the tests, unless the test names its own.
        if !extra.contains(&"--cache-dir") {
            cmd.arg("--cache-dir").arg(paths().scratch.join("cache"));
        }
        if !extra.contains(&"--heartbeat-ttl") {
            cmd.args(["--heartbeat-ttl", HEARTBEAT_TTL]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("worker log file"))
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .spawn()
            .expect("starting a worker");
        Worker {
            child,
            log,
            _db: self.db.clone(),
        }
    }

    /// `LPUSH`es `payloads` onto the list `key` in one round trip, as a producer
    /// that knows only the documented key layout would.
    pub fn lpush(&self, key: &str, payloads: &[String]) {
        let mut pipe = redis::pipe();
        for p in payloads {
            pipe.lpush(key, p).ignore();
        }
        self.query_pipe::<()>(&pipe);
    }

    /// The ids of every job payload in `queue`'s pending list, oldest first.
    pub fn pending_ids(&self, queue: &str) -> Vec<String> {
        let raw: Vec<String> = self.query(
            redis::cmd("LRANGE")
                .arg(QueueKeys::new(queue).pending())
                .arg(0)
                .arg(-1),
        );
        raw.iter().rev().map(|p| payload_id(p)).collect()
    }

    /// Every payload in `queue`'s in-flight lists, whatever the worker.
    pub fn in_flight(&self, queue: &str) -> Vec<String> {
        let any_worker = QueueKeys::new(queue).inflight("*");
        let lists: Vec<String> = self.query(redis::cmd("KEYS").arg(any_worker));
        let mut all = Vec::new();
        for list in lists {
            let items: Vec<String> = self.query(redis::cmd("LRANGE").arg(list).arg(0).arg(-1));
            all.extend(items);
        }
        all
    }

    /// RELIABILITY.md's first invariant, checked at a quiet moment (no worker
    /// running, or all of `ids` settled): every job is in exactly one place, and its
    /// record's state says the same place: `queued` in the pending list,
    /// `running` in an in-flight list, `scheduled`/`retrying` in those sets,
    /// `dead` in the dead set, `done` and `collapsed` nowhere. Returns the jobs'
    /// documents.
    pub fn assert_no_job_lost(&self, queue: &str, ids: &[String]) -> Vec<Value> {
        let q = QueueKeys::new(queue);
        let mut places: HashMap<String, Vec<&str>> = HashMap::new();
        let mut put = |ids: Vec<String>, place| {
            for id in ids {
                places.entry(id).or_default().push(place);
            }
        };
        put(self.pending_ids(queue), "pending");
        put(
            self.in_flight(queue)
                .iter()
                .map(|p| payload_id(p))
                .collect(),
            "in-flight",
        );
        for (set, place) in [(q.scheduled(), "scheduled"), (q.retry(), "retry")] {
            let payloads: Vec<String> = self.query(redis::cmd("ZRANGE").arg(set).arg(0).arg(-1));
            put(payloads.iter().map(|p| payload_id(p)).collect(), place);
        }
        put(
            self.query(redis::cmd("ZRANGE").arg(q.dead()).arg(0).arg(-1)),
            "dead",
        );

        let records = self.records(queue, ids);
        for (id, record) in ids.iter().zip(&records) {
            let found = places.get(id).cloned().unwrap_or_default();
            let expected: &[&str] = match state(record) {
                // A job pushed with a plain LPUSH has no record until fetched.
                "" | "queued" => &["pending"],
                "running" => &["in-flight"],
                "scheduled" => &["scheduled"],
                "retrying" => &["retry"],
                "dead" => &["dead"],
                "done" | "collapsed" => &[],
                other => panic!("job {id}: unknown state `{other}`: {record}"),
            };
            assert_eq!(
                found,
                expected,
                "job {id} (state `{}`) is in {found:?}: {record}",
                state(record)
            );
        }
        records
    }

    /// Every job `done` with the result `expected(id)`, nothing left pending or in
    /// flight in `queue`, and none lost.
    pub fn assert_all_done(&self, queue: &str, ids: &[String], expected: impl Fn(&str) -> Value) {
        let records = self.assert_no_job_lost(queue, ids);
        for (id, record) in ids.iter().zip(&records) {
            assert_eq!(state(record), "done", "job {id}: {record}");
            assert_eq!(record["result"], expected(id), "job {id}: {record}");
        }
        assert_eq!(self.pending_ids(queue), Vec::<String>::new(), "pending");
        assert_eq!(self.in_flight(queue), Vec::<String>::new(), "in flight");
    }

    /// Waits until nothing of `queue` is pending, in flight, scheduled or
    /// retrying: no job of it can run or be made any more.
    pub fn wait_quiet(&self, queue: &str, timeout: Duration) {
        let q = QueueKeys::new(queue);
        wait_until(timeout, &format!("queue `{queue}` to be quiet"), || {
            let sets: (u64, u64, u64) = self.query_pipe(
                redis::pipe()
                    .llen(q.pending())
                    .zcard(q.scheduled())
                    .zcard(q.retry()),
            );
            sets == (0, 0, 0) && self.in_flight(queue).is_empty()
        });
    }

    /// The sum of the numeric record field `field` over the jobs `ids` of
    /// `queue` (absent counts 0), in one round trip.
    pub fn field_sum(&self, queue: &str, ids: &[String], field: &str) -> u64 {
        let q = QueueKeys::new(queue);
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(q.job(id), field);
        }
        let values: Vec<Option<u64>> = self.query_pipe(&pipe);
        values.into_iter().flatten().sum()
    }

    /// The heartbeat `worker` wrote last (its document: `pid`, `busy`,
    /// `at_ms` in Redis time, ...); `None` while it has none.
    pub fn heartbeat(&self, worker: &Worker) -> Option<Value> {
        let ids: Vec<String> = self.query(redis::cmd("ZRANGE").arg(keys::workers()).arg(0).arg(-1));
        ids.iter().find_map(|id| {
            let beat: Option<String> = self.query(redis::cmd("GET").arg(keys::heartbeat(id)));
            let beat: Value = serde_json::from_str(&beat?).ok()?;
            (beat["pid"] == worker.pid()).then_some(beat)
        })
    }

    /// Waits until `worker` has written `beats` more heartbeats: it has been
    /// alive and running its periodic duties (re-reading classes and pauses)
    /// that many times since the call.
    pub fn wait_beats(&self, worker: &Worker, beats: usize, timeout: Duration) {
        let at = |b: Option<Value>| b.and_then(|b| b["at_ms"].as_u64());
        let mut last = at(self.heartbeat(worker));
        let mut seen = 0;
        wait_until(
            timeout,
            &format!("{beats} heartbeats of the worker"),
            || {
                let now = at(self.heartbeat(worker));
                if now.is_some() && now != last {
                    seen += 1;
                    last = now;
                }
                seen >= beats
            },
        );
    }

    /// The dashboard's "retry now" on dead entry `id` of `queue`.
    pub fn dashboard_retry(&self, queue: &str, id: &str) -> stoker::dashboard::data::Acted {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut conn = stoker::queue::connect(&self.url).await.unwrap();
            stoker::dashboard::data::retry_now(
                &mut conn,
                queue,
                stoker::dashboard::data::Set::Dead,
                id,
            )
            .await
            .unwrap()
        })
    }

    /// The document of `stoker status --json`.
    pub fn status(&self) -> Value {
        serde_json::from_str(&self.stoker_ok(&["status", "--json"])).expect("status JSON")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A `stoker worker` child process; killed (SIGKILL) when dropped. It holds its
/// test's database, so the database is flushed only once the worker is gone.
pub struct Worker {
    child: Child,
    log: PathBuf,
    _db: Arc<DbLease>,
}

impl Worker {
    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaping the worker");
    }

    /// SIGTERM: a graceful stop.
    pub fn sigterm(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP: the process is frozen (its heartbeat too) until [`Worker::sigcont`].
    pub fn sigstop(&self) {
        self.signal(libc::SIGSTOP, "kill -STOP");
    }

    /// SIGCONT: a stopped process runs on.
    pub fn sigcont(&self) {
        self.signal(libc::SIGCONT, "kill -CONT");
    }

    fn signal(&self, signal: libc::c_int, what: &str) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "{what}");
    }

    /// Waits for the process to exit; panics (with its log) after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        wait_until(timeout, "the worker to exit", || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        status.expect("exited")
    }

    /// Panics, with the worker's log, if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("the worker exited ({status}); its log:\n{}", self.log());
        }
    }

    /// What the worker wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- worker log (last lines of {}) ---", self.log.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// The workspace's `target` directory (test artifacts go under it).
pub fn target_dir() -> &'static Path {
    paths().scratch.parent().expect("target/")
}

/// The workspace's root.
pub fn workspace_dir() -> &'static Path {
    &paths().workspace
}

/// The `stoker` binary the tests run.
pub fn stoker_path() -> &'static Path {
    &paths().stoker
}

/// Where the example guests are built (`target/wasm32-wasip2/guest`).
pub fn guests_dir() -> &'static Path {
    &paths().guests
}

/// Polls `condition` every 20 ms until it holds; panics after `timeout`, naming
/// what it waited for.
pub fn wait_until(timeout: Duration, what: &str, condition: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, condition),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// Polls `condition` every 20 ms until it holds or `timeout` has passed;
/// whether it held (for waits whose timeout is not a failure).
pub fn poll_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if condition() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A document's `state`, `""` when it has none (no record).
pub fn state(record: &Value) -> &str {
    record["state"].as_str().unwrap_or("")
}

/// The id of a queued payload (`""` if it has none).
fn payload_id(payload: &str) -> String {
    serde_json::from_str::<Value>(payload)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A JSON job payload, as any Redis client may `LPUSH` it.
pub fn payload(id: &str, class: &str, args: Value) -> String {
    serde_json::json!({ "id": id, "class": class, "args": args }).to_string()
}

/// A job's record fields (see [`TestEnv::fields`]) in queue `default`.
pub fn fields(env: &TestEnv, id: &str) -> HashMap<String, String> {
    env.fields("default", id)
}

/// A numeric record field; 0 when absent or empty (as recovery leaves `lease`).
pub fn num(fields: &HashMap<String, String>, name: &str) -> u64 {
    match fields.get(name).map(String::as_str) {
        None | Some("") => 0,
        Some(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("field `{name}` = {v:?} is not a number: {fields:?}")),
    }
}

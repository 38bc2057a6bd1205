//! One test's world ([`TestEnv`]): its database, a temp dir, and the `stoker`
//! CLI pointed at both (deploy, enqueue, job, status, the dashboard's retry).

use std::cell::{Cell, RefCell};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use super::db::{DbConn, DbLease};
use super::paths::paths;

/// One test's world: its database, a temp dir, and the CLI pointed at both.
pub struct TestEnv {
    /// The database's URL, `redis://HOST:PORT/N`.
    pub url: String,
    pub(super) dir: PathBuf,
    pub(super) conn: RefCell<DbConn>,
    pub(super) workers: Cell<usize>,
    pub(super) db: Arc<DbLease>,
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

    /// A world on the Redis Cluster at `url` (`redis+cluster://`), which the
    /// test holds through its own lock (see `crate::cluster_env`): nothing
    /// flushed. Raw commands go to their key's primary.
    pub fn on_cluster(url: &str) -> TestEnv {
        TestEnv::with(DbLease::borrow(url))
    }

    /// A world on the Sentinel set at `url` (`redis+sentinel://`), which the
    /// test holds through its own lock: nothing flushed. Raw commands go to
    /// the primary the Sentinels name, followed through failovers.
    pub fn on_sentinel(url: &str) -> TestEnv {
        TestEnv::with(DbLease::borrow(url))
    }

    fn with(db: DbLease) -> TestEnv {
        let db = Arc::new(db);
        let conn = db.connect().expect("connecting to the test database");
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
        let conn = self.db.connect().expect("connecting to the test database");
        *self.conn.borrow_mut() = conn;
    }

    /// This test's temp dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `stoker --redis URL ARGS...`.
    pub fn stoker(&self, args: &[&str]) -> Output {
        stoker(&self.url, args)
    }

    /// A `stoker --redis URL` command to add arguments to and spawn.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&paths().stoker);
        cmd.arg("--redis").arg(&self.url);
        cmd
    }

    /// Runs the CLI and returns its stdout; panics with its stderr if it failed.
    pub fn stoker_ok(&self, args: &[&str]) -> String {
        stoker_ok(&self.url, args)
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

    /// The dashboard's "retry now" on dead entry `id` of `queue`.
    pub fn dashboard_retry(&self, queue: &str, id: &str) -> stoker::queue::manage::Acted {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut conn = stoker::queue::connect(&self.url).await.unwrap();
            stoker::queue::manage::retry_now(&mut conn, queue, stoker::queue::manage::Set::Dead, id)
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

/// Runs `stoker --redis URL ARGS...` to its end.
pub fn stoker(url: &str, args: &[&str]) -> Output {
    Command::new(&paths().stoker)
        .arg("--redis")
        .arg(url)
        .args(args)
        .output()
        .expect("running stoker")
}

/// [`stoker`], which must succeed: its stdout; panics with its stderr if it
/// failed.
pub fn stoker_ok(url: &str, args: &[&str]) -> String {
    let out = stoker(url, args);
    assert!(
        out.status.success(),
        "`stoker {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

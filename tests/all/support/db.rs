//! A Redis database per test: a lease on one of databases 8-15 (or on a
//! server the test started itself), flushed when taken and when let go; or a
//! deployment the test holds by other means (a Cluster), never flushed.

use std::fs::{self, File};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::paths::paths;

/// The databases tests take, one each at a time.
const DBS: std::ops::RangeInclusive<u8> = 8..=15;

/// A Redis database held by one test: flushed when taken and when let go. The
/// hold is an `flock` on `target/stoker-tests/locks/db-N.lock`, so two tests never
/// share a database, in this process or in another run of the suite; a test
/// waits while all are taken.
pub(super) struct DbLease {
    pub(super) url: String,
    /// `None` for a deployment held otherwise.
    lock: Option<File>,
}

impl DbLease {
    pub(super) fn take() -> DbLease {
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
                        lock: Some(lock),
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
    pub(super) fn own(url: &str) -> DbLease {
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
            lock: Some(File::create(locks.join(name)).expect("lock file")),
        };
        lease
            .flush()
            .unwrap_or_else(|e| panic!("no Redis at {url}: {e}"));
        lease
    }

    /// A multi-node deployment the test holds through its own lock (see
    /// `crate::cluster_env`), which flushes it: left as it is.
    pub(super) fn borrow(url: &str) -> DbLease {
        DbLease {
            url: url.to_owned(),
            lock: None,
        }
    }

    fn flush(&self) -> redis::RedisResult<()> {
        let mut conn = redis::Client::open(self.url.as_str())?.get_connection()?;
        redis::cmd("FLUSHDB").query(&mut conn)
    }

    /// A connection to the database, or to the Cluster of a
    /// `redis+cluster://HOST:PORT,...` URL, or to the primary of a
    /// `redis+sentinel://` one (followed through failovers).
    pub(super) fn connect(&self) -> redis::RedisResult<DbConn> {
        if self.url.starts_with("redis+cluster://") || self.url.starts_with("redis+sentinel://") {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let conn = rt.block_on(stoker::queue::connect(&self.url))?;
            return Ok(DbConn::Cluster(rt, conn));
        }
        Ok(DbConn::One(
            redis::Client::open(self.url.as_str())?.get_connection()?,
        ))
    }
}

/// A test's connection: a plain one, or on a Cluster the runtime's own
/// (each command sent to its key's primary, a pipeline split by slot; see
/// `stoker::queue::Conn`), driven on a runtime of its own.
pub(super) enum DbConn {
    One(redis::Connection),
    Cluster(tokio::runtime::Runtime, stoker::queue::Conn),
}

impl DbConn {
    pub(super) fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        match self {
            DbConn::One(conn) => cmd.query(conn),
            DbConn::Cluster(rt, conn) => rt.block_on(cmd.query_async(conn)),
        }
    }

    pub(super) fn query_pipe<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        match self {
            DbConn::One(conn) => pipe.query(conn),
            DbConn::Cluster(rt, conn) => rt.block_on(pipe.query_async(conn)),
        }
    }
}

impl Drop for DbLease {
    fn drop(&mut self) {
        if self.lock.is_some() {
            let _ = self.flush();
        }
    }
}

//! A Redis database per test: a lease on one of databases 8-15 (or on a
//! server the test started itself), flushed when taken and when let go.

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
    _lock: File,
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

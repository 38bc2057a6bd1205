//! The Sentinel set: a primary, a replica and 3 Sentinels, failovers, the
//! primary killed and restored.

use std::collections::HashMap;
use std::fs;
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::START;
use super::servers::{
    answers, free_ports, fresh_dir, kill9, query, replica_online, restart, role, server, spawn,
    wait_answers,
};
use crate::support::{poll_until, wait_until};

/// The primary's name in the Sentinels' configuration.
pub const MASTER: &str = "stoker";

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

//! The Redis Cluster: 3 primaries and 3 replicas, failovers, a primary
//! killed and restored.

use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::START;
use super::servers::{
    answers, free_ports, fresh_dir, kill9, query, replica_online, restart, role, server,
    wait_answers,
};
use crate::support::{poll_until, wait_until};

/// A running Redis Cluster.
pub struct Cluster {
    /// `redis+cluster://` with every node as a seed.
    pub url: String,
    /// The nodes' ports (primaries and replicas, as created).
    pub ports: Vec<u16>,
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

    /// Sets `cluster-node-timeout` to `ms` on every node.
    pub fn set_node_timeout(&self, ms: u64) {
        for port in &self.ports {
            let () = query(
                *port,
                redis::cmd("CONFIG")
                    .arg("SET")
                    .arg("cluster-node-timeout")
                    .arg(ms),
            );
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

/// The arguments (after [`server`]'s) that make a `redis-server` a Cluster
/// node, its cluster bus on `bus`, its `cluster-node-timeout` 2 s.
pub fn node_args(bus: u16) -> Vec<String> {
    [
        "--cluster-enabled",
        "yes",
        "--cluster-port",
        &bus.to_string(),
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Makes the nodes on `data` one cluster, `replicas` replicas to a primary
/// (`redis-cli --cluster create`); `cli`: what redis-cli needs first (TLS,
/// a user).
pub fn create_cluster(data: &[u16], replicas: usize, cli: &[&str]) {
    let mut create = Command::new("redis-cli");
    create.args(cli);
    create.args(["--cluster", "create"]);
    create.args(data.iter().map(|p| format!("127.0.0.1:{p}")));
    create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
    let out = create
        .output()
        .expect("running redis-cli (install Debian's redis-tools)");
    assert!(
        out.status.success(),
        "redis-cli --cluster create failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_cluster() -> Cluster {
    let dir = fresh_dir("redis-cluster");
    // Each node's port and its cluster bus port.
    let ports = free_ports(12);
    let (data, bus) = ports.split_at(6);
    for (port, bus) in data.iter().zip(bus) {
        let args = node_args(*bus);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        server(&dir.join(port.to_string()), *port, &args);
    }
    wait_answers(data, &dir);
    create_cluster(data, 1, &[]);
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

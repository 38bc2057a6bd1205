//! How acknowledged writes are kept: on the primary only (`local`, the
//! default), or on a replica too (`replica[:TIMEOUT]`).
//!
//! Redis replicates asynchronously: a primary that dies can take with it the
//! writes it acknowledged and had not passed on, and a replica promoted in its
//! place (a Sentinel or Cluster failover) never saw them. With
//! [`Durability::Replica`], every write Stoker is about to acknowledge (a
//! checkpoint's commit before the job goes on, a settlement before the next
//! batch of them, an enqueue before its id is printed, a commit's part on
//! another slot before it leaves the outbox) carries `WAIT 1 TIMEOUT` right
//! behind it, in the same request on the same connection ([`Armed`]):
//! Redis answers once one replica has every write made on that connection
//! so far, this one included.
//!
//! `WAIT` holds the connection while it waits (Redis answers a client's
//! requests in order), and Stoker's connections are multiplexed: a replica
//! that answers slowly or not at all would hold every request queued behind
//! the wait, heartbeats included. So after a wait that times out (no replica
//! acknowledged within `TIMEOUT`), that primary's writes stop waiting: one
//! warning says so, and its `INFO replication` is asked at most once a
//! second until a replica is online again without lag; then writes wait again
//! and one line says after how long. A write that timed out still stands (a
//! `WAIT` cannot undo it); what is lost in a failover during such a lapse is
//! what `local` would lose. The README's "Durability" states the contract.
//!
//! A wait that ends without a replica's acknowledgment (it failed, or timed
//! out) tells its caller so, and the caller sends its write again before it
//! acknowledges anything (every write that waits is idempotent: a second run
//! applies nothing twice). The primary that took the write may have died
//! under the wait (kill -9, a crash): the write may never have reached the
//! replica promoted in its place, and the request's failure (write and
//! wait together) is all there is to see. Sent again, the write lands on
//! whichever primary holds
//! the key now: applied there if it was lost, found applied if it was not.
//! A timeout starts a lapse, so the write sent again does not wait.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::cluster_routing::Slot;

use super::Conn;

/// The wait for a replica when none is given (`replica`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);
/// During a lapse, the shortest gap between two looks at a primary's
/// replicas.
const PROBE_GAP: Duration = Duration::from_secs(1);

/// Where an acknowledged write is kept before Stoker acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// On the primary: acknowledged as soon as the primary has it.
    #[default]
    Local,
    /// On the primary and one replica, waiting at most `timeout` for the
    /// replica.
    Replica {
        /// The longest wait for a replica's acknowledgment.
        timeout: Duration,
    },
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(text: &str) -> Result<Durability, String> {
        let (mode, timeout) = match text.split_once(':') {
            Some((mode, timeout)) => (mode, Some(timeout)),
            None => (text, None),
        };
        match (mode, timeout) {
            ("local", None) => Ok(Durability::Local),
            ("replica", None) => Ok(Durability::Replica {
                timeout: DEFAULT_TIMEOUT,
            }),
            ("replica", Some(t)) => {
                let timeout = crate::config::parse_duration(t)
                    .map_err(|e| format!("durability `{text}`: {e}"))?;
                if timeout < Duration::from_millis(1) {
                    return Err(format!(
                        "durability `{text}`: the wait for a replica must be at least 1ms"
                    ));
                }
                Ok(Durability::Replica { timeout })
            }
            _ => Err(format!(
                "durability `{text}`: expected `local` or `replica[:TIMEOUT]` (e.g. `replica:500ms`)"
            )),
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Local => f.write_str("local"),
            Durability::Replica { timeout } => write!(f, "replica:{}ms", timeout.as_millis()),
        }
    }
}

/// The waits of one [`Conn`] and its clones: nothing for
/// [`Durability::Local`].
#[derive(Clone, Default)]
pub(crate) struct Replicas(Option<Arc<Waits>>);

struct Waits {
    timeout: Duration,
    /// The primaries whose writes do not wait now, by [`Node`].
    lapses: Mutex<HashMap<Node, Lapse>>,
    /// On Cluster, while a lapse is open: the node each slot was on when
    /// last asked (`CLUSTER MYID`), and when; kept [`PROBE_GAP`] (a
    /// failover moves slots).
    nodes: Mutex<HashMap<Slot, (String, Instant)>>,
}

/// A primary: on Cluster its node id (one lapse covers every slot it
/// holds: a primary that lost its replica costs one timed-out wait, not
/// one per slot written to); `None` for the one primary of a single server
/// or a Sentinel set.
type Node = Option<String>;

/// A primary without a replica that acknowledges in time.
struct Lapse {
    /// When a wait first timed out.
    since: Instant,
    /// When its replicas were last looked at.
    probed: Instant,
    /// Writes that did not wait since.
    skipped: u64,
}

impl Replicas {
    pub(crate) fn new(durability: Durability) -> Replicas {
        match durability {
            Durability::Local => Replicas(None),
            Durability::Replica { timeout } => Replicas(Some(Arc::new(Waits {
                timeout,
                lapses: Mutex::new(HashMap::new()),
                nodes: Mutex::new(HashMap::new()),
            }))),
        }
    }

    pub(crate) fn durability(&self) -> Durability {
        match &self.0 {
            None => Durability::Local,
            Some(w) => Durability::Replica { timeout: w.timeout },
        }
    }

    /// Before a write to `key` that is to be acknowledged: how it is to be
    /// kept. `None` with [`Durability::Local`], or while `key`'s primary is
    /// in a lapse (then the write is acknowledged as it is); else the wait
    /// the write must carry ([`Conn::keep`]).
    pub(crate) async fn arm(&self, conn: &mut Conn, key: &str) -> Option<Armed> {
        let w = self.0.as_ref()?;
        // On Cluster the key's node is asked only while a lapse is open, or
        // once one starts: a healthy cluster pays no extra round trip.
        let node: Option<Node> = match conn.is_cluster() {
            false => Some(None),
            true if w.any_lapse() => Some(Some(w.node_of(conn, key).await)),
            true => None,
        };
        if let Some(n) = &node
            && let Some(probe) = w.skip_or_probe(n)
            && (!probe || !replica_online(conn, key).await)
        {
            return None;
        }
        Some(Armed {
            key: key.to_owned(),
            slot: conn.is_cluster().then(|| Slot::for_key(key)),
            timeout_ms: w.timeout.as_millis() as u64,
            node,
            acked: None,
        })
    }

    /// After the write `armed` carried its wait: whether it may be
    /// acknowledged. `false` when the wait failed, timed out, or did not
    /// run behind the write (the caller sends the write again first).
    pub(crate) async fn confirm(&self, conn: &mut Conn, armed: Armed) -> bool {
        let Some(w) = &self.0 else {
            return true;
        };
        let Armed {
            key, node, acked, ..
        } = armed;
        match acked {
            Some(Ok(n)) if n >= 1 => {
                if let Some(n) = &node {
                    w.back(n, &key);
                }
                true
            }
            Some(Ok(_)) => {
                let n = match node {
                    Some(n) => n,
                    None => Some(w.node_of(conn, &key).await),
                };
                w.lapsed(n, &key);
                false
            }
            // The primary may be gone with the write; the next wait (after
            // the write is sent again) waits again.
            Some(Err(e)) => {
                tracing::debug!(error = %e, %key, "waiting for a replica failed");
                false
            }
            None => {
                tracing::debug!(%key, "the write did not carry its wait for a replica");
                false
            }
        }
    }
}

/// A write about to be sent that must carry a wait for a replica: the
/// connection sends `WAIT 1 TIMEOUT` right behind it, in the same request
/// on the same socket to the same server ([`Conn::keep`]). Only so does the
/// wait count this write: Redis answers `WAIT` for the writes made on the
/// connection it comes on, and a `WAIT` sent on its own may go elsewhere
/// (redis-rs sends a keyless command of a node it cannot reach to another
/// node, whose replicas have all of its own writes; a connection made anew
/// has made no write), and answer at once for a write no replica has.
pub(crate) struct Armed {
    key: String,
    /// On Cluster, the key's slot: only a command of that slot carries the
    /// wait.
    pub(crate) slot: Option<Slot>,
    pub(crate) timeout_ms: u64,
    /// The key's primary when known (see [`Node`]).
    node: Option<Node>,
    /// What the last wait answered; none while no command carried one.
    pub(crate) acked: Option<redis::RedisResult<i64>>,
}

impl Waits {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Node, Lapse>> {
        self.lapses.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn any_lapse(&self) -> bool {
        !self.lock().is_empty()
    }

    /// The id of the Cluster node that holds `key`'s slot: as asked within
    /// [`PROBE_GAP`], or asked now. A node that does not answer
    /// `CLUSTER MYID` (an ACL that refuses it) is named by the slot.
    async fn node_of(&self, conn: &mut Conn, key: &str) -> String {
        let slot = Slot::for_key(key);
        let nodes = || self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((id, at)) = nodes().get(&slot)
            && at.elapsed() < PROBE_GAP
        {
            return id.clone();
        }
        match conn
            .query_at::<String>(key, redis::cmd("CLUSTER").arg("MYID"))
            .await
        {
            Ok(id) => {
                nodes().insert(slot, (id.clone(), Instant::now()));
                id
            }
            Err(_) => format!("{slot:?}"),
        }
    }

    /// `None` when writes to `node` wait; else whether to look at the
    /// replicas now (at most once per [`PROBE_GAP`]) rather than skip.
    fn skip_or_probe(&self, node: &Node) -> Option<bool> {
        let mut lapses = self.lock();
        let lapse = lapses.get_mut(node)?;
        if lapse.probed.elapsed() < PROBE_GAP {
            lapse.skipped += 1;
            return Some(false);
        }
        lapse.probed = Instant::now();
        Some(true)
    }

    fn lapsed(&self, node: Node, key: &str) {
        let mut lapses = self.lock();
        if let Some(lapse) = lapses.get_mut(&node) {
            lapse.skipped += 1;
            return;
        }
        let now = Instant::now();
        lapses.insert(
            node,
            Lapse {
                since: now,
                probed: now,
                skipped: 1,
            },
        );
        tracing::warn!(
            %key,
            timeout_ms = self.timeout.as_millis() as u64,
            "no replica acknowledged writes in time; writes to this primary stop waiting for one until a replica is back (a failover meanwhile can lose them)"
        );
    }

    fn back(&self, node: &Node, key: &str) {
        let mut lapses = self.lock();
        let Some(lapse) = lapses.remove(node) else {
            return;
        };
        if lapses.is_empty() {
            self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        drop(lapses);
        tracing::info!(
            %key,
            unreplicated = lapse.skipped,
            "a replica acknowledges writes again after {:.1} s; writes wait for it again",
            lapse.since.elapsed().as_secs_f64()
        );
    }
}

/// Whether the primary of `key` has a replica online and up to date (lag of
/// at most 1 s), from `INFO replication`.
async fn replica_online(conn: &mut Conn, key: &str) -> bool {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("replication");
    match conn.query_at::<String>(key, &cmd).await {
        Ok(info) => online_replicas(&info) > 0,
        Err(_) => false,
    }
}

/// Replicas in `INFO replication` text that are online with a lag of at most
/// 1 s (`slave0:ip=...,port=...,state=online,offset=...,lag=0`).
fn online_replicas(info: &str) -> usize {
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains(':'))
        .filter(|l| {
            let fields = l.split_once(':').map_or("", |(_, f)| f);
            let field = |name: &str| {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            field("state") == Some("online")
                && field("lag")
                    .and_then(|lag| lag.trim().parse::<u64>().ok())
                    .is_some_and(|lag| lag <= 1)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_reads_and_prints() {
        assert_eq!("local".parse(), Ok(Durability::Local));
        assert_eq!(
            "replica".parse(),
            Ok(Durability::Replica {
                timeout: DEFAULT_TIMEOUT
            })
        );
        let d: Durability = "replica:250ms".parse().unwrap();
        assert_eq!(
            d,
            Durability::Replica {
                timeout: Duration::from_millis(250)
            }
        );
        assert_eq!(d.to_string(), "replica:250ms");
        assert_eq!(d.to_string().parse(), Ok(d));
        for bad in [
            "",
            "replicas",
            "local:1s",
            "replica:",
            "replica:0ms",
            "replica:soon",
        ] {
            let e = bad.parse::<Durability>().unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn only_online_replicas_without_lag_count() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:3\r\n\
            slave0:ip=127.0.0.1,port=7001,state=online,offset=100,lag=0\r\n\
            slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=0\r\n\
            slave2:ip=127.0.0.1,port=7003,state=online,offset=90,lag=7\r\n\
            slave_read_repl_offset:1\r\nmaster_repl_offset:100\r\n";
        assert_eq!(online_replicas(info), 1);
        assert_eq!(online_replicas("role:master\r\nconnected_slaves:0\r\n"), 0);
    }

    #[test]
    fn a_lapse_skips_writes_and_probes_once_a_gap() {
        let Replicas(Some(w)) = Replicas::new(Durability::Replica {
            timeout: Duration::from_millis(5),
        }) else {
            panic!("replica durability waits");
        };
        let (a, b): (Node, Node) = (Some("node-a".into()), Some("node-b".into()));
        assert!(!w.any_lapse());
        assert_eq!(w.skip_or_probe(&a), None);
        w.lapsed(a.clone(), "a");
        assert!(w.any_lapse());
        assert_eq!(w.skip_or_probe(&a), Some(false));
        assert_eq!(w.skip_or_probe(&b), None, "another primary still waits");
        w.lock().get_mut(&a).unwrap().probed -= PROBE_GAP;
        assert_eq!(w.skip_or_probe(&a), Some(true));
        assert_eq!(w.skip_or_probe(&a), Some(false));
        w.back(&a, "a");
        assert_eq!(w.skip_or_probe(&a), None);
        assert!(!w.any_lapse());
    }
}

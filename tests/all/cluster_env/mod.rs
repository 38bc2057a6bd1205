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

mod cluster;
mod sentinel;
mod servers;
mod tls;
mod worker;

use std::time::Duration;

pub use crate::support::{stoker, stoker_ok};
pub use cluster::{Cluster, create_cluster, node_args};
pub use sentinel::{MASTER, Sentinels};
pub use servers::{free_ports, fresh_dir, pid_of, query, server, spawn};
pub use tls::{certs, tls_args};
pub use worker::Stoker;

/// How long a deployment may take to come up.
const START: Duration = Duration::from_secs(60);

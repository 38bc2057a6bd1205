//! The Redis key layout: a documented public contract.
//!
//! Per queue, all under the hash tag `{q:QUEUE}`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `stoker:{q:QUEUE}:pending` | list | job payloads waiting; `LPUSH` to enqueue, fetched from the right |
//! | `stoker:{q:QUEUE}:inflight:WORKER` | list | payloads a worker has taken and not settled |
//! | `stoker:{q:QUEUE}:fetched:WORKER` | string | Redis Cluster: `NONCE\nREPLY` of the worker's last fetch (MessagePack), for 60 s, so a fetch redis-rs sends again gets the jobs the first run took |
//! | `stoker:{q:QUEUE}:scheduled` | sorted set | payloads due later, scored by due time (ms, Redis time) |
//! | `stoker:{q:QUEUE}:retry` | sorted set | payloads of failed jobs waiting for their next attempt |
//! | `stoker:{q:QUEUE}:dead` | sorted set | ids of dead jobs, scored by time of death; capped |
//! | `stoker:{q:QUEUE}:job:ID` | hash | the job's record: state, attempts, lease, checkpoint sequence, result, error, measurements; `token` (which copy of the job is its own, see [`crate::job`]), `stalls` (`COUNT:SEQ`, see [`crate::worker::stall`]), `duplicate_of` (a dead duplicate's: the job whose id it reused) |
//! | `stoker:{q:QUEUE}:snap:ID` | string | the job's last committed snapshot (see [`crate::snapshot`]) |
//! | `stoker:{q:QUEUE}:stats` | hash | counters: `processed`, `failed`, `dead` |
//! | `stoker:{q:QUEUE}:paused` | string | present while the queue is paused: nothing is fetched from it |
//! | `stoker:{q:QUEUE}:unique:HASH` | string | the id of the job holding a unique key, with the class's TTL |
//! | `stoker:{q:QUEUE}:outbox` | list | Redis Cluster: parts of its jobs' commits that live in other hash slots (staged writes, children on other queues, batches), in commit order, until applied there (see [`super::parts`]) |
//! | `stoker:{q:QUEUE}:outbox:refused` | list | `REASON\nPART`: parts that could not apply, newest first, capped |
//! | `stoker:{q:QUEUE}:batch_outbox` | set | `BATCH JOB done\|dead`: batch members settled in this queue, not yet applied to their batch (see [`crate::batch`]) |
//!
//! And one pub/sub channel per queue, `stoker:{q:QUEUE}:wake`: Stoker's
//! scripts publish an empty message on it when a push makes the queue's
//! pending list non-empty (see [`super::wake`]).
//!
//! Per batch, all under the hash tag `{b:BATCH}` (see [`crate::batch`]):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `stoker:{b:BATCH}:batch` | hash | the batch: `total`, `created_at`, `parent`, `sealed`, `description` (when given), and per callback (`success`, `complete`) its class, queue, args, job id, when it fired and its payload |
//! | `stoker:{b:BATCH}:jobs` | set | the ids of the batch's jobs |
//! | `stoker:{b:BATCH}:done` | set | the ids of its jobs that are done |
//! | `stoker:{b:BATCH}:dead` | set | the ids of its jobs that are dead (and not done since) |
//!
//! Node-wide, under the hash tag `{stoker}`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `stoker:{stoker}:classes` | hash | class name → class (JSON: digest, queue, limits, retry) |
//! | `stoker:{stoker}:module:DIGEST` | string | a deployed component's bytes, by sha256 |
//! | `stoker:{stoker}:queues` | set | queue names in use |
//! | `stoker:{stoker}:workers` | sorted set | worker ids, scored by start time |
//! | `stoker:{stoker}:worker:ID` | string | a worker's heartbeat (JSON: id, pid, host, queues, concurrency, busy, `at_ms` the Redis time of the beat), with a TTL |
//! | `stoker:{stoker}:cron` | hash | scheduled class → the last tick enqueued (ms, Redis time) |
//! | `stoker:{stoker}:batches` | sorted set | batch ids, scored by creation time (ms, Redis time): the batches of the last 30 days ([`crate::batch::INDEXED_FOR`]), added in the step that creates each batch |
//!
//! Markers of applied parts (Redis Cluster): `stoker:{m:N}:applied:QUEUE:JOB:SEQ:PART`,
//! with a TTL, where `m:N` is a tag of the part's slot (see [`super::parts`]).
//!
//! Limiters and breakers: `stoker:{limiter:NAME}` (and `…:WINDOW` for window
//! limiters), `stoker:{breaker:ORIGIN}`. Per-class figures by minute:
//! `stoker:{c:CLASS}:m:MINUTE` (hash, kept 24 h; see [`crate::observe::rollup`]).

/// Keys of one queue.
#[derive(Clone, Debug)]
pub struct QueueKeys {
    /// The queue's name.
    pub name: String,
    base: String,
}

impl QueueKeys {
    /// The keys of queue `name`.
    pub fn new(name: &str) -> QueueKeys {
        QueueKeys {
            name: name.to_owned(),
            base: format!("stoker:{{q:{name}}}:"),
        }
    }

    /// The pending list.
    pub fn pending(&self) -> String {
        format!("{}pending", self.base)
    }

    /// A worker's in-flight list.
    pub fn inflight(&self, worker: &str) -> String {
        format!("{}inflight:{worker}", self.base)
    }

    /// A worker's last fetch on Redis Cluster (see `commands/fetch.lua`).
    pub fn fetched(&self, worker: &str) -> String {
        format!("{}fetched:{worker}", self.base)
    }

    /// The scheduled set.
    pub fn scheduled(&self) -> String {
        format!("{}scheduled", self.base)
    }

    /// The retry set.
    pub fn retry(&self) -> String {
        format!("{}retry", self.base)
    }

    /// The dead set.
    pub fn dead(&self) -> String {
        format!("{}dead", self.base)
    }

    /// The counters.
    pub fn stats(&self) -> String {
        format!("{}stats", self.base)
    }

    /// The pub/sub channel on which a job landing in the empty pending list
    /// is announced.
    pub fn wake(&self) -> String {
        format!("{}wake", self.base)
    }

    /// The pause flag.
    pub fn paused(&self) -> String {
        format!("{}paused", self.base)
    }

    /// The prefix of job record keys (the id follows).
    pub fn job_prefix(&self) -> String {
        format!("{}job:", self.base)
    }

    /// A job's record.
    pub fn job(&self, id: &str) -> String {
        format!("{}job:{id}", self.base)
    }

    /// The prefix of snapshot keys (the id follows).
    pub fn snapshot_prefix(&self) -> String {
        format!("{}snap:", self.base)
    }

    /// A job's snapshot.
    pub fn snapshot(&self, id: &str) -> String {
        format!("{}snap:{id}", self.base)
    }

    /// Batch members settled in this queue, not yet applied to their batch.
    pub fn batch_outbox(&self) -> String {
        format!("{}batch_outbox", self.base)
    }

    /// Parts of this queue's jobs' commits to apply in other slots (Redis
    /// Cluster; see [`super::parts`]).
    pub fn outbox(&self) -> String {
        format!("{}outbox", self.base)
    }

    /// Parts taken off the outbox because they could not apply, with why.
    pub fn refused_parts(&self) -> String {
        format!("{}outbox:refused", self.base)
    }
}

/// Keys of one batch.
#[derive(Clone, Debug)]
pub struct BatchKeys {
    /// The batch's id.
    pub id: String,
    base: String,
}

impl BatchKeys {
    /// The keys of batch `id`.
    pub fn new(id: &str) -> BatchKeys {
        BatchKeys {
            id: id.to_owned(),
            base: format!("stoker:{{b:{id}}}:"),
        }
    }

    /// The batch's hash.
    pub fn meta(&self) -> String {
        format!("{}batch", self.base)
    }

    /// The ids of its jobs.
    pub fn jobs(&self) -> String {
        format!("{}jobs", self.base)
    }

    /// The ids of its done jobs.
    pub fn done(&self) -> String {
        format!("{}done", self.base)
    }

    /// The ids of its dead jobs.
    pub fn dead(&self) -> String {
        format!("{}dead", self.base)
    }
}

/// A node-wide key.
pub fn global(name: &str) -> String {
    format!("stoker:{{stoker}}:{name}")
}

/// The class registry.
pub fn classes() -> String {
    global("classes")
}

/// A stored module.
pub fn module(digest: &str) -> String {
    global(&format!("module:{digest}"))
}

/// Scheduled classes' last enqueued ticks.
pub fn cron() -> String {
    global("cron")
}

/// The set of queue names.
pub fn queues() -> String {
    global("queues")
}

/// The worker registry.
pub fn workers() -> String {
    global("workers")
}

/// The index of batches by creation time.
pub fn batches() -> String {
    global("batches")
}

/// A worker's heartbeat key.
pub fn heartbeat(worker: &str) -> String {
    global(&format!("worker:{worker}"))
}

//! What Redis holds of jobs: their records and documents, the pending and
//! in-flight lists, waits on their states, and the no-job-lost check; plus
//! raw commands on the test's database.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use stoker::inspect::JobRecord;
use stoker::queue::keys::QueueKeys;

use super::{SETTLE, TestEnv, wait_until};

impl TestEnv {
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

    /// Waits until job `id` of `default` is done or dead (at most
    /// [`SETTLE`]); returns its document.
    pub fn settle(&self, id: &str) -> Value {
        self.wait_settled("default", &[id.to_owned()], SETTLE)
            .remove(0)
    }

    /// Waits until job `id` of `default` has committed checkpoint `min` or a
    /// later one (at most [`SETTLE`]); returns the sequence seen.
    pub fn wait_seq(&self, id: &str, min: u64) -> u64 {
        let mut seq = 0;
        wait_until(
            SETTLE,
            &format!("job {id} to reach checkpoint {min}"),
            || {
                seq = num(&fields(self, id), "seq");
                seq >= min
            },
        );
        seq
    }

    /// Runs one Redis command on the test's database.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        self.conn
            .borrow_mut()
            .query(cmd)
            .unwrap_or_else(|e| panic!("redis: {e}"))
    }

    /// Runs a pipeline on the test's database.
    pub fn query_pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> T {
        self.conn
            .borrow_mut()
            .query_pipe(pipe)
            .unwrap_or_else(|e| panic!("redis: {e}"))
    }

    /// Redis's clock (`TIME`), in ms since the epoch: the clock schedules use.
    pub fn redis_now_ms(&self) -> u64 {
        let (secs, micros): (u64, u64) = self.query(&redis::cmd("TIME"));
        secs * 1000 + micros / 1000
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

    /// The first invariant (no job lost), checked at a quiet moment (no worker
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

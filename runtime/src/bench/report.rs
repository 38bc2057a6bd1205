//! How each benchmark's figures read on a terminal: the tables `stoker bench`
//! prints without `--json`, one `Display` per kind of figures.

use std::fmt::{self, Display, Formatter};

use super::batches::BatchFigures;
use super::checkpoints::{CheckpointFigures, N_COMMITS};
use super::dashboard::{DashboardFigures, REQUESTS};
use super::fanout::{CHECKPOINT_MS, FanoutFigures};
use super::host_calls::HostCallFigures;
use super::limiters::{DECISIONS, LimiterFigures};
use super::waiting::WaitingFigures;
use super::{BoundsFigures, DrainFigures, MeteringFigures};
use crate::render::bytes;

impl Display for DrainFigures {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self.queues.as_slice() {
            [_] => writeln!(
                f,
                "drain: {} no-op jobs, one worker process, concurrency {}",
                self.jobs, self.concurrency
            )?,
            queues => writeln!(
                f,
                "drain: {} no-op jobs over {} queues ({}) on {} primaries, one worker process, concurrency {}",
                self.jobs,
                queues.len(),
                queues.join(", "),
                self.primaries,
                self.concurrency
            )?,
        }
        writeln!(
            f,
            "  throughput            {:>10.0} jobs/s",
            self.jobs_per_sec
        )?;
        writeln!(
            f,
            "  worker CPU            {:>10.1} us/job",
            self.worker_cpu_us_per_job
        )?;
        writeln!(
            f,
            "  redis CPU             {:>10.1} us/job",
            self.redis_cpu_us_per_job
        )?;
        if self.redis_nodes > 1 {
            writeln!(
                f,
                "    of which replicas   {:>10.1} us/job  (redis CPU summed over {} nodes)",
                self.redis_replica_cpu_us_per_job, self.redis_nodes
            )?;
        }
        writeln!(
            f,
            "  total CPU             {:>10.1} us/job",
            self.worker_cpu_us_per_job + self.redis_cpu_us_per_job
        )?;
        writeln!(f, "  instantiate+run p50   {:>10} us", self.run_p50_us)?;
        writeln!(f, "  instantiate+run p99   {:>10} us", self.run_p99_us)?;
        writeln!(
            f,
            "  worker peak RSS       {:>10}",
            bytes(self.worker_peak_rss_bytes)
        )?;
        writeln!(
            f,
            "  redis time by command (a script's includes its commands){}:",
            if self.redis_nodes > 1 {
                ", primaries"
            } else {
                ""
            }
        )?;
        for c in self.redis_commands.iter().take(10) {
            writeln!(
                f,
                "    {:<18} {:>6.3} calls/job {:>7.2} us/job",
                c.command, c.calls_per_job, c.us_per_job
            )?;
        }
        Ok(())
    }
}

impl Display for MeteringFigures {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "metering: fib({}), median of {} runs, one engine per kind",
            self.n, self.runs
        )?;
        for m in &self.kinds {
            writeln!(
                f,
                "  {:<11} {:>9.1} ms  {:>5.2}x",
                m.metering, m.median_ms, m.ratio
            )?;
        }
        Ok(())
    }
}

impl Display for BoundsFigures {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bounds: median of {} runs each, alternated; 4 GiB reservation (checks elided) \
             vs {} (checks explicit), fuel on",
            self.runs,
            bytes(self.reservation_bytes)
        )?;
        writeln!(
            f,
            "  {:<26} {:>10} {:>10} {:>7}",
            "", "4 GiB", "sized", "ratio"
        )?;
        for w in &self.work {
            writeln!(
                f,
                "  {:<26} {:>7.1} ms {:>7.1} ms {:>6.2}x",
                w.work, w.full_ms, w.sized_ms, w.ratio
            )?;
        }
        Ok(())
    }
}

impl Display for WaitingFigures {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "waiting: K jobs each parked in one HTTP call to a slow local server, one worker \
             (--concurrency K, --max-memory {})",
            bytes(self.max_memory_bytes)
        )?;
        writeln!(
            f,
            "  {:>6} {:>11} {:>11} {:>11} {:>11} {:>10} {:>10} {:>12} {:>7}",
            "K", "idle RSS", "waiting", "anon", "file", "per job", "RSS/K", "addr space", "ramp"
        )?;
        for r in &self.rounds {
            writeln!(
                f,
                "  {:>6} {:>11} {:>11} {:>11} {:>11} {:>10} {:>10} {:>8.1} TiB {:>6.1}s",
                r.jobs,
                bytes(r.idle_rss_bytes),
                bytes(r.waiting_rss_bytes),
                bytes(r.waiting_rss_anon_bytes),
                bytes(r.waiting_rss_file_bytes),
                bytes(r.per_job_bytes as u64),
                bytes(r.per_job_total_bytes as u64),
                r.address_space_bytes as f64 / (1u64 << 40) as f64,
                r.ramp_secs
            )?;
        }
        Ok(())
    }
}

impl Display for CheckpointFigures {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let n = N_COMMITS;
        writeln!(
            f,
            "checkpoints: Redis {}, workers as separate processes",
            self.redis
        )?;
        writeln!(
            f,
            "  commit, 1 KiB state              p50 {:>6} us  p99 {:>6} us  ({n} commits)",
            self.commit_p50_us, self.commit_p99_us
        )?;
        writeln!(
            f,
            "  commit, 1 KiB state + 10 writes  p50 {:>6} us  p99 {:>6} us  ({n} commits)",
            self.commit_writes_p50_us, self.commit_writes_p99_us
        )?;
        writeln!(
            f,
            "  commit, 1 KiB state + 10 jobs    p50 {:>6} us  p99 {:>6} us  ({n} commits)",
            self.commit_children_p50_us, self.commit_children_p99_us
        )?;
        if let Some((p50, p99)) = self.apply_delay_us {
            writeln!(
                f,
                "  commit -> 10 parts applied       p50 {p50:>6} us  p99 {p99:>6} us  ({n} commits, 10 slots)",
            )?;
        }
        writeln!(
            f,
            "  checkpoint after every item      {:>10.0} items/s",
            self.items_per_sec
        )?;
        writeln!(
            f,
            "  SIGTERM -> 8 jobs re-queued      {:>10} ms (worker exited at {} ms)",
            self.sigterm_to_requeued_ms, self.sigterm_to_exit_ms
        )?;
        writeln!(
            f,
            "  kill -9 -> resumed elsewhere     {:>10} ms (heartbeat TTL {} ms)",
            self.kill9_to_resumed_ms, self.heartbeat_ttl_ms
        )
    }
}

impl Display for LimiterFigures {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "limiters: one decision (script + round trip), {DECISIONS} per kind"
        )?;
        for l in &self.0 {
            writeln!(
                f,
                "  {:<11} p50 {:>5} us  p99 {:>5} us",
                l.kind, l.p50_us, l.p99_us
            )?;
        }
        Ok(())
    }
}

impl Display for HostCallFigures {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        // ns below 10 us, us above.
        let t = |ns: f64| {
            if ns < 10_000.0 {
                format!("{ns:.0} ns")
            } else {
                format!("{:.1} us", ns / 1e3)
            }
        };
        let row = |f: &mut Formatter<'_>, label: &str, n: String, a: String, b: String| {
            let line = format!("  {label:<36} {n:>8} {a:>10} {b:>10}");
            writeln!(f, "{}", line.trim_end())
        };
        let none = String::new;
        let runs = self.runs;
        writeln!(
            f,
            "host calls from a job: (attempt making n calls - attempt making none) / n"
        )?;
        row(
            f,
            &format!("median of {runs} runs"),
            "n".into(),
            "wall/call".into(),
            "cpu/call".into(),
        )?;
        for c in &self.calls {
            row(f, c.op, c.n.to_string(), t(c.wall_ns), t(c.cpu_ns))?;
        }
        let base = format!("{:.1} us", self.baseline_run_us);
        row(f, "attempt making no call", none(), base, none())?;
        writeln!(
            f,
            "the same round trips from the bench process, right after each run above"
        )?;
        for d in [&self.redis_direct, &self.http_direct] {
            row(f, d.what, d.n.to_string(), t(d.wall_ns), none())?;
        }
        writeln!(f, "job / direct, median of the {runs} runs' ratios")?;
        let x = |r: f64| format!("{r:.2}x");
        row(
            f,
            "redis_get / redis GET",
            none(),
            x(self.redis_ratio),
            none(),
        )?;
        row(
            f,
            "http_get / hyper GET",
            none(),
            x(self.http_ratio),
            none(),
        )
    }
}

impl Display for DashboardFigures {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "dashboard: {} pending + {} dead jobs in one queue (filled in {:.1} s), {REQUESTS} requests per page, a connection each",
            self.pending, self.dead, self.fill_secs
        )?;
        for p in &self.pages {
            writeln!(
                f,
                "  {:<44} p50 {:>7.1} ms  p99 {:>7.1} ms  {:>7}",
                p.path,
                p.p50_ms,
                p.p99_ms,
                bytes(p.bytes as u64)
            )?;
        }
        Ok(())
    }
}

impl Display for BatchFigures {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "batches: {} no-op jobs per run, one worker process, concurrency {}",
            self.jobs, self.concurrency
        )?;
        writeln!(
            f,
            "  redis CPU, plain jobs        {:>8.1} us/job  ({:.0} jobs/s)",
            self.plain_redis_cpu_us_per_job, self.plain_jobs_per_sec
        )?;
        writeln!(
            f,
            "  redis CPU, batch members     {:>8.1} us/job  ({:.0} jobs/s, callback included)",
            self.batch_redis_cpu_us_per_job, self.batch_jobs_per_sec
        )?;
        writeln!(
            f,
            "  overhead per batch member    {:>8.1} us",
            self.overhead_us_per_member
        )
    }
}

impl Display for FanoutFigures {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fanout: a `mileage` parent committing {} children (checkpoint every {CHECKPOINT_MS} ms), each staging INCRBY mileage:total; one worker process, concurrency {}, Redis {}",
            self.children, self.concurrency, self.redis
        )?;
        writeln!(
            f,
            "  {:<13} {:>5} {:>9} {:>11} {:>13} {:>13} {:>10}  queues (parent, children)",
            "layout", "round", "wall ms", "children/s", "worker us/ch", "redis us/ch", "replicas"
        )?;
        for r in &self.runs {
            writeln!(
                f,
                "  {:<13} {:>5} {:>9.1} {:>11.0} {:>13.1} {:>13.1} {:>10.1}  {}, {} ({} primaries)",
                r.layout,
                r.round,
                r.wall_ms,
                r.children_per_sec,
                r.worker_cpu_us_per_child,
                r.redis_cpu_us_per_child,
                r.redis_replica_cpu_us_per_child,
                r.parent_queue,
                r.children_queue,
                r.primaries
            )?;
        }
        if let Some(o) = &self.cross_slot_overhead {
            writeln!(
                f,
                "  across slots - one slot, per child (means): wall {:+.1} us, worker CPU {:+.1} us, redis CPU {:+.1} us",
                o.wall_us_per_child, o.worker_cpu_us_per_child, o.redis_cpu_us_per_child
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::MeteringFigure;
    use super::super::limiters::LimiterFigure;
    use super::*;

    fn drain(queues: &[&str], nodes: usize) -> DrainFigures {
        DrainFigures {
            jobs: 20000,
            concurrency: 64,
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            primaries: queues.len().min(nodes),
            jobs_per_sec: 41234.4,
            worker_cpu_us_per_job: 15.52,
            redis_cpu_us_per_job: 15.71,
            redis_replica_cpu_us_per_job: if nodes > 1 { 4.0 } else { 0.0 },
            redis_nodes: nodes,
            run_p50_us: 5,
            run_p99_us: 19,
            worker_peak_rss_bytes: 18 << 20,
            redis_commands: vec![super::super::CommandFigure {
                command: "evalsha".into(),
                calls_per_job: 0.032,
                us_per_job: 13.8,
            }],
        }
    }

    #[test]
    fn the_drain_on_one_server_reads_as_before() {
        assert_eq!(
            drain(&["bench"], 1).to_string(),
            "drain: 20000 no-op jobs, one worker process, concurrency 64\n\
             \x20 throughput                 41234 jobs/s\n\
             \x20 worker CPU                  15.5 us/job\n\
             \x20 redis CPU                   15.7 us/job\n\
             \x20 total CPU                   31.2 us/job\n\
             \x20 instantiate+run p50            5 us\n\
             \x20 instantiate+run p99           19 us\n\
             \x20 worker peak RSS         18.0 MiB\n\
             \x20 redis time by command (a script's includes its commands):\n\
             \x20   evalsha             0.032 calls/job   13.80 us/job\n"
        );
        let cluster = drain(&["bench", "bench-2", "bench-7"], 6).to_string();
        assert!(cluster.starts_with(
            "drain: 20000 no-op jobs over 3 queues (bench, bench-2, bench-7) on 3 primaries,"
        ));
        assert!(cluster.contains(
            "\n    of which replicas          4.0 us/job  (redis CPU summed over 6 nodes)\n"
        ));
    }

    #[test]
    fn tables_read_as_before_and_json_is_unchanged() {
        let limiters = LimiterFigures(vec![LimiterFigure {
            kind: "rate",
            p50_us: 80,
            p99_us: 150,
        }]);
        assert_eq!(
            limiters.to_string(),
            "limiters: one decision (script + round trip), 2000 per kind\n  \
             rate        p50    80 us  p99   150 us\n"
        );
        assert_eq!(
            serde_json::to_string(&limiters).unwrap(),
            r#"[{"kind":"rate","p50_us":80,"p99_us":150}]"#
        );
        let metering = MeteringFigures {
            n: 32,
            runs: 9,
            kinds: vec![MeteringFigure {
                metering: "fuel",
                median_ms: 12.34,
                ratio: 1.5,
            }],
        };
        assert_eq!(
            metering.to_string(),
            "metering: fib(32), median of 9 runs, one engine per kind\n  \
             fuel             12.3 ms   1.50x\n"
        );
        assert_eq!(
            serde_json::to_string(&metering).unwrap(),
            r#"[{"metering":"fuel","median_ms":12.34,"ratio":1.5}]"#
        );
    }
}

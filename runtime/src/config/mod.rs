//! `stoker.toml`: the job classes a deploy declares, and their quotas.
//!
//! ```toml
//! [classes.hello]
//! module = "../target/wasm32-wasip2/guest/hello.wasm"  # relative to this file
//! queue = "default"     # default "default"
//! cpu = "5s"            # CPU time per attempt; default 5s
//! fuel = 2_000_000_000  # optional: a deterministic instruction budget as well
//! memory = "100MiB"     # linear memory per attempt; default 100 MiB
//! timeout = "30s"       # wall-clock per attempt; default 30s
//! retry = 25            # retries after the first attempt; default 25
//! log = "64KiB"         # job log (host log + stdout + stderr) kept; default 64 KiB
//! retained = "10MiB"    # largest checkpointed state; default 10 MiB
//! max_slice = "5m"      # optional: ask a checkpointing job to yield after this long
//! max_stalls = 100      # yields in a row without a checkpoint before the job is dead; default 100
//! max_children = 100_000 # child jobs one job may enqueue in all; default 100,000
//! max_depth = 32        # depth of a job tree below its root; default 32
//!
//! [classes.hello.redis]  # optional: Redis access for the job (none by default)
//! read = ["catalog"]     # key prefixes the job may read
//! write = ["stats:hello"] # key prefixes the job may write (and read)
//! ops = 10_000           # operations per attempt; default 10,000
//! ops_per_sec = 1_000    # operations per second per attempt; default 1,000
//! reply = "16MiB"        # reply bytes per attempt; default 16 MiB
//! ```
//!
//! Every quota is a decision about what one attempt may use; the sandbox enforces it
//! and the job record shows what was used:
//!
//! | key | limits | unit | default | at the limit |
//! |---|---|---|---|---|
//! | `cpu` | CPU time of the attempt (guest code and host calls), measured per thread | duration | 5 s | stopped at the next yield point (at most ~1 ms later), kind `cpu_limit` |
//! | `fuel` | wasm instructions executed (wasmtime fuel); same args, same module, same count | integer | none | trap at once, kind `cpu_limit` |
//! | `memory` | linear memory of the attempt | bytes (`KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`) | 100 MiB | the growing allocation traps, kind `memory_limit` |
//! | `timeout` | wall-clock time of the attempt | duration | 30 s | stopped at the next yield point, kind `deadline` |
//! | `retry` | retries after a failed attempt, with Sidekiq's backoff | count | 25 | the job goes to the dead set |
//! | `log` | bytes of job log kept | bytes | 64 KiB | further lines dropped and counted |
//! | `retained` | state a job checkpoints (its snapshot, before compression) | bytes | 10 MiB | the checkpoint fails the job, kind `snapshot_limit` |
//! | `redis.read` / `redis.write` | keys a job may read / write: a key is inside prefix `p` when it is `p` or starts with `p:` | prefixes | none | `denied` error to the job |
//! | `redis.ops` | Redis operations of one attempt (reads, writes, staged writes) | count | 10,000 | `quota` error to the job |
//! | `redis.ops_per_sec` | Redis operations per second of one attempt | count | 1,000 | the operation waits for its turn |
//! | `redis.reply` | bytes of Redis replies one attempt reads | bytes | 16 MiB | `quota` error to the job |
//! | `max_children` | child jobs one job enqueues in all (every checkpoint, its completion, every attempt; batch members included), counted on its record | count | 100,000 | `enqueue` returns an error to the job naming the limit |
//! | `max_depth` | depth of a job in its tree: a job enqueued from outside is at 0, a child at its parent's + 1 (a batch callback likewise); a job at `max_depth` enqueues no children | count | 32 | `enqueue` returns an error to the job naming the limit |
//! | `max_slice` | wall-clock time of one attempt of a checkpointing job | duration | none | asked to yield at its next yield point; re-queued at the back without using a retry |
//! | `max_stalls` | attempts in a row that yield of the job's own accord without committing a checkpoint (yields the host asked for count too, against 10 times this) | count | 100 | each such yield backs off first (10 ms doubling, up to 60 s); past the bound the job is dead, kind `no_progress` (see [`crate::worker::stall`]) |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::job::check_name;

mod access;
mod class;
mod limiters;
pub mod origin;
mod schedule;
mod shaping;
mod units;

pub use access::*;
pub use class::*;
pub use limiters::*;
pub use schedule::*;
pub use shaping::*;
pub use units::*;

/// Default CPU time per attempt: the guideline's "<= 5 s" for ordinary jobs.
pub const DEFAULT_CPU: Duration = Duration::from_secs(5);
/// Default linear memory per attempt: the guideline's "allocated <= 100 MB".
pub const DEFAULT_MEMORY: u64 = 100 << 20;
/// Default wall-clock time per attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default retries (Sidekiq's).
pub const DEFAULT_RETRY: u32 = 25;
/// Default job log kept per attempt.
pub const DEFAULT_LOG: u64 = 64 << 10;
/// The longest `timeout`, `cpu` or `max_slice` a class may set: 365 days,
/// in ms. Longer is refused at deploy: the worker adds these to its clocks.
pub const MAX_DURATION_MS: u64 = 365 * 24 * 3600 * 1000;
/// The largest memory cap a class may ask for: a 32-bit wasm memory.
pub const MAX_MEMORY: u64 = 4 << 30;
/// Default cap on checkpointed state: the guideline's "retained <= 10 MB".
pub const DEFAULT_RETAINED: u64 = 10 << 20;
/// Default bound on the child jobs one job enqueues in all: ten times what
/// one commit may carry (10,000), so a fan-out job has room for ten full
/// checkpoints, while a job that enqueues in a loop stops after seconds of
/// Redis work instead of filling it.
pub const DEFAULT_MAX_CHILDREN: u64 = 100_000;
/// Stalls in a row after which a job is dead (`max_stalls` in `stoker.toml`).
/// With the backoff, a job that yields at once on every attempt is dead
/// after about 90 minutes.
pub const DEFAULT_MAX_STALLS: u32 = 100;
/// Default bound on the depth of a job tree: deeper than any designed
/// pipeline of jobs enqueueing jobs, yet a job that enqueues itself stops
/// after 32 generations (with one child each, 33 jobs; a tree that forks
/// stays within each job's `max_children`).
pub const DEFAULT_MAX_DEPTH: u32 = 32;
/// The default queue.
pub const DEFAULT_QUEUE: &str = "default";

/// A parsed `stoker.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Job classes by name.
    #[serde(default)]
    pub classes: BTreeMap<String, ClassSpec>,
    /// Distributed limiters by name (`[limiters.NAME]`).
    #[serde(default)]
    pub limiters: BTreeMap<String, LimiterSpec>,
    /// HTTP origins' limiters and breakers (`[destinations."https://host"]`).
    #[serde(default)]
    pub destinations: BTreeMap<String, DestinationSpec>,
    /// The directory module paths are relative to (the file's own).
    #[serde(skip)]
    pub base: PathBuf,
}

/// A manifest that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The manifest's path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or a value of the wrong form; the message names the line.
    #[error("{path}: {message}")]
    Invalid {
        /// The manifest's path.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
}

impl Manifest {
    /// Reads and checks a manifest.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut manifest = Manifest::parse(&text).map_err(|message| ManifestError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        manifest.base = path.parent().map(Path::to_owned).unwrap_or_default();
        Ok(manifest)
    }

    /// Parses and checks manifest text.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        // Every refusal names a line: the key at fault, else its table.
        let at = |table: &str, name: &str, e: String| match line_of(text, table, name, &e) {
            Some(line) => format!("line {line}: {e}"),
            None => e,
        };
        for (name, class) in &manifest.classes {
            check_name("class", name).map_err(|e| at("classes", name, e))?;
            manifest
                .check_class(class)
                .map_err(|e| match line_of(text, "classes", name, &e) {
                    Some(line) => format!("line {line}: class `{name}`: {e}"),
                    None => format!("class `{name}`: {e}"),
                })?;
        }
        for (name, spec) in &manifest.limiters {
            spec.limiter(name).map_err(|e| at("limiters", name, e))?;
        }
        for (origin, spec) in &manifest.destinations {
            spec.destination(origin, &manifest.limiters)
                .map_err(|e| at("destinations", origin, e))?;
        }
        Ok(manifest)
    }

    /// Checks one class's keys beyond their form; the message starts with the
    /// key at fault in backticks.
    fn check_class(&self, class: &ClassSpec) -> Result<(), String> {
        class.limits()?;
        if let Some(r) = &class.redis {
            r.access()?;
        }
        if let Some(h) = &class.http {
            h.access()?;
        }
        check_name("queue", &class.queue).map_err(|e| format!("`queue`: {e}"))?;
        class.schedule()?;
        if let Some(u) = &class.unique {
            u.unique()?;
        }
        class.quiet()?;
        if let Some(c) = &class.collapse {
            c.collapse()?;
            if class.unique.is_some() {
                return Err(
                    "`collapse`: `unique` refuses newer jobs, `collapse` keeps only the newest: choose one"
                        .into(),
                );
            }
        }
        for l in &class.limiters {
            if !self.limiters.contains_key(l) {
                return Err(format!(
                    "`limiters`: limiter `{l}` is not declared (add `[limiters.{l}]`)"
                ));
            }
        }
        Ok(())
    }

    /// What class `spec` may do over HTTP: its `http` table, with the limiters
    /// and breakers of the origins it may call.
    pub fn http_access(&self, spec: &ClassSpec) -> Result<HttpAccess, String> {
        let Some(http) = &spec.http else {
            return Ok(HttpAccess::default());
        };
        let mut access = http.access()?;
        for (origin, d) in &self.destinations {
            let d = d.destination(origin, &self.limiters)?;
            if access.allow.contains(&d.origin) {
                access.destinations.push(d);
            }
        }
        Ok(access)
    }

    /// The path of a class's module, resolved against the manifest's directory.
    pub fn module_path(&self, class: &ClassSpec) -> PathBuf {
        self.base.join(&class.module)
    }
}

/// The line of `stoker.toml` a problem of `[TABLE.NAME]` (a class, limiter
/// or destination) is on: the key the message starts with (`` `quiet`: ... ``
/// or `` `unique.ttl` must ... ``), else the table's.
fn line_of(text: &str, table: &str, name: &str, message: &str) -> Option<usize> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let table = root.get_ref().get(table)?.get_ref().get(name)?;
    let key = message
        .strip_prefix('`')
        .and_then(|m| m.split_once('`'))
        .map(|(k, _)| k);
    let mut at = table;
    for part in key.into_iter().flat_map(|k| k.split('.')) {
        match at.get_ref().get(part) {
            Some(v) => at = v,
            None => break,
        }
    }
    let offset = at.span().start;
    Some(text[..offset.min(text.len())].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_the_line() {
        let m = Manifest::parse("[classes.a]\nmodule = \"a.wasm\"\n").unwrap();
        assert_eq!(m.classes["a"].limits().unwrap(), Limits::default());
        assert_eq!(m.classes["a"].queue, "default");

        let err =
            Manifest::parse("[classes.a]\nmodule = \"a.wasm\"\nmemory = \"lots\"\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        let err = Manifest::parse("[classes.a]\nmodule = \"a.wasm\"\nmemroy = 1\n").unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
        let err =
            Manifest::parse("[classes.a]\nmodule = \"a.wasm\"\nmemory = \"8GiB\"\n").unwrap_err();
        assert!(err.contains("between 64KiB"), "{err}");
        let err = Manifest::parse("[classes.\"a b\"]\nmodule = \"a.wasm\"\n").unwrap_err();
        assert!(err.contains("class name"), "{err}");
    }

    #[test]
    fn job_tree_bounds_default_and_parse() {
        let m = Manifest::parse("[classes.a]\nmodule = \"a.wasm\"\n").unwrap();
        let l = m.classes["a"].limits().unwrap();
        assert_eq!((l.max_children, l.max_depth), (100_000, 32));
        let m =
            Manifest::parse("[classes.a]\nmodule = \"a.wasm\"\nmax_children = 5\nmax_depth = 0\n")
                .unwrap();
        let l = m.classes["a"].limits().unwrap();
        assert_eq!((l.max_children, l.max_depth), (5, 0));
        // A deployment recorded before the keys existed reads with the defaults.
        let mut old = serde_json::to_value(Limits::default()).unwrap();
        old.as_object_mut().unwrap().remove("max_children");
        old.as_object_mut().unwrap().remove("max_depth");
        let read: Limits = serde_json::from_value(old).unwrap();
        assert_eq!(read, Limits::default());
    }

    #[test]
    fn durations_past_a_year_are_refused_not_wrapped() {
        // Found by the config fuzz target: a bulk class's timeout (twice its
        // slice) overflowed, and a duration past u64 ms wrapped.
        let bulk = "[classes.a]\nmodule = \"a.wasm\"\nprofile = \"bulk\"\nmax_slice = \"300000000years\"\n";
        let err = Manifest::parse(bulk).unwrap_err().to_string();
        assert!(
            err.contains("line 4: class `a`: `max_slice` must be at most 365 days"),
            "{err}"
        );
        let bulk =
            "[classes.a]\nmodule = \"a.wasm\"\nprofile = \"bulk\"\nmax_slice = \"300days\"\n";
        let l = Manifest::parse(bulk).unwrap().classes["a"]
            .limits()
            .unwrap();
        assert_eq!(l.timeout_ms, MAX_DURATION_MS);
        let long = "[classes.a]\nmodule = \"a.wasm\"\ntimeout = \"584942418years\"\n";
        let err = Manifest::parse(long).unwrap_err().to_string();
        assert!(
            err.contains("class `a`: `timeout` must be at most 365 days"),
            "{err}"
        );
    }

    #[test]
    fn class_problems_name_their_line() {
        let text = "[classes.a]\nmodule = \"a.wasm\"\n\n[classes.b]\nmodule = \"b.wasm\"\nquiet = [\"10:00-12:00\", \"11:00-13:00\"]\n";
        let err = Manifest::parse(text).unwrap_err();
        assert!(
            err.starts_with("line 6: class `b`: `quiet`: windows"),
            "{err}"
        );
        let err = Manifest::parse(&text.replace("quiet", "redis = { read = [\"stoker\"] }\n#"))
            .unwrap_err();
        assert!(err.starts_with("line 6: class `b`: `redis.read`"), "{err}");
    }

    #[test]
    fn every_refusal_names_its_line() {
        // Found by fuzzing (`fuzz/fuzz_targets/config.rs`): refusals of a
        // class name, a limiter or a destination named no line.
        let class = "[classes.a]\nmodule = \"a.wasm\"\n\n";
        for (text, line) in [
            (
                format!("{class}[classes.\"a b\"]\nmodule = \"b.wasm\"\n"),
                4,
            ),
            (
                format!("{class}[limiters.l]\nkind = \"rate\"\nlimit = 0\n"),
                4,
            ),
            (
                format!("{class}[limiters.l]\nkind = \"rate\"\nlimit = 1\n"),
                4,
            ),
            (format!("{class}[destinations.\"api.example.com\"]\n"), 4),
            (
                format!("{class}[destinations.\"https://a.com\"]\nlimiters = [\"x\"]\n"),
                4,
            ),
        ] {
            let err = Manifest::parse(&text).unwrap_err();
            assert!(err.starts_with(&format!("line {line}: ")), "{err}\n{text}");
        }
    }

    #[test]
    fn destinations_attach_to_the_classes_that_may_call_them() {
        let text = r#"
[limiters.api]
kind = "rate"
limit = 5
period = "1s"
wait_timeout = "250ms"

[destinations."https://api.example.com"]
limiters = ["api"]
breaker = { failures = 3, cool_down = "10s" }

[classes.a]
module = "a.wasm"
http = { allow = ["https://api.example.com"] }

[classes.b]
module = "b.wasm"
http = { allow = ["https://other.example.com"] }
"#;
        let m = Manifest::parse(text).unwrap();
        let a = m.http_access(&m.classes["a"]).unwrap();
        assert_eq!(a.destinations.len(), 1);
        let d = &a.destinations[0];
        assert_eq!(d.limiters[0].wait_ms, 250);
        assert_eq!(
            d.breaker,
            Some(Breaker {
                failures: 3,
                cool_down_ms: 10_000
            })
        );
        assert!(
            m.http_access(&m.classes["b"])
                .unwrap()
                .destinations
                .is_empty()
        );

        let undeclared = text.replace("limiters = [\"api\"]", "limiters = [\"nope\"]");
        let err = Manifest::parse(&undeclared).unwrap_err();
        assert!(err.contains("limiter `nope` is not declared"), "{err}");
        let no_failures = text.replace("failures = 3", "failures = 0");
        assert!(
            Manifest::parse(&no_failures)
                .unwrap_err()
                .contains("breaker")
        );
        let bad_origin = text.replace(
            "[destinations.\"https://api.example.com\"]",
            "[destinations.\"api.example.com\"]",
        );
        let err = Manifest::parse(&bad_origin).unwrap_err();
        assert!(err.contains("destination `api.example.com`"), "{err}");
    }
}

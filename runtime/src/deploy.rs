//! Deploy: validate job modules against their classes' caps, store them
//! content-addressed in the [`crate::registry`], and point each class at its
//! module's digest. All or nothing: a refused deploy stores nothing.

use std::collections::HashMap;
use std::path::Path;

use redis::AsyncCommands;

use crate::config::{Manifest, RedisAccess};
use crate::queue::{Conn, keys};
use crate::registry::{Class, digest};
use crate::sandbox::shape::mib;
use crate::sandbox::{DEFAULT_POOL_MEMORY, MAX_MODULE_BYTES, Sandbox, SandboxConfig};

/// What a deploy did for one class.
#[derive(Clone, Debug)]
pub struct Deployed {
    /// The class as stored.
    pub class: Class,
    /// The module's size.
    pub module_bytes: usize,
    /// Whether the module was new to Redis.
    pub new_module: bool,
    /// What the deploy accepted but the operator should know (a class cap
    /// above the workers' pool, clamped at run time).
    pub warnings: Vec<String>,
}

/// A refused deploy: every problem found, each naming its class.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The manifest or a module is invalid; nothing was stored.
    #[error("deploy refused:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<String>),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Validates every class of `manifest` and, only if all are valid, stores their
/// modules and classes; modules are checked against workers with the default
/// pool ([`DEFAULT_POOL_MEMORY`], the workers' default `--max-memory`).
pub async fn deploy(conn: &mut Conn, manifest: &Manifest) -> Result<Vec<Deployed>, DeployError> {
    deploy_for(conn, manifest, DEFAULT_POOL_MEMORY).await
}

/// [`deploy`] for workers whose pool holds `pool_memory_bytes` per memory
/// (their `--max-memory`; `stoker deploy --max-memory`). Each module is checked
/// against its own class's caps and that pool (see [`SandboxConfig`]): its
/// shape before anything is compiled, then a bounded compile. A class whose
/// `memory` is above the pool is deployed with a warning: its jobs get the
/// pool's size on such workers.
pub async fn deploy_for(
    conn: &mut Conn,
    manifest: &Manifest,
    pool_memory_bytes: u64,
) -> Result<Vec<Deployed>, DeployError> {
    if manifest.classes.is_empty() {
        return Err(DeployError::Refused(vec![
            "the manifest declares no `[classes.NAME]`".into(),
        ]));
    }
    let sandbox = Sandbox::new(&SandboxConfig {
        concurrency: 1,
        max_memory_bytes: pool_memory_bytes,
        cache_dir: None,
    })
    .map_err(|e| DeployError::Refused(vec![e.to_string()]))?;

    let mut problems = Vec::new();
    let mut ready = Vec::new();
    // Compile-and-link verdicts by digest: a module is compiled once however
    // many classes use it.
    let mut compiled: HashMap<String, Result<(), String>> = HashMap::new();
    for (name, spec) in &manifest.classes {
        let path = manifest.module_path(spec);
        let limits = match spec.limits() {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!("class `{name}`: {e}"));
                continue;
            }
        };
        let wasm = match read_module(&path) {
            Ok(w) => w,
            Err(e) => {
                problems.push(format!("class `{name}`: {e}"));
                continue;
            }
        };
        if let Err(e) = sandbox.check_shape(&wasm, limits.memory_bytes) {
            problems.push(format!("class `{name}`: module {}: {e}", path.display()));
            continue;
        }
        let verdict = compiled
            .entry(digest(&wasm))
            .or_insert_with(|| validate(&sandbox, &wasm));
        if let Err(e) = verdict {
            problems.push(format!("class `{name}`: module {}: {e}", path.display()));
            continue;
        }
        let mut warnings = Vec::new();
        if limits.memory_bytes > pool_memory_bytes {
            warnings.push(format!(
                "class `{name}`: `memory` is {} but the workers' pool holds {} per job \
                 (`--max-memory`); its jobs get at most {} on such workers (start the workers, \
                 and deploy, with a larger `--max-memory` to give them more)",
                mib(limits.memory_bytes),
                mib(pool_memory_bytes),
                mib(pool_memory_bytes),
            ));
        }
        let refused = |e: String| DeployError::Refused(vec![format!("class `{name}`: {e}")]);
        if spec.max_stalls == Some(0) {
            return Err(refused("`max_stalls` must be at least 1".into()));
        }
        let (retry_policy, retry) = spec.retry_policy();
        let mut http = manifest.http_access(spec).map_err(refused)?;
        // A class that calls APIs is not retried as a whole: its requests are,
        // each with its idempotency key.
        http.retry_any_method = retry_policy == crate::config::RetryPolicy::CallsApis;
        let class = Class {
            name: name.clone(),
            digest: digest(&wasm),
            queue: spec.queue.clone(),
            limits,
            retry,
            retry_policy,
            max_stalls: spec.max_stalls.unwrap_or(crate::config::DEFAULT_MAX_STALLS),
            profile: spec.profile,
            quiet: spec.quiet().map_err(refused)?,
            redis: match &spec.redis {
                Some(r) => r.access().map_err(|e| DeployError::Refused(vec![e]))?,
                None => RedisAccess::default(),
            },
            http,
            limiters: spec
                .limiters
                .iter()
                .map(|l| match manifest.limiters.get(l) {
                    Some(s) => s.limiter(l),
                    None => Err(format!("limiter `{l}` is not declared")),
                })
                .collect::<Result<_, _>>()
                .map_err(|e| DeployError::Refused(vec![e]))?,
            schedule: spec
                .schedule()
                .map_err(|e| DeployError::Refused(vec![format!("class `{name}`: {e}")]))?,
            unique: spec
                .unique
                .as_ref()
                .map(|u| u.unique())
                .transpose()
                .map_err(|e| DeployError::Refused(vec![format!("class `{name}`: {e}")]))?,
            collapse: spec
                .collapse
                .as_ref()
                .map(|c| c.collapse())
                .transpose()
                .map_err(|e| DeployError::Refused(vec![format!("class `{name}`: {e}")]))?,
        };
        ready.push((class, wasm, warnings));
    }
    if !problems.is_empty() {
        return Err(DeployError::Refused(problems));
    }

    let mut deployed = Vec::new();
    for (class, wasm, warnings) in ready {
        let new_module: bool = redis::cmd("SET")
            .arg(keys::module(&class.digest))
            .arg(&wasm)
            .arg("NX")
            .query_async::<Option<String>>(conn)
            .await?
            .is_some();
        let json = serde_json::to_string(&class).expect("a class is always encodable");
        let _: () = conn.hset(keys::classes(), &class.name, json).await?;
        let _: () = conn.sadd(keys::queues(), &class.queue).await?;
        deployed.push(Deployed {
            class,
            module_bytes: wasm.len(),
            new_module,
            warnings,
        });
    }
    Ok(deployed)
}

/// Compiles (bounded) and links one module the way deploy does, off the async
/// executor.
fn validate(sandbox: &Sandbox, wasm: &[u8]) -> Result<(), String> {
    tokio::task::block_in_place(|| sandbox.validate_compiles(wasm)).map_err(|e| e.message)
}

/// Reads a module file for deploy: a regular file of at most
/// [`MAX_MODULE_BYTES`]; never more than one byte past the limit is read, and
/// a device, FIFO or directory is refused without reading (or blocking on) it.
pub fn read_module(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display();
    let cannot = |e: std::io::Error| {
        format!(
            "cannot read module {shown}: {e} (build it first, e.g. \
             `cargo build --profile guest --target wasm32-wasip2`)"
        )
    };
    // Non-blocking, so opening a FIFO does not wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!(
            "module {shown} is not a regular file (a device, FIFO, socket or directory); \
             `module` must name a built .wasm file"
        ));
    }
    let mut wasm = Vec::with_capacity(meta.len().min(MAX_MODULE_BYTES as u64 + 1) as usize);
    file.take(MAX_MODULE_BYTES as u64 + 1)
        .read_to_end(&mut wasm)
        .map_err(cannot)?;
    if wasm.len() > MAX_MODULE_BYTES {
        return Err(format!(
            "module {shown}: the module is {} bytes; the limit is {MAX_MODULE_BYTES} bytes",
            meta.len().max(wasm.len() as u64)
        ));
    }
    Ok(wasm)
}

//! The `stoker:job/enqueue` interface: child jobs, staged for the next
//! commit; nothing reaches Redis before it ([`super::checkpoint`]).
//!
//! The capability's state is an [`EnqueueCtx`]: the job's place in its tree,
//! its class's tree bounds, and the node's class table. Job trees are bounded
//! by the class ([`TreeLimits`]): children per job in all (counted on the
//! job's record by each commit, so across attempts and crashes) and the depth
//! of the tree (a child's payload carries its depth); past a bound, `enqueue`
//! returns an error naming the limit and its knob. One commit carries at most
//! [`MAX_CHILDREN`] children of [`MAX_CHILD_BYTES`] in all.

use std::sync::Arc;

use super::job::{ClassQueues, JobLink, View};
use crate::job::Payload;
use crate::queue::commit::{self, Child};
use crate::queue::keys::QueueKeys;
use crate::queue::staged::Staged;
use crate::wit::stoker::job::enqueue as wit;

/// Most child jobs one commit may carry.
pub const MAX_CHILDREN: usize = 10_000;
/// Most bytes of child payloads one commit may carry.
pub const MAX_CHILD_BYTES: usize = 16 << 20;
/// The longest delay of a child job: a year.
pub const MAX_DELAY_MS: u64 = 365 * 24 * 3600 * 1000;

/// A class's bounds on job trees (`max_children`, `max_depth` in stoker.toml).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeLimits {
    /// Child jobs one job may enqueue in all (every checkpoint, its
    /// completion, every attempt).
    pub max_children: u64,
    /// Depth below the root a job may be enqueued at.
    pub max_depth: u32,
}

impl Default for TreeLimits {
    fn default() -> Self {
        TreeLimits {
            max_children: crate::config::DEFAULT_MAX_CHILDREN,
            max_depth: crate::config::DEFAULT_MAX_DEPTH,
        }
    }
}

/// The enqueue capability's state for one attempt (batches use it too,
/// [`super::batch`]).
pub struct EnqueueCtx {
    /// Where classes' jobs go; none outside a queue.
    pub classes: Option<Arc<dyn ClassQueues>>,
    /// The job's depth in its tree.
    pub depth: u32,
    /// Its class's bounds on trees.
    pub tree: TreeLimits,
    /// Children its record counts as committed before this attempt (read
    /// from the record at its first `enqueue`).
    children_before: Option<u64>,
}

impl EnqueueCtx {
    /// The state of a job at `depth` of its tree, bounded by `tree`.
    pub fn new(classes: Option<Arc<dyn ClassQueues>>, depth: u32, tree: TreeLimits) -> Self {
        EnqueueCtx {
            classes,
            depth,
            tree,
            children_before: None,
        }
    }

    /// The queue of `class`, `None` when it is not deployed.
    pub(super) async fn queue_of(&self, class: &str) -> Option<String> {
        match &self.classes {
            Some(c) => c.queue_of(class).await,
            None => None,
        }
    }
}

impl wit::Host for View<'_, EnqueueCtx> {
    async fn enqueue(
        &mut self,
        class: String,
        args: String,
    ) -> wasmtime::Result<Result<String, String>> {
        let (ctx, job, staged) = self.parts()?;
        Ok(stage(ctx, job, staged, class, args, None, 0).await)
    }

    async fn enqueue_in(
        &mut self,
        class: String,
        args: String,
        delay_ms: u64,
    ) -> wasmtime::Result<Result<String, String>> {
        let (ctx, job, staged) = self.parts()?;
        if delay_ms > MAX_DELAY_MS {
            return Ok(Err(format!(
                "a child job's delay is at most one year ({MAX_DELAY_MS} ms), got {delay_ms} ms"
            )));
        }
        Ok(stage(ctx, job, staged, class, args, None, delay_ms).await)
    }
}

/// Stages child job `class` with `args` (JSON), in `batch` if given, due
/// `delay_ms` after its commit.
pub(super) async fn stage(
    ctx: &mut EnqueueCtx,
    job: &mut JobLink,
    staged: &mut Staged,
    class: String,
    args: String,
    batch: Option<&str>,
    delay_ms: u64,
) -> Result<String, String> {
    if staged.children.len() >= MAX_CHILDREN {
        return Err(format!(
            "too many child jobs staged: at most {MAX_CHILDREN} per checkpoint (checkpoint more often)"
        ));
    }
    check_tree(ctx, job, staged).await?;
    crate::job::check_name("class", &class)?;
    let args: serde_json::Value =
        serde_json::from_str(&args).map_err(|e| format!("child job args are not JSON: {e}"))?;
    let Some(queue) = ctx.queue_of(&class).await else {
        return Err(format!("class `{class}` is not deployed"));
    };
    let id = commit::child_id(&job.id, job.seq + 1, staged.children.len());
    let mut payload = Payload::new(&class, args);
    payload.id = id.clone();
    payload
        .extra
        .insert("parent".into(), serde_json::Value::String(job.id.clone()));
    payload
        .extra
        .insert("depth".into(), serde_json::Value::from(ctx.depth + 1));
    if let Some(batch) = batch {
        payload
            .extra
            .insert("batch".into(), serde_json::Value::String(batch.to_owned()));
    }
    let encoded = payload.encode();
    if staged.child_bytes + encoded.len() > MAX_CHILD_BYTES {
        return Err(format!(
            "child jobs staged for one checkpoint exceed {MAX_CHILD_BYTES} bytes (checkpoint more often)"
        ));
    }
    staged.child_bytes += encoded.len();
    staged.children.push(Child {
        queue: Arc::new(QueueKeys::new(&queue)),
        id: id.clone(),
        class,
        args: payload.args.to_string(),
        payload: encoded,
        batch: batch.map(str::to_owned),
        delay_ms,
        depth: ctx.depth + 1,
    });
    Ok(id)
}

/// Checks that one more child keeps the job's tree within its class's
/// bounds: its depth, and its children in all (those its record counts, read
/// once an attempt, those committed since, those staged).
async fn check_tree(
    ctx: &mut EnqueueCtx,
    job: &mut JobLink,
    staged: &Staged,
) -> Result<(), String> {
    let TreeLimits {
        max_children,
        max_depth,
    } = ctx.tree;
    if ctx.depth >= max_depth {
        return Err(format!(
            "job tree depth limit: this job is at depth {} of its tree (a job enqueued from \
             outside is at 0) and its class allows depth {max_depth} (`max_depth` in \
             stoker.toml); no child was staged",
            ctx.depth
        ));
    }
    let before = match ctx.children_before {
        Some(n) => n,
        None => {
            let mut cmd = redis::cmd("HGET");
            cmd.arg(job.queue.job(&job.id)).arg("children");
            let n: Option<u64> = cmd.query_async(&mut job.conn).await.map_err(|e| {
                format!(
                    "Redis did not answer reading the job's child count; try again ({})",
                    crate::job::truncate(&e.to_string(), 200)
                )
            })?;
            *ctx.children_before.insert(n.unwrap_or(0))
        }
    };
    let total = before + job.enqueued + staged.children.len() as u64;
    if total >= max_children {
        return Err(format!(
            "child job limit: this job has enqueued {total} child jobs (across its checkpoints \
             and attempts) and its class allows {max_children} per job (`max_children` in \
             stoker.toml); no child was staged"
        ));
    }
    Ok(())
}

//! The `stoker:job/batch` interface: batches a running job creates.
//!
//! A batch is staged for the next commit with its callbacks (in the
//! attempt's [`Staged`]); the jobs added to it are staged as child jobs
//! naming it, through the enqueue capability ([`super::enqueue`]), whose
//! state and bounds batches share. The next commit writes the batch, sealed,
//! with its jobs ([`crate::queue::commit`]); a batch that got no jobs is
//! dropped there. Ids are derived from the job, the checkpoint and the index
//! ([`crate::batch::staged_id`]), so a step repeated after a crash stages the
//! same batch and jobs.

use super::enqueue::{EnqueueCtx, stage};
use super::job::{JobLink, View};
use crate::batch::{Callback, callback_fields};
use crate::queue::commit::StagedBatch;
use crate::queue::keys::BatchKeys;
use crate::queue::staged::Staged;
use crate::wit::stoker::job::batch as wit;

impl wit::Host for View<'_, EnqueueCtx> {
    async fn create(
        &mut self,
        on_success: Option<wit::Callback>,
        on_complete: Option<wit::Callback>,
    ) -> wasmtime::Result<Result<String, String>> {
        let (ctx, job, staged) = self.parts()?;
        Ok(create(ctx, job, staged, on_success, on_complete).await)
    }

    async fn add(
        &mut self,
        batch: String,
        class: String,
        args: String,
    ) -> wasmtime::Result<Result<String, String>> {
        let (ctx, job, staged) = self.parts()?;
        if !staged.batches.iter().any(|b| b.keys.id == batch) {
            return Ok(Err(format!(
                "batch `{batch}` was not created by this job since its last checkpoint: jobs join a batch before the checkpoint that commits it (a committed batch is sealed)"
            )));
        }
        let id = match stage(ctx, job, staged, class, args, Some(&batch), 0).await {
            Ok(id) => id,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(b) = staged.batches.iter_mut().find(|b| b.keys.id == batch) {
            b.members.push(id.clone());
        }
        Ok(Ok(id))
    }
}

async fn create(
    ctx: &mut EnqueueCtx,
    job: &JobLink,
    staged: &mut Staged,
    on_success: Option<wit::Callback>,
    on_complete: Option<wit::Callback>,
) -> Result<String, String> {
    if staged.batches.len() >= crate::batch::MAX_STAGED {
        return Err(format!(
            "too many batches staged: at most {} per checkpoint (checkpoint more often)",
            crate::batch::MAX_STAGED
        ));
    }
    let id = crate::batch::staged_id(&job.id, job.seq + 1, staged.batches.len());
    // Its callbacks are children of this job's tree: one level down.
    let mut fields = vec![("id", id.clone()), ("depth", (ctx.depth + 1).to_string())];
    for (event, cb) in crate::batch::EVENTS
        .into_iter()
        .zip([on_success, on_complete])
    {
        let Some(cb) = cb else { continue };
        crate::job::check_name("class", &cb.class).map_err(|e| format!("on_{event}: {e}"))?;
        let args: serde_json::Value = serde_json::from_str(&cb.args)
            .map_err(|e| format!("on_{event}: the callback's args are not JSON: {e}"))?;
        let Some(queue) = ctx.queue_of(&cb.class).await else {
            return Err(format!("on_{event}: class `{}` is not deployed", cb.class));
        };
        let cb = Callback {
            class: cb.class,
            queue,
            args,
        };
        fields.extend(callback_fields(&id, event, &cb));
    }
    staged.batches.push(StagedBatch {
        keys: BatchKeys::new(&id),
        fields,
        members: Vec::new(),
    });
    Ok(id)
}

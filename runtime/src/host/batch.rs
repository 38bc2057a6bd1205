//! The `stoker:job/batch` interface: batches a running job creates.
//!
//! A batch is staged in the attempt's [`JobContext`] with its callbacks; the
//! jobs added to it are staged as child jobs naming it. The next commit writes
//! the batch, sealed, with its jobs ([`crate::queue::commit`]); a batch that got
//! no jobs is dropped there. Ids are derived from the job, the checkpoint and
//! the index ([`crate::batch::staged_id`]), so a step repeated after a crash
//! stages the same batch and jobs.

use super::checkpoint::{JobContext, JobHost, stage};
use crate::batch::{Callback, callback_fields};
use crate::queue::commit::StagedBatch;
use crate::queue::keys::BatchKeys;
use crate::sandbox::bindings::stoker::job::batch as wit;

impl wit::Host for JobHost {
    async fn create(
        &mut self,
        on_success: Option<wit::Callback>,
        on_complete: Option<wit::Callback>,
    ) -> wasmtime::Result<Result<String, String>> {
        let job = self.job()?;
        Ok(create(job, on_success, on_complete).await)
    }

    async fn add(
        &mut self,
        batch: String,
        class: String,
        args: String,
    ) -> wasmtime::Result<Result<String, String>> {
        let job = self.job()?;
        if !job.batches.iter().any(|b| b.keys.id == batch) {
            return Ok(Err(format!(
                "batch `{batch}` was not created by this job since its last checkpoint: jobs join a batch before the checkpoint that commits it (a committed batch is sealed)"
            )));
        }
        let id = match stage(job, class, args, Some(&batch), 0).await {
            Ok(id) => id,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(b) = job.batches.iter_mut().find(|b| b.keys.id == batch) {
            b.members.push(id.clone());
        }
        Ok(Ok(id))
    }
}

async fn create(
    job: &mut JobContext,
    on_success: Option<wit::Callback>,
    on_complete: Option<wit::Callback>,
) -> Result<String, String> {
    if job.batches.len() >= crate::batch::MAX_STAGED {
        return Err(format!(
            "too many batches staged: at most {} per checkpoint (checkpoint more often)",
            crate::batch::MAX_STAGED
        ));
    }
    let id = crate::batch::staged_id(&job.id, job.seq + 1, job.batches.len());
    // Its callbacks are children of this job's tree: one level down.
    let mut fields = vec![("id", id.clone()), ("depth", (job.depth + 1).to_string())];
    for (event, cb) in crate::batch::EVENTS
        .into_iter()
        .zip([on_success, on_complete])
    {
        let Some(cb) = cb else { continue };
        crate::config::check_name("class", &cb.class).map_err(|e| format!("on_{event}: {e}"))?;
        let args: serde_json::Value = serde_json::from_str(&cb.args)
            .map_err(|e| format!("on_{event}: the callback's args are not JSON: {e}"))?;
        let Some(queue) = job.classes.queue_of(&cb.class).await else {
            return Err(format!("on_{event}: class `{}` is not deployed", cb.class));
        };
        let cb = Callback {
            class: cb.class,
            queue,
            args,
        };
        fields.extend(callback_fields(&id, event, &cb));
    }
    job.batches.push(StagedBatch {
        keys: BatchKeys::new(&id),
        fields,
        members: Vec::new(),
    });
    Ok(id)
}

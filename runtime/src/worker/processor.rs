//! The processor: runs one unit of work and settles it.
//!
//! Duties, in order:
//! 1. decode the payload (not a job: the dead set, `bad_payload`);
//! 2. find the class and the module the job is pinned to (missing: the dead set,
//!    `module_missing`);
//! 3. run the attempt in the sandbox under the class's limits;
//! 4. settle: done with its result; failed into retry or the dead set with the
//!    error, backtrace and log; yielded or interrupted back to the queue.
//!    Every outcome records what the attempt used.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::Instrument;

use super::{ModuleError, Node};
use crate::job::{ErrorKind, Payload};
use crate::queue::fetch::Unit;
use crate::queue::settle::Disposition;
use crate::retry::{self, Decision};
use crate::sandbox::{Attempt, Failure, RunOutcome, Usage};

/// Runs `unit` to its settlement.
pub async fn process(node: Arc<Node>, unit: Unit, cancel: watch::Receiver<bool>) {
    let payload = match Payload::decode(&unit.raw) {
        Ok(p) => p,
        Err(reason) => {
            // Recorded under the id the fetch found (its record says running),
            // or a fresh one when the payload has none.
            let id = if unit.id.is_empty() {
                crate::job::new_id()
            } else {
                unit.id.clone()
            };
            tracing::warn!(queue = %unit.queue.name, %id, %reason, "bad payload");
            let failure = Failure::permanent(ErrorKind::BadPayload, reason);
            let mut fields = failure_fields(&failure);
            fields.push(("id", id.clone()));
            let payload = String::from_utf8_lossy(&unit.raw).into_owned();
            unit.settle(&id, Disposition::Dead { payload }, fields);
            return;
        }
    };
    let span = tracing::info_span!("job", id = %payload.id, class = %payload.class, attempt = unit.attempt);
    run(node, unit, payload, cancel).instrument(span).await
}

async fn run(node: Arc<Node>, unit: Unit, mut payload: Payload, cancel: watch::Receiver<bool>) {
    let Some(class) = node.class(&payload.class).await else {
        let failure = Failure::permanent(
            ErrorKind::ModuleMissing,
            format!(
                "class `{}` is not deployed (deploy it with `stoker deploy`, then retry the job)",
                payload.class
            ),
        );
        return fail(unit, payload, failure, 0, Usage::default(), String::new());
    };
    let digest = payload
        .digest
        .clone()
        .unwrap_or_else(|| class.digest.clone());
    let module = match node.module(&digest).await {
        Ok(m) => m,
        Err(ModuleError::Redis(e)) => {
            // Not the job's fault: put it back and let the next fetch try again.
            tracing::warn!(error = %e, "cannot load module; requeueing");
            let id = payload.id.clone();
            let requeue = Disposition::Requeue {
                front: false,
                next: None,
            };
            return unit.settle(&id, requeue, Vec::new());
        }
        Err(ModuleError::Missing(m) | ModuleError::Invalid(m)) => {
            let failure = Failure::permanent(ErrorKind::ModuleMissing, m);
            return fail(
                unit,
                payload,
                failure,
                class.retry,
                Usage::default(),
                String::new(),
            );
        }
    };
    payload.digest = Some(digest);

    let args = payload.args.to_string();
    let attempt = Attempt {
        args: &args,
        snapshot: None,
        limits: &class.limits,
        cancel,
    };
    let report = node.sandbox.run(&module, attempt).await;

    let id = payload.id.clone();
    match report.outcome {
        RunOutcome::Done(result) => {
            tracing::debug!(cpu_us = report.usage.cpu_time.as_micros() as u64, "done");
            let first = payload.retry_count == 0 && unit.attempt <= 1;
            let mut fields = usage_fields(&report.usage, &module.digest, report.log, first);
            fields.push(("result", result));
            if payload.retry_count > 0 {
                // An earlier attempt failed: clear its error from the record.
                fields.extend(
                    ["error_kind", "error_message", "backtrace"].map(|f| (f, String::new())),
                );
            }
            unit.settle(&id, Disposition::Done, fields);
        }
        RunOutcome::Yielded => {
            let fields = usage_fields(&report.usage, &module.digest, report.log, false);
            unit.settle(
                &id,
                Disposition::Requeue {
                    front: false,
                    next: Some(payload.encode()),
                },
                fields,
            );
        }
        RunOutcome::Interrupted => {
            tracing::info!("interrupted by shutdown; requeued");
            let requeue = Disposition::Requeue {
                front: true,
                next: None,
            };
            unit.settle(&id, requeue, Vec::new());
        }
        RunOutcome::Failed(failure) => fail(
            unit,
            payload,
            failure,
            class.retry,
            report.usage,
            report.log,
        ),
    }
}

fn fail(
    unit: Unit,
    mut payload: Payload,
    failure: Failure,
    max_retries: u32,
    usage: Usage,
    log: String,
) {
    let decision = retry::decide(&failure, payload.retry_count, max_retries);
    tracing::warn!(kind = failure.kind.as_str(), message = %failure.message, ?decision, "attempt failed");
    let digest = payload.digest.clone().unwrap_or_default();
    let mut fields = usage_fields(&usage, &digest, log, false);
    fields.extend(failure_fields(&failure));
    payload.retry_count += 1;
    fields.push(("retry_count", payload.retry_count.to_string()));
    let id = payload.id.clone();
    let disposition = match decision {
        Decision::RetryIn(delay) => Disposition::Retry {
            delay,
            next: payload.encode(),
        },
        Decision::Dead => Disposition::Dead {
            payload: payload.encode(),
        },
    };
    unit.settle(&id, disposition, fields);
}

/// The record fields of an attempt's account. The measurements travel as one
/// field (see [`crate::job::Measured`]): each record field costs Redis a
/// listpack lookup per write, and this write happens for every job.
fn usage_fields(
    usage: &Usage,
    digest: &str,
    log: String,
    first: bool,
) -> Vec<(&'static str, String)> {
    let measured = crate::job::Measured {
        fuel: usage.fuel_used,
        cpu_us: usage.cpu_time.as_micros() as u64,
        peak: usage.peak_memory_bytes,
        run_us: usage.wall_time.as_micros() as u64,
    };
    let mut fields = vec![("digest", digest.to_owned()), ("usage", measured.encode())];
    // Each attempt's log replaces the last one's; a first attempt with nothing
    // to say has nothing to replace.
    if !log.is_empty() || !first {
        fields.push(("log", log));
    }
    fields
}

fn failure_fields(failure: &Failure) -> Vec<(&'static str, String)> {
    vec![
        ("error_kind", failure.kind.as_str().to_owned()),
        ("error_message", failure.message.clone()),
        ("backtrace", failure.backtrace.clone().unwrap_or_default()),
    ]
}

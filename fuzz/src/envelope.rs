//! The commit envelope as `stoker::queue::commit::commit` builds it.
//!
//! To swap: once the runtime exposes the pure function that builds the
//! envelope, make [`envelope`] call it; the fuzz target only needs
//! `(KEYS, ARGV)`. Until then this is the same construction, step for step,
//! as `commit()` (keep the two in step).

use stoker::queue::commit::{Commit, CommitKind};
use stoker::queue::settle::DONE_TTL;

/// KEYS and ARGV of the `commit.lua` call for `commit`.
pub fn envelope(commit: &Commit<'_>) -> (Vec<String>, Vec<Vec<u8>>) {
    let q = commit.queue;
    let mut all: Vec<String> = vec![
        q.job(commit.id),
        q.snapshot(commit.id),
        q.inflight(commit.worker),
        q.stats(),
        q.batch_outbox(),
    ];
    let mut index_of = |key: String| -> usize {
        match all[5..].iter().position(|k| *k == key) {
            Some(i) => 6 + i,
            None => {
                all.push(key);
                all.len()
            }
        }
    };
    let children: Vec<(usize, usize, usize)> = commit
        .children
        .iter()
        .map(|c| {
            let scheduled = if c.delay_ms > 0 {
                index_of(c.queue.scheduled())
            } else {
                0
            };
            (
                index_of(c.queue.pending()),
                index_of(c.queue.job(&c.id)),
                scheduled,
            )
        })
        .collect();
    let batches: Vec<(usize, usize)> = commit
        .batches
        .iter()
        .map(|b| (index_of(b.keys.meta()), index_of(b.keys.jobs())))
        .collect();
    let index = if commit.batches.is_empty() {
        0
    } else {
        index_of(stoker::queue::keys::batches())
    };
    let writes: Vec<usize> = commit
        .writes
        .iter()
        .map(|w| index_of(w.key.clone()))
        .collect();
    let mut args: Vec<Vec<u8>> = Vec::new();
    let mut arg = |a: &dyn AsRef<[u8]>| args.push(a.as_ref().to_vec());
    let (mode, body) = match commit.kind {
        CommitKind::Checkpoint { snapshot } => ("checkpoint", snapshot),
        CommitKind::Done { raw } => ("done", raw),
    };
    arg(&mode);
    arg(&commit.lease.to_string());
    arg(&commit.seq.to_string());
    arg(&body);
    arg(&DONE_TTL.as_secs().to_string());
    arg(&commit.fields.len().to_string());
    for (field, value) in commit.fields {
        arg(field);
        arg(value);
    }
    arg(&commit.children.len().to_string());
    for (c, (list, record, scheduled)) in commit.children.iter().zip(children) {
        arg(&list.to_string());
        arg(&record.to_string());
        arg(&c.id);
        arg(&c.payload);
        arg(&c.class);
        arg(&c.queue.name);
        arg(&c.args);
        arg(&c.batch.as_deref().unwrap_or(""));
        arg(&scheduled.to_string());
        arg(&c.delay_ms.to_string());
    }
    arg(&commit.batches.len().to_string());
    arg(&index.to_string());
    for (b, (meta, jobs)) in commit.batches.iter().zip(batches) {
        arg(&meta.to_string());
        arg(&jobs.to_string());
        arg(&b.fields.len().to_string());
        for (field, value) in &b.fields {
            arg(field);
            arg(value);
        }
        arg(&b.members.len().to_string());
        for m in &b.members {
            arg(m);
        }
    }
    arg(&commit.writes.len().to_string());
    for (w, key) in commit.writes.iter().zip(writes) {
        arg(&w.cmd);
        arg(&key.to_string());
        arg(&w.args.len().to_string());
        for a in &w.args {
            arg(a);
        }
    }
    (all, args)
}

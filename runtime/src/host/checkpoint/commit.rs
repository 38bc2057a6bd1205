//! A commit from the host's side: the lease presents the next sequence with
//! what is staged ([`crate::queue::commit`]), retrying while Redis does not
//! answer, and the errors that end an attempt whose commit cannot be made.

use std::time::Duration;

use crate::host::job::JobLink;
use crate::queue::commit::{self, Commit, CommitKind, Committed};
use crate::queue::staged::Staged;

/// Tries of one commit when Redis does not answer.
const COMMIT_TRIES: u32 = 5;

impl JobLink {
    /// Commits the next sequence: a checkpoint or the job's completion, with
    /// what is `staged` (cleared once committed). Retries while Redis does
    /// not answer.
    pub async fn commit(
        &mut self,
        staged: &mut Staged,
        kind: CommitKind<'_>,
        fields: &[(&'static str, String)],
    ) -> wasmtime::Result<()> {
        let seq = self.seq + 1;
        // A batch that got no jobs is not created: nothing would ever finish
        // it (documented with the `batch` interface).
        staged.batches.retain(|b| !b.members.is_empty());
        let mut pause = Duration::from_millis(20);
        let mut tries = 0;
        loop {
            let c = Commit {
                queue: &self.queue,
                id: &self.id,
                worker: &self.worker,
                lease: self.lease,
                seq,
                kind: match &kind {
                    CommitKind::Checkpoint { snapshot } => CommitKind::Checkpoint { snapshot },
                    CommitKind::Done { raw } => CommitKind::Done { raw },
                },
                fields,
                children: &staged.children,
                batches: &staged.batches,
                writes: &staged.writes,
            };
            match commit::commit(&mut self.conn, &c).await {
                Ok(Committed::Ok | Committed::AlreadyApplied) => break,
                Ok(Committed::LeaseLost) => return Err(LeaseLost.into()),
                Ok(Committed::BadWrite(reason)) => return Err(BadWrite(reason).into()),
                // Redis answered with an error: the script did not run to its
                // end. It checks everything before its first write, so this is
                // a bug (or a Redis we do not know); repeating cannot help.
                Err(e) if !unanswered(&e) => return Err(CommitFailed(e.to_string()).into()),
                Err(e) => {
                    tries += 1;
                    if tries >= COMMIT_TRIES {
                        return Err(CommitUnavailable(e.to_string()).into());
                    }
                    tracing::warn!(error = %e, retry_in = ?pause, "commit failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                }
            }
        }
        self.seq = seq;
        self.commits += 1;
        self.enqueued += staged.children.len() as u64;
        staged.clear();
        Ok(())
    }
}

/// The attempt no longer holds the job: it was recovered from this worker
/// (heartbeat expired) and its commit was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "lease lost: the job was recovered from this worker and belongs to another attempt; this attempt's commit was refused"
)]
pub struct LeaseLost;

/// A staged write does not fit the key it writes (its type, or a value that is
/// not a number): the commit was refused and nothing of it applied.
#[derive(Debug, thiserror::Error)]
#[error("staged write refused at the commit: {0}")]
pub struct BadWrite(pub String);

/// Whether a commit's outcome is unknown or it was not run (worth retrying):
/// the connection failed, or Redis refused the script up front (out of memory,
/// loading, busy).
fn unanswered(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || matches!(
            e.code(),
            Some("OOM" | "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN")
        )
}

/// Redis answered a commit with an error.
#[derive(Debug, thiserror::Error)]
#[error("commit failed: Redis answered with an error ({0})")]
pub struct CommitFailed(pub String);

/// Redis did not answer a commit, after retries.
#[derive(Debug, thiserror::Error)]
#[error("commit failed: Redis did not answer ({0})")]
pub struct CommitUnavailable(pub String);

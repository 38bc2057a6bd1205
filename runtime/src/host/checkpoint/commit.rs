//! A commit from the host's side: the lease presents the next sequence with
//! what is staged ([`crate::queue::commit`]); the retry while Redis does not
//! answer and the one error an unmade commit ends with are
//! [`commit::make`]'s.

use crate::host::job::JobLink;
use crate::queue::commit::{self, Commit, CommitError, CommitKind};
use crate::queue::staged::Staged;

impl JobLink {
    /// Commits the next sequence: a checkpoint or the job's completion, with
    /// what is `staged` (cleared once committed). Retries while Redis does
    /// not answer ([`commit::make`]).
    pub async fn commit(
        &mut self,
        staged: &mut Staged,
        kind: CommitKind<'_>,
        fields: &[(&'static str, String)],
    ) -> Result<(), CommitError> {
        let seq = self.seq + 1;
        // A batch that got no jobs is not created: nothing would ever finish
        // it (documented with the `batch` interface).
        staged.batches.retain(|b| !b.members.is_empty());
        let c = Commit {
            queue: &self.queue,
            id: &self.id,
            worker: &self.worker,
            lease: self.lease,
            seq,
            kind,
            fields,
            children: &staged.children,
            batches: &staged.batches,
            writes: &staged.writes,
        };
        commit::make(&mut self.conn, &c).await?;
        self.seq = seq;
        self.commits += 1;
        self.enqueued += staged.children.len() as u64;
        staged.clear();
        Ok(())
    }
}

//! Commits across hash slots (Redis Cluster), still exactly once.
//!
//! A commit's keys lie in many slots: the job's own keys in its queue's slot
//! (`{q:QUEUE}`), its staged writes' keys wherever they hash (`mileage:total`
//! anywhere), its children's queues and its batches (`{b:ID}`) in theirs.
//! Redis Cluster runs a script on one slot only. So on Cluster a commit is
//! split by slot ([`split`]):
//! 1. **The commit** (`commit.lua` on the queue's slot, one atomic step, as
//!    on a single Redis): the lease and sequence checks, the snapshot or the
//!    result, the writes, batches and children that share the queue's slot,
//!    and one **part** per other slot, appended to the queue's outbox
//!    (`stoker:{q:QUEUE}:outbox`, a list). A commit refused, or retried after
//!    its reply was lost, writes no part (the sequence check is first).
//! 2. **The parts**, each applied in its own slot (`apply.lua`) together with
//!    its **marker**, a key in that same slot
//!    (`stoker:{m:N}:applied:QUEUE:JOB:SEQ:PART`, where `m:N` is a tag of the
//!    slot, kept [`MARKER_TTL`]): a part whose marker exists is not applied
//!    again. Only then is the part taken off the outbox (`part_done.lua`). A
//!    crash between the two leaves the part in the outbox; whoever applies it
//!    next finds its marker and only takes it off. So each part applies once.
//!
//! Before the commit, the worker checks every part that holds writes in its
//! slot with the same passes that check a single Redis commit (`apply.lua` in
//! `check` mode, every slot at once): a write that cannot apply refuses the
//! commit whole, nothing written, as on a single Redis. Another client that
//! changes a key's type between that check and the apply makes the part
//! refused at its apply: it is then taken off the outbox into
//! `stoker:{q:QUEUE}:outbox:refused` with the reason, and logged (it cannot
//! be undone: the commit it belongs to stands).
//!
//! # Order
//! The parts of one job apply in its commits' order: within one commit, in
//! three phases: batches and writes (by slot), then the batch index, then
//! children (by slot), so a child never runs before the batch it belongs to
//! exists or before the writes committed with it are in place; children
//! that share the queue's slot go with the commit only when the commit has
//! no part of the first two phases. A group (the parts of one phase of one
//! commit) applies only once every earlier group of its job is applied.
//! The parts of different jobs apply independently of each other: a part
//! whose slot's node is away holds only the later parts of its own job, not
//! the others'. So two jobs committing writes to one key at once may see
//! them applied in either order (increments add up the same; of two `SET`s
//! of one key, the one applied last stays), as two commits racing for one
//! key on a single Redis may land in either order.
//!
//! # Who applies, and when
//! The committing worker, right after its commit is answered ([`after`]).
//! When no earlier part of its job waits in the outbox (the job's record
//! counts its parts not yet taken off, `parts_waiting`, kept by the commit
//! and the take-off in the queue's slot, so the commit's answer says so),
//! it applies its own parts directly: one round trip per phase, plus one
//! to take them off, however many other commits' parts are in the outbox.
//! Otherwise (its job's earlier parts wait: a node was away, or the job was
//! recovered from a worker that crashed before applying) it drains the
//! outbox from its head until its parts are applied. Every node's
//! scheduler, every round (half a second), drains what is left ([`sweep`]):
//! what a crash, an unreachable node or a timeout left behind; a group
//! that does not apply within [`GROUP_LIMIT`](appliers::GROUP_LIMIT) blocks
//! its job and its slot for the rest of that drain, and the drain goes on
//! with the other jobs.
//! Any number of appliers may run at once: the markers make a second apply
//! a no-op.
//!
//! # What a reader sees
//! Between the commit and the apply of its parts (normally one round trip
//! per phase and one to take them off; after a crash or while a slot's node is away, until the next
//! scheduler round that reaches it), the job's snapshot, record and
//! same-slot writes are there and the parts' writes, children and batches
//! are not yet. Each part applies atomically in its slot; two parts of one
//! commit (two slots) do not apply at one instant. A part whose slot's node is
//! away holds the later parts of its job until the node is back (or its
//! replica takes over).

mod appliers;
mod format;
mod slots;

pub use appliers::{Applied, MAX_REFUSED, after, apply, drain, sweep};
pub use format::{MARKER_TTL, Part, marker};
pub use slots::{Split, commit, split};

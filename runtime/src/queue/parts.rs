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
//! that does not apply within [`GROUP_LIMIT`] blocks its job and its slot
//! for the rest of that drain, and the drain goes on with the other jobs.
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

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use redis::cluster_routing::Slot;

use super::body::Body;
use super::commit::{self, Commit, Committed};
use super::health::{Outages, within};
use super::keys::{self, QueueKeys};
use super::{Conn, Durability, SCRIPTS};

/// How long a part's marker is kept: far longer than any part waits in an
/// outbox after it was applied (the next scheduler round takes it off).
pub const MARKER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most refused parts a queue keeps.
pub const MAX_REFUSED: usize = 1000;
/// Parts read from an outbox per round trip.
const CHUNK: isize = 32;
/// Most parts one drain applies.
const MOST: usize = 1024;
/// How long a worker applies its commit's parts before it leaves them to
/// the scheduler.
const AFTER_LIMIT: Duration = Duration::from_secs(1);
/// How long one group of parts may take to apply before the drain leaves
/// its slot for this round (a node paused or away would otherwise hold the
/// drain for the connection's whole request timeout; a cut apply is safe:
/// its marker makes the next apply a no-op, or it never ran).
const GROUP_LIMIT: Duration = Duration::from_secs(1);
/// After its parts failed to apply, how long a worker leaves a queue's parts
/// to the scheduler.
const BACK_OFF: Duration = Duration::from_secs(1);

/// The Redis Cluster slot count.
const SLOTS: usize = 16384;

/// For each slot, the least `N` whose tag `m:N` hashes to it.
static SLOT_TAGS: LazyLock<HashMap<Slot, u32>> = LazyLock::new(|| {
    let mut tags = HashMap::with_capacity(SLOTS);
    let mut n = 0u32;
    while tags.len() < SLOTS {
        tags.entry(Slot::for_key(format!("m:{n}"))).or_insert(n);
        n += 1;
    }
    tags
});

/// The marker key of part `part` of commit `seq` of job `job` in `queue`,
/// in `slot`.
pub fn marker(slot: Slot, queue: &str, job: &str, seq: u64, part: usize) -> String {
    format!(
        "stoker:{{m:{}}}:applied:{queue}:{job}:{seq}:{part}",
        SLOT_TAGS[&slot]
    )
}

/// A part of a commit: `apply.lua`'s keys (the marker first) and its
/// arguments after the mode and the TTL (the job's id, then the body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// Its keys.
    pub keys: Vec<String>,
    /// Its arguments.
    pub args: Vec<Vec<u8>>,
    /// Whether it holds staged writes (checked before the commit).
    pub writes: bool,
    /// Its phase in its commit (0: batches and writes, 1: the batch index,
    /// 2: children): the parts of one phase of one commit are independent
    /// of each other and apply at once.
    pub phase: u8,
}

/// The first bytes of an encoded part (and its format's version).
const MAGIC: &[u8] = b"stoker-part/1\n";

impl Part {
    /// The part as an outbox entry: [`MAGIC`], the key count, the argument
    /// count and its flags (whether it writes, bit 0; its phase, bits 8-15),
    /// u32 big-endian each, then each key and argument as a u32 big-endian
    /// length and its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self.keys.iter().map(|k| k.len() + 4).sum::<usize>()
            + self.args.iter().map(|a| a.len() + 4).sum::<usize>();
        let mut out = Vec::with_capacity(MAGIC.len() + 12 + size);
        out.extend_from_slice(MAGIC);
        let flags = self.writes as usize | (self.phase as usize) << 8;
        for n in [self.keys.len(), self.args.len(), flags] {
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        let items = self.keys.iter().map(|k| k.as_bytes());
        for item in items.chain(self.args.iter().map(Vec::as_slice)) {
            out.extend_from_slice(&(item.len() as u32).to_be_bytes());
            out.extend_from_slice(item);
        }
        out
    }

    /// Reads an outbox entry; why not, when it is not one [`Part::encode`]
    /// wrote.
    pub fn decode(entry: &[u8]) -> Result<Part, String> {
        let mut rest = entry
            .strip_prefix(MAGIC)
            .ok_or("not a part of a commit (no part header)")?;
        let u32_at = |rest: &mut &[u8]| -> Result<usize, String> {
            let (n, tail) = rest.split_first_chunk::<4>().ok_or("a part cut short")?;
            *rest = tail;
            Ok(u32::from_be_bytes(*n) as usize)
        };
        let nkeys = u32_at(&mut rest)?;
        let nargs = u32_at(&mut rest)?;
        let flags = u32_at(&mut rest)?;
        let (writes, phase) = (flags & 1 == 1, (flags >> 8) as u8);
        if flags & !0xff01 != 0 || phase > 2 {
            return Err("a part with unknown flags".into());
        }
        if nkeys == 0 || nargs == 0 || (nkeys + nargs) * 4 > rest.len() {
            return Err("a part with impossible counts".into());
        }
        let item = |rest: &mut &[u8]| -> Result<Vec<u8>, String> {
            let n = u32_at(rest)?;
            if n > rest.len() {
                return Err("a part cut short".into());
            }
            let (v, tail) = rest.split_at(n);
            *rest = tail;
            Ok(v.to_vec())
        };
        let mut keys = Vec::with_capacity(nkeys);
        for _ in 0..nkeys {
            let k = String::from_utf8(item(&mut rest)?).map_err(|_| "a key is not UTF-8")?;
            keys.push(k);
        }
        let mut args = Vec::with_capacity(nargs);
        for _ in 0..nargs {
            args.push(item(&mut rest)?);
        }
        if !rest.is_empty() {
            return Err(format!("{} bytes after the part", rest.len()));
        }
        Ok(Part {
            keys,
            args,
            writes,
            phase,
        })
    }

    /// The id of the job whose commit it belongs to.
    fn job(&self) -> String {
        String::from_utf8_lossy(&self.args[0]).into_owned()
    }

    /// The commit it belongs to (`QUEUE:JOB:SEQ`, from its marker) and its
    /// phase: parts with the same may apply at once.
    fn group(&self) -> (&str, u8) {
        let marker = self.keys[0].as_str();
        let commit = marker
            .split_once(":applied:")
            .and_then(|(_, rest)| rest.rsplit_once(':'))
            .map_or(marker, |(commit, _)| commit);
        (commit, self.phase)
    }
}

/// A commit split by slot: what the commit writes with the snapshot, and the
/// parts for the outbox, in the order they apply.
pub struct Split<'a> {
    /// The share of the queue's slot.
    pub local: Body<'a>,
    /// The parts.
    pub parts: Vec<Part>,
    /// Children in the parts.
    pub remote_children: usize,
}

/// Bodies by slot, in the order each slot first appears.
#[derive(Default)]
struct BySlot<'a>(Vec<(Slot, Body<'a>)>);

impl<'a> BySlot<'a> {
    fn at(&mut self, slot: Slot) -> &mut Body<'a> {
        let i = match self.0.iter().position(|(s, _)| *s == slot) {
            Some(i) => i,
            None => {
                self.0.push((slot, Body::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }
}

/// Splits `c` by slot (see the module's documentation for the order).
pub fn split<'a>(c: &'a Commit<'a>) -> Split<'a> {
    let home = Slot::for_key(c.queue.job(c.id));
    let mut local = Body::default();
    // Phase 1: batches and writes; 2: the batch index; 3: children.
    let mut first = BySlot::default();
    let mut index = BySlot::default();
    let mut last = BySlot::default();
    let mut home_batches = true;
    for b in c.batches {
        match Slot::for_key(b.keys.meta()) {
            s if s == home => local.batches.push(b),
            s => {
                home_batches = false;
                first.at(s).batches.push(b);
            }
        }
    }
    for w in c.writes {
        match Slot::for_key(&w.key) {
            s if s == home => local.writes.push(w),
            s => first.at(s).writes.push(w),
        }
    }
    if !c.batches.is_empty() {
        let ids = c.batches.iter().map(|b| b.keys.id.as_str());
        match Slot::for_key(keys::batches()) {
            s if s == home && home_batches => local.index_ids.extend(ids),
            s => index.at(s).index_ids.extend(ids),
        }
    }
    let alone = first.0.is_empty() && index.0.is_empty();
    for child in c.children {
        match Slot::for_key(child.queue.pending()) {
            s if s == home && alone => local.children.push(child),
            s => last.at(s).children.push(child),
        }
    }
    let mut parts = Vec::new();
    let mut remote_children = 0;
    let phased = (first.0.into_iter().map(|b| (0, b)))
        .chain(index.0.into_iter().map(|b| (1, b)))
        .chain(last.0.into_iter().map(|b| (2, b)));
    for (phase, (slot, body)) in phased {
        remote_children += body.children.len();
        let mut keys = vec![marker(slot, &c.queue.name, c.id, c.seq, parts.len())];
        let mut args = vec![c.id.as_bytes().to_vec()];
        body.lay_out(&mut keys, &mut args);
        parts.push(Part {
            keys,
            args,
            writes: !body.writes.is_empty(),
            phase,
        });
    }
    Split {
        local,
        parts,
        remote_children,
    }
}

/// What `apply.lua` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Applied now (or, checking, would apply).
    Now,
    /// Its marker was there: applied before.
    Before,
    /// Its body cannot apply (why): nothing written.
    Refused(String),
}

/// Runs `apply.lua` on `part`: `check` only reads.
pub async fn apply(conn: &mut Conn, part: &Part, check: bool) -> redis::RedisResult<Applied> {
    let mut inv = SCRIPTS.apply.prepare_invoke();
    for k in &part.keys {
        inv.key(k);
    }
    inv.arg(if check { "check" } else { "apply" })
        .arg(MARKER_TTL.as_secs());
    for a in &part.args {
        inv.arg(a);
    }
    let reply: String = inv.invoke_async(conn).await?;
    Ok(match reply.as_str() {
        "ok" => Applied::Now,
        "applied" => Applied::Before,
        other => Applied::Refused(other.strip_prefix("bad_write:").unwrap_or(other).to_owned()),
    })
}

/// Commits `c` split as `split`: first checks every part that writes (all
/// at once), then runs the commit with the parts for the outbox.
pub async fn commit(
    conn: &mut Conn,
    c: &Commit<'_>,
    split: &Split<'_>,
) -> redis::RedisResult<(Committed, Vec<Vec<u8>>)> {
    let checks = split.parts.iter().filter(|p| p.writes).map(|p| {
        let mut conn = conn.clone();
        async move { apply(&mut conn, p, true).await }
    });
    for checked in join_all(checks).await {
        if let Applied::Refused(why) = checked? {
            return Ok((Committed::BadWrite(why), Vec::new()));
        }
    }
    let entries: Vec<Vec<u8>> = split.parts.iter().map(Part::encode).collect();
    let (keys, args) = commit::envelope_of(c, &split.local, &entries, split.remote_children);
    Ok((commit::run(conn, &keys, &args).await?, entries))
}

/// How one group of parts (one phase of one commit) ended.
enum GroupEnd {
    /// Applied (or refused for good) and taken off the outbox.
    Done,
    /// Not applied: a part's slot did not answer (the error, and the slots
    /// that failed). It stays in the outbox.
    Blocked(redis::RedisError, Vec<Slot>),
}

/// Applies one group of parts (`entries`, decoded as `decoded`) at once,
/// each in its slot within [`GROUP_LIMIT`], then takes them off `q`'s outbox
/// (all at once: one round trip on the multiplexed connection; each call
/// loads its script if Redis lost it). Fails only when taking them off
/// fails (the queue's own slot did not answer).
async fn apply_group(
    conn: &Conn,
    q: &QueueKeys,
    entries: &[Vec<u8>],
    decoded: &[Result<Part, String>],
) -> redis::RedisResult<GroupEnd> {
    let applies = decoded.iter().map(|d| {
        let mut conn = conn.clone();
        async move {
            match d {
                Ok(part) => match within(GROUP_LIMIT, apply(&mut conn, part, false)).await {
                    Ok(Applied::Now | Applied::Before) => Ok(String::new()),
                    Ok(Applied::Refused(why)) => Ok(why),
                    Err(e) => Err((e, Slot::for_key(part.keys[0].as_str()))),
                },
                Err(why) => Ok(why.clone()),
            }
        }
    });
    let mut whys = Vec::with_capacity(entries.len());
    let mut failed: Option<(redis::RedisError, Vec<Slot>)> = None;
    for applied in join_all(applies).await {
        match applied {
            Ok(why) => whys.push(why),
            Err((e, slot)) => match &mut failed {
                None => failed = Some((e, vec![slot])),
                Some((_, slots)) => slots.push(slot),
            },
        }
    }
    if let Some((e, slots)) = failed {
        return Ok(GroupEnd::Blocked(e, slots));
    }
    // A part leaves the outbox only once its slot's replica has it, when
    // writes wait for one (every slot of the group at once).
    if conn.durability() != Durability::Local {
        let slots: HashMap<Slot, &str> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok()?.keys.first())
            .map(|k| (Slot::for_key(k.as_str()), k.as_str()))
            .collect();
        let slots: Vec<(Slot, &str)> = slots.into_iter().collect();
        let kept = join_all(slots.iter().map(|(_, key)| {
            let mut conn = conn.clone();
            async move { conn.replicated(key).await }
        }))
        .await;
        // Not confirmed (its primary may have died with it): the group
        // stays in the outbox, and the next drain applies it again on the
        // slot's primary now (or finds its marker there).
        let unconfirmed: Vec<Slot> = slots
            .iter()
            .zip(&kept)
            .filter(|(_, kept)| !**kept)
            .map(|((slot, _), _)| *slot)
            .collect();
        if !unconfirmed.is_empty() {
            let e = redis::RedisError::from(std::io::Error::other(
                "no replica confirmed a part's write; it stays in the outbox",
            ));
            return Ok(GroupEnd::Blocked(e, unconfirmed));
        }
    }
    let outbox = q.outbox();
    let offs = entries.iter().zip(decoded).zip(&whys).map(|((entry, d), why)| {
        if !why.is_empty() {
            tracing::error!(queue = %q.name, reason = %why, "a part of a commit cannot apply; it is kept in the queue's refused parts");
        }
        let record = match d {
            Ok(part) => q.job(&part.job()),
            Err(_) => outbox.clone(),
        };
        let mut conn = conn.clone();
        let (outbox, refused) = (&outbox, q.refused_parts());
        async move {
            SCRIPTS
                .part_done
                .key(outbox)
                .key(refused)
                .key(record)
                .arg(entry.as_slice())
                .arg(why)
                .arg(MAX_REFUSED)
                .invoke_async::<u64>(&mut conn)
                .await
        }
    });
    for off in join_all(offs).await {
        off?;
    }
    Ok(GroupEnd::Done)
}

/// Where the group starting at `at` ends: this part and the next ones of
/// its commit and phase.
fn group_end(decoded: &[Result<Part, String>], at: usize) -> usize {
    match decoded[at].as_ref().ok().map(Part::group) {
        None => at + 1,
        Some(g) => {
            at + decoded[at..]
                .iter()
                .take_while(|d| d.as_ref().ok().map(Part::group) == Some(g))
                .count()
        }
    }
}

/// Applies queue `q`'s outbox from its head, in order for each job, until
/// `mine` (entries of one commit) are all applied, or, `mine` empty, the
/// outbox is; at most [`MOST`] parts. Consecutive parts of one phase of one
/// commit apply at once; a group applies only after the groups of its job
/// before it. A group that cannot be applied (its slot's node away) blocks
/// its job, and its slot, for the rest of this drain: their later parts
/// stay, every other job's go on. Returns how many parts it took off, or
/// the first error once nothing more can be applied.
pub async fn drain(conn: &mut Conn, q: &QueueKeys, mine: &[Vec<u8>]) -> redis::RedisResult<usize> {
    let outbox = q.outbox();
    let mut left: HashSet<&[u8]> = mine.iter().map(Vec::as_slice).collect();
    let own_job = mine
        .first()
        .and_then(|e| Part::decode(e).ok())
        .map(|p| p.job());
    let mut blocked_jobs: HashSet<String> = HashSet::new();
    let mut blocked_slots: HashSet<Slot> = HashSet::new();
    let mut first_error = None;
    // Entries left at the head (blocked ones): read past them.
    let mut skipped = 0;
    let mut taken = 0;
    while taken < MOST && skipped < MOST {
        let window = skipped + CHUNK as usize;
        let chunk: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&outbox)
            .arg(0)
            .arg(window - 1)
            .query_async(conn)
            .await?;
        let decoded: Vec<Result<Part, String>> = chunk.iter().map(|e| Part::decode(e)).collect();
        let (mut progressed, mut skipped_now) = (false, 0);
        let mut at = 0;
        while at < chunk.len() {
            let end = group_end(&decoded, at);
            let job = decoded[at].as_ref().ok().map(Part::job);
            let blocked = job.as_ref().is_some_and(|j| blocked_jobs.contains(j))
                || decoded[at..end].iter().any(|d| {
                    d.as_ref()
                        .is_ok_and(|p| blocked_slots.contains(&Slot::for_key(p.keys[0].as_str())))
                });
            let ended = match blocked {
                true => None,
                false => Some(apply_group(conn, q, &chunk[at..end], &decoded[at..end]).await?),
            };
            match ended {
                Some(GroupEnd::Done) => {
                    for entry in &chunk[at..end] {
                        left.remove(entry.as_slice());
                    }
                    taken += end - at;
                    progressed = true;
                    if !mine.is_empty() && left.is_empty() {
                        return Ok(taken);
                    }
                }
                blocked => {
                    if let Some(GroupEnd::Blocked(e, slots)) = blocked {
                        blocked_slots.extend(slots);
                        first_error.get_or_insert(e);
                    }
                    skipped_now += end - at;
                    if let Some(job) = job {
                        blocked_jobs.insert(job);
                    }
                    if let Some(own) = &own_job
                        && blocked_jobs.contains(own)
                        && let Some(e) = first_error.take()
                    {
                        // Its own parts cannot all apply now: they are left
                        // to the scheduler.
                        return Err(e);
                    }
                }
            }
            at = end;
        }
        if !progressed && chunk.len() < window {
            break;
        }
        skipped = skipped_now;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(taken),
    }
}

/// Applies `mine`, the parts of one commit, phase by phase, each phase's
/// parts at once (see [`apply_group`]); the first group that cannot apply
/// fails it, leaving it and the groups after it in the outbox.
async fn apply_own(conn: &Conn, q: &QueueKeys, mine: &[Vec<u8>]) -> redis::RedisResult<usize> {
    let decoded: Vec<Result<Part, String>> = mine.iter().map(|e| Part::decode(e)).collect();
    let mut at = 0;
    while at < mine.len() {
        let end = group_end(&decoded, at);
        if let GroupEnd::Blocked(e, _) =
            apply_group(conn, q, &mine[at..end], &decoded[at..end]).await?
        {
            return Err(e);
        }
        at = end;
    }
    Ok(mine.len())
}

/// Applies what queue `q`'s outbox holds (the scheduler's round).
pub async fn sweep(conn: &mut Conn, q: &QueueKeys) -> redis::RedisResult<usize> {
    drain(conn, q, &[]).await
}

/// Failures of the workers' own applies, logged once per outage.
static AFTER_OUTAGES: LazyLock<Outages> = LazyLock::new(Outages::default);
/// Queues whose parts the workers leave to the scheduler until then.
static BACKED_OFF: LazyLock<Mutex<HashMap<String, Instant>>> = LazyLock::new(Default::default);

/// Right after a commit: applies its parts `mine` within [`AFTER_LIMIT`];
/// what it cannot apply is left to the scheduler. When no earlier part of
/// its job waits in the outbox (`behind` false, as the commit answered), it
/// applies its own parts directly, one round trip per phase and one to take
/// them off, however long the outbox is; otherwise it drains the outbox
/// from the head until its parts are applied, so they follow the earlier
/// ones. After a failure the queue's parts are left to the scheduler for
/// [`BACK_OFF`], so a node away does not slow every commit.
pub async fn after(conn: &mut Conn, q: &QueueKeys, mine: &[Vec<u8>], behind: bool) {
    if mine.is_empty() {
        return;
    }
    let backed_off = |now: Instant| {
        let map = BACKED_OFF.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&q.name).is_some_and(|until| now < *until)
    };
    if backed_off(Instant::now()) {
        return;
    }
    let done = match behind {
        true => within(AFTER_LIMIT, drain(conn, q, mine)).await,
        false => within(AFTER_LIMIT, apply_own(conn, q, mine)).await,
    };
    if done.is_err() {
        let mut map = BACKED_OFF.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(q.name.clone(), Instant::now() + BACK_OFF);
    }
    AFTER_OUTAGES.check("apply commit parts", &q.name, done);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::queue::commit::{Child, CommitKind, StagedBatch};
    use crate::queue::keys::BatchKeys;
    use crate::queue::staged::StagedWrite;

    fn child(queue: &str, id: &str) -> Child {
        Child {
            queue: Arc::new(QueueKeys::new(queue)),
            id: id.into(),
            class: "noop".into(),
            payload: "{}".into(),
            args: "null".into(),
            batch: None,
            delay_ms: 0,
            depth: 1,
        }
    }

    fn write(key: &str) -> StagedWrite {
        StagedWrite {
            cmd: "INCRBY",
            key: key.into(),
            args: vec![b"1".to_vec()],
        }
    }

    fn commit<'a>(
        q: &'a QueueKeys,
        children: &'a [Child],
        batches: &'a [StagedBatch],
        writes: &'a [StagedWrite],
    ) -> Commit<'a> {
        Commit {
            queue: q,
            id: "j1",
            worker: "w",
            lease: 1,
            seq: 4,
            kind: CommitKind::Checkpoint { snapshot: b"s" },
            fields: &[],
            children,
            batches,
            writes,
        }
    }

    #[test]
    fn every_slot_has_a_marker_tag_and_a_marker_keeps_to_its_slot() {
        assert_eq!(SLOT_TAGS.len(), SLOTS);
        for key in [
            "mileage:total",
            "a{}b",
            "{x",
            "stoker:{q:default}:job:1",
            "",
        ] {
            let slot = Slot::for_key(key);
            assert_eq!(
                Slot::for_key(marker(slot, "default", "j", 1, 0)),
                slot,
                "{key}"
            );
        }
    }

    #[test]
    fn a_part_survives_its_encoding_and_garbage_is_refused() {
        let p = Part {
            keys: vec!["m".into(), "k".into()],
            args: vec![b"j1".to_vec(), vec![0, 255, 10], Vec::new()],
            writes: true,
            phase: 2,
        };
        let e = p.encode();
        assert_eq!(Part::decode(&e).unwrap(), p);
        assert!(Part::decode(b"hello").is_err());
        assert!(Part::decode(&e[..e.len() - 1]).is_err());
        let mut longer = e.clone();
        longer.push(0);
        assert!(Part::decode(&longer).is_err());
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 8]);
        assert!(Part::decode(&huge).is_err());
    }

    #[test]
    fn what_shares_the_queues_slot_goes_with_the_commit_and_nothing_else() {
        let q = QueueKeys::new("default");
        let own = format!("x{{q:default}}y");
        let writes = [write(&own), write("mileage:total"), write("mileage:user:1")];
        let children = [child("default", "c1")];
        let c = commit(&q, &children, &[], &writes);
        let s = split(&c);
        assert_eq!(s.local.writes.len(), 1);
        // The children wait for the writes in other slots.
        assert!(s.local.children.is_empty());
        assert_eq!(s.remote_children, 1);
        assert_eq!(s.parts.len(), 3);
        assert!(s.parts[0].writes && s.parts[1].writes && !s.parts[2].writes);
        let phases: Vec<u8> = s.parts.iter().map(|p| p.phase).collect();
        assert_eq!(phases, [0, 0, 2]);
        assert_eq!(s.parts[0].group(), s.parts[1].group());
        assert_eq!(s.parts[0].group().0, "default:j1:4");
        for (i, p) in s.parts.iter().enumerate() {
            // Every key of a part shares its marker's slot.
            let slot = Slot::for_key(&p.keys[0]);
            assert!(p.keys.iter().all(|k| Slot::for_key(k) == slot), "part {i}");
            assert!(p.keys[0].ends_with(&format!(":applied:default:j1:4:{i}")));
            assert_eq!(p.args[0], b"j1");
        }
        // With nothing elsewhere, a same-queue child goes with the commit.
        let c = commit(&q, &children, &[], &writes[..1]);
        let s = split(&c);
        assert!(s.parts.is_empty());
        assert_eq!(s.local.children.len(), 1);
    }

    #[test]
    fn batches_come_before_the_index_and_the_children() {
        let q = QueueKeys::new("default");
        let b = StagedBatch {
            keys: BatchKeys::new("b1"),
            fields: vec![("id", "b1".into())],
            members: vec!["c1".into()],
        };
        let children = [child("other", "c1")];
        let c = commit(&q, &children, std::slice::from_ref(&b), &[]);
        let s = split(&c);
        assert_eq!(s.parts.len(), 3);
        let slot = |p: &Part| Slot::for_key(&p.keys[0]);
        assert_eq!(slot(&s.parts[0]), Slot::for_key(b.keys.meta()));
        assert_eq!(slot(&s.parts[1]), Slot::for_key(keys::batches()));
        assert_eq!(
            slot(&s.parts[2]),
            Slot::for_key(QueueKeys::new("other").pending())
        );
    }
}

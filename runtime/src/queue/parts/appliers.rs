//! The appliers: a part applied in its slot ([`apply`]), a group of parts
//! at once ([`apply_group`]), a commit's own parts ([`apply_own`]), an
//! outbox from its head ([`drain`], [`sweep`]), and what a worker does right
//! after its commit ([`after`]).

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use redis::cluster_routing::Slot;

use super::format::{MARKER_TTL, Part};
use crate::queue::health::{Outages, within};
use crate::queue::keys::QueueKeys;
use crate::queue::{Conn, Durability, SCRIPTS};

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

/// An outbox entry as read: its part, or why it is not one.
type Decoded<'p> = Result<&'p Part, &'p str>;

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
    decoded: &[Decoded<'_>],
) -> redis::RedisResult<GroupEnd> {
    // A part leaves the outbox only once its slot's replica has it, when
    // writes wait for one: each apply carries its wait (see
    // `Conn::keep`), so its limit has the wait's time on top.
    let limit = GROUP_LIMIT
        + match conn.durability() {
            Durability::Local => Duration::ZERO,
            Durability::Replica { timeout } => timeout,
        };
    let applies = decoded.iter().map(|d| {
        let mut conn = conn.clone();
        async move {
            let part = match d {
                Ok(part) => part,
                Err(why) => return Ok(why.to_string()),
            };
            let key = part.keys[0].as_str();
            conn.keep(key).await;
            let applied = within(limit, apply(&mut conn, part, false)).await;
            let kept = conn.replicated(key).await;
            match applied {
                Ok(Applied::Now | Applied::Before) if kept => Ok(String::new()),
                // Not confirmed (its primary may have died with it): the
                // group stays in the outbox, and the next drain applies it
                // again on the slot's primary now (or finds its marker
                // there).
                Ok(Applied::Now | Applied::Before) => Err((
                    redis::RedisError::from(std::io::Error::other(
                        "no replica confirmed a part's write; it stays in the outbox",
                    )),
                    Slot::for_key(key),
                )),
                Ok(Applied::Refused(why)) => Ok(why),
                Err(e) => Err((e, Slot::for_key(key))),
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
fn group_end(decoded: &[Decoded<'_>], at: usize) -> usize {
    match decoded[at].ok().map(Part::group) {
        None => at + 1,
        Some(g) => {
            at + decoded[at..]
                .iter()
                .take_while(|d| d.ok().map(Part::group) == Some(g))
                .count()
        }
    }
}

/// Applies queue `q`'s outbox from its head, in order for each job, until
/// `mine` (the parts of one commit, `entries` in the outbox) are all
/// applied, or, `mine` empty, the outbox is; at most [`MOST`] parts.
/// Consecutive parts of one phase of one commit apply at once; a group
/// applies only after the groups of its job before it. A group that cannot
/// be applied (its slot's node away) blocks its job, and its slot, for the
/// rest of this drain: their later parts stay, every other job's go on.
/// Returns how many parts it took off, or the first error once nothing more
/// can be applied.
pub async fn drain(
    conn: &mut Conn,
    q: &QueueKeys,
    mine: &[Part],
    entries: &[Vec<u8>],
) -> redis::RedisResult<usize> {
    let outbox = q.outbox();
    let mut left: HashSet<&[u8]> = entries.iter().map(Vec::as_slice).collect();
    let own_job = mine.first().map(Part::job);
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
        let read: Vec<Result<Part, String>> = chunk.iter().map(|e| Part::decode(e)).collect();
        let decoded: Vec<Decoded<'_>> = read
            .iter()
            .map(|r| r.as_ref().map_err(String::as_str))
            .collect();
        let (mut progressed, mut skipped_now) = (false, 0);
        let mut at = 0;
        while at < chunk.len() {
            let end = group_end(&decoded, at);
            let job = decoded[at].ok().map(Part::job);
            let blocked = job.as_ref().is_some_and(|j| blocked_jobs.contains(j))
                || decoded[at..end].iter().any(|d| {
                    d.is_ok_and(|p| blocked_slots.contains(&Slot::for_key(p.keys[0].as_str())))
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
                    if !entries.is_empty() && left.is_empty() {
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

/// Applies `mine`, the parts of one commit (`entries` in the outbox),
/// phase by phase, each phase's parts at once (see [`apply_group`]); the
/// first group that cannot apply fails it, leaving it and the groups after
/// it in the outbox.
async fn apply_own(
    conn: &Conn,
    q: &QueueKeys,
    mine: &[Part],
    entries: &[Vec<u8>],
) -> redis::RedisResult<usize> {
    let decoded: Vec<Decoded<'_>> = mine.iter().map(Ok).collect();
    let mut at = 0;
    while at < entries.len() {
        let end = group_end(&decoded, at);
        if let GroupEnd::Blocked(e, _) =
            apply_group(conn, q, &entries[at..end], &decoded[at..end]).await?
        {
            return Err(e);
        }
        at = end;
    }
    Ok(entries.len())
}

/// Applies what queue `q`'s outbox holds (the scheduler's round).
pub async fn sweep(conn: &mut Conn, q: &QueueKeys) -> redis::RedisResult<usize> {
    drain(conn, q, &[], &[]).await
}

/// Failures of the workers' own applies, logged once per outage.
static AFTER_OUTAGES: LazyLock<Outages> = LazyLock::new(Outages::default);
/// Queues whose parts the workers leave to the scheduler until then.
static BACKED_OFF: LazyLock<Mutex<HashMap<String, Instant>>> = LazyLock::new(Default::default);

/// Right after a commit: applies its parts `mine` (`entries` in the
/// outbox, as [`commit`](super::commit) answered) within [`AFTER_LIMIT`];
/// what it cannot apply is left to the scheduler. When no earlier part of
/// its job waits in the outbox (`behind` false, as the commit answered), it
/// applies its own parts directly, one round trip per phase and one to take
/// them off, however long the outbox is; otherwise it drains the outbox
/// from the head until its parts are applied, so they follow the earlier
/// ones. After a failure the queue's parts are left to the scheduler for
/// [`BACK_OFF`], so a node away does not slow every commit.
pub async fn after(
    conn: &mut Conn,
    q: &QueueKeys,
    mine: &[Part],
    entries: &[Vec<u8>],
    behind: bool,
) {
    if entries.is_empty() {
        return;
    }
    debug_assert_eq!(mine.len(), entries.len(), "a part for each entry");
    let backed_off = |now: Instant| {
        let map = BACKED_OFF.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&q.name).is_some_and(|until| now < *until)
    };
    if backed_off(Instant::now()) {
        return;
    }
    let done = match behind {
        true => within(AFTER_LIMIT, drain(conn, q, mine, entries)).await,
        false => within(AFTER_LIMIT, apply_own(conn, q, mine, entries)).await,
    };
    if done.is_err() {
        let mut map = BACKED_OFF.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(q.name.clone(), Instant::now() + BACK_OFF);
    }
    AFTER_OUTAGES.check("apply commit parts", &q.name, done);
}

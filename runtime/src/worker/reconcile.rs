//! Reconciliation: a live worker takes back the jobs its own in-flight lists
//! hold that it is not running.
//!
//! Redis recovers a dead worker's jobs (the scheduler, once its heartbeat
//! expires), but a live worker's list can hold jobs it does not have
//! ([`crate::queue::held`]: a settlement a failover lost, a fetch whose
//! reply was lost). Nobody else would ever move them while it beats. So,
//! every heartbeat TTL, the worker reads each of its in-flight lists while
//! no fetch of that queue is on its way, and notes the entries it does not
//! hold. An entry noted at two rounds in a row is an orphan: it goes back
//! to the front of its queue (`recover.lua`, only if it is still in the
//! list and its record still says `running` here; counted in the record's
//! `recovered`, not as a crash), and runs again. Two rounds, not one: an
//! entry must outlive a whole TTL unheld before it is taken back.
//!
//! Its cost: one `LRANGE` per queue per TTL, of a list no longer than the
//! jobs the worker holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use tokio::sync::watch;

use crate::queue::Conn;
use crate::queue::health::Outages;
use crate::queue::held::Held;
use crate::queue::keys::QueueKeys;
use crate::scheduler::{each_queue, recover_call};

/// Reads of a list tried before a round gives up on it (a fetch of its queue
/// was on its way at each): the entries noted before are kept for the next.
const TRIES: usize = 20;
/// The pause between two tries.
const TRY_PAUSE: Duration = Duration::from_millis(5);

/// Entries of each queue's in-flight list noted as not held at the last
/// round.
type Noted = HashMap<String, Vec<Vec<u8>>>;

/// Reconciles `worker`'s in-flight lists of `queues` every `every` until
/// `quiet` (the stop puts back whatever is left, see the launcher).
pub async fn run(
    conn: Conn,
    worker: String,
    queues: Vec<String>,
    held: Arc<Held>,
    every: Duration,
    mut quiet: watch::Receiver<bool>,
) {
    let outages = Outages::default();
    let mut noted: Noted = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = quiet.wait_for(|q| *q) => return,
        }
        let before = Arc::new(std::mem::take(&mut noted));
        let done = each_queue(&conn, &queues, "reconcile", &outages, |conn, q| {
            let (held, before, worker) = (held.clone(), before.clone(), worker.clone());
            async move { round(conn, &q, &worker, &held, before.get(&q.name)).await }
        })
        .await;
        // A queue whose round failed starts over: nothing noted.
        for (queue, (now, moved, ids)) in done {
            if moved > 0 {
                tracing::warn!(
                    %queue,
                    jobs = moved,
                    ids = ?ids,
                    "jobs this worker was not running were left in its in-flight lists (their settlement or fetch was lost, as in a failover that loses writes); back in their queues"
                );
            }
            noted.insert(queue.to_owned(), now);
        }
    }
}

/// One queue's round: the entries not held now (to note), how many of those
/// noted last time were taken back, and the ids of those (as far as the
/// payloads name one).
async fn round(
    mut conn: Conn,
    q: &QueueKeys,
    worker: &str,
    held: &Held,
    before: Option<&Vec<Vec<u8>>>,
) -> redis::RedisResult<(Vec<Vec<u8>>, u64, Vec<String>)> {
    let Some(list) = read(&mut conn, q, worker, held).await? else {
        return Ok((before.cloned().unwrap_or_default(), 0, Vec::new()));
    };
    let mut earlier: Vec<&[u8]> = before
        .map(|b| b.iter().map(Vec::as_slice).collect())
        .unwrap_or_default();
    let mut orphans = Vec::new();
    let mut now = Vec::new();
    for entry in held.missing(&q.name, &list) {
        match earlier.iter().position(|e| *e == entry) {
            Some(i) => {
                earlier.swap_remove(i);
                orphans.push(entry);
            }
            None => now.push(entry.to_vec()),
        }
    }
    if orphans.is_empty() {
        return Ok((now, 0, Vec::new()));
    }
    let mut call = recover_call(q, worker);
    for entry in &orphans {
        call.arg(*entry);
    }
    let (moved, _poisoned): (u64, u64) = call.invoke_async(&mut conn).await?;
    let ids = orphans
        .iter()
        .filter_map(|p| crate::job::Payload::decode(p).ok().map(|j| j.id))
        .collect();
    Ok((now, moved, ids))
}

/// `q`'s in-flight list of `worker`, read while no fetch of `q` was on its
/// way (so every entry a fetch moved is held already); none when no such
/// moment came within [`TRIES`].
async fn read(
    conn: &mut Conn,
    q: &QueueKeys,
    worker: &str,
    held: &Held,
) -> redis::RedisResult<Option<Vec<Vec<u8>>>> {
    for _ in 0..TRIES {
        if let Some(sent) = held.quiet(&q.name) {
            let list: Vec<Vec<u8>> = conn.lrange(q.inflight(worker), 0, -1).await?;
            if held.quiet(&q.name) == Some(sent) {
                return Ok(Some(list));
            }
        }
        tokio::time::sleep(TRY_PAUSE).await;
    }
    Ok(None)
}

//! Reliable fetch: units of work taken from queues in weighted or strict order.

use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;

use super::keys::QueueKeys;
use super::settle::{Disposition, Settlement, Settler};
use super::{Conn, SCRIPTS};

/// The order a worker takes its queues in, with Sidekiq's semantics: queues
/// given without weights (`-q critical -q default`) are strict: a queue is
/// served only when every queue before it is empty. With weights
/// (`-q critical,3 -q default,1`) each fetch draws a fresh random order in which
/// a queue comes first with probability proportional to its weight.
#[derive(Clone, Debug)]
pub struct QueueOrder {
    queues: Vec<(Arc<QueueKeys>, u32)>,
    strict: bool,
}

impl QueueOrder {
    /// Parses `NAME` or `NAME,WEIGHT` specs; none means the `default` queue.
    pub fn parse(specs: &[String]) -> Result<QueueOrder, String> {
        let mut queues = Vec::new();
        let mut weighted = false;
        for spec in specs {
            let (name, weight) = match spec.split_once(',') {
                Some((name, w)) => {
                    weighted = true;
                    let w: u32 = w.trim().parse().map_err(|_| {
                        format!("queue `{spec}`: the weight must be a positive integer")
                    })?;
                    if w == 0 {
                        return Err(format!("queue `{spec}`: the weight must be at least 1"));
                    }
                    (name.trim(), w)
                }
                None => (spec.trim(), 1),
            };
            crate::job::check_name("queue", name)?;
            if queues
                .iter()
                .any(|(q, _): &(Arc<QueueKeys>, u32)| q.name == name)
            {
                return Err(format!("queue `{name}` is given twice"));
            }
            queues.push((Arc::new(QueueKeys::new(name)), weight));
        }
        if queues.is_empty() {
            queues.push((Arc::new(QueueKeys::new(crate::config::DEFAULT_QUEUE)), 1));
        }
        Ok(QueueOrder {
            queues,
            strict: !weighted,
        })
    }

    /// Every queue, in the order given.
    pub fn queues(&self) -> impl Iterator<Item = &Arc<QueueKeys>> {
        self.queues.iter().map(|(q, _)| q)
    }

    /// The order for the next fetch.
    pub fn next_order(&self) -> Vec<Arc<QueueKeys>> {
        if self.strict || self.queues.len() == 1 {
            return self.queues().cloned().collect();
        }
        let mut draw: Vec<&Arc<QueueKeys>> = self
            .queues
            .iter()
            .flat_map(|(q, w)| std::iter::repeat_n(q, *w as usize))
            .collect();
        draw.shuffle(&mut rand::rng());
        let mut order: Vec<Arc<QueueKeys>> = Vec::with_capacity(self.queues.len());
        for q in draw {
            if !order.iter().any(|o| Arc::ptr_eq(o, q)) {
                order.push(q.clone());
            }
        }
        order
    }
}

/// One job taken from a queue. It settles itself: [`Unit::settle`] sends its
/// outcome to be committed; a unit dropped unsettled (a processor that panicked)
/// goes back to the front of its queue.
pub struct Unit {
    /// The queue it came from.
    pub queue: Arc<QueueKeys>,
    /// The payload exactly as queued (not always UTF-8: anyone can push).
    pub raw: Vec<u8>,
    /// This attempt's number (1 for the first), 0 for a payload that is not a job.
    pub attempt: u32,
    /// The id the fetch recorded the job under; empty when it found none.
    pub id: String,
    /// The job's last committed checkpoint sequence; 0 on a fresh start.
    pub seq: u64,
    /// A unique key to release once this unit's settlement is committed (the
    /// processor sets it for a job settled done or dead that holds one).
    pub unique: Option<String>,
    /// How long it waited in its queue since it was enqueued, became due or
    /// was put back; `None` when its record does not say (pushed by a plain
    /// `LPUSH`).
    pub waited: Option<Duration>,
    /// Whether the job belongs to a batch (its settlement tells the batch).
    pub batch: bool,
    /// A payload whose id names another job (see [`crate::job`], "One id,
    /// one job"): that job's id and state. Its record was not touched, and
    /// `id` is empty so that nothing settles it under that id.
    pub duplicate_of: Option<(String, String)>,
    /// Attempts in a row that yielded without committing a checkpoint, as
    /// the record says (see [`crate::worker::stall`]).
    pub stalls: u32,
    /// Its key in the worker's [`super::held::Held`].
    held: u64,
    settler: Option<Settler>,
}

impl Unit {
    /// Lets the unit go without settling it: the job belongs to another
    /// attempt now (its lease was lost).
    pub fn forget(mut self) {
        if let Some(settler) = self.settler.take() {
            settler.held().release(self.held);
        }
    }

    /// Commits this unit's outcome (batched with others; see [`super::settle`]).
    pub fn settle(
        mut self,
        id: &str,
        disposition: Disposition,
        mut fields: Vec<(&'static str, String)>,
    ) {
        super::settle::bound_fields(&mut fields);
        if let Some(settler) = self.settler.take() {
            settler.send(Settlement {
                queue: self.queue.clone(),
                raw: std::mem::take(&mut self.raw),
                id: id.to_owned(),
                attempt: self.attempt,
                disposition,
                fields,
                unique: self.unique.take(),
                batch: self.batch,
                held: self.held,
            });
        }
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        if let Some(settler) = self.settler.take() {
            let id = std::mem::take(&mut self.id);
            tracing::warn!(queue = %self.queue.name, %id, "unit dropped unsettled; requeueing");
            settler.send(Settlement {
                queue: self.queue.clone(),
                raw: std::mem::take(&mut self.raw),
                id,
                attempt: self.attempt,
                disposition: Disposition::Requeue {
                    front: true,
                    next: None,
                },
                fields: Vec::new(),
                unique: None,
                batch: self.batch,
                held: self.held,
            });
        }
    }
}

/// Takes up to `max` jobs from `queue` into `worker`'s in-flight list.
pub async fn fetch(
    conn: &mut Conn,
    queue: &Arc<QueueKeys>,
    worker: &str,
    max: usize,
    settler: &Settler,
) -> redis::RedisResult<Vec<Unit>> {
    type Row = (Vec<u8>, u32, String, u64, i64, u8, String, u32);
    // Only Cluster sends a request twice (see `commands/fetch.lua`); one
    // server and Sentinel skip keeping the reply.
    let nonce = match conn.is_cluster() {
        true => format!("{:016x}", rand::random::<u64>()),
        false => String::new(),
    };
    // Counted answered when this returns, its jobs held by then.
    let _fetching = settler.held().fetching(&queue.name);
    let reply: Vec<Row> = SCRIPTS
        .fetch
        .key(queue.pending())
        .key(queue.inflight(worker))
        .key(queue.paused())
        .key(queue.fetched(worker))
        .arg(max)
        .arg(worker)
        .arg(queue.job_prefix())
        .arg(&queue.name)
        .arg(nonce)
        .invoke_async(conn)
        .await?;
    Ok(reply
        .into_iter()
        .map(
            |(raw, attempt, id, seq, waited, batch, duplicate, stalls)| {
                let (id, duplicate_of) = if duplicate.is_empty() {
                    (id, None)
                } else {
                    (String::new(), Some((id, duplicate)))
                };
                Unit {
                    queue: queue.clone(),
                    held: settler.held().hold(&queue.name, &raw),
                    raw,
                    attempt,
                    id,
                    seq,
                    unique: None,
                    waited: u64::try_from(waited).ok().map(Duration::from_millis),
                    batch: batch == 1,
                    duplicate_of,
                    stalls,
                    settler: Some(settler.clone()),
                }
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unweighted_queues_are_strict() {
        let o = QueueOrder::parse(&["critical".into(), "default".into()]).unwrap();
        for _ in 0..20 {
            let names: Vec<_> = o.next_order().iter().map(|q| q.name.clone()).collect();
            assert_eq!(names, ["critical", "default"]);
        }
    }

    #[test]
    fn weights_set_how_often_a_queue_comes_first() {
        let o = QueueOrder::parse(&["critical,3".into(), "default,1".into()]).unwrap();
        let firsts = (0..4000)
            .filter(|_| o.next_order()[0].name == "critical")
            .count();
        // Expected 3000 of 4000; allow for chance.
        assert!((2700..3300).contains(&firsts), "{firsts}");
        assert_eq!(o.next_order().len(), 2);
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(QueueOrder::parse(&["a,0".into()]).is_err());
        assert!(QueueOrder::parse(&["a,x".into()]).is_err());
        assert!(QueueOrder::parse(&["a".into(), "a".into()]).is_err());
        assert_eq!(
            QueueOrder::parse(&[]).unwrap().next_order()[0].name,
            "default"
        );
    }
}

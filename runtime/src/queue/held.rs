//! What a worker holds: each payload it took into one of its in-flight
//! lists, from the fetch's answer until its settlement is known written.
//!
//! Redis's in-flight list of a live worker should hold only those. It can
//! hold more: a settlement acknowledged by a primary that died before its
//! replica had it (a failover with `--durability local`, see the README's
//! "Durability") is gone, and its job sits in the list, `running` on a worker
//! that is not running it; so does a job whose fetch moved it but whose reply
//! never came back. No other node recovers it while the worker beats, so
//! the worker looks for such entries itself ([`crate::worker::reconcile`]).
//!
//! To tell them from jobs on their way, it counts fetches per queue: every
//! fetch is counted when sent and when its answer's jobs are held (a queue
//! has at most one fetch on its way, see [`crate::worker::manager`]). A list
//! read while no fetch of its queue was on its way, and none was sent during
//! the read, holds only what this registry holds and the orphans.
//!
//! The registry keeps a count per (queue, payload) hash: one lock and one
//! map update per job fetched and per job settled, no copy of the payload.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

/// The payloads a worker holds, and its fetches per queue.
#[derive(Default)]
pub struct Held {
    hasher: RandomState,
    /// (queue, payload) hash → copies held.
    units: Mutex<HashMap<u64, u32>>,
    /// Queue → (fetches sent, fetches answered).
    fetches: Mutex<HashMap<String, (u64, u64)>>,
}

/// One fetch on its way: counted answered when dropped (after its jobs are
/// held, or when it failed).
pub struct Fetching<'a> {
    held: &'a Held,
    queue: &'a str,
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        let mut f = lock(&self.held.fetches);
        f.entry(self.queue.to_owned()).or_default().1 += 1;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Held {
    /// The key of `raw` taken from `queue`.
    pub fn key(&self, queue: &str, raw: &[u8]) -> u64 {
        self.hasher.hash_one((queue, raw))
    }

    /// A fetch on `queue` is sent; it is answered when the value is dropped.
    pub fn fetching<'a>(&'a self, queue: &'a str) -> Fetching<'a> {
        lock(&self.fetches).entry(queue.to_owned()).or_default().0 += 1;
        Fetching { held: self, queue }
    }

    /// `raw`, just fetched from `queue`, is held; its key.
    pub fn hold(&self, queue: &str, raw: &[u8]) -> u64 {
        let key = self.key(queue, raw);
        *lock(&self.units).entry(key).or_default() += 1;
        key
    }

    /// The unit of `key` is settled (its settlement written), or no longer
    /// this worker's.
    pub fn release(&self, key: u64) {
        let mut units = lock(&self.units);
        if let Some(n) = units.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                units.remove(&key);
            }
        }
    }

    /// Fetches sent on `queue` so far, when every one of them is answered
    /// (none on its way); `None` while one is.
    pub fn quiet(&self, queue: &str) -> Option<u64> {
        let (sent, answered) = lock(&self.fetches).get(queue).copied().unwrap_or_default();
        (sent == answered).then_some(sent)
    }

    /// The entries of `list` (read from `queue`'s in-flight list) that are
    /// not held: each copy held accounts for one entry.
    pub fn missing<'l>(&self, queue: &str, list: &'l [Vec<u8>]) -> Vec<&'l [u8]> {
        let units = lock(&self.units);
        let mut used: HashMap<u64, u32> = HashMap::new();
        list.iter()
            .filter(|raw| {
                let key = self.key(queue, raw);
                let seen = used.entry(key).or_default();
                *seen += 1;
                *seen > units.get(&key).copied().unwrap_or(0)
            })
            .map(Vec::as_slice)
            .collect()
    }

    /// Units held, in all.
    pub fn len(&self) -> usize {
        lock(&self.units).values().map(|n| *n as usize).sum()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        lock(&self.units).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_not_held_are_missing_copy_by_copy() {
        let h = Held::default();
        let (a, b) = (b"job-a".to_vec(), b"job-b".to_vec());
        let ka = h.hold("q", &a);
        h.hold("q", &b);
        let list = vec![a.clone(), b.clone(), a.clone(), b"job-c".to_vec()];
        // One copy of `a` is held, not two; `c` not at all.
        assert_eq!(h.missing("q", &list), [&a[..], b"job-c"]);
        // The same payload from another queue is another unit.
        assert_eq!(h.missing("other", &list[..1]), [&a[..]]);
        h.release(ka);
        assert_eq!(h.missing("q", &list[..2]), [&a[..]]);
        assert_eq!(h.len(), 1);
        h.release(ka);
        assert_eq!(h.len(), 1, "a key released more often than held stays at 0");
    }

    #[test]
    fn a_queue_is_quiet_only_with_no_fetch_on_its_way() {
        let h = Held::default();
        assert_eq!(h.quiet("q"), Some(0));
        let f = h.fetching("q");
        assert_eq!(h.quiet("q"), None);
        assert_eq!(h.quiet("other"), Some(0));
        drop(f);
        assert_eq!(h.quiet("q"), Some(1));
    }
}

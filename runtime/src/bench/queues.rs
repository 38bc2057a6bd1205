//! Queue names for the benchmarks that spread over Redis Cluster's
//! primaries: the drain over several queues, the fan-out's parent and child
//! queues. A queue's keys share one slot, fixed by its name
//! (`stoker:{q:NAME}:...`), so names are probed: each candidate's primary as
//! the connection routes it ([`spread::primary_of`]), then chosen so that
//! the queues take the primaries in turn. On one server (and on Sentinel)
//! every candidate has the same owner, none, and the first names are taken.

use redis::cluster_routing::Slot;

use crate::queue::keys::QueueKeys;
use crate::queue::{Conn, spread};

/// The `k`th candidate name: `base`, then `base-1`, `base-2`, ...
pub fn candidate(base: &str, k: usize) -> String {
    if k == 0 {
        base.to_owned()
    } else {
        format!("{base}-{k}")
    }
}

/// The first `count` candidates, each with the id of the primary its queue
/// lands on (none off Cluster). The probes are sent at once.
pub async fn probe(
    conn: &Conn,
    base: &str,
    count: usize,
) -> redis::RedisResult<Vec<(String, Option<String>)>> {
    let probes = (0..count).map(|k| {
        let name = candidate(base, k);
        let mut conn = conn.clone();
        async move {
            let owner = spread::primary_of(&mut conn, &QueueKeys::new(&name).pending()).await?;
            Ok((name, owner))
        }
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .collect()
}

/// `n` names from `candidates` (names with the primary each lands on),
/// taking the primaries in turn: the first candidate's primary first, then
/// the others in the order they first appear. With `n` at most the number
/// of primaries, each queue has a primary of its own; with more, they are
/// spread as evenly as the candidates allow. Fewer than `n` only when there
/// are fewer candidates.
pub fn spread<O: PartialEq>(n: usize, candidates: &[(String, O)]) -> Vec<String> {
    // The candidates of each primary, in order.
    let mut owners: Vec<(&O, Vec<&str>)> = Vec::new();
    for (name, owner) in candidates {
        match owners.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, names)) => names.push(name),
            None => owners.push((owner, vec![name])),
        }
    }
    let mut picked = Vec::with_capacity(n);
    let mut round = 0;
    while picked.len() < n {
        let before = picked.len();
        for (_, names) in &owners {
            if let Some(name) = names.get(round)
                && picked.len() < n
            {
                picked.push((*name).to_owned());
            }
        }
        if picked.len() == before {
            break;
        }
        round += 1;
    }
    picked
}

/// The first candidate not in `taken` whose primary is none of `avoid`'s;
/// failing that, none of all but the last of `avoid`, and so on down to any
/// candidate not taken (so list in `avoid` the primaries to keep apart from
/// most first).
pub fn apart<O: PartialEq>(
    candidates: &[(String, O)],
    avoid: &[&O],
    taken: &[String],
) -> Option<String> {
    (0..=avoid.len()).rev().find_map(|keep| {
        candidates
            .iter()
            .find(|(name, owner)| !taken.contains(name) && !avoid[..keep].contains(&owner))
            .map(|(name, _)| name.clone())
    })
}

/// The first `n` candidates whose queue's slot is the slot of `key`: queues
/// whose scripts touch `key` within their own slot.
pub fn in_slot_of(base: &str, key: &str, n: usize) -> Vec<String> {
    let slot = Slot::for_key(key);
    (0..)
        .map(|k| candidate(base, k))
        .filter(|name| Slot::for_key(QueueKeys::new(name).pending()) == slot)
        .take(n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(list: &[(&str, u8)]) -> Vec<(String, u8)> {
        list.iter().map(|(n, o)| ((*n).to_owned(), *o)).collect()
    }

    #[test]
    fn queues_take_the_primaries_in_turn_the_first_name_first() {
        let c = owned(&[
            ("bench", 2),
            ("bench-1", 2),
            ("bench-2", 0),
            ("bench-3", 0),
            ("bench-4", 1),
            ("bench-5", 2),
        ]);
        assert_eq!(spread(1, &c), ["bench"]);
        assert_eq!(spread(3, &c), ["bench", "bench-2", "bench-4"]);
        // More queues than primaries: round after round, as evenly as the
        // candidates allow (primary 1 has only one).
        assert_eq!(
            spread(5, &c),
            ["bench", "bench-2", "bench-4", "bench-1", "bench-3"]
        );
        assert_eq!(spread(9, &c).len(), 6);
    }

    #[test]
    fn on_one_server_the_first_names_are_taken() {
        let c: Vec<(String, Option<String>)> =
            (0..5).map(|k| (candidate("bench", k), None)).collect();
        assert_eq!(spread(3, &c), ["bench", "bench-1", "bench-2"]);
        let first = apart(&c, &[&None], &[]).unwrap();
        assert_eq!(first, "bench");
        assert_eq!(
            apart(&c, &[&None, &None], &[first]).as_deref(),
            Some("bench-1")
        );
    }

    #[test]
    fn apart_keeps_off_the_primaries_to_avoid_most_first() {
        let c = owned(&[("f", 0), ("f-1", 1), ("f-2", 0), ("f-3", 2)]);
        assert_eq!(apart(&c, &[&0], &[]).as_deref(), Some("f-1"));
        assert_eq!(apart(&c, &[&1, &0], &[]).as_deref(), Some("f-3"));
        // Two primaries only: off the first to avoid, at least.
        let two = owned(&[("f", 0), ("f-1", 1), ("f-2", 0)]);
        assert_eq!(
            apart(&two, &[&1, &0], &["f".to_owned()]).as_deref(),
            Some("f-2")
        );
        // Nothing left off it: any name not taken.
        let taken = ["f".to_owned(), "f-2".to_owned()];
        assert_eq!(apart(&two, &[&1], &taken).as_deref(), Some("f-1"));
    }

    #[test]
    fn names_in_a_keys_slot_hash_there() {
        let names = in_slot_of("fan", "mileage:total", 2);
        assert_eq!(names.len(), 2);
        assert_ne!(names[0], names[1]);
        for n in &names {
            assert_eq!(
                Slot::for_key(QueueKeys::new(n).pending()),
                Slot::for_key("mileage:total")
            );
        }
    }
}

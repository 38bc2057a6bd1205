//! A commit split by slot ([`split`]), and the commit with its parts for the
//! outbox ([`commit`]).

use futures::future::join_all;
use redis::cluster_routing::Slot;

use super::appliers::{Applied, apply};
use super::format::{Part, marker};
use crate::queue::Conn;
use crate::queue::body::Body;
use crate::queue::commit::{self, Commit, Committed};
use crate::queue::keys;

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::queue::commit::{Child, CommitKind, StagedBatch};
    use crate::queue::keys::{BatchKeys, QueueKeys};
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

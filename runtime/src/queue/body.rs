//! A commit's body as the scripts take it: child jobs, batches, batch index
//! entries and staged writes, laid out in `KEYS` and `ARGV` the way the
//! `body` piece of [`crate::commands`] reads them. One builder for `commit`
//! (the whole body on a single Redis; the queue slot's share on Redis
//! Cluster) and for `apply` (one other slot's share, [`super::parts`]).

use std::collections::HashMap;

use super::commit::{Child, StagedBatch};
use super::staged::StagedWrite;

/// What one script writes of a commit.
#[derive(Default)]
pub struct Body<'a> {
    /// Child jobs.
    pub children: Vec<&'a Child>,
    /// Batches to create.
    pub batches: Vec<&'a StagedBatch>,
    /// Whether [`Body::batches`] are added to the batch index as they are
    /// created (the index is in the same slot).
    pub index_batches: bool,
    /// Ids of batches created elsewhere, to add to the batch index here.
    pub index_ids: Vec<&'a str>,
    /// Staged writes, in order.
    pub writes: Vec<&'a StagedWrite>,
}

impl<'a> Body<'a> {
    /// All of it in one step (a single Redis).
    pub fn whole(
        children: &'a [Child],
        batches: &'a [StagedBatch],
        writes: &'a [StagedWrite],
    ) -> Body<'a> {
        Body {
            children: children.iter().collect(),
            batches: batches.iter().collect(),
            index_batches: !batches.is_empty(),
            index_ids: Vec::new(),
            writes: writes.iter().collect(),
        }
    }

    /// Whether it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.batches.is_empty()
            && self.index_ids.is_empty()
            && self.writes.is_empty()
    }

    /// Appends its keys to `keys` (each once; the arguments refer to them by
    /// index, from 1 as Lua does) and its arguments to `args`.
    pub fn lay_out(&self, keys: &mut Vec<String>, args: &mut Vec<Vec<u8>>) {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut index_of = |key: String| -> usize {
            if let Some(&i) = seen.get(&key) {
                return i;
            }
            keys.push(key.clone());
            seen.insert(key, keys.len());
            keys.len()
        };
        let children: Vec<(usize, usize, usize)> = self
            .children
            .iter()
            .map(|c| {
                // A delayed child goes to its scheduled set (0: none).
                let scheduled = if c.delay_ms > 0 {
                    index_of(c.queue.scheduled())
                } else {
                    0
                };
                (
                    index_of(c.queue.pending()),
                    index_of(c.queue.job(&c.id)),
                    scheduled,
                )
            })
            .collect();
        let batches: Vec<(usize, usize)> = self
            .batches
            .iter()
            .map(|b| (index_of(b.keys.meta()), index_of(b.keys.jobs())))
            .collect();
        let index = if self.index_batches && !self.batches.is_empty() {
            index_of(super::keys::batches())
        } else {
            0
        };
        let index_alone = if self.index_ids.is_empty() {
            0
        } else {
            index_of(super::keys::batches())
        };
        let writes: Vec<usize> = self
            .writes
            .iter()
            .map(|w| index_of(w.key.clone()))
            .collect();

        args.push(t(self.children.len()));
        for (c, (list, record, scheduled)) in self.children.iter().zip(children) {
            args.extend([
                t(list),
                t(record),
                t(&c.id),
                t(&c.payload),
                t(&c.class),
                t(&c.queue.name),
                t(&c.args),
                t(c.batch.as_deref().unwrap_or("")),
                t(scheduled),
                t(c.delay_ms),
                t(c.depth),
            ]);
        }
        args.extend([t(self.batches.len()), t(index)]);
        for (b, (meta, jobs)) in self.batches.iter().zip(batches) {
            args.extend([t(meta), t(jobs), t(b.fields.len())]);
            for (field, value) in &b.fields {
                args.extend([t(field), t(value)]);
            }
            args.push(t(b.members.len()));
            args.extend(b.members.iter().map(t));
        }
        args.push(t(self.index_ids.len()));
        if !self.index_ids.is_empty() {
            args.push(t(index_alone));
            args.extend(self.index_ids.iter().map(t));
        }
        args.push(t(self.writes.len()));
        for (w, key) in self.writes.iter().zip(writes) {
            args.extend([t(w.cmd), t(key), t(w.args.len())]);
            args.extend(w.args.iter().cloned());
        }
    }
}

/// A value as the scripts read it: its text.
pub fn t(a: impl std::fmt::Display) -> Vec<u8> {
    a.to_string().into_bytes()
}

//! The commit envelope: the KEYS and ARGV that
//! [`stoker::queue::commit::envelope`] builds for `commit.lua` from a
//! [`Commit`] (fields, child jobs, batches, staged writes), the function
//! `commit()` sends.
//!
//! Commits are built from arbitrary input (queues and keys drawn from small
//! sets, so keys repeat across children, batches and writes). The envelope
//! is read back the way `commit.lua` reads it, and checked: every count and
//! offset the script computes up front (pass 1) agrees with a walk through
//! ARGV, which ends exactly at its last argument; every index into KEYS is in
//! range and names the key it stands for; each key is declared once; a
//! delayed child names its scheduled set; what the script reads back (fields,
//! children, batches, writes) is what was committed; and no `unpack` the
//! script makes exceeds its `SLICE` (1,000 values, read from `commit.lua`:
//! record and batch fields, batch members; field slices keep pairs whole) or,
//! for a write the script lets through (at most its `MAX_ARGS` arguments),
//! Lua's stack ([`LUA_MAX_ARGS`], about 8,000).
#![no_main]

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use stoker::queue::commit::{Child, Commit, CommitKind, StagedBatch};
use stoker::queue::keys::{self, BatchKeys, QueueKeys};
use stoker::queue::staged::StagedWrite;

use stoker::queue::commit::envelope;

/// Redis's Lua: a C function gets at most LUAI_MAXCSTACK (8000) values, the
/// command name included.
const LUA_MAX_ARGS: usize = 7_999;
/// The most values one sliced `unpack` may take.
const MAX_SLICE: usize = 1_000;

const SCRIPT: &str = include_str!("../../runtime/src/commands/commit.lua");

/// `local NAME = N` of `commit.lua`.
fn script_const(name: &str) -> usize {
    let prefix = format!("local {name} = ");
    SCRIPT
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("commit.lua has no `{prefix}N`"))
}

const QUEUES: &[&str] = &["default", "critical", "q.1"];
const IDS: &[&str] = &["a", "b", "0f3c9a2b71d04e5e8a61c2d9", "job-1"];
const FIELDS: &[&str] = &["result", "state_bytes", "progress", "usage", "log"];
const BATCH_FIELDS: &[&str] = &["id", "total", "success", "complete", "description"];
const CMDS: &[&str] = &[
    "SET", "DEL", "PEXPIRE", "INCRBY", "HSET", "HDEL", "HINCRBY", "SADD", "SREM", "ZADD",
    "ZINCRBY", "ZREM", "RPUSH", "LPUSH",
];
const KEYS: &[&str] = &["app:a", "app:b", "app:c:d", "stats:x"];

#[derive(Arbitrary, Debug)]
struct Input {
    queue: u8,
    id: u8,
    worker: String,
    lease: u32,
    seq: u64,
    done: bool,
    body: Vec<u8>,
    fields: Vec<(u8, String)>,
    children: Vec<ChildIn>,
    batches: Vec<BatchIn>,
    writes: Vec<WriteIn>,
}

#[derive(Arbitrary, Debug)]
struct ChildIn {
    queue: u8,
    class: String,
    args: String,
    batch: Option<u8>,
    delay_ms: u64,
    depth: u32,
}

#[derive(Arbitrary, Debug)]
struct BatchIn {
    id: u8,
    fields: Vec<(u8, String)>,
    members: Vec<u8>,
    /// Extra members, to reach the sizes where `unpack` is sliced.
    more: u16,
}

#[derive(Arbitrary, Debug)]
struct WriteIn {
    cmd: u8,
    key: Result<u8, String>,
    args: Vec<Vec<u8>>,
    /// Extra copies of the first argument.
    more: u8,
}

fn pick<'a>(from: &[&'a str], i: u8) -> &'a str {
    from[i as usize % from.len()]
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let queue = QueueKeys::new(pick(QUEUES, input.queue));
    let queues: Vec<Arc<QueueKeys>> = QUEUES.iter().map(|q| Arc::new(QueueKeys::new(q))).collect();
    let fields: Vec<(&'static str, String)> = input
        .fields
        .into_iter()
        .map(|(f, v)| (pick(FIELDS, f), v))
        .collect();
    let children: Vec<Child> = input
        .children
        .into_iter()
        .enumerate()
        .map(|(i, c)| Child {
            queue: queues[c.queue as usize % queues.len()].clone(),
            id: stoker::queue::commit::child_id(pick(IDS, input.id), input.seq, i),
            payload: format!("{{\"class\":{:?},\"args\":{:?}}}", c.class, c.args),
            class: c.class,
            args: c.args,
            batch: c.batch.map(|b| format!("batch{b}")),
            delay_ms: c.delay_ms % (366 * 24 * 3600 * 1000),
            depth: c.depth,
        })
        .collect();
    let batches: Vec<StagedBatch> = input
        .batches
        .into_iter()
        .filter(|b| !b.members.is_empty())
        .map(|b| {
            let mut members: Vec<String> = b.members.iter().map(|m| format!("m{m}")).collect();
            members.extend((0..b.more % 3000).map(|m| format!("x{m}")));
            StagedBatch {
                keys: BatchKeys::new(&format!("batch{}", b.id)),
                fields: b
                    .fields
                    .into_iter()
                    .map(|(f, v)| (pick(BATCH_FIELDS, f), v))
                    .collect(),
                members,
            }
        })
        .collect();
    let writes: Vec<StagedWrite> = input
        .writes
        .into_iter()
        .map(|w| {
            let mut args = w.args;
            if let Some(first) = args.first().cloned() {
                args.extend(std::iter::repeat_n(first, w.more as usize * 8));
            }
            StagedWrite {
                cmd: pick(CMDS, w.cmd),
                key: match w.key {
                    Ok(k) => pick(KEYS, k).to_owned(),
                    Err(k) => format!("app:{k}"),
                },
                args,
            }
        })
        .collect();
    let commit = Commit {
        queue: &queue,
        id: pick(IDS, input.id),
        worker: &input.worker,
        lease: input.lease,
        seq: input.seq,
        kind: if input.done {
            CommitKind::Done { raw: &input.body }
        } else {
            CommitKind::Checkpoint {
                snapshot: &input.body,
            }
        },
        fields: &fields,
        children: &children,
        batches: &batches,
        writes: &writes,
    };
    let (k, a) = envelope(&commit);
    check(&commit, &k, &a);
});

/// Reads the envelope as `commit.lua` does and checks it against `c`.
fn check(c: &Commit<'_>, keys: &[String], argv: &[Vec<u8>]) {
    let (slice, max_args) = (script_const("SLICE"), script_const("MAX_ARGS"));
    assert!(slice <= MAX_SLICE && slice % 2 == 0, "SLICE = {slice}");
    assert_eq!(max_args, stoker::host::redis::MAX_WRITE_ARGS);
    assert!(2 + max_args <= LUA_MAX_ARGS, "MAX_ARGS = {max_args}");
    // `sliced(cmd, key, from, to)`: the unpacks it makes, `from..=to` in
    // steps of SLICE, each after the command and key.
    let sliced = |what: &str, from: usize, to: usize, pairs: bool| {
        let mut i = from;
        while i <= to {
            let n = (i + slice - 1).min(to) + 1 - i;
            assert!(n <= MAX_SLICE, "{what}: an unpack of {n} values");
            assert!(2 + n <= LUA_MAX_ARGS, "{what}: over Lua's stack");
            assert!(!pairs || n % 2 == 0, "{what}: a slice splits a pair");
            i += slice;
        }
    };
    let q = c.queue;
    // KEYS[1..5]: fixed.
    assert_eq!(
        keys[..5],
        [
            q.job(c.id),
            q.snapshot(c.id),
            q.inflight(c.worker),
            q.stats(),
            q.batch_outbox()
        ]
    );
    let mut seen = std::collections::HashSet::new();
    for key in &keys[5..] {
        assert!(seen.insert(key), "key {key} declared twice");
    }
    // ARGV, 1-based as in Lua.
    let arg = |i: usize| -> &[u8] {
        assert!(
            i >= 1 && i <= argv.len(),
            "ARGV[{i}] read past the end ({})",
            argv.len()
        );
        &argv[i - 1]
    };
    let text = |i: usize| String::from_utf8(arg(i).to_vec()).expect("a textual argument");
    let num = |i: usize| -> usize {
        let t = text(i);
        t.parse()
            .unwrap_or_else(|_| panic!("ARGV[{i}] = {t:?} is not a count"))
    };
    let key_at = |i: usize| -> &str {
        let k = num(i);
        assert!(
            k >= 1 && k <= keys.len(),
            "ARGV[{i}] indexes KEYS[{k}] of {}",
            keys.len()
        );
        &keys[k - 1]
    };
    let (mode, body) = match c.kind {
        CommitKind::Checkpoint { snapshot } => ("checkpoint", snapshot),
        CommitKind::Done { raw } => ("done", raw),
    };
    assert_eq!(text(1), mode);
    assert_eq!(text(2), c.lease.to_string());
    assert_eq!(text(3), c.seq.to_string());
    assert_eq!(arg(4), body);
    assert_eq!(
        text(5),
        stoker::queue::settle::DONE_TTL.as_secs().to_string()
    );

    // The offsets the script computes before it reads anything.
    let nfields = num(6);
    let (first, last) = (7, 6 + nfields * 2);
    let children_at = last + 1;
    let batches_at = children_at + 1 + num(children_at) * 11;
    let mut writes_at = batches_at + 2;
    for _ in 0..num(batches_at) {
        let nf = num(writes_at + 2);
        writes_at += 4 + nf * 2 + num(writes_at + 3 + nf * 2);
    }

    // Fields: `sliced('HSET', rec, first, last)`.
    assert_eq!(nfields, c.fields.len());
    for (n, (f, v)) in c.fields.iter().enumerate() {
        assert_eq!(text(first + 2 * n), *f);
        assert_eq!(text(first + 2 * n + 1), *v);
    }
    sliced("record HSET", first, last, true);

    // Children: 11 arguments each.
    assert_eq!(num(children_at), c.children.len());
    let mut i = children_at + 1;
    for ch in c.children {
        assert_eq!(key_at(i), ch.queue.pending());
        assert_eq!(key_at(i + 1), ch.queue.job(&ch.id));
        assert_eq!(text(i + 2), ch.id);
        assert_eq!(text(i + 3), ch.payload);
        assert_eq!(text(i + 4), ch.class);
        assert_eq!(text(i + 5), ch.queue.name);
        assert_eq!(text(i + 6), ch.args);
        assert_eq!(text(i + 7), ch.batch.clone().unwrap_or_default());
        if ch.delay_ms > 0 {
            assert_eq!(key_at(i + 8), ch.queue.scheduled());
        } else {
            assert_eq!(num(i + 8), 0);
        }
        assert_eq!(num(i + 9), ch.delay_ms as usize);
        assert_eq!(num(i + 10), ch.depth as usize);
        i += 11;
    }
    assert_eq!(i, batches_at);

    // Batches.
    assert_eq!(num(batches_at), c.batches.len());
    if c.batches.is_empty() {
        assert_eq!(num(batches_at + 1), 0);
    } else {
        assert_eq!(key_at(batches_at + 1), keys::batches());
    }
    let mut b = batches_at + 2;
    for batch in c.batches {
        assert_eq!(key_at(b), batch.keys.meta());
        assert_eq!(key_at(b + 1), batch.keys.jobs());
        let nf = num(b + 2);
        assert_eq!(nf, batch.fields.len());
        for (n, (f, v)) in batch.fields.iter().enumerate() {
            assert_eq!(text(b + 3 + 2 * n), *f);
            assert_eq!(text(b + 4 + 2 * n), *v);
        }
        sliced("batch HSET", b + 3, b + 2 + nf * 2, true);
        let first_member = b + 4 + nf * 2;
        let last_member = b + 3 + nf * 2 + num(b + 3 + nf * 2);
        assert_eq!(last_member + 1 - first_member, batch.members.len());
        for (n, m) in batch.members.iter().enumerate() {
            assert_eq!(text(first_member + n), *m);
        }
        sliced("batch SADD", first_member, last_member, false);
        b = last_member + 1;
    }
    assert_eq!(b, writes_at);

    // Writes: `redis.call(cmd, KEYS[k], unpack(args))`, after pass 1 let
    // through only writes of at most MAX_ARGS arguments (a longer one refuses
    // the commit whole, before anything is unpacked).
    assert_eq!(num(writes_at), c.writes.len());
    let mut w = writes_at + 1;
    for write in c.writes {
        assert_eq!(text(w), write.cmd);
        assert_eq!(key_at(w + 1), write.key);
        let nargs = num(w + 2);
        assert_eq!(nargs, write.args.len());
        for (n, a) in write.args.iter().enumerate() {
            assert_eq!(arg(w + 3 + n), &a[..]);
        }
        if nargs <= max_args {
            assert!(
                2 + nargs <= LUA_MAX_ARGS,
                "{} with {nargs} arguments over Lua's stack",
                write.cmd
            );
        }
        w += 3 + nargs;
    }
    assert_eq!(
        w,
        argv.len() + 1,
        "arguments left over after the last write"
    );
}

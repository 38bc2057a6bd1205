//! Every Redis Lua script of the runtime, one `.lua` file each in this folder,
//! and the one loader that turns them into [`redis::Script`]s.
//!
//! Each script documents its `KEYS`, `ARGV` and reply in its header. Shared
//! code lives in pieces that scripts include: a line `--@include NAME` is
//! replaced by the text of `NAME.lua` (itself resolved the same way). The
//! pieces:
//! - `wake`: `announce(list)` and `wake(list, len)`, the wake-up of the
//!   workers idle on a queue ([`crate::queue::wake`]), for every script that
//!   pushes onto a pending list;
//! - `ident`: `ident(payload)`, a payload's id and token without decoding it;
//! - `now`: Redis's clock, `now` in ms (and `t`, the reply of `TIME`);
//! - `body`: a commit's body (child jobs, batches, staged writes): its
//!   envelope, the check that proves it applies whole, and its writes, for
//!   `commit` and for `apply` (a part of a commit in another slot).
//!
//! Every script starts with a shebang (`#!lua`, or `#!lua flags=no-writes` for
//! one that only reads), which stays the first line of the resolved script.
//! It is how a script says it touches one hash slot: on Redis Cluster, Redis
//! refuses a script with a shebang that reaches keys of two slots (declared in
//! `KEYS` or built inside), so a key that strays from the script's own tag
//! fails at once instead of working by the accident of two slots on one node.
//! No script carries `allow-cross-slot-keys`. A commit's keys may span
//! slots (the job's own keys for staged writes, children on other queues,
//! batches): a single Redis runs `commit` with all of them in one step; on
//! Redis Cluster the worker splits the commit by slot ([`crate::queue::parts`]):
//! `commit` keeps to the job's queue slot and `apply` applies each other
//! slot's part there. The scripts are resolved once, on
//! first use; `redis-rs` runs them by SHA and loads them again after
//! `NOSCRIPT` (a restarted Redis).

use std::sync::LazyLock;

use redis::Script;

/// The text of every file of this folder, by name (without `.lua`).
const SOURCES: &[(&str, &str)] = &[
    ("apply", include_str!("apply.lua")),
    ("batch_apply", include_str!("batch_apply.lua")),
    ("batch_enqueue", include_str!("batch_enqueue.lua")),
    ("batch_mark", include_str!("batch_mark.lua")),
    ("batch_trim", include_str!("batch_trim.lua")),
    ("body", include_str!("body.lua")),
    ("breaker", include_str!("breaker.lua")),
    ("claim", include_str!("claim.lua")),
    ("commit", include_str!("commit.lua")),
    ("cron_forward", include_str!("cron_forward.lua")),
    ("delete", include_str!("delete.lua")),
    ("enqueue", include_str!("enqueue.lua")),
    ("fetch", include_str!("fetch.lua")),
    ("ident", include_str!("ident.lua")),
    ("limit", include_str!("limit.lua")),
    ("now", include_str!("now.lua")),
    ("part_done", include_str!("part_done.lua")),
    ("promote", include_str!("promote.lua")),
    ("read", include_str!("read.lua")),
    ("recover", include_str!("recover.lua")),
    ("release_unique", include_str!("release_unique.lua")),
    ("retry_now", include_str!("retry_now.lua")),
    ("settle", include_str!("settle.lua")),
    ("wake", include_str!("wake.lua")),
];

/// The directive that includes a piece.
const INCLUDE: &str = "--@include ";

/// How deep includes may nest (a piece including itself is a bug).
const MAX_DEPTH: usize = 4;

/// The file `name` as written, if this folder has it.
fn raw(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Script `name` with its includes resolved: the text Redis runs. Panics on
/// an unknown name or include (a bug, which the unit tests catch).
pub fn source(name: &str) -> String {
    let mut out = String::new();
    resolve(name, 0, &mut out);
    out
}

fn resolve(name: &str, depth: usize, out: &mut String) {
    assert!(depth <= MAX_DEPTH, "includes nest too deep at `{name}`");
    let text = raw(name).unwrap_or_else(|| panic!("no script or piece `{name}.lua`"));
    for line in text.lines() {
        match line.strip_prefix(INCLUDE) {
            Some(piece) => resolve(piece.trim(), depth + 1, out),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
}

/// The loaded scripts, one field each (the file of the same name). Each
/// touches the keys of one hash slot when its caller keeps to it (a queue, a
/// batch, a limiter or breaker; `commit` on Redis Cluster is given its queue
/// slot's share of a commit, `apply` one other slot's), so the same code runs
/// on a single Redis, Sentinel or Redis Cluster.
pub struct Scripts {
    pub enqueue: Script,
    pub fetch: Script,
    pub settle: Script,
    pub commit: Script,
    pub apply: Script,
    pub part_done: Script,
    pub limit: Script,
    pub breaker: Script,
    pub claim: Script,
    pub promote: Script,
    pub recover: Script,
    pub release_unique: Script,
    pub batch_apply: Script,
    pub batch_enqueue: Script,
    pub batch_mark: Script,
    pub batch_trim: Script,
    pub cron_forward: Script,
    pub retry_now: Script,
    pub delete: Script,
    pub read: Script,
}

/// Every script, resolved and loaded on first use.
pub static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let load = |name: &str| Script::new(&source(name));
    Scripts {
        enqueue: load("enqueue"),
        fetch: load("fetch"),
        settle: load("settle"),
        commit: load("commit"),
        apply: load("apply"),
        part_done: load("part_done"),
        limit: load("limit"),
        breaker: load("breaker"),
        claim: load("claim"),
        promote: load("promote"),
        recover: load("recover"),
        release_unique: load("release_unique"),
        batch_apply: load("batch_apply"),
        batch_enqueue: load("batch_enqueue"),
        batch_mark: load("batch_mark"),
        batch_trim: load("batch_trim"),
        cron_forward: load("cron_forward"),
        retry_now: load("retry_now"),
        delete: load("delete"),
        read: load("read"),
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces: included by scripts, never run alone (no shebang).
    const PIECES: [&str; 4] = ["wake", "ident", "now", "body"];

    #[test]
    fn every_include_resolves_and_none_survives() {
        LazyLock::force(&SCRIPTS);
        for (name, _) in SOURCES {
            let lua = source(name);
            assert!(!lua.contains("--@include"), "`{name}` keeps an include");
            // A shebang only counts as the very first line.
            if let Some(at) = lua.find("#!") {
                assert_eq!(at, 0, "`{name}`'s shebang is not its first line");
            }
        }
    }

    #[test]
    fn every_file_of_the_folder_is_a_source() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/commands");
        for entry in std::fs::read_dir(dir).unwrap() {
            let file = entry.unwrap().file_name().into_string().unwrap();
            if let Some(name) = file.strip_suffix(".lua") {
                assert!(raw(name).is_some(), "`{file}` is not in SOURCES");
            }
        }
    }

    #[test]
    fn every_script_says_it_keeps_to_one_slot_and_pieces_do_not() {
        for (name, _) in SOURCES {
            let first = source(name).lines().next().unwrap_or_default().to_owned();
            if PIECES.contains(name) {
                assert!(!first.starts_with("#!"), "piece `{name}` has a shebang");
            } else {
                assert!(
                    first == "#!lua" || first == "#!lua flags=no-writes",
                    "`{name}` starts with `{first}`, not a shebang without cross-slot flags"
                );
            }
        }
        // The measured reads write nothing: Redis refuses them any write.
        assert!(source("read").starts_with("#!lua flags=no-writes\n"));
    }

    #[test]
    fn the_scripts_include_the_pieces_they_call() {
        for (script, piece) in [
            ("enqueue", "wake"),
            ("settle", "wake"),
            ("commit", "wake"),
            ("commit", "body"),
            ("apply", "body"),
            ("promote", "wake"),
            ("recover", "wake"),
            ("batch_enqueue", "wake"),
            ("retry_now", "wake"),
            ("fetch", "ident"),
            ("recover", "ident"),
        ] {
            assert!(
                source(script).contains(raw(piece).unwrap()),
                "`{script}` lacks `{piece}`"
            );
        }
        // Every script that reads the clock includes it, rather than writing it out.
        for (name, lua) in SOURCES {
            if *name != "now" {
                assert!(
                    !lua.contains("redis.call('TIME')"),
                    "`{name}` reads TIME itself"
                );
            }
        }
    }
}

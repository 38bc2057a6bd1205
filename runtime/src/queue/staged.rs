//! What a running job stages for its next commit ([`super::commit`]), in one
//! [`Staged`] value: its child jobs, its batches and its Redis writes. The
//! host's capabilities fill it (each under its own limits), the commit reads
//! it whole and clears it once it is applied.
//!
//! The staged write ([`StagedWrite`]) is the queue's type: the host turns a
//! guest's operation into one, [`prepare`] fits it to what the commit script
//! can take.

use super::commit::{Child, StagedBatch};

/// Most values (or members) one staged command carries. The commit script
/// hands a command its arguments through Lua's stack, which takes about 8,000
/// values; a longer `RPUSH`, `LPUSH`, `SADD`, `SREM` or `ZREM` is staged as
/// several commands of at most this many, in order, with the same effect.
pub const MAX_WRITE_ARGS: usize = 1_000;
/// The longest TTL of a write (`SET ... PX`, `PEXPIRE`): 100 years, in ms.
/// Longer ones are refused when staged (and when written now): Redis adds the
/// TTL to its clock, and one past 2^63 ms would fail inside the commit.
pub const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Everything staged since the last commit.
#[derive(Debug, Default)]
pub struct Staged {
    /// Child jobs (batch members included).
    pub children: Vec<Child>,
    /// Bytes of the children's payloads.
    pub child_bytes: usize,
    /// Batches, each with its members' ids.
    pub batches: Vec<StagedBatch>,
    /// Redis writes, in order.
    pub writes: Vec<StagedWrite>,
    /// Bytes of the writes' keys and arguments.
    pub write_bytes: usize,
}

impl Staged {
    /// Whether anything is staged.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty() && self.writes.is_empty() && self.batches.is_empty()
    }

    /// Forgets everything staged (committed, or dropped with the attempt).
    pub fn clear(&mut self) {
        *self = Staged::default();
    }
}

/// A Redis write kept for the next commit.
#[derive(Clone, Debug)]
pub struct StagedWrite {
    /// The Redis command.
    pub cmd: &'static str,
    /// The key it writes.
    pub key: String,
    /// Its arguments after the key.
    pub args: Vec<Vec<u8>>,
}

impl StagedWrite {
    /// Its key's and arguments' bytes.
    pub fn size(&self) -> usize {
        self.key.len() + self.args.iter().map(Vec::len).sum::<usize>()
    }
}

/// Checks a write's shape and ranges before it is sent or staged: what the
/// host can know without reading the key (the commit script checks the rest,
/// the keys' types and values, before it writes anything).
pub fn check(w: &StagedWrite) -> Result<(), String> {
    let needs_values = matches!(w.cmd, "SADD" | "SREM" | "ZREM" | "RPUSH" | "LPUSH");
    if needs_values && w.args.is_empty() {
        return Err(format!("{} needs at least one member or value", w.cmd));
    }
    if matches!(w.cmd, "ZADD" | "ZINCRBY") && w.args[0] == b"NaN" {
        return Err(format!(
            "{} {}: a score must be a number, not NaN",
            w.cmd,
            key_text(&w.key)
        ));
    }
    let ttl = match w.cmd {
        "PEXPIRE" => w.args.first(),
        "SET" => w.args.get(2),
        _ => None,
    };
    if let Some(ttl) = ttl {
        let ms: Option<u64> = std::str::from_utf8(ttl).ok().and_then(|t| t.parse().ok());
        if ms.is_none_or(|ms| ms > MAX_TTL_MS) {
            return Err(format!(
                "{} {}: a TTL is at most {MAX_TTL_MS} ms (100 years), got {}",
                w.cmd,
                key_text(&w.key),
                String::from_utf8_lossy(ttl)
            ));
        }
    }
    Ok(())
}

fn key_text(key: &str) -> String {
    format!("`{}`", crate::job::truncate(key, 200))
}

/// A write as the commit script gets it: checked ([`check`]), and cut into
/// commands of at most [`MAX_WRITE_ARGS`] values. The pieces of an `RPUSH`
/// or `LPUSH` keep their order, so the list ends as one command would leave
/// it; members of a set or sorted set are independent. The error says why
/// the write cannot be staged.
pub fn prepare(w: StagedWrite) -> Result<Vec<StagedWrite>, String> {
    check(&w)?;
    let splits = matches!(w.cmd, "SADD" | "SREM" | "ZREM" | "RPUSH" | "LPUSH");
    if !splits || w.args.len() <= MAX_WRITE_ARGS {
        return Ok(vec![w]);
    }
    Ok(w.args
        .chunks(MAX_WRITE_ARGS)
        .map(|part| StagedWrite {
            cmd: w.cmd,
            key: w.key.clone(),
            args: part.to_vec(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_pushes_are_split_in_order() {
        let values: Vec<Vec<u8>> = (0..2_500).map(|i| i.to_string().into_bytes()).collect();
        let w = StagedWrite {
            cmd: "RPUSH",
            key: "l".into(),
            args: values.clone(),
        };
        let pieces = prepare(w).unwrap();
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.args.len() <= MAX_WRITE_ARGS));
        let joined: Vec<Vec<u8>> = pieces.into_iter().flat_map(|p| p.args).collect();
        assert_eq!(joined, values);
        let hset = StagedWrite {
            cmd: "HSET",
            key: "h".into(),
            args: vec![b"f".to_vec(), b"v".to_vec()],
        };
        assert_eq!(prepare(hset).unwrap().len(), 1);
    }
}

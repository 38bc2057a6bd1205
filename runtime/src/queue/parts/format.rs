//! The part format: a part of a commit ([`Part`]), its outbox entry
//! ([`Part::encode`], [`Part::decode`]: the key and argument counts, the
//! flags) and its marker key ([`marker`]).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::cluster_routing::Slot;

/// How long a part's marker is kept: far longer than any part waits in an
/// outbox after it was applied (the next scheduler round takes it off).
pub const MARKER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The Redis Cluster slot count.
const SLOTS: usize = 16384;

/// For each slot, the least `N` whose tag `m:N` hashes to it.
static SLOT_TAGS: LazyLock<HashMap<Slot, u32>> = LazyLock::new(|| {
    let mut tags = HashMap::with_capacity(SLOTS);
    let mut n = 0u32;
    while tags.len() < SLOTS {
        tags.entry(Slot::for_key(format!("m:{n}"))).or_insert(n);
        n += 1;
    }
    tags
});

/// The marker key of part `part` of commit `seq` of job `job` in `queue`,
/// in `slot`.
pub fn marker(slot: Slot, queue: &str, job: &str, seq: u64, part: usize) -> String {
    format!(
        "stoker:{{m:{}}}:applied:{queue}:{job}:{seq}:{part}",
        SLOT_TAGS[&slot]
    )
}

/// A part of a commit: `apply.lua`'s keys (the marker first) and its
/// arguments after the mode and the TTL (the job's id, then the body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// Its keys.
    pub keys: Vec<String>,
    /// Its arguments.
    pub args: Vec<Vec<u8>>,
    /// Whether it holds staged writes (checked before the commit).
    pub writes: bool,
    /// Its phase in its commit (0: batches and writes, 1: the batch index,
    /// 2: children): the parts of one phase of one commit are independent
    /// of each other and apply at once.
    pub phase: u8,
}

/// The first bytes of an encoded part (and its format's version).
const MAGIC: &[u8] = b"stoker-part/1\n";

impl Part {
    /// The part as an outbox entry: [`MAGIC`], the key count, the argument
    /// count and its flags (whether it writes, bit 0; its phase, bits 8-15),
    /// u32 big-endian each, then each key and argument as a u32 big-endian
    /// length and its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self.keys.iter().map(|k| k.len() + 4).sum::<usize>()
            + self.args.iter().map(|a| a.len() + 4).sum::<usize>();
        let mut out = Vec::with_capacity(MAGIC.len() + 12 + size);
        out.extend_from_slice(MAGIC);
        let flags = self.writes as usize | (self.phase as usize) << 8;
        for n in [self.keys.len(), self.args.len(), flags] {
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        let items = self.keys.iter().map(|k| k.as_bytes());
        for item in items.chain(self.args.iter().map(Vec::as_slice)) {
            out.extend_from_slice(&(item.len() as u32).to_be_bytes());
            out.extend_from_slice(item);
        }
        out
    }

    /// Reads an outbox entry; why not, when it is not one [`Part::encode`]
    /// wrote.
    pub fn decode(entry: &[u8]) -> Result<Part, String> {
        let mut rest = entry
            .strip_prefix(MAGIC)
            .ok_or("not a part of a commit (no part header)")?;
        let u32_at = |rest: &mut &[u8]| -> Result<usize, String> {
            let (n, tail) = rest.split_first_chunk::<4>().ok_or("a part cut short")?;
            *rest = tail;
            Ok(u32::from_be_bytes(*n) as usize)
        };
        let nkeys = u32_at(&mut rest)?;
        let nargs = u32_at(&mut rest)?;
        let flags = u32_at(&mut rest)?;
        let (writes, phase) = (flags & 1 == 1, (flags >> 8) as u8);
        if flags & !0xff01 != 0 || phase > 2 {
            return Err("a part with unknown flags".into());
        }
        if nkeys == 0 || nargs == 0 || (nkeys + nargs) * 4 > rest.len() {
            return Err("a part with impossible counts".into());
        }
        let item = |rest: &mut &[u8]| -> Result<Vec<u8>, String> {
            let n = u32_at(rest)?;
            if n > rest.len() {
                return Err("a part cut short".into());
            }
            let (v, tail) = rest.split_at(n);
            *rest = tail;
            Ok(v.to_vec())
        };
        let mut keys = Vec::with_capacity(nkeys);
        for _ in 0..nkeys {
            let k = String::from_utf8(item(&mut rest)?).map_err(|_| "a key is not UTF-8")?;
            keys.push(k);
        }
        let mut args = Vec::with_capacity(nargs);
        for _ in 0..nargs {
            args.push(item(&mut rest)?);
        }
        if !rest.is_empty() {
            return Err(format!("{} bytes after the part", rest.len()));
        }
        Ok(Part {
            keys,
            args,
            writes,
            phase,
        })
    }

    /// The id of the job whose commit it belongs to.
    pub(super) fn job(&self) -> String {
        String::from_utf8_lossy(&self.args[0]).into_owned()
    }

    /// The commit it belongs to (`QUEUE:JOB:SEQ`, from its marker) and its
    /// phase: parts with the same may apply at once.
    pub(super) fn group(&self) -> (&str, u8) {
        let marker = self.keys[0].as_str();
        let commit = marker
            .split_once(":applied:")
            .and_then(|(_, rest)| rest.rsplit_once(':'))
            .map_or(marker, |(commit, _)| commit);
        (commit, self.phase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_marker_tag_and_a_marker_keeps_to_its_slot() {
        assert_eq!(SLOT_TAGS.len(), SLOTS);
        for key in [
            "mileage:total",
            "a{}b",
            "{x",
            "stoker:{q:default}:job:1",
            "",
        ] {
            let slot = Slot::for_key(key);
            assert_eq!(
                Slot::for_key(marker(slot, "default", "j", 1, 0)),
                slot,
                "{key}"
            );
        }
    }

    #[test]
    fn a_part_survives_its_encoding_and_garbage_is_refused() {
        let p = Part {
            keys: vec!["m".into(), "k".into()],
            args: vec![b"j1".to_vec(), vec![0, 255, 10], Vec::new()],
            writes: true,
            phase: 2,
        };
        let e = p.encode();
        assert_eq!(Part::decode(&e).unwrap(), p);
        assert!(Part::decode(b"hello").is_err());
        assert!(Part::decode(&e[..e.len() - 1]).is_err());
        let mut longer = e.clone();
        longer.push(0);
        assert!(Part::decode(&longer).is_err());
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 8]);
        assert!(Part::decode(&huge).is_err());
    }
}

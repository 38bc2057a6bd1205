//! Snapshots: the state a job commits at a checkpoint, as stored in Redis
//! (`stoker:{q:QUEUE}:snap:ID`, see [`crate::queue::keys`]).
//!
//! The job's state is opaque to the host (the SDK writes its own versioned
//! format inside). The host wraps it in an envelope that pins the module and
//! lets a damaged snapshot be told apart from a good one before any guest sees
//! it:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `STKS` |
//! | 1 | envelope version (1) |
//! | 1 | flags: bit 0 = body compressed with LZ4 (block format) |
//! | 8 | checkpoint sequence, little-endian |
//! | 32 | sha256 of the module that wrote it (the digest the job is pinned to) |
//! | 4 | the state's size before compression, little-endian |
//! | 4 | CRC-32 of the body as stored, little-endian |
//! | rest | the body |
//!
//! States larger than [`COMPRESS_ABOVE`] are compressed when that saves space.

/// States at least this large are compressed.
pub const COMPRESS_ABOVE: usize = 4 << 10;

const MAGIC: &[u8; 4] = b"STKS";
const VERSION: u8 = 1;
const COMPRESSED: u8 = 1;
const HEADER: usize = 4 + 1 + 1 + 8 + 32 + 4 + 4;

/// A decoded snapshot.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The checkpoint sequence that committed it.
    pub seq: u64,
    /// The module digest (hex sha256) it was written by.
    pub digest: String,
    /// The job's state.
    pub state: Vec<u8>,
}

/// Wraps `state` for storage. `digest` is the module's hex sha256.
pub fn encode(seq: u64, digest: &str, state: &[u8]) -> Vec<u8> {
    // A digest that is not 64 hex digits (never, for a deployed module) is stored
    // as zeros and refused when read back; `decode_to_slice` may have written
    // the bytes before the first bad character, so they are zeroed again.
    let mut digest_bytes = [0u8; 32];
    if hex::decode_to_slice(digest, &mut digest_bytes).is_err() {
        digest_bytes = [0; 32];
    }
    let compressed = (state.len() >= COMPRESS_ABOVE)
        .then(|| lz4_flex::block::compress(state))
        .filter(|c| c.len() < state.len());
    let (flags, body) = match &compressed {
        Some(c) => (COMPRESSED, &c[..]),
        None => (0, state),
    };
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&digest_bytes);
    out.extend_from_slice(&(state.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads a stored snapshot, checking everything that can be checked without
/// the guest. The error says what is wrong, for the dead set.
pub fn decode(bytes: &[u8], max_state: u64) -> Result<Snapshot, String> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return Err(format!(
            "the stored snapshot is not a Stoker snapshot ({} bytes, no `STKS` header)",
            bytes.len()
        ));
    }
    if bytes[4] != VERSION {
        return Err(format!(
            "snapshot envelope version {} is not readable by this runtime (it reads version {VERSION})",
            bytes[4]
        ));
    }
    let flags = bytes[5];
    let seq = u64::from_le_bytes(bytes[6..14].try_into().expect("8 bytes"));
    let digest_bytes = &bytes[14..46];
    let size = u32::from_le_bytes(bytes[46..50].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[50..54].try_into().expect("4 bytes"));
    let body = &bytes[HEADER..];
    if crc32fast::hash(body) != crc {
        return Err("the stored snapshot is corrupt (checksum mismatch)".into());
    }
    if digest_bytes.iter().all(|&b| b == 0) {
        return Err("the stored snapshot names no module".into());
    }
    if size as u64 > max_state {
        return Err(format!(
            "the snapshot holds {size} bytes of state, over the class's `retained` cap of {max_state} bytes"
        ));
    }
    let state = if flags & COMPRESSED != 0 {
        lz4_flex::block::decompress(body, size)
            .map_err(|e| format!("the stored snapshot does not decompress: {e}"))?
    } else {
        body.to_vec()
    };
    if state.len() != size {
        return Err(format!(
            "the stored snapshot is corrupt ({} bytes of state, header says {size})",
            state.len()
        ));
    }
    Ok(Snapshot {
        seq,
        digest: hex::encode(digest_bytes),
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn round_trips_small_and_compressed_states() {
        for state in [b"tiny".to_vec(), vec![7u8; 100_000]] {
            let bytes = encode(3, DIGEST, &state);
            assert!(bytes.len() < state.len() + 60);
            let s = decode(&bytes, 1 << 20).unwrap();
            assert_eq!((s.seq, s.digest.as_str(), s.state), (3, DIGEST, state));
        }
    }

    #[test]
    fn a_digest_that_is_not_hex_names_no_module() {
        // Found by the `snapshot` fuzz target: valid hex first, a bad
        // character later.
        let mut digest = String::from("1d");
        digest.push_str(&"d".repeat(61));
        digest.push('\0');
        let bytes = encode(7, &digest, b"state");
        assert!(decode(&bytes, 100).unwrap_err().contains("names no module"));
    }

    #[test]
    fn damage_is_refused_with_a_reason() {
        let mut bytes = encode(1, DIGEST, b"state");
        assert!(decode(&bytes, 4).unwrap_err().contains("retained"));
        *bytes.last_mut().unwrap() ^= 1;
        assert!(decode(&bytes, 100).unwrap_err().contains("checksum"));
        bytes[4] = 9;
        assert!(decode(&bytes, 100).unwrap_err().contains("version 9"));
        assert!(decode(b"junk", 100).unwrap_err().contains("not a Stoker"));
    }
}

//! The snapshot envelope (`stoker::snapshot`).
//!
//! Checks: `decode` of any bytes never panics and either refuses with a
//! reason or returns a snapshot within the cap whose re-encoding decodes to
//! the same; `encode` then `decode` of any state gives it back (seq, digest,
//! state), compressed or not, and refuses it under a smaller cap; a damaged
//! envelope never panics.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use stoker::snapshot::{self, COMPRESS_ABOVE};

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    /// Raw bytes as stored, read under a cap.
    Raw(&'a [u8], u32),
    /// A state encoded, then read back, then damaged.
    RoundTrip {
        seq: u64,
        digest: [u8; 32],
        /// Runs of bytes, so large compressible states come up.
        runs: Vec<(u8, u16)>,
        tail: &'a [u8],
        damage: Vec<(u16, u8)>,
    },
    /// A digest that may not be hex.
    Digest(String, &'a [u8]),
}

fn raw(bytes: &[u8], cap: u64) {
    match snapshot::decode(bytes, cap) {
        Ok(s) => {
            assert!(
                s.state.len() as u64 <= cap,
                "a state over the cap was accepted"
            );
            assert_eq!(s.digest.len(), 64);
            let again = snapshot::decode(&snapshot::encode(s.seq, &s.digest, &s.state), cap)
                .expect("a decoded snapshot re-encodes readably");
            assert_eq!(again, s);
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    match input {
        Input::Raw(bytes, cap) => raw(bytes, cap as u64),
        Input::RoundTrip {
            seq,
            mut digest,
            runs,
            tail,
            damage,
        } => {
            if digest == [0; 32] {
                digest[0] = 1;
            }
            let digest = hex(&digest);
            let mut state = Vec::new();
            for (byte, len) in runs {
                if state.len() > 256 << 10 {
                    break;
                }
                state.extend(std::iter::repeat_n(byte, len as usize % 8192));
            }
            state.extend_from_slice(tail);
            let mut bytes = snapshot::encode(seq, &digest, &state);
            if state.len() >= COMPRESS_ABOVE && state.iter().all(|&b| b == state[0]) {
                assert!(
                    bytes.len() < state.len(),
                    "a compressible state was not compressed"
                );
            }
            let s = snapshot::decode(&bytes, state.len() as u64).expect("a fresh snapshot decodes");
            assert_eq!(
                (s.seq, &s.digest[..], &s.state[..]),
                (seq, &digest[..], &state[..])
            );
            if !state.is_empty() {
                assert!(snapshot::decode(&bytes, state.len() as u64 - 1).is_err());
            }
            for (at, xor) in damage {
                let n = bytes.len();
                bytes[at as usize % n] ^= xor;
            }
            raw(&bytes, state.len() as u64);
        }
        Input::Digest(digest, state) => {
            let bytes = snapshot::encode(7, &digest, state);
            let is_hex = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
            match snapshot::decode(&bytes, u64::MAX) {
                Ok(s) => {
                    assert!(is_hex, "a snapshot without a module digest was accepted");
                    assert_eq!(s.digest, digest.to_ascii_lowercase());
                    assert_eq!(s.state, state);
                }
                Err(_) => assert!(!is_hex || digest.bytes().all(|b| b == b'0')),
            }
        }
    }
});

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

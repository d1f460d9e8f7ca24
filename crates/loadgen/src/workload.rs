//! What the load generator asks for: key names, values, and the GET/SET mix over a Zipf key space.
//!
//! Key names and values match what `bench/run` loads with `redis-cli --pipe` (`key:%012d`, 64-byte
//! values), so keys preloaded by the harness are the keys the load generator reads, and the
//! hit-ratio memory budget measured on those keys applies to these.

use crate::zipf::{WyRand, Zipf};

pub const VALUE_LEN: usize = 64;

/// Writes `key:%012d` into `out`, replacing its contents.
pub fn key_name(id: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(format!("key:{id:012}").as_bytes());
}

/// The 64-byte value stored under key `id`: its 12-digit id repeated. Distinct per key so that a
/// server cannot share or compress identical values and look better than it would with real data.
pub fn value_for(id: u64) -> [u8; VALUE_LEN] {
    let digits = format!("{id:012}");
    let mut value = [0u8; VALUE_LEN];
    for (slot, byte) in value.iter_mut().zip(digits.bytes().cycle()) {
        *slot = byte;
    }
    value
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get(u64),
    Set(u64),
}

/// Draws operations: key ids Zipf-distributed over 0..keys (id = rank - 1, so id 0 is the hottest),
/// GET with probability `get_ratio`, SET otherwise.
pub struct Mix {
    zipf: Zipf,
    get_ratio: f64,
    rng: WyRand,
}

impl Mix {
    pub fn new(keys: u64, skew: f64, get_ratio: f64, seed: u64) -> Self {
        assert!(
            (0.0..=1.0).contains(&get_ratio),
            "get ratio must be within 0..=1"
        );
        Self {
            zipf: Zipf::new(keys, skew),
            get_ratio,
            rng: WyRand::new(seed),
        }
    }

    pub fn key(&mut self) -> u64 {
        self.zipf.sample(&mut self.rng) - 1
    }

    pub fn op(&mut self) -> Op {
        let id = self.key();
        if self.rng.next_f64() < self.get_ratio {
            Op::Get(id)
        } else {
            Op::Set(id)
        }
    }
}

/// Per-connection seeds: distinct streams from one run seed, so runs stay reproducible while
/// connections do not replay each other's requests.
pub fn connection_seed(run_seed: u64, connection: usize) -> u64 {
    WyRand::new(run_seed ^ (connection as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).next_u64()
}

/// Appends the RESP encoding of `op` to `out`; `key` is scratch space reused across calls.
pub fn encode_op(op: Op, key: &mut Vec<u8>, out: &mut Vec<u8>) {
    match op {
        Op::Get(id) => {
            key_name(id, key);
            crate::resp::encode_command(out, &[b"GET", key]);
        }
        Op::Set(id) => {
            key_name(id, key);
            crate::resp::encode_command(out, &[b"SET", key, &value_for(id)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_match_the_harness_loader() {
        let mut key = Vec::new();
        key_name(42, &mut key);
        assert_eq!(key, b"key:000000000042");
        // bench/benchlib/protocol.py writes the same: ("%012d" % i * 6)[:64]
        let expected: String = "000000000042".repeat(6).chars().take(64).collect();
        assert_eq!(&value_for(42)[..], expected.as_bytes());
    }

    #[test]
    fn mix_respects_get_ratio_and_key_range() {
        let mut mix = Mix::new(100, 0.99, 0.9, 3);
        let mut gets = 0;
        for _ in 0..100_000 {
            match mix.op() {
                Op::Get(id) => {
                    assert!(id < 100);
                    gets += 1;
                }
                Op::Set(id) => assert!(id < 100),
            }
        }
        assert!((89_000..91_000).contains(&gets), "{gets} GETs of 100000");
    }
}

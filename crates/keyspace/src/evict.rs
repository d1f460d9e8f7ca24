//! Eviction policies: which key to remove when used memory exceeds `maxmemory`.
//!
//! Every policy but `noeviction` works like Redis's: sample `maxmemory-samples` keys into an eviction
//! pool of the best candidates seen so far (`pool.rs`), remove the pool's best. What "best" means is
//! the policy's score (computed here). The access info each policy needs lives in the
//! 24-bit access field of the entry (an LRU clock in seconds, or Redis's LFU minutes+log-counter).
//!
//! `allkeys-tinylfu` (shoal's default) scores candidates with a TinyLFU frequency sketch (a count-min
//! sketch of 4-bit counters, a key's four in one 64-byte block, halved periodically so old popularity
//! fades). The sketch records every
//! lookup, *including misses*: in a cache-aside workload a popular key that was evicted keeps its
//! frequency while it is absent, so when it is written back it is not the next victim, while a key read
//! once (a one-hit wonder) is. Writes do not count: the read that missed already did, and a key that is
//! written but never read is no reason to keep it (counting the write-back after a miss made every
//! one-hit wonder look read twice: 41.8% against 40.5% misses at Zipf 0.8 in the hit-ratio bench). That is what LRU and Redis's LFU (which starts every new key at the same
//! counter) get wrong on skewed workloads. Ties go to the least recently used.
//!
//! Words: *evict* means removed to free memory; *expire* means a deadline passed (see `expire.rs` in the
//! shard). They are counted separately (`evicted_keys`, `expired_keys`).

/// `maxmemory-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    NoEviction,
    AllKeysLru,
    AllKeysLfu,
    AllKeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
    AllKeysTinyLfu,
}

impl Policy {
    pub const ALL: [Policy; 9] = [
        Policy::NoEviction,
        Policy::AllKeysLru,
        Policy::AllKeysLfu,
        Policy::AllKeysRandom,
        Policy::VolatileLru,
        Policy::VolatileLfu,
        Policy::VolatileRandom,
        Policy::VolatileTtl,
        Policy::AllKeysTinyLfu,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::NoEviction => "noeviction",
            Policy::AllKeysLru => "allkeys-lru",
            Policy::AllKeysLfu => "allkeys-lfu",
            Policy::AllKeysRandom => "allkeys-random",
            Policy::VolatileLru => "volatile-lru",
            Policy::VolatileLfu => "volatile-lfu",
            Policy::VolatileRandom => "volatile-random",
            Policy::VolatileTtl => "volatile-ttl",
            Policy::AllKeysTinyLfu => "allkeys-tinylfu",
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    /// Only keys with an expiry are candidates.
    pub fn volatile_only(self) -> bool {
        matches!(
            self,
            Policy::VolatileLru
                | Policy::VolatileLfu
                | Policy::VolatileRandom
                | Policy::VolatileTtl
        )
    }

    /// The access field holds an LFU counter (OBJECT FREQ works, OBJECT IDLETIME does not).
    pub fn uses_lfu(self) -> bool {
        matches!(self, Policy::AllKeysLfu | Policy::VolatileLfu)
    }
}

/// LFU tuning, as Redis's `lfu-log-factor` and `lfu-decay-time`.
#[derive(Debug, Clone, Copy)]
pub struct LfuParams {
    pub log_factor: u32,
    pub decay_minutes: u32,
}

impl Default for LfuParams {
    fn default() -> Self {
        LfuParams {
            log_factor: 10,
            decay_minutes: 1,
        }
    }
}

/// Initial LFU counter of a new key (Redis's LFU_INIT_VAL).
pub const LFU_INIT: u32 = 5;
const CLOCK_MASK: u32 = (1 << 24) - 1;

/// LRU clock: seconds, 24 bits, wrapping (about 194 days), as Redis's LRU_CLOCK.
pub fn lru_clock(now_ms: u64) -> u32 {
    ((now_ms / 1000) as u32) & CLOCK_MASK
}

/// Seconds since the access recorded in an LRU access field.
pub fn lru_idle_s(access: u32, now_ms: u64) -> u64 {
    let now = lru_clock(now_ms);
    (if now >= access {
        now - access
    } else {
        now + (CLOCK_MASK + 1 - access)
    }) as u64
}

fn lfu_minutes(now_ms: u64) -> u32 {
    ((now_ms / 60_000) as u32) & 0xFFFF
}

/// A new key's LFU access field.
pub fn lfu_initial(now_ms: u64) -> u32 {
    (lfu_minutes(now_ms) << 8) | LFU_INIT
}

/// The LFU counter after decay (Redis's LFUDecrAndReturn).
pub fn lfu_counter(access: u32, now_ms: u64, p: LfuParams) -> u32 {
    let last = (access >> 8) & 0xFFFF;
    let counter = access & 0xFF;
    let now = lfu_minutes(now_ms);
    let elapsed = if now >= last {
        now - last
    } else {
        0xFFFF - last + now
    };
    let periods = elapsed.checked_div(p.decay_minutes).unwrap_or(0);
    counter.saturating_sub(periods)
}

/// The LFU access field after one access; `rand01` is a uniform random number in [0, 1).
pub fn lfu_touch(access: u32, now_ms: u64, p: LfuParams, rand01: f64) -> u32 {
    let mut counter = lfu_counter(access, now_ms, p);
    if counter < 255 {
        let base = counter.saturating_sub(LFU_INIT) as f64;
        if rand01 < 1.0 / (base * p.log_factor as f64 + 1.0) {
            counter += 1;
        }
    }
    (lfu_minutes(now_ms) << 8) | counter
}

/// Small, fast PRNG for sampling (wyrand). Not for anything security-related.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Every seed gives its own sequence (wyrand's state may be any value, zero included).
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.0 as u128).wrapping_mul((self.0 ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) as u64) ^ (t as u64)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// TinyLFU frequency sketch: count-min over 4 rows of 4-bit counters, blocked (as Caffeine's): a
/// key's four counters all lie in one 64-byte block (row `i` in the block's words `2i` and `2i + 1`),
/// so an increment or an estimate costs one cache miss, not four. Counters are halved after
/// `10 × width` increments, so popularity ages. Memory: `4 × width` bytes, as four rows of `width`
/// one-byte counters would take, with twice the counters.
#[derive(Debug, Clone)]
pub struct Sketch {
    words: Vec<u64>,
    /// Blocks (of `BLOCK_WORDS` words) minus one; a power of two minus one.
    block_mask: usize,
    width: usize,
    additions: usize,
    reset_at: usize,
}

const SKETCH_ROWS: usize = 4;
const SKETCH_COUNTER_MAX: u64 = 15;
/// Words (of 16 four-bit counters) in one block: 64 bytes, one cache line.
const BLOCK_WORDS: usize = 8;
/// Narrowest sketch row: a shard expected to hold few keys (a small `maxmemory`) still gets a few
/// counters per key, without every shard paying for a wide sketch (256 shards × 4 × 32 bytes is
/// 32 KiB).
pub const SKETCH_WIDTH_MIN: usize = 32;

impl Sketch {
    /// A sketch for about `keys` resident keys (width rounded up to a power of two, at least
    /// `SKETCH_WIDTH_MIN`).
    pub fn new(keys: usize) -> Self {
        let width = keys.clamp(SKETCH_WIDTH_MIN, 1 << 24).next_power_of_two();
        // 4 × width bytes = width / 2 words.
        let words = width / 2;
        Sketch {
            words: vec![0; words],
            block_mask: words / BLOCK_WORDS - 1,
            width,
            additions: 0,
            reset_at: width * 10,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn mem_bytes(&self) -> usize {
        self.words.capacity() * std::mem::size_of::<u64>()
    }

    /// The block's first word, and 5 bits per row choosing a word of the row's pair (low bit) and
    /// a counter in it (the other four).
    #[inline]
    fn locate(&self, hash: u64) -> (usize, u64) {
        let block = (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & self.block_mask;
        let counters = hash.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 44;
        (block * BLOCK_WORDS, counters)
    }

    #[inline]
    fn counter_at(counters: u64, row: usize) -> (usize, u32) {
        let bits = (counters >> (5 * row)) & 31;
        (2 * row + (bits & 1) as usize, ((bits >> 1) * 4) as u32)
    }

    /// Asks the CPU to bring `hash`'s block into cache (see [`crate::Entry::prefetch`]).
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        let (base, _) = self.locate(hash);
        crate::prefetch::fetch(self.words.as_ptr().wrapping_add(base) as usize);
    }

    pub fn increment(&mut self, hash: u64) {
        let (base, counters) = self.locate(hash);
        let block = &mut self.words[base..base + BLOCK_WORDS];
        let mut added = false;
        for row in 0..SKETCH_ROWS {
            let (w, shift) = Self::counter_at(counters, row);
            if (block[w] >> shift) & 0xF < SKETCH_COUNTER_MAX {
                block[w] += 1 << shift;
                added = true;
            }
        }
        if added {
            self.additions += 1;
            if self.additions >= self.reset_at {
                for w in &mut self.words {
                    *w = (*w >> 1) & 0x7777_7777_7777_7777;
                }
                self.additions /= 2;
            }
        }
    }

    pub fn estimate(&self, hash: u64) -> u8 {
        let (base, counters) = self.locate(hash);
        let block = &self.words[base..base + BLOCK_WORDS];
        (0..SKETCH_ROWS)
            .map(|row| {
                let (w, shift) = Self::counter_at(counters, row);
                ((block[w] >> shift) & 0xF) as u8
            })
            .min()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(Policy::parse(p.name()), Some(p));
        }
        assert_eq!(Policy::parse("ALLKEYS-LRU"), Some(Policy::AllKeysLru));
        assert_eq!(Policy::parse("lru"), None);
    }

    #[test]
    fn lru_idle_wraps() {
        let a = lru_clock(5_000);
        assert_eq!(lru_idle_s(a, 65_000), 60);
        assert_eq!(lru_idle_s(CLOCK_MASK, 1_000), 2);
    }

    #[test]
    fn lfu_counter_grows_logarithmically_and_decays() {
        let p = LfuParams::default();
        let mut rng = Rng::new(7);
        let mut a = lfu_initial(0);
        for _ in 0..1000 {
            a = lfu_touch(a, 0, p, rng.unit());
        }
        let c = lfu_counter(a, 0, p);
        assert!(c > LFU_INIT + 3 && c < 40, "{c}");
        // Ten minutes later the counter lost ten.
        assert_eq!(lfu_counter(a, 600_000, p), c - 10);
    }

    #[test]
    fn sketch_ranks_frequent_above_rare_and_ages() {
        let mut s = Sketch::new(1024);
        for _ in 0..10 {
            s.increment(1);
        }
        s.increment(2);
        assert!(s.estimate(1) >= 10);
        assert!(s.estimate(2) >= 1 && s.estimate(2) < 10);
        for i in 0..(10 * 1024 + 10) as u64 {
            s.increment(1000 + i);
        }
        assert!(s.estimate(1) < 10, "halving ages old popularity");
    }

    proptest::proptest! {
        /// Before any halving, a count-min sketch never under-counts, and a counter saturates at
        /// 15 without carrying into its neighbours.
        #[test]
        fn sketch_never_undercounts(
            keys in proptest::collection::vec(0u64..200, 0..300),
            width in 32usize..600,
        ) {
            let mut s = Sketch::new(width);
            let mut counts = std::collections::HashMap::new();
            for &k in &keys {
                let h = k.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (k << 7);
                s.increment(h);
                *counts.entry(h).or_insert(0u32) += 1;
            }
            proptest::prop_assume!(keys.len() < s.width() * 10);
            for (&h, &n) in &counts {
                proptest::prop_assert!(u32::from(s.estimate(h)) >= n.min(15));
                proptest::prop_assert!(s.estimate(h) <= 15);
            }
        }
    }
}

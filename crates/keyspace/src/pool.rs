//! The eviction pool: the best victims sampled so far across all shards, as Redis's
//! `EvictionPoolLRU`. Each eviction samples `maxmemory-samples` keys of one shard (more shards when
//! shards hold fewer keys than that), merges them into the pool and evicts the pool's best. Good
//! candidates found by earlier evictions stay in the pool, so one shard's samples per eviction pick
//! victims as well as the four shards' samples (twenty keys, four shard locks) each eviction used
//! to look at.
//!
//! A pooled candidate may have gone (deleted, evicted by another thread) or been used since it was
//! sampled; before evicting it, its score is computed again under its shard's lock: a gone key is
//! dropped, a key whose score fell (it was read or written since) goes back into the pool with its
//! new score and the next best is tried. The pool's lock is never held while a shard is locked.
//!
//! **One pool per evicting thread** ([`EVICT_POOLS`] of them; the caller names its pool, the
//! server by its thread's slot). Under a write flood into a full cache every write evicts, and
//! with one pool every worker locked it and moved its lines between their cores several times
//! per write (its insert and lock were 9% of a two-worker profile against 6% with one worker).
//! Each thread pools its own samples and evicts from them, as Redis's one thread does; a
//! candidate another thread evicted first is found gone when its turn comes, as before.

use parking_lot::Mutex;

use crate::shard::{Candidate, Evicted, Keyspace, Pooled};

/// Eviction pools a keyspace keeps: callers naming more share them (by their index modulo this).
pub const EVICT_POOLS: usize = 8;

/// A thread's eviction pool, on cache lines of its own.
#[derive(Default)]
#[repr(align(128))]
pub struct ThreadPool(Mutex<EvictionPool>);

/// Candidates a pool keeps (Redis's EVPOOL_SIZE).
pub const POOL_SIZE: usize = 16;
/// Most shards sampled for one eviction once a candidate was found (shards holding fewer keys
/// than `maxmemory-samples` offer fewer).
pub const SHARDS_SAMPLED_MAX: usize = 32;
/// Most victims one [`Keyspace::evict_batch`] pass evicts.
pub const EVICT_BATCH_MAX: usize = 16;
/// Samples one pass keeps for the pool (more are rare: a pass wants `maxmemory-samples` per
/// victim, `EVICT_BATCH` victims in the server's passes).
const FRESH_MAX: usize = 2 * POOL_SIZE;
/// Pooled candidates tried (gone, or re-pooled with a lower score) before one eviction gives up.
const POOL_TRIES_MAX: usize = 2 * POOL_SIZE;

/// Candidates ordered by score, the best last. A fixed array: no allocation per eviction.
#[derive(Debug, Clone, Copy)]
pub struct EvictionPool {
    items: [(usize, Candidate); POOL_SIZE],
    len: usize,
}

impl Default for EvictionPool {
    fn default() -> Self {
        EvictionPool {
            items: [(0, Candidate::EMPTY); POOL_SIZE],
            len: 0,
        }
    }
}

impl EvictionPool {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Adds a candidate of shard `shard`, replacing an older sample of the same key; when full,
    /// the worst candidate makes room for a better one.
    pub fn insert(&mut self, shard: usize, c: Candidate) {
        if let Some(at) = self.items[..self.len]
            .iter()
            .position(|(s, o)| *s == shard && o.same_key(&c))
        {
            self.items.copy_within(at + 1..self.len, at);
            self.len -= 1;
        }
        if self.len == POOL_SIZE {
            if c.score <= self.items[0].1.score {
                return;
            }
            self.items.copy_within(1..POOL_SIZE, 0);
            self.len -= 1;
        }
        let at = self.items[..self.len].partition_point(|(_, o)| o.score <= c.score);
        self.items.copy_within(at..self.len, at + 1);
        self.items[at] = (shard, c);
        self.len += 1;
        debug_assert!(
            self.items[..self.len]
                .windows(2)
                .all(|w| w[0].1.score <= w[1].1.score),
            "pool ordered by score"
        );
    }

    /// Removes and returns the best candidate.
    pub fn pop(&mut self) -> Option<(usize, Candidate)> {
        self.len = self.len.checked_sub(1)?;
        Some(self.items[self.len])
    }

    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = &(usize, Candidate)> {
        self.items[..self.len].iter()
    }
}

/// What one [`Keyspace::evict_sampled`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Eviction {
    /// This key of this shard was evicted.
    Evicted(usize, Evicted),
    /// The candidates went (or were used) before they could be evicted: try again.
    Raced,
    /// Nothing can be evicted: no key, or no volatile key under a volatile policy.
    Nothing,
}

impl Keyspace {
    /// Eviction pool `pool` (any index: taken modulo [`EVICT_POOLS`]).
    pub(crate) fn evict_pool(&self, pool: usize) -> &Mutex<EvictionPool> {
        &self.evict_pools[pool % self.evict_pools.len()].0
    }

    /// Evicts one key chosen by the policy: samples shards from `start` on (the caller's cursor)
    /// into the pool, then evicts the pool's best candidate that is still there and unused since
    /// it was sampled.
    pub fn evict_sampled(&self, now_ms: u64, start: usize) -> Eviction {
        self.evict_batch(now_ms, start, 0, 1, |_, _| true)
    }

    /// Evicts up to `victims` keys chosen by the policy, for `maxmemory-samples` sampled keys
    /// each, as [`Keyspace::evict_sampled`] would one at a time; `each` is told of every one and
    /// says whether to go on. One pass samples them all (one table walk of neighbouring buckets
    /// whose entry and sketch loads overlap, one lock of the pool), so the fixed costs of a
    /// pass (the table's header, control bytes and bucket pointers, three locks) are shared
    /// by its victims. The samples go into eviction pool `pool` and the victims come from it
    /// (one per evicting thread: the caller's thread slot). Returns the last victim, or why
    /// there was none.
    pub fn evict_batch(
        &self,
        now_ms: u64,
        start: usize,
        pool: usize,
        victims: usize,
        mut each: impl FnMut(usize, &Evicted) -> bool,
    ) -> Eviction {
        let shards = self.shard_count();
        let victims = victims.clamp(1, EVICT_BATCH_MAX);
        let per_victim = self.eviction_samples();
        let want = per_victim * victims;
        // This pass's samples, unordered (the pool orders them once, under its lock); when more
        // come than fit, the worst makes room.
        let mut fresh = [(0, Candidate::EMPTY); FRESH_MAX];
        let mut n_fresh = 0;
        let mut keep = |i: usize, c: Candidate| {
            if n_fresh < FRESH_MAX {
                fresh[n_fresh] = (i, c);
                n_fresh += 1;
            } else if let Some(worst) = fresh.iter_mut().min_by_key(|(_, o)| o.score)
                && c.score > worst.1.score
            {
                *worst = (i, c);
            }
        };
        let (mut looked, mut taken) = (0, 0);
        // Shards holding few keys offer few samples: look at more of them then, and at all of
        // them before saying there is nothing to evict. With the disk tier on, keys already on
        // disk are not counted as samples: every shard is looked at before one of them (whose
        // eviction drops the key) is chosen over a key whose value is in memory.
        let mut found = 0;
        while looked < shards
            && (found == 0 || taken == 0 || (looked < SHARDS_SAMPLED_MAX && taken < want))
        {
            let i = (start + looked) % shards;
            looked += 1;
            taken += self.lock(i).sample_candidates(
                now_ms,
                want.saturating_sub(taken).max(per_victim),
                |c| {
                    found += 1;
                    keep(i, c)
                },
            );
        }
        let fresh = &fresh[..n_fresh.min(FRESH_MAX)];
        let mine = self.evict_pool(pool);
        let mut pool = mine.lock();
        for &(i, c) in fresh {
            pool.insert(i, c);
        }
        let mut last = None;
        let mut evicted = 0;
        let mut tries = 0;
        'passes: while evicted < victims && tries < POOL_TRIES_MAX * victims {
            // The best candidates for the victims still wanted, taken out under one lock of the
            // pool; it is not held while a shard is locked (another thread may hold that shard
            // and be about to pool its samples).
            if pool.is_empty() {
                break;
            }
            let mut best = [(0, Candidate::EMPTY); EVICT_BATCH_MAX];
            let mut n = 0;
            while n < victims - evicted
                && let Some(item) = pool.pop()
            {
                best[n] = item;
                n += 1;
            }
            drop(pool);
            tries += n;
            let mut used = [(0, Candidate::EMPTY); EVICT_BATCH_MAX];
            let mut n_used = 0;
            let mut stop = false;
            for &(i, c) in &best[..n] {
                if stop {
                    // Not needed after all: back into the pool as they were.
                    used[n_used] = (i, c);
                    n_used += 1;
                    continue;
                }
                match self.lock(i).evict_pooled(&c, now_ms) {
                    Pooled::Gone => {}
                    Pooled::Used(now) => {
                        used[n_used] = (i, c.rescored(now));
                        n_used += 1;
                    }
                    Pooled::Evicted(e) => {
                        evicted += 1;
                        stop = !each(i, &e);
                        last = Some((i, e));
                    }
                }
            }
            pool = mine.lock();
            for &(i, c) in &used[..n_used] {
                pool.insert(i, c);
            }
            if stop {
                break 'passes;
            }
        }
        drop(pool);
        match last {
            Some((i, e)) => Eviction::Evicted(i, e),
            None if fresh.is_empty() => Eviction::Nothing,
            None => Eviction::Raced,
        }
    }

    /// Forgets every pooled candidate (their scores belong to the eviction config they were
    /// sampled under).
    pub fn clear_eviction_pool(&self) {
        for pool in &self.evict_pools {
            pool.0.lock().clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a model (a plain list: one item per key, the worst dropped when full), the
        /// pool keeps the same candidates and pops them best first. Scores are distinct (the
        /// insertion index breaks ties), so "the worst" is one item in both.
        #[test]
        fn pool_matches_a_plain_list(
            inserts in proptest::collection::vec((0usize..3, 0u64..30, 0u64..50), 0..100),
        ) {
            let mut pool = EvictionPool::default();
            let mut model: Vec<(usize, u64, u64)> = Vec::new();
            for (n, &(shard, key, score)) in inserts.iter().enumerate() {
                let score = score * 1000 + n as u64;
                pool.insert(shard, Candidate::for_test(key, score));
                model.retain(|&(s, k, _)| (s, k) != (shard, key));
                let worst = model.iter().map(|m| m.2).min();
                if model.len() == POOL_SIZE {
                    if worst.is_some_and(|w| score <= w) {
                        continue;
                    }
                    model.retain(|m| Some(m.2) != worst);
                }
                model.push((shard, key, score));
                prop_assert_eq!(pool.len(), model.len());
            }
            model.sort_by_key(|m| std::cmp::Reverse(m.2));
            let mut popped = Vec::new();
            while let Some((s, c)) = pool.pop() {
                popped.push((s, c.score));
            }
            let want: Vec<(usize, u64)> = model.iter().map(|m| (m.0, m.2)).collect();
            prop_assert_eq!(popped, want);
        }
    }

    #[test]
    fn a_key_sampled_again_is_pooled_once_with_its_latest_score() {
        let mut pool = EvictionPool::default();
        pool.insert(1, Candidate::for_test(7, 10));
        pool.insert(1, Candidate::for_test(7, 3));
        pool.insert(2, Candidate::for_test(7, 5));
        assert_eq!(pool.len(), 2, "same hash in another shard is another key");
        assert_eq!(pool.pop().map(|(s, c)| (s, c.score)), Some((2, 5)));
        assert_eq!(pool.pop().map(|(s, c)| (s, c.score)), Some((1, 3)));
        assert!(pool.pop().is_none());
    }

    #[test]
    fn a_full_pool_drops_its_worst_for_a_better_candidate_only() {
        let mut pool = EvictionPool::default();
        for k in 0..POOL_SIZE as u64 {
            pool.insert(0, Candidate::for_test(k, 10 + k));
        }
        pool.insert(0, Candidate::for_test(100, 5));
        assert_eq!(pool.len(), POOL_SIZE);
        assert!(
            pool.iter().all(|(_, c)| c.score >= 10),
            "a worse one is not kept"
        );
        pool.insert(0, Candidate::for_test(101, 1000));
        assert_eq!(pool.pop().map(|(_, c)| c.score), Some(1000));
        assert!(
            pool.iter().all(|(_, c)| c.score >= 11),
            "the worst made room"
        );
    }
}

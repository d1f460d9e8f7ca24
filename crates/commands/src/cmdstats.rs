//! Per-command statistics: calls, microseconds, rejected and failed calls, and a latency
//! histogram for every command and subcommand of the table. They feed `INFO commandstats`,
//! `INFO latencystats`, `LATENCY HISTOGRAM` and the Prometheus families of the server's
//! `/metrics`; `CONFIG RESETSTAT` clears them.
//!
//! **No lock, no shared cache line on the request path.** Counters are sharded by the worker
//! thread's slot in the exec gate (`multi::ExecGate::thread_slot`: one live thread per slot), so
//! a command adds to counters only its own thread writes: a relaxed load and store each, not a
//! read-modify-write. Threads beyond the gate's slots share one overflow shard updated with
//! `fetch_add`. A shard, and a command's counters in it, are allocated on first use, so a node
//! pays for the commands its threads actually ran. Readers (INFO, a scrape) sum the shards.
//!
//! **Reset without racing the owners.** `CONFIG RESETSTAT` only bumps an epoch; a shard whose
//! epoch is behind reads as zero, and its owner zeroes it (then catches the epoch up) before its
//! next update. So a reset never overwrites a count a thread is adding at that moment.
//!
//! **Histogram.** A command's duration is measured in whole microseconds (`d`, the floor of the
//! real duration). Buckets are exact below 32 µs and 16 per power of two above (6% wide) up to
//! 2^24 µs (16.8 s), plus one overflow bucket: about HDR-histogram precision at 2.7 KB per
//! command and thread. Powers of two are bucket boundaries, so "`d` < 2^k" is exact, and since
//! `d` is a floor it is exactly "the real duration < 2^k µs": that is what the Prometheus
//! `le="2^k µs"` buckets and the `LATENCY HISTOGRAM` keys report. (Redis's HDR histogram keys are
//! near, not at, powers of two — 1, 2, 4, 8, 16, 33, 66, 132 — and count `≤ key`; shoal's keys are
//! exact powers of two counting `< key`.) Percentiles (`INFO latencystats`) are the upper bound of
//! the bucket holding the rank, as HDR's `value_at_percentile` is.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

use crate::multi::{GATE_SLOTS, OVERFLOW};
use crate::table::{self, Spec};

/// Durations below this many microseconds have a bucket each.
const EXACT_US: u64 = 32;
/// log2 of the buckets per power of two above [`EXACT_US`].
const SUB_BITS: u32 = 4;
/// Durations of 2^TOP_EXP µs and more share the overflow bucket.
const TOP_EXP: u32 = 24;
/// Buckets of one command's histogram.
pub const BUCKETS: usize = EXACT_US as usize + ((TOP_EXP - 5) << SUB_BITS) as usize + 1;
/// Largest power-of-two exponent a histogram can answer "< 2^k µs" for exactly.
pub const POW2_MAX: u32 = TOP_EXP;

/// The bucket of a duration of `us` microseconds.
fn bucket(us: u64) -> usize {
    if us < EXACT_US {
        return us as usize;
    }
    let e = 63 - us.leading_zeros();
    if e >= TOP_EXP {
        return BUCKETS - 1;
    }
    let sub = (us >> (e - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    EXACT_US as usize + (((e - 5) << SUB_BITS) as usize) + sub as usize
}

/// The smallest and largest durations (µs) of bucket `i`.
fn bucket_range(i: usize) -> (u64, u64) {
    if i < EXACT_US as usize {
        return (i as u64, i as u64);
    }
    if i == BUCKETS - 1 {
        return (1 << TOP_EXP, u64::MAX);
    }
    let j = (i - EXACT_US as usize) as u32;
    let e = 5 + (j >> SUB_BITS);
    let sub = u64::from(j & ((1 << SUB_BITS) - 1));
    let width = 1u64 << (e - SUB_BITS);
    let low = ((1 << SUB_BITS) + sub) * width;
    (low, low + width - 1)
}

/// One command's counters in one shard.
#[derive(Debug)]
struct Counters {
    calls: AtomicU64,
    usec: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    hist: [AtomicU64; BUCKETS],
    /// Microseconds of the calls in `hist` (`usec` also counts calls made while
    /// `latency-tracking` was off).
    hist_usec: AtomicU64,
}

impl Counters {
    fn new() -> Self {
        Counters {
            calls: AtomicU64::new(0),
            usec: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            hist: std::array::from_fn(|_| AtomicU64::new(0)),
            hist_usec: AtomicU64::new(0),
        }
    }

    fn zero(&self) {
        for c in [
            &self.calls,
            &self.usec,
            &self.rejected,
            &self.failed,
            &self.hist_usec,
        ] {
            c.store(0, Relaxed);
        }
        for b in &self.hist {
            b.store(0, Relaxed);
        }
    }
}

/// One thread's counters (or the overflow threads'), one entry per command.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    /// The reset epoch these counters count from.
    epoch: AtomicU64,
    /// Written only by the owning thread (plain load + store); the overflow shard is shared.
    shared: bool,
    cmds: Box<[OnceLock<Box<Counters>>]>,
}

impl Shard {
    fn add(&self, c: &AtomicU64, n: u64) {
        if self.shared {
            c.fetch_add(n, Relaxed);
        } else {
            // Only this thread writes `c`: no read-modify-write needed.
            c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
        }
    }
}

/// What [`CmdStats::record`] is told about a command that ran.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// Whole microseconds it ran.
    pub us: u64,
    /// It replied an error.
    pub failed: bool,
}

/// The node's per-command statistics (see the file's header).
#[derive(Debug)]
pub struct CmdStats {
    /// One per exec-gate slot, then the overflow shard.
    shards: Box<[OnceLock<Box<Shard>>]>,
    epoch: AtomicU64,
    /// `latency-tracking`: histograms are fed only while it is on.
    pub tracking: AtomicBool,
}

impl Default for CmdStats {
    fn default() -> Self {
        CmdStats {
            shards: (0..=GATE_SLOTS).map(|_| OnceLock::new()).collect(),
            epoch: AtomicU64::new(0),
            tracking: AtomicBool::new(true),
        }
    }
}

/// Every command and subcommand, in table order (commands by name, each followed by its
/// subcommands); an index into it identifies a command in the shards.
pub fn specs() -> &'static [&'static Spec] {
    static ALL: OnceLock<Vec<&'static Spec>> = OnceLock::new();
    ALL.get_or_init(|| {
        table::all()
            .iter()
            .flat_map(|s| std::iter::once(*s).chain(s.subcommands.iter()))
            .collect()
    })
}

/// The index of `spec` in [`specs`], by its address (one hash of a word).
fn index_of(spec: &Spec) -> Option<usize> {
    type Map = HashMap<usize, usize, foldhash::fast::FixedState>;
    static MAP: OnceLock<Map> = OnceLock::new();
    let map = MAP.get_or_init(|| {
        specs()
            .iter()
            .enumerate()
            .map(|(i, s)| (*s as *const Spec as usize, i))
            .collect()
    });
    map.get(&(spec as *const Spec as usize)).copied()
}

/// A command's totals, summed over the shards.
#[derive(Debug, Clone)]
pub struct CmdTotals {
    pub spec: &'static Spec,
    pub calls: u64,
    pub usec: u64,
    pub rejected: u64,
    pub failed: u64,
    pub hist: Box<[u64; BUCKETS]>,
    /// Microseconds of the calls in `hist`.
    pub hist_usec: u64,
}

impl CmdTotals {
    /// Calls that ran for less than 2^k µs (`k` ≤ [`POW2_MAX`]).
    pub fn below_pow2(&self, k: u32) -> u64 {
        debug_assert!(k <= POW2_MAX);
        let limit = 1u64 << k;
        self.hist
            .iter()
            .enumerate()
            .take_while(|(i, _)| bucket_range(*i).1 < limit)
            .map(|(_, n)| n)
            .sum()
    }

    /// Calls counted in the histogram.
    pub fn hist_count(&self) -> u64 {
        self.hist.iter().sum()
    }

    /// The duration (µs) under which `p` percent of the histogram's calls ran: the upper bound
    /// of the bucket holding that rank (the lower bound for `p` = 0, as HDR does).
    pub fn percentile_us(&self, p: f64) -> u64 {
        let total = self.hist_count();
        if total == 0 {
            return 0;
        }
        let rank = ((p / 100.0 * total as f64) + 0.5) as u64;
        let rank = rank.clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.hist.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, high) = bucket_range(i);
                return if p <= 0.0 || i == BUCKETS - 1 {
                    low
                } else {
                    high
                };
            }
        }
        0
    }

    /// Redis's `cmdstat_` name part: the command, or `parent|sub`.
    pub fn name(&self) -> &'static str {
        self.spec.name
    }
}

impl CmdStats {
    /// This thread's shard, created on first use and caught up with the last reset.
    fn shard(&self, slot: usize) -> &Shard {
        let i = if slot == OVERFLOW || slot >= GATE_SLOTS {
            GATE_SLOTS
        } else {
            slot
        };
        let shard = self.shards[i].get_or_init(|| {
            Box::new(Shard {
                epoch: AtomicU64::new(self.epoch.load(Acquire)),
                shared: i == GATE_SLOTS,
                cmds: (0..specs().len()).map(|_| OnceLock::new()).collect(),
            })
        });
        let epoch = self.epoch.load(Acquire);
        let seen = shard.epoch.load(Acquire);
        if seen != epoch {
            // Reset since this shard last counted: zero it, then say so. The owner (or, for the
            // shared shard, whoever wins the exchange) does it, never a reader.
            if !shard.shared
                || seen != u64::MAX
                    && shard
                        .epoch
                        .compare_exchange(seen, u64::MAX, AcqRel, Relaxed)
                        .is_ok()
            {
                for c in shard.cmds.iter().filter_map(OnceLock::get) {
                    c.zero();
                }
                shard.epoch.store(epoch, Release);
            }
        }
        shard
    }

    fn counters<'s>(&self, shard: &'s Shard, spec: &Spec) -> Option<&'s Counters> {
        let i = index_of(spec)?;
        Some(shard.cmds[i].get_or_init(|| Box::new(Counters::new())))
    }

    /// Counts a command that ran (`slot`: the thread's exec-gate slot).
    pub fn record(&self, slot: usize, spec: &Spec, call: Call) {
        let shard = self.shard(slot);
        let Some(c) = self.counters(shard, spec) else {
            return;
        };
        shard.add(&c.calls, 1);
        shard.add(&c.usec, call.us);
        if call.failed {
            shard.add(&c.failed, 1);
        }
        if self.tracking.load(Relaxed) {
            shard.add(&c.hist[bucket(call.us)], 1);
            shard.add(&c.hist_usec, call.us);
        }
    }

    /// Counts a command refused before it ran (arity, `NOAUTH`, `OOM`, a redirect, ...).
    pub fn reject(&self, slot: usize, spec: &Spec) {
        let shard = self.shard(slot);
        if let Some(c) = self.counters(shard, spec) {
            shard.add(&c.rejected, 1);
        }
    }

    /// `CONFIG RESETSTAT`.
    pub fn reset(&self) {
        self.epoch.fetch_add(1, AcqRel);
    }

    /// The totals of every command that was called, rejected or failed since the last reset,
    /// in table order. Costs the commands the threads used, never the keyspace.
    pub fn totals(&self) -> Vec<CmdTotals> {
        let epoch = self.epoch.load(Acquire);
        let live: Vec<&Shard> = self
            .shards
            .iter()
            .filter_map(OnceLock::get)
            .map(|s| &**s)
            .filter(|s| s.epoch.load(Acquire) == epoch)
            .collect();
        let mut out = Vec::new();
        for (i, spec) in specs().iter().enumerate() {
            let mut t: Option<CmdTotals> = None;
            for c in live.iter().filter_map(|s| s.cmds[i].get()) {
                let t = t.get_or_insert_with(|| CmdTotals {
                    spec,
                    calls: 0,
                    usec: 0,
                    rejected: 0,
                    failed: 0,
                    hist: Box::new([0; BUCKETS]),
                    hist_usec: 0,
                });
                t.calls += c.calls.load(Relaxed);
                t.usec += c.usec.load(Relaxed);
                t.rejected += c.rejected.load(Relaxed);
                t.failed += c.failed.load(Relaxed);
                t.hist_usec += c.hist_usec.load(Relaxed);
                for (sum, b) in t.hist.iter_mut().zip(c.hist.iter()) {
                    *sum += b.load(Relaxed);
                }
            }
            if let Some(t) = t.filter(|t| t.calls + t.rejected + t.failed > 0) {
                out.push(t);
            }
        }
        out
    }
}

/// The `# Commandstats` section of INFO.
pub fn info_commandstats(stats: &CmdStats, t: &mut String) {
    t.push_str("# Commandstats\r\n");
    for c in stats.totals() {
        let per_call = if c.calls > 0 {
            c.usec as f64 / c.calls as f64
        } else {
            0.0
        };
        let _ = write!(
            t,
            "cmdstat_{}:calls={},usec={},usec_per_call={per_call:.2},rejected_calls={},failed_calls={}\r\n",
            c.name(),
            c.calls,
            c.usec,
            c.rejected,
            c.failed
        );
    }
    t.push_str("\r\n");
}

/// The `# Latencystats` section of INFO (`percentiles`: `latency-tracking-info-percentiles`).
pub fn info_latencystats(stats: &CmdStats, percentiles: &[f64], t: &mut String) {
    t.push_str("# Latencystats\r\n");
    if stats.tracking.load(Relaxed) {
        for c in stats.totals().iter().filter(|c| c.hist_count() > 0) {
            let _ = write!(t, "latency_percentiles_usec_{}:", c.name());
            for (i, p) in percentiles.iter().enumerate() {
                if i > 0 {
                    t.push(',');
                }
                let _ = write!(t, "p{p}={:.3}", c.percentile_us(*p) as f64);
            }
            t.push_str("\r\n");
        }
    }
    t.push_str("\r\n");
}

/// `LATENCY HISTOGRAM`'s pairs for one command: (2^k µs, calls that took less), cumulative,
/// only where the count grows, up to the bucket of the slowest call.
pub fn histogram_usec(c: &CmdTotals) -> Vec<(u64, u64)> {
    let total = c.hist_count();
    let mut out = Vec::new();
    let mut prev = 0;
    for k in 0..=POW2_MAX {
        let n = c.below_pow2(k);
        if n > prev {
            out.push((1u64 << k, n));
            prev = n;
        }
        if n == total {
            return out;
        }
    }
    // Some calls took 2^POW2_MAX µs or more.
    out.push((1u64 << (POW2_MAX + 1), total));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_durations_and_powers_of_two_start_buckets() {
        let mut next = 0u64;
        for i in 0..BUCKETS {
            let (low, high) = bucket_range(i);
            assert_eq!(low, next, "bucket {i}");
            assert!(high >= low);
            assert_eq!(bucket(low), i);
            assert_eq!(bucket(high), i);
            next = high.wrapping_add(1);
        }
        assert_eq!(next, 0, "the last bucket ends at u64::MAX");
        for k in 0..=POW2_MAX {
            assert_eq!(
                bucket_range(bucket(1 << k)).0,
                1 << k,
                "2^{k} starts a bucket"
            );
        }
        // About 6% wide above the exact range.
        for us in [33u64, 100, 1000, 123_456, 10_000_000] {
            let (low, high) = bucket_range(bucket(us));
            assert!((high - low + 1) as f64 <= us as f64 / 15.0, "{us}");
        }
    }

    fn spec(name: &str) -> &'static Spec {
        specs().iter().find(|s| s.name == name).copied().unwrap()
    }

    #[test]
    fn counts_sum_over_threads_and_reset_clears_them() {
        let st = CmdStats::default();
        let set = spec("set");
        let get = spec("config|get");
        st.record(
            0,
            set,
            Call {
                us: 3,
                failed: false,
            },
        );
        st.record(
            1,
            set,
            Call {
                us: 40,
                failed: true,
            },
        );
        st.record(
            OVERFLOW,
            set,
            Call {
                us: 1,
                failed: false,
            },
        );
        st.reject(2, set);
        st.record(
            0,
            get,
            Call {
                us: 5,
                failed: false,
            },
        );
        let t = st.totals();
        assert_eq!(t.len(), 2);
        let s = t.iter().find(|c| c.name() == "set").unwrap();
        assert_eq!((s.calls, s.usec, s.rejected, s.failed), (3, 44, 1, 1));
        assert_eq!(s.below_pow2(0), 0);
        assert_eq!(s.below_pow2(1), 1);
        assert_eq!(s.below_pow2(2), 2);
        assert_eq!(s.below_pow2(6), 3);
        assert_eq!(histogram_usec(s), vec![(2, 1), (4, 2), (64, 3)]);
        assert_eq!(s.percentile_us(50.0), 3);
        assert_eq!(s.percentile_us(0.0), 1);
        assert_eq!(s.percentile_us(100.0), 41, "40 lies in [40, 41]");
        let mut text = String::new();
        info_commandstats(&st, &mut text);
        assert!(text.contains(
            "cmdstat_set:calls=3,usec=44,usec_per_call=14.67,rejected_calls=1,failed_calls=1\r\n"
        ));
        assert!(text.contains("cmdstat_config|get:calls=1,usec=5,"));
        let mut text = String::new();
        info_latencystats(&st, &[50.0, 99.9], &mut text);
        assert!(text.contains("latency_percentiles_usec_set:p50=3.000,p99.9=41.000\r\n"));

        st.reset();
        assert!(st.totals().is_empty());
        st.record(
            1,
            set,
            Call {
                us: 2,
                failed: false,
            },
        );
        let t = st.totals();
        assert_eq!((t.len(), t[0].calls, t[0].usec), (1, 1, 2));
    }

    #[test]
    fn tracking_off_counts_calls_without_the_histogram() {
        let st = CmdStats::default();
        st.tracking.store(false, Relaxed);
        st.record(
            0,
            spec("get"),
            Call {
                us: 9,
                failed: false,
            },
        );
        let t = st.totals();
        assert_eq!((t[0].calls, t[0].hist_count()), (1, 0));
        let mut text = String::new();
        info_latencystats(&st, &[50.0], &mut text);
        assert_eq!(text, "# Latencystats\r\n\r\n");
    }
}

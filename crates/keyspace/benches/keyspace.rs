//! Criterion micro-benchmarks of the keyspace: lookup (hit and miss), insert/overwrite, setting an
//! expiry, the active expire cycle, eviction under each sampled policy's scoring, and the sorted
//! set's skiplist (score update and insert, shaped like redis-benchmark's ZADD test).

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use shoal_keyspace::shard::EvictConfig;
use shoal_keyspace::types::zset::ZSet;
use shoal_keyspace::{EncodingLimits, Entry, Keyspace, LfuParams, Policy, Rng, key_slot};
use std::hint::black_box;
use std::time::{Duration, Instant};

const KEYS: u64 = 100_000;

fn filled(expire: bool) -> (Keyspace, Vec<Vec<u8>>) {
    let ks = Keyspace::new(1, 64, 7);
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("key:{i:012}").into_bytes())
        .collect();
    for (i, k) in keys.iter().enumerate() {
        let slot = key_slot(k);
        let e = Entry::new_string(
            k,
            &[b'v'; 64],
            expire.then_some(1_000 + i as u64),
            i as u64 + 1,
        );
        ks.lock(ks.shard_of(slot)).insert(0, slot, e, 0);
    }
    (ks, keys)
}

fn bench(c: &mut Criterion) {
    let (ks, keys) = filled(false);
    let mut i = 0usize;
    c.bench_function("get hit", |b| {
        b.iter(|| {
            let k = &keys[i % keys.len()];
            i = i.wrapping_add(7919);
            let slot = key_slot(k);
            let mut s = ks.lock(ks.shard_of(slot));
            black_box(
                s.lookup_read(0, slot, k, 0)
                    .map(|e| e.string().map(|v| v.len())),
            );
        })
    });
    c.bench_function("get miss", |b| {
        b.iter(|| {
            let k = b"missing:key:0001";
            let slot = key_slot(k);
            let mut s = ks.lock(ks.shard_of(slot));
            black_box(s.lookup_read(0, slot, k, 0).is_some());
        })
    });
    let mut v = KEYS + 10;
    c.bench_function("set overwrite 64 bytes", |b| {
        b.iter(|| {
            let k = &keys[i % keys.len()];
            i = i.wrapping_add(7919);
            v += 1;
            let slot = key_slot(k);
            let e = Entry::new_string(k, &[b'w'; 64], None, v);
            black_box(ks.lock(ks.shard_of(slot)).insert(0, slot, e, 0));
        })
    });
    c.bench_function("expire (set a deadline)", |b| {
        b.iter(|| {
            let k = &keys[i % keys.len()];
            i = i.wrapping_add(7919);
            v += 1;
            let slot = key_slot(k);
            let mut s = ks.lock(ks.shard_of(slot));
            if let Some(mut e) = s.lookup(0, slot, k, 0, false) {
                e.set_expire_ms(Some(1_000_000 + v));
                e.set_version(v);
            }
        })
    });
    c.bench_function("active expire cycle, 64 due keys per lock", |b| {
        b.iter_batched(
            || filled(true).0,
            |ks| {
                let mut n = 0;
                for s in 0..ks.shard_count() {
                    n += ks.lock(s).expire_cycle(u64::MAX / 2, 64, |_, _| {}).0;
                }
                black_box(n)
            },
            BatchSize::PerIteration,
        )
    });
    for policy in [
        Policy::AllKeysLru,
        Policy::AllKeysLfu,
        Policy::AllKeysTinyLfu,
        Policy::VolatileTtl,
    ] {
        c.bench_function(&format!("evict one ({})", policy.name()), |b| {
            b.iter_batched(
                || {
                    let (ks, _) = filled(true);
                    let cfg = EvictConfig {
                        policy,
                        samples: 5,
                        lfu: LfuParams::default(),
                        active: true,
                    };
                    ks.set_evict_config(cfg, KEYS as usize);
                    ks
                },
                |ks| {
                    for s in 0..16 {
                        black_box(ks.lock(s).evict_one(0));
                    }
                },
                BatchSize::PerIteration,
            )
        });
    }
}

/// Members of the ZADD benchmark (`element:<0..99999>`), each with a score in 0..99999, as
/// redis-benchmark's `ZADD myzset <score> element:<n>` test uses.
const ZSET_MEMBERS: usize = 100_000;

fn zset_names(prefix: &str) -> Vec<Vec<u8>> {
    (0..ZSET_MEMBERS)
        .map(|i| format!("{prefix}:{i}").into_bytes())
        .collect()
}

fn zset_filled(names: &[Vec<u8>], rng: &mut Rng, lim: &EncodingLimits) -> ZSet {
    let mut z = ZSet::new(lim);
    for m in names {
        z.insert(m, rng.below(ZSET_MEMBERS) as f64, lim);
    }
    z
}

fn bench_zset(c: &mut Criterion) {
    let lim = EncodingLimits::default();
    let mut rng = Rng::new(42);
    let names = zset_names("element");
    let mut z = zset_filled(&names, &mut rng, &lim);
    // redis-benchmark's ZADD: a random existing member gets a random score; it mostly moves.
    c.bench_function("zset update score (100k members)", |b| {
        b.iter(|| {
            let m = &names[rng.below(ZSET_MEMBERS)];
            let s = rng.below(ZSET_MEMBERS) as f64;
            black_box(z.insert(m, s, &lim));
        })
    });
    // New members into a set of 100k to 200k: the set is rebuilt, untimed, when it reaches 200k.
    let fresh = zset_names("fresh");
    c.bench_function("zset insert (100k-200k members)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(ZSET_MEMBERS as u64) as usize;
                let mut z = z.clone();
                let scores: Vec<f64> = (0..n).map(|_| rng.below(ZSET_MEMBERS) as f64).collect();
                let t = Instant::now();
                for (m, &s) in fresh[..n].iter().zip(&scores) {
                    black_box(z.insert(m, s, &lim));
                }
                total += t.elapsed();
                left -= n as u64;
            }
            total
        })
    });
}

criterion_group!(benches, bench, bench_zset);
criterion_main!(benches);

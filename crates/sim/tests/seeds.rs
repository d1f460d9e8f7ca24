//! The simulator in CI: a bounded slice of seeds (at least 200), determinism of a replay, and a
//! check that the checkers catch a planted loss. Thousands of seeds:
//! `cargo run --release -p shoal-sim -- --seeds 10000`.

use shoal_sim::{Params, Sim, run_seed};

/// Seeds run in CI (`SHOAL_SIM_SEEDS` raises it; never below 200).
fn seeds() -> u64 {
    std::env::var("SHOAL_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .max(200)
}

#[test]
fn every_seed_keeps_acknowledged_writes_and_converges() {
    let mut writes = 0;
    let mut acked = 0;
    let mut faults = 0;
    // About a third of the schedules add a replica that follows replica 0 (chained replication).
    let chained = (0..seeds())
        .filter(|&s| Params::from_seed(s).chained)
        .count();
    assert!(chained >= 40, "{chained} chained schedules");
    for seed in 0..seeds() {
        match run_seed(seed) {
            Ok(s) => {
                writes += s.writes;
                acked += s.acked;
                faults += s.drops + s.partitions + s.restarts + s.clock_steps;
            }
            Err(f) => panic!("{f}"),
        }
    }
    // The schedules did something: writes, acknowledged sync writes, and faults.
    assert!(writes > 10_000, "{writes} writes");
    assert!(acked > 1_000, "{acked} acknowledged writes");
    assert!(faults > 100, "{faults} faults");
}

#[test]
fn a_seed_replays_identically() {
    let a = run_seed(42).expect("seed 42 passes");
    let b = run_seed(42).expect("seed 42 passes");
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

#[test]
fn a_replica_that_loses_an_acknowledged_write_is_caught() {
    // Find a seed whose schedule acknowledges a sync write, then plant the loss.
    let seed = (0..100)
        .find(|&s| {
            let p = Params::from_seed(s);
            p.sync && p.min_replicas_ack == 2
        })
        .expect("a sync seed that needs both replicas");
    let mut p = Params::from_seed(seed);
    p.sabotage = true;
    // No faults: a full resync of replica 0 would copy the planted loss away before the end.
    p.drop_per_10k = 0;
    p.partition_per_10k = 0;
    p.restart_per_10k = 0;
    let err = Sim::new(p).run().expect_err("the planted loss is found");
    assert!(
        err.what.contains("lacks"),
        "caught for the right reason: {err}"
    );
    assert!(err.to_string().contains("cargo run -p shoal-sim -- --seed"));
}

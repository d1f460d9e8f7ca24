//! Deterministic simulation of the cluster configuration's Raft group (issue 10): the production
//! log store and state machine under openraft, over a simulated network in virtual time, with
//! Raft membership changes and slot migrations under message loss, delays, partitions and node
//! restarts, driven by a seed. The invariant that matters most: at every committed
//! configuration, each slot has at most one owner (exactly one once assigned), a primary. Beside
//! the group, data nodes beat its voters and fail over (`failover.rs`): one lease per group, no
//! acknowledged `sync` write lost at a promotion, only in-sync replicas promoted, promptly. See
//! ARCHITECTURE.md, "The configuration group in the simulator", and the files under
//! `raft_sim/`: `sim.rs` (a run), `network.rs`, `checker.rs` (the invariants), `workload.rs`,
//! `failover.rs`.
//!
//! CI runs a slice of seeds. A failure prints the command that replays its seed
//! (`RAFT_SIM_SEED=N cargo test -p shoal-server --test raft_sim -- --nocapture`; add
//! `RAFT_SIM_TRACE=1` for a line per event). Thousands of seeds, with openraft's debug assertions
//! on: `CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true RAFT_SIM_SEEDS=5000 cargo test --release -p
//! shoal-server --test raft_sim -- --nocapture` (`RAFT_SIM_FROM=S` starts elsewhere).

#[path = "raft_sim/checker.rs"]
mod checker;
#[path = "raft_sim/failover.rs"]
mod failover;
#[path = "raft_sim/network.rs"]
mod network;
#[path = "raft_sim/sim.rs"]
mod sim;
#[path = "raft_sim/workload.rs"]
mod workload;

use sim::{Params, Summary, replay_command, run, run_seed};

/// Seeds CI runs (`RAFT_SIM_SEEDS` changes it).
const CI_SEEDS: u64 = 30;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v} is not a number"),
    }
}

/// Sums of what the seeds did, to check that the schedules exercise what they claim to.
#[derive(Debug, Default)]
struct Totals {
    seeds: u64,
    changes: u64,
    refused: u64,
    acked: u64,
    acks_checked: u64,
    snapshots_built: u64,
    snapshots_installed: u64,
    crashes: u64,
    torn: u64,
    partitions: u64,
    messages: u64,
    lost: u64,
    membership_done: u64,
    slots_assigned: u64,
    max_virtual_ms: u64,
    promotions: u64,
    leases_granted: u64,
    writes_acked: u64,
    fenced_refusals: u64,
    writes_fenced: u64,
    data_crashes: u64,
    max_failover_ms: u64,
    /// Restarted primaries that served again without acknowledged writes (no in-sync replica
    /// heard), and the writes so dropped: see `failover::Model::serves_after_restart`.
    restarts_served_empty: u64,
    writes_dropped_by_restart: u64,
}

impl Totals {
    fn add(&mut self, s: &Summary) {
        self.seeds += 1;
        self.changes += s.applied.changes;
        self.refused += s.applied.refused;
        self.acked += s.stats.acked;
        self.acks_checked += s.acks_checked as u64;
        self.snapshots_built += s.applied.snapshots_built;
        self.snapshots_installed += s.applied.snapshots_installed;
        self.crashes += s.stats.crashes;
        self.torn += s.stats.torn;
        self.partitions += s.stats.partitions;
        self.messages += s.stats.messages;
        self.lost += s.stats.lost;
        self.membership_done += s.stats.membership_done;
        self.slots_assigned += s.slots_assigned as u64;
        self.max_virtual_ms = self.max_virtual_ms.max(s.virtual_ms);
        let f = &s.failover;
        self.promotions += f.promotions;
        self.leases_granted += f.leases_granted;
        self.writes_acked += f.writes_acked;
        self.fenced_refusals += f.fenced_refusals;
        self.writes_fenced += f.writes_fenced;
        self.data_crashes += f.crashes;
        self.max_failover_ms = self.max_failover_ms.max(f.failover_ms);
        self.restarts_served_empty += f.restarts_served_empty;
        self.writes_dropped_by_restart += f.writes_dropped_by_restart;
    }
}

#[test]
fn every_seed_keeps_one_owner_per_slot_one_lease_per_group_and_converges() {
    if let Some(seed) = env_u64("RAFT_SIM_SEED") {
        match run_seed(seed) {
            Ok(s) => println!("seed {seed} passed: {s:#?}"),
            Err(f) => panic!("{f}"),
        }
        return;
    }
    let from = env_u64("RAFT_SIM_FROM").unwrap_or(0);
    let count = env_u64("RAFT_SIM_SEEDS").unwrap_or(CI_SEEDS);
    let started = std::time::Instant::now();
    let mut t = Totals::default();
    for seed in from..from + count {
        match run_seed(seed) {
            Ok(s) => t.add(&s),
            Err(f) => panic!("{f}"),
        }
        if t.seeds % 100 == 0 {
            println!("{} seeds passed ({:?})", t.seeds, started.elapsed());
        }
    }
    println!(
        "{count} seeds from {from} passed in {:?}: {t:#?}",
        started.elapsed()
    );
    // The schedules did what they are for: changes applied and refused, every acknowledged
    // proposal checked, snapshots, crashes (some tearing the log), partitions, lost messages and
    // membership changes, with slots assigned at the end.
    if count >= CI_SEEDS {
        let n = count;
        assert!(t.changes >= 100 * n && t.refused >= 100 * n, "{t:?}");
        assert!(t.acks_checked == t.acked && t.acked >= 50 * n, "{t:?}");
        assert!(
            t.snapshots_built >= 5 * n && t.snapshots_installed >= n,
            "{t:?}"
        );
        assert!(t.crashes >= n && t.torn >= n / 4, "{t:?}");
        assert!(t.partitions >= n / 2 && t.lost >= 20 * n, "{t:?}");
        assert!(t.membership_done >= 3 * n, "{t:?}");
        assert!(t.slots_assigned >= 2000 * n, "{t:?}");
        // Failover: promotions (at least the killed primary's after the heal, each seed),
        // leases, acknowledged sync writes, primaries fenced, data nodes crashed.
        assert!(
            t.promotions >= 2 * n && t.leases_granted >= 100 * n,
            "{t:?}"
        );
        assert!(
            t.writes_acked >= 200 * n && t.fenced_refusals >= 5 * n,
            "{t:?}"
        );
        assert!(t.writes_fenced >= 20 * n && t.data_crashes >= n, "{t:?}");
    }
}

#[test]
fn a_seed_replays_identically() {
    let a = run_seed(7).unwrap_or_else(|f| panic!("{f}"));
    let b = run_seed(7).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(a, b, "two runs of seed 7 differ");
}

#[test]
fn a_state_machine_that_applies_another_change_is_caught() {
    // Node 2 applies an addition of a node in place of the first slot assignment it applies;
    // the other nodes applied the assignment at that index.
    let mut p = Params::from_seed(3);
    p.sabotage = Some(2);
    p.fault_ms = 10_000;
    p.crash_per_10k = 0;
    p.partition_per_10k = 0;
    let err = run(p).expect_err("the planted divergence is caught");
    assert!(
        err.what.contains("state-machine safety"),
        "caught for the right reason: {err}"
    );
    assert!(err.to_string().contains(&replay_command(3)), "{err}");
}

#[test]
fn a_primary_that_keeps_its_lease_too_long_is_caught() {
    // Data nodes hold leases 20 times longer than granted; after the heal group 0's primary is
    // cut off, and its replica is promoted and granted a lease while the old one still runs.
    let mut p = Params::from_seed(5);
    p.sabotage_lease = true;
    p.fault_ms = 10_000;
    p.crash_per_10k = 0;
    p.partition_per_10k = 0;
    let err = run(p).expect_err("the overlong lease is caught");
    assert!(
        err.what.contains("one lease per group"),
        "caught for the right reason: {err}"
    );
    assert!(err.to_string().contains(&replay_command(5)), "{err}");
}

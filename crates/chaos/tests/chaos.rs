//! The CI slice of the fault-injection suite: twelve short schedules (four seconds of faults
//! each) mixing kill -9, pause, network partitions and clock jumps against a real six-node
//! shoal cluster in `sync` mode, every one checked: no acknowledged write lost, no lost
//! increment, never two primaries for one group, registers linearizable. It needs root
//! (network namespaces) and libfaketime (Debian package `faketime`), and fails, skipping
//! nothing, where either is missing. It builds the `shoal` binary it tests first, so it never
//! tests a stale one.
//! `CHAOS_SEED=N` starts at another seed; a failure prints the command that replays it.

use std::path::PathBuf;
use std::process::Command;

use shoal_chaos::harness::{ClusterOptions, Strategy, Target, default_shoal_bin};
use shoal_chaos::nemesis::FaultKind;
use shoal_chaos::run::{self, RunOptions};

const SCHEDULES: u64 = 12;
const DURATION_MS: u64 = 4000;

/// Builds `shoal` into the target directory this test runs from (same profile).
fn shoal_bin() -> PathBuf {
    let bin = default_shoal_bin();
    let profile_dir = bin.parent().expect("a target directory");
    let target_dir = profile_dir.parent().expect("a target directory");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-q", "-p", "shoal", "--target-dir"])
        .arg(target_dir);
    if profile_dir.ends_with("release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("running cargo build -p shoal");
    assert!(status.success(), "cargo build -p shoal failed");
    assert!(bin.exists(), "no shoal binary at {}", bin.display());
    bin
}

fn options(strategy: Strategy, faults: Vec<FaultKind>) -> RunOptions {
    // Checked before building shoal, so a missing library fails at once.
    let faketime = faults.contains(&FaultKind::Clock).then(|| {
        shoal_chaos::fakeclock::find(None)
            .unwrap_or_else(|why| panic!("this test injects clock jumps: {why}"))
    });
    RunOptions {
        cluster: ClusterOptions {
            target: Target::Shoal,
            strategy,
            primaries: 3,
            replicas: 1,
            node_timeout_ms: 1000,
            ack_timeout_ms: 1000,
            shoal_bin: shoal_bin(),
            redis_server: "redis-server".into(),
            redis_cli: "redis-cli".into(),
            netns: true,
            threads: 1,
            keep_dirs: false,
            faketime,
        },
        clients: 4,
        duration_ms: DURATION_MS,
        faults,
        manual_failover: false,
        history_dir: Some(std::env::temp_dir().join("shoal-chaos-histories")),
        all_histories: false,
        verbose: false,
    }
}

#[test]
fn sync_writes_survive_ten_schedules_of_kills_pauses_partitions_and_clock_jumps() {
    if let Some(why) = shoal_chaos::net::unavailable() {
        panic!("this test injects partitions: {why}");
    }
    let first: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let o = options(
        Strategy::Sync,
        vec![
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::Partition,
            FaultKind::Clock,
        ],
    );
    let mut failures = Vec::new();
    for seed in first..first + SCHEDULES {
        let r = run::run_schedule(&o, seed).unwrap_or_else(|e| {
            panic!(
                "seed {seed} could not run: {e}\n  replay: {}",
                run::replay_command(&o, seed)
            )
        });
        let line = run::summary_line(&o, &r);
        println!("{line}");
        if !r.passed(Strategy::Sync) {
            let mut text = line;
            for l in run::details(&r) {
                text.push('\n');
                text.push_str(&l);
            }
            text.push_str(&format!("\n    replay: {}", run::replay_command(&o, seed)));
            failures.push(text);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {SCHEDULES} schedules failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

//! `shoal-sim`: runs simulation seeds of one replica group (see the library). `--seed N` replays
//! one seed; `--seeds N [--from S]` runs N seeds; with `--active`, seeds of an active-active group
//! (`shoal_sim::active`). A failure prints the command that replays it and exits 1. Thousands of
//! seeds: `cargo run --release -p shoal-sim -- --seeds 10000`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| -> Option<u64> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let (from, count) = match get("--seed") {
        Some(s) => (s, 1),
        None => (get("--from").unwrap_or(0), get("--seeds").unwrap_or(100)),
    };
    if args.iter().any(|a| a == "--active") {
        return active(from, count);
    }
    let mut totals = shoal_sim::Summary::default();
    for seed in from..from + count {
        match shoal_sim::run_seed(seed) {
            Ok(s) => {
                if count == 1 {
                    println!("seed {seed}: {s:?}");
                }
                totals.writes += s.writes;
                totals.acked += s.acked;
                totals.not_durable += s.not_durable;
                totals.drops += s.drops;
                totals.partitions += s.partitions;
                totals.restarts += s.restarts;
                totals.clock_steps += s.clock_steps;
                totals.full_syncs += s.full_syncs;
                totals.partial_syncs += s.partial_syncs;
            }
            Err(f) => {
                eprintln!("{f}");
                std::process::exit(1);
            }
        }
    }
    println!("{count} seeds from {from} passed: {totals:?}");
}

/// `--active`: seeds of an active-active group (`shoal_sim::active`).
fn active(from: u64, count: u64) {
    let mut totals = shoal_sim::active::Summary::default();
    for seed in from..from + count {
        match shoal_sim::active::run_seed(seed) {
            Ok(s) => {
                if count == 1 {
                    println!("active seed {seed}: {s:?}");
                }
                totals.writes += s.writes;
                totals.partitions += s.partitions;
                totals.losses += s.losses;
                totals.repaired += s.repaired;
                totals.heal_rounds += s.heal_rounds;
            }
            Err(f) => {
                eprintln!("{f}");
                std::process::exit(1);
            }
        }
    }
    println!("{count} active seeds from {from} passed: {totals:?}");
}

//! `shoal-chaos`: the command line of the fault-injection suite. `run` plays K schedules from a
//! seed against shoal (or redis-server, for comparison) and prints a line per schedule, the
//! details and replay command of each failure, and totals. `cleanup` removes namespaces left by
//! runs that were killed. Exit status: 0 every schedule passed, 1 one failed, 2 an error.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shoal_chaos::harness::{ClusterOptions, Strategy, Target, default_shoal_bin};
use shoal_chaos::nemesis::FaultKind;
use shoal_chaos::run::{self, RunOptions};

#[derive(Parser)]
#[command(
    name = "shoal-chaos",
    about = "Fault injection against a real shoal cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run schedules of faults and check what the clients saw.
    Run(Box<RunArgs>),
    /// Remove network namespaces (and their processes) left by suite runs that are gone, and
    /// libfaketime's shared memory left by killed nodes.
    Cleanup,
}

#[derive(Parser)]
struct RunArgs {
    /// The first schedule's seed; schedule k uses seed + k.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 1)]
    schedules: u64,
    #[arg(long, value_enum, default_value_t = Strategy::Sync)]
    strategy: Strategy,
    #[arg(long, value_enum, default_value_t = Target::Shoal)]
    target: Target,
    /// Fault kinds to mix, separated by commas.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [FaultKind::Kill, FaultKind::Pause, FaultKind::Partition])]
    faults: Vec<FaultKind>,
    /// Length of each schedule's faulty phase.
    #[arg(long, default_value_t = 6000)]
    duration_ms: u64,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[arg(long, default_value_t = 3)]
    primaries: usize,
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    #[arg(long, default_value_t = 1000)]
    node_timeout_ms: u64,
    /// shoal's ack-timeout-ms (and the WAIT timeout against redis-server).
    #[arg(long, default_value_t = 1000)]
    ack_timeout_ms: u64,
    /// The shoal binary; by default the one next to this executable.
    #[arg(long)]
    shoal_bin: Option<PathBuf>,
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    #[arg(long, default_value = "redis-cli")]
    redis_cli: String,
    /// Nodes on 127.0.0.1 instead of network namespaces (no partitions, no slow links).
    #[arg(long)]
    no_netns: bool,
    /// After a fault takes a primary away, send CLUSTER FAILOVER FORCE to its replica (a
    /// stand-in for automatic failover, to check the suite's plumbing).
    #[arg(long)]
    manual_failover: bool,
    /// Worker threads per shoal node.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Where failing schedules' histories are written (JSON lines).
    #[arg(long, default_value = "chaos-histories")]
    history_dir: PathBuf,
    /// Write every schedule's history to --history-dir, not only failing ones'.
    #[arg(long)]
    all_histories: bool,
    /// Keep each node's directory (server.log, data) after the run.
    #[arg(long)]
    keep_dirs: bool,
    /// The libfaketime library for `--faults clock` (default: Debian's path).
    #[arg(long)]
    libfaketime: Option<PathBuf>,
    /// Print every event as it happens.
    #[arg(long, short)]
    verbose: bool,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Cleanup => {
            let n = shoal_chaos::net::remove_stale();
            let m = shoal_chaos::fakeclock::remove_stale_shm();
            println!(
                "removed {n} stale namespace(s) and the libfaketime shared memory of {m} \
                 process(es) gone"
            );
        }
        Cmd::Run(a) => std::process::exit(run_cmd(*a)),
    }
}

fn run_cmd(a: RunArgs) -> i32 {
    // Nodes run under libfaketime only when clock jumps are asked for.
    let faketime = if a.faults.contains(&FaultKind::Clock) {
        match shoal_chaos::fakeclock::find(a.libfaketime.as_deref()) {
            Ok(lib) => Some(lib),
            Err(why) => {
                eprintln!("shoal-chaos: {why}");
                return 2;
            }
        }
    } else {
        None
    };
    let needs_netns = a.faults.iter().any(|f| f.needs_netns());
    if needs_netns && a.no_netns {
        eprintln!(
            "shoal-chaos: partition and slow faults need network namespaces (drop --no-netns)"
        );
        return 2;
    }
    if needs_netns && let Some(why) = shoal_chaos::net::unavailable() {
        eprintln!("shoal-chaos: {why}");
        return 2;
    }
    let opts = RunOptions {
        cluster: ClusterOptions {
            target: a.target,
            strategy: a.strategy,
            primaries: a.primaries,
            replicas: a.replicas,
            node_timeout_ms: a.node_timeout_ms,
            ack_timeout_ms: a.ack_timeout_ms,
            shoal_bin: a.shoal_bin.unwrap_or_else(default_shoal_bin),
            redis_server: a.redis_server,
            redis_cli: a.redis_cli,
            netns: !a.no_netns && shoal_chaos::net::unavailable().is_none(),
            threads: a.threads,
            keep_dirs: a.keep_dirs,
            faketime,
        },
        clients: a.clients,
        duration_ms: a.duration_ms,
        faults: a.faults,
        manual_failover: a.manual_failover,
        history_dir: Some(a.history_dir),
        all_histories: a.all_histories,
        verbose: a.verbose,
    };
    run::catch_signals();
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut totals = [0usize; 6];
    let mut lin = (0u64, 0u64);
    for seed in a.seed..a.seed + a.schedules {
        let r = match run::run_schedule(&opts, seed) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("seed {seed}: could not run: {e}");
                eprintln!("  replay: {}", run::replay_command(&opts, seed));
                return 2;
            }
        };
        println!("{}", run::summary_line(&opts, &r));
        let ok = r.passed(opts.cluster.strategy);
        if !ok || opts.verbose {
            for l in run::details(&r) {
                println!("{l}");
            }
        }
        if !ok {
            println!("    replay: {}", run::replay_command(&opts, seed));
        }
        let rep = &r.report;
        for (t, v) in totals.iter_mut().zip([
            rep.acked_writes,
            rep.unknown_writes,
            rep.lost_writes.len(),
            rep.lost_increments.max(0) as usize,
            rep.two_primary.len(),
            r.failovers,
        ]) {
            *t += v;
        }
        match rep.linearizable() {
            Some(true) => lin.0 += 1,
            Some(false) => lin.1 += 1,
            None => {}
        }
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
        if run::INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!("interrupted");
            return 2;
        }
    }
    let lost = totals[2] + totals[3];
    println!(
        "totals: {} schedules ({} {}), acked writes {}, unknown {}, lost writes {}, lost increments {}, \
         two-primary windows {}, linearizable {} / not {}, failovers {}{}",
        passed + failed,
        opts.cluster.target,
        opts.cluster.strategy,
        totals[0],
        totals[1],
        totals[2],
        totals[3],
        totals[4],
        lin.0,
        lin.1,
        totals[5],
        if opts.cluster.strategy == Strategy::Async && totals[5] > 0 {
            format!(", loss per failover {:.1}", lost as f64 / totals[5] as f64)
        } else {
            String::new()
        }
    );
    if opts.cluster.target == Target::Redis {
        println!("(redis-server is the reference: its losses are reported, not failed)");
        return 0;
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 { 1 } else { 0 }
}

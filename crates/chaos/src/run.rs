//! One schedule end to end: start a cluster, start the clients and a topology monitor, play
//! the nemesis's events, heal everything, wait until the cluster is whole, stop the clients,
//! read back the final state and check the history. Also the summary lines and the replay
//! command a failing schedule prints.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::checker::{self, Report};
use crate::harness::{Cluster, ClusterOptions, Strategy, Target};
use crate::history::{self, Shard};
use crate::linear::Verdict;
use crate::nemesis::{self, FaultKind};
use crate::resp::Conn;
use crate::rng::Rng;
use crate::workload::{self, Clock, WorkloadOptions};

/// How long the cluster has to become whole after the last fault healed.
pub const HEAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Workload kept running after the cluster is whole again (reads see the recovered state).
pub const AFTER_HEAL: Duration = Duration::from_millis(500);
/// The topology monitor's polling period.
pub const MONITOR_EVERY: Duration = Duration::from_millis(250);

/// Set by SIGINT/SIGTERM: the run stops at the next step and cleans up.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Makes Ctrl-C stop the run cleanly (processes killed, directories and namespaces removed).
pub fn catch_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

fn interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// Sleeps until `t` (on `clock`), waking to notice an interrupt.
fn sleep_until(clock: Clock, t_ms: u64) -> Result<(), String> {
    loop {
        interrupted()?;
        let now = clock.now_us() / 1000;
        if now >= t_ms {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis((t_ms - now).min(50)));
    }
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub cluster: ClusterOptions,
    pub clients: usize,
    pub duration_ms: u64,
    pub faults: Vec<FaultKind>,
    /// Send CLUSTER FAILOVER FORCE to a replica a node timeout after a primary is hit (a
    /// stand-in until automatic failover exists; checks the suite's plumbing).
    pub manual_failover: bool,
    /// Where failing schedules' histories go (JSON lines).
    pub history_dir: Option<PathBuf>,
    /// Write every schedule's history, not only failing ones'.
    pub all_histories: bool,
    pub verbose: bool,
}

pub struct ScheduleResult {
    pub seed: u64,
    pub report: Report,
    pub ops: usize,
    pub failovers: usize,
    pub log: Vec<String>,
    /// The run could not be judged (cluster never whole again, ...): a failure too.
    pub error: Option<String>,
    pub history_file: Option<PathBuf>,
}

impl ScheduleResult {
    pub fn passed(&self, strategy: Strategy) -> bool {
        self.error.is_none()
            && match strategy {
                Strategy::Sync => self.report.sync_ok(),
                Strategy::Async => self.report.async_ok(),
            }
    }
}

/// The command that replays one schedule.
pub fn replay_command(o: &RunOptions, seed: u64) -> String {
    let faults: Vec<String> = o
        .faults
        .iter()
        .map(|f| format!("{f:?}").to_lowercase())
        .collect();
    let c = &o.cluster;
    let mut s = format!(
        "shoal-chaos run --seed {seed} --schedules 1 --target {} --strategy {} --duration-ms {} \
         --faults {} --clients {} --primaries {} --replicas {} --node-timeout-ms {} \
         --ack-timeout-ms {}",
        c.target,
        c.strategy,
        o.duration_ms,
        faults.join(","),
        o.clients,
        c.primaries,
        c.replicas,
        c.node_timeout_ms,
        c.ack_timeout_ms
    );
    if o.manual_failover {
        s.push_str(" --manual-failover");
    }
    if !c.netns {
        s.push_str(" --no-netns");
    }
    if let Some(lib) = &c.faketime
        && !crate::fakeclock::DEFAULT_PATHS.contains(&lib.to_string_lossy().as_ref())
    {
        s.push_str(&format!(" --libfaketime {}", lib.display()));
    }
    match c.target {
        Target::Shoal => s.push_str(&format!(" --shoal-bin {}", c.shoal_bin.display())),
        Target::Redis => s.push_str(&format!(
            " --redis-server {} --redis-cli {}",
            c.redis_server, c.redis_cli
        )),
    }
    s
}

/// Polls every node's slot map and counts changes of each group's primary (the owner most
/// nodes name), so failovers are counted once, not once per node that noticed.
fn monitor(
    addrs: Vec<String>,
    shards: Vec<Shard>,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<String>) {
    let firsts: Vec<u16> = shards.iter().map(|s| s.ranges[0].0).collect();
    let mut owner: Vec<String> = shards.iter().map(|s| s.primary.clone()).collect();
    let (mut changes, mut log) = (0, Vec::new());
    while !stop.load(Ordering::Relaxed) {
        let mut votes: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(); firsts.len()];
        for a in &addrs {
            let Ok(mut c) = Conn::connect(a, Duration::from_millis(300)) else {
                continue;
            };
            let Ok(r) = c.cmd(&["CLUSTER", "SLOTS"]) else {
                continue;
            };
            let Some(map) = crate::client::parse_slots(&r) else {
                continue;
            };
            for (g, first) in firsts.iter().enumerate() {
                if let Some((_, _, p)) = map.iter().find(|(lo, hi, _)| (lo..=hi).contains(&first)) {
                    *votes[g].entry(p.clone()).or_default() += 1;
                }
            }
        }
        for (g, v) in votes.iter().enumerate() {
            if let Some((p, n)) = v.iter().max_by_key(|(_, n)| **n)
                && *n * 2 > addrs.len()
                && *p != owner[g]
            {
                log.push(format!(
                    "{:>6} ms  group {g}: primary {} -> {p}",
                    clock.now_us() / 1000,
                    owner[g]
                ));
                owner[g] = p.clone();
                changes += 1;
            }
        }
        std::thread::sleep(MONITOR_EVERY);
    }
    (changes, log)
}

pub fn run_schedule(o: &RunOptions, seed: u64) -> Result<ScheduleResult, String> {
    let c = &o.cluster;
    let schedule = nemesis::generate(seed, o.duration_ms, c.node_timeout_ms, &o.faults);
    let mut cluster = Cluster::start(c.clone())?;
    let shards = cluster.shards().ok_or("no node answered CLUSTER NODES")?;
    if shards.len() != c.primaries {
        return Err(format!("expected {} groups, found {shards:?}", c.primaries));
    }
    let keys = workload::keys_for(&shards);
    let clock = Clock(Instant::now());
    let mut rng = Rng::new(seed).fork(0xC11E);
    let wopts = WorkloadOptions {
        clients: o.clients,
        target: c.target,
        strategy: c.strategy,
        request_timeout: Duration::from_millis(c.ack_timeout_ms + 1000),
        ack_timeout_ms: c.ack_timeout_ms,
        pace_ms: (5, 20),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let addrs = cluster.addrs();
    let clients = workload::spawn_clients(&wopts, &addrs, &keys, clock, &mut rng, stop.clone());
    let mon_stop = Arc::new(AtomicBool::new(false));
    let mon = {
        let (a, s, st) = (addrs.clone(), shards.clone(), mon_stop.clone());
        std::thread::spawn(move || monitor(a, s, clock, st))
    };
    let mut log = Vec::new();
    let mut say = |line: String, log: &mut Vec<String>| {
        if o.verbose {
            eprintln!("[seed {seed}] {line}");
        }
        log.push(line);
    };
    let played = play(o, &schedule, &mut cluster, clock, &mut log, &mut say);
    // Heal everything, whatever happened; the clients keep going until the cluster is whole.
    let healed = cluster
        .heal_all()
        .and_then(|_| cluster.wait_healthy(HEAL_TIMEOUT));
    say(
        format!(
            "{:>6} ms  healed: {}",
            clock.now_us() / 1000,
            healed
                .as_ref()
                .map_or_else(|e| e.clone(), |_| "cluster whole".into())
        ),
        &mut log,
    );
    if healed.is_ok() {
        std::thread::sleep(AFTER_HEAL);
    }
    stop.store(true, Ordering::Relaxed);
    let mut ops: Vec<history::Op> = Vec::new();
    for h in clients {
        ops.extend(h.join().map_err(|_| "a client thread panicked")?);
    }
    mon_stop.store(true, Ordering::Relaxed);
    let (failovers, mon_log) = mon.join().map_err(|_| "the monitor thread panicked")?;
    log.extend(mon_log);
    let (fin, final_ops) =
        workload::final_reads(&addrs, &keys, &ops, wopts.request_timeout, clock, &mut rng);
    let report = checker::check(
        &ops,
        &fin,
        &shards,
        c.node_timeout_ms * 1000,
        c.strategy == Strategy::Sync,
    );
    let error = played.err().or(healed.err());
    let mut result = ScheduleResult {
        seed,
        report,
        ops: ops.len(),
        failovers,
        log,
        error,
        history_file: None,
    };
    if (o.all_histories || !result.passed(c.strategy))
        && let Some(dir) = &o.history_dir
    {
        let _ = std::fs::create_dir_all(dir);
        let path = dir.join(format!("{}-{}-seed{seed}.jsonl", c.target, c.strategy));
        let mut all = ops;
        all.extend(final_ops);
        if std::fs::write(&path, history::to_json_lines(&all)).is_ok() {
            result.history_file = Some(path);
        }
    }
    drop(cluster);
    Ok(result)
}

/// Plays the schedule's events in order, each started and healed on time.
fn play(
    o: &RunOptions,
    schedule: &nemesis::Schedule,
    cluster: &mut Cluster,
    clock: Clock,
    log: &mut Vec<String>,
    say: &mut impl FnMut(String, &mut Vec<String>),
) -> Result<(), String> {
    let t = |clock: Clock| clock.now_us() / 1000;
    for ev in &schedule.events {
        sleep_until(clock, ev.start_ms)?;
        let shards = cluster.shards().unwrap_or_default();
        let started = nemesis::start(cluster, &shards, &ev.fault)?;
        say(format!("{:>6} ms  {}", t(clock), started.line), log);
        let end = ev.start_ms + ev.hold_ms;
        if o.manual_failover
            && cluster.opts.target == Target::Shoal
            && let Some(p) = started.hit
        {
            let at = ev.start_ms
                + nemesis::failover_delay(cluster.opts.node_timeout_ms).as_millis() as u64;
            if at < end {
                sleep_until(clock, at)?;
                let line = nemesis::force_failover(cluster, &shards, p);
                say(format!("{:>6} ms  {line}", t(clock)), log);
            }
        }
        sleep_until(clock, end)?;
        let line = nemesis::stop(cluster, started.active)?;
        say(format!("{:>6} ms  {line}", t(clock)), log);
    }
    sleep_until(clock, schedule.duration_ms)?;
    Ok(())
}

/// One line per schedule.
pub fn summary_line(o: &RunOptions, r: &ScheduleResult) -> String {
    let rep = &r.report;
    let lin = match rep.linearizable() {
        Some(true) => "yes",
        Some(false) => "NO",
        None if o.cluster.strategy == Strategy::Async => "n/a",
        None => "undetermined",
    };
    let verdict = match (o.cluster.target, r.passed(o.cluster.strategy)) {
        (Target::Redis, _) => "reference",
        (_, true) => "PASS",
        (_, false) => "FAIL",
    };
    format!(
        "seed {:<6} {:<5} {:<5} ops {:>5}  acked {:>5}  unknown {:>4}  lost {:>3}  lost-incr {:>3}  \
         two-primary {:>2}  linearizable {:<12} failovers {:>2}  {verdict}{}",
        r.seed,
        o.cluster.target,
        o.cluster.strategy,
        r.ops,
        rep.acked_writes,
        rep.unknown_writes,
        rep.lost_writes.len(),
        rep.lost_increments,
        rep.two_primary.len(),
        lin,
        r.failovers,
        r.error
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    )
}

/// The details printed under a failing (or verbose) schedule.
pub fn details(r: &ScheduleResult) -> Vec<String> {
    let rep = &r.report;
    let mut out: Vec<String> = r.log.iter().map(|l| format!("    {l}")).collect();
    for w in rep.lost_writes.iter().take(10) {
        out.push(format!("    lost acknowledged write: {w}"));
    }
    if rep.lost_writes.len() > 10 {
        out.push(format!(
            "    ... {} more lost writes",
            rep.lost_writes.len() - 10
        ));
    }
    if rep.phantom_increments > 0 {
        out.push(format!(
            "    phantom increments: {}",
            rep.phantom_increments
        ));
    }
    for t in rep.two_primary.iter().take(10) {
        out.push(format!(
            "    two primaries in group {}: {} acked a write while {} acked writes at {} ms and {} ms",
            t.group,
            t.x,
            t.y,
            t.from_us / 1000,
            t.to_us / 1000
        ));
    }
    for (k, v) in &rep.linearizability {
        match v {
            Verdict::NotLinearizable { stuck_at_us } => out.push(format!(
                "    register {k}: not linearizable (no order past {} ms)",
                stuck_at_us / 1000
            )),
            Verdict::Undetermined { steps } => out.push(format!(
                "    register {k}: undetermined after {steps} search steps"
            )),
            Verdict::Linearizable => {}
        }
    }
    if !rep.unreadable.is_empty() {
        out.push(format!("    unreadable at the end: {:?}", rep.unreadable));
    }
    if let Some(p) = &r.history_file {
        out.push(format!("    history: {}", p.display()));
    }
    out
}

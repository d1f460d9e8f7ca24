//! `shoal-loadgen`: the load generator behind `bench/run`, for what `redis-benchmark` cannot do.
//!
//! - `hitratio`: cache-aside GET/SET over a Zipf key space; the miss ratio of an eviction policy.
//! - `maxrate`:  closed-loop maximum request rate of a GET/SET mix.
//! - `openloop`: latency at a fixed request rate, measured from intended send times.
//! - `cluster-fill`, `cluster-load`: a key space loaded into a cluster, and closed-loop clients
//!   that follow redirects and record errors and latency per phase while slots move
//!   (`bench/reshard`).
//! - `failover`: writers on one slot while its primary is killed; when writes resume on the new
//!   primary, and which acknowledged writes it lost (`bench/failover`).
//!
//! `hitratio` and `maxrate` speak TLS with `--tls --cacert --cert --key` (`bench/tls`).
//!
//! Each prints one JSON object on one line of stdout (the harness parses it) and exits non-zero if
//! the run could not produce a trustworthy number: a server error reply, a broken connection, a run
//! cut short by its time bound. Diagnostics go to stderr.

mod client;
mod cluster;
mod failover;
mod hitratio;
mod maxrate;
mod openloop;
mod resp;
mod tls;
mod workload;
mod zipf;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shoal-loadgen",
    version,
    about = "Load generator for shoal's bench/ harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cache-aside miss ratio over a Zipf key space.
    Hitratio(HitRatioArgs),
    /// Closed-loop maximum rate of a GET/SET mix.
    Maxrate(MaxRateArgs),
    /// Open-loop latency at a fixed rate, without coordinated omission.
    Openloop(OpenLoopArgs),
    /// Load a cluster with the key space `cluster-load` uses.
    ClusterFill(ClusterFillArgs),
    /// Closed-loop clients against a cluster, following MOVED/ASK, counting errors per phase.
    ClusterLoad(ClusterLoadArgs),
    /// Writers on one slot across a failover: first write accepted by the new primary, and
    /// acknowledged writes lost.
    Failover(FailoverArgs),
}

#[derive(Args)]
struct FailoverArgs {
    /// Nodes to read the slot map from, HOST:PORT (comma-separated; the first that answers).
    #[arg(long, value_delimiter = ',', required = true)]
    seeds: Vec<String>,
    /// The slot every key is in.
    #[arg(long)]
    slot: u16,
    /// Clients, each with one write in flight and its own connections.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Send `WAIT N T` behind every SET; a write is acknowledged when WAIT counts N replicas.
    #[arg(long)]
    wait_replicas: Option<u32>,
    /// WAIT's timeout (0: wait for ever, as `WAIT 1 0`).
    #[arg(long, default_value_t = 0)]
    wait_timeout_ms: u64,
    /// Pause after an error or a broken connection before the next attempt.
    #[arg(long, default_value_t = 5)]
    retry_ms: u64,
    /// Deadline of the writes, if the phase file does not say `stop` before.
    #[arg(long, default_value_t = 120.0)]
    duration_s: f64,
    /// A file the harness rewrites; `stop` ends the writes.
    #[arg(long)]
    phase_file: Option<std::path::PathBuf>,
    /// After the writes, read every acknowledged key back from the slot's owner.
    #[arg(long)]
    verify: bool,
    /// Written into every value.
    #[arg(long, default_value_t = 1)]
    run_id: u64,
    /// Timeout of each read and write (a blocked `WAIT N 0` is cut off at `stop` instead).
    #[arg(long, default_value_t = 10)]
    io_timeout_s: u64,
}

#[derive(Args)]
struct KeySpaceArgs {
    /// Nodes to read the slot map from, HOST:PORT (comma-separated; the first that answers).
    #[arg(long, value_delimiter = ',', required = true)]
    seeds: Vec<String>,
    /// The slot range that holds `--keys-in-range` keys, FIRST-LAST (what bench/reshard moves).
    #[arg(long, default_value = "0-999")]
    range: String,
    #[arg(long, default_value_t = 1_000_000)]
    keys_in_range: u64,
    /// Keys spread over the slots outside the range.
    #[arg(long, default_value_t = 200_000)]
    keys_elsewhere: u64,
    /// Ids past the loaded ones that the load's writes may create, as a fraction of the loaded.
    #[arg(long, default_value_t = 0.05)]
    new_fraction: f64,
    /// Timeout of each connect, read and write.
    #[arg(long, default_value_t = 10)]
    io_timeout_s: u64,
}

impl KeySpaceArgs {
    fn space(&self) -> Result<cluster::KeySpace, String> {
        let (lo, hi) = self
            .range
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or("--range must be FIRST-LAST, e.g. 0-999")?;
        cluster::KeySpace::new(
            lo,
            hi,
            self.keys_in_range,
            self.keys_elsewhere,
            self.new_fraction,
        )
    }
}

#[derive(Args)]
struct ClusterFillArgs {
    #[command(flatten)]
    keys: KeySpaceArgs,
    #[arg(long, default_value_t = 2)]
    connections_per_node: usize,
    /// SETs in flight per connection.
    #[arg(long, default_value_t = 256)]
    pipeline: usize,
    /// Hard limit on the whole fill.
    #[arg(long, default_value_t = 600)]
    max_duration_s: u64,
}

#[derive(Args)]
struct ClusterLoadArgs {
    #[command(flatten)]
    keys: KeySpaceArgs,
    /// Clients, each with one request in flight and one connection per node.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Fraction of GETs among single-key requests; the rest are SETs of 64-byte values.
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Fraction of requests that are MSETs of three keys of one slot (hash-tagged).
    #[arg(long, default_value_t = 0.0)]
    mset_ratio: f64,
    /// Deadline of the run, if the phase file does not say `stop` before.
    #[arg(long, default_value_t = 600.0)]
    duration_s: f64,
    /// Length of the windows latency is reported in.
    #[arg(long, default_value_t = 250)]
    report_ms: u64,
    /// A file holding the current phase's name, rewritten by the harness; `stop` ends the run.
    #[arg(long)]
    phase_file: Option<std::path::PathBuf>,
    /// Pause before retrying a request that got TRYAGAIN (the error still counts).
    #[arg(long, default_value_t = 10)]
    tryagain_sleep_ms: u64,
    /// Requests this slow or slower are described in `error_samples` (kind SLOW; not an error).
    #[arg(long, default_value_t = 50)]
    slow_ms: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the whole report goes (phases and windows); stdout gets the summary line.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct Common {
    /// Server address, host:port.
    #[arg(long)]
    addr: String,
    /// Distinct keys (`key:%012d`, ids 0..keys).
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Zipf exponent of key popularity.
    #[arg(long, default_value_t = 0.99)]
    skew: f64,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seed of every random choice; the same seed gives the same request sequence.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Timeout of each connect, read and write.
    #[arg(long, default_value_t = 10)]
    io_timeout_s: u64,
}

#[derive(Args)]
struct HitRatioArgs {
    #[command(flatten)]
    common: Common,
    /// Measured requests (GETs; each miss adds a SET).
    #[arg(long, default_value_t = 1_000_000)]
    requests: u64,
    /// Requests before measuring, to fill the cache.
    #[arg(long, default_value_t = 1_000_000)]
    warmup: u64,
    /// GETs in flight per connection.
    #[arg(long, default_value_t = 32)]
    pipeline: usize,
    /// Hard limit on the whole run.
    #[arg(long, default_value_t = 600)]
    max_duration_s: u64,
    #[command(flatten)]
    tls: tls::TlsArgs,
}

#[derive(Args)]
struct MaxRateArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    tls: tls::TlsArgs,
    /// Fraction of GETs in the mix; the rest are SETs of 64-byte values.
    #[arg(long, default_value_t = 0.9)]
    get_ratio: f64,
    /// Requests in flight per connection. 1 matches what the open-loop run sends when not behind.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    #[arg(long, default_value_t = 0.5)]
    warmup_s: f64,
}

#[derive(Args)]
struct OpenLoopArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 0.9)]
    get_ratio: f64,
    /// Target requests per second, over all connections.
    #[arg(long)]
    rate: f64,
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    #[arg(long, default_value_t = 10.0)]
    drain_timeout_s: f64,
    #[arg(long, default_value_t = 100_000)]
    max_outstanding: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Hitratio(args) => hit_ratio(args),
        Command::Maxrate(args) => max_rate(args),
        Command::Openloop(args) => open_loop(args),
        Command::ClusterFill(args) => cluster_fill(args),
        Command::ClusterLoad(args) => cluster_load(args),
        Command::Failover(args) => failover_run(args),
    };
    match outcome {
        Ok(line) => {
            println!("{}", line.text);
            if let Some(problem) = line.problem {
                eprintln!("shoal-loadgen: {problem}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoal-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A result line, and why it cannot be trusted, if it cannot.
struct Line {
    text: String,
    problem: Option<String>,
}

fn validate(common: &Common) -> Result<(), String> {
    if common.keys == 0 || common.connections == 0 {
        return Err("--keys and --connections must be at least 1".into());
    }
    if !positive(common.skew) {
        return Err("--skew must be a positive number".into());
    }
    Ok(())
}

fn runtime(connections: usize) -> Result<tokio::runtime::Runtime, String> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(connections);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

fn hit_ratio(args: HitRatioArgs) -> Result<Line, String> {
    validate(&args.common)?;
    if args.pipeline == 0 || args.requests == 0 {
        return Err("--pipeline and --requests must be at least 1".into());
    }
    let c = &args.common;
    let cfg = hitratio::Config {
        addr: c.addr.clone(),
        keys: c.keys,
        skew: c.skew,
        warmup: args.warmup,
        requests: args.requests,
        connections: c.connections,
        pipeline: args.pipeline,
        seed: c.seed,
        io_timeout: Duration::from_secs(c.io_timeout_s),
        max_duration: Duration::from_secs(args.max_duration_s),
        tls: args.tls.load()?,
    };
    let t = runtime(c.connections)?
        .block_on(hitratio::run(cfg))
        .map_err(|e| format!("hitratio: {e}"))?;
    let mut json = Json::default();
    json.str("mode", "hitratio")
        .num("skew", c.skew)
        .int("keys", c.keys)
        .int("warmup", args.warmup)
        .int("requests", t.requests)
        .int("misses", t.misses)
        .num("miss_ratio", ratio(t.misses, t.requests))
        .int("errors", t.errors)
        .num("rps", t.requests as f64 / t.measure_secs.max(1e-9))
        .bool("complete", t.complete)
        .opt_str("first_error", t.first_error.as_deref());
    let problem = problem(
        t.errors,
        t.first_error.as_deref(),
        !t.complete,
        "run ended early (time limit or failure)",
    );
    Ok(Line {
        text: json.finish(),
        problem,
    })
}

fn max_rate(args: MaxRateArgs) -> Result<Line, String> {
    validate(&args.common)?;
    if args.pipeline == 0
        || !positive(args.duration_s)
        || !(positive(args.warmup_s) || args.warmup_s == 0.0)
    {
        return Err("--pipeline must be at least 1 and --duration-s positive".into());
    }
    let c = &args.common;
    let cfg = maxrate::Config {
        addr: c.addr.clone(),
        keys: c.keys,
        skew: c.skew,
        get_ratio: args.get_ratio,
        connections: c.connections,
        pipeline: args.pipeline,
        seed: c.seed,
        warmup: Duration::from_secs_f64(args.warmup_s),
        duration: Duration::from_secs_f64(args.duration_s),
        io_timeout: Duration::from_secs(c.io_timeout_s),
        tls: args.tls.load()?,
    };
    let t = runtime(c.connections)?
        .block_on(maxrate::run(cfg))
        .map_err(|e| format!("maxrate: {e}"))?;
    let mut json = Json::default();
    json.str("mode", "maxrate")
        .bool("tls", args.tls.tls)
        .int("connections", c.connections as u64)
        .int("pipeline", args.pipeline as u64)
        .int("requests", t.requests)
        .int("all_requests", t.all_requests)
        .int("errors", t.errors)
        .num("secs", t.secs)
        .num("rps", t.requests as f64 / t.secs.max(1e-9))
        .opt_str("first_error", t.first_error.as_deref());
    let problem = problem(
        t.errors,
        t.first_error.as_deref(),
        t.requests == 0,
        "no request completed",
    );
    Ok(Line {
        text: json.finish(),
        problem,
    })
}

fn open_loop(args: OpenLoopArgs) -> Result<Line, String> {
    validate(&args.common)?;
    if !positive(args.rate) || !positive(args.duration_s) || args.max_outstanding == 0 {
        return Err(
            "--rate and --duration-s must be positive, --max-outstanding at least 1".into(),
        );
    }
    let c = &args.common;
    let cfg = openloop::Config {
        addr: c.addr.clone(),
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration_s),
        connections: c.connections,
        keys: c.keys,
        skew: c.skew,
        get_ratio: args.get_ratio,
        seed: c.seed,
        drain_timeout: Duration::from_secs_f64(args.drain_timeout_s),
        max_outstanding: args.max_outstanding,
        io_timeout: Duration::from_secs(c.io_timeout_s),
    };
    let r = openloop::run(&cfg).map_err(|e| format!("openloop: {e}"))?;
    let us = |q: f64| r.latency_ns.value_at_quantile(q) as f64 / 1000.0;
    let mut json = Json::default();
    json.str("mode", "openloop")
        .num("target_rate", args.rate)
        .num("achieved_rate", r.sent as f64 / r.send_secs.max(1e-9))
        .int("sent", r.sent)
        .int("completed", r.completed)
        .int("errors", r.errors)
        .int("unanswered", r.unanswered)
        .bool("overloaded", r.overloaded)
        .num("p50_us", us(0.5))
        .num("p99_us", us(0.99))
        .num("p999_us", us(0.999))
        .num("max_us", r.latency_ns.max() as f64 / 1000.0)
        .num("mean_us", r.latency_ns.mean() / 1000.0)
        .opt_str("first_error", r.first_error.as_deref());
    // Overload is a measurement (the server fell behind), not a broken run; the harness shows it.
    let broken = r.completed == 0 || r.unanswered > 0;
    let problem = problem(
        r.errors,
        r.first_error.as_deref(),
        broken,
        "replies missing",
    );
    Ok(Line {
        text: json.finish(),
        problem,
    })
}

fn cluster_fill(args: ClusterFillArgs) -> Result<Line, String> {
    if args.connections_per_node == 0 || args.pipeline == 0 {
        return Err("--connections-per-node and --pipeline must be at least 1".into());
    }
    let cfg = cluster::FillConfig {
        seeds: args.keys.seeds.clone(),
        space: Arc::new(args.keys.space()?),
        connections_per_node: args.connections_per_node,
        pipeline: args.pipeline,
        io_timeout: Duration::from_secs(args.keys.io_timeout_s),
        max_duration: Duration::from_secs(args.max_duration_s),
    };
    let expected: u64 = cfg.space.loaded.iter().sum();
    let r = runtime(2)?
        .block_on(cluster::fill(cfg))
        .map_err(|e| format!("cluster-fill: {e}"))?;
    let mut nodes = Json::default();
    for (addr, keys) in &r.per_node {
        nodes.int(addr, *keys);
    }
    let mut json = Json::default();
    json.str("mode", "cluster-fill")
        .int("keys", r.keys)
        .num("secs", r.secs)
        .num("keys_per_s", r.keys as f64 / r.secs.max(1e-9))
        .raw("per_node", &nodes.finish());
    let problem = (r.keys != expected).then(|| format!("{} keys set of {expected}", r.keys));
    Ok(Line {
        text: json.finish(),
        problem,
    })
}

fn cluster_load(args: ClusterLoadArgs) -> Result<Line, String> {
    let ratio_ok = |r: f64| (0.0..=1.0).contains(&r);
    if args.clients == 0
        || args.report_ms == 0
        || !positive(args.duration_s)
        || !ratio_ok(args.read_ratio)
        || !ratio_ok(args.mset_ratio)
    {
        return Err(
            "--clients, --report-ms, --duration-s must be positive, ratios within 0..=1".into(),
        );
    }
    let cfg = cluster::LoadConfig {
        seeds: args.keys.seeds.clone(),
        space: Arc::new(args.keys.space()?),
        clients: args.clients,
        read_ratio: args.read_ratio,
        mset_ratio: args.mset_ratio,
        duration: Duration::from_secs_f64(args.duration_s),
        report: Duration::from_millis(args.report_ms),
        phase_file: args.phase_file.clone(),
        tryagain_sleep: Duration::from_millis(args.tryagain_sleep_ms),
        slow: Duration::from_millis(args.slow_ms),
        io_timeout: Duration::from_secs(args.keys.io_timeout_s),
        seed: args.seed,
    };
    let r = runtime(args.clients)?
        .block_on(cluster::load(cfg))
        .map_err(|e| format!("cluster-load: {e}"))?;
    let mut json = Json::default();
    json.str("mode", "cluster-load")
        .int("clients", args.clients as u64)
        .num("secs", r.secs)
        .bool("stopped", r.stopped)
        .int("keys_added", r.keys_added)
        .int("writes_unknown", r.writes_unknown);
    counts_json(&mut json, &r.total);
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|p| {
            let mut j = Json::default();
            j.str("name", &p.name)
                .int("start_ms", p.start_ms)
                .num("secs", p.secs)
                .num("rps", p.stats.counts.requests as f64 / p.secs.max(1e-9));
            stats_json(&mut j, &p.stats);
            j.finish()
        })
        .collect();
    json.raw("phases", &format!("[{}]", phases.join(",")));
    let samples: Vec<String> = r
        .samples
        .iter()
        .map(|(kind, t_ms, text)| {
            let mut j = Json::default();
            j.str("kind", kind).int("t_ms", *t_ms).str("replies", text);
            j.finish()
        })
        .collect();
    json.raw("error_samples", &format!("[{}]", samples.join(",")));
    let summary = json.clone().finish();
    let windows: Vec<String> = r
        .windows
        .iter()
        .map(|w| {
            let mut j = Json::default();
            j.int("t_ms", w.t_ms).str("phases", &w.phases);
            stats_json(&mut j, &w.stats);
            j.finish()
        })
        .collect();
    json.raw("windows", &format!("[{}]", windows.join(",")));
    if let Some(out) = &args.out {
        std::fs::write(out, json.finish() + "\n")
            .map_err(|e| format!("writing {}: {e}", out.display()))?;
    }
    // Errors are what is measured here, not a sign of a broken run.
    let problem = (r.total.requests == 0).then(|| "no request completed".to_string());
    Ok(Line {
        text: summary,
        problem,
    })
}

fn failover_run(args: FailoverArgs) -> Result<Line, String> {
    if args.clients == 0 || !positive(args.duration_s) || args.wait_replicas == Some(0) {
        return Err("--clients, --duration-s and --wait-replicas must be positive".into());
    }
    let cfg = failover::Config {
        seeds: args.seeds.clone(),
        slot: args.slot,
        clients: args.clients,
        wait: args.wait_replicas.map(|n| (n, args.wait_timeout_ms)),
        retry: Duration::from_millis(args.retry_ms),
        duration: Duration::from_secs_f64(args.duration_s),
        phase_file: args.phase_file.clone(),
        io_timeout: Duration::from_secs(args.io_timeout_s),
        verify: args.verify,
        run_id: args.run_id,
    };
    let r = runtime(args.clients)?
        .block_on(failover::run(cfg))
        .map_err(|e| format!("failover: {e}"))?;
    let opt = |v: Option<u64>| v.map_or("null".to_string(), |n| n.to_string());
    let mut by_node = Json::default();
    for (node, n) in &r.acks_by_node {
        by_node.int(node, *n);
    }
    let mut errors = Json::default();
    for (kind, n) in &r.errors {
        errors.int(kind, *n);
    }
    let firsts: Vec<String> = r.client_first_new_ns.iter().map(u64::to_string).collect();
    let mut json = Json::default();
    json.str("mode", "failover")
        .int("clients", args.clients as u64)
        .int("slot", u64::from(args.slot))
        .str("initial_owner", &r.initial_owner)
        .num("secs", r.secs)
        .bool("stopped", r.stopped)
        .int("attempts", r.attempts)
        .int("acked", r.acked)
        .raw("acks_by_node", &by_node.finish())
        .raw("first_new_ok_ns", &opt(r.first_new_ok_ns))
        .opt_str("first_new_node", r.first_new_node.as_deref())
        .raw("last_old_ok_ns", &opt(r.last_old_ok_ns))
        .raw("first_error_ns", &opt(r.first_error_ns))
        .raw("last_error_before_new_ns", &opt(r.last_error_before_new_ns))
        .raw("client_first_new_ns", &format!("[{}]", firsts.join(",")))
        .raw("errors_by_kind", &errors.finish())
        .int("abandoned", r.abandoned);
    if let Some(Err(e)) = &r.verify {
        let mut vj = Json::default();
        vj.str("error", e);
        json.raw("verify", &vj.finish());
    }
    if let Some(Ok(v)) = &r.verify {
        let shown: Vec<String> = v
            .missing_keys
            .iter()
            .map(|k| {
                let mut j = String::new();
                quote(&mut j, k);
                j
            })
            .collect();
        let mut vj = Json::default();
        vj.str("read_from", &v.read_from)
            .int("checked", v.checked)
            .int("missing", v.missing)
            .int("wrong", v.wrong)
            .raw("missing_keys", &format!("[{}]", shown.join(",")));
        json.raw("verify", &vj.finish());
    }
    // Errors are what is measured here; only a run without a single acknowledged write, or a
    // read-back that did not check every acknowledged key, cannot be trusted.
    let problem = if r.acked == 0 {
        Some("no write was acknowledged".to_string())
    } else {
        match &r.verify {
            Some(Err(e)) => Some(format!("read-back failed: {e}")),
            Some(Ok(v)) if v.checked != r.acked => Some(format!(
                "verified {} of {} acknowledged keys",
                v.checked, r.acked
            )),
            _ => None,
        }
    };
    Ok(Line {
        text: json.finish(),
        problem,
    })
}

fn counts_json(json: &mut Json, c: &cluster::Counts) {
    let mut errors = Json::default();
    for (kind, n) in &c.errors {
        errors.int(kind, *n);
    }
    json.int("requests", c.requests)
        .int("failed", c.failed)
        .int("moved", c.moved)
        .int("ask", c.ask)
        .int("errors", c.error_total())
        .raw("errors_by_kind", &errors.finish());
}

fn stats_json(json: &mut Json, s: &cluster::Stats) {
    counts_json(json, &s.counts);
    let h = &s.latency_us;
    let q = |q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    json.int("p50_us", q(0.5))
        .int("p90_us", q(0.9))
        .int("p99_us", q(0.99))
        .int("p999_us", q(0.999))
        .int("max_us", h.max())
        .num("mean_us", if h.is_empty() { 0.0 } else { h.mean() });
}

/// Rejects zero, negatives, NaN and infinity in one test.
fn positive(x: f64) -> bool {
    x > 0.0 && x.is_finite()
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn problem(
    errors: u64,
    first_error: Option<&str>,
    broken: bool,
    broken_why: &str,
) -> Option<String> {
    if errors > 0 {
        Some(format!(
            "{errors} error(s), first: {}",
            first_error.unwrap_or("?")
        ))
    } else if broken {
        Some(broken_why.to_string())
    } else {
        None
    }
}

/// A JSON object written by hand: the output has a handful of numbers and short strings, not
/// worth a serde_json dependency. Nested objects and arrays are written first and added with `raw`.
#[derive(Clone, Default)]
struct Json {
    body: String,
}

impl Json {
    fn key(&mut self, key: &str) -> &mut String {
        self.body
            .push_str(if self.body.is_empty() { "{" } else { "," });
        quote(&mut self.body, key);
        self.body.push(':');
        &mut self.body
    }

    fn num(&mut self, key: &str, value: f64) -> &mut Self {
        let text = if value.is_finite() {
            format!("{value:.6}")
        } else {
            "null".into()
        };
        self.key(key).push_str(&text);
        self
    }

    fn int(&mut self, key: &str, value: u64) -> &mut Self {
        let _ = write!(self.key(key), "{value}");
        self
    }

    fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key).push_str(if value { "true" } else { "false" });
        self
    }

    fn str(&mut self, key: &str, value: &str) -> &mut Self {
        quote(self.key(key), value);
        self
    }

    /// `value` must already be JSON.
    fn raw(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key).push_str(value);
        self
    }

    fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(key, v),
            None => {
                self.key(key).push_str("null");
                self
            }
        }
    }

    fn finish(&mut self) -> String {
        if self.body.is_empty() {
            self.body.push('{');
        }
        self.body.push('}');
        std::mem::take(&mut self.body)
    }
}

/// Appends `text` as a JSON string.
fn quote(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::Json;

    #[test]
    fn json_line_escapes_strings() {
        let mut json = Json::default();
        json.str("a", "x\"y\\z\n")
            .int("n", 3)
            .bool("ok", true)
            .opt_str("e", None)
            .num("f", f64::NAN);
        assert_eq!(
            json.finish(),
            r#"{"a":"x\"y\\z\u000a","n":3,"ok":true,"e":null,"f":null}"#
        );
    }
}

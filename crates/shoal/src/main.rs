//! `shoal`: the one binary. `shoal serve` runs a server; flags override the TOML config file.

mod alloc;
mod console;

use clap::{Parser, Subcommand};
use shoal_commands::config::Config;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "A distributed, replicated in-memory cache that speaks Redis"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server.
    Serve(ServeArgs),
    /// Compare a primary with each of its replicas slot by slot; list differing keys; optionally
    /// repair them. Exits 1 if any difference was found, 2 on error.
    Verify(VerifyArgs),
    /// Cluster tools.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print an example config file: every parameter set to its default, with what it means
    /// (the repository's `shoal.example.toml` is this output).
    Example,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Check that every node agrees on the slot map, every slot has an owner and none is moving.
    /// Exits 1 on a problem, 2 on error.
    Check(ClusterAddr),
    /// Keys, slots and replicas of each primary.
    Info(ClusterAddr),
    /// Form a cluster of fresh nodes (each started with `--cluster-enabled yes`): the first
    /// ones primaries sharing the slots, the rest replicas. Exits 2 on error.
    Create(CreateArgs),
    /// Start a local cluster (child processes on 127.0.0.1), form it, print how to reach it, and
    /// stop every node on Ctrl-C (or SIGTERM).
    StartLocal(StartLocalArgs),
    /// Add a fresh node (started with `--cluster-enabled yes`) to a cluster, as a primary
    /// without slots or, with `--replica-of`, as a replica.
    AddNode(AddNodeArgs),
    /// Remove a node that serves no slot and has no replicas from a cluster.
    DelNode(DelNodeArgs),
    /// Make a replica the primary of its primary's slots (CLUSTER FAILOVER sent to it), and wait
    /// until the configuration shows it as primary. Exits 2 on failure.
    Failover(FailoverArgs),
    /// Move slots to one primary from others, in proportion to what each owns (as
    /// `redis-cli --cluster reshard`), one slot migration job per source. Exits 2 on failure.
    Reshard(ReshardArgs),
    /// Balance the slots over the primaries by weight (as `redis-cli --cluster rebalance`), one
    /// slot migration job per source and target. Exits 2 on failure.
    Rebalance(RebalanceArgs),
}

#[derive(Parser)]
struct ReshardArgs {
    /// Any node of the cluster, HOST:PORT.
    addr: String,
    /// The source primaries' ids, separated by commas, or `all` (every primary but the target).
    #[arg(long)]
    from: String,
    /// The target primary's id.
    #[arg(long)]
    to: String,
    /// How many slots to move.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=16384))]
    slots: u16,
    /// Do not ask for confirmation of the plan.
    #[arg(long)]
    yes: bool,
    /// Seconds one migration job may run before the tool gives up on it.
    #[arg(long, default_value_t = shoal_server::reshard_tool::JOB_TIMEOUT_DEFAULT.as_secs())]
    timeout: u64,
    #[arg(long)]
    password: Option<String>,
    #[command(flatten)]
    tls: ToolTls,
}

#[derive(Parser)]
struct RebalanceArgs {
    /// Any node of the cluster, HOST:PORT.
    addr: String,
    /// A primary's weight, as <node-id>=<weight> (the id may be abbreviated); repeatable.
    #[arg(long = "weight", value_name = "NODE-ID=WEIGHT")]
    weights: Vec<String>,
    /// Move nothing unless a primary is further than this from its share, in percent.
    #[arg(long, default_value_t = default_threshold())]
    threshold: f32,
    /// Give slots to primaries that have none.
    #[arg(long)]
    use_empty_masters: bool,
    /// Show the moves without making them.
    #[arg(long)]
    simulate: bool,
    /// Seconds one migration job may run before the tool gives up on it.
    #[arg(long, default_value_t = shoal_server::reshard_tool::JOB_TIMEOUT_DEFAULT.as_secs())]
    timeout: u64,
    #[arg(long)]
    password: Option<String>,
    #[command(flatten)]
    tls: ToolTls,
}

/// redis-cli's default `--cluster-threshold`.
fn default_threshold() -> f32 {
    shoal_server::reshard_tool::REBALANCE_THRESHOLD_PCT
}

/// Asks on the terminal whether to go ahead; only `yes` is yes.
fn confirm(question: &str) -> bool {
    use std::io::Write;
    print!("{question} (yes/no)? ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == "yes"
}

#[derive(Parser)]
struct FailoverArgs {
    /// The replica to promote, HOST:PORT.
    addr: String,
    /// Do not coordinate with the primary (it may be down): writes it acknowledged that the
    /// replica had not received are lost.
    #[arg(long, conflicts_with = "takeover")]
    force: bool,
    /// As --force: in shoal the configuration group orders every change, so there is no election
    /// for a takeover to skip.
    #[arg(long)]
    takeover: bool,
    /// How long to wait for the promotion, in seconds.
    #[arg(long, default_value_t = shoal_server::cluster_tool::FAILOVER_WAIT.as_secs())]
    timeout: u64,
    #[arg(long)]
    password: Option<String>,
    #[command(flatten)]
    tls: ToolTls,
}

#[derive(Parser)]
struct AddNodeArgs {
    /// The new node, HOST:PORT.
    new: String,
    /// Any node of the cluster, HOST:PORT.
    existing: String,
    /// Make the new node a replica of this primary (its node id).
    #[arg(long)]
    replica_of: Option<String>,
    #[arg(long)]
    password: Option<String>,
    #[command(flatten)]
    tls: ToolTls,
}

#[derive(Parser)]
struct DelNodeArgs {
    /// Any node of the cluster, HOST:PORT.
    existing: String,
    /// The id of the node to remove.
    id: String,
    #[arg(long)]
    password: Option<String>,
    #[command(flatten)]
    tls: ToolTls,
}

#[derive(Parser)]
struct CreateArgs {
    /// The nodes, HOST:PORT.
    #[arg(required = true)]
    addrs: Vec<String>,
    /// Replicas per primary.
    #[arg(long, default_value_t = 0)]
    replicas: usize,
    /// Password for AUTH on every node.
    #[arg(long)]
    password: Option<String>,
    #[command(flatten)]
    tls: ToolTls,
}

#[derive(Parser)]
struct StartLocalArgs {
    #[arg(long, default_value_t = 3)]
    primaries: usize,
    /// Replicas per primary.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Where the nodes keep their files (one folder per node); a new temporary folder by default.
    #[arg(long)]
    dir: Option<String>,
    /// The first node's port; the others follow (their cluster bus ports are 10000 higher).
    #[arg(long, default_value_t = 7000)]
    port_base: u16,
    /// With a port, node i also serves `/metrics` and the status page on this port + i (0: off).
    #[arg(long, default_value_t = 0)]
    metrics_port_base: u16,
}

#[derive(Parser)]
struct ClusterAddr {
    /// Any node of the cluster, HOST:PORT.
    addr: String,
    /// Password for AUTH on every node.
    #[arg(long)]
    password: Option<String>,
    #[command(flatten)]
    tls: ToolTls,
}

/// TLS for the tools' connections, as redis-cli names it.
#[derive(clap::Args)]
struct ToolTls {
    /// Connect to every node over TLS (needs --cacert).
    #[arg(long, requires = "cacert")]
    tls: bool,
    /// CA certificate file (PEM) the nodes' certificates are checked against.
    #[arg(long, requires = "tls")]
    cacert: Option<String>,
    /// Client certificate file (PEM), for nodes that ask for one (`tls-auth-clients`).
    #[arg(long, requires_all = ["tls", "key"])]
    cert: Option<String>,
    /// The client certificate's private key file (PEM).
    #[arg(long, requires_all = ["tls", "cert"])]
    key: Option<String>,
}

impl ToolTls {
    /// Makes the tool's connections speak TLS if `--tls` was given; the error names the file.
    fn install(&self) -> Result<(), String> {
        match (&self.tls, &self.cacert) {
            (true, Some(ca)) => {
                shoal_server::tls::install_tool(ca, self.cert.as_deref(), self.key.as_deref())
            }
            _ => Ok(()),
        }
    }
}

/// 0, or 2 with the error on stderr.
fn exit_code(tool: &str, r: Result<(), String>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shoal cluster {tool}: {e}");
            2
        }
    }
}

fn cluster(c: ClusterCommand) -> i32 {
    let tls = match &c {
        ClusterCommand::Check(a) | ClusterCommand::Info(a) => Some(&a.tls),
        ClusterCommand::Create(a) => Some(&a.tls),
        ClusterCommand::StartLocal(_) => None,
        ClusterCommand::AddNode(a) => Some(&a.tls),
        ClusterCommand::DelNode(a) => Some(&a.tls),
        ClusterCommand::Failover(a) => Some(&a.tls),
        ClusterCommand::Reshard(a) => Some(&a.tls),
        ClusterCommand::Rebalance(a) => Some(&a.tls),
    };
    if let Some(Err(e)) = tls.map(ToolTls::install) {
        eprintln!("shoal cluster: {e}");
        return 2;
    }
    match c {
        ClusterCommand::Create(a) => {
            match shoal_server::cluster_tool::create(
                &a.addrs,
                a.replicas,
                a.password.as_deref(),
                console::Console::new(),
            ) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("shoal cluster create: {e}");
                    2
                }
            }
        }
        ClusterCommand::StartLocal(a) => start_local(a),
        ClusterCommand::Reshard(a) => {
            use shoal_server::reshard_tool::{ReshardOptions, Sources};
            let opts = ReshardOptions {
                addr: a.addr,
                from: Sources::parse(&a.from),
                to: a.to,
                slots: a.slots as usize,
                password: a.password,
                job_timeout: std::time::Duration::from_secs(a.timeout),
            };
            let yes = a.yes;
            exit_code(
                "reshard",
                shoal_server::reshard_tool::reshard(
                    &opts,
                    || yes || confirm("Do you want to proceed with the proposed reshard plan"),
                    console::Console::new(),
                ),
            )
        }
        ClusterCommand::Rebalance(a) => {
            let opts = shoal_server::reshard_tool::RebalanceOptions {
                addr: a.addr,
                weights: a.weights,
                threshold_pct: a.threshold,
                use_empty: a.use_empty_masters,
                simulate: a.simulate,
                password: a.password,
                job_timeout: std::time::Duration::from_secs(a.timeout),
            };
            exit_code(
                "rebalance",
                shoal_server::reshard_tool::rebalance(&opts, console::Console::new()),
            )
        }
        ClusterCommand::Failover(a) => {
            use shoal_server::cluster_tool::FailoverMode;
            let mode = match (a.force, a.takeover) {
                (_, true) => FailoverMode::Takeover,
                (true, _) => FailoverMode::Force,
                _ => FailoverMode::Coordinated,
            };
            exit_code(
                "failover",
                shoal_server::cluster_tool::failover(
                    &a.addr,
                    mode,
                    a.password.as_deref(),
                    std::time::Duration::from_secs(a.timeout),
                    console::Console::new(),
                ),
            )
        }
        ClusterCommand::AddNode(a) => exit_code(
            "add-node",
            shoal_server::cluster_tool::add_node(
                &a.new,
                &a.existing,
                a.replica_of.as_deref(),
                a.password.as_deref(),
                |l| println!("{l}"),
            ),
        ),
        ClusterCommand::DelNode(a) => exit_code(
            "del-node",
            shoal_server::cluster_tool::del_node(&a.existing, &a.id, a.password.as_deref(), |l| {
                println!("{l}")
            }),
        ),
        ClusterCommand::Check(a) => {
            match shoal_server::cluster_tool::check(&a.addr, a.password.as_deref()) {
                Ok(r) => {
                    for l in &r.lines {
                        println!("{l}");
                    }
                    if r.problems == 0 { 0 } else { 1 }
                }
                Err(e) => {
                    eprintln!("shoal cluster check: {e}");
                    2
                }
            }
        }
        ClusterCommand::Info(a) => {
            match shoal_server::cluster_tool::info(&a.addr, a.password.as_deref()) {
                Ok(lines) => {
                    for l in &lines {
                        println!("{l}");
                    }
                    0
                }
                Err(e) => {
                    eprintln!("shoal cluster info: {e}");
                    2
                }
            }
        }
    }
}

#[derive(Parser)]
struct VerifyArgs {
    /// The primary, HOST:PORT.
    addr: String,
    /// Make each replica hold the primary's state for every differing key.
    #[arg(long)]
    repair: bool,
    /// Password for AUTH on every node.
    #[arg(long)]
    password: Option<String>,
    #[command(flatten)]
    tls: ToolTls,
    /// Database to verify.
    #[arg(long, default_value_t = 0)]
    db: usize,
    /// No progress on stderr (the differing keys are still listed on stdout).
    #[arg(long)]
    quiet: bool,
}

fn verify(a: VerifyArgs) -> i32 {
    if let Err(e) = a.tls.install() {
        eprintln!("shoal verify: {e}");
        return 2;
    }
    let opts = shoal_server::verify::Options {
        addr: a.addr,
        password: a.password,
        repair: a.repair,
        db: a.db,
    };
    let result = if a.quiet {
        shoal_server::verify::run(&opts, &mut |l: &str| println!("{l}"))
    } else {
        shoal_server::verify::run(&opts, &mut console::Console::new())
    };
    match result {
        Ok(r) => {
            println!(
                "verified {} replica(s): {} differing key(s){}",
                r.replicas,
                r.differences.len(),
                if opts.repair {
                    format!(", {} repaired", r.repaired)
                } else {
                    String::new()
                }
            );
            if r.differences.is_empty() { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("shoal verify: {e}");
            2
        }
    }
}

#[derive(Parser)]
struct ServeArgs {
    /// TOML config file (keys are parameter names, e.g. `maxmemory = "100mb"`).
    #[arg(long)]
    config: Option<String>,
    /// TCP port (0 picks a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Address to listen on.
    #[arg(long)]
    bind: Option<String>,
    /// Memory limit in bytes; kb/mb/gb suffixes accepted. 0 means no limit.
    #[arg(long)]
    maxmemory: Option<String>,
    /// Eviction policy: allkeys-tinylfu (default), allkeys-lru, allkeys-lfu, allkeys-random,
    /// volatile-lru, volatile-lfu, volatile-random, volatile-ttl, noeviction.
    #[arg(long)]
    maxmemory_policy: Option<String>,
    /// Password clients must AUTH with.
    #[arg(long)]
    requirepass: Option<String>,
    /// Number of databases.
    #[arg(long)]
    databases: Option<u32>,
    /// Maximum simultaneous clients.
    #[arg(long)]
    maxclients: Option<u32>,
    /// Worker threads (default: number of cores).
    #[arg(long)]
    threads: Option<u32>,
    /// Log level: debug, verbose, notice, warning.
    #[arg(long)]
    loglevel: Option<String>,
    /// Any other parameter, as NAME=VALUE (repeatable), e.g. `--set hz=20`.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Any other parameter the way redis-server takes it: `--NAME VALUE...` (the words up to the
    /// next `--` make the value, e.g. `--dir /tmp --save "900 1" --replicaof 127.0.0.1 6379`).
    #[arg(
        value_name = "--NAME VALUE",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    rest: Vec<String>,
}

/// Parses redis-server style `--name value [value...]` arguments into (name, value) pairs.
fn redis_style_options(rest: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, Vec<&str>)> = Vec::new();
    for word in rest {
        match word.strip_prefix("--") {
            Some(name) if !name.is_empty() => out.push((name.to_string(), Vec::new())),
            _ => match out.last_mut() {
                Some((_, words)) => words.push(word),
                None => {
                    return Err(format!(
                        "unexpected argument '{word}' (options are --NAME VALUE)"
                    ));
                }
            },
        }
    }
    out.into_iter()
        .map(|(name, words)| {
            if words.is_empty() {
                Err(format!("option --{name} needs a value"))
            } else {
                Ok((name, words.join(" ")))
            }
        })
        .collect()
}

fn build_config(a: &ServeArgs) -> Result<Config, String> {
    let mut v = Config::default();
    if let Some(path) = &a.config {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
        shoal_server::load_config_file(&mut v, &text)?;
    }
    let flags: [(&str, Option<String>); 9] = [
        ("port", a.port.map(|x| x.to_string())),
        ("bind", a.bind.clone()),
        ("maxmemory", a.maxmemory.clone()),
        ("maxmemory-policy", a.maxmemory_policy.clone()),
        ("requirepass", a.requirepass.clone()),
        ("databases", a.databases.map(|x| x.to_string())),
        ("maxclients", a.maxclients.map(|x| x.to_string())),
        ("threads", a.threads.map(|x| x.to_string())),
        ("loglevel", a.loglevel.clone()),
    ];
    for (name, value) in flags {
        if let Some(value) = value {
            v.set_initial(name, &value)?;
        }
    }
    for kv in &a.set {
        let (k, val) = kv
            .split_once('=')
            .ok_or_else(|| format!("--set expects NAME=VALUE, got '{kv}'"))?;
        v.set_initial(k, val)?;
    }
    for (k, val) in redis_style_options(&a.rest)? {
        v.set_initial(&k, &val)?;
    }
    Ok(v)
}

/// `shoal cluster start-local`: child `shoal serve` processes on consecutive ports, formed into a
/// cluster, stopped (killed and reaped) on Ctrl-C, SIGTERM, or when forming fails.
fn start_local(a: StartLocalArgs) -> i32 {
    use std::process::{Command, Stdio};
    let n = a.primaries * (a.replicas + 1);
    if a.primaries < shoal_server::cluster_tool::PRIMARIES_MIN {
        eprintln!(
            "shoal cluster start-local: a cluster needs at least {} primaries",
            shoal_server::cluster_tool::PRIMARIES_MIN
        );
        return 2;
    }
    let dir = match &a.dir {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("shoal-local-{}", std::process::id())),
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("shoal cluster start-local: {e}");
            return 2;
        }
    };
    let mut children = Vec::new();
    let mut addrs = Vec::new();
    let stop = |children: &mut Vec<std::process::Child>| {
        for c in children.iter_mut() {
            let _ = c.kill();
        }
        for c in children.iter_mut() {
            let _ = c.wait();
        }
    };
    for i in 0..n {
        let Some(port) = a.port_base.checked_add(i as u16) else {
            eprintln!("shoal cluster start-local: ports past 65535");
            stop(&mut children);
            return 2;
        };
        let node_dir = dir.join(format!("node-{port}"));
        if let Err(e) = std::fs::create_dir_all(&node_dir) {
            eprintln!("shoal cluster start-local: {}: {e}", node_dir.display());
            stop(&mut children);
            return 2;
        }
        let metrics_port = match a.metrics_port_base {
            0 => 0,
            base => match base.checked_add(i as u16) {
                Some(p) => p,
                None => {
                    eprintln!("shoal cluster start-local: metrics ports past 65535");
                    stop(&mut children);
                    return 2;
                }
            },
        };
        let child = Command::new(&exe)
            .args(["serve", "--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(["--cluster-enabled", "yes", "--loglevel", "warning", "--dir"])
            .arg(&node_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn();
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                eprintln!("shoal cluster start-local: starting a node: {e}");
                stop(&mut children);
                return 2;
            }
        }
        addrs.push(format!("127.0.0.1:{port}"));
    }
    // Every node answers before the cluster is formed (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for addr in &addrs {
        while shoal_server::tool_client::Client::connect(
            addr,
            std::time::Duration::from_millis(200),
        )
        .is_err()
        {
            if std::time::Instant::now() >= deadline {
                eprintln!("shoal cluster start-local: {addr} did not start");
                stop(&mut children);
                return 2;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    if let Err(e) =
        shoal_server::cluster_tool::create(&addrs, a.replicas, None, console::Console::new())
    {
        eprintln!("shoal cluster start-local: {e}");
        stop(&mut children);
        return 2;
    }
    println!(
        "cluster of {} primaries and {} replicas up; files in {}",
        a.primaries,
        n - a.primaries,
        dir.display()
    );
    for addr in &addrs {
        println!("  {addr}");
    }
    println!("try: redis-cli -c -p {}", a.port_base);
    if a.metrics_port_base != 0 {
        println!(
            "status page: http://127.0.0.1:{}/ (metrics at /metrics, ports {}..)",
            a.metrics_port_base, a.metrics_port_base
        );
    }
    println!("Ctrl-C stops every node");
    let stopped = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(shoal_server::stop_signal()));
    stop(&mut children);
    if a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match stopped {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("shoal cluster start-local: {e}");
            2
        }
    }
}

/// Detaches the process as Redis's `daemonize`: the parent exits at once with status 0, the
/// child goes on in a session of its own with its standard streams on /dev/null. Called before
/// any other thread exists (a fork keeps only the calling thread; the runtime and the server's
/// threads start later).
/// `disable-thp yes`: no transparent huge pages for this process, including the memory the
/// allocator already holds (the flag is the process's, not a range's), as Redis does.
fn disable_thp() -> Result<(), String> {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

fn daemonize() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("opening /dev/null: {e}"))?;
    // SAFETY: single-threaded here (see above), so the child inherits a consistent process.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            // SAFETY: plain system calls on descriptors this process owns.
            unsafe {
                libc::setsid();
                for fd in 0..=2 {
                    libc::dup2(null.as_raw_fd(), fd);
                }
            }
            Ok(())
        }
        _ => std::process::exit(0),
    }
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Verify(args) => std::process::exit(verify(args)),
        Command::Cluster(c) => std::process::exit(cluster(c)),
        Command::Config(ConfigCommand::Example) => {
            print!("{}", shoal_server::config_file::example());
        }
        Command::Serve(args) => {
            alloc::configure();
            let config = match build_config(&args) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("shoal: {e}");
                    std::process::exit(2);
                }
            };
            if config.daemonize
                && let Err(e) = daemonize()
            {
                eprintln!("shoal: {e}");
                std::process::exit(1);
            }
            if let Err(e) =
                shoal_server::log::init(config.loglevel, config.log_format, &config.logfile)
            {
                eprintln!("shoal: {e}");
                std::process::exit(1);
            }
            if config.disable_thp
                && let Err(e) = disable_thp()
            {
                tracing::warn!(error = %e, "Failed to disable transparent huge pages");
            }
            let mut server = match shoal_server::Server::bind(
                config,
                shoal_server::Allocator {
                    used_memory: alloc::used_memory,
                    info: alloc::info,
                    stats_text: alloc::stats_text,
                    purge: alloc::purge,
                },
            ) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("shoal: {e}");
                    std::process::exit(1);
                }
            };
            if let Some(path) = &args.config {
                server.set_config_file(path);
            }
            // Written once the listeners are bound, removed when the node stops (as Redis).
            let pidfile = server.state.config().pidfile.clone();
            if !pidfile.is_empty()
                && let Err(e) = std::fs::write(&pidfile, format!("{}\n", std::process::id()))
            {
                tracing::warn!(path = %pidfile, error = %e, "Failed to write PID file");
            }
            // Tests and scripts read the bound port from this line when they pass --port 0.
            println!("shoal listening on {}", server.addr);
            let r = server.run();
            if !pidfile.is_empty() {
                let _ = std::fs::remove_file(&pidfile);
            }
            if let Err(e) = r {
                eprintln!("shoal: {e}");
                std::process::exit(1);
            }
        }
    }
}

//! The shoal server: configuration loading, the tokio runtime, the listener, connection tasks, the
//! background cron (active expiry, ops/sec), and graceful shutdown.
//!
//! Threading: a multi-threaded tokio runtime with `threads` workers runs every connection task;
//! commands lock only the keyspace shards they touch (see `shoal-keyspace`), so throughput grows
//! with threads. Background work that may take milliseconds (active expiry) runs on its own OS
//! thread, never on a runtime worker, so it cannot stall the connections sharing that worker.

pub mod active;
pub mod antientropy;
pub mod aof;
pub mod bufpool;
pub mod clock;
pub mod cluster_node;
pub mod cluster_tool;
pub mod config_file;
pub mod conn;
pub mod cron;
pub mod events;
pub mod http;
pub mod in_sync;
pub mod lease;
pub mod links;
pub mod listeners;
pub mod log;
pub mod metrics;
pub mod migrate;
pub mod persist;
pub mod progress;
pub mod raft;
pub mod reshard_tool;
pub mod slot_migration;
pub mod status;
pub mod tier;
pub mod tls;
pub mod tool_client;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_commands::config::Config;
use shoal_commands::multi::ExecGate;
use shoal_commands::server::ProcessInfo;
use shoal_commands::{Hooks, ServerState};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Redis 7.0's reply to a client refused by protected mode, word for word.
const PROTECTED_MODE_DENIED: &str = "-DENIED Redis is running in protected mode because protected \
    mode is enabled and no password is set for the default user. In this mode connections are \
    only accepted from the loopback interface. If you want to connect from external computers to \
    Redis you may adopt one of the following solutions: 1) Just disable protected mode sending \
    the command 'CONFIG SET protected-mode no' from the loopback interface by connecting to Redis \
    from the same host the server is running, however MAKE SURE Redis is not publicly accessible \
    from internet if you do so. Use CONFIG REWRITE to make this change permanent. 2) \
    Alternatively you can just disable the protected mode by editing the Redis configuration \
    file, and setting the protected mode option to 'no', and then restarting the server. 3) If \
    you started the server manually just for testing, restart it with the '--protected-mode no' \
    option. 4) Setup a an authentication password for the default user. NOTE: You only need to \
    do one of the above things in order for the server to start accepting connections from the \
    outside.\r\n";

/// How long a shutdown waits for connections to finish their current batch.
pub const SHUTDOWN_GRACE_MS: u64 = 2_000;

/// Wall-clock time in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Loads a TOML config file into `config` (see [`config_file::load`]).
pub fn load_config_file(config: &mut Config, text: &str) -> Result<(), String> {
    config_file::load(config, text)
}

/// What the binary's allocator tells about itself (the binary owns the allocator).
#[derive(Debug, Clone, Copy)]
pub struct Allocator {
    /// Live bytes allocated (`used_memory`).
    pub used_memory: fn() -> usize,
    pub info: fn() -> shoal_commands::server::AllocatorInfo,
    /// Its statistics as text (`MEMORY MALLOC-STATS`).
    pub stats_text: fn() -> String,
    /// Returns free memory to the OS (`MEMORY PURGE`).
    pub purge: fn(),
}

impl Allocator {
    /// An allocator known only by its count of live bytes.
    pub fn counting(used_memory: fn() -> usize) -> Self {
        Allocator {
            used_memory,
            info: Default::default,
            stats_text: String::new,
            purge: || {},
        }
    }
}

/// `uname`'s system, release and machine, as Redis shows them (`Linux 6.1.0 x86_64`).
fn os_name() -> String {
    // SAFETY: uname fills the zeroed struct we pass; its fields are NUL-terminated.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return format!("{} {}", std::env::consts::OS, std::env::consts::ARCH);
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!(
        "{} {} {}",
        field(&u.sysname),
        field(&u.release),
        field(&u.machine)
    )
}

/// User and system CPU seconds of the main thread (its tid is the pid), from
/// `/proc/self/task/<pid>/stat` (fields 14 and 15, in clock ticks).
fn main_thread_cpu() -> (f64, f64) {
    let path = format!("/proc/self/task/{}/stat", std::process::id());
    let Ok(text) = std::fs::read_to_string(path) else {
        return (0.0, 0.0);
    };
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let Some(rest) = text.rsplit_once(')').map(|(_, r)| r) else {
        return (0.0, 0.0);
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) as f64 / ticks;
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    (get(11), get(12))
}

/// Total RAM, from sysinfo.
fn total_system_memory() -> u64 {
    // SAFETY: sysinfo fills the zeroed struct we pass.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    if unsafe { libc::sysinfo(&mut si) } != 0 {
        return 0;
    }
    si.totalram as u64 * u64::from(si.mem_unit)
}

/// RSS from /proc/self/statm and CPU time from getrusage.
fn process_info() -> ProcessInfo {
    let page = 4096u64;
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<u64>().ok())
        })
        .unwrap_or(0);
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let (cpu_main_user_s, cpu_main_sys_s) = main_thread_cpu();
    ProcessInfo {
        rss_bytes: rss_pages * page,
        cpu_user_s: secs(ru.ru_utime),
        cpu_sys_s: secs(ru.ru_stime),
        cpu_main_user_s,
        cpu_main_sys_s,
        pid: std::process::id(),
        total_system_memory_bytes: total_system_memory(),
    }
}

/// Bytes of the process's memory in transparent huge pages: the `AnonHugePages` lines of
/// `/proc/self/smaps_rollup` (or of `/proc/self/smaps` on kernels without it), summed as Redis's
/// `zmalloc_get_smap_bytes_by_field` does; 0 when neither can be read.
fn anon_huge_pages_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup")
        .or_else(|_| std::fs::read_to_string("/proc/self/smaps"))
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("AnonHugePages:"))
        .filter_map(|v| v.trim().strip_suffix("kB"))
        .filter_map(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .sum()
}

/// A server that is bound and ready to run.
/// Waits for SIGINT or SIGTERM; returns its name (`None` if the handlers cannot be installed).
pub async fn stop_signal() -> Option<&'static str> {
    StopSignals::install().wait().await
}

/// SIGINT and SIGTERM handlers, installed at once (in a runtime's context) and awaited later:
/// a server installs them before it serves anyone, so a signal sent once it answers a request
/// never meets the default action (which ends the process with no clean shutdown).
pub struct StopSignals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl StopSignals {
    pub fn install() -> StopSignals {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(int), Ok(term)) => StopSignals(Some((int, term))),
            _ => StopSignals(None),
        }
    }

    /// The name of the first of the two to arrive (`None` if they could not be installed).
    pub async fn wait(self) -> Option<&'static str> {
        let (mut int, mut term) = self.0?;
        tokio::select! {
            _ = int.recv() => Some("SIGINT"),
            _ = term.recv() => Some("SIGTERM"),
        }
    }
}

pub struct Server {
    pub state: Arc<ServerState>,
    pub addr: SocketAddr,
    listener: std::net::TcpListener,
    /// The TLS listener, when `tls-port` is set.
    tls_listener: Option<std::net::TcpListener>,
    /// Its address.
    pub tls_addr: Option<SocketAddr>,
    /// The HTTP listener (`/metrics`, the status page), when `metrics-port` is set.
    http: Option<std::net::TcpListener>,
    /// Its address.
    pub http_addr: Option<SocketAddr>,
    threads: usize,
    shutdown_tx: watch::Sender<bool>,
}

/// Runtime workers when `threads` is 0 (the default): one per core but one, and at least one.
/// The core left over runs what is not a command: the kernel's network work for every request
/// (80% of a server's CPU at one request per round trip), the clients and sidecars sharing the
/// machine, and the node's own threads (replication links, the AOF writer, snapshots), as
/// Redis's own advice for its I/O threads leaves cores free (four cores: two or three). Measured
/// on two cores with redis-benchmark beside the server (`bench/ab`, 3 rounds, one worker against
/// two): SET P16 ×1.47, GET P16 ×1.37, INCR P16 ×1.43, MSET P1 ×1.25, the rest ×0.99–1.02; into
/// a full cache SET P16 650–690k against 540–710k req/s with a p99 of 2.2–2.4 ms against 3.4–3.9
/// (redis-server 2.0–2.3). With two workers and the client on two cores, each worker waited on a
/// run queue 20% of the time (`/proc/PID/task/*/schedstat`), holding its connections' requests.
/// The other way: a light client with few connections (`shoal-loadgen maxrate`, 8 connections,
/// one request per round trip) leaves room for a second worker, 213–229k against 189–196k
/// req/s; `threads 2` is then the better setting.
pub fn default_workers(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

impl Server {
    /// Binds the listener (so the port is known before running) and builds the state.
    pub fn bind(mut config: Config, allocator: Allocator) -> Result<Server, String> {
        let port = config.port;
        let bind = config.bind.clone();
        let threads = match config.threads as usize {
            0 => default_workers(std::thread::available_parallelism().map_or(1, |n| n.get())),
            n => n,
        };
        let addr_text = format!(
            "{}:{}",
            bind.split_whitespace().next().unwrap_or("127.0.0.1"),
            port
        );
        let listener = listeners::bind(&addr_text)?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        // `--port 0` picks a free port: CONFIG GET port shows the one bound (so setting it back
        // to what CONFIG GET said, as config tools and Redis's own tests do, changes nothing).
        if port == 0 {
            config.port = addr.port();
        }
        // Certificates that do not load stop the start, naming the file.
        tls::install(&config)?;
        let tls_listener = if config.tls_port != 0 {
            let text = format!(
                "{}:{}",
                bind.split_whitespace().next().unwrap_or("127.0.0.1"),
                config.tls_port
            );
            Some(listeners::bind(&text)?)
        } else {
            None
        };
        let tls_addr = tls_listener.as_ref().and_then(|l| l.local_addr().ok());
        let http = http::bind(&config)?;
        let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
        let (shutdown_tx, _) = watch::channel(false);
        let hooks = Hooks {
            used_memory: allocator.used_memory,
            process_info,
            rewrite_config: config_file::rewrite,
            allocator_info: allocator.info,
            allocator_stats_text: allocator.stats_text,
            allocator_purge: allocator.purge,
            anon_huge_pages_bytes,
            sleep: std::thread::sleep,
            random_bytes: os_random,
            read_file: |path| std::fs::read(path).map_err(|e| e.to_string()),
            write_file: write_file_atomic,
            apply_tls: tls::apply,
            listen: listeners::relisten,
            log: log::line,
        };
        let seed = now_ms() ^ ((std::process::id() as u64) << 32);
        let mut state = ServerState::new(config, now_ms(), seed, hooks);
        match &state.cluster {
            Some(cl) => {
                log::set_node(&cl.me());
                log::set_epoch(0);
            }
            None => log::set_node(&state.run_id),
        }
        // This node's lazy-free thread: large values are dropped there, off the request path.
        let (lazyfree, worker) = shoal_keyspace::LazyFree::with_worker();
        std::thread::Builder::new()
            .name("shoal-lazyfree".into())
            .spawn(move || worker.run())
            .map_err(|e| format!("lazyfree thread: {e}"))?;
        state.lazyfree = lazyfree;
        state.clock = clock::system();
        let _ = state.scripts.offload.set(conn::offload_long_script);
        state.os = os_name();
        // What the node holds before any data (Redis's `used_memory_startup`).
        let startup = (allocator.used_memory)() as u64;
        state.stats.used_memory_startup.store(startup, Relaxed);
        state.stats.observe_used_memory(startup);
        // The disk tier, before the data is loaded (a load past `maxmemory` may move values).
        tier::start(&state)?;
        // With the append-only log on, it is the data (its base holds what the snapshot held).
        if state.config().appendonly {
            aof::load_at_startup(&state)?;
        } else {
            persist::load_at_startup(&state)?;
        }
        // An active-active member merges later writes against what the snapshot held.
        shoal_commands::active::seed(&state, now_ms());
        let aclfile = state.config().aclfile.clone();
        if !aclfile.is_empty() {
            shoal_commands::acl::load_file(&state, &aclfile)
                .map_err(|e| format!("Aborting because of ACL errors: {e}"))?;
        }
        state.tcp_port.store(addr.port(), Relaxed);
        state.executable = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        Ok(Server {
            state: Arc::new(state),
            addr,
            listener,
            tls_listener,
            tls_addr,
            http,
            http_addr,
            threads,
            shutdown_tx,
        })
    }

    /// The address this node announces in cluster mode: its TLS port under `tls-cluster` (as
    /// Redis: the cluster's clients and the nodes' own links then speak TLS), else its plain one.
    pub fn cluster_addr(&self) -> SocketAddr {
        match self.tls_addr {
            Some(t) if self.state.config().tls_cluster => t,
            _ => self.addr,
        }
    }

    pub fn set_config_file(&mut self, path: &str) {
        if let Some(s) = Arc::get_mut(&mut self.state) {
            s.config_file = path.to_string();
        }
    }

    /// Runs until SHUTDOWN, SIGINT or SIGTERM. Blocks the calling thread.
    pub fn run(self) -> Result<(), String> {
        clock::calibrate();
        // Workers keep their hold on the exec gate between commands and leave it when they go
        // idle (see `shoal_commands::multi::ExecGate`): commands then pay almost nothing for it.
        // Only workers park, so only they become sticky (blocking-pool threads never do).
        let parking = self.state.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.threads)
            .thread_name("shoal-worker")
            .on_thread_park(move || {
                ExecGate::set_sticky_thread(true);
                parking.gate.release_thread();
                // A claim on a hot shard is set aside while its worker is idle (and only
                // workers claim: their connections can move; see `shoal_keyspace::claim`);
                // while another worker claims one, this one does not park.
                shoal_keyspace::claim::set_thread(true);
                shoal_keyspace::claim::park_thread();
                parking.ks.claims().idle_while_claimed();
                // Another worker's batch of scripts holds the gate: nothing could run here
                // meanwhile; sleeping here keeps the runtime from waking this thread to take
                // tasks that would only wait (see `ExecGate`).
                parking
                    .gate
                    .idle_while_batch_elsewhere(|| parking.scripts.busy.past_threshold(&parking));
            })
            .on_thread_unpark(shoal_keyspace::claim::unpark_thread)
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let cron = cron::spawn(self.state.clone(), self.shutdown_tx.subscribe());
        let result = rt.block_on(self.serve());
        // Connections still running after the grace period are dropped with the runtime.
        rt.shutdown_timeout(Duration::from_millis(SHUTDOWN_GRACE_MS));
        let _ = cron.join();
        result
    }

    async fn serve(self) -> Result<(), String> {
        let cluster_addr = self.cluster_addr();
        let mut listener = Some(TcpListener::from_std(self.listener).map_err(|e| e.to_string())?);
        let mut tls_listener = match self.tls_listener {
            Some(l) => Some(TcpListener::from_std(l).map_err(|e| e.to_string())?),
            None => None,
        };
        // `CONFIG SET port` / `tls-port` hand new listeners over through this.
        let mut swaps = listeners::install(
            self.state
                .config()
                .bind
                .split_whitespace()
                .next()
                .unwrap_or("127.0.0.1"),
            self.tls_addr.map_or(0, |a| a.port()),
        );
        let state = self.state;
        let mut shutdown = self.shutdown_tx.subscribe();
        // SHUTDOWN, run by a connection, stops the server through this.
        let shutdown_tx = std::sync::Arc::new(self.shutdown_tx.clone());
        let signals = {
            let tx = self.shutdown_tx.clone();
            // Installed here, before the first accept; awaited by the task.
            let installed = StopSignals::install();
            tokio::spawn(async move {
                if let Some(sig) = installed.wait().await {
                    tracing::warn!("received {sig}, shutting down");
                    let _ = tx.send(true);
                }
            })
        };
        if state.persist.aof.enabled.load(Relaxed) {
            aof::spawn_writer(&state)?;
        }
        tokio::spawn(links::keepalive(Arc::downgrade(&state)));
        tokio::spawn(active::supervise(
            Arc::downgrade(&state),
            links::ReplicationNow(Arc::downgrade(&state)),
        ));
        tokio::spawn(antientropy::run(
            Arc::downgrade(&state),
            links::ReplicationNow(Arc::downgrade(&state)),
        ));
        if let Some(l) = self.http {
            tokio::spawn(http::serve(state.clone(), l, self.shutdown_tx.subscribe()));
            tracing::info!(addr = ?self.http_addr, "serving /metrics and the status page");
        }
        // Cluster mode: the node's member of the configuration group, before the first request
        // is served (connections made meanwhile wait in the listen queue).
        let cluster = match state.cluster {
            Some(_) => Some(cluster_node::ClusterNode::start(&state, cluster_addr).await?),
            None => None,
        };
        let io = Arc::new(conn::NodeIo {
            shutdown: (*shutdown_tx).clone(),
            cluster,
        });
        // A configured `replicaof` starts the link now.
        let replicaof = state.config().replicaof.clone();
        let mut parts = replicaof.split_whitespace();
        if let (Some(host), Some(Ok(port))) = (parts.next(), parts.next().map(|p| p.parse::<u16>()))
        {
            let epoch = state.repl.become_replica(&state.ks, host.to_string(), port);
            tokio::spawn(links::run_replica(
                state.clone(),
                links::Link::replication(&state),
                host.to_string(),
                port,
                epoch,
            ));
        }
        {
            let cfg = state.config();
            let mode = if state.cluster.is_some() {
                "cluster"
            } else {
                "standalone"
            };
            let role = match state.repl.role() {
                shoal_replication::Role::Primary => "primary".to_string(),
                shoal_replication::Role::Replica { host, port } => {
                    format!("replica of {host}:{port}")
                }
            };
            let config_file = if state.config_file.is_empty() {
                "none"
            } else {
                state.config_file.as_str()
            };
            tracing::info!(
                version = env!("CARGO_PKG_VERSION"),
                addr = %self.addr,
                mode,
                role = %role,
                config_file,
                threads = self.threads,
                pid = std::process::id(),
                maxmemory = cfg.maxmemory,
                "ready to accept connections"
            );
        }
        let mut announced = cluster_addr;
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(swap) = swaps.recv() => {
                    let new = match swap.listener.map(TcpListener::from_std).transpose() {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::warn!(error = %e, "new listener refused by the runtime");
                            None
                        }
                    };
                    // The old listener closes here; its connections stay.
                    if swap.tls {
                        tls_listener = new;
                    } else {
                        listener = new;
                    }
                    // In a cluster, the port the node announces follows (`cluster_addr`).
                    let port_of = |l: &Option<TcpListener>| {
                        l.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port())
                    };
                    let port = if state.config().tls_cluster {
                        port_of(&tls_listener)
                    } else {
                        port_of(&listener)
                    };
                    if let (Some(node), Some(port)) = (&io.cluster, port)
                        && port != announced.port()
                    {
                        announced.set_port(port);
                        node.announce(announced);
                    }
                }
                accepted = accept_either(listener.as_ref(), tls_listener.as_ref()) => {
                    let (stream, peer, tls) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            // Out of file descriptors and similar: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let cfg = state.config();
                    let refusal = if state.open_connections.load(Relaxed) >= cfg.maxclients as usize
                    {
                        // Not logged at warning level: a burst would flood the log (Redis only
                        // counts them too).
                        tracing::debug!(%peer, "max number of clients reached");
                        // Not counted in the error stats: no client was created (as in Redis).
                        let mut line = Vec::new();
                        shoal_commands::ReplyError::err_static("max number of clients reached")
                            .write_to(&mut shoal_resp::ReplyWriter::new(
                                &mut line,
                                shoal_resp::Protocol::Resp2,
                            ));
                        Some(line)
                    } else if cfg.protected_mode
                        && !state.hot.requirepass_set.load(Relaxed)
                        && !shoal_commands::config::is_local(&peer.to_string())
                    {
                        tracing::debug!(%peer, "refused by protected mode (no password set)");
                        Some(PROTECTED_MODE_DENIED.as_bytes().to_vec())
                    } else {
                        None
                    };
                    if let Some(line) = refusal {
                        state.stats.rejected_connections.fetch_add(1, Relaxed);
                        let handshake_ms = cfg.tls_handshake_timeout_ms;
                        tokio::spawn(async move {
                            use tokio::io::AsyncWriteExt;
                            if tls {
                                // Told over TLS, as Redis tells it.
                                if let Some(t) = tls::loaded()
                                    && let Ok(mut s) = tls::accept(
                                        t.server,
                                        stream,
                                        Duration::from_millis(handshake_ms),
                                    )
                                    .await
                                {
                                    let _ = s.write_all(&line).await;
                                    let _ = s.shutdown().await;
                                }
                            } else {
                                let mut s = stream;
                                let _ = s.write_all(&line).await;
                            }
                        });
                        continue;
                    }
                    // Counted now, released when the connection's task ends.
                    state.open_connections.fetch_add(1, Relaxed);
                    if tls {
                        tasks.spawn(serve_tls(
                            state.clone(),
                            stream,
                            peer,
                            io.clone(),
                            Duration::from_millis(cfg.tls_handshake_timeout_ms),
                        ));
                    } else {
                        tasks.spawn(conn::serve(state.clone(), stream, io.clone()));
                    }
                    // Reap finished tasks so the set does not grow with closed connections.
                    while tasks.try_join_next().is_some() {}
                }
            }
        }
        signals.abort();
        drop(listener);
        tracing::warn!("shutting down: closing client connections");
        for c in state.client_handles() {
            c.kill();
        }
        let _ = tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        aof::stop(&state);
        persist::save_at_shutdown(&state);
        tracing::warn!("shoal is now ready to exit, bye bye");
        Ok(())
    }
}

/// The next connection from either listener, and whether it came to the TLS port (never, while
/// neither is open).
async fn accept_either(
    plain: Option<&TcpListener>,
    tls: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr, bool)> {
    match (plain, tls) {
        (None, None) => std::future::pending().await,
        (Some(p), None) => p.accept().await.map(|(s, a)| (s, a, false)),
        (None, Some(t)) => t.accept().await.map(|(s, a)| (s, a, true)),
        (Some(p), Some(t)) => tokio::select! {
            r = p.accept() => r.map(|(s, a)| (s, a, false)),
            r = t.accept() => r.map(|(s, a)| (s, a, true)),
        },
    }
}

/// A connection to the TLS port: the handshake (bounded by `tls-handshake-timeout-ms`; a client
/// that does not finish it, or that speaks plain text, is closed), then the client connection.
async fn serve_tls(
    state: Arc<ServerState>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    io: Arc<conn::NodeIo>,
    timeout: Duration,
) {
    let _ = stream.set_nodelay(true);
    let accepted = match tls::loaded() {
        Some(t) => tls::accept(t.server, stream, timeout).await,
        None => Err(std::io::Error::other("TLS is not configured")),
    };
    match accepted {
        Ok(s) => conn::serve(state, s, io).await,
        Err(e) => {
            state.open_connections.fetch_sub(1, Relaxed);
            // As Redis logs a failed accept (at its verbose level: scanners are frequent).
            tracing::info!(%peer, error = %e, "Error accepting a client connection");
        }
    }
}

/// Random bytes from the OS (`ACL GENPASS`); never the seeded generator the keyspace uses.
fn os_random(buf: &mut [u8]) {
    use std::io::Read;
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(buf));
    assert!(filled.is_ok(), "/dev/urandom unreadable");
}

/// Writes `data` to a temporary file beside `path`, then renames it over `path` (`ACL SAVE`).
fn write_file_atomic(path: &str, data: &[u8]) -> Result<(), String> {
    let tmp = format!("{path}.tmp-{}", std::process::id());
    std::fs::write(&tmp, data).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        e.to_string()
    })
}

//! Server-wide state that commands read and change: the keyspace, configuration, counters, the client
//! registry, the slow log and the latency monitor; and the per-connection session. Plain data and
//! locks, no I/O: the server crate owns sockets and tasks and reaches connections through the
//! callbacks stored here.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed,
};
use std::sync::{Arc, Mutex, RwLock};

use shoal_keyspace::{Keyspace, Policy, SHARDS_DEFAULT, shard::EvictConfig};
use shoal_resp::Protocol;

use crate::config::Config;

/// Config values read on every command (or on every command of a kind), mirrored from the
/// [`Config`] snapshot when it changes so the request path takes no lock for them.
#[derive(Debug, Default)]
pub struct Hot {
    /// `DEBUG SET-ACTIVE-EXPIRE 0`: the cron expires no keys (lazy expiry still does).
    pub active_expire_off: AtomicBool,
    pub maxmemory_bytes: AtomicU64,
    pub policy: AtomicU8,
    pub requirepass_set: AtomicBool,
    pub slowlog_slower_than_us: AtomicU64,
    pub slowlog_enabled: AtomicBool,
    pub latency_threshold_ms: AtomicU64,
    pub replica_read_only: AtomicBool,
    /// `min-replicas-to-write` and `min-replicas-max-lag` (seconds); either 0: off.
    pub min_replicas_to_write: AtomicU64,
    pub min_replicas_max_lag_s: AtomicU64,
    pub proto_max_bulk_bytes: AtomicU64,
    /// `hll-sparse-max-bytes`: the largest sparse HyperLogLog.
    pub hll_sparse_max_bytes: AtomicU64,
    /// `ttl-jitter-percent`: relative TTLs grow by a random share up to this (see
    /// `strings::jitter_ttl_ms`).
    pub ttl_jitter_percent: AtomicU64,
    /// Compact-encoding thresholds (`hash-max-listpack-entries` and friends).
    pub encoding: EncodingCell,
    /// `maxmemory-clients` in bytes (a percentage taken of `maxmemory`); 0: no limit.
    pub clients_limit_bytes: AtomicU64,
}

/// [`shoal_keyspace::EncodingLimits`] as one atomic per field: read by every collection write, so
/// a lock's read count (a shared cache line every worker writes) cost as much as the push itself
/// on a hot list. A read during a `CONFIG SET` may mix old and new fields, each of which is a
/// limit on its own.
#[derive(Debug)]
pub struct EncodingCell([AtomicI64; 8]);

impl Default for EncodingCell {
    fn default() -> Self {
        let cell = EncodingCell(Default::default());
        cell.store(shoal_keyspace::EncodingLimits::default());
        cell
    }
}

impl EncodingCell {
    pub fn load(&self) -> shoal_keyspace::EncodingLimits {
        let f = |i: usize| self.0[i].load(Relaxed);
        shoal_keyspace::EncodingLimits {
            hash_max_listpack_entries: f(0) as usize,
            hash_max_listpack_value: f(1) as usize,
            list_max_listpack_size: f(2),
            set_max_intset_entries: f(3) as usize,
            zset_max_listpack_entries: f(4) as usize,
            zset_max_listpack_value: f(5) as usize,
            stream_node_max_bytes: f(6) as usize,
            stream_node_max_entries: f(7) as usize,
        }
    }

    pub fn store(&self, l: shoal_keyspace::EncodingLimits) {
        let fields = [
            l.hash_max_listpack_entries as i64,
            l.hash_max_listpack_value as i64,
            l.list_max_listpack_size,
            l.set_max_intset_entries as i64,
            l.zset_max_listpack_entries as i64,
            l.zset_max_listpack_value as i64,
            l.stream_node_max_bytes as i64,
            l.stream_node_max_entries as i64,
        ];
        for (a, v) in self.0.iter().zip(fields) {
            a.store(v, Relaxed);
        }
    }
}

/// A counter every worker adds to on every command, kept per thread (the exec gate's thread slots,
/// `ExecGate::thread_slot`, plus one for threads without a slot): adding touches only the calling
/// thread's own cache line, where one shared counter moved between the workers on every command
/// (2.6% of a worker's time at GET P16). A slot belongs to one live thread at a time, so its
/// thread adds with a plain load and store: a locked add waited for the thread's earlier stores
/// (into a full cache, 70% of `run_command`'s own samples sat on it). Threads without a slot share
/// the last one, with `fetch_add`. Reading sums the slots; a reset moves the baseline the sum is
/// read from instead of writing the slots, so it never races their owners.
#[derive(Debug)]
pub struct SlotCounter {
    slots: Box<[PaddedCounter]>,
    /// The sum at the last reset.
    base: AtomicU64,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct PaddedCounter(AtomicU64);

impl Default for SlotCounter {
    fn default() -> Self {
        SlotCounter {
            slots: (0..=crate::multi::GATE_SLOTS)
                .map(|_| PaddedCounter::default())
                .collect(),
            base: AtomicU64::new(0),
        }
    }
}

impl SlotCounter {
    /// Adds `n` for the calling thread, whose slot is `slot` (`crate::multi::OVERFLOW` or any
    /// slot past the last: the shared one).
    pub fn add(&self, slot: usize, n: u64) {
        let shared = self.slots.len() - 1;
        if slot < shared {
            // Only this thread writes its slot.
            let c = &self.slots[slot].0;
            c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
        } else {
            self.slots[shared].0.fetch_add(n, Relaxed);
        }
    }

    fn sum(&self) -> u64 {
        self.slots
            .iter()
            .fold(0u64, |sum, c| sum.wrapping_add(c.0.load(Relaxed)))
    }

    pub fn load(&self) -> u64 {
        self.sum().wrapping_sub(self.base.load(Relaxed))
    }

    /// Back to zero (CONFIG RESETSTAT); an add racing with it counts before or after it.
    pub fn reset(&self) {
        self.base.store(self.sum(), Relaxed);
    }
}

/// Counters for `INFO stats`.
#[derive(Debug, Default)]
pub struct Stats {
    pub total_connections_received: AtomicU64,
    /// Added to by every command: one counter per thread (see [`SlotCounter`]).
    pub total_commands_processed: SlotCounter,
    pub rejected_connections: AtomicU64,
    // Each counter of reads or writes sits next to its byte count: the connection that adds to
    // one adds to the other, on a cache line it already holds.
    pub total_net_input_bytes: SlotCounter,
    pub total_reads_processed: SlotCounter,
    pub total_net_output_bytes: SlotCounter,
    pub total_writes_processed: SlotCounter,
    /// Bytes of the replication stream received from our primary and sent to our replicas.
    pub total_net_repl_input_bytes: AtomicU64,
    pub total_net_repl_output_bytes: AtomicU64,
    pub client_output_limit_disconnections: AtomicU64,
    pub client_query_limit_disconnections: AtomicU64,
    pub total_error_replies: AtomicU64,
    /// Error replies by kind (`INFO errorstats`).
    pub errors: crate::error::ErrorStats,
    pub oom_rejections: AtomicU64,
    /// Commands per second over the last sampling period (updated by the server's cron).
    pub instantaneous_ops_per_sec: AtomicU64,
    /// Network throughput over the last sampling period, in hundredths of KiB/s (cron):
    /// client input, client output, replication input, replication output.
    pub instantaneous_kbps_x100: [AtomicU64; 4],
    /// Highest `used_memory` seen (sampled by the cron and whenever INFO or MEMORY reads it).
    pub used_memory_peak: AtomicU64,
    /// `used_memory` once the node was set up, before loading data.
    pub used_memory_startup: AtomicU64,
    /// Active expire cycles that ran out of time with keys still due, and their total time.
    pub expired_time_cap_reached_count: AtomicU64,
    pub expire_cycle_cpu_ms: AtomicU64,
    /// Connection buffers shrunk back after a large batch (Redis's `reply_buffer_shrinks`).
    pub reply_buffer_shrinks: AtomicU64,
    pub reply_buffer_expands: AtomicU64,
}

impl Stats {
    /// Counts an error reply, in `total_error_replies` and by kind.
    pub fn error_reply(&self, e: &crate::error::ReplyError) {
        self.total_error_replies.fetch_add(1, Relaxed);
        self.errors.record(e);
    }

    /// `used_memory` now, raising the peak if it is one.
    pub fn observe_used_memory(&self, used: u64) -> u64 {
        self.used_memory_peak.fetch_max(used, Relaxed).max(used)
    }
}

/// What other connections and the server see of a client (CLIENT LIST, CLIENT KILL).
pub struct ClientHandle {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    pub created_ms: u64,
    pub name: Mutex<Vec<u8>>,
    pub lib_name: Mutex<Vec<u8>>,
    pub lib_ver: Mutex<Vec<u8>>,
    pub db: AtomicUsize,
    pub resp: AtomicU8,
    pub last_interaction_ms: AtomicU64,
    /// Index of the last command in the command table.
    pub last_cmd: AtomicUsize,
    /// The socket's file descriptor (-1 for a connection without one).
    pub fd: AtomicI64,
    /// Bytes in the query buffer (read, not yet run), its capacity and the most it held: published
    /// by the connection task once per batch.
    pub query_buf_bytes: AtomicUsize,
    pub query_buf_capacity: AtomicUsize,
    pub query_buf_peak: AtomicUsize,
    /// Capacity of the output buffer (published once per batch).
    pub output_buf_capacity: AtomicUsize,
    /// Reply bytes being written to the socket right now.
    pub output_buf_bytes: AtomicUsize,
    /// Bytes of the arguments the client holds while blocked in a command (Redis keeps its argv).
    pub argv_bytes: AtomicUsize,
    /// Bytes of the commands queued in MULTI.
    pub multi_bytes: AtomicUsize,
    /// In MONITOR mode (flag `O`).
    pub monitor: AtomicBool,
    /// Sent READONLY (cluster mode, flag `r`).
    pub readonly: AtomicBool,
    pub no_evict: AtomicBool,
    /// This client's share of the clients' memory total (`client_eviction`), while
    /// `maxmemory-clients` is set.
    pub accounted_mem: AtomicU64,
    /// CLIENT NO-TOUCH: this client's reads leave keys' access info alone (flag `T`).
    pub no_touch: AtomicBool,
    pub killed: AtomicBool,
    /// Wakes the connection task so it notices `killed`, a pub/sub message or a blocking wake-up;
    /// installed by the server.
    pub waker: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    /// Pub/sub messages waiting for the connection task to write them (see `pubsub`).
    pub mailbox: crate::pubsub::Mailbox,
    /// Channel and pattern subscriptions (CLIENT LIST `sub=`, `psub=`).
    pub subs: AtomicUsize,
    pub psubs: AtomicUsize,
    /// Shard channels subscribed to (CLIENT LIST `ssub`).
    pub ssubs: AtomicUsize,
    /// Keys the client WATCHes, and BCAST prefixes it tracks: their bookkeeping counts in its
    /// memory (`tot-mem`, `maxmemory-clients`), as in Redis.
    pub watched_keys: AtomicUsize,
    pub tracking_prefixes: AtomicUsize,
    /// CLIENT TRACKING as CLIENT LIST shows it: flags (`tracking::LIST_*` bits) and `redir=`
    /// (-1 when off); the state itself is in `ServerState::tracking`.
    pub tracking_flags: AtomicU8,
    pub tracking_redirect: AtomicI64,
    /// Commands queued in MULTI, or -1 outside MULTI (CLIENT LIST `multi=`).
    pub multi_len: AtomicI64,
    /// Waiting in a blocking command (CLIENT LIST flag `b`).
    pub blocked: AtomicBool,
    /// `CLIENT UNBLOCK` asked the blocked command to end ([`unblock`] values).
    pub unblock: AtomicU8,
    /// What the connection is (CLIENT LIST flags and `TYPE`): a client, a replica of ours, or our
    /// link to our primary.
    pub kind: AtomicU8,
    /// The ACL user the connection is authenticated as (CLIENT LIST `user=`).
    pub user: Mutex<String>,
}

/// `CLIENT PAUSE timeout [WRITE|ALL]` (Redis 7.0's pause by client command): clients' commands
/// (all of them, or those that write or may replicate) wait until the deadline or `CLIENT
/// UNPAUSE`; replicas' links are never paused. A second pause keeps the later deadline and the
/// stricter kind, as Redis does.
#[derive(Debug, Default)]
pub struct ClientPause {
    /// Wall-clock ms the pause ends at; 0: no pause.
    until_ms: AtomicU64,
    all: AtomicBool,
    lock: Mutex<()>,
    /// Clients whose command waits for the pause to end (counted in INFO `blocked_clients`, as
    /// Redis counts its paused clients).
    waiting: AtomicUsize,
    /// Expiry on access is held for a pause (see [`ServerState::sync_pause_expiry`]).
    expiry_held: AtomicBool,
}

/// A client counted as waiting for a pause while it lives.
pub struct PauseWait<'a>(&'a AtomicUsize);

impl Drop for PauseWait<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl ClientPause {
    /// Counts the caller as waiting for the pause until the guard is dropped.
    pub fn wait_guard(&self) -> PauseWait<'_> {
        self.waiting.fetch_add(1, Relaxed);
        PauseWait(&self.waiting)
    }

    /// Clients waiting for the pause to end.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Relaxed)
    }

    pub fn pause(&self, until_ms: u64, all: bool, now_ms: u64) {
        let _g = self.lock.lock().expect("pause lock");
        if self.until_ms.load(Relaxed) > now_ms {
            self.all.fetch_or(all, Relaxed);
            self.until_ms.fetch_max(until_ms, Relaxed);
        } else {
            self.all.store(all, Relaxed);
            self.until_ms.store(until_ms, Relaxed);
        }
    }

    pub fn unpause(&self) {
        let _g = self.lock.lock().expect("pause lock");
        self.until_ms.store(0, Relaxed);
        self.all.store(false, Relaxed);
    }

    /// Whether a command with these flags waits now: `Some(all)` while a pause runs.
    pub fn active(&self, now_ms: u64) -> Option<bool> {
        (self.until_ms.load(Relaxed) > now_ms).then(|| self.all.load(Relaxed))
    }

    /// Whether a command waits at `now_ms`: everything under ALL; under WRITE, what counts as a
    /// write (`writes`: [`pause_counts_as_write`](crate::pause_counts_as_write)).
    pub fn holds(&self, writes: bool, now_ms: u64) -> bool {
        match self.active(now_ms) {
            None => false,
            Some(true) => true,
            Some(false) => writes,
        }
    }
}

/// `ClientHandle::unblock` values.
pub mod unblock {
    pub const NONE: u8 = 0;
    /// End the wait as if it timed out (the command's null reply).
    pub const TIMEOUT: u8 = 1;
    /// End the wait with `-UNBLOCKED`.
    pub const ERROR: u8 = 2;
}

/// `ClientHandle::kind` values.
pub mod kind {
    pub const NORMAL: u8 = 0;
    /// A replica attached to this node (flag `S`, `TYPE replica`).
    pub const REPLICA: u8 = 1;
    /// This node's link to its primary (flag `M`, `TYPE master`).
    pub const PRIMARY: u8 = 2;
}

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish()
    }
}

impl ClientHandle {
    pub fn new(id: u64, addr: String, laddr: String, now_ms: u64) -> Self {
        ClientHandle {
            id,
            addr,
            laddr,
            created_ms: now_ms,
            name: Mutex::default(),
            lib_name: Mutex::default(),
            lib_ver: Mutex::default(),
            db: AtomicUsize::new(0),
            resp: AtomicU8::new(2),
            last_interaction_ms: AtomicU64::new(now_ms),
            last_cmd: AtomicUsize::new(usize::MAX),
            fd: AtomicI64::new(-1),
            query_buf_bytes: AtomicUsize::new(0),
            query_buf_capacity: AtomicUsize::new(0),
            query_buf_peak: AtomicUsize::new(0),
            output_buf_capacity: AtomicUsize::new(0),
            output_buf_bytes: AtomicUsize::new(0),
            argv_bytes: AtomicUsize::new(0),
            multi_bytes: AtomicUsize::new(0),
            monitor: AtomicBool::new(false),
            readonly: AtomicBool::new(false),
            no_evict: AtomicBool::new(false),
            accounted_mem: AtomicU64::new(0),
            no_touch: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            waker: Mutex::new(None),
            mailbox: crate::pubsub::Mailbox::default(),
            subs: AtomicUsize::new(0),
            psubs: AtomicUsize::new(0),
            ssubs: AtomicUsize::new(0),
            watched_keys: AtomicUsize::new(0),
            tracking_prefixes: AtomicUsize::new(0),
            tracking_flags: AtomicU8::new(0),
            tracking_redirect: AtomicI64::new(-1),
            multi_len: AtomicI64::new(-1),
            blocked: AtomicBool::new(false),
            unblock: AtomicU8::new(unblock::NONE),
            kind: AtomicU8::new(kind::NORMAL),
            user: Mutex::new("default".into()),
        }
    }

    /// Wakes the connection task (a message arrived, a key it waits for was written).
    pub fn wake(&self) {
        if let Some(w) = self.waker.lock().expect("waker lock").as_ref() {
            w();
        }
    }

    /// Asks the connection to close (CLIENT KILL, SHUTDOWN).
    pub fn kill(&self) {
        self.killed.store(true, Relaxed);
        if let Some(w) = self.waker.lock().expect("waker lock").as_ref() {
            w();
        }
    }
}

/// `CLIENT REPLY` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplyMode {
    #[default]
    On,
    Off,
    /// Skip the reply of the next command only.
    Skip,
    /// Set by SKIP for the command that follows.
    SkipNext,
}

/// The session of one connection: owned by its task, passed to commands.
#[derive(Debug)]
pub struct Client {
    pub handle: Arc<ClientHandle>,
    pub db: usize,
    pub proto: Protocol,
    pub authenticated: bool,
    /// The ACL user after AUTH (`None`: the default user).
    pub user: Option<crate::acl::UserRef>,
    /// The rules of that user as this connection last read them ([`crate::acl::check_client`]).
    pub acl_cache: Option<crate::acl::AclCache>,
    pub reply_mode: ReplyMode,
    /// Close the connection once the pending replies are written (QUIT, protocol errors).
    pub close_after_reply: bool,
    /// In MONITOR mode (see `monitor`).
    pub monitor: bool,
    /// Replication requests the connection loop carries out after the batch.
    pub repl: ClientRepl,
    /// MULTI queue and WATCHed keys.
    pub tx: crate::multi::ClientTx,
    /// Pub/sub subscriptions.
    pub subs: crate::pubsub::ClientSubs,
    /// `ASKING`, `READONLY` and the connection's copy of the cluster configuration.
    pub cluster: crate::cluster::ClientCluster,
    /// A request that finds another thread's batch of scripts holding the exec gate returns
    /// `Outcome::GateWait` instead of waiting with its thread asleep: set by a connection loop
    /// that waits for it as a task.
    pub gate_wait_as_task: bool,
    /// The command running is a script's (`redis.call`): XREAD and XREADGROUP refuse BLOCK.
    pub in_script_call: bool,
    /// The running script has called a read-only command: once it ends, a tracking client
    /// remembers the script's declared keys (Redis 7.0's rule for scripts).
    pub script_read: bool,
    /// The request about to run again has waited for a shard's claimer once
    /// (`Outcome::ShardWait`): it runs where it is now, claimed or not. Cleared as it runs.
    pub claim_waited: bool,
}

/// Per-connection replication state (see `crate::replication`).
#[derive(Debug, Default)]
pub struct ClientRepl {
    /// PSYNC received: hand this connection over to the replication link (replid, offset).
    pub handoff: Option<(String, i64)>,
    /// WAIT: reply with the number of replicas that acknowledged `offset`, once `replicas` did or
    /// at `deadline_ms` (0 = no deadline).
    pub wait: Option<(u64, usize, u64)>,
    /// Stream offset just after this client's last write (WAIT and the sync strategy wait for it).
    pub last_write_offset: u64,
    /// Per-connection override of `write-strategy` (`DURABILITY`).
    pub strategy: Option<crate::repl::Strategy>,
    /// `REPLCONF listening-port` sent by a replica before PSYNC.
    pub listening_port: Option<u16>,
    /// Work for the I/O layer that the command only decided on.
    pub action: Option<Action>,
    /// Set by the connection loop for each command: its effects may wait in their shards'
    /// queues until the batch ends (`effects::flush_deferred`), if it is `effects::deferrable`.
    pub defer_effects: bool,
    /// Commands run since the last `effects::flush_deferred` whose effects may still be queued.
    pub deferred: u32,
}

/// Work a command decided on and the I/O layer carries out after it (the command layer has no
/// sockets, threads or files).
#[derive(Debug, Clone)]
pub enum Action {
    /// REPLICAOF host port: run the link to the primary for role `epoch`.
    StartLink { host: String, port: u16, epoch: u64 },
    /// FAILOVER: coordinate it in the background.
    Failover(crate::repl::FailoverRequest),
    /// SAVE (`foreground`: reply `+OK` or the error once written) or BGSAVE (already replied).
    Save { foreground: bool },
    /// BGREWRITEAOF (already replied): compact the append-only log in the background.
    RewriteAof,
    /// CONFIG SET appendonly (already replied): start the log (a compaction writes its base
    /// first) or stop it.
    SetAppendonly(bool),
    /// WAITAOF: reply `[local, replicas]` once `numlocal` and `numreplicas` logs hold `offset`
    /// fsynced, or at `deadline_ms` on the node's monotonic clock (0: none).
    WaitAof {
        offset: u64,
        numlocal: usize,
        numreplicas: usize,
        deadline_ms: u64,
    },
    /// SHUTDOWN: stop the server (it saves first if asked, see `Persistence::shutdown_save`).
    Shutdown,
    /// Changes of the cluster configuration (ADDSLOTS, DELSLOTS, SETSLOT, ...): propose them to
    /// the configuration group one after the other and reply `+OK` once the last is committed, or
    /// the error the first refused one gave. The command wrote no reply.
    ClusterChange(Vec<shoal_cluster::Change>),
    /// CLUSTER BUMPEPOCH: propose this change (a `BumpEpoch` of this node) and, once it is
    /// committed, answer `BUMPED <the node's config epoch>`. The command wrote no reply.
    ClusterBumpEpoch(shoal_cluster::Change),
    /// CLUSTER SAVECONFIG: write the configuration group's snapshot and answer `+OK` once it is
    /// on disk. The command wrote no reply.
    ClusterSaveConfig,
    /// CLUSTER RESET: leave the cluster and start again as a node that knows only itself, with
    /// a new id if `hard`. The command wrote no reply.
    ClusterReset { hard: bool },
    /// CLUSTER MEET: add the node at `ip:port` to this node's cluster.
    ClusterMeet { ip: String, port: u16 },
    /// CLUSTER FORGET: remove a node from this node's cluster.
    ClusterForget(String),
    /// CLUSTER FAILOVER on a replica: fail over in the background (already replied `+OK`);
    /// `force` (FORCE, TAKEOVER) without its primary.
    ClusterFailover { force: bool },
    /// MIGRATE: send keys to another node, then delete them here (unless `copy`).
    Migrate(Box<crate::keys::MigrateRequest>),
    /// CLUSTER MIGRATESLOTS: run these (registered) export jobs in the background and reply
    /// `+OK`.
    MigrateSlots(Vec<std::sync::Arc<crate::migration::Job>>),
    /// CLUSTER SYNCSLOTS FINISH: propose the move of an import's slots here, settle the job by
    /// the outcome, and reply `+OK` once applied (or the error).
    FinishImport {
        job: std::sync::Arc<crate::migration::Job>,
        change: shoal_cluster::Change,
    },
}

/// The clocks a node reads, given by its owner: the server's are the system's, the simulator's
/// are simulated. Plain function pointers: read on every timed command, no allocation, no lock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock microseconds since the Unix epoch (TIME).
    pub unix_us: fn() -> u64,
    /// An opaque monotonic timestamp, and microseconds elapsed since one (slow log, latency).
    pub stamp: fn() -> u64,
    pub elapsed_us: fn(u64) -> u64,
    /// Monotonic milliseconds of this node (leases are checked against it: it does not jump
    /// with the wall clock and keeps counting while the process is stopped). Never 0.
    pub mono_ms: fn() -> u64,
}

impl Default for Clock {
    /// A stopped clock: time does not pass (unit tests; a simulator sets its own).
    fn default() -> Self {
        Clock {
            unix_us: || 0,
            stamp: || 0,
            elapsed_us: |_| 0,
            mono_ms: || 1,
        }
    }
}

impl Persistence {
    /// Changes since the last save (INFO `rdb_changes_since_last_save`, the `save` rules).
    pub fn dirty(&self) -> u64 {
        self.changes
            .load()
            .saturating_sub(self.changes_saved.load(Relaxed))
    }
}

/// Snapshot-on-disk bookkeeping (INFO persistence, `save` rules, LASTSAVE).
#[derive(Debug, Default)]
pub struct Persistence {
    /// A SAVE/BGSAVE is running.
    pub saving: AtomicBool,
    /// Write commands that succeeded (and effects a replica applied) since start, one counter
    /// per thread (every write adds to it); [`Persistence::dirty`] is the part since the last
    /// save.
    pub changes: SlotCounter,
    /// `changes` when the last successful save started (what it holds).
    pub changes_saved: AtomicU64,
    pub save_rules_set: AtomicBool,
    pub last_save_unix_s: AtomicU64,
    /// Snapshots written since start, whether the last one succeeded, how long it took (-1:
    /// none yet) and when the running one started (ms).
    pub saves: AtomicU64,
    pub last_save_failed: AtomicBool,
    pub last_save_duration_s: AtomicI64,
    pub save_started_ms: AtomicU64,
    /// Keys read from the snapshot at start-up, and those skipped as already expired.
    pub loaded_keys: AtomicU64,
    pub loaded_keys_expired: AtomicU64,
    /// SHUTDOWN asked: 0 by the `save` rules, 1 SAVE, 2 NOSAVE.
    pub shutdown_save: AtomicU8,
    /// The append-only log (`crate::aof`).
    pub aof: crate::aof::AofShared,
}

impl Client {
    pub fn new(handle: Arc<ClientHandle>, authenticated: bool) -> Self {
        Client {
            handle,
            db: 0,
            proto: Protocol::Resp2,
            authenticated,
            user: None,
            acl_cache: None,
            reply_mode: ReplyMode::On,
            close_after_reply: false,
            monitor: false,
            repl: ClientRepl::default(),
            tx: Default::default(),
            subs: Default::default(),
            cluster: Default::default(),
            gate_wait_as_task: false,
            in_script_call: false,
            script_read: false,
            claim_waited: false,
        }
    }

    pub fn id(&self) -> u64 {
        self.handle.id
    }

    /// The ACL user this client runs as.
    pub fn user_ref<'s>(&'s self, srv: &'s ServerState) -> &'s crate::acl::UserRef {
        self.user.as_ref().unwrap_or(&srv.acl.default)
    }

    pub fn select(&mut self, db: usize) {
        self.db = db;
        self.handle.db.store(db, Relaxed);
    }
}

/// One slow log record.
#[derive(Debug, Clone)]
pub struct SlowEntry {
    pub id: u64,
    pub unix_s: u64,
    pub duration_us: u64,
    pub args: Vec<Vec<u8>>,
    pub addr: String,
    pub name: Vec<u8>,
}

/// Bounded slow log (`slowlog-max-len`).
#[derive(Debug, Default)]
pub struct SlowLog {
    pub next_id: u64,
    pub entries: VecDeque<SlowEntry>,
}

/// Arguments kept per slow log entry, and bytes per argument, as Redis does.
pub const SLOWLOG_ARGS_MAX: usize = 32;
pub const SLOWLOG_ARG_BYTES_MAX: usize = 128;

/// Spikes kept per latency event (Redis's `LATENCY_TS_LEN`); older ones drop off the front.
pub const LATENCY_SAMPLES_MAX: usize = 160;

/// One second's worst latency spike of an event.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LatencySample {
    pub unix_s: u64,
    pub ms: u64,
}

/// Latency monitor: one event's recent spikes (`LATENCY HISTORY`, `GRAPH`, `DOCTOR`) and its
/// worst ever (`LATENCY LATEST`).
#[derive(Debug, Default, Clone)]
pub struct LatencyEvent {
    /// Oldest first, at most one per second (that second's worst, as Redis keeps them), at most
    /// [`LATENCY_SAMPLES_MAX`]. Never empty once the event is in the monitor.
    pub samples: VecDeque<LatencySample>,
    /// The worst spike since the event was first recorded, also one the ring has dropped.
    pub max_ms: u64,
}

impl LatencyEvent {
    /// Adds a spike: a new sample, or a worse value for the latest one if it is of the same
    /// second (Redis's `latencyAddSample`).
    pub fn add(&mut self, unix_s: u64, ms: u64) {
        self.max_ms = self.max_ms.max(ms);
        if let Some(last) = self.samples.back_mut()
            && last.unix_s == unix_s
        {
            last.ms = last.ms.max(ms);
            return;
        }
        if self.samples.len() == LATENCY_SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back(LatencySample { unix_s, ms });
        debug_assert!(self.samples.len() <= LATENCY_SAMPLES_MAX);
    }

    /// The most recent sample (zeros for an event with none, which the monitor never holds).
    pub fn latest(&self) -> LatencySample {
        self.samples.back().copied().unwrap_or_default()
    }
}

/// What the process knows that the command layer cannot read itself: plain functions the owner
/// gives (the server its allocator's count and `/proc`; tests and the simulator zeros).
#[derive(Debug, Clone, Copy)]
pub struct Hooks {
    /// Bytes held by the process allocator (counted by the binary's global allocator).
    pub used_memory: fn() -> usize,
    /// RSS, CPU time and pid of the process.
    pub process_info: fn() -> crate::server::ProcessInfo,
    /// `CONFIG REWRITE`: writes `config` into the file at the path, keeping what the user wrote
    /// there; the reason (an OS error's text) if it could not.
    pub rewrite_config: fn(&str, &crate::config::Config) -> Result<(), String>,
    /// What the allocator itself reports (memory it committed from the OS).
    pub allocator_info: fn() -> crate::server::AllocatorInfo,
    /// The allocator's own statistics as text (`MEMORY MALLOC-STATS`).
    pub allocator_stats_text: fn() -> String,
    /// Asks the allocator to return free memory to the OS (`MEMORY PURGE`).
    pub allocator_purge: fn(),
    /// Bytes of the process's memory in transparent huge pages (`AnonHugePages`), which
    /// `LATENCY DOCTOR` advises against as Redis does; 0 when unknown.
    pub anon_huge_pages_bytes: fn() -> u64,
    /// Blocks the calling thread (`DEBUG SLEEP`, which holds the exec gate alone meanwhile, so the
    /// whole server waits as Redis's does).
    pub sleep: fn(std::time::Duration),
    /// Fills the buffer with random bytes from the OS (`ACL GENPASS`).
    pub random_bytes: fn(&mut [u8]),
    /// Reads a whole file (`ACL LOAD`); the OS error's text if it could not.
    pub read_file: fn(&str) -> Result<Vec<u8>, String>,
    /// Replaces a file's contents atomically (`ACL SAVE`).
    pub write_file: fn(&str, &[u8]) -> Result<(), String>,
    /// `CONFIG SET` of a TLS parameter: loads the certificates and keys `config` names and makes
    /// them the ones new connections use; the reason (already logged) if they do not load, and
    /// then the old ones stay.
    pub apply_tls: fn(&crate::config::Config) -> Result<(), String>,
    /// `CONFIG SET port` / `tls-port` (the parameter's name and its new value): opens the new
    /// listener and closes the old one (0: closes it); the port now bound, or the reason the
    /// bind failed (the old listener then stays).
    pub listen: fn(&str, u16) -> Result<u16, String>,
    /// Writes a line to the server's log at a level.
    pub log: fn(crate::config::LogLevel, &str),
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            used_memory: || 0,
            process_info: Default::default,
            rewrite_config: |_, _| Err("no file system here".into()),
            allocator_info: Default::default,
            allocator_stats_text: String::new,
            allocator_purge: || {},
            anon_huge_pages_bytes: || 0,
            sleep: |_| {},
            random_bytes: |b| b.fill(0),
            read_file: |_| Err("no file system here".into()),
            write_file: |_, _| Err("no file system here".into()),
            apply_tls: |_| Ok(()),
            listen: |_, _| Err("no listeners here".into()),
            log: |_, _| {},
        }
    }
}

/// Everything shared by all connections.
#[derive(Debug)]
pub struct ServerState {
    pub ks: Keyspace,
    /// `CLIENT PAUSE`: until when, and whether every command waits or only writes.
    pub client_pause: ClientPause,
    /// `maxmemory-clients`: the clients' memory total and its evictions.
    pub client_eviction: crate::client_eviction::ClientEviction,
    /// The current configuration, replaced whole by [`ServerState::update_config`]; readers keep
    /// the snapshot they took.
    config: RwLock<Arc<Config>>,
    pub hot: Hot,
    pub stats: Stats,
    pub clients: Mutex<BTreeMap<u64, Arc<ClientHandle>>>,
    /// Connections accepted and not yet closed, counted at accept (before the connection's task
    /// registers it in `clients`), so a burst of connects cannot pass `maxclients`.
    pub open_connections: AtomicUsize,
    pub next_client_id: AtomicU64,
    pub slowlog: Mutex<SlowLog>,
    pub latency: Mutex<BTreeMap<&'static str, LatencyEvent>>,
    pub run_id: String,
    pub node_id: String,
    pub started_ms: u64,
    /// The plain port clients reach (0: closed by `CONFIG SET port 0`); it moves with
    /// `CONFIG SET port`.
    pub tcp_port: std::sync::atomic::AtomicU16,
    pub executable: String,
    pub config_file: String,
    /// `uname`'s system, release and machine (`os:` in INFO), given by the server.
    pub os: String,
    pub hooks: Hooks,
    /// Clients in MONITOR mode.
    pub monitors: crate::monitor::Monitors,
    pub shutting_down: AtomicBool,
    /// Bumped on every CONFIG SET, so connections refresh cached limits only when they changed.
    pub config_epoch: AtomicU64,
    /// Replication role, ids, offsets and backlog.
    pub repl: crate::repl::ReplState,
    /// Snapshot bookkeeping.
    pub persist: Persistence,
    /// Where large values go to be freed (the server gives it a thread; tests free inline).
    pub lazyfree: shoal_keyspace::LazyFree,
    /// Bytes of `used_memory` that are buffers, not data (the disk tier's): left out of the
    /// `maxmemory` comparison, as Redis leaves out its replication buffers.
    pub mem_not_counted_for_evict: std::sync::atomic::AtomicUsize,
    /// Next shard the eviction sampler looks at.
    pub evict_cursor: AtomicUsize,
    /// Random draws so far (seeds SPOP, SRANDMEMBER, RANDOMKEY, ... with the time and client).
    pub draws: AtomicU64,
    pub clock: Clock,
    /// Makes EXEC exclusive: every command holds it shared, EXEC alone (see `multi`).
    pub gate: crate::multi::ExecGate,
    /// Channel and pattern subscribers.
    pub pubsub: crate::pubsub::PubSub,
    /// Client-side caching: who tracks, which keys they read (`tracking`).
    pub tracking: crate::tracking::Tracking,
    /// Cache-fill leases (GETLEASE, SETLEASE; node-local, see `cache_lease`).
    pub leases: crate::cache_lease::Leases,
    /// Clients waiting in blocking commands, by key.
    pub blocking: crate::blocking::Blocking,
    /// The cluster configuration as this node sees it (`cluster-enabled yes`), else `None`.
    pub cluster: Option<crate::cluster::ClusterState>,
    /// Per-command calls, times and latency histograms (`INFO commandstats`, `/metrics`).
    pub cmdstats: crate::cmdstats::CmdStats,
    /// The scripting VM, its script cache and the busy-script marker.
    pub scripts: crate::scripting::Scripting,
    /// ACL users and the ACL log.
    pub acl: crate::acl::Acl,
    /// Active-active membership: merge states and peer links (`active-peers`).
    pub active: crate::active::Active,
    /// Anti-entropy and read repair of an active-active member (`repair`).
    pub repair: crate::repair::Repair,
}

/// 40 random hex characters (run id, node id).
pub fn random_hex40(seed: u64) -> String {
    let mut rng = shoal_keyspace::Rng::new(seed);
    (0..40)
        .map(|_| char::from_digit((rng.next_u64() % 16) as u32, 16).unwrap_or('0'))
        .collect()
}

impl ServerState {
    pub fn new(config: Config, now_ms: u64, seed: u64, hooks: Hooks) -> Self {
        let st = ServerState {
            client_pause: ClientPause::default(),
            client_eviction: Default::default(),
            ks: Keyspace::new(config.databases, SHARDS_DEFAULT, seed),
            config: RwLock::new(Arc::new(config.clone())),
            hot: Hot::default(),
            stats: Stats::default(),
            clients: Mutex::default(),
            open_connections: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(1),
            slowlog: Mutex::default(),
            latency: Mutex::default(),
            run_id: random_hex40(seed ^ 0xA5A5),
            node_id: random_hex40(seed ^ 0x5A5A),
            started_ms: now_ms,
            tcp_port: std::sync::atomic::AtomicU16::new(0),
            executable: String::new(),
            config_file: String::new(),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            hooks,
            monitors: Default::default(),
            shutting_down: AtomicBool::new(false),
            config_epoch: AtomicU64::new(0),
            repl: crate::repl::ReplState::new(random_hex40(seed ^ 0x1234)),
            persist: Persistence::default(),
            lazyfree: shoal_keyspace::LazyFree::inline(),
            mem_not_counted_for_evict: std::sync::atomic::AtomicUsize::new(0),
            evict_cursor: AtomicUsize::new(0),
            draws: AtomicU64::new(0),
            clock: Clock::default(),
            gate: Default::default(),
            pubsub: Default::default(),
            tracking: Default::default(),
            leases: Default::default(),
            blocking: Default::default(),
            cluster: config
                .cluster_enabled
                .then(|| crate::cluster::ClusterState::new(random_hex40(seed ^ 0xC1C1))),
            cmdstats: Default::default(),
            scripts: Default::default(),
            acl: Default::default(),
            active: crate::active::Active::new(&random_hex40(seed ^ 0x5A5A), SHARDS_DEFAULT),
            repair: crate::repair::Repair::default(),
        };
        // Writes of plain commands may append their effects at once (`shoal_keyspace::write_log`).
        st.ks.set_effect_sink(st.repl.effect_sink());
        st.apply_config(None, &config);
        st
    }

    /// The current configuration snapshot. Commands that run on every request read
    /// [`ServerState::hot`] instead.
    /// Sets the keyspace's notification mask from the configuration and client tracking.
    pub fn apply_notify_mask(&self) {
        let configured = self.config().notify_keyspace_events.0;
        self.ks
            .set_notify(crate::tracking::effective_notify_mask(self, configured));
    }

    pub fn config(&self) -> Arc<Config> {
        // `CONFIG SET` locks shards under the write lock: a shard kept between commands is given
        // up before waiting for it (see `shoal_keyspace::sticky`).
        shoal_keyspace::sticky::release();
        self.config.read().expect("config lock").clone()
    }

    /// Changes the configuration: `change` edits a copy, which replaces the snapshot if it
    /// returns `Ok` (so a refused `CONFIG SET` changes nothing). Concurrent updates are serialised.
    pub fn update_config<E>(
        &self,
        change: impl FnOnce(&mut Config) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut current = self.config.write().expect("config lock");
        let mut next = Config::clone(&current);
        change(&mut next)?;
        // Applied under the lock so two updates reach the keyspace in the order they were made.
        self.apply_config(Some(&current), &next);
        *current = Arc::new(next);
        Ok(())
    }

    /// Mirrors what changed from `old` (everything at start-up) into the hot copies, the keyspace
    /// and replication.
    fn apply_config(&self, old: Option<&Config>, new: &Config) {
        /// True at start-up or when `key` differs between the two snapshots.
        fn changed<T: PartialEq>(
            old: Option<&Config>,
            new: &Config,
            key: impl Fn(&Config) -> T,
        ) -> bool {
            old.is_none_or(|o| key(o) != key(new))
        }
        self.config_epoch.fetch_add(1, Relaxed);
        if changed(old, new, |c| c.active_peers.clone()) {
            crate::active::configure(self, &new.active_peers, (self.clock.unix_us)() / 1000);
        }
        self.repair.configure(new);
        if changed(old, new, |c| c.notify_keyspace_events) {
            self.ks.set_notify(crate::tracking::effective_notify_mask(
                self,
                new.notify_keyspace_events.0,
            ));
        }
        let h = &self.hot;
        if changed(old, new, |c| {
            (
                c.maxmemory,
                c.maxmemory_policy,
                c.maxmemory_samples,
                c.lfu_log_factor,
                c.lfu_decay_time,
            )
        }) {
            h.maxmemory_bytes.store(new.maxmemory, Relaxed);
            h.policy.store(policy_index(new.maxmemory_policy), Relaxed);
            let cfg = EvictConfig {
                policy: new.maxmemory_policy,
                samples: new.maxmemory_samples as usize,
                lfu: shoal_keyspace::LfuParams {
                    log_factor: new.lfu_log_factor,
                    decay_minutes: new.lfu_decay_time,
                },
                active: new.maxmemory > 0,
            };
            // Sketch sized for the keys that fit: assume ~100 bytes per key.
            let expected_keys = (new.maxmemory / 100) as usize;
            self.ks.set_evict_config(cfg, expected_keys);
        }
        // `requirepass` is the default user's password (set as Redis does, replacing the ones ACL
        // SETUSER gave it); `requirepass_set` says whether new clients must authenticate.
        if changed(old, new, |c| c.requirepass.clone()) {
            let mut u = crate::acl::User::clone(&self.acl.default.get());
            u.set_requirepass(&new.requirepass);
            self.acl.replace_default(u);
        }
        h.requirepass_set
            .store(self.acl.default.get().needs_auth(), Relaxed);
        h.slowlog_enabled
            .store(new.slowlog_log_slower_than >= 0, Relaxed);
        h.slowlog_slower_than_us
            .store(new.slowlog_log_slower_than.max(0) as u64, Relaxed);
        h.latency_threshold_ms
            .store(new.latency_monitor_threshold, Relaxed);
        h.replica_read_only.store(new.replica_read_only, Relaxed);
        h.min_replicas_to_write
            .store(u64::from(new.min_replicas_to_write), Relaxed);
        h.min_replicas_max_lag_s
            .store(u64::from(new.min_replicas_max_lag), Relaxed);
        self.cmdstats.tracking.store(new.latency_tracking, Relaxed);
        if let Some(cl) = &self.cluster {
            cl.lease
                .allow_reads_when_down
                .store(new.cluster_allow_reads_when_down, Relaxed);
        }
        h.proto_max_bulk_bytes
            .store(new.proto_max_bulk_len, Relaxed);
        h.hll_sparse_max_bytes
            .store(new.hll_sparse_max_bytes, Relaxed);
        h.ttl_jitter_percent.store(new.ttl_jitter_percent, Relaxed);
        if changed(old, new, |c| (c.maxmemory_clients, c.maxmemory)) {
            let limit = new.maxmemory_clients.bytes(new.maxmemory);
            h.clients_limit_bytes.store(limit, Relaxed);
            // A lower limit applies at once (Redis evicts before the CONFIG SET returns).
            if old.is_some() {
                crate::client_eviction::evict_now(self);
            }
        }
        if changed(old, new, Config::encoding_limits) {
            h.encoding.store(new.encoding_limits());
        }
        if changed(old, new, |c| {
            (
                c.write_strategy,
                c.min_replicas_ack,
                c.ack_timeout_ms,
                c.repl_backlog_size,
            )
        }) {
            let r = &self.repl.settings;
            r.strategy_sync
                .store(new.write_strategy == crate::repl::Strategy::Sync, Relaxed);
            r.min_replicas_ack
                .store(u64::from(new.min_replicas_ack), Relaxed);
            r.ack_timeout_ms.store(new.ack_timeout_ms, Relaxed);
            self.repl
                .set_backlog_capacity(new.repl_backlog_size as usize);
        }
        if changed(old, new, |c| c.client_output_buffer_limit.pubsub) {
            self.pubsub
                .set_limits(new.client_output_buffer_limit.pubsub);
        }
    }

    /// Current compact-encoding thresholds.
    pub fn encoding_limits(&self) -> shoal_keyspace::EncodingLimits {
        self.hot.encoding.load()
    }

    pub fn policy(&self) -> Policy {
        Policy::ALL[self.hot.policy.load(Relaxed) as usize]
    }

    pub fn maxmemory(&self) -> u64 {
        self.hot.maxmemory_bytes.load(Relaxed)
    }

    pub fn used_memory(&self) -> usize {
        (self.hooks.used_memory)()
    }

    /// While a CLIENT PAUSE runs, expired keys read as absent but are not deleted (the cron's
    /// active expiry stops too), as Redis 7.0 keeps the data set still during a pause; when it
    /// ends (UNPAUSE, or its deadline, seen by the cron), reads delete them again. Called after
    /// PAUSE and UNPAUSE and from the cron; one load when nothing changed. A replica's shards are
    /// left as its role set them (replicas never expire keys themselves).
    pub fn sync_pause_expiry(&self, now_ms: u64) {
        let p = &self.client_pause;
        let want = p.active(now_ms).is_some();
        if p.expiry_held.load(Relaxed) == want {
            return;
        }
        let _g = p.lock.lock().expect("pause lock");
        if p.expiry_held.load(Relaxed) == want {
            return;
        }
        if !self.repl.is_replica() {
            self.ks.set_expire_on_access(!want);
        }
        p.expiry_held.store(want, Relaxed);
    }

    pub fn register_client(&self, handle: Arc<ClientHandle>) {
        self.stats.total_connections_received.fetch_add(1, Relaxed);
        self.clients
            .lock()
            .expect("clients lock")
            .insert(handle.id, handle);
    }

    pub fn unregister_client(&self, id: u64) {
        let gone = self.clients.lock().expect("clients lock").remove(&id);
        if let Some(h) = gone {
            crate::client_eviction::forget(self, &h);
        }
    }

    /// Every registered connection's handle, taken under the lock and used without it.
    pub fn client_handles(&self) -> Vec<Arc<ClientHandle>> {
        self.clients
            .lock()
            .expect("clients lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn connected_clients(&self) -> usize {
        self.clients.lock().expect("clients lock").len()
    }

    pub fn new_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Relaxed)
    }

    /// Records a latency spike for `LATENCY` when monitoring is on and it passed the threshold.
    pub fn latency_sample(&self, event: &'static str, ms: u64, unix_s: u64) {
        let threshold = self.hot.latency_threshold_ms.load(Relaxed);
        if threshold == 0 || ms < threshold {
            return;
        }
        let mut l = self.latency.lock().expect("latency lock");
        l.entry(event).or_default().add(unix_s, ms);
    }
}

fn policy_index(p: Policy) -> u8 {
    Policy::ALL.iter().position(|&q| q == p).unwrap_or(0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_counter_sums_its_threads_and_resets_from_a_baseline() {
        let c = SlotCounter::default();
        // Each thread adds to a slot of its own; a thread without one to the shared slot.
        std::thread::scope(|s| {
            for slot in 0..4 {
                let c = &c;
                s.spawn(move || {
                    for _ in 0..1000 {
                        c.add(slot, 1);
                    }
                });
            }
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..500 {
                        c.add(crate::multi::OVERFLOW, 2);
                    }
                });
            }
        });
        assert_eq!(c.load(), 4 * 1000 + 2 * 500 * 2);
        c.reset();
        assert_eq!(c.load(), 0);
        c.add(3, 7);
        c.add(crate::multi::OVERFLOW, 1);
        assert_eq!(c.load(), 8);
    }
}

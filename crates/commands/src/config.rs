//! Configuration parameters, each declared once in the `params!` list below. A declaration makes
//! two things: a typed field of [`Config`], which is what code reads (`cfg.replica_read_only` is a
//! `bool`, so a misspelt name does not compile), and a row of [`PARAMS`] (name, alias, default,
//! bounds, mutability, and how to set and show the field as text) that `CONFIG GET|SET|REWRITE`,
//! the TOML file and the `--NAME VALUE` command line all go through, so a value is checked the
//! same way wherever it comes from.
//!
//! Bounds, parsing and error texts are Redis 7.0's (`config.c`): a value Redis refuses is refused
//! here, at start-up as well as by `CONFIG SET`. A [`Config`] is an immutable snapshot that
//! `CONFIG SET` replaces whole (see `ServerState::update_config`); values every command reads are
//! also mirrored into [`crate::state::Hot`] atomics, so the request path takes no lock for them.

use shoal_keyspace::Policy;

use crate::repl::Strategy;

/// How a parameter's text is checked and turned into its field.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Bytes with Redis's units (`memtoull`), within bounds. Bounds up to `i64::MAX` compare the
    /// value as signed, as Redis does for its `long long` parameters (so an overflowing value is
    /// refused); a `u64::MAX` upper bound marks an unsigned parameter (`maxmemory`).
    Memory(u64, u64),
    /// Integer (`string2ll`: no `+`, no leading zeros) within bounds.
    Int(i64, i64),
    /// Integer within the first bounds, then clamped into the second (`hz`: Redis accepts
    /// 0..INT_MAX and runs at 1..=500).
    Clamped(i64, i64, i64, i64),
    /// `yes` / `no`, case-insensitive.
    Bool,
    /// One of a fixed set (case-insensitive; shown lowercase).
    Enum(&'static [&'static str]),
    /// Any string.
    Str,
    /// `save`: `seconds changes` pairs.
    Save,
    /// `client-output-buffer-limit`: classes with hard, soft, soft-seconds.
    OutputBufferLimit,
    /// `latency-tracking-info-percentiles`: numbers in 0..=100, space-separated.
    Percentiles,
    /// `notify-keyspace-events`: class characters (`KEg$lshzxetmdnA`).
    NotifyClasses,
    /// Bytes with Redis's units, or a percentage of `maxmemory` (`10%`, at most 100):
    /// `maxmemory-clients`.
    MemoryOrPercent,
}

/// One row of [`PARAMS`].
#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub alias: Option<&'static str>,
    /// What it means: the lines of its doc comment (each with the leading space rustdoc keeps).
    pub help: &'static [&'static str],
    /// In canonical form: what `CONFIG GET` shows for a fresh server.
    pub default: &'static str,
    pub kind: Kind,
    /// `CONFIG SET` may change it while running.
    pub mutable: bool,
    /// Settable by `CONFIG SET` only where `enable-protected-configs` allows (`dir` and
    /// `dbfilename`: with them and SAVE, a client could write a file anywhere on the host).
    pub protected: bool,
    /// Checks `text` and stores it into this parameter's field; the reason if it is refused.
    pub set: fn(&mut Config, Kind, &str) -> Result<(), String>,
    /// The field's canonical text (`CONFIG GET`, `CONFIG REWRITE`).
    pub get: fn(&Config) -> String,
}

/// Parameters fixed at start-up that `CONFIG SET` still accepts when given the value in force
/// (nothing to change): `bind`, which Redis 7.0 changes at run time and shoal cannot yet, and
/// shoal's own start-up parameters. A tool that sets back every parameter `CONFIG GET *` listed
/// (Redis's own "CONFIG sanity" test does) then does not fail on them; any other value is
/// refused, and Redis's immutable parameters keep Redis's error whatever the value.
pub const SAME_VALUE_SETTABLE: &[&str] = &[
    "bind",
    "cluster-secret",
    "log-format",
    "metrics-bind",
    "metrics-port",
    "threads",
    "tiered-storage",
    "tiered-storage-dir",
    "tiered-storage-max-bytes",
    "tiered-storage-min-value-bytes",
    "tls-cluster",
];

/// A type a parameter's field can have.
pub trait Value: Sized {
    /// Checks `text` against `kind`; `current` for values set piecewise (output buffer limits).
    fn parse(kind: Kind, text: &str, current: Option<&Self>) -> Result<Self, String>;
    /// Canonical text; parsing it gives the same value back.
    fn render(&self) -> String;
}

/// The table and the field don't agree on a type: a bug in `params!`, caught by the unit tests.
const KIND_MISMATCH: &str = "parameter kind does not match its field type";

macro_rules! params {
    (@alias) => { None };
    (@alias $alias:literal) => { Some($alias) };
    (@mut mutable) => { true };
    (@mut immutable) => { false };
    (@mut protected) => { true };
    (@prot protected) => { true };
    (@prot $other:ident) => { false };
    ($(
        $(#[doc = $doc:literal])+
        $field:ident: $ty:ty = $name:literal $(| $alias:literal)?, $kind:expr, $default:literal,
        $mutability:ident;
    )*) => {
        /// Every parameter's current value, typed. Built at start-up from the defaults, the file
        /// and the flags; replaced whole by `CONFIG SET`.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
        }

        /// Every parameter shoal knows, sorted by name (CONFIG GET output order).
        pub static PARAMS: &[Param] = &[$(
            Param {
                name: $name,
                alias: params!(@alias $($alias)?),
                help: &[$($doc),+],
                default: $default,
                kind: { use Kind::*; $kind },
                mutable: params!(@mut $mutability),
                protected: params!(@prot $mutability),
                set: |c, kind, text| {
                    c.$field = Value::parse(kind, text, Some(&c.$field))?;
                    Ok(())
                },
                get: |c| c.$field.render(),
            },
        )*];

        impl Default for Config {
            fn default() -> Self {
                Config {$(
                    $field: <$ty as Value>::parse({ use Kind::*; $kind }, $default, None)
                        .expect(concat!("the default of ", $name, " is valid")),
                )*}
            }
        }
    };
}

/// In Redis's order (its error message lists them so), then shoal's own.
const POLICIES: &[&str] = &[
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "noeviction",
    "allkeys-tinylfu",
];

/// Redis's `INT_MAX`, `UINT_MAX` and `LONG_MAX` bounds.
const INT_MAX: i64 = i32::MAX as i64;
const INT_MIN: i64 = i32::MIN as i64;
const UINT_MAX: i64 = u32::MAX as i64;
const LONG_MAX: i64 = i64::MAX;
const MB: u64 = 1024 * 1024;

params! {
    /// Sync write strategy: milliseconds a write waits for replica acknowledgements before it
    /// fails.
    ack_timeout_ms: u64 = "ack-timeout-ms", Int(1, LONG_MAX), "1000", mutable;
    /// The channel permissions a new user (and each new selector, and `reset`) starts with:
    /// `resetchannels` (none, Redis 7's default) or `allchannels`.
    acl_pubsub_default: PubsubDefault = "acl-pubsub-default",
        Enum(&["allchannels", "resetchannels"]), "resetchannels", mutable;
    /// The ACL file `ACL SAVE` writes and `ACL LOAD` (and start-up) reads; empty: none.
    aclfile: String = "aclfile", Str, "", immutable;
    /// Entries the ACL log keeps (`ACL LOG`).
    acllog_max_len: u64 = "acllog-max-len", Int(0, LONG_MAX), "128", mutable;
    /// An active-active member compares slot digests with each peer this often and repairs the
    /// slots that differ by merging states both ways (anti-entropy); 0: never.
    active_anti_entropy_interval_ms: u64 = "active-anti-entropy-interval-ms", Int(0, LONG_MAX),
        "2000", mutable;
    /// Keys an anti-entropy pass with one peer compares at most (the rest wait for later passes).
    active_anti_entropy_keys_per_pass: u64 = "active-anti-entropy-keys-per-pass",
        Int(1, LONG_MAX), "10000", mutable;
    /// Slots an anti-entropy pass with one peer compares (a sweep of all 16384 takes
    /// 16384 / this passes).
    active_anti_entropy_slots_per_pass: u64 = "active-anti-entropy-slots-per-pass",
        Int(1, 16384), "2048", mutable;
    /// The other members of this node's active-active group, as space-separated `host:port`;
    /// every member takes writes and merges the others' (empty: not a member).
    active_peers: String = "active-peers", Str, "", mutable;
    /// The append-only log's folder, in `dir`: its manifest, base snapshot and incremental logs.
    appenddirname: String = "appenddirname", Str, "appendonlydir", immutable;
    /// The prefix of the append-only log's file names (`NAME.manifest`, `NAME.N.base.shoal`,
    /// `NAME.N.incr.aof`).
    appendfilename: String = "appendfilename", Str, "appendonly.aof", immutable;
    /// When the append-only log is fsynced: `always` (a write is acknowledged only once its
    /// effect is on disk), `everysec` (once a second: a crash of the machine loses at most about a
    /// second) or `no` (when the OS decides).
    appendfsync: AppendFsync = "appendfsync", Enum(&["always", "everysec", "no"]), "everysec",
        mutable;
    /// Keep an append-only log of every write's effect, replayed at start on top of its base
    /// snapshot. `CONFIG SET appendonly yes` at run time writes a base first (a compaction).
    appendonly: bool = "appendonly", Bool, "no", mutable;
    /// The append-only log is compacted (a new base snapshot, an empty log) when it is at least
    /// this many bytes...
    auto_aof_rewrite_min_size: u64 = "auto-aof-rewrite-min-size", Memory(0, LONG_MAX as u64),
        "67108864", mutable;
    /// ... and grew by this percentage since the last compaction (0: never on its own).
    auto_aof_rewrite_percentage: u64 = "auto-aof-rewrite-percentage", Int(0, INT_MAX), "100",
        mutable;
    /// Bytes of bits one Bloom filter (BF.*) may hold in all its sub-filters; a filter that
    /// would grow past it is refused (units: kb, mb, gb).
    bf_max_bytes: u64 = "bf-max-bytes", Memory(1, LONG_MAX as u64), "134217728", mutable;
    /// The address to listen on (the first word is used).
    bind: String = "bind", Str, "127.0.0.1", immutable;
    /// Milliseconds a script (EVAL, FCALL) may run before other clients are answered `-BUSY`
    /// and SCRIPT KILL / FUNCTION KILL may stop it (it is never stopped on its own).
    busy_reply_threshold: u64 = "busy-reply-threshold" | "lua-time-limit", Int(0, LONG_MAX),
        "5000", mutable;
    /// Per client class (`normal`, `slave`, `pubsub`): hard limit, soft limit and seconds over
    /// the soft limit, in bytes, after which a client whose replies pile up is cut off (0: none).
    client_output_buffer_limit: OutputLimits = "client-output-buffer-limit", OutputBufferLimit,
        "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60", mutable;
    /// Bytes a client's unread requests may take before it is cut off.
    client_query_buffer_limit: u64 = "client-query-buffer-limit", Memory(MB, LONG_MAX as u64),
        "1073741824", mutable;
    /// A primary whose write lease lapsed (cut off from the configuration group) still serves
    /// reads under the `async` strategy (never under `sync`: a failover may have happened).
    cluster_allow_reads_when_down: bool = "cluster-allow-reads-when-down", Bool, "no", mutable;
    /// Cluster mode: hash slots across replica groups, redirects, one database.
    cluster_enabled: bool = "cluster-enabled", Bool, "no", immutable;
    /// Bytes per second an atomic slot move sends at most (0: as fast as it can), so the copy
    /// leaves the node's cores to its clients.
    cluster_migration_max_rate: u64 = "cluster-migration-max-rate", Memory(0, LONG_MAX as u64),
        "33554432", mutable;
    /// An atomic slot move compares the slot digests of source and target while writes are
    /// paused, and is cancelled if they differ (the pause then lasts as long as the digests).
    cluster_migration_verify: bool = "cluster-migration-verify", Bool, "no", mutable;
    /// Milliseconds without contact after which a node counts as failed.
    cluster_node_timeout: u64 = "cluster-node-timeout", Int(0, LONG_MAX), "1000", mutable;
    /// The cluster bus port; 0 means the data port + 10000.
    cluster_port: u16 = "cluster-port", Int(0, 65535), "0", immutable;
    /// The cluster bus's shared secret (empty: the bus is not authenticated). Every bus connection
    /// opens with a challenge in both directions: each side sends a random nonce and proves it knows
    /// the secret with an HMAC-SHA256 over both nonces; the secret itself is never sent. A node
    /// with another secret (or none) is refused and logged. Every node of a cluster needs the same.
    cluster_secret: String = "cluster-secret", Str, "", immutable;
    /// Run in the background: `shoal serve` returns once the node is detached (its standard
    /// streams go to /dev/null; set `logfile` to keep its log), as Redis's `daemonize`.
    daemonize: bool = "daemonize", Bool, "no", immutable;
    /// Number of databases (SELECT 0 to databases-1); cluster mode has one.
    databases: usize = "databases", Int(1, INT_MAX), "16", immutable;
    /// The snapshot's file name, in `dir`.
    dbfilename: String = "dbfilename", Str, "dump.shoal", protected;
    /// The folder for the snapshot and the cluster's files.
    dir: String = "dir", Str, ".", protected;
    /// Turn transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`), as Redis's
    /// `disable-thp`. The allocator asks for huge pages where the kernel allows them; on a node
    /// whose data set grows, each first touch of a 2 MB page then clears it in the request path
    /// (p99 of LPUSH at pipeline 16 into a growing list 5.6–7.7 ms with them, 2.4–3.4 without;
    /// redis-server 2.1–3.0), and a snapshot's fork copies 2 MB for every page written to.
    disable_thp: bool = "disable-thp", Bool, "yes", immutable;
    /// Whether DEBUG may run: `no`, `yes`, or `local` (from loopback connections only).
    enable_debug_command: Protected = "enable-debug-command", Enum(&["no", "yes", "local"]), "no",
        immutable;
    /// Whether MODULE LOAD, LOADEX and UNLOAD may run: `no`, `yes` or `local` (shoal loads no
    /// modules: when allowed they fail as a load of a missing module fails).
    enable_module_command: Protected = "enable-module-command", Enum(&["no", "yes", "local"]),
        "no", immutable;
    /// Who may change the protected parameters (`dir`, `dbfilename`) with `CONFIG SET`: `no`,
    /// `yes`, or `local` (clients connected from 127.0.0.1 or ::1).
    enable_protected_configs: Protected = "enable-protected-configs", Enum(&["no", "yes", "local"]),
        "no", immutable;
    /// A hash with more fields than this leaves the compact encoding.
    hash_max_listpack_entries: usize = "hash-max-listpack-entries" | "hash-max-ziplist-entries",
        Int(0, LONG_MAX), "512", mutable;
    /// Bytes: a hash with a longer field or value leaves the compact encoding.
    hash_max_listpack_value: usize = "hash-max-listpack-value" | "hash-max-ziplist-value",
        Memory(0, LONG_MAX as u64), "64", mutable;
    /// Bytes: a sparse HyperLogLog (header included) that would grow past this becomes dense.
    hll_sparse_max_bytes: u64 = "hll-sparse-max-bytes", Memory(0, LONG_MAX as u64), "3000", mutable;
    /// Background cycles per second (expiry, timeouts), clamped to 1..=500.
    hz: u32 = "hz", Clamped(0, INT_MAX, 1, 500), "10", mutable;
    /// Milliseconds: events slower than this are recorded for LATENCY (0: off).
    latency_monitor_threshold: u64 = "latency-monitor-threshold", Int(0, LONG_MAX), "0", mutable;
    /// Per-command latency histograms (`LATENCY HISTOGRAM`, `INFO latencystats`, `/metrics`).
    latency_tracking: bool = "latency-tracking", Bool, "yes", mutable;
    /// The percentiles `INFO latencystats` shows.
    latency_tracking_info_percentiles: Percentiles = "latency-tracking-info-percentiles",
        Percentiles, "50 99 99.9", mutable;
    /// Keys that may hold a cache-fill lease at once (GETLEASE); past it, a miss gets no lease.
    lease_max_keys: u64 = "lease-max-keys", Int(1, LONG_MAX), "1000000", mutable;
    /// Milliseconds a cache-fill lease (GETLEASE) lives: one token per key per this long.
    lease_ttl_ms: u64 = "lease-ttl-ms", Int(1, LONG_MAX), "10000", mutable;
    /// Minutes after which an LFU counter is halved.
    lfu_decay_time: u32 = "lfu-decay-time", Int(0, INT_MAX), "1", mutable;
    /// How slowly LFU counters grow with hits.
    lfu_log_factor: u32 = "lfu-log-factor", Int(0, INT_MAX), "10", mutable;
    /// Accepted for Redis compatibility: list nodes are not compressed.
    list_compress_depth: u32 = "list-compress-depth", Int(0, INT_MAX), "0", mutable;
    /// Positive: entries per list node; -1..-5: node size class (4..64 KB).
    list_max_listpack_size: i64 = "list-max-listpack-size" | "list-max-ziplist-size",
        Int(INT_MIN, INT_MAX), "-2", mutable;
    /// Text or JSON log lines: `text` (human readable) or `json` (one object per line).
    log_format: LogFormat = "log-format", Enum(&["text", "json"]), "text", immutable;
    /// The log file (appended to, created if missing); empty means standard error.
    logfile: String = "logfile", Str, "", immutable;
    /// How much is logged: debug, verbose, notice or warning.
    loglevel: LogLevel = "loglevel", Enum(&["debug", "verbose", "notice", "warning"]), "notice",
        mutable;
    /// The password a replica gives its primary (AUTH).
    masterauth: String = "masterauth", Str, "", mutable;
    /// The user a replica gives its primary with `masterauth`.
    masteruser: String = "masteruser", Str, "", mutable;
    /// Simultaneous clients at most; more are refused.
    maxclients: u32 = "maxclients", Int(1, UINT_MAX), "10000", mutable;
    /// Bytes of data at most before keys are evicted (units: kb, mb, gb); 0 means no limit.
    maxmemory: u64 = "maxmemory", Memory(0, u64::MAX), "0", mutable;
    /// Bytes all clients' buffers may take together (query and output buffers, arguments,
    /// queued transactions; replicas and the primary's link excepted), or a percentage of
    /// `maxmemory` (`10%`); past it the largest clients are disconnected, as Redis 7's client
    /// eviction (CLIENT NO-EVICT exempts one). 0: no limit; at least 128 KB otherwise.
    maxmemory_clients: MemoryShare = "maxmemory-clients", MemoryOrPercent, "0", mutable;
    /// Which keys go when memory is full (`noeviction` refuses writes instead).
    maxmemory_policy: Policy = "maxmemory-policy", Enum(POLICIES), "allkeys-tinylfu", mutable;
    /// Keys sampled per eviction (LRU, LFU, TTL policies).
    maxmemory_samples: u32 = "maxmemory-samples", Int(1, INT_MAX), "5", mutable;
    /// Address of the HTTP listener (`/metrics`, the status page); empty: the `bind` address.
    metrics_bind: String = "metrics-bind", Str, "", immutable;
    /// Port of the HTTP listener; 0 turns it off.
    metrics_port: u16 = "metrics-port", Int(0, 65535), "0", immutable;
    /// Sync write strategy: replicas that must acknowledge a write.
    min_replicas_ack: u32 = "min-replicas-ack", Int(0, 1 << 20), "1", mutable;
    /// Seconds since its last acknowledgement within which a replica is good for
    /// `min-replicas-to-write` (0: off).
    min_replicas_max_lag: u32 = "min-replicas-max-lag" | "min-slaves-max-lag", Int(0, INT_MAX),
        "10", mutable;
    /// A primary refuses writes (`-NOREPLICAS`) while fewer than this many replicas are good:
    /// connected and heard from within `min-replicas-max-lag` seconds, as Redis (0: off).
    min_replicas_to_write: u32 = "min-replicas-to-write" | "min-slaves-to-write", Int(0, INT_MAX),
        "0", mutable;
    /// Keyspace notifications published over Pub/Sub: `K` (on `__keyspace@<db>__:<key>`) and/or
    /// `E` (on `__keyevent@<db>__:<event>`), with the classes: `g` generic, `$` string, `l` list,
    /// `s` set, `h` hash, `z` sorted set, `x` expired, `e` evicted, `t` stream, `m` key miss, `d`
    /// module, `n` new key, `A` all of `g$lshzxetd`. Empty: off. Replicas publish none (they
    /// apply their primary's effects, not its commands).
    notify_keyspace_events: NotifyClasses = "notify-keyspace-events", NotifyClasses, "", mutable;
    /// A file the node writes its process id to at start (and removes at shutdown); empty:
    /// none.
    pidfile: String = "pidfile", Str, "", immutable;
    /// The TCP port for clients (0 at start picks a free one). `CONFIG SET port` opens the new
    /// port and closes the old one, as Redis; `CONFIG SET port 0` closes it (TLS only then).
    port: u16 = "port", Int(0, 65535), "6379", mutable;
    /// With no password set (`requirepass`), refuse clients that connect from any address but
    /// 127.0.0.1 and ::1 with `-DENIED`, as Redis does.
    protected_mode: bool = "protected-mode", Bool, "yes", mutable;
    /// Bytes a single string argument may have; at least 1mb so a client can always send the
    /// `CONFIG SET` that raises it again.
    proto_max_bulk_len: u64 = "proto-max-bulk-len", Memory(MB, LONG_MAX as u64), "536870912",
        mutable;
    /// On an active-active member, a read queues its keys, and a background task compares their
    /// merge states with the peers' and merges the newer one into whichever side is stale.
    read_repair: bool = "read-repair", Bool, "no", mutable;
    /// Keys read repair compares with the peers per second at most.
    read_repair_keys_per_second: u64 = "read-repair-keys-per-second", Int(1, LONG_MAX), "1000",
        mutable;
    /// Keys waiting for read repair at most; reads beyond it are not checked (counted in
    /// `active_read_repair_dropped`).
    read_repair_queue_keys_max: u64 = "read-repair-queue-keys-max", Int(1, LONG_MAX), "1024",
        mutable;
    /// Bytes of recent writes a primary keeps so a replica that lost its link can catch up
    /// without a full resync.
    repl_backlog_size: u64 = "repl-backlog-size", Memory(1, LONG_MAX as u64), "67108864", mutable;
    /// A replica takes an empty data set from a primary that restarted without its data (else
    /// it refuses, keeping its own).
    replica_accept_empty_primary: bool = "replica-accept-empty-primary", Bool, "no", mutable;
    /// A replica refuses writes from clients.
    replica_read_only: bool = "replica-read-only" | "slave-read-only", Bool, "yes", mutable;
    /// `host port` of the primary to replicate at start-up, or empty.
    replicaof: String = "replicaof" | "slaveof", Str, "", immutable;
    /// The password clients must AUTH with; empty means none.
    requirepass: String = "requirepass", Str, "", mutable;
    /// `seconds changes` pairs: snapshot when that many writes happened in that many seconds.
    save: SaveRules = "save", Save, "", mutable;
    /// A set of integers with more members than this leaves the compact encoding.
    set_max_intset_entries: usize = "set-max-intset-entries", Int(0, LONG_MAX), "512", mutable;
    /// Microseconds a command must take to enter the slow log; negative turns it off.
    slowlog_log_slower_than: i64 = "slowlog-log-slower-than", Int(-1, LONG_MAX), "10000", mutable;
    /// Entries the slow log keeps.
    slowlog_max_len: u64 = "slowlog-max-len", Int(0, LONG_MAX), "128", mutable;
    /// Bytes: a stream node (a packed run of entries) this large takes no more entries.
    stream_node_max_bytes: usize = "stream-node-max-bytes", Memory(0, LONG_MAX as u64), "4096",
        mutable;
    /// Entries (live and deleted) a stream node takes at most; 0 means no limit.
    stream_node_max_entries: usize = "stream-node-max-entries", Int(0, LONG_MAX), "100", mutable;
    /// Seconds of silence before a client connection's TCP keepalive probes start, then one every
    /// third of it; 3 unanswered drop the connection (0: off). Applies to connections accepted
    /// after it is set, as in Redis.
    tcp_keepalive: u32 = "tcp-keepalive", Int(0, INT_MAX), "300", mutable;
    /// Runtime worker threads; 0 means one per core but one (at least one), leaving a core for
    /// the kernel's network work, clients on the same machine and the node's own threads.
    threads: u32 = "threads", Int(0, 1024), "0", immutable;
    /// `yes`: values evicted under `maxmemory` move to a disk cache (foyer) instead of being
    /// dropped; the key, its type, version and expiry stay in memory with an 8-byte handle, and a
    /// read loads the value back. Values shorter than `tiered-storage-min-value-bytes`, hashes
    /// with field TTLs and all keys stay in memory.
    tiered_storage: bool = "tiered-storage", Bool, "no", immutable;
    /// The disk tier's folder (emptied at start: cold values live no longer than the process;
    /// snapshots and the log hold them as any value). Empty: `<dir>/tiered`.
    tiered_storage_dir: String = "tiered-storage-dir", Str, "", immutable;
    /// Bytes of disk the tier may use; when full it drops its oldest values (their keys are then
    /// counted as evicted).
    tiered_storage_max_bytes: u64 = "tiered-storage-max-bytes", Memory(1 << 20, u64::MAX),
        "1073741824", immutable;
    /// Bytes: an evicted value whose encoding is shorter stays out of the tier (it is evicted as
    /// without one): a small value costs about as much memory as its handle.
    tiered_storage_min_value_bytes: u64 = "tiered-storage-min-value-bytes",
        Memory(0, LONG_MAX as u64), "64", immutable;
    /// Seconds a client may stay idle; 0 means forever.
    timeout: u32 = "timeout", Int(0, INT_MAX), "0", mutable;
    /// Mutual TLS: `yes` refuses a TLS client without a certificate signed by `tls-ca-cert-file`,
    /// `optional` checks one if given, `no` asks for none.
    tls_auth_clients: TlsAuthClients = "tls-auth-clients", Enum(&["no", "yes", "optional"]), "yes",
        mutable;
    /// A directory of PEM CA certificates trusted besides `tls-ca-cert-file` (each `*.pem`,
    /// `*.crt` file in it is read).
    tls_ca_cert_dir: String = "tls-ca-cert-dir", Str, "", mutable;
    /// PEM file of the CA certificates that sign client certificates and the certificates of the
    /// nodes this one connects to (replication, cluster bus).
    tls_ca_cert_file: String = "tls-ca-cert-file", Str, "", mutable;
    /// PEM certificate (chain) the server presents; `CONFIG SET` reloads it without a restart (a
    /// file that does not load is refused and the old certificates stay).
    tls_cert_file: String = "tls-cert-file", Str, "", mutable;
    /// PEM certificate this node presents when it connects out (replication, cluster bus); empty:
    /// `tls-cert-file`.
    tls_client_cert_file: String = "tls-client-cert-file", Str, "", mutable;
    /// The private key of `tls-client-cert-file`; empty: `tls-key-file`.
    tls_client_key_file: String = "tls-client-key-file", Str, "", mutable;
    /// `yes`: the cluster bus (Raft traffic) runs over TLS, both accepted and outgoing connections.
    tls_cluster: bool = "tls-cluster", Bool, "no", immutable;
    /// Milliseconds a TLS client has to finish its handshake before the connection is closed.
    tls_handshake_timeout_ms: u64 = "tls-handshake-timeout-ms", Int(1, LONG_MAX), "10000",
        mutable;
    /// PEM private key of `tls-cert-file`.
    tls_key_file: String = "tls-key-file", Str, "", mutable;
    /// The port for TLS clients (0: no TLS port). Needs `tls-cert-file` and `tls-key-file`.
    /// `CONFIG SET tls-port` opens the new port and closes the old one, as Redis.
    tls_port: u16 = "tls-port", Int(0, 65535), "0", mutable;
    /// Protocol versions accepted, space-separated among `TLSv1.2` and `TLSv1.3` (empty: both).
    tls_protocols: String = "tls-protocols", Str, "", mutable;
    /// `yes`: a replica connects to its primary (whose `replicaof` port is then its TLS port) over
    /// TLS.
    tls_replication: bool = "tls-replication", Bool, "no", mutable;
    /// Keys the client-side caching table remembers at most (CLIENT TRACKING); past it, tracked
    /// keys are invalidated and forgotten. 0: no limit.
    tracking_table_max_keys: u64 = "tracking-table-max-keys", Int(0, LONG_MAX), "1000000", mutable;
    /// Percent: a relative TTL (SET EX/PX, SETEX, PSETEX, GETEX EX/PX, EXPIRE, PEXPIRE) grows by a
    /// random share of itself up to this, so keys written together with one TTL do not all
    /// expire at once (an avalanche on the data source). 0: TTLs are exact, as in Redis.
    ttl_jitter_percent: u64 = "ttl-jitter-percent", Int(0, 100), "0", mutable;
    /// `async`: a write is acknowledged at once; `sync`: after `min-replicas-ack` replicas have it.
    write_strategy: Strategy = "write-strategy", Enum(&["async", "sync"]), "async", mutable;
    /// A sorted set with more members than this leaves the compact encoding.
    zset_max_listpack_entries: usize = "zset-max-listpack-entries" | "zset-max-ziplist-entries",
        Int(0, LONG_MAX), "128", mutable;
    /// Bytes: a sorted set with a longer member leaves the compact encoding.
    zset_max_listpack_value: usize = "zset-max-listpack-value" | "zset-max-ziplist-value",
        Memory(0, LONG_MAX as u64), "64", mutable;
}

/// The TLS parameters whose `CONFIG SET` reloads the certificates (`Hooks::apply_tls`).
pub const TLS_RELOADED: &[&str] = &[
    "tls-auth-clients",
    "tls-ca-cert-dir",
    "tls-ca-cert-file",
    "tls-cert-file",
    "tls-client-cert-file",
    "tls-client-key-file",
    "tls-key-file",
    "tls-protocols",
];

/// Finds a parameter by name or alias, case-insensitively.
pub fn find(name: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| {
        p.name.eq_ignore_ascii_case(name) || p.alias.is_some_and(|a| a.eq_ignore_ascii_case(name))
    })
}

impl Config {
    /// Sets a parameter at start-up (file and flags): immutable ones too, checked as `CONFIG SET`
    /// checks them.
    pub fn set_initial(&mut self, name: &str, value: &str) -> Result<(), String> {
        let p = find(name).ok_or_else(|| format!("unknown configuration parameter '{name}'"))?;
        (p.set)(self, p.kind, value).map_err(|e| format!("invalid value for '{name}': {e}"))
    }

    pub fn encoding_limits(&self) -> shoal_keyspace::EncodingLimits {
        shoal_keyspace::EncodingLimits {
            hash_max_listpack_entries: self.hash_max_listpack_entries,
            hash_max_listpack_value: self.hash_max_listpack_value,
            list_max_listpack_size: self.list_max_listpack_size,
            set_max_intset_entries: self.set_max_intset_entries,
            zset_max_listpack_entries: self.zset_max_listpack_entries,
            zset_max_listpack_value: self.zset_max_listpack_value,
            stream_node_max_bytes: self.stream_node_max_bytes,
            stream_node_max_entries: self.stream_node_max_entries,
        }
    }
}

// ---- parsing as Redis does ----

/// Redis's `memtoull`: digits with an optional unit (b, k, kb, m, mb, g, gb; case-insensitive).
/// As in Redis, no digits read as 0 and an overflow saturates or wraps instead of failing: the
/// parameter's bounds then decide (a wrapped value is negative for the `long long` ones).
pub fn parse_memory(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mul: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    // Redis copies the digits into a 128-byte buffer first.
    if num.len() >= 128 {
        return None;
    }
    let v = if num.is_empty() {
        0
    } else {
        num.parse::<u64>().unwrap_or(u64::MAX)
    };
    Some(v.wrapping_mul(mul))
}

/// Redis's `string2ll`: an optional `-` and digits without leading zeros, within `i64`.
fn string2ll(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let b = digits.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // "0" alone is fine; "007" and "-0" are not.
    if b[0] == b'0' && (b.len() > 1 || digits.len() != s.len()) {
        return None;
    }
    s.parse().ok()
}

/// C's `strtoll` over a whole word, as Redis's `save` check uses it: leading blanks and a sign are
/// accepted, an empty word reads 0, an overflow saturates, anything after the digits fails.
fn strtoll_word(s: &str) -> Option<i64> {
    if s.is_empty() {
        return Some(0);
    }
    let t = s.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.parse::<u64>().map_or(i128::MAX, i128::from);
    let v = if negative { -magnitude } else { magnitude };
    Some(v.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
}

/// A numeric parameter's value, checked against its kind's bounds.
fn number(kind: Kind, text: &str) -> Result<i128, String> {
    let within = |v: i128, lo: i128, hi: i128| {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(format!("argument must be between {lo} and {hi} inclusive"))
        }
    };
    match kind {
        Kind::Memory(lo, hi) => {
            let raw = parse_memory(text).ok_or("argument must be a memory value")?;
            let v = if hi <= i64::MAX as u64 {
                raw as i64 as i128
            } else {
                raw as i128
            };
            within(v, lo as i128, hi as i128)
        }
        Kind::Int(lo, hi) => {
            let v = string2ll(text).ok_or("argument couldn't be parsed into an integer")?;
            within(v as i128, lo as i128, hi as i128)
        }
        Kind::Clamped(lo, hi, min, max) => {
            Ok(number(Kind::Int(lo, hi), text)?.clamp(min as i128, max as i128))
        }
        _ => Err(KIND_MISMATCH.into()),
    }
}

macro_rules! integer_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn parse(kind: Kind, text: &str, _: Option<&Self>) -> Result<Self, String> {
                <$t>::try_from(number(kind, text)?).map_err(|_| KIND_MISMATCH.to_string())
            }
            fn render(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

integer_value!(u16, u32, u64, usize, i64);

impl Value for bool {
    fn parse(kind: Kind, text: &str, _: Option<&Self>) -> Result<Self, String> {
        if !matches!(kind, Kind::Bool) {
            return Err(KIND_MISMATCH.into());
        }
        if text.eq_ignore_ascii_case("yes") {
            Ok(true)
        } else if text.eq_ignore_ascii_case("no") {
            Ok(false)
        } else {
            Err("argument must be 'yes' or 'no'".into())
        }
    }
    fn render(&self) -> String {
        if *self { "yes" } else { "no" }.into()
    }
}

impl Value for String {
    fn parse(kind: Kind, text: &str, _: Option<&Self>) -> Result<Self, String> {
        match kind {
            Kind::Str => Ok(text.to_string()),
            _ => Err(KIND_MISMATCH.into()),
        }
    }
    fn render(&self) -> String {
        self.clone()
    }
}

/// `text` lowercased if it is one of `kind`'s choices.
fn choice(kind: Kind, text: &str) -> Result<String, String> {
    let Kind::Enum(allowed) = kind else {
        return Err(KIND_MISMATCH.into());
    };
    let v = text.to_ascii_lowercase();
    if allowed.contains(&v.as_str()) {
        Ok(v)
    } else {
        Err(format!(
            "argument(s) must be one of the following: {}",
            allowed.join(", ")
        ))
    }
}

impl Value for Policy {
    fn parse(kind: Kind, text: &str, _: Option<&Self>) -> Result<Self, String> {
        Policy::parse(&choice(kind, text)?).ok_or_else(|| KIND_MISMATCH.into())
    }
    fn render(&self) -> String {
        self.name().into()
    }
}

impl Value for Strategy {
    fn parse(kind: Kind, text: &str, _: Option<&Self>) -> Result<Self, String> {
        Strategy::parse(&choice(kind, text)?).ok_or_else(|| KIND_MISMATCH.into())
    }
    fn render(&self) -> String {
        self.name().into()
    }
}

/// `loglevel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Verbose,
    Notice,
    Warning,
}

impl LogLevel {
    pub const ALL: [LogLevel; 4] = [
        LogLevel::Debug,
        LogLevel::Verbose,
        LogLevel::Notice,
        LogLevel::Warning,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Verbose => "verbose",
            LogLevel::Notice => "notice",
            LogLevel::Warning => "warning",
        }
    }
}

impl Value for LogLevel {
    fn parse(kind: Kind, text: &str, _: Option<&Self>) -> Result<Self, String> {
        let v = choice(kind, text)?;
        LogLevel::ALL
            .into_iter()
            .find(|l| l.name() == v)
            .ok_or_else(|| KIND_MISMATCH.into())
    }
    fn render(&self) -> String {
        self.name().into()
    }
}

/// `enable-debug-command`, `enable-module-command`: who may run a protected command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protected {
    No,
    Yes,
    /// Only clients connected from a loopback address.
    Local,
}

impl Protected {
    pub fn name(self) -> &'static str {
        match self {
            Protected::No => "no",
            Protected::Yes => "yes",
            Protected::Local => "local",
        }
    }

    /// Whether a client whose peer address is `addr` (`ip:port`) may run the command.
    pub fn allows(self, addr: &str) -> bool {
        match self {
            Protected::No => false,
            Protected::Yes => true,
            Protected::Local => is_local(addr),
        }
    }
}

/// Whether a peer address (`ip:port`, `[v6]:port`) is the loopback address itself, as Redis's
/// `islocalClient` decides: 127.0.0.1 or ::1, not the rest of 127.0.0.0/8.
pub fn is_local(addr: &str) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let ip = match addr.parse::<SocketAddr>() {
        Ok(a) => Some(a.ip()),
        Err(_) => addr.parse::<IpAddr>().ok(),
    };
    ip.is_some_and(|ip| {
        ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST)
    })
}

impl Value for Protected {
    fn parse(kind: Kind, text: &str, _: Option<&Self>) -> Result<Self, String> {
        match choice(kind, text)?.as_str() {
            "no" => Ok(Protected::No),
            "yes" => Ok(Protected::Yes),
            "local" => Ok(Protected::Local),
            _ => Err(KIND_MISMATCH.into()),
        }
    }
    fn render(&self) -> String {
        self.name().into()
    }
}

/// `acl-pubsub-default`: the channels a new user or selector may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PubsubDefault {
    /// Every channel (`&*`).
    AllChannels,
    /// None (`resetchannels`).
    ResetChannels,
}

impl Value for PubsubDefault {
    fn parse(kind: Kind, text: &str, _: Option<&Self>) -> Result<Self, String> {
        match choice(kind, text)?.as_str() {
            "allchannels" => Ok(PubsubDefault::AllChannels),
            "resetchannels" => Ok(PubsubDefault::ResetChannels),
            _ => Err(KIND_MISMATCH.into()),
        }
    }
    fn render(&self) -> String {
        match self {
            PubsubDefault::AllChannels => "allchannels",
            PubsubDefault::ResetChannels => "resetchannels",
        }
        .into()
    }
}

/// `tls-auth-clients`: whether a TLS client must present a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsAuthClients {
    No,
    Yes,
    Optional,
}

impl Value for TlsAuthClients {
    fn parse(kind: Kind, text: &str, _: Option<&Self>) -> Result<Self, String> {
        match choice(kind, text)?.as_str() {
            "no" => Ok(TlsAuthClients::No),
            "yes" => Ok(TlsAuthClients::Yes),
            "optional" => Ok(TlsAuthClients::Optional),
            _ => Err(KIND_MISMATCH.into()),
        }
    }
    fn render(&self) -> String {
        match self {
            TlsAuthClients::No => "no",
            TlsAuthClients::Yes => "yes",
            TlsAuthClients::Optional => "optional",
        }
        .into()
    }
}

/// `appendfsync`: when the append-only log is fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendFsync {
    Always,
    Everysec,
    No,
}

impl AppendFsync {
    pub fn name(self) -> &'static str {
        match self {
            AppendFsync::Always => "always",
            AppendFsync::Everysec => "everysec",
            AppendFsync::No => "no",
        }
    }
}

impl Value for AppendFsync {
    fn parse(kind: Kind, text: &str, _: Option<&Self>) -> Result<Self, String> {
        match choice(kind, text)?.as_str() {
            "always" => Ok(AppendFsync::Always),
            "everysec" => Ok(AppendFsync::Everysec),
            "no" => Ok(AppendFsync::No),
            _ => Err(KIND_MISMATCH.into()),
        }
    }
    fn render(&self) -> String {
        self.name().into()
    }
}

/// `log-format`: how each log line is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable: time, level, message, fields.
    Text,
    /// One JSON object per line (time, level, message, fields).
    Json,
}

impl LogFormat {
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl Value for LogFormat {
    fn parse(kind: Kind, text: &str, _: Option<&Self>) -> Result<Self, String> {
        match choice(kind, text)?.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(KIND_MISMATCH.into()),
        }
    }
    fn render(&self) -> String {
        self.name().into()
    }
}

/// `latency-tracking-info-percentiles`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Percentiles(pub Vec<f64>);

impl Value for Percentiles {
    fn parse(kind: Kind, text: &str, _: Option<&Self>) -> Result<Self, String> {
        if !matches!(kind, Kind::Percentiles) {
            return Err(KIND_MISMATCH.into());
        }
        let mut v = Vec::new();
        for word in text.split_whitespace() {
            let p: f64 = word
                .parse()
                .ok()
                .filter(|p: &f64| p.is_finite())
                .ok_or("Invalid latency-tracking-info-percentiles parameters")?;
            if !(0.0..=100.0).contains(&p) {
                return Err(
                    "latency-tracking-info-percentiles parameters should sit between [0.0,100.0]"
                        .into(),
                );
            }
            v.push(p);
        }
        Ok(Percentiles(v))
    }
    fn render(&self) -> String {
        let words: Vec<String> = self.0.iter().map(f64::to_string).collect();
        words.join(" ")
    }
}

/// `notify-keyspace-events`: the classes on (`shoal_keyspace::notify`'s bits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotifyClasses(pub u32);

impl Value for NotifyClasses {
    fn parse(kind: Kind, text: &str, _: Option<&Self>) -> Result<Self, String> {
        if !matches!(kind, Kind::NotifyClasses) {
            return Err(KIND_MISMATCH.into());
        }
        shoal_keyspace::notify::parse_classes(text.as_bytes())
            .map(NotifyClasses)
            .ok_or_else(|| "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.".into())
    }
    fn render(&self) -> String {
        shoal_keyspace::notify::format_classes(self.0)
    }
}

/// `maxmemory-clients`: bytes, or a share of `maxmemory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryShare {
    Bytes(u64),
    /// 1..=100 percent (0% is `Bytes(0)`, as Redis stores it).
    Percent(u64),
}

/// The least a nonzero `maxmemory-clients` amounts to: below it, a bad setting would leave no
/// client able to talk to the node (Redis's floor).
pub const MAXMEMORY_CLIENTS_MIN: u64 = 128 * 1024;

impl MemoryShare {
    /// The limit in bytes given `maxmemory`; 0 when off (a percentage of no `maxmemory` too).
    pub fn bytes(self, maxmemory: u64) -> u64 {
        let v = match self {
            MemoryShare::Bytes(0) => return 0,
            MemoryShare::Bytes(b) => b,
            MemoryShare::Percent(_) if maxmemory == 0 => return 0,
            MemoryShare::Percent(p) => (maxmemory as f64 * p as f64 / 100.0) as u64,
        };
        v.max(MAXMEMORY_CLIENTS_MIN)
    }
}

impl Value for MemoryShare {
    fn parse(kind: Kind, text: &str, _: Option<&Self>) -> Result<Self, String> {
        if !matches!(kind, Kind::MemoryOrPercent) {
            return Err(KIND_MISMATCH.into());
        }
        // Redis reads a memory value first and keeps it as a signed number, a negative one
        // standing for a percentage (so `99999999999999999999`, saturated to -1, means 1%).
        let signed = match parse_memory(text) {
            Some(raw) => raw as i64,
            None => match text
                .strip_suffix('%')
                .filter(|n| !n.is_empty())
                .and_then(string2ll)
            {
                Some(p) if p >= 0 => -p,
                _ => return Err("argument must be a memory or percent value".into()),
            },
        };
        match signed {
            v if v < -100 => Err("percentage argument must be less or equal to 100".into()),
            v if v < 0 => Ok(MemoryShare::Percent(v.unsigned_abs())),
            v => Ok(MemoryShare::Bytes(v as u64)),
        }
    }
    fn render(&self) -> String {
        match self {
            MemoryShare::Bytes(b) => b.to_string(),
            MemoryShare::Percent(p) => format!("{p}%"),
        }
    }
}

/// `save` rules: a background save starts once `changes` writes happened in `seconds`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaveRules(pub Vec<SaveRule>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaveRule {
    pub seconds: u64,
    pub changes: u64,
}

impl Value for SaveRules {
    fn parse(kind: Kind, text: &str, _: Option<&Self>) -> Result<Self, String> {
        if !matches!(kind, Kind::Save) {
            return Err(KIND_MISMATCH.into());
        }
        const INVALID: &str = "Invalid save parameters";
        if text.is_empty() {
            return Ok(SaveRules::default());
        }
        // Redis splits on single spaces (`sdssplitlen`), so doubled spaces make empty words.
        let words: Vec<&str> = text.split(' ').collect();
        if !words.len().is_multiple_of(2) {
            return Err(INVALID.into());
        }
        let mut rules = Vec::with_capacity(words.len() / 2);
        for pair in words.chunks(2) {
            let seconds = strtoll_word(pair[0]).filter(|&s| s >= 1).ok_or(INVALID)?;
            let changes = strtoll_word(pair[1]).filter(|&c| c >= 0).ok_or(INVALID)?;
            rules.push(SaveRule {
                seconds: seconds as u64,
                changes: changes as u64,
            });
        }
        Ok(SaveRules(rules))
    }
    fn render(&self) -> String {
        self.0
            .iter()
            .map(|r| format!("{} {}", r.seconds, r.changes))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One client class's output buffer limits; 0 means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OutputLimit {
    pub hard_bytes: u64,
    pub soft_bytes: u64,
    pub soft_seconds: u64,
}

/// `client-output-buffer-limit`, by client class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OutputLimits {
    pub normal: OutputLimit,
    /// Redis's `slave` class (`replica` is accepted as its name too).
    pub replica: OutputLimit,
    pub pubsub: OutputLimit,
}

impl Value for OutputLimits {
    /// `class hard soft secs [class hard soft secs ...]`, merged into `current`: Redis lets one
    /// class be set at a time. All or nothing.
    fn parse(kind: Kind, text: &str, current: Option<&Self>) -> Result<Self, String> {
        if !matches!(kind, Kind::OutputBufferLimit) {
            return Err(KIND_MISMATCH.into());
        }
        let mut out = current.copied().unwrap_or_default();
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() || !words.len().is_multiple_of(4) {
            return Err("Wrong number of arguments in buffer limit configuration.".into());
        }
        for c in words.chunks(4) {
            let class = match c[0].to_ascii_lowercase().as_str() {
                "normal" => &mut out.normal,
                "slave" | "replica" => &mut out.replica,
                "pubsub" => &mut out.pubsub,
                _ => {
                    return Err(
                        "Invalid client class specified in buffer limit configuration.".into(),
                    );
                }
            };
            let (Some(hard_bytes), Some(soft_bytes), Ok(soft_seconds)) =
                (parse_memory(c[1]), parse_memory(c[2]), c[3].parse::<u64>())
            else {
                return Err(
                    "Error in hard, soft or soft_seconds setting in buffer limit configuration."
                        .into(),
                );
            };
            *class = OutputLimit {
                hard_bytes,
                soft_bytes,
                soft_seconds,
            };
        }
        Ok(out)
    }
    fn render(&self) -> String {
        let class = |name: &str, l: &OutputLimit| {
            format!(
                "{name} {} {} {}",
                l.hard_bytes, l.soft_bytes, l.soft_seconds
            )
        };
        [
            class("normal", &self.normal),
            class("slave", &self.replica),
            class("pubsub", &self.pubsub),
        ]
        .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: &str) -> Result<Config, String> {
        let mut c = Config::default();
        c.set_initial(name, value).map(|_| c)
    }

    #[test]
    fn memory_units_like_redis() {
        assert_eq!(parse_memory("100"), Some(100));
        assert_eq!(parse_memory("1kb"), Some(1024));
        assert_eq!(parse_memory("1K"), Some(1000));
        assert_eq!(parse_memory("2GB"), Some(2 << 30));
        assert_eq!(parse_memory("1tb"), None);
        assert_eq!(parse_memory(" 5"), None);
        assert_eq!(parse_memory("-1"), None);
        // Redis reads no digits as 0 and saturates an overflow.
        assert_eq!(parse_memory("mb"), Some(0));
        assert_eq!(parse_memory("99999999999999999999"), Some(u64::MAX));
    }

    #[test]
    fn integers_parse_like_string2ll() {
        for ok in [
            "0",
            "7",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert!(string2ll(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "-",
            "007",
            "-0",
            "+5",
            " 5",
            "5 ",
            "1.5",
            "9223372036854775808",
        ] {
            assert_eq!(string2ll(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bounds_are_redis_7_0s() {
        let between =
            |lo: &str, hi: &str| format!("argument must be between {lo} and {hi} inclusive");
        let refused = |name: &str, value: &str| set(name, value).unwrap_err();
        // The defect: 0 made every later request fail, including the CONFIG SET to undo it.
        assert!(
            refused("proto-max-bulk-len", "0")
                .ends_with(&between("1048576", "9223372036854775807"))
        );
        assert_eq!(
            set("proto-max-bulk-len", "1mb").unwrap().proto_max_bulk_len,
            1 << 20
        );
        // An overflowing memory value wraps negative for a `long long` parameter, as in Redis.
        assert!(
            refused("client-query-buffer-limit", "99999999999999999999")
                .ends_with(&between("1048576", "9223372036854775807"))
        );
        assert_eq!(
            set("maxmemory", "99999999999999999999").unwrap().maxmemory,
            u64::MAX
        );
        assert!(refused("maxmemory-samples", "0").ends_with(&between("1", "2147483647")));
        assert!(refused("timeout", "-1").ends_with(&between("0", "2147483647")));
        assert!(refused("maxclients", "0").ends_with(&between("1", "4294967295")));
        assert!(refused("repl-backlog-size", "0").ends_with(&between("1", "9223372036854775807")));
        assert_eq!(
            set("list-max-listpack-size", "-100")
                .unwrap()
                .list_max_listpack_size,
            -100
        );
        assert_eq!(
            set("hash-max-listpack-value", "1kb")
                .unwrap()
                .hash_max_listpack_value,
            1024
        );
        assert!(refused("timeout", "007").ends_with("argument couldn't be parsed into an integer"));
        // hz: any int is accepted and clamped, as Redis's updateHZ does.
        assert_eq!(set("hz", "1000").unwrap().hz, 500);
        assert_eq!(set("hz", "0").unwrap().hz, 1);
    }

    #[test]
    fn every_bound_fits_its_field() {
        for p in PARAMS {
            let (lo, hi) = match p.kind {
                Kind::Memory(lo, hi) => (lo.to_string(), hi.to_string()),
                Kind::Int(lo, hi) | Kind::Clamped(lo, hi, ..) => (lo.to_string(), hi.to_string()),
                _ => continue,
            };
            let mut c = Config::default();
            (p.set)(&mut c, p.kind, &lo).unwrap_or_else(|e| panic!("{} {lo}: {e}", p.name));
            (p.set)(&mut c, p.kind, &hi).unwrap_or_else(|e| panic!("{} {hi}: {e}", p.name));
        }
    }

    #[test]
    fn save_rules_like_redis() {
        let c = set("save", "01 +2 300 10").unwrap();
        assert_eq!((find("save").unwrap().get)(&c), "1 2 300 10");
        assert_eq!(
            c.save.0[1],
            SaveRule {
                seconds: 300,
                changes: 10
            }
        );
        assert!(set("save", "").unwrap().save.0.is_empty());
        for bad in ["900", "0 1", "1 -1", "900 1  300 10", "x 1"] {
            assert!(
                set("save", bad)
                    .unwrap_err()
                    .ends_with("Invalid save parameters"),
                "{bad}"
            );
        }
    }

    #[test]
    fn output_limits_merge_per_class() {
        let c = set("client-output-buffer-limit", "normal 1mb 512kb 10").unwrap();
        assert_eq!(
            (find("client-output-buffer-limit").unwrap().get)(&c),
            "normal 1048576 524288 10 slave 268435456 67108864 60 pubsub 33554432 8388608 60"
        );
        assert_eq!(c.client_output_buffer_limit.normal.hard_bytes, 1 << 20);
        let c = set("client-output-buffer-limit", "replica 1 2 3").unwrap();
        assert_eq!(c.client_output_buffer_limit.replica.soft_seconds, 3);
        assert!(set("client-output-buffer-limit", "bogus 1 2 3").is_err());
        assert!(set("client-output-buffer-limit", "normal 1 2").is_err());
    }

    #[test]
    fn names_and_aliases_reach_the_same_field() {
        assert!(!set("slave-read-only", "no").unwrap().replica_read_only);
        assert!(!set("REPLICA-READ-ONLY", "NO").unwrap().replica_read_only);
        assert_eq!(
            set("maxmemory-policy", "ALLKEYS-LRU")
                .unwrap()
                .maxmemory_policy,
            Policy::AllKeysLru
        );
        assert_eq!(
            set("nosuch", "1").unwrap_err(),
            "unknown configuration parameter 'nosuch'"
        );
    }

    #[test]
    fn every_param_says_what_it_means() {
        for p in PARAMS {
            let help = p.help.concat();
            assert!(help.trim().len() > 10, "{}: {help:?}", p.name);
        }
    }

    #[test]
    fn params_are_sorted_and_defaults_canonical() {
        for w in PARAMS.windows(2) {
            assert!(w[0].name < w[1].name);
        }
        let c = Config::default();
        for p in PARAMS {
            // CONFIG GET of a fresh server and CONFIG REWRITE rely on this.
            assert_eq!((p.get)(&c), p.default, "{}", p.name);
        }
    }
}

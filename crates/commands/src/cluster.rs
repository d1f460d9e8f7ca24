//! Cluster mode in the command layer: the node's view of the cluster configuration
//! ([`ClusterState`]), the routing of every request with keys (`-MOVED`, `-ASK`, `-CROSSSLOT`,
//! `-TRYAGAIN`, `-CLUSTERDOWN`, decided by `shoal_cluster::route` from the command's key specs),
//! and the commands `CLUSTER ...`, `ASKING`, `READONLY`, `READWRITE`, with Redis 7.0's replies.
//!
//! The configuration itself (nodes, slot owners, migrations) is `shoal_cluster::Config`, changed
//! only by `Change`s committed by the configuration group (Raft, run by the server crate). A
//! command that changes it checks its arguments, checks the change against the current
//! configuration (so most refusals answer at once), and returns `Action::ClusterChange`: the I/O
//! layer proposes it and replies once it is committed. Committed configurations are installed
//! with [`ClusterState::install`].

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, RwLock};

use shoal_cluster::{Change, ChangeError, Config, Node, Presence, Route, RouteRequest, SlotRange};
use shoal_keyspace::{SLOTS, key_slot};
use shoal_resp::ReplyWriter;

use crate::args::{ERR_NOT_INTEGER, ERR_SYNTAX, parse_i64};
use crate::error::{ClusterDownReason, ReplyError};
use crate::migration::{cancelslotmigrations, getslotmigrations, migrateslots, syncslots};
use crate::state::{Client, ServerState};
use crate::table::{Group, Spec, flag::*};
use crate::{Args, CmdResult, Ctx, err};

/// This node's view of the cluster.
#[derive(Debug)]
pub struct ClusterState {
    /// This node's id (40 hex characters; `CLUSTER RESET HARD` gives a new one).
    me: RwLock<String>,
    config: RwLock<Arc<Config>>,
    /// Bumped with every installed configuration, so connections refresh their copy only then.
    version: AtomicU64,
    /// This node belongs to a configuration group (it formed one or was added to one). A node
    /// that does not is shown a configuration of itself alone, and can be met.
    pub formed: std::sync::atomic::AtomicBool,
    /// The configuration group as this node last saw it (kept fresh by the server), for INFO.
    pub group: std::sync::Mutex<GroupInfo>,
    /// Atomic slot migrations this node exports or imports (`migration.rs`).
    pub migrations: crate::migration::Migrations,
    /// Slots whose requests wait while their move flips ownership.
    pub paused: crate::migration::PausedSlots,
    /// This node's write lease (fencing: a primary serves only while it holds one).
    pub lease: LeaseState,
    /// As a primary: the replicas a `sync` write waits for (kept by the server's in-sync task).
    pub sync_members: std::sync::Mutex<SyncMembers>,
    /// The last nodes the installed configurations removed, oldest first: a FORGET of one of
    /// them is done already (`redis-cli --cluster del-node` sends it to every node, and the
    /// first removes the node from the configuration for all).
    forgotten: std::sync::Mutex<std::collections::VecDeque<String>>,
}

/// At most this many removed nodes are remembered.
pub const FORGOTTEN_MAX: usize = 1024;

/// The replicas (by `ip`, listening port) a primary's `sync` write waits for: its group's
/// committed in-sync set and the replicas joining it (a joining replica must acknowledge every
/// write from the moment it starts joining, or it could miss one acknowledged before its
/// membership commits).
#[derive(Debug, Default, Clone)]
pub struct SyncMembers {
    pub committed: Vec<(String, u16)>,
    pub joining: Vec<(String, u16)>,
}

/// This node's write lease, kept by the server's lease task (`shoal_cluster::lease`), read by
/// every request routed to a slot this node owns.
#[derive(Debug, Default)]
pub struct LeaseState {
    /// The lease runs until this time of the node's `Clock::mono_ms` (0: none).
    pub until_ms: AtomicU64,
    /// The installed configuration makes this node a primary: it serves its slots only while
    /// its lease runs. Replicas serve `READONLY` reads without one.
    pub enforced: std::sync::atomic::AtomicBool,
    /// `cluster-allow-reads-when-down`.
    pub allow_reads_when_down: std::sync::atomic::AtomicBool,
    /// This node holds data it can vouch for: since its process started it held a lease or
    /// finished a sync from a primary that could vouch for its own (`lease::Holder`, mirrored
    /// by the lease task; false until it says so). A node that cannot vouch refuses `PSYNC`:
    /// a replica that synced from a primary that restarted empty would otherwise look like a
    /// member with data to the voters.
    pub vouches: std::sync::atomic::AtomicBool,
    /// Leases granted to this node, and requests refused for want of one.
    pub grants: AtomicU64,
    pub refusals: AtomicU64,
    /// Why the last beat got no lease (empty when it got one).
    pub last_refusal: std::sync::Mutex<String>,
    /// Times the installed configuration made this node, a primary, a replica: a lease granted
    /// to a beat sent before is not taken.
    pub demotions: AtomicU64,
    /// Automatic promotions this node proposed as the configuration group's leader.
    pub promotions_proposed: AtomicU64,
    /// In-sync set changes this node proposed as a primary.
    pub in_sync_changes: AtomicU64,
}

impl LeaseState {
    /// Whether this node may serve its slots at `now_ms` (`Clock::mono_ms`): it is no
    /// primary, or its lease runs.
    #[inline]
    pub fn valid(&self, now_ms: u64) -> bool {
        !self.enforced.load(Relaxed) || now_ms < self.until_ms.load(Relaxed)
    }

    /// Milliseconds the lease still runs at `now_ms` (0: lapsed or none).
    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.until_ms.load(Relaxed).saturating_sub(now_ms)
    }
}

/// What `INFO cluster` shows of the configuration group.
#[derive(Debug, Clone, Default)]
pub struct GroupInfo {
    /// `leader`, `follower`, `candidate`, `learner`, `shutdown`, or `none` before any group.
    pub state: &'static str,
    pub term: u64,
    /// The leader's Raft id, if one is known.
    pub leader: Option<u64>,
    pub commit_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub voters: usize,
    pub learners: usize,
}

/// A connection's cluster state: `ASKING` for the next command, `READONLY`, and its copy of the
/// configuration (refreshed when [`ClusterState`]'s version moves).
#[derive(Debug, Default)]
pub struct ClientCluster {
    pub asking: bool,
    pub readonly: bool,
    /// `READONLY MAXLAG ms`: reads are refused while this replica is further behind (`maxlag`).
    pub maxlag_ms: Option<u64>,
    cached: Option<(u64, Arc<Config>, Arc<str>)>,
    /// The slots of the request being routed (kept to reuse its allocation).
    slots: Vec<u16>,
    /// The slot import this connection (opened by the source of an atomic move) runs.
    pub import: Option<std::sync::Arc<crate::migration::Job>>,
}

impl ClusterState {
    /// A node that knows only itself: no slots yet, so the cluster is down until slots are
    /// assigned.
    pub fn new(me: String) -> ClusterState {
        ClusterState {
            me: RwLock::new(me),
            config: RwLock::new(Arc::new(Config::new())),
            version: AtomicU64::new(1),
            formed: std::sync::atomic::AtomicBool::new(false),
            group: std::sync::Mutex::new(GroupInfo {
                state: "none",
                ..GroupInfo::default()
            }),
            migrations: Default::default(),
            paused: Default::default(),
            lease: Default::default(),
            sync_members: Default::default(),
            forgotten: Default::default(),
        }
    }

    /// Whether an installed configuration removed node `id` (one of the last
    /// [`FORGOTTEN_MAX`]).
    pub fn recently_forgotten(&self, id: &str) -> bool {
        let forgotten = self.forgotten.lock().unwrap_or_else(|p| p.into_inner());
        forgotten.iter().any(|gone| gone == id)
    }

    pub fn me(&self) -> String {
        self.me.read().expect("cluster id lock").clone()
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().expect("cluster config lock").clone()
    }

    /// Replaces the configuration with a committed one from the configuration group, unless the
    /// installed one is newer (two installers may race: a proposal's own and the task that
    /// follows the group; the configuration's epoch grows with every applied change).
    pub fn install(&self, config: Arc<Config>) {
        self.install_from(config, false);
    }

    /// Installs `config` whatever its epoch: the configuration of a node that left its group
    /// (its next group's epochs start over).
    pub fn install_after_leaving(&self, config: Arc<Config>) {
        self.install_from(config, true);
    }

    fn install_from(&self, config: Arc<Config>, left_group: bool) {
        config.check_invariants();
        let mut current = self.config.write().expect("cluster config lock");
        if config.epoch() < current.epoch() && !left_group {
            return;
        }
        if !left_group {
            let removed = current
                .nodes()
                .iter()
                .filter(|n| config.node(&n.id).is_none());
            let mut forgotten = self.forgotten.lock().unwrap_or_else(|p| p.into_inner());
            for n in removed {
                if forgotten.len() == FORGOTTEN_MAX {
                    forgotten.pop_front();
                }
                forgotten.push_back(n.id.clone());
            }
        }
        let primary = current.node(&self.me()).is_some_and(|n| n.is_primary());
        let now_primary = config.node(&self.me()).is_some_and(|n| n.is_primary());
        *current = config;
        drop(current);
        self.lease.enforced.store(now_primary, Relaxed);
        if primary && !now_primary {
            // A node made a replica gives its lease up at once.
            self.lease.demotions.fetch_add(1, Relaxed);
            self.lease.until_ms.store(0, Relaxed);
        }
        self.version.fetch_add(1, Release);
    }

    /// Whether `change` would be accepted by the current configuration (the committed one may
    /// still refuse it if another change got there first).
    pub fn precheck(&self, change: &Change) -> Result<(), ChangeError> {
        Config::clone(&self.config()).apply(change)
    }

    /// Sets this node's id (its stored identity, read at start-up, or a new one after
    /// `CLUSTER RESET HARD`).
    pub fn set_me(&self, id: String) {
        *self.me.write().expect("cluster id lock") = id;
        self.version.fetch_add(1, Release);
    }

    /// The configuration a connection should use, refreshed only when it changed.
    fn for_client<'c>(&self, c: &'c mut ClientCluster) -> (&'c Config, &'c str) {
        let v = self.version.load(Acquire);
        if c.cached.as_ref().is_none_or(|(cv, _, _)| *cv != v) {
            c.cached = Some((v, self.config(), self.me().into()));
        }
        let (_, cfg, me) = c.cached.as_ref().expect("just filled");
        (cfg, me)
    }
}

/// Calls `f` with every key of a request (for EXEC, of every queued command) and whether the
/// request writes.
fn for_each_key<'k>(
    tx: &'k crate::multi::ClientTx,
    spec: &'static Spec,
    args: &'k Args<'k>,
    mut f: impl FnMut(&[u8]),
) -> bool {
    let mut write = spec.has(WRITE);
    let mut keys_of = |spec: &'static Spec, args: &Args<'_>| {
        if let Ok(refs) = crate::keyspec::keys(spec, args) {
            for k in refs.iter() {
                f(args.get(k.pos));
            }
        }
    };
    if spec.has(TX_EXEC) {
        for (s, a) in tx.queued_commands() {
            write |= s.has(WRITE);
            keys_of(s, &a);
        }
    } else if crate::keyspec::has_keys(spec) {
        keys_of(spec, args);
    } else if crate::keyspec::is_shard_pubsub(spec)
        && let Ok(refs) = crate::keyspec::shard_channels(spec, args)
    {
        // A shard channel is served by the owner of its slot.
        for k in refs.iter() {
            f(args.get(k.pos));
        }
    }
    write
}

/// What routing decided for a request that is not redirected or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Served here.
    Here,
    /// One of its slots is paused while its atomic move flips ownership: the request waits and
    /// is routed again (reads too: during the flip the two nodes may briefly disagree about the
    /// owner, and a redirect would bounce between them).
    Paused,
}

/// The decision for a request in cluster mode, from its keys' slots (for EXEC, the keys of every
/// queued command). `Ok` serves it here (or holds it, [`Routed::Paused`]). Allocates nothing on
/// the way of a usual request: the slots go to a buffer the connection keeps, and the keys are
/// looked at again only when a slot is moving.
pub fn route_request(
    srv: &ServerState,
    cl: &ClusterState,
    client: &mut Client,
    spec: &'static Spec,
    args: &Args<'_>,
    asking: bool,
    now_ms: u64,
) -> Result<Routed, ReplyError> {
    let mut slots = std::mem::take(&mut client.cluster.slots);
    slots.clear();
    let write = for_each_key(&client.tx, spec, args, |key| slots.push(key_slot(key)));
    if slots.is_empty() {
        client.cluster.slots = slots;
        return Ok(Routed::Here);
    }
    // A command queued in MULTI does not wait (it runs at EXEC, which does).
    if cl.paused.any()
        && (spec.has(TX_EXEC) || !client.tx.in_multi())
        && slots.iter().any(|&s| cl.paused.contains(s))
    {
        client.cluster.slots = slots;
        return Ok(Routed::Paused);
    }
    let req = RouteRequest {
        write,
        asking: asking || spec.has(ASKING),
        // A replica further behind than the connection's `READONLY MAXLAG` sends its reads to
        // the slot's primary (`-MOVED`), as if the connection had not said READONLY.
        readonly: client.cluster.readonly
            && client
                .cluster
                .maxlag_ms
                .is_none_or(|m| crate::maxlag::check(srv, m, now_ms).is_ok()),
    };
    let tx = &client.tx;
    let (cfg, me) = cl.for_client(&mut client.cluster);
    let presence = || {
        let mut p = Presence::default();
        for_each_key(tx, spec, args, |key| {
            // Cluster mode has one database.
            let slot = key_slot(key);
            let shard = srv.ks.lock(srv.ks.shard_of(slot));
            if shard.contains(0, slot, key, now_ms) {
                p.present += 1;
            } else {
                p.missing += 1;
            }
        });
        p
    };
    let route = shoal_cluster::route(cfg, me, &slots, req, presence);
    client.cluster.slots = slots;
    match route {
        Route::Local if !cl.lease.valid((srv.clock.mono_ms)()) => {
            match fenced(srv, cl, client, write) {
                Some(e) => Err(e),
                None => Ok(Routed::Here),
            }
        }
        Route::Local => Ok(Routed::Here),
        Route::Moved { slot, addr } => Err(ReplyError::Moved { slot, addr }),
        Route::Ask { slot, addr } => Err(ReplyError::Ask { slot, addr }),
        Route::CrossSlot => Err(ReplyError::CrossSlot),
        Route::TryAgain => Err(ReplyError::TryAgain),
        Route::Unbound => Err(ReplyError::ClusterDown(ClusterDownReason::SlotNotServed)),
        Route::Down => Err(ReplyError::ClusterDown(ClusterDownReason::Down)),
    }
}

/// The refusal of a request routed here while this primary holds no lease (it is cut off from
/// the configuration group, or was just promoted and waits for its predecessor's lease to
/// lapse): `-CLUSTERDOWN`, as Redis answers on a node that lost the majority. Reads are served
/// on `async` with `cluster-allow-reads-when-down yes`; never on `sync`, where a failover may
/// already have made another node the primary.
fn fenced(
    srv: &ServerState,
    cl: &ClusterState,
    client: &Client,
    write: bool,
) -> Option<ReplyError> {
    let sync = client.repl.strategy.map_or_else(
        || srv.repl.strategy_sync(),
        |s| s == crate::repl::Strategy::Sync,
    );
    let reads = !sync && cl.lease.allow_reads_when_down.load(Relaxed);
    if reads && !write {
        return None;
    }
    cl.lease.refusals.fetch_add(1, Relaxed);
    Some(ReplyError::ClusterDown(if reads {
        ClusterDownReason::ReadsOnly
    } else {
        ClusterDownReason::Down
    }))
}

/// Whether a transaction about to run names a paused slot (EXEC looks again once it holds the
/// exec gate alone: a pause may have begun since its admission).
pub fn queued_keys_paused<'a>(
    srv: &ServerState,
    cmds: impl Iterator<Item = (&'static Spec, Args<'a>)>,
) -> bool {
    let Some(cl) = srv.cluster.as_ref().filter(|cl| cl.paused.any()) else {
        return false;
    };
    let mut hit = false;
    for (spec, args) in cmds {
        if hit {
            break;
        }
        if let Ok(refs) = crate::keyspec::keys(spec, &args) {
            hit = refs
                .iter()
                .any(|k| cl.paused.contains(key_slot(args.get(k.pos))));
        }
    }
    hit
}

// ---------------------------------------------------------------------------------------------
// The command table.

const CLUSTER: Group = Group::Cluster;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "asking",
        arity: 1,
        flags: FAST,
        group: CLUSTER,
        since: "3.0.0",
        summary: "Signals that a cluster client is following an -ASK redirect.",
        handler: Some(asking),
        type_categories: Some(&["@connection"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "cluster",
        arity: -2,
        flags: 0,
        group: CLUSTER,
        since: "3.0.0",
        summary: "A container for Redis Cluster commands.",
        subcommands: SUBCOMMANDS,
        ..Spec::DEFAULT
    },
    Spec {
        name: "readonly",
        // Redis's is 1; `READONLY MAXLAG ms` is shoal's.
        arity: -1,
        flags: FAST | LOADING | STALE,
        group: CLUSTER,
        since: "3.0.0",
        summary: "Enables read-only queries for a connection to a Redis Cluster replica node. shoal: `READONLY MAXLAG ms` answers this connection's reads only while the replica is at most ms behind its primary (else -TRYAGAIN), in any mode; READWRITE or RESET drops the bound.",
        handler: Some(readonly),
        type_categories: Some(&["@connection"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "readwrite",
        arity: 1,
        flags: FAST | LOADING | STALE,
        group: CLUSTER,
        since: "3.0.0",
        summary: "Enables read-write queries for a connection to a Reids Cluster replica node.",
        handler: Some(readwrite),
        type_categories: Some(&["@connection"]),
        ..Spec::DEFAULT
    },
];

macro_rules! sub {
    ($name:literal, $arity:expr, $flags:expr, $since:literal, $summary:literal, $handler:ident) => {
        sub!($name, $arity, $flags, $since, $summary, $handler, &[])
    };
    ($name:literal, $arity:expr, $flags:expr, $since:literal, $summary:literal, $handler:ident,
     $tips:expr) => {
        Spec {
            name: $name,
            arity: $arity,
            flags: $flags,
            group: CLUSTER,
            since: $since,
            summary: $summary,
            tips: $tips,
            handler: Some($handler),
            ..Spec::DEFAULT
        }
    };
}

/// The tip Redis gives the cluster subcommands whose reply depends on the moment.
const NONDETERMINISTIC: &[&str] = &["nondeterministic_output"];

static SUBCOMMANDS: &[Spec] = &[
    sub!(
        "cluster|addslots",
        -3,
        ADMIN | STALE | NO_ASYNC_LOADING,
        "3.0.0",
        "Assigns new hash slots to a node.",
        addslots
    ),
    sub!(
        "cluster|addslotsrange",
        -4,
        ADMIN | STALE | NO_ASYNC_LOADING,
        "7.0.0",
        "Assigns new hash slot ranges to a node.",
        addslotsrange
    ),
    sub!(
        "cluster|cancelslotmigrations",
        2,
        ADMIN | STALE,
        "9.0.0",
        "Cancels the atomic slot migrations this node exports.",
        cancelslotmigrations
    ),
    sub!(
        "cluster|bumpepoch",
        2,
        ADMIN | STALE | NO_ASYNC_LOADING,
        "3.0.0",
        "Advances the cluster config epoch.",
        bumpepoch,
        NONDETERMINISTIC
    ),
    sub!(
        "cluster|saveconfig",
        2,
        ADMIN | STALE | NO_ASYNC_LOADING,
        "3.0.0",
        "Forces a node to save the cluster configuration to disk.",
        saveconfig
    ),
    sub!(
        "cluster|set-config-epoch",
        3,
        ADMIN | STALE | NO_ASYNC_LOADING,
        "3.0.0",
        "Sets the configuration epoch for a new node.",
        set_config_epoch
    ),
    sub!(
        "cluster|count-failure-reports",
        3,
        ADMIN | STALE,
        "3.0.0",
        "Returns the number of active failure reports active for a node.",
        count_failure_reports,
        NONDETERMINISTIC
    ),
    sub!(
        "cluster|countkeysinslot",
        3,
        STALE,
        "3.0.0",
        "Returns the number of keys in a hash slot.",
        countkeysinslot
    ),
    sub!(
        "cluster|delslots",
        -3,
        ADMIN | STALE | NO_ASYNC_LOADING,
        "3.0.0",
        "Sets hash slots as unbound for a node.",
        delslots
    ),
    sub!(
        "cluster|delslotsrange",
        -4,
        ADMIN | STALE | NO_ASYNC_LOADING,
        "7.0.0",
        "Sets hash slot ranges as unbound for a node.",
        delslotsrange
    ),
    sub!(
        "cluster|failover",
        -2,
        ADMIN | STALE | NO_ASYNC_LOADING,
        "3.0.0",
        "Forces a replica to perform a manual failover of its master.",
        failover
    ),
    sub!(
        "cluster|flushslots",
        2,
        ADMIN | STALE | NO_ASYNC_LOADING,
        "3.0.0",
        "Delete a node's own slots information",
        flushslots
    ),
    sub!(
        "cluster|forget",
        3,
        ADMIN | STALE | NO_ASYNC_LOADING,
        "3.0.0",
        "Removes a node from the nodes table.",
        forget
    ),
    sub!(
        "cluster|getkeysinslot",
        4,
        STALE,
        "3.0.0",
        "Returns the key names in a hash slot.",
        getkeysinslot,
        NONDETERMINISTIC
    ),
    sub!(
        "cluster|getslotmigrations",
        2,
        ADMIN | STALE,
        "9.0.0",
        "Lists the atomic slot migrations this node takes part in.",
        getslotmigrations
    ),
    sub!(
        "cluster|help",
        2,
        LOADING | STALE,
        "5.0.0",
        "Returns helpful text about the different subcommands.",
        help
    ),
    sub!(
        "cluster|info",
        2,
        STALE,
        "3.0.0",
        "Returns information about the state of a node.",
        info,
        NONDETERMINISTIC
    ),
    sub!(
        "cluster|keyslot",
        3,
        STALE,
        "3.0.0",
        "Returns the hash slot for a key.",
        keyslot
    ),
    sub!(
        "cluster|links",
        2,
        STALE,
        "7.0.0",
        "Returns a list of all TCP links to and from peer nodes.",
        links,
        NONDETERMINISTIC
    ),
    sub!(
        "cluster|meet",
        -4,
        ADMIN | STALE | NO_ASYNC_LOADING,
        "3.0.0",
        "Forces a node to handshake with another node.",
        meet
    ),
    // shoal-internal: a replica's CLUSTER FAILOVER asks its primary to hold writes.
    Spec {
        name: "cluster|mfpause",
        arity: 4,
        flags: ADMIN | STALE,
        group: Group::Shoal,
        since: "0.1.0",
        summary: "Holds writes for a replica's manual failover and returns the stream's end offset.",
        handler: Some(mfpause),
        ..Spec::DEFAULT
    },
    sub!(
        "cluster|migrateslots",
        -7,
        ADMIN | STALE,
        "9.0.0",
        "Moves slot ranges to other nodes with atomic slot migration.",
        migrateslots
    ),
    sub!(
        "cluster|myid",
        2,
        STALE,
        "3.0.0",
        "Returns the ID of a node.",
        myid
    ),
    sub!(
        "cluster|myshardid",
        2,
        STALE,
        "7.2.0",
        "Returns the shard ID of a node.",
        myshardid
    ),
    sub!(
        "cluster|nodes",
        2,
        STALE,
        "3.0.0",
        "Returns the cluster configuration for a node.",
        nodes,
        NONDETERMINISTIC
    ),
    sub!(
        "cluster|replicas",
        3,
        ADMIN | STALE,
        "5.0.0",
        "Lists the replica nodes of a master node.",
        replicas,
        NONDETERMINISTIC
    ),
    sub!(
        "cluster|replicate",
        3,
        ADMIN | STALE | NO_ASYNC_LOADING,
        "3.0.0",
        "Configure a node as replica of a master node.",
        replicate
    ),
    sub!(
        "cluster|reset",
        -2,
        ADMIN | STALE | NOSCRIPT,
        "3.0.0",
        "Resets a node.",
        reset
    ),
    sub!(
        "cluster|setslot",
        -4,
        ADMIN | STALE | NO_ASYNC_LOADING,
        "3.0.0",
        "Binds a hash slot to a node.",
        setslot
    ),
    sub!(
        "cluster|shards",
        2,
        STALE,
        "7.0.0",
        "Returns the mapping of cluster slots to shards.",
        shards,
        NONDETERMINISTIC
    ),
    sub!(
        "cluster|slaves",
        3,
        ADMIN | STALE,
        "3.0.0",
        "Lists the replica nodes of a master node.",
        replicas,
        NONDETERMINISTIC
    ),
    sub!(
        "cluster|slots",
        2,
        STALE,
        "3.0.0",
        "Returns the mapping of cluster slots to nodes.",
        slots,
        NONDETERMINISTIC
    ),
    sub!(
        "cluster|syncslots",
        -3,
        ADMIN | STALE,
        "9.0.0",
        "Internal: the target's half of an atomic slot migration.",
        syncslots
    ),
];

const ERR_DISABLED: ReplyError =
    ReplyError::err_static("This instance has cluster support disabled");

/// The node's cluster state, or the error Redis gives when cluster mode is off.
pub(crate) fn cluster<'a>(ctx: &Ctx<'a>) -> Result<&'a ClusterState, ReplyError> {
    ctx.srv.cluster.as_ref().ok_or(ERR_DISABLED)
}

fn asking(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    cluster(ctx)?;
    ctx.client.cluster.asking = true;
    ctx.out.ok();
    Ok(())
}

fn readonly(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.len() > 1 {
        // Also outside cluster mode: a replica's reads with a lag bound.
        let ms = crate::maxlag::parse(args)?;
        ctx.client.cluster.maxlag_ms = Some(ms);
        if ctx.srv.cluster.is_some() {
            ctx.client.cluster.readonly = true;
            ctx.client.handle.readonly.store(true, Relaxed);
        }
        ctx.out.ok();
        return Ok(());
    }
    cluster(ctx)?;
    ctx.client.cluster.readonly = true;
    ctx.client.handle.readonly.store(true, Relaxed);
    ctx.out.ok();
    Ok(())
}

fn readwrite(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    // Drops a lag bound in any mode (outside cluster mode only when there is one).
    if ctx.client.cluster.maxlag_ms.take().is_some() && ctx.srv.cluster.is_none() {
        ctx.out.ok();
        return Ok(());
    }
    cluster(ctx)?;
    ctx.client.cluster.readonly = false;
    ctx.client.handle.readonly.store(false, Relaxed);
    ctx.out.ok();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Slots.

/// A slot argument of ADDSLOTS/DELSLOTS(RANGE), with Redis's error.
fn parse_slot(arg: &[u8]) -> Result<u16, ReplyError> {
    parse_i64(arg)
        .filter(|s| (0..SLOTS as i64).contains(s))
        .map(|s| s as u16)
        .ok_or(ReplyError::err_static("Invalid or out of range slot"))
}

/// The slots of `ADDSLOTS s...` / `DELSLOTS s...`, each named once.
fn parse_slot_list(args: &Args<'_>) -> Result<Vec<SlotRange>, ReplyError> {
    let mut seen = vec![false; SLOTS];
    let mut out = Vec::new();
    for a in args.tail(2).iter() {
        let s = parse_slot(a)?;
        if std::mem::replace(&mut seen[s as usize], true) {
            return Err(err!("Slot {s} specified multiple times"));
        }
        out.push(SlotRange::one(s));
    }
    Ok(out)
}

/// The ranges of `ADDSLOTSRANGE start end ...` (`name` is the subcommand's), none overlapping
/// another.
fn parse_slot_ranges(args: &Args<'_>, name: &str) -> Result<Vec<SlotRange>, ReplyError> {
    if !args.len().is_multiple_of(2) {
        return Err(err!("wrong number of arguments for '{name}' command"));
    }
    let mut seen = vec![false; SLOTS];
    let mut out = Vec::new();
    for i in (2..args.len()).step_by(2) {
        let (start, end) = (parse_slot(args.get(i))?, parse_slot(args.get(i + 1))?);
        if start > end {
            return Err(err!(
                "start slot number {start} is greater than end slot number {end}"
            ));
        }
        for s in start..=end {
            if std::mem::replace(&mut seen[s as usize], true) {
                return Err(err!("Slot {s} specified multiple times"));
            }
        }
        out.push(SlotRange { start, end });
    }
    Ok(out)
}

/// The reply for a refused change: the change's own text, which is Redis's wording.
pub fn change_error(e: &ChangeError) -> ReplyError {
    err!("{e}")
}

/// Checks `change` against the current configuration and hands it to the I/O layer, which
/// proposes it and replies once it is committed.
fn propose(ctx: &mut Ctx<'_>, change: Change) -> CmdResult {
    let cl = cluster(ctx)?;
    cl.precheck(&change).map_err(|e| change_error(&e))?;
    ctx.client.repl.action = Some(crate::state::Action::ClusterChange(vec![change]));
    Ok(())
}

fn assign(ctx: &mut Ctx<'_>, ranges: Vec<SlotRange>) -> CmdResult {
    let cl = cluster(ctx)?;
    let me = cl.me();
    if cl.config().node(&me).is_some_and(|n| !n.is_primary()) {
        return Err(ReplyError::err_static(
            "Please use SETSLOT only with masters.",
        ));
    }
    propose(ctx, Change::AssignSlots { node: me, ranges })
}

fn unassign(ctx: &mut Ctx<'_>, ranges: Vec<SlotRange>) -> CmdResult {
    propose(ctx, Change::UnassignSlots { ranges })
}

/// CLUSTER FLUSHSLOTS: gives up every slot this node owns (a configuration change through the
/// group, as DELSLOTS of them all), only while it holds no key, as Redis requires.
fn flushslots(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    if ctx.srv.ks.db_size(0).0 != 0 {
        return Err(ReplyError::err_static(
            "DB must be empty to perform CLUSTER FLUSHSLOTS.",
        ));
    }
    let ranges = cl.config().ranges_of(&cl.me());
    if ranges.is_empty() {
        ctx.out.ok();
        return Ok(());
    }
    unassign(ctx, ranges)
}

/// CLUSTER BUMPEPOCH: gives this node the newest config epoch, a change through the group (as
/// after a slot move it cannot confirm), unless its epoch is already the greatest and not 0; the
/// reply is Redis's status, `BUMPED <epoch>` (written once the change is committed) or
/// `STILL <epoch>`.
fn bumpepoch(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    let me = cl.me();
    let config = cl.config();
    let mine = config.node(&me).map_or(0, |n| n.config_epoch);
    let greatest = config
        .nodes()
        .iter()
        .map(|n| n.config_epoch)
        .max()
        .unwrap_or(0)
        .max(config.epoch());
    if mine != 0 && mine == greatest {
        ctx.out.simple(&format!("STILL {mine}"));
        return Ok(());
    }
    let change = Change::BumpEpoch { node: me };
    cl.precheck(&change).map_err(|e| change_error(&e))?;
    ctx.client.repl.action = Some(crate::state::Action::ClusterBumpEpoch(change));
    Ok(())
}

/// CLUSTER SAVECONFIG: the configuration is the configuration group's, whose log is durable at
/// every commit; this writes its snapshot (the whole configuration in one file) now, and the
/// reply waits for it.
fn saveconfig(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    cluster(ctx)?;
    ctx.client.repl.action = Some(crate::state::Action::ClusterSaveConfig);
    Ok(())
}

/// CLUSTER SET-CONFIG-EPOCH: a fresh node alone in its configuration, with config epoch 0, takes
/// the given one (through its group, formed for it if need be), as `redis-cli --cluster create`
/// asks of each node; Redis's errors otherwise.
fn set_config_epoch(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    let epoch = parse_i64(args.get(2)).ok_or(ERR_NOT_INTEGER)?;
    let Ok(epoch) = u64::try_from(epoch) else {
        return Err(err!("Invalid config epoch specified: {epoch}"));
    };
    propose(
        ctx,
        Change::SetConfigEpoch {
            node: cl.me(),
            epoch,
        },
    )
}

fn addslots(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    cluster(ctx)?;
    let ranges = parse_slot_list(args)?;
    assign(ctx, ranges)
}

fn addslotsrange(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    cluster(ctx)?;
    let ranges = parse_slot_ranges(args, "cluster|addslotsrange")?;
    assign(ctx, ranges)
}

fn delslots(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    cluster(ctx)?;
    let ranges = parse_slot_list(args)?;
    unassign(ctx, ranges)
}

fn delslotsrange(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    cluster(ctx)?;
    let ranges = parse_slot_ranges(args, "cluster|delslotsrange")?;
    unassign(ctx, ranges)
}

/// A slot argument of COUNTKEYSINSLOT/GETKEYSINSLOT.
fn query_slot(arg: &[u8], invalid: ReplyError) -> Result<u16, ReplyError> {
    let s = parse_i64(arg).ok_or(ERR_NOT_INTEGER)?;
    if !(0..SLOTS as i64).contains(&s) {
        return Err(invalid);
    }
    Ok(s as u16)
}

fn countkeysinslot(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    cluster(ctx)?;
    let slot = query_slot(args.get(2), ReplyError::err_static("Invalid slot"))?;
    let ks = &ctx.srv.ks;
    let n = ks.lock(ks.shard_of(slot)).slot_len(0, slot);
    ctx.out.int(n as i64);
    Ok(())
}

fn getkeysinslot(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    cluster(ctx)?;
    let invalid = ReplyError::err_static("Invalid slot or number of keys");
    let slot = query_slot(args.get(2), invalid.clone())?;
    let count = parse_i64(args.get(3)).ok_or(ERR_NOT_INTEGER)?;
    if count < 0 {
        return Err(invalid);
    }
    let ks = &ctx.srv.ks;
    let mut found: Vec<Vec<u8>> = Vec::new();
    {
        let shard = ks.lock(ks.shard_of(slot));
        // Expired keys still in the table are listed, as Redis lists them until they go.
        shard.for_each_in_slot(0, slot, 0, |e| {
            if (found.len() as i64) < count {
                found.push(e.key().to_vec());
            }
        });
    }
    ctx.out.array(found.len());
    for k in &found {
        ctx.out.bulk(k);
    }
    Ok(())
}

fn meet(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    cluster(ctx)?;
    if args.len() > 5 {
        return Err(ERR_SYNTAX);
    }
    let ip = String::from_utf8_lossy(args.get(2)).into_owned();
    let port = parse_i64(args.get(3))
        .filter(|p| (1..=65535).contains(p))
        .ok_or_else(|| {
            err!(
                "Invalid base port specified: {}",
                String::from_utf8_lossy(args.get(3))
            )
        })? as u16;
    if args.len() == 5 {
        // The bus port is learnt from the node itself; a given one must at least be a port.
        parse_i64(args.get(4))
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| {
                err!(
                    "Invalid bus port specified: {}",
                    String::from_utf8_lossy(args.get(4))
                )
            })?;
    }
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(err!("Invalid node address specified: {ip}:{port}"));
    }
    ctx.client.repl.action = Some(crate::state::Action::ClusterMeet { ip, port });
    Ok(())
}

/// `CLUSTER SETSLOT slot MIGRATING|IMPORTING node | STABLE | NODE node`, as `redis-cli --cluster`
/// drives a slot move. The two sides of a move are one entry of the configuration (the slot and
/// its target), so MIGRATING on the owner and IMPORTING on the target record the same thing (the
/// second changes nothing), and NODE, sent to every node after the keys moved, is applied once.
fn setslot(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    let slot = parse_slot(args.get(2))?;
    let range = vec![SlotRange::one(slot)];
    let cfg = cl.config();
    let me = cl.me();
    let bad = || {
        ReplyError::err_static(
            "Invalid CLUSTER SETSLOT action or number of arguments. Try CLUSTER HELP",
        )
    };
    let action = args.get(3);
    let node = |ctx_args: &Args<'_>| -> Result<Node, ReplyError> {
        let id = String::from_utf8_lossy(ctx_args.get(4)).into_owned();
        cfg.node(&id)
            .cloned()
            .ok_or_else(|| err!("I don't know about node {id}"))
    };
    let owner = cfg.owner(slot).map(|n| n.id.clone());
    let moving_to = cfg.migrating_to(slot).map(|n| n.id.clone());
    let changes = if action.eq_ignore_ascii_case(b"MIGRATING") && args.len() == 5 {
        if owner.as_deref() != Some(me.as_str()) {
            return Err(err!("I'm not the owner of hash slot {slot}"));
        }
        let target = node(args)?;
        if !target.is_primary() {
            return Err(ReplyError::err_static("Target node is not a master"));
        }
        if moving_to.as_deref() == Some(target.id.as_str()) {
            vec![]
        } else {
            vec![Change::BeginMigration {
                to: target.id,
                ranges: range,
            }]
        }
    } else if action.eq_ignore_ascii_case(b"IMPORTING") && args.len() == 5 {
        if owner.as_deref() == Some(me.as_str()) {
            return Err(err!("I'm already the owner of hash slot {slot}"));
        }
        let source = node(args)?;
        if owner.as_deref() != Some(source.id.as_str()) {
            return Err(err!("Slot {slot} is not owned by {}", source.id));
        }
        if moving_to.as_deref() == Some(me.as_str()) {
            vec![]
        } else {
            vec![Change::BeginMigration {
                to: me,
                ranges: range,
            }]
        }
    } else if action.eq_ignore_ascii_case(b"STABLE") && args.len() == 4 {
        match moving_to {
            Some(_) => vec![Change::CancelMigration { ranges: range }],
            None => vec![],
        }
    } else if action.eq_ignore_ascii_case(b"NODE") && args.len() == 5 {
        let target = node(args)?;
        if !target.is_primary() {
            return Err(ReplyError::err_static("Target node is not a master"));
        }
        if owner.as_deref() == Some(target.id.as_str()) && moving_to.is_none() {
            vec![]
        } else {
            // One change whatever this node's view says: applied where the group orders it, it
            // finishes the move, or does nothing if another node's SETSLOT NODE already did.
            vec![Change::SetOwner {
                node: target.id,
                ranges: range,
            }]
        }
    } else {
        return Err(bad());
    };
    if changes.is_empty() {
        ctx.out.ok();
        return Ok(());
    }
    cl.precheck(&changes[0]).map_err(|e| change_error(&e))?;
    ctx.client.repl.action = Some(crate::state::Action::ClusterChange(changes));
    Ok(())
}

fn forget(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    let id = String::from_utf8_lossy(args.get(2)).into_owned();
    let cfg = cl.config();
    if cfg.node(&id).is_none() {
        if cl.recently_forgotten(&id) {
            // Removed from the configuration (by a FORGET sent to another node): forgotten
            // here; the node still makes sure it left the configuration group.
            ctx.client.repl.action = Some(crate::state::Action::ClusterForget(id));
            return Ok(());
        }
        return Err(err!("Unknown node {id}"));
    }
    if id == cl.me() {
        return Err(ReplyError::err_static(
            "I tried hard but I can't forget myself...",
        ));
    }
    if cfg.node(&cl.me()).and_then(|n| n.replica_of.as_deref()) == Some(id.as_str()) {
        return Err(ReplyError::err_static("Can't forget my master!"));
    }
    cl.precheck(&Change::RemoveNode(id.clone()))
        .map_err(|e| change_error(&e))?;
    ctx.client.repl.action = Some(crate::state::Action::ClusterForget(id));
    Ok(())
}

fn replicate(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    let primary = String::from_utf8_lossy(args.get(2)).into_owned();
    let cfg = cl.config();
    let Some(p) = cfg.node(&primary) else {
        return Err(err!("Unknown node {primary}"));
    };
    if !p.is_primary() {
        return Err(ReplyError::err_static(
            "I can only replicate a master, not a replica.",
        ));
    }
    let me = cl.me();
    if ctx.srv.ks.db_size(0).0 > 0 && cfg.node(&me).is_none_or(Node::is_primary) {
        return Err(ReplyError::err_static(
            "To set a master the node must be empty and without assigned slots.",
        ));
    }
    propose(ctx, Change::Replicate { node: me, primary })
}

/// `CLUSTER FAILOVER [FORCE|TAKEOVER]`, sent to a replica: checked here with Redis's errors,
/// answered `+OK` at once (as Redis does), and carried out in the background
/// (`Action::ClusterFailover`, see `shoal_cluster::failover`): coordinated with the primary, or
/// with FORCE (and TAKEOVER, which is the same here: the configuration group orders the change, so
/// there is no election to skip) without it.
fn failover(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    let force = match args.len() {
        2 => false,
        3 if args.is(2, "FORCE") || args.is(2, "TAKEOVER") => true,
        3 => return Err(ERR_SYNTAX),
        _ => {
            return Err(err!(
                "unknown subcommand or wrong number of arguments for '{}'. Try CLUSTER HELP.",
                String::from_utf8_lossy(args.get(1))
            ));
        }
    };
    let cfg = cl.config();
    let me = cl.me();
    let primary = match cfg.node(&me).and_then(|n| n.replica_of.as_deref()) {
        None => {
            return Err(ReplyError::err_static(
                "You should send CLUSTER FAILOVER to a replica",
            ));
        }
        Some(p) => cfg.node(p),
    };
    if primary.is_none() {
        return Err(ReplyError::err_static(
            "I'm a replica but my master is unknown to me",
        ));
    }
    let linked =
        ctx.srv.repl.is_replica() && ctx.srv.repl.link_state() == crate::repl::LinkState::Connected;
    if !force && !linked {
        return Err(ReplyError::err_static(
            "Master is down or failed, please use CLUSTER FAILOVER FORCE",
        ));
    }
    ctx.client.repl.action = Some(crate::state::Action::ClusterFailover { force });
    ctx.out.ok();
    Ok(())
}

/// `CLUSTER MFPAUSE <replica-id> <ms>` (shoal-internal), sent by a replica's CLUSTER FAILOVER to
/// its primary: hold writes for `ms` milliseconds from now (0 resumes them; each call replaces
/// the pause), and answer the end offset of this node's stream, which the replica waits to have
/// applied. Writes wait in their connections (they get no error); once this node sees the
/// configuration that makes it a replica, they resume and are redirected.
fn mfpause(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    use shoal_cluster::failover::MANUAL_FAILOVER_PAUSE_MS;
    let cl = cluster(ctx)?;
    let replica = String::from_utf8_lossy(args.get(2)).into_owned();
    let ms = parse_i64(args.get(3))
        .filter(|ms| (0..=MANUAL_FAILOVER_PAUSE_MS as i64).contains(ms))
        .ok_or_else(|| err!("Invalid pause time, from 0 to {MANUAL_FAILOVER_PAUSE_MS} ms"))?
        as u64;
    let cfg = cl.config();
    let me = cl.me();
    if cfg.node(&me).is_none_or(|n| !n.is_primary()) {
        return Err(ReplyError::err_static("I'm not a master"));
    }
    if cfg.node(&replica).and_then(|n| n.replica_of.as_deref()) != Some(me.as_str()) {
        return Err(err!("Node {replica} is not my replica"));
    }
    let until = if ms == 0 { 0 } else { ctx.now_ms + ms };
    ctx.srv
        .repl
        .failover
        .writes_paused_until_ms
        .store(until, std::sync::atomic::Ordering::Relaxed);
    // Read after the pause is in place: every write that does not wait for it is already here
    // or under way (the replica asks twice to cover those).
    ctx.out.int(ctx.srv.repl.offset() as i64);
    Ok(())
}

fn keyslot(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    cluster(ctx)?;
    ctx.out.int(key_slot(args.get(2)) as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Nodes and the slot map.

fn myid(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let me = cluster(ctx)?.me();
    ctx.out.bulk(me.as_bytes());
    Ok(())
}

/// A shard is a primary and its replicas; its id is the primary's node id.
fn shard_id(cfg: &Config, id: &str) -> String {
    cfg.node(id)
        .and_then(|n| n.replica_of.clone())
        .unwrap_or_else(|| id.to_string())
}

fn myshardid(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    let id = shard_id(&cl.config(), &cl.me());
    ctx.out.bulk(id.as_bytes());
    Ok(())
}

fn info(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    let (cfg, me) = (cl.config(), cl.me());
    let assigned = cfg.slots_assigned();
    let my_epoch = cfg
        .node(&me)
        .map(|n| match &n.replica_of {
            Some(p) => cfg.node(p).map_or(0, |p| p.config_epoch),
            None => n.config_epoch,
        })
        .unwrap_or(0);
    let text = format!(
        "cluster_state:{}\r\ncluster_slots_assigned:{assigned}\r\ncluster_slots_ok:{assigned}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:{}\r\ncluster_size:{}\r\ncluster_current_epoch:{}\r\ncluster_my_epoch:{my_epoch}\r\ncluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n{}",
        // A primary cut off from the configuration group (no lease) sees the cluster down, as
        // a Redis node that lost the majority does.
        if assigned == SLOTS && cl.lease.valid((ctx.srv.clock.mono_ms)()) {
            "ok"
        } else {
            "fail"
        },
        cfg.nodes().len(),
        cfg.size(),
        // Redis's current epoch: the highest config epoch in the cluster.
        cfg.nodes()
            .iter()
            .map(|n| n.config_epoch)
            .max()
            .unwrap_or(0),
        lease_lines(cl, &cfg, &me, (ctx.srv.clock.mono_ms)()),
    );
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

/// shoal's lines of `CLUSTER INFO` and `INFO cluster`: the lease (`held`, `lapsed`, or `none`
/// on a replica), failovers applied in the cluster, and this node's group's in-sync set.
pub fn lease_lines(cl: &ClusterState, cfg: &Config, me: &str, now_ms: u64) -> String {
    let l = &cl.lease;
    let state = if !l.enforced.load(Relaxed) {
        "none"
    } else if l.valid(now_ms) {
        "held"
    } else {
        "lapsed"
    };
    let primary = shard_id(cfg, me);
    let in_sync: Vec<&str> = cfg.in_sync_of(&primary).map(|n| n.id.as_str()).collect();
    let last = l.last_refusal.lock().expect("lease refusal lock").clone();
    format!(
        "shoal_lease_state:{state}\r\nshoal_lease_remaining_ms:{}\r\nshoal_lease_grants:{}\r\nshoal_lease_last_refusal:{}\r\nshoal_fenced_requests:{}\r\nshoal_failovers:{}\r\nshoal_promotions_proposed:{}\r\nshoal_in_sync_changes:{}\r\nshoal_in_sync:{}\r\n",
        l.remaining_ms(now_ms),
        l.grants.load(Relaxed),
        last.replace(['\r', '\n'], " "),
        l.refusals.load(Relaxed),
        cfg.failovers(),
        l.promotions_proposed.load(Relaxed),
        l.in_sync_changes.load(Relaxed),
        in_sync.join(","),
    )
}

/// One line of `CLUSTER NODES` (without the newline).
fn node_line(cfg: &Config, n: &Node, me: &str) -> String {
    let mut flags = String::new();
    if n.id == me {
        flags.push_str("myself,");
    }
    flags.push_str(if n.is_primary() { "master" } else { "slave" });
    let mut line = format!(
        "{} {}:{}@{} {} {} 0 0 {} connected",
        n.id,
        n.ip,
        n.port,
        n.bus_port,
        flags,
        n.replica_of.as_deref().unwrap_or("-"),
        match &n.replica_of {
            Some(p) => cfg.node(p).map_or(0, |p| p.config_epoch),
            None => n.config_epoch,
        },
    );
    for r in cfg.ranges_of(&n.id) {
        if r.start == r.end {
            line.push_str(&format!(" {}", r.start));
        } else {
            line.push_str(&format!(" {}-{}", r.start, r.end));
        }
    }
    // Moving slots, in this node's own line: `[slot->-target]` on the owner, `[slot-<-owner]` on
    // the target.
    if n.id == me {
        for slot in 0..SLOTS as u16 {
            let (Some(owner), Some(target)) = (cfg.owner(slot), cfg.migrating_to(slot)) else {
                continue;
            };
            if owner.id == me {
                line.push_str(&format!(" [{slot}->-{}]", target.id));
            } else if target.id == me {
                line.push_str(&format!(" [{slot}-<-{}]", owner.id));
            }
        }
    }
    line
}

fn nodes(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    let (cfg, me) = (cl.config(), cl.me());
    let mut text = String::new();
    for n in cfg.nodes() {
        text.push_str(&node_line(&cfg, n, &me));
        text.push('\n');
    }
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

fn replicas(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    let (cfg, me) = (cl.config(), cl.me());
    let id = String::from_utf8_lossy(args.get(2)).into_owned();
    let Some(n) = cfg.node(&id) else {
        return Err(err!("Unknown node {id}"));
    };
    if !n.is_primary() {
        return Err(ReplyError::err_static("The specified node is not a master"));
    }
    let lines: Vec<String> = cfg
        .replicas_of(&id)
        .map(|r| node_line(&cfg, r, &me))
        .collect();
    ctx.out.array(lines.len());
    for l in &lines {
        ctx.out.bulk(l.as_bytes());
    }
    Ok(())
}

/// Failures are decided by the configuration group, not by reports gossiped between nodes: a
/// known node has none.
fn count_failure_reports(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    let id = String::from_utf8_lossy(args.get(2)).into_owned();
    if cl.config().node(&id).is_none() {
        return Err(err!("Unknown node {id}"));
    }
    ctx.out.int(0);
    Ok(())
}

/// Links to the other nodes over the cluster bus; a node alone has none.
fn links(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    cluster(ctx)?;
    ctx.out.array(0);
    Ok(())
}

/// One node entry of `CLUSTER SLOTS`: ip, port, id, and an empty map of extra endpoints.
fn slot_node(out: &mut ReplyWriter<'_>, n: &Node) {
    out.array(4);
    out.bulk(n.ip.as_bytes());
    out.int(n.port as i64);
    out.bulk(n.id.as_bytes());
    out.map(0);
}

fn slots(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let cfg = cluster(ctx)?.config();
    // Ranges of one owner, in slot order.
    let mut ranges: Vec<(SlotRange, &Node)> = Vec::new();
    for slot in 0..SLOTS as u16 {
        let Some(owner) = cfg.owner(slot) else {
            continue;
        };
        match ranges.last_mut() {
            Some((r, n)) if n.id == owner.id && r.end + 1 == slot => r.end = slot,
            _ => ranges.push((SlotRange::one(slot), owner)),
        }
    }
    ctx.out.array(ranges.len());
    for (r, owner) in &ranges {
        let reps: Vec<&Node> = cfg.replicas_of(&owner.id).collect();
        ctx.out.array(3 + reps.len());
        ctx.out.int(r.start as i64);
        ctx.out.int(r.end as i64);
        slot_node(&mut ctx.out, owner);
        for rep in reps {
            slot_node(&mut ctx.out, rep);
        }
    }
    Ok(())
}

fn shards(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    let (cfg, me) = (cl.config(), cl.me());
    let offset = ctx.srv.repl.offset();
    let primaries: Vec<&Node> = cfg.nodes().iter().filter(|n| n.is_primary()).collect();
    ctx.out.array(primaries.len());
    for p in primaries {
        ctx.out.map(2);
        ctx.out.bulk(b"slots");
        let ranges = cfg.ranges_of(&p.id);
        ctx.out.array(2 * ranges.len());
        for r in &ranges {
            ctx.out.int(r.start as i64);
            ctx.out.int(r.end as i64);
        }
        ctx.out.bulk(b"nodes");
        let members: Vec<&Node> = std::iter::once(p).chain(cfg.replicas_of(&p.id)).collect();
        ctx.out.array(members.len());
        for n in members {
            ctx.out.map(7);
            ctx.out.bulk(b"id");
            ctx.out.bulk(n.id.as_bytes());
            ctx.out.bulk(b"port");
            ctx.out.int(n.port as i64);
            ctx.out.bulk(b"ip");
            ctx.out.bulk(n.ip.as_bytes());
            ctx.out.bulk(b"endpoint");
            ctx.out.bulk(n.ip.as_bytes());
            ctx.out.bulk(b"role");
            ctx.out.bulk(if n.is_primary() {
                b"master"
            } else {
                b"replica"
            });
            ctx.out.bulk(b"replication-offset");
            // Only this node's own offset is known here.
            ctx.out.int(if n.id == me { offset as i64 } else { 0 });
            ctx.out.bulk(b"health");
            ctx.out.bulk(b"online");
        }
    }
    Ok(())
}

fn reset(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    let hard = match args.len() {
        2 => false,
        3 if args.is(2, "HARD") => true,
        3 if args.is(2, "SOFT") => false,
        _ => return Err(ERR_SYNTAX),
    };
    // A node its cluster removed is no longer in its configuration: its role is its own.
    let primary = match cl.config().node(&cl.me()) {
        Some(n) => n.is_primary(),
        None => !ctx.srv.repl.is_replica(),
    };
    if primary && ctx.srv.ks.db_size(0).0 > 0 {
        return Err(ReplyError::err_static(
            "CLUSTER RESET can't be called with master nodes containing keys",
        ));
    }
    ctx.client.repl.action = Some(crate::state::Action::ClusterReset { hard });
    Ok(())
}

const HELP: &[&str] = &[
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ADDSLOTS <slot> [<slot> ...]",
    "    Assign slots to current node.",
    "ADDSLOTSRANGE <start slot> <end slot> [<start slot> <end slot> ...]",
    "    Assign slots which are between <start-slot> and <end-slot> to current node.",
    "COUNT-FAILURE-REPORTS <node-id>",
    "    Return number of failure reports for <node-id>.",
    "COUNTKEYSINSLOT <slot>",
    "    Return the number of keys in <slot>.",
    "DELSLOTS <slot> [<slot> ...]",
    "    Delete slots information from current node.",
    "DELSLOTSRANGE <start slot> <end slot> [<start slot> <end slot> ...]",
    "    Delete slots information which are between <start-slot> and <end-slot> from current node.",
    "FAILOVER [FORCE|TAKEOVER]",
    "    Promote current replica node to being a master.",
    "FORGET <node-id>",
    "    Remove a node from the cluster.",
    "GETKEYSINSLOT <slot> <count>",
    "    Return key names stored by current node in a slot.",
    "FLUSHSLOTS",
    "    Delete current node own slots information.",
    "INFO",
    "    Return information about the cluster.",
    "KEYSLOT <key>",
    "    Return the hash slot for <key>.",
    "MEET <ip> <port> [<bus-port>]",
    "    Connect nodes into a working cluster.",
    "LINKS",
    "    Return information about all network links between this node and its peers.",
    "    Output format is an array where each array element is a map containing attributes of a link",
    "MYID",
    "    Return the node id.",
    "MYSHARDID",
    "    Return the node's shard id.",
    "NODES",
    "    Return cluster configuration seen by node. Output format:",
    "    <id> <ip:port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
    "REPLICATE <node-id>",
    "    Configure current node as replica to <node-id>.",
    "REPLICAS <node-id>",
    "    Return <node-id> replicas.",
    "RESET [HARD|SOFT]",
    "    Reset current node (default: soft).",
    "SETSLOT <slot> (IMPORTING <node-id>|MIGRATING <node-id>|STABLE|NODE <node-id>)",
    "    Set slot state.",
    "SHARDS",
    "    Return information about slot range mappings and the nodes associated with them.",
    "SLOTS",
    "    Return information about slots range mappings. Each range is made of:",
    "    start, end, master and replicas IP addresses, ports and ids",
    "HELP",
    "    Prints this help.",
];

fn help(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    cluster(ctx)?;
    ctx.out.array(HELP.len());
    for line in HELP {
        ctx.out.simple(line);
    }
    Ok(())
}

//! The Raft group that keeps the cluster configuration (cluster mode): an openraft 0.9 group of 3
//! or 5 voters (the other nodes learners) whose state machine is exactly `shoal_cluster::Config`,
//! changed only by `Config::apply` of committed `Change`s. Membership changes go through
//! openraft's joint consensus.
//!
//! [`ConfigGroup`] is what the rest of the server holds: start it on a directory and a bus
//! address, initialise it once on one node, add learners and change the voters, propose changes
//! (forwarded to the leader when this node is not it), watch the committed configuration, read
//! metrics for INFO, shut it down. Underneath, [`open_storage`] and [`start_raft`] are its two
//! steps of starting, which the simulator (`tests/raft_sim.rs`) runs over a network of its own.
//! Inside: `log_store.rs` (the log on disk), `state_machine.rs` (the configuration and its
//! snapshots), `network.rs` (the cluster bus), `record.rs` (on-disk framing). See
//! ARCHITECTURE.md, "Cluster configuration on Raft".

pub mod bus_auth;
pub mod log_store;
pub mod network;
pub mod record;
pub mod state_machine;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::network::RaftNetworkFactory;
use openraft::storage::RaftStateMachine;
use openraft::{Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use shoal_cluster::{Change, Config};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use log_store::{LogStore, blocking};
use network::{BusClient, CallError, FORWARD_SLACK_MS, Network, spawn_bus};
use state_machine::StateMachine;

openraft::declare_raft_types!(
    /// The types of the configuration group: Raft ids are `u64`, a member is known by its bus
    /// address, entries carry `Change`s and answer with the `ChangeError` text of a refusal.
    pub TypeConfig:
        D = Change,
        R = Response,
        NodeId = u64,
        Node = BusNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = state_machine::SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
);

/// What applying a committed change answered: `Err` holds the `ChangeError` text of a refused
/// change (which was committed as a no-op).
pub type Response = Result<(), String>;

/// A member of the group as Raft knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusNode {
    /// `host:port` of its cluster bus.
    pub addr: String,
    /// Its cluster node id (40 hex characters).
    pub node_id: String,
}

impl std::fmt::Display for BusNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.node_id, self.addr)
    }
}

/// How long [`ConfigGroup::propose`] waits for its change to commit.
pub const PROPOSE_TIMEOUT_MS: u64 = 5_000;
/// The longest wait a forwarded proposal may ask the leader for.
pub const PROPOSE_TIMEOUT_MAX_MS: u64 = 60_000;
/// How long a membership change (adding a learner and waiting for it to catch up, changing the
/// voters through a joint configuration) may take.
pub const MEMBERSHIP_TIMEOUT_MS: u64 = 30_000;
/// The largest proposal, in bytes of its JSON (an assignment of every slot one by one takes a
/// third of it).
pub const PROPOSAL_BYTES_MAX: usize = 1024 * 1024;
/// A snapshot is taken after this many entries were applied since the last one...
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 500;
/// ...and the log then purged except for this many entries (so lagging followers catch up from
/// the log, not a snapshot). With the two, the log held in memory stays under ~600 entries.
pub const LOG_KEPT_AFTER_SNAPSHOT: u64 = 100;
/// Entries per append message (each at most [`PROPOSAL_BYTES_MAX`]).
pub const APPEND_ENTRIES_MAX: u64 = 16;
/// Bytes of snapshot per install-snapshot message...
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// ...and how long one such message may take.
pub const SNAPSHOT_CHUNK_TIMEOUT_MS: u64 = 2_000;
/// How long [`ConfigGroup::shutdown`] waits for the bus listener to stop.
pub const SHUTDOWN_WAIT_MS: u64 = 5_000;
/// Bytes of the identity file (a Raft id and a node id in JSON).
const IDENTITY_BYTES_MAX: usize = 4 * 1024;

/// Why an operation on the group did not happen (or may not have).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Error {
    /// This node is not the leader; the leader is `leader`, its bus at `addr`.
    NotLeader { leader: u64, addr: String },
    /// No leader is known: an election is running, or too few voters are up.
    NoLeader,
    /// Not done in time. A proposal may still commit later (it is in the leader's log).
    Timeout { ms: u64 },
    /// The proposal is over [`PROPOSAL_BYTES_MAX`].
    TooLarge { bytes: usize },
    /// The leader could not be reached to forward a proposal to it.
    Unreachable(String),
    /// Raft refused the request (initialised already, a membership change running, ...).
    Refused(String),
    /// The Raft node stopped (shut down, or stopped by a storage error).
    Stopped(String),
    /// Disk or socket trouble while starting.
    Io(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotLeader { leader, addr } => {
                write!(f, "not leader, leader is {leader} at {addr}")
            }
            Error::NoLeader => write!(f, "no leader"),
            Error::Timeout { ms } => write!(f, "not committed within {ms} ms"),
            Error::TooLarge { bytes } => {
                write!(
                    f,
                    "proposal of {bytes} bytes (at most {PROPOSAL_BYTES_MAX})"
                )
            }
            Error::Unreachable(e) => write!(f, "leader unreachable: {e}"),
            Error::Refused(e) => write!(f, "refused: {e}"),
            Error::Stopped(e) => write!(f, "raft stopped: {e}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

/// A proposal forwarded to the leader over the bus.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forwarded {
    pub change: Change,
    pub timeout_ms: u64,
}

/// Who owns a group directory: a directory is never reused under another identity.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    raft_id: u64,
    node_id: String,
}

/// What INFO will show about the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetrics {
    pub raft_id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: &'static str,
    pub term: u64,
    pub leader: Option<u64>,
    /// The last index known committed (as saved by this node).
    pub commit_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub last_log_index: Option<u64>,
    /// The last index in this node's snapshot, and the last index purged from its log.
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

/// The openraft settings shoal runs with, which a caller may adjust (tests shorten the timers).
pub fn default_raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "shoal".into(),
        heartbeat_interval: 250,
        election_timeout_min: 1_000,
        election_timeout_max: 2_000,
        max_payload_entries: APPEND_ENTRIES_MAX,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
        max_in_snapshot_log_to_keep: LOG_KEPT_AFTER_SNAPSHOT,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT_MS,
        ..Default::default()
    }
}

/// The openraft settings for a cluster node timeout (`shoal_cluster::lease::Timing`): Raft
/// heartbeats as often as lease beats; elections after a fifth to three tenths of the node
/// timeout. openraft's followers also honour a leader lease of `election_timeout_max` after the
/// last heartbeat before they vote, so a dead leader is replaced after 0.5 to 0.6 node timeout
/// (five missed heartbeats at the least: a loaded machine does not start elections by mistake).
pub fn raft_config_for(timing: &shoal_cluster::lease::Timing) -> openraft::Config {
    let nt = timing.node_timeout_ms;
    openraft::Config {
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: (nt / 5).max(timing.heartbeat_ms * 2),
        election_timeout_max: (nt * 3 / 10).max(timing.heartbeat_ms * 3),
        ..default_raft_config()
    }
}

/// CLUSTER SAVECONFIG: snapshot builds it triggers, at most, each waited for this long.
pub const SAVE_CONFIG_ATTEMPTS: usize = 5;
pub const SAVE_CONFIG_WAIT: Duration = Duration::from_secs(1);

/// This node's Raft, where the bus and the group handle reach it. A node that leaves its group
/// of one for another group gets a fresh Raft here ([`ConfigGroup::restart_fresh`]); everything
/// else reads the cell at each use and so follows.
#[derive(Clone)]
pub struct RaftCell(Arc<std::sync::RwLock<Live>>);

/// The Raft a [`RaftCell`] holds, with its log's committed index.
#[derive(Clone)]
struct Live {
    raft: Raft<TypeConfig>,
    /// The committed index + 1 (0: none), kept by the log store.
    commit_index: Arc<AtomicU64>,
}

impl RaftCell {
    fn new(live: Live) -> RaftCell {
        RaftCell(Arc::new(std::sync::RwLock::new(live)))
    }

    fn live(&self) -> Live {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The Raft running now.
    pub fn get(&self) -> Raft<TypeConfig> {
        self.live().raft
    }

    fn replace(&self, live: Live) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = live;
    }
}

/// One node's member of the configuration group.
pub struct ConfigGroup {
    raft: RaftCell,
    /// Where the group's files live (`dir/raft/`), and how Raft runs: what a fresh start needs.
    dir: std::path::PathBuf,
    raft_config: openraft::Config,
    /// The sender of `committed`, handed to each state machine this node runs.
    publish: Arc<watch::Sender<Arc<Config>>>,
    /// Beats heard and leases granted (`crate::lease`), served on the bus.
    desk: Arc<crate::lease::LeaseDesk>,
    raft_id: u64,
    node: BusNode,
    bus_addr: SocketAddr,
    committed: watch::Receiver<Arc<Config>>,
    stop_bus: watch::Sender<bool>,
    bus_task: Mutex<Option<JoinHandle<()>>>,
}

/// The (Raft id, cluster node id) a group directory under `dir` belongs to, if it holds one: a
/// restarted node takes its identity back from there. Blocking.
pub fn stored_identity(dir: &Path) -> std::io::Result<Option<(u64, String)>> {
    let path = dir.join("raft").join("identity");
    match record::read_single(&path, IDENTITY_BYTES_MAX)? {
        Some(bytes) => {
            let id: Identity = serde_json::from_slice(&bytes)
                .map_err(|e| record::corrupt(&path, &e.to_string()))?;
            Ok(Some((id.raft_id, id.node_id)))
        }
        None => Ok(None),
    }
}

/// Opens the log and the state machine under `dir/raft`, refusing a directory that belongs to
/// another identity. Blocking.
fn open_dir(
    dir: &Path,
    id: Identity,
    committed: Arc<watch::Sender<Arc<Config>>>,
) -> std::io::Result<(LogStore, StateMachine)> {
    let dir = dir.join("raft");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("identity");
    match record::read_single(&path, IDENTITY_BYTES_MAX)? {
        Some(bytes) => {
            let found: Identity = serde_json::from_slice(&bytes)
                .map_err(|e| record::corrupt(&path, &e.to_string()))?;
            if found != id {
                return Err(std::io::Error::other(format!(
                    "{} belongs to raft node {} ({}), not {} ({})",
                    dir.display(),
                    found.raft_id,
                    found.node_id,
                    id.raft_id,
                    id.node_id
                )));
            }
        }
        None => {
            let json = serde_json::to_vec(&id).map_err(std::io::Error::other)?;
            let mut bytes = Vec::new();
            record::encode(&mut bytes, &json);
            record::replace_file(&dir, "identity", &bytes)?;
        }
    }
    Ok((LogStore::open(&dir)?, StateMachine::open(&dir, committed)?))
}

/// A member's storage, opened from its directory, before Raft runs on it.
pub struct Storage {
    pub log: LogStore,
    pub sm: StateMachine,
    /// The configuration `sm` holds, published after every applied batch that changed it.
    pub committed: watch::Receiver<Arc<Config>>,
}

/// Opens (or creates) the log and snapshot of Raft node `raft_id` (cluster node
/// `cluster_node_id`) under `dir/raft/`, refusing a directory that belongs to another identity.
pub async fn open_storage(
    dir: &Path,
    raft_id: u64,
    cluster_node_id: &str,
) -> Result<Storage, Error> {
    let (tx, _) = watch::channel(Arc::new(Config::new()));
    open_storage_on(dir, raft_id, cluster_node_id, Arc::new(tx)).await
}

/// [`open_storage`], publishing the configuration on `tx`.
async fn open_storage_on(
    dir: &Path,
    raft_id: u64,
    cluster_node_id: &str,
    tx: Arc<watch::Sender<Arc<Config>>>,
) -> Result<Storage, Error> {
    if !shoal_cluster::valid_node_id(cluster_node_id) {
        return Err(Error::Refused(format!(
            "invalid cluster node id {cluster_node_id}"
        )));
    }
    let committed = tx.subscribe();
    let id = Identity {
        raft_id,
        node_id: cluster_node_id.to_string(),
    };
    let dir = dir.to_path_buf();
    let (log, sm) = blocking(move || open_dir(&dir, id, tx))
        .await
        .map_err(|e| Error::Io(format!("raft storage: {e}")))?;
    Ok(Storage { log, sm, committed })
}

/// Starts Raft node `raft_id` on a log and a state machine, over `network`, with `raft_config`
/// (checked first). [`ConfigGroup::start`] runs it on [`open_storage`] over the cluster bus; the
/// simulator (`tests/raft_sim.rs`) over a simulated network, with the state machine wrapped to
/// watch what it applies.
pub async fn start_raft<N, SM>(
    raft_id: u64,
    raft_config: openraft::Config,
    network: N,
    log: LogStore,
    sm: SM,
) -> Result<Raft<TypeConfig>, Error>
where
    N: RaftNetworkFactory<TypeConfig>,
    SM: RaftStateMachine<TypeConfig>,
{
    let raft_config = raft_config
        .validate()
        .map_err(|e| Error::Refused(e.to_string()))?;
    Raft::new(raft_id, Arc::new(raft_config), network, log, sm)
        .await
        .map_err(|e| Error::Stopped(e.to_string()))
}

impl ConfigGroup {
    /// Starts this node's member of the group: opens (or creates) its log and snapshot under
    /// `dir/raft/`, listens for the cluster bus on `bus_addr` (port 0 picks one) and starts
    /// Raft with `raft_config` (see [`default_raft_config`]). A node that was in a group before
    /// rejoins it from its directory; a new one waits for [`ConfigGroup::initialize`] here or
    /// for a leader to add it.
    pub async fn start(
        dir: &Path,
        raft_id: u64,
        cluster_node_id: &str,
        bus_addr: &str,
        raft_config: openraft::Config,
    ) -> Result<ConfigGroup, Error> {
        let timing = shoal_cluster::lease::Timing::for_node_timeout(
            shoal_cluster::lease::NODE_TIMEOUT_DEFAULT_MS,
        );
        Self::start_with(dir, raft_id, cluster_node_id, bus_addr, raft_config, timing).await
    }

    /// [`ConfigGroup::start`] with the lease timers of a node timeout.
    pub async fn start_with(
        dir: &Path,
        raft_id: u64,
        cluster_node_id: &str,
        bus_addr: &str,
        raft_config: openraft::Config,
        timing: shoal_cluster::lease::Timing,
    ) -> Result<ConfigGroup, Error> {
        let (tx, _) = watch::channel(Arc::new(Config::new()));
        let publish = Arc::new(tx);
        let storage = open_storage_on(dir, raft_id, cluster_node_id, publish.clone()).await?;
        let commit_index = storage.log.committed_index();
        let listener = TcpListener::bind(bus_addr)
            .await
            .map_err(|e| Error::Io(format!("cluster bus on {bus_addr}: {e}")))?;
        let bus_addr = listener
            .local_addr()
            .map_err(|e| Error::Io(format!("cluster bus: {e}")))?;
        let raft = start_raft(
            raft_id,
            raft_config.clone(),
            Network { me: raft_id },
            storage.log,
            storage.sm,
        )
        .await?;
        let (stop_bus, stop) = watch::channel(false);
        let desk = Arc::new(crate::lease::LeaseDesk::new(
            timing,
            storage.committed.clone(),
        ));
        let raft = RaftCell::new(Live { raft, commit_index });
        let bus_task = spawn_bus(listener, raft.clone(), desk.clone(), stop);
        Ok(ConfigGroup {
            raft,
            dir: dir.to_path_buf(),
            raft_config,
            publish,
            desk,
            raft_id,
            node: BusNode {
                addr: bus_addr.to_string(),
                node_id: cluster_node_id.to_string(),
            },
            bus_addr,
            committed: storage.committed,
            stop_bus,
            bus_task: Mutex::new(Some(bus_task)),
        })
    }

    pub fn raft_id(&self) -> u64 {
        self.raft_id
    }

    /// This voter's record of beats and leases.
    pub fn desk(&self) -> &Arc<crate::lease::LeaseDesk> {
        &self.desk
    }

    /// The voters of the group, with their bus addresses.
    pub fn voter_nodes(&self) -> Vec<(u64, BusNode)> {
        let m = self.raft.get().metrics().borrow().clone();
        let membership = m.membership_config.membership();
        membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| (id, n.clone())))
            .collect()
    }

    /// Writes a snapshot of the configuration as this node has applied it now (`<dir>/raft/
    /// snapshot`, fsynced) and returns once it is on disk: CLUSTER SAVECONFIG. The log is
    /// durable entry by entry already; the snapshot puts the whole configuration in one file.
    /// A snapshot already as new as the last applied entry is enough. Each attempt triggers a
    /// build and waits for it a second (one already under way may end before the last entry);
    /// at most [`SAVE_CONFIG_ATTEMPTS`].
    pub async fn save_config(&self) -> Result<(), String> {
        let Some(applied) = self.raft.get().metrics().borrow().last_applied else {
            return Ok(());
        };
        let covered = |m: &openraft::RaftMetrics<u64, BusNode>| {
            m.snapshot.is_some_and(|s| s.index >= applied.index)
        };
        for _ in 0..SAVE_CONFIG_ATTEMPTS {
            if covered(&self.raft.get().metrics().borrow()) {
                return Ok(());
            }
            self.raft
                .get()
                .trigger()
                .snapshot()
                .await
                .map_err(|e| e.to_string())?;
            if self
                .raft
                .get()
                .wait(Some(SAVE_CONFIG_WAIT))
                .metrics(covered, "a snapshot of the applied configuration")
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        Err("the snapshot was not written in time".into())
    }

    /// Confirms with a quorum that this node still leads: `Ok` once a quorum answered a
    /// heartbeat sent after the call began, within `timeout`.
    pub async fn confirm_leadership(&self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, self.raft.get().ensure_linearizable()).await,
            Ok(Ok(_))
        )
    }

    /// This node as a member (its bus address as bound).
    pub fn node(&self) -> BusNode {
        self.node.clone()
    }

    /// The address the bus listens on.
    pub fn bus_addr(&self) -> SocketAddr {
        self.bus_addr
    }

    /// Forms a new group with `members` as its voters (this node among them). Done once, on one
    /// node; the others learn of it from the leader.
    pub async fn initialize(&self, members: BTreeMap<u64, BusNode>) -> Result<(), Error> {
        match self.raft.get().initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                Err(Error::Refused(e.to_string()))
            }
            Err(RaftError::APIError(e)) => Err(Error::Refused(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(Error::Stopped(e.to_string())),
        }
    }

    /// Adds a learner and waits until it has caught up (on the leader).
    pub async fn add_learner(&self, raft_id: u64, node: BusNode) -> Result<(), Error> {
        let ms = MEMBERSHIP_TIMEOUT_MS;
        match tokio::time::timeout(
            Duration::from_millis(ms),
            self.raft.get().add_learner(raft_id, node, true),
        )
        .await
        {
            Err(_) => Err(Error::Timeout { ms }),
            Ok(r) => r.map(|_| ()).map_err(write_error),
        }
    }

    /// Makes `voters` the voters (on the leader), through a joint configuration; members left
    /// out are removed.
    pub async fn change_membership(&self, voters: BTreeSet<u64>) -> Result<(), Error> {
        self.change_members(openraft::ChangeMembers::ReplaceAllVoters(voters))
            .await
    }

    /// Changes the membership (on the leader) as `change` says, through a joint configuration
    /// when the voters change; members removed are not kept as learners.
    async fn change_members(
        &self,
        change: openraft::ChangeMembers<u64, BusNode>,
    ) -> Result<(), Error> {
        let ms = MEMBERSHIP_TIMEOUT_MS;
        match tokio::time::timeout(
            Duration::from_millis(ms),
            self.raft.get().change_membership(change, false),
        )
        .await
        {
            Err(_) => Err(Error::Timeout { ms }),
            Ok(r) => r.map(|_| ()).map_err(write_error),
        }
    }

    /// Removes a member: a voter leaves the voters (and the group), a learner the group.
    pub async fn remove_member(&self, id: u64) -> Result<(), Error> {
        let ids = BTreeSet::from([id]);
        if self.metrics().voters.contains(&id) {
            self.change_members(openraft::ChangeMembers::RemoveVoters(ids))
                .await
        } else {
            self.change_members(openraft::ChangeMembers::RemoveNodes(ids))
                .await
        }
    }

    /// Makes a learner a voter.
    pub async fn add_voter(&self, id: u64) -> Result<(), Error> {
        self.change_members(openraft::ChangeMembers::AddVoterIds(BTreeSet::from([id])))
            .await
    }

    /// Proposes a change and waits for it to commit, for at most [`PROPOSE_TIMEOUT_MS`]. See
    /// [`ConfigGroup::propose_within`].
    pub async fn propose(&self, change: Change) -> Result<Response, Error> {
        self.propose_within(change, Duration::from_millis(PROPOSE_TIMEOUT_MS))
            .await
    }

    /// Proposes a change and waits at most `timeout` for it to commit: `Ok(Ok(()))` applied,
    /// `Ok(Err(text))` committed but refused by `Config::apply` (nothing changed), `Err` not
    /// known to be committed. A follower forwards the change to the leader over the bus (one
    /// hop: a node that is no longer the leader answers [`Error::NotLeader`]).
    pub async fn propose_within(
        &self,
        change: Change,
        timeout: Duration,
    ) -> Result<Response, Error> {
        self.propose_indexed(change, timeout).await.map(|(_, r)| r)
    }

    /// [`ConfigGroup::propose_within`], also returning the log index the change was committed
    /// at, so a caller can wait until this node applied it (a follower learns of the commit a
    /// moment after the leader answered).
    pub async fn propose_indexed(
        &self,
        change: Change,
        timeout: Duration,
    ) -> Result<(u64, Response), Error> {
        let bytes = serde_json::to_vec(&change)
            .map_err(|e| Error::Refused(e.to_string()))?
            .len();
        if bytes > PROPOSAL_BYTES_MAX {
            return Err(Error::TooLarge { bytes });
        }
        match propose_local(&self.raft.get(), change.clone(), timeout).await {
            Err(Error::NotLeader { addr, .. }) => forward(addr, change, timeout).await,
            r => r,
        }
    }

    /// The committed configuration, as applied on this node; it changes after every applied
    /// batch of entries.
    pub fn committed(&self) -> watch::Receiver<Arc<Config>> {
        self.committed.clone()
    }

    /// Term, leader, commit index and the rest, for INFO.
    pub fn metrics(&self) -> GroupMetrics {
        let live = self.raft.live();
        let m = live.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let state = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        GroupMetrics {
            raft_id: self.raft_id,
            state,
            term: m.current_term,
            leader: m.current_leader,
            commit_index: live.commit_index.load(Relaxed).checked_sub(1),
            last_applied: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    /// Stops Raft and the bus listener; open bus connections close too. The directory can then
    /// be opened again.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let stopped = self.raft.get().shutdown().await;
        let _ = self.stop_bus.send(true);
        let task = self
            .bus_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_millis(SHUTDOWN_WAIT_MS), task).await;
        }
        stopped.map_err(|e| Error::Stopped(e.to_string()))
    }

    /// Leaves a group of one for good, so that another group can add this node: stops this
    /// node's Raft, deletes its log, vote and snapshot (the identity stays: the node keeps its
    /// ids) and starts a fresh Raft on the same bus, in no group. Refused unless this node is
    /// its group's only member. The configuration watchers first see an empty configuration,
    /// then, once a group adds the node, that group's.
    pub async fn restart_fresh(&self) -> Result<(), Error> {
        let m = self.metrics();
        if m.voters != [self.raft_id] || !m.learners.is_empty() {
            return Err(Error::Refused(
                "only the single member of a group leaves it this way".into(),
            ));
        }
        self.restart_fresh_after_removal().await
    }

    /// [`ConfigGroup::restart_fresh`] of a node its group removed (it no longer hears from it,
    /// whatever membership its own log last showed).
    pub async fn restart_fresh_after_removal(&self) -> Result<(), Error> {
        self.raft
            .get()
            .shutdown()
            .await
            .map_err(|e| Error::Stopped(e.to_string()))?;
        let raft_dir = self.dir.join("raft");
        blocking(move || clear_group_files(&raft_dir))
            .await
            .map_err(|e| Error::Io(format!("raft storage: {e}")))?;
        let storage = open_storage_on(
            &self.dir,
            self.raft_id,
            &self.node.node_id,
            self.publish.clone(),
        )
        .await?;
        let commit_index = storage.log.committed_index();
        let raft = start_raft(
            self.raft_id,
            self.raft_config.clone(),
            Network { me: self.raft_id },
            storage.log,
            storage.sm,
        )
        .await?;
        self.raft.replace(Live { raft, commit_index });
        Ok(())
    }
}

/// Deletes what a group left in its directory (log, vote, snapshot and their temporary files),
/// keeping the node's identity; then fsyncs the directory.
fn clear_group_files(raft_dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(raft_dir)? {
        let entry = entry?;
        if entry.file_name() == "identity" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    record::sync_dir(raft_dir)
}

/// Maps a failed write (a proposal or a membership change) to who must act.
fn write_error(e: RaftError<u64, ClientWriteError<u64, BusNode>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            match (f.leader_id, f.leader_node) {
                (Some(leader), Some(node)) => Error::NotLeader {
                    leader,
                    addr: node.addr,
                },
                _ => Error::NoLeader,
            }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Error::Refused(e.to_string())
        }
        RaftError::Fatal(e) => Error::Stopped(e.to_string()),
    }
}

/// Proposes on this node's Raft, without forwarding.
pub(crate) async fn propose_local(
    raft: &Raft<TypeConfig>,
    change: Change,
    timeout: Duration,
) -> Result<(u64, Response), Error> {
    match tokio::time::timeout(timeout, raft.client_write(change)).await {
        Err(_) => Err(Error::Timeout {
            ms: timeout.as_millis() as u64,
        }),
        Ok(Ok(resp)) => Ok((resp.log_id.index, resp.data)),
        Ok(Err(e)) => Err(write_error(e)),
    }
}

/// Sends a proposal to the leader's bus and returns its answer.
async fn forward(
    addr: String,
    change: Change,
    timeout: Duration,
) -> Result<(u64, Response), Error> {
    let ms = timeout.as_millis().min(PROPOSE_TIMEOUT_MAX_MS as u128) as u64;
    let body = serde_json::to_vec(&Forwarded {
        change,
        timeout_ms: ms,
    })
    .map_err(|e| Error::Refused(e.to_string()))?;
    let mut client = BusClient::new(addr);
    let ttl = Duration::from_millis(ms + FORWARD_SLACK_MS);
    match client.call(b"PROPOSE", &body, ttl).await {
        Ok(reply) => serde_json::from_slice::<Result<(u64, Response), Error>>(&reply)
            .map_err(|e| Error::Unreachable(format!("bad reply from the leader: {e}")))?,
        Err(CallError::Timeout) => Err(Error::Timeout { ms }),
        Err(e) => Err(Error::Unreachable(e.to_string())),
    }
}

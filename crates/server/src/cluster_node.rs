//! Cluster mode in the server: this node's member of the configuration group (`raft`), started
//! with the server, the proposals commands hand over (`Action::ClusterChange`), and the task that
//! installs every committed configuration into the command layer's `ClusterState` and makes the
//! node's replication role follow it (a node the configuration makes a replica follows its
//! primary; one it makes a primary stops following).
//!
//! Identity: a node keeps its cluster id and Raft id in its group directory (`dir/raft/`), so a
//! restarted node rejoins its group as itself. A fresh node forms a group of its own (it is the
//! only voter) and adds itself to the configuration, as a fresh Redis node is a cluster of one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_cluster::{Change, Config, Node};
use shoal_commands::ServerState;
use shoal_commands::repl::Role;

use crate::raft::{self, ConfigGroup};

/// How long a fresh node waits for its own group to take its first change.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a restarted node waits for Raft to publish the membership it loaded from disk.
pub const MEMBERSHIP_LOAD_WAIT: Duration = Duration::from_secs(2);

/// This node's part in cluster mode.
pub struct ClusterNode {
    pub group: ConfigGroup,
}

/// The Raft id that goes with a cluster node id: its first 16 hex digits.
fn raft_id_of(node_id: &str) -> u64 {
    u64::from_str_radix(&node_id[..16.min(node_id.len())], 16).unwrap_or(0)
}

impl ClusterNode {
    /// Starts the node's member of the configuration group on its bus (data port + 10000, or
    /// `cluster-port`; a node listening on a port picked by the system gets a picked bus port
    /// too), forms a group of one if the node is new, and starts installing committed
    /// configurations.
    pub async fn start(
        srv: &Arc<ServerState>,
        data: SocketAddr,
    ) -> Result<Arc<ClusterNode>, String> {
        let cl = srv.cluster.as_ref().ok_or("cluster mode is off")?;
        let config = srv.config();
        let dir = PathBuf::from(&config.dir);
        let bus_port = match (config.cluster_port, config.port) {
            (0, 0) => 0,
            (0, _) => data.port().checked_add(10000).ok_or_else(|| {
                format!("port {} + 10000 is no port: set cluster-port", data.port())
            })?,
            (p, _) => p,
        };
        let stored = {
            let d = dir.clone();
            tokio::task::spawn_blocking(move || raft::stored_identity(&d))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cluster identity in {}: {e}", dir.display()))?
        };
        let (raft_id, node_id) = match stored.clone() {
            Some((raft_id, node_id)) => {
                cl.set_me(node_id.clone());
                (raft_id, node_id)
            }
            None => {
                let me = cl.me();
                (raft_id_of(&me), me)
            }
        };
        let bus = SocketAddr::new(data.ip(), bus_port).to_string();
        let group = ConfigGroup::start(&dir, raft_id, &node_id, &bus, raft::default_raft_config())
            .await
            .map_err(|e| format!("cluster bus: {e}"))?;
        let fresh = stored.is_none();
        let node = Arc::new(ClusterNode { group });
        if fresh || !node.has_membership().await {
            node.form(data, &node_id).await?;
        } else {
            node.readdress(data, &node_id).await;
        }
        let mut committed = node.group.committed();
        install(srv, committed.borrow_and_update().clone());
        let srv2 = srv.clone();
        tokio::spawn(async move {
            while committed.changed().await.is_ok() {
                let cfg = committed.borrow_and_update().clone();
                install(&srv2, cfg);
            }
        });
        Ok(node)
    }

    /// Whether the group loaded a membership from disk (Raft publishes it shortly after it
    /// starts; a node whose identity was written but that never formed or joined a group has
    /// none).
    async fn has_membership(&self) -> bool {
        let deadline = Instant::now() + MEMBERSHIP_LOAD_WAIT;
        loop {
            let m = self.group.metrics();
            if !m.voters.is_empty() || !m.learners.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A fresh node: a group of one with this node as its only voter, and this node in the
    /// configuration.
    async fn form(&self, data: SocketAddr, node_id: &str) -> Result<(), String> {
        let me = self.group.node();
        let raft_id = self.group.raft_id();
        self.group
            .initialize(BTreeMap::from([(raft_id, me)]))
            .await
            .map_err(|e| format!("forming the cluster group: {e}"))?;
        let node = Node {
            id: node_id.to_string(),
            ip: data.ip().to_string(),
            port: data.port(),
            bus_port: self.group.bus_addr().port(),
            replica_of: None,
            config_epoch: 0,
        };
        // The group of one elects its only voter; until then proposals find no leader.
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            match self.group.propose(Change::AddNode(node.clone())).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => return Err(format!("adding this node to its configuration: {e}")),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("adding this node to its configuration: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// CLUSTER RESET of a node that is alone in its cluster: it gives up every slot (and every
    /// slot move). A node in a cluster of several leaves it through the cluster tools instead
    /// (its slots must move first), so it is refused here with that reason. The node keeps its
    /// id: its group directory is its identity.
    pub async fn reset(&self, srv: &Arc<ServerState>, _hard: bool) -> Result<(), String> {
        let cl = srv.cluster.as_ref().ok_or("cluster mode is off")?;
        let cfg = cl.config();
        if cfg.nodes().len() > 1 {
            return Err(
                "CLUSTER RESET of a node in a cluster of several nodes: move its slots away and \
                 remove it with the cluster tools"
                    .into(),
            );
        }
        let ranges = cfg.ranges_of(&cl.me());
        if ranges.is_empty() {
            return Ok(());
        }
        self.propose(srv, Change::UnassignSlots { ranges }).await
    }

    /// A restarted node reached at another address than its configuration says (a port the
    /// system picked, another host) tells the group, so redirects name where it is now. Waits
    /// for its own applied configuration first; a group without a majority leaves it as it was
    /// (logged), and the node serves what it owns meanwhile.
    async fn readdress(&self, data: SocketAddr, node_id: &str) {
        let bus_port = self.group.bus_addr().port();
        let mut committed = self.group.committed();
        let deadline = tokio::time::Instant::now() + FORM_TIMEOUT;
        let known = loop {
            if let Some(n) = committed.borrow_and_update().node(node_id).cloned() {
                break Some(n);
            }
            match tokio::time::timeout_at(deadline, committed.changed()).await {
                Ok(Ok(())) => continue,
                _ => break None,
            }
        };
        let Some(n) = known else {
            return;
        };
        let ip = data.ip().to_string();
        if n.ip == ip && n.port == data.port() && n.bus_port == bus_port {
            return;
        }
        let change = Change::SetAddress {
            node: node_id.to_string(),
            ip,
            port: data.port(),
            bus_port,
        };
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            match self.group.propose(change.clone()).await {
                Ok(_) => return,
                Err(e) if Instant::now() >= deadline => {
                    tracing::warn!(error = %e, "could not record this node's new address");
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Proposes a change for a command: `Ok` once committed and applied, `Err` with the reply
    /// text (Redis's wording for a refused change, or why it is not known to be committed).
    /// The configuration this node applied is installed before this returns, so the client's
    /// next command sees its change.
    pub async fn propose(&self, srv: &Arc<ServerState>, change: Change) -> Result<(), String> {
        let r = match self.group.propose(change).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refused)) => Err(refused),
            Err(e) => Err(format!(
                "the cluster configuration did not take the change: {e}"
            )),
        };
        // Applied here before the proposal returns (a forwarded one: once it reaches this node).
        let deadline = tokio::time::Instant::now() + FORM_TIMEOUT;
        let mut committed = self.group.committed();
        let target = self.group.metrics().commit_index;
        while r.is_ok()
            && self.group.metrics().last_applied < target
            && tokio::time::timeout_at(deadline, committed.changed())
                .await
                .is_ok_and(|c| c.is_ok())
        {}
        install(srv, committed.borrow_and_update().clone());
        r
    }
}

/// Installs a committed configuration and makes the replication role follow it.
fn install(srv: &Arc<ServerState>, cfg: Arc<Config>) {
    let Some(cl) = srv.cluster.as_ref() else {
        return;
    };
    cl.install(cfg.clone());
    let me = cl.me();
    let Some(mine) = cfg.node(&me) else {
        return;
    };
    match mine.replica_of.as_ref().and_then(|p| cfg.node(p)) {
        Some(primary) => {
            let target = Role::Replica {
                host: primary.ip.clone(),
                port: primary.port,
            };
            if srv.repl.role() != target {
                let epoch = srv
                    .repl
                    .become_replica(&srv.ks, primary.ip.clone(), primary.port);
                tracing::info!(primary = %primary.addr(), "the cluster configuration makes this node a replica");
                tokio::spawn(crate::links::run_replica(
                    srv.clone(),
                    crate::links::Tcp,
                    primary.ip.clone(),
                    primary.port,
                    epoch,
                ));
            }
        }
        None => {
            if srv.repl.is_replica() {
                tracing::info!("the cluster configuration makes this node a primary");
                shoal_commands::replication::promote(srv);
            }
        }
    }
}

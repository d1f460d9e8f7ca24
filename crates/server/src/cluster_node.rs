//! Cluster mode in the server: this node's member of the configuration group (`raft`), started
//! with the server, the proposals commands hand over (`Action::ClusterChange`), and the task that
//! installs every committed configuration into the command layer's `ClusterState` and makes the
//! node's replication role follow it (a node the configuration makes a replica follows its
//! primary; one it makes a primary stops following).
//!
//! Identity: a node keeps its cluster id and Raft id in its group directory (`dir/raft/`), so a
//! restarted node rejoins its group as itself. A fresh node belongs to no group: it shows a
//! configuration of itself alone (as a fresh Redis node is a cluster of one) and can be met
//! (`CLUSTER MEET`: the group's leader adds it, first as a learner, then as a voter while the
//! group has fewer than [`VOTERS`]). The first change a fresh node is asked to make itself
//! (ADDSLOTS, MEET) forms a group of one first, with it as the only voter. A node alone in
//! such a group, without keys, can still meet another cluster, from either side: it leaves its
//! group of one and joins the other with its slots ([`ClusterNode::meet`]), which is how
//! `redis-cli --cluster create` (slots first, then MEET) forms a shoal cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use shoal_cluster::{Change, ChangeError, Config, Node};
use shoal_commands::ServerState;
use shoal_commands::repl::Role;

use crate::raft::{self, ConfigGroup};

/// How long a fresh node waits for its own group to take its first change.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a restarted node waits for Raft to publish the membership it loaded from disk.
pub const MEMBERSHIP_LOAD_WAIT: Duration = Duration::from_secs(2);
/// Voters of the configuration group: the first nodes met are made voters up to this many; the
/// others are learners (they follow the configuration without voting on it).
pub const VOTERS: usize = 3;
/// How long `CLUSTER MEET` waits for the node it meets to answer.
pub const MEET_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command's change of the configuration may take to commit (a loaded machine, an
/// election under way) before the command answers that it did not.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// How a proposal waits until this node applied it.
pub const APPLIED_POLL: Duration = Duration::from_millis(1);
/// How often INFO's view of the configuration group is refreshed.
pub const METRICS_EVERY: Duration = Duration::from_millis(250);

/// This node's part in cluster mode.
pub struct ClusterNode {
    pub group: ConfigGroup,
    /// This node as it joins a configuration (its id and addresses).
    me: Node,
    /// Serialises forming a group of one.
    forming: tokio::sync::Mutex<()>,
    /// Serialises the group membership changes a FORGET makes.
    membership: tokio::sync::Mutex<()>,
    /// Serialises this node's slot exports (each notes the keys written in its slots through
    /// the shards' trackers, which one export at a time owns).
    pub exporting: tokio::sync::Mutex<()>,
    /// A manual failover (CLUSTER FAILOVER) is under way on this node: one at a time.
    failing_over: std::sync::atomic::AtomicBool,
}

/// The Raft id that goes with a cluster node id: its first 16 hex digits.
pub(crate) fn raft_id_of(node_id: &str) -> u64 {
    u64::from_str_radix(&node_id[..16.min(node_id.len())], 16).unwrap_or(0)
}

impl ClusterNode {
    /// Starts the node's member of the configuration group on its bus (data port + 10000, or
    /// `cluster-port`; a node listening on a port picked by the system gets a picked bus port
    /// too). `data` is the port the node announces: its TLS port under `tls-cluster`, as Redis
    /// (`crate::Server::cluster_addr`), forms a group of one if the node is new, and starts installing committed
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
                crate::log::set_node(&node_id);
                (raft_id, node_id)
            }
            None => {
                let me = cl.me();
                (raft_id_of(&me), me)
            }
        };
        let bus = SocketAddr::new(data.ip(), bus_port).to_string();
        raft::bus_auth::configure(config.tls_cluster, &config.cluster_secret);
        let timing = shoal_cluster::lease::Timing::for_node_timeout(config.cluster_node_timeout);
        let group = ConfigGroup::start_with(
            &dir,
            raft_id,
            &node_id,
            &bus,
            raft::raft_config_for(&timing),
            timing,
        )
        .await
        .map_err(|e| format!("cluster bus: {e}"))?;
        let me = Node {
            id: node_id.clone(),
            ip: data.ip().to_string(),
            port: data.port(),
            bus_port: group.bus_addr().port(),
            replica_of: None,
            config_epoch: 0,
        };
        let node = Arc::new(ClusterNode {
            group,
            me,
            forming: tokio::sync::Mutex::new(()),
            membership: tokio::sync::Mutex::new(()),
            exporting: tokio::sync::Mutex::new(()),
            failing_over: std::sync::atomic::AtomicBool::new(false),
        });
        if stored.is_some() && node.has_membership().await {
            cl.formed.store(true, Relaxed);
            node.readdress(data, &node_id).await;
        } else {
            // Not in any group yet: a configuration of this node alone, until it forms or is met.
            let mut alone = Config::new();
            alone
                .apply(&Change::AddNode(node.me.clone()))
                .map_err(|e| format!("this node's own entry: {e}"))?;
            cl.install(Arc::new(alone));
        }
        // INFO's view of the group, refreshed while the node runs.
        {
            let (srv, node) = (Arc::downgrade(srv), Arc::downgrade(&node));
            tokio::spawn(async move {
                while let (Some(srv), Some(node)) = (srv.upgrade(), node.upgrade()) {
                    node.publish_metrics(&srv);
                    drop((srv, node));
                    tokio::time::sleep(METRICS_EVERY).await;
                }
            });
        }
        let mut committed = node.group.committed();
        install(srv, committed.borrow_and_update().clone());
        // Back with an empty memory: as a primary it hands its slots over to a live replica
        // holding data rather than serve them empty (`crate::lease`).
        crate::lease::spawn(srv, &node);
        crate::in_sync::spawn(srv, &node);
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

    /// Forms a group of one if this node belongs to none yet: this node its only voter, and in
    /// the configuration.
    async fn ensure_formed(&self, srv: &Arc<ServerState>) -> Result<(), String> {
        let cl = srv.cluster.as_ref().ok_or("cluster mode is off")?;
        let _one = self.forming.lock().await;
        if cl.formed.load(Relaxed) {
            return Ok(());
        }
        // Met by a cluster a moment ago: the group's log is arriving, and the configuration that
        // names this node is about to be applied. Wait for it rather than form a group of one.
        let m = self.group.metrics();
        if !m.voters.is_empty() || !m.learners.is_empty() {
            let deadline = Instant::now() + FORM_TIMEOUT;
            while !cl.formed.load(Relaxed) {
                if Instant::now() >= deadline {
                    return Err("this node is joining a cluster; try again".into());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            return Ok(());
        }
        let me = self.group.node();
        let raft_id = self.group.raft_id();
        if let Err(e) = self.group.initialize(BTreeMap::from([(raft_id, me)])).await {
            // Met a moment ago, between the look above and now: another group has reached this
            // node (a vote or the first entries of its log; the membership may not be applied
            // yet). Wait for the configuration that names this node.
            let deadline = Instant::now() + FORM_TIMEOUT;
            while !cl.formed.load(Relaxed) {
                if Instant::now() >= deadline {
                    let m = self.group.metrics();
                    if m.voters.is_empty() && m.learners.is_empty() {
                        return Err(format!("forming the cluster group: {e}"));
                    }
                    return Err("this node is joining a cluster; try again".into());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            return Ok(());
        }
        let node = self.me.clone();
        // The group of one elects its only voter; until then proposals find no leader.
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            match self.group.propose(Change::AddNode(node.clone())).await {
                Ok(Ok(())) => {
                    cl.formed.store(true, Relaxed);
                    install(srv, self.group.committed().borrow().clone());
                    return Ok(());
                }
                Ok(Err(e)) => return Err(format!("adding this node to its configuration: {e}")),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("adding this node to its configuration: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// CLUSTER RESET of a node that is alone in its cluster: it gives up every slot (and every
    /// slot move). A node its cluster removed (FORGET) leaves its group and is a fresh node
    /// again. A node still in a cluster of several leaves it through the cluster tools instead
    /// (its slots must move first), so it is refused here with that reason. The node keeps its
    /// id: its group directory is its identity.
    pub async fn reset(&self, srv: &Arc<ServerState>, _hard: bool) -> Result<(), String> {
        let cl = srv.cluster.as_ref().ok_or("cluster mode is off")?;
        let me = cl.me();
        let cfg = cl.config();
        // `redis-cli --cluster del-node` sends FORGET to the other nodes, then RESET to the node
        // removed, which may never have heard of its removal (the group stops replicating to a
        // removed member): the other members say.
        let removed = cfg.node(&me).is_none()
            || (cfg.nodes().len() > 1 && self.removed_per_peers(srv, &cfg, &me).await);
        if cl.formed.load(Relaxed) && removed {
            // Removed by its cluster: it leaves the group and is a fresh node again, a primary
            // without data (as Redis's RESET turns a replica into an empty primary).
            if srv.repl.is_replica() {
                shoal_commands::replication::promote(srv);
                shoal_commands::server::flush(srv, None, true, crate::now_ms());
            }
            tracing::warn!("removed from its cluster: this node starts afresh (CLUSTER RESET)");
            return self.leave_group(srv, true).await;
        }
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

    /// Whether the cluster removed this node without it hearing of it: another member that has
    /// applied at least as much of the group's log as this node no longer names it. Asks up to
    /// [`REMOVAL_PEERS`] members, over again (their INFO lags a little) until one has caught
    /// up with this node or [`REMOVAL_WAIT`] passes; unreachable members count for nothing.
    async fn removed_per_peers(&self, srv: &ServerState, cfg: &Config, me: &str) -> bool {
        use shoal_resp::Reply;
        let mine = self.group.metrics().last_applied.unwrap_or(0);
        let peers: Vec<&Node> = cfg
            .nodes()
            .iter()
            .filter(|n| n.id != me)
            .take(REMOVAL_PEERS)
            .collect();
        let deadline = Instant::now() + REMOVAL_WAIT;
        let t = MANUAL_FAILOVER_REQUEST_TIMEOUT;
        while Instant::now() < deadline {
            for n in &peers {
                let Ok(mut s) = connect_node(srv, &n.ip, n.port, t).await else {
                    continue;
                };
                let text = |r: Result<Reply, String>| match r {
                    Ok(Reply::Bulk(Some(b))) => String::from_utf8_lossy(&b).into_owned(),
                    _ => String::new(),
                };
                let info = text(crate::links::request(&mut s, &[b"INFO", b"cluster"], t).await);
                let applied = info
                    .lines()
                    .find_map(|l| l.strip_prefix("shoal_raft_last_applied:"))
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if applied.is_none_or(|a| a < mine) {
                    continue;
                }
                let nodes = text(crate::links::request(&mut s, &[b"CLUSTER", b"NODES"], t).await);
                if !nodes.is_empty() {
                    return !nodes.contains(me);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// A restarted node reached at another address than its configuration says (a port the
    /// system picked, another host) tells the group, so redirects name where it is now. Waits
    /// for its own applied configuration first; a group without a majority leaves it as it was
    /// (logged), and the node serves what it owns meanwhile.
    /// The node now serves clients at `data` (`CONFIG SET port` / `tls-port`): the cluster's
    /// configuration gets the new address (in the background; logged if it cannot be committed).
    pub fn announce(self: &Arc<Self>, data: SocketAddr) {
        let node = self.clone();
        tokio::spawn(async move {
            let id = node.me.id.clone();
            node.readdress(data, &id).await;
        });
    }

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

    /// CLUSTER MEET, as Redis's works in either direction: the node at `ip:port` and this one
    /// end up in one cluster, whichever of the two was asked.
    /// - A fresh node there (in no group, without keys) is added to this node's group (formed
    ///   first if need be): as a learner, then as a voter while there are fewer than
    ///   [`VOTERS`], and to the configuration. The group's leader does it; another member asks
    ///   the leader.
    /// - A node there in a group, met by a fresh node, adds this node to its group.
    /// - Met by a node alone in a group it formed itself (`redis-cli --cluster create` assigns
    ///   each node its slots and config epoch, which forms a group of one on each, before it
    ///   meets them) and holding no keys, the lone node leaves its group for the other and
    ///   takes its slots there ([`ClusterNode::join_through`]), whichever side was asked.
    /// - Two groups of several nodes are not merged.
    pub async fn meet(&self, srv: &Arc<ServerState>, ip: String, port: u16) -> Result<(), String> {
        let cl = srv.cluster.as_ref().ok_or("cluster mode is off")?;
        let addr = format!("{ip}:{port}");
        let probe = addr.clone();
        let tls = crate::tls::cluster_links(&srv.config());
        let auth = internal_auth(srv);
        let there = tokio::task::spawn_blocking(move || meetable(&probe, tls, auth))
            .await
            .map_err(|e| e.to_string())??;
        let (id, alone_there) = match there {
            Probe::Fresh { id, bus_port } => {
                return self.add_fresh(srv, ip, port, id, bus_port).await;
            }
            Probe::Formed { id, alone } => (id, alone),
        };
        if cl.formed.load(Relaxed) && cl.config().node(&id).is_some() {
            return Ok(());
        }
        if !cl.formed.load(Relaxed) {
            // A fresh node meeting a cluster: the cluster adds it.
            return self.ask_to_meet_me(srv, &ip, port, &id).await;
        }
        match self.alone_without_keys(srv) {
            Ok(()) => self.join_through(srv, &ip, port).await,
            Err(_) if alone_there => self.ask_to_meet_me(srv, &ip, port, &id).await,
            Err(why) => Err(format!(
                "{addr} already belongs to a cluster (its configuration group), and {why}: \
                 it is not met"
            )),
        }
    }

    /// Adds the fresh node `id` at `ip:port` (bus port `bus_port`) to this node's group, on the
    /// group's leader.
    async fn add_fresh(
        &self,
        srv: &Arc<ServerState>,
        ip: String,
        port: u16,
        id: String,
        bus_port: u16,
    ) -> Result<(), String> {
        self.ensure_formed(srv).await?;
        let addr = format!("{ip}:{port}");
        let cfg = srv.cluster.as_ref().map(|c| c.config());
        if cfg.as_ref().is_some_and(|c| c.node(&id).is_some()) {
            return Ok(());
        }
        let leader = self.group.metrics().leader;
        if leader.is_some_and(|l| l != self.group.raft_id()) {
            // Membership changes are the leader's: it is asked to meet the node.
            let leader = cfg
                .as_ref()
                .and_then(|c| c.nodes().iter().find(|n| Some(raft_id_of(&n.id)) == leader))
                .cloned()
                .ok_or("the configuration group's leader is not in the configuration yet")?;
            let port_text = port.to_string();
            let args = ["CLUSTER", "MEET", ip.as_str(), port_text.as_str()];
            return ask_node(srv, &leader.ip, leader.port, &args, MERGE_TIMEOUT).await;
        }
        let raft_id = raft_id_of(&id);
        let bus = raft::BusNode {
            addr: format!("{ip}:{bus_port}"),
            node_id: id.clone(),
        };
        self.group
            .add_learner(raft_id, bus)
            .await
            .map_err(|e| format!("adding {addr} to the configuration group: {e}"))?;
        let voters: std::collections::BTreeSet<u64> =
            self.group.metrics().voters.into_iter().collect();
        if voters.len() < VOTERS && !voters.contains(&raft_id) {
            let mut next = voters.clone();
            next.insert(raft_id);
            self.group
                .change_membership(next)
                .await
                .map_err(|e| format!("making {addr} a voter: {e}"))?;
        }
        let node = Node {
            id,
            ip,
            port,
            bus_port,
            replica_of: None,
            config_epoch: 0,
        };
        self.propose(srv, Change::AddNode(node)).await
    }

    /// `Ok` if this node formed a group of one and could leave it for another group: the only
    /// member of its group and of its configuration, without keys. `Err` says what stops it.
    fn alone_without_keys(&self, srv: &ServerState) -> Result<(), String> {
        let cl = srv.cluster.as_ref().ok_or("cluster mode is off")?;
        let m = self.group.metrics();
        if cl.config().nodes().len() > 1
            || m.voters != [self.group.raft_id()]
            || !m.learners.is_empty()
        {
            return Err("so does this node".into());
        }
        if srv.ks.db_size(0).0 > 0 {
            return Err("this node holds keys (a node joins a cluster empty)".into());
        }
        Ok(())
    }

    /// Asks the node `id` at `ip:port` to meet this node (its group then adds this one, or this
    /// one's group adds it), and waits until this node's configuration names both.
    async fn ask_to_meet_me(
        &self,
        srv: &Arc<ServerState>,
        ip: &str,
        port: u16,
        id: &str,
    ) -> Result<(), String> {
        let cl = srv.cluster.as_ref().ok_or("cluster mode is off")?;
        let me = cl.me();
        let (my_ip, my_port) = cl
            .config()
            .node(&me)
            .map_or((self.me.ip.clone(), self.me.port), |n| {
                (n.ip.clone(), n.port)
            });
        let my_port = my_port.to_string();
        let args = ["CLUSTER", "MEET", my_ip.as_str(), my_port.as_str()];
        ask_node(srv, ip, port, &args, MERGE_TIMEOUT)
            .await
            .map_err(|e| format!("{ip}:{port}: {e}"))?;
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let cfg = cl.config();
            if cl.formed.load(Relaxed) && cfg.node(&me).is_some() && cfg.node(id).is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{ip}:{port} met this node, but its configuration has not arrived here yet"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Leaves this node's group of one for the group of the node at `ip:port`: its Raft starts
    /// afresh (`ConfigGroup::restart_fresh`), the node there is asked to meet it, and once the
    /// configuration names it, its slots are assigned to it again and, if it had slots or a config
    /// epoch, it takes the group's newest. If the other group does not take it, it forms its group of
    /// one again with its slots and epoch. Checked first with
    /// [`ClusterNode::alone_without_keys`].
    async fn join_through(
        &self,
        srv: &Arc<ServerState>,
        ip: &str,
        port: u16,
    ) -> Result<(), String> {
        let cl = srv.cluster.as_ref().ok_or("cluster mode is off")?;
        let me = cl.me();
        let (ranges, epoch, there) = {
            let one = self.forming.lock().await;
            self.alone_without_keys(srv)?;
            let cfg = cl.config();
            let ranges = cfg.ranges_of(&me);
            let epoch = cfg.node(&me).map_or(0, |n| n.config_epoch);
            let mine = cfg.node(&me).cloned().unwrap_or_else(|| self.me.clone());
            tracing::warn!(
                node = %format!("{ip}:{port}"),
                slots = ranges.iter().map(|r| r.iter().count()).sum::<usize>(),
                "leaving this node's group of one to join the cluster of the node it meets"
            );
            self.leave_group(srv, false).await?;
            let port_text = mine.port.to_string();
            let args = ["CLUSTER", "MEET", mine.ip.as_str(), port_text.as_str()];
            let there = ask_node(srv, ip, port, &args, MERGE_TIMEOUT).await;
            drop(one);
            (ranges, epoch, there)
        };
        if let Err(e) = there {
            tracing::warn!(error = %e, "the other cluster did not take this node: it forms its group of one again");
            self.ensure_formed(srv).await?;
            if cl.config().nodes().len() == 1 {
                if !ranges.is_empty() {
                    self.propose(
                        srv,
                        Change::AssignSlots {
                            node: me.clone(),
                            ranges,
                        },
                    )
                    .await?;
                }
                if epoch > 0 {
                    self.propose(srv, Change::SetConfigEpoch { node: me, epoch })
                        .await?;
                }
            }
            return Err(e);
        }
        let deadline = Instant::now() + FORM_TIMEOUT;
        while !cl.formed.load(Relaxed) {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{ip}:{port} met this node, but its configuration has not arrived here yet"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Its own epoch, the newest: a primary with slots (or an epoch given by hand) shares
        // none with another.
        let bump = epoch > 0 || !ranges.is_empty();
        if !ranges.is_empty() {
            let node = me.clone();
            self.propose(srv, Change::AssignSlots { node, ranges })
                .await?;
        }
        if bump {
            self.propose(srv, Change::BumpEpoch { node: me }).await?;
        }
        Ok(())
    }

    /// Leaves this node's group (its only member, or removed from it: `removed`): its Raft
    /// starts afresh, and it shows itself alone and fresh, in no group, so a cluster can meet it.
    async fn leave_group(&self, srv: &Arc<ServerState>, removed: bool) -> Result<(), String> {
        let cl = srv.cluster.as_ref().ok_or("cluster mode is off")?;
        let me = cl.me();
        let mine = cl
            .config()
            .node(&me)
            .cloned()
            .unwrap_or_else(|| self.me.clone());
        let left = if removed {
            self.group.restart_fresh_after_removal().await
        } else {
            self.group.restart_fresh().await
        };
        left.map_err(|e| format!("leaving this node's configuration group: {e}"))?;
        cl.formed.store(false, Relaxed);
        let mut alone = Config::new();
        alone
            .apply(&Change::AddNode(Node {
                replica_of: None,
                config_epoch: 0,
                ..mine
            }))
            .map_err(|e| format!("this node's own entry: {e}"))?;
        cl.install_after_leaving(Arc::new(alone));
        Ok(())
    }

    /// Copies the group's metrics where INFO reads them.
    fn publish_metrics(&self, srv: &ServerState) {
        let Some(cl) = srv.cluster.as_ref() else {
            return;
        };
        let m = self.group.metrics();
        let formed = cl.formed.load(Relaxed);
        *cl.group.lock().expect("group info lock") = shoal_commands::cluster::GroupInfo {
            state: if formed || !m.voters.is_empty() || !m.learners.is_empty() {
                m.state
            } else {
                "none"
            },
            term: m.term,
            leader: m.leader,
            commit_index: m.commit_index,
            last_applied: m.last_applied,
            voters: m.voters.len(),
            learners: m.learners.len(),
        };
    }

    /// CLUSTER FORGET: removes a node that serves no slot and has no replicas from the
    /// configuration, then from the configuration group. Any node may be asked, several at once
    /// (`redis-cli --cluster del-node` asks every node): a FORGET that finds the node removed by
    /// another's is done, and still makes sure the node left the group.
    pub async fn forget(&self, srv: &Arc<ServerState>, id: String) -> Result<(), String> {
        self.ensure_formed(srv).await?;
        if id == self.me.id {
            return Err("I tried hard but I can't forget myself...".into());
        }
        let cl = srv.cluster.as_ref().ok_or("cluster mode is off")?;
        if cl.config().node(&id).is_some() {
            match self
                .propose_settled(srv, Change::RemoveNode(id.clone()))
                .await
            {
                Proposed::Applied => {}
                // Another FORGET's removal committed first.
                Proposed::Refused(e) if e == ChangeError::UnknownNode(id.clone()).to_string() => {}
                Proposed::Refused(e) | Proposed::Unknown(e) => return Err(e),
            }
        }
        self.remove_from_group(srv, &id).await
    }

    /// Takes the forgotten node `id` out of the configuration group (a voter is replaced by a
    /// learner when one is left, so the group keeps [`VOTERS`] voters). Membership changes are
    /// the group leader's: another member asks the leader with CLUSTER FORGET, which for a node
    /// the configuration no longer names does only this. One change at a time on a node.
    async fn remove_from_group(&self, srv: &Arc<ServerState>, id: &str) -> Result<(), String> {
        let raft_id = raft_id_of(id);
        let member =
            |m: &raft::GroupMetrics| m.voters.contains(&raft_id) || m.learners.contains(&raft_id);
        let m = self.group.metrics();
        if !member(&m) {
            return Ok(());
        }
        if let Some(leader) = m.leader.filter(|&l| l != self.group.raft_id()) {
            let cfg = srv.cluster.as_ref().map(|c| c.config());
            let leader = cfg
                .as_ref()
                .and_then(|c| c.nodes().iter().find(|n| raft_id_of(&n.id) == leader))
                .cloned()
                .ok_or("the configuration group's leader is not in the configuration")?;
            let args = ["CLUSTER", "FORGET", id];
            return ask_node(srv, &leader.ip, leader.port, &args, MERGE_TIMEOUT).await;
        }
        let _one = self.membership.lock().await;
        if !member(&self.group.metrics()) {
            return Ok(());
        }
        self.group
            .remove_member(raft_id)
            .await
            .map_err(|e| format!("removing {id} from the configuration group: {e}"))?;
        let m = self.group.metrics();
        if m.voters.len() < VOTERS
            && let Some(&learner) = m.learners.first()
        {
            self.group
                .add_voter(learner)
                .await
                .map_err(|e| format!("making a learner a voter: {e}"))?;
        }
        Ok(())
    }

    /// Proposes a change for a command: `Ok` once committed and applied, `Err` with the reply
    /// text (Redis's wording for a refused change, or why it is not known to be committed).
    /// The configuration this node applied is installed before this returns, so the client's
    /// next command sees its change.
    pub async fn propose(&self, srv: &Arc<ServerState>, change: Change) -> Result<(), String> {
        self.propose_within(srv, change, PROPOSE_TIMEOUT).await
    }

    /// CLUSTER SAVECONFIG: the configuration group's snapshot, written now. A node that formed
    /// or joined no group has nothing stored to bring up to date: it is a fresh node alone, as
    /// it will be again after a restart.
    pub async fn save_config(&self, srv: &Arc<ServerState>) -> Result<(), String> {
        let cl = srv.cluster.as_ref().ok_or("cluster mode is off")?;
        if !cl.formed.load(Relaxed) {
            return Ok(());
        }
        self.group.save_config().await
    }

    /// [`ClusterNode::propose`] with its own bound on the commit.
    async fn propose_within(
        &self,
        srv: &Arc<ServerState>,
        change: Change,
        timeout: Duration,
    ) -> Result<(), String> {
        match self.propose_settled_within(srv, change, timeout).await {
            Proposed::Applied => Ok(()),
            Proposed::Refused(e) | Proposed::Unknown(e) => Err(e),
        }
    }

    /// [`ClusterNode::propose`], telling a refused change (it will never apply) from one whose
    /// fate is unknown (it may still commit).
    pub async fn propose_settled(&self, srv: &Arc<ServerState>, change: Change) -> Proposed {
        self.propose_settled_within(srv, change, PROPOSE_TIMEOUT)
            .await
    }

    async fn propose_settled_within(
        &self,
        srv: &Arc<ServerState>,
        change: Change,
        timeout: Duration,
    ) -> Proposed {
        if let Err(e) = self.ensure_formed(srv).await {
            return Proposed::Refused(e);
        }
        let (index, r) = match self.group.propose_indexed(change, timeout).await {
            Ok((i, Ok(()))) => (Some(i), Proposed::Applied),
            Ok((i, Err(refused))) => (Some(i), Proposed::Refused(refused)),
            Err(e) => (
                None,
                Proposed::Unknown(format!(
                    "the cluster configuration did not take the change: {e}"
                )),
            ),
        };
        // Applied here before the proposal returns (a forwarded one is committed by the leader
        // before this node hears of it): polled, since Raft's metrics follow the log.
        let deadline = Instant::now() + FORM_TIMEOUT;
        while let Some(i) = index
            && self.group.metrics().last_applied < Some(i)
            && Instant::now() < deadline
        {
            tokio::time::sleep(APPLIED_POLL).await;
        }
        install(srv, self.group.committed().borrow().clone());
        r
    }

    /// CLUSTER FAILOVER: starts a manual failover of this replica in the background, unless one
    /// is under way (it goes on; Redis would start it again, to the same end).
    pub fn start_manual_failover(self: &Arc<Self>, srv: &Arc<ServerState>, force: bool) {
        if self.failing_over.swap(true, Relaxed) {
            return;
        }
        let (node, srv) = (self.clone(), srv.clone());
        tokio::spawn(async move {
            match node.manual_failover(&srv, force).await {
                Ok(()) => tracing::warn!("Manual failover: this replica is now the primary"),
                Err(e) => tracing::warn!(reason = %e, "Manual failover aborted"),
            }
            node.failing_over.store(false, Relaxed);
        });
    }

    /// Carries out a manual failover as `shoal_cluster::failover` decides: ask the primary to
    /// hold writes and report its stream's end until this replica is caught up (not with FORCE),
    /// then propose `Change::Promote` of this node. Every wait is bounded; a failover given up
    /// before the proposal lets the primary resume at once (otherwise its pause ends by itself,
    /// or when it sees the promotion).
    async fn manual_failover(&self, srv: &Arc<ServerState>, force: bool) -> Result<(), String> {
        use shoal_cluster::failover::{
            MANUAL_FAILOVER_PAUSE_MS, MANUAL_FAILOVER_PROPOSE_TIMEOUT_MS, ManualFailover, Step,
        };
        let cl = srv.cluster.as_ref().ok_or("cluster mode is off")?;
        let me = cl.me();
        let cfg = cl.config();
        let primary = cfg
            .node(&me)
            .and_then(|n| n.replica_of.as_deref())
            .and_then(|p| cfg.node(p))
            .cloned()
            .ok_or("this node is not a replica of a known primary")?;
        if force {
            tracing::warn!("Forced failover user request accepted.");
        } else {
            tracing::warn!(primary = %primary.addr(), "Manual failover user request accepted.");
        }
        let mut mf = ManualFailover::new(force, crate::now_ms());
        let mut link: Option<crate::tls::LinkStream> = None;
        let pause = MANUAL_FAILOVER_PAUSE_MS.to_string();
        let outcome = loop {
            match mf.poll(srv.repl.offset(), crate::now_ms()) {
                Step::Wait => tokio::time::sleep(MANUAL_FAILOVER_POLL).await,
                Step::Promote => break Ok(()),
                Step::Abort(why) => break Err(why),
                Step::AskPrimary => {
                    let args = ["CLUSTER", "MFPAUSE", me.as_str(), pause.as_str()];
                    match ask_primary(srv, &mut link, &primary, &args).await {
                        Ok(end) => mf.on_report(end, srv.repl.offset()),
                        Err(e) => break Err(format!("asking {}: {e}", primary.addr())),
                    }
                }
            }
        };
        if let Err(why) = outcome {
            if mf.primary_held() {
                let args = ["CLUSTER", "MFPAUSE", me.as_str(), "0"];
                let _ = ask_primary(srv, &mut link, &primary, &args).await;
            }
            return Err(why);
        }
        drop(link);
        let timeout = Duration::from_millis(MANUAL_FAILOVER_PROPOSE_TIMEOUT_MS);
        self.propose_within(srv, Change::Promote { replica: me }, timeout)
            .await
    }
}

/// How long CLUSTER RESET of a node in a configuration of several asks the other members
/// whether they removed it...
pub const REMOVAL_WAIT: Duration = Duration::from_secs(2);
/// ...and how many of them it asks.
pub const REMOVAL_PEERS: usize = 3;

/// How long a node waits for the node it asks to meet it (which may add it to its group, as a
/// learner catching up and then a voter) to answer.
pub const MERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a manual failover looks at the stream it is catching up with.
pub const MANUAL_FAILOVER_POLL: Duration = Duration::from_millis(2);
/// How long the primary may take to answer a manual failover's request.
pub const MANUAL_FAILOVER_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How this node authenticates to another node's data port: `masteruser`/`masterauth`, else the
/// password its own clients give (`requirepass`: the nodes of a cluster share it); an empty
/// password means none.
fn internal_auth(srv: &ServerState) -> (String, String) {
    let cfg = srv.config();
    if cfg.masterauth.is_empty() {
        (String::new(), cfg.requirepass.clone())
    } else {
        (cfg.masteruser.clone(), cfg.masterauth.clone())
    }
}

/// Sends `args` to `primary` on `link` (connected and authenticated first if need be) and reads
/// the integer it answers; the link is dropped after an error.
async fn ask_primary(
    srv: &ServerState,
    link: &mut Option<crate::tls::LinkStream>,
    primary: &Node,
    args: &[&str],
) -> Result<u64, String> {
    use shoal_resp::Reply;
    let t = MANUAL_FAILOVER_REQUEST_TIMEOUT;
    if link.is_none() {
        *link = Some(connect_node(srv, &primary.ip, primary.port, t).await?);
    }
    let s = link.as_mut().expect("connected above");
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let r = crate::links::request(s, &bytes, t).await;
    match r {
        Ok(Reply::Int(end)) if end >= 0 => Ok(end as u64),
        Ok(Reply::Error(e)) => {
            *link = None;
            Err(e)
        }
        Ok(other) => {
            *link = None;
            Err(format!("unexpected reply {other:?}"))
        }
        Err(e) => {
            *link = None;
            Err(e)
        }
    }
}

/// Connects to another node's data port (its announced port: the TLS port under
/// `tls-cluster`) and authenticates as a node of the cluster.
async fn connect_node(
    srv: &ServerState,
    ip: &str,
    port: u16,
    timeout: Duration,
) -> Result<crate::tls::LinkStream, String> {
    use shoal_resp::Reply;
    let tls = crate::tls::cluster_links(&srv.config());
    let mut s = crate::tls::LinkStream::connect(
        ip,
        port,
        tls,
        Duration::from_millis(crate::links::CONNECT_TIMEOUT_MS),
    )
    .await
    .map_err(|e| format!("{ip}:{port}: {e}"))?;
    let (user, pass) = internal_auth(srv);
    if !pass.is_empty() {
        let auth: Vec<&[u8]> = if user.is_empty() {
            vec![b"AUTH", pass.as_bytes()]
        } else {
            vec![b"AUTH", user.as_bytes(), pass.as_bytes()]
        };
        if let Reply::Error(e) = crate::links::request(&mut s, &auth, timeout).await? {
            return Err(format!("{ip}:{port}: {e}"));
        }
    }
    Ok(s)
}

/// Sends one command to another node and expects `+OK`; its error comes back as the text
/// after `ERR `.
async fn ask_node(
    srv: &ServerState,
    ip: &str,
    port: u16,
    args: &[&str],
    timeout: Duration,
) -> Result<(), String> {
    use shoal_resp::Reply;
    let mut s = connect_node(
        srv,
        ip,
        port,
        Duration::from_millis(crate::links::CONNECT_TIMEOUT_MS),
    )
    .await?;
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    match crate::links::request(&mut s, &bytes, timeout).await {
        Ok(Reply::Status(_)) => Ok(()),
        Ok(Reply::Error(e)) => Err(e.strip_prefix("ERR ").unwrap_or(&e).to_string()),
        Ok(other) => Err(format!("{ip}:{port}: unexpected reply {other:?}")),
        Err(e) => Err(format!("{ip}:{port}: {e}")),
    }
}

/// What became of a proposed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proposed {
    /// Committed, and applied on this node.
    Applied,
    /// Committed as a no-op (the change's error text), or never proposed: it will not apply.
    Refused(String),
    /// Not known to be committed (no answer in time): it may still apply.
    Unknown(String),
}

/// Installs a committed configuration and makes the replication role follow it. A node that is
/// being added to a group sees the group's configurations before the one that names it: it
/// keeps showing itself alone until then.
fn install(srv: &Arc<ServerState>, cfg: Arc<Config>) {
    let Some(cl) = srv.cluster.as_ref() else {
        return;
    };
    let me = cl.me();
    if cfg.node(&me).is_some() {
        cl.formed.store(true, Relaxed);
    } else if !cl.formed.load(Relaxed) {
        return;
    }
    cl.install(cfg.clone());
    crate::log::set_node(&me);
    crate::log::set_epoch(cfg.epoch());
    shoal_commands::migration::resolve_imports(srv, &cfg, crate::now_ms());
    let Some(mine) = cfg.node(&me) else {
        return;
    };
    match mine.replica_of.as_ref().and_then(|p| cfg.node(p)) {
        Some(primary) => {
            let target = Role::Replica {
                host: primary.ip.clone(),
                port: primary.port,
            };
            // A manual failover held this node's writes until it saw its replica promoted:
            // they resume now, and are redirected to the new primary.
            srv.repl.failover.writes_paused_until_ms.store(0, Relaxed);
            if srv.repl.role() != target {
                let epoch = srv
                    .repl
                    .become_replica(&srv.ks, primary.ip.clone(), primary.port);
                tracing::info!(primary = %primary.addr(), "the cluster configuration makes this node a replica");
                tokio::spawn(crate::links::run_replica(
                    srv.clone(),
                    crate::links::Link::replication(srv),
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

/// What a node to meet is.
enum Probe {
    /// In no group, without keys: a group can add it.
    Fresh { id: String, bus_port: u16 },
    /// In a group; `alone` when its configuration names only itself.
    Formed { id: String, alone: bool },
}

/// Asks the node at `addr` what it is ([`Probe`]); a fresh node holding keys, or one not in
/// cluster mode, cannot be met. Blocking; over TLS under `tls-cluster` (`addr` is then the
/// node's TLS port).
fn meetable(addr: &str, tls: bool, auth: (String, String)) -> Result<Probe, String> {
    use crate::tool_client::{Client, Reply};
    let mut c =
        Client::connect_with(addr, MEET_TIMEOUT, tls).map_err(|e| format!("{addr}: {e}"))?;
    let (user, pass) = auth;
    if !pass.is_empty() {
        let r = if user.is_empty() {
            c.cmd(&["AUTH", &pass])
        } else {
            c.cmd(&["AUTH", &user, &pass])
        };
        // A node without a password lets anyone in: its refusal of AUTH is no failure.
        if let Reply::Error(e) = r.map_err(|e| format!("{addr}: {e}"))?
            && !e.contains("without any password configured")
        {
            return Err(format!("{addr}: {e}"));
        }
    }
    let mut text = |args: &[&str]| -> Result<String, String> {
        match c.cmd(args).map_err(|e| format!("{addr}: {e}"))? {
            Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Reply::Status(s) => Ok(s),
            Reply::Int(i) => Ok(i.to_string()),
            Reply::Error(e) => Err(format!("{addr}: {e}")),
            other => Err(format!("{addr}: unexpected reply {other:?}")),
        }
    };
    let info = text(&["INFO", "cluster"])?;
    if !info.contains("cluster_enabled:1") {
        return Err(format!("{addr} is not in cluster mode"));
    }
    let id = text(&["CLUSTER", "MYID"])?;
    let nodes = text(&["CLUSTER", "NODES"])?;
    if !info.contains("shoal_cluster_formed:0") {
        let alone = nodes.lines().filter(|l| !l.trim().is_empty()).count() == 1;
        return Ok(Probe::Formed { id, alone });
    }
    if text(&["DBSIZE"])? != "0" {
        return Err(format!("{addr} holds keys: a node joins a cluster empty"));
    }
    let bus_port = nodes
        .lines()
        .find(|l| l.starts_with(&id))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|a| a.split_once('@'))
        .and_then(|(_, b)| b.split(',').next()?.parse::<u16>().ok())
        .ok_or_else(|| format!("{addr}: no bus port in CLUSTER NODES"))?;
    Ok(Probe::Fresh { id, bus_port })
}

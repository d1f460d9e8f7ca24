//! Cluster configuration, sans I/O: which nodes form the cluster, which primary owns each of the
//! 16384 hash slots, which slots are moving, and the decision a node takes for a request whose
//! keys live in some slots (serve it, redirect with `-MOVED`/`-ASK`, or refuse with `-CROSSSLOT`,
//! `-TRYAGAIN`, `-CLUSTERDOWN`).
//!
//! The configuration changes only through [`Config::apply`] of a [`Change`], one at a time, so it
//! can be the state machine of a replicated log (the Raft group of cluster mode): every node that
//! applied the same changes holds the same configuration. Each change is checked before it is
//! applied (a refused change leaves the configuration as it was) and the invariants are asserted
//! after it: every slot has at most one owner, owners are primaries, the epoch only grows.

pub mod failover;
pub mod lease;
pub mod plan;
pub mod route;

use serde::{Deserialize, Serialize};

pub use route::{Presence, Route, RouteRequest, route};
pub use shoal_keyspace::{SLOTS, key_slot};

/// A node's identity: 40 lowercase hex characters, as Redis Cluster's node ids.
pub type NodeId = String;

/// Whether `id` is a well-formed node id.
pub fn valid_node_id(id: &str) -> bool {
    id.len() == 40
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub ip: String,
    /// Data port (clients) and cluster bus port.
    pub port: u16,
    pub bus_port: u16,
    /// `Some(primary)` for a replica.
    pub replica_of: Option<NodeId>,
    /// Bumped when the node takes slots over (Redis's config epoch).
    pub config_epoch: u64,
}

impl Node {
    pub fn is_primary(&self) -> bool {
        self.replica_of.is_none()
    }

    /// `ip:port`, as redirects name it.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

/// An inclusive range of slots. A range read with serde is checked as [`SlotRange::new`] checks
/// it, so a change that arrives from the network can never name a slot past the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawSlotRange")]
pub struct SlotRange {
    pub start: u16,
    pub end: u16,
}

/// A [`SlotRange`] as read, before it is checked.
#[derive(Deserialize)]
struct RawSlotRange {
    start: u16,
    end: u16,
}

impl TryFrom<RawSlotRange> for SlotRange {
    type Error = String;

    fn try_from(r: RawSlotRange) -> Result<SlotRange, String> {
        SlotRange::new(r.start, r.end)
            .ok_or_else(|| format!("bad slot range {}-{}", r.start, r.end))
    }
}

impl SlotRange {
    pub fn new(start: u16, end: u16) -> Option<SlotRange> {
        (start <= end && (end as usize) < SLOTS).then_some(SlotRange { start, end })
    }

    pub fn one(slot: u16) -> SlotRange {
        SlotRange {
            start: slot,
            end: slot,
        }
    }

    pub fn iter(self) -> impl Iterator<Item = u16> {
        self.start..=self.end
    }
}

/// A change of the configuration: an entry of the replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A node joins (as a primary without slots, or as a replica of `replica_of`).
    AddNode(Node),
    /// A node leaves; it must own no slot.
    RemoveNode(NodeId),
    /// Slots without an owner get `node` (a primary).
    AssignSlots {
        node: NodeId,
        ranges: Vec<SlotRange>,
    },
    /// Slots owned by anyone lose their owner.
    UnassignSlots { ranges: Vec<SlotRange> },
    /// Slots start moving from their owner to `to` (a primary): the owner keeps serving them, and
    /// redirects keys it no longer holds with `-ASK`.
    BeginMigration { to: NodeId, ranges: Vec<SlotRange> },
    /// The moving slots pass to their target in one step, and the target's epoch is bumped.
    FinishMigration { ranges: Vec<SlotRange> },
    /// Moving slots stay with their owner (a slot that is not moving stays as it is).
    CancelMigration { ranges: Vec<SlotRange> },
    /// The slots end up owned by `node` (a primary), whoever owned them and wherever they were
    /// moving (Redis's `CLUSTER SETSLOT slot NODE id`, which every node of a move is sent).
    SetOwner {
        node: NodeId,
        ranges: Vec<SlotRange>,
    },
    /// Atomic slot migration: the slots pass from `from` to `to` in one step, but only if `from`
    /// owns every one of them, none is moving the legacy way, and `from`'s config epoch is still
    /// `from_epoch` (a source that cannot tell whether its move committed bumps its epoch, so a
    /// late move is refused). `to`'s epoch is bumped.
    MoveSlots {
        from: NodeId,
        to: NodeId,
        ranges: Vec<SlotRange>,
        from_epoch: u64,
    },
    /// The node's config epoch becomes the newest (Redis's `CLUSTER BUMPEPOCH`).
    BumpEpoch { node: NodeId },
    /// The config epoch of a node that is alone in its configuration and still has epoch 0
    /// becomes `epoch` (Redis's `CLUSTER SET-CONFIG-EPOCH`, sent by `redis-cli --cluster create`
    /// to give each fresh node its own epoch); the configuration's epoch becomes at least it.
    SetConfigEpoch { node: NodeId, epoch: u64 },
    /// `replica` becomes the primary of its former primary's slots (failover); the former
    /// primary becomes its replica.
    Promote { replica: NodeId },
    /// Automatic failover decided by the leader: as `Promote`, but only if `primary` is still
    /// `replica`'s primary at config epoch `primary_epoch` (a decision taken twice, or
    /// overtaken by another change, applies at most once) and, with `in_sync_only`, only if
    /// `replica` is in the group's in-sync set.
    Failover {
        replica: NodeId,
        primary: NodeId,
        primary_epoch: u64,
        in_sync_only: bool,
    },
    /// The in-sync set of `primary`'s group becomes `replicas` (each a replica of it), if
    /// `primary` is still a primary at config epoch `primary_epoch`. Only the primary proposes
    /// it: a replica leaves the set before the primary acknowledges `sync` writes without it.
    SetInSync {
        primary: NodeId,
        primary_epoch: u64,
        replicas: Vec<NodeId>,
    },
    /// `node`, a primary without slots or replicas, becomes a replica of `primary`.
    Replicate { node: NodeId, primary: NodeId },
    /// A node is reached at another address now (it restarted on another port or host).
    SetAddress {
        node: NodeId,
        ip: String,
        port: u16,
        bus_port: u16,
    },
}

/// Why a change was refused; the configuration is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeError {
    UnknownNode(NodeId),
    DuplicateNode(NodeId),
    BadNodeId(String),
    NotAPrimary(NodeId),
    NotAReplica(NodeId),
    /// Redis's wording: `Slot N is already busy`.
    SlotBusy(u16),
    /// A slot of a move is not owned by the node it moves from.
    SlotNotOwnedBy(u16, NodeId),
    /// A move's source changed its config epoch since the move was prepared.
    StaleEpoch(NodeId),
    SlotUnassigned(u16),
    SlotNotMigrating(u16),
    SlotAlreadyMigrating(u16),
    /// The node still owns slots (or has replicas) and cannot leave.
    NodeInUse(NodeId),
    /// A node cannot replicate itself.
    ReplicateSelf,
    /// A node that owns slots (or has replicas) cannot become a replica.
    NotEmpty(NodeId),
    /// A replica named in the change does not follow the primary it names.
    NotReplicaOf(NodeId, NodeId),
    /// Automatic promotion of a replica outside the in-sync set.
    NotInSync(NodeId),
    /// A config epoch set by hand on a node that is not alone in its configuration.
    KnowsOtherNodes,
    /// A config epoch set by hand on a node whose epoch is not 0.
    ConfigEpochNonZero,
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeError::UnknownNode(id) => write!(f, "Unknown node {id}"),
            ChangeError::DuplicateNode(id) => write!(f, "Node {id} is already in the cluster"),
            ChangeError::BadNodeId(id) => write!(f, "Invalid node id {id}"),
            ChangeError::NotAPrimary(id) => write!(f, "Node {id} is not a primary"),
            ChangeError::NotAReplica(id) => write!(f, "Node {id} is not a replica"),
            ChangeError::SlotBusy(s) => write!(f, "Slot {s} is already busy"),
            ChangeError::SlotNotOwnedBy(s, id) => write!(f, "Slot {s} is not owned by {id}"),
            ChangeError::StaleEpoch(id) => {
                write!(f, "The config epoch of {id} changed since the move began")
            }
            // Redis's wording, from DELSLOTS.
            ChangeError::SlotUnassigned(s) => write!(f, "Slot {s} is already unassigned"),
            ChangeError::SlotNotMigrating(s) => write!(f, "Slot {s} is not migrating"),
            ChangeError::SlotAlreadyMigrating(s) => write!(f, "Slot {s} is already migrating"),
            ChangeError::NodeInUse(id) => write!(f, "Node {id} still serves slots or replicas"),
            // Redis's wording, from CLUSTER REPLICATE.
            ChangeError::ReplicateSelf => f.write_str("Can't replicate myself"),
            ChangeError::NotEmpty(_) => {
                f.write_str("To set a master the node must be empty and without assigned slots.")
            }
            ChangeError::NotReplicaOf(r, p) => write!(f, "Node {r} is not a replica of {p}"),
            ChangeError::NotInSync(r) => write!(f, "Node {r} is not in its group's in-sync set"),
            // Redis's wording, from CLUSTER SET-CONFIG-EPOCH.
            ChangeError::KnowsOtherNodes => f.write_str(
                "The user can assign a config epoch only when the node does not know any other node.",
            ),
            ChangeError::ConfigEpochNonZero => f.write_str("Node config epoch is already non-zero"),
        }
    }
}

/// No owner, in [`Config`]'s slot table.
const NONE: u16 = u16::MAX;

/// The cluster's configuration. Nodes are kept in the order they joined; slots refer to them by
/// index.
///
/// It serialises with serde (a Raft snapshot holds one); a configuration read back is checked
/// against the invariants and refused, not trusted, when it breaks one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct Config {
    /// Bumped by every applied change (Redis's `currentEpoch`).
    epoch: u64,
    nodes: Vec<Node>,
    /// For each slot, the index of its owner in `nodes`, or `NONE`.
    owner: Box<[u16]>,
    /// For each moving slot, the index of its target.
    migrating: std::collections::BTreeMap<u16, u16>,
    /// Replicas in their group's in-sync set: each holds every write its primary acknowledged
    /// under the `sync` strategy.
    #[serde(default)]
    in_sync: std::collections::BTreeSet<NodeId>,
    /// Promotions applied (manual and automatic failovers).
    #[serde(default)]
    failovers: u64,
    /// Slots with an owner (kept with `owner`: routing reads it for every request). Derived, so
    /// not serialised.
    #[serde(skip_serializing)]
    assigned: usize,
}

/// A [`Config`] as read, before its invariants are checked.
#[derive(Deserialize)]
struct RawConfig {
    epoch: u64,
    nodes: Vec<Node>,
    owner: Box<[u16]>,
    migrating: std::collections::BTreeMap<u16, u16>,
    #[serde(default)]
    in_sync: std::collections::BTreeSet<NodeId>,
    #[serde(default)]
    failovers: u64,
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(r: RawConfig) -> Result<Config, String> {
        let assigned = r.owner.iter().filter(|&&o| o != NONE).count();
        let c = Config {
            epoch: r.epoch,
            nodes: r.nodes,
            owner: r.owner,
            migrating: r.migrating,
            in_sync: r.in_sync,
            failovers: r.failovers,
            assigned,
        };
        match c.invariant_violation() {
            None => Ok(c),
            Some(why) => Err(format!("invalid cluster configuration: {why}")),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

impl Config {
    /// An empty cluster: no nodes, no slot assigned.
    pub fn new() -> Config {
        Config {
            epoch: 0,
            nodes: Vec::new(),
            owner: vec![NONE; SLOTS].into_boxed_slice(),
            migrating: Default::default(),
            in_sync: Default::default(),
            failovers: 0,
            assigned: 0,
        }
    }

    /// Promotions applied so far (manual and automatic failovers).
    pub fn failovers(&self) -> u64 {
        self.failovers
    }

    /// Whether `replica` is in its group's in-sync set.
    pub fn in_sync(&self, replica: &str) -> bool {
        self.in_sync.contains(replica)
    }

    /// The in-sync set of `primary`'s group, in the order the replicas joined the cluster.
    pub fn in_sync_of<'a>(&'a self, primary: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.replicas_of(primary)
            .filter(move |n| self.in_sync.contains(&n.id))
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.index_of(id).map(|i| &self.nodes[i])
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// The owner of a slot.
    pub fn owner(&self, slot: u16) -> Option<&Node> {
        match self.owner[slot as usize] {
            NONE => None,
            i => Some(&self.nodes[i as usize]),
        }
    }

    /// The target of a moving slot.
    pub fn migrating_to(&self, slot: u16) -> Option<&Node> {
        self.migrating.get(&slot).map(|&i| &self.nodes[i as usize])
    }

    /// Slots with an owner.
    pub fn slots_assigned(&self) -> usize {
        self.assigned
    }

    /// The slot ranges a node owns, in ascending order.
    pub fn ranges_of(&self, id: &str) -> Vec<SlotRange> {
        let Some(i) = self.index_of(id) else {
            return Vec::new();
        };
        let mut out: Vec<SlotRange> = Vec::new();
        for (slot, &o) in self.owner.iter().enumerate() {
            if o as usize != i {
                continue;
            }
            let slot = slot as u16;
            match out.last_mut() {
                Some(r) if r.end + 1 == slot => r.end = slot,
                _ => out.push(SlotRange::one(slot)),
            }
        }
        out
    }

    /// The replicas of a primary, in the order they joined.
    pub fn replicas_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes
            .iter()
            .filter(move |n| n.replica_of.as_deref() == Some(id))
    }

    /// Primaries that own at least one slot (Redis's `cluster_size`).
    pub fn size(&self) -> usize {
        let mut owners: Vec<u16> = self.owner.iter().copied().filter(|&o| o != NONE).collect();
        owners.sort_unstable();
        owners.dedup();
        owners.len()
    }

    /// Applies a change, or refuses it and changes nothing.
    pub fn apply(&mut self, change: &Change) -> Result<(), ChangeError> {
        self.check(change)?;
        match change {
            Change::AddNode(n) => self.nodes.push(n.clone()),
            Change::RemoveNode(id) => {
                let i = self.index_of(id).expect("checked") as u16;
                self.nodes.remove(i as usize);
                self.in_sync.remove(id);
                // Indexes above the removed node move down by one.
                for o in self.owner.iter_mut() {
                    if *o != NONE && *o > i {
                        *o -= 1;
                    }
                }
                for t in self.migrating.values_mut() {
                    if *t > i {
                        *t -= 1;
                    }
                }
            }
            Change::AssignSlots { node, ranges } => {
                let i = self.index_of(node).expect("checked") as u16;
                for s in ranges.iter().flat_map(|r| r.iter()) {
                    // Ranges of one change may overlap: count each slot once.
                    if std::mem::replace(&mut self.owner[s as usize], i) == NONE {
                        self.assigned += 1;
                    }
                }
            }
            Change::UnassignSlots { ranges } => {
                for s in ranges.iter().flat_map(|r| r.iter()) {
                    if std::mem::replace(&mut self.owner[s as usize], NONE) != NONE {
                        self.assigned -= 1;
                    }
                    self.migrating.remove(&s);
                }
            }
            Change::BeginMigration { to, ranges } => {
                let i = self.index_of(to).expect("checked") as u16;
                for s in ranges.iter().flat_map(|r| r.iter()) {
                    self.migrating.insert(s, i);
                }
            }
            Change::FinishMigration { ranges } => {
                let mut targets = Vec::new();
                for s in ranges.iter().flat_map(|r| r.iter()) {
                    // Ranges of one change may overlap: a slot named again moved already.
                    let Some(t) = self.migrating.remove(&s) else {
                        continue;
                    };
                    self.owner[s as usize] = t;
                    targets.push(t);
                }
                targets.sort_unstable();
                targets.dedup();
                for t in targets {
                    self.nodes[t as usize].config_epoch = self.epoch + 1;
                }
            }
            Change::MoveSlots { to, ranges, .. } => {
                let i = self.index_of(to).expect("checked") as u16;
                for s in ranges.iter().flat_map(|r| r.iter()) {
                    self.owner[s as usize] = i;
                }
                self.nodes[i as usize].config_epoch = self.epoch + 1;
            }
            Change::BumpEpoch { node } => {
                let i = self.index_of(node).expect("checked");
                self.nodes[i].config_epoch = self.epoch + 1;
            }
            Change::SetConfigEpoch { node, epoch } => {
                let i = self.index_of(node).expect("checked");
                self.nodes[i].config_epoch = *epoch;
                // Raised by one more below, as by every change: the node's epoch is never
                // ahead of the configuration's.
                self.epoch = self.epoch.max(*epoch);
            }
            Change::SetOwner { node, ranges } => {
                let i = self.index_of(node).expect("checked") as u16;
                for s in ranges.iter().flat_map(|r| r.iter()) {
                    self.migrating.remove(&s);
                    if std::mem::replace(&mut self.owner[s as usize], i) == NONE {
                        self.assigned += 1;
                    }
                }
                self.nodes[i as usize].config_epoch = self.epoch + 1;
            }
            Change::CancelMigration { ranges } => {
                for s in ranges.iter().flat_map(|r| r.iter()) {
                    self.migrating.remove(&s);
                }
            }
            Change::Replicate { node, primary } => {
                let i = self.index_of(node).expect("checked");
                self.nodes[i].replica_of = Some(primary.clone());
                self.in_sync.remove(node);
            }
            Change::SetAddress {
                node,
                ip,
                port,
                bus_port,
            } => {
                let i = self.index_of(node).expect("checked");
                let n = &mut self.nodes[i];
                n.ip = ip.clone();
                n.port = *port;
                n.bus_port = *bus_port;
            }
            Change::SetInSync {
                primary, replicas, ..
            } => {
                let members: Vec<NodeId> =
                    self.replicas_of(primary).map(|n| n.id.clone()).collect();
                for m in members {
                    if replicas.contains(&m) {
                        self.in_sync.insert(m);
                    } else {
                        self.in_sync.remove(&m);
                    }
                }
            }
            Change::Promote { replica } | Change::Failover { replica, .. } => {
                let r = self.index_of(replica).expect("checked");
                let old = self.nodes[r].replica_of.take().expect("checked");
                let p = self.index_of(&old).expect("checked");
                for o in self.owner.iter_mut() {
                    if *o as usize == p {
                        *o = r as u16;
                    }
                }
                for t in self.migrating.values_mut() {
                    if *t as usize == p {
                        *t = r as u16;
                    }
                }
                // The old primary and its other replicas follow the new one.
                let new_id = self.nodes[r].id.clone();
                for (k, n) in self.nodes.iter_mut().enumerate() {
                    if k == p || n.replica_of.as_deref() == Some(old.as_str()) {
                        n.replica_of = Some(new_id.clone());
                    }
                }
                self.nodes[r].config_epoch = self.epoch + 1;
                // The new primary leads the set; its old primary joins it only once caught up
                // again. The others stay: they hold every acknowledged write.
                self.in_sync.remove(&new_id);
                self.in_sync.remove(&old);
                self.failovers += 1;
            }
        }
        self.epoch += 1;
        self.check_invariants();
        Ok(())
    }

    /// Whether `change` may be applied (nothing is changed).
    fn check(&self, change: &Change) -> Result<(), ChangeError> {
        let primary = |id: &str| -> Result<usize, ChangeError> {
            let i = self
                .index_of(id)
                .ok_or_else(|| ChangeError::UnknownNode(id.into()))?;
            if self.nodes[i].is_primary() {
                Ok(i)
            } else {
                Err(ChangeError::NotAPrimary(id.into()))
            }
        };
        match change {
            Change::AddNode(n) => {
                if !valid_node_id(&n.id) {
                    return Err(ChangeError::BadNodeId(n.id.clone()));
                }
                if self.index_of(&n.id).is_some() {
                    return Err(ChangeError::DuplicateNode(n.id.clone()));
                }
                if let Some(p) = &n.replica_of {
                    primary(p)?;
                }
            }
            Change::RemoveNode(id) => {
                let i = self
                    .index_of(id)
                    .ok_or_else(|| ChangeError::UnknownNode(id.clone()))?;
                let owns = self.owner.iter().any(|&o| o as usize == i)
                    || self.migrating.values().any(|&t| t as usize == i);
                if owns || self.replicas_of(id).next().is_some() {
                    return Err(ChangeError::NodeInUse(id.clone()));
                }
            }
            Change::AssignSlots { node, ranges } => {
                primary(node)?;
                if let Some(s) = ranges
                    .iter()
                    .flat_map(|r| r.iter())
                    .find(|&s| self.owner[s as usize] != NONE)
                {
                    return Err(ChangeError::SlotBusy(s));
                }
            }
            Change::UnassignSlots { ranges } => {
                if let Some(s) = ranges
                    .iter()
                    .flat_map(|r| r.iter())
                    .find(|&s| self.owner[s as usize] == NONE)
                {
                    return Err(ChangeError::SlotUnassigned(s));
                }
            }
            Change::BeginMigration { to, ranges } => {
                let t = primary(to)?;
                for s in ranges.iter().flat_map(|r| r.iter()) {
                    match self.owner[s as usize] {
                        NONE => return Err(ChangeError::SlotUnassigned(s)),
                        o if o as usize == t => return Err(ChangeError::SlotBusy(s)),
                        _ => {}
                    }
                    // Moving to the same target already: nothing to change (both sides of a move
                    // may ask for it, each through its own view).
                    if self.migrating.get(&s).is_some_and(|&m| m as usize != t) {
                        return Err(ChangeError::SlotAlreadyMigrating(s));
                    }
                }
            }
            Change::CancelMigration { .. } => {}
            Change::MoveSlots {
                from,
                to,
                ranges,
                from_epoch,
            } => {
                let f = primary(from)?;
                let t = primary(to)?;
                if self.nodes[f].config_epoch != *from_epoch {
                    return Err(ChangeError::StaleEpoch(from.clone()));
                }
                for s in ranges.iter().flat_map(|r| r.iter()) {
                    if self.owner[s as usize] as usize != f {
                        return Err(ChangeError::SlotNotOwnedBy(s, from.clone()));
                    }
                    if f == t {
                        return Err(ChangeError::SlotBusy(s));
                    }
                    if self.migrating.contains_key(&s) {
                        return Err(ChangeError::SlotAlreadyMigrating(s));
                    }
                }
            }
            Change::BumpEpoch { node } => {
                self.index_of(node)
                    .ok_or_else(|| ChangeError::UnknownNode(node.clone()))?;
            }
            Change::SetConfigEpoch { node, .. } => {
                let i = self
                    .index_of(node)
                    .ok_or_else(|| ChangeError::UnknownNode(node.clone()))?;
                if self.nodes.len() > 1 {
                    return Err(ChangeError::KnowsOtherNodes);
                }
                if self.nodes[i].config_epoch != 0 {
                    return Err(ChangeError::ConfigEpochNonZero);
                }
            }
            Change::SetOwner { node, .. } => {
                primary(node)?;
            }
            Change::FinishMigration { ranges } => {
                if let Some(s) = ranges
                    .iter()
                    .flat_map(|r| r.iter())
                    .find(|s| !self.migrating.contains_key(s))
                {
                    return Err(ChangeError::SlotNotMigrating(s));
                }
            }
            Change::Replicate {
                node,
                primary: target,
            } => {
                let n = self
                    .index_of(node)
                    .ok_or_else(|| ChangeError::UnknownNode(node.clone()))?;
                primary(target)?;
                if node == target {
                    return Err(ChangeError::ReplicateSelf);
                }
                let serves = self.owner.iter().any(|&o| o as usize == n)
                    || self.migrating.values().any(|&t| t as usize == n)
                    || self.replicas_of(node).next().is_some();
                if serves {
                    return Err(ChangeError::NotEmpty(node.clone()));
                }
            }
            Change::SetAddress { node, .. } => {
                if self.index_of(node).is_none() {
                    return Err(ChangeError::UnknownNode(node.clone()));
                }
            }
            Change::Promote { replica } => {
                let r = self
                    .index_of(replica)
                    .ok_or_else(|| ChangeError::UnknownNode(replica.clone()))?;
                if self.nodes[r].is_primary() {
                    return Err(ChangeError::NotAReplica(replica.clone()));
                }
            }
            Change::Failover {
                replica,
                primary: p,
                primary_epoch,
                in_sync_only,
            } => {
                let pi = primary(p)?;
                if self.nodes[pi].config_epoch != *primary_epoch {
                    return Err(ChangeError::StaleEpoch(p.clone()));
                }
                let r = self
                    .index_of(replica)
                    .ok_or_else(|| ChangeError::UnknownNode(replica.clone()))?;
                if self.nodes[r].replica_of.as_deref() != Some(p.as_str()) {
                    return Err(ChangeError::NotReplicaOf(replica.clone(), p.clone()));
                }
                if *in_sync_only && !self.in_sync.contains(replica) {
                    return Err(ChangeError::NotInSync(replica.clone()));
                }
            }
            Change::SetInSync {
                primary: p,
                primary_epoch,
                replicas,
            } => {
                let pi = primary(p)?;
                if self.nodes[pi].config_epoch != *primary_epoch {
                    return Err(ChangeError::StaleEpoch(p.clone()));
                }
                for r in replicas {
                    let ri = self
                        .index_of(r)
                        .ok_or_else(|| ChangeError::UnknownNode(r.clone()))?;
                    if self.nodes[ri].replica_of.as_deref() != Some(p.as_str()) {
                        return Err(ChangeError::NotReplicaOf(r.clone(), p.clone()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Panics unless every slot has at most one owner, a primary; every moving slot has an owner
    /// and a primary target other than it; replicas follow primaries; node ids are unique.
    pub fn check_invariants(&self) {
        if let Some(why) = self.invariant_violation() {
            panic!("{why}");
        }
    }

    /// The first invariant of [`Config::check_invariants`] that does not hold, as text, or `None`.
    /// It never panics, so a configuration read from disk or the network can be checked with it.
    pub fn invariant_violation(&self) -> Option<String> {
        if self.owner.len() != SLOTS {
            return Some(format!(
                "one owner entry per slot: {} entries, not {SLOTS}",
                self.owner.len()
            ));
        }
        let counted = self.owner.iter().filter(|&&o| o != NONE).count();
        if self.assigned != counted {
            return Some(format!(
                "{} slots counted as assigned, {counted} in the table",
                self.assigned
            ));
        }
        for (slot, &o) in self.owner.iter().enumerate() {
            if o != NONE {
                let Some(n) = self.nodes.get(o as usize) else {
                    return Some(format!("slot {slot} owned by a node that is not there"));
                };
                if !n.is_primary() {
                    return Some(format!("slot {slot} owned by replica {}", n.id));
                }
            }
        }
        for (&slot, &t) in &self.migrating {
            let Some(&o) = self.owner.get(slot as usize) else {
                return Some(format!("moving slot {slot} is not a slot"));
            };
            if o == NONE {
                return Some(format!("moving slot {slot} has no owner"));
            }
            if o == t {
                return Some(format!("slot {slot} moves to its own owner"));
            }
            match self.nodes.get(t as usize) {
                None => return Some(format!("slot {slot} moves to a node that is not there")),
                Some(n) if !n.is_primary() => {
                    return Some(format!("slot {slot} moves to a replica"));
                }
                Some(_) => {}
            }
        }
        for n in &self.nodes {
            if let Some(p) = &n.replica_of {
                let Some(p) = self.node(p) else {
                    return Some(format!("{} follows an unknown node", n.id));
                };
                if !p.is_primary() {
                    return Some(format!("{} follows replica {}", n.id, p.id));
                }
            }
        }
        for r in &self.in_sync {
            match self.node(r) {
                None => return Some(format!("in-sync replica {r} is not in the cluster")),
                Some(n) if n.is_primary() => {
                    return Some(format!("primary {r} is in an in-sync set"));
                }
                Some(_) => {}
            }
        }
        let mut ids: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        if before != ids.len() {
            return Some("node ids are not unique".into());
        }
        None
    }
}

#[cfg(test)]
mod tests;

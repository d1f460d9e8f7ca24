//! Automatic failover in the simulator: data nodes that beat the voters, write leases, promotions
//! and the in-sync sets, driven by the production sans-IO code over the simulated network.
//!
//! **What runs** is production code where there is some: every voter keeps a
//! `shoal_cluster::lease::Keeper` (made again at each restart), hears beats with `on_beat`
//! against the configuration its state machine committed, and, while its Raft leads, confirms
//! its leadership with `ensure_linearizable` every half beat interval (`confirmed` with the
//! check's start) and proposes `Keeper::promotions` through Raft as `Promotion::change` makes
//! them (the loop of `server/src/lease.rs`). Every data node holds a `Holder`, beats every voter
//! of the membership its Raft member knows every `heartbeat_ms` (a request and an answer, each subject
//! to the run's loss, delays and partitions; an answer older than two intervals is dropped, as
//! the bus call's deadline drops it) and takes grants unless it was demoted since the beat left.
//! Configurations are the production state machine's (`Config::apply` under Raft).
//!
//! **What is modelled**: the data path. A data node is not a Raft member: it reads the
//! configuration a Raft member committed (its host, else the next member up on its side of a
//! partition; see `Hub::reader_for`), never going back to an older epoch, and proposes through
//! it. A primary with a running lease (by its own
//! clock) appends writes (unique ids) to its stream; replicas pull the primary's stream every
//! tick (a request carrying what they hold, which is their acknowledgement, and a reply with the
//! primary's stream), keep a longer stream of the same history, and take the primary's when
//! theirs diverged (a demoted primary truncates to its new primary's stream). A write is
//! acknowledged as `wait` in `server/src/in_sync.rs` decides: every committed in-sync member and
//! every joiner acknowledged it and the committed set has at least `min_replicas_ack` members;
//! after `ack_timeout` it is given up (not acknowledged). The in-sync set is kept as
//! `in_sync.rs`'s tick keeps it (re-implemented here, see [`Model::keep_in_sync`]): laggards
//! leave and caught-up joiners enter by a committed `SetInSync`. A crash loses a data node's
//! memory (its stream, its lease); it restarts as `Holder::restarted` (nothing it can vouch for
//! until it holds a lease or finishes a pull).
//!
//! **Clocks**: every node (voter runs and data node runs) reads its own clock, the virtual time
//! scaled by a rate within ±0.1% plus an offset; no code compares two nodes' clocks.
//!
//! **Checked**: one lease per group at every grant and every tick, each holder's lease read with
//! its own clock; at every promotion (when the new primary first sees itself primary), its
//! stream holds every write the group acknowledged before, and a write acknowledged later by an
//! older primary is in the stream the newer one started with (unless `min_replicas_ack` or more
//! replicas of the group lost their data, counted); every promotion of a data node in the log is
//! a `Failover` of an in-sync replica, proposed with `in_sync_only` (or, for a primary that
//! restarted empty, the hand-over to the live replica with the most, in or out of the set);
//! after the heal, every group
//! serves again with a full in-sync set, and group 0's primary, killed or cut off from everyone
//! (by the seed), is replaced within [`liveness_ms`], then the group acknowledges writes again.
//! Data nodes crash only while fewer than `min_replicas_ack` members of their group lost their
//! data (a member counts until an in-sync change admits it again).
//!
//! **Not a promotion, so counted rather than failed**: a restarted primary that no live replica
//! with data was heard to replace is let serve again, empty (`Keeper`'s documented choice); the
//! acknowledged writes it lacks are dropped from the check (`writes_dropped_by_restart`), though
//! a replica outside the in-sync set may have held them until it truncated to the new stream.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{Raft, ServerState};
use shoal_cluster::lease::{Answer, Beat, Holder, Keeper, Timing};
use shoal_cluster::{Change, Config, Node, SlotRange};
use shoal_keyspace::Rng;
use shoal_server::lease::BEAT_ANSWER_INTERVALS;
use shoal_server::raft::TypeConfig;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::sim::{Hub, lock, propose_answered, seeded_rng, trace};

/// Groups of data nodes (a primary and one or two replicas each).
pub const GROUPS: usize = 2;
/// Slots each group owns: the first `GROUPS * SLOTS_PER_GROUP` slots are theirs, and the
/// workload leaves them (and the data nodes) alone.
pub const SLOTS_PER_GROUP: u16 = 8;
pub const RESERVED_SLOTS: u16 = GROUPS as u16 * SLOTS_PER_GROUP;
/// How often a data node looks at its state (`in_sync::TICK`).
const TICK_MS: u64 = 20;
/// How long a data node waits for its host to apply an in-sync change it proposed
/// (`cluster_node::FORM_TIMEOUT`).
const SETTLE_MAX_MS: u64 = 10_000;
/// After the heal, every group must serve with a full in-sync set within this long.
const SERVE_MAX_MS: u64 = 30_000;

/// The longest a killed primary with a live in-sync replica may stay primary on a calm network
/// with every voter up: the node timeout; three election timeouts (the group may have to elect
/// a leader first: a leader a membership change just removed lingers a while) and the wait of a
/// new leader for its predecessors' leases to lapse; a few beat intervals and a commit.
pub fn liveness_ms(t: &Timing) -> u64 {
    let election_max_ms = shoal_server::raft::default_raft_config().election_timeout_max;
    t.node_timeout_ms + 3 * election_max_ms + t.inherited_lapse_ms() + 4 * t.heartbeat_ms + 1_000
}

/// Whether `id` is a data node of this model.
pub fn is_data_node(id: &str) -> bool {
    id.len() == 40
        && u64::from_str_radix(&id[24..], 16).is_ok_and(|v| (0xDA7A_0000..0xDA7A_0100).contains(&v))
}

fn data_id(k: usize) -> String {
    format!("{:040x}", 0xDA7A_0000_u64 + k as u64)
}

/// Whether a workload change would touch a data node or the groups' slots (it is drawn again).
/// `BumpEpoch` is let through: it makes in-sync changes and promotions decided before it stale;
/// `SetConfigEpoch` too (refused: the groups have more than one node).
pub fn touches_data(change: &Change) -> bool {
    let reserved = |ranges: &[SlotRange]| ranges.iter().any(|r| r.start < RESERVED_SLOTS);
    match change {
        Change::AddNode(n) => {
            is_data_node(&n.id) || n.replica_of.as_deref().is_some_and(is_data_node)
        }
        Change::RemoveNode(id) | Change::Promote { replica: id } => is_data_node(id),
        Change::SetAddress { node, .. } => is_data_node(node),
        Change::AssignSlots { node, ranges } | Change::SetOwner { node, ranges } => {
            is_data_node(node) || reserved(ranges)
        }
        Change::BeginMigration { to, ranges } => is_data_node(to) || reserved(ranges),
        Change::UnassignSlots { ranges }
        | Change::FinishMigration { ranges }
        | Change::CancelMigration { ranges } => reserved(ranges),
        Change::MoveSlots {
            from, to, ranges, ..
        } => is_data_node(from) || is_data_node(to) || reserved(ranges),
        Change::Replicate { node, primary } => is_data_node(node) || is_data_node(primary),
        Change::BumpEpoch { .. } | Change::SetConfigEpoch { .. } => false,
        Change::Failover { .. } | Change::SetInSync { .. } => true,
    }
}

/// A node's clock: virtual time scaled by `1 + ppm / 10^6`, plus an offset.
#[derive(Debug, Clone, Copy)]
struct Clock {
    ppm: i64,
    offset_ms: u64,
}

impl Clock {
    fn draw(r: &mut Rng) -> Clock {
        Clock {
            ppm: r.below(2001) as i64 - 1000,
            offset_ms: 1 + r.below(1 << 30) as u64,
        }
    }

    fn ms(&self, virtual_ms: u64) -> u64 {
        let scaled = (virtual_ms as i128 * (1_000_000 + self.ppm as i128)) / 1_000_000;
        self.offset_ms + scaled as u64
    }
}

/// Everything the seed decides about the data nodes.
#[derive(Debug, Clone)]
pub struct FailoverParams {
    pub node_timeout_ms: u64,
    /// Nodes of each group (the first is its first primary).
    pub group_sizes: Vec<usize>,
    pub min_replicas_ack: Vec<usize>,
    /// Chance per tick that a primary with a lease takes a write.
    pub write_per_100: usize,
    /// Chance per fault tick (100 ms) that a data node crashes.
    pub crash_per_10k: usize,
    pub down_ms_max: u64,
    /// After the heal, group 0's primary is cut off from everyone rather than killed.
    pub isolate_last: bool,
    /// A planted bug, for the test that the checks catch one: data nodes take leases this many
    /// times longer than granted (1: no bug).
    pub sabotage_lease_factor: u64,
}

impl FailoverParams {
    pub fn from_seed(seed: u64) -> FailoverParams {
        let mut r = seeded_rng(seed, 0xDA7A_F00D);
        let pick = |r: &mut Rng, xs: &[u64]| xs[r.below(xs.len())];
        let group_sizes: Vec<usize> = (0..GROUPS).map(|_| 2 + r.below(2)).collect();
        let min_replicas_ack = group_sizes
            .iter()
            .map(|&s| if s == 3 && r.below(2) == 0 { 2 } else { 1 })
            .collect();
        FailoverParams {
            node_timeout_ms: pick(&mut r, &[1000, 1500, 2000]),
            group_sizes,
            min_replicas_ack,
            write_per_100: 20 + r.below(60),
            crash_per_10k: pick(&mut r, &[0, 50, 150, 300]) as usize,
            down_ms_max: 500 + r.below(6000) as u64,
            isolate_last: r.below(2) == 0,
            sabotage_lease_factor: 1,
        }
    }
}

/// What the data nodes did, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailoverCounts {
    pub beats: u64,
    pub leases_granted: u64,
    /// Beats of a primary (by its voter's configuration) refused a lease.
    pub fenced_refusals: u64,
    /// Write attempts of a primary (by its own view) without a running lease.
    pub writes_fenced: u64,
    pub writes: u64,
    pub writes_acked: u64,
    pub writes_given_up: u64,
    /// Acknowledged writes not checked at a promotion because too many replicas lost their data.
    pub writes_excused: u64,
    /// A restarted primary served again without acknowledged writes (see
    /// `Model::serves_after_restart`), and the writes it lacked.
    pub restarts_served_empty: u64,
    pub writes_dropped_by_restart: u64,
    pub promotions_proposed: u64,
    /// Promotions of data nodes the log applied.
    pub promotions: u64,
    pub in_sync_changes: u64,
    pub crashes: u64,
    pub confirmations: u64,
    /// Time from the kill of a primary to its replacement after the heal (virtual ms).
    pub failover_ms: u64,
}

/// An in-sync change of a primary in flight, as `in_sync.rs`'s tick awaits it.
enum Settle {
    InFlight {
        admit: Vec<String>,
    },
    /// Applied at `index`: the admitted joiners leave the joining list once the host applied it
    /// (or after [`SETTLE_MAX_MS`]).
    Applied {
        index: u64,
        admit: Vec<String>,
        deadline_ms: u64,
    },
}

struct DataNode {
    id: String,
    group: usize,
    /// The Raft node whose committed configuration this node reads and proposes through, when
    /// it can (see `Hub::reader_for`)...
    host: u64,
    /// ...and the one it does now.
    reading_from: Option<u64>,
    up: bool,
    incarnation: u64,
    clock: Clock,
    side: u64,
    view: Arc<Config>,
    voters: Vec<u64>,
    holder: Holder,
    demotions: u64,
    /// Promoted while it held nothing it could vouch for (`Holder::is_restarted`): its office
    /// starts, and invariant 2 is checked, only when it first serves (it may hand over instead).
    office_pending: Option<Option<String>>,
    stream: Arc<Vec<u64>>,
    next_beat_ms: u64,
    /// As a primary: each replica's acknowledged offset and when (own clock) it was last heard.
    acks: BTreeMap<String, (u64, u64)>,
    /// Writes waiting for acknowledgements: (offset, id, taken at, own clock).
    pending: VecDeque<(u64, u64, u64)>,
    samples: VecDeque<(u64, u64)>,
    joining: BTreeMap<String, u64>,
    settle: Option<Settle>,
    down_until: Option<Instant>,
    task: Option<JoinHandle<()>>,
}

impl DataNode {
    fn now(&self, t0: Instant) -> u64 {
        self.clock.ms(t0.elapsed().as_millis() as u64)
    }

    fn is_primary(&self) -> bool {
        self.view.node(&self.id).is_some_and(|n| n.is_primary())
    }
}

/// A group's history, for the checks.
#[derive(Default)]
struct Group {
    /// Acknowledged writes: (id, offset, by node).
    acked: Vec<(u64, u64, usize)>,
    /// Every primary's office: the node, the stream it started with, and the promotions the
    /// configuration that made it primary counts (`Config::failovers`): the order of the offices
    /// in the log. (A node whose view lags may see itself promoted after the log replaced it.)
    offices: Vec<(usize, Arc<Vec<u64>>, u64)>,
    /// Members that lost their data in a crash, and the log index known then: they count until
    /// an in-sync change after that index admits them.
    lost: BTreeMap<String, u64>,
}

/// A voter's keeper, for its current run.
struct Voter {
    clock: Clock,
    keeper: Keeper,
    lead: JoinHandle<()>,
}

/// The data nodes, the voters' keepers and the checks.
pub struct Model {
    pub p: FailoverParams,
    pub timing: Timing,
    seed: u64,
    t0: Instant,
    nodes: Vec<DataNode>,
    voters: BTreeMap<u64, Voter>,
    groups: Vec<Group>,
    rng: Rng,
    fault_rng: Rng,
    next_write: u64,
    /// The next log index to read from the checker, the configuration before it, and since
    /// when (virtual ms) that index has been missing.
    next_index: u64,
    last_cfg: Option<Arc<Config>>,
    gap_since_ms: Option<u64>,
    pub counts: FailoverCounts,
    violations: Vec<String>,
    /// The data tasks run (after the groups were formed)...
    running: bool,
    /// ...and no more (the run is over for the model).
    stopped: bool,
}

type Shared = Arc<Mutex<Model>>;

impl Model {
    /// The model of seed `seed` beside `raft_nodes` Raft nodes; `sabotage`: with a planted bug
    /// (leases held 20 times longer than granted, and group 0's primary isolated after the heal).
    pub fn new(seed: u64, raft_nodes: u64, sabotage: bool) -> Model {
        let mut p = FailoverParams::from_seed(seed);
        if sabotage {
            p.sabotage_lease_factor = 20;
            p.isolate_last = true;
        }
        let timing = Timing::for_node_timeout(p.node_timeout_ms);
        let mut rng = seeded_rng(seed, 0xDA7A_0001);
        let mut nodes = Vec::new();
        for (g, &size) in p.group_sizes.iter().enumerate() {
            for _ in 0..size {
                let k = nodes.len();
                nodes.push(DataNode {
                    id: data_id(k),
                    group: g,
                    host: 1 + k as u64 % raft_nodes,
                    reading_from: None,
                    up: false,
                    incarnation: 0,
                    clock: Clock::draw(&mut rng),
                    side: 0,
                    view: Arc::new(Config::new()),
                    voters: Vec::new(),
                    holder: Holder::default(),
                    demotions: 0,
                    office_pending: None,
                    stream: Arc::new(Vec::new()),
                    next_beat_ms: 0,
                    acks: BTreeMap::new(),
                    pending: VecDeque::new(),
                    samples: VecDeque::new(),
                    joining: BTreeMap::new(),
                    settle: None,
                    down_until: None,
                    task: None,
                });
            }
        }
        Model {
            groups: (0..GROUPS).map(|_| Group::default()).collect(),
            p,
            timing,
            seed,
            t0: Instant::now(),
            nodes,
            voters: BTreeMap::new(),
            rng,
            fault_rng: seeded_rng(seed, 0xDA7A_0002),
            next_write: 1,
            next_index: 1,
            last_cfg: None,
            gap_since_ms: None,
            counts: FailoverCounts::default(),
            violations: Vec::new(),
            running: false,
            stopped: false,
        }
    }

    fn virtual_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn violation(&mut self, what: String) {
        trace(|| format!("failover violation: {what}"));
        self.violations.push(format!("(seed {}) {what}", self.seed));
    }

    pub fn first_violation(&self) -> Option<String> {
        self.violations.first().cloned()
    }

    fn min_ack(&self, g: usize) -> usize {
        self.p.min_replicas_ack[g]
    }

    /// The changes that form the groups: every data node, then each group's slots.
    fn formation(&self) -> Vec<Change> {
        let mut out = Vec::new();
        let mut first = 0;
        for (g, &size) in self.p.group_sizes.iter().enumerate() {
            let primary = data_id(first);
            for k in first..first + size {
                out.push(Change::AddNode(Node {
                    id: data_id(k),
                    ip: format!("10.0.3.{k}"),
                    port: 7300 + k as u16,
                    bus_port: 17300 + k as u16,
                    replica_of: (k != first).then(|| primary.clone()),
                    config_epoch: 0,
                }));
            }
            let start = g as u16 * SLOTS_PER_GROUP;
            out.push(Change::AssignSlots {
                node: primary,
                ranges: vec![SlotRange::new(start, start + SLOTS_PER_GROUP - 1).expect("slots")],
            });
            first += size;
        }
        out
    }

    fn one_lease_per_group(&mut self, g: usize) {
        let t0 = self.t0;
        let holders: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.group == g && n.up && n.holder.holds(n.now(t0)))
            .map(|n| n.id.as_str())
            .collect();
        if holders.len() > 1 {
            let what = format!("one lease per group: group {g} has leases on {holders:?}");
            self.violation(what);
        }
    }

    /// Node `i` takes the configuration `cfg` (newer than its view).
    fn set_view(&mut self, i: usize, cfg: Arc<Config>) {
        let n = &mut self.nodes[i];
        let known = n.view.node(&n.id).is_some();
        let was_primary = n.is_primary();
        let replaced = n.view.node(&n.id).and_then(|x| x.replica_of.clone());
        let (old_epoch, old_failovers) = (
            n.view.node(&n.id).map(|x| x.config_epoch),
            n.view.failovers(),
        );
        n.view = cfg;
        let now_primary = n.is_primary();
        // Promoted again without ever seeing the configuration that made it a replica (seed
        // 2458: cut off while its replica was promoted, handed its slots back when that one
        // restarted empty): a new office all the same.
        let repromoted = was_primary
            && now_primary
            && known
            && n.view.failovers() > old_failovers
            && n.view.node(&n.id).map(|x| x.config_epoch) != old_epoch;
        if was_primary && !now_primary {
            // Demoted: the lease is given up, writes waiting are not acknowledged.
            n.demotions += 1;
            n.holder.give_up();
            n.pending.clear();
            n.acks.clear();
            n.samples.clear();
            n.joining.clear();
            n.office_pending = None;
            trace(|| format!("data node {i} sees itself demoted"));
        }
        if (now_primary && !was_primary) || repromoted {
            let g = n.group;
            let stream = n.stream.clone();
            let order = n.view.failovers();
            if known {
                trace(|| {
                    format!(
                        "data node {i} sees itself promoted (stream {})",
                        stream.len()
                    )
                });
                if self.nodes[i].holder.is_restarted() {
                    // It serves only if no live replica holds more: decided at its first grant.
                    self.nodes[i].office_pending = Some(replaced);
                    return;
                }
                self.office_starts(i, replaced);
            }
            self.groups[g].offices.push((i, stream, order));
        }
    }

    /// Invariant 2 at a promotion: the new primary holds every write the group acknowledged.
    fn office_starts(&mut self, i: usize, replaced: Option<String>) {
        let g = self.nodes[i].group;
        let stream = self.nodes[i].stream.clone();
        let me = self.nodes[i].id.clone();
        let missing: Vec<(u64, u64, usize)> = self.groups[g]
            .acked
            .iter()
            .filter(|&&(id, off, _)| stream.get(off as usize - 1) != Some(&id))
            .copied()
            .collect();
        let lost_replicas = self.groups[g]
            .lost
            .keys()
            .filter(|id| Some(*id) != replaced.as_ref())
            .count();
        if !missing.is_empty() {
            if lost_replicas >= self.min_ack(g) {
                self.counts.writes_excused += missing.len() as u64;
                self.groups[g]
                    .acked
                    .retain(|&(id, off, _)| stream.get(off as usize - 1) == Some(&id));
            } else {
                let (id, off, by) = missing[0];
                let what = format!(
                    "acknowledged write lost: data node {i} ({me}) became primary of group {g} \
                     with a stream of {} writes that lacks {} acknowledged writes, the first \
                     write {id} at offset {off} acknowledged by data node {by} ({lost_replicas} \
                     replicas lost their data, min_replicas_ack {})",
                    stream.len(),
                    missing.len(),
                    self.min_ack(g)
                );
                self.violation(what);
            }
        }
        self.groups[g].lost.remove(&me);
    }

    /// Primary `i` restarted (its memory lost) and the leader let it serve again rather than
    /// hand over, since no in-sync replica was heard (`Keeper`'s documented choice): what the
    /// group acknowledged and `i` lacks is gone, though a replica out of the in-sync set may
    /// hold it (it truncates to `i`'s stream). Not a promotion: counted, not failed.
    fn serves_after_restart(&mut self, i: usize) {
        let g = self.nodes[i].group;
        let stream = self.nodes[i].stream.clone();
        let before = self.groups[g].acked.len();
        self.groups[g]
            .acked
            .retain(|&(id, off, _)| stream.get(off as usize - 1) == Some(&id));
        let gone = (before - self.groups[g].acked.len()) as u64;
        if gone > 0 {
            self.counts.writes_dropped_by_restart += gone;
            self.counts.restarts_served_empty += 1;
            let held: Vec<usize> = (0..self.nodes.len())
                .filter(|&k| self.nodes[k].group == g && self.nodes[k].stream.len() > stream.len())
                .collect();
            trace(|| {
                format!(
                    "data node {i} serves again after a restart without {gone} acknowledged                      writes (data nodes {held:?} hold longer streams)"
                )
            });
        }
    }

    /// Primary `i` acknowledges write `id` at `off`: recorded, and held against the stream any
    /// newer primary of the group started with.
    fn acknowledged(&mut self, i: usize, id: u64, off: u64) {
        let g = self.nodes[i].group;
        self.counts.writes_acked += 1;
        self.groups[g].acked.push((id, off, i));
        let offices = &self.groups[g].offices;
        let Some(&(_, _, mine)) = offices.iter().rev().find(|&&(n, _, _)| n == i) else {
            return;
        };
        let lost = self.groups[g].lost.len();
        let later: Vec<usize> = offices
            .iter()
            .filter(|&&(n, ref s, order)| {
                n != i && order > mine && s.get(off as usize - 1) != Some(&id)
            })
            .map(|&(n, _, _)| n)
            .collect();
        if let Some(&n) = later.first()
            && lost < self.min_ack(g)
        {
            let what = format!(
                "acknowledged write lost: data node {i} acknowledged write {id} at offset {off} \
                 after data node {n} became primary of group {g} without it"
            );
            self.violation(what);
        }
    }

    /// The write side (`in_sync::wait`) and the in-sync keeping of primary `i`; returns an
    /// in-sync change to propose.
    fn primary_tick(&mut self, i: usize, now: u64) -> Option<Change> {
        let t = self.timing;
        let g = self.nodes[i].group;
        let min = self.min_ack(g);
        let ack_timeout = t.node_timeout_ms;
        let lag_max = (t.node_timeout_ms / 2)
            .min(ack_timeout / 2)
            .max(2 * TICK_MS);
        let write = self.rng.below(100) < self.p.write_per_100;
        let n = &mut self.nodes[i];
        if !n.view.ranges_of(&n.id).is_empty() && write {
            if n.holder.holds(now) {
                let id = self.next_write;
                self.next_write += 1;
                self.counts.writes += 1;
                Arc::make_mut(&mut n.stream).push(id);
                n.pending.push_back((n.stream.len() as u64, id, now));
            } else {
                self.counts.writes_fenced += 1;
            }
        }
        // Acknowledgements: every committed member and joiner has it, and enough members.
        let me = n.id.clone();
        let members: Vec<String> = n.view.in_sync_of(&me).map(|r| r.id.clone()).collect();
        let acks = &n.acks;
        let acked_by = |id: &str, off: u64| acks.get(id).is_some_and(|a| a.0 >= off);
        let joining = &n.joining;
        let mut done = Vec::new();
        let mut given_up = 0;
        n.pending.retain(|&(off, id, at)| {
            let all = members.iter().all(|m| acked_by(m, off))
                && joining.keys().all(|j| acked_by(j, off));
            if all && members.len() >= min {
                done.push((id, off));
                false
            } else if now.saturating_sub(at) >= ack_timeout {
                given_up += 1;
                false
            } else {
                true
            }
        });
        self.counts.writes_given_up += given_up;
        for (id, off) in done {
            self.acknowledged(i, id, off);
        }
        self.keep_in_sync(i, now, lag_max)
    }

    /// `in_sync.rs`'s tick, on the model's primary `i` (same decisions, same order).
    fn keep_in_sync(&mut self, i: usize, now: u64, lag_max: u64) -> Option<Change> {
        let n = &mut self.nodes[i];
        let me = n.id.clone();
        let replicas: Vec<String> = n.view.replicas_of(&me).map(|r| r.id.clone()).collect();
        // `in_sync.rs` awaits its change: no tick runs meanwhile.
        match n.settle {
            Some(Settle::InFlight { .. }) => return None,
            Some(Settle::Applied { .. }) => return None,
            None => {}
        }
        // Sampled lease or not, as `in_sync.rs` does (seed 66: samples taken only under a lease
        // made a primary back from a spell without one drop caught-up members at once).
        let end = n.stream.len() as u64;
        n.samples.push_back((now, end));
        while n
            .samples
            .front()
            .is_some_and(|&(t, _)| now.saturating_sub(t) > 2 * lag_max + TICK_MS)
        {
            n.samples.pop_front();
        }
        if replicas.is_empty() || !n.holder.holds(now) {
            n.joining.clear();
            return None;
        }
        // A replica is attached while it pulled within the lag bound.
        let link = |n: &DataNode, id: &str| {
            n.acks
                .get(id)
                .filter(|&&(_, at)| now.saturating_sub(at) <= lag_max)
                .copied()
        };
        let acked = |n: &DataNode, id: &str| link(n, id).map_or(0, |a| a.0);
        let caught_up_at = |n: &DataNode, ack: u64| {
            n.samples
                .iter()
                .rev()
                .find(|&&(_, e)| e <= ack)
                .map(|&(t, _)| t)
        };
        let lagging = |n: &DataNode, id: &str| {
            caught_up_at(n, acked(n, id)).is_none_or(|t| now.saturating_sub(t) > lag_max)
        };
        let members: Vec<String> = n.view.in_sync_of(&me).map(|r| r.id.clone()).collect();
        let keep: Vec<String> = replicas
            .iter()
            .filter(|r| members.contains(r) && !lagging(n, r))
            .cloned()
            .collect();
        n.joining
            .retain(|id, _| replicas.contains(id) && !members.contains(id));
        let mut admit = Vec::new();
        for r in &replicas {
            if members.contains(r) {
                continue;
            }
            let ack = acked(n, r);
            match n.joining.get(r).copied() {
                Some(_) if lagging(n, r) => {
                    n.joining.remove(r);
                }
                Some(mark) if ack >= mark => admit.push(r.clone()),
                Some(_) => {}
                // Caught up a moment ago, as `in_sync.rs` decides (under a steady write load an
                // acknowledgement is rarely exactly at the end).
                None if link(n, r).is_some()
                    && caught_up_at(n, ack)
                        .is_some_and(|t| now.saturating_sub(t) <= lag_max / 4) =>
                {
                    n.joining.insert(r.clone(), end);
                }
                None => {}
            }
        }
        let mut next = keep;
        next.extend(admit.iter().cloned());
        next.sort();
        let mut current = members;
        current.sort();
        if next == current {
            return None;
        }
        let epoch = n.view.node(&me)?.config_epoch;
        trace(|| format!("data node {i} proposes in-sync set {next:?} (admit {admit:?})"));
        n.settle = Some(Settle::InFlight { admit });
        self.counts.in_sync_changes += 1;
        Some(Change::SetInSync {
            primary: me,
            primary_epoch: epoch,
            replicas: next,
        })
    }

    /// One tick of data node `i`: its view, its beats, its duties as a primary or a replica.
    fn tick(&mut self, hub: &Hub, i: usize) -> Vec<Action> {
        let t0 = self.t0;
        let mut out = Vec::new();
        let n = &self.nodes[i];
        if !n.up {
            return out;
        }
        let host = hub.reader_for(n.host, n.side);
        self.nodes[i].reading_from = host;
        let n = &self.nodes[i];
        if let Some(host) = host {
            if let Some(cfg) = hub.committed_of(host)
                && cfg.epoch() > n.view.epoch()
            {
                self.set_view(i, cfg);
            }
            if let Some(v) = hub.voters_of(host) {
                self.nodes[i].voters = v;
            }
        }
        let n = &mut self.nodes[i];
        let now = n.now(t0);
        if now >= n.next_beat_ms {
            n.next_beat_ms = now + self.timing.heartbeat_ms;
            let beat = Beat {
                node: n.id.clone(),
                holds: n.holder.holds(now),
                restarted: n.holder.is_restarted(),
                offset: n.stream.len() as u64,
                sync: true,
            };
            for &v in &n.voters {
                out.push(Action::Beat {
                    voter: v,
                    beat: beat.clone(),
                    sent_ms: now,
                    demotions: n.demotions,
                });
            }
        }
        if let Some(Settle::Applied {
            index,
            admit,
            deadline_ms,
        }) = &n.settle
        {
            let applied = host.is_some_and(|host| {
                hub.applied_of(host).is_some_and(|a| a >= *index)
                    && n.view.epoch() >= hub.committed_of(host).map_or(0, |c| c.epoch())
            });
            if applied || now >= *deadline_ms {
                for id in admit.clone() {
                    n.joining.remove(&id);
                }
                n.settle = None;
            }
        }
        if n.is_primary() {
            if let Some(change) = self.primary_tick(i, now) {
                out.push(Action::Propose { change });
            }
        } else if let Some(p) = n.view.node(&n.id).and_then(|x| x.replica_of.clone())
            && let Some(pi) = self.nodes.iter().position(|x| x.id == p)
        {
            let n = &self.nodes[i];
            out.push(Action::Pull {
                primary: pi,
                len: n.stream.len() as u64,
                last: n.stream.last().copied(),
            });
        }
        self.one_lease_per_group(self.nodes[i].group);
        out
    }

    /// An in-sync change of node `i` (run `inc`) returned.
    fn proposed(&mut self, i: usize, inc: u64, r: Option<(u64, Result<(), String>)>) {
        let t0 = self.t0;
        let n = &mut self.nodes[i];
        if n.incarnation != inc {
            return;
        }
        let admit = match n.settle.take() {
            Some(Settle::InFlight { admit }) => admit,
            other => {
                n.settle = other;
                return;
            }
        };
        if let Some((index, Ok(()))) = r {
            n.settle = Some(Settle::Applied {
                index,
                admit,
                deadline_ms: n.now(t0) + SETTLE_MAX_MS,
            });
        }
    }

    /// A beat from node `i` reaches voter `v`: its keeper answers.
    fn hear_beat(&mut self, hub: &Hub, v: u64, beat: Beat) -> Option<Answer> {
        let t0 = self.t0;
        let cfg = hub.committed_of(v)?;
        let voter = self.voters.get_mut(&v)?;
        let now = voter.clock.ms(t0.elapsed().as_millis() as u64);
        let primary = cfg.node(&beat.node).is_some_and(|n| n.is_primary());
        let answer = voter.keeper.on_beat(&cfg, beat, now);
        self.counts.beats += 1;
        if primary && let Answer::Refused(why) = &answer {
            self.counts.fenced_refusals += 1;
            trace(|| format!("voter {v} refuses a lease: {why}"));
        }
        Some(answer)
    }

    /// The answer to a beat node `i` (run `inc`) sent at `sent_ms` arrives.
    fn beat_answered(&mut self, i: usize, inc: u64, sent_ms: u64, demotions: u64, a: Answer) {
        let t0 = self.t0;
        let ttl = self.timing.heartbeat_ms * BEAT_ANSWER_INTERVALS;
        let n = &mut self.nodes[i];
        if !n.up || n.incarnation != inc || n.now(t0) > sent_ms + ttl {
            return;
        }
        if let Answer::Granted { lease_ms } = a
            && n.demotions == demotions
        {
            let first = !n.holder.holds(n.now(t0));
            let restarted = n.holder.is_restarted();
            n.holder
                .granted(sent_ms, lease_ms * self.p.sabotage_lease_factor);
            self.counts.leases_granted += 1;
            let g = n.group;
            if first {
                trace(|| format!("data node {i} gets a lease of {lease_ms} ms"));
            }
            if restarted {
                self.serves_after_restart(i);
            }
            if let Some(replaced) = self.nodes[i].office_pending.take() {
                let stream = self.nodes[i].stream.clone();
                let order = self.nodes[i].view.failovers();
                self.office_starts(i, replaced);
                self.groups[g].offices.push((i, stream, order));
            }
            self.one_lease_per_group(g);
        }
    }

    /// A replica's pull reaches primary `p` (run `inc`): its acknowledgement is taken if it
    /// holds a prefix of this primary's stream; the answer is the stream. A primary that holds
    /// nothing it can vouch for (`Holder::is_restarted`) refuses, as `PSYNC` does
    /// (`LeaseState::vouches`): a replica that restarted too would otherwise finish a sync of
    /// nothing and look like a member with data to the voters.
    fn serve_pull(
        &mut self,
        p: usize,
        inc: u64,
        replica: &str,
        len: u64,
        last: Option<u64>,
    ) -> Option<Arc<Vec<u64>>> {
        let t0 = self.t0;
        let n = &mut self.nodes[p];
        if !n.up || n.incarnation != inc || n.holder.is_restarted() {
            return None;
        }
        let now = n.now(t0);
        let same = len as usize <= n.stream.len()
            && (len == 0 || n.stream.get(len as usize - 1).copied() == last);
        n.acks
            .insert(replica.to_string(), (if same { len } else { 0 }, now));
        Some(n.stream.clone())
    }

    /// The primary's stream reaches replica `i` (run `inc`).
    fn pulled(&mut self, i: usize, inc: u64, primary: usize, theirs: Arc<Vec<u64>>) {
        let n = &self.nodes[i];
        let still = n.view.node(&n.id).and_then(|x| x.replica_of.as_deref())
            == Some(self.nodes[primary].id.as_str());
        let n = &mut self.nodes[i];
        if !n.up || n.incarnation != inc || !still {
            return;
        }
        // A finished pull is a finished sync: this replica holds its primary's data.
        n.holder.synced();
        if theirs.starts_with(&n.stream) {
            n.stream = theirs;
        } else if !n.stream.starts_with(&theirs) {
            // Diverged: a demoted primary drops what its new primary does not have.
            trace(|| {
                format!(
                    "data node {i} truncates its stream of {} to its primary's {}",
                    n.stream.len(),
                    theirs.len()
                )
            });
            n.stream = theirs;
        }
    }

    /// Reads the log's configurations in order (from the checker): every promotion of a data
    /// node must be a `Failover` of an in-sync replica; in-sync changes readmit nodes that lost
    /// their data.
    fn follow_log(&mut self, checker: &crate::checker::Checker) {
        loop {
            let Some((change, cfg)) = checker.entry_at(self.next_index) else {
                // A gap (an index only a snapshot covered so far): skip it after a while.
                let now = self.virtual_ms();
                let since = *self.gap_since_ms.get_or_insert(now);
                match checker.next_known(self.next_index) {
                    Some(next) if now.saturating_sub(since) > 5_000 => {
                        self.next_index = next;
                        self.last_cfg = None;
                        self.gap_since_ms = None;
                        continue;
                    }
                    _ => return,
                }
            };
            self.gap_since_ms = None;
            let index = self.next_index;
            self.next_index += 1;
            if let Some(prev) = self.last_cfg.clone() {
                for n in cfg.nodes().iter().filter(|n| is_data_node(&n.id)) {
                    let was_replica = prev.node(&n.id).is_some_and(|x| !x.is_primary());
                    if !(was_replica && n.is_primary()) {
                        continue;
                    }
                    self.counts.promotions += 1;
                    trace(|| format!("the log promotes data node {} at index {index}", n.id));
                    // A hand-over from a restarted (empty) primary may name a replica outside
                    // the in-sync set (it holds at least as much); the promotion check above
                    // still requires every acknowledged write on it.
                    let handover = matches!(
                        &change,
                        Some(Change::Failover {
                            replica,
                            in_sync_only: false,
                            ..
                        }) if *replica == n.id
                    );
                    match &change {
                        // Known only from a snapshot so far: the configurations still tell.
                        None => {}
                        Some(Change::Failover {
                            replica,
                            in_sync_only: true,
                            ..
                        }) if *replica == n.id => {}
                        _ if handover => {}
                        other => {
                            let what = format!(
                                "data node {} promoted at index {index} by {other:?}, not an \
                                 in-sync-only failover",
                                n.id
                            );
                            self.violation(what);
                        }
                    }
                    if !prev.in_sync(&n.id) && !handover {
                        let what = format!(
                            "data node {} promoted at index {index} though not in sync",
                            n.id
                        );
                        self.violation(what);
                    }
                }
            }
            if let Some(Change::SetInSync { replicas, .. }) = &change {
                for g in &mut self.groups {
                    g.lost.retain(|id, at| {
                        !(replicas.contains(id) && index > *at && cfg.in_sync(id))
                    });
                }
            }
            self.last_cfg = Some(cfg);
        }
    }

    /// The primary of group `g` by the log as read so far, and its in-sync set.
    fn primary_of(&self, g: usize) -> Option<(usize, Vec<String>)> {
        let cfg = self.last_cfg.as_ref()?;
        let i = self
            .nodes
            .iter()
            .position(|n| n.group == g && cfg.node(&n.id).is_some_and(|x| x.is_primary()))?;
        let members = cfg
            .in_sync_of(&self.nodes[i].id)
            .map(|n| n.id.clone())
            .collect();
        Some((i, members))
    }

    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if let Some(t) = n.task.take() {
            t.abort();
        }
        n.up = false;
        n.incarnation += 1;
        n.holder = Holder::default();
        n.office_pending = None;
        n.stream = Arc::new(Vec::new());
        n.acks.clear();
        n.pending.clear();
        n.samples.clear();
        n.joining.clear();
        n.settle = None;
        let (g, id) = (n.group, n.id.clone());
        self.counts.crashes += 1;
        let at = self.next_index;
        self.groups[g].lost.insert(id, at);
        trace(|| format!("data node {i} crashes"));
    }
}

/// What a data node's tick asks its task to do, outside the model's lock.
enum Action {
    Beat {
        voter: u64,
        beat: Beat,
        sent_ms: u64,
        demotions: u64,
    },
    Pull {
        primary: usize,
        len: u64,
        last: Option<u64>,
    },
    Propose {
        change: Change,
    },
}

/// The model and the run's hub, as every task of the model holds them.
#[derive(Clone)]
pub struct Handles {
    pub model: Shared,
    pub hub: Arc<Mutex<Hub>>,
}

impl Handles {
    /// Voter `id` (re)started with `raft`: a new keeper on a new clock, and its leader loop.
    pub fn voter_started(&self, id: u64, raft: Raft<TypeConfig>) {
        let mut m = lock(&self.model);
        if m.stopped {
            return;
        }
        let clock = Clock::draw(&mut m.rng);
        let now = clock.ms(m.virtual_ms());
        let keeper = Keeper::new(m.timing, now);
        let lead = tokio::spawn(lead(self.clone(), id, raft));
        if let Some(old) = m.voters.insert(
            id,
            Voter {
                clock,
                keeper,
                lead,
            },
        ) {
            old.lead.abort();
        }
    }

    pub fn voter_crashed(&self, id: u64) {
        if let Some(v) = lock(&self.model).voters.remove(&id) {
            v.lead.abort();
        }
    }

    /// Adds the data nodes and their slots to the configuration, and starts them.
    pub async fn form(&self, max_ms: u64) -> Result<(), String> {
        let changes = lock(&self.model).formation();
        let deadline = Instant::now() + Duration::from_millis(max_ms);
        for change in changes {
            loop {
                if Instant::now() > deadline {
                    return Err(format!("the data groups did not form within {max_ms} ms"));
                }
                let leader = lock(&self.hub).leader_raft();
                if let Some(raft) = leader
                    && let Some((_, r)) = propose_answered(&self.hub, raft, change.clone(), 0).await
                {
                    if let Err(e) = r {
                        return Err(format!("forming the data groups: {change:?}: {e}"));
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let n = lock(&self.model).nodes.len();
        let mut m = lock(&self.model);
        m.running = true;
        drop(m);
        for i in 0..n {
            self.start_data(i);
        }
        Ok(())
    }

    fn start_data(&self, i: usize) {
        let mut m = lock(&self.model);
        let clock = Clock::draw(&mut m.rng);
        let n = &mut m.nodes[i];
        n.up = true;
        n.down_until = None;
        n.incarnation += 1;
        n.clock = clock;
        n.next_beat_ms = 0;
        // Nothing it can vouch for until it holds a lease or finishes a sync (as the server).
        n.holder = Holder::restarted();
        let inc = n.incarnation;
        n.task = Some(tokio::spawn(data_node(self.clone(), i, inc)));
        trace(|| format!("data node {i} starts"));
    }

    /// A fault tick: restarts data nodes whose time came, crashes one now and then (while the
    /// group has fewer than `min_replicas_ack` members that lost their data), and checks.
    pub fn fault_tick(&self) -> Result<(), String> {
        let now = Instant::now();
        let due: Vec<usize> = {
            let m = lock(&self.model);
            if !m.running {
                return Ok(());
            }
            m.nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.down_until.is_some_and(|t| t <= now))
                .map(|(i, _)| i)
                .collect()
        };
        for i in due {
            self.start_data(i);
        }
        let mut m = lock(&self.model);
        if m.fault_rng.below(10_000) < m.p.crash_per_10k {
            let count = m.nodes.len();
            let k = m.fault_rng.below(count);
            let g = m.nodes[k].group;
            if m.nodes[k].up && m.groups[g].lost.len() < m.min_ack(g) {
                m.crash(k);
                let max = m.p.down_ms_max as usize;
                let ms = 100 + m.fault_rng.below(max) as u64;
                m.nodes[k].down_until = Some(now + Duration::from_millis(ms));
            }
        }
        drop(m);
        self.check()
    }

    /// Puts data nodes on sides of a partition (`split`: each at random; else all on side 0
    /// but, sometimes, one alone on side 1).
    pub fn partition(&self, r: &mut Rng, split: bool) {
        let mut m = lock(&self.model);
        let n = m.nodes.len();
        let alone = r.below(2 * n);
        for (k, node) in m.nodes.iter_mut().enumerate() {
            node.side = if split {
                r.below(2) as u64
            } else {
                u64::from(k == alone)
            };
        }
    }

    pub fn calm(&self) {
        for n in &mut lock(&self.model).nodes {
            n.side = 0;
        }
    }

    /// Reads the log and fails on the first violation.
    pub fn check(&self) -> Result<(), String> {
        if let Some(p) = crate::sim::panicked() {
            return Err(format!("a task panicked: {p}"));
        }
        let checker = lock(&self.hub).checker.clone();
        let mut m = lock(&self.model);
        m.follow_log(&lock(&checker));
        for g in 0..GROUPS {
            m.one_lease_per_group(g);
        }
        match m.first_violation() {
            Some(v) => Err(v),
            None => Ok(()),
        }
    }

    /// Stops every data node and leader loop (the run is over for the model).
    pub fn stop(&self) {
        let mut m = lock(&self.model);
        m.running = false;
        m.stopped = true;
        for n in &mut m.nodes {
            if let Some(t) = n.task.take() {
                t.abort();
            }
        }
        for v in m.voters.values() {
            v.lead.abort();
        }
    }

    pub fn counts(&self) -> FailoverCounts {
        lock(&self.model).counts.clone()
    }

    /// After the heal: every data node restarts, every group must serve again (a primary with a
    /// lease, every replica in sync, a write acknowledged); then group 0's primary is killed and
    /// must be replaced within [`liveness_ms`], and the group must acknowledge writes again once
    /// it returns.
    pub async fn after_heal(&self) -> Result<(), String> {
        self.calm();
        let down: Vec<usize> = {
            let m = lock(&self.model);
            m.nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| !n.up)
                .map(|(i, _)| i)
                .collect()
        };
        for i in down {
            self.start_data(i);
        }
        let acked_before = lock(&self.model).counts.writes_acked;
        self.wait(
            "every group serves with a full in-sync set",
            SERVE_MAX_MS,
            |m| m.counts.writes_acked > acked_before && (0..GROUPS).all(|g| serving(m, g, true)),
        )
        .await?;
        let (victim, timing, isolate) = {
            let mut m = lock(&self.model);
            let (p, _) = m.primary_of(0).ok_or("group 0 has no primary")?;
            let isolate = m.p.isolate_last;
            if isolate {
                // Alone on its side: it beats no one and keeps its lease until it lapses.
                m.nodes[p].side = 1;
                trace(|| format!("data node {p} is cut off from everyone"));
            } else {
                m.crash(p);
            }
            (p, m.timing, isolate)
        };
        let killed = Instant::now();
        let bound = liveness_ms(&timing);
        self.wait("group 0's lost primary is replaced", bound, |m| {
            m.primary_of(0).is_some_and(|(p, _)| p != victim)
        })
        .await?;
        lock(&self.model).counts.failover_ms = killed.elapsed().as_millis() as u64;
        if isolate {
            // The new primary serves while the old one is still cut off (and believes it is
            // primary, its lease running out by its own clock); then the old one returns.
            self.wait("group 0's new primary serves", SERVE_MAX_MS, |m| {
                serving(m, 0, false)
            })
            .await?;
            lock(&self.model).nodes[victim].side = 0;
        } else {
            self.start_data(victim);
        }
        let acked = lock(&self.model).counts.writes_acked;
        self.wait(
            "group 0 serves again after the failover",
            SERVE_MAX_MS,
            |m| m.counts.writes_acked > acked && serving(m, 0, true),
        )
        .await
    }

    async fn wait(&self, what: &str, ms: u64, done: impl Fn(&Model) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_millis(ms);
        loop {
            self.check()?;
            if done(&lock(&self.model)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let nodes = lock(&self.hub).describe();
                let m = lock(&self.model);
                return Err(format!(
                    "(seed {}) not within {ms} ms: {what}; the data nodes:{}\n  the Raft \
                     nodes:{nodes}",
                    m.seed,
                    describe(&m)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether group `g` serves: its primary (by the log) is up and holds a lease, and (`full`)
/// every replica is in its in-sync set.
fn serving(m: &Model, g: usize, full: bool) -> bool {
    let Some((p, members)) = m.primary_of(g) else {
        return false;
    };
    let n = &m.nodes[p];
    let size = m.p.group_sizes[g];
    n.up && n.holder.holds(n.now(m.t0)) && (!full || members.len() == size - 1)
}

fn describe(m: &Model) -> String {
    let mut out = String::new();
    for (i, n) in m.nodes.iter().enumerate() {
        let now = n.now(m.t0);
        out.push_str(&format!(
            "\n    data node {i} (group {}, reads from {:?}): up {} primary {} lease {} stream {} \
             in-sync {} view epoch {} voters {:?}",
            n.group,
            n.reading_from,
            n.up,
            n.is_primary(),
            n.holder.holds(now),
            n.stream.len(),
            n.view.in_sync(&n.id),
            n.view.epoch(),
            n.voters
        ));
    }
    out
}

/// A data node's run: a tick every [`TICK_MS`], its messages sent from tasks of their own.
async fn data_node(h: Handles, i: usize, inc: u64) {
    loop {
        tokio::time::sleep(Duration::from_millis(TICK_MS)).await;
        let actions = {
            let mut m = lock(&h.model);
            let hub = lock(&h.hub);
            m.tick(&hub, i)
        };
        for a in actions {
            match a {
                Action::Beat {
                    voter,
                    beat,
                    sent_ms,
                    demotions,
                } => {
                    tokio::spawn(send_beat(
                        h.clone(),
                        i,
                        inc,
                        voter,
                        beat,
                        sent_ms,
                        demotions,
                    ));
                }
                Action::Pull { primary, len, last } => {
                    tokio::spawn(pull(h.clone(), i, inc, primary, len, last));
                }
                Action::Propose { change } => {
                    tokio::spawn(propose_in_sync(h.clone(), i, inc, change));
                }
            }
        }
    }
}

/// A beat to voter `v` and its answer, over the simulated network.
async fn send_beat(
    h: Handles,
    i: usize,
    inc: u64,
    v: u64,
    beat: Beat,
    sent_ms: u64,
    demotions: u64,
) {
    let side = lock(&h.model).nodes[i].side;
    let d = {
        let mut hub = lock(&h.hub);
        let Some(vside) = hub.side_of(v) else {
            return;
        };
        hub.draw(vside != side)
    };
    let Some(d) = d else {
        return;
    };
    tokio::time::sleep(d.out).await;
    if d.lose_request {
        return;
    }
    let answer = {
        let mut m = lock(&h.model);
        let hub = lock(&h.hub);
        if hub.side_of(v) != Some(m.nodes[i].side) {
            return;
        }
        m.hear_beat(&hub, v, beat)
    };
    let Some(answer) = answer else {
        return;
    };
    tokio::time::sleep(d.back).await;
    if d.lose_reply {
        return;
    }
    let mut m = lock(&h.model);
    if lock(&h.hub)
        .side_of(v)
        .is_some_and(|s| s != m.nodes[i].side)
    {
        return;
    }
    m.beat_answered(i, inc, sent_ms, demotions, answer);
}

/// A replica's pull of its primary's stream (carrying its acknowledgement) and the answer.
async fn pull(h: Handles, i: usize, inc: u64, p: usize, len: u64, last: Option<u64>) {
    let (side, pside, pinc, replica) = {
        let m = lock(&h.model);
        let (n, pn) = (&m.nodes[i], &m.nodes[p]);
        if !pn.up {
            return;
        }
        (n.side, pn.side, pn.incarnation, n.id.clone())
    };
    let Some(d) = lock(&h.hub).draw(side != pside) else {
        return;
    };
    tokio::time::sleep(d.out).await;
    if d.lose_request {
        return;
    }
    let stream = {
        let mut m = lock(&h.model);
        if m.nodes[i].side != m.nodes[p].side {
            return;
        }
        m.serve_pull(p, pinc, &replica, len, last)
    };
    let Some(stream) = stream else {
        return;
    };
    tokio::time::sleep(d.back).await;
    if d.lose_reply {
        return;
    }
    let mut m = lock(&h.model);
    if m.nodes[i].side == m.nodes[p].side {
        m.pulled(i, inc, p, stream);
    }
}

/// A primary's in-sync change, proposed through its host (when the host is up and on its side).
async fn propose_in_sync(h: Handles, i: usize, inc: u64, change: Change) {
    let host = lock(&h.model).nodes[i].reading_from;
    let raft = host.and_then(|host| lock(&h.hub).raft_of(host));
    let r = match raft {
        Some(raft) => propose_answered(&h.hub, raft, change, 1).await,
        None => None,
    };
    lock(&h.model).proposed(i, inc, r);
}

/// A voter's leader duties (`server/src/lease.rs`, `lead`): every half beat interval, while its
/// Raft leads, confirm the leadership with a quorum and propose the keeper's promotions.
async fn lead(h: Handles, id: u64, raft: Raft<TypeConfig>) {
    let timing = lock(&h.model).timing;
    loop {
        tokio::time::sleep(Duration::from_millis((timing.heartbeat_ms / 2).max(1))).await;
        let metrics = raft.metrics().borrow().clone();
        let now = |h: &Handles| {
            let m = lock(&h.model);
            m.voters.get(&id).map(|v| v.clock.ms(m.virtual_ms()))
        };
        if metrics.state != ServerState::Leader {
            let mut m = lock(&h.model);
            let t = m.virtual_ms();
            if let Some(v) = m.voters.get_mut(&id) {
                let now = v.clock.ms(t);
                v.keeper.set_leader(None, now);
            }
            continue;
        }
        let term = metrics.current_term;
        let Some(started) = now(&h) else {
            return;
        };
        if let Some(v) = lock(&h.model).voters.get_mut(&id) {
            if !v.keeper.leading() {
                trace(|| format!("voter {id} acts as leader of term {term}"));
            }
            v.keeper.set_leader(Some(term), started);
        }
        let ttl = Duration::from_millis(timing.confirm_max_ms.max(1));
        let confirmed = matches!(
            tokio::time::timeout(ttl, raft.ensure_linearizable()).await,
            Ok(Ok(_))
        );
        let Some(cfg) = lock(&h.hub).committed_of(id) else {
            return;
        };
        let changes = {
            let mut m = lock(&h.model);
            let t = m.virtual_ms();
            let Some(v) = m.voters.get_mut(&id) else {
                return;
            };
            if confirmed {
                v.keeper.confirmed(term, started);
            } else {
                trace(|| format!("voter {id} did not confirm its leadership of term {term}"));
            }
            let now = v.clock.ms(t);
            v.keeper.retain(&cfg);
            let promotions = v.keeper.promotions(&cfg, now);
            if confirmed {
                m.counts.confirmations += 1;
            }
            let mut changes = Vec::new();
            for p in promotions {
                let Some(change) = p.change(&cfg) else {
                    continue;
                };
                trace(|| format!("voter {id} proposes {change:?} ({})", p.reason));
                m.counts.promotions_proposed += 1;
                // Only a restarted primary's hand-over may name a replica outside the set.
                let in_sync_only = matches!(
                    change,
                    Change::Failover {
                        in_sync_only: true,
                        ..
                    }
                );
                if !in_sync_only && p.reason != "restarted" {
                    let what = format!("the automatic path proposes {change:?}: not in-sync only");
                    m.violation(what);
                }
                changes.push(change);
            }
            changes
        };
        for change in changes {
            let (hub, raft) = (h.hub.clone(), raft.clone());
            tokio::spawn(async move { propose_answered(&hub, raft, change, 0).await });
        }
    }
}

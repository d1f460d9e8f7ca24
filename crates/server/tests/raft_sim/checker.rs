//! The simulator's invariants, checked as the run goes.
//!
//! [`Observed`] wraps the production state machine of one node (the `RaftStateMachine` openraft
//! drives is ours, delegating every call) and reports to the [`Checker`] what the node applied:
//! for each entry, the configuration after it, computed again with `Config::apply` on a shadow
//! copy by the first node to apply that entry and taken from the record by the others (after
//! each batch, the production state machine must publish the shadow's configuration, and it must
//! have answered each entry with the recorded response); for each snapshot installed or loaded,
//! the configuration it holds. The checker keeps, per log index, what was first seen there and
//! holds every node to it:
//!
//! - every configuration applied passes `Config::invariant_violation`, and, counted again through
//!   the public API, each slot has at most one owner, a primary ([`slot_violation`]);
//! - state-machine safety: every node that applied (or snapshotted) index `i` has the same log
//!   id, entry, response and configuration there;
//! - the epoch never goes back on a node (within one run of it; a restart rebuilds the state
//!   machine from its snapshot and replays the log, each step checked as above), nor from one
//!   log index to the next;
//! - a snapshot built holds the configuration of its last log id;
//! - every proposal a client saw committed is in the log at the index it was told, with the
//!   response it was given (checked at the end).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StoredMembership,
};
use shoal_cluster::{Change, Config, SLOTS};
use shoal_server::raft::state_machine::{SnapshotBuilder, SnapshotData, StateMachine};
use shoal_server::raft::{BusNode, Response, TypeConfig};
use tokio::sync::watch;

use crate::sim::lock;
use crate::workload;

/// What was first seen at one log index.
struct Seen {
    log_id: LogId<u64>,
    config: Arc<Config>,
    /// The entry's change (`None` for a blank or membership entry) and the response applying it
    /// gave; unknown when only a snapshot covered the index so far.
    entry: Option<(Option<Change>, Response)>,
    /// The node that first reported it.
    node: u64,
}

/// A proposal a client saw committed.
pub struct Ack {
    pub index: u64,
    pub change: Change,
    pub response: Response,
}

/// Counts for the run's summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Entries applied, over every node.
    pub entries: u64,
    /// Changes that the configuration took, and refused ones (committed as no-ops).
    pub changes: u64,
    pub refused: u64,
    pub snapshots_built: u64,
    pub snapshots_installed: u64,
}

/// The invariants of one run, fed by every node.
#[derive(Default)]
pub struct Checker {
    seen: BTreeMap<u64, Seen>,
    acks: Vec<Ack>,
    leaders: BTreeSet<(u64, u64)>,
    violations: Vec<String>,
    pub applied: Applied,
}

impl Checker {
    pub fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    pub fn first_violation(&self) -> Option<&str> {
        self.violations.first().map(String::as_str)
    }

    /// Node `node` holds `config` after `log_id`, having applied `entry` there (or `None`: it
    /// got there through a snapshot).
    fn saw(
        &mut self,
        node: u64,
        log_id: LogId<u64>,
        config: &Arc<Config>,
        entry: Option<(Option<Change>, Response)>,
    ) {
        let index = log_id.index;
        if let Some(first) = self.seen.get_mut(&index) {
            let why = if first.log_id != log_id {
                Some(format!("log id {log_id}, not {}", first.log_id))
            } else if let (Some(a), Some(b)) = (&first.entry, &entry)
                && a != b
            {
                Some(format!("entry {b:?}, not {a:?}"))
            } else if !Arc::ptr_eq(&first.config, config) && *first.config != **config {
                Some(format!(
                    "configuration of epoch {} ({} nodes, {} slots assigned), not epoch {} ({} \
                     nodes, {} slots assigned)",
                    config.epoch(),
                    config.nodes().len(),
                    config.slots_assigned(),
                    first.config.epoch(),
                    first.config.nodes().len(),
                    first.config.slots_assigned()
                ))
            } else {
                None
            };
            if let Some(why) = why {
                let first_node = first.node;
                self.violation(format!(
                    "state-machine safety: node {node} has at index {index} a {why} that node \
                     {first_node} had there"
                ));
            } else if first.entry.is_none() {
                first.entry = entry;
            }
            return;
        }
        // New here: check the configuration (unless it is the one before it, already checked),
        // and that the epoch grows with the index.
        let before = self.seen.range(..index).next_back().map(|(_, s)| s);
        let after = self.seen.range(index + 1..).next().map(|(_, s)| s);
        let mut whys = Vec::new();
        let unchanged = before.is_some_and(|b| *b.config == **config);
        if !unchanged && let Some(why) = slot_violation(config) {
            whys.push(format!(
                "node {node} holds at index {index} a configuration that breaks an invariant: {why}"
            ));
        }
        if let Some(b) = before.filter(|b| b.config.epoch() > config.epoch()) {
            whys.push(format!(
                "epoch {} at index {index} (node {node}) after epoch {} at index {}",
                config.epoch(),
                b.config.epoch(),
                b.log_id.index
            ));
        }
        if let Some(a) = after.filter(|a| a.config.epoch() < config.epoch()) {
            whys.push(format!(
                "epoch {} at index {index} (node {node}) before epoch {} at index {}",
                config.epoch(),
                a.config.epoch(),
                a.log_id.index
            ));
        }
        self.violations.extend(whys);
        self.seen.insert(
            index,
            Seen {
                log_id,
                config: config.clone(),
                entry,
                node,
            },
        );
    }

    /// A client was told `change` committed at `index` with `response`.
    pub fn ack(&mut self, ack: Ack) {
        self.acks.push(ack);
    }

    /// Node `node` reported itself leader of `term`; whether that is news. (Not a check:
    /// openraft 0.9 without its `single-term-leader` feature, as shoal runs it, may elect a
    /// leader per node in one term; a leader is a (term, node) pair, and log ids name it.)
    pub fn leader(&mut self, term: u64, node: u64) -> bool {
        self.leaders.insert((term, node))
    }

    /// The configuration and response recorded for the entry `change` at `log_id`, if a node
    /// applied that entry there.
    fn applied_at(
        &self,
        log_id: LogId<u64>,
        change: &Option<Change>,
    ) -> Option<(Arc<Config>, Response)> {
        let s = self.seen.get(&log_id.index)?;
        match &s.entry {
            Some((c, r)) if s.log_id == log_id && c == change => {
                Some((s.config.clone(), r.clone()))
            }
            _ => None,
        }
    }

    /// The change at `index` (`None` if blank, a membership entry, or only a snapshot covered
    /// it so far) and the configuration after it.
    pub fn entry_at(&self, index: u64) -> Option<(Option<Change>, Arc<Config>)> {
        let s = self.seen.get(&index)?;
        let change = s.entry.as_ref().and_then(|(c, _)| c.clone());
        Some((change, s.config.clone()))
    }

    /// The first index after `index` known.
    pub fn next_known(&self, index: u64) -> Option<u64> {
        self.seen.range(index + 1..).next().map(|(&i, _)| i)
    }

    /// The configuration known at `index`.
    pub fn config_at(&self, index: u64) -> Option<Arc<Config>> {
        self.seen.get(&index).map(|s| s.config.clone())
    }

    /// Every acknowledged proposal is the entry at its index, with its response. Run at the end,
    /// once every node has applied everything.
    pub fn check_acks(&mut self) -> usize {
        let mut bad = Vec::new();
        for a in &self.acks {
            match self.seen.get(&a.index).and_then(|s| s.entry.as_ref()) {
                Some((Some(change), response))
                    if *change == a.change && *response == a.response => {}
                found => bad.push(format!(
                    "a client was told {:?} committed at index {} with {:?}; the log has {found:?} \
                     there",
                    a.change, a.index, a.response
                )),
            }
        }
        let n = self.acks.len();
        for b in bad {
            self.violation(b);
        }
        n
    }

    /// Leaders seen, as (term, node) (sampled).
    pub fn leaders(&self) -> usize {
        self.leaders.len()
    }
}

/// The slot invariants, checked again from the outside: `Config::invariant_violation` (which
/// also covers moving slots), then the owners of each slot counted through every node's
/// `ranges_of`: at most one, a primary, the same one `owner` names.
pub fn slot_violation(config: &Config) -> Option<String> {
    if let Some(why) = config.invariant_violation() {
        return Some(why);
    }
    let mut owners = vec![0u32; SLOTS];
    for n in config.nodes() {
        for r in config.ranges_of(&n.id) {
            if !n.is_primary() {
                return Some(format!("replica {} owns slots {}-{}", n.id, r.start, r.end));
            }
            for s in r.iter() {
                owners[s as usize] += 1;
                if owners[s as usize] > 1 {
                    return Some(format!("slot {s} has more than one owner"));
                }
            }
        }
    }
    for (s, &count) in owners.iter().enumerate() {
        let slot = s as u16;
        match (config.owner(slot), count) {
            (Some(_), 1) | (None, 0) => {}
            (o, _) => {
                return Some(format!(
                    "slot {slot}: owner {:?} but {count} nodes list it",
                    o.map(|n| &n.id)
                ));
            }
        }
    }
    if config.slots_assigned() != owners.iter().filter(|&&c| c == 1).count() {
        return Some("the count of assigned slots is off".into());
    }
    None
}

/// One node's production state machine, watched.
pub struct Observed {
    inner: StateMachine,
    node: u64,
    /// What the production state machine publishes.
    committed: watch::Receiver<Arc<Config>>,
    /// The configuration the entries applied so far give, by the checker's own applying.
    shadow: Arc<Config>,
    last_applied: Option<LogId<u64>>,
    checker: Arc<Mutex<Checker>>,
    /// Held while this run of the node's state machine (or a snapshot build) is alive: a restart
    /// waits for every holder to go.
    _alive: Arc<()>,
    /// A planted bug (tests of the checker): the first `AssignSlots` this node applies becomes
    /// the addition of a node no one proposed.
    sabotage: bool,
}

impl Observed {
    /// Wraps a state machine just opened from its directory.
    pub async fn open(
        mut inner: StateMachine,
        committed: watch::Receiver<Arc<Config>>,
        node: u64,
        checker: Arc<Mutex<Checker>>,
        alive: Arc<()>,
        sabotage: bool,
    ) -> Result<Observed, StorageError<u64>> {
        let (last_applied, _) = inner.applied_state().await?;
        let shadow = committed.borrow().clone();
        if let Some(at) = last_applied {
            lock(&checker).saw(node, at, &shadow, None);
        }
        Ok(Observed {
            inner,
            node,
            committed,
            shadow,
            last_applied,
            checker,
            _alive: alive,
            sabotage,
        })
    }

    fn plant_bug(&mut self, entries: &mut [Entry<TypeConfig>]) {
        for e in entries {
            if let EntryPayload::Normal(Change::AssignSlots { .. }) = e.payload {
                let n = shoal_cluster::Node {
                    id: workload::node_id(0xbad),
                    ip: "10.9.9.9".into(),
                    port: 9,
                    bus_port: 10009,
                    replica_of: None,
                    config_epoch: 0,
                };
                e.payload = EntryPayload::Normal(Change::AddNode(n));
                self.sabotage = false;
                return;
            }
        }
    }
}

impl RaftStateMachine<TypeConfig> for Observed {
    type SnapshotBuilder = ObservedBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BusNode>), StorageError<u64>> {
        self.inner.applied_state().await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        if self.sabotage {
            self.plant_bug(&mut entries);
        }
        let out = self.inner.apply(entries.clone()).await?;
        let node = self.node;
        let mut c = lock(&self.checker);
        if out.len() != entries.len() {
            c.violation(format!(
                "node {node}: {} responses for {} entries",
                out.len(),
                entries.len()
            ));
        }
        for (e, response) in entries.iter().zip(&out) {
            let index = e.log_id.index;
            let expected = self.last_applied.map_or(index, |l| l.index + 1);
            if index != expected {
                c.violation(format!(
                    "node {node} applied index {index} after {:?}",
                    self.last_applied
                ));
            }
            self.last_applied = Some(e.log_id);
            let change = match &e.payload {
                EntryPayload::Normal(change) => Some(change.clone()),
                _ => None,
            };
            // What the entry gives: as recorded, if a node applied this entry already (from the
            // same configuration before it, or the comparison after the batch fails), else
            // applied here.
            let mine: Response = match c.applied_at(e.log_id, &change) {
                Some((config, response)) => {
                    self.shadow = config;
                    response
                }
                None => match &change {
                    Some(change) => {
                        let mut next = (*self.shadow).clone();
                        let r = next.apply(change).map_err(|e| e.to_string());
                        if r.is_ok() {
                            self.shadow = Arc::new(next);
                        }
                        r
                    }
                    None => Ok(()),
                },
            };
            if change.is_some() {
                match mine {
                    Ok(()) => c.applied.changes += 1,
                    Err(_) => c.applied.refused += 1,
                }
            }
            c.applied.entries += 1;
            if *response != mine {
                c.violation(format!(
                    "node {node} answered {response:?} to {change:?} at index {index}; applying \
                     it gives {mine:?}"
                ));
            }
            c.saw(node, e.log_id, &self.shadow, Some((change, mine)));
        }
        let published = self.committed.borrow().clone();
        if *published != *self.shadow {
            c.violation(format!(
                "node {node} publishes a configuration of epoch {} after index {:?}; its entries \
                 give epoch {}",
                published.epoch(),
                self.last_applied.map(|l| l.index),
                self.shadow.epoch()
            ));
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> ObservedBuilder {
        ObservedBuilder {
            inner: self.inner.get_snapshot_builder().await,
            node: self.node,
            checker: self.checker.clone(),
            _alive: self._alive.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError<u64>> {
        self.inner.begin_receiving_snapshot().await
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BusNode>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError<u64>> {
        self.inner.install_snapshot(meta, snapshot).await?;
        let config = self.committed.borrow().clone();
        let node = self.node;
        let mut c = lock(&self.checker);
        c.applied.snapshots_installed += 1;
        if meta.last_log_id <= self.last_applied {
            c.violation(format!(
                "node {node} installed a snapshot up to {:?} after applying {:?}",
                meta.last_log_id, self.last_applied
            ));
        }
        if config.epoch() < self.shadow.epoch() {
            c.violation(format!(
                "node {node}: epoch went back from {} to {} installing a snapshot",
                self.shadow.epoch(),
                config.epoch()
            ));
        }
        if let Some(at) = meta.last_log_id {
            c.saw(node, at, &config, None);
        }
        self.shadow = config;
        self.last_applied = meta.last_log_id;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        self.inner.get_current_snapshot().await
    }
}

/// Builds a snapshot with the production builder and checks what it holds.
pub struct ObservedBuilder {
    inner: SnapshotBuilder,
    node: u64,
    checker: Arc<Mutex<Checker>>,
    _alive: Arc<()>,
}

impl RaftSnapshotBuilder<TypeConfig> for ObservedBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let snapshot = self.inner.build_snapshot().await?;
        let node = self.node;
        let mut c = lock(&self.checker);
        c.applied.snapshots_built += 1;
        // The configuration known at the snapshot's index, encoded, is what the snapshot holds
        // (encoding is cheaper than decoding, and the same configuration encodes the same).
        let at = snapshot.meta.last_log_id.map(|l| l.index);
        if let Some(known) = at.and_then(|i| c.config_at(i)) {
            let held = snapshot.snapshot.get_ref();
            if serde_json::to_vec(&*known).ok().as_deref() != Some(held) {
                c.violation(format!(
                    "node {node} built a snapshot at index {at:?} that is not the configuration \
                     the log gives there (epoch {})",
                    known.epoch()
                ));
            }
        }
        Ok(snapshot)
    }
}

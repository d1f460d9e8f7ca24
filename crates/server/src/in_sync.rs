//! The in-sync set of a primary's group (cluster mode), kept through the configuration group:
//! the replicas that hold every write this primary acknowledged under the `sync` strategy, the
//! only ones automatic failover may promote (`shoal_cluster::lease`).
//!
//! A task on every node acts while the configuration makes it a primary with replicas, every
//! [`TICK`]:
//! - a member that has not caught up with the stream for [`lag_max_ms`] leaves the set by a
//!   committed `Change::SetInSync`; `sync` writes wait for it until that change commits, so no
//!   write is acknowledged without a member that is still in the committed set;
//! - a replica that caught up (a moment ago: under a steady load it is never exactly at the
//!   end) starts *joining*: from then on `sync` writes wait for it too; once
//!   it acknowledged the stream's end as of the moment it started, every acknowledged write is on
//!   it, and it enters the set by a committed change. A joiner that lags is dropped (nothing was
//!   committed for it).
//!
//! [`wait`] is the write side: a `sync` write is acknowledged once every committed member and
//! every joiner acknowledged its offset, and the committed set has at least `min-replicas-ack`
//! members.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use shoal_cluster::{Change, Config, Node};
use shoal_commands::ServerState;
use shoal_commands::cluster::SyncMembers;
use shoal_replication::state::ReplicaInfo;

use crate::clock::mono_ms;
use crate::cluster_node::{ClusterNode, Proposed};

/// How often the set is looked at.
pub const TICK: Duration = Duration::from_millis(20);
/// How long one change of the set may take to commit.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiting `sync` write looks at the set again even without an acknowledgement.
pub const WAIT_RECHECK_MS: u64 = 50;

/// How long a member may stay behind the stream before it leaves the set: half the node timeout
/// or half `ack-timeout-ms`, whichever is shorter (so a write waiting on a dead member still
/// gets acknowledged by the others in time).
pub fn lag_max_ms(srv: &ServerState) -> u64 {
    let c = srv.config();
    (c.cluster_node_timeout / 2)
        .min(c.ack_timeout_ms / 2)
        .max(TICK.as_millis() as u64 * 2)
}

/// A replica starts joining when it was caught up this recently.
fn join_within(lag_max: u64) -> u64 {
    lag_max / 4
}

/// The replica connection of `n`, if it is attached.
fn link_of<'a>(links: &'a [Arc<ReplicaInfo>], n: &Node) -> Option<&'a Arc<ReplicaInfo>> {
    links
        .iter()
        .find(|r| r.listening_port.load(Relaxed) == u64::from(n.port) && r.ip == n.ip)
}

/// What a replica acknowledged (0 until it holds what it acknowledges).
fn acked(r: Option<&Arc<ReplicaInfo>>) -> u64 {
    r.filter(|r| r.holds_acked.load(Relaxed))
        .map_or(0, |r| r.ack_offset.load(Relaxed))
}

/// Starts the task that keeps this node's in-sync set while it is a primary.
pub fn spawn(srv: &Arc<ServerState>, node: &Arc<ClusterNode>) {
    let (srv, node) = (Arc::downgrade(srv), Arc::downgrade(node));
    tokio::spawn(async move {
        let mut k = Keeping::default();
        loop {
            let (Some(s), Some(n)) = (srv.upgrade(), node.upgrade()) else {
                return;
            };
            k.tick(&s, &n).await;
            drop((s, n));
            tokio::time::sleep(TICK).await;
        }
    });
}

/// The task's memory between ticks.
#[derive(Default)]
struct Keeping {
    /// (time, stream end) samples over the last `lag_max` and a bit.
    samples: VecDeque<(u64, u64)>,
    /// Joiners by node id: the stream end when they started joining.
    joining: HashMap<String, u64>,
}

impl Keeping {
    /// When the replica that acknowledged `ack` was last caught up: the latest sample whose end
    /// it reached.
    fn caught_up_at(&self, ack: u64) -> Option<u64> {
        self.samples
            .iter()
            .rev()
            .find(|&&(_, end)| end <= ack)
            .map(|&(t, _)| t)
    }

    async fn tick(&mut self, srv: &Arc<ServerState>, node: &Arc<ClusterNode>) {
        let Some(cl) = srv.cluster.as_ref() else {
            return;
        };
        let cfg = cl.config();
        let me = cl.me();
        let primary = cfg.node(&me).filter(|n| n.is_primary()).cloned();
        let Some(primary) = primary else {
            self.reset(srv);
            return;
        };
        let replicas: Vec<Node> = cfg.replicas_of(&me).cloned().collect();
        // Sampled while this node is a primary, lease or not: after a spell without a lease
        // (no write moved the end meanwhile) a replica that holds the end was caught up all
        // along, not lagging since before the spell.
        let now = mono_ms();
        let lag_max = lag_max_ms(srv);
        let end = srv.repl.stream_end();
        self.samples.push_back((now, end));
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| now.saturating_sub(t) > 2 * lag_max + TICK.as_millis() as u64)
        {
            self.samples.pop_front();
        }
        if replicas.is_empty() || !cl.lease.valid(now) {
            // Without a lease this node serves no write, and a change it proposed could race a
            // failover that is taking its place.
            self.joining.clear();
            self.publish(srv, &cfg, &me);
            return;
        }
        let links = srv.repl.replicas();
        let lagging = |k: &Keeping, n: &Node| {
            let at = k.caught_up_at(acked(link_of(&links, n)));
            at.is_none_or(|t| now.saturating_sub(t) > lag_max)
        };
        // Members that lag leave first: writes wait on them until that commits.
        let members: Vec<String> = cfg.in_sync_of(&me).map(|n| n.id.clone()).collect();
        let keep: Vec<String> = replicas
            .iter()
            .filter(|n| members.contains(&n.id) && !lagging(self, n))
            .map(|n| n.id.clone())
            .collect();
        // Joiners: drop those that lag, admit those that reached their mark.
        self.joining
            .retain(|id, _| replicas.iter().any(|n| &n.id == id) && !members.contains(id));
        let mut admit = Vec::new();
        for n in &replicas {
            if members.contains(&n.id) {
                continue;
            }
            let ack = acked(link_of(&links, n));
            match self.joining.get(&n.id).copied() {
                Some(_) if lagging(self, n) => {
                    self.joining.remove(&n.id);
                }
                Some(mark) if ack >= mark => admit.push(n.id.clone()),
                Some(_) => {}
                // Caught up a moment ago (under a steady write load a replica's acknowledgement
                // is never exactly at the end): it starts joining at today's end.
                None if link_of(&links, n).is_some()
                    && self
                        .caught_up_at(ack)
                        .is_some_and(|t| now.saturating_sub(t) <= join_within(lag_max)) =>
                {
                    self.joining.insert(n.id.clone(), end);
                }
                None => {}
            }
        }
        // Publish the joiners before anything is proposed: from now on writes wait for them.
        self.publish(srv, &cfg, &me);
        let mut next = keep.clone();
        next.extend(admit.iter().cloned());
        next.sort();
        let mut current = members.clone();
        current.sort();
        if next == current {
            return;
        }
        let change = Change::SetInSync {
            primary: me.clone(),
            primary_epoch: primary.config_epoch,
            replicas: next.clone(),
        };
        tracing::info!(in_sync = ?next, "changing this primary's in-sync set");
        cl.lease.in_sync_changes.fetch_add(1, Relaxed);
        // Admitted joiners stay joiners (writes wait for them) until the configuration installed
        // here names them members: the tick's first step drops them from `joining` then.
        match tokio::time::timeout(PROPOSE_TIMEOUT, node.propose_settled(srv, change)).await {
            Ok(Proposed::Applied) => {}
            Ok(Proposed::Refused(e)) | Ok(Proposed::Unknown(e)) => {
                tracing::warn!(error = %e, "the in-sync set did not change");
            }
            Err(_) => tracing::warn!("the in-sync set change did not commit in time"),
        }
        let cfg = cl.config();
        self.publish(srv, &cfg, &me);
    }

    /// Publishes the members and joiners for [`wait`].
    fn publish(&self, srv: &ServerState, cfg: &Config, me: &str) {
        let Some(cl) = srv.cluster.as_ref() else {
            return;
        };
        let addr = |n: &Node| (n.ip.clone(), n.port);
        let members = SyncMembers {
            committed: cfg.in_sync_of(me).map(addr).collect(),
            joining: cfg
                .replicas_of(me)
                .filter(|n| self.joining.contains_key(&n.id))
                .map(addr)
                .collect(),
        };
        *cl.sync_members.lock().unwrap_or_else(|p| p.into_inner()) = members;
    }

    fn reset(&mut self, srv: &ServerState) {
        self.samples.clear();
        self.joining.clear();
        if let Some(cl) = srv.cluster.as_ref() {
            *cl.sync_members.lock().unwrap_or_else(|p| p.into_inner()) = SyncMembers::default();
        }
    }
}

/// Waits until the write at `offset` may be acknowledged under `sync` in cluster mode: every
/// in-sync member and joiner acknowledged it and the committed set has at least `need` members.
/// Returns how many committed members acknowledged it when it gives up at `deadline_ms`
/// (`clock::mono_ms`), or `need` on success.
pub async fn wait(srv: &ServerState, offset: u64, need: usize, deadline_ms: u64) -> usize {
    let Some(cl) = srv.cluster.as_ref() else {
        return crate::links::wait_acks(srv, offset, need, deadline_ms).await;
    };
    loop {
        let (have, all) = {
            let members = cl.sync_members.lock().unwrap_or_else(|p| p.into_inner());
            let links = srv.repl.replicas();
            let has = |(ip, port): &(String, u16)| {
                links.iter().any(|r| {
                    &r.ip == ip
                        && r.listening_port.load(Relaxed) == u64::from(*port)
                        && r.holds_acked.load(Relaxed)
                        && r.ack_offset.load(Relaxed) >= offset
                })
            };
            let have = members.committed.iter().filter(|m| has(m)).count();
            let all = have == members.committed.len() && members.joining.iter().all(has);
            (have, all)
        };
        if all && have >= need {
            return need;
        }
        let now = mono_ms();
        if now >= deadline_ms {
            return have.min(need.saturating_sub(1));
        }
        // Woken by one more acknowledgement of the offset than there is now, or soon.
        let want = srv.repl.acked(offset) + 1;
        let until = deadline_ms.min(now + WAIT_RECHECK_MS);
        crate::links::wait_acks(srv, offset, want, until).await;
    }
}

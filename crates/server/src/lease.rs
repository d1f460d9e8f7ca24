//! Automatic failover and fencing, the I/O side of `shoal_cluster::lease`: this node's beats to
//! the voters of the configuration group (answered with its write lease by the leader), and, on
//! a voter, the desk that hears beats, grants leases while it leads, confirms its leadership with
//! a quorum, and proposes the promotion of a failed primary's best replica.
//!
//! The lease a node holds is published in `ClusterState::lease` (commands crate), which every
//! request routed to one of its slots reads: a primary without a running lease answers
//! `-CLUSTERDOWN`. See ARCHITECTURE.md, "Failover and fencing".

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_cluster::Config;
use shoal_cluster::lease::{Answer, Beat, Holder, Keeper, Timing};

use crate::clock::mono_ms;
use shoal_commands::ServerState;
use tokio::sync::watch;

use crate::cluster_node::ClusterNode;
use crate::raft::network::BusClient;

/// How long a beat waits for a voter's answer, in beat intervals (a late answer is useless: the
/// next beat is already on its way).
pub const BEAT_ANSWER_INTERVALS: u64 = 2;
/// How long a command that made this node a primary waits for its first lease before it
/// answers (so `CLUSTER ADDSLOTS` followed by a write works at once).
pub const FIRST_LEASE_WAIT: Duration = Duration::from_secs(2);

/// A voter's record of beats and leases, shared by its bus (which hears beats) and its leader
/// task.
pub struct LeaseDesk {
    keeper: Mutex<Keeper>,
    committed: watch::Receiver<Arc<Config>>,
}

impl LeaseDesk {
    pub fn new(timing: Timing, committed: watch::Receiver<Arc<Config>>) -> LeaseDesk {
        LeaseDesk {
            keeper: Mutex::new(Keeper::new(timing, mono_ms())),
            committed,
        }
    }

    fn keeper(&self) -> std::sync::MutexGuard<'_, Keeper> {
        self.keeper.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn timing(&self) -> Timing {
        self.keeper().timing()
    }

    /// Hears a beat and answers it (a lease only from the leader).
    pub fn on_beat(&self, beat: Beat) -> Answer {
        let cfg = self.committed.borrow().clone();
        self.keeper().on_beat(&cfg, beat, mono_ms())
    }
}

/// This node's lease as its beats learn of it.
struct Own {
    holder: Holder,
    /// Demotions seen when the beat in flight was sent: a grant to a beat sent before this node
    /// was made a replica is not taken.
    demotions: u64,
}

/// Starts the beats of this node and, on a voter, the leader's duties. The node starts with
/// nothing it can vouch for (`Beat::restarted`) until it holds a lease or finishes a sync.
pub fn spawn(srv: &Arc<ServerState>, node: &Arc<ClusterNode>) {
    let own = Arc::new(Mutex::new(Own {
        holder: Holder::restarted(),
        demotions: 0,
    }));
    tokio::spawn(beats(
        Arc::downgrade(srv),
        Arc::downgrade(node),
        own.clone(),
    ));
    tokio::spawn(lead(Arc::downgrade(srv), Arc::downgrade(node)));
}

/// Keeps one beating task per voter, following the group's membership.
async fn beats(
    srv: std::sync::Weak<ServerState>,
    node: std::sync::Weak<ClusterNode>,
    own: Arc<Mutex<Own>>,
) {
    let mut tasks: HashMap<u64, (String, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        let (Some(s), Some(n)) = (srv.upgrade(), node.upgrade()) else {
            break;
        };
        let timing = n.group.desk().timing();
        let voters = n.group.voter_nodes();
        tasks.retain(|id, (addr, task)| {
            let keep = voters.iter().any(|(v, b)| v == id && &b.addr == addr);
            if !keep {
                task.abort();
            }
            keep && !task.is_finished()
        });
        for (id, bus) in voters {
            if tasks.contains_key(&id) {
                continue;
            }
            let local = id == n.group.raft_id();
            let task = tokio::spawn(beat_voter(
                Arc::downgrade(&s),
                Arc::downgrade(&n),
                own.clone(),
                (!local).then(|| bus.addr.clone()),
            ));
            tasks.insert(id, (bus.addr, task));
        }
        drop((s, n));
        tokio::time::sleep(Duration::from_millis(timing.heartbeat_ms)).await;
    }
    for (_, (_, t)) in tasks {
        t.abort();
    }
}

/// Beats to one voter (`addr`, or this node's own desk when `None`) every beat interval, and
/// takes the leases it grants.
async fn beat_voter(
    srv: std::sync::Weak<ServerState>,
    node: std::sync::Weak<ClusterNode>,
    own: Arc<Mutex<Own>>,
    addr: Option<String>,
) {
    let mut client = addr.map(BusClient::new);
    loop {
        let (Some(s), Some(n)) = (srv.upgrade(), node.upgrade()) else {
            return;
        };
        let Some(cl) = s.cluster.as_ref() else {
            return;
        };
        let timing = n.group.desk().timing();
        let sent = mono_ms();
        let demotions = cl.lease.demotions.load(Relaxed);
        let beat = {
            let mut o = own.lock().unwrap_or_else(|p| p.into_inner());
            if o.demotions != demotions {
                o.holder.give_up();
                o.demotions = demotions;
            }
            if s.repl.is_replica()
                && s.repl.link_state() == shoal_replication::state::LinkState::Connected
            {
                o.holder.synced();
            }
            cl.lease.vouches.store(!o.holder.is_restarted(), Relaxed);
            Beat {
                node: cl.me(),
                holds: o.holder.holds(sent) && cl.lease.enforced.load(Relaxed),
                restarted: o.holder.is_restarted(),
                offset: s.repl.offset(),
                sync: s.repl.strategy_sync(),
            }
        };
        let answer = match client.as_mut() {
            None => Some(n.group.desk().on_beat(beat)),
            Some(c) => {
                let body = serde_json::to_vec(&beat).expect("a beat encodes");
                let ttl = Duration::from_millis(timing.heartbeat_ms * BEAT_ANSWER_INTERVALS);
                match c.call(b"BEAT", &body, ttl).await {
                    Ok(bytes) => serde_json::from_slice::<Answer>(&bytes).ok(),
                    Err(_) => None,
                }
            }
        };
        match answer {
            Some(Answer::Granted { lease_ms }) => {
                let mut o = own.lock().unwrap_or_else(|p| p.into_inner());
                // Made a replica since the beat left: the grant is stale.
                if cl.lease.demotions.load(Relaxed) == demotions && o.demotions == demotions {
                    o.holder.granted(sent, lease_ms);
                    cl.lease.until_ms.fetch_max(o.holder.until_ms(), Relaxed);
                    cl.lease.grants.fetch_add(1, Relaxed);
                    cl.lease
                        .last_refusal
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clear();
                }
            }
            Some(Answer::Refused(why)) => {
                *cl.lease
                    .last_refusal
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = why;
            }
            Some(Answer::Noted) | None => {}
        }
        drop((s, n));
        let next = sent + timing.heartbeat_ms;
        let now = mono_ms();
        if next > now {
            tokio::time::sleep(Duration::from_millis(next - now)).await;
        }
    }
}

/// A voter's leader duties, every half beat interval while it leads: confirm the leadership with
/// a quorum (leases are granted only on a recent confirmation), then propose the promotions the
/// keeper decides on.
async fn lead(srv: std::sync::Weak<ServerState>, node: std::sync::Weak<ClusterNode>) {
    loop {
        let (Some(s), Some(n)) = (srv.upgrade(), node.upgrade()) else {
            return;
        };
        let desk = n.group.desk().clone();
        let timing = desk.timing();
        let m = n.group.metrics();
        if m.state == "leader" {
            desk.keeper().set_leader(Some(m.term), mono_ms());
            let started = mono_ms();
            let ttl = Duration::from_millis(timing.confirm_max_ms.max(1));
            if n.group.confirm_leadership(ttl).await {
                desk.keeper().confirmed(m.term, started);
            }
            let cfg = n.group.committed().borrow().clone();
            let promotions = {
                let mut k = desk.keeper();
                k.retain(&cfg);
                k.promotions(&cfg, mono_ms())
            };
            for p in promotions {
                let Some(change) = p.change(&cfg) else {
                    continue;
                };
                tracing::warn!(
                    primary = %p.primary, replica = %p.replica, reason = p.reason,
                    "automatic failover: promoting a replica"
                );
                if let Some(cl) = s.cluster.as_ref() {
                    cl.lease.promotions_proposed.fetch_add(1, Relaxed);
                }
                let (s2, n2) = (s.clone(), n.clone());
                tokio::spawn(async move {
                    if let Err(e) = n2.propose(&s2, change).await {
                        tracing::warn!(error = %e, "automatic failover: the promotion did not apply");
                    }
                });
            }
        } else {
            desk.keeper().set_leader(None, mono_ms());
        }
        drop((s, n));
        tokio::time::sleep(Duration::from_millis((timing.heartbeat_ms / 2).max(1))).await;
    }
}

/// Waits (bounded) until this node, if the configuration makes it a primary with slots, holds a
/// lease: a command that just gave it slots answers once it can serve them.
pub async fn await_first_lease(srv: &ServerState) {
    let Some(cl) = srv.cluster.as_ref() else {
        return;
    };
    let deadline = tokio::time::Instant::now() + FIRST_LEASE_WAIT;
    while !cl.lease.valid(mono_ms()) && tokio::time::Instant::now() < deadline {
        let cfg = cl.config();
        if cfg.ranges_of(&cl.me()).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

//! Failure detection, write leases and the choice of the replica to promote, sans I/O (automatic
//! failover). The server carries the messages and the proposals; every time here is an input, in
//! milliseconds of one node's monotonic clock, which keeps counting while the process is stopped
//! (a node never compares its clock with another's).
//!
//! Every node sends a [`Beat`] every [`Timing::heartbeat_ms`] to each voter of the configuration
//! group. Every voter records what it hears in its [`Keeper`], so a voter that becomes leader
//! already knows when it last heard from each node. Only the leader answers with a lease.
//!
//! **Leases fence primaries.** A primary serves its slots only while it holds a lease: granted by
//! the leader to a beat sent at `t`, it lasts until `t + lease` on the primary's clock (the beat
//! was sent before the leader granted it, so the primary's lease ends no later than
//! `grant + lease` in real time). The leader grants only while its leadership was confirmed by a
//! quorum less than [`Timing::confirm_max_ms`] ago, shortening the lease as that confirmation
//! ages, so every lease granted by a leader ends before `confirmed + confirm_max + lease`. A
//! newer leader is elected only after that confirmation, so leases granted by its predecessors
//! have all lapsed [`Timing::inherited_lapse_ms`] after it took office.
//!
//! **One lease per group.** A node that does not hold a lease yet (a promoted replica, a restarted
//! primary) gets its first one only once every other member of its group surely has none: the
//! leader's own grants to them lapsed, and so did its predecessors'. A node that still holds a
//! lease may renew it while the configuration names it primary. So at any instant at most one
//! node of a group holds a lease: two primaries never serve one slot.
//!
//! **Failure detection.** The leader declares a primary failed when it has not heard from it for
//! [`Timing::node_timeout_ms`] (a dead, paused or partitioned node alike), and, in its first
//! [`Timing::inherited_lapse_ms`] in office, not before that either. Since
//! `inherited_lapse < node_timeout`, a failed primary's lease has lapsed when its replica is
//! promoted, so the replica gets its lease at once. A primary that restarted (it never held a
//! lease and finished no sync since its process started: it restarted empty, or was promoted
//! while it was down) is handed over to an in-sync replica
//! at once rather than served empty.
//!
//! **The right replica.** Only a replica in the group's in-sync set (kept in the configuration,
//! see `Change::SetInSync`) may be promoted: it holds every acknowledged `sync` write; among
//! those alive, the one with the highest offset. A primary under the `async` strategy with no
//! live in-sync replica hands over to the live replica with the highest offset.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{Change, Config, NodeId};

/// The timers of failure detection and leases, all derived from `cluster-node-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A primary not heard from for this long is failed (`cluster-node-timeout`).
    pub node_timeout_ms: u64,
    /// How often a node beats.
    pub heartbeat_ms: u64,
    /// How long a lease lasts from the beat that asked for it.
    pub lease_ms: u64,
    /// A leader grants leases only while a quorum confirmed its leadership less than this long
    /// ago.
    pub confirm_max_ms: u64,
    /// Slack for clocks that run at slightly different rates and for the time between reading a
    /// clock and acting on it.
    pub margin_ms: u64,
}

/// The smallest node timeout the timers are derived from (a smaller setting is read as this).
pub const NODE_TIMEOUT_MIN_MS: u64 = 100;
/// `cluster-node-timeout`'s default.
pub const NODE_TIMEOUT_DEFAULT_MS: u64 = 1_000;

impl Timing {
    /// The timers for a node timeout: beats every tenth of it, leases of two fifths, leadership
    /// confirmations valid for a tenth, a margin of a twentieth. A short confirmation window
    /// costs nothing (a lease shrinks as its confirmation ages rather than being refused) and
    /// shortens what a new leader waits for its predecessors' leases.
    pub fn for_node_timeout(node_timeout_ms: u64) -> Timing {
        let nt = node_timeout_ms.max(NODE_TIMEOUT_MIN_MS);
        let t = Timing {
            node_timeout_ms: nt,
            heartbeat_ms: nt / 10,
            lease_ms: nt * 2 / 5,
            confirm_max_ms: nt / 10,
            margin_ms: nt / 20,
        };
        assert!(t.inherited_lapse_ms() < t.node_timeout_ms);
        t
    }

    /// How long after taking office a leader knows every lease its predecessors granted lapsed.
    pub fn inherited_lapse_ms(&self) -> u64 {
        self.confirm_max_ms + self.lease_ms + self.margin_ms
    }
}

/// What a node tells the voters with every beat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    pub node: NodeId,
    /// It holds a lease now (it may renew it rather than wait for a first one).
    pub holds: bool,
    /// It holds nothing it can vouch for: since its process started it has neither held a lease
    /// nor finished a sync from a primary (it restarted empty, or was promoted while it was
    /// down). As a primary it hands over to a live replica holding data rather than serve.
    pub restarted: bool,
    /// Its replication offset (a replica's applied offset, a primary's stream end).
    pub offset: u64,
    /// Its write strategy is `sync`.
    pub sync: bool,
}

/// A voter's answer to a beat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// A lease of this many milliseconds from the moment the beat was sent.
    Granted { lease_ms: u64 },
    /// No lease, for this reason (the node keeps beating).
    Refused(String),
    /// This voter is not the leader: it only took note.
    Noted,
}

/// What a voter heard last from a node.
#[derive(Debug, Clone)]
struct Heard {
    at_ms: u64,
    beat: Beat,
}

/// A leader's term in office.
#[derive(Debug, Clone, Copy)]
struct Office {
    term: u64,
    since_ms: u64,
    /// The start of the last check that a quorum still follows this leader, if one succeeded.
    confirmed_ms: Option<u64>,
}

/// A promotion the leader should propose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub replica: NodeId,
    pub primary: NodeId,
    /// Why: `failed` (not heard from) or `restarted`.
    pub reason: &'static str,
}

impl Promotion {
    /// The change to propose: refused unless `primary` is still the primary at `primary_epoch`
    /// (so a promotion decided twice, or overtaken, applies at most once).
    pub fn change(&self, cfg: &Config) -> Option<Change> {
        let epoch = cfg.node(&self.primary)?.config_epoch;
        Some(Change::Failover {
            replica: self.replica.clone(),
            primary: self.primary.clone(),
            primary_epoch: epoch,
            in_sync_only: cfg.in_sync(&self.replica),
        })
    }
}

/// Why a primary needs a successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Successor {
    /// Not heard from for the node timeout.
    Failed,
    /// Back with an empty memory.
    Restarted,
}

/// A voter's record of beats and, while it leads, of the leases it granted.
#[derive(Debug)]
pub struct Keeper {
    timing: Timing,
    /// When this keeper started: a node never heard from counts as heard then.
    started_ms: u64,
    heard: HashMap<NodeId, Heard>,
    /// The last grant to each node, by this voter while it led.
    granted: HashMap<NodeId, u64>,
    office: Option<Office>,
    /// Promotions proposed, by primary, and when: not proposed again for a node timeout.
    proposed: HashMap<NodeId, u64>,
}

impl Keeper {
    pub fn new(timing: Timing, now_ms: u64) -> Keeper {
        Keeper {
            timing,
            started_ms: now_ms,
            heard: HashMap::new(),
            granted: HashMap::new(),
            office: None,
            proposed: HashMap::new(),
        }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Whether this voter acts as leader now.
    pub fn leading(&self) -> bool {
        self.office.is_some()
    }

    /// This voter is the leader of `term` (seen at `now_ms`), or is not (`None`). A new term
    /// starts a new office: the grants of the old one are kept (they may still run).
    pub fn set_leader(&mut self, term: Option<u64>, now_ms: u64) {
        match (term, self.office) {
            (None, _) => self.office = None,
            (Some(t), Some(o)) if o.term == t => {}
            (Some(t), _) => {
                self.office = Some(Office {
                    term: t,
                    since_ms: now_ms,
                    confirmed_ms: None,
                });
                self.proposed.clear();
            }
        }
    }

    /// A quorum confirmed this leader's leadership by a check that started at `started_ms`.
    pub fn confirmed(&mut self, term: u64, started_ms: u64) {
        if let Some(o) = self.office.as_mut()
            && o.term == term
        {
            // Checks may finish out of order: keep the latest start.
            o.confirmed_ms = Some(o.confirmed_ms.map_or(started_ms, |c| c.max(started_ms)));
        }
    }

    /// Records a beat heard at `now_ms` and answers it: a lease when this voter leads, the
    /// configuration makes the node a primary, and no other member of its group may still hold
    /// one.
    pub fn on_beat(&mut self, cfg: &Config, beat: Beat, now_ms: u64) -> Answer {
        let node = beat.node.clone();
        self.heard.insert(
            node.clone(),
            Heard {
                at_ms: now_ms,
                beat,
            },
        );
        let Some(office) = self.office else {
            return Answer::Noted;
        };
        match self.grant(cfg, &node, office, now_ms) {
            Ok(lease_ms) => {
                // The node holds a lease now and is no longer restarted (its `Holder` does the
                // same when the answer arrives): until its next beat says so, the record must
                // not make it look like an empty primary to hand over.
                if let Some(h) = self.heard.get_mut(&node) {
                    h.beat.holds = true;
                    h.beat.restarted = false;
                }
                self.granted.insert(node, now_ms);
                Answer::Granted { lease_ms }
            }
            Err(why) => Answer::Refused(why),
        }
    }

    fn grant(&self, cfg: &Config, node: &str, office: Office, now: u64) -> Result<u64, String> {
        let t = self.timing;
        let Some(confirmed) = office.confirmed_ms else {
            return Err("the leader has not confirmed its leadership yet".into());
        };
        let age = now.saturating_sub(confirmed);
        let lease = (t.confirm_max_ms + t.lease_ms)
            .saturating_sub(age)
            .min(t.lease_ms);
        if lease <= t.margin_ms {
            return Err("the leader's leadership is not confirmed recently".into());
        }
        let Some(n) = cfg.node(node) else {
            return Err("not in the configuration".into());
        };
        if !n.is_primary() {
            return Err("not a primary".into());
        }
        let heard = &self.heard.get(node).expect("recorded before").beat;
        if heard.restarted
            && let Some(r) = self.successor(cfg, node, now, Successor::Restarted)
        {
            return Err(format!("restarted: handing over to its replica {r}"));
        }
        if !heard.holds {
            for m in cfg.replicas_of(node) {
                let lapse = self.lapse_ms(&m.id, office);
                if now < lapse {
                    return Err(format!(
                        "waiting {} ms for the lease of {} to lapse",
                        lapse - now,
                        m.id
                    ));
                }
            }
        }
        Ok(lease)
    }

    /// When leases granted before this office surely lapsed (this voter's clock). In a first
    /// term there was no other leader, but this voter itself may have led the same term in an
    /// earlier process (openraft brings a restarted leader back in its term): that process's
    /// grants ended before this keeper started.
    fn inherited_lapse_at(&self, office: Office) -> u64 {
        let base = if office.term <= 1 {
            self.started_ms
        } else {
            office.since_ms
        };
        base + self.timing.inherited_lapse_ms()
    }

    /// The time (this voter's clock) by which any lease `node` may hold has surely lapsed.
    fn lapse_ms(&self, node: &str, office: Office) -> u64 {
        let t = self.timing;
        let inherited = self.inherited_lapse_at(office);
        let mine = self
            .granted
            .get(node)
            .map_or(0, |g| g + t.lease_ms + t.margin_ms);
        inherited.max(mine)
    }

    /// Whether `node` was heard from within the node timeout.
    fn alive(&self, node: &str, now: u64) -> bool {
        let at = self.heard.get(node).map_or(self.started_ms, |h| h.at_ms);
        now.saturating_sub(at) < self.timing.node_timeout_ms
    }

    /// The replica of `primary` to promote now, if one may be: an in-sync replica alive, the
    /// one with the highest offset; or, under a primary whose strategy is `async`, or in place
    /// of a primary that restarted empty, any live replica with the highest offset if that is
    /// more than the primary's own. A replica whose last beat says it restarted is never a
    /// successor, in the in-sync set or not: it lost what made it a member (the set only learns
    /// that when the primary sees it lag), and it holds nothing until it finishes a sync.
    fn successor(&self, cfg: &Config, primary: &str, now: u64, why: Successor) -> Option<NodeId> {
        let offset = |id: &str| self.heard.get(id).map_or(0, |h| h.beat.offset);
        let live: Vec<&crate::Node> = cfg
            .replicas_of(primary)
            .filter(|r| {
                self.heard.get(&r.id).is_some_and(|h| !h.beat.restarted) && self.alive(&r.id, now)
            })
            .collect();
        let best = |in_sync: bool| {
            live.iter()
                .filter(|r| !in_sync || cfg.in_sync(&r.id))
                .max_by_key(|r| {
                    (
                        offset(&r.id),
                        cfg.in_sync(&r.id),
                        std::cmp::Reverse(r.id.clone()),
                    )
                })
                .map(|r| r.id.clone())
        };
        match why {
            // In place of a primary that restarted empty, the live replica that holds the most,
            // in the set or not (an in-sync one on a tie), and only if it holds more than the
            // restarted primary (its fresh stream is empty; a replica that synced from it holds
            // exactly as much). The set vouches for the primary's old history, which a member
            // that itself restarted and then synced from the empty primary no longer holds.
            Successor::Restarted => best(false).filter(|r| offset(r) > offset(primary)),
            Successor::Failed => {
                if let Some(r) = best(true) {
                    return Some(r);
                }
                // An unheard primary counts as `sync`: only an in-sync replica is safe then.
                let sync = self.heard.get(primary).is_none_or(|h| h.beat.sync);
                if sync { None } else { best(false) }
            }
        }
    }

    /// The promotions to propose now (only a leader proposes): primaries with slots not heard
    /// from for the node timeout, and restarted ones, that have a replica to take over.
    pub fn promotions(&mut self, cfg: &Config, now: u64) -> Vec<Promotion> {
        let Some(office) = self.office else {
            return Vec::new();
        };
        let t = self.timing;
        let mut out = Vec::new();
        for p in cfg.nodes().iter().filter(|n| n.is_primary()) {
            if cfg.ranges_of(&p.id).is_empty() {
                continue;
            }
            if self
                .proposed
                .get(&p.id)
                .is_some_and(|&at| now.saturating_sub(at) < t.node_timeout_ms)
            {
                continue;
            }
            let failed = !self.alive(&p.id, now) && now >= self.inherited_lapse_at(office);
            let restarted = !failed
                && self
                    .heard
                    .get(&p.id)
                    .is_some_and(|h| h.beat.restarted && !h.beat.holds);
            if !failed && !restarted {
                continue;
            }
            let why = if restarted {
                Successor::Restarted
            } else {
                Successor::Failed
            };
            if let Some(r) = self.successor(cfg, &p.id, now, why) {
                self.proposed.insert(p.id.clone(), now);
                out.push(Promotion {
                    replica: r,
                    primary: p.id.clone(),
                    reason: if failed { "failed" } else { "restarted" },
                });
            }
        }
        out
    }

    /// Nodes not heard from within the node timeout (for `CLUSTER NODES` flags).
    pub fn silent(&self, cfg: &Config, now: u64) -> Vec<NodeId> {
        cfg.nodes()
            .iter()
            .filter(|n| !self.alive(&n.id, now))
            .map(|n| n.id.clone())
            .collect()
    }

    /// Forgets nodes that left the configuration.
    pub fn retain(&mut self, cfg: &Config) {
        self.heard.retain(|id, _| cfg.node(id).is_some());
        self.granted.retain(|id, _| cfg.node(id).is_some());
    }
}

/// A node's own lease, as it learns of grants.
#[derive(Debug, Default, Clone, Copy)]
pub struct Holder {
    /// The lease runs until this time (0: none yet).
    until_ms: u64,
    /// Has held no lease and finished no sync since the process started (see
    /// [`Beat::restarted`]).
    restarted: bool,
}

impl Holder {
    /// Whether the lease runs at `now_ms`.
    pub fn holds(&self, now_ms: u64) -> bool {
        now_ms < self.until_ms
    }

    pub fn until_ms(&self) -> u64 {
        self.until_ms
    }

    /// A holder for a process that starts (its memory holds nothing it can vouch for).
    pub fn restarted() -> Holder {
        Holder {
            until_ms: 0,
            restarted: true,
        }
    }

    pub fn is_restarted(&self) -> bool {
        self.restarted
    }

    /// A beat sent at `sent_ms` was granted `lease_ms`. Leases only grow: an answer that
    /// arrives after a later one does not shorten the lease.
    pub fn granted(&mut self, sent_ms: u64, lease_ms: u64) {
        self.until_ms = self.until_ms.max(sent_ms + lease_ms);
        self.restarted = false;
    }

    /// The configuration no longer makes this node a primary: whatever lease it holds is given
    /// up at once, and a later promotion starts from a first grant.
    pub fn give_up(&mut self) {
        self.until_ms = 0;
    }

    /// As a replica it finished a sync from its primary: its memory holds the group's data.
    pub fn synced(&mut self) {
        self.restarted = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Node, SlotRange};

    fn id(n: u8) -> String {
        format!("{n:040x}")
    }

    /// Primary 1 with replicas 2 and 3, owning every slot.
    fn cluster() -> Config {
        let mut c = Config::new();
        for n in 1..=3u8 {
            c.apply(&Change::AddNode(Node {
                id: id(n),
                ip: "127.0.0.1".into(),
                port: 7000 + n as u16,
                bus_port: 17000 + n as u16,
                replica_of: (n > 1).then(|| id(1)),
                config_epoch: 0,
            }))
            .unwrap();
        }
        c.apply(&Change::AssignSlots {
            node: id(1),
            ranges: vec![SlotRange::new(0, 16383).unwrap()],
        })
        .unwrap();
        c
    }

    fn beat(n: u8, holds: bool, offset: u64) -> Beat {
        Beat {
            node: id(n),
            holds,
            restarted: false,
            offset,
            sync: true,
        }
    }

    const T: Timing = Timing {
        node_timeout_ms: 1000,
        heartbeat_ms: 100,
        lease_ms: 400,
        confirm_max_ms: 100,
        margin_ms: 50,
    };

    #[test]
    fn timing_keeps_inherited_leases_inside_the_node_timeout() {
        for nt in [0, 1, 100, 999, 1000, 15_000, 1 << 40] {
            let t = Timing::for_node_timeout(nt);
            assert!(t.inherited_lapse_ms() < t.node_timeout_ms);
            assert!(t.heartbeat_ms > 0 && t.heartbeat_ms < t.lease_ms);
        }
        assert_eq!(Timing::for_node_timeout(1000), T);
    }

    #[test]
    fn only_a_confirmed_leader_grants_and_leases_shrink_as_confirmation_ages() {
        let c = cluster();
        let mut k = Keeper::new(T, 0);
        // Leases granted before this keeper started (by this voter in an earlier process, in
        // the same first term) have lapsed 550 ms after it started.
        let b = 1000;
        assert_eq!(k.on_beat(&c, beat(1, false, 0), b + 10), Answer::Noted);
        k.set_leader(Some(1), b + 20);
        assert!(matches!(
            k.on_beat(&c, beat(1, false, 0), b + 30),
            Answer::Refused(_)
        ));
        k.confirmed(1, b + 40);
        assert_eq!(
            k.on_beat(&c, beat(1, false, 0), b + 50),
            Answer::Granted { lease_ms: 400 }
        );
        // 300 ms after the confirmation: 100 + 400 - 300.
        assert_eq!(
            k.on_beat(&c, beat(1, true, 0), b + 340),
            Answer::Granted { lease_ms: 200 }
        );
        assert!(matches!(
            k.on_beat(&c, beat(1, true, 0), b + 40 + 510),
            Answer::Refused(_)
        ));
        // A confirmation of another term does not count.
        k.confirmed(2, b + 600);
        assert!(matches!(
            k.on_beat(&c, beat(1, true, 0), b + 601),
            Answer::Refused(_)
        ));
        // Replicas get no lease.
        k.confirmed(1, b + 600);
        assert!(matches!(
            k.on_beat(&c, beat(2, false, 0), b + 601),
            Answer::Refused(_)
        ));
        // A keeper that just started (a restarted leader in its first term) waits.
        let mut fresh = Keeper::new(T, b);
        fresh.set_leader(Some(1), b);
        fresh.confirmed(1, b);
        assert!(matches!(
            fresh.on_beat(&c, beat(1, false, 0), b + 10),
            Answer::Refused(ref w) if w.contains("lapse")
        ));
    }

    #[test]
    fn a_new_primary_waits_until_no_other_member_can_hold_a_lease() {
        let mut c = cluster();
        let mut k = Keeper::new(T, 0);
        k.set_leader(Some(3), 0);
        k.confirmed(3, 0);
        // Second term or later: predecessors' leases lapse 550 ms after taking office.
        assert!(matches!(
            k.on_beat(&c, beat(1, false, 0), 100),
            Answer::Refused(_)
        ));
        let mut now = 550;
        k.confirmed(3, now);
        assert!(matches!(
            k.on_beat(&c, beat(1, false, 0), now),
            Answer::Granted { .. }
        ));
        // Manual promotion of 2 while 1 holds a lease granted at 550.
        c.apply(&Change::Promote { replica: id(2) }).unwrap();
        now = 700;
        k.confirmed(3, now);
        assert!(matches!(
            k.on_beat(&c, beat(1, true, 0), now),
            Answer::Refused(_)
        ));
        let first = k.on_beat(&c, beat(2, false, 0), now);
        assert!(matches!(first, Answer::Refused(ref w) if w.contains("lapse")));
        now = 550 + 400 + 50;
        k.confirmed(3, now);
        assert!(matches!(
            k.on_beat(&c, beat(2, false, 0), now),
            Answer::Granted { .. }
        ));
    }

    #[test]
    fn a_silent_primary_is_replaced_by_its_best_in_sync_replica() {
        let mut c = cluster();
        c.apply(&Change::SetInSync {
            primary: id(1),
            primary_epoch: c.node(&id(1)).unwrap().config_epoch,
            replicas: vec![id(2), id(3)],
        })
        .unwrap();
        let mut k = Keeper::new(T, 0);
        k.set_leader(Some(1), 0);
        k.confirmed(1, 0);
        k.on_beat(&c, beat(1, true, 100), 0);
        k.on_beat(&c, beat(2, false, 90), 0);
        k.on_beat(&c, beat(3, false, 95), 0);
        assert!(k.promotions(&c, 999).is_empty());
        // The replicas keep beating; the primary does not.
        k.on_beat(&c, beat(2, false, 90), 900);
        k.on_beat(&c, beat(3, false, 95), 900);
        let p = k.promotions(&c, 1000);
        assert_eq!(
            p,
            vec![Promotion {
                replica: id(3),
                primary: id(1),
                reason: "failed"
            }]
        );
        // Not proposed again at once.
        assert!(k.promotions(&c, 1001).is_empty());
        let change = p[0].change(&c).unwrap();
        c.apply(&change).unwrap();
        assert!(c.node(&id(3)).unwrap().is_primary());
        // The old primary's lease (granted at 0) lapsed long ago: 3 gets one at once.
        k.confirmed(1, 1000);
        assert!(matches!(
            k.on_beat(&c, beat(3, false, 95), 1000),
            Answer::Granted { .. }
        ));
        // The same decision applied twice is refused the second time.
        assert!(c.apply(&change).is_err());
    }

    #[test]
    fn only_in_sync_replicas_are_promoted_under_sync() {
        let mut c = cluster();
        c.apply(&Change::SetInSync {
            primary: id(1),
            primary_epoch: 0,
            replicas: vec![id(2)],
        })
        .unwrap();
        let mut k = Keeper::new(T, 0);
        k.set_leader(Some(1), 0);
        k.on_beat(&c, beat(1, true, 100), 0);
        // 3 is further ahead but not in sync; 2 is silent.
        k.on_beat(&c, beat(3, false, 100), 1500);
        assert!(k.promotions(&c, 1500).is_empty());
        // Under async, the live replica with the highest offset takes over.
        let mut async_beat = beat(1, true, 100);
        async_beat.sync = false;
        let mut k2 = Keeper::new(T, 0);
        k2.set_leader(Some(1), 0);
        k2.on_beat(&c, async_beat, 0);
        k2.on_beat(&c, beat(3, false, 100), 1500);
        let p = k2.promotions(&c, 1500);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].replica, id(3));
        assert!(
            !p[0]
                .change(&c)
                .map(|ch| matches!(
                    ch,
                    Change::Failover {
                        in_sync_only: true,
                        ..
                    }
                ))
                .unwrap()
        );
    }

    #[test]
    fn a_replica_that_restarted_empty_is_never_a_successor() {
        let mut c = cluster();
        c.apply(&Change::SetInSync {
            primary: id(1),
            primary_epoch: 0,
            replicas: vec![id(2)],
        })
        .unwrap();
        let mut k = Keeper::new(T, 0);
        k.set_leader(Some(1), 0);
        k.confirmed(1, 0);
        k.on_beat(&c, beat(1, true, 100), 0);
        // 2 is in the in-sync set but came back empty; 3 is outside it and holds 80.
        let empty = Beat {
            restarted: true,
            ..beat(2, false, 0)
        };
        k.on_beat(&c, empty.clone(), 900);
        k.on_beat(&c, beat(3, false, 80), 900);
        // The primary fails: under `sync` only an in-sync replica may take over, and the one
        // in the set holds nothing, so no one does.
        assert!(k.promotions(&c, 1000).is_empty());
        // The primary comes back empty: the hand-over goes to the replica with data.
        let restarted = Beat {
            restarted: true,
            ..beat(1, false, 0)
        };
        k.on_beat(&c, empty.clone(), 1000);
        k.on_beat(&c, beat(3, false, 80), 1000);
        k.confirmed(1, 1000);
        let a = k.on_beat(&c, restarted, 1010);
        assert!(
            matches!(a, Answer::Refused(ref w) if w.contains(&id(3))),
            "{a:?}"
        );
        // Once 2 finished a sync its beats say so, and it is a successor again.
        k.on_beat(&c, beat(2, false, 80), 1020);
        k.on_beat(&c, beat(1, true, 100), 1020);
        k.on_beat(&c, beat(2, false, 80), 2900);
        let p = k.promotions(&c, 3000);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].replica, id(2));
    }

    #[test]
    fn a_restarted_primary_hands_over_to_the_replica_with_the_most_in_the_set_or_not() {
        let mut c = cluster();
        c.apply(&Change::SetInSync {
            primary: id(1),
            primary_epoch: 0,
            replicas: vec![id(2)],
        })
        .unwrap();
        let mut k = Keeper::new(T, 0);
        k.set_leader(Some(1), 0);
        k.confirmed(1, 0);
        // 2, in the set, synced from the restarted primary and holds nothing; 3 holds 80.
        k.on_beat(&c, beat(2, false, 0), 0);
        k.on_beat(&c, beat(3, false, 80), 0);
        let restarted = Beat {
            restarted: true,
            ..beat(1, false, 0)
        };
        let a = k.on_beat(&c, restarted.clone(), 10);
        assert!(
            matches!(a, Answer::Refused(ref w) if w.contains(&id(3))),
            "{a:?}"
        );
        // On a tie the in-sync replica is chosen.
        k.on_beat(&c, beat(2, false, 80), 20);
        let a = k.on_beat(&c, restarted, 30);
        assert!(
            matches!(a, Answer::Refused(ref w) if w.contains(&id(2))),
            "{a:?}"
        );
    }

    #[test]
    fn a_restarted_primary_hands_over_instead_of_serving_empty() {
        let mut c = cluster();
        c.apply(&Change::SetInSync {
            primary: id(1),
            primary_epoch: 0,
            replicas: vec![id(2)],
        })
        .unwrap();
        let mut k = Keeper::new(T, 0);
        k.set_leader(Some(1), 0);
        k.confirmed(1, 0);
        k.on_beat(&c, beat(2, false, 50), 0);
        let restarted = Beat {
            restarted: true,
            ..beat(1, false, 0)
        };
        let a = k.on_beat(&c, restarted.clone(), 10);
        assert!(matches!(a, Answer::Refused(ref w) if w.contains("handing over")));
        // A restarted primary granted a lease (no replica to hand over to then) is not handed
        // over later on the strength of the beat that asked for it.
        let mut alone = Keeper::new(T, 0);
        alone.set_leader(Some(1), 0);
        alone.confirmed(1, 600);
        assert!(matches!(
            alone.on_beat(&c, restarted.clone(), 610),
            Answer::Granted { .. }
        ));
        alone.on_beat(&c, beat(2, false, 50), 620);
        assert!(alone.promotions(&c, 630).is_empty());
        let p = k.promotions(&c, 20);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].reason, "restarted");
        // Without a live replica it serves (empty) rather than not at all.
        let c2 = cluster();
        let mut k2 = Keeper::new(T, 0);
        k2.set_leader(Some(1), 0);
        k2.confirmed(1, 550);
        assert!(matches!(
            k2.on_beat(&c2, restarted.clone(), 610),
            Answer::Granted { .. }
        ));
        // A live replica outside the in-sync set still holds more than an empty primary.
        let mut k3 = Keeper::new(T, 0);
        k3.set_leader(Some(1), 0);
        k3.confirmed(1, 0);
        k3.on_beat(&c2, beat(3, false, 70), 0);
        assert!(matches!(k3.on_beat(&c2, restarted, 10), Answer::Refused(_)));
        let p = k3.promotions(&c2, 20);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].replica, id(3));
    }

    #[test]
    fn a_new_leader_does_not_declare_failures_before_inherited_leases_lapse() {
        let mut c = cluster();
        c.apply(&Change::SetInSync {
            primary: id(1),
            primary_epoch: 0,
            replicas: vec![id(2)],
        })
        .unwrap();
        let mut k = Keeper::new(T, 0);
        k.on_beat(&c, beat(2, false, 0), 0);
        k.set_leader(Some(4), 5_000);
        k.on_beat(&c, beat(2, false, 0), 5_000);
        // Primary 1 was never heard by this voter, but leases of older leaders may still run.
        assert!(k.promotions(&c, 5_000 + 549).is_empty());
        let p = k.promotions(&c, 5_000 + 550);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].replica, id(2));
    }

    #[test]
    fn the_holder_keeps_the_longest_lease_and_gives_it_up_when_demoted() {
        let mut h = Holder::restarted();
        assert!(!h.holds(1) && h.is_restarted());
        h.granted(100, 400);
        assert!(!h.is_restarted());
        h.granted(50, 400);
        assert_eq!(h.until_ms(), 500);
        assert!(h.holds(499) && !h.holds(500));
        h.give_up();
        assert!(!h.holds(101));
        let mut r = Holder::restarted();
        r.give_up();
        assert!(r.is_restarted(), "a demoted empty node is still empty");
        r.synced();
        assert!(!r.is_restarted());
    }
}

//! The simulator's workload: random `Change`s of the cluster configuration, drawn from a seeded
//! generator and aimed at the configuration a client last saw, so that most are plausible
//! (assign free slots, move owned slots to another primary, finish moves that are running) and
//! many are still refused when they reach the log (another change got there first, or the view
//! was stale), which exercises the no-op path. One table lists every kind of change with its
//! weight: a new `Change` variant is one more line there and one generator.

use shoal_cluster::{Change, Config, Node, SLOTS, SlotRange};
use shoal_keyspace::Rng;

/// Cluster node ids the workload draws from: more than ever join at once, so adds and removes
/// both happen.
pub const POOL_NODES: u64 = 8;

/// A generator of one kind of change.
type Generator = fn(&mut Rng, &Config) -> Change;

/// Every kind of change the workload proposes, with its weight.
const CHANGES: &[(u32, Generator)] = &[
    (10, add_node),
    (3, remove_node),
    (20, assign_slots),
    (4, unassign_slots),
    (12, begin_migration),
    (8, finish_migration),
    (4, cancel_migration),
    (6, set_owner),
    (6, move_slots),
    (2, bump_epoch),
    (3, promote),
    (4, replicate),
    (2, set_address),
];

/// A random change, aimed at `view` (the configuration the client last saw).
pub fn change(rng: &mut Rng, view: &Config) -> Change {
    let total: u32 = CHANGES.iter().map(|&(w, _)| w).sum();
    let mut pick = rng.below(total as usize) as u32;
    for &(weight, generate) in CHANGES {
        if pick < weight {
            return generate(rng, view);
        }
        pick -= weight;
    }
    unreachable!("the weights add up to {total}")
}

/// A random change, as [`change`], that leaves the failover model's data nodes and slots alone
/// (drawn again, a bounded number of times; then an epoch bump of a pool node).
pub fn change_clear_of_data(rng: &mut Rng, view: &Config) -> Change {
    for _ in 0..16 {
        let c = change(rng, view);
        if !crate::failover::touches_data(&c) {
            return c;
        }
    }
    Change::BumpEpoch {
        node: any_pool_node(rng),
    }
}

/// The id of pool node `n`.
pub fn node_id(n: u64) -> String {
    format!("{:040x}", 0x5100_0000_u64 + n)
}

fn chance(rng: &mut Rng, per_100: usize) -> bool {
    rng.below(100) < per_100
}

fn any_pool_node(rng: &mut Rng) -> String {
    node_id(rng.below(POOL_NODES as usize) as u64)
}

/// Mostly a node of `view` that `wanted` accepts, sometimes any pool node.
fn node_where(rng: &mut Rng, view: &Config, wanted: impl Fn(&Node) -> bool) -> String {
    let fits: Vec<&Node> = view.nodes().iter().filter(|n| wanted(n)).collect();
    if fits.is_empty() || chance(rng, 10) {
        return any_pool_node(rng);
    }
    fits[rng.below(fits.len())].id.clone()
}

fn primary(rng: &mut Rng, view: &Config) -> String {
    node_where(rng, view, Node::is_primary)
}

/// How many slots a range spans: one, a few, hundreds or thousands.
fn some_len(rng: &mut Rng) -> usize {
    match rng.below(4) {
        0 => 1,
        1 => 1 + rng.below(16),
        2 => 1 + rng.below(512),
        _ => 1 + rng.below(4096),
    }
}

/// A range of slots anywhere.
fn any_range(rng: &mut Rng) -> SlotRange {
    let start = rng.below(SLOTS) as u16;
    let end = (start as usize + some_len(rng) - 1).min(SLOTS - 1) as u16;
    SlotRange::new(start, end).expect("in the table")
}

/// A range of slots for which `fits` holds, grown from a slot found by probing (at most 64
/// probes), or any range when none is found.
fn range_where(rng: &mut Rng, fits: impl Fn(u16) -> bool) -> SlotRange {
    match (0..64).map(|_| rng.below(SLOTS) as u16).find(|&s| fits(s)) {
        Some(start) => grow(rng, start, fits),
        None => any_range(rng),
    }
}

/// A range from `start` over the following slots for which `fits` holds.
fn grow(rng: &mut Rng, start: u16, fits: impl Fn(u16) -> bool) -> SlotRange {
    let len = some_len(rng);
    let mut end = start;
    while (end as usize) < SLOTS - 1 && ((end - start) as usize) < len - 1 && fits(end + 1) {
        end += 1;
    }
    SlotRange::new(start, end).expect("in the table")
}

/// One to three ranges, each mostly where `fits` holds.
fn ranges_where(rng: &mut Rng, fits: impl Fn(u16) -> bool) -> Vec<SlotRange> {
    let n = 1 + rng.below(3);
    (0..n)
        .map(|_| {
            if chance(rng, 80) {
                range_where(rng, &fits)
            } else {
                any_range(rng)
            }
        })
        .collect()
}

/// Mostly slots that one node owns (a range grown from an owned slot stays with its owner).
fn owned_range(rng: &mut Rng, view: &Config) -> SlotRange {
    match (0..64)
        .map(|_| rng.below(SLOTS) as u16)
        .find(|&s| view.owner(s).is_some())
    {
        Some(start) => {
            let owner = view.owner(start).map(|n| n.id.clone());
            grow(rng, start, |s| {
                view.owner(s).map(|n| &n.id) == owner.as_ref()
            })
        }
        None => any_range(rng),
    }
}

fn add_node(rng: &mut Rng, view: &Config) -> Change {
    let absent: Vec<String> = (0..POOL_NODES)
        .map(node_id)
        .filter(|id| view.node(id).is_none())
        .collect();
    let id = if absent.is_empty() || chance(rng, 10) {
        any_pool_node(rng)
    } else {
        absent[rng.below(absent.len())].clone()
    };
    let replica_of = chance(rng, 30).then(|| primary(rng, view));
    let n = rng.below(100) as u16;
    Change::AddNode(Node {
        id,
        ip: format!("10.0.0.{n}"),
        port: 7000 + n,
        bus_port: 17000 + n,
        replica_of,
        config_epoch: 0,
    })
}

fn remove_node(rng: &mut Rng, view: &Config) -> Change {
    Change::RemoveNode(node_where(rng, view, |_| true))
}

fn assign_slots(rng: &mut Rng, view: &Config) -> Change {
    Change::AssignSlots {
        node: primary(rng, view),
        ranges: ranges_where(rng, |s| view.owner(s).is_none()),
    }
}

fn unassign_slots(rng: &mut Rng, view: &Config) -> Change {
    Change::UnassignSlots {
        ranges: ranges_where(rng, |s| view.owner(s).is_some()),
    }
}

fn begin_migration(rng: &mut Rng, view: &Config) -> Change {
    let range = owned_range(rng, view);
    let owner = view.owner(range.start).map(|n| n.id.clone());
    Change::BeginMigration {
        to: node_where(rng, view, |n| {
            n.is_primary() && Some(&n.id) != owner.as_ref()
        }),
        ranges: vec![range],
    }
}

fn finish_migration(rng: &mut Rng, view: &Config) -> Change {
    Change::FinishMigration {
        ranges: ranges_where(rng, |s| view.migrating_to(s).is_some()),
    }
}

fn cancel_migration(rng: &mut Rng, view: &Config) -> Change {
    Change::CancelMigration {
        ranges: ranges_where(rng, |s| view.migrating_to(s).is_some()),
    }
}

fn set_owner(rng: &mut Rng, view: &Config) -> Change {
    let ranges = if chance(rng, 50) {
        ranges_where(rng, |s| view.migrating_to(s).is_some())
    } else {
        vec![owned_range(rng, view)]
    };
    Change::SetOwner {
        node: primary(rng, view),
        ranges,
    }
}

/// An atomic move: mostly from the owner of the range at its current epoch (which passes),
/// sometimes at a stale epoch or from another node (refused).
fn move_slots(rng: &mut Rng, view: &Config) -> Change {
    let range = owned_range(rng, view);
    let from = match view.owner(range.start) {
        Some(n) if chance(rng, 90) => n.id.clone(),
        _ => primary(rng, view),
    };
    let epoch = view.node(&from).map_or(0, |n| n.config_epoch);
    Change::MoveSlots {
        to: node_where(rng, view, |n| n.is_primary() && n.id != from),
        from,
        ranges: vec![range],
        from_epoch: if chance(rng, 85) {
            epoch
        } else {
            epoch.saturating_sub(1 + rng.below(3) as u64)
        },
    }
}

fn bump_epoch(rng: &mut Rng, view: &Config) -> Change {
    Change::BumpEpoch {
        node: node_where(rng, view, |_| true),
    }
}

fn promote(rng: &mut Rng, view: &Config) -> Change {
    Change::Promote {
        replica: node_where(rng, view, |n| !n.is_primary()),
    }
}

fn replicate(rng: &mut Rng, view: &Config) -> Change {
    let empty = |n: &Node| {
        n.is_primary()
            && view.ranges_of(&n.id).is_empty()
            && view.replicas_of(&n.id).next().is_none()
    };
    let node = node_where(rng, view, empty);
    Change::Replicate {
        primary: node_where(rng, view, |n| n.is_primary() && n.id != node),
        node,
    }
}

fn set_address(rng: &mut Rng, view: &Config) -> Change {
    let n = rng.below(100) as u16;
    Change::SetAddress {
        node: node_where(rng, view, |_| true),
        ip: format!("10.0.1.{n}"),
        port: 7100 + n,
        bus_port: 17100 + n,
    }
}

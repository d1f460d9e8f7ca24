//! Plans for moving slots between primaries, sans I/O: which slots go from which primary to
//! which, computed as `redis-cli --cluster reshard|rebalance` computes them (the same arithmetic,
//! in `f32` as there, so a plan reads the same as redis-cli's), and grouped into one job per
//! (source, target) pair for the slot migration jobs the tools start (`CLUSTER MIGRATESLOTS`).
//!
//! - [`reshard`]: `slots` slots to one target, taken from the sources in proportion to what each
//!   owns (the largest source first, rounded up, the others rounded down, each giving its lowest
//!   slots), so it may plan a few slots fewer than asked, as redis-cli does.
//! - [`rebalance`]: each primary's share of the 16384 slots by weight; nothing moves unless some
//!   primary is further than `threshold` percent from its share; then slots move from the
//!   primaries with the most extra to those with the most missing.

use crate::{NodeId, SLOTS, SlotRange};

/// A primary as a plan sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Primary {
    pub id: NodeId,
    /// The slots it owns, ascending.
    pub slots: Vec<u16>,
    /// Its weight for [`rebalance`] (1 unless the user gave another).
    pub weight: f32,
}

impl Primary {
    pub fn new(id: impl Into<NodeId>, slots: Vec<u16>) -> Primary {
        Primary {
            id: id.into(),
            slots,
            weight: 1.0,
        }
    }
}

/// One slot to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMove {
    pub slot: u16,
    pub from: NodeId,
    pub to: NodeId,
}

/// The slots to move to `target` from `sources` (redis-cli's `clusterManagerComputeReshardTable`):
/// sources by slots owned, most first (ties in the order given); each gives
/// `slots / total * owned` of its lowest slots, rounded up for the first and down for the
/// others, and never more than `slots` in all.
pub fn reshard(sources: &[Primary], target: &str, slots: usize) -> Vec<SlotMove> {
    let total: usize = sources.iter().map(|s| s.slots.len()).sum();
    let mut out = Vec::new();
    if total == 0 || slots == 0 {
        return out;
    }
    let mut sorted: Vec<&Primary> = sources.iter().collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.slots.len()));
    for (i, s) in sorted.iter().enumerate() {
        let share = slots as f32 / total as f32 * s.slots.len() as f32;
        let max = if i == 0 { share.ceil() } else { share.floor() } as usize;
        for &slot in s.slots.iter().take(max) {
            if out.len() >= slots {
                break;
            }
            out.push(SlotMove {
                slot,
                from: s.id.clone(),
                to: target.to_string(),
            });
        }
    }
    out
}

/// The default of `--threshold`, in percent (redis-cli's `CLUSTER_MANAGER_REBALANCE_THRESHOLD`).
pub const REBALANCE_THRESHOLD_PCT: f32 = 2.0;

/// What [`rebalance`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct RebalancePlan {
    /// Primaries taking part (all with slots, and the empty ones with `use_empty`).
    pub nodes: usize,
    pub total_weight: f32,
    /// Some primary is further from its share than the threshold: the steps move slots.
    /// Otherwise nothing needs to move and `steps` is empty.
    pub needed: bool,
    pub steps: Vec<RebalanceStep>,
}

/// Slots moving from one primary to another, in the order redis-cli moves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebalanceStep {
    pub from: NodeId,
    pub to: NodeId,
    pub slots: Vec<u16>,
}

/// Balances the slots over `primaries` by weight (redis-cli's `--cluster rebalance`). A primary
/// without slots takes part only with `use_empty` (its weight counts as 0 otherwise). `Err` for a
/// plan that cannot be made (no weight at all, or the arithmetic did not add up).
pub fn rebalance(
    primaries: &[Primary],
    threshold_pct: f32,
    use_empty: bool,
) -> Result<RebalancePlan, String> {
    struct N {
        id: NodeId,
        slots: Vec<u16>,
        balance: i64,
    }
    let involved: Vec<&Primary> = primaries
        .iter()
        .filter(|p| use_empty || !p.slots.is_empty())
        .collect();
    let total_weight: f32 = involved.iter().map(|p| p.weight).sum();
    if involved.is_empty() || total_weight <= 0.0 || !total_weight.is_finite() {
        return Err("the primaries taking part have no weight: nothing to balance".into());
    }
    let mut nodes: Vec<N> = Vec::with_capacity(involved.len());
    let (mut total_balance, mut over_threshold) = (0i64, false);
    for p in &involved {
        // Expected slots and the balance: what the primary should lose (> 0) or gain (< 0).
        let expected = ((SLOTS as f32 / total_weight) * p.weight) as i64;
        let owned = p.slots.len() as i64;
        let balance = owned - expected;
        total_balance += balance;
        if threshold_pct > 0.0 {
            if owned > 0 {
                let err_pct = (100.0 - (100.0 * expected as f64 / owned as f64)).abs();
                over_threshold |= err_pct > threshold_pct as f64;
            } else if expected > 1 {
                over_threshold = true;
            }
        }
        nodes.push(N {
            id: p.id.clone(),
            slots: p.slots.clone(),
            balance,
        });
    }
    let mut plan = RebalancePlan {
        nodes: nodes.len(),
        total_weight,
        needed: over_threshold,
        steps: Vec::new(),
    };
    if !over_threshold {
        return Ok(plan);
    }
    // Rounding leaves the balances summing above zero: the first primaries that give nothing
    // take one slot more each, so every slot given is taken. A pass that changes nothing ends it
    // (redis-cli would loop for ever there).
    while total_balance > 0 {
        let before = total_balance;
        for n in nodes.iter_mut() {
            if n.balance <= 0 && total_balance > 0 {
                n.balance -= 1;
                total_balance -= 1;
            }
        }
        if total_balance == before {
            break;
        }
    }
    // Most to gain first, most to give last (stable, so ties keep the cluster's order).
    nodes.sort_by_key(|n| n.balance);
    let (mut dst, mut src) = (0usize, nodes.len() - 1);
    // Each round zeroes one side's balance or fails; bounded all the same.
    let mut rounds = 0;
    while dst < src {
        rounds += 1;
        if rounds > 2 * nodes.len() + SLOTS {
            return Err("the rebalance plan does not converge".into());
        }
        let count = nodes[dst]
            .balance
            .unsigned_abs()
            .min(nodes[src].balance.unsigned_abs()) as usize;
        if count > 0 {
            let source = Primary::new(nodes[src].id.clone(), nodes[src].slots.clone());
            let table = reshard(std::slice::from_ref(&source), &nodes[dst].id, count);
            if table.len() != count {
                return Err(format!(
                    "{} owns {} slots, fewer than the {count} it should give",
                    nodes[src].id,
                    nodes[src].slots.len()
                ));
            }
            let moved: Vec<u16> = table.iter().map(|m| m.slot).collect();
            nodes[src].slots.retain(|s| !moved.contains(s));
            nodes[dst].slots.extend_from_slice(&moved);
            nodes[dst].slots.sort_unstable();
            plan.steps.push(RebalanceStep {
                from: nodes[src].id.clone(),
                to: nodes[dst].id.clone(),
                slots: moved,
            });
        }
        nodes[dst].balance += count as i64;
        nodes[src].balance -= count as i64;
        if nodes[dst].balance == 0 {
            dst += 1;
        }
        if nodes[src].balance == 0 {
            src -= 1;
        }
    }
    Ok(plan)
}

/// One migration job: every slot going from one primary to another, as ascending ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub from: NodeId,
    pub to: NodeId,
    pub ranges: Vec<SlotRange>,
}

impl Job {
    pub fn slot_count(&self) -> usize {
        self.ranges
            .iter()
            .map(|r| (r.end - r.start) as usize + 1)
            .sum()
    }
}

/// Groups moves into one job per (source, target) pair, in the order the pairs first appear.
pub fn jobs(moves: &[SlotMove]) -> Vec<Job> {
    let mut pairs: Vec<(&str, &str, Vec<u16>)> = Vec::new();
    for m in moves {
        match pairs
            .iter_mut()
            .find(|(f, t, _)| *f == m.from && *t == m.to)
        {
            Some((_, _, slots)) => slots.push(m.slot),
            None => pairs.push((&m.from, &m.to, vec![m.slot])),
        }
    }
    pairs
        .into_iter()
        .map(|(from, to, mut slots)| {
            slots.sort_unstable();
            slots.dedup();
            Job {
                from: from.to_string(),
                to: to.to_string(),
                ranges: to_ranges(&slots),
            }
        })
        .collect()
}

/// Ascending, distinct slots as the fewest inclusive ranges.
pub fn to_ranges(slots: &[u16]) -> Vec<SlotRange> {
    let mut out: Vec<SlotRange> = Vec::new();
    for &s in slots {
        match out.last_mut() {
            Some(r) if r.end + 1 == s => r.end = s,
            _ => out.push(SlotRange::one(s)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, a: u16, b: u16) -> Primary {
        Primary::new(id, (a..=b).collect())
    }

    fn count_from(moves: &[SlotMove], id: &str) -> usize {
        moves.iter().filter(|m| m.from == id).count()
    }

    #[test]
    fn reshard_takes_from_each_source_in_proportion_lowest_slots_first() {
        // Three even primaries (redis-cli's create split), 100 slots to a fourth.
        let s = [p("a", 0, 5460), p("b", 5461, 10922), p("c", 10923, 16383)];
        let moves = reshard(&s, "d", 100);
        assert_eq!(moves.len(), 100);
        // b owns 5462 slots, the most: it goes first and is rounded up.
        assert_eq!(count_from(&moves, "b"), 34);
        assert_eq!(count_from(&moves, "a"), 33);
        assert_eq!(count_from(&moves, "c"), 33);
        assert_eq!(moves[0].slot, 5461);
        assert_eq!(
            moves[34].slot, 0,
            "a comes before c: a tie keeps the order given"
        );
        assert!(moves.iter().all(|m| m.to == "d"));
        let from_a: Vec<u16> = moves
            .iter()
            .filter(|m| m.from == "a")
            .map(|m| m.slot)
            .collect();
        assert_eq!(from_a, (0..33).collect::<Vec<_>>());
    }

    #[test]
    fn reshard_rounds_as_redis_cli_and_never_moves_more_than_asked() {
        // Shares of 4 slots from 1, 2 and 5: 2.5 rounded up, 1 and 0.5 rounded down.
        let s = [p("a", 0, 0), p("b", 1, 2), p("c", 3, 7)];
        let moves = reshard(&s, "d", 4);
        assert_eq!(moves.len(), 4);
        assert_eq!(count_from(&moves, "c"), 3);
        assert_eq!(count_from(&moves, "b"), 1);
        // Three sources of one slot each, two slots asked: 0.67 rounds up for the first only, so
        // one slot moves, as redis-cli plans it.
        let ones = [p("a", 0, 0), p("b", 1, 1), p("c", 2, 2)];
        let moves = reshard(&ones, "d", 2);
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].from, "a");
        // Everything the sources own, at most.
        assert_eq!(reshard(&s, "d", 100).len(), 8);
        assert!(reshard(&[], "d", 10).is_empty());
        assert!(reshard(&[p("a", 0, 9)], "d", 0).is_empty());
    }

    #[test]
    fn jobs_group_moves_by_pair_into_ranges() {
        let s = [p("a", 0, 99), p("b", 200, 299)];
        let moves = reshard(&s, "d", 100);
        let j = jobs(&moves);
        assert_eq!(j.len(), 2);
        assert_eq!(j[0].from, "a");
        assert_eq!(j[0].ranges, vec![SlotRange::new(0, 49).unwrap()]);
        assert_eq!(j[1].ranges, vec![SlotRange::new(200, 249).unwrap()]);
        assert_eq!(j[0].slot_count() + j[1].slot_count(), 100);
        assert_eq!(
            to_ranges(&[1, 2, 3, 7, 9, 10]),
            vec![
                SlotRange::new(1, 3).unwrap(),
                SlotRange::one(7),
                SlotRange::new(9, 10).unwrap()
            ]
        );
    }

    #[test]
    fn rebalance_within_the_threshold_moves_nothing() {
        let s = [p("a", 0, 5460), p("b", 5461, 10922), p("c", 10923, 16383)];
        let plan = rebalance(&s, REBALANCE_THRESHOLD_PCT, false).unwrap();
        assert!(!plan.needed);
        assert!(plan.steps.is_empty());
        assert_eq!(plan.nodes, 3);
        assert_eq!(plan.total_weight, 3.0);
    }

    #[test]
    fn rebalance_fills_an_empty_primary_only_when_asked() {
        let s = [
            p("a", 0, 5460),
            p("b", 5461, 10922),
            p("c", 10923, 16383),
            Primary::new("d", vec![]),
        ];
        let plan = rebalance(&s, REBALANCE_THRESHOLD_PCT, false).unwrap();
        assert!(
            !plan.needed,
            "an empty primary does not count without use_empty"
        );
        let plan = rebalance(&s, REBALANCE_THRESHOLD_PCT, true).unwrap();
        assert!(plan.needed);
        assert_eq!(plan.nodes, 4);
        let to_d: usize = plan
            .steps
            .iter()
            .filter(|st| st.to == "d")
            .map(|st| st.slots.len())
            .sum();
        assert_eq!(to_d, 4096);
        assert!(plan.steps.iter().all(|st| st.to == "d"));
        // After the plan every primary owns its share.
        let mut owned = [5461usize, 5462, 5461, 0];
        for st in &plan.steps {
            let i = ["a", "b", "c"].iter().position(|x| *x == st.from).unwrap();
            owned[i] -= st.slots.len();
            owned[3] += st.slots.len();
        }
        assert_eq!(owned, [4096, 4096, 4096, 4096]);
    }

    #[test]
    fn rebalance_follows_the_weights_and_moves_each_slot_once() {
        // Two primaries, one weighted 3: 12288 and 4096.
        let mut s = [p("a", 0, 8191), p("b", 8192, 16383)];
        s[0].weight = 3.0;
        let plan = rebalance(&s, REBALANCE_THRESHOLD_PCT, false).unwrap();
        assert!(plan.needed);
        assert_eq!(plan.steps.len(), 1);
        let st = &plan.steps[0];
        assert_eq!((st.from.as_str(), st.to.as_str()), ("b", "a"));
        assert_eq!(st.slots.len(), 4096);
        assert_eq!(st.slots, (8192..8192 + 4096).collect::<Vec<u16>>());
        // A zero threshold turns the check off, as in redis-cli: nothing is needed.
        assert!(!rebalance(&s, 0.0, false).unwrap().needed);
        let mut none = [p("a", 0, 16383)];
        none[0].weight = 0.0;
        assert!(rebalance(&none, 2.0, false).is_err());
    }

    #[test]
    fn rebalance_of_uneven_primaries_ends_balanced() {
        // a has most of the slots; b and c few.
        let s = [p("a", 0, 12000), p("b", 12001, 14000), p("c", 14001, 16383)];
        let plan = rebalance(&s, REBALANCE_THRESHOLD_PCT, false).unwrap();
        assert!(plan.needed);
        let mut owned: std::collections::BTreeMap<&str, Vec<u16>> =
            s.iter().map(|x| (x.id.as_str(), x.slots.clone())).collect();
        for st in &plan.steps {
            for sl in &st.slots {
                let from = owned.get_mut(st.from.as_str()).unwrap();
                let at = from
                    .iter()
                    .position(|x| x == sl)
                    .expect("moved from its owner");
                from.remove(at);
                owned.get_mut(st.to.as_str()).unwrap().push(*sl);
            }
        }
        let counts: Vec<usize> = owned.values().map(|v| v.len()).collect();
        assert_eq!(counts.iter().sum::<usize>(), SLOTS);
        // 16384 / 3 = 5461.33: shares of 5461, and one primary takes the slot left over.
        assert!(
            counts.iter().all(|&c| (5461..=5462).contains(&c)),
            "{counts:?}"
        );
    }
}

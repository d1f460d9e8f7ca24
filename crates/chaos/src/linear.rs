//! Linearizability of one register (SET/GET on a single key): the Wing–Gong search with Lowe's
//! memoisation (a set of (linearized ops, register value) already explored), over the call and
//! return events of the history in time order. An op whose outcome is unknown gets a return at
//! infinity: it may take effect at any point after its call, or never (linearized last, it is
//! seen by nothing). The search is bounded by a step budget; running out gives `Undetermined`,
//! never a guess.

use std::collections::{HashMap, HashSet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegOp {
    Write(String),
    /// `None`: the read found no value.
    Read(Option<String>),
}

#[derive(Clone, Debug)]
pub struct TimedOp {
    pub op: RegOp,
    pub invoke_us: u64,
    /// `None`: unknown outcome (a write whose reply never came or was not an acknowledgement).
    pub complete_us: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order exists; the op index the search could not get past is a hint for the reader.
    NotLinearizable {
        stuck_at_us: u64,
    },
    Undetermined {
        steps: u64,
    },
}

const NIL: u32 = 0;
const END: usize = usize::MAX;

struct Event {
    op: usize,
    is_call: bool,
}

/// Checks one register history starting from "no value". `steps_max` bounds the search.
pub fn check_register(ops: &[TimedOp], steps_max: u64) -> Verdict {
    // Values as small ids so the memo holds integers; 0 is "no value".
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut val = |v: Option<&str>| -> u32 {
        match v {
            None => NIL,
            Some(s) => {
                let next = ids.len() as u32 + 1;
                *ids.entry(s.to_string()).or_insert(next)
            }
        }
    };
    // (is_write, value id)
    let coded: Vec<(bool, u32)> = ops
        .iter()
        .map(|o| match &o.op {
            RegOp::Write(v) => (true, val(Some(v.as_str()))),
            RegOp::Read(v) => (false, val(v.as_deref())),
        })
        .collect();

    // Events in time order; at equal times calls go first (the ops then overlap: the more
    // permissive reading, so equal timestamps never manufacture a violation).
    let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, o) in ops.iter().enumerate() {
        order.push((o.invoke_us, 0, i));
        order.push((o.complete_us.unwrap_or(u64::MAX), 1, i));
    }
    order.sort();
    let events: Vec<Event> = order
        .iter()
        .map(|&(_, kind, op)| Event {
            op,
            is_call: kind == 0,
        })
        .collect();
    let n = events.len();
    let mut ret_of = vec![0usize; ops.len()];
    for (i, e) in events.iter().enumerate() {
        if !e.is_call {
            ret_of[e.op] = i;
        }
    }
    // A doubly linked list over the events; index n is the head sentinel.
    let mut next: Vec<usize> = (1..=n).map(|i| if i == n { END } else { i }).collect();
    next.push(if n == 0 { END } else { 0 });
    let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { n } else { i - 1 }).collect();
    prev.push(END);
    let head = n;

    fn unlink(next: &mut [usize], prev: &mut [usize], i: usize) {
        let (p, nx) = (prev[i], next[i]);
        next[p] = nx;
        if nx != END {
            prev[nx] = p;
        }
    }
    fn relink(next: &mut [usize], prev: &mut [usize], i: usize) {
        let (p, nx) = (prev[i], next[i]);
        next[p] = i;
        if nx != END {
            prev[nx] = i;
        }
    }

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state = NIL;
    let mut stack: Vec<(usize, u32)> = Vec::new();
    let mut memo: HashSet<(Vec<u64>, u32)> = HashSet::new();
    let mut entry = next[head];
    let mut steps = 0u64;
    // (depth, completion time) of the return that stopped the deepest attempt.
    let mut deepest = (0usize, 0u64);
    while entry != END {
        steps += 1;
        if steps > steps_max {
            return Verdict::Undetermined { steps };
        }
        let e = &events[entry];
        if e.is_call {
            let (is_write, v) = coded[e.op];
            let ok = is_write || v == state;
            let new_state = if is_write { v } else { state };
            if ok {
                linearized[e.op / 64] |= 1 << (e.op % 64);
                if memo.insert((linearized.clone(), new_state)) {
                    stack.push((entry, state));
                    state = new_state;
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, ret_of[e.op]);
                    entry = next[head];
                    continue;
                }
                linearized[e.op / 64] &= !(1 << (e.op % 64));
            }
            entry = next[entry];
        } else {
            // A return reached before its call was linearized: undo the last choice.
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), ops[e.op].complete_us.unwrap_or(u64::MAX));
            }
            let Some((call, old_state)) = stack.pop() else {
                return Verdict::NotLinearizable {
                    stuck_at_us: deepest.1,
                };
            };
            let op = events[call].op;
            state = old_state;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, ret_of[op]);
            relink(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: &str, inv: u64, comp: Option<u64>) -> TimedOp {
        TimedOp {
            op: RegOp::Write(v.into()),
            invoke_us: inv,
            complete_us: comp,
        }
    }
    fn r(v: Option<&str>, inv: u64, comp: u64) -> TimedOp {
        TimedOp {
            op: RegOp::Read(v.map(String::from)),
            invoke_us: inv,
            complete_us: Some(comp),
        }
    }
    const BUDGET: u64 = 1_000_000;

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            r(None, 0, 1),
            w("a", 2, Some(3)),
            r(Some("a"), 4, 5),
            w("b", 6, Some(7)),
            r(Some("b"), 8, 9),
        ];
        assert_eq!(check_register(&h, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_writes_may_take_effect_in_either_order() {
        // W(a) and W(b) overlap; a read overlapping both sees a, a later one sees b: only the
        // order b, a, read(a), ... fails, but a, read(a), b, read(b) works.
        let h = [
            w("a", 0, Some(10)),
            w("b", 5, Some(15)),
            r(Some("a"), 12, 20),
            r(Some("b"), 21, 25),
        ];
        assert_eq!(check_register(&h, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_is_caught() {
        let h = [w("a", 0, Some(1)), w("b", 2, Some(3)), r(Some("a"), 4, 5)];
        assert!(matches!(
            check_register(&h, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn lost_acknowledged_write_is_caught() {
        // An acknowledged write, then a read that finds nothing (the write was lost).
        let h = [w("a", 0, Some(1)), r(None, 2, 3)];
        assert!(matches!(
            check_register(&h, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn read_of_a_value_never_written_is_caught() {
        let h = [w("a", 0, Some(1)), r(Some("zz"), 2, 3)];
        assert!(matches!(
            check_register(&h, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn unknown_write_may_or_may_not_take_effect() {
        let took = [w("a", 0, None), r(Some("a"), 5, 6)];
        assert_eq!(check_register(&took, BUDGET), Verdict::Linearizable);
        let did_not = [w("a", 0, None), r(None, 5, 6)];
        assert_eq!(check_register(&did_not, BUDGET), Verdict::Linearizable);
        // But once seen, it cannot be unseen.
        let flicker = [w("a", 0, None), r(Some("a"), 5, 6), r(None, 7, 8)];
        assert!(matches!(
            check_register(&flicker, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn search_is_bounded() {
        // Many overlapping writes and a read of a value never written: the search explores
        // many orders; with a tiny budget it must stop and say so.
        let mut h: Vec<TimedOp> = (0..12).map(|i| w(&i.to_string(), 0, Some(100))).collect();
        h.push(r(Some("x"), 200, 201));
        assert!(matches!(
            check_register(&h, 50),
            Verdict::Undetermined { .. }
        ));
        assert!(matches!(
            check_register(&h, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check_register(&[], BUDGET), Verdict::Linearizable);
    }
}

//! Property tests of the merge rules: random histories of writes on two or three members, with
//! effects delivered in random orders and duplicated, must end in equal states; checked against a
//! sequential model where every effect reaches every member at once, and for the invariants the
//! rules promise (no lost increment, no resurrected delete).

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap as Map, BTreeSet};

/// A write a client makes on one member.
#[derive(Clone, Debug)]
enum Op {
    Set(u8),
    Del,
    Incr(i8),
    IncrF(i8),
    Expire(Option<u8>),
    SAdd(u8),
    SRem(u8),
    /// A whole collection written (a STORE): a reset to an empty set, then its members.
    SStore(Vec<u8>),
    HSet(u8, u8),
    HDel(u8),
    HIncr(u8, i8),
    ZAdd(u8, i8),
    ZRem(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4).prop_map(Op::Set),
        Just(Op::Del),
        any::<i8>().prop_map(Op::Incr),
        any::<i8>().prop_map(Op::IncrF),
        proptest::option::of(0u8..4).prop_map(Op::Expire),
        (0u8..5).prop_map(Op::SAdd),
        (0u8..5).prop_map(Op::SRem),
        proptest::collection::vec(0u8..5, 0..3).prop_map(Op::SStore),
        (0u8..4, 0u8..3).prop_map(|(f, v)| Op::HSet(f, v)),
        (0u8..4).prop_map(Op::HDel),
        (0u8..4, any::<i8>()).prop_map(|(f, n)| Op::HIncr(f, n)),
        (0u8..5, any::<i8>()).prop_map(|(m, s)| Op::ZAdd(m, s)),
        (0u8..5).prop_map(Op::ZRem),
    ]
}

/// Which key an op writes: one key per type, as a client would (no WRONGTYPE writes).
fn key_of(op: &Op) -> usize {
    match op {
        Op::Set(_) | Op::Incr(_) | Op::IncrF(_) | Op::Expire(_) => 0,
        Op::Del => 0,
        Op::SAdd(_) | Op::SRem(_) | Op::SStore(_) => 1,
        Op::HSet(..) | Op::HDel(_) | Op::HIncr(..) => 2,
        Op::ZAdd(..) | Op::ZRem(_) => 3,
    }
}

/// The effects of `op` made on `state` by member `node` at `at`.
fn effects(state: &KeyState, op: &Op, node: u64, at: Stamp) -> Vec<KeyState> {
    let m = |b: &u8| vec![b'm', *b];
    match op {
        Op::Set(v) => vec![KeyState::reset_effect(at, Base::Str(vec![b'0' + v]), None)],
        Op::Del => vec![KeyState::reset_effect(at, Base::Absent, None)],
        Op::Incr(n) => vec![state.incr_effect(at, node, By::Int(*n as i64))],
        Op::IncrF(n) => vec![state.incr_effect(at, node, By::Float(*n as f64 / 4.0))],
        // EXPIRE of a missing key writes nothing.
        Op::Expire(_) if state.view() == View::Absent => vec![],
        Op::Expire(t) => vec![KeyState::ttl_effect(at, t.map(|t| 1000 + t as u64))],
        Op::SAdd(x) => vec![state.elem_effect(at, &m(x), ElemVal::Member)],
        Op::SRem(x) => vec![state.elem_effect(at, &m(x), ElemVal::Gone)],
        Op::SStore(xs) => {
            let mut e = KeyState::reset_effect(at, Base::Typed(Kind::Set), None);
            let on_top = e.clone();
            for x in xs {
                e.merge(&on_top.elem_effect(at, &m(x), ElemVal::Member));
            }
            vec![e]
        }
        Op::HSet(f, v) => vec![state.elem_effect(at, &m(f), ElemVal::Field(vec![b'0' + v]))],
        Op::HDel(f) => vec![state.elem_effect(at, &m(f), ElemVal::Gone)],
        Op::HIncr(f, n) => vec![state.field_incr_effect(at, node, &m(f), By::Int(*n as i64))],
        Op::ZAdd(x, s) => vec![state.elem_effect(at, &m(x), ElemVal::Score((*s as f64).to_bits()))],
        Op::ZRem(x) => vec![state.elem_effect(at, &m(x), ElemVal::Gone)],
    }
}

/// A step of a history: member `node` writes `op`, or member `node` receives effect `pick` (an
/// index into those made so far, modulo their number).
#[derive(Clone, Debug)]
enum Step {
    Write { node: usize, op: Op, tick: u8 },
    Deliver { node: usize, pick: usize },
}

fn step(nodes: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..nodes, op(), 0u8..3).prop_map(|(node, op, tick)| Step::Write { node, op, tick }),
        2 => (0..nodes, any::<usize>()).prop_map(|(node, pick)| Step::Deliver { node, pick }),
    ]
}

struct Member {
    id: u64,
    clock: u64,
    keys: Vec<KeyState>,
}

/// Runs a history; returns the members and every effect made, per key.
fn run(nodes: usize, steps: &[Step]) -> (Vec<Member>, Vec<(usize, KeyState)>) {
    let mut ms: Vec<Member> = (0..nodes)
        .map(|i| Member {
            // Node ids in an order unrelated to the members' indexes.
            id: (i as u64 * 7919) % 13 + 1,
            clock: 0,
            keys: vec![KeyState::new(); 4],
        })
        .collect();
    let mut made: Vec<(usize, KeyState)> = Vec::new();
    for s in steps {
        match s {
            Step::Write { node, op, tick } => {
                let m = &mut ms[*node];
                let k = key_of(op);
                // The HLC: past everything this member has seen; the wall clock moves by `tick`.
                m.clock = (m.clock + *tick as u64).max(m.keys[k].top.hlc + 1);
                m.clock = m.keys.iter().map(|s| s.top.hlc + 1).fold(m.clock, u64::max);
                let at = Stamp::new(m.clock, m.id);
                for e in effects(&m.keys[k], op, m.id, at) {
                    m.keys[k].merge(&e);
                    made.push((k, e));
                }
            }
            Step::Deliver { node, pick } => {
                if !made.is_empty() {
                    let (k, e) = &made[pick % made.len()];
                    ms[*node].keys[*k].merge(e);
                }
            }
        }
    }
    (ms, made)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Whatever was delivered during the history, delivering every effect to every member in a
    /// random order, some twice, leaves all members with equal states, views and wire forms.
    #[test]
    fn members_converge_whatever_the_order(
        nodes in 2usize..=3,
        steps in proptest::collection::vec(step(3), 0..60),
        orders in proptest::collection::vec(proptest::collection::vec(any::<usize>(), 0..200), 3),
    ) {
        let steps: Vec<Step> = steps.into_iter().map(|s| match s {
            Step::Write { node, op, tick } => Step::Write { node: node % nodes, op, tick },
            Step::Deliver { node, pick } => Step::Deliver { node: node % nodes, pick },
        }).collect();
        let (mut ms, made) = run(nodes, &steps);
        for (i, m) in ms.iter_mut().enumerate() {
            // Random picks (duplicates included), then everything in reverse order.
            for p in &orders[i] {
                if !made.is_empty() {
                    let (k, e) = &made[p % made.len()];
                    m.keys[*k].merge(e);
                }
            }
            for (k, e) in made.iter().rev() {
                m.keys[*k].merge(e);
            }
        }
        for k in 0..4 {
            for m in &ms[1..] {
                prop_assert_eq!(&m.keys[k], &ms[0].keys[k]);
                prop_assert_eq!(m.keys[k].view(), ms[0].keys[k].view());
                let (mut a, mut b) = (Vec::new(), Vec::new());
                m.keys[k].encode(&mut a);
                ms[0].keys[k].encode(&mut b);
                prop_assert_eq!(a, b);
            }
            // The wire form reads back to the same state.
            let mut w = Vec::new();
            ms[0].keys[k].encode(&mut w);
            prop_assert_eq!(KeyState::decode(&w), Some(ms[0].keys[k].clone()));
        }
    }

    /// The merge is a join: commutative, associative, idempotent, on states of members taken
    /// mid-history.
    #[test]
    fn merge_is_a_join(steps in proptest::collection::vec(step(3), 0..50)) {
        let (ms, _) = run(3, &steps);
        for k in 0..4 {
            let (a, b, c) = (&ms[0].keys[k], &ms[1].keys[k], &ms[2].keys[k]);
            let join = |x: &KeyState, y: &KeyState| { let mut z = x.clone(); z.merge(y); z };
            prop_assert_eq!(join(a, b), join(b, a));
            prop_assert_eq!(join(&join(a, b), c), join(a, &join(b, c)));
            prop_assert_eq!(join(a, a), a.clone());
        }
    }

    /// Concurrent increments on every member, no other writes: the counter is their sum.
    #[test]
    fn no_increment_is_lost(
        incs in proptest::collection::vec((0usize..3, any::<i8>(), 0u8..3), 1..60),
    ) {
        let steps: Vec<Step> = incs.iter()
            .map(|(node, n, tick)| Step::Write { node: *node, op: Op::Incr(*n), tick: *tick })
            .collect();
        let (mut ms, made) = run(3, &steps);
        for m in ms.iter_mut() {
            for (k, e) in &made {
                m.keys[*k].merge(e);
            }
        }
        let sum: i64 = incs.iter().map(|(_, n, _)| *n as i64).sum();
        for m in &ms {
            prop_assert_eq!(m.keys[0].view(), View::Str(sum.to_string().into_bytes()));
        }
    }

    /// A deletion newer than every other write of its key leaves it absent on every member, even
    /// when older writes reach members after it (no resurrection).
    #[test]
    fn a_delete_is_never_undone_by_older_writes(
        steps in proptest::collection::vec(step(3), 0..50),
        key in 0usize..4,
    ) {
        let (mut ms, mut made) = run(3, &steps);
        let top = made.iter().filter(|(k, _)| *k == key).map(|(_, e)| e.top).max().unwrap_or_default();
        let del = KeyState::reset_effect(Stamp::new(top.hlc + 1, 99), Base::Absent, None);
        // The delete first, then everything else, on every member.
        made.insert(0, (key, del));
        for m in ms.iter_mut() {
            for (k, e) in &made {
                m.keys[*k].merge(e);
            }
            prop_assert_eq!(m.keys[key].view(), View::Absent);
            prop_assert!(m.keys[key].is_tombstone());
        }
    }

    /// With every effect delivered to every member at once, the value is what Redis would hold
    /// after the same writes in the same order.
    #[test]
    fn with_instant_delivery_it_is_redis(
        ops in proptest::collection::vec((0usize..3, op()), 0..60),
    ) {
        let mut ms: Vec<Member> = (0..3).map(|i| Member { id: i + 1, clock: 0, keys: vec![KeyState::new(); 4] }).collect();
        let mut model = Model::default();
        let mut clock = 0;
        for (node, op) in &ops {
            let k = key_of(op);
            clock += 1;
            let at = Stamp::new(clock, ms[*node].id);
            let effs = effects(&ms[*node].keys[k], op, ms[*node].id, at);
            for m in ms.iter_mut() {
                for e in &effs {
                    m.keys[k].merge(e);
                }
            }
            model.apply(op);
        }
        for m in &ms {
            prop_assert_eq!(norm(m.keys[0].view()), model.string());
            prop_assert_eq!(norm(m.keys[1].view()), model.set());
            prop_assert_eq!(norm(m.keys[2].view()), model.hash());
            prop_assert_eq!(norm(m.keys[3].view()), model.zset());
            prop_assert_eq!(m.keys[0].deadline(), model.ttl);
        }
    }
}

/// Redis's behaviour for the ops above (floats as f64: their sums here are exact).
#[derive(Default)]
struct Model {
    s: Option<f64>,
    s_text: Option<String>,
    ttl: Option<u64>,
    set: BTreeSet<Vec<u8>>,
    hash: Map<Vec<u8>, i64>,
    zset: Map<Vec<u8>, f64>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        let m = |b: &u8| vec![b'm', *b];
        match op {
            Op::Set(v) => {
                self.s = Some(*v as f64);
                self.s_text = None;
                self.ttl = None;
            }
            Op::Del => {
                self.s = None;
                self.ttl = None;
            }
            Op::Incr(n) => self.s = Some(self.s.unwrap_or(0.0) + *n as f64),
            Op::IncrF(n) => {
                self.s = Some(self.s.unwrap_or(0.0) + *n as f64 / 4.0);
                self.s_text = Some("float".into());
            }
            // An EXPIRE of a missing key does nothing in Redis; the model keeps that case out.
            Op::Expire(t) => {
                if self.s.is_some() {
                    self.ttl = t.map(|t| 1000 + t as u64);
                }
            }
            Op::SAdd(x) => {
                self.set.insert(m(x));
            }
            Op::SRem(x) => {
                self.set.remove(&m(x));
            }
            Op::SStore(xs) => self.set = xs.iter().map(m).collect(),
            Op::HSet(f, v) => {
                self.hash.insert(m(f), *v as i64);
            }
            Op::HDel(f) => {
                self.hash.remove(&m(f));
            }
            Op::HIncr(f, n) => *self.hash.entry(m(f)).or_insert(0) += *n as i64,
            Op::ZAdd(x, s) => {
                self.zset.insert(m(x), *s as f64);
            }
            Op::ZRem(x) => {
                self.zset.remove(&m(x));
            }
        }
    }
    fn string(&self) -> Vec<String> {
        self.s.map(float_text).into_iter().collect()
    }
    fn set(&self) -> Vec<String> {
        self.set
            .iter()
            .map(|m| String::from_utf8_lossy(m).into())
            .collect()
    }
    fn hash(&self) -> Vec<String> {
        self.hash
            .iter()
            .map(|(f, v)| format!("{}={v}", String::from_utf8_lossy(f)))
            .collect()
    }
    fn zset(&self) -> Vec<String> {
        self.zset
            .iter()
            .map(|(m, s)| format!("{}={s}", String::from_utf8_lossy(m)))
            .collect()
    }
}

/// A view as sorted text, comparable with the model.
fn norm(v: View) -> Vec<String> {
    let t = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out: Vec<String> = match v {
        View::Absent => vec![],
        View::Str(s) => vec![t(&s)],
        View::Blob(_) => vec!["blob".into()],
        View::Set(ms) => ms.iter().map(|m| t(m)).collect(),
        View::Hash(fs) => fs
            .iter()
            .map(|(f, v)| format!("{}={}", t(f), t(v)))
            .collect(),
        View::ZSet(ms) => ms.iter().map(|(m, s)| format!("{}={s}", t(m))).collect(),
    };
    out.sort();
    out
}

#[test]
fn a_set_resets_a_counter_and_later_increments_count() {
    let a = KeyState::new();
    let mut st = a.clone();
    let e1 = st.incr_effect(Stamp::new(1, 1), 1, By::Int(5));
    st.merge(&e1);
    let e2 = KeyState::reset_effect(Stamp::new(2, 2), Base::Str(b"10".to_vec()), None);
    st.merge(&e2);
    let e3 = st.incr_effect(Stamp::new(3, 1), 1, By::Int(2));
    st.merge(&e3);
    assert_eq!(st.view(), View::Str(b"12".to_vec()));
    // Another member gets them in reverse order.
    let mut other = KeyState::new();
    for e in [&e3, &e2, &e1] {
        other.merge(e);
    }
    assert_eq!(other, st);
}

/// A write as a member's keyspace makes it, for [`local_effect`]: the new value is computed from
/// what the member shows, the effect is the difference.
#[derive(Clone, Debug)]
enum KsOp {
    SAdd(u8),
    SRem(u8),
    HIncr(u8, i8),
    Incr(i8),
    Del,
}

fn ks_op() -> impl Strategy<Value = KsOp> {
    prop_oneof![
        3 => (0u8..6).prop_map(KsOp::SAdd),
        1 => (0u8..6).prop_map(KsOp::SRem),
        3 => (0u8..3, any::<i8>()).prop_map(|(f, n)| KsOp::HIncr(f, n)),
        3 => any::<i8>().prop_map(KsOp::Incr),
        1 => Just(KsOp::Del),
    ]
}

/// Key of a keyspace op: 0 a set, 1 a hash, 2 a counter.
fn ks_key(op: &KsOp, del_key: u8) -> usize {
    match op {
        KsOp::SAdd(_) | KsOp::SRem(_) => 0,
        KsOp::HIncr(..) => 1,
        KsOp::Incr(_) => 2,
        KsOp::Del => del_key as usize % 3,
    }
}

/// Increments a write notes: of a hash field, or of the string (`None`).
type Counts = Vec<(Option<Vec<u8>>, By)>;

/// What Redis holds after `op` on a key showing `v`, and the increments it notes.
fn redis_write(v: &View, op: &KsOp) -> (View, Counts) {
    let m = |b: &u8| vec![b'm', *b];
    match op {
        KsOp::SAdd(x) | KsOp::SRem(x) => {
            let mut s: BTreeSet<Vec<u8>> = match v {
                View::Set(ms) => ms.iter().cloned().collect(),
                _ => BTreeSet::new(),
            };
            if matches!(op, KsOp::SAdd(_)) {
                s.insert(m(x));
            } else {
                s.remove(&m(x));
            }
            let out = if s.is_empty() {
                View::Absent
            } else {
                View::Set(s.into_iter().collect())
            };
            (out, vec![])
        }
        KsOp::HIncr(f, n) => {
            let mut h: Map<Vec<u8>, Vec<u8>> = match v {
                View::Hash(fs) => fs.iter().cloned().collect(),
                _ => Map::new(),
            };
            let cur: i64 = h
                .get(&m(f))
                .map_or(0, |t| String::from_utf8_lossy(t).parse().unwrap());
            h.insert(m(f), (cur + *n as i64).to_string().into_bytes());
            (
                View::Hash(h.into_iter().collect()),
                vec![(Some(m(f)), By::Int(*n as i64))],
            )
        }
        KsOp::Incr(n) => {
            let cur: i64 = match v {
                View::Str(s) => String::from_utf8_lossy(s).parse().unwrap(),
                _ => 0,
            };
            (
                View::Str((cur + *n as i64).to_string().into_bytes()),
                vec![(None, By::Int(*n as i64))],
            )
        }
        KsOp::Del => (View::Absent, vec![]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Members writing through their keyspaces (effects as differences, `local_effect`), each
    /// receiving every other member's effects in the order they were made (as a stream delivers
    /// them) at random moments, converge once everything is delivered; without deletions and
    /// removals, nothing any member added or incremented is lost, even for keys two members
    /// created at once. With two members, a member always shows what it just wrote.
    #[test]
    fn keyspace_writes_converge_and_lose_nothing(
        nodes in 2usize..=3,
        steps in proptest::collection::vec((0usize..3, ks_op(), any::<u8>(), any::<bool>(), 0usize..3), 0..50),
    ) {
        let mut ms: Vec<Member> = (0..nodes)
            .map(|i| Member { id: i as u64 + 1, clock: 0, keys: vec![KeyState::new(); 3] })
            .collect();
        // Effects per origin, and how far each member has received each origin's.
        let mut made: Vec<Vec<(usize, KeyState)>> = vec![Vec::new(); nodes];
        let mut seen = vec![vec![0usize; nodes]; nodes];
        let mut added = BTreeSet::new();
        let (mut hsum, mut sum) = (Map::new(), 0i64);
        let mut lossy = false;
        for (node, op, del_key, deliver, from) in &steps {
            let (node, from) = (node % nodes, from % nodes);
            if *deliver && from != node && seen[node][from] < made[from].len() {
                let (k, e) = &made[from][seen[node][from]];
                ms[node].keys[*k].merge(e);
                seen[node][from] += 1;
            }
            let k = ks_key(op, *del_key);
            let m = &mut ms[node];
            m.clock = m.keys.iter().map(|s| s.top.hlc + 1).fold(m.clock + 1, u64::max);
            let at = Stamp::new(m.clock, m.id);
            let (now, counts) = redis_write(&m.keys[k].view(), op);
            let counts: Vec<(Option<&[u8]>, By)> =
                counts.iter().map(|(f, b)| (f.as_deref(), *b)).collect();
            if let Some(e) = local_effect(&m.keys[k], &now, None, at, m.id, &counts, 0) {
                m.keys[k].merge(&e);
                made[node].push((k, e));
                seen[node][node] += 1;
            }
            if nodes == 2 {
                prop_assert_eq!(m.keys[k].view(), now, "the member shows what it wrote");
            }
            match op {
                KsOp::SAdd(x) => { added.insert(vec![b'm', *x]); }
                KsOp::HIncr(f, n) => *hsum.entry(vec![b'm', *f]).or_insert(0i64) += *n as i64,
                KsOp::Incr(n) => sum += *n as i64,
                KsOp::SRem(_) | KsOp::Del => lossy = true,
            }
        }
        for m in ms.iter_mut() {
            for (k, e) in made.iter().flatten() {
                m.keys[*k].merge(e);
            }
        }
        for k in 0..3 {
            for m in &ms[1..] {
                prop_assert_eq!(&m.keys[k], &ms[0].keys[k]);
            }
        }
        if !lossy {
            let set = match ms[0].keys[0].view() { View::Set(s) => s, _ => vec![] };
            prop_assert_eq!(set.into_iter().collect::<BTreeSet<_>>(), added);
            let hash: Map<Vec<u8>, i64> = match ms[0].keys[1].view() {
                View::Hash(fs) => fs.into_iter().map(|(f, v)| (f, String::from_utf8_lossy(&v).parse().unwrap())).collect(),
                _ => Map::new(),
            };
            prop_assert_eq!(hash, hsum);
            let n = match ms[0].keys[2].view() { View::Str(s) => String::from_utf8_lossy(&s).parse().unwrap(), _ => 0i64 };
            prop_assert_eq!(n, sum);
        }
    }
}

// ---- The compact form: a state that is only a reset lives in its keyspace entry.

/// How a member keeps a key's state: in its entry (a plain reset), beside it, or not at all.
#[derive(Clone, Debug)]
enum Stored {
    Nothing,
    Entry(Compact, Base),
    Side(KeyState),
}

impl Stored {
    fn of(st: KeyState) -> Stored {
        if st == KeyState::new() {
            return Stored::Nothing;
        }
        match st.compact() {
            Some(c) => Stored::Entry(c, st.base),
            None => Stored::Side(st),
        }
    }

    fn load(&self) -> KeyState {
        match self {
            Stored::Nothing => KeyState::new(),
            Stored::Entry(c, base) => c.expand(base.clone()),
            Stored::Side(st) => st.clone(),
        }
    }
}

fn reset_only() -> impl Strategy<Value = KeyState> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..8),
        any::<bool>(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(hlc, node, v, blob, ttl)| {
            let base = if blob { Base::Blob(v) } else { Base::Str(v) };
            KeyState::reset_effect(Stamp::new(hlc, node), base, ttl)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// A plain reset goes to its compact form and back unchanged, and its wire form written
    /// straight from the entry is the state's.
    #[test]
    fn compact_then_expand_is_the_identity_for_resets(st in reset_only()) {
        let c = st.compact();
        prop_assert!(c.is_some());
        let c = c.unwrap();
        prop_assert_eq!(c.expand(st.base.clone()), st.clone());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        st.encode(&mut a);
        let (value, blob) = match &st.base {
            Base::Str(v) => (v.clone(), false),
            Base::Blob(v) => (v.clone(), true),
            _ => unreachable!(),
        };
        KeyState::encode_reset(&mut b, c.stamp, &value, blob, c.ttl_at);
        prop_assert_eq!(b.len(), KeyState::reset_wire_bytes(value.len()));
        prop_assert_eq!(a, b);
    }

    /// Members that keep plain resets in their entries (and only the rest beside them) hold the
    /// same states and show the same values as members that keep every state whole, over random
    /// histories of writes and deliveries; and every state that has a compact form is exactly
    /// its expansion.
    #[test]
    fn merging_through_the_compact_form_is_the_same(
        steps in proptest::collection::vec(step(3), 0..60),
    ) {
        let (full, made) = run(3, &steps);
        // The same history, each member keeping `Stored` forms.
        let mut clocks = [0u64; 3];
        let ids: Vec<u64> = (0..3).map(|i| (i as u64 * 7919) % 13 + 1).collect();
        let mut stored: Vec<Vec<Stored>> = vec![vec![Stored::Nothing; 4]; 3];
        let mut made2: Vec<(usize, KeyState)> = Vec::new();
        for s in &steps {
            match s {
                Step::Write { node, op, tick } => {
                    let k = key_of(op);
                    let mut st = stored[*node][k].load();
                    let tops = stored[*node].iter().map(|x| x.load().top.hlc + 1);
                    clocks[*node] = tops.fold(clocks[*node] + *tick as u64, u64::max);
                    let at = Stamp::new(clocks[*node], ids[*node]);
                    for e in effects(&st, op, ids[*node], at) {
                        st.merge(&e);
                        made2.push((k, e));
                    }
                    stored[*node][k] = Stored::of(st);
                }
                Step::Deliver { node, pick } => {
                    if !made2.is_empty() {
                        let (k, e) = &made2[pick % made2.len()];
                        let mut st = stored[*node][*k].load();
                        st.merge(e);
                        stored[*node][*k] = Stored::of(st);
                    }
                }
            }
        }
        prop_assert_eq!(made.len(), made2.len());
        for (m, s) in full.iter().zip(&stored) {
            for (k, stored) in s.iter().enumerate() {
                let st = stored.load();
                prop_assert_eq!(&st, &m.keys[k]);
                prop_assert_eq!(st.view(), m.keys[k].view());
                if let Some(c) = m.keys[k].compact() {
                    prop_assert_eq!(c.expand(m.keys[k].base.clone()), m.keys[k].clone());
                }
            }
        }
    }
}

/// A whole-value write made on top of a compact state whose value could not be read (the entry
/// was written over) is the same effect and state as one made on top of the real value.
#[test]
fn a_reset_over_an_unknown_value_is_the_same_reset() {
    let c = Compact {
        stamp: Stamp::new(10, 1),
        ttl_at: Some(5_000),
    };
    let at = Stamp::new(20, 2);
    for now in [
        View::Str(b"new".to_vec()),
        View::Str(Vec::new()),
        View::Absent,
        View::Blob(b"list".to_vec()),
    ] {
        let known = c.expand(Base::Str(b"old".to_vec()));
        let unknown = c.expand(unknown_base());
        let a = local_effect(&known, &now, None, at, 2, &[], 1_000);
        let b = local_effect(&unknown, &now, None, at, 2, &[], 1_000);
        assert_eq!(a, b, "{now:?}");
        let (mut x, mut y) = (known, unknown);
        x.merge(a.as_ref().unwrap());
        y.merge(b.as_ref().unwrap());
        assert_eq!(x, y);
    }
}

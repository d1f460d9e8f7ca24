//! Anti-entropy and read repair for active-active groups (issue 13), the part without I/O: the
//! internal commands a member asks its peers (`ACTIVESTATE`, `ACTIVESLOT`, `ACTIVEMERGE`), the
//! bounded queue of keys read while `read-repair` is on, the merge of a state fetched from a peer
//! ([`merge_fetched`]), and the counters INFO shows. The tasks that talk to the peers are in
//! `server/src/antientropy.rs`.
//!
//! Repair is always by merge: a merge state is a join, so merging a peer's state here, or ours
//! there, can only move both towards the same state, whatever the stream has already delivered.
//! A key is compared by its merge state, never by its value; keyspace values follow the states.
//!
//! Why pull *and* push: a peer lists the states of the keys its keyspace holds in a slot
//! (`ACTIVESLOT`), which misses its tombstones of keys we still hold; so we also ask for the
//! states of our own keys in the slot (`ACTIVESTATE`), and a state of ours that has something the
//! peer's lacks is merged there (`ACTIVEMERGE`). One side's pass then repairs both sides.
//!
//! A tombstone merged by repair carries no stream mark (it did not come by a stream), so it is
//! held until the key is written again: safe (no resurrection), at the cost of its memory.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

use shoal_keyspace::merge::KeyState;

use crate::args::{ERR_NOT_INTEGER, ERR_SYNTAX};
use crate::error::ReplyError;
use crate::state::ServerState;
use crate::table::{Group, Spec, flag};
use crate::{Args, CmdResult, Ctx};

/// Keys `ACTIVESLOT` returns per call at most; the rest follow from its cursor.
pub const SLOT_KEYS_PER_CALL: usize = 500;
/// Keys one `ACTIVESTATE` call asks for at most.
pub const STATE_KEYS_PER_CALL: usize = 500;
/// Keys longer than this are not queued for read repair (the queue's bytes stay bounded).
pub const READ_REPAIR_KEY_BYTES_MAX: usize = 1024;

/// A key in a database.
pub type DbKey = (usize, Box<[u8]>);

/// Counters for `INFO active`.
#[derive(Debug, Default)]
pub struct RepairStats {
    /// Anti-entropy passes run (one per peer per interval).
    pub ae_passes: AtomicU64,
    /// Slots whose digests were compared with a peer.
    pub ae_slots_compared: AtomicU64,
    /// Slots found differing.
    pub ae_slots_differing: AtomicU64,
    /// Differing slots in which a key was repaired (here or at the peer).
    pub ae_slots_repaired: AtomicU64,
    /// Keys whose state here changed by merging a peer's.
    pub ae_keys_repaired: AtomicU64,
    /// Keys whose state of ours was merged at a peer that lacked part of it.
    pub ae_keys_pushed: AtomicU64,
    /// Passes that failed (a peer unreachable or answering garbage).
    pub ae_errors: AtomicU64,
    /// Keys read and queued for a check.
    pub rr_queued: AtomicU64,
    /// Keys read but not queued: the queue was full.
    pub rr_dropped: AtomicU64,
    /// Keys compared with a peer (one per key and peer).
    pub rr_checks: AtomicU64,
    /// Keys whose state here changed by merging a peer's newer one.
    pub rr_repaired: AtomicU64,
    /// Keys whose newer state here was merged at a stale peer.
    pub rr_pushed: AtomicU64,
    /// Checks that failed (a peer unreachable or answering garbage).
    pub rr_errors: AtomicU64,
}

/// Keys repaired with one peer, either way (`INFO active`).
#[derive(Debug, Default, Clone, Copy)]
pub struct PeerRepairs {
    /// Keys whose state here changed by merging the peer's.
    pub here: u64,
    /// Keys whose state of ours was merged at the peer.
    pub there: u64,
}

#[derive(Debug, Default)]
struct ReadQueue {
    keys: VecDeque<DbKey>,
    /// The same keys, so a key read again while queued is queued once.
    queued: HashSet<DbKey>,
}

/// Read-repair queue, settings the hot path reads, and counters.
#[derive(Debug, Default)]
pub struct Repair {
    read_repair: AtomicBool,
    queue_max: AtomicUsize,
    queue: Mutex<ReadQueue>,
    pub stats: RepairStats,
    /// Per peer (`host:port`): keys repaired with it.
    pub peers: Mutex<BTreeMap<String, PeerRepairs>>,
}

impl Repair {
    /// `read-repair` and `read-repair-queue-keys-max` changed.
    pub fn configure(&self, cfg: &crate::config::Config) {
        self.read_repair.store(cfg.read_repair, Relaxed);
        self.queue_max
            .store(cfg.read_repair_queue_keys_max as usize, Relaxed);
        if !cfg.read_repair {
            let mut q = self.queue.lock().expect("read-repair queue lock");
            q.keys.clear();
            q.queued.clear();
        }
    }

    /// Up to `max` queued keys, oldest first.
    pub fn take(&self, max: usize) -> Vec<DbKey> {
        let mut q = self.queue.lock().expect("read-repair queue lock");
        let n = max.min(q.keys.len());
        let out: Vec<DbKey> = q.keys.drain(..n).collect();
        for k in &out {
            q.queued.remove(k);
        }
        out
    }

    /// Keys waiting for a check.
    pub fn queued(&self) -> usize {
        self.queue
            .lock()
            .expect("read-repair queue lock")
            .keys
            .len()
    }

    fn push(&self, k: DbKey) {
        let max = self.queue_max.load(Relaxed);
        let mut q = self.queue.lock().expect("read-repair queue lock");
        if q.queued.contains(&k) {
            return;
        }
        if q.keys.len() >= max {
            drop(q);
            self.stats.rr_dropped.fetch_add(1, Relaxed);
            return;
        }
        q.queued.insert(k.clone());
        q.keys.push_back(k);
        drop(q);
        self.stats.rr_queued.fetch_add(1, Relaxed);
    }

    /// Counts keys repaired with peer `addr`.
    pub fn note_peer(&self, addr: &str, here: u64, there: u64) {
        if here + there == 0 {
            return;
        }
        let mut p = self.peers.lock().expect("repair peers lock");
        let e = p.entry(addr.to_string()).or_default();
        e.here += here;
        e.there += there;
    }
}

/// After a command ran: a read's keys are queued for read repair (`read-repair yes` on an
/// active-active member). One relaxed load when it is off.
pub fn after_read(srv: &ServerState, db: usize, spec: &Spec, args: &Args<'_>) {
    if !srv.repair.read_repair.load(Relaxed) || !spec.has(flag::READONLY) || !srv.active.is_on() {
        return;
    }
    let Ok(keys) = crate::keyspec::keys(spec, args) else {
        return;
    };
    for k in keys.as_slice() {
        let key = args.get(k.pos);
        if key.len() <= READ_REPAIR_KEY_BYTES_MAX {
            srv.repair.push((db, key.into()));
        }
    }
}

/// What merging a peer's state of a key did.
#[derive(Debug, Default, PartialEq)]
pub struct Merged {
    /// The state here changed (the keyspace took the merged value).
    pub changed_here: bool,
    /// Our state, when it has something the peer's lacks: merge it there.
    pub push: Option<Vec<u8>>,
}

/// Merges `remote` (a peer's state of `key`, `None`: it has none) into this member's, and says
/// whether ours should go to the peer. Only a state that adds something is merged here (a
/// tombstone merged again would lose its collection mark).
pub fn merge_fetched(
    srv: &ServerState,
    db: usize,
    key: &[u8],
    remote: Option<&[u8]>,
    now_ms: u64,
) -> Result<Merged, String> {
    let ours_bytes = crate::active::state_of(srv, db, key, now_ms);
    let ours = match &ours_bytes {
        Some(b) => KeyState::decode(b).ok_or("malformed local merge state")?,
        None => KeyState::new(),
    };
    let theirs = match remote {
        Some(b) => Some(KeyState::decode(b).ok_or("malformed merge state from the peer")?),
        None => None,
    };
    let mut out = Merged::default();
    if let (Some(t), Some(bytes)) = (&theirs, remote) {
        let mut m = ours.clone();
        m.merge(t);
        if m != ours {
            crate::active::apply_remote(srv, db, key, bytes, None, now_ms)?;
            out.changed_here = true;
        }
    }
    out.push = match (theirs, ours_bytes) {
        // A tombstone the peer does not hold: it may have collected it already.
        (None, Some(b)) if !ours.is_tombstone() => Some(b),
        (Some(t), Some(b)) => {
            let mut m = t.clone();
            m.merge(&ours);
            (m != t).then_some(b)
        }
        _ => None,
    };
    Ok(out)
}

/// This member's live keys in `slot` of `db`, sorted (anti-entropy lists ours to ask the peer).
pub fn keys_in_slot(srv: &ServerState, db: usize, slot: u16, now_ms: u64) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    {
        let shard = srv.ks.lock(srv.ks.shard_of(slot));
        shard.for_each_in_slot(db, slot, now_ms, |e| keys.push(e.key().to_vec()));
    }
    keys.sort();
    keys
}

/// Anti-entropy and read-repair lines of `INFO active`.
pub fn info_lines(srv: &ServerState, t: &mut String) {
    use std::fmt::Write;
    let s = &srv.repair.stats;
    let l = |a: &AtomicU64| a.load(Relaxed);
    let _ = write!(
        t,
        "active_antientropy_passes:{}\r\nactive_antientropy_slots_compared:{}\r\nactive_antientropy_slots_differing:{}\r\nactive_antientropy_slots_repaired:{}\r\nactive_antientropy_keys_repaired:{}\r\nactive_antientropy_keys_pushed:{}\r\nactive_antientropy_errors:{}\r\nactive_read_repair_queued:{}\r\nactive_read_repair_queue_len:{}\r\nactive_read_repair_dropped:{}\r\nactive_read_repair_checks:{}\r\nactive_read_repair_repairs:{}\r\nactive_read_repair_pushes:{}\r\nactive_read_repair_errors:{}\r\n",
        l(&s.ae_passes),
        l(&s.ae_slots_compared),
        l(&s.ae_slots_differing),
        l(&s.ae_slots_repaired),
        l(&s.ae_keys_repaired),
        l(&s.ae_keys_pushed),
        l(&s.ae_errors),
        l(&s.rr_queued),
        srv.repair.queued(),
        l(&s.rr_dropped),
        l(&s.rr_checks),
        l(&s.rr_repaired),
        l(&s.rr_pushed),
        l(&s.rr_errors),
    );
    let peers = srv.repair.peers.lock().expect("repair peers lock");
    for (i, (addr, p)) in peers.iter().enumerate() {
        let _ = write!(
            t,
            "active_peer_repairs{i}:addr={addr},repaired_here={},repaired_there={}\r\n",
            p.here, p.there
        );
    }
}

const INTERNAL: u32 = flag::ADMIN | flag::STALE | flag::NOSCRIPT;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "activestate",
        arity: -3,
        flags: flag::READONLY | INTERNAL,
        group: Group::Shoal,
        since: "0.1.0",
        summary: "Reads the merge states of keys of an active-active member (anti-entropy, read repair).",
        handler: Some(activestate),
        ..Spec::DEFAULT
    },
    Spec {
        name: "activeslot",
        arity: -3,
        flags: flag::READONLY | INTERNAL,
        group: Group::Shoal,
        since: "0.1.0",
        summary: "Reads a page of the merge states of an active-active member's keys in a slot (anti-entropy).",
        handler: Some(activeslot),
        ..Spec::DEFAULT
    },
    Spec {
        name: "activemerge",
        arity: 4,
        flags: INTERNAL,
        group: Group::Shoal,
        since: "0.1.0",
        summary: "Merges a peer's merge state of a key into an active-active member (anti-entropy, read repair).",
        handler: Some(activemerge),
        ..Spec::DEFAULT
    },
];

fn require_active(ctx: &Ctx<'_>) -> Result<(), ReplyError> {
    if ctx.srv.active.is_on() {
        Ok(())
    } else {
        Err(ReplyError::err_static(
            "this node is not an active-active member",
        ))
    }
}

fn parse_db(ctx: &Ctx<'_>, b: &[u8]) -> Result<usize, ReplyError> {
    let db = std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .ok_or(ERR_NOT_INTEGER)?;
    if db >= ctx.srv.ks.databases() {
        return Err(ReplyError::err_static("DB index is out of range"));
    }
    Ok(db)
}

/// `ACTIVESTATE db key [key ...]` → one merge state per key (nil: none).
fn activestate(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    require_active(ctx)?;
    let db = parse_db(ctx, args.get(1))?;
    if args.len() - 2 > STATE_KEYS_PER_CALL {
        return Err(ReplyError::err_static("too many keys"));
    }
    ctx.out.array(args.len() - 2);
    for i in 2..args.len() {
        match crate::active::state_of(ctx.srv, db, args.get(i), ctx.now_ms) {
            Some(b) => ctx.out.bulk(&b),
            None => ctx.out.null(),
        }
    }
    Ok(())
}

/// `ACTIVESLOT db slot [cursor]` → `[next-cursor, [key, state, ...]]` for the live keys of `slot`
/// in `db`, in key order; an empty next cursor means the slot is done. A cursor is `k` and the
/// last key returned.
fn activeslot(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    require_active(ctx)?;
    let db = parse_db(ctx, args.get(1))?;
    let slot = match args.i64(2) {
        Ok(s) if (0..shoal_keyspace::SLOTS as i64).contains(&s) => s as u16,
        _ => return Err(ReplyError::err_static("Invalid or out of range slot")),
    };
    if args.len() > 4 {
        return Err(ERR_SYNTAX);
    }
    let after: Option<&[u8]> = match args.len() {
        4 => Some(args.get(3).strip_prefix(b"k").ok_or(ERR_SYNTAX)?),
        _ => None,
    };
    let keys = keys_in_slot(ctx.srv, db, slot, ctx.now_ms);
    let mut page: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut more = false;
    for k in keys
        .into_iter()
        .filter(|k| after.is_none_or(|a| k.as_slice() > a))
    {
        if page.len() == SLOT_KEYS_PER_CALL {
            more = true;
            break;
        }
        if let Some(st) = crate::active::state_of(ctx.srv, db, &k, ctx.now_ms) {
            page.push((k, st));
        }
    }
    let next = match (more, page.last()) {
        (true, Some((k, _))) => [b"k".as_slice(), k].concat(),
        _ => Vec::new(),
    };
    ctx.out.array(2);
    ctx.out.bulk(&next);
    ctx.out.array(page.len() * 2);
    for (k, st) in &page {
        ctx.out.bulk(k);
        ctx.out.bulk(st);
    }
    Ok(())
}

/// `ACTIVEMERGE db key state` → 1 if the state here changed, else 0. Not streamed on (as a
/// peer's effect is not): the member that sent it holds it already.
fn activemerge(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    require_active(ctx)?;
    let db = parse_db(ctx, args.get(1))?;
    let key = args.get(2);
    let m = merge_fetched(ctx.srv, db, key, Some(args.get(3)), ctx.now_ms)
        .map_err(|e| ReplyError::Err(e.into()))?;
    ctx.out.int(m.changed_here as i64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_keyspace::merge::{Base, Stamp};

    const NOW: u64 = 1_700_000_000_000;

    fn member() -> ServerState {
        let srv = ServerState::new(
            crate::config::Config::default(),
            NOW,
            7,
            crate::Hooks::default(),
        );
        crate::active::configure(&srv, "127.0.0.1:1", NOW);
        srv
    }

    fn set(hlc: u64, node: u64, v: &str) -> Vec<u8> {
        let st = KeyState::reset_effect(Stamp::new(hlc, node), Base::Str(v.into()), None);
        let mut b = Vec::new();
        st.encode(&mut b);
        b
    }

    fn value(srv: &ServerState, key: &[u8]) -> Option<Vec<u8>> {
        let st = crate::active::state_of(srv, 0, key, NOW)?;
        match KeyState::decode(&st)?.view() {
            shoal_keyspace::merge::View::Str(s) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn a_newer_state_is_merged_here_and_an_older_one_gets_ours() {
        let srv = member();
        let newer = set(NOW << 16, 9, "new");
        let m = merge_fetched(&srv, 0, b"k", Some(&newer), NOW).unwrap();
        assert_eq!(
            m,
            Merged {
                changed_here: true,
                push: None
            }
        );
        assert_eq!(value(&srv, b"k").as_deref(), Some(&b"new"[..]));
        // The same again changes nothing (a join is idempotent).
        let m = merge_fetched(&srv, 0, b"k", Some(&newer), NOW).unwrap();
        assert_eq!(m, Merged::default());
        // An older state: nothing here, ours goes there.
        let older = set((NOW - 5) << 16, 9, "old");
        let m = merge_fetched(&srv, 0, b"k", Some(&older), NOW).unwrap();
        assert!(!m.changed_here);
        assert!(m.push.is_some());
        assert_eq!(value(&srv, b"k").as_deref(), Some(&b"new"[..]));
        // A peer without the key gets ours; a key neither has is left alone.
        assert!(
            merge_fetched(&srv, 0, b"k", None, NOW)
                .unwrap()
                .push
                .is_some()
        );
        assert_eq!(
            merge_fetched(&srv, 0, b"other", None, NOW).unwrap(),
            Merged::default()
        );
        // Garbage from a peer is an error, not a merge.
        assert!(merge_fetched(&srv, 0, b"k", Some(b"junk"), NOW).is_err());
    }

    #[test]
    fn a_tombstone_is_not_pushed_to_a_peer_without_the_key() {
        let srv = member();
        let del = KeyState::reset_effect(Stamp::new(NOW << 16, 9), Base::Absent, None);
        let mut b = Vec::new();
        del.encode(&mut b);
        assert!(
            merge_fetched(&srv, 0, b"d", Some(&b), NOW)
                .unwrap()
                .changed_here
        );
        assert_eq!(
            merge_fetched(&srv, 0, b"d", None, NOW).unwrap(),
            Merged::default()
        );
    }

    #[test]
    fn the_read_queue_is_bounded_and_holds_a_key_once() {
        let srv = member();
        let cfg = crate::config::Config {
            read_repair: true,
            read_repair_queue_keys_max: 2,
            ..crate::config::Config::default()
        };
        srv.repair.configure(&cfg);
        let get = crate::table::lookup(b"get").unwrap();
        for k in ["a", "a", "b", "c", "d"] {
            let o = crate::OwnedArgs::new(["get", k].iter());
            after_read(&srv, 0, get, &o.args());
        }
        let s = &srv.repair.stats;
        assert_eq!(s.rr_queued.load(Relaxed), 2);
        assert_eq!(s.rr_dropped.load(Relaxed), 2);
        assert_eq!(srv.repair.take(10).len(), 2);
        assert_eq!(srv.repair.queued(), 0);
        // Writes are not queued; nothing is once read repair is off.
        let set = crate::table::lookup(b"set").unwrap();
        let o = crate::OwnedArgs::new(["set", "k", "v"].iter());
        after_read(&srv, 0, set, &o.args());
        assert_eq!(srv.repair.queued(), 0);
        srv.repair.configure(&crate::config::Config::default());
        let o = crate::OwnedArgs::new(["get", "k"].iter());
        after_read(&srv, 0, get, &o.args());
        assert_eq!(srv.repair.queued(), 0);
    }
}

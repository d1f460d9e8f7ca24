//! Active-active groups (DESIGN.md §4, issue 13): every member takes writes, keeps a merge state
//! per key beside its keyspace (`shoal_keyspace::merge`), and streams its own writes' effects to
//! its peers as `SHOALMERGE db key state` frames in its replication stream; a peer merges them into
//! its state and writes the merged value into its keyspace.
//!
//! - **Local writes.** After a command, each shard's queue of changes is drained as usual
//!   (`effects`), but on an active member each changed key is read back, compared with what its
//!   merge state shows, and the difference becomes the effect (`merge::local_effect`), stamped
//!   with the write's version and this node's number. Increments are noted by the INCR and HINCRBY
//!   families (`Pending::Count`) so they merge as counters. The effect is merged here and appended
//!   to the stream under the shard lock, so per key the stream holds effects in write order.
//! - **Peers' writes** ([`apply_remote`]) are merged under the key's shard lock, after that shard's
//!   own queued writes went out (a local write is in the state before a peer's lands on its key),
//!   and the merged value replaces the key's entry without being queued: a peer's write is never
//!   sent on, so nothing loops. The backlog holds only this member's own writes; each member
//!   pulls from every other (a full mesh).
//! - **A full resync** (a peer's position left our backlog, or it restarted) skips the keyspace
//!   snapshot and fetches the merge states shard by shard ([`dump_shard`], the `ACTIVESYNC`
//!   command): merging is idempotent, so states read after the stream's offset and the stream
//!   from that offset may overlap freely.
//!
//! Lock order: a keyspace shard, then its merge store (only ever locked under the shard's lock),
//! then the backlog.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use shoal_keyspace::delta::Pending;
use shoal_keyspace::merge::{self, Base, By, Compact, KeyState, Stamp, View};
use shoal_keyspace::prior::{self, Prior};
use shoal_keyspace::types::{hash::Hash, set::Set, zset::ZSet};
use shoal_keyspace::{
    EncodingLimits, Entry, Object, Payload, ShardGuard, ValueRef, codec, key_slot,
};
use shoal_replication::stream;

use crate::state::ServerState;

/// Keys of one shard's merge store `ACTIVESYNC` returns per call at most; the rest follow
/// from the cursor it returns.
pub const SYNC_KEYS_PER_CALL: usize = 1_000;

/// The stream frame of an effect.
pub const MERGE_FRAME: &[u8] = b"SHOALMERGE";

/// One peer link as INFO shows it.
#[derive(Debug, Clone, Default)]
pub struct PeerStatus {
    /// `connecting`, `sync` (full resync running), `connected`, `down`.
    pub state: &'static str,
    /// The peer's replication id and our position in its stream.
    pub replid: String,
    pub offset: u64,
    /// Milliseconds between the newest effect's version and its arrival (replication lag).
    pub lag_ms: u64,
    pub last_io_ms: u64,
    pub full_syncs: u64,
    pub partial_syncs: u64,
    pub effects: u64,
    pub last_error: String,
}

/// Counters for INFO.
#[derive(Debug, Default)]
pub struct ActiveStats {
    /// Effects of local writes streamed.
    pub local_effects: AtomicU64,
    /// Peers' effects merged.
    pub merges: AtomicU64,
    /// Keys whose keyspace value was rewritten to the merged one after a local write (a float
    /// counter's text, a write that lost to a newer one already merged).
    pub repairs: AtomicU64,
    /// Merge states sent for peers' full resyncs.
    pub states_sent: AtomicU64,
    /// Tombstones collected (every member had merged them).
    pub tombstones_collected: AtomicU64,
}

type Key = (usize, Box<[u8]>);

/// The merge stores' hasher: looked up several times per write, so a fast one, seeded per
/// process (as the keyspace's is).
type Hasher = foldhash::fast::RandomState;

/// One shard's merge states, and where each deleted key's tombstone came from.
#[derive(Debug, Default)]
pub struct Store {
    states: HashMap<Key, KeyState, Hasher>,
    /// For a key whose state shows nothing (a tombstone): the stream (id) and the offset in it
    /// after its newest effect. It is collected once every other member reported merging that
    /// stream past that offset (`SHOALSEEN`): from then on every effect a member makes is made on
    /// top of the deletion, and those it made before have all reached this member.
    marks: HashMap<Key, Mark, Hasher>,
    /// Keys seeded from the keyspace (joining a group, or a snapshot loaded at start-up): their
    /// states may be this member's old view of keys its peers moved past (a reset made of it
    /// would drop their newer increments). A peer's state for such a key replaces the seed; a
    /// local write first sends the seed as is; once every peer's states were merged, the seeds
    /// left (keys no peer had) are sent ([`promote_provisional`]).
    provisional: std::collections::HashSet<Key, Hasher>,
}

/// A place in a member's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub stream: u64,
    pub offset: u64,
}

impl Store {
    /// Notes where the state of `k` was last changed, if it is now a tombstone.
    fn note(&mut self, k: &Key, mark: Option<Mark>) {
        match (self.states.get(k).map(KeyState::is_tombstone), mark) {
            (Some(true), Some(m)) => {
                self.marks.insert(k.clone(), m);
            }
            _ => {
                self.marks.remove(k);
            }
        }
    }
}

/// A stream's id in marks: from its replication id.
pub fn stream_id(replid: &str) -> u64 {
    merge::node_number(replid)
}

/// A member's active-active state.
#[derive(Debug)]
pub struct Active {
    on: AtomicBool,
    node: u64,
    /// Merge states per keyspace shard, locked only under that shard's lock; made on first use,
    /// so a node outside any group pays nothing for them (`shards` of them).
    stores: std::sync::OnceLock<Box<[Mutex<Store>]>>,
    shards: usize,
    /// What each peer reported merging (`SHOALSEEN` frames in its stream): by the peer's stream
    /// id, the offset it merged of each origin's stream.
    seen: Mutex<HashMap<u64, HashMap<u64, u64>>>,
    /// Per database, the newest flush merged (`SHOALFLUSH`): every key's state is reset to absent
    /// at it, so an effect made before it that arrives later is cut by it.
    floors: Mutex<Vec<Stamp>>,
    pub stats: ActiveStats,
    /// Peer links by `host:port`, kept by the link drivers.
    pub peers: Mutex<BTreeMap<String, PeerStatus>>,
}

impl Active {
    pub fn new(node_id: &str, shards: usize) -> Self {
        Active {
            on: AtomicBool::new(false),
            node: merge::node_number(node_id),
            stores: std::sync::OnceLock::new(),
            shards,
            seen: Mutex::default(),
            floors: Mutex::default(),
            stats: ActiveStats::default(),
            peers: Mutex::default(),
        }
    }

    /// Whether this node is a member of an active-active group (`active-peers` set).
    pub fn is_on(&self) -> bool {
        self.on.load(Relaxed)
    }

    /// This node's number in stamps.
    pub fn node(&self) -> u64 {
        self.node
    }

    fn store(&self, i: usize) -> std::sync::MutexGuard<'_, Store> {
        self.stores()[i].lock().expect("merge store lock")
    }

    fn stores(&self) -> &[Mutex<Store>] {
        self.stores
            .get_or_init(|| (0..self.shards).map(|_| Mutex::default()).collect())
    }

    /// The newest flush of database `db` merged here (`Stamp::ZERO`: none).
    pub fn floor(&self, db: usize) -> Stamp {
        self.floors
            .lock()
            .expect("floors lock")
            .get(db)
            .copied()
            .unwrap_or(Stamp::ZERO)
    }

    fn raise_floor(&self, db: usize, at: Stamp) {
        let mut f = self.floors.lock().expect("floors lock");
        if f.len() <= db {
            f.resize(db + 1, Stamp::ZERO);
        }
        f[db] = f[db].max(at);
    }

    /// Keys with a merge state, and tombstones held (deleted keys, removed elements).
    pub fn counts(&self) -> (usize, usize) {
        let (mut keys, mut tombs) = (0, 0);
        for s in self.stores.get().map(|s| &s[..]).unwrap_or_default() {
            let s = s.lock().expect("merge store lock");
            keys += s.states.len();
            tombs += s.states.values().map(KeyState::tombstones).sum::<usize>();
        }
        (keys, tombs)
    }
}

/// `active-peers` changed: joins (seeding merge states from the keyspace) or leaves the group.
pub fn configure(srv: &ServerState, peers: &str, now_ms: u64) {
    let on = !peers.trim().is_empty();
    if on == srv.active.is_on() {
        return;
    }
    if on {
        // A member's writes go through their shards' queues, which it encodes itself.
        srv.repl.set_direct_effects(false);
        srv.active.on.store(true, Relaxed);
        srv.repl.start_recording(&srv.ks);
        srv.ks.set_keep_priors(true);
        seed(srv, now_ms);
    } else {
        srv.active.on.store(false, Relaxed);
        srv.ks.set_keep_priors(false);
        srv.repl.set_direct_effects(true);
        for s in srv.active.stores.get().map(|s| &s[..]).unwrap_or_default() {
            *s.lock().expect("merge store lock") = Store::default();
        }
    }
}

/// Gives every key in the keyspace without a merge state one (a reset at its version), so that
/// the writes that follow are merged against it: on joining a group, and after a snapshot was
/// loaded at start-up. Not streamed: peers get these states by a full resync. What the shards
/// had queued (the load's inserts) is dropped, not sent as writes. Seeds are provisional (see
/// [`Store::provisional`]) until [`promote_provisional`].
pub fn seed(srv: &ServerState, now_ms: u64) {
    if !srv.active.is_on() {
        return;
    }
    let node = srv.active.node;
    for i in 0..srv.ks.shard_count() {
        let mut shard = srv.ks.lock(i);
        let queued = shard.take_pending();
        shard.recycle_pending(queued);
        let mut store = srv.active.store(i);
        for db in 0..srv.ks.databases() {
            shard.for_each_entry(i, db, |_, e| {
                if e.is_expired(now_ms) {
                    return;
                }
                let k = (db, Box::<[u8]>::from(e.key()));
                if store.states.contains_key(&k) {
                    return;
                }
                let at = Stamp::new(e.version(), e.merge_node().unwrap_or(node));
                let st = KeyState::new();
                // A value on the disk tier is read back (waiting for the disk, as a snapshot
                // does); one the tier lost is left out, as its key will be.
                let view = match e.cold() {
                    Some(_) => match cold_view(srv, e) {
                        Some(v) => v,
                        None => return,
                    },
                    None => view_of(e),
                };
                if let Some(eff) =
                    merge::local_effect(&st, &view, e.expire_ms(), at, node, &[], now_ms)
                {
                    store.provisional.insert(k.clone());
                    store.states.insert(k, eff);
                }
            });
        }
    }
}

/// The view of an entry whose value is on the disk tier, read back blocking.
fn cold_view(srv: &ServerState, e: &Entry) -> Option<View> {
    let mut encoded = Vec::new();
    if !srv.ks.encode_entry_value(e, &mut encoded) {
        return None;
    }
    let payload = codec::decode_value(&encoded, &srv.encoding_limits())?;
    Some(view_of(&Entry::new(
        e.key(),
        payload,
        None,
        None,
        e.version(),
        0,
    )))
}

/// Sends the seeded states no peer replaced (keys only this member had) as writes, once every
/// peer's states have been merged here. Returns how many.
pub fn promote_provisional(srv: &ServerState) -> usize {
    let mut sent = 0;
    let mut appended = false;
    for i in 0..srv.ks.shard_count() {
        let _shard = srv.ks.lock(i);
        let mut store = srv.active.store(i);
        if store.provisional.is_empty() {
            continue;
        }
        let keys: Vec<Key> = store.provisional.drain().collect();
        let mut out = Vec::new();
        for k in &keys {
            if let Some(st) = store.states.get(k) {
                encode_merge(&mut out, k.0, &k.1, st);
                sent += 1;
                // A seed is its entry's state: a plain reset needs no copy of its own now.
                if st.compact().is_some() {
                    store.states.remove(k);
                }
            }
        }
        if !out.is_empty() {
            srv.repl.append_quiet(&out);
            appended = true;
        }
    }
    if appended {
        srv.repl.notify_appended();
    }
    sent
}

/// What a keyspace entry shows, as a merge view.
pub fn view_of(e: &Entry) -> View {
    match e.value() {
        ValueRef::Str(s) => View::Str(s.to_vec()),
        ValueRef::Obj(Object::RawString(s)) => View::Str(s.to_vec()),
        ValueRef::Obj(Object::Set(s)) => View::Set(s.iter().map(|m| m.to_vec()).collect()),
        ValueRef::Obj(Object::Hash(h)) if h.field_ttl_count() == 0 => {
            View::Hash(h.iter().map(|(f, v)| (f.to_vec(), v.to_vec())).collect())
        }
        ValueRef::Obj(Object::ZSet(z)) => {
            View::ZSet(z.iter().map(|(m, s)| (m.to_vec(), s)).collect())
        }
        v => {
            let mut b = Vec::new();
            codec::encode_value(v, &mut b);
            View::Blob(b)
        }
    }
}

/// The keyspace entry a merged state shows (`None`: absent, or a value that does not decode).
pub fn entry_of(key: &[u8], st: &KeyState, limits: &EncodingLimits, node: u64) -> Option<Entry> {
    let mut e = entry_of_view(key, st, limits)?;
    // A plain reset keeps no state but its entry: the entry names its writer if not us.
    if let Some(c) = st.compact()
        && c.stamp.node != node
    {
        e.set_merge_node(Some(c.stamp.node));
    }
    Some(e)
}

fn entry_of_view(key: &[u8], st: &KeyState, limits: &EncodingLimits) -> Option<Entry> {
    let ttl = st.deadline();
    let version = st.top.hlc;
    let object = |o: Object| Entry::new(key, Payload::Object(Box::new(o)), ttl, None, version, 0);
    Some(match st.view() {
        View::Absent => return None,
        View::Str(s) => Entry::new_string(key, &s, ttl, version),
        View::Blob(b) => {
            let payload = codec::decode_value(&b, limits)?;
            Entry::new(key, payload, ttl, None, version, 0)
        }
        View::Set(ms) => {
            let mut s = Set::new(limits);
            for m in &ms {
                s.insert(m, limits);
            }
            object(Object::Set(s))
        }
        View::Hash(fs) => {
            let mut h = Hash::new(limits);
            for (f, v) in &fs {
                h.insert(f, v, limits);
            }
            object(Object::Hash(h))
        }
        View::ZSet(ms) => {
            let mut z = ZSet::new(limits);
            for (m, s) in &ms {
                z.insert(m, *s, limits);
            }
            object(Object::ZSet(z))
        }
    })
}

/// Drains a locked shard's queue as an active member: the effects of the keys it names go into
/// their merge states and are appended to the backlog (without waking the links). Returns the
/// stream's end after them, if anything was appended.
pub fn append_local(srv: &ServerState, shard: &mut ShardGuard<'_>, now_ms: u64) -> Option<u64> {
    let priors = shard.take_priors();
    let items = shard.take_pending();
    if items.is_empty() {
        shard.recycle_pending(items);
        shard.recycle_priors(priors);
        return None;
    }
    let mut out = Vec::new();
    let deleted = encode_local(srv, shard, &items, &priors, &mut out, now_ms);
    shard.recycle_pending(items);
    shard.recycle_priors(priors);
    if out.is_empty() {
        return None;
    }
    let end = srv.repl.append_quiet(&out);
    if !deleted.is_empty() {
        // Our own deletions: collected once every peer merged our stream past them.
        let mark = Mark {
            stream: stream_id(&srv.repl.ids().replid),
            offset: end,
        };
        let mut store = srv.active.store(shard_index(srv, &deleted[0]));
        for k in &deleted {
            store.note(k, Some(mark));
        }
    }
    Some(end)
}

fn shard_index(srv: &ServerState, k: &Key) -> usize {
    srv.ks.shard_of(key_slot(&k.1))
}

/// A key in a database, borrowed.
type DbKey<'a> = (usize, &'a [u8]);

/// An increment a write noted: of a hash field, or of the string (`None`).
type Noted<'a> = (Option<&'a [u8]>, By);

/// One merge state of a dump: database, key, wire form.
pub type DumpedState = (usize, Vec<u8>, Vec<u8>);

/// The effects of a drained queue, one per key it names (in first-seen order). Returns the keys
/// it left as tombstones.
///
/// A key with a merge state of its own is diffed against it as always. A key without one (its
/// state is its entry, see `merge::Compact`) gets its previous state from its prior (what the
/// shard noted before the batch's first write, `shoal_keyspace::prior`): a plain whole-value write
/// of a string is then streamed straight from the entry, with no state built or kept (the common
/// case: SET). Everything else builds the previous state and diffs as above; the result is kept
/// as a merge state only if it is more than a plain reset.
fn encode_local(
    srv: &ServerState,
    shard: &mut ShardGuard<'_>,
    items: &[Pending],
    priors: &[Prior],
    out: &mut Vec<u8>,
    now_ms: u64,
) -> Vec<Key> {
    let mut deleted = Vec::new();
    let node = srv.active.node;
    let limits = srv.encoding_limits();
    // Keys in order, with the increments noted for each.
    let mut keys: Vec<(DbKey<'_>, Vec<Noted<'_>>)> = Vec::new();
    for p in items {
        let k = p.db_key();
        let i = match keys.iter().position(|(x, _)| *x == k) {
            Some(i) => i,
            None => {
                keys.push((k, Vec::new()));
                keys.len() - 1
            }
        };
        if let Pending::Count { field, by, .. } = p {
            keys[i].1.push((field.as_deref(), *by));
        }
    }
    for ((db, key), counts) in keys {
        let slot = key_slot(key);
        let idx = srv.ks.shard_of(slot);
        let (view, ttl, version, entry_node) = match shard.peek_any(db, slot, key) {
            Some(e) if !e.is_expired(now_ms) => {
                if let Some(s) = e.string() {
                    // The common case first: a string written whole over a key with no state.
                    let store = srv.active.store(idx);
                    let k: Key = (db, key.into());
                    let plain = (store.states.is_empty() || !store.states.contains_key(&k))
                        && (store.provisional.is_empty() || !store.provisional.contains(&k))
                        && prior::find(priors, db, key).is_none_or(|p| {
                            plain_reset(p, counts.is_empty())
                                && p.was.is_none_or(|w| version_after(e, w))
                        });
                    drop(store);
                    if plain {
                        let at = Stamp::new(e.version(), node);
                        encode_merge_reset(out, db, key, at, s, e.expire_ms());
                        srv.active.stats.local_effects.fetch_add(1, Relaxed);
                        if e.merge_node().is_some()
                            && let Some(mut e) = shard.lookup_any(db, slot, key)
                        {
                            // Our write now: the entry names no peer.
                            e.set_merge_node(None);
                        }
                        continue;
                    }
                }
                (view_of(e), e.expire_ms(), e.version(), e.merge_node())
            }
            Some(e) => (View::Absent, None, 0, e.merge_node()),
            None => (View::Absent, None, 0, None),
        };
        let mut store = srv.active.store(idx);
        let k: Key = (db, key.into());
        if !store.provisional.is_empty()
            && store.provisional.remove(&k)
            && let Some(seeded) = store.states.get(&k)
        {
            // Written here before any peer spoke of it: the seed becomes a write of its own.
            encode_merge(out, db, key, seeded);
        }
        let side = store.states.contains_key(&k);
        let (mut owned, counts): (KeyState, &[Noted<'_>]) = if side {
            (KeyState::new(), &counts)
        } else {
            let p = prior::find(priors, db, key);
            let was = p.and_then(|p| p.was);
            // Increments count on top of the previous state only if every write of the batch
            // was one and the string they were made to is known; otherwise the batch is a
            // whole-value write.
            let counted = p.is_some_and(|p| {
                p.counts > 0 && p.counts == p.writes && (p.was.is_none() || p.base_known)
            });
            let before = match (was, p) {
                (Some(w), Some(p)) => {
                    let base = if counted {
                        match &p.base {
                            Some(b) => Base::Str(b.to_vec()),
                            None => merge::unknown_base(),
                        }
                    } else if ttl_only(p) {
                        // Only the expiry changed: the value is what the entry holds.
                        base_of(&view)
                    } else {
                        merge::unknown_base()
                    };
                    let stamp = Stamp::new(w.version, w.node.unwrap_or(node));
                    Compact {
                        stamp,
                        ttl_at: w.expire_ms,
                    }
                    .expand(base)
                }
                _ => KeyState::new(),
            };
            (before, if counted { &counts[..] } else { &[] })
        };
        let st: &mut KeyState = if side {
            store.states.get_mut(&k).expect("checked")
        } else {
            &mut owned
        };
        // The write's version; a fresh one for a deletion (or a key the merge already moved past).
        let hlc = if version > st.top.hlc {
            version
        } else {
            srv.ks.hlc.next(now_ms)
        };
        let at = Stamp::new(hlc, node);
        let eff = match counter_effect(st, &view, ttl, at, node, counts, now_ms)
            .or_else(|| merge::local_effect(st, &view, ttl, at, node, counts, now_ms))
        {
            Some(eff) => eff,
            // A write that changed nothing merged (a PEXPIRE to the same deadline) still moved
            // the key's version: every member moves it too, so digests stay equal.
            None if version > st.top.hlc => KeyState {
                top: at,
                ..KeyState::new()
            },
            None => continue,
        };
        st.merge(&eff);
        encode_merge(out, db, key, &eff);
        srv.active.stats.local_effects.fetch_add(1, Relaxed);
        let tombstone = st.is_tombstone();
        // The keyspace shows the merged value: a float counter's text, or a newer write merged
        // before this one.
        let shows = st.view();
        let differs = shows != view
            || (shows != View::Absent && (st.top.hlc != version || st.deadline() != ttl));
        let compact = st.compact();
        let want_node = compact.and_then(|c| (c.stamp.node != node).then_some(c.stamp.node));
        let entry = differs.then(|| entry_of(key, st, &limits, node));
        match compact {
            // A plain reset again: its state is its entry.
            Some(_) if side => {
                store.states.remove(&k);
                store.marks.remove(&k);
            }
            Some(_) => {}
            None if side => {}
            None => {
                store.states.insert(k.clone(), owned);
            }
        }
        if tombstone {
            deleted.push(k);
        } else if !store.marks.is_empty() {
            store.marks.remove(&k);
        }
        drop(store);
        if let Some(entry) = entry {
            srv.active.stats.repairs.fetch_add(1, Relaxed);
            shard.put_merged(db, slot, key, entry, now_ms);
        } else if compact.is_some()
            && entry_node != want_node
            && let Some(mut e) = shard.lookup_any(db, slot, key)
        {
            e.set_merge_node(want_node);
        }
    }
    deleted
}

/// The effect of string increments on a live string counter (or nothing), as
/// `merge::local_effect` makes it, without copying the state: the INCR family's common case.
/// `None`: not that case (the caller diffs). Merges the effect into `st`.
fn counter_effect(
    st: &mut KeyState,
    now: &View,
    ttl: Option<u64>,
    at: Stamp,
    node: u64,
    counts: &[Noted<'_>],
    now_ms: u64,
) -> Option<KeyState> {
    let plain = !counts.is_empty()
        && counts.iter().all(|(f, _)| f.is_none())
        && matches!(now, View::Str(_))
        && matches!(st.base, Base::Str(_) | Base::Absent)
        && st.elems.is_empty()
        && st.ttl.at.is_none_or(|d| d > now_ms);
    if !plain {
        return None;
    }
    let mut eff = KeyState::new();
    for (_, by) in counts {
        let e = st.incr_effect(at, node, *by);
        st.merge(&e);
        eff.merge(&e);
    }
    if st.ttl.at != ttl {
        let e = KeyState::ttl_effect(at, ttl);
        st.merge(&e);
        eff.merge(&e);
    }
    Some(eff)
}

/// Whether a key's batch (its prior) is a plain whole-value write: no increments counted on top
/// of what it held, and not a change of its expiry alone.
fn plain_reset(p: &Prior, no_counts: bool) -> bool {
    (no_counts || p.counts != p.writes) && !ttl_only(p)
}

/// Whether every write of a key's batch changed only its expiry (the value is as it was).
fn ttl_only(p: &Prior) -> bool {
    p.was.is_some() && p.writes > 0 && p.ttl_only && !p.removed
}

/// Whether the entry's version is newer than the one it had before the batch (every write's is).
fn version_after(e: &Entry, w: prior::Was) -> bool {
    e.version() > w.version
}

/// A string or whole value as a reset's base.
fn base_of(view: &View) -> Base {
    match view {
        View::Str(s) => Base::Str(s.clone()),
        View::Blob(b) => Base::Blob(b.clone()),
        _ => merge::unknown_base(),
    }
}

/// The merge state a key without one of its own has: its entry's (see `merge::Compact`), or
/// nothing known when it is absent.
fn state_of_entry(srv: &ServerState, e: Option<&Entry>, node: u64) -> KeyState {
    let Some(e) = e else {
        return KeyState::new();
    };
    let stamp = Stamp::new(e.version(), e.merge_node().unwrap_or(node));
    // A value on the disk tier is read back (as `seed` does); one the tier lost shows as absent,
    // as its key will be.
    let view = match e.cold() {
        Some(_) => cold_view(srv, e).unwrap_or(View::Absent),
        None => view_of(e),
    };
    match view {
        View::Str(s) => Compact {
            stamp,
            ttl_at: e.expire_ms(),
        }
        .expand(Base::Str(s)),
        View::Blob(b) => Compact {
            stamp,
            ttl_at: e.expire_ms(),
        }
        .expand(Base::Blob(b)),
        // A collection always keeps a state of its own; one that has none is taken as written
        // now, element by element.
        v => merge::local_effect(&KeyState::new(), &v, e.expire_ms(), stamp, node, &[], 0)
            .unwrap_or_default(),
    }
}

/// The stream frame of a flush.
pub const FLUSH_FRAME: &[u8] = b"SHOALFLUSH";

/// `SHOALFLUSH db hlc node` (`db` -1: every database): FLUSHDB/FLUSHALL made at stamp `at`.
pub fn encode_flush(out: &mut Vec<u8>, db: Option<usize>, at: Stamp) {
    let db = db.map_or("-1".to_string(), |d| d.to_string());
    let (h, n) = (at.hlc.to_string(), at.node.to_string());
    shoal_resp::encode_request(
        out,
        &[FLUSH_FRAME, db.as_bytes(), h.as_bytes(), n.as_bytes()],
    );
}

/// A `SHOALFLUSH` frame's database (`None`: all) and stamp.
pub fn parse_flush(args: &[&[u8]]) -> Option<(Option<usize>, Stamp)> {
    match args {
        [name, db, h, n] if name.eq_ignore_ascii_case(FLUSH_FRAME) => {
            let db: i64 = std::str::from_utf8(db).ok()?.parse().ok()?;
            let db = (db >= 0).then_some(db as usize);
            let h = std::str::from_utf8(h).ok()?.parse().ok()?;
            let n = std::str::from_utf8(n).ok()?.parse().ok()?;
            Some((db, Stamp::new(h, n)))
        }
        _ => None,
    }
}

/// A flush floor item of `ACTIVESYNC` (`F<db>`, the floor as a reset's wire form).
pub fn parse_floor(db: &[u8], state: &[u8]) -> Option<(usize, Stamp)> {
    let db = std::str::from_utf8(db).ok()?.parse().ok()?;
    let st = KeyState::decode(state)?;
    Some((db, st.reset))
}

/// A member's own FLUSHDB/FLUSHALL at `at`, with every shard locked after their queues were
/// appended and the databases emptied: its merge states for those databases go too (every one
/// is older than the flush), and the flush becomes the databases' floor.
pub fn flushed_locally(srv: &ServerState, db: Option<usize>, at: Stamp) {
    for d in 0..srv.ks.databases() {
        if db.is_none_or(|x| x == d) {
            srv.active.raise_floor(d, at);
        }
    }
    for s in srv.active.stores.get().map(|s| &s[..]).unwrap_or_default() {
        let mut s = s.lock().expect("merge store lock");
        let s = &mut *s;
        s.states.retain(|k, _| db.is_some_and(|x| x != k.0));
        s.marks.retain(|k, _| db.is_some_and(|x| x != k.0));
        s.provisional.retain(|k| db.is_some_and(|x| x != k.0));
    }
}

/// A peer's flush (`SHOALFLUSH`, or a floor read in a full resync): every key of those
/// databases whose state holds nothing newer than `at` goes (no tombstone: the floor stands for
/// them); the others keep what was written after it. Idempotent.
pub fn apply_flush(srv: &ServerState, db: Option<usize>, at: Stamp, now_ms: u64) {
    srv.ks.hlc.observe(at.hlc);
    let node = srv.active.node;
    let limits = srv.encoding_limits();
    let floor = KeyState::reset_effect(at, Base::Absent, None);
    let mut appended = false;
    for i in 0..srv.ks.shard_count() {
        let mut shard = srv.ks.lock(i);
        appended |= append_local(srv, &mut shard, now_ms).is_some();
        for d in 0..srv.ks.databases() {
            if db.is_some_and(|x| x != d) {
                continue;
            }
            srv.active.raise_floor(d, at);
            let mut store = srv.active.store(i);
            // Keys whose state is their entry: gone if written before the flush.
            let mut gone = Vec::new();
            shard.for_each_entry(i, d, |slot, e| {
                let k: Key = (d, e.key().into());
                let stamp = Stamp::new(e.version(), e.merge_node().unwrap_or(node));
                if !store.states.contains_key(&k) && stamp <= at {
                    gone.push((slot, k));
                }
            });
            // Keys with a state of their own: the flush merged in.
            let mut rewrite = Vec::new();
            let keys: Vec<Key> = store.states.keys().filter(|k| k.0 == d).cloned().collect();
            for k in keys {
                let st = store.states.get_mut(&k).expect("listed");
                let slot = key_slot(&k.1);
                if st.top <= at {
                    store.states.remove(&k);
                    store.marks.remove(&k);
                    store.provisional.remove(&k);
                    gone.push((slot, k));
                } else {
                    let before = st.view();
                    st.merge(&floor);
                    if st.view() != before {
                        rewrite.push((slot, k.clone(), entry_of(&k.1, st, &limits, node)));
                    }
                }
            }
            drop(store);
            for (slot, k) in gone {
                shard.put_merged(d, slot, &k.1, None, now_ms);
            }
            for (slot, k, e) in rewrite {
                shard.put_merged(d, slot, &k.1, e, now_ms);
            }
        }
    }
    if appended {
        srv.repl.notify_appended();
    }
}

/// `SHOALSEEN stream offset`: this member merged `stream` (an origin's stream id) up to
/// `offset`. Appended to this member's own stream for its peers' tombstone collection.
pub fn encode_seen(out: &mut Vec<u8>, stream: u64, offset: u64) {
    let (s, o) = (stream.to_string(), offset.to_string());
    shoal_resp::encode_request(out, &[SEEN_FRAME, s.as_bytes(), o.as_bytes()]);
}

/// The stream frame of a merge report.
pub const SEEN_FRAME: &[u8] = b"SHOALSEEN";

/// A `SHOALSEEN` frame's stream and offset.
pub fn parse_seen(args: &[&[u8]]) -> Option<(u64, u64)> {
    match args {
        [name, s, o] if name.eq_ignore_ascii_case(SEEN_FRAME) => Some((
            std::str::from_utf8(s).ok()?.parse().ok()?,
            std::str::from_utf8(o).ok()?.parse().ok()?,
        )),
        _ => None,
    }
}

/// Peer `peer` (its stream id) reported merging `origin` up to `offset`.
pub fn note_seen(srv: &ServerState, peer: u64, origin: u64, offset: u64) {
    let mut seen = srv.active.seen.lock().expect("seen lock");
    let o = seen.entry(peer).or_default().entry(origin).or_insert(0);
    *o = (*o).max(offset);
}

/// Tombstones examined per collection pass at most (the pass holds one shard lock at a time).
pub const TOMBSTONE_SCAN_PER_PASS: usize = 10_000;

/// Drops the tombstones every member has merged: for each, every peer (by stream id, `peers`:
/// all of them, or nothing is collected) reported merging the stream it came from past it
/// (its origin needs no report). Returns how many went.
pub fn collect_tombstones(srv: &ServerState, peers: &[u64]) -> usize {
    if peers.is_empty() {
        return 0;
    }
    let seen = srv.active.seen.lock().expect("seen lock").clone();
    let stable = |m: &Mark| {
        peers.iter().all(|p| {
            *p == m.stream
                || seen
                    .get(p)
                    .and_then(|o| o.get(&m.stream))
                    .is_some_and(|&off| off >= m.offset)
        })
    };
    let (mut scanned, mut collected) = (0, 0);
    for i in 0..srv.ks.shard_count() {
        let _shard = srv.ks.lock(i);
        let mut store = srv.active.store(i);
        let store = &mut *store;
        let gone: Vec<Key> = store
            .marks
            .iter()
            .take(TOMBSTONE_SCAN_PER_PASS.saturating_sub(scanned))
            .filter(|(_, m)| stable(m))
            .map(|(k, _)| k.clone())
            .collect();
        scanned += store.marks.len();
        for k in gone {
            store.marks.remove(&k);
            if store.states.get(&k).is_some_and(KeyState::is_tombstone) {
                store.states.remove(&k);
                collected += 1;
            }
        }
        if scanned >= TOMBSTONE_SCAN_PER_PASS {
            break;
        }
    }
    srv.active
        .stats
        .tombstones_collected
        .fetch_add(collected as u64, Relaxed);
    collected
}

/// `SHOALMERGE db key state`.
pub fn encode_merge(out: &mut Vec<u8>, db: usize, key: &[u8], st: &KeyState) {
    let mut body = Vec::new();
    st.encode(&mut body);
    let db = db.to_string();
    shoal_resp::encode_request(out, &[MERGE_FRAME, db.as_bytes(), key, &body]);
}

/// `SHOALMERGE db key state` for a reset of `key` to string `value` (the same bytes as
/// [`encode_merge`] of `KeyState::reset_effect`), written straight from the entry.
pub fn encode_merge_reset(
    out: &mut Vec<u8>,
    db: usize,
    key: &[u8],
    at: Stamp,
    value: &[u8],
    ttl_at: Option<u64>,
) {
    use std::io::Write;
    let digits = db.checked_ilog10().unwrap_or(0) + 1;
    let body = KeyState::reset_wire_bytes(value.len());
    let _ = write!(out, "*4\r\n${}\r\n", MERGE_FRAME.len());
    out.extend_from_slice(MERGE_FRAME);
    let _ = write!(out, "\r\n${digits}\r\n{db}\r\n${}\r\n", key.len());
    out.extend_from_slice(key);
    let _ = write!(out, "\r\n${body}\r\n");
    let before = out.len();
    KeyState::encode_reset(out, at, value, false, ttl_at);
    debug_assert_eq!(out.len() - before, body);
    out.extend_from_slice(b"\r\n");
}

/// Merges a peer's effect for `key` and writes the merged value into the keyspace. Returns the
/// effect's version.
pub fn apply_remote(
    srv: &ServerState,
    db: usize,
    key: &[u8],
    state: &[u8],
    mark: Option<Mark>,
    now_ms: u64,
) -> Result<u64, String> {
    if db >= srv.ks.databases() {
        return Err(format!("database {db} out of range"));
    }
    let eff = KeyState::decode(state).ok_or("malformed merge state")?;
    srv.ks.hlc.observe(eff.top.hlc);
    let slot = key_slot(key);
    let idx = srv.ks.shard_of(slot);
    let mut shard = srv.ks.lock(idx);
    // This shard's own writes first: they must be in the merge state before a peer's write
    // replaces the value they wrote.
    let appended = append_local(srv, &mut shard, now_ms).is_some();
    let node = srv.active.node;
    let (entry, replaced) = {
        let mut store = srv.active.store(idx);
        let k: Key = (db, key.into());
        let replaced = store.provisional.remove(&k);
        if replaced {
            // A peer's state replaces what this member's snapshot held.
            store.states.remove(&k);
        }
        let side = store.states.contains_key(&k);
        let mut owned = if side || replaced {
            KeyState::new()
        } else {
            state_of_entry(srv, shard.peek_any(db, slot, key), node)
        };
        let st = if side {
            store.states.get_mut(&k).expect("checked")
        } else {
            &mut owned
        };
        st.merge(&eff);
        let floor = srv.active.floor(db);
        if floor != Stamp::ZERO && st.top <= floor {
            // Made before a flush merged here: the flush left nothing of it.
            *st = KeyState::new();
        }
        let entry = entry_of(key, st, &srv.encoding_limits(), node);
        match st.compact() {
            _ if *st == KeyState::new() => {
                store.states.remove(&k);
                store.marks.remove(&k);
            }
            Some(_) if side => {
                store.states.remove(&k);
            }
            Some(_) => {}
            None if side => {}
            None => {
                store.states.insert(k.clone(), owned);
            }
        }
        store.note(&k, mark);
        (entry, replaced)
    };
    if replaced {
        // The snapshot's entry may carry a version the group never saw: it goes first, so the
        // key's versions only grow from here.
        shard.put_merged(db, slot, key, None, now_ms);
    }
    shard.put_merged(db, slot, key, entry, now_ms);
    drop(shard);
    if appended {
        srv.repl.notify_appended();
    }
    srv.active.stats.merges.fetch_add(1, Relaxed);
    Ok(eff.top.hlc)
}

/// One page of merge-store shard `i` for a peer's full resync: `(db, key, state)` after `after`
/// (a key's wire form, empty: from the start), at most [`SYNC_KEYS_PER_CALL`], and whether more
/// follow.
pub fn dump_shard(
    srv: &ServerState,
    i: usize,
    after: &[u8],
    now_ms: u64,
) -> (Vec<DumpedState>, bool) {
    let mut shard = srv.ks.lock(i);
    let appended = append_local(srv, &mut shard, now_ms).is_some();
    let node = srv.active.node;
    let store = srv.active.store(i);
    // Keys with a state of their own, and keys whose state is their entry.
    let mut keys: Vec<(Vec<u8>, &Key, bool)> = store
        .states
        .keys()
        .filter(|k| !store.provisional.contains(*k))
        .map(|k| (cursor_of(k), k, true))
        .filter(|(c, _, _)| after.is_empty() || c.as_slice() > after)
        .collect();
    let mut compact: Vec<Key> = Vec::new();
    for db in 0..srv.ks.databases() {
        shard.for_each_entry(i, db, |_, e| {
            let k: Key = (db, e.key().into());
            if !store.states.contains_key(&k) {
                compact.push(k);
            }
        });
    }
    keys.extend(
        compact
            .iter()
            .map(|k| (cursor_of(k), k, false))
            .filter(|(c, _, _)| after.is_empty() || c.as_slice() > after),
    );
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let more = keys.len() > SYNC_KEYS_PER_CALL;
    let page = keys
        .into_iter()
        .take(SYNC_KEYS_PER_CALL)
        .map(|(_, k, side)| {
            let mut b = Vec::new();
            if side {
                store.states[k].encode(&mut b);
            } else {
                let slot = key_slot(&k.1);
                state_of_entry(srv, shard.peek_any(k.0, slot, &k.1), node).encode(&mut b);
            }
            (k.0, k.1.to_vec(), b)
        })
        .collect::<Vec<_>>();
    drop(store);
    drop(shard);
    if appended {
        srv.repl.notify_appended();
    }
    srv.active
        .stats
        .states_sent
        .fetch_add(page.len() as u64, Relaxed);
    (page, more)
}

/// A key's place in a dump's order: its database, then its bytes.
pub fn cursor_of(k: &(usize, Box<[u8]>)) -> Vec<u8> {
    let mut c = (k.0 as u64).to_be_bytes().to_vec();
    c.extend_from_slice(&k.1);
    c
}

/// The `# Active` INFO section.
pub fn info_section(srv: &ServerState, now_ms: u64, t: &mut String) {
    use std::fmt::Write;
    let a = &srv.active;
    let (keys, tombstones) = a.counts();
    let _ = write!(
        t,
        "# Active\r\nactive_enabled:{}\r\nactive_node:{:016x}\r\nactive_keys:{keys}\r\nactive_tombstones:{tombstones}\r\nactive_local_effects:{}\r\nactive_merges:{}\r\nactive_repairs:{}\r\nactive_states_sent:{}\r\nactive_tombstones_collected:{}\r\n",
        a.is_on() as u8,
        a.node,
        a.stats.local_effects.load(Relaxed),
        a.stats.merges.load(Relaxed),
        a.stats.repairs.load(Relaxed),
        a.stats.states_sent.load(Relaxed),
        a.stats.tombstones_collected.load(Relaxed),
    );
    let peers = a.peers.lock().expect("peers lock");
    for (i, (addr, p)) in peers.iter().enumerate() {
        let _ = write!(
            t,
            "active_peer{i}:addr={addr},state={},offset={},lag_ms={},last_io_ms_ago={},full_syncs={},partial_syncs={},effects={},last_error={}\r\n",
            p.state,
            p.offset,
            p.lag_ms,
            now_ms.saturating_sub(p.last_io_ms),
            p.full_syncs,
            p.partial_syncs,
            p.effects,
            p.last_error.replace([',', '\r', '\n'], " "),
        );
    }
    drop(peers);
    crate::repair::info_lines(srv, t);
}

/// Whether a stream frame is an effect for active members, and its parts.
pub fn parse_merge<'a>(args: &[&'a [u8]]) -> Option<(usize, &'a [u8], &'a [u8])> {
    match args {
        [name, db, key, state] if name.eq_ignore_ascii_case(MERGE_FRAME) => {
            let db = std::str::from_utf8(db).ok()?.parse().ok()?;
            Some((db, key, state))
        }
        _ => None,
    }
}

/// Whether `stream` frames other than effects matter to an active member: pings and the like
/// are skipped, so is anything a primary–replica stream carries.
pub fn is_ping(args: &[&[u8]]) -> bool {
    stream::decode(args, 16).is_ok_and(|e| matches!(e, stream::Effect::Ping))
}

pub static COMMANDS: &[crate::table::Spec] = &[crate::table::Spec {
    name: "activesync",
    arity: -2,
    flags: crate::table::flag::READONLY | crate::table::flag::ADMIN | crate::table::flag::STALE,
    group: crate::table::Group::Shoal,
    since: "0.1.0",
    summary: "Reads a page of an active-active member's merge states (a peer's full resync).",
    handler: Some(activesync),
    ..crate::table::Spec::DEFAULT
}];

/// `ACTIVESYNC shard [cursor]` → `[next-cursor, [db, key, state, ...]]`; an empty next cursor
/// means the shard is done.
fn activesync(ctx: &mut crate::Ctx<'_>, args: &crate::Args<'_>) -> crate::CmdResult {
    if !ctx.srv.active.is_on() {
        return Err(crate::error::ReplyError::err_static(
            "this node is not an active-active member",
        ));
    }
    let shard = std::str::from_utf8(args.get(1))
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&s| s < ctx.srv.ks.shard_count())
        .ok_or(crate::args::ERR_NOT_INTEGER)?;
    if args.len() > 3 {
        return Err(crate::args::ERR_SYNTAX);
    }
    let after: &[u8] = if args.len() == 3 { args.get(2) } else { b"" };
    let (page, more) = dump_shard(ctx.srv, shard, after, ctx.now_ms);
    let next = match (more, page.last()) {
        (true, Some((db, key, _))) => cursor_of(&(*db, key.as_slice().into())),
        _ => Vec::new(),
    };
    // The first page also carries the databases' flush floors, as `F<db>` items.
    let mut floors: Vec<(String, Vec<u8>)> = Vec::new();
    if shard == 0 && after.is_empty() {
        for db in 0..ctx.srv.ks.databases() {
            let f = ctx.srv.active.floor(db);
            if f != Stamp::ZERO {
                let mut b = Vec::new();
                KeyState::reset_effect(f, Base::Absent, None).encode(&mut b);
                floors.push((format!("F{db}"), b));
            }
        }
    }
    ctx.out.array(2);
    ctx.out.bulk(&next);
    ctx.out.array((page.len() + floors.len()) * 3);
    for (db, state) in &floors {
        ctx.out.bulk(db.as_bytes());
        ctx.out.bulk(b"");
        ctx.out.bulk(state);
    }
    for (db, key, state) in &page {
        ctx.out.bulk(db.to_string().as_bytes());
        ctx.out.bulk(key);
        ctx.out.bulk(state);
    }
    Ok(())
}

/// The wire form of `key`'s merge state here (a tombstone too), for anti-entropy and read
/// repair (`repair.rs`); `None`: no state, or a provisional one the group has not seen yet.
pub fn state_of(srv: &ServerState, db: usize, key: &[u8], now_ms: u64) -> Option<Vec<u8>> {
    if !srv.active.is_on() {
        return None;
    }
    let idx = srv.ks.shard_of(key_slot(key));
    let mut shard = srv.ks.lock(idx);
    // This shard's queued writes first, so the state shows them.
    let appended = append_local(srv, &mut shard, now_ms).is_some();
    let out = {
        let store = srv.active.store(idx);
        let k: Key = (db, key.into());
        let mut b = Vec::new();
        if store.provisional.contains(&k) {
            None
        } else if let Some(st) = store.states.get(&k) {
            st.encode(&mut b);
            Some(b)
        } else {
            // A key written whole keeps no state of its own: its entry is the state.
            shard.peek_any(db, key_slot(key), key).map(|e| {
                state_of_entry(srv, Some(e), srv.active.node).encode(&mut b);
                b
            })
        }
    };
    drop(shard);
    if appended {
        srv.repl.notify_appended();
    }
    out
}

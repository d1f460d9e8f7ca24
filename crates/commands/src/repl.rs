//! Replication state (DESIGN.md §4) as data: this node's role, replication ids and offsets, the
//! backlog of the effect stream, the replicas attached to it and what each acknowledged. The network
//! side (links to replicas and to a primary) lives in the `shoal-replication` crate; it reaches this
//! state through `ServerState::repl` and is woken through the callbacks installed here.
//!
//! The stream carries *effects*, not commands: after a write command runs, the keys it wrote are read
//! back and sent as their new state (`SHOALPUT`: value, absolute expiry, version) or as a deletion
//! (`SHOALDEL`), each with its version. A replica applies them last-writer-wins by version, so the
//! order in which concurrent writers append effects does not matter, re-applying an effect is
//! harmless, and relative TTLs, random choices, evictions and expiry all reach replicas as the
//! concrete outcome they had on the primary.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst, fence};
use std::task::Waker;

use shoal_keyspace::{Entry, codec};

/// Default `repl-backlog-size`: a replica away for 5 s under 50,000 writes/s of small values
/// (about 120 bytes of stream each) resumes without a full copy.
pub const BACKLOG_BYTES_DEFAULT: usize = 64 * 1024 * 1024;

/// The bounded ring of the most recent stream bytes, addressed by replication offset.
#[derive(Debug)]
pub struct Backlog {
    buf: VecDeque<u8>,
    capacity: usize,
    /// Replication offset of `buf[0]`.
    start_offset: u64,
}

impl Backlog {
    pub fn new(capacity: usize, end_offset: u64) -> Self {
        Backlog {
            buf: VecDeque::new(),
            capacity: capacity.max(1),
            start_offset: end_offset,
        }
    }

    /// Offset just past the last byte (Redis's `master_repl_offset`).
    pub fn end_offset(&self) -> u64 {
        self.start_offset + self.buf.len() as u64
    }

    /// Offset of the first byte still held.
    pub fn start_offset(&self) -> u64 {
        self.start_offset
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        self.trim();
    }

    fn trim(&mut self) {
        let excess = self.buf.len().saturating_sub(self.capacity);
        if excess > 0 {
            self.buf.drain(..excess);
            self.start_offset += excess as u64;
        }
    }

    pub fn append(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes.iter().copied());
        self.trim();
        debug_assert!(self.buf.len() <= self.capacity);
    }

    /// Whether a replica at `offset` can continue from here.
    pub fn holds(&self, offset: u64) -> bool {
        offset >= self.start_offset && offset <= self.end_offset()
    }

    /// Up to `max` bytes starting at `offset`; `None` if the offset is no longer (or not yet) held.
    pub fn read(&self, offset: u64, max: usize) -> Option<Vec<u8>> {
        if !self.holds(offset) {
            return None;
        }
        let from = (offset - self.start_offset) as usize;
        let to = (from + max).min(self.buf.len());
        // Copy from the ring's two contiguous halves with memcpy, not byte by byte.
        let (a, b) = self.buf.as_slices();
        let mut out = Vec::with_capacity(to - from);
        if from < a.len() {
            out.extend_from_slice(&a[from..to.min(a.len())]);
        }
        if to > a.len() {
            out.extend_from_slice(&b[from.saturating_sub(a.len())..to - a.len()]);
        }
        Some(out)
    }

    /// Drops everything and restarts at `offset` (a new replication history).
    pub fn reset(&mut self, offset: u64) {
        self.buf.clear();
        self.start_offset = offset;
    }
}

/// This node's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica { host: String, port: u16 },
}

/// State of the link to our primary (when a replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Syncing,
    Connected,
    Down,
}

impl LinkState {
    pub fn name(self) -> &'static str {
        match self {
            LinkState::Connecting => "connect",
            LinkState::Syncing => "sync",
            LinkState::Connected => "connected",
            LinkState::Down => "down",
        }
    }
}

/// A replica attached to this node, as the primary sees it.
#[derive(Debug)]
pub struct ReplicaInfo {
    pub id: u64,
    pub ip: String,
    pub listening_port: AtomicU64,
    pub ack_offset: AtomicU64,
    pub last_ack_ms: AtomicU64,
    /// "wait_bgsave" during a full copy, "online" when streaming.
    pub online: AtomicBool,
}

/// Write strategy (DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Async,
    Sync,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Strategy> {
        match s.to_ascii_lowercase().as_str() {
            "async" => Some(Strategy::Async),
            "sync" => Some(Strategy::Sync),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Async => "async",
            Strategy::Sync => "sync",
        }
    }
}

/// Writers waiting until enough replicas acknowledged an offset (WAIT, the sync strategy). An
/// acknowledgement wakes only the waiters it satisfies, so 50 clients waiting on one replica are not
/// all woken by every ack.
#[derive(Debug, Default)]
pub struct AckWaiters {
    list: Mutex<Vec<AckWaiter>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct AckWaiter {
    id: u64,
    offset: u64,
    need: usize,
    waker: Waker,
}

/// Callbacks installed by the network side.
pub struct ReplHooks {
    /// Start (or restart) the link to a primary; the link task stops when `epoch` moves on.
    pub start_link: Box<dyn Fn(String, u16, u64) + Send + Sync>,
    /// Carry out a FAILOVER in the background.
    pub failover: Box<dyn Fn(FailoverRequest) + Send + Sync>,
    /// Write a snapshot to disk: in the foreground (SAVE, `true`) or background (BGSAVE).
    pub save: Box<dyn Fn(bool) -> Result<(), String> + Send + Sync>,
}

/// A wake-up callback.
pub struct Wake(pub Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wake")
    }
}

/// A FAILOVER request.
#[derive(Debug, Clone)]
pub struct FailoverRequest {
    pub to: Option<(String, u16)>,
    pub timeout_ms: u64,
    pub force: bool,
}

/// Progress of a FAILOVER (INFO `master_failover_state`).
#[derive(Debug)]
pub struct FailoverState {
    pub in_progress: AtomicBool,
    pub abort: AtomicBool,
    pub state: Mutex<&'static str>,
}

impl Default for FailoverState {
    fn default() -> Self {
        FailoverState {
            in_progress: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            state: Mutex::new("no-failover"),
        }
    }
}

impl Default for ReplHooks {
    fn default() -> Self {
        ReplHooks {
            start_link: Box::new(|_, _, _| {}),
            failover: Box::new(|_| {}),
            save: Box::new(|_| Err("saving is not available".into())),
        }
    }
}

impl std::fmt::Debug for ReplHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplHooks")
    }
}

/// Replication ids and offsets. Changed together under one lock.
#[derive(Debug, Clone)]
pub struct Ids {
    pub replid: String,
    /// The previous history's id, kept by a promoted replica so its siblings can continue.
    pub replid2: String,
    /// Offset up to which `replid2` is valid (-1: none).
    pub second_offset: i64,
}

#[derive(Debug)]
pub struct ReplState {
    pub role: Mutex<Role>,
    /// Mirrors `role` for the per-command read-only check.
    pub replica_flag: AtomicBool,
    /// `replica-read-only`; `repl-backlog-size`, `min-replicas-ack`, `ack-timeout-ms` and the
    /// write strategy live in config and are mirrored here.
    pub strategy_sync: AtomicBool,
    pub min_replicas_ack: AtomicU64,
    pub ack_timeout_ms: AtomicU64,
    pub ids: Mutex<Ids>,
    pub backlog: Mutex<Backlog>,
    /// Set once a replica attached: from then on writes feed the backlog.
    pub active: AtomicBool,
    pub replicas: Mutex<Vec<std::sync::Arc<ReplicaInfo>>>,
    /// As a replica: the offset applied from our primary's stream.
    pub replica_offset: AtomicU64,
    pub link: Mutex<LinkState>,
    pub link_last_io_ms: AtomicU64,
    pub sync_full: AtomicU64,
    pub sync_partial_ok: AtomicU64,
    pub sync_partial_err: AtomicU64,
    /// As a replica: sessions with the primary that failed (connect, auth, handshake, stream).
    pub link_failures: AtomicU64,
    /// As a replica: full copies refused because the primary was empty and we were not.
    pub empty_copies_refused: AtomicU64,
    /// Bumped whenever the role changes, so an old replica link task notices it must stop.
    pub epoch: AtomicU64,
    /// Clients paused for a FAILOVER: writes wait (ms deadline, 0 = not paused).
    pub writes_paused_until_ms: AtomicU64,
    pub hooks: Mutex<ReplHooks>,
    /// Wakes replica links after an append; set once at start-up (read on every write, so it
    /// is not behind the hooks' mutex).
    pub on_append: std::sync::OnceLock<Wake>,
    /// Set by a replica link that found nothing to send and is about to sleep; the next append
    /// clears it and wakes the links, so a busy stream costs one wake-up per link sleep, not one per
    /// write.
    pub links_waiting: AtomicBool,
    pub ack_waiters: AckWaiters,
    pub failover: FailoverState,
    /// A SAVE/BGSAVE is running.
    pub saving: AtomicBool,
    /// Writes since the last save (for `save` rules), counted only while rules are set.
    pub dirty: AtomicU64,
    pub save_rules_set: AtomicBool,
    pub last_save_unix_s: AtomicU64,
}

impl ReplState {
    pub fn new(replid: String) -> Self {
        ReplState {
            role: Mutex::new(Role::Primary),
            replica_flag: AtomicBool::new(false),
            strategy_sync: AtomicBool::new(false),
            min_replicas_ack: AtomicU64::new(1),
            ack_timeout_ms: AtomicU64::new(1000),
            ids: Mutex::new(Ids {
                replid,
                replid2: "0".repeat(40),
                second_offset: -1,
            }),
            backlog: Mutex::new(Backlog::new(BACKLOG_BYTES_DEFAULT, 0)),
            active: AtomicBool::new(false),
            replicas: Mutex::default(),
            replica_offset: AtomicU64::new(0),
            link: Mutex::new(LinkState::Down),
            link_last_io_ms: AtomicU64::new(0),
            sync_full: AtomicU64::new(0),
            sync_partial_ok: AtomicU64::new(0),
            sync_partial_err: AtomicU64::new(0),
            link_failures: AtomicU64::new(0),
            empty_copies_refused: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            writes_paused_until_ms: AtomicU64::new(0),
            hooks: Mutex::default(),
            on_append: std::sync::OnceLock::new(),
            links_waiting: AtomicBool::new(false),
            ack_waiters: AckWaiters::default(),
            failover: FailoverState::default(),
            saving: AtomicBool::new(false),
            dirty: AtomicU64::new(0),
            save_rules_set: AtomicBool::new(false),
            last_save_unix_s: AtomicU64::new(0),
        }
    }

    pub fn is_replica(&self) -> bool {
        self.replica_flag.load(Relaxed)
    }

    /// Switches role; bumps the epoch so a running link to an old primary stops.
    pub fn set_role(&self, role: Role) -> u64 {
        let replica = matches!(role, Role::Replica { .. });
        *self.role.lock().expect("role lock") = role;
        self.replica_flag.store(replica, Relaxed);
        self.epoch.fetch_add(1, Relaxed) + 1
    }

    /// Offset of the stream: the backlog's end on a primary, what we applied on a replica.
    pub fn offset(&self) -> u64 {
        if self.is_replica() {
            self.replica_offset.load(Relaxed)
        } else {
            self.backlog.lock().expect("backlog lock").end_offset()
        }
    }

    /// Appends encoded stream bytes; returns the new end offset.
    pub fn append(&self, bytes: &[u8]) -> u64 {
        let end = {
            let mut b = self.backlog.lock().expect("backlog lock");
            b.append(bytes);
            b.end_offset()
        };
        // Pairs with the fence in `link_will_wait`: either the link sees these bytes, or this
        // sees its flag.
        fence(SeqCst);
        if self.links_waiting.load(Relaxed)
            && self.links_waiting.swap(false, Relaxed)
            && let Some(wake) = self.on_append.get()
        {
            (wake.0)();
        }
        end
    }

    /// A replica link found nothing to send: after this, it must check the backlog's end once
    /// more, and may then sleep until woken by `on_append`.
    pub fn link_will_wait(&self) {
        self.links_waiting.store(true, Relaxed);
        fence(SeqCst);
    }

    /// Polls whether `need` replicas acknowledged `offset`; if not, registers `waker` (under the
    /// waiter `id`, see [`ReplState::new_ack_waiter`]) to be woken when they have.
    pub fn poll_acked(&self, id: u64, offset: u64, need: usize, waker: &Waker) -> bool {
        let mut list = self.ack_waiters.list.lock().expect("ack waiters lock");
        // Checked under the waiters' lock: an ack recorded before it is seen here, one recorded
        // after it finds this waiter registered.
        if self.acked(offset) >= need {
            list.retain(|w| w.id != id);
            return true;
        }
        match list.iter_mut().find(|w| w.id == id) {
            Some(w) => {
                w.offset = offset;
                w.need = need;
                w.waker.clone_from(waker);
            }
            None => list.push(AckWaiter {
                id,
                offset,
                need,
                waker: waker.clone(),
            }),
        }
        false
    }

    /// A fresh waiter id for [`ReplState::poll_acked`].
    pub fn new_ack_waiter(&self) -> u64 {
        self.ack_waiters.next_id.fetch_add(1, Relaxed)
    }

    /// Forgets a waiter (its wait ended or was dropped).
    pub fn drop_ack_waiter(&self, id: u64) {
        self.ack_waiters
            .list
            .lock()
            .expect("ack waiters lock")
            .retain(|w| w.id != id);
    }

    /// After a replica's ack offset grew, or the replica set changed: wakes the waiters now
    /// satisfied (all of them when `all`, so they re-check, e.g. after a replica left).
    pub fn wake_ack_waiters(&self, all: bool) {
        let mut list = self.ack_waiters.list.lock().expect("ack waiters lock");
        if list.is_empty() {
            return;
        }
        let acks: Vec<u64> = self
            .replicas
            .lock()
            .expect("replicas lock")
            .iter()
            .map(|r| r.ack_offset.load(Relaxed))
            .collect();
        list.retain(|w| {
            let done = all || acks.iter().filter(|&&a| a >= w.offset).count() >= w.need;
            if done {
                w.waker.wake_by_ref();
            }
            !done
        });
    }

    /// Number of replicas that acknowledged at least `offset`.
    pub fn acked(&self, offset: u64) -> usize {
        self.replicas
            .lock()
            .expect("replicas lock")
            .iter()
            .filter(|r| r.ack_offset.load(Relaxed) >= offset)
            .count()
    }

    pub fn replica_count(&self) -> usize {
        self.replicas.lock().expect("replicas lock").len()
    }
}

// ---- effects of a command ----

/// Sends the effects of what this thread just wrote (see `shoal_keyspace::write_log`): each key's
/// current state, or its deletion. Called after every command and after each expire/evict pass.
/// Returns the stream offset after the effects (for WAIT and the sync strategy).
pub fn emit_logged(srv: &crate::state::ServerState) -> Option<u64> {
    if !shoal_keyspace::write_log::enabled() {
        return None;
    }
    let mut keys = shoal_keyspace::write_log::drain();
    if keys.is_empty() {
        return None;
    }
    // A command may touch a key several times; one effect with its final state is enough.
    if keys.len() > 1 {
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        keys.retain(|k| seen.insert(k.clone()));
    }
    let mut out = Vec::with_capacity(keys.len() * 64);
    for (db, key) in &keys {
        let slot = shoal_keyspace::key_slot(key);
        let shard = srv.ks.lock(srv.ks.shard_of(slot));
        match shard.peek_any(*db, slot, key) {
            Some(e) => encode_put(&mut out, *db, e),
            // The deletion's version is taken under the shard lock, so any later write of this key
            // (which needs the lock) carries a newer version and survives the deletion.
            None => encode_del(&mut out, *db, key, srv.ks.hlc.next(now_ms())),
        }
    }
    Some(srv.repl.append(&out))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---- stream encoding ----

/// Stream command names. Replicas reject them from normal clients.
pub const PUT: &[u8] = b"SHOALPUT";
pub const DEL: &[u8] = b"SHOALDEL";
pub const FLUSH: &[u8] = b"SHOALFLUSH";
pub const SWAPDB: &[u8] = b"SHOALSWAPDB";

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    let mut tmp = [0u8; 20];
    out.push(b'$');
    out.extend_from_slice(shoal_resp::fmt_u64(b.len() as u64, &mut tmp));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn bulk_u64(out: &mut Vec<u8>, v: u64) {
    let mut tmp = [0u8; 20];
    let s = shoal_resp::fmt_u64(v, &mut tmp).to_vec();
    bulk(out, &s);
}

fn bulk_opt(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => bulk_u64(out, v),
        None => bulk(out, b"-1"),
    }
}

/// `SHOALPUT db key version expire_ms|-1 ext_version|-1 value` — the full state of a key.
pub fn encode_put(out: &mut Vec<u8>, db: usize, e: &Entry) {
    out.extend_from_slice(b"*7\r\n");
    bulk(out, PUT);
    bulk_u64(out, db as u64);
    bulk(out, e.key());
    bulk_u64(out, e.version());
    bulk_opt(out, e.expire_ms());
    bulk_opt(out, e.ext_version());
    let mut value = Vec::new();
    codec::encode_value(e.value(), &mut value);
    bulk(out, &value);
}

/// `SHOALDEL db key version` — delete if older than `version`.
pub fn encode_del(out: &mut Vec<u8>, db: usize, key: &[u8], version: u64) {
    out.extend_from_slice(b"*4\r\n");
    bulk(out, DEL);
    bulk_u64(out, db as u64);
    bulk(out, key);
    bulk_u64(out, version);
}

/// `SHOALFLUSH db|-1 version` — delete every key (of one db, or all) older than `version`.
pub fn encode_flush(out: &mut Vec<u8>, db: Option<usize>, version: u64) {
    out.extend_from_slice(b"*3\r\n");
    bulk(out, FLUSH);
    bulk_opt(out, db.map(|d| d as u64));
    bulk_u64(out, version);
}

/// `SHOALSWAPDB a b`.
pub fn encode_swapdb(out: &mut Vec<u8>, a: usize, b: usize) {
    out.extend_from_slice(b"*3\r\n");
    bulk(out, SWAPDB);
    bulk_u64(out, a as u64);
    bulk_u64(out, b as u64);
}

/// `PING`, sent periodically so replicas can tell a quiet primary from a dead link.
pub fn encode_ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts its wake-ups.
    struct Counter(AtomicU64);

    impl std::task::Wake for Counter {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    fn replica(repl: &ReplState, id: u64) -> std::sync::Arc<ReplicaInfo> {
        let r = std::sync::Arc::new(ReplicaInfo {
            id,
            ip: "127.0.0.1".into(),
            listening_port: 0.into(),
            ack_offset: 0.into(),
            last_ack_ms: 0.into(),
            online: true.into(),
        });
        repl.replicas.lock().unwrap().push(r.clone());
        r
    }

    #[test]
    fn an_ack_wakes_only_the_waiters_it_satisfies() {
        let repl = ReplState::new("0".repeat(40));
        let (a, b) = (replica(&repl, 1), replica(&repl, 2));
        let counters: Vec<_> = (0..3)
            .map(|_| std::sync::Arc::new(Counter(AtomicU64::new(0))))
            .collect();
        let wakers: Vec<Waker> = counters.iter().map(|c| Waker::from(c.clone())).collect();
        let ids: Vec<u64> = (0..3).map(|_| repl.new_ack_waiter()).collect();
        // Waiter 0: one replica at 100; waiter 1: one replica at 200; waiter 2: two replicas at 100.
        let wants = [(100, 1), (200, 1), (100, 2)];
        for i in 0..3 {
            assert!(!repl.poll_acked(ids[i], wants[i].0, wants[i].1, &wakers[i]));
        }
        a.ack_offset.store(150, Relaxed);
        repl.wake_ack_waiters(false);
        let woken = |i: usize| counters[i].0.load(Relaxed);
        assert_eq!((woken(0), woken(1), woken(2)), (1, 0, 0));
        assert!(repl.poll_acked(ids[0], 100, 1, &wakers[0]));
        b.ack_offset.store(120, Relaxed);
        repl.wake_ack_waiters(false);
        assert_eq!((woken(0), woken(1), woken(2)), (1, 0, 1));
        assert!(repl.poll_acked(ids[2], 100, 2, &wakers[2]));
        assert!(!repl.poll_acked(ids[1], 200, 1, &wakers[1]));
        // A replica leaving wakes everyone still waiting, so they re-check; dropping forgets.
        repl.wake_ack_waiters(true);
        assert_eq!(woken(1), 1);
        repl.drop_ack_waiter(ids[1]);
        assert!(repl.ack_waiters.list.lock().unwrap().is_empty());
    }

    #[test]
    fn an_append_wakes_links_only_when_one_asked() {
        let repl = ReplState::new("0".repeat(40));
        let wakes = std::sync::Arc::new(AtomicU64::new(0));
        let w = wakes.clone();
        repl.on_append
            .set(Wake(Box::new(move || {
                w.fetch_add(1, Relaxed);
            })))
            .ok()
            .unwrap();
        repl.append(b"a");
        assert_eq!(wakes.load(Relaxed), 0);
        repl.link_will_wait();
        repl.append(b"b");
        repl.append(b"c");
        assert_eq!(wakes.load(Relaxed), 1);
    }

    #[test]
    fn backlog_keeps_the_last_capacity_bytes_by_offset() {
        let mut b = Backlog::new(10, 100);
        b.append(b"0123456789abc");
        assert_eq!(b.start_offset(), 103);
        assert_eq!(b.end_offset(), 113);
        assert!(!b.holds(102));
        assert_eq!(b.read(110, 100).unwrap(), b"abc");
        assert_eq!(b.read(113, 5).unwrap(), b"");
        assert!(b.read(114, 1).is_none());
        b.set_capacity(2);
        assert_eq!(b.read(111, 9).unwrap(), b"bc");
    }

    #[test]
    fn stream_frames_are_resp_multibulk() {
        let e = Entry::new_string(b"k", b"v", Some(5), 9);
        let mut out = Vec::new();
        encode_put(&mut out, 0, &e);
        encode_del(&mut out, 1, b"k", 10);
        let mut d = shoal_resp::RequestDecoder::default();
        let mut args = Vec::new();
        let shoal_resp::Decoded::Frame { end, .. } = d.decode(&out, 0, &mut args).unwrap() else {
            panic!("frame")
        };
        assert_eq!(args.len(), 7);
        assert_eq!(&out[args[5].clone()], b"-1");
        let shoal_resp::Decoded::Frame { end: end2, .. } = d.decode(&out, end, &mut args).unwrap()
        else {
            panic!("frame")
        };
        assert_eq!(end2, out.len());
    }
}

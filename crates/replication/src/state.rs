//! A node's replication state and its role machine (DESIGN.md §4): role, replication ids and
//! offsets, the backlog, the replicas attached and what each acknowledged, the writers waiting for
//! acknowledgements, and FAILOVER's progress. Plain data and locks, no I/O: commands (ROLE, WAIT,
//! INFO) read it, the link sessions (`primary_link`, `replica_link`) change it, and the I/O layer
//! only carries bytes.
//!
//! The role machine. Every transition is one method, taken under one lock (`core`), asserted:
//!
//! ```text
//!                 REPLICAOF host port                       link: Connecting ──▶ Handshake
//!   Primary ─────────────────────────────────▶ Replica ──┤          ▲                  │
//!      ▲                                        │        │          │ (drop, retry)    ▼ +FULLRESYNC
//!      │  REPLICAOF NO ONE / FAILOVER target    │        │        Down ◀──────────── Syncing
//!      └────────────────────────────────────────┘        │          ▲                  │ snapshot loaded
//!        (promote: new replid, old one kept as replid2)  │          │                  ▼
//!                                                        └────────  Connected ◀── +CONTINUE
//!
//!   Primary ──FAILOVER (begin_failover)──▶ FailingOver ──target promoted (become_replica)──▶ Replica
//!      ▲                                        │
//!      └──────────── aborted (end_failover) ◀───┘
//! ```
//!
//! Invariants checked at run time: the applied offset of one history never goes back (a full copy
//! starts a new history); a replica's acknowledged offset never exceeds what was sent to it; a
//! promoted replica keeps its old id as `replid2` valid up to its offset; the backlog of a replica
//! ends exactly at its applied offset.

use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst, fence,
};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use shoal_keyspace::Keyspace;
use shoal_keyspace::write_log::EffectSink;

use crate::backlog::{BACKLOG_BYTES_DEFAULT, Backlog};

/// The backlog as a [`shoal_keyspace::write_log::EffectSink`]: an append that would wait for the
/// lock is refused (the write is queued instead).
#[derive(Debug)]
struct BacklogSink {
    backlog: Arc<Mutex<Backlog>>,
    on: AtomicBool,
    /// Where the backlog's next byte goes (`Backlog::tail_hint`), for [`EffectSink::prefetch_tail`].
    tail: Arc<AtomicUsize>,
}

/// Lines from the backlog's tail a direct append's prefetch loads: a SET of a 64-byte value
/// is about 160 bytes of stream, which straddle at most four.
const TAIL_PREFETCH_LINES: usize = 4;

impl EffectSink for BacklogSink {
    fn try_append(&self, bytes: &[u8]) -> Option<u64> {
        if !self.on.load(Relaxed) {
            return None;
        }
        let mut b = match self.backlog.try_lock() {
            Ok(b) => b,
            Err(std::sync::TryLockError::WouldBlock) => return None,
            Err(std::sync::TryLockError::Poisoned(_)) => panic!("backlog lock poisoned"),
        };
        b.append(bytes);
        Some(b.end_offset())
    }

    fn prefetch_tail(&self) {
        let at = self.tail.load(Relaxed);
        for line in 0..TAIL_PREFETCH_LINES {
            shoal_keyspace::prefetch::fetch_for_write(at + line * 64);
        }
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
    Handshake,
    Syncing,
    Connected,
    Down,
}

impl LinkState {
    /// The word `ROLE` uses.
    pub fn name(self) -> &'static str {
        match self {
            LinkState::Connecting | LinkState::Down => "connect",
            LinkState::Handshake => "handshake",
            LinkState::Syncing => "sync",
            LinkState::Connected => "connected",
        }
    }

    /// Whether `self → next` is a step of the machine.
    fn may_become(self, next: LinkState) -> bool {
        use LinkState::*;
        matches!(
            (self, next),
            (Down, Connecting)
                | (Connecting, Handshake)
                | (Handshake, Syncing)
                | (Handshake, Connected)
                | (Syncing, Connected)
                | (_, Down)
        )
    }
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

/// A replica attached to this node, as this node sees it.
#[derive(Debug)]
pub struct ReplicaInfo {
    /// The client id of its connection (CLIENT LIST, CLIENT KILL).
    pub id: u64,
    pub ip: String,
    pub listening_port: AtomicU64,
    pub ack_offset: AtomicU64,
    pub last_ack_ms: AtomicU64,
    /// Offset just past the last byte handed to its connection.
    pub sent_offset: AtomicU64,
    /// It holds everything up to `ack_offset`: from the start for a partial resync, only after its
    /// first acknowledgement for a full copy (which it must load first).
    pub holds_acked: AtomicBool,
    /// What its append-only log holds fsynced (`REPLCONF ACK offset FACK offset`, Redis 7.2;
    /// 0 while it sends none), never past `ack_offset`. WAITAOF counts it.
    pub fack_offset: AtomicU64,
}

/// Replication ids. Changed together under the core lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub replid: String,
    /// The previous history's id, kept by a promoted replica so its siblings can continue.
    pub replid2: String,
    /// Offset up to which `replid2` is valid (-1: none).
    pub second_offset: i64,
}

/// What [`ReplState::read_history`] read.
#[derive(Debug, Clone)]
pub struct HistoryRead {
    pub bytes: Option<Vec<u8>>,
    /// The backlog's first and end offsets.
    pub start: u64,
    pub end: u64,
    pub history: u64,
    pub ids: Ids,
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
    pub abort: AtomicBool,
    pub state: Mutex<&'static str>,
    /// Writes wait while paused (ms deadline, 0 = not paused).
    pub writes_paused_until_ms: AtomicU64,
}

impl Default for FailoverState {
    fn default() -> Self {
        FailoverState {
            abort: AtomicBool::new(false),
            state: Mutex::new("no-failover"),
            writes_paused_until_ms: AtomicU64::new(0),
        }
    }
}

/// Counters for INFO.
#[derive(Debug, Default)]
pub struct Counters {
    pub sync_full: AtomicU64,
    pub sync_partial_ok: AtomicU64,
    pub sync_partial_err: AtomicU64,
    /// As a replica: sessions with the primary that failed (connect, auth, handshake, stream).
    pub link_failures: AtomicU64,
    /// As a replica: full copies refused because the primary was empty and we were not.
    pub empty_copies_refused: AtomicU64,
    /// As a replica: streams that could not be applied (each forced a full copy). Never happens
    /// unless the replica's data was changed behind the stream (a writable replica, a bug).
    pub stream_breaks: AtomicU64,
}

/// Write-strategy settings mirrored from config, read on every write.
#[derive(Debug)]
pub struct Settings {
    pub strategy_sync: AtomicBool,
    pub min_replicas_ack: AtomicU64,
    pub ack_timeout_ms: AtomicU64,
}

/// What the role machine holds under one lock.
#[derive(Debug)]
struct Core {
    role: Role,
    link: LinkState,
    ids: Ids,
    /// As a replica: the offset applied from our primary's stream.
    replica_offset: u64,
    /// As a replica: the stream before this offset overlaps the snapshot our data came from (see
    /// `snapshot`), where an effect may be older than what we hold.
    overlap_until: u64,
    /// A primary handing over to a replica (FAILOVER): writes pause until it ends.
    failing_over: bool,
}

/// Writers waiting until enough replicas acknowledged an offset.
#[derive(Debug)]
struct AckWaiter {
    id: u64,
    offset: u64,
    need: usize,
    waker: Waker,
}

#[derive(Debug)]
pub struct ReplState {
    core: Mutex<Core>,
    /// Mirrors `core.role` for the per-command read-only check.
    replica_flag: AtomicBool,
    /// Bumped on every role change: a link started under an older epoch stops.
    epoch: AtomicU64,
    /// Bumped when the stream starts a new history here (a full copy, a role change): links that
    /// serve our own replicas from the old history stop, and their replicas ask again.
    history: AtomicU64,
    backlog: Arc<Mutex<Backlog>>,
    /// The backlog as the keyspace's writes see it (see [`ReplState::effect_sink`]).
    sink: Arc<BacklogSink>,
    /// Set once a replica attached (or the append-only log started): from then on writes feed
    /// the backlog.
    active: AtomicBool,
    /// The node continues a replication history loaded from disk: replicas of its former self
    /// may come back and continue, so its backlog is never lean.
    resumed: AtomicBool,
    replicas: Mutex<Vec<Arc<ReplicaInfo>>>,
    ack_waiters: Mutex<Vec<AckWaiter>>,
    next_waiter: AtomicU64,
    /// Set by a link that found nothing to send and is about to sleep; the next append clears it
    /// and wakes the links, so a busy stream costs one wake-up per link sleep, not one per write.
    links_waiting: AtomicBool,
    link_wakers: Mutex<Vec<Waker>>,
    pub link_last_io_ms: AtomicU64,
    pub settings: Settings,
    /// This node's append-only log: on, and the stream offset it holds fsynced (set by the
    /// server's writer). A replica reports it to its primary as `FACK`.
    pub aof_on: AtomicBool,
    pub aof_fsynced: AtomicU64,
    pub counters: Counters,
    pub failover: FailoverState,
}

impl ReplState {
    pub fn new(replid: String) -> Self {
        let backlog = Backlog::new(BACKLOG_BYTES_DEFAULT, 0);
        let tail = backlog.tail_hint();
        let backlog = Arc::new(Mutex::new(backlog));
        ReplState {
            sink: Arc::new(BacklogSink {
                tail,
                backlog: backlog.clone(),
                on: AtomicBool::new(true),
            }),
            core: Mutex::new(Core {
                role: Role::Primary,
                link: LinkState::Down,
                ids: Ids {
                    replid,
                    replid2: "0".repeat(40),
                    second_offset: -1,
                },
                replica_offset: 0,
                overlap_until: 0,
                failing_over: false,
            }),
            replica_flag: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            history: AtomicU64::new(0),
            backlog,
            active: AtomicBool::new(false),
            resumed: AtomicBool::new(false),
            replicas: Mutex::default(),
            ack_waiters: Mutex::default(),
            next_waiter: AtomicU64::new(0),
            links_waiting: AtomicBool::new(false),
            link_wakers: Mutex::default(),
            link_last_io_ms: AtomicU64::new(0),
            settings: Settings {
                strategy_sync: AtomicBool::new(false),
                min_replicas_ack: AtomicU64::new(1),
                ack_timeout_ms: AtomicU64::new(1000),
            },
            aof_on: AtomicBool::new(false),
            aof_fsynced: AtomicU64::new(0),
            counters: Counters::default(),
            failover: FailoverState::default(),
        }
    }

    fn core(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().expect("replication core lock")
    }

    /// Where the keyspace's writes may append their effects at once, under their shard's lock
    /// (`shoal_keyspace::write_log`): the backlog, when its lock is free.
    pub fn effect_sink(&self) -> Arc<dyn shoal_keyspace::write_log::EffectSink> {
        self.sink.clone()
    }

    /// Lets writes append to the backlog at once, or makes them all go through their shards'
    /// queues (an active-active member encodes its writes from the queues).
    pub fn set_direct_effects(&self, on: bool) {
        self.sink.on.store(on, Relaxed);
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().expect("backlog lock")
    }

    // ---- reading ----

    pub fn is_replica(&self) -> bool {
        self.replica_flag.load(Relaxed)
    }

    pub fn role(&self) -> Role {
        self.core().role.clone()
    }

    pub fn link_state(&self) -> LinkState {
        self.core().link
    }

    pub fn ids(&self) -> Ids {
        self.core().ids.clone()
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Relaxed)
    }

    pub fn history(&self) -> u64 {
        self.history.load(Relaxed)
    }

    /// Whether writes feed the backlog (INFO `repl_backlog_active`).
    pub fn active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// As a replica, the offset applied from the primary's stream.
    pub fn replica_offset(&self) -> u64 {
        self.core().replica_offset
    }

    /// Offset of the stream: the backlog's end on a primary, what we applied on a replica.
    pub fn offset(&self) -> u64 {
        let core = self.core();
        match core.role {
            Role::Replica { .. } => core.replica_offset,
            Role::Primary => self.backlog().end_offset(),
        }
    }

    /// The end offset of this node's own stream (its backlog). Takes only the backlog's lock, so
    /// it may be called under a shard lock.
    pub fn stream_end(&self) -> u64 {
        self.backlog().end_offset()
    }

    /// (capacity, first byte offset, bytes held, end offset) of the backlog.
    pub fn backlog_info(&self) -> (usize, u64, usize, u64) {
        let b = self.backlog();
        (b.capacity(), b.start_offset(), b.len(), b.end_offset())
    }

    pub fn set_backlog_capacity(&self, bytes: usize) {
        self.backlog().set_capacity(bytes);
    }

    /// Up to `max` stream bytes from `offset`, and the stream's end; `None` if no longer held.
    pub fn read_backlog(&self, offset: u64, max: usize) -> (Option<Vec<u8>>, u64) {
        let b = self.backlog();
        (b.read(offset, max), b.end_offset())
    }

    /// Up to `max` stream bytes from `offset` (`None` if not held), with the history and ids
    /// they belong to, all read together: for a reader that must never take bytes of one
    /// history for another's (the append-only log). Every history change happens under the
    /// core lock, which this holds.
    pub fn read_history(&self, offset: u64, max: usize) -> HistoryRead {
        let mut bytes = Vec::new();
        let mut r = self.read_history_append(offset, max, &mut bytes);
        r.bytes = r.bytes.map(|_| bytes);
        r
    }

    /// As [`ReplState::read_history`], appended to `out` (the append-only log's writer reads
    /// every write this way, straight into its record); `bytes` is then `Some` of an empty
    /// vector when the offset is held (and `out` grew by what was read), `None` when not.
    pub fn read_history_append(&self, offset: u64, max: usize, out: &mut Vec<u8>) -> HistoryRead {
        let core = self.core();
        let b = self.backlog();
        let held = b.read_append(offset, max, out);
        HistoryRead {
            bytes: held.then(Vec::new),
            start: b.start_offset(),
            end: b.end_offset(),
            history: self.history.load(Relaxed),
            ids: core.ids.clone(),
        }
    }

    /// The append-only log's writer reads from `offset` next: the backlog keeps the bytes from
    /// there past its capacity (within `backlog::PINNED_EXTRA_BYTES_MAX`), so a small
    /// `repl-backlog-size` or a burst faster than the writer does not make the log fall out of it.
    /// `None` when the writer stops or cannot continue.
    pub fn pin_backlog(&self, offset: Option<u64>) {
        self.backlog().pin(offset);
    }

    /// Whether a `PSYNC replid offset` can continue from here (partial resynchronisation).
    pub fn can_continue(&self, replid: &str, offset: i64) -> bool {
        if offset < 0 {
            return false;
        }
        let core = self.core();
        let ids = &core.ids;
        let id_ok = replid == ids.replid || (replid == ids.replid2 && offset <= ids.second_offset);
        id_ok && self.backlog().holds(offset as u64)
    }

    pub fn strategy_sync(&self) -> bool {
        self.settings.strategy_sync.load(Relaxed)
    }

    // ---- transitions ----

    /// FAILOVER: a primary starts handing over to a replica. False if this node is a replica or a
    /// failover is already under way.
    pub fn begin_failover(&self) -> bool {
        let mut core = self.core();
        if core.role != Role::Primary || core.failing_over {
            return false;
        }
        core.failing_over = true;
        self.failover.abort.store(false, Relaxed);
        *self.failover.state.lock().expect("failover lock") = "waiting-for-sync";
        true
    }

    /// The failover ended: aborted (still a primary) or done (`become_replica` already ran).
    pub fn end_failover(&self) {
        let mut core = self.core();
        core.failing_over = false;
        self.failover.writes_paused_until_ms.store(0, Relaxed);
        *self.failover.state.lock().expect("failover lock") = "no-failover";
    }

    /// Whether a failover is under way.
    pub fn failing_over(&self) -> bool {
        self.core().failing_over
    }

    /// REPLICAOF host port: follow a primary. Returns the new epoch (the link must carry it).
    /// Replicas neither expire keys nor record writes (the primary's stream is the only writer).
    pub fn become_replica(&self, ks: &Keyspace, host: String, port: u16) -> u64 {
        let mut core = self.core();
        if core.role == Role::Primary {
            // A former primary holds everything up to its own stream's end: it asks to continue
            // there (and serves its own replicas from the same history).
            core.replica_offset = self.backlog().end_offset();
        }
        ks.set_expire_on_access(false);
        ks.set_recording(false);
        // A replica's backlog serves its own replicas, and its siblings once it is promoted.
        self.backlog().set_lean(false);
        // A failover ends here when its target took over (this node now follows it).
        core.failing_over = false;
        core.role = Role::Replica { host, port };
        core.link = LinkState::Connecting;
        self.replica_flag.store(true, Relaxed);
        self.history.fetch_add(1, Relaxed);
        let epoch = self.epoch.fetch_add(1, Relaxed) + 1;
        drop(core);
        // Links serving our own replicas end (history changed); waiters re-check.
        self.wake_links();
        self.wake_ack_waiters(true);
        epoch
    }

    /// REPLICAOF NO ONE (or a FAILOVER's target): become a primary with a new replication id; the
    /// old one is kept as `replid2`, valid up to our offset, so siblings that followed the same
    /// primary continue without a full copy. Returns false if already a primary.
    pub fn promote(&self, ks: &Keyspace, new_replid: String) -> bool {
        let mut core = self.core();
        if core.role == Role::Primary {
            return false;
        }
        assert!(!core.failing_over, "only a primary fails over");
        assert_ne!(new_replid, core.ids.replid, "a promotion starts a new id");
        let offset = core.replica_offset;
        let old = std::mem::replace(&mut core.ids.replid, new_replid);
        core.ids.replid2 = old;
        core.ids.second_offset = offset as i64;
        {
            let mut b = self.backlog();
            if b.end_offset() != offset {
                b.reset(offset);
            }
            assert_eq!(
                b.end_offset(),
                offset,
                "a promoted backlog ends at its offset"
            );
            // Our own replicas (chained replication) still stand on the old id: their links end,
            // and they ask again with it and their offset, which `replid2` continues with
            // `+CONTINUE <new id>`, so they adopt the new history without a full copy (as Redis
            // disconnects its sub-replicas on promotion). Bumped under the backlog lock: a link
            // that read a byte written after the promotion sees the new history (`Sender::poll`).
            self.history.fetch_add(1, Relaxed);
        }
        core.role = Role::Primary;
        core.link = LinkState::Down;
        self.replica_flag.store(false, Relaxed);
        self.epoch.fetch_add(1, Relaxed);
        drop(core);
        self.wake_links();
        ks.set_expire_on_access(true);
        // Keep feeding the backlog so former siblings can attach and continue.
        self.start_recording(ks);
        true
    }

    /// At start-up, before any link runs: continue the history a snapshot on disk belongs to
    /// (`offset`, the stream overlapping the data up to `overlap_until`).
    pub fn resume(&self, replid: &str, offset: u64, overlap_until: u64) {
        let mut core = self.core();
        core.ids.replid = replid.to_string();
        core.replica_offset = offset;
        core.overlap_until = overlap_until;
        self.resumed.store(true, Relaxed);
        let mut b = self.backlog();
        b.set_lean(false);
        b.reset(offset);
    }

    /// At start-up, from an append-only log that did not end cleanly: the data is `replid`'s
    /// history up to `offset`, but the node may have streamed bytes past it that the log lost, so
    /// it keeps its own fresh id and continues the old one only up to `offset` (as a promotion
    /// does): a replica at or before `offset` continues, one past it gets a full copy.
    pub fn resume_unclean(&self, replid: &str, offset: u64, overlap_until: u64) {
        let mut core = self.core();
        assert_ne!(
            core.ids.replid, replid,
            "an unclean restart starts a new id"
        );
        core.ids.replid2 = replid.to_string();
        core.ids.second_offset = offset as i64;
        core.replica_offset = offset;
        core.overlap_until = overlap_until;
        self.resumed.store(true, Relaxed);
        let mut b = self.backlog();
        b.set_lean(false);
        b.reset(offset);
    }

    /// Moves the link to our primary to `next`, if `epoch` is still current. Returns false for a
    /// stale link (the role changed under it: it must stop).
    pub fn link_to(&self, epoch: u64, next: LinkState) -> bool {
        let mut core = self.core();
        if self.epoch.load(Relaxed) != epoch || core.role == Role::Primary {
            return false;
        }
        assert!(
            core.link.may_become(next) || core.link == next,
            "link state {:?} cannot become {:?}",
            core.link,
            next
        );
        core.link = next;
        true
    }

    /// `+FULLRESYNC`: the link starts a full copy, and this node's data is about to be replaced.
    /// Until the copy is loaded the node belongs to no history: a snapshot saved meanwhile holds
    /// part of the data, and must make a restart ask for a full copy, not continue from the old
    /// offset as if everything before it were there.
    pub fn begin_full_sync(&self, epoch: u64) -> bool {
        let mut core = self.core();
        if self.epoch.load(Relaxed) != epoch {
            return false;
        }
        assert!(
            core.link.may_become(LinkState::Syncing),
            "link state {:?} cannot become Syncing",
            core.link
        );
        core.link = LinkState::Syncing;
        self.forget_history(&mut core);
        drop(core);
        self.wake_links();
        true
    }

    /// This node's data belongs to no history (a full copy starts, or the stream broke): no ids,
    /// offset 0, an empty backlog, and links serving our replicas stop (history changed).
    fn forget_history(&self, core: &mut Core) {
        core.ids = Ids {
            replid: "0".repeat(40),
            replid2: "0".repeat(40),
            second_offset: -1,
        };
        core.replica_offset = 0;
        core.overlap_until = 0;
        self.backlog().reset(0);
        self.history.fetch_add(1, Relaxed);
    }

    /// The stream could not be applied (a delta that does not follow the key's version, a frame
    /// that does not decode): our data belongs to no offset of any history now. Forget the
    /// history, so the next `PSYNC` asks for a full copy instead of continuing (and failing)
    /// again, and so replicas of ours stop following it.
    pub fn stream_broken(&self, epoch: u64) {
        let mut core = self.core();
        if self.epoch.load(Relaxed) != epoch {
            return;
        }
        self.forget_history(&mut core);
        self.counters.stream_breaks.fetch_add(1, Relaxed);
        drop(core);
        self.wake_links();
    }

    /// Where the stream stops overlapping the snapshot our data came from.
    pub fn overlap_until(&self) -> u64 {
        self.core().overlap_until
    }

    /// A full copy was loaded: a new history at `offset` under `replid`, the stream overlapping
    /// the copy up to `overlap_until`.
    pub fn full_sync_done(
        &self,
        epoch: u64,
        replid: &str,
        offset: u64,
        overlap_until: u64,
    ) -> bool {
        let mut core = self.core();
        if self.epoch.load(Relaxed) != epoch {
            return false;
        }
        assert_eq!(core.link, LinkState::Syncing, "a full copy ends a sync");
        core.ids = Ids {
            replid: replid.to_string(),
            replid2: "0".repeat(40),
            second_offset: -1,
        };
        core.replica_offset = offset;
        core.overlap_until = overlap_until.max(offset);
        self.backlog().reset(offset);
        core.link = LinkState::Connected;
        self.history.fetch_add(1, Relaxed);
        self.counters.sync_full.fetch_add(1, Relaxed);
        drop(core);
        self.wake_links();
        true
    }

    /// The primary accepted `PSYNC` with `+CONTINUE [id]`: if its id changed (it was promoted),
    /// ours becomes our second id.
    pub fn continued(&self, epoch: u64, new_replid: &str) -> bool {
        let mut core = self.core();
        if self.epoch.load(Relaxed) != epoch {
            return false;
        }
        let id_changed = !new_replid.is_empty() && new_replid != core.ids.replid;
        if id_changed {
            let offset = core.replica_offset;
            let old = std::mem::replace(&mut core.ids.replid, new_replid.to_string());
            core.ids.replid2 = old;
            core.ids.second_offset = offset as i64;
            // Our own replicas learn the new id the same way: their links end, they ask again.
            let _backlog = self.backlog();
            self.history.fetch_add(1, Relaxed);
        }
        core.link = LinkState::Connected;
        self.counters.sync_partial_ok.fetch_add(1, Relaxed);
        drop(core);
        if id_changed {
            self.wake_links();
        }
        true
    }

    /// As a replica: `bytes` of the primary's stream were applied. They join our backlog (at the
    /// primary's offsets) and our offset moves past them. Returns the new offset.
    pub fn applied(&self, epoch: u64, bytes: &[u8]) -> Option<u64> {
        let mut core = self.core();
        if self.epoch.load(Relaxed) != epoch {
            return None;
        }
        let before = core.replica_offset;
        let end = {
            let mut b = self.backlog();
            assert_eq!(
                b.end_offset(),
                before,
                "a replica's backlog ends at its offset"
            );
            b.append(bytes);
            b.end_offset()
        };
        core.replica_offset = end;
        assert!(end >= before, "offsets never go backwards");
        drop(core);
        // Our own replicas (chained replication) are fed from this backlog.
        if self.links_waiting.load(Relaxed) {
            fence(SeqCst);
            self.wake_links();
        }
        Some(end)
    }

    /// From now on writes feed the backlog: a replica attached (or may, after a promotion).
    pub fn start_recording(&self, ks: &Keyspace) {
        if self.is_replica() {
            return;
        }
        {
            // Under the backlog lock, so `start_recording_for_log` sees either both or neither.
            let mut b = self.backlog();
            b.set_lean(false);
            self.active.store(true, Relaxed);
        }
        ks.set_recording(true);
    }

    /// From now on writes feed the backlog for the append-only log's writer. If nothing else
    /// reads it yet (no replica attached since start, no promotion or migration, no history
    /// continued from disk), the backlog is lean (`Backlog::set_lean`) until one does.
    pub fn start_recording_for_log(&self, ks: &Keyspace) {
        if self.is_replica() {
            return;
        }
        {
            let mut b = self.backlog();
            if !self.active.load(Relaxed) && !self.resumed.load(Relaxed) {
                b.set_lean(true);
            }
            self.active.store(true, Relaxed);
        }
        ks.set_recording(true);
    }

    /// Whether the backlog is lean (only the append-only log reads it).
    pub fn backlog_lean(&self) -> bool {
        self.backlog().is_lean()
    }

    /// Appends encoded effects (a primary) and wakes the links; returns the new end offset.
    pub fn append(&self, bytes: &[u8]) -> u64 {
        let end = self.append_quiet(bytes);
        self.notify_appended();
        end
    }

    /// Appends without waking the links: for a caller that holds a shard lock and should not
    /// wake tasks under it. It must call [`ReplState::notify_appended`] afterwards.
    pub fn append_quiet(&self, bytes: &[u8]) -> u64 {
        let mut b = self.backlog();
        b.append(bytes);
        b.end_offset()
    }

    /// [`ReplState::append_quiet`] of several runs of bytes, in order, under one hold of the
    /// backlog's lock.
    pub fn append_quiet_parts(&self, parts: &[&[u8]]) -> u64 {
        let mut b = self.backlog();
        for p in parts {
            b.append(p);
        }
        b.end_offset()
    }

    /// Wakes links waiting for bytes after `append_quiet`.
    pub fn notify_appended(&self) {
        // Pairs with the fence in `link_will_wait`: either the link sees these bytes, or this
        // sees its flag.
        fence(SeqCst);
        if self.links_waiting.load(Relaxed) {
            self.wake_links();
        }
    }

    fn wake_links(&self) {
        if self.links_waiting.swap(false, Relaxed) {
            let wakers = std::mem::take(&mut *self.link_wakers.lock().expect("link wakers lock"));
            for w in wakers {
                w.wake();
            }
        }
    }

    /// A link found nothing to send: registers `waker` for the next append. After this it must look
    /// at the backlog's end once more before it sleeps.
    pub fn link_will_wait(&self, waker: &Waker) {
        {
            let mut w = self.link_wakers.lock().expect("link wakers lock");
            if !w.iter().any(|x| x.will_wake(waker)) {
                w.push(waker.clone());
            }
        }
        self.links_waiting.store(true, Relaxed);
        fence(SeqCst);
    }

    /// Test helper: a full copy from `Handshake` to `Connected` in one call.
    #[cfg(test)]
    fn full_sync_done_after(&self, epoch: u64, replid: &str, offset: u64) -> bool {
        self.begin_full_sync(epoch) && self.full_sync_done(epoch, replid, offset, offset)
    }

    // ---- replicas and acknowledgements ----

    pub fn attach(&self, info: Arc<ReplicaInfo>) {
        self.replicas.lock().expect("replicas lock").push(info);
    }

    pub fn detach(&self, info: &Arc<ReplicaInfo>) {
        self.replicas
            .lock()
            .expect("replicas lock")
            .retain(|r| !Arc::ptr_eq(r, info));
        self.wake_ack_waiters(true);
    }

    pub fn replicas(&self) -> Vec<Arc<ReplicaInfo>> {
        self.replicas.lock().expect("replicas lock").clone()
    }

    pub fn replica_count(&self) -> usize {
        self.replicas.lock().expect("replicas lock").len()
    }

    /// A replica acknowledged `offset`. An acknowledgement beyond what was sent is a protocol
    /// violation (returns false: the link closes), never a state change.
    pub fn record_ack(&self, info: &ReplicaInfo, offset: u64, now_ms: u64) -> bool {
        if offset > info.sent_offset.load(Relaxed) {
            return false;
        }
        let before = info.ack_offset.fetch_max(offset, Relaxed);
        info.last_ack_ms.store(now_ms, Relaxed);
        let first = !info.holds_acked.swap(true, Relaxed);
        if offset > before || first {
            self.wake_ack_waiters(false);
        }
        true
    }

    /// Number of good replicas (`min-replicas-to-write`): holding what they acknowledged, and
    /// heard from within `max_lag_s` seconds (counted in whole seconds, as Redis).
    pub fn good_replicas(&self, now_ms: u64, max_lag_s: u64) -> usize {
        let now_s = now_ms / 1000;
        self.replicas
            .lock()
            .expect("replicas lock")
            .iter()
            .filter(|r| {
                r.holds_acked.load(Relaxed)
                    && now_s.saturating_sub(r.last_ack_ms.load(Relaxed) / 1000) <= max_lag_s
            })
            .count()
    }

    /// Number of replicas whose append-only log holds `offset` fsynced (WAITAOF).
    pub fn facked(&self, offset: u64) -> usize {
        self.replicas
            .lock()
            .expect("replicas lock")
            .iter()
            .filter(|r| r.holds_acked.load(Relaxed) && r.fack_offset.load(Relaxed) >= offset)
            .count()
    }

    /// Number of replicas that acknowledged at least `offset`.
    pub fn acked(&self, offset: u64) -> usize {
        self.replicas
            .lock()
            .expect("replicas lock")
            .iter()
            .filter(|r| r.holds_acked.load(Relaxed) && r.ack_offset.load(Relaxed) >= offset)
            .count()
    }

    /// Polls whether `need` replicas acknowledged `offset`; if not, registers `waker` (under the
    /// waiter `id`, see [`ReplState::new_ack_waiter`]) to be woken when they have.
    pub fn poll_acked(&self, id: u64, offset: u64, need: usize, waker: &Waker) -> bool {
        let mut list = self.ack_waiters.lock().expect("ack waiters lock");
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
        self.next_waiter.fetch_add(1, Relaxed)
    }

    /// Forgets a waiter (its wait ended or was dropped).
    pub fn drop_ack_waiter(&self, id: u64) {
        self.ack_waiters
            .lock()
            .expect("ack waiters lock")
            .retain(|w| w.id != id);
    }

    /// After an ack offset grew, or the replica set changed: wakes the waiters now satisfied (all
    /// of them when `all`, so they re-check, e.g. after a replica left).
    pub fn wake_ack_waiters(&self, all: bool) {
        let mut list = self.ack_waiters.lock().expect("ack waiters lock");
        if list.is_empty() {
            return;
        }
        let acks: Vec<u64> = self
            .replicas
            .lock()
            .expect("replicas lock")
            .iter()
            .filter(|r| r.holds_acked.load(Relaxed))
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
}

/// What becomes of a `sync`-strategy batch whose last write is at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Enough replicas acknowledged it: the replies go out as they are.
    Durable,
    /// Keep waiting (until acked or the deadline).
    Wait,
    /// The deadline passed with `have` of `need`: each write's reply becomes `-NOTDURABLE`.
    NotDurable { have: usize, need: usize },
}

/// The sync strategy's decision, the same for the server and the simulator.
pub fn settle(repl: &ReplState, offset: u64, need: usize, deadline_ms: u64, now_ms: u64) -> Settle {
    let have = repl.acked(offset);
    if have >= need {
        Settle::Durable
    } else if now_ms >= deadline_ms {
        Settle::NotDurable { have, need }
    } else {
        Settle::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts its wake-ups.
    struct Counter(AtomicU64);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    fn replica(repl: &ReplState, id: u64) -> Arc<ReplicaInfo> {
        let r = Arc::new(ReplicaInfo {
            id,
            ip: "127.0.0.1".into(),
            listening_port: 0.into(),
            ack_offset: 0.into(),
            last_ack_ms: 0.into(),
            sent_offset: 1000.into(),
            holds_acked: true.into(),
            fack_offset: 0.into(),
        });
        repl.attach(r.clone());
        r
    }

    /// The stream's bytes from `from` to its end.
    fn stream_from(repl: &ReplState, from: u64) -> Vec<u8> {
        repl.read_backlog(from, usize::MAX).0.expect("held")
    }

    #[test]
    fn a_write_on_an_empty_queue_reaches_the_backlog_at_once_and_every_other_is_queued_in_order() {
        use shoal_keyspace::{Entry, ShardGuard, StringWrite, key_slot, write_log};
        let repl = ReplState::new("0".repeat(40));
        let ks = Keyspace::new(1, 4, 1);
        ks.set_effect_sink(repl.effect_sink());
        repl.start_recording(&ks);
        let put = |value: &[u8], version| {
            let mut out = Vec::new();
            crate::stream::encode_put(&mut out, 0, &Entry::new_string(b"k", value, None, version));
            out
        };
        let slot = key_slot(b"k");
        let write = |g: &mut ShardGuard<'_>, value: &[u8], version| {
            let w = StringWrite {
                key: b"k",
                value,
                expire_ms: None,
                version,
            };
            g.insert_string(0, slot, w, 0, crate::stream::encode_put);
        };
        // What the request path does after a command: the queue's bytes, appended under the lock.
        let drain = |g: &mut ShardGuard<'_>| {
            let items = g.take_pending();
            let mut out = Vec::new();
            crate::stream::encode_pending(&mut out, g, &items, &ks.hlc, 0);
            g.recycle_pending(items);
            repl.append(&out);
        };
        let mut g = ks.lock(ks.shard_of(slot));

        // Not allowed by the caller: queued.
        write(&mut g, b"a", 1);
        assert_eq!(repl.stream_end(), 0);
        drain(&mut g);
        assert_eq!(stream_from(&repl, 0), put(b"a", 1));
        assert_eq!(write_log::take_direct_end(), None);

        // Allowed, the queue empty: in the backlog before the lock is released, nothing queued.
        let before = repl.stream_end();
        {
            let _direct = write_log::direct_scope();
            write(&mut g, b"b", 2);
        }
        assert_eq!(stream_from(&repl, before), put(b"b", 2));
        assert_eq!(write_log::take_direct_end(), Some(repl.stream_end()));
        assert!(g.take_pending().is_empty());
        assert_eq!(write_log::take_direct_end(), None, "taken once");

        // Allowed, but the shard's queue holds an earlier write: queued behind it, in order.
        let before = repl.stream_end();
        write(&mut g, b"c", 3);
        {
            let _direct = write_log::direct_scope();
            write(&mut g, b"d", 4);
        }
        assert_eq!(repl.stream_end(), before);
        assert_eq!(write_log::take_direct_end(), None);
        drain(&mut g);
        assert_eq!(
            stream_from(&repl, before),
            [put(b"c", 3), put(b"d", 4)].concat()
        );

        // Allowed, but the backlog's lock is taken: queued (never waited for under a shard lock).
        let before = repl.stream_end();
        {
            let _direct = write_log::direct_scope();
            let held = repl.backlog();
            write(&mut g, b"e", 5);
            drop(held);
        }
        assert_eq!(repl.stream_end(), before);
        drain(&mut g);
        assert_eq!(stream_from(&repl, before), put(b"e", 5));

        // Turned off (an active-active member) or a slot tracked for a migration: queued.
        repl.set_direct_effects(false);
        {
            let _direct = write_log::direct_scope();
            write(&mut g, b"f", 6);
        }
        assert_eq!(g.take_pending().len(), 1);
        g.recycle_pending(Vec::new());
        repl.set_direct_effects(true);
        g.track_slot(slot, true);
        {
            let _direct = write_log::direct_scope();
            write(&mut g, b"g", 7);
        }
        assert_eq!(write_log::take_direct_end(), None);
        assert_eq!(
            g.take_tracked().keys,
            vec![b"k".to_vec().into_boxed_slice()]
        );
    }

    #[test]
    fn an_ack_wakes_only_the_waiters_it_satisfies() {
        let repl = ReplState::new("0".repeat(40));
        let (a, b) = (replica(&repl, 1), replica(&repl, 2));
        let counters: Vec<_> = (0..3)
            .map(|_| Arc::new(Counter(AtomicU64::new(0))))
            .collect();
        let wakers: Vec<Waker> = counters.iter().map(|c| Waker::from(c.clone())).collect();
        let ids: Vec<u64> = (0..3).map(|_| repl.new_ack_waiter()).collect();
        // Waiter 0: one replica at 100; waiter 1: one replica at 200; waiter 2: two replicas at 100.
        let wants = [(100, 1), (200, 1), (100, 2)];
        for i in 0..3 {
            assert!(!repl.poll_acked(ids[i], wants[i].0, wants[i].1, &wakers[i]));
        }
        assert!(repl.record_ack(&a, 150, 1));
        let woken = |i: usize| counters[i].0.load(Relaxed);
        assert_eq!((woken(0), woken(1), woken(2)), (1, 0, 0));
        assert!(repl.poll_acked(ids[0], 100, 1, &wakers[0]));
        assert!(repl.record_ack(&b, 120, 1));
        assert_eq!((woken(0), woken(1), woken(2)), (1, 0, 1));
        assert!(repl.poll_acked(ids[2], 100, 2, &wakers[2]));
        assert!(!repl.poll_acked(ids[1], 200, 1, &wakers[1]));
        // A replica leaving wakes everyone still waiting, so they re-check; dropping forgets.
        repl.detach(&b);
        assert_eq!(woken(1), 1);
        repl.drop_ack_waiter(ids[1]);
        assert!(repl.ack_waiters.lock().unwrap().is_empty());
        // An ack beyond what was sent is refused and changes nothing.
        assert!(!repl.record_ack(&a, 5000, 2));
        assert_eq!(a.ack_offset.load(Relaxed), 150);
    }

    #[test]
    fn the_backlog_is_lean_only_while_the_log_alone_reads_it() {
        let ks = Keyspace::new(1, 4, 1);
        // A fresh node whose log starts: lean, until a replica's link starts recording too.
        let repl = ReplState::new("0".repeat(40));
        repl.start_recording_for_log(&ks);
        assert!(ks.recording() && repl.active() && repl.backlog_lean());
        repl.start_recording(&ks);
        assert!(!repl.backlog_lean());
        // Once full it stays full when the log starts again (CONFIG SET appendonly).
        repl.start_recording_for_log(&ks);
        assert!(!repl.backlog_lean());
        // A node that continues a history from disk keeps it whole for replicas coming back.
        let repl = ReplState::new("0".repeat(40));
        repl.resume(&"a".repeat(40), 500, 500);
        repl.start_recording_for_log(&ks);
        assert!(!repl.backlog_lean());
        // A lean primary that becomes a replica keeps its primary's stream whole.
        let repl = ReplState::new("0".repeat(40));
        repl.start_recording_for_log(&ks);
        repl.become_replica(&ks, "127.0.0.1".into(), 6379);
        assert!(!repl.backlog_lean());
    }

    #[test]
    fn an_append_wakes_links_only_when_one_asked() {
        let repl = ReplState::new("0".repeat(40));
        let c = Arc::new(Counter(AtomicU64::new(0)));
        let w = Waker::from(c.clone());
        repl.append(b"a");
        assert_eq!(c.0.load(Relaxed), 0);
        repl.link_will_wait(&w);
        repl.link_will_wait(&w);
        repl.append(b"b");
        repl.append(b"c");
        assert_eq!(c.0.load(Relaxed), 1);
    }

    #[test]
    fn promotion_keeps_the_old_id_and_offsets_only_grow() {
        let ks = Keyspace::new(1, 1, 1);
        let repl = ReplState::new("a".repeat(40));
        repl.append(b"12345");
        let e = repl.become_replica(&ks, "h".into(), 1);
        assert!(repl.is_replica());
        assert_eq!(
            repl.replica_offset(),
            5,
            "a former primary continues at its end"
        );
        assert!(repl.link_to(e, LinkState::Handshake));
        assert!(repl.link_to(e, LinkState::Syncing));
        assert!(repl.full_sync_done(e, &"b".repeat(40), 100, 100));
        assert_eq!(repl.applied(e, b"xyz"), Some(103));
        assert!(
            !repl.link_to(e - 1, LinkState::Down),
            "a stale link changes nothing"
        );
        assert!(repl.promote(&ks, "c".repeat(40)));
        let ids = repl.ids();
        assert_eq!(ids.replid2, "b".repeat(40));
        assert_eq!(ids.second_offset, 103);
        assert!(repl.can_continue(&"b".repeat(40), 103));
        assert!(!repl.can_continue(&"b".repeat(40), 104));
        assert!(ks.recording());
        assert_eq!(repl.offset(), 103);
    }

    #[test]
    fn a_node_loading_a_full_copy_belongs_to_no_history() {
        let ks = Keyspace::new(1, 1, 1);
        let repl = ReplState::new("a".repeat(40));
        let e = repl.become_replica(&ks, "h".into(), 1);
        assert!(repl.link_to(e, LinkState::Handshake));
        assert!(repl.full_sync_done_after(e, &"b".repeat(40), 50));
        assert!(repl.applied(e, b"abc").is_some());
        // A second full copy: until it is loaded, a snapshot of this node must not claim the old
        // history (a restart would then continue from an offset whose data was flushed).
        assert!(repl.link_to(e, LinkState::Down));
        assert!(repl.link_to(e, LinkState::Connecting));
        assert!(repl.link_to(e, LinkState::Handshake));
        assert!(repl.begin_full_sync(e));
        assert_eq!(repl.ids().replid, "0".repeat(40));
        assert_eq!(repl.replica_offset(), 0);
        assert!(!repl.can_continue(&"b".repeat(40), 53));
    }

    #[test]
    #[should_panic(expected = "cannot become")]
    fn a_link_cannot_skip_the_handshake() {
        let ks = Keyspace::new(1, 1, 1);
        let repl = ReplState::new("a".repeat(40));
        let e = repl.become_replica(&ks, "h".into(), 1);
        repl.link_to(e, LinkState::Connected);
    }

    #[test]
    fn settle_decides_by_acks_then_deadline() {
        let repl = ReplState::new("0".repeat(40));
        let a = replica(&repl, 1);
        assert_eq!(settle(&repl, 10, 1, 100, 50), Settle::Wait);
        assert_eq!(
            settle(&repl, 10, 1, 100, 100),
            Settle::NotDurable { have: 0, need: 1 }
        );
        repl.record_ack(&a, 10, 60);
        assert_eq!(settle(&repl, 10, 1, 100, 200), Settle::Durable);
    }
}

//! Atomic slot migration, the command side: Valkey 9's surface (`CLUSTER MIGRATESLOTS`,
//! `GETSLOTMIGRATIONS`, `CANCELSLOTMIGRATIONS`), the target's half of the transfer (`CLUSTER
//! SYNCSLOTS BEGIN | LOAD | DEL | FLUSH | FINISH | ABORT`, sent by the source on one connection),
//! the slots whose writes are paused while ownership flips, and the jobs both sides list.
//!
//! How a move goes (the source drives it, `server/src/slot_migration.rs`): the source keeps
//! serving the slots and notes every key written in them (`Shard::track_slot`) while it sends
//! their keys (records of the snapshot format) to the target, then sends the keys written
//! meanwhile again, as they are now, until few are left. Then it pauses the slots (requests for them
//! wait, they do not fail; reads too, so that no redirect bounces between two nodes that briefly
//! disagree about the owner), waits for the commands already running, sends the last keys and
//! `FINISH` with its config epoch. The target proposes `Change::MoveSlots` (passes only if the
//! source still owns every slot at that epoch) and answers once it applied it; the source
//! then lifts the pause, and the requests that waited are redirected with `-MOVED`. Until the flip
//! the source owns the slots and serves everything; after it, the target does: one owner at
//! every committed configuration, and clients see redirects only.
//!
//! What the target receives for slots it does not own yet is invisible to clients (routing sends
//! them to the owner). A failed import deletes it; an import whose `FINISH` outcome is not known
//! (the proposal timed out) keeps it until a configuration settles it ([`resolve_imports`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, RwLock};

use shoal_cluster::{Change, Config, NodeId, SLOTS, SlotRange, key_slot, valid_node_id};

use crate::args::ERR_SYNTAX;
use crate::cluster::cluster;
use crate::error::ReplyError;
use crate::state::{Action, Client, ServerState};
use crate::{Args, CmdResult, Ctx, err};

/// Finished jobs kept for `CLUSTER GETSLOTMIGRATIONS` (Valkey's
/// `cluster-slot-migration-log-max-len`); running ones are always listed.
pub const MIGRATION_LOG_MAX: usize = 64;
/// Longest a request for a paused slot waits before it is answered `-TRYAGAIN` (a pause normally
/// lasts milliseconds; this bounds it if a move cannot settle, e.g. without a Raft majority).
pub const PAUSE_WAIT_MAX_MS: u64 = 10_000;

/// Slots whose requests wait (the flip of an atomic move is under way). Reading the count is the
/// only cost on the request path while nothing is paused.
#[derive(Debug)]
pub struct PausedSlots {
    count: AtomicUsize,
    bits: RwLock<Vec<u64>>,
}

impl Default for PausedSlots {
    fn default() -> Self {
        PausedSlots {
            count: AtomicUsize::new(0),
            bits: RwLock::new(vec![0; SLOTS / 64]),
        }
    }
}

impl PausedSlots {
    /// Whether any slot is paused.
    pub fn any(&self) -> bool {
        self.count.load(Acquire) != 0
    }

    pub fn contains(&self, slot: u16) -> bool {
        let bits = self.bits.read().expect("paused slots lock");
        bits[slot as usize / 64] & (1 << (slot % 64)) != 0
    }

    /// Pauses (or resumes) requests for the slots of `ranges`.
    pub fn set(&self, ranges: &[SlotRange], on: bool) {
        let mut bits = self.bits.write().expect("paused slots lock");
        for s in ranges.iter().flat_map(|r| r.iter()) {
            let (w, b) = (s as usize / 64, 1u64 << (s % 64));
            let was = bits[w] & b != 0;
            if on && !was {
                bits[w] |= b;
                self.count.fetch_add(1, AcqRel);
            } else if !on && was {
                bits[w] &= !b;
                self.count.fetch_sub(1, AcqRel);
            }
        }
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Copying keys and the writes made meanwhile.
    Running,
    /// Writes are paused and the flip is being committed (on the target: `FINISH` was received;
    /// an import stays here while the outcome of its proposal is unknown).
    Pausing,
    Success,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Pausing => "pausing",
            JobState::Success => "success",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn active(self) -> bool {
        matches!(self, JobState::Running | JobState::Pausing)
    }
}

/// One migration as this node takes part in it: an export (this node is the source) or an import.
#[derive(Debug)]
pub struct Job {
    /// 40 hex characters, the same on both sides.
    pub name: String,
    pub export: bool,
    pub ranges: Vec<SlotRange>,
    pub source: NodeId,
    pub target: NodeId,
    pub created_ms: u64,
    status: Mutex<(JobState, String)>,
    pub updated_ms: AtomicU64,
    /// Keys sent (export) or received (import), the writes sent again included.
    pub keys_sent: AtomicU64,
    /// Keys the slots held when the copy began (export).
    pub keys_total: AtomicU64,
    /// How long writes were paused for the flip, in microseconds.
    pub pause_us: AtomicU64,
    /// `CLUSTER CANCELSLOTMIGRATIONS` asked to stop (honoured until writes are paused).
    pub cancel: AtomicBool,
    /// The source's config epoch the move is conditioned on (import, from `FINISH`).
    pub from_epoch: AtomicU64,
}

impl Job {
    pub fn new(
        name: String,
        export: bool,
        ranges: Vec<SlotRange>,
        source: NodeId,
        target: NodeId,
        now_ms: u64,
    ) -> Job {
        Job {
            name,
            export,
            ranges,
            source,
            target,
            created_ms: now_ms,
            status: Mutex::new((JobState::Running, String::new())),
            updated_ms: AtomicU64::new(now_ms),
            keys_sent: AtomicU64::new(0),
            keys_total: AtomicU64::new(0),
            pause_us: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            from_epoch: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> JobState {
        self.status.lock().expect("job lock").0
    }

    pub fn message(&self) -> String {
        self.status.lock().expect("job lock").1.clone()
    }

    /// Moves the job on. A finished job stays finished (the first outcome is the one reported).
    pub fn set(&self, state: JobState, message: impl Into<String>, now_ms: u64) -> bool {
        let mut st = self.status.lock().expect("job lock");
        if !st.0.active() {
            return false;
        }
        *st = (state, message.into());
        self.updated_ms.store(now_ms, Relaxed);
        true
    }

    /// `0-99 200-299`, as Valkey lists a job's slots.
    pub fn ranges_text(&self) -> String {
        ranges_text(&self.ranges)
    }

    fn overlaps(&self, ranges: &[SlotRange]) -> bool {
        self.ranges
            .iter()
            .any(|a| ranges.iter().any(|b| a.start <= b.end && b.start <= a.end))
    }
}

pub fn ranges_text(ranges: &[SlotRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The jobs of this node, newest last.
#[derive(Debug, Default)]
pub struct Migrations {
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

impl Migrations {
    /// Registers a job unless an active one already moves one of its slots.
    fn add(&self, job: Arc<Job>) -> Result<(), ReplyError> {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        if let Some(other) = jobs
            .iter()
            .find(|j| j.state().active() && j.overlaps(&job.ranges))
        {
            return Err(err!(
                "Slots {} are already being migrated by job {}",
                other.ranges_text(),
                other.name
            ));
        }
        jobs.push_back(job);
        // Forget the oldest finished jobs past the log's length.
        while jobs.len() > MIGRATION_LOG_MAX {
            match jobs.iter().position(|j| !j.state().active()) {
                Some(i) => drop(jobs.remove(i)),
                None => break,
            }
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<Arc<Job>> {
        self.jobs
            .lock()
            .expect("jobs lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Whether an active job moves any slot of `ranges`.
    pub fn busy(&self, ranges: &[SlotRange]) -> bool {
        self.jobs
            .lock()
            .expect("jobs lock")
            .iter()
            .any(|j| j.state().active() && j.overlaps(ranges))
    }
}

/// Slot ranges `start end [start end ...]` from `args[i..]` up to a word that is not a slot.
fn parse_ranges(args: &Args<'_>, i: &mut usize) -> Result<Vec<SlotRange>, ReplyError> {
    let mut out = Vec::new();
    while *i + 1 < args.len() {
        let (Some(a), Some(b)) = (
            crate::args::parse_i64(args.get(*i)),
            crate::args::parse_i64(args.get(*i + 1)),
        ) else {
            break;
        };
        let slot = |v: i64| {
            (0..SLOTS as i64)
                .contains(&v)
                .then_some(v as u16)
                .ok_or(ReplyError::err_static("Invalid or out of range slot"))
        };
        let (start, end) = (slot(a)?, slot(b)?);
        if start > end {
            return Err(err!(
                "start slot number {start} is greater than end slot number {end}"
            ));
        }
        out.push(SlotRange { start, end });
        *i += 2;
    }
    if out.is_empty() {
        return Err(ERR_SYNTAX);
    }
    Ok(out)
}

fn check_no_overlap(ranges: &[SlotRange]) -> Result<(), ReplyError> {
    let mut seen = vec![false; SLOTS];
    for s in ranges.iter().flat_map(|r| r.iter()) {
        if std::mem::replace(&mut seen[s as usize], true) {
            return Err(err!("Slot {s} specified multiple times"));
        }
    }
    Ok(())
}

/// `CLUSTER MIGRATESLOTS SLOTSRANGE start end [start end ...] NODE id [SLOTSRANGE ... NODE id]`
/// (on the source): one job per `NODE`, started in the background; `+OK` once all are started,
/// or an error and none is.
pub fn migrateslots(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    let mut blocks: Vec<(Vec<SlotRange>, NodeId)> = Vec::new();
    let mut i = 2;
    while i < args.len() {
        if !args.get(i).eq_ignore_ascii_case(b"SLOTSRANGE") {
            return Err(ERR_SYNTAX);
        }
        i += 1;
        let ranges = parse_ranges(args, &mut i)?;
        if i + 1 >= args.len() || !args.get(i).eq_ignore_ascii_case(b"NODE") {
            return Err(ERR_SYNTAX);
        }
        let id = String::from_utf8_lossy(args.get(i + 1)).to_ascii_lowercase();
        i += 2;
        blocks.push((ranges, id));
    }
    if blocks.is_empty() {
        return Err(ERR_SYNTAX);
    }
    let all: Vec<SlotRange> = blocks.iter().flat_map(|(r, _)| r.iter().copied()).collect();
    check_no_overlap(&all)?;
    let cfg = cl.config();
    let me = cl.me();
    if !cfg.node(&me).is_some_and(|n| n.is_primary()) {
        return Err(ReplyError::err_static(
            "Slots can only be migrated from a primary",
        ));
    }
    for (ranges, id) in &blocks {
        let target = cfg
            .node(id)
            .filter(|_| valid_node_id(id))
            .ok_or_else(|| err!("Unknown node {id}"))?;
        if !target.is_primary() {
            return Err(err!("Node {id} is not a primary"));
        }
        if *id == me {
            return Err(ReplyError::err_static("Can't migrate slots to myself"));
        }
        for s in ranges.iter().flat_map(|r| r.iter()) {
            if cfg.owner(s).map(|n| n.id.as_str()) != Some(me.as_str()) {
                return Err(err!("I'm not the owner of hash slot {s}"));
            }
            if cfg.migrating_to(s).is_some() {
                return Err(err!("Slot {s} is already migrating"));
            }
        }
    }
    if cl.migrations.busy(&all) {
        return Err(ReplyError::err_static(
            "Some of the slots are already being migrated",
        ));
    }
    let mut jobs = Vec::new();
    for (k, (ranges, id)) in blocks.into_iter().enumerate() {
        let seed = ctx.now_ms ^ ctx.srv.ks.hlc.last() ^ (k as u64).wrapping_mul(0x9E37_79B9);
        let job = Arc::new(Job::new(
            crate::state::random_hex40(seed),
            true,
            ranges,
            me.clone(),
            id,
            ctx.now_ms,
        ));
        cl.migrations.add(job.clone())?;
        jobs.push(job);
    }
    ctx.client.repl.action = Some(Action::MigrateSlots(jobs));
    Ok(())
}

/// `CLUSTER GETSLOTMIGRATIONS`: the jobs of this node, oldest first, each a map.
pub fn getslotmigrations(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let jobs = cluster(ctx)?.migrations.list();
    ctx.out.array(jobs.len());
    for j in jobs {
        let (state, message) = (j.state(), j.message());
        let fields: [(&str, String); 11] = [
            ("name", j.name.clone()),
            (
                "operation",
                if j.export { "EXPORT" } else { "IMPORT" }.into(),
            ),
            ("slot_ranges", j.ranges_text()),
            ("source_node", j.source.clone()),
            ("target_node", j.target.clone()),
            ("create_time", j.created_ms.to_string()),
            ("last_update_time", j.updated_ms.load(Relaxed).to_string()),
            ("state", state.name().into()),
            ("message", message),
            ("keys_sent", j.keys_sent.load(Relaxed).to_string()),
            ("keys_total", j.keys_total.load(Relaxed).to_string()),
        ];
        ctx.out.map(fields.len() + 1);
        for (k, v) in fields {
            ctx.out.bulk(k.as_bytes());
            ctx.out.bulk(v.as_bytes());
        }
        ctx.out.bulk(b"pause_us");
        ctx.out
            .bulk(j.pause_us.load(Relaxed).to_string().as_bytes());
    }
    Ok(())
}

/// `CLUSTER CANCELSLOTMIGRATIONS`: stops this node's exports that have not paused writes yet.
pub fn cancelslotmigrations(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    for j in cluster(ctx)?.migrations.list() {
        if j.export && j.state().active() {
            j.cancel.store(true, Relaxed);
        }
    }
    ctx.out.ok();
    Ok(())
}

/// Deletes every key of `ranges` here (a failed import, stray keys before one, the source after a
/// move, `SYNCSLOTS FLUSH`). The deletions reach this node's replicas as any other.
pub fn clear_slots(srv: &ServerState, ranges: &[SlotRange], now_ms: u64) -> usize {
    let mut removed = 0;
    for slot in ranges.iter().flat_map(|r| r.iter()) {
        let mut shard = srv.ks.lock(srv.ks.shard_of(slot));
        let mut keys = Vec::new();
        shard.for_each_key_in_slot(0, slot, |k| keys.push(k.to_vec()));
        for k in keys {
            if shard.remove(0, slot, &k).is_some() {
                removed += 1;
            }
        }
        drop(shard);
        crate::effects::emit_logged(srv, now_ms);
    }
    removed
}

fn import_of(client: &Client) -> Result<Arc<Job>, ReplyError> {
    client
        .cluster
        .import
        .clone()
        .filter(|j| j.state() == JobState::Running)
        .ok_or(ReplyError::err_static("No slot import on this connection"))
}

fn in_job(job: &Job, key: &[u8]) -> Result<u16, ReplyError> {
    let slot = key_slot(key);
    if job.ranges.iter().any(|r| r.start <= slot && slot <= r.end) {
        Ok(slot)
    } else {
        Err(err!("Key slot {slot} is not part of this import"))
    }
}

/// `CLUSTER SYNCSLOTS ...`: the target's half of an atomic move, on the connection the source
/// opened (internal; see the module's comment).
pub fn syncslots(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let cl = cluster(ctx)?;
    let sub = args.get(2).to_ascii_uppercase();
    match sub.as_slice() {
        b"BEGIN" => {
            // BEGIN name source start end [start end ...]
            if args.len() < 7 {
                return Err(ERR_SYNTAX);
            }
            let name = String::from_utf8_lossy(args.get(3)).into_owned();
            let source = String::from_utf8_lossy(args.get(4)).to_ascii_lowercase();
            let mut i = 5;
            let ranges = parse_ranges(args, &mut i)?;
            if i != args.len() {
                return Err(ERR_SYNTAX);
            }
            check_no_overlap(&ranges)?;
            if ctx.client.cluster.import.is_some() {
                return Err(ReplyError::err_static(
                    "This connection already imports slots",
                ));
            }
            let cfg = cl.config();
            let me = cl.me();
            if !cfg.node(&me).is_some_and(|n| n.is_primary()) {
                return Err(ReplyError::err_static(
                    "Slots can only be imported by a primary",
                ));
            }
            for s in ranges.iter().flat_map(|r| r.iter()) {
                if cfg.owner(s).map(|n| n.id.as_str()) != Some(source.as_str()) {
                    return Err(err!("Slot {s} is not owned by {source}"));
                }
            }
            let job = Arc::new(Job::new(name, false, ranges, source, me, ctx.now_ms));
            cl.migrations.add(job.clone())?;
            // Whatever this node holds for slots it does not own is left from an earlier import.
            clear_slots(ctx.srv, &job.ranges, ctx.now_ms);
            ctx.client.cluster.import = Some(job);
            ctx.out.ok();
        }
        b"LOAD" => {
            if args.len() != 4 {
                return Err(ERR_SYNTAX);
            }
            let job = import_of(ctx.client)?;
            let limits = ctx.srv.encoding_limits();
            let srv = ctx.srv;
            let now = ctx.now_ms;
            let mut bad: Option<ReplyError> = None;
            let n = shoal_replication::snapshot::for_each_record(args.get(3), |rec| {
                if bad.is_some() {
                    return;
                }
                let slot = match in_job(&job, rec.key) {
                    Ok(s) => s,
                    Err(e) => {
                        bad = Some(e);
                        return;
                    }
                };
                let Some(entry) = rec.to_entry(&limits) else {
                    bad = Some(ReplyError::err_static("Bad data format"));
                    return;
                };
                srv.ks.hlc.observe(rec.version);
                let mut shard = srv.ks.lock(srv.ks.shard_of(slot));
                // The source's state replaces whatever was sent before.
                shard.remove(0, slot, rec.key);
                shard.insert(0, slot, entry, now);
            })
            .map_err(|e| err!("{e}"))?;
            if let Some(e) = bad {
                return Err(e);
            }
            job.keys_sent.fetch_add(n as u64, Relaxed);
            job.updated_ms.store(now, Relaxed);
            ctx.out.int(n as i64);
        }
        b"DEL" => {
            if args.len() < 4 {
                return Err(ERR_SYNTAX);
            }
            let job = import_of(ctx.client)?;
            let mut n = 0;
            for k in args.tail(3).iter() {
                let slot = in_job(&job, k)?;
                n += ctx
                    .srv
                    .ks
                    .lock(ctx.srv.ks.shard_of(slot))
                    .remove(0, slot, k)
                    .is_some() as i64;
            }
            job.keys_sent.fetch_add(args.len() as u64 - 3, Relaxed);
            ctx.out.int(n);
        }
        b"FLUSH" => {
            if args.len() != 3 {
                return Err(ERR_SYNTAX);
            }
            let job = import_of(ctx.client)?;
            let n = clear_slots(ctx.srv, &job.ranges, ctx.now_ms);
            ctx.out.int(n as i64);
        }
        b"FINISH" => {
            // FINISH source-epoch [digest]
            if !(4..=5).contains(&args.len()) {
                return Err(ERR_SYNTAX);
            }
            let job = import_of(ctx.client)?;
            let from_epoch = crate::args::parse_i64(args.get(3))
                .filter(|&e| e >= 0)
                .ok_or(ERR_SYNTAX)? as u64;
            if args.len() == 5 {
                let want = std::str::from_utf8(args.get(4))
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
                    .ok_or(ERR_SYNTAX)?;
                let have = slots_digest(ctx.srv, &job.ranges, ctx.now_ms);
                if want != have {
                    let msg = format!(
                        "slot digests differ after the transfer: source {want}, target {have}"
                    );
                    fail_import(ctx.srv, &job, &msg, ctx.now_ms);
                    ctx.client.cluster.import = None;
                    return Err(err!("{msg}"));
                }
            }
            job.from_epoch.store(from_epoch, Relaxed);
            job.set(JobState::Pausing, "", ctx.now_ms);
            let change = Change::MoveSlots {
                from: job.source.clone(),
                to: job.target.clone(),
                ranges: job.ranges.clone(),
                from_epoch,
            };
            ctx.client.cluster.import = None;
            ctx.client.repl.action = Some(Action::FinishImport { job, change });
        }
        b"ABORT" => {
            if args.len() != 3 {
                return Err(ERR_SYNTAX);
            }
            let job = import_of(ctx.client)?;
            fail_import(ctx.srv, &job, "cancelled by the source", ctx.now_ms);
            ctx.client.cluster.import = None;
            ctx.out.ok();
        }
        _ => {
            return Err(err!(
                "unknown subcommand '{}'. Try CLUSTER HELP.",
                String::from_utf8_lossy(args.get(2))
            ));
        }
    }
    Ok(())
}

/// The sum of the slot digests of `ranges` (what source and target compare at the flip).
pub fn slots_digest(srv: &ServerState, ranges: &[SlotRange], now_ms: u64) -> u64 {
    ranges.iter().flat_map(|r| r.iter()).fold(0u64, |acc, s| {
        acc.wrapping_add(crate::replication::slot_digest(srv, 0, s, now_ms))
    })
}

/// Ends an import that will not complete, and deletes what it received.
pub fn fail_import(srv: &ServerState, job: &Job, why: &str, now_ms: u64) {
    if job.set(JobState::Failed, why, now_ms) {
        clear_slots(srv, &job.ranges, now_ms);
    }
}

/// A connection closed: an import it was running (not yet finishing) fails.
pub fn connection_closed(srv: &ServerState, client: &mut Client, now_ms: u64) {
    if let Some(job) = client.cluster.import.take()
        && job.state() == JobState::Running
    {
        fail_import(srv, &job, "the source's connection closed", now_ms);
    }
}

/// Settles imports whose `FINISH` outcome was not known, from a committed configuration: done if
/// this node owns their slots, failed (and deleted) if the source fenced the move (its epoch
/// moved on) or lost the slots.
pub fn resolve_imports(srv: &ServerState, cfg: &Config, now_ms: u64) {
    let Some(cl) = srv.cluster.as_ref() else {
        return;
    };
    for job in cl.migrations.list() {
        if job.export || job.state() != JobState::Pausing {
            continue;
        }
        let slots = || job.ranges.iter().flat_map(|r| r.iter());
        let owned_by = |id: &str| slots().all(|s| cfg.owner(s).is_some_and(|n| n.id == id));
        if owned_by(&job.target) {
            job.set(JobState::Success, "", now_ms);
        } else if !owned_by(&job.source)
            || cfg
                .node(&job.source)
                .is_none_or(|n| n.config_epoch != job.from_epoch.load(Relaxed))
        {
            fail_import(srv, &job, "the move was not committed", now_ms);
        }
    }
}

//! Atomic slot migration, the I/O side: the source's export task and the target's final step.
//! What the commands are and why a move is atomic: `shoal_commands::migration`.
//!
//! The export, on the source (one at a time per node: the shards' trackers are its own):
//!
//! 1. Connect to the target's data port (as this node's replication link would: `masterauth`;
//!    over TLS under `tls-cluster`, as Redis's MIGRATE, the port being the target's TLS port),
//!    turn on recording of writes, note the keys written in the slots (`Shard::track_slot`), and
//!    `CLUSTER SYNCSLOTS BEGIN`.
//! 2. Copy: each slot's keys as snapshot records, one slot under its shard's lock at a time, in
//!    `LOAD` batches of [`LOAD_BATCH_BYTES`], at most [`WINDOW`] requests in flight.
//! 3. Catch up: the keys written meanwhile, read again and sent as they are now (`LOAD`) or as
//!    gone (`DEL`), round after round until a round has at most [`CATCHUP_KEYS_TO_PAUSE`] keys
//!    (or after [`CATCHUP_ROUNDS_MAX`] rounds).
//! 4. Flip: pause the slots (requests for them wait), wait for the commands already running (the exec gate held
//!    alone for an instant), send the last keys written, then `FINISH` with this node's config
//!    epoch (and the slots' digest under `cluster-migration-verify`). The target commits
//!    `MoveSlots` and answers once it applied it. If the answer is lost, this node fences the move
//!    by bumping its epoch through Raft, after which the configuration says for sure who owns the
//!    slots. Writes resume once this node's configuration shows the outcome: redirected if the
//!    slots moved, served here if not.
//! 5. After a move (the job already reports `success`), the slots' keys are deleted here, a chunk
//!    at a time (the deletions reach this node's replicas).
//!
//! Any failure before the flip (target unreachable, an error reply, `CANCELSLOTMIGRATIONS`)
//! ends the job here and the target deletes what it received (`ABORT`, or its connection
//! closing): the slots never leave their owner.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use shoal_cluster::{Change, SlotRange};
use shoal_commands::ServerState;
use shoal_commands::migration::{self, Job, JobState};
use shoal_resp::{Reply, ReplyLimits, parse_reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::tls::LinkStream;

use crate::cluster_node::{ClusterNode, Proposed};
use crate::now_ms;

/// Bytes of records per `LOAD` request (the target applies one on a connection task, so a batch
/// is what its other clients may wait behind: about a millisecond's worth).
pub const LOAD_BATCH_BYTES: usize = 64 * 1024;
/// Keys per `DEL` request.
pub const DEL_BATCH_KEYS: usize = 512;
/// Requests sent to the target before their replies are read.
pub const WINDOW: usize = 4;
/// Keys deleted under one shard lock when the source drops the slots it moved, and how many a
/// second at most (the slots are the target's already; their memory can wait a little).
pub const DELETE_CHUNK_KEYS: usize = 256;
pub const DELETE_KEYS_PER_SEC: u64 = 250_000;
/// The writes made during the copy are sent again in rounds until one has at most this many
/// keys; the rest is sent while writes are paused.
pub const CATCHUP_KEYS_TO_PAUSE: usize = 1024;
/// Rounds of catching up before writes are paused whatever the last round held.
pub const CATCHUP_ROUNDS_MAX: usize = 32;
/// Longest wait for one reply of the target, in multiples of `cluster-node-timeout` (a `LOAD`
/// is applied in milliseconds; a target silent for that long counts as failed), and its bounds.
pub const CALL_TIMEOUT_NODE_TIMEOUTS: u64 = 5;
pub const CALL_TIMEOUT_MIN: Duration = Duration::from_secs(1);
pub const CALL_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// Longest wait for `FINISH` (the target proposes the move through Raft).
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for this node to apply the configuration that settles a move.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at fencing a move whose outcome is unknown (each waits for a commit up to the
/// proposal timeout), and the pause between them.
pub const FENCE_ATTEMPTS_MAX: usize = 60;
pub const FENCE_BACKOFF: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `jobs` (registered by `CLUSTER MIGRATESLOTS`) one after the other in the background.
pub fn spawn_exports(srv: &Arc<ServerState>, node: &Arc<ClusterNode>, jobs: Vec<Arc<Job>>) {
    let (srv, node) = (srv.clone(), node.clone());
    tokio::spawn(async move {
        let _one_at_a_time = node.exporting.lock().await;
        for job in jobs {
            tracing::info!(job = %job.name, slots = %job.ranges_text(), target = %job.target, "slot migration started");
            let started = std::time::Instant::now();
            let r = export(&srv, &node, &job).await;
            let now = now_ms();
            let ms = started.elapsed().as_millis() as u64;
            match r {
                Ok(()) => {
                    // Client-side caches drop what they read here before the move is reported.
                    shoal_commands::tracking::invalidate_slots(
                        &srv,
                        |s| job.ranges.iter().any(|r| r.start <= s && s <= r.end),
                        now,
                    );
                    job.set(JobState::Success, "", now);
                    tracing::info!(job = %job.name, slots = %job.ranges_text(), target = %job.target, ms, "slot migration done: slots moved");
                    // The slots are the target's: what is left here goes, a little at a time.
                    for range in &job.ranges {
                        for s in range.iter() {
                            drop_slot(&srv, s).await;
                        }
                    }
                }
                Err(Failure(state, why)) => {
                    tracing::warn!(job = %job.name, slots = %job.ranges_text(), %why, ms, "slot migration ended");
                    job.set(state, why, now);
                }
            }
        }
    });
}

/// How an export ended when it did not move the slots.
struct Failure(JobState, String);

fn failed(why: impl Into<String>) -> Failure {
    Failure(JobState::Failed, why.into())
}

/// An error from the target: a reply (it refused; definite) or the connection (unknown).
enum PeerError {
    Reply(String),
    Io(String),
}

impl PeerError {
    fn text(self) -> String {
        match self {
            PeerError::Reply(e) => format!("the target replied: {e}"),
            PeerError::Io(e) => format!("the target's connection failed: {e}"),
        }
    }
}

/// A connection to the target with pipelined requests.
struct Peer {
    s: LinkStream,
    /// Longest wait for a reply.
    timeout: Duration,
    /// Bytes per second of records at most (0: no limit), bytes sent, since when.
    rate: u64,
    sent_bytes: u64,
    since: Instant,
    buf: Vec<u8>,
    req: Vec<u8>,
    in_flight: usize,
    limits: ReplyLimits,
}

impl Peer {
    async fn connect(
        (host, port): (&str, u16),
        tls: bool,
        auth: Option<(String, String)>,
        timeout: Duration,
        rate: u64,
    ) -> Result<Peer, PeerError> {
        let s = LinkStream::connect(host, port, tls, CONNECT_TIMEOUT)
            .await
            .map_err(|e| PeerError::Io(format!("connect to {host}:{port}: {e}")))?;
        let mut p = Peer {
            s,
            timeout,
            rate,
            sent_bytes: 0,
            since: Instant::now(),
            buf: Vec::new(),
            req: Vec::new(),
            in_flight: 0,
            limits: ReplyLimits::default(),
        };
        if let Some((user, pass)) = auth {
            if user.is_empty() {
                p.call(&[b"AUTH", pass.as_bytes()], timeout).await?;
            } else {
                p.call(&[b"AUTH", user.as_bytes(), pass.as_bytes()], timeout)
                    .await?;
            }
        }
        Ok(p)
    }

    /// Waits until sending `bytes` more keeps the transfer within its rate.
    async fn pace(&mut self, bytes: usize) {
        self.sent_bytes += bytes as u64;
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.sent_bytes as f64 / self.rate as f64);
        let elapsed = self.since.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }

    /// Sends a request; reads a reply first when [`WINDOW`] are in flight.
    async fn send(&mut self, args: &[&[u8]]) -> Result<(), PeerError> {
        if self.in_flight >= WINDOW {
            self.recv(self.timeout).await?;
        }
        self.req.clear();
        shoal_resp::encode_request(&mut self.req, args);
        // Flushed: a TLS stream may keep records the socket did not take yet.
        let sent = async {
            self.s.write_all(&self.req).await?;
            self.s.flush().await
        };
        sent.await.map_err(|e| PeerError::Io(e.to_string()))?;
        self.in_flight += 1;
        Ok(())
    }

    /// Reads the oldest reply in flight.
    async fn recv(&mut self, timeout: Duration) -> Result<Reply, PeerError> {
        let read = async {
            loop {
                match parse_reply(&self.buf, &self.limits) {
                    Ok(Some((r, used))) => {
                        self.buf.drain(..used);
                        return Ok(r);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(PeerError::Io(format!("bad reply: {}", e.0))),
                }
                let mut chunk = [0u8; 4096];
                match self.s.read(&mut chunk).await {
                    Ok(0) => return Err(PeerError::Io("connection closed".into())),
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(PeerError::Io(e.to_string())),
                }
            }
        };
        let r = match tokio::time::timeout(timeout, read).await {
            Ok(r) => r?,
            Err(_) => return Err(PeerError::Io("no reply in time".into())),
        };
        self.in_flight -= 1;
        match r {
            Reply::Error(e) => Err(PeerError::Reply(e)),
            r => Ok(r),
        }
    }

    /// Reads every reply in flight.
    async fn drain(&mut self) -> Result<(), PeerError> {
        while self.in_flight > 0 {
            self.recv(self.timeout).await?;
        }
        Ok(())
    }

    /// One request and its reply, after every earlier one.
    async fn call(&mut self, args: &[&[u8]], timeout: Duration) -> Result<Reply, PeerError> {
        self.drain().await?;
        self.send(args).await?;
        self.recv(timeout).await
    }
}

/// The slots' keys are tracked while this lives.
struct Tracking<'a> {
    srv: &'a ServerState,
    ranges: &'a [SlotRange],
}

impl<'a> Tracking<'a> {
    fn start(srv: &'a ServerState, ranges: &'a [SlotRange]) -> Tracking<'a> {
        for s in ranges.iter().flat_map(|r| r.iter()) {
            srv.ks.lock(srv.ks.shard_of(s)).track_slot(s, true);
        }
        Tracking { srv, ranges }
    }
}

impl Drop for Tracking<'_> {
    fn drop(&mut self) {
        for s in self.ranges.iter().flat_map(|r| r.iter()) {
            self.srv
                .ks
                .lock(self.srv.ks.shard_of(s))
                .track_slot(s, false);
        }
    }
}

/// Writes to the slots wait while this lives.
struct Pause<'a> {
    srv: &'a ServerState,
    ranges: &'a [SlotRange],
    since: Instant,
    job: &'a Job,
}

impl Drop for Pause<'_> {
    fn drop(&mut self) {
        if let Some(cl) = self.srv.cluster.as_ref() {
            cl.paused.set(self.ranges, false);
        }
        let us = self.since.elapsed().as_micros() as u64;
        self.job.pause_us.store(us, Relaxed);
    }
}

fn ranges_args(ranges: &[SlotRange]) -> Vec<Vec<u8>> {
    ranges
        .iter()
        .flat_map(|r| {
            [
                r.start.to_string().into_bytes(),
                r.end.to_string().into_bytes(),
            ]
        })
        .collect()
}

async fn export(srv: &Arc<ServerState>, node: &Arc<ClusterNode>, job: &Job) -> Result<(), Failure> {
    let cl = srv
        .cluster
        .as_ref()
        .ok_or_else(|| failed("cluster mode is off"))?;
    let cfg = cl.config();
    let target = cfg
        .node(&job.target)
        .filter(|n| n.is_primary())
        .ok_or_else(|| failed(format!("{} is not a primary of the cluster", job.target)))?;
    if srv.repl.is_replica() {
        return Err(failed("this node is no longer a primary"));
    }
    let auth = {
        let c = srv.config();
        (!c.masterauth.is_empty()).then(|| (c.masteruser.clone(), c.masterauth.clone()))
    };
    let timeout = Duration::from_millis(
        srv.config()
            .cluster_node_timeout
            .saturating_mul(CALL_TIMEOUT_NODE_TIMEOUTS),
    )
    .clamp(CALL_TIMEOUT_MIN, CALL_TIMEOUT_MAX);
    let rate = srv.config().cluster_migration_max_rate;
    let tls = crate::tls::cluster_links(&srv.config());
    let mut peer = Peer::connect((&target.ip, target.port), tls, auth, timeout, rate)
        .await
        .map_err(|e| failed(e.text()))?;
    // Every write queues its change from now on; the trackers note the slots' keys among them.
    srv.repl.start_recording(&srv.ks);
    let tracking = Tracking::start(srv, &job.ranges);
    let r = transfer(srv, node, job, &mut peer, &tracking).await;
    if let Err(Failure(_, why)) = &r
        && job.state() == JobState::Running
    {
        // Best effort: the target also drops the import when this connection closes.
        let _ = peer
            .call(&[b"CLUSTER", b"SYNCSLOTS", b"ABORT"], timeout)
            .await;
        tracing::debug!(job = %job.name, %why, "import aborted on the target");
    }
    drop(tracking);
    r
}

/// Deletes the keys of a slot that moved away, [`DELETE_CHUNK_KEYS`] under each lock, yielding
/// between chunks (the deletions reach this node's replicas).
async fn drop_slot(srv: &ServerState, slot: u16) {
    let mut keys = Vec::new();
    srv.ks
        .lock(srv.ks.shard_of(slot))
        .for_each_key_in_slot(0, slot, |k| keys.push(k.to_vec()));
    for chunk in keys.chunks(DELETE_CHUNK_KEYS) {
        // As gentle as the copy: at most DELETE_KEYS_PER_SEC.
        tokio::time::sleep(Duration::from_secs_f64(
            chunk.len() as f64 / DELETE_KEYS_PER_SEC as f64,
        ))
        .await;
        {
            let mut shard = srv.ks.lock(srv.ks.shard_of(slot));
            for k in chunk {
                drop(shard.remove(0, slot, k));
            }
        }
        shoal_commands::effects::emit_logged(srv, now_ms());
        tokio::task::yield_now().await;
    }
}

async fn transfer(
    srv: &Arc<ServerState>,
    node: &Arc<ClusterNode>,
    job: &Job,
    peer: &mut Peer,
    tracking: &Tracking<'_>,
) -> Result<(), Failure> {
    let cl = srv.cluster.as_ref().expect("cluster mode");
    let me = cl.me();
    let ranges = ranges_args(&job.ranges);
    let mut begin: Vec<&[u8]> = vec![
        b"CLUSTER",
        b"SYNCSLOTS",
        b"BEGIN",
        job.name.as_bytes(),
        me.as_bytes(),
    ];
    begin.extend(ranges.iter().map(|r| r.as_slice()));
    let timeout = peer.timeout;
    peer.call(&begin, timeout)
        .await
        .map_err(|e| failed(e.text()))?;

    // 2. Copy.
    let slots: Vec<u16> = job.ranges.iter().flat_map(|r| r.iter()).collect();
    let total: usize = slots
        .iter()
        .map(|&s| srv.ks.lock(srv.ks.shard_of(s)).slot_len(0, s))
        .sum();
    job.keys_total.store(total as u64, Relaxed);
    let mut batch = Vec::with_capacity(LOAD_BATCH_BYTES + 4096);
    let mut in_batch = 0u64;
    for &slot in &slots {
        if job.cancel.load(Relaxed) {
            return Err(Failure(JobState::Cancelled, "cancelled".into()));
        }
        {
            let now = now_ms();
            let shard = srv.ks.lock(srv.ks.shard_of(slot));
            shard.for_each_in_slot(0, slot, now, |e| {
                shoal_replication::snapshot::encode_record(&mut batch, 0, e, &srv.ks);
                in_batch += 1;
            });
        }
        if batch.len() >= LOAD_BATCH_BYTES {
            send_load(peer, job, &mut batch, &mut in_batch, true).await?;
        }
    }
    send_load(peer, job, &mut batch, &mut in_batch, true).await?;

    // 3. Catch up.
    for _ in 0..CATCHUP_ROUNDS_MAX {
        if job.cancel.load(Relaxed) {
            return Err(Failure(JobState::Cancelled, "cancelled".into()));
        }
        peer.drain().await.map_err(|e| failed(e.text()))?;
        let sent = send_written(srv, job, peer, tracking).await?;
        if sent <= CATCHUP_KEYS_TO_PAUSE {
            break;
        }
    }
    if job.cancel.load(Relaxed) {
        return Err(Failure(JobState::Cancelled, "cancelled".into()));
    }

    // 4. Flip.
    let pause = Pause {
        srv,
        ranges: &job.ranges,
        since: Instant::now(),
        job,
    };
    cl.paused.set(&job.ranges, true);
    // Commands admitted before the pause hold the exec gate until they are done: once it is ours
    // for an instant, every write to these slots that will ever run here has queued its change.
    drop(srv.gate.exclusive());
    send_written(srv, job, peer, tracking).await?;
    peer.drain().await.map_err(|e| failed(e.text()))?;
    let from_epoch = cl
        .config()
        .node(&me)
        .map(|n| n.config_epoch)
        .ok_or_else(|| failed("this node left the cluster"))?;
    let epoch = from_epoch.to_string();
    let mut finish: Vec<&[u8]> = vec![b"CLUSTER", b"SYNCSLOTS", b"FINISH", epoch.as_bytes()];
    let digest;
    if srv.config().cluster_migration_verify {
        digest = migration::slots_digest(srv, &job.ranges, now_ms()).to_string();
        finish.push(digest.as_bytes());
    }
    job.set(JobState::Pausing, "", now_ms());
    let answered = peer.call(&finish, FINISH_TIMEOUT).await;
    let moved = match answered {
        Ok(_) => true,
        // The target could not learn whether its commit went through: the move may still
        // commit, so it is fenced as when FINISH goes unanswered (resuming writes here now
        // could lose them to the new owner).
        Err(PeerError::Reply(e)) if !e.contains(FINISH_UNKNOWN) => {
            drop(pause);
            return Err(failed(format!("the target refused the move: {e}")));
        }
        Err(e) => {
            let e = e.text();
            tracing::warn!(job = %job.name, error = %e, "no answer to FINISH: fencing the move");
            if let Err(f) = fence(srv, node, &me).await {
                // The move may still commit: writes here stay paused (a write that waits is
                // answered -TRYAGAIN after a while) rather than be taken and lost.
                std::mem::forget(pause);
                return Err(f);
            }
            owned_by(srv, &job.ranges, &job.target)
        }
    };
    if moved {
        // Requests that waited are redirected once this node applied the move.
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while !owned_by(srv, &job.ranges, &job.target) {
            if Instant::now() >= deadline {
                // Committed but not applied here: writes must not be taken here meanwhile.
                std::mem::forget(pause);
                return Err(failed(
                    "the move was committed but this node did not apply it in time; writes to its slots stay paused here",
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    drop(pause);
    if moved {
        Ok(())
    } else {
        Err(failed("the move was not committed"))
    }
}

/// Sends the batch of records (if any) as one `LOAD`; a `paced` one (the copy, not the keys
/// sent while writes wait) no faster than `cluster-migration-max-rate` allows.
async fn send_load(
    peer: &mut Peer,
    job: &Job,
    batch: &mut Vec<u8>,
    in_batch: &mut u64,
    paced: bool,
) -> Result<(), Failure> {
    if batch.is_empty() {
        return Ok(());
    }
    if paced {
        peer.pace(batch.len()).await;
    }
    peer.send(&[b"CLUSTER", b"SYNCSLOTS", b"LOAD", batch])
        .await
        .map_err(|e| failed(e.text()))?;
    job.keys_sent.fetch_add(*in_batch, Relaxed);
    job.updated_ms.store(now_ms(), Relaxed);
    batch.clear();
    *in_batch = 0;
    Ok(())
}

/// Sends the keys written in the slots since the last call, as they are now; returns how many.
async fn send_written(
    srv: &ServerState,
    job: &Job,
    peer: &mut Peer,
    tracking: &Tracking<'_>,
) -> Result<usize, Failure> {
    let mut shards: Vec<usize> = tracking
        .ranges
        .iter()
        .flat_map(|r| r.iter())
        .map(|s| srv.ks.shard_of(s))
        .collect();
    shards.sort_unstable();
    shards.dedup();
    let mut batch = Vec::new();
    let mut in_batch = 0u64;
    let mut dels: Vec<Box<[u8]>> = Vec::new();
    let mut sent = 0;
    for i in shards {
        let now = now_ms();
        let flushed = {
            let mut shard = srv.ks.lock(i);
            let t = shard.take_tracked();
            for key in t.keys {
                let slot = shoal_keyspace::key_slot(&key);
                match shard.peek(0, slot, &key, now) {
                    Some(e) => {
                        shoal_replication::snapshot::encode_record(&mut batch, 0, e, &srv.ks);
                        in_batch += 1;
                    }
                    None => dels.push(key),
                }
                sent += 1;
            }
            t.flushed
        };
        if flushed {
            // Sent before this shard's keys written after the flush (one connection, in order).
            peer.send(&[b"CLUSTER", b"SYNCSLOTS", b"FLUSH"])
                .await
                .map_err(|e| failed(e.text()))?;
        }
        if batch.len() >= LOAD_BATCH_BYTES {
            send_load(peer, job, &mut batch, &mut in_batch, false).await?;
        }
        if dels.len() >= DEL_BATCH_KEYS {
            send_dels(peer, &mut dels).await?;
        }
    }
    send_load(peer, job, &mut batch, &mut in_batch, false).await?;
    send_dels(peer, &mut dels).await?;
    Ok(sent)
}

async fn send_dels(peer: &mut Peer, dels: &mut Vec<Box<[u8]>>) -> Result<(), Failure> {
    if dels.is_empty() {
        return Ok(());
    }
    let mut args: Vec<&[u8]> = vec![b"CLUSTER", b"SYNCSLOTS", b"DEL"];
    args.extend(dels.iter().map(|k| &k[..]));
    peer.send(&args).await.map_err(|e| failed(e.text()))?;
    dels.clear();
    Ok(())
}

/// Whether this node's configuration gives every slot of `ranges` to `id`.
fn owned_by(srv: &ServerState, ranges: &[SlotRange], id: &str) -> bool {
    let cfg = srv.cluster.as_ref().expect("cluster mode").config();
    ranges
        .iter()
        .flat_map(|r| r.iter())
        .all(|s| cfg.owner(s).is_some_and(|n| n.id == id))
}

/// How a target's FINISH reply starts when it does not know whether its commit went through.
const FINISH_UNKNOWN: &str = "the move's outcome is unknown: ";

/// Makes sure a move whose `FINISH` went unanswered can no longer commit later: this node's
/// config epoch is bumped through Raft, and a move carries the epoch it was prepared at. Once the
/// bump is applied here, the configuration says whether the move happened.
async fn fence(srv: &Arc<ServerState>, node: &Arc<ClusterNode>, me: &str) -> Result<(), Failure> {
    for attempt in 1..=FENCE_ATTEMPTS_MAX {
        match node
            .propose_settled(srv, Change::BumpEpoch { node: me.into() })
            .await
        {
            Proposed::Applied => return Ok(()),
            Proposed::Refused(e) => return Err(failed(format!("fencing the move failed: {e}"))),
            Proposed::Unknown(e) => {
                tracing::warn!(attempt, error = %e, "fencing a slot move: no commit yet");
                tokio::time::sleep(FENCE_BACKOFF).await;
            }
        }
    }
    Err(failed(
        "the move's outcome is unknown (the configuration group did not commit); writes to its slots stay paused here",
    ))
}

/// The target's last step: commit the move (`MoveSlots`, passes only if the source still owns
/// the slots at the epoch it sent), and settle the import by the outcome.
pub async fn finish_import(
    srv: &Arc<ServerState>,
    node: &Arc<ClusterNode>,
    job: &Arc<Job>,
    change: Change,
) -> Result<(), String> {
    match node.propose_settled(srv, change).await {
        Proposed::Applied => {
            job.set(JobState::Success, "", now_ms());
            Ok(())
        }
        Proposed::Refused(e) => {
            migration::fail_import(srv, job, &e, now_ms());
            Err(e)
        }
        Proposed::Unknown(e) => {
            // Kept until a configuration settles it (`migration::resolve_imports`). The reply
            // tells the source the move may still commit, so it fences it (not a refusal).
            job.set(JobState::Pausing, format!("outcome unknown: {e}"), now_ms());
            Err(format!("{FINISH_UNKNOWN}{e}"))
        }
    }
}
